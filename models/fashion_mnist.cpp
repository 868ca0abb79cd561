#include "models/fashion_mnist.hpp"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

namespace diffode {

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

IdxArray read_idx(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) throw std::runtime_error(fmt::format("{}: no such file", file.string()));
  // gzread reads plain files too (transparently), so uncompressed IDX files work as well.
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(file.c_str(), "rb"), gzclose);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open", file.string()));
  const auto read = [&](void* out, std::size_t n, const char* what) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(in.get(), static_cast<char*>(out) + done, chunk);
      if (got <= 0) throw std::runtime_error(fmt::format("{}: truncated or corrupt ({})", file.string(), what));
      done += static_cast<std::size_t>(got);
    }
  };
  const auto big_endian = [](const unsigned char b[4]) {
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
  };
  unsigned char word[4];
  read(word, 4, "magic number");
  if (word[0] != 0 || word[1] != 0 || word[2] != 0x08 || word[3] < 1 || word[3] > 4)
    throw std::runtime_error(fmt::format("{}: not an IDX file of unsigned bytes (magic {:02x}{:02x}{:02x}{:02x})", file.string(),
                                         word[0], word[1], word[2], word[3]));
  IdxArray array;
  std::size_t total = 1;
  for (int d = 0; d < word[3]; ++d) {
    unsigned char size[4];
    read(size, 4, "dimension sizes");
    array.shape.push_back(big_endian(size));
    total *= array.shape.back();
  }
  if (total > (std::size_t{1} << 34)) throw std::runtime_error(fmt::format("{}: implausible size", file.string()));
  array.bytes.resize(total);
  read(array.bytes.data(), total, "data");
  return array;
}

std::uint8_t pixel_byte(double x) {
  const double p = std::round((x + 1.0) * 127.5);
  return static_cast<std::uint8_t>(std::clamp(p, 0.0, 255.0));
}

ImageSet read_fashion_mnist(std::string_view split, const std::filesystem::path& directory) {
  std::string prefix;
  if (split == "train") prefix = "train";
  else if (split == "test") prefix = "t10k";
  else throw std::invalid_argument(fmt::format("Fashion-MNIST split \"{}\": expected \"train\" or \"test\"", split));
  const auto path = [&](std::string_view kind) { return directory / fmt::format("{}-{}-ubyte.gz", prefix, kind); };
  for (const auto& file : {path("images-idx3"), path("labels-idx1")})
    if (!std::filesystem::exists(file))
      throw std::runtime_error(fmt::format("{}: no such file (Fashion-MNIST comes from Debian's dataset-fashion-mnist package: "
                                           "run scripts/install-deps.sh)",
                                           file.string()));
  const IdxArray images = read_idx(path("images-idx3"));
  const IdxArray labels = read_idx(path("labels-idx1"));
  if (images.shape.size() != 3 || labels.shape.size() != 1 || images.shape[0] != labels.shape[0])
    throw std::runtime_error(fmt::format("{}: {} images do not match {} labels in {}", path("images-idx3").string(),
                                         images.shape.empty() ? 0 : images.shape[0], labels.shape.empty() ? 0 : labels.shape[0],
                                         path("labels-idx1").string()));
  ImageSet set;
  set.height = images.shape[1];
  set.width = images.shape[2];
  const Index n = images.shape[0];
  set.pixels.resize(n, set.dims());
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < set.dims(); ++j) set.pixels(i, j) = images.bytes[i * set.dims() + j] / 127.5 - 1.0;
  set.labels.resize(n);
  for (Index i = 0; i < n; ++i) {
    set.labels[i] = labels.bytes[i];
    if (set.labels[i] >= kFashionMnistClasses)
      throw std::runtime_error(fmt::format("{}: label {} of image {} is not a class 0..9", path("labels-idx1").string(), set.labels[i], i));
  }
  return set;
}

}  // namespace diffode
