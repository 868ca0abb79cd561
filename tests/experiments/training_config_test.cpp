// The `diffode train` config reader (experiments/run/training.cpp) for the image model: the U-Net's
// [network] keys and [data] kind = "fashion_mnist" (Debian's dataset-fashion-mnist files), strict
// like every other table, and batches drawn by (seed, step).
#include "experiments/run/training.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace diffode {
namespace {

namespace fs = std::filesystem;

class TrainingConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("diffode_training_config_test_{}", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The U-Net config with `network` and `data` lines added to those tables.
  std::string config(const std::string& network = "", const std::string& data = "", const std::string& train = "") const {
    return fmt::format(R"([process]
name = "edm"

[network]
architecture = "unet"
base_channels = 8
channel_multipliers = [1, 2]
groups = 4
classes = 10
{}
[data]
kind = "fashion_mnist"
{}
[train]
steps = 3
batch_size = 5
seed = 4
{}
[output]
file = "{}"
)",
                       network, data, train, (dir_ / "net.pt").string());
  }

  fs::path write(const std::string& text) const {
    const fs::path file = dir_ / "train.toml";
    std::ofstream(file) << text;
    return file;
  }

  // The error message of reading `text`, or "accepted".
  std::string error(const std::string& text) const {
    try {
      read_training_run(write(text));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "accepted";
  }

  fs::path dir_;
};

TEST_F(TrainingConfigTest, FashionMnistUnetReadsWithTheDatasImageShapeAndLabels) {
  const TrainingRun run = read_training_run(write(config()));
  const NetworkSpec& net = run.spec.network;
  EXPECT_EQ(net.kind, "unet");
  EXPECT_EQ(net.unet.channels, 1);
  EXPECT_EQ(net.unet.height, 28);
  EXPECT_EQ(net.unet.width, 28);
  EXPECT_EQ(net.dims(), 784);
  EXPECT_EQ(net.classes(), 10);
  EXPECT_EQ(net.unet.channel_multipliers, (std::vector<Index>{1, 2}));
  EXPECT_TRUE(net.unet.attention);
  EXPECT_NE(run.data_description.find("60000"), std::string::npos) << run.data_description;
  const TrainingBatch a = run.spec.data(0), again = run.spec.data(0), b = run.spec.data(1);
  ASSERT_EQ(a.x0.rows(), 5);
  ASSERT_EQ(a.x0.cols(), 784);
  ASSERT_EQ(a.labels.size(), 5u);
  for (const auto label : a.labels) EXPECT_TRUE(label >= 0 && label < 10);
  EXPECT_GE(a.x0.minCoeff(), -1.0);
  EXPECT_LE(a.x0.maxCoeff(), 1.0);
  // A step's batch depends on (seed, step) alone, so a resumed run draws what the uninterrupted one would.
  EXPECT_TRUE((a.x0 == again.x0).all());
  EXPECT_EQ(a.labels, again.labels);
  EXPECT_FALSE((a.x0 == b.x0).all());

  // Unconditional: no labels; the test split; the image shape written out.
  const TrainingRun plain = read_training_run(write(config("image = [1, 28, 28]\nattention = false", "split = \"test\"")
                                                        .replace(config().find("classes = 10"), 12, "classes = 0 ")));
  EXPECT_EQ(plain.spec.network.classes(), 0);
  EXPECT_FALSE(plain.spec.network.unet.attention);
  EXPECT_TRUE(plain.spec.data(0).labels.empty());
  EXPECT_NE(plain.data_description.find("10000"), std::string::npos) << plain.data_description;
}

TEST_F(TrainingConfigTest, TheShippedMlpConfigStillReadsAsAnMlp) {
  const TrainingRun run = read_training_run(fs::path(DIFFODE_SOURCE_DIR) / "experiments/train_ring2d.toml");
  EXPECT_EQ(run.spec.network.kind, "mlp");
  EXPECT_EQ(run.spec.network.dims(), 2);
  EXPECT_EQ(run.spec.network.architecture.width, 128);
}

TEST_F(TrainingConfigTest, WrongKeysAndShapesAreRefusedByKeyAndLine) {
  const auto expect = [&](const std::string& text, const std::string& key, const std::string& what) {
    const std::string message = error(text);
    EXPECT_NE(message.find(key), std::string::npos) << "expected key " << key << " in: " << message;
    EXPECT_NE(message.find(what), std::string::npos) << "expected '" << what << "' in: " << message;
    EXPECT_NE(message.find("train.toml:"), std::string::npos) << message;
  };
  expect(config("width = 64"), "network.width", "only with architecture = \"mlp\"");
  expect(config("base_chanels = 8"), "base_chanels", "base_chanels");
  expect(config("image = [1, 28, 27]"), "network.image", "784");
  expect(config("image = [1, 28]"), "network.image", "[channels, height, width]");
  expect(config("image = [1, 28, 28.5]"), "network.image", "positive integers");
  expect(config("groups = 3").replace(config().find("groups = 4"), 11, "           "), "network.", "groups 3 must divide");
  expect(config("channel_multipliers = [1, 2, 2, 2]").replace(config().find("channel_multipliers = [1, 2]"), 28, std::string(28, ' ')),
         "network.", "divisible by 2^(levels - 1) = 8");
  expect(config("attention = false\nattention_heads = 2"), "network.attention_heads", "only with attention = true");
  expect(config("", "split = \"validation\""), "data.split", "validation");
  expect(config("", "file = \"x.h5\""), "data.file", "another kind");
  expect(config("", "directory = \"" + (dir_ / "none").string() + "\""), "data.directory", "dataset-fashion-mnist");
  expect(config().replace(config().find("classes = 10"), 12, "classes = 5 "), "data.kind", "10 classes");
  // The MLP's keys stay its own.
  const std::string mlp = config().replace(config().find("architecture = \"unet\""), 21, "architecture = \"mlp\" ");
  expect(mlp, "network.base_channels", "only with architecture = \"unet\"");
  // A mixture is no image data: the U-Net then needs the shape, and a wrong one is refused.
  const std::string mixture = R"([process]
name = "edm"
[network]
architecture = "unet"
base_channels = 8
channel_multipliers = [1, 2]
groups = 4
[data]
kind = "mixture"
preset = "ring2d"
[output]
file = ")" + (dir_ / "m.pt").string() + "\"\n";
  expect(mixture, "network.architecture", "image = [channels, height, width]");
}

}  // namespace
}  // namespace diffode
