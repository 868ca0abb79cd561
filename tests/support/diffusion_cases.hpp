// The standard exact-mixture sampling problems of the sampler tests: a 2-D ring (K = 8) and a 16-D
// random isotropic mixture (K = 10), each under EDM and VP, with the initial noise drawn from the
// prior and a high-accuracy probability-flow reference from the same noise.
#pragma once

#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/denoiser.hpp"
#include "solvers/integrate.hpp"
#include "tests/support/convergence.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace diffode::testing {

struct DiffusionCase {
  std::string name;
  std::unique_ptr<Process> process;
  std::unique_ptr<MixturePredictor> predictor;
  std::unique_ptr<ScaledDenoiser<Batch>> denoiser;
  double sigma_max = 0, sigma_min = 0;  // scale-free sigma~ at T and t_min

  // x~_T = x_T / alpha(T) for x_T ~ N(0, (alpha^2 + sigma^2) I) at T ~ sigma_max N(0, I) in the scaled
  // variables: the usual prior draw, from a fixed seed (rows = samples first_sample...).
  Batch initial_noise(Index samples, std::uint64_t seed = 7) const {
    const auto& mixture = predictor->mixture();
    // A sample of p_T itself (coupled to p_0 draws), scaled: x~_T = x0 + sigma_max eps.
    return mixture.sample_marginal(1.0, sigma_max, samples, seed);
  }
};

// "ring2d" or "mix16" under "edm" or "vp".
inline DiffusionCase make_case(const std::string& mixture, const std::string& process) {
  DiffusionCase c;
  c.name = mixture + "/" + process;
  c.process = make_process(process);
  c.predictor = std::make_unique<MixturePredictor>(mixture == "ring2d" ? GaussianMixture::ring()
                                                                       : GaussianMixture::random_isotropic(16, 10, 3));
  c.denoiser = std::make_unique<ScaledDenoiser<Batch>>(*c.process, *c.predictor);
  c.sigma_max = c.process->scaled_sigma(c.process->t_max());
  c.sigma_min = c.process->scaled_sigma(c.process->t_min());
  return c;
}

// The probability-flow solution from sigma_from to sigma_to (> 0) by classical RK4 in
// s = log sigma, where dx/ds = x - D(x; e^s) is smooth: `steps` steps give an error ~ steps^-4.
inline Batch pf_ode_reference(const DiffusionCase& c, Batch x, double sigma_from, double sigma_to, int steps = 2048) {
  const double s0 = std::log(sigma_from), s1 = std::log(sigma_to), h = (s1 - s0) / steps;
  Batch d1, d2, d3, d4, stage;
  auto slope = [&](const Batch& y, double s, Batch& out) {
    (*c.denoiser)(y, std::exp(s), out);
    out = y - out;
  };
  for (int i = 0; i < steps; ++i) {
    const double s = s0 + i * h;
    slope(x, s, d1);
    stage = x + 0.5 * h * d1;
    slope(stage, s + 0.5 * h, d2);
    stage = x + 0.5 * h * d2;
    slope(stage, s + 0.5 * h, d3);
    stage = x + h * d3;
    slope(stage, s + h, d4);
    x += h / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4);
  }
  return x;
}

// Sigmas uniform in log sigma (= uniform in lambda) from sigma_max to sigma_min, n steps, no final 0.
inline std::vector<double> log_uniform_sigmas(double sigma_max, double sigma_min, int n) {
  std::vector<double> s(n + 1);
  for (int i = 0; i <= n; ++i) s[i] = std::exp(std::log(sigma_max) + (std::log(sigma_min) - std::log(sigma_max)) * i / n);
  s[0] = sigma_max;
  s[n] = sigma_min;
  return s;
}

// Root-mean-square over samples of the per-sample Euclidean error.
inline double rms_error(const Batch& x, const Batch& reference) {
  return std::sqrt((x - reference).square().rowwise().sum().mean());
}

// The four standard cases, for INSTANTIATE_TEST_SUITE_P (with case_test_name for readable names).
using CaseName = std::pair<std::string, std::string>;  // strings: gtest prints them, not their addresses
inline auto standard_cases() {
  return ::testing::Values(CaseName{"ring2d", "edm"}, CaseName{"ring2d", "vp"}, CaseName{"mix16", "edm"}, CaseName{"mix16", "vp"});
}

// Free text as part of a test name, which gtest limits to letters, digits and '_': every other run
// of characters becomes one '_' ("2M SDE eta=0" -> "2M_SDE_eta_0").
inline std::string name_part(std::string_view text) {
  std::string out;
  for (const char ch : text) {
    if (std::isalnum(static_cast<unsigned char>(ch)))
      out += ch;
    else if (!out.empty() && out.back() != '_')
      out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

// "ring2d_edm" for {"ring2d", "edm"}.
inline std::string case_name(const CaseName& c) { return name_part(c.first) + "_" + name_part(c.second); }

// The name generator for suites whose parameter is a CaseName: Mixtures/HeunOrder.X/ring2d_edm
// rather than .../0 with the pointers of the two strings.
inline std::string case_test_name(const ::testing::TestParamInfo<CaseName>& info) { return case_name(info.param); }

struct SamplerOrderFit {
  double order = 0;
  std::vector<double> errors;
};

// The order test every deterministic sampler shares: from the case's noise, run `sample(x, sigmas)`
// (a sampler call returning IntegrationStats) on log-uniform grids of each step count down to
// sigma_end > 0 (the smooth part of the ODE), check it did not fail and spent `nfe(n)` evaluations,
// and fit the slope of the RMS error against the probability-flow reference.
template <class Sample, class Nfe>
SamplerOrderFit fit_sampler_order(const DiffusionCase& c, const std::vector<int>& steps, Sample&& sample, Nfe&& nfe,
                                  Index samples = 32, double sigma_end = 0.05) {
  const Batch x_T = c.initial_noise(samples);
  const Batch reference = pf_ode_reference(c, x_T, c.sigma_max, sigma_end);
  SamplerOrderFit fit;
  std::vector<double> hs;
  for (int n : steps) {
    Batch x = x_T;
    const auto sigmas = log_uniform_sigmas(c.sigma_max, sigma_end, n);
    const IntegrationStats stats = sample(x, std::span<const double>(sigmas));
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, nfe(n)) << c.name << " at " << n << " steps";
    hs.push_back(1.0 / n);
    fit.errors.push_back(rms_error(x, reference));
  }
  fit.order = fitted_order(hs, fit.errors);
  ::testing::Test::RecordProperty("fitted_order", std::to_string(fit.order));
  return fit;
}

}  // namespace diffode::testing
