// Classifier-free guidance of a class-conditional network (Ho & Salimans 2022, arXiv:2207.12598,
// eq. 6), with CFG-rescale (Lin et al. 2024, arXiv:2305.08891), a guidance interval in sigma~
// (Kynkaenniemi et al. 2024, arXiv:2404.07724) and a negative class: the semantics of the exact
// mixture's guidance, through the same combination (models/guidance.hpp). Torch-free: it composes
// two predictors of the network, NetworkModel::make_predictor(c) for the requested class and
// make_predictor(-1) (the null class) or make_predictor(n) (a negative class).
//
// The guided prediction is the network's own output kind (its native(): eps, x0, v or score), so at
// scale 0, or where the interval leaves a level unguided, it is the conditional predictor's output
// bit for bit. Where guided, (1 + w) P(x | c) - w P(x | n) in the native kind is the x0 combination
// D = (1 + w) D(x | c) - w D(x | n) read in that kind (the conversion is affine with the same
// coefficient of x for both). CFG-rescale is a statement about the spread of the x0 prediction, so
// with rescale the two predictions are converted to x0, combined and rescaled there, and converted
// back; at alpha = 0, where an eps or score prediction does not determine x0, the row is guided
// without rescale.
//
// Classifier guidance needs a classifier of noisy inputs, which a network does not come with: the
// constructor refuses it.
//
// Counting (models/guidance.hpp): nfe() counts the sampler's evaluations; model_calls() counts the
// network's, two per evaluation where a row is guided (both predictions over the whole batch) and
// one where none is.
#pragma once

#include "models/guidance.hpp"
#include "models/network.hpp"

#include <memory>

namespace diffode {

class NetworkGuidedPredictor final : public GuidedModelPredictor {
 public:
  // `conditional` predicts for the requested class, `other` for the null or negative class; both of
  // one network (same native kind). Throws std::invalid_argument as check_guidance does with
  // `classes`, for classifier guidance, for a missing predictor, or for predictions of two kinds.
  NetworkGuidedPredictor(std::unique_ptr<Predictor<Batch>> conditional, std::unique_ptr<Predictor<Batch>> other, Index classes,
                         GuidanceSettings settings);
  Parameterization native() const override { return conditional_->native(); }
  const GuidanceSettings& settings() const { return settings_; }
  Index model_calls() const override { return conditional_->nfe() + other_->nfe(); }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override;

 private:
  std::unique_ptr<Predictor<Batch>> conditional_, other_;
  GuidanceSettings settings_;
};

// The guided predictor of `network` (for one thread, as make_predictor): its predictors for
// settings.target_class and for the null class or settings.negative_class. Throws
// std::invalid_argument for an unconditional network and as NetworkGuidedPredictor does.
std::unique_ptr<NetworkGuidedPredictor> make_guided_predictor(const NetworkModel& network, const GuidanceSettings& settings);

}  // namespace diffode
