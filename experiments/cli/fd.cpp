// `diffode fd A.h5 [B.h5]`: the Frechet distance between two sets of rows (experiments/run/frechet.hpp),
// on the rows themselves or on a feature network's features (experiments/run/features.hpp).
#include "experiments/cli/commands.hpp"
#include "experiments/run/features.hpp"
#include "experiments/run/frechet.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {
namespace {

// A statistics file's statistics, or nullopt when `path` is not one (a sample file).
std::optional<FrechetStatistics> cached_statistics(const std::string& path, const FdOptions& o) {
  if (path.starts_with("fashion_mnist:")) return std::nullopt;  // the data (open_rows names the operands it knows)
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw ConfigError(fmt::format("{}: no such file", path));
  try {
    const Hdf5File h5(path, Hdf5File::Mode::read);
    if (!is_statistics_file(h5)) return std::nullopt;
    if (o.dataset_given)
      throw ConfigError(fmt::format("{}: a statistics file (its moments are cached); --dataset names a dataset of a sample file", path));
    return read_statistics(h5);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw ConfigError(what.starts_with(path) ? what : fmt::format("{}: {}", path, what));
  }
}

// The rows' statistics under `features`. Bad input (a missing file or dataset, too few rows,
// non-finite values) throws ConfigError naming the path.
FrechetStatistics input_statistics(const std::string& path, const FdOptions& o, const LoadedFeatures& features) {
  const RowSource source = open_rows(path, o.dataset, "");
  if (features.network && features.network->input_dims() > 0 && source.cols != features.network->input_dims())
    throw ConfigError(fmt::format("{}: rows of {} values; the feature network {} takes {} (set --input-shape)", source.name, source.cols,
                                  features.label, features.network->input_dims()));
  try {
    return feature_statistics(source, features, o.block_rows, o.threads);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw ConfigError(what.starts_with(path) ? what : fmt::format("{}: {}", path, what));
  }
}

// The short name of statistics' features, for the printed distance: "raw", or the network's name.
std::string feature_label(const std::string& feature) {
  std::string label = feature.substr(0, feature.find(" ("));
  if (label.starts_with("torchscript:")) label = label.substr(12);
  return label;
}

}  // namespace

std::string fd_help() {
  return "Each input is a sample file (its rows: --dataset, by default 'samples', as diffode sample writes them), the\n"
         "Fashion-MNIST data (fashion_mnist:test or fashion_mnist:train), or a statistics file written by --save-stats (mean,\n"
         "covariance, count, feature name and the SHA-256 of the feature network's file).\n"
         "--features: pixels (raw, the default: the rows as stored, no network), classifier:FILE (the penultimate layer of a\n"
         "classifier trained by `diffode train` with [train] task = \"classifier\"; printed as FD_<its name>, e.g.\n"
         "FD_fmnist-classifier, never FID) or torchscript:FILE (a TorchScript module taking [N, C, H, W] as --input-shape, or\n"
         "the rows as stored, and returning [N, F]; e.g. pytorch-fid's Inception-v3, see README). --input-scale a,b hands\n"
         "the network a x + b of the stored values x. Cached statistics made with other features (name or file hash) are\n"
         "refused. Moments are float64, accumulated by blocks of --block-rows rows (results depend on it, not on --threads).\n"
         "Prints the Frechet distance |m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2) (finite also when there\n"
         "are fewer samples than dimensions).\n"
         "Exit: 0 done, 2 bad input (a missing file or dataset, too few rows, non-finite values, statistics of different\n"
         "features or dimensions, an unwritable --save-stats path; nothing written).";
}

