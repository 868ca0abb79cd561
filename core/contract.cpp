#include "core/contract.hpp"

#include <fmt/format.h>

namespace diffode {

std::string_view to_string(NoiseType n) {
  switch (n) {
    case NoiseType::none: return "none";
    case NoiseType::additive: return "additive";
    case NoiseType::diagonal: return "diagonal";
    case NoiseType::scalar: return "scalar";
  }
  return "?";
}

std::string_view to_string(Calculus c) {
  switch (c) {
    case Calculus::none: return "none";
    case Calculus::ito: return "Ito";
    case Calculus::stratonovich: return "Stratonovich";
  }
  return "?";
}

void check_contract(const StepperTraits& s, const ProblemTraits& p) {
  auto fail = [&](std::string_view why) {
    throw ContractError(fmt::format("stepper '{}' cannot integrate this problem: {}", s.name, why));
  };
  if (!p.stochastic) {
    if (s.stochastic) fail("it is an SDE stepper and the problem is an ODE (no diffusion term)");
    return;
  }
  if (!s.stochastic) fail("it is an ODE stepper and the problem is an SDE; use an SDE stepper");
  if ((s.noise_types & noise_bit(p.noise)) == 0)
    fail(fmt::format("the problem's noise is {}, which this stepper does not support", to_string(p.noise)));
  // Ito and Stratonovich solutions coincide for additive noise; otherwise the calculi must match.
  if (p.noise != NoiseType::additive && s.calculus != p.calculus)
    fail(fmt::format("the problem is written in {} calculus and the stepper converges to the {} solution; "
                     "rewrite the drift with the conversion term or pick a {} stepper",
                     to_string(p.calculus), to_string(s.calculus), to_string(p.calculus)));
  if (s.needs_diffusion_derivative && !p.has_diffusion_derivative)
    fail("it needs the derivative of the diffusion dg/dx, which the problem does not provide");
}

}  // namespace diffode
