#include "experiments/sample_command.hpp"

#include "experiments/config.hpp"
#include "experiments/hdf5_file.hpp"
#include "experiments/provenance.hpp"
#include "experiments/sampler_registry.hpp"
#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"

#include <fmt/format.h>

#include <iostream>
#include <memory>

namespace diffode {
namespace {

std::unique_ptr<Process> read_process(ConfigTable t) {
  const std::string name = t.string("name", "edm", {"edm", "vp", "vp_cosine", "subvp", "ve", "flow"});
  ProcessParams p;
  p.beta_min = t.number("beta_min", p.beta_min);
  p.beta_max = t.number("beta_max", p.beta_max);
  p.sigma_min = t.number("sigma_min", p.sigma_min);
  p.sigma_max = t.number("sigma_max", p.sigma_max);
  p.t_min = t.number("t_min", p.t_min);
  p.t_max = t.number("t_max", p.t_max);
  t.finish();
  try {
    return make_process(name, p);
  } catch (const std::exception& e) {
    t.fail("name", e.what());
  }
}

GaussianMixture read_mixture(ConfigTable t) {
  t.string("kind", "mixture", {"mixture"});
  if (t.has("file")) {
    const std::string file = t.string("file");
    t.finish();
    try {
      Hdf5File h5(file, Hdf5File::Mode::read);
      const auto w = h5.read_vector("weights");
      return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), w.size()), h5.read_matrix("means"), h5.read_matrix("variances"));
    } catch (const std::exception& e) {
      t.fail("file", e.what());
    }
  }
  if (t.has("weights")) {
    const auto w = t.numbers("weights");
    const auto means = t.number_rows("means");
    const auto vars = t.number_rows("variances");
    t.finish();
    if (means.size() != w.size() || vars.size() != w.size() || means.empty())
      t.fail("means", "weights, means and variances need one entry per component");
    const Index k = static_cast<Index>(w.size()), d = static_cast<Index>(means[0].size());
    Batch m(k, d), v(k, d);
    for (Index i = 0; i < k; ++i) {
      if (static_cast<Index>(means[i].size()) != d || static_cast<Index>(vars[i].size()) != d)
        t.fail("means", "every mean and variance row needs the same dimension");
      for (Index j = 0; j < d; ++j) m(i, j) = means[i][j], v(i, j) = vars[i][j];
    }
    try {
      return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), k), m, v);
    } catch (const std::exception& e) {
      t.fail("weights", e.what());
    }
  }
  const std::string preset = t.string("preset", "ring2d", {"ring2d", "iso16", "diag64"});
  const auto seed = static_cast<std::uint64_t>(t.integer("seed", 0));
  t.finish();
  if (preset == "ring2d") return GaussianMixture::ring();
  if (preset == "iso16") return GaussianMixture::random_isotropic(16, 10, seed);
  return GaussianMixture::random_diagonal(64, 4, seed);
}

TimeGrid read_grid(ConfigTable t, const Process& process) {
  const std::string schedule = t.string("schedule", "karras", {"karras", "uniform_t", "uniform_lambda", "quadratic", "exponential",
                                                               "polyexponential", "ddpm", "file", "hdf5"});
  const std::string final_name = t.string("final_step", "to_zero", {"to_zero", "to_t_min", "denoise"});
  const FinalStep final_step = final_name == "to_zero" ? FinalStep::to_zero : final_name == "denoise" ? FinalStep::denoise : FinalStep::to_t_min;
  auto steps = [&] {
    const auto n = t.integer("steps");
    if (n < 1 || n > 1000000) t.fail("steps", fmt::format("must lie in 1..1000000, got {}", n));
    return static_cast<int>(n);
  };
  TimeGrid grid;
  try {
    if (schedule == "karras") {
      const int n = steps();
      grid = karras_grid(process, n, final_step, t.number("rho", 7.0));
    } else if (schedule == "polyexponential") {
      const int n = steps();
      grid = polyexponential_grid(process, n, final_step, t.number("rho", 1.0));
    } else if (schedule == "uniform_t") {
      grid = uniform_t_grid(process, steps(), final_step);
    } else if (schedule == "uniform_lambda") {
      grid = uniform_lambda_grid(process, steps(), final_step);
    } else if (schedule == "quadratic") {
      grid = quadratic_grid(process, steps(), final_step);
    } else if (schedule == "exponential") {
      grid = exponential_grid(process, steps(), final_step);
    } else if (schedule == "ddpm") {
      const int n = steps();
      const std::string spacing = t.string("spacing", "leading", {"linspace", "leading", "trailing"});
      grid = ddpm_grid(process, n,
                       spacing == "linspace" ? DdpmSpacing::linspace : spacing == "leading" ? DdpmSpacing::leading : DdpmSpacing::trailing,
                       final_step);
    } else if (schedule == "file") {
      grid = read_time_grid(t.string("file"), process, final_step);
    } else {  // hdf5
      const std::string file = t.string("file"), dataset = t.string("dataset", "t");
      const std::string variable = t.string("variable", "t", {"t", "sigma"});
      Hdf5File h5(file, Hdf5File::Mode::read);
      const auto values = h5.read_vector(dataset);
      if (variable == "t") {
        grid = time_grid_from_list(process, values, final_step, file + ":" + dataset);
      } else {
        // A scale-free sigma list: used as given, so another implementation's run replays exactly.
        grid.sigma = values;
        grid.final_step = final_step;
        for (double s : values) grid.t.push_back(s == 0.0 ? 0.0 : process.t_of_scaled_sigma(s));
      }
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    t.fail("schedule", e.what());
  }
  t.finish();
  return grid;
}

}  // namespace

