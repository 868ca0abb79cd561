// `diffode sample`: a config is checked whole before anything runs (key, line and reason in the
// message, nothing written), results land in HDF5 with their provenance, and a run replays exactly
// from its own initial noise and sigma grid.
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/provenance.hpp"
#include "experiments/cli/commands.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/support/temp_folder.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace diffode {
namespace {

namespace fs = std::filesystem;

class SampleCommand : public diffode::testing::TempFolderTest {
 protected:
  std::string base_config(const std::string& output, const std::string& extra_run = "") {
    return fmt::format(R"([process]
name = "vp"
[model]
preset = "ring2d"
[grid]
schedule = "karras"
steps = 12
[sampler]
name = "euler"
[run]
samples = 32
seed = 5
output = "{}"
{}
)", output, extra_run);
  }
  Provenance provenance_{.command_line = "test", .commit = "test", .versions = "test", .host = "test", .start_time = "test"};
};

TEST_F(SampleCommand, WritesSamplesGridAndProvenance) {
  const fs::path out = dir_ / "out.h5";
  ASSERT_EQ(run_sample_command(write_config("a.toml", base_config(out.string())), provenance_), 0);
  Hdf5File h5(out, Hdf5File::Mode::read);
  EXPECT_EQ(h5.read_matrix("samples").rows(), 32);
  EXPECT_EQ(h5.read_matrix("samples").cols(), 2);
  EXPECT_EQ(h5.read_vector("grid/sigma").size(), 13u);  // 12 Karras sigmas down to sigma_min, then 0
  EXPECT_EQ(h5.read_string_attribute("/", "status"), "ok");
  EXPECT_EQ(h5.read_string_attribute("/", "sampler"), "euler");
  EXPECT_NE(h5.read_string_attribute("/", "config").find("karras"), std::string::npos);
  EXPECT_TRUE(h5.read_matrix("samples").isFinite().all());
}

TEST_F(SampleCommand, ReplaysFromItsOwnNoiseAndSigmas) {
  const fs::path first = dir_ / "first.h5", replay = dir_ / "replay.h5";
  ASSERT_EQ(run_sample_command(write_config("a.toml", base_config(first.string())), provenance_), 0);
  // Same noise and sigmas, now read from the first run's file, with a different seed that must not matter.
  const std::string replay_config = fmt::format(R"([process]
name = "vp"
[model]
preset = "ring2d"
[grid]
schedule = "hdf5"
file = "{0}"
dataset = "grid/sigma"
variable = "sigma"
[sampler]
name = "euler"
[run]
seed = 99
initial_file = "{0}"
initial_dataset = "initial"
output = "{1}"
)", first.string(), replay.string());
  ASSERT_EQ(run_sample_command(write_config("b.toml", replay_config), provenance_), 0);
  const Batch a = Hdf5File(first, Hdf5File::Mode::read).read_matrix("samples");
  const Batch b = Hdf5File(replay, Hdf5File::Mode::read).read_matrix("samples");
  ASSERT_EQ(a.rows(), b.rows());
  EXPECT_EQ((a - b).abs().maxCoeff(), 0.0);
}

TEST_F(SampleCommand, BadConfigsExitTwoAndWriteNothing) {
  const fs::path out = dir_ / "never.h5";
  std::string misspelt = base_config(out.string());
  misspelt.replace(misspelt.find("steps = 12"), 10, "steps = 12\nrhoo = 3");
  EXPECT_EQ(run_sample_command(write_config("misspelt.toml", misspelt), provenance_), 2);
  std::string wrong_type = base_config(out.string());
  wrong_type.replace(wrong_type.find("steps = 12"), 10, "steps = \"12\"");
  EXPECT_EQ(run_sample_command(write_config("type.toml", wrong_type), provenance_), 2);
  std::string negative = base_config(out.string());
  negative.replace(negative.find("steps = 12"), 10, "steps = -3");
  EXPECT_EQ(run_sample_command(write_config("negative.toml", negative), provenance_), 2);
  EXPECT_EQ(run_sample_command(write_config("missing.toml", base_config(out.string(), "initial_file = \"/no/such.h5\"")), provenance_), 2);
  EXPECT_EQ(run_sample_command(dir_ / "absent.toml", provenance_), 2);
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(SampleCommand, ResultsDoNotDependOnTheThreadCount) {
  // A stochastic sampler over blocks of 8 rows: each block's noise is keyed by its global rows.
  for (const char* sampler : {"euler_ancestral", "dpmpp_2m", "pc"}) {
    SCOPED_TRACE(sampler);
    std::string config = base_config((dir_ / "one.h5").string(), "block_rows = 8\nsave_trajectory = true");
    config.replace(config.find("name = \"euler\""), 14, fmt::format("name = \"{}\"", sampler));
    ASSERT_EQ(run_sample_command(write_config("one.toml", config), provenance_, 1), 0);
    config.replace(config.find("one.h5"), 6, "two.h5");
    ASSERT_EQ(run_sample_command(write_config("two.toml", config), provenance_, 3), 0);
    const Hdf5File one(dir_ / "one.h5", Hdf5File::Mode::read), two(dir_ / "two.h5", Hdf5File::Mode::read);
    EXPECT_TRUE((one.read_matrix("samples") == two.read_matrix("samples")).all());
    EXPECT_TRUE((one.read_matrix("trajectory/step_0006") == two.read_matrix("trajectory/step_0006")).all());
    EXPECT_EQ(one.read_double_attribute("/", "nfe"), two.read_double_attribute("/", "nfe"));
  }
}

#ifdef DIFFODE_BINARY
// The command's defaults (all cores, [run] block_rows 256) give, bit for bit, what one thread gives
// on one block of the whole batch or on blocks of 7 rows: these samplers are row-wise and key their
// noise by the global row. A batch-coupled sampler (odeint_dopri5: one step control for the block)
// depends on the blocks, not on the threads: its default is compared with one thread on the same
// blocks.
TEST_F(SampleCommand, DefaultThreadsAndBlocksGiveTheOneThreadResults) {
  auto run = [&](const std::string& name, const std::string& sampler, const std::string& blocks, int threads) {
    std::string config = base_config((dir_ / (name + ".h5")).string(), blocks);
    config.replace(config.find("samples = 32"), 12, "samples = 1000");  // 4 blocks of the default 256
    config.replace(config.find("name = \"euler\""), 14, fmt::format("name = \"{}\"", sampler));
    const fs::path path = write_config(name + ".toml", config);
    if (threads == 0) {  // the binary with its defaults
      EXPECT_EQ(std::system(fmt::format("'{}' sample '{}' > /dev/null", DIFFODE_BINARY, path.string()).c_str()), 0) << name;
    } else {
      EXPECT_EQ(run_sample_command(path, provenance_, threads), 0) << name;
    }
    return Hdf5File(dir_ / (name + ".h5"), Hdf5File::Mode::read).read_matrix("samples");
  };
  auto initial = [&](const std::string& name) { return Hdf5File(dir_ / (name + ".h5"), Hdf5File::Mode::read).read_matrix("initial"); };
  for (const char* sampler : {"euler_ancestral", "dpmpp_2m", "heun"}) {
    SCOPED_TRACE(sampler);
    const Batch defaults = run("defaults", sampler, "", 0);
    EXPECT_TRUE((defaults == run("whole", sampler, "block_rows = 1000", 1)).all());
    EXPECT_TRUE((defaults == run("sevens", sampler, "block_rows = 7", 3)).all());
    // One block drops its copy of x_T during the solve and draws it again for /initial; blocked
    // runs keep it: the file holds the same x_T either way.
    EXPECT_TRUE((initial("defaults") == initial("whole")).all());
    EXPECT_TRUE((initial("sevens") == initial("whole")).all());
  }
  const Batch coupled = run("coupled", "odeint_dopri5", "", 0);
  EXPECT_TRUE((coupled == run("coupled_one", "odeint_dopri5", "block_rows = 256", 1)).all());
  EXPECT_FALSE((coupled == run("coupled_whole", "odeint_dopri5", "block_rows = 1000", 1)).all()) << "the blocks no longer matter";
}
#endif

TEST_F(SampleCommand, AnUnwritableOutputIsRefusedBeforeAnyWork) {
  write_config("file", "not a folder");
  for (const std::string output : {(dir_ / "file" / "out.h5").string(), dir_.string(), std::string("")}) {
    EXPECT_EQ(run_sample_command(write_config("bad.toml", base_config(output)), provenance_), 2) << output;
  }
  // The folder of a new output is created; no temporary file is left beside the result.
  const fs::path nested = dir_ / "new" / "folder" / "out.h5";
  ASSERT_EQ(run_sample_command(write_config("nested.toml", base_config(nested.string())), provenance_), 0);
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(nested.parent_path())) files += entry.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1u);
}

