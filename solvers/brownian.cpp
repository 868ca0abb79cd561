#include "solvers/brownian.hpp"

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

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

// t clamped to [lo, hi]. A grid's last point may overshoot the interval by rounding; anything more
// is the caller's bug.
double checked_time(double t, double lo, double hi) {
  const double slack = 1e-12 * (hi - lo);
  if (!(t >= lo - slack && t <= hi + slack))
    throw std::out_of_range(fmt::format("BrownianPath: t = {} lies outside the path's interval [{}, {}]", t, lo, hi));
  return std::clamp(t, lo, hi);
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
  t = checked_time(t, lo_, hi_);

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

namespace {

// ---- The batched query -------------------------------------------------------------------------
// at() descends the tree once per (sample, dim), but where a descent goes depends on t alone: every
// element of a query visits the same nodes, takes the same children, splits intervals of the same
// lengths and ends in the same terminal case. point() therefore walks the geometry once (Descent)
// and then runs only the per-element arithmetic, over blocks of kBlock elements level by level:
// Philox vectorised across elements, the Box-Muller library calls back to back (sincos in
// sorted order, see normals_block), the square roots and the split arithmetic two elements per
// instruction. Every floating-point operation is one at() performs, in the same order on the same
// operands (a level's constants such as sqrt(k/2) are the same double whether computed once or per
// element), so point() returns at()'s bits, given no fast-math and no FMA contraction (x86-64's
// baseline has no FMA; a -march=native build needs -ffp-contract=off to keep any of these bits).
// tests/solvers/brownian_regression_test.cpp holds point() to values recorded from the former
// per-element implementation and to at() element by element.

// One bisection on the way down.
struct Level {
  std::uint64_t node;  // the node split here (heap numbering), its normals' counter
  double k;            // half the node's length
  double sqrt_half_k;  // sqrt(0.5 k): the spread of W1 - W2 given (W, H)
  double sqrt_k_6;     // sqrt(k / 6): the spread of H1 - H2
  bool right;          // t lies in the right child
};

// How the descent ends: t at the node's left end, at its right end, or inside a leaf.
enum class Terminal { kAtLeft, kAtRight, kLeaf };

struct Descent {
  int levels = 0;
  Level level[60];  // max_depth <= 60 bisections
  Terminal end = Terminal::kAtLeft;
  double h = 0;          // the final node's length
  double t_minus_a = 0;  // leaf: t - a
  double tau = 0;        // leaf: (t - a) / h
};

// at()'s loop without the values (t already clamped to [lo, hi]): the same comparisons on the same
// doubles, hence the same path.
Descent descend(double t, double lo, double hi, int max_depth) {
  const double span = hi - lo;
  Descent g;
  double a = lo, b = hi;
  std::uint64_t node = 1, j = 0;
  for (int depth = 0;; ++depth) {
    const double h = b - a;
    g.h = h;
    if (t == a) {
      g.end = Terminal::kAtLeft;
      return g;
    }
    if (t == b) {
      g.end = Terminal::kAtRight;
      return g;
    }
    if (depth == max_depth) {
      g.end = Terminal::kLeaf;
      g.t_minus_a = t - a;
      g.tau = (t - a) / h;
      return g;
    }
    const double k = 0.5 * h;
    Level& level = g.level[g.levels++];
    level.node = node;
    level.k = k;
    level.sqrt_half_k = std::sqrt(0.5 * k);
    level.sqrt_k_6 = std::sqrt(k / 6.0);
    j *= 2;
    const double m = lo + span * std::ldexp(static_cast<double>(j + 1), -(depth + 1));
    level.right = !(t < m);
    if (level.right) {
      node = 2 * node + 1;
      ++j;
      a = m;
    } else {
      node = 2 * node;
      b = m;
    }
  }
}

// Elements per block: enough for the sorted sincos calls below to run in long same-branch runs,
// few enough that a block's state (W, H, W(a), I(a) and the normals) stays in L1.
constexpr int kBlock = 128;

// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3",
// SC'11, sec. 3.3) for a block of counters (node, node >> 32, sample, dim) under one key;
// bit-identical to r123::Philox4x32 (the regression test compares with at(), which calls
// Random123). Round r uses the key bumped r times by the Weyl constants and maps (x0, x1, x2, x3) to
// (hi(M1 x2) ^ x1 ^ k0, lo(M1 x2), hi(M0 x0) ^ x3 ^ k1, lo(M0 x0)). Written as a loop over elements
// with the rounds unrolled inside and both factors of each product visibly 32-bit, which GCC 12
// vectorises at -O3 as widening multiplies (pmuludq, four elements per SSE2 register; checked with
// -fopt-info-vec). r123's own round function, called per element, is not vectorised.
constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;

struct PhiloxKeys {
  std::uint32_t k0[10], k1[10];
  explicit PhiloxKeys(std::uint64_t seed) {
    std::uint32_t a = static_cast<std::uint32_t>(seed), b = static_cast<std::uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r, a += 0x9E3779B9u, b += 0xBB67AE85u) {
      k0[r] = a;
      k1[r] = b;
    }
  }
};

// The four Philox output words of each element of a block.
inline void philox_block(const PhiloxKeys& key, std::uint64_t node, const std::uint32_t* sample,
                         const std::uint32_t* dim, std::uint32_t* c0, std::uint32_t* c1, std::uint32_t* c2, std::uint32_t* c3) {
  const std::uint32_t node_lo = static_cast<std::uint32_t>(node), node_hi = static_cast<std::uint32_t>(node >> 32);
  for (int i = 0; i < kBlock; ++i) {
    std::uint32_t x0 = node_lo, x1 = node_hi, x2 = sample[i], x3 = dim[i];
    for (int r = 0; r < 10; ++r) {
      const std::uint64_t p0 = std::uint64_t{kPhiloxM0} * x0, p1 = std::uint64_t{kPhiloxM1} * x2;
      x0 = static_cast<std::uint32_t>(p1 >> 32) ^ x1 ^ key.k0[r];
      x1 = static_cast<std::uint32_t>(p1);
      x2 = static_cast<std::uint32_t>(p0 >> 32) ^ x3 ^ key.k1[r];
      x3 = static_cast<std::uint32_t>(p0);
    }
    c0[i] = x0;
    c1[i] = x1;
    c2[i] = x2;
    c3[i] = x3;
  }
}

// Two standard normals per element, as normals() draws them: Philox, then r123::boxmuller taken
// apart into passes over the block (r123's own uneg11, u01 and sincospi, the C library's log and
// sqrt: the same operations on the same operands), so one element's calls no longer wait for the
// previous one's, and the sqrt and products run two elements per instruction. log and sincos stay
// the scalar library calls: a vector math library would not reproduce their bits.
//
// glibc's sincos takes a different branch by argument range (a small argument goes straight to the
// polynomial, a larger one is first reduced by pi/2 and its quadrant chosen); on uniform random
// arguments these branches mispredict, which measured here doubles its cost (25 ns per call in
// random order, 11 ns sorted). So the calls are made in order of the argument, bucketed into
// kSincosBins equal bins of (-1, 1): neighbours then take the same branches. A call's result
// depends on its argument alone, so the order changes no bits.
constexpr int kSincosBins = 32;

inline void normals_block(const PhiloxKeys& key, std::uint64_t node, const std::uint32_t* sample,
                          const std::uint32_t* dim, int n, double* za, double* zb) {
  std::uint32_t c0[kBlock], c1[kBlock], c2[kBlock], c3[kBlock];
  philox_block(key, node, sample, dim, c0, c1, c2, c3);
  double angle[kBlock], sin_part[kBlock], cos_part[kBlock], log_u[kBlock];
  int bin[kBlock], start[kSincosBins + 1] = {}, order[kBlock];
  for (int i = 0; i < n; ++i) {
    angle[i] = r123::uneg11<double>((std::uint64_t{c0[i]} << 32) | c1[i]);
    bin[i] = std::min(kSincosBins - 1, static_cast<int>((angle[i] + 1.0) * (0.5 * kSincosBins)));
    ++start[bin[i] + 1];
  }
  for (int b = 0; b < kSincosBins; ++b) start[b + 1] += start[b];
  for (int i = 0; i < n; ++i) order[start[bin[i]]++] = i;
  for (int o = 0; o < n; ++o) {
    const int i = order[o];
    r123::sincospi(angle[i], &sin_part[i], &cos_part[i]);
  }
  for (int i = 0; i < n; ++i) log_u[i] = std::log(r123::u01<double>((std::uint64_t{c2[i]} << 32) | c3[i]));
  // A short last block's tail is never read back; these values keep its arithmetic defined.
  for (int i = n; i < kBlock; ++i) log_u[i] = sin_part[i] = cos_part[i] = 0.0;
#if defined(__SSE2__)
  // std::sqrt may set errno, which keeps GCC from vectorising it; sqrtpd rounds exactly as the
  // scalar sqrtsd does (IEEE 754 correctly rounded square root), and -2 log u >= 0 here.
  const __m128d minus_two = _mm_set1_pd(-2.);
  for (int i = 0; i < kBlock; i += 2) {
    const __m128d radius = _mm_sqrt_pd(_mm_mul_pd(minus_two, _mm_loadu_pd(log_u + i)));
    _mm_storeu_pd(za + i, _mm_mul_pd(_mm_loadu_pd(sin_part + i), radius));
    _mm_storeu_pd(zb + i, _mm_mul_pd(_mm_loadu_pd(cos_part + i), radius));
  }
#else
  for (int i = 0; i < kBlock; ++i) {
    const double radius = std::sqrt(-2. * log_u[i]);
    za[i] = sin_part[i] * radius;
    zb[i] = cos_part[i] * radius;
  }
#endif
}

}  // namespace

