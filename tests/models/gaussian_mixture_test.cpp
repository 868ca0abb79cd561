// The exact Gaussian mixture against independent routes to the same numbers: finite differences of
// its own log-density (score), of its score (divergence, Jacobian-vector products), Tweedie's
// formula (denoiser), quadrature (normalisation), and Monte-Carlo moments (sampling); and the
// predictor conversions against values built from known (x0, eps).
#include "models/gaussian_mixture.hpp"
#include "models/predictor.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace diffode {
namespace {

struct Level {
  double alpha, sigma;
};

// From the data law (sigma tiny) to pure noise: VP near t = 0 and near T, VE at large sigma.
const std::vector<Level> kLevels = {{1.0, 1e-4}, {1.0, 0.3}, {0.7, 0.7}, {0.05, 1.0}, {1e-4, 1.0}, {1.0, 100.0}};

struct Named {
  std::string name;
  GaussianMixture mixture;
};

std::vector<Named> standard_mixtures() {
  return {{"ring", GaussianMixture::ring()},
          {"isotropic16", GaussianMixture::random_isotropic(16, 10, 7)},
          {"diagonal64", GaussianMixture::random_diagonal(64, 4, 11)}};
}

PerSample constant(Index n, double value) { return PerSample::Constant(n, value); }

// Smallest and largest per-dimension variance of p_t.
double min_variance(const GaussianMixture& m, Level l) { return l.alpha * l.alpha * m.variances().minCoeff() + l.sigma * l.sigma; }
double max_variance(const GaussianMixture& m, Level l) { return l.alpha * l.alpha * m.variances().maxCoeff() + l.sigma * l.sigma; }

// Points where p_t has mass, plus points from a wider law (between and beyond the modes).
Batch probe_points(const GaussianMixture& m, Level l) {
  const Batch typical = m.sample_marginal(l.alpha, l.sigma, 5, 42);
  const Batch wide = m.sample_marginal(l.alpha, 3.0 * l.sigma + 0.5 * l.alpha, 3, 43);
  Batch x(typical.rows() + wide.rows(), m.dims());
  x << typical, wide;
  return x;
}

std::string where(const Named& m, Level l) {
  return m.name + " at alpha = " + std::to_string(l.alpha) + ", sigma = " + std::to_string(l.sigma);
}

TEST(GaussianMixture, ScoreMatchesFiniteDifferencesOfLogDensity) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l);
      const Index n = x.rows();
      const PerSample a = constant(n, l.alpha), s = constant(n, l.sigma);
      Batch score;
      m.score(x, a, s, score);
      // Step 1e-4 of the narrowest standard deviation: truncation ~1e-8 relative, rounding far below.
      const double h = 1e-4 * std::sqrt(min_variance(m, l));
      Batch fd(n, m.dims());
      for (Index d = 0; d < m.dims(); ++d) {
        Batch plus = x, minus = x;
        plus.col(d) += h;
        minus.col(d) -= h;
        fd.col(d) = (m.log_prob(plus, a, s) - m.log_prob(minus, a, s)) / (2.0 * h);
      }
      for (Index i = 0; i < n; ++i) {
        const double scale = std::max(score.row(i).abs().maxCoeff(), 1.0 / std::sqrt(max_variance(m, l)));
        EXPECT_LE((fd.row(i) - score.row(i)).abs().maxCoeff(), 1e-6 * scale) << where(named, l) << ", sample " << i;
      }
    }
  }
}

TEST(GaussianMixture, DenoiserMatchesTweedie) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l);
      const Index n = x.rows();
      const PerSample a = constant(n, l.alpha), s = constant(n, l.sigma);
      Batch score, denoised;
      m.evaluate(x, a, s, {.score = &score, .denoised = &denoised});
      const Batch tweedie = (x + l.sigma * l.sigma * score) / l.alpha;
      for (Index i = 0; i < n; ++i) {
        // Tweedie's formula itself loses (|x| + sigma^2 |s|) / alpha to rounding: that is the scale.
        const double rounding = (x.row(i).abs().maxCoeff() + l.sigma * l.sigma * score.row(i).abs().maxCoeff()) / l.alpha;
        EXPECT_LE((denoised.row(i) - tweedie.row(i)).abs().maxCoeff(), 1e-13 * rounding + 1e-13)
            << where(named, l) << ", sample " << i;
      }
    }
  }
}

