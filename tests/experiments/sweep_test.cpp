// The sweep harness: expansion, validation, metrics, crash safety, resume, threads and MPI ranks.
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/cli/commands.hpp"
#include "experiments/sweep/plan.hpp"
#include "experiments/sweep/runner.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace diffode {
namespace {

namespace fs = std::filesystem;

class SweepTest : public diffode::testing::TempFolderTest {
 protected:
  // The config's text with its output inside the test's folder.
  std::string config(const std::string& body, const std::string& output = "out.h5") const {
    return fmt::format("[sweep]\nname = \"t\"\noutput = \"{}\"\n{}", (dir_ / output).string(), body);
  }
};

Provenance test_provenance() { return {.command_line = "test", .commit = "test", .versions = "", .host = "", .start_time = ""}; }

// A small sweep: 2 samplers (one stochastic) x 3 step counts on the 2-D ring, 64 samples.
const std::string kSmall = R"(
[sweep.product]
sampler = [{ name = "heun" }, { name = "euler_ancestral", s_noise = 1.0 }]
"grid.steps" = [4, 8, 16]
[model]
preset = "ring2d"
[grid]
schedule = "karras"
[run]
samples = 64
block_rows = 16
save_samples = true
[metrics]
strong_steps = 64
)";

// Every run's recorded values, wall time aside, bit for bit.
void expect_same_runs(const fs::path& a, const fs::path& b) {
  const Hdf5File fa(a, Hdf5File::Mode::read), fb(b, Hdf5File::Mode::read);
  const auto runs = fa.members("runs");
  ASSERT_EQ(runs, fb.members("runs"));
  ASSERT_FALSE(runs.empty());
  for (const auto& id : runs) {
    const std::string g = "runs/" + id;
    EXPECT_EQ(fa.read_string_attribute(g, "config"), fb.read_string_attribute(g, "config"));
    EXPECT_EQ(fa.read_string_attribute(g, "status"), fb.read_string_attribute(g, "status"));
    for (const char* metric : kRunMetrics) {
      if (std::string_view(metric) == "wall_time") continue;
      const double x = fa.read_double_attribute(g, metric), y = fb.read_double_attribute(g, metric);
      EXPECT_TRUE((std::isnan(x) && std::isnan(y)) || x == y) << id << " " << metric << ": " << x << " vs " << y;
    }
    ASSERT_EQ(fa.has(g + "/samples"), fb.has(g + "/samples"));
    if (fa.has(g + "/samples")) EXPECT_TRUE((fa.read_matrix(g + "/samples") == fb.read_matrix(g + "/samples")).all()) << id;
  }
}

TEST(SweepPlan, ProductAndZipExpandDeterministically) {
  const Config c = Config::from_string(R"([sweep]
[sweep.product]
"process.name" = ["edm", "vp"]
grid.steps = [5, 10, 20]
[sweep.zip]
"sampler.name" = ["euler", "heun"]
"sampler.s_churn" = [0.0, 1.0]
[grid]
schedule = "karras"
)");
  const SweepPlan plan = plan_sweep(c);
  ASSERT_EQ(plan.runs.size(), 2u * 3u * 2u);
  // The first axis in the file varies slowest; the zipped pair moves together.
  EXPECT_EQ(plan.runs[0].problem, "edm/ring2d");
  EXPECT_EQ(plan.runs[11].problem, "vp/ring2d");
  EXPECT_EQ(plan.runs[0].config->at_path("grid.steps").value_or<std::int64_t>(0), 5);
  EXPECT_EQ(plan.runs[2].config->at_path("grid.steps").value_or<std::int64_t>(0), 10);
  EXPECT_EQ(plan.runs[1].config->at_path("sampler.name").value_or<std::string>(""), "heun");
  EXPECT_EQ(plan.runs[1].config->at_path("sampler.s_churn").value_or(-1.0), 1.0);
  EXPECT_EQ(plan.runs[1].variant, "heun s_churn=1");
  EXPECT_EQ(plan.runs[0].variant, "euler s_churn=0");
  // Ids derive from the resolved config alone: the same run in another sweep has the same id.
  const SweepPlan again = plan_sweep(c);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < plan.runs.size(); ++i) {
    EXPECT_EQ(plan.runs[i].id, again.runs[i].id);
    ids.insert(plan.runs[i].id);
  }
  EXPECT_EQ(ids.size(), plan.runs.size());
  const SweepPlan single = plan_sweep(Config::from_string(R"([process]
name = "edm"
[sampler]
name = "heun"
s_churn = 1.0
[grid]
schedule = "karras"
steps = 5
)"));
  ASSERT_EQ(single.runs.size(), 1u);
  EXPECT_EQ(single.runs[0].id, plan.runs[1].id);
}

