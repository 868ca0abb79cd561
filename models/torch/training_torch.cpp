// Placeholder replaced by the implementation (kept only until it lands).
#include "models/torch/training_torch.hpp"

#include <stdexcept>

namespace diffode {

TrainingOutcome train_network(const TrainingSpec&, const std::function<void(const TrainingProgress&)>&, const std::function<bool()>&) {
  throw std::runtime_error("training is not implemented yet");
}

}  // namespace diffode
