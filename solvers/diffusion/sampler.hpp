// What every diffusion sampler shares: the sigma grid check, the Karras ODE derivative, the
// ancestral split of a step, the noise drawn from a Brownian path, and the bookkeeping of a run
// (NFE, failure at the first non-finite value, observer). Samplers live one to a file beside this
// one and read like their papers' algorithms; the arithmetic they share lives here, once.
//
// Variables: the scale-free state x~ = x / alpha and noise level sigma~ = sigma / alpha =
// exp(-lambda) (see denoiser.hpp); "sigma" below always means sigma~. Grids run from sigma_max down
// to the last sigma, which may be 0 (k-diffusion's append_zero): the final-step policy is the grid's.
#pragma once

#include "core/state.hpp"
#include "solvers/brownian.hpp"
#include "solvers/noise.hpp"
#include "solvers/integrate.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <span>
#include <stdexcept>

namespace diffode {

// Throws unless sigmas has >= 2 entries, strictly decreasing, all positive but possibly the last (0).
inline void check_sigmas(std::span<const double> sigmas) {
  if (sigmas.size() < 2) throw std::invalid_argument("sampler: the sigma grid needs at least two points");
  for (std::size_t i = 0; i < sigmas.size(); ++i) {
    const bool last = i + 1 == sigmas.size();
    if (!(sigmas[i] > 0.0 || (last && sigmas[i] == 0.0)) || !std::isfinite(sigmas[i]))
      throw std::invalid_argument(fmt::format("sampler: sigma[{}] = {} (sigmas must be positive; only the last may be 0)", i, sigmas[i]));
    if (i > 0 && !(sigmas[i] < sigmas[i - 1]))
      throw std::invalid_argument(fmt::format("sampler: sigmas must decrease strictly; sigma[{}] = {} then sigma[{}] = {}", i - 1,
                                              sigmas[i - 1], i, sigmas[i]));
  }
}

// d = (x - denoised) / sigma: the PF-ODE's dx/dsigma (Karras et al. 2022, eq. 3 with sigma(t) = t).
template <class State>
void karras_derivative(const State& x, double sigma, const State& denoised, State& d) {
  StateOps<State>::update(d, x, -1.0, {{1.0, denoised}});  // x - denoised
  StateOps<State>::scale(d, 1.0 / sigma, d);
}

// The ancestral split of a step sigma_from -> sigma_to (k-diffusion's get_ancestral_step; DDIM's
// sigma_t(eta), Song et al. 2021, arXiv:2010.02502, eq. 16, in sigma~): step deterministically to
// sigma_down, then add fresh noise of size sigma_up, so that sigma_down^2 + sigma_up^2 = sigma_to^2.
struct AncestralStep {
  double sigma_down;
  double sigma_up;
};
inline AncestralStep ancestral_step(double sigma_from, double sigma_to, double eta) {
  if (eta == 0.0) return {sigma_to, 0.0};
  const double up = std::min(sigma_to, eta * std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                                                       (sigma_from * sigma_from)));
  return {std::sqrt(sigma_to * sigma_to - up * up), up};
}

// Standard normal noise for the stochastic samplers, one draw per step, of one of two kinds
// (NoiseKind, solvers/noise.hpp):
//   per_step  z = a fresh N(0, I) keyed by (seed, step index, sample, dim) (StepNormals, stream 0);
//   brownian  from a Brownian path W over sigma in [0, sigma_max]: the noise of a step sigma ->
//             sigma_next is (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) (k-diffusion's
//             BrownianTreeNoiseSampler convention), so a finer grid sees the same path.
// Either way steps get independent N(0, I) noise and the same seed gives the same noise at any
// batch split or thread count. The Brownian kind walks its path through a BrownianInterval, which
// keeps the last query's upper tree levels: an instance is single-threaded (one per block).
template <class State>
class SigmaNoise {
 public:
  // The Brownian kind (the default of this constructor: what the unit tests pin).
  SigmaNoise(std::uint64_t seed, double sigma_max, Index dims, Index first_sample = 0, int max_depth = 40)
      : kind_(NoiseKind::brownian),
        interval_(std::in_place, BrownianPathOptions{.seed = seed, .t0 = sigma_max, .t1 = 0.0, .dims = dims, .max_depth = max_depth}),
        normals_(seed),
        dims_(dims),
        first_sample_(first_sample) {}
  // The per-step kind.
  static SigmaNoise per_step(std::uint64_t seed, Index dims, Index first_sample = 0) { return SigmaNoise(seed, dims, first_sample); }

