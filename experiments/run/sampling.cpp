#include "experiments/run/sampling.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/parallel.hpp"

#include <fmt/format.h>

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
  std::vector<Batch> trajectory;
};

// One block: the sampler on rows [b.begin, b.end) of the scale-free x, then the final step.
BlockResult run_block(const SamplingSetup& s, const RunGrid& g, const BlockRange& b, Batch& x) {
  const auto predictor = s.make_predictor();
  const ScaledDenoiser<Batch> denoiser(*s.process, *predictor);
  BlockResult out;
  // The whole batch in one block is moved, not copied (one state less at peak); no other thread
  // touches x then.
  const bool whole = b.begin == 0 && b.rows() == x.rows();
  Batch block = whole ? Batch(std::move(x)) : Batch(x.middleRows(b.begin, b.rows()));
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
    x.middleRows(b.begin, b.rows()) = block;
  }
  return out;
}

}  // namespace

std::unique_ptr<Predictor<Batch>> SamplingSetup::make_predictor() const {
  if (guidance) return std::make_unique<GuidedPredictor>(guidance->model, guidance->settings);
  if (network) return network->make_predictor(-1);
  return std::make_unique<MixturePredictor>(*mixture);
}

SamplingSetup read_sampling_setup(ConfigTable& root) {
  SamplingSetup s;
  s.process = read_process(root.table("process"));
  ModelSource model = read_model(root.table("model"), root.table("process"));
  s.mixture = std::move(model.mixture);
  s.network = std::move(model.network);
  if (!s.network) s.guidance = read_guidance(root, *s.mixture);
  else if (root.peek("guidance"))
    root.fail("guidance", "guidance runs on a class-conditional mixture ([model] kind = \"mixture\" with classes), not on a network");
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
    read_initial_file(run_table, s);
  }
  // The run holds x_T, the state and the result, a few block-sized work arrays per thread, and with
  // save_trajectory every grid point's state.
  const double state_bytes = 8.0 * static_cast<double>(s.samples()) * static_cast<double>(s.dims());
  check_memory(run_table, s.run.initial_file.empty() ? "samples" : "initial_file",
               state_bytes * (4.0 + (s.run.save_trajectory ? static_cast<double>(s.grid.t.size()) : 0.0)));
  if (s.run.save_trajectory && s.sampler.adaptive)
    run_table.fail("save_trajectory", fmt::format("the adaptive sampler '{}' takes its own steps: no grid trajectory to save", s.sampler.name));
  return s;
}

Batch initial_noise(const SamplingSetup& s) {
  if (!s.run.initial_file.empty()) return s.initial_from_file;
  if (s.run.initial == "exact") {
    const double alpha_T = alpha_at_scaled_sigma(*s.process, s.grid.sigma.front());
    return s.mixture->sample_marginal(alpha_T, alpha_T * s.grid.sigma.front(), s.run.samples, s.run.seed);
  }
  if (s.mixture) return s.mixture->sample_marginal(0.0, s.process->prior_std(), s.run.samples, s.run.seed);
  // The prior's draws at alpha = 0 are the noise of sample_marginal alone, keyed by (seed, row) and
  // not by the mixture: any mixture of the model's dimension gives these same numbers.
  const Index d = s.dims();
  const GaussianMixture unit(Eigen::ArrayXd::Ones(1), Batch::Zero(1, d), Batch::Ones(1, d));
  return unit.sample_marginal(0.0, s.process->prior_std(), s.run.samples, s.run.seed);
}

SamplingOutcome run_sampling(const SamplingSetup& s, Batch initial, int threads) { return run_sampling(s, std::move(initial), s.grid, threads); }

SamplingOutcome run_sampling(const SamplingSetup& s, Batch initial, const TimeGrid& grid, int threads) {
  const RunGrid g = run_grid(s.sampler, grid);
  SamplingOutcome out;
  out.initial = std::move(initial);
  out.samples = out.initial / alpha_at_scaled_sigma(*s.process, g.sigmas.front());
  const auto blocks = make_blocks(out.samples.rows(), s.run.block_rows);
  std::vector<BlockResult> results(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) { results[b.index] = run_block(s, g, b, out.samples); });
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const IntegrationStats& st = results[i].stats;
    out.nfe += static_cast<double>(st.nfe) * static_cast<double>(blocks[i].rows()) / static_cast<double>(out.samples.rows());
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
