// The image U-Net (models/torch/unet_torch.hpp) behind the networks' common interface: shapes and
// the parameter count the config reader uses, class conditioning and the null class, checkpoint
// round trips (and version-1 MLP checkpoints still read), a few training steps that lower the loss
// and resume bitwise, and the shapes it refuses.
#include "models/network.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "models/torch/training_torch.hpp"
#include "models/torch/unet_torch.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <unistd.h>

namespace diffode {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() {
  const fs::path dir = fs::temp_directory_path() / fmt::format("diffode_unet_test_{}", ::getpid());
  fs::create_directories(dir);
  return dir;
}

UnetArchitecture tiny(Index classes = 0) {
  UnetArchitecture a;
  a.channels = 1, a.height = 8, a.width = 8;
  a.base_channels = 8;
  a.channel_multipliers = {1, 2};
  a.blocks_per_level = 1;
  a.attention = true;
  a.attention_heads = 2;
  a.groups = 4;
  a.embedding_dims = 16;
  a.classes = classes;
  return a;
}

NetworkSpec unet_spec(const UnetArchitecture& a) {
  NetworkSpec spec;
  spec.kind = "unet";
  spec.unet = a;
  spec.output = NetworkOutput::edm;
  spec.sigma_data = 0.5;
  return spec;
}

std::int64_t numel(const std::vector<torch::Tensor>& tensors) {
  std::int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

// The output convolution and the attention projection start at zero; random weights make every
// path of the network show in the output.
void randomise(ScoreNetworkImpl& network) {
  torch::NoGradGuard no_grad;
  for (auto& p : network.parameters()) p.add_(0.2 * torch::randn_like(p));
}

TEST(Unet, OutputShapeAndParameterCountOfSeveralShapes) {
  torch::manual_seed(0);
  UnetArchitecture wide = tiny(3);
  wide.channels = 3, wide.height = 8, wide.width = 12;
  wide.channel_multipliers = {1, 2, 2};
  wide.blocks_per_level = 2;
  wide.embedding = "fourier";
  UnetArchitecture plain = tiny();
  plain.attention = false;
  UnetArchitecture fashion;  // the defaults, those of experiments/train_fashion_mnist.toml: 1x28x28, base 16, (1, 2, 2)
  fashion.classes = 10;
  for (const UnetArchitecture& a : {tiny(), wide, plain, fashion}) {
    const ScoreNetwork net = make_network(unet_spec(a));
    EXPECT_EQ(numel(net->parameters()), unet_parameter_count(a)) << describe(unet_spec(a));
    const torch::Tensor x = torch::randn({3, a.dims()});
    const torch::Tensor y = net->forward(x, torch::zeros({3}));
    EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{3, a.dims()}));
    // Zero-initialised output: F = 0 before training.
    EXPECT_EQ(y.abs().max().item<double>(), 0.0);
    randomise(*net);
    const torch::Tensor z = net->forward(x, torch::zeros({3}));
    EXPECT_TRUE(z.isfinite().all().item<bool>());
    EXPECT_GT(z.abs().max().item<double>(), 0.0);
  }
  // The checkpoint budget of the shipped configuration: weights, EMA and AdamW's two moments in float32.
  EXPECT_LT(4 * 4 * unet_parameter_count(fashion), 10'000'000);
}

