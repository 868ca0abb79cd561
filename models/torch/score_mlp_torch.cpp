// The residual MLP and its conditioning (models/network.hpp has the formulas). The noise embeddings
// are those of Karras et al. 2022 (arXiv:2206.00364, the released code's PositionalEmbedding with
// endpoint = True, i.e. the sinusoids of Vaswani et al. 2017 with frequencies 10000^(-k/(half-1)),
// and FourierEmbedding, the random Fourier features of Tancik et al. 2020 with frequencies
// N(0, fourier_scale^2)), both applied to c_noise = log(sigma~) / 4 as EDM applies them.
#include "models/torch/score_mlp_torch.hpp"

#include "models/torch/unet_torch.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <numbers>
#include <stdexcept>

namespace diffode {
namespace {

constexpr const char* kFormat = "diffode-network";
constexpr std::int64_t kVersion = 2;  // 2: spec/kind and the U-Net (1: MLP only, still read)
// |c_noise| <= log(1e8) / 4: sigma~ from 1e-8 to 1e8, far beyond any level a process samples.
const double kNoiseClamp = std::log(1e8) / 4.0;

void check_architecture(const MlpArchitecture& a) {
  if (a.dims < 1 || a.width < 1 || a.blocks < 0 || a.embedding_dims < 2 || a.embedding_dims % 2 != 0 || a.classes < 0)
    throw std::invalid_argument(fmt::format("ScoreMlp: invalid architecture (dims {}, width {}, blocks {}, embedding_dims {} (even, >= 2), classes {})",
                                            a.dims, a.width, a.blocks, a.embedding_dims, a.classes));
  if (a.embedding != "sinusoidal" && a.embedding != "fourier")
    throw std::invalid_argument(fmt::format("ScoreMlp: embedding '{}' (sinusoidal | fourier)", a.embedding));
  if (a.embedding == "fourier" && !(a.fourier_scale > 0 && std::isfinite(a.fourier_scale)))
    throw std::invalid_argument(fmt::format("ScoreMlp: fourier_scale {} must be positive", a.fourier_scale));
}

}  // namespace

ScoreMlpImpl::ScoreMlpImpl(const MlpArchitecture& architecture) : architecture_(architecture) {
  check_architecture(architecture_);
  const MlpArchitecture& a = architecture_;
  input_ = register_module("input", torch::nn::Linear(a.dims, a.width));
  embed_first_ = register_module("embed_first", torch::nn::Linear(a.embedding_dims, a.width));
  embed_second_ = register_module("embed_second", torch::nn::Linear(a.width, a.width));
  if (a.classes > 0) class_embedding_ = register_module("class_embedding", torch::nn::Embedding(a.classes + 1, a.embedding_dims));
  for (Index b = 0; b < a.blocks; ++b) {
    Block block;
    const std::string prefix = fmt::format("block{}_", b);
    block.norm = register_module(prefix + "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({a.width})));
    block.first = register_module(prefix + "first", torch::nn::Linear(a.width, a.width));
    block.condition = register_module(prefix + "condition", torch::nn::Linear(a.width, a.width));
    block.second = register_module(prefix + "second", torch::nn::Linear(a.width, a.width));
    blocks_.push_back(block);
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({a.width})));
  output_ = register_module("output", torch::nn::Linear(a.width, a.dims));
  // The output layer starts at zero (as EDM's networks do): F = 0, so an untrained `edm` network is
  // the skip connection c_skip x~ and an `eps` one predicts the mean noise.
  {
    torch::NoGradGuard no_grad;
    output_->weight.zero_();
    output_->bias.zero_();
  }
  if (a.embedding == "fourier") fourier_frequencies_ = register_buffer("fourier_frequencies", fourier_frequencies(a.embedding_dims, a.fourier_scale));
}

torch::Tensor fourier_frequencies(Index dims, double scale) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(0x5eedf00dULL);
  return torch::randn({dims / 2}, generator, torch::TensorOptions().dtype(torch::kFloat32)) * scale;
}

