// The Frechet distance between two sets of feature vectors: the squared 2-Wasserstein distance
// between the Gaussians with their means and covariances, which is what FID computes on Inception
// features (Heusel et al. 2017, arXiv:1706.08500). The features here are whatever the rows hold:
// "raw" coordinates or pixels as they are stored (no network: a baseline, never called FID).
//
// Moments are accumulated in float64 by blocks and merged by Chan, Golub & LeVeque's pairwise
// update ("Updating formulae and a pairwise algorithm for computing sample variances", 1979;
// Stanford report STAN-CS-79-773): for two parts with counts n_a, n_b, means m_a, m_b and
// co-moments M_a = sum (x - m_a)(x - m_a)^T,
//     n = n_a + n_b,  delta = m_b - m_a,  m = m_a + delta n_b / n,
//     M = M_a + M_b + delta delta^T n_a n_b / n.
// Each block's own moments are taken two-pass (mean first, then the centred products), so no raw
// second moment ever cancels against mean mean^T. Blocks, threads and ranks all merge this way;
// with a fixed block size and blocks merged in order the result does not depend on the thread count.
//
// The distance, from the means and the unbiased covariances S = M / (n - 1):
//     FD = |m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}),
// where tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = tr((S1 S2)^{1/2}) (the two matrices are similar, as
// AB and BA share their non-zero eigenvalues) is the sum of the square roots of the eigenvalues of
// the symmetric positive semi-definite S1^{1/2} S2 S1^{1/2}, found by a symmetric eigensolver
// (Eigen's SelfAdjointEigenSolver), as is S1^{1/2}. Eigenvalues below 0 can only be rounding of a
// semi-definite matrix and are clamped to 0 before their square roots, and a total below 0 (two
// identical sets) is clamped to 0.
//
// Singular covariances (fewer samples than dimensions, N <= D, or features confined to a
// subspace) need nothing special: the formula is the 2-Wasserstein distance between the two
// degenerate Gaussians, all its terms stay real, and the result is finite. pytorch-fid's
// calculate_frechet_distance instead takes scipy's general sqrtm of S1 S2 and, when that is not
// finite, adds 1e-6 I to both covariances; on such input its value differs from this one by terms
// of order sqrt(1e-6 * eigenvalue) per dimension. On well-conditioned input the two agree to
// rounding (tests/experiments/frechet_test.cpp).
#pragma once

#include "core/state.hpp"

#include <Eigen/Core>

#include <filesystem>
#include <string>

namespace diffode {

class Hdf5File;

// Count, mean and co-moment matrix of a stream of rows, mergeable.
class MomentAccumulator {
 public:
  explicit MomentAccumulator(Index dims = 0);
  Index dims() const { return mean_.size(); }
  Index count() const { return count_; }
  const Eigen::VectorXd& mean() const { return mean_; }
  const Eigen::MatrixXd& comoment() const { return comoment_; }
  // The unbiased covariance M / (n - 1); needs count >= 2.
  Eigen::MatrixXd covariance() const;

  // Adds rows (any number, columns = dims; an empty accumulator takes the dims of its first
  // rows): their own two-pass moments, merged in. Throws std::invalid_argument on a column
  // mismatch or non-finite values.
  void add(const Batch& rows);
  // Merges another accumulator's rows into this one (Chan et al.'s update).
  void merge(const MomentAccumulator& other);
  // From stored moments (count, mean, unbiased covariance), e.g. a statistics file.
  static MomentAccumulator from_moments(Index count, Eigen::VectorXd mean, const Eigen::MatrixXd& covariance);

 private:
  Index count_ = 0;
  Eigen::VectorXd mean_;
  Eigen::MatrixXd comoment_;
};

// Moments of `rows` cut into blocks of `block_rows` (threads take whole blocks), merged in block
// order: the same bits for any thread count.
MomentAccumulator block_moments(const Batch& rows, Index block_rows, int threads = 1);

// Squared Frechet distance between N(m1, c1) and N(m2, c2) (see above). Throws
// std::invalid_argument on mismatched sizes; non-finite input gives NaN.
double frechet_distance(const Eigen::VectorXd& m1, const Eigen::MatrixXd& c1, const Eigen::VectorXd& m2,
                        const Eigen::MatrixXd& c2);

// The statistics of one set of features, as cached in HDF5.
struct FrechetStatistics {
  std::string feature = "raw";               // what the rows are features of
  std::string feature_hash = "none";         // identifies the feature network ("none": no network)
  std::string source;                        // where they came from: "file:dataset"
  Index count = 0;
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;  // unbiased, 1 / (n - 1)
};

// The raw-feature statistics of dataset `dataset` (N x D, N >= 2) of an HDF5 file, streamed from
// disk `block_rows` rows at a time. Throws std::runtime_error naming the file and the dataset.
FrechetStatistics raw_statistics(const std::filesystem::path& file, const std::string& dataset, Index block_rows = 4096,
                                 int threads = 1);

// Statistics files: root attribute content = "frechet_statistics", datasets frechet/mean (D) and
// frechet/covariance (D x D), attributes count, feature, feature_hash and source on frechet.
bool is_statistics_file(const Hdf5File& file);
void write_statistics(Hdf5File& file, const FrechetStatistics& stats);
FrechetStatistics read_statistics(const Hdf5File& file);

// The distance between two sets' statistics; throws std::invalid_argument when their features
// (name or hash) or dimensions differ: such numbers are not comparable.
double frechet_distance(const FrechetStatistics& a, const FrechetStatistics& b);

}  // namespace diffode
