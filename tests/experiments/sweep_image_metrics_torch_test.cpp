// The image metrics of a sweep ([metrics] frechet_features / frechet_reference / classifier), end
// to end on a class-conditional TorchScript denoiser with [guidance] class = "all":
//   - each run's Frechet distance column (fd_pixels, fd_<feature network>) equals `diffode fd` on
//     the run's saved samples against the same reference, and its class_accuracy equals
//     `diffode classify` on the saved samples and labels;
//   - a sweep stopped after some runs and resumed gives the rows of an uninterrupted one, bit for bit;
//   - bad [metrics] keys and values exit 2 naming the key (and a missing file its path).
//
// The denoiser is exact for three classes of 12 x 12 images, N(mu_c, 0.05 I) with mu_c a bright band
// of rows [4c, 4c + 4) (the striped images the classifier is trained on, as in
// classifier_command_torch_test.cpp), label 3 the null class (their equal-weight mixture).
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/sweep/runner.hpp"
#include "models/fashion_mnist.hpp"
#include "tests/support/striped_images.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace diffode {
namespace {

namespace fs = std::filesystem;

constexpr const char* kExport = R"PY(
import sys
import torch

out = sys.argv[1]
side = 12
mu = torch.full((3, side * side), 2.0 * 65.0 / 255.0 - 1.0, dtype=torch.float64)
for c in range(3):
    for r in range(4 * c, 4 * c + 4):
        mu[c, r * side:(r + 1) * side] = 2.0 * 225.0 / 255.0 - 1.0


class ClassGauss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(mu.clone())

    def forward(self, x, s, c):
        var = (0.05 + s * s)[:, None, None]
        diff = x[:, None, :] - self.mu[None, :, :]
        dk = self.mu[None, :, :] + (0.05 / var) * diff
        logit = -0.5 * (diff * diff).sum(2) / var[:, :, 0]
        r = torch.softmax(logit, 1)
        null = (r[:, :, None] * dk).sum(1)
        cond = dk[torch.arange(x.shape[0]), torch.clamp(c, 0, 2)]
        return torch.where((c == 3)[:, None], null, cond)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        k = torch.arange(6 * side * side, dtype=torch.float64).reshape(6, side * side)
        self.w = torch.nn.Parameter(torch.sin(0.37 * k) / side)

    def forward(self, x):
        return x.double().flatten(1) @ self.w.t()


torch.jit.script(ClassGauss()).save(f"{out}/class_gauss.pt")
torch.jit.script(Linear()).save(f"{out}/linear.pt")
)PY";

Provenance no_provenance() { return Provenance{}; }

// One double column of a sweep file's summary table (a compound dataset), read by its name.
std::vector<double> summary_column(const fs::path& file, const std::string& name) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t set = H5Dopen2(f, "summary", H5P_DEFAULT);
  const hid_t space = H5Dget_space(set);
  std::vector<double> out(static_cast<std::size_t>(H5Sget_simple_extent_npoints(space)));
  const hid_t type = H5Tcreate(H5T_COMPOUND, sizeof(double));
  H5Tinsert(type, name.c_str(), 0, H5T_NATIVE_DOUBLE);
  const herr_t status = H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data());
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(set);
  H5Fclose(f);
  if (status < 0) out.clear();
  return out;
}

