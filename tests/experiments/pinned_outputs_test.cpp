// The command-line outputs of fixed configs, pinned bit for bit: the configs in tests/data/pinned/
// run through the `diffode` binary (sample, sweep, likelihood), and a hash of each result dataset
// (samples, initial noise, log-likelihoods, NFE, the sweep's metrics) must equal the one recorded
// in tests/data/pinned/hashes.txt. Restructuring the command layer must not move a bit; a change
// that is meant to change results regenerates the file on purpose:
//     DIFFODE_WRITE_PINS=1 build/pinned_outputs_test
// (DIFFODE_PIN_BINARY=path/to/diffode pins another build's outputs, e.g. that of an older commit.)
#include "experiments/run/hdf5_file.hpp"
#include "experiments/sweep/plan.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace diffode {
namespace {

#ifdef DIFFODE_BINARY
const std::filesystem::path kPinned = std::filesystem::path(DIFFODE_SOURCE_DIR) / "tests/data/pinned";

std::string hash_of(const std::vector<double>& values) {
  std::string bytes(values.size() * sizeof(double), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return content_id(bytes);
}
std::string hash_of(const Batch& values) {
  std::vector<double> row_major;
  for (Index i = 0; i < values.rows(); ++i)
    for (Index j = 0; j < values.cols(); ++j) row_major.push_back(values(i, j));
  return hash_of(row_major);
}

using Hashes = std::map<std::string, std::string>;  // "config what" -> hash

// Runs `diffode <command> <config>` in `dir` (outputs are relative paths); the exit code.
int run_diffode(const std::filesystem::path& dir, const std::string& command, const std::string& config) {
  const char* other = std::getenv("DIFFODE_PIN_BINARY");
  // Two threads: the results must not depend on them (an older build's `sample` had no --threads).
  const std::string threads = other && command == "sample" ? "" : "--threads 2";
  const std::string line = fmt::format("cd '{}' && '{}' {} '{}' {} > log.txt 2>&1", dir.string(), other ? other : DIFFODE_BINARY, command,
                                       (kPinned / config).string(), threads);
  return WEXITSTATUS(std::system(line.c_str()));
}

class PinnedOutputs : public testing::TempFolderTest {
 protected:
  void record(const std::string& key, const std::string& hash) { measured_[key] = hash; }
  Hashes measured_;
};

TEST_F(PinnedOutputs, EveryCommandReproducesItsRecordedBits) {
  std::vector<std::string> samples, likelihoods;
  for (const auto& entry : std::filesystem::directory_iterator(kPinned)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".toml" || name == "sweep_small.toml") continue;
    (name.starts_with("likelihood") ? likelihoods : samples).push_back(name);
  }
  ASSERT_GE(samples.size(), 10u);
  ASSERT_GE(likelihoods.size(), 2u);
  for (const auto& config : samples) {
    const int code = run_diffode(dir_, "sample", config);
    ASSERT_TRUE(code == 0 || code == 1) << config;
    const Hdf5File h5(dir_ / (config.substr(0, config.size() - 5) + ".h5"), Hdf5File::Mode::read);
    record(config + " samples", hash_of(h5.read_matrix("samples")));
    record(config + " initial", hash_of(h5.read_matrix("initial")));
    record(config + " grid", hash_of(h5.read_vector("grid/sigma")));
    record(config + " nfe", fmt::format("{}", h5.read_double_attribute("/", "nfe")));
  }
  for (const auto& config : likelihoods) {
    ASSERT_EQ(run_diffode(dir_, "likelihood", config), 0) << config;
    const Hdf5File h5(dir_ / (config.substr(0, config.size() - 5) + ".h5"), Hdf5File::Mode::read);
    for (const char* dataset : {"log_p", "nfe", "std_error", "x_T"}) record(config + " " + dataset, hash_of(h5.read_matrix(dataset)));
  }
  ASSERT_EQ(run_diffode(dir_, "sweep", "sweep_small.toml"), 0);
  const Hdf5File h5(dir_ / "pinned_sweep.h5", Hdf5File::Mode::read);
  const auto runs = h5.members("runs");
  ASSERT_EQ(runs.size(), 16u);
  for (const auto& id : runs) {
    const std::string group = "runs/" + id;
    const int index = static_cast<int>(h5.read_double_attribute(group, "index"));
    std::vector<double> metrics;
    for (const char* m : {"nfe", "error_rms", "error_median", "strong_error", "nll", "frechet", "energy", "weak_cov_error"})
      metrics.push_back(h5.read_double_attribute(group, m));
    record(fmt::format("sweep_small.toml run{:02d} samples", index), hash_of(h5.read_matrix(group + "/samples")));
    record(fmt::format("sweep_small.toml run{:02d} metrics", index), hash_of(metrics));
  }

  const std::filesystem::path file = kPinned / "hashes.txt";
  if (std::getenv("DIFFODE_WRITE_PINS")) {
    std::ofstream out(file);
    out << "# config what hash: written by DIFFODE_WRITE_PINS=1 pinned_outputs_test\n";
    for (const auto& [key, hash] : measured_) out << key << " " << hash << "\n";
    GTEST_SKIP() << "wrote " << file;
  }
  Hashes expected;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto last = line.rfind(' ');
    expected[line.substr(0, last)] = line.substr(last + 1);
  }
  ASSERT_EQ(expected.size(), measured_.size()) << "tests/data/pinned/hashes.txt lists another set of outputs";
  for (const auto& [key, hash] : expected) {
    ASSERT_TRUE(measured_.contains(key)) << key;
    EXPECT_EQ(measured_.at(key), hash) << key;
  }
}
#endif

}  // namespace
}  // namespace diffode
