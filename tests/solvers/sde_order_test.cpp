// Strong and weak orders of the SDE steppers, measured against exact strong solutions (or a fine
// solve on the same Brownian path where no closed form exists).
//
// Strong error at step h: E|X_T^h - X_T| estimated as the mean over M paths of the per-path
// Euclidean error, every h driven by the SAME Brownian paths (the virtual Brownian tree is
// consistent across resolutions), so the fitted slope of log error against log h measures the
// scheme, not the sampling noise. Grids are dyadic on [0, 1]: tree descents stop at the dyadic
// node, which keeps the tests fast under the sanitizers too.
#include "problems/additive_sde.hpp"
#include "problems/geometric_brownian_motion.hpp"
#include "problems/ornstein_uhlenbeck.hpp"
#include "solvers/brownian.hpp"
#include "solvers/integrate.hpp"
#include "solvers/noise.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/milstein.hpp"
#include "solvers/sde/sra1.hpp"
#include "solvers/sde/stochastic_heun.hpp"
#include "tests/support/convergence.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace diffode {
namespace {

constexpr Index kPaths = 200;

BrownianPath make_path(std::uint64_t seed, Index dims, double t0 = 0.0, double t1 = 1.0) {
  return BrownianPath({.seed = seed, .t0 = t0, .t1 = t1, .dims = dims});
}

// Mean over samples (rows) of the Euclidean norm of the row error.
double mean_error(const Batch& a, const Batch& b) { return (a - b).matrix().rowwise().norm().mean(); }

// `noise`: a BrownianPath, or StepIncrements (fresh increments per step, the samplers' default).
template <template <class> class Stepper, class Problem, class Noise>
Batch solve(const Problem& problem, const Batch& x0, double t0, double t1, int steps, const Noise& path) {
  Stepper<Batch> stepper;
  Batch x = x0;
  const auto grid = testing::uniform_grid(t0, t1, steps);
  const auto stats = integrate(stepper, problem, grid, x, path);
  EXPECT_FALSE(stats.failed) << stats.failure;
  EXPECT_EQ(stats.nfe, steps * Stepper<Batch>::traits.evaluations_per_step);
  return x;
}

struct Convergence {
  std::vector<double> h, error;
  double order() const { return testing::fitted_order(h, error); }
};

// Errors of `Stepper` at each step count against `reference` (same paths, same x0).
template <template <class> class Stepper, class Problem>
Convergence strong_errors(const Problem& problem, const Batch& x0, double t0, double t1, const std::vector<int>& steps,
                          const BrownianPath& path, const Batch& reference) {
  Convergence c;
  for (int n : steps) {
    const Batch x = solve<Stepper>(problem, x0, t0, t1, n, path);
    c.h.push_back(std::abs(t1 - t0) / n);
    c.error.push_back(mean_error(x, reference));
  }
  return c;
}

std::string describe(const Convergence& c) {
  std::string s;
  for (std::size_t i = 0; i < c.h.size(); ++i) s += fmt::format(" h={:.3g}: {:.3e};", c.h[i], c.error[i]);
  return s + fmt::format(" slope {:.3f}", c.order());
}

// Every fit is printed, so a passing run still shows the measured numbers.
double reported_order(const Convergence& c) {
  fmt::print("    {}\n", describe(c));
  return c.order();
}

// The OU strong solution from t0 to t1 on `path`, chaining the exact transition over `substeps`
// intervals (see OrnsteinUhlenbeck::transition; error O(theta^2 sigma (dt)^2)).
Batch ou_strong_solution(const OrnsteinUhlenbeck& ou, const Batch& x0, double t0, double t1, int substeps,
                         const BrownianPath& path) {
  const auto grid = testing::uniform_grid(t0, t1, substeps);
  const Index rows = x0.rows(), dims = path.dims();
  Batch w_prev(rows, dims), w_next(rows, dims), i_prev, i_next, dw, integral;
  path.point(grid[0], 0, w_prev, &i_prev);
  Batch x = x0;
  for (int k = 1; k <= substeps; ++k) {
    path.point(grid[k], 0, w_next, &i_next);
    BrownianPath::increments_between(grid[k - 1], w_prev, &i_prev, grid[k], w_next, &i_next, dw, &integral);
    ou.transition(x, grid[k] - grid[k - 1], dw, integral);
    std::swap(w_prev, w_next);
    std::swap(i_prev, i_next);
  }
  return x;
}

Batch gbm_initial(Index dims) {
  Batch x0(kPaths, dims);
  for (Index n = 0; n < kPaths; ++n)
    for (Index d = 0; d < dims; ++d) x0(n, d) = 0.5 + 0.25 * d + 0.5 * static_cast<double>(n % 5) / 4.0;
  return x0;
}

// --- Multiplicative (diagonal) noise: geometric Brownian motion -------------------------------

struct GbmCase {
  GeometricBrownianMotion ito{0.5, 0.6, Calculus::ito};
  GeometricBrownianMotion stratonovich{0.5, 0.6, Calculus::stratonovich};
  BrownianPath path = make_path(11, 2);
  Batch x0 = gbm_initial(2);
  Batch exact() const {
    Batch dw(kPaths, 2);
    path.increment(0.0, 1.0, 0, dw);
    return ito.exact(x0, 0.0, 1.0, dw);
  }
};

TEST(SdeStrongOrder, EulerMaruyamaIsHalfOrderOnGbm) {
  const GbmCase c;
  const auto conv = strong_errors<EulerMaruyama>(c.ito, c.x0, 0.0, 1.0, {16, 32, 64, 128, 256, 512}, c.path, c.exact());
  EXPECT_NEAR(reported_order(conv), 0.5, 0.2) << describe(conv);
}

TEST(SdeStrongOrder, MilsteinIsFirstOrderOnGbm) {
  const GbmCase c;
  const auto conv = strong_errors<Milstein>(c.ito, c.x0, 0.0, 1.0, {8, 16, 32, 64, 128, 256}, c.path, c.exact());
  EXPECT_NEAR(reported_order(conv), 1.0, 0.2) << describe(conv);
}

TEST(SdeStrongOrder, StochasticHeunIsFirstOrderOnStratonovichGbm) {
  const GbmCase c;
  const auto conv =
      strong_errors<StochasticHeun>(c.stratonovich, c.x0, 0.0, 1.0, {8, 16, 32, 64, 128, 256}, c.path, c.exact());
  EXPECT_NEAR(reported_order(conv), 1.0, 0.2) << describe(conv);
}

// Stochastic Heun on the Ito form converges, but to the Stratonovich solution of that drift: the
// contract forbids it (tests/core/contract_test.cpp); here the Ito solution is simply not its limit.
TEST(SdeStrongOrder, StochasticHeunNeedsTheStratonovichDrift) {
  const GbmCase c;
  Batch x = solve<StochasticHeun>(c.stratonovich, c.x0, 0.0, 1.0, 256, c.path);
  // With the Stratonovich drift (mu - sigma^2/2) x Heun reaches the exact solution...
  EXPECT_LT(mean_error(x, c.exact()), 0.02);
  // ...while Heun fed the Ito drift mu x lands near X_T e^{sigma^2 T / 2}, about 20% off.
  StochasticHeun<Batch> heun;
  Batch y = c.x0;
  const auto grid = testing::uniform_grid(0.0, 1.0, 256);
  // Bypass the contract on purpose: a Stratonovich GBM whose drift (mu' - sigma^2/2) x equals the
  // Ito drift mu x.
  const double s2 = c.ito.sigma() * c.ito.sigma();
  const GeometricBrownianMotion mislabelled(c.ito.mu() + 0.5 * s2, c.ito.sigma(), Calculus::stratonovich);
  integrate(heun, mislabelled, grid, y, c.path);
  EXPECT_GT(mean_error(y, c.exact()), 10 * mean_error(x, c.exact()));
}

// --- Scalar noise: a 2-D linear system driven by one Brownian motion per sample ----------------

struct RotatingCase {
  RotatingGbm ito{0.3, 1.0, 0.4, 0.7, Calculus::ito};
  RotatingGbm stratonovich{0.3, 1.0, 0.4, 0.7, Calculus::stratonovich};
  BrownianPath path = make_path(23, 1);
  Batch x0 = gbm_initial(2);
  Batch exact() const {
    Batch dw(kPaths, 1);
    path.increment(0.0, 1.0, 0, dw);
    return ito.exact(x0, 0.0, 1.0, dw);
  }
};

TEST(SdeStrongOrder, EulerMaruyamaIsHalfOrderWithScalarNoise) {
  const RotatingCase c;
  const auto conv = strong_errors<EulerMaruyama>(c.ito, c.x0, 0.0, 1.0, {16, 32, 64, 128, 256, 512}, c.path, c.exact());
  EXPECT_NEAR(reported_order(conv), 0.5, 0.2) << describe(conv);
}

TEST(SdeStrongOrder, StochasticHeunIsFirstOrderWithScalarNoise) {
  const RotatingCase c;
  const auto conv =
      strong_errors<StochasticHeun>(c.stratonovich, c.x0, 0.0, 1.0, {8, 16, 32, 64, 128, 256}, c.path, c.exact());
  EXPECT_NEAR(reported_order(conv), 1.0, 0.2) << describe(conv);
}

// --- Additive noise ------------------------------------------------------------------------------

struct OuCase {
  OrnsteinUhlenbeck ou{1.5, 0.5, 0.8};
  BrownianPath path = make_path(37, 2);
  Batch x0 = gbm_initial(2) * 2.0;
  static constexpr int kReferenceSubsteps = 2048;

