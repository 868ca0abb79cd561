// DPM-Solver++: Lu, Zhou, Bao, Chen, Li & Zhu 2022b, "DPM-Solver++: Fast Solver for Guided Sampling
// of Diffusion Probabilistic Models", arXiv:2211.01095.
//
// The probability-flow ODE in the data prediction D = x0_hat and lambda has the exact solution
// (eq. 9; in the scale-free variables x~ = x/alpha, sigma~ = e^-lambda, alpha~ = 1)
//   x~_t = (sigma~_t / sigma~_s) x~_s + sigma~_t \int_{lambda_s}^{lambda_t} e^{lambda} D(lambda) dlambda,
// and with h = lambda_t - lambda_s and the phi-functions of exponential_integrator.hpp,
//   \int ... = h phi_1(-h) D_s + h^2 phi_2(-h) D'_s + h^3 phi_3(-h) D''_s + ...   (times sigma~_t e^{lambda_t} = 1).
// So every update below reads x~_t = (sigma~_t/sigma~_s) x~_s + h [phi_1(-h) D + phi_2(-h) D1 + phi_3(-h) D2]
// with D1 ~ h D' and D2 ~ h^2 D'' finite differences of past (or intermediate) D, formed as the references form them:
//  - 2S  (Algorithm 1): singlestep, D at lambda_s and at lambda_s + r h (r = 1/2).
//  - 2M  (Algorithm 2): multistep, D1 = (D_s - D_prev) / r0 with r0 = h_prev / h, applied through the
//        "dpmsolver" (midpoint) form phi_1 (D + D1 / 2) of the authors' code and k-diffusion.
//  - 3M: multistep order 3, the authors' multistep_dpm_solver_third_update (data prediction).
//  - 2M SDE, 3M SDE: the SDE-DPM-Solver++ (Sec. 5 and Appendix of 2211.01095) of k-diffusion's
//    sample_dpmpp_2m_sde / sample_dpmpp_3m_sde: the same expansions over h_eta = (1 + eta) h with
//    fresh noise sigma~_t sqrt(1 - e^{-2 eta h}) z; eta = 1 is the reverse SDE, eta = 0 the ODE.
// Multistep methods start with lower orders (one step of order 1, then 2, ...) as their history
// fills. A step to sigma~ = 0 (lambda = +inf) is first order; its limit is the denoised value
// (k-diffusion's sample_dpmpp_2m and the SDE samplers' "denoising step").
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/exponential_integrator.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <cmath>
#include <span>
#include <stdexcept>

namespace diffode {

// ---------------------------------------------------------------------------------------------
// DPM-Solver++(2S), Algorithm 1, with k-diffusion's optional ancestral noise
// (sample_dpmpp_2s_ancestral; eta = 0 is the paper's deterministic 2S).
struct DpmSolverPP2SOptions {
  double r = 0.5;        // intermediate point lambda_s + r h (Algorithm 1: r1 = 1/2)
  double eta = 0.0;      // ancestral noise: each step goes to sigma_down, then adds sigma_up fresh noise
  double s_noise = 1.0;  // scale of that noise
};

// NFE: 2 per step; 1 for a step that ends at sigma~ = 0 (k-diffusion: an Euler step to 0 = D).
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpmpp_2s(const Model& model, State& x, std::span<const double> sigmas, const DpmSolverPP2SOptions& options = {},
                                 const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (options.eta != 0.0 && noise == nullptr) throw std::invalid_argument("sample_dpmpp_2s: eta > 0 needs a noise source");
  if (!(options.r > 0.0 && options.r <= 1.0)) throw std::invalid_argument("sample_dpmpp_2s: r must lie in (0, 1]");
  SamplerRun run(model, observer);
  State denoised, denoised_1, u;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    run.denoise(x, sigmas[i], denoised);
    const auto [sigma_down, sigma_up] = ancestral_step(sigmas[i], sigmas[i + 1], options.eta);
    if (sigma_down == 0.0) {
      Ops::assign(x, denoised);  // the first-order step to sigma~ = 0
    } else {
      const double lambda_s = lambda_of_sigma(sigmas[i]), lambda_t = lambda_of_sigma(sigma_down), h = lambda_t - lambda_s;
      const double lambda_1 = lambda_s + options.r * h, sigma_1 = sigma_of_lambda(lambda_1);
      // u = (sigma_1/sigma_s) x - (e^{-r h} - 1) D_s
      Ops::scale(u, sigma_1 / sigmas[i], x);
      Ops::update(u, u, options.r * h * phi1(-options.r * h), {{1.0, denoised}});
      run.denoise(u, sigma_1, denoised_1);
      // x_t = (sigma_t/sigma_s) x - (e^{-h} - 1) [(1 - 1/(2r)) D_s + 1/(2r) D_1]
      const double c = 0.5 / options.r;
      Ops::scale(x, sigma_down / sigmas[i], x);
      Ops::update(x, x, h * phi1(-h), {{1.0 - c, denoised}, {c, denoised_1}});
    }
    if (sigmas[i + 1] > 0.0 && sigma_up > 0.0) {
      noise->add(i, sigmas[i], sigmas[i + 1], x, options.s_noise * sigma_up);
    }
    if (!run.finish_step(i, sigmas[i + 1], sigmas[i + 1] - sigmas[i], x)) break;
  }
  return run.stats;
}