TEST(SweepPlan, ATableValueReplacesTheTable) {
  const SweepPlan plan = plan_sweep(Config::from_string(R"([sweep.product]
sampler = [{ name = "unipc", order = 3 }, { name = "euler" }]
[sampler]
name = "heun"
s_churn = 2.0
)"));
  ASSERT_EQ(plan.runs.size(), 2u);
  EXPECT_FALSE(plan.runs[1].config->at_path("sampler.s_churn"));
  EXPECT_FALSE(plan.runs[1].config->at_path("sampler.order"));
  EXPECT_EQ(plan.runs[0].variant, "unipc order=3");
}

// Errors name the file, the line and the key; the runs are validated before anything runs.
TEST(SweepPlan, ErrorsNameKeyAndLine) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      const SweepPlan plan = plan_sweep(Config::from_string(text, "s.toml"));
      for (const auto& run : plan.runs) validate_run(run, plan.file);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error_of("[sweep.zip]\na = [1, 2]\nb = [1]\n").substr(0, 9), "s.toml:3:");
  EXPECT_NE(error_of("[sweep]\nfoo = 1\n").find("s.toml:2: sweep.foo: unknown key"), std::string::npos);
  EXPECT_NE(error_of("[sweep.product]\n\"grid.steps\" = 5\n").find("s.toml:2"), std::string::npos);
  // A bad value inside an axis is reported at the axis value's line.
  const std::string steps = error_of("[grid]\nschedule = \"karras\"\n[sampler]\nname = \"heun\"\n[sweep.product]\n\"grid.steps\" = [\n  5,\n  -3,\n]\n");
  EXPECT_NE(steps.find("s.toml:8: grid.steps: must lie in 1..1000000, got -3"), std::string::npos) << steps;
  const std::string option = error_of("[grid]\nsteps = 5\n[sweep.product]\nsampler = [\n { name = \"heun\" },\n { name = \"heun\", bogus = 1 },\n]\n");
  EXPECT_NE(option.find("s.toml:6: sampler.bogus: unknown key"), std::string::npos) << option;
  const std::string type = error_of("[grid]\nsteps = \"ten\"\n[sampler]\nname = \"euler\"\n");
  EXPECT_NE(type.find("s.toml:2: grid.steps: expected an integer"), std::string::npos) << type;
  const std::string top = error_of("[grid]\nsteps = 5\n[sampler]\nname = \"euler\"\n[metrcs]\nlaw = true\n");
  EXPECT_NE(top.find("s.toml:5: metrcs: unknown key"), std::string::npos) << top;
  const std::string range = error_of("[process]\nsigma_min = 90.0\n[grid]\nsteps = 5\n[sampler]\nname = \"euler\"\n");
  EXPECT_NE(range.find("s.toml:"), std::string::npos) << range;
  const std::string missing = error_of("[grid]\nschedule = \"file\"\nfile = \"/no/such/grid.txt\"\n[sampler]\nname = \"euler\"\n");
  EXPECT_NE(missing.find("/no/such/grid.txt"), std::string::npos) << missing;
}

TEST_F(SweepTest, BadConfigWritesNothingAndExitsTwo) {
  const fs::path path = write_config("bad.toml", config("[grid]\nsteps = 0\n[sampler]\nname = \"euler\"\n"));
  EXPECT_EQ(run_sweep_command(path, test_provenance(), {}), 2);
  EXPECT_FALSE(fs::exists(dir_ / "out.h5"));
  EXPECT_FALSE(fs::exists(dir_ / "out.h5.parts"));
}

