// TorchScript modules as models (models/torch/network_model_torch.hpp): their predictions against
// the same formulas computed here, the mapping of a predictor's (alpha, sigma) to the module's own
// process, the dry run at load, independence of the chunking (batch_size), and the CUDA path.
// The modules are exported from Python by tests/support/torchscript_modules.hpp.
#include "models/torch/network_model_torch.hpp"

#include "problems/process.hpp"
#include "tests/support/torchscript_modules.hpp"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

namespace diffode {
namespace {

using testing::torchscript_modules;

std::string module(const std::string& name) { return (torchscript_modules() / (name + ".pt")).string(); }

// The spec of a module trained under `process` (which must outlive the model).
TorchScriptSpec spec_for(const std::string& name, const Process& process, Parameterization prediction, const std::string& signature = "x_t",
                         const std::string& time_input = "t", bool scale_free = false) {
  TorchScriptSpec spec;
  spec.file = module(name);
  spec.dims = 2;
  spec.prediction = prediction;
  spec.signature = signature;
  spec.time_input = time_input;
  spec.scale_free_input = scale_free;
  spec.t_of_scaled_sigma = [&process](double s) { return process.t_of_scaled_sigma(s); };
  spec.alpha = [&process](double t) { return process.alpha(t); };
  spec.sigma = [&process](double t) { return process.sigma(t); };
  spec.d_alpha = [&process](double t) { return process.d_alpha(t); };
  spec.d_sigma = [&process](double t) { return process.d_sigma(t); };
  return spec;
}

// Rows of x, and per row the process's time and its levels.
struct Inputs {
  Batch x;
  PerSample t, alpha, sigma;
};

Inputs inputs(const Process& process, Index rows) {
  Inputs in{Batch(rows, 2), PerSample(rows), PerSample(rows), PerSample(rows)};
  for (Index i = 0; i < rows; ++i) {
    in.x(i, 0) = std::sin(1.3 * static_cast<double>(i) + 0.2);
    in.x(i, 1) = std::cos(0.7 * static_cast<double>(i)) - 0.3;
    in.t[i] = process.t_min() + (process.t_max() - process.t_min()) * (0.05 + 0.9 * static_cast<double>(i) / static_cast<double>(rows));
    in.alpha[i] = process.alpha(in.t[i]);
    in.sigma[i] = process.sigma(in.t[i]);
  }
  return in;
}

class TorchScriptModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (torchscript_modules().empty()) GTEST_SKIP() << testing::kNoPythonTorch;
  }
  const std::unique_ptr<Process> vp_ = make_process("vp");
  const std::unique_ptr<Process> flow_ = make_process("flow", {.t_max = 0.995});
};

TEST_F(TorchScriptModelTest, EpsModuleGivesItsFormulaAtTheProcessTimeAndCountsOneEvaluationPerCall) {
  const auto model = load_torchscript_model(spec_for("affine", *vp_, Parameterization::eps, "x_t", "t1000"), {.batch_size = 3});
  EXPECT_EQ(model->dims(), 2);
  EXPECT_EQ(model->classes(), 0);
  const auto predictor = model->make_predictor(-1);
  EXPECT_EQ(predictor->native(), Parameterization::eps);
  const Inputs in = inputs(*vp_, 10);
  Batch out;
  predictor->predict(in.x, in.alpha, in.sigma, out);
  EXPECT_EQ(predictor->nfe(), 1);  // 10 rows in chunks of 3: still one evaluation
  ASSERT_EQ(out.rows(), 10);
  const std::array<std::array<double, 2>, 2> w{{{0.3, -0.2}, {0.1, 0.4}}};
  const std::array<double, 2> c{0.5, -0.7};
  for (Index i = 0; i < 10; ++i)
    for (Index j = 0; j < 2; ++j) {
      const double expected = std::tanh(w[j][0] * in.x(i, 0) + w[j][1] * in.x(i, 1) + 1000.0 * in.t[i] * c[j]);
      // t comes back through t_of_scaled_sigma(sigma / alpha): exact but for rounding.
      EXPECT_NEAR(out(i, j), expected, 1e-9) << "row " << i;
    }
}

