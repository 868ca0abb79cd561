#include "models/network.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

namespace diffode {
namespace {

constexpr std::array<std::pair<NetworkOutput, std::string_view>, 6> kOutputs{{
    {NetworkOutput::eps, "eps"},
    {NetworkOutput::x0, "x0"},
    {NetworkOutput::v, "v"},
    {NetworkOutput::score, "score"},
    {NetworkOutput::flow, "flow"},
    {NetworkOutput::edm, "edm"},
}};

}  // namespace

std::string_view to_string(NetworkOutput output) {
  for (const auto& [value, name] : kOutputs)
    if (value == output) return name;
  return "?";
}

NetworkOutput network_output_from_string(std::string_view name) {
  for (const auto& [value, known] : kOutputs)
    if (known == name) return value;
  throw std::invalid_argument("unknown network output '" + std::string(name) + "' (one of eps, x0, v, score, flow, edm)");
}

std::string unet_architecture_problem(const UnetArchitecture& a) {
  if (a.channels < 1 || a.height < 1 || a.width < 1)
    return fmt::format("image {} x {} x {}: every size must be positive", a.channels, a.height, a.width);
  if (a.base_channels < 1) return fmt::format("base_channels {} must be positive", a.base_channels);
  if (a.channel_multipliers.empty()) return "channel_multipliers: at least one level";
  if (a.channel_multipliers.size() > 8) return fmt::format("channel_multipliers: {} levels (at most 8)", a.channel_multipliers.size());
  for (Index m : a.channel_multipliers)
    if (m < 1) return fmt::format("channel_multipliers [{}]: each must be positive", fmt::join(a.channel_multipliers, ", "));
  const Index scale = Index{1} << (a.channel_multipliers.size() - 1);
  if (a.height % scale != 0 || a.width % scale != 0)
    return fmt::format("image {} x {}: height and width must be divisible by 2^(levels - 1) = {} for {} levels", a.height, a.width, scale,
                       a.channel_multipliers.size());
  if (a.blocks_per_level < 1) return fmt::format("blocks_per_level {} must be positive", a.blocks_per_level);
  if (a.groups < 1) return fmt::format("groups {} must be positive", a.groups);
  for (Index m : a.channel_multipliers)
    if ((a.base_channels * m) % a.groups != 0)
      return fmt::format("groups {} must divide every level's channels (base_channels {} x multiplier {})", a.groups, a.base_channels, m);
  const Index lowest = a.base_channels * a.channel_multipliers.back();
  if (a.attention && (a.attention_heads < 1 || lowest % a.attention_heads != 0))
    return fmt::format("attention_heads {} must divide the lowest level's {} channels", a.attention_heads, lowest);
  if (a.embedding_dims < 2 || a.embedding_dims % 2 != 0) return fmt::format("embedding_dims {} must be even and >= 2", a.embedding_dims);
  if (a.embedding != "sinusoidal" && a.embedding != "fourier") return fmt::format("embedding '{}' (sinusoidal | fourier)", a.embedding);
  if (a.embedding == "fourier" && !(a.fourier_scale > 0 && std::isfinite(a.fourier_scale)))
    return fmt::format("fourier_scale {} must be positive", a.fourier_scale);
  if (a.classes < 0) return fmt::format("classes {} < 0", a.classes);
  return "";
}

// Mirrors models/torch/unet_torch.cpp layer by layer (a test compares it with the module's count).
std::int64_t unet_parameter_count(const UnetArchitecture& a) {
  const std::int64_t emb = 4 * a.base_channels;  // the embedding MLP's width, as in the module
  const auto conv = [](std::int64_t in, std::int64_t out, std::int64_t k) { return in * out * k * k + out; };
  const auto norm = [](std::int64_t c) { return 2 * c; };
  const auto block = [&](std::int64_t in, std::int64_t out) {
    return norm(in) + conv(in, out, 3) + (emb * out + out) + norm(out) + conv(out, out, 3) + (in != out ? conv(in, out, 1) : 0);
  };
  std::int64_t n = conv(a.channels, a.base_channels, 3);
  n += a.embedding_dims * emb + emb + emb * emb + emb;
  if (a.classes > 0) n += (a.classes + 1) * a.embedding_dims;
  std::vector<std::int64_t> skips = {a.base_channels};
  std::int64_t ch = a.base_channels;
  const auto levels = static_cast<std::int64_t>(a.channel_multipliers.size());
  for (std::int64_t l = 0; l < levels; ++l) {
    const std::int64_t out = a.base_channels * a.channel_multipliers[l];
    for (Index b = 0; b < a.blocks_per_level; ++b) {
      n += block(ch, out);
      ch = out;
      skips.push_back(ch);
    }
    if (l + 1 < levels) {
      n += conv(ch, ch, 3);
      skips.push_back(ch);
    }
  }
  n += 2 * block(ch, ch);
  if (a.attention) n += norm(ch) + conv(ch, 3 * ch, 1) + conv(ch, ch, 1);
  for (std::int64_t l = levels - 1; l >= 0; --l) {
    const std::int64_t out = a.base_channels * a.channel_multipliers[l];
    for (Index b = 0; b <= a.blocks_per_level; ++b) {
      n += block(ch + skips.back(), out);
      skips.pop_back();
      ch = out;
    }
    if (l > 0) n += conv(ch, ch, 3);
  }
  n += norm(ch) + conv(ch, a.channels, 3);
  return n;
}

std::string describe(const NetworkSpec& spec) {
  if (spec.kind == "unet") {
    const UnetArchitecture& a = spec.unet;
    return fmt::format("U-Net image {}x{}x{} base_channels {} channel_multipliers [{}] blocks_per_level {} attention {} (heads {}) groups {} "
                       "embedding {} ({} features) classes {} ({} parameters); output {}, sigma_data {:g}",
                       a.channels, a.height, a.width, a.base_channels, fmt::join(a.channel_multipliers, ", "), a.blocks_per_level, a.attention,
                       a.attention_heads, a.groups, a.embedding, a.embedding_dims, a.classes, unet_parameter_count(a), to_string(spec.output),
                       spec.sigma_data);
  }
  const MlpArchitecture& a = spec.architecture;
  return fmt::format("residual MLP dims {} width {} blocks {} embedding {} ({} features) classes {}; output {}, sigma_data {:g}", a.dims, a.width,
                     a.blocks, a.embedding, a.embedding_dims, a.classes, to_string(spec.output), spec.sigma_data);
}

}  // namespace diffode
