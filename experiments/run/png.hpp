// PNG files by libpng: 8-bit grey or RGB images, written for sample grids (`diffode grid`) and read
// back by the tests. No LibTorch.
#pragma once

#include "core/state.hpp"

#include <cstdint>
#include <filesystem>
#include <vector>

namespace diffode {

struct PngImage {
  Index width = 0, height = 0;
  Index channels = 1;               // 1: grey, 3: RGB
  std::vector<std::uint8_t> bytes;  // row-major, channels interleaved: height * width * channels
  std::uint8_t at(Index row, Index column, Index channel = 0) const {
    return bytes[static_cast<std::size_t>((row * width + column) * channels + channel)];
  }
};

// Writes through a temporary file beside `path` and a rename (a crash leaves the old file or the new
// one). Throws std::runtime_error naming the path (and std::invalid_argument for an inconsistent image).
void write_png(const std::filesystem::path& path, const PngImage& image);
// Reads an 8-bit grey or RGB PNG (others are refused by name). Throws std::runtime_error naming the path.
PngImage read_png(const std::filesystem::path& path);

}  // namespace diffode
