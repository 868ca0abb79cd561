// `diffode fd A.h5 [B.h5]`: the Frechet distance between two sets of rows (experiments/run/frechet.hpp).
#include "experiments/cli/commands.hpp"
#include "experiments/run/frechet.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {
namespace {

// A file's statistics: read from a statistics file, or taken from its dataset. Bad input (a
// missing file or dataset, too few rows, non-finite values) throws ConfigError naming the path.
FrechetStatistics input_statistics(const std::filesystem::path& path, const FdOptions& o) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw ConfigError(fmt::format("{}: no such file", path.string()));
  try {
    {
      const Hdf5File h5(path, Hdf5File::Mode::read);
      if (is_statistics_file(h5)) {
        if (o.dataset_given)
          throw ConfigError(fmt::format("{}: a statistics file (its moments are cached); --dataset names a dataset of a sample file", path.string()));
        return read_statistics(h5);
      }
      if (!h5.has(o.dataset)) {
        std::string names;
        for (const auto& m : h5.members("/")) names += (names.empty() ? "" : ", ") + m;
        throw ConfigError(fmt::format("{}: no dataset '{}' (members: {}); name one with --dataset", path.string(), o.dataset,
                                      names.empty() ? "none" : names));
      }
    }
    return raw_statistics(path, o.dataset, o.block_rows, o.threads);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw ConfigError(what.starts_with(path.string()) ? what : fmt::format("{}: {}", path.string(), what));
  }
}

}  // namespace

std::string fd_help() {
  return "Each input is a sample file (its rows: --dataset, by default 'samples', as diffode sample writes them) or a\n"
         "statistics file written by --save-stats (mean, covariance, count, feature name and hash). The features are the\n"
         "raw coordinates or pixels ('raw'): no network. Moments are float64, accumulated by blocks of --block-rows rows\n"
         "(results depend on it, not on --threads). Prints the Frechet distance |m1 - m2|^2 + tr(S1) + tr(S2)\n"
         "- 2 tr((S1^1/2 S2 S1^1/2)^1/2) (finite also when there are fewer samples than dimensions).\n"
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
    std::vector<FrechetStatistics> stats;
    for (const auto& input : o.inputs) stats.push_back(input_statistics(input, o));
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
    if (stats.size() == 2)
      std::cout << fmt::format("frechet_distance {} (feature {}, {} dimensions, {} and {} rows)\n", distance, stats[0].feature,
                               stats[0].mean.size(), stats[0].count, stats[1].count);
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "diffode fd: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace diffode
