// The Frechet distance module (experiments/run/frechet.hpp): agreement with pytorch-fid's formula,
// the pairwise merge against one pass, the decay for identical laws, singular covariances, the
// statistics files and the `diffode fd` command's strict errors.
#include "experiments/run/frechet.hpp"

#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/metrics.hpp"
#include "tests/support/temp_folder.hpp"

#include <Eigen/Dense>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

namespace diffode {
namespace {

// tools/frechet_reference.py's data, rebuilt bit for bit: splitmix64 uniforms (53-bit mantissas),
// rows (2u - 1) A + b with A and b from integer formulas.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Batch make_set(Index n, Index d, std::uint64_t seed, double scale, double shift) {
  std::uint64_t state = seed;
  Eigen::MatrixXd u(n, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < d; ++j) u(i, j) = static_cast<double>(splitmix64(state) >> 11) * 0x1p-53;
  Eigen::MatrixXd a(d, d);
  for (Index i = 0; i < d; ++i)
    for (Index j = 0; j < d; ++j)
      a(i, j) = scale * (static_cast<double>(((i + 1) * (j + 3)) % 7 - 3) / 10.0 + (i == j ? 1.5 : 0.0));
  Eigen::RowVectorXd b(d);
  for (Index j = 0; j < d; ++j) b[j] = shift * static_cast<double>(j % 5);
  Eigen::MatrixXd x = (2.0 * u.array() - 1.0).matrix() * a;
  x.rowwise() += b;
  return x.array();
}

// Printed by `/usr/bin/python3 tools/frechet_reference.py` (numpy 1.24.2, scipy 1.10.1): dims,
// rows of A, rows of B, pytorch-fid's distance, and two entries of A's covariance (np.cov).
struct Reference {
  Index dims, rows_a, rows_b;
  double distance, cov_00, cov_last_0;
};
constexpr Reference kReferences[] = {
    {2, 500, 700, 0.037521369442608865, 0.7778155812039103, 0.24858018181406666},
    {16, 3000, 2000, 0.49455627510393185, 0.9508154701425177, 0.13661134851559556},
    {64, 4000, 5000, 2.387416979195791, 1.574067842868113, 0.8069886466994761},
};

TEST(Frechet, AgreesWithPytorchFidFormula) {
  for (const Reference& r : kReferences) {
    SCOPED_TRACE(r.dims);
    const Batch x = make_set(r.rows_a, r.dims, 1, 1.0, 0.1), y = make_set(r.rows_b, r.dims, 2, 1.1, 0.15);
    const MomentAccumulator a = block_moments(x, 256, 2), b = block_moments(y, 256, 2);
    const Eigen::MatrixXd ca = a.covariance();
    EXPECT_NEAR(ca(0, 0), r.cov_00, 1e-12 * std::abs(r.cov_00));
    EXPECT_NEAR(ca(r.dims - 1, 0), r.cov_last_0, 1e-12 * std::abs(r.cov_00));
    const double fd = frechet_distance(a.mean(), ca, b.mean(), b.covariance());
    EXPECT_NEAR(fd, r.distance, 1e-6 * r.distance);
  }
}

// Rows far from the origin, where a raw second moment would cancel.
Batch offset_rows(Index n, Index d, std::uint64_t seed) {
  Batch x = make_set(n, d, seed, 1.0, 0.3);
  return x + 1e3;
}

TEST(Frechet, MergedBlocksEqualOnePass) {
  const Batch x = offset_rows(1001, 5, 7);
  MomentAccumulator one;
  one.add(x);  // a single block: two-pass moments of all rows
  const Eigen::MatrixXd two_pass = sample_covariance(x);
  const double scale = two_pass.norm();
  EXPECT_LT((one.covariance() - two_pass).norm(), 1e-12 * scale);
  for (const Index block : {1, 7, 64, 1000}) {
    SCOPED_TRACE(block);
    for (const int threads : {1, 3}) {
      const MomentAccumulator m = block_moments(x, block, threads);
      EXPECT_EQ(m.count(), 1001);
      EXPECT_LT((m.mean() - one.mean()).norm(), 1e-13 * one.mean().norm());
      EXPECT_LT((m.covariance() - one.covariance()).norm(), 1e-11 * scale);
    }
  }
  // As ranks would: three uneven parts accumulated apart, merged in another order.
  MomentAccumulator p1, p2, p3;
  p1.add(x.topRows(10));
  p2.add(x.middleRows(10, 600));
  p3.add(x.bottomRows(391));
  p3.merge(p1);
  p3.merge(p2);
  EXPECT_LT((p3.covariance() - one.covariance()).norm(), 1e-11 * scale);
  // A fixed block size gives the same bits for any thread count.
  const MomentAccumulator t1 = block_moments(x, 64, 1), t4 = block_moments(x, 64, 4);
  EXPECT_TRUE((t1.mean().array() == t4.mean().array()).all());
  EXPECT_TRUE((t1.comoment().array() == t4.comoment().array()).all());
}

// Draws of N(0, C) with a fixed correlated C, rows first .. first + n - 1 of a stream.
Batch gaussian_rows(Index n, Index d, std::uint64_t seed) {
  const GaussianMixture standard(Eigen::ArrayXd::Ones(1), Batch::Zero(1, d), Batch::Ones(1, d));
  Eigen::MatrixXd l = Eigen::MatrixXd::Identity(d, d);
  for (Index i = 1; i < d; ++i) l(i, i - 1) = 0.5;
  return (standard.sample(n, seed).matrix() * l.transpose()).array();
}

TEST(Frechet, IdenticalLawsDecayAsOneOverN) {
  // E FD of two independent n-samples of one law: 2 tr(C) / n from the means plus an O(1/n) bias
  // of the covariance term, so FD ~ c / n.
  std::vector<double> ns, fds;
  for (const Index n : {250, 1000, 4000, 16000}) {
    double mean_fd = 0.0;
    constexpr int kRepeats = 12;
    for (int rep = 0; rep < kRepeats; ++rep) {
      const MomentAccumulator a = block_moments(gaussian_rows(n, 4, 100 + 2 * rep), 512), b = block_moments(gaussian_rows(n, 4, 101 + 2 * rep), 512);
      mean_fd += frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance()) / kRepeats;
    }
    ns.push_back(static_cast<double>(n));
    fds.push_back(mean_fd);
  }
  const OrderFit fit = fit_order(ns, fds);
  EXPECT_NEAR(fit.order, 1.0, 0.15) << "FD at n = 250 .. 16000: " << fds[0] << " .. " << fds[3];
}

