#include "experiments/run/nelder_mead.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

namespace diffode {
namespace {

using Point = std::vector<double>;

// Counts evaluations, keeps the best point and the history, and stops at the budget.
class Counter {
 public:
  Counter(const std::function<double(const Point&)>& f, int budget, NelderMeadResult& result) : f_(f), budget_(budget), result_(result) {}
  bool spent() const { return result_.evaluations >= budget_; }
  double operator()(const Point& x) {
    double v = f_(x);
    if (std::isnan(v)) v = std::numeric_limits<double>::infinity();
    ++result_.evaluations;
    if (result_.evaluations == 1 || v < result_.value) {
      result_.value = v;
      result_.x = x;
      result_.history.emplace_back(result_.evaluations, v);
    }
    return v;
  }

 private:
  const std::function<double(const Point&)>& f_;
  int budget_;
  NelderMeadResult& result_;
};

Point affine(const Point& a, const Point& b, double t) {  // a + t (b - a)
  Point out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] + t * (b[i] - a[i]);
  return out;
}

struct Simplex {
  std::vector<Point> x;
  std::vector<double> f;

  void sort() {
    std::vector<std::size_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return f[a] < f[b]; });
    std::vector<Point> xs;
    std::vector<double> fs;
    for (std::size_t i : order) xs.push_back(x[i]), fs.push_back(f[i]);
    x = std::move(xs), f = std::move(fs);
  }
  bool converged(double tolerance) const {
    if (!std::isfinite(f.back())) return false;
    const double spread = f.back() - f.front();
    double size = 0;
    for (std::size_t i = 1; i < x.size(); ++i)
      for (std::size_t j = 0; j < x[i].size(); ++j) size = std::max(size, std::abs(x[i][j] - x[0][j]));
    return spread <= tolerance * (std::abs(f.front()) + tolerance) && size <= tolerance;
  }
};

// Iterates one simplex until it converges or the budget is spent.
void iterate(Simplex& s, Counter& f, double tolerance) {
  const std::size_t n = s.x.size() - 1;
  const double dn = static_cast<double>(n);
  const double expand = 1.0 + 2.0 / dn, contract = 0.75 - 0.5 / dn, shrink = 1.0 - 1.0 / dn;
  for (s.sort(); !f.spent() && !s.converged(tolerance); s.sort()) {
    Point centroid(n, 0.0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) centroid[j] += s.x[i][j] / dn;
    const Point& worst = s.x[n];
    const Point reflected = affine(centroid, worst, -1.0);
    const double fr = f(reflected);
    if (fr < s.f[0]) {
      if (f.spent()) {
        s.x[n] = reflected, s.f[n] = fr;
        continue;
      }
      const Point expanded = affine(centroid, worst, -expand);
      const double fe = f(expanded);
      if (fe < fr) s.x[n] = expanded, s.f[n] = fe;
      else s.x[n] = reflected, s.f[n] = fr;
      continue;
    }
    if (fr < s.f[n - 1]) {
      s.x[n] = reflected, s.f[n] = fr;
      continue;
    }
    if (f.spent()) break;
    // Contraction: outside (towards the reflected point) when that was better than the worst.
    const bool outside = fr < s.f[n];
    const Point contracted = affine(centroid, outside ? reflected : worst, contract);
    const double fc = f(contracted);
    if (outside ? fc <= fr : fc < s.f[n]) {
      s.x[n] = contracted, s.f[n] = fc;
      continue;
    }
    for (std::size_t i = 1; i <= n && !f.spent(); ++i) {
      s.x[i] = affine(s.x[0], s.x[i], shrink);
      s.f[i] = f(s.x[i]);
    }
  }
}

}  // namespace

NelderMeadResult nelder_mead(const std::function<double(const Point&)>& objective, const Point& start, const NelderMeadOptions& o) {
  if (o.max_evaluations < 1) throw std::invalid_argument("nelder_mead: the budget must allow one evaluation");
  if (!(o.initial_step > 0) || !std::isfinite(o.initial_step)) throw std::invalid_argument("nelder_mead: the initial step must be positive");
  NelderMeadResult result;
  Counter f(objective, o.max_evaluations, result);
  result.start_value = f(start);
  const std::size_t n = start.size();
  if (n == 0) return result;  // nothing to move: the start is the answer
  std::mt19937_64 rng(o.seed);
  double step = o.initial_step;
  for (int round = 0; round <= o.max_restarts && !f.spent(); ++round, step *= 0.5) {
    // The first simplex along the axes; a restart's around the best point, each axis's sign drawn.
    Simplex s;
    const Point centre = result.x;
    s.x.push_back(centre);
    s.f.push_back(result.value);
    for (std::size_t i = 0; i < n && !f.spent(); ++i) {
      Point v = centre;
      v[i] += round == 0 || (rng() & 1) ? step : -step;
      s.x.push_back(v);
      s.f.push_back(f(v));
    }
    if (s.x.size() < n + 1) break;
    if (round > 0) ++result.restarts;
    iterate(s, f, o.tolerance);
    if (step < o.tolerance) break;  // the restarts have come down to the tolerance: done
  }
  return result;
}

}  // namespace diffode
