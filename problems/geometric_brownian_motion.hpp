// Linear multiplicative-noise SDEs whose strong solutions are known in closed form given W.
//
// GeometricBrownianMotion: dX_i = mu X_i dt + sigma X_i dW_i per dimension (diagonal noise), written
// in Ito form or as the equivalent Stratonovich SDE dX = (mu - sigma^2/2) X dt + sigma X o dW. Both
// describe one process, X_t = X_0 exp((mu - sigma^2/2)(t - t0) + sigma (W_t - W_t0)) (Kloeden &
// Platen 1992, Ch. 4, the explicitly solvable linear SDEs), so an Ito and a Stratonovich stepper are measured against the
// same exact value from the same path.
//
// RotatingGbm: a 2-D linear system driven by ONE Brownian motion per sample (scalar noise),
//     dX = A X dt + B X dW,   A = a I + b J,   B = c I + d J,   J = [[0, -1], [1, 0]].
// A and B commute (both lie in span{I, J}, a copy of the complex numbers), so the Ito solution is
// X_t = exp((A - B^2/2)(t - t0) + B (W_t - W_t0)) X_0 (Kloeden & Platen 1992, Ch. 4: the
// matrix linear SDE with commuting coefficients), and exp(p I + q J) = e^p (cos q I + sin q J). With Stratonovich calculus
// the drift matrix is A itself and the B^2/2 correction disappears.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <cmath>

namespace diffode {

class GeometricBrownianMotion {
 public:
  // mu, sigma: the process's Ito growth rate and volatility; `calculus` only chooses in which form
  // drift() presents it.
  GeometricBrownianMotion(double mu, double sigma, Calculus calculus = Calculus::ito)
      : mu_(mu), sigma_(sigma), calculus_(calculus) {}

  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::diagonal, .calculus = calculus_, .has_diffusion_derivative = true};
  }

  double mu() const { return mu_; }
  double sigma() const { return sigma_; }

  void drift(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    const double rate = calculus_ == Calculus::stratonovich ? mu_ - 0.5 * sigma_ * sigma_ : mu_;
    out = rate * x;
  }
  void diffusion(const Batch& x, const PerSample& /*t*/, Batch& out) const { out = sigma_ * x; }
  // dg_i/dx_i = sigma.
  void diffusion_derivative(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    out.setConstant(x.rows(), x.cols(), sigma_);
  }

  // The strong solution at t given dW = W_t - W_t0 (shaped like x0).
  Batch exact(const Batch& x0, double t0, double t, const Batch& dw) const {
    return x0 * ((mu_ - 0.5 * sigma_ * sigma_) * (t - t0) + sigma_ * dw).exp();
  }

 private:
  double mu_, sigma_;
  Calculus calculus_;
};

class RotatingGbm {
 public:
  // A = a I + b J (drift: growth a, rotation rate b), B = c I + d J (noise: scale c, rotation d).
  RotatingGbm(double a, double b, double c, double d, Calculus calculus = Calculus::ito)
      : a_(a), b_(b), c_(c), d_(d), calculus_(calculus) {}

  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::scalar, .calculus = calculus_, .has_diffusion_derivative = false};
  }

  // The drift matrix in the chosen calculus: A for Ito; A - B^2/2 for Stratonovich, where
  // B^2 = (c^2 - d^2) I + 2 c d J.
  void drift(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    double p = a_, q = b_;
    if (calculus_ == Calculus::stratonovich) {
      p -= 0.5 * (c_ * c_ - d_ * d_);
      q -= c_ * d_;
    }
    apply(p, q, x, out);
  }
  void diffusion(const Batch& x, const PerSample& /*t*/, Batch& out) const { apply(c_, d_, x, out); }

  // The strong solution at t given the scalar increment dW = W_t - W_t0 per sample (N x 1).
  Batch exact(const Batch& x0, double t0, double t, const Batch& dw) const {
    // Exponent (A - B^2/2) dt + B dW = p I + q J.
    const double dt = t - t0;
    Batch out(x0.rows(), 2);
    for (Index n = 0; n < x0.rows(); ++n) {
      const double p = (a_ - 0.5 * (c_ * c_ - d_ * d_)) * dt + c_ * dw(n, 0);
      const double q = (b_ - c_ * d_) * dt + d_ * dw(n, 0);
      const double r = std::exp(p), cs = std::cos(q), sn = std::sin(q);
      out(n, 0) = r * (cs * x0(n, 0) - sn * x0(n, 1));
      out(n, 1) = r * (sn * x0(n, 0) + cs * x0(n, 1));
    }
    return out;
  }

 private:
  // out = (p I + q J) x per row, J (x0, x1) = (-x1, x0).
  static void apply(double p, double q, const Batch& x, Batch& out) {
    out.resize(x.rows(), 2);
    out.col(0) = p * x.col(0) - q * x.col(1);
    out.col(1) = q * x.col(0) + p * x.col(1);
  }

  double a_, b_, c_, d_;
  Calculus calculus_;
};

}  // namespace diffode