TEST(Frechet, SingularCovariancesAreFinite) {
  // 12 samples in 32 dimensions: both covariances have rank <= 11.
  const Batch x = make_set(12, 32, 3, 1.0, 0.0), y = make_set(15, 32, 4, 1.3, 0.2);
  const MomentAccumulator a = block_moments(x, 5), b = block_moments(y, 5);
  const double ab = frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance());
  const double ba = frechet_distance(b.mean(), b.covariance(), a.mean(), a.covariance());
  ASSERT_TRUE(std::isfinite(ab));
  EXPECT_GT(ab, 0.0);
  EXPECT_NEAR(ab, ba, 1e-9 * ab);  // the distance is symmetric; its computation is not
  // The same singular covariance, means shifted by m: exactly |m|^2 (the trace terms cancel).
  Batch shifted = x;
  shifted.col(0) += 2.0;
  shifted.col(5) -= 1.0;
  const MomentAccumulator s = block_moments(shifted, 5);
  // Up to rounding, which the square roots amplify where eigenvalues vanish: each of the ~21 null
  // directions contributes up to sqrt(eps |S|) ~ 1e-8 |S|^(1/2) (documented in frechet.hpp).
  const double trace = a.covariance().trace();
  EXPECT_NEAR(frechet_distance(a.mean(), a.covariance(), s.mean(), s.covariance()), 5.0, 32 * 2 * std::sqrt(2.2e-16 * trace) * std::sqrt(trace));
}

