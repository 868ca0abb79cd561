// `diffode train CONFIG.toml`: read [process], [network], [data], [train], [output]; train through
// the network backend (models/network.hpp, opened on first use); write the checkpoint and the
// training history (layout in train_config_help()).
#include "experiments/cli/commands.hpp"
#include "experiments/run/classifier_training.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/training.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <iostream>

namespace diffode {
namespace {

std::string clock_text(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60) : fmt::format("{}:{:02d}", s / 60, s % 60);
}

// A line redrawn in place on a terminal (at most 5 times a second); a line per tenth of the run
// otherwise (logs, CI).
class TrainProgress {
 public:
  TrainProgress(std::int64_t total, std::int64_t batch) : total_(total), batch_(batch), bar_(::isatty(STDERR_FILENO)) {}
  void step(const TrainingProgress& p) {
    losses_.push_back(p);
    if (first_step_ < 0) first_step_ = p.step - 1;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const bool tenth = total_ >= 10 ? p.step % (total_ / 10) == 0 : true;
    if (bar_ ? (now - last_ < std::chrono::milliseconds(200) && p.step != total_) : !tenth) return;
    last_ = now;
    const double rate = static_cast<double>(p.step - first_step_) / std::max(elapsed, 1e-9);
    const std::string line = fmt::format("step {}/{}  loss {:.5f} (last 100)  lr {:.3g}  {:.1f} steps/s ({:.0f} samples/s)  elapsed {}  ETA {}", p.step,
                                         total_, recent_loss(losses_), p.learning_rate, rate, rate * static_cast<double>(batch_),
                                         clock_text(elapsed), clock_text(static_cast<double>(total_ - p.step) / std::max(rate, 1e-9)));
    if (bar_)
      std::cerr << "\r" << line << "\033[K" << std::flush;
    else
      std::cout << line << "\n" << std::flush;
  }
  void close() {
    if (bar_ && !losses_.empty()) std::cerr << "\n";
  }
  std::size_t steps() const { return losses_.size(); }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::int64_t total_, batch_;
  bool bar_;
  std::int64_t first_step_ = -1;
  std::vector<TrainingProgress> losses_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
};

std::string describe_network(const TrainingSpec& s) { return describe(s.network); }

void write_history(Hdf5File& h5, const TrainingRun& run, const TrainingOutcome& outcome, const Provenance& provenance, int threads,
                   double samples_per_second) {
  write_provenance(h5, provenance);
  h5.write_attribute("/", "config", run.config_text);
  h5.write_attribute("/", "status", outcome.interrupted ? "interrupted" : "ok");
  h5.write_attribute("/", "checkpoint", run.checkpoint);
  h5.write_attribute("/", "network", describe_network(run.spec));
  h5.write_attribute("/", "process", std::string(run.process->name()));
  h5.write_attribute("/", "data", run.data_description);
  h5.write_attribute("/", "steps_done", static_cast<double>(outcome.steps_done));
  h5.write_attribute("/", "steps", static_cast<double>(run.spec.steps));
  h5.write_attribute("/", "batch_size", static_cast<double>(run.spec.batch_size));
  h5.write_attribute("/", "threads", static_cast<double>(threads));
  h5.write_attribute("/", "final_loss", recent_loss(outcome.history));
  h5.write_attribute("/", "samples_per_second", samples_per_second);
  write_history_steps(h5, outcome.history);
}

}  // namespace

int run_train_command(const std::filesystem::path& config_path, const ProvenanceSource& provenance_source, const TrainOptions& options) {
  TrainingRun run;
  try {
    if (training_task(config_path) == "classifier") return run_classifier_train_command(config_path, provenance_source, options);
    run = read_training_run(config_path);
    if (options.resume) {
      if (!std::filesystem::exists(run.checkpoint))
        throw ConfigError(fmt::format("--resume: no checkpoint at {} ({}) to resume from", run.checkpoint, run.checkpoint_key));
      run.spec.resume_from = run.checkpoint;
    }
  } catch (const ConfigError& e) {
    std::cerr << "diffode train: " << e.what() << "\n";
    return 2;
  }
  const NetworkBackend* backend = training_backend();
  if (!backend) return 2;
  const Provenance provenance = provenance_source();
  run.spec.threads = std::max(1, options.threads);
  std::cout << fmt::format("training a {} under {} on {}: {} steps of {} rows{}\n", describe_network(run.spec), run.process->name(),
                           run.data_description, run.spec.steps, run.spec.batch_size,
                           options.resume ? fmt::format(", resuming from {}", run.checkpoint) : "")
            << std::flush;

  TrainProgress progress(run.spec.steps, run.spec.batch_size);
  TrainingOutcome outcome;
  if (const int code = train_interruptibly(
          [&](const std::function<bool()>& stop) { return backend->train(run.spec, [&](const TrainingProgress& p) { progress.step(p); }, stop); },
          [&] { progress.close(); }, outcome))
    return code;
  const double seconds = progress.seconds();
  // Steps taken by this invocation (a resumed run's history also holds the earlier ones).
  const auto taken = static_cast<double>(progress.steps());
  const double samples_per_second = taken > 0 ? taken * static_cast<double>(run.spec.batch_size) / seconds : 0.0;
  try {
    write_atomically(run.history, [&](Hdf5File& h5) { write_history(h5, run, outcome, provenance, run.spec.threads, samples_per_second); });
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode train: {}: cannot write the history: {}\n", run.history_key, e.what());
    return 2;
  }
  std::cout << fmt::format("{} {} steps ({} in this run) in {:.1f} s: {:.1f} steps/s, {:.0f} samples/s; final loss {:.5f} (mean of the last 100 "
                           "steps); checkpoint {}, history {}\n",
                           outcome.interrupted ? "interrupted after" : "trained", outcome.steps_done, static_cast<std::int64_t>(taken), seconds,
                           taken / seconds, samples_per_second, recent_loss(outcome.history), run.checkpoint, run.history);
  return outcome.interrupted ? 130 : 0;
}

std::string train_config_help() {
  return "Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2,\n"
         "nothing written). Every key: docs/config.md.\n" +
         schema_help({&process_schema(), &network_schema(), &training_data_schema(), &train_schema(), &training_output_schema()}) +
         "Output: the checkpoint ([output] file; written atomically every checkpoint_every steps, at the end and on ^C) and the\n"
         "history HDF5: step, loss, learning_rate, seconds (wall time since the first step, across resumes) per step; root\n"
         "attributes config, status (ok | interrupted), checkpoint, network, process, data, steps_done, steps, batch_size,\n"
         "threads, final_loss (mean of the last 100 steps), samples_per_second (this invocation) and the provenance.\n"
         "--resume continues from the checkpoint bitwise as if never stopped (same config and --threads).\n"
         "Exit: 0 done, 1 training failed (diverged), 2 bad input, 130 interrupted (checkpoint written; resume with --resume).";
}

}  // namespace diffode
