#include "solvers/noise.hpp"

#include <Random123/philox.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>

// The instruction-set variants need GCC or Clang on x86-64 (target attributes, __builtin_cpu_supports).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DIFFODE_NOISE_X86_KERNELS 1
#else
#define DIFFODE_NOISE_X86_KERNELS 0
#endif

namespace diffode {

std::string_view noise_kind_name(NoiseKind kind) {
  switch (kind) {
    case NoiseKind::per_step: return "per_step";
    case NoiseKind::brownian: return "brownian";
    case NoiseKind::brownian_grid: return "brownian_grid";
  }
  return "unknown";
}

namespace detail {

namespace {

// The bodies of philox4x32_block and box_muller_block, inlined into one function per instruction
// set below (the same source, hence the same integer results and the same IEEE operations in the
// same order: -ffp-contract=off keeps multiplies and adds apart on every target).
[[gnu::always_inline]] inline void philox_impl(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2,
                                               const std::uint32_t* c3, int n, std::uint32_t* o0, std::uint32_t* o1,
                                               std::uint32_t* o2, std::uint32_t* o3) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  std::uint32_t k0[10], k1[10];
  std::uint32_t a = static_cast<std::uint32_t>(key), b = static_cast<std::uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r, a += 0x9E3779B9u, b += 0xBB67AE85u) {
    k0[r] = a;
    k1[r] = b;
  }
  for (int i = 0; i < n; ++i) {
    std::uint32_t x0 = w0, x1 = w1, x2 = c2[i], x3 = c3[i];
    for (int r = 0; r < 10; ++r) {
      const std::uint64_t p0 = std::uint64_t{kM0} * x0, p1 = std::uint64_t{kM1} * x2;
      x0 = static_cast<std::uint32_t>(p1 >> 32) ^ x1 ^ k0[r];
      x1 = static_cast<std::uint32_t>(p1);
      x2 = static_cast<std::uint32_t>(p0 >> 32) ^ x3 ^ k1[r];
      x3 = static_cast<std::uint32_t>(p0);
    }
    o0[i] = x0;
    o1[i] = x1;
    o2[i] = x2;
    o3[i] = x3;
  }
}

constexpr std::uint64_t kOneBits = 0x3FF0000000000000ull;      // 1.0
constexpr std::uint64_t kMantissa = 0x000FFFFFFFFFFFFFull;
constexpr std::uint64_t kTwo52Bits = 0x4330000000000000ull;    // 2^52: OR-ing a small integer k in gives 2^52 + k
constexpr double kTwo52 = 4503599627370496.0;
constexpr double kRoundMagic = 6755399441055744.0;              // 1.5 * 2^52: x + it rounds x to an integer
constexpr double kSqrt2 = 1.4142135623730951;
constexpr double kLn2Hi = 6.93147180369123816490e-01;          // ln 2's leading 32 bits: e * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;          // ln 2 - kLn2Hi
constexpr double kHalfPi = 1.5707963267948966;

// log u for u in (0, 1]: u = 2^e m with m in (sqrt(1/2), sqrt(2)], f = m - 1 (exact), s = f / (2 + f),
// log(1 + f) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...). |s| <= 0.1716, so s^2 <= 0.0295 and the
// terms through s^20/21 leave a truncation below 1e-18 relative.
inline double log_unit(double u) {
  // Selections as bit arithmetic, so that the loop has no control flow and vectorises.
  const std::uint64_t bits = std::bit_cast<std::uint64_t>(u);
  const double m1 = std::bit_cast<double>((bits & kMantissa) | kOneBits);  // [1, 2)
  const std::uint64_t big = static_cast<std::uint64_t>(m1 > kSqrt2);      // then halve m, add 1 to e
  const double m = std::bit_cast<double>(std::bit_cast<std::uint64_t>(m1) - (big << 52));
  const double e = std::bit_cast<double>(kTwo52Bits | ((bits >> 52) + big)) - (kTwo52 + 1023.0);  // exact
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double p =
      1.0 / 3 +
      z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9 + z * (1.0 / 11 + z * (1.0 / 13 + z * (1.0 / 15 + z * (1.0 / 17 + z * (1.0 / 19 + z * (1.0 / 21)))))))));
  const double log1p_f = 2.0 * s + 2.0 * s * (z * p);
  return e * kLn2Hi + (log1p_f + e * kLn2Lo);
}

