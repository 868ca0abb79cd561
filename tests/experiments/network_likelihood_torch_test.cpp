// `diffode likelihood` with network models: the score's divergence and Jacobian products by autograd
// (NetworkModel::make_score_jacobian), and the likelihood solve routed through them.
//
// The modules (tests/support/torchscript_modules.hpp) gauss_x0.pt (EDM) and gauss_eps_vp.pt (VP)
// compute the exact predictions of N(0, 0.25 I) data, so the same Gaussian as a one-component
// mixture is the control: autograd's divergence and products must equal the mixture's closed forms
// to rounding, and the likelihood solved through the network must equal the mixture's. mlp.pt, a
// seeded MLP read as an eps prediction, has a Jacobian that is neither isotropic nor symmetric: its
// products are checked against central differences, and Hutchinson's estimates on it against the
// exact-divergence solve within their standard errors.
#include "experiments/run/config.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/likelihood.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/readers.hpp"
#include "tests/support/temp_folder.hpp"
#include "tests/support/torchscript_modules.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace diffode {
namespace {

using testing::torchscript_modules;

const std::string kGaussian = "weights = [1.0]\nmeans = [[0.0, 0.0]]\nvariances = [[0.25, 0.25]]\n";

struct ModuleCase {
  std::string process;
  std::string model;  // the [model] table's keys
};

std::string gauss_x0(const std::string& extra = "") {
  return fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_x0.pt\"\ndims = 2\nprediction = \"x0\"\nsignature = \"x_sigma\"\n"
                     "time_input = \"sigma\"\nscale_free_input = true\nbatch_size = 5\n{}",
                     torchscript_modules().string(), extra);
}

std::vector<ModuleCase> gaussian_cases() {
  return {{"edm", gauss_x0()},
          {"vp", fmt::format("kind = \"torchscript\"\nfile = \"{}/gauss_eps_vp.pt\"\ndims = 2\nprediction = \"eps\"\nbatch_size = 3\n",
                             torchscript_modules().string())}};
}

ModuleCase mlp_case() {
  return {"vp", fmt::format("kind = \"torchscript\"\nfile = \"{}/mlp.pt\"\ndims = 2\nprediction = \"eps\"\n", torchscript_modules().string())};
}

// A model and its process, read as `diffode likelihood` reads them.
struct Loaded {
  std::unique_ptr<Process> process;
  ModelSource model;
};

Loaded load(const ModuleCase& c, bool ground_truth = true) {
  const std::string text = fmt::format("[process]\nname = \"{}\"\n[model]\n{}{}", c.process, c.model,
                                       ground_truth ? "[model.ground_truth]\n" + kGaussian : "");
  const Config config = Config::from_string(text, "likelihood.toml");
  ConfigTable root = config.root();
  Loaded l;
  l.process = read_process(root.table("process"));
  l.model = read_model(root.table("model"), root.table("process"));
  return l;
}

GaussianMixture gaussian() {
  const Config config = Config::from_string("[model]\n" + kGaussian, "gaussian.toml");
  return read_mixture(config.root().table("model"));
}

Batch random_batch(Index n, Index d, unsigned seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Batch b(n, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < d; ++j) b(i, j) = normal(rng);
  return b;
}

// Per-row levels of `process` at times spread over its range.
void levels(const Process& process, Index n, PerSample& alpha, PerSample& sigma) {
  alpha.resize(n), sigma.resize(n);
  const double lo = std::log(process.t_min()), hi = std::log(process.t_max());
  for (Index i = 0; i < n; ++i) {
    const double t = std::exp(lo + (hi - lo) * (static_cast<double>(i) + 0.5) / static_cast<double>(n));
    alpha[i] = process.alpha(t);
    sigma[i] = process.sigma(t);
  }
}

class NetworkLikelihoodTest : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    if (torchscript_modules().empty()) GTEST_SKIP() << testing::kNoPythonTorch;
    use_network_backend(diffode_network_backend());
  }
};

