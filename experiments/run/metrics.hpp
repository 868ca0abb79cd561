// Sample-quality metrics of a sampler's run against the exact law of a Gaussian mixture.
//
// Two kinds of numbers are computed per run:
//   - pathwise: the distance of each final sample to a reference solution of the same path
//     (rms_distance, max_distance), whose decay with NFE gives a solver's order (fit_order);
//   - in law: how far the batch of samples is, as a distribution, from the exact marginal of the
//     mixture at the run's final level (alpha, sigma): negative log-likelihood under the exact
//     density, Frechet distance between Gaussians fitted to the moments (the quantity FID is,
//     Heusel et al. 2017, arXiv:1706.08500), energy distance (Szekely & Rizzo 2013, "Energy
//     statistics: a class of statistics based on distances", J. Stat. Plan. Inference 143(8))
//     against exact draws, and the errors of the first two moments (weak errors).
// A metric in law is never exactly zero for finitely many samples, even for a perfect sampler; the
// exact law therefore carries each metric's "floor", what n exact draws score, beside which a
// sampler's number is read: a sampler is indistinguishable from exact when it scores near its floor.
#pragma once

#include "core/state.hpp"
#include "experiments/run/frechet.hpp"
#include "models/gaussian_mixture.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <vector>

namespace diffode {

// Euclidean distance per row, then RMS over rows / max over rows. Throws std::invalid_argument on a
// shape mismatch or an empty batch.
double rms_distance(const Batch& a, const Batch& b);
double max_distance(const Batch& a, const Batch& b);

// Sample moments: the mean of the rows, and their covariance with the unbiased 1/(n-1)
// normalisation (needs n >= 2).
Eigen::VectorXd sample_mean(const Batch& x);
Eigen::MatrixXd sample_covariance(const Batch& x);

// frechet_distance(m1, c1, m2, c2): experiments/run/frechet.hpp.

// Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| by its unbiased U-statistic: the cross term
// averaged over all n_x n_y pairs, the within terms over the distinct pairs i != j. Zero in
// expectation when the laws agree, so a single estimate can be slightly negative. Needs >= 2 rows
// in each and equal columns. O(n_x n_y D) time, O(n D) extra memory.
double energy_distance(const Batch& x, const Batch& y);

// The exact law at the end of a run, built once per (mixture, alpha, sigma, n, seed) and shared by
// many runs. Draws: reference_samples are samples 0 .. n-1 of stream `seed` of
// GaussianMixture::sample_marginal, the floor draw samples n .. 2n-1 of the same stream: distinct
// Philox counters, hence independent. The runs compared against it should not take their own
// samples from that stream.
struct ExactLaw {
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;  // of the marginal at (alpha, sigma)
  double alpha = 0.0, sigma = 0.0;
  Batch reference_samples;  // n exact draws, for the energy distance
  // Floors: what n exact draws (the floor draw) score.
  double nll_exact = 0.0;           // mean -log p of the floor draw: an estimate of the entropy
  double nll_standard_error = 0.0;  // sd of -log p over sqrt(n): the noise of any nll over n samples
  double frechet_floor = 0.0;       // frechet_distance of the floor draw's moments
  double energy_floor = 0.0;        // energy_distance(floor draw, reference_samples)
  double weak_mean_floor = 0.0;     // sqrt(E|mean_hat - mean|^2) = sqrt(tr(C) / n), analytic
  double weak_cov_floor = 0.0;      // sqrt(E||cov_hat - cov||_F^2), analytic (see make_exact_law)
};

ExactLaw make_exact_law(const GaussianMixture& mixture, double alpha, double sigma, Index n, std::uint64_t seed);

// sqrt(E ||C_hat - C||_F^2) for C_hat the 1/(n-1) sample covariance of n exact draws from the
// mixture's marginal at (alpha, sigma), in closed form from the mixture's fourth moments.
double covariance_error_rms(const GaussianMixture& mixture, double alpha, double sigma, Index n);

struct SampleLawMetrics {
  double nll = 0.0;              // mean over samples of -log p_(alpha,sigma)(x) under the exact law
  double frechet = 0.0;          // frechet_distance(sample mean/cov, exact mean/cov)
  double energy = 0.0;           // energy_distance(samples, law.reference_samples)
  double weak_mean_error = 0.0;  // |mean_hat - mean|_2
  double weak_cov_error = 0.0;   // ||cov_hat - cov||_F
};

// `samples` (n x D, n >= 2) against `law`, which must have been made from `mixture`. Non-finite
// samples (a diverged run) give non-finite metrics rather than an exception.
SampleLawMetrics compare_to_exact(const GaussianMixture& mixture, const ExactLaw& law, const Batch& samples);

// Least-squares line log(error) = log_constant + order * log(1/nfe) through the points whose nfe
// and error are both finite and positive: the empirical order in NFE. With fewer than 2 usable
// points, or all usable nfe equal, order and log_constant are NaN; points = the usable count.
// Throws std::invalid_argument when the two vectors differ in length.
struct OrderFit {
  double order;
  double log_constant;
  int points;
};
OrderFit fit_order(const std::vector<double>& nfe, const std::vector<double>& error);

}  // namespace diffode
