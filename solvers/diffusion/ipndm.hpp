// iPNDM: the improved pseudo-numerical method of Zhang & Chen 2023, "Fast Sampling of Diffusion
// Models with Exponential Integrator" (DEIS), arXiv:2204.13902, Sec. 4 / Appendix (iPNDM), built on
// Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds" (PNDM),
// arXiv:2202.09778, eq. 12 (the linear multistep "PLMS" part).
//
// The variant here is the one of the EDM-based codebases (ComfyUI's k-diffusion-style sample_ipndm,
// the 'ipndm' sampler of zju-pi/diff-sampler (AMED) and DPM-Solver-v3's EDM port): explicit
// Adams-Bashforth steps with the constant (equal-step) coefficients on the PF-ODE in sigma~,
//   d_i = (x~_i - D(x~_i; sigma_i)) / sigma_i   (= eps_hat; DEIS's dx~/drho with rho = sigma~)
//   x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) * sum_j c_j d_{i-j},
// c = (1), (3/2, -1/2), (23/12, -16/12, 5/12), (55/24, -59/24, 37/24, -9/24), the order growing
// 1, 2, 3, 4 over the first steps from the history available (no Runge-Kutta warm-up: PNDM's
// original used one; iPNDM replaces it by these lower-order multistep steps). A step to
// sigma_{i+1} = 0 returns D (ComfyUI's convention, = Euler to 0).
//
// Order: the coefficients are Adams-Bashforth's for equal steps in sigma. On such grids the
// method has order 4 after the warm-up, whose first (Euler) step has a local error O(h^2) but with
// a constant that vanishes at large sigma, where the PF-ODE is nearly linear in sigma. On grids
// that are not uniform in sigma (log-uniform, Karras) the constant coefficients are inconsistent at
// third order (the step sizes change by O(h) from step to step), and the global order drops to 2
// (measured in ipndm_test.cpp). One evaluation per step.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <algorithm>
#include <type_traits>
#include <stdexcept>
#include <vector>

namespace diffode {

struct IPNDMOptions {
  int max_order = 4;  // 1..4 (the reference's max_order)
};

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_ipndm(const Model& model, State& x, std::span<const double> sigmas, const IPNDMOptions& options = {},
                              const std::type_identity_t<SigmaNoise<State>>* /*noise: deterministic*/ = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (options.max_order < 1 || options.max_order > 4) throw std::invalid_argument("sample_ipndm: max_order must be 1..4");
  SamplerRun run(model, observer);
  State denoised, d;
  std::vector<State> past;  // d_{i-1}, d_{i-2}, d_{i-3}: newest first
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1], h = sigma_next - sigma;
    run.denoise(x, sigma, denoised);
    karras_derivative(x, sigma, denoised, d);
    const int order = std::min<int>(options.max_order, static_cast<int>(i) + 1);
    if (sigma_next == 0.0) {
      Ops::assign(x, denoised);
    } else if (order == 1) {
      Ops::update(x, x, h, {{1.0, d}});
    } else if (order == 2) {
      Ops::update(x, x, h, {{3.0 / 2.0, d}, {-1.0 / 2.0, past[0]}});
    } else if (order == 3) {
      Ops::update(x, x, h, {{23.0 / 12.0, d}, {-16.0 / 12.0, past[0]}, {5.0 / 12.0, past[1]}});
    } else {
      Ops::update(x, x, h, {{55.0 / 24.0, d}, {-59.0 / 24.0, past[0]}, {37.0 / 24.0, past[1]}, {-9.0 / 24.0, past[2]}});
    }
    // Keep the newest max_order - 1 derivatives.
    if (options.max_order > 1) {
      if (past.size() < static_cast<std::size_t>(options.max_order - 1)) past.emplace_back();
      std::rotate(past.rbegin(), past.rbegin() + 1, past.rend());  // the oldest slot moves to the front
      std::swap(past.front(), d);
    }
    if (!run.finish_step(i, sigma_next, h, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
