// Cost of the Brownian path: ns per (sample x dim) point query, by tree depth reached.
// A dyadic time stops the descent at its level; any other time descends to max_depth.
#include "solvers/brownian.hpp"

#include <benchmark/benchmark.h>

namespace {

void BM_BrownianPoint(benchmark::State& state, double t, int max_depth) {
  const diffode::Index rows = 4096, dims = 16;
  const diffode::BrownianPath path({.seed = 1, .t0 = 0.0, .t1 = 1.0, .dims = dims, .max_depth = max_depth});
  diffode::Batch w(rows, dims), integral(rows, dims);
  for (auto _ : state) {
    path.point(t, 0, w, &integral);
    benchmark::DoNotOptimize(w.data());
  }
  state.counters["ns_per_element"] =
      benchmark::Counter(double(rows * dims) * state.iterations(), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

BENCHMARK_CAPTURE(BM_BrownianPoint, dyadic_depth_6, 0.015625 * 17, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPoint, generic_depth_20, 0.1234567, 20)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BrownianPoint, generic_depth_40, 0.1234567, 40)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
