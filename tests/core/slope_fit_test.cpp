// The least-squares fitter of log(error) against log(step): exact on power laws, invariant to the
// units of either axis, accurate where the uncentred sums cancel, and explicit about unusable points.
#include "core/slope_fit.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace diffode {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> power_law(const std::vector<double>& x, double constant, double slope) {
  std::vector<double> y;
  for (double v : x) y.push_back(constant * std::pow(v, slope));
  return y;
}

// The textbook form (n sxy - sx sy) / (n sxx - sx^2), as the fitters this one replaced computed it.
double uncentred_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

TEST(SlopeFit, ExactOnPowerLaws) {
  const std::vector<double> h = {0.5, 0.25, 0.125, 0.0625, 0.03125};
  for (double p : {0.5, 1.0, 1.5, 2.0, 4.0, 5.0}) {
    const LogLogFit fit = fit_log_log(h, power_law(h, 7.0, p));
    EXPECT_NEAR(fit.slope, p, 1e-13) << "p = " << p;
    EXPECT_NEAR(fit.intercept, std::log(7.0), 1e-12) << "p = " << p;
    EXPECT_EQ(fit.points, 5);
  }
  // Unevenly spaced abscissae, decreasing slope (error growing with NFE would be negative order).
  const std::vector<double> x = {3.0, 10.0, 11.0, 250.0};
  const LogLogFit fit = fit_log_log(x, power_law(x, 0.02, -2.5));
  EXPECT_NEAR(fit.slope, -2.5, 1e-13);
  EXPECT_NEAR(fit.intercept, std::log(0.02), 1e-12);
}

// Rescaling h by a and the error by b leaves the slope alone and moves the intercept by
// log b - slope log a: neither the time unit nor the error norm's scale may change an order.
TEST(SlopeFit, InvariantToTheUnitsOfEitherAxis) {
  const std::vector<double> h = {0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625};
  // Not an exact power law: a second-order error with a third-order correction and some wobble.
  std::vector<double> e;
  for (std::size_t i = 0; i < h.size(); ++i) e.push_back(h[i] * h[i] * (1.0 + 3.0 * h[i]) * (1.0 + 0.05 * ((i % 2) ? 1 : -1)));
  const LogLogFit base = fit_log_log(h, e);
  ASSERT_TRUE(std::isfinite(base.slope));
  EXPECT_GT(base.slope, 2.0);  // the h^3 term steepens it
  for (double a : {1e-6, 0.3, 1e5})
    for (double b : {1e-12, 7.0, 1e9}) {
      std::vector<double> ha = h, eb = e;
      for (double& v : ha) v *= a;
      for (double& v : eb) v *= b;
      const LogLogFit fit = fit_log_log(ha, eb);
      EXPECT_NEAR(fit.slope, base.slope, 1e-12) << "a = " << a << ", b = " << b;
      EXPECT_NEAR(fit.intercept, base.intercept + std::log(b) - base.slope * std::log(a), 1e-9) << "a = " << a << ", b = " << b;
    }
}

// Step sizes near 1e-8 with a relative spread of 1e-6: |log h| ~ 18 against a spread of 1e-6 in
// log h. The uncentred denominator n sxx - sx^2 is then the difference of two numbers near 2.2e4
// whose true value is ~4e-10, 12 of its 16 digits lost (measured: slope 2.02 for 2); the centred
// sums keep the slope to ~1e-9.
TEST(SlopeFit, AccurateWhereUncentredSumsCancel) {
  std::vector<double> h;
  for (int i = 0; i < 8; ++i) h.push_back(1e-8 * (1.0 + 1.3e-7 * i * i + 1e-7 * i));
  const std::vector<double> e = power_law(h, 3.0, 2.0);
  const LogLogFit fit = fit_log_log(h, e);
  const double naive = uncentred_slope(h, e);
  std::printf("  slope 2: centred %.12f, uncentred %.12f\n", fit.slope, naive);
  EXPECT_NEAR(fit.slope, 2.0, 1e-6);
  // The case is a real test of the centring: the textbook form misses by far more.
  EXPECT_GT(std::abs(naive - 2.0), 1e3 * std::abs(fit.slope - 2.0));

  // And h from 1e-8 to 1e-7 (a decade, the range itself unproblematic): both agree, to round-off.
  std::vector<double> wide;
  for (int i = 0; i <= 6; ++i) wide.push_back(1e-8 * std::pow(10.0, i / 6.0));
  const std::vector<double> ew = power_law(wide, 0.5, 1.5);
  EXPECT_NEAR(fit_log_log(wide, ew).slope, 1.5, 1e-12);
  EXPECT_NEAR(uncentred_slope(wide, ew), 1.5, 1e-9);
}

