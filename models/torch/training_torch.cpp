// Denoising score matching (Vincent 2011; Song & Ermon 2019, arXiv:1907.05600) for the networks of
// models/network.hpp, under any forward process x = alpha x0 + sigma eps and any output:
//   eps, score  the eps-MSE |eps_hat - eps|^2 with uniform weight, the "simple" loss of Ho et al. 2020
//               (arXiv:2006.11239, eq. 14); for a score output eps_hat = -sigma F, which is score
//               matching with Song et al.'s weight lambda = sigma^2 (arXiv:2011.13456, eq. 7);
//   x0, v, flow the MSE in the output's own space against x0, v = alpha eps - sigma x0 (Salimans &
//               Ho 2022, arXiv:2202.00512) or u = alpha' x0 + sigma' eps (Lipman et al. 2023,
//               arXiv:2210.02747);
//   edm         EDM's weighted denoiser loss lambda(sigma~) |D - x0|^2 with lambda = 1 / c_out^2,
//               taken in its equivalent form |F - (x0 - c_skip x~) / c_out|^2 (Karras et al. 2022,
//               arXiv:2206.00364, eq. 2, eq. 8 and Table 1), which does not divide by c_out^2.
// Noise levels: for an EDM process ln sigma~ ~ N(P_mean, P_std^2) (Table 1); for every other
// process t ~ U[t_min, t_max].
//
// Optimiser: AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) with a linear learning-rate
// warm-up and global gradient-norm clipping; the sampling weights are an exponential moving average
// of the weights with the usual warm-up of its decay, min(decay, (1 + step) / (10 + step)) (as
// TensorFlow's ExponentialMovingAverage with num_updates), so that a short run's average is not
// dominated by the random initial weights.
//
// Reproducibility: every random number of step s (noise levels, eps, label dropout) comes from a
// generator seeded by (seed, s), and the data by TrainingData(s); the initial weights from
// torch::manual_seed(seed). A checkpoint holds everything else that evolves (weights, EMA,
// AdamW's moments and step, the loss history), so a resumed run takes exactly the steps the
// uninterrupted one would: bitwise on the CPU with the same thread count.
#include "models/torch/training_torch.hpp"

#include "core/splitmix.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "models/torch/training_loop_torch.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <stdexcept>

namespace diffode {
namespace {

// The seed of step `step`'s generator: distinct steps and seeds give unrelated streams.
std::uint64_t step_seed(std::uint64_t seed, std::int64_t step) {
  return splitmix64(splitmix64(seed) ^ splitmix64(static_cast<std::uint64_t>(step) + 0x7472616EULL));
}

torch::Dtype training_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  throw std::invalid_argument(fmt::format("training dtype '{}' (float32 | float64)", name));
}

void check_spec(const TrainingSpec& spec) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("training: " + what); };
  if (!spec.data) fail("no data");
  if (spec.steps < 0) fail(fmt::format("steps {} < 0", spec.steps));
  if (spec.batch_size < 1) fail(fmt::format("batch_size {} < 1", spec.batch_size));
  if (!(spec.learning_rate > 0) || !std::isfinite(spec.learning_rate)) fail(fmt::format("learning_rate {} must be positive", spec.learning_rate));
  if (!(spec.weight_decay >= 0)) fail(fmt::format("weight_decay {} < 0", spec.weight_decay));
  if (spec.warmup_steps < 0) fail(fmt::format("warmup_steps {} < 0", spec.warmup_steps));
  if (!(spec.gradient_clip >= 0)) fail(fmt::format("gradient_clip {} < 0", spec.gradient_clip));
  if (!(spec.ema_decay >= 0 && spec.ema_decay < 1)) fail(fmt::format("ema_decay {} outside [0, 1)", spec.ema_decay));
  if (!(spec.label_dropout >= 0 && spec.label_dropout <= 1)) fail(fmt::format("label_dropout {} outside [0, 1]", spec.label_dropout));
  if (spec.checkpoint_every < 0) fail(fmt::format("checkpoint_every {} < 0", spec.checkpoint_every));
  if (!(spec.network.sigma_data > 0)) fail(fmt::format("sigma_data {} must be positive", spec.network.sigma_data));
  if (spec.threads < 1) fail(fmt::format("threads {} < 1", spec.threads));
  if (!spec.process.edm) {
    if (!spec.process.alpha || !spec.process.sigma) fail("the process has no alpha or sigma");
    if (spec.network.output == NetworkOutput::flow && (!spec.process.d_alpha || !spec.process.d_sigma))
      fail("a flow output needs the process's alpha' and sigma'");
    if (!(spec.process.t_min < spec.process.t_max)) fail(fmt::format("time range [{}, {}]", spec.process.t_min, spec.process.t_max));
  } else if (!(spec.p_std > 0)) {
    fail(fmt::format("p_std {} must be positive", spec.p_std));
  }
}

