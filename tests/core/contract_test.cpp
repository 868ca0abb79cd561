// check_contract refuses stepper/problem pairs that would converge to the wrong answer or not at
// all, with a message naming the stepper and the reason; integrate() refuses them before any work.
#include "core/contract.hpp"
#include "problems/additive_sde.hpp"
#include "problems/geometric_brownian_motion.hpp"
#include "problems/linear_ode.hpp"
#include "problems/ornstein_uhlenbeck.hpp"
#include "solvers/brownian.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/milstein.hpp"
#include "solvers/sde/sra1.hpp"
#include "solvers/sde/stochastic_heun.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace diffode {
namespace {

// The message check_contract throws, or "" if it accepts.
std::string refusal(const StepperTraits& stepper, const ProblemTraits& problem) {
  try {
    check_contract(stepper, problem);
  } catch (const ContractError& e) {
    return e.what();
  }
  return "";
}

// A diagonal-noise problem that declares no dg/dx. It still has the member, so that integrate()
// with Milstein compiles and the refusal under test is the run-time one (a problem with no member at
// all does not compile with Milstein); calling it is a test failure.
struct GbmWithoutDerivative {
  GeometricBrownianMotion gbm{0.5, 0.6};
  ProblemTraits traits() const {
    auto t = gbm.traits();
    t.has_diffusion_derivative = false;
    return t;
  }
  void drift(const Batch& x, const PerSample& t, Batch& out) const { gbm.drift(x, t, out); }
  void diffusion(const Batch& x, const PerSample& t, Batch& out) const { gbm.diffusion(x, t, out); }
  void diffusion_derivative(const Batch&, const PerSample&, Batch&) const {
    ADD_FAILURE() << "diffusion_derivative called on a problem that declares none";
  }
};

// problem_traits() takes a problem without traits() for an ODE. This one has an (unused) diffusion
// member only so that the SDE overload of integrate() compiles with it.
struct OdeWithStrayDiffusion {
  LinearOde ode = LinearOde::damped_rotation();
  void drift(const Batch& x, const PerSample& t, Batch& out) const { ode.drift(x, t, out); }
  void diffusion(const Batch&, const PerSample&, Batch&) const { ADD_FAILURE() << "diffusion called on an ODE"; }
};

const GeometricBrownianMotion kItoGbm(0.5, 0.6, Calculus::ito);
const GeometricBrownianMotion kStratonovichGbm(0.5, 0.6, Calculus::stratonovich);
const OrnsteinUhlenbeck kOu(1.0, 0.0, 0.5);

TEST(Contract, Sra1RefusesDiagonalNoise) {
  const auto why = refusal(Sra1<Batch>::traits, kItoGbm.traits());
  EXPECT_NE(why.find("sra1"), std::string::npos) << why;
  EXPECT_NE(why.find("noise is diagonal"), std::string::npos) << why;
}

TEST(Contract, StochasticHeunRefusesAnItoProblem) {
  const auto why = refusal(StochasticHeun<Batch>::traits, kItoGbm.traits());
  EXPECT_NE(why.find("stochastic_heun"), std::string::npos) << why;
  EXPECT_NE(why.find("Ito calculus"), std::string::npos) << why;
  EXPECT_NE(why.find("Stratonovich solution"), std::string::npos) << why;
}

TEST(Contract, ItoSteppersRefuseAStratonovichProblem) {
  EXPECT_NE(refusal(EulerMaruyama<Batch>::traits, kStratonovichGbm.traits()).find("Stratonovich calculus"),
            std::string::npos);
  EXPECT_NE(refusal(Milstein<Batch>::traits, kStratonovichGbm.traits()).find("Stratonovich calculus"),
            std::string::npos);
}

TEST(Contract, MilsteinRefusesAProblemWithoutDiffusionDerivative) {
  const auto why = refusal(Milstein<Batch>::traits, GbmWithoutDerivative{}.traits());
  EXPECT_NE(why.find("milstein"), std::string::npos) << why;
  EXPECT_NE(why.find("derivative of the diffusion"), std::string::npos) << why;
}

TEST(Contract, MilsteinRefusesScalarNoise) {
  const RotatingGbm scalar(0.3, 1.0, 0.4, 0.7);
  EXPECT_NE(refusal(Milstein<Batch>::traits, scalar.traits()).find("noise is scalar"), std::string::npos);
}

TEST(Contract, OdeAndSdeSteppersRefuseTheOtherKindOfProblem) {
  const auto ode = problem_traits(LinearOde::damped_rotation());
  const auto on_sde = refusal(Euler<Batch>::traits, kItoGbm.traits());
  EXPECT_NE(on_sde.find("ODE stepper and the problem is an SDE"), std::string::npos) << on_sde;
  const auto on_ode = refusal(EulerMaruyama<Batch>::traits, ode);
  EXPECT_NE(on_ode.find("SDE stepper and the problem is an ODE"), std::string::npos) << on_ode;
}

// Additive noise: Ito and Stratonovich coincide, so steppers of either calculus are accepted.
TEST(Contract, AcceptsEveryStepperItsTraitsAllow) {
  EXPECT_EQ(refusal(EulerMaruyama<Batch>::traits, kItoGbm.traits()), "");
  EXPECT_EQ(refusal(Milstein<Batch>::traits, kItoGbm.traits()), "");
  EXPECT_EQ(refusal(StochasticHeun<Batch>::traits, kStratonovichGbm.traits()), "");
  EXPECT_EQ(refusal(StochasticHeun<Batch>::traits, RotatingGbm(0, 1, 0.5, 0, Calculus::stratonovich).traits()), "");
  for (const auto& traits : {kOu.traits(), AdditiveNonlinearSde(Eigen::ArrayXd::Ones(1)).traits()}) {
    EXPECT_EQ(refusal(Sra1<Batch>::traits, traits), "");
    EXPECT_EQ(refusal(EulerMaruyama<Batch>::traits, traits), "");
    EXPECT_EQ(refusal(StochasticHeun<Batch>::traits, traits), "");
    EXPECT_EQ(refusal(Milstein<Batch>::traits, traits), "");
  }
  EXPECT_EQ(refusal(Euler<Batch>::traits, problem_traits(LinearOde::damped_rotation())), "");
}

// integrate() checks before the first step: the state is untouched and no evaluation is made.
// The counting problem would record any drift call.
struct CountingGbm {
  GeometricBrownianMotion gbm{0.5, 0.6, Calculus::ito};
  mutable int calls = 0;
  ProblemTraits traits() const { return gbm.traits(); }
  void drift(const Batch& x, const PerSample& t, Batch& out) const { ++calls; gbm.drift(x, t, out); }
  void diffusion(const Batch& x, const PerSample& t, Batch& out) const { ++calls; gbm.diffusion(x, t, out); }
  void diffusion_derivative(const Batch& x, const PerSample& t, Batch& out) const { ++calls; gbm.diffusion_derivative(x, t, out); }
};

TEST(Contract, IntegrateThrowsBeforeAnyWork) {
  const BrownianPath path({.seed = 1, .t0 = 0.0, .t1 = 1.0, .dims = 2});
  const std::vector<double> grid{0.0, 0.5, 1.0};
  const Batch x0 = Batch::Constant(3, 2, 1.0);
  CountingGbm problem;

  Batch x = x0;
  Sra1<Batch> sra1;
  EXPECT_THROW(integrate(sra1, problem, grid, x, path), ContractError);
  StochasticHeun<Batch> heun;
  EXPECT_THROW(integrate(heun, problem, grid, x, path), ContractError);
  Euler<Batch> euler;
  EXPECT_THROW(integrate(euler, problem, grid, x), ContractError);
  EXPECT_EQ(problem.calls, 0);
  EXPECT_TRUE((x == x0).all());

  const GbmWithoutDerivative no_derivative;
  Milstein<Batch> milstein;
  EXPECT_THROW(integrate(milstein, no_derivative, grid, x, path), ContractError);
  EXPECT_TRUE((x == x0).all());

  // An SDE stepper on an ODE problem, through the SDE overload (the ODE one takes no path).
  EulerMaruyama<Batch> em;
  Batch y = Batch::Constant(3, 3, 1.0);
  const Batch y0 = y;
  const BrownianPath path3({.seed = 1, .t0 = 0.0, .t1 = 1.0, .dims = 3});
  EXPECT_THROW(integrate(em, OdeWithStrayDiffusion{}, grid, y, path3), ContractError);
  EXPECT_TRUE((y == y0).all());

  // And a compatible pair runs.
  EulerMaruyama<Batch> ok;
  EXPECT_NO_THROW(integrate(ok, problem, grid, x, path));
  EXPECT_GT(problem.calls, 0);
}

}  // namespace
}  // namespace diffode
