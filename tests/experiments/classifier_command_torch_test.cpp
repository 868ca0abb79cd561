// `diffode train` with task = "classifier", `diffode classify`, and `diffode fd --features` on a
// feature network: a tiny classifier trained on small IDX files written here (three striped
// classes), its test accuracy in the history and again from classify; Frechet distances on its
// features (0 for identical sets, named FD_<name>) and on a linear TorchScript map (the raw formula
// on the mapped rows); caches of other features and bad specs refused by name.
#include "experiments/cli/commands.hpp"
#include "experiments/run/features.hpp"
#include "experiments/run/frechet.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "models/fashion_mnist.hpp"
#include "tests/support/hdf5_int64.hpp"
#include "tests/support/striped_images.hpp"
#include "tests/support/temp_folder.hpp"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdint>
#include <fstream>

namespace diffode {
namespace {

Provenance no_provenance() { return Provenance{}; }

class ClassifierCommandTest : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    use_network_backend(diffode_network_backend());
    data_ = dir_ / "fmnist";
    std::filesystem::create_directories(data_);
    testing::write_striped_split(data_, "train", 300, 0);
    testing::write_striped_split(data_, "t10k", 90, 1000);
  }

  std::string config(std::int64_t steps, const std::string& extra = "") const {
    return testing::striped_classifier_config(data_, steps, dir_ / "clf.pt", extra);
  }

  // Trains the tiny classifier once per test; returns its checkpoint.
  std::string trained() {
    const auto path = write_config("clf.toml", config(40));
    EXPECT_EQ(run_train_command(path, no_provenance, {.threads = 1}), 0);
    return (dir_ / "clf.pt").string();
  }

  // The test images as a sample file with int64 labels (what class-conditional sampling writes).
  std::string test_samples(const std::string& name, Index first, Index n) {
    const ImageSet test = read_fashion_mnist("test", data_);
    const auto path = dir_ / name;
    {
      Hdf5File h5(path, Hdf5File::Mode::create);
      h5.write_matrix("samples", test.pixels.middleRows(first, n));
    }
    testing::write_int64(path, "labels", std::vector<std::int64_t>(test.labels.begin() + first, test.labels.begin() + first + n));
    return path.string();
  }

  std::filesystem::path data_;
};

TEST_F(ClassifierCommandTest, TrainScoresTheTestImagesAndClassifyAgrees) {
  const std::string checkpoint = trained();
  const Hdf5File history(dir_ / "clf.train.h5", Hdf5File::Mode::read);
  EXPECT_EQ(history.read_string_attribute("/", "task"), "classifier");
  EXPECT_EQ(history.read_string_attribute("/", "status"), "ok");
  const std::vector<double> loss = history.read_vector("loss");
  ASSERT_EQ(loss.size(), 40u);
  EXPECT_LT((loss[35] + loss[36] + loss[37] + loss[38] + loss[39]) / 5, 0.5 * (loss[0] + loss[1] + loss[2] + loss[3] + loss[4]) / 5);
  const double accuracy = history.read_double_attribute("/", "test_accuracy");
  EXPECT_EQ(history.read_double_attribute("/", "test_images"), 90);
  EXPECT_GT(accuracy, 0.9);

  ClassifyOptions o;
  o.input = test_samples("test.h5", 0, 90);
  o.classifier = checkpoint;
  o.output = (dir_ / "classified.h5").string();
  ASSERT_EQ(run_classify_command(o), 0);
  const Hdf5File out(o.output, Hdf5File::Mode::read);
  EXPECT_EQ(out.read_double_attribute("/", "accuracy"), accuracy);
  const std::vector<double> requested = out.read_vector("requested"), hits = out.read_vector("hits"), fraction = out.read_vector("fraction");
  ASSERT_EQ(requested.size(), 10u);
  EXPECT_EQ(requested[0] + requested[1] + requested[2], 90);
  double total = 0;
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(fraction[k], hits[k] / requested[k]);
    total += hits[k];
  }
  EXPECT_EQ(total / 90, accuracy);

  // Resuming the finished run is refused for other settings, by name.
  const auto other = write_config("other.toml", config(40, "weight_decay = 0.5\n"));
  EXPECT_EQ(run_train_command(other, no_provenance, {.threads = 1, .resume = true}), 2);
  // A label the classifier does not have; a missing file; no labels (then shares are printed).
  const std::string bad = test_samples("bad.h5", 0, 5);
  {
    const hid_t f = H5Fopen(bad.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "labels", H5P_DEFAULT);
    H5Fclose(f);
  }
  testing::write_int64(bad, "labels", {0, 1, 2, 10, 0});
  o.input = bad;
  o.output.clear();
  EXPECT_EQ(run_classify_command(o), 2);
  o.input = (dir_ / "nothing.h5").string();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_classify_command(o), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("nothing.h5"), std::string::npos);
  o.input = test_samples("unlabelled.h5", 0, 9);
  o.labels = "none_here";
  EXPECT_EQ(run_classify_command(o), 0);
}

