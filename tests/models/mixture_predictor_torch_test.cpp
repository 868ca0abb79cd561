// The exact mixture's denoiser on the torch-tensor path (MixturePredictorTorch) against the Eigen
// path (MixturePredictor), and the Eigen path against a direct long-double evaluation of the
// formula with the C library's exp: the Eigen path computes its exps with its own polynomial
// (models/gaussian_mixture.cpp), so this is what shows that the fast path keeps double accuracy.
#include "models/gaussian_mixture.hpp"
#include "models/torch/mixture_predictor_torch.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

namespace diffode {
namespace {

using Tensor = torch::Tensor;

struct Level {
  double alpha, sigma;
};

// From the data law (sigma tiny) to pure noise, as tests/models/gaussian_mixture_test.cpp: VP near
// t = 0 and near T, VE at large sigma, and EDM's ends (sigma 0.002 and 80).
const std::vector<Level> kLevels = {{1.0, 1e-4}, {1.0, 0.002}, {1.0, 0.3}, {0.7, 0.7}, {0.05, 1.0}, {1e-4, 1.0}, {1.0, 80.0}};

struct Named {
  std::string name;
  GaussianMixture mixture;
};

std::vector<Named> standard_mixtures() {
  return {{"ring", GaussianMixture::ring()},
          {"isotropic16", GaussianMixture::random_isotropic(16, 10, 7)},
          {"diagonal64", GaussianMixture::random_diagonal(64, 4, 11)}};
}

// Points where p_t has mass, and points from a wider law: between the modes, where components
// compete and the responsibilities are most sensitive.
Batch probe_points(const GaussianMixture& m, Level l, Index typical, Index wide) {
  const Batch a = m.sample_marginal(l.alpha, l.sigma, typical, 42);
  const Batch b = m.sample_marginal(l.alpha, 3.0 * l.sigma + 0.5 * l.alpha, wide, 43);
  Batch x(a.rows() + b.rows(), m.dims());
  x << a, b;
  return x;
}

Tensor to_tensor(const Batch& b) {
  return StateOps<Tensor>::from_host(b, torch::empty({b.rows(), b.cols()}, torch::kFloat64));
}
Tensor to_tensor(const PerSample& s) {
  return StateOps<Tensor>::scalars_from_host(s, torch::empty({s.size()}, torch::kFloat64));
}

// The scale of rounding in D(x): D is a convex combination of mu_k + g_k (x - m_k), so its terms
// are bounded by |mu| + |x| (g_k <= 1/alpha for alpha s^2 <= v; 1 here up to alpha in [0, 1]).
double scale_of(const GaussianMixture& m, const Batch& x, Index i) {
  return 1.0 + m.means().abs().maxCoeff() + x.row(i).abs().maxCoeff();
}

TEST(MixturePredictorTorch, AgreesWithTheEigenPredictorAtEveryLevel) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    MixturePredictor eigen(m);
    MixturePredictorTorch torch_predictor(m);
    double worst = 0.0;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l, 24, 24);
      const Index n = x.rows();
      const PerSample a = PerSample::Constant(n, l.alpha), s = PerSample::Constant(n, l.sigma);
      Batch expected;
      eigen.predict(x, a, s, expected);
      Tensor got;
      torch_predictor.predict(to_tensor(x), to_tensor(a), to_tensor(s), got);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{n, m.dims()}));
      const Batch host = StateOps<Tensor>::to_host(got);
      for (Index i = 0; i < n; ++i) {
        const double err = (host.row(i) - expected.row(i)).abs().maxCoeff() / scale_of(m, x, i);
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-13) << named.name << " alpha = " << l.alpha << " sigma = " << l.sigma << " sample " << i;
      }
    }
    RecordProperty(named.name + "_worst_relative_difference", fmt::format("{:.3e}", worst));
    EXPECT_EQ(torch_predictor.nfe(), static_cast<Index>(kLevels.size()));
  }
}

