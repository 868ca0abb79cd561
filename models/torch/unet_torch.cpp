// The U-Net of models/torch/unet_torch.hpp. Its layer list is mirrored by unet_parameter_count
// (models/network.cpp), which the config reader uses to size checkpoints without LibTorch.
#include "models/torch/unet_torch.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <stdexcept>

namespace diffode {
namespace {

const double kSkipScale = std::sqrt(0.5);

torch::nn::Conv2d conv(Index in, Index out, Index kernel, Index stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2));
}

torch::nn::GroupNorm group_norm(Index groups, Index channels) { return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels)); }

void zero(torch::nn::Conv2d& layer) {
  torch::NoGradGuard no_grad;
  layer->weight.zero_();
  layer->bias.zero_();
}

}  // namespace

UnetResidualBlockImpl::UnetResidualBlockImpl(Index in, Index out, Index embedding_channels, Index groups) {
  norm1_ = register_module("norm1", group_norm(groups, in));
  conv1_ = register_module("conv1", conv(in, out, 3));
  embed_ = register_module("embed", torch::nn::Linear(embedding_channels, out));
  norm2_ = register_module("norm2", group_norm(groups, out));
  conv2_ = register_module("conv2", conv(out, out, 3));
  if (in != out) skip_ = register_module("skip", conv(in, out, 1));
}

torch::Tensor UnetResidualBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& embedding) {
  torch::Tensor h = conv1_->forward(torch::silu(norm1_->forward(x)));
  h = h + embed_->forward(embedding).unsqueeze(-1).unsqueeze(-1);
  h = conv2_->forward(torch::silu(norm2_->forward(h)));
  return ((skip_ ? skip_->forward(x) : x) + h) * kSkipScale;
}

UnetAttentionImpl::UnetAttentionImpl(Index channels, Index heads, Index groups) : heads_(heads) {
  norm_ = register_module("norm", group_norm(groups, channels));
  qkv_ = register_module("qkv", conv(channels, 3 * channels, 1));
  projection_ = register_module("projection", conv(channels, channels, 1));
  zero(projection_);
}

torch::Tensor UnetAttentionImpl::forward(const torch::Tensor& x) {
  const std::int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), d = c / heads_;
  // [N, 3, heads, d, HW] -> q, k, v as [N heads, HW, d]
  const torch::Tensor qkv = qkv_->forward(norm_->forward(x)).reshape({n, 3, heads_, d, h * w});
  const auto part = [&](int i) { return qkv.select(1, i).reshape({n * heads_, d, h * w}).transpose(1, 2); };
  const torch::Tensor q = part(0), k = part(1), v = part(2);
  const torch::Tensor weights = torch::softmax(torch::bmm(q, k.transpose(1, 2)) / std::sqrt(static_cast<double>(d)), -1);
  const torch::Tensor out = torch::bmm(weights, v).transpose(1, 2).reshape({n, c, h, w});
  return (x + projection_->forward(out)) * kSkipScale;
}

