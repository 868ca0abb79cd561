// The Euler ancestral sampler: one evaluation per step, Euler's sampler exactly at eta = 0, the
// same samples whatever the batch split, and p_0 in distribution at eta = 1 (with a control: too
// little noise, s_noise = 0.5, is caught by the same checks).
#include "solvers/diffusion/euler_ancestral.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/euler.hpp"
#include "tests/support/sample_law.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

namespace diffode {
namespace {

TEST(EulerAncestral, EtaZeroIsTheEulerSampler) {
  const auto c = testing::make_case("mix16", "vp");
  const auto sigmas = karras_grid(*c.process, 10, FinalStep::to_zero).sigma;
  Batch x = c.initial_noise(8), y = x;
  sample_euler(*c.denoiser, x, std::span<const double>(sigmas));
  const auto stats = sample_euler_ancestral(*c.denoiser, y, std::span<const double>(sigmas), {.eta = 0.0});
  EXPECT_EQ(stats.nfe, 10);
  EXPECT_TRUE((x == y).all());
}

TEST(EulerAncestral, NeedsNoiseAndANonNegativeEta) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  const SigmaNoise<Batch> noise(1, 80.0, 2);
  EXPECT_THROW(sample_euler_ancestral(*c.denoiser, x, std::span<const double>(sigmas)), std::invalid_argument);
  EXPECT_THROW(sample_euler_ancestral(*c.denoiser, x, std::span<const double>(sigmas), {.eta = -0.5}, &noise),
               std::invalid_argument);
}

// The noise of sample i comes from its own Brownian path: a batch split with first_sample offsets
// gives bitwise the same samples.
TEST(EulerAncestral, SamplesDoNotDependOnTheBatchSplit) {
  const auto c = testing::make_case("ring2d", "vp");
  const auto sigmas = karras_grid(*c.process, 8, FinalStep::to_zero).sigma;
  const std::span<const double> grid(sigmas);
  const SigmaNoise<Batch> all(5, sigmas[0], 2), tail(5, sigmas[0], 2, 6);
  Batch x = c.initial_noise(10);
  Batch head_x = x.topRows(6), tail_x = x.bottomRows(4);
  sample_euler_ancestral(*c.denoiser, x, grid, {}, &all);
  sample_euler_ancestral(*c.denoiser, head_x, grid, {}, &all);
  sample_euler_ancestral(*c.denoiser, tail_x, grid, {}, &tail);
  EXPECT_TRUE((x.topRows(6) == head_x).all());
  EXPECT_TRUE((x.bottomRows(4) == tail_x).all());
}

// Samples of p_0: mean and covariance within 4.5 standard errors, two-sample KS on 10 projections
// against independent exact draws at family-wise level 1e-3. Weak order 1: 96 Karras steps keep
// the bias near 2 standard errors at 3000 samples (measured: mean 1.6, covariance 1.3).
TEST(EulerAncestral, SamplesTheDataLaw) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto& mixture = c.predictor->mixture();
  const auto sigmas = karras_grid(*c.process, 96, FinalStep::to_zero).sigma;
  const SigmaNoise<Batch> noise(1, sigmas[0], mixture.dims());
  const Index n = 3000;
  Batch x = c.initial_noise(n, 8);
  const auto stats = sample_euler_ancestral(*c.denoiser, x, std::span<const double>(sigmas), {}, &noise);
  ASSERT_FALSE(stats.failed) << stats.failure;
  EXPECT_EQ(stats.nfe, 96);
  const auto law = testing::compare_law(x, mixture.mean(), mixture.covariance(), mixture.sample(n, 1001));
  EXPECT_LT(law.mean_z, 4.5);
  EXPECT_LT(law.covariance_z, 4.5);
  EXPECT_LT(law.ks, law.ks_critical);
}

// The checks have power: half the noise (s_noise = 0.5) leaves samples too concentrated.
TEST(EulerAncestral, TooLittleNoiseFailsTheLawChecks) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto& mixture = c.predictor->mixture();
  const auto sigmas = karras_grid(*c.process, 32, FinalStep::to_zero).sigma;
  const SigmaNoise<Batch> noise(1, sigmas[0], mixture.dims());
  const Index n = 3000;
  Batch x = c.initial_noise(n, 8);
  sample_euler_ancestral(*c.denoiser, x, std::span<const double>(sigmas), {.eta = 1.0, .s_noise = 0.5}, &noise);
  const auto law = testing::compare_law(x, mixture.mean(), mixture.covariance(), mixture.sample(n, 1001));
  EXPECT_GT(law.covariance_z, 4.5);
  EXPECT_GT(law.ks, law.ks_critical);
}

}  // namespace
}  // namespace diffode
