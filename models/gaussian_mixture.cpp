#include "models/gaussian_mixture.hpp"

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <Random123/uniform.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <vector>

namespace diffode {
namespace {

// Counter layout of every draw: key = seed, counter = (block, stream, index low, index high).
// The stream words keep these draws apart from the Brownian paths' (solvers/brownian.cpp puts a
// node's high 32 bits there, which stay below 2^29 at its maximum depth), and from each other.
constexpr std::uint32_t kSampleStream = 0x6D697821;        // "mix!": draws of x0 and eps
constexpr std::uint32_t kConstructionStream = 0x6D697822;  // parameters of the random mixtures
// A sample's blocks: 0 picks the component, 1.. the normals of x0, kNoiseBlock.. those of eps.
constexpr std::uint32_t kNoiseBlock = 0x80000000u;

r123::Philox4x32::ctr_type philox_block(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t block) {
  using Philox = r123::Philox4x32;
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const Philox::ctr_type ctr = {{block, stream, static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32)}};
  return Philox{}(ctr, key);
}

// Two 64-bit words of one block.
struct Words {
  std::uint64_t a, b;
};
Words words(const r123::Philox4x32::ctr_type& r) {
  return {(std::uint64_t{r[0]} << 32) | r[1], (std::uint64_t{r[2]} << 32) | r[3]};
}

// Two uniforms in (0, 1] from one block.
std::pair<double, double> uniforms(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t block) {
  const Words w = words(philox_block(seed, stream, index, block));
  return {r123::u01<double>(w.a), r123::u01<double>(w.b)};
}

// Fills out[0..n) with standard normals, two per block from `first_block` on (Box-Muller).
void normals(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t first_block, double* out, Index n) {
  for (Index d = 0; d < n; d += 2) {
    const Words w = words(philox_block(seed, stream, index, first_block + static_cast<std::uint32_t>(d / 2)));
    const r123::double2 z = r123::boxmuller(w.a, w.b);
    out[d] = z.x;
    if (d + 1 < n) out[d + 1] = z.y;
  }
}

// Everything about the components that depends on (alpha, sigma) only, flattened K x D.
struct LevelConstants {
  double alpha = std::numeric_limits<double>::quiet_NaN();
  double sigma = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> centre;     // m_kd = alpha mu_kd
  std::vector<double> precision;  // 1 / v_kd,  v_kd = alpha^2 s_kd^2 + sigma^2
  std::vector<double> gain;       // g_kd = alpha s_kd^2 / v_kd
  std::vector<double> log_norm;   // log w_k - sum_d log(2 pi v_kd) / 2
  std::vector<double> trace;      // sum_d 1 / v_kd

  LevelConstants(Index k, Index d) : centre(k * d), precision(k * d), gain(k * d), log_norm(k), trace(k) {}

  bool matches(double a, double s) const { return a == alpha && s == sigma; }

