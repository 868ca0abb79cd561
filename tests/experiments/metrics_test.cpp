// Sample-quality metrics: each against a closed form or an independent computation, the floors
// against what exact draws score, and the metrics' power to see a sampler that drops a mode.
#include "experiments/run/metrics.hpp"

#include <Eigen/Dense>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace diffode {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The mixture without component `drop`: the law of a sampler that never finds that mode.
GaussianMixture without_component(const GaussianMixture& mixture, Index drop) {
  const Index k = mixture.components(), d = mixture.dims();
  Eigen::ArrayXd weights(k - 1);
  Batch means(k - 1, d), variances(k - 1, d);
  for (Index i = 0, j = 0; i < k; ++i) {
    if (i == drop) continue;
    weights[j] = mixture.weights()[i];
    means.row(j) = mixture.means().row(i);
    variances.row(j) = mixture.variances().row(i);
    ++j;
  }
  return GaussianMixture(weights, means, variances);
}

Batch column(std::initializer_list<double> values) {
  Batch b(static_cast<Index>(values.size()), 1);
  Index i = 0;
  for (double v : values) b(i++, 0) = v;
  return b;
}

struct MeanSd {
  double mean, sd;
};
MeanSd mean_sd(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double s = 0.0;
  for (double x : v) s += (x - m) * (x - m);
  return {m, std::sqrt(s / static_cast<double>(v.size() - 1))};
}

TEST(Distances, RmsAndMaxOfRowDistances) {
  Batch a(3, 2), b(3, 2);
  a << 0, 0, 1, 1, 2, 2;
  b << 3, 4, 1, 1, 2, 3;  // row distances 5, 0, 1
  EXPECT_DOUBLE_EQ(rms_distance(a, b), std::sqrt((25.0 + 0.0 + 1.0) / 3.0));
  EXPECT_DOUBLE_EQ(max_distance(a, b), 5.0);
  b(1, 0) = kNaN;
  EXPECT_TRUE(std::isnan(max_distance(a, b)));
  EXPECT_TRUE(std::isnan(rms_distance(a, b)));
  EXPECT_THROW(rms_distance(a, Batch(2, 2)), std::invalid_argument);
  EXPECT_THROW(max_distance(a, Batch(3, 3)), std::invalid_argument);
}

TEST(Moments, SampleCovarianceIsUnbiased) {
  Batch x(4, 2);
  x << 1, 2, 3, 2, 5, 8, 7, 4;
  const Eigen::VectorXd m = sample_mean(x);
  EXPECT_DOUBLE_EQ(m[0], 4.0);
  EXPECT_DOUBLE_EQ(m[1], 4.0);
  const Eigen::MatrixXd c = sample_covariance(x);
  // deviations (-3,-2), (-1,-2), (1,4), (3,0); sums over 3 = n - 1
  EXPECT_DOUBLE_EQ(c(0, 0), 20.0 / 3.0);
  EXPECT_DOUBLE_EQ(c(1, 1), 24.0 / 3.0);
  EXPECT_DOUBLE_EQ(c(0, 1), 12.0 / 3.0);
  EXPECT_DOUBLE_EQ(c(1, 0), c(0, 1));
  EXPECT_THROW(sample_covariance(Batch(1, 2)), std::invalid_argument);
}

TEST(Frechet, DiagonalCovariancesHaveTheClosedForm) {
  // Commuting covariances: |m1 - m2|^2 + sum_i (sqrt a_i - sqrt b_i)^2.
  Eigen::VectorXd m1(3), m2(3), a(3), b(3);
  m1 << 0.0, 1.0, -2.0;
  m2 << 0.5, 1.0, 1.0;
  a << 1.0, 4.0, 0.25;
  b << 9.0, 1.0, 0.25;
  const double expected = (m1 - m2).squaredNorm() + (a.cwiseSqrt() - b.cwiseSqrt()).squaredNorm();
  const Eigen::MatrixXd c1 = a.asDiagonal(), c2 = b.asDiagonal();
  EXPECT_NEAR(frechet_distance(m1, c1, m2, c2), expected, 1e-12);
  EXPECT_NEAR(frechet_distance(m2, c2, m1, c1), expected, 1e-12);
  EXPECT_EQ(frechet_distance(m1, c1, m1, c1), 0.0);  // rounding below 0 is clamped
}

