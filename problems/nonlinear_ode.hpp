// A nonlinear, non-autonomous ODE with a closed-form solution: the logistic equation with a
// periodically modulated rate, one rate r_d per dimension,
//     dx_d/dt = r_d cos(t) x_d (1 - x_d).
// The logit y = log(x / (1 - x)) obeys dy/dt = r cos t, so y(t) = y(t0) + r (sin t - sin t0):
//     x(t) = 1 / (1 + (1/x0 - 1) exp(-r (sin t - sin t0))).
// The time argument matters (a stepper that evaluates f at the wrong stage time loses its order),
// and x0 outside [0, 1] with (1/x0 - 1) exp(-r (sin t - sin t0)) reaching -1 blows up in finite time:
// blow_up_time() gives the first such time, for failure tests.
#pragma once

#include "core/state.hpp"

#include <cmath>
#include <limits>
#include <numbers>

namespace diffode {

class ModulatedLogisticOde {
 public:
  explicit ModulatedLogisticOde(PerSample rates) : rates_(std::move(rates)) {}

  const PerSample& rates() const { return rates_; }

  // Elementwise along each row, in plain loops: a sample's slope depends on its own row only, bit
  // for bit, whatever the batch around it.
  void drift(const Batch& x, const PerSample& t, Batch& out) const {
    out.resize(x.rows(), x.cols());
    for (Index n = 0; n < x.rows(); ++n) {
      const double modulation = std::cos(t[n]);
      for (Index d = 0; d < x.cols(); ++d) {
        const double v = x(n, d);
        out(n, d) = rates_[d] * modulation * v * (1.0 - v);
      }
    }
  }

  Batch exact(const Batch& x0, double t0, double t) const {
    Batch x(x0.rows(), x0.cols());
    for (Index n = 0; n < x0.rows(); ++n)
      for (Index d = 0; d < x0.cols(); ++d)
        x(n, d) = 1.0 / (1.0 + (1.0 / x0(n, d) - 1.0) * std::exp(-rates_[d] * (std::sin(t) - std::sin(t0))));
    return x;
  }

  // The first time after t0 at which a one-dimensional solution from x0 (rate r) blows up, or
  // +infinity: 1 + c exp(-r s) = 0 with c = 1/x0 - 1 and s = sin t - sin t0, i.e. s = log(-c) / r.
  static double blow_up_time(double x0, double r, double t0) {
    const double c = 1.0 / x0 - 1.0;
    if (!(c < 0)) return std::numeric_limits<double>::infinity();
    const double target = std::sin(t0) + std::log(-c) / r;  // the value sin t must reach
    if (std::abs(target) > 1) return std::numeric_limits<double>::infinity();
    // First crossing of sin t = target after t0, scanning the branches of arcsin.
    const double base = std::asin(target);
    double best = std::numeric_limits<double>::infinity();
    for (int k = -2; k <= 4; ++k) {
      for (double candidate : {base + 2 * std::numbers::pi * k, std::numbers::pi - base + 2 * std::numbers::pi * k})
        if (candidate > t0 && candidate < best) best = candidate;
    }
    return best;
  }

 private:
  PerSample rates_;
};

}  // namespace diffode