TEST_F(SampleCommand, EverySamplerRunsFromAConfig) {
  for (const auto& entry : sampler_registry()) {
    const fs::path out = dir_ / (entry.name + ".h5");
    std::string config = base_config(out.string());
    config.replace(config.find("name = \"euler\""), 14, fmt::format("name = \"{}\"", entry.name));
    ASSERT_EQ(run_sample_command(write_config(entry.name + ".toml", config), provenance_), 0) << entry.name;
    const Batch samples = Hdf5File(out, Hdf5File::Mode::read).read_matrix("samples");
    EXPECT_TRUE(samples.isFinite().all()) << entry.name;
    // 12 Karras steps to sigma = 0 from the prior land near the ring of radius 2 (std 0.2); the
    // ancestral samplers overshoot most at so few steps (mean radius up to 2.4 measured).
    EXPECT_NEAR(samples.matrix().rowwise().norm().mean(), 2.0, 0.5) << entry.name;
  }
}

TEST(Config, ErrorsNameFileLineAndKey) {
  const Config config = Config::from_string("[grid]\nsteps = 10\nshedule = \"karras\"\n", "c.toml");
  ConfigTable root = config.root();
  ConfigTable grid = root.table("grid");
  EXPECT_EQ(grid.integer("steps"), 10);
  EXPECT_EQ(grid.string("schedule", "karras"), "karras");
  try {
    grid.finish();
    FAIL() << "an unknown key must be an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("c.toml:3: grid.shedule: unknown key"), std::string::npos) << e.what();
  }
  try {
    Config::from_string("[grid\nsteps = 1\n", "broken.toml");
    FAIL() << "a parse error must be an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.toml:1:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace diffode