// ---------------------------------------------------------------------------------------------
// DPM-Solver++(2M) (Algorithm 2) and DPM-Solver++(3M) (the authors' multistep order 3).
//
// The last steps: k-diffusion lowers the order only for a step to sigma~ = 0 (which must be first
// order); the authors' code (sample(..., lower_order_final=True), the default there) also runs the
// last steps at orders min(order, steps left) when the grid has fewer than 10 steps, "a key to
// stabilizing the sampling ... with very few steps". lower_order_final_below chooses: 0 (the default
// here) is k-diffusion's rule, 10 the authors'. Steps are counted as the authors count them: a grid
// ending in 0 is their run on the positive part with denoise_to_zero=True, so the step to 0 counts
// neither toward the threshold nor among the last steps (N positive steps end with orders ..., 2, 1,
// then the step to 0).
//
// The third-order term. Taylor expansion of the exact solution gives
//   x~_t = (sigma~_t/sigma~_s) x~_s + h phi_1(-h) D + h^2 phi_2(-h) D' + h^3 phi_3(-h) D''.
// The references' 3M (dpm_solver_pytorch.py multistep_dpm_solver_third_update, likewise diffusers,
// and k-diffusion's sample_dpmpp_3m_sde) form D2 = (D1_0 - D1_1)/(r0 + r1), which estimates
// h^2 D''/2, not h^2 D'', and weight it by h phi_3(-h): the D'' term comes out half as large as it
// should, a local error h^3 D''/12, so the method is asymptotically second order (measured here:
// fitted slopes ~2.2 on 48..256 steps, falling toward 2; see dpm_solver_pp_test.cpp). `third_order`
// weights D2 by 2 h phi_3(-h), which is third order (measured slopes ~3.0). `reference` is the
// default, so that the samplers reproduce the references' numbers.
enum class DpmSolverPP3MForm { reference, third_order };

struct DpmSolverPPMultistepOptions {
  int lower_order_final_below = 0;
  DpmSolverPP3MForm form = DpmSolverPP3MForm::reference;  // 3M only
};

namespace detail {

// History of data predictions for the multistep methods: D at the last three lambdas.
template <class State>
struct DpmppHistory {
  State d0, d1, d2;           // D at lambda_0 (newest), lambda_1, lambda_2
  double lambda0 = 0, lambda1 = 0, lambda2 = 0;
  int size = 0;

