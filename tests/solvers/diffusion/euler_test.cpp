// The Euler sampler: first order against the probability-flow reference on exact mixtures under
// EDM and VP, the same samples whatever the batch split, and churn that needs noise.
#include "solvers/diffusion/euler.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

namespace diffode {
namespace {

class EulerOrder : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(EulerOrder, ErrorFallsAtOrderOne) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  // Stop at sigma = 0.05: the order is a property of the smooth part of the ODE.
  const double sigma_end = 0.05;
  const Batch x_T = c.initial_noise(64);
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, sigma_end);
  std::vector<double> hs, errors;
  for (int n : {64, 128, 256, 512, 1024}) {
    Batch x = x_T;
    const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, sigma_end, n);
    const auto stats = sample_euler(*c.denoiser, x, std::span<const double>(sigmas));
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, n);
    hs.push_back(1.0 / n);
    errors.push_back(testing::rms_error(x, reference));
  }
  const double order = testing::fitted_order(hs, errors);
  RecordProperty("fitted_order", std::to_string(order));
  EXPECT_NEAR(order, 1.0, 0.3) << c.name << " errors " << errors.front() << " .. " << errors.back();
}

INSTANTIATE_TEST_SUITE_P(Mixtures, EulerOrder,
                         ::testing::Values(std::pair{"ring2d", "edm"}, std::pair{"ring2d", "vp"}, std::pair{"mix16", "edm"},
                                           std::pair{"mix16", "vp"}));

TEST(EulerSampler, ChurnWithoutNoiseIsAnError) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_euler(*c.denoiser, x, std::span<const double>(sigmas), ChurnOptions{.s_churn = 1.0}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
