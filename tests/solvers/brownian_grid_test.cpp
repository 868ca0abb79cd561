// The Brownian-bridge tree on a grid (solvers/brownian_grid.hpp): its law by Monte Carlo, the
// nested-grid consistency strong errors rely on, independence of batch, block and query order, and
// the strong orders of Euler-Maruyama driven by it on nested grids.
//
// Monte-Carlo tolerances: with n independent draws, a sample mean of N(0, v) has sd sqrt(v / n), a
// sample variance relative sd sqrt(2 / n), a sample correlation of independent normals sd
// 1 / sqrt(n); every check allows 5 of those sds (a false failure about once in 10^6 per check).
#include "problems/geometric_brownian_motion.hpp"
#include "problems/ornstein_uhlenbeck.hpp"
#include "solvers/brownian_grid.hpp"
#include "solvers/diffusion/sampler.hpp"
#include "solvers/integrate.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "tests/support/convergence.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace diffode {
namespace {

// A Karras-type grid from 80 down to 0.002 (rho = 7): strongly non-uniform steps.
std::vector<double> karras(int steps) {
  std::vector<double> g;
  const double rho = 7, lo = std::pow(0.002, 1 / rho), hi = std::pow(80.0, 1 / rho);
  for (int i = 0; i <= steps; ++i) g.push_back(std::pow(hi + i / double(steps) * (lo - hi), rho));
  return g;
}

std::vector<double> every(const std::vector<double>& fine, std::size_t stride) {
  std::vector<double> g;
  for (std::size_t i = 0; i < fine.size(); i += stride) g.push_back(fine[i]);
  return g;
}

Batch point(BrownianGrid& path, double t, Index first, Index rows) {
  Batch w(rows, path.dims());
  path.point(t, first, w);
  return w;
}

double mean(const Eigen::ArrayXd& v) { return v.mean(); }
double variance(const Eigen::ArrayXd& v) { return (v - v.mean()).square().sum() / static_cast<double>(v.size() - 1); }
double correlation(const Eigen::ArrayXd& a, const Eigen::ArrayXd& b) {
  const Eigen::ArrayXd x = a - a.mean(), y = b - b.mean();
  return (x * y).sum() / std::sqrt(x.square().sum() * y.square().sum());
}

// Increment's mean 0 and variance |dt|, checked against the Monte-Carlo tolerances above.
void expect_increment_law(const Eigen::ArrayXd& dw, double dt, const std::string& what) {
  const double n = static_cast<double>(dw.size());
  EXPECT_LT(std::abs(mean(dw)), 5.0 * std::sqrt(std::abs(dt) / n)) << what;
  EXPECT_LT(std::abs(variance(dw) / std::abs(dt) - 1.0), 5.0 * std::sqrt(2.0 / n)) << what;
}

TEST(BrownianGrid, SkeletonIncrementsHaveTheBrownianLaw) {
  constexpr Index kRows = 20000, kDims = 2;
  const std::vector<double> grid = karras(13);  // 13 intervals: an uneven tree
  BrownianGrid path(7, grid, kDims);
  std::vector<Batch> w;
  for (double t : grid) w.push_back(point(path, t, 0, kRows));
  EXPECT_TRUE((w[0] == 0.0).all());
  const double n = kRows;
  for (std::size_t i = 1; i < grid.size(); ++i) {
    for (Index d = 0; d < kDims; ++d) {
      const Eigen::ArrayXd dw = w[i].col(d) - w[i - 1].col(d);
      expect_increment_law(dw, grid[i] - grid[i - 1], fmt::format("interval {} dim {}", i, d));
      // Disjoint increments (each earlier interval) and the other dimension: uncorrelated.
      for (std::size_t k = 1; k < i; ++k)
        EXPECT_LT(std::abs(correlation(dw, w[k].col(d) - w[k - 1].col(d))), 5.0 / std::sqrt(n)) << i << " vs " << k;
      if (d == 1) {
        EXPECT_LT(std::abs(correlation(dw, w[i].col(0) - w[i - 1].col(0))), 5.0 / std::sqrt(n)) << i;
      }
    }
  }
  // W over the whole span, and across several intervals at once.
  expect_increment_law(w.back().col(0), grid.back() - grid.front(), "whole span");
  expect_increment_law(w[9].col(1) - w[2].col(1), grid[9] - grid[2], "intervals 3..9");
}

TEST(BrownianGrid, InteriorPointsHaveTheBrownianLaw) {
  constexpr Index kRows = 20000;
  const std::vector<double> grid = karras(5);
  BrownianGrid path(8, grid, 1);
  const std::size_t i = 2;
  const double a = grid[i], b = grid[i + 1];
  // A dyadic midpoint, a quarter point and a time that is not dyadic: the pieces between them are
  // disjoint increments, each N(0, |dt|), pairwise uncorrelated.
  const std::vector<double> times = {a, a + 0.25 * (b - a), a + 0.5 * (b - a), a + 0.7 * (b - a), b};
  std::vector<Batch> w;
  for (double t : times) w.push_back(point(path, t, 0, kRows));
  std::vector<Eigen::ArrayXd> pieces;
  for (std::size_t k = 1; k < times.size(); ++k) {
    pieces.push_back(w[k].col(0) - w[k - 1].col(0));
    expect_increment_law(pieces.back(), times[k] - times[k - 1], fmt::format("piece {}", k));
  }
  for (std::size_t k = 0; k < pieces.size(); ++k)
    for (std::size_t l = 0; l < k; ++l) EXPECT_LT(std::abs(correlation(pieces[k], pieces[l])), 5.0 / std::sqrt(double(kRows))) << k << " " << l;
  // And the interior does not move the skeleton: the skeleton points as a fresh walk gives them.
  BrownianGrid fresh(8, grid, 1);
  EXPECT_TRUE((point(fresh, a, 0, kRows) == w.front()).all());
  EXPECT_TRUE((point(fresh, b, 0, kRows) == w.back()).all());
  // The same interior time asked again gives the same value.
  EXPECT_TRUE((point(path, times[3], 0, kRows) == w[3]).all());
}

// A grid that is every 2^k-th point of a finer one stops at the fine tree's nodes: the same W, bit
// for bit, at every coarse point; a coarse increment is the sum of the fine ones it spans.
TEST(BrownianGrid, NestedGridsSeeTheSamePath) {
  constexpr Index kRows = 16, kDims = 3;
  for (int coarse_steps : {5, 8, 10, 13}) {
    const std::vector<double> fine = karras(coarse_steps * 8);
    for (std::size_t stride : {2u, 4u, 8u}) {
      SCOPED_TRACE(fmt::format("{} coarse steps, stride {}", coarse_steps, stride));
      const std::vector<double> coarse = every(fine, stride);
      BrownianGrid fine_path(21, fine, kDims), coarse_path(21, coarse, kDims);
      Batch fine_sum = Batch::Zero(kRows, kDims);
      Batch w_prev = point(fine_path, fine[0], 0, kRows);
      for (std::size_t k = 1; k < fine.size(); ++k) {
        const Batch w = point(fine_path, fine[k], 0, kRows);
        fine_sum += w - w_prev;
        w_prev = w;
        if (k % stride == 0) {
          const Batch c = point(coarse_path, fine[k], 0, kRows);
          EXPECT_TRUE((c == w).all()) << "point " << k;
          EXPECT_LT((fine_sum - c).abs().maxCoeff(), 1e-12 * (1.0 + c.abs().maxCoeff())) << "point " << k;
        }
      }
    }
  }
}

// The samplers' view (SigmaNoise's grid kind, noise z = dW / sqrt|d sigma| per step): a coarse
// step's sqrt|d sigma| z is the sum of the fine steps' it spans, when the coarse grid is every 4th
// point of the fine one and each noise is built on its own grid.
TEST(BrownianGrid, SigmaNoiseOnNestedGridsSeesTheSamePath) {
  constexpr Index kRows = 8, kDims = 4;
  const std::vector<double> fine = karras(40), coarse = every(fine, 4);
  const auto fine_noise = SigmaNoise<Batch>::brownian_grid(9, fine, kDims, 3), coarse_noise = SigmaNoise<Batch>::brownian_grid(9, coarse, kDims, 3);
  const Batch like(kRows, kDims);
  Batch z, sum = Batch::Zero(kRows, kDims);
  for (std::size_t i = 0; i + 1 < fine.size(); ++i) {
    fine_noise.normal(i, fine[i], fine[i + 1], like, z);
    sum += z * std::sqrt(fine[i] - fine[i + 1]);
    if ((i + 1) % 4 == 0) {
      const std::size_t k = i / 4;
      coarse_noise.normal(k, coarse[k], coarse[k + 1], like, z);
      const Batch coarse_dw = z * std::sqrt(coarse[k] - coarse[k + 1]);
      EXPECT_LT((sum - coarse_dw).abs().maxCoeff(), 1e-12 * (1.0 + coarse_dw.abs().maxCoeff())) << "coarse step " << k;
      sum.setZero();
    }
  }
}

// add() forms and adds the grid kind's noise in one pass: the bits of normal() then update().
TEST(BrownianGrid, SigmaNoiseAddIsNormalThenUpdate) {
  const std::vector<double> grid = karras(6);
  const auto fused = SigmaNoise<Batch>::brownian_grid(4, grid, 3, 10), plain = SigmaNoise<Batch>::brownian_grid(4, grid, 3, 10);
  Batch x = Batch::Constant(7, 3, 0.3), y = x, z;
  for (std::size_t i = 0; i + 1 < grid.size(); ++i) {
    fused.add(i, grid[i], grid[i + 1], x, 0.7 + 0.1 * double(i));
    plain.normal(i, grid[i], grid[i + 1], y, z);
    StateOps<Batch>::update(y, y, 0.7 + 0.1 * double(i), {{1.0, z}});
    EXPECT_TRUE((x == y).all()) << "step " << i;
  }
  EXPECT_GT((x - 0.3).abs().maxCoeff(), 0.1);
}

TEST(BrownianGrid, DoesNotDependOnBatchBlocksOrQueryOrder) {
  constexpr Index kRows = 64, kDims = 5;  // odd dims: the last normal pair is half used
  const std::vector<double> grid = karras(12);
  std::vector<double> queries = grid;
  queries.push_back(grid[3] + 0.5 * (grid[4] - grid[3]));  // interior points too
  queries.push_back(grid[7] + 0.3 * (grid[8] - grid[7]));
  BrownianGrid whole_path(5, grid, kDims);
  std::vector<Batch> whole;
  for (double t : queries) whole.push_back(point(whole_path, t, 0, kRows));
  // Blocks of 8 rows, each with its own first sample, and one instance serving every block in turn.
  BrownianGrid shared(5, grid, kDims);
  for (Index first = 0; first < kRows; first += 8) {
    BrownianGrid own(5, grid, kDims);
    for (std::size_t q = 0; q < queries.size(); ++q) {
      const Batch expected = whole[q].middleRows(first, 8);
      EXPECT_TRUE((point(own, queries[q], first, 8) == expected).all()) << first << " " << q;
      EXPECT_TRUE((point(shared, queries[q], first, 8) == expected).all()) << first << " " << q;
    }
  }
  // Queries in shuffled order, several times over, on one instance.
  std::mt19937 rng(3);
  BrownianGrid shuffled(5, grid, kDims);
  std::vector<std::size_t> order(queries.size());
  std::iota(order.begin(), order.end(), 0);
  for (int round = 0; round < 4; ++round) {
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t q : order) EXPECT_TRUE((point(shuffled, queries[q], 0, kRows) == whole[q]).all()) << round << " " << q;
  }
  // Increments are differences of points; another seed is another path.
  Batch dw(kRows, kDims);
  shuffled.increment(grid[2], grid[9], 0, dw);
  EXPECT_TRUE((dw == whole[9] - whole[2]).all());
  BrownianGrid other(6, grid, kDims);
  EXPECT_GT((point(other, grid[9], 0, kRows) - whole[9]).abs().maxCoeff(), 1e-3);
}