class SweepImageMetricsTest : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    use_network_backend(diffode_network_backend());
    std::ofstream(dir_ / "export.py") << kExport;
    if (std::system(fmt::format("/usr/bin/python3 '{}' '{}' > /dev/null 2>&1", (dir_ / "export.py").string(), dir_.string()).c_str()) != 0)
      GTEST_SKIP() << "needs /usr/bin/python3 with PyTorch (Debian's python3-torch) to export TorchScript modules";
    const fs::path data = dir_ / "fmnist";
    fs::create_directories(data);
    testing::write_striped_split(data, "train", 300, 0);
    testing::write_striped_split(data, "t10k", 90, 1000);
    const auto train = write_config("clf.toml", testing::striped_classifier_config(data, 40, dir_ / "clf.pt"));
    ::testing::internal::CaptureStdout();
    const int trained = run_train_command(train, no_provenance, {.threads = 1});
    ::testing::internal::GetCapturedStdout();
    ASSERT_EQ(trained, 0);
    // The reference set: the test images as a sample file.
    const ImageSet test = read_fashion_mnist("test", data);
    Hdf5File(dir_ / "reference.h5", Hdf5File::Mode::create).write_matrix("samples", test.pixels);
  }

  // A sweep over sampler x guidance scale, every class per run; `metrics` is the [metrics] table.
  std::string sweep(const std::string& metrics, const std::string& output = "sweep.h5", const std::string& guidance = "class = \"all\"\n") const {
    return fmt::format(R"([sweep]
name = "images"
output = "{}"
[sweep.product]
"sampler.name" = ["euler", "heun", "euler_ancestral"]
"guidance.scale" = [0.0, 1.0]
[process]
name = "edm"
[model]
kind = "torchscript"
file = "{}"
dims = 144
prediction = "x0"
signature = "x_t_class"
num_classes = 3
time_input = "sigma"
scale_free_input = true
[grid]
schedule = "karras"
steps = 8
[sampler]
name = "euler"
[run]
samples = 30
seed = 5
save_samples = true
[guidance]
{}[metrics]
{})",
                       (dir_ / output).string(), (dir_ / "class_gauss.pt").string(), guidance, metrics);
  }

  std::string image_metrics(const std::string& features) const {
    return fmt::format("pathwise = false\nlaw = false\nstrong = false\nfrechet_features = \"{}\"\nfrechet_reference = \"{}\"\nclassifier = \"{}\"\n",
                       features, (dir_ / "reference.h5").string(), (dir_ / "clf.pt").string());
  }

  int run_sweep(const std::string& name, const std::string& text, int max_runs = -1) const {
    const auto path = write_config(name, text);
    ::testing::internal::CaptureStdout();
    const int status = run_sweep_command(path, no_provenance(), {.threads = 1, .max_runs = max_runs});
    ::testing::internal::GetCapturedStdout();
    return status;
  }

  // What `diffode fd` prints for a run's samples against the reference: the number after `label`.
  // (--dataset names the dataset of both inputs: the run's samples are copied to a sample file.)
  double fd_of(const std::string& file, const std::string& id, const std::string& features) const {
    const fs::path samples = dir_ / "run_samples.h5";
    Hdf5File(samples, Hdf5File::Mode::create).write_matrix("samples", Hdf5File(file, Hdf5File::Mode::read).read_matrix("runs/" + id + "/samples"));
    FdOptions o;
    o.inputs = {samples.string(), (dir_ / "reference.h5").string()};
    o.features = features;
    o.features_given = true;
    ::testing::internal::CaptureStdout();
    const int status = run_fd_command(o);
    const std::string printed = ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(status, 0) << printed;
    const std::size_t space = printed.rfind('\n', printed.size() - 2);
    const std::string line = printed.substr(space == std::string::npos ? 0 : space + 1);
    const std::size_t first = line.find(' ');
    return std::stod(line.substr(first + 1, line.find(' ', first + 1) - first - 1));
  }

  double accuracy_of(const std::string& file, const std::string& id) const {
    ClassifyOptions o;
    o.input = file;
    o.classifier = (dir_ / "clf.pt").string();
    o.dataset = "runs/" + id + "/samples";
    o.labels = "runs/" + id + "/labels";
    o.output = (dir_ / "classify.h5").string();
    ::testing::internal::CaptureStdout();
    const int status = run_classify_command(o);
    ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(status, 0);
    return Hdf5File(dir_ / "classify.h5", Hdf5File::Mode::read).read_double_attribute("/", "accuracy");
  }

  // The exit status and what went to stderr.
  std::pair<int, std::string> failing_sweep(const std::string& text) const {
    const auto path = write_config("bad.toml", text);
    ::testing::internal::CaptureStderr();
    ::testing::internal::CaptureStdout();
    const int status = run_sweep_command(path, no_provenance(), {.threads = 1});
    ::testing::internal::GetCapturedStdout();
    return {status, ::testing::internal::GetCapturedStderr()};
  }
};

TEST_F(SweepImageMetricsTest, FrechetColumnsAndClassAccuracyEqualFdAndClassify) {
  for (const auto& [features, column] : {std::pair<std::string, std::string>{"pixels", "fd_pixels"}, {"torchscript:" + (dir_ / "linear.pt").string(), "fd_linear"}}) {
    SCOPED_TRACE(features);
    ASSERT_EQ(run_sweep("sweep.toml", sweep(image_metrics(features))), 0);
    const std::string file = (dir_ / "sweep.h5").string();
    const Hdf5File h5(file, Hdf5File::Mode::read);
    const auto runs = h5.members("runs");
    ASSERT_EQ(runs.size(), 6u);
    std::vector<double> accuracy;
    for (const auto& id : runs) {
      const std::string g = "runs/" + id;
      ASSERT_EQ(h5.read_string_attribute(g, "status"), "ok") << h5.read_string_attribute(g, "failure");
      EXPECT_EQ(h5.read_string_attribute(g, "named_metrics"), column);
      // Every class's rows, labelled.
      const std::vector<std::int64_t> labels = h5.read_int64_vector(g + "/labels");
      ASSERT_EQ(labels.size(), 30u);
      for (std::size_t i = 0; i < labels.size(); ++i) EXPECT_EQ(labels[i], static_cast<std::int64_t>(i / 10));
      const double fd = h5.read_double_attribute(g, column);
      EXPECT_TRUE(std::isfinite(fd) && fd > 0);
      EXPECT_EQ(fd, fd_of(file, id, features)) << id;
      accuracy.push_back(h5.read_double_attribute(g, "class_accuracy"));
      EXPECT_EQ(accuracy.back(), accuracy_of(file, id)) << id;
      EXPECT_TRUE(std::isnan(h5.read_double_attribute(g, "error_rms")));
    }
    // The summary carries the named column beside the fixed ones.
    const std::vector<double> summary_fd = summary_column(file, column);
    ASSERT_EQ(summary_fd.size(), 6u);
    for (std::size_t r = 0; r < runs.size(); ++r)
      EXPECT_TRUE(std::find(summary_fd.begin(), summary_fd.end(), h5.read_double_attribute("runs/" + runs[r], column)) != summary_fd.end());
    // The samples look like their classes: the exact class denoiser's draws are classified mostly right.
    EXPECT_GT(*std::max_element(accuracy.begin(), accuracy.end()), 0.6);
    fs::remove(file);
  }
}

