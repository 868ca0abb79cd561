// Time grids: the decreasing times a sampler visits, from T down to the end, for a given process.
//
// A grid of n steps has n + 1 points t[0] = T > t[1] > ... > t[n]. Beside each time it carries the
// noise level in the scale-free form samplers in sigma use, sigma(t)/alpha(t) = exp(-lambda(t))
// (Process::scaled_sigma: k-diffusion's and diffusers' sigma for VP models; the process's sigma
// when alpha = 1, as for VE and EDM). Schedules defined in sigma (Karras, exponential,
// polyexponential) are mapped to times through its inverse and keep their sigmas as computed, with
// the two ends set exactly to the range's (k-diffusion's exp(log sigma_max) can be an ulp off).
//
// The last step is explicit (docs/DESIGN.md §4.6: implementations differ here):
//   to_zero   the schedule's n points run from T to t_min and a final point with sigma = 0 is
//             appended, as k-diffusion's append_zero does; its t is the label 0 (for VP, EDM and
//             flow that is where sigma = 0; VE never reaches sigma = 0, so there the label is
//             nominal). Samplers read grid.sigma, not the process, at that point: an Euler step to
//             sigma = 0 returns the denoiser's x0.
//   to_t_min  the schedule's n + 1 points run from T to t_min inclusive; sampling stops there.
//   denoise   the points of to_t_min; the sampler then returns the denoiser's x0 at t_min (one
//             extra evaluation), as score_sde's noise removal does.
#pragma once

#include "problems/process.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode {

enum class FinalStep { to_zero, to_t_min, denoise };

struct TimeGrid {
  std::vector<double> t;      // strictly decreasing, t[0] = T
  std::vector<double> sigma;  // sigma(t)/alpha(t) = exp(-lambda(t)); 0 at a to_zero final point
  FinalStep final_step = FinalStep::to_t_min;

  std::size_t steps() const { return t.size() - 1; }
};

// A sigma range for the sigma-defined schedules; NaN (the default) takes the process's own,
// scaled_sigma(T) and scaled_sigma(t_min).
struct SigmaRange {
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
};

namespace detail {

inline void require_steps(int n) {
  if (n < 1) throw std::invalid_argument(fmt::format("time grid: need at least one step (got {})", n));
}

// How many points the schedule itself provides for n steps under a final-step policy.
inline int schedule_points(int n, FinalStep final_step) { return final_step == FinalStep::to_zero ? n : n + 1; }

// m equally spaced values from a to b inclusive (torch.linspace; m = 1 gives {a}), ends exact.
inline std::vector<double> linspace(double a, double b, int m) {
  std::vector<double> v(m);
  for (int i = 0; i < m; ++i) v[i] = m == 1 ? a : a + (b - a) * i / (m - 1);
  if (m > 1) v[m - 1] = b;
  return v;
}

inline void require_decreasing(const std::vector<double>& t, const std::string& what) {
  for (std::size_t i = 1; i < t.size(); ++i)
    if (!(t[i] < t[i - 1]))
      throw std::invalid_argument(
          fmt::format("{}: times must be strictly decreasing, but t[{}] = {} follows t[{}] = {}", what, i, t[i], i - 1, t[i - 1]));
}

inline TimeGrid append_final(TimeGrid grid, FinalStep final_step, const std::string& what) {
  if (final_step == FinalStep::to_zero) {
    grid.t.push_back(0.0);
    grid.sigma.push_back(0.0);
  }
  grid.final_step = final_step;
  require_decreasing(grid.t, what);
  return grid;
}

// A grid from schedule times; sigma from the process.
inline TimeGrid from_times(const Process& p, std::vector<double> t, FinalStep final_step, const std::string& what) {
  TimeGrid g;
  g.sigma.reserve(t.size() + 1);
  for (double s : t) g.sigma.push_back(p.scaled_sigma(s));
  g.t = std::move(t);
  return append_final(std::move(g), final_step, what);
}

// The sigma range of a sigma-defined schedule; the flags say whether an end is the process's own,
// whose time is then known exactly (no round trip through the inverse).
struct ResolvedRange {
  double lo, hi;
  bool lo_is_t_min, hi_is_t_max;
};

inline ResolvedRange sigma_range(const Process& p, SigmaRange r, const char* what) {
  const ResolvedRange out{std::isnan(r.min) ? p.scaled_sigma(p.t_min()) : r.min,
                          std::isnan(r.max) ? p.scaled_sigma(p.t_max()) : r.max, std::isnan(r.min), std::isnan(r.max)};
  if (!(std::isfinite(out.lo) && std::isfinite(out.hi) && 0 < out.lo && out.lo < out.hi))
    throw std::domain_error(fmt::format(
        "{} grid on {}: needs a finite sigma range 0 < sigma_min < sigma_max (got {}, {}); for a flow take T < 1",
        what, p.name(), out.lo, out.hi));
  return out;
}

// A grid from schedule sigmas running from range.hi towards range.lo (reaching it unless to_zero
// cut the schedule to one point); times through the inverse of scaled_sigma.
inline TimeGrid from_sigmas(const Process& p, std::vector<double> sigma, const ResolvedRange& range,
                            FinalStep final_step, const std::string& what) {
  TimeGrid g;
  sigma.front() = range.hi;
  if (sigma.size() > 1) sigma.back() = range.lo;
  g.t.reserve(sigma.size() + 1);
  for (double s : sigma) g.t.push_back(p.t_of_scaled_sigma(s));
  if (range.hi_is_t_max) g.t.front() = p.t_max();
  if (range.lo_is_t_min && g.t.size() > 1) g.t.back() = p.t_min();
  g.sigma = std::move(sigma);
  return append_final(std::move(g), final_step, what);
}

}  // namespace detail

