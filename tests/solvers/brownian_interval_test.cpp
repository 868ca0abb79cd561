// BrownianInterval: the cached walk returns BrownianPath::point's bits for every query, whatever the
// order (sequential forward and backward along grids, random times, repeats, dyadic points and the
// ends), the block (first row, rows) and the number of cached levels.
#include "solvers/brownian.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace diffode {
namespace {

void expect_same_as_path(BrownianInterval& interval, const std::vector<double>& times, Index first_sample, Index rows, bool with_integral) {
  const BrownianPath& path = interval.path();
  Batch w(rows, path.dims()), w_ref(rows, path.dims()), i, i_ref;
  for (double t : times) {
    interval.point(t, first_sample, w, with_integral ? &i : nullptr);
    path.point(t, first_sample, w_ref, with_integral ? &i_ref : nullptr);
    for (Index r = 0; r < rows; ++r)
      for (Index d = 0; d < path.dims(); ++d) {
        ASSERT_EQ(w(r, d), w_ref(r, d)) << "t = " << t << " row " << r << " dim " << d;
        if (with_integral) ASSERT_EQ(i(r, d), i_ref(r, d)) << "t = " << t << " row " << r << " dim " << d;
      }
  }
}

std::vector<double> karras_like_grid(double sigma_max, int steps) {
  std::vector<double> g;
  const double rho = 7, lo = std::pow(0.002, 1 / rho), hi = std::pow(sigma_max, 1 / rho);
  for (int i = 0; i <= steps; ++i) g.push_back(std::pow(hi + i / double(steps) * (lo - hi), rho));
  g.push_back(0.0);
  return g;
}

TEST(BrownianInterval, SequentialGridsEqualThePathBitwise) {
  for (int depth : {40, 20}) {
    BrownianInterval interval({.seed = 3, .t0 = 80.0, .t1 = 0.0, .dims = 3, .max_depth = depth});
    std::vector<double> grid = karras_like_grid(80.0, 37);
    expect_same_as_path(interval, grid, 0, 300, true);  // 300 x 3: several blocks, a short last one
    std::reverse(grid.begin(), grid.end());               // then back up the same grid
    expect_same_as_path(interval, grid, 0, 300, true);
  }
  BrownianInterval uniform({.seed = 9, .t0 = 0.0, .t1 = 1.0, .dims = 2});
  std::vector<double> fine;
  for (int i = 0; i <= 1024; ++i) fine.push_back(i / 1024.0);  // dyadic points: descents end early
  expect_same_as_path(uniform, fine, 5, 64, true);
}

TEST(BrownianInterval, RandomOrderRepeatsAndEndsEqualThePathBitwise) {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> u(-2.0, 3.0);
  std::vector<double> times{-2.0, 3.0, 0.5, 0.5, 3.0, -2.0};
  for (int k = 0; k < 200; ++k) {
    const double t = u(rng);
    times.push_back(t);
    if (k % 7 == 0) times.push_back(t);                                          // a repeat
    if (k % 11 == 0) times.push_back(std::nextafter(t, 10.0));                   // a neighbour one ulp away
    if (k % 13 == 0) times.push_back(-2.0 + 5.0 * std::ldexp(double(k % 8 + 1), -4));  // dyadic
  }
  for (int cached : {0, 1, 5, 24, 60}) {
    BrownianInterval interval({.seed = 21, .t0 = -2.0, .t1 = 3.0, .dims = 4, .max_depth = 40}, cached);
    expect_same_as_path(interval, times, 0, 40, cached % 2 == 0);
  }
}

TEST(BrownianInterval, ChangingBlockRefreshesTheCache) {
  BrownianInterval interval({.seed = 2, .t0 = 0.0, .t1 = 1.0, .dims = 2});
  const std::vector<double> times{0.3, 0.31, 0.7};
  expect_same_as_path(interval, times, 0, 50, true);
  expect_same_as_path(interval, times, 10, 50, true);  // another first row
  expect_same_as_path(interval, times, 10, 7, false);  // fewer rows
  expect_same_as_path(interval, times, 0, 50, true);
  EXPECT_THROW(BrownianInterval({.seed = 1}, 61), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
