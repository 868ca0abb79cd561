// The exact answer a deterministic sampler is measured against: the probability-flow ODE solved
// tightly from the same x_T, shared by the sweep's pathwise errors and by `diffode tune-grid`'s
// objective (one implementation, so a tuned grid's stated error is the error a sweep measures).
#pragma once

#include "experiments/run/sampling.hpp"

namespace diffode {

// The exact PF-ODE solution from the scale-free x~_T at sigma~ = sigma_start, in the scale-free
// variables: at sigma~ = 0 (x(0)) when sigma_end is 0, else at sigma~ = sigma_end. Solved where the
// flow dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ is the same for every process
// (D(x~; sigma~) = E[x0 | x0 + sigma~ eps = x~]) and defined down to 0 even where the process's own
// time stops (VP at t_min): an EDM-parameterised denoiser (alpha = 1) evaluates it at any level.
// Adaptive Dopri5 in log sigma~ (relative steps down to small noise), per-sample control at
// rtol = atol = `rtol`, to sigma~ = 1e-7, then x(0) = D(x; 1e-7): x~ - D = -sigma~^2 score moves x
// by O(1e-14) below that. Blocks of [run] block_rows, so the result does not depend on `threads`.
// The denoiser is the setup's model: the mixture, exact at every level, or a network, the solution
// of whose own PF-ODE the reference then is (the sampler's error, not the network's). A network is
// defined only on its process's range: its solve stops at sigma~(t_min) and, when sigma_end is 0,
// returns D(x~; sigma~(t_min)), as a run's final step does.
// `ground_truth`: solve the flow of the setup's exact mixture instead (the model, or a network's
// [model.ground_truth]), to sigma~ = 0 like any mixture: with the network's own solution it splits a
// run's error into the solver's and the network's (the sweep's model and total errors).
Batch pf_ode_reference(const SamplingSetup& setup, const Batch& x_T_scaled, double sigma_start, double sigma_end, double rtol, int threads,
                       bool ground_truth = false);

// The reference for a finished run, in the process's x at the run's end: x_T rescaled to x~ at the
// grid's first level, solved to the run's end (run.sigma_end), scaled back by run.alpha_end.
Batch pf_ode_reference(const SamplingSetup& setup, const SamplingOutcome& run, double sigma_start, double rtol, int threads,
                       bool ground_truth = false);

// Per-sample Euclidean distances between two batches, summarised: their mean and median. On a
// mixture the RMS (metrics.hpp) is dominated by the few samples a coarse solve sends into another
// mode (a basin switch costs O(1) and its probability shrinks like the pathwise error, so the RMS
// then falls at half the order); the median shows the typical sample, and its slope the solver's
// order; the mean lies between.
double mean_distance(const Batch& a, const Batch& b);
double median_distance(const Batch& a, const Batch& b);

}  // namespace diffode
