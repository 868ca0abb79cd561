// The one fixed-grid driver: integrate(stepper, problem, grid, x [, path], observer).
//
// The grid is shared by the batch and may run forward or backward in time (diffusion sampling runs
// from T down to t_min). The driver checks the stepper's contract against the problem before any
// work, counts evaluations, asks the Brownian path for exactly what the stepper declares it needs,
// and stops at the first non-finite value, saying at which step, time and sample. Steppers know
// nothing of observers, counting or failure.
#pragma once

#include "solvers/brownian.hpp"
#include "solvers/noise.hpp"
#include "core/contract.hpp"
#include "core/problem.hpp"
#include "core/state.hpp"

#include <fmt/format.h>

#include <span>
#include <utility>
#include <stdexcept>
#include <string>

namespace diffode {

// What a run did, and whether it failed.
struct IntegrationStats {
  Index steps = 0;       // accepted steps
  Index rejected = 0;    // rejected steps (adaptive drivers)
  Index nfe = 0;         // drift evaluations (an SDE stepper's drift+diffusion pair counts as one)
  bool failed = false;
  std::string failure;   // why, with step, time and sample
  Index failed_step = -1;
  double failed_time = 0;
};

// What an observer sees after each accepted step.
struct StepInfo {
  Index step;   // 1-based index of the step just taken
  double t;     // time reached
  double h;     // signed step size
  Index nfe;    // evaluations so far
};

struct NoObserver {
  template <class State>
  void operator()(const StepInfo&, const State&) const {}
};

// Records the trajectory: times and, optionally, every state.
template <class State>
struct TrajectoryRecorder {
  bool keep_states = true;
  std::vector<double> times;
  std::vector<State> states;
  void operator()(const StepInfo& info, const State& x) {
    times.push_back(info.t);
    if (keep_states) states.push_back(StateOps<State>::clone(x));
  }
};

namespace detail {

// Compile-time form of the contract, for what the type system can see: a stepper that needs dg/dx
// or a diffusion term names the missing member instead of failing deep inside its step().
template <class Stepper, class Problem, class State>
constexpr void require_problem_members() {
  using Scalars = typename StateOps<State>::Scalars;
  if constexpr (Stepper::traits.stochastic)
    static_assert(requires(const Problem& p, const State& x, const Scalars& t, State& o) { p.diffusion(x, t, o); },
                  "an SDE stepper needs a problem with diffusion(x, t, out)");
  if constexpr (Stepper::traits.needs_diffusion_derivative)
    static_assert(requires(const Problem& p, const State& x, const Scalars& t, State& o) { p.diffusion_derivative(x, t, o); },
                  "this stepper needs Problem::diffusion_derivative(x, t, out) = dg/dx");
}

template <class State>
bool check_finite(const State& x, Index step, double t, IntegrationStats& stats) {
  const auto finite = StateOps<State>::finite_rows(x);
  for (Index n = 0; n < static_cast<Index>(finite.size()); ++n) {
    if (!finite[n]) {
      stats.failed = true;
      stats.failed_step = step;
      stats.failed_time = t;
      stats.failure = fmt::format("non-finite value (NaN or Inf) in sample {} after step {} at t = {}", n, step, t);
      return false;
    }
  }
  return true;
}

inline void check_grid(std::span<const double> grid) {
  if (grid.size() < 2) throw std::invalid_argument("integrate: the time grid needs at least two points");
  const bool forward = grid[1] > grid[0];
  for (std::size_t i = 1; i < grid.size(); ++i) {
    const double h = grid[i] - grid[i - 1];
    if (!(forward ? h > 0 : h < 0))
      throw std::invalid_argument(fmt::format(
          "integrate: the time grid must be strictly monotone; t[{}] = {} then t[{}] = {}", i - 1, grid[i - 1], i, grid[i]));
  }
}

}  // namespace detail

// ODE on a fixed grid. `x` holds the initial state and receives the final one.
// (SDE steppers take the overload with a BrownianPath below.)
template <class Stepper, class Problem, class State, class Observer = NoObserver>
  requires(!Stepper::traits.stochastic)
IntegrationStats integrate(Stepper& stepper, const Problem& problem, std::span<const double> grid, State& x,
                           Observer&& observer = {}) {
  check_contract(Stepper::traits, problem_traits(problem));
  detail::check_grid(grid);
  IntegrationStats stats;
  Counted<Problem> counted{problem, &stats.nfe};
  stepper.reset();
  for (std::size_t i = 1; i < grid.size(); ++i) {
    const double t = grid[i - 1], h = grid[i] - grid[i - 1];
    stepper.step(counted, t, h, x);
    ++stats.steps;
    if (!detail::check_finite(x, stats.steps, grid[i], stats)) return stats;
    observer(StepInfo{stats.steps, grid[i], h, stats.nfe}, x);
  }
  return stats;
}

namespace detail {

// The fixed-grid SDE loop; `increments(i, t, t_next, dw, integral)` fills step i's Brownian
// increment and, where the stepper asks (integral != nullptr), its time integral.
template <class Stepper, class Problem, class State, class Increments, class Observer>
IntegrationStats integrate_sde(Stepper& stepper, const Problem& problem, std::span<const double> grid, State& x, Index noise_dims_given,
                               Increments&& increments, Observer&& observer) {
  require_problem_members<Stepper, Problem, State>();
  check_contract(Stepper::traits, problem_traits(problem));
  check_grid(grid);
  using Ops = StateOps<State>;
  IntegrationStats stats;
  Counted<Problem> counted{problem, &stats.nfe};
  const Index rows = Ops::samples(x);
  if (noise_dims_given != noise_dims(problem, x))
    throw std::invalid_argument(fmt::format("integrate: the Brownian noise has {} dimensions, the problem's noise needs {}",
                                            noise_dims_given, noise_dims(problem, x)));
  constexpr bool wants_integral = Stepper::traits.needs_time_integral;
  const bool scalar_noise = problem_traits(problem).noise == NoiseType::scalar;
  const Index dims = Ops::dims(x);
  Batch dw(rows, noise_dims_given), integral(wants_integral ? rows : 0, noise_dims_given);
  const State no_integral{};  // handed to steppers that do not ask for the time integral
  Batch dw_wide, integral_wide;  // scalar noise: the one column repeated across the state's dims
  stepper.reset();
  for (std::size_t i = 1; i < grid.size(); ++i) {
    const double t = grid[i - 1], h = grid[i] - grid[i - 1];
    increments(i - 1, t, grid[i], dw, wants_integral ? &integral : nullptr);
    const Batch* dw_host = &dw;
    const Batch* integral_host = &integral;
    if (scalar_noise && dims != 1) {
      dw_wide = dw.replicate(1, dims);
      dw_host = &dw_wide;
      if (wants_integral) {
        integral_wide = integral.replicate(1, dims);
        integral_host = &integral_wide;
      }
    }
    // On the host state these are references; a device state gets one copy per step.
    decltype(auto) dw_state = Ops::from_host(*dw_host, x);
    if constexpr (wants_integral) {
      decltype(auto) integral_state = Ops::from_host(*integral_host, x);
      stepper.step(counted, t, h, x, Noise<State>{dw_state, integral_state});
    } else {
      stepper.step(counted, t, h, x, Noise<State>{dw_state, no_integral});
    }
    ++stats.steps;
    if (!detail::check_finite(x, stats.steps, grid[i], stats)) return stats;
    observer(StepInfo{stats.steps, grid[i], h, stats.nfe}, x);
  }
  return stats;
}

}  // namespace detail

// SDE on a fixed grid, driven by `path` (rows of x are samples first_sample, first_sample+1, ...):
// the grid-consistent noise, the same path at any step count. The path is asked once per grid point
// (through a BrownianInterval, which reuses the upper tree levels neighbouring points share), and
// increments are differences of neighbouring points.
template <class Stepper, class Problem, class State, class Observer = NoObserver>
IntegrationStats integrate(Stepper& stepper, const Problem& problem, std::span<const double> grid, State& x,
                           const BrownianPath& path, Index first_sample = 0, Observer&& observer = {}) {
  constexpr bool wants_integral = Stepper::traits.needs_time_integral;
  BrownianInterval interval(path.options());
  const Index rows = StateOps<State>::samples(x);
  Batch w_prev(rows, path.dims()), w_next(rows, path.dims()), i_prev, i_next;
  bool started = false;
  auto increments = [&](std::size_t, double t, double t_next, Batch& dw, Batch* integral) {
    if (!started) {
      interval.point(t, first_sample, w_prev, wants_integral ? &i_prev : nullptr);
      started = true;
    }
    interval.point(t_next, first_sample, w_next, wants_integral ? &i_next : nullptr);
    BrownianPath::increments_between(t, w_prev, wants_integral ? &i_prev : nullptr, t_next, w_next, wants_integral ? &i_next : nullptr,
                                     dw, integral);
    std::swap(w_prev, w_next);
    std::swap(i_prev, i_next);
  };
  return detail::integrate_sde(stepper, problem, grid, x, path.dims(), increments, observer);
}

// SDE on a fixed grid with fresh increments per step (StepIncrements: dW and its time integral
// drawn from their exact joint law for each step, keyed by (seed, step index, sample, dim)): the
// same law as the path's, far cheaper, but unrelated noise on another grid.
template <class Stepper, class Problem, class State, class Observer = NoObserver>
IntegrationStats integrate(Stepper& stepper, const Problem& problem, std::span<const double> grid, State& x,
                           const StepIncrements& noise, Index first_sample = 0, Observer&& observer = {}) {
  auto increments = [&](std::size_t step, double t, double t_next, Batch& dw, Batch* integral) {
    noise.increments(step, t_next - t, first_sample, dw, integral);
  };
  return detail::integrate_sde(stepper, problem, grid, x, noise.dims(), increments, observer);
}

}  // namespace diffode
