// Network models from configs ([model] kind = "torchscript"), end to end: every registered sampler
// runs on a TorchScript module and gives the samples of the exact model the module computes, the
// config errors name their key, and the `diffode` binary, which opens the network backend itself,
// writes the same samples with the module's SHA-256 in the results file.
//
// The modules (tests/support/torchscript_modules.hpp) compute the exact predictions of N(0, 0.25 I)
// data, once as a scale-free denoiser D(x~; sigma~) and once as the eps of the linear VP process in
// its own time. The same Gaussian as a one-component mixture is the control: the two models agree
// to rounding at every level, every sampler draws the same noise from the same seed (noise is keyed
// by seed and row, never by the model), so the two runs must agree to rounding too.
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampler_registry.hpp"
#include "experiments/run/sampling.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "tests/support/sampling_config.hpp"
#include "tests/support/temp_folder.hpp"
#include "tests/support/torchscript_modules.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace diffode {
namespace {

using testing::torchscript_modules;

const std::string kGaussian = "weights = [1.0]\nmeans = [[0.0, 0.0]]\nvariances = [[0.25, 0.25]]\n";

// A module's [model] table (with the Gaussian as ground truth unless `truth` is false).
struct ModuleCase {
  std::string process;
  std::string model;
};

std::vector<ModuleCase> module_cases() {
  const std::string dir = torchscript_modules().string();
  return {{"edm", fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_x0.pt\"\ndims = 2\nprediction = \"x0\"\nsignature = \"x_sigma\"\n"
                              "time_input = \"sigma\"\nscale_free_input = true\nbatch_size = 5\n",
                              dir)},
          {"vp", fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\ndims = 2\nprediction = \"eps\"\nbatch_size = 3\n", dir)}};
}

// [grid] and [sampler] of a short run of `sampler` with its defaults.
std::string plan(const SamplerEntry& e) {
  if (e.name == "annealed_langevin")
    return fmt::format("[grid]\nschedule = \"uniform_lambda\"\nsteps = 4\n[sampler]\nname = \"{}\"\ncorrector_steps = 2\n", e.name);
  return fmt::format("[grid]\nschedule = \"karras\"\nsteps = 10\n[sampler]\nname = \"{}\"\n", e.name);
}

std::string config(const std::string& process, const std::string& model, const std::string& plan_text, const std::string& run_extra = "") {
  return fmt::format("[process]\nname = \"{}\"\n[model]\n{}{}[run]\nsamples = 12\nseed = 3\n{}", process, model, plan_text, run_extra);
}

SamplingSetup setup_of(const std::string& text) { return testing::sampling_setup_of(text, "network.toml"); }

// The ConfigError a config raises, or "" when it reads.
std::string config_error(const std::string& text) { return testing::sampling_config_error(text, "network.toml"); }

class NetworkSamplingTest : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    if (torchscript_modules().empty()) GTEST_SKIP() << testing::kNoPythonTorch;
    use_network_backend(diffode_network_backend());
  }
};

TEST_F(NetworkSamplingTest, EverySamplerOnATorchScriptModuleGivesTheExactModelsSamples) {
  for (const ModuleCase& c : module_cases()) {
    for (const SamplerEntry& e : sampler_registry()) {
      SCOPED_TRACE(c.process + " / " + e.name);
      const SamplingSetup network = setup_of(config(c.process, c.model + "[model.ground_truth]\n" + kGaussian, plan(e)));
      const SamplingSetup exact = setup_of(config(c.process, kGaussian, plan(e)));
      ASSERT_TRUE(network.network);
      EXPECT_EQ(network.dims(), 2);
      const SamplingOutcome a = run_sampling(network, initial_noise(network), 1);
      const SamplingOutcome b = run_sampling(exact, initial_noise(exact), 1);
      ASSERT_FALSE(a.failed) << a.failure;
      ASSERT_FALSE(b.failed) << b.failure;
      EXPECT_TRUE((a.initial == b.initial).all());
      ASSERT_EQ(a.samples.rows(), 12);
      EXPECT_LT((a.samples - b.samples).abs().maxCoeff(), 1e-7 * (1.0 + b.samples.abs().maxCoeff()));
      EXPECT_EQ(a.nfe, b.nfe);
    }
  }
}