TEST(Frechet, NonCommuting2x2AgainstTheTraceFormula) {
  // In 2-D, tr((c1^{1/2} c2 c1^{1/2})^{1/2}) = sqrt(l1) + sqrt(l2) for l1, l2 the eigenvalues of
  // c1 c2, which is sqrt(tr(c1 c2) + 2 sqrt(det c1 det c2)): no square root of a matrix needed.
  Eigen::MatrixXd c1(2, 2), c2(2, 2);
  c1 << 2.0, 0.7, 0.7, 1.0;
  c2 << 0.5, -0.3, -0.3, 3.0;
  ASSERT_GT((c1 * c2 - c2 * c1).norm(), 0.1);  // they do not commute
  Eigen::VectorXd m1(2), m2(2);
  m1 << 1.0, -1.0;
  m2 << 0.0, 0.5;
  const double trace_root = std::sqrt((c1 * c2).trace() + 2.0 * std::sqrt(c1.determinant() * c2.determinant()));
  const double expected = (m1 - m2).squaredNorm() + c1.trace() + c2.trace() - 2.0 * trace_root;
  EXPECT_NEAR(frechet_distance(m1, c1, m2, c2), expected, 1e-12);
  EXPECT_NEAR(frechet_distance(m2, c2, m1, c1), expected, 1e-12);
}

TEST(Frechet, SixteenDimensionsAgainstTheEigenvaluesOfTheProduct) {
  // Independently: c1^{1/2} c2 c1^{1/2} is similar to c1 c2, so the trace of its root is the sum of
  // the square roots of c1 c2's eigenvalues, found by the general (non-symmetric) eigen-solver.
  const GaussianMixture mixture = GaussianMixture::random_isotropic(16, 10, 3);
  const Eigen::MatrixXd c1 = mixture.covariance();
  const Batch draws = mixture.sample(64, 11);
  const Eigen::MatrixXd c2 = sample_covariance(draws);
  const Eigen::VectorXcd l = Eigen::EigenSolver<Eigen::MatrixXd>(c1 * c2).eigenvalues();
  double trace_root = 0.0;
  for (Index i = 0; i < l.size(); ++i) trace_root += std::sqrt(l[i].real());
  const Eigen::VectorXd m1 = mixture.mean(), m2 = sample_mean(draws);
  const double expected = (m1 - m2).squaredNorm() + c1.trace() + c2.trace() - 2.0 * trace_root;
  EXPECT_NEAR(frechet_distance(m1, c1, m2, c2), expected, 1e-9 * c1.trace());
  EXPECT_THROW(frechet_distance(m1, c1, m2.head(3), c2), std::invalid_argument);
}

TEST(Energy, OneDimensionalPointSetsByHand) {
  // x = {0, 1, 3}, y = {5, 7}:
  //   E|X - Y|  = (5 + 7 + 4 + 6 + 2 + 4) / 6 = 14/3
  //   E|X - X'| = 2 (1 + 3 + 2) / (3 * 2) = 2,   E|Y - Y'| = 2 * 2 / 2 = 2
  //   energy    = 28/3 - 2 - 2 = 16/3.
  const Batch x = column({0.0, 1.0, 3.0}), y = column({5.0, 7.0});
  EXPECT_NEAR(energy_distance(x, y), 16.0 / 3.0, 1e-14);
  EXPECT_NEAR(energy_distance(y, x), 16.0 / 3.0, 1e-14);
  // The same points along a unit direction of the plane: distances, hence the energy, unchanged.
  const Batch x2 = x.replicate(1, 2).rowwise() * Eigen::Array2d(0.6, 0.8).transpose();
  const Batch y2 = y.replicate(1, 2).rowwise() * Eigen::Array2d(0.6, 0.8).transpose();
  EXPECT_NEAR(energy_distance(x2, y2), 16.0 / 3.0, 1e-13);
  EXPECT_THROW(energy_distance(x, column({1.0})), std::invalid_argument);
  EXPECT_THROW(energy_distance(x, x2), std::invalid_argument);
}

// Replicated null estimates: energy distances between independent exact draws of n samples.
std::vector<double> null_energies(const GaussianMixture& mixture, double alpha, double sigma, Index n, int replicas) {
  std::vector<double> e;
  for (int r = 0; r < replicas; ++r)
    e.push_back(energy_distance(mixture.sample_marginal(alpha, sigma, n, 100, 2 * r * n),
                                mixture.sample_marginal(alpha, sigma, n, 100, (2 * r + 1) * n)));
  return e;
}

class EnergyOnMixtures : public ::testing::TestWithParam<int> {
 protected:
  GaussianMixture mixture() const {
    return GetParam() == 0 ? GaussianMixture::ring() : GaussianMixture::random_isotropic(16, 10, 7);
  }
};

