// Boost.Odeint's adaptive steppers as a backend of the solver layer: integrate_odeint(problem, t0,
// t1, x, options) integrates any OdeProblem on the host Batch with one of
//   dopri5          runge_kutta_dopri5, Dormand & Prince 1980 ("A family of embedded Runge-Kutta
//                   formulae", J. Comput. Appl. Math. 6(1), 19-26), 5(4), FSAL; controlled, and with
//                   dense = true Odeint's dense-output stepper over it (the continuous extension of
//                   Hairer, Norsett & Wanner I, §II.6);
//   fehlberg78      runge_kutta_fehlberg78, Fehlberg 1968 ("Classical fifth-, sixth-, seventh-, and
//                   eighth-order Runge-Kutta formulas with stepsize control", NASA TR R-287), 8(7),
//                   13 stages; controlled only (Odeint 1.74 has no dense output for it);
//   bulirsch_stoer  bulirsch_stoer, Gragg-Bulirsch-Stoer extrapolation of the modified midpoint rule
//                   (Bulirsch & Stoer 1966, Numer. Math. 8, 1-13) with Deuflhard's order and step
//                   control (Deuflhard 1983, Numer. Math. 41, 399-422; HNW I, §II.9), and with
//                   dense = true bulirsch_stoer_dense_out (HNW I, §II.9, dense output).
// Odeint itself: Ahnert & Mulansky 2011, "Odeint - Solving Ordinary Differential Equations in C++",
// AIP Conf. Proc. 1389, 1586-1589, arXiv:1110.3397. This is Debian 12's Boost 1.74.
//
// What it is for: an independent high-accuracy reference. Odeint's tableaus, error estimates and
// step-size controllers are Odeint's own; only the system adapter, the initial step size and the
// loop that counts steps and stops on failure are ours.
//
// Step-size control is BATCH-WIDE: the whole N x D batch is one Odeint state, every sample takes the
// same steps, and Odeint's error norm is the largest element over the batch,
//     err = max_{n,d} |e_nd| / (atol + rtol (|x_nd| + |h| |f_nd|))      (x, f at the step's start),
// a step being accepted when err <= 1 (default_error_checker; Bulirsch-Stoer uses the same norm on
// its extrapolation tableau). The project's own driver (solvers/adaptive.hpp) controls each sample
// separately with a per-sample RMS norm; the two agree on the solution to the tolerances, not on
// the steps. A sample's result here therefore depends on its batch (through the shared steps).
//
// The drift sees one time for the whole batch, repeated per sample. The integration runs either way
// in time (t1 < t0: the probability flow from sigma_max down), but Odeint always steps forward: a
// backward run integrates y(tau) = x(-tau), dy/dtau = -f(y, -tau), from -t0 to -t1. For the
// Runge-Kutta methods that changes nothing (negation is exact: the same numbers, bit for bit, as a
// negative step); Odeint 1.74's Bulirsch-Stoer needs it: it rates the work of each extrapolation
// column as cost / h_opt with h_opt signed, so with a negative step its order selection is inverted
// and it takes hundreds of times the steps (measured on the tests' linear problem at tol 1e-10: 3250
// steps instead of 12, to a far smaller error than asked). No step leaves
// [t0, t1]: the last one is cut to end on t1, as Odeint's integrate_adaptive does, also for the
// dense-output steppers, so the drift is never evaluated past t1 (sigma~ <= 0, t < t_min), and x(t1)
// is the stepper's own last step, not an interpolation. (So dense = true changes the stepper, not
// the output: dense dopri5 takes the controlled stepper's steps; bulirsch_stoer_dense_out controls
// its order and step its own way.)
//
// The first step: options.first_step if > 0, else the starting-step heuristic of HNW I, §II.4
// (solvers/adaptive.hpp's, the smallest over the samples; two evaluations). Odeint's controller
// corrects a poor guess with a rejection or a few growing steps.
//
// Failure is reported, never thrown: a non-finite initial state; the step size falling to rounding
// level (|h| <= 10 eps |t|), which is where a drift that turns NaN or Inf past some time drives the
// controller; a non-finite state after an accepted step; more than max_steps attempts (accepted steps
// for bulirsch_stoer_dense_out, whose rejections are hidden, below); and an Odeint
// step_adjustment_error (its dense-output steppers give up after 500 rejections in a row). The batch
// stops as a whole: every sample's entry of `failures` carries the message, which also names the
// first sample and time at which the drift was non-finite, if it was. Usage errors (tolerances,
// times, fehlberg78 with dense output) throw std::invalid_argument; an SDE problem throws
// ContractError.
//
// Stats: AdaptiveStats, filled for a batch-wide controller: `steps` the accepted steps, `rejected`
// the rejected attempts, `iterations` all attempts, `nfe` the batched drift evaluations (= drift
// evaluations per sample; the starting-step heuristic's two included); the per-sample vectors repeat
// the batch's numbers. Odeint keeps bulirsch_stoer_dense_out's rejections private, so with
// bulirsch_stoer and dense = true `rejected` stays 0 and `iterations` counts accepted steps only; all
// other combinations count rejections exactly (dense dopri5 through a counting error checker, below).
//
// Odeint 1.74 with Eigen (boost/numeric/odeint/external/eigen/eigen.hpp) treats an Eigen array as a
// vector space (vector_space_algebra: one Eigen expression per stepper operation, no copies) and
// resizes it, but it has two gaps for the N x D Batch that the specialisations below fill:
//   - vector_space_norm_inf, which the controllers' error norm calls, exists only for Eigen::Matrix;
//     ours for Batch also returns +inf when any element is NaN, because the controllers reject on
//     `err > 1`, which a NaN error passes (the step would be accepted), and Bulirsch-Stoer's step
//     factor min(max_factor, NaN) picks the largest growth;
//   - odeint::copy detects Eigen 3.4's begin()/end() and copies element by element through them,
//     which Eigen allows only for vectors (a static assertion for a 2-D array): copying by
//     assignment is what the dense-output steppers need.
// resize and same_size come from eigen.hpp unchanged (resizeLike, inner/outer sizes).
#pragma once