// The settings a resumed run must share with the run it continues (the step count, checkpoint
// cadence and file may change). Doubles in hexadecimal, so equality is exact.
std::string resume_settings(const TrainingSpec& s) {
  const std::string common = fmt::format(
      "output={} sigma_data={:a} seed={} batch_size={} learning_rate={:a} weight_decay={:a} warmup_steps={} gradient_clip={:a} ema_decay={:a} "
      "label_dropout={:a} p_mean={:a} p_std={:a} edm={} t_min={:a} t_max={:a} dtype={} device={} threads={}",
      to_string(s.network.output), s.network.sigma_data, s.seed, s.batch_size, s.learning_rate, s.weight_decay, s.warmup_steps, s.gradient_clip,
      s.ema_decay, s.label_dropout, s.p_mean, s.p_std, s.process.edm, s.process.t_min, s.process.t_max, s.dtype, s.device, s.threads);
  if (s.network.kind == "unet") {
    const UnetArchitecture& u = s.network.unet;
    return fmt::format("kind=unet image={}x{}x{} base_channels={} channel_multipliers={} blocks_per_level={} attention={} attention_heads={} "
                       "groups={} embedding_dims={} embedding={} fourier_scale={:a} classes={} {}",
                       u.channels, u.height, u.width, u.base_channels, fmt::join(u.channel_multipliers, ","), u.blocks_per_level, u.attention,
                       u.attention_heads, u.groups, u.embedding_dims, u.embedding, u.fourier_scale, u.classes, common);
  }
  // The MLP's string is that of the checkpoints written before the U-Net, which therefore still resume.
  const MlpArchitecture& a = s.network.architecture;
  return fmt::format("dims={} width={} blocks={} embedding_dims={} embedding={} fourier_scale={:a} classes={} {}", a.dims, a.width, a.blocks,
                     a.embedding_dims, a.embedding, a.fourier_scale, a.classes, common);
}

// The first setting (space-separated key=value) where `a` and `b` differ, as "key: a vs b".
std::string first_difference(const std::string& a, const std::string& b) {
  const auto split = [](const std::string& text) {
    std::vector<std::string> words;
    std::size_t begin = 0;
    while (begin < text.size()) {
      const std::size_t end = std::min(text.find(' ', begin), text.size());
      words.push_back(text.substr(begin, end - begin));
      begin = end + 1;
    }
    return words;
  };
  const auto wa = split(a), wb = split(b);
  for (std::size_t i = 0; i < std::min(wa.size(), wb.size()); ++i)
    if (wa[i] != wb[i]) return fmt::format("checkpoint {} vs now {}", wa[i], wb[i]);
  return "settings differ";
}

torch::Tensor from_host(const double* data, std::vector<std::int64_t> sizes) {
  return torch::from_blob(const_cast<double*>(data), sizes, torch::TensorOptions().dtype(torch::kFloat64)).clone();
}

// One step's inputs, drawn on the host in float64: the noised x, the regression target of the
// output, the levels, and the (dropped-out) labels.
struct StepInputs {
  torch::Tensor x, target, alpha, sigma, labels;
  torch::Tensor prediction_scale;  // score output: the loss is on -sigma F (eps space); else undefined
};

