// `diffode tune-grid`: the optimiser finds known minima; the grid parametrisation is monotone and
// starts at the starting grid; tuning lowers the objective on a small case, and the written grid
// replays through `diffode sample` (schedule = "hdf5", variable = "sigma") with exactly the
// held-out error and NFE the file states; bad [tune] input exits 2 and writes nothing; a sweep axis
// over grid files is a convergence axis (one line per family of grids).
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/nelder_mead.hpp"
#include "experiments/run/reference.hpp"
#include "experiments/run/tune_grid.hpp"
#include "experiments/sweep/plan.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace diffode {
namespace {

namespace fs = std::filesystem;

TEST(NelderMead, MinimisesRosenbrockFromTheClassicStart) {
  const auto rosenbrock = [](const std::vector<double>& x) { return 100 * std::pow(x[1] - x[0] * x[0], 2) + std::pow(1 - x[0], 2); };
  const NelderMeadResult r = nelder_mead(rosenbrock, {-1.2, 1.0}, {.max_evaluations = 4000, .initial_step = 0.5, .tolerance = 1e-10});
  EXPECT_NEAR(r.x[0], 1.0, 1e-5);
  EXPECT_NEAR(r.x[1], 1.0, 1e-5);
  EXPECT_LT(r.value, 1e-10);
  EXPECT_DOUBLE_EQ(r.start_value, rosenbrock({-1.2, 1.0}));
  EXPECT_LE(r.evaluations, 4000);
}

TEST(NelderMead, MinimisesAnIllConditionedQuadraticInEightDimensions) {
  const std::vector<double> centre{0.3, -1.0, 2.0, 0.5, -0.25, 1.5, 0.0, -2.0};
  const auto f = [&](const std::vector<double>& x) {
    double v = 0;
    for (std::size_t i = 0; i < x.size(); ++i) v += std::pow(4.0, static_cast<double>(i) / 2) * std::pow(x[i] - centre[i], 2);
    return v;
  };
  const NelderMeadResult r = nelder_mead(f, std::vector<double>(8, 0.0), {.max_evaluations = 20000, .initial_step = 1.0, .tolerance = 1e-10});
  for (std::size_t i = 0; i < centre.size(); ++i) EXPECT_NEAR(r.x[i], centre[i], 1e-4) << i;
}

TEST(NelderMead, KeepsItsBudgetAvoidsNaNAndIsReproducible) {
  // NaN left of 0.5 (where the objective is undefined), minimum at 1 on the right.
  const auto f = [](const std::vector<double>& x) { return x[0] < 0.5 ? std::nan("") : std::pow(x[0] - 1.0, 2) + std::pow(x[1] + 0.5, 2); };
  const NelderMeadOptions o{.max_evaluations = 57, .initial_step = 2.0, .tolerance = 1e-12, .seed = 7};
  const NelderMeadResult a = nelder_mead(f, {3.0, 1.0}, o), b = nelder_mead(f, {3.0, 1.0}, o);
  EXPECT_EQ(a.evaluations, 57);
  EXPECT_EQ(a.x, b.x);
  EXPECT_EQ(a.value, b.value);
  EXPECT_TRUE(std::isfinite(a.value));
  EXPECT_LT(a.value, a.start_value);
  EXPECT_GE(a.x[0], 0.5);
  // The history records each improvement, the start first, decreasing.
  ASSERT_FALSE(a.history.empty());
  EXPECT_EQ(a.history.front().first, 1);
  for (std::size_t i = 1; i < a.history.size(); ++i) EXPECT_LT(a.history[i].second, a.history[i - 1].second);
  EXPECT_EQ(a.history.back().second, a.value);
  EXPECT_THROW(nelder_mead(f, {3.0, 1.0}, {.max_evaluations = 0}), std::invalid_argument);
}

TEST(LogSigmaGrid, StartsAtTheStartingGridStaysMonotoneAndKeepsSigmaMinInItsBounds) {
  const auto process = make_process("edm", {});
  const TimeGrid start = karras_grid(*process, 6, FinalStep::to_zero, 7.0);
  const LogSigmaGrid p(*process, start, true, 0.002, 1.0);
  ASSERT_EQ(p.dims(), 5u);  // sigma_min and 4 logits (6 positive levels, first fixed)
  const TimeGrid back = p.grid(p.start_point());
  ASSERT_EQ(back.sigma.size(), start.sigma.size());
  for (std::size_t i = 0; i < start.sigma.size(); ++i) EXPECT_NEAR(back.sigma[i], start.sigma[i], 1e-12 * start.sigma[i]) << i;
  EXPECT_EQ(back.sigma.front(), start.sigma.front());
  EXPECT_EQ(back.sigma.back(), 0.0);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 3.0);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> x(p.dims());
    for (double& v : x) v = normal(rng);
    const TimeGrid g = p.grid(x);
    for (std::size_t i = 1; i < g.sigma.size(); ++i) EXPECT_LT(g.sigma[i], g.sigma[i - 1]);
    EXPECT_GE(g.sigma[g.sigma.size() - 2], 0.002 * (1 - 1e-15));
    EXPECT_LE(g.sigma[g.sigma.size() - 2], 1.0 * (1 + 1e-15));
    for (std::size_t i = 0; i + 1 < g.sigma.size(); ++i) EXPECT_EQ(g.t[i], process->t_of_scaled_sigma(g.sigma[i]));
  }
  // Fixed end (to_t_min): only the interior moves.
  const TimeGrid fixed = karras_grid(*process, 4, FinalStep::to_t_min, 7.0);
  const LogSigmaGrid q(*process, fixed, false, 0.002, 1.0);
  EXPECT_EQ(q.dims(), 3u);
  EXPECT_EQ(q.grid({1.0, -2.0, 0.5}).sigma.back(), fixed.sigma.back());
}

