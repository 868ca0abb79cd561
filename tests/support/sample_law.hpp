// Does a batch of samples follow a known law? The checks the stochastic-sampler tests share:
//   - mean: each coordinate of the sample mean against the exact mean, in standard errors
//     sqrt(Sigma_dd / N) of the exact covariance;
//   - covariance: each entry against the exact one, in standard errors estimated from the samples'
//     own fourth moments (sd of (x_i - m_i)(x_j - m_j) over sqrt N);
//   - two-sample Kolmogorov-Smirnov on 1-D projections (the axes and fixed random directions)
//     against independent exact draws: as a statistic with its critical value at a family-wise
//     level (Bonferroni over projections), or as the smallest p-value.
// Deterministic given the seeds; the levels say how unlikely a correct sampler is to fail.
// A law test passes a sampler's samples AND fails a control, samples of a deliberately wrong law
// (expect_law_with_failing_control): checks too weak to see anything would pass the samples too.
#pragma once

#include "core/state.hpp"

#include <Eigen/Dense>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace diffode::testing {

// Two-sample KS statistic sup |F_a - F_b|.
inline double ks_two_sample(std::vector<double> a, std::vector<double> b) {
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

// Asymptotic p-value of the two-sample KS statistic (Numerical Recipes' Q_KS with Stephens'
// small-sample correction).
inline double ks_two_sample_p(const std::vector<double>& a, const std::vector<double>& b) {
  const double d = ks_two_sample(a, b);
  const double ne = static_cast<double>(a.size()) * b.size() / (a.size() + b.size());
  const double lambda = (std::sqrt(ne) + 0.12 + 0.11 / std::sqrt(ne)) * d;
  if (lambda < 0.2) return 1.0;
  double q = 0, sign = 1;
  for (int k = 1; k <= 100; ++k, sign = -sign) q += 2.0 * sign * std::exp(-2.0 * k * k * lambda * lambda);
  return std::clamp(q, 0.0, 1.0);
}

// The D axes, then `extra` fixed pseudo-random unit directions.
inline std::vector<Eigen::VectorXd> projection_directions(Index dims, int extra) {
  std::vector<Eigen::VectorXd> directions;
  for (Index i = 0; i < dims; ++i) directions.push_back(Eigen::VectorXd::Unit(dims, i));
  std::mt19937_64 rng(12345);
  std::normal_distribution<double> normal;
  for (int k = 0; k < extra; ++k) {
    Eigen::VectorXd u(dims);
    for (Index i = 0; i < dims; ++i) u[i] = normal(rng);
    directions.push_back(u.normalized());
  }
  return directions;
}

inline std::vector<double> project(const Batch& x, const Eigen::VectorXd& u) {
  const Eigen::VectorXd p = x.matrix() * u;
  return {p.data(), p.data() + p.size()};
}

struct MomentZ {
  double mean = 0;        // max over coordinates of |mean_i - mu_i| / se
  double covariance = 0;  // max over entries i <= j of |C_ij - Sigma_ij| / se
};

// The covariance is taken around the exact mean, so that its standard error is
// sqrt(Var[(x_i - mu_i)(x_j - mu_j)] / M), estimated from the same samples.
inline MomentZ moment_z_scores(const Batch& x, const Eigen::VectorXd& mu, const Eigen::MatrixXd& sigma) {
  const Index m = x.rows(), d = x.cols();
  MomentZ z;
  const Eigen::ArrayXXd c = x.matrix().rowwise() - mu.transpose();
  for (Index i = 0; i < d; ++i) {
    z.mean = std::max(z.mean, std::abs(c.col(i).mean()) / std::sqrt(sigma(i, i) / static_cast<double>(m)));
    for (Index j = i; j < d; ++j) {
      const Eigen::ArrayXd prod = c.col(i) * c.col(j);
      const double mean = prod.mean();
      const double var = (prod - mean).square().sum() / static_cast<double>(m - 1);
      z.covariance = std::max(z.covariance, std::abs(mean - sigma(i, j)) / std::sqrt(var / static_cast<double>(m)));
    }
  }
  return z;
}

// The smallest KS p-value over the axes and `random_directions` fixed directions, x against exact draws y.
inline double min_projection_ks_p(const Batch& x, const Batch& y, int random_directions = 4) {
  double p_min = 1.0;
  for (const auto& u : projection_directions(x.cols(), random_directions))
    p_min = std::min(p_min, ks_two_sample_p(project(x, u), project(y, u)));
  return p_min;
}

struct LawReport {
  double mean_z = 0;       // max |mean error| / standard error over coordinates
  double covariance_z = 0; // max |covariance error| / standard error over entries
  double ks = 0;           // max two-sample KS statistic over projections
  double ks_critical = 0;  // its critical value at the family-wise level
};

// `samples` (N x D) against the law with `mean` and `covariance`, and against `exact` draws from it;
// `extra_directions` random unit projections beside the D axes, KS at family-wise level `alpha`.
inline LawReport compare_law(const Batch& samples, const Eigen::VectorXd& mean, const Eigen::MatrixXd& covariance,
                             const Batch& exact, int extra_directions = 8, double alpha = 1e-3) {
  LawReport r;
  const MomentZ z = moment_z_scores(samples, mean, covariance);
  r.mean_z = z.mean;
  r.covariance_z = z.covariance;
  const auto directions = projection_directions(samples.cols(), extra_directions);
  for (const auto& u : directions) r.ks = std::max(r.ks, ks_two_sample(project(samples, u), project(exact, u)));
  r.ks_critical = ks_two_sample_critical(samples.rows(), exact.rows(), alpha / static_cast<double>(directions.size()));
  return r;
}

// One law check: samples against the exact law's mean and covariance (moment z-scores) and against
// independent exact draws (KS on the axes and `extra_directions` fixed random projections). The KS
// part either compares the largest statistic with its critical value at family-wise level
// `ks_alpha` (compare_law), or, with ks_min_p > 0, asks every projection's p-value to exceed
// ks_min_p (min_projection_ks_p). The verdict carries the statistics either way.
struct LawCheck {
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;
  Batch exact;
  double mean_z = 4.5;        // every coordinate's mean within this many standard errors
  double covariance_z = 4.5;  // every covariance entry within this many (estimated) standard errors
  int extra_directions = 8;
  double ks_alpha = 1e-3;
  double ks_min_p = 0;

  ::testing::AssertionResult operator()(const Batch& x) const {
    char text[160];
    bool pass = false;
    if (ks_min_p > 0) {
      const MomentZ z = moment_z_scores(x, mean, covariance);
      const double p = min_projection_ks_p(x, exact, extra_directions);
      pass = z.mean < mean_z && z.covariance < covariance_z && p > ks_min_p;
      std::snprintf(text, sizeof text, "mean %.2f SE, covariance %.2f SE (limits %.1f, %.1f), min KS p %.3g (limit %.1g)", z.mean,
                    z.covariance, mean_z, covariance_z, p, ks_min_p);
    } else {
      const LawReport r = compare_law(x, mean, covariance, exact, extra_directions, ks_alpha);
      pass = r.mean_z < mean_z && r.covariance_z < covariance_z && r.ks < r.ks_critical;
      std::snprintf(text, sizeof text, "mean %.2f SE, covariance %.2f SE (limits %.1f, %.1f), KS %.4f (critical %.4f)", r.mean_z,
                    r.covariance_z, mean_z, covariance_z, r.ks, r.ks_critical);
    }
    return (pass ? ::testing::AssertionSuccess() : ::testing::AssertionFailure()) << text;
  }
};

// The sampler's `samples` pass `check` and the `control` (the same sampler made wrong on purpose,
// e.g. with too little noise, or samples of another law) fails the very same check: without the
// second half a check that cannot fail would pass unnoticed. Prints both verdicts under `label`.
inline void expect_law_with_failing_control(const LawCheck& check, const Batch& samples, const Batch& control,
                                            std::string_view label) {
  const ::testing::AssertionResult real = check(samples), wrong = check(control);
  std::printf("  %.*s\n    samples: %s\n    control: %s\n", static_cast<int>(label.size()), label.data(), real.message(),
              wrong.message());
  EXPECT_TRUE(real) << label << ": the samples fail the law check";
  EXPECT_FALSE(wrong) << label << ": the control passes the law check, so the check cannot tell a wrong law";
}

}  // namespace diffode::testing
