// Bitwise regression of the Brownian path: the committed reference fixtures (tests/data/reference)
// and every seeded SDE result depend on the exact bits BrownianPath returns, so a faster
// implementation must return the same doubles, not merely close ones. Two checks:
//  - point values recorded from the original scalar implementation (printed with %.17g, which
//    round-trips a double exactly) for dyadic, non-dyadic and end-point times, both key halves of a
//    64-bit seed, a sample index above 2^32 (the counter keeps its low 32 bits), a backward-built
//    path (t0 > t1), a shallow tree (max_depth 5, so the quadratic leaf is reached at level 5) and a
//    time a rounding error past the end;
//  - point(), increment() and increment_and_time_integral() on batches whose size is no multiple of
//    any block length, against at() (the per-element reference descent) element by element.
#include "solvers/brownian.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace diffode {
namespace {

struct Expected {
  double w, integral;
};

struct RecordedCase {
  std::uint64_t seed;
  double t0, t1;
  Index dims;
  int max_depth;
  Index first_sample;
  double t;
  std::vector<Expected> values;  // row-major (sample, dim)
};

// Generated with the original implementation (commit f292362: point() called at() per element),
// printed with %.17g. Fields: seed, t0, t1, dims, max_depth, first sample, t, then (w, integral)
// per element.
const std::vector<RecordedCase>& recorded() {
  static const std::vector<RecordedCase> cases = {
    {0ull, 0, 1, 1, 40, 0, 0.0,
     {{0, 0},
      {0, 0}}},
    {0ull, 0, 1, 1, 40, 0, 1.0,
     {{0.46430344880342067, 0.04997661239665932},
      {-0.24888634331838375, -0.80750873244724264}}},
    {0ull, 0, 1, 1, 40, 0, 0.5,
     {{-0.078196560452486297, 0.027707758040650156},
      {-1.4362637080933205, -0.35081579733652635}}},
    {0ull, 0, 1, 1, 40, 0, 0.375,
     {{-0.22945050538229575, 0.047596883327776632},
      {-1.2207905257322016, -0.19177986643807038}}},
    {0ull, 0, 1, 1, 40, 0, 0.1234567,
     {{0.28714454458970978, 0.032254564144947116},
      {-0.36916013662611008, -0.0018778044666850125}}},
    {0ull, 0, 1, 1, 40, 5, 1.0 / 3.0,
     {{-0.45216786534283243, -0.16382793117679217},
      {0.21175977970532683, -0.01059883483833182}}},
    {12345678901234ull, -1, 3, 3, 40, 1000, 2.71828,
     {{-1.2903301058702887, -2.2346845444413388},
      {-1.2598901113167262, -2.8472451619092443},
      {0.81058528132871066, 0.2562385956299475},
      {-1.5426271615477134, -1.6076304708604516},
      {2.0265275909004297, 3.9085820797602109},
      {2.7700990552250189, 6.8811316237355999}}},
    {12345678901234ull, -1, 3, 3, 40, 1000, -1.0,
     {{0, 0},
      {0, 0},
      {0, 0},
      {0, 0},
      {0, 0},
      {0, 0}}},
    {12345678901234ull, -1, 3, 3, 40, 1000, 3.0,
     {{-1.7233800580598233, -2.663935926495975},
      {-1.4946461781155833, -3.2851694695679825},
      {1.8062439804737618, 0.66134047332813806},
      {-1.412088649546773, -1.9852984571044632},
      {1.7793907414034784, 4.4711952280846479},
      {3.0911730122987167, 7.6727937464768585}}},
    {12345678901234ull, -1, 3, 3, 40, 1000, 1.0,
     {{-0.44146669347903628, -0.63221790885145379},
      {0.059667091477417222, -1.2482493579752769},
      {-0.27690649238340559, -0.87258734985405628},
      {-0.45535295305259832, -0.19970477175349105},
      {1.7347315287910736, 1.6643781191553872},
      {2.3180354265644807, 2.8343259369277827}}},
    {12345678901234ull, -1, 3, 3, 40, 4294967298, 0.25,
     {{0.22002895756534613, 0.35658931341835953},
      {0.4678440378958616, 0.46870872315489998},
      {-0.50286841557490092, -0.8315581195774816}}},
    {99ull, 1, 0, 2, 40, 3, 0.3,
     {{-0.23259671070184351, 0.0054342047996223577},
      {0.74745629232027744, 0.080734065245234091},
      {-0.92568550463500165, -0.18061781933773474},
      {0.34919243982837239, 0.023668523801354081}}},
    {99ull, 1, 0, 2, 40, 3, 0.75,
     {{-0.2885230182416661, -0.13495890038235553},
      {0.22816130236191548, 0.16653011672632839},
      {-2.0393746336069198, -0.65772512469099542},
      {-0.30421402488672078, -0.007050284320612301}}},
    {3ull, 0, 1, 2, 5, 0, 0.1234567,
     {{-0.25523461816272353, 0.0023318913302649855},
      {-0.020335169946861745, -0.0033030041891169998},
      {0.44578934541057069, 0.043134209058539368},
      {-0.15679405218230516, -0.022681798053992619}}},
    {3ull, 0, 1, 2, 5, 0, 0.8125,
     {{-0.47621888604359391, -0.13573093747882181},
      {1.2173467078542981, 0.48834833957394619},
      {0.49604002051602203, 0.22209837783020508},
      {-0.21189755832966117, -0.29666263189484643}}},
    {3ull, 0, 1, 2, 5, 0, 1.0 + 1e-14,
     {{-0.83881688065417948, -0.3116195375742421},
      {0.61440231780856913, 0.62194152780872414},
      {0.51786828869469959, 0.30272883507531717},
      {0.10334699287407016, -0.28262620628866825}}},
  };
  return cases;
}

TEST(BrownianRegression, PointValuesMatchTheRecordedBits) {
  for (const RecordedCase& c : recorded()) {
    const BrownianPath path({.seed = c.seed, .t0 = c.t0, .t1 = c.t1, .dims = c.dims, .max_depth = c.max_depth});
    const Index rows = static_cast<Index>(c.values.size()) / c.dims;
    Batch w(rows, c.dims), integral;
    path.point(c.t, c.first_sample, w, &integral);
    for (Index r = 0; r < rows; ++r) {
      for (Index d = 0; d < c.dims; ++d) {
        const Expected& e = c.values[r * c.dims + d];
        SCOPED_TRACE(testing::Message() << "seed " << c.seed << ", t " << c.t << ", sample " << c.first_sample + r
                                        << ", dim " << d);
        EXPECT_EQ(w(r, d), e.w);
        EXPECT_EQ(integral(r, d), e.integral);
        const BrownianPath::Point p = path.at(c.t, c.first_sample + r, d);
        EXPECT_EQ(p.w, e.w);
        EXPECT_EQ(p.integral, e.integral);
      }
    }
  }
}

// Every element of a batch query against its own scalar descent through at().
void expect_batch_matches_at(const BrownianPath& path, double t, Index first_sample, Index rows) {
  Batch w(rows, path.dims()), integral;
  path.point(t, first_sample, w, &integral);
  Batch w_only(rows, path.dims());
  path.point(t, first_sample, w_only, nullptr);
  for (Index r = 0; r < rows; ++r) {
    for (Index d = 0; d < path.dims(); ++d) {
      const BrownianPath::Point p = path.at(t, first_sample + r, d);
      ASSERT_EQ(w(r, d), p.w) << "t " << t << ", sample " << first_sample + r << ", dim " << d;
      ASSERT_EQ(integral(r, d), p.integral) << "t " << t << ", sample " << first_sample + r << ", dim " << d;
      ASSERT_EQ(w_only(r, d), p.w) << "t " << t << ", sample " << first_sample + r << ", dim " << d;
    }
  }
}

TEST(BrownianRegression, BatchPointEqualsScalarDescentElementByElement) {
  // 37 x 5 = 185 elements: no multiple of a power-of-two block, so a remainder block is exercised.
  const BrownianPath forward({.seed = 2024, .t0 = -0.5, .t1 = 2.0, .dims = 5});
  const BrownianPath backward({.seed = 0xDEADBEEFCAFEull, .t0 = 1.0, .t1 = 0.0, .dims = 3, .max_depth = 12});
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> times = {-0.5, 2.0, 0.75, -0.5 + 2.5 * 0.375, 0.0};
  for (int i = 0; i < 20; ++i) times.push_back(-0.5 + 2.5 * u(rng));
  for (const double t : times) expect_batch_matches_at(forward, t, 3, 37);
  for (int i = 0; i < 20; ++i) expect_batch_matches_at(backward, u(rng), 1000, 23);
  expect_batch_matches_at(backward, 0.5, 0, 1);
  expect_batch_matches_at(forward, 1.1, 0, 0);  // an empty batch is a no-op
}

TEST(BrownianRegression, IncrementsEqualDifferencesOfScalarDescents) {
  const BrownianPath path({.seed = 77, .t0 = 0.0, .t1 = 1.0, .dims = 4});
  const Index rows = 9, first = 40;
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 10; ++trial) {
    const double s = u(rng), t = u(rng);
    Batch dW(rows, 4), integral(rows, 4), dW_only(rows, 4), integral_only(rows, 4);
    path.increment_and_time_integral(s, t, first, dW, integral);
    path.increment(s, t, first, dW_only);
    path.time_integral(s, t, first, integral_only);
    for (Index r = 0; r < rows; ++r) {
      for (Index d = 0; d < 4; ++d) {
        const BrownianPath::Point ps = path.at(s, first + r, d), pt = path.at(t, first + r, d);
        // The same expressions as increments_between, so the comparison is bitwise.
        const double expected_dW = pt.w - ps.w;
        const double expected_integral = pt.integral - ps.integral - ps.w * (t - s);
        EXPECT_EQ(dW(r, d), expected_dW);
        EXPECT_EQ(dW_only(r, d), expected_dW);
        EXPECT_EQ(integral(r, d), expected_integral);
        EXPECT_EQ(integral_only(r, d), expected_integral);
      }
    }
  }
}

}  // namespace
}  // namespace diffode