TEST_F(ClassifierCommandTest, BadTrainConfigsAreExitTwo) {
  EXPECT_EQ(run_train_command(write_config("a.toml", config(5, "colour = 1\n")), no_provenance, {}), 2);
  std::string text = config(5);
  text.replace(text.find("conv1 = 8"), 9, "conv1 = 12");  // not a multiple of GroupNorm's 8 groups
  EXPECT_EQ(run_train_command(write_config("b.toml", text), no_provenance, {}), 2);
  text = config(5);
  text.replace(text.find("task = \"classifier\""), 19, "task = \"painter\"");
  EXPECT_EQ(run_train_command(write_config("c.toml", text), no_provenance, {}), 2);
  text = config(5);
  text.replace(text.find(data_.string()), data_.string().size(), (dir_ / "nowhere").string());
  EXPECT_EQ(run_train_command(write_config("d.toml", text), no_provenance, {}), 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "clf.pt"));
}

TEST_F(ClassifierCommandTest, ClassifierFeaturesGiveZeroForIdenticalSetsAndRefuseOtherCaches) {
  const std::string checkpoint = trained();
  const std::string a = test_samples("a.h5", 0, 60), b = test_samples("b.h5", 30, 60);
  FdOptions o;
  o.inputs = {a, a};
  o.features = "classifier:" + checkpoint;
  o.features_given = true;
  o.save_stats = {(dir_ / "sa.h5").string(), (dir_ / "sa2.h5").string()};
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(run_fd_command(o), 0);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find("FD_fmnist-classifier "), std::string::npos) << printed;
  EXPECT_EQ(printed.find("FID"), std::string::npos) << printed;
  const FrechetStatistics sa = read_statistics(Hdf5File(dir_ / "sa.h5", Hdf5File::Mode::read));
  const FrechetStatistics sa2 = read_statistics(Hdf5File(dir_ / "sa2.h5", Hdf5File::Mode::read));
  // The same rows, the same moments bit for bit; the distance is 0 up to the rounding of the
  // eigen-decompositions.
  EXPECT_TRUE((sa.covariance.array() == sa2.covariance.array()).all());
  EXPECT_LT(frechet_distance(sa, sa2), 1e-9 * sa.covariance.trace());
  EXPECT_EQ(sa.feature, "fmnist-classifier");
  EXPECT_EQ(sa.feature_hash.size(), 64u);
  EXPECT_EQ(sa.mean.size(), 16);
  EXPECT_EQ(sa.count, 60);
  // The cache and a sample file, under the same features: the distance of the two sample files.
  o.inputs = {(dir_ / "sa.h5").string(), b};
  o.save_stats.clear();
  EXPECT_EQ(run_fd_command(o), 0);
  // A raw cache asked to be compared on classifier features is refused, saying why.
  FdOptions raw;
  raw.inputs = {a};
  raw.save_stats = {(dir_ / "raw.h5").string()};
  ASSERT_EQ(run_fd_command(raw), 0);
  o.inputs = {(dir_ / "raw.h5").string(), b};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_fd_command(o), 2);
  const std::string why = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(why.find("raw.h5"), std::string::npos) << why;
  EXPECT_NE(why.find("recompute"), std::string::npos) << why;
  // A classifier of 12 x 12 images given rows of another size.
  Hdf5File(dir_ / "wide.h5", Hdf5File::Mode::create).write_matrix("samples", Batch::Zero(5, 10));
  o.inputs = {(dir_ / "wide.h5").string(), b};
  EXPECT_EQ(run_fd_command(o), 2);
}

