// The Ornstein-Uhlenbeck process dX_i = theta (mu - X_i) dt + sigma dW_i (additive noise, one
// Brownian motion per dimension): Gaussian, with closed-form moments and a strong solution that is
// an explicit functional of the path (Kloeden & Platen 1992, Ch. 4, the linear SDE with additive
// noise):
//     X_t = e^{-theta dt} X_t0 + mu (1 - e^{-theta dt}) + sigma int_t0^t e^{-theta (t - s)} dW_s,
// dt = t - t0. The relation is pathwise (X - sigma W solves a random ODE), so it holds for t < t0
// too, with every integral signed: the backward-time tests use it unchanged.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <cmath>

namespace diffode {

class OrnsteinUhlenbeck {
 public:
  OrnsteinUhlenbeck(double theta, double mu, double sigma) : theta_(theta), mu_(mu), sigma_(sigma) {}

  // Ito and Stratonovich coincide for additive noise; the contract check knows that.
  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::additive, .calculus = Calculus::ito, .has_diffusion_derivative = true};
  }

  double theta() const { return theta_; }
  double mu() const { return mu_; }
  double sigma() const { return sigma_; }

  void drift(const Batch& x, const PerSample& /*t*/, Batch& out) const { out = theta_ * (mu_ - x); }
  void diffusion(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    out.setConstant(x.rows(), x.cols(), sigma_);
  }
  void diffusion_derivative(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    out.setZero(x.rows(), x.cols());
  }

  // E[X_t | X_t0 = x0] and Var[X_t | X_t0] (t > t0).
  Batch mean(const Batch& x0, double t0, double t) const {
    const double decay = std::exp(-theta_ * (t - t0));
    return decay * x0 + mu_ * (1.0 - decay);
  }
  double variance(double t0, double t) const {
    return sigma_ * sigma_ / (2.0 * theta_) * (1.0 - std::exp(-2.0 * theta_ * (t - t0)));
  }

  // The strong solution over one short interval [t, t + dt] (either sign of dt) given the
  // interval's increment dW and time integral I = int_t^{t+dt} (W_u - W_t) du:
  //     int e^{-theta (t+dt-s)} dW_s = dW - theta I + O(theta^2 |dt|^{5/2}),
  // because int (t + dt - s) dW_s = I (integration by parts). The O(|dt|^{5/2}) remainders are
  // mean-zero Gaussians independent across intervals, so chaining K intervals over a unit time
  // leaves an error of O(theta^2 sigma |dt|^2): with dt = 2^-10 about 1e-6 sigma theta^2.
  // This is how the tests build the exact strong solution from a Brownian path.
  void transition(Batch& x, double dt, const Batch& dw, const Batch& time_integral) const {
    const double decay = std::exp(-theta_ * dt);
    x = decay * x + mu_ * (1.0 - decay) + sigma_ * (dw - theta_ * time_integral);
  }

 private:
  double theta_, mu_, sigma_;
};

}  // namespace diffode
