// The explicit midpoint rule (Runge 1895; Hairer, Norsett & Wanner I, §II.1):
//     k1 = f(x_n, t_n),  k2 = f(x_n + h/2 k1, t_n + h/2),  x_{n+1} = x_n + h k2.
// Order 2, two evaluations per step.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Midpoint {
 public:
  static constexpr StepperTraits traits{.name = "midpoint", .order = 2, .evaluations_per_step = 2};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    problem.drift(x, Ops::fill(x, t), k1_);
    Ops::update(half_, x, h, {{0.5, k1_}});
    problem.drift(half_, Ops::fill(x, t + 0.5 * h), k2_);
    Ops::update(x, x, h, {{1.0, k2_}});
  }

 private:
  State k1_, k2_, half_;
};

}  // namespace diffode
