// [guidance] on class-conditional networks, end to end: configs with [model] kind = "torchscript"
// (signature x_t_class) and kind = "network" (a checkpoint trained with classes).
//
// The TorchScript modules compute the exact predictions of a class-conditional mixture: three 2-D
// classes N(mu_c, 0.25 I) of equal weight, so the null class (label 3) is the equal-weight mixture
// of the three, whose denoiser is the responsibility-weighted sum of the classes' (the components'
// normalisers cancel). One outputs the denoiser x0, one eps, both of (x~, sigma~, class). The same
// mixture with [model] classes = [0, 1, 2] is the control: the guided network and the guided
// mixture must agree to rounding for every guidance option (both guide through one combination).
// Then: scale 0 is the conditional predictor bit for bit; the guided prediction is the combination
// of the two class predictions by hand; class = "all" gives the labels and each class's rows of a
// run of that class; the guidance scale is a sweep axis; bad tables exit 2 naming key and line.
#include "experiments/cli/commands.hpp"
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampling.hpp"
#include "experiments/sweep/plan.hpp"
#include "models/network_guidance.hpp"
#include "models/torch/score_mlp_torch.hpp"
#include "tests/support/sampling_config.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace diffode {
namespace {

namespace fs = std::filesystem;

constexpr const char* kExport = R"PY(
import sys
import torch

out = sys.argv[1]


class ClassGauss(torch.nn.Module):
    def __init__(self, eps: bool):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]], dtype=torch.float64))
        self.eps = eps

    def forward(self, x, s, c):
        var = (0.25 + s * s)[:, None, None]
        diff = x[:, None, :] - self.mu[None, :, :]
        dk = self.mu[None, :, :] + (0.25 / var) * diff
        logit = -0.5 * (diff * diff).sum(2) / var[:, :, 0]
        r = torch.softmax(logit, 1)
        null = (r[:, :, None] * dk).sum(1)
        cond = dk[torch.arange(x.shape[0]), torch.clamp(c, 0, 2)]
        d = torch.where((c == 3)[:, None], null, cond)
        if self.eps:
            return (x - d) / s[:, None]
        return d


class Plain(torch.nn.Module):
    def forward(self, x, s):
        return x * (0.25 / (0.25 + s[:, None] ** 2))


torch.jit.script(Plain()).save(f"{out}/plain.pt")
torch.jit.script(ClassGauss(False)).save(f"{out}/class_gauss_x0.pt")
torch.jit.script(ClassGauss(True)).save(f"{out}/class_gauss_eps.pt")
)PY";

// The folder of the exported modules, or empty when /usr/bin/python3 cannot import torch.
const fs::path& modules() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / fmt::format("diffode_guidance_modules_{}", ::getpid());
    fs::remove_all(d);
    fs::create_directories(d);
    std::ofstream(d / "export.py") << kExport;
    const std::string command = fmt::format("/usr/bin/python3 '{}' '{}' > '{}' 2>&1", (d / "export.py").string(), d.string(), (d / "log").string());
    if (std::system(command.c_str()) != 0) {
      fs::remove_all(d);
      return fs::path();
    }
    return d;
  }();
  return dir;
}

const std::string kMixture =
    "weights = [1.0, 1.0, 1.0]\nmeans = [[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]]\nvariances = [[0.25, 0.25], [0.25, 0.25], [0.25, 0.25]]\n";

std::string module_model(const std::string& prediction) {
  return fmt::format("kind = \"torchscript\"\nfile = \"{}/class_gauss_{}.pt\"\ndims = 2\nprediction = \"{}\"\nsignature = \"x_t_class\"\n"
                     "num_classes = 3\ntime_input = \"sigma\"\nscale_free_input = true\n",
                     modules().string(), prediction, prediction);
}

std::string config(const std::string& model, const std::string& guidance, const std::string& run = "samples = 12\nseed = 3\n") {
  return fmt::format("[process]\nname = \"edm\"\n[model]\n{}[grid]\nschedule = \"karras\"\nsteps = 12\n[sampler]\nname = \"heun\"\n[run]\n{}{}", model,
                     run, guidance.empty() ? "" : "[guidance]\n" + guidance);
}

SamplingSetup setup_of(const std::string& text) { return testing::sampling_setup_of(text, "guided.toml"); }

// The ConfigError a config raises, or "" when it reads.
std::string config_error(const std::string& text) { return testing::sampling_config_error(text, "guided.toml"); }

Batch predict(const Predictor<Batch>& p, const Batch& x, const PerSample& a, const PerSample& s) {
  Batch out;
  p.predict(x, a, s, out);
  return out;
}