UnetImpl::UnetImpl(const UnetArchitecture& architecture) : architecture_(architecture) {
  const UnetArchitecture& a = architecture_;
  if (const std::string problem = unet_architecture_problem(a); !problem.empty()) throw std::invalid_argument("U-Net: " + problem);
  const Index embedding_channels = 4 * a.base_channels;
  if (a.embedding == "fourier") fourier_frequencies_ = register_buffer("fourier_frequencies", fourier_frequencies(a.embedding_dims, a.fourier_scale));
  if (a.classes > 0) class_embedding_ = register_module("class_embedding", torch::nn::Embedding(a.classes + 1, a.embedding_dims));
  embed_first_ = register_module("embed_first", torch::nn::Linear(a.embedding_dims, embedding_channels));
  embed_second_ = register_module("embed_second", torch::nn::Linear(embedding_channels, embedding_channels));
  input_ = register_module("input", conv(a.channels, a.base_channels, 3));

  std::vector<Index> skips = {a.base_channels};
  Index ch = a.base_channels;
  const auto levels = static_cast<Index>(a.channel_multipliers.size());
  for (Index l = 0; l < levels; ++l) {
    const Index out = a.base_channels * a.channel_multipliers[l];
    for (Index b = 0; b < a.blocks_per_level; ++b) {
      down_blocks_.push_back(register_module(fmt::format("down{}_{}", l, b), UnetResidualBlock(ch, out, embedding_channels, a.groups)));
      ch = out;
      skips.push_back(ch);
    }
    if (l + 1 < levels) {
      downsample_.push_back(register_module(fmt::format("downsample{}", l), conv(ch, ch, 3, 2)));
      skips.push_back(ch);
    }
  }
  middle_first_ = register_module("middle_first", UnetResidualBlock(ch, ch, embedding_channels, a.groups));
  if (a.attention) attention_ = register_module("attention", UnetAttention(ch, a.attention_heads, a.groups));
  middle_second_ = register_module("middle_second", UnetResidualBlock(ch, ch, embedding_channels, a.groups));
  for (Index l = levels - 1; l >= 0; --l) {
    const Index out = a.base_channels * a.channel_multipliers[l];
    for (Index b = 0; b <= a.blocks_per_level; ++b) {
      up_blocks_.push_back(register_module(fmt::format("up{}_{}", l, b), UnetResidualBlock(ch + skips.back(), out, embedding_channels, a.groups)));
      skips.pop_back();
      ch = out;
    }
    if (l > 0) upsample_.push_back(register_module(fmt::format("upsample{}", l), conv(ch, ch, 3)));
  }
  output_norm_ = register_module("output_norm", group_norm(a.groups, ch));
  output_ = register_module("output", conv(ch, a.channels, 3));
  // F = 0 at the start, as the MLP's output layer: an untrained `edm` network is its skip connection.
  zero(output_);
}

torch::Tensor UnetImpl::forward(const torch::Tensor& x_in, const torch::Tensor& c_noise, const torch::Tensor& label) {
  const UnetArchitecture& a = architecture_;
  if (x_in.dim() != 2 || x_in.size(1) != a.dims())
    throw std::invalid_argument(fmt::format("U-Net: input of shape {} (expected [N, {}] = [N, {} x {} x {}])", fmt::join(x_in.sizes(), " x "),
                                            a.dims(), a.channels, a.height, a.width));
  const std::int64_t n = x_in.size(0);
  if (c_noise.numel() != n) throw std::invalid_argument("U-Net: c_noise needs one value per row");
  torch::Tensor embedding = noise_embedding(c_noise, a.embedding_dims, a.embedding, fourier_frequencies_);
  if (a.classes > 0) embedding = embedding + class_embedding_->forward(class_indices(label, n, a.classes, x_in.device(), "U-Net"));
  else class_indices(label, n, 0, x_in.device(), "U-Net");
  const torch::Tensor emb = torch::silu(embed_second_->forward(torch::silu(embed_first_->forward(embedding))));

  torch::Tensor h = input_->forward(x_in.reshape({n, a.channels, a.height, a.width}));
  std::vector<torch::Tensor> skips = {h};
  const auto levels = static_cast<Index>(a.channel_multipliers.size());
  std::size_t block = 0;
  for (Index l = 0; l < levels; ++l) {
    for (Index b = 0; b < a.blocks_per_level; ++b) {
      h = down_blocks_[block++]->forward(h, emb);
      skips.push_back(h);
    }
    if (l + 1 < levels) {
      h = downsample_[l]->forward(h);
      skips.push_back(h);
    }
  }
  h = middle_first_->forward(h, emb);
  if (attention_) h = attention_->forward(h);
  h = middle_second_->forward(h, emb);
  block = 0;
  std::size_t up = 0;
  for (Index l = levels - 1; l >= 0; --l) {
    for (Index b = 0; b <= a.blocks_per_level; ++b) {
      h = up_blocks_[block++]->forward(torch::cat({h, skips.back()}, 1), emb);
      skips.pop_back();
    }
    if (l > 0) h = upsample_[up++]->forward(torch::upsample_nearest2d(h, std::vector<std::int64_t>{2 * h.size(2), 2 * h.size(3)}));
  }
  return output_->forward(torch::silu(output_norm_->forward(h))).reshape({n, a.dims()});
}

}  // namespace diffode
