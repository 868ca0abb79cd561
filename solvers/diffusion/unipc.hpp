// UniPC: the unified predictor-corrector of Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified
// Predictor-Corrector Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867,
// Algorithm 2 (multistep UniP-p + UniC-p, "B(h)" variants bh1/bh2 of Sec. 3.3 / Appendix), as the
// authors' uni_pc.py implements it (UniPC.sample(method='multistep') with
// multistep_uni_pc_bh_update).
//
// Both predictor and corrector are exponential integrators in lambda = -log sigma~ (data
// prediction; Sec. 3.1): with h = lambda_next - lambda_0 and hh = -h,
//   x~_pred = (sigma_next/sigma_0) x~ - expm1(hh) m_0 - B(h) sum_k rho^p_k D1_k        (UniP-p)
//   x~_corr = (sigma_next/sigma_0) x~ - expm1(hh) m_0 - B(h) (sum_k rho^c_k D1_k + rho^c_p D1_t)  (UniC-p)
// where m_i are past model outputs at lambda_{-i}, r_k = (lambda_{-k} - lambda_0)/h,
// D1_k = (m_{-k} - m_0)/r_k, D1_t = m(x~_pred; sigma_next) - m_0, and the rho solve the order
// conditions R rho = b (Theorem 3.1): R_ij = r_j^(i-1), b_i = (i-1)! h phi_{i+1}(hh)/B(h) (uni_pc.py
// writes h phi_k through the recursion h phi_{k+1} = h phi_k / hh - 1/k!). B(h) = hh (bh1) or
// expm1(hh) (bh2). uni_pc.py's fixed simplifications are kept: rho^p = 0.5 for p = 2, rho^c = 0.5
// for p = 1. The model output at x~_pred serves the corrector AND the next step's history (the
// corrected point is never evaluated), so UniC costs no evaluation: one model call per step.
// UniC-p raises the order of UniP-p by one (Theorem 3.2), so UniPC-p is of order p + 1 — except
// that the warm-up step 1 is UniPC-1 (local error O(h^3)), which bounds the global order at 3.
// Noise prediction (uni_pc.py's algorithm_type="noise_prediction") is the same scheme on eps with
// hh = h: x~_pred = x~ - sigma_next expm1(h) eps_0 - sigma_next B(h) sum ...
//
// Schedule of a run of N steps to sigma_N > 0 (as in uni_pc.py): one evaluation at sigma_0; steps
// 1..order-1 are the warm-up at orders 1..order-1 (always corrected); step s >= order has order
// min(order, N + 1 - s) with lower_order_final, else `order`; the last step has no corrector and
// its end point is not evaluated. NFE = N. A grid ending in 0 is uni_pc.py's denoise_to_zero=True:
// the N positive steps run as above, then x~ = D(x~; sigma_N), one more evaluation (NFE = N + 1).
// (An exponential-integrator step to lambda = inf exists only at first order, where it is exactly
// this denoised value.)
#pragma once

#include "solvers/diffusion/denoiser.hpp"
#include "solvers/diffusion/sampler.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace diffode {

enum class UniPCVariant { bh1, bh2 };              // B(h) = hh, or B(h) = expm1(hh)
enum class UniPCPrediction { data, noise };        // uni_pc.py's algorithm_type

struct UniPCOptions {
  int order = 2;                       // p in 1..3 (uni_pc.py's `order`; sample() default 2)
  UniPCVariant variant = UniPCVariant::bh1;
  UniPCPrediction prediction = UniPCPrediction::data;
  bool lower_order_final = true;       // uni_pc.py's default: the last steps drop to orders ..., 2, 1
  bool corrector = true;               // false: UniP-p alone (diffusers' disable_corrector), order p
};

// The rho coefficients of one step (uni_pc.py's rhos_p, rhos_c, B_h, h_phi_1), from the history's
// r_k = (lambda_{-k} - lambda_0)/h, k = 1..p-1.
struct UniPCCoefficients {
  double h_phi_1 = 0;       // expm1(hh)
  double B_h = 0;           // B(h)
  std::vector<double> rho_p;  // p - 1 predictor weights on D1_1..D1_{p-1}
  std::vector<double> rho_c;  // p corrector weights on D1_1..D1_{p-1}, D1_t
};

inline UniPCCoefficients unipc_coefficients(int p, double hh, const std::vector<double>& r, UniPCVariant variant, bool corrector) {
  UniPCCoefficients c;
  c.h_phi_1 = std::expm1(hh);
  c.B_h = variant == UniPCVariant::bh1 ? hh : std::expm1(hh);
  // b_i = (i-1)! h phi_{i+1}(hh) / B(h), with h phi_{k+1} = h phi_k / hh - 1/k! (uni_pc.py's recursion:
  // the same rounding as the reference).
  Eigen::VectorXd b(p);
  Eigen::MatrixXd R(p, p);
  double h_phi_k = c.h_phi_1 / hh - 1.0, factorial = 1.0;
  for (int i = 1; i <= p; ++i) {
    for (int j = 0; j < p; ++j) R(i - 1, j) = std::pow(j + 1 < p ? r[j] : 1.0, i - 1);
    b[i - 1] = h_phi_k * factorial / c.B_h;
    factorial *= i + 1;
    h_phi_k = h_phi_k / hh - 1.0 / factorial;
  }
  if (p == 2) {
    c.rho_p = {0.5};
  } else if (p > 2) {
    const Eigen::VectorXd rho = R.topLeftCorner(p - 1, p - 1).partialPivLu().solve(b.head(p - 1));
    c.rho_p.assign(rho.data(), rho.data() + p - 1);
  }
  if (corrector) {
    if (p == 1) {
      c.rho_c = {0.5};
    } else {
      const Eigen::VectorXd rho = R.partialPivLu().solve(b);
      c.rho_c.assign(rho.data(), rho.data() + p);
    }
  }
  return c;
}

