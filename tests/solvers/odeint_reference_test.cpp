// One step of our RK4 and Dopri5 against Boost.Odeint 1.74's runge_kutta4 and runge_kutta_dopri5
// (do_step) on the same problems: the fifth-order solution and the error estimate agree to round-off.
// Odeint's dopri5 forms its error as dt * sum (b_i - bhat_i) k_i, the sign convention used here.
#include "problems/linear_ode.hpp"
#include "problems/nonlinear_ode.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/rk4.hpp"

#include <boost/numeric/odeint.hpp>
#include <gtest/gtest.h>

#include <vector>

namespace diffode {
namespace {

using Vector = std::vector<double>;
namespace odeint = boost::numeric::odeint;

// The problem as odeint sees it: one sample, scalar time.
template <class Problem>
auto odeint_system(const Problem& problem) {
  return [&problem](const Vector& x, Vector& dxdt, double t) {
    Batch row(1, static_cast<Index>(x.size())), out;
    for (std::size_t i = 0; i < x.size(); ++i) row(0, i) = x[i];
    problem.drift(row, PerSample::Constant(1, t), out);
    dxdt.assign(out.data(), out.data() + out.size());
  };
}

Batch as_row(const Vector& v) {
  Batch b(1, static_cast<Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) b(0, i) = v[i];
  return b;
}

template <class Problem>
void expect_agreement(const Problem& problem, const Vector& x0, double t, double h) {
  const auto system = odeint_system(problem);

  Vector x_rk4 = x0;
  odeint::runge_kutta4<Vector>().do_step(system, x_rk4, t, h);
  Batch ours = as_row(x0);
  Rk4<Batch>().step(problem, t, h, ours);
  EXPECT_LT((ours - as_row(x_rk4)).abs().maxCoeff(), 1e-14) << "rk4, h = " << h;

  Vector x_dp = x0, err_dp(x0.size());
  odeint::runge_kutta_dopri5<Vector>().do_step(system, x_dp, t, h, err_dp);
  Dopri5<Batch> dopri;
  Batch x_new, error;
  dopri.attempt(problem, t, h, as_row(x0), x_new, error);
  EXPECT_LT((x_new - as_row(x_dp)).abs().maxCoeff(), 1e-14) << "dopri5 solution, h = " << h;
  // The estimate is O(h^5) small; it must agree to round-off relative to the state, and in sign.
  EXPECT_LT((error - as_row(err_dp)).abs().maxCoeff(), 1e-15) << "dopri5 error estimate, h = " << h;
  EXPECT_GT(as_row(err_dp).abs().maxCoeff(), 1e-12);  // not a comparison of zeros
  std::printf("  h = %+.2f: rk4 diff %.1e, dopri5 diff %.1e, error estimate %.2e vs odeint's %.2e (diff %.1e)\n", h,
              (ours - as_row(x_rk4)).abs().maxCoeff(), (x_new - as_row(x_dp)).abs().maxCoeff(),
              error.abs().maxCoeff(), as_row(err_dp).abs().maxCoeff(), (error - as_row(err_dp)).abs().maxCoeff());

  // The fixed-step Dopri5 takes the same step.
  Batch fixed = as_row(x0);
  Dopri5<Batch>().step(problem, t, h, fixed);
  EXPECT_LT((fixed - as_row(x_dp)).abs().maxCoeff(), 1e-14);
}

TEST(OdeintReference, OneStepOnTheLinearProblem) {
  const auto problem = LinearOde::damped_rotation();
  expect_agreement(problem, {1.0, -0.5, 0.8}, 0.3, 0.25);
  expect_agreement(problem, {1.0, -0.5, 0.8}, 2.0, -0.4);
}

TEST(OdeintReference, OneStepOnTheTimeDependentLogistic) {
  PerSample rates(3);
  rates << 1.0, 3.0, 0.5;
  const ModulatedLogisticOde problem(rates);
  expect_agreement(problem, {0.2, 0.6, 0.9}, 0.7, 0.3);
  expect_agreement(problem, {0.2, 0.6, 0.9}, 2.5, -0.35);
}

}  // namespace
}  // namespace diffode
