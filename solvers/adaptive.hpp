// The adaptive driver: integrate_adaptive(stepper, problem, t0, t1, x, options, observer).
//
// Error control is per sample by default: each sample carries its own time and step size, accepts
// or rejects on its own error ratio, and stops when it reaches t1, so a sample's result does not
// depend on the batch it is in (bit for bit, for a problem whose drift is row-wise). ErrorNorm::batch
// takes the largest ratio over the batch instead: one step size for all, as a solver that sees the
// batch as one big ODE would.
//
// Step-size control is the PI controller of Gustafsson (1991, ACM TOMS 17(4)) in the form of the
// DOPRI5 code (Hairer, Norsett & Wanner I, §II.4 and its Fortran dopri5; Hairer & Wanner II,
// §IV.2):
//     h_new = h * clamp(safety * err_n^(-alpha) * err_{n-1}^beta, min_factor, max_factor),
//     alpha = 1/q - 0.75 beta, q = min(order, embedded order) + 1,
// no growth right after a rejection, and after a rejection h_new = h * max(min_factor,
// safety * err^(-alpha)). The first step size is HNW I §II.4's starting-step heuristic ("hinit"),
// per sample, at the cost of two evaluations. A step whose result or error is not finite is
// rejected and shrunk by min_factor; a sample whose step underflows (|h| <= 10 eps |t|, the dopri5
// criterion), or that exceeds max_steps attempts, fails: it is frozen, the others go on, and the
// failure says which sample, after which step and at what time. Nothing is thrown for a failure.
// Finished and failed samples are frozen (h = 0, their rows never reassigned) but still ride along
// in the batched drift evaluations: the batch keeps its shape, and `nfe` counts batched calls.
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"
#include "solvers/integrate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode {

enum class ErrorNorm { per_sample, batch };

struct AdaptiveOptions {
  double rtol = 1e-6;
  double atol = 1e-6;
  double initial_step = 0;   // |h| of the first step; 0 picks it per sample (HNW I, §II.4)
  double max_step = std::numeric_limits<double>::infinity();
  double safety = 0.9;       // dopri5's safe
  double min_factor = 0.2;   // dopri5's 1/fac1
  double max_factor = 10.0;  // dopri5's 1/fac2
  double beta = 0.04;        // PI exponent on the previous error; 0 gives the classical I controller
  Index max_steps = 100000;  // attempts per sample
  ErrorNorm norm = ErrorNorm::per_sample;
};

// IntegrationStats with the per-sample picture. `steps` is the largest number of accepted steps of
// any sample, `rejected` the sum of all rejections, `nfe` the batched drift evaluations. `failed`
// and its fields describe the first failure; `failures` has one entry per sample (empty if fine).
struct AdaptiveStats : IntegrationStats {
  Index iterations = 0;  // attempts of the batch (one stepper pass each)
  std::vector<Index> accepted;
  std::vector<Index> rejected_per_sample;
  std::vector<double> t_reached;
  std::vector<std::string> failures;
};

using HostMask = Eigen::Array<bool, Eigen::Dynamic, 1>;

// What the observer sees after each attempt of the batch: StepInfo's t and h are those of the least
// advanced sample; the per-sample picture follows.
struct AdaptiveStepInfo : StepInfo {
  const PerSample& t_sample;  // each sample's time after this attempt
  const PerSample& h_sample;  // the step each sample attempted (0: frozen)
  const HostMask& accepted;   // which samples took their step
};

