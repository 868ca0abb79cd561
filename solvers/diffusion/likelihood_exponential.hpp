// An adaptive exponential integrator for the likelihood's augmented probability-flow ODE in the
// half log-SNR lambda = log(alpha / sigma): the linear part of the flow integrated exactly, the
// model-dependent part by quadrature, as DPM-Solver and DPM-Solver++ do for sampling.
//   - Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
//     Model Sampling in Around 10 Steps", arXiv:2206.00927: the exact solution in lambda (eq. 3.4),
//     DPM-Solver-2 and -3 (Algorithms 1 and 2, r1 = 1/3, r2 = 2/3) and the adaptive pairs
//     DPM-Solver-12 and -23 (section 4.2, Algorithms 4 and 5: the lower order's result as the
//     embedded estimate, sharing the higher order's evaluations).
//   - Lu, Zhou, Bao, Chen, Li & Zhu 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of
//     Diffusion Probabilistic Models", arXiv:2211.01095: the data-prediction form (eq. 9, section 3),
//     used here.
//
// The formulation. With the denoiser x0(x, lambda) = (x + sigma^2 s) / alpha (Tweedie), the
// probability flow in lambda reads
//     dx/dlambda = (dlog sigma/dlambda) x + alpha x0(x, lambda),
// so y = x / sigma obeys dy/dlambda = e^lambda x0 exactly (e^lambda sigma = alpha). Its divergence,
// the log-density's integrand, splits the same way:
//     div_x (dx/dlambda) = D dlog sigma/dlambda + alpha div_x x0 = D dlog sigma/dlambda + G,
//     G = alpha div_x x0 = D + sigma^2 div s   (the divergence of y's drift with respect to y),
// so the integral l of the divergence obeys l(lambda_t) = l(lambda_s) + D log(sigma_t / sigma_s)
// + int G dlambda: the linear term's share is exact, only G is quadratured. With Hutchinson's
// probes each column's linear weight is |e_k|^2 instead of D (e^T (c I) e = c |e|^2); with the
// Gaussian control variate or Hutch++ (likelihood.hpp) the problem says which weights its columns
// carry (linear_weights()). The problem gives the augmented "data prediction" N = [x0, G_1..G_C]
// (data_prediction()).
//
// A step from lambda_s by H (H < 0: the likelihood runs from data to noise) approximates N on
// [lambda_s, lambda_s + H] by N_s + tau N'_s with N'_s from a stage at lambda_s + c H, and integrates
// the weights exactly: x against e^lambda (DPM-Solver++'s phi-functions, exponential_integrator.hpp),
// G against 1 (the same quadrature with phi_k(0) = 1 / k!). For a node fraction c and a difference
// Delta ~ c H N'_s:
//     x_c = (sigma_c / sigma_s) x_s + alpha_c c H [phi_1(-c H) x0_s + phi_2(-c H) Delta_x],
//     l_c = l_s + w log(sigma_c / sigma_s) + c H [G_s + Delta_G / 2].
// The pairs:
//   12  stage at c = 1/2 (first order from s); the result is DPM-Solver-2 (Delta = (N_{1/2} - N_s)
//       / (1/2)), the embedded estimate DPM-Solver-1 (Delta = 0). Order 2, estimate of order 1.
//   23  stages at 1/3 (first order) and 2/3 (Delta = 2 (N_{1/3} - N_s)); the result is DPM-Solver-3
//       (Delta = (N_{2/3} - N_s) / (2/3)), the embedded estimate DPM-Solver-2 with r1 = 1/3
//       (Delta = (N_{1/3} - N_s) / (1/3)). Order 3, estimate of order 2. With G's weight 1 it is
//       Heun's third-order method, which DPM-Solver-3 reduces to at phi_k = 1/k!.
// The higher order's result is propagated (local extrapolation, as Lu et al.'s Algorithms 4-5), the
// error is their difference, measured in the same per-point RMS norm over [x, l] as the
// Runge-Kutta pairs (solvers/adaptive.hpp's integrate_adaptive, its PI controller, with q = the
// embedded order + 1), not Lu et al.'s own controller: the comparison is of the formulations.
//
// The solver's variable is the likelihood's log_sigma time u = -lambda (increasing from data to
// noise), so the driver, the starting-step heuristic and the drift of the problem are those of the
// Runge-Kutta solve in u. Cost: the first stage N_s of a step is evaluated only when the point moved
// (a rejected step keeps it): per point, 3 at the start (the starting-step heuristic's 2 drifts and
// the first N_s), then Order - 1 per attempt and 1 per accepted step but the last.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"
#include "problems/process.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/diffusion/exponential_integrator.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>

