// Does a batch of samples follow a known law? The checks the stochastic-sampler tests share:
//   - mean: each coordinate of the sample mean against the exact mean, in standard errors
//     sqrt(Sigma_dd / N) of the exact covariance;
//   - covariance: each entry of the sample covariance against the exact one, in standard errors
//     estimated from the samples' own fourth moments (sd of (x_i - m_i)(x_j - m_j) over sqrt N);
//   - two-sample Kolmogorov-Smirnov on 1-D projections (the axes and fixed random directions)
//     against independent exact draws, at a stated family-wise level (Bonferroni over projections).
// These are deterministic given the seeds; the levels say how unlikely a correct sampler is to fail.
#pragma once

#include "core/state.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace diffode::testing {

struct LawReport {
  double mean_z = 0;       // max |mean error| / standard error over coordinates
  double covariance_z = 0; // max |covariance error| / standard error over entries
  double ks = 0;           // max two-sample KS statistic over projections
  double ks_critical = 0;  // its critical value at the family-wise level
};

// Two-sample KS statistic sup |F_a - F_b| (both sorted in place).
inline double ks_two_sample(std::vector<double>& a, std::vector<double>& b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double na = static_cast<double>(a.size()), nb = static_cast<double>(b.size());
  std::size_t i = 0, j = 0;
  double d = 0;
  while (i < a.size() && j < b.size()) {
    const double v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= v) ++i;
    while (j < b.size() && b[j] <= v) ++j;
    d = std::max(d, std::abs(i / na - j / nb));
  }
  return d;
}

// Asymptotic critical value of the two-sample KS statistic at level alpha (Smirnov).
inline double ks_two_sample_critical(std::size_t na, std::size_t nb, double alpha) {
  const double n = static_cast<double>(na), m = static_cast<double>(nb);
  return std::sqrt(-0.5 * std::log(alpha / 2)) * std::sqrt((n + m) / (n * m));
}

// `samples` (N x D) against the law with `mean` and `covariance`, and against `exact` draws from it;
// `extra_directions` random unit projections beside the D axes, KS at family-wise level `alpha`.
inline LawReport compare_law(const Batch& samples, const Eigen::VectorXd& mean, const Eigen::MatrixXd& covariance,
                             const Batch& exact, int extra_directions = 8, double alpha = 1e-3) {
  const Index n = samples.rows(), dims = samples.cols();
  LawReport r;
  const Eigen::RowVectorXd m = samples.colwise().mean().matrix();
  for (Index i = 0; i < dims; ++i)
    r.mean_z = std::max(r.mean_z, std::abs(m[i] - mean[i]) / std::sqrt(covariance(i, i) / n));
  const Eigen::ArrayXXd centred = (samples.matrix().rowwise() - m).array();
  for (Index i = 0; i < dims; ++i)
    for (Index j = 0; j <= i; ++j) {
      const Eigen::ArrayXd y = centred.col(i) * centred.col(j);
      const double c = y.sum() / (n - 1);
      const double se = std::sqrt((y - y.mean()).square().sum() / (n - 1) / n);
      r.covariance_z = std::max(r.covariance_z, std::abs(c - covariance(i, j)) / se);
    }
  // Projections: the axes, then fixed pseudo-random unit directions.
  std::vector<Eigen::VectorXd> directions;
  for (Index i = 0; i < dims; ++i) directions.push_back(Eigen::VectorXd::Unit(dims, i));
  std::mt19937_64 rng(12345);
  std::normal_distribution<double> normal;
  for (int k = 0; k < extra_directions; ++k) {
    Eigen::VectorXd u(dims);
    for (Index i = 0; i < dims; ++i) u[i] = normal(rng);
    directions.push_back(u.normalized());
  }
  for (const auto& u : directions) {
    const Eigen::VectorXd pa = samples.matrix() * u, pb = exact.matrix() * u;
    std::vector<double> a(pa.data(), pa.data() + pa.size()), b(pb.data(), pb.data() + pb.size());
    r.ks = std::max(r.ks, ks_two_sample(a, b));
  }
  r.ks_critical = ks_two_sample_critical(samples.rows(), exact.rows(), alpha / static_cast<double>(directions.size()));
  return r;
}

}  // namespace diffode::testing
