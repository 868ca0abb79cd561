// Boost.Odeint's adaptive steppers (solvers/ode/odeint.hpp: runge_kutta_dopri5, runge_kutta_fehlberg78,
// bulirsch_stoer) on the probability flow in log sigma~, dx~/ds = x~ - D(x~; e^s), between the grid's
// ends. Step control is batch-wide (one step for the block): an independent reference for the
// project's own per-sample Dopri5 (ode_dopri5), from another library's tableaus and controllers.
#include "experiments/run/samplers/parts.hpp"
#include "solvers/diffusion/probability_flow.hpp"
#include "solvers/ode/odeint.hpp"

#include <cmath>

namespace diffode::samplers {
namespace {

void add_odeint(Registry& r, OdeintMethod method, std::string summary) {
  const std::string name = "odeint_" + std::string(to_string(method));
  std::vector<KeySpec> keys{number_key("rtol", "relative tolerance").fallback(1e-6).above(0).below(1),
                            number_key("atol", "absolute tolerance").fallback(1e-6).above(0)};
  if (method != OdeintMethod::fehlberg78)
    keys.push_back(boolean_key("dense", "Odeint's dense-output stepper (the same end point, its own steps for bulirsch_stoer)").fallback_bool(false));
  r.push_back({name, "odeint", std::move(summary), options_schema(name, keys), [method](ConfigTable& o) {
                 OdeintOptions options{.method = method, .rtol = o.number("rtol"), .atol = o.number("atol")};
                 if (method != OdeintMethod::fehlberg78) options.dense = o.boolean("dense");
                 ConfiguredSampler s{.steps_to_zero = false, .batch_coupled = true, .adaptive = true};
                 s.run = [options](const SamplerContext& c, Batch& x) -> IntegrationStats {
                   const LogSigmaProbabilityFlow<Batch, ScaledDenoiser<Batch>> flow(c.denoiser);
                   return integrate_odeint(flow, std::log(c.sigmas.front()), std::log(c.sigmas.back()), x, options);
                 };
                 return s;
               }});
}

}  // namespace

void add_odeint_family(Registry& r) {
  add_odeint(r, OdeintMethod::dopri5, "Boost.Odeint runge_kutta_dopri5, 5(4), batch-wide control (Dormand & Prince 1980)");
  add_odeint(r, OdeintMethod::fehlberg78, "Boost.Odeint runge_kutta_fehlberg78, 8(7), batch-wide control (Fehlberg 1968, NASA TR R-287)");
  add_odeint(r, OdeintMethod::bulirsch_stoer,
             "Boost.Odeint bulirsch_stoer: extrapolated midpoint rule, batch-wide control (Bulirsch & Stoer 1966; Deuflhard 1983)");
}

}  // namespace diffode::samplers