TEST(GaussianMixture, DenoiserIsIdentityNearAModeAtTinyNoise) {
  const auto m = GaussianMixture::ring();
  const Index n = 16;
  // Points within half a standard deviation of mode k = i mod 8.
  Batch x = m.sample(n, 5);
  for (Index i = 0; i < n; ++i) x.row(i) = m.means().row(i % 8) + 0.5 * (x.row(i) - m.means().row(i % 8)).tanh() * 0.2;
  Batch denoised;
  m.denoise(x, constant(n, 1.0), constant(n, 1e-4), denoised);
  // Exactly, D - x = -sigma^2 / (s^2 + sigma^2) (x - mu) = O(2.5e-7 * 0.1) for the nearest mode.
  EXPECT_LE((denoised - x).abs().maxCoeff(), 1e-7);
  // And at alpha -> 0 (pure noise) the denoiser forgets x: it returns the data mean.
  m.denoise(x, constant(n, 1e-8), constant(n, 1.0), denoised);
  for (Index i = 0; i < n; ++i) EXPECT_LE((denoised.row(i).matrix().transpose() - m.mean()).cwiseAbs().maxCoeff(), 1e-7);
}

TEST(GaussianMixture, DivergenceMatchesFiniteDifferencesOfScore) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l);
      const Index n = x.rows();
      const PerSample a = constant(n, l.alpha), s = constant(n, l.sigma);
      const PerSample div = m.score_divergence(x, a, s);
      const double h = 1e-4 * std::sqrt(min_variance(m, l));
      PerSample fd = PerSample::Zero(n);
      Batch sp, sm;
      for (Index d = 0; d < m.dims(); ++d) {
        Batch plus = x, minus = x;
        plus.col(d) += h;
        minus.col(d) -= h;
        m.score(plus, a, s, sp);
        m.score(minus, a, s, sm);
        fd += (sp.col(d) - sm.col(d)) / (2.0 * h);
      }
      for (Index i = 0; i < n; ++i) {
        const double scale = std::max(std::abs(div[i]), m.dims() / max_variance(m, l));
        EXPECT_LE(std::abs(fd[i] - div[i]), 1e-6 * scale) << where(named, l) << ", sample " << i;
      }
    }
  }
}

TEST(GaussianMixture, SingleGaussianDivergenceIsMinusTraceOfPrecision) {
  Batch mu(1, 3), var(1, 3);
  mu << 1.0, -2.0, 0.5;
  var << 0.04, 1.0, 9.0;
  const GaussianMixture g(Eigen::ArrayXd::Ones(1), mu, var);
  const Batch x = g.sample_marginal(0.6, 0.8, 4, 3);
  const PerSample div = g.score_divergence(x, constant(4, 0.6), constant(4, 0.8));
  const double expected = -((0.36 * var.row(0) + 0.64).inverse()).sum();
  for (Index i = 0; i < 4; ++i) EXPECT_NEAR(div[i], expected, 1e-14 * std::abs(expected));
}

TEST(GaussianMixture, JacobianVectorProductMatchesFiniteDifferencesAndIsSymmetric) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l);
      const Index n = x.rows(), dd = m.dims();
      const PerSample a = constant(n, l.alpha), s = constant(n, l.sigma);
      const Batch v = GaussianMixture(Eigen::ArrayXd::Ones(1), Batch::Zero(1, dd), Batch::Ones(1, dd)).sample(n, 99);
      const Batch u = GaussianMixture(Eigen::ArrayXd::Ones(1), Batch::Zero(1, dd), Batch::Ones(1, dd)).sample(n, 98);
      Batch jv, ju, sp, sm;
      m.score_jvp(x, a, s, v, jv);
      m.score_jvp(x, a, s, u, ju);
      Batch fd(n, dd);
      for (Index i = 0; i < n; ++i) {
        const double h = 1e-4 * std::sqrt(min_variance(m, l)) / v.row(i).abs().maxCoeff();
        const Batch plus = x.row(i) + h * v.row(i), minus = x.row(i) - h * v.row(i);
        m.score(plus, a.head(1), s.head(1), sp);
        m.score(minus, a.head(1), s.head(1), sm);
        fd.row(i) = (sp - sm) / (2.0 * h);
        const double scale = std::max(jv.row(i).abs().maxCoeff(), v.row(i).abs().maxCoeff() / max_variance(m, l));
        EXPECT_LE((fd.row(i) - jv.row(i)).abs().maxCoeff(), 1e-6 * scale) << where(named, l) << ", sample " << i;
        // J is the Hessian of log p_t: u . J v = v . J u.
        const double ujv = (u.row(i) * jv.row(i)).sum(), vju = (v.row(i) * ju.row(i)).sum();
        const double dot_scale = (u.row(i).abs() * jv.row(i).abs()).sum() + (v.row(i).abs() * ju.row(i).abs()).sum();
        EXPECT_LE(std::abs(ujv - vju), 1e-13 * dot_scale) << where(named, l) << ", sample " << i;
      }
    }
  }
}

