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
//   cfg        classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598, eq. 6):
//                  D = (1 + w) D(x | c) - w D(x | n),
//              n the null class (the unconditional model) or a negative class. Being affine at a
//              fixed level, the same combination in eps, score or v space gives the same update.
//              CFG-rescale (Lin et al. 2024, arXiv:2305.08891, section 3.4, eqs. 15-18) with phi:
//                  D_rescaled = D * std(D(x | c)) / std(D),  D <- phi D_rescaled + (1 - phi) D,
//              std over a sample's dimensions; applied here to the x0 prediction, the mixture's
//              native output (with an eps or v network it is taken of that output instead).
//   classifier classifier guidance with the exact classifier (Dhariwal & Nichol 2021,
//              arXiv:2105.05233, Algorithm 1, on the conditional model as their section 4 also
//              does): score = score(x | c) + w grad log p(c | x_t), i.e. by Tweedie
//                  D = D(x | c) + w (sigma^2 / alpha) grad log p(c | x_t),
//              with the gradient computed from the responsibilities directly (above).
// With these conventions both kinds at scale w target the same tilted law at the data,
// p(x | c)^(1 + w) p(x)^(-w) (normalised), which guided sampling is often said to sample and in
// general does not, because the tilt does not commute with noising; with exact models the two
// kinds give the same predictions up to rounding.
//   interval   guidance only where the scale-free noise level sigma / alpha lies in [lo, hi]
//              (Kynkaenniemi et al. 2024, arXiv:2404.07724, eq. 2); elsewhere the conditional
//              prediction D(x | c), i.e. w = 0.
#pragma once

#include "models/gaussian_mixture.hpp"

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

struct GuidanceSettings {
  enum class Kind { cfg, classifier };
  Kind kind = Kind::cfg;
  Index target_class = 0;
  double scale = 0.0;    // w: 0 = the conditional model
  double rescale = 0.0;  // phi of CFG-rescale (cfg only): 0 = plain CFG
  double sigma_lo = 0.0, sigma_hi = std::numeric_limits<double>::infinity();  // guidance interval in sigma / alpha
  std::optional<Index> negative_class;  // cfg: in place of the null (unconditional) model
};

class GuidedPredictor final : public Predictor<Batch> {
 public:
  // Throws std::invalid_argument on a class out of range, a negative or non-finite scale, phi
  // outside [0, 1], an empty interval, or rescale / negative_class with classifier guidance.
  GuidedPredictor(std::shared_ptr<const ClassConditionalMixture> model, GuidanceSettings settings);
  Parameterization native() const override { return Parameterization::x0; }
  const GuidanceSettings& settings() const { return settings_; }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override;

 private:
  std::shared_ptr<const ClassConditionalMixture> model_;
  GuidanceSettings settings_;
};

}  // namespace diffode
