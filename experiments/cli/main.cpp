// diffode: the command-line front of the toolkit. Each command is a function in cli/ (commands.hpp);
// this file only parses the command line. Exit codes: 0 success, 1 a run failed numerically
// (recorded), 2 bad input (config, data or command line), 130 interrupted.
#include "experiments/cli/commands.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/orders.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <sched.h>

namespace {

// More threads than this is a mistake (and would exhaust the process's threads): refused.
constexpr int kMaxThreads = 1024;

// The default of --threads: the cores this process may run on (its CPU affinity, which taskset, a
// batch system's binding or mpirun's --bind-to set), not the machine's; and no more than its share
// of the node's cores when an MPI launcher (OpenMPI, MPICH) put several ranks on the node, whether
// they are unbound or bound to one socket together.
int cores() {
  const int machine = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int usable = machine;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) usable = CPU_COUNT(&set);
  for (const char* variable : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char* local = std::getenv(variable)) {
      usable = std::min(usable, machine / std::max(1, std::atoi(local)));
      break;
    }
  return std::clamp(usable, 1, kMaxThreads);
}

std::string command_line(int argc, char** argv) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  return command;
}

// What the command line says: the chosen command's config, threads and flags.
struct CommandLine {
  CLI::App* sample = nullptr;
  CLI::App* sweep = nullptr;
  CLI::App* likelihood = nullptr;
  CLI::App* tune = nullptr;
  CLI::App* orders = nullptr;
  CLI::App* fd = nullptr;
  CLI::App* train = nullptr;
  CLI::App* classify = nullptr;
  CLI::App* grid = nullptr;
  diffode::ClassifyOptions classify_options;
  diffode::GridOptions grid_options;
  diffode::TrainOptions train_options;
  std::string config, sweep_output, out_dir = "results";
  int threads = cores();
  diffode::SweepOptions sweep_options;
  diffode::OrdersOptions order_options;
  diffode::FdOptions fd_options;
};

void add_threads(CLI::App* command, int& threads, const std::string& help) {
  command->add_option("--threads", threads, help)->capture_default_str()->check(CLI::Range(1, kMaxThreads));
}

