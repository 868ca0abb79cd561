// Exact log-likelihoods of a diffusion model through its probability-flow ODE (Song et al. 2021,
// "Score-Based Generative Modeling through Stochastic Differential Equations", arXiv:2011.13456,
// section 4.3 and appendix D.2; the instantaneous change of variables of Chen et al. 2018,
// arXiv:1806.07366, theorem 1), with the divergence exact or estimated by Hutchinson's trace
// estimator (Hutchinson 1989, Commun. Stat. Simul. Comput. 18(3); as in FFJORD, Grathwohl et al.
// 2019, arXiv:1810.01367, section 3.1).
//
// For the forward process dx = f(t) x dt + g(t) dW (problems/process.hpp) the probability flow
//     dx/dt = v(x, t) = f(t) x - 1/2 g^2(t) s(x, t),    s = grad log p_t,
// carries p_t along its trajectories: d/dt log p_t(x(t)) = -div v(x(t), t). Integrating the
// augmented ODE in the process's own time, forward from the data at t_min up to T,
//     d/dt [x, l] = [v(x, t), div v(x, t)],   div v = D f(t) - 1/2 g^2(t) div s(x, t),
// gives
//     log p_{t_min}(x) = log p_T(x_T) + l(T),   l(t_min) = 0.
// The prior log p_T is the process's Gaussian N(0, prior_std^2 I) (Process::prior_log_density):
// only an approximation to the true p_T (a mixture at T is not exactly Gaussian), so its error is a
// modelling error, not a solver error. LikelihoodResult keeps x_T and the integral apart so that an
// exact p_T (the mixture's own log_prob at T) can be added instead, isolating the solver's error.
//
// Divergence.
//   exact        the source's div s (closed form for the exact mixture; for a network, D
//                backward passes).
//   Hutchinson   div v(x) = E_e[e^T J_v e] for probes with E[e e^T] = I (Rademacher or Gaussian),
//                J_v e = f e - 1/2 g^2 J_s e: one Jacobian-vector product per probe, never the
//                Jacobian. The probes are drawn once per point and held fixed for the whole solve
//                (FFJORD's choice: the integrand is then a smooth function of t, which an adaptive
//                solver needs; fresh probes per evaluation would make it noise). Each probe's
//                integral rides as its own column of the augmented state, so one solve gives K
//                unbiased estimates l_k(T) per point; their mean is the estimate and
//                std(l_k) / sqrt(K) its standard error.
//
//   orthogonal   Hutchinson with each point's K probes a random orthonormal frame scaled to
//                length sqrt(D) (Gaussian draws orthonormalised; K > D: independent frames of D):
//                each probe is uniform on the sphere, so E[e e^T] = I still; the identity part of
//                J_v costs no variance (as with Rademacher), and within a frame the probes cannot
//                repeat a direction. Standard error: std / sqrt(K) times sqrt(1 - K/D), the
//                finite-population factor of drawing K of the D directions of a random basis.
//   Hutch++      Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal Stochastic Trace
//                Estimation", arXiv:2010.09649, Algorithm 1, adapted to the ODE. At every
//                evaluation, with the probes S (D x k) and G (D x r) fixed along the trajectory
//                (Gaussian): (1) the sketch A S with A = J_v (k JVPs); (2) Q = orth((A - mu I) S),
//                mu = mean_j s_j^T A s_j / |s_j|^2. The shift is ours: J_v of a diffusion is
//                nearly a multiple of I plus a low-rank part (the posterior spread of the
//                components), and Hutch++'s plain sketch orth(A S) would then be a random
//                subspace; shifted, it finds the low-rank part; (3) tr(Q^T A Q) exactly (k JVPs)
//                plus Hutchinson on the complement with r probes u_l = sqrt(D - k) orth((I - QQ^T)
//                G)_l (r JVPs): uniform on the complement's sphere, E[u u^T] = I - QQ^T, so the
//                estimate is unbiased for any Q, and the identity part again costs no variance.
//                2k + r JVPs per evaluation. Q and the u_l are smooth functions of (x, t), so the
//                integrand stays smooth for the adaptive solver. Standard error: the residual
//                probes' std / sqrt(r) times sqrt(1 - r/(D - k)).
//
//   control variate (Hutchinson only) a Gaussian surrogate N(mu, Sigma) for the data (the
//                mixture's own moments, or the sample covariance of the points evaluated) has the
//                score Jacobian J~ = -(alpha^2 Sigma + sigma^2 I)^{-1}, exact and free at every
//                time. Each probe's integrand becomes e^T J_v e - e^T J~_v e + tr J~_v, J~_v =
//                f I - 1/2 g^2 J~ (the classical control variate with coefficient 1; Owen 2013,
//                "Monte Carlo theory, methods and examples", chapter 8): unbiased for any fixed
//                Sigma, with the same probes in both forms, so only the part of J_s the surrogate
//                misses costs variance. The columns stay independent per-probe estimates, so the standard error is
//                theirs, std / sqrt(K), as before. Rademacher probes already pay nothing for J's
//                diagonal, so with them only Sigma's off-diagonal structure can help (an isotropic or
//                diagonal surrogate would change nothing); Gaussian probes gain the identity part too.
//
// State. The augmented state is an N x (D + C) Batch, C = 1 (exact) or K (Hutchinson): each row is
// one point with its integrals. integrate_adaptive's per-sample error control therefore controls a
// point and its integrals together (the RMS error ratio runs over the row's D + C entries), with a
// step size of its own; a point's result does not depend on the batch it is solved in.
//
// Per-point cost. Under per-sample control every point rides along in each batched evaluation, but
// the point's own solve (the one it would do alone, bit for bit) costs 2 evaluations for the
// starting step (HNW I, section II.4) + 1 first stage + 6 per attempted step of Dopri5, 8 of
// Verner's 6(5) (both FSAL; a rejected step keeps its first stage): LikelihoodResult::nfe reports
// that count. The exponential pairs in lambda count theirs as likelihood_exponential.hpp says. An evaluation is one model call with its divergence or its K JVPs (Hutch++: two
// rounds of JVPs, k then k + r, each with the score).
#pragma once

