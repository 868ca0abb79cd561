// DPM-2 and DPM-2 ancestral (k-diffusion): DPM-2 is second order against the probability-flow
// reference on exact mixtures under EDM and VP, with two evaluations per step and an Euler step
// (one evaluation, the denoised value) into sigma = 0; DPM-2 ancestral is DPM-2 at eta = 0 and
// samples p_0 in distribution at eta = 1, as DPM-2 with churn does.
#include "solvers/diffusion/dpm2.hpp"
#include "problems/time_grid.hpp"
#include "tests/support/sample_law.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <string>

namespace diffode {
namespace {

class Dpm2Order : public ::testing::TestWithParam<testing::CaseName> {};

TEST_P(Dpm2Order, ErrorFallsAtOrderTwo) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const auto fit = testing::fit_sampler_order(
      c, {32, 64, 128, 256, 512}, [&](Batch& x, std::span<const double> s) { return sample_dpm_2(*c.denoiser, x, s); },
      [](int n) { return 2 * n; });
  EXPECT_NEAR(fit.order, 2.0, 0.3) << c.name << " errors " << fit.errors.front() << " .. " << fit.errors.back();
}

INSTANTIATE_TEST_SUITE_P(Mixtures, Dpm2Order, testing::standard_cases(), testing::case_test_name);

TEST(Dpm2Sampler, StepToZeroIsEulerAndReturnsTheDenoisedValue) {
  const auto c = testing::make_case("mix16", "edm");
  const std::vector<double> sigmas{c.sigma_max, 1.0, 0.3, 0.0};
  Batch x = c.initial_noise(8);
  TrajectoryRecorder<Batch> recorder;  // keeps every state
  const auto stats = sample_dpm_2(*c.denoiser, x, std::span<const double>(sigmas), {}, nullptr, recorder);
  EXPECT_EQ(stats.nfe, 2 + 2 + 1);
  ASSERT_EQ(recorder.states.size(), 3u);
  Batch denoised;
  (*c.denoiser)(recorder.states[1], 0.3, denoised);
  EXPECT_LT((x - denoised).abs().maxCoeff(), 1e-12);
}

TEST(Dpm2Sampler, StochasticVariantsNeedNoise) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_dpm_2(*c.denoiser, x, std::span<const double>(sigmas), ChurnOptions{.s_churn = 1.0}), std::invalid_argument);
  EXPECT_THROW(sample_dpm_2_ancestral(*c.denoiser, x, std::span<const double>(sigmas)), std::invalid_argument);
}

TEST(Dpm2Ancestral, EtaZeroIsDpm2) {
  const auto c = testing::make_case("mix16", "vp");
  const auto sigmas = karras_grid(*c.process, 10, FinalStep::to_zero).sigma;
  Batch x = c.initial_noise(8), y = x;
  sample_dpm_2(*c.denoiser, x, std::span<const double>(sigmas));
  const auto stats = sample_dpm_2_ancestral(*c.denoiser, y, std::span<const double>(sigmas), {.eta = 0.0});
  EXPECT_EQ(stats.nfe, 2 * 10 - 1);
  EXPECT_TRUE((x == y).all());
}

// eta > 1 clips sigma_up to sigma_next, so sigma_down = 0: an Euler step to the denoised value, then
// fresh noise of the full size sigma_next (the DDPM-like limit), not a noise-free sample at sigma_next.
TEST(Dpm2Ancestral, LargeEtaStepsToTheDenoisedValueAndRenewsAllNoise) {
  const auto c = testing::make_case("ring2d", "edm");
  const std::vector<double> sigmas{c.sigma_max, 2.0};
  const SigmaNoise<Batch> noise(4, sigmas[0], 2);
  Batch x = c.initial_noise(6), denoised, z;
  (*c.denoiser)(x, sigmas[0], denoised);
  noise.normal(sigmas[0], sigmas[1], x, z);
  const auto stats = sample_dpm_2_ancestral(*c.denoiser, x, std::span<const double>(sigmas), {.eta = 5.0}, &noise);
  EXPECT_EQ(stats.nfe, 1);
  EXPECT_LT((x - (denoised + 2.0 * z)).abs().maxCoeff(), 1e-12);
}

// Samples of p_0: mean and covariance within 4.5 standard errors, two-sample KS on 10 projections
// against independent exact draws at family-wise level 1e-3; 48 Karras steps, 3000 samples. The
// control, the same sampler with its noise switched off (s_noise = 0: the steps still remove the
// variance the noise should restore), must fail the same checks.
void expect_data_law(const testing::DiffusionCase& c, const Batch& x, const Batch& control, std::uint64_t exact_seed,
                     const std::string& label) {
  const auto& mixture = c.predictor->mixture();
  const testing::LawCheck check{.mean = mixture.mean(), .covariance = mixture.covariance(), .exact = mixture.sample(x.rows(), exact_seed)};
  testing::expect_law_with_failing_control(check, x, control, c.name + " " + label);
}

TEST(Dpm2Ancestral, SamplesTheDataLaw) {
  const auto c = testing::make_case("ring2d", "vp");
  const auto sigmas = karras_grid(*c.process, 48, FinalStep::to_zero).sigma;
  const SigmaNoise<Batch> noise(2, sigmas[0], 2);
  auto run = [&](double s_noise) {
    Batch x = c.initial_noise(3000, 9);
    const auto stats = sample_dpm_2_ancestral(*c.denoiser, x, std::span<const double>(sigmas), {.s_noise = s_noise}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, 2 * 48 - 1);
    return x;
  };
  expect_data_law(c, run(1.0), run(0.0), 1002, "dpm_2_ancestral (control: s_noise = 0)");
}

TEST(Dpm2Sampler, WithChurnSamplesTheDataLaw) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto sigmas = karras_grid(*c.process, 48, FinalStep::to_zero).sigma;
  const SigmaNoise<Batch> noise(3, sigmas[0], 2);
  auto run = [&](double s_noise) {
    Batch x = c.initial_noise(3000, 10);
    const auto stats = sample_dpm_2(*c.denoiser, x, std::span<const double>(sigmas),
                                    ChurnOptions{.s_churn = 40.0, .s_tmin = 0.05, .s_tmax = 50.0, .s_noise = s_noise}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, 2 * 48 - 1);
    return x;
  };
  expect_data_law(c, run(1.0), run(0.0), 1004, "dpm_2, churn 40 (control: s_noise = 0)");
}

}  // namespace
}  // namespace diffode