TEST_F(SweepTest, WritesMetricsSummaryAndOrders) {
  const fs::path path = write_config("small.toml", config(kSmall));
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.threads = 2}), 0);
  EXPECT_FALSE(fs::exists(dir_ / "out.h5.parts"));  // taken into the file, then removed
  const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
  EXPECT_EQ(f.read_string_attribute("/", "schema"), "diffode-sweep/1");
  EXPECT_EQ(f.read_string_attribute("/", "finished"), "true");
  EXPECT_NE(f.read_string_attribute("/", "config").find("euler_ancestral"), std::string::npos);
  EXPECT_TRUE(f.has("summary"));
  EXPECT_TRUE(f.has("orders"));
  EXPECT_TRUE(f.has("mixtures/edm/ring2d/means"));
  const auto runs = f.members("runs");
  ASSERT_EQ(runs.size(), 6u);
  std::vector<double> heun_errors;
  for (const auto& id : runs) {
    const std::string g = "runs/" + id;
    EXPECT_EQ(f.read_string_attribute(g, "status"), "ok");
    const bool stochastic = f.read_double_attribute(g, "stochastic") == 1.0;
    // Deterministic runs: error against the PF-ODE; stochastic ones: strong error on their path.
    EXPECT_EQ(std::isfinite(f.read_double_attribute(g, "error_rms")), !stochastic) << id;
    EXPECT_EQ(std::isfinite(f.read_double_attribute(g, "strong_error")), stochastic) << id;
    // The strong error needs the same noise on both grids: such runs draw the Brownian path.
    EXPECT_EQ(f.read_string_attribute(g, "noise"), stochastic ? "brownian" : "none") << id;
    for (const char* m : {"nll", "nll_exact", "frechet", "frechet_floor", "energy", "energy_floor", "weak_mean_error", "weak_mean_floor"})
      EXPECT_TRUE(std::isfinite(f.read_double_attribute(g, m))) << id << " " << m;
    EXPECT_EQ(f.read_matrix(g + "/samples").rows(), 64);
  }
  // Heun's error falls with the step count at nearly its order (2) on this smooth problem.
  const SweepPlan plan = plan_sweep(Config(path));
  for (int i = 0; i < 3; ++i) heun_errors.push_back(f.read_double_attribute("runs/" + plan.runs[i].id, "error_rms"));
  EXPECT_GT(heun_errors[0], heun_errors[1]);
  EXPECT_GT(heun_errors[1], heun_errors[2]);
  EXPECT_GT(std::log2(heun_errors[1] / heun_errors[2]), 1.5);
}

TEST_F(SweepTest, AFailedRunIsRecordedAndTheSweepGoesOn) {
  // s_noise = 1e300 overflows the first noisy step: the run fails (non-finite), the others run.
  const fs::path path = write_config("fail.toml", config(R"(
[sweep.product]
sampler = [{ name = "euler_ancestral", s_noise = 1e300 }, { name = "euler" }]
[model]
preset = "ring2d"
[grid]
steps = 4
[run]
samples = 16
)"));
  EXPECT_EQ(run_sweep_command(path, test_provenance(), {}), 1);
  const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
  const SweepPlan plan = plan_sweep(Config(path));
  EXPECT_EQ(f.read_string_attribute("runs/" + plan.runs[0].id, "status"), "failed");
  EXPECT_NE(f.read_string_attribute("runs/" + plan.runs[0].id, "failure").find("non-finite"), std::string::npos);
  EXPECT_EQ(f.read_string_attribute("runs/" + plan.runs[1].id, "status"), "ok");
  EXPECT_EQ(f.read_string_attribute("/", "finished"), "true");
}

TEST_F(SweepTest, ResumeKeepsFailedRunsUnlessAskedToRetry) {
  const fs::path path = write_config("fail.toml", config(R"(
[sweep.product]
sampler = [{ name = "euler_ancestral", s_noise = 1e300 }, { name = "euler" }]
[grid]
steps = 4
[run]
samples = 16
)"));
  EXPECT_EQ(run_sweep_command(path, test_provenance(), {}), 1);
  // Resumed: the failed run is finished too, so nothing runs and the status is 0.
  EXPECT_EQ(run_sweep_command(path, test_provenance(), {}), 0);
  // Asked to retry it runs again (and fails again: the same config gives the same result).
  EXPECT_EQ(run_sweep_command(path, test_provenance(), {.retry_failed = true}), 1);
  const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
  EXPECT_EQ(f.members("runs").size(), 2u);
}

TEST_F(SweepTest, ResultsDoNotDependOnTheThreadCount) {
  const fs::path path = write_config("small.toml", config(kSmall));
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.threads = 1, .output = (dir_ / "one.h5").string()}), 0);
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.threads = 2, .output = (dir_ / "two.h5").string()}), 0);
  expect_same_runs(dir_ / "one.h5", dir_ / "two.h5");
}