StepInputs draw_step(const TrainingSpec& spec, std::int64_t step) {
  const NetworkSpec& net = spec.network;
  const Index classes = net.classes();
  const TrainingBatch batch = spec.data(static_cast<std::uint64_t>(step));
  const std::int64_t n = batch.x0.rows(), d = batch.x0.cols();
  if (n < 1 || d != net.dims())
    throw std::invalid_argument(fmt::format("training: step {}'s data are {} x {}; the network takes {} dimensions", step, n, d, net.dims()));
  if (!batch.x0.isFinite().all()) throw std::invalid_argument(fmt::format("training: step {}'s data hold non-finite values", step));
  if (classes > 0 && static_cast<std::int64_t>(batch.labels.size()) != n)
    throw std::invalid_argument("training: a class-conditional network needs one label per row of data");
  if (classes == 0 && !batch.labels.empty()) throw std::invalid_argument("training: labels given to an unconditional network");

  auto generator = at::make_generator<at::CPUGeneratorImpl>(step_seed(spec.seed, step));
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor x0 = from_host(batch.x0.data(), {n, d});
  torch::Tensor alpha, sigma, d_alpha, d_sigma;
  if (spec.process.edm) {
    sigma = torch::exp(spec.p_mean + spec.p_std * torch::randn({n}, generator, f64));
    alpha = torch::ones({n}, f64);
  } else {
    const torch::Tensor t = spec.process.t_min + (spec.process.t_max - spec.process.t_min) * torch::rand({n}, generator, f64);
    alpha = torch::empty({n}, f64), sigma = torch::empty({n}, f64);
    const bool rates = net.output == NetworkOutput::flow;
    if (rates) d_alpha = torch::empty({n}, f64), d_sigma = torch::empty({n}, f64);
    const double* tp = t.data_ptr<double>();
    for (std::int64_t i = 0; i < n; ++i) {
      alpha.data_ptr<double>()[i] = spec.process.alpha(tp[i]);
      sigma.data_ptr<double>()[i] = spec.process.sigma(tp[i]);
      if (rates) {
        d_alpha.data_ptr<double>()[i] = spec.process.d_alpha(tp[i]);
        d_sigma.data_ptr<double>()[i] = spec.process.d_sigma(tp[i]);
      }
    }
  }
  const torch::Tensor eps = torch::randn({n, d}, generator, f64);
  StepInputs in;
  if (classes > 0) {
    const torch::Tensor dropped = torch::rand({n}, generator, f64) < spec.label_dropout;
    torch::Tensor labels = torch::tensor(batch.labels, torch::TensorOptions().dtype(torch::kInt64));
    if ((labels < 0).any().item<bool>() || (labels >= classes).any().item<bool>())
      throw std::invalid_argument(fmt::format("training: labels outside 0..{}", classes - 1));
    in.labels = torch::where(dropped, torch::full_like(labels, classes), labels);
  }
  const torch::Tensor a2 = alpha.reshape({n, 1}), s2 = sigma.reshape({n, 1});
  in.x = a2 * x0 + s2 * eps;
  switch (net.output) {
    case NetworkOutput::eps: in.target = eps; break;
    case NetworkOutput::score:
      in.target = eps;
      in.prediction_scale = -s2;
      break;
    case NetworkOutput::x0: in.target = x0; break;
    case NetworkOutput::v: in.target = a2 * eps - s2 * x0; break;
    case NetworkOutput::flow: in.target = d_alpha.reshape({n, 1}) * x0 + d_sigma.reshape({n, 1}) * eps; break;
    case NetworkOutput::edm:
      in.target = (x0 - edm_skip_on_x(net, alpha, sigma) * in.x) / edm_c_out(net, alpha, sigma);
      break;
  }
  in.alpha = alpha;
  in.sigma = sigma;
  return in;
}

struct Trainer {
  const TrainingSpec& spec;
  torch::Device device;
  torch::Dtype dtype;
  ScoreNetwork network, ema;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::int64_t step = 0;
  std::vector<TrainingProgress> history;
  double seconds_before = 0;  // wall time of the runs this one continues

