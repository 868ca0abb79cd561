// Exact ground truth for guidance: a class-conditional Gaussian mixture.
//
// The mixture p_0 = sum_k w_k N(mu_k, diag(s_k^2)) (models/gaussian_mixture.hpp) has its components
// grouped into classes: component k belongs to class c(k). Then
//     p(c)        = sum_{k in c} w_k
//     p(x | c)    = sum_{k in c} (w_k / p(c)) N_k(x)     (the class's components, renormalised)
//     p(x)        = sum_c p(c) p(x | c)                  (all components: the unconditional law)
// and, because noising acts component by component, the same holds at every noise level
// (alpha, sigma) with N_k the noised components. So the conditional and unconditional scores and
// denoisers are exact mixtures, and so is the classifier of noisy inputs
//     log p(c | x_t) = log p(c) + log p_t(x | c) - log p_t(x),
//     grad log p(c | x_t) = sum_k (r^c_k - r_k) s_k,
// where r_k are the unconditional responsibilities, r^c_k the class's (zero off the class) and
// s_k = -(x - alpha mu_k) / v_k the component scores; it equals score_cond - score_uncond.
//
// GuidedPredictor turns these into the guided predictions samplers use (native: the denoiser x0):
//   cfg        classifier-free guidance with CFG-rescale, a guidance interval and a negative class,
//              as models/guidance.hpp defines it (its combination is the one every guided model
//              uses); the mixture's native output is the x0 prediction it combines.
//   classifier classifier guidance with the exact classifier (Dhariwal & Nichol 2021,
//              arXiv:2105.05233, Algorithm 1, on the conditional model as their section 4 also
//              does): score = score(x | c) + w grad log p(c | x_t), i.e. by Tweedie
//                  D = D(x | c) + w (sigma^2 / alpha) grad log p(c | x_t),
//              with the gradient computed from the responsibilities directly (above), and with the
//              same guidance interval.
// With these conventions both kinds at scale w target the same tilted law at the data,
// p(x | c)^(1 + w) p(x)^(-w) (normalised), which guided sampling is often said to sample and in
// general does not, because the tilt does not commute with noising; with exact models the two
// kinds give the same predictions up to rounding.
// model_calls() counts the mixture evaluations behind each guided evaluation: the conditional
// denoiser, plus the null or negative class's denoiser (cfg) or the classifier's gradient
// (classifier) where a row is guided.
#pragma once

#include "models/gaussian_mixture.hpp"
#include "models/guidance.hpp"

#include <atomic>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

class ClassConditionalMixture {
 public:
  // component_class[k] in 0 .. C-1 is component k's class; every class must own a component.
  // Throws std::invalid_argument otherwise.
  ClassConditionalMixture(GaussianMixture mixture, std::vector<Index> component_class);

  Index classes() const { return static_cast<Index>(conditionals_.size()); }
  Index dims() const { return unconditional_.dims(); }
  const std::vector<Index>& component_class() const { return component_class_; }
  const GaussianMixture& unconditional() const { return unconditional_; }
  const GaussianMixture& conditional(Index c) const;
  double class_prior(Index c) const;  // p(c)

  // log p(c | x_t) per sample, and its gradient in x (N x D).
  PerSample log_class_posterior(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index c) const;
  void classifier_gradient(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index c, Batch& out) const;

 private:
  GaussianMixture unconditional_;
  std::vector<Index> component_class_;
  std::vector<GaussianMixture> conditionals_;
  Eigen::ArrayXd class_prior_;
};

class GuidedPredictor final : public GuidedModelPredictor {
 public:
  // Throws std::invalid_argument as check_guidance (models/guidance.hpp) does.
  GuidedPredictor(std::shared_ptr<const ClassConditionalMixture> model, GuidanceSettings settings);
  Parameterization native() const override { return Parameterization::x0; }
  const GuidanceSettings& settings() const { return settings_; }
  Index model_calls() const override { return calls_.load(std::memory_order_relaxed); }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override;

 private:
  std::shared_ptr<const ClassConditionalMixture> model_;
  GuidanceSettings settings_;
  mutable std::atomic<Index> calls_{0};
};

}  // namespace diffode
