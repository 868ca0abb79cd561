#include "experiments/run/features.hpp"

#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "models/fashion_mnist.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <filesystem>

namespace diffode {

std::optional<std::string> fashion_mnist_operand(const std::string& operand) {
  if (operand == "fashion_mnist:test") return std::string("test");
  if (operand == "fashion_mnist:train") return std::string("train");
  return std::nullopt;
}

RowSource open_rows(const std::string& operand, const std::string& dataset, const std::string& labels) {
  RowSource s;
  if (const auto split = fashion_mnist_operand(operand)) {
    std::shared_ptr<const ImageSet> images;
    try {
      images = std::make_shared<const ImageSet>(read_fashion_mnist(*split));
    } catch (const std::exception& e) {
      throw ConfigError(fmt::format("{}: {}", operand, e.what()));
    }
    s.name = operand;
    s.rows = images->count(), s.cols = images->dims();
    s.read = [images](Index first, Index count) { return Batch(images->pixels.middleRows(first, count)); };
    s.has_labels = true;
    s.labels = [images] { return images->labels; };
    s.image_shape = {images->channels, images->height, images->width};
    return s;
  }
  if (operand.starts_with("fashion_mnist:"))
    throw ConfigError(fmt::format("{}: the Fashion-MNIST operands are fashion_mnist:test and fashion_mnist:train", operand));
  std::error_code ec;
  if (!std::filesystem::exists(operand, ec)) throw ConfigError(fmt::format("{}: no such file", operand));
  Index label_rows = -1;
  try {
    const Hdf5File h5(operand, Hdf5File::Mode::read);
    if (!h5.has(dataset)) {
      std::string names;
      for (const auto& m : h5.members("/")) names += (names.empty() ? "" : ", ") + m;
      throw ConfigError(fmt::format("{}: no dataset '{}' (members: {}); name one with --dataset", operand, dataset, names.empty() ? "none" : names));
    }
    std::tie(s.rows, s.cols) = h5.shape(dataset);
    if (!labels.empty() && h5.has(labels)) label_rows = h5.shape(labels).first;
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw ConfigError(what.starts_with(operand) ? what : fmt::format("{}: {}", operand, what));
  }
  s.name = fmt::format("{}:{}", operand, dataset);
  s.read = [operand, dataset](Index first, Index count) { return Hdf5File(operand, Hdf5File::Mode::read).read_rows(dataset, first, count); };
  if (label_rows >= 0) {
    if (label_rows != s.rows)
      throw ConfigError(fmt::format("{}: dataset '{}' has {} labels for {} rows of '{}'", operand, labels, label_rows, s.rows, dataset));
    s.has_labels = true;
    s.labels = [operand, labels] {
      std::vector<std::int64_t> out;
      for (double v : Hdf5File(operand, Hdf5File::Mode::read).read_vector(labels)) {
        if (!(v >= 0 && v == std::floor(v) && v < 1e9))
          throw ConfigError(fmt::format("{}: dataset '{}' holds {}: labels are integers >= 0", operand, labels, v));
        out.push_back(static_cast<std::int64_t>(v));
      }
      return out;
    };
  }
  return s;
}

FeatureChoice parse_feature_choice(const std::string& text) {
  FeatureChoice c;
  if (text == "raw" || text == "pixels") return c;
  for (const char* kind : {"classifier", "torchscript"}) {
    const std::string prefix = std::string(kind) + ":";
    if (text.starts_with(prefix)) {
      c.kind = kind;
      c.file = text.substr(prefix.size());
      if (c.file.empty()) throw ConfigError(fmt::format("--features {}: names no file (--features {}FILE)", text, prefix));
      return c;
    }
  }
  throw ConfigError(fmt::format("--features '{}': expected pixels (or raw), classifier:FILE or torchscript:FILE", text));
}

namespace {

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = text.find(',', begin);
    parts.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

}  // namespace

std::vector<Index> parse_shape(const std::string& text, const std::string& option) {
  std::vector<Index> shape;
  for (const std::string& part : split_commas(text)) {
    Index v = 0;
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || error != std::errc() || end != part.data() + part.size() || v < 1)
      throw ConfigError(fmt::format("{} '{}': expected positive integers separated by commas, e.g. 1,28,28", option, text));
    shape.push_back(v);
  }
  return shape;
}

