// The adaptive driver with Dopri5: tolerance proportionality, counted rejections, per-sample
// independence (bitwise), the batch norm, and failures recorded with sample, step and time.
#include "problems/linear_ode.hpp"
#include "problems/nonlinear_ode.hpp"
#include "problems/order_cases.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/verner65.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

namespace diffode {
namespace {

// The linear problem's initial batch, the one the orders table measures (problems/order_cases.hpp).
Batch linear_batch() { return order_cases::linear_initial_state(); }

ModulatedLogisticOde logistic_problem() {
  PerSample rates(3);
  rates << 1.0, 4.0, 0.5;
  return ModulatedLogisticOde(rates);
}

AdaptiveOptions tolerance(double tol) {
  AdaptiveOptions o;
  o.rtol = o.atol = tol;
  return o;
}

// Over rtol = atol from 1e-3 to 1e-9 the global error falls with the tolerance and stays within a
// small factor of it, forward and backward in time. The error is measured in the controller's own
// mixed norm, |x - exact| / (atol + rtol |exact|): backward in time the damped system grows about
// tenfold, and so does its absolute error. Measured: worst ratio 1.08 forward, 11.0 backward;
// the test allows 20.
template <template <class> class Stepper = Dopri5>
void expect_tolerance_proportionality(double t0, double t1) {
  const auto problem = LinearOde::damped_rotation();
  const Batch x0 = linear_batch();
  const Batch exact = problem.exact(x0, t0, t1);
  double previous = INFINITY, worst_ratio = 0;
  for (double tol : {1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9}) {
    Stepper<Batch> stepper;
    Batch x = x0;
    const auto stats = integrate_adaptive(stepper, problem, t0, t1, x, tolerance(tol));
    ASSERT_FALSE(stats.failed) << stats.failure;
    const double error = (x - exact).abs().maxCoeff();
    const double scaled = ((x - exact).abs() / (tol + tol * exact.abs())).maxCoeff();
    std::printf("  [%4.1f -> %4.1f] tol %.0e: max error %.2e, scaled error %.2f, accepted %ld..%ld, nfe %ld\n", t0, t1,
                tol, error, scaled, static_cast<long>(*std::min_element(stats.accepted.begin(), stats.accepted.end())),
                static_cast<long>(stats.steps), static_cast<long>(stats.nfe));
    EXPECT_LT(error, previous) << "tol " << tol;
    EXPECT_LT(scaled, 20.0) << "tol " << tol;
    for (Index i = 0; i < x.rows(); ++i) EXPECT_EQ(stats.t_reached[i], t1);
    worst_ratio = std::max(worst_ratio, scaled);
    previous = error;
  }
  std::printf("  worst scaled error = %.2f\n", worst_ratio);
}

// The orders table's adaptive ladder is this run at every other tolerance.
TEST(Adaptive, ErrorFollowsTheToleranceForward) {
  expect_tolerance_proportionality(order_cases::adaptive_t0, order_cases::adaptive_t1);
}
TEST(Adaptive, ErrorFollowsTheToleranceBackward) { expect_tolerance_proportionality(5.0, 0.5); }

// The same driver with Verner's 6(5) pair (solvers/ode/verner65.hpp): its error estimate steers the
// controller to the tolerance just as Dopri5's does.
TEST(Adaptive, Verner65ErrorFollowsTheTolerance) {
  expect_tolerance_proportionality<Verner65>(order_cases::adaptive_t0, order_cases::adaptive_t1);
  expect_tolerance_proportionality<Verner65>(5.0, 0.5);
}

// The logistic problem with rate 4 swings x close to 0 and 1 and back; its sensitivity to earlier
// errors multiplies the local tolerance (measured: 19x forward over [0, 6], 47x backward over
// [6, -1] at tol 1e-8), so the bound here is 100 tol.
TEST(Adaptive, NonlinearTimeDependentProblemToTolerance) {
  const auto problem = logistic_problem();
  Batch x0(2, 3);
  x0 << 0.2, 0.5, 0.9,
        0.05, 0.7, 0.3;
  for (auto [t0, t1] : {std::pair{0.0, 6.0}, std::pair{6.0, -1.0}}) {
    Batch x = x0;
    Dopri5<Batch> stepper;
    const auto stats = integrate_adaptive(stepper, problem, t0, t1, x, tolerance(1e-8));
    ASSERT_FALSE(stats.failed) << stats.failure;
    const double error = (x - problem.exact(x0, t0, t1)).abs().maxCoeff();
    std::printf("  logistic [%4.1f -> %4.1f] tol 1e-8: error %.2e\n", t0, t1, error);
    EXPECT_LT(error, 1e-6);
  }
}

// Too large a first step (the whole interval) must be rejected, counted, and recovered from; the
// evaluation count is exactly 6 per attempt plus the first stage of the first one.
TEST(Adaptive, RejectionsAreCountedAndRecovered) {
  const auto problem = LinearOde::damped_rotation();
  const Batch x0 = linear_batch();
  AdaptiveOptions options = tolerance(1e-8);
  options.initial_step = 5.0;
  Dopri5<Batch> stepper;
  Batch x = x0;
  const auto stats = integrate_adaptive(stepper, problem, 0.0, 5.0, x, options);
  ASSERT_FALSE(stats.failed) << stats.failure;
  Index total = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    EXPECT_GE(stats.rejected_per_sample[i], 1) << "sample " << i;
    EXPECT_EQ(stats.accepted[i] + stats.rejected_per_sample[i] <= stats.iterations, true);
    total += stats.rejected_per_sample[i];
  }
  EXPECT_EQ(stats.rejected, total);
  EXPECT_EQ(stats.nfe, 6 * stats.iterations + 1);
  EXPECT_LT((x - problem.exact(x0, 0.0, 5.0)).abs().maxCoeff(), 1e-7);
  std::printf("  rejected %ld in total, %ld iterations, nfe %ld\n", static_cast<long>(stats.rejected),
              static_cast<long>(stats.iterations), static_cast<long>(stats.nfe));

