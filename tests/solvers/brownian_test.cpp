// The Brownian path: exact additivity, the right Gaussian laws (Kolmogorov-Smirnov at a stated
// level, fixed seeds), consistency of the time integral with W, backward time, and bitwise
// determinism across query order, batch split and threads.
#include "solvers/brownian.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace diffode {
namespace {

// Kolmogorov-Smirnov statistic of `z` against N(0, 1).
double ks_statistic(std::vector<double> z) {
  std::sort(z.begin(), z.end());
  const double n = static_cast<double>(z.size());
  double d = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double cdf = 0.5 * std::erfc(-z[i] / std::sqrt(2.0));
    d = std::max({d, cdf - i / n, (i + 1) / n - cdf});
  }
  return d;
}

// Asymptotic critical value of the one-sample KS statistic at level alpha: a correct path fails a
// given check with probability alpha. At alpha = 1e-3 over the handful of KS checks here the suite's
// false-alarm rate is below 1%; with fixed seeds the outcome is deterministic.
double ks_critical(std::size_t n, double alpha = 1e-3) { return std::sqrt(-0.5 * std::log(alpha / 2)) / std::sqrt(double(n)); }

constexpr std::size_t kDraws = 100000;

BrownianPath make_path(std::uint64_t seed, double t0 = 0.0, double t1 = 1.0, Index dims = 1) {
  return BrownianPath({.seed = seed, .t0 = t0, .t1 = t1, .dims = dims});
}

TEST(BrownianPath, IncrementsAreAdditive) {
  const auto path = make_path(7, 0.0, 2.0, 3);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(0.0, 2.0);
  Batch ab(5, 3), bc(5, 3), ac(5, 3), iab(5, 3), ibc(5, 3), iac(5, 3);
  for (int trial = 0; trial < 200; ++trial) {
    double p[3] = {u(rng), u(rng), u(rng)};
    std::sort(p, p + 3);
    const double a = p[0], b = p[1], c = p[2];
    path.increment_and_time_integral(a, b, 11, ab, iab);
    path.increment_and_time_integral(b, c, 11, bc, ibc);
    path.increment_and_time_integral(a, c, 11, ac, iac);
    EXPECT_LE((ab + bc - ac).abs().maxCoeff(), 1e-12);
    // int_a^c (W - W_a) = int_a^b (W - W_a) + int_b^c (W - W_b) + (W_b - W_a)(c - b)
    EXPECT_LE((iab + ibc + ab * (c - b) - iac).abs().maxCoeff(), 1e-12);
  }
}

TEST(BrownianPath, IncrementsAreStandardGaussianAtAnyTimes) {
  // Non-dyadic ends, so the quadratic leaf interpolation is exercised as well as the tree.
  const double s = 0.1234567, t = 0.7654321, h = t - s;
  const auto path = make_path(2024);
  Batch dw(kDraws, 1), integral(kDraws, 1);
  path.increment_and_time_integral(s, t, 0, dw, integral);
  std::vector<double> z_w(kDraws), z_area(kDraws);
  double cov = 0;
  for (std::size_t i = 0; i < kDraws; ++i) {
    z_w[i] = dw(i, 0) / std::sqrt(h);
    // Space-time Levy area H = (1/h) int (W - W_s) - W/2 ~ N(0, h/12), independent of W.
    z_area[i] = (integral(i, 0) / h - 0.5 * dw(i, 0)) / std::sqrt(h / 12.0);
    cov += z_w[i] * z_area[i];
  }
  EXPECT_LT(ks_statistic(z_w), ks_critical(kDraws));
  EXPECT_LT(ks_statistic(z_area), ks_critical(kDraws));
  // Correlation of independent normals: sd 1/sqrt(n); 4 sd is a 6e-5 false-alarm rate.
  EXPECT_LT(std::abs(cov / kDraws), 4.0 / std::sqrt(double(kDraws)));
}

TEST(BrownianPath, BridgeHasTheBrownianBridgeVariance) {
  // Given W at s and t, W(u) - W(s) - (u-s)/(t-s) W(s,t) ~ N(0, (u-s)(t-u)/(t-s)).
  const double s = 0.05, u = 0.41, t = 0.93;
  const auto path = make_path(99);
  Batch w_s(kDraws, 1), w_u(kDraws, 1), w_t(kDraws, 1);
  path.point(s, 0, w_s, nullptr);
  path.point(u, 0, w_u, nullptr);
  path.point(t, 0, w_t, nullptr);
  const double sd = std::sqrt((u - s) * (t - u) / (t - s));
  std::vector<double> z(kDraws);
  for (std::size_t i = 0; i < kDraws; ++i)
    z[i] = (w_u(i, 0) - w_s(i, 0) - (u - s) / (t - s) * (w_t(i, 0) - w_s(i, 0))) / sd;
  EXPECT_LT(ks_statistic(z), ks_critical(kDraws));
}

TEST(BrownianPath, TimeIntegralIsTheIntegralOfThePath) {
  // A fine trapezoid rule over point values converges to the stored integral.
  const auto path = make_path(5, 0.0, 1.0);
  const double s = 0.2, t = 0.83;
  for (Index sample = 0; sample < 20; ++sample) {
    const int n = 1 << 14;
    double sum = 0;
    const double w_s = path.at(s, sample, 0).w;
    for (int i = 0; i <= n; ++i) {
      const double u = s + (t - s) * i / n;
      sum += (i == 0 || i == n ? 0.5 : 1.0) * (path.at(u, sample, 0).w - w_s);
    }
    const double trapezoid = sum * (t - s) / n;
    const double stored = path.at(t, sample, 0).integral - path.at(s, sample, 0).integral - w_s * (t - s);
    // Trapezoid error on a Brownian path ~ h^{3/2} sqrt(T): about 2e-6 here.
    EXPECT_NEAR(trapezoid, stored, 2e-5) << "sample " << sample;
  }
}

