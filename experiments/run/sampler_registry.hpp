// Every solver that can sample from a diffusion model, by the name a config's [sampler] table uses,
// behind one interface, with its options declared once (a TableSchema: validation, --help,
// `diffode samplers` and docs/config.md derive from it).
//
// The families and how each sees the run:
//   k-diffusion-style, DDIM, DDPM, DPM-Solver, DPM-Solver++, UniPC, iPNDM: the scale-free sigma~ grid
//       and the denoiser D(x~; sigma~) (solvers/diffusion/*.hpp);
//   adaptive DPM-Solver-12/23, the generic Dopri5 and Boost.Odeint on the probability flow: the
//       grid's first and last positive sigma~ only, choosing their own steps;
//   DPM-Solver-fast: the grid's ends and its step count as the NFE budget;
//   predictor-corrector (Song et al. 2021), annealed Langevin dynamics, the generic ODE steppers on
//       the probability-flow ODE and the generic SDE steppers on the reverse SDE: the grid's times.
// A runner works on the scale-free state x~ = x / alpha over the grid it is handed and returns with
// x~ at the grid's last point; families that work in the process's own x convert at both ends.
// The final-step policy is not theirs: run_sampling (experiments/run/sampling.hpp) hands a sampler
// that cannot step to sigma = 0 the grid without its final zero and takes that step itself, which
// for every sampler of the Karras family is what a step to sigma = 0 is: the denoiser's x0.
#pragma once

#include "core/state.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/schema.hpp"
#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"
#include "solvers/noise.hpp"

#include <functional>
#include <span>
#include <string>
#include <vector>

namespace diffode {

// Sees the scale-free state after every step (trajectories, progress).
using SamplerObserver = std::function<void(const StepInfo&, const Batch&)>;

// Where a run's randomness comes from: the run's seed and the global row of the block's first
// sample, so that every sampler's noise is keyed by (seed, row) and a block's draws do not depend on
// the batch split or the thread count; and its kind (the [sampler] key `noise`): fresh normals per
// step, or one Brownian path per seed, the same on every grid (solvers/noise.hpp).
struct NoiseSource {
  std::uint64_t seed = 0;
  Index first_sample = 0;
  NoiseKind kind = NoiseKind::per_step;
};

// What a sampler is handed for one block of samples.
struct SamplerContext {
  const Process& process;
  const Predictor<Batch>& predictor;       // the model (counts its evaluations)
  const ScaledDenoiser<Batch>& denoiser;   // D(x~; sigma~) over the same predictor
  std::span<const double> sigmas;          // the scale-free grid to run over (strictly decreasing)
  std::span<const double> times;           // the same points in the process's time
  NoiseSource noise;
  SamplerObserver& observer;
};

using SamplerRunner = std::function<IntegrationStats(const SamplerContext& context, Batch& x_scaled)>;

// A sampler with its options read.
struct ConfiguredSampler {
  std::string name{};
  SamplerRunner run{};
  bool stochastic = false;     // draws noise (its results then depend on the seed)
  bool steps_to_zero = true;   // takes a final step to sigma~ = 0 itself (else run_sampling denoises)
  bool batch_coupled = false;  // a sample's result depends on the others of its block (batch-wide
                               // step control or norms): results depend on [run] block_rows
  bool adaptive = false;       // chooses its own steps between the grid's ends
  NoiseKind noise = NoiseKind::per_step;  // the [sampler] key `noise` (stochastic samplers take it)
  bool noise_given = false;               // the config gave `noise` (else it is the default)
};

struct SamplerEntry {
  std::string name{};
  std::string family;
  std::string summary;  // one line, with the paper
  TableSchema options;  // the [sampler] table's keys besides `name`
  // Reads the options (a ConfigTable bound to `options`); throws ConfigError naming the key.
  std::function<ConfiguredSampler(ConfigTable& options)> configure;
};

const std::vector<SamplerEntry>& sampler_registry();
const SamplerEntry* find_sampler(std::string_view name);

// Reads a [sampler] table: `name` and that sampler's options, validated; calls finish().
ConfiguredSampler read_sampler(ConfigTable table);

// The [sampler] table's own schema (the key `name`), and one sampler's options with `name` added.
const TableSchema& sampler_table_schema();

// The key `noise`, which every sampler that can draw noise declares among its options; `grid_path`:
// it offers brownian_grid (the samplers that draw through SigmaNoise, solvers/diffusion/sampler.hpp).
KeySpec noise_key(bool grid_path = true);

// `diffode samplers`: every entry with its family, summary, options and defaults.
std::string describe_samplers();

}  // namespace diffode
