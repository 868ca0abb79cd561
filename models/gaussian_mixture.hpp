// The exact Gaussian mixture: a data law whose every noised marginal, score, denoiser and
// probability-flow divergence is known in closed form, so that solver error can be measured apart
// from network error (docs/DESIGN.md §1 and §3).
//
// Data p_0 = sum_k w_k N(mu_k, diag(s_k^2)) in D dimensions. Under x = alpha x0 + sigma eps,
//     p(x) = sum_k w_k N(x; m_k, diag(v_k)),   m_k = alpha mu_k,   v_k = alpha^2 s_k^2 + sigma^2,
// and, with responsibilities r_k(x) = w_k N_k(x) / p(x) (by log-sum-exp) and the component scores
// s_k(x) = -(x - m_k) / v_k:
//     score        s(x) = sum_k r_k s_k
//     denoiser     E[x0 | x] = sum_k r_k (mu_k + g_k (x - m_k)),  g_k = alpha s_k^2 / v_k
//                  (the Gaussian posterior mean of each component; equal to Tweedie's
//                  (x + sigma^2 s) / alpha but computed without dividing by alpha or cancelling)
//     divergence   div s = sum_k r_k |s_k - s|^2 - sum_k r_k tr(1/v_k)
//     Jacobian     J_s v = sum_k r_k (s_k - s) ((s_k - s) . v) - sum_k r_k v / v_k
// The last two follow from grad r_k = r_k (s_k - s) and grad s_k = -diag(1/v_k); written around
// s_k - s (a variance over components) they are sums of same-signed terms, so they do not cancel
// where one component dominates. J_s is the Hessian of log p, hence symmetric. The probability-flow
// ODE dx/dt = f x - g^2 s / 2 then has divergence f D - g^2 div(s) / 2 (Song et al. 2021,
// arXiv:2011.13456, appendix D.2), which makes exact likelihoods possible.
//
// Batch evaluation walks each row once per requested quantity with no allocation per sample. The
// per-component constants (m_k, 1/v_k, g_k and the log-normaliser) depend only on (alpha, sigma):
// they are computed once per run of consecutive rows sharing them, i.e. once per call when a
// sampler advances the whole batch together, and per row under per-sample step-size control. Each
// row's result depends on that row alone, bit for bit.
//
// Sampling is keyed by (seed, sample index) through a counter-based generator (Philox4x32-10,
// Salmon et al. 2011, via Random123), so sample i is the same whatever batch draws it.
#pragma once

#include "core/state.hpp"
#include "models/predictor.hpp"

#include <cstdint>
#include <utility>

namespace diffode {

class GaussianMixture {
 public:
  // weights (K, positive, normalised here by their sum), means (K x D) and per-dimension
  // variances s_k^2 (K x D, positive). The constructor every source (code, an HDF5 file) goes
  // through; throws std::invalid_argument on inconsistent or non-finite input.
  GaussianMixture(Eigen::ArrayXd weights, Batch means, Batch variances);

  // The standard problems.
  // 2-D ring: `components` equal-weight isotropic Gaussians (std `std`) centred on a circle of radius
  // `radius`, the first at angle 0. Defaults: 8 modes, radius 2, std 0.2, so neighbouring modes lie
  // 2 * 2 sin(pi/8) / 0.2 = 7.7 standard deviations apart: well separated, yet smooth enough at
  // moderate noise for solvers to show their orders.
  static GaussianMixture ring(Index components = 8, double radius = 2.0, double std = 0.2);
  // D-dimensional isotropic mixture drawn from `seed`: means ~ N(0, I_D), std_k ~ U[0.3, 0.7],
  // weights proportional to U[0.5, 1.5]. Default 16-D with 10 components.
  static GaussianMixture random_isotropic(Index dims = 16, Index components = 10, std::uint64_t seed = 0);
  // D-dimensional mixture with strongly anisotropic diagonal covariances drawn from `seed`:
  // means ~ N(0, 1.5^2 I_D), s_kd log-uniform in [0.1, 1], weights proportional to U[0.5, 1.5].
  // Default 64-D with 4 components.
  static GaussianMixture random_diagonal(Index dims = 64, Index components = 4, std::uint64_t seed = 0);

