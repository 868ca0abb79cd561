// The exponential integrator for the likelihood (solvers/diffusion/likelihood_exponential.hpp) and
// the Gaussian control variate of the Hutchinson estimator (solvers/diffusion/likelihood.hpp), on
// problems with a known answer:
//   - on fixed grids in lambda, DPM-Solver-3 (the 23 pair's result) converges at order 3 and
//     DPM-Solver-2 (the 12 pair's) at order 2 to the exact log p_{t_min}, on a single Gaussian
//     (everything closed form) and on the ring2d and mix16 mixtures under VP and EDM;
//   - adaptive, both pairs reach the exact log-density within a tolerance-sized error, and a lone
//     point's evaluation count is the batched count of its own solve;
//   - the estimators that are exact by construction (basis probes, Hutch++ with a full residual
//     frame, the control variate with the data law itself) give the exact divergence's answer under
//     the exponential pair too, which checks each column's linear weight;
//   - the control variate: exact when the surrogate is the data law itself (a single Gaussian),
//     unbiased with intervals that cover on mix16 (Rademacher and Gaussian probes), and a point's
//     result does not depend on its batch.
// The NFE printed by ReportsCostAtOneMilliNat is reported, not asserted.
#include "solvers/diffusion/likelihood.hpp"

#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <boost/math/distributions/binomial.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

