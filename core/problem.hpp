// What the steppers integrate, as they see it.
//
// An ODE problem dx/dt = f(x, t) provides
//     void drift(const State& x, const Scalars& t, State& out) const;
// with one time per sample (a fixed grid fills them all alike; per-sample adaptive control does
// not). An SDE problem dx = f(x, t) dt + g(x, t) dW adds
//     void diffusion(const State& x, const Scalars& t, State& out) const;    // g, shaped like x
//     ProblemTraits traits() const;                                         // noise type, calculus
// and, for Milstein, diffusion_derivative(x, t, out) = dg_i/dx_i (diagonal noise).
// With scalar noise one Brownian motion per sample drives every dimension; with additive or
// diagonal noise each dimension has its own. The diffusion-process problems (PF-ODE, reverse SDE)
// and the known-solution problems are built on this shape; solvers never learn where f comes from.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <type_traits>

namespace diffode {

template <class P, class State>
concept OdeProblem = BatchedState<State> &&
    requires(const P& p, const State& x, const typename StateOps<State>::Scalars& t, State& out) {
      p.drift(x, t, out);
    };

template <class P, class State>
concept SdeProblem = OdeProblem<P, State> &&
    requires(const P& p, const State& x, const typename StateOps<State>::Scalars& t, State& out) {
      p.diffusion(x, t, out);
      { p.traits() } -> std::same_as<ProblemTraits>;
    };

template <class P>
ProblemTraits problem_traits(const P& p) {
  if constexpr (requires { { p.traits() } -> std::same_as<ProblemTraits>; })
    return p.traits();
  else
    return ProblemTraits{};  // an ODE
}

// Brownian motions per sample the problem's noise needs.
template <class P, class State>
Index noise_dims(const P& p, const State& x) {
  return problem_traits(p).noise == NoiseType::scalar ? 1 : StateOps<State>::dims(x);
}

// The noise of one step, as the stepper receives it: dW = W(t+h) - W(t) shaped like the state (a
// scalar noise's one column already broadcast), and, for steppers that declare they need it,
// int_t^{t+h} (W_u - W_t) du (an empty state for the others). Both are signed: a backward step
// gets the backward increments.
template <class State>
struct Noise {
  const State& dw;
  const State& time_integral;
};

// Wraps a problem and counts drift evaluations; what the drivers hand to the steppers.
template <class P>
struct Counted {
  const P& problem;
  Index* nfe;

  template <class State, class Scalars>
  void drift(const State& x, const Scalars& t, State& out) const {
    ++*nfe;
    problem.drift(x, t, out);
  }
  template <class State, class Scalars>
  void diffusion(const State& x, const Scalars& t, State& out) const {
    problem.diffusion(x, t, out);
  }
  template <class State, class Scalars>
  void diffusion_derivative(const State& x, const Scalars& t, State& out) const {
    problem.diffusion_derivative(x, t, out);
  }
  ProblemTraits traits() const { return problem_traits(problem); }
};

}  // namespace diffode
