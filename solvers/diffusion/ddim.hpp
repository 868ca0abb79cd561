// DDIM with eta: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502,
// eq. 12 (the generalized step) with sigma_t(eta) of eq. 16.
//
// In scale-free variables x~ = x / sqrt(abar), sigma~^2 = (1 - abar)/abar, eq. 12 divided by
// sqrt(abar_{t-1}) reads
//   x~_next = D + sigma_down eps_hat + sigma_up z,   eps_hat = (x~ - D)/sigma,  z ~ N(0, I),
// with sigma_up = sigma_t(eta) / sqrt(abar_{t-1}) = eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) /
// sigma^2) and sigma_down^2 = sigma_next^2 - sigma_up^2: exactly the ancestral split of
// sampler.hpp's ancestral_step (k-diffusion's get_ancestral_step; its min(sigma_next, .) clip acts
// only for eta > 1). So DDIM(eta) is k-diffusion's sample_euler_ancestral step for step, and:
//   - eta = 0 is deterministic, x~_next = D + (sigma_next/sigma)(x~ - D): the first-order
//     exponential integrator in lambda (DPM-Solver-1, Lu et al. 2022, arXiv:2206.00927, eq. 3.7)
//     and, as a formula, also Euler's step in sigma, x~ + (sigma_next - sigma)(x~ - D)/sigma: the
//     PF-ODE in sigma~ is linear in x~ with coefficient 1/sigma, which both schemes integrate alike.
//     Order 1.
//   - eta = 1 is DDPM's ancestral step with the posterior variance beta~ (see ddpm.hpp).
// A step to sigma_next = 0 gives D (sigma_down = sigma_up = 0), as in k-diffusion. One evaluation
// per step.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <stdexcept>
#include <type_traits>

namespace diffode {

struct DDIMOptions {
  double eta = 0.0;      // 0: deterministic DDIM; 1: DDPM (beta~ variance)
  double s_noise = 1.0;  // scale of the fresh noise (k-diffusion's s_noise)
};

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_ddim(const Model& model, State& x, std::span<const double> sigmas, const DDIMOptions& options = {},
                             const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (options.eta < 0.0) throw std::invalid_argument("sample_ddim: eta must be >= 0");
  if (options.eta > 0.0 && noise == nullptr) throw std::invalid_argument("sample_ddim: eta > 0 needs a noise source");
  SamplerRun run(model, observer);
  State denoised;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1];
    run.denoise(x, sigma, denoised);
    const auto [sigma_down, sigma_up] = ancestral_step(sigma, sigma_next, options.eta);
    // x~ <- D + (sigma_down/sigma)(x~ - D), i.e. D + sigma_down eps_hat (eq. 12's first two terms).
    const double ratio = sigma_down / sigma;
    Ops::update(x, denoised, ratio, {{1.0, x}, {-1.0, denoised}});
    if (sigma_up > 0.0) {  // eq. 12's sigma_t z
      noise->add(i, sigma, sigma_next, x, options.s_noise * sigma_up);
    }
    if (!run.finish_step(i, sigma_next, sigma_next - sigma, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
