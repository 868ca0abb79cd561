// The samplers' fused state updates give, bit for bit, what the separate passes they replace gave:
// SigmaNoise::add (noise drawn and added a chunk of rows at a time) against normal() followed by
// StateOps::update, for both noise kinds; karras_euler_step against karras_derivative + update;
// scale_then_update against scale + update. Shapes are chosen so that the chunks split rows
// unevenly, a chunk holds one row, and the values include signed zeros.
#include "solvers/diffusion/sampler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace diffode {
namespace {

Batch random_batch(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Batch b(rows, cols);
  for (Index i = 0; i < b.size(); ++i) b.data()[i] = normal(rng);
  // Signed zeros and exact values, where `0 + y` and `x + 0` are not no-ops.
  if (b.size() > 4) {
    b.data()[0] = -0.0;
    b.data()[1] = 0.0;
    b.data()[2] = 1.0;
    b.data()[3] = -0.0;
  }
  return b;
}

void expect_same_bits(const Batch& a, const Batch& b) {
  ASSERT_EQ(a.rows(), b.rows());
  ASSERT_EQ(a.cols(), b.cols());
  for (Index i = 0; i < a.size(); ++i)
    if (std::memcmp(a.data() + i, b.data() + i, sizeof(double)) != 0) {
      ADD_FAILURE() << "first difference at element " << i << ": " << a.data()[i] << " vs " << b.data()[i];
      return;
    }
}

struct Shape {
  Index rows, dims;
};
// 2048 normals per chunk: 128 rows of 16, 2 rows of 1000 (a short last chunk), 1 row of 3001.
const Shape kShapes[] = {{1, 1}, {7, 3}, {300, 16}, {129, 16}, {5, 1000}, {3, 3001}};

TEST(SigmaNoiseAdd, PerStepEqualsNormalThenUpdate) {
  for (const Shape& s : kShapes) {
    for (Index first : {Index{0}, Index{77}}) {
      const auto noise = SigmaNoise<Batch>::per_step(21, s.dims, first);
      for (std::size_t step : {std::size_t{0}, std::size_t{5}}) {
        const double scale = 0.37 * static_cast<double>(step + 1);
        Batch fused = random_batch(s.rows, s.dims, 3 + step), separate = fused, z;
        noise.add(step, 2.0, 1.0, fused, scale);
        noise.normal(step, 2.0, 1.0, separate, z);
        StateOps<Batch>::update(separate, separate, scale, {{1.0, z}});
        expect_same_bits(fused, separate);
        // normal() is the per-step source's fill, whatever the row count.
        Batch direct(s.rows, s.dims);
        StepNormals(21).fill(step, first, direct);
        expect_same_bits(z, direct);
      }
    }
  }
}

TEST(SigmaNoiseAdd, BrownianEqualsNormalThenUpdate) {
  const double grid[] = {80.0, 20.0, 3.0, 0.5, 0.01};
  for (const Shape& s : {Shape{33, 5}, Shape{4, 16}}) {
    const SigmaNoise<Batch> fused_noise(9, grid[0], s.dims, 11), separate_noise(9, grid[0], s.dims, 11);
    Batch fused = random_batch(s.rows, s.dims, 1), separate = fused, z;
    for (std::size_t i = 0; i + 1 < std::size(grid); ++i) {
      fused_noise.add(i, grid[i], grid[i + 1], fused, 0.5 + static_cast<double>(i));
      separate_noise.normal(i, grid[i], grid[i + 1], separate, z);
      StateOps<Batch>::update(separate, separate, 0.5 + static_cast<double>(i), {{1.0, z}});
      expect_same_bits(fused, separate);
    }
  }
}

TEST(FusedUpdates, KarrasEulerStepEqualsDerivativeThenUpdate) {
  for (const Shape& s : kShapes) {
    const Batch denoised = random_batch(s.rows, s.dims, 5);
    for (double sigma : {3.0, 0.7, 1e-3}) {
      const double h = -0.41 * sigma;
      Batch fused = random_batch(s.rows, s.dims, 6), separate = fused, d_unused, d;
      karras_euler_step(fused, sigma, denoised, h, d_unused);
      karras_derivative(separate, sigma, denoised, d);
      StateOps<Batch>::update(separate, separate, h, {{1.0, d}});
      expect_same_bits(fused, separate);
    }
  }
}

TEST(FusedUpdates, ScaleThenUpdateEqualsScaleThenUpdate) {
  for (const Shape& s : kShapes) {
    const Batch d0 = random_batch(s.rows, s.dims, 7), d1 = random_batch(s.rows, s.dims, 8), d2 = random_batch(s.rows, s.dims, 9);
    const double f = 0.83, h = -0.29;
    Batch a = random_batch(s.rows, s.dims, 10), b = a;
    scale_then_update(a, f, h, {{1.0, d0}});
    StateOps<Batch>::scale(b, f, b);
    StateOps<Batch>::update(b, b, h, {{1.0, d0}});
    expect_same_bits(a, b);
    scale_then_update(a, f, h, {{1.3, d0}, {-0.3, d1}});
    StateOps<Batch>::scale(b, f, b);
    StateOps<Batch>::update(b, b, h, {{1.3, d0}, {-0.3, d1}});
    expect_same_bits(a, b);
    scale_then_update(a, f, h, {{1.7, d0}, {-0.9, d1}, {0.2, d2}});
    StateOps<Batch>::scale(b, f, b);
    StateOps<Batch>::update(b, b, h, {{1.7, d0}, {-0.9, d1}, {0.2, d2}});
    expect_same_bits(a, b);
  }
}

}  // namespace
}  // namespace diffode
