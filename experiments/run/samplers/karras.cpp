// The Karras-family samplers in sigma~ (k-diffusion's sampling.py and Karras et al. 2022): Euler and
// EDM Heun with churn, DPM-2, their ancestral variants, and linear multistep.
#include "experiments/run/samplers/parts.hpp"
#include "solvers/diffusion/dpm2.hpp"
#include "solvers/diffusion/heun.hpp"
#include "solvers/diffusion/lms.hpp"

#include <limits>

namespace diffode::samplers {

std::vector<KeySpec> churn_keys() {
  return {number_key("s_churn", "total churn over the grid (0: deterministic)").fallback(0.0).at_least(0),
          number_key("s_tmin", "churn only where s_tmin <= sigma~").fallback(0.0).at_least(0),
          number_key("s_tmax", "churn only where sigma~ <= s_tmax").fallback(std::numeric_limits<double>::infinity()).at_least(0).infinite(),
          number_key("s_noise", "scale of the added noise").fallback(1.0).at_least(0), noise_key()};
}

ChurnOptions read_churn(ConfigTable& o) {
  return {.s_churn = o.number("s_churn"), .s_tmin = o.number("s_tmin"), .s_tmax = o.number("s_tmax"), .s_noise = o.number("s_noise")};
}

std::vector<KeySpec> ancestral_keys(double eta_default) {
  return {number_key("eta", "share of each step's variance renewed by fresh noise (0: deterministic)").fallback(eta_default).at_least(0),
          number_key("s_noise", "scale of the added noise").fallback(1.0).at_least(0), noise_key()};
}

AncestralOptions read_ancestral(ConfigTable& o) { return {.eta = o.number("eta"), .s_noise = o.number("s_noise")}; }

std::unique_ptr<SigmaNoise<Batch>> sigma_noise(const SamplerContext& c, const Batch& x, bool stochastic) {
  if (!stochastic) return nullptr;
  if (c.noise.kind == NoiseKind::per_step) return std::make_unique<SigmaNoise<Batch>>(SigmaNoise<Batch>::per_step(c.noise.seed, x.cols(), c.noise.first_sample));
  if (c.noise.kind == NoiseKind::brownian_grid)  // the skeleton is the grid this sampler walks
    return std::make_unique<SigmaNoise<Batch>>(SigmaNoise<Batch>::brownian_grid(c.noise.seed, c.sigmas, x.cols(), c.noise.first_sample));
  return std::make_unique<SigmaNoise<Batch>>(c.noise.seed, c.sigmas.front(), x.cols(), c.noise.first_sample);
}

namespace {

template <class F>
void add_churned(Registry& r, std::string name, std::string summary, F f) {
  r.push_back({name, "karras", std::move(summary), options_schema(name, churn_keys()), [f](ConfigTable& o) {
                 const ChurnOptions churn = read_churn(o);
                 const bool stochastic = churn.s_churn > 0;
                 return ConfiguredSampler{.run = grid_runner(churn, stochastic, f), .stochastic = stochastic};
               }});
}

template <class F>
void add_ancestral(Registry& r, std::string name, std::string summary, F f) {
  r.push_back({name, "karras", std::move(summary), options_schema(name, ancestral_keys(1.0)), [f](ConfigTable& o) {
                 const AncestralOptions a = read_ancestral(o);
                 const bool stochastic = a.eta > 0;
                 return ConfiguredSampler{.run = grid_runner(a, stochastic, f), .stochastic = stochastic};
               }});
}

}  // namespace

void add_karras_family(Registry& r) {
  add_churned(r, "euler", "Euler in sigma~ with optional churn (Karras et al. 2022, arXiv:2206.00364, Alg. 2 with Euler steps)",
              DIFFODE_SAMPLER_FN(sample_euler));
  add_churned(r, "heun", "EDM Heun, 2nd order, with optional churn (Karras et al. 2022, arXiv:2206.00364, Alg. 2)",
              DIFFODE_SAMPLER_FN(sample_heun));
  add_churned(r, "dpm_2", "DPM-2: midpoint in log sigma~, with optional churn (k-diffusion sample_dpm_2)", DIFFODE_SAMPLER_FN(sample_dpm_2));
  add_ancestral(r, "euler_ancestral", "Euler ancestral (k-diffusion sample_euler_ancestral)", DIFFODE_SAMPLER_FN(sample_euler_ancestral));
  add_ancestral(r, "dpm_2_ancestral", "DPM-2 ancestral (k-diffusion sample_dpm_2_ancestral)", DIFFODE_SAMPLER_FN(sample_dpm_2_ancestral));
  r.push_back({"lms", "karras", "linear multistep in sigma~ with exact Lagrange weights (k-diffusion sample_lms)",
               options_schema("lms", {integer_key("order", "multistep order").fallback_int(4).at_least(1).at_most(4),
                                      string_key("startup", "first steps: lower orders (k-diffusion) or RK4 (keeps order k)")
                                          .fallback_str("lower_order")
                                          .one_of({"lower_order", "rk4"})}),
               [](ConfigTable& o) {
                 const LmsOptions l{.order = static_cast<int>(o.integer("order")),
                                    .startup = o.string("startup") == "rk4" ? LmsStartup::rk4 : LmsStartup::lower_order};
                 return ConfiguredSampler{.run = grid_runner(l, false, DIFFODE_SAMPLER_FN(sample_lms))};
               }});
}

}  // namespace diffode::samplers