#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"
#include "solvers/adaptive.hpp"

#include <boost/numeric/odeint/stepper/bulirsch_stoer.hpp>
#include <boost/numeric/odeint/stepper/bulirsch_stoer_dense_out.hpp>
#include <boost/numeric/odeint/stepper/controlled_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/dense_output_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_controlled_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_runge_kutta_dopri5.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_runge_kutta_fehlberg78.hpp>
#include <boost/numeric/odeint/stepper/generation/make_controlled.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_dopri5.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_fehlberg78.hpp>
#include <boost/numeric/odeint/util/odeint_error.hpp>
// After the steppers: eigen.hpp specialises templates they declare.
#include <boost/numeric/odeint/external/eigen/eigen.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace boost::numeric::odeint {

// The controllers' error norm on the batch: the largest |element|, +inf if any is NaN (see above).
template <>
struct vector_space_norm_inf<diffode::Batch> {
  using result_type = double;
  double operator()(const diffode::Batch& m) const {
    if (m.size() == 0) return 0.0;
    const double largest = m.abs().template maxCoeff<Eigen::PropagateNaN>();
    return std::isnan(largest) ? std::numeric_limits<double>::infinity() : largest;
  }
};

// Copy by assignment (see above); resizes `to` as the dense-output steppers expect.
template <>
struct copy_impl_sfinae<diffode::Batch, diffode::Batch> {
  static void copy(const diffode::Batch& from, diffode::Batch& to) { to = from; }
};

}  // namespace boost::numeric::odeint

