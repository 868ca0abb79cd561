// The probability-flow ODE and the reverse SDE as problems for the generic steppers, on the exact
// mixtures under EDM and VP:
//   - Euler, Heun, midpoint, RK4 and Adams-Bashforth 2-4 on ProbabilityFlowOde (process time t,
//     unscaled x) converge at their orders to the RK4-in-log-sigma reference (x = alpha x~), and
//     adaptive Dopri5 follows its tolerance;
//   - the drift is the Karras derivative in disguise (EDM: identical; VP: the chain rule), and the
//     scaled problems reproduce sample_euler and the reference solve;
//   - the reverse SDE: Euler-Maruyama strong order 1 and SRA1 1.5 (additive noise) against a fine
//     SRA1 solve on the same Brownian path, and both sample the exact p_{t_min}.
#include "solvers/diffusion/probability_flow.hpp"

#include "solvers/adaptive.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/adams_bashforth.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/sra1.hpp"
#include "tests/support/sample_law.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace diffode {
namespace {

using Case = testing::CaseName;

// Times whose scale-free sigmas are uniform in log sigma~ from sigma~(T) to sigma_end: a smooth
// reparameterisation of a uniform grid, so a method's order is unchanged, with steps relative to
// sigma~ where the flow needs them (uniform steps in t would spend them all at large sigma).
std::vector<double> log_sigma_times(const testing::DiffusionCase& c, double sigma_end, int n) {
  const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, sigma_end, n);
  std::vector<double> t;
  for (double s : sigmas) t.push_back(c.process->t_of_scaled_sigma(s));
  t.front() = c.process->t_max();
  if (sigma_end == c.sigma_min) t.back() = c.process->t_min();
  return t;
}

class PfOdeOrder : public ::testing::TestWithParam<Case> {};

// The fitted slope of the error against 1/n over `steps`, from x_T = alpha(T) x~_T to t(sigma_end),
// compared in the scaled variables with the reference.
template <class Stepper>
void expect_order(const testing::DiffusionCase& c, const Batch& x_scaled, const Batch& reference, double sigma_end,
                  std::vector<int> steps, double order, int evaluations) {
  const ProbabilityFlowOde<Batch> flow(*c.process, *c.predictor);
  std::vector<double> hs, errors;
  for (int n : steps) {
    const auto t = log_sigma_times(c, sigma_end, n);
    Batch x = c.process->alpha(t.front()) * x_scaled;
    Stepper stepper;
    const auto stats = integrate(stepper, flow, std::span<const double>(t), x);
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, evaluations < 0 ? 4 * (-evaluations - 1) + (n - (-evaluations - 1)) : evaluations * n);
    hs.push_back(1.0 / n);
    errors.push_back(testing::rms_error(x / c.process->alpha(t.back()), reference));
  }
  const double fitted = testing::fitted_order(hs, errors);
  std::printf("  %-18s %-12s errors %.2e .. %.2e, fitted order %.3f\n", Stepper::traits.name.data(), c.name.c_str(),
              errors.front(), errors.back(), fitted);
  EXPECT_NEAR(fitted, order, 0.3) << Stepper::traits.name << " on " << c.name;
}

// Measured (32 samples, sigma~ down to 0.05): euler 0.98-1.00, heun 1.91-2.04, midpoint 1.85-1.94,
// rk4 3.71-3.90, ab2/ab3/ab4 within 0.3 of 2/3/4 over the ranges below.
TEST_P(PfOdeOrder, GenericSteppersConvergeAtTheirOrders) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const double sigma_end = 0.05;
  const Batch x_scaled = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_scaled, c.sigma_max, sigma_end);
  expect_order<Euler<Batch>>(c, x_scaled, reference, sigma_end, {256, 512, 1024, 2048, 4096}, 1.0, 1);
  expect_order<Heun<Batch>>(c, x_scaled, reference, sigma_end, {32, 64, 128, 256, 512}, 2.0, 2);
  expect_order<Midpoint<Batch>>(c, x_scaled, reference, sigma_end, {32, 64, 128, 256, 512}, 2.0, 2);
  expect_order<Rk4<Batch>>(c, x_scaled, reference, sigma_end, {16, 32, 64, 128, 256}, 4.0, 4);
  // Adams-Bashforth k: k-1 RK4 start-up steps of 4 evaluations, then one per step (coded as -k).
  expect_order<AdamsBashforth<Batch, 2>>(c, x_scaled, reference, sigma_end, {64, 128, 256, 512, 1024}, 2.0, -2);
  expect_order<AdamsBashforth<Batch, 3>>(c, x_scaled, reference, sigma_end, {64, 128, 256, 512, 1024}, 3.0, -3);
  expect_order<AdamsBashforth<Batch, 4>>(c, x_scaled, reference, sigma_end, {64, 128, 256, 512, 1024}, 4.0, -4);
}

