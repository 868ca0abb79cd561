// Euler ancestral sampler: k-diffusion's sample_euler_ancestral (Crowson, k-diffusion,
// crowsonkb/k-diffusion). Each step sigma -> sigma_next is split as in DDIM (Song et al.
// 2021, arXiv:2010.02502, eq. 16, in sigma~): an Euler step of the PF-ODE dx/dsigma =
// (x - D(x; sigma)) / sigma down to sigma_down, then fresh noise of size sigma_up, with
// sigma_down^2 + sigma_up^2 = sigma_next^2. eta = 1 is the ancestral (DDPM-like) sampler, eta = 0
// the deterministic Euler sampler. One evaluation per step; weak order 1. The step to sigma = 0
// has sigma_up = 0 and returns D(x; sigma).
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <cmath>
#include <span>
#include <stdexcept>
#include <type_traits>

namespace diffode {

struct AncestralOptions {
  double eta = 1.0;      // share of each step's variance renewed by fresh noise; 0 = deterministic
  double s_noise = 1.0;  // scale of the added noise
};

namespace detail {
inline void check_ancestral(const AncestralOptions& options, bool has_noise, const char* who) {
  if (!(options.eta >= 0.0) || !std::isfinite(options.eta))
    throw std::invalid_argument(fmt::format("{}: eta must be finite and >= 0 (got {})", who, options.eta));
  if (options.eta > 0.0 && !has_noise) throw std::invalid_argument(fmt::format("{}: eta > 0 needs a noise source", who));
}
}  // namespace detail

// (`noise` is a non-deduced parameter, so a plain nullptr can precede an observer.)
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_euler_ancestral(const Model& model, State& x, std::span<const double> sigmas,
                                        const AncestralOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* noise = nullptr,
                                        Observer&& observer = {}) {
  check_sigmas(sigmas);
  detail::check_ancestral(options, noise != nullptr, "sample_euler_ancestral");
  SamplerRun run(model, observer);
  State denoised, d;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1];
    run.denoise(x, sigma, denoised);
    const auto [sigma_down, sigma_up] = ancestral_step(sigma, sigma_next, options.eta);
    karras_euler_step(x, sigma, denoised, sigma_down - sigma, d);
    if (sigma_up > 0.0) {  // zero at sigma_next = 0 and for eta = 0: no noise is drawn then
      noise->add(i, sigma, sigma_next, x, options.s_noise * sigma_up);
    }
    if (!run.finish_step(i, sigma_next, sigma_next - sigma, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
