// Predictor-corrector sampling: Song et al. 2021, "Score-Based Generative Modeling through
// Stochastic Differential Equations", arXiv:2011.13456, Algorithm 1 (PC sampling), Algorithms 2-3
// (PC for VE and VP SDEs), Appendix E (reverse diffusion, eq. 45-46), Appendix F (ancestral
// sampling, eq. 47 and the DDPM form) and Appendix G (the corrector, Algorithms 4-5: Langevin
// dynamics with a target signal-to-noise ratio).
//
// On a decreasing time grid t_0 = T > t_1 > ... > t_N (all in [t_min, T]) each noise level t_i,
// i < N, gets
//   1. the corrector: M Langevin MCMC steps targeting p_{t_i},
//          g = s(x, t_i),  z ~ N(0, I),  eps = 2 a_i (r ||z|| / ||g||)^2,
//          x_mean = x + eps g,  x = x_mean + sqrt(2 eps) z                       (Algorithm 4/5)
//   2. the predictor: one step of a discretized reverse SDE from t_i to t_{i+1}.
// Each costs one score evaluation: one corrector step per level means 2 evaluations per level.
// Without a predictor the corrector alone carries the samples down, so its levels are t_1, ..., t_N
// instead: step i runs the Langevin steps at t_{i+1}, the level it arrives at (x_T, drawn at t_0,
// needs none), and the grid's last point is corrected, as NCSN's smallest sigma is.
//
// The predictors, in the process's own x and t. The discretization of the forward process between
// s = t_{i+1} and t = t_i that Song et al. reverse (eq. 45) is here the exact Gaussian kernel
//     x_t = a x_s + G z,   a = alpha(t)/alpha(s),   G^2 = sigma(t)^2 - a^2 sigma(s)^2,
// which is DDPM's (a = sqrt(1 - beta_i), G^2 = beta_i) for VP and SMLD's (a = 1,
// G^2 = sigma_i^2 - sigma_{i-1}^2) for VE/EDM, now for any grid and any process.
//   reverse_diffusion  x_mean = x - (a - 1) x + G^2 s(x, t) = (2 - a) x + G^2 s,  x = x_mean + G z
//                      (eq. 46; score_sde's ReverseDiffusionPredictor)
//   euler_maruyama     x_mean = x + h [f x - g^2 s],  x = x_mean + g sqrt(|h|) z,  h = t_{i+1} - t_i
//                      (score_sde's EulerMaruyamaPredictor; the generic EM on ReverseSde)
//   ancestral          x_mean = (x + G^2 s) / a,  x = x_mean + std z                 (eq. 47)
//                      with std^2 = G^2 (DDPM's beta_i: 'forward') or G^2 sigma(s)^2/sigma(t)^2
//                      (the exact posterior variance, SMLD's: 'posterior'); score_sde takes the
//                      first for VP and the second for VE, which 'reference' reproduces (alpha == 1
//                      processes get 'posterior').
// The corrector's a_i is the DDPM alpha_i = 1 - beta_i = a^2 of the step below t_i (score_sde's
// sde.alphas[timestep]), 1 for VE/EDM.
//
// The final step: score_sde returns the last step's x_mean when its config's noise_removal is on
// (the default), i.e. the last predictor's output without its noise; `noise_removal` does that.
//
// How this relates to score_sde's sampler (get_pc_sampler): its levels are linspace(T, eps, N),
// every one of them corrected and predicted, with discrete DDPM/SMLD coefficients indexed by
// floor(t (N-1)) and, for Euler-Maruyama, dt = 1/N. Here the levels are all grid points but the
// last, and every coefficient comes from the grid and the process, so the sampler is consistent
// on any grid; on score_sde's own grid the two agree to O(1/N).
//
// Norms in the corrector: score_sde takes the batch means of ||z_n|| and ||g_n|| (one step size for
// the batch); `LangevinNorm::batch_mean` (the default) does that. It makes a sample depend on its
// batch; `per_sample` uses each sample's own norms and is batch-independent, but in low dimension
// its step ~ ||z||^2/||g||^2 is heavy-tailed (a sample near a mode has ||g|| -> 0 and takes a huge
// step): measured on the 2-D ring, per-sample norms bias the samples (KS 0.09 against a critical
// 0.05 at 4000 samples), batch means do not. Use per_sample only for high-dimensional states.
// Noise (PcNoise): fresh normals per step (the default) or Brownian paths in t: the predictor's z
// from the increment of one path over [t_{i+1}, t_i] (so the Euler-Maruyama predictor's
// g sqrt|h| z is exactly the path's g dW, as the generic SDE driver sees it), the corrector's from a
// second, independent path, its M steps at level i from M equal sub-intervals of [t_{i+1}, t_i].
#pragma once

