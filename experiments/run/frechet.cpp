#include "experiments/run/frechet.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/parallel.hpp"

#include <Eigen/Dense>
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace diffode {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr const char* kContent = "frechet_statistics";

}  // namespace

MomentAccumulator::MomentAccumulator(Index dims) : mean_(Eigen::VectorXd::Zero(dims)), comoment_(Eigen::MatrixXd::Zero(dims, dims)) {}

Eigen::MatrixXd MomentAccumulator::covariance() const {
  if (count_ < 2) throw std::invalid_argument(fmt::format("covariance: needs >= 2 samples, got {}", count_));
  return comoment_ / static_cast<double>(count_ - 1);
}

void MomentAccumulator::add(const Batch& rows) {
  if (rows.rows() == 0) return;
  if (count_ == 0 && dims() != rows.cols()) *this = MomentAccumulator(rows.cols());
  if (rows.cols() != dims())
    throw std::invalid_argument(fmt::format("MomentAccumulator: rows of {} columns added to moments of {}", rows.cols(), dims()));
  if (!rows.isFinite().all()) throw std::invalid_argument("MomentAccumulator: non-finite values");
  MomentAccumulator block(dims());
  block.count_ = rows.rows();
  block.mean_ = rows.matrix().colwise().mean().transpose();
  const Eigen::MatrixXd centred = rows.matrix().rowwise() - block.mean_.transpose();
  block.comoment_.noalias() = centred.transpose() * centred;
  merge(block);
}

void MomentAccumulator::merge(const MomentAccumulator& other) {
  if (other.count_ == 0) return;
  if (count_ == 0) {
    *this = other;
    return;
  }
  if (other.dims() != dims())
    throw std::invalid_argument(fmt::format("MomentAccumulator: merging moments of {} and {} dimensions", dims(), other.dims()));
  const double na = static_cast<double>(count_), nb = static_cast<double>(other.count_), n = na + nb;
  const Eigen::VectorXd delta = other.mean_ - mean_;
  mean_ += delta * (nb / n);
  comoment_ += other.comoment_;
  comoment_.noalias() += (na * nb / n) * (delta * delta.transpose());
  count_ += other.count_;
}

MomentAccumulator MomentAccumulator::from_moments(Index count, Eigen::VectorXd mean, const Eigen::MatrixXd& covariance) {
  const Index d = mean.size();
  if (count < 2 || covariance.rows() != d || covariance.cols() != d)
    throw std::invalid_argument(fmt::format("MomentAccumulator: {} samples, mean of {}, covariance {}x{}", count, d, covariance.rows(),
                                            covariance.cols()));
  MomentAccumulator m(d);
  m.count_ = count;
  m.mean_ = std::move(mean);
  m.comoment_ = covariance * static_cast<double>(count - 1);
  return m;
}

MomentAccumulator block_moments(const Batch& rows, Index block_rows, int threads) {
  const auto blocks = make_blocks(rows.rows(), block_rows);
  std::vector<MomentAccumulator> parts(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) { parts[b.index].add(rows.middleRows(b.begin, b.rows())); });
  MomentAccumulator total(rows.cols());
  for (const auto& p : parts) total.merge(p);
  return total;
}

double frechet_distance(const Eigen::VectorXd& m1, const Eigen::MatrixXd& c1, const Eigen::VectorXd& m2,
                        const Eigen::MatrixXd& c2) {
  const Index d = m1.size();
  if (d == 0 || c1.rows() != d || c1.cols() != d || m2.size() != d || c2.rows() != d || c2.cols() != d)
    throw std::invalid_argument(fmt::format("frechet_distance: mean sizes {} and {}, covariances {}x{} and {}x{}", d,
                                            m2.size(), c1.rows(), c1.cols(), c2.rows(), c2.cols()));
  if (!m1.allFinite() || !m2.allFinite() || !c1.allFinite() || !c2.allFinite()) return kNaN;
  // Symmetrised: sample covariances are symmetric only up to rounding, and the eigen-solver reads
  // one triangle.
  const Eigen::MatrixXd c1s = 0.5 * (c1 + c1.transpose());
  const Eigen::MatrixXd c2s = 0.5 * (c2 + c2.transpose());
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig1(c1s);
  if (eig1.info() != Eigen::Success) return kNaN;
  // c1^{1/2}; eigenvalues below 0 are rounding of a semi-definite matrix.
  const Eigen::VectorXd root1 = eig1.eigenvalues().unaryExpr([](double l) { return l < 0.0 ? 0.0 : std::sqrt(l); });
  const Eigen::MatrixXd sqrt_c1 = eig1.eigenvectors() * root1.asDiagonal() * eig1.eigenvectors().transpose();
  Eigen::MatrixXd middle = sqrt_c1 * c2s * sqrt_c1;
  middle = 0.5 * (middle + middle.transpose()).eval();
  // tr(middle^{1/2}) needs only middle's eigenvalues.
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig_middle(middle, Eigen::EigenvaluesOnly);
  if (eig_middle.info() != Eigen::Success) return kNaN;
  double trace_root = 0.0;
  for (Index i = 0; i < d; ++i) {
    const double l = eig_middle.eigenvalues()[i];
    trace_root += l < 0.0 ? 0.0 : std::sqrt(l);
  }
  const double distance = (m1 - m2).squaredNorm() + c1s.trace() + c2s.trace() - 2.0 * trace_root;
  return distance < 0.0 ? 0.0 : distance;
}

