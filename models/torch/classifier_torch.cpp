// The image classifier, its training and feature networks (models/torch/classifier_torch.hpp).
//
// Architecture: a small convolutional network in the manner of LeCun et al. 1998 (conv, pool, conv,
// pool, fully connected), with GroupNorm (Wu & He 2018, arXiv:1803.08494; 8 groups) after each
// convolution so that a row's output does not depend on the other rows of its batch. Its
// penultimate layer is the feature vector, as Inception's pool3 layer is FID's (Heusel et al.
// 2017, arXiv:1706.08500).
//
// Training: cross-entropy, AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101), a linear warm-up
// then a cosine decay of the learning rate to 0 at the last step (Loshchilov & Hutter 2017,
// SGDR, arXiv:1608.03983, without restarts). Reproducible as the score networks' training is: the
// initial weights from torch::manual_seed(seed), step s's data from TrainingData(s), nothing else
// random; a checkpoint holds the weights, AdamW's state, the step and the loss history, so that a
// resumed run takes the steps the uninterrupted one would (bitwise on the CPU, same threads).
#include "models/torch/classifier_torch.hpp"

#include "models/torch/network_model_torch.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "models/torch/training_loop_torch.hpp"

#include <fmt/format.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <numbers>
#include <stdexcept>

namespace diffode {
namespace {

constexpr const char* kFormat = "diffode-classifier";
constexpr std::int64_t kVersion = 1;
constexpr std::int64_t kGroups = 8;

torch::Dtype dtype_from(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  throw std::invalid_argument(fmt::format("dtype '{}' (float32 | float64)", name));
}

torch::Tensor from_host(const double* data, std::vector<std::int64_t> sizes) {
  return torch::from_blob(const_cast<double*>(data), sizes, torch::TensorOptions().dtype(torch::kFloat64)).clone();
}

Batch to_host(torch::Tensor t) {
  t = t.to(torch::kCPU, torch::kFloat64).contiguous();
  if (t.dim() == 1) t = t.reshape({t.size(0), 1});
  if (t.dim() > 2) t = t.flatten(1);
  Batch out(t.size(0), t.size(1));
  std::copy(t.data_ptr<double>(), t.data_ptr<double>() + t.numel(), out.data());
  return out;
}

void write_architecture(torch::serialize::OutputArchive& archive, const ClassifierArchitecture& a) {
  torch::serialize::OutputArchive arch;
  for (const auto& [key, value] : {std::pair<const char*, Index>{"channels", a.channels}, {"height", a.height}, {"width", a.width},
                                   {"classes", a.classes}, {"conv1", a.conv1}, {"conv2", a.conv2}, {"features", a.features}})
    arch.write(key, c10::IValue(static_cast<std::int64_t>(value)));
  arch.write("name", c10::IValue(a.name));
  archive.write("architecture", arch);
}

torch::serialize::InputArchive open_classifier_archive(const std::string& file, ClassifierArchitecture& a) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(file, error)) throw std::runtime_error(fmt::format("{}: no such file", file));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file, torch::kCPU);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: not a diffode classifier checkpoint (cannot be read as a LibTorch archive)", file));
  }
  c10::IValue value;
  if (!archive.try_read("format", value) || !value.isString() || value.toStringRef() != kFormat)
    throw std::runtime_error(fmt::format("{}: not a diffode classifier checkpoint (no format = \"{}\")", file, kFormat));
  if (!archive.try_read("version", value) || !value.isInt() || value.toInt() != kVersion)
    throw std::runtime_error(fmt::format("{}: classifier checkpoint of another version (this program reads version {})", file, kVersion));
  try {
    torch::serialize::InputArchive arch;
    archive.read("architecture", arch);
    const auto integer = [&](const char* key) {
      arch.read(key, value);
      return static_cast<Index>(value.toInt());
    };
    a.channels = integer("channels"), a.height = integer("height"), a.width = integer("width"), a.classes = integer("classes");
    a.conv1 = integer("conv1"), a.conv2 = integer("conv2"), a.features = integer("features");
    arch.read("name", value);
    a.name = value.toStringRef();
    check_classifier_architecture(a);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: damaged classifier checkpoint (architecture): {}", file, e.what()));
  }
  return archive;
}