void add_commands(CLI::App& app, CommandLine& c) {
  c.sample = app.add_subcommand("sample", "Run one sampler on one problem from a TOML config and write HDF5");
  c.sample->add_option("config", c.config, "The TOML config: [process], [model], [grid], [sampler], [run]")->required();
  add_threads(c.sample, c.threads,
              "Threads (default: the cores this process may use; results do not depend on it: [run] block_rows fixes the blocks)");
  c.sample->footer(diffode::sample_config_help());

  app.add_subcommand("samplers", "List every sampler a config's [sampler] name can take, with its options and defaults");
  app.add_subcommand("config-reference", "Print the reference of every config key (docs/config.md) in Markdown");

  c.sweep = app.add_subcommand("sweep", "Run a sweep of runs from a TOML config into one crash-safe, resumable HDF5 file");
  c.sweep->add_option("config", c.config, "The sweep's TOML config")->required();
  add_threads(c.sweep, c.threads,
              "Threads per run (results do not depend on it); under mpirun, per rank (default: the rank's bound cores, or its "
              "share of the node's)");
  c.sweep->add_option("--output", c.sweep_output, "Results file, instead of [sweep] output");
  c.sweep->add_flag("--fresh", c.sweep_options.fresh, "Discard earlier results at the output instead of resuming");
  c.sweep->add_flag("--retry-failed", c.sweep_options.retry_failed, "Run again the runs stored as failed (finished ok runs are kept)");
  c.sweep->add_flag("--dry-run", c.sweep_options.dry_run, "Validate and list the runs; run nothing");
  c.sweep->add_option("--max-runs", c.sweep_options.max_runs, "Stop after this many runs (then resume with the same command)")
      ->check(CLI::NonNegativeNumber);
  c.sweep->footer(diffode::sweep_config_help());

  c.likelihood = app.add_subcommand("likelihood", "Log-likelihoods of data by the probability-flow ODE, written to HDF5");
  c.likelihood->add_option("config", c.config, "The TOML config: [process], [model], [data], [likelihood], [output]")->required();
  add_threads(c.likelihood, c.threads, "Threads (results do not depend on it)");
  c.likelihood->footer(diffode::likelihood_config_help());

  c.tune = app.add_subcommand("tune-grid", "Tune a sampler's sigma grid at an NFE budget against the exact PF-ODE solution; write HDF5");
  c.tune->add_option("config", c.config, "The TOML config: [process], [model], [grid], [sampler], [run], [tune]")->required();
  add_threads(c.tune, c.threads, "Threads (results do not depend on it)");
  c.tune->footer(diffode::tune_grid_config_help());

  c.train = app.add_subcommand("train", "Train a score network (LibTorch backend) from a TOML config; write its checkpoint and history");
  c.train->add_option("config", c.config, "The TOML config: [process], [network], [data], [train], [output]")->required();
  add_threads(c.train, c.threads, "LibTorch threads (a bitwise --resume needs the same count)");
  c.train->add_flag("--resume", c.train_options.resume, "Continue from the checkpoint at [output] file");
  c.train->footer(diffode::train_config_help());

  c.orders = app.add_subcommand("orders", "Fit the empirical order of every stepper on problems with known solutions");
  c.orders->add_option("--out", c.out_dir, "Folder for orders.md and orders.csv")->capture_default_str();
  c.orders->add_option("--paths", c.order_options.paths, "Brownian paths per strong-order row")->capture_default_str()->check(CLI::PositiveNumber);
  c.orders->add_option("--seed", c.order_options.seed, "Seed of the Brownian paths")->capture_default_str()->check(CLI::NonNegativeNumber);

  c.fd = app.add_subcommand("fd", "Frechet distance between the rows of two HDF5 files (sample files or cached statistics)");
  c.fd->add_option("inputs", c.fd_options.inputs, "A.h5 [B.h5]")->required()->expected(1, 2);
  c.fd->add_option("--dataset", c.fd_options.dataset, "The dataset of a sample file")->capture_default_str();
  c.fd->add_option("--save-stats", c.fd_options.save_stats, "Write each input's statistics to these files (one per input)");
  c.fd->add_option("--block-rows", c.fd_options.block_rows, "Rows per block of the moments")->capture_default_str()->check(CLI::PositiveNumber);
  c.fd->add_option("--features", c.fd_options.features, "pixels (raw), classifier:FILE or torchscript:FILE")->capture_default_str();
  c.fd->add_option("--input-shape", c.fd_options.input_shape, "C,H,W each row is reshaped to for the feature network");
  c.fd->add_option("--input-scale", c.fd_options.input_scale, "a,b: the feature network is handed a x + b of the stored x");
  c.fd->add_option("--feature-dtype", c.fd_options.feature_dtype, "float32 or float64: the feature network's input")->capture_default_str();
  add_threads(c.fd, c.threads, "Threads (results do not depend on it)");
  c.fd->footer(diffode::fd_help());

  c.classify = app.add_subcommand("classify", "Classify the rows of a sample file: the fraction of each requested class assigned to it");
  c.classify->add_option("input", c.classify_options.input, "SAMPLES.h5, fashion_mnist:test or fashion_mnist:train")->required();
  c.classify->add_option("--classifier", c.classify_options.classifier, "A classifier checkpoint of diffode train (task = \"classifier\")")
      ->required();
  c.classify->add_option("--dataset", c.classify_options.dataset, "The rows of a sample file")->capture_default_str();
  c.classify->add_option("--labels", c.classify_options.labels, "The integer dataset of requested classes")->capture_default_str();
  c.classify->add_option("--output", c.classify_options.output, "Write the tallies to this HDF5 file");
  add_threads(c.classify, c.threads, "LibTorch threads");
  c.classify->footer(diffode::classify_help());

  c.grid = app.add_subcommand("grid", "Write the rows of a sample file as a PNG grid of images");
  c.grid->add_option("input", c.grid_options.input, "SAMPLES.h5, fashion_mnist:test or fashion_mnist:train")->required();
  c.grid->add_option("output", c.grid_options.output, "OUT.png")->required();
  c.grid->add_option("--dataset", c.grid_options.dataset, "The rows of a sample file")->capture_default_str();
  c.grid->add_option("--labels", c.grid_options.labels, "The integer dataset of requested classes")->capture_default_str();
  c.grid->add_flag("--rows-by-label", c.grid_options.rows_by_label, "One grid row per class (needs the labels)");
  c.grid->add_option("--columns", c.grid_options.columns, "Images per grid row")->capture_default_str();
  c.grid->add_option("--count", c.grid_options.count, "Images without --rows-by-label (the first rows)")->capture_default_str();
  c.grid->add_option("--image", c.grid_options.image, "C,H,W of each row (default 1,28,28)");
  c.grid->add_option("--padding", c.grid_options.padding, "White pixels between images")->capture_default_str();
  c.grid->footer(diffode::grid_help());
}

