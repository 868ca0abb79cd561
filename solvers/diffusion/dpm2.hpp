// DPM-2 and DPM-2 ancestral: k-diffusion's sample_dpm_2 and sample_dpm_2_ancestral (Crowson,
// k-diffusion), "inspired by DPM-Solver-2" (Lu et al. 2022, arXiv:2206.00927, Algorithm 1 with
// r1 = 1/2) and Karras et al. 2022 (arXiv:2206.00364, Algorithm 2). A second-order midpoint method
// on the PF-ODE dx/dsigma = (x - D(x; sigma)) / sigma whose midpoint is taken in log sigma, i.e. at
// lambda_s + h/2 as in DPM-Solver-2: sigma_mid = exp((log sigma_hat + log sigma_next) / 2). Unlike
// DPM-Solver-2 the two sub-steps are Euler steps in sigma (not exponential-integrator steps):
//   x_2 = x + (sigma_mid - sigma_hat) d(x; sigma_hat),  x_next = x + (sigma_next - sigma_hat) d(x_2; sigma_mid).
// Order 2, two evaluations per step. A step to sigma = 0 (no finite log) is an Euler step, one
// evaluation, returning D(x; sigma_hat).
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/diffusion/euler_ancestral.hpp"
#include "solvers/diffusion/heun.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <cmath>
#include <span>
#include <stdexcept>
#include <type_traits>

namespace diffode {

namespace detail {
// One DPM-2 step of x from sigma to sigma_to > 0, d = d(x; sigma) already known.
template <class State, class Run>
void dpm_2_step(Run& run, State& x, double sigma, double sigma_to, const State& d, State& x_2, State& denoised, State& d_2) {
  using Ops = StateOps<State>;
  const double sigma_mid = std::exp(std::lerp(std::log(sigma), std::log(sigma_to), 0.5));
  Ops::update(x_2, x, sigma_mid - sigma, {{1.0, d}});
  run.denoise(x_2, sigma_mid, denoised);
  karras_derivative(x_2, sigma_mid, denoised, d_2);
  Ops::update(x, x, sigma_to - sigma, {{1.0, d_2}});
}
}  // namespace detail

// DPM-2 with optional churn (Algorithm 2's noise-raising step, then a DPM-2 step from sigma_hat).
// (`noise` is a non-deduced parameter, so a plain nullptr can precede an observer.)
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpm_2(const Model& model, State& x, std::span<const double> sigmas, const ChurnOptions& churn = {},
                              const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (churn.s_churn > 0.0 && noise == nullptr) throw std::invalid_argument("sample_dpm_2: churn needs a noise source");
  SamplerRun run(model, observer);
  State denoised, d, x_2, d_2, eps;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma_hat = churn_noise_level(churn, sigmas, i, noise, x, eps);
    const double sigma_next = sigmas[i + 1];
    run.denoise(x, sigma_hat, denoised);
    karras_derivative(x, sigma_hat, denoised, d);
    if (sigma_next == 0.0)
      Ops::update(x, x, sigma_next - sigma_hat, {{1.0, d}});
    else
      detail::dpm_2_step(run, x, sigma_hat, sigma_next, d, x_2, denoised, d_2);
    if (!run.finish_step(i, sigma_next, sigma_next - sigma_hat, x)) break;
  }
  return run.stats;
}

// DPM-2 ancestral: a DPM-2 step down to sigma_down, then fresh noise of size sigma_up (see
// euler_ancestral.hpp). Where sigma_down = 0 the step is Euler (one evaluation). That happens at
// sigma_next = 0, where sigma_up = 0 too, and for eta > 1 where sigma_up is clipped to sigma_next:
// there the fresh noise is still added, as sample_euler_ancestral does. (k-diffusion's
// sample_dpm_2_ancestral skips the noise on its Euler branch, returning a noise-free denoised value
// labelled sigma_next > 0; the two agree for every eta <= 1.)
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpm_2_ancestral(const Model& model, State& x, std::span<const double> sigmas,
                                        const AncestralOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* noise = nullptr,
                                        Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  detail::check_ancestral(options, noise != nullptr, "sample_dpm_2_ancestral");
  SamplerRun run(model, observer);
  State denoised, d, x_2, d_2;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1];
    run.denoise(x, sigma, denoised);
    const auto [sigma_down, sigma_up] = ancestral_step(sigma, sigma_next, options.eta);
    karras_derivative(x, sigma, denoised, d);
    if (sigma_down == 0.0)
      Ops::update(x, x, sigma_down - sigma, {{1.0, d}});
    else
      detail::dpm_2_step(run, x, sigma, sigma_down, d, x_2, denoised, d_2);
    if (sigma_up > 0.0) {
      noise->add(i, sigma, sigma_next, x, options.s_noise * sigma_up);
    }
    if (!run.finish_step(i, sigma_next, sigma_next - sigma, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
