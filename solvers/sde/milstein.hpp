// Milstein scheme for diagonal noise, Ito form (Kloeden & Platen 1992, Sec. 10.3, eq. 10.3.3, with
// the double integral I_(j,j) = (dW_j^2 - h)/2 of a diagonal noise):
//     x_{n+1,i} = x_i + f_i h + g_i dW_i + 1/2 g_i (dg_i/dx_i) (dW_i^2 - h).
// Strong order 1, weak order 1; needs the problem's diffusion_derivative dg_i/dx_i. Additive noise
// is accepted (the correction vanishes and the scheme is Euler-Maruyama, also strong order 1);
// scalar noise is not, since its correction needs the full Jacobian sum_j g_j dg_i/dx_j.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"

namespace diffode {

template <class State>
class Milstein {
 public:
  static constexpr StepperTraits traits{
      .name = "milstein", .stochastic = true, .order = 1, .strong_order = 1.0, .weak_order = 1,
      .calculus = Calculus::ito,
      .noise_types = noise_set({NoiseType::additive, NoiseType::diagonal}),
      .needs_diffusion_derivative = true, .evaluations_per_step = 1};
  using Ops = StateOps<State>;

  void reset() {}

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x, const Noise<State>& noise) {
    const auto times = Ops::fill(x, t);
    problem.drift(x, times, f_);
    problem.diffusion(x, times, g_);
    problem.diffusion_derivative(x, times, dg_);
    // ggp = g g'; the correction 1/2 g g' (dW^2 - h) splits into a drift-like -h/2 g g' and
    // 1/2 (g g' dW) dW, both expressible with update/add_product.
    ggp_ = Ops::zeros_like(x);
    Ops::add_product(ggp_, 1.0, g_, dg_);
    half_ggp_dw_ = Ops::zeros_like(x);
    Ops::add_product(half_ggp_dw_, 0.5, ggp_, noise.dw);
    Ops::update(x, x, h, {{1.0, f_}, {-0.5, ggp_}});
    Ops::add_product(x, 1.0, g_, noise.dw);
    Ops::add_product(x, 1.0, half_ggp_dw_, noise.dw);
  }

 private:
  State f_, g_, dg_, ggp_, half_ggp_dw_;
};

}  // namespace diffode
