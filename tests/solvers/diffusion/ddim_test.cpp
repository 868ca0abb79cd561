// DDIM: first order at eta = 0 against the probability-flow reference, the identity with Euler's
// step in sigma, and with eta > 0 the exact p_0 in distribution.
#include "solvers/diffusion/ddim.hpp"
#include "solvers/diffusion/ddpm.hpp"
#include "solvers/diffusion/euler.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"
#include "tests/support/sample_law.hpp"

#include <gtest/gtest.h>


namespace diffode {
namespace {

using Case = testing::CaseName;
const auto kCases = ::testing::Values(Case{"ring2d", "edm"}, Case{"ring2d", "vp"}, Case{"mix16", "edm"}, Case{"mix16", "vp"});

class DDIMOrder : public ::testing::TestWithParam<Case> {};

TEST_P(DDIMOrder, DeterministicDDIMIsFirstOrder) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const auto fit = testing::fit_sampler_order(
      c, {64, 96, 128, 192, 256}, [&](Batch& x, std::span<const double> s) { return sample_ddim(*c.denoiser, x, s); },
      [](int n) { return n; });
  EXPECT_NEAR(fit.order, 1.0, 0.3) << c.name << " errors " << fit.errors.front() << " .. " << fit.errors.back();
}

// D + (sigma_next/sigma)(x - D) and x + (sigma_next - sigma)(x - D)/sigma are one formula: DDIM at
// eta = 0 is Euler's method in sigma (k-diffusion's sample_euler), on any grid, to 0 included.
TEST_P(DDIMOrder, EtaZeroEqualsEulerInSigma) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const Batch x_T = c.initial_noise(16);
  auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, 12);
  sigmas.push_back(0.0);
  Batch a = x_T, b = x_T;
  sample_ddim(*c.denoiser, a, std::span<const double>(sigmas));
  sample_euler(*c.denoiser, b, std::span<const double>(sigmas));
  EXPECT_LE((a - b).abs().maxCoeff(), 1e-12 * (1.0 + b.abs().maxCoeff()));
}

INSTANTIATE_TEST_SUITE_P(Mixtures, DDIMOrder, kCases, testing::case_test_name);

// With eta > 0, many steps and a final step to 0, the samples follow p_0: mean and covariance
// within 4.5 Monte-Carlo standard errors (max over entries), and KS tests on the axes and 4 random
// projections against exact mixture draws at level 1e-3 each. (Small: every step queries the
// Brownian tree of SigmaNoise for every sample, which dominates the cost.) The same checks reject
// the samples of a 4-step run, so they can fail.
TEST(DDIMSampler, StochasticDDIMSamplesP0) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto& mixture = c.predictor->mixture();
  const Index m = 1000;
  const Batch exact = mixture.sample(m, /*seed=*/2024);
  auto run = [&](int steps) {
    auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, steps);
    sigmas.push_back(0.0);
    Batch x = c.initial_noise(m);
    const SigmaNoise<Batch> noise(/*seed=*/11, c.sigma_max, mixture.dims());
    const auto stats = sample_ddim(*c.denoiser, x, std::span<const double>(sigmas), DDIMOptions{.eta = 0.5}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, steps + 1);
    return x;
  };
  const testing::LawCheck check{
      .mean = mixture.mean(), .covariance = mixture.covariance(), .exact = exact, .extra_directions = 4, .ks_min_p = 1e-3};
  testing::expect_law_with_failing_control(check, run(64), run(4), c.name + " DDIM eta = 0.5, 64 steps (control: 4 steps)");
}

// DDIM(eta = 1) is DDPM with the posterior variance beta~ (Song et al. 2021, Sec. 4.1): the same
// numbers from the same noise.
TEST(DDIMSampler, EtaOneEqualsDDPMPosterior) {
  const auto c = testing::make_case("ring2d", "vp");
  auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, 20);
  sigmas.push_back(0.0);
  const SigmaNoise<Batch> noise(3, c.sigma_max, 2);
  Batch a = c.initial_noise(32), b = a;
  sample_ddim(*c.denoiser, a, std::span<const double>(sigmas), DDIMOptions{.eta = 1.0}, &noise);
  sample_ddpm(*c.denoiser, b, std::span<const double>(sigmas), DDPMOptions{}, &noise);
  EXPECT_LE((a - b).abs().maxCoeff(), 1e-12 * (1.0 + b.abs().maxCoeff()));
}

TEST(DDIMSampler, StochasticWithoutNoiseIsAnError) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_ddim(*c.denoiser, x, std::span<const double>(sigmas), DDIMOptions{.eta = 0.5}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