namespace diffode {
namespace {

using testing::DiffusionCase;
using testing::make_case;

struct Data {
  Batch x;          // draws of p_{t_min}
  PerSample exact;  // log p_{t_min}(x)
};

Data held_out(const Process& p, const GaussianMixture& m, Index n, std::uint64_t seed) {
  const double a = p.alpha(p.t_min()), s = p.sigma(p.t_min());
  Data d;
  d.x = m.sample_marginal(a, s, n, seed);
  d.exact = m.log_prob(d.x, PerSample::Constant(n, a), PerSample::Constant(n, s));
  return d;
}

// log p_{t_min} with the mixture's own log p_T at x_T.
PerSample with_exact_prior(const Process& p, const GaussianMixture& m, const LikelihoodResult& r) {
  const Index n = r.x_T.rows();
  return r.with_prior(m.log_prob(r.x_T, PerSample::Constant(n, p.alpha(p.t_max())), PerSample::Constant(n, p.sigma(p.t_max()))));
}

double max_error_per_dim(const Process& p, const GaussianMixture& m, const Data& d, const LikelihoodResult& r) {
  return (with_exact_prior(p, m, r) - d.exact).abs().maxCoeff() / static_cast<double>(d.x.cols());
}

// A single anisotropic Gaussian in 4-D: log p_t, scores and divergences in closed form,
// and its own moments are an exact surrogate.
GaussianMixture single_gaussian() {
  Batch means(1, 4), variances(1, 4);
  means << 0.5, -1.0, 0.25, 2.0;
  variances << 0.3, 1.5, 0.05, 0.8;
  return GaussianMixture(Eigen::ArrayXd::Ones(1), means, variances);
}

struct NamedMixture {
  std::string name;
  GaussianMixture mixture;
};

std::vector<NamedMixture> mixtures() {
  return {{"gaussian4", single_gaussian()},
          {"ring2d", GaussianMixture::ring()},
          {"mix16", GaussianMixture::random_isotropic(16, 10, 3)}};
}

template <int Order>
double fitted_order_on_grids(const Process& p, const GaussianMixture& m, const std::vector<int>& steps, std::vector<double>& errors) {
  const Data d = held_out(p, m, 16, 11);
  const MixtureDivergence source(m);
  LikelihoodOptions options;
  options.time = LikelihoodTime::log_sigma;
  std::vector<double> h;
  for (int n : steps) {
    ExponentialLikelihoodPair<Order> pair(p);
    const std::vector<double> grid = testing::uniform_grid(-p.lambda(p.t_min()), -p.lambda(p.t_max()), n);
    const LikelihoodResult r = log_likelihood_on_grid(pair, p, source, d.x, grid, options);
    EXPECT_FALSE(r.stats.failed) << r.stats.failure;
    EXPECT_EQ(r.nfe[0], Order * n);  // no first stage is carried between grid steps
    h.push_back(1.0 / n);
    errors.push_back(max_error_per_dim(p, m, d, r));
  }
  return testing::fitted_order(h, errors);
}

TEST(LikelihoodExponential, FixedGridOrdersAreThreeAndTwo) {
  for (const char* process : {"vp", "edm"}) {
    const std::unique_ptr<Process> p = make_process(process);
    for (const NamedMixture& m : mixtures()) {
      std::vector<double> e3, e2;
      const double order3 = fitted_order_on_grids<3>(*p, m.mixture, {64, 128, 256, 512}, e3);
      const double order2 = fitted_order_on_grids<2>(*p, m.mixture, {128, 256, 512, 1024}, e2);
      std::printf("%-9s %-3s DPM-Solver-3 errors/dim %.2e %.2e %.2e %.2e order %.2f; DPM-Solver-2 %.2e %.2e %.2e %.2e order %.2f\n",
                  m.name.c_str(), process, e3[0], e3[1], e3[2], e3[3], order3, e2[0], e2[1], e2[2], e2[3], order2);
      EXPECT_NEAR(order3, 3.0, 0.35) << m.name << " " << process;
      EXPECT_NEAR(order2, 2.0, 0.3) << m.name << " " << process;
      EXPECT_LT(e3.back(), 1e-6) << m.name << " " << process;
    }
  }
}

TEST(LikelihoodExponential, AdaptivePairsReachTheExactLogDensity) {
  for (const char* process : {"vp", "edm"}) {
    const std::unique_ptr<Process> p = make_process(process);
    for (const NamedMixture& m : mixtures()) {
      const Data d = held_out(*p, m.mixture, 64, 5);
      const MixtureDivergence source(m.mixture);
      for (AdaptiveMethod method : {AdaptiveMethod::exponential12, AdaptiveMethod::exponential23}) {
        double previous = 1.0;
        for (double tol : {1e-4, 1e-6}) {
          LikelihoodOptions o;
          o.method = method;
          o.adaptive.rtol = o.adaptive.atol = tol;
          const LikelihoodResult r = log_likelihood(*p, source, d.x, o);
          ASSERT_FALSE(r.stats.failed) << r.stats.failure;
          const double error = max_error_per_dim(*p, m.mixture, d, r);
          std::printf("%-9s %-3s %s tol %.0e: max error/dim %.2e, mean NFE %.1f\n", m.name.c_str(), process,
                      method == AdaptiveMethod::exponential23 ? "23" : "12", tol, error,
                      std::accumulate(r.nfe.begin(), r.nfe.end(), 0.0) / static_cast<double>(r.nfe.size()));
          EXPECT_LT(error, 100 * tol) << m.name << " " << process;
          if (tol == 1e-6) {
            EXPECT_LT(error, std::max(previous / 10, 1e-7)) << m.name << " " << process;
          }
          previous = error;
        }
      }
    }
  }
}

// Every estimator's columns carry their own linear weight (linear_weights(): |e|^2 for probes, k and
// D - k for Hutch++, D with the control variate). With the exponential pair, the estimators that are
// exact by construction give the exact divergence's answer: the D scaled basis vectors, Hutch++
// with a full residual frame (k = 1, r = D - 1), and Gaussian probes with the data law itself as the
// surrogate (on the single Gaussian). A wrong weight would show as a gap of order the linear
// term's share, D log(sigma_T / sigma_min).
TEST(LikelihoodExponential, ExactEstimatorsGiveTheExactDivergencesAnswer) {
  const std::unique_ptr<Process> p = make_process("edm");
  for (const NamedMixture& m : mixtures()) {
    const Data d = held_out(*p, m.mixture, 16, 5);
    const Index dims = d.x.cols();
    const MixtureDivergence source(m.mixture);
    LikelihoodOptions exact;
    exact.method = AdaptiveMethod::exponential23;
    exact.adaptive.rtol = exact.adaptive.atol = 1e-8;
    const LikelihoodResult a = log_likelihood(*p, source, d.x, exact);
    std::vector<std::pair<std::string, LikelihoodOptions>> estimators;
    LikelihoodOptions basis = exact;
    basis.divergence = DivergenceMethod::hutchinson;
    basis.hutchinson.law = ProbeLaw::basis;
    estimators.emplace_back("basis", basis);
    LikelihoodOptions hpp = exact;
    hpp.divergence = DivergenceMethod::hutchpp;
    hpp.hutchinson = {.probes = dims + 1, .seed = 4, .sketch = 1};
    estimators.emplace_back("hutch++ k = 1, r = D - 1", hpp);
    if (m.name == "gaussian4") {
      LikelihoodOptions cv = exact;
      cv.divergence = DivergenceMethod::hutchinson;
      cv.hutchinson = {.probes = 3, .law = ProbeLaw::gaussian, .seed = 8};
      cv.control_variate = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(m.mixture.covariance()));
      estimators.emplace_back("gaussian + exact surrogate", cv);
    }
    for (const auto& [name, options] : estimators) {
      const LikelihoodResult b = log_likelihood(*p, source, d.x, options);
      ASSERT_FALSE(b.stats.failed) << b.stats.failure;
      const double gap = (a.delta_log_p - b.delta_log_p).abs().maxCoeff() / static_cast<double>(dims);
      std::printf("%-9s %-27s max |gap| to the exact divergence %.2e nats/dim\n", m.name.c_str(), name.c_str(), gap);
      EXPECT_LT(gap, 1e-6) << m.name << " " << name;
    }
  }
}

TEST(LikelihoodExponential, APointsCountIsItsOwnSolvesAndDoesNotDependOnItsBatch) {
  const DiffusionCase c = make_case("mix16", "vp");
  const GaussianMixture& m = c.predictor->mixture();
  const Data d = held_out(*c.process, m, 6, 3);
  const MixtureDivergence source(m);
  for (AdaptiveMethod method : {AdaptiveMethod::exponential12, AdaptiveMethod::exponential23}) {
    LikelihoodOptions o;
    o.method = method;
    o.adaptive.rtol = o.adaptive.atol = 1e-5;
    o.divergence = DivergenceMethod::hutchinson;
    o.hutchinson.probes = 3;
    o.control_variate = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(m.covariance()));
    const LikelihoodResult batch = log_likelihood(*c.process, source, d.x, o);
    ASSERT_FALSE(batch.stats.failed) << batch.stats.failure;
    for (Index i = 0; i < d.x.rows(); ++i) {
      LikelihoodOptions alone = o;
      alone.first_point = i;
      const LikelihoodResult r = log_likelihood(*c.process, source, d.x.row(i), alone);
      EXPECT_EQ(r.delta_log_p[0], batch.delta_log_p[i]) << i;
      EXPECT_EQ(r.std_error[0], batch.std_error[i]) << i;
      EXPECT_EQ(r.nfe[0], batch.nfe[i]) << i;
      EXPECT_EQ(r.nfe[0], r.stats.nfe) << i;  // the per-point formula is the lone solve's own count
    }
  }
}