namespace diffode {

namespace detail {

// The problem behind a Counted wrapper (integrate_adaptive counts drift calls through it): the data
// prediction is one evaluation of the model, counted the same way.
template <class P>
const P& uncounted(const P& p) {
  return p;
}
template <class P>
const P& uncounted(const Counted<P>& p) {
  return p.problem;
}
template <class P>
void count_evaluation(const P&) {}
template <class P>
void count_evaluation(const Counted<P>& p) {
  ++*p.nfe;
}

}  // namespace detail

// The adaptive exponential pair (Order 2: DPM-Solver-12; Order 3: DPM-Solver-23) on N x (D + C)
// Batches, for a problem with dims(), linear_weights(n) (N x C) and data_prediction(z, u, out) in the
// variable u = -lambda, e.g. likelihood.hpp's AugmentedProbabilityFlow with time = log_sigma.
template <int Order>
class ExponentialLikelihoodPair {
  static_assert(Order == 2 || Order == 3, "ExponentialLikelihoodPair: the pairs are 12 and 23");

 public:
  static constexpr StepperTraits traits{
      .name = Order == 3 ? "exponential23" : "exponential12", .order = Order, .adaptive = true, .evaluations_per_step = Order};
  // The controller's q: min(order, embedded order) + 1.
  static constexpr int error_order = Order;
  using Scalars = PerSample;

  explicit ExponentialLikelihoodPair(const Process& process) : process_(&process) {}

  // A point's evaluations for its accepted and rejected steps (module comment).
  static Index point_evaluations(Index accepted, Index rejected, bool initial_step_given) {
    return (initial_step_given ? 1 : 3) + (Order - 1) * (accepted + rejected) + std::max<Index>(accepted - 1, 0);
  }

  void reset() { valid_.resize(0); }

  // One trial step of each row from u by h (per row; h = 0 leaves a row as it is).
  template <class Problem>
  void attempt(const Problem& problem, const PerSample& u, const PerSample& h, const Batch& z, Batch& z_new, Batch& error) {
    const auto& p = detail::uncounted(problem);
    const Index n = z.rows(), d = p.dims(), c = z.cols() - d;
    if (valid_.size() != n || !valid_.all()) {
      detail::count_evaluation(problem);
      p.data_prediction(z, u, n_[0]);
      valid_ = HostMask::Constant(n, true);
    }
    const Batch w = p.linear_weights(n);
    const PerSample lambda_s = -u, big_h = -h;
    const PerSample sigma_s = sigma_at(lambda_s);
    // Stages: c1 = 1/2 (12) or 1/3, 2/3 (23).
    constexpr double c1 = Order == 3 ? 1.0 / 3.0 : 0.5, c2 = 2.0 / 3.0;
    advance(z, sigma_s, lambda_s, big_h, c1, w, nullptr, 0.0, stage_);
    detail::count_evaluation(problem);
    p.data_prediction(stage_, -(lambda_s + c1 * big_h), n_[1]);
    const Index last = Order == 3 ? 2 : 1;
    const double c_last = Order == 3 ? c2 : c1;
    if constexpr (Order == 3) {
      difference_ = (n_[1] - n_[0]) * (c2 / c1);
      advance(z, sigma_s, lambda_s, big_h, c2, w, &difference_, 1.0, stage_);
      detail::count_evaluation(problem);
      p.data_prediction(stage_, -(lambda_s + c2 * big_h), n_[2]);
    }
    difference_ = (n_[last] - n_[0]) / c_last;
    advance(z, sigma_s, lambda_s, big_h, 1.0, w, &difference_, 1.0, z_new);
    // The embedded result differs by its Delta: 0 (12) or (N_{1/3} - N_s) / (1/3) (23).
    if constexpr (Order == 3) difference_ -= (n_[1] - n_[0]) / c1;
    error.resize(n, d + c);
    const PerSample lambda_t = lambda_s + big_h;
    const PerSample alpha_t = alpha_at(lambda_t);
    for (Index i = 0; i < n; ++i) {
      const double hx = alpha_t[i] * big_h[i] * phi2(-big_h[i]);
      error.row(i).head(d) = hx * difference_.row(i).head(d);
      error.row(i).tail(c) = 0.5 * big_h[i] * difference_.row(i).tail(c);
    }
  }

