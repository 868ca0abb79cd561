// The residual MLP of models/network.hpp (MlpArchitecture) as a LibTorch module, its conditioning
// (c_in, c_noise and the output map of NetworkSpec) and its checkpoint files.
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

#include <torch/torch.h>

#include <string>

namespace diffode {

// F(c_in x, c_noise, label): the raw network. `label` is an int64 [N] tensor of classes (the null
// class is architecture.classes) or an undefined tensor for an unconditional network.
class ScoreMlpImpl : public torch::nn::Module {
 public:
  explicit ScoreMlpImpl(const MlpArchitecture& architecture);
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label = {});
  const MlpArchitecture& architecture() const { return architecture_; }

 private:
  MlpArchitecture architecture_;
  // submodules are registered in the constructor
  struct Parts;
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(ScoreMlp);

// The conditioned network: x (the process's variables) at levels (alpha, sigma) [N] -> the native
// prediction of the spec: F read as spec.output, or, for `edm`, the denoiser D(x~; sigma~) (x0).
// All tensors in the network's dtype and device.
torch::Tensor conditioned_prediction(ScoreMlp& network, const NetworkSpec& spec, const torch::Tensor& x,
                                     const torch::Tensor& alpha, const torch::Tensor& sigma, const torch::Tensor& label = {});

// What conditioned_prediction outputs, as a Parameterization (edm: x0).
Parameterization native_parameterization(NetworkOutput output);

// A checkpoint: the spec, the weights used for sampling (the EMA weights when training kept them),
// and, for resuming training, the training state (written and read by models/torch/training_torch.cpp).
void save_network(const std::string& file, const NetworkSpec& spec, ScoreMlp& network);
// Throws std::runtime_error naming the file when it is missing or not a diffode checkpoint.
ScoreMlp load_network(const std::string& file, NetworkSpec& spec);

}  // namespace diffode
