#include "experiments/sampler_registry.hpp"

#include "solvers/diffusion/euler.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

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

std::vector<SamplerEntry> make_registry() {
  std::vector<SamplerEntry> r;
  r.push_back({"euler", "Euler in sigma with optional churn (Karras et al. 2022, arXiv:2206.00364, Alg. 2)", false,
               [](ConfigTable& o, bool& stochastic) -> SamplerRunner {
                 const ChurnOptions churn = read_churn(o);
                 stochastic = churn.s_churn > 0;
                 return [churn](const ScaledDenoiser<Batch>& m, Batch& x, std::span<const double> s, const SigmaNoise<Batch>* n,
                                SamplerObserver& obs) {
                   return sample_euler(m, x, s, churn, n, obs);
                 };
               }});
  return r;
}

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
