// Networks from C++: the cost of a TorchScript module's forward call through diffode's model path,
// and the sampler's share of a whole sampling run when the model is a network.
//
// The modules are those of tools/network_bench_modules.py (export DIR): float32 TorchScript versions
// of the project's residual MLP (2-D and 16-D, batch 4096) and Fashion-MNIST U-Net (1x28x28, base 16
// channels, attention at 7x7, 10 classes; batch 256), random weights, each an EDM-preconditioned
// denoiser (x~, sigma~[, class]) -> x0 (Karras et al. 2022, arXiv:2206.00364, Table 1). That script's
// `time` command times the same files from a Python loop; scripts/bench.sh --networks runs both,
// alternating, at equal thread counts, and prints the ratios.
//
//   BM_ForwardRaw/M        torch::jit::Module::forward on fixed float32 tensors under NoGradGuard:
//                          what the Python loop does, from C++;
//   BM_ForwardPredictor/M  the same module loaded by load_torchscript_model (float32, whole batch
//                          per call) and called as a Predictor<Batch> on a float64 Eigen batch: the
//                          raw call plus diffode's per-row levels and the float64 <-> float32 copies;
//   BM_Sample/M            DPM-Solver++(2M) (Lu et al. 2022b, arXiv:2211.01095, Algorithm 2), 20
//                          steps of a Karras grid (Karras et al. 2022, eq. 5, rho = 7, final step to
//                          sigma = 0) on the EDM process, N = the module's batch in float64, with the
//                          predictor wrapped so that the wall time of every network call is summed
//                          in the same run.
// Counters: ms_per_call, the wall time of one forward call, and cpu_ms_per_call, the process's CPU
// time over all its threads during the call (as Python's time.process_time()); for BM_Sample, nfe,
// network_ms (the wall time summed over the run's network calls, the predictor's conversions
// included), solver_ms (the rest of the run: the sampler's state arithmetic, the denoiser wrapper)
// and solver_pct = 100 solver_ms / (network_ms + solver_ms), the sampler's share of sampling time.
// BM_ForwardPredictor's max_abs_diff is its prediction's largest difference from the raw call's on
// the same input. Wall time is Google Benchmark's measure here (LibTorch's intra-op threads work
// outside the calling thread). Every module has had a few warm-up calls at load, which also let
// TorchScript's profiling executor settle (the Python side warms up as many).
//
// Run: build/network_torch_bench --modules=DIR [--threads=T] [--calls=N] [--runs=N]
//        [--benchmark_filter=...]
//   --modules  the folder written by tools/network_bench_modules.py export
//   --threads  LibTorch's intra-op threads (default 1); --calls forward calls timed per benchmark
//              (default 5); --runs sampling runs timed (default 1)
#include "models/torch/network_model_torch.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/dpm_solver_pp.hpp"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace diffode {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }
// CPU time of the whole process (all threads), as Python's time.process_time().
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

constexpr int kSteps = 20;
constexpr int kWarmupCalls = 3;
constexpr Index kClasses = 10;

struct Options {
  std::string modules;
  int threads = 1;
  int calls = 5;
  int runs = 1;
};
Options options;

// The modules of tools/network_bench_modules.py (its MODULES table).
struct Case {
  const char* name;
  Index dims;
  Index batch;
  bool unet;  // signature (x~, sigma~, class) with 10 classes; else (x~, sigma~)
};
constexpr Case kCases[] = {{"mlp2", 2, 4096, false}, {"mlp16", 16, 4096, false}, {"unet", 784, 256, true}};

std::string file_of(const Case& c) { return (std::filesystem::path(options.modules) / (std::string(c.name) + ".pt")).string(); }

// One fixed input per case: x ~ N(0, 1) rows at sigma~ = 1 (alpha = 1), the null class.
struct Input {
  Batch x;
  PerSample alpha, sigma;
  std::vector<torch::jit::IValue> tensors;  // float32 (x, sigma[, class]) for the raw call
};

