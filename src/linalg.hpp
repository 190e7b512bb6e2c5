// Small dense FP64 linear algebra on the host (internal), shared by the exact posterior, the observation operators,
// the guided samplers' tables and the metrics.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace diffsample::detail {

/// In-place lower Cholesky factor of an n x n symmetric matrix (row-major; the upper triangle is zeroed).
/// Strict: returns false when a pivot is not above 1e-13 times the largest diagonal entry, since rounding leaves
/// pivots of that order (not exactly zero) in an exactly singular matrix.
inline bool cholesky(double* m, std::int64_t n) {
  double scale = 0;
  for (std::int64_t j = 0; j < n; ++j) scale = std::max(scale, std::abs(m[j * n + j]));
  for (std::int64_t j = 0; j < n; ++j) {
    double pivot = m[j * n + j];
    for (std::int64_t k = 0; k < j; ++k) pivot -= m[j * n + k] * m[j * n + k];
    if (!(pivot > 1e-13 * scale) || !std::isfinite(pivot)) return false;
    const double l = std::sqrt(pivot);
    m[j * n + j] = l;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double s = m[i * n + j];
      for (std::int64_t k = 0; k < j; ++k) s -= m[i * n + k] * m[j * n + k];
      m[i * n + j] = s / l;
    }
    for (std::int64_t i = 0; i < j; ++i) m[i * n + j] = 0;
  }
  return true;
}

/// G = A A^T (m x m, row-major) for a row-major m x n matrix A; the lower triangle is computed and mirrored.
inline void gram(const double* A, std::int64_t m, std::int64_t n, double* G) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t l = 0; l <= i; ++l) {
      double s = 0;
      for (std::int64_t j = 0; j < n; ++j) s += A[i * n + j] * A[l * n + j];
      G[i * m + l] = G[l * m + i] = s;
    }
}

}  // namespace diffsample::detail
