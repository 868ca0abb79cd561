// DPM-Solver: Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver: A Fast ODE Solver for Diffusion
// Probabilistic Model Sampling in Around 10 Steps", arXiv:2206.00927.
//
// The probability-flow ODE in the noise prediction eps and the half log-SNR lambda has the exact
// solution (eq. 3.4; in the scale-free variables x~ = x/alpha, sigma~ = e^-lambda, where alpha~ = 1)
//   x~_t = x~_s - sigma~_t \int_{lambda_s}^{lambda_t} e^{lambda - lambda_s}... eps(lambda) dlambda,
// and DPM-Solver-k expands eps to order k-1 around lambda_s (h = lambda_t - lambda_s > 0):
//   DPM-Solver-1 (eq. 3.7, = DDIM):  x~_t = x~_s - sigma~_t (e^h - 1) eps_s
//   DPM-Solver-2 (Algorithm 1):      u = x~_s - sigma~_{s1} (e^{r1 h} - 1) eps_s at lambda_{s1} = lambda_s + r1 h,
//                                    x~_t = x~_s - sigma~_t (e^h - 1) eps_s - sigma~_t (e^h - 1)/(2 r1) (eps(u) - eps_s)
//   DPM-Solver-3 (Algorithm 2):      r1 = 1/3, r2 = 2/3; the second intermediate value uses
//                                    (e^{r2 h} - 1)/(r2 h) - 1 = r2 h phi_2(r2 h), the last step
//                                    (e^h - 1)/h - 1 = h phi_2(h) (Algorithm 2, lines 4-6).
// Singlestep: every step starts afresh from one evaluation at its start (NFE = order per step).
//
// Also here: DPM-Solver-fast, the order-mixing schedule of Appendix C / the authors' code
// (dpm_solver_pytorch.py get_orders_and_timesteps_for_singlestep_solver, skip_type 'logSNR'; the
// same as k-diffusion's DPMSolver.dpm_solver_fast), and the adaptive DPM-Solver-12 / -23
// (Algorithm 4; dpm_solver_pytorch.py dpm_solver_adaptive, or k-diffusion's PID variant).
//
// A step whose end is sigma~ = 0 (lambda = +inf; a grid that appends zero) is always taken as
// DPM-Solver-1, whose limit there is the denoised value D(x~_s; sigma~_s): the authors' code's
// denoise_to_zero and k-diffusion's Euler step to 0. It costs one evaluation.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/exponential_integrator.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace diffode {

