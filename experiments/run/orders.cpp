#include "experiments/run/orders.hpp"

#include "problems/additive_sde.hpp"
#include "problems/geometric_brownian_motion.hpp"
#include "problems/linear_ode.hpp"
#include "problems/nonlinear_ode.hpp"
#include "problems/ornstein_uhlenbeck.hpp"
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

// Inside (0, 1), where the logistic flow stays bounded.
Batch logistic_initial_state() {
  Batch x0(4, 3);
  x0 << 0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.05, 0.6, 0.8, 0.45, 0.25, 0.65;
  return x0;
}

template <class S>
using Ab2 = AdamsBashforth<S, 2>;
template <class S>
using Ab3 = AdamsBashforth<S, 3>;
template <class S>
using Ab4 = AdamsBashforth<S, 4>;

// An ODE row: max-norm error at t1 against the exact solution, over a ladder of uniform grids.
template <template <class> class Stepper, class Problem>
OrderRow ode_row(const std::string& problem_name, const Problem& problem, double t0, double t1, std::vector<int> steps) {
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "ODE", .problem = problem_name,
               .declared = Stepper<Batch>::traits.order, .steps = steps, .errors = {}};
  const Batch x0 = std::is_same_v<Problem, LinearOde> ? ode_initial_state() : logistic_initial_state();
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

// A strong-order row: mean over paths of |X_T^h - X_T| against a solution from the same Brownian
// path (exact where the problem has one, else a fine solve), on dyadic grids of [0, 1].
template <template <class> class Stepper, class Problem, class Reference>
OrderRow strong_row(const std::string& problem_name, const Problem& problem, const Batch& x0, const OrdersOptions& options,
                    std::vector<int> steps, Reference&& reference, double declared = 0) {
  // `declared` overrides the stepper's general strong order where the noise raises it (additive).
  OrderRow row{.stepper = std::string(Stepper<Batch>::traits.name), .kind = "SDE strong", .problem = problem_name,
               .declared = declared > 0 ? declared : Stepper<Batch>::traits.strong_order, .steps = steps, .errors = {},
               .paths = static_cast<int>(x0.rows())};
  const BrownianPath path({.seed = options.seed, .t0 = 0.0, .t1 = 1.0, .dims = noise_dims(problem, x0)});
  const Batch exact = reference(path);
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

template <class Problem>
auto exact_at_one(const Problem& problem, const Batch& x0) {
  return [&problem, x0](const BrownianPath& path) {
    Batch w1(x0.rows(), path.dims());
    path.point(1.0, 0, w1, nullptr);
    return problem.exact(x0, 0.0, 1.0, w1);
  };
}

// OU's strong solution, chained over 2^12 exact transitions of the same path.
auto ou_exact(const OrnsteinUhlenbeck& ou, const Batch& x0) {
  return [&ou, x0](const BrownianPath& path) {
    const int n = 4096;
    Batch x = x0, dw(x0.rows(), x0.cols()), integral(x0.rows(), x0.cols());
    for (int i = 0; i < n; ++i) {
      path.increment_and_time_integral(double(i) / n, double(i + 1) / n, 0, dw, integral);
      ou.transition(x, 1.0 / n, dw, integral);
    }
    return x;
  };
}

// A fine solve on the same path, for problems without a closed form.
template <template <class> class Stepper, class Problem>
auto fine_solve(const Problem& problem, const Batch& x0, int steps) {
  return [&problem, x0, steps](const BrownianPath& path) {
    Stepper<Batch> stepper;
    Batch x = x0;
    integrate(stepper, problem, uniform(0.0, 1.0, steps), x, path);
    return x;
  };
}

// Weak error of Euler-Maruyama on OU: |mean of X_T^h - E X_T| over many paths, against the exact mean.
OrderRow weak_row(const OrnsteinUhlenbeck& ou, const OrdersOptions& options, std::vector<int> steps) {
  const Index paths = 16384;
  OrderRow row{.stepper = "euler_maruyama", .kind = "SDE weak", .problem = "OU mean, theta=2 sigma=0.1",
               .declared = EulerMaruyama<Batch>::traits.weak_order, .steps = steps, .errors = {}, .paths = static_cast<int>(paths)};
  const Batch x0 = Batch::Ones(paths, 1);
  const BrownianPath path({.seed = options.seed + 1, .t0 = 0.0, .t1 = 1.0, .dims = 1});
  const double exact_mean = ou.mean(Batch::Ones(1, 1), 0.0, 1.0)(0, 0);
  std::vector<double> hs;
  for (int n : steps) {
    EulerMaruyama<Batch> stepper;
    Batch x = x0;
    integrate(stepper, ou, uniform(0.0, 1.0, n), x, path);
    hs.push_back(1.0 / n);
    row.errors.push_back(std::abs(x.mean() - exact_mean));
  }
  row.fitted = least_squares_slope(hs, row.errors);
  return row;
}

}  // namespace

