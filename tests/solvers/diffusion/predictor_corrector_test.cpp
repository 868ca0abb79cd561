// Predictor-corrector sampling (Song et al. 2021, arXiv:2011.13456, Algorithms 2-5):
//   - reverse-diffusion, Euler-Maruyama and ancestral predictors, each with one Langevin corrector
//     step per level, sample the exact p_{t_min} under EDM (VE-like) and VP, at 2 evaluations per
//     level;
//   - one level reproduces score_sde's update formulas (DDPM/SMLD coefficients, LangevinCorrector's
//     batch-mean step size) computed by hand from the exact score;
//   - the Euler-Maruyama predictor alone is EulerMaruyama on ReverseSde on the same path; noise
//     removal drops exactly the last step's noise; per-sample norms make samples batch-independent.
#include "solvers/diffusion/predictor_corrector.hpp"

#include "solvers/integrate.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "tests/support/sample_law.hpp"
#include "tests/support/diffusion_cases.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace diffode {
namespace {

std::vector<double> log_sigma_times(const testing::DiffusionCase& c, int n) {
  const auto sigmas = testing::log_uniform_sigmas(c.sigma_max, c.sigma_min, n);
  std::vector<double> t;
  for (double s : sigmas) t.push_back(c.process->t_of_scaled_sigma(s));
  t.front() = c.process->t_max();
  t.back() = c.process->t_min();
  return t;
}

const char* predictor_name(PcPredictor p) {
  switch (p) {
    case PcPredictor::none: return "none";
    case PcPredictor::reverse_diffusion: return "reverse_diffusion";
    case PcPredictor::euler_maruyama: return "euler_maruyama";
    case PcPredictor::ancestral: return "ancestral";
  }
  return "?";
}

struct LawCase {
  const char* process;
  PcPredictor predictor;

  friend void PrintTo(const LawCase& c, std::ostream* os) { *os << c.process << " with the " << predictor_name(c.predictor) << " predictor"; }
};

class PcLaw : public ::testing::TestWithParam<LawCase> {};

// 1000 samples from exact draws of p_T over 100 levels (log-uniform in sigma~ down to t_min),
// returned with noise removal, against the exact law of p_{t_min}: mean within 4 standard errors
// per coordinate, covariance within 4.5 (estimated) standard errors per entry, two-sample KS on
// 2 axes + 8 directions against 1000 exact draws at family-wise level 1e-3. Measured: mean
// 0.3-1.3 SE, covariance 0.9-1.7 SE, KS 0.045-0.075 against 0.0995. The control, the corrector
// alone (no predictor) on the same levels and noise, must fail the same checks: measured mean
// 123 SE under EDM, covariance 6.5 SE under VP.
TEST_P(PcLaw, SamplesTheExactMarginalAtTwoEvaluationsPerLevel) {
  const auto c = testing::make_case("ring2d", GetParam().process);
  const auto& mixture = c.predictor->mixture();
  const Index samples = 1000, dims = mixture.dims();
  const int levels = 100;
  const double t_min = c.process->t_min(), a = c.process->alpha(t_min), s = c.process->sigma(t_min);
  const auto t = log_sigma_times(c, levels);
  // Depth 24: leaves of T 2^-24 (5e-6 for EDM's T = 80), 20x below the smallest step.
  const PcNoise<Batch> noise(3, c.process->t_max(), dims, 0, 24);
  const DiffusionScore<Batch> score(*c.process, *c.predictor);
  auto run = [&](PcPredictor predictor) {
    Batch x = c.process->alpha(c.process->t_max()) * c.initial_noise(samples, 5);
    const auto stats = sample_pc(score, x, std::span<const double>(t), PcOptions{.predictor = predictor}, &noise);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, (predictor == PcPredictor::none ? 1 : 2) * levels);
    EXPECT_EQ(stats.steps, levels);
    return x;
  };
  const testing::LawCheck check{.mean = a * mixture.mean(),
                                .covariance = a * a * mixture.covariance() + s * s * Eigen::MatrixXd::Identity(dims, dims),
                                .exact = mixture.sample_marginal(a, s, samples, 99),
                                .mean_z = 4.0};
  testing::expect_law_with_failing_control(check, run(GetParam().predictor), run(PcPredictor::none),
                                           c.name + " " + predictor_name(GetParam().predictor) + " + langevin (control: langevin alone)");
}

