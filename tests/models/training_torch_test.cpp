// The score MLP, its conditioning and checkpoints, and denoising score matching
// (models/torch/score_mlp_torch.hpp, models/torch/training_torch.cpp): a resumed run equals the
// uninterrupted one bit for bit, the loss falls under every output and process, the EDM output map
// is Table 1 of Karras et al. 2022, and a trained tiny network's denoiser approaches the exact
// mixture's.
#include "models/gaussian_mixture.hpp"
#include "models/predictor.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "models/torch/training_torch.hpp"
#include "problems/process.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <unistd.h>

namespace diffode {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() {
  const fs::path dir = fs::temp_directory_path() / fmt::format("diffode_training_test_{}", ::getpid());
  fs::create_directories(dir);
  return dir;
}

TrainingProcess training_process(std::shared_ptr<const Process> p, bool edm = false) {
  TrainingProcess out;
  out.alpha = [p](double t) { return p->alpha(t); };
  out.sigma = [p](double t) { return p->sigma(t); };
  out.d_alpha = [p](double t) { return p->d_alpha(t); };
  out.d_sigma = [p](double t) { return p->d_sigma(t); };
  out.t_min = p->t_min();
  out.t_max = p->t_max();
  out.edm = edm;
  return out;
}

// Fresh draws of the 2-D ring every step, keyed by (seed, step).
TrainingData ring_data(std::int64_t batch, std::uint64_t seed = 7) {
  auto mixture = std::make_shared<GaussianMixture>(GaussianMixture::ring());
  return [mixture, batch, seed](std::uint64_t step) {
    return TrainingBatch{mixture->sample(batch, seed, static_cast<Index>(step) * batch), {}};
  };
}

TrainingSpec tiny_spec() {
  TrainingSpec s;
  s.network.architecture = {.dims = 2, .width = 32, .blocks = 2, .embedding_dims = 16};
  s.network.output = NetworkOutput::edm;
  s.network.sigma_data = 1.4;
  s.process = training_process(std::make_shared<Edm>(), /*edm=*/true);
  s.data = ring_data(64);
  s.seed = 3;
  s.steps = 40;
  s.batch_size = 64;
  s.learning_rate = 2e-3;
  s.warmup_steps = 10;
  s.ema_decay = 0.99;
  s.checkpoint_every = 20;
  s.threads = 1;
  return s;
}

std::vector<torch::Tensor> parameters_of(const ScoreNetwork& m) { return m->parameters(); }

// The raw (not averaged) weights a checkpoint keeps for resuming.
std::vector<torch::Tensor> raw_weights(const std::string& file, const MlpArchitecture& architecture) {
  NetworkSpec spec;
  torch::serialize::InputArchive archive = open_network_archive(file, spec);
  torch::serialize::InputArchive training, raw;
  archive.read("training", training);
  training.read("raw", raw);
  ScoreMlp m(architecture);
  m->load(raw);
  return m->parameters();
}

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << what << " tensor " << i;
}

void expect_same_history(const std::vector<TrainingProgress>& a, const std::vector<TrainingProgress>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].step, b[i].step);
    EXPECT_EQ(a[i].loss, b[i].loss) << "step " << i + 1;  // bitwise
    EXPECT_EQ(a[i].learning_rate, b[i].learning_rate);
  }
}

