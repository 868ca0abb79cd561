// Forward diffusion processes: the marginal x_t = alpha(t) x_0 + sigma(t) eps, eps ~ N(0, I).
//
// Conventions (docs/DESIGN.md §3.1):
//   lambda(t) = log(alpha/sigma)                    half log-SNR
//   f(t)      = d log(alpha)/dt                     drift coefficient of the forward SDE
//   g^2(t)    = d(sigma^2)/dt - 2 f sigma^2         squared diffusion coefficient
// so that dx = f x dt + g dW has exactly these marginals: with Var_0 = v0,
//   d/dt Var_t = 2 f Var_t + g^2,  Var_t = alpha^2 v0 + sigma^2.
//
// Every process supplies alpha, sigma, lambda, their time derivatives, and the inverses t(lambda)
// (DPM-Solver / UniPC place intermediate points in lambda) and t(sigma). All inverses are closed
// form. Times are checked against the valid range [t_min, T]: outside it (or NaN) a
// std::domain_error names the process and the time; nothing returns NaN silently. Where a quantity
// is genuinely infinite at an end of the range (the flow's lambda and f at t = 1) it is +-inf, not NaN.
//
// The hot paths are per-sample vectors: the PerSample overloads loop over the scalar ones (one
// virtual call per sample, not per dimension).
#pragma once

#include "core/state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numbers>
#include <stdexcept>
#include <string>
#include <string_view>

namespace diffode {

class Process {
 public:
  virtual ~Process() = default;

  virtual std::string_view name() const = 0;
  // alpha(t) = 1 for every t (VE, EDM): then sigma~ = sigma, and a model may be asked at any
  // noise level, also above the sampling range (Karras et al.'s churn raises sigma past sigma_max).
  virtual bool unit_alpha() const { return false; }
  // Valid time range [t_min, T]; sampling runs from T down to t_min.
  double t_min() const { return t_min_; }
  double t_max() const { return t_max_; }

  double alpha(double t) const { return do_alpha(checked(t)); }
  double sigma(double t) const { return do_sigma(checked(t)); }
  double lambda(double t) const { return do_lambda(checked(t)); }
  double d_alpha(double t) const { return do_d_alpha(checked(t)); }
  double d_sigma(double t) const { return do_d_sigma(checked(t)); }
  double d_lambda(double t) const { return do_d_lambda(checked(t)); }
  // f = d log(alpha)/dt.
  double f(double t) const { return do_f(checked(t)); }
  // g^2 = d(sigma^2)/dt - 2 f sigma^2 = 2 sigma (sigma' - f sigma).
  double g2(double t) const { return do_g2(checked(t)); }

  // The time at which lambda(t) = lambda (resp. sigma(t) = sigma); a value whose time would fall
  // outside [t_min, T] by more than rounding throws.
  double t_of_lambda(double lambda) const { return in_range(do_t_of_lambda(lambda), "t_of_lambda", lambda); }
  double t_of_sigma(double sigma) const { return in_range(do_t_of_sigma(sigma), "t_of_sigma", sigma); }
  // The scale-free noise level sigma/alpha = exp(-lambda): k-diffusion's and diffusers' "sigma" of
  // a VP model, and EDM's sigma (Karras et al. 2022, arXiv:2206.00364, eq. 4 with s(t) = alpha).
  double scaled_sigma(double t) const {
    checked(t);
    return do_sigma(t) / do_alpha(t);
  }
  double t_of_scaled_sigma(double s) const { return in_range(do_t_of_scaled_sigma(s), "t_of_scaled_sigma", s); }

  PerSample alpha(const PerSample& t) const { return t.unaryExpr([this](double s) { return alpha(s); }); }
  PerSample sigma(const PerSample& t) const { return t.unaryExpr([this](double s) { return sigma(s); }); }
  PerSample lambda(const PerSample& t) const { return t.unaryExpr([this](double s) { return lambda(s); }); }
  PerSample d_alpha(const PerSample& t) const { return t.unaryExpr([this](double s) { return d_alpha(s); }); }
  PerSample d_sigma(const PerSample& t) const { return t.unaryExpr([this](double s) { return d_sigma(s); }); }
  PerSample d_lambda(const PerSample& t) const { return t.unaryExpr([this](double s) { return d_lambda(s); }); }
  PerSample f(const PerSample& t) const { return t.unaryExpr([this](double s) { return f(s); }); }
  PerSample g2(const PerSample& t) const { return t.unaryExpr([this](double s) { return g2(s); }); }
  PerSample scaled_sigma(const PerSample& t) const { return t.unaryExpr([this](double s) { return scaled_sigma(s); }); }