int run_fd_command(const FdOptions& o) {
  try {
    if (o.inputs.empty() || o.inputs.size() > 2) throw ConfigError("diffode fd takes one or two input files");
    if (o.inputs.size() == 1 && o.save_stats.empty())
      throw ConfigError("one input: nothing to do (give a second file to compare with, or --save-stats to cache its statistics)");
    if (!o.save_stats.empty() && o.save_stats.size() != o.inputs.size())
      throw ConfigError(fmt::format("--save-stats: {} paths for {} inputs (one per input, in order)", o.save_stats.size(), o.inputs.size()));
    if (o.block_rows < 1) throw ConfigError("--block-rows: must be >= 1");
    const FeatureChoice choice = parse_feature_choice(o.features);
    FeatureSpec spec;
    if (!o.input_shape.empty()) spec.input_shape = parse_shape(o.input_shape, "--input-shape");
    if (!o.input_scale.empty()) std::tie(spec.input_scale, spec.input_shift) = parse_affine(o.input_scale, "--input-scale");
    if (o.feature_dtype != "float32" && o.feature_dtype != "float64")
      throw ConfigError(fmt::format("--feature-dtype '{}': float32 or float64", o.feature_dtype));
    spec.dtype = o.feature_dtype;
    if (choice.kind == "raw" && (!o.input_shape.empty() || !o.input_scale.empty()))
      throw ConfigError("--input-shape and --input-scale apply to a feature network (--features classifier:FILE or torchscript:FILE)");

    std::vector<std::optional<FrechetStatistics>> cached;
    bool any_rows = false;
    for (const auto& input : o.inputs) {
      cached.push_back(cached_statistics(input, o));
      any_rows = any_rows || !cached.back();
    }
    // The features asked for (or, when every input is cached and --features was not given, theirs).
    LoadedFeatures features;
    if (any_rows || o.features_given) features = load_features(choice, spec, o.threads);
    std::vector<FrechetStatistics> stats;
    for (std::size_t i = 0; i < o.inputs.size(); ++i) {
      if (cached[i]) {
        const FrechetStatistics& c = *cached[i];
        if ((any_rows || o.features_given) && (c.feature != features.feature || c.feature_hash != features.hash))
          throw ConfigError(fmt::format("{}: statistics of features '{}' (hash {}), but --features asks for '{}' (hash {}): recompute them "
                                        "with the same --features",
                                        o.inputs[i], c.feature, c.feature_hash, features.feature, features.hash));
        stats.push_back(c);
      } else {
        stats.push_back(input_statistics(o.inputs[i], o, features));
      }
    }
    double distance = 0;
    if (stats.size() == 2) {
      try {
        distance = frechet_distance(stats[0], stats[1]);
      } catch (const std::invalid_argument& e) {
        throw ConfigError(fmt::format("{} and {}: {}", o.inputs[0], o.inputs[1], e.what()));
      }
    }
    for (std::size_t i = 0; i < o.save_stats.size(); ++i) {
      const double d = static_cast<double>(stats[i].mean.size());
      check_output_option("--save-stats", o.save_stats[i], 8.0 * d * (d + 1.0) + (1 << 16));
    }
    for (std::size_t i = 0; i < o.save_stats.size(); ++i) {
      try {
        write_atomically(o.save_stats[i], [&](Hdf5File& out) { write_statistics(out, stats[i]); });
      } catch (const std::exception& e) {
        throw ConfigError(fmt::format("--save-stats {}: cannot write the statistics: {}", o.save_stats[i], e.what()));
      }
      std::cout << fmt::format("statistics of {} ({} rows, {} dimensions, feature {}) -> {}\n", o.inputs[i], stats[i].count,
                               stats[i].mean.size(), stats[i].feature, o.save_stats[i]);
    }
    if (stats.size() == 2) {
      const std::string label = feature_label(stats[0].feature);
      if (label == "raw")
        std::cout << fmt::format("frechet_distance {} (feature raw, {} dimensions, {} and {} rows)\n", distance, stats[0].mean.size(),
                                 stats[0].count, stats[1].count);
      else
        std::cout << fmt::format("FD_{} {} (features {}, sha256 {}, {} dimensions, {} and {} rows)\n", label, distance, stats[0].feature,
                                 stats[0].feature_hash, stats[0].mean.size(), stats[0].count, stats[1].count);
    }
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "diffode fd: " << e.what() << "\n";
    return 2;
  } catch (const std::runtime_error& e) {
    // The backend could not be opened (a build without LibTorch): bad input for this command.
    std::cerr << "diffode fd: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace diffode