torch::Tensor noise_embedding(const torch::Tensor& c_noise, Index dims, const std::string& embedding, const torch::Tensor& fourier_frequencies) {
  const Index half = dims / 2;
  const torch::Tensor c = c_noise.reshape({-1, 1});
  torch::Tensor frequencies;
  if (embedding == "fourier") {
    frequencies = fourier_frequencies.to(c.options()) * (2.0 * std::numbers::pi);
  } else {
    // 10000^(-k / (half - 1)), k = 0 .. half-1 (endpoint included); one frequency 1 when half = 1.
    const double denominator = std::max<double>(1.0, static_cast<double>(half - 1));
    frequencies = torch::pow(1e-4, torch::arange(half, c.options()) / denominator);
  }
  const torch::Tensor phase = c * frequencies.reshape({1, -1});
  return torch::cat({torch::cos(phase), torch::sin(phase)}, 1);
}

torch::Tensor class_indices(const torch::Tensor& label, std::int64_t n, Index classes, torch::Device device, const char* who) {
  if (classes == 0) {
    if (label.defined()) throw std::invalid_argument(fmt::format("{}: a label given to an unconditional network", who));
    return {};
  }
  if (!label.defined()) return torch::full({n}, classes, torch::TensorOptions().dtype(torch::kInt64).device(device));
  if (label.numel() != n) throw std::invalid_argument(fmt::format("{}: {} labels for {} rows", who, label.numel(), n));
  return label.to(device, torch::kInt64).reshape({n});
}

ScoreNetwork make_network(const NetworkSpec& spec) {
  if (spec.kind == "mlp") return std::make_shared<ScoreMlpImpl>(spec.architecture);
  if (spec.kind == "unet") return std::make_shared<UnetImpl>(spec.unet);
  throw std::invalid_argument(fmt::format("network kind '{}' (mlp | unet)", spec.kind));
}

torch::Tensor ScoreMlpImpl::forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label) {
  const MlpArchitecture& a = architecture_;
  if (x_in.dim() != 2 || x_in.size(1) != a.dims)
    throw std::invalid_argument(fmt::format("ScoreMlp: input of shape {} (expected [N, {}])", fmt::join(x_in.sizes(), " x "), a.dims));
  const std::int64_t n = x_in.size(0);
  if (c_noise.numel() != n) throw std::invalid_argument("ScoreMlp: c_noise needs one value per row");
  torch::Tensor embedding = noise_embedding(c_noise, a.embedding_dims, a.embedding, fourier_frequencies_);
  if (a.classes > 0) embedding = embedding + class_embedding_->forward(class_indices(label, n, a.classes, x_in.device(), "ScoreMlp"));
  else class_indices(label, n, 0, x_in.device(), "ScoreMlp");
  const torch::Tensor condition = embed_second_->forward(torch::silu(embed_first_->forward(embedding)));
  const torch::Tensor condition_act = torch::silu(condition);
  torch::Tensor h = input_->forward(x_in);
  for (Block& block : blocks_) {
    torch::Tensor z = block.first->forward(torch::silu(block.norm->forward(h))) + block.condition->forward(condition_act);
    h = h + block.second->forward(torch::silu(z));
  }
  return output_->forward(torch::silu(final_norm_->forward(h)));
}

torch::Tensor network_c_in(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma) {
  const double sd2 = spec.sigma_data * spec.sigma_data;
  return torch::rsqrt(alpha * alpha * sd2 + sigma * sigma).reshape({-1, 1});
}

torch::Tensor network_c_noise(const torch::Tensor& alpha, const torch::Tensor& sigma) {
  return (0.25 * (torch::log(sigma) - torch::log(alpha))).clamp(-kNoiseClamp, kNoiseClamp).reshape({-1});
}

torch::Tensor edm_skip_on_x(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma) {
  const double sd2 = spec.sigma_data * spec.sigma_data;
  return (sd2 * alpha / (sigma * sigma + alpha * alpha * sd2)).reshape({-1, 1});
}

torch::Tensor edm_c_out(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma) {
  const double sd2 = spec.sigma_data * spec.sigma_data;
  return (spec.sigma_data * sigma * torch::rsqrt(sigma * sigma + alpha * alpha * sd2)).reshape({-1, 1});
}

torch::Tensor conditioned_prediction(ScoreNetworkImpl& network, const NetworkSpec& spec, const torch::Tensor& x, const torch::Tensor& alpha,
                                     const torch::Tensor& sigma, const torch::Tensor& label) {
  const std::int64_t n = x.size(0);
  const torch::Tensor a = alpha.reshape({n}), s = sigma.reshape({n});
  const torch::Tensor f = network.forward(network_c_in(spec, a, s) * x, network_c_noise(a, s), label);
  if (spec.output != NetworkOutput::edm) return f;
  return edm_skip_on_x(spec, a, s) * x + edm_c_out(spec, a, s) * f;
}

