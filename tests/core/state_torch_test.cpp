// The LibTorch state gives the Eigen state's numbers.
//
// Every stepper is written once against StateOps<State>; docs/DESIGN.md §4.1 promises that it runs
// unchanged on a host Eigen batch and on a torch::Tensor on any device. Here each stepper integrates
// the same problem (written once as a template over the state) from the same initial batch, on the
// same Brownian path where it is an SDE stepper, on both states, and the results must agree to
// rounding: max |x_eigen - x_torch| <= 1e-13 * max(1, max |x|). The operations are first checked one
// by one, including the aliasing cases the steppers rely on (out = x, out = a later term), which a
// tensor, unlike an Eigen array, makes easy to get wrong. The torch state is used both as N x D and
// as N x C x H x W. Every test runs on the CPU and, when LibTorch sees a GPU, again on CUDA.
#include "core/state_torch.hpp"
#include "solvers/brownian.hpp"
#include "solvers/adaptive.hpp"
#include "solvers/integrate.hpp"
#include "solvers/ode/adams_bashforth.hpp"
#include "solvers/ode/dopri5.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"
#include "solvers/sde/euler_maruyama.hpp"
#include "solvers/sde/milstein.hpp"
#include "solvers/sde/sra1.hpp"
#include "solvers/sde/stochastic_heun.hpp"
#include "tests/support/convergence.hpp"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <string>
#include <vector>

namespace diffode {
namespace {

using Tensor = torch::Tensor;
using TOps = StateOps<Tensor>;
using BOps = StateOps<Batch>;

constexpr Index kSamples = 6;
constexpr Index kDims = 24;  // as N x 24, or N x 2 x 3 x 4
constexpr double kTolerance = 1e-13;

// dx/dt = -x + sin(t) + 0.3 cos(x), t per sample: nonlinear (so every stage sees a different
// slope), explicitly time-dependent (so a wrong stage time shows), written once for both states.
template <class State>
struct ForcedDecay {
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;
  void drift(const State& x, const Scalars& t, State& out) const {
    const Scalars forcing = t.sin();
    const State cos_x = x.cos();
    Ops::update(out, Ops::broadcast_rows(forcing, x), 1.0, {{-1.0, x}, {0.3, cos_x}});
  }
};

// The same drift with noise g(x, t) = 0.2 sin(x) + 0.1 (1 + cos t), diagonal or (one Brownian motion
// per sample) scalar; g' = 0.2 cos(x) for Milstein. The calculus is a label the contract checks: the
// test compares the two states, not the SDE's solution, so an Ito and a Stratonovich stepper may
// share it.
template <class State>
struct NoisyDecay : ForcedDecay<State> {
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;
  NoiseType noise = NoiseType::diagonal;
  Calculus calculus = Calculus::ito;
  ProblemTraits traits() const {
    return {.stochastic = true, .noise = noise, .calculus = calculus, .has_diffusion_derivative = true};
  }
  void diffusion(const State& x, const Scalars& t, State& out) const {
    const Scalars level = 0.1 * (1.0 + t.cos());
    const State sin_x = x.sin();
    Ops::update(out, StateOps<State>::broadcast_rows(level, x), 1.0, {{0.2, sin_x}});
  }
  void diffusion_derivative(const State& x, const Scalars& /*t*/, State& out) const { out = 0.2 * x.cos(); }
};

// Additive noise g(t) = 0.1 (1 + cos t) (SRA1's class).
template <class State>
struct AdditiveDecay : ForcedDecay<State> {
  using Ops = StateOps<State>;
  using Scalars = typename Ops::Scalars;
  ProblemTraits traits() const {
    return {.stochastic = true, .noise = NoiseType::additive, .calculus = Calculus::ito, .has_diffusion_derivative = true};
  }
  void diffusion(const State& x, const Scalars& t, State& out) const {
    const Scalars level = 0.1 * (1.0 + t.cos());
    out = StateOps<State>::broadcast_rows(level, x);
  }
  void diffusion_derivative(const State& x, const Scalars& /*t*/, State& out) const { out = Ops::zeros_like(x); }
};

Batch initial_batch(Index rows = kSamples, Index cols = kDims) {
  Batch x(rows, cols);
  for (Index n = 0; n < rows; ++n)
    for (Index d = 0; d < cols; ++d) x(n, d) = std::sin(1.3 * n + 0.7 * d + 0.1) * (1.0 + 0.1 * d);
  return x;
}

double max_abs(const Batch& x) { return x.abs().maxCoeff(); }

// max |a - b| within kTolerance relative to the size of the numbers.
::testing::AssertionResult same_numbers(const Batch& eigen, const Batch& torch_host) {
  if (eigen.rows() != torch_host.rows() || eigen.cols() != torch_host.cols())
    return ::testing::AssertionFailure() << "shapes differ: " << eigen.rows() << "x" << eigen.cols() << " vs "
                                         << torch_host.rows() << "x" << torch_host.cols();
  const double diff = (eigen - torch_host).abs().maxCoeff();
  const double bound = kTolerance * std::max(1.0, max_abs(eigen));
  if (diff <= bound) return ::testing::AssertionSuccess() << "max |diff| = " << diff;
  return ::testing::AssertionFailure() << "max |diff| = " << diff << " > " << bound;
}

// The device under test and the state's shape.
struct Layout {
  std::string name;
  bool cuda;
  std::vector<int64_t> trailing;  // a sample's shape
};

void PrintTo(const Layout& layout, std::ostream* os) { *os << layout.name; }

class StateTorch : public ::testing::TestWithParam<Layout> {
 protected:
  void SetUp() override {
    if (GetParam().cuda && !torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device";
  }
  torch::Device device() const { return GetParam().cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU); }
  // An uninitialised float64 state of `rows` samples with the layout's shape: the `like` argument.
  Tensor like(Index rows = kSamples) const {
    std::vector<int64_t> shape{rows};
    shape.insert(shape.end(), GetParam().trailing.begin(), GetParam().trailing.end());
    return torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat64).device(device()));
  }
  Tensor to_state(const Batch& b) const { return TOps::from_host(b, like(b.rows())); }
};

