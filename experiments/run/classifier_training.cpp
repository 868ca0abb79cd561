#include "experiments/run/classifier_training.hpp"

#include "core/splitmix.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/provenance.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/schema.hpp"
#include "experiments/run/training.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>

namespace diffode {
namespace {

std::string describe(const ClassifierArchitecture& a) {
  return fmt::format("classifier '{}' of {}x{}x{} images: conv {} and {} (3x3, GroupNorm, ReLU, 2x2 max-pool), {} features, {} classes", a.name,
                     a.channels, a.height, a.width, a.conv1, a.conv2, a.features, a.classes);
}

}  // namespace

const TableSchema& classifier_schema() {
  static const TableSchema s{
      "classifier",
      "diffode train, task = \"classifier\": the image classifier (models/network.hpp's ClassifierArchitecture)",
      {integer_key("conv1", "channels of the first 3x3 convolution (a multiple of 8: GroupNorm's groups)").fallback_int(32).at_least(8).at_most(4096),
       integer_key("conv2", "channels of the second 3x3 convolution (a multiple of 8)").fallback_int(64).at_least(8).at_most(4096),
       integer_key("features", "units of the penultimate layer: the features of `diffode fd --features classifier:FILE`")
           .fallback_int(128)
           .at_least(1)
           .at_most(65536)}};
  return s;
}

const TableSchema& classifier_data_schema() {
  static const TableSchema s{
      "data",
      "diffode train, task = \"classifier\": labelled images, drawn with replacement by (seed, step)",
      {string_key("kind", "the image set").fallback_str("fashion_mnist").one_of({"fashion_mnist"}),
       string_key("directory", "the folder of the IDX files (Debian's dataset-fashion-mnist)").fallback_str(std::string(kFashionMnistDirectory)),
       integer_key("train_rows", "train on the first this many training images (0: all 60,000)").fallback_int(0).at_least(0),
       integer_key("test_rows", "score on the first this many test images (0: all 10,000)").fallback_int(0).at_least(0)}};
  return s;
}

const TableSchema& classifier_train_schema() {
  static const TableSchema s{
      "train",
      "diffode train, task = \"classifier\": cross-entropy with AdamW, a linear warm-up and a cosine decay to 0",
      {string_key("task", "what is trained: a score network, or an image classifier").fallback_str("score").one_of({"score", "classifier"}),
       integer_key("steps", "optimiser steps").fallback_int(1000).at_least(1).at_most(1'000'000'000),
       integer_key("batch_size", "images per step").fallback_int(128).at_least(1).at_most(1 << 20),
       number_key("learning_rate", "AdamW's peak learning rate").fallback(2e-3).above(0).at_most(10),
       number_key("weight_decay", "AdamW's decoupled weight decay").fallback(1e-4).at_least(0),
       integer_key("warmup_steps", "linear warm-up steps").fallback_int(100).at_least(0),
       integer_key("checkpoint_every", "write the checkpoint every this many steps (0: only at the end and on ^C)").fallback_int(500).at_least(0),
       integer_key("seed", "seed of the initial weights and the data draws").fallback_int(0).at_least(0),
       string_key("device", "where training runs").fallback_str("cpu").one_of({"cpu", "cuda"}),
       string_key("dtype", "the network's floating-point type").fallback_str("float32").one_of({"float32", "float64"})}};
  return s;
}

std::string training_task(const std::filesystem::path& config_path) {
  const Config config(config_path);
  const auto train = config.root().peek("train");
  if (!train || !train->has("task")) return "score";
  ConfigTable t = *train;
  return t.string("task", std::nullopt, {"score", "classifier"});
}

ClassifierRun read_classifier_run(const std::filesystem::path& config_path) {
  ClassifierRun run;
  const Config config(config_path);
  run.config_text = config.text();
  ConfigTable root = config.root();
  reject_undeclared_keys(root, {&classifier_schema(), &classifier_data_schema(), &classifier_train_schema(), &training_output_schema()});
  ClassifierTrainingSpec& s = run.spec;

  ConfigTable net = root.table("classifier", classifier_schema());
  ClassifierArchitecture& a = s.architecture;
  a.conv1 = net.integer("conv1");
  a.conv2 = net.integer("conv2");
  a.features = net.integer("features");
  for (const char* key : {"conv1", "conv2"})
    if (net.integer(key) % 8 != 0) net.fail(key, fmt::format("{}: must be a multiple of 8 (GroupNorm's 8 groups)", net.integer(key)));
  net.finish();

  ConfigTable train = root.table("train", classifier_train_schema());
  if (train.string("task") != "classifier") train.fail("task", "read_classifier_run reads task = \"classifier\" configs");
  read_train_optimiser_keys(train, s);
  read_train_run_keys(train, s);
  train.finish();

  ConfigTable data = root.table("data", classifier_data_schema());
  data.string("kind");
  run.directory = data.string("directory");
  const Index train_rows = data.integer("train_rows");
  run.test_rows = data.integer("test_rows");
  data.finish();
  auto images = std::make_shared<ImageSet>();
  try {
    *images = read_fashion_mnist("train", run.directory);
  } catch (const std::exception& e) {
    data.fail("directory", e.what());
  }
  if (train_rows > images->count())
    data.fail("train_rows", fmt::format("{}: the training set has {} images", train_rows, images->count()));
  if (train_rows > 0) {
    images->pixels.conservativeResize(train_rows, Eigen::NoChange);
    images->labels.resize(train_rows);
  }
  a.channels = images->channels, a.height = images->height, a.width = images->width;
  a.classes = kFashionMnistClasses;
  a.name = "fmnist-classifier";
  run.data_description = fmt::format("{} Fashion-MNIST training images ({}x{}) of {}, drawn with replacement", images->count(), a.height, a.width,
                                     run.directory.string());
  const std::int64_t batch = s.batch_size;
  const std::uint64_t seed = s.seed;
  s.data = [images, batch, seed](std::uint64_t step) {
    TrainingBatch out;
    out.x0.resize(batch, images->dims());
    const auto rows = static_cast<std::uint64_t>(images->count());
    for (std::int64_t i = 0; i < batch; ++i) {
      const std::uint64_t row = splitmix64(splitmix64(seed ^ 0x636c617373696679ULL) + step * static_cast<std::uint64_t>(batch) + i) % rows;
      out.x0.row(i) = images->pixels.row(static_cast<Index>(row));
      out.labels.push_back(images->labels[row]);
    }
    return out;
  };

  const double parameters = 9.0 * (a.channels * a.conv1 + a.conv1 * a.conv2) + static_cast<double>(a.conv2 * (a.height / 4) * (a.width / 4)) * a.features +
                            static_cast<double>(a.features * a.classes);
  read_training_output(root, 3 * 8 * parameters + (1 << 16), run, s);
  return run;
}

Index ClassTally::total_hits() const {
  Index n = 0;
  for (Index h : hits) n += h;
  return n;
}

double ClassTally::accuracy() const {
  Index n = 0;
  for (Index r : requested) n += r;
  return n > 0 ? static_cast<double>(total_hits()) / static_cast<double>(n) : std::nan("");
}

ClassTally classify_rows(const FeatureNetwork& classifier, const Batch& rows, const std::vector<std::int64_t>& labels, Index block_rows) {
  ClassTally t;
  t.classes = classifier.classes();
  if (t.classes < 1) throw std::invalid_argument(fmt::format("{}: not a classifier (no logits)", classifier.name()));
  if (!labels.empty() && static_cast<Index>(labels.size()) != rows.rows())
    throw std::invalid_argument(fmt::format("{} labels for {} rows", labels.size(), rows.rows()));
  for (std::int64_t l : labels)
    if (l < 0 || l >= t.classes) throw std::invalid_argument(fmt::format("label {} outside the classifier's classes 0..{}", l, t.classes - 1));
  t.assigned.assign(t.classes, 0);
  if (!labels.empty()) t.requested.assign(t.classes, 0), t.hits.assign(t.classes, 0);
  const Index block = std::max<Index>(1, block_rows);
  for (Index first = 0; first < rows.rows(); first += block) {
    const Index count = std::min(block, rows.rows() - first);
    const Batch logits = classifier.logits(rows.middleRows(first, count));
    for (Index i = 0; i < count; ++i) {
      Index best = 0;
      logits.row(i).maxCoeff(&best);
      t.predicted.push_back(best);
      ++t.assigned[best];
      if (!labels.empty()) {
        const std::int64_t want = labels[first + i];
        ++t.requested[want];
        if (want == best) ++t.hits[want];
      }
    }
  }
  return t;
}

int run_classifier_train_command(const std::filesystem::path& config_path, const ProvenanceSource& provenance_source, const TrainOptions& options) {
  ClassifierRun run;
  ImageSet test;
  try {
    run = read_classifier_run(config_path);
    if (options.resume) {
      if (!std::filesystem::exists(run.checkpoint))
        throw ConfigError(fmt::format("--resume: no checkpoint at {} ({}) to resume from", run.checkpoint, run.checkpoint_key));
      run.spec.resume_from = run.checkpoint;
    }
    test = read_fashion_mnist("test", run.directory);
    if (run.test_rows > test.count()) throw ConfigError(fmt::format("[data] test_rows = {}: the test set has {} images", run.test_rows, test.count()));
    if (run.test_rows > 0) {
      test.pixels.conservativeResize(run.test_rows, Eigen::NoChange);
      test.labels.resize(run.test_rows);
    }
  } catch (const std::exception& e) {
    std::cerr << "diffode train: " << e.what() << "\n";
    return 2;
  }
  const NetworkBackend* backend = training_backend();
  if (!backend) return 2;
  const Provenance provenance = provenance_source();
  run.spec.threads = std::max(1, options.threads);
  std::cout << fmt::format("training a {} on {}: {} steps of {} images{}\n", describe(run.spec.architecture), run.data_description, run.spec.steps,
                           run.spec.batch_size, options.resume ? fmt::format(", resuming from {}", run.checkpoint) : "")
            << std::flush;
  const auto start = std::chrono::steady_clock::now();
  std::vector<TrainingProgress> seen;
  const std::int64_t tenth = std::max<std::int64_t>(1, run.spec.steps / 10);
  const auto progress = [&](const TrainingProgress& p) {
    seen.push_back(p);
    if (p.step % tenth == 0 || p.step == run.spec.steps)
      std::cout << fmt::format("step {}/{}  loss {:.4f} (last 100)  lr {:.3g}  elapsed {:.0f} s\n", p.step, run.spec.steps, recent_loss(seen),
                               p.learning_rate, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count())
                << std::flush;
  };
  TrainingOutcome outcome;
  if (const int code = train_interruptibly([&](const std::function<bool()>& stop) { return backend->train_classifier(run.spec, progress, stop); },
                                           nullptr, outcome))
    return code;
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The test accuracy of the weights just written, read back as any user of the checkpoint reads them.
  ClassTally tally;
  double accuracy = std::nan("");
  if (!outcome.interrupted) {
    try {
      FeatureSpec fs;
      fs.kind = "classifier";
      fs.file = run.checkpoint;
      fs.dtype = run.spec.dtype;
      const auto classifier = backend->load_features(fs, NetworkRuntime{.device = run.spec.device, .dtype = run.spec.dtype, .batch_size = 1000,
                                                                         .threads = run.spec.threads});
      tally = classify_rows(*classifier, test.pixels, test.labels);
      accuracy = tally.accuracy();
    } catch (const std::exception& e) {
      std::cerr << "diffode train: failed scoring the test images: " << e.what() << "\n";
      return 1;
    }
  }
  try {
    write_atomically(run.history, [&](Hdf5File& h5) {
      write_provenance(h5, provenance);
      h5.write_attribute("/", "config", run.config_text);
      h5.write_attribute("/", "task", "classifier");
      h5.write_attribute("/", "status", outcome.interrupted ? "interrupted" : "ok");
      h5.write_attribute("/", "checkpoint", run.checkpoint);
      h5.write_attribute("/", "network", describe(run.spec.architecture));
      h5.write_attribute("/", "data", run.data_description);
      h5.write_attribute("/", "steps_done", static_cast<double>(outcome.steps_done));
      h5.write_attribute("/", "steps", static_cast<double>(run.spec.steps));
      h5.write_attribute("/", "batch_size", static_cast<double>(run.spec.batch_size));
      h5.write_attribute("/", "threads", static_cast<double>(run.spec.threads));
      h5.write_attribute("/", "final_loss", recent_loss(outcome.history));
      h5.write_attribute("/", "train_seconds", train_seconds);
      h5.write_attribute("/", "test_accuracy", accuracy);
      h5.write_attribute("/", "test_images", static_cast<double>(tally.rows()));
      write_history_steps(h5, outcome.history);
      if (!tally.requested.empty()) {
        std::vector<double> per_class;
        for (Index k = 0; k < tally.classes; ++k)
          per_class.push_back(tally.requested[k] > 0 ? static_cast<double>(tally.hits[k]) / static_cast<double>(tally.requested[k]) : std::nan(""));
        h5.write_vector("test_accuracy_per_class", per_class);
      }
    });
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode train: {}: cannot write the history: {}\n", run.history_key, e.what());
    return 2;
  }
  std::cout << fmt::format("{} {} steps in {:.1f} s; final loss {:.4f} (mean of the last 100 steps); checkpoint {}, history {}\n",
                           outcome.interrupted ? "interrupted after" : "trained", outcome.steps_done, train_seconds, recent_loss(outcome.history),
                           run.checkpoint, run.history);
  if (!outcome.interrupted)
    std::cout << fmt::format("test_accuracy {:.4f} ({} of {} test images)\n", accuracy, tally.total_hits(), tally.rows());
  return outcome.interrupted ? 130 : 0;
}

}  // namespace diffode
