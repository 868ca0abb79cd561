// Networks as models (models/network.hpp): a diffode checkpoint or a user's TorchScript module behind
// the Predictor<Batch> interface every sampler uses.
//
// The samplers' state is an Eigen batch in host memory, so each evaluation copies its rows to the
// network's device and dtype and the prediction back (zero-copy on the CPU in float64: the module
// reads the batch's own memory), in chunks of NetworkRuntime::batch_size rows. On CUDA that is one
// host->device and one device->host copy of the batch per evaluation; a solve that keeps its state
// on the device (solvers/diffusion/device_solve_torch.hpp) uses the tensor predictors of the same models
// (make_tensor_predictor), which run the same operations on tensors already on the device.
//
// Rows are independent: a row's prediction depends on its own x, alpha and sigma only, never on
// which chunk it falls in, so a run's samples do not depend on batch_size (tested bitwise on the CPU
// in float64). LibTorch's intra-op thread count is process-wide: a model sets it at load to
// runtime.threads (0 leaves the caller's setting), and every network call of the process then uses
// it; the samplers' own threads run separate blocks with separate predictors.
#include "models/torch/network_model_torch.hpp"

#include "core/state_torch.hpp"
#include "models/torch/score_mlp_torch.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>

namespace diffode {
namespace {

// SHA-256 (FIPS 180-4) of a file, as lowercase hex: results files name the exact weights they used.
class Sha256 {
 public:
  void update(const unsigned char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      block_[fill_++] = data[i];
      if (fill_ == 64) {
        compress();
        fill_ = 0;
      }
    }
    bits_ += 8 * static_cast<std::uint64_t>(n);
  }

  std::string hex() {
    const std::uint64_t bits = bits_;
    const unsigned char one = 0x80, zero = 0;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    std::array<unsigned char, 8> length{};
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(length.data(), length.size());
    std::string out;
    for (std::uint32_t word : h_) out += fmt::format("{:08x}", word);
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    static constexpr std::array<std::uint32_t, 64> k{
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
        0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
        0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
        0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
        0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
        0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::array<std::uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t{block_[4 * i]} << 24) | (std::uint32_t{block_[4 * i + 1]} << 16) | (std::uint32_t{block_[4 * i + 2]} << 8) |
             std::uint32_t{block_[4 * i + 3]};
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = h_;
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    const std::array<std::uint32_t, 8> add{a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) h_[i] += add[i];
  }

  std::array<std::uint32_t, 8> h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  std::size_t fill_ = 0;
  std::uint64_t bits_ = 0;
};

}  // namespace

std::string file_sha256(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open", file));
  Sha256 hash;
  std::array<char, 1 << 16> buffer{};
  while (in.read(buffer.data(), buffer.size()) || in.gcount() > 0)
    hash.update(reinterpret_cast<const unsigned char*>(buffer.data()), static_cast<std::size_t>(in.gcount()));
  return hash.hex();
}

namespace {

void require_file(const std::string& file) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(file, error)) throw std::runtime_error(fmt::format("{}: no such file", file));
}

torch::Device parse_device(const std::string& name) {
  std::optional<torch::Device> device;
  try {
    device.emplace(name);
  } catch (const std::exception&) {
    throw std::runtime_error(fmt::format("device '{}': expected \"cpu\", \"cuda\" or \"cuda:N\"", name));
  }
  if (device->is_cuda()) {
    if (!torch::cuda::is_available())
      throw std::runtime_error(fmt::format("device '{}': LibTorch sees no CUDA device (a CPU-only LibTorch, or no GPU here)", name));
    if (device->has_index() && device->index() >= static_cast<int>(torch::cuda::device_count()))
      throw std::runtime_error(fmt::format("device '{}': only {} CUDA devices", name, torch::cuda::device_count()));
  } else if (!device->is_cpu()) {
    throw std::runtime_error(fmt::format("device '{}': expected \"cpu\", \"cuda\" or \"cuda:N\"", name));
  }
  return *device;
}

torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float64") return torch::kFloat64;
  if (name == "float32") return torch::kFloat32;
  throw std::runtime_error(fmt::format("dtype '{}': expected \"float32\" or \"float64\"", name));
}

void apply_runtime(const NetworkRuntime& runtime) {
  if (runtime.batch_size < 0) throw std::runtime_error(fmt::format("batch_size {}: must be 0 (whole blocks) or positive", runtime.batch_size));
  if (runtime.threads < 0) throw std::runtime_error(fmt::format("threads {}: must be 0 (leave LibTorch's setting) or positive", runtime.threads));
  if (runtime.threads > 0) at::set_num_threads(runtime.threads);
}

// Rows [begin, begin + rows) of a host batch as a tensor on `device` in `dtype`: the batch's own
// memory when it already is a CPU float64 tensor (the module only reads it).
torch::Tensor rows_to_tensor(const double* data, Index rows, Index cols, torch::Device device, torch::Dtype dtype) {
  const torch::Tensor host = torch::from_blob(const_cast<double*>(data), {rows, cols}, torch::kFloat64);
  return host.to(device, dtype);
}