TEST(GaussianMixture, JacobianTraceOverBasisEqualsDivergence) {
  const auto m = GaussianMixture::random_isotropic(16, 10, 7);
  const Level l{0.8, 0.6};
  const Batch x = probe_points(m, l);
  const Index n = x.rows(), dd = m.dims();
  const PerSample a = constant(n, l.alpha), s = constant(n, l.sigma);
  const PerSample div = m.score_divergence(x, a, s);
  PerSample trace = PerSample::Zero(n);
  Batch e, je;
  for (Index d = 0; d < dd; ++d) {
    e = Batch::Zero(n, dd);
    e.col(d).setOnes();
    m.score_jvp(x, a, s, e, je);
    trace += je.col(d);
  }
  for (Index i = 0; i < n; ++i) EXPECT_NEAR(trace[i], div[i], 1e-12 * std::abs(div[i]));
}

// Trapezoid rule on a uniform grid: for smooth, rapidly decaying integrands it converges
// exponentially in 1/h, so a step of a quarter of the narrowest std is far below 1e-9.
TEST(GaussianMixture, DensityIntegratesToOneOnAGrid1D) {
  Eigen::ArrayXd w(3);
  w << 0.2, 0.5, 0.3;
  Batch mu(3, 1), var(3, 1);
  mu << -2.0, 0.5, 3.0;
  var << 0.01, 0.25, 1.0;
  const GaussianMixture m(w, mu, var);
  const double exact_mean = 0.2 * -2.0 + 0.5 * 0.5 + 0.3 * 3.0;
  for (const Level l : kLevels) {
    const double h = 0.25 * std::sqrt(min_variance(m, l));
    const double reach = l.alpha * 3.0 + 14.0 * std::sqrt(max_variance(m, l));
    const Index points = 2 * static_cast<Index>(std::ceil(reach / h)) + 1;
    Batch x(points, 1);
    for (Index i = 0; i < points; ++i) x(i, 0) = -reach + h * i;
    const PerSample p = m.log_prob(x, constant(points, l.alpha), constant(points, l.sigma)).exp();
    EXPECT_NEAR(p.sum() * h, 1.0, 1e-9) << "alpha = " << l.alpha << ", sigma = " << l.sigma;
    EXPECT_NEAR((p * x.col(0)).sum() * h, l.alpha * exact_mean, 1e-9 * (1.0 + std::sqrt(max_variance(m, l))))
        << "alpha = " << l.alpha << ", sigma = " << l.sigma;
  }
}

TEST(GaussianMixture, RingDensityIntegratesToOneOnAGrid2D) {
  const auto m = GaussianMixture::ring();
  for (const Level l : kLevels) {
    const double h = 0.25 * std::sqrt(min_variance(m, l));
    const double reach = l.alpha * 2.0 + 12.0 * std::sqrt(max_variance(m, l));
    const Index side = 2 * static_cast<Index>(std::ceil(reach / h)) + 1;
    Batch x(side * side, 2);
    for (Index i = 0; i < side; ++i)
      for (Index j = 0; j < side; ++j) x.row(i * side + j) << -reach + h * i, -reach + h * j;
    const PerSample p = m.log_prob(x, constant(x.rows(), l.alpha), constant(x.rows(), l.sigma)).exp();
    EXPECT_NEAR(p.sum() * h * h, 1.0, 1e-9) << "alpha = " << l.alpha << ", sigma = " << l.sigma;
  }
}