  // The strong solution at t1 from x0 at t0, and how far it moves when its sub-interval doubles
  // (it converges like dt^2, so that distance is about 3x its own error). Computed once per
  // direction: the chained transitions dominate this file's run time.
  struct Reference {
    Batch x;
    double halving_change;
  };
  const Reference& reference(double t0, double t1) const {
    static Reference forward = make_reference(0.0, 1.0), backward = make_reference(1.0, 0.0);
    EXPECT_TRUE((t0 == 0.0 && t1 == 1.0) || (t0 == 1.0 && t1 == 0.0));
    return t0 < t1 ? forward : backward;
  }

 private:
  Reference make_reference(double t0, double t1) const {
    Batch fine = ou_strong_solution(ou, x0, t0, t1, kReferenceSubsteps, path);
    const Batch coarse = ou_strong_solution(ou, x0, t0, t1, kReferenceSubsteps / 2, path);
    return {fine, mean_error(fine, coarse)};
  }
};

// Measures `Stepper` on OU against the exact strong solution, and checks that the reference's
// own error sits far below every error fitted.
template <template <class> class Stepper>
Convergence ou_strong_errors(double t0, double t1, const std::vector<int>& steps) {
  const OuCase c;
  const auto& reference = c.reference(t0, t1);
  const auto conv = strong_errors<Stepper>(c.ou, c.x0, t0, t1, steps, c.path, reference.x);
  const double smallest = *std::min_element(conv.error.begin(), conv.error.end());
  EXPECT_LT(reference.halving_change, 1e-2 * smallest) << "reference not accurate enough: " << describe(conv);
  return conv;
}

TEST(SdeStrongOrder, EulerMaruyamaIsFirstOrderOnOrnsteinUhlenbeck) {
  const auto conv = ou_strong_errors<EulerMaruyama>(0.0, 1.0, {8, 16, 32, 64, 128, 256});
  EXPECT_NEAR(reported_order(conv), 1.0, 0.2) << describe(conv);
}

// Backward in time (h < 0, signed dW and I_(1,0)): from t = 1 down to t = 0 on the same path.
TEST(SdeStrongOrder, EulerMaruyamaIsFirstOrderBackwardInTime) {
  const auto conv = ou_strong_errors<EulerMaruyama>(1.0, 0.0, {8, 16, 32, 64, 128, 256});
  EXPECT_NEAR(reported_order(conv), 1.0, 0.2) << describe(conv);
}

// On OU (linear drift, constant g) every Ito-Taylor term of order 2 has a vanishing coefficient:
// (1,1,0) carries g^2 f'', (1,0,1) and (0,1,1) derivatives of the constant g, (1,1,1,1) g' (Kloeden
// & Platen 1992, Sec. 5.5 and 10.4). SRA1 then shows strong order 2, not 1.5; the 1.5 claim is
// proved on the nonlinear problem below. Forward and backward in time.
TEST(SdeStrongOrder, Sra1IsSecondOrderOnOrnsteinUhlenbeck) {
  const auto conv = ou_strong_errors<Sra1>(0.0, 1.0, {4, 8, 16, 32, 64});
  EXPECT_NEAR(reported_order(conv), 2.0, 0.2) << describe(conv);
}

TEST(SdeStrongOrder, Sra1IsSecondOrderOnOrnsteinUhlenbeckBackwardInTime) {
  const auto conv = ou_strong_errors<Sra1>(1.0, 0.0, {4, 8, 16, 32, 64});
  EXPECT_NEAR(reported_order(conv), 2.0, 0.2) << describe(conv);
}

// No closed form: the reference is SRA1 itself with 2048 steps on the same path. Its error,
// extrapolated as h^1.5 from the finest fitted step (h = 1/128), is about 60 times below it. The
// noise is large enough that the g^2 f'' I_(1,1,0) term, the one SRA1 leaves out and which sets the
// order 1.5, dominates over the deterministic h^2 terms at these step sizes.
TEST(SdeStrongOrder, Sra1IsOrderOneAndAHalfOnANonlinearTimeDependentProblem) {
  Eigen::ArrayXd scales(2);
  scales << 1.6, 0.8;
  const AdditiveNonlinearSde problem(scales);
  const BrownianPath path = make_path(41, 2);
  const Batch x0 = gbm_initial(2) - 0.75;
  const Batch reference = solve<Sra1>(problem, x0, 0.0, 1.0, 2048, path);
  const auto conv = strong_errors<Sra1>(problem, x0, 0.0, 1.0, {8, 16, 32, 64, 128}, path, reference);
  EXPECT_NEAR(reported_order(conv), 1.5, 0.2) << describe(conv);
  // And Euler-Maruyama, also against this reference, is first order (additive noise): a check
  // that the reference is not merely self-consistent.
  const auto em = strong_errors<EulerMaruyama>(problem, x0, 0.0, 1.0, {16, 32, 64, 128, 256}, path, reference);
  EXPECT_NEAR(reported_order(em), 1.0, 0.2) << describe(em);
}

// The same problem backward in time, from t = 1 to t = 0 (h < 0): the order must survive the sign
// of h, dW and I_(1,0) (a known pitfall of SRK Levy-area terms, see docs/DESIGN.md §4.5).
TEST(SdeStrongOrder, Sra1IsOrderOneAndAHalfBackwardInTime) {
  Eigen::ArrayXd scales(2);
  scales << 1.6, 0.8;
  const AdditiveNonlinearSde problem(scales);
  const BrownianPath path = make_path(43, 2);
  const Batch x0 = gbm_initial(2) - 0.75;
  const Batch reference = solve<Sra1>(problem, x0, 1.0, 0.0, 2048, path);
  const auto conv = strong_errors<Sra1>(problem, x0, 1.0, 0.0, {8, 16, 32, 64, 128}, path, reference);
  EXPECT_NEAR(reported_order(conv), 1.5, 0.2) << describe(conv);
}

// --- Weak order ----------------------------------------------------------------------------------

// Euler-Maruyama on OU: the sample mean and second moment of X_1 over M paths against the exact
// moments. The weak error shrinks like h; the Monte-Carlo error of each estimate is about
// 1.96 std / sqrt(M), which must lie below the smallest error used, or the fit would measure noise.
// Run on the Brownian path and on per-step increments (equal in law, so the same weak order).
template <template <class> class Stepper, class Noise>
void expect_first_weak_order_on_ou(const Noise& path) {
  const OrnsteinUhlenbeck ou(1.0, 0.5, 0.2);
  constexpr Index kSamples = 1 << 14;
  const Batch x0 = Batch::Constant(kSamples, 1, 3.5);
  const double exact_mean = ou.mean(x0.topRows(1), 0.0, 1.0)(0, 0);
  const double exact_second = exact_mean * exact_mean + ou.variance(0.0, 1.0);
  Convergence mean_conv, second_conv;
  double mean_floor = 0, second_floor = 0;
  for (int n : {4, 8, 16, 32, 64}) {
    const Batch x = solve<Stepper>(ou, x0, 0.0, 1.0, n, path);
    const Eigen::ArrayXd v = x.col(0);
    const Eigen::ArrayXd v2 = v.square();
    const double m1 = v.mean(), m2 = v2.mean();
    const double sd1 = std::sqrt((v - m1).square().mean()), sd2 = std::sqrt((v2 - m2).square().mean());
    mean_floor = std::max(mean_floor, 1.96 * sd1 / std::sqrt(double(kSamples)));
    second_floor = std::max(second_floor, 1.96 * sd2 / std::sqrt(double(kSamples)));
    mean_conv.h.push_back(1.0 / n);
    mean_conv.error.push_back(std::abs(m1 - exact_mean));
    second_conv.h.push_back(1.0 / n);
    second_conv.error.push_back(std::abs(m2 - exact_second));
  }
  fmt::print("    Monte-Carlo floors (1.96 std / sqrt(M)): mean {:.2e}, second moment {:.2e}\n", mean_floor, second_floor);
  EXPECT_LT(mean_floor, mean_conv.error.back()) << "Monte-Carlo floor above the smallest mean error";
  EXPECT_LT(second_floor, second_conv.error.back()) << "Monte-Carlo floor above the smallest second-moment error";
  EXPECT_NEAR(reported_order(mean_conv), 1.0, 0.2) << describe(mean_conv) << " floor " << mean_floor;
  EXPECT_NEAR(reported_order(second_conv), 1.0, 0.2) << describe(second_conv) << " floor " << second_floor;
}

TEST(SdeWeakOrder, EulerMaruyamaIsFirstOrderOnOrnsteinUhlenbeckMoments) { expect_first_weak_order_on_ou<EulerMaruyama>(make_path(53, 1)); }

TEST(SdeWeakOrder, EulerMaruyamaIsFirstOrderOnOrnsteinUhlenbeckMomentsWithPerStepNoise) {
  expect_first_weak_order_on_ou<EulerMaruyama>(StepIncrements(53, 1));
}

// SRA1 with per-step increments (dW and its time integral from their joint law): on OU, weak order
// 2 would need more paths to resolve than a unit test affords, so check that its mean error at 8
// steps is far below Euler-Maruyama's and its variance right (the joint law of dW and the time
// integral is tested in noise_test.cpp).
TEST(SdeWeakOrder, Sra1WithPerStepNoiseBeatsEulerMaruyamaOnOrnsteinUhlenbeckMoments) {
  const OrnsteinUhlenbeck ou(1.0, 0.5, 0.2);
  constexpr Index kSamples = 1 << 16;
  const Batch x0 = Batch::Constant(kSamples, 1, 3.5);
  const double exact_mean = ou.mean(x0.topRows(1), 0.0, 1.0)(0, 0);
  const double exact_var = ou.variance(0.0, 1.0);
  const StepIncrements noise(59, 1);
  const Batch em = solve<EulerMaruyama>(ou, x0, 0.0, 1.0, 8, noise), sra = solve<Sra1>(ou, x0, 0.0, 1.0, 8, noise);
  const double em_error = std::abs(em.col(0).mean() - exact_mean), sra_error = std::abs(sra.col(0).mean() - exact_mean);
  const double floor = 1.96 * std::sqrt(exact_var / kSamples);
  EXPECT_GT(em_error, 5 * floor);
  EXPECT_LT(sra_error, em_error / 4) << "EM " << em_error << ", SRA1 " << sra_error << ", floor " << floor;
  // The variance, within its sampling error and SRA1's O(h^2) bias (about 1% here).
  const double sra_var = (sra.col(0) - sra.col(0).mean()).square().mean();
  EXPECT_NEAR(sra_var, exact_var, 5 * exact_var * std::sqrt(2.0 / kSamples) + 0.02 * exact_var);
}

}  // namespace
}  // namespace diffode