#include "core/state.hpp"
#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/integrate.hpp"
#include "solvers/diffusion/likelihood_exponential.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/verner65.hpp"

#include <Eigen/Eigenvalues>

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <memory>
#include <numbers>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace diffode {

// What the likelihood needs from a model beyond its predictions: the score, its exact divergence,
// and score Jacobian-vector products J_s(x) v, at per-sample levels (alpha_n, sigma_n) as a
// Predictor is asked (models/predictor.hpp). The exact mixture has all three in closed form; a
// network (experiments/run/likelihood.hpp's NetworkDivergence) gives score_and_divergence by D
// reverse-mode products and score_and_jvps by vector-Jacobian products v^T J_s, which give every
// quadratic form v^T J_s v the estimators integrate. Both return the score of the same call so that
// one evaluation of the model serves the drift and its divergence.
class DivergenceSource {
 public:
  virtual ~DivergenceSource() = default;
  // score (N x D) and div_x s (N).
  virtual void score_and_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& score,
                                    PerSample& divergence) const = 0;
  // score (N x D) and, for each direction directions[k] (N x D, one row per sample), J_s directions[k].
  virtual void score_and_jvps(const Batch& x, const PerSample& alpha, const PerSample& sigma,
                              std::span<const Batch> directions, Batch& score, std::vector<Batch>& jvps) const = 0;
};

// The exact mixture (models/gaussian_mixture.hpp): score, divergence and JVPs in closed form, each
// call one pass over the batch.
class MixtureDivergence final : public DivergenceSource {
 public:
  explicit MixtureDivergence(const GaussianMixture& mixture) : mixture_(mixture) {}
  explicit MixtureDivergence(const MixturePredictor& predictor) : mixture_(predictor.mixture()) {}

  void score_and_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& score,
                            PerSample& divergence) const override {
    mixture_.evaluate(x, alpha, sigma, {.score = &score, .divergence = &divergence});
  }

  void score_and_jvps(const Batch& x, const PerSample& alpha, const PerSample& sigma, std::span<const Batch> directions,
                      Batch& score, std::vector<Batch>& jvps) const override {
    jvps.resize(directions.size());
    if (directions.empty()) {
      mixture_.score(x, alpha, sigma, score);
      return;
    }
    mixture_.evaluate(x, alpha, sigma, {.score = &score, .jvp_direction = &directions[0], .jvp = &jvps[0]});
    for (std::size_t k = 1; k < directions.size(); ++k) mixture_.score_jvp(x, alpha, sigma, directions[k], jvps[k]);
  }

 private:
  const GaussianMixture& mixture_;
};

enum class DivergenceMethod { exact, hutchinson, hutchpp };

// The adaptive pair of log_likelihood: Dormand-Prince 5(4) or Verner's 6(5) (solvers/ode) in
// options.time's variable, or the exponential pairs DPM-Solver-12 / -23 in lambda
// (likelihood_exponential.hpp; they always integrate in u = log sigma~ = -lambda).
enum class AdaptiveMethod { dopri5, verner65, exponential12, exponential23 };

// The independent variable of the solve. The augmented ODE is the same curve in either; only the
// steps differ.
//   process     t itself, from t_min to T (Song et al.'s setting).
//   log_sigma   u = log sigma~(t) = -lambda(t), the log of the scale-free noise level, with
//               d/du = (dt/du) d/dt, dt/du = -1 / lambda'(t). A uniform step in u is a fixed
//               ratio of noise levels (Karras et al. 2022, arXiv:2206.00364, section 3; Lu et al.
//               2022, arXiv:2206.00927, section 3.3): the natural variable for a fixed grid. For
//               adaptive Dopri5 it is no better: on the exact mixtures it took 10-40% more
//               evaluations than t at equal tolerance and error (likelihood_test's NfeForAccuracy),
//               the controller already placing steps well in t; hence t is the default.
//   sigma_rho   u = sigma~(t)^(1/rho) = exp(-lambda(t) / rho), EDM's warped noise level (Karras et
//               al. 2022, eq. 5: their sampling grid is uniform in it, rho = 7), with
//               dt/du = -rho / (u lambda'(t)). Between t (rho = 1 under EDM, where sigma~ = t) and
//               log sigma~ (the limit rho -> infinity, up to an affine map): the range is finite
//               and short at both ends, so the controller's at-most-10x growth per step does not
//               set a floor on the number of steps from t_min to T as it does in t. Measured
//               (results/likelihood_cost.md): at 1e-3 nats/dim it takes 0.81x t's NFE on the
//               64-D mixture (rho = 3) but 1.08x on the 16-D one, and more at tight tolerances,
//               so t stays the default; the same tolerance gives a larger error in u than in t.
enum class LikelihoodTime { process, log_sigma, sigma_rho };

// The solve's variable at the process time t (the start and end of the solve, and the fixed-step
// grids, all come from here so that they match bit for bit).
inline double likelihood_variable(const Process& process, LikelihoodTime time, double rho, double t) {
  switch (time) {
    case LikelihoodTime::log_sigma: return -process.lambda(t);
    case LikelihoodTime::sigma_rho: return std::exp(-process.lambda(t) / rho);
    case LikelihoodTime::process: break;
  }
  return t;
}

// Hutchinson probe laws. Both have E[e e^T] = I. Rademacher (+-1 entries) has the smallest variance
// among such laws, 2 sum_{i != j} J_ij^2 per probe against Gaussian's 2 |J|_F^2 (Hutchinson 1989).
// `basis` is not random: K = D probes sqrt(D) e_i, whose mean of e^T J e is exactly tr J; it costs
// D JVPs and exists to check the JVP path against the exact divergence.
enum class ProbeLaw { rademacher, gaussian, basis, orthogonal };