  NoiseKind kind() const { return kind_; }
  Index dims() const { return dims_; }

  // out ~ N(0, I), shaped like `like`, for step `step` (0-based) of the grid, sigma -> sigma_next.
  void normal(std::size_t step, double sigma, double sigma_next, const State& like, State& out) const {
    if (kind_ == NoiseKind::per_step) {
      host_.resize(StateOps<State>::samples(like), dims_);
      normals_.fill(step, first_sample_, host_);
    } else {
      brownian_normal(sigma, sigma_next, like);
    }
    decltype(auto) noise = StateOps<State>::from_host(host_, like);
    StateOps<State>::assign(out, noise);
  }
  // The Brownian kind only: the noise of the interval, whatever step it is.
  void normal(double sigma, double sigma_next, const State& like, State& out) const {
    if (kind_ != NoiseKind::brownian) throw std::logic_error("SigmaNoise: per-step noise needs the step index");
    normal(0, sigma, sigma_next, like, out);
  }

 private:
  SigmaNoise(std::uint64_t seed, Index dims, Index first_sample)
      : kind_(NoiseKind::per_step), normals_(seed), dims_(dims), first_sample_(first_sample) {}

  // A sampler walks its grid, so W at the end of one step is kept for the start of the next: one
  // query per grid point instead of two.
  void brownian_normal(double sigma, double sigma_next, const State& like) const {
    const Index rows = StateOps<State>::samples(like);
    if (w_end_.rows() != rows || w_end_.cols() != dims_) {
      w_end_.resize(rows, dims_);
      w_start_.resize(rows, dims_);
      cached_sigma_ = std::numeric_limits<double>::quiet_NaN();
    }
    if (sigma == cached_sigma_) {
      std::swap(w_start_, w_end_);
    } else {
      interval_->point(sigma, first_sample_, w_start_, nullptr);
    }
    interval_->point(sigma_next, first_sample_, w_end_, nullptr);
    cached_sigma_ = sigma_next;
    host_ = (w_end_ - w_start_) / std::sqrt(std::abs(sigma_next - sigma));
  }

  NoiseKind kind_;
  mutable std::optional<BrownianInterval> interval_;
  StepNormals normals_;
  Index dims_;
  Index first_sample_;
  mutable Batch host_, w_start_, w_end_;
  mutable double cached_sigma_ = std::numeric_limits<double>::quiet_NaN();
};

// Bookkeeping of one sampling run: counts the model's evaluations, stops at the first non-finite
// value with its step and sigma, and hands each step to the observer.
template <class Model, class Observer>
class SamplerRun {
 public:
  SamplerRun(const Model& model, Observer& observer) : model_(model), observer_(observer) {}

  template <class State, class Sigma>
  void denoise(const State& x, const Sigma& sigma, State& denoised) {
    ++stats.nfe;
    model_(x, sigma, denoised);
  }

  // Call after step i (0-based) has reached `sigma_next`; false means stop: the run failed.
  template <class State>
  bool finish_step(std::size_t i, double sigma_next, double h, const State& x) {
    ++stats.steps;
    if (!detail::check_finite(x, stats.steps, sigma_next, stats)) return false;
    observer_(StepInfo{static_cast<Index>(i + 1), sigma_next, h, stats.nfe}, x);
    return true;
  }

  IntegrationStats stats;

 private:
  const Model& model_;
  Observer& observer_;
};

}  // namespace diffode