TEST(LikelihoodExponential, ControlVariateWithTheDataLawItselfIsExact) {
  const std::unique_ptr<Process> p = make_process("edm");
  const GaussianMixture m = single_gaussian();
  const Data d = held_out(*p, m, 32, 9);
  const MixtureDivergence source(m);
  for (ProbeLaw law : {ProbeLaw::rademacher, ProbeLaw::gaussian}) {
    LikelihoodOptions o;
    o.adaptive.rtol = o.adaptive.atol = 1e-8;
    o.divergence = DivergenceMethod::hutchinson;
    o.hutchinson = {.probes = 4, .law = law, .seed = 3};
    const LikelihoodResult plain = log_likelihood(*p, source, d.x, o);
    o.control_variate = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(m.covariance()));
    const LikelihoodResult cv = log_likelihood(*p, source, d.x, o);
    ASSERT_FALSE(cv.stats.failed) << cv.stats.failure;
    const double error = max_error_per_dim(*p, m, d, cv);
    std::printf("%s: plain mean se %.2e nats, with the exact surrogate %.2e nats, max error/dim %.2e\n",
                law == ProbeLaw::rademacher ? "rademacher" : "gaussian", plain.std_error.mean(), cv.std_error.mean(), error);
    // The Gaussian's J_s is diagonal: Rademacher probes (e_i^2 = 1) already estimate its trace
    // without variance; Gaussian probes do not, until the control variate takes J_s out.
    if (law == ProbeLaw::gaussian) {
      EXPECT_GT(plain.std_error.mean(), 1e-3);
    } else {
      EXPECT_LT(plain.std_error.maxCoeff(), 1e-8);
    }
    EXPECT_LT(cv.std_error.maxCoeff(), 1e-8);
    EXPECT_LT(error, 1e-6);
  }
}