  void compute(const Eigen::ArrayXd& log_weights, const Batch& means, const Batch& variances, double a, double s) {
    if (!std::isfinite(a) || !std::isfinite(s))
      throw std::invalid_argument(fmt::format("GaussianMixture: non-finite level alpha = {}, sigma = {}", a, s));
    alpha = a;
    sigma = s;
    const Index kk = means.rows(), dd = means.cols();
    const double log_two_pi = std::log(2.0 * std::numbers::pi);
    for (Index k = 0; k < kk; ++k) {
      double log_det = 0.0, tr = 0.0;
      for (Index d = 0; d < dd; ++d) {
        const Index i = k * dd + d;
        const double s2 = variances.data()[i];
        const double v = a * a * s2 + s * s;
        if (!(v > 0.0))
          throw std::invalid_argument(fmt::format("GaussianMixture: zero variance at alpha = {}, sigma = {}", a, s));
        centre[i] = a * means.data()[i];
        precision[i] = 1.0 / v;
        gain[i] = a * s2 / v;
        log_det += std::log(v);
        tr += precision[i];
      }
      log_norm[k] = log_weights[k] - 0.5 * (dd * log_two_pi + log_det);
      trace[k] = tr;
    }
  }
};

void check_levels(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index dims) {
  if (x.cols() != dims)
    throw std::invalid_argument(fmt::format("GaussianMixture: x has {} columns, the mixture {} dimensions", x.cols(), dims));
  if (alpha.size() != x.rows() || sigma.size() != x.rows())
    throw std::invalid_argument(fmt::format("GaussianMixture: {} samples but {} alphas and {} sigmas", x.rows(),
                                            alpha.size(), sigma.size()));
}

// The per-row work of GaussianMixture::evaluate. Dim > 0 fixes the dimension at compile time so
// that the inner loops of the small problems (the 2-D ring) unroll; Dim = 0 reads it at run time.
template <int Dim>
void evaluate_rows(const Batch& x, const PerSample& alpha, const PerSample& sigma, const GaussianMixture::Outputs& out,
                   const Eigen::ArrayXd& log_weights, const Batch& means, const Batch& variances) {
  const Index n = x.rows(), kk = means.rows();
  const Index dd = Dim > 0 ? Dim : means.cols();
  const bool want_score = out.score != nullptr, want_div = out.divergence != nullptr, want_jvp = out.jvp != nullptr;
  const bool need_score = want_score || want_div || want_jvp;

  // Scratch, allocated once per call. The rows of x are read into `xr` before any output row is
  // written, so an output may alias x (score or denoiser in place).
  LevelConstants c(kk, dd);
  std::vector<double> resp(kk), xr(dd), s(dd), acc(dd);

  for (Index row = 0; row < n; ++row) {
    if (!c.matches(alpha[row], sigma[row])) c.compute(log_weights, means, variances, alpha[row], sigma[row]);
    std::copy_n(x.data() + row * dd, dd, xr.data());

    // Log-responsibilities up to log p, then log-sum-exp.
    double top = -std::numeric_limits<double>::infinity();
    for (Index k = 0; k < kk; ++k) {
      const double* m = c.centre.data() + k * dd;
      const double* p = c.precision.data() + k * dd;
      double q = 0.0;
      for (Index d = 0; d < dd; ++d) {
        const double diff = xr[d] - m[d];
        q += diff * diff * p[d];
      }
      resp[k] = c.log_norm[k] - 0.5 * q;
      top = std::max(top, resp[k]);
    }
    double total = 0.0;
    for (Index k = 0; k < kk; ++k) {
      // exp underflows to exactly 0 below -745.2: skipping the call there changes no bit.
      const double z = resp[k] - top;
      total += resp[k] = z < -750.0 ? 0.0 : std::exp(z);
    }
    const double inv_total = 1.0 / total;
    for (Index k = 0; k < kk; ++k) resp[k] *= inv_total;
    if (out.log_prob) (*out.log_prob)[row] = top + std::log(total);

    if (need_score) {
      std::fill(s.begin(), s.end(), 0.0);
      for (Index k = 0; k < kk; ++k) {
        const double r = resp[k];
        if (r == 0.0) continue;  // underflowed: contributes exactly nothing
        const double* m = c.centre.data() + k * dd;
        const double* p = c.precision.data() + k * dd;
        for (Index d = 0; d < dd; ++d) s[d] -= r * (xr[d] - m[d]) * p[d];
      }
      if (want_score) std::copy_n(s.data(), dd, out.score->data() + row * dd);
    }

    if (out.denoised) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (Index k = 0; k < kk; ++k) {
        const double r = resp[k];
        if (r == 0.0) continue;
        const double* mu = means.data() + k * dd;
        const double* m = c.centre.data() + k * dd;
        const double* g = c.gain.data() + k * dd;
        for (Index d = 0; d < dd; ++d) acc[d] += r * (mu[d] + g[d] * (xr[d] - m[d]));
      }
      std::copy_n(acc.data(), dd, out.denoised->data() + row * dd);
    }

    if (want_div) {
      // sum_k r_k (|s_k - s|^2 - tr(1/v_k)), s_k = -(x - m_k) / v_k
      double div = 0.0;
      for (Index k = 0; k < kk; ++k) {
        const double r = resp[k];
        if (r == 0.0) continue;
        const double* m = c.centre.data() + k * dd;
        const double* p = c.precision.data() + k * dd;
        double spread = 0.0;
        for (Index d = 0; d < dd; ++d) {
          const double delta = -(xr[d] - m[d]) * p[d] - s[d];
          spread += delta * delta;
        }
        div += r * (spread - c.trace[k]);
      }
      (*out.divergence)[row] = div;
    }

    if (want_jvp) {
      // sum_k r_k [(s_k - s) ((s_k - s) . v) - v / v_k]
      const double* v = out.jvp_direction->data() + row * dd;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (Index k = 0; k < kk; ++k) {
        const double r = resp[k];
        if (r == 0.0) continue;
        const double* m = c.centre.data() + k * dd;
        const double* p = c.precision.data() + k * dd;
        double along = 0.0;
        for (Index d = 0; d < dd; ++d) along += (-(xr[d] - m[d]) * p[d] - s[d]) * v[d];
        for (Index d = 0; d < dd; ++d) acc[d] += r * ((-(xr[d] - m[d]) * p[d] - s[d]) * along - v[d] * p[d]);
      }
      std::copy_n(acc.data(), dd, out.jvp->data() + row * dd);
    }
  }
}

}  // namespace

