// Per-step noise: the batched Philox equals Random123's, the polynomial Box-Muller equals the
// library's log/sin/cos to a few ulp, values are independent of batch split, first row and threads
// (bitwise), and the draws have the right moments across samples, dimensions and steps (fixed
// seeds, tolerances of several standard errors), including StepIncrements' joint law of dW and its
// time integral.
#include "solvers/noise.hpp"

#include <Random123/philox.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace diffode {
namespace {

TEST(PhiloxBlock, EqualsRandom123) {
  std::mt19937_64 rng(4);
  for (int trial = 0; trial < 20; ++trial) {
    const std::uint64_t key = rng();
    const std::uint32_t w0 = static_cast<std::uint32_t>(rng()), w1 = static_cast<std::uint32_t>(rng());
    std::uint32_t c2[37], c3[37], o0[37], o1[37], o2[37], o3[37];
    for (int i = 0; i < 37; ++i) {
      c2[i] = static_cast<std::uint32_t>(rng());
      c3[i] = static_cast<std::uint32_t>(rng());
    }
    detail::philox4x32_block(key, w0, w1, c2, c3, 37, o0, o1, o2, o3);
    for (int i = 0; i < 37; ++i) {
      const r123::Philox4x32::ctr_type r =
          r123::Philox4x32{}({{w0, w1, c2[i], c3[i]}}, {{static_cast<std::uint32_t>(key), static_cast<std::uint32_t>(key >> 32)}});
      EXPECT_EQ(o0[i], r[0]);
      EXPECT_EQ(o1[i], r[1]);
      EXPECT_EQ(o2[i], r[2]);
      EXPECT_EQ(o3[i], r[3]);
    }
  }
}

// The transform against the C library on the same uniforms, including the extremes of u1 (1 and
// 2^-52) and angles at the quadrant boundaries.
TEST(BoxMullerBlock, MatchesLibraryFunctions) {
  std::mt19937_64 rng(9);
  std::vector<std::uint64_t> a, b;
  for (int i = 0; i < 2000; ++i) {
    a.push_back(rng());
    b.push_back(rng());
  }
  for (std::uint64_t k : {0ull, 1ull, (1ull << 52) - 1, 1ull << 51, 1ull << 50, 3ull << 50}) {  // a's top 52 bits / b's
    a.push_back(k << 12);
    b.push_back(k << 12);
  }
  const int n = static_cast<int>(a.size());
  double max_error = 0;
  for (int i0 = 0; i0 < n; i0 += 256) {
    const int m = std::min(256, n - i0);
    std::uint32_t ah[256], al[256], bh[256], bl[256];
    for (int i = 0; i < m; ++i) {
      ah[i] = static_cast<std::uint32_t>(a[i0 + i] >> 32);
      al[i] = static_cast<std::uint32_t>(a[i0 + i]);
      bh[i] = static_cast<std::uint32_t>(b[i0 + i] >> 32);
      bl[i] = static_cast<std::uint32_t>(b[i0 + i]);
    }
    double zc[256], zs[256];
    detail::box_muller_block(ah, al, bh, bl, m, zc, zs);
    for (int i = 0; i < m; ++i) {
      const double u1 = 1.0 - std::ldexp(static_cast<double>(a[i0 + i] >> 12), -52);
      const double u2 = std::ldexp(static_cast<double>(b[i0 + i] >> 12), -52);
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double angle = 2.0 * M_PI * u2;
      // The library's sin(2 pi u2) carries the rounding of 2 pi u2 (up to 4 pi 2^-53 absolute):
      // the tolerance allows it, scaled by the radius (<= 8.5).
      const double tol = 1e-15 * (1.0 + radius) * 8;
      ASSERT_NEAR(zc[i], radius * std::cos(angle), tol) << "u1 = " << u1 << ", u2 = " << u2;
      ASSERT_NEAR(zs[i], radius * std::sin(angle), tol) << "u1 = " << u1 << ", u2 = " << u2;
      max_error = std::max({max_error, std::abs(zc[i] - radius * std::cos(angle)), std::abs(zs[i] - radius * std::sin(angle))});
    }
  }
  EXPECT_LT(max_error, 1e-14);
}

TEST(StepNormals, FillEqualsElementwiseValues) {
  for (Index dims : {1, 2, 5, 16}) {
    const StepNormals normals(77, 3);
    Batch z(301, dims);
    normals.fill(12, 1000, z);
    for (Index r = 0; r < z.rows(); ++r)
      for (Index d = 0; d < dims; ++d) ASSERT_EQ(z(r, d), normals.at(12, 1000 + r, d)) << "dims " << dims << " row " << r << " dim " << d;
  }
}

// Every instruction-set kernel the CPU runs gives the baseline's bits (Philox is integer arithmetic;
// the transform's IEEE operations are the same, in the same order, at any vector width).
TEST(StepNormals, EveryInstructionSetGivesTheBaselineBits) {
  std::mt19937_64 rng(12);
  std::uint32_t c2[256], c3[256];
  for (int i = 0; i < 256; ++i) {
    c2[i] = static_cast<std::uint32_t>(rng());
    c3[i] = static_cast<std::uint32_t>(rng());
  }
  c2[0] = c3[0] = 0;  // u1 = 1 - 0: log exactly 0
  c2[1] = c3[1] = 0xFFFFFFFFu;
  for (const int n : {1, 3, 255, 256}) {
    double base_c[256], base_s[256];
    detail::normal_pairs(detail::NoiseIsa::baseline, 99, 5, 0x80000000u, c2, c3, n, base_c, base_s);
    for (const auto isa : {detail::NoiseIsa::avx2, detail::NoiseIsa::avx512}) {
      if (!detail::noise_isa_supported(isa)) continue;
      double zc[256], zs[256];
      detail::normal_pairs(isa, 99, 5, 0x80000000u, c2, c3, n, zc, zs);
      EXPECT_EQ(std::memcmp(zc, base_c, sizeof(double) * n), 0) << "isa " << static_cast<int>(isa) << ", n " << n;
      EXPECT_EQ(std::memcmp(zs, base_s, sizeof(double) * n), 0) << "isa " << static_cast<int>(isa) << ", n " << n;
    }
  }
  // And through fill(), odd dims and a short last block included.
  Batch base(37, 13);
  StepNormals normals(8, 3);
  normals.set_isa(detail::NoiseIsa::baseline);
  normals.fill(4, 100, base);
  for (const auto isa : {detail::NoiseIsa::avx2, detail::NoiseIsa::avx512, detail::NoiseIsa::automatic}) {
    if (isa != detail::NoiseIsa::automatic && !detail::noise_isa_supported(isa)) continue;
    normals.set_isa(isa);
    Batch other(37, 13);
    normals.fill(4, 100, other);
    EXPECT_EQ(std::memcmp(other.data(), base.data(), sizeof(double) * static_cast<std::size_t>(base.size())), 0) << static_cast<int>(isa);
  }
}

TEST(StepNormals, IndependentOfBatchSplitFirstRowAndThreads) {
  const StepNormals normals(5);
  const Index rows = 1000, dims = 7;
  Batch whole(rows, dims);
  normals.fill(3, 0, whole);
  // Blocks of uneven sizes, each with its own first row, filled by separate threads.
  const std::vector<Index> cuts{0, 1, 130, 257, 600, 999, 1000};
  std::vector<Batch> parts(cuts.size() - 1);
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k)
    threads.emplace_back([&, k] {
      parts[k].resize(cuts[k + 1] - cuts[k], dims);
      normals.fill(3, cuts[k], parts[k]);
    });
  for (auto& t : threads) t.join();
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k)
    for (Index r = 0; r < parts[k].rows(); ++r)
      for (Index d = 0; d < dims; ++d) ASSERT_EQ(parts[k](r, d), whole(cuts[k] + r, d));
}

