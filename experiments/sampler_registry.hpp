// Every diffusion sampler by the name a config uses, with its options read (and validated) from
// the config's [sampler] table before anything runs.
#pragma once

#include "core/state.hpp"
#include "experiments/config.hpp"
#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <functional>
#include <span>
#include <string>
#include <vector>

namespace diffode {

// Sees the state after every step (trajectories, progress).
using SamplerObserver = std::function<void(const StepInfo&, const Batch&)>;

// A configured sampler: run it on x~ (scaled state) over the sigma~ grid.
using SamplerRunner = std::function<IntegrationStats(const ScaledDenoiser<Batch>& model, Batch& x, std::span<const double> sigmas,
                                                     const SigmaNoise<Batch>* noise, SamplerObserver& observer)>;

struct SamplerEntry {
  std::string name;
  std::string summary;  // one line, with the paper
  // Reads this sampler's options from `options` (the [sampler] table less `name`), or throws
  // ConfigError; sets `stochastic` when the options make the sampler draw noise.
  std::function<SamplerRunner(ConfigTable& options, bool& stochastic)> configure;
};

const std::vector<SamplerEntry>& sampler_registry();
const SamplerEntry& find_sampler(const std::string& name, ConfigTable& where);

}  // namespace diffode
