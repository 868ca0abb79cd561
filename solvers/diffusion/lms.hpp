// Linear multistep sampler: k-diffusion's sample_lms (Crowson, k-diffusion), the variable-step
// Adams-Bashforth method of order k in sigma (Hairer, Norsett & Wanner, Solving ODEs I, Sec. III.5)
// on the PF-ODE dx/dsigma = d(x; sigma) = (x - D(x; sigma)) / sigma (Karras et al. 2022,
// arXiv:2206.00364, eq. 3). Step i interpolates the last k slopes d_i, d_{i-1}, ..., d_{i-k+1}
// at their sigmas by a polynomial and integrates it over [sigma_i, sigma_{i+1}]:
//   x_{i+1} = x_i + sum_j w_ij d_{i-j},  w_ij = int_{sigma_i}^{sigma_{i+1}} l_j(s) ds,
// with l_j the Lagrange basis polynomials on those sigmas, integrated exactly (lagrange.hpp;
// k-diffusion uses scipy quad at epsrel 1e-4, which on these polynomials agrees to rounding). One
// evaluation per step, none at sigma_{i+1}, so a final sigma = 0 needs no special case.
//
// Starting values (Hairer, Norsett & Wanner I, Sec. III.1): k-diffusion takes the first k - 1 steps
// with the slopes there are (orders 1, 2, ..., k - 1; LmsStartup::lower_order, the default). Their
// local errors O(h^2), O(h^3), ... are committed once each, so the global error is O(h^k) +
// O(h^2): for k >= 3 it falls at order k only while the first term dominates. On the PF-ODE the
// O(h^2) term is small (at sigma_max the flow is nearly linear in sigma), but it wins eventually:
// on the 16-D mixture under EDM, LMS-4's error falls at pairwise rates 3.7, 3.8, 3.5, 3.0, 2.4,
// 2.1 from 256 to 8192 log-uniform steps. LmsStartup::rk4 takes those k - 1 steps by classical
// Runge-Kutta instead (local error O(h^5), four evaluations each), which makes the method order k
// for every k <= 4.
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/lagrange.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace diffode {

enum class LmsStartup {
  lower_order,  // steps 1..k-1 at orders 1..k-1 (k-diffusion's sample_lms)
  rk4,          // steps 1..k-1 by classical RK4 (except a step to sigma = 0, which is lower order)
};

struct LmsOptions {
  int order = 4;  // k: the number of past slopes interpolated (k-diffusion's default 4)
  LmsStartup startup = LmsStartup::lower_order;
};

// (`noise` is a non-deduced parameter, so a plain nullptr can precede an observer.)
template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_lms(const Model& model, State& x, std::span<const double> sigmas, const LmsOptions& options = {},
                            [[maybe_unused]] const std::type_identity_t<SigmaNoise<State>>* noise = nullptr, Observer&& observer = {}) {
  // `noise` is unused (the method is deterministic); it keeps the signature every sampler shares.
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  if (options.order < 1) throw std::invalid_argument(fmt::format("sample_lms: order must be >= 1 (got {})", options.order));
  const auto order = static_cast<std::size_t>(options.order);
  SamplerRun run(model, observer);
  State denoised, stage, k2, k3, k4;
  std::vector<State> ds(order);  // ring buffer of slopes: d_i in ds[i % order]
  std::vector<double> nodes;
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1], h = sigma_next - sigma;
    run.denoise(x, sigma, denoised);
    karras_derivative(x, sigma, denoised, ds[i % order]);
    const State& k1 = ds[i % order];
    if (options.startup == LmsStartup::rk4 && i + 1 < order && sigma_next > 0.0) {
      // Classical RK4 whose first stage is the slope the history keeps.
      const auto slope = [&](const State& at, double s, State& out) {
        run.denoise(at, s, denoised);
        karras_derivative(at, s, denoised, out);
      };
      Ops::update(stage, x, 0.5 * h, {{1.0, k1}});
      slope(stage, sigma + 0.5 * h, k2);
      Ops::update(stage, x, 0.5 * h, {{1.0, k2}});
      slope(stage, sigma + 0.5 * h, k3);
      Ops::update(stage, x, h, {{1.0, k3}});
      slope(stage, sigma_next, k4);
      Ops::update(x, x, h, {{1.0 / 6.0, k1}, {1.0 / 3.0, k2}, {1.0 / 3.0, k3}, {1.0 / 6.0, k4}});
      if (!run.finish_step(i, sigma_next, h, x)) break;
      continue;
    }
    const std::size_t k = std::min(i + 1, order);
    nodes.assign(sigmas.begin() + static_cast<std::ptrdiff_t>(i + 1 - k), sigmas.begin() + static_cast<std::ptrdiff_t>(i + 1));
    std::reverse(nodes.begin(), nodes.end());  // nodes[j] = sigma_{i-j}
    const auto weights = lagrange_integral_weights(nodes, sigma, sigma_next);
    for (std::size_t j = 0; j < k; ++j) Ops::update(x, x, weights[j], {{1.0, ds[(i - j) % order]}});
    if (!run.finish_step(i, sigma_next, h, x)) break;
  }
  return run.stats;
}

}  // namespace diffode
