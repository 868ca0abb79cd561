// The sampler registry as a config sees it: options read through their schema, the generic and
// Odeint solvers on the probability flow agreeing with the project's own tight solve.
#include "experiments/run/sampling.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace diffode {
namespace {

SamplingSetup setup_of(const std::string& process, const std::string& sampler) {
  const Config config = Config::from_string(fmt::format(R"([process]
name = "{}"
[model]
preset = "ring2d"
[grid]
schedule = "karras"
steps = 8
final_step = "to_t_min"
[sampler]
{}
[run]
samples = 64
seed = 3
block_rows = 64
)", process, sampler), "registry.toml");
  ConfigTable root = config.root();
  SamplingSetup setup = read_sampling_setup(root);
  root.finish();
  return setup;
}

double max_difference(const Batch& a, const Batch& b) { return (a - b).abs().maxCoeff(); }

TEST(SamplerRegistry, OdeintAgreesWithTheProjectsDopri5AtTightTolerance) {
  for (const char* process : {"edm", "vp"}) {
    SCOPED_TRACE(process);
    const SamplingSetup own = setup_of(process, "name = \"ode_dopri5\"\nrtol = 1e-11\natol = 1e-11");
    const Batch x_T = initial_noise(own);
    const SamplingOutcome reference = run_sampling(own, x_T, 1);
    ASSERT_FALSE(reference.failed) << reference.failure;
    for (const char* method : {"odeint_dopri5", "odeint_fehlberg78", "odeint_bulirsch_stoer"}) {
      SCOPED_TRACE(method);
      const SamplingSetup odeint = setup_of(process, fmt::format("name = \"{}\"\nrtol = 1e-11\natol = 1e-11", method));
      const SamplingOutcome r = run_sampling(odeint, x_T, 1);
      ASSERT_FALSE(r.failed) << r.failure;
      // Both at 1e-11: the end points agree far below any sampler's error at practical step counts.
      EXPECT_LT(max_difference(r.samples, reference.samples), 1e-8);
      // And they are not the same computation: a looser Odeint solve moves visibly.
      const SamplingSetup loose = setup_of(process, fmt::format("name = \"{}\"\nrtol = 1e-3\natol = 1e-3", method));
      EXPECT_GT(max_difference(run_sampling(loose, x_T, 1).samples, reference.samples), 1e-7);
    }
  }
}

TEST(SamplerRegistry, FixedStepOdeSolversConvergeToTheTightSolve) {
  // RK4 in log sigma at 8 and 64 steps: the error falls by about 2^(4*3) (order 4), far more than
  // Euler's 2^3 over the same refinement.
  const SamplingSetup tight = setup_of("edm", "name = \"ode_dopri5\"\nrtol = 1e-11\natol = 1e-11");
  const Batch x_T = initial_noise(tight);
  const Batch reference = run_sampling(tight, x_T, 1).samples;
  auto error = [&](const std::string& sampler, int steps) {
    SamplingSetup s = setup_of("edm", sampler);
    const TimeGrid grid = s.grid_spec.build(*s.process, steps);
    return max_difference(run_sampling(s, x_T, grid, 1).samples, reference);
  };
  const double rk4_ratio = error("name = \"ode_rk4\"\nvariable = \"log_sigma\"", 8) / error("name = \"ode_rk4\"\nvariable = \"log_sigma\"", 64);
  const double euler_ratio = error("name = \"ode_euler\"\nvariable = \"log_sigma\"", 8) / error("name = \"ode_euler\"\nvariable = \"log_sigma\"", 64);
  EXPECT_GT(rk4_ratio, 500.0);
  EXPECT_LT(euler_ratio, 50.0);
  EXPECT_GT(euler_ratio, 3.0);
}

TEST(SamplerRegistry, OptionsAreCheckedWhenTheConfigIsRead) {
  for (const std::string sampler :
       {"name = \"ddim\"\neta = nan", "name = \"dpmpp_2s\"\nr = 0.0", "name = \"heun\"\ns_churn = -1.0", "name = \"euler\"\ns_noise = inf",
        "name = \"unipc\"\norder = 4", "name = \"pc\"\npredictor = \"none\"\ncorrector_steps = 0", "name = \"odeint_fehlberg78\"\ndense = true",
        "name = \"lms\"\norder = 2\nstartup = \"rk5\"", "name = \"no_such_sampler\""}) {
    SCOPED_TRACE(sampler);
    EXPECT_THROW(setup_of("edm", sampler), ConfigError);
  }
}

}  // namespace
}  // namespace diffode
