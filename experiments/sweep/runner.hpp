// One run of a sweep: read and validate its resolved config (the tables of `diffode sample` read by
// the same readers, run/sampling.hpp, plus [metrics], or [likelihood] for task "likelihood"), run it
// through run_sampling, and measure it against exact answers. Every key: docs/config.md.
#pragma once

#include "experiments/run/schema.hpp"
#include "experiments/sweep/plan.hpp"

#include <array>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace diffode {

// The metrics of a run, in the summary table's column order. NaN: not computed for this run.
// model_error_* and total_error_*: a deterministic run of a network with [model.ground_truth], which
// splits the error: error_rms is the solver's (against the network's own tight PF-ODE solve),
// model_error_* the network's (its tight solve against the exact mixture's, from the same x_T to the
// same end) and total_error_* the sum of both (the run against the exact mixture's tight solve).
// class_accuracy: with [metrics] classifier, the fraction of a class-conditional run's samples that
// the classifier assigns to the class each was asked to be (what `diffode classify` prints).
// model_calls: the model's own evaluations per sample behind the nfe (twice nfe where
// classifier-free guidance calls the conditional and the null class; nfe unguided).
inline constexpr std::array<const char*, 28> kRunMetrics{
    "nfe",           "wall_time",       "error_rms",      "error_max", "error_median", "strong_error", "strong_error_median", "weak_mean_error", "weak_mean_floor",
    "weak_cov_error", "weak_cov_floor", "nll",            "nll_exact", "frechet",      "frechet_floor",   "energy",
    "energy_floor",  "ll_error",        "ll_bias",        "ll_std_error", "rtol",      "probes",
    "model_error_rms", "model_error_median", "total_error_rms", "total_error_median", "class_accuracy", "model_calls"};

struct RunOutcome {
  bool ok = true;
  std::string failure;  // why not ok: NaN/Inf with step and sigma, step-size underflow, exception
  std::string task, sampler, schedule, final_step;
  Index steps = 0;
  std::int64_t seed = 0;
  bool stochastic = false;
  std::string noise;  // a stochastic sampler's noise ("per_step", "brownian" or "brownian_grid"), else empty
  std::array<double, kRunMetrics.size()> metrics;
  Batch samples, initial;  // when [run] save_samples
  // For the results file's /mixtures: the exact mixture and the law the samples should follow.
  Batch mixture_weights, mixture_means, mixture_variances;
  double alpha_end = 1.0, sigma_end = 0.0;
  std::string model;  // a network model's description (file, SHA-256, ...); empty for a mixture
  // Metrics whose names depend on the config, in order: the Frechet distance of [metrics]
  // frechet_features, named fd_<features> (fd_pixels, fd_fmnist_classifier, ...).
  std::vector<std::pair<std::string, double>> named_metrics;
  // What those metrics were measured with (feature name and file hash, reference, classifier).
  std::vector<std::pair<std::string, std::string>> notes;
  std::vector<std::int64_t> labels;  // each sample's requested class, saved with the samples

  RunOutcome() { metrics.fill(std::numeric_limits<double>::quiet_NaN()); }
  double& metric(std::string_view name);
  double metric(std::string_view name) const;
};

// [metrics]: reference_rtol, pathwise, strong, strong_steps, law, law_seed, frechet_features,
// frechet_reference, classifier.
const TableSchema& metrics_schema();

// Reads and checks everything a run needs (throws ConfigError naming the sweep file's line and the
// key); nothing runs. Returns about how many bytes the run's results take in the sweep's file.
double validate_run(const RunSpec& run, const std::string& file);

// What a run shares with other runs through RunExecutor's caches, for dealing runs to MPI ranks
// without solving the same thing on two: `key` is equal for every run that may use the same cached
// PF-ODE reference or fine solve (empty: the run shares none), `cost` and `shared_cost` are rough
// work estimates (rows x dimensions x steps) of the run and of the solve it shares. Reads the run
// as validate_run does.
struct RunSharing {
  std::string key;
  double cost = 0, shared_cost = 0;
};
RunSharing run_sharing(const RunSpec& run, const std::string& file);

// Runs one run after another, caching what several runs share: the PF-ODE references (per problem,
// noise and end point), the fine solves of stochastic samplers, the exact laws, and the feature
// networks, classifiers and reference statistics of the image metrics (loaded or computed once).
class RunExecutor {
 public:
  RunExecutor();
  ~RunExecutor();
  // Never throws for a failing run: the failure is recorded in the outcome. `threads` split the
  // batch into fixed blocks ([run] block_rows), so results do not depend on it.
  RunOutcome execute(const RunSpec& run, const std::string& file, int threads);
  // Drops the cached references and fine solves (not the exact laws, which are small): between
  // groups of runs whose run_sharing keys differ, nothing later needs them.
  void forget_shared();

 private:
  struct Caches;
  std::unique_ptr<Caches> caches_;
};

}  // namespace diffode
