// `diffode sweep CONFIG.toml`: every run of a sweep (sweep_plan.hpp), validated before anything
// runs, measured (sweep_runner.hpp) and stored crash-safe in one HDF5 file (sweep_store.hpp).
//
// Started by mpirun, the runs are dealt round-robin over the ranks and rank 0 assembles the one
// file, equal to what a single process writes; started alone, the binary is that single process
// (MPI is initialised only when a launcher's environment says so).
#pragma once

#include "experiments/provenance.hpp"

#include <filesystem>
#include <optional>
#include <string>

namespace diffode {

struct SweepOptions {
  int threads = 1;                    // threads per run (results do not depend on it)
  std::optional<std::string> output;  // overrides [sweep] output
  bool fresh = false;                 // discard earlier results of this output instead of resuming
  bool retry_failed = false;          // run again the runs stored as failed (e.g. after a fix)
  bool dry_run = false;               // validate and list the runs, run nothing
  int max_runs = -1;                  // stop after this many runs of this invocation (testing resume)
};

// Returns the exit code: 0 every run of this invocation ok, 1 one failed (recorded; the sweep went
// on; runs resumed from earlier invocations do not count),
// 2 a bad config (nothing written), 130 interrupted by SIGINT (finished runs kept).
int run_sweep_command(const std::filesystem::path& config, const Provenance& provenance, const SweepOptions& options);

// Every key a sweep config takes, for `diffode sweep --help`.
std::string sweep_config_help();

}  // namespace diffode