TEST(Unet, ClassConditioningAndTheNullClass) {
  torch::manual_seed(1);
  const NetworkSpec spec = unet_spec(tiny(3));
  const ScoreNetwork net = make_network(spec);
  randomise(*net);
  const torch::Tensor x = torch::randn({2, 64}), c = torch::full({2}, 0.1);
  const auto label = [](std::int64_t k) { return torch::full({2}, k, torch::kInt64); };
  const torch::Tensor null = net->forward(x, c, label(3));
  EXPECT_TRUE(torch::equal(null, net->forward(x, c)));  // no label: the null class
  EXPECT_FALSE(torch::allclose(net->forward(x, c, label(0)), net->forward(x, c, label(1))));
  EXPECT_FALSE(torch::allclose(net->forward(x, c, label(0)), null));
  // The noise level matters too.
  EXPECT_FALSE(torch::allclose(net->forward(x, c, label(0)), net->forward(x, torch::full({2}, -0.5), label(0))));
  // Rows are independent: a row's output does not depend on the others in the batch.
  const torch::Tensor mixed = net->forward(x, c, torch::tensor({0, 1}, torch::kInt64));
  EXPECT_TRUE(torch::allclose(mixed[0], net->forward(x, c, label(0))[0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(mixed[1], net->forward(x, c, label(1))[1], 1e-5, 1e-6));
  // An unconditional U-Net refuses labels.
  const ScoreNetwork plain = make_network(unet_spec(tiny()));
  EXPECT_THROW(plain->forward(x, c, label(0)), std::invalid_argument);
}

TEST(Unet, CheckpointRoundTripGivesIdenticalOutputs) {
  const fs::path dir = temp_dir();
  torch::manual_seed(2);
  UnetArchitecture a = tiny(4);
  a.embedding = "fourier";
  a.fourier_scale = 2.0;
  NetworkSpec spec = unet_spec(a);
  spec.output = NetworkOutput::eps;
  spec.sigma_data = 0.7;
  const ScoreNetwork net = make_network(spec);
  randomise(*net);
  const std::string file = (dir / "unet.pt").string();
  save_network(file, spec, net);
  NetworkSpec read;
  const ScoreNetwork loaded = load_network(file, read);
  EXPECT_EQ(read.kind, "unet");
  EXPECT_EQ(read.unet.channel_multipliers, a.channel_multipliers);
  EXPECT_EQ(read.unet.attention_heads, 2);
  EXPECT_EQ(read.unet.groups, 4);
  EXPECT_EQ(read.unet.embedding, "fourier");
  EXPECT_EQ(read.unet.fourier_scale, 2.0);
  EXPECT_EQ(read.classes(), 4);
  EXPECT_EQ(read.dims(), 64);
  EXPECT_EQ(read.output, NetworkOutput::eps);
  EXPECT_EQ(read.sigma_data, 0.7);
  const torch::Tensor x = torch::randn({3, 64}), alpha = torch::ones({3}), sigma = torch::tensor({0.1, 1.0, 10.0}, torch::kFloat32);
  const torch::Tensor labels = torch::tensor({0, 3, 4}, torch::kInt64);
  EXPECT_TRUE(torch::equal(conditioned_prediction(net, spec, x, alpha, sigma, labels), conditioned_prediction(loaded, read, x, alpha, sigma, labels)));
  fs::remove_all(dir);
}

// A checkpoint of the first format (version 1: no spec/kind) reads as the residual MLP it holds.
TEST(Unet, VersionOneCheckpointsReadAsMlp) {
  const fs::path dir = temp_dir();
  torch::manual_seed(3);
  const MlpArchitecture m{.dims = 3, .width = 8, .blocks = 1, .embedding_dims = 4, .classes = 2};
  ScoreMlp mlp(m);
  randomise(*mlp);
  torch::serialize::OutputArchive archive, s, weights;
  archive.write("format", c10::IValue(std::string("diffode-network")));
  archive.write("version", c10::IValue(std::int64_t{1}));
  s.write("dims", c10::IValue(std::int64_t{3}));
  s.write("width", c10::IValue(std::int64_t{8}));
  s.write("blocks", c10::IValue(std::int64_t{1}));
  s.write("embedding_dims", c10::IValue(std::int64_t{4}));
  s.write("embedding", c10::IValue(std::string("sinusoidal")));
  s.write("fourier_scale", c10::IValue(16.0));
  s.write("classes", c10::IValue(std::int64_t{2}));
  s.write("output", c10::IValue(std::string("x0")));
  s.write("sigma_data", c10::IValue(0.5));
  archive.write("spec", s);
  mlp->save(weights);
  archive.write("weights", weights);
  const std::string file = (dir / "v1.pt").string();
  archive.save_to(file);
  NetworkSpec read;
  const ScoreNetwork loaded = load_network(file, read);
  EXPECT_EQ(read.kind, "mlp");
  EXPECT_EQ(read.architecture.width, 8);
  EXPECT_EQ(read.dims(), 3);
  EXPECT_EQ(read.classes(), 2);
  const torch::Tensor x = torch::randn({2, 3}), c = torch::zeros({2});
  EXPECT_TRUE(torch::equal(mlp->forward(x, c), loaded->forward(x, c)));
  fs::remove_all(dir);
}

// 64 labelled 8x8 images (a bright square whose place is the class, plus noise), drawn with
// replacement by (seed, step) as the config's image data are.
TrainingData square_images(std::int64_t batch) {
  auto images = std::make_shared<Batch>(64, 64);
  auto labels = std::make_shared<std::vector<std::int64_t>>();
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  const torch::Tensor noise = 0.1 * torch::randn({64, 64}, g, torch::TensorOptions().dtype(torch::kFloat64));
  for (Index i = 0; i < 64; ++i) {
    const std::int64_t k = i % 3;
    labels->push_back(k);
    for (Index p = 0; p < 64; ++p) {
      const Index r = p / 8, col = p % 8;
      const bool on = r >= 2 * k && r < 2 * k + 3 && col >= 2 && col < 5;
      (*images)(i, p) = (on ? 0.8 : -0.8) + noise[i][p].item<double>();
    }
  }
  return [images, labels, batch](std::uint64_t step) {
    TrainingBatch out;
    out.x0.resize(batch, 64);
    for (std::int64_t i = 0; i < batch; ++i) {
      const auto row = static_cast<Index>((step * 7919 + static_cast<std::uint64_t>(i) * 31) % 64);
      out.x0.row(i) = images->row(row);
      out.labels.push_back((*labels)[row]);
    }
    return out;
  };
}

TrainingSpec tiny_training(const std::string& file) {
  TrainingSpec s;
  s.network = unet_spec(tiny(3));
  s.process.edm = true;
  s.data = square_images(16);
  s.seed = 5;
  s.steps = 30;
  s.batch_size = 16;
  s.learning_rate = 3e-3;
  s.warmup_steps = 5;
  s.ema_decay = 0.9;
  s.label_dropout = 0.2;
  s.checkpoint_every = 0;
  s.checkpoint_file = file;
  s.threads = 1;
  return s;
}

TEST(Unet, TrainingLowersTheLossAndResumesBitwise) {
  const fs::path dir = temp_dir();
  TrainingSpec straight = tiny_training((dir / "straight.pt").string());
  const TrainingOutcome whole = train_network(straight, {}, {});
  ASSERT_EQ(whole.history.size(), 30u);
  const auto mean = [&](std::size_t begin, std::size_t end) {
    double sum = 0;
    for (std::size_t i = begin; i < end; ++i) sum += whole.history[i].loss;
    return sum / static_cast<double>(end - begin);
  };
  EXPECT_LT(mean(20, 30), 0.7 * mean(0, 5)) << "first steps " << mean(0, 5) << ", last " << mean(20, 30);

  // 2 steps straight == 1 step, a resume, 1 step.
  TrainingSpec two = tiny_training((dir / "two.pt").string());
  two.steps = 2;
  const TrainingOutcome both = train_network(two, {}, {});
  TrainingSpec one = tiny_training((dir / "one.pt").string());
  one.steps = 1;
  train_network(one, {}, {});
  TrainingSpec rest = tiny_training(one.checkpoint_file);
  rest.steps = 2;
  rest.resume_from = one.checkpoint_file;
  const TrainingOutcome resumed = train_network(rest, {}, {});
  ASSERT_EQ(resumed.history.size(), 2u);
  EXPECT_EQ(both.history[1].loss, resumed.history[1].loss);  // bitwise
  NetworkSpec sa, sb;
  const ScoreNetwork a = load_network(two.checkpoint_file, sa), b = load_network(rest.checkpoint_file, sb);
  const auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "EMA tensor " << i;
  // Resuming a U-Net checkpoint with another architecture is refused by name.
  TrainingSpec other = tiny_training(one.checkpoint_file);
  other.network.unet.base_channels = 12;
  other.resume_from = one.checkpoint_file;
  try {
    train_network(other, {}, {});
    ADD_FAILURE() << "resumed with another base_channels";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("base_channels"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Unet, WrongShapesAreRefusedByName) {
  const auto problem = [](auto change) {
    UnetArchitecture a = tiny();
    change(a);
    return unet_architecture_problem(a);
  };
  EXPECT_EQ(problem([](UnetArchitecture&) {}), "");
  EXPECT_NE(problem([](UnetArchitecture& a) { a.height = 7; }).find("divisible"), std::string::npos);
  EXPECT_NE(problem([](UnetArchitecture& a) { a.channel_multipliers = {1, 2, 2, 2, 2}; }).find("divisible"), std::string::npos);
  EXPECT_NE(problem([](UnetArchitecture& a) { a.groups = 3; }).find("groups"), std::string::npos);
  EXPECT_NE(problem([](UnetArchitecture& a) { a.attention_heads = 3; }).find("attention_heads"), std::string::npos);
  EXPECT_NE(problem([](UnetArchitecture& a) { a.channel_multipliers = {}; }).find("channel_multipliers"), std::string::npos);
  EXPECT_NE(problem([](UnetArchitecture& a) { a.embedding_dims = 5; }).find("embedding_dims"), std::string::npos);
  UnetArchitecture bad = tiny();
  bad.height = 7;
  EXPECT_THROW(make_network(unet_spec(bad)), std::invalid_argument);
  const ScoreNetwork net = make_network(unet_spec(tiny()));
  EXPECT_THROW(net->forward(torch::zeros({2, 63}), torch::zeros({2})), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
