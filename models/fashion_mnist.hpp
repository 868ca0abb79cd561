// Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, arXiv:1708.07747): 70,000 grey 28x28 images of
// clothing in 10 classes, read from the IDX files of Debian's dataset-fashion-mnist package
// (/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz).
//
// IDX format (LeCun et al.'s MNIST page): a big-endian magic word 0x00000803 (unsigned bytes, 3
// dimensions) or 0x00000801 (1 dimension), then each dimension's size as a big-endian uint32, then
// the bytes in row-major order. The files are gzip-compressed; zlib reads them as they are.
#pragma once

#include "core/state.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace diffode {

// Where Debian's package puts the files.
inline constexpr std::string_view kFashionMnistDirectory = "/usr/share/datasets/fashion-mnist";
inline constexpr int kFashionMnistClasses = 10;
// The class names, in label order.
const std::vector<std::string>& fashion_mnist_class_names();

struct ImageSet {
  Index channels = 1, height = 0, width = 0;
  // One image per row, channel-major then row-major (C x H x W), pixels scaled from [0, 255] to
  // [-1, 1] as x = 2 p / 255 - 1.
  Batch pixels;
  std::vector<std::int64_t> labels;  // one per row
  Index count() const { return pixels.rows(); }
  Index dims() const { return channels * height * width; }
};

// One IDX file of unsigned bytes (gzip-compressed or not): its dimension sizes and bytes. Throws
// std::runtime_error naming the file when it is missing, truncated or not an IDX file of bytes.
struct IdxArray {
  std::vector<std::uint32_t> shape;
  std::vector<std::uint8_t> bytes;
};
IdxArray read_idx(const std::filesystem::path& file);

// The "train" (60,000 images) or "test" (10,000) split from `directory`. Throws std::runtime_error
// naming the missing file and the package that provides it, or the mismatch between the image and
// label files.
ImageSet read_fashion_mnist(std::string_view split, const std::filesystem::path& directory = kFashionMnistDirectory);

// Pixels in [-1, 1] back to bytes (rounded, clamped), the inverse of read_fashion_mnist's scaling.
std::uint8_t pixel_byte(double x);

}  // namespace diffode