TEST(Training, ResumeAfterStopEqualsTheUninterruptedRunBitwise) {
  const fs::path dir = temp_dir();
  TrainingSpec straight = tiny_spec();
  straight.checkpoint_file = (dir / "straight.pt").string();
  const TrainingOutcome whole = train_network(straight, {}, {});
  ASSERT_EQ(whole.steps_done, 40);
  ASSERT_FALSE(whole.interrupted);

  // Stopped after 13 steps (not a multiple of checkpoint_every): the stop writes the checkpoint.
  TrainingSpec first = tiny_spec();
  first.checkpoint_file = (dir / "split.pt").string();
  int steps_seen = 0;
  const TrainingOutcome part = train_network(first, [&](const TrainingProgress&) { ++steps_seen; }, [&] { return steps_seen >= 13; });
  EXPECT_TRUE(part.interrupted);
  EXPECT_EQ(part.steps_done, 13);
  TrainingSpec rest = tiny_spec();
  rest.checkpoint_file = first.checkpoint_file;
  rest.resume_from = first.checkpoint_file;
  const TrainingOutcome resumed = train_network(rest, {}, {});
  EXPECT_EQ(resumed.steps_done, 40);
  expect_same_history(whole.history, resumed.history);

  NetworkSpec spec_a, spec_b;
  ScoreNetwork ema_a = load_network(straight.checkpoint_file, spec_a);
  ScoreNetwork ema_b = load_network(rest.checkpoint_file, spec_b);
  expect_bitwise_equal(parameters_of(ema_a), parameters_of(ema_b), "EMA weights");
  expect_bitwise_equal(raw_weights(straight.checkpoint_file, straight.network.architecture),
                       raw_weights(rest.checkpoint_file, rest.network.architecture), "raw weights");
  fs::remove_all(dir);
}