class FdCommand : public testing::TempFolderTest {
 protected:
  std::string write_samples(const std::string& name, const Batch& x, const std::string& dataset = "samples") {
    const auto path = dir_ / name;
    Hdf5File h5(path, Hdf5File::Mode::create);
    h5.write_matrix(dataset, x);
    return path.string();
  }
};

TEST_F(FdCommand, StatisticsFilesReproduceTheDistance) {
  const Batch x = make_set(700, 3, 5, 1.0, 0.1), y = make_set(900, 3, 6, 1.2, 0.0);
  const std::string a = write_samples("a.h5", x), b = write_samples("b.h5", y);
  const std::string sa = (dir_ / "a_stats.h5").string(), sb = (dir_ / "b_stats.h5").string();
  FdOptions o;
  o.inputs = {a, b};
  o.save_stats = {sa, sb};
  o.block_rows = 128;
  ASSERT_EQ(run_fd_command(o), 0);
  const FrechetStatistics from_a = raw_statistics(a, "samples", 128);
  const FrechetStatistics cached = read_statistics(Hdf5File(sa, Hdf5File::Mode::read));
  EXPECT_EQ(cached.count, 700);
  EXPECT_EQ(cached.feature, "raw");
  EXPECT_EQ(cached.feature_hash, "none");
  EXPECT_TRUE((cached.covariance.array() == from_a.covariance.array()).all());
  const double direct = frechet_distance(from_a, raw_statistics(b, "samples", 128));
  EXPECT_EQ(frechet_distance(cached, read_statistics(Hdf5File(sb, Hdf5File::Mode::read))), direct);
  // Streaming from disk equals the moments of the rows in memory, block for block.
  const MomentAccumulator in_memory = block_moments(x, 128);
  EXPECT_TRUE((in_memory.covariance().array() == from_a.covariance.array()).all());
  // A cached file and a sample file mix.
  FdOptions mixed;
  mixed.inputs = {sa, b};
  EXPECT_EQ(run_fd_command(mixed), 0);
}

TEST_F(FdCommand, BadInputIsExitTwo) {
  const std::string a = write_samples("a.h5", make_set(50, 3, 5, 1.0, 0.1));
  const std::string other = write_samples("other.h5", make_set(50, 3, 5, 1.0, 0.1), "x");
  const std::string wide = write_samples("wide.h5", make_set(50, 4, 5, 1.0, 0.1));
  const std::string one_row = write_samples("one.h5", make_set(1, 3, 5, 1.0, 0.1));
  Batch bad = make_set(50, 3, 5, 1.0, 0.1);
  bad(7, 1) = std::nan("");
  const std::string nan_file = write_samples("nan.h5", bad);
  const auto fd = [](std::vector<std::string> inputs, std::string dataset = "") {
    FdOptions o;
    o.inputs = std::move(inputs);
    if (!dataset.empty()) o.dataset = dataset, o.dataset_given = true;
    return run_fd_command(o);
  };
  EXPECT_EQ(fd({a, (dir_ / "missing.h5").string()}), 2);
  EXPECT_EQ(fd({a, other}), 2);          // no dataset 'samples'
  EXPECT_EQ(fd({other, other}, "x"), 0);  // named with --dataset
  EXPECT_EQ(fd({a, wide}), 2);           // 3 and 4 dimensions
  EXPECT_EQ(fd({a, one_row}), 2);        // one row: no covariance
  EXPECT_EQ(fd({a, nan_file}), 2);
  EXPECT_EQ(fd({a}), 2);  // nothing to do
  // Statistics of another feature are not comparable.
  FrechetStatistics s = raw_statistics(a, "samples");
  s.feature = "classifier";
  const auto path = dir_ / "other_feature.h5";
  {
    Hdf5File h5(path, Hdf5File::Mode::create);
    write_statistics(h5, s);
  }
  EXPECT_EQ(fd({a, path.string()}), 2);
  EXPECT_EQ(fd({path.string(), path.string()}, "samples"), 2);  // --dataset with a statistics file
  FdOptions o;
  o.inputs = {a, a};
  o.save_stats = {(dir_ / "only_one.h5").string()};
  EXPECT_EQ(run_fd_command(o), 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "only_one.h5"));
}

}  // namespace
}  // namespace diffode
