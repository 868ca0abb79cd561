// The step loop shared by the score-network and classifier trainers (LibTorch only): the device,
// thread and determinism set-up, seeding before the trainer builds its initial weights, resuming,
// and the loop itself (stop polling, learning rate, step, history, divergence check, a checkpoint
// every N steps and a final one), and the loss history a checkpoint keeps. One copy, so that both
// trainers resume and checkpoint alike.
#pragma once

#include "models/network.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace diffode {

// The loss history in a checkpoint's "training" archive: float64 tensors loss, learning_rate and
// seconds of one entry per step, so that a resumed run's history goes on from where it stopped.
inline void write_history_tensors(torch::serialize::OutputArchive& training, const std::vector<TrainingProgress>& history) {
  std::vector<double> loss, lr, seconds;
  for (const TrainingProgress& p : history) loss.push_back(p.loss), lr.push_back(p.learning_rate), seconds.push_back(p.seconds);
  const auto n = static_cast<std::int64_t>(history.size());
  const auto tensor = [n](std::vector<double>& v) {
    return torch::from_blob(v.data(), {n}, torch::TensorOptions().dtype(torch::kFloat64)).clone();
  };
  training.write("loss", tensor(loss));
  training.write("learning_rate", tensor(lr));
  training.write("seconds", tensor(seconds));
}

// The history written by write_history_tensors for a checkpoint at `step`; throws c10::Error for a
// missing tensor and std::runtime_error for one of another length.
inline std::vector<TrainingProgress> read_history_tensors(torch::serialize::InputArchive& training, std::int64_t step) {
  torch::Tensor loss, lr, seconds;
  training.read("loss", loss);
  training.read("learning_rate", lr);
  training.read("seconds", seconds);
  loss = loss.to(torch::kCPU).contiguous(), lr = lr.to(torch::kCPU).contiguous(), seconds = seconds.to(torch::kCPU).contiguous();
  if (loss.numel() != step || lr.numel() != step || seconds.numel() != step)
    throw std::runtime_error(fmt::format("history of {} steps for step {}", loss.numel(), step));
  std::vector<TrainingProgress> history;
  for (std::int64_t i = 0; i < step; ++i)
    history.push_back({.step = i + 1, .loss = loss.data_ptr<double>()[i], .learning_rate = lr.data_ptr<double>()[i],
                       .seconds = seconds.data_ptr<double>()[i]});
  return history;
}

// Trainer is built from the spec and has: step, seconds_before, history, learning_rate_at(step),
// take_step() (returns the batch's loss), save(file) and resume(file). Spec has device, threads,
// seed, resume_from, checkpoint_file, checkpoint_every and steps, already checked. `label` leads
// the messages: "<label>: device 'cuda' but ..." and "<label> diverged: ...".
template <class Trainer, class Spec>
TrainingOutcome run_training_loop(const Spec& spec, const std::string& label, const std::function<void(const TrainingProgress&)>& progress,
                                  const std::function<bool()>& stop) {
  const torch::Device device(spec.device);
  if (device.is_cuda() && !torch::cuda::is_available())
    throw std::invalid_argument(label + ": device 'cuda' but no CUDA device is available");
  at::set_num_threads(spec.threads);
  // Deterministic kernels; on CUDA a kernel without a deterministic version only warns.
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/device.is_cuda());
  torch::manual_seed(spec.seed);
  Trainer trainer(spec);
  if (!spec.resume_from.empty()) trainer.resume(spec.resume_from);

  TrainingOutcome outcome;
  const auto start = std::chrono::steady_clock::now();
  const auto checkpoint = [&] {
    if (!spec.checkpoint_file.empty()) trainer.save(spec.checkpoint_file);
  };
  bool wrote_last = false;
  while (trainer.step < spec.steps) {
    if (stop && stop()) {
      outcome.interrupted = true;
      break;
    }
    const double lr = trainer.learning_rate_at(trainer.step);
    const double loss = trainer.take_step();
    ++trainer.step;
    const double seconds = trainer.seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    trainer.history.push_back({.step = trainer.step, .loss = loss, .learning_rate = lr, .seconds = seconds});
    // The last checkpoint (of finite weights) is kept as it was.
    if (!std::isfinite(loss)) throw std::runtime_error(fmt::format("{} diverged: loss {} at step {}", label, loss, trainer.step));
    wrote_last = false;
    if (spec.checkpoint_every > 0 && trainer.step % spec.checkpoint_every == 0) {
      checkpoint();
      wrote_last = true;
    }
    if (progress) progress(trainer.history.back());
  }
  if (!wrote_last) checkpoint();
  outcome.steps_done = trainer.step;
  outcome.history = std::move(trainer.history);
  return outcome;
}

}  // namespace diffode