void save_atomically(torch::serialize::OutputArchive& archive, const std::string& file) { save_archive_atomically(archive, file); }

// The settings a resumed run must share with the run it continues. Doubles in hexadecimal.
std::string resume_settings(const ClassifierTrainingSpec& s) {
  const ClassifierArchitecture& a = s.architecture;
  return fmt::format("shape={}x{}x{} classes={} conv1={} conv2={} features={} name={} seed={} steps={} batch_size={} learning_rate={:a} "
                     "weight_decay={:a} warmup_steps={} dtype={} device={} threads={}",
                     a.channels, a.height, a.width, a.classes, a.conv1, a.conv2, a.features, a.name, s.seed, s.steps, s.batch_size,
                     s.learning_rate, s.weight_decay, s.warmup_steps, s.dtype, s.device, s.threads);
}

struct ClassifierTrainer {
  const ClassifierTrainingSpec& spec;
  torch::Device device;
  torch::Dtype dtype;
  ImageClassifier network;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::int64_t step = 0;
  std::vector<TrainingProgress> history;
  double seconds_before = 0;

  explicit ClassifierTrainer(const ClassifierTrainingSpec& s)
      : spec(s), device(s.device), dtype(dtype_from(s.dtype)), network(s.architecture) {
    network->to(device, dtype);
    optimizer = std::make_unique<torch::optim::AdamW>(network->parameters(),
                                                      torch::optim::AdamWOptions(spec.learning_rate).weight_decay(spec.weight_decay));
  }

  double learning_rate_at(std::int64_t s) const {
    const double warm = spec.warmup_steps > 0 ? std::min(1.0, static_cast<double>(s + 1) / static_cast<double>(spec.warmup_steps)) : 1.0;
    const double progress = static_cast<double>(s) / static_cast<double>(std::max<std::int64_t>(spec.steps, 1));
    return spec.learning_rate * warm * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }

  double take_step() {
    const TrainingBatch batch = spec.data(static_cast<std::uint64_t>(step));
    const ClassifierArchitecture& a = spec.architecture;
    const std::int64_t n = batch.x0.rows();
    if (n < 1 || batch.x0.cols() != a.channels * a.height * a.width)
      throw std::invalid_argument(fmt::format("classifier training: step {}'s data are {} x {}; the network takes {} x {} x {} = {} values", step,
                                              n, batch.x0.cols(), a.channels, a.height, a.width, a.channels * a.height * a.width));
    if (static_cast<std::int64_t>(batch.labels.size()) != n) throw std::invalid_argument("classifier training: one label per row is required");
    for (std::int64_t label : batch.labels)
      if (label < 0 || label >= a.classes) throw std::invalid_argument(fmt::format("classifier training: label {} outside 0..{}", label, a.classes - 1));
    const auto options = torch::TensorOptions().dtype(dtype).device(device);
    const torch::Tensor x = from_host(batch.x0.data(), {n, a.channels, a.height, a.width}).to(options);
    const torch::Tensor labels = torch::tensor(batch.labels, torch::TensorOptions().dtype(torch::kInt64)).to(device);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(network->forward(x), labels);
    optimizer->zero_grad();
    loss.backward();
    const double lr = learning_rate_at(step);
    for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer->step();
    return loss.item<double>();
  }

  void save(const std::string& file) {
    torch::serialize::OutputArchive archive, weights, training, adam;
    archive.write("format", c10::IValue(std::string(kFormat)));
    archive.write("version", c10::IValue(kVersion));
    write_architecture(archive, spec.architecture);
    network->save(weights);
    archive.write("weights", weights);
    training.write("settings", c10::IValue(resume_settings(spec)));
    training.write("step", c10::IValue(step));
    optimizer->save(adam);
    training.write("optimizer", adam);
    write_history_tensors(training, history);
    archive.write("training", training);
    save_atomically(archive, file);
  }

