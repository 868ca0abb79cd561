// Time grids: shape (strictly decreasing, exact ends, n steps, the final-step policy), values equal
// to k-diffusion's get_sigmas_* and diffusers' DDIMScheduler timesteps, and the file round trip.
#include "problems/time_grid.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <unistd.h>
#include <vector>

namespace diffode {
namespace {

using GridFn = std::function<TimeGrid(const Process&, int, FinalStep)>;

struct NamedGrid {
  std::string name;
  GridFn make;
};

std::vector<NamedGrid> all_grids() {
  return {
      {"uniform_t", [](const Process& p, int n, FinalStep f) { return uniform_t_grid(p, n, f); }},
      {"uniform_lambda", [](const Process& p, int n, FinalStep f) { return uniform_lambda_grid(p, n, f); }},
      {"quadratic", [](const Process& p, int n, FinalStep f) { return quadratic_grid(p, n, f); }},
      {"karras", [](const Process& p, int n, FinalStep f) { return karras_grid(p, n, f); }},
      {"exponential", [](const Process& p, int n, FinalStep f) { return exponential_grid(p, n, f); }},
      {"polyexponential", [](const Process& p, int n, FinalStep f) { return polyexponential_grid(p, n, f, 2.0); }},
  };
}

// The flow's default T = 1 has infinite lambda; grids in lambda or sigma need T < 1.
std::unique_ptr<Process> grid_process(const std::string& name) {
  ProcessParams params;
  if (name == "flow") params.t_max = 0.999;
  return make_process(name, params);
}

TEST(TimeGrid, EveryScheduleIsStrictlyDecreasingWithExactEndsAndNSteps) {
  for (const char* process_name : {"vp", "vp_cosine", "subvp", "ve", "edm", "flow"}) {
    const auto p = grid_process(process_name);
    for (const auto& grid : all_grids()) {
      for (FinalStep final_step : {FinalStep::to_zero, FinalStep::to_t_min, FinalStep::denoise}) {
        for (int n : {1, 2, 7, 50}) {
          const std::string what = std::string(process_name) + " " + grid.name + " n = " + std::to_string(n) +
                                   " final " + std::to_string(static_cast<int>(final_step));
          const TimeGrid g = grid.make(*p, n, final_step);
          ASSERT_EQ(g.steps(), static_cast<std::size_t>(n)) << what;
          ASSERT_EQ(g.sigma.size(), g.t.size()) << what;
          EXPECT_EQ(g.final_step, final_step) << what;
          EXPECT_EQ(g.t.front(), p->t_max()) << what;
          for (std::size_t i = 1; i < g.t.size(); ++i) {
            EXPECT_LT(g.t[i], g.t[i - 1]) << what << " i = " << i;
            EXPECT_LT(g.sigma[i], g.sigma[i - 1]) << what << " i = " << i;
          }
          const std::size_t last_schedule_point = final_step == FinalStep::to_zero ? g.t.size() - 2 : g.t.size() - 1;
          for (std::size_t i = 0; i <= last_schedule_point; ++i)
            EXPECT_NEAR(g.sigma[i], p->scaled_sigma(g.t[i]), 1e-12 * g.sigma[i]) << what << " i = " << i;
          if (final_step == FinalStep::to_zero) {
            EXPECT_EQ(g.t.back(), 0.0) << what;
            EXPECT_EQ(g.sigma.back(), 0.0) << what;
            if (n > 1) {
              EXPECT_EQ(g.t[g.t.size() - 2], p->t_min()) << what;
            }
          } else {
            EXPECT_EQ(g.t.back(), p->t_min()) << what;
          }
        }
      }
    }
  }
}

// k-diffusion's get_sigmas_*(5, sigma_min = 0.002, sigma_max = 80) on EDM (sigma = t), values
// computed in Python from the formulas in k_diffusion/sampling.py:
//   karras:  (80^(1/7) + i/4 (0.002^(1/7) - 80^(1/7)))^7
//   exponential: exp(log 80 + i/4 (log 0.002 - log 80))
//   polyexponential, rho = 2: exp((1 - i/4)^2 (log 80 - log 0.002) + log 0.002)
// each followed by append_zero.
void expect_sigmas(const TimeGrid& g, const std::vector<double>& expected, const std::string& what) {
  ASSERT_EQ(g.sigma.size(), expected.size()) << what;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(g.sigma[i], expected[i], 1e-14 * expected[i]) << what << " i = " << i;
    EXPECT_NEAR(g.t[i], expected[i], 1e-14 * expected[i]) << what << " t, i = " << i;  // EDM: t = sigma
  }
}

TEST(TimeGrid, SigmaSchedulesEqualKDiffusion) {
  const auto edm = make_process("edm");
  expect_sigmas(karras_grid(*edm, 5, FinalStep::to_zero),
                {80.0, 17.52783196464411, 2.515218976147159, 0.16975275626876413, 0.002, 0.0}, "karras");
  expect_sigmas(exponential_grid(*edm, 5, FinalStep::to_zero),
                {80.0, 5.656854249492379, 0.4, 0.02828427124746192, 0.002, 0.0}, "exponential");
  expect_sigmas(polyexponential_grid(*edm, 5, FinalStep::to_zero, 2.0),
                {80.0, 0.7756909789947428, 0.028284271247461905, 0.0038784548949737153, 0.002, 0.0}, "polyexponential");
  // rho = 1 is the exponential schedule.
  const auto a = polyexponential_grid(*edm, 9, FinalStep::to_zero), b = exponential_grid(*edm, 9, FinalStep::to_zero);
  for (std::size_t i = 0; i < a.sigma.size(); ++i) EXPECT_NEAR(a.sigma[i], b.sigma[i], 1e-13 * b.sigma[i]);
  // A sigma range other than the process's, as k-diffusion's callers pass one.
  const auto narrow = karras_grid(*edm, 3, FinalStep::to_zero, 7.0, SigmaRange{0.1, 10.0});
  EXPECT_EQ(narrow.sigma.front(), 10.0);
  EXPECT_EQ(narrow.sigma[2], 0.1);
}

TEST(TimeGrid, KarrasOnVpMapsScaledSigmaToTime) {
  // On VP, the grid's sigma is sigma/alpha (k-diffusion's VP sigma); its time must reproduce it.
  const auto vp = make_process("vp");
  const auto g = karras_grid(*vp, 10, FinalStep::to_t_min);
  for (std::size_t i = 0; i < g.t.size(); ++i) {
    EXPECT_NEAR(vp->sigma(g.t[i]) / vp->alpha(g.t[i]), g.sigma[i], 1e-12 * g.sigma[i]);
    EXPECT_NEAR(std::exp(-vp->lambda(g.t[i])), g.sigma[i], 1e-12 * g.sigma[i]);
  }
}

TEST(TimeGrid, UniformLambdaIsEquallySpacedInLambda) {
  const auto p = make_process("vp_cosine");
  const auto g = uniform_lambda_grid(*p, 8, FinalStep::to_t_min);
  const double step = (p->lambda(p->t_min()) - p->lambda(p->t_max())) / 8;
  for (std::size_t i = 1; i < g.t.size(); ++i) EXPECT_NEAR(p->lambda(g.t[i]) - p->lambda(g.t[i - 1]), step, 1e-10);
}

TEST(TimeGrid, QuadraticIsEquallySpacedInSquareRootOfTime) {
  const auto p = make_process("vp");
  const auto g = quadratic_grid(*p, 4, FinalStep::to_t_min);
  const double step = (std::sqrt(p->t_min()) - 1.0) / 4;
  for (std::size_t i = 0; i < g.t.size(); ++i) EXPECT_NEAR(std::sqrt(g.t[i]), 1.0 + i * step, 1e-15);
}

TEST(TimeGrid, DdpmSpacingsEqualDiffusers) {
  // diffusers DDIMScheduler.set_timesteps(10) with num_train_timesteps = 1000 (scheduling_ddim.py).
  EXPECT_EQ(ddpm_timesteps(10, DdpmSpacing::leading), (std::vector<long>{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}));
  EXPECT_EQ(ddpm_timesteps(10, DdpmSpacing::trailing), (std::vector<long>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  EXPECT_EQ(ddpm_timesteps(10, DdpmSpacing::linspace), (std::vector<long>{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}));
  // steps_offset = 1 (Stable Diffusion's config) shifts 'leading'.
  EXPECT_EQ(ddpm_timesteps(4, DdpmSpacing::leading, 1000, 1), (std::vector<long>{751, 501, 251, 1}));
  // Rounding half to even, as numpy: linspace(0, 999, 3) = 0, 499.5, 999 -> 500;
  // trailing 3: round(1000, 666.67, 333.33) - 1.
  EXPECT_EQ(ddpm_timesteps(3, DdpmSpacing::linspace), (std::vector<long>{999, 500, 0}));
  EXPECT_EQ(ddpm_timesteps(3, DdpmSpacing::trailing), (std::vector<long>{999, 666, 332}));
  EXPECT_THROW(ddpm_timesteps(1001, DdpmSpacing::leading), std::invalid_argument);
}

TEST(TimeGrid, DdpmGridMapsTimestepsToContinuousTime) {
  const auto vp = make_process("vp");
  // Trailing ends at timestep 99 (t = 0.1); to_t_min appends t_min = 0.001.
  const auto trailing = ddpm_grid(*vp, 10, DdpmSpacing::trailing, FinalStep::to_t_min);
  ASSERT_EQ(trailing.t.size(), 11u);
  EXPECT_EQ(trailing.t.front(), 1.0);
  EXPECT_DOUBLE_EQ(trailing.t[9], 0.1);
  EXPECT_EQ(trailing.t.back(), 0.001);
  // Leading already ends at timestep 0 = t_min: no zero-length step is added.
  const auto leading = ddpm_grid(*vp, 10, DdpmSpacing::leading, FinalStep::to_t_min);
  ASSERT_EQ(leading.t.size(), 10u);
  EXPECT_DOUBLE_EQ(leading.t.front(), 0.901);
  EXPECT_EQ(leading.t.back(), vp->t_min());
  // to_zero: the n timesteps, then sigma = 0 (diffusers' set_alpha_to_one).
  const auto to_zero = ddpm_grid(*vp, 10, DdpmSpacing::linspace, FinalStep::to_zero);
  ASSERT_EQ(to_zero.t.size(), 11u);
  EXPECT_DOUBLE_EQ(to_zero.t[1], 0.889);
  EXPECT_EQ(to_zero.sigma.back(), 0.0);
  // The cosine process ends at T = 0.9946 < 1: timestep 999 (t = 1) is outside it.
  EXPECT_THROW(ddpm_grid(*make_process("vp_cosine"), 10, DdpmSpacing::trailing, FinalStep::to_t_min), std::domain_error);
}

TEST(TimeGrid, GridsNeedingFiniteLambdaRefuseTheFlowAtOne) {
  const auto flow = make_process("flow");  // T = 1: lambda(T) = -inf
  EXPECT_THROW(uniform_lambda_grid(*flow, 10, FinalStep::to_t_min), std::domain_error);
  EXPECT_THROW(karras_grid(*flow, 10, FinalStep::to_zero), std::domain_error);
  EXPECT_NO_THROW(uniform_t_grid(*flow, 10, FinalStep::to_t_min));
  EXPECT_THROW(uniform_t_grid(*flow, 0, FinalStep::to_t_min), std::invalid_argument);
}

class TempFile {
 public:
  explicit TempFile(const std::string& stem)
      : path_(std::filesystem::temp_directory_path() / (stem + "_" + std::to_string(::getpid()) + ".txt")) {}
  ~TempFile() { std::filesystem::remove(path_); }
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& text) const { std::ofstream(path_) << text; }

 private:
  std::filesystem::path path_;
};

TEST(TimeGrid, FileRoundTripIsExact) {
  const auto vp = make_process("vp");
  const TempFile file("diffode_grid_roundtrip");
  for (FinalStep final_step : {FinalStep::to_t_min, FinalStep::to_zero}) {
    const auto g = karras_grid(*vp, 12, final_step);
    write_time_grid(file.path(), g);
    const auto back = read_time_grid(file.path(), *vp, final_step);
    EXPECT_EQ(back.t, g.t);  // bitwise: 17 significant digits
    ASSERT_EQ(back.sigma.size(), g.sigma.size());
    for (std::size_t i = 0; i < g.sigma.size(); ++i) EXPECT_NEAR(back.sigma[i], g.sigma[i], 1e-12 * g.sigma[i]);
  }
}

TEST(TimeGrid, FileAcceptsCommentsAndIncreasingLists) {
  const auto edm = make_process("edm");
  const TempFile file("diffode_grid_increasing");
  file.write("# sigmas for EDM\n0.002\n\n1.5\n80\n");
  const auto g = read_time_grid(file.path(), *edm, FinalStep::to_zero);
  EXPECT_EQ(g.t, (std::vector<double>{80.0, 1.5, 0.002, 0.0}));
}

TEST(TimeGrid, FileErrorsNameThePath) {
  const auto vp = make_process("vp");
  const std::filesystem::path missing = "/nonexistent/diffode/grid.txt";
  try {
    read_time_grid(missing, *vp, FinalStep::to_t_min);
    FAIL() << "no exception for a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
  const TempFile file("diffode_grid_bad");
  file.write("1.0\n0.5\n0.7\n0.1\n");
  try {
    read_time_grid(file.path(), *vp, FinalStep::to_t_min);
    FAIL() << "no exception for a non-monotone list";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not monotone"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file.path().string()), std::string::npos) << e.what();
  }
  file.write("1.0\n0.5\n0.5\n");  // a repeated time: a zero-length step
  EXPECT_THROW(read_time_grid(file.path(), *vp, FinalStep::to_t_min), std::invalid_argument);
  file.write("1.0\nhalf\n0.1\n");
  EXPECT_THROW(read_time_grid(file.path(), *vp, FinalStep::to_t_min), std::invalid_argument);
  file.write("1.0\n0.5\n0.0\n");  // t = 0 is outside VP's range unless it is the to_zero point
  EXPECT_THROW(read_time_grid(file.path(), *vp, FinalStep::to_t_min), std::domain_error);
  EXPECT_NO_THROW(read_time_grid(file.path(), *vp, FinalStep::to_zero));
}

}  // namespace
}  // namespace diffode
