// The image classifier of models/network.hpp (ClassifierArchitecture) as a LibTorch module, its
// training by cross-entropy, its checkpoint files, and feature networks (FeatureNetwork): a
// classifier checkpoint or a user's TorchScript module.
//
// Checkpoint layout (a torch::serialize archive, as models/torch/score_mlp_torch.hpp's):
//   format            "diffode-classifier" (a file without it is refused by name)
//   version           1
//   architecture/...  ClassifierArchitecture: channels, height, width, classes, conv1, conv2, features, name
//   weights/...       the weights
//   training/...      what resuming needs: AdamW's state, the step, the loss history and the settings
//                     that must not change across a resume
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "models/network.hpp"

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace diffode {

class ImageClassifierImpl : public torch::nn::Module {
 public:
  explicit ImageClassifierImpl(const ClassifierArchitecture& architecture);
  // images [N, C, H, W] -> the penultimate layer's features [N, features] (before its ReLU).
  torch::Tensor features(const torch::Tensor& images);
  // features -> logits [N, classes].
  torch::Tensor head(const torch::Tensor& features);
  torch::Tensor forward(const torch::Tensor& images) { return head(features(images)); }
  const ClassifierArchitecture& architecture() const { return architecture_; }

 private:
  ClassifierArchitecture architecture_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear penultimate_{nullptr}, logits_{nullptr};
};
TORCH_MODULE(ImageClassifier);

// Throws std::invalid_argument naming the field when an architecture cannot be built.
void check_classifier_architecture(const ClassifierArchitecture& a);

// Reads a classifier checkpoint (its weights mapped to the CPU); throws std::runtime_error naming
// the file when it is missing, not a classifier checkpoint or damaged.
ImageClassifier load_classifier(const std::string& file, ClassifierArchitecture& architecture);

TrainingOutcome train_classifier(const ClassifierTrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                                 const std::function<bool()>& stop);

// A classifier checkpoint or a TorchScript module as a FeatureNetwork. Throws std::runtime_error
// naming the file (missing, unreadable, a dry run that fails or returns the wrong shape).
std::shared_ptr<const FeatureNetwork> load_feature_network(const FeatureSpec& spec, const NetworkRuntime& runtime);

}  // namespace diffode
