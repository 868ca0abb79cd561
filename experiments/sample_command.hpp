// `diffode sample CONFIG.toml`: one sampler on one problem, written to HDF5.
//
// Config (every key optional unless marked; unknown keys are errors naming the line):
//   [process]  name = "edm" | "vp" | "vp_cosine" | "subvp" | "ve" | "flow"; beta_min, beta_max,
//              sigma_min, sigma_max, t_min, t_max override the process's defaults
//   [model]    kind = "mixture"; preset = "ring2d" | "iso16" | "diag64" (seed = 0),
//              or weights = [...], means = [[...]], variances = [[...]] inline,
//              or file = "mixture.h5" with datasets weights (K), means (K x D), variances (K x D)
//   [grid]     schedule = "karras" | "uniform_t" | "uniform_lambda" | "quadratic" | "exponential" |
//              "polyexponential" | "ddpm" | "file" | "hdf5"; steps (required but for file/hdf5);
//              rho; final_step = "to_zero" | "to_t_min" | "denoise"; spacing (ddpm: "linspace" |
//              "leading" | "trailing"); file (text list of t, or HDF5); dataset and variable =
//              "t" | "sigma" (hdf5: a time or a scale-free sigma list)
//   [sampler]  name (required), then the sampler's own options (see `diffode samplers`)
//   [run]      samples = 1024, seed = 0, initial = "prior" | "exact" (x_T from N(0, prior_std^2 I)
//              or from the exact p_T of the mixture, sharing the same eps), initial_file +
//              initial_dataset (x_T from HDF5, N x D, in the process's own x), output (required),
//              save_trajectory = false
// Output: /samples (N x D, x at the grid's end), /initial (x_T), /grid/t, /grid/sigma, optional
// /trajectory/step_XXXX; root attributes: the config text, sampler, nfe, status, failure, and the
// provenance (command line, commit, versions, host, start time).
#pragma once

#include <filesystem>
#include <string>

namespace diffode {

struct Provenance;

// Returns the process exit code: 0 done, 1 the run failed (recorded in the file), 2 bad config.
int run_sample_command(const std::filesystem::path& config, const Provenance& provenance);

// One line per registered sampler with its summary.
std::string describe_samplers();

}  // namespace diffode
