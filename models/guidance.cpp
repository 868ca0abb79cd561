#include "models/guidance.hpp"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace diffode {

void check_guidance(const GuidanceSettings& s, Index classes, const char* what) {
  const auto check_class = [&](Index c, const char* role) {
    if (c < 0 || c >= classes)
      throw std::invalid_argument(fmt::format("{}: {} {} of a model with {} classes (classes are 0..{})", what, role, c, classes, classes - 1));
  };
  check_class(s.target_class, "class");
  if (!(s.scale >= 0.0) || !std::isfinite(s.scale)) throw std::invalid_argument(fmt::format("{}: scale {} must be finite and >= 0", what, s.scale));
  if (!(s.rescale >= 0.0 && s.rescale <= 1.0)) throw std::invalid_argument(fmt::format("{}: rescale {} must lie in [0, 1]", what, s.rescale));
  if (!(s.sigma_lo >= 0.0) || !(s.sigma_hi >= s.sigma_lo))
    throw std::invalid_argument(fmt::format("{}: interval [{}, {}] must have 0 <= lo <= hi", what, s.sigma_lo, s.sigma_hi));
  if (s.negative_class) check_class(*s.negative_class, "negative_class");
  if (s.kind == GuidanceSettings::Kind::classifier && (s.rescale != 0.0 || s.negative_class))
    throw std::invalid_argument(fmt::format("{}: rescale and negative_class belong to classifier-free guidance", what));
}

bool guided_rows(const GuidanceSettings& s, const PerSample& alpha, const PerSample& sigma, std::vector<char>& guided) {
  const Index n = alpha.size();
  guided.assign(n, 0);
  bool any = false;
  for (Index i = 0; i < n; ++i) {
    const double level = alpha[i] == 0.0 ? std::numeric_limits<double>::infinity() : sigma[i] / alpha[i];
    guided[i] = s.scale != 0.0 && level >= s.sigma_lo && level <= s.sigma_hi;
    any = any || guided[i];
  }
  return any;
}

void cfg_combine(const Batch& cond, const Batch& other, const std::vector<char>& guided, double scale, double rescale, Batch& out) {
  const Index n = cond.rows(), dd = cond.cols();
  if (other.rows() != n || other.cols() != dd || static_cast<Index>(guided.size()) != n)
    throw std::invalid_argument("cfg_combine: the predictions and the row mask differ in shape");
  out = cond;
  for (Index i = 0; i < n; ++i) {
    if (!guided[i]) continue;
    const auto c = cond.row(i);
    Eigen::ArrayXd g = (c + scale * (c - other.row(i))).transpose();
    if (rescale != 0.0) {
      const auto stdev = [dd](const Eigen::ArrayXd& v) { return std::sqrt((v - v.mean()).square().sum() / static_cast<double>(dd)); };
      const double sd_guided = stdev(g);
      // A guided prediction with no spread (one dimension, or all entries equal) has no scale to
      // restore: left as it is.
      if (sd_guided > 0.0) g = rescale * (g * (stdev(c.transpose()) / sd_guided)) + (1.0 - rescale) * g;
    }
    out.row(i) = g.transpose();
  }
}

}  // namespace diffode
