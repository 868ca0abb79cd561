// The forward processes against their own definitions: derivatives by central differences,
// inverses by round trips, f and g^2 from alpha and sigma, and the forward SDE's variance law
// d/dt Var = 2 f Var + g^2 (pointwise and integrated with RK4, whose fitted order must be 4).
#include "problems/process.hpp"
#include "tests/support/convergence.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace diffode {
namespace {

const std::vector<std::string> kProcesses = {"vp", "vp_cosine", "subvp", "ve", "edm", "flow"};

// Interior times at fractions of [t_min, T], from near t_min to near T.
std::vector<double> interior_times(const Process& p) {
  std::vector<double> t;
  for (double u : {0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99}) t.push_back(p.t_min() + u * (p.t_max() - p.t_min()));
  return t;
}

double central_difference(const std::function<double(double)>& fn, double t, double h) {
  return (fn(t + h) - fn(t - h)) / (2.0 * h);
}

// Step for central differences: well inside the range, small against the range.
double fd_step(const Process& p) { return 1e-6 * (p.t_max() - p.t_min()); }

void expect_relative(double actual, double expected, double rel, const std::string& what) {
  EXPECT_NEAR(actual, expected, rel * std::abs(expected) + 1e-14) << what;
}

// A central difference carries truncation O(h^2) and rounding ~ eps |value| / h: compare at 1e-7
// of the size of the terms being compared, plus that rounding floor.
void expect_matches_difference(double exact, double difference, double term_scale, double value_scale, double h,
                               const std::string& what) {
  EXPECT_NEAR(difference, exact, 1e-7 * term_scale + 1e-15 * value_scale / h) << what;
}

class ProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Process> p = make_process(GetParam());
};

TEST_P(ProcessTest, DerivativesMatchCentralDifferences) {
  const double h = fd_step(*p);
  for (double t : interior_times(*p)) {
    const std::string at = GetParam() + " at t = " + std::to_string(t);
    expect_relative(p->d_alpha(t), central_difference([&](double s) { return p->alpha(s); }, t, h), 1e-7, "alpha' " + at);
    expect_relative(p->d_sigma(t), central_difference([&](double s) { return p->sigma(s); }, t, h), 1e-7, "sigma' " + at);
    expect_relative(p->d_lambda(t), central_difference([&](double s) { return p->lambda(s); }, t, h), 1e-7, "lambda' " + at);
    expect_relative(p->lambda(t), std::log(p->alpha(t) / p->sigma(t)), 1e-12, "lambda " + at);
  }
}

TEST_P(ProcessTest, DriftAndDiffusionFollowTheirDefinitions) {
  const double h = fd_step(*p);
  for (double t : interior_times(*p)) {
    const std::string at = GetParam() + " at t = " + std::to_string(t);
    // f = d log(alpha)/dt and g^2 = d(sigma^2)/dt - 2 f sigma^2, both differenced independently.
    const double f = central_difference([&](double s) { return std::log(p->alpha(s)); }, t, h);
    const double dsigma2 = central_difference([&](double s) { return p->sigma(s) * p->sigma(s); }, t, h);
    expect_relative(p->f(t), f, 1e-7, "f " + at);
    const double drift = 2.0 * f * p->sigma(t) * p->sigma(t);
    expect_matches_difference(p->g2(t), dsigma2 - drift, std::abs(dsigma2) + std::abs(drift),
                              p->sigma(t) * p->sigma(t), h, "g^2 " + at);
  }
}

TEST_P(ProcessTest, DiffusionSquaredIsNonNegativeOverTheWholeRange) {
  for (int i = 0; i <= 1000; ++i) {
    const double t = p->t_min() + (p->t_max() - p->t_min()) * i / 1000.0;
    EXPECT_GE(p->g2(std::min(t, p->t_max())), 0.0) << GetParam() << " at t = " << t;
  }
}

TEST_P(ProcessTest, InversesRoundTrip) {
  std::vector<double> times = interior_times(*p);
  times.push_back(p->t_min());
  times.push_back(p->t_max());  // the flow's T = 1 has lambda = -inf, which maps back to 1
  for (double t : times) {
    const double tol = 1e-10 * std::max(1.0, t);
    EXPECT_NEAR(p->t_of_lambda(p->lambda(t)), t, tol) << GetParam() << " t(lambda) at t = " << t;
    EXPECT_NEAR(p->t_of_sigma(p->sigma(t)), t, tol) << GetParam() << " t(sigma) at t = " << t;
    if (std::isfinite(p->scaled_sigma(t))) {
      EXPECT_NEAR(p->t_of_scaled_sigma(p->scaled_sigma(t)), t, tol) << GetParam() << " t(sigma/alpha) at t = " << t;
    }
  }
}

