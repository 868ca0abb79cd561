// diffode: the command-line front of the toolkit.
#include "experiments/likelihood_command.hpp"
#include "experiments/orders.hpp"
#include "experiments/provenance.hpp"
#include "experiments/sample_command.hpp"
#include "experiments/sweep_command.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
  CLI::App app{"diffode: diffusion sampling as ODE/SDE integration, measured against exact answers"};
  app.require_subcommand(1);

  auto* orders = app.add_subcommand("orders", "Fit the empirical order of every stepper on problems with known solutions");
  std::string out_dir = "results";
  diffode::OrdersOptions options;
  orders->add_option("--out", out_dir, "Folder for orders.md and orders.csv")->capture_default_str();
  orders->add_option("--paths", options.paths, "Brownian paths per strong-order row")->capture_default_str()->check(CLI::PositiveNumber);
  orders->add_option("--seed", options.seed, "Seed of the Brownian paths")->capture_default_str();

  auto* sample = app.add_subcommand("sample", "Run one sampler on one problem from a TOML config and write HDF5");
  std::string sample_config;
  sample->add_option("config", sample_config, "The TOML config: [process], [model], [grid], [sampler], [run] (see experiments/sample_command.hpp)")
      ->required();

  sample->footer(R"(Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2):
  [process]  name = "edm" | "vp" | "vp_cosine" | "subvp" | "ve" | "flow"
             beta_min, beta_max, sigma_min, sigma_max, t_min, t_max: override the process's defaults
  [model]    kind = "mixture"; preset = "ring2d" | "iso16" | "diag64", seed = 0
             or weights = [...], means = [[...]], variances = [[...]]
             or file = "mixture.h5" (datasets weights K, means K x D, variances K x D)
  [grid]     schedule = "karras" | "uniform_t" | "uniform_lambda" | "quadratic" | "exponential" |
                        "polyexponential" | "ddpm" | "file" | "hdf5"
             steps; rho (karras 7, polyexponential 1); final_step = "to_zero" | "to_t_min" | "denoise"
             spacing = "linspace" | "leading" | "trailing" (ddpm); file (a text list of t, or HDF5)
             dataset, variable = "t" | "sigma" (hdf5: replay another run's grid)
  [sampler]  name (required; see 'diffode samplers' for names and options), then its options
  [run]      samples = 1024, seed = 0, initial = "prior" | "exact", initial_file + initial_dataset
             (x_T from HDF5), output (required), save_trajectory = false
Output HDF5: /samples, /initial, /grid/t, /grid/sigma, /trajectory/step_NNNN; root attributes
config, sampler, status, failure, nfe, seed, command_line, commit, versions, host, start_time.)");

  app.add_subcommand("samplers", "List the samplers a config's [sampler] name can take, with their options");

  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto* sweep = app.add_subcommand("sweep", "Run a sweep of runs from a TOML config into one crash-safe, resumable HDF5 file");
  std::string sweep_config;
  diffode::SweepOptions sweep_options;
  sweep_options.threads = cores;
  std::string sweep_output;
  sweep->add_option("config", sweep_config, "The sweep's TOML config")->required();
  sweep->add_option("--threads", sweep_options.threads, "Threads per run (results do not depend on it); under mpirun, per rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sweep->add_option("--output", sweep_output, "Results file, instead of [sweep] output");
  sweep->add_flag("--fresh", sweep_options.fresh, "Discard earlier results at the output instead of resuming");
  sweep->add_flag("--retry-failed", sweep_options.retry_failed, "Run again the runs stored as failed (finished ok runs are kept)");
  sweep->add_flag("--dry-run", sweep_options.dry_run, "Validate and list the runs; run nothing");
  sweep->add_option("--max-runs", sweep_options.max_runs, "Stop after this many runs (then resume with the same command)");
  sweep->footer(diffode::sweep_config_help());

  auto* likelihood = app.add_subcommand("likelihood", "Log-likelihoods of data by the probability-flow ODE, written to HDF5");
  std::string likelihood_config;
  int likelihood_threads = cores;
  likelihood->add_option("config", likelihood_config, "The TOML config: [process], [model], [data], [likelihood], [output]")->required();
  likelihood->add_option("--threads", likelihood_threads, "Threads (results do not depend on it)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  likelihood->footer(diffode::likelihood_config_help());

  CLI11_PARSE(app, argc, argv);

  if (sample->parsed()) return diffode::run_sample_command(sample_config, diffode::collect_provenance(argc, argv));
  if (sweep->parsed()) {
    if (!sweep_output.empty()) sweep_options.output = sweep_output;
    return diffode::run_sweep_command(sweep_config, diffode::collect_provenance(argc, argv), sweep_options);
  }
  if (likelihood->parsed())
    return diffode::run_likelihood_command(likelihood_config, diffode::collect_provenance(argc, argv), likelihood_threads);
  if (app.got_subcommand("samplers")) {
    std::cout << diffode::describe_samplers();
    return 0;
  }

  if (orders->parsed()) {
    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    const auto rows = diffode::measure_orders(options);
    const auto adaptive = diffode::measure_adaptive(options);
    diffode::print_orders(std::cout, rows);
    diffode::print_adaptive(std::cout, adaptive);
    std::filesystem::create_directories(out_dir);
    const auto md = std::filesystem::path(out_dir) / "orders.md";
    const auto csv = std::filesystem::path(out_dir) / "orders.csv";
    {
      std::ofstream f(md);
      diffode::write_orders_markdown(f, rows, command);
      diffode::write_adaptive_markdown(f, adaptive);
    }
    {
      std::ofstream f(csv);
      diffode::write_orders_csv(f, rows);
    }
    std::cout << fmt::format("\nwrote {} and {}\n", md.string(), csv.string()) << std::flush;
    for (const auto& r : rows)
      if (!(std::abs(r.fitted - r.declared) <= 0.25)) {
        std::cerr << fmt::format("warning: {} on {} fitted {:.2f}, declared {:.2f}\n", r.stepper, r.problem, r.fitted, r.declared);
      }
  }
  return 0;
}
