// The U-Net of models/network.hpp (UnetArchitecture) as a LibTorch module behind the common
// interface ScoreNetworkImpl (models/torch/score_mlp_torch.hpp): rows of C*H*W values in, rows out,
// reshaped to images inside. Its layout follows the DDPM U-Net (Ho et al. 2020, arXiv:2006.11239,
// Appendix B: residual blocks with GroupNorm, a skip connection from every encoder block and
// downsampling, self-attention at a low resolution) with EDM's conditioning (Karras et al. 2022,
// arXiv:2206.00364): the noise embedding of c_noise plus a learned class embedding (with a null
// class for classifier-free guidance, Ho & Salimans 2022, arXiv:2207.12598), mapped by a two-layer
// MLP and added to every block after its first convolution; residual sums scaled by sqrt(1/2), and
// the last convolution (and the attention's projection) zero-initialised, as in EDM's networks.
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"
#include "models/torch/score_mlp_torch.hpp"

#include <torch/torch.h>

#include <vector>

namespace diffode {

// GroupNorm, SiLU, 3x3 conv, + embedding, GroupNorm, SiLU, 3x3 conv; a 1x1 conv on the skip when
// the channel count changes.
class UnetResidualBlockImpl : public torch::nn::Module {
 public:
  UnetResidualBlockImpl(Index in, Index out, Index embedding_channels, Index groups);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& embedding);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear embed_{nullptr};
};
TORCH_MODULE(UnetResidualBlock);

// Multi-head self-attention over the pixels of a feature map (GroupNorm, 1x1 qkv, softmax(q k^T /
// sqrt(d)) v, 1x1 projection), added to its input.
class UnetAttentionImpl : public torch::nn::Module {
 public:
  UnetAttentionImpl(Index channels, Index heads, Index groups);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  Index heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, projection_{nullptr};
};
TORCH_MODULE(UnetAttention);

class UnetImpl : public ScoreNetworkImpl {
 public:
  // Throws std::invalid_argument naming the problem (unet_architecture_problem) for a wrong shape.
  explicit UnetImpl(const UnetArchitecture& architecture);
  // x_in: [N, C*H*W], c_noise: [N], label: [N] int64 or undefined. Returns [N, C*H*W].
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label = {}) override;
  const UnetArchitecture& architecture() const { return architecture_; }

 private:
  UnetArchitecture architecture_;
  torch::Tensor fourier_frequencies_;  // buffer (fourier embedding only)
  torch::nn::Embedding class_embedding_{nullptr};
  torch::nn::Linear embed_first_{nullptr}, embed_second_{nullptr};
  torch::nn::Conv2d input_{nullptr}, output_{nullptr};
  torch::nn::GroupNorm output_norm_{nullptr};
  std::vector<UnetResidualBlock> down_blocks_, up_blocks_;
  std::vector<torch::nn::Conv2d> downsample_, upsample_;  // one per level transition
  UnetResidualBlock middle_first_{nullptr}, middle_second_{nullptr};
  UnetAttention attention_{nullptr};
};
TORCH_MODULE(Unet);

}  // namespace diffode
