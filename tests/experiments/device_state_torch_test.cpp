// [model] state = "device": the whole solve on the network's device (NetworkBackend::solve_on_device).
// On the CPU the device path runs the same sampler templates with the same arithmetic on LibTorch
// tensors, so it must give the host path's samples to rounding (1e-12 relative, float64 networks),
// with the same NFE and model calls, for every sampler it runs and for the final steps it takes
// itself (a zero at the grid's end, or the denoiser's x0); a CUDA run does the same where LibTorch
// sees a GPU (skipped otherwise). What it does not run is refused when the config is read, naming
// the key, and the backend refuses it too.
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampling.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "tests/support/sampling_config.hpp"
#include "tests/support/temp_folder.hpp"
#include "tests/support/torchscript_modules.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace diffode {
namespace {

// Every sampler of the device path, with option sets that take its other branches.
const std::vector<std::string> kSamplers{
    "name = \"euler\"\n",
    "name = \"heun\"\n",
    "name = \"ddim\"\n",
    "name = \"dpmpp_2m\"\n",
    "name = \"dpmpp_2m\"\nlower_order_final_below = 20\n",
    "name = \"dpmpp_3m\"\n",
    "name = \"dpmpp_3m\"\nform = \"third_order\"\n",
    "name = \"dpm_solver\"\n",
    "name = \"dpm_solver\"\norder = 2\n",
    "name = \"unipc\"\n",
    "name = \"unipc\"\norder = 3\nvariant = \"bh2\"\nprediction = \"noise\"\nlower_order_final = false\n",
    "name = \"unipc\"\ncorrector = false\n",
    "name = \"ipndm\"\n",
    "name = \"ipndm\"\nmax_order = 2\n",
    "name = \"lms\"\n",
    "name = \"lms\"\nstartup = \"rk4\"\norder = 3\n",
};

std::string config(const std::string& process, const std::string& model, const std::string& sampler, const std::string& grid_extra = "",
                   const std::string& run_extra = "") {
  return fmt::format("[process]\nname = \"{}\"\n[model]\n{}[grid]\nschedule = \"karras\"\nsteps = 8\n{}[sampler]\n{}[run]\nsamples = 13\nseed = 5\n{}",
                     process, model, grid_extra, sampler, run_extra);
}

SamplingSetup setup_of(const std::string& text) { return testing::sampling_setup_of(text, "device.toml"); }
std::string config_error(const std::string& text) { return testing::sampling_config_error(text, "device.toml"); }

class DeviceStateTest : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    use_network_backend(diffode_network_backend());
  }

  // A seeded, untrained MLP checkpoint with the given output (and classes), its weights saved in
  // float64 (or float32, as diffode train saves them).
  std::string checkpoint(const std::string& name, NetworkOutput output, Index classes = 0, torch::Dtype dtype = torch::kFloat64) const {
    torch::manual_seed(17);
    NetworkSpec spec;
    spec.architecture = {.dims = 2, .width = 16, .blocks = 2, .embedding_dims = 8, .classes = classes};
    spec.output = output;
    ScoreMlp network(spec.architecture);
    network->to(dtype);
    const std::string file = (dir_ / name).string();
    save_network(file, spec, network);
    return file;
  }

  // Host and device runs of one config (model keys given without `state`): same samples to
  // `tolerance` relative, same NFE and model calls, and the results record the state.
  void expect_same(const std::string& process, const std::string& model, const std::string& sampler, const std::string& grid_extra,
                   double tolerance, const std::string& device_model_extra = "") {
    SCOPED_TRACE(process + " / " + sampler + grid_extra + device_model_extra);
    const SamplingSetup host = setup_of(config(process, model, sampler, grid_extra));
    const SamplingSetup device = setup_of(config(process, model + "state = \"device\"\n" + device_model_extra, sampler, grid_extra));
    ASSERT_FALSE(host.device_solve);
    ASSERT_TRUE(device.device_solve);
    const SamplingOutcome a = run_sampling(host, initial_noise(host), 1);
    const SamplingOutcome b = run_sampling(device, initial_noise(device), 1);
    ASSERT_FALSE(a.failed) << a.failure;
    ASSERT_FALSE(b.failed) << b.failure;
    EXPECT_EQ(a.state, "host");
    EXPECT_EQ(b.state, "device");
    EXPECT_TRUE((a.initial == b.initial).all());
    ASSERT_EQ(b.samples.rows(), 13);
    ASSERT_EQ(b.samples.cols(), 2);
    const double scale = 1.0 + a.samples.abs().maxCoeff();
    EXPECT_LE((a.samples - b.samples).abs().maxCoeff(), tolerance * scale) << (a.samples - b.samples).abs().maxCoeff();
    EXPECT_GT(a.nfe, 0);
    EXPECT_EQ(a.nfe, b.nfe);
    EXPECT_EQ(a.model_calls, b.model_calls);
    EXPECT_EQ(a.sigma_end, b.sigma_end);
    EXPECT_NE(device.network->description().find("state device"), std::string::npos) << device.network->description();
    EXPECT_NE(host.network->description().find("state host"), std::string::npos) << host.network->description();
  }
};