  // Rows that moved need their first stage anew.
  template <class Mask>
  void accept(const Mask& taken) {
    for (Index i = 0; i < valid_.size(); ++i)
      if (taken[i]) valid_[i] = false;
  }

  // A fixed step (integrate() on a grid in u): the attempt, taken by every row.
  template <class Problem>
  void step(const Problem& problem, double u, double h, Batch& z) {
    const Index n = z.rows();
    valid_.resize(0);  // a grid step may start anywhere: the first stage anew
    attempt(problem, PerSample::Constant(n, u), PerSample::Constant(n, h), z, next_, scratch_error_);
    std::swap(z, next_);
    valid_.resize(0);
  }

 private:
  PerSample sigma_at(const PerSample& lambda) const {
    return lambda.unaryExpr([this](double l) { return process_->sigma(process_->t_of_lambda(l)); });
  }
  PerSample alpha_at(const PerSample& lambda) const {
    return lambda.unaryExpr([this](double l) { return process_->alpha(process_->t_of_lambda(l)); });
  }

  // out = the state at lambda_s + c H from z with the first stage n_[0] and, if given, the
  // difference Delta (module comment): x by the phi-functions, the integrals with weight 1.
  void advance(const Batch& z, const PerSample& sigma_s, const PerSample& lambda_s, const PerSample& big_h, double c,
               const Batch& w, const Batch* delta, double delta_scale, Batch& out) const {
    const Index n = z.rows(), cols = z.cols(), d = cols - w.cols();
    const PerSample lambda_c = lambda_s + c * big_h;
    const PerSample sigma_c = sigma_at(lambda_c), alpha_c = alpha_at(lambda_c);
    out.resize(n, cols);
    for (Index i = 0; i < n; ++i) {
      const double hc = c * big_h[i];
      const double ratio = sigma_c[i] / sigma_s[i], log_ratio = std::log(sigma_c[i]) - std::log(sigma_s[i]);
      const double a1 = alpha_c[i] * hc * phi1(-hc), a2 = alpha_c[i] * hc * phi2(-hc) * delta_scale;
      out.row(i).head(d) = ratio * z.row(i).head(d) + a1 * n_[0].row(i).head(d);
      out.row(i).tail(cols - d) = z.row(i).tail(cols - d) + log_ratio * w.row(i) + hc * n_[0].row(i).tail(cols - d);
      if (delta != nullptr) {
        out.row(i).head(d) += a2 * delta->row(i).head(d);
        out.row(i).tail(cols - d) += (0.5 * hc * delta_scale) * delta->row(i).tail(cols - d);
      }
    }
  }

  const Process* process_;
  std::array<Batch, 3> n_;  // N at the stages: s, then c1 (and c2)
  Batch stage_, difference_, next_, scratch_error_;
  HostMask valid_;  // rows whose n_[0] is N at their current (z, u)
};

}  // namespace diffode