// A diffode checkpoint (kind = "network"): a small seeded, untrained MLP read as an EDM denoiser.
// Every sampler runs on it to finite samples, and a run's samples do not depend on batch_size.
TEST_F(NetworkSamplingTest, EverySamplerRunsOnACheckpointIndependentlyOfBatchSize) {
  torch::manual_seed(11);
  NetworkSpec spec;
  spec.architecture = {.dims = 2, .width = 16, .blocks = 1, .embedding_dims = 8};
  spec.output = NetworkOutput::edm;
  ScoreMlp network(spec.architecture);
  network->to(torch::kFloat64);
  const std::string file = (dir_ / "tiny.ckpt").string();
  save_network(file, spec, network);
  for (const std::string process : {"edm", "vp"})
    for (const SamplerEntry& e : sampler_registry()) {
      SCOPED_TRACE(process + " / " + e.name);
      const SamplingSetup whole = setup_of(config(process, fmt::format("kind = \"network\"\nfile = \"{}\"\n", file), plan(e)));
      const SamplingSetup chunked = setup_of(config(process, fmt::format("kind = \"network\"\nfile = \"{}\"\nbatch_size = 5\n", file), plan(e)));
      const SamplingOutcome a = run_sampling(whole, initial_noise(whole), 1);
      const SamplingOutcome b = run_sampling(chunked, initial_noise(chunked), 1);
      ASSERT_FALSE(a.failed) << a.failure;
      EXPECT_TRUE(a.samples.isFinite().all());
      EXPECT_TRUE((a.samples == b.samples).all()) << (a.samples - b.samples).abs().maxCoeff();
    }
}

TEST_F(NetworkSamplingTest, WithoutAGroundTruthThePriorNoiseIsTheSame) {
  const ModuleCase c = module_cases()[1];
  const SamplerEntry& e = sampler_registry().front();
  const SamplingSetup with = setup_of(config(c.process, c.model + "[model.ground_truth]\n" + kGaussian, plan(e)));
  const SamplingSetup without = setup_of(config(c.process, c.model, plan(e)));
  EXPECT_FALSE(without.mixture);
  const SamplingOutcome a = run_sampling(with, initial_noise(with), 1);
  const SamplingOutcome b = run_sampling(without, initial_noise(without), 1);
  EXPECT_TRUE((a.initial == b.initial).all());
  EXPECT_TRUE((a.samples == b.samples).all());
}

TEST_F(NetworkSamplingTest, ConfigErrorsNameTheirKey) {
  const std::string dir = torchscript_modules().string();
  const std::string grid = plan(sampler_registry().front());
  const auto expect_error = [&](const std::string& model, const std::vector<std::string>& parts, const std::string& run_extra = "") {
    const std::string what = config_error(config("vp", model, grid, run_extra));
    ASSERT_FALSE(what.empty()) << model;
    for (const std::string& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  };
  const std::string eps = "dims = 2\nprediction = \"eps\"\n";
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/absent.pt\"\n{}", dir, eps), {"model.file", dir + "/absent.pt: no such file"});
  expect_error(fmt::format("kind = \"network\"\nfile = \"{}/absent.ckpt\"\n", dir), {"model.file", dir + "/absent.ckpt: no such file"});
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/wrong_shape.pt\"\n{}", dir, eps),
               {"model.file", dir + "/wrong_shape.pt", "expected signature forward(x [N, 2] float64, t [N] float64"});
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\nprediction = \"eps\"\n", dir), {"model.kind", "needs dims"});
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\n{}preset = \"ring2d\"\n", dir, eps),
               {"model.preset", "[model.ground_truth]"});
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\n{}device = \"gpu\"\n", dir, eps), {"model.device"});
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\n{}", dir, eps), {"run.initial", "[model.ground_truth]"},
               "initial = \"exact\"\n");
  expect_error(fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\n{}[model.ground_truth]\npreset = \"iso16\"\n", dir, eps),
               {"model.ground_truth", "16-D mixture"});
  expect_error("preset = \"ring2d\"\ndevice = \"cpu\"\n", {"model.device", "only with kind"});
}

