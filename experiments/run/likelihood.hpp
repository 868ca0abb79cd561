// Log-likelihoods of data under a diffusion model through its probability-flow ODE
// (solvers/diffusion/likelihood.hpp; Song et al. 2021, arXiv:2011.13456, section 4.3): the
// [likelihood] table's schema and reader, the blocked, threaded solve, the metrics against the exact
// mixture's log p_{t_min}, and the dequantization noise of discrete data. The command that reads
// [data] and writes the file is cli/likelihood.cpp; every key is in docs/config.md.
#pragma once

#include "core/state.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/readers.hpp"
#include "models/gaussian_mixture.hpp"
#include "models/network.hpp"
#include "problems/process.hpp"
#include "solvers/diffusion/likelihood.hpp"

#include <filesystem>
#include <memory>
#include <string>

namespace diffode {

// Which log p_T closes the integral log p_{t_min}(x) = log p_T(x_T) + int div v dt.
//   exact     the mixture's own p_T (closed form): the model's likelihood with nothing
//             approximated but the ODE solve, so log_p - exact_log_p is the solver's error.
//   gaussian  the process's N(0, prior_std^2 I) (Process::prior_log_density), what a trained
//             network's likelihood uses; adds the prior's modelling error.
// A network's default is gaussian: its generative model starts from that prior. With a ground truth
// ([model.ground_truth]) it may take the mixture's p_T instead (exact), which isolates the network's
// error in the flow from the prior's.
enum class LikelihoodPrior { exact, gaussian };

// The solver part of a likelihood run, from a [likelihood] table.
struct LikelihoodSetup {
  // "dopri5" | "verner65" | "exponential23" | "exponential12" (adaptive) | "euler" | "heun" | "midpoint" | "rk4" (fixed grid)
  std::string solver = "dopri5";
  LikelihoodOptions options;      // rtol, atol, time, divergence, Hutchinson probes
  int steps = 0;                  // fixed-step solvers: uniform grid in options.time's variable
  Index block_rows = 256;         // rows per block (threads take whole blocks)
  LikelihoodPrior prior = LikelihoodPrior::exact;
  // Hutchinson: the Gaussian control variate (evaluate_log_likelihood builds its surrogate).
  bool control_variate = false;
  // An adaptive pair (steps from rtol and atol) rather than a fixed grid.
  bool adaptive() const { return solver == "dopri5" || solver == "verner65" || exponential(); }
  // An exponential pair in lambda (solvers/diffusion/likelihood_exponential.hpp).
  bool exponential() const { return solver == "exponential23" || solver == "exponential12"; }
};

// [likelihood]: the schema, and its reader (calls table.finish(); errors name key and line).
const TableSchema& likelihood_schema();
// `dims`, when known (> 0), lets the reader refuse a Hutch++ split the model's dimension cannot take.
// `model`, when given, sets the prior's default (a network: gaussian) and refuses prior = "exact" for
// a network without a ground truth.
LikelihoodSetup read_likelihood_setup(ConfigTable table, Index dims = 0, const ModelSource* model = nullptr);
// Refuses a setup the process cannot take (the log-sigma variable where lambda is infinite at an end).
void check_likelihood_process(ConfigTable table, const LikelihoodSetup& setup, const Process& process);


// Per point log p_{t_min}(x) (model space, nats), its Hutchinson standard error and NFE, for the
// rows of `points` (model space, at t_min). The points are solved in fixed blocks of
// setup.block_rows on `threads` threads, Hutchinson probes keyed by the global row (first_point =
// options.first_point + the block's first row): results are bitwise identical for any thread
// count. stats sums the blocks' batched evaluations and rejections, keeps their largest step
// count and the first failure.
LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process,
                                         const GaussianMixture& mixture, const Batch& points, int threads);
// The same for any [model]: the exact mixture, or a network whose score and divergence (exact: D
// vector-Jacobian products; Hutchinson and Hutch++: one per probe) come from autograd
// (NetworkModel::make_score_jacobian, one per block). prior = exact takes model.mixture's p_T.
LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process, const ModelSource& model,
                                         const Batch& points, int threads);

// A network's ScoreJacobian as the likelihood solver's DivergenceSource. Its products are
// vector-Jacobian products v^T J_s, passed where the solver asks for J_s v: every number the
// estimators integrate is a quadratic form v^T J_s v (Hutchinson's probes, Hutch++'s tr(Q^T J Q) and
// residual probes), the same for either; only Hutch++'s sketch sees J_s^T S in place of J_s S,
// which changes the subspace Q it finds (J_s is symmetric for an exact score, nearly so for a
// network) and not the estimate's unbiasedness, which holds for any Q.
class NetworkDivergence final : public DivergenceSource {
 public:
  explicit NetworkDivergence(std::unique_ptr<ScoreJacobian> jacobian) : jacobian_(std::move(jacobian)) {}
  void score_and_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& score,
                            PerSample& divergence) const override {
    jacobian_->score_and_divergence(x, alpha, sigma, score, divergence);
  }
  void score_and_jvps(const Batch& x, const PerSample& alpha, const PerSample& sigma, std::span<const Batch> directions,
                      Batch& score, std::vector<Batch>& jvps) const override {
    jacobian_->score_and_vjps(x, alpha, sigma, directions, score, jvps);
  }

 private:
  std::unique_ptr<ScoreJacobian> jacobian_;
};

struct LikelihoodMetrics {
  double ll_error = 0;      // mean over points of |log p - exact| / D (nats per dimension)
  double ll_bias = 0;       // mean of (log p - exact) / D
  double ll_std_error = 0;  // mean per-point Hutchinson standard error / D (0 for the exact divergence)
  double nfe_mean = 0, nfe_max = 0;
  double mean_log_p = 0, mean_exact_log_p = 0;  // in the space of the result (model space for evaluate_log_likelihood)
};
LikelihoodMetrics likelihood_metrics(const LikelihoodResult& result, const PerSample& exact_log_p, Index dims);

// The standard error of the mean of v over its entries (sample standard deviation / sqrt(n)).
double standard_error_of_mean(const PerSample& v);

// Uniform dequantization noise u ~ U[0, 1)^D, row i from Philox4x32-10 (Salmon et al. 2011) keyed
// by the seed with counter (column block, global row): the same whatever the batch or thread count,
// and apart from the mixtures' and probes' streams under the same seed.
Batch dequantization_noise(Index n, Index dims, std::uint64_t seed);

// [data]: the points a likelihood is measured at, in model space at t_min: draws of the model's
// exact p_{t_min}, or an N x D HDF5 dataset through a DataTransform (scale, offset, uniform
// dequantization). The file is opened and checked (shape, finiteness) when the table is read.
const TableSchema& data_schema();
struct LikelihoodData {
  Batch x;                  // model space, at t_min
  DataTransform transform;  // data space <-> model space
  std::string description;  // for messages and the results file
};
LikelihoodData read_likelihood_data(ConfigTable table, const Process& process, const GaussianMixture& mixture);
// The same for a model of `dims` dimensions whose exact mixture may be absent (a network without a
// ground truth): then source = "mixture" is refused.
LikelihoodData read_likelihood_data(ConfigTable table, const Process& process, const GaussianMixture* mixture, Index dims);

}  // namespace diffode