torch::Tensor values_to_tensor(const double* data, Index n, torch::Device device, torch::Dtype dtype) {
  const torch::Tensor host = torch::from_blob(const_cast<double*>(data), {n}, torch::kFloat64);
  return host.to(device, dtype);
}

// Copies an [rows, cols] prediction back into the host batch's rows.
void tensor_to_rows(const torch::Tensor& prediction, double* out, Index rows, Index cols) {
  const torch::Tensor host = prediction.to(torch::kCPU, torch::kFloat64).contiguous();
  std::memcpy(out, host.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(rows * cols));
}

Index chunk_rows(const NetworkRuntime& runtime, Index rows) { return runtime.batch_size > 0 ? std::min(runtime.batch_size, rows) : rows; }

// ---------------------------------------------------------------------------------------------
// Score Jacobian products by reverse-mode autograd (ScoreJacobian, models/network.hpp). A chunk's
// rows are replicated once per probe (replica k in rows k * rows .. (k + 1) * rows - 1), the score
// is computed once on all replicas with the input requiring its gradient, and one backward pass
// with replica k's rows weighted by probe k gives every v_k^T J_s: rows never mix, so the gradient
// of sum_rows v . s with respect to a row is that row's own product. The exact divergence is the
// same with the D unit vectors as probes, each row's divergence the sum of its D diagonal entries.
// Only the input's gradient is asked for (torch::autograd::grad), so nothing accumulates in the
// shared weights' .grad and several threads may do this at once.

// The score of rows `begin .. begin + rows - 1` of the call, replicated `copies` times, as a
// differentiable function of those replicas x [copies * rows, D].
using ScoreOfReplicas = std::function<torch::Tensor(const torch::Tensor& x, Index begin, Index rows, Index copies)>;

// `probes` empty and `divergence` given: the exact divergence; else one product per probe.
void score_jacobian_products(const Batch& x, Index chunk, torch::Device device, torch::Dtype dtype, const ScoreOfReplicas& score_of,
                             std::span<const Batch> probes, Batch& score, std::vector<Batch>* vjps, PerSample* divergence) {
  const Index n = x.rows(), d = x.cols();
  const Index copies = divergence != nullptr ? d : static_cast<Index>(probes.size());
  for (const Batch& v : probes)
    if (v.rows() != n || v.cols() != d)
      throw std::invalid_argument(fmt::format("score_and_vjps: a probe of {} x {} for a batch of {} x {}", v.rows(), v.cols(), n, d));
  score.resize(n, d);
  if (vjps != nullptr) vjps->assign(probes.size(), Batch(n, d));
  if (divergence != nullptr) divergence->resize(n);
  const torch::AutoGradMode grad_mode(true);
  // The replicas of a chunk of `rows`: at most batch_size rows per network call when it is set.
  const Index per_call = std::max<Index>(1, chunk / std::max<Index>(1, copies));
  for (Index begin = 0; begin < n; begin += per_call) {
    const Index rows = std::min(per_call, n - begin);
    const torch::Tensor xs = rows_to_tensor(x.data() + begin * d, rows, d, device, dtype);
    if (copies == 0) {
      const torch::NoGradGuard no_grad;
      tensor_to_rows(score_of(xs, begin, rows, 1), score.data() + begin * d, rows, d);
      continue;
    }
    const torch::Tensor replicas = xs.detach().repeat({copies, 1}).requires_grad_(true);
    const torch::Tensor s = score_of(replicas, begin, rows, copies);
    tensor_to_rows(s.slice(0, 0, rows).detach(), score.data() + begin * d, rows, d);
    torch::Tensor weights;
    if (divergence != nullptr) {
      weights = torch::eye(d, torch::TensorOptions().dtype(dtype).device(device)).repeat_interleave(rows, 0);
    } else {
      std::vector<torch::Tensor> parts;
      for (const Batch& v : probes) parts.push_back(rows_to_tensor(v.data() + begin * d, rows, d, device, dtype));
      weights = torch::cat(parts, 0);
    }
    const torch::Tensor products = torch::autograd::grad({s}, {replicas}, {weights}).front();
    if (divergence != nullptr) {
      // Replica k's row i holds e_k^T J_s; its k-th entry is J_s[k, k]. Summed over k in order.
      const torch::Tensor diagonal = (products * weights).sum(1).reshape({d, rows}).sum(0);
      const torch::Tensor host = diagonal.to(torch::kCPU, torch::kFloat64).contiguous();
      std::memcpy(divergence->data() + begin, host.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(rows));
    } else {
      for (Index k = 0; k < copies; ++k)
        tensor_to_rows(products.slice(0, k * rows, (k + 1) * rows), (*vjps)[k].data() + begin * d, rows, d);
    }
  }
}