namespace detail {

// The noise prediction eps = (x~ - D(x~; sigma~)) / sigma~ (k-diffusion's DPMSolver.eps), one NFE.
template <class Run, class State>
void dpm_eps(Run& run, const State& x, double sigma, State& denoised, State& eps) {
  run.denoise(x, sigma, denoised);
  karras_derivative(x, sigma, denoised, eps);
}

// Evaluations one DPM-Solver step keeps, so that an adaptive pair (DPM-Solver-1 and -2, or -2 and
// -3 with the same r1) evaluates the shared points once (the reference's eps cache).
template <class State>
struct DpmStages {
  State eps_s, eps_1, eps_2, u, denoised;
};

// DPM-Solver-1 from lambda_s to lambda_t, given eps_s: out = x~_s - sigma~_t (e^h - 1) eps_s.
template <class State>
void dpm_solver_1_update(const State& x, double lambda_s, double lambda_t, const State& eps_s, State& out) {
  if (std::isinf(lambda_t)) {  // sigma~_t = 0: the limit sigma~_t (e^h - 1) -> sigma~_s, i.e. out = D_s
    StateOps<State>::update(out, x, -sigma_of_lambda(lambda_s), {{1.0, eps_s}});
    return;
  }
  const double h = lambda_t - lambda_s;
  StateOps<State>::update(out, x, -sigma_of_lambda(lambda_t) * std::expm1(h), {{1.0, eps_s}});
}

// DPM-Solver-2 (Algorithm 1) with intermediate point r1; evaluates eps_1 at lambda_s + r1 h.
template <class Run, class State>
void dpm_solver_2_update(Run& run, const State& x, double lambda_s, double lambda_t, double r1, DpmStages<State>& st,
                         State& out) {
  using Ops = StateOps<State>;
  const double h = lambda_t - lambda_s;
  const double lambda_1 = lambda_s + r1 * h, sigma_1 = sigma_of_lambda(lambda_1), sigma_t = sigma_of_lambda(lambda_t);
  Ops::update(st.u, x, -sigma_1 * std::expm1(r1 * h), {{1.0, st.eps_s}});
  dpm_eps(run, st.u, sigma_1, st.denoised, st.eps_1);
  const double c = -sigma_t * std::expm1(h);
  Ops::update(out, x, c, {{1.0 - 0.5 / r1, st.eps_s}, {0.5 / r1, st.eps_1}});
}

// DPM-Solver-3 (Algorithm 2) with intermediate points r1 < r2. With have_eps_1, st.eps_1 already
// holds eps at lambda_s + r1 h (from a DPM-Solver-2 step with the same r1).
template <class Run, class State>
void dpm_solver_3_update(Run& run, const State& x, double lambda_s, double lambda_t, double r1, double r2,
                         DpmStages<State>& st, bool have_eps_1, State& out) {
  using Ops = StateOps<State>;
  const double h = lambda_t - lambda_s;
  const double lambda_1 = lambda_s + r1 * h, lambda_2 = lambda_s + r2 * h;
  const double sigma_1 = sigma_of_lambda(lambda_1), sigma_2 = sigma_of_lambda(lambda_2), sigma_t = sigma_of_lambda(lambda_t);
  if (!have_eps_1) {
    Ops::update(st.u, x, -sigma_1 * std::expm1(r1 * h), {{1.0, st.eps_s}});
    dpm_eps(run, st.u, sigma_1, st.denoised, st.eps_1);
  }
  // u2 = x - sigma_2 (e^{r2 h} - 1) eps_s - sigma_2 (r2/r1) ((e^{r2 h} - 1)/(r2 h) - 1) (eps_1 - eps_s)
  const double a2 = sigma_2 * std::expm1(r2 * h), b2 = sigma_2 * (r2 / r1) * (r2 * h) * phi2(r2 * h);
  Ops::update(st.u, x, -1.0, {{a2 - b2, st.eps_s}, {b2, st.eps_1}});
  dpm_eps(run, st.u, sigma_2, st.denoised, st.eps_2);
  // x_t = x - sigma_t (e^h - 1) eps_s - (sigma_t / r2) ((e^h - 1)/h - 1) (eps_2 - eps_s)
  const double a = sigma_t * std::expm1(h), b = sigma_t / r2 * h * phi2(h);
  Ops::update(out, x, -1.0, {{a - b, st.eps_s}, {b, st.eps_2}});
}

}  // namespace detail

struct DpmSolverOptions {
  int order = 3;                // order of every step (1, 2 or 3): the authors' method='singlestep_fixed'
  std::vector<int> orders = {}; // one order per step, overriding `order` (DPM-Solver-fast's schedule)
  double r1_order2 = 0.5;       // DPM-Solver-2's intermediate point (Algorithm 1: r1 = 1/2)
  double r1_order3 = 1.0 / 3.0; // DPM-Solver-3's intermediate points (Algorithm 2: 1/3, 2/3)
  double r2_order3 = 2.0 / 3.0;
};

// Singlestep DPM-Solver on the grid `sigmas` (sigma~, decreasing; the last may be 0): step i is
// DPM-Solver-orders[i] (or -order), from sigmas[i] to sigmas[i + 1]; NFE = the sum of the orders
// (a step to sigma~ = 0 is first order: one NFE, see the file comment).
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpm_solver(const Model& model, State& x, std::span<const double> sigmas,
                                   const DpmSolverOptions& options = {},
                                   const std::type_identity_t<SigmaNoise<State>>* /*noise: deterministic*/ = nullptr,
                                   Observer&& observer = {}) {
  check_sigmas(sigmas);
  const std::size_t steps = sigmas.size() - 1;
  if (!options.orders.empty() && options.orders.size() != steps)
    throw std::invalid_argument(fmt::format("sample_dpm_solver: {} orders for {} steps", options.orders.size(), steps));
  SamplerRun run(model, observer);
  detail::DpmStages<State> st;
  State next;
  for (std::size_t i = 0; i < steps; ++i) {
    const int order = options.orders.empty() ? options.order : options.orders[i];
    if (order < 1 || order > 3) throw std::invalid_argument(fmt::format("sample_dpm_solver: order {} (1, 2 or 3)", order));
    const double lambda_s = lambda_of_sigma(sigmas[i]), lambda_t = lambda_of_sigma(sigmas[i + 1]);
    detail::dpm_eps(run, x, sigmas[i], st.denoised, st.eps_s);
    if (order == 1 || sigmas[i + 1] == 0.0)
      detail::dpm_solver_1_update(x, lambda_s, lambda_t, st.eps_s, next);
    else if (order == 2)
      detail::dpm_solver_2_update(run, x, lambda_s, lambda_t, options.r1_order2, st, next);
    else
      detail::dpm_solver_3_update(run, x, lambda_s, lambda_t, options.r1_order3, options.r2_order3, st, false, next);
    StateOps<State>::assign(x, next);
    if (!run.finish_step(i, sigmas[i + 1], sigmas[i + 1] - sigmas[i], x)) break;
  }
  return run.stats;
}

