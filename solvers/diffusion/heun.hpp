// Heun sampler with optional churn: Karras et al. 2022, "Elucidating the Design Space of
// Diffusion-Based Generative Models", arXiv:2206.00364, Algorithm 2 (deterministic Algorithm 1
// when s_churn = 0); k-diffusion's sample_heun. Heun's method (explicit trapezoid) on the PF-ODE
// dx/dsigma = (x - D(x; sigma)) / sigma: order 2, two evaluations per step. A step to sigma = 0 is
// an Euler step (Algorithm 2, line 9: the correction would divide by sigma = 0), which returns
// the denoised value D(x; sigma_hat) and costs one evaluation.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <cmath>
#include <span>
#include <stdexcept>
#include <type_traits>

namespace diffode {

// (`noise` is a non-deduced parameter, so a plain nullptr can precede an observer.)
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_heun(const Model& model, State& x, std::span<const double> sigmas, const ChurnOptions& churn = {},
                             const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (churn.s_churn > 0.0 && noise == nullptr) throw std::invalid_argument("sample_heun: churn needs a noise source");
  SamplerRun run(model, observer);
  State denoised, d, x_2, d_2, eps;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma_hat = churn_noise_level(churn, sigmas, i, noise, x, eps);
    const double sigma_next = sigmas[i + 1];
    run.denoise(x, sigma_hat, denoised);
    karras_derivative(x, sigma_hat, denoised, d);
    const double h = sigma_next - sigma_hat;
    if (sigma_next == 0.0) {  // Euler step (line 9's condition sigma_{i+1} != 0 fails)
      Ops::update(x, x, h, {{1.0, d}});
    } else {  // Heun: Euler predictor, then the trapezoid of the two slopes (lines 9-11)
      Ops::update(x_2, x, h, {{1.0, d}});
      run.denoise(x_2, sigma_next, denoised);
      karras_derivative(x_2, sigma_next, denoised, d_2);
      Ops::update(x, x, h, {{0.5, d}, {0.5, d_2}});
    }
    if (!run.finish_step(i, sigma_next, h, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
