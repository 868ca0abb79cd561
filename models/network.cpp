#include "models/network.hpp"

#include <array>
#include <stdexcept>
#include <string>

namespace diffode {
namespace {

constexpr std::array<std::pair<NetworkOutput, std::string_view>, 6> kOutputs{{
    {NetworkOutput::eps, "eps"},
    {NetworkOutput::x0, "x0"},
    {NetworkOutput::v, "v"},
    {NetworkOutput::score, "score"},
    {NetworkOutput::flow, "flow"},
    {NetworkOutput::edm, "edm"},
}};

}  // namespace

std::string_view to_string(NetworkOutput output) {
  for (const auto& [value, name] : kOutputs)
    if (value == output) return name;
  return "?";
}

NetworkOutput network_output_from_string(std::string_view name) {
  for (const auto& [value, known] : kOutputs)
    if (known == name) return value;
  throw std::invalid_argument("unknown network output '" + std::string(name) + "' (one of eps, x0, v, score, flow, edm)");
}

}  // namespace diffode
