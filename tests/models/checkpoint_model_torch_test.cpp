// Checkpoints as models (models/torch/network_model_torch.hpp, load_checkpoint_model): a small
// ScoreMlp saved by save_network predicts through Predictor<Batch> what conditioned_prediction
// gives on the same tensors, whatever the batch_size (bitwise on the CPU in float64), with the
// class or the null class, and the model's description names the file and its SHA-256.
#include "models/torch/network_model_torch.hpp"
#include "models/torch/score_mlp_torch.hpp"

#include "tests/support/temp_folder.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

namespace diffode {
namespace {

class CheckpointModelTest : public testing::TempFolderTest {
 protected:
  // A seeded MLP, saved; `output` says how its F is read.
  std::string save(NetworkOutput output, Index classes = 0) {
    torch::manual_seed(3);
    spec_.architecture = {.dims = 2, .width = 16, .blocks = 2, .embedding_dims = 8, .classes = classes};
    spec_.output = output;
    spec_.sigma_data = 0.5;
    network_ = ScoreMlp(spec_.architecture);
    network_->to(torch::kFloat64);
    const std::string file = (dir_ / "net.ckpt").string();
    save_network(file, spec_, network_);
    return file;
  }

  // Rows of x with levels of a VP-like process (alpha^2 + sigma^2 = 1).
  void inputs(Index rows) {
    x_.resize(rows, 2);
    alpha_.resize(rows);
    sigma_.resize(rows);
    for (Index i = 0; i < rows; ++i) {
      x_(i, 0) = std::sin(0.9 * static_cast<double>(i));
      x_(i, 1) = std::cos(1.7 * static_cast<double>(i)) + 0.2;
      const double angle = 0.05 + 1.4 * static_cast<double>(i) / static_cast<double>(rows);
      alpha_[i] = std::cos(angle);
      sigma_[i] = std::sin(angle);
    }
  }

  // conditioned_prediction on the whole batch, as a host batch.
  Batch direct(int label = -1) {
    const torch::NoGradGuard no_grad;
    const Index n = x_.rows();
    const torch::Tensor x = torch::from_blob(x_.data(), {n, 2}, torch::kFloat64).clone();
    const torch::Tensor a = torch::from_blob(alpha_.data(), {n}, torch::kFloat64).clone();
    const torch::Tensor s = torch::from_blob(sigma_.data(), {n}, torch::kFloat64).clone();
    torch::Tensor labels;
    if (spec_.architecture.classes > 0) labels = torch::full({n}, label < 0 ? spec_.architecture.classes : label, torch::kInt64);
    network_->eval();
    const torch::Tensor out = conditioned_prediction(network_, spec_, x, a, s, labels).contiguous();
    Batch host(n, 2);
    std::memcpy(host.data(), out.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(2 * n));
    return host;
  }

  NetworkSpec spec_;
  ScoreMlp network_{nullptr};
  Batch x_;
  PerSample alpha_, sigma_;
};

TEST_F(CheckpointModelTest, PredictsWhatTheNetworkComputesForAnyBatchSize) {
  const std::string file = save(NetworkOutput::edm);
  inputs(37);
  const Batch expected = direct();
  for (const Index batch : {0, 1, 5, 36}) {
    const auto model = load_checkpoint_model(file, {.batch_size = batch});
    EXPECT_EQ(model->dims(), 2);
    const auto predictor = model->make_predictor(-1);
    EXPECT_EQ(predictor->native(), native_parameterization(NetworkOutput::edm));
    Batch out;
    predictor->predict(x_, alpha_, sigma_, out);
    EXPECT_EQ(predictor->nfe(), 1);
    EXPECT_TRUE((out == expected).all()) << "batch_size " << batch << ": max difference " << (out - expected).abs().maxCoeff();
  }
}

TEST_F(CheckpointModelTest, ClassesAndTheNullClass) {
  const std::string file = save(NetworkOutput::eps, 3);
  inputs(6);
  const auto model = load_checkpoint_model(file, {});
  EXPECT_EQ(model->classes(), 3);
  for (const int label : {-1, 0, 2}) {
    Batch out;
    model->make_predictor(label)->predict(x_, alpha_, sigma_, out);
    EXPECT_TRUE((out == direct(label)).all()) << "label " << label;
  }
  EXPECT_THROW(model->make_predictor(3), std::invalid_argument);
}

TEST_F(CheckpointModelTest, FlowOutputIsRefusedAndAMissingFileNamed) {
  const std::string file = save(NetworkOutput::flow);
  try {
    load_checkpoint_model(file, {});
    ADD_FAILURE() << "a flow-output network loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
  const std::string absent = (dir_ / "absent.ckpt").string();
  try {
    load_checkpoint_model(absent, {});
    ADD_FAILURE() << "a missing checkpoint loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(absent + ": no such file"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointModelTest, DescriptionNamesFileAndSha256) {
  const std::string file = save(NetworkOutput::x0);
  const std::string description = load_checkpoint_model(file, {})->description();
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(("sha256sum '" + file + "'").c_str(), "r"), pclose);
  ASSERT_TRUE(pipe);
  char digest[65] = {};
  ASSERT_EQ(std::fread(digest, 1, 64, pipe.get()), 64u);
  EXPECT_NE(description.find(file + " (sha256 " + digest + ")"), std::string::npos) << description;
}

}  // namespace
}  // namespace diffode
