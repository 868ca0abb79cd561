// Denoising score matching for the networks of models/network.hpp (TrainingSpec).
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

#include <functional>

namespace diffode {

TrainingOutcome train_network(const TrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                              const std::function<bool()>& stop);

}  // namespace diffode