TEST_P(EnergyOnMixtures, UnbiasedForOneLawAndLargeForAMissingMode) {
  const GaussianMixture mix = mixture();
  const Index n = 1024;
  const int replicas = 12;
  const std::vector<double> null_values = null_energies(mix, 0.9, 0.3, n, replicas);
  const MeanSd null = mean_sd(null_values);
  // Unbiased: the replicas' mean is zero within a few of its standard errors.
  EXPECT_LT(std::abs(null.mean), 4.0 * null.sd / std::sqrt(static_cast<double>(replicas)));
  // A sampler that never visits the heaviest component (1/8 of the ring, 13% of the random
  // mixture). The energy distance grows as the square of the missing mass, so at this n it stands
  // a few times above the largest null replica (the null law is skewed: its sd says little).
  Index heaviest = 0;
  mix.weights().maxCoeff(&heaviest);
  const Batch missing = without_component(mix, heaviest).sample_marginal(0.9, 0.3, n, 200);
  const Batch exact = mix.sample_marginal(0.9, 0.3, n, 300);
  const double null_max = *std::max_element(null_values.begin(), null_values.end());
  EXPECT_GT(energy_distance(missing, exact), 2.0 * null_max);
}

INSTANTIATE_TEST_SUITE_P(RingAndRandom16, EnergyOnMixtures, ::testing::Values(0, 1),
                         [](const auto& info) { return std::string(info.param == 0 ? "ring2d" : "random16"); });

TEST(ExactLawFloors, CovarianceFloorIsTheRmsOfReplicatedErrors) {
  // The analytic sqrt(E||S - C||_F^2) against the mean squared error of many independent draws of
  // n samples; the tolerance is 4 standard errors of that mean.
  for (const GaussianMixture& mix : {GaussianMixture::ring(), GaussianMixture::random_isotropic(16, 10, 7)}) {
    const double alpha = 0.8, sigma = 0.5;
    const Index n = 64;
    const int replicas = 200;
    Eigen::MatrixXd cov = alpha * alpha * mix.covariance();
    cov.diagonal().array() += sigma * sigma;
    std::vector<double> squared;
    for (int r = 0; r < replicas; ++r)
      squared.push_back((sample_covariance(mix.sample_marginal(alpha, sigma, n, 5, r * n)) - cov).squaredNorm());
    const MeanSd s = mean_sd(squared);
    const double analytic = covariance_error_rms(mix, alpha, sigma, n);
    EXPECT_NEAR(analytic * analytic, s.mean, 4.0 * s.sd / std::sqrt(static_cast<double>(replicas)))
        << "dims " << mix.dims();
  }
}

TEST(ExactLawFloors, LawMomentsAndIndependentDraws) {
  const GaussianMixture mix = GaussianMixture::ring();
  const ExactLaw law = make_exact_law(mix, 0.5, 0.7, 512, 9);
  EXPECT_TRUE(law.mean.isApprox(0.5 * mix.mean()));
  Eigen::MatrixXd cov = 0.25 * mix.covariance();
  cov.diagonal().array() += 0.49;
  EXPECT_TRUE(law.covariance.isApprox(cov, 1e-14));
  EXPECT_TRUE(law.reference_samples.isApprox(mix.sample_marginal(0.5, 0.7, 512, 9)));
  EXPECT_DOUBLE_EQ(law.weak_mean_floor, std::sqrt(cov.trace() / 512.0));
  EXPECT_GT(law.frechet_floor, 0.0);
  EXPECT_GT(law.nll_standard_error, 0.0);
  // The floor draw is samples n .. 2n-1 of the same stream, independent of the reference.
  const Batch floor_draw = mix.sample_marginal(0.5, 0.7, 512, 9, 512);
  EXPECT_DOUBLE_EQ(law.energy_floor, energy_distance(floor_draw, law.reference_samples));
  EXPECT_DOUBLE_EQ(law.nll_exact,
                   -mix.log_prob(floor_draw, PerSample::Constant(512, 0.5), PerSample::Constant(512, 0.7)).mean());
  EXPECT_DOUBLE_EQ(law.frechet_floor,
                   frechet_distance(sample_mean(floor_draw), sample_covariance(floor_draw), law.mean, law.covariance));
  EXPECT_THROW(make_exact_law(mix, 0.5, 0.7, 1, 9), std::invalid_argument);
  EXPECT_THROW(make_exact_law(mix, kNaN, 0.7, 16, 9), std::invalid_argument);
}

class CompareToExact : public ::testing::TestWithParam<int> {};

