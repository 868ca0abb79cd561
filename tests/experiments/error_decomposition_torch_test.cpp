// The sweep's error decomposition for a network with a ground truth: error_rms (the solver's error,
// against the network's own tight PF-ODE solve), model_error_* (the network's tight solve against the
// exact mixture's, from the same x_T) and total_error_* (the run against the exact mixture's solve).
//
// The network is gauss_x0.pt (tests/support/torchscript_modules.hpp): the exact EDM denoiser of
// N(0, v I) data, v = 0.25. For Gaussian data N(0, w I) the PF-ODE is linear and solvable by hand:
// x(sigma) = x_T sqrt(w + sigma^2) / sqrt(w + sigma_T^2). The network's reference stops at its
// process's sigma_min and denoises there (D(x; s) = x w / (w + s^2)), the exact mixture's runs to 0,
// so the model error of every sample is |x_T| |a_net - a_exact| with
//   a_net = v / (sqrt(v + sigma_min^2) sqrt(v + sigma_T^2)),  a_exact = sqrt(w) / sqrt(w + sigma_T^2).
// With the ground truth equal to the module's Gaussian (w = v) that is the O(sigma_min^2) truncation
// alone; with w = 0.36 it is the "network's" error.
#include "experiments/run/config.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/sweep/plan.hpp"
#include "experiments/sweep/runner.hpp"
#include "tests/support/torchscript_modules.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace diffode {
namespace {

using testing::torchscript_modules;

constexpr double kV = 0.25, kSigmaMin = 0.002, kSigmaMax = 80.0;

std::string sweep_text(double truth_variance, const std::string& sampler_list) {
  return fmt::format(
      "[sweep]\nname = \"decomposition\"\noutput = \"unused.h5\"\n[sweep.product]\nsampler = [{}]\n\"grid.steps\" = [3, 8, 32]\n"
      "[process]\nname = \"edm\"\n[model]\nkind = \"torchscript\"\nfile = \"{}/gauss_x0.pt\"\ndims = 2\nprediction = \"x0\"\n"
      "signature = \"x_sigma\"\ntime_input = \"sigma\"\nscale_free_input = true\n[model.ground_truth]\nweights = [1.0]\n"
      "means = [[0.0, 0.0]]\nvariances = [[{}, {}]]\n[grid]\nschedule = \"karras\"\n[run]\nsamples = 40\nseed = 7\nsave_samples = true\n"
      "[metrics]\nlaw = false\n",
      sampler_list, torchscript_modules().string(), truth_variance, truth_variance);
}

// RMS over rows of |x_T| * |a_net - a_exact|: the model error the linear flows give.
double expected_model_error(const Batch& initial, double w) {
  const double a_net = kV / (std::sqrt(kV + kSigmaMin * kSigmaMin) * std::sqrt(kV + kSigmaMax * kSigmaMax));
  const double a_exact = std::sqrt(w) / std::sqrt(w + kSigmaMax * kSigmaMax);
  return std::sqrt(initial.square().rowwise().sum().mean()) * std::abs(a_net - a_exact);
}

class ErrorDecompositionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (torchscript_modules().empty()) GTEST_SKIP() << testing::kNoPythonTorch;
    use_network_backend(diffode_network_backend());
  }
};

TEST_F(ErrorDecompositionTest, ModelErrorIsTheNetworksAndTotalLiesWithinTheTriangle) {
  for (const double w : {kV, 0.36}) {
    SCOPED_TRACE(fmt::format("ground truth N(0, {} I)", w));
    const SweepPlan plan = plan_sweep(Config::from_string(sweep_text(w, "{ name = \"euler\" }, { name = \"heun\" }"), "s.toml"));
    ASSERT_EQ(plan.runs.size(), 6u);
    RunExecutor executor;
    for (const RunSpec& spec : plan.runs) {
      const RunOutcome out = executor.execute(spec, "s.toml", 1);
      SCOPED_TRACE(fmt::format("{} {} steps", out.sampler, out.steps));
      ASSERT_TRUE(out.ok) << out.failure;
      const double solver = out.metric("error_rms"), model = out.metric("model_error_rms"), total = out.metric("total_error_rms");
      ASSERT_TRUE(std::isfinite(solver) && std::isfinite(model) && std::isfinite(total));
      EXPECT_TRUE(std::isfinite(out.metric("model_error_median")) && std::isfinite(out.metric("total_error_median")));
      // The tight solves agree with the closed forms to far below the differences measured here.
      const double expected = expected_model_error(out.initial, w);
      EXPECT_NEAR(model, expected, 1e-8 + 1e-6 * expected);
      if (w == kV) EXPECT_LT(model, 1e-4);  // the same law: only the truncation at sigma_min
      else EXPECT_GT(model, 1e-3);
      // RMS distances are L2 norms over the batch: the triangle inequality holds between them.
      EXPECT_LE(total, solver + model + 1e-12);
      EXPECT_GE(total, std::abs(solver - model) - 1e-12);
    }
  }
}

TEST_F(ErrorDecompositionTest, OnlyDeterministicRunsOfANetworkWithAGroundTruthAreDecomposed) {
  // A stochastic sampler has no PF-ODE reference: its pathwise error is the strong error.
  const SweepPlan plan = plan_sweep(Config::from_string(sweep_text(0.36, "{ name = \"euler_ancestral\" }"), "s.toml"));
  RunExecutor executor;
  const RunOutcome out = executor.execute(plan.runs.front(), "s.toml", 1);
  ASSERT_TRUE(out.ok) << out.failure;
  EXPECT_TRUE(std::isnan(out.metric("model_error_rms")));
  EXPECT_TRUE(std::isnan(out.metric("total_error_rms")));
  EXPECT_TRUE(std::isfinite(out.metric("strong_error")));
}

}  // namespace
}  // namespace diffode