INSTANTIATE_TEST_SUITE_P(Ring, PcLaw,
                         ::testing::Values(LawCase{"edm", PcPredictor::reverse_diffusion}, LawCase{"edm", PcPredictor::ancestral},
                                           LawCase{"vp", PcPredictor::reverse_diffusion},
                                           LawCase{"vp", PcPredictor::euler_maruyama}, LawCase{"vp", PcPredictor::ancestral}),
                         [](const auto& info) { return std::string(info.param.process) + "_" + predictor_name(info.param.predictor); });

// One level t -> t_next, computed by hand in score_sde's terms: the DDPM/SMLD step with
// beta = 1 - (alpha_t/alpha_s)^2 (VP) or sigma_t^2 - sigma_s^2 (VE/EDM), LangevinCorrector's
// step 2 alpha_i (r mean||z|| / mean||g||)^2 with alpha_i = 1 - beta, and ancestral sampling's
// (x + beta s)/sqrt(1 - beta) + sqrt(beta) z (VP) or x + beta s + sqrt(sigma_s^2 beta/sigma_t^2) z (VE).
TEST(PcSampler, OneLevelIsScoreSdesUpdate) {
  for (const char* process : {"vp", "edm"}) {
    const auto c = testing::make_case("mix16", process);
    const auto& p = *c.process;
    const Index n = 6, dims = 16;
    const double t = p.t_of_scaled_sigma(2.0), t_next = p.t_of_scaled_sigma(1.5);
    const std::vector<double> grid{t, t_next};
    const Batch x0 = p.alpha(t) * c.initial_noise(n);
    const PcNoise<Batch> noise(21, p.t_max(), dims);
    const DiffusionScore<Batch> score(p, *c.predictor);
    const bool vp = p.alpha(t) != 1.0;
    const double ratio = p.alpha(t) / p.alpha(t_next);
    const double beta = vp ? 1.0 - ratio * ratio : p.sigma(t) * p.sigma(t) - p.sigma(t_next) * p.sigma(t_next);
    const PerSample alpha_t = PerSample::Constant(n, p.alpha(t)), sigma_t = PerSample::Constant(n, p.sigma(t));

    // The corrector's noise and the predictor's, as PcNoise defines them.
    const Batch z_c = [&] { Batch w(n, dims); noise.corrector_path().increment(t, t_next, 0, w); return Batch(w / std::sqrt(t - t_next)); }();
    const Batch z_p = [&] { Batch w(n, dims); noise.predictor_path().increment(t, t_next, 0, w); return Batch(w / std::sqrt(t - t_next)); }();
    Batch g;
    c.predictor->mixture().score(x0, alpha_t, sigma_t, g);
    const double step = 2.0 * (1.0 - (vp ? beta : 0.0)) *
                        std::pow(0.16 * z_c.rowwise().norm().mean() / g.rowwise().norm().mean(), 2);
    const Batch corrected = x0 + step * g + std::sqrt(2.0 * step) * z_c;
    c.predictor->mixture().score(corrected, alpha_t, sigma_t, g);
    const Batch expected_rd = (2.0 - std::sqrt(1.0 - (vp ? beta : 0.0))) * corrected + beta * g + std::sqrt(beta) * z_p;
    const Batch expected_ancestral =
        vp ? Batch((corrected + beta * g) / std::sqrt(1.0 - beta) + std::sqrt(beta) * z_p)
           : Batch(corrected + beta * g + std::sqrt(p.sigma(t_next) * p.sigma(t_next) * beta / (p.sigma(t) * p.sigma(t))) * z_p);

    for (auto [predictor, expected] : {std::pair{PcPredictor::reverse_diffusion, &expected_rd},
                                       std::pair{PcPredictor::ancestral, &expected_ancestral}}) {
      Batch x = x0;
      sample_pc(score, x, std::span<const double>(grid),
                PcOptions{.predictor = predictor, .noise_removal = false}, &noise);
      EXPECT_LT((x - *expected).abs().maxCoeff(), 1e-12 * expected->abs().maxCoeff()) << process << " predictor "
                                                                                        << static_cast<int>(predictor);
    }
  }
}