// Adaptive Dopri5 (per-sample control) over rtol = atol = 1e-4 .. 1e-8: the error falls with the
// tolerance, at a fitted slope near 1 in log-log, and stays within 50 tol.
TEST_P(PfOdeOrder, AdaptiveDopri5FollowsItsTolerance) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const double sigma_end = 0.05, t_end = c.process->t_of_scaled_sigma(sigma_end);
  const Batch x_scaled = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_scaled, c.sigma_max, sigma_end);
  const ProbabilityFlowOde<Batch> flow(*c.process, *c.predictor);
  std::vector<double> tols, errors;
  for (double tol : {1e-4, 1e-5, 1e-6, 1e-7, 1e-8}) {
    Batch x = c.process->alpha(c.process->t_max()) * x_scaled;
    Dopri5<Batch> stepper;
    AdaptiveOptions options;
    options.rtol = options.atol = tol;
    const auto stats = integrate_adaptive(stepper, flow, c.process->t_max(), t_end, x, options);
    ASSERT_FALSE(stats.failed) << stats.failure;
    const double error = testing::rms_error(x / c.process->alpha(t_end), reference);
    EXPECT_LT(error, 50 * tol) << c.name << " tol " << tol;
    tols.push_back(tol);
    errors.push_back(error);
  }
  const double slope = testing::fitted_order(tols, errors);
  std::printf("  dopri5 %s: errors %.2e .. %.2e, slope in tol %.3f\n", c.name.c_str(), errors.front(), errors.back(), slope);
  EXPECT_NEAR(slope, 1.0, 0.3) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Mixtures, PfOdeOrder,
                         ::testing::Values(Case{"ring2d", "edm"}, Case{"ring2d", "vp"}, Case{"mix16", "edm"}, Case{"mix16", "vp"}),
                         testing::case_test_name);

// Under EDM (alpha = 1, sigma = t) the PF-ODE drift is the Karras derivative (x - D)/t; under VP,
// x = alpha x~ gives dx/dt = alpha' x~ + alpha (dsigma~/dt) (x~ - D)/sigma~ (chain rule): the same
// flow as the scaled problem, to rounding.
TEST(ProbabilityFlowOde, IsTheKarrasFlowInTheProcessVariables) {
  for (const char* process : {"edm", "vp"}) {
    const auto c = testing::make_case("mix16", process);
    const Batch x_scaled = c.initial_noise(8);
    const ProbabilityFlowOde<Batch> flow(*c.process, *c.predictor);
    const ScaledProbabilityFlow<Batch, ScaledDenoiser<Batch>> scaled(*c.denoiser);
    for (double sigma : {40.0, 1.0, 0.05}) {
      const double t = c.process->t_of_scaled_sigma(sigma), alpha = c.process->alpha(t);
      const Batch x_scaled_t = c.predictor->mixture().sample_marginal(1.0, sigma, 8, 3);
      Batch drift, scaled_drift;
      flow.drift(alpha * x_scaled_t, PerSample::Constant(8, t), drift);
      scaled.drift(x_scaled_t, PerSample::Constant(8, sigma), scaled_drift);
      // dsigma~/dt = -sigma~ lambda'(t).
      const Batch expected = c.process->d_alpha(t) * x_scaled_t - alpha * sigma * c.process->d_lambda(t) * scaled_drift;
      EXPECT_LT((drift - expected).abs().maxCoeff(), 1e-11 * expected.abs().maxCoeff()) << process << " sigma " << sigma;
    }
  }
}

