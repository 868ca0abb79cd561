#include "models/guided_mixture.hpp"

#include <fmt/format.h>

#include <cmath>
#include <numbers>
#include <stdexcept>

namespace diffode {
namespace {

// The noised components' log-densities plus log weights (the logits of the responsibilities) and
// the component scores at one row, for the classifier. Written out here, apart from
// GaussianMixture's kernels, so that the tests' comparison of the two is a comparison.
struct RowComponents {
  Eigen::ArrayXd logit;  // K
  Batch score;           // K x D
};

void row_components(const GaussianMixture& m, const double* x, double alpha, double sigma, RowComponents& rc) {
  const Index kk = m.components(), dd = m.dims();
  rc.logit.resize(kk);
  rc.score.resize(kk, dd);
  for (Index k = 0; k < kk; ++k) {
    double quad = 0.0, log_det = 0.0;
    for (Index d = 0; d < dd; ++d) {
      const double v = alpha * alpha * m.variances()(k, d) + sigma * sigma;
      const double r = x[d] - alpha * m.means()(k, d);
      quad += r * r / v;
      log_det += std::log(v);
      rc.score(k, d) = -r / v;
    }
    rc.logit[k] = std::log(m.weights()[k]) - 0.5 * (quad + log_det + static_cast<double>(dd) * std::log(2.0 * std::numbers::pi));
  }
}

// log sum_{k: mask} exp(logit_k); mask empty = all.
double log_sum_exp(const Eigen::ArrayXd& logit, const std::vector<Index>& cls, Index c) {
  double top = -std::numeric_limits<double>::infinity();
  for (Index k = 0; k < logit.size(); ++k)
    if (c < 0 || cls[k] == c) top = std::max(top, logit[k]);
  if (!std::isfinite(top)) return top;
  double total = 0.0;
  for (Index k = 0; k < logit.size(); ++k)
    if (c < 0 || cls[k] == c) total += std::exp(logit[k] - top);
  return top + std::log(total);
}

void check_class(Index c, Index classes, const char* what) {
  if (c < 0 || c >= classes) throw std::invalid_argument(fmt::format("{}: class {} of {} (classes are 0..{})", what, c, classes, classes - 1));
}

}  // namespace

ClassConditionalMixture::ClassConditionalMixture(GaussianMixture mixture, std::vector<Index> component_class)
    : unconditional_(std::move(mixture)), component_class_(std::move(component_class)) {
  const Index kk = unconditional_.components();
  if (static_cast<Index>(component_class_.size()) != kk)
    throw std::invalid_argument(fmt::format("ClassConditionalMixture: {} class labels for {} components", component_class_.size(), kk));
  Index classes = 0;
  for (Index k = 0; k < kk; ++k) {
    if (component_class_[k] < 0) throw std::invalid_argument(fmt::format("ClassConditionalMixture: component {} has class {}", k, component_class_[k]));
    classes = std::max(classes, component_class_[k] + 1);
  }
  class_prior_ = Eigen::ArrayXd::Zero(classes);
  for (Index c = 0; c < classes; ++c) {
    std::vector<Index> members;
    for (Index k = 0; k < kk; ++k)
      if (component_class_[k] == c) members.push_back(k);
    if (members.empty()) throw std::invalid_argument(fmt::format("ClassConditionalMixture: class {} has no component (classes are 0..{})", c, classes - 1));
    const Index n = static_cast<Index>(members.size());
    Eigen::ArrayXd w(n);
    Batch means(n, dims()), variances(n, dims());
    for (Index i = 0; i < n; ++i) {
      w[i] = unconditional_.weights()[members[i]];
      means.row(i) = unconditional_.means().row(members[i]);
      variances.row(i) = unconditional_.variances().row(members[i]);
    }
    class_prior_[c] = w.sum();
    conditionals_.emplace_back(std::move(w), std::move(means), std::move(variances));  // renormalised by the constructor
  }
}

const GaussianMixture& ClassConditionalMixture::conditional(Index c) const {
  check_class(c, classes(), "ClassConditionalMixture::conditional");
  return conditionals_[c];
}

double ClassConditionalMixture::class_prior(Index c) const {
  check_class(c, classes(), "ClassConditionalMixture::class_prior");
  return class_prior_[c];
}

PerSample ClassConditionalMixture::log_class_posterior(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index c) const {
  check_class(c, classes(), "log_class_posterior");
  if (x.cols() != dims() || alpha.size() != x.rows() || sigma.size() != x.rows())
    throw std::invalid_argument("log_class_posterior: x must be N x D with N levels");
  PerSample out(x.rows());
  RowComponents rc;
  for (Index i = 0; i < x.rows(); ++i) {
    row_components(unconditional_, x.data() + i * dims(), alpha[i], sigma[i], rc);
    out[i] = log_sum_exp(rc.logit, component_class_, c) - log_sum_exp(rc.logit, component_class_, -1);
  }
  return out;
}

void ClassConditionalMixture::classifier_gradient(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index c,
                                                  Batch& out) const {
  check_class(c, classes(), "classifier_gradient");
  if (x.cols() != dims() || alpha.size() != x.rows() || sigma.size() != x.rows())
    throw std::invalid_argument("classifier_gradient: x must be N x D with N levels");
  Batch result(x.rows(), dims());
  RowComponents rc;
  for (Index i = 0; i < x.rows(); ++i) {
    row_components(unconditional_, x.data() + i * dims(), alpha[i], sigma[i], rc);
    const double log_all = log_sum_exp(rc.logit, component_class_, -1), log_class = log_sum_exp(rc.logit, component_class_, c);
    result.row(i).setZero();
    for (Index k = 0; k < rc.logit.size(); ++k) {
      const double r = std::exp(rc.logit[k] - log_all);
      const double r_class = component_class_[k] == c ? std::exp(rc.logit[k] - log_class) : 0.0;
      result.row(i) += (r_class - r) * rc.score.row(k);
    }
  }
  out = std::move(result);
}

GuidedPredictor::GuidedPredictor(std::shared_ptr<const ClassConditionalMixture> model, GuidanceSettings settings)
    : model_(std::move(model)), settings_(std::move(settings)) {
  if (!model_) throw std::invalid_argument("GuidedPredictor: no model");
  check_guidance(settings_, model_->classes(), "guidance");
}

void GuidedPredictor::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  const auto& s = settings_;
  Batch cond;
  model_->conditional(s.target_class).denoise(x, alpha, sigma, cond);
  calls_.fetch_add(1, std::memory_order_relaxed);
  std::vector<char> guided;
  if (!guided_rows(s, alpha, sigma, guided)) {
    out = std::move(cond);
    return;
  }
  calls_.fetch_add(1, std::memory_order_relaxed);
  if (s.kind == GuidanceSettings::Kind::cfg) {
    Batch other;
    (s.negative_class ? model_->conditional(*s.negative_class) : model_->unconditional()).denoise(x, alpha, sigma, other);
    cfg_combine(cond, other, guided, s.scale, s.rescale, out);
    return;
  }
  Batch result = cond;
  Batch gradient;
  model_->classifier_gradient(x, alpha, sigma, s.target_class, gradient);
  for (Index i = 0; i < x.rows(); ++i) {
    // At alpha = 0 (pure noise) x says nothing of the class: the exact gradient is 0.
    if (!guided[i] || alpha[i] == 0.0) continue;
    result.row(i) += (s.scale * sigma[i] * sigma[i] / alpha[i]) * gradient.row(i);
  }
  out = std::move(result);
}

}  // namespace diffode