TEST_F(SweepImageMetricsTest, ResumedSweepGivesTheSameRows) {
  const std::string text = sweep(image_metrics("pixels"), "full.h5");
  ASSERT_EQ(run_sweep("full.toml", text), 0);
  const std::string resumed = sweep(image_metrics("pixels"), "resumed.h5");
  ASSERT_EQ(run_sweep("resumed.toml", resumed, 2), 0);
  ASSERT_EQ(run_sweep("resumed.toml", resumed, 3), 0);
  ASSERT_EQ(run_sweep("resumed.toml", resumed), 0);
  const Hdf5File a(dir_ / "full.h5", Hdf5File::Mode::read), b(dir_ / "resumed.h5", Hdf5File::Mode::read);
  const auto runs = a.members("runs");
  ASSERT_EQ(runs, b.members("runs"));
  ASSERT_EQ(runs.size(), 6u);
  for (const auto& id : runs) {
    const std::string g = "runs/" + id;
    for (const char* metric : kRunMetrics) {
      if (std::string_view(metric) == "wall_time") continue;
      const double x = a.read_double_attribute(g, metric), y = b.read_double_attribute(g, metric);
      EXPECT_TRUE((std::isnan(x) && std::isnan(y)) || x == y) << id << " " << metric;
    }
    EXPECT_EQ(a.read_double_attribute(g, "fd_pixels"), b.read_double_attribute(g, "fd_pixels"));
    EXPECT_TRUE((a.read_matrix(g + "/samples") == b.read_matrix(g + "/samples")).all());
  }
  EXPECT_EQ(summary_column(dir_ / "full.h5", "fd_pixels"), summary_column(dir_ / "resumed.h5", "fd_pixels"));
  EXPECT_EQ(summary_column(dir_ / "full.h5", "class_accuracy"), summary_column(dir_ / "resumed.h5", "class_accuracy"));
  EXPECT_EQ(summary_column(dir_ / "full.h5", "fd_pixels").size(), 6u);
}

TEST_F(SweepImageMetricsTest, BadMetricsKeysExitTwoNamingTheKey) {
  const std::string reference = (dir_ / "reference.h5").string(), classifier = (dir_ / "clf.pt").string();
  const std::string base = "pathwise = false\nlaw = false\nstrong = false\n";
  struct Case {
    std::string metrics, expect;
    std::string guidance = "class = \"all\"\n";
  };
  const std::vector<Case> cases{
      {base + "frechet_features = \"inception\"\nfrechet_reference = \"" + reference + "\"\n", "frechet_features"},
      {base + "frechet_features = \"classifier:" + (dir_ / "none.pt").string() + "\"\nfrechet_reference = \"" + reference + "\"\n",
       (dir_ / "none.pt").string() + ": no such file"},
      {base + "frechet_features = \"pixels\"\n", "needs frechet_reference"},
      {base + "frechet_reference = \"" + reference + "\"\n", "frechet_reference"},
      {base + "frechet_features = \"pixels\"\nfrechet_reference = \"fashion_mnist:valid\"\n", "frechet_reference"},
      {base + "frechet_features = \"pixels\"\nfrechet_reference = \"" + (dir_ / "missing.h5").string() + "\"\n",
       (dir_ / "missing.h5").string() + ": no such file"},
      {base + "classifier = \"" + (dir_ / "nope.pt").string() + "\"\n", (dir_ / "nope.pt").string() + ": no such file"},
      {base + "frechet_feature = \"pixels\"\n", "frechet_feature"},
      {base + "frechet_features = 3\n", "frechet_features"},
      // class = "all" needs the one-class metrics off.
      {"law = false\nstrong = false\n", "pathwise"},
      {"pathwise = false\nstrong = false\n", "law"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.metrics);
    const auto [status, message] = failing_sweep(sweep(c.metrics, "bad.h5", c.guidance));
    EXPECT_EQ(status, 2) << message;
    EXPECT_NE(message.find(c.expect), std::string::npos) << message;
    EXPECT_NE(message.find("bad.toml:"), std::string::npos) << message;  // the line
    EXPECT_FALSE(fs::exists(dir_ / "bad.h5"));
  }
}

}  // namespace
}  // namespace diffode
