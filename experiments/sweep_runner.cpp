#include "experiments/sweep_runner.hpp"

#include "experiments/likelihood_command.hpp"
#include "experiments/metrics.hpp"
#include "experiments/parallel.hpp"
#include "experiments/readers.hpp"
#include "experiments/sampler_registry.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/diffusion/probability_flow.hpp"
#include "solvers/ode/dopri5.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <algorithm>
#include <cmath>
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
struct RunSettings {
  std::string task;
  std::unique_ptr<Process> process;
  std::unique_ptr<GaussianMixture> mixture;
  Index samples = 0, block_rows = 256;
  std::uint64_t seed = 0;
  bool save_samples = false;
  // task "sample"
  TimeGrid grid, fine_grid;
  std::string sampler, schedule, final_step;
  SamplerRunner runner;
  bool stochastic = false;
  double reference_rtol = 1e-10;
  bool strong = true, law = true;
  std::uint64_t law_seed = 1000003;
  // task "likelihood"
  LikelihoodSetup likelihood;
  // Cache keys: the noise (process, model, samples, seed) and the model.
  std::string noise_key, model_key;
};

RunSettings read_run(const RunSpec& spec, const std::string& file) {
  RunSettings s;
  ConfigTable root = spec.root(file);
  ConfigTable run = root.table("run");
  s.task = run.string("task", "sample", {"sample", "likelihood"});
  s.samples = run.integer("samples", 1024);
  if (s.samples < 2 || s.samples > 100000000) run.fail("samples", fmt::format("must lie in 2..10^8, got {}", s.samples));
  s.seed = static_cast<std::uint64_t>(run.integer("seed", 0));
  s.block_rows = run.integer("block_rows", 256);
  if (s.block_rows < 1) run.fail("block_rows", "must be >= 1");
  s.save_samples = run.boolean("save_samples", false);
  run.finish();
  s.process = read_process(root.table("process"));
  s.mixture = std::make_unique<GaussianMixture>(read_mixture(root.table("model")));
  s.model_key = canonical(spec.config->get("model"));
  s.noise_key = fmt::format("{}|{}|{}|{}", canonical(spec.config->get("process")), s.model_key, s.samples, s.seed);

  if (s.task == "likelihood") {
    s.likelihood = read_likelihood_setup(root.table("likelihood"));
    s.likelihood.block_rows = s.block_rows;
  } else {
    ConfigTable grid_table = root.table("grid");
    s.grid = read_grid(grid_table, *s.process);
    s.schedule = spec.config->at_path("grid.schedule").value_or<std::string>("karras");
    s.final_step = spec.config->at_path("grid.final_step").value_or<std::string>("to_zero");
    ConfigTable sampler = root.table("sampler");
    s.sampler = sampler.string("name");
    s.runner = find_sampler(s.sampler, sampler).configure(sampler, s.stochastic);
    sampler.finish();
    ConfigTable metrics = root.table("metrics");
    s.reference_rtol = metrics.number("reference_rtol", 1e-10);
    if (!(s.reference_rtol > 0 && s.reference_rtol < 1)) metrics.fail("reference_rtol", "must lie in (0, 1)");
    s.strong = metrics.boolean("strong", true);
    const auto strong_steps = metrics.integer("strong_steps", 1024);
    if (strong_steps < 1 || strong_steps > 1000000) metrics.fail("strong_steps", "must lie in 1..10^6");
    s.law = metrics.boolean("law", true);
    s.law_seed = static_cast<std::uint64_t>(metrics.integer("law_seed", 1000003));
    if (s.law_seed == s.seed) metrics.fail("law_seed", "must differ from run.seed: the exact draws must be independent of the run's noise");
    metrics.finish();
    // The strong error's fine solve: the same sampler and schedule with strong_steps steps.
    if (s.stochastic && s.strong && spec.config->at_path("grid.steps")) {
      toml::table fine = *spec.config->get_as<toml::table>("grid");
      fine.insert_or_assign("steps", strong_steps);
      s.fine_grid = read_grid(ConfigTable(fine, "grid", file, spec.lines), *s.process);
    }
  }
  root.finish();
  return s;
}

