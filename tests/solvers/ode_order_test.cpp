// Empirical orders of the fixed-step ODE steppers on problems with exact solutions.
#include "problems/linear_ode.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/euler.hpp"
#include "tests/support/convergence.hpp"

#include <gtest/gtest.h>

namespace diffode {
namespace {

Batch initial_batch() {
  Batch x0(4, 3);
  x0 << 1.0, 0.0, 0.5,
        -0.3, 0.8, 1.0,
         2.0, -1.0, 0.0,
         0.1, 0.2, -0.7;
  return x0;
}

template <template <class> class Stepper, class Problem>
double fitted_linear_order(const Problem& problem, double t0, double t1, std::vector<int> steps) {
  const Batch x0 = initial_batch();
  const Batch exact = problem.exact(x0, t0, t1);
  std::vector<double> hs, errors;
  for (int n : steps) {
    Stepper<Batch> stepper;
    Batch x = x0;
    const auto grid = testing::uniform_grid(t0, t1, n);
    const auto stats = integrate(stepper, problem, grid, x);
    EXPECT_FALSE(stats.failed) << stats.failure;
    EXPECT_EQ(stats.nfe, n * Stepper<Batch>::traits.evaluations_per_step);
    hs.push_back((t1 - t0) / n);
    errors.push_back((x - exact).abs().maxCoeff());
  }
  return testing::fitted_order(hs, errors);
}

TEST(OdeOrder, EulerIsFirstOrderForwardAndBackward) {
  const auto problem = LinearOde::damped_rotation();
  EXPECT_NEAR(fitted_linear_order<Euler>(problem, 0.0, 2.0, {64, 128, 256, 512, 1024}), 1.0, 0.2);
  EXPECT_NEAR(fitted_linear_order<Euler>(problem, 2.0, 0.5, {64, 128, 256, 512, 1024}), 1.0, 0.2);
}

}  // namespace
}  // namespace diffode
