#include "experiments/sweep/runner.hpp"

#include "experiments/run/classifier_training.hpp"
#include "experiments/run/features.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/likelihood.hpp"
#include "experiments/run/metrics.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/reference.hpp"
#include "experiments/run/sampling.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
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
  bool pathwise = true, strong = true, law = true;
  // The image metrics: a Frechet distance against a reference set, and the class accuracy.
  std::optional<FeatureChoice> frechet_features;
  std::string frechet_features_text, frechet_reference, classifier;
  std::uint64_t law_seed = 1000003;
  // task "likelihood"
  LikelihoodSetup likelihood;
  // Cache keys: the noise (process, model, samples, seed) and the model.
  std::string noise_key, model_key;
};

void read_metrics(ConfigTable t, const ConfigTable& run_table, SweepRun& s) {
  t = t.bind(metrics_schema());
  s.reference_rtol = t.number("reference_rtol");
  s.pathwise = t.boolean("pathwise");
  // class = "all" runs every class from the same x_T; the reference solve knows one class.
  if (s.pathwise && s.sampling.class_runs() > 1 && !s.sampling.sampler.stochastic)
    t.fail("pathwise", "the pathwise errors (on by default) solve the PF-ODE of one class, and [guidance] class = \"all\" runs every class: "
                       "set pathwise = false, or sweep the class as an axis");
  s.strong = t.boolean("strong");
  const auto strong_steps = static_cast<int>(t.integer("strong_steps"));
  s.law = t.boolean("law");
  if (s.law && s.sampling.class_runs() > 1)
    t.fail("law", "the sample-law metrics compare with one class's exact law, and [guidance] class = \"all\" runs every class: set law = false");
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
  if (t.has("frechet_features")) {
    s.frechet_features_text = t.string("frechet_features");
    try {
      s.frechet_features = parse_feature_choice(s.frechet_features_text);
    } catch (const ConfigError&) {
      t.fail("frechet_features", fmt::format("'{}': expected \"pixels\" (or \"raw\"), \"classifier:FILE\" or \"torchscript:FILE\"",
                                             s.frechet_features_text));
    }
    std::error_code ec;
    if (!s.frechet_features->file.empty() && !std::filesystem::exists(s.frechet_features->file, ec))
      t.fail("frechet_features", fmt::format("{}: no such file", s.frechet_features->file));
    if (!t.has("frechet_reference")) t.fail("frechet_features", "needs frechet_reference, the set the samples are compared with");
    s.frechet_reference = t.string("frechet_reference");
    if (!fashion_mnist_operand(s.frechet_reference)) {
      if (s.frechet_reference.starts_with("fashion_mnist:"))
        t.fail("frechet_reference", fmt::format("'{}': the Fashion-MNIST references are fashion_mnist:test and fashion_mnist:train", s.frechet_reference));
      if (!std::filesystem::is_regular_file(s.frechet_reference, ec))
        t.fail("frechet_reference", fmt::format("{}: no such file (a statistics file of diffode fd --save-stats, a sample file, or fashion_mnist:test)",
                                                s.frechet_reference));
    }
  } else if (t.has("frechet_reference")) {
    t.fail("frechet_reference", "a reference without frechet_features: give the features too (e.g. frechet_features = \"pixels\")");
  }
  if (t.has("classifier")) {
    s.classifier = t.string("classifier");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(s.classifier, ec)) t.fail("classifier", fmt::format("{}: no such file", s.classifier));
    if (!s.sampling.guidance)
      t.fail("classifier", "the class accuracy is of a class-conditional run: it needs [guidance] (a class, or class = \"all\")");
  }
  t.finish();
  if (s.sampling.sampler.stochastic && s.strong && s.sampling.grid_spec.steps) {
    // The strong error compares the run with the same sampler on a fine grid driven by the same
    // noise: only the Brownian path is the same on both grids. Per-step noise is that sampler's
    // default, so a run that does not choose is moved to the path; one that chose per_step is refused.
    if (s.sampling.sampler.noise != NoiseKind::brownian) {
      if (s.sampling.sampler.noise_given)
        t.fail("strong", fmt::format("the strong error compares with a fine-grid run on the same Brownian path, which [sampler] noise = "
                                     "\"{}\" does not give ({}): set noise = \"brownian\", or strong = false",
                                     noise_kind_name(s.sampling.sampler.noise),
                                     s.sampling.sampler.noise == NoiseKind::per_step
                                         ? "each grid draws its own noise"
                                         : "its tree splits at the run's own grid points, and the fine grid does not refine them"));
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
    read_metrics(root.table("metrics"), root.table("run"), s);
  }
  if (s.sampling.run.save_trajectory) root.table("run").fail("save_trajectory", "not stored by sweeps (use diffode sample)");
  root.finish();
  // The guidance is part of the model the samplers solve (the guided denoiser): runs at other
  // scales or classes must not share a cached reference.
  s.model_key = canonical(spec.config->get("model")) + "|" + canonical(spec.config->get("guidance"));
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
    if (!s.pathwise) return;
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

// The column of a Frechet distance on `label`'s features: fd_pixels for the rows as stored, else
// fd_ and the feature network's name in lower case, other characters as '_' (fd_fmnist_classifier).
std::string frechet_column(const std::string& label) {
  if (label == "raw") return "fd_pixels";
  std::string out = "fd_";
  for (const char c : label) out += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : '_';
  return out;
}

// The samples as a row source of their own, read as diffode fd reads a sample file's dataset.
RowSource samples_source(const Batch& x) {
  RowSource r;
  r.name = "the run's samples";
  r.rows = x.rows(), r.cols = x.cols();
  r.read = [&x](Index first, Index count) { return Batch(x.middleRows(first, count)); };
  return r;
}

}  // namespace