// Uniform in t from T to t_min (Song et al. 2021, arXiv:2011.13456: the score_sde samplers).
inline TimeGrid uniform_t_grid(const Process& p, int n, FinalStep final_step) {
  detail::require_steps(n);
  return detail::from_times(p, detail::linspace(p.t_max(), p.t_min(), detail::schedule_points(n, final_step)), final_step,
                            "uniform_t grid");
}

// Uniform in lambda (half log-SNR): DPM-Solver's 'logSNR' skip type (Lu et al. 2022,
// arXiv:2206.00927, section 3.3 / appendix), the recommended one for high-order solvers.
inline TimeGrid uniform_lambda_grid(const Process& p, int n, FinalStep final_step) {
  detail::require_steps(n);
  const double l_hi = p.lambda(p.t_min()), l_lo = p.lambda(p.t_max());
  if (!std::isfinite(l_lo) || !std::isfinite(l_hi))
    throw std::domain_error(fmt::format("uniform_lambda grid on {}: lambda is infinite at an end of [{}, {}]", p.name(),
                                        p.t_min(), p.t_max()));
  std::vector<double> t;
  for (double l : detail::linspace(l_lo, l_hi, detail::schedule_points(n, final_step))) t.push_back(p.t_of_lambda(l));
  t.front() = p.t_max();  // the ends exactly, not through a round trip
  if (final_step != FinalStep::to_zero || n > 1) t.back() = p.t_min();
  return detail::from_times(p, std::move(t), final_step, "uniform_lambda grid");
}

// Quadratic in t: t_i = (sqrt(T) + i/m (sqrt(t_min) - sqrt(T)))^2, DDIM's "quad" skip (Song et al.
// 2021, arXiv:2010.02502, appendix D.2: tau_i = c i^2) in the continuous-time form of DPM-Solver's
// 'time_quadratic'; steps are short near the data.
inline TimeGrid quadratic_grid(const Process& p, int n, FinalStep final_step) {
  detail::require_steps(n);
  auto t = detail::linspace(std::sqrt(p.t_max()), std::sqrt(p.t_min()), detail::schedule_points(n, final_step));
  for (double& v : t) v *= v;
  t.front() = p.t_max();
  if (t.size() > 1) t.back() = p.t_min();
  return detail::from_times(p, std::move(t), final_step, "quadratic grid");
}