TEST_P(CompareToExact, ExactDrawsScoreNearTheFloorsAndAMissingModeDoesNot) {
  const bool ring = GetParam() == 0;
  // Seed 9: a random mixture whose most concentrated mode carries 14% of the mass, so that the
  // nll's response to losing it (about 0.8 nats) stands well out of its noise at n = 2048.
  const GaussianMixture mix = ring ? GaussianMixture::ring() : GaussianMixture::random_isotropic(16, 10, 9);
  const double alpha = 1.0, sigma = 0.05;  // near the data, where modes are separated
  const Index n = 2048;
  const ExactLaw law = make_exact_law(mix, alpha, sigma, n, 21);
  // Two nll estimates over n samples each differ by about sqrt(2) of one's standard error.
  const double nll_noise = std::sqrt(2.0) * law.nll_standard_error;

  // A perfect sampler: exact draws from another stream.
  const SampleLawMetrics exact = compare_to_exact(mix, law, mix.sample_marginal(alpha, sigma, n, 22));
  EXPECT_NEAR(exact.nll, law.nll_exact, 4.0 * nll_noise);
  // Both floors are RMS values: the errors of one draw are of their size.
  EXPECT_LT(exact.weak_mean_error, 3.0 * law.weak_mean_floor);
  EXPECT_LT(exact.weak_cov_error, 3.0 * law.weak_cov_floor);
  EXPECT_LT(exact.frechet, 4.0 * law.frechet_floor);
  EXPECT_GT(exact.frechet, 0.25 * law.frechet_floor);
  EXPECT_LT(std::abs(exact.energy), 5.0 * std::abs(law.energy_floor) + 1e-3);

  // A sampler that misses the most concentrated mode, the one exact draws score best on (the
  // lowest mean -log p). The nll is a cross-entropy E_q[-log p]: it does not see a missing mode as
  // such (on the symmetric ring, losing a mode leaves it unchanged), only the loss of mass where p
  // is high, which raises it. The energy distance sees any missing mode.
  Index densest = 0;
  double best = kInf;
  for (Index k = 0; k < mix.components(); ++k) {
    const GaussianMixture only_k(Eigen::ArrayXd::Ones(1), mix.means().row(k), mix.variances().row(k));
    const double nll_k = -mix.log_prob(only_k.sample_marginal(alpha, sigma, 256, 40), PerSample::Constant(256, alpha),
                                       PerSample::Constant(256, sigma))
                              .mean();
    if (nll_k < best) {
      best = nll_k;
      densest = k;
    }
  }
  const Batch missing = without_component(mix, densest).sample_marginal(alpha, sigma, n, 22);
  const SampleLawMetrics dropped = compare_to_exact(mix, law, missing);
  EXPECT_GT(dropped.energy, 4.0 * (std::abs(law.energy_floor) + std::abs(exact.energy)));
  if (ring)
    EXPECT_NEAR(dropped.nll, law.nll_exact, 4.0 * nll_noise);
  else
    EXPECT_GT(dropped.nll, law.nll_exact + 4.0 * nll_noise);
  EXPECT_GT(dropped.weak_mean_error, 3.0 * law.weak_mean_floor);
  EXPECT_GT(dropped.frechet, exact.frechet);

  EXPECT_THROW(compare_to_exact(mix, law, Batch::Zero(4, mix.dims() + 1)), std::invalid_argument);
  EXPECT_THROW(compare_to_exact(GaussianMixture::random_isotropic(3, 2, 1), law, missing), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(RingAndRandom16, CompareToExact, ::testing::Values(0, 1),
                         [](const auto& info) { return std::string(info.param == 0 ? "ring2d" : "random16"); });

TEST(FitOrder, RecoversThePowerLawAndSkipsUnusablePoints) {
  const std::vector<double> nfe = {10, 20, 40, 80, 160};
  std::vector<double> error;
  for (double n : nfe) error.push_back(3.0 * std::pow(n, -2.0));
  const OrderFit fit = fit_order(nfe, error);
  EXPECT_NEAR(fit.order, 2.0, 1e-12);
  EXPECT_NEAR(fit.log_constant, std::log(3.0), 1e-12);
  EXPECT_EQ(fit.points, 5);

  // NaN, inf and zero errors, and a non-positive nfe, are left out; the rest still give slope 2.
  std::vector<double> nfe_bad = nfe, error_bad = error;
  nfe_bad.insert(nfe_bad.end(), {320, 640, 1280, 0, 5});
  error_bad.insert(error_bad.end(), {kNaN, kInf, 0.0, 1.0, -1.0});
  const OrderFit skipped = fit_order(nfe_bad, error_bad);
  EXPECT_NEAR(skipped.order, 2.0, 1e-12);
  EXPECT_EQ(skipped.points, 5);

  const OrderFit one = fit_order({10, 20}, {1e-3, kNaN});
  EXPECT_TRUE(std::isnan(one.order));
  EXPECT_EQ(one.points, 1);
  const OrderFit flat = fit_order({10, 10, 10}, {1e-3, 2e-3, 3e-3});
  EXPECT_TRUE(std::isnan(flat.order));
  EXPECT_EQ(flat.points, 3);
  EXPECT_THROW(fit_order({1, 2}, {1.0}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