TEST_F(ClassifierCommandTest, BadFeatureSpecsNameTheOption) {
  const std::string a = test_samples("a.h5", 0, 20);
  const auto refused = [&](FdOptions o, const std::string& named) {
    o.inputs = {a, a};
    o.features_given = true;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(run_fd_command(o), 2);
    const std::string why = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(why.find(named), std::string::npos) << why;
  };
  const auto features = [](const std::string& spec) {
    FdOptions o;
    o.features = spec;
    return o;
  };
  refused(features("inception"), "--features");
  refused(features("classifier:"), "--features");
  refused(features("classifier:" + (dir_ / "absent.pt").string()), "absent.pt");
  refused(features("torchscript:" + a), "--features torchscript:");  // not a module
  FdOptions shape;
  shape.features = "classifier:" + a;
  shape.input_shape = "1,0,3";
  refused(shape, "--input-shape");
  FdOptions scale;
  scale.features = "classifier:" + a;
  scale.input_scale = "2";
  refused(scale, "--input-scale");
  FdOptions raw_shape;
  raw_shape.input_shape = "1,12,12";
  refused(raw_shape, "--input-shape");
}

// A linear TorchScript feature map, exported by Debian's Python with PyTorch (skipped without it).
constexpr const char* kLinearModule = R"PY(
import sys
import torch


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.25, 1.0, 1.0, -1.0], [0.0, 0.5, -0.5, 2.0]], dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))

    def forward(self, x):
        return x.double().flatten(1) @ self.w.t() + self.c


torch.jit.script(Linear()).save(sys.argv[1])
)PY";

