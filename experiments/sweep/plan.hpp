// A sweep config expanded into its runs.
//
// A sweep file is a run config (the tables `diffode sample` reads: [process], [model], [grid],
// [sampler], [run], plus [metrics] and [likelihood]) with a [sweep] table that lists values for any
// of its keys:
//
//     [sweep]
//     name = "quick"
//     output = "results/quick.h5"
//     [sweep.product]                 # every combination, the first axis in the file outermost
//     "process.name" = ["edm", "vp"]
//     sampler = [{ name = "euler" }, { name = "unipc", order = 3 }]
//     "grid.steps" = [5, 10, 20]
//     [sweep.zip]                     # advanced together (equal lengths), as one product factor
//     "sampler.name" = ["heun", "euler"]
//     "grid.steps" = [5, 10]
//
// [[sweep.product]] (an array of tables) gives several blocks, each expanded as above (with the zip
// factor), their runs one block after the other: e.g. an adaptive solver over tolerances, then
// fixed-step solvers over step counts.
//
// An axis's key is a dotted path into the run config, quoted ("grid.steps") or as TOML dotted keys
// (grid.steps = [...]). A table value replaces the whole table at its path (so one sampler's options
// never leak into another's); any other value sets that key. The expansion is deterministic, and
// each run's id is a hash of its resolved config, so the same run has the same id in any sweep:
// that is what resume and sharding key on.
//
// A run's variant (one line of a plot) is its sampler and the axis values other than the problem,
// the seed and the convergence axes: grid.steps, likelihood.steps/rtol/atol, and grid.file, an axis
// of listed grids ([grid] schedule = "hdf5" or "file") that are one family at several budgets, such
// as the tuned grids of `diffode tune-grid` (one file per NFE).
#pragma once

#include "core/state.hpp"
#include "experiments/run/config.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

struct SweepAxis {
  std::string key;                         // dotted path into the run config
  std::vector<const toml::node*> values;  // nodes of the parsed sweep file
  int line = 0;
  bool zipped = false;
  int block = 0;  // which [[sweep.product]] block; -1 for [sweep.zip] (every block)
};

struct RunSpec {
  Index index = 0;                           // position in the sweep
  std::string id;                            // 16 hex digits, FNV-1a 64 of `canonical`
  std::string canonical;                     // the resolved run config as TOML, keys sorted
  std::shared_ptr<const toml::table> config;  // the resolved run config
  std::shared_ptr<const SourceLines> lines;  // where each key's value came from in the sweep file
  std::string problem;                       // "process/model", e.g. "edm/iso16"
  std::string variant;                       // sampler and the axis values other than problem and the
                                             // convergence axes (grid.steps, likelihood.steps/rtol/atol)

  // The run config for reading, errors naming the sweep file's lines.
  ConfigTable root(const std::string& file) const { return ConfigTable(*config, "", file, lines); }
};

struct SweepPlan {
  std::string file;    // the sweep config's path, for messages
  std::string text;    // its text, recorded in the results
  std::string name;    // [sweep] name, default the file's stem
  std::string output;  // [sweep] output, default results/<name>.h5
  std::vector<SweepAxis> axes;
  std::vector<RunSpec> runs;
};

// [sweep]: name, output, product, zip.
const TableSchema& sweep_schema();

// Reads [sweep] strictly and expands the runs (throws ConfigError naming key and line). The runs'
// own tables are not validated here (see sweep_runner.hpp's validate_run).
SweepPlan plan_sweep(const Config& config);

// FNV-1a 64-bit of text, as 16 lower-case hex digits.
std::string content_id(std::string_view text);

}  // namespace diffode