// Checkpoints reading x0 (edm) and eps, on a process with alpha = 1 (edm) and one without (vp), with
// the grid's final zero and with the final denoising: the device path's samples are the host path's.
TEST_F(DeviceStateTest, OnTheCpuEverySamplerGivesTheHostPathsSamples) {
  const std::string edm = fmt::format("kind = \"network\"\nfile = \"{}\"\n", checkpoint("edm.ckpt", NetworkOutput::edm));
  const std::string eps = fmt::format("kind = \"network\"\nfile = \"{}\"\n", checkpoint("eps.ckpt", NetworkOutput::eps));
  for (const std::string& sampler : kSamplers) {
    expect_same("edm", edm, sampler, "", 1e-12);
    expect_same("vp", eps, sampler, "", 1e-12);
    expect_same("vp", edm, sampler, "final_step = \"denoise\"\n", 1e-12, "batch_size = 4\n");
  }
}

// A float32 network (weights saved in float32, as diffode train saves them): the state stays
// float64 on both paths and the network rounds its input to float32 on both. On the CPU the two
// paths' float64 arithmetic is the same, so the network sees the same float32 inputs and the
// samples agree to the same 1e-12.
TEST_F(DeviceStateTest, AFloat32NetworkKeepsAFloat64StateAndGivesTheHostPathsSamples) {
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\ndtype = \"float32\"\n",
                                        checkpoint("edm32.ckpt", NetworkOutput::edm, 0, torch::kFloat32));
  for (const std::string sampler : {"name = \"dpmpp_2m\"\n", "name = \"heun\"\n"}) {
    expect_same("edm", model, sampler, "", 1e-12);
    expect_same("vp", model, sampler, "", 1e-12);
  }
}

// A class-conditional checkpoint sampled unguided (its null class) on the device.
TEST_F(DeviceStateTest, AClassConditionalCheckpointRunsItsNullClass) {
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\n", checkpoint("classes.ckpt", NetworkOutput::eps, 3));
  expect_same("vp", model, "name = \"dpmpp_2m\"\n", "", 1e-12);
}

TEST_F(DeviceStateTest, TorchScriptModulesGiveTheHostPathsSamples) {
  if (testing::torchscript_modules().empty()) GTEST_SKIP() << testing::kNoPythonTorch;
  const std::string dir = testing::torchscript_modules().string();
  const std::string x0 = fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_x0.pt\"\ndims = 2\nprediction = \"x0\"\nsignature = \"x_sigma\"\n"
                                     "time_input = \"sigma\"\nscale_free_input = true\n",
                                     dir);
  const std::string eps = fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\ndims = 2\nprediction = \"eps\"\n", dir);
  for (const std::string& sampler : kSamplers) {
    expect_same("edm", x0, sampler, "", 1e-12);
    expect_same("vp", eps, sampler, "", 1e-12, "batch_size = 3\n");
    expect_same("edm", eps, sampler, "final_step = \"denoise\"\n", 1e-12);
  }
}

// The same comparison with the network and the device state on a GPU. Both paths evaluate the
// network there; the samplers' arithmetic runs on the GPU on one and on the CPU on the other, so
// the tolerance allows for the GPU's fused multiply-adds.
TEST_F(DeviceStateTest, OnCudaEverySamplerGivesTheHostPathsSamples) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device";
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\ndevice = \"cuda\"\n", checkpoint("eps.ckpt", NetworkOutput::eps));
  for (const std::string& sampler : kSamplers) {
    expect_same("vp", model, sampler, "", 1e-10);
    expect_same("edm", model, sampler, "final_step = \"denoise\"\n", 1e-10);
  }
}

