// Guidance, as every guided model shares it: the settings, their checks, where guidance acts, and
// the classifier-free combination itself. The exact class-conditional mixture
// (models/guided_mixture.hpp) and class-conditional networks (models/network_guidance.hpp) both
// guide through these functions, so the combination exists once.
//
//   cfg        classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598, eq. 6) on the x0
//              (denoised) prediction:
//                  D = (1 + w) D(x | c) - w D(x | n),
//              n the null class (the unconditional model) or a negative class. Being affine at a
//              fixed level, the same combination in eps, score or v space gives the same D.
//   rescale    CFG-rescale (Lin et al. 2024, arXiv:2305.08891, section 3.4, eqs. 15-18) with phi:
//                  D_rescaled = D * std(D(x | c)) / std(D),  D <- phi D_rescaled + (1 - phi) D,
//              std over a sample's dimensions, taken of the x0 predictions.
//   interval   guidance only where the scale-free noise level sigma / alpha lies in [lo, hi]
//              (Kynkaenniemi et al. 2024, arXiv:2404.07724, eq. 2); elsewhere the conditional
//              prediction D(x | c), i.e. w = 0.
//
// Counting. A guided predictor is one evaluation for the sampler (its nfe(), the cost every sampler
// comparison reports, as for an unguided model), but behind it CFG calls the model twice where it
// guides (conditional and null or negative class) and once where it does not: model_calls()
// counts those calls, which is what k-diffusion and diffusers call the cost of a guided step.
#pragma once

#include "core/state.hpp"
#include "models/predictor.hpp"

#include <limits>
#include <optional>
#include <vector>

namespace diffode {

struct GuidanceSettings {
  enum class Kind { cfg, classifier };
  Kind kind = Kind::cfg;
  Index target_class = 0;
  double scale = 0.0;    // w: 0 = the conditional model
  double rescale = 0.0;  // phi of CFG-rescale (cfg only): 0 = plain CFG
  double sigma_lo = 0.0, sigma_hi = std::numeric_limits<double>::infinity();  // guidance interval in sigma / alpha
  std::optional<Index> negative_class;  // cfg: in place of the null (unconditional) model
};

// Throws std::invalid_argument on a class (target or negative) outside 0..classes-1, a negative or
// non-finite scale, phi outside [0, 1], an empty interval, or rescale / negative_class with
// classifier guidance. `what` starts the messages.
void check_guidance(const GuidanceSettings& settings, Index classes, const char* what);

// Per row: whether guidance acts at the row's level (scale non-zero and sigma / alpha, infinite
// at alpha = 0, within the interval). Returns whether any row is guided.
bool guided_rows(const GuidanceSettings& settings, const PerSample& alpha, const PerSample& sigma, std::vector<char>& guided);

// Classifier-free guidance of x0 predictions: out = cond, with each guided row replaced by
// (1 + scale) cond - scale other, then CFG-rescaled by phi = rescale. `out` may alias neither input.
void cfg_combine(const Batch& cond, const Batch& other, const std::vector<char>& guided, double scale, double rescale, Batch& out);

// A predictor that guides a model: nfe() counts the sampler's evaluations, model_calls() the
// model's evaluations behind them (see Counting above).
class GuidedModelPredictor : public Predictor<Batch> {
 public:
  virtual Index model_calls() const = 0;
};

}  // namespace diffode
