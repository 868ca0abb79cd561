// Sampling throughput with the exact mixture: DPM-Solver++(2M) (Lu et al. 2022b, arXiv:2211.01095,
// Algorithm 2), 20 steps of a Karras grid (Karras et al. 2022, arXiv:2206.00364, eq. 5, rho = 7,
// final step to sigma = 0) on the EDM process, N = 65,536 samples in float64, for three mixtures:
//   ring    2-D ring, K = 8          (GaussianMixture::ring)
//   iso16   16-D isotropic, K = 10   (GaussianMixture::random_isotropic)
//   diag64  64-D diagonal, K = 4     (GaussianMixture::random_diagonal)
// and three implementations of the same run:
//   Eigen   sample_dpmpp_2m on StateOps<Batch> with ScaledDenoiser + MixturePredictor;
//   Torch   the same sampler template on StateOps<torch::Tensor> with MixturePredictorTorch (eager
//           LibTorch tensor operations in float64);
//   Flat    one hand-written loop over samples doing DPM-Solver++(2M)'s arithmetic with the mixture
//           denoiser inlined (std::exp, no abstractions): the cost the abstractions must not exceed.
// Each single-threaded; the *Threads variants run 2 threads (Eigen and Flat: the batch split into
// contiguous halves on std::threads, which must give bitwise the single-thread result, checked
// below; Torch: at::set_num_threads(2)). Mixture* benchmarks time one denoiser evaluation of the
// whole batch alone, for the FLOP rate.
//
// Counters: samples_per_s (kIsRate); ns_per_eval = time / (N x NFE); GFLOPs = the mixture's
// arithmetic (flops_per_eval below) x N x NFE / time and pct_peak against the FP64 peak of the
// cores used (kPeakGflopsPerCore); max_abs_diff = the largest difference of the final samples from
// the single-threaded Eigen run's; peak_MiB / base_MiB / state_MiB = the process's peak resident set
// during the run (VmHWM, reset before the run through /proc/self/clear_refs), its resident set
// before the run, and one state (N x D x 8 bytes). Single-threaded rates are per CPU second (Google
// Benchmark's default), so that they survive a loaded machine; the threaded ones use wall time.
//
// Run: build/benchmarks... sampling_torch_bench [--benchmark_filter=...]; one filter per process
// gives each path its own peak memory (the peak is process-wide and LibTorch's is loaded anyway).
#include "core/state_torch.hpp"
#include "models/gaussian_mixture.hpp"
#include "models/torch/mixture_predictor_torch.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/dpm_solver_pp.hpp"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <numbers>
#include <string>
#include <thread>
#include <vector>

