// The config schema: docs/config.md is generated from it and must be current, every command's help
// is built from it, and a bound table enforces its defaults, ranges and allowed values.
#include "experiments/cli/commands.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace diffode {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

#ifdef DIFFODE_SOURCE_DIR
TEST(ConfigReference, DocsConfigMdIsGeneratedFromTheSchemas) {
  const auto path = std::filesystem::path(DIFFODE_SOURCE_DIR) / "docs/config.md";
  EXPECT_EQ(read_text(path), config_reference_markdown())
      << "docs/config.md is stale: regenerate it with `build/experiments/diffode config-reference > docs/config.md`";
}
#endif

TEST(ConfigReference, EveryTableAndSamplerIsInTheReferenceAndTheHelp) {
  const std::string reference = config_reference_markdown();
  for (const char* table : {"[process]", "[model]", "[grid]", "[sampler]", "[run]", "[metrics]", "[sweep]", "[data]", "[likelihood]", "[output]"})
    EXPECT_NE(reference.find(table), std::string::npos) << table;
  for (const auto& e : sampler_registry()) EXPECT_NE(reference.find("[sampler (" + e.name + ")]"), std::string::npos) << e.name;
  const std::string sample_help = sample_config_help();
  for (const auto& key : grid_schema().key_names()) EXPECT_NE(sample_help.find("  " + key + " = "), std::string::npos) << key;
  EXPECT_NE(likelihood_config_help().find("probe_seed = 0"), std::string::npos);
  EXPECT_NE(sweep_config_help().find("strong_steps = 1024 (1..1000000)"), std::string::npos);
}

std::string error_of(const std::string& text, const TableSchema& schema, const std::string& key) {
  const Config config = Config::from_string(text, "c.toml");
  ConfigTable t = config.root().table("t", schema);
  try {
    const KeySpec& spec = *schema.find(key);
    if (spec.type == ValueType::number) t.number(key);
    if (spec.type == ValueType::integer) t.integer(key);
    if (spec.type == ValueType::string) t.string(key);
    t.finish();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigSchema, DefaultsRangesAndAllowedValuesComeFromTheDeclaration) {
  const TableSchema schema{"t",
                           "",
                           {number_key("rtol", "").fallback(1e-5).above(0).below(1), integer_key("steps", "").at_least(1).at_most(10),
                            string_key("kind", "").fallback_str("a").one_of({"a", "b"}), number_key("s_tmax", "").fallback(1.0).infinite()}};
  const Config empty = Config::from_string("[t]\n", "c.toml");
  ConfigTable t = empty.root().table("t", schema);
  EXPECT_EQ(t.number("rtol"), 1e-5);
  EXPECT_EQ(t.string("kind"), "a");
  EXPECT_NE(error_of("[t]\n", schema, "steps").find("c.toml:1: t.steps: missing"), std::string::npos);
  EXPECT_NE(error_of("[t]\nrtol = 1.0\n", schema, "rtol").find("c.toml:2: t.rtol: must be a finite number > 0 and < 1, got 1"), std::string::npos);
  EXPECT_NE(error_of("[t]\nrtol = nan\n", schema, "rtol").find("t.rtol: must be a number, got nan"), std::string::npos);
  EXPECT_NE(error_of("[t]\nrtol = inf\n", schema, "rtol").find("t.rtol: must be finite, got inf"), std::string::npos);
  EXPECT_EQ(error_of("[t]\ns_tmax = inf\n", schema, "s_tmax"), "");
  EXPECT_NE(error_of("[t]\nsteps = 11\n", schema, "steps").find("t.steps: must lie in 1..10, got 11"), std::string::npos);
  EXPECT_NE(error_of("[t]\nkind = \"c\"\n", schema, "kind").find("t.kind: 'c' is not one of: a, b"), std::string::npos);
  // A key the table does not declare: the message lists what it takes.
  EXPECT_NE(error_of("[t]\nrtol = 0.1\nrtoll = 1\n", schema, "rtol").find("c.toml:3: t.rtoll: unknown key (this table takes: rtol, steps, kind, s_tmax)"),
            std::string::npos);
}

TEST(ConfigSchema, AProcessRefusesAParameterItDoesNotTake) {
  const Config config = Config::from_string("[process]\nname = \"vp\"\nsigma_min = 0.01\n", "c.toml");
  try {
    read_process(config.root().table("process"));
    FAIL() << "sigma_min on VP must be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("c.toml:3: process.sigma_min: the process 'vp' does not take sigma_min"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace diffode