Parameterization native_parameterization(NetworkOutput output) {
  switch (output) {
    case NetworkOutput::eps: return Parameterization::eps;
    case NetworkOutput::x0: return Parameterization::x0;
    case NetworkOutput::v: return Parameterization::v;
    case NetworkOutput::score: return Parameterization::score;
    case NetworkOutput::flow: return Parameterization::flow;
    case NetworkOutput::edm: return Parameterization::x0;
  }
  throw std::invalid_argument("native_parameterization: unknown output");
}

void write_network_archive(torch::serialize::OutputArchive& archive, const NetworkSpec& spec, ScoreNetworkImpl& network) {
  archive.write("format", c10::IValue(std::string(kFormat)));
  archive.write("version", c10::IValue(kVersion));
  const auto integer = [](Index v) { return c10::IValue(static_cast<std::int64_t>(v)); };
  torch::serialize::OutputArchive s;
  s.write("kind", c10::IValue(spec.kind));
  if (spec.kind == "unet") {
    const UnetArchitecture& a = spec.unet;
    s.write("channels", integer(a.channels));
    s.write("height", integer(a.height));
    s.write("width", integer(a.width));
    s.write("base_channels", integer(a.base_channels));
    std::vector<std::int64_t> multipliers(a.channel_multipliers.begin(), a.channel_multipliers.end());
    s.write("channel_multipliers", torch::tensor(multipliers, torch::kInt64));
    s.write("blocks_per_level", integer(a.blocks_per_level));
    s.write("attention", c10::IValue(a.attention));
    s.write("attention_heads", integer(a.attention_heads));
    s.write("groups", integer(a.groups));
    s.write("embedding_dims", integer(a.embedding_dims));
    s.write("embedding", c10::IValue(a.embedding));
    s.write("fourier_scale", c10::IValue(a.fourier_scale));
    s.write("classes", integer(a.classes));
  } else {
    const MlpArchitecture& a = spec.architecture;
    s.write("dims", integer(a.dims));
    s.write("width", integer(a.width));
    s.write("blocks", integer(a.blocks));
    s.write("embedding_dims", integer(a.embedding_dims));
    s.write("embedding", c10::IValue(a.embedding));
    s.write("fourier_scale", c10::IValue(a.fourier_scale));
    s.write("classes", integer(a.classes));
  }
  s.write("output", c10::IValue(std::string(to_string(spec.output))));
  s.write("sigma_data", c10::IValue(spec.sigma_data));
  archive.write("spec", s);
  torch::serialize::OutputArchive weights;
  network.save(weights);
  archive.write("weights", weights);
}

torch::serialize::InputArchive open_network_archive(const std::string& file, NetworkSpec& spec, torch::Device device) {
  if (!std::filesystem::exists(file)) throw std::runtime_error(fmt::format("{}: no such file", file));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file, device);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("{}: not a diffode network checkpoint (cannot be read as a LibTorch archive: {})", file,
                                         e.what_without_backtrace()));
  }
  c10::IValue value;
  if (!archive.try_read("format", value) || !value.isString() || value.toStringRef() != kFormat)
    throw std::runtime_error(fmt::format("{}: not a diffode network checkpoint (no '{}' marker; a TorchScript module is loaded with "
                                         "[model] kind = \"torchscript\")",
                                         file, kFormat));
  try {
    archive.read("version", value);
    const std::int64_t version = value.toInt();
    if (version < 1 || version > kVersion)
      throw std::runtime_error(fmt::format("checkpoint version {} (this program reads versions 1 to {})", version, kVersion));
    torch::serialize::InputArchive s;
    archive.read("spec", s);
    const auto integer = [&](const char* key) {
      s.read(key, value);
      return static_cast<Index>(value.toInt());
    };
    const auto number = [&](const char* key) {
      s.read(key, value);
      return value.toDouble();
    };
    const auto text = [&](const char* key) {
      s.read(key, value);
      return value.toStringRef();
    };
    spec.kind = version >= 2 ? text("kind") : std::string("mlp");
    if (spec.kind == "unet") {
      UnetArchitecture& u = spec.unet;
      u.channels = integer("channels");
      u.height = integer("height");
      u.width = integer("width");
      u.base_channels = integer("base_channels");
      torch::Tensor multipliers;
      s.read("channel_multipliers", multipliers);
      multipliers = multipliers.to(torch::kCPU, torch::kInt64).contiguous();
      u.channel_multipliers.assign(multipliers.data_ptr<std::int64_t>(), multipliers.data_ptr<std::int64_t>() + multipliers.numel());
      u.blocks_per_level = integer("blocks_per_level");
      s.read("attention", value);
      u.attention = value.toBool();
      u.attention_heads = integer("attention_heads");
      u.groups = integer("groups");
      u.embedding_dims = integer("embedding_dims");
      u.embedding = text("embedding");
      u.fourier_scale = number("fourier_scale");
      u.classes = integer("classes");
      spec.output = network_output_from_string(text("output"));
      spec.sigma_data = number("sigma_data");
      if (const std::string problem = unet_architecture_problem(u); !problem.empty()) throw std::runtime_error("U-Net: " + problem);
      return archive;
    }
    if (spec.kind != "mlp") throw std::runtime_error(fmt::format("network kind '{}' (mlp | unet)", spec.kind));
    MlpArchitecture& a = spec.architecture;
    a.dims = integer("dims");
    a.width = integer("width");
    a.blocks = integer("blocks");
    a.embedding_dims = integer("embedding_dims");
    a.embedding = text("embedding");
    a.fourier_scale = number("fourier_scale");
    a.classes = integer("classes");
    spec.output = network_output_from_string(text("output"));
    spec.sigma_data = number("sigma_data");
    check_architecture(a);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("{}: damaged diffode network checkpoint: {}", file, e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: {}", file, e.what()));
  }
  return archive;
}