namespace diffode {

enum class OdeintMethod { dopri5, fehlberg78, bulirsch_stoer };

constexpr std::string_view to_string(OdeintMethod m) {
  switch (m) {
    case OdeintMethod::dopri5: return "dopri5";
    case OdeintMethod::fehlberg78: return "fehlberg78";
    case OdeintMethod::bulirsch_stoer: return "bulirsch_stoer";
  }
  return "?";
}

// "dopri5", "fehlberg78", "bulirsch_stoer"; anything else throws std::invalid_argument.
inline OdeintMethod odeint_method_from_name(std::string_view name) {
  for (OdeintMethod m : {OdeintMethod::dopri5, OdeintMethod::fehlberg78, OdeintMethod::bulirsch_stoer})
    if (name == to_string(m)) return m;
  throw std::invalid_argument(fmt::format("unknown Odeint method '{}' (known: dopri5, fehlberg78, bulirsch_stoer)", name));
}

// What each method promises, for check_contract. Bulirsch-Stoer's order varies with its column
// (order 0 here: no fixed order); its evaluations per step vary too.
constexpr StepperTraits odeint_traits(OdeintMethod m) {
  switch (m) {
    case OdeintMethod::dopri5:
      return {.name = "odeint_dopri5", .order = 5, .adaptive = true, .evaluations_per_step = 6};
    case OdeintMethod::fehlberg78:
      return {.name = "odeint_fehlberg78", .order = 8, .adaptive = true, .evaluations_per_step = 13};
    case OdeintMethod::bulirsch_stoer:
      return {.name = "odeint_bulirsch_stoer", .order = 0, .adaptive = true, .evaluations_per_step = 0};
  }
  return {};
}

struct OdeintOptions {
  OdeintMethod method = OdeintMethod::dopri5;
  double rtol = 1e-6, atol = 1e-6;
  double first_step = 0;  // |h| of the first step; 0: automatic (HNW I, §II.4)
  bool dense = false;     // Odeint's dense-output stepper (dopri5, bulirsch_stoer)
  std::size_t max_steps = 100000;  // attempts (accepted + rejected), batch-wide
};

namespace detail::odeint_backend {

namespace odeint = boost::numeric::odeint;

// Shared by the system functor and the error checker, which Odeint copies by value.
struct Context {
  Index nfe = 0;
  Index attempts = 0;
  Index rejected = 0;
  PerSample times;  // the batch's time, one per sample
  Index bad_sample = -1;  // the first sample whose drift was non-finite, and when
  double bad_time = 0;
};

// The problem as Odeint's system in its time tau = direction * t: f(x, dxdt, tau) with one time for
// the batch; backward (direction -1), dx/dtau = -f(x, -tau).
template <class Problem>
struct System {
  const Problem* problem;
  Context* context;
  double direction;

  void operator()(const Batch& x, Batch& dxdt, double tau) const {
    ++context->nfe;
    const double t = direction * tau;
    context->times.setConstant(x.rows(), t);
    problem->drift(x, context->times, dxdt);
    if (direction < 0) dxdt = -dxdt;
    if (context->bad_sample < 0 && !dxdt.isFinite().all()) {
      const auto finite = StateOps<Batch>::finite_rows(dxdt);
      for (Index n = 0; n < finite.size(); ++n)
        if (!finite[n]) {
          context->bad_sample = n;
          context->bad_time = t;
          break;
        }
    }
  }
};

// Odeint's default_error_checker, unchanged, plus a tally of attempts and rejections, for the
// dense-output Runge-Kutta stepper, whose do_step retries internally and hides its rejections. The
// controlled Runge-Kutta stepper calls error() exactly once per attempt (no max_dt is set) and
// rejects when it returns > 1 (NaN cannot reach it: the norm above maps it to +inf).
template <class Algebra, class Operations>
class CountingErrorChecker : public odeint::default_error_checker<double, Algebra, Operations> {
 public:
  using Base = odeint::default_error_checker<double, Algebra, Operations>;
  CountingErrorChecker(double atol, double rtol, Context* context) : Base(atol, rtol), context_(context) {}

  template <class State, class Deriv, class Err, class Time>
  double error(Algebra& algebra, const State& x_old, const Deriv& dxdt_old, Err& x_err, Time dt) const {
    const double e = Base::error(algebra, x_old, dxdt_old, x_err, dt);
    ++context_->attempts;
    if (e > 1.0) ++context_->rejected;
    return e;
  }
  template <class State, class Deriv, class Err, class Time>
  double error(const State& x_old, const Deriv& dxdt_old, Err& x_err, Time dt) const {
    Algebra algebra;
    return error(algebra, x_old, dxdt_old, x_err, dt);
  }

