// Where a sweep's results live, crash-safe.
//
// A finished run is saved at once as its own small file, <output>.parts/<id>.h5, written under a
// temporary name and renamed into place: a part exists whole or not at all. The sweep's file is
// assembled from the parts (and from the runs an earlier assembly already holds) into
// <output>.tmp, which is then renamed over <output>. rename(2) replaces a file atomically, so a
// reader, a SIGINT or a SIGKILL at any moment finds either the previous complete file or the new
// one, never a torn one. A sweep started again with the same output skips every run whose id is in
// the file or among the parts, and since a run's result depends only on its resolved config, the
// resumed file equals an uninterrupted one (but for wall times and start time). The parts are
// removed once a complete file is in place. Under MPI every rank saves parts; rank 0 assembles.
// The file's layout is documented in experiments/RESULTS.md.
#pragma once

#include "experiments/run/provenance.hpp"
#include "experiments/sweep/plan.hpp"
#include "experiments/sweep/runner.hpp"

#include <filesystem>
#include <set>
#include <string>

namespace diffode {

class SweepStore {
 public:
  explicit SweepStore(std::filesystem::path output);

  const std::filesystem::path& output() const { return output_; }
  std::filesystem::path parts_folder() const;

  // Ids of the finished runs: those in the output file and those saved as parts; with
  // `failed = false`, only those whose status is ok (a failed run is then run again).
  std::set<std::string> finished(bool failed = true) const;
  // Saves one finished run as a part (atomically).
  void save(const RunSpec& run, const RunOutcome& outcome) const;
  // Writes the sweep's file from every finished run of the plan, in the plan's order; `complete`
  // marks a sweep with every run done (root attribute finished = "true").
  void assemble(const SweepPlan& plan, const Provenance& provenance, bool complete) const;
  // Removes the parts folder (after a complete assembly has taken them in).
  void remove_parts() const;

 private:
  std::filesystem::path output_;
};

}  // namespace diffode
