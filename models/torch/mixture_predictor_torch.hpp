// The exact Gaussian mixture's denoiser on LibTorch tensors: the "torch-tensor path" of the exact
// mixture, so that a sampler running on StateOps<torch::Tensor> can be checked (and timed) against
// the same closed form the Eigen path evaluates (models/gaussian_mixture.hpp has the derivation):
//     E[x0 | x] = sum_k r_k(x) (mu_k + g_k (x - m_k)),   m_k = alpha mu_k,  v_k = alpha^2 s_k^2 + sigma^2,
//     g_k = alpha s_k^2 / v_k,  r_k = softmax_k(log w_k - sum_d log(2 pi v_kd) / 2 - |x - m_k|^2_{1/v_k} / 2).
// It is written as eager tensor operations over an [n, K, D] broadcast, in float64, the way one would
// write it in PyTorch. The quadratic form is taken directly on x - m_k, not expanded into
// |x|^2 - 2 x.m + |m|^2 (a matrix product would be faster, but near a mode at low noise that
// expansion cancels to a few digits, and this predictor exists to agree with the Eigen one to
// ~1e-13).
//
// Two choices keep its cost and memory honest rather than naive:
//  * when every sample sits at the same (alpha, sigma), as when a sampler advances the whole batch
//    together, the per-component constants are K x D tensors computed once per call; per-sample
//    levels broadcast them to [n, K, D];
//  * the batch is processed in chunks of kChunkRows rows, so the [n, K, D] temporaries stay a few
//    MiB whatever N is (at N = 65,536, K = 4, D = 64 one such temporary would be 128 MiB).
// Each chunk's arithmetic is row-wise, so a sample's result does not depend on the chunking.
//
// Only translation units that need LibTorch include this header.
#pragma once

#include "core/state_torch.hpp"
#include "models/gaussian_mixture.hpp"
#include "models/predictor.hpp"

#include <torch/types.h>

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace diffode {

class MixturePredictorTorch final : public Predictor<torch::Tensor> {
 public:
  // Rows per chunk: [kChunkRows, K, D] float64 temporaries stay around 8 MiB for K D <= 256.
  static constexpr int64_t kChunkRows = 4096;

  // The mixture's parameters are copied to `device` once, in float64.
  explicit MixturePredictorTorch(const GaussianMixture& mixture, torch::Device device = torch::kCPU)
      : dims_(mixture.dims()), components_(mixture.components()) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat64).device(device);
    log_weights_ = host_to(mixture.weights().log().eval().data(), {components_}, options);
    means_ = host_to(mixture.means().data(), {components_, dims_}, options);
    variances_ = host_to(mixture.variances().data(), {components_, dims_}, options);
  }

  Parameterization native() const override { return Parameterization::x0; }
  Index dims() const { return dims_; }
  Index components() const { return components_; }

 protected:
  // x: [N, D] (or [N, ...] with D trailing numbers), alpha and sigma: [N]. out: [N, D], x's shape.
  void evaluate(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& sigma,
                torch::Tensor& out) const override {
    const int64_t n = x.size(0);
    if (StateOps<torch::Tensor>::dims(x) != dims_)
      throw std::invalid_argument("MixturePredictorTorch: x has " + std::to_string(StateOps<torch::Tensor>::dims(x)) +
                                  " numbers per sample, the mixture " + std::to_string(dims_) + " dimensions");
    if (alpha.numel() != n || sigma.numel() != n)
      throw std::invalid_argument("MixturePredictorTorch: alpha and sigma need one value per sample");
    const torch::Tensor xf = x.reshape({n, dims_}).to(torch::kFloat64);
    const torch::Tensor a = alpha.to(xf.device(), torch::kFloat64).reshape({n});
    const torch::Tensor s = sigma.to(xf.device(), torch::kFloat64).reshape({n});
    torch::Tensor result = torch::empty({n, dims_}, xf.options());
    if (n > 0) {
      // One host read of the level ranges decides whether the constants can be shared (two scalars
      // per call; on a GPU this is the only synchronisation the predictor adds).
      const bool uniform = (a.max() == a.min()).logical_and(s.max() == s.min()).item<bool>();
      const Levels shared = uniform ? levels(a.slice(0, 0, 1).reshape({1, 1, 1}), s.slice(0, 0, 1).reshape({1, 1, 1}))
                                    : Levels{};
      for (int64_t begin = 0; begin < n; begin += kChunkRows) {
        const int64_t end = std::min(n, begin + kChunkRows);
        const Levels own = uniform ? Levels{} : levels(a.slice(0, begin, end).reshape({-1, 1, 1}),
                                                       s.slice(0, begin, end).reshape({-1, 1, 1}));
        denoise_chunk(xf.slice(0, begin, end), uniform ? shared : own, result.slice(0, begin, end));
      }
    }
    result = result.reshape(x.sizes()).to(x.scalar_type());
    if (out.defined() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
        out.device() == x.device() && out.is_contiguous() && !out.is_same(x))
      out.copy_(result);
    else
      out = result;
  }

 private:
  // The (alpha, sigma)-dependent constants, shaped [L, K, D] (L = 1 when shared, else rows) and
  // [L, K] for the log-normaliser.
  struct Levels {
    torch::Tensor centre, precision, gain, log_norm;
  };

  Levels levels(const torch::Tensor& a, const torch::Tensor& s) const {
    const torch::Tensor v = a * a * variances_.unsqueeze(0) + s * s;  // [L, K, D]
    const double log_two_pi = std::log(2.0 * std::numbers::pi);
    return {.centre = a * means_.unsqueeze(0),
            .precision = v.reciprocal(),
            .gain = a * variances_.unsqueeze(0) / v,
            .log_norm = log_weights_.unsqueeze(0) - 0.5 * (static_cast<double>(dims_) * log_two_pi + v.log().sum(-1))};
  }

  void denoise_chunk(const torch::Tensor& x, const Levels& c, torch::Tensor out) const {
    const torch::Tensor diff = x.unsqueeze(1) - c.centre;                         // [n, K, D]
    const torch::Tensor q = (diff * diff * c.precision).sum(-1);                  // [n, K]
    const torch::Tensor r = torch::softmax(c.log_norm - 0.5 * q, /*dim=*/1);      // [n, K]
    const torch::Tensor posterior = torch::addcmul(means_.unsqueeze(0), c.gain, diff);  // mu_k + g_k (x - m_k)
    out.copy_((r.unsqueeze(-1) * posterior).sum(1));
  }

  static torch::Tensor host_to(const double* data, torch::IntArrayRef sizes, const torch::TensorOptions& options) {
    return torch::from_blob(const_cast<double*>(data), sizes, torch::TensorOptions().dtype(torch::kFloat64))
        .to(options, /*non_blocking=*/false, /*copy=*/true);
  }

  Index dims_, components_;
  torch::Tensor log_weights_, means_, variances_;  // [K], [K, D], [K, D] float64 on the device
};

}  // namespace diffode