 private:
  Context* context_;
};

// What make_dense_output(atol, rtol, Stepper()) builds, dense_output_runge_kutta over
// controlled_runge_kutta<Stepper>, with the counting checker in place of the default one (the
// controller's customisation point for it).
template <class Stepper>
auto make_counted_dense_output(double atol, double rtol, Context* context) {
  using Checker = CountingErrorChecker<typename Stepper::algebra_type, typename Stepper::operations_type>;
  using Controlled = odeint::controlled_runge_kutta<Stepper, Checker>;
  return odeint::dense_output_runge_kutta<Controlled>(
      Controlled(Checker(atol, rtol, context), odeint::default_step_adjuster<double, double>(), Stepper()));
}

// Odeint's time runs from tau0 up to tau1. A last step tau + (tau1 - tau) lands within an ulp of
// tau1, which counts as arrived.
struct Clock {
  double tau0, tau1;
  bool arrived(double tau) const {
    return tau1 - tau <= 4 * std::numeric_limits<double>::epsilon() * std::max(std::abs(tau), std::abs(tau1));
  }
  // The step from tau, cut to end on tau1 (Odeint's integrate_adaptive rule).
  double clip(double tau, double dt) const { return tau + dt > tau1 ? tau1 - tau : dt; }
  // The step has fallen to rounding level (dopri5's criterion), or below zero.
  bool underflow(double tau, double dt) const {
    return !(dt > 10 * std::numeric_limits<double>::epsilon() * std::abs(tau)) || dt == 0;
  }
};

// The controlled steppers' loop: try_step until t1; each call is one attempt.
template <class Stepper, class Problem>
void run_controlled(Stepper& stepper, const System<Problem>& system, const Clock& clock, double dt, Batch& x,
                    const OdeintOptions& options, Context& context, AdaptiveStats& stats, std::string& why,
                    double& tau) {
  tau = clock.tau0;
  while (!clock.arrived(tau)) {
    dt = clock.clip(tau, dt);
    const odeint::controlled_step_result result = stepper.try_step(system, x, tau, dt);
    ++context.attempts;
    if (result == odeint::success) {
      ++stats.steps;
      if (!x.isFinite().all()) {
        why = "non-finite value (NaN or Inf) after an accepted step";
        return;
      }
    } else {
      ++context.rejected;
    }
    if (clock.arrived(tau)) break;
    if (clock.underflow(tau, dt)) {
      why = fmt::format("step size underflow (|h| = {:.3g})", std::abs(dt));
      return;
    }
    if (static_cast<std::size_t>(context.attempts) >= options.max_steps) {
      why = fmt::format("maximum number of steps ({}) exceeded", options.max_steps);
      return;
    }
  }
  tau = clock.tau1;
}

// The dense-output steppers' loop, as Odeint's integrate_adaptive drives them: do_step while the
// next step stays before t1, then start again with the step that ends on it.
template <class Dense, class Problem>
void run_dense(Dense& dense, const System<Problem>& system, const Clock& clock, double dt, Batch& x,
               bool rejections_counted, const OdeintOptions& options, Context& context, AdaptiveStats& stats,
               std::string& why, double& tau) {
  tau = clock.tau0;
  dense.initialize(x, clock.tau0, dt);
  while (!clock.arrived(dense.current_time())) {
    const double now = dense.current_time();
    if (clock.clip(now, dense.current_time_step()) != dense.current_time_step())
      dense.initialize(dense.current_state(), now, clock.tau1 - now);
    try {
      dense.do_step(system);
    } catch (const odeint::odeint_error& e) {
      tau = dense.current_time();
      x = dense.current_state();
      why = fmt::format("Odeint gave up ({})", e.what());
      return;
    }
    ++stats.steps;
    if (!rejections_counted) ++context.attempts;
    tau = dense.current_time();
    if (!dense.current_state().isFinite().all()) {
      x = dense.current_state();
      why = "non-finite value (NaN or Inf) after an accepted step";
      return;
    }
    if (clock.arrived(tau)) break;
    if (clock.underflow(tau, dense.current_time_step())) {
      x = dense.current_state();
      why = fmt::format("step size underflow (|h| = {:.3g})", std::abs(dense.current_time_step()));
      return;
    }
    if (static_cast<std::size_t>(context.attempts) >= options.max_steps) {
      x = dense.current_state();
      why = fmt::format("maximum number of steps ({}) exceeded", options.max_steps);
      return;
    }
  }
  x = dense.current_state();
  tau = clock.tau1;
}

}  // namespace detail::odeint_backend

// Integrates x from t0 to t1 (either direction) with Odeint's options.method; `x` holds the initial
// batch and receives the final one (on failure: the last accepted state, at stats.failed_time).
template <class Problem>
  requires OdeProblem<Problem, Batch>
AdaptiveStats integrate_odeint(const Problem& problem, double t0, double t1, Batch& x, const OdeintOptions& options = {}) {
  namespace odeint = boost::numeric::odeint;
  namespace backend = detail::odeint_backend;
  check_contract(odeint_traits(options.method), problem_traits(problem));
  if (!(options.rtol >= 0 && options.atol >= 0 && options.rtol + options.atol > 0))
    throw std::invalid_argument("integrate_odeint: tolerances must be >= 0 and not both 0");
  if (!std::isfinite(t0) || !std::isfinite(t1)) throw std::invalid_argument("integrate_odeint: t0 and t1 must be finite");
  if (!(options.first_step >= 0 && std::isfinite(options.first_step)))
    throw std::invalid_argument("integrate_odeint: first_step must be finite and >= 0 (0: automatic)");
  if (options.max_steps == 0) throw std::invalid_argument("integrate_odeint: max_steps must be > 0");
  if (options.dense && options.method == OdeintMethod::fehlberg78)
    throw std::invalid_argument(
        "integrate_odeint: Odeint 1.74 has no dense output for fehlberg78 (use dopri5 or bulirsch_stoer)");

  const Index n = x.rows();
  AdaptiveStats stats;
  // The per-sample picture of a batch-wide run: every sample has the batch's numbers.
  const auto finish = [&](double t_reached) {
    stats.accepted.assign(n, stats.steps);
    stats.rejected_per_sample.assign(n, stats.rejected);
    stats.t_reached.assign(n, t_reached);
    stats.failures.assign(n, stats.failed ? stats.failure : std::string());
  };
  if (t1 == t0 || n == 0 || x.cols() == 0) {
    finish(t0);
    return stats;
  }
  if (!x.isFinite().all()) {
    const auto finite = StateOps<Batch>::finite_rows(x);
    Index first = 0;
    while (finite[first]) ++first;
    stats.failed = true;
    stats.failure = fmt::format("sample {}: non-finite value (NaN or Inf) in the initial state", first);
    stats.failed_step = 0;
    stats.failed_time = t0;
    finish(t0);
    return stats;
  }

  backend::Context context;
  const double direction = t1 > t0 ? 1.0 : -1.0;
  const backend::System<Problem> system{&problem, &context, direction};
  const backend::Clock clock{direction * t0, direction * t1};

  double dt;  // in Odeint's time: > 0
  if (options.first_step > 0) {
    dt = std::min(options.first_step, std::abs(t1 - t0));
  } else {
    AdaptiveOptions guess;
    guess.rtol = options.rtol;
    guess.atol = options.atol;
    // The exponent only shapes the guess: the order of the propagated solution (Bulirsch-Stoer's
    // varies; 5 is a cautious start).
    const int q = options.method == OdeintMethod::fehlberg78 ? 8 : 5;
    const Counted<Problem> counted{problem, &context.nfe};
    const PerSample h = detail::initial_step_sizes(counted, x, t0, t1, q, guess);
    double smallest = std::abs(t1 - t0);
    for (Index i = 0; i < n; ++i)
      if (std::isfinite(h[i]) && h[i] != 0) smallest = std::min(smallest, std::abs(h[i]));
    dt = smallest;
  }

  std::string why;
  double tau = clock.tau0;
  switch (options.method) {
    case OdeintMethod::dopri5:
      if (options.dense) {
        auto dense =
            backend::make_counted_dense_output<odeint::runge_kutta_dopri5<Batch>>(options.atol, options.rtol, &context);
        backend::run_dense(dense, system, clock, dt, x, true, options, context, stats, why, tau);
      } else {
        auto controlled = odeint::make_controlled(options.atol, options.rtol, odeint::runge_kutta_dopri5<Batch>());
        backend::run_controlled(controlled, system, clock, dt, x, options, context, stats, why, tau);
      }
      break;
    case OdeintMethod::fehlberg78: {
      auto controlled = odeint::make_controlled(options.atol, options.rtol, odeint::runge_kutta_fehlberg78<Batch>());
      backend::run_controlled(controlled, system, clock, dt, x, options, context, stats, why, tau);
      break;
    }
    case OdeintMethod::bulirsch_stoer:
      if (options.dense) {
        odeint::bulirsch_stoer_dense_out<Batch> dense(options.atol, options.rtol);
        backend::run_dense(dense, system, clock, dt, x, false, options, context, stats, why, tau);
      } else {
        odeint::bulirsch_stoer<Batch> stepper(options.atol, options.rtol);
        backend::run_controlled(stepper, system, clock, dt, x, options, context, stats, why, tau);
      }
      break;
  }

  const double t = tau == clock.tau1 ? t1 : direction * tau;
  stats.nfe = context.nfe;
  stats.iterations = context.attempts;
  if (!why.empty()) {
    stats.failed = true;
    stats.failed_step = stats.steps;
    stats.failed_time = t;
    stats.failure = fmt::format("{} after {} accepted steps at t = {} (batch-wide step: all {} samples stop)", why,
                                stats.steps, t, n);
    if (context.bad_sample >= 0)
      stats.failure += fmt::format("; the drift was first non-finite (NaN or Inf) at sample {}, t = {}",
                                   context.bad_sample, context.bad_time);
  }
  stats.rejected = context.rejected;  // 0 for bulirsch_stoer_dense_out, which does not say
  finish(t);
  return stats;
}

}  // namespace diffode