  // The prior the sampler starts from: N(0, (alpha(T)^2 s0^2 + sigma(T)^2) I), which is p_T
  // exactly when the data are N(0, s0^2 I) and an approximation otherwise (for VP ~ N(0, I), for
  // VE/EDM ~ N(0, sigma_max^2 I)). The exact p_T of a Gaussian mixture lives with the mixture.
  double prior_std(double data_std = 1.0) const {
    const double a = alpha(t_max_), s = sigma(t_max_);
    return std::sqrt(a * a * data_std * data_std + s * s);
  }
  // log N(x_i; 0, prior_std^2 I) for each sample (row) x_i.
  PerSample prior_log_density(const Batch& x, double data_std = 1.0) const {
    const double sd = prior_std(data_std);
    const double d = static_cast<double>(x.cols());
    return -0.5 * x.square().rowwise().sum() / (sd * sd) - d * (std::log(sd) + 0.5 * std::log(2.0 * std::numbers::pi));
  }

 protected:
  Process(double t_min, double t_max) : t_min_(t_min), t_max_(t_max) {}

  // Called by derived constructors once their parameters are set.
  void validate_range() const {
    if (!(std::isfinite(t_min_) && std::isfinite(t_max_) && t_min_ < t_max_))
      throw std::invalid_argument(fmt::format("{}: invalid time range [{}, {}]", name(), t_min_, t_max_));
  }

  virtual double do_alpha(double t) const = 0;
  virtual double do_sigma(double t) const = 0;
  virtual double do_d_alpha(double t) const = 0;
  virtual double do_d_sigma(double t) const = 0;
  virtual double do_t_of_lambda(double lambda) const = 0;
  virtual double do_t_of_sigma(double sigma) const = 0;
  // Defaults from the definitions; processes override where a closed form is more accurate.
  virtual double do_lambda(double t) const { return std::log(do_alpha(t)) - std::log(do_sigma(t)); }
  virtual double do_t_of_scaled_sigma(double s) const { return do_t_of_lambda(-std::log(s)); }
  virtual double do_f(double t) const { return do_d_alpha(t) / do_alpha(t); }
  virtual double do_d_lambda(double t) const { return do_f(t) - do_d_sigma(t) / do_sigma(t); }
  virtual double do_g2(double t) const {
    const double s = do_sigma(t);
    return 2.0 * s * (do_d_sigma(t) - do_f(t) * s);
  }

 private:
  // A step's end t + h can land a rounding error past t_min or T (t_min - (t_min - t) != t): those
  // are clamped to the end; anything further out is an error.
  double checked(double t) const {
    const double slack = 1e-12 * std::max(1.0, std::abs(t_max_));
    if (!(t >= t_min_ - slack && t <= t_max_ + slack))
      throw std::domain_error(fmt::format("{}: time {} outside the valid range [{}, {}]", name(), t, t_min_, t_max_));
    return std::clamp(t, t_min_, t_max_);
  }
  // Inverses may land a rounding error outside the range at its ends: clamp those, reject the rest.
  double in_range(double t, const char* what, double arg) const {
    const double slack = 1e-12 * std::max(1.0, std::abs(t_max_));
    if (!(t >= t_min_ - slack && t <= t_max_ + slack))
      throw std::domain_error(
          fmt::format("{}: {}({}) = {} outside the valid range [{}, {}]", name(), what, arg, t, t_min_, t_max_));
    return std::clamp(t, t_min_, t_max_);
  }