// A first word that is neither a command nor an option: CLI11 would only say that a command is
// required, naming nothing. False after reporting it.
bool first_word_known(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return true;
  const std::string first = argv[1];
  bool known = first == "-h" || first == "--help";
  std::string names;
  for (const CLI::App* command : app.get_subcommands({})) {
    known = known || command->get_name() == first;
    names += (names.empty() ? "" : ", ") + command->get_name();
  }
  if (!known)
    std::cerr << fmt::format("diffode: unknown {} '{}' (commands: {})\nRun with --help for more information.\n",
                             first.starts_with("-") ? "option" : "command", first, names);
  return known;
}

// Runs the parsed command; every command returns its exit code.
int run_command(const CLI::App& app, CommandLine& c, int argc, char** argv) {
  const diffode::ProvenanceSource provenance = [&] { return diffode::collect_provenance(argc, argv); };
  if (c.sample->parsed()) return diffode::run_sample_command(c.config, provenance, c.threads);
  if (c.sweep->parsed()) {
    if (c.sweep->count("--output") > 0) {
      if (c.sweep_output.empty()) {
        std::cerr << "diffode sweep: --output: must name a file\n";
        return 2;
      }
      c.sweep_options.output = c.sweep_output;
    }
    c.sweep_options.threads = c.threads;
    return diffode::run_sweep_command(c.config, provenance, c.sweep_options);
  }
  if (c.likelihood->parsed()) return diffode::run_likelihood_command(c.config, provenance, c.threads);
  if (c.tune->parsed()) return diffode::run_tune_grid_command(c.config, provenance(), c.threads);
  if (c.fd->parsed()) {
    c.fd_options.dataset_given = c.fd->count("--dataset") > 0;
    c.fd_options.threads = c.threads;
    c.fd_options.features_given = c.fd->count("--features") > 0;
    return diffode::run_fd_command(c.fd_options);
  }
  if (c.classify->parsed()) {
    c.classify_options.threads = c.threads;
    return diffode::run_classify_command(c.classify_options);
  }
  if (c.grid->parsed()) return diffode::run_grid_command(c.grid_options);
  if (c.train->parsed()) {
    c.train_options.threads = c.threads;
    return diffode::run_train_command(c.config, provenance, c.train_options);
  }
  if (c.orders->parsed()) return diffode::run_orders_command(c.order_options, c.out_dir, command_line(argc, argv));
  if (app.got_subcommand("samplers")) std::cout << diffode::describe_samplers();
  if (app.got_subcommand("config-reference")) std::cout << diffode::config_reference_markdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"diffode: diffusion sampling as ODE/SDE integration, measured against exact answers"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 a run failed numerically (recorded in its file), 2 bad input, 130 interrupted.");
  CommandLine c;
  add_commands(app, c);
  if (!first_word_known(app, argc, argv)) return 2;
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
  // What escapes a command is still an exit code, never an abort: a config error is bad input (2),
  // anything else a run that failed (1).
  try {
    return run_command(app, c, argc, argv);
  } catch (const diffode::ConfigError& e) {
    std::cerr << "diffode: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "diffode: failed: " << e.what() << "\n";
    return 1;
  }
}
