// `diffode likelihood`: the [likelihood] reader rejects what it cannot run (naming file, line and
// key), a bad config exits 2 and writes nothing, and the command's file carries the exact mixture's
// log p_{t_min} to 1e-5 nats per dimension at a tight tolerance; results do not depend on the
// thread count; HDF5 data with an affine transform reads back as the same points; Hutchinson
// estimates carry a standard error that covers their deviation from the exact value.
#include "experiments/cli/commands.hpp"
#include "experiments/run/likelihood.hpp"

#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/provenance.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/support/temp_folder.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unistd.h>

namespace diffode {
namespace {

namespace fs = std::filesystem;

// The ConfigError message of reading [likelihood] from `text`, or "" if it was accepted.
std::string setup_error(const std::string& text) {
  try {
    const Config config = Config::from_string(text, "c.toml");
    ConfigTable root = config.root();
    read_likelihood_setup(root.table("likelihood"));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(LikelihoodSetupReader, DefaultsAreDopri5AtTheLiteraturesTolerance) {
  const Config config = Config::from_string("[likelihood]\n", "c.toml");
  ConfigTable root = config.root();
  const LikelihoodSetup s = read_likelihood_setup(root.table("likelihood"));
  EXPECT_EQ(s.solver, "dopri5");
  EXPECT_EQ(s.options.adaptive.rtol, 1e-5);
  EXPECT_EQ(s.options.adaptive.atol, 1e-5);
  EXPECT_EQ(s.options.divergence, DivergenceMethod::exact);
  EXPECT_EQ(s.options.time, LikelihoodTime::process);
  EXPECT_EQ(s.prior, LikelihoodPrior::exact);
  EXPECT_EQ(s.block_rows, 256);
  EXPECT_EQ(s.steps, 0);
}

// The adaptive pairs and the variance-reduced estimators are chosen by solver, divergence, probe and
// sketch; a Hutch++ split the model cannot take is refused at its key.
TEST(LikelihoodSetupReader, ReadsVerner65AndHutchpp) {
  const Config config = Config::from_string(R"([likelihood]
solver = "verner65"
rtol = 1e-3
atol = 1e-3
divergence = "hutchpp"
probes = 8
sketch = 3
probe_seed = 2
)", "c.toml");
  ConfigTable root = config.root();
  const LikelihoodSetup s = read_likelihood_setup(root.table("likelihood"), 16);
  EXPECT_TRUE(s.adaptive());
  EXPECT_EQ(s.options.method, AdaptiveMethod::verner65);
  EXPECT_EQ(s.options.adaptive.rtol, 1e-3);
  EXPECT_EQ(s.options.divergence, DivergenceMethod::hutchpp);
  EXPECT_EQ(s.options.hutchinson.probes, 8);
  EXPECT_EQ(s.options.hutchinson.sketch, 3);
  EXPECT_EQ(s.options.hutchinson.seed, 2u);
  EXPECT_NE(setup_error("[likelihood]\nsolver = \"verner65\"\nsteps = 10\n").find("steps"), std::string::npos);
  EXPECT_NE(setup_error("[likelihood]\nprobe = \"orthogonal\"\n").find("probe"), std::string::npos);
  EXPECT_EQ(setup_error("[likelihood]\ndivergence = \"hutchinson\"\nprobes = 8\nprobe = \"orthogonal\"\n"), "");
  EXPECT_NE(setup_error("[likelihood]\ndivergence = \"hutchpp\"\n").find("probes"), std::string::npos);
  EXPECT_NE(setup_error("[likelihood]\ndivergence = \"hutchpp\"\nprobes = 8\nprobe = \"gaussian\"\n").find("probe"), std::string::npos);
  EXPECT_NE(setup_error("[likelihood]\ndivergence = \"hutchinson\"\nprobes = 8\nsketch = 2\n").find("sketch"), std::string::npos);
  // 8 JVPs with a sketch of 4 leave no residual probe; on a 2-D model 8 JVPs with k = 2 leave 4 > D - k.
  const auto split_error = [](const std::string& text, Index dims) -> std::string {
    try {
      const Config config = Config::from_string(text, "c.toml");
      ConfigTable root = config.root();
      read_likelihood_setup(root.table("likelihood"), dims);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(split_error("[likelihood]\ndivergence = \"hutchpp\"\nprobes = 8\nsketch = 4\n", 16).find("sketch"), std::string::npos);
  EXPECT_NE(split_error("[likelihood]\ndivergence = \"hutchpp\"\nprobes = 8\n", 2).find("probes"), std::string::npos);
  EXPECT_EQ(split_error("[likelihood]\ndivergence = \"hutchpp\"\nprobes = 8\n", 16), "");
}

TEST(LikelihoodSetupReader, ReadsEveryKey) {
  const Config config = Config::from_string(R"([likelihood]
solver = "rk4"
steps = 40
time = "log_sigma"
divergence = "hutchinson"
probes = 7
probe = "gaussian"
probe_seed = 11
prior = "gaussian"
block_rows = 16
)", "c.toml");
  ConfigTable root = config.root();
  const LikelihoodSetup s = read_likelihood_setup(root.table("likelihood"));
  EXPECT_EQ(s.solver, "rk4");
  EXPECT_EQ(s.steps, 40);
  EXPECT_EQ(s.options.time, LikelihoodTime::log_sigma);
  EXPECT_EQ(s.options.divergence, DivergenceMethod::hutchinson);
  EXPECT_EQ(s.options.hutchinson.probes, 7);
  EXPECT_EQ(s.options.hutchinson.law, ProbeLaw::gaussian);
  EXPECT_EQ(s.options.hutchinson.seed, 11u);
  EXPECT_EQ(s.prior, LikelihoodPrior::gaussian);
  EXPECT_EQ(s.block_rows, 16);
}

TEST(LikelihoodSetupReader, ErrorsNameFileLineAndKey) {
  // Each case: the config, then what the message must contain (file:line: key).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[likelihood]\nrtol = 1e-6\nrtoll = 1e-6\n", "c.toml:3: likelihood.rtoll: unknown key"},
      {"[likelihood]\nrtol = \"small\"\n", "c.toml:2: likelihood.rtol: expected a number"},
      {"[likelihood]\nsolver = \"dopri5\"\nrtol = 0.0\n", "c.toml:3: likelihood.rtol: must be a finite number > 0"},
      {"[likelihood]\natol = -1e-5\n", "c.toml:2: likelihood.atol: must be a finite number > 0"},
      {"[likelihood]\nsolver = \"rk4\"\n", "c.toml:1: likelihood.steps: required for the fixed-step solver 'rk4'"},
      {"[likelihood]\nsolver = \"heun\"\nsteps = 0\n", "c.toml:3: likelihood.steps: must lie in 1..1000000"},
      {"[likelihood]\nsteps = 10\n", "c.toml:2: likelihood.steps: only for the fixed-step solvers"},
      {"[likelihood]\nsolver = \"euler\"\nsteps = 10\natol = 1e-3\n", "c.toml:4: likelihood.atol: only for the adaptive solvers"},
      {"[likelihood]\nsolver = \"rk45\"\n", "c.toml:2: likelihood.solver: 'rk45' is not one of"},
      {"[likelihood]\nprobes = 4\n", "c.toml:2: likelihood.probes: only with divergence = \"hutchinson\" or \"hutchpp\""},
      {"[likelihood]\ndivergence = \"hutchinson\"\nprobes = 0\n", "c.toml:3: likelihood.probes: must lie in 1..4096"},
      {"[likelihood]\ndivergence = \"hutchinson\"\nprobe = \"basis\"\nprobes = 3\n", "c.toml:4: likelihood.probes: the basis probes"},
      {"[likelihood]\nsteps = 3.5\nsolver = \"rk4\"\n", "c.toml:2: likelihood.steps: expected an integer"},
      {"[likelihood]\nblock_rows = 0\n", "c.toml:2: likelihood.block_rows: must be >= 1"},
      {"[likelihood]\ntime = \"log_sigma\"\nrho = 3\n", "c.toml:3: likelihood.rho: only with time = \"sigma_rho\""},
      {"[likelihood]\ntime = \"sigma_rho\"\nrho = 0\n", "c.toml:3: likelihood.rho: must be"},
      {"[likelihood]\nsolver = \"exponential23\"\ntime = \"process\"\n", "c.toml:3: likelihood.time: exponential23 integrates in lambda"},
      {"[likelihood]\nsolver = \"exponential12\"\nsteps = 8\n", "c.toml:3: likelihood.steps: only for the fixed-step solvers"},
      {"[likelihood]\ncontrol_variate = \"gaussian\"\n", "c.toml:2: likelihood.control_variate: only with divergence = \"hutchinson\""},
      {"[likelihood]\ndivergence = \"hutchpp\"\nprobes = 8\ncontrol_variate = \"gaussian\"\n",
       "c.toml:4: likelihood.control_variate: only with divergence = \"hutchinson\""},
      {"[likelihood]\ndivergence = \"hutchinson\"\nprobe = \"basis\"\ncontrol_variate = \"gaussian\"\n",
       "c.toml:4: likelihood.control_variate: the basis probes"},
      {"[likelihood]\ndivergence = \"hutchinson\"\ncontrol_variate = \"linear\"\n", "c.toml:3: likelihood.control_variate: 'linear' is not one of"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = setup_error(text);
    EXPECT_NE(message.find(expected), std::string::npos) << "config:\n" << text << "message: " << message;
  }
  EXPECT_EQ(setup_error("[likelihood]\nsolver = \"midpoint\"\nsteps = 5\n"), "");
  EXPECT_EQ(setup_error("[likelihood]\ntime = \"sigma_rho\"\n"), "");
  const Config config = Config::from_string("[likelihood]\ntime = \"sigma_rho\"\nrho = 3.5\n", "c.toml");
  ConfigTable root = config.root();
  const LikelihoodSetup s = read_likelihood_setup(root.table("likelihood"));
  EXPECT_EQ(s.options.time, LikelihoodTime::sigma_rho);
  EXPECT_EQ(s.options.rho, 3.5);
  EXPECT_EQ(read_likelihood_setup(Config::from_string("[likelihood]\ntime = \"sigma_rho\"\n", "c.toml").root().table("likelihood")).options.rho,
            7.0);
}

class LikelihoodCommand : public diffode::testing::TempFolderTest {
 protected:
  // ring2d under VP, `points` draws of p_t_min, exact divergence at a tight tolerance.
  static std::string config(const fs::path& output, const std::string& data = "points = 48\nseed = 3",
                            const std::string& likelihood = "rtol = 1e-8\natol = 1e-8", const std::string& model = "preset = \"ring2d\"") {
    return fmt::format("[process]\nname = \"vp\"\n[model]\n{}\n[data]\n{}\n[likelihood]\n{}\n[output]\nfile = \"{}\"\n", model, data,
                       likelihood, output.string());
  }
  // The command's exit code and what it printed to stderr.
  std::pair<int, std::string> run(const fs::path& config_file, int threads = 1) {
    ::testing::internal::CaptureStderr();
    const int code = run_likelihood_command(config_file, provenance_, threads);
    return {code, ::testing::internal::GetCapturedStderr()};
  }
  static PerSample column(const Hdf5File& h5, const std::string& name) { return h5.read_matrix(name).col(0); }
  static std::map<std::string, double> summary(const Hdf5File& h5) {
    const std::vector<double> values = h5.read_vector("summary/values");
    std::stringstream names(h5.read_string_attribute("/summary/values", "names"));
    std::map<std::string, double> out;
    std::string name;
    for (std::size_t i = 0; std::getline(names, name, ','); ++i) out[name] = values.at(i);
    return out;
  }

  Provenance provenance_{.command_line = "test", .commit = "test", .versions = "test", .host = "test", .start_time = "test"};
};

TEST_F(LikelihoodCommand, ExactDivergenceMatchesTheMixtureToOneInAHundredThousandPerDim) {
  const fs::path out = dir_ / "out.h5";
  const auto [code, err] = run(write_config("a.toml", config(out)));
  ASSERT_EQ(code, 0) << err;
  const Hdf5File h5(out, Hdf5File::Mode::read);
  const PerSample log_p = column(h5, "log_p"), exact = column(h5, "exact_log_p");
  ASSERT_EQ(log_p.size(), 48);
  // The file's exact values are the mixture's log p_t_min at the draws it was asked for.
  const auto process = make_process("vp");
  const GaussianMixture ring = GaussianMixture::ring();
  const double a = process->alpha(process->t_min()), s = process->sigma(process->t_min());
  const Batch x = ring.sample_marginal(a, s, 48, 3);
  EXPECT_EQ((exact - ring.log_prob(x, PerSample::Constant(48, a), PerSample::Constant(48, s))).abs().maxCoeff(), 0.0);
  EXPECT_LT((log_p - exact).abs().maxCoeff() / 2.0, 1e-5);
  EXPECT_EQ((column(h5, "error") - (log_p - exact)).abs().maxCoeff(), 0.0);
  EXPECT_TRUE((column(h5, "std_error") == 0).all());
  EXPECT_TRUE((column(h5, "nfe") > 0).all());
  EXPECT_TRUE((column(h5, "bits_per_dim") == -log_p / (2 * std::numbers::ln2)).all());
  const auto m = summary(h5);
  EXPECT_EQ(m.at("points"), 48);
  EXPECT_NEAR(m.at("ll_error"), (log_p - exact).abs().mean() / 2.0, 1e-15);
  EXPECT_NEAR(m.at("mean_log_p"), log_p.mean(), 1e-12);
  EXPECT_NEAR(m.at("nfe_mean"), column(h5, "nfe").mean(), 1e-9);
  EXPECT_EQ(h5.read_string_attribute("/", "status"), "ok");
  EXPECT_EQ(h5.read_string_attribute("/", "commit"), "test");
  EXPECT_NE(h5.read_string_attribute("/", "config").find("rtol = 1e-8"), std::string::npos);
}

TEST_F(LikelihoodCommand, OneAndTwoThreadsGiveBitwiseEqualFiles) {
  // Small blocks so that two threads really share the work; Hutchinson so that probe keying counts.
  const std::string likelihood = "rtol = 1e-6\natol = 1e-6\ndivergence = \"hutchinson\"\nprobes = 3\nblock_rows = 5";
  const fs::path one = dir_ / "one.h5", two = dir_ / "two.h5";
  ASSERT_EQ(run(write_config("one.toml", config(one, "points = 23", likelihood)), 1).first, 0);
  ASSERT_EQ(run(write_config("two.toml", config(two, "points = 23", likelihood)), 2).first, 0);
  const Hdf5File a(one, Hdf5File::Mode::read), b(two, Hdf5File::Mode::read);
  for (const char* name : {"log_p", "std_error", "nfe", "accepted", "rejected", "x_T", "delta_log_p"})
    EXPECT_TRUE((a.read_matrix(name) == b.read_matrix(name)).all()) << name;
  // And a point's result does not depend on the blocks it is cut into, but for rounding: with
  // Hutchinson's K = 3 integrals a point's mean can move by an ulp with its row's position in the
  // batch (measured: 2e-16 nats in one of 23 points, x_T bitwise equal; Eigen's rowwise().mean()
  // over 3 columns associates differently in its vectorized rows and its scalar tail), which is
  // why the blocks have a size that does not depend on the thread count.
  const auto process = make_process("vp");
  const GaussianMixture ring = GaussianMixture::ring();
  const Batch x = ring.sample_marginal(process->alpha(process->t_min()), process->sigma(process->t_min()), 23, 0);
  LikelihoodSetup setup;
  setup.options.adaptive.rtol = setup.options.adaptive.atol = 1e-6;
  setup.options.divergence = DivergenceMethod::hutchinson;
  setup.options.hutchinson.probes = 3;
  const LikelihoodResult whole = evaluate_log_likelihood(setup, *process, ring, x, 1);
  EXPECT_LT((whole.log_p - column(a, "log_p")).abs().maxCoeff(), 1e-12);
  EXPECT_TRUE((whole.x_T == a.read_matrix("x_T")).all());
  EXPECT_TRUE((PerSample::Map(column(a, "nfe").data(), 23) == Eigen::Map<const Eigen::Array<Index, -1, 1>>(whole.nfe.data(), 23).cast<double>()).all());
}

TEST_F(LikelihoodCommand, Hdf5DataWithAnAffineTransformReadsBackAsTheSamePoints) {
  // Model-space draws x, stored as data y = offset + scale x: the command maps them back and
  // reports log p(y) = log p_model(x) - D log scale.
  const auto process = make_process("vp");
  const GaussianMixture ring = GaussianMixture::ring();
  const Batch x = ring.sample_marginal(process->alpha(process->t_min()), process->sigma(process->t_min()), 16, 8);
  const double scale = 4.0, offset = 1.5;
  const fs::path data = dir_ / "data.h5";
  Hdf5File(data, Hdf5File::Mode::create).write_matrix("images/y", offset + scale * x);
  const std::string likelihood = "rtol = 1e-7\natol = 1e-7";
  const fs::path from_model = dir_ / "model.h5", from_file = dir_ / "file.h5", dequantized = dir_ / "deq.h5";
  ASSERT_EQ(run(write_config("m.toml", config(from_model, "points = 16\nseed = 8", likelihood))).first, 0);
  const std::string hdf5 = fmt::format("source = \"hdf5\"\nfile = \"{}\"\ndataset = \"images/y\"\nscale = {}\noffset = {}", data.string(), scale, offset);
  ASSERT_EQ(run(write_config("f.toml", config(from_file, hdf5, likelihood))).first, 0);
  const Hdf5File m(from_model, Hdf5File::Mode::read), f(from_file, Hdf5File::Mode::read);
  const double log_volume = 2 * std::log(scale);
  EXPECT_LT((column(f, "exact_log_p") - (column(m, "exact_log_p") - log_volume)).abs().maxCoeff(), 1e-9);
  EXPECT_LT((column(f, "log_p") - (column(m, "log_p") - log_volume)).abs().maxCoeff(), 1e-6);
  EXPECT_LT((column(f, "error")).abs().maxCoeff(), 1e-4);
  // Uniform dequantization in bins of width w adds D log w and moves each point by less than a bin.
  const double w = 1e-4;
  ASSERT_EQ(run(write_config("d.toml", config(dequantized, hdf5 + fmt::format("\nbin_width = {}\nseed = 2", w), likelihood))).first, 0);
  const Hdf5File d(dequantized, Hdf5File::Mode::read);
  const PerSample shift = column(d, "exact_log_p") - 2 * std::log(w) - column(f, "exact_log_p");
  EXPECT_GT(shift.abs().maxCoeff(), 0.0);   // the points did move
  EXPECT_LT(shift.abs().maxCoeff(), 1e-2);  // by a fraction of a bin: |grad log p| w / scale is small
  EXPECT_LT((column(d, "error")).abs().maxCoeff(), 1e-4);
}

TEST_F(LikelihoodCommand, HutchinsonStandardErrorsCoverTheExactValue) {
  const fs::path out = dir_ / "h.h5";
  const std::string likelihood = "rtol = 1e-7\natol = 1e-7\ndivergence = \"hutchinson\"\nprobes = 16\nprobe_seed = 4";
  const auto [code, err] = run(write_config("h.toml", config(out, "points = 24\nseed = 6", likelihood, "preset = \"iso16\"")));
  ASSERT_EQ(code, 0) << err;
  const Hdf5File h5(out, Hdf5File::Mode::read);
  const PerSample error = column(h5, "error"), se = column(h5, "std_error");
  ASSERT_EQ(error.size(), 24);
  EXPECT_TRUE((se > 0).all());
  // Per point within 4 SE (24 points: a chance crossing has probability ~ 24 x 6e-5); the mean
  // within 3 SE of the mean, whose standard error is that of independent points' estimates.
  EXPECT_LT((error / se).abs().maxCoeff(), 4.0);
  const double mean_se = std::sqrt(se.square().sum()) / 24.0;
  EXPECT_LT(std::abs(error.mean()), 3.0 * mean_se);
  EXPECT_NEAR(summary(h5).at("ll_std_error"), se.mean() / 16.0, 1e-15);
}

// The exponential pair in lambda and the Gaussian control variate through the command: the exact
// log-density to a tolerance-sized error, and standard errors that are reported and cover.
TEST(LikelihoodSetupReader, ReadsTheExponentialPairsAndTheControlVariate) {
  const Config config = Config::from_string(
      "[likelihood]\nsolver = \"exponential12\"\nrtol = 1e-4\ndivergence = \"hutchinson\"\nprobes = 4\ncontrol_variate = \"gaussian\"\n", "c.toml");
  ConfigTable root = config.root();
  const LikelihoodSetup s = read_likelihood_setup(root.table("likelihood"));
  EXPECT_TRUE(s.adaptive());
  EXPECT_TRUE(s.exponential());
  EXPECT_EQ(s.options.method, AdaptiveMethod::exponential12);
  EXPECT_EQ(s.options.time, LikelihoodTime::log_sigma);
  EXPECT_TRUE(s.control_variate);
  EXPECT_EQ(read_likelihood_setup(Config::from_string("[likelihood]\nsolver = \"exponential23\"\ntime = \"log_sigma\"\n", "c.toml").root().table("likelihood"))
                .options.method,
            AdaptiveMethod::exponential23);
}

TEST_F(LikelihoodCommand, ExponentialPairWithAControlVariateReachesTheExactValue) {
  const fs::path out = dir_ / "e.h5";
  const auto [code, err] = run(write_config("e.toml", config(out, "points = 24\nseed = 6", "solver = \"exponential23\"\nrtol = 1e-6\natol = 1e-6")));
  ASSERT_EQ(code, 0) << err;
  EXPECT_LT(column(Hdf5File(out, Hdf5File::Mode::read), "error").abs().maxCoeff() / 2.0, 1e-4);
  const fs::path cv = dir_ / "cv.h5";
  const std::string likelihood =
      "solver = \"exponential23\"\nrtol = 1e-7\natol = 1e-7\ndivergence = \"hutchinson\"\nprobes = 16\nprobe = \"gaussian\"\ncontrol_variate = \"gaussian\"";
  const auto [code2, err2] = run(write_config("cv.toml", config(cv, "points = 24\nseed = 6", likelihood, "preset = \"iso16\"")));
  ASSERT_EQ(code2, 0) << err2;
  const Hdf5File h5(cv, Hdf5File::Mode::read);
  const PerSample error = column(h5, "error"), se = column(h5, "std_error");
  EXPECT_TRUE((se > 0).all());
  EXPECT_LT((error / se).abs().maxCoeff(), 4.0);
  EXPECT_LT(std::abs(error.mean()), 3.0 * std::sqrt(se.square().sum()) / 24.0);
}

TEST_F(LikelihoodCommand, FixedStepRk4InLogSigmaRunsItsGrid) {
  const fs::path out = dir_ / "rk4.h5";
  ASSERT_EQ(run(write_config("r.toml", config(out, "points = 8", "solver = \"rk4\"\nsteps = 64\ntime = \"log_sigma\""))).first, 0);
  const Hdf5File h5(out, Hdf5File::Mode::read);
  EXPECT_TRUE((column(h5, "nfe") == 4 * 64).all());
  EXPECT_TRUE((column(h5, "accepted") == 64).all());
  EXPECT_LT(column(h5, "error").abs().maxCoeff() / 2.0, 1e-3);
}

TEST_F(LikelihoodCommand, TheGaussianPriorIsTheProcesssPrior) {
  const fs::path exact = dir_ / "exact.h5", gaussian = dir_ / "gaussian.h5";
  ASSERT_EQ(run(write_config("e.toml", config(exact, "points = 8"))).first, 0);
  ASSERT_EQ(run(write_config("g.toml", config(gaussian, "points = 8", "rtol = 1e-8\natol = 1e-8\nprior = \"gaussian\""))).first, 0);
  const Hdf5File e(exact, Hdf5File::Mode::read), g(gaussian, Hdf5File::Mode::read);
  // The same solve; only log p_T at x_T changes, to N(0, prior_std^2 I).
  EXPECT_TRUE((e.read_matrix("x_T") == g.read_matrix("x_T")).all());
  EXPECT_TRUE((column(e, "delta_log_p") == column(g, "delta_log_p")).all());
  EXPECT_TRUE((column(g, "prior_log_p") == make_process("vp")->prior_log_density(g.read_matrix("x_T"))).all());
  EXPECT_TRUE((column(g, "log_p") == column(g, "prior_log_p") + column(g, "delta_log_p")).all());
  // The Gaussian is not the ring's p_T: the difference is the prior's modelling error, not zero.
  EXPECT_GT((column(g, "error") - column(e, "error")).abs().maxCoeff(), 1e-12);
}

TEST_F(LikelihoodCommand, BadConfigsExitTwoNameTheKeyAndWriteNothing) {
  const fs::path out = dir_ / "never.h5";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {config(out, "points = 8\npoints_per_batch = 2"), "data.points_per_batch: unknown key"},
      {config(out, "points = \"many\""), "data.points: expected an integer"},
      {config(out, "points = 8", "rtol = 0"), "likelihood.rtol: must be a finite number > 0"},
      {config(out, "points = 8", "solver = \"euler\""), "likelihood.steps: required"},
      {config(out, "source = \"hdf5\"\nfile = \"/no/such/data.h5\"\ndataset = \"x\""), "data.file: no such file: /no/such/data.h5"},
      {config(out, "points = 8\nscale = 2"), "data.scale: only with source = \"hdf5\""},
      {config(out, "points = 8") + "[extra]\n", "extra: unknown key"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto [code, err] = run(write_config(fmt::format("bad{}.toml", i), cases[i].first));
    EXPECT_EQ(code, 2) << cases[i].second;
    EXPECT_NE(err.find(cases[i].second), std::string::npos) << err;
    EXPECT_NE(err.find(fmt::format("bad{}.toml:", i)), std::string::npos) << err;  // the file and line
  }
  // A data file without the dataset names both.
  const fs::path data = dir_ / "data.h5";
  Hdf5File(data, Hdf5File::Mode::create).write_matrix("y", Batch::Zero(4, 2));
  const auto [code, err] = run(write_config("nodata.toml", config(out, fmt::format("source = \"hdf5\"\nfile = \"{}\"\ndataset = \"z\"", data.string()))));
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find(fmt::format("data.dataset: {}: no dataset 'z'", data.string())), std::string::npos) << err;
  // A data set of the wrong width.
  const auto [width_code, width_err] = run(write_config("wide.toml", config(out, fmt::format("source = \"hdf5\"\nfile = \"{}\"\ndataset = \"y\"", data.string()), "rtol = 1e-5", "preset = \"iso16\"")));
  EXPECT_EQ(width_code, 2);
  EXPECT_NE(width_err.find("the model has 16 dimensions"), std::string::npos) << width_err;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(LikelihoodCommand, TheExampleConfigRuns) {
  // The documented example, as shipped, but for its output file (this source's path locates it).
  const fs::path example = fs::path(__FILE__).parent_path().parent_path().parent_path() / "experiments" / "likelihood.example.toml";
  std::ifstream in(example);
  ASSERT_TRUE(in) << example;
  std::stringstream text;
  text << in.rdbuf();
  std::string config_text = text.str();
  const std::string original = "file = \"results/likelihood_iso16_vp.h5\"";
  const auto at = config_text.find(original);
  ASSERT_NE(at, std::string::npos);
  const fs::path out = dir_ / "example.h5";
  config_text.replace(at, original.size(), fmt::format("file = \"{}\"", out.string()));
  const auto [code, err] = run(write_config("example.toml", config_text), 2);
  ASSERT_EQ(code, 0) << err;
  const Hdf5File h5(out, Hdf5File::Mode::read);
  const auto m = summary(h5);
  EXPECT_EQ(m.at("points"), 256);
  EXPECT_EQ(m.at("dims"), 16);
  // The literature's tolerance is well inside 1e-3 nats per dimension here (measured 1.7e-5 mean).
  EXPECT_LT(m.at("ll_error"), 1e-4);
}

TEST(LikelihoodHelp, NamesEveryKey) {
  const std::string help = likelihood_config_help();
  for (const char* key : {"solver", "rtol", "atol", "steps", "time", "divergence", "probes", "probe_seed", "control_variate", "prior", "block_rows",
                          "source", "points", "seed", "dataset", "scale", "offset", "bin_width", "file"})
    EXPECT_NE(help.find(key), std::string::npos) << key;
}

}  // namespace
}  // namespace diffode