// Per-sample levels (adaptive and per-sample solvers), across more rows than one chunk of the
// torch path, so that the chunk boundary and the per-row constants are both exercised.
TEST(MixturePredictorTorch, AgreesWithTheEigenPredictorWithPerSampleLevelsAcrossChunks) {
  const auto m = GaussianMixture::random_isotropic(16, 10, 7);
  const Index n = MixturePredictorTorch::kChunkRows + 300;
  const Batch x = m.sample_marginal(0.8, 0.6, n, 9);
  PerSample a(n), s(n);
  for (Index i = 0; i < n; ++i) {
    const Level l = kLevels[i % kLevels.size()];
    a[i] = l.alpha;
    s[i] = l.sigma;
  }
  Batch expected;
  MixturePredictor(m).predict(x, a, s, expected);
  Tensor got;
  MixturePredictorTorch(m).predict(to_tensor(x), to_tensor(a), to_tensor(s), got);
  const Batch host = StateOps<Tensor>::to_host(got);
  for (Index i = 0; i < n; ++i)
    ASSERT_LE((host.row(i) - expected.row(i)).abs().maxCoeff(), 1e-13 * scale_of(m, x, i)) << "sample " << i;
}

TEST(MixturePredictorTorch, RejectsAStateOfOtherDimensionOrLevelsOfOtherLength) {
  MixturePredictorTorch p(GaussianMixture::ring());
  Tensor out;
  const Tensor ones4 = torch::ones({4}, torch::kFloat64);
  EXPECT_THROW(p.predict(torch::zeros({4, 3}, torch::kFloat64), ones4, ones4, out), std::invalid_argument);
  EXPECT_THROW(p.predict(torch::zeros({4, 2}, torch::kFloat64), torch::ones({3}, torch::kFloat64), ones4, out),
               std::invalid_argument);
}

// D(x) = sum_k r_k (mu_k + g_k (x - m_k)) straight from its definition in long double, with
// std::exp: an evaluation that shares no code with either predictor.
Eigen::ArrayXd reference_denoiser(const GaussianMixture& m, const double* x, double alpha, double sigma) {
  using Real = long double;
  const Index kk = m.components(), dd = m.dims();
  std::vector<Real> logit(kk);
  Real top = -std::numeric_limits<Real>::infinity();
  for (Index k = 0; k < kk; ++k) {
    Real q = 0, log_det = 0;
    for (Index d = 0; d < dd; ++d) {
      const Real v = Real(alpha) * alpha * m.variances()(k, d) + Real(sigma) * sigma;
      const Real diff = x[d] - Real(alpha) * m.means()(k, d);
      q += diff * diff / v;
      log_det += std::log(2 * std::numbers::pi_v<Real> * v);
    }
    logit[k] = std::log(Real(m.weights()[k])) - (log_det + q) / 2;
    top = std::max(top, logit[k]);
  }
  Real total = 0;
  for (Index k = 0; k < kk; ++k) total += logit[k] = std::exp(logit[k] - top);
  Eigen::ArrayXd out(dd);
  for (Index d = 0; d < dd; ++d) {
    Real acc = 0;
    for (Index k = 0; k < kk; ++k) {
      const Real v = Real(alpha) * alpha * m.variances()(k, d) + Real(sigma) * sigma;
      const Real g = Real(alpha) * m.variances()(k, d) / v;
      acc += logit[k] / total * (m.means()(k, d) + g * (x[d] - Real(alpha) * m.means()(k, d)));
    }
    out[d] = static_cast<double>(acc);
  }
  return out;
}

TEST(GaussianMixtureAccuracy, EigenDenoiserMatchesALongDoubleEvaluationWithLibraryExp) {
  for (const auto& named : standard_mixtures()) {
    const auto& m = named.mixture;
    double worst = 0.0;
    for (const Level l : kLevels) {
      const Batch x = probe_points(m, l, 24, 24);
      const Index n = x.rows();
      Batch got;
      m.denoise(x, PerSample::Constant(n, l.alpha), PerSample::Constant(n, l.sigma), got);
      for (Index i = 0; i < n; ++i) {
        const Eigen::ArrayXd expected = reference_denoiser(m, x.data() + i * m.dims(), l.alpha, l.sigma);
        const double err = (got.row(i).transpose() - expected).abs().maxCoeff() / scale_of(m, x, i);
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-13) << named.name << " alpha = " << l.alpha << " sigma = " << l.sigma << " sample " << i;
      }
    }
    RecordProperty(named.name + "_worst_relative_error", fmt::format("{:.3e}", worst));
  }
}

}  // namespace
}  // namespace diffode