std::vector<OrderRow> measure_orders(const OrdersOptions& options) {
  std::vector<OrderRow> rows;
  const auto linear = LinearOde::damped_rotation();
  const ModulatedLogisticOde logistic(PerSample::LinSpaced(3, 0.8, 1.6));
  const std::vector<int> low{32, 64, 128, 256, 512, 1024}, mid{16, 32, 64, 128, 256, 512}, high{8, 16, 32, 64, 128, 256};
  const std::string lin = "linear 3-D, t 2 -> 0", logi = "logistic, t 0 -> 4";
  rows.push_back(ode_row<Euler>(lin, linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Heun>(lin, linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Midpoint>(lin, linear, 2.0, 0.0, low));
  rows.push_back(ode_row<Rk4>(lin, linear, 2.0, 0.0, high));
  rows.push_back(ode_row<Dopri5>(lin, linear, 2.0, 0.0, high));
  rows.push_back(ode_row<Ab2>(lin, linear, 2.0, 0.0, mid));
  rows.push_back(ode_row<Ab3>(lin, linear, 2.0, 0.0, mid));
  rows.push_back(ode_row<Ab4>(lin, linear, 2.0, 0.0, mid));
  rows.push_back(ode_row<Euler>(logi, logistic, 0.0, 4.0, low));
  rows.push_back(ode_row<Heun>(logi, logistic, 0.0, 4.0, low));
  rows.push_back(ode_row<Midpoint>(logi, logistic, 0.0, 4.0, low));
  rows.push_back(ode_row<Rk4>(logi, logistic, 0.0, 4.0, {32, 64, 128, 256, 512}));
  rows.push_back(ode_row<Dopri5>(logi, logistic, 0.0, 4.0, {32, 64, 128, 256, 512}));
  rows.push_back(ode_row<Ab4>(logi, logistic, 0.0, 4.0, {64, 128, 256, 512, 1024}));

  const int paths = options.paths;
  const GeometricBrownianMotion gbm(1.0, 0.5), gbm_strat(1.0, 0.5, Calculus::stratonovich);
  const Batch ones = Batch::Ones(paths, 2);
  const std::vector<int> sde_steps{16, 32, 64, 128, 256, 512};
  rows.push_back(strong_row<EulerMaruyama>("GBM mu=1 sigma=0.5 (Ito)", gbm, ones, options, sde_steps, exact_at_one(gbm, ones)));
  rows.push_back(strong_row<Milstein>("GBM mu=1 sigma=0.5 (Ito)", gbm, ones, options, {8, 16, 32, 64, 128, 256},
                                      exact_at_one(gbm, ones)));
  rows.push_back(strong_row<StochasticHeun>("GBM mu=1 sigma=0.5 (Stratonovich)", gbm_strat, ones, options,
                                            {8, 16, 32, 64, 128, 256}, exact_at_one(gbm_strat, ones)));
  const OrnsteinUhlenbeck ou(2.0, 0.5, 0.8);
  // Euler-Maruyama is strong order 1 for additive noise (Kloeden & Platen 1992, Sec. 10.2).
  rows.push_back(strong_row<EulerMaruyama>("OU theta=2 sigma=0.8 (additive)", ou, ones, options, {8, 16, 32, 64, 128, 256},
                                           ou_exact(ou, ones), 1.0));
  const AdditiveNonlinearSde additive(Eigen::ArrayXd::LinSpaced(2, 1.6, 0.8));
  const Batch zeros = Batch::Zero(paths, 2);
  rows.push_back(strong_row<Sra1>("nonlinear additive (fine SRA1 ref.)", additive, zeros, options, {8, 16, 32, 64, 128},
                                  fine_solve<Sra1>(additive, zeros, 2048)));
  rows.push_back(weak_row(OrnsteinUhlenbeck(2.0, 0.0, 0.1), options, {4, 8, 16, 32, 64}));
  return rows;
}

std::vector<ToleranceRow> measure_adaptive(const OrdersOptions&) {
  std::vector<ToleranceRow> rows;
  const auto linear = LinearOde::damped_rotation();
  const Batch x0 = ode_initial_state();
  const Batch exact = linear.exact(x0, 0.0, 5.0);
  for (double tol : {1e-3, 1e-5, 1e-7, 1e-9}) {
    Dopri5<Batch> stepper;
    Batch x = x0;
    const auto stats = integrate_adaptive(stepper, linear, 0.0, 5.0, x, AdaptiveOptions{.rtol = tol, .atol = tol});
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