  Trainer(const TrainingSpec& s)
      : spec(s), device(s.device), dtype(training_dtype(s.dtype)), network(make_network(s.network)), ema(make_network(s.network)) {
    network->to(device, dtype);
    ema->to(device, dtype);
    {
      torch::NoGradGuard no_grad;
      const auto raw = network->parameters();
      const auto avg = ema->parameters();
      for (std::size_t i = 0; i < raw.size(); ++i) avg[i].copy_(raw[i]);
    }
    for (auto& p : ema->parameters()) p.requires_grad_(false);
    optimizer = std::make_unique<torch::optim::AdamW>(network->parameters(),
                                                      torch::optim::AdamWOptions(spec.learning_rate).weight_decay(spec.weight_decay));
  }

  void save(const std::string& file) {
    torch::serialize::OutputArchive archive;
    write_network_archive(archive, spec.network, *ema);
    torch::serialize::OutputArchive training;
    training.write("settings", c10::IValue(resume_settings(spec)));
    training.write("step", c10::IValue(step));
    torch::serialize::OutputArchive raw, adam;
    network->save(raw);
    training.write("raw", raw);
    optimizer->save(adam);
    training.write("optimizer", adam);
    write_history_tensors(training, history);
    archive.write("training", training);
    save_archive_atomically(archive, file);
  }

  void resume(const std::string& file) {
    NetworkSpec saved;
    torch::serialize::InputArchive archive = open_network_archive(file, saved, device);
    torch::serialize::InputArchive training;
    if (!archive.try_read("training", training))
      throw std::invalid_argument(fmt::format("{}: holds sampling weights only (no training state to resume from)", file));
    c10::IValue value;
    training.read("settings", value);
    const std::string now = resume_settings(spec);
    if (value.toStringRef() != now)
      throw std::invalid_argument(fmt::format("{}: cannot resume with other settings ({}); resume with the config it was trained with",
                                              file, first_difference(value.toStringRef(), now)));
    try {
      torch::serialize::InputArchive weights, raw, adam;
      archive.read("weights", weights);
      ema->load(weights);
      training.read("raw", raw);
      network->load(raw);
      training.read("optimizer", adam);
      optimizer->load(adam);
      training.read("step", value);
      step = value.toInt();
      history = read_history_tensors(training, step);
      seconds_before = step > 0 ? history.back().seconds : 0.0;
    } catch (const c10::Error& e) {
      throw std::runtime_error(fmt::format("{}: damaged training state: {}", file, e.what_without_backtrace()));
    }
  }

  double learning_rate_at(std::int64_t s) const {
    if (spec.warmup_steps <= 0) return spec.learning_rate;
    return spec.learning_rate * std::min(1.0, static_cast<double>(s + 1) / static_cast<double>(spec.warmup_steps));
  }

  // One optimisation step; returns the batch's loss.
  double take_step() {
    const StepInputs in = draw_step(spec, step);
    const auto options = torch::TensorOptions().dtype(dtype).device(device);
    const torch::Tensor x = in.x.to(options), target = in.target.to(options);
    const torch::Tensor alpha = in.alpha.to(options), sigma = in.sigma.to(options);
    const torch::Tensor labels = in.labels.defined() ? in.labels.to(device) : torch::Tensor();
    torch::Tensor prediction = network->forward(network_c_in(spec.network, alpha, sigma) * x, network_c_noise(alpha, sigma), labels);
    if (in.prediction_scale.defined()) prediction = in.prediction_scale.to(options) * prediction;
    const torch::Tensor loss = (prediction - target).square().mean();
    optimizer->zero_grad();
    loss.backward();
    if (spec.gradient_clip > 0) torch::nn::utils::clip_grad_norm_(network->parameters(), spec.gradient_clip);
    const double lr = learning_rate_at(step);
    for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer->step();
    {
      torch::NoGradGuard no_grad;
      const double decay = std::min(spec.ema_decay, static_cast<double>(1 + step) / static_cast<double>(10 + step));
      const auto raw = network->parameters();
      const auto avg = ema->parameters();
      for (std::size_t i = 0; i < raw.size(); ++i) avg[i].mul_(decay).add_(raw[i], 1.0 - decay);
    }
    return loss.item<double>();
  }
};

}  // namespace

TrainingOutcome train_network(const TrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                              const std::function<bool()>& stop) {
  check_spec(spec);
  return run_training_loop<Trainer>(spec, "training", progress, stop);
}

}  // namespace diffode