#include "models/predictor.hpp"
#include "problems/process.hpp"
#include "solvers/diffusion/probability_flow.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <span>
#include <stdexcept>

namespace diffode {

enum class PcPredictor { none, reverse_diffusion, euler_maruyama, ancestral };
enum class AncestralVariance { reference, forward, posterior };
enum class LangevinNorm { per_sample, batch_mean };
// The corrector's step size at level t_i:
//   langevin            2 a_i (r ||z|| / ||g||)^2, the target signal-to-noise ratio r = snr
//                       (Song et al. 2021, Algorithm 5);
//   annealed_langevin   (r / 2) sigma(t_i)^2: annealed Langevin dynamics (Song & Ermon 2019,
//                       "Generative Modeling by Estimating Gradients of the Data Distribution",
//                       arXiv:1907.05600, Algorithm 1: alpha_i = epsilon sigma_i^2 / sigma_L^2 and
//                       x <- x + alpha_i/2 s + sqrt(alpha_i) z), with r = epsilon / sigma_L^2, the
//                       step_ratio, as the parameter: it does not change with the grid's last level,
//                       and the chain is stable at every level for r < 2 (for a level whose law is
//                       about N(0, sigma_i^2)). NCSN's CIFAR-10 setting, epsilon = 2e-5 with
//                       sigma_L = 0.01, is r = 0.2. With no predictor this is NCSN's sampler itself
//                       on the grid's levels after the first, for VE exactly as published.
enum class PcCorrector { langevin, annealed_langevin };

struct PcOptions {
  PcPredictor predictor = PcPredictor::reverse_diffusion;
  int corrector_steps = 1;  // Langevin steps per noise level (score_sde's n_steps_each); 0 = none
  double snr = 0.16;        // target signal-to-noise ratio r (score_sde's VE default)
  LangevinNorm norm = LangevinNorm::batch_mean;  // score_sde's; see above
  bool noise_removal = true;  // return the last step's mean (score_sde's sampling.noise_removal)
  AncestralVariance ancestral_variance = AncestralVariance::reference;
  PcCorrector corrector = PcCorrector::langevin;
  double step_ratio = 0.2;  // annealed_langevin: alpha_i / sigma(t_i)^2 (NCSN's CIFAR-10 setting)
};

// The noise of a PC sampler, of one of two kinds (NoiseKind, solvers/noise.hpp), each with two
// independent streams, the predictor's and the corrector's.
//
// per_step: z = StepNormals(seed, stream 0) at step i for the predictor (the stream and step a
// generic SDE driver's per-step dW uses, so the Euler-Maruyama predictor matches EulerMaruyama on
// ReverseSde there too), StepNormals(seed, stream 2) at step i m + j for corrector step j of m.
//
// brownian: two independent Brownian paths over t in [0, t_max] (seeds `seed` and
// `seed + corrector_seed_offset`, distinct for every seed). The predictor path is
// BrownianPath({seed, t_max, 0, dims, max_depth}), the one a generic SDE driver would be given, so
// the Euler-Maruyama predictor follows the same path as EulerMaruyama on ReverseSde. A normal for a
// step s -> s' is (W(s') - W(s)) / sqrt|s' - s| (SigmaNoise's convention, in t); the corrector's M
// steps at level i take M equal sub-intervals of [t_{i+1}, t_i]. Both streams walk their paths
// monotonically, so each keeps its last point value and asks the tree once per point, as the SDE
// driver does. A query costs time linear in max_depth; the leaves, t_max 2^-max_depth wide, must
// stay far below the smallest step (below a leaf the path is smooth), e.g. depth 24 for EDM's T = 80
// on grids of a few hundred steps.
// The cached point values make an instance single-threaded: give each thread its own.
template <class State>
class PcNoise {
 public:
  static constexpr std::uint64_t corrector_seed_offset = 0x9E3779B97F4A7C15ull;
  static constexpr std::uint32_t predictor_stream = 0, corrector_stream = 2;

  // The Brownian kind.
  PcNoise(std::uint64_t seed, double t_max, Index dims, Index first_sample = 0, int max_depth = 40)
      : kind_(NoiseKind::brownian),
        predictor_(BrownianPathOptions{.seed = seed, .t0 = t_max, .t1 = 0.0, .dims = dims, .max_depth = max_depth}),
        corrector_(BrownianPathOptions{.seed = seed + corrector_seed_offset, .t0 = t_max, .t1 = 0.0, .dims = dims, .max_depth = max_depth}),
        predictor_normals_(seed, predictor_stream),
        corrector_normals_(seed, corrector_stream),
        dims_(dims),
        first_sample_(first_sample) {}
  // The per-step kind.
  static PcNoise per_step(std::uint64_t seed, Index dims, Index first_sample = 0) {
    PcNoise noise(seed, 1.0, dims, first_sample);
    noise.kind_ = NoiseKind::per_step;
    return noise;
  }