TEST(BrownianGrid, IncreasingGridsAndRefusals) {
  const std::vector<double> up = testing::uniform_grid(0.0, 1.0, 6);
  BrownianGrid path(1, up, 2);
  const Batch w = point(path, 1.0, 0, 4);
  EXPECT_GT(w.abs().maxCoeff(), 0.0);
  EXPECT_THROW(point(path, 1.5, 0, 4), std::out_of_range);
  EXPECT_THROW(point(path, -0.1, 0, 4), std::out_of_range);
  EXPECT_THROW(BrownianGrid(1, std::vector<double>{0.0}, 1), std::invalid_argument);
  EXPECT_THROW(BrownianGrid(1, std::vector<double>{0.0, 0.5, 0.5, 1.0}, 1), std::invalid_argument);
  EXPECT_THROW(BrownianGrid(1, std::vector<double>{0.0, 0.5, 0.4}, 1), std::invalid_argument);
  EXPECT_THROW(BrownianGrid(1, up, 0), std::invalid_argument);
}

// --- Strong orders of Euler-Maruyama on nested grids of one skeleton --------------------------

constexpr Index kPaths = 200;

// Euler-Maruyama over `grid` (every stride-th point of the skeleton), driven by a BrownianGrid on
// that grid alone: nested-grid consistency makes it the skeleton's path.
template <class Problem>
Batch euler_maruyama(const Problem& problem, const Batch& x0, const std::vector<double>& grid, std::uint64_t seed) {
  BrownianGrid path(seed, grid, x0.cols());
  EulerMaruyama<Batch> stepper;
  Batch x = x0, w_prev(x0.rows(), x0.cols()), w_next(x0.rows(), x0.cols());
  path.point(grid[0], 0, w_prev);
  auto increments = [&](std::size_t, double, double t_next, Batch& dw, Batch*) {
    path.point(t_next, 0, w_next);
    dw = w_next - w_prev;
    std::swap(w_prev, w_next);
  };
  const auto stats = detail::integrate_sde(stepper, problem, std::span<const double>(grid), x, x0.cols(), increments, NoObserver{});
  EXPECT_FALSE(stats.failed) << stats.failure;
  return x;
}