class NetworkGuidanceConfig : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    if (modules().empty())
      GTEST_SKIP() << "these tests export TorchScript modules with /usr/bin/python3 and PyTorch (python3-torch), which cannot import torch here";
    use_network_backend(diffode_network_backend());
  }
  Provenance provenance_{.command_line = "test", .commit = "test", .versions = "test", .host = "test", .start_time = "test"};
  Batch x = 1.5 * GaussianMixture::ring(8, 1.0, 0.8).sample(24, 5);
  PerSample alpha = PerSample::Constant(24, 1.0), sigma = PerSample::LinSpaced(24, 0.05, 4.0);
};

TEST_F(NetworkGuidanceConfig, GuidedNetworkSamplesAreTheGuidedMixturesForEveryOption) {
  const std::vector<std::string> options = {"class = 1\nscale = 2.0\n", "class = 0\nscale = 3.0\nrescale = 0.7\n",
                                            "class = 2\nscale = 1.5\nnegative_class = 1\n",
                                            "class = 1\nscale = 2.5\nrescale = 1.0\ninterval = [0.2, 1.5]\n"};
  for (const std::string prediction : {"x0", "eps"})
    for (const std::string& g : options) {
      SCOPED_TRACE(prediction + ": " + g);
      const SamplingSetup network = setup_of(config(module_model(prediction), g));
      const SamplingSetup mixture = setup_of(config(kMixture + "classes = [0, 1, 2]\n", g));
      ASSERT_TRUE(network.network && network.guidance && !network.guidance->model);
      const SamplingOutcome a = run_sampling(network, initial_noise(network), 1);
      const SamplingOutcome b = run_sampling(mixture, initial_noise(mixture), 1);
      ASSERT_FALSE(a.failed) << a.failure;
      ASSERT_FALSE(b.failed) << b.failure;
      EXPECT_TRUE((a.initial == b.initial).all());
      EXPECT_LT((a.samples - b.samples).abs().maxCoeff(), 1e-9 * (1.0 + b.samples.abs().maxCoeff()));
      EXPECT_EQ(a.nfe, b.nfe);
      EXPECT_EQ(a.model_calls, b.model_calls);
      // And guidance moved them: the conditional run differs.
      const SamplingSetup plain = setup_of(config(module_model(prediction), "class = " + g.substr(8, 1) + "\n"));
      EXPECT_GT((run_sampling(plain, initial_noise(plain), 1).samples - a.samples).abs().maxCoeff(), 1e-3);
    }
}

TEST_F(NetworkGuidanceConfig, ScaleZeroIsTheConditionalPredictorAndGuidanceIsTheCombinationByHand) {
  for (const std::string prediction : {"x0", "eps"}) {
    SCOPED_TRACE(prediction);
    const SamplingSetup zero = setup_of(config(module_model(prediction), "class = 2\n"));
    const auto cond_predictor = zero.network->make_predictor(2), null_predictor = zero.network->make_predictor(-1);
    const Batch cond = predict(*cond_predictor, x, alpha, sigma), null = predict(*null_predictor, x, alpha, sigma);
    EXPECT_TRUE((predict(*zero.make_predictor(), x, alpha, sigma) == cond).all());
    const SamplingSetup guided = setup_of(config(module_model(prediction), "class = 2\nscale = 1.75\n"));
    const auto p = guided.make_predictor();
    const Batch g = predict(*p, x, alpha, sigma);
    EXPECT_TRUE((g == cond + 1.75 * (cond - null)).all());
    EXPECT_LT((g - (2.75 * cond - 1.75 * null)).abs().maxCoeff(), 1e-12 * (1.0 + g.abs().maxCoeff()));
    // One sampler evaluation, two network calls.
    EXPECT_EQ(p->nfe(), 1);
    EXPECT_EQ(dynamic_cast<const GuidedModelPredictor&>(*p).model_calls(), 2);
    // Outside the interval: the conditional predictor (and one call).
    const SamplingSetup outside = setup_of(config(module_model(prediction), "class = 2\nscale = 1.75\ninterval = [10.0, 20.0]\n"));
    const auto q = outside.make_predictor();
    EXPECT_TRUE((predict(*q, x, alpha, sigma) == cond).all());
    EXPECT_EQ(dynamic_cast<const GuidedModelPredictor&>(*q).model_calls(), 1);
  }
}