// Euler's method on ScaledProbabilityFlow is k-diffusion's sample_euler; RK4 on
// LogSigmaProbabilityFlow is the reference solve of tests/support/diffusion_cases.hpp.
TEST(ScaledProbabilityFlow, ReproducesSampleEulerAndTheReferenceSolve) {
  const auto c = testing::make_case("ring2d", "vp");
  const Batch x_T = c.initial_noise(16);
  const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, 0.05, 40);
  Batch expected = x_T, x = x_T;
  sample_euler(*c.denoiser, expected, std::span<const double>(sigmas));
  Euler<Batch> euler;
  integrate(euler, ScaledProbabilityFlow<Batch, ScaledDenoiser<Batch>>(*c.denoiser), std::span<const double>(sigmas), x);
  EXPECT_LT((x - expected).abs().maxCoeff(), 1e-12);

  std::vector<double> s(65);
  for (int i = 0; i <= 64; ++i) s[i] = std::log(c.sigma_max) + (std::log(0.05) - std::log(c.sigma_max)) * i / 64;
  Batch y = x_T;
  Rk4<Batch> rk4;
  integrate(rk4, LogSigmaProbabilityFlow<Batch, ScaledDenoiser<Batch>>(*c.denoiser), std::span<const double>(s), y);
  EXPECT_LT((y - testing::pf_ode_reference(c, x_T, c.sigma_max, 0.05, 64)).abs().maxCoeff(), 1e-12);
}

class ReverseSdeOrder : public ::testing::TestWithParam<Case> {};

// Strong errors on one Brownian path (depth 30: leaves of T 2^-30, far below the finest step),
// from T to sigma~ = 1 (before the flow splits into modes, where a coarse solve may pick a
// different mode than the fine one and the error stops measuring order), 16 samples, against SRA1
// with 4096 steps. Measured: EM 1.04 (both), SRA1 1.76 (edm) and 1.57 (vp).
TEST_P(ReverseSdeOrder, EulerMaruyamaOrderOneSra1OrderOneAndAHalf) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const Index dims = c.predictor->mixture().dims();
  const ReverseSde<Batch> sde(*c.process, *c.predictor);
  const Batch x_T = c.process->alpha(c.process->t_max()) * c.initial_noise(16);
  const BrownianPath path({.seed = 11, .t0 = c.process->t_max(), .t1 = 0.0, .dims = dims, .max_depth = 30});
  auto solve = [&](auto stepper, int n) {
    Batch x = x_T;
    const auto t = log_sigma_times(c, 1.0, n);
    const auto stats = integrate(stepper, sde, std::span<const double>(t), x, path);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, decltype(stepper)::traits.evaluations_per_step * n);
    return x;
  };
  const Batch reference = solve(Sra1<Batch>{}, 4096);
  std::vector<double> hs, em, sra1;
  for (int n : {32, 64, 128, 256, 512}) {
    hs.push_back(1.0 / n);
    em.push_back(testing::rms_error(solve(EulerMaruyama<Batch>{}, n), reference));
    sra1.push_back(testing::rms_error(solve(Sra1<Batch>{}, n), reference));
  }
  const double em_order = testing::fitted_order(hs, em), sra1_order = testing::fitted_order(hs, sra1);
  std::printf("  %s: EM %.2e .. %.2e order %.3f; SRA1 %.2e .. %.2e order %.3f\n", c.name.c_str(), em.front(), em.back(),
              em_order, sra1.front(), sra1.back(), sra1_order);
  EXPECT_NEAR(em_order, 1.0, 0.3);
  EXPECT_NEAR(sra1_order, 1.5, 0.3);
}