namespace diffode {

namespace {

using Tensor = torch::Tensor;

constexpr Index kSamples = 65536;
constexpr int kSteps = 20;
constexpr std::uint64_t kSeed = 2024;

// FP64 peak of one core of this machine (AMD EPYC, family 25 model 17: Zen 4 "Genoa"), assuming its
// 2.6 GHz TSC rate as the clock (the VM exposes no boost clock): Zen 4 issues two 256-bit FMAs per
// cycle (AVX-512 is split into two halves), 2 x 4 x 2 = 16 FLOPs/cycle = 41.6 GFLOP/s with FMA;
// code built without -march (SSE2, no FMA) reaches at most 2 x 2 mul + 2 x 2 add = 8 FLOPs/cycle
// = 20.8 GFLOP/s. pct_peak is against the first (the machine's peak, whatever the build).
constexpr double kPeakGflopsPerCore = 2.6 * 16.0;

// The mixture's arithmetic per sample and evaluation, counting +, -, x, / as one FLOP each (an FMA
// as two) and exp as one (its polynomial is work of the implementation, not of the formula):
//   quadratic forms  |x - m_k|^2_{1/v_k}: sub, square, scale, accumulate      4 K D
//   logits           log_norm_k - q_k / 2                                      2 K
//   exp, sum, normalise                                                        1 K + 1 K + 1 + 1 K
//   posterior means  sum_k r_k (mu_k + g_k (x - m_k))  = sum_k r_k b_k + x sum_k r_k g_k
//                    with b_k = mu_k sigma^2 / v_k (two FMAs per (k, d), one per d)  4 K D + 2 D
// total 8 K D + 5 K + 2 D + 1: 173 (ring), 1363 (iso16), 2197 (diag64).
double flops_per_eval(Index k, Index d) { return 8.0 * k * d + 5.0 * k + 2.0 * d + 1.0; }

enum ProblemId { kRing = 0, kIso16 = 1, kDiag64 = 2 };

struct Setup {
  GaussianMixture mixture;
  std::unique_ptr<Process> process;
  std::vector<double> sigmas;
  Batch initial;  // x_T ~ p_T: the exact marginal at sigma_max (EDM: alpha = 1)
};

GaussianMixture make_mixture(int id) {
  switch (id) {
    case kRing: return GaussianMixture::ring();
    case kIso16: return GaussianMixture::random_isotropic(16, 10);
    default: return GaussianMixture::random_diagonal(64, 4);
  }
}

const Setup& setup(int id) {
  static std::map<int, std::unique_ptr<Setup>> cache;
  auto& slot = cache[id];
  if (!slot) {
    auto process = make_process("edm");
    const TimeGrid grid = karras_grid(*process, kSteps, FinalStep::to_zero);
    GaussianMixture mixture = make_mixture(id);
    Batch initial = mixture.sample_marginal(1.0, grid.sigma.front(), kSamples, kSeed);
    slot = std::make_unique<Setup>(Setup{std::move(mixture), std::move(process), grid.sigma, std::move(initial)});
  }
  return *slot;
}

// ---------------------------------------------------------------------------------------------
// Memory: the resident-set high-water mark of this process.
double status_mib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) / 1024.0;  // kB
  return std::numeric_limits<double>::quiet_NaN();
}
// Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current resident set.
void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct MemoryProbe {
  double base;
  MemoryProbe() {
    reset_peak();
    base = status_mib("VmRSS");
  }
  void report(benchmark::State& state, Index dims) const {
    state.counters["peak_MiB"] = status_mib("VmHWM");
    state.counters["base_MiB"] = base;
    state.counters["state_MiB"] = kSamples * dims * 8.0 / (1024.0 * 1024.0);
  }
};

