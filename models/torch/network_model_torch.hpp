// Networks as models: a diffode checkpoint (models/torch/score_mlp_torch.hpp) or a user's TorchScript
// module, loaded for a NetworkRuntime, giving Predictor<Batch>s (models/network.hpp).
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

#include <memory>
#include <string>

namespace diffode {

std::shared_ptr<const NetworkModel> load_checkpoint_model(const std::string& file, const NetworkRuntime& runtime);
std::shared_ptr<const NetworkModel> load_torchscript_model(const TorchScriptSpec& spec, const NetworkRuntime& runtime);

// SHA-256 (FIPS 180-4) of a file, as lowercase hex. Throws std::runtime_error when it cannot be read.
std::string file_sha256(const std::string& file);

}  // namespace diffode
