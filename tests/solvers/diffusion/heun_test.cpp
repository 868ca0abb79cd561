// The Heun sampler (Karras et al. 2022, Algorithm 2): second order against the probability-flow
// reference on exact mixtures under EDM and VP, two evaluations per step and an Euler step (one
// evaluation, returning the denoised value) into sigma = 0; with churn, stochastic, seeded, and
// sampling p_0 in distribution.
#include "solvers/diffusion/heun.hpp"
#include "problems/time_grid.hpp"
#include "tests/support/sample_law.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

namespace diffode {
namespace {

class HeunOrder : public ::testing::TestWithParam<testing::CaseName> {};

TEST_P(HeunOrder, ErrorFallsAtOrderTwo) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const auto fit = testing::fit_sampler_order(
      c, {32, 64, 128, 256, 512}, [&](Batch& x, std::span<const double> s) { return sample_heun(*c.denoiser, x, s); },
      [](int n) { return 2 * n; });
  EXPECT_NEAR(fit.order, 2.0, 0.3) << c.name << " errors " << fit.errors.front() << " .. " << fit.errors.back();
}

INSTANTIATE_TEST_SUITE_P(Mixtures, HeunOrder, testing::standard_cases(), testing::case_test_name);

TEST(HeunSampler, StepToZeroIsEulerAndReturnsTheDenoisedValue) {
  const auto c = testing::make_case("mix16", "vp");
  const std::vector<double> sigmas{c.sigma_max, 1.0, 0.3, 0.0};
  Batch x = c.initial_noise(8);
  TrajectoryRecorder<Batch> recorder;  // keeps every state
  const auto stats = sample_heun(*c.denoiser, x, std::span<const double>(sigmas), {}, nullptr, recorder);
  EXPECT_EQ(stats.nfe, 2 + 2 + 1);
  ASSERT_EQ(recorder.states.size(), 3u);
  Batch denoised;
  (*c.denoiser)(recorder.states[1], 0.3, denoised);
  EXPECT_LT((x - denoised).abs().maxCoeff(), 1e-12);
}

TEST(HeunSampler, ChurnWithoutNoiseIsAnError) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_heun(*c.denoiser, x, std::span<const double>(sigmas), ChurnOptions{.s_churn = 1.0}), std::invalid_argument);
}

// Churn is stochastic: reproducible from its seed, different for another seed, and absent where no
// sigma lies in [s_tmin, s_tmax] (then no noise is drawn and the result is the deterministic one).
TEST(HeunSampler, ChurnIsSeededNoiseInsideItsWindowOnly) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto sigmas = karras_grid(*c.process, 12, FinalStep::to_zero).sigma;
  const std::span<const double> grid(sigmas);
  const ChurnOptions churn{.s_churn = 10.0, .s_tmin = 0.05, .s_tmax = 50.0};
  const SigmaNoise<Batch> noise_a(1, sigmas[0], 2), noise_b(2, sigmas[0], 2);
  const Batch x_T = c.initial_noise(16);
  Batch plain = x_T, a1 = x_T, a2 = x_T, b = x_T, outside = x_T;
  sample_heun(*c.denoiser, plain, grid);
  sample_heun(*c.denoiser, a1, grid, churn, &noise_a);
  sample_heun(*c.denoiser, a2, grid, churn, &noise_a);
  sample_heun(*c.denoiser, b, grid, churn, &noise_b);
  sample_heun(*c.denoiser, outside, grid, ChurnOptions{.s_churn = 10.0, .s_tmin = 100.0, .s_tmax = 200.0}, &noise_a);
  EXPECT_TRUE((a1 == a2).all());
  EXPECT_GT((a1 - b).abs().maxCoeff(), 1e-3);
  EXPECT_GT((a1 - plain).abs().maxCoeff(), 1e-3);
  EXPECT_TRUE((outside == plain).all());
}

// With churn (Karras et al.'s S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1, exact for an
// exact denoiser) the samples follow p_0: mean and covariance within 4.5 standard errors and
// two-sample KS on 10 projections against independent exact draws at family-wise level 1e-3. The
// control, the same churn with its noise switched off (S_noise = 0: sigma is raised to sigma_hat
// but nothing is added, so every churn step over-contracts), must fail the same checks.
TEST(HeunSampler, WithChurnSamplesTheDataLaw) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto& mixture = c.predictor->mixture();
  const auto sigmas = karras_grid(*c.process, 48, FinalStep::to_zero).sigma;
  const SigmaNoise<Batch> noise(3, sigmas[0], mixture.dims());
  const Index n = 3000;
  auto run = [&](double s_noise) {
    Batch x = c.initial_noise(n, 10);
    const auto stats = sample_heun(*c.denoiser, x, std::span<const double>(sigmas),
                                   ChurnOptions{.s_churn = 40.0, .s_tmin = 0.05, .s_tmax = 50.0, .s_noise = s_noise}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, 2 * 48 - 1);
    return x;
  };
  const testing::LawCheck check{.mean = mixture.mean(), .covariance = mixture.covariance(), .exact = mixture.sample(n, 1003)};
  testing::expect_law_with_failing_control(check, run(1.0), run(0.0), c.name + " heun, churn 40 (control: s_noise = 0)");
}

}  // namespace
}  // namespace diffode