TEST_P(ProcessTest, ForwardSdeReproducesTheMarginalVariance) {
  // Var_t = alpha^2 v0 + sigma^2 must solve d/dt Var = 2 f Var + g^2 for every data variance v0.
  const double h = fd_step(*p);
  for (double v0 : {0.0, 0.25, 1.0, 4.0}) {
    const auto var = [&](double s) { return p->alpha(s) * p->alpha(s) * v0 + p->sigma(s) * p->sigma(s); };
    for (double t : interior_times(*p)) {
      const double drift = 2.0 * p->f(t) * var(t), g2 = p->g2(t);
      expect_matches_difference(drift + g2, central_difference(var, t, h), std::abs(drift) + std::abs(g2), var(t), h,
                                GetParam() + " v0 = " + std::to_string(v0) + " t = " + std::to_string(t));
    }
  }
}

TEST_P(ProcessTest, IntegratedVarianceOdeConvergesAtFourthOrder) {
  // RK4 on dV/dt = 2 f V + g^2 from t_min over half the range (away from the stiff end of the
  // cosine and flow schedules) reaches the closed-form marginal variance, with slope 4.
  const double v0 = 0.5;
  const double t0 = p->t_min(), t1 = p->t_min() + 0.5 * (p->t_max() - p->t_min());
  const auto var = [&](double s) { return p->alpha(s) * p->alpha(s) * v0 + p->sigma(s) * p->sigma(s); };
  const auto rhs = [&](double s, double v) { return 2.0 * p->f(s) * v + p->g2(s); };
  std::vector<double> hs, errors;
  for (int n : {16, 32, 64, 128, 256}) {
    const double dt = (t1 - t0) / n;
    double v = var(t0);
    for (int i = 0; i < n; ++i) {
      const double s = t0 + i * dt;
      const double k1 = rhs(s, v), k2 = rhs(s + dt / 2, v + dt / 2 * k1), k3 = rhs(s + dt / 2, v + dt / 2 * k2);
      const double k4 = rhs(std::min(s + dt, t1), v + dt * k3);
      v += dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4);
    }
    hs.push_back(dt);
    errors.push_back(std::abs(v - var(t1)) / var(t1));
  }
  if (errors.front() < 1e-13) {
    // EDM: Var = v0 + t^2 is a quadratic, which RK4 integrates exactly; nothing to fit.
    for (double e : errors) EXPECT_LT(e, 1e-13) << GetParam();
    return;
  }
  const double order = testing::fitted_order(hs, errors);
  EXPECT_NEAR(order, 4.0, 0.3) << GetParam() << " errors " << errors.front() << " .. " << errors.back();
  EXPECT_LT(errors.back(), 1e-8) << GetParam();
  std::cout << GetParam() << ": RK4 variance order " << order << ", errors " << errors.front() << " .. "
            << errors.back() << "\n";
}

TEST_P(ProcessTest, OutOfRangeTimesThrow) {
  const double below = p->t_min() - 1e-3 * (p->t_max() - p->t_min());
  const double above = p->t_max() + 1e-3 * (p->t_max() - p->t_min());
  for (double t : {below, above, std::nan("")}) {
    EXPECT_THROW(p->alpha(t), std::domain_error) << GetParam() << " t = " << t;
    EXPECT_THROW(p->lambda(t), std::domain_error) << GetParam() << " t = " << t;
    EXPECT_THROW(p->g2(t), std::domain_error) << GetParam() << " t = " << t;
  }
  // A lambda beyond the range's end maps outside [t_min, T]: refused, not extrapolated.
  EXPECT_THROW(p->t_of_lambda(p->lambda(p->t_min()) + 1.0), std::domain_error) << GetParam();
}

