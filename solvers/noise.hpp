// Per-step noise for fixed-grid stochastic samplers: a fresh standard normal for every (seed,
// stream, step, sample, dimension), from the counter-based generator Philox 4x32-10 (Salmon,
// Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11, sec. 3.3) and
// the Box-Muller transform (Box & Muller 1958, Ann. Math. Statist. 29(2)), both of its outputs.
//
// One Philox call gives 128 bits: two 52-bit uniforms, hence two normals, for dimensions 2p and
// 2p+1 of one sample. A value depends on its keys alone, so it does not change with the batch split,
// the thread count or a block's first row. Unlike the Brownian path (brownian.hpp) the noise of
// step i is not tied to the step's interval: two grids through the same times see unrelated noise,
// so strong-error studies on nested grids need the Brownian path instead. In law both agree: the
// steps' normals are independent N(0, I) either way.
//
// The transform's log, sine and cosine are short polynomials written so that the compiler
// vectorises the loop (no library calls, no branches); they are accurate to a few ulp, and their
// bits do not depend on the C library. Philox and the transform are compiled for the SSE2 baseline,
// AVX2 and AVX-512F and chosen at run time; every variant gives the same bits. A step costs one
// Philox call and one transform per two normals, instead of a descent of the Brownian tree (two
// normals per level, 40 levels).
#pragma once

#include "core/state.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace diffode {

// Which noise a fixed-grid stochastic sampler draws (the [sampler] key `noise`).
enum class NoiseKind {
  per_step,  // fresh N(0, I) per step, keyed by (seed, step, sample, dim): cheap, the default
  brownian,  // increments of one Brownian path per seed (a virtual Brownian tree): the same path on
             // every grid, what strong errors against a fine grid need
  brownian_grid,  // a Brownian-bridge tree on the run's own grid (brownian_grid.hpp): the same path on
                  // every grid that is each 2^k-th point of it, at about the per-step noise's cost
};
std::string_view noise_kind_name(NoiseKind kind);

namespace detail {
// The instruction set of the normals' kernel: the same bits on each (tests/solvers/noise_test.cpp).
enum class NoiseIsa { automatic, baseline, avx2, avx512 };
}  // namespace detail

// Standard normals keyed by (seed, stream, step, sample, dim). `stream` separates independent uses
// under one seed (a predictor's and a corrector's noise, an SRA step's dW and its Levy area, the
// grid path's skeleton and interior nodes: streams 3 and 4, brownian_grid.hpp).
class StepNormals {
 public:
  static constexpr std::uint32_t max_stream = 127;
  static constexpr std::uint64_t max_step = (std::uint64_t{1} << 56) - 1;

  explicit StepNormals(std::uint64_t seed, std::uint32_t stream = 0);

  // out(r, d) = z(step, first_sample + r, d), for out's shape (rows x dims).
  void fill(std::uint64_t step, Index first_sample, Batch& out) const;
  // One value, element by element (the reference the batched fill must equal bitwise).
  double at(std::uint64_t step, Index sample, Index dim) const;
  // The kernel fill() uses (tests compare them; automatic: the best this CPU runs).
  void set_isa(detail::NoiseIsa isa);

 private:
  std::uint64_t seed_;
  std::uint32_t stream_;
  detail::NoiseIsa isa_ = detail::NoiseIsa::automatic;
};

// Brownian increments for a fixed grid, fresh per step: on step i of signed length h,
// dW = sqrt|h| z1 and int_t^{t+h} (W_u - W_t) du = h/2 dW + sqrt(|h|^3 / 12) z2, with z1, z2
// independent N(0, I) (streams 0 and 1). That is the exact joint law of the increment and its time
// integral (the space-time Levy area H = I/h - dW/2 is N(0, |h|/12), independent of dW; Kloeden &
// Platen 1992, sec. 10.4), so SRA schemes keep their order in law; for h < 0 it is the law of the
// path run backward from t.
class StepIncrements {
 public:
  StepIncrements(std::uint64_t seed, Index dims);
  Index dims() const { return dims_; }

  // dw and, if given, integral get rows x dims (rows from dw's shape).
  void increments(std::uint64_t step, double h, Index first_sample, Batch& dw, Batch* integral) const;

 private:
  StepNormals dw_, area_;
  Index dims_;
};

namespace detail {

// Philox4x32-10 for n counters (w0, w1, c2[i], c3[i]) under one 64-bit key, n <= 256: bit-identical
// to r123::Philox4x32 (tests/solvers/noise_test.cpp compares). Round r uses the key bumped r times
// by the Weyl constants and maps (x0, x1, x2, x3) to (hi(M1 x2) ^ x1 ^ k0, lo(M1 x2), hi(M0 x0) ^
// x3 ^ k1, lo(M0 x0)); written with both factors of each product visibly 32-bit, so that GCC
// vectorises it as widening multiplies.
void philox4x32_block(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2, const std::uint32_t* c3,
                      int n, std::uint32_t* o0, std::uint32_t* o1, std::uint32_t* o2, std::uint32_t* o3);

// Box-Muller on the 128 bits (a, b) of each of n Philox outputs: radius sqrt(-2 log u1) with
// u1 = 1 - hi52(a) 2^-52 in (0, 1], angle 2 pi u2 with u2 = hi52(b) 2^-52 in [0, 1);
// z_cos = radius cos(angle), z_sin = radius sin(angle).
void box_muller_block(const std::uint32_t* a_hi, const std::uint32_t* a_lo, const std::uint32_t* b_hi, const std::uint32_t* b_lo, int n,
                      double* z_cos, double* z_sin);

// Both steps at once for n <= 256 counters (w0, w1, c2[i], c3[i]), on the given instruction set
// (not automatic): what StepNormals::fill runs. Throws if this CPU lacks it.
void normal_pairs(NoiseIsa isa, std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2, const std::uint32_t* c3,
                  int n, double* z_cos, double* z_sin);
bool noise_isa_supported(NoiseIsa isa);
NoiseIsa best_noise_isa();

}  // namespace detail

}  // namespace diffode
