// The batched state and the small algebra every stepper is written against.
//
// A state is a batch of N samples (rows); each sample is a flat vector of D numbers. Steppers never
// touch the storage: they combine states only through StateOps<State>, as Boost.Odeint's
// algebra/operations and SUNDIALS' N_Vector do, so the same stepper runs on an Eigen array on the
// host (exact mixtures, known-solution problems) and on a torch::Tensor on any device (networks;
// see core/state_torch.hpp, which only the translation units that need LibTorch include).
//
// Per-sample scalars (times, step sizes, error ratios) have their own type, StateOps<S>::Scalars,
// so that per-sample step-size control keeps a sample's result independent of its batch.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <stdexcept>

namespace diffode {

// N x D, row-major: a sample is contiguous, which is what per-sample work (norms, Brownian rows,
// mixture responsibilities) walks along.
using Batch = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using PerSample = Eigen::ArrayXd;
using Index = Eigen::Index;

template <class State>
struct StateOps;  // specialised per state type

// One term c * k of a linear combination; keeps a reference, so use it only inside the call.
template <class State>
struct Term {
  double coeff;
  const State& value;
};

// The concept a state algebra satisfies; stepper templates require it.
template <class State>
concept BatchedState = requires(const State& x, State& y, const typename StateOps<State>::Scalars& s) {
  typename StateOps<State>::Scalars;
  { StateOps<State>::samples(x) } -> std::convertible_to<Index>;
  { StateOps<State>::zeros_like(x) } -> std::same_as<State>;
  { StateOps<State>::clone(x) } -> std::same_as<State>;
  { StateOps<State>::fill(x, 1.0) } -> std::same_as<typename StateOps<State>::Scalars>;
  StateOps<State>::update(y, x, 1.0, {Term<State>{1.0, x}});
  StateOps<State>::update(y, x, s, {Term<State>{1.0, x}});
};

template <>
struct StateOps<Batch> {
  using Scalars = PerSample;
  using Mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

  static Index samples(const Batch& x) { return x.rows(); }
  static Index dims(const Batch& x) { return x.cols(); }
  static Batch zeros_like(const Batch& x) { return Batch::Zero(x.rows(), x.cols()); }
  static Batch clone(const Batch& x) { return x; }
  static void assign(Batch& out, const Batch& x) { out = x; }
  static Scalars fill(const Batch& like, double value) { return Scalars::Constant(like.rows(), value); }
  // A host batch (Brownian increments) as this state type: here, the batch itself.
  static const Batch& from_host(const Batch& host, const Batch& /*like*/) { return host; }
  static Batch to_host(const Batch& x) { return x; }
  // Per-sample scalars between the host (controllers, processes) and this state's Scalars: here
  // they are the same array, passed by reference.
  static const PerSample& scalars_to_host(const Scalars& s) { return s; }
  static const PerSample& scalars_from_host(const PerSample& s, const Batch& /*like*/) { return s; }

  // out = x + h * sum_j c_j k_j, with one h for the whole batch. `out` may alias `x` or a k_j: each
  // element is read before it is written.
  static void update(Batch& out, const Batch& x, double h, std::initializer_list<Term<Batch>> terms) {
    resize_like(out, x);
    const Index n = x.size();
    double* o = out.data();
    const double* xv = x.data();
    // Pointers and coefficients gathered once; the inner loop is a multiply-add per term.
    const double* kv[kMaxTerms];
    double c[kMaxTerms];
    const std::size_t m = gather(terms, h, kv, c);
    for (Index i = 0; i < n; ++i) {
      double acc = 0.0;
      for (std::size_t q = 0; q < m; ++q) acc += c[q] * kv[q][i];
      o[i] = xv[i] + acc;
    }
  }

  // out = sum_j c_j k_j: a general linear combination in one pass (exponential integrators scale
  // x by sigma_t/sigma_s, so their update is not of update()'s x + h sum form). `out` may alias a k_j.
  static void combine(Batch& out, std::initializer_list<Term<Batch>> terms) {
    const Batch& first = terms.begin()->value;
    resize_like(out, first);
    const Index n = first.size();
    const double* kv[kMaxTerms];
    double c[kMaxTerms];
    const std::size_t m = gather(terms, 1.0, kv, c);
    double* o = out.data();
    for (Index i = 0; i < n; ++i) {
      double acc = c[0] * kv[0][i];
      for (std::size_t q = 1; q < m; ++q) acc += c[q] * kv[q][i];
      o[i] = acc;
    }
  }

