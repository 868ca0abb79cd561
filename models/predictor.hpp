// Where predictions come from, as the samplers see it.
//
// Under the forward marginal x = alpha x0 + sigma eps (docs/DESIGN.md §3) a model predicts one of
// five interchangeable quantities; at a fixed noise level each is an affine function of any other
// and of x, so a predictor outputs its native one and the free functions below convert:
//   eps    the noise (Ho et al. 2020, arXiv:2006.11239)
//   x0     the data, i.e. the denoiser D(x) = E[x0 | x] (Karras et al. 2022, arXiv:2206.00364)
//   v      alpha eps - sigma x0 (Salimans & Ho 2022, arXiv:2202.00512, section 4)
//   score  grad log p(x) = -eps / sigma (Song et al. 2021, arXiv:2011.13456; Tweedie)
//   flow   the velocity u = alpha' x0 + sigma' eps of the interpolant (Lipman et al. 2023,
//          arXiv:2210.02747; Liu et al. 2023, arXiv:2209.03003); it needs the time derivatives.
// A predictor is handed alpha and sigma per sample, never the process or the time: the same network
// or exact mixture serves VP, VE, EDM and flow processes alike.
//
// Every predict() call is one evaluation for the whole batch and is counted (NFE), which is the
// cost measure every sampler comparison is reported against.
#pragma once

#include "core/state.hpp"

#include <atomic>
#include <stdexcept>
#include <string_view>

namespace diffode {

enum class Parameterization { eps, x0, v, score, flow };

constexpr std::string_view to_string(Parameterization p) {
  switch (p) {
    case Parameterization::eps: return "eps";
    case Parameterization::x0: return "x0";
    case Parameterization::v: return "v";
    case Parameterization::score: return "score";
    case Parameterization::flow: return "flow";
  }
  return "?";
}

// The marginal's coefficients at each sample's time. The derivatives (d/dt) are needed only to
// produce or read a flow velocity; leave them null otherwise.
template <class Scalars>
struct NoiseLevels {
  const Scalars& alpha;
  const Scalars& sigma;
  const Scalars* alpha_dot = nullptr;
  const Scalars* sigma_dot = nullptr;
};

// target = on_x * x + on_prediction * prediction, per sample.
template <class T>
struct AffineMap {
  T on_x;
  T on_prediction;
};

// The affine map taking a `from` prediction to a `to` prediction at these levels. T is anything
// with elementwise arithmetic against doubles (double, Eigen arrays of per-sample values, tensors),
// so this table of formulas exists once for every state type.
//
// Each native prediction p first gives x0 and eps as affine functions of (x, p), solving the 2x2
// system {x = alpha x0 + sigma eps, p = a x0 + b eps}; the target is then read off x0 and eps.
// Divisions are those of the mathematics: x0 from eps needs alpha != 0, eps from x0 needs
// sigma != 0, a flow velocity needs alpha sigma' - sigma alpha' != 0 (= -alpha sigma dlambda/dt).
template <class T>
AffineMap<T> conversion(Parameterization from, Parameterization to, const T& alpha, const T& sigma,
                        const T* alpha_dot = nullptr, const T* sigma_dot = nullptr) {
  using P = Parameterization;
  const bool needs_rates = from == P::flow || to == P::flow;
  if (needs_rates && (alpha_dot == nullptr || sigma_dot == nullptr))
    throw std::invalid_argument("conversion to or from a flow velocity needs alpha' and sigma'");
  const T zero = alpha * 0.0;
  const T one = zero + 1.0;
  if (from == to) return {zero, one};

  AffineMap<T> x0{zero, zero}, eps{zero, zero};
  switch (from) {
    case P::eps:
      eps = {zero, one};
      x0 = {1.0 / alpha, -sigma / alpha};
      break;
    case P::x0:
      x0 = {zero, one};
      eps = {1.0 / sigma, -alpha / sigma};
      break;
    case P::v: {  // x = alpha x0 + sigma eps, v = alpha eps - sigma x0
      const T norm = alpha * alpha + sigma * sigma;
      x0 = {alpha / norm, -sigma / norm};
      eps = {sigma / norm, alpha / norm};
      break;
    }
    case P::score:  // eps = -sigma s; x0 = (x + sigma^2 s) / alpha (Tweedie)
      eps = {zero, -sigma};
      x0 = {1.0 / alpha, sigma * sigma / alpha};
      break;
    case P::flow: {  // x = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps
      const T det = alpha * *sigma_dot - sigma * *alpha_dot;
      x0 = {*sigma_dot / det, -sigma / det};
      eps = {-*alpha_dot / det, alpha / det};
      break;
    }
  }
  // Only the terms a target uses are combined, so that an unused infinite coefficient (x0 from eps
  // at alpha = 0, the end of a flow process) never meets a zero weight and turns into NaN.
  switch (to) {
    case P::eps: return eps;
    case P::x0: return x0;
    case P::score: return {eps.on_x * (-1.0 / sigma), eps.on_prediction * (-1.0 / sigma)};
    case P::v: return {alpha * eps.on_x - sigma * x0.on_x, alpha * eps.on_prediction - sigma * x0.on_prediction};
    case P::flow:
      return {*alpha_dot * x0.on_x + *sigma_dot * eps.on_x, *alpha_dot * x0.on_prediction + *sigma_dot * eps.on_prediction};
  }
  throw std::invalid_argument("conversion: unknown parameterization");
}

// Converts a batch of `from` predictions (made at x) to `to` predictions. `out` may alias
// `prediction`.
template <class State>
void convert(Parameterization from, Parameterization to, const State& x, const State& prediction,
             const NoiseLevels<typename StateOps<State>::Scalars>& levels, State& out) {
  if (from == to) {
    if (&out != &prediction) out = StateOps<State>::clone(prediction);
    return;
  }
  const auto map = conversion(from, to, levels.alpha, levels.sigma, levels.alpha_dot, levels.sigma_dot);
  // out = a_n x_n + b_n y_n per sample: the one state operation a conversion needs.
  StateOps<State>::combine_rows(out, map.on_x, x, map.on_prediction, prediction);
}

// The interface every source of predictions implements: exact mixtures, LibTorch networks,
// TorchScript modules, a classifier-free-guidance wrapper. Polymorphic, hence neither copied nor
// moved; share it by reference. predict() may be called from several threads at once as long as
// evaluate() allows it (the NFE counter is atomic).
template <class State>
class Predictor {
 public:
  using Scalars = typename StateOps<State>::Scalars;

  Predictor() = default;
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;
  virtual ~Predictor() = default;

  // What evaluate() outputs.
  virtual Parameterization native() const = 0;

  // One evaluation: the native prediction at x, for samples at levels (alpha_n, sigma_n).
  void predict(const State& x, const Scalars& alpha, const Scalars& sigma, State& out) const {
    nfe_.fetch_add(1, std::memory_order_relaxed);
    evaluate(x, alpha, sigma, out);
  }

  // One evaluation, returned as `target` (a flow target or source needs the levels' derivatives).
  void predict_as(Parameterization target, const State& x, const NoiseLevels<Scalars>& levels, State& out) const {
    predict(x, levels.alpha, levels.sigma, out);
    convert(native(), target, x, out, levels, out);
  }

  // Evaluations since construction or the last reset.
  Index nfe() const { return nfe_.load(std::memory_order_relaxed); }
  void reset_nfe() { nfe_.store(0, std::memory_order_relaxed); }

 protected:
  virtual void evaluate(const State& x, const Scalars& alpha, const Scalars& sigma, State& out) const = 0;

 private:
  mutable std::atomic<Index> nfe_{0};
};

}  // namespace diffode
