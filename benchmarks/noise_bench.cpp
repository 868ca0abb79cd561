// Cost of a stochastic sampler's noise per sample-step (ns per sample x dim x step): the per-step
// source (StepNormals) on each instruction set its kernel is built for, the Brownian tree asked at
// every grid point (BrownianPath::point, as the samplers did before), and the same tree through BrownianInterval (the upper levels cached), all
// walking a 20-step Karras grid over sigma in [0, 80], the tree at depth 40 and 24; and the
// Brownian-bridge tree on that grid (BrownianGrid, noise = "brownian_grid"), walked in order by a
// fresh instance per pass (its first pass over the grid, as a sampler's block sees it).
#include "solvers/brownian.hpp"
#include "solvers/brownian_grid.hpp"
#include "solvers/noise.hpp"

#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

namespace {

constexpr diffode::Index kRows = 4096, kDims = 16;

std::vector<double> karras_grid(int steps) {
  std::vector<double> g;
  const double rho = 7, lo = std::pow(0.002, 1 / rho), hi = std::pow(80.0, 1 / rho);
  for (int i = 0; i <= steps; ++i) g.push_back(std::pow(hi + i / double(steps) * (lo - hi), rho));
  return g;
}

void set_rate(benchmark::State& state, double steps) {
  state.counters["ns_per_sample_step"] = benchmark::Counter(double(kRows * kDims) * steps * state.iterations(),
                                                            benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_PerStep(benchmark::State& state, diffode::detail::NoiseIsa isa) {
  if (!diffode::detail::noise_isa_supported(isa)) {
    state.SkipWithError("this CPU lacks the instruction set");
    return;
  }
  diffode::StepNormals normals(1);
  normals.set_isa(isa);
  diffode::Batch z(kRows, kDims);
  const int steps = 20;
  for (auto _ : state) {
    for (int i = 0; i < steps; ++i) {
      normals.fill(i, 0, z);
      benchmark::DoNotOptimize(z.data());
    }
  }
  set_rate(state, steps);
}

void BM_Tree(benchmark::State& state, int depth) {
  const diffode::BrownianPath path({.seed = 1, .t0 = 80.0, .t1 = 0.0, .dims = kDims, .max_depth = depth});
  const std::vector<double> grid = karras_grid(20);
  diffode::Batch w(kRows, kDims);
  for (auto _ : state) {
    for (double t : grid) {  // one query per grid point, as the samplers walk
      path.point(t, 0, w, nullptr);
      benchmark::DoNotOptimize(w.data());
    }
  }
  set_rate(state, 20);
}

void BM_Interval(benchmark::State& state, int depth) {
  diffode::BrownianInterval interval({.seed = 1, .t0 = 80.0, .t1 = 0.0, .dims = kDims, .max_depth = depth});
  const std::vector<double> grid = karras_grid(20);
  diffode::Batch w(kRows, kDims);
  for (auto _ : state) {
    for (double t : grid) {
      interval.point(t, 0, w, nullptr);
      benchmark::DoNotOptimize(w.data());
    }
  }
  set_rate(state, 20);
}

void BM_BridgeGrid(benchmark::State& state) {
  const std::vector<double> grid = karras_grid(20);
  diffode::Batch w(kRows, kDims);
  for (auto _ : state) {
    diffode::BrownianGrid path(1, grid, kDims);
    for (double t : grid) {
      path.point(t, 0, w);
      benchmark::DoNotOptimize(w.data());
    }
  }
  set_rate(state, 20);
}

BENCHMARK_CAPTURE(BM_PerStep, baseline, diffode::detail::NoiseIsa::baseline)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PerStep, avx2, diffode::detail::NoiseIsa::avx2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PerStep, avx512, diffode::detail::NoiseIsa::avx512)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Tree, depth_40, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Interval, depth_40, 40)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Tree, depth_24, 24)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Interval, depth_24, 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BridgeGrid)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