TEST_F(NetworkGuidanceConfig, AllClassesGiveTheLabelsAndEachClassesRun) {
  const fs::path all = dir_ / "all.h5";
  // Three threads over blocks of 3 rows, against single-threaded per-class runs of 4 rows in one block.
  const std::string guidance = "class = \"all\"\nscale = 1.5\n";
  ASSERT_EQ(run_sample_command(write_config("all.toml", config(module_model("x0"), guidance,
                                                                 fmt::format("samples = 12\nseed = 3\nblock_rows = 3\noutput = \"{}\"\n", all.string()))),
                               provenance_, 3),
            0);
  const Hdf5File f(all, Hdf5File::Mode::read);
  const std::vector<std::int64_t> labels = f.read_int64_vector("labels");
  ASSERT_EQ(labels.size(), 12u);
  for (std::size_t i = 0; i < labels.size(); ++i) EXPECT_EQ(labels[i], static_cast<std::int64_t>(i / 4)) << i;
  const Batch samples = f.read_matrix("samples");
  EXPECT_EQ(f.read_double_attribute("/", "model_calls"), 2.0 * f.read_double_attribute("/", "nfe"));
  for (int c = 0; c < 3; ++c) {
    const fs::path one = dir_ / fmt::format("class{}.h5", c);
    ASSERT_EQ(run_sample_command(write_config(fmt::format("class{}.toml", c),
                                              config(module_model("x0"), fmt::format("class = {}\nscale = 1.5\n", c),
                                                     fmt::format("samples = 4\nseed = 3\noutput = \"{}\"\n", one.string()))),
                                 provenance_, 1),
              0);
    const Hdf5File g(one, Hdf5File::Mode::read);
    EXPECT_TRUE((samples.middleRows(4 * c, 4) == g.read_matrix("samples")).all()) << c;
    EXPECT_EQ(g.read_int64_vector("labels"), std::vector<std::int64_t>(4, c));
  }
  // The classes land apart: each class's mean is nearest its own class mean.
  const Batch mu = (Batch(3, 2) << 1.0, 0.0, -1.0, 0.5, 0.0, -1.0).finished();
  for (int c = 0; c < 3; ++c) {
    const Eigen::Array<double, 1, 2> mean = samples.middleRows(4 * c, 4).colwise().mean();
    Index nearest = 0;
    ((mu.rowwise() - mean).square().rowwise().sum()).minCoeff(&nearest);
    EXPECT_EQ(nearest, c);
  }
}

TEST_F(NetworkGuidanceConfig, TheGuidanceScaleIsASweepAxis) {
  const fs::path out = dir_ / "sweep.h5";
  const std::string text = config(module_model("x0"), "class = 0\n",
                                  fmt::format("samples = 8\nseed = 3\nsave_samples = true\noutput = \"{}\"\n", out.string())) +
                           "[metrics]\nlaw = false\nreference_rtol = 1e-6\n[sweep]\nname = \"scales\"\n[sweep.product]\n\"guidance.scale\" = [0.0, 2.0]\n";
  const fs::path path = write_config("sweep.toml", text);
  ASSERT_EQ(run_sweep_command(path, provenance_, {}), 0);
  const Hdf5File f(out, Hdf5File::Mode::read);
  const SweepPlan plan = plan_sweep(Config(path));
  ASSERT_EQ(plan.runs.size(), 2u);
  std::vector<Batch> by_scale;
  for (const RunSpec& r : plan.runs) {
    EXPECT_EQ(f.read_string_attribute("runs/" + r.id, "status"), "ok");
    by_scale.push_back(f.read_matrix("runs/" + r.id + "/samples"));
  }
  for (int i = 0; i < 2; ++i) {
    const SamplingSetup one = setup_of(config(module_model("x0"), fmt::format("class = 0\nscale = {}\n", i == 0 ? "0.0" : "2.0"), "samples = 8\nseed = 3\n"));
    EXPECT_TRUE((run_sampling(one, initial_noise(one), 1).samples == by_scale[i]).all()) << i;
  }
  EXPECT_GT((by_scale[0] - by_scale[1]).abs().maxCoeff(), 1e-3);
  // With the sample-law metrics on, a guided network is refused (it has no exact law).
  const std::string law = config(module_model("x0"), "class = 0\n", fmt::format("samples = 8\nseed = 3\noutput = \"{}\"\n", (dir_ / "law.h5").string())) +
                          "[sweep]\nname = \"law\"\n[sweep.product]\n\"guidance.scale\" = [0.0, 2.0]\n";
  EXPECT_EQ(run_sweep_command(write_config("law.toml", law), provenance_, {}), 2);
}