// Monte-Carlo moments: every entry of the sample mean and covariance within 5 standard errors of
// the exact value, each standard error estimated from the draws themselves (the per-entry
// false-alarm rate of 5 SE is 6e-7; the seeds are fixed, so the test is deterministic).
void expect_moments(const Batch& draws, const Eigen::VectorXd& mean, const Eigen::MatrixXd& cov, const std::string& what) {
  const Index m = draws.rows(), dd = draws.cols();
  const double md = static_cast<double>(m);
  const Eigen::MatrixXd centred = draws.matrix().rowwise() - mean.transpose();
  // Every product (x_i - mu_i)(x_j - mu_j) at once: its mean estimates cov_ij, the mean of its
  // square gives its variance, hence the standard error of the estimate.
  const Eigen::MatrixXd products = centred.transpose() * centred / md;
  const Eigen::MatrixXd squares = centred.array().square().matrix().transpose() * centred.array().square().matrix() / md;
  for (Index i = 0; i < dd; ++i) {
    const double se = std::sqrt(cov(i, i) / md);
    EXPECT_LE(std::abs(centred.col(i).mean()), 5.0 * se) << what << ": mean " << i;
    for (Index j = 0; j <= i; ++j) {
      const double product_se = std::sqrt((squares(i, j) - products(i, j) * products(i, j)) / (md - 1.0));
      EXPECT_LE(std::abs(products(i, j) - cov(i, j)), 5.0 * product_se) << what << ": covariance " << i << "," << j;
    }
  }
}

TEST(GaussianMixture, SamplesHaveTheExactMeanAndCovariance) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    // 1e5 draws; 2.5e4 in 64-D, where 2080 covariance entries are checked (keeps the test fast).
    const Index draws = m.dims() > 16 ? 25000 : 100000;
    expect_moments(m.sample(draws, 2024), m.mean(), m.covariance(), named.name + " p_0");
    const double alpha = 0.6, sigma = 0.8;
    const Eigen::MatrixXd cov_t =
        alpha * alpha * m.covariance() + sigma * sigma * Eigen::MatrixXd::Identity(m.dims(), m.dims());
    expect_moments(m.sample_marginal(alpha, sigma, draws, 2025), alpha * m.mean(), cov_t, named.name + " p_t");
  }
}

TEST(GaussianMixture, RingModesAreDrawnWithEqualFrequency) {
  const auto m = GaussianMixture::ring();
  const Index draws = 100000;
  const Batch x = m.sample(draws, 77);
  std::vector<Index> count(8, 0);
  for (Index i = 0; i < draws; ++i) {
    Index nearest = 0;
    ((m.means().rowwise() - x.row(i)).square().rowwise().sum()).minCoeff(&nearest);
    ++count[nearest];
  }
  // Binomial(M, 1/8): 5 standard errors.
  const double expected = draws / 8.0, se = std::sqrt(draws * (1.0 / 8.0) * (7.0 / 8.0));
  for (Index k = 0; k < 8; ++k) EXPECT_LE(std::abs(count[k] - expected), 5.0 * se) << "mode " << k;
}

TEST(GaussianMixture, SamplingIsIndependentOfTheBatch) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    const Batch together = m.sample(10, 31, 1000);
    const Batch noisy = m.sample_marginal(0.3, 0.9, 10, 31, 1000);
    for (Index i = 0; i < 10; ++i) {
      const Batch alone = m.sample(1, 31, 1000 + i);
      const Batch alone_noisy = m.sample_marginal(0.3, 0.9, 1, 31, 1000 + i);
      for (Index d = 0; d < m.dims(); ++d) {
        EXPECT_EQ(alone(0, d), together(i, d)) << named.name << " sample " << i;
        EXPECT_EQ(alone_noisy(0, d), noisy(i, d)) << named.name << " sample " << i;
      }
    }
    // Another seed gives other draws; the same draws at sigma = 0 scale exactly with alpha.
    EXPECT_GT((m.sample(10, 32, 1000) - together).abs().minCoeff(), 0.0) << named.name;
    EXPECT_EQ((m.sample_marginal(0.5, 0.0, 10, 31, 1000) - 0.5 * together).abs().maxCoeff(), 0.0) << named.name;
  }
}