struct HutchinsonOptions {
  Index probes = 1;  // Hutchinson: probes per point; Hutch++: JVPs per evaluation, 2 sketch + residual
  ProbeLaw law = ProbeLaw::rademacher;  // Hutchinson only (Hutch++ draws Gaussian S and G)
  std::uint64_t seed = 0;
  Index sketch = 0;  // Hutch++: k, the sketch's width (0: probes / 4, at least 1); r = probes - 2k
};

namespace detail {

// Gram-Schmidt, twice (Giraud et al. 2005: "twice is enough"), of the candidate columns against
// `against` (orthonormal columns) and each other, keeping the first `wanted` whose norm after
// projection is at least 1e-10 of their norm before; the columns after them stand in for candidates
// that were (numerically) dependent.
inline Eigen::MatrixXd orthonormal_columns(const Eigen::MatrixXd& candidates, Index wanted,
                                           const Eigen::MatrixXd& against = Eigen::MatrixXd()) {
  const Index d = candidates.rows();
  Eigen::MatrixXd q(d, wanted);
  Index have = 0;
  for (Index j = 0; j < candidates.cols() && have < wanted; ++j) {
    Eigen::VectorXd v = candidates.col(j);
    const double before = v.norm();
    if (!(before > 0) || !std::isfinite(before)) continue;
    for (int pass = 0; pass < 2; ++pass) {
      if (against.cols() > 0) v -= against * (against.transpose() * v);
      if (have > 0) v -= q.leftCols(have) * (q.leftCols(have).transpose() * v);
    }
    const double after = v.norm();
    if (after < 1e-10 * before) continue;
    q.col(have++) = v / after;
  }
  if (have < wanted) throw std::runtime_error("orthonormal_columns: the candidates span too few directions");
  return q;
}

// The candidate columns with the unit vectors appended, so that a full set always exists.
inline Eigen::MatrixXd with_unit_vectors(const Eigen::MatrixXd& candidates) {
  const Index d = candidates.rows();
  Eigen::MatrixXd all(d, candidates.cols() + d);
  all << candidates, Eigen::MatrixXd::Identity(d, d);
  return all;
}

}  // namespace detail

// The probes of points first_point .. first_point + n - 1: probes[k] is N x D. Drawn from
// Philox4x32-10 (Salmon et al. 2011) keyed by the seed, with counter (block, probe k, point index),
// so a point's probes are the same whatever batch it is solved in. The key's high word is mixed
// with a constant of this file so these draws stay apart from the mixtures' and Brownian paths'
// streams under the same seed.
inline std::vector<Batch> hutchinson_probes(Index n, Index dims, const HutchinsonOptions& options, Index first_point = 0) {
  using Philox = r123::Philox4x32;
  constexpr std::uint32_t kProbeKey = 0x6C696B21;  // "lik!"
  if (options.law == ProbeLaw::basis) {
    std::vector<Batch> probes(dims, Batch::Zero(n, dims));
    for (Index k = 0; k < dims; ++k) probes[k].col(k).setConstant(std::sqrt(static_cast<double>(dims)));
    return probes;
  }
  if (options.probes < 1) throw std::invalid_argument("hutchinson_probes: need at least one probe");
  if (options.law == ProbeLaw::orthogonal) {
    // Gaussian draws, orthonormalised per point in frames of at most D, scaled to length sqrt(D).
    HutchinsonOptions gaussian = options;
    gaussian.law = ProbeLaw::gaussian;
    std::vector<Batch> probes = hutchinson_probes(n, dims, gaussian, first_point);
    const double length = std::sqrt(static_cast<double>(dims));
    for (Index i = 0; i < n; ++i)
      for (Index first = 0; first < options.probes; first += dims) {
        const Index m = std::min(dims, options.probes - first);
        Eigen::MatrixXd block(dims, m);
        for (Index k = 0; k < m; ++k) block.col(k) = probes[first + k].row(i).transpose();
        const Eigen::MatrixXd q = detail::orthonormal_columns(detail::with_unit_vectors(block), m);
        for (Index k = 0; k < m; ++k) probes[first + k].row(i) = length * q.col(k).transpose().array();
      }
    return probes;
  }
  const Philox::key_type key = {
      {static_cast<std::uint32_t>(options.seed), static_cast<std::uint32_t>(options.seed >> 32) ^ kProbeKey}};
  std::vector<Batch> probes(options.probes, Batch(n, dims));
  for (Index k = 0; k < options.probes; ++k) {
    for (Index i = 0; i < n; ++i) {
      const auto index = static_cast<std::uint64_t>(first_point + i);
      for (Index d = 0, block = 0; d < dims; ++block) {
        const Philox::ctr_type ctr = {{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(k),
                                       static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32)}};
        const Philox::ctr_type r = Philox{}(ctr, key);
        if (options.law == ProbeLaw::rademacher) {
          // 128 random bits per block, one sign each.
          for (int word = 0; word < 4 && d < dims; ++word)
            for (int bit = 0; bit < 32 && d < dims; ++bit, ++d) probes[k](i, d) = ((r[word] >> bit) & 1u) ? 1.0 : -1.0;
        } else {
          const std::uint64_t a = (std::uint64_t{r[0]} << 32) | r[1], b = (std::uint64_t{r[2]} << 32) | r[3];
          const r123::double2 z = r123::boxmuller(a, b);
          probes[k](i, d++) = z.x;
          if (d < dims) probes[k](i, d++) = z.y;
        }
      }
    }
  }
  return probes;
}

// The control variate's surrogate: a Gaussian N(mu, Sigma) for the data, whose score under the
// process, s~(x) = -(alpha^2 Sigma + sigma^2 I)^{-1} (x - alpha mu), has the Jacobian
// J~ = -U diag(1 / (alpha^2 v_j + sigma^2)) U^T (Sigma = U diag(v) U^T) in closed form, its trace
// too, at any (alpha, sigma). The mean does not enter. Any fixed Sigma keeps the estimator
// unbiased (E[e^T J~ e] = tr J~ for any probe law with E[e e^T] = I); the closer J~ is to J_s, the
// less variance is left.
struct GaussianSurrogate {
  Eigen::VectorXd variances;  // v_j >= 0, the eigenvalues of Sigma
  Eigen::MatrixXd basis;      // U, D x D orthonormal