// ---------------------------------------------------------------- the operations, one by one

TEST_P(StateTorch, ShapeQueriesAndHostRoundTrip) {
  const Batch b = initial_batch();
  const Tensor x = to_state(b);
  EXPECT_EQ(TOps::samples(x), kSamples);
  EXPECT_EQ(TOps::dims(x), kDims);
  EXPECT_EQ(x.sizes().vec(), like().sizes().vec());
  EXPECT_EQ(x.device(), device());
  EXPECT_EQ(x.scalar_type(), torch::kFloat64);
  EXPECT_TRUE((TOps::to_host(x) == b).all());  // a copy, bit for bit
}

TEST_P(StateTorch, FromHostCopiesAndChecksTheShape) {
  Batch b = initial_batch();
  const Tensor x = to_state(b);
  b(0, 0) = 1e6;  // the state must not see the host buffer change
  EXPECT_NE(TOps::to_host(x)(0, 0), 1e6);
  EXPECT_THROW(TOps::from_host(initial_batch(kSamples, kDims - 1), like()), std::invalid_argument);
  EXPECT_EQ(TOps::from_host(Batch(0, kDims), like()).numel(), 0);  // a noise quantity nobody asked for
}

TEST_P(StateTorch, CloneIsDeepAndAssignCopies) {
  const Tensor x = to_state(initial_batch());
  Tensor y = TOps::clone(x);
  y.mul_(2.0);
  EXPECT_TRUE((TOps::to_host(x) == initial_batch()).all());
  Tensor z = TOps::zeros_like(x);
  TOps::assign(z, x);
  z.add_(1.0);
  EXPECT_TRUE((TOps::to_host(x) == initial_batch()).all());
  Tensor undefined;
  TOps::assign(undefined, x);  // no buffer yet: one is made
  EXPECT_TRUE((TOps::to_host(undefined) == initial_batch()).all());
  EXPECT_FALSE(undefined.is_same(x));
  EXPECT_TRUE((TOps::to_host(TOps::zeros_like(x)) == 0.0).all());
}

TEST_P(StateTorch, FillIsFloat64OnTheStatesDevice) {
  const Tensor t = TOps::fill(like(), 0.25);
  EXPECT_EQ(t.sizes().vec(), (std::vector<int64_t>{kSamples}));
  EXPECT_EQ(t.device(), device());
  EXPECT_EQ(t.scalar_type(), torch::kFloat64);
  EXPECT_EQ(t.cpu().eq(0.25).all().item<bool>(), true);
}