TEST(GaussianMixture, EvaluationIsIndependentOfTheBatchAndOfOtherRowsLevels) {
  const auto m = GaussianMixture::random_diagonal(64, 4, 11);
  const Index n = 12;
  const Batch x = m.sample_marginal(0.7, 0.7, n, 5);
  PerSample a(n), s(n);
  for (Index i = 0; i < n; ++i) {
    const Level l = kLevels[(i / 2) % kLevels.size()];  // runs of two rows share a level
    a[i] = l.alpha;
    s[i] = l.sigma;
  }
  const Batch v = m.sample(n, 6);
  PerSample lp, div;
  Batch score, den, jvp;
  m.evaluate(x, a, s, {.log_prob = &lp, .score = &score, .denoised = &den, .divergence = &div, .jvp_direction = &v, .jvp = &jvp});
  for (Index i = 0; i < n; ++i) {
    PerSample lp1, div1;
    Batch score1, den1, jvp1;
    const Batch v1 = v.row(i);
    m.evaluate(x.row(i), a.segment(i, 1), s.segment(i, 1),
               {.log_prob = &lp1, .score = &score1, .denoised = &den1, .divergence = &div1, .jvp_direction = &v1, .jvp = &jvp1});
    EXPECT_EQ(lp1[0], lp[i]);
    EXPECT_EQ(div1[0], div[i]);
    for (Index d = 0; d < m.dims(); ++d) {
      EXPECT_EQ(score1(0, d), score(i, d));
      EXPECT_EQ(den1(0, d), den(i, d));
      EXPECT_EQ(jvp1(0, d), jvp(i, d));
    }
  }
  // The single-quantity calls agree with the combined pass, and may write over x.
  Batch in_place = x;
  m.score(in_place, a, s, in_place);
  EXPECT_EQ((in_place - score).abs().maxCoeff(), 0.0);
}

// Every instruction-set kernel of evaluate() gives the baseline's bits: on several shapes (the
// compile-time dimensions 1-3 and run-time ones), row counts that leave partial lane groups, rows
// whose levels change from row to row or are shared, and points far in the tails (responsibilities
// that underflow to 0, the exp's cut-off at -708).
TEST(GaussianMixture, EveryKernelGivesTheBaselineBits) {
  struct Shape {
    Index dims, components;
  };
  std::vector<MixtureKernel> others;
  for (MixtureKernel k : {MixtureKernel::avx2, MixtureKernel::avx512})
    if (set_mixture_kernel(k)) others.push_back(k);
  ASSERT_TRUE(set_mixture_kernel(MixtureKernel::automatic));
  const MixtureKernel best = mixture_kernel();
  EXPECT_NE(best, MixtureKernel::automatic);
  const bool avx2 = std::find(others.begin(), others.end(), MixtureKernel::avx2) != others.end();
  EXPECT_EQ(best, avx2 ? MixtureKernel::avx2 : MixtureKernel::baseline);  // the documented default
  if (others.empty()) GTEST_SKIP() << "this CPU runs only the baseline kernel";

  for (const Shape shape : {Shape{1, 3}, Shape{2, 8}, Shape{3, 5}, Shape{5, 7}, Shape{16, 10}, Shape{64, 4}, Shape{13, 1}}) {
    const auto m = GaussianMixture::random_diagonal(shape.dims, shape.components, 3);
    for (const bool shared_level : {false, true}) {
      const Index n = 37;  // not a multiple of any lane count
      Batch x = m.sample_marginal(0.7, 2.0, n, 8);
      x.row(3) *= 40.0;  // far out: every component's responsibility but one underflows
      x.row(n - 1).setConstant(1e3);
      PerSample a(n), s(n);
      for (Index i = 0; i < n; ++i) {
        const Level l = shared_level ? kLevels[2] : kLevels[(i * 5 + i / 3) % kLevels.size()];
        a[i] = l.alpha;
        s[i] = l.sigma;
      }
      const Batch v = m.sample(n, 9);
      struct Results {
        PerSample lp, div;
        Batch score, den, jvp;
      };
      auto run = [&](MixtureKernel kernel) {
        EXPECT_TRUE(set_mixture_kernel(kernel));
        Results r;
        m.evaluate(x, a, s, {.log_prob = &r.lp, .score = &r.score, .denoised = &r.den, .divergence = &r.div,
                             .jvp_direction = &v, .jvp = &r.jvp});
        Batch den_only;
        m.denoise(x, a, s, den_only);  // the denoiser alone takes the kernel's other branch
        EXPECT_EQ(std::memcmp(den_only.data(), r.den.data(), sizeof(double) * n * m.dims()), 0);
        return r;
      };
      const Results base = run(MixtureKernel::baseline);
      for (MixtureKernel kernel : others) {
        const Results r = run(kernel);
        const std::string what = std::string(to_string(kernel)) + " D = " + std::to_string(shape.dims) +
                                 " K = " + std::to_string(shape.components) + (shared_level ? " shared" : " mixed");
        auto same = [&](const auto& p, const auto& q) { return std::memcmp(p.data(), q.data(), sizeof(double) * p.size()) == 0; };
        EXPECT_TRUE(same(base.lp, r.lp)) << what;
        EXPECT_TRUE(same(base.div, r.div)) << what;
        EXPECT_TRUE(same(base.score, r.score)) << what;
        EXPECT_TRUE(same(base.den, r.den)) << what;
        EXPECT_TRUE(same(base.jvp, r.jvp)) << what;
      }
    }
  }
  ASSERT_TRUE(set_mixture_kernel(MixtureKernel::automatic));
}

