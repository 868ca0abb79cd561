// [model] classes and [guidance] through `diffode sample` (experiments/run/readers.hpp): a guided
// run samples the requested class, guidance moves it, and impossible tables are refused (exit 2,
// nothing written).
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/provenance.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/support/temp_folder.hpp"

namespace diffode {
namespace {

namespace fs = std::filesystem;

class GuidanceConfig : public testing::TempFolderTest {
 protected:
  // The 8-mode ring, classes alternating 0, 1 around it.
  std::string config(const fs::path& output, const std::string& guidance, const std::string& classes = "classes = [0, 1, 0, 1, 0, 1, 0, 1]") {
    return fmt::format(R"([process]
name = "edm"
[model]
preset = "ring2d"
{}
{}
[grid]
schedule = "karras"
steps = 20
[sampler]
name = "heun"
[run]
samples = 400
seed = 3
output = "{}"
)", classes, guidance, output.string());
  }
  Batch run(const std::string& name, const std::string& guidance) {
    const fs::path out = dir_ / (name + ".h5");
    EXPECT_EQ(run_sample_command(write_config(name + ".toml", config(out, guidance)), provenance_), 0);
    return Hdf5File(out, Hdf5File::Mode::read).read_matrix("samples");
  }
  Provenance provenance_{.command_line = "test", .commit = "test", .versions = "test", .host = "test", .start_time = "test"};
};

// Fraction of rows nearest to a ring mode of class c (modes at angles 2 pi k / 8, class k % 2).
double share_of_class(const Batch& x, int c) {
  int hits = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    const double angle = std::atan2(x(i, 1), x(i, 0));
    const long k = std::lround(angle / (2.0 * 3.141592653589793 / 8.0));
    hits += ((k % 2) + 2) % 2 == c;
  }
  return static_cast<double>(hits) / static_cast<double>(x.rows());
}

TEST_F(GuidanceConfig, SamplesTheRequestedClass) {
  const Batch unguided = run("plain", "");
  EXPECT_NEAR(share_of_class(unguided, 1), 0.5, 0.1);
  const Batch conditional = run("cond", "[guidance]\nclass = 1");
  EXPECT_GT(share_of_class(conditional, 1), 0.99);
  const Batch guided = run("cfg", "[guidance]\nclass = 1\nscale = 3.0");
  EXPECT_GT(share_of_class(guided, 1), 0.99);
  // The same noise, guided: the samples move.
  EXPECT_GT((guided - conditional).abs().maxCoeff(), 1e-3);
  // Classifier guidance with exact models is CFG up to rounding.
  const Batch classifier = run("classifier", "[guidance]\nclass = 1\nscale = 3.0\nkind = \"classifier\"");
  EXPECT_LT((classifier - guided).abs().maxCoeff(), 1e-8);
  // An interval that excludes every level of the grid is the conditional model.
  const Batch outside = run("outside", "[guidance]\nclass = 1\nscale = 3.0\ninterval = [1000.0, 2000.0]");
  EXPECT_TRUE((outside == conditional).all());
}

// class = "all" on the mixture: every class in turn, samples / C rows each, labelled; each class's
// rows are those of a run of that class alone with samples / C (blocks and threads aside).
TEST_F(GuidanceConfig, AllClassesAreEachClassesRunInTurn) {
  const fs::path all = dir_ / "all.h5";
  std::string text = config(all, "[guidance]\nclass = \"all\"\nscale = 2.0");
  text.replace(text.find("samples = 400"), 13, "samples = 400\nblock_rows = 64");
  ASSERT_EQ(run_sample_command(write_config("all.toml", text), provenance_, 2), 0);
  const Hdf5File f(all, Hdf5File::Mode::read);
  const Batch samples = f.read_matrix("samples");
  const std::vector<std::int64_t> labels = f.read_int64_vector("labels");
  ASSERT_EQ(labels.size(), 400u);
  for (std::size_t i = 0; i < labels.size(); ++i) ASSERT_EQ(labels[i], i < 200 ? 0 : 1) << i;
  // Sampler evaluations and, behind them, the mixture's: two per guided evaluation.
  EXPECT_EQ(f.read_double_attribute("/", "model_calls"), 2.0 * f.read_double_attribute("/", "nfe"));
  for (int c = 0; c < 2; ++c) {
    const fs::path one = dir_ / fmt::format("class{}.h5", c);
    std::string single = config(one, fmt::format("[guidance]\nclass = {}\nscale = 2.0", c));
    single.replace(single.find("samples = 400"), 13, "samples = 200");
    ASSERT_EQ(run_sample_command(write_config(fmt::format("class{}.toml", c), single), provenance_), 0);
    EXPECT_TRUE((samples.middleRows(200 * c, 200) == Hdf5File(one, Hdf5File::Mode::read).read_matrix("samples")).all()) << c;
    EXPECT_GT(share_of_class(samples.middleRows(200 * c, 200), c), 0.99);
  }
}

TEST_F(GuidanceConfig, RefusesImpossibleTables) {
  const auto refused = [&](const std::string& name, const std::string& guidance, const std::string& classes) {
    const fs::path out = dir_ / (name + ".h5");
    EXPECT_EQ(run_sample_command(write_config(name + ".toml", config(out, guidance, classes)), provenance_), 2) << name;
    EXPECT_FALSE(fs::exists(out)) << name;
  };
  const std::string classes = "classes = [0, 1, 0, 1, 0, 1, 0, 1]";
  refused("no_classes", "[guidance]\nclass = 0", "");
  refused("class_range", "[guidance]\nclass = 2", classes);
  refused("negative_range", "[guidance]\nclass = 0\nnegative_class = 5", classes);
  refused("rescale_classifier", "[guidance]\nclass = 0\nkind = \"classifier\"\nrescale = 0.5", classes);
  refused("rescale_range", "[guidance]\nclass = 0\nrescale = 1.5", classes);
  refused("interval", "[guidance]\nclass = 0\ninterval = [2.0, 1.0]", classes);
  refused("scale", "[guidance]\nclass = 0\nscale = -1.0", classes);
  refused("unknown_key", "[guidance]\nclass = 0\nscael = 1.0", classes);
  refused("few_classes", "[guidance]\nclass = 0", "classes = [0, 1, 0]");
  refused("empty_class", "[guidance]\nclass = 0", "classes = [0, 2, 0, 2, 0, 2, 0, 2]");
  refused("fractional", "", "classes = [0, 1.5, 0, 1, 0, 1, 0, 1]");
  refused("not_all", "[guidance]\nclass = \"every\"", classes);
  refused("all_indivisible", "[guidance]\nclass = \"all\"", "classes = [0, 1, 2, 0, 1, 2, 0, 1]");  // 400 samples, 3 classes
}

}  // namespace
}  // namespace diffode
