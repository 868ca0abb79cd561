#include "experiments/run/orders.hpp"

#include "core/slope_fit.hpp"
#include "problems/order_cases.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/adams_bashforth.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/milstein.hpp"
#include "solvers/sde/sra1.hpp"
#include "solvers/sde/stochastic_heun.hpp"

#include <fmt/format.h>

#include <cmath>
#include <ostream>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

namespace diffode {
namespace {

using order_cases::uniform_grid;


// Calls f.template operator()<Stepper>() for the stepper among the listed ones whose traits carry
// `name`: the cases in problems/order_cases.hpp name their steppers, this layer knows the types.
template <template <class> class First, template <class> class... Rest, class F>
void with_stepper(std::string_view name, F&& f) {
  if (First<Batch>::traits.name == name)
    f.template operator()<First>();
  else if constexpr (sizeof...(Rest) > 0)
    with_stepper<Rest...>(name, std::forward<F>(f));
  else
    throw std::invalid_argument(fmt::format("orders: no stepper named {} for this kind of case", name));
}

// Slope of log(error) against log(h); NaN if any error is 0 or not finite.
double fitted_slope(const std::vector<double>& h, const std::vector<double>& errors) {
  return fit_log_log(h, errors, UnusablePoints::invalidate).slope;
}

// An ODE row: max-norm error at t1 against the exact solution, over a ladder of uniform grids.
template <template <class> class Stepper, class Problem>
OrderRow ode_row(const order_cases::OdeCase& c, const Problem& problem, const Batch& x0) {
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "ODE", .problem = c.problem,
               .declared = Stepper<Batch>::traits.order, .steps = c.steps, .errors = {}};
  const Batch exact = problem.exact(x0, c.t0, c.t1);
  std::vector<double> hs;
  for (int n : c.steps) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform_grid(c.t0, c.t1, n), x);
    hs.push_back(std::abs(c.t1 - c.t0) / n);
    row.errors.push_back((x - exact).abs().maxCoeff());
  }
  row.fitted = fitted_slope(hs, row.errors);
  return row;
}

// The strong solution at t1 on `path` that a case is measured against.
template <template <class> class Stepper, class Problem>
Batch strong_reference(const order_cases::StrongCase& c, const Problem& problem, const Batch& x0, const BrownianPath& path) {
  using order_cases::StrongReference;
  if (c.reference == StrongReference::fine_solve) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform_grid(c.t0, c.t1, c.reference_steps), x, path);
    return x;
  }
  if constexpr (requires(Batch& w) { problem.exact(x0, c.t0, c.t1, w); }) {
    if (c.reference == StrongReference::exact) {
      Batch w1(x0.rows(), path.dims());
      path.point(c.t1, 0, w1, nullptr);
      return problem.exact(x0, c.t0, c.t1, w1);
    }
  }
  if constexpr (std::is_same_v<Problem, OrnsteinUhlenbeck>) {
    if (c.reference == StrongReference::exact_transitions) {
      const int n = c.reference_steps;
      Batch x = x0, dw(x0.rows(), x0.cols()), integral(x0.rows(), x0.cols());
      for (int i = 0; i < n; ++i) {
        const double s0 = c.t0 + (c.t1 - c.t0) * i / n, s1 = c.t0 + (c.t1 - c.t0) * (i + 1) / n;
        path.increment_and_time_integral(s0, s1, 0, dw, integral);
        problem.transition(x, s1 - s0, dw, integral);
      }
      return x;
    }
  }
  throw std::invalid_argument(fmt::format("orders: {} has no such reference solution", c.problem));
}

// A strong-order row: mean over paths of the max-norm error at t1 against the case's reference
// from the same Brownian path.
template <template <class> class Stepper, class Problem>
OrderRow strong_row(const order_cases::StrongCase& c, const Problem& problem, const Batch& x0, const OrdersOptions& options) {
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "SDE strong", .problem = c.problem,
               .declared = c.declared > 0 ? c.declared : Stepper<Batch>::traits.strong_order, .steps = c.steps,
               .errors = {}, .paths = static_cast<int>(x0.rows())};
  const BrownianPath path({.seed = options.seed, .t0 = c.t0, .t1 = c.t1, .dims = noise_dims(problem, x0)});
  const Batch exact = strong_reference<Stepper>(c, problem, x0, path);
  std::vector<double> hs;
  for (int n : c.steps) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform_grid(c.t0, c.t1, n), x, path);
    hs.push_back(std::abs(c.t1 - c.t0) / n);
    row.errors.push_back((x - exact).abs().rowwise().maxCoeff().mean());
  }
  row.fitted = fitted_slope(hs, row.errors);
  return row;
}

// The weak row: Euler-Maruyama's |mean of X_t1^h - E X_t1| over many paths.
OrderRow weak_row(const order_cases::WeakCase& c, const OrdersOptions& options) {
  if (c.stepper != EulerMaruyama<Batch>::traits.name)
    throw std::invalid_argument(fmt::format("orders: no weak row for stepper {}", c.stepper));
  OrderRow row{.stepper = std::string(c.stepper), .kind = "SDE weak", .problem = c.problem,
               .declared = EulerMaruyama<Batch>::traits.weak_order, .steps = c.steps, .errors = {},
               .paths = static_cast<int>(c.paths)};
  const Batch x0 = Batch::Constant(c.paths, 1, c.x0);
  const BrownianPath path({.seed = options.seed + c.seed_offset, .t0 = c.t0, .t1 = c.t1, .dims = 1});
  const double exact_mean = c.ou.mean(Batch::Constant(1, 1, c.x0), c.t0, c.t1)(0, 0);
  std::vector<double> hs;
  for (int n : c.steps) {
    EulerMaruyama<Batch> stepper;
    Batch x = x0;
    integrate(stepper, c.ou, uniform_grid(c.t0, c.t1, n), x, path);
    hs.push_back(std::abs(c.t1 - c.t0) / n);
    row.errors.push_back(std::abs(x.mean() - exact_mean));
  }
  row.fitted = fitted_slope(hs, row.errors);
  return row;
}

}  // namespace