class TuneGridCommand : public testing::TempFolderTest {
 protected:
  std::string config(const std::string& tune_extra, const std::string& sampler = "name = \"dpmpp_2m\"", const std::string& grid_extra = "",
                     const std::string& run_extra = "", int evaluations = 60) const {
    return fmt::format(R"([process]
name = "edm"
[model]
preset = "ring2d"
[grid]
schedule = "karras"
{}
[sampler]
{}
[run]
block_rows = 32
{}
[tune]
nfe = 4
train_samples = 64
heldout_samples = 48
train_seed = 3
heldout_seed = 4
max_evaluations = {}
output = "{}"
{}
)",
                       grid_extra, sampler, run_extra, evaluations, (dir_ / "tuned.h5").string(), tune_extra);
  }
  Provenance provenance_{.command_line = "test", .commit = "test", .versions = "test", .host = "test", .start_time = "test"};
};

TEST_F(TuneGridCommand, LowersTheObjectiveAndReplaysWithTheStatedHeldOutError) {
  ASSERT_EQ(run_tune_grid_command(write_config("tune.toml", config("")), provenance_), 0);
  const Hdf5File h5(dir_ / "tuned.h5", Hdf5File::Mode::read);
  EXPECT_EQ(h5.read_string_attribute("/", "status"), "ok");
  EXPECT_EQ(h5.read_string_attribute("/", "schema"), "diffode-tuned-grid/1");
  EXPECT_EQ(h5.read_string_attribute("/", "sampler"), "dpmpp_2m");
  EXPECT_EQ(h5.read_string_attribute("/", "problem"), "edm/ring2d");
  EXPECT_EQ(h5.read_double_attribute("/", "train_seed"), 3);
  EXPECT_EQ(h5.read_double_attribute("/", "heldout_seed"), 4);
  EXPECT_EQ(h5.read_double_attribute("/", "nfe"), 4);  // DPM-Solver++(2M): one evaluation per step, 4 steps
  EXPECT_EQ(h5.read_double_attribute("/", "steps"), 4);
  EXPECT_LE(h5.read_double_attribute("/", "evaluations"), 60);
  const double train_before = h5.read_double_attribute("/", "train_before_objective");
  const double train_after = h5.read_double_attribute("/", "train_after_objective");
  const double heldout_before = h5.read_double_attribute("/", "heldout_before_objective");
  const double heldout_after = h5.read_double_attribute("/", "heldout_after_objective");
  // Karras rho = 7 down to 0.002 is a poor 4-step grid: the tuned one is much better, held out too.
  EXPECT_LT(train_after, 0.8 * train_before);
  EXPECT_LT(heldout_after, 0.8 * heldout_before);
  EXPECT_EQ(h5.read_double_attribute("/", "heldout_after_error_mean"), heldout_after);  // objective "mean"
  const std::vector<double> sigma = h5.read_vector("sigma");
  ASSERT_EQ(sigma.size(), 5u);
  EXPECT_EQ(sigma.front(), 80.0);
  EXPECT_EQ(sigma.back(), 0.0);

  // Replay through `diffode sample` on the held-out noises.
  const std::string replay = fmt::format(R"([process]
name = "edm"
[model]
preset = "ring2d"
[grid]
schedule = "hdf5"
file = "{}"
dataset = "sigma"
variable = "sigma"
[sampler]
name = "dpmpp_2m"
[run]
samples = 48
seed = 4
block_rows = 32
output = "{}"
)",
                                         (dir_ / "tuned.h5").string(), (dir_ / "replay.h5").string());
  const fs::path replay_path = write_config("replay.toml", replay);
  ASSERT_EQ(run_sample_command(replay_path, provenance_), 0);
  const Hdf5File sampled(dir_ / "replay.h5", Hdf5File::Mode::read);
  EXPECT_EQ(sampled.read_double_attribute("/", "nfe"), h5.read_double_attribute("/", "nfe"));
  EXPECT_EQ(sampled.read_vector("grid/sigma"), sigma);
  // The exact PF-ODE solution from the replay's own x_T: the error is the one the tuned file states.
  const Config replay_config(replay_path);
  ConfigTable root = replay_config.root();
  const SamplingSetup setup = read_sampling_setup(root);
  const Batch reference = pf_ode_reference(setup, sampled.read_matrix("initial"), 80.0, 0.0, 1e-10, 1);
  EXPECT_DOUBLE_EQ(mean_distance(sampled.read_matrix("samples"), reference), heldout_after);
  EXPECT_DOUBLE_EQ(rms_distance(sampled.read_matrix("samples"), reference), h5.read_double_attribute("/", "heldout_after_error_rms"));
}

