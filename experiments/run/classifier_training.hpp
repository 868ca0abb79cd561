// `diffode train` with [train] task = "classifier": an image classifier (models/network.hpp's
// ClassifierArchitecture) trained by cross-entropy through the network backend, then scored on the
// test images. Also what classifying rows needs (`diffode classify`, the test accuracy): feature
// networks loaded through the backend and the tally of their predictions.
#pragma once

#include "experiments/cli/commands.hpp"
#include "experiments/run/config.hpp"
#include "models/fashion_mnist.hpp"
#include "models/network.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace diffode {

const TableSchema& classifier_schema();
const TableSchema& classifier_data_schema();
const TableSchema& classifier_train_schema();

// The task of a training config: [train] task, "score" (the default) or "classifier". Throws
// ConfigError naming the key for another value.
std::string training_task(const std::filesystem::path& config);

struct ClassifierRun {
  ClassifierTrainingSpec spec;
  std::string data_description;
  std::filesystem::path directory;  // the Fashion-MNIST files
  Index test_rows = 0;              // 0: all 10,000
  std::string checkpoint, history, checkpoint_key, history_key;
  std::string config_text;
};

// Reads and checks the whole config (the training images included); throws ConfigError naming
// file, line and key.
ClassifierRun read_classifier_run(const std::filesystem::path& config);

// What a classifier assigns to rows whose requested classes are known (or not).
struct ClassTally {
  Index classes = 0;
  std::vector<std::int64_t> predicted;  // argmax of the logits, one per row
  std::vector<Index> requested;         // rows per requested class (empty when rows have no labels)
  std::vector<Index> hits;              // of those, assigned to their requested class
  std::vector<Index> assigned;          // rows assigned to each class
  Index rows() const { return static_cast<Index>(predicted.size()); }
  Index total_hits() const;
  double accuracy() const;  // hits / rows with labels
};

// The classifier's predictions for `rows` (labels: empty, or one per row in 0..classes-1), taken in
// blocks of `block_rows` rows. Throws std::invalid_argument on a label outside the classes.
ClassTally classify_rows(const FeatureNetwork& classifier, const Batch& rows, const std::vector<std::int64_t>& labels, Index block_rows = 1000);

// `diffode train` for task = "classifier"; the same exit codes as run_train_command.
int run_classifier_train_command(const std::filesystem::path& config, const ProvenanceSource& provenance, const TrainOptions& options);

}  // namespace diffode
