// A sampling config read from text as `diffode sample` reads its file (read_sampling_setup, then
// the root finished), for the tests of what a config sets up and which errors it raises. `name`
// stands for the file in the errors ("name:line: table.key ...").
#pragma once

#include "experiments/run/config.hpp"
#include "experiments/run/sampling.hpp"

#include <exception>
#include <string>

namespace diffode::testing {

inline SamplingSetup sampling_setup_of(const std::string& text, const std::string& name) {
  const Config parsed = Config::from_string(text, name);
  ConfigTable root = parsed.root();
  SamplingSetup s = read_sampling_setup(root);
  root.finish();
  return s;
}

// The ConfigError a config raises, or "" when it reads; any other exception is returned as
// "not a ConfigError: ...", so that a test expecting a message fails on it.
inline std::string sampling_config_error(const std::string& text, const std::string& name) {
  try {
    sampling_setup_of(text, name);
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a ConfigError: ") + e.what();
  }
  return "";
}

}  // namespace diffode::testing