TEST_F(NetworkLikelihoodTest, AutogradDivergenceAndProductsEqualTheGaussiansClosedForms) {
  const GaussianMixture mixture = gaussian();
  for (const ModuleCase& c : gaussian_cases()) {
    SCOPED_TRACE(c.process);
    const Loaded l = load(c);
    const Index n = 11;
    const Batch x = random_batch(n, 2, 5);
    PerSample alpha, sigma;
    levels(*l.process, n, alpha, sigma);
    const std::unique_ptr<ScoreJacobian> jacobian = l.model.network->make_score_jacobian(-1);
    Batch score, exact_score;
    PerSample divergence, exact_divergence;
    jacobian->score_and_divergence(x, alpha, sigma, score, divergence);
    mixture.evaluate(x, alpha, sigma, {.score = &exact_score, .divergence = &exact_divergence});
    for (Index i = 0; i < n; ++i) {
      EXPECT_NEAR(divergence[i], exact_divergence[i], 1e-11 * std::abs(exact_divergence[i])) << "row " << i;
      for (Index j = 0; j < 2; ++j) EXPECT_NEAR(score(i, j), exact_score(i, j), 1e-11 * (1 + std::abs(exact_score(i, j))));
    }
    const std::vector<Batch> probes{random_batch(n, 2, 6), random_batch(n, 2, 7), random_batch(n, 2, 8)};
    std::vector<Batch> vjps;
    jacobian->score_and_vjps(x, alpha, sigma, probes, score, vjps);
    ASSERT_EQ(vjps.size(), probes.size());
    for (std::size_t k = 0; k < probes.size(); ++k) {
      Batch jvp;
      mixture.score_jvp(x, alpha, sigma, probes[k], jvp);  // symmetric J: the same as the VJP
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < 2; ++j) EXPECT_NEAR(vjps[k](i, j), jvp(i, j), 1e-11 * (1 + std::abs(jvp(i, j)))) << "probe " << k << " row " << i;
    }
    // No probes: the score alone.
    jacobian->score_and_vjps(x, alpha, sigma, {}, score, vjps);
    EXPECT_TRUE(vjps.empty());
    for (Index i = 0; i < n; ++i) EXPECT_NEAR(score(i, 0), exact_score(i, 0), 1e-11 * (1 + std::abs(exact_score(i, 0))));
  }
}

TEST_F(NetworkLikelihoodTest, ProductsOfANonSymmetricJacobianMatchCentralDifferences) {
  const Loaded l = load(mlp_case(), false);
  const Index n = 6, d = 2;
  const Batch x = random_batch(n, d, 9, 0.7);
  PerSample alpha, sigma;
  levels(*l.process, n, alpha, sigma);
  const std::unique_ptr<ScoreJacobian> jacobian = l.model.network->make_score_jacobian(-1);
  Batch score;
  PerSample divergence;
  jacobian->score_and_divergence(x, alpha, sigma, score, divergence);
  // J by central differences of the score, column by column (J[i](a, b) = d s_a / d x_b).
  const double h = 1e-5;
  std::vector<Eigen::MatrixXd> jac(n, Eigen::MatrixXd(d, d));
  for (Index b = 0; b < d; ++b) {
    Batch plus = x, minus = x, s_plus, s_minus;
    plus.col(b) += h;
    minus.col(b) -= h;
    PerSample unused;
    jacobian->score_and_divergence(plus, alpha, sigma, s_plus, unused);
    jacobian->score_and_divergence(minus, alpha, sigma, s_minus, unused);
    for (Index i = 0; i < n; ++i)
      for (Index a = 0; a < d; ++a) jac[i](a, b) = (s_plus(i, a) - s_minus(i, a)) / (2 * h);
  }
  double asymmetry = 0;
  for (Index i = 0; i < n; ++i) {
    const double scale = jac[i].cwiseAbs().maxCoeff();
    asymmetry = std::max(asymmetry, std::abs(jac[i](0, 1) - jac[i](1, 0)) / scale);
    EXPECT_NEAR(divergence[i], jac[i].trace(), 1e-6 * scale) << "row " << i;
  }
  EXPECT_GT(asymmetry, 1e-3);  // the check below would not tell J^T v from J v otherwise
  const std::vector<Batch> probes{random_batch(n, d, 10), random_batch(n, d, 11)};
  std::vector<Batch> vjps;
  jacobian->score_and_vjps(x, alpha, sigma, probes, score, vjps);
  for (std::size_t k = 0; k < probes.size(); ++k)
    for (Index i = 0; i < n; ++i) {
      const Eigen::VectorXd v = probes[k].row(i).transpose().matrix();
      const Eigen::VectorXd expected = jac[i].transpose() * v;
      const double scale = jac[i].cwiseAbs().maxCoeff() * v.cwiseAbs().maxCoeff();
      for (Index a = 0; a < d; ++a) EXPECT_NEAR(vjps[k](i, a), expected[a], 1e-6 * scale) << "probe " << k << " row " << i;
    }
}

LikelihoodSetup setup_of(DivergenceMethod divergence, Index probes = 1, ProbeLaw law = ProbeLaw::rademacher, double tolerance = 1e-7) {
  LikelihoodSetup s;
  s.options.divergence = divergence;
  s.options.hutchinson.probes = probes;
  s.options.hutchinson.law = law;
  s.options.hutchinson.seed = 3;
  s.options.adaptive.rtol = s.options.adaptive.atol = tolerance;
  s.block_rows = 4;
  s.prior = LikelihoodPrior::gaussian;
  return s;
}