  // From a covariance (symmetric; eigenvalues clipped at 0).
  static GaussianSurrogate from_covariance(const Eigen::MatrixXd& covariance) {
    if (covariance.rows() != covariance.cols() || covariance.rows() == 0 || !covariance.allFinite())
      throw std::invalid_argument("GaussianSurrogate: the covariance must be a finite square matrix");
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(0.5 * (covariance + covariance.transpose()));
    return {eigen.eigenvalues().cwiseMax(0.0), eigen.eigenvectors()};
  }
  // The sample covariance of the rows of x (n >= 2).
  static GaussianSurrogate from_points(const Batch& x) {
    if (x.rows() < 2) throw std::invalid_argument("GaussianSurrogate: need at least two points for a covariance");
    const Eigen::MatrixXd m = x.matrix();
    const Eigen::MatrixXd centred = m.rowwise() - m.colwise().mean();
    return from_covariance(centred.transpose() * centred / static_cast<double>(x.rows() - 1));
  }
};

// Hutch++'s probes, fixed along the trajectory: the sketch S (k Batches N x D) and the residual
// probes G (r Batches), both Gaussian.
struct HutchppProbes {
  std::vector<Batch> sketch, residual;
};

// The augmented probability flow d/dt [x, l_1..l_C] in the process's time, as an ODE problem on
// N x (D + C) Batches for the generic steppers: C = 1 with the exact divergence, C = K with fixed
// probes e_k, l_k' = e_k^T J_v e_k = f |e_k|^2 - 1/2 g^2 e_k^T J_s e_k; Hutch++: C = 1 + r, the
// first d/dt tr(Q^T J_v Q), then the r residual probes' u_l^T J_v u_l (module comment).
class AugmentedProbabilityFlow {
 public:
  using Scalars = PerSample;

  // Exact divergence.
  AugmentedProbabilityFlow(const Process& process, const DivergenceSource& source, Index dims,
                           LikelihoodTime time = LikelihoodTime::process, double rho = 7.0)
      : process_(process), source_(source), dims_(dims), time_(time), rho_(checked_rho(rho)) {}
  // Hutchinson with these probes (one N x D Batch per probe; rows match the state's rows).
  AugmentedProbabilityFlow(const Process& process, const DivergenceSource& source, Index dims, std::vector<Batch> probes,
                           LikelihoodTime time = LikelihoodTime::process, double rho = 7.0)
      : process_(process), source_(source), dims_(dims), time_(time), rho_(checked_rho(rho)), probes_(std::move(probes)) {
    if (probes_.empty()) throw std::invalid_argument("AugmentedProbabilityFlow: Hutchinson needs at least one probe");
    squared_norms_.reserve(probes_.size());
    for (const Batch& e : probes_) {
      if (e.cols() != dims_) throw std::invalid_argument("AugmentedProbabilityFlow: a probe's width is not D");
      squared_norms_.push_back(e.square().rowwise().sum());
    }
  }

  // Hutch++ with these probes (k >= 1 sketch columns, r >= 1 residual ones, k + r <= D).
  AugmentedProbabilityFlow(const Process& process, const DivergenceSource& source, Index dims, HutchppProbes probes,
                           LikelihoodTime time = LikelihoodTime::process, double rho = 7.0)
      : process_(process), source_(source), dims_(dims), time_(time), rho_(checked_rho(rho)), hutchpp_(std::move(probes)) {
    const Index k = static_cast<Index>(hutchpp_.sketch.size()), r = static_cast<Index>(hutchpp_.residual.size());
    if (k < 1 || r < 1 || k + r > dims_)
      throw std::invalid_argument(fmt::format("AugmentedProbabilityFlow: Hutch++ needs a sketch k >= 1 and residual probes r >= 1 "
                                              "with k + r <= D = {} (got k = {}, r = {})", dims_, k, r));
    for (const auto* block : {&hutchpp_.sketch, &hutchpp_.residual})
      for (const Batch& e : *block)
        if (e.cols() != dims_ || e.rows() != hutchpp_.sketch.front().rows())
          throw std::invalid_argument("AugmentedProbabilityFlow: a Hutch++ probe's shape differs from N x D");
    directions_.assign(k + r, Batch(hutchpp_.sketch.front().rows(), dims_));
  }

  Index dims() const { return dims_; }
  bool is_hutchpp() const { return !hutchpp_.sketch.empty(); }
  // Columns after the D of the point: 1, the number of probes, or (Hutch++) 1 + r.
  Index integrals() const {
    if (is_hutchpp()) return 1 + static_cast<Index>(hutchpp_.residual.size());
    return probes_.empty() ? 1 : static_cast<Index>(probes_.size());
  }
  // Of those, how many lead the others as exact terms (Hutch++'s tr(Q^T J_v Q)); the rest are
  // probe integrals whose mean estimates the remaining trace.
  Index exact_integrals() const { return is_hutchpp() ? 1 : 0; }

  // Hutchinson only: subtract each probe's quadratic form of the surrogate's J~ and add its exact
  // trace (module comment, "control variate"). The probes are rotated into the surrogate's basis
  // once, row by row (so a point's numbers do not depend on its batch).
  void set_control_variate(std::shared_ptr<const GaussianSurrogate> surrogate) {
    if (probes_.empty() || is_hutchpp())
      throw std::invalid_argument("AugmentedProbabilityFlow: the control variate is for Hutchinson's probes only");
    if (surrogate == nullptr || surrogate->variances.size() != dims_ || surrogate->basis.rows() != dims_ ||
        surrogate->basis.cols() != dims_)
      throw std::invalid_argument(fmt::format("AugmentedProbabilityFlow: the surrogate must have D = {} dimensions", dims_));
    surrogate_ = std::move(surrogate);
    rotated_probes_.clear();
    for (const Batch& e : probes_) {
      Batch p(e.rows(), dims_);
      for (Index i = 0; i < e.rows(); ++i) p.row(i) = (e.row(i).matrix() * surrogate_->basis).array();
      rotated_probes_.push_back(std::move(p));
    }
  }
  bool has_control_variate() const { return surrogate_ != nullptr; }

