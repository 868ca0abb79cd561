// Heun's method, the explicit trapezoidal rule (Heun 1900; Hairer, Norsett & Wanner I, §II.1):
//     k1 = f(x_n, t_n),  k2 = f(x_n + h k1, t_n + h),  x_{n+1} = x_n + h/2 (k1 + k2).
// Order 2, two evaluations per step. It is the predictor-corrector pair EDM's sampler builds on.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Heun {
 public:
  static constexpr StepperTraits traits{.name = "heun", .order = 2, .evaluations_per_step = 2};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    problem.drift(x, Ops::fill(x, t), k1_);
    Ops::update(predictor_, x, h, {{1.0, k1_}});
    problem.drift(predictor_, Ops::fill(x, t + h), k2_);
    Ops::update(x, x, h, {{0.5, k1_}, {0.5, k2_}});
  }

 private:
  State k1_, k2_, predictor_;
};

}  // namespace diffode
