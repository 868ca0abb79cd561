#include "solvers/brownian_grid.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>

namespace diffode {

BrownianGrid::BrownianGrid(std::uint64_t seed, std::span<const double> skeleton, Index dims)
    : skeleton_normals_(seed, skeleton_stream), interior_normals_(seed, interior_stream), grid_(skeleton.begin(), skeleton.end()), dims_(dims) {
  if (dims < 1) throw std::invalid_argument("BrownianGrid: dims must be >= 1");
  if (grid_.size() < 2) throw std::invalid_argument("BrownianGrid: the skeleton needs at least two points");
  // Interior keys hold the interval index above 25 bits of dyadic node, below StepNormals' 2^56.
  if (grid_.size() - 1 >= (std::size_t{1} << 31)) throw std::invalid_argument("BrownianGrid: at most 2^31 - 1 skeleton intervals");
  decreasing_ = grid_[1] < grid_[0];
  for (std::size_t i = 0; i < grid_.size(); ++i) {
    if (!std::isfinite(grid_[i])) throw std::invalid_argument(fmt::format("BrownianGrid: skeleton point {} is not finite", i));
    if (i > 0 && !(decreasing_ ? grid_[i] < grid_[i - 1] : grid_[i] > grid_[i - 1]))
      throw std::invalid_argument(fmt::format("BrownianGrid: the skeleton is not strictly monotone at point {}", i));
  }
}

void BrownianGrid::bridge(const StepNormals& normals, std::uint64_t key, double ta, double tm, double tb, const Batch& wa, const Batch& wb,
                          Index first_sample, Batch& out) const {
  const Index rows = wa.rows();
  if (out.rows() != rows || out.cols() != dims_) out.resize(rows, dims_);
  normals.fill(key, first_sample, out);
  const double lambda = (tm - ta) / (tb - ta);
  const double sd = std::sqrt(std::abs(tm - ta) * std::abs(tb - tm) / std::abs(tb - ta));
  const double* a = wa.data();
  const double* b = wb.data();
  double* o = out.data();
  for (Index e = 0, n = rows * dims_; e < n; ++e) o[e] = a[e] + lambda * (b[e] - a[e]) + sd * o[e];
}

void BrownianGrid::reset(Index first_sample, Index rows) {
  levels_.clear();
  if (slots_.size() < 2) slots_.resize(2);
  slots_[0].setZero(rows, dims_);
  slots_[1].resize(rows, dims_);
  skeleton_normals_.fill(0, first_sample, slots_[1]);  // the root's end: key 0, below every node's heap number
  slots_[1] *= std::sqrt(std::abs(grid_.back() - grid_.front()));
  levels_.push_back({.a = 0, .b = grid_.size() - 1, .heap = 1, .wa = 0, .wb = 1});
  cached_first_ = first_sample;
  cached_rows_ = rows;
}

void BrownianGrid::point_at(std::size_t j, Index first_sample, Batch& w) {
  if (j >= grid_.size()) throw std::out_of_range(fmt::format("BrownianGrid: skeleton point {} of {}", j, grid_.size()));
  const Index rows = w.rows();
  if (first_sample != cached_first_ || rows != cached_rows_) reset(first_sample, rows);
  while (!(levels_.back().a <= j && j <= levels_.back().b)) levels_.pop_back();  // the root holds every j
  for (;;) {
    Level& level = levels_.back();
    if (j == level.a) {
      w = slots_[level.wa];
      return;
    }
    if (j == level.b) {
      w = slots_[level.wb];
      return;
    }
    // a < j < b, so b - a >= 2: split at a + the largest power of two below b - a.
    const std::size_t m = level.a + std::bit_floor(level.b - level.a - 1);
    const int slot = 2 + static_cast<int>(levels_.size() - 1);
    if (!level.split) {
      if (static_cast<int>(slots_.size()) <= slot) slots_.resize(slot + 1);
      bridge(skeleton_normals_, level.heap, grid_[level.a], grid_[m], grid_[level.b], slots_[level.wa], slots_[level.wb], first_sample, slots_[slot]);
      level.split = true;
    }
    const Level child = j <= m ? Level{.a = level.a, .b = m, .heap = 2 * level.heap, .wa = level.wa, .wb = slot}
                               : Level{.a = m, .b = level.b, .heap = 2 * level.heap + 1, .wa = slot, .wb = level.wb};
    levels_.push_back(child);
  }
}

long BrownianGrid::locate(double t, std::size_t& interval) {
  const std::size_t n = grid_.size();
  if (hint_ < n && grid_[hint_] == t) return static_cast<long>(hint_);
  if (hint_ + 1 < n && grid_[hint_ + 1] == t) return static_cast<long>(++hint_);
  const double lo = decreasing_ ? grid_.back() : grid_.front(), hi = decreasing_ ? grid_.front() : grid_.back();
  if (!(t >= lo && t <= hi)) throw std::out_of_range(fmt::format("BrownianGrid: t = {} outside the skeleton's [{}, {}]", t, lo, hi));
  // The first point not before t in the walking direction.
  const auto it = decreasing_ ? std::lower_bound(grid_.begin(), grid_.end(), t, std::greater<>{}) : std::lower_bound(grid_.begin(), grid_.end(), t);
  const std::size_t k = static_cast<std::size_t>(it - grid_.begin());
  if (*it == t) return static_cast<long>(hint_ = k);
  interval = k - 1;  // t strictly between points k - 1 and k (k >= 1: t is not the first point)
  return -1;
}

void BrownianGrid::point(double t, Index first_sample, Batch& w) {
  std::size_t i = 0;
  const long j = locate(t, i);
  if (j >= 0) {
    point_at(static_cast<std::size_t>(j), first_sample, w);
  } else {
    interior(i, t, first_sample, w);
  }
}

void BrownianGrid::interior(std::size_t i, double t, Index first_sample, Batch& w) {
  const Index rows = w.rows();
  ia_.resize(rows, dims_);
  ib_.resize(rows, dims_);
  point_at(i, first_sample, ia_);
  point_at(i + 1, first_sample, ib_);
  double ta = grid_[i], tb = grid_[i + 1];
  const std::uint64_t base = static_cast<std::uint64_t>(i) << (kInteriorDepth + 1);
  std::uint64_t heap = 1;
  for (int depth = 0; depth < kInteriorDepth; ++depth) {
    const double tm = ta + 0.5 * (tb - ta);
    bridge(interior_normals_, base | heap, ta, tm, tb, ia_, ib_, first_sample, ic_);
    if (tm == t) {
      w = ic_;
      return;
    }
    if ((tm - t) * (tm - ta) > 0) {  // t on ta's side of the midpoint: the left child
      std::swap(ib_, ic_);
      tb = tm;
      heap = 2 * heap;
    } else {
      std::swap(ia_, ic_);
      ta = tm;
      heap = 2 * heap + 1;
    }
  }
  // t strictly inside the cell [ta, tb] (heap in [2^depth, 2^(depth + 1))): its own normal.
  bridge(interior_normals_, base | heap, ta, t, tb, ia_, ib_, first_sample, w);
}

void BrownianGrid::increment(double s, double t, Index first_sample, Batch& dw) {
  is_.resize(dw.rows(), dims_);
  point(s, first_sample, is_);
  point(t, first_sample, dw);
  dw -= is_;
}

}  // namespace diffode