std::pair<double, double> parse_affine(const std::string& text, const std::string& option) {
  const auto parts = split_commas(text);
  const auto number = [&](const std::string& part) {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || !std::isfinite(v))
      throw ConfigError(fmt::format("{} '{}': expected two finite numbers a,b (the network is handed a x + b)", option, text));
    return v;
  };
  if (parts.size() != 2) throw ConfigError(fmt::format("{} '{}': expected two finite numbers a,b (the network is handed a x + b)", option, text));
  return {number(parts[0]), number(parts[1])};
}

LoadedFeatures load_features(const FeatureChoice& choice, const FeatureSpec& spec_in, int threads) {
  LoadedFeatures out;
  if (choice.kind == "raw") return out;
  std::error_code ec;
  if (!std::filesystem::exists(choice.file, ec)) throw ConfigError(fmt::format("--features {}:{}: no such file", choice.kind, choice.file));
  FeatureSpec spec = spec_in;
  spec.kind = choice.kind;
  spec.file = choice.file;
  const NetworkBackend& backend = network_backend();
  try {
    out.network = backend.load_features(spec, NetworkRuntime{.device = "cpu", .dtype = spec.dtype, .batch_size = 500, .threads = std::max(1, threads)});
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("--features {}:{}: {}", choice.kind, choice.file, e.what()));
  }
  out.label = out.network->name();
  out.hash = out.network->sha256();
  out.feature = choice.kind == "classifier" ? out.network->name() : "torchscript:" + out.network->name();
  std::string shape;
  for (Index s : spec.input_shape) shape += (shape.empty() ? "" : ",") + std::to_string(s);
  if (choice.kind == "torchscript") out.feature += fmt::format(" (input {} {})", shape.empty() ? "rows" : shape, spec.dtype);
  if (spec.input_scale != 1.0 || spec.input_shift != 0.0) out.feature += fmt::format(" (input {:g} x + {:g})", spec.input_scale, spec.input_shift);
  return out;
}

FrechetStatistics feature_statistics(const RowSource& source, const LoadedFeatures& features, Index block_rows, int threads) {
  if (source.rows < 2)
    throw std::runtime_error(fmt::format("{}: {} rows; statistics need 2 or more", source.name, source.rows));
  if (block_rows < 1) throw std::invalid_argument("feature_statistics: block_rows must be >= 1");
  MomentAccumulator total;
  const Index chunk_rows = block_rows * std::max(1, threads);
  for (Index first = 0; first < source.rows; first += chunk_rows) {
    const Batch chunk = source.read(first, std::min(chunk_rows, source.rows - first));
    if (!chunk.isFinite().all())
      throw std::runtime_error(fmt::format("{}: non-finite values (rows {}..{})", source.name, first, first + chunk.rows() - 1));
    if (!features.network) {
      total.merge(block_moments(chunk, block_rows, threads));
      continue;
    }
    Batch mapped;
    try {
      mapped = features.network->features(chunk);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: features by {}: {}", source.name, features.label, e.what()));
    }
    if (!mapped.isFinite().all()) throw std::runtime_error(fmt::format("{}: {} gave non-finite features (rows {}..)", source.name, features.label, first));
    total.merge(block_moments(mapped, block_rows, threads));
  }
  FrechetStatistics s;
  s.feature = features.feature;
  s.feature_hash = features.hash;
  s.source = source.name;
  s.count = total.count();
  s.mean = total.mean();
  s.covariance = total.covariance();
  return s;
}

}  // namespace diffode
