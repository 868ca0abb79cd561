// Fitting empirical orders of convergence: the least-squares slope of log(error) against log(h).
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace diffode::testing {

// Slope of the least-squares line through (log h_i, log e_i).
inline double fitted_order(const std::vector<double>& h, const std::vector<double>& error) {
  if (h.size() != error.size() || h.size() < 2) throw std::invalid_argument("fitted_order: need >= 2 matched points");
  const double n = static_cast<double>(h.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const double lx = std::log(std::abs(h[i])), ly = std::log(error[i]);
    sx += lx; sy += ly; sxx += lx * lx; sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

// n+1 equally spaced points from t0 to t1 (either direction).
inline std::vector<double> uniform_grid(double t0, double t1, int n) {
  std::vector<double> g(n + 1);
  for (int i = 0; i <= n; ++i) g[i] = t0 + (t1 - t0) * i / n;
  g[n] = t1;
  return g;
}

}  // namespace diffode::testing
