// The 2-D toy data sets of the density-estimation literature, drawn afresh from a seed: two moons
// (scikit-learn's make_moons), checkerboard, Swiss roll and rings as FFJORD defines them (Grathwohl
// et al. 2019, arXiv:1810.01367, its toy-data code). They have no closed-form score; they serve to
// train networks (diffode train) on laws with thin, curved or disconnected support.
//
// Draw i of stream `seed` depends on (seed, i) only (a counter-based generator, Philox4x32-10 of
// Random123), so a training step's batch is the same whatever drew the batches before it.
#pragma once

#include "core/state.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace diffode {

enum class ToySet { two_moons, checkerboard, swiss_roll, rings };

std::optional<ToySet> toy_set_from_string(std::string_view name);
std::string_view to_string(ToySet set);
// The names, for messages and schemas.
std::vector<std::string> toy_set_names();

// The set's own noise: two moons 0.1 (Gaussian jitter of each point), checkerboard 0 (none), Swiss
// roll 1.0 (before the roll is scaled by 1/5, as FFJORD draws it), rings 0.08.
double toy_default_noise(ToySet set);

// n draws, rows = draws first .. first + n - 1 of stream `seed`, with Gaussian jitter of std
// `noise` (in the units toy_default_noise gives).
//   two_moons     half the draws on each moon: (cos th, sin th) and (1 - cos th, 1/2 - sin th),
//                 th ~ U[0, pi], shifted by (-1/2, -1/4) so the set is centred
//   checkerboard  x1 ~ U[-2, 2], x2 ~ U[0, 1] - 2 b + (floor(x1) mod 2), b ~ {0, 1}; both times 2
//   swiss_roll    t = 1.5 pi (1 + 2 u): (t cos t, t sin t) / 5
//   rings         four circles of radii 3, 2.25, 1.5, 0.75 (FFJORD's 1, 3/4, 1/2, 1/4 times 3),
//                 a draw's ring by its index, its angle uniform
Batch toy_data(ToySet set, Index n, std::uint64_t seed, Index first = 0, std::optional<double> noise = std::nullopt);

}  // namespace diffode
