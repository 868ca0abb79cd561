#include "experiments/sampler_registry.hpp"

#include "solvers/diffusion/ddim.hpp"
#include "solvers/diffusion/ddpm.hpp"
#include "solvers/diffusion/dpm2.hpp"
#include "solvers/diffusion/dpm_solver.hpp"
#include "solvers/diffusion/dpm_solver_pp.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/diffusion/euler_ancestral.hpp"
#include "solvers/diffusion/heun.hpp"
#include "solvers/diffusion/ipndm.hpp"
#include "solvers/diffusion/lms.hpp"
#include "solvers/diffusion/unipc.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>

namespace diffode {
namespace {

ChurnOptions read_churn(ConfigTable& o) {
  ChurnOptions c;
  c.s_churn = o.number("s_churn", 0.0);
  c.s_tmin = o.number("s_tmin", 0.0);
  c.s_tmax = o.number("s_tmax", std::numeric_limits<double>::infinity());
  c.s_noise = o.number("s_noise", 1.0);
  if (c.s_churn < 0) o.fail("s_churn", "must be >= 0");
  return c;
}

double read_eta(ConfigTable& o, double fallback) {
  const double eta = o.number("eta", fallback);
  if (eta < 0) o.fail("eta", "must be >= 0");
  return eta;
}

int read_int(ConfigTable& o, std::string_view key, int fallback, int lo, int hi) {
  const auto v = o.integer(key, fallback);
  if (v < lo || v > hi) o.fail(key, fmt::format("must lie in {}..{}, got {}", lo, hi, v));
  return static_cast<int>(v);
}

DpmSolverPP3MForm read_form(ConfigTable& o) {
  return o.string("form", "reference", {"reference", "third_order"}) == "reference" ? DpmSolverPP3MForm::reference
                                                                                    : DpmSolverPP3MForm::third_order;
}

// Wraps a sampler call `f(model, x, sigmas, options, noise, observer)` with its options bound.
template <class Options, class F>
SamplerRunner bind(Options options, F f) {
  return [options, f](const ScaledDenoiser<Batch>& m, Batch& x, std::span<const double> s, const SigmaNoise<Batch>* n,
                      SamplerObserver& obs) { return f(m, x, s, options, n, obs); };
}

#define DIFFODE_SAMPLER_CALL(fn) \
  [](const ScaledDenoiser<Batch>& m, Batch& x, std::span<const double> s, const auto& o, const SigmaNoise<Batch>* n, \
     SamplerObserver& obs) { return fn(m, x, s, o, n, obs); }

std::vector<SamplerEntry> make_registry() {
  std::vector<SamplerEntry> r;
  auto add = [&](std::string name, std::string summary, auto configure) {
    r.push_back({std::move(name), std::move(summary), configure});
  };
  add("euler", "Euler in sigma; s_churn, s_tmin, s_tmax, s_noise (Karras et al. 2022, arXiv:2206.00364, Alg. 2)",
      [](ConfigTable& o, bool& stochastic) {
        const auto c = read_churn(o);
        stochastic = c.s_churn > 0;
        return bind(c, DIFFODE_SAMPLER_CALL(sample_euler));
      });
  add("heun", "EDM Heun, 2nd order; s_churn, s_tmin, s_tmax, s_noise (Karras et al. 2022, Alg. 2)",
      [](ConfigTable& o, bool& stochastic) {
        const auto c = read_churn(o);
        stochastic = c.s_churn > 0;
        return bind(c, DIFFODE_SAMPLER_CALL(sample_heun));
      });
  add("dpm_2", "DPM-2 (k-diffusion), midpoint in log sigma; s_churn, s_tmin, s_tmax, s_noise", [](ConfigTable& o, bool& stochastic) {
    const auto c = read_churn(o);
    stochastic = c.s_churn > 0;
    return bind(c, DIFFODE_SAMPLER_CALL(sample_dpm_2));
  });
  add("euler_ancestral", "Euler ancestral; eta = 1, s_noise = 1 (k-diffusion)", [](ConfigTable& o, bool& stochastic) {
    AncestralOptions a{.eta = read_eta(o, 1.0), .s_noise = o.number("s_noise", 1.0)};
    stochastic = a.eta > 0;
    return bind(a, DIFFODE_SAMPLER_CALL(sample_euler_ancestral));
  });
  add("dpm_2_ancestral", "DPM-2 ancestral; eta = 1, s_noise = 1 (k-diffusion)", [](ConfigTable& o, bool& stochastic) {
    AncestralOptions a{.eta = read_eta(o, 1.0), .s_noise = o.number("s_noise", 1.0)};
    stochastic = a.eta > 0;
    return bind(a, DIFFODE_SAMPLER_CALL(sample_dpm_2_ancestral));
  });
  add("lms", "linear multistep in sigma, exact Lagrange weights; order = 4 (1-4), startup = \"lower_order\" | \"rk4\"",
      [](ConfigTable& o, bool&) {
        LmsOptions l{.order = read_int(o, "order", 4, 1, 4),
                     .startup = o.string("startup", "lower_order", {"lower_order", "rk4"}) == "rk4" ? LmsStartup::rk4
                                                                                                  : LmsStartup::lower_order};
        return bind(l, DIFFODE_SAMPLER_CALL(sample_lms));
      });
  add("ddim", "DDIM; eta = 0, s_noise = 1 (Song et al. 2021, arXiv:2010.02502, eq. 12)", [](ConfigTable& o, bool& stochastic) {
    DDIMOptions d{.eta = read_eta(o, 0.0), .s_noise = o.number("s_noise", 1.0)};
    stochastic = d.eta > 0;
    return bind(d, DIFFODE_SAMPLER_CALL(sample_ddim));
  });
  add("ddpm", "DDPM ancestral; variance = \"small\" | \"large\" (Ho et al. 2020, arXiv:2006.11239, Alg. 2)",
      [](ConfigTable& o, bool& stochastic) {
        DDPMOptions d{.variance = o.string("variance", "small", {"small", "large"}) == "small" ? DDPMVariance::small : DDPMVariance::large};
        stochastic = true;
        return bind(d, DIFFODE_SAMPLER_CALL(sample_ddpm));
      });
  add("dpm_solver", "DPM-Solver singlestep; order = 3 (1-3) (Lu et al. 2022, arXiv:2206.00927, Alg. 1-2)", [](ConfigTable& o, bool&) {
    DpmSolverOptions d{.order = read_int(o, "order", 3, 1, 3)};
    return bind(d, DIFFODE_SAMPLER_CALL(sample_dpm_solver));
  });
  add("dpmpp_2s", "DPM-Solver++(2S); eta = 0, s_noise = 1, r = 0.5 (Lu et al. 2022, arXiv:2211.01095, Alg. 1)",
      [](ConfigTable& o, bool& stochastic) {
        DpmSolverPP2SOptions d{.r = o.number("r", 0.5), .eta = read_eta(o, 0.0), .s_noise = o.number("s_noise", 1.0)};
        stochastic = d.eta > 0;
        return bind(d, DIFFODE_SAMPLER_CALL(sample_dpmpp_2s));
      });
  add("dpmpp_2m", "DPM-Solver++(2M); lower_order_final_below = 0 (Lu et al. 2022, arXiv:2211.01095, Alg. 2)", [](ConfigTable& o, bool&) {
    DpmSolverPPMultistepOptions d{.lower_order_final_below = read_int(o, "lower_order_final_below", 0, 0, 1000000)};
    return bind(d, DIFFODE_SAMPLER_CALL(sample_dpmpp_2m));
  });
  add("dpmpp_3m", "DPM-Solver++(3M); lower_order_final_below = 0, form = \"reference\" | \"third_order\"", [](ConfigTable& o, bool&) {
    DpmSolverPPMultistepOptions d{.lower_order_final_below = read_int(o, "lower_order_final_below", 0, 0, 1000000), .form = read_form(o)};
    return bind(d, DIFFODE_SAMPLER_CALL(sample_dpmpp_3m));
  });
  add("dpmpp_2m_sde", "DPM-Solver++(2M) SDE; eta = 1, s_noise = 1, solver_type = \"midpoint\" | \"heun\" (k-diffusion)",
      [](ConfigTable& o, bool& stochastic) {
        DpmSolverPPSdeOptions d{.eta = read_eta(o, 1.0), .s_noise = o.number("s_noise", 1.0),
                                .solver_type = o.string("solver_type", "midpoint", {"midpoint", "heun"}) == "midpoint"
                                                   ? DpmSolverPPSdeType::midpoint
                                                   : DpmSolverPPSdeType::heun};
        stochastic = d.eta > 0;
        return bind(d, DIFFODE_SAMPLER_CALL(sample_dpmpp_2m_sde));
      });
  add("dpmpp_3m_sde", "DPM-Solver++(3M) SDE; eta = 1, s_noise = 1, form = \"reference\" | \"third_order\" (k-diffusion)",
      [](ConfigTable& o, bool& stochastic) {
        DpmSolverPPSdeOptions d{.eta = read_eta(o, 1.0), .s_noise = o.number("s_noise", 1.0), .form = read_form(o)};
        stochastic = d.eta > 0;
        return bind(d, DIFFODE_SAMPLER_CALL(sample_dpmpp_3m_sde));
      });
  add("unipc", "UniPC; order = 2 (1-3), variant = \"bh1\" | \"bh2\", prediction = \"data\" | \"noise\", lower_order_final = true, "
               "corrector = true (Zhao et al. 2023, arXiv:2302.04867)",
      [](ConfigTable& o, bool&) {
        UniPCOptions u{.order = read_int(o, "order", 2, 1, 3),
                       .variant = o.string("variant", "bh1", {"bh1", "bh2"}) == "bh1" ? UniPCVariant::bh1 : UniPCVariant::bh2,
                       .prediction = o.string("prediction", "data", {"data", "noise"}) == "data" ? UniPCPrediction::data
                                                                                              : UniPCPrediction::noise,
                       .lower_order_final = o.boolean("lower_order_final", true),
                       .corrector = o.boolean("corrector", true)};
        return bind(u, DIFFODE_SAMPLER_CALL(sample_unipc));
      });
  add("ipndm", "improved PNDM; max_order = 4 (1-4) (Zhang & Chen 2023, arXiv:2204.13902)", [](ConfigTable& o, bool&) {
    IPNDMOptions p{.max_order = read_int(o, "max_order", 4, 1, 4)};
    return bind(p, DIFFODE_SAMPLER_CALL(sample_ipndm));
  });
  return r;
}

#undef DIFFODE_SAMPLER_CALL

}  // namespace

const std::vector<SamplerEntry>& sampler_registry() {
  static const std::vector<SamplerEntry> registry = make_registry();
  return registry;
}

const SamplerEntry& find_sampler(const std::string& name, ConfigTable& where) {
  for (const auto& e : sampler_registry())
    if (e.name == name) return e;
  std::vector<std::string> names;
  for (const auto& e : sampler_registry()) names.push_back(e.name);
  where.fail("name", fmt::format("unknown sampler '{}' (known: {})", name, fmt::join(names, ", ")));
}

}  // namespace diffode
