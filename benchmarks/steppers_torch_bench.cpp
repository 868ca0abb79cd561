// Cost of one step of each stepper on the Eigen state and on the LibTorch CPU state, side by side.
//
// A batch of 65,536 samples x 16 dims in float64 (8 MiB per state, far past the caches: the steps
// are memory-bound), a drift f = -x cheap enough that the state algebra is what is measured, and for
// the SDE steppers additive noise g = 0.5 with precomputed increments (the Brownian path is timed on
// its own below, because it costs more than any step). The counter ns_per_elem_stage is the time of
// one step divided by (samples x dims x drift evaluations per step). Both states run on one thread
// (LibTorch's intra-op pool is set to 1) so the numbers compare the algebra, not the core count.
#include "core/state_torch.hpp"
#include "solvers/brownian.hpp"
#include "solvers/ode/adams_bashforth.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/milstein.hpp"
#include "solvers/sde/sra1.hpp"
#include "solvers/sde/stochastic_heun.hpp"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cmath>

namespace diffode {
namespace {

using Tensor = torch::Tensor;

constexpr Index kRows = 65536;
constexpr Index kDims = 16;
constexpr double kStep = 1e-6;  // small, so a long benchmark run keeps x away from denormals

// f = -x, g = 0.5 (additive), g' = 0: one elementwise kernel per evaluation, written for each state
// with its natural in-place form.
struct CheapProblem {
  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::additive, .calculus = Calculus::ito, .has_diffusion_derivative = true};
  }
  void drift(const Batch& x, const PerSample& /*t*/, Batch& out) const { out = -x; }
  void diffusion(const Batch& x, const PerSample& /*t*/, Batch& out) const { out.setConstant(x.rows(), x.cols(), 0.5); }
  void diffusion_derivative(const Batch& x, const PerSample& /*t*/, Batch& out) const { out.setZero(x.rows(), x.cols()); }

  void drift(const Tensor& x, const Tensor& /*t*/, Tensor& out) const {
    if (reusable(out, x))
      torch::neg_out(out, x);
    else
      out = x.neg();
  }
  void diffusion(const Tensor& x, const Tensor& /*t*/, Tensor& out) const {
    if (reusable(out, x))
      out.fill_(0.5);
    else
      out = torch::full_like(x, 0.5);
  }
  void diffusion_derivative(const Tensor& x, const Tensor& /*t*/, Tensor& out) const {
    if (reusable(out, x))
      out.zero_();
    else
      out = torch::zeros_like(x);
  }
  static bool reusable(const Tensor& out, const Tensor& x) { return out.defined() && out.sizes() == x.sizes(); }
};

Batch host_batch(double scale) {
  Batch b(kRows, kDims);
  for (Index n = 0; n < kRows; ++n)
    for (Index d = 0; d < kDims; ++d) b(n, d) = scale * std::sin(0.37 * n + 1.3 * d + 0.2);
  return b;
}

template <class State>
State make_state(double scale) {
  if constexpr (std::same_as<State, Batch>)
    return host_batch(scale);
  else
    return StateOps<Tensor>::from_host(host_batch(scale), torch::empty({kRows, kDims}, torch::kFloat64));
}

template <class State>
void sync(const State& x) {
  if constexpr (std::same_as<State, Batch>)
    benchmark::DoNotOptimize(x.data());
  else
    benchmark::DoNotOptimize(x.data_ptr());
}

