// Readers shared by the config-driven commands (sample, sweep, likelihood): the [process], [model]
// and [grid] tables, each validated as it is read (errors name file, line and key).
#pragma once

#include "experiments/config.hpp"
#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"

#include <memory>

namespace diffode {

// [process] name = "edm" | "vp" | "vp_cosine" | "subvp" | "ve" | "flow", and overrides of its parameters.
std::unique_ptr<Process> read_process(ConfigTable t);
// [model] kind = "mixture": preset (ring2d | iso16 | diag64, seed), explicit weights/means/variances, or file.
GaussianMixture read_mixture(ConfigTable t);
// [grid] schedule, steps and the schedule's options; final_step.
TimeGrid read_grid(ConfigTable t, const Process& process);

}  // namespace diffode
