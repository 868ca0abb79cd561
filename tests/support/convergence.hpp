// Fitting empirical orders of convergence: the least-squares slope of log(error) against log(h),
// by the one fitter every reported order comes from (core/slope_fit.hpp).
#pragma once

#include "core/slope_fit.hpp"
#include "problems/order_cases.hpp"

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace diffode::testing {

// Slope of the least-squares line through (log |h_i|, log e_i): |h| so that backward runs (h < 0)
// fit alike. NaN when an error is 0 or not finite, so that the order assertion fails on it.
inline double fitted_order(const std::vector<double>& h, const std::vector<double>& error) {
  if (h.size() != error.size() || h.size() < 2) throw std::invalid_argument("fitted_order: need >= 2 matched points");
  std::vector<double> step(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) step[i] = std::abs(h[i]);
  return fit_log_log(step, error, UnusablePoints::invalidate).slope;
}

// n+1 equally spaced points from t0 to t1 (either direction).
using order_cases::uniform_grid;

}  // namespace diffode::testing
