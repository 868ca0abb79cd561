// For samplers that work in the process's own x and t (predictor-corrector, the generic steppers on
// the probability-flow ODE and the reverse SDE): the conversion from and back to the scale-free
// state at the ends, and an observer that still sees the scale-free state and sigma~.
#pragma once

#include "experiments/run/sampler_registry.hpp"

namespace diffode::samplers {

// Runs `solve(x_process, observer)` from the context's first time to its last, on x = alpha x~.
template <class Solve>
IntegrationStats in_process_variables(const SamplerContext& c, Batch& x_scaled, Solve&& solve) {
  const Process& p = c.process;
  Batch x = x_scaled * p.alpha(c.times.front());
  auto observer = [&](const StepInfo& info, const Batch& state) {
    StepInfo scaled = info;
    scaled.t = p.scaled_sigma(info.t);
    c.observer(scaled, state / p.alpha(info.t));
  };
  const IntegrationStats stats = solve(x, observer);
  x_scaled = x / p.alpha(c.times.back());
  return stats;
}

}  // namespace diffode::samplers
