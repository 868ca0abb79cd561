// UniPC: UniPC-p is of order p + 1 (UniC raises UniP-p's order p by one, Zhao et al. 2023,
// Theorem 3.2) for p = 1, 2, 3, both B(h) variants, data and noise prediction, on the four exact-
// mixture cases; UniP-p alone is of order p; one evaluation per step; order 1 without corrector is
// DDIM; a final 0 in the grid is uni_pc.py's denoise_to_zero.
#include "solvers/diffusion/ddim.hpp"
#include "solvers/diffusion/unipc.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace diffode {
namespace {

using Case = testing::CaseName;

// Fitted slope of the error against 1/N over N = 64..256 (the asymptotic range: the slopes from
// N = 16 on creep up to these), with lower_order_final off so that the last steps keep order p
// (the reference's lower-order last steps would cap the global order at 2).
double fitted_unipc_order(const testing::DiffusionCase& c, const Batch& x_T, const Batch& reference, double sigma_end,
                          UniPCOptions options, std::vector<double>& errors) {
  std::vector<double> hs;
  for (int n : {64, 96, 128, 192, 256}) {
    Batch x = x_T;
    const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, sigma_end, n);
    const auto stats = sample_unipc(*c.denoiser, x, std::span<const double>(sigmas), options);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, n);  // one evaluation at sigma_max, then one per step but the last
    hs.push_back(1.0 / n);
    errors.push_back(testing::rms_error(x, reference));
  }
  return testing::fitted_order(hs, errors);
}

class UniPCOrder : public ::testing::TestWithParam<Case> {};

TEST_P(UniPCOrder, UniPCpIsOfOrderPPlusOne) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const double sigma_end = 0.05;
  const Batch x_T = c.initial_noise(32);
  // 4096 RK4 steps: the reference's own error stays far below UniPC-3's 1e-6 at N = 256.
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, sigma_end, 4096);
  for (auto prediction : {UniPCPrediction::data, UniPCPrediction::noise}) {
    for (auto variant : {UniPCVariant::bh1, UniPCVariant::bh2}) {
      for (int p : {1, 2, 3}) {
        std::vector<double> errors;
        const double order = fitted_unipc_order(
            c, x_T, reference, sigma_end,
            UniPCOptions{.order = p, .variant = variant, .prediction = prediction, .lower_order_final = false}, errors);
        const auto label = fmt::format("{} {} {} p={}", c.name, prediction == UniPCPrediction::data ? "data" : "noise",
                                       variant == UniPCVariant::bh1 ? "bh1" : "bh2", p);
        RecordProperty(label, std::to_string(order));
        EXPECT_NEAR(order, p + 1.0, 0.3) << label << " errors " << errors.front() << " .. " << errors.back();
      }
    }
  }
}

TEST_P(UniPCOrder, PredictorAloneIsOfOrderP) {
  const auto c = testing::make_case(GetParam().first, GetParam().second);
  const double sigma_end = 0.05;
  const Batch x_T = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, sigma_end, 4096);
  for (int p : {1, 2, 3}) {
    std::vector<double> errors;
    const double order = fitted_unipc_order(c, x_T, reference, sigma_end,
                                            UniPCOptions{.order = p, .lower_order_final = false, .corrector = false}, errors);
    RecordProperty(fmt::format("{} UniP p={}", c.name, p), std::to_string(order));
    EXPECT_NEAR(order, p, 0.3) << c.name << " UniP-" << p << " errors " << errors.front() << " .. " << errors.back();
  }
}

INSTANTIATE_TEST_SUITE_P(Mixtures, UniPCOrder,
                         ::testing::Values(Case{"ring2d", "edm"}, Case{"ring2d", "vp"}, Case{"mix16", "edm"}, Case{"mix16", "vp"}),
                         testing::case_test_name);

// UniP-1 is the first-order exponential integrator, DDIM (eta = 0), in either parameterization.
TEST(UniPCSampler, OrderOneWithoutCorrectorIsDDIM) {
  const auto c = testing::make_case("mix16", "vp");
  const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, 15);
  Batch ddim = c.initial_noise(8);
  const Batch x_T = ddim;
  sample_ddim(*c.denoiser, ddim, std::span<const double>(sigmas));
  for (auto prediction : {UniPCPrediction::data, UniPCPrediction::noise}) {
    Batch x = x_T;
    sample_unipc(*c.denoiser, x, std::span<const double>(sigmas), UniPCOptions{.order = 1, .prediction = prediction, .corrector = false});
    EXPECT_LE((x - ddim).abs().maxCoeff(), 1e-12 * (1.0 + ddim.abs().maxCoeff()));
  }
}

// A grid ending in 0 runs the positive steps as without it (the last positive step uncorrected),
// then returns D at the final point: uni_pc.py's denoise_to_zero, one more evaluation.
TEST(UniPCSampler, TrailingZeroIsDenoiseToZero) {
  const auto c = testing::make_case("ring2d", "edm");
  auto sigmas = testing::log_uniform_sigmas(c.sigma_max, 0.01, 10);
  Batch plain = c.initial_noise(8), with_zero = plain;
  const auto s1 = sample_unipc(*c.denoiser, plain, std::span<const double>(sigmas), UniPCOptions{.order = 3});
  sigmas.push_back(0.0);
  const auto s2 = sample_unipc(*c.denoiser, with_zero, std::span<const double>(sigmas), UniPCOptions{.order = 3});
  EXPECT_EQ(s1.nfe, 10);
  EXPECT_EQ(s2.nfe, 11);
  EXPECT_EQ(s2.steps, 11);
  Batch denoised;
  (*c.denoiser)(plain, 0.01, denoised);
  EXPECT_LE((with_zero - denoised).abs().maxCoeff(), 1e-14);
}

TEST(UniPCSampler, RejectsBadOptions) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(2);
  const std::vector<double> two{80.0, 1.0, 0.1};
  EXPECT_THROW(sample_unipc(*c.denoiser, x, std::span<const double>(two), UniPCOptions{.order = 4}), std::invalid_argument);
  EXPECT_THROW(sample_unipc(*c.denoiser, x, std::span<const double>(two), UniPCOptions{.order = 3}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