  Index dims() const { return means_.cols(); }
  Index components() const { return means_.rows(); }
  const Eigen::ArrayXd& weights() const { return weights_; }
  const Batch& means() const { return means_; }
  const Batch& variances() const { return variances_; }

  // Moments of the data law p_0 (those of p_t are alpha * mean and alpha^2 cov + sigma^2 I).
  Eigen::VectorXd mean() const;
  Eigen::MatrixXd covariance() const;

  // Closed-form quantities of p_t at x (N x D), for samples at levels alpha_n, sigma_n (length N).
  // Outputs are resized to fit. alpha may be 0 (pure noise) and sigma may be 0 (the data law).
  PerSample log_prob(const Batch& x, const PerSample& alpha, const PerSample& sigma) const;
  void score(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const;
  void denoise(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const;
  PerSample score_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma) const;
  // J_s(x) v per sample: the Jacobian of the score (Hessian of log p_t) times v (N x D), as
  // Hutchinson trace estimates use it.
  void score_jvp(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Batch& v, Batch& out) const;

  // Several quantities in one pass over the batch (null = not wanted); jvp needs jvp_direction.
  struct Outputs {
    PerSample* log_prob = nullptr;
    Batch* score = nullptr;
    Batch* denoised = nullptr;
    PerSample* divergence = nullptr;
    const Batch* jvp_direction = nullptr;
    Batch* jvp = nullptr;
  };
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Outputs& outputs) const;

  // n draws from p_0, rows = samples first_sample .. first_sample + n - 1 of stream `seed`.
  Batch sample(Index n, std::uint64_t seed, Index first_sample = 0) const;
  // n draws from p_t at levels (alpha, sigma): alpha x0 + sigma eps, where x0 is the same draw
  // sample() returns for that (seed, index), so the two are coupled sample by sample.
  Batch sample_marginal(double alpha, double sigma, Index n, std::uint64_t seed, Index first_sample = 0) const;

 private:
  Eigen::ArrayXd weights_;
  Eigen::ArrayXd log_weights_;
  Eigen::ArrayXd cumulative_weights_;  // for drawing a component by inversion
  Batch means_;      // K x D, row-major: a component's mean is contiguous
  Batch variances_;  // K x D
};

// The instruction set of the lane kernels behind GaussianMixture::evaluate (log p, responsibilities
// and the denoiser): the baseline (SSE2 on x86-64, 2 lanes), AVX2 (4 lanes) or AVX-512F (8 lanes).
// Every one gives the same bits (same operations, same order, no fused multiply-adds); by default
// AVX2 is used where the CPU has it (AVX-512F measured slower on the CPUs at hand), else the baseline. set_mixture_kernel forces one (automatic: back to the
// default), for the test that compares them and for benchmarks; it returns false, changing nothing,
// when the CPU or the build lacks it. Process-wide.
enum class MixtureKernel { automatic, baseline, avx2, avx512 };
MixtureKernel mixture_kernel();  // the one in use (never automatic)
bool set_mixture_kernel(MixtureKernel kernel);
const char* to_string(MixtureKernel kernel);

// The exact mixture as a predictor: its native output is the denoiser (x0), computed directly
// (see above), from which eps, v, score and flow follow by predictor.hpp's conversions.
class MixturePredictor final : public Predictor<Batch> {
 public:
  explicit MixturePredictor(GaussianMixture mixture) : mixture_(std::move(mixture)) {}
  Parameterization native() const override { return Parameterization::x0; }
  const GaussianMixture& mixture() const { return mixture_; }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override {
    mixture_.denoise(x, alpha, sigma, out);
  }

 private:
  GaussianMixture mixture_;
};

}  // namespace diffode