const Input& input_of(const Case& c) {
  static std::map<std::string, Input> cache;
  auto it = cache.find(c.name);
  if (it != cache.end()) return it->second;
  Input in;
  in.x.resize(c.batch, c.dims);
  std::mt19937_64 engine(2024);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < in.x.size(); ++i) in.x.data()[i] = normal(engine);
  in.alpha = PerSample::Ones(c.batch);
  in.sigma = PerSample::Ones(c.batch);
  const torch::Tensor x = torch::from_blob(in.x.data(), {c.batch, c.dims}, torch::kFloat64).to(torch::kFloat32);
  in.tensors = {x, torch::ones({c.batch}, torch::kFloat32)};
  if (c.unet) in.tensors.emplace_back(torch::full({c.batch}, kClasses, torch::kInt64));
  return cache.emplace(c.name, std::move(in)).first->second;
}

// The module as Python's torch.jit.load gives it, warmed up.
torch::jit::Module& raw_module(const Case& c) {
  static std::map<std::string, torch::jit::Module> cache;
  auto it = cache.find(c.name);
  if (it != cache.end()) return it->second;
  torch::jit::Module module = torch::jit::load(file_of(c));
  module.eval();
  const torch::NoGradGuard no_grad;
  for (int i = 0; i < kWarmupCalls; ++i) module.forward(input_of(c).tensors);
  return cache.emplace(c.name, std::move(module)).first->second;
}

// The module as diffode loads it: a TorchScript model trained under the EDM process (t = sigma~,
// alpha = 1), taking x~ and sigma~, predicting x0; float32 on the CPU, the whole batch per call.
const NetworkModel& network_model(const Case& c) {
  static std::map<std::string, std::shared_ptr<const NetworkModel>> cache;
  auto& slot = cache[c.name];
  if (!slot) {
    TorchScriptSpec spec;
    spec.file = file_of(c);
    spec.dims = c.dims;
    spec.prediction = Parameterization::x0;
    spec.signature = c.unet ? "x_t_class" : "x_sigma";
    spec.time_input = "sigma";
    spec.scale_free_input = true;
    spec.classes = c.unet ? kClasses : 0;
    spec.t_of_scaled_sigma = [](double s) { return s; };
    spec.alpha = [](double) { return 1.0; };
    spec.sigma = [](double t) { return t; };
    NetworkRuntime runtime;
    runtime.dtype = "float32";
    runtime.threads = options.threads;
    slot = load_torchscript_model(spec, runtime);
    const auto predictor = slot->make_predictor(-1);
    const Input& in = input_of(c);
    Batch out;
    for (int i = 0; i < kWarmupCalls; ++i) predictor->predict(in.x, in.alpha, in.sigma, out);
  }
  return *slot;
}

void BM_ForwardRaw(benchmark::State& state, const Case& c) {
  torch::jit::Module& module = raw_module(c);
  const Input& in = input_of(c);
  const torch::NoGradGuard no_grad;
  double seconds = 0, cpu = 0;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const torch::Tensor out = module.forward(in.tensors).toTensor();
    cpu += process_cpu_seconds() - cpu_start;
    seconds += seconds_since(start);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["ms_per_call"] = 1e3 * seconds / static_cast<double>(state.iterations());
  state.counters["cpu_ms_per_call"] = 1e3 * cpu / static_cast<double>(state.iterations());
  state.counters["threads"] = at::get_num_threads();
}

void BM_ForwardPredictor(benchmark::State& state, const Case& c) {
  const auto predictor = network_model(c).make_predictor(-1);
  const Input& in = input_of(c);
  Batch out;
  double seconds = 0, cpu = 0;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    predictor->predict(in.x, in.alpha, in.sigma, out);
    cpu += process_cpu_seconds() - cpu_start;
    seconds += seconds_since(start);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["ms_per_call"] = 1e3 * seconds / static_cast<double>(state.iterations());
  state.counters["cpu_ms_per_call"] = 1e3 * cpu / static_cast<double>(state.iterations());
  state.counters["threads"] = at::get_num_threads();
  torch::Tensor raw;
  {
    const torch::NoGradGuard no_grad;
    raw = raw_module(c).forward(in.tensors).toTensor().to(torch::kFloat64).contiguous();
  }
  const Batch expected = Eigen::Map<const Batch>(raw.data_ptr<double>(), c.batch, c.dims);
  state.counters["max_abs_diff"] = (out - expected).abs().maxCoeff();
}