double mean_error(const Batch& a, const Batch& b) { return (a - b).matrix().rowwise().norm().mean(); }

Batch initial(Index dims, double scale) {
  Batch x0(kPaths, dims);
  for (Index n = 0; n < kPaths; ++n)
    for (Index d = 0; d < dims; ++d) x0(n, d) = scale * (0.5 + 0.25 * d + 0.5 * static_cast<double>(n % 5) / 4.0);
  return x0;
}

template <class Problem>
double fitted(const Problem& problem, const Batch& x0, const std::vector<double>& skeleton, const std::vector<std::size_t>& strides,
              const Batch& reference, std::uint64_t seed) {
  std::vector<double> h, error;
  for (std::size_t stride : strides) {
    const std::vector<double> grid = every(skeleton, stride);
    h.push_back(std::abs(grid[1] - grid[0]));
    error.push_back(mean_error(euler_maruyama(problem, x0, grid, seed), reference));
  }
  std::string s;
  for (std::size_t i = 0; i < h.size(); ++i) s += fmt::format(" h={:.3g}: {:.3e};", h[i], error[i]);
  const double order = testing::fitted_order(h, error);
  fmt::print("   {} slope {:.3f}\n", s, order);
  return order;
}

// Multiplicative noise (GBM, Ito): strong order 1/2 against the exact solution from W(1), which
// every grid of the skeleton shares (the root's end).
TEST(BrownianGrid, EulerMaruyamaIsHalfOrderOnGbm) {
  const GeometricBrownianMotion gbm(0.5, 0.6, Calculus::ito);
  const std::vector<double> skeleton = testing::uniform_grid(0.0, 1.0, 512);
  const Batch x0 = initial(2, 1.0);
  BrownianGrid path(11, skeleton, 2);
  Batch dw(kPaths, 2);
  path.increment(0.0, 1.0, 0, dw);
  const double order = fitted(gbm, x0, skeleton, {32, 16, 8, 4, 2, 1}, gbm.exact(x0, 0.0, 1.0, dw), 11);
  EXPECT_NEAR(order, 0.5, 0.2);
}

// Additive noise (Ornstein-Uhlenbeck): strong order 1, against Euler-Maruyama on the whole
// skeleton (4096 steps; its own error is about 1/32 of the smallest error fitted, h = 1/128).
TEST(BrownianGrid, EulerMaruyamaIsFirstOrderOnOrnsteinUhlenbeck) {
  const OrnsteinUhlenbeck ou{1.5, 0.5, 0.8};
  for (const bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward in time" : "forward");
    const std::vector<double> skeleton = backward ? testing::uniform_grid(1.0, 0.0, 4096) : testing::uniform_grid(0.0, 1.0, 4096);
    const Batch x0 = initial(2, 2.0);
    const Batch reference = euler_maruyama(ou, x0, skeleton, 37);
    const double order = fitted(ou, x0, skeleton, {512, 256, 128, 64, 32}, reference, 37);
    EXPECT_NEAR(order, 1.0, 0.2);
  }
}

}  // namespace
}  // namespace diffode
