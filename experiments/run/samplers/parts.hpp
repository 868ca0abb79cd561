// The sampler registry's parts, one file per family (karras.cpp, exponential.cpp, score_sde.cpp,
// generic.cpp), and the option declarations several families share.
#pragma once

#include "experiments/run/sampler_registry.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/diffusion/euler_ancestral.hpp"

#include <memory>
#include <vector>

namespace diffode::samplers {

using Registry = std::vector<SamplerEntry>;

void add_karras_family(Registry& r);       // euler, heun, dpm_2, ancestral variants, lms
void add_exponential_family(Registry& r);  // ddim, ddpm, dpm_solver (+ fast, adaptive), dpmpp_*, unipc, ipndm
void add_score_sde_family(Registry& r);    // predictor-corrector, annealed Langevin dynamics
void add_generic_family(Registry& r);      // ODE steppers on the PF-ODE, SDE steppers on the reverse SDE
void add_odeint_family(Registry& r);       // Boost.Odeint on the PF-ODE

// Karras et al.'s churn (s_churn, s_tmin, s_tmax, s_noise) and the ancestral split (eta, s_noise).
std::vector<KeySpec> churn_keys();
ChurnOptions read_churn(ConfigTable& o);
std::vector<KeySpec> ancestral_keys(double eta_default);
AncestralOptions read_ancestral(ConfigTable& o);

// The sigma-path noise of one block (k-diffusion's BrownianTreeNoiseSampler convention), or none.
std::unique_ptr<SigmaNoise<Batch>> sigma_noise(const SamplerContext& c, const Batch& x, bool stochastic);

// A runner for a sampler of the form f(denoiser, x~, sigmas, options, noise, observer).
template <class Options, class F>
SamplerRunner grid_runner(Options options, bool stochastic, F f) {
  return [options, stochastic, f](const SamplerContext& c, Batch& x) {
    const auto noise = sigma_noise(c, x, stochastic);
    return f(c.denoiser, x, c.sigmas, options, noise.get(), c.observer);
  };
}

// One sampler function template as a callable object for grid_runner.
#define DIFFODE_SAMPLER_FN(fn)                                                                              \
  [](const ScaledDenoiser<Batch>& m, Batch& x, std::span<const double> s, const auto& o, const SigmaNoise<Batch>* n, \
     SamplerObserver& obs) { return fn(m, x, s, o, n, obs); }

inline TableSchema options_schema(std::string sampler, std::vector<KeySpec> keys) {
  return TableSchema{"sampler (" + sampler + ")", "", std::move(keys)};
}

}  // namespace diffode::samplers
