/// @file observation.hpp
/// @brief Linear observation operators A for inverse problems y = A x + sigma_y z: a dense matrix, a mask or
/// diagonal operator (inpainting, per-coordinate gains) and an operator given by its singular value decomposition.
///
/// One type carries all three, so the exact posterior (posterior.hpp) and the guided samplers (guided.hpp) take any
/// of them. Each keeps its own form: apply() and apply_transpose() cost O(d_y d_x) for a dense operator, O(d_y) for a
/// mask and O(r (d_x + d_y)) for a rank-r SVD, and the guided samplers run masks with a gather/scatter path on
/// both executors (README: "Observation operators").
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/mixture.hpp>

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
  /// @throws invalid_argument for d_x outside 1..limits::max_operator_values, no index, an index out of range or
  ///         repeated, a diagonal of the wrong length or with a non-finite entry
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
  /// @throws invalid_argument for an empty operator, a null x or y, or x and y sharing memory (y is written while x
  ///         is still read), naming both; y is then left untouched
  void apply(const double* x, double* y) const;
  /// x = A^T y (y: d_y values, x: d_x values, host), in the operator's own form.
  /// @throws invalid_argument for an empty operator, a null x or y, or x and y sharing memory (x is zeroed before y
  ///         is read), naming both; x is then left untouched
  void apply_transpose(const double* y, double* x) const;

  /// A (transpose false: n points of d_x floats in, n x d_y out) or A^T (transpose true: n x d_y in, n x d_x out)
  /// applied to n row-major FP32 points, CPU executor. mixture_path::gemm runs a dense operator as one matrix
  /// product (the BLAS's sgemm when one was found, else the library's loops); direct runs each point in the
  /// operator's own form with an FP32 sum per output in index order (the guided samplers' kernels' order).
  /// automatic takes gemm for a dense operator when batch_path() says so. Masks and SVD operators always run direct
  /// (forcing gemm on them is an invalid_argument). The operator's factors are rounded to FP32 once, at
  /// construction: the direct path allocates nothing.
  /// @return the executor and the path that ran
  /// @throws invalid_argument for an empty operator, n < 0, a null buffer with n > 0, out sharing memory with x (an
  ///         evaluation in place included: each point's outputs are written while other points are still read), a
  ///         CUDA executor (no device form yet), a forced gemm on a mask or SVD operator, or an operator value (a
  ///         dense entry, a mask's gain, a singular value) beyond max_abs_value (FP32 products; apply() takes any)
  evaluate_report apply_batch(float* out, std::int64_t n, const float* x, bool transpose,
                              mixture_path path = mixture_path::automatic, execution exec = {}) const;
  /// The path apply_batch() runs for n points under @p path: gemm for a dense operator when forced, or when
  /// automatic and the product is large enough (operator_gemm_worthwhile()); direct otherwise.
  mixture_path batch_path(std::int64_t n, mixture_path path = mixture_path::automatic) const;

 private:
  observation_kind kind_ = observation_kind::dense;
  std::int64_t d_y_ = 0, d_x_ = 0;
  std::vector<double> A_, diagonal_, U_, V_;
  // apply_batch's factors rounded to FP32 at construction: dense A; mask the gains; svd U, V, then S.
  std::vector<float> values32_;
  std::vector<std::int64_t> indices_;
};

/// The size rule for applying a dense operator to n points as matrix products instead of one sum per point and
/// output: true for at least 64 points and d_y x d_x >= 1024, the crossover measured inside DPS / Pi-GDM's CPU runs
/// (`bench_mixture_gemm guided`, README "Observation operators as matrix products"; apply_batch alone gains from the
/// products at every size measured, `bench_mixture_gemm operator`; no crossover has been measured on a GPU). Users:
/// - observation_operator::batch_path(), and so apply_batch()'s automatic path (CPU executor), over its n points;
/// - guided_sample() with DPS or Pi-GDM and a dense operator (not a mask; an SVD operator runs on its reduced form
///   and never takes the products): A m and A^T u of every step as products, with the BLAS on the CPU executor and
///   with cuBLAS on the CUDA executor (the step-by-step run instead of the fused kernel);
/// TMPD's covariances A C A^T (CPU executor, guided_sample() and its sampling_plan) have their own bound, measured
/// the same way: d_y x d_x >= 4096 at any n (its direct path is fused per pack of particles, and its per-particle
/// covariance costs 2 d_y^2 d_x flops).
///
/// For the guided samplers n is the particles one product covers: all problems x particles when the problems share
/// one operator, the particles of one problem when each has its own. guided_report::operator_path says which path a
/// run took.
DIFFSAMPLE_API bool operator_gemm_worthwhile(std::int64_t n, std::int64_t d_y, std::int64_t d_x) noexcept;
/// The size rule of the executor @p where (cpu: the rule above; cuda: guided_sample()'s and the plans' DPS / Pi-GDM
/// on the CUDA executor, whose per-particle path is one fused kernel). On an H200 that kernel beat the cuBLAS
/// products at every shape up to d_y x d_x = 64 x 64 and 32 x 256 by 2 to 6x (N = 64 to 262144 particles), and at
/// 128 x 512 the products reached 0.72 to 1.17x, the ratio growing with d_y x d_x (`bench_mixture_gemm cuda operator`,
/// README "Observation operators as matrix products"): cuda takes the products from d_y x d_x >= 2^17 entries (and
/// n >= 64), past the largest shape measured, where the trend puts the crossover. executor::automatic: true where
/// either executor's rule is (a workspace query that does not name its executor sizes for both).
DIFFSAMPLE_API bool operator_gemm_worthwhile(std::int64_t n, std::int64_t d_y, std::int64_t d_x,
                                             executor where) noexcept;

}  // namespace diffsample
