// Euler sampler with optional churn: Karras et al. 2022, arXiv:2206.00364, Algorithm 2 with the
// Heun correction left out (k-diffusion's sample_euler). Deterministic when s_churn = 0: Euler's
// method on dx/dsigma = (x - D(x; sigma)) / sigma. Order 1, one evaluation per step.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace diffode {

struct ChurnOptions {
  double s_churn = 0.0;  // total churn over the grid; 0 = deterministic
  double s_tmin = 0.0;   // churn only where s_tmin <= sigma <= s_tmax
  double s_tmax = std::numeric_limits<double>::infinity();
  double s_noise = 1.0;  // scale of the added noise
};

// gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0 (Algorithm 2, line 4).
inline double churn_gamma(const ChurnOptions& churn, double sigma, std::size_t steps) {
  if (churn.s_churn <= 0.0 || sigma < churn.s_tmin || sigma > churn.s_tmax) return 0.0;
  return std::min(churn.s_churn / static_cast<double>(steps), std::sqrt(2.0) - 1.0);
}

// Algorithm 2, lines 4-6: raise the noise level of x from sigmas[i] to sigma_hat = (1 + gamma_i)
// sigmas[i] by adding fresh noise of variance s_noise^2 (sigma_hat^2 - sigmas[i]^2); returns
// sigma_hat (= sigmas[i] where gamma_i = 0, and then no noise is drawn). The noise is the path's
// over the step [sigmas[i], sigmas[i+1]], as sample_euler draws it.
template <class State>
double churn_noise_level(const ChurnOptions& churn, std::span<const double> sigmas, std::size_t i,
                         const std::type_identity_t<SigmaNoise<State>>* noise, State& x, State& eps) {
  const double gamma = churn_gamma(churn, sigmas[i], sigmas.size() - 1);
  const double sigma_hat = sigmas[i] * (gamma + 1.0);
  if (gamma > 0.0) {
    noise->normal(i, sigmas[i], sigmas[i + 1], x, eps);
    StateOps<State>::update(x, x, churn.s_noise * std::sqrt(sigma_hat * sigma_hat - sigmas[i] * sigmas[i]), {{1.0, eps}});
  }
  return sigma_hat;
}

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_euler(const Model& model, State& x, std::span<const double> sigmas, const ChurnOptions& churn = {},
                              const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (churn.s_churn > 0.0 && noise == nullptr) throw std::invalid_argument("sample_euler: churn needs a noise source");
  SamplerRun run(model, observer);
  State denoised, d, eps;
  const std::size_t steps = sigmas.size() - 1;
  for (std::size_t i = 0; i < steps; ++i) {
    const double sigma_hat = churn_noise_level(churn, sigmas, i, noise, x, eps);
    run.denoise(x, sigma_hat, denoised);
    karras_derivative(x, sigma_hat, denoised, d);
    const double h = sigmas[i + 1] - sigma_hat;
    Ops::update(x, x, h, {{1.0, d}});
    if (!run.finish_step(i, sigmas[i + 1], h, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
