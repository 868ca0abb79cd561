#include "experiments/run/tune_grid.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/reference.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <ostream>
#include <sstream>

namespace diffode {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// toml++ drops a node's source region when it is copied: the lines of the file travel beside the
// copy the reader works on (it sets [grid] steps from the NFE budget).
void record_lines(const toml::table& table, const std::string& prefix, SourceLines& lines) {
  for (const auto& [key, node] : table) {
    const std::string path = prefix.empty() ? std::string(key.str()) : fmt::format("{}.{}", prefix, key.str());
    lines[path] = static_cast<int>(node.source().begin.line);
    if (const auto* sub = node.as_table()) record_lines(*sub, path, lines);
  }
}

std::string table_text(const toml::table& root, std::string_view key) {
  const toml::table* table = root.get_as<toml::table>(key);
  if (!table) return "";
  std::ostringstream out;
  out << toml::toml_formatter(*table);
  return out.str();
}

std::string problem_label(const toml::table& root) {
  const std::string process = root.at_path("process.name").value_or<std::string>("edm");
  std::string model = root.at_path("model.preset").value_or<std::string>("");
  if (const auto file = root.at_path("model.file").value<std::string>()) model = std::filesystem::path(*file).stem().string();
  else if (root.at_path("model.weights")) model = "custom";
  else if (model.empty()) model = "ring2d";
  return process + "/" + model;
}

bool listed_schedule(const toml::table& root) {
  const std::string schedule = root.at_path("grid.schedule").value_or<std::string>("karras");
  return schedule == "file" || schedule == "hdf5";
}

// [run]: [tune] owns the samples, the seeds and the output; a run config's other keys make no sense here.
void refuse_run_keys(ConfigTable run) {
  for (const char* key : {"samples", "seed"})
    if (run.has(key)) run.fail(key, "set by [tune] (train_samples, train_seed, heldout_samples, heldout_seed)");
  if (run.has("output")) run.fail("output", "set by [tune] output");
  for (const char* key : {"initial_file", "initial_dataset", "save_trajectory", "save_samples"})
    if (run.has(key)) run.fail(key, "not taken by diffode tune-grid (its noises are drawn from [tune]'s seeds)");
}

// The evaluations of one step count on one sample (run_sampling's count: the final denoising included).
double measure_nfe(SamplingSetup& s, const TimeGrid& grid) {
  s.run.samples = 1;
  const SamplingOutcome out = run_sampling(s, initial_noise(s), grid, 1);
  return out.failed ? kInf : out.nfe;
}

// The largest step count of the starting schedule whose run costs at most `budget` evaluations: a
// run's cost grows with its steps, so the count is bracketed by doubling and then bisected (a few
// one-sample runs, also for large budgets).
int steps_for_budget(ConfigTable& tune_table, SamplingSetup& s, int budget) {
  const auto cost = [&](int steps) {
    try {
      return measure_nfe(s, s.grid_spec.build(*s.process, steps));
    } catch (const std::exception&) {
      return kInf;  // a step count the schedule or the sampler cannot take
    }
  };
  // The fewest steps the sampler runs on (a multistep method may need two), then doubling.
  int fits = 1;
  double first = cost(fits);
  for (; !std::isfinite(first) && fits < 8; first = cost(++fits)) {
  }
  if (!(first <= budget))
    tune_table.fail("nfe", fmt::format("no grid of this schedule runs within {} evaluations ({} steps cost {})", budget, fits, first));
  int too_many = 2 * fits;  // cost(fits) <= budget < cost(too_many)
  while (cost(too_many) <= budget) {
    fits = too_many;
    if (too_many > 4 * budget + 4) tune_table.fail("nfe", "the sampler's cost does not grow with its steps: give [grid] steps instead");
    too_many *= 2;
  }
  while (too_many - fits > 1) {
    const int middle = fits + (too_many - fits) / 2;
    (cost(middle) <= budget ? fits : too_many) = middle;
  }
  return fits;
}

TuneSettings read_tune_settings(ConfigTable t, const SamplingSetup& s) {
  t = t.bind(tune_schema());
  TuneSettings r;
  if (t.has("nfe")) r.nfe = static_cast<int>(t.integer("nfe"));
  r.objective = t.string("objective");
  r.train_samples = t.integer("train_samples");
  r.heldout_samples = t.integer("heldout_samples");
  r.train_seed = static_cast<std::uint64_t>(t.integer("train_seed"));
  r.heldout_seed = static_cast<std::uint64_t>(t.integer("heldout_seed"));
  if (r.heldout_seed == r.train_seed) t.fail("heldout_seed", "must differ from train_seed: the held-out noises are never trained on");
  r.law_seed = static_cast<std::uint64_t>(t.integer("law_seed"));
  for (std::uint64_t law : {r.law_seed, r.law_seed + 1})
    if (law == r.train_seed || law == r.heldout_seed)
      t.fail("law_seed", "law_seed and law_seed + 1 (the exact draws for the training and held-out sets) must differ from both noise seeds");
  if (r.objective == "energy" && std::min(r.train_samples, r.heldout_samples) < 2) t.fail("objective", "the energy distance needs 2 or more samples");
  r.optimiser.max_evaluations = static_cast<int>(t.integer("max_evaluations"));
  r.optimiser.initial_step = t.number("initial_step");
  r.optimiser.tolerance = t.number("tolerance");
  r.optimiser.seed = static_cast<std::uint64_t>(t.integer("seed"));
  r.reference_rtol = t.number("reference_rtol");
  const double own = s.process->scaled_sigma(s.process->t_min());
  const bool to_t_min = s.grid_spec.final_step == FinalStep::to_t_min;
  for (const char* key : {"sigma_min_lower", "sigma_min_upper"})
    if (to_t_min && t.has(key)) t.fail(key, "final_step = \"to_t_min\" ends at the process's t_min, whose x is the answer: sigma_min is fixed");
  r.sigma_min_lower = t.number("sigma_min_lower", own);
  r.sigma_min_upper = t.number("sigma_min_upper");
  if (r.sigma_min_lower < own) t.fail("sigma_min_lower", fmt::format("below the process's smallest level sigma~ = {}", own));
  if (r.sigma_min_upper < r.sigma_min_lower) t.fail("sigma_min_upper", fmt::format("below sigma_min_lower = {}", r.sigma_min_lower));
  if (r.sigma_min_upper >= s.grid.sigma.front()) t.fail("sigma_min_upper", fmt::format("must lie below the grid's first level {}", s.grid.sigma.front()));
  r.output = t.string("output");
  if (r.output.empty()) t.fail("output", "must name a file");
  // Each set holds x_T, the reference, the samples and the sampler's work arrays.
  for (const char* key : {"train_samples", "heldout_samples"})
    check_memory(t, key, 8.0 * static_cast<double>(t.integer(key)) * static_cast<double>(s.dims()) * 8.0);
  t.finish();
  return r;
}

// The starting grid's last positive level.
double last_positive(const TimeGrid& grid) {
  for (auto it = grid.sigma.rbegin(); it != grid.sigma.rend(); ++it)
    if (*it > 0) return *it;
  return kNaN;
}

// One set of initial noises with what its runs are measured against.
struct NoiseSet {
  std::uint64_t seed = 0;
  Batch initial;
  Batch reference;            // deterministic samplers: the PF-ODE solution from `initial`
  std::optional<ExactLaw> law;  // the exact law at the run's end, for the energy distance
  GridScore start;            // the starting grid's scores
};

GridScore score_outcome(const TuneSetup& t, const NoiseSet& set, const SamplingOutcome& run, const TimeGrid& grid, bool all) {
  GridScore g;
  g.nfe = run.nfe;
  g.sigma_min = last_positive(grid);
  g.mean = g.median = g.rms = g.energy = g.energy_floor = kNaN;
  g.objective = kInf;
  if (run.failed) {
    g.failed = true;
    g.failure = run.failure;
    return g;
  }
  if (const auto finite = run.samples.isFinite().rowwise().all(); !finite.all()) {
    g.failed = true;
    g.failure = fmt::format("non-finite samples in {} of {} rows", (!finite).count(), run.samples.rows());
    return g;
  }
  const std::string& objective = t.tune.objective;
  if (set.reference.size() > 0) {
    if (all || objective == "mean") g.mean = mean_distance(run.samples, set.reference);
    if (all || objective == "median") g.median = median_distance(run.samples, set.reference);
    if (all || objective == "rms") g.rms = rms_distance(run.samples, set.reference);
  }
  if (set.law && (all || objective == "energy")) {
    g.energy = energy_distance(run.samples, set.law->reference_samples);
    g.energy_floor = set.law->energy_floor;
  }
  g.objective = objective == "mean" ? g.mean : objective == "median" ? g.median : objective == "rms" ? g.rms : g.energy;
  if (std::isnan(g.objective)) g.objective = kInf;
  return g;
}

GridScore evaluate(TuneSetup& t, const NoiseSet& set, const TimeGrid& grid, bool all, int threads) {
  t.sampling.run.seed = set.seed;
  t.sampling.run.samples = set.initial.rows();
  return score_outcome(t, set, run_sampling(t.sampling, set.initial, grid, threads), grid, all);
}

NoiseSet make_set(TuneSetup& t, std::uint64_t seed, Index samples, std::uint64_t law_seed, bool law, int threads) {
  SamplingSetup& s = t.sampling;
  NoiseSet set;
  set.seed = seed;
  s.run.seed = seed;
  s.run.samples = samples;
  set.initial = initial_noise(s);
  const SamplingOutcome start = run_sampling(s, set.initial, s.grid, threads);
  if (!s.sampler.stochastic) set.reference = pf_ode_reference(s, start, s.grid.sigma.front(), t.tune.reference_rtol, threads);
  // The law at the run's end: the data for a run that ends at zero or denoises (the same for every
  // grid), the marginal at t_min for to_t_min (whose end is fixed).
  if (law && samples >= 2) set.law = make_exact_law(*s.mixture, start.alpha_end, start.alpha_end * start.sigma_end, samples, law_seed);
  set.start = score_outcome(t, set, start, s.grid, true);
  return set;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// v folded into [lo, hi] by reflection at the bounds (a triangle wave of period 2 (hi - lo)): unlike a
// clamp it leaves no flat region where the simplex would lose its way, and a start on a bound (the
// Karras grid's sigma_min is the process's own) is an ordinary point.
double reflect(double v, double lo, double hi) {
  const double width = hi - lo;
  double u = std::fmod(v - lo, 2 * width);
  if (u < 0) u += 2 * width;
  return u <= width ? lo + u : hi - (u - width);
}

}  // namespace

const TableSchema& tune_schema() {
  static const TableSchema s{
      "tune",
      "diffode tune-grid: the budget, the objective, the noises it is trained and scored on, the optimiser and the output",
      {integer_key("nfe", "model evaluations per sample (the final denoising included); the steps are the most the budget allows")
           .optional("from [grid] steps")
           .at_least(1)
           .at_most(100000),
       string_key("objective",
                  "what is minimised over the training noises: the mean, median or RMS distance to the exact PF-ODE solution from the "
                  "same noise (deterministic samplers), or the energy distance to exact draws of the law at the end (any sampler)")
           .fallback_str("mean")
           .one_of({"mean", "median", "rms", "energy"}),
       integer_key("train_samples", "initial noises the grid is tuned on").fallback_int(1024).at_least(1),
       integer_key("train_seed", "seed of the training noises (and a stochastic sampler's noise)").fallback_int(1).at_least(0),
       integer_key("heldout_samples", "initial noises the grid is scored on, never trained on").fallback_int(1024).at_least(1),
       integer_key("heldout_seed", "seed of the held-out noises (must differ from train_seed); a sweep with this [run] seed and samples "
                                   "measures the same numbers")
           .fallback_int(0)
           .at_least(0),
       integer_key("law_seed", "seed of the exact draws of the energy distance (law_seed: training, law_seed + 1: held-out)")
           .fallback_int(1000003)
           .at_least(0),
       integer_key("max_evaluations", "the optimiser's budget of objective evaluations (one sampler run on the training noises each)")
           .fallback_int(1500)
           .at_least(1)
           .at_most(10000000),
       number_key("initial_step", "Nelder-Mead's first simplex: the step along each unknown (log sigma_min and the softmax logits)")
           .fallback(0.5)
           .above(0)
           .at_most(10),
       number_key("tolerance", "a simplex has converged when its values agree to this (relative) and its size is below it; it is then "
                               "restarted around the best point with half the step, until the budget is spent")
           .fallback(1e-6)
           .above(0)
           .below(1),
       integer_key("seed", "seed of the optimiser's restarts").fallback_int(0).at_least(0),
       number_key("reference_rtol", "tolerance of the PF-ODE reference solve").fallback(1e-10).above(0).below(1),
       number_key("sigma_min_lower", "the tuned grid's last positive level sigma~ is at least this")
           .optional("the process's own (sigma~ at t_min)")
           .above(0)
           .in_unit("data"),
       number_key("sigma_min_upper", "... and at most this (equal bounds: sigma_min fixed)").fallback(2.0).above(0).in_unit("data"),
       string_key("output", "the tuned grid's HDF5 file")}};
  return s;
}

TuneSetup read_tune_setup(const Config& config) {
  TuneSetup t;
  t.config_text = config.text();
  t.config_name = config.name();
  const toml::table& given = config.table();
  auto lines = std::make_shared<SourceLines>();
  record_lines(given, "", *lines);
  // The steps come from the budget: a placeholder lets the [grid] reader build the schedule, which
  // is rebuilt below at the measured step count.
  toml::table root = given;
  const bool steps_given = given.at_path("grid.steps") || listed_schedule(given);
  if (!steps_given) {
    if (!root.contains("grid")) root.insert("grid", toml::table{});
    if (auto* grid = root.get_as<toml::table>("grid")) grid->insert_or_assign("steps", 1);
  }
  ConfigTable r(root, "", config.name(), lines);
  refuse_run_keys(r.table("run"));
  t.sampling = read_sampling_setup(r);
  SamplingSetup& s = t.sampling;
  if (s.run.task != "sample") r.table("run").fail("task", "diffode tune-grid tunes a sampler's grid");
  if (s.sampler.adaptive) r.table("sampler").fail("name", fmt::format("'{}' chooses its own steps: there is no grid to tune", s.sampler.name));
  ConfigTable tune_table = r.table("tune");
  t.tune = read_tune_settings(tune_table, s);
  if (s.sampler.stochastic && t.tune.objective != "energy")
    tune_table.fail("objective", fmt::format("'{}' draws noise: its distance to the PF-ODE solution is no error; use objective = \"energy\"",
                                             s.sampler.name));
  if (t.tune.objective == "energy" && !s.mixture)
    tune_table.fail("objective", "\"energy\" compares with exact draws, which a network has only with [model.ground_truth]");
  r.finish();
  if (!steps_given && !t.tune.nfe) tune_table.fail("nfe", "missing: give the budget here, or [grid] steps");
  if (!steps_given) {
    const int steps = steps_for_budget(tune_table, s, *t.tune.nfe);
    s.grid_spec.steps = steps;
    s.grid = s.grid_spec.build(*s.process, steps);
  }
  const double nfe = measure_nfe(s, s.grid);
  if (!std::isfinite(nfe)) r.table("grid").fail("schedule", "the sampler fails on the starting grid");
  t.nfe = static_cast<int>(std::lround(nfe));
  if (t.tune.nfe && t.nfe > *t.tune.nfe)
    tune_table.fail("nfe", fmt::format("the starting grid ([grid] steps or its file) costs {} evaluations with '{}'", t.nfe, s.sampler.name));
  if (std::count_if(s.grid.sigma.begin(), s.grid.sigma.end(), [](double v) { return v > 0; }) < 2)
    tune_table.fail(t.tune.nfe ? "nfe" : "output", "the grid has a single positive level (one step to 0): nothing to tune");
  const double start_end = last_positive(s.grid);
  if (s.grid_spec.final_step != FinalStep::to_t_min && (start_end < t.tune.sigma_min_lower || start_end > t.tune.sigma_min_upper))
    tune_table.fail("sigma_min_lower", fmt::format("the starting grid ends at sigma~ = {}, outside [sigma_min_lower, sigma_min_upper] = [{}, {}]",
                                                   start_end, t.tune.sigma_min_lower, t.tune.sigma_min_upper));
  check_output_path(tune_table, "output", t.tune.output);
  t.problem = problem_label(given);
  t.sampler_text = table_text(given, "sampler");
  t.process_text = table_text(given, "process");
  t.model_text = table_text(given, "model");
  t.grid_text = table_text(given, "grid");
  return t;
}

LogSigmaGrid::LogSigmaGrid(const Process& process, const TimeGrid& start, bool free_end, double lower, double upper)
    : process_(process), final_step_(start.final_step), log_lower_(std::log(lower)), log_upper_(std::log(upper)) {
  for (double s : start.sigma)
    if (s > 0) start_sigma_.push_back(s);
  positive_ = start_sigma_.size();
  if (positive_ < 2) throw std::invalid_argument("LogSigmaGrid: the starting grid needs two positive levels");
  free_end_ = free_end && log_lower_ < log_upper_;
}

std::vector<double> LogSigmaGrid::start_point() const {
  std::vector<double> p;
  if (free_end_) p.push_back(std::log(start_sigma_.back()));
  // Logits relative to the first increment: z_i = log(w_i / w_0).
  const double first = std::log(start_sigma_[0]) - std::log(start_sigma_[1]);
  for (std::size_t i = 1; i + 1 < positive_; ++i) p.push_back(std::log((std::log(start_sigma_[i]) - std::log(start_sigma_[i + 1])) / first));
  return p;
}

TimeGrid LogSigmaGrid::grid(const std::vector<double>& p) const {
  if (p.size() != dims()) throw std::invalid_argument("LogSigmaGrid: wrong number of coordinates");
  const double log_first = std::log(start_sigma_.front());
  const double log_end = free_end_ ? reflect(p[0], log_lower_, log_upper_) : std::log(start_sigma_.back());
  const std::size_t offset = free_end_ ? 1 : 0;
  // Softmax of (0, z_1, ..., z_{m-2}), shifted by the largest for stability.
  std::vector<double> z{0.0};
  for (std::size_t i = offset; i < p.size(); ++i) z.push_back(p[i]);
  const double top = *std::max_element(z.begin(), z.end());
  double total = 0;
  for (double& v : z) total += (v = std::exp(v - top));
  TimeGrid g;
  g.final_step = final_step_;
  g.sigma.push_back(start_sigma_.front());
  double cumulative = 0;
  for (std::size_t i = 1; i + 1 < positive_; ++i) {
    cumulative += z[i - 1] / total;
    g.sigma.push_back(std::exp(log_first - (log_first - log_end) * cumulative));
  }
  g.sigma.push_back(free_end_ ? std::exp(log_end) : start_sigma_.back());
  for (std::size_t i = 1; i < g.sigma.size(); ++i)
    if (!(g.sigma[i] < g.sigma[i - 1])) throw std::invalid_argument("LogSigmaGrid: levels not strictly decreasing in floating point");
  if (final_step_ == FinalStep::to_zero) g.sigma.push_back(0.0);
  for (double s : g.sigma) g.t.push_back(s == 0.0 ? 0.0 : process_.t_of_scaled_sigma(s));
  return g;
}

TuneResult tune_grid(TuneSetup& t, int threads, std::ostream* log) {
  const auto start_time = std::chrono::steady_clock::now();
  SamplingSetup& s = t.sampling;
  TuneResult result;
  result.start = s.grid;
  const bool energy = t.tune.objective == "energy";
  NoiseSet train = make_set(t, t.tune.train_seed, t.tune.train_samples, t.tune.law_seed, energy, threads);
  // The held-out energy distance is reported whenever there is an exact law to compare with.
  NoiseSet heldout = make_set(t, t.tune.heldout_seed, t.tune.heldout_samples, t.tune.law_seed + 1, t.sampling.mixture != nullptr, threads);
  const LogSigmaGrid parametrisation(*s.process, s.grid, s.grid_spec.final_step != FinalStep::to_t_min, t.tune.sigma_min_lower,
                                     t.tune.sigma_min_upper);
  result.dims = parametrisation.dims();
  if (log)
    *log << fmt::format("tune-grid: {} on {}, {} NFE = {} steps, {} unknowns; objective {} on {} training noises: {:.6g} on the starting grid\n",
                        s.sampler.name, t.problem, t.nfe, s.grid.steps(), result.dims, t.tune.objective, t.tune.train_samples,
                        train.start.objective);
  int evaluations = 0;
  double best = kInf;
  const auto objective = [&](const std::vector<double>& p) {
    double value = kInf;
    try {
      value = evaluate(t, train, parametrisation.grid(p), false, threads).objective;
    } catch (const std::invalid_argument&) {
      // A point whose levels collapse in floating point: no grid.
    }
    best = std::min(best, value);
    if (log && ++evaluations % 250 == 0) *log << fmt::format("  {} evaluations: best {:.6g}\n", evaluations, best);
    return value;
  };
  result.search = nelder_mead(objective, parametrisation.start_point(), t.tune.optimiser);
  result.tuned = parametrisation.grid(result.search.x);
  result.train_before = train.start;
  result.train_after = evaluate(t, train, result.tuned, true, threads);
  result.heldout_before = heldout.start;
  result.heldout_after = evaluate(t, heldout, result.tuned, true, threads);
  result.wall_time = seconds_since(start_time);
  if (log)
    *log << fmt::format("  {} evaluations, {} restarts, {:.1f} s; objective on the training noises {:.6g} -> {:.6g}, held out {:.6g} -> {:.6g}; "
                        "sigma_min {:.4g} -> {:.4g}; NFE {}\n",
                        result.search.evaluations, result.search.restarts, result.wall_time, result.train_before.objective,
                        result.train_after.objective, result.heldout_before.objective, result.heldout_after.objective,
                        result.heldout_before.sigma_min, result.heldout_after.sigma_min, result.heldout_after.nfe);
  return result;
}

namespace {

void write_score(Hdf5File& out, const std::string& prefix, const GridScore& g) {
  out.write_attribute("/", prefix + "_objective", g.objective);
  out.write_attribute("/", prefix + "_error_mean", g.mean);
  out.write_attribute("/", prefix + "_error_median", g.median);
  out.write_attribute("/", prefix + "_error_rms", g.rms);
  out.write_attribute("/", prefix + "_energy", g.energy);
  out.write_attribute("/", prefix + "_energy_floor", g.energy_floor);
  out.write_attribute("/", prefix + "_nfe", g.nfe);
  out.write_attribute("/", prefix + "_sigma_min", g.sigma_min);
  out.write_attribute("/", prefix + "_status", g.failed ? "failed: " + g.failure : "ok");
}

}  // namespace

void write_tuned_grid(const std::string& path, const TuneSetup& t, const TuneResult& r, const Provenance& provenance) {
  write_atomically(path, [&](Hdf5File& out) {
    write_provenance(out, provenance);
    const TuneSettings& c = t.tune;
    const bool failed = r.heldout_after.failed || r.train_after.failed;
    out.write_attribute("/", "schema", "diffode-tuned-grid/1");
    out.write_attribute("/", "status", failed ? "failed" : "ok");
    out.write_attribute("/", "config", t.config_text);
    out.write_attribute("/", "problem", t.problem);
    out.write_attribute("/", "sampler", t.sampling.sampler.name);
    out.write_attribute("/", "sampler_config", t.sampler_text);
    out.write_attribute("/", "process", t.process_text);
    out.write_attribute("/", "model", t.model_text);
    out.write_attribute("/", "grid_start", t.grid_text);
    out.write_attribute("/", "final_step", t.sampling.grid_spec.final_step_name);
    out.write_attribute("/", "replay", fmt::format("[grid] schedule = \"hdf5\", file = \"{}\", dataset = \"sigma\", variable = \"sigma\", final_step = \"{}\"",
                                                   path, t.sampling.grid_spec.final_step_name));
    out.write_attribute("/", "nfe", r.heldout_after.nfe);
    out.write_attribute("/", "nfe_budget", c.nfe ? static_cast<double>(*c.nfe) : kNaN);
    out.write_attribute("/", "steps", static_cast<double>(r.tuned.steps()));
    out.write_attribute("/", "objective", c.objective);
    out.write_attribute("/", "train_samples", static_cast<double>(c.train_samples));
    out.write_attribute("/", "train_seed", static_cast<double>(c.train_seed));
    out.write_attribute("/", "heldout_samples", static_cast<double>(c.heldout_samples));
    out.write_attribute("/", "heldout_seed", static_cast<double>(c.heldout_seed));
    out.write_attribute("/", "law_seed", static_cast<double>(c.law_seed));
    out.write_attribute("/", "block_rows", static_cast<double>(t.sampling.run.block_rows));
    out.write_attribute("/", "reference_rtol", c.reference_rtol);
    out.write_attribute("/", "sigma_min_lower", c.sigma_min_lower);
    out.write_attribute("/", "sigma_min_upper", c.sigma_min_upper);
    out.write_attribute("/", "optimiser", "nelder-mead (Gao-Han adaptive coefficients), restarts");
    out.write_attribute("/", "optimiser_seed", static_cast<double>(c.optimiser.seed));
    out.write_attribute("/", "max_evaluations", static_cast<double>(c.optimiser.max_evaluations));
    out.write_attribute("/", "initial_step", c.optimiser.initial_step);
    out.write_attribute("/", "tolerance", c.optimiser.tolerance);
    out.write_attribute("/", "evaluations", static_cast<double>(r.search.evaluations));
    out.write_attribute("/", "restarts", static_cast<double>(r.search.restarts));
    out.write_attribute("/", "unknowns", static_cast<double>(r.dims));
    out.write_attribute("/", "wall_time", r.wall_time);
    write_score(out, "train_before", r.train_before);
    write_score(out, "train_after", r.train_after);
    write_score(out, "heldout_before", r.heldout_before);
    write_score(out, "heldout_after", r.heldout_after);
    out.write_vector("sigma", r.tuned.sigma);
    out.write_vector("t", r.tuned.t);
    out.write_vector("start/sigma", r.start.sigma);
    out.write_vector("start/t", r.start.t);
    Batch history(static_cast<Index>(r.search.history.size()), 2);
    for (Index i = 0; i < history.rows(); ++i) history(i, 0) = r.search.history[i].first, history(i, 1) = r.search.history[i].second;
    out.write_matrix("history", history);
  });
}

}  // namespace diffode