TEST_F(NetworkLikelihoodTest, TheNetworksLikelihoodEqualsTheExactMixtures) {
  const GaussianMixture mixture = gaussian();
  for (const ModuleCase& c : gaussian_cases()) {
    SCOPED_TRACE(c.process);
    const Loaded l = load(c);
    const double t_min = l.process->t_min();
    const Index n = 10;
    const Batch x = mixture.sample_marginal(l.process->alpha(t_min), l.process->sigma(t_min), n, 4);
    const PerSample exact = mixture.log_prob(x, PerSample::Constant(n, l.process->alpha(t_min)), PerSample::Constant(n, l.process->sigma(t_min)));
    for (const auto& [name, setup] : {std::pair{"exact", setup_of(DivergenceMethod::exact)},
                                      std::pair{"hutchinson", setup_of(DivergenceMethod::hutchinson, 3, ProbeLaw::gaussian)}}) {
      SCOPED_TRACE(name);
      for (const LikelihoodPrior prior : {LikelihoodPrior::gaussian, LikelihoodPrior::exact}) {
        LikelihoodSetup s = setup;
        s.prior = prior;
        const LikelihoodResult network = evaluate_log_likelihood(s, *l.process, l.model, x, 2);
        const LikelihoodResult closed = evaluate_log_likelihood(s, *l.process, mixture, x, 2);
        ASSERT_FALSE(network.stats.failed) << network.stats.failure;
        ASSERT_EQ(network.log_p.size(), n);
        for (Index i = 0; i < n; ++i) {
          // The same ODE from a score equal to rounding: the same steps, the same answer.
          EXPECT_NEAR(network.log_p[i], closed.log_p[i], 1e-8) << "point " << i;
          EXPECT_NEAR(network.std_error[i], closed.std_error[i], 1e-8) << "point " << i;
          EXPECT_EQ(network.nfe[i], closed.nfe[i]) << "point " << i;
          // The exact divergence with the mixture's p_T: nothing but the solve, to its tolerance.
          if (setup.options.divergence == DivergenceMethod::exact && prior == LikelihoodPrior::exact)
            EXPECT_NEAR(network.log_p[i], exact[i], 1e-5) << "point " << i;
        }
      }
    }
  }
}

TEST_F(NetworkLikelihoodTest, EstimatedDivergencesAreUnbiasedWithinTheirStandardErrors) {
  const Loaded l = load(mlp_case(), false);
  const Index n = 24;
  const Batch x = random_batch(n, 2, 12, 0.5);
  const LikelihoodResult exact = evaluate_log_likelihood(setup_of(DivergenceMethod::exact, 1, ProbeLaw::rademacher, 1e-6), *l.process, l.model, x, 2);
  ASSERT_FALSE(exact.stats.failed) << exact.stats.failure;
  for (const ProbeLaw law : {ProbeLaw::rademacher, ProbeLaw::gaussian}) {
    SCOPED_TRACE(law == ProbeLaw::rademacher ? "rademacher" : "gaussian");
    const LikelihoodResult estimate =
        evaluate_log_likelihood(setup_of(DivergenceMethod::hutchinson, 16, law, 1e-6), *l.process, l.model, x, 2);
    ASSERT_FALSE(estimate.stats.failed) << estimate.stats.failure;
    double z_sum = 0, spread = 0;
    int outside = 0;
    for (Index i = 0; i < n; ++i) {
      ASSERT_GT(estimate.std_error[i], 0) << "point " << i;
      const double z = (estimate.log_p[i] - exact.log_p[i]) / estimate.std_error[i];
      z_sum += z;
      spread += std::abs(estimate.log_p[i] - exact.log_p[i]);
      if (std::abs(z) > 3.5) ++outside;  // t with 15 degrees of freedom: P(|t| > 3.5) = 0.003
    }
    EXPECT_GT(spread, 1e-6);  // the estimates are noisy: the check has something to check
    EXPECT_LE(outside, 1);
    // The mean of n standardised errors: about N(0, 1 / n) (t_15's variance is 15/13).
    EXPECT_LT(std::abs(z_sum / n) * std::sqrt(static_cast<double>(n)), 4.0);
  }
  // With D = 2 the estimators that cover every direction are exact: an orthogonal frame of two
  // probes, and Hutch++ with a sketch of one direction and one residual probe on the other.
  const LikelihoodResult frame =
      evaluate_log_likelihood(setup_of(DivergenceMethod::hutchinson, 2, ProbeLaw::orthogonal, 1e-6), *l.process, l.model, x, 2);
  const LikelihoodResult hutchpp = evaluate_log_likelihood(setup_of(DivergenceMethod::hutchpp, 3, ProbeLaw::gaussian, 1e-6), *l.process, l.model, x, 2);
  for (Index i = 0; i < n; ++i) {
    EXPECT_NEAR(frame.log_p[i], exact.log_p[i], 1e-4) << "point " << i;
    EXPECT_NEAR(hutchpp.log_p[i], exact.log_p[i], 1e-4) << "point " << i;
  }
}

