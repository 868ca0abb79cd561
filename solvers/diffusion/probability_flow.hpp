// The diffusion model as problems for the generic steppers of solvers/ode and solvers/sde
// (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
// arXiv:2011.13456, eq. 6 and eq. 13; Anderson 1982 for the reverse SDE).
//
// For the forward SDE dx = f(t) x dt + g(t) dW with marginals p_t (problems/process.hpp):
//   probability-flow ODE   dx/dt = f(t) x - 1/2 g^2(t) s(x, t)                       (eq. 13)
//   reverse SDE            dx = [f(t) x - g^2(t) s(x, t)] dt + g(t) dW_bar            (eq. 6)
// with s = grad log p_t the score. Both run from t = T down to t_min with a negative step; the
// reverse SDE's noise is additive, so Ito and Stratonovich agree and SRA1 applies. Its Brownian path
// lives in t and is queried backward (dW = W(t + h) - W(t), h < 0): a reverse-time Brownian motion
// has the same law. The two share one score, the predictor's, converted by predict_as (docs/DESIGN.md
// §3.3: "the PF-ODE and the reverse SDE are two term constructions over one score").
//
// The same probability flow in Karras et al.'s scale-free variables (arXiv:2206.00364, eq. 3-4
// with s(t) = alpha): x~ = x / alpha, sigma~ = sigma / alpha,
//   ScaledProbabilityFlow     time sigma~:      dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~
//   LogSigmaProbabilityFlow   time s = log sigma~:   dx~/ds = x~ - D(x~; e^s)
// The second is smooth in its time down to small sigma~ (its step is relative), which makes it the
// variable for high-accuracy reference solves. With alpha = 1, sigma = t (EDM) the process's own
// PF-ODE above is the first: f = 0, g^2 = 2t, s = (D - x)/t^2 give dx/dt = (x - D)/t.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"
#include "models/predictor.hpp"
#include "problems/process.hpp"
#include "solvers/diffusion/denoiser.hpp"

namespace diffode {


// The score s(x, t) = grad log p_t(x) of the process's marginal, from any predictor: one
// evaluation per call, for the whole batch at one time or at a time per sample.
template <class State>
class DiffusionScore {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  DiffusionScore(const Process& process, const Predictor<State>& predictor) : process_(process), predictor_(predictor) {}

  const Process& process() const { return process_; }
  const Predictor<State>& predictor() const { return predictor_; }

  void operator()(const State& x, double t, State& out) const {
    const Scalars alpha = Ops::fill(x, process_.alpha(t)), sigma = Ops::fill(x, process_.sigma(t));
    predictor_.predict_as(Parameterization::score, x, {alpha, sigma}, out);
  }

  void operator()(const State& x, const Scalars& t, State& out) const {
    const PerSample& t_host = StateOps<State>::scalars_to_host(t);
    const PerSample alpha = process_.alpha(t_host), sigma = process_.sigma(t_host);
    predictor_.predict_as(Parameterization::score, x,
                          {StateOps<State>::scalars_from_host(alpha, x), StateOps<State>::scalars_from_host(sigma, x)}, out);
  }

  // f(t) x - weight g^2(t) s(x, t): the probability-flow drift (weight 1/2) and the reverse SDE's
  // (weight 1), one score evaluation.
  void drift(const State& x, const Scalars& t, double weight, State& out) const {
    const PerSample& t_host = StateOps<State>::scalars_to_host(t);
    const PerSample f = process_.f(t_host), score_weight = -(weight * process_.g2(t_host));
    (*this)(x, t, out);
    StateOps<State>::combine_rows(out, StateOps<State>::scalars_from_host(f, x), x, StateOps<State>::scalars_from_host(score_weight, x),
                                  out);
  }

 private:
  const Process& process_;
  const Predictor<State>& predictor_;
};

// dx/dt = f(t) x - 1/2 g^2(t) s(x, t) in the process's own time and state; integrate from T to
// t_min (or any sub-range) with any ODE stepper.
template <class State>
class ProbabilityFlowOde {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  ProbabilityFlowOde(const Process& process, const Predictor<State>& predictor) : score_(process, predictor) {}

  const Process& process() const { return score_.process(); }

  void drift(const State& x, const Scalars& t, State& out) const { score_.drift(x, t, 0.5, out); }

 private:
  DiffusionScore<State> score_;
};

// dx = [f(t) x - g^2(t) s(x, t)] dt + g(t) dW, run backward in time from T (h < 0): additive noise,
// one Brownian motion per dimension (a path with dims = D).
template <class State>
class ReverseSde {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  ReverseSde(const Process& process, const Predictor<State>& predictor) : score_(process, predictor) {}

  const Process& process() const { return score_.process(); }

  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::additive, .calculus = Calculus::ito, .has_diffusion_derivative = true};
  }

  void drift(const State& x, const Scalars& t, State& out) const { score_.drift(x, t, 1.0, out); }

  // g(t), the same for every dimension (additive noise: x is only read for its shape).
  void diffusion(const State& x, const Scalars& t, State& out) const {
    const PerSample g = process().g2(StateOps<State>::scalars_to_host(t)).sqrt();
    out = StateOps<State>::broadcast_rows(StateOps<State>::scalars_from_host(g, x), x);
  }

  // dg_i/dx_i = 0: the noise is additive, so Milstein's correction vanishes and it is Euler-Maruyama.
  void diffusion_derivative(const State& x, const Scalars&, State& out) const { StateOps<State>::scale(out, 0.0, x); }

 private:
  DiffusionScore<State> score_;
};

// dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~: the probability flow in Karras et al.'s variables,
// with the time of the steppers being sigma~ itself (decreasing; sigma~ > 0). Euler's method on
// it is k-diffusion's sample_euler.
template <class State, DenoiserFor<State> Model>
class ScaledProbabilityFlow {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  explicit ScaledProbabilityFlow(const Model& model) : model_(model) {}

  void drift(const State& x, const Scalars& sigma, State& out) const {
    model_(x, sigma, out);
    const Scalars inverse = 1.0 / sigma;
    const Scalars minus_inverse = -1.0 / sigma;
    StateOps<State>::combine_rows(out, inverse, x, minus_inverse, out);
  }

 private:
  const Model& model_;
};

// dx~/ds = x~ - D(x~; e^s), s = log sigma~: the same flow in log sigma~, smooth in s down to small
// sigma~, where a uniform step is a fixed ratio of sigma~ (the variable of the references' RK4
// solves, tests/support/diffusion_cases.hpp).
template <class State, DenoiserFor<State> Model>
class LogSigmaProbabilityFlow {
 public:
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;

  explicit LogSigmaProbabilityFlow(const Model& model) : model_(model) {}

  void drift(const State& x, const Scalars& s, State& out) const {
    const Scalars sigma = s.exp();
    model_(x, sigma, out);
    Ops::update(out, x, -1.0, {{1.0, out}});  // x - D; `out` is read before it is written
  }

 private:
  const Model& model_;
};

}  // namespace diffode
