// One sampling run, the same for `diffode sample` and every run of a sweep: the [process], [model],
// [grid], [sampler] and [run] tables read once, then run_sampling, which owns what every sampler
// shares — x_T, the scaling x~ = x / alpha at both ends, blocks and threads, the noise keys and the
// final step.
//
// The final step (docs/DESIGN.md §4.6) is carried out here and nowhere else:
//   to_zero   a sampler that steps to sigma~ = 0 itself (the Karras family, DPM-Solver, UniPC, ...)
//             gets the grid with its final zero; one that cannot (adaptive, fast, process-time and
//             generic solvers) gets the grid without it, and the run then returns D(x~; sigma~_last),
//             which is what an Euler step to sigma = 0 is; one model evaluation either way.
//   to_t_min  the sample is x at the grid's last point.
//   denoise   the sample is D(x~; sigma~_last) at the grid's last point (one more evaluation).
// Results depend on [run] seed and block_rows, never on the thread count: blocks are fixed, noise is
// keyed by (seed, global row), and each block has its own predictor.
//
// [model] state = "device" (networks only) runs the whole solve through the network backend's
// solve_on_device (models/network.hpp): x~_T is copied to the network's device once, the sampler
// runs there on LibTorch tensors, the result comes back once, and the final step is taken there too.
// The whole batch is one solve (block_rows and threads do not apply: the device path runs only
// samplers whose rows are independent). It runs the deterministic fixed-grid samplers
// (device_state_samplers()), unguided and without save_trajectory; anything else is refused when the
// config is read, naming the key.
//
// [guidance] class = "all" samples every class c = 0..C-1 in turn: rows [c m, (c + 1) m), m = N / C,
// are class c's, a run of its own: its x_T is the x_T of a run of m samples from the run's seed,
// its blocks start at its first row and its noise is keyed by (seed, row within the class). So each
// class's rows are, bit for bit, those of a run of class c with m samples, whatever the threads.
#pragma once

#include "experiments/run/readers.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

struct SamplingSetup {
  std::unique_ptr<Process> process;
  // The exact mixture: the model itself, or the mixture a network was trained on ([model.ground_truth]);
  // null for a network without one (then nothing that needs the exact law runs).
  std::shared_ptr<const GaussianMixture> mixture;
  std::optional<GuidanceSetup> guidance;  // [guidance]: guided sampling of one class, or of each in turn
  std::shared_ptr<const NetworkModel> network;  // [model] kind = "network" | "torchscript"
  GridSpec grid_spec;
  TimeGrid grid;
  ConfiguredSampler sampler;
  RunSettings run;
  Batch initial_from_file;  // x_T when [run] initial_file is given (checked at read time)
  // [model] state = "device": the sampler and its options for solve_on_device (the grid, levels and
  // final step are filled in per run); nullopt on the host state.
  std::optional<DeviceSolveSpec> device_solve;

  Index dims() const { return network ? network->dims() : mixture->dims(); }
  Index samples() const { return run.initial_file.empty() ? run.samples : initial_from_file.rows(); }
  // The classes a run samples in turn: C for [guidance] class = "all", else 1 (one class, or none).
  Index class_runs() const { return guidance && guidance->all_classes ? guidance->classes : 1; }
  // Each row's class: the guidance's class, each class's rows in turn for "all"; empty unguided.
  std::vector<std::int64_t> labels() const;
  // A block's own model: predictors count evaluations and keep scratch, so threads never share one.
  // `run_class`: which of class_runs() (for class = "all", the class itself).
  std::unique_ptr<Predictor<Batch>> make_predictor(Index run_class = 0) const;
};

// Reads and checks [process], [model], [grid], [sampler] and [run] of `root` (the caller finishes
// root), the initial-noise file included. Throws ConfigError naming file, line and key.
SamplingSetup read_sampling_setup(ConfigTable& root);

// x_T of the run, in the process's own variables (class = "all": each class's rows, in turn).
Batch initial_noise(const SamplingSetup& setup);

struct SamplingOutcome {
  Batch initial;                  // x_T
  Batch samples;                  // the process's x at the end (x0 when the run denoised)
  std::vector<Batch> trajectory;  // [run] save_trajectory: x after each step
  double nfe = 0;                 // model evaluations per sample (blocks weighted by their rows)
  // The model's own evaluations per sample: nfe unguided; with classifier-free guidance, the
  // conditional and the null (or negative) class's calls behind each evaluation (models/guidance.hpp).
  double model_calls = 0;
  bool failed = false;
  std::string failure;
  double sigma_end = 0;  // scale-free sigma~ of the result: 0 when the run ended at zero or denoised
  double alpha_end = 1;
  std::string state = "host";  // where the sampler's state lived: "host" or "device"
};

// Whether the outcome keeps x_T (`initial`), or turns its storage into the state being solved: a
// caller that can rebuild x_T (initial_noise is a function of the seed) drops it, which takes one
// state-sized array off the peak of a whole-batch run.
enum class InitialCopy { keep, drop };

// Runs the sampler from x_T over the setup's grid, or over `grid` (a fine reference grid). x_T is
// taken by value: a caller done with it moves it in, one state less at peak.
SamplingOutcome run_sampling(const SamplingSetup& setup, Batch initial, int threads, InitialCopy copy = InitialCopy::keep);
SamplingOutcome run_sampling(const SamplingSetup& setup, Batch initial, const TimeGrid& grid, int threads,
                             InitialCopy copy = InitialCopy::keep);

}  // namespace diffode