constexpr int kMaxPairs = 256, kPad = 8;  // arrays padded to whole 8-double registers

// The transform up to the square root: -2 log u1, and cos and sin of the angle, for n <= 256
// elements; the padding up to the next multiple of 8 is set to 0 (its results are never read).
[[gnu::always_inline]] inline void transform_impl(const std::uint32_t* a_hi, const std::uint32_t* a_lo, const std::uint32_t* b_hi,
                                                   const std::uint32_t* b_lo, int n, double* minus_two_log, double* cos_part,
                                                   double* sin_part) {
  if (n > kMaxPairs) throw std::logic_error("box_muller_block: at most 256 elements");
  for (int i = 0; i < n; ++i) {
    const std::uint64_t a = (std::uint64_t{a_hi[i]} << 32) | a_lo[i];
    const std::uint64_t b = (std::uint64_t{b_hi[i]} << 32) | b_lo[i];
    // u1 = 1 - k 2^-52 in (0, 1] (exact): never 0, so the radius stays finite (at most 8.5).
    const double u1 = 2.0 - std::bit_cast<double>(kOneBits | (a >> 12));
    minus_two_log[i] = -2.0 * log_unit(u1);
    // The angle 2 pi u2 = (pi/2) v, v = 4 u2 in [0, 4): v = q + r with q the nearest integer and
    // r in [-1/2, 1/2] (both exact); sin and cos of x = (pi/2) r in [-pi/4, pi/4] by their Taylor
    // series (the first term left out is below 1e-19), then the quadrant q mod 4 swaps and signs them.
    const double v = 4.0 * (std::bit_cast<double>(kOneBits | (b >> 12)) - 1.0);
    const double rounded = v + kRoundMagic;
    const std::uint64_t q = std::bit_cast<std::uint64_t>(rounded);  // low bits: the integer q
    const double x = (v - (rounded - kRoundMagic)) * kHalfPi;
    const double x2 = x * x;
    const double sin_x =
        x + x * (x2 * (-1.0 / 6 + x2 * (1.0 / 120 + x2 * (-1.0 / 5040 + x2 * (1.0 / 362880 + x2 * (-1.0 / 39916800 +
                                                                                                   x2 * (1.0 / 6227020800 + x2 * (-1.0 / 1307674368000 + x2 * (1.0 / 355687428096000)))))))));
    const double cos_x =
        1.0 + x2 * (-0.5 + x2 * (1.0 / 24 + x2 * (-1.0 / 720 + x2 * (1.0 / 40320 + x2 * (-1.0 / 3628800 + x2 * (1.0 / 479001600 +
                                                                                                            x2 * (-1.0 / 87178291200 + x2 * (1.0 / 20922789888000 + x2 * (-1.0 / 6402373705728000)))))))));
    // q = 0: (sin, cos); 1: (cos, -sin); 2: (-sin, -cos); 3: (-cos, sin). Bit operations only.
    const std::uint64_t swap = std::uint64_t{0} - (q & 1);
    const std::uint64_t sb = std::bit_cast<std::uint64_t>(sin_x), cb = std::bit_cast<std::uint64_t>(cos_x);
    sin_part[i] = std::bit_cast<double>(((sb & ~swap) | (cb & swap)) ^ ((q & 2) << 62));
    cos_part[i] = std::bit_cast<double>(((cb & ~swap) | (sb & swap)) ^ (((q + 1) & 2) << 62));
  }
  for (int i = n; i < (n + kPad - 1) / kPad * kPad; ++i) minus_two_log[i] = cos_part[i] = sin_part[i] = 0.0;
}

