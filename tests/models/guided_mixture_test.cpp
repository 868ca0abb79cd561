// The class-conditional mixture and its guided predictions (models/guided_mixture.hpp): the
// classes' laws against the whole, the exact classifier against the scores and against finite
// differences of its own log-probabilities, and each guidance option against the plain formula
// it must reduce to.
#include "models/guided_mixture.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace diffode {
namespace {

// Six 2-D components in three classes, unequal weights, anisotropic variances.
ClassConditionalMixture three_classes() {
  Eigen::ArrayXd w(6);
  w << 1.0, 0.5, 2.0, 0.7, 1.2, 0.9;
  Batch means(6, 2), vars(6, 2);
  means << -2, 0, -1.5, 1, 2, 0.5, 1.5, -1, 0, 2, 0.3, -2;
  vars << 0.1, 0.2, 0.3, 0.1, 0.2, 0.2, 0.05, 0.4, 0.3, 0.3, 0.1, 0.1;
  return ClassConditionalMixture(GaussianMixture(w, means, vars), {0, 0, 1, 1, 2, 2});
}

struct Level {
  double alpha, sigma;
};
constexpr Level kLevels[] = {{1.0, 0.0}, {1.0, 0.05}, {0.9, 0.3}, {0.5, 1.2}, {0.05, 3.0}};

Batch points(Index n) { return 1.5 * GaussianMixture::ring(8, 1.0, 0.8).sample(n, 11); }

TEST(ClassConditionalMixture, ClassesMakeUpTheWhole) {
  const auto model = three_classes();
  EXPECT_NEAR(model.class_prior(0) + model.class_prior(1) + model.class_prior(2), 1.0, 1e-15);
  EXPECT_NEAR(model.class_prior(1), 2.7 / 6.3, 1e-15);
  const Batch x = points(64);
  for (const Level l : kLevels) {
    SCOPED_TRACE(l.sigma);
    const PerSample a = PerSample::Constant(x.rows(), l.alpha), s = PerSample::Constant(x.rows(), l.sigma);
    const PerSample log_p = model.unconditional().log_prob(x, a, s);
    PerSample total = PerSample::Zero(x.rows()), posterior_sum = PerSample::Zero(x.rows());
    for (Index c = 0; c < 3; ++c) {
      total += model.class_prior(c) * model.conditional(c).log_prob(x, a, s).exp();
      // log p(c | x) = log p(c) + log p(x | c) - log p(x)
      const PerSample bayes = std::log(model.class_prior(c)) + model.conditional(c).log_prob(x, a, s) - log_p;
      const PerSample posterior = model.log_class_posterior(x, a, s, c);
      EXPECT_LT((posterior - bayes).abs().maxCoeff(), 1e-10);
      posterior_sum += posterior.exp();
    }
    EXPECT_LT((total.log() - log_p).abs().maxCoeff(), 1e-12);
    EXPECT_LT((posterior_sum - 1.0).abs().maxCoeff(), 1e-13);
  }
}

TEST(ClassConditionalMixture, ClassifierGradientIsTheScoreDifference) {
  const auto model = three_classes();
  const Batch x = points(64);
  for (const Level l : kLevels) {
    SCOPED_TRACE(l.sigma);
    const PerSample a = PerSample::Constant(x.rows(), l.alpha), s = PerSample::Constant(x.rows(), l.sigma);
    Batch uncond;
    model.unconditional().score(x, a, s, uncond);
    for (Index c = 0; c < 3; ++c) {
      Batch cond, gradient;
      model.conditional(c).score(x, a, s, cond);
      model.classifier_gradient(x, a, s, c, gradient);
      const double scale = 1.0 + cond.abs().maxCoeff() + uncond.abs().maxCoeff();
      EXPECT_LT((gradient - (cond - uncond)).abs().maxCoeff(), 1e-12 * scale);
      // And the derivative of the classifier's own log-probabilities (central differences).
      constexpr double h = 1e-5;
      for (Index d = 0; d < 2; ++d) {
        Batch up = x, down = x;
        up.col(d) += h;
        down.col(d) -= h;
        const PerSample fd = (model.log_class_posterior(up, a, s, c) - model.log_class_posterior(down, a, s, c)) / (2 * h);
        EXPECT_LT((fd - gradient.col(d)).abs().maxCoeff(), 1e-5 * scale);
      }
    }
  }
}

TEST(ClassConditionalMixture, RefusesClassesWithoutComponents) {
  const GaussianMixture m = GaussianMixture::ring(4);
  EXPECT_THROW(ClassConditionalMixture(m, {0, 0, 2, 2}), std::invalid_argument);  // class 1 empty
  EXPECT_THROW(ClassConditionalMixture(m, {0, 1, 1}), std::invalid_argument);
  EXPECT_THROW(ClassConditionalMixture(m, {0, -1, 1, 1}), std::invalid_argument);
}

class Guided : public ::testing::Test {
 protected:
  std::shared_ptr<const ClassConditionalMixture> model = std::make_shared<const ClassConditionalMixture>(three_classes());
  Batch x = points(32);
  PerSample alpha = PerSample::Constant(32, 0.9);
  PerSample sigma = PerSample::Constant(32, 0.4);