// A run's cached PF-ODE reference is keyed by all it depends on: runs that draw x_T differently or
// cut the batch into other blocks (the adaptive solve controls its error per block) get their own,
// so each run measures the same in the sweep as alone.
TEST_F(SweepTest, ARunMeasuresTheSameAloneAsAmongOthers) {
  const std::string body = R"(
[sweep.product]
"run.initial" = {}
"run.block_rows" = {}
[model]
preset = "ring2d"
[sampler]
name = "heun"
[grid]
steps = 8
[run]
samples = 64
)";
  const fs::path all = write_config("all.toml", config(fmt::format(fmt::runtime(body), R"(["prior", "exact"])", "[16, 64]")));
  ASSERT_EQ(run_sweep_command(all, test_provenance(), {}), 0);
  const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
  ASSERT_EQ(f.members("runs").size(), 4u);
  for (const char* initial : {"prior", "exact"})
    for (const int rows : {16, 64}) {
      const std::string name = fmt::format("{}{}", initial, rows);
      const std::string text = fmt::format(fmt::runtime(body), fmt::format(R"(["{}"])", initial), fmt::format("[{}]", rows));
      const fs::path one = write_config(name + ".toml", config(text, name + ".h5"));
      ASSERT_EQ(run_sweep_command(one, test_provenance(), {}), 0);
      const Hdf5File alone(dir_ / (name + ".h5"), Hdf5File::Mode::read);
      const auto ids = alone.members("runs");
      ASSERT_EQ(ids.size(), 1u);
      for (const char* metric : {"error_rms", "error_max", "error_median"})
        EXPECT_EQ(alone.read_double_attribute("runs/" + ids[0], metric), f.read_double_attribute("runs/" + ids[0], metric)) << name << " " << metric;
    }
}

TEST_F(SweepTest, AnInterruptedSweepResumesToTheSameResults) {
  const fs::path path = write_config("small.toml", config(kSmall));
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.output = (dir_ / "whole.h5").string()}), 0);
  // Stopped after 2 runs: a readable file holding those 2, marked unfinished.
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.max_runs = 2}), 0);
  {
    const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
    EXPECT_EQ(f.members("runs").size(), 2u);
    EXPECT_EQ(f.read_string_attribute("/", "finished"), "false");
  }
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.max_runs = 1}), 0);
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {}), 0);
  expect_same_runs(dir_ / "whole.h5", dir_ / "out.h5");
  EXPECT_FALSE(fs::exists(dir_ / "out.h5.parts"));
  // Everything done: a further call runs nothing and keeps the file.
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {}), 0);
  expect_same_runs(dir_ / "whole.h5", dir_ / "out.h5");
}

#ifdef DIFFODE_BINARY
// The binary as a child process, for SIGKILL and mpirun; its standard output goes to `output`.
pid_t spawn(const std::vector<std::string>& args, const fs::path& output = "/dev/null") {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0) << args[0];
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The runs saved as parts so far: the whole <id>.h5 files, not the temporaries being written.
std::size_t count_parts(const fs::path& parts) {
  std::size_t n = 0;
  if (fs::exists(parts))
    for (const auto& entry : fs::directory_iterator(parts)) n += entry.path().extension() == ".h5" ? 1 : 0;
  return n;
}