// A ScoreJacobian of either model: score_of as above, its per-call chunk, device and dtype.
template <class Model>
class AutogradScoreJacobian final : public ScoreJacobian {
 public:
  AutogradScoreJacobian(std::shared_ptr<const Model> model, int label) : model_(std::move(model)), label_(label) {}

  void score_and_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& score,
                            PerSample& divergence) const override {
    score_jacobian_products(x, model_->rows_per_call(x.rows()), model_->device(), model_->dtype(), model_->score_of(x, alpha, sigma, label_),
                            {}, score, nullptr, &divergence);
  }
  void score_and_vjps(const Batch& x, const PerSample& alpha, const PerSample& sigma, std::span<const Batch> probes, Batch& score,
                      std::vector<Batch>& vjps) const override {
    score_jacobian_products(x, model_->rows_per_call(x.rows()), model_->device(), model_->dtype(), model_->score_of(x, alpha, sigma, label_),
                            probes, score, &vjps, nullptr);
  }

 private:
  std::shared_ptr<const Model> model_;
  int label_;
};

// Per-row values [rows] repeated `copies` times, on the device.
torch::Tensor repeated(const Eigen::ArrayXd& values, Index copies, torch::Device device, torch::Dtype dtype) {
  return values_to_tensor(values.data(), values.size(), device, dtype).repeat({copies});
}

// ---------------------------------------------------------------------------------------------
// Checkpoints of models/torch/score_mlp_torch.hpp: the network is conditioned on sigma~ and reads
// x through c_in (models/network.hpp), so it serves any process and takes (alpha, sigma) as given.

class CheckpointModel;

class CheckpointPredictor final : public Predictor<Batch> {
 public:
  CheckpointPredictor(std::shared_ptr<const CheckpointModel> model, int label) : model_(std::move(model)), label_(label) {}
  Parameterization native() const override;

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override;

 private:
  std::shared_ptr<const CheckpointModel> model_;
  int label_;
};

class CheckpointModel final : public NetworkModel, public std::enable_shared_from_this<CheckpointModel> {
 public:
  CheckpointModel(const std::string& file, const NetworkRuntime& runtime)
      : file_(file), runtime_(runtime), device_(parse_device(runtime.device)), dtype_(parse_dtype(runtime.dtype)) {
    require_file(file);
    apply_runtime(runtime);
    network_ = load_network(file, spec_);
    network_->to(device_, dtype_);
    network_->eval();
    native_ = native_parameterization(spec_.output);
    // A flow velocity becomes x0 or eps only with alpha' and sigma', which a predictor is not handed.
    if (native_ == Parameterization::flow)
      throw std::runtime_error(fmt::format("{}: a network that outputs a flow velocity cannot be sampled through this interface (it is handed "
                                           "alpha and sigma, not their time derivatives); train it with another output",
                                           file));
    sha256_ = file_sha256(file);
  }

  Index dims() const override { return spec_.dims(); }
  Index classes() const override { return spec_.classes(); }
  std::string description() const override {
    return fmt::format("network {} (sha256 {}): {}; {} {}, batch_size {}, state {}", file_, sha256_, describe(spec_), runtime_.device,
                       runtime_.dtype, runtime_.batch_size, runtime_.state);
  }
  std::unique_ptr<Predictor<Batch>> make_predictor(int label) const override {
    if (label >= 0 && label >= classes())
      throw std::invalid_argument(fmt::format("{}: class {} of a network with {} classes", file_, label, classes()));
    return std::make_unique<CheckpointPredictor>(shared_from_this(), label);
  }
  std::unique_ptr<ScoreJacobian> make_score_jacobian(int label) const override {
    if (label >= 0 && label >= classes())
      throw std::invalid_argument(fmt::format("{}: class {} of a network with {} classes", file_, label, classes()));
    return std::make_unique<AutogradScoreJacobian<CheckpointModel>>(shared_from_this(), label);
  }

  Parameterization native() const { return native_; }
  torch::Device device() const { return device_; }
  torch::Dtype dtype() const { return dtype_; }
  Index rows_per_call(Index rows) const { return chunk_rows(runtime_, rows); }

  // The score s = on_x x + on_prediction F of the native prediction F (models/predictor.hpp's
  // conversion), as a function of the replicas of rows begin.. of x.
  ScoreOfReplicas score_of(const Batch& x, const PerSample& alpha, const PerSample& sigma, int label) const {
    if (x.cols() != dims()) throw std::invalid_argument(fmt::format("{}: a batch of {} dimensions for a network of {}", file_, x.cols(), dims()));
    return [this, &alpha, &sigma, label](const torch::Tensor& xs, Index begin, Index rows, Index copies) {
      const Eigen::ArrayXd a = alpha.segment(begin, rows), s = sigma.segment(begin, rows);
      const auto map = conversion(native_, Parameterization::score, a, s);
      torch::Tensor labels;
      if (classes() > 0)
        labels = torch::full({rows * copies}, label < 0 ? classes() : label, torch::TensorOptions().dtype(torch::kInt64).device(device_));
      const torch::Tensor prediction =
          conditioned_prediction(network_, spec_, xs, repeated(a, copies, device_, dtype_), repeated(s, copies, device_, dtype_), labels);
      return repeated(map.on_x, copies, device_, dtype_).unsqueeze(1) * xs +
             repeated(map.on_prediction, copies, device_, dtype_).unsqueeze(1) * prediction;
    };
  }