// A BrownianInterval's memory: for levels 0 .. levels-1 of its last descent, the node split there
// and every element's state on arriving at it (W and H of the node, the path's values at its left
// end), level-major: [l * count + e].
struct BrownianPath::Cache {
  int cached_levels = 0;
  Index first_sample = -1, count = -1;
  int levels = 0;
  std::uint64_t node[60] = {};
  std::vector<double> wn, area, w_a, integral_a;
};

void BrownianPath::point(double t, Index first_sample, Batch& w, Batch* integral) const { point_impl(t, first_sample, w, integral, nullptr); }

void BrownianPath::point_impl(double t, Index first_sample, Batch& w, Batch* integral, Cache* cache) const {
  if (w.cols() != opts_.dims)
    throw std::invalid_argument(fmt::format("BrownianPath: the output has {} columns, the path {} dims", w.cols(), opts_.dims));
  if (integral) integral->resize(w.rows(), w.cols());
  const double span = hi_ - lo_;
  t = checked_time(t, lo_, hi_);

  const Descent g = descend(t, lo_, hi_, opts_.max_depth);
  const PhiloxKeys key(opts_.seed);
  const double root_w_scale = std::sqrt(span), root_area_scale = std::sqrt(span / 12.0);
  // Leaf constants, grouped as at() groups them: 6 tau (1 - tau), 0.5 tau^2, 0.5 tau^2 - tau^3 / 3.
  const double tau = g.tau;
  const double leaf_area_w = 6.0 * tau * (1.0 - tau);
  const double half_tau2 = 0.5 * tau * tau;
  const double leaf_area_i = 0.5 * tau * tau - tau * tau * tau / 3.0;

  // Batch is row-major: element e is (row e / dims, dim e % dims).
  const Index dims = opts_.dims, count = w.rows() * dims;

  // With a cache: the deepest level whose node the last descent split too (its state is stored),
  // and how many levels of this descent to store.
  int resume = -1, store = 0;
  if (cache) {
    if (cache->first_sample != first_sample || cache->count != count) {
      cache->first_sample = first_sample;
      cache->count = count;
      cache->levels = 0;
      const std::size_t size = static_cast<std::size_t>(cache->cached_levels) * static_cast<std::size_t>(count);
      for (auto* v : {&cache->wn, &cache->area, &cache->w_a, &cache->integral_a}) v->assign(size, 0.0);
    }
    while (resume + 1 < std::min(cache->levels, g.levels) && cache->node[resume + 1] == g.level[resume + 1].node) ++resume;
    store = std::min(g.levels, cache->cached_levels);
  }

  double* w_out = w.data();
  double* i_out = integral ? integral->data() : nullptr;
  for (Index e0 = 0; e0 < count; e0 += kBlock) {
    const int n = static_cast<int>(std::min<Index>(kBlock, count - e0));
    std::uint32_t sample[kBlock] = {}, dim[kBlock] = {};  // a short last block's tail draws unused normals
    for (int i = 0; i < n; ++i) {
      const Index e = e0 + i;
      sample[i] = static_cast<std::uint32_t>(static_cast<std::uint64_t>(first_sample + e / dims));
      dim[i] = static_cast<std::uint32_t>(static_cast<std::uint64_t>(e % dims));
    }
    // Per element: W and H of the current node, and the path's values at its left end.
    double wn[kBlock], area[kBlock], w_a[kBlock] = {}, integral_a[kBlock] = {}, za[kBlock], zb[kBlock];
    if (resume >= 0) {
      const std::size_t at = static_cast<std::size_t>(resume) * static_cast<std::size_t>(count) + static_cast<std::size_t>(e0);
      for (int i = 0; i < kBlock; ++i) {
        const bool in = i < n;  // the tail's values are never read back
        wn[i] = in ? cache->wn[at + i] : 0.0;
        area[i] = in ? cache->area[at + i] : 0.0;
        w_a[i] = in ? cache->w_a[at + i] : 0.0;
        integral_a[i] = in ? cache->integral_a[at + i] : 0.0;
      }
    } else {
      normals_block(key, kRootValues, sample, dim, n, za, zb);
      for (int i = 0; i < kBlock; ++i) {
        wn[i] = root_w_scale * za[i];
        area[i] = root_area_scale * zb[i];
      }
    }
    for (int l = std::max(resume, 0); l < g.levels; ++l) {
      if (l > resume && l < store) {
        const std::size_t at = static_cast<std::size_t>(l) * static_cast<std::size_t>(count) + static_cast<std::size_t>(e0);
        std::copy(wn, wn + n, cache->wn.begin() + at);
        std::copy(area, area + n, cache->area.begin() + at);
        std::copy(w_a, w_a + n, cache->w_a.begin() + at);
        std::copy(integral_a, integral_a + n, cache->integral_a.begin() + at);
      }
      const Level& lv = g.level[l];
      normals_block(key, lv.node, sample, dim, n, za, zb);
      // The split of at(), term by term.
      if (lv.right) {
        for (int i = 0; i < kBlock; ++i) {
          const double diff = 3.0 * area[i] + lv.sqrt_half_k * za[i];
          const double sum_area = 2.0 * area[i] - 0.5 * diff;
          const double diff_area = lv.sqrt_k_6 * zb[i];
          const double w_left = 0.5 * (wn[i] + diff), w_right = 0.5 * (wn[i] - diff);
          const double area_left = 0.5 * (sum_area + diff_area), area_right = 0.5 * (sum_area - diff_area);
          integral_a[i] += w_a[i] * lv.k + lv.k * (0.5 * w_left + area_left);
          w_a[i] += w_left;
          wn[i] = w_right;
          area[i] = area_right;
        }
      } else {
        for (int i = 0; i < kBlock; ++i) {
          const double diff = 3.0 * area[i] + lv.sqrt_half_k * za[i];
          const double sum_area = 2.0 * area[i] - 0.5 * diff;
          const double diff_area = lv.sqrt_k_6 * zb[i];
          wn[i] = 0.5 * (wn[i] + diff);
          area[i] = 0.5 * (sum_area + diff_area);
        }
      }
    }
    for (int i = 0; i < n; ++i) {
      double w_t, integral_t;
      switch (g.end) {
        case Terminal::kAtLeft:
          w_t = w_a[i];
          integral_t = integral_a[i];
          break;
        case Terminal::kAtRight:
          w_t = w_a[i] + wn[i];
          integral_t = integral_a[i] + w_a[i] * g.h + g.h * (0.5 * wn[i] + area[i]);
          break;
        case Terminal::kLeaf:
        default:
          w_t = w_a[i] + tau * wn[i] + leaf_area_w * area[i];
          integral_t = integral_a[i] + w_a[i] * g.t_minus_a + g.h * (half_tau2 * wn[i] + 6.0 * area[i] * leaf_area_i);
          break;
      }
      w_out[e0 + i] = w_t;
      if (i_out) i_out[e0 + i] = integral_t;
    }
  }
  if (cache) {
    for (int l = 0; l < store; ++l) cache->node[l] = g.level[l].node;
    cache->levels = store;
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

BrownianInterval::BrownianInterval(BrownianPathOptions options, int cached_levels)
    : path_(options), cache_(std::make_unique<BrownianPath::Cache>()) {
  if (cached_levels < 0 || cached_levels > 60)
    throw std::invalid_argument(fmt::format("BrownianInterval: cached_levels must lie in 0..60, got {}", cached_levels));
  cache_->cached_levels = cached_levels;
}
BrownianInterval::~BrownianInterval() = default;
BrownianInterval::BrownianInterval(BrownianInterval&&) noexcept = default;
BrownianInterval& BrownianInterval::operator=(BrownianInterval&&) noexcept = default;

void BrownianInterval::point(double t, Index first_sample, Batch& w, Batch* integral) {
  path_.point_impl(t, first_sample, w, integral, cache_.get());
}

}  // namespace diffode