// Karras et al. 2022 (arXiv:2206.00364) eq. 5, k-diffusion's get_sigmas_karras:
//   sigma_i = (sigma_max^(1/rho) + i/(m-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
inline TimeGrid karras_grid(const Process& p, int n, FinalStep final_step, double rho = 7.0, SigmaRange range = {}) {
  detail::require_steps(n);
  const auto r = detail::sigma_range(p, range, "karras");
  const double lo = r.lo, hi = r.hi;
  const double a = std::pow(hi, 1.0 / rho), b = std::pow(lo, 1.0 / rho);
  std::vector<double> sigma;
  for (double ramp : detail::linspace(0.0, 1.0, detail::schedule_points(n, final_step)))
    sigma.push_back(std::pow(a + ramp * (b - a), rho));
  return detail::from_sigmas(p, std::move(sigma), r, final_step, "karras grid");
}

// Geometric in sigma, k-diffusion's get_sigmas_exponential: exp(linspace(log sigma_max, log sigma_min)).
inline TimeGrid exponential_grid(const Process& p, int n, FinalStep final_step, SigmaRange range = {}) {
  detail::require_steps(n);
  const auto r = detail::sigma_range(p, range, "exponential");
  const double lo = r.lo, hi = r.hi;
  std::vector<double> sigma;
  for (double l : detail::linspace(std::log(hi), std::log(lo), detail::schedule_points(n, final_step)))
    sigma.push_back(std::exp(l));
  return detail::from_sigmas(p, std::move(sigma), r, final_step, "exponential grid");
}

// Polynomial in log sigma, k-diffusion's get_sigmas_polyexponential:
//   sigma_i = exp(r_i^rho (log sigma_max - log sigma_min) + log sigma_min), r = linspace(1, 0);
// rho = 1 is the exponential grid.
inline TimeGrid polyexponential_grid(const Process& p, int n, FinalStep final_step, double rho = 1.0,
                                     SigmaRange range = {}) {
  detail::require_steps(n);
  const auto r = detail::sigma_range(p, range, "polyexponential");
  const double lo = r.lo, hi = r.hi;
  std::vector<double> sigma;
  for (double r : detail::linspace(1.0, 0.0, detail::schedule_points(n, final_step)))
    sigma.push_back(std::exp(std::pow(r, rho) * (std::log(hi) - std::log(lo)) + std::log(lo)));
  return detail::from_sigmas(p, std::move(sigma), r, final_step, "polyexponential grid");
}

// DDPM discrete timesteps (Ho et al. 2020, arXiv:2006.11239) as diffusers' DDIMScheduler.set_timesteps
// selects them (timestep_spacing; Lin et al. 2023, arXiv:2305.08891, table 2), for n inference steps
// out of `train_steps`:
//   linspace  round(linspace(0, train_steps - 1, n)), reversed              1000/10: 999, 888, ..., 0
//   leading   (0, r, 2r, ..., (n-1) r) + steps_offset reversed, r = train_steps / n (integer)
//                                                                          1000/10: 900, 800, ..., 0
//   trailing  round(train_steps - i * train_steps/n) - 1, i = 0..n-1        1000/10: 999, 899, ..., 99
// Rounding is half to even, as numpy's. Trailing takes exactly n values: numpy's arange can yield
// n + 1 (e.g. n = 61, ending in timestep -1) through the rounding of its length; that is not copied.
enum class DdpmSpacing { linspace, leading, trailing };

