#include "models/network_guidance.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace diffode {

NetworkGuidedPredictor::NetworkGuidedPredictor(std::unique_ptr<Predictor<Batch>> conditional, std::unique_ptr<Predictor<Batch>> other,
                                               Index classes, GuidanceSettings settings)
    : conditional_(std::move(conditional)), other_(std::move(other)), settings_(std::move(settings)) {
  if (!conditional_ || !other_) throw std::invalid_argument("guidance: a network's guided predictor needs both of its predictors");
  if (settings_.kind == GuidanceSettings::Kind::classifier)
    throw std::invalid_argument("guidance: classifier guidance needs a classifier of noisy inputs, which a network does not have; use kind = \"cfg\"");
  check_guidance(settings_, classes, "guidance");
  if (conditional_->native() != other_->native())
    throw std::invalid_argument(fmt::format("guidance: the conditional prediction is {} and the other {}: both must be of one network",
                                            to_string(conditional_->native()), to_string(other_->native())));
}

void NetworkGuidedPredictor::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  const GuidanceSettings& s = settings_;
  Batch cond;
  conditional_->predict(x, alpha, sigma, cond);
  std::vector<char> guided;
  if (!guided_rows(s, alpha, sigma, guided)) {
    out = std::move(cond);
    return;
  }
  Batch other;
  other_->predict(x, alpha, sigma, other);
  const Parameterization kind = native();
  if (kind == Parameterization::x0 || s.rescale == 0.0) {
    cfg_combine(cond, other, guided, s.scale, s.rescale, out);
    return;
  }
  // Rescale measures the x0 prediction's spread: rows with alpha > 0 go through x0 and back; at
  // alpha = 0 the native prediction does not determine x0, and the row is guided without rescale.
  std::vector<char> through_x0(guided.size()), plain(guided.size());
  for (std::size_t i = 0; i < guided.size(); ++i) {
    through_x0[i] = guided[i] && alpha[static_cast<Index>(i)] != 0.0;
    plain[i] = guided[i] && !through_x0[i];
  }
  Batch result;
  cfg_combine(cond, other, plain, s.scale, 0.0, result);
  const NoiseLevels<PerSample> levels{alpha, sigma};
  Batch cond_x0, other_x0, guided_x0, back;
  convert(kind, Parameterization::x0, x, cond, levels, cond_x0);
  convert(kind, Parameterization::x0, x, other, levels, other_x0);
  cfg_combine(cond_x0, other_x0, through_x0, s.scale, s.rescale, guided_x0);
  convert(Parameterization::x0, kind, x, guided_x0, levels, back);
  for (Index i = 0; i < x.rows(); ++i)
    if (through_x0[i]) result.row(i) = back.row(i);
  out = std::move(result);
}

std::unique_ptr<NetworkGuidedPredictor> make_guided_predictor(const NetworkModel& network, const GuidanceSettings& settings) {
  if (network.classes() < 1) throw std::invalid_argument("guidance: the network is unconditional (no classes)");
  // Checked before the predictors are made, so the message is the guidance's own.
  check_guidance(settings, network.classes(), "guidance");
  auto conditional = network.make_predictor(static_cast<int>(settings.target_class));
  auto other = network.make_predictor(settings.negative_class ? static_cast<int>(*settings.negative_class) : -1);
  return std::make_unique<NetworkGuidedPredictor>(std::move(conditional), std::move(other), network.classes(), settings);
}

}  // namespace diffode