TEST_P(StateTorch, BroadcastRowsRepeatsEachSamplesScalar) {
  Batch expected(kSamples, kDims);
  PerSample s(kSamples);
  for (Index n = 0; n < kSamples; ++n) {
    s[n] = 0.5 * n - 1.0;
    expected.row(n).setConstant(s[n]);
  }
  const Tensor host_s = torch::from_blob(s.data(), {kSamples}, torch::kFloat64).to(device());
  EXPECT_TRUE((TOps::to_host(TOps::broadcast_rows(host_s, like())) == expected).all());
}

// Every aliasing pattern the steppers use: a fresh out, out = x, out = the first term, out = a later
// term; with one h and with an h per sample; compared with the Eigen algebra.
TEST_P(StateTorch, UpdateMatchesEigenUnderEveryAliasing) {
  const Batch x = initial_batch();
  const Batch k1 = x.cos(), k2 = x.sin() * 0.5, k3 = x.square() - 1.0;
  PerSample h(kSamples);
  for (Index n = 0; n < kSamples; ++n) h[n] = 0.1 * (n + 1) * (n % 2 ? -1.0 : 1.0);
  const Tensor th = torch::from_blob(h.data(), {kSamples}, torch::kFloat64).to(device());
  const Tensor tx = to_state(x), tk1 = to_state(k1), tk2 = to_state(k2), tk3 = to_state(k3);

  enum class Alias { none, x, first, later };
  for (const bool per_sample : {false, true}) {
    for (const Alias alias : {Alias::none, Alias::x, Alias::first, Alias::later}) {
      for (const int terms : {1, 3}) {
        if (alias == Alias::later && terms == 1) continue;
        SCOPED_TRACE(::testing::Message() << "per_sample " << per_sample << ", alias " << static_cast<int>(alias)
                                          << ", terms " << terms);
        // Eigen: the reference.
        Batch bx = x, bk1 = k1, bk2 = k2, bk3 = k3, bout;
        Batch* b_out = alias == Alias::x ? &bx : alias == Alias::first ? &bk1 : alias == Alias::later ? &bk3 : &bout;
        // Torch: fresh copies, so an in-place write cannot leak into the next case.
        Tensor cx = tx.clone(), ck1 = tk1.clone(), ck2 = tk2.clone(), ck3 = tk3.clone(), cout;
        Tensor* t_out = alias == Alias::x ? &cx : alias == Alias::first ? &ck1 : alias == Alias::later ? &ck3 : &cout;
        const auto run = [&](auto& out, const auto& xs, const auto& a, const auto& b, const auto& c, const auto& step) {
          using S = std::decay_t<decltype(xs)>;
          if (terms == 1)
            StateOps<S>::update(out, xs, step, {{0.7, a}});
          else
            StateOps<S>::update(out, xs, step, {{0.7, a}, {-1.3, b}, {0.25, c}});
        };
        if (per_sample) {
          run(*b_out, bx, bk1, bk2, bk3, h);
          run(*t_out, cx, ck1, ck2, ck3, th);
        } else {
          run(*b_out, bx, bk1, bk2, bk3, 0.37);
          run(*t_out, cx, ck1, ck2, ck3, 0.37);
        }
        EXPECT_TRUE(same_numbers(*b_out, TOps::to_host(*t_out)));
        // Inputs that were not the output are untouched.
        if (alias != Alias::x) {
          EXPECT_TRUE((TOps::to_host(cx) == x).all());
        }
        if (alias != Alias::later) {
          EXPECT_TRUE((TOps::to_host(ck3) == k3).all());
        }
      }
    }
  }
}

