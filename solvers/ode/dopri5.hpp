// Dormand-Prince 5(4) (Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae",
// J. Comput. Appl. Math. 6(1), 19-26), tableau as in Hairer, Norsett & Wanner I, §II.5, Table 5.2.
//
// Seven stages, the fifth-order solution propagated (local extrapolation) and the embedded
// fourth-order one used only for the error estimate err = h sum_i (b_i - bhat_i) k_i. The last row
// of A equals b, so the seventh stage f(x_{n+1}, t_{n+1}) is the next step's first (FSAL): six
// evaluations per accepted step after the first.
//
// Two ways in: step() is a fixed-step order-5 stepper for integrate(); attempt()/accept() are what
// the adaptive driver (solvers/adaptive.hpp) uses, with a time and a step size per sample.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

namespace diffode {

// The Butcher tableau as data; tests/solvers/ode_order_test.cpp checks c_i = sum_j a_ij and the
// order conditions (order 5 for b, order 4 for bhat) over all rooted trees.
struct Dopri5Tableau {
  static constexpr std::string_view name = "dopri5";
  static constexpr int stages = 7;
  static constexpr std::array<double, 7> c{0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
  static constexpr std::array<std::array<double, 7>, 7> a{{
      {0, 0, 0, 0, 0, 0, 0},
      {1.0 / 5, 0, 0, 0, 0, 0, 0},
      {3.0 / 40, 9.0 / 40, 0, 0, 0, 0, 0},
      {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0, 0},
      {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0, 0},
      {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0, 0},
      {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
  }};
  static constexpr std::array<double, 7> b{35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0};
  static constexpr std::array<double, 7> b_hat{5179.0 / 57600, 0,          7571.0 / 16695, 393.0 / 640,
                                               -92097.0 / 339200, 187.0 / 2100, 1.0 / 40};
  static constexpr int order = 5;
  static constexpr int embedded_order = 4;
};

template <class State>
class Dopri5 {
 public:
  static constexpr StepperTraits traits{.name = "dopri5", .order = 5, .adaptive = true, .evaluations_per_step = 6};
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;
  using Tableau = Dopri5Tableau;
  // The order the step-size controller's exponent uses: min(order, embedded order) + 1.
  static constexpr int error_order = Tableau::embedded_order + 1;

  // Forget the stored first stage: call when the state or time is changed outside the stepper.
  void reset() { fsal_valid_ = false; }

  // Fixed step of order 5. Consecutive calls must continue where the last one ended (as integrate()
  // does); a call at another time, or after reset(), re-evaluates the first stage.
  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    const double tolerance = 64 * std::numeric_limits<double>::epsilon() * std::max(std::abs(t), std::abs(h));
    if (fsal_valid_ && !(std::abs(t - fsal_time_) <= tolerance)) fsal_valid_ = false;
    stages(problem, t, h, x, next_);
    std::swap(x, next_);
    accept_all();
    fsal_time_ = t + h;
  }

  // One trial step from x, leaving x alone: `x_new` gets the fifth-order solution and `error` the
  // difference to the embedded fourth-order one. `t` and `h` are either doubles (one for the batch)
  // or Scalars (one per sample; a sample with h = 0 stays where it is). Follow with accept() or
  // accept_all() so the next attempt can reuse the last stage where the step was taken.
  template <class Problem, class Time, class Step>
  void attempt(const Problem& problem, const Time& t, const Step& h, const State& x, State& x_new, State& error) {
    stages(problem, t, h, x, x_new);
    if (!have_zero_ || Ops::samples(zero_) != Ops::samples(x)) {
      zero_ = Ops::zeros_like(x);
      have_zero_ = true;
    }
    constexpr auto& b = Tableau::b;
    constexpr auto& bh = Tableau::b_hat;
    Ops::update(error, zero_, h,
                {{b[0] - bh[0], k_[0]}, {b[2] - bh[2], k_[2]}, {b[3] - bh[3], k_[3]}, {b[4] - bh[4], k_[4]},
                 {b[5] - bh[5], k_[5]}, {b[6] - bh[6], k_[6]}});
  }

  // The samples in `taken` moved to x_new at t + h, so their next first stage is this attempt's
  // last; the others keep theirs (same x, same t).
  template <class Mask>
  void accept(const Mask& taken) {
    Ops::select_rows(k_[0], taken, k_[6]);
    fsal_valid_ = true;
  }
  void accept_all() {
    std::swap(k_[0], k_[6]);
    fsal_valid_ = true;
  }

 private:
  static double stage_time(double t, double c, double h) { return t + c * h; }
  static Scalars stage_time(const Scalars& t, double c, const Scalars& h) { return t + c * h; }
  static Scalars times(const State& like, double t) { return Ops::fill(like, t); }
  static const Scalars& times(const State&, const Scalars& t) { return t; }

  // The seven stages from x; the fifth-order solution (stage 7's argument) goes to x_new, which must
  // not alias x.
  template <class Problem, class Time, class Step>
  void stages(const Problem& problem, const Time& t, const Step& h, const State& x, State& x_new) {
    constexpr auto& a = Tableau::a;
    constexpr auto& c = Tableau::c;
    if (!fsal_valid_) problem.drift(x, times(x, t), k_[0]);
    Ops::update(stage_, x, h, {{a[1][0], k_[0]}});
    problem.drift(stage_, times(x, stage_time(t, c[1], h)), k_[1]);
    Ops::update(stage_, x, h, {{a[2][0], k_[0]}, {a[2][1], k_[1]}});
    problem.drift(stage_, times(x, stage_time(t, c[2], h)), k_[2]);
    Ops::update(stage_, x, h, {{a[3][0], k_[0]}, {a[3][1], k_[1]}, {a[3][2], k_[2]}});
    problem.drift(stage_, times(x, stage_time(t, c[3], h)), k_[3]);
    Ops::update(stage_, x, h, {{a[4][0], k_[0]}, {a[4][1], k_[1]}, {a[4][2], k_[2]}, {a[4][3], k_[3]}});
    problem.drift(stage_, times(x, stage_time(t, c[4], h)), k_[4]);
    Ops::update(stage_, x, h,
                {{a[5][0], k_[0]}, {a[5][1], k_[1]}, {a[5][2], k_[2]}, {a[5][3], k_[3]}, {a[5][4], k_[4]}});
    problem.drift(stage_, times(x, stage_time(t, c[5], h)), k_[5]);
    // Stage 7 sits at the fifth-order solution itself (row 7 of A is b; b_2 = b_7 = 0).
    constexpr auto& b = Tableau::b;
    Ops::update(x_new, x, h, {{b[0], k_[0]}, {b[2], k_[2]}, {b[3], k_[3]}, {b[4], k_[4]}, {b[5], k_[5]}});
    problem.drift(x_new, times(x, stage_time(t, c[6], h)), k_[6]);
  }

  std::array<State, 7> k_;
  State stage_, next_, zero_;
  bool have_zero_ = false;
  bool fsal_valid_ = false;
  double fsal_time_ = 0;
};

}  // namespace diffode