  // Each integral column's weight of the identity in its integrand (N x C): the integrand of the
  // matrix a I + b J_s is a w + b (the form): D for the exact divergence and the control variate,
  // |e_k|^2 for Hutchinson's probes, k and D - k for Hutch++ (|q_j| = 1, |u_l|^2 = D - k).
  Batch linear_weights(Index n) const {
    Batch w(n, integrals());
    if (is_hutchpp()) {
      const Index k = static_cast<Index>(hutchpp_.sketch.size());
      w.col(0).setConstant(static_cast<double>(k));
      w.rightCols(w.cols() - 1).setConstant(static_cast<double>(dims_ - k));
    } else if (probes_.empty() || surrogate_) {
      w.setConstant(static_cast<double>(dims_));
    } else {
      for (std::size_t k = 0; k < probes_.size(); ++k) w.col(static_cast<Index>(k)) = squared_norms_[k];
    }
    return w;
  }

  // The exponential integrator's nonlinear part (likelihood_exponential.hpp) at u = log sigma~ =
  // -lambda (time = log_sigma): [x0, G_1..G_C] with the denoiser x0 = (x + sigma^2 s) / alpha and
  // G_k the k-th integrand of alpha J_x0 = I + sigma^2 J_s (the same estimator as the drift's).
  void data_prediction(const Batch& z, const PerSample& u, Batch& out) const {
    if (time_ != LikelihoodTime::log_sigma)
      throw std::invalid_argument("AugmentedProbabilityFlow: the data prediction is for the log_sigma variable");
    check_columns(z);
    const PerSample t = u.unaryExpr([this](double s) { return process_.t_of_lambda(-s); });
    x_ = z.leftCols(dims_);
    const PerSample alpha = process_.alpha(t), sigma = process_.sigma(t);
    const PerSample sigma2 = sigma * sigma;
    out.resize(z.rows(), z.cols());
    integrands(alpha, sigma, PerSample::Ones(z.rows()), sigma2, out);
    out.leftCols(dims_) = (x_ + score_.colwise() * sigma2).colwise() / alpha;
  }

  // The solve's range in its own variable: [t_min, T], [log sigma~(t_min), log sigma~(T)], or
  // [sigma~(t_min)^(1/rho), sigma~(T)^(1/rho)].
  double start() const { return likelihood_variable(process_, time_, rho_, process_.t_min()); }
  double end() const { return likelihood_variable(process_, time_, rho_, process_.t_max()); }

  void drift(const Batch& z, const PerSample& u, Batch& out) const {
    if (time_ == LikelihoodTime::process) return drift_in_t(z, u, out);
    // t(u) through the process's closed-form inverse t(lambda) (clamped to [t_min, T] at rounding
    // level), then d/du = (dt/du) d/dt.
    if (time_ == LikelihoodTime::log_sigma) {
      const PerSample t = u.unaryExpr([this](double s) { return process_.t_of_lambda(-s); });
      drift_in_t(z, t, out);
      out.colwise() *= -1.0 / process_.d_lambda(t);
      return;
    }
    const PerSample t = u.unaryExpr([this](double s) { return process_.t_of_lambda(-rho_ * std::log(s)); });
    drift_in_t(z, t, out);
    out.colwise() *= -rho_ / (u * process_.d_lambda(t));
  }

 private:
  static double checked_rho(double rho) {
    if (!(rho > 0) || !std::isfinite(rho))
      throw std::invalid_argument(fmt::format("AugmentedProbabilityFlow: rho must be positive and finite (got {})", rho));
    return rho;
  }

  void check_columns(const Batch& z) const {
    if (z.cols() != dims_ + integrals())
      throw std::invalid_argument(fmt::format("AugmentedProbabilityFlow: state has {} columns, expected {}", z.cols(),
                                              dims_ + integrals()));
  }

  void drift_in_t(const Batch& z, const PerSample& t, Batch& out) const {
    const Index n = z.rows();
    check_columns(z);
    x_ = z.leftCols(dims_);
    const PerSample alpha = process_.alpha(t), sigma = process_.sigma(t);
    const PerSample f = process_.f(t), half_g2 = 0.5 * process_.g2(t);
    out.resize(n, z.cols());
    integrands(alpha, sigma, f, -half_g2, out);
    out.leftCols(dims_) = x_.colwise() * f - score_.colwise() * half_g2;
  }