TEST(GaussianMixture, RejectsInvalidInput) {
  Batch mu(2, 2), var(2, 2);
  mu << 0, 0, 1, 1;
  var << 1, 1, 1, 0;
  EXPECT_THROW(GaussianMixture(Eigen::ArrayXd::Ones(2), mu, var), std::invalid_argument);
  var(1, 1) = 1;
  EXPECT_THROW(GaussianMixture(Eigen::ArrayXd::Ones(3), mu, var), std::invalid_argument);
  EXPECT_THROW(GaussianMixture(Eigen::ArrayXd::Zero(2), mu, var), std::invalid_argument);
  const GaussianMixture m(Eigen::ArrayXd::Constant(2, 3.0), mu, var);
  EXPECT_DOUBLE_EQ(m.weights().sum(), 1.0);  // normalised
  Batch out;
  EXPECT_THROW(m.score(Batch::Zero(3, 2), constant(2, 1.0), constant(3, 0.5), out), std::invalid_argument);
  EXPECT_THROW(m.score(Batch::Zero(3, 3), constant(3, 1.0), constant(3, 0.5), out), std::invalid_argument);
  EXPECT_THROW(m.score(Batch::Zero(1, 2), constant(1, 0.0), constant(1, 0.0), out), std::invalid_argument);
}

// ---- Predictor conversions and the exact predictor ------------------------------------------------

constexpr Parameterization kAll[] = {Parameterization::eps, Parameterization::x0, Parameterization::v,
                                     Parameterization::score, Parameterization::flow};

