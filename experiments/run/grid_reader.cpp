// [grid]: the schema, the reader and the builder of time grids (problems/time_grid.hpp).
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/readers.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <fmt/format.h>

#include <cmath>

namespace diffode {
namespace {

const std::vector<std::string> kSchedules{"karras", "uniform_t", "uniform_lambda", "quadratic", "exponential", "polyexponential", "ddpm", "file",
                                          "hdf5"};

bool listed(const std::string& schedule) { return schedule == "file" || schedule == "hdf5"; }

void read_listed_points(ConfigTable& t, GridSpec& g) {
  const std::string file = t.string("file");
  g.source = file;
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) t.fail("file", fmt::format("no such file: {}", file));
  // A FIFO would block the read, a device (/dev/zero) never end it: files only.
  if (!std::filesystem::is_regular_file(file, ec)) t.fail("file", fmt::format("{} is not a regular file", file));
  if (g.schedule == "file") {
    for (const char* key : {"dataset", "variable"})
      if (t.has(key)) t.fail(key, "only for schedule = \"hdf5\"");
    return;  // read by read_time_grid when the grid is built
  }
  const std::string dataset = t.string("dataset");
  g.listed_sigma = t.string("variable") == "sigma";
  g.source = file + ":" + dataset;
  try {
    const Hdf5File h5(file, Hdf5File::Mode::read);
    if (!h5.has(dataset)) t.fail("dataset", fmt::format("{}: no dataset '{}'", file, dataset));
    g.listed = h5.read_vector(dataset);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    t.fail("file", e.what());
  }
}

}  // namespace

const TableSchema& grid_schema() {
  static const TableSchema s{
      "grid",
      "the decreasing times a sampler visits, from T to the end, and the final-step policy",
      {string_key("schedule", "how the points are placed").fallback_str("karras").one_of(kSchedules),
       integer_key("steps", "steps of the grid (every schedule but file and hdf5)").optional("required but for file, hdf5").at_least(1).at_most(1000000),
       string_key("final_step", "the last step: append sigma = 0 (k-diffusion), stop at t_min, or stop at t_min and return the denoiser's x0")
           .fallback_str("to_zero")
           .one_of({"to_zero", "to_t_min", "denoise"}),
       number_key("rho", "the schedule's exponent (karras, polyexponential)").optional("7 (karras), 1 (polyexponential)").above(0),
       string_key("spacing", "DDPM timestep spacing (ddpm)").fallback_str("leading").one_of({"linspace", "leading", "trailing"}),
       string_key("file", "the points: a text list of t (file) or an HDF5 file (hdf5)").optional("required for file, hdf5"),
       string_key("dataset", "hdf5: the dataset holding the points").fallback_str("t"),
       string_key("variable", "hdf5: the points are times t, or scale-free sigmas (replays another run's grid exactly)")
           .fallback_str("t")
           .one_of({"t", "sigma"})}};
  return s;
}

GridSpec read_grid_spec(ConfigTable t) {
  t = t.bind(grid_schema());
  GridSpec g;
  g.schedule = t.string("schedule");
  g.final_step_name = t.string("final_step");
  g.final_step = g.final_step_name == "to_zero" ? FinalStep::to_zero : g.final_step_name == "denoise" ? FinalStep::denoise : FinalStep::to_t_min;
  if (listed(g.schedule)) {
    if (t.has("steps")) t.fail("steps", fmt::format("schedule = \"{}\" takes its points from the file", g.schedule));
    read_listed_points(t, g);
  } else {
    g.steps = static_cast<int>(t.integer("steps"));
    for (const char* key : {"file", "dataset", "variable"})
      if (t.has(key)) t.fail(key, "only for schedule = \"file\" or \"hdf5\"");
  }
  if (g.schedule == "karras" || g.schedule == "polyexponential")
    g.rho = t.number("rho", g.schedule == "karras" ? 7.0 : 1.0);
  else if (t.has("rho"))
    t.fail("rho", "only for schedule = \"karras\" or \"polyexponential\"");
  if (g.schedule == "ddpm") {
    const std::string spacing = t.string("spacing");
    g.spacing = spacing == "linspace" ? DdpmSpacing::linspace : spacing == "leading" ? DdpmSpacing::leading : DdpmSpacing::trailing;
  } else if (t.has("spacing")) {
    t.fail("spacing", "only for schedule = \"ddpm\"");
  }
  t.finish();
  return g;
}

TimeGrid GridSpec::build(const Process& process) const {
  if (steps) return build(process, *steps);
  // Errors name the list's source (the file, and the dataset).
  try {
    return build_listed(process);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::invalid_argument(what.find(source) != std::string::npos ? what : fmt::format("{}: {}", source, what));
  }
}

TimeGrid GridSpec::build_listed(const Process& process) const {
  if (schedule == "file") return read_time_grid(source, process, final_step);
  if (!listed_sigma) return time_grid_from_list(process, listed, final_step, source);
  // A scale-free sigma list: used as given, so another implementation's run replays exactly; it must
  // be a grid a sampler can run (two or more points, strictly decreasing, positive but a final 0).
  try {
    check_sigmas(listed);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", source, e.what()));
  }
  if (final_step == FinalStep::to_zero && listed.back() != 0.0)
    throw std::invalid_argument(fmt::format("{}: final_step = \"to_zero\" needs the replayed list to end at sigma = 0", source));
  TimeGrid grid;
  grid.sigma = listed;
  grid.final_step = final_step;
  for (double s : listed) grid.t.push_back(s == 0.0 ? 0.0 : process.t_of_scaled_sigma(s));
  return grid;
}

TimeGrid GridSpec::build(const Process& process, int n) const {
  if (schedule == "karras") return karras_grid(process, n, final_step, rho);
  if (schedule == "polyexponential") return polyexponential_grid(process, n, final_step, rho);
  if (schedule == "uniform_t") return uniform_t_grid(process, n, final_step);
  if (schedule == "uniform_lambda") return uniform_lambda_grid(process, n, final_step);
  if (schedule == "quadratic") return quadratic_grid(process, n, final_step);
  if (schedule == "exponential") return exponential_grid(process, n, final_step);
  if (schedule == "ddpm") return ddpm_grid(process, n, spacing, final_step);
  throw std::logic_error(fmt::format("GridSpec::build: schedule '{}' lists its points", schedule));
}

TimeGrid build_sampling_grid(const GridSpec& spec, const Process& process, std::optional<int> steps) {
  TimeGrid grid = steps ? spec.build(process, *steps) : spec.build(process);
  if (!grid.sigma.empty() && !std::isfinite(grid.sigma.front()))
    throw std::invalid_argument(fmt::format("the {} grid on {} starts at T = {}, where alpha = 0 and sigma~ = sigma / alpha is infinite: no "
                                            "sampler can start there; take [process] t_max below {}",
                                            spec.schedule, process.name(), grid.t.front(), grid.t.front()));
  try {
    check_sigmas(grid.sigma);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("the {} grid on {}: {}", spec.schedule, process.name(), e.what()));
  }
  return grid;
}

std::optional<std::string> key_putting_t_max_at_alpha_zero(const ConfigTable& process_table, const Process& process) {
  double start = 0;
  try {
    start = process.scaled_sigma(process.t_max());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (std::isfinite(start)) return std::nullopt;
  for (const char* key : {"t_max", "beta_max", "beta_min"})
    if (process_table.has(key)) return key;
  return std::nullopt;
}

}  // namespace diffode