TEST_F(TuneGridCommand, GivesTheSameGridForAnyThreadCount) {
  const fs::path path = write_config("tune.toml", config("", "name = \"ipndm\"", "", "", 40));
  ASSERT_EQ(run_tune_grid_command(path, provenance_, 1), 0);
  fs::rename(dir_ / "tuned.h5", dir_ / "one.h5");
  ASSERT_EQ(run_tune_grid_command(path, provenance_, 2), 0);
  const Hdf5File one(dir_ / "one.h5", Hdf5File::Mode::read), two(dir_ / "tuned.h5", Hdf5File::Mode::read);
  EXPECT_EQ(one.read_vector("sigma"), two.read_vector("sigma"));
  EXPECT_EQ(one.read_double_attribute("/", "heldout_after_objective"), two.read_double_attribute("/", "heldout_after_objective"));
}

TEST_F(TuneGridCommand, TakesTheStepsTheBudgetAllowsForTwoEvaluationSteps) {
  // Heun costs 2n - 1 on a to_zero grid: a budget of 6 gives 3 steps and 5 evaluations.
  std::string text = config("", "name = \"heun\"", "", "", 5);
  text.replace(text.find("nfe = 4"), 7, "nfe = 6");
  ASSERT_EQ(run_tune_grid_command(write_config("tune.toml", text), provenance_), 0);
  const Hdf5File h5(dir_ / "tuned.h5", Hdf5File::Mode::read);
  EXPECT_EQ(h5.read_double_attribute("/", "steps"), 3);
  EXPECT_EQ(h5.read_double_attribute("/", "nfe"), 5);
  EXPECT_EQ(h5.read_double_attribute("/", "nfe_budget"), 6);
}

