// Running a planned sweep: every run validated before any runs, each run measured
// (sweep/runner.hpp) and stored crash-safe as it finishes (sweep/store.hpp), resumable.
//
// Started by mpirun, rank 0 groups the runs left (those sharing a cached solve, sweep/runner.hpp's
// run_sharing, go together to one rank) and hands the groups out one at a time to whichever rank
// asks, running groups itself on a thread beside its dispatcher; every rank saves the runs it
// finishes as parts and rank 0 assembles the one file at the end, equal to what a single process
// writes. Started alone, the binary is that single process, taking the same groups in the same
// order (MPI is initialised only when a launcher's environment says so).
#pragma once

#include "experiments/run/provenance.hpp"
#include "experiments/sweep/plan.hpp"

#include <filesystem>
#include <optional>
#include <string>

namespace diffode {

struct SweepRunOptions {
  int threads = 1;            // threads per run (results do not depend on it)
  bool fresh = false;         // discard earlier results of this output instead of resuming
  bool retry_failed = false;  // run again the runs stored as failed (e.g. after a fix)
  int max_runs = -1;          // stop after this many runs of this invocation, all ranks together
};

// Whether this process is MPI rank 0 (or alone), from the launcher's environment: known before MPI
// is initialised, so only one rank reports a bad config.
bool is_lead_rank();

// Plans the sweep and reads every run with the strict readers, then checks the output (`output`:
// from --output, else the config's); throws ConfigError listing each distinct error once, with the
// runs it hits. Without `fresh`, a file at the output must be a sweep's (it is resumed).
SweepPlan plan_and_validate(const std::filesystem::path& config, const std::optional<std::string>& output, bool fresh = false);

// Returns the exit code: 0 every run of this invocation ok, 1 one failed (recorded; the sweep went
// on), 130 interrupted by SIGINT (finished runs kept).
int run_sweep(const SweepPlan& plan, const Provenance& provenance, const SweepRunOptions& options);

}  // namespace diffode