// z_cos = radius cos, z_sin = radius sin with radius = sqrt(-2 log u1), for n elements (arrays
// padded as transform_impl leaves them). std::sqrt may set errno, which keeps GCC from vectorising
// it; the packed square roots round exactly as the scalar one (IEEE 754 correctly rounded).
[[gnu::always_inline]] inline void radius_baseline(const double* minus_two_log, const double* cos_part, const double* sin_part, int n,
                                                   double* z_cos, double* z_sin) {
#if defined(__SSE2__)
  alignas(64) double zc[kMaxPairs + kPad], zs[kMaxPairs + kPad];
  for (int i = 0; i < n; i += 2) {
    const __m128d radius = _mm_sqrt_pd(_mm_load_pd(minus_two_log + i));
    _mm_store_pd(zc + i, _mm_mul_pd(_mm_load_pd(cos_part + i), radius));
    _mm_store_pd(zs + i, _mm_mul_pd(_mm_load_pd(sin_part + i), radius));
  }
  std::copy(zc, zc + n, z_cos);
  std::copy(zs, zs + n, z_sin);
#else
  for (int i = 0; i < n; ++i) {
    const double radius = std::sqrt(minus_two_log[i]);
    z_cos[i] = cos_part[i] * radius;
    z_sin[i] = sin_part[i] * radius;
  }
#endif
}

// Philox and Box-Muller for n <= 256 counters (w0, w1, c2[i], c3[i]): the two normals of each.
// The arrays of one call: Philox's words, then the transform's three parts, padded.
struct PairsScratch {
  alignas(64) std::uint32_t o0[kMaxPairs], o1[kMaxPairs], o2[kMaxPairs], o3[kMaxPairs];
  alignas(64) double minus_two_log[kMaxPairs + kPad], cos_part[kMaxPairs + kPad], sin_part[kMaxPairs + kPad];
};

[[gnu::always_inline]] inline void pairs_front(PairsScratch& w, std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2,
                                               const std::uint32_t* c3, int n) {
  philox_impl(key, w0, w1, c2, c3, n, w.o0, w.o1, w.o2, w.o3);
  transform_impl(w.o0, w.o1, w.o2, w.o3, n, w.minus_two_log, w.cos_part, w.sin_part);
}

void pairs_baseline(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2, const std::uint32_t* c3, int n,
                    double* z_cos, double* z_sin) {
  PairsScratch w;
  pairs_front(w, key, w0, w1, c2, c3, n);
  radius_baseline(w.minus_two_log, w.cos_part, w.sin_part, n, z_cos, z_sin);
}
#if DIFFODE_NOISE_X86_KERNELS
// Wider registers only: 4 (AVX2) or 8 (AVX-512F) lanes for Philox's 32-bit products, the
// transform's doubles and the square roots, where the baseline has 2-4.
__attribute__((target("avx2"))) void pairs_avx2(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2,
                                                const std::uint32_t* c3, int n, double* z_cos, double* z_sin) {
  PairsScratch w;
  pairs_front(w, key, w0, w1, c2, c3, n);
  alignas(64) double zc[kMaxPairs + kPad], zs[kMaxPairs + kPad];
  for (int i = 0; i < n; i += 4) {
    const __m256d radius = _mm256_sqrt_pd(_mm256_load_pd(w.minus_two_log + i));
    _mm256_store_pd(zc + i, _mm256_mul_pd(_mm256_load_pd(w.cos_part + i), radius));
    _mm256_store_pd(zs + i, _mm256_mul_pd(_mm256_load_pd(w.sin_part + i), radius));
  }
  std::copy(zc, zc + n, z_cos);
  std::copy(zs, zs + n, z_sin);
}
__attribute__((target("avx512f"))) void pairs_avx512(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2,
                                                     const std::uint32_t* c3, int n, double* z_cos, double* z_sin) {
  PairsScratch w;
  pairs_front(w, key, w0, w1, c2, c3, n);
  alignas(64) double zc[kMaxPairs + kPad], zs[kMaxPairs + kPad];
  for (int i = 0; i < n; i += 8) {
    const __m512d radius = _mm512_sqrt_pd(_mm512_load_pd(w.minus_two_log + i));
    _mm512_store_pd(zc + i, _mm512_mul_pd(_mm512_load_pd(w.cos_part + i), radius));
    _mm512_store_pd(zs + i, _mm512_mul_pd(_mm512_load_pd(w.sin_part + i), radius));
  }
  std::copy(zc, zc + n, z_cos);
  std::copy(zs, zs + n, z_sin);
}
#endif

