#include "experiments/run/metrics.hpp"

#include "core/slope_fit.hpp"

#include <Eigen/Dense>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace diffode {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_same_shape(const Batch& a, const Batch& b, const char* what) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    throw std::invalid_argument(
        fmt::format("{}: batches of shapes {}x{} and {}x{} differ", what, a.rows(), a.cols(), b.rows(), b.cols()));
  if (a.rows() == 0) throw std::invalid_argument(fmt::format("{}: empty batches", what));
}

// Euclidean distance of each row pair.
PerSample row_distances(const Batch& a, const Batch& b) { return (a - b).square().rowwise().sum().sqrt(); }

// sum_{j in [j0, j1)} |row - y_j|, with y stored column-major (n x D) so that, dimension by
// dimension, the squared differences to a run of rows are one contiguous, vectorised sweep: no
// per-pair temporary and no per-pair horizontal sum. `acc` is scratch of at least j1 - j0.
double sum_distances(const double* row, const Eigen::ArrayXXd& y_columns, Index j0, Index j1, Eigen::ArrayXd& acc) {
  const Index len = j1 - j0;
  if (len <= 0) return 0.0;
  auto squared = acc.head(len);
  squared = (y_columns.col(0).segment(j0, len) - row[0]).square();
  for (Index d = 1; d < y_columns.cols(); ++d) squared += (y_columns.col(d).segment(j0, len) - row[d]).square();
  return squared.sqrt().sum();
}

// Mean of |x_i - x_j| over the n (n - 1) ordered pairs i != j: twice the sum over i < j.
double mean_within_distance(const Batch& x, const Eigen::ArrayXXd& x_columns, Eigen::ArrayXd& acc) {
  const Index n = x.rows(), dims = x.cols();
  double total = 0.0;
  for (Index i = 0; i + 1 < n; ++i) total += sum_distances(x.data() + i * dims, x_columns, i + 1, n, acc);
  return 2.0 * total / (static_cast<double>(n) * static_cast<double>(n - 1));
}

}  // namespace

double rms_distance(const Batch& a, const Batch& b) {
  check_same_shape(a, b, "rms_distance");
  return std::sqrt(row_distances(a, b).square().mean());
}

double max_distance(const Batch& a, const Batch& b) {
  check_same_shape(a, b, "max_distance");
  const PerSample d = row_distances(a, b);
  double worst = 0.0;
  for (Index i = 0; i < d.size(); ++i) {
    if (std::isnan(d[i])) return kNaN;  // a diverged sample must not vanish into a max
    if (d[i] > worst) worst = d[i];
  }
  return worst;
}

Eigen::VectorXd sample_mean(const Batch& x) {
  if (x.rows() < 1) throw std::invalid_argument("sample_mean: empty batch");
  return x.colwise().mean().matrix().transpose();
}

Eigen::MatrixXd sample_covariance(const Batch& x) {
  if (x.rows() < 2) throw std::invalid_argument(fmt::format("sample_covariance: needs >= 2 samples, got {}", x.rows()));
  // Centred first: the raw second moment minus mean mean^T cancels badly far from the origin.
  const Eigen::MatrixXd centred = x.matrix().rowwise() - x.matrix().colwise().mean();
  Eigen::MatrixXd cov = centred.transpose() * centred;
  return cov / static_cast<double>(x.rows() - 1);
}

double energy_distance(const Batch& x, const Batch& y) {
  if (x.cols() != y.cols())
    throw std::invalid_argument(fmt::format("energy_distance: samples of {} and {} dimensions", x.cols(), y.cols()));
  if (x.rows() < 2 || y.rows() < 2 || x.cols() < 1)
    throw std::invalid_argument(fmt::format("energy_distance: needs >= 2 samples of >= 1 dimension in each, got {}x{} and {}x{}",
                                            x.rows(), x.cols(), y.rows(), y.cols()));
  const Index nx = x.rows(), ny = y.rows(), dims = x.cols();
  // Column-major copies (O(n D) memory, made once) for the contiguous sweeps of sum_distances.
  const Eigen::ArrayXXd x_columns = x, y_columns = y;
  Eigen::ArrayXd acc(std::max(nx, ny));
  double cross = 0.0;
  for (Index i = 0; i < nx; ++i) cross += sum_distances(x.data() + i * dims, y_columns, 0, ny, acc);
  cross /= static_cast<double>(nx) * static_cast<double>(ny);
  return 2.0 * cross - mean_within_distance(x, x_columns, acc) - mean_within_distance(y, y_columns, acc);
}

