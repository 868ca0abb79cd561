// dx/dt = A x + b(t)-free linear system, solved exactly by the matrix exponential:
// x(t) = exp(A (t - t0)) x(t0). A is D x D and acts on each sample (row) alike.
#pragma once

#include "core/state.hpp"

#include <Eigen/Dense>
#include <unsupported/Eigen/MatrixFunctions>

namespace diffode {

class LinearOde {
 public:
  explicit LinearOde(Eigen::MatrixXd a) : a_(std::move(a)) {}

  // A damped rotation in 2-D, coupled to a slower mode: eigenvalues -0.5 +- 2i and -0.2.
  static LinearOde damped_rotation() {
    Eigen::MatrixXd a(3, 3);
    a << -0.5, 2.0, 0.0,
         -2.0, -0.5, 0.3,
          0.0, 0.0, -0.2;
    return LinearOde(a);
  }

  const Eigen::MatrixXd& matrix() const { return a_; }

  void drift(const Batch& x, const PerSample& /*t*/, Batch& out) const {
    out.resize(x.rows(), x.cols());
    // Rows are samples: (A x)^T = x^T A^T.
    out.matrix().noalias() = x.matrix() * a_.transpose();
  }

  Batch exact(const Batch& x0, double t0, double t) const {
    const Eigen::MatrixXd propagator = (a_ * (t - t0)).exp();
    return (x0.matrix() * propagator.transpose()).array();
  }

 private:
  Eigen::MatrixXd a_;
};

}  // namespace diffode