TEST_F(TorchScriptModelTest, ScaleFreeInputAtAnotherProcessLevelsIsTheSameDenoiser) {
  // gauss_x0 is D(x~; sigma~) for N(0, 0.25 I) data. Asked at VP levels (alpha, sigma) it is handed
  // x~ = x / alpha and sigma~ = sigma / alpha; asked at the scale-free levels (1, sigma~) of the same
  // noise, the same x0.
  const auto model = load_torchscript_model(spec_for("gauss_x0", *vp_, Parameterization::x0, "x_sigma", "sigma", true), {});
  const auto predictor = model->make_predictor(-1);
  EXPECT_EQ(predictor->native(), Parameterization::x0);
  const Inputs in = inputs(*vp_, 7);
  Batch out, scaled_out;
  predictor->predict(in.x, in.alpha, in.sigma, out);
  const PerSample scaled_sigma = in.sigma / in.alpha;
  const Batch x_scaled = in.x.colwise() / in.alpha;
  predictor->predict(x_scaled, PerSample::Ones(7), scaled_sigma, scaled_out);
  for (Index i = 0; i < 7; ++i)
    for (Index j = 0; j < 2; ++j) {
      const double s = scaled_sigma[i];
      EXPECT_NEAR(out(i, j), x_scaled(i, j) * 0.25 / (0.25 + s * s), 1e-12);
      EXPECT_NEAR(scaled_out(i, j), out(i, j), 1e-12);
    }
}

TEST_F(TorchScriptModelTest, VAndScoreAreReadBackAtTheLevelsTheyWereAskedAt) {
  // A module under VP asked at EDM-style levels (1, sigma~): its v and score are rescaled so that
  // their x0 at the asked levels is the x0 of the module's own output at its process's levels.
  const Inputs in = inputs(*vp_, 6);
  const PerSample ones = PerSample::Ones(6), scaled_sigma = in.sigma / in.alpha;
  const Batch x_scaled = in.x.colwise() / in.alpha;
  for (const Parameterization p : {Parameterization::v, Parameterization::score}) {
    const auto predictor = load_torchscript_model(spec_for("affine", *vp_, p), {})->make_predictor(-1);
    EXPECT_EQ(predictor->native(), p);
    Batch native_at_process, x0_at_process, x0_scale_free;
    predictor->predict(in.x, in.alpha, in.sigma, native_at_process);
    convert(p, Parameterization::x0, in.x, native_at_process, {in.alpha, in.sigma}, x0_at_process);
    predictor->predict_as(Parameterization::x0, x_scaled, {ones, scaled_sigma}, x0_scale_free);
    EXPECT_LT((x0_scale_free - x0_at_process).abs().maxCoeff(), 1e-10) << to_string(p);
  }
}

TEST_F(TorchScriptModelTest, FlowVelocityIsReadAsX0WithTheProcessRates) {
  const auto predictor = load_torchscript_model(spec_for("flow", *flow_, Parameterization::flow), {})->make_predictor(-1);
  EXPECT_EQ(predictor->native(), Parameterization::x0);
  const Inputs in = inputs(*flow_, 5);
  Batch out;
  predictor->predict(in.x, in.alpha, in.sigma, out);
  for (Index i = 0; i < 5; ++i) {
    const double t = in.t[i], a = in.alpha[i], s = in.sigma[i], da = flow_->d_alpha(t), ds = flow_->d_sigma(t);
    for (Index j = 0; j < 2; ++j) {
      // x = a x0 + s eps and u = a' x0 + s' eps, solved for x0.
      const double u = 0.3 * in.x(i, j) - t;
      EXPECT_NEAR(out(i, j), (ds * in.x(i, j) - s * u) / (a * ds - s * da), 1e-9);
    }
  }
}

TEST_F(TorchScriptModelTest, ClassSignatureIsHandedTheLabelOrTheNullClass) {
  TorchScriptSpec spec = spec_for("classes", *vp_, Parameterization::x0, "x_t_class");
  spec.classes = 3;
  const auto model = load_torchscript_model(spec, {});
  EXPECT_EQ(model->classes(), 3);
  const Inputs in = inputs(*vp_, 4);
  for (const int label : {-1, 0, 2}) {
    Batch out;
    model->make_predictor(label)->predict(in.x, in.alpha, in.sigma, out);
    for (Index i = 0; i < 4; ++i) EXPECT_NEAR(out(i, 0), (label < 0 ? 3 : label) + in.t[i], 1e-9);
  }
  EXPECT_THROW(model->make_predictor(3), std::invalid_argument);
  spec.classes = 0;
  EXPECT_THROW(load_torchscript_model(spec, {}), std::runtime_error);
}