  // The integrand columns of the matrix a I + b J_s (J_v = f I - 1/2 g^2 J_s in t; alpha J_x0 =
  // I + sigma^2 J_s for the exponential integrator), per point: a w_k + b (the k-th quadratic form
  // of J_s, or div s); leaves the score of the same call in score_.
  void integrands(const PerSample& alpha, const PerSample& sigma, const PerSample& a, const PerSample& b, Batch& out) const {
    const Index n = x_.rows();
    if (is_hutchpp()) {
      hutchpp_integrands(alpha, sigma, a, b, out);
    } else if (probes_.empty()) {
      source_.score_and_divergence(x_, alpha, sigma, score_, divergence_);
      out.col(dims_) = a * static_cast<double>(dims_) + b * divergence_;
    } else {
      if (probes_.front().rows() != n)
        throw std::invalid_argument("AugmentedProbabilityFlow: the probes were drawn for another number of points");
      source_.score_and_jvps(x_, alpha, sigma, probes_, score_, jvps_);
      if (surrogate_) {
        // The control variate (module comment): e^T J_s e - e^T J~ e + tr J~ with the Gaussian
        // surrogate's J~ = -U diag(1 / (alpha^2 v_j + sigma^2)) U^T; its identity part a I enters
        // exactly (a D), whatever |e|.
        surrogate_weights_.resize(n, dims_);
        for (Index i = 0; i < n; ++i)
          surrogate_weights_.row(i) = 1.0 / (alpha[i] * alpha[i] * surrogate_->variances.transpose().array() + sigma[i] * sigma[i]);
        const PerSample trace = -surrogate_weights_.rowwise().sum();
        for (std::size_t k = 0; k < probes_.size(); ++k) {
          const PerSample form = (probes_[k] * jvps_[k]).rowwise().sum();
          const PerSample surrogate_form = -(rotated_probes_[k].square() * surrogate_weights_).rowwise().sum();
          out.col(dims_ + static_cast<Index>(k)) = a * static_cast<double>(dims_) + b * (form - surrogate_form + trace);
        }
      } else {
        for (std::size_t k = 0; k < probes_.size(); ++k)
          out.col(dims_ + static_cast<Index>(k)) = a * squared_norms_[k] + b * (probes_[k] * jvps_[k]).rowwise().sum();
      }
    }
  }

  // Hutch++ at one evaluation (module comment): the sketch's JVPs, then per point Q and the
  // residual probes, then their JVPs; writes the 1 + r integrand columns and leaves the score.
  void hutchpp_integrands(const PerSample& alpha, const PerSample& sigma, const PerSample& a, const PerSample& b,
                          Batch& out) const {
    const Index n = x_.rows(), d = dims_;
    const Index k = static_cast<Index>(hutchpp_.sketch.size()), r = static_cast<Index>(hutchpp_.residual.size());
    if (hutchpp_.sketch.front().rows() != n)
      throw std::invalid_argument("AugmentedProbabilityFlow: the probes were drawn for another number of points");
    source_.score_and_jvps(x_, alpha, sigma, hutchpp_.sketch, score_, jvps_);
    const double residual_length = std::sqrt(static_cast<double>(d - k));
    Eigen::MatrixXd s(d, k), shifted(d, k), g(d, r);
    for (Index i = 0; i < n; ++i) {
      double mu = 0;
      for (Index j = 0; j < k; ++j) {
        s.col(j) = hutchpp_.sketch[j].row(i).transpose();
        // A s_j = a s_j + b J_s s_j (in t: f s_j - 1/2 g^2 J_s s_j).
        shifted.col(j) = a[i] * s.col(j) + b[i] * jvps_[j].row(i).transpose().matrix();
        mu += s.col(j).dot(shifted.col(j)) / s.col(j).squaredNorm();
      }
      mu /= static_cast<double>(k);
      shifted -= mu * s;
      // The sketch's own columns stand in for shifted ones that vanish (A a multiple of I on them).
      Eigen::MatrixXd candidates(d, 2 * k);
      candidates << shifted, s;
      const Eigen::MatrixXd q = detail::orthonormal_columns(detail::with_unit_vectors(candidates), k);
      for (Index l = 0; l < r; ++l) g.col(l) = hutchpp_.residual[l].row(i).transpose();
      const Eigen::MatrixXd u = detail::orthonormal_columns(detail::with_unit_vectors(g), r, q);
      for (Index j = 0; j < k; ++j) directions_[j].row(i) = q.col(j).transpose().array();
      for (Index l = 0; l < r; ++l) directions_[k + l].row(i) = residual_length * u.col(l).transpose().array();
    }
    source_.score_and_jvps(x_, alpha, sigma, directions_, second_score_, jvps_);
    // |q_j| = 1 and |u_l|^2 = D - k exactly: the f I part of J_v enters without noise.
    PerSample projected = PerSample::Zero(n);
    for (Index j = 0; j < k; ++j) projected += (directions_[j] * jvps_[j]).rowwise().sum();
    out.col(d) = a * static_cast<double>(k) + b * projected;
    for (Index l = 0; l < r; ++l)
      out.col(d + 1 + l) = a * static_cast<double>(d - k) + b * (directions_[k + l] * jvps_[k + l]).rowwise().sum();
  }

  const Process& process_;
  const DivergenceSource& source_;
  Index dims_;
  LikelihoodTime time_;
  double rho_;
  std::vector<Batch> probes_;
  std::vector<PerSample> squared_norms_;
  HutchppProbes hutchpp_;
  std::shared_ptr<const GaussianSurrogate> surrogate_;
  std::vector<Batch> rotated_probes_;  // the probes in the surrogate's basis, e_k U
  // Scratch, reused across calls (a problem is used by one solve at a time).
  mutable Batch x_, score_, second_score_;
  mutable PerSample divergence_;
  mutable Batch surrogate_weights_;
  mutable std::vector<Batch> jvps_, directions_;
};

struct LikelihoodOptions {
  DivergenceMethod divergence = DivergenceMethod::exact;
  HutchinsonOptions hutchinson{};
  LikelihoodTime time = LikelihoodTime::process;
  double rho = 7.0;  // time = sigma_rho: the exponent of u = sigma~^(1/rho)
  AdaptiveMethod method = AdaptiveMethod::dopri5;
  // Dopri5 at rtol = atol = 1e-5 is the setting of Song et al. (2021, appendix D.2: scipy's RK45
  // with rtol = atol = 1e-5), kept as the default so that numbers compare with the literature.
  AdaptiveOptions adaptive{.rtol = 1e-5, .atol = 1e-5};
  // Index of the first point in the probe streams (for a data set solved in chunks).
  Index first_point = 0;
  // Hutchinson only: the Gaussian control variate's surrogate (none: plain Hutchinson).
  std::shared_ptr<const GaussianSurrogate> control_variate;
};