namespace detail {

// Per-sample scalars and masks cross between the host controller and the state's own types. For the
// host Batch they are the same types and pass by reference; another state type provides
// scalars_to_host / scalars_from_host / mask_to_host / mask_from_host in its StateOps.
template <class State>
decltype(auto) scalars_to_host(const typename StateOps<State>::Scalars& s) {
  return StateOps<State>::scalars_to_host(s);
}
template <class State>
decltype(auto) scalars_from_host(const PerSample& s, const State& like) {
  return StateOps<State>::scalars_from_host(s, like);
}
template <class State>
decltype(auto) mask_to_host(const typename StateOps<State>::Mask& m) {
  if constexpr (std::same_as<typename StateOps<State>::Mask, HostMask>)
    return (m);
  else
    return StateOps<State>::mask_to_host(m);
}
template <class State>
decltype(auto) mask_from_host(const HostMask& m, const State& like) {
  if constexpr (std::same_as<typename StateOps<State>::Mask, HostMask>)
    return (m);
  else
    return StateOps<State>::mask_from_host(m, like);
}

// HNW I, §II.4, "Starting step size" (the hinit routine of dopri5), per sample, signed toward t1.
// Norms are the mixed RMS norm with weights atol + rtol |x0_i|.
template <class State, class Problem>
PerSample initial_step_sizes(const Problem& problem, const State& x0, double t0, double t1, int q,
                             const AdaptiveOptions& options) {
  using Ops = StateOps<State>;
  const double direction = t1 > t0 ? 1.0 : -1.0;
  const double h_max = std::min(std::abs(t1 - t0), options.max_step);
  const Index n = Ops::samples(x0);
  State f0, x1, f1, difference;
  const auto t_start = Ops::fill(x0, t0);
  problem.drift(x0, t_start, f0);
  const auto norm = [&](const State& v) {
    return PerSample(scalars_to_host<State>(Ops::error_ratio(v, x0, x0, options.rtol, options.atol)));
  };
  const PerSample d0 = norm(x0), d1 = norm(f0);
  PerSample h0(n), signed_h0(n), t_probe(n);
  for (Index i = 0; i < n; ++i) {
    h0[i] = (d0[i] < 1e-5 || d1[i] < 1e-5) ? 1e-6 : 0.01 * d0[i] / d1[i];
    h0[i] = std::min(h0[i], h_max);
    signed_h0[i] = direction * h0[i];
    t_probe[i] = t0 + signed_h0[i];
  }
  Ops::update(x1, x0, scalars_from_host(signed_h0, x0), {{1.0, f0}});
  problem.drift(x1, scalars_from_host(t_probe, x0), f1);
  Ops::update(difference, f1, 1.0, {{-1.0, f0}});
  const PerSample d2_unscaled = norm(difference);
  PerSample h(n);
  for (Index i = 0; i < n; ++i) {
    const double d2 = d2_unscaled[i] / h0[i];
    const double largest = std::max(d1[i], d2);
    const double h1 = largest <= 1e-15 ? std::max(1e-6, h0[i] * 1e-3) : std::pow(0.01 / largest, 1.0 / q);
    double hi = std::min({100 * h0[i], h1, h_max});
    if (!std::isfinite(hi) || hi <= 0) hi = h0[i];  // a non-finite slope: let the controller cut it
    h[i] = direction * hi;
  }
  return h;
}

}  // namespace detail

namespace detail {

// The per-sample PI controller of integrate_adaptive: each sample's time, step and error history,
// and what the last attempt did to it (Hairer, Norsett & Wanner I, II.4, dopri5's controller with
// Gustafsson's PI term).
class PerSampleController {
 public:
  PerSample t, h, h_try;  // each sample's time, next step, and the step of the current attempt
  HostMask active, taken;  // still integrating; took its step in the current attempt

  PerSampleController(Index n, double t0, double t1, int q, const AdaptiveOptions& options, AdaptiveStats& stats)
      : t(PerSample::Constant(n, t0)), h(n), h_try(PerSample::Zero(n)), active(HostMask::Constant(n, true)),
        taken(HostMask::Constant(n, false)), n_(n), q_(q), t1_(t1), direction_(t1 > t0 ? 1.0 : -1.0),
        alpha_(1.0 / q - 0.75 * options.beta), options_(options), stats_(stats), previous_error_(PerSample::Constant(n, 1e-4)),
        to_end_(HostMask::Constant(n, false)), just_rejected_(HostMask::Constant(n, false)),
        last_not_finite_(HostMask::Constant(n, false)), attempts_(n, 0) {
    stats.accepted.assign(n, 0);
    stats.rejected_per_sample.assign(n, 0);
    stats.t_reached.assign(n, t0);
    stats.failures.assign(n, {});
  }