  double t_min_, t_max_;
};

namespace detail {
// log(1 + e^x) without overflow or loss for large |x|.
inline double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
}  // namespace detail

// VP with a linear beta(t) = beta_min + t (beta_max - beta_min) on [0, 1]: Song et al. 2021
// (arXiv:2011.13456) eq. 11 and 33, the continuous limit of Ho et al. 2020 (arXiv:2006.11239):
//   log alpha = -t^2 (beta_max - beta_min)/4 - t beta_min/2,  sigma = sqrt(1 - alpha^2),
//   f = -beta/2, g^2 = beta. t_min > 0: lambda -> +inf at t = 0.
class VpLinear : public Process {
 public:
  VpLinear(double beta_min = 0.1, double beta_max = 20.0, double t_min = 1e-3, double t_max = 1.0)
      : Process(t_min, t_max), b0_(beta_min), b1_(beta_max) {
    validate_range();
    if (!(b0_ >= 0 && b1_ > b0_) || t_min <= 0)
      throw std::invalid_argument(fmt::format("vp: need 0 <= beta_min < beta_max and t_min > 0 (got {}, {}, {})", b0_, b1_, t_min));
  }
  std::string_view name() const override { return "vp"; }
  double beta(double t) const { return b0_ + t * (b1_ - b0_); }
  double log_alpha(double t) const { return -0.25 * t * t * (b1_ - b0_) - 0.5 * t * b0_; }

 protected:
  double do_alpha(double t) const override { return std::exp(log_alpha(t)); }
  // sigma^2 = 1 - alpha^2 = -expm1(2 log alpha): no cancellation at small t.
  double do_sigma(double t) const override { return std::sqrt(-std::expm1(2.0 * log_alpha(t))); }
  double do_lambda(double t) const override { return log_alpha(t) - 0.5 * std::log(-std::expm1(2.0 * log_alpha(t))); }
  double do_f(double t) const override { return -0.5 * beta(t); }
  double do_d_alpha(double t) const override { return do_f(t) * do_alpha(t); }
  // sigma sigma' = -alpha alpha' = -f alpha^2.
  double do_d_sigma(double t) const override {
    const double a = do_alpha(t);
    return -do_f(t) * a * a / do_sigma(t);
  }
  double do_g2(double t) const override { return beta(t); }
  // lambda' = f - sigma'/sigma = f (1 + alpha^2/sigma^2) = f / sigma^2.
  double do_d_lambda(double t) const override { return do_f(t) / -std::expm1(2.0 * log_alpha(t)); }
  // alpha^2 = sigmoid(2 lambda), so -2 log alpha = softplus(-2 lambda).
  double do_t_of_lambda(double lambda) const override { return t_of_neg2_log_alpha(detail::softplus(-2.0 * lambda)); }
  double do_t_of_sigma(double sigma) const override { return t_of_neg2_log_alpha(-std::log1p(-sigma * sigma)); }

  // Root of (beta_max - beta_min) t^2/2 + beta_min t = L, the closed form DPM-Solver's
  // NoiseScheduleVP.inverse_lambda uses: written as 2 L / (sqrt(b0^2 + 2 (b1-b0) L) + b0), which
  // avoids the cancellation of the textbook (-b0 + sqrt(...)) / (b1-b0) at small t.
  double t_of_neg2_log_alpha(double l) const {
    const double tmp = 2.0 * (b1_ - b0_) * l;
    return 2.0 * l / (std::sqrt(b0_ * b0_ + tmp) + b0_);
  }

  double b0_, b1_;
};

// Sub-VP: Song et al. 2021 (arXiv:2011.13456) eq. 29. alpha as VP linear, sigma = 1 - alpha^2
// (sigma^2 = (1 - alpha^2)^2), g^2 = beta (1 - alpha^4).
class SubVp : public VpLinear {
 public:
  using VpLinear::VpLinear;
  std::string_view name() const override { return "subvp"; }