TEST(StepNormals, KeysGiveDistinctDraws) {
  Batch a(64, 4), b(64, 4), c(64, 4), d(64, 4);
  StepNormals(1, 0).fill(0, 0, a);
  StepNormals(1, 0).fill(1, 0, b);   // another step
  StepNormals(1, 1).fill(0, 0, c);   // another stream
  StepNormals(2, 0).fill(0, 0, d);   // another seed
  for (const Batch* other : {&b, &c, &d}) EXPECT_GT((a - *other).abs().minCoeff(), 0.0);
  EXPECT_THROW(StepNormals(1, StepNormals::max_stream + 1), std::invalid_argument);
  EXPECT_THROW(StepNormals(1).fill(StepNormals::max_step + 1, 0, a), std::out_of_range);
}

// Moments across samples: for each of several steps and dimensions the mean and variance, and the
// correlation between steps and between dimensions, within 5 standard errors (fixed seed).
TEST(StepNormals, MomentsAndIndependence) {
  const Index n = 200000, dims = 3;
  const int steps = 4;
  const StepNormals normals(2024);
  std::vector<Batch> z(steps, Batch(n, dims));
  for (int s = 0; s < steps; ++s) normals.fill(s, 0, z[s]);
  const double se_mean = 1.0 / std::sqrt(double(n));
  const double se_var = std::sqrt(2.0 / double(n));
  const double se_m4 = std::sqrt(96.0 / double(n));  // E z^4 = 3, Var z^4 = 105 - 9
  for (int s = 0; s < steps; ++s) {
    for (Index d = 0; d < dims; ++d) {
      const auto col = z[s].col(d);
      EXPECT_NEAR(col.mean(), 0.0, 5 * se_mean);
      EXPECT_NEAR(col.square().mean(), 1.0, 5 * se_var);
      EXPECT_NEAR(col.square().square().mean(), 3.0, 5 * se_m4);
      EXPECT_NEAR(col.cube().mean(), 0.0, 5 * std::sqrt(15.0 / double(n)));
      for (Index e = d + 1; e < dims; ++e) EXPECT_NEAR((col * z[s].col(e)).mean(), 0.0, 5 * se_mean) << "dims " << d << ", " << e;
      for (int t = s + 1; t < steps; ++t) EXPECT_NEAR((col * z[t].col(d)).mean(), 0.0, 5 * se_mean) << "steps " << s << ", " << t;
    }
  }
  // Tails: P(|z| > 3) = 0.0026998 within 5 standard errors.
  const double p = 0.0026997960632601;
  const double frac = (z[0].abs() > 3.0).cast<double>().mean();
  EXPECT_NEAR(frac, p, 5 * std::sqrt(p * (1 - p) / double(n * dims)));
}

