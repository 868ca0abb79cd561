// A whole fixed-grid diffusion solve with its state on the network's device: the body of the network
// backend's solve_on_device (models/network.hpp). x~_T is copied to the device once, the sampler
// template runs on StateOps<torch::Tensor> (core/state_torch.hpp) with the network's tensor
// predictor (make_tensor_predictor, models/torch/network_model_torch.hpp) behind a denoiser that
// does what ScaledDenoiser does, and the result is copied back once. What still crosses to the
// host each step: the samplers' finiteness check (N booleans, StateOps<torch::Tensor>::finite_rows)
// and, for a TorchScript module, the range of the step's levels (4 numbers), which its host-side
// process functions map to the module's time.
//
// The samplers it runs are device_state_samplers() (models/network.hpp), all instantiated in the one
// translation unit device_solve_torch.cpp (each instantiation on torch state costs compile time).
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

namespace diffode {

// Throws std::invalid_argument for a sampler outside device_state_samplers() or an option the device
// path does not take, and std::runtime_error for a model this backend did not load. A sampler that
// throws mid-run propagates its exception (the caller records it as the host path does).
DeviceSolveOutcome solve_on_device(const NetworkModel& model, const DeviceSolveSpec& spec, const Batch& x_scaled);

}  // namespace diffode
