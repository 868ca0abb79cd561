// The image classifier (models/torch/classifier_torch.hpp): a tiny network trained for a few steps
// on a few hundred striped images learns (its loss falls), a run is a function of its seed, an
// interrupted run resumed from its checkpoint ends with the uninterrupted run's weights bit for bit,
// and a checkpoint loads as a feature network whose logits are its features through the last layer.
#include "models/torch/classifier_torch.hpp"

#include "core/splitmix.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "tests/support/temp_folder.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

namespace diffode {
namespace {

constexpr Index kSide = 12, kClasses = 3, kImages = 300;

// Image i of class i % 3: a bright band of rows [4k, 4k + 4) on a dark background, plus uniform
// noise of amplitude 0.5 from a fixed stream.
struct Images {
  Batch x;
  std::vector<std::int64_t> labels;
};

const Images& images() {
  static const Images set = [] {
    Images s{Batch(kImages, kSide * kSide), {}};
    for (Index i = 0; i < kImages; ++i) {
      const Index k = i % kClasses;
      s.labels.push_back(k);
      for (Index p = 0; p < kSide * kSide; ++p) {
        const double u = static_cast<double>(splitmix64(static_cast<std::uint64_t>(i * 1000 + p)) >> 11) * 0x1p-53;
        const bool band = p / kSide >= 4 * k && p / kSide < 4 * k + 4;
        s.x(i, p) = (band ? 0.6 : -0.6) + (u - 0.5);
      }
    }
    return s;
  }();
  return set;
}

ClassifierTrainingSpec tiny_spec(std::uint64_t seed, std::int64_t steps) {
  ClassifierTrainingSpec s;
  s.architecture = {.channels = 1, .height = kSide, .width = kSide, .classes = kClasses, .conv1 = 8, .conv2 = 8, .features = 16, .name = "tiny"};
  s.seed = seed;
  s.steps = steps;
  s.batch_size = 32;
  s.learning_rate = 3e-3;
  s.warmup_steps = 5;
  s.checkpoint_every = 0;
  s.data = [seed](std::uint64_t step) {
    TrainingBatch b;
    b.x0.resize(32, kSide * kSide);
    for (Index i = 0; i < 32; ++i) {
      const auto row = static_cast<Index>(splitmix64(seed * 7919 + step * 32 + static_cast<std::uint64_t>(i)) % kImages);
      b.x0.row(i) = images().x.row(row);
      b.labels.push_back(images().labels[row]);
    }
    return b;
  };
  return s;
}

std::vector<torch::Tensor> weights_of(const std::string& file) {
  ClassifierArchitecture a;
  ImageClassifier net = load_classifier(file, a);
  std::vector<torch::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

bool same_bits(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

class ClassifierTest : public testing::TempFolderTest {};

TEST_F(ClassifierTest, LossFallsOnStripedImages) {
  ClassifierTrainingSpec spec = tiny_spec(1, 40);
  spec.checkpoint_file = (dir_ / "tiny.pt").string();
  const TrainingOutcome out = train_classifier(spec, {}, {});
  ASSERT_EQ(out.steps_done, 40);
  ASSERT_EQ(out.history.size(), 40u);
  const auto mean_loss = [&](std::size_t first, std::size_t count) {
    double sum = 0;
    for (std::size_t i = first; i < first + count; ++i) sum += out.history[i].loss;
    return sum / static_cast<double>(count);
  };
  // Chance is ln 3 = 1.10; the bands are easy to tell apart.
  EXPECT_GT(mean_loss(0, 5), 0.8);
  EXPECT_LT(mean_loss(35, 5), 0.5 * mean_loss(0, 5));
  // The trained weights classify the images they saw.
  FeatureSpec fs;
  fs.file = spec.checkpoint_file;
  const auto net = load_feature_network(fs, {.dtype = "float32", .batch_size = 64});
  const Batch logits = net->logits(images().x);
  Index right = 0;
  for (Index i = 0; i < kImages; ++i) {
    Index best = 0;
    logits.row(i).maxCoeff(&best);
    right += best == images().labels[i];
  }
  EXPECT_GT(right, kImages * 9 / 10);
}

TEST_F(ClassifierTest, SeedDecidesAndResumeIsBitwise) {
  const std::string straight = (dir_ / "straight.pt").string(), again = (dir_ / "again.pt").string(), other = (dir_ / "other.pt").string(),
                    resumed = (dir_ / "resumed.pt").string();
  ClassifierTrainingSpec s = tiny_spec(3, 20);
  s.checkpoint_file = straight;
  train_classifier(s, {}, {});
  s.checkpoint_file = again;
  train_classifier(s, {}, {});
  EXPECT_TRUE(same_bits(weights_of(straight), weights_of(again)));
  ClassifierTrainingSpec t = tiny_spec(4, 20);
  t.checkpoint_file = other;
  train_classifier(t, {}, {});
  EXPECT_FALSE(same_bits(weights_of(straight), weights_of(other)));

  // Stopped after 8 steps (as ^C does), then resumed: the same 20 steps.
  s.checkpoint_file = resumed;
  int polls = 0;
  const TrainingOutcome first = train_classifier(s, {}, [&] { return ++polls > 8; });
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.steps_done, 8);
  s.resume_from = resumed;
  const TrainingOutcome second = train_classifier(s, {}, {});
  EXPECT_EQ(second.steps_done, 20);
  EXPECT_EQ(second.history.size(), 20u);
  EXPECT_TRUE(same_bits(weights_of(straight), weights_of(resumed)));
  // Another learning rate is refused by name.
  s.learning_rate = 1e-3;
  EXPECT_THROW(
      {
        try {
          train_classifier(s, {}, {});
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("learning_rate"), std::string::npos) << e.what();
          throw;
        }
      },
      std::invalid_argument);
}

TEST_F(ClassifierTest, FeaturesAndLogitsOfACheckpoint) {
  ClassifierTrainingSpec s = tiny_spec(5, 3);
  s.checkpoint_file = (dir_ / "c.pt").string();
  train_classifier(s, {}, {});
  FeatureSpec fs;
  fs.file = s.checkpoint_file;
  fs.dtype = "float64";
  const auto net = load_feature_network(fs, {.dtype = "float64", .batch_size = 7});
  EXPECT_EQ(net->input_dims(), kSide * kSide);
  EXPECT_EQ(net->feature_dims(), 16);
  EXPECT_EQ(net->classes(), kClasses);
  EXPECT_EQ(net->name(), "tiny");
  EXPECT_EQ(net->sha256().size(), 64u);
  const Batch x = images().x.topRows(20);
  const Batch f = net->features(x), logits = net->logits(x);
  ASSERT_EQ(f.rows(), 20);
  ASSERT_EQ(f.cols(), 16);
  ASSERT_EQ(logits.cols(), kClasses);
  // Rows are independent (GroupNorm, no batch statistics): chunks of 7 give what one row alone gives.
  const Batch one = net->features(Batch(x.row(13)));
  EXPECT_LT((one.row(0) - f.row(13)).abs().maxCoeff(), 1e-12);
  // The logits are the features through ReLU and the last layer.
  ClassifierArchitecture a;
  ImageClassifier raw = load_classifier(s.checkpoint_file, a);
  raw->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  const torch::Tensor ft = torch::from_blob(const_cast<double*>(f.data()), {20, 16}, torch::kFloat64).clone();
  const torch::Tensor head = raw->head(ft).contiguous();
  for (Index i = 0; i < 20; ++i)
    for (Index k = 0; k < kClasses; ++k) EXPECT_NEAR(head[i][k].item<double>(), logits(i, k), 1e-12);
}

TEST_F(ClassifierTest, BadFilesAreNamed) {
  FeatureSpec fs;
  fs.file = (dir_ / "missing.pt").string();
  try {
    load_feature_network(fs, {});
    FAIL() << "a missing file was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.pt"), std::string::npos) << e.what();
  }
  // A score network's checkpoint is not a classifier's.
  const std::string score = (dir_ / "score.pt").string();
  NetworkSpec spec;
  ScoreMlp mlp(spec.architecture);
  save_network(score, spec, mlp);
  fs.file = score;
  try {
    load_feature_network(fs, {});
    FAIL() << "a score network was accepted as a classifier";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("diffode-classifier"), std::string::npos) << e.what();
  }
  fs.kind = "nonsense";
  EXPECT_THROW(load_feature_network(fs, {}), std::runtime_error);
}

}  // namespace
}  // namespace diffode
