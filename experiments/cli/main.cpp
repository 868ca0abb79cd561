// diffode: the command-line front of the toolkit. Each command is a function in cli/ (commands.hpp);
// this file only parses the command line. Exit codes: 0 success, 1 a run failed numerically
// (recorded), 2 bad input (config, data or command line), 130 interrupted.
#include "experiments/cli/commands.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/orders.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>
#include <thread>

namespace {

// More threads than this is a mistake (and would exhaust the process's threads): refused.
constexpr int kMaxThreads = 1024;

int cores() { return std::min(kMaxThreads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))); }

std::string command_line(int argc, char** argv) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  return command;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"diffode: diffusion sampling as ODE/SDE integration, measured against exact answers"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 a run failed numerically (recorded in its file), 2 bad input, 130 interrupted.");

  auto* sample = app.add_subcommand("sample", "Run one sampler on one problem from a TOML config and write HDF5");
  std::string sample_config;
  int sample_threads = cores();
  sample->add_option("config", sample_config, "The TOML config: [process], [model], [grid], [sampler], [run]")->required();
  sample->add_option("--threads", sample_threads, "Threads (results do not depend on it: [run] block_rows fixes the blocks)")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxThreads));
  sample->footer(diffode::sample_config_help());

  app.add_subcommand("samplers", "List every sampler a config's [sampler] name can take, with its options and defaults");
  app.add_subcommand("config-reference", "Print the reference of every config key (docs/config.md) in Markdown");

  auto* sweep = app.add_subcommand("sweep", "Run a sweep of runs from a TOML config into one crash-safe, resumable HDF5 file");
  std::string sweep_config, sweep_output;
  diffode::SweepOptions sweep_options;
  sweep_options.threads = cores();
  sweep->add_option("config", sweep_config, "The sweep's TOML config")->required();
  sweep->add_option("--threads", sweep_options.threads, "Threads per run (results do not depend on it); under mpirun, per rank")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxThreads));
  sweep->add_option("--output", sweep_output, "Results file, instead of [sweep] output");
  sweep->add_flag("--fresh", sweep_options.fresh, "Discard earlier results at the output instead of resuming");
  sweep->add_flag("--retry-failed", sweep_options.retry_failed, "Run again the runs stored as failed (finished ok runs are kept)");
  sweep->add_flag("--dry-run", sweep_options.dry_run, "Validate and list the runs; run nothing");
  sweep->add_option("--max-runs", sweep_options.max_runs, "Stop after this many runs (then resume with the same command)")
      ->check(CLI::NonNegativeNumber);
  sweep->footer(diffode::sweep_config_help());

  auto* likelihood = app.add_subcommand("likelihood", "Log-likelihoods of data by the probability-flow ODE, written to HDF5");
  std::string likelihood_config;
  int likelihood_threads = cores();
  likelihood->add_option("config", likelihood_config, "The TOML config: [process], [model], [data], [likelihood], [output]")->required();
  likelihood->add_option("--threads", likelihood_threads, "Threads (results do not depend on it)")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxThreads));
  likelihood->footer(diffode::likelihood_config_help());

  auto* tune = app.add_subcommand("tune-grid", "Tune a sampler's sigma grid at an NFE budget against the exact PF-ODE solution; write HDF5");
  std::string tune_config;
  int tune_threads = cores();
  tune->add_option("config", tune_config, "The TOML config: [process], [model], [grid], [sampler], [run], [tune]")->required();
  tune->add_option("--threads", tune_threads, "Threads (results do not depend on it)")->capture_default_str()->check(CLI::PositiveNumber);
  tune->footer(diffode::tune_grid_config_help());

  auto* orders = app.add_subcommand("orders", "Fit the empirical order of every stepper on problems with known solutions");
  std::string out_dir = "results";
  diffode::OrdersOptions order_options;
  orders->add_option("--out", out_dir, "Folder for orders.md and orders.csv")->capture_default_str();
  orders->add_option("--paths", order_options.paths, "Brownian paths per strong-order row")->capture_default_str()->check(CLI::PositiveNumber);
  orders->add_option("--seed", order_options.seed, "Seed of the Brownian paths")->capture_default_str()->check(CLI::NonNegativeNumber);

  // A first word that is neither a command nor an option: CLI11 would only say that a command is
  // required, naming nothing.
  if (argc > 1) {
    const std::string first = argv[1];
    const bool option = first.starts_with("-");
    bool known = first == "-h" || first == "--help";
    for (const CLI::App* command : app.get_subcommands({})) known = known || command->get_name() == first;
    if (!known) {
      std::cerr << fmt::format("diffode: unknown {} '{}' (commands: sample, sweep, likelihood, orders, samplers, config-reference)\n"
                               "Run with --help for more information.\n",
                               option ? "option" : "command", first);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;  // command-line misuse is bad input, like a bad config
  }

  const diffode::ProvenanceSource provenance = [&] { return diffode::collect_provenance(argc, argv); };
  // Every command returns its exit code; what escapes one is still an exit code, never an abort:
  // a config error is bad input (2), anything else a run that failed (1).
  try {
    if (sample->parsed()) return diffode::run_sample_command(sample_config, provenance, sample_threads);
    if (sweep->parsed()) {
      if (sweep->count("--output") > 0) {
        if (sweep_output.empty()) {
          std::cerr << "diffode sweep: --output: must name a file\n";
          return 2;
        }
        sweep_options.output = sweep_output;
      }
      return diffode::run_sweep_command(sweep_config, provenance, sweep_options);
    }
    if (likelihood->parsed()) return diffode::run_likelihood_command(likelihood_config, provenance, likelihood_threads);
    if (tune->parsed()) return diffode::run_tune_grid_command(tune_config, provenance(), tune_threads);
    if (orders->parsed()) return diffode::run_orders_command(order_options, out_dir, command_line(argc, argv));
    if (app.got_subcommand("samplers")) std::cout << diffode::describe_samplers();
    if (app.got_subcommand("config-reference")) std::cout << diffode::config_reference_markdown();
  } catch (const diffode::ConfigError& e) {
    std::cerr << "diffode: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "diffode: failed: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
