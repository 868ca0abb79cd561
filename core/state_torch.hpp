// The state algebra on a torch::Tensor, so every stepper written against StateOps<State> runs on a
// batch resident on any LibTorch device (CPU, CUDA). A step moves nothing between host and device;
// only the drivers do, and only what they must: the Brownian increments in (from_host), the
// per-sample finiteness check out (finite_rows), and the adaptive driver's per-sample times, step
// sizes and error ratios, which its host-side controller reads and writes.
//
// It mirrors StateOps<Batch> (core/state.hpp) operation for operation; tests/core/state_torch_test.cpp
// proves the two give the same numbers for every stepper. A state is a tensor whose first dimension
// is the sample: N x D, or N x C x H x W for images; everything after the first dimension is "the
// sample's D numbers", in the tensor's own memory order. Per-sample scalars (times, step sizes,
// error ratios) are a 1-D float64 tensor [N] on the state's device, broadcast over the trailing
// dimensions where they meet a state. Arithmetic happens in the state's dtype (float64 unless the
// caller chose otherwise, docs/DESIGN.md §4.1).
//
// Two LibTorch traps this file designs out:
//  * Tensor assignment aliases storage (`a = b` shares b's buffer), so clone() deep-copies, and every
//    operation that writes `out` in place first checks that `out` is a separate, writable buffer of
//    the right shape; if not, it rebinds `out` to a fresh tensor instead of scribbling over a
//    value the caller still reads.
//  * In-place elementwise kernels tolerate an output that is exactly an input, never a partial
//    overlap; update() reads the terms k_j after writing `out`, so a k_j that overlaps `out` makes it
//    build the result in a temporary first (StateOps<Batch>::update reads each element before it
//    writes it, so there the question never arises).
//
// Only translation units that need LibTorch include this header: it costs tens of seconds to parse.
#pragma once

#include "core/state.hpp"

#include <ATen/MemoryOverlap.h>
#include <torch/types.h>

#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode {

template <>
struct StateOps<torch::Tensor> {
  using State = torch::Tensor;
  using Scalars = torch::Tensor;  // float64 [N], on the state's device
  // Which samples are finite: on the host, because the driver reports a failing sample by index (one
  // N-byte copy per step, the only device->host traffic the fixed-grid drivers cause). select_rows
  // also takes a device-side bool tensor [N], which is what a comparison of Scalars produces.
  using Mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

  static Index samples(const State& x) { return x.size(0); }
  // The product of the trailing dimensions: a sample's D numbers.
  static Index dims(const State& x) {
    Index d = 1;
    for (int64_t i = 1; i < x.dim(); ++i) d *= x.size(i);
    return d;
  }
  static State zeros_like(const State& x) { return torch::zeros_like(x); }
  static State clone(const State& x) { return x.clone(); }
  static void assign(State& out, const State& x) {
    if (writable_as(out, x) && !out.is_same(x))
      out.copy_(x);
    else if (!out.is_same(x))
      out = x.clone();
  }
  // On the state's device: a fill kernel, no host round trip.
  static Scalars fill(const State& like, double value) {
    return torch::full({samples(like)}, value, like.options().dtype(torch::kFloat64));
  }

  // Row n of the result is s[n] in every position: a per-sample scalar (a time, sigma(t)) as a state.
  static State broadcast_rows(const Scalars& s, const State& like) {
    return as_row_factor(s, like).expand_as(like).contiguous();
  }

  // out = x + h * sum_j c_j k_j, with one h for the whole batch. `out` may alias `x` or any k_j.
  static void update(State& out, const State& x, double h, std::initializer_list<Term<State>> terms) {
    if (terms.size() == 0) return assign(out, x);
    const bool in_place = can_build_in(out, x, terms);
    State result = in_place ? out : torch::empty_like(x);
    auto t = terms.begin();
    // x + (h c_1) k_1 in one kernel (`result` may be exactly x or k_1: elementwise, so safe), then
    // one fused axpy per further term, as the Eigen loop does.
    torch::add_out(result, x, t->value, h * t->coeff);
    for (++t; t != terms.end(); ++t) result.add_(t->value, h * t->coeff);
    if (!in_place) out = result;
  }