  Batch predict(const GuidanceSettings& s) const {
    GuidedPredictor p(model, s);
    Batch out;
    p.predict(x, alpha, sigma, out);
    return out;
  }
  Batch denoise(const GaussianMixture& m) const {
    Batch out;
    m.denoise(x, alpha, sigma, out);
    return out;
  }
};

TEST_F(Guided, ScaleZeroIsTheConditionalModel) {
  const Batch cond = denoise(model->conditional(1));
  for (const auto kind : {GuidanceSettings::Kind::cfg, GuidanceSettings::Kind::classifier}) {
    GuidanceSettings s;
    s.kind = kind;
    s.target_class = 1;
    EXPECT_TRUE((predict(s) == cond).all());
  }
}

TEST_F(Guided, CfgIsTheAffineCombination) {
  const Batch cond = denoise(model->conditional(2)), uncond = denoise(model->unconditional()), negative = denoise(model->conditional(0));
  GuidanceSettings s;
  s.target_class = 2;
  s.scale = 3.0;
  EXPECT_LT((predict(s) - (4.0 * cond - 3.0 * uncond)).abs().maxCoeff(), 1e-12);
  s.negative_class = 0;
  EXPECT_LT((predict(s) - (4.0 * cond - 3.0 * negative)).abs().maxCoeff(), 1e-12);
}

TEST_F(Guided, ClassifierGuidanceEqualsCfgWithExactModels) {
  // score(x|c) + w (score(x|c) - score(x)) = (1 + w) score(x|c) - w score(x): the same prediction,
  // reached through the classifier's gradient.
  GuidanceSettings s;
  s.target_class = 0;
  s.scale = 2.5;
  const Batch cfg = predict(s);
  s.kind = GuidanceSettings::Kind::classifier;
  const Batch classifier = predict(s);
  EXPECT_LT((cfg - classifier).abs().maxCoeff(), 1e-11 * (1.0 + cfg.abs().maxCoeff()));
  EXPECT_GT((cfg - denoise(model->conditional(0))).abs().maxCoeff(), 1e-3);  // guidance does something here
}

TEST_F(Guided, RescaleZeroIsCfgAndOneRestoresTheSpread) {
  GuidanceSettings s;
  s.target_class = 1;
  s.scale = 4.0;
  const Batch plain = predict(s);
  s.rescale = 0.0;
  EXPECT_TRUE((predict(s) == plain).all());
  s.rescale = 1.0;
  const Batch full = predict(s);
  const Batch cond = denoise(model->conditional(1));
  for (Index i = 0; i < x.rows(); ++i) {
    const auto sd = [](const Eigen::Array<double, 1, Eigen::Dynamic>& v) { return std::sqrt((v - v.mean()).square().mean()); };
    EXPECT_NEAR(sd(full.row(i)), sd(cond.row(i)), 1e-12);
    EXPECT_NEAR(full(i, 0) / full(i, 1), plain(i, 0) / plain(i, 1), 1e-9 * std::abs(plain(i, 0) / plain(i, 1)));  // a pure rescaling
  }
  s.rescale = 0.25;
  EXPECT_LT((predict(s) - (0.25 * full + 0.75 * plain)).abs().maxCoeff(), 1e-12);
}

TEST_F(Guided, OutsideTheIntervalIsConditional) {
  GuidanceSettings s;
  s.target_class = 1;
  s.scale = 2.0;
  const Batch guided = predict(s);
  const Batch cond = denoise(model->conditional(1));
  const double level = 0.4 / 0.9;
  s.sigma_lo = level * 1.01, s.sigma_hi = 10.0;
  EXPECT_TRUE((predict(s) == cond).all());
  s.sigma_lo = 0.0, s.sigma_hi = level * 0.99;
  EXPECT_TRUE((predict(s) == cond).all());
  s.sigma_lo = level * 0.99, s.sigma_hi = level * 1.01;
  EXPECT_TRUE((predict(s) == guided).all());
  // Per row: half the rows at a level inside, half outside.
  for (Index i = 0; i < x.rows(); i += 2) sigma[i] = 5.0;
  const Batch mixed = predict(s);
  const Batch cond_mixed = denoise(model->conditional(1));
  for (Index i = 0; i < x.rows(); ++i) {
    if (i % 2 == 0)
      EXPECT_TRUE((mixed.row(i) == cond_mixed.row(i)).all());
    else
      EXPECT_TRUE((mixed.row(i) == guided.row(i)).all());
  }
}

TEST_F(Guided, RefusesImpossibleSettings) {
  GuidanceSettings s;
  s.target_class = 3;
  EXPECT_THROW(GuidedPredictor(model, s), std::invalid_argument);
  s.target_class = 0;
  s.scale = -1;
  EXPECT_THROW(GuidedPredictor(model, s), std::invalid_argument);
  s.scale = 1;
  s.rescale = 1.5;
  EXPECT_THROW(GuidedPredictor(model, s), std::invalid_argument);
  s.rescale = 0.5;
  s.kind = GuidanceSettings::Kind::classifier;
  EXPECT_THROW(GuidedPredictor(model, s), std::invalid_argument);
  s.rescale = 0;
  s.negative_class = 1;
  EXPECT_THROW(GuidedPredictor(model, s), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
