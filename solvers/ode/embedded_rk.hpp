// An explicit embedded Runge-Kutta pair driven by its Butcher tableau as data (Hairer, Norsett &
// Wanner I, §II.4: embedded formulas, local extrapolation; §II.5 for Dormand-Prince's FSAL
// device). The tableau types (solvers/ode/verner65.hpp, ...) give c, a, b, b_hat, the orders and
// the stage count; this file turns them into the two interfaces the project's drivers use, the same
// as Dopri5's (solvers/ode/dopri5.hpp): step() for integrate() on a fixed grid, and attempt()/accept()
// for integrate_adaptive() with a time and a step size per sample.
//
// The higher-order solution b is propagated, err = h sum_i (b_i - bhat_i) k_i. When the last row of
// A is b and b_s = 0 (FSAL), the last stage is f at the new solution and becomes the next step's
// first: s - 1 evaluations per accepted step. Otherwise a step costs s evaluations, and a step in
// which no sample moved keeps its first stage (a rejected step then costs s - 1).
//
// Dopri5 keeps its own hand-unrolled class (bit for bit what the shipped results were made with);
// tests/solvers/ode_order_test.cpp checks that this class with Dopri5's tableau gives the same steps.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>

namespace diffode {

// A tableau is FSAL when its last row of A is b and b's last weight is 0.
template <class Tableau>
constexpr bool tableau_is_fsal() {
  constexpr int s = Tableau::stages;
  if (Tableau::b[s - 1] != 0.0) return false;
  for (int j = 0; j < s; ++j)
    if (Tableau::a[s - 1][j] != Tableau::b[j]) return false;
  return true;
}

template <class State, class Tableau>
class EmbeddedRungeKutta {
  static constexpr int S = Tableau::stages;

 public:
  static constexpr bool fsal = tableau_is_fsal<Tableau>();
  static constexpr StepperTraits traits{
      .name = Tableau::name, .order = Tableau::order, .adaptive = true, .evaluations_per_step = fsal ? S - 1 : S};
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;
  // The step-size controller's exponent uses min(order, embedded order) + 1.
  static constexpr int error_order = std::min(Tableau::order, Tableau::embedded_order) + 1;

  void reset() { first_valid_ = false; }

  // Fixed step of the tableau's order. Consecutive calls must continue where the last one ended
  // (as integrate() does) to reuse an FSAL stage; a call elsewhere re-evaluates the first stage.
  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    const double tolerance = 64 * std::numeric_limits<double>::epsilon() * std::max(std::abs(t), std::abs(h));
    if (first_valid_ && !(std::abs(t - first_time_) <= tolerance)) first_valid_ = false;
    stages(problem, t, h, x, next_);
    std::swap(x, next_);
    accept_all();
    first_time_ = t + h;
  }

  // One trial step from x, leaving x alone: x_new gets the propagated solution, `error` its
  // difference to the embedded one. `t` and `h`: doubles (the batch) or Scalars (one per sample).
  template <class Problem, class Time, class Step>
  void attempt(const Problem& problem, const Time& t, const Step& h, const State& x, State& x_new, State& error) {
    stages(problem, t, h, x, x_new);
    if (!have_zero_ || Ops::samples(zero_) != Ops::samples(x)) {
      zero_ = Ops::zeros_like(x);
      have_zero_ = true;
    }
    combine<kErrorRow>(error, zero_, h, std::make_index_sequence<count<kErrorRow>()>{});
  }

  // The samples in `taken` moved to x_new. FSAL: their next first stage is this attempt's last.
  // Otherwise the first stage is still f(x, t) only if no sample moved.
  template <class Mask>
  void accept(const Mask& taken) {
    if constexpr (fsal) {
      Ops::select_rows(k_[0], taken, k_[S - 1]);
      first_valid_ = true;
    } else {
      first_valid_ = !taken.any();
    }
  }
  void accept_all() {
    if constexpr (fsal) {
      std::swap(k_[0], k_[S - 1]);
      first_valid_ = true;
    } else {
      first_valid_ = false;
    }
  }

 private:
  // Rows 0..S-1 of A, then b (kWeightRow) and b - b_hat (kErrorRow), as coefficient vectors.
  static constexpr int kWeightRow = S, kErrorRow = S + 1;
  template <int Row>
  static constexpr std::array<double, S> coefficients() {
    if constexpr (Row < S) {
      return Tableau::a[Row];
    } else if constexpr (Row == kWeightRow) {
      return Tableau::b;
    } else {
      std::array<double, S> e{};
      for (int j = 0; j < S; ++j) e[j] = Tableau::b[j] - Tableau::b_hat[j];
      return e;
    }
  }
  // The stages a row actually uses (its nonzero coefficients), so zeros cost nothing and a
  // non-finite stage that a row does not use cannot leak into it.
  template <int Row>
  static constexpr std::size_t count() {
    std::size_t n = 0;
    for (double v : coefficients<Row>())
      if (v != 0.0) ++n;
    return n;
  }
  template <int Row>
  static constexpr std::array<int, count<Row>()> used() {
    std::array<int, count<Row>()> index{};
    std::size_t n = 0;
    const auto w = coefficients<Row>();
    for (int j = 0; j < S; ++j)
      if (w[j] != 0.0) index[n++] = j;
    return index;
  }
  // out = x + h sum_j w_j k_j over the row's used stages.
  template <int Row, class Step, std::size_t... J>
  void combine(State& out, const State& x, const Step& h, std::index_sequence<J...>) {
    static constexpr auto w = coefficients<Row>();
    static constexpr auto index = used<Row>();
    Ops::update(out, x, h, {Term<State>{w[index[J]], k_[index[J]]}...});
  }

  static double stage_time(double t, double c, double h) { return t + c * h; }
  static Scalars stage_time(const Scalars& t, double c, const Scalars& h) { return t + c * h; }
  static Scalars times(const State& like, double t) { return Ops::fill(like, t); }
  static const Scalars& times(const State&, const Scalars& t) { return t; }

  template <int I, class Problem, class Time, class Step>
  void stage(const Problem& problem, const Time& t, const Step& h, const State& x, State& x_new) {
    if constexpr (fsal && I == S - 1) {
      // The last stage sits at the solution itself.
      combine<kWeightRow>(x_new, x, h, std::make_index_sequence<count<kWeightRow>()>{});
      problem.drift(x_new, times(x, stage_time(t, Tableau::c[I], h)), k_[I]);
    } else {
      combine<I>(stage_, x, h, std::make_index_sequence<count<I>()>{});
      problem.drift(stage_, times(x, stage_time(t, Tableau::c[I], h)), k_[I]);
    }
  }

  // All stages from x; the solution goes to x_new, which must not alias x.
  template <class Problem, class Time, class Step>
  void stages(const Problem& problem, const Time& t, const Step& h, const State& x, State& x_new) {
    if (!first_valid_) problem.drift(x, times(x, t), k_[0]);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (stage<static_cast<int>(I) + 1>(problem, t, h, x, x_new), ...);
    }(std::make_index_sequence<S - 1>{});
    if constexpr (!fsal) combine<kWeightRow>(x_new, x, h, std::make_index_sequence<count<kWeightRow>()>{});
  }

  std::array<State, S> k_;
  State stage_, next_, zero_;
  bool have_zero_ = false;
  bool first_valid_ = false;
  double first_time_ = 0;
};

}  // namespace diffode
