#include "experiments/sample_command.hpp"

#include "experiments/config.hpp"
#include "experiments/hdf5_file.hpp"
#include "experiments/provenance.hpp"
#include "experiments/readers.hpp"
#include "experiments/sampler_registry.hpp"
#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"

#include <fmt/format.h>

#include <iostream>
#include <memory>

namespace diffode {

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
