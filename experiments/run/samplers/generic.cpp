// The generic steppers of solvers/ode and solvers/sde on the diffusion model as a problem
// (solvers/diffusion/probability_flow.hpp): fixed-step ODE steppers and adaptive Dopri5 on the
// probability-flow ODE (Song et al. 2021, arXiv:2011.13456, eq. 13), in the process's time t or in
// log sigma~, and the SDE steppers on the reverse SDE (eq. 6) driven by a Brownian path in t.
#include "experiments/run/samplers/parts.hpp"
#include "experiments/run/samplers/process_time.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/diffusion/probability_flow.hpp"
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

#include <cmath>

namespace diffode::samplers {
namespace {

KeySpec variable_key() {
  return string_key("variable", "the ODE's time: the process's t, or s = log sigma~ (dx~/ds = x~ - D, smooth down to small noise)")
      .fallback_str("t")
      .one_of({"t", "log_sigma"});
}

// The probability flow in log sigma~ over the grid's log sigmas; the observer sees sigma~.
template <class Solve>
IntegrationStats in_log_sigma(const SamplerContext& c, Batch& x, Solve&& solve) {
  const LogSigmaProbabilityFlow<Batch, ScaledDenoiser<Batch>> flow(c.denoiser);
  auto observer = [&](const StepInfo& info, const Batch& state) {
    StepInfo scaled = info;
    scaled.t = std::exp(info.t);
    c.observer(scaled, state);
  };
  return solve(flow, observer);
}

// A fixed-step stepper on the probability-flow ODE over the grid.
template <template <class> class Stepper>
SamplerRunner fixed_step(bool log_sigma) {
  return [log_sigma](const SamplerContext& c, Batch& x_scaled) {
    Stepper<Batch> stepper;
    if (log_sigma) {
      std::vector<double> s;
      for (double sigma : c.sigmas) s.push_back(std::log(sigma));
      return in_log_sigma(c, x_scaled, [&](const auto& flow, auto& observer) { return integrate(stepper, flow, s, x_scaled, observer); });
    }
    return in_process_variables(c, x_scaled, [&](Batch& x, auto& observer) {
      const ProbabilityFlowOde<Batch> ode(c.process, c.predictor);
      return integrate(stepper, ode, c.times, x, observer);
    });
  };
}

template <template <class> class Stepper>
void add_ode(Registry& r, std::string name, std::string summary) {
  r.push_back({name, "generic_ode", std::move(summary), options_schema(name, {variable_key()}), [](ConfigTable& o) {
                 return ConfiguredSampler{.run = fixed_step<Stepper>(o.string("variable") == "log_sigma"), .steps_to_zero = false};
               }});
}


void add_adams_bashforth(Registry& r) {
  r.push_back({"ode_adams_bashforth", "generic_ode",
               "variable-step Adams-Bashforth on the PF-ODE, RK4 start (Hairer, Norsett & Wanner, Solving ODEs I, III.5)",
               options_schema("ode_adams_bashforth", {integer_key("order", "order").fallback_int(4).at_least(1).at_most(4), variable_key()}),
               [](ConfigTable& o) {
                 const bool log_sigma = o.string("variable") == "log_sigma";
                 const auto order = o.integer("order");
                 SamplerRunner run = order == 1 ? fixed_step<AdamsBashforth1>(log_sigma)
                                     : order == 2 ? fixed_step<AdamsBashforth2>(log_sigma)
                                     : order == 3 ? fixed_step<AdamsBashforth3>(log_sigma)
                                                  : fixed_step<AdamsBashforth4>(log_sigma);
                 return ConfiguredSampler{.run = run, .steps_to_zero = false};
               }});
}

void add_dopri5(Registry& r) {
  r.push_back({"ode_dopri5", "generic_ode",
               "adaptive Dormand-Prince 5(4) on the PF-ODE between the grid's ends, PI control (Dormand & Prince 1980; Hairer et al. II.4)",
               options_schema("ode_dopri5", {number_key("rtol", "relative tolerance").fallback(1e-5).above(0).below(1),
                                             number_key("atol", "absolute tolerance").fallback(1e-5).above(0),
                                             string_key("error_norm", "step control per sample, or one step for the block")
                                                 .fallback_str("per_sample")
                                                 .one_of({"per_sample", "batch"}),
                                             variable_key().fallback_str("log_sigma")}),
               [](ConfigTable& o) {
                 AdaptiveOptions a{.rtol = o.number("rtol"), .atol = o.number("atol")};
                 a.norm = o.string("error_norm") == "batch" ? ErrorNorm::batch : ErrorNorm::per_sample;
                 const bool log_sigma = o.string("variable") == "log_sigma";
                 ConfiguredSampler s{.steps_to_zero = false, .batch_coupled = a.norm == ErrorNorm::batch, .adaptive = true};
                 s.run = [a, log_sigma](const SamplerContext& c, Batch& x_scaled) -> IntegrationStats {
                   Dopri5<Batch> stepper;
                   if (log_sigma)
                     return in_log_sigma(c, x_scaled, [&](const auto& flow, auto&) {
                       return integrate_adaptive(stepper, flow, std::log(c.sigmas.front()), std::log(c.sigmas.back()), x_scaled, a);
                     });
                   return in_process_variables(c, x_scaled, [&](Batch& x, auto&) {
                     const ProbabilityFlowOde<Batch> ode(c.process, c.predictor);
                     return integrate_adaptive(stepper, ode, c.times.front(), c.times.back(), x, a);
                   });
                 };
                 return s;
               }});
}

// An SDE stepper on the reverse SDE over the grid's times, on per-step increments (dW and, for SRA1,
// its time integral, from their exact joint law) or the Brownian path in t keyed by the run's seed
// (the noise a predictor-corrector sampler's predictor sees, either way).
template <template <class> class Stepper>
void add_sde(Registry& r, std::string name, std::string summary) {
  r.push_back({name, "generic_sde", std::move(summary), options_schema(name, {noise_key(false)}), [](ConfigTable&) {
                 ConfiguredSampler s{.stochastic = true, .steps_to_zero = false};
                 s.run = [](const SamplerContext& c, Batch& x_scaled) {
                   return in_process_variables(c, x_scaled, [&](Batch& x, auto& observer) {
                     const ReverseSde<Batch> sde(c.process, c.predictor);
                     Stepper<Batch> stepper;
                     if (c.noise.kind == NoiseKind::per_step)
                       return integrate(stepper, sde, c.times, x, StepIncrements(c.noise.seed, x.cols()), c.noise.first_sample, observer);
                     const BrownianPath path({.seed = c.noise.seed, .t0 = c.process.t_max(), .t1 = 0.0, .dims = x.cols()});
                     return integrate(stepper, sde, c.times, x, path, c.noise.first_sample, observer);
                   });
                 };
                 return s;
               }});
}

}  // namespace

void add_generic_family(Registry& r) {
  add_ode<Euler>(r, "ode_euler", "Euler's method on the PF-ODE");
  add_ode<Heun>(r, "ode_heun", "Heun's method (explicit trapezoid) on the PF-ODE");
  add_ode<Midpoint>(r, "ode_midpoint", "the explicit midpoint method on the PF-ODE");
  add_ode<Rk4>(r, "ode_rk4", "classical Runge-Kutta 4 on the PF-ODE");
  add_adams_bashforth(r);
  add_dopri5(r);
  add_sde<EulerMaruyama>(r, "sde_euler_maruyama", "Euler-Maruyama on the reverse SDE (Kloeden & Platen 1992, 10.2)");
  add_sde<StochasticHeun>(r, "sde_heun", "stochastic Heun on the reverse SDE (additive noise: Ito = Stratonovich)");
  add_sde<Milstein>(r, "sde_milstein", "Milstein on the reverse SDE (additive noise: equal to Euler-Maruyama; Kloeden & Platen 10.3)");
  add_sde<Sra1>(r, "sde_sra1", "SRA1 on the reverse SDE, strong order 1.5 for additive noise (Roessler 2010, SIAM J. Numer. Anal. 48(3))");
}

}  // namespace diffode::samplers