  // The automatic first step costs two evaluations and, here, no rejection.
  Dopri5<Batch> fresh;
  Batch y = x0;
  const auto automatic = integrate_adaptive(fresh, problem, 0.0, 5.0, y, tolerance(1e-8));
  EXPECT_EQ(automatic.nfe, 6 * automatic.iterations + 1 + 2);
  EXPECT_EQ(automatic.rejected, 0);
}

// A sample integrated alone is bitwise the same sample inside a batch of others with very different
// dynamics: a fast-switching one, a near-equilibrium one, and one that blows up and fails.
TEST(Adaptive, PerSampleControlMakesASampleIndependentOfItsBatch) {
  const auto problem = logistic_problem();
  Batch alone(1, 3);
  alone << 0.3, 0.6, 0.1;
  Batch batch(4, 3);
  batch << 1e-6, 0.999999, 0.5,  // slow then sharp switching
           0.3, 0.6, 0.1,        // the sample under test, at row 1
           3.0, 0.5, 0.5,        // blows up near t = 3.56 (rate 1, x0 = 3)
           0.5, 0.02, 0.98;
  const double t0 = 0.0, t1 = 6.0;
  const auto options = tolerance(1e-7);

  Dopri5<Batch> s1, s2;
  Batch x_alone = alone, x_batch = batch;
  const auto stats_alone = integrate_adaptive(s1, problem, t0, t1, x_alone, options);
  const auto stats_batch = integrate_adaptive(s2, problem, t0, t1, x_batch, options);
  ASSERT_FALSE(stats_alone.failed) << stats_alone.failure;
  EXPECT_TRUE(stats_batch.failed);  // row 2, only
  EXPECT_FALSE(stats_batch.failures[2].empty());
  EXPECT_TRUE(stats_batch.failures[1].empty());

  for (Index d = 0; d < 3; ++d) EXPECT_EQ(x_alone(0, d), x_batch(1, d)) << "dimension " << d;  // bitwise
  EXPECT_EQ(stats_alone.accepted[0], stats_batch.accepted[1]);
  EXPECT_EQ(stats_alone.rejected_per_sample[0], stats_batch.rejected_per_sample[1]);
  EXPECT_EQ(stats_batch.t_reached[1], t1);
  std::printf("  sample alone: %ld accepted; in the batch the others took %ld, %ld (failed), %ld\n",
              static_cast<long>(stats_alone.accepted[0]), static_cast<long>(stats_batch.accepted[0]),
              static_cast<long>(stats_batch.accepted[2]), static_cast<long>(stats_batch.accepted[3]));

  // The batch norm couples them (so the bitwise check above is not vacuous): without the failing
  // row, the sample's result now depends on its neighbours.
  Batch healthy(3, 3);
  healthy << batch.row(0), batch.row(1), batch.row(3);
  AdaptiveOptions coupled = options;
  coupled.norm = ErrorNorm::batch;
  Dopri5<Batch> s3;
  const auto stats_coupled = integrate_adaptive(s3, problem, t0, t1, healthy, coupled);
  ASSERT_FALSE(stats_coupled.failed) << stats_coupled.failure;
  EXPECT_FALSE((healthy.row(1) == x_alone.row(0)).all());
}

// ErrorNorm::batch: one step size for all, every sample takes the same steps, and the result is
// still within tolerance.
TEST(Adaptive, BatchNormSharesOneStepSize) {
  const auto problem = LinearOde::damped_rotation();
  const Batch x0 = linear_batch();
  AdaptiveOptions options = tolerance(1e-7);
  options.norm = ErrorNorm::batch;
  std::vector<double> observed_h;
  bool all_same = true;
  Dopri5<Batch> stepper;
  Batch x = x0;
  const auto stats = integrate_adaptive(stepper, problem, 0.0, 5.0, x, options, [&](const AdaptiveStepInfo& info, const Batch&) {
    for (Index i = 1; i < info.h_sample.size(); ++i) all_same = all_same && info.h_sample[i] == info.h_sample[0];
    observed_h.push_back(info.h);
  });
  ASSERT_FALSE(stats.failed) << stats.failure;
  EXPECT_TRUE(all_same);
  EXPECT_EQ(static_cast<Index>(observed_h.size()), stats.iterations);
  for (Index i = 1; i < x.rows(); ++i) EXPECT_EQ(stats.accepted[i], stats.accepted[0]);
  EXPECT_LT((x - problem.exact(x0, 0.0, 5.0)).abs().maxCoeff(), 1e-6);

  // Per sample, each takes no more steps than the shared step size forces on all.
  Dopri5<Batch> s2;
  Batch y = x0;
  const auto per_sample = integrate_adaptive(s2, problem, 0.0, 5.0, y, tolerance(1e-7));
  for (Index i = 0; i < x.rows(); ++i) EXPECT_LE(per_sample.accepted[i], stats.accepted[i]);
}

// Finite-time blow-up: the failing sample is recorded with its step and a time close to the exact
// blow-up time; the healthy sample beside it finishes accurately.
TEST(Adaptive, BlowUpIsRecordedWithSampleStepAndTime) {
  PerSample rate(1);
  rate << 1.0;
  const ModulatedLogisticOde problem(rate);
  Batch x0(2, 1);
  x0 << 3.0, 0.5;
  const double t_star = ModulatedLogisticOde::blow_up_time(3.0, 1.0, 0.0);
  ASSERT_NEAR(t_star, std::numbers::pi + std::asin(std::log(1.5)), 1e-12);
  Batch x = x0;
  Dopri5<Batch> stepper;
  const auto stats = integrate_adaptive(stepper, problem, 0.0, 6.0, x, tolerance(1e-8));
  std::printf("  %s (exact blow-up at %.12f)\n", stats.failure.c_str(), t_star);
  ASSERT_TRUE(stats.failed);
  EXPECT_NE(stats.failure.find("sample 0"), std::string::npos);
  EXPECT_NE(stats.failure.find("underflow"), std::string::npos);
  EXPECT_NEAR(stats.failed_time, t_star, 1e-6);
  EXPECT_EQ(stats.failed_step, stats.accepted[0]);
  EXPECT_GT(stats.failed_step, 0);
  EXPECT_TRUE(stats.failures[1].empty());
  EXPECT_EQ(stats.t_reached[1], 6.0);
  EXPECT_NEAR(x(1, 0), problem.exact(x0, 0.0, 6.0)(1, 0), 1e-7);
}

TEST(Adaptive, TooManyStepsAndNonFiniteStartAreRecorded) {
  const auto problem = LinearOde::damped_rotation();
  AdaptiveOptions options = tolerance(1e-10);
  options.max_steps = 5;
  Batch x = linear_batch();
  Dopri5<Batch> stepper;
  const auto stats = integrate_adaptive(stepper, problem, 0.0, 5.0, x, options);
  ASSERT_TRUE(stats.failed);
  EXPECT_NE(stats.failure.find("maximum number of steps (5)"), std::string::npos) << stats.failure;
  EXPECT_GT(stats.failed_time, 0.0);
  EXPECT_LT(stats.failed_time, 5.0);

  Batch y = linear_batch();
  y(2, 1) = NAN;
  Dopri5<Batch> s2;
  const auto nan_stats = integrate_adaptive(s2, problem, 0.0, 1.0, y, tolerance(1e-6));
  ASSERT_TRUE(nan_stats.failed);
  EXPECT_NE(nan_stats.failure.find("sample 2"), std::string::npos) << nan_stats.failure;
  EXPECT_EQ(nan_stats.failed_step, 0);
  EXPECT_EQ(nan_stats.failed_time, 0.0);
  for (Index i : {0, 1, 3}) EXPECT_EQ(nan_stats.t_reached[i], 1.0);
}

// The observer sees each attempt; the least advanced time never goes back and ends at t1.
TEST(Adaptive, ObserverSeesEveryAttempt) {
  const auto problem = LinearOde::damped_rotation();
  Batch x = linear_batch();
  std::vector<double> times;
  Index calls = 0;
  Dopri5<Batch> stepper;
  const auto stats = integrate_adaptive(stepper, problem, 2.0, -1.0, x, tolerance(1e-6),
                                        [&](const StepInfo& info, const Batch&) {
                                          ++calls;
                                          EXPECT_EQ(info.step, calls);
                                          times.push_back(info.t);
                                        });
  EXPECT_EQ(calls, stats.iterations);
  for (std::size_t i = 1; i < times.size(); ++i) EXPECT_LE(times[i], times[i - 1]);
  EXPECT_EQ(times.back(), -1.0);
}

}  // namespace
}  // namespace diffode