  void resume(const std::string& file) {
    ClassifierArchitecture saved;
    torch::serialize::InputArchive archive = open_classifier_archive(file, saved);
    torch::serialize::InputArchive training;
    if (!archive.try_read("training", training))
      throw std::invalid_argument(fmt::format("{}: holds weights only (no training state to resume from)", file));
    c10::IValue value;
    training.read("settings", value);
    const std::string now = resume_settings(spec);
    if (value.toStringRef() != now)
      throw std::invalid_argument(fmt::format("{}: cannot resume with other settings (checkpoint: {}; now: {})", file, value.toStringRef(), now));
    try {
      torch::serialize::InputArchive weights, adam;
      archive.read("weights", weights);
      network->load(weights);
      network->to(device, dtype);
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
};

// Rows [N, D] -> the input the network is handed: input_scale * x + input_shift, reshaped to the
// spec's shape, in its dtype and device.
torch::Tensor network_input(const Batch& rows, const std::vector<Index>& shape, double scale, double shift, torch::Dtype dtype,
                            torch::Device device) {
  std::vector<std::int64_t> sizes{rows.rows()};
  if (shape.empty())
    sizes.push_back(rows.cols());
  else
    for (Index s : shape) sizes.push_back(s);
  torch::Tensor x = from_host(rows.data(), {rows.rows(), rows.cols()});
  if (scale != 1.0 || shift != 0.0) x = x * scale + shift;
  return x.reshape(sizes).to(torch::TensorOptions().dtype(dtype).device(device));
}

Index product(const std::vector<Index>& shape) {
  Index p = 1;
  for (Index s : shape) p *= s;
  return p;
}

std::string shape_text(const std::vector<Index>& shape) {
  std::string out;
  for (Index s : shape) out += (out.empty() ? "" : ",") + std::to_string(s);
  return out.empty() ? "rows as stored" : out;
}

// Features in chunks of runtime.batch_size rows (0: all at once), without gradients.
template <class Call>
Batch chunked(const Batch& rows, Index batch_size, Call call) {
  torch::NoGradGuard no_grad;
  const Index n = rows.rows(), chunk = batch_size > 0 ? batch_size : std::max<Index>(n, 1);
  Batch out;
  for (Index first = 0; first < n; first += chunk) {
    const Index count = std::min(chunk, n - first);
    const Batch part = call(Batch(rows.middleRows(first, count)));
    if (first == 0) out.resize(n, part.cols());
    out.middleRows(first, count) = part;
  }
  return out;
}

class ClassifierFeatures final : public FeatureNetwork {
 public:
  ClassifierFeatures(const FeatureSpec& spec, const NetworkRuntime& runtime)
      : spec_(spec), runtime_(runtime), device_(runtime.device), dtype_(dtype_from(spec.dtype)) {
    at::set_num_threads(std::max(1, runtime.threads));
    network_ = load_classifier(spec.file, architecture_);
    const std::vector<Index> own{architecture_.channels, architecture_.height, architecture_.width};
    if (!spec.input_shape.empty() && spec.input_shape != own)
      throw std::runtime_error(fmt::format("{}: a classifier of {} images, asked for {}", spec.file, shape_text(own), shape_text(spec.input_shape)));
    spec_.input_shape = own;
    network_->to(device_, dtype_);
    network_->eval();
    sha256_ = file_sha256(spec.file);
  }
  Index input_dims() const override { return product(spec_.input_shape); }
  Index feature_dims() const override { return architecture_.features; }
  Index classes() const override { return architecture_.classes; }
  std::string name() const override { return architecture_.name; }
  std::string sha256() const override { return sha256_; }
  std::string description() const override {
    const ClassifierArchitecture& a = architecture_;
    return fmt::format("classifier {} (sha256 {}): {} of {}x{}x{} images, conv {} and {}, {} features, {} classes; input {} x + {}", spec_.file,
                       sha256_, a.name, a.channels, a.height, a.width, a.conv1, a.conv2, a.features, a.classes, spec_.input_scale,
                       spec_.input_shift);
  }
  Batch features(const Batch& rows) const override {
    return chunked(rows, runtime_.batch_size, [&](const Batch& part) { return to_host(network_->features(input(part))); });
  }
  Batch logits(const Batch& rows) const override {
    return chunked(rows, runtime_.batch_size, [&](const Batch& part) { return to_host(network_->forward(input(part))); });
  }

 private:
  torch::Tensor input(const Batch& rows) const {
    if (rows.cols() != input_dims())
      throw std::invalid_argument(fmt::format("{}: rows of {} values for a classifier of {}x{}x{} = {}", spec_.file, rows.cols(),
                                              architecture_.channels, architecture_.height, architecture_.width, input_dims()));
    return network_input(rows, spec_.input_shape, spec_.input_scale, spec_.input_shift, dtype_, device_);
  }
  FeatureSpec spec_;
  NetworkRuntime runtime_;
  torch::Device device_;
  torch::Dtype dtype_;
  ClassifierArchitecture architecture_;
  mutable ImageClassifier network_{nullptr};
  std::string sha256_;
};

class TorchScriptFeatures final : public FeatureNetwork {
 public:
  TorchScriptFeatures(const FeatureSpec& spec, const NetworkRuntime& runtime)
      : spec_(spec), runtime_(runtime), device_(runtime.device), dtype_(dtype_from(spec.dtype)) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(spec.file, error)) throw std::runtime_error(fmt::format("{}: no such file", spec.file));
    for (Index s : spec.input_shape)
      if (s < 1) throw std::runtime_error(fmt::format("{}: input shape {}: sizes must be positive", spec.file, shape_text(spec.input_shape)));
    at::set_num_threads(std::max(1, runtime.threads));
    try {
      module_ = torch::jit::load(spec.file, device_);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: not a TorchScript module torch::jit::load can read", spec.file));
    }
    module_.eval();
    sha256_ = file_sha256(spec.file);
    if (!spec.input_shape.empty()) {
      // A dry run on two rows of zeros: the module's output size, and its errors, before any data.
      const Batch zeros = Batch::Zero(2, input_dims());
      try {
        feature_dims_ = features(zeros).cols();
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("{}: a dry run on input [2, {}] failed: {}", spec.file, shape_text(spec.input_shape), e.what()));
      }
    }
  }
  Index input_dims() const override { return spec_.input_shape.empty() ? 0 : product(spec_.input_shape); }
  Index feature_dims() const override { return feature_dims_; }
  Index classes() const override { return 0; }
  std::string name() const override { return std::filesystem::path(spec_.file).stem().string(); }
  std::string sha256() const override { return sha256_; }
  std::string description() const override {
    return fmt::format("torchscript {} (sha256 {}): input {} ({}), {} x + {}; {} features", spec_.file, sha256_, shape_text(spec_.input_shape),
                       spec_.dtype, spec_.input_scale, spec_.input_shift, feature_dims_);
  }
  Batch features(const Batch& rows) const override {
    if (input_dims() > 0 && rows.cols() != input_dims())
      throw std::invalid_argument(fmt::format("{}: rows of {} values for an input of shape {}", spec_.file, rows.cols(), shape_text(spec_.input_shape)));
    return chunked(rows, runtime_.batch_size, [&](const Batch& part) {
      const torch::Tensor x = network_input(part, spec_.input_shape, spec_.input_scale, spec_.input_shift, dtype_, device_);
      c10::IValue out;
      try {
        out = module_.forward({x});
      } catch (const std::exception& e) {
        const std::string what = e.what();
        throw std::runtime_error(fmt::format("{}: {}", spec_.file, what.substr(0, what.find('\n'))));
      }
      if (!out.isTensor()) throw std::runtime_error(fmt::format("{}: the module returned no tensor", spec_.file));
      const torch::Tensor t = out.toTensor();
      if (t.dim() < 2 || t.size(0) != part.rows())
        throw std::runtime_error(fmt::format("{}: the module returned shape {} for {} rows (expected [N, F, ...])", spec_.file,
                                             fmt::format("{}", fmt::join(t.sizes(), ",")), part.rows()));
      return to_host(t);
    });
  }
  Batch logits(const Batch&) const override { throw std::logic_error(fmt::format("{}: a TorchScript feature module has no logits", spec_.file)); }

 private:
  FeatureSpec spec_;
  NetworkRuntime runtime_;
  torch::Device device_;
  torch::Dtype dtype_;
  mutable torch::jit::Module module_;
  std::string sha256_;
  Index feature_dims_ = 0;
};

}  // namespace

