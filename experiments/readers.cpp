#include "experiments/readers.hpp"

#include "experiments/hdf5_file.hpp"

#include <fmt/format.h>

namespace diffode {


std::unique_ptr<Process> read_process(ConfigTable t) {
  const std::string name = t.string("name", "edm", {"edm", "vp", "vp_cosine", "subvp", "ve", "flow"});
  ProcessParams p;
  p.beta_min = t.number("beta_min", p.beta_min);
  p.beta_max = t.number("beta_max", p.beta_max);
  p.sigma_min = t.number("sigma_min", p.sigma_min);
  p.sigma_max = t.number("sigma_max", p.sigma_max);
  p.t_min = t.number("t_min", p.t_min);
  p.t_max = t.number("t_max", p.t_max);
  t.finish();
  try {
    return make_process(name, p);
  } catch (const std::exception& e) {
    t.fail("name", e.what());
  }
}

GaussianMixture read_mixture(ConfigTable t) {
  t.string("kind", "mixture", {"mixture"});
  if (t.has("file")) {
    const std::string file = t.string("file");
    t.finish();
    try {
      Hdf5File h5(file, Hdf5File::Mode::read);
      const auto w = h5.read_vector("weights");
      return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), w.size()), h5.read_matrix("means"), h5.read_matrix("variances"));
    } catch (const std::exception& e) {
      t.fail("file", e.what());
    }
  }
  if (t.has("weights")) {
    const auto w = t.numbers("weights");
    const auto means = t.number_rows("means");
    const auto vars = t.number_rows("variances");
    t.finish();
    if (means.size() != w.size() || vars.size() != w.size() || means.empty())
      t.fail("means", "weights, means and variances need one entry per component");
    const Index k = static_cast<Index>(w.size()), d = static_cast<Index>(means[0].size());
    Batch m(k, d), v(k, d);
    for (Index i = 0; i < k; ++i) {
      if (static_cast<Index>(means[i].size()) != d || static_cast<Index>(vars[i].size()) != d)
        t.fail("means", "every mean and variance row needs the same dimension");
      for (Index j = 0; j < d; ++j) m(i, j) = means[i][j], v(i, j) = vars[i][j];
    }
    try {
      return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), k), m, v);
    } catch (const std::exception& e) {
      t.fail("weights", e.what());
    }
  }
  const std::string preset = t.string("preset", "ring2d", {"ring2d", "iso16", "diag64"});
  const auto seed = static_cast<std::uint64_t>(t.integer("seed", 0));
  t.finish();
  if (preset == "ring2d") return GaussianMixture::ring();
  if (preset == "iso16") return GaussianMixture::random_isotropic(16, 10, seed);
  return GaussianMixture::random_diagonal(64, 4, seed);
}

TimeGrid read_grid(ConfigTable t, const Process& process) {
  const std::string schedule = t.string("schedule", "karras", {"karras", "uniform_t", "uniform_lambda", "quadratic", "exponential",
                                                               "polyexponential", "ddpm", "file", "hdf5"});
  const std::string final_name = t.string("final_step", "to_zero", {"to_zero", "to_t_min", "denoise"});
  const FinalStep final_step = final_name == "to_zero" ? FinalStep::to_zero : final_name == "denoise" ? FinalStep::denoise : FinalStep::to_t_min;
  auto steps = [&] {
    const auto n = t.integer("steps");
    if (n < 1 || n > 1000000) t.fail("steps", fmt::format("must lie in 1..1000000, got {}", n));
    return static_cast<int>(n);
  };
  TimeGrid grid;
  try {
    if (schedule == "karras") {
      const int n = steps();
      grid = karras_grid(process, n, final_step, t.number("rho", 7.0));
    } else if (schedule == "polyexponential") {
      const int n = steps();
      grid = polyexponential_grid(process, n, final_step, t.number("rho", 1.0));
    } else if (schedule == "uniform_t") {
      grid = uniform_t_grid(process, steps(), final_step);
    } else if (schedule == "uniform_lambda") {
      grid = uniform_lambda_grid(process, steps(), final_step);
    } else if (schedule == "quadratic") {
      grid = quadratic_grid(process, steps(), final_step);
    } else if (schedule == "exponential") {
      grid = exponential_grid(process, steps(), final_step);
    } else if (schedule == "ddpm") {
      const int n = steps();
      const std::string spacing = t.string("spacing", "leading", {"linspace", "leading", "trailing"});
      grid = ddpm_grid(process, n,
                       spacing == "linspace" ? DdpmSpacing::linspace : spacing == "leading" ? DdpmSpacing::leading : DdpmSpacing::trailing,
                       final_step);
    } else if (schedule == "file") {
      grid = read_time_grid(t.string("file"), process, final_step);
    } else {  // hdf5
      const std::string file = t.string("file"), dataset = t.string("dataset", "t");
      const std::string variable = t.string("variable", "t", {"t", "sigma"});
      Hdf5File h5(file, Hdf5File::Mode::read);
      const auto values = h5.read_vector(dataset);
      if (variable == "t") {
        grid = time_grid_from_list(process, values, final_step, file + ":" + dataset);
      } else {
        // A scale-free sigma list: used as given, so another implementation's run replays exactly.
        grid.sigma = values;
        grid.final_step = final_step;
        for (double s : values) grid.t.push_back(s == 0.0 ? 0.0 : process.t_of_scaled_sigma(s));
      }
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    t.fail("schedule", e.what());
  }
  t.finish();
  return grid;
}


}  // namespace diffode
