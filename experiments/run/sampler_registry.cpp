#include "experiments/run/sampler_registry.hpp"

#include "experiments/run/samplers/parts.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace diffode {

const std::vector<SamplerEntry>& sampler_registry() {
  static const std::vector<SamplerEntry> registry = [] {
    samplers::Registry r;
    samplers::add_karras_family(r);
    samplers::add_exponential_family(r);
    samplers::add_score_sde_family(r);
    samplers::add_generic_family(r);
    samplers::add_odeint_family(r);
    for (auto& e : r) e.options.help = e.summary;
    return r;
  }();
  return registry;
}

const SamplerEntry* find_sampler(std::string_view name) {
  for (const auto& e : sampler_registry())
    if (e.name == name) return &e;
  return nullptr;
}

const TableSchema& sampler_table_schema() {
  static const TableSchema schema{"sampler", "the sampler: its name, then its options (see `diffode samplers` and the tables below)",
                                  {string_key("name", "a registered sampler (`diffode samplers`)")}};
  return schema;
}

KeySpec noise_key(bool grid_path) {
  if (!grid_path)
    return string_key("noise",
                      "the noise of a stochastic sampler: fresh normals per step (cheap), or increments of one Brownian path per seed "
                      "(a virtual Brownian tree, the same path on every grid: what a strong error against a finer grid needs; the "
                      "default before per_step)")
        .fallback_str("per_step")
        .one_of({"per_step", "brownian"});
  return string_key("noise",
                    "the noise of a stochastic sampler: fresh normals per step (cheap), or increments of one Brownian path per seed "
                    "(a virtual Brownian tree, the same path on every grid: what a strong error against a finer grid needs; the "
                    "default before per_step), or brownian_grid: a Brownian-bridge tree on the run's own grid, the same path on "
                    "every grid that is each 2^k-th point of it (not on other grids), at about the per-step cost")
      .fallback_str("per_step")
      .one_of({"per_step", "brownian", "brownian_grid"});
}

ConfiguredSampler read_sampler(ConfigTable table) {
  const std::string name = table.bind(sampler_table_schema()).string("name");
  const SamplerEntry* entry = find_sampler(name);
  if (!entry) {
    std::vector<std::string> names;
    for (const auto& e : sampler_registry()) names.push_back(e.name);
    table.fail("name", fmt::format("unknown sampler '{}' (known: {})", name, fmt::join(names, ", ")));
  }
  // The table as this sampler reads it: `name` and the sampler's declared options.
  TableSchema schema = entry->options;
  schema.keys.insert(schema.keys.begin(), sampler_table_schema().keys.front());
  ConfigTable options = table.bind(schema);
  options.string("name");
  ConfiguredSampler sampler = entry->configure(options);
  if (std::ranges::any_of(entry->options.keys, [](const KeySpec& k) { return k.key == "noise"; })) {
    const std::string noise = options.string("noise");
    sampler.noise = noise == "brownian" ? NoiseKind::brownian : noise == "brownian_grid" ? NoiseKind::brownian_grid : NoiseKind::per_step;
    sampler.noise_given = options.has("noise");
  }
  options.finish();
  sampler.name = name;
  return sampler;
}

std::string describe_samplers() {
  std::string out, family;
  for (const auto& e : sampler_registry()) {
    if (e.family != family) out += fmt::format("{}{}:\n", family.empty() ? "" : "\n", family = e.family);
    out += fmt::format("  {:<22} {}\n", e.name, e.summary);
    for (const auto& k : e.options.keys) {
      const std::string constraint = constraint_text(k);
      out += fmt::format("      {} = {}{}  {}\n", k.key, default_text(k), constraint.empty() ? "" : " (" + constraint + ")", k.help);
    }
  }
  return out;
}

}  // namespace diffode
