// The tables every config-driven command shares — [process], [model], [grid], [run] — each with its
// schema (declared once; validation, --help and docs/config.md derive from it) and its one reader.
#pragma once

#include "experiments/run/config.hpp"
#include "models/gaussian_mixture.hpp"
#include "models/guided_mixture.hpp"
#include "models/network.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace diffode {

const TableSchema& process_schema();
const TableSchema& model_schema();
const TableSchema& grid_schema();
const TableSchema& run_schema();
const TableSchema& guidance_schema();

// Before any value is read: every key of `root` names one of `tables`, and every key of those
// tables is declared by its schema ([sampler]: by the named sampler's). The first undeclared key in
// file order is the error, so a misspelt key or table is named as itself.
void reject_undeclared_keys(const ConfigTable& root, const std::vector<const TableSchema*>& tables);

// [process] name and the parameters that process takes (a parameter it does not take is an error).
std::unique_ptr<Process> read_process(ConfigTable t);
// [model] kind = "mixture": preset (ring2d | iso16 | diag64, seed), explicit weights/means/variances, or file.
// Another kind is an error on `kind`: the caller needs an exact mixture.
GaussianMixture read_mixture(ConfigTable t);

// [model] classes (a class per component) and [guidance]: the class-conditional mixture and the
// guidance of a guided run (models/guided_mixture.hpp), or nullopt when the config has no
// [guidance] table (then classes, when given, are only checked: the run samples p(x)).
// read_network_guidance: [guidance] of a class-conditional network ([model] kind = "network" with
// classes, or "torchscript" with signature x_t_class): classifier-free guidance only
// (models/network_guidance.hpp); nullopt without a [guidance] table.
// [guidance] class is a class 0..C-1 or "all": each class in turn (GuidanceSetup::all_classes).
struct GuidanceSetup {
  std::shared_ptr<const ClassConditionalMixture> model;  // the mixture's; null for a network
  GuidanceSettings settings;
  bool all_classes = false;  // class = "all": the run samples every class, settings.target_class each in turn
  Index classes = 0;         // the model's class count
};
std::optional<GuidanceSetup> read_guidance(ConfigTable& root, const GaussianMixture& mixture);
std::optional<GuidanceSetup> read_network_guidance(ConfigTable& root, const NetworkModel& network);
// [model] of any kind: the exact mixture, or a network (kind = "network": a diffode checkpoint;
// "torchscript": a user's module trained under the config's [process]) loaded through the network
// backend (experiments/run/networks.hpp), with the mixture it was trained on when [model.ground_truth]
// gives one. A file that is missing or that the backend refuses is an error on `file`.
struct ModelSource {
  std::string kind;
  std::shared_ptr<const GaussianMixture> mixture;  // kind "mixture": the model; else the ground truth, or null
  std::shared_ptr<const NetworkModel> network;     // null for kind "mixture"
  std::string state = "host";                      // [model] state: "host" or "device" (networks only)
};
// `device_state_allowed`: whether [model] state = "device" is taken (sampling runs) or refused.
ModelSource read_model(ConfigTable t, const ConfigTable& process_table, bool device_state_allowed = false);

// [grid], read once; `build` makes the grid for its own step count or for another (the fine grid of
// a strong-error reference), so a grid is never rebuilt by editing config text.
struct GridSpec {
  std::string schedule;
  std::optional<int> steps;  // absent for the schedules that list their points (file, hdf5)
  FinalStep final_step = FinalStep::to_zero;
  std::string final_step_name;
  double rho = 7.0;
  DdpmSpacing spacing = DdpmSpacing::leading;
  std::vector<double> listed;  // file / hdf5: the points as read
  bool listed_sigma = false;   // hdf5 with variable = "sigma": the points are scale-free sigmas
  std::string source;          // file / hdf5: where the points came from, for messages

  TimeGrid build(const Process& process) const;
  TimeGrid build(const Process& process, int steps) const;  // schedules with steps only

 private:
  TimeGrid build_listed(const Process& process) const;
};
GridSpec read_grid_spec(ConfigTable t);
// Builds `spec`'s grid for `process` (for its own steps, or `steps`) and checks that a sampler can
// run over it: two or more points, sigma~ finite, positive and strictly decreasing but for a final
// 0. Throws std::invalid_argument saying why not (a listed grid's message names its file).
TimeGrid build_sampling_grid(const GridSpec& spec, const Process& process, std::optional<int> steps = std::nullopt);
// The [process] key that puts T where alpha = 0, so that sigma~ = sigma / alpha is infinite there and
// no grid can start at T, when `process_table` gives one (t_max, beta_max, ...): the key to blame
// for such a grid rather than the schedule.
std::optional<std::string> key_putting_t_max_at_alpha_zero(const ConfigTable& process_table, const Process& process);

// [run]: what `diffode sample` and a sweep's runs share.
struct RunSettings {
  std::string task = "sample";  // sweeps: "sample" | "likelihood"
  Index samples = 1024;
  std::uint64_t seed = 0;
  std::string initial = "prior";           // x_T: "prior" N(0, prior_std^2) or "exact" (the mixture's p_T)
  std::string initial_file, initial_dataset;  // or x_T from HDF5
  std::string output;                      // sample: the results file; sweep: the default of [sweep] output
  bool save_trajectory = false;
  bool save_samples = false;
  Index block_rows = 256;
};
RunSettings read_run_settings(ConfigTable t);

}  // namespace diffode