  // Make room for a new newest value: d2 <- d1 <- d0 (swaps: no copies). A method of order <= 2
  // keeps `slots` = 2 values: d1 <- d0 only, and d2 is never allocated (one state less).
  void shift(int slots = 3) {
    if (slots >= 3) std::swap(d2, d1);
    std::swap(d1, d0);
    lambda2 = lambda1;
    lambda1 = lambda0;
    size = std::min(size + 1, std::min(slots, 3));
  }
};

// One multistep DPM-Solver++ update of order k in {1, 2, 3} from lambda_0 (x at sigma_s) to lambda_t.
// Order 2 is the authors' "dpmsolver" form; order 3 their multistep_dpm_solver_third_update:
//   D1_0 = (D_0 - D_1)/r0, D1_1 = (D_1 - D_2)/r1, D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1),
//   D2 = (D1_0 - D1_1)/(r0 + r1), x_t = ratio x + h [phi_1 D_0 + phi_2 D1 + phi_3 D2] (phis at -h).
template <class State>
void dpmpp_multistep_update(int order, DpmSolverPP3MForm form, const DpmppHistory<State>& hist, const State& x, double sigma_s,
                            double sigma_t, State& out) {
  using Ops = StateOps<State>;
  if (sigma_t == 0.0) {  // the limit of every order at lambda_t = +inf: the denoised value
    Ops::assign(out, hist.d0);
    return;
  }
  const double lambda_t = lambda_of_sigma(sigma_t), h = lambda_t - hist.lambda0;
  const double p1 = phi1(-h), ratio = sigma_t / sigma_s;
  // One pass over the state: out = ratio x + h sum_j c_j D_j.
  if (order == 1) {
    Ops::combine(out, {{ratio, x}, {h * p1, hist.d0}});
  } else if (order == 2) {
    const double r0 = (hist.lambda0 - hist.lambda1) / h, c = 0.5 / r0;  // D + D1_0 / 2
    Ops::combine(out, {{ratio, x}, {h * p1 * (1.0 + c), hist.d0}, {-h * p1 * c, hist.d1}});
  } else {
    const double r0 = (hist.lambda0 - hist.lambda1) / h, r1 = (hist.lambda1 - hist.lambda2) / h, s = r0 + r1;
    const double p2 = phi2(-h), p3 = (form == DpmSolverPP3MForm::third_order ? 2.0 : 1.0) * phi3(-h);
    // Coefficients of D1_0 and D1_1 in phi_2 D1 + phi_3 D2.
    const double a0 = p2 * (1.0 + r0 / s) + p3 / s, a1 = -(p2 * r0 / s + p3 / s);
    // D1_0 = (D_0 - D_1)/r0, D1_1 = (D_1 - D_2)/r1, expanded over D_0, D_1, D_2.
    Ops::combine(out, {{ratio, x}, {h * (p1 + a0 / r0), hist.d0}, {h * (-a0 / r0 + a1 / r1), hist.d1}, {h * (-a1 / r1), hist.d2}});
  }
}

template <class State, class Model, class Observer>
IntegrationStats sample_dpmpp_multistep(int max_order, const Model& model, State& x,
                                        std::span<const double> sigmas, const DpmSolverPPMultistepOptions& options,
                                        Observer& observer) {
  check_sigmas(sigmas);
  SamplerRun run(model, observer);
  DpmppHistory<State> hist;
  const std::size_t steps = sigmas.size() - 1;
  // The authors' rule counts the steps to a positive sigma~ only: a last step to sigma~ = 0 is their
  // denoise_to_zero, taken after those steps (and first order whatever the rule).
  const std::size_t positive = sigmas.back() == 0.0 ? steps - 1 : steps;
  const bool lower_final = static_cast<long>(positive) < options.lower_order_final_below;
  for (std::size_t i = 0; i < steps; ++i) {
    hist.shift(max_order);
    run.denoise(x, sigmas[i], hist.d0);
    hist.lambda0 = lambda_of_sigma(sigmas[i]);
    int order = std::min(max_order, hist.size);  // warm-up: as many values as the history holds
    if (lower_final && i < positive) order = std::min(order, static_cast<int>(positive - i));
    // In place: combine() reads each element before it writes it, so x needs no second buffer.
    dpmpp_multistep_update(order, options.form, hist, x, sigmas[i], sigmas[i + 1], x);
    if (!run.finish_step(i, sigmas[i + 1], sigmas[i + 1] - sigmas[i], x)) break;
  }
  return run.stats;
}

}  // namespace detail

// DPM-Solver++(2M): one NFE per step. `noise` is unused (deterministic); it keeps the samplers' common signature.
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpmpp_2m(const Model& model, State& x, std::span<const double> sigmas,
                                 const DpmSolverPPMultistepOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* /*noise*/ = nullptr,
                                 Observer&& observer = {}) {
  return detail::sample_dpmpp_multistep(2, model, x, sigmas, options, observer);
}

// DPM-Solver++(3M): one NFE per step; first step order 1, second order 2 (the "dpmsolver" form).
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpmpp_3m(const Model& model, State& x, std::span<const double> sigmas,
                                 const DpmSolverPPMultistepOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* /*noise*/ = nullptr,
                                 Observer&& observer = {}) {
  return detail::sample_dpmpp_multistep(3, model, x, sigmas, options, observer);
}

// ---------------------------------------------------------------------------------------------
// DPM-Solver++(2M) SDE and (3M) SDE (k-diffusion's sample_dpmpp_2m_sde / sample_dpmpp_3m_sde).
// With h_eta = (1 + eta) h, one step is
//   x_t = (sigma_t/sigma_s) e^{-eta h} x + h_eta phi_1(-h_eta) D_0 + [correction] + sigma_t sqrt(1 - e^{-2 eta h}) s_noise z
// 2M SDE correction, with r = h_prev / h and D1 = (D_0 - D_1)/r:
//   'midpoint': h_eta phi_1(-h_eta) D1 / 2;  'heun': h_eta phi_2(-h_eta) D1.
// 3M SDE correction: h_eta [phi_2(-h_eta) D1 + phi_3(-h_eta) D2] with D1, D2 as in 3M (the r's are
// ratios of h, not h_eta); its second step uses 'heun''s h_eta phi_2 D1 (k-diffusion), so 3M SDE
// with eta = 0 differs from 3M (whose second step is the midpoint form) at that one step.
// The noise of step i, sigma_s -> sigma_t, is noise->add(i, sigma_s, sigma_t, x, .); a step to sigma~ = 0 returns D.
enum class DpmSolverPPSdeType { midpoint, heun };