// SIGKILL at arbitrary moments after a run has finished (during a later run, while a part or the
// sweep's file is written) leaves every stored run whole and readable, each attempt keeps at least
// the run it saw finish, and the same command then completes the sweep to the uninterrupted results.
TEST_F(SweepTest, SurvivesSigkillAtAnyMoment) {
  // 256 samples: runs of some 15 ms, so that a kill soon after the first one lands mid-sweep.
  std::string heavier = kSmall;
  heavier.replace(heavier.find("samples = 64"), 12, "samples = 256");
  const fs::path path = write_config("small.toml", config(heavier));
  ASSERT_EQ(wait_for(spawn({DIFFODE_BINARY, "sweep", path.string(), "--threads", "1", "--output", (dir_ / "whole.h5").string()})), 0);
  const fs::path parts = dir_ / "out.h5.parts", out = dir_ / "out.h5";
  // Opens every part and the sweep's file (Hdf5File throws on a torn file), checks each holds whole
  // runs, and returns the ids stored in either.
  auto stored_runs = [&] {
    std::set<std::string> ids;
    if (fs::exists(parts))
      for (const auto& entry : fs::directory_iterator(parts)) {
        if (entry.path().extension() != ".h5") continue;
        const Hdf5File part(entry.path(), Hdf5File::Mode::read);
        EXPECT_EQ(part.read_string_attribute("run", "status"), "ok") << entry.path();
        EXPECT_EQ(part.read_matrix("run/samples").rows(), 256) << entry.path();
        ids.insert(entry.path().stem().string());
      }
    if (fs::exists(out)) {
      const Hdf5File f(out, Hdf5File::Mode::read);
      EXPECT_TRUE(f.has("summary"));
      for (const auto& id : f.members("runs")) {
        EXPECT_EQ(f.read_string_attribute("runs/" + id, "status"), "ok") << id;
        EXPECT_EQ(f.read_matrix("runs/" + id + "/samples").rows(), 256) << id;
        ids.insert(id);
      }
    }
    return ids;
  };
  std::mt19937 random(7);
  int killed = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::size_t before = stored_runs().size(), parts_before = count_parts(parts);
    const pid_t pid = spawn({DIFFODE_BINARY, "sweep", path.string(), "--threads", "1"});
    // Until a run of this attempt is saved (or the sweep ends by itself), then a random moment more.
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 30000 && !exited && count_parts(parts) == parts_before; ++i) {
      exited = waitpid(pid, &status, WNOHANG) == pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!exited) {
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 20000)(random)));
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ++killed;
    const std::size_t after = stored_runs().size();
    EXPECT_GT(after, before) << "attempt " << attempt << " kept no finished run";
    if (after == 6u) break;
  }
  EXPECT_GE(killed, 1) << "no attempt was killed mid-sweep";
  ASSERT_EQ(wait_for(spawn({DIFFODE_BINARY, "sweep", path.string(), "--threads", "1"})), 0);
  expect_same_runs(dir_ / "whole.h5", out);
  EXPECT_FALSE(fs::exists(parts));
}

// SIGINT lets the current run finish, stores what is done and exits with 130 by itself (not killed
// by the signal); the same command then runs the rest.
TEST_F(SweepTest, SigintStopsAfterTheRunAndKeepsWhatIsDone) {
  // 42 runs of 256 samples (some 0.6 s in all): the sweep is still going when the first part appears.
  std::string many = kSmall;
  many.replace(many.find("[4, 8, 16]"), 10, "[4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]");
  many.replace(many.find("samples = 64"), 12, "samples = 256");
  const fs::path path = write_config("many.toml", config(many));
  const fs::path parts = dir_ / "out.h5.parts";
  const pid_t pid = spawn({DIFFODE_BINARY, "sweep", path.string(), "--threads", "1"});
  // A saved part means the sweep is past installing its handler and inside its loop.
  for (int i = 0; i < 30000 && count_parts(parts) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GE(count_parts(parts), 1u) << "no run finished within 30 s";
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ", not by itself";
  EXPECT_EQ(WEXITSTATUS(status), 130);  // sweep_config_help(): 130 interrupted
  ASSERT_TRUE(fs::exists(dir_ / "out.h5"));
  {
    const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
    const std::size_t kept = f.members("runs").size();
    EXPECT_GE(kept, 1u);
    EXPECT_LT(kept, 42u) << "every run finished: the interrupt stopped nothing";
    EXPECT_EQ(f.read_string_attribute("/", "finished"), "false");
  }
  ASSERT_EQ(wait_for(spawn({DIFFODE_BINARY, "sweep", path.string(), "--threads", "1"})), 0);
  const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
  EXPECT_EQ(f.members("runs").size(), 42u);
  EXPECT_EQ(f.read_string_attribute("/", "finished"), "true");
  EXPECT_FALSE(fs::exists(parts));
}

// mpirun as the sweep's launcher: root in containers needs OpenMPI's consent, and a 2-core machine
// needs --oversubscribe for 2 or 3 ranks (some hosts count cores differently). Leak reports of the
// MPI runtime are not ours (the sanitizer build). Returns the exit status; the ranks' output goes to
// `log`.
int mpirun(int ranks, const std::vector<std::string>& sweep_args, const fs::path& log) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
  std::vector<std::string> args{"mpirun", "--oversubscribe", "-x", "ASAN_OPTIONS", "-np", std::to_string(ranks), DIFFODE_BINARY, "sweep"};
  args.insert(args.end(), sweep_args.begin(), sweep_args.end());
  return wait_for(spawn(args, log));
}

