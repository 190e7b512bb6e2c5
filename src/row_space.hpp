// Host FP64 linear algebra of the operators (defined in src/guided_ddrm.cu), and the reduction of an observation
// y = A x + sigma_y z to A's row space that the guided samplers (src/guided.cu, reduce_rank) and the exact posterior
// (src/posterior.cpp) share: with A = U diag(S) V^T of numerical rank r, U_r^T y = diag(S_r) V_r^T x + sigma_y U_r^T z
// keeps everything that depends on x, and U_perp^T y, pure noise, adds log N(U_perp^T y; 0, sigma_y^2 I) to the
// evidence alone.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/mixture.cuh"

namespace diffsample::detail {

/// The largest eigenvalue of a symmetric positive semi-definite n x n matrix (FP64 power iteration to a relative
/// change below 1e-12, at most 2000 iterations, from the all-ones vector plus a small ramp).
double largest_eigenvalue(const double* m, std::int64_t n);

/// Eigendecomposition of a symmetric n x n matrix G (row-major) by cyclic Jacobi (FP64): eigenvalues in @p values,
/// the eigenvectors as the columns of E (row-major n x n). Sweeps until the off-diagonal mass is below 1e-30 of the
/// total (or 100 sweeps).
void symmetric_eigen(std::vector<double> G, std::int64_t n, std::vector<double>& values, std::vector<double>& E);

/// The SVD A = U diag(S) V^T of a d_y x d_x row-major matrix by one-sided Jacobi rotations of its rows (FP64; each
/// singular value to about 1e-16 of the largest, absolute): U (d_y x d_y, row-major, orthogonal), S (d_y values,
/// non-increasing), V (d_x x d_y, row-major; column i is row i of U^T A over S_i, zero where S_i is). Returns the
/// numerical rank: the count of S_i above max(d_y, d_x) 2.2e-16 S_0 (numpy's matrix_rank rule).
std::int64_t row_svd(const double* A, std::int64_t dy, std::int64_t dx, std::vector<double>& U, std::vector<double>& S,
                     std::vector<double>& V);

/// The reduced operator's rows diag(S_r) V_r^T (row_svd's S and V of a d_y x d_x A) into rows 0 .. rank - 1 of
/// @p out (rank x d_x, row-major).
inline void row_space_operator(const std::vector<double>& S, const std::vector<double>& V, std::int64_t dy,
                               std::int64_t dx, std::int64_t rank, double* out) {
  for (std::int64_t i = 0; i < rank; ++i)
    for (std::int64_t j = 0; j < dx; ++j) out[i * dx + j] = S[i] * V[j * dy + i];
}

/// U^T y split at @p rank (row_svd's U of a d_y-row A): its first rank entries into @p kept; returns the squared norm
/// of the rest, |U_perp^T y|^2.
inline double row_space_observation(const std::vector<double>& U, std::int64_t dy, std::int64_t rank, const double* y,
                                    double* kept) {
  double outside = 0;
  for (std::int64_t i = 0; i < dy; ++i) {
    double t = 0;
    for (std::int64_t o = 0; o < dy; ++o) t += U[o * dy + i] * y[o];
    if (i < rank)
      kept[i] = t;
    else
      outside += t * t;
  }
  return outside;
}

/// log N(U_perp^T y; 0, sigma_y^2 I) for @p dropped rows whose squared norm is @p outside: -(dropped / 2) (log 2 pi +
/// 2 log sigma_y) - outside / (2 sigma_y^2).
inline double outside_log_density(std::int64_t dropped, double sigma_y, double outside) {
  return -0.5 * double(dropped) * (kernels::log_two_pi<double>() + 2 * std::log(sigma_y)) -
         outside / (2 * sigma_y * sigma_y);
}

}  // namespace diffsample::detail