GaussianMixture::GaussianMixture(Eigen::ArrayXd weights, Batch means, Batch variances)
    : weights_(std::move(weights)), means_(std::move(means)), variances_(std::move(variances)) {
  const Index k = weights_.size();
  if (k < 1 || means_.rows() != k || variances_.rows() != k || variances_.cols() != means_.cols() || means_.cols() < 1)
    throw std::invalid_argument(fmt::format("GaussianMixture: {} weights, means {}x{}, variances {}x{}", k, means_.rows(),
                                            means_.cols(), variances_.rows(), variances_.cols()));
  if (!(weights_ > 0.0).all() || !weights_.isFinite().all())
    throw std::invalid_argument("GaussianMixture: weights must be positive and finite");
  if (!means_.isFinite().all()) throw std::invalid_argument("GaussianMixture: means must be finite");
  if (!(variances_ > 0.0).all() || !variances_.isFinite().all())
    throw std::invalid_argument("GaussianMixture: variances must be positive and finite");
  weights_ /= weights_.sum();
  log_weights_ = weights_.log();
  cumulative_weights_.resize(k);
  double acc = 0.0;
  for (Index i = 0; i < k; ++i) cumulative_weights_[i] = acc += weights_[i];
  cumulative_weights_[k - 1] = 1.0;  // u01 can return exactly 1: the last component must take it
}

GaussianMixture GaussianMixture::ring(Index components, double radius, double std) {
  if (components < 1 || !(radius >= 0.0) || !(std > 0.0))
    throw std::invalid_argument("GaussianMixture::ring: need components >= 1, radius >= 0, std > 0");
  Batch means(components, 2);
  for (Index k = 0; k < components; ++k) {
    const double angle = 2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(components);
    means(k, 0) = radius * std::cos(angle);
    means(k, 1) = radius * std::sin(angle);
  }
  return GaussianMixture(Eigen::ArrayXd::Ones(components), std::move(means), Batch::Constant(components, 2, std * std));
}

GaussianMixture GaussianMixture::random_isotropic(Index dims, Index components, std::uint64_t seed) {
  if (dims < 1 || components < 1) throw std::invalid_argument("GaussianMixture::random_isotropic: empty mixture");
  Eigen::ArrayXd weights(components);
  Batch means(components, dims), variances(components, dims);
  for (Index k = 0; k < components; ++k) {
    const auto [u_weight, u_std] = uniforms(seed, kConstructionStream, k, 0);
    weights[k] = 0.5 + u_weight;
    const double std = 0.3 + 0.4 * u_std;
    variances.row(k).setConstant(std * std);
    normals(seed, kConstructionStream, k, 1, means.data() + k * dims, dims);
  }
  return GaussianMixture(std::move(weights), std::move(means), std::move(variances));
}

GaussianMixture GaussianMixture::random_diagonal(Index dims, Index components, std::uint64_t seed) {
  if (dims < 1 || components < 1) throw std::invalid_argument("GaussianMixture::random_diagonal: empty mixture");
  Eigen::ArrayXd weights(components);
  Batch means(components, dims), variances(components, dims);
  const std::uint32_t std_blocks = static_cast<std::uint32_t>((dims + 1) / 2);
  for (Index k = 0; k < components; ++k) {
    weights[k] = 0.5 + uniforms(seed, kConstructionStream, k, 0).first;
    normals(seed, kConstructionStream, k, 1, means.data() + k * dims, dims);
    means.row(k) *= 1.5;
    for (Index d = 0; d < dims; d += 2) {
      const auto [u0, u1] = uniforms(seed, kConstructionStream, k, 1 + std_blocks + static_cast<std::uint32_t>(d / 2));
      // log-uniform std in [0.1, 1]: s = 10^(u - 1)
      variances(k, d) = std::pow(10.0, 2.0 * (u0 - 1.0));
      if (d + 1 < dims) variances(k, d + 1) = std::pow(10.0, 2.0 * (u1 - 1.0));
    }
  }
  return GaussianMixture(std::move(weights), std::move(means), std::move(variances));
}