void check_classifier_architecture(const ClassifierArchitecture& a) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("classifier: " + what); };
  if (a.channels < 1 || a.height < 4 || a.width < 4) fail(fmt::format("images of {}x{}x{}: at least 1x4x4", a.channels, a.height, a.width));
  if (a.classes < 2) fail(fmt::format("classes {} < 2", a.classes));
  if (a.conv1 < kGroups || a.conv1 % kGroups != 0 || a.conv2 < kGroups || a.conv2 % kGroups != 0)
    fail(fmt::format("conv1 {} and conv2 {}: positive multiples of {} (GroupNorm's groups)", a.conv1, a.conv2, kGroups));
  if (a.features < 1) fail(fmt::format("features {} < 1", a.features));
  if (a.name.empty()) fail("an empty name");
}

ImageClassifierImpl::ImageClassifierImpl(const ClassifierArchitecture& a) : architecture_(a) {
  check_classifier_architecture(a);
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(a.channels, a.conv1, 3).padding(1)));
  norm1_ = register_module("norm1", torch::nn::GroupNorm(kGroups, a.conv1));
  conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(a.conv1, a.conv2, 3).padding(1)));
  norm2_ = register_module("norm2", torch::nn::GroupNorm(kGroups, a.conv2));
  penultimate_ = register_module("penultimate", torch::nn::Linear(a.conv2 * (a.height / 4) * (a.width / 4), a.features));
  logits_ = register_module("logits", torch::nn::Linear(a.features, a.classes));
}