TEST_P(ProcessTest, VectorizedOverloadsAgreeWithScalars) {
  const auto times = interior_times(*p);
  const PerSample t = Eigen::Map<const PerSample>(times.data(), static_cast<Index>(times.size()));
  const PerSample a = p->alpha(t), s = p->sigma(t), l = p->lambda(t), g = p->g2(t), f = p->f(t);
  for (Index i = 0; i < t.size(); ++i) {
    EXPECT_EQ(a[i], p->alpha(t[i]));
    EXPECT_EQ(s[i], p->sigma(t[i]));
    EXPECT_EQ(l[i], p->lambda(t[i]));
    EXPECT_EQ(g[i], p->g2(t[i]));
    EXPECT_EQ(f[i], p->f(t[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(AllProcesses, ProcessTest, ::testing::ValuesIn(kProcesses),
                         [](const auto& info) { return info.param; });

TEST(Process, VariancePreservingIdentities) {
  for (const char* name : {"vp", "vp_cosine"}) {
    const auto p = make_process(name);
    for (double t : interior_times(*p))
      EXPECT_NEAR(p->alpha(t) * p->alpha(t) + p->sigma(t) * p->sigma(t), 1.0, 1e-14) << name << " t = " << t;
  }
  const auto sub = make_process("subvp");
  const auto vp = make_process("vp");
  for (double t : interior_times(*sub)) {
    EXPECT_DOUBLE_EQ(sub->alpha(t), vp->alpha(t));
    EXPECT_NEAR(sub->sigma(t), 1.0 - vp->alpha(t) * vp->alpha(t), 1e-15);
  }
}

TEST(Process, ClosedFormsAtKnownPoints) {
  // VP linear at t = 1: log alpha = -(20 - 0.1)/4 - 0.1/2 = -5.025; g^2 = beta(1) = 20.
  const auto vp = make_process("vp");
  EXPECT_NEAR(std::log(vp->alpha(1.0)), -5.025, 1e-14);
  EXPECT_NEAR(vp->g2(1.0), 20.0, 1e-12);
  EXPECT_NEAR(vp->f(0.5), -0.5 * (0.1 + 0.5 * 19.9), 1e-14);
  // Cosine: DPM-Solver's T = 0.9946 leaves lambda(T) = -4.7776404693750 (computed in Python from
  // eq. 17), above the -5.1 floor used for discrete cosine schedules.
  const auto cosine = make_process("vp_cosine");
  EXPECT_NEAR(cosine->lambda(cosine->t_max()), -4.777640469375063, 1e-10);
  EXPECT_GT(cosine->lambda(cosine->t_max()), -5.1);
  // VE: sigma = 0.01 * 5000^t, so sigma(1) = 50 and sigma(0.5) = sqrt(0.01 * 50).
  const auto ve = make_process("ve");
  EXPECT_NEAR(ve->sigma(1.0), 50.0, 1e-12);
  EXPECT_NEAR(ve->sigma(0.5), std::sqrt(0.5), 1e-14);
  // EDM: sigma = t on [0.002, 80]; flow: lambda(1/2) = 0 and lambda(1) = -inf (not NaN).
  const auto edm = make_process("edm");
  EXPECT_EQ(edm->t_min(), 0.002);
  EXPECT_EQ(edm->t_max(), 80.0);
  EXPECT_EQ(edm->sigma(3.5), 3.5);
  const auto flow = make_process("flow");
  EXPECT_NEAR(flow->lambda(0.5), 0.0, 1e-15);
  EXPECT_EQ(flow->lambda(1.0), -std::numeric_limits<double>::infinity());
}

TEST(Process, PriorScaleAndLogDensity) {
  EXPECT_NEAR(make_process("vp")->prior_std(), 1.0, 1e-14);  // alpha^2 + sigma^2 = 1 exactly
  EXPECT_NEAR(make_process("ve")->prior_std(), std::sqrt(1.0 + 2500.0), 1e-12);
  EXPECT_NEAR(make_process("edm")->prior_std(0.5), std::sqrt(0.25 + 6400.0), 1e-12);
  EXPECT_NEAR(make_process("flow")->prior_std(3.0), 1.0, 0.0);  // alpha(1) = 0: pure noise

  const auto ve = make_process("ve");
  Batch x(2, 3);
  x << 1.0, -2.0, 0.5,
       0.0, 0.0, 0.0;
  const double var = 1.0 + 2500.0;
  const PerSample logp = ve->prior_log_density(x);
  EXPECT_NEAR(logp[0], -0.5 * 5.25 / var - 1.5 * std::log(2.0 * M_PI * var), 1e-12);
  EXPECT_NEAR(logp[1], -1.5 * std::log(2.0 * M_PI * var), 1e-12);
}

TEST(Process, FactoryParametersAndErrors) {
  ProcessParams params;
  params.sigma_min = 0.02;
  params.sigma_max = 100.0;
  const auto ve = make_process("ve", params);
  EXPECT_NEAR(ve->sigma(1.0), 100.0, 1e-12);
  const auto edm = make_process("edm", params);
  EXPECT_EQ(edm->t_min(), 0.02);
  EXPECT_EQ(edm->t_max(), 100.0);
  ProcessParams vp_params;
  vp_params.t_min = 1e-5;
  EXPECT_EQ(make_process("vp", vp_params)->t_min(), 1e-5);

  EXPECT_THROW(make_process("vp_quadratic"), std::invalid_argument);
  ProcessParams bad_cosine;
  bad_cosine.t_max = 1.0;  // alpha(1) = 0: lambda = -inf, refused
  EXPECT_THROW(make_process("vp_cosine", bad_cosine), std::invalid_argument);
  ProcessParams bad_vp;
  bad_vp.t_min = 0.0;  // lambda(0) = +inf
  EXPECT_THROW(make_process("vp", bad_vp), std::invalid_argument);
  try {
    make_process("vp")->alpha(1.5);
    FAIL() << "no exception";
  } catch (const std::domain_error& e) {
    EXPECT_NE(std::string(e.what()).find("vp"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1.5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace diffode