  void fail(Index i, const std::string& why) {
    active[i] = false;
    stats_.failures[i] = fmt::format("sample {}: {} after {} accepted steps at t = {}", i, why, stats_.accepted[i], t[i]);
    if (!stats_.failed) {
      stats_.failed = true;
      stats_.failure = stats_.failures[i];
      stats_.failed_step = stats_.accepted[i];
      stats_.failed_time = t[i];
    }
  }

  // The first step: given, or each sample's own guess (with the batch norm, the most cautious one).
  template <class Problem, class State>
  void initial_steps(const Problem& problem, const State& x, double t0) {
    if (options_.initial_step > 0) {
      h.setConstant(direction_ * std::min({options_.initial_step, std::abs(t1_ - t0), options_.max_step}));
      return;
    }
    h = initial_step_sizes(problem, x, t0, t1_, q_, options_);
    if (options_.norm != ErrorNorm::batch) return;
    double smallest = std::abs(t1_ - t0);
    for (Index i = 0; i < n_; ++i)
      if (active[i] && std::isfinite(h[i])) smallest = std::min(smallest, std::abs(h[i]));
    h.setConstant(direction_ * smallest);
  }

  // Each active sample steps from its own time; a step that would land within 1% of t1 past it is
  // cut to end exactly there (dopri5's rule), so no sliver of a step is left.
  void plan_attempt() {
    for (Index i = 0; i < n_; ++i) {
      if (!active[i]) {
        h_try[i] = 0;
        continue;
      }
      to_end_[i] = direction_ * (t[i] + 1.01 * h[i] - t1_) >= 0;
      h_try[i] = to_end_[i] ? t1_ - t[i] : h[i];
    }
  }

  // Accepts or rejects each active sample's attempt by its error ratio (non-finite: rejected), and
  // proposes its next step.
  void decide(PerSample ratio, const HostMask& finite) {
    for (Index i = 0; i < n_; ++i)
      if (!finite[i] || !std::isfinite(ratio[i])) ratio[i] = std::numeric_limits<double>::infinity();
    if (options_.norm == ErrorNorm::batch) {
      double largest = 0;
      for (Index i = 0; i < n_; ++i)
        if (active[i]) largest = std::max(largest, ratio[i]);
      ratio.setConstant(largest);
    }
    for (Index i = 0; i < n_; ++i) {
      taken[i] = false;
      if (!active[i]) continue;
      ++attempts_[i];
      last_not_finite_[i] = !std::isfinite(ratio[i]);
      h[i] = h_try[i] * (ratio[i] <= 1.0 ? accept(i, ratio[i]) : reject(i, ratio[i]));
      if (std::abs(h[i]) > options_.max_step) h[i] = direction_ * options_.max_step;
    }
  }

  // Samples whose step size underflowed or that ran out of attempts fail.
  void check_progress() {
    const double eps = std::numeric_limits<double>::epsilon();
    for (Index i = 0; i < n_; ++i) {
      if (!active[i]) continue;
      if (!(std::abs(h[i]) > 10 * eps * std::abs(t[i])) || h[i] == 0)
        fail(i, last_not_finite_[i] ? fmt::format("non-finite value (NaN or Inf) at every step size down to {:.3g} "
                                                  "(step size underflow)", std::abs(h[i]))
                                    : fmt::format("step size underflow (|h| = {:.3g})", std::abs(h[i])));
      else if (attempts_[i] >= options_.max_steps)
        fail(i, fmt::format("maximum number of steps ({}) exceeded", options_.max_steps));
    }
  }

  // What the observer is told: the least advanced sample's time and step, the most accepted steps.
  Index behind() const {
    Index b = 0;
    for (Index i = 1; i < n_; ++i)
      if (direction_ * (t[i] - t[b]) < 0) b = i;
    return b;
  }

  // stats.steps: the most accepted steps of any sample.
  void count_steps() {
    Index most_accepted = 0;
    for (Index i = 0; i < n_; ++i) most_accepted = std::max(most_accepted, stats_.accepted[i]);
    stats_.steps = most_accepted;
  }

  void finish() {
    stats_.rejected = 0;
    for (Index i = 0; i < n_; ++i) {
      stats_.rejected += stats_.rejected_per_sample[i];
      stats_.t_reached[i] = t[i];
    }
  }

