// The standard exact-mixture sampling problems of the sampler tests: a 2-D ring (K = 8) and a 16-D
// random isotropic mixture (K = 10), each under EDM and VP, with the initial noise drawn from the
// prior and a high-accuracy probability-flow reference from the same noise.
#pragma once

#include "models/gaussian_mixture.hpp"
#include "problems/process.hpp"
#include "problems/time_grid.hpp"
#include "solvers/diffusion/denoiser.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace diffode::testing {

struct DiffusionCase {
  std::string name;
  std::unique_ptr<Process> process;
  std::unique_ptr<MixturePredictor> predictor;
  std::unique_ptr<ScaledDenoiser<Batch>> denoiser;
  double sigma_max = 0, sigma_min = 0;  // scale-free sigma~ at T and t_min

  // x~_T = x_T / alpha(T) for x_T ~ N(0, (alpha^2 + sigma^2) I) at T ~ sigma_max N(0, I) in the scaled
  // variables: the usual prior draw, from a fixed seed (rows = samples first_sample...).
  Batch initial_noise(Index samples, std::uint64_t seed = 7) const {
    const auto& mixture = predictor->mixture();
    // A sample of p_T itself (coupled to p_0 draws), scaled: x~_T = x0 + sigma_max eps.
    return mixture.sample_marginal(1.0, sigma_max, samples, seed);
  }
};

// "ring2d" or "mix16" under "edm" or "vp".
inline DiffusionCase make_case(const std::string& mixture, const std::string& process) {
  DiffusionCase c;
  c.name = mixture + "/" + process;
  c.process = make_process(process);
  c.predictor = std::make_unique<MixturePredictor>(mixture == "ring2d" ? GaussianMixture::ring()
                                                                       : GaussianMixture::random_isotropic(16, 10, 3));
  c.denoiser = std::make_unique<ScaledDenoiser<Batch>>(*c.process, *c.predictor);
  c.sigma_max = c.process->scaled_sigma(c.process->t_max());
  c.sigma_min = c.process->scaled_sigma(c.process->t_min());
  return c;
}

// The probability-flow solution from sigma_from to sigma_to (> 0) by classical RK4 in
// s = log sigma, where dx/ds = x - D(x; e^s) is smooth: `steps` steps give an error ~ steps^-4.
inline Batch pf_ode_reference(const DiffusionCase& c, Batch x, double sigma_from, double sigma_to, int steps = 2048) {
  const double s0 = std::log(sigma_from), s1 = std::log(sigma_to), h = (s1 - s0) / steps;
  Batch d1, d2, d3, d4, stage;
  auto slope = [&](const Batch& y, double s, Batch& out) {
    (*c.denoiser)(y, std::exp(s), out);
    out = y - out;
  };
  for (int i = 0; i < steps; ++i) {
    const double s = s0 + i * h;
    slope(x, s, d1);
    stage = x + 0.5 * h * d1;
    slope(stage, s + 0.5 * h, d2);
    stage = x + 0.5 * h * d2;
    slope(stage, s + 0.5 * h, d3);
    stage = x + h * d3;
    slope(stage, s + h, d4);
    x += h / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4);
  }
  return x;
}

// Sigmas uniform in log sigma (= uniform in lambda) from sigma_max to sigma_min, n steps, no final 0.
inline std::vector<double> log_uniform_sigmas(double sigma_max, double sigma_min, int n) {
  std::vector<double> s(n + 1);
  for (int i = 0; i <= n; ++i) s[i] = std::exp(std::log(sigma_max) + (std::log(sigma_min) - std::log(sigma_max)) * i / n);
  s[0] = sigma_max;
  s[n] = sigma_min;
  return s;
}

// Root-mean-square over samples of the per-sample Euclidean error.
inline double rms_error(const Batch& x, const Batch& reference) {
  return std::sqrt((x - reference).square().rowwise().sum().mean());
}

}  // namespace diffode::testing