  // evaluate() on a state that is already a tensor on the network's device (the device-resident
  // solve, solvers/diffusion/device_solve_torch.hpp): the same chunks and the same operations, without
  // the copies from and to host memory. x: [N, D] float64; alpha, sigma: [N] float64; out: [N, D]
  // float64 on the device.
  void evaluate_tensor(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& sigma, int label, torch::Tensor& out) const {
    if (x.dim() != 2 || x.size(1) != dims())
      throw std::invalid_argument(fmt::format("{}: a state of shape [{}] for a network of {} dimensions", file_, fmt::join(x.sizes(), ", "), dims()));
    const Index n = x.size(0);
    const torch::NoGradGuard no_grad;
    const Index chunk = std::max<Index>(1, chunk_rows(runtime_, n));
    const torch::Tensor xs = x.to(device_, dtype_), a = alpha.to(device_, dtype_), s = sigma.to(device_, dtype_);
    std::vector<torch::Tensor> parts;
    for (Index begin = 0; begin < n; begin += chunk) {
      const Index end = std::min(n, begin + chunk);
      torch::Tensor labels;
      if (classes() > 0)
        labels = torch::full({end - begin}, label < 0 ? classes() : label, torch::TensorOptions().dtype(torch::kInt64).device(device_));
      parts.push_back(conditioned_prediction(network_, spec_, xs.slice(0, begin, end), a.slice(0, begin, end), s.slice(0, begin, end), labels));
    }
    out = (parts.size() == 1 ? parts.front() : torch::cat(parts, 0)).to(torch::kFloat64);
  }

  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, int label, Batch& out) const {
    const Index n = x.rows(), d = x.cols();
    if (d != dims()) throw std::invalid_argument(fmt::format("{}: a batch of {} dimensions for a network of {}", file_, d, dims()));
    out.resize(n, d);
    const torch::NoGradGuard no_grad;
    const Index chunk = chunk_rows(runtime_, n);
    for (Index begin = 0; begin < n; begin += chunk) {
      const Index rows = std::min(chunk, n - begin);
      const torch::Tensor xs = rows_to_tensor(x.data() + begin * d, rows, d, device_, dtype_);
      const torch::Tensor a = values_to_tensor(alpha.data() + begin, rows, device_, dtype_);
      const torch::Tensor s = values_to_tensor(sigma.data() + begin, rows, device_, dtype_);
      torch::Tensor labels;
      if (classes() > 0)
        labels = torch::full({rows}, label < 0 ? classes() : label, torch::TensorOptions().dtype(torch::kInt64).device(device_));
      const torch::Tensor prediction = conditioned_prediction(network_, spec_, xs, a, s, labels);
      tensor_to_rows(prediction, out.data() + begin * d, rows, d);
    }
  }

 private:
  std::string file_;
  NetworkRuntime runtime_;
  torch::Device device_;
  torch::Dtype dtype_;
  NetworkSpec spec_;
  // Inference only reads the weights, so the predictors of several threads share them.
  mutable ScoreNetwork network_;
  Parameterization native_ = Parameterization::x0;
  std::string sha256_;
};

Parameterization CheckpointPredictor::native() const { return model_->native(); }
void CheckpointPredictor::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  model_->evaluate(x, alpha, sigma, label_, out);
}

// A checkpoint's predictor on device-resident torch state (make_tensor_predictor).
class CheckpointTensorPredictor final : public Predictor<torch::Tensor> {
 public:
  CheckpointTensorPredictor(std::shared_ptr<const CheckpointModel> model, int label) : model_(std::move(model)), label_(label) {}
  Parameterization native() const override { return model_->native(); }

 protected:
  void evaluate(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& sigma, torch::Tensor& out) const override {
    model_->evaluate_tensor(x, alpha, sigma, label_, out);
  }

 private:
  std::shared_ptr<const CheckpointModel> model_;
  int label_;
};

// ---------------------------------------------------------------------------------------------
// TorchScript modules. The module was trained under one process (TorchScriptSpec's functions) and
// takes that process's x and t (or x~ = x / alpha and a noise level); a predictor is handed
// (alpha_n, sigma_n) of whatever process the sampler runs, so each row is mapped to the training
// process at the same sigma~ = sigma_n / alpha_n: t = t(sigma~), the module's levels (a_m, s_m) =
// (alpha(t), sigma(t)), or (1, sigma~) for scale-free input, and its input x_m = (a_m / alpha_n) x.
// The module's output is then read back at (alpha_n, sigma_n): eps and x0 are the same at every
// scale; v scales with alpha_n / a_m and the score with a_m / alpha_n; a flow velocity is turned
// into x0 at the module's levels with the training process's rates (the native prediction is then
// x0). When the sampler runs the training process itself the factors are 1.

