// The [sampler] key `noise` as a config sees it: per-step noise by default for every stochastic
// sampler, the Brownian path on request (the former noise, bit for bit), the Brownian-bridge tree on
// the run's grid (brownian_grid) for the samplers that draw through SigmaNoise, deterministic samplers
// refusing the key, and per-step results that do not depend on the thread count or the blocks.
#include "experiments/run/sampling.hpp"
#include "experiments/sweep/plan.hpp"
#include "experiments/sweep/runner.hpp"
#include "solvers/diffusion/euler_ancestral.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace diffode {
namespace {

SamplingSetup setup_of(const std::string& sampler, int block_rows = 64) {
  const Config config = Config::from_string(fmt::format(R"([process]
name = "edm"
[model]
preset = "ring2d"
[grid]
schedule = "karras"
steps = 8
final_step = "to_zero"
[sampler]
{}
[run]
samples = 64
seed = 3
block_rows = {}
)", sampler, block_rows), "noise.toml");
  ConfigTable root = config.root();
  SamplingSetup setup = read_sampling_setup(root);
  root.finish();
  return setup;
}

const char* const kStochastic[] = {"name = \"euler_ancestral\"", "name = \"dpm_2_ancestral\"", "name = \"heun\"\ns_churn = 1.0",
                                   "name = \"ddim\"\neta = 0.5", "name = \"ddpm\"", "name = \"dpmpp_2m_sde\"", "name = \"dpmpp_2s\"\neta = 1.0",
                                   "name = \"pc\"\nnorm = \"per_sample\"", "name = \"annealed_langevin\"\ncorrector_steps = 2",
                                   "name = \"sde_euler_maruyama\"", "name = \"sde_sra1\""};

TEST(SamplerNoise, PerStepIsTheDefaultAndBrownianDiffers) {
  for (const char* sampler : kStochastic) {
    SCOPED_TRACE(sampler);
    const SamplingSetup per_step = setup_of(sampler), brownian = setup_of(fmt::format("{}\nnoise = \"brownian\"", sampler));
    ASSERT_TRUE(per_step.sampler.stochastic);
    EXPECT_EQ(per_step.sampler.noise, NoiseKind::per_step);
    EXPECT_FALSE(per_step.sampler.noise_given);
    EXPECT_EQ(brownian.sampler.noise, NoiseKind::brownian);
    EXPECT_TRUE(brownian.sampler.noise_given);
    const Batch x_T = initial_noise(per_step);
    const SamplingOutcome a = run_sampling(per_step, x_T, 1), b = run_sampling(brownian, x_T, 1);
    ASSERT_FALSE(a.failed) << a.failure;
    ASSERT_FALSE(b.failed) << b.failure;
    EXPECT_GT((a.samples - b.samples).abs().maxCoeff(), 1e-6);
  }
}

TEST(SamplerNoise, PerStepResultsDoNotDependOnThreadsOrBlocks) {
  for (const char* sampler : kStochastic) {
    SCOPED_TRACE(sampler);
    const SamplingSetup whole = setup_of(sampler, 64), blocks = setup_of(sampler, 8);
    const Batch x_T = initial_noise(whole);
    const Batch one = run_sampling(whole, x_T, 1).samples;
    EXPECT_TRUE((one == run_sampling(blocks, x_T, 1).samples).all());
    EXPECT_TRUE((one == run_sampling(blocks, x_T, 3).samples).all());
  }
}

// noise = "brownian" is the noise of SigmaNoise's Brownian kind, as the samplers drew it before.
TEST(SamplerNoise, BrownianIsTheFormerNoise) {
  const SamplingSetup s = setup_of("name = \"euler_ancestral\"\nnoise = \"brownian\"");
  const Batch x_T = initial_noise(s);
  const SamplingOutcome r = run_sampling(s, x_T, 1);
  ASSERT_FALSE(r.failed);
  // The same run by hand: x~ = x_T / alpha (alpha = 1 on EDM), the Brownian noise of seed 3, rows 0..63.
  Batch x = x_T;
  const Process& process = *s.process;
  const auto predictor = s.make_predictor();
  const ScaledDenoiser<Batch> denoiser(process, *predictor);
  const SigmaNoise<Batch> noise(3, s.grid.sigma.front(), x.cols());
  sample_euler_ancestral(denoiser, x, std::span<const double>(s.grid.sigma), AncestralOptions{}, &noise);
  EXPECT_TRUE((x == r.samples).all());
}

// noise = "brownian_grid": a Brownian-bridge tree on the grid the sampler walks (SigmaNoise's grid
// kind, by hand), offered by the samplers that draw through SigmaNoise, refused by the others.
const char* const kGridNoise[] = {"name = \"euler_ancestral\"", "name = \"dpm_2_ancestral\"", "name = \"heun\"\ns_churn = 1.0",
                                  "name = \"ddim\"\neta = 0.5", "name = \"ddpm\"", "name = \"dpmpp_2m_sde\"", "name = \"dpmpp_2s\"\neta = 1.0"};

TEST(SamplerNoise, BrownianGridIsItsOwnNoiseAndIndependentOfThreadsAndBlocks) {
  for (const char* sampler : kGridNoise) {
    SCOPED_TRACE(sampler);
    const std::string grid = fmt::format("{}\nnoise = \"brownian_grid\"", sampler);
    const SamplingSetup whole = setup_of(grid, 64), blocks = setup_of(grid, 8);
    EXPECT_EQ(whole.sampler.noise, NoiseKind::brownian_grid);
    EXPECT_TRUE(whole.sampler.noise_given);
    const Batch x_T = initial_noise(whole);
    const SamplingOutcome one = run_sampling(whole, x_T, 1);
    ASSERT_FALSE(one.failed) << one.failure;
    EXPECT_TRUE((one.samples == run_sampling(blocks, x_T, 1).samples).all());
    EXPECT_TRUE((one.samples == run_sampling(blocks, x_T, 3).samples).all());
    for (const std::string other : {"per_step", "brownian"}) {
      const SamplingOutcome b = run_sampling(setup_of(fmt::format("{}\nnoise = \"{}\"", sampler, other)), x_T, 1);
      EXPECT_GT((one.samples - b.samples).abs().maxCoeff(), 1e-6) << other;
    }
  }
}

TEST(SamplerNoise, BrownianGridIsTheGridKindOfSigmaNoise) {
  const SamplingSetup s = setup_of("name = \"euler_ancestral\"\nnoise = \"brownian_grid\"", 16);
  const Batch x_T = initial_noise(s);
  const SamplingOutcome r = run_sampling(s, x_T, 1);
  ASSERT_FALSE(r.failed);
  // By hand, block by block (rows 16 b .. 16 b + 15), on the grid's own sigmas as skeleton.
  const auto predictor = s.make_predictor();
  const ScaledDenoiser<Batch> denoiser(*s.process, *predictor);
  Batch x = x_T;
  for (Index first = 0; first < x.rows(); first += 16) {
    Batch block = x.middleRows(first, 16);
    const SigmaNoise<Batch> noise = SigmaNoise<Batch>::brownian_grid(3, s.grid.sigma, x.cols(), first);
    sample_euler_ancestral(denoiser, block, std::span<const double>(s.grid.sigma), AncestralOptions{}, &noise);
    x.middleRows(first, 16) = block;
  }
  EXPECT_TRUE((x == r.samples).all());
}

TEST(SamplerNoise, BrownianGridIsRefusedWhereItIsNotDrawn) {
  for (const char* sampler : {"name = \"pc\"", "name = \"annealed_langevin\"", "name = \"sde_euler_maruyama\"", "name = \"sde_sra1\""}) {
    SCOPED_TRACE(sampler);
    EXPECT_THROW(setup_of(fmt::format("{}\nnoise = \"brownian_grid\"", sampler)), ConfigError);
  }
}

TEST(SamplerNoise, DeterministicSamplersAndBadValuesAreRefused) {
  EXPECT_THROW(setup_of("name = \"dpmpp_2m\"\nnoise = \"brownian\""), ConfigError);
  EXPECT_THROW(setup_of("name = \"dpmpp_2m\"\nnoise = \"brownian_grid\""), ConfigError);
  EXPECT_THROW(setup_of("name = \"euler_ancestral\"\nnoise = \"tree\""), ConfigError);
  EXPECT_THROW(setup_of("name = \"euler_ancestral\"\nnoise = 1"), ConfigError);
}

// A sweep's strong error compares a run with a fine-grid run on the same noise: a run that sets
// noise = "per_step" is refused (naming the key), one that leaves it unset or sets "brownian" is not.
TEST(SamplerNoise, SweepStrongErrorNeedsTheBrownianPath) {
  auto error_of = [](const std::string& sampler, const std::string& metrics) -> std::string {
    try {
      const SweepPlan plan = plan_sweep(Config::from_string(
          fmt::format("[grid]\nsteps = 4\n[sampler]\n{}\n[run]\nsamples = 8\n[metrics]\n{}\n", sampler, metrics), "s.toml"));
      for (const auto& run : plan.runs) validate_run(run, plan.file);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string refused = error_of("name = \"euler_ancestral\"\nnoise = \"per_step\"", "strong_steps = 16");
  EXPECT_NE(refused.find("metrics.strong"), std::string::npos) << refused;
  EXPECT_NE(refused.find("noise = \"brownian\""), std::string::npos) << refused;
  EXPECT_NE(refused.find("noise = \"per_step\" does not give"), std::string::npos) << refused;
  EXPECT_EQ(error_of("name = \"euler_ancestral\"", "strong_steps = 16"), "no error");
  EXPECT_EQ(error_of("name = \"euler_ancestral\"\nnoise = \"brownian\"", "strong_steps = 16"), "no error");
  EXPECT_EQ(error_of("name = \"euler_ancestral\"\nnoise = \"per_step\"", "strong = false"), "no error");
  // The grid path is the path of the run's own grid; the fine grid (the same schedule at
  // strong_steps) does not nest in it in general, so it is refused too.
  const std::string grid = error_of("name = \"euler_ancestral\"\nnoise = \"brownian_grid\"", "strong_steps = 16");
  EXPECT_NE(grid.find("metrics.strong"), std::string::npos) << grid;
  EXPECT_NE(grid.find("noise = \"brownian_grid\" does not give"), std::string::npos) << grid;
  EXPECT_EQ(error_of("name = \"euler_ancestral\"\nnoise = \"brownian_grid\"", "strong = false"), "no error");
}

}  // namespace
}  // namespace diffode
