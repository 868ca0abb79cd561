// The known-solution order cases: what `diffode orders` measures (experiments/run/orders.cpp) and
// tests/experiments/orders_test.cpp asserts row by row, kept in one place so the published table
// and the tests cannot drift apart; with them the pieces the solver tests share with that table
// (the uniform grid, the linear problem's initial batch and the adaptive run's interval).
//
// A case names its stepper by StepperTraits::name: this layer sits below solvers/, and the reader
// maps the name to the stepper type. Its declared order is the stepper's own (its traits) unless
// the case sets one, where the problem's structure raises it.
#pragma once

#include "core/state.hpp"
#include "problems/additive_sde.hpp"
#include "problems/geometric_brownian_motion.hpp"
#include "problems/linear_ode.hpp"
#include "problems/nonlinear_ode.hpp"
#include "problems/ornstein_uhlenbeck.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace diffode::order_cases {

// n + 1 equally spaced points from t0 to t1 (either direction), the last exactly t1.
inline std::vector<double> uniform_grid(double t0, double t1, int n) {
  std::vector<double> g(n + 1);
  for (int i = 0; i <= n; ++i) g[i] = t0 + (t1 - t0) * i / n;
  g[n] = t1;
  return g;
}

// Four samples of the 3-D linear problem (LinearOde::damped_rotation), spread over all three modes.
inline Batch linear_initial_state() {
  Batch x0(4, 3);
  x0 << 1.0, 0.0, 0.5,
        -0.3, 0.8, 1.0,
         2.0, -1.0, 0.0,
         0.1, 0.2, -0.7;
  return x0;
}

// Inside (0, 1), where the logistic flow stays bounded.
inline Batch logistic_initial_state() {
  Batch x0(4, 3);
  x0 << 0.1, 0.5, 0.9,
        0.3, 0.7, 0.2,
        0.05, 0.6, 0.8,
        0.45, 0.25, 0.65;
  return x0;
}

// Adaptive Dopri5 on the linear problem from linear_initial_state(): the interval of the orders
// table's tolerance ladder and of the adaptive tests' forward run.
inline constexpr double adaptive_t0 = 0.0, adaptive_t1 = 5.0;

// --- ODE: max-norm error at t1 against the exact solution, over uniform grids ----------------------

struct OdeCase {
  std::string_view stepper;  // StepperTraits::name
  std::string problem;       // the table's label
  double t0 = 0, t1 = 0;
  std::vector<int> steps;
};

// Calls visit(const OdeCase&, const Problem&, const Batch& x0) for each ODE row, in table order.
template <class Visit>
void for_each_ode_case(Visit&& visit) {
  const auto linear = LinearOde::damped_rotation();
  const ModulatedLogisticOde logistic(PerSample::LinSpaced(3, 0.8, 1.6));
  const Batch x_linear = linear_initial_state(), x_logistic = logistic_initial_state();
  const std::vector<int> low{32, 64, 128, 256, 512, 1024}, mid{16, 32, 64, 128, 256, 512}, high{8, 16, 32, 64, 128, 256};
  const std::string lin = "linear 3-D, t 2 -> 0", logi = "logistic, t 0 -> 4";
  for (std::string_view s : {"euler", "heun", "midpoint"}) visit(OdeCase{s, lin, 2.0, 0.0, low}, linear, x_linear);
  for (std::string_view s : {"rk4", "dopri5"}) visit(OdeCase{s, lin, 2.0, 0.0, high}, linear, x_linear);
  for (std::string_view s : {"adams_bashforth2", "adams_bashforth3", "adams_bashforth4"})
    visit(OdeCase{s, lin, 2.0, 0.0, mid}, linear, x_linear);
  for (std::string_view s : {"euler", "heun", "midpoint"}) visit(OdeCase{s, logi, 0.0, 4.0, low}, logistic, x_logistic);
  for (std::string_view s : {"rk4", "dopri5"})
    visit(OdeCase{s, logi, 0.0, 4.0, {32, 64, 128, 256, 512}}, logistic, x_logistic);
  visit(OdeCase{"adams_bashforth4", logi, 0.0, 4.0, {64, 128, 256, 512, 1024}}, logistic, x_logistic);
}

// --- SDE strong: mean over paths of the max-norm error at t1 against a solution from the same ---
// Brownian path, every step count driven by the same paths (seeded by the run's seed).

enum class StrongReference {
  exact,                // the problem's exact(x0, t0, t1, W(t1))
  exact_transitions,    // OrnsteinUhlenbeck::transition chained over reference_steps intervals
  fine_solve,           // the case's stepper itself with reference_steps steps
};

struct StrongCase {
  std::string_view stepper;  // StepperTraits::name
  std::string problem;
  double t0 = 0, t1 = 1;
  std::vector<int> steps;
  double declared = 0;  // 0: the stepper's strong order
  StrongReference reference = StrongReference::exact;
  int reference_steps = 0;
};

// Calls visit(const StrongCase&, const Problem&, const Batch& x0) for each strong row, in table
// order; x0 has `paths` rows, one Brownian path each.
template <class Visit>
void for_each_strong_case(Index paths, Visit&& visit) {
  const GeometricBrownianMotion gbm(1.0, 0.5), gbm_strat(1.0, 0.5, Calculus::stratonovich);
  const Batch ones = Batch::Ones(paths, 2);
  const std::string gbm_ito = "GBM mu=1 sigma=0.5 (Ito)";
  visit(StrongCase{.stepper = "euler_maruyama", .problem = gbm_ito, .steps = {16, 32, 64, 128, 256, 512}}, gbm, ones);
  visit(StrongCase{.stepper = "milstein", .problem = gbm_ito, .steps = {8, 16, 32, 64, 128, 256}}, gbm, ones);
  visit(StrongCase{.stepper = "stochastic_heun", .problem = "GBM mu=1 sigma=0.5 (Stratonovich)",
                   .steps = {8, 16, 32, 64, 128, 256}},
        gbm_strat, ones);
  // Euler-Maruyama is strong order 1 for additive noise (Kloeden & Platen 1992, Sec. 10.2).
  const OrnsteinUhlenbeck ou(2.0, 0.5, 0.8);
  visit(StrongCase{.stepper = "euler_maruyama", .problem = "OU theta=2 sigma=0.8 (additive)",
                   .steps = {8, 16, 32, 64, 128, 256}, .declared = 1.0,
                   .reference = StrongReference::exact_transitions, .reference_steps = 4096},
        ou, ones);
  const AdditiveNonlinearSde additive(Eigen::ArrayXd::LinSpaced(2, 1.6, 0.8));
  visit(StrongCase{.stepper = "sra1", .problem = "nonlinear additive (fine SRA1 ref.)", .steps = {8, 16, 32, 64, 128},
                   .reference = StrongReference::fine_solve, .reference_steps = 2048},
        additive, Batch::Zero(paths, 2));
}

// --- SDE weak: |sample mean of X_t1^h - E X_t1| over many paths, against the exact mean ----------

struct WeakCase {
  std::string_view stepper = "euler_maruyama";
  std::string problem = "OU mean, theta=2 sigma=0.1";
  OrnsteinUhlenbeck ou{2.0, 0.0, 0.1};
  double t0 = 0, t1 = 1;
  std::vector<int> steps{4, 8, 16, 32, 64};
  // 1.96 sd(X_1) / sqrt(paths), about 8e-4, lies below the smallest weak error fitted (4e-3).
  Index paths = 16384;
  double x0 = 1.0;                // every path starts here
  std::uint64_t seed_offset = 1;  // added to the run's seed: paths independent of the strong rows'
};

}  // namespace diffode::order_cases