  // out = x + h_n * sum_j c_j k_j, with a step size per sample (row n).
  static void update(Batch& out, const Batch& x, const Scalars& h, std::initializer_list<Term<Batch>> terms) {
    resize_like(out, x);
    const Index rows = x.rows(), cols = x.cols();
    const double* kv[kMaxTerms];
    double c[kMaxTerms];
    const std::size_t m = gather(terms, 1.0, kv, c);
    for (Index r = 0; r < rows; ++r) {
      const double hr = h[r];
      for (Index col = 0; col < cols; ++col) {
        const Index i = r * cols + col;
        double acc = 0.0;
        for (std::size_t q = 0; q < m; ++q) acc += c[q] * kv[q][i];
        out.data()[i] = x.data()[i] + hr * acc;
      }
    }
  }

  // out = c * x, one factor for the batch, or one per sample (row).
  static void scale(Batch& out, double c, const Batch& x) { out = c * x; }
  static void scale_rows(Batch& out, const Scalars& c, const Batch& x) { out = x.colwise() * c; }
  // out = a_n x_n + b_n y_n for every sample (row) n; `out` may alias x or y. Conversions between
  // predictions (eps, x0, v, score, flow) are all of this form.
  static void combine_rows(Batch& out, const Scalars& a, const Batch& x, const Scalars& b, const Batch& y) {
    if (out.rows() != x.rows() || out.cols() != x.cols()) out.resize(x.rows(), x.cols());
    const Index cols = x.cols();
    for (Index r = 0; r < x.rows(); ++r) {
      const double ar = a[r], br = b[r];
      const double* xr = x.data() + r * cols;
      const double* yr = y.data() + r * cols;
      double* o = out.data() + r * cols;
      for (Index c = 0; c < cols; ++c) o[c] = ar * xr[c] + br * yr[c];
    }
  }

  // A per-sample scalar repeated across the sample's dims: per-row times in a drift.
  static Batch broadcast_rows(const Scalars& s, const Batch& like) { return s.replicate(1, like.cols()); }
  // out = a .* b (elementwise).
  static void multiply(Batch& out, const Batch& a, const Batch& b) { out = a * b; }

  // out += c * a .* b (elementwise): noise terms g(x) dW and their corrections.
  static void add_product(Batch& out, double c, const Batch& a, const Batch& b) { out += c * a * b; }

  // Per-sample root-mean-square of err_i / (atol + rtol * max(|x0_i|, |x1_i|)), the usual mixed
  // error norm (Hairer, Norsett & Wanner, II.4); <= 1 means the step is accepted.
  static Scalars error_ratio(const Batch& err, const Batch& x0, const Batch& x1, double rtol, double atol) {
    const Batch scale = atol + rtol * x0.abs().max(x1.abs());
    return ((err / scale).square().rowwise().sum() / static_cast<double>(err.cols())).sqrt();
  }

  // Rows with keep[n] take `candidate`'s row; others keep theirs.
  static void select_rows(Batch& x, const Mask& keep, const Batch& candidate) {
    for (Index r = 0; r < x.rows(); ++r)
      if (keep[r]) x.row(r) = candidate.row(r);
  }

  // Per-sample: is every entry finite?
  static Mask finite_rows(const Batch& x) { return x.isFinite().rowwise().all(); }

 private:
  static constexpr std::size_t kMaxTerms = 16;

  // The terms' data pointers and scale * coefficients, as plain arrays for the inner loops.
  static std::size_t gather(std::initializer_list<Term<Batch>> terms, double scale, const double** kv, double* c) {
    if (terms.size() > kMaxTerms) throw std::invalid_argument("StateOps<Batch>: at most 16 terms in one linear combination");
    std::size_t j = 0;
    for (const auto& t : terms) {
      kv[j] = t.value.data();
      c[j] = scale * t.coeff;
      ++j;
    }
    return j;
  }

  static void resize_like(Batch& out, const Batch& x) {
    if (out.rows() != x.rows() || out.cols() != x.cols()) out.resize(x.rows(), x.cols());
  }
};

}  // namespace diffode
