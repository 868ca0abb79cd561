// DDPM ancestral sampling: Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models",
// arXiv:2006.11239, Algorithm 2, for any grid: each step draws x_{s} from the forward posterior
// q(x_s | x_t, x0 = D(x_t)) (eq. 6-7) for the pair of levels (t, s) of the grid.
//
// Written in sigma~ (x~ = x / alpha, the VP process with the same lambda: abar = 1/(1 + sigma~^2)).
// There x~_t = x~_s + sqrt(sigma_t^2 - sigma_s^2) n, so the posterior is Gaussian with
//   mean     = D + (sigma_s^2 / sigma_t^2)(x~_t - D)          (eq. 7's mu~, divided by sqrt(abar_s))
//   variance = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2   (beta~_t / abar_s, "small")
// and Algorithm 2's mean 1/sqrt(alpha_t)(x_t - beta_t/sqrt(1 - abar_t) eps) is this same mean. The
// "large" choice sigma_t^2 = beta_t (Sec. 3.2) is, in these variables, variance beta_t / abar_s =
// (sigma_t^2 - sigma_s^2)(1 + sigma_s^2)/(1 + sigma_t^2). Both give p_0 as the steps shrink (they
// differ by O(beta^2) per step). As in Algorithm 2 (z = 0 at t = 1), a step to sigma_s = 0 adds no
// noise and returns D. With the small variance this sampler equals DDIM with eta = 1 (ddim.hpp).
// One evaluation per step.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <cmath>
#include <type_traits>
#include <stdexcept>

namespace diffode {

enum class DDPMVariance { small, large };  // posterior beta~_t (default), or beta_t

struct DDPMOptions {
  DDPMVariance variance = DDPMVariance::small;
};

// The posterior variance of a step sigma_t -> sigma_s in scale-free variables.
inline double ddpm_step_variance(double sigma_t, double sigma_s, DDPMVariance variance) {
  const double t2 = sigma_t * sigma_t, s2 = sigma_s * sigma_s;
  if (sigma_s == 0.0) return 0.0;
  return variance == DDPMVariance::small ? s2 * (t2 - s2) / t2 : (t2 - s2) * (1.0 + s2) / (1.0 + t2);
}

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_ddpm(const Model& model, State& x, std::span<const double> sigmas, const DDPMOptions& options = {},
                             const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (noise == nullptr) throw std::invalid_argument("sample_ddpm: needs a noise source");
  SamplerRun run(model, observer);
  State denoised;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1];
    run.denoise(x, sigma, denoised);
    // Posterior mean D + (sigma_s^2/sigma_t^2)(x~ - D).
    const double ratio = (sigma_next * sigma_next) / (sigma * sigma);
    Ops::update(x, denoised, ratio, {{1.0, x}, {-1.0, denoised}});
    const double variance = ddpm_step_variance(sigma, sigma_next, options.variance);
    if (variance > 0.0) {
      noise->add(i, sigma, sigma_next, x, std::sqrt(variance));
    }
    if (!run.finish_step(i, sigma_next, sigma_next - sigma, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
