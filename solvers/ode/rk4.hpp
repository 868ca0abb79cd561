// The classical fourth-order Runge-Kutta method (Kutta 1901; Hairer, Norsett & Wanner I, §II.1):
//     k1 = f(x, t)                k2 = f(x + h/2 k1, t + h/2)
//     k3 = f(x + h/2 k2, t + h/2)  k4 = f(x + h k3, t + h)
//     x_{n+1} = x + h (k1 + 2 k2 + 2 k3 + k4) / 6.
// Order 4, four evaluations per step.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Rk4 {
 public:
  static constexpr StepperTraits traits{.name = "rk4", .order = 4, .evaluations_per_step = 4};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    problem.drift(x, Ops::fill(x, t), k1_);
    step_from_slope(problem, t, h, x);
  }

  // The same step when k1 = f(x, t) is already known (Adams-Bashforth's start-up has it): three
  // further evaluations.
  template <class Problem>
  void step_with_first_stage(const Problem& problem, double t, double h, const State& k1, State& x) {
    Ops::assign(k1_, k1);
    step_from_slope(problem, t, h, x);
  }

 private:
  template <class Problem>
  void step_from_slope(const Problem& problem, double t, double h, State& x) {
    const auto t_half = Ops::fill(x, t + 0.5 * h);
    Ops::update(stage_, x, h, {{0.5, k1_}});
    problem.drift(stage_, t_half, k2_);
    Ops::update(stage_, x, h, {{0.5, k2_}});
    problem.drift(stage_, t_half, k3_);
    Ops::update(stage_, x, h, {{1.0, k3_}});
    problem.drift(stage_, Ops::fill(x, t + h), k4_);
    Ops::update(x, x, h, {{1.0 / 6.0, k1_}, {2.0 / 6.0, k2_}, {2.0 / 6.0, k3_}, {1.0 / 6.0, k4_}});
  }

  State k1_, k2_, k3_, k4_, stage_;
};

}  // namespace diffode