TEST_F(DeviceStateTest, WhatTheDevicePathDoesNotRunIsRefusedNamingTheKey) {
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\nstate = \"device\"\n", checkpoint("eps.ckpt", NetworkOutput::eps));
  const auto expect_error = [&](const std::string& text, const std::vector<std::string>& parts) {
    const std::string what = config_error(text);
    ASSERT_FALSE(what.empty()) << text;
    for (const std::string& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  };
  expect_error(config("vp", model, "name = \"euler_ancestral\"\n"), {"model.state", "deterministic fixed-grid samplers euler, heun", "euler_ancestral"});
  expect_error(config("vp", model, "name = \"dpm_solver_adaptive\"\n"), {"model.state", "dpm_solver_adaptive"});
  expect_error(config("vp", model, "name = \"euler\"\ns_churn = 1.0\n"), {"model.state", "s_churn > 0"});
  expect_error(config("vp", model, "name = \"ddim\"\neta = 1.0\n"), {"model.state", "eta > 0"});
  expect_error(config("vp", model, "name = \"heun\"\n", "", "save_trajectory = true\n"), {"run.save_trajectory", "state = \"host\""});
  expect_error(config("vp", "preset = \"ring2d\"\nstate = \"device\"\n", "name = \"heun\"\n"), {"model.state", "only with kind"});
}

TEST_F(DeviceStateTest, GuidanceIsRefusedOnTheDeviceState) {
  const std::string model =
      fmt::format("kind = \"network\"\nfile = \"{}\"\nstate = \"device\"\n", checkpoint("classes.ckpt", NetworkOutput::eps, 3));
  const std::string what = config_error(config("vp", model, "name = \"heun\"\n") + "[guidance]\nclass = 1\nscale = 2.0\n");
  EXPECT_NE(what.find("model.state"), std::string::npos) << what;
  EXPECT_NE(what.find("[guidance]"), std::string::npos) << what;
}

// The likelihood command reads [model] with the device state refused.
TEST_F(DeviceStateTest, OtherCommandsRefuseTheDeviceState) {
  const std::string text = fmt::format("[process]\nname = \"vp\"\n[model]\nkind = \"network\"\nfile = \"{}\"\nstate = \"device\"\n",
                                       checkpoint("eps.ckpt", NetworkOutput::eps));
  const Config parsed = Config::from_string(text, "likelihood.toml");
  ConfigTable root = parsed.root();
  try {
    read_model(root.table("model"), root.table("process"));
    ADD_FAILURE() << "state = \"device\" was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.state"), std::string::npos) << e.what();
  }
}

// The backend itself refuses a sampler it does not run, naming the ones it does.
TEST_F(DeviceStateTest, TheBackendRefusesASamplerItDoesNotRun) {
  const NetworkBackend& backend = *diffode_network_backend();
  ASSERT_EQ(backend.abi_version, 4);
  ASSERT_NE(backend.solve_on_device, nullptr);
  const auto model = backend.load_checkpoint(checkpoint("eps.ckpt", NetworkOutput::eps), {});
  DeviceSolveSpec spec;
  spec.sampler = "euler_ancestral";
  spec.sigmas = {10.0, 1.0, 0.0};
  spec.unit_alpha = true;
  try {
    backend.solve_on_device(*model, spec, Batch::Zero(3, 2));
    ADD_FAILURE() << "euler_ancestral ran";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'euler_ancestral' does not run on the device state"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dpmpp_2m"), std::string::npos) << e.what();
  }
}

// `diffode sample` (which does not link LibTorch) runs the device state through the backend it opens,
// writes the in-process run's samples, and records the state in the model's description.
TEST_F(DeviceStateTest, TheBinaryRunsTheDeviceStateAndRecordsIt) {
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\nstate = \"device\"\n", checkpoint("eps.ckpt", NetworkOutput::eps));
  const std::string text = config("vp", model, "name = \"unipc\"\n", "", fmt::format("output = \"{}\"\n", (dir_ / "samples.h5").string()));
  const std::filesystem::path path = write_config("run.toml", text);
  const std::string command =
      fmt::format("cd '{}' && '{}' sample '{}' --threads 2 > out.txt 2> err.txt", dir_.string(), DIFFODE_BINARY, path.string());
  const int raw = std::system(command.c_str());
  std::ifstream err(dir_ / "err.txt");
  std::ostringstream err_text;
  err_text << err.rdbuf();
  ASSERT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << err_text.str();
  const Hdf5File out(dir_ / "samples.h5", Hdf5File::Mode::read);
  const SamplingSetup s = setup_of(text);
  const SamplingOutcome in_process = run_sampling(s, initial_noise(s), 1);
  EXPECT_TRUE((out.read_matrix("samples") == in_process.samples).all());
  const std::string description = out.read_string_attribute("/", "model");
  EXPECT_NE(description.find("state device"), std::string::npos) << description;
}

}  // namespace
}  // namespace diffode