 protected:
  double do_sigma(double t) const override { return -std::expm1(2.0 * log_alpha(t)); }
  double do_lambda(double t) const override { return log_alpha(t) - std::log(-std::expm1(2.0 * log_alpha(t))); }
  // sigma' = -2 alpha alpha' = -2 f alpha^2.
  double do_d_sigma(double t) const override {
    const double a = do_alpha(t);
    return -2.0 * do_f(t) * a * a;
  }
  double do_d_lambda(double t) const override { return do_f(t) - do_d_sigma(t) / do_sigma(t); }
  double do_g2(double t) const override { return beta(t) * -std::expm1(4.0 * log_alpha(t)); }
  // sigma/alpha = (1 - alpha^2)/alpha = e^-lambda =: r  =>  alpha = 2 / (r + sqrt(r^2 + 4)), i.e.
  // -2 log alpha = 2 asinh(r/2), which keeps its digits as r -> 0 (t -> 0).
  double do_t_of_lambda(double lambda) const override { return do_t_of_scaled_sigma(std::exp(-lambda)); }
  double do_t_of_scaled_sigma(double r) const override { return t_of_neg2_log_alpha(2.0 * std::asinh(0.5 * r)); }
  double do_t_of_sigma(double sigma) const override { return t_of_neg2_log_alpha(-std::log1p(-sigma)); }
};

// VP cosine schedule: Nichol & Dhariwal 2021 (arXiv:2102.09672) eq. 17 in continuous time,
//   alpha^2(t) = cos^2(phi(t)) / cos^2(phi(0)),  phi(t) = (t + s)/(1 + s) * pi/2,  s = 0.008,
// the form of DPM-Solver's continuous 'cosine' NoiseScheduleVP (Lu et al. 2022, arXiv:2206.00927).
// alpha -> 0 and lambda -> -inf as t -> 1, so the range ends at T = 0.9946, DPM-Solver's choice:
// there lambda(T) = -4.78, above the -5.1 floor DPM-Solver clips discrete cosine schedules at
// (numerical_clip_alpha). T >= 1 is refused. Eq. 17's beta clipping at 0.999 is a discrete-step
// device; in continuous time the cut at T plays its part.
class VpCosine : public Process {
 public:
  explicit VpCosine(double s = 0.008, double t_min = 1e-3, double t_max = 0.9946) : Process(t_min, t_max), s_(s) {
    validate_range();
    if (!(s_ > 0) || t_min <= 0 || t_max >= 1.0)
      throw std::invalid_argument(fmt::format("vp_cosine: need s > 0, t_min > 0, T < 1 (got {}, {}, {})", s_, t_min, t_max));
    phi0_ = phi(0.0);
  }
  std::string_view name() const override { return "vp_cosine"; }
  double phi(double t) const { return (t + s_) / (1.0 + s_) * std::numbers::pi / 2.0; }
  // log(cos(phi0 + d)/cos(phi0)) = log1p(cos d - 1 - tan(phi0) sin d): no cancellation at small t.
  double log_alpha(double t) const {
    const double d = phi(t) - phi0_;
    const double sh = std::sin(0.5 * d);
    return std::log1p(-2.0 * sh * sh - std::tan(phi0_) * std::sin(d));
  }

 protected:
  double dphi() const { return std::numbers::pi / (2.0 * (1.0 + s_)); }
  double do_alpha(double t) const override { return std::exp(log_alpha(t)); }
  double do_sigma(double t) const override { return std::sqrt(-std::expm1(2.0 * log_alpha(t))); }
  double do_lambda(double t) const override { return log_alpha(t) - 0.5 * std::log(-std::expm1(2.0 * log_alpha(t))); }
  double do_f(double t) const override { return -std::tan(phi(t)) * dphi(); }
  double do_d_alpha(double t) const override { return do_f(t) * do_alpha(t); }
  double do_d_sigma(double t) const override {
    const double a = do_alpha(t);
    return -do_f(t) * a * a / do_sigma(t);
  }
  double do_d_lambda(double t) const override { return do_f(t) / -std::expm1(2.0 * log_alpha(t)); }
  // alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda).
  double do_t_of_lambda(double lambda) const override {
    return t_of_alpha_sigma(std::exp(-0.5 * detail::softplus(-2.0 * lambda)), std::exp(-0.5 * detail::softplus(2.0 * lambda)));
  }
  double do_t_of_sigma(double sigma) const override { return t_of_alpha_sigma(std::sqrt(1.0 - sigma * sigma), sigma); }
  // cos(phi) = alpha cos(phi0), and sin^2(phi) = 1 - alpha^2 cos^2(phi0) = sin^2(phi0) + sigma^2 cos^2(phi0):
  // atan2 of the two is well conditioned at both ends, where acos(alpha cos(phi0)) loses digits
  // near t = 0 (cos(phi) ~ 1).
  double t_of_alpha_sigma(double alpha, double sigma) const {
    const double c0 = std::cos(phi0_), s0 = std::sin(phi0_);
    return std::atan2(std::sqrt(s0 * s0 + sigma * sigma * c0 * c0), alpha * c0) / dphi() - s_;
  }

