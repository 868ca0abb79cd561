#include "experiments/orders.hpp"

#include "problems/geometric_brownian_motion.hpp"
#include "problems/linear_ode.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"
#include "solvers/sde/euler_maruyama.hpp"

#include <fmt/format.h>

#include <cmath>
#include <ostream>

namespace diffode {
namespace {

double least_squares_slope(const std::vector<double>& h, const std::vector<double>& error) {
  const double n = static_cast<double>(h.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const double lx = std::log(h[i]), ly = std::log(error[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

std::vector<double> uniform(double t0, double t1, int n) {
  std::vector<double> g(n + 1);
  for (int i = 0; i <= n; ++i) g[i] = t0 + (t1 - t0) * i / n;
  return g;
}

Batch ode_initial_state() {
  Batch x0(4, 3);
  x0 << 1.0, 0.0, 0.5, -0.3, 0.8, 1.0, 2.0, -1.0, 0.0, 0.1, 0.2, -0.7;
  return x0;
}

// An ODE row: max-norm error at t1 against the exact solution, over a ladder of uniform grids.
template <template <class> class Stepper, class Problem>
OrderRow ode_row(const std::string& problem_name, const Problem& problem, double t0, double t1, std::vector<int> steps) {
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "ODE", .problem = problem_name,
               .declared = Stepper<Batch>::traits.order, .steps = steps, .errors = {}};
  const Batch x0 = ode_initial_state();
  const Batch exact = problem.exact(x0, t0, t1);
  std::vector<double> hs;
  for (int n : steps) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform(t0, t1, n), x);
    hs.push_back(std::abs(t1 - t0) / n);
    row.errors.push_back((x - exact).abs().maxCoeff());
  }
  row.fitted = least_squares_slope(hs, row.errors);
  return row;
}

// A strong-order row: mean over paths of |X_T^h - X_T| against the exact strong solution from the
// same Brownian path, on dyadic grids of [0, 1].
template <template <class> class Stepper, class Problem>
OrderRow strong_row(const std::string& problem_name, const Problem& problem, const Batch& x0, const OrdersOptions& options,
                    std::vector<int> steps) {
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "SDE strong", .problem = problem_name,
               .declared = Stepper<Batch>::traits.strong_order, .steps = steps, .errors = {},
               .paths = static_cast<int>(x0.rows())};
  const BrownianPath path({.seed = options.seed, .t0 = 0.0, .t1 = 1.0, .dims = noise_dims(problem, x0)});
  Batch w1(x0.rows(), path.dims());
  path.point(1.0, 0, w1, nullptr);
  const Batch exact = problem.exact(x0, 0.0, 1.0, w1);
  std::vector<double> hs;
  for (int n : steps) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform(0.0, 1.0, n), x, path);
    hs.push_back(1.0 / n);
    row.errors.push_back((x - exact).abs().rowwise().maxCoeff().mean());
  }
  row.fitted = least_squares_slope(hs, row.errors);
  return row;
}

}  // namespace

std::vector<OrderRow> measure_orders(const OrdersOptions& options) {
  std::vector<OrderRow> rows;
  const auto linear = LinearOde::damped_rotation();
  const std::vector<int> low{32, 64, 128, 256, 512, 1024}, high{8, 16, 32, 64, 128, 256};
  rows.push_back(ode_row<Euler>("linear 3-D (backward)", linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Heun>("linear 3-D (backward)", linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Midpoint>("linear 3-D (backward)", linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Rk4>("linear 3-D (backward)", linear, 2.0, 0.0, high));

  const GeometricBrownianMotion gbm(1.0, 0.5);
  const Batch gbm_x0 = Batch::Ones(options.paths, 1);
  rows.push_back(strong_row<EulerMaruyama>("GBM mu=1 sigma=0.5", gbm, gbm_x0, options, {16, 32, 64, 128, 256, 512}));
  return rows;
}

void print_orders(std::ostream& out, const std::vector<OrderRow>& rows) {
  out << fmt::format("{:<18} {:<11} {:<28} {:>8} {:>8}   {}\n", "stepper", "kind", "problem", "declared", "fitted",
                     "steps (error at first, last)");
  for (const auto& r : rows)
    out << fmt::format("{:<18} {:<11} {:<28} {:>8.2f} {:>8.3f}   {}..{} ({:.2e}, {:.2e})\n", r.stepper, r.kind, r.problem,
                       r.declared, r.fitted, r.steps.front(), r.steps.back(), r.errors.front(), r.errors.back());
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
