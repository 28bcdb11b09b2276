#pragma once
// Symmetric test matrices with a known spectrum: A = Q diag(d) Q^T, Q from a seeded QR.
#include <cstdint>

#include <Eigen/Dense>

#include "moescope/util/random.hpp"

namespace moescope::testing {

// Matrix streams are salted so that they never coincide with a solver's probe stream for the same
// small seed (a probe equal to the first column of the Gaussian behind Q is an eigenvector).
constexpr std::uint64_t kMatrixSalt = 0x6d61747269785f5fULL;

/// Haar-distributed orthogonal n x n matrix: QR of a Gaussian matrix, columns signed by diag(R).
inline Eigen::MatrixXd random_orthogonal(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed ^ kMatrixSalt);
  const Eigen::MatrixXd g = rng.gaussian_matrix(n, n);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(n, n);
  const Eigen::MatrixXd r = qr.matrixQR();
  for (std::int64_t j = 0; j < n; ++j)
    if (r(j, j) < 0) q.col(j) = -q.col(j);
  return q;
}

/// A matrix with eigenvalues d and eigenvectors the columns of `q`.
inline Eigen::MatrixXd with_eigenpairs(const Eigen::MatrixXd& q, const Eigen::VectorXd& d) {
  Eigen::MatrixXd a = q * d.asDiagonal() * q.transpose();
  return 0.5 * (a + a.transpose());  // exactly symmetric, whatever the rounding
}

/// n eigenvalues: a gapped top {10, 8, 6.5, 5, 4} (as many as fit) over a bulk uniform in [-2, 3].
inline Eigen::VectorXd gapped_spectrum(std::int64_t n, std::uint64_t seed) {
  const double top[] = {10.0, 8.0, 6.5, 5.0, 4.0};
  Rng rng(seed ^ kMatrixSalt);
  Eigen::VectorXd d(n);
  for (std::int64_t i = 0; i < n; ++i) d(i) = i < 5 ? top[i] : -2.0 + 5.0 * rng.uniform();
  return d;
}

}  // namespace moescope::testing
