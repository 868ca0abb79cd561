// Exact integrals of Lagrange basis polynomials: the weights of linear multistep (Adams-type)
// methods on an arbitrary grid. With nodes t_0..t_{m-1} and basis polynomials
//   l_j(tau) = prod_{k != j} (tau - t_k) / (t_j - t_k),
// the interpolant of values f_j integrates to int_a^b p(tau) dtau = sum_j w_j f_j with
// w_j = int_a^b l_j(tau) dtau (Hairer, Norsett & Wanner, Solving ODEs I, Sec. III.5, variable-step
// Adams methods). l_j has degree m - 1, so it is integrated exactly: its coefficients are expanded
// in the scaled variable v = (tau - a) / (b - a), where nodes near the interval are O(1) and the
// expansion is well conditioned, and the monomials v^q integrate to 1 / (q + 1) over [0, 1].
// (k-diffusion's LMS instead calls scipy's adaptive quad with epsrel 1e-4; on a polynomial that
// agrees with the exact value to rounding.)
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <vector>

namespace diffode {

// w_j = int_a^b l_j(tau) dtau for every node j; nodes must be distinct and finite, a != b allowed
// in either order (b < a for integration downwards in sigma).
inline std::vector<double> lagrange_integral_weights(std::span<const double> nodes, double a, double b) {
  const std::size_t m = nodes.size();
  if (m == 0) throw std::invalid_argument("lagrange_integral_weights: need at least one node");
  const double width = b - a;
  if (!std::isfinite(a) || !std::isfinite(b) || width == 0.0)
    throw std::invalid_argument(fmt::format("lagrange_integral_weights: bad interval [{}, {}]", a, b));
  std::vector<double> v(m);
  for (std::size_t k = 0; k < m; ++k) {
    if (!std::isfinite(nodes[k])) throw std::invalid_argument("lagrange_integral_weights: non-finite node");
    v[k] = (nodes[k] - a) / width;
  }
  std::vector<double> weights(m), poly;
  for (std::size_t j = 0; j < m; ++j) {
    // Expand prod_{k != j} (v - v_k) (coefficients of v^0..v^{m-1}, lowest first) and its value at v_j.
    poly.assign(1, 1.0);
    double denominator = 1.0;
    for (std::size_t k = 0; k < m; ++k) {
      if (k == j) continue;
      if (v[j] == v[k]) throw std::invalid_argument("lagrange_integral_weights: nodes must be distinct");
      poly.push_back(0.0);
      for (std::size_t q = poly.size() - 1; q > 0; --q) poly[q] = poly[q - 1] - v[k] * poly[q];
      poly[0] *= -v[k];
      denominator *= v[j] - v[k];
    }
    double integral = 0.0;  // int_0^1 of the expanded product
    for (std::size_t q = 0; q < poly.size(); ++q) integral += poly[q] / static_cast<double>(q + 1);
    weights[j] = width * integral / denominator;
  }
  return weights;
}

}  // namespace diffode