 private:
  double accept(Index i, double ratio) {
    taken[i] = true;
    ++stats_.accepted[i];
    const bool reached_end = to_end_[i];
    t[i] = reached_end ? t1_ : t[i] + h_try[i];
    double factor = options_.safety * std::pow(std::max(ratio, 1e-300), -alpha_) * std::pow(previous_error_[i], options_.beta);
    factor = std::clamp(factor, options_.min_factor, options_.max_factor);
    if (just_rejected_[i]) factor = std::min(factor, 1.0);
    previous_error_[i] = std::max(ratio, 1e-4);
    just_rejected_[i] = false;
    if (reached_end) active[i] = false;
    return factor;
  }

  double reject(Index i, double ratio) {
    ++stats_.rejected_per_sample[i];
    just_rejected_[i] = true;
    return std::isfinite(ratio) ? std::max(options_.min_factor, options_.safety * std::pow(ratio, -alpha_)) : options_.min_factor;
  }

  Index n_;
  int q_;  // the error estimate's order
  double t1_, direction_, alpha_;
  const AdaptiveOptions& options_;
  AdaptiveStats& stats_;
  PerSample previous_error_;  // dopri5's facold
  HostMask to_end_, just_rejected_, last_not_finite_;
  std::vector<Index> attempts_;
};

}  // namespace detail

// Integrates x from t0 to t1 (either direction) with the adaptive stepper (traits.adaptive; the
// attempt/accept interface of Dopri5). `x` holds the initial batch and receives the final one.
template <class Stepper, class Problem, class State, class Observer = NoObserver>
AdaptiveStats integrate_adaptive(Stepper& stepper, const Problem& problem, double t0, double t1, State& x,
                                 const AdaptiveOptions& options = {}, Observer&& observer = {}) {
  static_assert(Stepper::traits.adaptive, "integrate_adaptive needs a stepper with an embedded error estimate");
  check_contract(Stepper::traits, problem_traits(problem));
  if (!(options.rtol >= 0 && options.atol >= 0 && options.rtol + options.atol > 0))
    throw std::invalid_argument("integrate_adaptive: tolerances must be >= 0 and not both 0");
  if (!(options.min_factor > 0 && options.min_factor <= 1 && options.max_factor >= 1 && options.safety > 0 &&
        options.safety <= 1))
    throw std::invalid_argument("integrate_adaptive: need 0 < min_factor <= 1 <= max_factor and 0 < safety <= 1");
  if (!std::isfinite(t0) || !std::isfinite(t1)) throw std::invalid_argument("integrate_adaptive: t0 and t1 must be finite");

  using Ops = StateOps<State>;
  const Index n = Ops::samples(x);
  AdaptiveStats stats;
  detail::PerSampleController control(n, t0, t1, Stepper::error_order, options, stats);
  if (t1 == t0 || n == 0) return stats;

  Counted<Problem> counted{problem, &stats.nfe};
  {
    const HostMask finite = detail::mask_to_host<State>(Ops::finite_rows(x));
    for (Index i = 0; i < n; ++i)
      if (!finite[i]) control.fail(i, "non-finite value (NaN or Inf) in the initial state");
  }
  control.initial_steps(counted, x, t0);

  stepper.reset();
  State x_new, error;
  while (control.active.any()) {
    ++stats.iterations;
    control.plan_attempt();
    stepper.attempt(counted, detail::scalars_from_host(control.t, x), detail::scalars_from_host(control.h_try, x), x, x_new, error);
    control.decide(detail::scalars_to_host<State>(Ops::error_ratio(error, x, x_new, options.rtol, options.atol)),
                   detail::mask_to_host<State>(Ops::finite_rows(x_new)));
    Ops::select_rows(x, detail::mask_from_host(control.taken, x), x_new);
    stepper.accept(detail::mask_from_host(control.taken, x));
    control.check_progress();
    control.count_steps();
    const Index behind = control.behind();
    observer(AdaptiveStepInfo{{stats.iterations, control.t[behind], control.h_try[behind], stats.nfe}, control.t, control.h_try, control.taken},
             x);
  }
  control.finish();
  return stats;
}

}  // namespace diffode