std::vector<OrderRow> measure_orders(const OrdersOptions& options) {
  std::vector<OrderRow> rows;
  order_cases::for_each_ode_case([&](const order_cases::OdeCase& c, const auto& problem, const Batch& x0) {
    with_stepper<Euler, Heun, Midpoint, Rk4, Dopri5, AdamsBashforth2, AdamsBashforth3, AdamsBashforth4>(
        c.stepper, [&]<template <class> class Stepper>() { rows.push_back(ode_row<Stepper>(c, problem, x0)); });
  });
  order_cases::for_each_strong_case(options.paths, [&](const order_cases::StrongCase& c, const auto& problem, const Batch& x0) {
    with_stepper<EulerMaruyama, Milstein, StochasticHeun, Sra1>(
        c.stepper, [&]<template <class> class Stepper>() { rows.push_back(strong_row<Stepper>(c, problem, x0, options)); });
  });
  rows.push_back(weak_row(order_cases::WeakCase{}, options));
  return rows;
}

std::vector<ToleranceRow> measure_adaptive(const OrdersOptions&) {
  std::vector<ToleranceRow> rows;
  const auto linear = LinearOde::damped_rotation();
  const Batch x0 = order_cases::linear_initial_state();
  const double t0 = order_cases::adaptive_t0, t1 = order_cases::adaptive_t1;
  const Batch exact = linear.exact(x0, t0, t1);
  for (double tol : {1e-3, 1e-5, 1e-7, 1e-9}) {
    Dopri5<Batch> stepper;
    Batch x = x0;
    const auto stats = integrate_adaptive(stepper, linear, t0, t1, x, AdaptiveOptions{.rtol = tol, .atol = tol});
    rows.push_back({tol, (x - exact).abs().maxCoeff(), stats.steps, stats.rejected, stats.nfe});
  }
  return rows;
}

void print_orders(std::ostream& out, const std::vector<OrderRow>& rows) {
  out << fmt::format("{:<18} {:<11} {:<36} {:>8} {:>8}   {}\n", "stepper", "kind", "problem", "declared", "fitted",
                     "steps (error at first, last)");
  for (const auto& r : rows)
    out << fmt::format("{:<18} {:<11} {:<36} {:>8.2f} {:>8.3f}   {}..{} ({:.2e}, {:.2e})\n", r.stepper, r.kind, r.problem,
                       r.declared, r.fitted, r.steps.front(), r.steps.back(), r.errors.front(), r.errors.back());
}

void print_adaptive(std::ostream& out, const std::vector<ToleranceRow>& rows) {
  out << fmt::format("\nadaptive Dopri5 (per-sample PI control), linear 3-D on [0, 5]\n{:>8} {:>12} {:>7} {:>9} {:>6}\n", "rtol=atol",
                     "max error", "steps", "rejected", "nfe");
  for (const auto& r : rows)
    out << fmt::format("{:>8.0e} {:>12.3e} {:>7} {:>9} {:>6}\n", r.tolerance, r.error, r.steps, r.rejected, r.nfe);
}

void write_adaptive_markdown(std::ostream& out, const std::vector<ToleranceRow>& rows) {
  out << "\n## Adaptive Dopri5\n\nPer-sample PI step-size control on the linear 3-D problem over [0, 5], error against the "
         "matrix exponential. steps: accepted steps of the sample that took most; rejected: summed over the 4 samples; nfe: batched evaluations.\n\n";
  out << "| rtol = atol | max error | steps | rejected | nfe |\n|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) out << fmt::format("| {:.0e} | {:.3e} | {} | {} | {} |\n", r.tolerance, r.error, r.steps, r.rejected, r.nfe);
}

void write_orders_markdown(std::ostream& out, const std::vector<OrderRow>& rows, const std::string& command) {
  out << "# Empirical orders of convergence\n\n";
  out << fmt::format("Made by `{}`. Fitted order: least-squares slope of log(error) against log(h) over the steps "
                     "listed; ODE error is the max-norm error at the end time against the exact solution; SDE strong "
                     "error is the mean over Brownian paths of the max-norm error against the exact strong solution "
                     "from the same path.\n\n",
                     command);
  out << "| stepper | kind | problem | declared | fitted | steps | error (first -> last) | paths |\n";
  out << "|---|---|---|---:|---:|---|---|---:|\n";
  for (const auto& r : rows)
    out << fmt::format("| {} | {} | {} | {:.2f} | {:.3f} | {}..{} | {:.2e} -> {:.2e} | {} |\n", r.stepper, r.kind, r.problem,
                       r.declared, r.fitted, r.steps.front(), r.steps.back(), r.errors.front(), r.errors.back(),
                       r.paths ? std::to_string(r.paths) : "-");
}

void write_orders_csv(std::ostream& out, const std::vector<OrderRow>& rows) {
  out << "stepper,kind,problem,declared,fitted,steps,error,paths\n";
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.steps.size(); ++i)
      out << fmt::format("{},{},\"{}\",{},{:.6f},{},{:.17g},{}\n", r.stepper, r.kind, r.problem, r.declared, r.fitted,
                         r.steps[i], r.errors[i], r.paths);
}

}  // namespace diffode