TEST(BrownianPath, TimeIntegralHasVarianceHCubedOverThree) {
  const double s = 0.3, t = 0.9, h = t - s;
  const auto path = make_path(3);
  Batch dw(kDraws, 1), integral(kDraws, 1);
  path.increment_and_time_integral(s, t, 0, dw, integral);
  std::vector<double> z(kDraws);
  for (std::size_t i = 0; i < kDraws; ++i) z[i] = integral(i, 0) / std::sqrt(h * h * h / 3.0);
  EXPECT_LT(ks_statistic(z), ks_critical(kDraws));
}

TEST(BrownianPath, BackwardTimeIsTheSamePathReversed) {
  const auto path = make_path(17, 1.0, 0.0, 2);  // built for a backward integration: t0 > t1
  const double s = 0.25, t = 0.8;
  Batch fwd(4, 2), bwd(4, 2), i_fwd(4, 2), i_bwd(4, 2);
  path.increment_and_time_integral(s, t, 0, fwd, i_fwd);
  path.increment_and_time_integral(t, s, 0, bwd, i_bwd);
  EXPECT_LE((fwd + bwd).abs().maxCoeff(), 1e-15);
  // int_s^t (W - W_s) + int_t^s (W - W_t) = (W_t - W_s)(t - s)
  EXPECT_LE((i_fwd + i_bwd - fwd * (t - s)).abs().maxCoeff(), 1e-14);
  // The same seed on [0, 1] given forward is the same path.
  const auto forward_path = make_path(17, 0.0, 1.0, 2);
  Batch again(4, 2);
  forward_path.increment(s, t, 0, again);
  EXPECT_EQ((again - fwd).abs().maxCoeff(), 0.0);
}

TEST(BrownianPath, RefiningTheGridKeepsThePath) {
  // W(1) summed from 10 or from 1000 increments is the same number, and so is every shared point.
  const auto path = make_path(31, 0.0, 1.0, 1);
  auto sum_increments = [&](int n) {
    Batch total = Batch::Zero(8, 1), dw(8, 1);
    for (int i = 0; i < n; ++i) {
      path.increment(double(i) / n, double(i + 1) / n, 0, dw);
      total += dw;
    }
    return total;
  };
  EXPECT_LE((sum_increments(10) - sum_increments(1000)).abs().maxCoeff(), 1e-12);
  Batch coarse(8, 1), fine(8, 1);
  path.increment(0.0, 0.3, 0, coarse);
  Batch piece(8, 1);
  fine.setZero();
  for (int i = 0; i < 300; ++i) {
    path.increment(i / 1000.0, (i + 1) / 1000.0, 0, piece);
    fine += piece;
  }
  EXPECT_LE((coarse - fine).abs().maxCoeff(), 1e-12);
}

TEST(BrownianPath, BitwiseDeterministicAcrossQueryOrderBatchSplitAndThreads) {
  const auto path = make_path(12345, 0.0, 3.0, 2);
  std::vector<double> times(64);
  for (std::size_t i = 0; i < times.size(); ++i) times[i] = 3.0 * std::fmod(0.618033988749895 * (i + 1), 1.0);

  // Reference: in order, one batch of 16 samples.
  std::vector<Batch> ref;
  for (double t : times) {
    Batch w(16, 2);
    path.point(t, 0, w, nullptr);
    ref.push_back(w);
  }
  // Reverse order, and split into batches of 5 + 11 starting at their global sample index.
  for (std::size_t k = times.size(); k-- > 0;) {
    Batch a(5, 2), b(11, 2);
    path.point(times[k], 0, a, nullptr);
    path.point(times[k], 5, b, nullptr);
    Batch joined(16, 2);
    joined << a, b;
    EXPECT_EQ((joined - ref[k]).abs().maxCoeff(), 0.0);
  }
  // Two threads, each taking every other time.
  std::vector<Batch> threaded(times.size(), Batch(16, 2));
  auto work = [&](std::size_t first) {
    for (std::size_t k = first; k < times.size(); k += 2) path.point(times[k], 0, threaded[k], nullptr);
  };
  std::thread t1(work, 0), t2(work, 1);
  t1.join();
  t2.join();
  for (std::size_t k = 0; k < times.size(); ++k) EXPECT_EQ((threaded[k] - ref[k]).abs().maxCoeff(), 0.0);
}

TEST(BrownianPath, SeedsAndSamplesAreIndependentStreams) {
  const auto a = make_path(1), b = make_path(2);
  Batch wa(kDraws, 1), wb(kDraws, 1);
  a.point(1.0, 0, wa, nullptr);
  b.point(1.0, 0, wb, nullptr);
  const double corr = (wa * wb).sum() / kDraws;
  EXPECT_LT(std::abs(corr), 4.0 / std::sqrt(double(kDraws)));
  // Neighbouring samples of one seed are uncorrelated too.
  const double lag = (wa.topRows(kDraws - 1) * wa.bottomRows(kDraws - 1)).sum() / (kDraws - 1);
  EXPECT_LT(std::abs(lag), 4.0 / std::sqrt(double(kDraws)));
}

TEST(BrownianPath, RejectsTimesOutsideItsInterval) {
  const auto path = make_path(0, 0.0, 1.0);
  EXPECT_THROW(path.at(1.5, 0, 0), std::out_of_range);
  EXPECT_THROW(BrownianPath({.t0 = 1.0, .t1 = 1.0}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