  double s_, phi0_ = 0.0;
};

// Variance exploding: Song et al. 2021 (arXiv:2011.13456) eq. 30-31, alpha = 1,
// sigma = sigma_min (sigma_max/sigma_min)^t on [t_min, 1]; f = 0, g^2 = 2 sigma^2 log(sigma_max/sigma_min).
// t_min = 1e-5 is score_sde's sampling eps for VE.
class Ve : public Process {
 public:
  bool unit_alpha() const override { return true; }
  Ve(double sigma_min = 0.01, double sigma_max = 50.0, double t_min = 1e-5, double t_max = 1.0)
      : Process(t_min, t_max), smin_(sigma_min), log_ratio_(std::log(sigma_max / sigma_min)) {
    validate_range();
    if (!(sigma_min > 0 && sigma_max > sigma_min) || t_min < 0)
      throw std::invalid_argument(fmt::format("ve: need 0 < sigma_min < sigma_max (got {}, {})", sigma_min, sigma_max));
  }
  std::string_view name() const override { return "ve"; }

 protected:
  double do_alpha(double) const override { return 1.0; }
  double do_sigma(double t) const override { return smin_ * std::exp(t * log_ratio_); }
  double do_lambda(double t) const override { return -std::log(smin_) - t * log_ratio_; }
  double do_d_alpha(double) const override { return 0.0; }
  double do_d_sigma(double t) const override { return log_ratio_ * do_sigma(t); }
  double do_d_lambda(double) const override { return -log_ratio_; }
  double do_f(double) const override { return 0.0; }
  double do_g2(double t) const override {
    const double s = do_sigma(t);
    return 2.0 * s * s * log_ratio_;
  }
  double do_t_of_lambda(double lambda) const override { return (-lambda - std::log(smin_)) / log_ratio_; }
  double do_t_of_sigma(double sigma) const override { return std::log(sigma / smin_) / log_ratio_; }
  double do_t_of_scaled_sigma(double s) const override { return do_t_of_sigma(s); }

  double smin_, log_ratio_;
};

// EDM: Karras et al. 2022 (arXiv:2206.00364), alpha = 1, sigma = t on [sigma_min, sigma_max] =
// [0.002, 80]; f = 0, g^2 = 2 t, lambda = -log t.
class Edm : public Process {
 public:
  bool unit_alpha() const override { return true; }
  Edm(double sigma_min = 0.002, double sigma_max = 80.0) : Process(sigma_min, sigma_max) {
    validate_range();
    if (!(sigma_min > 0)) throw std::invalid_argument(fmt::format("edm: need sigma_min > 0 (got {})", sigma_min));
  }
  std::string_view name() const override { return "edm"; }