double elapsed_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// x_T of the run: the prior N(0, prior_std^2 I), drawn per row so that blocks agree with the whole.
Batch initial_noise(const RunSettings& s) { return s.mixture->sample_marginal(0.0, s.process->prior_std(), s.samples, s.seed); }

struct BlockedStats {
  double nfe = 0;  // mean over rows of the evaluations their block took
  bool failed = false;
  std::string failure;
};

// Runs the sampler on the scale-free state x (modified in place) over `sigmas`, block by block.
BlockedStats run_sampler(const RunSettings& s, const TimeGrid& grid, Batch& x, int threads) {
  const auto blocks = make_blocks(x.rows(), s.block_rows);
  std::vector<IntegrationStats> stats(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) {
    // Each block has its own predictor and denoiser: they keep counters and scratch.
    const MixturePredictor predictor(*s.mixture);
    const ScaledDenoiser<Batch> denoiser(*s.process, predictor);
    Batch block = x.middleRows(b.begin, b.rows());
    std::unique_ptr<SigmaNoise<Batch>> noise;
    if (s.stochastic) noise = std::make_unique<SigmaNoise<Batch>>(s.seed, grid.sigma.front(), x.cols(), b.begin);
    SamplerObserver observer = [](const StepInfo&, const Batch&) {};
    try {
      stats[b.index] = s.runner(denoiser, block, grid.sigma, noise.get(), observer);
    } catch (const std::exception& e) {
      stats[b.index].failed = true;
      stats[b.index].failure = fmt::format("exception: {}", e.what());
    }
    if (!stats[b.index].failed && grid.final_step == FinalStep::denoise) {
      Batch denoised;
      denoiser(block, grid.sigma.back(), denoised);
      ++stats[b.index].nfe;
      block = denoised;
    }
    x.middleRows(b.begin, b.rows()) = block;
  });
  BlockedStats out;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    out.nfe += static_cast<double>(stats[i].nfe) * static_cast<double>(blocks[i].rows()) / static_cast<double>(x.rows());
    if (stats[i].failed && !out.failed) {
      out.failed = true;
      out.failure = fmt::format("rows {}..{}: {}", blocks[i].begin, blocks[i].end - 1, stats[i].failure);
    }
  }
  return out;
}

// The median over samples of the Euclidean distance. On a mixture the RMS is dominated by the few
// samples a coarse solve sends into another mode (a basin switch costs O(1) and its probability
// shrinks like the pathwise error, so the RMS then falls at half the order); the median shows the
// typical sample, and its slope the solver's order.
double median_distance(const Batch& a, const Batch& b) {
  Eigen::ArrayXd distance = (a - b).square().rowwise().sum().sqrt();
  std::sort(distance.begin(), distance.end());
  const Index n = distance.size();
  return n % 2 ? distance[n / 2] : 0.5 * (distance[n / 2 - 1] + distance[n / 2]);
}

// The scale-free noise level of the run's result: 0 for grids that end at zero or denoise.
double end_sigma(const TimeGrid& grid) { return grid.final_step == FinalStep::denoise ? 0.0 : grid.sigma.back(); }

}  // namespace

double& RunOutcome::metric(std::string_view name) { return metrics[metric_index(name)]; }
double RunOutcome::metric(std::string_view name) const { return metrics[metric_index(name)]; }

void validate_run(const RunSpec& run, const std::string& file) { (void)read_run(run, file); }

struct RunExecutor::Caches {
  std::map<std::string, Batch> references;  // PF-ODE solutions at the end point, per noise and end
  std::map<std::string, Batch> fine;        // fine solves of stochastic samplers, per path
  std::map<std::string, ExactLaw> laws;
};

RunExecutor::RunExecutor() : caches_(std::make_unique<Caches>()) {}
RunExecutor::~RunExecutor() = default;