double covariance_error_rms(const GaussianMixture& mixture, double alpha, double sigma, Index n) {
  if (n < 2) throw std::invalid_argument(fmt::format("covariance_error_rms: needs n >= 2, got {}", n));
  // For the unbiased sample covariance S of n i.i.d. draws (e.g. Kendall & Stuart, "The Advanced
  // Theory of Statistics", vol. 1, the sampling variance of a product moment):
  //     Var(S_ij) = [mu22_ij - (n-2)/(n-1) C_ij^2] / n + C_ii C_jj / (n (n-1)),
  // mu22_ij = E[(x_i - m_i)^2 (x_j - m_j)^2]. Summed over (i, j), E||S - C||_F^2 is
  //     [sum_ij mu22_ij - (n-2)/(n-1) ||C||_F^2] / n + tr(C)^2 / (n (n-1)).
  // The marginal is a mixture of diagonal Gaussians with centred means c_k = alpha (mu_k - mean_0)
  // and variances u_k = alpha^2 s_k^2 + sigma^2; within a component the coordinates are
  // independent, so with a_ki = c_ki^2 + u_ki (the second moment about the mixture mean)
  //     mu22_ij = sum_k w_k a_ki a_kj (i != j),  mu22_ii = sum_k w_k (c^4 + 6 c^2 u + 3 u^2)_ki,
  // and sum_ij mu22_ij = sum_k w_k [(sum_i a_ki)^2 - sum_i a_ki^2 + sum_i (c^4 + 6 c^2 u + 3 u^2)_ki].
  // This is the expectation itself, where one further draw would give a noisy realisation of it.
  const Eigen::VectorXd mean0 = mixture.mean();
  const Index kk = mixture.components(), dims = mixture.dims();
  double fourth = 0.0;
  for (Index k = 0; k < kk; ++k) {
    double sum_a = 0.0, sum_a2 = 0.0, sum_diag = 0.0;
    for (Index i = 0; i < dims; ++i) {
      const double c = alpha * (mixture.means()(k, i) - mean0[i]);
      const double u = alpha * alpha * mixture.variances()(k, i) + sigma * sigma;
      const double c2 = c * c, a = c2 + u;
      sum_a += a;
      sum_a2 += a * a;
      sum_diag += c2 * c2 + 6.0 * c2 * u + 3.0 * u * u;
    }
    fourth += mixture.weights()[k] * (sum_a * sum_a - sum_a2 + sum_diag);
  }
  Eigen::MatrixXd cov = alpha * alpha * mixture.covariance();
  cov.diagonal().array() += sigma * sigma;
  const double nd = static_cast<double>(n);
  const double trace = cov.trace();
  const double expected = (fourth - (nd - 2.0) / (nd - 1.0) * cov.squaredNorm()) / nd + trace * trace / (nd * (nd - 1.0));
  return std::sqrt(expected < 0.0 ? 0.0 : expected);
}

ExactLaw make_exact_law(const GaussianMixture& mixture, double alpha, double sigma, Index n, std::uint64_t seed) {
  if (n < 2) throw std::invalid_argument(fmt::format("make_exact_law: needs n >= 2 samples, got {}", n));
  if (!std::isfinite(alpha) || !std::isfinite(sigma))
    throw std::invalid_argument(fmt::format("make_exact_law: non-finite level alpha = {}, sigma = {}", alpha, sigma));
  ExactLaw law;
  law.alpha = alpha;
  law.sigma = sigma;
  law.mean = alpha * mixture.mean();
  law.covariance = alpha * alpha * mixture.covariance();
  law.covariance.diagonal().array() += sigma * sigma;
  // Samples 0 .. n-1 of stream `seed` are the reference, n .. 2n-1 the floor draw: counter-based
  // draws, so the two are independent and each reproducible on its own.
  law.reference_samples = mixture.sample_marginal(alpha, sigma, n, seed, 0);
  const Batch floor_draw = mixture.sample_marginal(alpha, sigma, n, seed, n);

  const PerSample neg_log_p =
      -mixture.log_prob(floor_draw, PerSample::Constant(n, alpha), PerSample::Constant(n, sigma));
  law.nll_exact = neg_log_p.mean();
  law.nll_standard_error =
      std::sqrt((neg_log_p - law.nll_exact).square().sum() / static_cast<double>(n - 1) / static_cast<double>(n));
  law.frechet_floor = frechet_distance(sample_mean(floor_draw), sample_covariance(floor_draw), law.mean, law.covariance);
  law.energy_floor = energy_distance(floor_draw, law.reference_samples);
  // E|mean_hat - mean|^2 = tr(C) / n exactly, for any law with covariance C.
  law.weak_mean_floor = std::sqrt(law.covariance.trace() / static_cast<double>(n));
  law.weak_cov_floor = covariance_error_rms(mixture, alpha, sigma, n);
  return law;
}

SampleLawMetrics compare_to_exact(const GaussianMixture& mixture, const ExactLaw& law, const Batch& samples) {
  const Index n = samples.rows(), dims = law.mean.size();
  if (mixture.dims() != dims)
    throw std::invalid_argument(
        fmt::format("compare_to_exact: the mixture has {} dimensions, the exact law {}", mixture.dims(), dims));
  if (samples.cols() != dims)
    throw std::invalid_argument(fmt::format("compare_to_exact: samples have {} columns, the law {} dimensions", samples.cols(), dims));
  if (n < 2) throw std::invalid_argument(fmt::format("compare_to_exact: needs >= 2 samples, got {}", n));
  SampleLawMetrics m;
  m.nll = -mixture.log_prob(samples, PerSample::Constant(n, law.alpha), PerSample::Constant(n, law.sigma)).mean();
  const Eigen::VectorXd mean_hat = sample_mean(samples);
  const Eigen::MatrixXd cov_hat = sample_covariance(samples);
  m.frechet = frechet_distance(mean_hat, cov_hat, law.mean, law.covariance);
  m.energy = energy_distance(samples, law.reference_samples);
  m.weak_mean_error = (mean_hat - law.mean).norm();
  m.weak_cov_error = (cov_hat - law.covariance).norm();
  return m;
}

OrderFit fit_order(const std::vector<double>& nfe, const std::vector<double>& error) {
  if (nfe.size() != error.size())
    throw std::invalid_argument(fmt::format("fit_order: {} nfe values but {} errors", nfe.size(), error.size()));
  // Against NFE, then negated: bit for bit the fit against log(1/NFE) (core/slope_fit.hpp). An
  // undetermined fit keeps its NaN as it is, sign bit clear, as stored results always had it.
  const LogLogFit fit = fit_log_log(nfe, error, UnusablePoints::skip);
  return {std::isnan(fit.slope) ? fit.slope : -fit.slope, fit.intercept, fit.points};
}

}  // namespace diffode
