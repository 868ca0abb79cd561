// `diffode train`: the config tables of a training run ([network], [data], [train], [output]; the
// [process] is the shared one) and their reader, which turns a config into the backend's
// TrainingSpec (models/network.hpp) without LibTorch.
#pragma once

#include "experiments/run/config.hpp"
#include "models/network.hpp"
#include "problems/process.hpp"

#include <memory>
#include <string>

namespace diffode {

const TableSchema& network_schema();
const TableSchema& training_data_schema();
const TableSchema& train_schema();
const TableSchema& training_output_schema();

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