// scale, scale_rows and multiply, into a fresh out and in place (out = x), as the diffusion
// samplers use them.
TEST_P(StateTorch, ScaleAndMultiplyMatchEigen) {
  const Batch x = initial_batch(), y = x.cos();
  PerSample c(kSamples);
  for (Index n = 0; n < kSamples; ++n) c[n] = 1.5 - 0.4 * n;
  const Tensor tc = torch::from_blob(c.data(), {kSamples}, torch::kFloat64).to(device());
  for (const bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "fresh out");
    Batch b1 = x, b2 = x, b3 = x, bo1, bo2, bo3;
    Tensor t1 = to_state(x), t2 = to_state(x), t3 = to_state(x), to1, to2, to3;
    BOps::scale(in_place ? b1 : bo1, -0.3, b1);
    TOps::scale(in_place ? t1 : to1, -0.3, t1);
    BOps::scale_rows(in_place ? b2 : bo2, c, b2);
    TOps::scale_rows(in_place ? t2 : to2, tc, t2);
    BOps::multiply(in_place ? b3 : bo3, b3, y);
    TOps::multiply(in_place ? t3 : to3, t3, to_state(y));
    EXPECT_TRUE(same_numbers(in_place ? b1 : bo1, TOps::to_host(in_place ? t1 : to1)));
    EXPECT_TRUE(same_numbers(in_place ? b2 : bo2, TOps::to_host(in_place ? t2 : to2)));
    EXPECT_TRUE(same_numbers(in_place ? b3 : bo3, TOps::to_host(in_place ? t3 : to3)));
    if (!in_place) {
      EXPECT_TRUE((TOps::to_host(t1) == x).all());  // the input is untouched
      EXPECT_TRUE((TOps::to_host(t2) == x).all());
    }
  }
}

TEST_P(StateTorch, AddProductMatchesEigen) {
  const Batch x = initial_batch(), a = x.cos(), b = x.sin() - 0.2;
  Batch bx = x;
  BOps::add_product(bx, -0.4, a, b);
  Tensor tx = to_state(x);
  TOps::add_product(tx, -0.4, to_state(a), to_state(b));
  EXPECT_TRUE(same_numbers(bx, TOps::to_host(tx)));
}

TEST_P(StateTorch, ErrorRatioMatchesEigen) {
  const Batch x0 = initial_batch(), x1 = x0 * 1.01 + 0.003, err = (x0 * 7.0).sin() * 1e-5;
  const PerSample expected = BOps::error_ratio(err, x0, x1, 1e-4, 1e-6);
  const Tensor got = TOps::error_ratio(to_state(err), to_state(x0), to_state(x1), 1e-4, 1e-6);
  ASSERT_EQ(got.sizes().vec(), (std::vector<int64_t>{kSamples}));
  EXPECT_EQ(got.scalar_type(), torch::kFloat64);
  EXPECT_EQ(got.device(), device());
  const Tensor host = got.cpu();
  for (Index n = 0; n < kSamples; ++n) EXPECT_NEAR(host[n].item<double>(), expected[n], kTolerance * expected[n]);
}

TEST_P(StateTorch, SelectRowsWithHostAndDeviceMasks) {
  const Batch x = initial_batch(), candidate = -initial_batch() - 5.0;
  TOps::Mask keep(kSamples);
  keep << true, false, false, true, true, false;
  Batch expected = x;
  BOps::select_rows(expected, keep, candidate);

  Tensor tx = to_state(x);
  TOps::select_rows(tx, keep, to_state(candidate));
  EXPECT_TRUE((TOps::to_host(tx) == expected).all());

  // A comparison of per-sample scalars gives a device bool tensor: the adaptive driver's case.
  PerSample ratio(kSamples);
  ratio << 0.5, 2.0, 1.5, 0.9, 1.0, 3.0;  // <= 1 exactly where keep is true
  const Tensor tratio = torch::from_blob(ratio.data(), {kSamples}, torch::kFloat64).to(device());
  Tensor ty = to_state(x);
  TOps::select_rows(ty, tratio <= 1.0, to_state(candidate));
  EXPECT_TRUE((TOps::to_host(ty) == expected).all());
}

TEST_P(StateTorch, FiniteRowsFindsTheBadSample) {
  Batch x = initial_batch();
  x(2, 5) = std::nan("");
  x(4, kDims - 1) = -std::numeric_limits<double>::infinity();
  const TOps::Mask finite = TOps::finite_rows(to_state(x));
  const BOps::Mask expected = BOps::finite_rows(x);
  ASSERT_EQ(finite.size(), kSamples);
  for (Index n = 0; n < kSamples; ++n) EXPECT_EQ(finite[n], expected[n]) << "sample " << n;
  EXPECT_FALSE(finite[2]);
  EXPECT_FALSE(finite[4]);
}

