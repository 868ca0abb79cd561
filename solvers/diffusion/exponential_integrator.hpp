// The arithmetic of exponential integrators in the half log-SNR lambda, shared by DPM-Solver,
// DPM-Solver++ (and UniPC, DEIS): lambda <-> sigma~ and the phi-functions.
//
// In the scale-free variables of denoiser.hpp, sigma~ = sigma / alpha = exp(-lambda). The
// probability-flow ODE is semi-linear in lambda, and its exact solution from lambda_s to lambda_t
// (Lu et al. 2022, arXiv:2206.00927, eq. 3.4; Lu et al. 2022b, arXiv:2211.01095, eq. 9) leaves only
// integrals of exp(+-(lambda - lambda_s)) times a polynomial in lambda: the phi-functions
//   phi_1(z) = (e^z - 1) / z,  phi_2(z) = (e^z - 1 - z) / z^2,  phi_3(z) = (e^z - 1 - z - z^2/2) / z^3
// (Hochbruck & Ostermann 2010, Acta Numerica 19, eq. 2.10). Their direct formulas cancel
// catastrophically as z -> 0 (phi_3's error grows like eps / z^2), so below |z| = 1 they are
// summed from their Taylor series phi_k(z) = sum_j z^j / (j + k)!.
#pragma once

#include <cmath>
#include <limits>

namespace diffode {

// lambda = -log sigma~ (+inf at sigma~ = 0, the end of a grid that appends zero).
inline double lambda_of_sigma(double sigma) {
  return sigma == 0.0 ? std::numeric_limits<double>::infinity() : -std::log(sigma);
}
inline double sigma_of_lambda(double lambda) { return std::exp(-lambda); }

namespace detail {
// sum_{j>=0} z^j / (j + k)! by Horner's rule; 20 terms reach rounding for |z| <= 1 and k >= 1.
inline double phi_series(int k, double z) {
  constexpr int terms = 20;
  // 1 / (j + k)! for the largest j, then divide up: c_j = c_{j+1} * (j + k + 1).
  double inv_fact = 1.0;
  for (int n = 2; n <= terms - 1 + k; ++n) inv_fact /= n;
  double sum = 0.0;
  for (int j = terms - 1; j >= 0; --j) {
    sum = sum * z + inv_fact;
    inv_fact *= (j + k);
  }
  return sum;
}
}  // namespace detail

inline double phi1(double z) { return std::abs(z) < 1.0 ? detail::phi_series(1, z) : std::expm1(z) / z; }
inline double phi2(double z) { return std::abs(z) < 1.0 ? detail::phi_series(2, z) : (std::expm1(z) - z) / (z * z); }
inline double phi3(double z) {
  return std::abs(z) < 1.0 ? detail::phi_series(3, z) : (std::expm1(z) - z - 0.5 * z * z) / (z * z * z);
}

}  // namespace diffode