torch::Tensor ImageClassifierImpl::features(const torch::Tensor& images) {
  torch::Tensor h = torch::max_pool2d(torch::relu(norm1_->forward(conv1_->forward(images))), 2);
  h = torch::max_pool2d(torch::relu(norm2_->forward(conv2_->forward(h))), 2);
  return penultimate_->forward(h.flatten(1));
}

torch::Tensor ImageClassifierImpl::head(const torch::Tensor& features) { return logits_->forward(torch::relu(features)); }

ImageClassifier load_classifier(const std::string& file, ClassifierArchitecture& architecture) {
  torch::serialize::InputArchive archive = open_classifier_archive(file, architecture);
  ImageClassifier network(architecture);
  try {
    torch::serialize::InputArchive weights;
    archive.read("weights", weights);
    load_weights(*network, weights, file);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("{}: damaged classifier checkpoint (weights): {}", file, e.what_without_backtrace()));
  }
  return network;
}

TrainingOutcome train_classifier(const ClassifierTrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                                 const std::function<bool()>& stop) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("classifier training: " + what); };
  check_classifier_architecture(spec.architecture);
  if (!spec.data) fail("no data");
  if (spec.steps < 1) fail(fmt::format("steps {} < 1", spec.steps));
  if (spec.batch_size < 1) fail(fmt::format("batch_size {} < 1", spec.batch_size));
  if (!(spec.learning_rate > 0) || !std::isfinite(spec.learning_rate)) fail(fmt::format("learning_rate {} must be positive", spec.learning_rate));
  if (!(spec.weight_decay >= 0)) fail(fmt::format("weight_decay {} < 0", spec.weight_decay));
  if (spec.warmup_steps < 0 || spec.checkpoint_every < 0) fail("warmup_steps and checkpoint_every must be >= 0");
  if (spec.threads < 1) fail(fmt::format("threads {} < 1", spec.threads));
  return run_training_loop<ClassifierTrainer>(spec, "classifier training", progress, stop);
}

std::shared_ptr<const FeatureNetwork> load_feature_network(const FeatureSpec& spec, const NetworkRuntime& runtime) {
  const torch::Device device(runtime.device);
  if (device.is_cuda() && !torch::cuda::is_available())
    throw std::runtime_error(fmt::format("{}: device '{}' but no CUDA device is available", spec.file, runtime.device));
  if (spec.kind == "classifier") return std::make_shared<ClassifierFeatures>(spec, runtime);
  if (spec.kind == "torchscript") return std::make_shared<TorchScriptFeatures>(spec, runtime);
  throw std::runtime_error(fmt::format("feature network kind '{}' (classifier | torchscript)", spec.kind));
}

}  // namespace diffode