// The driver's failure report works on the torch state too.
TEST_P(StateTorch, DriverReportsTheNonFiniteSample) {
  struct BlowUp {  // dx/dt = x^2, times 1e300 in sample 2 alone: that sample overflows, the others do not
    void drift(const Tensor& x, const Tensor& /*t*/, Tensor& out) const {
      out = x.square();
      out.select(0, 2).mul_(1e300);
    }
  };
  Tensor x = to_state(Batch::Ones(kSamples, kDims));
  Euler<Tensor> euler;
  const auto grid = testing::uniform_grid(0.0, 1.0, 10);
  const auto stats = integrate(euler, BlowUp{}, grid, x);
  EXPECT_TRUE(stats.failed);
  EXPECT_NE(stats.failure.find("sample 2"), std::string::npos) << stats.failure;
}

// Arithmetic stays in the state's dtype: a float32 state stays float32 through every operation.
TEST_P(StateTorch, Float32StateStaysFloat32) {
  const Tensor x = to_state(initial_batch()).to(torch::kFloat32);
  Tensor out;
  TOps::update(out, x, 0.1, {{1.0, x}, {2.0, x}});
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  TOps::update(out, x, TOps::fill(x, 0.1), {{1.0, x}});
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  TOps::add_product(out, 1.0, x, x);
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  EXPECT_EQ(TOps::broadcast_rows(TOps::fill(x, 1.0), x).scalar_type(), torch::kFloat32);
  EXPECT_EQ(TOps::from_host(initial_batch(), x).scalar_type(), torch::kFloat32);
  EXPECT_EQ(TOps::error_ratio(x, x, x, 1e-3, 1e-3).scalar_type(), torch::kFloat64);
}

// ---------------------------------------------------------------- every stepper, both states

struct Solved {
  Batch x;
  Index nfe;
};

template <template <class> class Stepper, class State, template <class> class Problem>
Solved solve_ode(const State& x0, const std::vector<double>& grid) {
  Stepper<State> stepper;
  State x = StateOps<State>::clone(x0);
  const auto stats = integrate(stepper, Problem<State>{}, grid, x);
  EXPECT_FALSE(stats.failed) << stats.failure;
  // At least the declared evaluations per step (first-same-as-last steppers add one at the start).
  EXPECT_GE(stats.nfe, static_cast<Index>(grid.size() - 1) * Stepper<State>::traits.evaluations_per_step);
  return {StateOps<State>::to_host(x), stats.nfe};
}

template <template <class> class Stepper>
void expect_same_ode(const Tensor& like) {
  SCOPED_TRACE(std::string(Stepper<Batch>::traits.name));
  const Batch x0 = initial_batch();
  for (const auto& grid : {testing::uniform_grid(0.0, 2.0, 40), testing::uniform_grid(2.0, 0.5, 25)}) {
    const Solved eigen = solve_ode<Stepper, Batch, ForcedDecay>(x0, grid);
    const Solved torch_solved = solve_ode<Stepper, Tensor, ForcedDecay>(TOps::from_host(x0, like), grid);
    EXPECT_TRUE(same_numbers(eigen.x, torch_solved.x));
    EXPECT_EQ(eigen.nfe, torch_solved.nfe);
    EXPECT_GT((eigen.x - x0).abs().maxCoeff(), 0.1);  // the solution moved: the comparison has teeth
  }
}

template <class S>
using AdamsBashforth2 = AdamsBashforth<S, 2>;
template <class S>
using AdamsBashforth4 = AdamsBashforth<S, 4>;

TEST_P(StateTorch, OdeSteppersGiveTheEigenNumbers) {
  expect_same_ode<Euler>(like());
  expect_same_ode<Heun>(like());
  expect_same_ode<Midpoint>(like());
  expect_same_ode<Rk4>(like());
  expect_same_ode<Dopri5>(like());
  expect_same_ode<AdamsBashforth2>(like());
  expect_same_ode<AdamsBashforth4>(like());
}

