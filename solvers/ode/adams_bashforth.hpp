// Variable-step Adams-Bashforth methods of orders 1 to 4 (Bashforth & Adams 1883; Hairer, Norsett &
// Wanner I, §III.1 and, for variable steps, §III.5).
//
// The k-step method integrates the Lagrange polynomial p through the last k slopes
// (t_{n-j}, f_{n-j}), j = 0..k-1, exactly over the step:
//     x_{n+1} = x_n + int_{t_n}^{t_n+h} p(s) ds = x_n + h sum_j beta_j f_{n-j}.
// With s = (t - t_n)/h the nodes are s_j = (t_{n-j} - t_n)/h (-1, -2, ... on a uniform grid, in
// either direction), and beta_j = int_0^1 l_j(s) ds is computed by expanding the basis polynomial
// l_j in monomials and integrating term by term: exact, no quadrature. The grid may be non-uniform
// (shared by the batch: the coefficients are scalars).
//
// Start-up: the first k-1 steps after reset() (or after a call that does not continue the last
// step) are classical RK4 steps, whose local error O(h^5) leaves order k <= 4 intact. An RK4
// start-up step reuses the slope f(x_n, t_n) the history needs, so it costs 4 evaluations; a
// multistep step costs 1. Over n steps: 4 (k-1) + (n - k + 1) evaluations.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"
#include "solvers/ode/rk4.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

namespace diffode {

namespace detail {

// beta_j = int_0^1 prod_{m != j} (s - s_m) / (s_j - s_m) ds for the k nodes s_0..s_{k-1}.
template <int K>
std::array<double, K> adams_bashforth_weights(const std::array<double, K>& nodes) {
  std::array<double, K> beta{};
  for (int j = 0; j < K; ++j) {
    // Monomial coefficients of the numerator, built one factor (s - s_m) at a time.
    std::array<double, K> poly{};
    poly[0] = 1.0;
    int degree = 0;
    double denominator = 1.0;
    for (int m = 0; m < K; ++m) {
      if (m == j) continue;
      for (int d = degree + 1; d >= 1; --d) poly[d] = poly[d - 1] - nodes[m] * poly[d];
      poly[0] = -nodes[m] * poly[0];
      ++degree;
      denominator *= nodes[j] - nodes[m];
    }
    double integral = 0.0;
    for (int d = 0; d <= degree; ++d) integral += poly[d] / (d + 1);
    beta[j] = integral / denominator;
  }
  return beta;
}

constexpr std::string_view adams_bashforth_names[] = {"", "adams_bashforth1", "adams_bashforth2",
                                                      "adams_bashforth3", "adams_bashforth4"};

}  // namespace detail

template <class State, int Order>
  requires(Order >= 1 && Order <= 4)
class AdamsBashforth {
 public:
  // evaluations_per_step is the multistep cost; the RK4 start-up costs 3 more per start-up step.
  static constexpr StepperTraits traits{
      .name = detail::adams_bashforth_names[Order], .order = Order, .evaluations_per_step = 1};
  static constexpr int startup_steps = Order - 1;
  static constexpr int startup_extra_evaluations = 3;
  using Ops = StateOps<State>;

  void reset() { stored_ = 0; }

  template <class Problem>
  void step(const Problem& problem, double t, double h, State& x) {
    const double tolerance = 64 * std::numeric_limits<double>::epsilon() * std::max(std::abs(t), std::abs(h));
    if (stored_ > 0 && !(std::abs(t - next_time_) <= tolerance)) stored_ = 0;  // not a continuation
    // Newest slope first: shift the history (swaps, no copies) and evaluate f(x_n, t_n).
    for (int j = Order - 1; j >= 1; --j) {
      std::swap(slopes_[j], slopes_[j - 1]);
      times_[j] = times_[j - 1];
    }
    problem.drift(x, Ops::fill(x, t), slopes_[0]);
    times_[0] = t;
    stored_ = std::min(stored_ + 1, Order);

    if (stored_ < Order) {
      rk4_.step_with_first_stage(problem, t, h, slopes_[0], x);
    } else {
      std::array<double, Order> nodes;
      for (int j = 0; j < Order; ++j) nodes[j] = (times_[j] - t) / h;
      const auto beta = detail::adams_bashforth_weights<Order>(nodes);
      if constexpr (Order == 1)
        Ops::update(x, x, h, {{beta[0], slopes_[0]}});
      else if constexpr (Order == 2)
        Ops::update(x, x, h, {{beta[0], slopes_[0]}, {beta[1], slopes_[1]}});
      else if constexpr (Order == 3)
        Ops::update(x, x, h, {{beta[0], slopes_[0]}, {beta[1], slopes_[1]}, {beta[2], slopes_[2]}});
      else
        Ops::update(x, x, h,
                    {{beta[0], slopes_[0]}, {beta[1], slopes_[1]}, {beta[2], slopes_[2]}, {beta[3], slopes_[3]}});
    }
    next_time_ = t + h;
  }

 private:
  std::array<State, Order> slopes_;   // f_n, f_{n-1}, ...
  std::array<double, Order> times_{};  // t_n, t_{n-1}, ...
  int stored_ = 0;
  double next_time_ = 0;
  Rk4<State> rk4_;
};

// Each order as a stepper template of the state alone, for code that takes
// `template <class> class Stepper` (the registry, the order tests and table).
template <class State>
using AdamsBashforth1 = AdamsBashforth<State, 1>;
template <class State>
using AdamsBashforth2 = AdamsBashforth<State, 2>;
template <class State>
using AdamsBashforth3 = AdamsBashforth<State, 3>;
template <class State>
using AdamsBashforth4 = AdamsBashforth<State, 4>;

}  // namespace diffode
