// A Brownian path that can be asked for W(s, t) over any interval, per sample and dimension, and
// always answers the same: a virtual Brownian tree (Li et al. 2020, arXiv:2001.01328) over [t0, t1],
// bisected dyadically, whose every node draws its normals from a counter-based generator (Philox
// 4x32-10, Salmon et al. 2011, via Random123) keyed by (seed, sample, dimension, node). A value
// therefore depends on nothing but those keys: not on the grid that asks, the order of the queries,
// the thread that runs them, or the batch a sample sits in.
//
// Each node carries the increment W and the space-time Levy area H = (1/h) int (W_u - W_s) du - W/2
// of its interval; a bisection draws both halves from their exact joint law given the parent's
// (W, H) (two normals per split, Foster 2020, thesis, Thm 6.1.6). Below `max_depth`, the path is
// the conditional mean given the leaf's (W, H), a quadratic in time, so W(t) and its time integral
// are deterministic, continuous functions of t and every query is consistent with every other.
//
// Queries: point values W(t) and the primitive I(t) = int_{t0}^{t} W_u du; from them the increment
// W(s, t) = W(t) - W(s) and the space-time integral int_s^t (W_u - W_s) du (= I_(1,0) in Kloeden &
// Platen's notation, what SRA schemes need), for s < t or s > t (backward time) alike.
#pragma once

#include "core/state.hpp"

#include <cstdint>
#include <memory>

namespace diffode {

struct BrownianPathOptions {
  std::uint64_t seed = 0;
  double t0 = 0.0;        // the path lives on [min(t0,t1), max(t0,t1)]
  double t1 = 1.0;
  Index dims = 1;         // independent Brownian motions per sample
  int max_depth = 40;     // dyadic levels before the quadratic interpolation: leaf = |t1-t0| 2^-depth
};

class BrownianPath {
 public:
  explicit BrownianPath(BrownianPathOptions options);

  const BrownianPathOptions& options() const { return opts_; }
  Index dims() const { return opts_.dims; }

  // Rows of `out` are samples first_sample, first_sample+1, ...; columns the dims. `out` must
  // already have the batch's shape (rows x dims).
  // W(t) - W(s): the increment, negative-time intervals included.
  void increment(double s, double t, Index first_sample, Batch& out) const;
  // int_s^t (W_u - W_s) du, consistent with increment().
  void time_integral(double s, double t, Index first_sample, Batch& out) const;
  // Both at once (one tree descent per end point).
  void increment_and_time_integral(double s, double t, Index first_sample, Batch& dW, Batch& integral) const;

  // Point values for a batch: w = W(t) - W(t_lo) and, if `integral` is given, the primitive
  // int_{t_lo}^t (W_u - W_{t_lo}) du. A driver that walks a grid asks once per grid point and
  // differences (see increments_between), instead of descending the tree twice per step.
  void point(double t, Index first_sample, Batch& w, Batch* integral) const;
  // From two point values at s and t: dW = W(t) - W(s), integral = int_s^t (W_u - W_s) du.
  static void increments_between(double s, const Batch& w_s, const Batch* integral_s, double t, const Batch& w_t,
                                 const Batch* integral_t, Batch& dW, Batch* integral);

  // W(t) - W(t_lo) and int_{t_lo}^t (W_u - W_{t_lo}) du for one sample and dimension, where t_lo is
  // the left end of the path's interval: the building block of the queries above.
  struct Point {
    double w;         // W(t) - W(t_lo)
    double integral;  // int_{t_lo}^t (W_u - W_{t_lo}) du
  };
  Point at(double t, Index sample, Index dim) const;

 private:
  friend class BrownianInterval;
  struct Cache;
  void point_impl(double t, Index first_sample, Batch& w, Batch* integral, Cache* cache) const;

  BrownianPathOptions opts_;
  double lo_, hi_;
};

// A BrownianPath asked by one caller at a time, which keeps the state of the upper tree levels of its
// last query (every element's W and H of the node, and the path's values at the node's left end), as
// torchsde's BrownianInterval keeps the recently visited part of its tree (Kidger et al. 2021,
// arXiv:2105.13493, sec. 4). A query resumes from the deepest cached node whose interval holds its
// time, so a walk along a grid redraws only the levels below the node two neighbouring grid points
// share (about log2(span / step) levels are saved per query). The arithmetic from there on is the
// path's own, on the same operands: point() returns BrownianPath::point()'s bits in any query order.
// Not thread-safe (give each block its own); the cache holds 4 doubles per element per cached level.
class BrownianInterval {
 public:
  explicit BrownianInterval(BrownianPathOptions options, int cached_levels = 24);
  ~BrownianInterval();
  BrownianInterval(BrownianInterval&&) noexcept;
  BrownianInterval& operator=(BrownianInterval&&) noexcept;

  const BrownianPath& path() const { return path_; }
  Index dims() const { return path_.dims(); }
  // As BrownianPath::point.
  void point(double t, Index first_sample, Batch& w, Batch* integral);

 private:
  BrownianPath path_;
  std::unique_ptr<BrownianPath::Cache> cache_;
};

}  // namespace diffode
