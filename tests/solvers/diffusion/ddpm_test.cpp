// DDPM ancestral sampling: with many steps the samples follow the exact p_0 (both variance
// choices), the posterior mean and variance are those of q(x_s | x_t, x0), and noise is required.
#include "solvers/diffusion/ddpm.hpp"
#include "tests/support/diffusion_cases.hpp"
#include "tests/support/sample_law.hpp"

#include <gtest/gtest.h>


namespace diffode {
namespace {

// Mean and covariance within 4.5 Monte-Carlo standard errors (max over entries), KS tests on the
// axes and 4 random projections against exact mixture draws at level 1e-3 each, 1000 samples and
// 64 log-uniform steps then a final step to 0. A 4-step run must fail the same checks.
void expect_samples_p0(const char* process, DDPMVariance variance) {
  const auto c = testing::make_case("ring2d", process);
  const auto& mixture = c.predictor->mixture();
  const Index m = 1000;
  const Batch exact = mixture.sample(m, /*seed=*/2024);
  auto run = [&](int steps) {
    auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, steps);
    sigmas.push_back(0.0);
    Batch x = c.initial_noise(m);
    const SigmaNoise<Batch> noise(/*seed=*/5, c.sigma_max, mixture.dims());
    const auto stats = sample_ddpm(*c.denoiser, x, std::span<const double>(sigmas), DDPMOptions{.variance = variance}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, steps + 1);
    return x;
  };
  const testing::LawCheck check{
      .mean = mixture.mean(), .covariance = mixture.covariance(), .exact = exact, .extra_directions = 4, .ks_min_p = 1e-3};
  testing::expect_law_with_failing_control(check, run(64), run(4), c.name + " DDPM, 64 steps (control: 4 steps)");
}

TEST(DDPMSampler, PosteriorVarianceSamplesP0) { expect_samples_p0("vp", DDPMVariance::small); }
TEST(DDPMSampler, LargeVarianceSamplesP0) { expect_samples_p0("edm", DDPMVariance::large); }

// One step from a point x~_t with a model whose D is a constant x0: the result is the posterior
// N(x0 + (s^2/t^2)(x~_t - x0), var) exactly; check the mean and the variance formula (beta~ / abar_s
// and beta / abar_s of the VP process with abar = 1 / (1 + sigma~^2)) through the update itself.
struct ConstantDenoiser {
  double x0;
  void operator()(const Batch& x, double, Batch& out) const { out = Batch::Constant(x.rows(), x.cols(), x0); }
  void operator()(const Batch& x, const PerSample&, Batch& out) const { out = Batch::Constant(x.rows(), x.cols(), x0); }
};

TEST(DDPMSampler, OneStepIsTheForwardPosterior) {
  const double t = 2.0, s = 0.5, x0 = 0.3;
  const std::vector<double> sigmas{t, s};
  const SigmaNoise<Batch> noise(9, t, 1);
  Batch z;
  Batch like = Batch::Zero(4, 1);
  noise.normal(t, s, like, z);
  // The posterior from VP quantities: abar = 1/(1+sigma^2), beta_t = 1 - abar_t/abar_s.
  const double abar_t = 1.0 / (1.0 + t * t), abar_s = 1.0 / (1.0 + s * s), beta = 1.0 - abar_t / abar_s;
  const double beta_tilde = (1.0 - abar_s) / (1.0 - abar_t) * beta;
  for (auto [variance, var_vp] : {std::pair{DDPMVariance::small, beta_tilde}, std::pair{DDPMVariance::large, beta}}) {
    Batch x = Batch::Constant(4, 1, 1.7);
    sample_ddpm(ConstantDenoiser{x0}, x, std::span<const double>(sigmas), DDPMOptions{.variance = variance}, &noise);
    // Ho et al. eq. 7 in VP variables x = sqrt(abar) x~, then scaled back by 1/sqrt(abar_s).
    const double xt_vp = std::sqrt(abar_t) * 1.7;
    const double mean_vp = std::sqrt(abar_s) * beta / (1.0 - abar_t) * x0 + std::sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t) * xt_vp;
    const Batch expected = (mean_vp + std::sqrt(var_vp) * z) / std::sqrt(abar_s);
    EXPECT_LE((x - expected).abs().maxCoeff(), 1e-13);
  }
}

TEST(DDPMSampler, WithoutNoiseIsAnError) {
  const auto c = testing::make_case("ring2d", "edm");
  Batch x = c.initial_noise(4);
  const std::vector<double> sigmas{80.0, 1.0, 0.0};
  EXPECT_THROW(sample_ddpm(*c.denoiser, x, std::span<const double>(sigmas)), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