// DPM-Solver-fast (Lu et al. 2022, Appendix C): spend exactly `nfe` evaluations with steps of
// DPM-Solver-`order` on a grid uniform in lambda, ending with lower orders to use up the budget.
// order 3: K = nfe/3 + 1 steps: nfe % 3 == 0 -> [3,...,3,2,1], 1 -> [3,...,3,1], 2 -> [3,...,3,2];
// order 2: nfe even -> [2,...,2], odd -> [2,...,2,1]; order 1: [1,...,1].
// (dpm_solver_pytorch.py get_orders_and_timesteps_for_singlestep_solver, skip_type='logSNR';
// k-diffusion's dpm_solver_fast for order 3.)
struct DpmSolverFastSchedule {
  std::vector<double> sigmas;  // K + 1 outer points, uniform in lambda from sigma_max to sigma_min
  std::vector<int> orders;     // K step orders, summing to nfe
};

inline DpmSolverFastSchedule dpm_solver_fast_schedule(int nfe, double sigma_max, double sigma_min, int order = 3) {
  if (nfe < 1) throw std::invalid_argument("dpm_solver_fast_schedule: nfe must be >= 1");
  if (!(sigma_min > 0.0 && sigma_max > sigma_min))
    throw std::invalid_argument("dpm_solver_fast_schedule: need sigma_max > sigma_min > 0");
  std::vector<int> orders;
  if (order == 3) {
    const int k = nfe / 3 + 1;
    if (nfe % 3 == 0) {
      orders.assign(k - 2, 3);
      orders.insert(orders.end(), {2, 1});
    } else {
      orders.assign(k - 1, 3);
      orders.push_back(nfe % 3);
    }
  } else if (order == 2) {
    orders.assign(nfe / 2, 2);
    if (nfe % 2 == 1) orders.push_back(1);
  } else if (order == 1) {
    orders.assign(nfe, 1);
  } else {
    throw std::invalid_argument(fmt::format("dpm_solver_fast_schedule: order {} (1, 2 or 3)", order));
  }
  const std::size_t k = orders.size();
  const double lambda_0 = lambda_of_sigma(sigma_max), lambda_1 = lambda_of_sigma(sigma_min);
  std::vector<double> sigmas(k + 1);
  for (std::size_t i = 0; i <= k; ++i)
    sigmas[i] = sigma_of_lambda(lambda_0 + (lambda_1 - lambda_0) * static_cast<double>(i) / static_cast<double>(k));
  sigmas.front() = sigma_max;
  sigmas.back() = sigma_min;
  return {std::move(sigmas), std::move(orders)};
}

// DPM-Solver-fast from sigma_max to sigma_min (> 0) in exactly `nfe` evaluations (k-diffusion's
// sample_dpm_fast(model, x, sigma_min, sigma_max, nfe) with eta = 0).
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpm_solver_fast(const Model& model, State& x, double sigma_max, double sigma_min, int nfe,
                                        int order = 3, Observer&& observer = {}) {
  const auto schedule = dpm_solver_fast_schedule(nfe, sigma_max, sigma_min, order);
  return sample_dpm_solver(model, x, std::span<const double>(schedule.sigmas), DpmSolverOptions{.orders = schedule.orders},
                           nullptr, observer);
}

