// `diffode train`: the config tables of a training run ([network], [data], [train], [output]; the
// [process] is the shared one) and their reader, which turns a config into the backend's
// TrainingSpec (models/network.hpp) without LibTorch.
#pragma once

#include "experiments/run/config.hpp"
#include "experiments/run/output.hpp"
#include "models/network.hpp"
#include "problems/process.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace diffode {

class Hdf5File;

const TableSchema& network_schema();
const TableSchema& training_data_schema();
const TableSchema& train_schema();
const TableSchema& training_output_schema();

// The mean loss of the last `window` steps of `h` (fewer at the start; NaN for none).
double recent_loss(const std::vector<TrainingProgress>& h, std::size_t window = 100);

// The network backend that trains; nullptr after printing why there is none ("diffode train: ...",
// for exit code 2).
const NetworkBackend* training_backend();

// Runs one training (a backend's train or train_classifier, given its stop callback) with ^C
// caught: the first ^C makes the stop callback true, so that training writes its checkpoint and
// returns; a second ends the process at once (the checkpoint stays whole). `done` runs as training
// ends, either way, before the previous handler is restored. Returns 0 with `outcome` set; else
// prints "diffode train: ..." and returns the exit code: 2 for an invalid_argument (what only the
// backend can check: a checkpoint trained under other settings, a missing CUDA device), 1 for a
// failure (divergence).
int train_interruptibly(const std::function<TrainingOutcome(const std::function<bool()>& stop)>& train, const std::function<void()>& done,
                        TrainingOutcome& outcome);

// Writes a training history's per-step vectors: step, loss, learning_rate and seconds.
void write_history_steps(Hdf5File& h5, const std::vector<TrainingProgress>& history);

// The [train] keys that a score network's and a classifier's training share, read into their specs
// (TrainingSpec, ClassifierTrainingSpec) in two parts so that each task's own keys keep their place
// in between: first the optimiser's (steps to warmup_steps), then the run's (checkpoint_every to dtype).
template <class Spec>
void read_train_optimiser_keys(ConfigTable& train, Spec& s) {
  s.steps = train.integer("steps");
  s.batch_size = train.integer("batch_size");
  s.learning_rate = train.number("learning_rate");
  s.weight_decay = train.number("weight_decay");
  s.warmup_steps = train.integer("warmup_steps");
}

template <class Spec>
void read_train_run_keys(ConfigTable& train, Spec& s) {
  s.checkpoint_every = train.integer("checkpoint_every");
  s.seed = static_cast<std::uint64_t>(train.integer("seed"));
  s.device = train.string("device");
  s.dtype = train.string("dtype");
}

// Reads [output] (training_output_schema) into the run (TrainingRun, ClassifierRun), finishes the
// config's root, and checks that the checkpoint (of checkpoint_bytes at most) and the history (of
// `steps` steps) can be written; the spec is pointed at the checkpoint.
template <class Run, class Spec>
void read_training_output(ConfigTable& root, double checkpoint_bytes, Run& run, Spec& s) {
  ConfigTable out = root.table("output", training_output_schema());
  run.checkpoint = out.string("file");
  if (run.checkpoint.empty()) out.fail("file", "must name a file");
  run.history = out.has("history") ? out.string("history") : std::filesystem::path(run.checkpoint).replace_extension(".train.h5").string();
  if (run.history == run.checkpoint) out.fail("history", "must differ from the checkpoint file");
  out.finish();
  root.finish();
  check_output_path(out, "file", run.checkpoint, checkpoint_bytes);
  check_output_path(out, out.has("history") ? "history" : "file", run.history, 3 * 8 * static_cast<double>(s.steps) + (1 << 16));
  run.checkpoint_key = out.where("file");
  run.history_key = out.has("history") ? out.where("history") : run.checkpoint_key;
  s.checkpoint_file = run.checkpoint;
}

struct TrainingRun {
  std::shared_ptr<const Process> process;
  TrainingSpec spec;             // everything but threads, progress and resume
  std::string data_description;  // for the history file and the console
  std::string checkpoint, history;
  std::string checkpoint_key, history_key;  // "file:line: output.file", for errors writing them
  std::string config_text;
};

// Reads and checks the whole config (data files included) before anything is trained; throws
// ConfigError naming file, line and key.
TrainingRun read_training_run(const std::filesystem::path& config);

// The forward process as the backend takes it (functions of t; EDM's flag for its log-normal levels).
TrainingProcess training_process(std::shared_ptr<const Process> process);

}  // namespace diffode
