#include "experiments/sweep/runner.hpp"

#include "experiments/run/likelihood.hpp"
#include "experiments/run/metrics.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/reference.hpp"
#include "experiments/run/sampling.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

namespace diffode {
namespace {

std::size_t metric_index(std::string_view name) {
  for (std::size_t i = 0; i < kRunMetrics.size(); ++i)
    if (name == kRunMetrics[i]) return i;
  throw std::logic_error(fmt::format("no run metric named {}", name));
}

std::string canonical(const toml::node* node) {
  if (!node) return "";
  std::ostringstream out;
  node->visit([&](const auto& v) { out << toml::toml_formatter(v, toml::format_flags::none); });
  return out.str();
}

// Everything a run reads from its config, validated.
struct SweepRun {
  std::string task;
  SamplingSetup sampling;  // task "sample"; its process, model and [run] serve "likelihood" too
  // task "sample"
  std::optional<TimeGrid> fine_grid;  // the strong error's fine solve: same schedule, strong_steps
  double reference_rtol = 1e-10;
  bool strong = true, law = true;
  std::uint64_t law_seed = 1000003;
  // task "likelihood"
  LikelihoodSetup likelihood;
  // Cache keys: the noise (process, model, samples, seed) and the model.
  std::string noise_key, model_key;
};

void read_metrics(ConfigTable t, const ConfigTable& run_table, SweepRun& s) {
  t = t.bind(metrics_schema());
  s.reference_rtol = t.number("reference_rtol");
  s.strong = t.boolean("strong");
  const auto strong_steps = static_cast<int>(t.integer("strong_steps"));
  s.law = t.boolean("law");
  // A guided network's law is p(x | c) guided, of which [model.ground_truth] (an unconditional
  // mixture) says nothing.
  if (s.law && s.sampling.guidance && !s.sampling.guidance->model)
    t.fail("law", "the sample-law metrics (on by default) compare with an exact law, which a guided network does not have: set law = false");
  if (s.law && !s.sampling.mixture)
    t.fail("law", "the sample-law metrics (on by default) compare with the exact law, which a network has only with [model.ground_truth]: "
                  "give it, or set law = false");
  s.law_seed = static_cast<std::uint64_t>(t.integer("law_seed"));
  if (s.law_seed == s.sampling.run.seed) t.fail("law_seed", "must differ from run.seed: the exact draws must be independent of the run's noise");
  if (s.law && s.sampling.samples() < 2) {
    // Blame the key the config gives: law, or the samples when law is on by default.
    if (t.has("law")) t.fail("law", "the law metrics need [run] samples >= 2");
    const char* key = s.sampling.run.initial_file.empty() ? "samples" : "initial_file";
    run_table.fail(key, fmt::format("{} sample: the law metrics ([metrics] law, on by default) need 2 or more", s.sampling.samples()));
  }
  t.finish();
  if (s.sampling.sampler.stochastic && s.strong && s.sampling.grid_spec.steps) {
    // The strong error compares the run with the same sampler on a fine grid driven by the same
    // noise: only the Brownian path is the same on both grids. Per-step noise is that sampler's
    // default, so a run that does not choose is moved to the path; one that chose per_step is refused.
    if (s.sampling.sampler.noise != NoiseKind::brownian) {
      if (s.sampling.sampler.noise_given)
        t.fail("strong", "the strong error compares with a fine-grid run on the same Brownian path, which [sampler] noise = \"per_step\" "
                         "does not give (each grid draws its own noise): set noise = \"brownian\", or strong = false");
      s.sampling.sampler.noise = NoiseKind::brownian;
    }
    try {
      s.fine_grid = build_sampling_grid(s.sampling.grid_spec, *s.sampling.process, strong_steps);
    } catch (const std::exception& e) {
      t.fail("strong_steps", fmt::format("the strong error's fine grid: {}", e.what()));
    }
  }
}

SweepRun read_run(const RunSpec& spec, const std::string& file) {
  SweepRun s;
  ConfigTable root = spec.root(file);
  reject_undeclared_keys(root, {&process_schema(), &model_schema(), &grid_schema(), &sampler_table_schema(), &run_schema(), &metrics_schema(),
                                &likelihood_schema(), &guidance_schema()});
  // The task says which tables the run reads: read it (type, allowed values) before anything else.
  s.task = root.table("run").bind(run_schema()).string("task");
  if (s.task == "likelihood") {
    s.sampling.process = read_process(root.table("process"));
    // Likelihoods are of the exact mixture (a network's are not available through a sweep).
    s.sampling.mixture = std::make_shared<const GaussianMixture>(read_mixture(root.table("model")));
    ConfigTable run_table = root.table("run");
    s.sampling.run = read_run_settings(run_table);
    check_memory(run_table, "samples", 8.0 * static_cast<double>(s.sampling.run.samples) * static_cast<double>(s.sampling.dims() + 2) * 12.0);
    s.likelihood = read_likelihood_setup(root.table("likelihood"));
    check_likelihood_process(root.table("likelihood"), s.likelihood, *s.sampling.process);
    s.likelihood.block_rows = s.sampling.run.block_rows;
  } else {
    s.sampling = read_sampling_setup(root);
    if (s.sampling.class_runs() > 1)
      root.table("guidance").fail("class", "\"all\" is for diffode sample; a sweep runs one class per run (make class an axis)");
    read_metrics(root.table("metrics"), root.table("run"), s);
  }
  if (s.sampling.run.save_trajectory) root.table("run").fail("save_trajectory", "not stored by sweeps (use diffode sample)");
  root.finish();
  s.model_key = canonical(spec.config->get("model"));
  // Everything x_T and the cached solves depend on besides the sampler: the process, the model, the
  // [run] keys that draw or read x_T, and the blocks (an adaptive solve controls its error per block).
  const RunSettings& r = s.sampling.run;
  s.noise_key = fmt::format("{}|{}|{}|{}|{}|{}|{}|{}", canonical(spec.config->get("process")), s.model_key, s.sampling.samples(), r.seed,
                            r.initial, r.initial_file, r.initial_dataset, r.block_rows);
  return s;
}

// The key of a deterministic run's PF-ODE reference in the executor's cache.
std::string reference_key(const SweepRun& s, double sigma_end) {
  return fmt::format("{}|{}|{}|{}", s.noise_key, s.sampling.grid.sigma.front(), sigma_end == 0.0 ? 1e-7 : sigma_end, s.reference_rtol);
}

// The key of a stochastic run's fine solve in the executor's cache.
std::string fine_key(const RunSpec& spec, const SweepRun& s) {
  return fmt::format("{}|{}|{}", s.noise_key, canonical(spec.config->get("sampler")), fmt::join(s.fine_grid->sigma, ","));
}

double elapsed_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void law_metrics(const SweepRun& s, const Batch& x, std::map<std::string, ExactLaw>& laws, RunOutcome& out) {
  // A guided run is measured against its class's conditional law p(x | c): exact at scale 0; at a
  // larger scale the metrics say how far guidance moves the samples from it.
  const auto& guidance = s.sampling.guidance;
  const GaussianMixture& mixture = guidance ? guidance->model->conditional(guidance->settings.target_class) : *s.sampling.mixture;
  const Index n = s.sampling.samples();
  const std::string key = fmt::format("{}|{}|{}|{}|{}|{}", s.model_key, guidance ? guidance->settings.target_class : -1, out.alpha_end, out.sigma_end, n, s.law_seed);
  auto it = laws.find(key);
  if (it == laws.end()) it = laws.emplace(key, make_exact_law(mixture, out.alpha_end, out.sigma_end, n, s.law_seed)).first;
  const ExactLaw& law = it->second;
  const SampleLawMetrics m = compare_to_exact(mixture, law, x);
  out.metric("nll") = m.nll;
  out.metric("nll_exact") = law.nll_exact;
  out.metric("frechet") = m.frechet;
  out.metric("frechet_floor") = law.frechet_floor;
  out.metric("energy") = m.energy;
  out.metric("energy_floor") = law.energy_floor;
  out.metric("weak_mean_error") = m.weak_mean_error;
  out.metric("weak_mean_floor") = law.weak_mean_floor;
  out.metric("weak_cov_error") = m.weak_cov_error;
  out.metric("weak_cov_floor") = law.weak_cov_floor;
}

void likelihood_run(const SweepRun& s, int threads, RunOutcome& out, std::chrono::steady_clock::time_point start) {
  const GaussianMixture& mixture = *s.sampling.mixture;
  const Process& process = *s.sampling.process;
  out.sampler = s.likelihood.solver;
  out.steps = s.likelihood.steps;
  const double t_min = process.t_min();
  out.alpha_end = process.alpha(t_min);
  out.sigma_end = process.sigma(t_min);
  const Batch points = mixture.sample_marginal(out.alpha_end, out.sigma_end, s.sampling.run.samples, s.sampling.run.seed);
  const LikelihoodResult r = evaluate_log_likelihood(s.likelihood, process, mixture, points, threads);
  const PerSample exact =
      mixture.log_prob(points, PerSample::Constant(points.rows(), out.alpha_end), PerSample::Constant(points.rows(), out.sigma_end));
  const LikelihoodMetrics m = likelihood_metrics(r, exact, points.cols());
  out.metric("nfe") = m.nfe_mean;
  out.metric("ll_error") = m.ll_error;
  out.metric("ll_bias") = m.ll_bias;
  out.metric("ll_std_error") = m.ll_std_error;
  out.metric("rtol") = s.likelihood.adaptive() ? s.likelihood.options.adaptive.rtol : std::nan("");
  out.metric("probes") =
      s.likelihood.options.divergence == DivergenceMethod::hutchinson ? static_cast<double>(s.likelihood.options.hutchinson.probes) : 0.0;
  if (r.stats.failed) {
    out.ok = false;
    out.failure = r.stats.failure;
  } else if (!std::isfinite(m.ll_error)) {
    out.ok = false;
    out.failure = "non-finite log-likelihood";
  }
  out.metric("wall_time") = elapsed_since(start);
}

// Pathwise errors: against the exact PF-ODE solution (deterministic samplers) or the same sampler on
// the fine grid and the same Brownian path (stochastic ones), both cached across runs.
void pathwise_errors(const RunSpec& spec, const SweepRun& s, const SamplingOutcome& run, int threads, std::map<std::string, Batch>& references,
                     std::map<std::string, Batch>& fines, RunOutcome& out) {
  const double sigma_start = s.sampling.grid.sigma.front();
  if (!s.sampling.sampler.stochastic) {
    const std::string key = reference_key(s, run.sigma_end);
    auto it = references.find(key);
    if (it == references.end())
      it = references.emplace(key, pf_ode_reference(s.sampling, run, sigma_start, s.reference_rtol, threads)).first;
    out.metric("error_rms") = rms_distance(run.samples, it->second);
    out.metric("error_max") = max_distance(run.samples, it->second);
    out.metric("error_median") = median_distance(run.samples, it->second);
    if (s.sampling.network && s.sampling.mixture && !s.sampling.guidance) {
      // The error decomposition: the exact mixture's own tight solve from the same x_T to the same
      // end, cached beside the network's.
      auto exact = references.find(key + "|exact");
      if (exact == references.end())
        exact = references.emplace(key + "|exact", pf_ode_reference(s.sampling, run, sigma_start, s.reference_rtol, threads, true)).first;
      out.metric("model_error_rms") = rms_distance(it->second, exact->second);
      out.metric("model_error_median") = median_distance(it->second, exact->second);
      out.metric("total_error_rms") = rms_distance(run.samples, exact->second);
      out.metric("total_error_median") = median_distance(run.samples, exact->second);
    }
  } else if (s.fine_grid) {
    const std::string key = fine_key(spec, s);
    auto it = fines.find(key);
    if (it == fines.end()) {
      SamplingOutcome fine = run_sampling(s.sampling, run.initial, *s.fine_grid, threads);
      if (fine.failed) throw std::runtime_error("the strong-error fine solve failed: " + fine.failure);
      if (fine.sigma_end != run.sigma_end) fine.samples.resize(0, 0);  // ends elsewhere: no strong error
      it = fines.emplace(key, std::move(fine.samples)).first;
    }
    if (it->second.size() > 0) {
      out.metric("strong_error") = rms_distance(run.samples, it->second);
      out.metric("strong_error_median") = median_distance(run.samples, it->second);
    }
  }
}

}  // namespace

double& RunOutcome::metric(std::string_view name) { return metrics[metric_index(name)]; }
double RunOutcome::metric(std::string_view name) const { return metrics[metric_index(name)]; }

const TableSchema& metrics_schema() {
  static const TableSchema s{
      "metrics",
      "a sweep's measurements of each sampling run",
      {number_key("reference_rtol", "tolerance of the PF-ODE reference solve (deterministic samplers)").fallback(1e-10).above(0).below(1),
       boolean_key("strong", "strong error of stochastic samplers against the same sampler on a fine grid, same Brownian path (such runs "
                             "draw [sampler] noise = \"brownian\" unless they set noise, which must then be \"brownian\")")
           .fallback_bool(true),
       integer_key("strong_steps", "steps of that fine solve").fallback_int(1024).at_least(1).at_most(1000000),
       boolean_key("law", "the sample-law metrics: NLL, Frechet and energy distances, weak moment errors").fallback_bool(true),
       integer_key("law_seed", "seed of the exact draws the law metrics compare with (must differ from [run] seed)")
           .fallback_int(1000003)
           .at_least(0)}};
  return s;
}

double validate_run(const RunSpec& run, const std::string& file) {
  const SweepRun s = read_run(run, file);
  // Attributes and metrics, the mixture, and with save_samples the samples and x_T.
  const double mixture =
      s.sampling.mixture ? 8.0 * static_cast<double>(s.sampling.mixture->weights().size()) * (1.0 + 2.0 * static_cast<double>(s.sampling.dims())) : 0.0;
  const double samples = s.sampling.run.save_samples ? 16.0 * static_cast<double>(s.sampling.samples()) * static_cast<double>(s.sampling.dims()) : 0.0;
  return 16384.0 + mixture + samples;
}

RunSharing run_sharing(const RunSpec& run, const std::string& file) {
  const SweepRun s = read_run(run, file);
  const double rows = static_cast<double>(s.sampling.samples()) * static_cast<double>(s.sampling.dims());
  RunSharing out;
  if (s.task == "likelihood") {
    out.cost = rows * static_cast<double>(s.likelihood.steps > 0 ? s.likelihood.steps : 100);
    return out;
  }
  out.cost = rows * static_cast<double>(s.sampling.sampler.adaptive || s.sampling.grid.steps() < 1 ? 100 : s.sampling.grid.steps());
  if (!s.sampling.sampler.stochastic) {
    // The reference's end point is known only once the run has chosen its final step: the key
    // leaves it out, so that every run that might share the reference shares the key.
    out.key = fmt::format("reference|{}|{}|{}", s.noise_key, s.sampling.grid.sigma.front(), s.reference_rtol);
    out.shared_cost = rows * 200.0;
  } else if (s.fine_grid) {
    out.key = "fine|" + fine_key(run, s);
    out.shared_cost = rows * static_cast<double>(s.fine_grid->steps());
  }
  return out;
}

struct RunExecutor::Caches {
  std::map<std::string, Batch> references;  // PF-ODE solutions at the end point, per noise and end
  std::map<std::string, Batch> fine;        // fine solves of stochastic samplers, per path
  std::map<std::string, ExactLaw> laws;
};

RunExecutor::RunExecutor() : caches_(std::make_unique<Caches>()) {}
RunExecutor::~RunExecutor() = default;

void RunExecutor::forget_shared() {
  caches_->references.clear();
  caches_->fine.clear();
}

RunOutcome RunExecutor::execute(const RunSpec& spec, const std::string& file, int threads) {
  RunOutcome out;
  const auto start = std::chrono::steady_clock::now();
  try {
    const SweepRun s = read_run(spec, file);
    out.task = s.task;
    out.seed = static_cast<std::int64_t>(s.sampling.run.seed);
    if (s.sampling.network) out.model = s.sampling.network->description();
    if (s.sampling.mixture) {
      const GaussianMixture& mixture = *s.sampling.mixture;
      out.mixture_weights = Batch(mixture.weights().matrix());
      out.mixture_means = mixture.means();
      out.mixture_variances = mixture.variances();
    }
    if (s.task == "likelihood") {
      likelihood_run(s, threads, out, start);
      return out;
    }
    out.sampler = s.sampling.sampler.name;
    out.schedule = s.sampling.grid_spec.schedule;
    out.final_step = s.sampling.grid_spec.final_step_name;
    out.steps = s.sampling.grid.steps();
    out.stochastic = s.sampling.sampler.stochastic;
    if (out.stochastic) out.noise = std::string(noise_kind_name(s.sampling.sampler.noise));
    const SamplingOutcome run = run_sampling(s.sampling, initial_noise(s.sampling), threads);
    out.metric("nfe") = run.nfe;
    out.metric("wall_time") = elapsed_since(start);  // the sampler's own time; metrics come after
    out.alpha_end = run.alpha_end;
    out.sigma_end = run.alpha_end * run.sigma_end;
    if (s.sampling.run.save_samples) {
      out.samples = run.samples;
      out.initial = run.initial;
    }
    if (run.failed) {
      out.ok = false;
      out.failure = run.failure;
      return out;
    }
    if (const auto finite = run.samples.isFinite().rowwise().all(); !finite.all()) {
      out.ok = false;
      out.failure = fmt::format("non-finite samples in {} of {} rows", (!finite).count(), run.samples.rows());
      return out;
    }
    pathwise_errors(spec, s, run, threads, caches_->references, caches_->fine, out);
    if (s.law) law_metrics(s, run.samples, caches_->laws, out);
  } catch (const std::exception& e) {
    out.ok = false;
    out.failure = fmt::format("exception: {}", e.what());
    if (std::isnan(out.metric("wall_time"))) out.metric("wall_time") = elapsed_since(start);
  }
  return out;
}

}  // namespace diffode
