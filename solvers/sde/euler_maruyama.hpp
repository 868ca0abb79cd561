// Euler-Maruyama (Kloeden & Platen 1992, Sec. 10.2): x_{n+1} = x_n + f h + g dW.
// Ito; strong order 0.5 (1.0 for additive noise), weak order 1.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class EulerMaruyama {
 public:
  static constexpr StepperTraits traits{
      .name = "euler_maruyama", .stochastic = true, .order = 1, .strong_order = 0.5, .weak_order = 1,
      .calculus = Calculus::ito,
      .noise_types = noise_set({NoiseType::additive, NoiseType::diagonal, NoiseType::scalar}),
      .evaluations_per_step = 1};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x, const Noise<State>& noise) {
    const auto times = Ops::fill(x, t);
    problem.drift(x, times, f_);
    problem.diffusion(x, times, g_);
    Ops::update(x, x, h, {{1.0, f_}});
    Ops::add_product(x, 1.0, g_, noise.dw);
  }

 private:
  State f_, g_;
};

}  // namespace diffode