// The adaptive driver with per-sample and with batch error control: the same accepted and rejected
// steps per sample, the same end times, the same numbers.
TEST_P(StateTorch, AdaptiveDopri5GivesTheEigenNumbers) {
  const Batch x0 = initial_batch();
  for (const ErrorNorm norm : {ErrorNorm::per_sample, ErrorNorm::batch}) {
    // Backward in time the problem expands (df/dx <= -0.7 forward): a short span keeps rounding
    // differences from being amplified past the tolerance.
    for (const auto& [t0, t1] : {std::pair{0.0, 3.0}, std::pair{3.0, 1.5}}) {
      SCOPED_TRACE(::testing::Message() << (norm == ErrorNorm::batch ? "batch" : "per-sample") << " norm, " << t0
                                        << " -> " << t1);
      const AdaptiveOptions options{.rtol = 1e-7, .atol = 1e-9, .norm = norm};
      Dopri5<Batch> be;
      Batch bx = x0;
      const auto bstats = integrate_adaptive(be, ForcedDecay<Batch>{}, t0, t1, bx, options);
      Dopri5<Tensor> te;
      Tensor tx = TOps::from_host(x0, like());
      const auto tstats = integrate_adaptive(te, ForcedDecay<Tensor>{}, t0, t1, tx, options);
      ASSERT_FALSE(bstats.failed) << bstats.failure;
      ASSERT_FALSE(tstats.failed) << tstats.failure;
      EXPECT_TRUE(same_numbers(bx, TOps::to_host(tx)));
      EXPECT_EQ(bstats.accepted, tstats.accepted);
      EXPECT_EQ(bstats.rejected_per_sample, tstats.rejected_per_sample);
      EXPECT_EQ(bstats.t_reached, tstats.t_reached);
      EXPECT_EQ(bstats.nfe, tstats.nfe);
      EXPECT_GT(bstats.steps, 10);  // the controller really worked
    }
  }
}

// Dopri5's trial step with a time and a step size per sample, its error estimate and error ratio,
// and a partial accept, as the per-sample adaptive driver uses them.
TEST_P(StateTorch, Dopri5PerSampleAttemptGivesTheEigenNumbers) {
  const Batch x0 = initial_batch();
  PerSample t(kSamples), h(kSamples);
  for (Index n = 0; n < kSamples; ++n) {
    t[n] = 0.1 * n;
    h[n] = n == 3 ? 0.0 : 0.05 + 0.07 * n;  // a sample that is already done stays put
  }
  const Tensor tt = torch::from_blob(t.data(), {kSamples}, torch::kFloat64).to(device());
  const Tensor th = torch::from_blob(h.data(), {kSamples}, torch::kFloat64).to(device());

  Dopri5<Batch> be;
  Batch bnew, berr;
  Dopri5<Tensor> te;
  Tensor tnew, terr;
  const Tensor tx0 = TOps::from_host(x0, like());
  be.attempt(ForcedDecay<Batch>{}, t, h, x0, bnew, berr);
  te.attempt(ForcedDecay<Tensor>{}, tt, th, tx0, tnew, terr);
  EXPECT_TRUE(same_numbers(bnew, TOps::to_host(tnew)));
  EXPECT_TRUE(same_numbers(berr, TOps::to_host(terr)));
  EXPECT_TRUE((TOps::to_host(tnew).row(3) == x0.row(3)).all());
  EXPECT_GT(berr.abs().maxCoeff(), 1e-10);  // a real error estimate, not zero

  // The error estimate is a sum of O(h |f|) terms cancelling to O(h^5): its last digits are rounding,
  // so the error ratio is compared on the same (torch) inputs, where it must agree to rounding.
  const Batch terr_host = TOps::to_host(terr), tnew_host = TOps::to_host(tnew);
  const PerSample bratio = BOps::error_ratio(terr_host, x0, tnew_host, 1e-6, 1e-9);
  const Tensor host_ratio = TOps::error_ratio(terr, tx0, tnew, 1e-6, 1e-9).cpu();
  for (Index n = 0; n < kSamples; ++n)
    EXPECT_NEAR(host_ratio[n].item<double>(), bratio[n], kTolerance * std::max(1.0, bratio[n])) << "sample " << n;

  // Accept some samples (the device-mask path on the torch side), then a second attempt reuses
  // their last stage (first same as last): the same numbers again.
  const BOps::Mask taken = bratio <= bratio.mean();
  ASSERT_TRUE(taken.any() && !taken.all());
  be.accept(taken);
  te.accept(torch::from_blob(const_cast<bool*>(taken.data()), {kSamples}, torch::kBool).to(device()));
  Batch bx = x0;
  BOps::select_rows(bx, taken, bnew);
  Tensor tx = TOps::clone(tx0);
  TOps::select_rows(tx, taken, tnew);
  const PerSample t2 = t + taken.cast<double>() * h;
  const Tensor tt2 = torch::from_blob(const_cast<double*>(t2.data()), {kSamples}, torch::kFloat64).to(device());
  be.attempt(ForcedDecay<Batch>{}, t2, h, bx, bnew, berr);
  te.attempt(ForcedDecay<Tensor>{}, tt2, th, tx, tnew, terr);
  EXPECT_TRUE(same_numbers(bnew, TOps::to_host(tnew)));
  EXPECT_TRUE(same_numbers(berr, TOps::to_host(terr)));
}

