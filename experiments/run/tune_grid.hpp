// Tuned time grids (`diffode tune-grid`): for one sampler, model, process and NFE budget, the sigma
// grid that minimises the sampler's error against the exact probability-flow solution from the same
// noise, found by a seeded Nelder-Mead (run/nelder_mead.hpp) on a training set of initial noises and
// scored on held-out noises. Related work: Align Your Steps (Sabour et al. 2024, arXiv:2404.14507)
// tunes a schedule against a bound on the KL divergence; DDSS (Watson et al. 2022, arXiv:2202.05830)
// learns a sampler by gradients through it. Here the objective is the measured error itself, and the
// ground truth is a tight adaptive solve, so a tuned grid's error is the error a sweep measures.
//
// The parametrisation (monotone by construction, unconstrained for the optimiser): the grid's
// positive sigmas~ s_0 > s_1 > ... > s_{m-1}, with
//   s_0      the starting grid's first level (the process's T), fixed;
//   s_{m-1}  sigma_min = exp(v), v reflected into [log sigma_min_lower, log sigma_min_upper]; fixed at the
//            process's t_min for final_step = "to_t_min" (the run's answer is x there) or when the
//            two bounds are equal;
//   interior log s_i = log s_0 - (log s_0 - log s_{m-1}) (w_1 + ... + w_i), w = softmax(0, z_1, ...,
//            z_{m-2}): positive increments in log sigma~ that sum to the whole range.
// Then the final step as [grid] final_step says (to_zero appends sigma~ = 0). Times are
// t = t_of_scaled_sigma(s), exactly as `[grid] schedule = "hdf5"` with `variable = "sigma"` computes
// them, so the written grid replays bit for bit.
//
// NFE: model evaluations per sample, as run_sampling counts them (the final denoising included).
// The budget becomes a step count by measuring: the largest number of steps of the starting
// schedule whose run costs at most [tune] nfe evaluations (Heun: 2n - 1 on a to_zero grid, so 10
// gives 5 steps and 9 evaluations). The tuned grid has the same steps; its NFE is measured again on
// the held-out run and recorded.
#pragma once

#include "experiments/run/metrics.hpp"
#include "experiments/run/nelder_mead.hpp"
#include "experiments/run/provenance.hpp"
#include "experiments/run/sampling.hpp"

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

// [tune]: nfe, objective, train/held-out samples and seeds, the optimiser's budget, the reference
// tolerance, the sigma_min bounds and the output.
const TableSchema& tune_schema();

struct TuneSettings {
  std::optional<int> nfe;          // absent: [grid] steps fix the grid
  std::string objective = "mean";  // mean | median | rms distance to the PF-ODE solution; energy (law)
  Index train_samples = 1024, heldout_samples = 1024;
  std::uint64_t train_seed = 1, heldout_seed = 0, law_seed = 1000003;
  NelderMeadOptions optimiser;
  double reference_rtol = 1e-10;
  double sigma_min_lower = 0, sigma_min_upper = 0;  // resolved (the process's own; 2)
  std::string output;
};

struct TuneSetup {
  SamplingSetup sampling;  // grid = the starting grid at the budget's steps; run.seed set per noise set
  TuneSettings tune;
  int nfe = 0;             // measured on the starting grid
  std::string problem;     // "process/model", as a sweep names it
  std::string config_text, config_name;
  std::string sampler_text, process_text, model_text, grid_text;  // the tables as given (TOML)
};

// Reads and checks the config: [process], [model], [grid] (the starting grid and final_step; steps
// optional, from [tune] nfe), [sampler], [run] (block_rows and initial only: [tune] owns samples and
// seeds) and [tune]. Throws ConfigError naming file, line and key. Runs the sampler on one sample to
// turn the NFE budget into steps.
TuneSetup read_tune_setup(const Config& config);

// The grid parametrisation above.
class LogSigmaGrid {
 public:
  LogSigmaGrid(const Process& process, const TimeGrid& start, bool free_end, double sigma_min_lower, double sigma_min_upper);
  std::size_t dims() const { return (free_end_ ? 1 : 0) + (positive_ > 2 ? positive_ - 2 : 0); }
  std::vector<double> start_point() const;
  // Throws std::invalid_argument when the levels do not decrease strictly in floating point.
  TimeGrid grid(const std::vector<double>& point) const;

 private:
  const Process& process_;
  std::vector<double> start_sigma_;  // the starting grid's positive levels
  std::size_t positive_;
  FinalStep final_step_;
  bool free_end_;
  double log_lower_, log_upper_;
};

// One grid's scores on one set of noises. NaN where not computed.
struct GridScore {
  double objective = 0, mean = 0, median = 0, rms = 0, energy = 0, energy_floor = 0, nfe = 0;
  double sigma_min = 0;  // the last positive level
  bool failed = false;
  std::string failure;
};

struct TuneResult {
  TimeGrid start, tuned;
  GridScore train_before, train_after, heldout_before, heldout_after;
  NelderMeadResult search;
  std::size_t dims = 0;
  double wall_time = 0;
};

// Tunes, then scores the starting and the tuned grid on the held-out noises. Progress lines go to
// `log` when given. Throws std::runtime_error when a reference solve fails.
TuneResult tune_grid(TuneSetup& setup, int threads, std::ostream* log = nullptr);

// The results file: /sigma and /t (the tuned grid; replay with [grid] schedule = "hdf5", file =
// this, dataset = "sigma", variable = "sigma", final_step as recorded), /start/sigma and /start/t,
// /history (evaluation, best objective so far; N x 2); root attributes: schema, status, problem,
// sampler, sampler_config, process, model, grid_start, final_step, nfe, nfe_budget, steps,
// objective, train_/heldout_ samples and seeds, reference_rtol, optimiser settings and counts, the
// scores before and after on both sets, config and provenance.
void write_tuned_grid(const std::string& path, const TuneSetup& setup, const TuneResult& result, const Provenance& provenance);

}  // namespace diffode