// dW ~ N(0, |h|), I = h/2 dW + sqrt(|h|^3/12) z2: E I = 0, Var I = |h|^3/3, Cov(dW, I) = h |h|/2 (in
// either direction of time), as for the Brownian path run backward.
TEST(StepIncrements, JointLawOfIncrementAndTimeIntegral) {
  const Index n = 200000;
  for (double h : {0.25, -0.25}) {
    const StepIncrements inc(8, 2);
    Batch dw(n, 2), integral;
    inc.increments(5, h, 0, dw, &integral);
    ASSERT_EQ(integral.rows(), n);
    for (Index d = 0; d < 2; ++d) {
      const auto w = dw.col(d), i = integral.col(d);
      const double k = std::abs(h);
      EXPECT_NEAR(w.mean(), 0.0, 5 * std::sqrt(k / n));
      EXPECT_NEAR(w.square().mean(), k, 5 * k * std::sqrt(2.0 / n));
      EXPECT_NEAR(i.mean(), 0.0, 5 * std::sqrt(k * k * k / 3 / n));
      EXPECT_NEAR(i.square().mean(), k * k * k / 3, 5 * k * k * k / 3 * std::sqrt(2.0 / n));
      EXPECT_NEAR((w * i).mean(), h * k / 2, 5 * std::sqrt(k * k * k * k / 3 / n) * 1.5);
      // The Levy area H = I/h - dW/2 is uncorrelated with dW, variance |h|/12.
      const Eigen::ArrayXd area = i / h - 0.5 * w;
      EXPECT_NEAR((area * w).mean(), 0.0, 5 * std::sqrt(k * k / 12 / n));
      EXPECT_NEAR(area.square().mean(), k / 12, 5 * k / 12 * std::sqrt(2.0 / n));
    }
  }
}

TEST(StepIncrements, SplitIndependentAndChecksShape) {
  const StepIncrements inc(3, 4);
  Batch dw(50, 4), i, dw_b(20, 4), i_b;
  inc.increments(2, -0.1, 0, dw, &i);
  inc.increments(2, -0.1, 30, dw_b, &i_b);
  for (Index r = 0; r < 20; ++r)
    for (Index d = 0; d < 4; ++d) {
      EXPECT_EQ(dw_b(r, d), dw(30 + r, d));
      EXPECT_EQ(i_b(r, d), i(30 + r, d));
    }
  Batch wrong(5, 3);
  EXPECT_THROW(inc.increments(0, 0.1, 0, wrong, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace diffode
