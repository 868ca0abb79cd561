// Cost of the Brownian path: ns per (sample x dim) point query, by tree depth reached.
// A dyadic time stops the descent at its level; any other time descends to max_depth.
// BM_BrownianPoint is the batched query (one descent's geometry per call, the per-element
// arithmetic in vectorised blocks); BM_BrownianPointScalar the reference it must equal bitwise,
// one at() descent per element (what point() did before), so one run gives the speed-up.
#include "solvers/brownian.hpp"

#include <benchmark/benchmark.h>

namespace {

constexpr diffode::Index kRows = 4096, kDims = 16;

void set_rate(benchmark::State& state) {
  state.counters["ns_per_element"] = benchmark::Counter(double(kRows * kDims) * state.iterations(),
                                                        benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_BrownianPoint(benchmark::State& state, double t, int max_depth) {
  const diffode::BrownianPath path({.seed = 1, .t0 = 0.0, .t1 = 1.0, .dims = kDims, .max_depth = max_depth});
  diffode::Batch w(kRows, kDims), integral(kRows, kDims);
  for (auto _ : state) {
    path.point(t, 0, w, &integral);
    benchmark::DoNotOptimize(w.data());
    benchmark::DoNotOptimize(integral.data());
  }
  set_rate(state);
}

void BM_BrownianPointScalar(benchmark::State& state, double t, int max_depth) {
  const diffode::BrownianPath path({.seed = 1, .t0 = 0.0, .t1 = 1.0, .dims = kDims, .max_depth = max_depth});
  diffode::Batch w(kRows, kDims), integral(kRows, kDims);
  for (auto _ : state) {
    for (diffode::Index r = 0; r < kRows; ++r) {
      for (diffode::Index c = 0; c < kDims; ++c) {
        const diffode::BrownianPath::Point p = path.at(t, r, c);
        w(r, c) = p.w;
        integral(r, c) = p.integral;
      }
    }
    benchmark::DoNotOptimize(w.data());
    benchmark::DoNotOptimize(integral.data());
  }
  set_rate(state);
}

BENCHMARK_CAPTURE(BM_BrownianPoint, dyadic_depth_6, 0.015625 * 17, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPoint, generic_depth_20, 0.1234567, 20)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPoint, generic_depth_40, 0.1234567, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPointScalar, dyadic_depth_6, 0.015625 * 17, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPointScalar, generic_depth_20, 0.1234567, 20)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPointScalar, generic_depth_40, 0.1234567, 40)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
