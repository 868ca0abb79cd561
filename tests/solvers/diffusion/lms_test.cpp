// The linear multistep sampler and its weights: exact integrals of Lagrange basis polynomials (the
// classical Adams-Bashforth coefficients on a uniform grid, exactness for polynomials on any grid),
// and LMS of order k = 1..4 falling at order k against the probability-flow reference on exact
// mixtures under EDM and VP, with one evaluation per step; order 1 is Euler's sampler.
#include "solvers/diffusion/lms.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/euler.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

namespace diffode {
namespace {

// Nodes t_i, t_{i-1}, ... = 0, -h, -2h, ... integrated over [0, h]: h times the Adams-Bashforth
// coefficients (Hairer, Norsett & Wanner I, Table III.1.1).
TEST(LagrangeWeights, UniformGridGivesAdamsBashforth) {
  const double h = 0.3;
  const std::vector<std::vector<double>> ab{{1.0}, {1.5, -0.5}, {23.0 / 12, -16.0 / 12, 5.0 / 12}, {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24}};
  for (const auto& coeffs : ab) {
    std::vector<double> nodes;
    for (std::size_t j = 0; j < coeffs.size(); ++j) nodes.push_back(-h * static_cast<double>(j));
    const auto w = lagrange_integral_weights(nodes, 0.0, h);
    ASSERT_EQ(w.size(), coeffs.size());
    for (std::size_t j = 0; j < coeffs.size(); ++j) EXPECT_NEAR(w[j], h * coeffs[j], 1e-15) << coeffs.size() << " nodes, j = " << j;
  }
}

// On uneven, decreasing sigma-like nodes, integrated downwards: sum_j w_j p(t_j) = int_a^b p for
// every polynomial p of degree < m, to rounding.
TEST(LagrangeWeights, ExactForPolynomialsOfDegreeBelowTheNodeCount) {
  const std::vector<double> nodes{3.1, 7.4, 12.0, 25.5};  // sigma_i, sigma_{i-1}, ...
  const double a = 3.1, b = 1.2;
  for (std::size_t m = 1; m <= nodes.size(); ++m) {
    const auto w = lagrange_integral_weights(std::span(nodes).first(m), a, b);
    for (std::size_t degree = 0; degree < m; ++degree) {
      double quadrature = 0;
      for (std::size_t j = 0; j < m; ++j) quadrature += w[j] * std::pow(nodes[j], static_cast<double>(degree));
      const double exact = (std::pow(b, degree + 1.0) - std::pow(a, degree + 1.0)) / static_cast<double>(degree + 1);
      EXPECT_NEAR(quadrature, exact, 1e-13 * std::max(1.0, std::abs(exact))) << m << " nodes, degree " << degree;
    }
  }
  EXPECT_THROW(lagrange_integral_weights(std::vector<double>{1.0, 2.0, 1.0}, 1.0, 0.5), std::invalid_argument);
}

TEST(LmsSampler, OrderOneIsTheEulerSampler) {
  const auto c = testing::make_case("mix16", "edm");
  const auto sigmas = karras_grid(*c.process, 10, FinalStep::to_zero).sigma;
  Batch x = c.initial_noise(8), y = x;
  sample_euler(*c.denoiser, x, std::span<const double>(sigmas));
  const auto stats = sample_lms(*c.denoiser, y, std::span<const double>(sigmas), {.order = 1});
  EXPECT_EQ(stats.nfe, 10);
  EXPECT_TRUE((x == y).all());
  EXPECT_THROW(sample_lms(*c.denoiser, y, std::span<const double>(sigmas), {.order = 0}), std::invalid_argument);
}

// (mixture, process, order, startup). The step counts keep the error in the asymptotic range and
// far above the reference's own (~1e-11). Order k needs starting values of order k: the RK4
// startup gives them for k <= 4; k-diffusion's lower-order startup is O(h^2), so it is checked
// at k <= 2 only (for k = 3, 4 its global error is O(h^k) + O(h^2): see lms.hpp).
class LmsOrder : public ::testing::TestWithParam<std::tuple<std::string, std::string, int, LmsStartup>> {};

TEST_P(LmsOrder, ErrorFallsAtItsOrder) {
  const auto [mixture, process, order, startup] = GetParam();
  const auto c = testing::make_case(mixture, process);
  const double sigma_end = 0.05;
  const Batch x_T = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, sigma_end);
  const int first = order < 3 ? 64 : 128;
  std::vector<double> hs, errors;
  for (int n = first; n <= 16 * first; n *= 2) {
    Batch x = x_T;
    const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, sigma_end, n);
    const auto stats = sample_lms(*c.denoiser, x, std::span<const double>(sigmas), {.order = order, .startup = startup});
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, n + (startup == LmsStartup::rk4 ? 3 * (order - 1) : 0));
    hs.push_back(1.0 / n);
    errors.push_back(testing::rms_error(x, reference));
  }
  const double fitted = testing::fitted_order(hs, errors);
  RecordProperty("fitted_order", std::to_string(fitted));
  EXPECT_NEAR(fitted, order, 0.3) << c.name << " order " << order << " errors " << errors.front() << " .. " << errors.back();
}

// Named mixture_process_order (the startup is the suite's name), e.g. RungeKuttaStartup/LmsOrder.X/ring2d_edm_order3.
std::string lms_case_name(const ::testing::TestParamInfo<LmsOrder::ParamType>& info) {
  const auto& [mixture, process, order, startup] = info.param;
  return testing::case_name({mixture, process}) + "_order" + std::to_string(order);
}

INSTANTIATE_TEST_SUITE_P(RungeKuttaStartup, LmsOrder,
                         ::testing::Combine(::testing::Values("ring2d", "mix16"), ::testing::Values("edm", "vp"),
                                            ::testing::Values(1, 2, 3, 4), ::testing::Values(LmsStartup::rk4)),
                         lms_case_name);
INSTANTIATE_TEST_SUITE_P(KDiffusionStartup, LmsOrder,
                         ::testing::Combine(::testing::Values("ring2d", "mix16"), ::testing::Values("edm", "vp"),
                                            ::testing::Values(2), ::testing::Values(LmsStartup::lower_order)),
                         lms_case_name);

}  // namespace
}  // namespace diffode