// The error a load throws, or "" when it loads.
std::string load_error(const TorchScriptSpec& spec, const NetworkRuntime& runtime = {}) {
  try {
    load_torchscript_model(spec, runtime);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST_F(TorchScriptModelTest, DryRunRefusesAModuleThatDoesNotMatchNamingFileAndSignature) {
  const std::string expected_signature = "forward(x [N, 2] float64, t [N] float64 (t)";
  for (const char* name : {"wrong_shape", "wrong_arity", "wrong_dtype"}) {
    const std::string what = load_error(spec_for(name, *vp_, Parameterization::eps));
    EXPECT_NE(what.find(module(name)), std::string::npos) << what;
    EXPECT_NE(what.find(expected_signature), std::string::npos) << what;
  }
  // The stated dims are checked too: affine is 2-D.
  TorchScriptSpec three = spec_for("affine", *vp_, Parameterization::eps);
  three.dims = 3;
  const std::string what = load_error(three);
  EXPECT_NE(what.find(module("affine")), std::string::npos) << what;
  EXPECT_NE(what.find("[N, 3]"), std::string::npos) << what;
}

TEST_F(TorchScriptModelTest, MissingFileAndUnreadableModuleAreNamed) {
  TorchScriptSpec spec = spec_for("affine", *vp_, Parameterization::eps);
  spec.file = (torchscript_modules() / "no_such.pt").string();
  EXPECT_NE(load_error(spec).find(spec.file + ": no such file"), std::string::npos) << load_error(spec);
  spec.file = (torchscript_modules() / "export.py").string();
  EXPECT_NE(load_error(spec).find(spec.file + ": not a TorchScript module"), std::string::npos) << load_error(spec);
}

TEST_F(TorchScriptModelTest, PredictionsDoNotDependOnBatchSizeBitwise) {
  const Inputs in = inputs(*vp_, 53);
  Batch whole;
  load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {.batch_size = 0})->make_predictor(-1)->predict(in.x, in.alpha, in.sigma, whole);
  for (const Index batch : {1, 2, 7, 16, 52, 64}) {
    Batch chunked;
    load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {.batch_size = batch})
        ->make_predictor(-1)
        ->predict(in.x, in.alpha, in.sigma, chunked);
    EXPECT_TRUE((chunked == whole).all()) << "batch_size " << batch << ": max difference " << (chunked - whole).abs().maxCoeff();
  }
}

TEST_F(TorchScriptModelTest, Float32RunsTheModuleInSinglePrecision) {
  const Inputs in = inputs(*vp_, 9);
  Batch f64, f32;
  load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {})->make_predictor(-1)->predict(in.x, in.alpha, in.sigma, f64);
  load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {.dtype = "float32"})->make_predictor(-1)->predict(in.x, in.alpha, in.sigma, f32);
  const double difference = (f64 - f32).abs().maxCoeff();
  EXPECT_LT(difference, 1e-5);
  EXPECT_GT(difference, 0.0);  // it really ran in float32
}

TEST_F(TorchScriptModelTest, DescriptionNamesTheFileAndItsSha256) {
  const std::string file = module("mlp");
  const std::string description = load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {})->description();
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(("sha256sum '" + file + "'").c_str(), "r"), pclose);
  ASSERT_TRUE(pipe);
  std::array<char, 65> digest{};
  ASSERT_EQ(std::fread(digest.data(), 1, 64, pipe.get()), 64u);
  EXPECT_NE(description.find(file), std::string::npos) << description;
  EXPECT_NE(description.find(std::string("sha256 ") + digest.data()), std::string::npos) << description << " vs " << digest.data();
}

TEST_F(TorchScriptModelTest, CudaDeviceMatchesTheCpu) {
  if (!torch::cuda::is_available()) {
    // Without a device the request is refused with a message naming it.
    const std::string what = load_error(spec_for("mlp", *vp_, Parameterization::eps), {.device = "cuda"});
    EXPECT_NE(what.find("device 'cuda'"), std::string::npos) << what;
    GTEST_SKIP() << "no CUDA device visible to LibTorch";
  }
  const Inputs in = inputs(*vp_, 33);
  Batch cpu, cuda;
  load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {})->make_predictor(-1)->predict(in.x, in.alpha, in.sigma, cpu);
  load_torchscript_model(spec_for("mlp", *vp_, Parameterization::eps), {.device = "cuda", .batch_size = 8})
      ->make_predictor(-1)
      ->predict(in.x, in.alpha, in.sigma, cuda);
  EXPECT_LT((cpu - cuda).abs().maxCoeff(), 1e-12);
}

}  // namespace
}  // namespace diffode