// The progress lines of a ranks' log, "rank R [k/n] <problem> <variant> steps=S: ...": for each
// rank, the runs it ran ("<problem> <variant> steps=S").
std::map<int, std::vector<std::string>> runs_by_rank(const fs::path& log) {
  std::ifstream in(log);
  std::map<int, std::vector<std::string>> runs;
  std::string line;
  while (std::getline(in, line)) {
    int rank = -1;
    if (std::sscanf(line.c_str(), "rank %d [", &rank) != 1 || line.find(" [") != line.find(' ', 5)) continue;
    const auto run_start = line.find("] "), run_end = line.find(": ");
    EXPECT_TRUE(run_start != std::string::npos && run_end != std::string::npos) << line;
    if (run_start == std::string::npos || run_end == std::string::npos) continue;
    runs[rank].push_back(line.substr(run_start + 2, run_end - run_start - 2));
  }
  return runs;
}

// mpirun -np 2 runs each run once, the runs that share a cached solve on one rank, and writes the
// file a single process writes.
TEST_F(SweepTest, TwoMpiRanksWriteTheSingleProcessFile) {
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  const fs::path path = write_config("small.toml", config(kSmall));
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.threads = 1, .output = (dir_ / "single.h5").string()}), 0);
  const fs::path log = dir_ / "ranks.log";
  ASSERT_EQ(mpirun(2, {path.string(), "--threads", "1", "--output", (dir_ / "ranks.h5").string()}, log), 0);
  expect_same_runs(dir_ / "single.h5", dir_ / "ranks.h5");
  const Hdf5File f(dir_ / "ranks.h5", Hdf5File::Mode::read);
  EXPECT_EQ(f.read_string_attribute("/", "finished"), "true");
  // Every run (the 6 differ in variant or steps) appears once over both ranks. The 3 heun runs share
  // one PF-ODE reference and the 3 euler_ancestral runs one fine solve: each three ran on one rank.
  std::vector<std::string> all;
  std::map<std::string, std::set<int>> ranks_of_sampler;
  for (const auto& [rank, runs] : runs_by_rank(log)) {
    EXPECT_TRUE(rank == 0 || rank == 1) << rank;
    for (const auto& run : runs) {
      all.push_back(run);
      ranks_of_sampler[run.find("heun") != std::string::npos ? "heun" : "euler_ancestral"].insert(rank);
    }
  }
  EXPECT_EQ(all.size(), 6u);
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), all.size()) << "a run ran twice";
  EXPECT_EQ(ranks_of_sampler["heun"].size(), 1u) << "the heun runs' reference was solved on two ranks";
  EXPECT_EQ(ranks_of_sampler["euler_ancestral"].size(), 1u) << "the euler_ancestral runs' fine solve was solved on two ranks";
}

// More ranks than groups of runs, a sweep stopped under MPI and resumed on another rank count:
// the same file as one process writes, each run run once over the invocations.
TEST_F(SweepTest, AnMpiSweepResumesOnAnyRankCountToTheSingleProcessFile) {
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  // 4 seeds x 2 samplers x 3 steps: 8 groups of 3 runs sharing a solve.
  std::string seeds = kSmall;
  seeds.replace(seeds.find("\"grid.steps\""), 0, "\"run.seed\" = [0, 1, 2, 3]\n");
  const fs::path path = write_config("seeds.toml", config(seeds));
  ASSERT_EQ(run_sweep_command(path, test_provenance(), {.threads = 1, .output = (dir_ / "single.h5").string()}), 0);
  ASSERT_EQ(mpirun(3, {path.string(), "--threads", "1", "--max-runs", "5"}, dir_ / "first.log"), 0);
  {
    const Hdf5File f(dir_ / "out.h5", Hdf5File::Mode::read);
    EXPECT_EQ(f.members("runs").size(), 5u) << "--max-runs bounds the runs of all ranks together";
    EXPECT_EQ(f.read_string_attribute("/", "finished"), "false");
  }
  ASSERT_EQ(mpirun(2, {path.string(), "--threads", "1"}, dir_ / "second.log"), 0);
  expect_same_runs(dir_ / "single.h5", dir_ / "out.h5");
  EXPECT_FALSE(fs::exists(dir_ / "out.h5.parts"));
  std::size_t ran = 0;
  for (const char* log : {"first.log", "second.log"})
    for (const auto& [rank, runs] : runs_by_rank(dir_ / log)) ran += runs.size();
  EXPECT_EQ(ran, 24u);
  // Three ranks on the whole sweep at once: again the single process's file.
  ASSERT_EQ(mpirun(3, {path.string(), "--threads", "1", "--output", (dir_ / "three.h5").string()}, dir_ / "third.log"), 0);
  expect_same_runs(dir_ / "single.h5", dir_ / "three.h5");
}
#endif

}  // namespace
}  // namespace diffode