template <class State, DenoiserFor<State> Model, class Observer = NoObserver>
IntegrationStats sample_unipc(const Model& model, State& x, std::span<const double> sigmas, const UniPCOptions& options = {},
                              const std::type_identity_t<SigmaNoise<State>>* /*noise: deterministic*/ = nullptr, Observer&& observer = {}) {
  using Ops = StateOps<State>;
  check_sigmas(sigmas);
  const int order = options.order;
  if (order < 1 || order > 3) throw std::invalid_argument("sample_unipc: order must be 1, 2 or 3");
  const bool to_zero = sigmas.back() == 0.0;
  const std::size_t steps = sigmas.size() - 1, positive = to_zero ? steps - 1 : steps;
  if (positive < static_cast<std::size_t>(order))
    throw std::invalid_argument("sample_unipc: needs at least `order` steps to a positive sigma (uni_pc.py asserts steps >= order)");
  const bool data = options.prediction == UniPCPrediction::data;
  SamplerRun run(model, observer);

  // The model output in the solver's parameterization: D itself, or eps = (x~ - D)/sigma~.
  State denoised;
  auto model_output = [&](const State& at, double sigma, State& out) {
    run.denoise(at, sigma, denoised);
    if (data) {
      Ops::assign(out, denoised);
    } else {
      karras_derivative(at, sigma, denoised, out);
    }
  };

  // History, oldest first: hist[j] is the output at hist_sigma[j]; the newest is m_0.
  std::vector<State> hist;
  std::vector<double> hist_sigma;
  hist.reserve(order);
  hist.emplace_back();
  model_output(x, sigmas[0], hist.back());
  hist_sigma.push_back(sigmas[0]);

  State base, model_t;
  std::vector<double> r;
  for (std::size_t i = 0; i < positive; ++i) {
    const std::size_t s = i + 1;  // uni_pc.py's 1-based `step`
    const double sigma = sigmas[i], sigma_next = sigmas[i + 1];
    int p = static_cast<int>(s);  // warm-up: orders 1..order-1
    if (s >= static_cast<std::size_t>(order))
      p = options.lower_order_final ? std::min<int>(order, static_cast<int>(positive + 1 - s)) : order;
    const bool last = s == positive;
    const bool correct = options.corrector && !last;

    const std::size_t n = hist.size();
    const State& m0 = hist[n - 1];
    const double h = std::log(sigma / sigma_next);  // lambda_next - lambda_0
    r.assign(static_cast<std::size_t>(p - 1), 0.0);
    for (int k = 1; k < p; ++k) r[k - 1] = std::log(sigma / hist_sigma[n - 1 - k]) / h;
    const double hh = data ? -h : h;
    const UniPCCoefficients c = unipc_coefficients(p, hh, r, options.variant, correct);

    // x~_ = the first-order (DDIM) step; the residual terms then multiply `scale`.
    double scale;
    if (data) {
      Ops::scale(base, sigma_next / sigma, x);
      Ops::update(base, base, -c.h_phi_1, {{1.0, m0}});
      scale = c.B_h;
    } else {
      Ops::update(base, x, -sigma_next * c.h_phi_1, {{1.0, m0}});
      scale = sigma_next * c.B_h;
    }
    // x -= scale * sum_k w_k D1_k, with D1_k = (m_{-k} - m_0)/r_k expanded into the history.
    auto add_residual = [&](State& out, const std::vector<double>& w) {
      for (int k = 1; k < p; ++k) {
        const double coeff = scale * w[k - 1] / r[k - 1];
        Ops::update(out, out, -coeff, {{1.0, hist[n - 1 - k]}, {-1.0, m0}});
      }
    };
    Ops::assign(x, base);
    if (p > 1) add_residual(x, c.rho_p);  // UniP-p; at p = 1 the prediction is the DDIM step
    if (correct) {
      model_output(x, sigma_next, model_t);  // at the prediction: serves UniC and the history
      Ops::assign(x, base);
      if (p > 1) add_residual(x, c.rho_c);
      Ops::update(x, x, -scale * c.rho_c[p - 1], {{1.0, model_t}, {-1.0, m0}});
    } else if (!last) {
      model_output(x, sigma_next, model_t);
    }
    if (!last) {  // push model_t as m_0, keeping at most `order` entries
      if (hist.size() < static_cast<std::size_t>(order)) {
        hist.emplace_back();
        hist_sigma.push_back(0.0);
      } else {
        for (std::size_t j = 0; j + 1 < hist.size(); ++j) {
          std::swap(hist[j], hist[j + 1]);
          hist_sigma[j] = hist_sigma[j + 1];
        }
      }
      std::swap(hist.back(), model_t);
      hist_sigma.back() = sigma_next;
    }
    if (!run.finish_step(i, sigma_next, sigma_next - sigma, x)) return run.stats;
  }
  if (to_zero) {  // uni_pc.py's denoise_to_zero
    run.denoise(x, sigmas[positive], denoised);
    Ops::assign(x, denoised);
    run.finish_step(positive, 0.0, -sigmas[positive], x);
  }
  return run.stats;
}

}  // namespace diffode
