// The network backend's one exported symbol (models/network.hpp): the table of what LibTorch code
// the torch-free program can call once it has opened this library. This entry point assembles the
// library, so it alone takes from the solvers layer (the device-resident solve) as well as models/.
#include "models/network.hpp"
#include "models/torch/network_model_torch.hpp"
#include "models/torch/classifier_torch.hpp"
#include "models/torch/training_torch.hpp"
#include "solvers/diffusion/device_solve_torch.hpp"

extern "C" __attribute__((visibility("default"))) const diffode::NetworkBackend* diffode_network_backend() {
  static const diffode::NetworkBackend backend{
      .abi_version = 4,
      .load_checkpoint = &diffode::load_checkpoint_model,
      .load_torchscript = &diffode::load_torchscript_model,
      .train = &diffode::train_network,
      .load_features = &diffode::load_feature_network,
      .train_classifier = &diffode::train_classifier,
      .solve_on_device = &diffode::solve_on_device,
  };
  return &backend;
}