FrechetStatistics raw_statistics(const std::filesystem::path& file, const std::string& dataset, Index block_rows, int threads) {
  const Hdf5File h5(file, Hdf5File::Mode::read);
  if (!h5.has(dataset)) throw std::runtime_error(fmt::format("{}: no dataset '{}'", file.string(), dataset));
  const auto [rows, cols] = h5.shape(dataset);
  if (rows < 2) throw std::runtime_error(fmt::format("{}: dataset '{}' has {} rows; statistics need 2 or more", file.string(), dataset, rows));
  if (block_rows < 1) throw std::invalid_argument("raw_statistics: block_rows must be >= 1");
  // Read a chunk of up to `threads` blocks (HDF5 reads one at a time), take the blocks' moments in
  // parallel, merge them in order: the blocks are those of one pass over the whole dataset.
  MomentAccumulator total(cols);
  const Index chunk_rows = block_rows * std::max(1, threads);
  for (Index first = 0; first < rows; first += chunk_rows) {
    const Batch chunk = h5.read_rows(dataset, first, std::min(chunk_rows, rows - first));
    if (!chunk.isFinite().all())
      throw std::runtime_error(fmt::format("{}: dataset '{}' holds non-finite values (rows {}..{})", file.string(), dataset, first,
                                           first + chunk.rows() - 1));
    total.merge(block_moments(chunk, block_rows, threads));
  }
  FrechetStatistics s;
  s.feature = "raw";
  s.feature_hash = "none";
  s.source = fmt::format("{}:{}", file.string(), dataset);
  s.count = total.count();
  s.mean = total.mean();
  s.covariance = total.covariance();
  return s;
}

bool is_statistics_file(const Hdf5File& file) {
  return file.has_attribute("/", "content") && file.read_string_attribute("/", "content") == kContent;
}

void write_statistics(Hdf5File& file, const FrechetStatistics& s) {
  file.write_attribute("/", "content", kContent);
  file.write_vector("frechet/mean", std::vector<double>(s.mean.data(), s.mean.data() + s.mean.size()));
  Batch cov(s.covariance.rows(), s.covariance.cols());
  cov = s.covariance.array();  // to the row-major layout of the file
  file.write_matrix("frechet/covariance", cov);
  file.write_attribute("frechet", "count", static_cast<double>(s.count));
  file.write_attribute("frechet", "feature", s.feature);
  file.write_attribute("frechet", "feature_hash", s.feature_hash);
  file.write_attribute("frechet", "source", s.source);
}

FrechetStatistics read_statistics(const Hdf5File& file) {
  const std::string where = file.path().string();
  if (!is_statistics_file(file)) throw std::runtime_error(fmt::format("{}: not a statistics file (no root attribute content = \"{}\")", where, kContent));
  for (const char* name : {"frechet/mean", "frechet/covariance"})
    if (!file.has(name)) throw std::runtime_error(fmt::format("{}: no dataset '{}'", where, name));
  for (const char* name : {"count", "feature", "feature_hash"})
    if (!file.has_attribute("frechet", name)) throw std::runtime_error(fmt::format("{}: no attribute '{}' on frechet", where, name));
  FrechetStatistics s;
  const auto mean = file.read_vector("frechet/mean");
  s.mean = Eigen::Map<const Eigen::VectorXd>(mean.data(), static_cast<Index>(mean.size()));
  const Batch cov = file.read_matrix("frechet/covariance");
  s.covariance = cov.matrix();
  const double count = file.read_double_attribute("frechet", "count");
  s.feature = file.read_string_attribute("frechet", "feature");
  s.feature_hash = file.read_string_attribute("frechet", "feature_hash");
  s.source = file.has_attribute("frechet", "source") ? file.read_string_attribute("frechet", "source") : "";
  if (!(count >= 2) || count != std::floor(count))
    throw std::runtime_error(fmt::format("{}: frechet count = {}: must be an integer >= 2", where, count));
  s.count = static_cast<Index>(count);
  if (s.covariance.rows() != s.mean.size() || s.covariance.cols() != s.mean.size())
    throw std::runtime_error(fmt::format("{}: frechet/covariance is {}x{} for a mean of {}", where, s.covariance.rows(), s.covariance.cols(),
                                         s.mean.size()));
  if (!s.mean.allFinite() || !s.covariance.allFinite()) throw std::runtime_error(fmt::format("{}: non-finite statistics", where));
  return s;
}

double frechet_distance(const FrechetStatistics& a, const FrechetStatistics& b) {
  if (a.feature != b.feature || a.feature_hash != b.feature_hash)
    throw std::invalid_argument(fmt::format("statistics of different features: '{}' (hash {}) and '{}' (hash {})", a.feature, a.feature_hash,
                                            b.feature, b.feature_hash));
  if (a.mean.size() != b.mean.size())
    throw std::invalid_argument(fmt::format("statistics of {} and {} dimensions", a.mean.size(), b.mean.size()));
  return frechet_distance(a.mean, a.covariance, b.mean, b.covariance);
}

}  // namespace diffode