struct TimeInput {
  enum Kind { t, t1000, sigma, log_sigma_quarter } kind;
};

TimeInput::Kind time_input_kind(const std::string& name) {
  if (name == "t") return TimeInput::t;
  if (name == "t1000") return TimeInput::t1000;
  if (name == "sigma") return TimeInput::sigma;
  if (name == "log_sigma_quarter") return TimeInput::log_sigma_quarter;
  throw std::runtime_error(fmt::format("time_input '{}': expected \"t\", \"t1000\", \"sigma\" or \"log_sigma_quarter\"", name));
}

std::string signature_text(const TorchScriptSpec& spec, const std::string& dtype) {
  const std::string level = spec.signature == "x_sigma" ? "sigma" : "t";
  const std::string input = spec.scale_free_input ? "x / alpha" : "x";
  std::string text = fmt::format("forward({} [N, {}] {}, {} [N] {} ({})", input, spec.dims, dtype, level, dtype, spec.time_input);
  if (spec.signature == "x_t_class") text += ", class [N] int64";
  return text + fmt::format(") -> {} [N, {}] {}", to_string(spec.prediction), spec.dims, dtype);
}

class TorchScriptModel;

class TorchScriptPredictor final : public Predictor<Batch> {
 public:
  TorchScriptPredictor(std::shared_ptr<const TorchScriptModel> model, int label) : model_(std::move(model)), label_(label) {}
  Parameterization native() const override;

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override;

 private:
  std::shared_ptr<const TorchScriptModel> model_;
  int label_;
};

class TorchScriptModel final : public NetworkModel, public std::enable_shared_from_this<TorchScriptModel> {
 public:
  TorchScriptModel(const TorchScriptSpec& spec, const NetworkRuntime& runtime)
      : spec_(spec), runtime_(runtime), device_(parse_device(runtime.device)), dtype_(parse_dtype(runtime.dtype)),
        time_input_(time_input_kind(spec.time_input)) {
    const std::string& file = spec.file;
    if (spec.dims < 1) throw std::runtime_error(fmt::format("{}: dims {}: must be positive", file, spec.dims));
    if (spec.signature != "x_t" && spec.signature != "x_sigma" && spec.signature != "x_t_class")
      throw std::runtime_error(fmt::format("{}: signature '{}': expected \"x_t\", \"x_sigma\" or \"x_t_class\"", file, spec.signature));
    if (spec.signature == "x_t_class" && spec.classes < 1)
      throw std::runtime_error(fmt::format("{}: signature x_t_class needs the number of classes (its null class is that number)", file));
    if (spec.signature != "x_t_class" && spec.classes != 0)
      throw std::runtime_error(fmt::format("{}: classes are given only with signature x_t_class", file));
    if (!spec.t_of_scaled_sigma || !spec.alpha || !spec.sigma)
      throw std::runtime_error(fmt::format("{}: the process the module was trained under is missing", file));
    if (spec.prediction == Parameterization::flow && (!spec.d_alpha || !spec.d_sigma))
      throw std::runtime_error(fmt::format("{}: a flow-velocity module needs its process's d_alpha and d_sigma", file));
    require_file(file);
    apply_runtime(runtime);
    try {
      module_ = torch::jit::load(file, device_);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: not a TorchScript module torch::jit::load can read: {}", file, first_line(e.what())));
    }
    module_.to(dtype_);
    module_.eval();
    sha256_ = file_sha256(file);
    dry_run();
  }

  Index dims() const override { return spec_.dims; }
  Index classes() const override { return spec_.classes; }
  std::string description() const override {
    return fmt::format("torchscript {} (sha256 {}): dims {}, prediction {}, signature {}, time_input {}, scale_free_input {}, classes {}; "
                       "{} {}, batch_size {}, state {}",
                       spec_.file, sha256_, spec_.dims, to_string(spec_.prediction), spec_.signature, spec_.time_input,
                       spec_.scale_free_input, spec_.classes, runtime_.device, runtime_.dtype, runtime_.batch_size, runtime_.state);
  }
  std::unique_ptr<Predictor<Batch>> make_predictor(int label) const override {
    if (label >= 0 && label >= classes())
      throw std::invalid_argument(fmt::format("{}: class {} of a module with {} classes", spec_.file, label, classes()));
    return std::make_unique<TorchScriptPredictor>(shared_from_this(), label);
  }
  std::unique_ptr<ScoreJacobian> make_score_jacobian(int label) const override {
    if (label >= 0 && label >= classes())
      throw std::invalid_argument(fmt::format("{}: class {} of a module with {} classes", spec_.file, label, classes()));
    return std::make_unique<AutogradScoreJacobian<TorchScriptModel>>(shared_from_this(), label);
  }