void report_rates(benchmark::State& state, const Setup& s, Index nfe, int cores) {
  const double per_iter = static_cast<double>(kSamples);
  state.counters["samples_per_s"] = benchmark::Counter(per_iter, benchmark::Counter::kIsIterationInvariantRate);
  // kInvert of a rate: seconds per unit; scaled by 1e-9 to read in ns.
  state.counters["ns_per_eval"] = benchmark::Counter(per_iter * nfe * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  const double gflop = flops_per_eval(s.mixture.components(), s.mixture.dims()) * per_iter * nfe * 1e-9;
  state.counters["GFLOPs"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["pct_peak"] = benchmark::Counter(100.0 * gflop / (kPeakGflopsPerCore * cores),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

// The reference result: the single-threaded Eigen run (computed once per problem).
const Batch& reference(int id) {
  static std::map<int, Batch> cache;
  auto it = cache.find(id);
  if (it == cache.end()) {
    const Setup& s = setup(id);
    MixturePredictor predictor(s.mixture);
    ScaledDenoiser<Batch> denoiser(*s.process, predictor);
    Batch x = s.initial;
    sample_dpmpp_2m(denoiser, x, s.sigmas);
    it = cache.emplace(id, std::move(x)).first;
  }
  return it->second;
}

// ---------------------------------------------------------------------------------------------
// Eigen path.
void BM_SampleEigen(benchmark::State& state) {
  const int id = static_cast<int>(state.range(0));
  const Setup& s = setup(id);
  MixturePredictor predictor(s.mixture);
  ScaledDenoiser<Batch> denoiser(*s.process, predictor);
  Batch x;
  Index nfe = 0;
  const MemoryProbe memory;
  for (auto _ : state) {
    x = s.initial;  // a 0.5-8 MiB copy against a run of 20 evaluations of the whole batch
    nfe = sample_dpmpp_2m(denoiser, x, s.sigmas).nfe;
    benchmark::DoNotOptimize(x.data());
  }
  memory.report(state, s.mixture.dims());
  report_rates(state, s, nfe, 1);
  state.counters["max_abs_diff"] = (x - reference(id)).abs().maxCoeff();
}

// The same sampler on the batch taken in cache-sized chunks of 1024 samples, one after another:
// a 64-D state is 32 MiB, more than the last-level cache, so a whole-batch step streams it from
// memory several times, while a chunk stays in cache for all 20 steps (as the flat loop's single
// sample does). Rows are independent, so the result is the whole-batch one bit for bit.
void BM_SampleEigenChunked(benchmark::State& state) {
  const int id = static_cast<int>(state.range(0));
  constexpr Index chunk = 1024;
  const Setup& s = setup(id);
  MixturePredictor predictor(s.mixture);
  ScaledDenoiser<Batch> denoiser(*s.process, predictor);
  Batch x(kSamples, s.mixture.dims()), part;
  Index nfe = 0;
  const MemoryProbe memory;
  for (auto _ : state) {
    for (Index first = 0; first < kSamples; first += chunk) {
      const Index rows = std::min(chunk, kSamples - first);
      part = s.initial.middleRows(first, rows);
      nfe = sample_dpmpp_2m(denoiser, part, s.sigmas).nfe;
      x.middleRows(first, rows) = part;
    }
    benchmark::DoNotOptimize(x.data());
  }
  memory.report(state, s.mixture.dims());
  report_rates(state, s, nfe, 1);
  const double diff = (x - reference(id)).abs().maxCoeff();
  state.counters["max_abs_diff"] = diff;
  if (diff != 0.0) state.SkipWithError("the chunked run differs from the whole-batch one");
}

// The batch split into `threads` contiguous parts, each sampled on its own thread with its own
// denoiser (ScaledDenoiser keeps scratch); the predictor is shared. Rows are independent, so the
// result is the single-threaded one bit for bit.
void BM_SampleEigenThreads(benchmark::State& state) {
  const int id = static_cast<int>(state.range(0));
  constexpr int threads = 2;
  const Setup& s = setup(id);
  MixturePredictor predictor(s.mixture);
  std::array<Batch, threads> parts;
  const Index rows = kSamples / threads;
  Index nfe = 0;
  const MemoryProbe memory;
  for (auto _ : state) {
    std::vector<std::thread> pool;
    for (int p = 0; p < threads; ++p)
      pool.emplace_back([&, p] {
        ScaledDenoiser<Batch> denoiser(*s.process, predictor);
        parts[p] = s.initial.middleRows(p * rows, p + 1 == threads ? kSamples - p * rows : rows);
        const Index used = sample_dpmpp_2m(denoiser, parts[p], s.sigmas).nfe;
        if (p == 0) nfe = used;
      });
    for (auto& t : pool) t.join();
    benchmark::DoNotOptimize(parts[0].data());
  }
  memory.report(state, s.mixture.dims());
  report_rates(state, s, nfe, threads);
  double diff = 0.0;
  for (int p = 0; p < threads; ++p)
    diff = std::max(diff, (parts[p] - reference(id).middleRows(p * rows, parts[p].rows())).abs().maxCoeff());
  state.counters["max_abs_diff"] = diff;
  if (diff != 0.0) state.SkipWithError("the threaded run differs from the single-threaded one");
}

// ---------------------------------------------------------------------------------------------
// Torch path: the same sampler template and ScaledDenoiser on torch::Tensor.
void run_torch(benchmark::State& state, int torch_threads) {
  const int id = static_cast<int>(state.range(0));
  const Setup& s = setup(id);
  const int previous = at::get_num_threads();
  at::set_num_threads(torch_threads);
  MixturePredictorTorch predictor(s.mixture);
  ScaledDenoiser<Tensor> denoiser(*s.process, predictor);
  const Tensor initial = StateOps<Tensor>::from_host(s.initial, torch::empty({kSamples, s.mixture.dims()}, torch::kFloat64));
  Tensor x;
  Index nfe = 0;
  const MemoryProbe memory;
  for (auto _ : state) {
    x = initial.clone();
    nfe = sample_dpmpp_2m(denoiser, x, s.sigmas).nfe;
    benchmark::DoNotOptimize(x.data_ptr());
  }
  memory.report(state, s.mixture.dims());
  report_rates(state, s, nfe, torch_threads);
  state.counters["torch_threads"] = at::get_num_threads();
  state.counters["max_abs_diff"] = (StateOps<Tensor>::to_host(x) - reference(id)).abs().maxCoeff();
  at::set_num_threads(previous);
}
void BM_SampleTorch(benchmark::State& state) { run_torch(state, 1); }
void BM_SampleTorchThreads(benchmark::State& state) { run_torch(state, 2); }

// ---------------------------------------------------------------------------------------------
// Flat path: DPM-Solver++(2M) on the Karras grid with the mixture's denoiser written inline, one
// sample at a time through all 20 steps (its D numbers and history stay in registers and L1). The
// per-level constants and per-step coefficients are hoisted out of the sample loop, as anyone
// writing this by hand would; the dimension is a compile-time constant.
struct FlatLevel {
  std::vector<double> centre, precision, gain, log_norm;  // K x D (K for log_norm)
};
struct FlatStep {
  bool to_zero;           // the last step: x = D
  double ratio;           // sigma_{i+1} / sigma_i
  double c_now, c_prev;   // x <- ratio x + c_now D_i + c_prev D_{i-1}
};

template <int Dim>
void flat_dpmpp_2m(const GaussianMixture& m, std::span<const double> sigmas, Batch& x, Index begin, Index end) {
  const Index kk = m.components(), steps = static_cast<Index>(sigmas.size()) - 1;
  const double log_two_pi = std::log(2.0 * std::numbers::pi);
  std::vector<FlatLevel> level(steps);
  std::vector<FlatStep> step(steps);
  for (Index i = 0; i < steps; ++i) {
    // EDM: alpha = 1, sigma = sigma~.
    const double a = 1.0, sg = sigmas[i];
    FlatLevel& l = level[i];
    l.centre.resize(kk * Dim), l.precision.resize(kk * Dim), l.gain.resize(kk * Dim), l.log_norm.resize(kk);
    for (Index k = 0; k < kk; ++k) {
      double log_det = 0.0;
      for (int d = 0; d < Dim; ++d) {
        const double s2 = m.variances()(k, d), v = a * a * s2 + sg * sg;
        l.centre[k * Dim + d] = a * m.means()(k, d);
        l.precision[k * Dim + d] = 1.0 / v;
        l.gain[k * Dim + d] = a * s2 / v;
        log_det += std::log(v);
      }
      l.log_norm[k] = std::log(m.weights()[k]) - 0.5 * (Dim * log_two_pi + log_det);
    }
    // DPM-Solver++(2M) in the "dpmsolver" form: first step order 1, then
    // x_t = (sigma_t/sigma_s) x + h phi_1(-h) [(1 + 1/(2 r0)) D_s - 1/(2 r0) D_prev].
    FlatStep& st = step[i];
    st.to_zero = sigmas[i + 1] == 0.0;
    if (!st.to_zero) {
      const double h = lambda_of_sigma(sigmas[i + 1]) - lambda_of_sigma(sigmas[i]), hp = h * phi1(-h);
      st.ratio = sigmas[i + 1] / sigmas[i];
      const double c = i == 0 ? 0.0 : 0.5 / ((lambda_of_sigma(sigmas[i]) - lambda_of_sigma(sigmas[i - 1])) / h);
      st.c_now = hp * (1.0 + c);
      st.c_prev = hp * -c;
    }
  }
  std::vector<double> lr(kk);
  for (Index n = begin; n < end; ++n) {
    double xs[Dim], den[Dim], prev[Dim] = {};
    for (int d = 0; d < Dim; ++d) xs[d] = x(n, d);
    for (Index i = 0; i < steps; ++i) {
      const FlatLevel& l = level[i];
      double top = -std::numeric_limits<double>::infinity();
      for (Index k = 0; k < kk; ++k) {
        double q = 0.0;
        for (int d = 0; d < Dim; ++d) {
          const double diff = xs[d] - l.centre[k * Dim + d];
          q += diff * diff * l.precision[k * Dim + d];
        }
        lr[k] = l.log_norm[k] - 0.5 * q;
        top = std::max(top, lr[k]);
      }
      double total = 0.0;
      for (Index k = 0; k < kk; ++k) total += lr[k] = std::exp(lr[k] - top);
      for (int d = 0; d < Dim; ++d) den[d] = 0.0;
      for (Index k = 0; k < kk; ++k) {
        const double r = lr[k] / total;
        for (int d = 0; d < Dim; ++d)
          den[d] += r * (m.means()(k, d) + l.gain[k * Dim + d] * (xs[d] - l.centre[k * Dim + d]));
      }
      const FlatStep& st = step[i];
      for (int d = 0; d < Dim; ++d) {
        xs[d] = st.to_zero ? den[d] : st.ratio * xs[d] + (st.c_now * den[d] + st.c_prev * prev[d]);
        prev[d] = den[d];
      }
    }
    for (int d = 0; d < Dim; ++d) x(n, d) = xs[d];
  }
}

void flat_range(int id, const Setup& s, Batch& x, Index begin, Index end) {
  switch (id) {
    case kRing: return flat_dpmpp_2m<2>(s.mixture, s.sigmas, x, begin, end);
    case kIso16: return flat_dpmpp_2m<16>(s.mixture, s.sigmas, x, begin, end);
    default: return flat_dpmpp_2m<64>(s.mixture, s.sigmas, x, begin, end);
  }
}

void run_flat(benchmark::State& state, int threads) {
  const int id = static_cast<int>(state.range(0));
  const Setup& s = setup(id);
  Batch x;
  const MemoryProbe memory;
  for (auto _ : state) {
    x = s.initial;
    if (threads == 1) {
      flat_range(id, s, x, 0, kSamples);
    } else {
      std::vector<std::thread> pool;
      const Index rows = kSamples / threads;
      for (int p = 0; p < threads; ++p)
        pool.emplace_back([&, p] { flat_range(id, s, x, p * rows, p + 1 == threads ? kSamples : (p + 1) * rows); });
      for (auto& t : pool) t.join();
    }
    benchmark::DoNotOptimize(x.data());
  }
  memory.report(state, s.mixture.dims());
  report_rates(state, s, kSteps, threads);
  state.counters["max_abs_diff"] = (x - reference(id)).abs().maxCoeff();
}
void BM_SampleFlat(benchmark::State& state) { run_flat(state, 1); }
void BM_SampleFlatThreads(benchmark::State& state) { run_flat(state, 2); }

// ---------------------------------------------------------------------------------------------
// One evaluation of the mixture's denoiser on the whole batch at sigma = 1 (alpha = 1): the
// predictor alone, for its FLOP rate.
void BM_MixtureEigen(benchmark::State& state) {
  const Setup& s = setup(static_cast<int>(state.range(0)));
  const PerSample alpha = PerSample::Ones(kSamples), sigma = PerSample::Ones(kSamples);
  const Batch x = s.mixture.sample_marginal(1.0, 1.0, kSamples, kSeed + 1);
  Batch out;
  for (auto _ : state) {
    s.mixture.denoise(x, alpha, sigma, out);
    benchmark::DoNotOptimize(out.data());
  }
  report_rates(state, s, 1, 1);
  state.counters.erase("samples_per_s");
}

void BM_MixtureTorch(benchmark::State& state) {
  const Setup& s = setup(static_cast<int>(state.range(0)));
  const int previous = at::get_num_threads();
  at::set_num_threads(1);
  MixturePredictorTorch predictor(s.mixture);
  const Batch host = s.mixture.sample_marginal(1.0, 1.0, kSamples, kSeed + 1);
  const Tensor x = StateOps<Tensor>::from_host(host, torch::empty({kSamples, s.mixture.dims()}, torch::kFloat64));
  const Tensor ones = torch::ones({kSamples}, torch::kFloat64);
  Tensor out;
  for (auto _ : state) {
    predictor.predict(x, ones, ones, out);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  report_rates(state, s, 1, 1);
  state.counters.erase("samples_per_s");
  at::set_num_threads(previous);
}

void problems(benchmark::internal::Benchmark* b) {
  b->ArgNames({"problem"});
  for (int id : {kRing, kIso16, kDiag64}) b->Arg(id);
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_SampleEigen)->Apply(problems);
BENCHMARK(BM_SampleEigenChunked)->Apply(problems);
BENCHMARK(BM_SampleFlat)->Apply(problems);
BENCHMARK(BM_SampleTorch)->Apply(problems);
BENCHMARK(BM_SampleEigenThreads)->Apply(problems)->UseRealTime();
BENCHMARK(BM_SampleFlatThreads)->Apply(problems)->UseRealTime();
BENCHMARK(BM_SampleTorchThreads)->Apply(problems)->UseRealTime();
BENCHMARK(BM_MixtureEigen)->Apply(problems);
BENCHMARK(BM_MixtureTorch)->Apply(problems);

}  // namespace
}  // namespace diffode

BENCHMARK_MAIN();