// Runs the `diffode` binary (which does not link LibTorch and opens the backend beside it).
struct BinaryResult {
  int status = -1;
  std::string err;
};

BinaryResult run_binary(const std::filesystem::path& dir, const std::filesystem::path& config_path, const std::string& command_name = "sample") {
  const std::string command = fmt::format("cd '{}' && '{}' {} '{}' --threads 2 > out.txt 2> err.txt", dir.string(), DIFFODE_BINARY, command_name,
                                          config_path.string());
  const int raw = std::system(command.c_str());
  BinaryResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(dir / "err.txt");
  std::ostringstream text;
  text << in.rdbuf();
  r.err = text.str();
  return r;
}

TEST_F(NetworkSamplingTest, TheBinaryOpensTheBackendAndWritesTheModulesSamplesAndSha256) {
  const ModuleCase c = module_cases()[1];
  const SamplerEntry* heun = find_sampler("heun");
  ASSERT_NE(heun, nullptr);
  // Three blocks of 4 rows on 2 threads: the module runs from two threads at once.
  const std::string text =
      config(c.process, c.model, plan(*heun), fmt::format("block_rows = 4\noutput = \"{}\"\n", (dir_ / "samples.h5").string()));
  const BinaryResult r = run_binary(dir_, write_config("run.toml", text));
  ASSERT_EQ(r.status, 0) << r.err;
  const Hdf5File out(dir_ / "samples.h5", Hdf5File::Mode::read);
  const SamplingSetup s = setup_of(text);
  const SamplingOutcome in_process = run_sampling(s, initial_noise(s), 1);
  // Threads split fixed blocks, and every row's prediction is its own: the same numbers.
  EXPECT_TRUE((out.read_matrix("samples") == in_process.samples).all());
  const std::string model = out.read_string_attribute("/", "model");
  EXPECT_NE(model.find(torchscript_modules().string() + "/gauss_eps_vp.pt (sha256 "), std::string::npos) << model;
  EXPECT_EQ(model, s.network->description());

  // A module that does not take the stated signature: exit 2, naming the file and the signature.
  const std::string bad = config(c.process,
                                 fmt::format("kind = \"torchscript\"\nfile = \"{}/wrong_arity.pt\"\ndims = 2\nprediction = \"eps\"\n",
                                             torchscript_modules().string()),
                                 plan(*heun), fmt::format("output = \"{}\"\n", (dir_ / "bad.h5").string()));
  const BinaryResult refused = run_binary(dir_, write_config("bad.toml", bad));
  EXPECT_EQ(refused.status, 2) << refused.err;
  EXPECT_NE(refused.err.find("wrong_arity.pt"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("expected signature forward(x [N, 2] float64, t [N] float64"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad.h5"));
}

TEST_F(NetworkSamplingTest, SweepMeasuresTheSolverAgainstTheNetworksOwnFlowAndTheLawAgainstTheGroundTruth) {
  const ModuleCase c = module_cases()[1];
  const std::string sweep = fmt::format(
      "[sweep]\nname = \"network\"\noutput = \"{}\"\n[sweep.product]\nsampler = [{{ name = \"heun\" }}, {{ name = \"euler\" }}]\n"
      "\"grid.steps\" = [4, 16]\n[process]\nname = \"{}\"\n[model]\n{}[model.ground_truth]\n{}[grid]\nschedule = \"karras\"\n"
      "[run]\nsamples = 16\nseed = 5\n",
      (dir_ / "sweep.h5").string(), c.process, c.model, kGaussian);
  const BinaryResult r = run_binary(dir_, write_config("sweep.toml", sweep), "sweep");
  ASSERT_EQ(r.status, 0) << r.err;
  const Hdf5File out(dir_ / "sweep.h5", Hdf5File::Mode::read);
  std::map<std::string, std::map<double, double>> error;  // sampler -> steps -> error_rms
  for (const std::string& id : out.members("runs")) {
    const std::string run = "runs/" + id;
    EXPECT_EQ(out.read_string_attribute(run, "status"), "ok") << out.read_string_attribute(run, "failure");
    EXPECT_NE(out.read_string_attribute(run, "model").find("gauss_eps_vp.pt (sha256 "), std::string::npos);
    EXPECT_TRUE(std::isfinite(out.read_double_attribute(run, "energy")));
    error[out.read_string_attribute(run, "sampler")][out.read_double_attribute(run, "steps")] = out.read_double_attribute(run, "error_rms");
  }
  ASSERT_EQ(error.size(), 2u);
  // Against the network's own probability flow, more steps of a convergent solver come closer.
  for (const auto& [sampler, by_steps] : error) {
    ASSERT_EQ(by_steps.size(), 2u) << sampler;
    EXPECT_LT(by_steps.at(16), 0.5 * by_steps.at(4)) << sampler;
  }

  // Without the ground truth the law metrics (on by default) are refused, naming their key.
  const std::string without = sweep.substr(0, sweep.find("[model.ground_truth]")) + sweep.substr(sweep.find("[grid]"));
  const BinaryResult refused = run_binary(dir_, write_config("without.toml", without), "sweep");
  EXPECT_EQ(refused.status, 2) << refused.err;
  EXPECT_NE(refused.err.find("metrics.law"), std::string::npos) << refused.err;
}

// The same samplers in Python, the k-diffusion way (Karras et al. 2022, arXiv:2206.00364, Alg. 1
// and 2 without churn: Euler, and Heun with the correction skipped where sigma_next = 0), on the
// module loaded by torch.jit.load, its own Karras grid (k-diffusion's get_sigmas_karras), and the
// x_T that `diffode sample` started from. Arguments: module, sampler, steps, diffode's sample file,
// output file.
constexpr const char* kPythonSampler = R"PY(
import sys
import h5py
import torch

module_path, sampler, steps, diffode_path, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
denoiser = torch.jit.load(module_path)
with h5py.File(diffode_path, "r") as f:
    x = torch.tensor(f["initial"][...], dtype=torch.float64)
sigma_min, sigma_max, rho = 0.002, 80.0, 7.0
ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
sigmas = torch.cat([sigmas, sigmas.new_zeros([1])])


def derivative(x, sigma):
    return (x - denoiser(x, torch.full((x.shape[0],), float(sigma), dtype=torch.float64))) / sigma


with torch.no_grad():
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = derivative(x, sigma)
        h = sigma_next - sigma
        if sampler == "euler" or sigma_next == 0:
            x = x + d * h
        else:
            x_2 = x + d * h
            x = x + (d + derivative(x_2, sigma_next)) / 2 * h
with h5py.File(out_path, "w") as f:
    f["samples"] = x.numpy()
    f["sigma"] = sigmas.numpy()
)PY";

// A nonlinear module exported from PyTorch samples through the binary to the samples Python's own
// run of the same sampler gives from the same x_T, to float64 round-off. Under EDM alpha = 1, so the
// file's x (initial, samples) and the module's scale-free x~ are the same numbers, and sigma~ = sigma.
TEST_F(NetworkSamplingTest, TheBinarysSamplesOfATorchScriptModuleAreThoseOfTheSameSamplerInPython) {
  if (std::system("/usr/bin/python3 -c 'import h5py' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "this test runs the sampler in /usr/bin/python3 with h5py (Debian's python3-h5py), which cannot import h5py here";
  std::ofstream(dir_ / "sampler.py") << kPythonSampler;
  // x_T of the prior N(0, 80^2 I), from a file so that both sides start from the same numbers.
  std::mt19937_64 generator(17);
  std::normal_distribution<double> normal;
  Batch initial(24, 2);
  for (Index i = 0; i < initial.rows(); ++i)
    for (Index j = 0; j < initial.cols(); ++j) initial(i, j) = 80.0 * normal(generator);
  {
    Hdf5File file(dir_ / "initial.h5", Hdf5File::Mode::create);
    file.write_matrix("x_T", initial);
  }
  const std::string module = (torchscript_modules() / "edm_mlp.pt").string();
  const int steps = 12;
  for (const std::string sampler : {"euler", "heun"}) {
    SCOPED_TRACE(sampler);
    const std::string ours = (dir_ / (sampler + ".h5")).string(), theirs = (dir_ / (sampler + "_python.h5")).string();
    const std::string text = fmt::format(
        "[process]\nname = \"edm\"\n[model]\nkind = \"torchscript\"\nfile = \"{}\"\ndims = 2\nprediction = \"x0\"\n"
        "signature = \"x_sigma\"\ntime_input = \"sigma\"\nscale_free_input = true\nbatch_size = 7\n"
        "[grid]\nschedule = \"karras\"\nsteps = {}\nfinal_step = \"to_zero\"\n[sampler]\nname = \"{}\"\n"
        "[run]\ninitial_file = \"{}\"\ninitial_dataset = \"x_T\"\nblock_rows = 8\noutput = \"{}\"\n",
        module, steps, sampler, (dir_ / "initial.h5").string(), ours);
    const BinaryResult r = run_binary(dir_, write_config(sampler + ".toml", text));
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string python = fmt::format("/usr/bin/python3 '{}' '{}' {} {} '{}' '{}' > '{}' 2>&1", (dir_ / "sampler.py").string(), module,
                                           sampler, steps, ours, theirs, (dir_ / "python.log").string());
    ASSERT_EQ(std::system(python.c_str()), 0) << "the Python sampler failed; see " << (dir_ / "python.log").string();

    const Hdf5File out(ours, Hdf5File::Mode::read), reference(theirs, Hdf5File::Mode::read);
    EXPECT_EQ(out.read_string_attribute("/", "status"), "ok");
    EXPECT_TRUE((out.read_matrix("initial") == initial).all());
    // The same grid: diffode's Karras grid is k-diffusion's, to the last bits of pow.
    const std::vector<double> grid = out.read_vector("grid/sigma"), python_grid = reference.read_vector("sigma");
    ASSERT_EQ(grid.size(), static_cast<std::size_t>(steps + 1));
    ASSERT_EQ(python_grid.size(), grid.size());
    for (std::size_t i = 0; i < grid.size(); ++i) EXPECT_NEAR(grid[i], python_grid[i], 1e-14 * python_grid[i]) << i;
    EXPECT_EQ(grid.back(), 0.0);
    // Heun evaluates twice per step but once on the last (to sigma = 0).
    EXPECT_EQ(out.read_double_attribute("/", "nfe"), sampler == "euler" ? steps : 2 * steps - 1);

    const Batch samples = out.read_matrix("samples"), expected = reference.read_matrix("samples");
    ASSERT_EQ(samples.rows(), initial.rows());
    ASSERT_EQ(samples.cols(), 2);
    const double scale = expected.abs().maxCoeff(), error = (samples - expected).abs().maxCoeff();
    EXPECT_LT(error, 1e-12 * scale) << "max |diffode - Python| " << error << " of max |x_0| " << scale;
    // The samples moved far from x_T (~80): the comparison is not of two copies of the start.
    EXPECT_LT(scale, 10.0);
    RecordProperty(sampler + "_max_abs_difference", fmt::format("{:.3e}", error));
  }
}

}  // namespace
}  // namespace diffode