using PairsFn = void (*)(std::uint64_t, std::uint32_t, std::uint32_t, const std::uint32_t*, const std::uint32_t*, int, double*, double*);

PairsFn pairs_fn(NoiseIsa isa) {
  switch (isa) {
#if DIFFODE_NOISE_X86_KERNELS
    case NoiseIsa::avx2: return pairs_avx2;
    case NoiseIsa::avx512: return pairs_avx512;
#endif
    default: return pairs_baseline;
  }
}

}  // namespace

void philox4x32_block(std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2, const std::uint32_t* c3, int n,
                      std::uint32_t* o0, std::uint32_t* o1, std::uint32_t* o2, std::uint32_t* o3) {
  philox_impl(key, w0, w1, c2, c3, n, o0, o1, o2, o3);
}

void box_muller_block(const std::uint32_t* a_hi, const std::uint32_t* a_lo, const std::uint32_t* b_hi, const std::uint32_t* b_lo, int n,
                      double* z_cos, double* z_sin) {
  alignas(64) double minus_two_log[kMaxPairs + kPad], cos_part[kMaxPairs + kPad], sin_part[kMaxPairs + kPad];
  transform_impl(a_hi, a_lo, b_hi, b_lo, n, minus_two_log, cos_part, sin_part);
  radius_baseline(minus_two_log, cos_part, sin_part, n, z_cos, z_sin);
}

bool noise_isa_supported(NoiseIsa isa) {
  switch (isa) {
    case NoiseIsa::baseline: return true;
#if DIFFODE_NOISE_X86_KERNELS
    case NoiseIsa::avx2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2") != 0;
    case NoiseIsa::avx512: __builtin_cpu_init(); return __builtin_cpu_supports("avx512f") != 0;
#endif
    default: return false;
  }
}

// The widest the CPU has: on AMD Zen 4 (512-bit operations as two 256-bit halves) AVX-512F still
// measured about 15% faster than AVX2 here, and AVX2 twice as fast as the baseline
// (benchmarks/noise_bench.cpp, results/benchmarks.md).
NoiseIsa best_noise_isa() {
  static const NoiseIsa best = noise_isa_supported(NoiseIsa::avx512) ? NoiseIsa::avx512
                               : noise_isa_supported(NoiseIsa::avx2) ? NoiseIsa::avx2
                                                                     : NoiseIsa::baseline;
  return best;
}

void normal_pairs(NoiseIsa isa, std::uint64_t key, std::uint32_t w0, std::uint32_t w1, const std::uint32_t* c2, const std::uint32_t* c3,
                  int n, double* z_cos, double* z_sin) {
  if (n > 256) throw std::logic_error("normal_pairs: at most 256 elements");
  if (!noise_isa_supported(isa)) throw std::invalid_argument("normal_pairs: this CPU lacks the instruction set asked for");
  pairs_fn(isa)(key, w0, w1, c2, c3, n, z_cos, z_sin);
}

}  // namespace detail

namespace {

// Counter words 0 and 1: the step's low 32 bits, then bit 31 set, the stream in bits 24-30 and the
// step's bits 32-55. The Brownian tree (brownian.cpp) uses the same key with word 1 = the node's high
// bits, below 2^29, so no counter of this source is one of the tree's.
std::uint32_t counter_word1(std::uint32_t stream, std::uint64_t step) {
  return 0x80000000u | (stream << 24) | static_cast<std::uint32_t>(step >> 32);
}

void check_step(std::uint64_t step) {
  if (step > StepNormals::max_step) throw std::out_of_range(fmt::format("StepNormals: step {} exceeds 2^56 - 1", step));
}

constexpr int kBlock = 256;  // pairs per block: the arrays stay in L1

}  // namespace

