// Placeholder replaced by the implementation (kept only until it lands).
#include "models/torch/network_model_torch.hpp"

#include <stdexcept>

namespace diffode {

std::shared_ptr<const NetworkModel> load_checkpoint_model(const std::string&, const NetworkRuntime&) {
  throw std::runtime_error("network checkpoints are not implemented yet");
}
std::shared_ptr<const NetworkModel> load_torchscript_model(const TorchScriptSpec&, const NetworkRuntime&) {
  throw std::runtime_error("TorchScript models are not implemented yet");
}

}  // namespace diffode
