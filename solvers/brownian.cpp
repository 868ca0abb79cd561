#include "solvers/brownian.hpp"

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace diffode {
namespace {

// Two standard normals that depend only on (seed, node, sample, dim): one Philox4x32-10 block
// (128 random bits) through Box-Muller on two 64-bit uniforms.
struct NormalPair {
  double a, b;
};

inline NormalPair normals(std::uint64_t seed, std::uint64_t node, std::uint64_t sample, std::uint64_t dim) {
  using Philox = r123::Philox4x32;
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const Philox::ctr_type ctr = {{static_cast<std::uint32_t>(node), static_cast<std::uint32_t>(node >> 32),
                                 static_cast<std::uint32_t>(sample), static_cast<std::uint32_t>(dim)}};
  const Philox::ctr_type r = Philox{}(ctr, key);
  const auto z = r123::boxmuller((std::uint64_t{r[0]} << 32) | r[1], (std::uint64_t{r[2]} << 32) | r[3]);
  return {z.x, z.y};
}

// Node 0 draws the root's (W, H); node n >= 1 draws the normals that split node n into its
// children 2n and 2n + 1 (heap numbering, root = 1).
constexpr std::uint64_t kRootValues = 0;

}  // namespace

BrownianPath::BrownianPath(BrownianPathOptions options) : opts_(options) {
  lo_ = std::min(opts_.t0, opts_.t1);
  hi_ = std::max(opts_.t0, opts_.t1);
  if (!(hi_ > lo_)) throw std::invalid_argument(fmt::format("BrownianPath: empty interval [{}, {}]", opts_.t0, opts_.t1));
  if (opts_.dims < 1) throw std::invalid_argument("BrownianPath: dims must be >= 1");
  if (opts_.max_depth < 1 || opts_.max_depth > 60)
    throw std::invalid_argument(fmt::format("BrownianPath: max_depth must lie in 1..60, got {}", opts_.max_depth));
}

BrownianPath::Point BrownianPath::at(double t, Index sample, Index dim) const {
  const double span = hi_ - lo_;
  // A grid's last point may overshoot the interval by rounding; anything more is the caller's bug.
  const double slack = 1e-12 * span;
  if (!(t >= lo_ - slack && t <= hi_ + slack))
    throw std::out_of_range(fmt::format("BrownianPath: t = {} lies outside the path's interval [{}, {}]", t, lo_, hi_));
  t = std::clamp(t, lo_, hi_);

  const std::uint64_t seed = opts_.seed;
  const auto s = static_cast<std::uint64_t>(sample), d = static_cast<std::uint64_t>(dim);

  // The current node [a, b] = lo + span * [j, j+1] 2^-depth, with W and H of its interval and the
  // path's values at a (W(a) - W(lo) and int_lo^a (W_u - W_lo) du).
  const NormalPair root = normals(seed, kRootValues, s, d);
  double w = std::sqrt(span) * root.a;          // W over [a, b]
  double area = std::sqrt(span / 12.0) * root.b;  // space-time Levy area H over [a, b]
  double w_a = 0.0, integral_a = 0.0;
  double a = lo_, b = hi_;
  std::uint64_t node = 1, j = 0;
  for (int depth = 0;; ++depth) {
    const double h = b - a;
    if (t == a) return {w_a, integral_a};
    if (t == b) return {w_a + w, integral_a + w_a * h + h * (0.5 * w + area)};
    if (depth == opts_.max_depth) {
      // Leaf: the conditional mean of the path given (W, H), a quadratic in tau.
      const double tau = (t - a) / h;
      const double w_t = w_a + tau * w + 6.0 * tau * (1.0 - tau) * area;
      const double integral_t =
          integral_a + w_a * (t - a) + h * (0.5 * tau * tau * w + 6.0 * area * (0.5 * tau * tau - tau * tau * tau / 3.0));
      return {w_t, integral_t};
    }
    // Bisect: with k = h/2 and the halves' (W1, H1), (W2, H2) independent a priori,
    // W = W1 + W2 and H = (H1 + H2)/2 + (W1 - W2)/4. Given (W, H): d = W1 - W2 ~ 3H + sqrt(k/2) Z1,
    // S = H1 + H2 = 2H - d/2, e = H1 - H2 ~ sqrt(k/6) Z2 (W is independent of d, S and e).
    const double k = 0.5 * h;
    const NormalPair z = normals(seed, node, s, d);
    const double diff = 3.0 * area + std::sqrt(0.5 * k) * z.a;
    const double sum_area = 2.0 * area - 0.5 * diff;
    const double diff_area = std::sqrt(k / 6.0) * z.b;
    const double w_left = 0.5 * (w + diff), w_right = 0.5 * (w - diff);
    const double area_left = 0.5 * (sum_area + diff_area), area_right = 0.5 * (sum_area - diff_area);
    // Children's ends from their dyadic index, so every query computes the same numbers.
    j *= 2;
    const double m = lo_ + span * std::ldexp(static_cast<double>(j + 1), -(depth + 1));
    if (t < m) {
      node = 2 * node;
      b = m;
      w = w_left;
      area = area_left;
    } else {
      integral_a += w_a * k + k * (0.5 * w_left + area_left);
      w_a += w_left;
      node = 2 * node + 1;
      ++j;
      a = m;
      w = w_right;
      area = area_right;
    }
  }
}

void BrownianPath::point(double t, Index first_sample, Batch& w, Batch* integral) const {
  if (w.cols() != opts_.dims)
    throw std::invalid_argument(fmt::format("BrownianPath: the output has {} columns, the path {} dims", w.cols(), opts_.dims));
  if (integral) integral->resize(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c = 0; c < w.cols(); ++c) {
      const Point p = at(t, first_sample + r, c);
      w(r, c) = p.w;
      if (integral) (*integral)(r, c) = p.integral;
    }
  }
}

void BrownianPath::increments_between(double s, const Batch& w_s, const Batch* integral_s, double t, const Batch& w_t,
                                      const Batch* integral_t, Batch& dW, Batch* integral) {
  dW = w_t - w_s;
  // int_s^t (W_u - W_s) du = I(t) - I(s) - (W(s) - W(lo)) (t - s), valid for t < s as well.
  if (integral) *integral = *integral_t - *integral_s - w_s * (t - s);
}

void BrownianPath::increment(double s, double t, Index first_sample, Batch& out) const {
  Batch w_s(out.rows(), out.cols()), w_t(out.rows(), out.cols());
  point(s, first_sample, w_s, nullptr);
  point(t, first_sample, w_t, nullptr);
  out = w_t - w_s;
}

void BrownianPath::time_integral(double s, double t, Index first_sample, Batch& out) const {
  Batch dW(out.rows(), out.cols());
  increment_and_time_integral(s, t, first_sample, dW, out);
}

void BrownianPath::increment_and_time_integral(double s, double t, Index first_sample, Batch& dW, Batch& integral) const {
  Batch w_s(dW.rows(), dW.cols()), w_t(dW.rows(), dW.cols()), i_s, i_t;
  point(s, first_sample, w_s, &i_s);
  point(t, first_sample, w_t, &i_t);
  increments_between(s, w_s, &i_s, t, w_t, &i_t, dW, &integral);
}

}  // namespace diffode