// ---------------------------------------------------------------------------------------------
// Adaptive DPM-Solver-12 and -23 (Lu et al. 2022, Algorithm 4 and Appendix C.1): each attempted
// step from lambda_s by h takes the lower-order solution x_low (DPM-Solver-1, resp. DPM-Solver-2
// with r1 = 1/3) and the higher-order x_high (DPM-Solver-2 with r1 = 1/2, resp. DPM-Solver-3 with
// r1 = 1/3, r2 = 2/3) sharing their evaluations, so an attempt costs `order` NFE. The error
//   E = || (x_high - x_low) / delta ||_RMS,  delta = max(atol, rtol max(|x_low|, |x_prev|))
// (x_prev: the previous accepted x_low; initially x) decides acceptance and the next h.
// Two controllers, as the two references do it:
//  - dpm_solver (the authors' dpm_solver_pytorch.py, the default): E is the largest per-sample
//    RMS over the batch; accept when E <= 1; h <- min(theta h E^(-1/order), lambda_end - lambda_s).
//  - k_diffusion (k-diffusion's DPMSolver.dpm_solver_adaptive): E is the RMS over the whole batch;
//    a PID controller (pcoeff, icoeff, dcoeff; Soderlind 2003) with the limiter 1 + atan(f - 1)
//    gives the factor f; accept when f >= accept_safety; h <- h f (the next step is cut at the end).
// The run ends when lambda is within lambda_tolerance of lambda_end. The authors' code measures
// that tolerance (t_err = 1e-5) in the process's own time t, which a sampler in sigma~ does not
// know; k-diffusion measures it in lambda, as here. Both land on lambda_end by the cut step, so
// the difference only shows if a step happens to end within the tolerance without the cut.
// The k_diffusion controller reproduces k-diffusion's sample_dpm_adaptive (eta = 0) to rounding,
// accept/reject decisions included (tests/data/reference/kdiff_dpm_adaptive_*). The dpm_solver
// controller is the authors' rule but deliberately not their numbers, for two reasons:
// dpm_solver_pytorch.py measures E on x_t = alpha x~ (with delta from |x_t|), where this sampler
// measures it on the scale-free x~, so under a VP process (alpha < 1) the same atol and rtol weigh
// the steps differently; and it rounds the factor theta E^(-1/order) to float32 (`.float()`), which
// moves every step by up to ~1e-7 relative. So no fixture holds that controller to the authors' code.
enum class DpmAdaptiveController { dpm_solver, k_diffusion };

struct DpmSolverAdaptiveOptions {
  int order = 3;            // 2: DPM-Solver-12, 3: DPM-Solver-23
  double h_init = 0.05;     // first step in lambda
  double atol = 0.0078;     // absolute tolerance (images in [-1, 1]: one 8-bit level, after Jolicoeur-Martineau et al. 2021)
  double rtol = 0.05;       // relative tolerance
  double theta = 0.9;       // safety factor (dpm_solver controller)
  double lambda_tolerance = 1e-5;  // stop when |lambda - lambda_end| <= this
  DpmAdaptiveController controller = DpmAdaptiveController::dpm_solver;
  // k_diffusion controller: PID coefficients, acceptance threshold on the factor, and the eps in 1/(E + eps)
  double pcoeff = 0.0, icoeff = 1.0, dcoeff = 0.0, accept_safety = 0.81, pid_eps = 1e-8;
  Index max_attempts = 100000;  // a run that needs more fails (stats.failed) instead of looping on
};

namespace detail {

// Per-sample RMS of (high - low) / max(atol, rtol max(|low|, |prev|)) (Algorithm 4, line 5). On
// the host: the accept decision is a host decision anyway.
inline PerSample dpm_adaptive_error(const Batch& low, const Batch& high, const Batch& prev, double atol, double rtol) {
  const Batch delta = (rtol * low.abs().max(prev.abs())).max(atol);
  return ((high - low) / delta).square().rowwise().mean().sqrt();
}

// k-diffusion's PIDStepSizeController: factor = limiter(prod of inverse errors ^ b_j).
class PidFactor {
 public:
  PidFactor(double pcoeff, double icoeff, double dcoeff, double order, double accept_safety, double eps)
      : b1_((pcoeff + icoeff + dcoeff) / order), b2_(-(pcoeff + 2.0 * dcoeff) / order), b3_(dcoeff / order),
        accept_safety_(accept_safety), eps_(eps) {}
  // Returns {factor, accept}; the error history advances only on acceptance.
  std::pair<double, bool> propose(double error) {
    const double inv = 1.0 / (error + eps_);
    if (!started_) {
      errs_[0] = errs_[1] = errs_[2] = inv;
      started_ = true;
    }
    errs_[0] = inv;
    double factor = std::pow(errs_[0], b1_) * std::pow(errs_[1], b2_) * std::pow(errs_[2], b3_);
    factor = 1.0 + std::atan(factor - 1.0);
    const bool accept = factor >= accept_safety_;
    if (accept) {
      errs_[2] = errs_[1];
      errs_[1] = errs_[0];
    }
    return {factor, accept};
  }