RunOutcome RunExecutor::execute(const RunSpec& spec, const std::string& file, int threads) {
  RunOutcome out;
  const auto start = std::chrono::steady_clock::now();
  try {
    const RunSettings s = read_run(spec, file);
    out.task = s.task;
    out.seed = static_cast<std::int64_t>(s.seed);
    const GaussianMixture& mixture = *s.mixture;
    out.mixture_weights = Batch(mixture.weights().matrix());
    out.mixture_means = mixture.means();
    out.mixture_variances = mixture.variances();

    if (s.task == "likelihood") {
      out.sampler = s.likelihood.solver;
      out.steps = s.likelihood.steps;
      const double t_min = s.process->t_min();
      out.alpha_end = s.process->alpha(t_min);
      out.sigma_end = s.process->sigma(t_min);
      const Batch points = mixture.sample_marginal(out.alpha_end, out.sigma_end, s.samples, s.seed);
      const LikelihoodResult r = evaluate_log_likelihood(s.likelihood, *s.process, mixture, points, threads);
      const PerSample exact = mixture.log_prob(points, PerSample::Constant(points.rows(), out.alpha_end),
                                               PerSample::Constant(points.rows(), out.sigma_end));
      const LikelihoodMetrics m = likelihood_metrics(r, exact, points.cols());
      out.metric("nfe") = m.nfe_mean;
      out.metric("ll_error") = m.ll_error;
      out.metric("ll_bias") = m.ll_bias;
      out.metric("ll_std_error") = m.ll_std_error;
      out.metric("rtol") = s.likelihood.solver == "dopri5" ? s.likelihood.options.adaptive.rtol : std::nan("");
      out.metric("probes") = s.likelihood.options.divergence == DivergenceMethod::hutchinson
                                 ? static_cast<double>(s.likelihood.options.hutchinson.probes)
                                 : 0.0;
      if (r.stats.failed) {
        out.ok = false;
        out.failure = r.stats.failure;
      } else if (!std::isfinite(m.ll_error)) {
        out.ok = false;
        out.failure = "non-finite log-likelihood";
      }
      out.metric("wall_time") = elapsed_since(start);
      return out;
    }

    out.sampler = s.sampler;
    out.schedule = s.schedule;
    out.final_step = s.final_step;
    out.steps = s.grid.steps();
    out.stochastic = s.stochastic;
    const MixturePredictor scale_predictor(mixture);
    const ScaledDenoiser<Batch> scale(*s.process, scale_predictor);  // for alpha_at: x = alpha x~
    auto alpha_at = [&](double sigma) { return scale.alpha_at(sigma); };
    const double alpha_T = alpha_at(s.grid.sigma.front());
    const Batch x_T = initial_noise(s);
    Batch x = x_T / alpha_T;
    const BlockedStats run = run_sampler(s, s.grid, x, threads);
    const double sigma_end = end_sigma(s.grid);
    const double alpha_end = alpha_at(sigma_end);
    x *= alpha_end;
    out.metric("nfe") = run.nfe;
    out.metric("wall_time") = elapsed_since(start);  // the sampler's own time; metrics come after
    out.alpha_end = alpha_end;
    out.sigma_end = alpha_end * sigma_end;
    if (s.save_samples) {
      out.samples = x;
      out.initial = x_T;
    }
    if (run.failed) {
      out.ok = false;
      out.failure = run.failure;
      return out;
    }
    if (const auto finite = x.isFinite().rowwise().all(); !finite.all()) {
      out.ok = false;
      out.failure = fmt::format("non-finite samples in {} of {} rows", (!finite).count(), x.rows());
      return out;
    }

    if (!s.stochastic) {
      // The exact PF-ODE solution from the same x_T, whatever the grid: at sigma~ = 0 (x(0)) for a
      // grid that ends at zero or denoises, else at the grid's last level. Solved in the
      // scale-free variables, where the flow dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ is the same
      // for every process (D(x~; sigma~) = E[x0 | x0 + sigma~ eps = x~]) and defined down to 0 even
      // where the process's own time stops (VP at t_min): an EDM-parameterised denoiser (alpha = 1)
      // evaluates it at any level. Adaptive Dopri5 in log sigma~ (relative steps down to small
      // noise), per-sample control, to sigma~ = 1e-7, then x(0) = D(x; 1e-7): x~ - D = -sigma~^2
      // score moves x by O(1e-14) below that.
      const bool to_zero = sigma_end == 0.0;
      const double sigma_to = to_zero ? 1e-7 : sigma_end;
      const std::string key = fmt::format("{}|{}|{}|{}", s.noise_key, s.grid.sigma.front(), sigma_to, s.reference_rtol);
      auto it = caches_->references.find(key);
      if (it == caches_->references.end()) {
        Batch reference = x_T / alpha_T;
        const Edm scale_free(std::min(sigma_to, 1e-3), std::max(s.grid.sigma.front(), 1.0));
        const auto blocks = make_blocks(reference.rows(), s.block_rows);
        for_each_block(blocks, threads, [&](const BlockRange& b) {
          const MixturePredictor predictor(mixture);
          const ScaledDenoiser<Batch> denoiser(scale_free, predictor);
          const LogSigmaProbabilityFlow<Batch, ScaledDenoiser<Batch>> flow(denoiser);
          Batch block = reference.middleRows(b.begin, b.rows());
          Dopri5<Batch> stepper;
          const AdaptiveStats stats = integrate_adaptive(stepper, flow, std::log(s.grid.sigma.front()), std::log(sigma_to), block,
                                                         {.rtol = s.reference_rtol, .atol = s.reference_rtol});
          if (stats.failed) throw std::runtime_error("the PF-ODE reference solve failed: " + stats.failure);
          if (to_zero) {
            Batch denoised;
            denoiser(block, sigma_to, denoised);
            block = denoised;
          }
          reference.middleRows(b.begin, b.rows()) = block;
        });
        it = caches_->references.emplace(key, reference * alpha_end).first;
      }
      out.metric("error_rms") = rms_distance(x, it->second);
      out.metric("error_max") = max_distance(x, it->second);
      out.metric("error_median") = median_distance(x, it->second);
    } else if (s.strong && !s.fine_grid.sigma.empty()) {
      // The same sampler on the fine grid, on the same Brownian path (SigmaNoise keyed by seed).
      const std::string key = fmt::format("{}|{}|{}", s.noise_key, canonical(spec.config->get("sampler")),
                                          fmt::join(s.fine_grid.sigma, ","));
      auto it = caches_->fine.find(key);
      if (it == caches_->fine.end()) {
        Batch fine = x_T / alpha_T;
        const BlockedStats fine_run = run_sampler(s, s.fine_grid, fine, threads);
        if (fine_run.failed) throw std::runtime_error("the strong-error fine solve failed: " + fine_run.failure);
        it = caches_->fine.emplace(key, fine * alpha_at(end_sigma(s.fine_grid))).first;
      }
      if (end_sigma(s.fine_grid) == sigma_end) {
        out.metric("strong_error") = rms_distance(x, it->second);
        out.metric("strong_error_median") = median_distance(x, it->second);
      }
    }

    if (s.law) {
      const std::string key = fmt::format("{}|{}|{}|{}|{}", s.model_key, out.alpha_end, out.sigma_end, s.samples, s.law_seed);
      auto it = caches_->laws.find(key);
      if (it == caches_->laws.end())
        it = caches_->laws.emplace(key, make_exact_law(mixture, out.alpha_end, out.sigma_end, s.samples, s.law_seed)).first;
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
  } catch (const std::exception& e) {
    out.ok = false;
    out.failure = fmt::format("exception: {}", e.what());
    if (std::isnan(out.metric("wall_time"))) out.metric("wall_time") = elapsed_since(start);
  }
  return out;
}

}  // namespace diffode