  // out = sum_j c_j k_j in one pass per term; `out` may alias a k_j (the result is built apart).
  static void combine(State& out, std::initializer_list<Term<State>> terms) {
    auto t = terms.begin();
    State result = torch::mul(t->value, t->coeff);
    for (++t; t != terms.end(); ++t) result.add_(t->value, t->coeff);
    out = result;
  }

  // out = x + h_n * sum_j c_j k_j, with a step size per sample (h is [N], broadcast over the sample).
  // The same one-pass-per-term scheme as above, each pass a fused x + (h_n c_j) k_j.
  static void update(State& out, const State& x, const Scalars& h, std::initializer_list<Term<State>> terms) {
    if (terms.size() == 0) return assign(out, x);
    const State hn = as_row_factor(h, x);
    const bool in_place = can_build_in(out, x, terms);
    State result = in_place ? out : torch::empty_like(x);
    auto t = terms.begin();
    torch::addcmul_out(result, x, hn, t->value, t->coeff);
    for (++t; t != terms.end(); ++t) result.addcmul_(hn, t->value, t->coeff);
    if (!in_place) out = result;
  }

  // out = c * x, one factor for the batch, or one per sample (broadcast over the sample).
  static void scale(State& out, double c, const State& x) {
    if (writable_as(out, x) && exact_or_disjoint(out, x))
      torch::mul_out(out, x, c);
    else
      out = torch::mul(x, c);
  }
  static void scale_rows(State& out, const Scalars& c, const State& x) {
    const State cn = as_row_factor(c, x);
    if (writable_as(out, x) && exact_or_disjoint(out, x))
      torch::mul_out(out, x, cn);
    else
      out = torch::mul(x, cn);
  }
  // out = a_n x_n + b_n y_n for every sample n; `out` may alias x or y.
  static void combine_rows(State& out, const Scalars& a, const State& x, const Scalars& b, const State& y) {
    out = torch::mul(x, as_row_factor(a, x)).add_(torch::mul(y, as_row_factor(b, y)));
  }
  // out = a .* b (elementwise).
  static void multiply(State& out, const State& a, const State& b) {
    if (writable_as(out, a) && exact_or_disjoint(out, a) && exact_or_disjoint(out, b))
      torch::mul_out(out, a, b);
    else
      out = torch::mul(a, b);
  }

  // out += c * a .* b (elementwise): noise terms g(x) dW and their corrections.
  static void add_product(State& out, double c, const State& a, const State& b) { out.addcmul_(a, b, c); }

  // Per-sample root-mean-square of err_i / (atol + rtol * max(|x0_i|, |x1_i|)), the mixed error norm
  // of Hairer, Norsett & Wanner (1993), Sec. II.4; <= 1 accepts the step. float64 whatever the state.
  static Scalars error_ratio(const State& err, const State& x0, const State& x1, double rtol, double atol) {
    State scale = torch::maximum(x0.abs(), x1.abs()).mul_(rtol).add_(atol);
    State q = torch::div(err, scale).square_();
    return q.reshape({samples(err), -1}).to(torch::kFloat64).mean(1).sqrt_();
  }

  // Rows with keep[n] take `candidate`'s row; others keep theirs. Device mask: no host traffic.
  static void select_rows(State& x, const torch::Tensor& keep, const State& candidate) {
    const State mask = keep.to(x.device(), torch::kBool).reshape(row_factor_shape(x));
    if (writable_as(x, candidate) && exact_or_disjoint(x, candidate))
      torch::where_out(x, mask, candidate, x);
    else
      x = torch::where(mask, candidate, x);
  }
  // Host mask (as finite_rows returns it): one N-byte copy to the device.
  static void select_rows(State& x, const Mask& keep, const State& candidate) {
    select_rows(x, mask_to_tensor(keep), candidate);
  }

  // Per-sample: is every entry finite? Computed on the device, brought back as N booleans.
  static Mask finite_rows(const State& x) {
    const torch::Tensor rows = torch::isfinite(x).reshape({samples(x), -1}).all(1).to(torch::kCPU).contiguous();
    Mask m(rows.size(0));
    const bool* p = rows.data_ptr<bool>();
    for (Index n = 0; n < m.size(); ++n) m[n] = p[n];
    return m;
  }