template <template <class> class Stepper, class State, class Problem>
Batch solve_sde(const Problem& problem, const State& x0, const std::vector<double>& grid, const BrownianPath& path) {
  Stepper<State> stepper;
  State x = StateOps<State>::clone(x0);
  const auto stats = integrate(stepper, problem, grid, x, path, /*first_sample=*/3);
  EXPECT_FALSE(stats.failed) << stats.failure;
  return StateOps<State>::to_host(x);
}

template <template <class> class Stepper, template <class> class Problem>
void expect_same_sde(const Tensor& like, NoiseType noise, Calculus calculus = Calculus::ito) {
  SCOPED_TRACE(std::string(Stepper<Batch>::traits.name) + ", " + std::string(to_string(noise)) + " noise");
  Problem<Batch> eigen_problem;
  Problem<Tensor> torch_problem;
  if constexpr (requires { eigen_problem.noise; }) {
    eigen_problem.noise = torch_problem.noise = noise;
    eigen_problem.calculus = torch_problem.calculus = calculus;
  }
  const Batch x0 = initial_batch();
  const Index path_dims = noise == NoiseType::scalar ? 1 : kDims;
  for (const auto& [t0, t1] : {std::pair{0.0, 1.5}, std::pair{1.5, 0.25}}) {
    const BrownianPath path({.seed = 2024, .t0 = t0, .t1 = t1, .dims = path_dims});
    const auto grid = testing::uniform_grid(t0, t1, 30);
    const Batch eigen = solve_sde<Stepper, Batch>(eigen_problem, x0, grid, path);
    const Batch torch_host = solve_sde<Stepper, Tensor>(torch_problem, TOps::from_host(x0, like), grid, path);
    EXPECT_TRUE(same_numbers(eigen, torch_host));
    EXPECT_GT((eigen - x0).abs().maxCoeff(), 0.1);
  }
}

TEST_P(StateTorch, SdeSteppersGiveTheEigenNumbersOnOneBrownianPath) {
  for (const NoiseType noise : {NoiseType::diagonal, NoiseType::scalar}) {
    expect_same_sde<EulerMaruyama, NoisyDecay>(like(), noise);
    expect_same_sde<StochasticHeun, NoisyDecay>(like(), noise, Calculus::stratonovich);
  }
  expect_same_sde<Milstein, NoisyDecay>(like(), NoiseType::diagonal);
  expect_same_sde<EulerMaruyama, AdditiveDecay>(like(), NoiseType::additive);
  expect_same_sde<Milstein, AdditiveDecay>(like(), NoiseType::additive);
  expect_same_sde<Sra1, AdditiveDecay>(like(), NoiseType::additive);
}

INSTANTIATE_TEST_SUITE_P(Layouts, StateTorch,
                         ::testing::Values(Layout{"cpu_flat", false, {kDims}}, Layout{"cpu_nchw", false, {2, 3, 4}},
                                           Layout{"cuda_flat", true, {kDims}}, Layout{"cuda_nchw", true, {2, 3, 4}}),
                         [](const ::testing::TestParamInfo<Layout>& info) { return info.param.name; });

}  // namespace
}  // namespace diffode