TEST(Training, TwentyStepsThenResumeForTwentyEqualsFortyStraight) {
  const fs::path dir = temp_dir();
  TrainingSpec straight = tiny_spec();
  straight.network.architecture.embedding = "fourier";
  straight.network.output = NetworkOutput::v;
  straight.process = training_process(std::make_shared<VpCosine>());
  straight.checkpoint_file = (dir / "straight.pt").string();
  const TrainingOutcome whole = train_network(straight, {}, {});

  TrainingSpec first = straight;
  first.steps = 20;
  first.checkpoint_file = (dir / "split.pt").string();
  train_network(first, {}, {});
  TrainingSpec rest = straight;
  rest.checkpoint_file = first.checkpoint_file;
  rest.resume_from = first.checkpoint_file;
  const TrainingOutcome resumed = train_network(rest, {}, {});
  expect_same_history(whole.history, resumed.history);
  NetworkSpec spec_a, spec_b;
  ScoreNetwork ema_a = load_network(straight.checkpoint_file, spec_a);
  ScoreNetwork ema_b = load_network(rest.checkpoint_file, spec_b);
  expect_bitwise_equal(parameters_of(ema_a), parameters_of(ema_b), "EMA weights");
  expect_bitwise_equal(raw_weights(straight.checkpoint_file, straight.network.architecture),
                       raw_weights(rest.checkpoint_file, rest.network.architecture), "raw weights");

  // Resuming under other settings is refused, naming the first that differs.
  TrainingSpec other = rest;
  other.learning_rate = 1e-3;
  try {
    train_network(other, {}, {});
    ADD_FAILURE() << "a resume with another learning rate was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("learning_rate"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

double mean_loss(const std::vector<TrainingProgress>& h, std::size_t begin, std::size_t end) {
  double sum = 0;
  for (std::size_t i = begin; i < end; ++i) sum += h[i].loss;
  return sum / static_cast<double>(end - begin);
}

// Every output under a process it is used with: the loss falls, and the trained network's
// prediction, converted to x0 by predictor.hpp's formulas, is a far better denoiser at sigma~ = 1
// than the best linear one (Wiener's, sigma_d^2 / (sigma_d^2 + sigma~^2) x~ with the data's second
// moment): each output's training target and its reading agree.
TEST(Training, EveryOutputLearnsTheRingsDenoiser) {
  struct Case {
    NetworkOutput output;
    std::shared_ptr<const Process> process;
    bool edm;
  };
  const std::vector<Case> cases = {{NetworkOutput::edm, std::make_shared<Edm>(), true},
                                   {NetworkOutput::eps, std::make_shared<VpLinear>(), false},
                                   {NetworkOutput::score, std::make_shared<VpLinear>(), false},
                                   {NetworkOutput::x0, std::make_shared<Ve>(), false},
                                   {NetworkOutput::v, std::make_shared<VpCosine>(), false},
                                   {NetworkOutput::flow, std::make_shared<Flow>(), false}};
  const fs::path dir = temp_dir();
  const GaussianMixture ring = GaussianMixture::ring();
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  for (const Case& c : cases) {
    TrainingSpec s = tiny_spec();
    s.network.output = c.output;
    s.process = training_process(c.process, c.edm);
    s.steps = 400;
    s.learning_rate = 3e-3;
    s.checkpoint_every = 0;
    s.checkpoint_file = (dir / "net.pt").string();
    const TrainingOutcome out = train_network(s, {}, {});
    ASSERT_EQ(out.history.size(), 400u);
    const std::string name = fmt::format("{} under {}", to_string(c.output), c.process->name());
    EXPECT_LT(mean_loss(out.history, 350, 400), mean_loss(out.history, 0, 50)) << name;

    NetworkSpec spec;
    ScoreNetwork net = load_network(s.checkpoint_file, spec);
    net->to(torch::kFloat64);
    const double t = c.process->t_of_scaled_sigma(1.0);
    const double a = c.process->alpha(t), sg = c.process->sigma(t), da = c.process->d_alpha(t), ds = c.process->d_sigma(t);
    const Index n = 1000;
    const Batch x = ring.sample_marginal(a, sg, n, 99);
    Batch exact;
    ring.denoise(x, PerSample::Constant(n, a), PerSample::Constant(n, sg), exact);
    const torch::Tensor xt = torch::from_blob(const_cast<double*>(x.data()), {n, 2}, f64).clone();
    const torch::Tensor e = torch::from_blob(const_cast<double*>(exact.data()), {n, 2}, f64).clone();
    torch::Tensor prediction;
    {
      torch::NoGradGuard no_grad;
      prediction = conditioned_prediction(net, spec, xt, torch::full({n}, a, f64), torch::full({n}, sg, f64));
    }
    const AffineMap<double> to_x0 = conversion(native_parameterization(spec.output), Parameterization::x0, a, sg, &da, &ds);
    const torch::Tensor x0_hat = to_x0.on_x * xt + to_x0.on_prediction * prediction;
    const double error = (x0_hat - e).square().sum(1).mean().sqrt().item<double>();
    const double second_moment = 2.04;  // E|x0|^2 / D of the ring: (radius^2 + 2 std^2) / 2
    const double wiener = (second_moment / (second_moment + 1.0) * xt / a - e).square().sum(1).mean().sqrt().item<double>();
    // A score output's target grows as 1/sigma over the levels: it learns slowest of the six.
    const double bound = c.output == NetworkOutput::score ? 0.7 : 0.5;
    EXPECT_LT(error, bound * wiener) << name << ": rms denoiser error " << error << ", Wiener's " << wiener;
  }
  fs::remove_all(dir);
}

TEST(ScoreMlp, EdmOutputIsSkipPlusScaledNetworkByHand) {
  torch::manual_seed(1);
  NetworkSpec spec;
  spec.architecture = {.dims = 3, .width = 16, .blocks = 1, .embedding_dims = 8};
  spec.output = NetworkOutput::edm;
  spec.sigma_data = 0.7;
  ScoreMlp net(spec.architecture);
  net->to(torch::kFloat64);
  {
    // The output layer starts at zero; give it weights so that F matters.
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.3 * torch::randn_like(p));
  }
  const std::int64_t n = 6;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor x = torch::randn({n, 3}, f64);
  const torch::Tensor alpha = torch::tensor({1.0, 0.9, 0.5, 0.1, 1.0, 0.99}, f64);
  const torch::Tensor sigma = torch::tensor({0.002, 0.3, 0.8, 0.99, 80.0, 0.05}, f64);
  const torch::Tensor d = conditioned_prediction(net, spec, x, alpha, sigma);
  for (std::int64_t i = 0; i < n; ++i) {
    const double a = alpha[i].item<double>(), s = sigma[i].item<double>(), sd = spec.sigma_data;
    const double st = s / a;  // sigma~
    const double c_skip = sd * sd / (st * st + sd * sd), c_out = st * sd / std::sqrt(st * st + sd * sd);
    const double c_in = 1.0 / std::sqrt(st * st + sd * sd);  // applied to x~ = x / alpha
    const torch::Tensor x_tilde = x.slice(0, i, i + 1) / a;
    const torch::Tensor f = net->forward(c_in * x_tilde, torch::full({1}, std::log(st) / 4, f64));
    const torch::Tensor expected = c_skip * x_tilde + c_out * f;
    EXPECT_TRUE(torch::allclose(d.slice(0, i, i + 1), expected, 1e-13, 1e-13)) << "row " << i << ": " << d.slice(0, i, i + 1) << " vs " << expected;
  }
  EXPECT_EQ(native_parameterization(NetworkOutput::edm), Parameterization::x0);
  EXPECT_EQ(native_parameterization(NetworkOutput::v), Parameterization::v);
  // At alpha = 0 (a flow's end) the map stays finite: D = sigma_data F.
  const torch::Tensor at_end = conditioned_prediction(net, spec, x.slice(0, 0, 1), torch::zeros({1}, f64), torch::ones({1}, f64));
  EXPECT_TRUE(torch::isfinite(at_end).all().item<bool>());
}

TEST(ScoreMlp, CheckpointRoundTripAndRefusals) {
  const fs::path dir = temp_dir();
  torch::manual_seed(2);
  NetworkSpec spec;
  spec.architecture = {.dims = 2, .width = 8, .blocks = 1, .embedding_dims = 4, .embedding = "fourier", .fourier_scale = 4.0, .classes = 3};
  spec.output = NetworkOutput::flow;
  spec.sigma_data = 0.3;
  ScoreMlp net(spec.architecture);
  const std::string file = (dir / "net.pt").string();
  save_network(file, spec, net);
  NetworkSpec read;
  ScoreNetwork loaded = load_network(file, read);
  EXPECT_EQ(read.architecture.width, 8);
  EXPECT_EQ(read.architecture.embedding, "fourier");
  EXPECT_EQ(read.architecture.fourier_scale, 4.0);
  EXPECT_EQ(read.architecture.classes, 3);
  EXPECT_EQ(read.output, NetworkOutput::flow);
  EXPECT_EQ(read.sigma_data, 0.3);
  expect_bitwise_equal(net->parameters(), loaded->parameters(), "weights");
  expect_bitwise_equal(net->buffers(), loaded->buffers(), "Fourier frequencies");
  // Labels: the null class by default; a given class changes the output.
  const torch::Tensor x = torch::randn({4, 2});
  const torch::Tensor c = torch::zeros({4});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : loaded->parameters()) p.add_(0.5 * torch::randn_like(p));
  }
  const torch::Tensor unconditional = loaded->forward(x, c);
  EXPECT_TRUE(torch::equal(unconditional, loaded->forward(x, c, torch::full({4}, 3, torch::kInt64))));
  EXPECT_FALSE(torch::equal(unconditional, loaded->forward(x, c, torch::full({4}, 1, torch::kInt64))));

  const auto message = [&](const std::string& path) {
    try {
      NetworkSpec s;
      load_network(path, s);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string missing = (dir / "missing.pt").string();
  EXPECT_NE(message(missing).find(missing), std::string::npos);
  const std::string text = (dir / "text.pt").string();
  std::ofstream(text) << "not a checkpoint";
  EXPECT_NE(message(text).find("not a diffode network checkpoint"), std::string::npos) << message(text);
  // A LibTorch archive that is not a diffode checkpoint.
  const std::string other = (dir / "other.pt").string();
  torch::save(torch::ones({2}), other);
  EXPECT_NE(message(other).find("not a diffode network checkpoint"), std::string::npos) << message(other);
  fs::remove_all(dir);
}

// A tiny network trained for a few seconds on the ring: its EMA denoiser at sigma~ = 1 is far
// closer to the exact mixture's than the trivial denoisers are (a loose check that training learns
// the right function, not a quality figure).
// A checkpoint keeps the training dtype's weights; loading converts them to the network's dtype.
// (LibTorch's Module::load would point a float32 module's tensors at float64 bytes: garbage.)
TEST(Training, AFloat64TrainedCheckpointLoadsItsOwnWeights) {
  const fs::path dir = temp_dir();
  TrainingSpec s = tiny_spec();
  s.steps = 3;
  s.checkpoint_every = 0;
  s.dtype = "float64";
  s.checkpoint_file = (dir / "f64.pt").string();
  train_network(s, {}, {});
  // The stored weights, read by LibTorch into a module of their own dtype (where Module::load works).
  NetworkSpec spec;
  torch::serialize::InputArchive archive = open_network_archive(s.checkpoint_file, spec), weights;
  archive.read("weights", weights);
  ScoreNetwork stored = make_network(spec);
  stored->to(torch::kFloat64);
  stored->load(weights);
  const ScoreNetwork loaded = load_network(s.checkpoint_file, spec);  // float32, as make_network builds it
  const auto a = loaded->named_parameters(), b = stored->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].value().scalar_type(), torch::kFloat32) << a[i].key();
    EXPECT_TRUE(torch::equal(a[i].value(), b[i].value().to(torch::kFloat32))) << a[i].key();
  }
  fs::remove_all(dir);
}

