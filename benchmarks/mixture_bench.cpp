// The exact mixture's denoiser (models/gaussian_mixture.cpp) alone: its arithmetic rate against the
// machine's FP64 peak, for the three shipped shapes
//   ring    2-D ring, K = 8          (GaussianMixture::ring)
//   iso16   16-D isotropic, K = 10   (GaussianMixture::random_isotropic)
//   diag64  64-D diagonal, K = 4     (GaussianMixture::random_diagonal)
// on N = 65,536 samples at sigma = 1 (alpha = 1), evaluated in calls of `rows` rows (256 and 4096:
// blocks as the sampling command takes them, each call paying for its level's constants; 65,536:
// the whole batch at once, which for diag64 is a 32 MiB state streamed from memory), one thread, with each lane kernel this CPU runs
// (kernel: 0 = the one evaluate() picks, 1 = baseline SSE2, 2 = AVX2, 3 = AVX-512F; see
// mixture_kernel() in models/gaussian_mixture.hpp): all give the same bits, checked here too.
//
// Counters: GFLOPs = the formula's arithmetic (flops_per_eval below) x N / CPU time; pct_peak
// against kPeakGflopsPerCore; ns_per_sample.
//
// The peak assumed: one core of an AMD EPYC family 25 model 17 (Zen 4 "Genoa", what lscpu reports
// on the machine these numbers are measured on) at its 2.6 GHz TSC rate (the VM exposes no boost
// clock). Zen 4 has two 256-bit FP multiply (FMA) pipes and two 256-bit FP add pipes, AVX-512 being
// executed as two 256-bit halves: 2 x 4 FMAs x 2 = 16 FLOPs/cycle, and as many without FMA (two
// 4-wide multiplies and two 4-wide adds per cycle), which matters because the project compiles
// with -ffp-contract=off. 2.6 GHz x 16 = 41.6 GFLOP/s per core. SSE2 (128-bit) code can reach
// half of it at most. Adjust kPeakGflopsPerCore for another machine.
//
// Run: build/mixture_bench [--benchmark_filter=...]
#include "models/gaussian_mixture.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>

namespace diffode {
namespace {

constexpr Index kSamples = 65536;
constexpr double kPeakGflopsPerCore = 2.6 * 16.0;

// The formula's arithmetic per sample and evaluation, counting +, -, x, / as one FLOP each and exp
// as one (its polynomial is work of the implementation, not of the formula):
//   quadratic forms  |x - m_k|^2_{1/v_k}: sub, square, scale, accumulate      4 K D
//   logits           log_norm_k - q_k / 2                                      2 K
//   exp, sum, normalise                                                        1 K + 1 K + 1 + 1 K
//   posterior means  sum_k r_k b_k + x sum_k r_k g_k (two multiply-adds per (k, d), one per d)
//                                                                              4 K D + 2 D
// total 8 K D + 5 K + 2 D + 1: 173 (ring), 1363 (iso16), 2197 (diag64). The same count as
// benchmarks/sampling_torch_bench.cpp's.
double flops_per_eval(Index k, Index d) { return 8.0 * k * d + 5.0 * k + 2.0 * d + 1.0; }

GaussianMixture make_mixture(int id) {
  switch (id) {
    case 0: return GaussianMixture::ring();
    case 1: return GaussianMixture::random_isotropic(16, 10);
    default: return GaussianMixture::random_diagonal(64, 4);
  }
}

struct Setup {
  GaussianMixture mixture;
  Batch x;
  PerSample alpha, sigma;
};

const Setup& setup(int id) {
  static std::map<int, std::unique_ptr<Setup>> cache;
  auto& slot = cache[id];
  if (!slot) {
    GaussianMixture mixture = make_mixture(id);
    Batch x = mixture.sample_marginal(1.0, 1.0, kSamples, 2025);
    slot = std::make_unique<Setup>(
        Setup{std::move(mixture), std::move(x), PerSample::Ones(kSamples), PerSample::Ones(kSamples)});
  }
  return *slot;
}

// The whole batch's denoiser, `rows` at a time.
void denoise_blocks(const Setup& s, Index rows, Batch& out, Batch& part_x, Batch& part_out) {
  const Index dd = s.mixture.dims();
  out.resize(kSamples, dd);
  if (rows >= kSamples) return s.mixture.denoise(s.x, s.alpha, s.sigma, out);
  for (Index first = 0; first < kSamples; first += rows) {
    const Index n = std::min(rows, kSamples - first);
    part_x = s.x.middleRows(first, n);
    s.mixture.denoise(part_x, s.alpha.segment(first, n), s.sigma.segment(first, n), part_out);
    out.middleRows(first, n) = part_out;
  }
}

void BM_MixtureDenoise(benchmark::State& state) {
  const int id = static_cast<int>(state.range(0));
  const Index rows = state.range(1);
  const auto kernel = static_cast<MixtureKernel>(state.range(2));
  const Setup& s = setup(id);
  Batch reference, out, part_x, part_out;
  if (!set_mixture_kernel(MixtureKernel::baseline)) return state.SkipWithError("no baseline kernel");
  denoise_blocks(s, rows, reference, part_x, part_out);
  if (!set_mixture_kernel(kernel)) return state.SkipWithError("this CPU lacks the kernel's instruction set");
  state.SetLabel(to_string(mixture_kernel()));
  for (auto _ : state) {
    denoise_blocks(s, rows, out, part_x, part_out);
    benchmark::DoNotOptimize(out.data());
  }
  set_mixture_kernel(MixtureKernel::automatic);
  if (!(out.array() == reference.array()).all()) return state.SkipWithError("the kernel's bits differ from the baseline's");
  const double gflop = flops_per_eval(s.mixture.components(), s.mixture.dims()) * kSamples * 1e-9;
  state.counters["GFLOPs"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["pct_peak"] = benchmark::Counter(100.0 * gflop / kPeakGflopsPerCore, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ns_per_sample"] =
      benchmark::Counter(kSamples * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

BENCHMARK(BM_MixtureDenoise)
    ->ArgNames({"problem", "rows", "kernel"})
    ->ArgsProduct({{0, 1, 2}, {256, 4096, kSamples}, {1, 2, 3, 0}})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace diffode

BENCHMARK_MAIN();