 private:
  double b1_, b2_, b3_, accept_safety_, eps_;
  double errs_[3] = {0, 0, 0};
  bool started_ = false;
};

}  // namespace detail

// Adaptive DPM-Solver from sigma_start down to sigma_end (> 0). stats.steps counts accepted steps,
// stats.rejected the rejected ones, stats.nfe = order * (steps + rejected). The observer sees each
// accepted step (t = the sigma~ reached).
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_dpm_solver_adaptive(const Model& model, State& x, double sigma_start, double sigma_end,
                                            const DpmSolverAdaptiveOptions& options = {}, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  if (!(sigma_end > 0.0 && sigma_start > sigma_end))
    throw std::invalid_argument("sample_dpm_solver_adaptive: need sigma_start > sigma_end > 0");
  if (options.order != 2 && options.order != 3)
    throw std::invalid_argument(fmt::format("sample_dpm_solver_adaptive: order {} (2: DPM-Solver-12, 3: DPM-Solver-23)", options.order));
  if (!(options.h_init > 0.0)) throw std::invalid_argument("sample_dpm_solver_adaptive: h_init must be positive");
  SamplerRun run(model, observer);
  const double lambda_end = lambda_of_sigma(sigma_end);
  double lambda_s = lambda_of_sigma(sigma_start), h = options.h_init;
  detail::PidFactor pid(options.pcoeff, options.icoeff, options.dcoeff, options.order, options.accept_safety, options.pid_eps);
  detail::DpmStages<State> st;
  State x_low, x_high, x_prev = Ops::clone(x);
  Index attempts = 0;
  while (std::abs(lambda_s - lambda_end) > options.lambda_tolerance) {
    if (++attempts > options.max_attempts) {
      run.stats.failed = true;
      run.stats.failure = fmt::format("sample_dpm_solver_adaptive: no arrival after {} attempts (at sigma~ = {})",
                                      options.max_attempts, sigma_of_lambda(lambda_s));
      break;
    }
    // The authors' controller already cut h at the end; k-diffusion's cuts the attempt here.
    const double lambda_t = std::min(lambda_s + h, lambda_end);
    detail::dpm_eps(run, x, sigma_of_lambda(lambda_s), st.denoised, st.eps_s);
    if (options.order == 2) {
      detail::dpm_solver_1_update(x, lambda_s, lambda_t, st.eps_s, x_low);
      detail::dpm_solver_2_update(run, x, lambda_s, lambda_t, 0.5, st, x_high);
    } else {
      detail::dpm_solver_2_update(run, x, lambda_s, lambda_t, 1.0 / 3.0, st, x_low);
      detail::dpm_solver_3_update(run, x, lambda_s, lambda_t, 1.0 / 3.0, 2.0 / 3.0, st, true, x_high);
    }
    const PerSample per_sample = detail::dpm_adaptive_error(Ops::to_host(x_low), Ops::to_host(x_high), Ops::to_host(x_prev),
                                                            options.atol, options.rtol);
    bool accept;
    double h_next;
    if (options.controller == DpmAdaptiveController::dpm_solver) {
      const double error = per_sample.size() > 0 ? per_sample.maxCoeff() : 0.0;
      accept = error <= 1.0;
      h_next = options.theta * h * std::pow(error, -1.0 / options.order);  // E = 0 gives +inf, cut below
    } else {
      const double error = std::sqrt(per_sample.square().mean());  // RMS over every entry (equal row lengths)
      const auto [factor, ok] = pid.propose(error);
      accept = ok;
      h_next = h * factor;
    }
    const double step = lambda_t - lambda_s;
    if (accept) {
      Ops::assign(x_prev, x_low);
      Ops::assign(x, x_high);
      lambda_s = lambda_t;
    } else {
      ++run.stats.rejected;
    }
    h = options.controller == DpmAdaptiveController::dpm_solver ? std::min(h_next, lambda_end - lambda_s) : h_next;
    if (accept && !run.finish_step(static_cast<std::size_t>(run.stats.steps), sigma_of_lambda(lambda_s),
                                   sigma_of_lambda(lambda_s) - sigma_of_lambda(lambda_s - step), x))
      break;
  }
  return run.stats;
}

}  // namespace diffode
