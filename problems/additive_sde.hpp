// A nonlinear, time-dependent SDE with additive noise, for the additive-noise steppers (SRA1):
//     dX_i = (sin(omega t) - X_i + sin(2 X_i) / 2) dt + s_i (1 + cos(3 t) / 2) dW_i.
// The drift is nonlinear in x and explicit in t, and the diffusion depends on t, so every term of
// an order-1.5 expansion (Kloeden & Platen 1992, Sec. 10.4: the I_(1,0) and I_(0,1) terms
// f' g and g') is exercised. df/dx = -1 + cos(2x) lies in [-2, 0]: contractive forward in time and
// at most e^{2|dt|}-expanding backward, so the problem is well posed in both directions.
// There is no closed form; a reference is a fine solve on the same Brownian path (the path is
// consistent across resolutions), as the order tests do.
#pragma once

#include "core/contract.hpp"
#include "core/state.hpp"

#include <cmath>
#include <utility>

namespace diffode {

class AdditiveNonlinearSde {
 public:
  // scales: s_i, one per dimension (the state's width).
  explicit AdditiveNonlinearSde(Eigen::ArrayXd scales, double omega = 2.0) : scales_(std::move(scales)), omega_(omega) {}

  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::additive, .calculus = Calculus::ito, .has_diffusion_derivative = true};
  }

  Index dims() const { return scales_.size(); }

  void drift(const Batch& x, const PerSample& t, Batch& out) const {
    out.resize(x.rows(), x.cols());
    for (Index n = 0; n < x.rows(); ++n) {
      const double forcing = std::sin(omega_ * t[n]);
      out.row(n) = forcing - x.row(n) + 0.5 * (2.0 * x.row(n)).sin();
    }
  }
  void diffusion(const Batch& x, const PerSample& t, Batch& out) const {
    out.resize(x.rows(), x.cols());
    for (Index n = 0; n < x.rows(); ++n) out.row(n) = scales_.transpose() * (1.0 + 0.5 * std::cos(3.0 * t[n]));
  }
  void diffusion_derivative(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    out.setZero(x.rows(), x.cols());
  }

 private:
  Eigen::ArrayXd scales_;
  double omega_;
};

}  // namespace diffode