StepNormals::StepNormals(std::uint64_t seed, std::uint32_t stream) : seed_(seed), stream_(stream) {
  if (stream > max_stream) throw std::invalid_argument(fmt::format("StepNormals: stream {} exceeds {}", stream, max_stream));
}

void StepNormals::set_isa(detail::NoiseIsa isa) {
  if (isa != detail::NoiseIsa::automatic && !detail::noise_isa_supported(isa))
    throw std::invalid_argument("StepNormals: this CPU lacks the instruction set asked for");
  isa_ = isa;
}

void StepNormals::fill(std::uint64_t step, Index first_sample, Batch& out) const {
  check_step(step);
  const Index rows = out.rows(), dims = out.cols();
  if (rows == 0 || dims == 0) return;
  const Index pairs = (dims + 1) / 2, count = rows * pairs;
  const std::uint32_t w0 = static_cast<std::uint32_t>(step), w1 = counter_word1(stream_, step);
  double* data = out.data();  // row-major: (r, d) at r * dims + d
  const auto draw = detail::pairs_fn(isa_ == detail::NoiseIsa::automatic ? detail::best_noise_isa() : isa_);
  std::uint32_t sample[kBlock], pair[kBlock];
  double zc[kBlock], zs[kBlock];
  Index row = 0, p = 0;  // the block's first pair
  for (Index e0 = 0; e0 < count; e0 += kBlock) {
    const int n = static_cast<int>(std::min<Index>(kBlock, count - e0));
    const Index row0 = row, p0 = p;
    for (int i = 0; i < n; ++i) {
      sample[i] = static_cast<std::uint32_t>(static_cast<std::uint64_t>(first_sample + row));
      pair[i] = static_cast<std::uint32_t>(p);
      if (++p == pairs) {
        p = 0;
        ++row;
      }
    }
    draw(seed_, w0, w1, sample, pair, n, zc, zs);
    if (dims % 2 == 0) {  // pair e fills elements 2e and 2e + 1: a plain interleave
      double* dst = data + 2 * e0;
      for (int i = 0; i < n; ++i) {
        dst[2 * i] = zc[i];
        dst[2 * i + 1] = zs[i];
      }
      continue;
    }
    Index r = row0, q = p0;
    for (int i = 0; i < n; ++i) {
      double* dst = data + r * dims + 2 * q;
      dst[0] = zc[i];
      if (2 * q + 1 < dims) dst[1] = zs[i];
      if (++q == pairs) {
        q = 0;
        ++r;
      }
    }
  }
}

double StepNormals::at(std::uint64_t step, Index sample, Index dim) const {
  check_step(step);
  using Philox = r123::Philox4x32;
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)}};
  const Philox::ctr_type ctr = {{static_cast<std::uint32_t>(step), counter_word1(stream_, step),
                                 static_cast<std::uint32_t>(static_cast<std::uint64_t>(sample)), static_cast<std::uint32_t>(dim / 2)}};
  const Philox::ctr_type r = Philox{}(ctr, key);
  double zc, zs;
  detail::box_muller_block(&r[0], &r[1], &r[2], &r[3], 1, &zc, &zs);
  return dim % 2 == 0 ? zc : zs;
}

StepIncrements::StepIncrements(std::uint64_t seed, Index dims) : dw_(seed, 0), area_(seed, 1), dims_(dims) {
  if (dims < 1) throw std::invalid_argument("StepIncrements: dims must be >= 1");
}

void StepIncrements::increments(std::uint64_t step, double h, Index first_sample, Batch& dw, Batch* integral) const {
  if (dw.cols() != dims_)
    throw std::invalid_argument(fmt::format("StepIncrements: the output has {} columns, the noise {} dims", dw.cols(), dims_));
  dw_.fill(step, first_sample, dw);
  dw *= std::sqrt(std::abs(h));
  if (integral) {
    integral->resize(dw.rows(), dw.cols());
    area_.fill(step, first_sample, *integral);
    *integral = 0.5 * h * dw + std::sqrt(std::abs(h) * h * h / 12.0) * *integral;
  }
}

}  // namespace diffode
