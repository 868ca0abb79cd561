// What `diffode fd`, `diffode classify` and `diffode grid` read: sets of rows named on the command
// line (a sample file's dataset, or the Fashion-MNIST data as `fashion_mnist:test` /
// `fashion_mnist:train`, so that samples can be compared with the data without converting it), and
// the feature networks of `diffode fd --features` loaded through the network backend.
#pragma once

#include "experiments/run/frechet.hpp"
#include "models/network.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

// A set of rows read by chunks, with the labels of its rows when it has them.
struct RowSource {
  std::string name;  // "file:dataset" or "fashion_mnist:test"
  Index rows = 0, cols = 0;
  std::function<Batch(Index first, Index count)> read;
  bool has_labels = false;
  std::function<std::vector<std::int64_t>()> labels;  // one per row, when has_labels
  std::vector<Index> image_shape;                     // (C, H, W) when known (the Fashion-MNIST data)
};

// "fashion_mnist:test" or "fashion_mnist:train": the split; nullopt for anything else (a file).
std::optional<std::string> fashion_mnist_operand(const std::string& operand);

// Opens `operand`: a Fashion-MNIST operand, or an HDF5 file's N x D `dataset` whose labels, if any,
// are the integer dataset `labels` (one per row). Throws ConfigError naming the path and what is
// wrong (missing file or dataset, labels of the wrong count or not integers).
RowSource open_rows(const std::string& operand, const std::string& dataset, const std::string& labels = "labels");

// `--features`: "raw" or "pixels" (the rows as stored), "classifier:FILE" (a checkpoint of
// `diffode train`'s classifier task) or "torchscript:FILE". Throws ConfigError naming --features.
struct FeatureChoice {
  std::string kind = "raw";  // "raw", "classifier", "torchscript"
  std::string file;
};
FeatureChoice parse_feature_choice(const std::string& text);
// "1,28,28" (positive integers) and "a,b" (finite numbers); throw ConfigError naming `option`.
std::vector<Index> parse_shape(const std::string& text, const std::string& option);
std::pair<double, double> parse_affine(const std::string& text, const std::string& option);

// A loaded feature network and what identifies its features in statistics files: `feature` (the
// network's name, and its input transform when it is not the identity) and its file's SHA-256.
struct LoadedFeatures {
  std::shared_ptr<const FeatureNetwork> network;  // null for raw
  std::string label = "raw";                      // the short name: FD_<label>
  std::string feature = "raw";
  std::string hash = "none";
};
LoadedFeatures load_features(const FeatureChoice& choice, const FeatureSpec& spec, int threads);

// The Frechet statistics of a source's rows mapped through `features` (raw: the rows): chunks of up
// to `threads` blocks of `block_rows` rows read, mapped, and their moments merged in order (the
// same blocks as raw_statistics). Throws std::runtime_error naming the source.
FrechetStatistics feature_statistics(const RowSource& source, const LoadedFeatures& features, Index block_rows = 4096, int threads = 1);

}  // namespace diffode
