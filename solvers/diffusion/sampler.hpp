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
#include "solvers/brownian_grid.hpp"
#include "solvers/noise.hpp"
#include "solvers/integrate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <type_traits>
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

// x <- x + h (x - denoised) / sigma: an Euler step of the PF-ODE, karras_derivative() then
// StateOps::update(x, x, h, {{1.0, d}}), with their roundings. For a Batch it is one pass and no
// derivative array; any other state goes through `d`.
template <class State>
void karras_euler_step(State& x, double sigma, const State& denoised, double h, State& d) {
  if constexpr (std::is_same_v<State, Batch>) {
    if (denoised.rows() != x.rows() || denoised.cols() != x.cols()) throw std::invalid_argument("karras_euler_step: shapes differ");
    const double inv_sigma = 1.0 / sigma, minus_one = -1.0 * 1.0, c = h * 1.0;
    double* xv = x.data();
    const double* dv = denoised.data();
    for (Index e = 0; e < x.size(); ++e) {
      double a = 0.0;  // update(d, x, -1, {{1, D}}): x + (0 + (-1) D)
      a += minus_one * dv[e];
      const double deriv = inv_sigma * (xv[e] + a);  // scale(d, 1/sigma, d)
      double b = 0.0;                                // update(x, x, h, {{1, d}})
      b += c * deriv;
      xv[e] = xv[e] + b;
    }
  } else {
    karras_derivative(x, sigma, denoised, d);
    StateOps<State>::update(x, x, h, {{1.0, d}});
  }
}