TEST_F(ClassifierCommandTest, LinearTorchScriptFeaturesGiveTheRawFormulaOnMappedRows) {
  std::ofstream(dir_ / "export.py") << kLinearModule;
  const std::string module = (dir_ / "linear.pt").string();
  if (std::system(fmt::format("/usr/bin/python3 '{}' '{}' > /dev/null 2>&1", (dir_ / "export.py").string(), module).c_str()) != 0)
    GTEST_SKIP() << "needs /usr/bin/python3 with PyTorch (Debian's python3-torch) to export a TorchScript module";
  // Rows of 4 values, handed to the module as [N, 1, 2, 2] after x -> 2 x - 1.
  Batch x(500, 4), y(400, 4);
  for (Index i = 0; i < 500; ++i)
    for (Index j = 0; j < 4; ++j) {
      x(i, j) = std::sin(0.37 * static_cast<double>(i * 4 + j));
      if (i < 400) y(i, j) = 0.8 * std::cos(0.53 * static_cast<double>(i * 3 + j)) + 0.1 * static_cast<double>(j);
    }
  Hdf5File(dir_ / "x.h5", Hdf5File::Mode::create).write_matrix("samples", x);
  Hdf5File(dir_ / "y.h5", Hdf5File::Mode::create).write_matrix("samples", y);
  FdOptions o;
  o.inputs = {(dir_ / "x.h5").string(), (dir_ / "y.h5").string()};
  o.features = "torchscript:" + module;
  o.features_given = true;
  o.input_shape = "1,2,2";
  o.input_scale = "2,-1";
  o.feature_dtype = "float64";
  o.block_rows = 128;
  o.save_stats = {(dir_ / "sx.h5").string(), (dir_ / "sy.h5").string()};
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(run_fd_command(o), 0);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find("FD_linear "), std::string::npos) << printed;
  const FrechetStatistics sx = read_statistics(Hdf5File(dir_ / "sx.h5", Hdf5File::Mode::read)),
                          sy = read_statistics(Hdf5File(dir_ / "sy.h5", Hdf5File::Mode::read));
  EXPECT_EQ(sx.feature, "torchscript:linear (input 1,2,2 float64) (input 2 x + -1)");
  // The same map in Eigen: features = (2 x - 1) W^T + c.
  Eigen::MatrixXd w(3, 4);
  w << 1.0, -2.0, 0.5, 0.0, 0.25, 1.0, 1.0, -1.0, 0.0, 0.5, -0.5, 2.0;
  const Eigen::RowVector3d c(0.5, -1.0, 2.0);
  const auto map = [&](const Batch& rows) {
    Eigen::MatrixXd f = (2.0 * rows.matrix().array() - 1.0).matrix() * w.transpose();
    f.rowwise() += c;
    return Batch(f.array());
  };
  const MomentAccumulator mx = block_moments(map(x), 128), my = block_moments(map(y), 128);
  EXPECT_LT((sx.mean - mx.mean()).norm(), 1e-12 * mx.mean().norm());
  EXPECT_LT((sx.covariance - mx.covariance()).norm(), 1e-12 * mx.covariance().norm());
  const double expected = frechet_distance(mx.mean(), mx.covariance(), my.mean(), my.covariance());
  EXPECT_GT(expected, 0.1);
  EXPECT_NEAR(frechet_distance(sx, sy), expected, 1e-10 * expected);
  // Identical sets: 0.
  o.inputs = {(dir_ / "x.h5").string(), (dir_ / "x.h5").string()};
  o.save_stats = {(dir_ / "sx.h5").string(), (dir_ / "sx2.h5").string()};
  ASSERT_EQ(run_fd_command(o), 0);
  EXPECT_LT(frechet_distance(read_statistics(Hdf5File(dir_ / "sx.h5", Hdf5File::Mode::read)),
                             read_statistics(Hdf5File(dir_ / "sx2.h5", Hdf5File::Mode::read))),
            1e-9 * sx.covariance.trace());
  // Another input scale is other features: the cache is refused.
  o.inputs = {(dir_ / "sx.h5").string(), (dir_ / "y.h5").string()};
  o.save_stats.clear();
  o.input_scale = "1,0";
  EXPECT_EQ(run_fd_command(o), 2);
}

TEST_F(ClassifierCommandTest, FashionMnistTestSetIsAnOperand) {
  if (!std::filesystem::exists(std::filesystem::path(kFashionMnistDirectory) / "t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "needs Debian's dataset-fashion-mnist";
  FdOptions o;
  o.inputs = {"fashion_mnist:test"};
  o.save_stats = {(dir_ / "test_stats.h5").string()};
  ASSERT_EQ(run_fd_command(o), 0);
  const FrechetStatistics s = read_statistics(Hdf5File(dir_ / "test_stats.h5", Hdf5File::Mode::read));
  EXPECT_EQ(s.count, 10000);
  EXPECT_EQ(s.mean.size(), 784);
  EXPECT_EQ(s.source, "fashion_mnist:test");
  // The cached test set against itself: 0.
  o.inputs = {(dir_ / "test_stats.h5").string(), (dir_ / "test_stats.h5").string()};
  o.save_stats.clear();
  EXPECT_EQ(run_fd_command(o), 0);
  o.inputs = {"fashion_mnist:validation", (dir_ / "test_stats.h5").string()};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_fd_command(o), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("fashion_mnist:test"), std::string::npos);
}

}  // namespace
}  // namespace diffode
