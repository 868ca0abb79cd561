// A Brownian path built on the points of a fixed grid (its skeleton) t_0, ..., t_N: a Brownian-bridge
// tree in index space, whose every split point is a grid point. W(t_0) = 0; the root draws
// W(t_N) ~ N(0, |t_N - t_0|); a node over the index range [a, b] with b - a >= 2 splits at
// m = a + p, p the largest power of two below b - a, drawing W(t_m) from its exact law given the
// ends (Levy's construction of Brownian motion, the Brownian bridge; e.g. Karatzas & Shreve 1991,
// sec. 2.3; Glasserman 2003, "Monte Carlo Methods in Financial Engineering", sec. 3.1.2):
//
//   W(t_m) | W(t_a), W(t_b) ~ N(W(t_a) + (t_m - t_a)/(t_b - t_a) (W(t_b) - W(t_a)),
//                               |t_m - t_a| |t_b - t_m| / |t_b - t_a|).
//
// Its children are [a, m] and [m, b]; the nodes are numbered as a heap (root 1, children 2h and
// 2h + 1), and the normals of node h are the per-step source's (StepNormals, solvers/noise.hpp) at
// step h of their own stream, keyed by (seed, sample, dim): a value depends on its keys alone, not
// on the batch split, a block's first row, the thread or the order of the queries.
//
// Nested grids. The split offset is scale-free: for b - a = 2^k n (n >= 2) it is 2^k times the
// offset of n. So the tree of a grid that is every 2^k-th point of a finer one is the finer tree's
// top, node for node under the same heap numbers; given the same time values at those points the
// coarse grid's W are the fine grid's, bit for bit (the same operands in the same order), and a
// coarse increment is the sum of the fine increments it spans, to round-off. Grids that do not nest
// that way (two Karras grids of 10 and 1000 steps) see unrelated paths: use the virtual Brownian
// tree (brownian.hpp) there.
//
// Walking the grid in order, the nodes on the path from the root to the last query are kept with
// their drawn midpoints, so each node is drawn once per walk: N normals per element for the N + 1
// grid points: one fill of the per-step source and a few flops per element per step, amortised.
//
// Points strictly inside a skeleton interval (t_i, t_{i+1}) (the stage points of Heun- or SRA-type
// steppers) bisect that interval in time, dyadically, each midpoint drawn from the bridge law given
// its ends with a normal keyed by (interval i, the dyadic node): exact in law at every dyadic point.
// A query stops at the first midpoint equal to its time, else after `kInteriorDepth` levels, inside
// a cell of 2^-kInteriorDepth of the interval, where W(t) is the bridge draw given the cell's ends
// with the cell's own normal: exact in law at that t (its marginal given the cell's ends), though two
// times inside one such cell share that normal. Interior points are the path of this grid only, not
// of finer ones, and each costs a descent (not cached).
#pragma once

#include "core/state.hpp"
#include "solvers/noise.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace diffode {

class BrownianGrid {
 public:
  static constexpr std::uint32_t skeleton_stream = 3;  // StepNormals streams (0-2 are the samplers')
  static constexpr std::uint32_t interior_stream = 4;
  static constexpr int kInteriorDepth = 24;

  // The skeleton: at least two points, strictly monotone (either direction), finite.
  BrownianGrid(std::uint64_t seed, std::span<const double> skeleton, Index dims);

  Index dims() const { return dims_; }
  const std::vector<double>& skeleton() const { return grid_; }

  // w = W(t) - W(t_0) for rows first_sample, first_sample + 1, ... (w's rows), t on the skeleton's
  // span. Not thread-safe (the walk's cache): one instance per block.
  void point(double t, Index first_sample, Batch& w);
  // The same at skeleton point j (0..N).
  void point_at(std::size_t j, Index first_sample, Batch& w);
  // dw = W(t) - W(s).
  void increment(double s, double t, Index first_sample, Batch& dw);

 private:
  struct Level {
    std::size_t a, b;
    std::uint64_t heap;
    int wa, wb;  // slots of W(t_a), W(t_b)
    bool split = false;  // its midpoint (slot 2 + depth) drawn
  };
  void reset(Index first_sample, Index rows);
  // Index of t on the skeleton, or -1 with `interval` set to i for t in (t_i, t_{i+1}).
  long locate(double t, std::size_t& interval);
  void interior(std::size_t i, double t, Index first_sample, Batch& w);
  // out = wa + (tm - ta)/(tb - ta) (wb - wa) + sqrt(|tm - ta||tb - tm|/|tb - ta|) z, z drawn into out.
  void bridge(const StepNormals& normals, std::uint64_t key, double ta, double tm, double tb, const Batch& wa, const Batch& wb, Index first_sample,
              Batch& out) const;

  StepNormals skeleton_normals_, interior_normals_;
  std::vector<double> grid_;
  Index dims_;
  bool decreasing_;
  std::vector<Level> levels_;
  std::vector<Batch> slots_;  // 0: W(t_0) = 0, 1: W(t_N), 2 + d: the midpoint of level d
  Index cached_first_ = -1, cached_rows_ = -1;
  std::size_t hint_ = 0;
  Batch ia_, ib_, ic_;  // interior descent
  Batch is_;            // increment's start
};

}  // namespace diffode