  Parameterization native() const { return spec_.prediction == Parameterization::flow ? Parameterization::x0 : spec_.prediction; }
  torch::Device device() const { return device_; }
  torch::Dtype dtype() const { return dtype_; }
  Index rows_per_call(Index rows) const { return chunk_rows(runtime_, rows); }

  // The score of evaluate's path in tensors: the module at x_m = input_scale x, read back to the
  // native prediction P = on_x x_m + on_output F, then s = c_x x + c_P P (conversion at the caller's
  // levels), as a function of the replicas of rows begin.. of x.
  ScoreOfReplicas score_of(const Batch& x, const PerSample& alpha, const PerSample& sigma, int label) const {
    if (x.cols() != dims()) throw std::invalid_argument(fmt::format("{}: a batch of {} dimensions for a module of {}", spec_.file, x.cols(), dims()));
    return [this, &alpha, &sigma, label](const torch::Tensor& xs, Index begin, Index rows, Index copies) {
      Rows r;
      levels(alpha.data() + begin, sigma.data() + begin, rows, r);
      const Eigen::ArrayXd a = alpha.segment(begin, rows), s = sigma.segment(begin, rows);
      const auto map = conversion(native(), Parameterization::score, a, s);
      const torch::Tensor x_m = repeated(r.input_scale, copies, device_, dtype_).unsqueeze(1) * xs;
      Eigen::ArrayXd time(rows * copies);
      for (Index k = 0; k < copies; ++k) time.segment(k * rows, rows) = r.time;
      const torch::Tensor f = call(x_m, time, rows * copies, label);
      check_output(f, rows * copies);
      torch::Tensor prediction = f;
      if (spec_.prediction != Parameterization::eps && spec_.prediction != Parameterization::x0)
        prediction = repeated(r.on_x, copies, device_, dtype_).unsqueeze(1) * x_m + repeated(r.on_output, copies, device_, dtype_).unsqueeze(1) * f;
      return repeated(map.on_x, copies, device_, dtype_).unsqueeze(1) * xs +
             repeated(map.on_prediction, copies, device_, dtype_).unsqueeze(1) * prediction;
    };
  }

