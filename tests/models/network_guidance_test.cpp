// Classifier-free guidance of class-conditional networks (models/network_guidance.hpp), torch-free:
// a stand-in NetworkModel whose class predictors are an exact class-conditional mixture's, read out
// as x0 or as eps. With x0 predictions the guided network must be the mixture's guided predictor
// bit for bit (one combination, models/guidance.hpp); with eps predictions it must be the
// conditional predictor bit for bit at scale 0 and outside the interval, the hand-computed
// (1 + w) eps_c - w eps_n where guided, and the mixture's rescaled guidance read as eps.
#include "models/guided_mixture.hpp"
#include "models/network_guidance.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace diffode {
namespace {

ClassConditionalMixture three_classes() {
  Eigen::ArrayXd w(6);
  w << 1.0, 0.5, 2.0, 0.7, 1.2, 0.9;
  Batch means(6, 2), vars(6, 2);
  means << -2, 0, -1.5, 1, 2, 0.5, 1.5, -1, 0, 2, 0.3, -2;
  vars << 0.1, 0.2, 0.3, 0.1, 0.2, 0.2, 0.05, 0.4, 0.3, 0.3, 0.1, 0.1;
  return ClassConditionalMixture(GaussianMixture(w, means, vars), {0, 0, 1, 1, 2, 2});
}

// One class's (or the null class's) exact prediction, output as `kind`.
class ClassPredictor final : public Predictor<Batch> {
 public:
  ClassPredictor(const GaussianMixture& m, Parameterization kind) : m_(m), kind_(kind) {}
  Parameterization native() const override { return kind_; }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override {
    Batch x0;
    m_.denoise(x, alpha, sigma, x0);
    convert(Parameterization::x0, kind_, x, x0, NoiseLevels<PerSample>{alpha, sigma}, out);
  }

 private:
  const GaussianMixture& m_;
  Parameterization kind_;
};

class StandInNetwork final : public NetworkModel {
 public:
  StandInNetwork(std::shared_ptr<const ClassConditionalMixture> m, Parameterization kind) : m_(std::move(m)), kind_(kind) {}
  Index dims() const override { return m_->dims(); }
  Index classes() const override { return m_->classes(); }
  std::string description() const override { return "stand-in"; }
  std::unique_ptr<Predictor<Batch>> make_predictor(int label) const override {
    return std::make_unique<ClassPredictor>(label < 0 ? m_->unconditional() : m_->conditional(label), kind_);
  }
  std::unique_ptr<ScoreJacobian> make_score_jacobian(int) const override { throw std::logic_error("not used"); }

 private:
  std::shared_ptr<const ClassConditionalMixture> m_;
  Parameterization kind_;
};

class NetworkGuidance : public ::testing::Test {
 protected:
  std::shared_ptr<const ClassConditionalMixture> model = std::make_shared<const ClassConditionalMixture>(three_classes());
  StandInNetwork x0_net{model, Parameterization::x0}, eps_net{model, Parameterization::eps};
  Batch x = 1.5 * GaussianMixture::ring(8, 1.0, 0.8).sample(40, 11);
  PerSample alpha = PerSample::Constant(40, 0.9), sigma = PerSample::Constant(40, 0.4);

