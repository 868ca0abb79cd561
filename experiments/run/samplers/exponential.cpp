// The exponential-integrator samplers in lambda = -log sigma~: DDIM, DDPM, DPM-Solver (singlestep,
// fast, adaptive), DPM-Solver++ (2S, 2M, 3M and their SDE forms), UniPC and iPNDM.
#include "experiments/run/samplers/parts.hpp"
#include "solvers/diffusion/ddim.hpp"
#include "solvers/diffusion/ddpm.hpp"
#include "solvers/diffusion/dpm_solver.hpp"
#include "solvers/diffusion/dpm_solver_pp.hpp"
#include "solvers/diffusion/ipndm.hpp"
#include "solvers/diffusion/unipc.hpp"

namespace diffode::samplers {
namespace {

KeySpec order_key(int fallback, int lo, int hi) {
  return integer_key("order", "order of the method").fallback_int(fallback).at_least(lo).at_most(hi);
}
KeySpec form_key() {
  return string_key("form", "the reference's third-order weights (measured order 2) or a weight that keeps order 3")
      .fallback_str("reference")
      .one_of({"reference", "third_order"});
}
KeySpec lower_order_final_below_key() {
  return integer_key("lower_order_final_below", "below this many steps the last step drops to first order (k-diffusion uses 10)")
      .fallback_int(0)
      .at_least(0)
      .at_most(1000000);
}
DpmSolverPP3MForm read_form(ConfigTable& o) {
  return o.string("form") == "reference" ? DpmSolverPP3MForm::reference : DpmSolverPP3MForm::third_order;
}

// A sampler with a fixed option set and no noise.
template <class Options, class F>
ConfiguredSampler deterministic(Options options, F f) {
  return {.run = grid_runner(options, false, f)};
}

void add_dpm_solver(Registry& r) {
  r.push_back({"dpm_solver", "exponential", "DPM-Solver singlestep of one order (Lu et al. 2022, arXiv:2206.00927, Alg. 1-2)",
               options_schema("dpm_solver", {order_key(3, 1, 3)}), [](ConfigTable& o) {
                 return deterministic(DpmSolverOptions{.order = static_cast<int>(o.integer("order"))}, DIFFODE_SAMPLER_FN(sample_dpm_solver));
               }});
  r.push_back({"dpm_solver_fast", "exponential",
               "DPM-Solver-fast: the grid's steps as the NFE budget between its ends (Lu et al. 2022, arXiv:2206.00927, Sec. 3.4; "
               "k-diffusion sample_dpm_fast)",
               options_schema("dpm_solver_fast", {order_key(3, 1, 3)}), [](ConfigTable& o) {
                 const int order = static_cast<int>(o.integer("order"));
                 ConfiguredSampler s{.steps_to_zero = false};
                 s.run = [order](const SamplerContext& c, Batch& x) {
                   return sample_dpm_solver_fast(c.denoiser, x, c.sigmas.front(), c.sigmas.back(), static_cast<int>(c.sigmas.size() - 1), order,
                                                 c.observer);
                 };
                 return s;
               }});
}

void add_dpm_solver_adaptive(Registry& r) {
  const DpmSolverAdaptiveOptions d;
  r.push_back(
      {"dpm_solver_adaptive", "exponential",
       "adaptive DPM-Solver-12/23 between the grid's ends (Lu et al. 2022, arXiv:2206.00927, Alg. 4; k-diffusion sample_dpm_adaptive)",
       options_schema("dpm_solver_adaptive",
                      {order_key(3, 2, 3), number_key("rtol", "relative tolerance").fallback(d.rtol).above(0),
                       number_key("atol", "absolute tolerance").fallback(d.atol).above(0),
                       number_key("h_init", "first step in lambda").fallback(d.h_init).above(0),
                       string_key("controller", "step control: the authors' (batch max of per-sample RMS) or k-diffusion's PID (batch RMS)")
                           .fallback_str("dpm_solver")
                           .one_of({"dpm_solver", "k_diffusion"}),
                       number_key("theta", "safety factor (dpm_solver controller)").fallback(d.theta).above(0).at_most(1),
                       number_key("pcoeff", "PID proportional coefficient (k_diffusion controller)").fallback(d.pcoeff),
                       number_key("icoeff", "PID integral coefficient (k_diffusion controller)").fallback(d.icoeff),
                       number_key("dcoeff", "PID derivative coefficient (k_diffusion controller)").fallback(d.dcoeff),
                       number_key("accept_safety", "accept a step when the PID factor is at least this (k_diffusion controller)")
                           .fallback(d.accept_safety)
                           .above(0)}),
       [](ConfigTable& o) {
         DpmSolverAdaptiveOptions a;
         a.order = static_cast<int>(o.integer("order"));
         a.rtol = o.number("rtol"), a.atol = o.number("atol"), a.h_init = o.number("h_init"), a.theta = o.number("theta");
         a.controller = o.string("controller") == "dpm_solver" ? DpmAdaptiveController::dpm_solver : DpmAdaptiveController::k_diffusion;
         a.pcoeff = o.number("pcoeff"), a.icoeff = o.number("icoeff"), a.dcoeff = o.number("dcoeff");
         a.accept_safety = o.number("accept_safety");
         ConfiguredSampler s{.steps_to_zero = false, .batch_coupled = true, .adaptive = true};
         s.run = [a](const SamplerContext& c, Batch& x) {
           return sample_dpm_solver_adaptive(c.denoiser, x, c.sigmas.front(), c.sigmas.back(), a, c.observer);
         };
         return s;
       }});
}

void add_dpmpp(Registry& r) {
  std::vector<KeySpec> two_s = ancestral_keys(0.0);
  two_s.insert(two_s.begin(), number_key("r", "intermediate point lambda_s + r h").fallback(0.5).above(0).below(1));
  r.push_back({"dpmpp_2s", "exponential", "DPM-Solver++(2S), optionally ancestral (Lu et al. 2022, arXiv:2211.01095, Alg. 1)",
               options_schema("dpmpp_2s", two_s), [](ConfigTable& o) {
                 const DpmSolverPP2SOptions d{.r = o.number("r"), .eta = o.number("eta"), .s_noise = o.number("s_noise")};
                 return ConfiguredSampler{.run = grid_runner(d, d.eta > 0, DIFFODE_SAMPLER_FN(sample_dpmpp_2s)), .stochastic = d.eta > 0};
               }});
  r.push_back({"dpmpp_2m", "exponential", "DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Alg. 2)",
               options_schema("dpmpp_2m", {lower_order_final_below_key()}), [](ConfigTable& o) {
                 const DpmSolverPPMultistepOptions d{.lower_order_final_below = static_cast<int>(o.integer("lower_order_final_below"))};
                 return deterministic(d, DIFFODE_SAMPLER_FN(sample_dpmpp_2m));
               }});
  r.push_back({"dpmpp_3m", "exponential", "DPM-Solver++(3M) (Lu et al. 2022, arXiv:2211.01095; k-diffusion's third-order multistep)",
               options_schema("dpmpp_3m", {lower_order_final_below_key(), form_key()}), [](ConfigTable& o) {
                 const DpmSolverPPMultistepOptions d{.lower_order_final_below = static_cast<int>(o.integer("lower_order_final_below")),
                                                     .form = read_form(o)};
                 return deterministic(d, DIFFODE_SAMPLER_FN(sample_dpmpp_3m));
               }});
  std::vector<KeySpec> sde_2m = ancestral_keys(1.0);
  sde_2m.push_back(string_key("solver_type", "second-order update of the SDE solver").fallback_str("midpoint").one_of({"midpoint", "heun"}));
  r.push_back({"dpmpp_2m_sde", "exponential", "DPM-Solver++(2M) SDE (k-diffusion sample_dpmpp_2m_sde)", options_schema("dpmpp_2m_sde", sde_2m),
               [](ConfigTable& o) {
                 const DpmSolverPPSdeOptions d{.eta = o.number("eta"), .s_noise = o.number("s_noise"),
                                               .solver_type = o.string("solver_type") == "midpoint" ? DpmSolverPPSdeType::midpoint
                                                                                                    : DpmSolverPPSdeType::heun};
                 return ConfiguredSampler{.run = grid_runner(d, d.eta > 0, DIFFODE_SAMPLER_FN(sample_dpmpp_2m_sde)), .stochastic = d.eta > 0};
               }});
  std::vector<KeySpec> sde_3m = ancestral_keys(1.0);
  sde_3m.push_back(form_key());
  r.push_back({"dpmpp_3m_sde", "exponential", "DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde)", options_schema("dpmpp_3m_sde", sde_3m),
               [](ConfigTable& o) {
                 const DpmSolverPPSdeOptions d{.eta = o.number("eta"), .s_noise = o.number("s_noise"), .form = read_form(o)};
                 return ConfiguredSampler{.run = grid_runner(d, d.eta > 0, DIFFODE_SAMPLER_FN(sample_dpmpp_3m_sde)), .stochastic = d.eta > 0};
               }});
}

void add_unipc_ipndm(Registry& r) {
  r.push_back({"unipc", "exponential", "UniPC predictor-corrector (Zhao et al. 2023, arXiv:2302.04867, Alg. 2-3)",
               options_schema("unipc", {order_key(2, 1, 3),
                                        string_key("variant", "B(h) = h (bh1) or expm1(h) (bh2)").fallback_str("bh1").one_of({"bh1", "bh2"}),
                                        string_key("prediction", "the model output the update uses").fallback_str("data").one_of({"data", "noise"}),
                                        boolean_key("lower_order_final", "the last steps drop to orders ..., 2, 1").fallback_bool(true),
                                        boolean_key("corrector", "apply the UniC corrector (false: UniP alone)").fallback_bool(true)}),
               [](ConfigTable& o) {
                 const UniPCOptions u{.order = static_cast<int>(o.integer("order")),
                                      .variant = o.string("variant") == "bh1" ? UniPCVariant::bh1 : UniPCVariant::bh2,
                                      .prediction = o.string("prediction") == "data" ? UniPCPrediction::data : UniPCPrediction::noise,
                                      .lower_order_final = o.boolean("lower_order_final"),
                                      .corrector = o.boolean("corrector")};
                 return deterministic(u, DIFFODE_SAMPLER_FN(sample_unipc));
               }});
  r.push_back({"ipndm", "exponential", "improved PNDM (Zhang & Chen 2023, arXiv:2204.13902)",
               options_schema("ipndm", {integer_key("max_order", "highest multistep order").fallback_int(4).at_least(1).at_most(4)}),
               [](ConfigTable& o) {
                 return deterministic(IPNDMOptions{.max_order = static_cast<int>(o.integer("max_order"))}, DIFFODE_SAMPLER_FN(sample_ipndm));
               }});
}

}  // namespace

void add_exponential_family(Registry& r) {
  r.push_back({"ddim", "exponential", "DDIM, optionally stochastic (Song et al. 2021, arXiv:2010.02502, eq. 12)",
               options_schema("ddim", ancestral_keys(0.0)), [](ConfigTable& o) {
                 const DDIMOptions d{.eta = o.number("eta"), .s_noise = o.number("s_noise")};
                 return ConfiguredSampler{.run = grid_runner(d, d.eta > 0, DIFFODE_SAMPLER_FN(sample_ddim)), .stochastic = d.eta > 0};
               }});
  r.push_back({"ddpm", "exponential", "DDPM ancestral sampling (Ho et al. 2020, arXiv:2006.11239, Alg. 2)",
               options_schema("ddpm", {string_key("variance", "posterior beta~ (small) or beta (large)").fallback_str("small").one_of({"small", "large"}),
                                       noise_key()}),
               [](ConfigTable& o) {
                 const DDPMOptions d{.variance = o.string("variance") == "small" ? DDPMVariance::small : DDPMVariance::large};
                 return ConfiguredSampler{.run = grid_runner(d, true, DIFFODE_SAMPLER_FN(sample_ddpm)), .stochastic = true};
               }});
  add_dpm_solver(r);
  add_dpm_solver_adaptive(r);
  add_dpmpp(r);
  add_unipc_ipndm(r);
}

}  // namespace diffode::samplers