inline std::vector<long> ddpm_timesteps(int n, DdpmSpacing spacing, int train_steps = 1000, int steps_offset = 0) {
  if (n < 1 || n > train_steps)
    throw std::invalid_argument(fmt::format("ddpm timesteps: need 1 <= n <= {} (got {})", train_steps, n));
  std::vector<long> ts(n);
  for (int i = 0; i < n; ++i) {
    switch (spacing) {
      case DdpmSpacing::linspace:
        ts[i] = std::lrint(n == 1 ? 0.0 : (train_steps - 1.0) * (n - 1 - i) / (n - 1));
        break;
      case DdpmSpacing::leading:
        ts[i] = static_cast<long>(n - 1 - i) * (train_steps / n) + steps_offset;
        break;
      case DdpmSpacing::trailing:
        ts[i] = std::lrint(train_steps - i * (static_cast<double>(train_steps) / n)) - 1;
        break;
    }
  }
  return ts;
}

// The DDPM timesteps as continuous times t = (i + 1) / train_steps, DPM-Solver's mapping of
// discrete DPMs (Lu et al. 2022, NoiseScheduleVP 'discrete'): timestep 999 is t = 1 and timestep 0
// is t = 1/1000, the usual VP t_min; the continuous VP linear process is the limit of DDPM's
// discrete linear betas (Song et al. 2021, arXiv:2011.13456, appendix B), which gives the sigmas.
// Final point: to_zero appends sigma = 0 (diffusers' set_alpha_to_one = true); to_t_min and
// denoise end at t_min, appended unless the last timestep already lies there (no zero-length step).
inline TimeGrid ddpm_grid(const Process& p, int n, DdpmSpacing spacing, FinalStep final_step, int train_steps = 1000,
                          int steps_offset = 0) {
  std::vector<double> t;
  for (long ts : ddpm_timesteps(n, spacing, train_steps, steps_offset))
    t.push_back(static_cast<double>(ts + 1) / train_steps);
  if (final_step != FinalStep::to_zero && std::abs(t.back() - p.t_min()) > 1e-12 * std::max(1.0, p.t_min()))
    t.push_back(p.t_min());
  else if (final_step != FinalStep::to_zero)
    t.back() = p.t_min();
  return detail::from_times(p, std::move(t), final_step, "ddpm grid");
}

// A user's list of times (from a file, an HDF5 dataset, another implementation's run): strictly
// decreasing or strictly increasing (then reversed). All times must lie in the process's range,
// except a final 0 under to_zero, which is taken as the sigma = 0 point; under to_zero without a
// final 0 one is appended. `what` names the list's source in error messages.
inline TimeGrid time_grid_from_list(const Process& p, std::vector<double> t, FinalStep final_step, const std::string& what) {
  if (t.size() < 2) throw std::invalid_argument(fmt::format("{}: needs at least two times", what));
  if (t.front() < t.back()) std::reverse(t.begin(), t.end());
  try {
    detail::require_decreasing(t, "time grid");
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: not monotone: {}", what, e.what()));
  }
  if (final_step == FinalStep::to_zero && t.back() == 0.0) t.pop_back();
  return detail::from_times(p, std::move(t), final_step, what);
}

// A user's list of times from a text file, one number per line (blank lines and lines starting
// with '#' skipped); see time_grid_from_list.
inline TimeGrid read_time_grid(const std::filesystem::path& path, const Process& p, FinalStep final_step) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("time grid file '{}' cannot be opened", path.string()));
  std::vector<double> t;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream fields(line);
    double value;
    std::string rest;
    if (!(fields >> value) || (fields >> rest))
      throw std::invalid_argument(fmt::format("time grid file '{}', line {}: not one number: '{}'", path.string(), number, line));
    t.push_back(value);
  }
  return time_grid_from_list(p, std::move(t), final_step, fmt::format("time grid file '{}'", path.string()));
}

// Writes the grid's times one per line, round-trip exact (17 significant digits).
inline void write_time_grid(const std::filesystem::path& path, const TimeGrid& grid) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error(fmt::format("time grid file '{}' cannot be written", path.string()));
  for (double t : grid.t) out << fmt::format("{:.17g}\n", t);
  if (!out) throw std::runtime_error(fmt::format("time grid file '{}': write failed", path.string()));
}

}  // namespace diffode
