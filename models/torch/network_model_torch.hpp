// Networks as models: a diffode checkpoint (models/torch/score_mlp_torch.hpp) or a user's TorchScript
// module, loaded for a NetworkRuntime, giving Predictor<Batch>s (models/network.hpp).
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "core/state_torch.hpp"
#include "models/network.hpp"

#include <memory>
#include <string>

namespace diffode {

std::shared_ptr<const NetworkModel> load_checkpoint_model(const std::string& file, const NetworkRuntime& runtime);
std::shared_ptr<const NetworkModel> load_torchscript_model(const TorchScriptSpec& spec, const NetworkRuntime& runtime);

// A predictor of a network this backend loaded (a checkpoint or a TorchScript module) on torch
// state that stays on the network's device: x [N, D] and the levels [N] float64 there, the
// prediction [N, D] float64 there (the network itself runs in its own dtype, as make_predictor's
// does). It runs the host predictor's operations, so the two agree to rounding; it counts its
// evaluations as every Predictor does. Throws std::runtime_error for any other model.
std::unique_ptr<Predictor<torch::Tensor>> make_tensor_predictor(const NetworkModel& model, int label = -1);
// The device such a network runs on.
torch::Device network_device(const NetworkModel& model);

// SHA-256 (FIPS 180-4) of a file, as lowercase hex. Throws std::runtime_error when it cannot be read.
std::string file_sha256(const std::string& file);

}  // namespace diffode