// Per point (rows of the input): log_p = prior_log_p + delta_log_p, in nats.
struct LikelihoodResult {
  Batch x_T;                // the points carried to T
  PerSample delta_log_p;    // int_{t_min}^T div v dt (Hutchinson: the mean over probes)
  PerSample prior_log_p;    // the process prior at x_T (an approximation to log p_T)
  PerSample log_p;          // prior_log_p + delta_log_p: the likelihood at t_min
  PerSample std_error;      // Hutchinson: std over probes / sqrt(K) (orthogonal and Hutch++: times the
                            // finite-population factor); 0 for the exact divergence
  Index std_error_dof = 0;  // degrees of freedom of std_error: the probe integrals averaged, less 1
  Batch probe_integrals;    // Hutchinson: N x K, each probe's integral; exact: N x 1; Hutch++: N x (1 + r),
                            // the integral of tr(Q^T J_v Q), then the residual probes' integrals
  std::vector<Index> nfe;   // evaluations of the model (each with its divergence or K JVPs) the point's solve took
  std::vector<Index> accepted, rejected;  // the point's steps (fixed grid: all accepted)
  IntegrationStats stats;   // the batch run (nfe = batched evaluations; failure, if any)

  // log p_{t_min} with another log p_T at x_T, e.g. the exact mixture's: log_p_T + delta_log_p.
  PerSample with_prior(const PerSample& log_p_T) const { return log_p_T + delta_log_p; }
};

namespace detail {

// Hutch++'s split of the JVP budget K = 2k + r: k as given, or K / 4 (at least 1), which on the
// exact mixtures had the smallest variance per JVP (results/likelihood_cost.md).
inline std::pair<Index, Index> hutchpp_split(const HutchinsonOptions& o, Index dims) {
  const Index k = o.sketch > 0 ? o.sketch : std::max<Index>(1, o.probes / 4);
  const Index r = o.probes - 2 * k;
  if (r < 1 || k + r > dims)
    throw std::invalid_argument(fmt::format("Hutch++: {} JVPs with a sketch of {} leave {} residual probes; need 1 <= r and "
                                            "k + r <= D = {}", o.probes, k, r, dims));
  return {k, r};
}

inline AugmentedProbabilityFlow make_augmented(const Process& process, const DivergenceSource& source, Index n,
                                               Index dims, const LikelihoodOptions& options) {
  if (options.control_variate && options.divergence != DivergenceMethod::hutchinson)
    throw std::invalid_argument("log_likelihood: the control variate is for divergence = hutchinson only");
  if (options.divergence == DivergenceMethod::exact) return {process, source, dims, options.time, options.rho};
  if (options.divergence == DivergenceMethod::hutchpp) {
    const auto [k, r] = hutchpp_split(options.hutchinson, dims);
    // S and G: one Gaussian stream, S its probes 0..k-1 and G the next r.
    HutchinsonOptions gaussian = options.hutchinson;
    gaussian.law = ProbeLaw::gaussian;
    gaussian.probes = k + r;
    std::vector<Batch> all = hutchinson_probes(n, dims, gaussian, options.first_point);
    HutchppProbes probes;
    probes.sketch.assign(std::make_move_iterator(all.begin()), std::make_move_iterator(all.begin() + k));
    probes.residual.assign(std::make_move_iterator(all.begin() + k), std::make_move_iterator(all.end()));
    return {process, source, dims, std::move(probes), options.time, options.rho};
  }
  AugmentedProbabilityFlow flow{process, source, dims, hutchinson_probes(n, dims, options.hutchinson, options.first_point),
                                options.time, options.rho};
  if (options.control_variate) flow.set_control_variate(options.control_variate);
  return flow;
}

// The finite-population factor of the standard error (module comment): 1 - K/D for K orthogonal
// probes of D dimensions (K <= D), 1 - r/(D - k) for Hutch++'s residual, 1 otherwise.
inline double finite_population_factor(const LikelihoodOptions& options, Index dims) {
  if (options.divergence == DivergenceMethod::hutchpp) {
    const auto [k, r] = hutchpp_split(options.hutchinson, dims);
    return 1.0 - static_cast<double>(r) / static_cast<double>(dims - k);
  }
  if (options.divergence == DivergenceMethod::hutchinson && options.hutchinson.law == ProbeLaw::orthogonal &&
      options.hutchinson.probes <= dims)
    return 1.0 - static_cast<double>(options.hutchinson.probes) / static_cast<double>(dims);
  return 1.0;
}

inline LikelihoodResult read_out(const Process& process, const Batch& z, Index dims, Index exact_columns = 0,
                                 double population_factor = 1.0) {
  LikelihoodResult r;
  const Index columns = z.cols() - dims, probes = columns - exact_columns;
  r.x_T = z.leftCols(dims);
  r.probe_integrals = z.rightCols(columns);
  // Sums over the probes in one fixed order, column by column: Eigen's rowwise reductions sum a
  // row in a different order depending on its position in the batch (vector lanes), which would
  // make a point's value depend on its batch by an ulp.
  PerSample mean = PerSample::Zero(z.rows());
  for (Index k = exact_columns; k < columns; ++k) mean += r.probe_integrals.col(k);
  mean /= static_cast<double>(probes);
  r.std_error = PerSample::Zero(z.rows());
  if (probes > 1) {
    for (Index k = exact_columns; k < columns; ++k) r.std_error += (r.probe_integrals.col(k) - mean).square();
    r.std_error = (r.std_error / static_cast<double>(probes - 1) / static_cast<double>(probes)).sqrt();
    if (population_factor != 1.0) r.std_error *= std::sqrt(population_factor);
    r.std_error_dof = probes - 1;
  }
  r.delta_log_p = mean;
  for (Index k = 0; k < exact_columns; ++k) r.delta_log_p += r.probe_integrals.col(k);
  r.prior_log_p = process.prior_log_density(r.x_T);
  r.log_p = r.prior_log_p + r.delta_log_p;
  return r;
}

inline Batch augment(const Batch& x, Index integrals) {
  Batch z = Batch::Zero(x.rows(), x.cols() + integrals);
  z.leftCols(x.cols()) = x;
  return z;
}

}  // namespace detail