  static Batch predict(const Predictor<Batch>& p, const Batch& x, const PerSample& a, const PerSample& s) {
    Batch out;
    p.predict(x, a, s, out);
    return out;
  }
  Batch predict(const Predictor<Batch>& p) const { return predict(p, x, alpha, sigma); }
  Batch class_prediction(const NetworkModel& net, int label) const { return predict(*net.make_predictor(label)); }
};

TEST_F(NetworkGuidance, ScaleZeroIsTheConditionalPredictorBitForBit) {
  for (const StandInNetwork* net : {&x0_net, &eps_net}) {
    GuidanceSettings s;
    s.target_class = 1;
    const auto guided = make_guided_predictor(*net, s);
    EXPECT_EQ(guided->native(), net->make_predictor(1)->native());
    EXPECT_TRUE((predict(*guided) == class_prediction(*net, 1)).all());
    // Unguided, the null class is never called.
    EXPECT_EQ(guided->nfe(), 1);
    EXPECT_EQ(guided->model_calls(), 1);
  }
}

TEST_F(NetworkGuidance, GuidedIsTheAffineCombinationOfTheTwoPredictions) {
  for (const StandInNetwork* net : {&x0_net, &eps_net}) {
    GuidanceSettings s;
    s.target_class = 2;
    s.scale = 3.0;
    const Batch cond = class_prediction(*net, 2), null = class_prediction(*net, -1), negative = class_prediction(*net, 0);
    const auto guided = make_guided_predictor(*net, s);
    const Batch g = predict(*guided);
    EXPECT_TRUE((g == cond + 3.0 * (cond - null)).all());  // the combination's own arithmetic
    EXPECT_LT((g - (4.0 * cond - 3.0 * null)).abs().maxCoeff(), 1e-12 * (1.0 + cond.abs().maxCoeff()));
    EXPECT_GT((g - cond).abs().maxCoeff(), 1e-3);
    EXPECT_EQ(guided->nfe(), 1);
    EXPECT_EQ(guided->model_calls(), 2);  // conditional and null class
    s.negative_class = 0;
    EXPECT_LT((predict(*make_guided_predictor(*net, s)) - (4.0 * cond - 3.0 * negative)).abs().maxCoeff(), 1e-12 * (1.0 + cond.abs().maxCoeff()));
  }
}

TEST_F(NetworkGuidance, X0NetworkIsTheMixturesGuidanceBitForBit) {
  // Every option: the network's guidance and the mixture's share one combination.
  std::vector<GuidanceSettings> cases(4);
  cases[0].target_class = 1, cases[0].scale = 2.0;
  cases[1].target_class = 0, cases[1].scale = 4.0, cases[1].rescale = 0.7;
  cases[2].target_class = 2, cases[2].scale = 1.5, cases[2].negative_class = 1;
  cases[3].target_class = 1, cases[3].scale = 3.0, cases[3].rescale = 1.0, cases[3].sigma_lo = 0.3, cases[3].sigma_hi = 0.6;
  PerSample mixed_sigma = sigma;
  for (Index i = 0; i < x.rows(); i += 3) mixed_sigma[i] = 2.0;  // sigma / alpha outside case 3's interval
  for (const GuidanceSettings& s : cases) {
    const GuidedPredictor mixture(model, s);
    const auto network = make_guided_predictor(x0_net, s);
    EXPECT_TRUE((predict(*network, x, alpha, mixed_sigma) == predict(mixture, x, alpha, mixed_sigma)).all());
  }
}

TEST_F(NetworkGuidance, RescaleOfAnEpsNetworkIsTheX0RescaleReadAsEps) {
  GuidanceSettings s;
  s.target_class = 0;
  s.scale = 4.0;
  s.rescale = 0.6;
  const Batch eps = predict(*make_guided_predictor(eps_net, s));
  const Batch x0 = predict(GuidedPredictor(model, s));
  Batch x0_as_eps;
  convert(Parameterization::x0, Parameterization::eps, x, x0, NoiseLevels<PerSample>{alpha, sigma}, x0_as_eps);
  EXPECT_LT((eps - x0_as_eps).abs().maxCoeff(), 1e-10 * (1.0 + x0_as_eps.abs().maxCoeff()));
  // Rescale changes the prediction.
  s.rescale = 0.0;
  EXPECT_GT((predict(*make_guided_predictor(eps_net, s)) - eps).abs().maxCoeff(), 1e-3);
}

TEST_F(NetworkGuidance, OutsideTheIntervalIsTheConditionalPredictorBitForBit) {
  GuidanceSettings s;
  s.target_class = 1;
  s.scale = 2.0;
  s.rescale = 0.5;
  const double level = 0.4 / 0.9;
  s.sigma_lo = level * 0.99, s.sigma_hi = level * 1.01;
  PerSample mixed_sigma = sigma;
  for (Index i = 0; i < x.rows(); i += 2) mixed_sigma[i] = 5.0;
  const auto guided = make_guided_predictor(eps_net, s);
  const Batch g = predict(*guided, x, alpha, mixed_sigma);
  const Batch cond = predict(*eps_net.make_predictor(1), x, alpha, mixed_sigma);
  GuidanceSettings always = s;
  always.sigma_lo = 0.0, always.sigma_hi = std::numeric_limits<double>::infinity();
  const Batch everywhere = predict(*make_guided_predictor(eps_net, always), x, alpha, mixed_sigma);
  for (Index i = 0; i < x.rows(); ++i) {
    if (i % 2 == 0)
      EXPECT_TRUE((g.row(i) == cond.row(i)).all()) << i;
    else
      EXPECT_TRUE((g.row(i) == everywhere.row(i)).all()) << i;
  }
  EXPECT_GT((g - cond).abs().maxCoeff(), 1e-3);
  // No row inside: one network call.
  s.sigma_lo = 10.0, s.sigma_hi = 20.0;
  const auto outside = make_guided_predictor(eps_net, s);
  EXPECT_TRUE((predict(*outside) == predict(*eps_net.make_predictor(1))).all());
  EXPECT_EQ(outside->model_calls(), 1);
}

TEST_F(NetworkGuidance, AtAlphaZeroAnEpsNetworkIsGuidedWithoutRescale) {
  // x0 is not determined by eps at alpha = 0: that row gets plain CFG in eps, finite.
  GuidanceSettings s;
  s.target_class = 2;
  s.scale = 2.0;
  s.rescale = 1.0;
  PerSample a = alpha, sg = sigma;
  a[0] = 0.0, sg[0] = 1.0;
  const Batch g = predict(*make_guided_predictor(eps_net, s), x, a, sg);
  ASSERT_TRUE(g.isFinite().all());
  const Batch cond = predict(*eps_net.make_predictor(2), x, a, sg), null = predict(*eps_net.make_predictor(-1), x, a, sg);
  EXPECT_TRUE((g.row(0) == cond.row(0) + 2.0 * (cond.row(0) - null.row(0))).all());
}

TEST_F(NetworkGuidance, RefusesClassifierGuidanceAndClassesOutOfRange) {
  GuidanceSettings s;
  s.scale = 1.0;
  s.kind = GuidanceSettings::Kind::classifier;
  EXPECT_THROW(make_guided_predictor(x0_net, s), std::invalid_argument);
  s.kind = GuidanceSettings::Kind::cfg;
  s.target_class = 3;
  try {
    make_guided_predictor(x0_net, s);
    ADD_FAILURE() << "class 3 of 3 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("3 classes"), std::string::npos) << e.what();
  }
  s.target_class = 0;
  s.negative_class = 5;
  EXPECT_THROW(make_guided_predictor(x0_net, s), std::invalid_argument);
  s.negative_class.reset();
  s.rescale = 2.0;
  EXPECT_THROW(make_guided_predictor(x0_net, s), std::invalid_argument);
  // Predictions of two kinds are not one network's.
  EXPECT_THROW(NetworkGuidedPredictor(x0_net.make_predictor(0), eps_net.make_predictor(-1), 3, GuidanceSettings{}), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
