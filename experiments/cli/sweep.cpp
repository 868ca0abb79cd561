// `diffode sweep CONFIG.toml`: plan and validate (nothing written on a bad config), then run.
#include "experiments/cli/commands.hpp"
#include "experiments/sweep/driver.hpp"
#include "experiments/sweep/runner.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {

int run_sweep_command(const std::filesystem::path& config_path, const ProvenanceSource& provenance, const SweepOptions& options) {
  SweepPlan plan;
  try {
    plan = plan_and_validate(config_path, options.output, options.fresh);
  } catch (const ConfigError& e) {
    if (is_lead_rank()) std::cerr << "diffode sweep: " << e.what() << "\n";
    return 2;
  }
  if (options.dry_run) {
    if (is_lead_rank())
      for (const RunSpec& run : plan.runs) std::cout << fmt::format("{:>5} {} {} | {}\n", run.index, run.id, run.problem, run.variant);
    return 0;
  }
  return run_sweep(plan, provenance(),
                   {.threads = options.threads, .fresh = options.fresh, .retry_failed = options.retry_failed, .max_runs = options.max_runs});
}

std::string sweep_config_help() {
  return "A sweep config is a run config (the tables of diffode sample, plus [metrics], or [likelihood] for runs with\n"
         "[run] task = \"likelihood\") with a [sweep] table giving lists of values for any of its keys; a table value (e.g.\n"
         "sampler = [{name = \"heun\"}, {name = \"unipc\", order = 3}]) replaces the whole table at its key. Every key:\n"
         "docs/config.md; experiments/*.toml are examples.\n" +
         schema_help({&sweep_schema(), &metrics_schema()}) +
         "Output: one HDF5 file, layout in experiments/RESULTS.md; /summary is one table (pandas.DataFrame(f[\"summary\"][()])).\n"
         "Resume: the same command again skips finished runs (--retry-failed runs failed ones again).\n"
         "MPI: mpirun -np N diffode sweep CONFIG.toml: rank 0 hands out groups of runs (those sharing a reference solve\n"
         "go to one rank) to whichever rank is free; --threads is per rank. The file equals a single process's.\n"
         "Exit: 0 all runs ok, 1 some run failed (recorded, the sweep went on), 2 bad input, 130 interrupted.";
}

}  // namespace diffode