TEST_F(NetworkGuidanceConfig, BadTablesNameKeyAndLine) {
  const std::string model = module_model("x0");
  // The line of `key` in the [guidance] table of `text`.
  const auto line_of = [](const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string line;
    int n = 0;
    bool in_guidance = false;
    while (std::getline(in, line)) {
      ++n;
      if (line == "[guidance]") in_guidance = true;
      if (in_guidance && line.rfind(key + " =", 0) == 0) return n;
    }
    return 0;
  };
  const auto expect_error = [&](const std::string& guidance, const std::string& key, const std::string& words, const std::string& run = "samples = 12\nseed = 3\n") {
    const std::string text = config(model, guidance, run);
    const std::string e = config_error(text);
    const int line = line_of(text, key);
    EXPECT_GT(line, 0) << key;
    EXPECT_NE(e.find(fmt::format("guided.toml:{}: guidance.{}", line, key)), std::string::npos) << e;
    EXPECT_NE(e.find(words), std::string::npos) << e;
  };
  expect_error("class = 3\nscale = 1.0\n", "class", "3 classes");
  expect_error("class = 0\nnegative_class = 7\n", "negative_class", "3 classes");
  expect_error("class = 0\nkind = \"classifier\"\nscale = 1.0\n", "kind", "classifier of noisy inputs");
  expect_error("class = \"every\"\n", "class", "\"all\"");
  expect_error("class = 0\nscale = 1.0\nrescale = 1.5\n", "rescale", "1.5");
  {
    const std::string text = config(model, "class = \"all\"\n", "samples = 10\nseed = 3\n");
    const std::string e = config_error(text);
    EXPECT_NE(e.find("guided.toml:"), std::string::npos) << e;
    EXPECT_NE(e.find("run.samples"), std::string::npos) << e;
    EXPECT_NE(e.find("multiple of 3"), std::string::npos) << e;
  }
  // An unconditional module has no classes to guide.
  {
    const std::string text = fmt::format("[process]\nname = \"edm\"\n[model]\nkind = \"torchscript\"\nfile = \"{}/plain.pt\"\ndims = 2\n"
                                         "prediction = \"x0\"\nsignature = \"x_sigma\"\ntime_input = \"sigma\"\nscale_free_input = true\n[grid]\n"
                                         "steps = 5\n[sampler]\nname = \"euler\"\n[run]\nsamples = 3\n[guidance]\nclass = 0\n",
                                         modules().string());
    const std::string e = config_error(text);
    EXPECT_NE(e.find("guided.toml:18: guidance.class"), std::string::npos) << e;
    EXPECT_NE(e.find("no classes"), std::string::npos) << e;
  }
  // Through the command: exit 2, nothing written.
  const fs::path out = dir_ / "bad.h5";
  EXPECT_EQ(run_sample_command(write_config("bad.toml", config(model, "class = 9\n", fmt::format("samples = 3\noutput = \"{}\"\n", out.string()))),
                               provenance_),
            2);
  EXPECT_FALSE(fs::exists(out));
}

// A diffode checkpoint trained with classes (kind = "network"): an untrained seeded MLP with two
// classes (its output layer drawn at random), guided through its labels; scale 0 is its conditional predictor, and "all" runs.
TEST_F(NetworkGuidanceConfig, ACheckpointWithClassesIsGuided) {
  torch::manual_seed(5);
  NetworkSpec spec;
  spec.architecture = {.dims = 2, .width = 16, .blocks = 1, .embedding_dims = 8, .classes = 2};
  spec.output = NetworkOutput::edm;
  ScoreMlp network(spec.architecture);
  network->to(torch::kFloat64);
  {
    // The output layer starts at zero (F = 0 for every class): drawn instead, so the classes differ.
    const torch::NoGradGuard no_grad;
    for (auto& p : network->named_parameters())
      if (p.key().rfind("output.", 0) == 0) p.value().normal_(0.0, 0.5);
  }
  const std::string file = (dir_ / "classes.ckpt").string();
  save_network(file, spec, network);
  const std::string model = fmt::format("kind = \"network\"\nfile = \"{}\"\n", file);
  const SamplingSetup zero = setup_of(config(model, "class = 1\n"));
  ASSERT_EQ(zero.network->classes(), 2);
  const Batch cond = predict(*zero.network->make_predictor(1), x, alpha, sigma), null = predict(*zero.network->make_predictor(-1), x, alpha, sigma);
  EXPECT_GT((cond - null).abs().maxCoeff(), 1e-3);
  EXPECT_TRUE((predict(*zero.make_predictor(), x, alpha, sigma) == cond).all());
  const SamplingSetup guided = setup_of(config(model, "class = 1\nscale = 2.0\n"));
  EXPECT_TRUE((predict(*guided.make_predictor(), x, alpha, sigma) == cond + 2.0 * (cond - null)).all());
  const SamplingSetup all = setup_of(config(model, "class = \"all\"\nscale = 2.0\n"));
  EXPECT_EQ(all.labels(), (std::vector<std::int64_t>{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}));
  const SamplingOutcome r = run_sampling(all, initial_noise(all), 2);
  ASSERT_FALSE(r.failed) << r.failure;
  EXPECT_TRUE(r.samples.isFinite().all());
  EXPECT_TRUE((r.initial.topRows(6) == r.initial.bottomRows(6)).all());  // each class from the same x_T
  EXPECT_GT((r.samples.topRows(6) - r.samples.bottomRows(6)).abs().maxCoeff(), 1e-6);  // and the classes differ
  EXPECT_NE(config_error(config(model, "class = 2\n")).find("2 classes"), std::string::npos);
}

}  // namespace
}  // namespace diffode