namespace detail {

template <class Stepper>
LikelihoodResult solve_adaptive(const Process& process, const DivergenceSource& source, const Batch& x,
                                const LikelihoodOptions& options, Stepper stepper) {
  const Index dims = x.cols();
  const AugmentedProbabilityFlow flow = make_augmented(process, source, x.rows(), dims, options);
  Batch z = augment(x, flow.integrals());
  const AdaptiveStats stats = integrate_adaptive(stepper, flow, flow.start(), flow.end(), z, options.adaptive);
  LikelihoodResult r = read_out(process, z, dims, flow.exact_integrals(), finite_population_factor(options, dims));
  r.stats = stats;
  r.accepted = stats.accepted;
  r.rejected = stats.rejected_per_sample;
  static_assert(Stepper::traits.adaptive);
  const bool given = options.adaptive.initial_step > 0;
  r.nfe.resize(x.rows());
  for (Index i = 0; i < x.rows(); ++i) {
    if constexpr (requires { Stepper::point_evaluations(Index{}, Index{}, bool{}); }) {
      r.nfe[i] = Stepper::point_evaluations(stats.accepted[i], stats.rejected_per_sample[i], given);
    } else {
      // The point's own solve: the starting-step heuristic's 2 evaluations (unless a first step is
      // given), the first stage, then s - 1 per attempt of an FSAL pair (module comment).
      r.nfe[i] = (given ? 1 : 3) + Stepper::traits.evaluations_per_step * (stats.accepted[i] + stats.rejected_per_sample[i]);
    }
  }
  return r;
}

}  // namespace detail

// log p_{t_min}(x) for each row of x (data at t_min, in the process's space), by an adaptive pair
// with per-point error control from t_min to T: Dopri5 or Verner 6(5) (both FSAL) in options.time's
// variable, or an exponential pair in lambda (options.time is then log_sigma whatever it says:
// likelihood_exponential.hpp).
inline LikelihoodResult log_likelihood(const Process& process, const DivergenceSource& source, const Batch& x,
                                       const LikelihoodOptions& options = {}) {
  LikelihoodOptions in_lambda = options;
  in_lambda.time = LikelihoodTime::log_sigma;
  switch (options.method) {
    case AdaptiveMethod::verner65: return detail::solve_adaptive(process, source, x, options, Verner65<Batch>{});
    case AdaptiveMethod::exponential12:
      return detail::solve_adaptive(process, source, x, in_lambda, ExponentialLikelihoodPair<2>(process));
    case AdaptiveMethod::exponential23:
      return detail::solve_adaptive(process, source, x, in_lambda, ExponentialLikelihoodPair<3>(process));
    case AdaptiveMethod::dopri5: break;
  }
  return detail::solve_adaptive(process, source, x, options, Dopri5<Batch>{});
}

// The same with any fixed-step ODE stepper of solvers/ode on a grid in options.time's variable,
// from its start to its end exactly (t_min to T, or -lambda(t_min) to -lambda(T)); options.adaptive
// is unused.
template <class Stepper>
LikelihoodResult log_likelihood_on_grid(Stepper& stepper, const Process& process, const DivergenceSource& source,
                                        const Batch& x, std::span<const double> grid,
                                        const LikelihoodOptions& options = {}) {
  const Index dims = x.cols();
  const AugmentedProbabilityFlow flow = detail::make_augmented(process, source, x.rows(), dims, options);
  if (grid.size() < 2 || grid.front() != flow.start() || grid.back() != flow.end())
    throw std::invalid_argument(fmt::format("log_likelihood_on_grid: the grid must run from {} to {} exactly",
                                            flow.start(), flow.end()));
  Batch z = detail::augment(x, flow.integrals());
  const IntegrationStats stats = integrate(stepper, flow, grid, z);
  LikelihoodResult r = detail::read_out(process, z, dims, flow.exact_integrals(), detail::finite_population_factor(options, dims));
  r.stats = stats;
  r.nfe.assign(x.rows(), stats.nfe);
  r.accepted.assign(x.rows(), stats.steps);
  r.rejected.assign(x.rows(), 0);
  return r;
}

// How model space relates to the data, with nothing hidden:
//     x = (y - offset) / scale   (model space; the diffusion runs on x)
//     log p_data(y) = log p_model(x) - D log scale               (change of variables)
// and, for discrete data on a lattice of spacing bin_width (e.g. 8-bit pixels y in {0..255}:
// bin_width = 1), the uniform dequantization bound (Theis et al. 2016, arXiv:1511.01844;
// Ho et al. 2019, arXiv:1902.00275): with y + bin_width u, u ~ U[0, 1)^D, fed to the model,
//     log P(y) >= E_u [log p_data(y + bin_width u)] + D log bin_width,
// the second term the log-volume of a bin. bin_width = 0 means continuous data (no such term).
// Example: images y in {0..255} mapped to [-1, 1] by x = (y + u - 127.5) / 127.5: scale = offset
// = 127.5, bin_width = 1.
struct DataTransform {
  double scale = 1.0;
  double offset = 0.0;
  double bin_width = 0.0;

  Batch to_model(const Batch& y) const { return (y - offset) / scale; }
  // log p (or the bound on log P for discrete data) of the data y from log p_model(x), per point.
  PerSample data_log_p(const PerSample& model_log_p, Index dims) const {
    const double d = static_cast<double>(dims);
    const double dequantization = bin_width > 0 ? d * std::log(bin_width) : 0.0;
    return model_log_p - d * std::log(scale) + dequantization;
  }
  // Bits per dimension: -log2 p_data(y) / D.
  PerSample bits_per_dim(const PerSample& model_log_p, Index dims) const {
    return -data_log_p(model_log_p, dims) / (static_cast<double>(dims) * std::numbers::ln2);
  }
};

}  // namespace diffode