std::string describe_samplers() {
  std::string out;
  for (const auto& e : sampler_registry()) out += fmt::format("  {:<22} {}\n", e.name, e.summary);
  return out;
}

int run_sample_command(const std::filesystem::path& config_path, const Provenance& provenance) {
  // Everything is read and checked before any work: a bad config writes nothing.
  std::unique_ptr<Process> process;
  std::unique_ptr<MixturePredictor> predictor;
  TimeGrid grid;
  SamplerRunner runner;
  std::string sampler_name, output, initial, initial_file, initial_dataset;
  bool stochastic = false, save_trajectory = false;
  Index samples = 0;
  std::uint64_t seed = 0;
  std::string config_text;
  try {
    const Config config(config_path);
    config_text = config.text();
    ConfigTable root = config.root();
    process = read_process(root.table("process"));
    predictor = std::make_unique<MixturePredictor>(read_mixture(root.table("model")));
    grid = read_grid(root.table("grid"), *process);
    ConfigTable sampler = root.table("sampler");
    sampler_name = sampler.string("name");
    runner = find_sampler(sampler_name, sampler).configure(sampler, stochastic);
    sampler.finish();
    ConfigTable run = root.table("run");
    samples = run.integer("samples", 1024);
    if (samples < 1) run.fail("samples", "must be >= 1");
    seed = static_cast<std::uint64_t>(run.integer("seed", 0));
    initial = run.string("initial", "prior", {"prior", "exact"});
    if (run.has("initial_file")) {
      initial_file = run.string("initial_file");
      initial_dataset = run.string("initial_dataset", "initial");
      if (!std::filesystem::exists(initial_file)) run.fail("initial_file", fmt::format("no such file: {}", initial_file));
    }
    output = run.string("output");
    save_trajectory = run.boolean("save_trajectory", false);
    run.finish();
    root.finish();
  } catch (const ConfigError& e) {
    std::cerr << "diffode sample: " << e.what() << "\n";
    return 2;
  }

  const auto& mixture = predictor->mixture();
  // The scale-free sigma grid is the run's primary record (what a replay reads back), so the
  // scaling at the ends derives from it alone.
  const ScaledDenoiser<Batch> denoiser(*process, *predictor);
  const double alpha_T = denoiser.alpha_at(grid.sigma.front()), sigma_T = alpha_T * grid.sigma.front();
  Batch x_T;
  if (!initial_file.empty()) {
    x_T = Hdf5File(initial_file, Hdf5File::Mode::read).read_matrix(initial_dataset);
    if (x_T.cols() != mixture.dims()) {
      std::cerr << fmt::format("diffode sample: {}:{} has {} columns, the model {} dims\n", initial_file, initial_dataset, x_T.cols(), mixture.dims());
      return 2;
    }
  } else if (initial == "exact") {
    x_T = mixture.sample_marginal(alpha_T, sigma_T, samples, seed);
  } else {
    x_T = mixture.sample_marginal(0.0, process->prior_std(), samples, seed);
  }

  Batch x = x_T / alpha_T;  // scale-free state
  std::unique_ptr<SigmaNoise<Batch>> noise;
  if (stochastic) noise = std::make_unique<SigmaNoise<Batch>>(seed, grid.sigma.front(), mixture.dims());
  // Trajectory states are stored in the process's own x (x = alpha(t) x~ at each grid point).
  std::vector<Batch> trajectory;
  SamplerObserver observer = [&](const StepInfo& info, const Batch& state) {
    if (save_trajectory) trajectory.push_back(state * denoiser.alpha_at(info.t));
  };
  IntegrationStats stats;
  try {
    stats = runner(denoiser, x, grid.sigma, noise.get(), observer);
  } catch (const std::exception& e) {
    stats.failed = true;
    stats.failure = std::string("exception: ") + e.what();
  }
  if (!stats.failed && grid.final_step == FinalStep::denoise) {
    Batch denoised;
    denoiser(x, grid.sigma.back(), denoised);
    ++stats.nfe;
    x = denoised;  // x0: alpha = 1
  } else {
    x *= denoiser.alpha_at(grid.sigma.back());
  }

  Hdf5File out(output, Hdf5File::Mode::create);
  write_provenance(out, provenance);
  out.write_attribute("/", "config", config_text);
  out.write_attribute("/", "sampler", sampler_name);
  out.write_attribute("/", "status", stats.failed ? "failed" : "ok");
  out.write_attribute("/", "failure", stats.failure);
  out.write_attribute("/", "nfe", static_cast<double>(stats.nfe));
  out.write_attribute("/", "seed", static_cast<double>(seed));
  out.write_matrix("initial", x_T);
  out.write_matrix("samples", x);
  out.write_vector("grid/t", grid.t);
  out.write_vector("grid/sigma", grid.sigma);
  for (std::size_t i = 0; i < trajectory.size(); ++i) out.write_matrix(fmt::format("trajectory/step_{:04d}", i + 1), trajectory[i]);
  std::cout << fmt::format("{}: {} samples, {} steps, nfe {}, {} -> {}\n", sampler_name, x.rows(), grid.steps(), stats.nfe,
                           stats.failed ? "FAILED: " + stats.failure : "ok", output);
  return stats.failed ? 1 : 0;
}

}  // namespace diffode
