// DPM-Solver (Lu et al. 2022, arXiv:2206.00927): DPM-Solver-1/2/3 converge at orders 1, 2, 3 to the
// probability-flow reference on exact mixtures under EDM and VP; the fast schedule spends exactly
// its NFE with the reference's orders; a step to sigma = 0 is the denoised value; the adaptive
// DPM-Solver-12/-23 get closer to the reference as the tolerance tightens, with NFE accounted.
#include "solvers/diffusion/dpm_solver.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <iostream>
#include <numeric>
#include <string>
#include <tuple>

namespace diffode {
namespace {

constexpr double kSigmaEnd = 0.05;  // the order is a property of the smooth part of the ODE

struct OrderCase {
  int order;
  std::vector<int> steps;  // asymptotic range, errors well above the reference's ~1e-10

  friend void PrintTo(const OrderCase& oc, std::ostream* os) {
    *os << "DPM-Solver-" << oc.order << " at " << oc.steps.front() << ".." << oc.steps.back() << " steps";
  }
};

class DpmSolverOrder : public ::testing::TestWithParam<std::tuple<OrderCase, testing::CaseName>> {};

TEST_P(DpmSolverOrder, ErrorFallsAtItsOrder) {
  const auto& [oc, mix] = GetParam();
  const auto c = testing::make_case(mix.first, mix.second);
  const auto fit = testing::fit_sampler_order(
      c, oc.steps,
      [&](Batch& x, std::span<const double> s) { return sample_dpm_solver(*c.denoiser, x, s, DpmSolverOptions{.order = oc.order}); },
      [&](int n) { return oc.order * n; }, 32, kSigmaEnd);
  EXPECT_NEAR(fit.order, oc.order, 0.3) << c.name << " DPM-Solver-" << oc.order << " errors " << fit.errors.front() << " .. "
                                         << fit.errors.back();
}

INSTANTIATE_TEST_SUITE_P(
    Mixtures, DpmSolverOrder,
    ::testing::Combine(::testing::Values(OrderCase{1, {64, 128, 256, 512, 1024}}, OrderCase{2, {16, 32, 64, 128, 256}},
                                         OrderCase{3, {48, 64, 96, 128, 192, 256}}),
                       ::testing::Values(std::pair{"ring2d", "edm"}, std::pair{"ring2d", "vp"}, std::pair{"mix16", "edm"},
                                         std::pair{"mix16", "vp"})),
    [](const auto& info) { return "order" + std::to_string(std::get<0>(info.param).order) + "_" + testing::case_name(std::get<1>(info.param)); });

TEST(DpmSolverFast, ScheduleMatchesTheReference) {
  // dpm_solver_pytorch.py get_orders_and_timesteps_for_singlestep_solver, order 3 (= k-diffusion).
  EXPECT_EQ(dpm_solver_fast_schedule(1, 80, 0.01).orders, (std::vector<int>{1}));
  EXPECT_EQ(dpm_solver_fast_schedule(2, 80, 0.01).orders, (std::vector<int>{2}));
  EXPECT_EQ(dpm_solver_fast_schedule(3, 80, 0.01).orders, (std::vector<int>{2, 1}));
  EXPECT_EQ(dpm_solver_fast_schedule(9, 80, 0.01).orders, (std::vector<int>{3, 3, 2, 1}));
  EXPECT_EQ(dpm_solver_fast_schedule(10, 80, 0.01).orders, (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(dpm_solver_fast_schedule(11, 80, 0.01).orders, (std::vector<int>{3, 3, 3, 2}));
  EXPECT_EQ(dpm_solver_fast_schedule(7, 80, 0.01, 2).orders, (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(dpm_solver_fast_schedule(8, 80, 0.01, 2).orders, (std::vector<int>{2, 2, 2, 2}));
  EXPECT_EQ(dpm_solver_fast_schedule(4, 80, 0.01, 1).orders, (std::vector<int>{1, 1, 1, 1}));
  for (int nfe = 1; nfe <= 30; ++nfe) {
    for (int order = 1; order <= 3; ++order) {
      const auto s = dpm_solver_fast_schedule(nfe, 80.0, 0.01, order);
      EXPECT_EQ(std::accumulate(s.orders.begin(), s.orders.end(), 0), nfe) << nfe << " " << order;
      ASSERT_EQ(s.sigmas.size(), s.orders.size() + 1);
      EXPECT_EQ(s.sigmas.front(), 80.0);
      EXPECT_EQ(s.sigmas.back(), 0.01);
      // Uniform in lambda = -log sigma.
      const double dl = std::log(s.sigmas[0] / s.sigmas[1]);
      for (std::size_t i = 1; i + 1 < s.sigmas.size(); ++i) EXPECT_NEAR(std::log(s.sigmas[i] / s.sigmas[i + 1]), dl, 1e-12);
    }
  }
}

TEST(DpmSolverFast, SpendsExactlyItsNfeAndConverges) {
  const auto c = testing::make_case("mix16", "vp");
  const Batch x_T = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, kSigmaEnd);
  double previous = std::numeric_limits<double>::infinity();
  for (int nfe : {10, 20, 40, 80}) {
    Batch x = x_T;
    const auto stats = sample_dpm_solver_fast(*c.denoiser, x, c.sigma_max, kSigmaEnd, nfe);
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, nfe);
    const double error = testing::rms_error(x, reference);
    EXPECT_LT(error, previous / 4.0) << "nfe " << nfe;  // at least second order
    previous = error;
  }
}

TEST(DpmSolver, StepToZeroIsTheDenoisedValue) {
  const auto c = testing::make_case("ring2d", "vp");
  for (int order = 1; order <= 3; ++order) {
    Batch x = c.initial_noise(8);
    const std::vector<double> sigmas{c.sigma_max, 1.0, 0.1, 0.0};
    const std::vector<double> head(sigmas.begin(), sigmas.end() - 1);
    Batch before = x;
    sample_dpm_solver(*c.denoiser, before, std::span<const double>(head), DpmSolverOptions{.order = order});
    Batch denoised;
    (*c.denoiser)(before, 0.1, denoised);
    const auto stats = sample_dpm_solver(*c.denoiser, x, std::span<const double>(sigmas), DpmSolverOptions{.order = order});
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, 2 * order + 1);
    EXPECT_LT((x - denoised).abs().maxCoeff(), 1e-12) << "order " << order;
  }
}

TEST(DpmSolver, RejectsBadOptions) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(2);
  const std::vector<double> sigmas{80.0, 1.0, 0.1};
  EXPECT_THROW(sample_dpm_solver(*c.denoiser, x, std::span<const double>(sigmas), DpmSolverOptions{.order = 4}),
               std::invalid_argument);
  EXPECT_THROW(sample_dpm_solver(*c.denoiser, x, std::span<const double>(sigmas), DpmSolverOptions{.orders = {3}}),
               std::invalid_argument);
  EXPECT_THROW(sample_dpm_solver_adaptive(*c.denoiser, x, 80.0, 0.0), std::invalid_argument);
  EXPECT_THROW(sample_dpm_solver_adaptive(*c.denoiser, x, 80.0, 0.1, DpmSolverAdaptiveOptions{.order = 1}),
               std::invalid_argument);
}

// Adaptive DPM-Solver-12 / -23: tighter tolerances give smaller errors against the reference, at
// more evaluations; every attempt costs `order` NFE.
class DpmSolverAdaptive
    : public ::testing::TestWithParam<std::tuple<int, DpmAdaptiveController, testing::CaseName>> {};

TEST_P(DpmSolverAdaptive, ErrorFallsAsTheToleranceTightens) {
  const auto& [order, controller, mix] = GetParam();
  const auto c = testing::make_case(mix.first, mix.second);
  const Batch x_T = c.initial_noise(32);
  const Batch reference = testing::pf_ode_reference(c, x_T, c.sigma_max, kSigmaEnd);
  std::vector<double> errors;
  std::vector<Index> nfes;
  for (double tol : {1e-2, 1e-3, 1e-4, 1e-5}) {
    Batch x = x_T;
    const auto stats = sample_dpm_solver_adaptive(*c.denoiser, x, c.sigma_max, kSigmaEnd,
                                                  DpmSolverAdaptiveOptions{.order = order, .atol = tol, .rtol = tol,
                                                                           .controller = controller});
    ASSERT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, order * (stats.steps + stats.rejected));
    errors.push_back(testing::rms_error(x, reference));
    nfes.push_back(stats.nfe);
    RecordProperty("nfe_tol_" + std::to_string(tol), std::to_string(stats.nfe));
  }
  std::cout << c.name << " DPM-Solver-" << (order == 2 ? "12" : "23") << (controller == DpmAdaptiveController::dpm_solver ? " (authors')" : " (k-diffusion)");
  for (std::size_t i = 0; i < errors.size(); ++i) std::cout << "  nfe " << nfes[i] << " err " << errors[i];
  std::cout << '\n';
  for (std::size_t i = 1; i < errors.size(); ++i) {
    EXPECT_LT(errors[i], errors[i - 1]) << "tolerance step " << i;
    EXPECT_GT(nfes[i], nfes[i - 1]) << "tolerance step " << i;
  }
  // Three decades of tolerance buy at least two decades of error.
  EXPECT_LT(errors.back(), errors.front() / 100.0);
}

// e.g. dpm_solver_23_k_diffusion_mix16_vp.
std::string adaptive_case_name(const ::testing::TestParamInfo<DpmSolverAdaptive::ParamType>& info) {
  const auto& [order, controller, mix] = info.param;
  return std::string(order == 2 ? "dpm_solver_12" : "dpm_solver_23") +
         (controller == DpmAdaptiveController::dpm_solver ? "_authors_" : "_k_diffusion_") + testing::case_name(mix);
}

INSTANTIATE_TEST_SUITE_P(Mixtures, DpmSolverAdaptive,
                         ::testing::Combine(::testing::Values(2, 3),
                                            ::testing::Values(DpmAdaptiveController::dpm_solver, DpmAdaptiveController::k_diffusion),
                                            ::testing::Values(std::pair{"ring2d", "edm"}, std::pair{"mix16", "vp"})),
                         adaptive_case_name);

}  // namespace
}  // namespace diffode