  // evaluate() on a state that is already a tensor on the module's device (the device-resident
  // solve), with the same per-row arithmetic. The module's levels come from host functions of its
  // training process, so the per-sample (alpha, sigma) are read on the host: 4 numbers (their
  // ranges) when the whole batch shares one level, as the fixed-grid samplers ask, else all N.
  void evaluate_tensor(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& sigma, int label, torch::Tensor& out) const {
    if (x.dim() != 2 || x.size(1) != dims())
      throw std::invalid_argument(fmt::format("{}: a state of shape [{}] for a module of {} dimensions", spec_.file, fmt::join(x.sizes(), ", "), dims()));
    const Index n = x.size(0);
    const torch::NoGradGuard no_grad;
    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
    const torch::Tensor xf = x.to(device_, torch::kFloat64), a = alpha.to(device_, torch::kFloat64), s = sigma.to(device_, torch::kFloat64);
    if (n == 0) {
      out = torch::empty({0, dims()}, f64);
      return;
    }
    const torch::Tensor ends = torch::stack({a.min(), a.max(), s.min(), s.max()}).to(torch::kCPU).contiguous();
    const double* e = ends.data_ptr<double>();
    const bool uniform = e[0] == e[1] && e[2] == e[3];
    PerSample a_host, s_host;
    if (uniform) {
      a_host = PerSample::Constant(1, e[0]);
      s_host = PerSample::Constant(1, e[2]);
    } else {
      const torch::Tensor ah = a.to(torch::kCPU).contiguous(), sh = s.to(torch::kCPU).contiguous();
      a_host = Eigen::Map<const PerSample>(ah.data_ptr<double>(), n);
      s_host = Eigen::Map<const PerSample>(sh.data_ptr<double>(), n);
    }
    Rows r;
    levels(a_host.data(), s_host.data(), a_host.size(), r);
    // A per-row value as an [n, 1] float64 column on the device.
    const auto column = [&](const Eigen::ArrayXd& v) {
      if (uniform) return torch::full({n, 1}, v[0], f64);
      return values_to_tensor(v.data(), n, device_, torch::kFloat64).reshape({n, 1});
    };
    const bool rescale = (r.input_scale != 1.0).any();
    const torch::Tensor x_m = rescale ? xf * column(r.input_scale) : xf;
    const torch::Tensor time = column(r.time).reshape({n});
    const Index chunk = std::max<Index>(1, chunk_rows(runtime_, n));
    std::vector<torch::Tensor> parts;
    for (Index begin = 0; begin < n; begin += chunk) {
      const Index end = std::min(n, begin + chunk);
      const torch::Tensor f = call_tensor(x_m.slice(0, begin, end).to(dtype_), time.slice(0, begin, end).to(dtype_), end - begin, label);
      check_output(f, end - begin);
      parts.push_back(f);
    }
    torch::Tensor prediction = (parts.size() == 1 ? parts.front() : torch::cat(parts, 0)).to(torch::kFloat64);
    if (spec_.prediction != Parameterization::eps && spec_.prediction != Parameterization::x0)
      prediction = column(r.on_x) * x_m + column(r.on_output) * prediction;
    out = prediction;
  }

  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, int label, Batch& out) const {
    const Index n = x.rows(), d = x.cols();
    if (d != dims()) throw std::invalid_argument(fmt::format("{}: a batch of {} dimensions for a module of {}", spec_.file, d, dims()));
    out.resize(n, d);
    const torch::NoGradGuard no_grad;
    const Index chunk = chunk_rows(runtime_, n);
    Rows r;
    for (Index begin = 0; begin < n; begin += chunk) {
      const Index rows = std::min(chunk, n - begin);
      levels(alpha.data() + begin, sigma.data() + begin, rows, r);
      const double* xs = x.data() + begin * d;
      double* o = out.data() + begin * d;
      // The module's input: the batch's rows themselves when every row's factor is 1.
      const bool rescale = (r.input_scale != 1.0).any();
      Batch scaled;
      if (rescale) {
        scaled = Eigen::Map<const Batch>(xs, rows, d).colwise() * r.input_scale;
        xs = scaled.data();
      }
      const torch::Tensor prediction = call(rows_to_tensor(xs, rows, d, device_, dtype_), r.time, rows, label);
      check_output(prediction, rows);
      tensor_to_rows(prediction, o, rows, d);
      read_back(r, xs, rows, d, o);
    }
  }

 private:
  // Per row of a chunk: the module's time input, its levels, the factor on its input x and the
  // per-row affine map (x_m, F) -> native prediction.
  struct Rows {
    Eigen::ArrayXd time, input_scale, on_x, on_output;
  };

  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  void levels(const double* alpha, const double* sigma, Index rows, Rows& r) const {
    r.time.resize(rows), r.input_scale.resize(rows), r.on_x.resize(rows), r.on_output.resize(rows);
    for (Index i = 0; i < rows; ++i) {
      const double scaled_sigma = sigma[i] / alpha[i];
      const double t = spec_.t_of_scaled_sigma(scaled_sigma);
      double a_m = 1.0, s_m = scaled_sigma;
      if (!spec_.scale_free_input) a_m = spec_.alpha(t), s_m = spec_.sigma(t);
      switch (time_input_) {
        case TimeInput::t: r.time[i] = t; break;
        case TimeInput::t1000: r.time[i] = 1000.0 * t; break;
        case TimeInput::sigma: r.time[i] = scaled_sigma; break;
        case TimeInput::log_sigma_quarter: r.time[i] = 0.25 * std::log(scaled_sigma); break;
      }
      r.input_scale[i] = a_m / alpha[i];
      r.on_x[i] = 0.0;
      r.on_output[i] = 1.0;
      switch (spec_.prediction) {
        case Parameterization::eps:
        case Parameterization::x0: break;
        case Parameterization::v: r.on_output[i] = alpha[i] / a_m; break;
        case Parameterization::score: r.on_output[i] = a_m / alpha[i]; break;
        case Parameterization::flow: {
          double da = spec_.d_alpha(t), ds = spec_.d_sigma(t);
          if (spec_.scale_free_input) {  // x~ = x0 + sigma~ eps: d/dt of (1, sigma / alpha)
            const double a = spec_.alpha(t), s = spec_.sigma(t);
            ds = (ds * a - s * da) / (a * a);
            da = 0.0;
          }
          const auto map = conversion(Parameterization::flow, Parameterization::x0, a_m, s_m, &da, &ds);
          r.on_x[i] = map.on_x;
          r.on_output[i] = map.on_prediction;
          break;
        }
      }
    }
  }

  // out = on_x x_m + on_output F, row by row (nothing to do for eps and x0).
  void read_back(const Rows& r, const double* x_m, Index rows, Index d, double* out) const {
    if (spec_.prediction == Parameterization::eps || spec_.prediction == Parameterization::x0) return;
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < d; ++j) out[i * d + j] = r.on_x[i] * x_m[i * d + j] + r.on_output[i] * out[i * d + j];
  }

  torch::Tensor call(const torch::Tensor& x, const Eigen::ArrayXd& time, Index rows, int label) const {
    return call_tensor(x, values_to_tensor(time.data(), rows, device_, dtype_), rows, label);
  }

  torch::Tensor call_tensor(const torch::Tensor& x, const torch::Tensor& time, Index rows, int label) const {
    std::vector<torch::jit::IValue> inputs{x, time};
    if (spec_.signature == "x_t_class")
      inputs.emplace_back(torch::full({rows}, label < 0 ? spec_.classes : label, torch::TensorOptions().dtype(torch::kInt64).device(device_)));
    const torch::jit::IValue result = module_.forward(inputs);
    if (!result.isTensor()) throw std::runtime_error(fmt::format("{}: the module returned a {}, not a tensor", spec_.file, result.tagKind()));
    return result.toTensor();
  }

  void check_output(const torch::Tensor& prediction, Index rows) const {
    if (prediction.dim() != 2 || prediction.size(0) != rows || prediction.size(1) != spec_.dims)
      throw std::runtime_error(fmt::format("{}: the module returned shape {} for {} rows (expected [{}, {}]); expected signature {}", spec_.file,
                                           fmt::format("{}", fmt::join(prediction.sizes(), ", ")), rows, rows, spec_.dims,
                                           signature_text(spec_, runtime_.dtype)));
    if (prediction.scalar_type() != dtype_)
      throw std::runtime_error(fmt::format("{}: the module returned {} (expected {}); expected signature {}", spec_.file,
                                           c10::toString(prediction.scalar_type()), runtime_.dtype, signature_text(spec_, runtime_.dtype)));
  }

  // Two rows at two noise levels through the whole path: a module that does not take the stated
  // arguments, or returns another shape or dtype, is refused at load rather than mid-run.
  void dry_run() const {
    Batch x(2, spec_.dims);
    for (Index j = 0; j < spec_.dims; ++j) x(0, j) = 0.5 + 0.1 * static_cast<double>(j), x(1, j) = -0.25 * static_cast<double>(j % 3);
    const double s0 = 1.0, s1 = 0.5;
    PerSample alpha(2), sigma(2);
    for (const auto& [i, s] : {std::pair{0, s0}, std::pair{1, s1}}) {
      const double t = spec_.t_of_scaled_sigma(s);
      alpha[i] = spec_.alpha(t);
      sigma[i] = spec_.sigma(t);
    }
    Batch out;
    try {
      evaluate(x, alpha, sigma, -1, out);
    } catch (const std::exception& e) {
      const std::string what = first_line(e.what());
      if (what.starts_with(spec_.file)) throw std::runtime_error(what);
      throw std::runtime_error(fmt::format("{}: the dry run on two inputs failed: {}; expected signature {}", spec_.file, what,
                                           signature_text(spec_, runtime_.dtype)));
    }
  }

  TorchScriptSpec spec_;
  NetworkRuntime runtime_;
  torch::Device device_;
  torch::Dtype dtype_;
  TimeInput::Kind time_input_;
  // Inference only reads the module, so the predictors of several threads share it.
  mutable torch::jit::Module module_;
  std::string sha256_;
};