Eigen::VectorXd GaussianMixture::mean() const {
  return (means_.colwise() * weights_).colwise().sum().matrix().transpose();
}

Eigen::MatrixXd GaussianMixture::covariance() const {
  // sum_k w_k (diag(s_k^2) + mu_k mu_k^T) - mean mean^T, centred first to avoid cancellation.
  const Eigen::VectorXd m = mean();
  const Index d = dims();
  Eigen::MatrixXd cov = Eigen::MatrixXd::Zero(d, d);
  for (Index k = 0; k < components(); ++k) {
    const Eigen::VectorXd c = means_.row(k).matrix().transpose() - m;
    cov.noalias() += weights_[k] * (c * c.transpose());
    cov.diagonal() += weights_[k] * variances_.row(k).matrix().transpose();
  }
  return cov;
}

void GaussianMixture::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Outputs& out) const {
  const Index n = x.rows(), dd = dims();
  check_levels(x, alpha, sigma, dd);
  const bool want_jvp = out.jvp != nullptr;
  if (want_jvp && (out.jvp_direction == nullptr || out.jvp_direction->rows() != n || out.jvp_direction->cols() != dd))
    throw std::invalid_argument("GaussianMixture: a Jacobian-vector product needs a direction shaped like x");
  // A row of the direction is read after that row's score and denoiser are written (x's row, by
  // contrast, is copied first), so no output may be the direction.
  if (want_jvp && (out.jvp == out.jvp_direction || out.score == out.jvp_direction || out.denoised == out.jvp_direction))
    throw std::invalid_argument("GaussianMixture: no output may overwrite the Jacobian-vector product's direction");
  if (out.log_prob) out.log_prob->resize(n);
  if (out.score && (out.score->rows() != n || out.score->cols() != dd)) out.score->resize(n, dd);
  if (out.denoised && (out.denoised->rows() != n || out.denoised->cols() != dd)) out.denoised->resize(n, dd);
  if (out.divergence) out.divergence->resize(n);
  if (out.jvp && (out.jvp->rows() != n || out.jvp->cols() != dd)) out.jvp->resize(n, dd);

  switch (dd) {
    case 1: evaluate_rows<1>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    case 2: evaluate_rows<2>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    case 3: evaluate_rows<3>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    default: evaluate_rows<0>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
  }
}

PerSample GaussianMixture::log_prob(const Batch& x, const PerSample& alpha, const PerSample& sigma) const {
  PerSample out;
  evaluate(x, alpha, sigma, {.log_prob = &out});
  return out;
}

void GaussianMixture::score(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  evaluate(x, alpha, sigma, {.score = &out});
}

void GaussianMixture::denoise(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  evaluate(x, alpha, sigma, {.denoised = &out});
}

PerSample GaussianMixture::score_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma) const {
  PerSample out;
  evaluate(x, alpha, sigma, {.divergence = &out});
  return out;
}

void GaussianMixture::score_jvp(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Batch& v,
                                Batch& out) const {
  evaluate(x, alpha, sigma, {.jvp_direction = &v, .jvp = &out});
}

Batch GaussianMixture::sample(Index n, std::uint64_t seed, Index first_sample) const {
  return sample_marginal(1.0, 0.0, n, seed, first_sample);
}

Batch GaussianMixture::sample_marginal(double alpha, double sigma, Index n, std::uint64_t seed, Index first_sample) const {
  if (n < 0 || first_sample < 0) throw std::invalid_argument("GaussianMixture::sample: negative count or index");
  const Index kk = components(), dd = dims();
  Batch out(n, dd);
  std::vector<double> z(dd);
  for (Index i = 0; i < n; ++i) {
    const auto index = static_cast<std::uint64_t>(first_sample + i);
    const double u = uniforms(seed, kSampleStream, index, 0).first;
    const Index k = std::min<Index>(
        std::lower_bound(cumulative_weights_.data(), cumulative_weights_.data() + kk, u) - cumulative_weights_.data(),
        kk - 1);
    double* row = out.data() + i * dd;
    normals(seed, kSampleStream, index, 1, z.data(), dd);
    for (Index d = 0; d < dd; ++d) row[d] = alpha * (means_(k, d) + std::sqrt(variances_(k, d)) * z[d]);
    if (sigma != 0.0) {
      normals(seed, kSampleStream, index, kNoiseBlock, z.data(), dd);
      for (Index d = 0; d < dd; ++d) row[d] += sigma * z[d];
    }
  }
  return out;
}

}  // namespace diffode
