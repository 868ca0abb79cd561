#include "models/gaussian_mixture.hpp"

#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <Random123/uniform.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <vector>

// The instruction-set variants of the lane kernels need GCC or Clang on x86-64 (target attributes,
// __builtin_cpu_supports); elsewhere only the baseline is built.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DIFFODE_MIXTURE_X86_KERNELS 1
#else
#define DIFFODE_MIXTURE_X86_KERNELS 0
#endif

namespace diffode {
namespace {

// Counter layout of every draw: key = seed, counter = (block, stream, index low, index high).
// The stream words keep these draws apart from the Brownian paths' (solvers/brownian.cpp puts a
// node's high 32 bits there, which stay below 2^29 at its maximum depth), and from each other.
constexpr std::uint32_t kSampleStream = 0x6D697821;        // "mix!": draws of x0 and eps
constexpr std::uint32_t kConstructionStream = 0x6D697822;  // parameters of the random mixtures
// A sample's blocks: 0 picks the component, 1.. the normals of x0, kNoiseBlock.. those of eps.
constexpr std::uint32_t kNoiseBlock = 0x80000000u;

r123::Philox4x32::ctr_type philox_block(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t block) {
  using Philox = r123::Philox4x32;
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const Philox::ctr_type ctr = {{block, stream, static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32)}};
  return Philox{}(ctr, key);
}

// Two 64-bit words of one block.
struct Words {
  std::uint64_t a, b;
};
Words words(const r123::Philox4x32::ctr_type& r) {
  return {(std::uint64_t{r[0]} << 32) | r[1], (std::uint64_t{r[2]} << 32) | r[3]};
}

// Two uniforms in (0, 1] from one block.
std::pair<double, double> uniforms(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t block) {
  const Words w = words(philox_block(seed, stream, index, block));
  return {r123::u01<double>(w.a), r123::u01<double>(w.b)};
}

// Fills out[0..n) with standard normals, two per block from `first_block` on (Box-Muller).
void normals(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t first_block, double* out, Index n) {
  for (Index d = 0; d < n; d += 2) {
    const Words w = words(philox_block(seed, stream, index, first_block + static_cast<std::uint32_t>(d / 2)));
    const r123::double2 z = r123::boxmuller(w.a, w.b);
    out[d] = z.x;
    if (d + 1 < n) out[d + 1] = z.y;
  }
}

// A group of L doubles as one value (a GCC/Clang vector extension). Rows are evaluated L at a
// time, row j of a group in lane j, every lane running the scalar algorithm's operations in the
// scalar algorithm's order: a lane's arithmetic never mixes with another's, so a row's result is the
// same bits in whichever lane (and batch) it sits, whatever L and whatever instruction set carries
// the lanes (-ffp-contract=off: no fused multiply-adds). The last group is filled up with copies of
// the last row. Used only inside function bodies: as a parameter or return type its ABI would
// depend on the ISA flags.
template <int L>
struct LaneTypes;
template <>
struct LaneTypes<2> {
  typedef double Lanes __attribute__((vector_size(16)));
  typedef std::uint64_t Bits __attribute__((vector_size(16)));
};
template <>
struct LaneTypes<4> {
  typedef double Lanes __attribute__((vector_size(32)));
  typedef std::uint64_t Bits __attribute__((vector_size(32)));
};
template <>
struct LaneTypes<8> {
  typedef double Lanes __attribute__((vector_size(64)));
  typedef std::uint64_t Bits __attribute__((vector_size(64)));
};
template <int L>
using Lanes = typename LaneTypes<L>::Lanes;

// Always inlined, so no vector ever crosses a call: GCC's note that returning one wider than the
// default ISA's registers changes the ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
template <int L>
inline __attribute__((always_inline)) Lanes<L> load(const double* p) {
  Lanes<L> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int L>
inline __attribute__((always_inline)) void store(double* p, const Lanes<L>& v) {
  std::memcpy(p, &v, sizeof v);
}

// out[0..L) = exp(z[0..L)) for z <= 0, within 1 ulp of std::exp. The responsibilities'
// exps were half the cost of an evaluation as scalar library calls.
//   z = n ln 2 + r, n = round(z / ln 2), |r| <= ln(2) / 2 (Cody & Waite 1980, "Software Manual for
//   the Elementary Functions", ch. 6: ln 2 split in a high part with trailing zero bits, so that
//   n ln2_hi is exact, and a low part);
//   exp(r) by its Taylor series to degree 13 (the remainder, r^14 / 14! < 4.3e-18, is below half
//   an ulp of exp(r) >= 0.7);
//   2^n assembled in the exponent field. Rounding uses the 1.5 * 2^52 shift: adding it leaves
//   round(z / ln 2) in the low bits of the sum, read off as an integer.
// Below z = -708 (2^n would be subnormal) the result is taken as 0 instead of a value under
// 2^-1021: a responsibility is exp(logit - top) with the top component's equal to 1, so a
// component that small adds nothing to any sum the top one is in. -inf gives 0; NaN stays NaN.
template <int L>
inline __attribute__((always_inline)) void exp_lanes(const double* z_in, double* out) {
  constexpr double log2e = 1.4426950408889634074;
  constexpr double shifter = 0x1.8p52;
  constexpr double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
  constexpr double inv_fact[14] = {1.0,         1.0,          1.0 / 2,       1.0 / 6,        1.0 / 24,
                                   1.0 / 120,   1.0 / 720,    1.0 / 5040,    1.0 / 40320,    1.0 / 362880,
                                   1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};
  const Lanes<L> z = load<L>(z_in);
  const Lanes<L> t = z * log2e + shifter;
  const Lanes<L> n = t - shifter;
  const Lanes<L> r = (z - n * ln2_hi) - n * ln2_lo;
  // Estrin's scheme: pairs, then pairs of pairs in r^2, r^4, r^8. Its dependency chain is four
  // multiply-adds deep where Horner's rule is thirteen.
  const Lanes<L> r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  Lanes<L> a[7];
  for (int j = 0; j < 7; ++j) a[j] = inv_fact[2 * j] + inv_fact[2 * j + 1] * r;
  const Lanes<L> b0 = a[0] + a[1] * r2, b1 = a[2] + a[3] * r2, b2 = a[4] + a[5] * r2, b3 = a[6];
  const Lanes<L> p = (b0 + b1 * r4) + (b2 + b3 * r4) * r8;
  typename LaneTypes<L>::Bits bits;
  std::memcpy(&bits, &t, sizeof t);
  bits = (bits - std::bit_cast<std::uint64_t>(shifter) + 1023u) << 52;  // the bits of 2^n
  Lanes<L> scale;
  std::memcpy(&scale, &bits, sizeof bits);
  const Lanes<L> zero = {};
  store<L>(out, z < -708.0 ? zero : p * scale);  // NaN compares false: it stays NaN
}

// Everything about the components that depends on (alpha, sigma) only, flattened K x D.
struct LevelConstants {
  double alpha = std::numeric_limits<double>::quiet_NaN();
  double sigma = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> centre;     // m_kd = alpha mu_kd
  std::vector<double> precision;  // 1 / v_kd,  v_kd = alpha^2 s_kd^2 + sigma^2
  std::vector<double> gain;       // g_kd = alpha s_kd^2 / v_kd
  std::vector<double> offset;     // b_kd = mu_kd sigma^2 / v_kd = mu_kd - g_kd m_kd, so D = sum_k r_k (b_k + g_k x)
  std::vector<double> log_norm;   // log w_k - sum_d log(2 pi v_kd) / 2
  std::vector<double> trace;      // sum_d 1 / v_kd

  LevelConstants(Index k, Index d) : centre(k * d), precision(k * d), gain(k * d), offset(k * d), log_norm(k), trace(k) {}

  bool matches(double a, double s) const { return a == alpha && s == sigma; }

  void compute(const Eigen::ArrayXd& log_weights, const Batch& means, const Batch& variances, double a, double s) {
    if (!std::isfinite(a) || !std::isfinite(s))
      throw std::invalid_argument(fmt::format("GaussianMixture: non-finite level alpha = {}, sigma = {}", a, s));
    alpha = a;
    sigma = s;
    const Index kk = means.rows(), dd = means.cols();
    const double log_two_pi = std::log(2.0 * std::numbers::pi);
    for (Index k = 0; k < kk; ++k) {
      double log_det = 0.0, tr = 0.0;
      for (Index d = 0; d < dd; ++d) {
        const Index i = k * dd + d;
        const double s2 = variances.data()[i];
        const double v = a * a * s2 + s * s;
        if (!(v > 0.0))
          throw std::invalid_argument(fmt::format("GaussianMixture: zero variance at alpha = {}, sigma = {}", a, s));
        centre[i] = a * means.data()[i];
        precision[i] = 1.0 / v;
        gain[i] = a * s2 / v;
        // sigma^2 / v = 1 - alpha g exactly, formed without the cancellation of 1 - alpha g near
        // the data (sigma -> 0), where it is what keeps D(x) = x + O(sigma^2).
        offset[i] = means.data()[i] * (s * s / v);
        log_det += std::log(v);
        tr += precision[i];
      }
      log_norm[k] = log_weights[k] - 0.5 * (dd * log_two_pi + log_det);
      trace[k] = tr;
    }
  }
};

void check_levels(const Batch& x, const PerSample& alpha, const PerSample& sigma, Index dims) {
  if (x.cols() != dims)
    throw std::invalid_argument(fmt::format("GaussianMixture: x has {} columns, the mixture {} dimensions", x.cols(), dims));
  if (alpha.size() != x.rows() || sigma.size() != x.rows())
    throw std::invalid_argument(fmt::format("GaussianMixture: {} samples but {} alphas and {} sigmas", x.rows(),
                                            alpha.size(), sigma.size()));
}

// The constants of a group's lanes interleaved, value i of lane j at [i * L + j], so that
// lane j of a vector load is lane j's own constant.
template <int L>
struct LaneConstants {
  std::vector<double> centre, precision, gain, offset, log_norm;
  LaneConstants(Index k, Index d)
      : centre(k * d * L), precision(k * d * L), gain(k * d * L), offset(k * d * L),
        log_norm(k * L) {}
  void set(Index lane, const LevelConstants& c) {
    for (std::size_t i = 0; i < c.centre.size(); ++i) {
      centre[i * L + lane] = c.centre[i];
      precision[i * L + lane] = c.precision[i];
      gain[i * L + lane] = c.gain[i];
      offset[i * L + lane] = c.offset[i];
    }
    for (std::size_t k = 0; k < c.log_norm.size(); ++k) log_norm[k * L + lane] = c.log_norm[k];
  }
};

// Quadratic forms q_k = |x - m_k|^2_{1/v_k} of components k0 .. k0 + B - 1 for a group of rows,
// each summed over d in order; B of them advance together so that B independent sums are in
// flight (one alone is a chain of dependent additions). Then logit_k = log_norm_k - q_k / 2 and the
// running maximum over components, in component order.
template <int L, int B, int Dim>
inline __attribute__((always_inline)) void logits_block(const LaneConstants<L>& c, const double* xg, Index k0, Index dd,
                                                        double* logit, Lanes<L>& top) {
  Lanes<L> q[B] = {};
  for (Index d = 0; d < (Dim > 0 ? Dim : dd); ++d) {
    const Lanes<L> xv = load<L>(xg + d * L);
    for (int u = 0; u < B; ++u) {
      const Index i = ((k0 + u) * dd + d) * L;
      const Lanes<L> diff = xv - load<L>(c.centre.data() + i);
      q[u] += diff * diff * load<L>(c.precision.data() + i);
    }
  }
  for (int u = 0; u < B; ++u) {
    const Lanes<L> l = load<L>(c.log_norm.data() + (k0 + u) * L) - 0.5 * q[u];
    store<L>(logit + (k0 + u) * L, l);
    top = top < l ? l : top;  // std::max(top, l): a NaN logit leaves top alone, as the scalar max
  }
}

// D_d = sum_k r_k b_kd + x_d sum_k r_k g_kd for dimensions d0 .. d0 + B - 1, each sum over k in
// order: sum_k r_k (mu_k + g_k (x - m_k)) with two multiply-adds per (k, d) instead of five
// operations.
template <int L, int B>
inline __attribute__((always_inline)) void denoise_block(const LaneConstants<L>& c, const double* xg, const double* resp,
                                                         Index kk, Index dd, Index d0, double* den) {
  Lanes<L> sum_b[B] = {}, sum_g[B] = {};
  for (Index k = 0; k < kk; ++k) {
    const Lanes<L> r = load<L>(resp + k * L);
    for (int u = 0; u < B; ++u) {
      const Index i = (k * dd + d0 + u) * L;
      sum_b[u] += r * load<L>(c.offset.data() + i);
      sum_g[u] += r * load<L>(c.gain.data() + i);
    }
  }
  for (int u = 0; u < B; ++u) store<L>(den + (d0 + u) * L, sum_b[u] + sum_g[u] * load<L>(xg + (d0 + u) * L));
}

// One group of L rows, lane-interleaved: xg[d * L + j] is x_d of row j. Writes the
// responsibilities resp[k * L + j], top[j] + log(total) to log_p (if wanted) and, if wanted,
// the denoiser to den[d * L + j]. logit is K x L scratch.
template <int L, int Dim>
inline __attribute__((always_inline)) void group_kernel(const LaneConstants<L>& c, const double* xg, Index kk,
                                                        Index dd_runtime, double* logit, double* resp, double* log_p,
                                                        double* den) {
  const Index dd = Dim > 0 ? Dim : dd_runtime;
  // Log-responsibilities up to log p.
  const Lanes<L> zero = {};
  Lanes<L> top = zero - std::numeric_limits<double>::infinity();
  Index k = 0;
  for (; k + 4 <= kk; k += 4) logits_block<L, 4, Dim>(c, xg, k, dd, logit, top);
  for (; k < kk; ++k) logits_block<L, 1, Dim>(c, xg, k, dd, logit, top);
  // Then log-sum-exp; components in order.
  Lanes<L> total = {};
  for (k = 0; k < kk; ++k) {
    store<L>(logit + k * L, load<L>(logit + k * L) - top);
    exp_lanes<L>(logit + k * L, resp + k * L);
    total += load<L>(resp + k * L);
  }
  const Lanes<L> inv_total = 1.0 / total;
  for (k = 0; k < kk; ++k) store<L>(resp + k * L, load<L>(resp + k * L) * inv_total);
  if (log_p)
    for (Index j = 0; j < L; ++j) log_p[j] = top[j] + std::log(total[j]);
  if (den) {
    Index d = 0;
    for (; d + 4 <= dd; d += 4) denoise_block<L, 4>(c, xg, resp, kk, dd, d, den);
    for (; d < dd; ++d) denoise_block<L, 1>(c, xg, resp, kk, dd, d, den);
  }
}

// group_kernel compiled for each instruction set (x86-64: the SSE2 baseline, AVX2, AVX-512F), at
// the lane count of its widest register: the same source and the same operations in the same order,
// hence the same bits (tests/models/gaussian_mixture_test.cpp compares them), chosen once at run
// time (best_kernel below). The default build targets the SSE2 baseline, so that a binary runs
// anywhere; before this, the machines it ran on spent half their vector width on nothing.
// One register's width each: twice as many lanes (two registers per value) measured 1.5-2.5x slower
// with GCC 12, which then moves the values through memory.
constexpr int kBaselineLanes = 2, kAvx2Lanes = 4, kAvx512Lanes = 8;
template <int L, int Dim>
using GroupKernel = void (*)(const LaneConstants<L>&, const double*, Index, Index, double*, double*, double*, double*);

template <int Dim>
void group_kernel_baseline(const LaneConstants<kBaselineLanes>& c, const double* xg, Index kk, Index dd,
                           double* logit, double* resp, double* log_p, double* den) {
  group_kernel<kBaselineLanes, Dim>(c, xg, kk, dd, logit, resp, log_p, den);
}
#if DIFFODE_MIXTURE_X86_KERNELS
template <int Dim>
__attribute__((target("avx2"))) void group_kernel_avx2(const LaneConstants<kAvx2Lanes>& c, const double* xg, Index kk, Index dd,
                                                       double* logit, double* resp, double* log_p, double* den) {
  group_kernel<kAvx2Lanes, Dim>(c, xg, kk, dd, logit, resp, log_p, den);
}
template <int Dim>
__attribute__((target("avx512f"))) void group_kernel_avx512(const LaneConstants<kAvx512Lanes>& c, const double* xg, Index kk,
                                                            Index dd, double* logit, double* resp, double* log_p,
                                                            double* den) {
  group_kernel<kAvx512Lanes, Dim>(c, xg, kk, dd, logit, resp, log_p, den);
}
#endif

// The per-row work of GaussianMixture::evaluate. Dim > 0 fixes the dimension at compile time so
// that the inner loops of the small problems (the 2-D ring) unroll; Dim = 0 reads it at run time.
// Responsibilities, log p and the denoiser come from group_kernel, L rows at a time; the
// score, divergence and Jacobian-vector product then walk each row on its own.
template <int L, int Dim>
void evaluate_rows(GroupKernel<L, Dim> kernel, const Batch& x, const PerSample& alpha, const PerSample& sigma,
                   const GaussianMixture::Outputs& out, const Eigen::ArrayXd& log_weights, const Batch& means,
                   const Batch& variances) {
  const Index n = x.rows(), kk = means.rows();
  const Index dd = Dim > 0 ? Dim : means.cols();
  const bool want_score = out.score != nullptr, want_div = out.divergence != nullptr, want_jvp = out.jvp != nullptr;
  const bool need_score = want_score || want_div || want_jvp;

  // Scratch, allocated once per call. A group's rows of x are gathered into `xg` before any of
  // its output rows is written, so an output may alias x (score or denoiser in place). Each lane
  // keeps the constants of its last level: they are recomputed when a lane's level changes, i.e.
  // once per call when the whole batch shares one level.
  std::vector<LevelConstants> level(L, LevelConstants(kk, dd));
  LaneConstants<L> lanes(kk, dd);
  std::vector<double> xg(dd * L), logit(kk * L), resp(kk * L), den(dd * L), xr(dd), s(dd), acc(dd);
  double log_p[L];

  for (Index row0 = 0; row0 < n; row0 += L) {
    const Index used = std::min<Index>(L, n - row0);
    const double* rows[L];
    for (Index j = 0; j < L; ++j) {
      const Index row = row0 + std::min(j, used - 1);
      if (!level[j].matches(alpha[row], sigma[row])) {
        // Copied from a lane that already holds this level (all of them, when the batch shares
        // one): the same numbers without K x D more logarithms and divisions per lane and call.
        Index from = 0;
        while (from < j && !level[from].matches(alpha[row], sigma[row])) ++from;
        if (from < j)
          level[j] = level[from];
        else
          level[j].compute(log_weights, means, variances, alpha[row], sigma[row]);
        lanes.set(j, level[j]);
      }
      rows[j] = x.data() + row * dd;
    }
    // The transposition, lanes innermost: each xg line written whole.
    for (Index d = 0; d < dd; ++d)
      for (Index j = 0; j < L; ++j) xg[d * L + j] = rows[j][d];
    kernel(lanes, xg.data(), kk, dd, logit.data(), resp.data(), out.log_prob ? log_p : nullptr,
           out.denoised ? den.data() : nullptr);

    if (out.denoised) {
      double* rows_out = out.denoised->data() + row0 * dd;
      if (used == L)
        for (Index d = 0; d < dd; ++d)
          for (Index j = 0; j < L; ++j) rows_out[j * dd + d] = den[d * L + j];
      else
        for (Index j = 0; j < used; ++j)
          for (Index d = 0; d < dd; ++d) rows_out[j * dd + d] = den[d * L + j];
    }
    for (Index j = 0; j < used; ++j) {
      const Index row = row0 + j;
      if (out.log_prob) (*out.log_prob)[row] = log_p[j];
      if (!need_score) continue;

      const LevelConstants& c = level[j];
      for (Index d = 0; d < dd; ++d) xr[d] = xg[d * L + j];
      std::fill(s.begin(), s.end(), 0.0);
      for (Index k = 0; k < kk; ++k) {
        const double r = resp[k * L + j];
        if (r == 0.0) continue;  // underflowed: contributes exactly nothing
        const double* m = c.centre.data() + k * dd;
        const double* p = c.precision.data() + k * dd;
        for (Index d = 0; d < dd; ++d) s[d] -= r * (xr[d] - m[d]) * p[d];
      }
      if (want_score) std::copy_n(s.data(), dd, out.score->data() + row * dd);

      if (want_div) {
        // sum_k r_k (|s_k - s|^2 - tr(1/v_k)), s_k = -(x - m_k) / v_k
        double div = 0.0;
        for (Index k = 0; k < kk; ++k) {
          const double r = resp[k * L + j];
          if (r == 0.0) continue;
          const double* m = c.centre.data() + k * dd;
          const double* p = c.precision.data() + k * dd;
          double spread = 0.0;
          for (Index d = 0; d < dd; ++d) {
            const double delta = -(xr[d] - m[d]) * p[d] - s[d];
            spread += delta * delta;
          }
          div += r * (spread - c.trace[k]);
        }
        (*out.divergence)[row] = div;
      }

      if (want_jvp) {
        // sum_k r_k [(s_k - s) ((s_k - s) . v) - v / v_k]
        const double* v = out.jvp_direction->data() + row * dd;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (Index k = 0; k < kk; ++k) {
          const double r = resp[k * L + j];
          if (r == 0.0) continue;
          const double* m = c.centre.data() + k * dd;
          const double* p = c.precision.data() + k * dd;
          double along = 0.0;
          for (Index d = 0; d < dd; ++d) along += (-(xr[d] - m[d]) * p[d] - s[d]) * v[d];
          for (Index d = 0; d < dd; ++d) acc[d] += r * ((-(xr[d] - m[d]) * p[d] - s[d]) * along - v[d] * p[d]);
        }
        std::copy_n(acc.data(), dd, out.jvp->data() + row * dd);
      }
    }
  }
}

// The kernel in use unless set_mixture_kernel forced one: AVX2 where the CPU has it. The AVX-512F
// kernel is built and tested but not the default: on AMD Zen 4 (which executes 512-bit operations
// as two 256-bit halves) it measured 10-25% slower than AVX2 for D16 and D64 and about 10% faster
// for the 2-D ring (benchmarks/mixture_bench.cpp, results/benchmarks.md).
MixtureKernel best_kernel() {
#if DIFFODE_MIXTURE_X86_KERNELS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return MixtureKernel::avx2;
#endif
  return MixtureKernel::baseline;
}
std::atomic<MixtureKernel> forced_kernel{MixtureKernel::automatic};

template <int Dim>
void evaluate_dispatch(const Batch& x, const PerSample& alpha, const PerSample& sigma,
                       const GaussianMixture::Outputs& out, const Eigen::ArrayXd& log_weights, const Batch& means,
                       const Batch& variances) {
  switch (mixture_kernel()) {
#if DIFFODE_MIXTURE_X86_KERNELS
    case MixtureKernel::avx512:
      return evaluate_rows<kAvx512Lanes, Dim>(group_kernel_avx512<Dim>, x, alpha, sigma, out, log_weights, means, variances);
    case MixtureKernel::avx2:
      return evaluate_rows<kAvx2Lanes, Dim>(group_kernel_avx2<Dim>, x, alpha, sigma, out, log_weights, means, variances);
#endif
    default:
      return evaluate_rows<kBaselineLanes, Dim>(group_kernel_baseline<Dim>, x, alpha, sigma, out, log_weights, means, variances);
  }
}

}  // namespace

MixtureKernel mixture_kernel() {
  static const MixtureKernel best = best_kernel();
  const MixtureKernel forced = forced_kernel.load(std::memory_order_relaxed);
  return forced == MixtureKernel::automatic ? best : forced;
}

bool set_mixture_kernel(MixtureKernel kernel) {
  const bool available = [&] {
    switch (kernel) {
      case MixtureKernel::automatic:
      case MixtureKernel::baseline: return true;
#if DIFFODE_MIXTURE_X86_KERNELS
      case MixtureKernel::avx2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2") != 0;
      case MixtureKernel::avx512: __builtin_cpu_init(); return __builtin_cpu_supports("avx512f") != 0;
#endif
      default: return false;
    }
  }();
  if (available) forced_kernel.store(kernel, std::memory_order_relaxed);
  return available;
}

const char* to_string(MixtureKernel kernel) {
  switch (kernel) {
    case MixtureKernel::automatic: return "automatic";
    case MixtureKernel::baseline: return "baseline";
    case MixtureKernel::avx2: return "avx2";
    case MixtureKernel::avx512: return "avx512f";
  }
  return "unknown";
}

GaussianMixture::GaussianMixture(Eigen::ArrayXd weights, Batch means, Batch variances)
    : weights_(std::move(weights)), means_(std::move(means)), variances_(std::move(variances)) {
  const Index k = weights_.size();
  if (k < 1 || means_.rows() != k || variances_.rows() != k || variances_.cols() != means_.cols() || means_.cols() < 1)
    throw std::invalid_argument(fmt::format("GaussianMixture: {} weights, means {}x{}, variances {}x{}", k, means_.rows(),
                                            means_.cols(), variances_.rows(), variances_.cols()));
  if (!(weights_ > 0.0).all() || !weights_.isFinite().all())
    throw std::invalid_argument("GaussianMixture: weights must be positive and finite");
  if (!means_.isFinite().all()) throw std::invalid_argument("GaussianMixture: means must be finite");
  if (!(variances_ > 0.0).all() || !variances_.isFinite().all())
    throw std::invalid_argument("GaussianMixture: variances must be positive and finite");
  weights_ /= weights_.sum();
  log_weights_ = weights_.log();
  cumulative_weights_.resize(k);
  double acc = 0.0;
  for (Index i = 0; i < k; ++i) cumulative_weights_[i] = acc += weights_[i];
  cumulative_weights_[k - 1] = 1.0;  // u01 can return exactly 1: the last component must take it
}

GaussianMixture GaussianMixture::ring(Index components, double radius, double std) {
  if (components < 1 || !(radius >= 0.0) || !(std > 0.0))
    throw std::invalid_argument("GaussianMixture::ring: need components >= 1, radius >= 0, std > 0");
  Batch means(components, 2);
  for (Index k = 0; k < components; ++k) {
    const double angle = 2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(components);
    means(k, 0) = radius * std::cos(angle);
    means(k, 1) = radius * std::sin(angle);
  }
  return GaussianMixture(Eigen::ArrayXd::Ones(components), std::move(means), Batch::Constant(components, 2, std * std));
}

GaussianMixture GaussianMixture::random_isotropic(Index dims, Index components, std::uint64_t seed) {
  if (dims < 1 || components < 1) throw std::invalid_argument("GaussianMixture::random_isotropic: empty mixture");
  Eigen::ArrayXd weights(components);
  Batch means(components, dims), variances(components, dims);
  for (Index k = 0; k < components; ++k) {
    const auto [u_weight, u_std] = uniforms(seed, kConstructionStream, k, 0);
    weights[k] = 0.5 + u_weight;
    const double std = 0.3 + 0.4 * u_std;
    variances.row(k).setConstant(std * std);
    normals(seed, kConstructionStream, k, 1, means.data() + k * dims, dims);
  }
  return GaussianMixture(std::move(weights), std::move(means), std::move(variances));
}

GaussianMixture GaussianMixture::random_diagonal(Index dims, Index components, std::uint64_t seed) {
  if (dims < 1 || components < 1) throw std::invalid_argument("GaussianMixture::random_diagonal: empty mixture");
  Eigen::ArrayXd weights(components);
  Batch means(components, dims), variances(components, dims);
  const std::uint32_t std_blocks = static_cast<std::uint32_t>((dims + 1) / 2);
  for (Index k = 0; k < components; ++k) {
    weights[k] = 0.5 + uniforms(seed, kConstructionStream, k, 0).first;
    normals(seed, kConstructionStream, k, 1, means.data() + k * dims, dims);
    means.row(k) *= 1.5;
    for (Index d = 0; d < dims; d += 2) {
      const auto [u0, u1] = uniforms(seed, kConstructionStream, k, 1 + std_blocks + static_cast<std::uint32_t>(d / 2));
      // log-uniform std in [0.1, 1]: s = 10^(u - 1)
      variances(k, d) = std::pow(10.0, 2.0 * (u0 - 1.0));
      if (d + 1 < dims) variances(k, d + 1) = std::pow(10.0, 2.0 * (u1 - 1.0));
    }
  }
  return GaussianMixture(std::move(weights), std::move(means), std::move(variances));
}

Eigen::VectorXd GaussianMixture::mean() const {
  return (means_.colwise() * weights_).colwise().sum().matrix().transpose();
}

Eigen::MatrixXd GaussianMixture::covariance() const {
  // sum_k w_k (diag(s_k^2) + mu_k mu_k^T) - mean mean^T, centred first to avoid cancellation.
  const Eigen::VectorXd m = mean();
  const Index d = dims();
  Eigen::MatrixXd cov = Eigen::MatrixXd::Zero(d, d);
  for (Index k = 0; k < components(); ++k) {
    const Eigen::VectorXd c = means_.row(k).matrix().transpose() - m;
    cov.noalias() += weights_[k] * (c * c.transpose());
    cov.diagonal() += weights_[k] * variances_.row(k).matrix().transpose();
  }
  return cov;
}

void GaussianMixture::evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Outputs& out) const {
  const Index n = x.rows(), dd = dims();
  check_levels(x, alpha, sigma, dd);
  const bool want_jvp = out.jvp != nullptr;
  if (want_jvp && (out.jvp_direction == nullptr || out.jvp_direction->rows() != n || out.jvp_direction->cols() != dd))
    throw std::invalid_argument("GaussianMixture: a Jacobian-vector product needs a direction shaped like x");
  // A row of the direction is read after that row's score and denoiser are written (x's row, by
  // contrast, is copied first), so no output may be the direction.
  if (want_jvp && (out.jvp == out.jvp_direction || out.score == out.jvp_direction || out.denoised == out.jvp_direction))
    throw std::invalid_argument("GaussianMixture: no output may overwrite the Jacobian-vector product's direction");
  if (out.log_prob) out.log_prob->resize(n);
  if (out.score && (out.score->rows() != n || out.score->cols() != dd)) out.score->resize(n, dd);
  if (out.denoised && (out.denoised->rows() != n || out.denoised->cols() != dd)) out.denoised->resize(n, dd);
  if (out.divergence) out.divergence->resize(n);
  if (out.jvp && (out.jvp->rows() != n || out.jvp->cols() != dd)) out.jvp->resize(n, dd);

  switch (dd) {
    case 1: evaluate_dispatch<1>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    case 2: evaluate_dispatch<2>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    case 3: evaluate_dispatch<3>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
    default: evaluate_dispatch<0>(x, alpha, sigma, out, log_weights_, means_, variances_); break;
  }
}