TEST(SlopeFit, UnusablePointsAreSkippedOrInvalidateTheFit) {
  const std::vector<double> h = {0.1, 0.05, 0.025, 0.0125};
  std::vector<double> e = power_law(h, 2.0, 2.0);
  // A NaN, an infinite, a zero and a negative error, and a zero and a NaN step.
  std::vector<double> h_bad = h, e_bad = e;
  h_bad.insert(h_bad.end(), {0.2, 0.3, 0.4, 0.5, 0.0, kNaN});
  e_bad.insert(e_bad.end(), {kNaN, kInf, 0.0, -1.0, 1.0, 1.0});

  const LogLogFit skipped = fit_log_log(h_bad, e_bad, UnusablePoints::skip);
  EXPECT_NEAR(skipped.slope, 2.0, 1e-13);
  EXPECT_NEAR(skipped.intercept, std::log(2.0), 1e-12);
  EXPECT_EQ(skipped.points, 4);

  const LogLogFit invalid = fit_log_log(h_bad, e_bad, UnusablePoints::invalidate);
  EXPECT_TRUE(std::isnan(invalid.slope));
  EXPECT_TRUE(std::isnan(invalid.intercept));
  EXPECT_EQ(invalid.points, 4);
  // One bad point is enough; invalidate is the default.
  e[2] = 0.0;
  EXPECT_TRUE(std::isnan(fit_log_log(h, e).slope));
}

TEST(SlopeFit, UndeterminedFitsAreNaNAndMismatchesThrow) {
  const LogLogFit empty = fit_log_log(std::vector<double>{}, std::vector<double>{});
  EXPECT_TRUE(std::isnan(empty.slope));
  EXPECT_TRUE(std::isnan(empty.intercept));
  EXPECT_EQ(empty.points, 0);

  const LogLogFit one = fit_log_log(std::vector<double>{0.1}, std::vector<double>{1e-3});
  EXPECT_TRUE(std::isnan(one.slope));
  EXPECT_EQ(one.points, 1);
  // Two usable points out of three under skip: determined, the line through them.
  const LogLogFit two = fit_log_log(std::vector<double>{0.1, 0.2, 0.4}, std::vector<double>{1e-2, kNaN, 1.6e-1},
                                    UnusablePoints::skip);
  EXPECT_NEAR(two.slope, 2.0, 1e-13);
  EXPECT_EQ(two.points, 2);

  // All steps equal: no slope, even where the mean of the logs is off their value in the last bit.
  const LogLogFit flat = fit_log_log(std::vector<double>{0.1, 0.1, 0.1}, std::vector<double>{1e-3, 2e-3, 3e-3});
  EXPECT_TRUE(std::isnan(flat.slope));
  EXPECT_EQ(flat.points, 3);

  EXPECT_THROW(fit_log_log(std::vector<double>{1, 2}, std::vector<double>{1.0}), std::invalid_argument);
  EXPECT_THROW(fit_log_log(std::vector<double>{1}, std::vector<double>{1.0, 2.0}, UnusablePoints::skip), std::invalid_argument);
}

// An order in NFE is the negated slope against NFE: the fit against 1/NFE, up to the rounding of
// 1/NFE itself.
TEST(SlopeFit, OrderInNfeIsTheNegatedSlope) {
  const std::vector<double> nfe = {10, 20, 40, 80, 160};
  const std::vector<double> e = power_law(nfe, 3.0, -2.0);
  std::vector<double> inv;
  for (double n : nfe) inv.push_back(1.0 / n);
  const LogLogFit against_nfe = fit_log_log(nfe, e), against_inverse = fit_log_log(inv, e);
  EXPECT_NEAR(-against_nfe.slope, 2.0, 1e-13);
  EXPECT_NEAR(against_inverse.slope, -against_nfe.slope, 1e-13);
  EXPECT_NEAR(against_inverse.intercept, against_nfe.intercept, 1e-12);
}

}  // namespace
}  // namespace diffode
