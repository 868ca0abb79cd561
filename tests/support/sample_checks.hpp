// Distribution checks for stochastic samplers against a law with known moments and exact draws:
// z-scores of the sample mean and covariance (Monte-Carlo standard errors estimated from the
// samples) and two-sample Kolmogorov-Smirnov tests on 1-D projections.
#pragma once

#include "core/state.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <vector>

namespace diffode::testing {

struct MomentZ {
  double mean = 0;        // max over coordinates of |mean_i - mu_i| / se
  double covariance = 0;  // max over entries i <= j of |C_ij - Sigma_ij| / se
};

// C_ij = mean_n (x_ni - mu_i)(x_nj - mu_j) around the exact mean, so that its standard error is
// sqrt(Var[(x_i - mu_i)(x_j - mu_j)] / M), estimated from the same samples.
inline MomentZ moment_z_scores(const Batch& x, const Eigen::VectorXd& mu, const Eigen::MatrixXd& sigma) {
  const Index m = x.rows(), d = x.cols();
  MomentZ z;
  const Eigen::ArrayXXd c = x.matrix().rowwise() - mu.transpose();  // centred, M x D
  for (Index i = 0; i < d; ++i) {
    const double se = std::sqrt(sigma(i, i) / static_cast<double>(m));
    z.mean = std::max(z.mean, std::abs(c.col(i).mean()) / se);
    for (Index j = i; j < d; ++j) {
      const Eigen::ArrayXd prod = c.col(i) * c.col(j);
      const double mean = prod.mean();
      const double var = (prod - mean).square().sum() / static_cast<double>(m - 1);
      z.covariance = std::max(z.covariance, std::abs(mean - sigma(i, j)) / std::sqrt(var / static_cast<double>(m)));
    }
  }
  return z;
}

// Asymptotic p-value of the two-sample KS statistic (Numerical Recipes' Q_KS with the
// Stephens small-sample correction).
inline double ks_two_sample_p(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::size_t i = 0, j = 0;
  double dmax = 0;
  while (i < a.size() && j < b.size()) {
    const double v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= v) ++i;
    while (j < b.size() && b[j] <= v) ++j;
    dmax = std::max(dmax, std::abs(static_cast<double>(i) / a.size() - static_cast<double>(j) / b.size()));
  }
  const double ne = static_cast<double>(a.size()) * b.size() / (a.size() + b.size());
  const double lambda = (std::sqrt(ne) + 0.12 + 0.11 / std::sqrt(ne)) * dmax;
  if (lambda < 0.2) return 1.0;
  double q = 0, sign = 1;
  for (int k = 1; k <= 100; ++k, sign = -sign) q += 2.0 * sign * std::exp(-2.0 * k * k * lambda * lambda);
  return std::clamp(q, 0.0, 1.0);
}

// The smallest KS p-value over the coordinate axes and `random_directions` fixed random unit
// directions, samples x against exact draws y.
inline double min_projection_ks_p(const Batch& x, const Batch& y, int random_directions = 4) {
  const Index d = x.cols();
  std::vector<Eigen::VectorXd> dirs;
  for (Index i = 0; i < d; ++i) dirs.push_back(Eigen::VectorXd::Unit(d, i));
  std::srand(12345);  // fixed directions: the test must be reproducible
  for (int k = 0; k < random_directions; ++k) dirs.push_back(Eigen::VectorXd::Random(d).normalized());
  double p_min = 1.0;
  for (const auto& u : dirs) {
    const Eigen::VectorXd px = x.matrix() * u, py = y.matrix() * u;
    p_min = std::min(p_min, ks_two_sample_p(std::vector<double>(px.data(), px.data() + px.size()),
                                            std::vector<double>(py.data(), py.data() + py.size())));
  }
  return p_min;
}

}  // namespace diffode::testing