void report(benchmark::State& state, int stages) {
  // kIsRate | kInvert: seconds per unit, printed with an SI prefix (n = ns).
  state.counters["ns_per_elem_stage"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kRows * kDims * stages,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <template <class> class Stepper, class State>
void BM_OdeStep(benchmark::State& state) {
  Stepper<State> stepper;
  State x = make_state<State>(1.0);
  CheapProblem problem;
  double t = 0;
  // Warm-up: allocate the stepper's stages, and leave a multistep method's start-up behind.
  for (int i = 0; i < 4; ++i, t += kStep) stepper.step(problem, t, kStep, x);
  for (auto _ : state) {
    stepper.step(problem, t, kStep, x);
    t += kStep;
    sync(x);
  }
  report(state, Stepper<State>::traits.evaluations_per_step);
}

template <template <class> class Stepper, class State>
void BM_SdeStep(benchmark::State& state) {
  Stepper<State> stepper;
  State x = make_state<State>(1.0);
  const State dw = make_state<State>(std::sqrt(kStep));
  const State integral = make_state<State>(kStep * std::sqrt(kStep) / std::sqrt(3.0));
  CheapProblem problem;
  double t = 0;
  stepper.step(problem, t, kStep, x, Noise<State>{dw, integral});
  for (auto _ : state) {
    stepper.step(problem, t, kStep, x, Noise<State>{dw, integral});
    t += kStep;
    sync(x);
  }
  report(state, Stepper<State>::traits.evaluations_per_step);
}

// Dopri5's trial step with a step size per sample, its error ratio and a partial accept: the
// state-side work of one iteration of the per-sample adaptive driver (solvers/adaptive.hpp), less
// its host-side controller loop.
template <class State>
void BM_Dopri5PerSampleAttempt(benchmark::State& state) {
  using Ops = StateOps<State>;
  Dopri5<State> stepper;
  State x = make_state<State>(1.0), x_new, error;
  CheapProblem problem;
  const auto t = Ops::fill(x, 0.0);
  const auto h = Ops::fill(x, 1e-3);
  typename Ops::Mask accept(kRows);
  for (Index n = 0; n < kRows; ++n) accept[n] = n % 3 != 0;
  for (auto _ : state) {
    stepper.attempt(problem, t, h, x, x_new, error);
    const auto ratio = Ops::error_ratio(error, x, x_new, 1e-6, 1e-6);
    benchmark::DoNotOptimize(&ratio);
    Ops::select_rows(x_new, accept, x);  // keep x's value: the state does not drift over iterations
    stepper.accept(accept);
    sync(x_new);
  }
  report(state, Dopri5<State>::traits.evaluations_per_step);
}

// What the torch state adds to an SDE step: the Brownian increments' copy from the host.
void BM_FromHost(benchmark::State& state) {
  const Batch dw = host_batch(1e-3);
  const Tensor like = torch::empty({kRows, kDims}, torch::kFloat64);
  for (auto _ : state) {
    Tensor x = StateOps<Tensor>::from_host(dw, like);
    benchmark::DoNotOptimize(x.data_ptr());
  }
  report(state, 1);
}

// The Brownian increment W(t+h) - W(t) (virtual Brownian tree at its default depth, a generic
// time), the step's dominant cost whichever the state. On 1/16 of the batch, as a whole batch takes
// seconds per step; the counter is per (sample x dim) all the same.
void BM_BrownianIncrement(benchmark::State& state) {
  constexpr Index rows = kRows / 16;
  const BrownianPath path({.seed = 7, .t0 = 0.0, .t1 = 1.0, .dims = kDims});
  Batch dw(rows, kDims);
  double t = 0.1234567;
  for (auto _ : state) {
    path.increment(t, t + 1e-3, 0, dw);
    t += 1e-3;
    benchmark::DoNotOptimize(dw.data());
  }
  state.counters["ns_per_elem_stage"] = benchmark::Counter(static_cast<double>(state.iterations()) * rows * kDims,
                                                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <class S>
using AdamsBashforth4 = AdamsBashforth<S, 4>;

#define DIFFODE_STEP_BENCH(kind, stepper)                                                                 \
  BENCHMARK_TEMPLATE(kind, stepper, Batch)->Name(#stepper "/eigen")->Unit(benchmark::kMillisecond);     \
  BENCHMARK_TEMPLATE(kind, stepper, Tensor)->Name(#stepper "/torch")->Unit(benchmark::kMillisecond)

DIFFODE_STEP_BENCH(BM_OdeStep, Euler);
DIFFODE_STEP_BENCH(BM_OdeStep, Heun);
DIFFODE_STEP_BENCH(BM_OdeStep, Midpoint);
DIFFODE_STEP_BENCH(BM_OdeStep, Rk4);
DIFFODE_STEP_BENCH(BM_OdeStep, Dopri5);
DIFFODE_STEP_BENCH(BM_OdeStep, AdamsBashforth4);
DIFFODE_STEP_BENCH(BM_SdeStep, EulerMaruyama);
DIFFODE_STEP_BENCH(BM_SdeStep, StochasticHeun);
DIFFODE_STEP_BENCH(BM_SdeStep, Milstein);
DIFFODE_STEP_BENCH(BM_SdeStep, Sra1);
BENCHMARK_TEMPLATE(BM_Dopri5PerSampleAttempt, Batch)->Name("Dopri5PerSampleAttempt/eigen")->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Dopri5PerSampleAttempt, Tensor)->Name("Dopri5PerSampleAttempt/torch")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FromHost)->Name("FromHost/torch")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BrownianIncrement)->Name("BrownianIncrement/host")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace diffode

int main(int argc, char** argv) {
  at::set_num_threads(1);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