// Loaded once per executor: feature networks (per spec), classifiers (per file) and reference
// statistics (per spec and reference).
struct ImageMetricCaches {
  std::map<std::string, LoadedFeatures> features;
  std::map<std::string, FrechetStatistics> references;
};

namespace {

// Block rows of the moments, diffode fd's default: a run's FD equals `diffode fd` on its samples.
constexpr Index kFrechetBlockRows = 4096;

const LoadedFeatures& features_of(ImageMetricCaches& c, const FeatureChoice& choice, const std::string& key, int threads) {
  auto it = c.features.find(key);
  if (it == c.features.end()) it = c.features.emplace(key, load_features(choice, FeatureSpec{}, threads)).first;
  return it->second;
}

void image_metrics(const SweepRun& s, const Batch& x, ImageMetricCaches& caches, int threads, RunOutcome& out) {
  if (s.frechet_features) {
    const LoadedFeatures& features = features_of(caches, *s.frechet_features, "features|" + s.frechet_features_text, threads);
    if (features.network && features.network->input_dims() > 0 && x.cols() != features.network->input_dims())
      throw std::runtime_error(fmt::format("samples of {} values; the feature network {} takes {}", x.cols(), features.label, features.network->input_dims()));
    const std::string key = s.frechet_features_text + "|" + s.frechet_reference;
    auto it = caches.references.find(key);
    if (it == caches.references.end()) {
      FrechetStatistics reference;
      bool cached = false;
      if (!fashion_mnist_operand(s.frechet_reference)) {
        const Hdf5File h5(s.frechet_reference, Hdf5File::Mode::read);
        if (is_statistics_file(h5)) {
          reference = read_statistics(h5);
          cached = true;
        }
      }
      if (cached) {
        if (reference.feature != features.feature || reference.feature_hash != features.hash)
          throw std::runtime_error(fmt::format("{}: statistics of features '{}' (hash {}), but frechet_features gives '{}' (hash {})", s.frechet_reference,
                                               reference.feature, reference.feature_hash, features.feature, features.hash));
      } else {
        reference = feature_statistics(open_rows(s.frechet_reference, "samples", ""), features, kFrechetBlockRows, threads);
      }
      it = caches.references.emplace(key, std::move(reference)).first;
    }
    const FrechetStatistics mine = feature_statistics(samples_source(x), features, kFrechetBlockRows, threads);
    out.named_metrics.emplace_back(frechet_column(features.label), frechet_distance(mine, it->second));
    out.notes.emplace_back("frechet_features", features.feature);
    out.notes.emplace_back("frechet_feature_sha256", features.hash);
    out.notes.emplace_back("frechet_reference", fmt::format("{} ({} rows)", it->second.source, it->second.count));
  }
  if (!s.classifier.empty()) {
    const LoadedFeatures& classifier = features_of(caches, FeatureChoice{.kind = "classifier", .file = s.classifier}, "classifier|" + s.classifier, threads);
    if (x.cols() != classifier.network->input_dims())
      throw std::runtime_error(fmt::format("samples of {} values; the classifier {} takes {}", x.cols(), s.classifier, classifier.network->input_dims()));
    const std::vector<std::int64_t> labels = s.sampling.labels();
    for (const std::int64_t l : labels)
      if (l >= classifier.network->classes())
        throw std::runtime_error(fmt::format("class {} outside the classifier's classes 0..{}", l, classifier.network->classes() - 1));
    out.metric("class_accuracy") = classify_rows(*classifier.network, x, labels).accuracy();
    out.notes.emplace_back("classifier", fmt::format("{} (sha256 {})", s.classifier, classifier.hash));
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
       boolean_key("pathwise", "pathwise errors of deterministic samplers against a tight PF-ODE solve from the same x_T (error_rms, ...; "
                               "off for [guidance] class = \"all\", and where that solve of a large network costs too much)")
           .fallback_bool(true),
       boolean_key("strong", "strong error of stochastic samplers against the same sampler on a fine grid, same Brownian path (such runs "
                             "draw [sampler] noise = \"brownian\" unless they set noise, which must then be \"brownian\")")
           .fallback_bool(true),
       integer_key("strong_steps", "steps of that fine solve").fallback_int(1024).at_least(1).at_most(1000000),
       boolean_key("law", "the sample-law metrics: NLL, Frechet and energy distances, weak moment errors").fallback_bool(true),
       integer_key("law_seed", "seed of the exact draws the law metrics compare with (must differ from [run] seed)")
           .fallback_int(1000003)
           .at_least(0),
       string_key("frechet_features",
                  "a Frechet distance of the samples to frechet_reference on these features, the spec strings of diffode fd --features: "
                  "\"pixels\" (the rows as stored; column fd_pixels), \"classifier:FILE\" (a diffode train classifier's penultimate "
                  "layer; column fd_<its name>, e.g. fd_fmnist_classifier) or \"torchscript:FILE\" (a module taking the rows as stored)")
           .optional("none"),
       string_key("frechet_reference",
                  "the set the Frechet distance compares with: fashion_mnist:test, fashion_mnist:train, a statistics file of diffode fd "
                  "--save-stats (made with the same features), or a sample file (its dataset 'samples'); its statistics are computed once")
           .optional("none (required with frechet_features)"),
       string_key("classifier", "a diffode train classifier's checkpoint: class_accuracy, the fraction of a class-conditional run's samples "
                                "it assigns to their requested class (as diffode classify)")
           .optional("none")}};
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
  ImageMetricCaches images;
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
    out.metric("model_calls") = run.model_calls;
    out.metric("wall_time") = elapsed_since(start);  // the sampler's own time; metrics come after
    out.alpha_end = run.alpha_end;
    out.sigma_end = run.alpha_end * run.sigma_end;
    if (s.sampling.run.save_samples) {
      out.samples = run.samples;
      out.initial = run.initial;
      out.labels = s.sampling.labels();
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
    image_metrics(s, run.samples, caches_->images, threads, out);
  } catch (const std::exception& e) {
    out.ok = false;
    out.failure = fmt::format("exception: {}", e.what());
    if (std::isnan(out.metric("wall_time"))) out.metric("wall_time") = elapsed_since(start);
  }
  return out;
}

}  // namespace diffode