// The reverse SDE with its noise scaled by `scale` and its drift unchanged: for scale < 1 the drift
// removes variance the noise no longer restores, a wrong sampler to serve as a control.
struct ReverseSdeWithScaledNoise {
  const ReverseSde<Batch>& sde;
  double scale;
  ProblemTraits traits() const { return sde.traits(); }
  void drift(const Batch& x, const PerSample& t, Batch& out) const { sde.drift(x, t, out); }
  void diffusion(const Batch& x, const PerSample& t, Batch& out) const {
    sde.diffusion(x, t, out);
    out *= scale;
  }
};

// From exact draws of p_T to t_min on 100 steps: 1000 samples against the exact law of p_{t_min}
// (alpha mu_k, alpha^2 s_k^2 + sigma^2): mean within 4 standard errors per coordinate, covariance
// within 4.5 (estimated) standard errors per entry, two-sample KS on 2 axes + 8 directions against
// 1000 exact draws at family-wise level 1e-3. Measured: mean 1.7-2.0, covariance 0.8-1.4 SE,
// KS 0.05-0.06 against 0.0995. The control, Euler-Maruyama on the same path with the noise switched
// off (the drift alone, which over-contracts), must fail the same checks: measured covariance 13-15
// SE, KS 0.19-0.20. (Half the noise is not a reliable control here: covariance 3.1-3.8 SE.)
TEST_P(ReverseSdeOrder, SamplesTheExactMarginal) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const auto& mixture = c.predictor->mixture();
  const Index samples = 1000, dims = mixture.dims();
  const double t_min = c.process->t_min(), a = c.process->alpha(t_min), s = c.process->sigma(t_min);
  const testing::LawCheck check{.mean = a * mixture.mean(),
                                .covariance = a * a * mixture.covariance() + s * s * Eigen::MatrixXd::Identity(dims, dims),
                                .exact = mixture.sample_marginal(a, s, samples, 99),
                                .mean_z = 4.0};
  const Batch x_T = c.process->alpha(c.process->t_max()) * c.initial_noise(samples, 5);
  const ReverseSde<Batch> sde(*c.process, *c.predictor);
  // Depth 24: leaves of T 2^-24 (5e-6 for EDM's T = 80), 20x below the smallest step.
  const BrownianPath path({.seed = 11, .t0 = c.process->t_max(), .t1 = 0.0, .dims = dims, .max_depth = 24});
  const auto t = log_sigma_times(c, c.sigma_min, 100);
  auto solve = [&](auto stepper, const auto& problem) {
    Batch x = x_T;
    const auto stats = integrate(stepper, problem, std::span<const double>(t), x, path);
    EXPECT_FALSE(stats.failed) << stats.failure;
    return x;
  };
  const Batch control = solve(EulerMaruyama<Batch>{}, ReverseSdeWithScaledNoise{sde, 0.0});
  testing::expect_law_with_failing_control(check, solve(EulerMaruyama<Batch>{}, sde), control,
                                           c.name + " Euler-Maruyama (control: no noise)");
  testing::expect_law_with_failing_control(check, solve(Sra1<Batch>{}, sde), control, c.name + " SRA1 (control: no noise)");
}

INSTANTIATE_TEST_SUITE_P(Ring, ReverseSdeOrder, ::testing::Values(Case{"ring2d", "edm"}, Case{"ring2d", "vp"}), testing::case_test_name);

TEST(ReverseSde, DeclaresAdditiveItoNoise) {
  const auto c = testing::make_case("ring2d", "vp");
  const ReverseSde<Batch> sde(*c.process, *c.predictor);
  EXPECT_NO_THROW(check_contract(Sra1<Batch>::traits, sde.traits()));
  Batch g;
  sde.diffusion(Batch::Zero(3, 2), PerSample::Constant(3, 0.5), g);
  EXPECT_EQ(g.rows(), 3);
  EXPECT_EQ(g.cols(), 2);
  EXPECT_DOUBLE_EQ(g(2, 1), std::sqrt(c.process->g2(0.5)));
}

}  // namespace
}  // namespace diffode
