// Empirical orders of convergence: the least-squares line through (log x_i, log y_i), with x a step
// size (or tolerance, or NFE) and y an error. Every order this project reports or asserts comes
// from here: the convergence tests, the `orders` table and the sweep's fitted orders.
//
// The sums are centred: log x and log y are reduced by their means before any product is formed,
// so the slope is sxy / sxx of the deviations. The textbook form (n sxy - sx sy) / (n sxx - sx^2)
// subtracts two nearly equal numbers when the log x are large beside their spread (step sizes near
// 1e-8 varying by a few percent): it loses about 2 log10(|mean log x| / spread) digits, the
// centred form only about log10 of that ratio.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode {

// log y = intercept + slope log x. slope and intercept are NaN when the fit is undetermined: fewer
// than 2 usable points, all usable x equal, or (UnusablePoints::invalidate) any point unusable.
struct LogLogFit {
  double slope = std::numeric_limits<double>::quiet_NaN();
  double intercept = std::numeric_limits<double>::quiet_NaN();  // log y at x = 1
  int points = 0;                                               // the usable points
};

// A point is usable when x and y are both finite and > 0: an error of 0 (exact to the last bit) or
// a diverged run carries no slope information. `skip` fits the usable points alone (a sweep where
// some runs diverged); `invalidate` makes the whole fit NaN if any point is unusable (a convergence
// test, where such a point is itself a failure and must not be fitted around).
enum class UnusablePoints { skip, invalidate };

// Throws std::invalid_argument when x and y differ in length. For an order in NFE, fit against the
// NFE and negate the slope: negation is exact in floating point, and the centred sums are odd in
// log x, so that is bit for bit the fit against log(1/NFE) (and the intercept is the same).
inline LogLogFit fit_log_log(std::span<const double> x, std::span<const double> y,
                             UnusablePoints unusable = UnusablePoints::invalidate) {
  if (x.size() != y.size())
    throw std::invalid_argument("fit_log_log: " + std::to_string(x.size()) + " abscissae but " + std::to_string(y.size()) +
                                " ordinates");
  std::vector<double> log_x, log_y;
  log_x.reserve(x.size());
  log_y.reserve(y.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isfinite(x[i]) && x[i] > 0.0 && std::isfinite(y[i]) && y[i] > 0.0) {
      log_x.push_back(std::log(x[i]));
      log_y.push_back(std::log(y[i]));
    }
  }
  LogLogFit fit;
  fit.points = static_cast<int>(log_x.size());
  if (unusable == UnusablePoints::invalidate && log_x.size() != x.size()) return fit;
  if (log_x.size() < 2) return fit;
  // Exact equality, not sxx == 0: the mean of equal values can differ from them in the last bit,
  // which would leave a tiny sxx and a meaningless slope.
  bool all_equal = true;
  for (double v : log_x) all_equal = all_equal && v == log_x[0];
  if (all_equal) return fit;
  const double count = static_cast<double>(log_x.size());
  double mean_x = 0.0, mean_y = 0.0;
  for (std::size_t i = 0; i < log_x.size(); ++i) {
    mean_x += log_x[i];
    mean_y += log_y[i];
  }
  mean_x /= count;
  mean_y /= count;
  double sxx = 0.0, sxy = 0.0;
  for (std::size_t i = 0; i < log_x.size(); ++i) {
    const double dx = log_x[i] - mean_x;
    sxx += dx * dx;
    sxy += dx * (log_y[i] - mean_y);
  }
  fit.slope = sxy / sxx;
  fit.intercept = mean_y - fit.slope * mean_x;
  return fit;
}

}  // namespace diffode
