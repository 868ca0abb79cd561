// `diffode tune-grid CONFIG.toml`: read, tune, score on held-out noises, write (run/tune_grid.hpp).
#include "experiments/cli/commands.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampler_registry.hpp"
#include "experiments/run/tune_grid.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {

std::string tune_grid_config_help() {
  return "Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2,\n"
         "nothing written). [grid] is the starting grid (its steps follow from [tune] nfe); [run] takes block_rows and\n"
         "initial only. Every key, with each sampler's options: docs/config.md.\n" +
         schema_help({&process_schema(), &model_schema(), &grid_schema(), &sampler_table_schema(), &run_schema(), &tune_schema()}) +
         "Output HDF5: /sigma and /t (the tuned grid; replay with [grid] schedule = \"hdf5\", dataset = \"sigma\",\n"
         "variable = \"sigma\"), /start/sigma, /start/t, /history; root attributes: provenance, the scores before and after\n"
         "on the training and held-out noises, NFE, the optimiser's settings.\n"
         "Exit: 0 done, 1 a run or reference solve failed numerically, 2 bad input.";
}

int run_tune_grid_command(const std::filesystem::path& config_path, const Provenance& provenance, int threads) {
  TuneSetup setup;
  try {
    const Config config(config_path);
    setup = read_tune_setup(config);
  } catch (const ConfigError& e) {
    std::cerr << "diffode tune-grid: " << e.what() << "\n";
    return 2;
  }
  TuneResult result;
  try {
    result = tune_grid(setup, threads, &std::cout);
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode tune-grid: {}\n", e.what());
    return 1;
  }
  try {
    write_tuned_grid(setup.tune.output, setup, result, provenance);
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode tune-grid: cannot write {}: {}\n", setup.tune.output, e.what());
    return 1;
  }
  std::cout << fmt::format("-> {}\n", setup.tune.output);
  const bool failed = result.train_after.failed || result.heldout_after.failed;
  if (failed) std::cerr << fmt::format("diffode tune-grid: the tuned grid's run failed: {}\n", result.heldout_after.failure + result.train_after.failure);
  return failed ? 1 : 0;
}

}  // namespace diffode