struct DpmSolverPPSdeOptions {
  double eta = 1.0;      // 1: the reverse SDE; 0: the probability-flow ODE (no noise needed)
  double s_noise = 1.0;  // scale of the added noise
  DpmSolverPPSdeType solver_type = DpmSolverPPSdeType::midpoint;  // 2M SDE only
  DpmSolverPP3MForm form = DpmSolverPP3MForm::reference;          // 3M SDE only (see DpmSolverPP3MForm)
};

namespace detail {

template <int MaxOrder, class State, class Model, class Observer>
IntegrationStats sample_dpmpp_sde_multistep(const char* name, const Model& model, State& x, std::span<const double> sigmas,
                                            const DpmSolverPPSdeOptions& options, const std::type_identity_t<SigmaNoise<State>>* noise,
                                            Observer& observer) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (options.eta != 0.0 && noise == nullptr) throw std::invalid_argument(fmt::format("{}: eta > 0 needs a noise source", name));
  if (options.eta < 0.0) throw std::invalid_argument(fmt::format("{}: eta must be >= 0", name));
  SamplerRun run(model, observer);
  DpmppHistory<State> hist;
  double h1 = 0.0, h2 = 0.0;  // the previous two step sizes in lambda
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    hist.shift(MaxOrder);
    run.denoise(x, sigmas[i], hist.d0);
    if (sigmas[i + 1] == 0.0) {
      Ops::assign(x, hist.d0);  // the denoising step
    } else {
      const double h = lambda_of_sigma(sigmas[i + 1]) - lambda_of_sigma(sigmas[i]), h_eta = (1.0 + options.eta) * h;
      const double p1 = phi1(-h_eta), p2 = phi2(-h_eta);
      // x <- (sigma_t/sigma_s) e^{-eta h} x + h_eta [...]: the scale and the update in one pass.
      const double ratio = sigmas[i + 1] / sigmas[i] * std::exp(-options.eta * h);
      const int order = std::min(MaxOrder, hist.size);
      if (order == 1) {
        scale_then_update(x, ratio, h_eta * p1, {{1.0, hist.d0}});
      } else if (order == 2) {
        const double r = h1 / h;  // D1 = (D_0 - D_1)/r
        const double c = (MaxOrder == 2 && options.solver_type == DpmSolverPPSdeType::midpoint ? 0.5 * p1 : p2) / r;
        scale_then_update(x, ratio, h_eta, {{p1 + c, hist.d0}, {-c, hist.d1}});
      } else {
        const double r0 = h1 / h, r1 = h2 / h, s = r0 + r1;
        const double p3 = (options.form == DpmSolverPP3MForm::third_order ? 2.0 : 1.0) * phi3(-h_eta);
        const double a0 = p2 * (1.0 + r0 / s) + p3 / s, a1 = -(p2 * r0 / s + p3 / s);
        scale_then_update(x, ratio, h_eta, {{p1 + a0 / r0, hist.d0}, {-a0 / r0 + a1 / r1, hist.d1}, {-a1 / r1, hist.d2}});
      }
      if (options.eta != 0.0) {
        noise->add(i, sigmas[i], sigmas[i + 1], x, sigmas[i + 1] * std::sqrt(-std::expm1(-2.0 * options.eta * h)) * options.s_noise);
      }
      h2 = h1;
      h1 = h;
    }
    if (!run.finish_step(i, sigmas[i + 1], sigmas[i + 1] - sigmas[i], x)) break;
  }
  return run.stats;
}

}  // namespace detail

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpmpp_2m_sde(const Model& model, State& x, std::span<const double> sigmas,
                                     const DpmSolverPPSdeOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* noise = nullptr,
                                     Observer&& observer = {}) {
  return detail::sample_dpmpp_sde_multistep<2>("sample_dpmpp_2m_sde", model, x, sigmas, options, noise, observer);
}

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpmpp_3m_sde(const Model& model, State& x, std::span<const double> sigmas,
                                     const DpmSolverPPSdeOptions& options = {}, const std::type_identity_t<SigmaNoise<State>>* noise = nullptr,
                                     Observer&& observer = {}) {
  return detail::sample_dpmpp_sde_multistep<3>("sample_dpmpp_3m_sde", model, x, sigmas, options, noise, observer);
}

}  // namespace diffode
