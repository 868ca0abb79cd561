// The networks' common interface (ScoreNetworkImpl), the residual MLP of models/network.hpp
// (MlpArchitecture) as a LibTorch module (the U-Net is models/torch/unet_torch.hpp), their conditioning
// (c_in, c_noise and the output map of NetworkSpec) and its checkpoint files.
//
// Checkpoint layout (a torch::serialize archive, i.e. a zip file torch::load reads):
//   format            "diffode-network" (a file without it is refused by name)
//   version           2 (version 1, written before the U-Net, has no spec/kind and is read as an MLP)
//   spec/...          the NetworkSpec: kind ("mlp" | "unet"), that architecture's sizes, output,
//                     sigma_data
//   weights/...       the sampling weights (the EMA weights when written by training)
//   training/...      optional: what resuming needs (models/torch/training_torch.cpp): the raw
//                     weights, AdamW's state, the step, the loss history and the settings that
//                     must not change across a resume
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

#include <torch/torch.h>

#include <string>

namespace diffode {

// F(c_in x, c_noise, label): the raw network, whichever architecture (NetworkSpec::kind) it is. The
// conditioning, training and checkpoints below work through this interface alone. `label` is an
// int64 [N] tensor of classes (the null class is the architecture's `classes`) or an undefined
// tensor for an unconditional network (a class-conditional network then uses the null class for
// every row).
class ScoreNetworkImpl : public torch::nn::Module {
 public:
  // x_in: [N, dims], c_noise: [N] (or [N, 1]), label: [N] int64 or undefined. Returns [N, dims].
  virtual torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label = {}) = 0;
};
using ScoreNetwork = std::shared_ptr<ScoreNetworkImpl>;

// The network of `spec` (kind "mlp" or "unet") with fresh weights (torch's global generator).
ScoreNetwork make_network(const NetworkSpec& spec);

// The noise embedding of c_noise [N] -> [N, dims] shared by the architectures: EDM's sinusoids
// (`embedding` = "sinusoidal") or random Fourier features with the given frequencies [dims / 2].
torch::Tensor noise_embedding(const torch::Tensor& c_noise, Index dims, const std::string& embedding, const torch::Tensor& fourier_frequencies);
// The Fourier frequencies (N(0, scale^2), drawn from a generator of their own, not the global one
// whose state the caller seeds for the weights): a module registers them as a buffer, so a loaded
// network has the frequencies it was trained with.
torch::Tensor fourier_frequencies(Index dims, double scale);
// The class of each row as int64 [N] on `device`: `label`, or the null class `classes` when label
// is undefined; throws when a label is given to an unconditional network.
torch::Tensor class_indices(const torch::Tensor& label, std::int64_t n, Index classes, torch::Device device, const char* who);

class ScoreMlpImpl : public ScoreNetworkImpl {
 public:
  explicit ScoreMlpImpl(const MlpArchitecture& architecture);
  // x_in: [N, dims], c_noise: [N] (or [N, 1]), label: [N] int64 or undefined. Returns [N, dims].
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label = {}) override;
  const MlpArchitecture& architecture() const { return architecture_; }

 private:
  MlpArchitecture architecture_;
  torch::nn::Linear input_{nullptr}, output_{nullptr};
  torch::nn::Linear embed_first_{nullptr}, embed_second_{nullptr};  // embedding -> width conditioning
  torch::nn::Embedding class_embedding_{nullptr};                    // classes + 1 rows (the last: null)
  torch::nn::LayerNorm final_norm_{nullptr};
  struct Block {
    torch::nn::LayerNorm norm{nullptr};
    torch::nn::Linear first{nullptr}, second{nullptr}, condition{nullptr};
  };
  std::vector<Block> blocks_;
  torch::Tensor fourier_frequencies_;  // buffer: [embedding_dims / 2] (fourier only)
};
TORCH_MODULE(ScoreMlp);