// A predictor that sums the wall time of its inner predictor's calls.
class TimedPredictor final : public Predictor<Batch> {
 public:
  explicit TimedPredictor(const Predictor<Batch>& inner) : inner_(inner) {}
  Parameterization native() const override { return inner_.native(); }
  double seconds() const { return seconds_; }

 protected:
  void evaluate(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& out) const override {
    const Clock::time_point start = Clock::now();
    inner_.predict(x, alpha, sigma, out);
    seconds_ += seconds_since(start);
  }

 private:
  const Predictor<Batch>& inner_;
  mutable double seconds_ = 0;
};

void BM_Sample(benchmark::State& state, const Case& c) {
  const auto process = make_process("edm");
  const TimeGrid grid = karras_grid(*process, kSteps, FinalStep::to_zero);
  const auto inner = network_model(c).make_predictor(-1);
  const TimedPredictor predictor(*inner);
  const ScaledDenoiser<Batch> denoiser(*process, predictor);
  Batch initial(c.batch, c.dims);
  std::mt19937_64 engine(7);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < initial.size(); ++i) initial.data()[i] = grid.sigma.front() * normal(engine);
  Batch x;
  Index nfe = 0;
  double total = 0;
  for (auto _ : state) {
    x = initial;
    const Clock::time_point start = Clock::now();
    nfe += sample_dpmpp_2m(denoiser, x, grid.sigma).nfe;
    total += seconds_since(start);
    benchmark::DoNotOptimize(x.data());
  }
  if (!x.allFinite()) state.SkipWithError("the run produced non-finite samples");
  const double network = predictor.seconds(), runs = static_cast<double>(state.iterations());
  state.counters["nfe"] = static_cast<double>(nfe) / runs;
  state.counters["network_ms"] = 1e3 * network / runs;
  state.counters["solver_ms"] = 1e3 * (total - network) / runs;
  state.counters["solver_pct"] = 100.0 * (total - network) / total;
  state.counters["network_ms_per_call"] = 1e3 * network / static_cast<double>(nfe);
  state.counters["threads"] = at::get_num_threads();
}

}  // namespace
}  // namespace diffode

int main(int argc, char** argv) {
  using diffode::options;
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&](std::string_view flag) { return std::string(arg.substr(flag.size())); };
    if (arg.starts_with("--modules=")) options.modules = value("--modules=");
    else if (arg.starts_with("--threads=")) options.threads = std::stoi(value("--threads="));
    else if (arg.starts_with("--calls=")) options.calls = std::stoi(value("--calls="));
    else if (arg.starts_with("--runs=")) options.runs = std::stoi(value("--runs="));
    else {
      std::fprintf(stderr, "network_torch_bench: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (options.modules.empty() || !std::filesystem::is_directory(options.modules)) {
    std::fprintf(stderr, "network_torch_bench: --modules=DIR, a folder written by tools/network_bench_modules.py export DIR\n");
    return 2;
  }
  if (options.threads < 1 || options.calls < 1 || options.runs < 1) {
    std::fprintf(stderr, "network_torch_bench: --threads, --calls and --runs must be positive\n");
    return 2;
  }
  at::set_num_threads(options.threads);
  for (const diffode::Case& c : diffode::kCases) {
    const std::string name = c.name;
    benchmark::RegisterBenchmark(("BM_ForwardRaw/" + name).c_str(), diffode::BM_ForwardRaw, c)
        ->Iterations(options.calls)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_ForwardPredictor/" + name).c_str(), diffode::BM_ForwardPredictor, c)
        ->Iterations(options.calls)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_Sample/" + name).c_str(), diffode::BM_Sample, c)
        ->Iterations(options.runs)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
