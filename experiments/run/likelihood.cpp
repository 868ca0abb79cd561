#include "experiments/run/likelihood.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/parallel.hpp"
#include "experiments/run/provenance.hpp"
#include "experiments/run/readers.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"

#include <Random123/philox.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

namespace diffode {

const TableSchema& likelihood_schema() {
  static const TableSchema s{
      "likelihood",
      "the probability-flow ODE solve of log p (diffode likelihood; a sweep's runs with [run] task = \"likelihood\")",
      {string_key("solver", "an adaptive pair with per-point error control (Dormand-Prince 5(4), Verner's 6(5); the exponential pairs DPM-Solver-23 / -12 in lambda, linear part exact), or a fixed-step solver")
           .fallback_str("dopri5")
           .one_of({"dopri5", "verner65", "exponential23", "exponential12", "euler", "heun", "midpoint", "rk4"}),
       number_key("rtol", "relative tolerance (adaptive solvers)").fallback(1e-5).above(0),
       number_key("atol", "absolute tolerance (adaptive solvers)").fallback(1e-5).above(0),
       string_key("error_norm", "adaptive solvers: each point its own steps, or one step for a block (the literature's batch RK45)")
           .fallback_str("per_point")
           .one_of({"per_point", "batch"}),
       integer_key("steps", "uniform steps in the time variable (fixed-step solvers, required there)").optional("required for fixed-step solvers").at_least(1).at_most(1000000),
       string_key("time", "the ODE's variable: t from t_min to T, u = log sigma~ (better for fixed grids), or u = sigma~^(1/rho) (EDM's warped noise level); the exponential pairs always use log sigma~ = -lambda")
           .fallback_str("process")
           .one_of({"process", "log_sigma", "sigma_rho"}),
       number_key("rho", "time = \"sigma_rho\": the exponent rho of u = sigma~^(1/rho)").optional("7 with time = \"sigma_rho\"").above(0).at_most(1000),
       string_key("divergence", "the divergence of the drift: exact, Hutchinson's estimator, or Hutch++ (a shifted sketch, exact on it, Hutchinson on the rest)")
           .fallback_str("exact")
           .one_of({"exact", "hutchinson", "hutchpp"}),
       integer_key("probes", "hutchinson: probes per point (std_error needs >= 2); hutchpp: JVPs per evaluation, 2 sketch + residual").fallback_int(1).at_least(1).at_most(4096),
       string_key("probe", "hutchinson: the probes' law; orthogonal: random orthonormal frames of length sqrt(D); basis: the D scaled unit vectors (no count)")
           .fallback_str("rademacher")
           .one_of({"rademacher", "gaussian", "orthogonal", "basis"}),
       integer_key("sketch", "hutchpp: the sketch's width k (r = probes - 2k residual probes); default probes / 4, at least 1").optional("probes / 4").at_least(1),
       integer_key("probe_seed", "seed of the probes").fallback_int(0).at_least(0),
       string_key("control_variate", "hutchinson: subtract each probe's form of a Gaussian surrogate's score Jacobian and add its exact trace (the mixture's moments, else the points' sample covariance)")
           .fallback_str("none")
           .one_of({"none", "gaussian"}),
       string_key("prior", "log p_T: the mixture's own (the error is the solver's; a network: its ground truth's) or N(0, prior_std^2 I)")
           .optional("exact for a mixture, gaussian for a network")
           .one_of({"exact", "gaussian"}),
       integer_key("block_rows", "points per block (diffode likelihood; sweeps take [run] block_rows)").fallback_int(256).at_least(1)}};
  return s;
}

namespace {

void read_adaptive(ConfigTable& t, LikelihoodSetup& s) {
  if (t.has("steps")) t.fail("steps", fmt::format("only for the fixed-step solvers ({} chooses its own steps from rtol and atol)", s.solver));
  s.options.adaptive.rtol = t.number("rtol");
  s.options.adaptive.atol = t.number("atol");
  // per_point: each point its own steps (its value then does not depend on its batch); batch:
  // the largest error ratio of the block sets one step for all its points, as a solver that
  // sees the batch as one ODE would (the literature's scipy RK45 setting, up to its RMS norm).
  s.options.adaptive.norm = t.string("error_norm") == "per_point" ? ErrorNorm::per_sample : ErrorNorm::batch;
  s.options.method = s.solver == "verner65"        ? AdaptiveMethod::verner65
                     : s.solver == "exponential23" ? AdaptiveMethod::exponential23
                     : s.solver == "exponential12" ? AdaptiveMethod::exponential12
                                                   : AdaptiveMethod::dopri5;
}

void read_fixed(ConfigTable& t, LikelihoodSetup& s) {
  for (const char* key : {"rtol", "atol", "error_norm"})
    if (t.has(key)) t.fail(key, fmt::format("only for the adaptive solvers dopri5, verner65, exponential23 and exponential12 (the fixed-step solver '{}' takes steps)", s.solver));
  if (!t.has("steps"))
    t.fail("steps", fmt::format("required for the fixed-step solver '{}' (the number of uniform steps in the time variable)", s.solver));
  s.steps = static_cast<int>(t.integer("steps"));
}

void read_divergence(ConfigTable& t, LikelihoodSetup& s, Index dims) {
  const std::string divergence = t.string("divergence");
  s.options.divergence = divergence == "hutchinson" ? DivergenceMethod::hutchinson
                         : divergence == "hutchpp"  ? DivergenceMethod::hutchpp
                                                    : DivergenceMethod::exact;
  if (s.options.divergence == DivergenceMethod::exact) {
    for (const char* key : {"probes", "probe", "sketch", "probe_seed"})
      if (t.has(key)) t.fail(key, "only with divergence = \"hutchinson\" or \"hutchpp\"");
    if (t.has("control_variate")) t.fail("control_variate", "only with divergence = \"hutchinson\" (the exact divergence has no variance)");
    return;
  }
  if (s.options.divergence == DivergenceMethod::hutchpp && t.has("control_variate"))
    t.fail("control_variate", "only with divergence = \"hutchinson\" (Hutch++ takes its own low-rank part out)");
  if (s.options.divergence == DivergenceMethod::hutchpp) {
    if (t.has("probe")) t.fail("probe", "Hutch++ draws its own Gaussian sketch and residual probes (the law is for divergence = \"hutchinson\")");
    if (!t.has("probes")) t.fail("probes", "required for Hutch++: the JVPs per evaluation, 2 sketch + residual (e.g. 8)");
    s.options.hutchinson.probes = static_cast<Index>(t.integer("probes"));
    if (t.has("sketch")) s.options.hutchinson.sketch = static_cast<Index>(t.integer("sketch"));
    s.options.hutchinson.seed = static_cast<std::uint64_t>(t.integer("probe_seed"));
    if (dims > 0) {
      try {
        (void)detail::hutchpp_split(s.options.hutchinson, dims);
      } catch (const std::invalid_argument& e) {
        t.fail(t.has("sketch") ? "sketch" : "probes", e.what());
      }
    }
    return;
  }
  if (t.has("sketch")) t.fail("sketch", "only with divergence = \"hutchpp\"");
  const std::string law = t.string("probe");
  s.options.hutchinson.law = law == "rademacher" ? ProbeLaw::rademacher
                             : law == "gaussian" ? ProbeLaw::gaussian
                             : law == "orthogonal" ? ProbeLaw::orthogonal
                                                 : ProbeLaw::basis;
  s.control_variate = t.string("control_variate") == "gaussian";
  if (s.control_variate && s.options.hutchinson.law == ProbeLaw::basis)
    t.fail("control_variate", "the basis probes give the exact trace already");
  if (s.options.hutchinson.law == ProbeLaw::basis) {
    if (t.has("probes")) t.fail("probes", "the basis probes are the D scaled unit vectors: give no count");
  } else {
    s.options.hutchinson.probes = static_cast<Index>(t.integer("probes"));
  }
  s.options.hutchinson.seed = static_cast<std::uint64_t>(t.integer("probe_seed"));
}

}  // namespace

void check_likelihood_process(ConfigTable t, const LikelihoodSetup& setup, const Process& process) {
  if (setup.options.time == LikelihoodTime::process) return;
  const double lo = process.lambda(process.t_min()), hi = process.lambda(process.t_max());
  if (!std::isfinite(lo) || !std::isfinite(hi))
    t.fail(setup.exponential() ? "solver" : "time", fmt::format("log sigma~ (the variable's source) is infinite at an end of {}'s range [{}, {}] (lambda = {}, {}): use time = \"process\", or a "
                               "process whose t_max keeps alpha > 0",
                               process.name(), process.t_min(), process.t_max(), lo, hi));
}

LikelihoodSetup read_likelihood_setup(ConfigTable t, Index dims, const ModelSource* model) {
  t = t.bind(likelihood_schema());
  LikelihoodSetup s;
  s.solver = t.string("solver");
  if (s.adaptive())
    read_adaptive(t, s);
  else
    read_fixed(t, s);
  const std::string time = t.string("time");
  s.options.time = time == "process" ? LikelihoodTime::process : time == "log_sigma" ? LikelihoodTime::log_sigma : LikelihoodTime::sigma_rho;
  if (s.exponential()) {
    // The exponential pairs are formulated in lambda: their variable is not a choice.
    if (t.has("time") && s.options.time != LikelihoodTime::log_sigma)
      t.fail("time", fmt::format("{} integrates in lambda (u = log sigma~ = -lambda) by construction: leave time out", s.solver));
    s.options.time = LikelihoodTime::log_sigma;
  }
  if (t.has("rho")) {
    if (s.options.time != LikelihoodTime::sigma_rho) t.fail("rho", "only with time = \"sigma_rho\"");
    s.options.rho = t.number("rho");
  }
  read_divergence(t, s, dims);
  const bool network = model != nullptr && model->network != nullptr;
  s.prior = network ? LikelihoodPrior::gaussian : LikelihoodPrior::exact;
  if (t.has("prior")) s.prior = t.string("prior") == "exact" ? LikelihoodPrior::exact : LikelihoodPrior::gaussian;
  if (network && s.prior == LikelihoodPrior::exact && model->mixture == nullptr)
    t.fail("prior", "\"exact\" takes the mixture's p_T: a network has one only with [model.ground_truth] (or use \"gaussian\")");
  s.block_rows = static_cast<Index>(t.integer("block_rows"));
  t.finish();
  return s;
}

namespace {

// The fixed-step solvers' grid: n uniform steps in the solve's own variable, with its ends computed
// by the same expressions as AugmentedProbabilityFlow::start()/end() so that they match bit for bit.
std::vector<double> uniform_grid(const Process& process, LikelihoodTime time, double rho, int steps) {
  const double start = likelihood_variable(process, time, rho, process.t_min());
  const double end = likelihood_variable(process, time, rho, process.t_max());
  std::vector<double> grid(static_cast<std::size_t>(steps) + 1);
  for (int i = 0; i <= steps; ++i) grid[i] = start + (end - start) * (static_cast<double>(i) / steps);
  grid.front() = start;
  grid.back() = end;
  return grid;
}

// One block with `source`'s divergence; prior = exact closes it with `mixture`'s p_T.
LikelihoodResult solve_block(const LikelihoodSetup& setup, const Process& process, const DivergenceSource& source,
                             const GaussianMixture* mixture, const Batch& x, Index first_point) {
  LikelihoodOptions options = setup.options;
  options.first_point += first_point;
  LikelihoodResult r;
  if (setup.adaptive()) {
    r = log_likelihood(process, source, x, options);
  } else {
    const std::vector<double> grid = uniform_grid(process, options.time, options.rho, setup.steps);
    auto solve = [&](auto stepper) { return log_likelihood_on_grid(stepper, process, source, x, grid, options); };
    if (setup.solver == "euler") r = solve(Euler<Batch>{});
    else if (setup.solver == "heun") r = solve(Heun<Batch>{});
    else if (setup.solver == "midpoint") r = solve(Midpoint<Batch>{});
    else if (setup.solver == "rk4") r = solve(Rk4<Batch>{});
    else throw std::invalid_argument(fmt::format("likelihood: unknown solver '{}'", setup.solver));
  }
  if (setup.prior == LikelihoodPrior::exact) {
    if (mixture == nullptr) throw std::invalid_argument("likelihood: prior = \"exact\" needs an exact mixture");
    const Index n = x.rows();
    const double t = process.t_max();
    r.prior_log_p = mixture->log_prob(r.x_T, PerSample::Constant(n, process.alpha(t)), PerSample::Constant(n, process.sigma(t)));
    r.log_p = r.with_prior(r.prior_log_p);
  }
  return r;
}

double mean_of(const std::vector<Index>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

}  // namespace

double standard_error_of_mean(const PerSample& v) {
  const Index n = v.size();
  if (n < 2) return 0.0;
  return std::sqrt((v - v.mean()).square().sum() / static_cast<double>(n - 1) / static_cast<double>(n));
}

// Uniform dequantization noise u ~ U[0, 1)^D, row i from Philox4x32-10 (Salmon et al. 2011) keyed
// by the seed with counter (column block, global row): the same whatever the batch or thread count.
// The key's high word is mixed with a constant of this file so these draws stay apart from the
// mixtures' and probes' streams under the same seed.
Batch dequantization_noise(Index n, Index dims, std::uint64_t seed) {
  using Philox = r123::Philox4x32;
  constexpr std::uint32_t kDequantizationKey = 0x64657175;  // "dequ"
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32) ^ kDequantizationKey}};
  Batch u(n, dims);
  for (Index i = 0; i < n; ++i) {
    const auto row = static_cast<std::uint64_t>(i);
    for (Index d = 0, block = 0; d < dims; ++block) {
      const Philox::ctr_type ctr = {{static_cast<std::uint32_t>(block), 0u, static_cast<std::uint32_t>(row), static_cast<std::uint32_t>(row >> 32)}};
      const Philox::ctr_type r = Philox{}(ctr, key);
      // Two 53-bit uniforms per 128 random bits.
      for (int pair = 0; pair < 2 && d < dims; ++pair, ++d) {
        const std::uint64_t bits = (std::uint64_t{r[2 * pair]} << 32) | r[2 * pair + 1];
        u(i, d) = static_cast<double>(bits >> 11) * 0x1.0p-53;
      }
    }
  }
  return u;
}

LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process, const GaussianMixture& mixture,
                                         const Batch& points, int threads) {
  ModelSource model;
  model.kind = "mixture";
  // Not owned: the caller's mixture outlives the call.
  model.mixture = std::shared_ptr<const GaussianMixture>(&mixture, [](const GaussianMixture*) {});
  return evaluate_log_likelihood(setup, process, model, points, threads);
}

LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process, const ModelSource& model,
                                         const Batch& points, int threads) {
  const Index n = points.rows(), dims = points.cols();
  if (model.network == nullptr && model.mixture == nullptr) throw std::invalid_argument("evaluate_log_likelihood: no model");
  const Index model_dims = model.network ? model.network->dims() : model.mixture->dims();
  if (dims != model_dims)
    throw std::invalid_argument(fmt::format("evaluate_log_likelihood: points have {} columns, the model {} dims", dims, model_dims));
  // The control variate's surrogate, fixed for the whole data set (so that a point's result does not
  // depend on its block): the mixture's own moments where the model has one, else the sample
  // covariance of all the points.
  LikelihoodSetup with_surrogate = setup;
  if (setup.control_variate && setup.options.divergence == DivergenceMethod::hutchinson)
    with_surrogate.options.control_variate = std::make_shared<GaussianSurrogate>(
        model.mixture ? GaussianSurrogate::from_covariance(model.mixture->covariance()) : GaussianSurrogate::from_points(points));
  const std::vector<BlockRange> blocks = make_blocks(n, setup.block_rows);
  std::vector<LikelihoodResult> parts(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) {
    const Batch x = points.middleRows(b.begin, b.rows());
    if (model.network) {
      const NetworkDivergence source(model.network->make_score_jacobian(-1));
      parts[b.index] = solve_block(with_surrogate, process, source, model.mixture.get(), x, b.begin);
    } else {
      const MixtureDivergence source(*model.mixture);
      parts[b.index] = solve_block(with_surrogate, process, source, model.mixture.get(), x, b.begin);
    }
  });

  LikelihoodResult r;
  const Index integrals = parts.empty() ? 1 : parts.front().probe_integrals.cols();
  r.x_T.resize(n, dims);
  r.probe_integrals.resize(n, integrals);
  for (PerSample* v : {&r.delta_log_p, &r.prior_log_p, &r.log_p, &r.std_error}) v->resize(n);
  r.nfe.reserve(n), r.accepted.reserve(n), r.rejected.reserve(n);
  // Blocks in row order: the merged record is the same whichever thread solved which block.
  for (const BlockRange& b : blocks) {
    const LikelihoodResult& p = parts[b.index];
    r.x_T.middleRows(b.begin, b.rows()) = p.x_T;
    r.probe_integrals.middleRows(b.begin, b.rows()) = p.probe_integrals;
    r.delta_log_p.segment(b.begin, b.rows()) = p.delta_log_p;
    r.prior_log_p.segment(b.begin, b.rows()) = p.prior_log_p;
    r.log_p.segment(b.begin, b.rows()) = p.log_p;
    r.std_error.segment(b.begin, b.rows()) = p.std_error;
    r.nfe.insert(r.nfe.end(), p.nfe.begin(), p.nfe.end());
    r.accepted.insert(r.accepted.end(), p.accepted.begin(), p.accepted.end());
    r.rejected.insert(r.rejected.end(), p.rejected.begin(), p.rejected.end());
    r.stats.steps = std::max(r.stats.steps, p.stats.steps);
    r.stats.rejected += p.stats.rejected;
    r.stats.nfe += p.stats.nfe;
    if (p.stats.failed && !r.stats.failed) {
      r.stats.failed = true;
      r.stats.failure = fmt::format("block of rows {}..{}: {}", b.begin, b.end - 1, p.stats.failure);
      r.stats.failed_step = p.stats.failed_step;
      r.stats.failed_time = p.stats.failed_time;
    }
  }
  return r;
}

LikelihoodMetrics likelihood_metrics(const LikelihoodResult& result, const PerSample& exact_log_p, Index dims) {
  LikelihoodMetrics m;
  const Index n = result.log_p.size();
  if (n == 0) return m;
  if (exact_log_p.size() != n) throw std::invalid_argument("likelihood_metrics: exact_log_p has another length than the result");
  const double d = static_cast<double>(dims);
  const PerSample error = (result.log_p - exact_log_p) / d;
  m.ll_error = error.abs().mean();
  m.ll_bias = error.mean();
  m.ll_std_error = result.std_error.mean() / d;
  m.nfe_mean = mean_of(result.nfe);
  m.nfe_max = result.nfe.empty() ? 0.0 : static_cast<double>(*std::max_element(result.nfe.begin(), result.nfe.end()));
  m.mean_log_p = result.log_p.mean();
  m.mean_exact_log_p = exact_log_p.mean();
  return m;
}

}  // namespace diffode
