// `diffode likelihood CONFIG.toml`: log-likelihoods of data under a diffusion model through its
// probability-flow ODE (solvers/diffusion/likelihood.hpp; Song et al. 2021, arXiv:2011.13456,
// section 4.3), measured against the exact mixture's log p_{t_min}, written to HDF5.
//
// Config (every key optional unless marked; unknown keys, wrong types and impossible values are
// errors naming file, line and key, exit 2, nothing written):
//   [process]     as `diffode sample`: name, beta_min, beta_max, sigma_min, sigma_max, t_min, t_max
//   [model]       as `diffode sample`: kind = "mixture"; preset / inline weights, means, variances / file
//   [data]        source = "mixture" (points = 256, seed = 0: draws of the model's exact p_{t_min},
//                 i.e. mixture.sample_marginal(alpha(t_min), sigma(t_min))) or "hdf5" (file, dataset
//                 (required), N x D data y; then scale = 1, offset = 0, bin_width = 0 of DataTransform:
//                 x = (y + bin_width u - offset) / scale with u ~ U[0,1)^D drawn from seed when
//                 bin_width > 0, and log p_data(y) = log p_model(x) - D log scale + D log bin_width)
//   [likelihood]  solver = "dopri5" | "euler" | "heun" | "midpoint" | "rk4"; rtol, atol (dopri5);
//                 error_norm = "per_point" | "batch" (dopri5); steps (fixed-step solvers);
//                 time = "process" | "log_sigma";
//                 divergence = "exact" | "hutchinson"; probes, probe = "rademacher" | "gaussian" |
//                 "basis", probe_seed (hutchinson); prior = "exact" | "gaussian"; block_rows = 256
//   [output]      file (required)
// See likelihood_config_help() for each key's meaning (it is `diffode likelihood --help`'s footer).
//
// Output: per point /log_p (data space, nats), /std_error, /nfe, /accepted, /rejected,
// /bits_per_dim, /prior_log_p, /delta_log_p (model space), /exact_log_p and /error (log_p minus
// exact, data space) for the exact mixture; /summary attributes; root attributes config, status,
// failure and the provenance.
#pragma once

#include "core/state.hpp"
#include "experiments/config.hpp"
#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "solvers/diffusion/likelihood.hpp"

#include <filesystem>
#include <memory>
#include <string>

namespace diffode {

struct Provenance;

// Which log p_T closes the integral log p_{t_min}(x) = log p_T(x_T) + int div v dt.
//   exact     the mixture's own p_T (closed form): the model's likelihood with nothing
//             approximated but the ODE solve, so log_p - exact_log_p is the solver's error.
//   gaussian  the process's N(0, prior_std^2 I) (Process::prior_log_density), what a trained
//             network's likelihood uses; adds the prior's modelling error.
enum class LikelihoodPrior { exact, gaussian };

// The solver part of a likelihood run, from a [likelihood] table.
struct LikelihoodSetup {
  std::string solver = "dopri5";  // "dopri5" (adaptive) | "euler" | "heun" | "midpoint" | "rk4" (fixed grid)
  LikelihoodOptions options;      // rtol, atol, time, divergence, Hutchinson probes
  int steps = 0;                  // fixed-step solvers: uniform grid in options.time's variable
  Index block_rows = 256;         // rows per block (threads take whole blocks)
  LikelihoodPrior prior = LikelihoodPrior::exact;
};

// Reads and validates [likelihood]; calls table.finish(). Errors are ConfigErrors naming key and line.
LikelihoodSetup read_likelihood_setup(ConfigTable table);


// Per point log p_{t_min}(x) (model space, nats), its Hutchinson standard error and NFE, for the
// rows of `points` (model space, at t_min). The points are solved in fixed blocks of
// setup.block_rows on `threads` threads, Hutchinson probes keyed by the global row (first_point =
// options.first_point + the block's first row): results are bitwise identical for any thread
// count. stats sums the blocks' batched evaluations and rejections, keeps their largest step
// count and the first failure.
LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process,
                                         const GaussianMixture& mixture, const Batch& points, int threads);

struct LikelihoodMetrics {
  double ll_error = 0;      // mean over points of |log p - exact| / D (nats per dimension)
  double ll_bias = 0;       // mean of (log p - exact) / D
  double ll_std_error = 0;  // mean per-point Hutchinson standard error / D (0 for the exact divergence)
  double nfe_mean = 0, nfe_max = 0;
  double mean_log_p = 0, mean_exact_log_p = 0;  // in the space of the result (model space for evaluate_log_likelihood)
};
LikelihoodMetrics likelihood_metrics(const LikelihoodResult& result, const PerSample& exact_log_p, Index dims);

// Runs the command; returns the exit code: 0 done, 1 the solve failed for some point (recorded in
// the file), 2 bad config (nothing written). threads >= 1.
int run_likelihood_command(const std::filesystem::path& config, const Provenance& provenance, int threads = 1);

// Every config key, for `diffode likelihood --help`.
std::string likelihood_config_help();

}  // namespace diffode
