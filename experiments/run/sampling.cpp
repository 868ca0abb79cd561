#include "experiments/run/sampling.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/parallel.hpp"
#include "models/network_guidance.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <utility>

namespace diffode {
namespace {

void read_initial_file(ConfigTable& run_table, SamplingSetup& s) {
  const RunSettings& r = s.run;
  try {
    const Hdf5File h5(r.initial_file, Hdf5File::Mode::read);
    if (!h5.has(r.initial_dataset)) run_table.fail("initial_dataset", fmt::format("{}: no dataset '{}'", r.initial_file, r.initial_dataset));
    s.initial_from_file = h5.read_matrix(r.initial_dataset);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    run_table.fail("initial_file", e.what());
  }
  const Batch& x = s.initial_from_file;
  const std::string where = r.initial_file + ":" + r.initial_dataset;
  if (x.cols() != s.dims())
    run_table.fail("initial_dataset", fmt::format("{} is {} x {}; the model has {} dimensions", where, x.rows(), x.cols(), s.dims()));
  if (x.rows() < 1) run_table.fail("initial_dataset", fmt::format("{} has no rows", where));
  if (!x.isFinite().all()) run_table.fail("initial_dataset", fmt::format("{} holds non-finite values", where));
}

// Where the sampler runs: the grid, less a final zero the sampler cannot step to; and whether the
// run ends with the denoiser's x0.
struct RunGrid {
  std::span<const double> sigmas, times;
  bool denoise_at_end = false;
};

RunGrid run_grid(const ConfiguredSampler& sampler, const TimeGrid& grid) {
  RunGrid g{grid.sigma, grid.t, grid.final_step == FinalStep::denoise};
  if (!sampler.steps_to_zero && grid.sigma.back() == 0.0) {
    g.sigmas = g.sigmas.first(g.sigmas.size() - 1);
    g.times = g.times.first(g.times.size() - 1);
    g.denoise_at_end = true;
  }
  return g;
}

struct BlockResult {
  IntegrationStats stats;
  Index model_calls = 0;
  std::vector<Batch> trajectory;
};

// A block of one class run: rows [begin, end) of that run, which starts at row `offset` of x.
struct ClassBlock {
  BlockRange range;  // index: position among all blocks; begin, end: rows within the class run
  Index run_class = 0, offset = 0;
};

// One block: the sampler on rows [offset + b.begin, offset + b.end) of the scale-free x, then the
// final step. Its noise is keyed by the row within its class run.
BlockResult run_block(const SamplingSetup& s, const RunGrid& g, const ClassBlock& cb, Batch& x) {
  const BlockRange& b = cb.range;
  const auto predictor = s.make_predictor(cb.run_class);
  const ScaledDenoiser<Batch> denoiser(*s.process, *predictor);
  BlockResult out;
  // The whole batch in one block is moved, not copied (one state less at peak); no other thread
  // touches x then.
  const bool whole = cb.offset == 0 && b.begin == 0 && b.rows() == x.rows();
  Batch block = whole ? Batch(std::move(x)) : Batch(x.middleRows(cb.offset + b.begin, b.rows()));
  SamplerObserver observer = [&](const StepInfo& info, const Batch& state) {
    if (s.run.save_trajectory) out.trajectory.push_back(state * denoiser.alpha_at(info.t));
  };
  const SamplerContext context{*s.process, *predictor, denoiser, g.sigmas, g.times, {s.run.seed, b.begin, s.sampler.noise}, observer};
  try {
    out.stats = s.sampler.run(context, block);
  } catch (const std::exception& e) {
    out.stats.failed = true;
    out.stats.failure = fmt::format("exception: {}", e.what());
  }
  if (!out.stats.failed && g.denoise_at_end) {
    Batch denoised;
    denoiser(block, g.sigmas.back(), denoised);
    ++out.stats.nfe;
    block = denoised;  // x0: alpha = 1
  } else {
    block *= denoiser.alpha_at(g.sigmas.back());
  }
  if (whole) {
    x = std::move(block);
  } else {
    x.middleRows(cb.offset + b.begin, b.rows()) = block;
  }
  const auto* guided = dynamic_cast<const GuidedModelPredictor*>(predictor.get());
  out.model_calls = guided ? guided->model_calls() : out.stats.nfe;
  return out;
}

// [model] state = "device": what the device path runs, checked against the rest of the config, and
// the sampler's options read again from [sampler] (read_sampler has validated them; the registry's
// runner keeps them to itself).
void read_device_state(ConfigTable& root, SamplingSetup& s) {
  const ConfigTable model_table = root.table("model");
  const std::string& name = s.sampler.name;
  const auto& names = device_state_samplers();
  if (std::find(names.begin(), names.end(), name) == names.end())
    model_table.fail("state", fmt::format("\"device\" runs the deterministic fixed-grid samplers {}; [sampler] name = \"{}\" runs on the host "
                                          "state only (state = \"host\")",
                                          fmt::join(names, ", "), name));
  if (s.sampler.stochastic)
    model_table.fail("state", fmt::format("\"device\" runs deterministic samplers only, and [sampler] {} draws noise with {} (state = \"host\" "
                                          "runs it)",
                                          name, name == "ddim" ? "eta > 0" : "s_churn > 0"));
  if (s.guidance)
    model_table.fail("state", "\"device\" runs unguided sampling only: [guidance] (classifier-free guidance) runs on the host state (state = \"host\")");
  if (s.run.save_trajectory)
    root.table("run").fail("save_trajectory", "[model] state = \"device\" keeps the state on the device for the whole solve and copies back "
                                              "only the result: save trajectories with state = \"host\"");
  const SamplerEntry* entry = find_sampler(name);
  ConfigTable o = root.table("sampler").bind(entry->options);
  DeviceSolveSpec d;
  d.sampler = name;
  if (name == "dpm_solver" || name == "unipc" || name == "lms") d.order = static_cast<int>(o.integer("order"));
  if (name == "ipndm") d.max_order = static_cast<int>(o.integer("max_order"));
  if (name == "dpmpp_2m" || name == "dpmpp_3m") d.lower_order_final_below = static_cast<int>(o.integer("lower_order_final_below"));
  if (name == "dpmpp_3m") d.form = o.string("form");
  if (name == "unipc") {
    d.variant = o.string("variant");
    d.prediction = o.string("prediction");
    d.lower_order_final = o.boolean("lower_order_final");
    d.corrector = o.boolean("corrector");
  }
  if (name == "lms") d.startup = o.string("startup");
  s.device_solve = std::move(d);
}

// The device path of run_sampling: one solve of the whole batch on the network's device, then the
// host path's scaling back to the process's x.
SamplingOutcome run_on_device(const SamplingSetup& s, const RunGrid& g, Batch initial) {
  const NetworkBackend& backend = device_state_backend();
  const Process& process = *s.process;
  SamplingOutcome out;
  out.state = "device";
  out.initial = std::move(initial);
  const Batch x = out.initial / alpha_at_scaled_sigma(process, g.sigmas.front());
  DeviceSolveSpec spec = *s.device_solve;
  spec.sigmas.assign(g.sigmas.begin(), g.sigmas.end());
  spec.denoise_at_end = g.denoise_at_end;
  spec.unit_alpha = process.unit_alpha();
  // ScaledDenoiser's levels at sigma~ (solvers/diffusion/denoiser.hpp), on the host.
  spec.levels = [&process](double sigma) {
    const double t = process.t_of_scaled_sigma(sigma);
    return std::pair{process.alpha(t), process.sigma(t)};
  };
  DeviceSolveOutcome r;
  try {
    r = backend.solve_on_device(*s.network, spec, x);
  } catch (const std::exception& e) {
    r = DeviceSolveOutcome{.x = x, .failed = true, .failure = fmt::format("exception: {}", e.what())};
  }
  out.nfe = static_cast<double>(r.nfe);
  out.model_calls = static_cast<double>(r.model_calls);
  out.failed = r.failed;
  out.failure = r.failure;
  out.samples = std::move(r.x);
  if (r.failed || !g.denoise_at_end) out.samples *= alpha_at_scaled_sigma(process, g.sigmas.back());
  out.sigma_end = g.denoise_at_end ? 0.0 : g.sigmas.back();
  out.alpha_end = alpha_at_scaled_sigma(process, out.sigma_end);
  return out;
}

}  // namespace

std::unique_ptr<Predictor<Batch>> SamplingSetup::make_predictor(Index run_class) const {
  if (guidance) {
    GuidanceSettings settings = guidance->settings;
    if (guidance->all_classes) settings.target_class = run_class;
    if (guidance->model) return std::make_unique<GuidedPredictor>(guidance->model, settings);
    return make_guided_predictor(*network, settings);
  }
  if (network) return network->make_predictor(-1);
  return std::make_unique<MixturePredictor>(*mixture);
}

std::vector<std::int64_t> SamplingSetup::labels() const {
  if (!guidance) return {};
  const Index n = samples(), per_class = n / class_runs();
  std::vector<std::int64_t> out(n);
  for (Index i = 0; i < n; ++i) out[i] = guidance->all_classes ? i / per_class : guidance->settings.target_class;
  return out;
}

SamplingSetup read_sampling_setup(ConfigTable& root) {
  SamplingSetup s;
  s.process = read_process(root.table("process"));
  ModelSource model = read_model(root.table("model"), root.table("process"), /*device_state_allowed=*/true);
  s.mixture = std::move(model.mixture);
  s.network = std::move(model.network);
  s.guidance = s.network ? read_network_guidance(root, *s.network) : read_guidance(root, *s.mixture);
  ConfigTable grid_table = root.table("grid");
  s.grid_spec = read_grid_spec(grid_table);
  try {
    s.grid = build_sampling_grid(s.grid_spec, *s.process);
  } catch (const std::exception& e) {
    // A grid that cannot start where the config's [process] keys put T is theirs to fix.
    const ConfigTable process_table = root.table("process");
    if (const auto key = key_putting_t_max_at_alpha_zero(process_table, *s.process))
      process_table.fail(*key, fmt::format("alpha(T) = 0 at T = {} on {}, so sigma~ = sigma / alpha is infinite there and no sampling grid can "
                                           "start from it; take a smaller {}",
                                           s.process->t_max(), s.process->name(), *key));
    grid_table.fail(s.grid_spec.steps ? "schedule" : "file", e.what());
  }
  s.sampler = read_sampler(root.table("sampler"));
  ConfigTable run_table = root.table("run");
  s.run = read_run_settings(run_table);
  if (s.run.initial == "exact" && !s.mixture && s.run.initial_file.empty())
    run_table.fail("initial", "\"exact\" draws x_T from the exact p_T, which needs the mixture the network was trained on ([model.ground_truth])");
  if (!s.run.initial_file.empty()) {
    if (run_table.has("samples")) run_table.fail("samples", "the samples are the rows of initial_file: give one or the other");
    if (s.class_runs() > 1)
      run_table.fail("initial_file", "[guidance] class = \"all\" draws each class's x_T from [run] seed: give one class, or no initial_file");
    read_initial_file(run_table, s);
  }
  if (const Index c = s.class_runs(); c > 1 && s.run.samples % c != 0)
    run_table.fail("samples", fmt::format("{} samples for [guidance] class = \"all\" of a model with {} classes: samples must be a multiple of {} "
                                          "(samples / {} of each class)",
                                          s.run.samples, c, c, c));
  // The run holds x_T, the state and the result, a few block-sized work arrays per thread, and with
  // save_trajectory every grid point's state.
  const double state_bytes = 8.0 * static_cast<double>(s.samples()) * static_cast<double>(s.dims());
  check_memory(run_table, s.run.initial_file.empty() ? "samples" : "initial_file",
               state_bytes * (4.0 + (s.run.save_trajectory ? static_cast<double>(s.grid.t.size()) : 0.0)));
  if (s.run.save_trajectory && s.sampler.adaptive)
    run_table.fail("save_trajectory", fmt::format("the adaptive sampler '{}' takes its own steps: no grid trajectory to save", s.sampler.name));
  if (model.state == "device") read_device_state(root, s);
  return s;
}

Batch initial_noise(const SamplingSetup& s) {
  if (!s.run.initial_file.empty()) return s.initial_from_file;
  const Index runs = s.class_runs(), rows = s.run.samples / runs;
  Batch one;
  if (s.run.initial == "exact") {
    const double alpha_T = alpha_at_scaled_sigma(*s.process, s.grid.sigma.front());
    one = s.mixture->sample_marginal(alpha_T, alpha_T * s.grid.sigma.front(), rows, s.run.seed);
  } else if (s.mixture) {
    one = s.mixture->sample_marginal(0.0, s.process->prior_std(), rows, s.run.seed);
  } else {
    // The prior's draws at alpha = 0 are the noise of sample_marginal alone, keyed by (seed, row)
    // and not by the mixture: any mixture of the model's dimension gives these same numbers.
    const Index d = s.dims();
    const GaussianMixture unit(Eigen::ArrayXd::Ones(1), Batch::Zero(1, d), Batch::Ones(1, d));
    one = unit.sample_marginal(0.0, s.process->prior_std(), rows, s.run.seed);
  }
  if (runs == 1) return one;
  // Each class run starts from the x_T of a run of its own rows.
  Batch all(s.run.samples, one.cols());
  for (Index c = 0; c < runs; ++c) all.middleRows(c * rows, rows) = one;
  return all;
}

SamplingOutcome run_sampling(const SamplingSetup& s, Batch initial, int threads, InitialCopy copy) {
  return run_sampling(s, std::move(initial), s.grid, threads, copy);
}

SamplingOutcome run_sampling(const SamplingSetup& s, Batch initial, const TimeGrid& grid, int threads, InitialCopy copy) {
  const RunGrid g = run_grid(s.sampler, grid);
  if (s.device_solve) return run_on_device(s, g, std::move(initial));
  SamplingOutcome out;
  const double alpha_start = alpha_at_scaled_sigma(*s.process, g.sigmas.front());
  if (copy == InitialCopy::keep) {
    out.initial = std::move(initial);
    out.samples = out.initial / alpha_start;
  } else {
    out.samples = std::move(initial);
    out.samples /= alpha_start;  // the same division, element by element, as the copy above
  }
  // The class runs' blocks, one list, so that threads take blocks of any class.
  const Index runs = s.class_runs(), total = out.samples.rows();
  if (total % runs != 0) throw std::invalid_argument(fmt::format("run_sampling: {} rows for {} class runs", total, runs));
  const Index per_run = total / runs;
  std::vector<ClassBlock> class_blocks;
  std::vector<BlockRange> blocks;  // index, and rows of the whole x: for for_each_block and messages
  for (Index c = 0; c < runs; ++c)
    for (const BlockRange& b : make_blocks(per_run, s.run.block_rows)) {
      const Index index = static_cast<Index>(blocks.size());
      class_blocks.push_back({{index, b.begin, b.end}, c, c * per_run});
      blocks.push_back({index, c * per_run + b.begin, c * per_run + b.end});
    }
  std::vector<BlockResult> results(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) { results[b.index] = run_block(s, g, class_blocks[b.index], out.samples); });
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const IntegrationStats& st = results[i].stats;
    const double share = static_cast<double>(blocks[i].rows()) / static_cast<double>(total);
    out.nfe += static_cast<double>(st.nfe) * share;
    out.model_calls += static_cast<double>(results[i].model_calls) * share;
    if (st.failed && !out.failed) {
      out.failed = true;
      out.failure = blocks.size() == 1 ? st.failure : fmt::format("rows {}..{}: {}", blocks[i].begin, blocks[i].end - 1, st.failure);
    }
  }
  out.sigma_end = g.denoise_at_end ? 0.0 : g.sigmas.back();
  out.alpha_end = alpha_at_scaled_sigma(*s.process, out.sigma_end);
  if (s.run.save_trajectory && !out.failed) {
    for (std::size_t step = 0; step < results.front().trajectory.size(); ++step) {
      Batch& state = out.trajectory.emplace_back(out.samples.rows(), out.samples.cols());
      for (const BlockRange& b : blocks) state.middleRows(b.begin, b.rows()) = results[b.index].trajectory[step];
    }
  }
  return out;
}

}  // namespace diffode