TEST_F(TuneGridCommand, TunesAStochasticSamplerOnTheLawObjective) {
  // The energy distance to exact draws of the data: the objective a stochastic sampler can be tuned on.
  ASSERT_EQ(run_tune_grid_command(write_config("tune.toml", config("objective = \"energy\"", "name = \"euler_ancestral\"", "", "", 30)), provenance_), 0);
  const Hdf5File h5(dir_ / "tuned.h5", Hdf5File::Mode::read);
  EXPECT_EQ(h5.read_string_attribute("/", "objective"), "energy");
  EXPECT_LE(h5.read_double_attribute("/", "train_after_objective"), h5.read_double_attribute("/", "train_before_objective"));
  EXPECT_EQ(h5.read_double_attribute("/", "heldout_after_objective"), h5.read_double_attribute("/", "heldout_after_energy"));
  EXPECT_TRUE(std::isnan(h5.read_double_attribute("/", "heldout_after_error_rms")));  // no pathwise error for a stochastic sampler
  EXPECT_TRUE(std::isfinite(h5.read_double_attribute("/", "heldout_after_energy_floor")));
}

TEST_F(TuneGridCommand, BadInputExitsTwoAndWritesNothing) {
  struct Case {
    std::string name, tune, sampler, grid, run;
  };
  const std::string dpmpp = "name = \"dpmpp_2m\"";
  const std::vector<Case> cases{
      {"unknown objective", "objective = \"max\"", dpmpp, "", ""},
      {"unknown key", "iterations = 10", dpmpp, "", ""},
      {"negative step", "initial_step = -1.0", dpmpp, "", ""},
      {"upper bound below lower", "sigma_min_lower = 0.5\nsigma_min_upper = 0.1", dpmpp, "", ""},
      {"upper bound above T", "sigma_min_upper = 100.0", dpmpp, "", ""},
      {"law seed on a noise seed", "law_seed = 2", dpmpp, "", ""},
      {"stochastic sampler with a pathwise objective", "", "name = \"euler_ancestral\"", "", ""},
      {"adaptive sampler", "", "name = \"dpm_solver_adaptive\"", "", ""},
      {"steps that cost more than the budget", "", dpmpp, "steps = 10", ""},
      {"sigma_min bounds with to_t_min", "sigma_min_upper = 1.0", dpmpp, "final_step = \"to_t_min\"", ""},
      {"[run] seed", "", dpmpp, "", "seed = 2"},
      {"[run] samples", "", dpmpp, "", "samples = 2"},
      {"a one-step grid", "", dpmpp, "steps = 1", ""},
  };
  for (const Case& c : cases) {
    const fs::path path = write_config("bad.toml", config(c.tune, c.sampler, c.grid, c.run));
    EXPECT_EQ(run_tune_grid_command(path, provenance_), 2) << c.name;
    EXPECT_FALSE(fs::exists(dir_ / "tuned.h5")) << c.name;
  }
  // Equal seeds, given once.
  std::string text = config("");
  text.replace(text.find("heldout_seed = 4"), 16, "heldout_seed = 3");
  EXPECT_EQ(run_tune_grid_command(write_config("bad.toml", text), provenance_), 2);
  // No budget and no steps.
  text = config("");
  text.replace(text.find("nfe = 4"), 7, "");
  EXPECT_EQ(run_tune_grid_command(write_config("bad.toml", text), provenance_), 2);
  EXPECT_FALSE(fs::exists(dir_ / "tuned.h5"));
}

TEST(TunedGridsInASweep, AGridFileAxisIsAConvergenceAxis) {
  const Config config = Config::from_string(R"([sweep]
name = "t"
[[sweep.product]]
sampler = [{ name = "unipc", order = 3 }]
grid = [{ schedule = "hdf5", dataset = "sigma", variable = "sigma" }]
"grid.file" = ["a_nfe5.h5", "a_nfe10.h5"]
[[sweep.product]]
sampler = [{ name = "unipc", order = 3 }]
"grid.steps" = [5, 10]
[grid]
schedule = "karras"
)");
  const SweepPlan plan = plan_sweep(config);
  ASSERT_EQ(plan.runs.size(), 4u);
  EXPECT_EQ(plan.runs[0].variant, plan.runs[1].variant);
  EXPECT_EQ(plan.runs[0].variant, "unipc order=3 hdf5 dataset=sigma variable=sigma");
  EXPECT_NE(plan.runs[0].id, plan.runs[1].id);
  EXPECT_EQ(plan.runs[2].variant, plan.runs[3].variant);
  EXPECT_NE(plan.runs[0].variant, plan.runs[2].variant);
}

}  // namespace
}  // namespace diffode
