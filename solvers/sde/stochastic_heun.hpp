// Stochastic Heun, the trapezoidal predictor-corrector for Stratonovich SDEs (Rumelin 1982, SIAM J.
// Numer. Anal. 19(3), "Numerical treatment of stochastic differential equations"; see also Kloeden &
// Platen 1992 on its Stratonovich limit):
//     x~      = x + f(x, t) h + g(x, t) dW
//     x_{n+1} = x + (f(x, t) + f(x~, t+h)) h/2 + (g(x, t) + g(x~, t+h)) dW/2.
// It converges to the Stratonovich solution: strong order 1 for commutative noise (additive,
// diagonal, scalar: the three this stepper accepts; 0.5 for general noise), weak order 1.
// Two drift (and diffusion) evaluations per step.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class StochasticHeun {
 public:
  static constexpr StepperTraits traits{
      .name = "stochastic_heun", .stochastic = true, .order = 2, .strong_order = 1.0, .weak_order = 1,
      .calculus = Calculus::stratonovich,
      .noise_types = noise_set({NoiseType::additive, NoiseType::diagonal, NoiseType::scalar}),
      .evaluations_per_step = 2};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x, const Noise<State>& noise) {
    const auto t0 = Ops::fill(x, t);
    const auto t1 = Ops::fill(x, t + h);
    problem.drift(x, t0, f0_);
    problem.diffusion(x, t0, g0_);
    // Predictor: one Euler-Maruyama step.
    Ops::update(predictor_, x, h, {{1.0, f0_}});
    Ops::add_product(predictor_, 1.0, g0_, noise.dw);
    problem.drift(predictor_, t1, f1_);
    problem.diffusion(predictor_, t1, g1_);
    // Corrector: trapezoidal averages of drift and diffusion.
    Ops::update(x, x, h, {{0.5, f0_}, {0.5, f1_}});
    Ops::add_product(x, 0.5, g0_, noise.dw);
    Ops::add_product(x, 0.5, g1_, noise.dw);
  }

 private:
  State f0_, g0_, f1_, g1_, predictor_;
};

}  // namespace diffode