// x <- f x + h sum_j c_j k_j: StateOps::scale(x, f, x) then StateOps::update(x, x, h, terms), with
// their roundings; one pass for a Batch.
template <class State>
void scale_then_update(State& x, double f, double h, std::initializer_list<Term<State>> terms) {
  if constexpr (std::is_same_v<State, Batch>) {
    constexpr std::size_t kMax = 4;
    if (terms.size() > kMax) throw std::invalid_argument("scale_then_update: at most 4 terms");
    const double* kv[kMax];
    double c[kMax];
    std::size_t m = 0;
    for (const auto& t : terms) {
      if (t.value.rows() != x.rows() || t.value.cols() != x.cols()) throw std::invalid_argument("scale_then_update: shapes differ");
      kv[m] = t.value.data();
      c[m++] = h * t.coeff;
    }
    double* xv = x.data();
    for (Index e = 0; e < x.size(); ++e) {
      const double scaled = f * xv[e];
      double acc = 0.0;
      for (std::size_t q = 0; q < m; ++q) acc += c[q] * kv[q][e];
      xv[e] = scaled + acc;
    }
  } else {
    StateOps<State>::scale(x, f, x);
    StateOps<State>::update(x, x, h, terms);
  }
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
//             BrownianTreeNoiseSampler convention), so a finer grid sees the same path;
//   brownian_grid  the same convention on a Brownian-bridge tree whose skeleton is the sampler's own
//             grid (BrownianGrid, solvers/brownian_grid.hpp): the same path on every grid that is each
//             2^k-th point of it, at about the per-step kind's cost.
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
  // The grid kind, on the skeleton `sigmas` (the grid the sampler walks, or one it nests in).
  static SigmaNoise brownian_grid(std::uint64_t seed, std::span<const double> sigmas, Index dims, Index first_sample = 0) {
    SigmaNoise noise(seed, dims, first_sample);
    noise.kind_ = NoiseKind::brownian_grid;
    noise.grid_.emplace(seed, sigmas, dims);
    return noise;
  }

  NoiseKind kind() const { return kind_; }
  Index dims() const { return dims_; }

  // out ~ N(0, I), shaped like `like`, for step `step` (0-based) of the grid, sigma -> sigma_next.
  void normal(std::size_t step, double sigma, double sigma_next, const State& like, State& out) const {
    if (kind_ == NoiseKind::per_step) {
      if constexpr (std::is_same_v<State, Batch>) {  // straight into out: no copy through host_
        out.resize(like.rows(), dims_);
        normals_.fill(step, first_sample_, out);
        return;
      }
      host_.resize(StateOps<State>::samples(like), dims_);
      normals_.fill(step, first_sample_, host_);
    } else {
      brownian_normal(sigma, sigma_next, like);
    }
    decltype(auto) noise = StateOps<State>::from_host(host_, like);
    StateOps<State>::assign(out, noise);
  }
  // x <- x + scale z, z = normal(step, sigma, sigma_next, x, .): the same bits as normal() followed
  // by StateOps::update(x, x, scale, {{1.0, z}}), which is what every ancestral sampler does with
  // its noise. For a Batch and per-step noise the normals are drawn and added a few rows at a time
  // (StepNormals keys each value by its sample, so a chunk's rows are the rows of a whole fill):
  // no state-sized noise array, and the noise is added while it is still in L1. For a Batch and
  // the grid kind, z is formed and added in one pass over the path's two points.
  void add(std::size_t step, double sigma, double sigma_next, State& x, double scale) const {
    if constexpr (std::is_same_v<State, Batch>) {
      if (kind_ == NoiseKind::per_step) {
        const Index rows = x.rows(), dims = x.cols();
        if (dims != dims_) throw std::invalid_argument(fmt::format("SigmaNoise: the state has {} columns, the noise {} dims", dims, dims_));
        const Index chunk = std::max<Index>(1, kChunkElements / std::max<Index>(dims, 1));
        host_.resize(std::min(chunk, rows), dims);
        for (Index r0 = 0; r0 < rows; r0 += chunk) {
          const Index n = std::min(chunk, rows - r0);
          if (host_.rows() != n) host_.resize(n, dims);
          normals_.fill(step, first_sample_ + r0, host_);
          double* xv = x.data() + r0 * dims;
          const double* zv = host_.data();
          // StateOps<Batch>::update's arithmetic for one term: acc = 0 + (scale * 1) z; x + acc.
          const double c = scale * 1.0;
          for (Index e = 0; e < n * dims; ++e) {
            double acc = 0.0;
            acc += c * zv[e];
            xv[e] = xv[e] + acc;
          }
        }
        return;
      }
      if (kind_ == NoiseKind::brownian_grid) {
        if (x.cols() != dims_) throw std::invalid_argument(fmt::format("SigmaNoise: the state has {} columns, the noise {} dims", x.cols(), dims_));
        brownian_points(sigma, sigma_next, x.rows());
        // normal()'s z = (W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|, then update()'s acc = 0 + (scale * 1) z; x + acc.
        const double root = std::sqrt(std::abs(sigma_next - sigma)), c = scale * 1.0;
        const double* ws = w_start_.data();
        const double* we = w_end_.data();
        double* xv = x.data();
        for (Index e = 0, n = x.size(); e < n; ++e) {
          const double z = (we[e] - ws[e]) / root;
          double acc = 0.0;
          acc += c * z;
          xv[e] = xv[e] + acc;
        }
        return;
      }
    }
    normal(step, sigma, sigma_next, x, z_);
    StateOps<State>::update(x, x, scale, {{1.0, z_}});
  }
  // The Brownian kind only: the noise of the interval, whatever step it is.
  void normal(double sigma, double sigma_next, const State& like, State& out) const {
    if (kind_ == NoiseKind::per_step) throw std::logic_error("SigmaNoise: per-step noise needs the step index");
    normal(0, sigma, sigma_next, like, out);
  }

 private:
  SigmaNoise(std::uint64_t seed, Index dims, Index first_sample)
      : kind_(NoiseKind::per_step), normals_(seed), dims_(dims), first_sample_(first_sample) {}

  // A sampler walks its grid, so W at the end of one step is kept for the start of the next: one
  // query per grid point instead of two.
  void brownian_normal(double sigma, double sigma_next, const State& like) const {
    brownian_points(sigma, sigma_next, StateOps<State>::samples(like));
    host_ = (w_end_ - w_start_) / std::sqrt(std::abs(sigma_next - sigma));
  }
  // w_start_ = W(sigma), w_end_ = W(sigma_next) for `rows` rows.
  void brownian_points(double sigma, double sigma_next, Index rows) const {
    if (w_end_.rows() != rows || w_end_.cols() != dims_) {
      w_end_.resize(rows, dims_);
      w_start_.resize(rows, dims_);
      cached_sigma_ = std::numeric_limits<double>::quiet_NaN();
    }
    if (sigma == cached_sigma_) {
      std::swap(w_start_, w_end_);
    } else if (grid_) {
      grid_->point(sigma, first_sample_, w_start_);
    } else {
      interval_->point(sigma, first_sample_, w_start_, nullptr);
    }
    if (grid_)
      grid_->point(sigma_next, first_sample_, w_end_);
    else
      interval_->point(sigma_next, first_sample_, w_end_, nullptr);
    cached_sigma_ = sigma_next;
  }

  static constexpr Index kChunkElements = 2048;  // normals drawn per chunk by add(): 16 KiB

  NoiseKind kind_;
  mutable std::optional<BrownianInterval> interval_;
  mutable std::optional<BrownianGrid> grid_;
  StepNormals normals_;
  Index dims_;
  Index first_sample_;
  mutable Batch host_, w_start_, w_end_;
  mutable State z_;  // add()'s noise where it is not drawn by chunks
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
