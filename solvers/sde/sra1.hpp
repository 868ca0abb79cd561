// SRA1: Rossler's two-stage stochastic Runge-Kutta scheme for additive noise (A. Rossler 2010,
// "Runge-Kutta methods for the strong approximation of solutions of stochastic differential
// equations", SIAM J. Numer. Anal. 48(3), 922-952; Sec. 5 and Table 5.1/SRA1). For
// dX = f(X, t) dt + g(t) dW, with I_(1) = dW and I_(1,0) = int_t^{t+h} (W_u - W_t) du:
//     H_i = x + h sum_j A0_ij f(H_j, t + c0_j h) + sum_j B0_ij g(t + c1_j h) I_(1,0)/h
//     x_{n+1} = x + h sum_i alpha_i f(H_i, t + c0_i h)
//                 + sum_i (beta1_i I_(1) + beta2_i I_(1,0)/h) g(t + c1_i h)
// with the SRA1 tableau
//     c0 = (0, 3/4)   A0 = [[0, 0], [3/4, 0]]   B0 = [[0, 0], [3/2, 0]]   alpha = (1/3, 2/3)
//     c1 = (1, 0)     beta1 = (1, 0)            beta2 = (-1, 1).
// Written out: H_2 = x + 3/4 h f(x, t) + 3/2 g(t+h) I_(1,0)/h, and
//     x_{n+1} = x + h (f(x, t)/3 + 2/3 f(H_2, t + 3h/4)) + g(t+h) (dW - I_(1,0)/h) + g(t) I_(1,0)/h.
// The noise part is exact for g affine in t (int g dW = g(t+h) dW - g' I_(1,0) then).
// Strong order 1.5, weak order 2, for additive noise only (Ito = Stratonovich there). Every formula
// is algebraic in h, dW and I_(1,0), all signed, so a step with h < 0 runs backward in time.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Sra1 {
 public:
  static constexpr StepperTraits traits{
      .name = "sra1", .stochastic = true, .order = 2, .strong_order = 1.5, .weak_order = 2,
      .calculus = Calculus::ito, .noise_types = noise_set({NoiseType::additive}),
      .needs_time_integral = true, .evaluations_per_step = 2};
  using Ops = StateOps<State>;

  // The tableau, as data (Rossler 2010, Table 5.1, SRA1).
  struct Tableau {
    double c0[2], c1[2], a0_21, b0_21, alpha[2], beta1[2], beta2[2];
  };
  static constexpr Tableau tableau{.c0 = {0.0, 0.75}, .c1 = {1.0, 0.0}, .a0_21 = 0.75, .b0_21 = 1.5,
                                   .alpha = {1.0 / 3.0, 2.0 / 3.0}, .beta1 = {1.0, 0.0}, .beta2 = {-1.0, 1.0}};

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x, const Noise<State>& noise) {
    constexpr const Tableau& T = tableau;
    // g at the two noise nodes t + c1_i h; additive noise ignores the state argument.
    problem.diffusion(x, Ops::fill(x, t + T.c1[0] * h), g_[0]);
    problem.diffusion(x, Ops::fill(x, t + T.c1[1] * h), g_[1]);
    // Stage 1: H_1 = x.
    problem.drift(x, Ops::fill(x, t + T.c0[0] * h), k1_);
    // Stage 2: H_2 = x + A0_21 h f(H_1) + B0_21 g(t + c1_1 h) I_(1,0)/h.
    Ops::update(h2_, x, h, {{T.a0_21, k1_}});
    Ops::add_product(h2_, T.b0_21 / h, g_[0], noise.time_integral);
    problem.drift(h2_, Ops::fill(x, t + T.c0[1] * h), k2_);
    // Combination.
    Ops::update(x, x, h, {{T.alpha[0], k1_}, {T.alpha[1], k2_}});
    for (int i = 0; i < 2; ++i) {
      if (T.beta1[i] != 0.0) Ops::add_product(x, T.beta1[i], g_[i], noise.dw);
      if (T.beta2[i] != 0.0) Ops::add_product(x, T.beta2[i] / h, g_[i], noise.time_integral);
    }
  }

 private:
  State g_[2], k1_, k2_, h2_;
};

}  // namespace diffode