Parameterization TorchScriptPredictor::native() const { return model_->native(); }
void TorchScriptPredictor::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  model_->evaluate(x, alpha, sigma, label_, out);
}

// A module's predictor on device-resident torch state (make_tensor_predictor).
class TorchScriptTensorPredictor final : public Predictor<torch::Tensor> {
 public:
  TorchScriptTensorPredictor(std::shared_ptr<const TorchScriptModel> model, int label) : model_(std::move(model)), label_(label) {}
  Parameterization native() const override { return model_->native(); }

 protected:
  void evaluate(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& sigma, torch::Tensor& out) const override {
    model_->evaluate_tensor(x, alpha, sigma, label_, out);
  }

 private:
  std::shared_ptr<const TorchScriptModel> model_;
  int label_;
};

}  // namespace

std::unique_ptr<Predictor<torch::Tensor>> make_tensor_predictor(const NetworkModel& model, int label) {
  if (label >= 0 && label >= model.classes())
    throw std::invalid_argument(fmt::format("class {} of a network with {} classes", label, model.classes()));
  if (const auto* checkpoint = dynamic_cast<const CheckpointModel*>(&model))
    return std::make_unique<CheckpointTensorPredictor>(checkpoint->shared_from_this(), label);
  if (const auto* module = dynamic_cast<const TorchScriptModel*>(&model))
    return std::make_unique<TorchScriptTensorPredictor>(module->shared_from_this(), label);
  throw std::runtime_error("the device-resident solve takes a network this backend loaded (a checkpoint or a TorchScript module)");
}

torch::Device network_device(const NetworkModel& model) {
  if (const auto* checkpoint = dynamic_cast<const CheckpointModel*>(&model)) return checkpoint->device();
  if (const auto* module = dynamic_cast<const TorchScriptModel*>(&model)) return module->device();
  throw std::runtime_error("the device-resident solve takes a network this backend loaded (a checkpoint or a TorchScript module)");
}

std::shared_ptr<const NetworkModel> load_checkpoint_model(const std::string& file, const NetworkRuntime& runtime) {
  return std::make_shared<const CheckpointModel>(file, runtime);
}

std::shared_ptr<const NetworkModel> load_torchscript_model(const TorchScriptSpec& spec, const NetworkRuntime& runtime) {
  return std::make_shared<const TorchScriptModel>(spec, runtime);
}

}  // namespace diffode