TEST(Training, TrainedDenoiserApproachesTheExactMixtureAtMidNoise) {
  const fs::path dir = temp_dir();
  TrainingSpec s = tiny_spec();
  s.network.architecture = {.dims = 2, .width = 64, .blocks = 2, .embedding_dims = 32};
  s.data = ring_data(256);
  s.batch_size = 256;
  s.steps = 600;
  s.learning_rate = 3e-3;
  s.warmup_steps = 100;
  s.ema_decay = 0.995;
  s.p_mean = 0.0;  // concentrate the levels around sigma~ = 1
  s.p_std = 1.0;
  s.checkpoint_every = 0;
  s.checkpoint_file = (dir / "ring.pt").string();
  train_network(s, {}, {});
  NetworkSpec spec;
  ScoreNetwork net = load_network(s.checkpoint_file, spec);
  net->to(torch::kFloat64);

  const GaussianMixture ring = GaussianMixture::ring();
  const Index n = 2000;
  const double sigma = 1.0;
  const Batch x = ring.sample_marginal(1.0, sigma, n, 99);
  Batch exact;
  ring.denoise(x, PerSample::Ones(n), PerSample::Constant(n, sigma), exact);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor xt = torch::from_blob(const_cast<double*>(x.data()), {n, 2}, f64).clone();
  torch::Tensor d;
  {
    torch::NoGradGuard no_grad;
    d = conditioned_prediction(net, spec, xt, torch::ones({n}, f64), torch::full({n}, sigma, f64));
  }
  const torch::Tensor e = torch::from_blob(const_cast<double*>(exact.data()), {n, 2}, f64).clone();
  const double network_error = (d - e).square().sum(1).mean().sqrt().item<double>();
  // The trivial denoisers: the data mean (0) and the skip connection alone (what the untrained
  // network gives).
  const double zero_error = e.square().sum(1).mean().sqrt().item<double>();
  const double sd2 = spec.sigma_data * spec.sigma_data;
  const double skip_error = (sd2 / (sigma * sigma + sd2) * xt - e).square().sum(1).mean().sqrt().item<double>();
  std::cout << fmt::format("denoiser rms error at sigma~ = 1: network {:.4f}, mean {:.4f}, skip only {:.4f}\n", network_error, zero_error,
                           skip_error);
  EXPECT_LT(network_error, 0.25 * std::min(zero_error, skip_error));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace diffode