// Without corrector and noise removal, the Euler-Maruyama predictor is the generic Euler-Maruyama
// stepper on ReverseSde, on the same Brownian path.
TEST(PcSampler, EulerMaruyamaPredictorIsEulerMaruyamaOnTheReverseSde) {
  const auto c = testing::make_case("ring2d", "vp");
  const Index dims = 2;
  const auto t = log_sigma_times(c, 50);
  const Batch x_T = c.process->alpha(c.process->t_max()) * c.initial_noise(16);
  Batch x = x_T, y = x_T;
  const PcNoise<Batch> noise(7, c.process->t_max(), dims);
  const auto stats = sample_pc(DiffusionScore<Batch>(*c.process, *c.predictor), x, std::span<const double>(t),
                               PcOptions{.predictor = PcPredictor::euler_maruyama, .corrector_steps = 0, .noise_removal = false},
                               &noise);
  EXPECT_EQ(stats.nfe, 50);
  EulerMaruyama<Batch> em;
  integrate(em, ReverseSde<Batch>(*c.process, *c.predictor), std::span<const double>(t), y, noise.predictor_path());
  EXPECT_LT((x - y).abs().maxCoeff(), 1e-12 * y.abs().maxCoeff());
}

// Noise removal returns the last predictor step's mean: the difference to the noisy run is the
// last step's noise, sqrt(G^2) z, and nothing else.
TEST(PcSampler, NoiseRemovalDropsOnlyTheLastNoise) {
  const auto c = testing::make_case("ring2d", "edm");
  const auto t = log_sigma_times(c, 20);
  const Batch x_T = c.initial_noise(8);
  const PcNoise<Batch> noise(5, c.process->t_max(), 2);
  const DiffusionScore<Batch> score(*c.process, *c.predictor);
  Batch with = x_T, without = x_T;
  sample_pc(score, with, std::span<const double>(t), PcOptions{.noise_removal = true}, &noise);
  sample_pc(score, without, std::span<const double>(t), PcOptions{.noise_removal = false}, &noise);
  const double s = t[19], s_next = t[20];
  Batch w(8, 2);
  noise.predictor_path().increment(s, s_next, 0, w);
  const double G = std::sqrt(s * s - s_next * s_next);  // EDM: sigma = t
  const Batch expected = G * w / std::sqrt(s - s_next);
  EXPECT_LT(((without - with) - expected).abs().maxCoeff(), 1e-12);
}

// Per-sample corrector norms make a sample's result independent of its batch: samples 8..15 run
// alone (first_sample = 8) equal the same rows of the whole batch. score_sde's batch means do not.
TEST(PcSampler, PerSampleNormsAreBatchIndependent) {
  const auto c = testing::make_case("ring2d", "vp");
  const auto t = log_sigma_times(c, 20);
  const Batch x_T = c.process->alpha(c.process->t_max()) * c.initial_noise(16);
  const DiffusionScore<Batch> score(*c.process, *c.predictor);
  for (auto norm : {LangevinNorm::per_sample, LangevinNorm::batch_mean}) {
    const PcOptions options{.norm = norm};
    Batch whole = x_T, half = x_T.bottomRows(8);
    const PcNoise<Batch> all(9, c.process->t_max(), 2), second(9, c.process->t_max(), 2, 8);
    sample_pc(score, whole, std::span<const double>(t), options, &all);
    sample_pc(score, half, std::span<const double>(t), options, &second);
    const double gap = (whole.bottomRows(8) - half).abs().maxCoeff();
    if (norm == LangevinNorm::per_sample)
      EXPECT_EQ(gap, 0.0);
    else
      EXPECT_GT(gap, 1e-6);
  }
}

TEST(PcSampler, RefusesMissingNoiseAndBadGrids) {
  const auto c = testing::make_case("ring2d", "vp");
  const DiffusionScore<Batch> score(*c.process, *c.predictor);
  const PcNoise<Batch> noise(1, 1.0, 2);
  Batch x = c.initial_noise(2);
  const std::vector<double> good{1.0, 0.5, 1e-3}, rising{0.5, 1.0}, outside{1.0, 1e-4};
  EXPECT_THROW(sample_pc(score, x, std::span<const double>(good), {}, static_cast<const PcNoise<Batch>*>(nullptr)), std::invalid_argument);
  EXPECT_THROW(sample_pc(score, x, std::span<const double>(rising), {}, &noise), std::invalid_argument);
  EXPECT_THROW(sample_pc(score, x, std::span<const double>(outside), {}, &noise), std::invalid_argument);
  EXPECT_THROW(sample_pc(score, x, std::span<const double>(good), PcOptions{.predictor = PcPredictor::none, .corrector_steps = 0},
                         &noise),
               std::invalid_argument);
}

}  // namespace
}  // namespace diffode