  // A host batch (Brownian increments, initial states) copied to like's device and dtype, reshaped to
  // like's shape. An empty batch (a noise quantity the stepper does not use) gives an empty tensor.
  static State from_host(const Batch& host, const State& like) {
    if (host.size() == 0) return torch::empty({0}, like.options());
    if (host.rows() != samples(like) || host.cols() != dims(like))
      throw std::invalid_argument("StateOps<torch::Tensor>::from_host: a " + std::to_string(host.rows()) + " x " +
                                  std::to_string(host.cols()) + " batch cannot take the shape of a state of " +
                                  std::to_string(samples(like)) + " samples x " + std::to_string(dims(like)) +
                                  " dims");
    const torch::Tensor view = torch::from_blob(const_cast<double*>(host.data()), {host.rows(), host.cols()},
                                                torch::TensorOptions().dtype(torch::kFloat64));
    // copy = true: on the CPU with float64 `to` would otherwise return a view of the caller's buffer.
    return view.to(like.options(), /*non_blocking=*/false, /*copy=*/true).reshape(like.sizes());
  }
  // Per-sample scalars across the host boundary, for the host-side step-size controller
  // (solvers/adaptive.hpp): one N-double copy each way per attempt, which is what a per-sample
  // controller on the host costs.
  static PerSample scalars_to_host(const Scalars& s) {
    const torch::Tensor h = s.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    PerSample out(h.numel());
    if (out.size() > 0) std::memcpy(out.data(), h.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(out.size()));
    return out;
  }
  static Scalars scalars_from_host(const PerSample& s, const State& like) {
    const torch::Tensor view = torch::from_blob(const_cast<double*>(s.data()), {static_cast<int64_t>(s.size())},
                                                torch::TensorOptions().dtype(torch::kFloat64));
    return view.to(like.device(), torch::kFloat64, /*non_blocking=*/false, /*copy=*/true);
  }

  // Samples as rows, the trailing dimensions flattened in the tensor's logical (row-major) order.
  static Batch to_host(const State& x) {
    const torch::Tensor h = x.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    Batch b(samples(x), dims(x));
    if (b.size() > 0) std::memcpy(b.data(), h.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(b.size()));
    return b;
  }

 private:
  // [N, 1, ..., 1] with as many ones as x has trailing dimensions.
  static std::vector<int64_t> row_factor_shape(const State& x) {
    std::vector<int64_t> shape(static_cast<std::size_t>(x.dim() > 0 ? x.dim() : 1), 1);
    shape[0] = samples(x);
    return shape;
  }
  // A per-sample scalar shaped to broadcast against x, in x's dtype.
  static torch::Tensor as_row_factor(const Scalars& s, const State& x) {
    return s.to(x.scalar_type()).reshape(row_factor_shape(x));
  }
  // Can `out` be written in place as a state shaped like x? It must exist with x's shape, dtype and
  // device, and be dense without self-overlap (an expanded view is not).
  static bool writable_as(const State& out, const State& x) {
    return out.defined() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
           out.device() == x.device() && out.is_non_overlapping_and_dense();
  }
  // May update() build its result directly in `out`? Its first kernel reads x and k_1 element by
  // element as it writes, so `out` may be exactly either of them but not partly overlap them; the
  // later terms are read after `out` has been written, so `out` must not touch them at all.
  static bool can_build_in(const State& out, const State& x, std::initializer_list<Term<State>> terms) {
    if (!writable_as(out, x)) return false;
    if (!exact_or_disjoint(out, x)) return false;
    bool first = true;
    for (const auto& t : terms) {
      if (first ? !exact_or_disjoint(out, t.value) : at::get_overlap_status(out, t.value) != at::MemOverlapStatus::No)
        return false;
      first = false;
    }
    return true;
  }
  static bool exact_or_disjoint(const State& out, const State& v) {
    const auto s = at::get_overlap_status(out, v);
    return s == at::MemOverlapStatus::No || s == at::MemOverlapStatus::Full;
  }
  static torch::Tensor mask_to_tensor(const Mask& keep) {
    torch::Tensor m = torch::empty({static_cast<int64_t>(keep.size())}, torch::TensorOptions().dtype(torch::kBool));
    bool* p = m.data_ptr<bool>();
    for (Index n = 0; n < keep.size(); ++n) p[n] = keep[n];
    return m;
  }
};

static_assert(BatchedState<torch::Tensor>);

}  // namespace diffode
