// The samplers' view of a model: Karras et al.'s denoiser in scale-free variables (Karras et al.
// 2022, arXiv:2206.00364, Sec. 2 and Table 1, with s(t) = alpha(t)).
//
// Any process x_t = alpha x0 + sigma eps becomes, in x~ = x / alpha, the variance-exploding process
// x~ = x0 + sigma~ eps with sigma~ = sigma / alpha = exp(-lambda), whose probability-flow ODE is
// dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ with D = E[x0 | x]. Every sampler of the Karras
// family (and DPM-Solver, UniPC, DDIM, which are exponential integrators in lambda = -log sigma~)
// is written once in these variables and so works with every process: the process only tells
// which time t a sigma~ is, and the predictor is asked at x = alpha(t) x~, levels (alpha, sigma).
#pragma once

#include "core/state.hpp"
#include "models/predictor.hpp"
#include "problems/process.hpp"

#include <concepts>

namespace diffode {

// What a sampler needs of a model: denoised = D(x; sigma) for the whole batch at one sigma, or at
// one sigma per sample (adaptive and per-sample solvers).
template <class M, class State>
concept DenoiserFor = requires(const M& model, const State& x, double sigma,
                               const typename StateOps<State>::Scalars& sigmas, State& out) {
  model(x, sigma, out);
  model(x, sigmas, out);
};

// alpha at the scale-free level sigma~ (x = alpha x~); 1 at sigma~ = 0, where x~ = x0 is the
// result itself (a run that steps to sigma~ = 0 returns the data).
inline double alpha_at_scaled_sigma(const Process& process, double sigma) {
  return sigma == 0.0 ? 1.0 : process.alpha(process.t_of_scaled_sigma(sigma));
}

template <class State>
class ScaledDenoiser {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  ScaledDenoiser(const Process& process, const Predictor<State>& predictor) : process_(process), predictor_(predictor) {}

  const Process& process() const { return process_; }
  const Predictor<State>& predictor() const { return predictor_; }
  // Model evaluations so far (the predictor's count).
  Index nfe() const { return predictor_.nfe(); }

  // All samples at the scale-free level sigma~ = `sigma`.
  void operator()(const State& x_scaled, double sigma, State& denoised) const {
    if (process_.unit_alpha()) {  // x = x~ and sigma = sigma~: no time needed, any level allowed
      predictor_.predict_as(Parameterization::x0, x_scaled, {Ops::fill(x_scaled, 1.0), Ops::fill(x_scaled, sigma)}, denoised);
      return;
    }
    const double t = process_.t_of_scaled_sigma(sigma);
    const double alpha = process_.alpha(t);
    const Scalars alphas = Ops::fill(x_scaled, alpha), sigmas = Ops::fill(x_scaled, process_.sigma(t));
    if (alpha == 1.0) {
      predictor_.predict_as(Parameterization::x0, x_scaled, {alphas, sigmas}, denoised);
    } else {
      Ops::scale(x_, alpha, x_scaled);
      predictor_.predict_as(Parameterization::x0, x_, {alphas, sigmas}, denoised);
    }
  }

  // Each sample at its own sigma~.
  void operator()(const State& x_scaled, const Scalars& sigma, State& denoised) const {
    if (process_.unit_alpha()) {
      predictor_.predict_as(Parameterization::x0, x_scaled, {Ops::fill(x_scaled, 1.0), sigma}, denoised);
      return;
    }
    Scalars alphas = sigma, sigmas = sigma;
    for (Index n = 0; n < static_cast<Index>(sigma.size()); ++n) {
      const double t = process_.t_of_scaled_sigma(sigma[n]);
      alphas[n] = process_.alpha(t);
      sigmas[n] = process_.sigma(t);
    }
    Ops::scale_rows(x_, alphas, x_scaled);
    predictor_.predict_as(Parameterization::x0, x_, {alphas, sigmas}, denoised);
  }

  // x = alpha(t) x~ at the end of sampling (sigma~ = 0 means t = 0 of a process with alpha(0) = 1).
  double alpha_at(double sigma) const { return alpha_at_scaled_sigma(process_, sigma); }

 private:
  const Process& process_;
  const Predictor<State>& predictor_;
  mutable State x_;  // alpha x~, reused across calls
};

}  // namespace diffode
