// `diffode sample CONFIG.toml`: read, run, write.
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/sampling.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {
namespace {

void write_sample_file(Hdf5File& out, const SamplingSetup& s, const SamplingOutcome& r, const std::string& config_text,
                       const Provenance& provenance) {
  write_provenance(out, provenance);
  if (s.network) write_model_provenance(out, "/", s.network->description());
  out.write_attribute("/", "config", config_text);
  out.write_attribute("/", "sampler", s.sampler.name);
  out.write_attribute("/", "status", r.failed ? "failed" : "ok");
  out.write_attribute("/", "failure", r.failure);
  out.write_attribute("/", "nfe", r.nfe);
  if (s.guidance) out.write_attribute("/", "model_calls", r.model_calls);
  out.write_attribute("/", "seed", static_cast<double>(s.run.seed));
  out.write_attribute("/", "noise", s.sampler.stochastic ? std::string(noise_kind_name(s.sampler.noise)) : std::string("none"));
  if (!r.initial.size()) {
    // x_T again from the seed (bitwise the one sampled from: pinned_outputs_test hashes it), or the
    // file's rows; see run_sample_command.
    out.write_matrix("initial", s.run.initial_file.empty() ? initial_noise(s) : s.initial_from_file);
  } else {
    out.write_matrix("initial", r.initial);
  }
  out.write_matrix("samples", r.samples);
  if (s.guidance) out.write_int64_vector("labels", s.labels());
  out.write_vector("grid/t", s.grid.t);
  out.write_vector("grid/sigma", s.grid.sigma);
  for (std::size_t i = 0; i < r.trajectory.size(); ++i) out.write_matrix(fmt::format("trajectory/step_{:04d}", i + 1), r.trajectory[i]);
}

}  // namespace

std::string sample_config_help() {
  return "Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2,\n"
         "nothing written). Every key, with each sampler's options: docs/config.md.\n" +
         schema_help({&process_schema(), &model_schema(), &grid_schema(), &sampler_table_schema(), &run_schema(), &guidance_schema()}) +
         "Output HDF5: /samples, /initial, /grid/t, /grid/sigma, /trajectory/step_NNNN, and with [guidance] /labels (int64,\n"
         "each row's class); root attributes config, sampler, status, failure, nfe (sampler evaluations per sample), seed,\n"
         "noise, command_line, commit, versions, host, start_time, with [guidance] model_calls (the model's evaluations per\n"
         "sample: two per guided evaluation), and for a network model, model (its file and SHA-256, architecture, device).\n"
         "Exit: 0 done, 1 the run failed numerically (recorded in the file), 2 bad input (nothing written; an earlier file\n"
         "at the output is left as it was).";
}

int run_sample_command(const std::filesystem::path& config_path, const ProvenanceSource& provenance_source, int threads) {
  // Everything is read and checked before any work: a bad config writes nothing.
  SamplingSetup setup;
  std::string config_text, output_key;
  try {
    const Config config(config_path);
    config_text = config.text();
    ConfigTable root = config.root();
    reject_undeclared_keys(root, {&process_schema(), &model_schema(), &grid_schema(), &sampler_table_schema(), &run_schema(), &guidance_schema()});
    setup = read_sampling_setup(root);
    root.finish();
    ConfigTable run = root.table("run");
    if (setup.run.task != "sample") run.fail("task", "diffode sample samples; use diffode likelihood for likelihoods");
    if (run.has("save_samples")) run.fail("save_samples", "diffode sample always writes the samples (save_samples is a sweep's)");
    if (setup.run.output.empty()) run.fail("output", "missing (diffode sample needs the results file's path)");
    // The file holds x_T, the samples, the grid and, with save_trajectory, every step's state.
    const double states = 2.0 + (setup.run.save_trajectory ? static_cast<double>(setup.grid.t.size()) : 0.0);
    check_output_path(run, "output", setup.run.output,
                      8.0 * static_cast<double>(setup.samples()) * static_cast<double>(setup.dims()) * states + (1 << 16));
    output_key = run.where("output");
  } catch (const ConfigError& e) {
    std::cerr << "diffode sample: " << e.what() << "\n";
    return 2;
  }
  const Provenance provenance = provenance_source();
  // A run of one block (block_rows >= samples) holds its sampler's arrays at the size of the whole
  // state, and a copy of x_T kept for /initial would be one more of them (4 states at peak for a
  // two-step multistep method instead of 3): it drops the copy and draws x_T again for the file.
  // Blocked runs hold block-sized arrays, where keeping x_T costs less than a second draw (a
  // quarter of the command's time for D64 in perf).
  const bool one_block = setup.run.block_rows >= setup.samples();
  const SamplingOutcome result =
      run_sampling(setup, initial_noise(setup), threads, one_block ? InitialCopy::drop : InitialCopy::keep);
  try {
    write_atomically(setup.run.output, [&](Hdf5File& out) { write_sample_file(out, setup, result, config_text, provenance); });
  } catch (const std::exception& e) {
    // The output checked writable but could not take the file (the device filled meanwhile, ...):
    // still the output's fault, and nothing is left behind.
    std::cerr << fmt::format("diffode sample: {}: cannot write the results: {}\n", output_key, e.what());
    return 2;
  }
  std::cout << fmt::format("{}: {} samples, {} steps, nfe {}, {} -> {}\n", setup.sampler.name, result.samples.rows(), setup.grid.steps(),
                           result.nfe, result.failed ? "FAILED: " + result.failure : "ok", setup.run.output);
  if (result.failed) std::cerr << fmt::format("diffode sample: the run failed: {}\n", result.failure);
  return result.failed ? 1 : 0;
}

}  // namespace diffode