 protected:
  double do_alpha(double) const override { return 1.0; }
  double do_sigma(double t) const override { return t; }
  double do_lambda(double t) const override { return -std::log(t); }
  double do_d_alpha(double) const override { return 0.0; }
  double do_d_sigma(double) const override { return 1.0; }
  double do_d_lambda(double t) const override { return -1.0 / t; }
  double do_f(double) const override { return 0.0; }
  double do_g2(double t) const override { return 2.0 * t; }
  double do_t_of_lambda(double lambda) const override { return std::exp(-lambda); }
  double do_t_of_sigma(double sigma) const override { return sigma; }
  double do_t_of_scaled_sigma(double s) const override { return s; }
};

// Linear-interpolant flow: Lipman et al. 2023 (arXiv:2210.02747), Liu et al. 2023 rectified flow
// (arXiv:2209.03003): alpha = 1 - t, sigma = t; f = -1/(1-t), g^2 = 2t/(1-t), lambda = log((1-t)/t).
// T = 1 by default: x_1 is pure noise, which velocity samplers start from; there lambda = -inf and
// f, g^2 are infinite (returned as such). Samplers working in lambda must take t_max < 1.
class Flow : public Process {
 public:
  explicit Flow(double t_min = 1e-3, double t_max = 1.0) : Process(t_min, t_max) {
    validate_range();
    if (t_min <= 0 || t_max > 1.0)
      throw std::invalid_argument(fmt::format("flow: need 0 < t_min < T <= 1 (got {}, {})", t_min, t_max));
  }
  std::string_view name() const override { return "flow"; }

 protected:
  double do_alpha(double t) const override { return 1.0 - t; }
  double do_sigma(double t) const override { return t; }
  double do_lambda(double t) const override { return std::log1p(-t) - std::log(t); }
  double do_d_alpha(double) const override { return -1.0; }
  double do_d_sigma(double) const override { return 1.0; }
  double do_d_lambda(double t) const override { return -1.0 / (t * (1.0 - t)); }
  double do_f(double t) const override { return -1.0 / (1.0 - t); }
  double do_g2(double t) const override { return 2.0 * t / (1.0 - t); }
  // t = 1 / (1 + e^lambda), written to stay exact for either sign of lambda.
  double do_t_of_lambda(double lambda) const override {
    return lambda > 0 ? std::exp(-lambda) / (1.0 + std::exp(-lambda)) : 1.0 / (1.0 + std::exp(lambda));
  }
  double do_t_of_sigma(double sigma) const override { return sigma; }
  // sigma/alpha = t/(1-t).
  double do_t_of_scaled_sigma(double s) const override { return s / (1.0 + s); }
};

// What a config layer passes to make_process. NaN means "the process's default".
struct ProcessParams {
  static constexpr double unset = std::numeric_limits<double>::quiet_NaN();
  double beta_min = 0.1;   // vp, subvp
  double beta_max = 20.0;  // vp, subvp
  double cosine_s = 0.008; // vp_cosine
  double sigma_min = unset;  // ve (0.01), edm (0.002; its t_min)
  double sigma_max = unset;  // ve (50), edm (80; its T)
  double t_min = unset;      // vp, subvp, vp_cosine, flow 1e-3; ve 1e-5; edm = sigma_min
  double t_max = unset;      // 1; vp_cosine 0.9946; edm = sigma_max
};

// name: "vp", "vp_cosine", "subvp", "ve", "edm", "flow".
inline std::unique_ptr<Process> make_process(std::string_view name, const ProcessParams& p = {}) {
  const auto pick = [](double value, double fallback) { return std::isnan(value) ? fallback : value; };
  if (name == "vp") return std::make_unique<VpLinear>(p.beta_min, p.beta_max, pick(p.t_min, 1e-3), pick(p.t_max, 1.0));
  if (name == "subvp") return std::make_unique<SubVp>(p.beta_min, p.beta_max, pick(p.t_min, 1e-3), pick(p.t_max, 1.0));
  if (name == "vp_cosine") return std::make_unique<VpCosine>(p.cosine_s, pick(p.t_min, 1e-3), pick(p.t_max, 0.9946));
  if (name == "ve")
    return std::make_unique<Ve>(pick(p.sigma_min, 0.01), pick(p.sigma_max, 50.0), pick(p.t_min, 1e-5), pick(p.t_max, 1.0));
  if (name == "edm")
    return std::make_unique<Edm>(pick(p.t_min, pick(p.sigma_min, 0.002)), pick(p.t_max, pick(p.sigma_max, 80.0)));
  if (name == "flow") return std::make_unique<Flow>(pick(p.t_min, 1e-3), pick(p.t_max, 1.0));
  throw std::invalid_argument(
      fmt::format("unknown process '{}' (known: vp, vp_cosine, subvp, ve, edm, flow)", name));
}

}  // namespace diffode
