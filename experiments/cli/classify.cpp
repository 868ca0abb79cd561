// `diffode classify SAMPLES.h5 --classifier FILE`: runs a classifier trained by `diffode train`
// ([train] task = "classifier") over a set of rows, and reports per requested class (the integer
// dataset `labels` of a class-conditional sample file) the fraction the classifier assigns to it.
#include "experiments/cli/commands.hpp"
#include "experiments/run/classifier_training.hpp"
#include "experiments/run/features.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {

std::string classify_help() {
  return "The input is a sample file (its rows: --dataset, by default 'samples') or the Fashion-MNIST data\n"
         "(fashion_mnist:test, fashion_mnist:train). When it has an integer dataset --labels (default 'labels', one per row:\n"
         "the class each sample was asked to be), prints per class the rows requested and the fraction the classifier\n"
         "assigns to that class, and the overall accuracy; on fashion_mnist:test that accuracy is the classifier's test\n"
         "accuracy. Without labels, prints the share of rows assigned to each class. --output writes HDF5: predicted (one\n"
         "per row), assigned (per class) and, with labels, requested, hits and fraction (per class); root attributes\n"
         "classifier, sha256, source, rows, accuracy.\n"
         "Exit: 0 done, 2 bad input (a missing file or dataset, labels outside the classes, an unreadable classifier).";
}

int run_classify_command(const ClassifyOptions& o) {
  try {
    if (o.classifier.empty()) throw ConfigError("--classifier: must name a classifier checkpoint");
    const RowSource source = open_rows(o.input, o.dataset, o.labels);
    const LoadedFeatures loaded = load_features(FeatureChoice{.kind = "classifier", .file = o.classifier}, FeatureSpec{}, o.threads);
    const FeatureNetwork& classifier = *loaded.network;
    if (source.cols != classifier.input_dims())
      throw ConfigError(fmt::format("{}: rows of {} values; the classifier {} takes {}", source.name, source.cols, o.classifier, classifier.input_dims()));
    if (source.rows < 1) throw ConfigError(fmt::format("{}: no rows", source.name));
    const std::vector<std::int64_t> labels = source.has_labels ? source.labels() : std::vector<std::int64_t>{};
    for (std::int64_t l : labels)
      if (l >= classifier.classes())
        throw ConfigError(fmt::format("{}: label {} outside the classifier's classes 0..{}", o.input, l, classifier.classes() - 1));
    const Batch rows = source.read(0, source.rows);
    if (!rows.isFinite().all()) throw ConfigError(fmt::format("{}: non-finite values", source.name));
    if (!o.output.empty()) check_output_option("--output", o.output, 16.0 * static_cast<double>(rows.rows()) + (1 << 16));
    const ClassTally t = classify_rows(classifier, rows, labels);
    const bool named = classifier.classes() == kFashionMnistClasses && classifier.name() == "fmnist-classifier";
    const auto class_name = [&](Index k) { return named ? fashion_mnist_class_names()[k] : fmt::format("class {}", k); };
    std::cout << fmt::format("classifier {} ({}, sha256 {}) on {} rows of {}\n", o.classifier, classifier.name(), classifier.sha256(), t.rows(),
                             source.name);
    std::vector<double> fraction;
    if (!labels.empty()) {
      std::cout << fmt::format("{:>5}  {:<12} {:>9} {:>9} {:>9}\n", "class", "name", "requested", "assigned", "fraction");
      for (Index k = 0; k < t.classes; ++k) {
        fraction.push_back(t.requested[k] > 0 ? static_cast<double>(t.hits[k]) / static_cast<double>(t.requested[k]) : std::nan(""));
        if (t.requested[k] == 0) continue;
        std::cout << fmt::format("{:>5}  {:<12} {:>9} {:>9} {:>9.4f}\n", k, class_name(k), t.requested[k], t.hits[k], fraction.back());
      }
      std::cout << fmt::format("accuracy {:.4f} ({} of {} rows assigned to their requested class)\n", t.accuracy(), t.total_hits(), t.rows());
    } else {
      std::cout << fmt::format("no dataset '{}': the share of rows assigned to each class\n{:>5}  {:<12} {:>9} {:>9}\n", o.labels, "class", "name",
                               "assigned", "share");
      for (Index k = 0; k < t.classes; ++k)
        std::cout << fmt::format("{:>5}  {:<12} {:>9} {:>9.4f}\n", k, class_name(k), t.assigned[k],
                                 static_cast<double>(t.assigned[k]) / static_cast<double>(t.rows()));
    }
    if (!o.output.empty()) {
      const auto as_doubles = [](const auto& values) { return std::vector<double>(values.begin(), values.end()); };
      write_atomically(o.output, [&](Hdf5File& h5) {
        h5.write_attribute("/", "classifier", o.classifier);
        h5.write_attribute("/", "sha256", classifier.sha256());
        h5.write_attribute("/", "source", source.name);
        h5.write_attribute("/", "rows", static_cast<double>(t.rows()));
        h5.write_attribute("/", "accuracy", t.accuracy());
        h5.write_vector("predicted", as_doubles(t.predicted));
        h5.write_vector("assigned", as_doubles(t.assigned));
        if (!labels.empty()) {
          h5.write_vector("requested", as_doubles(t.requested));
          h5.write_vector("hits", as_doubles(t.hits));
          h5.write_vector("fraction", fraction);
        }
      });
      std::cout << fmt::format("-> {}\n", o.output);
    }
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "diffode classify: " << e.what() << "\n";
    return 2;
  } catch (const std::runtime_error& e) {
    std::cerr << "diffode classify: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace diffode
