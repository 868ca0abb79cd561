#include "experiments/run/reference.hpp"

#include "experiments/run/parallel.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/diffusion/probability_flow.hpp"
#include "solvers/ode/dopri5.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace diffode {

Batch pf_ode_reference(const SamplingSetup& setup, const Batch& x_T_scaled, double sigma_start, double sigma_end, double rtol, int threads,
                       bool ground_truth) {
  if (ground_truth && !setup.mixture) throw std::invalid_argument("pf_ode_reference: the model has no ground-truth mixture");
  const bool network = setup.network && !ground_truth;
  const bool to_zero = sigma_end == 0.0;
  // A network is defined on its process's range only: its solve stops at sigma~(t_min) and denoises
  // there, where a run's final step does.
  const double floor = network ? setup.process->scaled_sigma(setup.process->t_min()) : 1e-7;
  const double sigma_to = to_zero ? floor : sigma_end;
  Batch reference = x_T_scaled;
  const Edm scale_free(std::min(sigma_to, 1e-3), std::max(sigma_start, 1.0));
  const auto blocks = make_blocks(reference.rows(), setup.run.block_rows);
  for_each_block(blocks, threads, [&](const BlockRange& b) {
    const std::unique_ptr<Predictor<Batch>> predictor =
        ground_truth ? std::unique_ptr<Predictor<Batch>>(std::make_unique<MixturePredictor>(*setup.mixture)) : setup.make_predictor();
    const ScaledDenoiser<Batch> denoiser(scale_free, *predictor);
    const LogSigmaProbabilityFlow<Batch, ScaledDenoiser<Batch>> flow(denoiser);
    Batch block = reference.middleRows(b.begin, b.rows());
    Dopri5<Batch> stepper;
    const AdaptiveStats stats =
        integrate_adaptive(stepper, flow, std::log(sigma_start), std::log(sigma_to), block, {.rtol = rtol, .atol = rtol});
    if (stats.failed) throw std::runtime_error("the PF-ODE reference solve failed: " + stats.failure);
    if (to_zero) {
      Batch denoised;
      denoiser(block, sigma_to, denoised);
      block = denoised;
    }
    reference.middleRows(b.begin, b.rows()) = block;
  });
  return reference;
}

Batch pf_ode_reference(const SamplingSetup& setup, const SamplingOutcome& run, double sigma_start, double rtol, int threads, bool ground_truth) {
  return pf_ode_reference(setup, run.initial / alpha_at_scaled_sigma(*setup.process, sigma_start), sigma_start, run.sigma_end, rtol, threads,
                          ground_truth) *
         run.alpha_end;
}

double mean_distance(const Batch& a, const Batch& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.rows() == 0) throw std::invalid_argument("mean_distance: batches differ in shape or are empty");
  return (a - b).square().rowwise().sum().sqrt().mean();
}

double median_distance(const Batch& a, const Batch& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.rows() == 0) throw std::invalid_argument("median_distance: batches differ in shape or are empty");
  Eigen::ArrayXd distance = (a - b).square().rowwise().sum().sqrt();
  if (distance.isNaN().any()) return std::nan("");  // a diverged sample has no place in an order
  std::sort(distance.begin(), distance.end());
  const Index n = distance.size();
  return n % 2 ? distance[n / 2] : 0.5 * (distance[n / 2 - 1] + distance[n / 2]);
}

}  // namespace diffode