  NoiseKind kind() const { return kind_; }
  const BrownianPath& predictor_path() const { return predictor_.interval.path(); }
  const BrownianPath& corrector_path() const { return corrector_.interval.path(); }

  // z ~ N(0, I) for the predictor's step i, t -> t_next.
  void predictor_normal(std::size_t i, double t, double t_next, const State& like, State& out) const {
    if (kind_ == NoiseKind::per_step)
      fill(predictor_normals_, i, like, out);
    else
      normal(predictor_, t, t_next, like, out);
  }
  // z ~ N(0, I) for corrector step j (of m) at level i, t, whose next level is t_next.
  void corrector_normal(std::size_t i, double t, double t_next, int j, int m, const State& like, State& out) const {
    if (kind_ == NoiseKind::per_step) {
      fill(corrector_normals_, static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(m) + static_cast<std::uint64_t>(j), like, out);
      return;
    }
    const double width = (t - t_next) / m;
    normal(corrector_, j == 0 ? t : t - j * width, j + 1 == m ? t_next : t - (j + 1) * width, like, out);
  }

 private:
  struct Stream {
    explicit Stream(const BrownianPathOptions& options) : interval(options) {}
    mutable BrownianInterval interval;
    mutable double t = std::numeric_limits<double>::quiet_NaN();  // where `w` was taken
    mutable Batch w, w_next, dw;
  };

  void fill(const StepNormals& normals, std::uint64_t step, const State& like, State& out) const {
    host_.resize(StateOps<State>::samples(like), dims_);
    normals.fill(step, first_sample_, host_);
    decltype(auto) noise = StateOps<State>::from_host(host_, like);
    StateOps<State>::assign(out, noise);
  }

  void normal(const Stream& stream, double s, double s_next, const State& like, State& out) const {
    const Index rows = StateOps<State>::samples(like), dims = dims_;
    for (Batch* b : {&stream.w, &stream.w_next, &stream.dw})
      if (b->rows() != rows || b->cols() != dims) {
        b->resize(rows, dims);
        stream.t = std::numeric_limits<double>::quiet_NaN();
      }
    if (!(stream.t == s)) stream.interval.point(s, first_sample_, stream.w, nullptr);
    stream.interval.point(s_next, first_sample_, stream.w_next, nullptr);
    stream.dw = (stream.w_next - stream.w) / std::sqrt(std::abs(s_next - s));
    std::swap(stream.w, stream.w_next);
    stream.t = s_next;
    decltype(auto) noise = StateOps<State>::from_host(stream.dw, like);
    StateOps<State>::assign(out, noise);
  }

  NoiseKind kind_;
  Stream predictor_, corrector_;
  StepNormals predictor_normals_, corrector_normals_;
  Index dims_;
  Index first_sample_;
  mutable Batch host_;
};

namespace detail {

inline void check_pc_grid(const Process& process, std::span<const double> t) {
  if (t.size() < 2) throw std::invalid_argument("sample_pc: the time grid needs at least two points");
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (!(t[i] >= process.t_min() && t[i] <= process.t_max()))
      throw std::invalid_argument(fmt::format("sample_pc: t[{}] = {} outside the process's range [{}, {}]", i, t[i],
                                              process.t_min(), process.t_max()));
    if (i > 0 && !(t[i] < t[i - 1]))
      throw std::invalid_argument(
          fmt::format("sample_pc: times must decrease strictly; t[{}] = {} then t[{}] = {}", i - 1, t[i - 1], i, t[i]));
  }
}

// The forward kernel x_t = a x_s + G z between s < t, G^2 = sigma_t^2 (1 - e^{2 (lambda_t - lambda_s)})
// written with expm1: no cancellation when s and t are close.
struct ForwardKernel {
  double a;
  double G2;
};
inline ForwardKernel forward_kernel(const Process& p, double t, double s) {
  const double sigma_t = p.sigma(t);
  return {p.alpha(t) / p.alpha(s), -sigma_t * sigma_t * std::expm1(2.0 * (p.lambda(t) - p.lambda(s)))};
}

}  // namespace detail