// The conditioning of models/network.hpp as tensors: c_in [N, 1] and c_noise [N] from alpha and
// sigma [N]. c_noise = log(sigma~) / 4 is clamped to +-log(1e8) / 4, so that the ends of a process
// where sigma~ is 0 or infinite (a flow at t = 0 and t = 1) still give a finite input.
torch::Tensor network_c_in(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma);
torch::Tensor network_c_noise(const torch::Tensor& alpha, const torch::Tensor& sigma);
// EDM's c_skip and c_out (Karras et al. 2022, Table 1) at sigma~ = sigma / alpha, written as
// c_skip / alpha = sigma_data^2 alpha / (sigma^2 + alpha^2 sigma_data^2) (the factor of x, since
// x~ = x / alpha) and c_out = sigma sigma_data / sqrt(sigma^2 + alpha^2 sigma_data^2): equal to the
// Table's where alpha > 0, and finite where alpha = 0. Both [N, 1].
torch::Tensor edm_skip_on_x(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma);
torch::Tensor edm_c_out(const NetworkSpec& spec, const torch::Tensor& alpha, const torch::Tensor& sigma);

// The conditioned network: x (the process's variables) at levels (alpha, sigma) [N] -> the native
// prediction of the spec: F read as spec.output, or, for `edm`, the denoiser D(x~; sigma~) (x0).
// All tensors in the network's dtype and device.
torch::Tensor conditioned_prediction(ScoreNetworkImpl& network, const NetworkSpec& spec, const torch::Tensor& x,
                                     const torch::Tensor& alpha, const torch::Tensor& sigma, const torch::Tensor& label = {});
inline torch::Tensor conditioned_prediction(const ScoreNetwork& network, const NetworkSpec& spec, const torch::Tensor& x,
                                            const torch::Tensor& alpha, const torch::Tensor& sigma, const torch::Tensor& label = {}) {
  return conditioned_prediction(*network, spec, x, alpha, sigma, label);
}
template <class Impl>
torch::Tensor conditioned_prediction(torch::nn::ModuleHolder<Impl>& network, const NetworkSpec& spec, const torch::Tensor& x,
                                     const torch::Tensor& alpha, const torch::Tensor& sigma, const torch::Tensor& label = {}) {
  return conditioned_prediction(*network, spec, x, alpha, sigma, label);
}

// What conditioned_prediction outputs, as a Parameterization (edm: x0).
Parameterization native_parameterization(NetworkOutput output);

// A checkpoint: the spec, the weights used for sampling (the EMA weights when training kept them),
// and, for resuming training, the training state (written and read by models/torch/training_torch.cpp).
void save_network(const std::string& file, const NetworkSpec& spec, ScoreNetworkImpl& network);
template <class Impl>
void save_network(const std::string& file, const NetworkSpec& spec, torch::nn::ModuleHolder<Impl>& network) {
  save_network(file, spec, *network);
}
inline void save_network(const std::string& file, const NetworkSpec& spec, const ScoreNetwork& network) { save_network(file, spec, *network); }
// Throws std::runtime_error naming the file when it is missing or not a diffode checkpoint.
ScoreNetwork load_network(const std::string& file, NetworkSpec& spec);

// Reads `module`'s parameters and buffers (recursively, as torch::nn::Module::save wrote them) from
// `archive`, converted to the module's dtype. Module::load does not convert: a float32 module
// handed float64 weights points its float32 tensors at the float64 bytes (LibTorch 1.13), which
// gives garbage, so a checkpoint trained in float64 would not load. Throws std::runtime_error
// naming `file` and the tensor on a missing tensor or a shape mismatch.
void load_weights(torch::nn::Module& module, torch::serialize::InputArchive& archive, const std::string& file);

// The parts of a checkpoint, for training_torch.cpp (which adds its "training" archive).
void write_network_archive(torch::serialize::OutputArchive& archive, const NetworkSpec& spec, ScoreNetworkImpl& network);
// Opens `file` as a diffode checkpoint (its tensors mapped to `device`) and reads its spec; throws
// std::runtime_error naming the file.
torch::serialize::InputArchive open_network_archive(const std::string& file, NetworkSpec& spec, torch::Device device = torch::kCPU);
// Writes `archive` to `file` through a temporary file beside it and a rename, so that a reader or a
// crash sees the previous checkpoint or the new one, never a torn file.
void save_archive_atomically(torch::serialize::OutputArchive& archive, const std::string& file);

}  // namespace diffode
