// Explicit Euler: x_{n+1} = x_n + h f(x_n, t_n). Order 1, one evaluation per step.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Euler {
 public:
  static constexpr StepperTraits traits{.name = "euler", .order = 1, .evaluations_per_step = 1};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    problem.drift(x, Ops::fill(x, t), k_);
    Ops::update(x, x, h, {{1.0, k_}});
  }

 private:
  State k_;
};

}  // namespace diffode