namespace diffode {
namespace {

// Dopri5's per-sample attempt: with every sample at the same t and h it matches the batch-wide step
// to round-off, and a sample given h = 0 stays exactly where it is.
TEST(Adaptive, PerSampleDopri5AttemptMatchesTheBatchStep) {
  const auto problem = LinearOde::damped_rotation();
  const Batch x0 = linear_batch();
  Dopri5<Batch> shared, per_sample;
  Batch x_shared, e_shared, x_each, e_each;
  shared.attempt(problem, 0.4, -0.3, x0, x_shared, e_shared);
  per_sample.attempt(problem, PerSample::Constant(4, 0.4), PerSample::Constant(4, -0.3), x0, x_each, e_each);
  EXPECT_LT((x_shared - x_each).abs().maxCoeff(), 1e-15);
  EXPECT_LT((e_shared - e_each).abs().maxCoeff(), 1e-15);

  PerSample h(4);
  h << 0.1, 0.0, -0.2, 0.05;
  Dopri5<Batch> mixed;
  mixed.attempt(problem, PerSample::Constant(4, 1.0), h, x0, x_each, e_each);
  EXPECT_TRUE((x_each.row(1) == x0.row(1)).all());
  EXPECT_TRUE((e_each.row(1) == 0.0).all());
}

}  // namespace
}  // namespace diffode
