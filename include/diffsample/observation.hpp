/// @file observation.hpp
/// @brief Linear observation operators A for inverse problems y = A x + sigma_y z: a dense matrix, a mask or
/// diagonal operator (inpainting, per-coordinate gains) and an operator given by its singular value decomposition.
///
/// One type carries all three, so the exact posterior (posterior.hpp) and the guided samplers (guided.hpp) take any
/// of them. Each keeps its own form: apply() and apply_transpose() cost O(d_y d_x) for a dense operator, O(d_y) for a
/// mask and O(r (d_x + d_y)) for a rank-r SVD, and the guided samplers run masks with a gather/scatter path on
/// both executors (README: "Observation operators").
#pragma once

#include <diffsample/export.hpp>

#include <cstdint>
#include <vector>

namespace diffsample {

/// How an observation_operator is stored.
enum class observation_kind : int {
  dense = 0,  ///< A given as a d_y x d_x matrix
  mask = 1,   ///< (A x)_i = diagonal_i x_{indices_i}: a selection of coordinates with per-coordinate gains
  svd = 2,    ///< A = U diag(singular_values) V^T with orthonormal columns in U and V
};

/// "dense", "mask" or "svd".
DIFFSAMPLE_API const char* to_string(observation_kind kind) noexcept;

/// A linear map A: R^{d_x} -> R^{d_y}, host data in FP64, validated at construction.
///
/// Construct it with dense(), mask() or svd(); a default-constructed operator is empty (d_y = d_x = 0) and is
/// rejected by every function that takes one.
class DIFFSAMPLE_API observation_operator {
 public:
  /// An empty operator (d_y = d_x = 0).
  observation_operator() = default;

  /// A dense d_y x d_x matrix, row-major.
  /// @throws invalid_argument when d_y < 1, d_x < 1, A.size() != d_y d_x or an entry is not finite
  static observation_operator dense(std::int64_t d_y, std::int64_t d_x, std::vector<double> A);

  /// A mask (inpainting) or diagonal operator: observed value i is diagonal[i] * x[indices[i]], so d_y =
  /// indices.size(). Indices are distinct and in [0, d_x), in any order. An empty @p diagonal means all ones
  /// (plain inpainting); a diagonal operator diag(g) is mask(d_x, {0, ..., d_x - 1}, g).
  /// @throws invalid_argument for d_x < 1, no index, an index out of range or repeated, a diagonal of the wrong
  ///         length or with a non-finite entry
  static observation_operator mask(std::int64_t d_x, std::vector<std::int64_t> indices,
                                   std::vector<double> diagonal = {});

  /// An operator given by its thin SVD, A = U diag(S) V^T of rank r = S.size():
  /// @param U                d_y x r, row-major, orthonormal columns (U^T U = I to 1e-6)
  /// @param singular_values  r values, finite and >= 0
  /// @param V                d_x x r, row-major, orthonormal columns (V^T V = I to 1e-6)
  /// Requires 1 <= r <= min(d_y, d_x).
  /// @throws invalid_argument for inconsistent sizes, non-finite values, a negative singular value or columns
  ///         that are not orthonormal (the message gives the largest deviation of U^T U or V^T V from I)
  static observation_operator svd(std::int64_t d_y, std::int64_t d_x, std::vector<double> U,
                                  std::vector<double> singular_values, std::vector<double> V);

  observation_kind kind() const noexcept { return kind_; }  ///< how the operator is stored
  std::int64_t d_y() const noexcept { return d_y_; }        ///< rows of A (observation dimension)
  std::int64_t d_x() const noexcept { return d_x_; }        ///< columns of A (signal dimension)
  bool empty() const noexcept { return d_y_ == 0; }         ///< true for a default-constructed operator

  /// dense: the matrix (d_y x d_x); empty for the other kinds (use matrix()).
  const std::vector<double>& dense_matrix() const noexcept { return A_; }
  /// mask: the observed coordinates (d_y values); empty for the other kinds.
  const std::vector<std::int64_t>& indices() const noexcept { return indices_; }
  /// mask: the gains (d_y values, ones for plain inpainting); svd: the singular values (r values).
  const std::vector<double>& diagonal() const noexcept { return diagonal_; }
  /// svd: U (d_y x r, row-major); empty for the other kinds.
  const std::vector<double>& U() const noexcept { return U_; }
  /// svd: V (d_x x r, row-major); empty for the other kinds.
  const std::vector<double>& V() const noexcept { return V_; }

  /// A as a dense d_y x d_x row-major matrix (built on each call for mask and svd).
  std::vector<double> matrix() const;
  /// A A^T (d_y x d_y, row-major): diag(g^2) for a mask, U diag(S^2) U^T for an SVD.
  std::vector<double> gram() const;
  /// y = A x (x: d_x values, y: d_y values, host), in the operator's own form.
  void apply(const double* x, double* y) const;
  /// x = A^T y (y: d_y values, x: d_x values, host), in the operator's own form.
  void apply_transpose(const double* y, double* x) const;

 private:
  observation_kind kind_ = observation_kind::dense;
  std::int64_t d_y_ = 0, d_x_ = 0;
  std::vector<double> A_, diagonal_, U_, V_;
  std::vector<std::int64_t> indices_;
};

}  // namespace diffsample
