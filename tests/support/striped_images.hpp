// Small labelled image sets in Fashion-MNIST's IDX files, for the tests that train a classifier:
// image i is of class i % 3, a 12 x 12 image with a bright band of rows [4k, 4k + 4) for class k
// plus a deterministic ripple, so that a tiny classifier learns the classes in a few steps; and the
// config that trains one on them.
#pragma once

#include "core/state.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace diffode::testing {

inline constexpr Index kStripedSide = 12;

// Pixel p of image i.
inline std::uint8_t striped_pixel(Index i, Index p) {
  const Index k = i % 3, row = p / kStripedSide;
  const int base = row >= 4 * k && row < 4 * k + 4 ? 200 : 40;
  return static_cast<std::uint8_t>(base + (i * 7 + p * 13) % 50);
}

// An IDX file of unsigned bytes with the given shape.
inline void write_idx(const std::filesystem::path& file, const std::vector<std::uint32_t>& shape, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(file, std::ios::binary);
  const std::uint8_t magic[4] = {0, 0, 8, static_cast<std::uint8_t>(shape.size())};
  out.write(reinterpret_cast<const char*>(magic), 4);
  for (std::uint32_t s : shape) {
    const std::uint8_t be[4] = {static_cast<std::uint8_t>(s >> 24), static_cast<std::uint8_t>(s >> 16), static_cast<std::uint8_t>(s >> 8),
                                static_cast<std::uint8_t>(s)};
    out.write(reinterpret_cast<const char*>(be), 4);
  }
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Images offset .. offset + n - 1 and their labels as the split `prefix` ("train", "t10k") in
// Fashion-MNIST's names (plain bytes: gzread reads them as they are).
inline void write_striped_split(const std::filesystem::path& dir, const std::string& prefix, Index n, Index offset) {
  std::vector<std::uint8_t> images, labels;
  for (Index i = 0; i < n; ++i) {
    labels.push_back(static_cast<std::uint8_t>((i + offset) % 3));
    for (Index p = 0; p < kStripedSide * kStripedSide; ++p) images.push_back(striped_pixel(i + offset, p));
  }
  write_idx(dir / (prefix + "-images-idx3-ubyte.gz"), {static_cast<std::uint32_t>(n), kStripedSide, kStripedSide}, images);
  write_idx(dir / (prefix + "-labels-idx1-ubyte.gz"), {static_cast<std::uint32_t>(n)}, labels);
}

// The config of `diffode train` with task = "classifier" on the striped images in `data_dir`: a
// tiny classifier trained for `steps` steps into `checkpoint`, `extra` added to [train].
inline std::string striped_classifier_config(const std::filesystem::path& data_dir, std::int64_t steps, const std::filesystem::path& checkpoint,
                                             const std::string& extra = "") {
  return fmt::format(R"([classifier]
conv1 = 8
conv2 = 8
features = 16

[data]
kind = "fashion_mnist"
directory = "{}"

[train]
task = "classifier"
steps = {}
batch_size = 32
learning_rate = 3e-3
warmup_steps = 5
seed = 2
{}
[output]
file = "{}"
)",
                     data_dir.string(), steps, extra, checkpoint.string());
}

}  // namespace diffode::testing