// As likelihood_test's StandardErrorsGiveIntervalsThatCover: 95% t intervals on 256 points of mix16
// against the exact divergence's solve, with the mixture's own moments as the surrogate, and with
// the sample covariance of the points (what a network without a ground truth uses).
TEST(LikelihoodExponential, ControlVariateIsUnbiasedAndItsIntervalsCover) {
  constexpr Index kPoints = 256;
  const DiffusionCase c = make_case("mix16", "edm");
  const GaussianMixture& m = c.predictor->mixture();
  const Data d = held_out(*c.process, m, kPoints, 77);
  const MixtureDivergence source(m);
  LikelihoodOptions base;
  base.adaptive.rtol = base.adaptive.atol = 1e-6;
  const LikelihoodResult exact = log_likelihood(*c.process, source, d.x, base);
  const boost::math::binomial_distribution<double> coverage_law(kPoints, 0.95);
  const double low = boost::math::quantile(coverage_law, 0.001), high = boost::math::quantile(coverage_law, 0.999);
  const auto moments = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(m.covariance()));
  const auto sample = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_points(d.x));
  struct Estimator {
    std::string name;
    ProbeLaw law;
    std::shared_ptr<const GaussianSurrogate> surrogate;
  };
  for (const Estimator& e : std::vector<Estimator>{{"rademacher 8 + cv", ProbeLaw::rademacher, moments},
                                                   {"gaussian 8 + cv", ProbeLaw::gaussian, moments},
                                                   {"rademacher 8 + cv(points)", ProbeLaw::rademacher, sample}}) {
    LikelihoodOptions o = base;
    o.divergence = DivergenceMethod::hutchinson;
    o.hutchinson = {.probes = 8, .law = e.law, .seed = 21};
    o.control_variate = e.surrogate;
    const LikelihoodResult r = log_likelihood(*c.process, source, d.x, o);
    ASSERT_FALSE(r.stats.failed) << r.stats.failure;
    ASSERT_EQ(r.std_error_dof, 7);
    const double t = boost::math::quantile(boost::math::students_t_distribution<double>(7.0), 0.975);
    const PerSample gap = r.delta_log_p - exact.delta_log_p;
    const Index covered = (gap.abs() <= t * r.std_error).count();
    // Unbiased: the mean error over points within 4 of its standard errors of 0.
    const double bias = gap.mean(), bias_se = std::sqrt((gap - bias).square().sum() / (kPoints - 1) / kPoints);
    std::printf("%-26s covers %ld of %ld (band %.0f..%.0f); MAE %.3e nats/dim, mean se %.3e, bias %.2e +- %.2e nats\n",
                e.name.c_str(), static_cast<long>(covered), static_cast<long>(kPoints), low, high, gap.abs().mean() / 16.0,
                r.std_error.mean() / 16.0, bias, bias_se);
    EXPECT_GE(static_cast<double>(covered), low) << e.name;
    EXPECT_LE(static_cast<double>(covered), high) << e.name;
    EXPECT_LT(std::abs(bias), 4 * bias_se) << e.name;
  }
}

TEST(LikelihoodExponential, ControlVariateRefusesWhatItIsNotFor) {
  const DiffusionCase c = make_case("ring2d", "edm");
  const GaussianMixture& m = c.predictor->mixture();
  const MixtureDivergence source(m);
  LikelihoodOptions o;
  o.control_variate = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(m.covariance()));
  const Batch x = m.sample_marginal(1.0, 0.01, 2, 1);
  EXPECT_THROW(log_likelihood(*c.process, source, x, o), std::invalid_argument);  // exact divergence
  o.divergence = DivergenceMethod::hutchinson;
  o.control_variate = std::make_shared<GaussianSurrogate>(GaussianSurrogate::from_covariance(Eigen::MatrixXd::Identity(3, 3)));
  EXPECT_THROW(log_likelihood(*c.process, source, x, o), std::invalid_argument);  // wrong dimension
}

// The cost of 1e-3 nats per dimension (mean |error|), exponential pairs against Dopri5 in t, on 128
// draws: printed for the record, not asserted.
TEST(LikelihoodExponential, ReportsCostAtOneMilliNat) {
  for (const char* process : {"vp", "edm"}) {
    const DiffusionCase c = make_case("mix16", process);
    const GaussianMixture& m = c.predictor->mixture();
    const Data d = held_out(*c.process, m, 128, 17);
    const MixtureDivergence source(m);
    for (AdaptiveMethod method : {AdaptiveMethod::dopri5, AdaptiveMethod::exponential12, AdaptiveMethod::exponential23})
      for (double tol : {1e-2, 3e-3, 1e-3, 3e-4, 1e-4}) {
        LikelihoodOptions o;
        o.method = method;
        o.adaptive.rtol = o.adaptive.atol = tol;
        const LikelihoodResult r = log_likelihood(*c.process, source, d.x, o);
        ASSERT_FALSE(r.stats.failed) << r.stats.failure;
        const double mae = (with_exact_prior(*c.process, m, r) - d.exact).abs().mean() / 16.0;
        std::printf("%-9s %-13s tol %.0e: mean error/dim %.2e, mean NFE %.1f\n", c.name.c_str(),
                    method == AdaptiveMethod::dopri5 ? "dopri5" : method == AdaptiveMethod::exponential12 ? "exponential12" : "exponential23",
                    tol, mae, std::accumulate(r.nfe.begin(), r.nfe.end(), 0.0) / static_cast<double>(r.nfe.size()));
      }
  }
}

}  // namespace
}  // namespace diffode