void save_archive_atomically(torch::serialize::OutputArchive& archive, const std::string& file) {
  namespace fs = std::filesystem;
  const fs::path target(file);
  const fs::path temporary = target.string() + fmt::format(".tmp-{}", ::getpid());
  try {
    if (target.has_parent_path()) fs::create_directories(target.parent_path());
    archive.save_to(temporary.string());
    fs::rename(temporary, target);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw std::runtime_error(fmt::format("{}: cannot write the checkpoint: {}", file, e.what()));
  }
}

void save_network(const std::string& file, const NetworkSpec& spec, ScoreNetworkImpl& network) {
  torch::serialize::OutputArchive archive;
  write_network_archive(archive, spec, network);
  save_archive_atomically(archive, file);
}

namespace {

void load_weights_under(torch::nn::Module& module, torch::serialize::InputArchive& archive, const std::string& file,
                        const std::string& prefix) {
  const torch::NoGradGuard no_grad;
  const auto copy_into = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    torch::Tensor stored;
    if (!archive.try_read(name, stored, is_buffer))
      throw std::runtime_error(fmt::format("{}: damaged checkpoint: no tensor '{}{}'", file, prefix, name));
    if (stored.sizes() != target.sizes())
      throw std::runtime_error(fmt::format("{}: damaged checkpoint: '{}{}' is {}, the network's is {}", file, prefix, name,
                                           fmt::join(stored.sizes(), " x "), fmt::join(target.sizes(), " x ")));
    target.copy_(stored);  // converts the stored dtype (and device) to the module's
  };
  for (auto& parameter : module.named_parameters(/*recurse=*/false)) copy_into(parameter.key(), parameter.value(), false);
  for (auto& buffer : module.named_buffers(/*recurse=*/false)) copy_into(buffer.key(), buffer.value(), true);
  for (const auto& child : module.named_children()) {
    torch::serialize::InputArchive child_archive;
    if (!archive.try_read(child.key(), child_archive))
      throw std::runtime_error(fmt::format("{}: damaged checkpoint: no module '{}{}'", file, prefix, child.key()));
    load_weights_under(*child.value(), child_archive, file, prefix + child.key() + ".");
  }
}

}  // namespace

void load_weights(torch::nn::Module& module, torch::serialize::InputArchive& archive, const std::string& file) {
  load_weights_under(module, archive, file, "");
}

ScoreNetwork load_network(const std::string& file, NetworkSpec& spec) {
  torch::serialize::InputArchive archive = open_network_archive(file, spec);
  ScoreNetwork network = make_network(spec);
  try {
    torch::serialize::InputArchive weights;
    archive.read("weights", weights);
    load_weights(*network, weights, file);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("{}: damaged diffode network checkpoint (weights): {}", file, e.what_without_backtrace()));
  }
  return network;
}

}  // namespace diffode
