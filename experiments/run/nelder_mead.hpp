// A seeded, derivative-free minimiser: the Nelder-Mead simplex method (Nelder & Mead 1965, "A simplex
// method for function minimization", Comput. J. 7(4):308-313) with the dimension-dependent
// coefficients of Gao & Han 2012 ("Implementing the Nelder-Mead simplex algorithm with adaptive
// parameters", Comput. Optim. Appl. 51:259-277): reflection 1, expansion 1 + 2/n, contraction
// 3/4 - 1/(2n), shrink 1 - 1/n, which keep the simplex from collapsing in more than a few dimensions.
//
// Why this method for time grids: the objective (a sampler's error on fixed noises) is cheap, has no
// derivative the toolkit could give, and is piecewise smooth (a sample that switches mode makes a
// small jump); the unknowns are few (one per grid point). A plain simplex on an unconstrained
// parametrisation handles that well; CMA-ES would need more evaluations for the same few dimensions.
//
// Restarts: a simplex that has converged (the spread of its values and its size below `tolerance`)
// is rebuilt around the best point, with steps halved each time and random signs drawn from `seed`,
// until the evaluation budget is spent. Restarting is what the method needs to leave a point where
// the simplex has merely collapsed; the seed makes every run reproducible. The result is never worse
// than the starting point, which is the first evaluation.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace diffode {

struct NelderMeadOptions {
  int max_evaluations = 1000;  // the budget, the first evaluation (the start) included
  double initial_step = 0.5;   // the first simplex: start + initial_step along each axis
  double tolerance = 1e-8;     // a simplex has converged when its values' spread is below
                               // tolerance * (|best| + tolerance) and its size below tolerance
  std::uint64_t seed = 0;      // the restarts' signs
  int max_restarts = 1000;
};

struct NelderMeadResult {
  std::vector<double> x;  // the best point evaluated
  double value = 0;       // f(x)
  double start_value = 0;  // f(start)
  int evaluations = 0;
  int restarts = 0;
  // The best value after each improvement: (evaluation number, value), the start first.
  std::vector<std::pair<int, double>> history;
};

// Minimises f from `start`. A NaN value counts as +inf (a point where the objective is undefined is
// never chosen). Throws std::invalid_argument for a budget below 1 or a non-positive step.
NelderMeadResult nelder_mead(const std::function<double(const std::vector<double>&)>& f, const std::vector<double>& start,
                             const NelderMeadOptions& options);

}  // namespace diffode
