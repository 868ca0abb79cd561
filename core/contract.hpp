// What a stepper promises and what a problem requires, checked before any work is done.
//
// As diffrax's solvers expose `order`, `strong_order` and `term_structure`, and torchsde's base
// solver refuses an SDE whose noise type or calculus it cannot handle, each diffode stepper carries
// a constexpr StepperTraits, and each problem a ProblemTraits. check_contract() compares the two
// and throws ContractError naming both and the reason: a mismatch is an error, never a wrong answer.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace diffode {

// How the noise enters: additive g(t); diagonal g_i(x_i, t) with one Brownian motion per dimension;
// scalar g(x, t) with one Brownian motion per sample shared by all dimensions.
enum class NoiseType : unsigned { none = 0, additive = 1, diagonal = 2, scalar = 4 };

enum class Calculus { none, ito, stratonovich };

constexpr unsigned noise_bit(NoiseType n) { return static_cast<unsigned>(n); }
constexpr unsigned noise_set(std::initializer_list<NoiseType> types) {
  unsigned bits = 0;
  for (NoiseType t : types) bits |= noise_bit(t);
  return bits;
}

std::string_view to_string(NoiseType n);
std::string_view to_string(Calculus c);

struct StepperTraits {
  std::string_view name;
  bool stochastic = false;      // integrates an SDE (needs a Brownian path)
  double order = 0;             // deterministic order (ODE steppers; the drift part of SDE ones)
  double strong_order = 0;      // SDE steppers, for the noise types they declare
  double weak_order = 0;
  Calculus calculus = Calculus::none;
  unsigned noise_types = 0;     // bit set of NoiseType the stepper handles
  bool adaptive = false;        // has an embedded error estimate
  bool needs_time_integral = false;   // uses the space-time integral of W (SRA schemes)
  bool needs_diffusion_derivative = false;  // uses dg/dx (Milstein)
  int evaluations_per_step = 1; // drift (or drift+diffusion) evaluations per accepted step
};

struct ProblemTraits {
  bool stochastic = false;
  NoiseType noise = NoiseType::none;
  Calculus calculus = Calculus::none;
  bool has_diffusion_derivative = false;
};

class ContractError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Throws ContractError when `stepper` cannot integrate a problem with these traits.
void check_contract(const StepperTraits& stepper, const ProblemTraits& problem);

}  // namespace diffode
