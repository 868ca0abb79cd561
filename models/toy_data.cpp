#include "models/toy_data.hpp"

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <Random123/uniform.hpp>
#include <fmt/format.h>

#include <cmath>
#include <numbers>
#include <stdexcept>

namespace diffode {
namespace {

// Counter layout: key = seed, counter = (block, stream, index low, index high); the stream word
// keeps these draws apart from the mixture's and the Brownian paths'.
constexpr std::uint32_t kToyStream = 0x746F7921;  // "toy!"

struct Draw {
  double u1, u2;  // uniforms in (0, 1]
  double z1, z2;  // standard normals
};

Draw draw(std::uint64_t seed, std::uint64_t index) {
  using Philox = r123::Philox4x32;
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const auto block = [&](std::uint32_t b) {
    const Philox::ctr_type ctr = {{b, kToyStream, static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32)}};
    const auto r = Philox{}(ctr, key);
    return std::pair{(std::uint64_t{r[0]} << 32) | r[1], (std::uint64_t{r[2]} << 32) | r[3]};
  };
  const auto [a, b] = block(0);
  const auto [c, d] = block(1);
  const r123::double2 z = r123::boxmuller(c, d);
  return {r123::u01<double>(a), r123::u01<double>(b), z.x, z.y};
}

}  // namespace

std::optional<ToySet> toy_set_from_string(std::string_view name) {
  for (ToySet s : {ToySet::two_moons, ToySet::checkerboard, ToySet::swiss_roll, ToySet::rings})
    if (to_string(s) == name) return s;
  return std::nullopt;
}

std::string_view to_string(ToySet set) {
  switch (set) {
    case ToySet::two_moons: return "two_moons";
    case ToySet::checkerboard: return "checkerboard";
    case ToySet::swiss_roll: return "swiss_roll";
    case ToySet::rings: return "rings";
  }
  return "?";
}

std::vector<std::string> toy_set_names() { return {"two_moons", "checkerboard", "swiss_roll", "rings"}; }

double toy_default_noise(ToySet set) {
  switch (set) {
    case ToySet::two_moons: return 0.1;
    case ToySet::checkerboard: return 0.0;
    case ToySet::swiss_roll: return 1.0;
    case ToySet::rings: return 0.08;
  }
  return 0.0;
}

Batch toy_data(ToySet set, Index n, std::uint64_t seed, Index first, std::optional<double> noise) {
  if (n < 0 || first < 0) throw std::invalid_argument("toy_data: negative count or index");
  const double jitter = noise.value_or(toy_default_noise(set));
  if (!(jitter >= 0) || !std::isfinite(jitter)) throw std::invalid_argument(fmt::format("toy_data: noise {} must be >= 0", jitter));
  constexpr double pi = std::numbers::pi;
  Batch out(n, 2);
  for (Index i = 0; i < n; ++i) {
    const auto index = static_cast<std::uint64_t>(first + i);
    const Draw r = draw(seed, index);
    double x = 0, y = 0;
    switch (set) {
      case ToySet::two_moons: {
        const double th = pi * r.u1;
        if (index % 2 == 0)
          x = std::cos(th), y = std::sin(th);
        else
          x = 1.0 - std::cos(th), y = 0.5 - std::sin(th);
        x += jitter * r.z1 - 0.5, y += jitter * r.z2 - 0.25;
        break;
      }
      case ToySet::checkerboard: {
        const double x1 = 4.0 * r.u1 - 2.0;
        // u2 in (0, 1]: its top bit picks b, the rest gives U[0, 1).
        const double u = 2.0 * r.u2;
        const double b = u > 1.0 ? 1.0 : 0.0;
        const double x2 = (u - b) - 2.0 * b + std::fmod(std::floor(x1) + 4.0, 2.0);
        x = 2.0 * x1 + jitter * r.z1, y = 2.0 * x2 + jitter * r.z2;
        break;
      }
      case ToySet::swiss_roll: {
        const double t = 1.5 * pi * (1.0 + 2.0 * r.u1);
        x = (t * std::cos(t) + jitter * r.z1) / 5.0, y = (t * std::sin(t) + jitter * r.z2) / 5.0;
        break;
      }
      case ToySet::rings: {
        const double radius = 3.0 * (1.0 - 0.25 * static_cast<double>(index % 4));
        const double th = 2.0 * pi * r.u1;
        x = radius * std::cos(th) + jitter * r.z1, y = radius * std::sin(th) + jitter * r.z2;
        break;
      }
    }
    out(i, 0) = x, out(i, 1) = y;
  }
  return out;
}

}  // namespace diffode