TEST(Predictor, ConversionsAgreeWithValuesBuiltFromX0AndEps) {
  const Index n = 6, dd = 3;
  const GaussianMixture unit(Eigen::ArrayXd::Ones(1), Batch::Zero(1, dd), Batch::Ones(1, dd));
  const Batch x0 = unit.sample(n, 1), eps = unit.sample(n, 2);
  // Per-sample levels of several processes: VP-like, VE, EDM, the linear interpolant.
  PerSample alpha(n), sigma(n), alpha_dot(n), sigma_dot(n);
  alpha << 0.99, 0.6, 1.0, 1.0, 0.25, 0.02;
  sigma << 0.14, 0.8, 5.0, 0.01, 0.75, 0.98;
  alpha_dot << -0.07, -1.3, 0.0, 0.0, -1.0, -0.4;
  sigma_dot << 0.5, 0.9, 1.0, 1.0, 1.0, 0.02;
  const Batch x = x0.colwise() * alpha + eps.colwise() * sigma;
  auto truth = [&](Parameterization p) -> Batch {
    switch (p) {
      case Parameterization::eps: return eps;
      case Parameterization::x0: return x0;
      case Parameterization::v: return eps.colwise() * alpha - x0.colwise() * sigma;
      case Parameterization::score: return -(eps.colwise() / sigma);
      case Parameterization::flow: return x0.colwise() * alpha_dot + eps.colwise() * sigma_dot;
    }
    return {};
  };
  const NoiseLevels<PerSample> levels{alpha, sigma, &alpha_dot, &sigma_dot};
  for (Parameterization from : kAll) {
    for (Parameterization to : kAll) {
      Batch out;
      convert(from, to, x, truth(from), levels, out);
      const Batch expected = truth(to);
      for (Index i = 0; i < n; ++i) {
        // Conversions divide by alpha or sigma: allow rounding amplified by |x| / min(alpha, sigma).
        const double amplification = 1.0 + x.row(i).abs().maxCoeff() / std::min(alpha[i], sigma[i]);
        EXPECT_LE((out.row(i) - expected.row(i)).abs().maxCoeff(), 1e-14 * amplification * (1.0 + expected.row(i).abs().maxCoeff()))
            << to_string(from) << " -> " << to_string(to) << ", sample " << i;
      }
      // In place, and the scalar table agrees with the batched one.
      Batch in_place = truth(from);
      convert(from, to, x, in_place, levels, in_place);
      EXPECT_EQ((in_place - out).abs().maxCoeff(), 0.0);
      const auto map = conversion(from, to, alpha[1], sigma[1], &alpha_dot[1], &sigma_dot[1]);
      EXPECT_NEAR(map.on_x * x(1, 0) + map.on_prediction * truth(from)(1, 0), expected(1, 0), 1e-13);
    }
  }
  Batch out;
  EXPECT_THROW(convert(Parameterization::eps, Parameterization::flow, x, eps, NoiseLevels<PerSample>{alpha, sigma}, out),
               std::invalid_argument);
}

TEST(Predictor, EpsToScoreStaysFiniteWhereX0IsUndetermined) {
  // At the end of a flow process alpha = 0: x0 cannot be read from eps, but the score can.
  const auto map = conversion(Parameterization::eps, Parameterization::score, 0.0, 1.0);
  EXPECT_EQ(map.on_x, 0.0);
  EXPECT_EQ(map.on_prediction, -1.0);
}

TEST(Predictor, MixturePredictorCountsEvaluationsAndConvertsToTheExactScore) {
  MixturePredictor predictor(GaussianMixture::ring());
  const auto& m = predictor.mixture();
  EXPECT_EQ(predictor.native(), Parameterization::x0);
  const Index n = 20;
  PerSample alpha = constant(n, 0.8), sigma = constant(n, 0.6), alpha_dot = constant(n, -0.6), sigma_dot = constant(n, 0.8);
  const Batch x = m.sample_marginal(0.8, 0.6, n, 8);
  const NoiseLevels<PerSample> levels{alpha, sigma, &alpha_dot, &sigma_dot};
  Batch score, predicted, denoised;
  m.evaluate(x, alpha, sigma, {.score = &score, .denoised = &denoised});

  predictor.predict_as(Parameterization::score, x, levels, predicted);
  EXPECT_LE((predicted - score).abs().maxCoeff(), 1e-12 * (1.0 + score.abs().maxCoeff()));
  predictor.predict_as(Parameterization::eps, x, levels, predicted);
  EXPECT_LE((predicted + 0.6 * score).abs().maxCoeff(), 1e-12 * (1.0 + score.abs().maxCoeff()));
  predictor.predict(x, alpha, sigma, predicted);
  EXPECT_EQ((predicted - denoised).abs().maxCoeff(), 0.0);
  predictor.predict_as(Parameterization::flow, x, levels, predicted);
  const Batch eps = (x - 0.8 * denoised) / 0.6;
  EXPECT_LE((predicted - (-0.6 * denoised + 0.8 * eps)).abs().maxCoeff(), 1e-12 * (1.0 + x.abs().maxCoeff()));

  EXPECT_EQ(predictor.nfe(), 4);  // one per call, whatever the batch size or target
  predictor.reset_nfe();
  EXPECT_EQ(predictor.nfe(), 0);
}

}  // namespace
}  // namespace diffode