// Runs the PC sampler over `times` (decreasing, inside [t_min, T]); `x` holds x_T (in the process's
// own variables) and receives the sample. Throws std::invalid_argument without noise.
template <class State, class Observer = NoObserver>
IntegrationStats sample_pc(const DiffusionScore<State>& score, State& x, std::span<const double> times, const PcOptions& options = {},
                           const PcNoise<State>* noise = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  const Process& process = score.process();
  detail::check_pc_grid(process, times);
  if (noise == nullptr) throw std::invalid_argument("sample_pc: a predictor-corrector sampler needs a noise source");
  if (options.corrector_steps < 0 || !(options.snr > 0))
    throw std::invalid_argument(fmt::format("sample_pc: need corrector_steps >= 0 and snr > 0 (got {}, {})",
                                            options.corrector_steps, options.snr));
  if (options.predictor == PcPredictor::none && options.corrector_steps == 0)
    throw std::invalid_argument("sample_pc: neither a predictor nor a corrector");

  if (options.corrector == PcCorrector::annealed_langevin && !(options.step_ratio > 0))
    throw std::invalid_argument(fmt::format("sample_pc: annealed Langevin needs step_ratio > 0 (got {})", options.step_ratio));

  IntegrationStats stats;
  State g, z, x_mean;
  const std::size_t levels = times.size() - 1;
  for (std::size_t i = 0; i < levels; ++i) {
    const double t = times[i], t_next = times[i + 1];
    const auto kernel = detail::forward_kernel(process, t, t_next);

    // Corrector: Langevin steps at p_t with step 2 a_i (r ||z|| / ||g||)^2 (Algorithm 5, lines 6-9).
    // Without a predictor nothing else carries the samples from t to t_next, so the chain runs at
    // the level it arrives at, t_next: the grid's last point is then a Langevin level, as NCSN's
    // smallest sigma is (Song & Ermon 2019, Algorithm 1), and the state reported at t_next is a
    // sample of p_{t_next} (at t it would be one level too noisy).
    const double level = options.predictor == PcPredictor::none ? t_next : t;
    for (int j = 0; j < options.corrector_steps; ++j) {
      ++stats.nfe;
      score(x, level, g);
      noise->corrector_normal(i, t, t_next, j, options.corrector_steps, x, z);
      // Per-sample RMS = norm / sqrt(D): the sqrt(D) cancels in the ratio.
      PerSample z_norm = StateOps<State>::scalars_to_host(Ops::error_ratio(z, z, z, 0.0, 1.0));
      PerSample g_norm = StateOps<State>::scalars_to_host(Ops::error_ratio(g, g, g, 0.0, 1.0));
      if (options.norm == LangevinNorm::batch_mean) {
        z_norm.setConstant(z_norm.mean());
        g_norm.setConstant(g_norm.mean());
      }
      const PerSample step = options.corrector == PcCorrector::langevin
                                 ? PerSample(2.0 * kernel.a * kernel.a * (options.snr * z_norm / g_norm).square())
                                 : PerSample::Constant(z_norm.size(), 0.5 * options.step_ratio * std::pow(process.sigma(level), 2));
      const PerSample noise_scale = (2.0 * step).sqrt();
      Ops::update(x_mean, x, StateOps<State>::scalars_from_host(step, x), {{1.0, g}});
      Ops::update(x, x_mean, StateOps<State>::scalars_from_host(noise_scale, x), {{1.0, z}});
    }

    // Predictor: one reverse-SDE step t -> t_next.
    if (options.predictor == PcPredictor::none) {
      if (options.corrector_steps > 0 && options.noise_removal && i + 1 == levels) Ops::assign(x, x_mean);
    } else {
      ++stats.nfe;
      score(x, t, g);
      double noise_std = 0.0;
      switch (options.predictor) {
        case PcPredictor::reverse_diffusion:  // eq. 46
          Ops::scale(x_mean, 2.0 - kernel.a, x);
          Ops::update(x_mean, x_mean, kernel.G2, {{1.0, g}});
          noise_std = std::sqrt(kernel.G2);
          break;
        case PcPredictor::euler_maruyama: {
          const double h = t_next - t, g2 = process.g2(t);
          Ops::scale(x_mean, 1.0 + h * process.f(t), x);
          Ops::update(x_mean, x_mean, -h * g2, {{1.0, g}});
          noise_std = std::sqrt(g2 * std::abs(h));
          break;
        }
        case PcPredictor::ancestral: {  // eq. 47
          const bool posterior = options.ancestral_variance == AncestralVariance::posterior ||
                                 (options.ancestral_variance == AncestralVariance::reference && kernel.a == 1.0);
          Ops::update(x_mean, x, kernel.G2, {{1.0, g}});
          Ops::scale(x_mean, 1.0 / kernel.a, x_mean);
          noise_std = std::sqrt(kernel.G2) * (posterior ? process.sigma(t_next) / process.sigma(t) : 1.0);
          break;
        }
        case PcPredictor::none: break;
      }
      if (options.noise_removal && i + 1 == levels) {
        Ops::assign(x, x_mean);
      } else {
        noise->predictor_normal(i, t, t_next, x, z);
        Ops::update(x, x_mean, noise_std, {{1.0, z}});
      }
    }

    ++stats.steps;
    if (!detail::check_finite(x, stats.steps, t_next, stats)) break;
    observer(StepInfo{static_cast<Index>(i + 1), t_next, t_next - t, stats.nfe}, x);
  }
  return stats;
}

}  // namespace diffode