PerSample GaussianMixture::log_prob(const Batch& x, const PerSample& alpha, const PerSample& sigma) const {
  PerSample out;
  evaluate(x, alpha, sigma, {.log_prob = &out});
  return out;
}

void GaussianMixture::score(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  evaluate(x, alpha, sigma, {.score = &out});
}

void GaussianMixture::denoise(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const {
  evaluate(x, alpha, sigma, {.denoised = &out});
}

PerSample GaussianMixture::score_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma) const {
  PerSample out;
  evaluate(x, alpha, sigma, {.divergence = &out});
  return out;
}

void GaussianMixture::score_jvp(const Batch& x, const PerSample& alpha, const PerSample& sigma, const Batch& v,
                                Batch& out) const {
  evaluate(x, alpha, sigma, {.jvp_direction = &v, .jvp = &out});
}

Batch GaussianMixture::sample(Index n, std::uint64_t seed, Index first_sample) const {
  return sample_marginal(1.0, 0.0, n, seed, first_sample);
}

Batch GaussianMixture::sample_marginal(double alpha, double sigma, Index n, std::uint64_t seed, Index first_sample) const {
  if (n < 0 || first_sample < 0) throw std::invalid_argument("GaussianMixture::sample: negative count or index");
  const Index kk = components(), dd = dims();
  Batch out(n, dd);
  std::vector<double> z(dd);
  for (Index i = 0; i < n; ++i) {
    const auto index = static_cast<std::uint64_t>(first_sample + i);
    const double u = uniforms(seed, kSampleStream, index, 0).first;
    const Index k = std::min<Index>(
        std::lower_bound(cumulative_weights_.data(), cumulative_weights_.data() + kk, u) - cumulative_weights_.data(),
        kk - 1);
    double* row = out.data() + i * dd;
    normals(seed, kSampleStream, index, 1, z.data(), dd);
    for (Index d = 0; d < dd; ++d) row[d] = alpha * (means_(k, d) + std::sqrt(variances_(k, d)) * z[d]);
    if (sigma != 0.0) {
      normals(seed, kSampleStream, index, kNoiseBlock, z.data(), dd);
      for (Index d = 0; d < dd; ++d) row[d] += sigma * z[d];
    }
  }
  return out;
}

}  // namespace diffode