TEST_F(NetworkLikelihoodTest, TheReadersTakeANetworkAndRefuseWhatItCannotDo) {
  const Loaded without = load(gaussian_cases()[0], false);
  const auto error = [&](const std::string& table, auto read) -> std::string {
    const Config config = Config::from_string(table, "bad.toml");
    try {
      read(config.root());
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  // A network's prior defaults to the Gaussian; the mixture's p_T needs a ground truth.
  {
    const Config config = Config::from_string("[likelihood]\n", "ok.toml");
    EXPECT_EQ(read_likelihood_setup(config.root().table("likelihood"), 2, &without.model).prior, LikelihoodPrior::gaussian);
  }
  EXPECT_NE(error("[likelihood]\nprior = \"exact\"\n", [&](ConfigTable root) { read_likelihood_setup(root.table("likelihood"), 2, &without.model); })
                .find("prior"),
            std::string::npos);
  EXPECT_NE(error("[data]\nsource = \"mixture\"\n",
                  [&](ConfigTable root) { read_likelihood_data(root.table("data"), *without.process, nullptr, 2); })
                .find("ground_truth"),
            std::string::npos);
}

// Runs the `diffode` binary (which opens the network backend beside it).
int run_binary(const std::filesystem::path& dir, const std::filesystem::path& config_path, std::string& err) {
  const std::string command = fmt::format("cd '{}' && '{}' likelihood '{}' --threads 2 > out.txt 2> err.txt", dir.string(), DIFFODE_BINARY,
                                          config_path.string());
  const int raw = std::system(command.c_str());
  std::ifstream in(dir / "err.txt");
  std::ostringstream text;
  text << in.rdbuf();
  err = text.str();
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
}

TEST_F(NetworkLikelihoodTest, TheBinaryWritesTheNetworksLikelihoodBesideItsGroundTruths) {
  const std::string text = fmt::format(
      "[process]\nname = \"edm\"\n[model]\n{}[model.ground_truth]\n{}[data]\npoints = 12\nseed = 2\n"
      "[likelihood]\nblock_rows = 5\nrtol = 1e-7\natol = 1e-7\nprior = \"exact\"\n[output]\nfile = \"{}\"\n",
      gauss_x0(), kGaussian, (dir_ / "lik.h5").string());
  std::string err;
  ASSERT_EQ(run_binary(dir_, write_config("run.toml", text), err), 0) << err;
  const Hdf5File out(dir_ / "lik.h5", Hdf5File::Mode::read);
  EXPECT_LT(out.read_double_attribute("/summary", "ll_error"), 1e-6);
  EXPECT_GT(out.read_double_attribute("/summary", "nfe_mean"), 10);
  // Without a ground truth: source = "mixture" has nothing to draw from (exit 2, nothing written).
  const std::string bare = fmt::format("[process]\nname = \"edm\"\n[model]\n{}[data]\npoints = 4\n[likelihood]\n[output]\nfile = \"{}\"\n", gauss_x0(),
                                       (dir_ / "bare.h5").string());
  EXPECT_EQ(run_binary(dir_, write_config("bare.toml", bare), err), 2);
  EXPECT_NE(err.find("source"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bare.h5"));
}

TEST_F(NetworkLikelihoodTest, CudaDivergenceEqualsTheCpus) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Loaded cpu = load(gaussian_cases()[0]);
  const Loaded cuda = load({"edm", gauss_x0("device = \"cuda\"\n")});
  const Index n = 9;
  const Batch x = random_batch(n, 2, 13);
  PerSample alpha, sigma;
  levels(*cpu.process, n, alpha, sigma);
  Batch s_cpu, s_cuda;
  PerSample d_cpu, d_cuda;
  cpu.model.network->make_score_jacobian(-1)->score_and_divergence(x, alpha, sigma, s_cpu, d_cpu);
  cuda.model.network->make_score_jacobian(-1)->score_and_divergence(x, alpha, sigma, s_cuda, d_cuda);
  for (Index i = 0; i < n; ++i) EXPECT_NEAR(d_cuda[i], d_cpu[i], 1e-10 * std::abs(d_cpu[i]));
}

}  // namespace
}  // namespace diffode
