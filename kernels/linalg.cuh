// Small dense FP64 linear algebra, shared by the exact posterior, the observation operators, the guided
// samplers' tables and the metrics. Host and device callable, so that the exact posterior's per-component functor
// runs the same code on both executors.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// False for NaN and +-inf (spelled with comparisons only, the same on both compilers).
DS_HD_INLINE bool finite(double x) { return x <= 1.7976931348623157e308 && x >= -1.7976931348623157e308; }

/// Largest |m_jj| of an n x n row-major matrix.
DS_HD_INLINE double diagonal_scale(const double* m, std::int64_t n) {
  double scale = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const double a = m[j * n + j] < 0 ? -m[j * n + j] : m[j * n + j];
    scale = a > scale ? a : scale;
  }
  return scale;
}

/// Cholesky with the pivot test of cholesky_failure() or cholesky_failure_scaled(): a pivot must exceed 1e-13 times
/// the largest diagonal entry (own = false) or its own diagonal entry (own = true).
DS_HD_INLINE std::int64_t cholesky_with_test(double* m, std::int64_t n, bool own) {
  const double scale = own ? 0.0 : diagonal_scale(m, n);
  for (std::int64_t j = 0; j < n; ++j) {
    double pivot = m[j * n + j];
    const double reference = own ? pivot : scale;
    for (std::int64_t k = 0; k < j; ++k) pivot -= m[j * n + k] * m[j * n + k];
    if (!(pivot > 1e-13 * reference) || !finite(pivot)) return j;
    const double l = sqrt(pivot);
    m[j * n + j] = l;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double s = m[i * n + j];
      for (std::int64_t k = 0; k < j; ++k) s -= m[i * n + k] * m[j * n + k];
      m[i * n + j] = s / l;
    }
    for (std::int64_t i = 0; i < j; ++i) m[i * n + j] = 0;
  }
  return -1;
}

/// In-place lower Cholesky factor of an n x n symmetric matrix (row-major; the upper triangle is zeroed).
/// Strict: fails when a pivot is not above 1e-13 times the largest diagonal entry, since rounding leaves pivots of
/// that order (not exactly zero) in an exactly singular matrix. Returns the failing row, or -1 on success.
DS_HD_INLINE std::int64_t cholesky_failure(double* m, std::int64_t n) { return cholesky_with_test(m, n, false); }

/// cholesky_failure() with each pivot compared with its own diagonal entry m_jj instead of the largest one: the test
/// of the matrix scaled to a unit diagonal. Pivot j is m_jj less squares whose sum is at most m_jj, so its rounding
/// scales with m_jj; rows on very different scales (an observation's A = diag(1e9, 1e-9)) are then not taken for
/// singular. Only for matrices whose diagonal carries no cancellation (sums of squares, such as A Sigma A^T +
/// sigma_y^2 I): a diagonal entry that is itself a rounding residue (a covariance Sigma - W^T W of rank < n) would
/// pass its own test. Used for the exact posterior's A Sigma_k A^T + sigma_y^2 I and the guided samplers' d_y x d_y
/// matrices (c A A^T + tau I of SMC, Pi-GDM, DiffPIR and DCPS; TMPD's A C A^T + sigma_y^2 I).
DS_HD_INLINE std::int64_t cholesky_failure_scaled(double* m, std::int64_t n) { return cholesky_with_test(m, n, true); }

/// cholesky_failure() as a yes/no: true when the factor exists.
DS_HD_INLINE bool cholesky(double* m, std::int64_t n) { return cholesky_failure(m, n) < 0; }

/// In-place Cholesky factor of a positive semi-definite matrix: a pivot below 1e-13 times the largest diagonal
/// entry (rounding of an exactly singular matrix, e.g. a posterior with sigma_y = 0) zeroes its column, so the
/// factor spans only the non-degenerate directions.
DS_HD_INLINE void psd_factor(double* m, std::int64_t n) {
  const double tolerance = 1e-13 * diagonal_scale(m, n);
  for (std::int64_t j = 0; j < n; ++j) {
    double pivot = m[j * n + j];
    for (std::int64_t k = 0; k < j; ++k) pivot -= m[j * n + k] * m[j * n + k];
    const bool degenerate = !(pivot > tolerance);
    const double l = degenerate ? 0.0 : sqrt(pivot);
    m[j * n + j] = l;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double s = m[i * n + j];
      for (std::int64_t k = 0; k < j; ++k) s -= m[i * n + k] * m[j * n + k];
      m[i * n + j] = degenerate ? 0.0 : s / l;
    }
    for (std::int64_t i = 0; i < j; ++i) m[i * n + j] = 0;
  }
}

/// Solves L x = b in place (L lower triangular, n x n), for b with `columns` columns stored row-major (n x columns).
DS_HD_INLINE void forward_substitute(const double* L, std::int64_t n, double* b, std::int64_t columns) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < columns; ++c) {
      double s = b[i * columns + c];
      for (std::int64_t k = 0; k < i; ++k) s -= L[i * n + k] * b[k * columns + c];
      b[i * columns + c] = s / L[i * n + i];
    }
}

/// Solves L^T x = b in place (L lower triangular, n x n), for b with `columns` columns stored row-major.
DS_HD_INLINE void back_substitute_transposed(const double* L, std::int64_t n, double* b, std::int64_t columns) {
  for (std::int64_t i = n - 1; i >= 0; --i)
    for (std::int64_t c = 0; c < columns; ++c) {
      double s = b[i * columns + c];
      for (std::int64_t k = i + 1; k < n; ++k) s -= L[k * n + i] * b[k * columns + c];
      b[i * columns + c] = s / L[i * n + i];
    }
}

/// G = A A^T (m x m, row-major) for a row-major m x n matrix A; the lower triangle is computed and mirrored.
DS_HD_INLINE void gram(const double* A, std::int64_t m, std::int64_t n, double* G) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t l = 0; l <= i; ++l) {
      double s = 0;
      for (std::int64_t j = 0; j < n; ++j) s += A[i * n + j] * A[l * n + j];
      G[i * m + l] = G[l * m + i] = s;
    }
}

}  // namespace diffsample::kernels
