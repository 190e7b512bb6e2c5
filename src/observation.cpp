// Observation operators: dense, mask/diagonal and SVD forms of A, validated at construction, applied in their own
// form on the host. The guided samplers' device representation is built in src/guided.cu.
#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/linalg.cuh"
#include "src/cpu/pool.hpp"
#include "src/cuda_check.hpp"
#include "src/mixture_gemm.hpp"
#include "src/operator_gemm.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/error.hpp>
#include <diffsample/observation.hpp>

namespace diffsample {

namespace {

// operator_gemm_worthwhile(): at least this many points and d_y x d_x entries (measured, see there).
constexpr std::int64_t operator_gemm_min_points = 64;
constexpr std::int64_t operator_gemm_min_size = 1024;
// The CUDA executor's (DPS / Pi-GDM's fused kernel against cuBLAS products; see operator_gemm_worthwhile(..., where)).
constexpr std::int64_t operator_gemm_min_size_cuda = std::int64_t(1) << 17;

void check_dims(std::int64_t d_y, std::int64_t d_x) {
  // Each at most limits::max_operator_values (2^28 doubles, 2 GiB of host memory), so the product cannot overflow.
  limits::check("observation: d_y", d_y, 1, limits::max_operator_values);
  limits::check("observation: d_x", d_x, 1, limits::max_operator_values);
  limits::check("observation: d_y x d_x", d_y * d_x, 1, limits::max_operator_values);
}

// Largest |(M^T M - I)_{ij}| for an n x r row-major M: how far its columns are from orthonormal.
double orthonormality_error(const std::vector<double>& M, std::int64_t n, std::int64_t r) {
  double worst = 0;
  for (std::int64_t a = 0; a < r; ++a)
    for (std::int64_t b = 0; b <= a; ++b) {
      double s = 0;
      for (std::int64_t i = 0; i < n; ++i) s += M[i * r + a] * M[i * r + b];
      worst = std::max(worst, std::abs(s - (a == b ? 1.0 : 0.0)));
    }
  return worst;
}

}  // namespace

void detail::check_operator_values(const char* prefix, const observation_operator& op, const char* why) {
  const bool dense = op.kind() == observation_kind::dense;
  const std::vector<double>& values = dense ? op.dense_matrix() : op.diagonal();
  // The name is formed for a refusal only: apply_batch's direct path allocates nothing.
  if (std::all_of(values.begin(), values.end(), [](double v) { return v >= -max_abs_value && v <= max_abs_value; }))
    return;
  const std::string name = std::string(prefix) + (dense                                   ? ".A"
                                                  : op.kind() == observation_kind::mask ? ".diagonal"
                                                                                        : ".singular_values");
  check_range(name.c_str(), values, -max_abs_value, max_abs_value, why);
}

observation_operator observation_operator::dense(std::int64_t d_y, std::int64_t d_x, std::vector<double> A) {
  check_dims(d_y, d_x);
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(A.size()) == d_y * d_x,
                     "observation.A: expected d_y x d_x = " << d_y * d_x << " values, got " << A.size());
  detail::check_values("observation.A", A, false);
  observation_operator op;
  op.kind_ = observation_kind::dense;
  op.d_y_ = d_y;
  op.d_x_ = d_x;
  op.A_ = std::move(A);
  op.values32_.assign(op.A_.begin(), op.A_.end());
  return op;
}

observation_operator observation_operator::mask(std::int64_t d_x, std::vector<std::int64_t> indices,
                                                std::vector<double> diagonal) {
  // d_x sizes the table of seen coordinates below: the limit of dense() and svd() (a mask holds no d_y x d_x values).
  limits::check("observation: d_x", d_x, 1, limits::max_operator_values);
  DIFFSAMPLE_EXPECTS(!indices.empty(), "observation.indices: a mask needs at least one observed coordinate");
  const auto d_y = static_cast<std::int64_t>(indices.size());
  DIFFSAMPLE_EXPECTS(d_y <= d_x, "observation.indices: " << d_y << " indices for d_x = " << d_x
                                                         << " (indices must be distinct)");
  std::vector<char> seen(static_cast<std::size_t>(d_x), 0);
  for (std::int64_t i = 0; i < d_y; ++i) {
    const std::int64_t j = indices[i];
    DIFFSAMPLE_EXPECTS(j >= 0 && j < d_x, "observation.indices: index " << i << " is " << j << ", outside [0, "
                                                                        << d_x << ")");
    DIFFSAMPLE_EXPECTS(!seen[j], "observation.indices: coordinate " << j << " appears twice (index " << i << ")");
    seen[j] = 1;
  }
  if (diagonal.empty()) diagonal.assign(indices.size(), 1.0);
  DIFFSAMPLE_EXPECTS(diagonal.size() == indices.size(), "observation.diagonal: expected " << d_y
                                                                                          << " values (one per index), got "
                                                                                          << diagonal.size());
  detail::check_values("observation.diagonal", diagonal, false);
  observation_operator op;
  op.kind_ = observation_kind::mask;
  op.d_y_ = d_y;
  op.d_x_ = d_x;
  op.indices_ = std::move(indices);
  op.diagonal_ = std::move(diagonal);
  op.values32_.assign(op.diagonal_.begin(), op.diagonal_.end());
  return op;
}

observation_operator observation_operator::svd(std::int64_t d_y, std::int64_t d_x, std::vector<double> U,
                                               std::vector<double> singular_values, std::vector<double> V) {
  check_dims(d_y, d_x);
  const auto r = static_cast<std::int64_t>(singular_values.size());
  DIFFSAMPLE_EXPECTS(r >= 1 && r <= std::min(d_y, d_x), "observation.singular_values: rank r = "
                                                            << r << " must be in [1, min(d_y, d_x) = "
                                                            << std::min(d_y, d_x) << "]");
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(U.size()) == d_y * r,
                     "observation.U: expected d_y x r = " << d_y * r << " values, got " << U.size());
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(V.size()) == d_x * r,
                     "observation.V: expected d_x x r = " << d_x * r << " values, got " << V.size());
  detail::check_values("observation.U", U, false);
  detail::check_values("observation.V", V, false);
  detail::check_values("observation.singular_values", singular_values, false);
  for (std::int64_t i = 0; i < r; ++i)
    DIFFSAMPLE_EXPECTS(singular_values[i] >= 0,
                       "observation.singular_values: value " << i << " is " << singular_values[i] << " (< 0)");
  const double eu = orthonormality_error(U, d_y, r), ev = orthonormality_error(V, d_x, r);
  DIFFSAMPLE_EXPECTS(eu <= 1e-6, "observation.U: columns are not orthonormal (largest |U^T U - I| entry " << eu
                                                                                                        << ")");
  DIFFSAMPLE_EXPECTS(ev <= 1e-6, "observation.V: columns are not orthonormal (largest |V^T V - I| entry " << ev
                                                                                                        << ")");
  observation_operator op;
  op.kind_ = observation_kind::svd;
  op.d_y_ = d_y;
  op.d_x_ = d_x;
  op.U_ = std::move(U);
  op.diagonal_ = std::move(singular_values);
  op.V_ = std::move(V);
  // apply_batch's FP32 factors, one block: U (d_y x r), then V (d_x x r), then S (r).
  op.values32_.reserve(op.U_.size() + op.V_.size() + op.diagonal_.size());
  op.values32_.assign(op.U_.begin(), op.U_.end());
  op.values32_.insert(op.values32_.end(), op.V_.begin(), op.V_.end());
  op.values32_.insert(op.values32_.end(), op.diagonal_.begin(), op.diagonal_.end());
  return op;
}

std::vector<double> observation_operator::matrix() const {
  if (kind_ == observation_kind::dense) return A_;
  std::vector<double> A(static_cast<std::size_t>(d_y_ * d_x_), 0.0);
  if (kind_ == observation_kind::mask) {
    for (std::int64_t i = 0; i < d_y_; ++i) A[i * d_x_ + indices_[i]] = diagonal_[i];
    return A;
  }
  const auto r = static_cast<std::int64_t>(diagonal_.size());
  for (std::int64_t i = 0; i < d_y_; ++i)
    for (std::int64_t k = 0; k < r; ++k) {
      const double u = U_[i * r + k] * diagonal_[k];
      if (u == 0) continue;
      for (std::int64_t j = 0; j < d_x_; ++j) A[i * d_x_ + j] += u * V_[j * r + k];
    }
  return A;
}

std::vector<double> observation_operator::gram() const {
  std::vector<double> G(static_cast<std::size_t>(d_y_ * d_y_), 0.0);
  switch (kind_) {
    case observation_kind::dense:
      kernels::gram(A_.data(), d_y_, d_x_, G.data());
      break;
    case observation_kind::mask:  // distinct indices: the rows are orthogonal
      for (std::int64_t i = 0; i < d_y_; ++i) G[i * d_y_ + i] = diagonal_[i] * diagonal_[i];
      break;
    case observation_kind::svd: {
      const auto r = static_cast<std::int64_t>(diagonal_.size());
      for (std::int64_t i = 0; i < d_y_; ++i)
        for (std::int64_t l = 0; l <= i; ++l) {
          double s = 0;
          for (std::int64_t k = 0; k < r; ++k) s += U_[i * r + k] * diagonal_[k] * diagonal_[k] * U_[l * r + k];
          G[i * d_y_ + l] = G[l * d_y_ + i] = s;
        }
      break;
    }
  }
  return G;
}

namespace {

// The host forms' arguments: a built operator, both vectors given and disjoint (apply_transpose() zeroes x before it
// reads y, and apply() writes y[i] before it reads x[i + 1]: a shared vector gave wrong values without a word).
void check_host_vectors(const observation_operator& op, const char* in, const double* a, std::int64_t a_count,
                        const char* out, const double* b, std::int64_t b_count) {
  DIFFSAMPLE_EXPECTS(!op.empty(), "observation: the operator is empty");
  DIFFSAMPLE_EXPECTS(a != nullptr, in << ": null pointer");
  DIFFSAMPLE_EXPECTS(b != nullptr, out << ": null pointer");
  detail::check_disjoint({{in, a, static_cast<std::size_t>(a_count) * sizeof(double)},
                          {out, b, static_cast<std::size_t>(b_count) * sizeof(double)}});
}

}  // namespace

void observation_operator::apply(const double* x, double* y) const {
  check_host_vectors(*this, "x", x, d_x_, "y", y, d_y_);
  switch (kind_) {
    case observation_kind::dense:
      for (std::int64_t i = 0; i < d_y_; ++i) {
        double s = 0;
        for (std::int64_t j = 0; j < d_x_; ++j) s += A_[i * d_x_ + j] * x[j];
        y[i] = s;
      }
      break;
    case observation_kind::mask:
      for (std::int64_t i = 0; i < d_y_; ++i) y[i] = diagonal_[i] * x[indices_[i]];
      break;
    case observation_kind::svd: {
      const auto r = static_cast<std::int64_t>(diagonal_.size());
      std::vector<double> t(static_cast<std::size_t>(r), 0.0);
      for (std::int64_t j = 0; j < d_x_; ++j)
        for (std::int64_t k = 0; k < r; ++k) t[k] += V_[j * r + k] * x[j];
      for (std::int64_t i = 0; i < d_y_; ++i) {
        double s = 0;
        for (std::int64_t k = 0; k < r; ++k) s += U_[i * r + k] * diagonal_[k] * t[k];
        y[i] = s;
      }
      break;
    }
  }
}

void observation_operator::apply_transpose(const double* y, double* x) const {
  check_host_vectors(*this, "y", y, d_y_, "x", x, d_x_);
  std::fill(x, x + d_x_, 0.0);
  switch (kind_) {
    case observation_kind::dense:
      for (std::int64_t i = 0; i < d_y_; ++i)
        for (std::int64_t j = 0; j < d_x_; ++j) x[j] += A_[i * d_x_ + j] * y[i];
      break;
    case observation_kind::mask:
      for (std::int64_t i = 0; i < d_y_; ++i) x[indices_[i]] = diagonal_[i] * y[i];
      break;
    case observation_kind::svd: {
      const auto r = static_cast<std::int64_t>(diagonal_.size());
      std::vector<double> t(static_cast<std::size_t>(r), 0.0);
      for (std::int64_t i = 0; i < d_y_; ++i)
        for (std::int64_t k = 0; k < r; ++k) t[k] += U_[i * r + k] * y[i];
      for (std::int64_t k = 0; k < r; ++k) t[k] *= diagonal_[k];
      for (std::int64_t j = 0; j < d_x_; ++j) {
        double s = 0;
        for (std::int64_t k = 0; k < r; ++k) s += V_[j * r + k] * t[k];
        x[j] = s;
      }
      break;
    }
  }
}

// --- many points at once ----------------------------------------------------------------------------------------

bool operator_gemm_worthwhile(std::int64_t n, std::int64_t d_y, std::int64_t d_x) noexcept {
  // Measured inside DPS / Pi-GDM's CPU runs (bench_mixture_gemm guided; README, "Observation operators as matrix
  // products"): per particle and step both paths do the same 4 d_y d_x (+ 2 d_y^2) flops; the direct path does them
  // on packs of particles within the pass it makes anyway, the products add passes and BLAS calls whose cost per step
  // is fixed. Whole runs, direct / gemm time (medians): with fewer than 64 particles per product the products lost
  // at d_y d_x <= 1024 (0.60 to 1.03) and gained at most 1.2 above; from 64 particles they gained at every shape of
  // at least 1024 entries (0.93 to 1.60, 71 of 72 medians >= 1, the gain growing with N and d_y d_x), while below
  // 1024 entries the operator is too small a part of the step for either path to gain (0.84 to 1.22). apply_batch's
  // products win at every size measured; it follows the samplers' rule. The CUDA executor uses it unmeasured.
  return n >= operator_gemm_min_points && d_y * d_x >= operator_gemm_min_size;
}

bool operator_gemm_worthwhile(std::int64_t n, std::int64_t d_y, std::int64_t d_x, executor where) noexcept {
  const bool cuda = n >= operator_gemm_min_points && d_y * d_x >= operator_gemm_min_size_cuda;
  switch (where) {
    case executor::cpu: return operator_gemm_worthwhile(n, d_y, d_x);
    case executor::cuda: return cuda;
    default: return cuda || operator_gemm_worthwhile(n, d_y, d_x);
  }
}

namespace detail {

void dense_rows_forward_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* X, std::int64_t n,
                             float* Y) {
  // Column-major: Y^T (d_y x n) = A (A^T as stored, d_x x d_y: transposed) X^T (d_x x n).
  cpu_sgemm('T', 'N', int(d_y), int(n), int(d_x), 1.f, A, int(d_x), X, int(d_x), 0.f, Y, int(d_y));
}

void dense_rows_transpose_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* U, std::int64_t n,
                               float* V) {
  // Column-major: V^T (d_x x n) = A^T (as stored, d_x x d_y) U^T (d_y x n).
  cpu_sgemm('N', 'N', int(d_x), int(n), int(d_y), 1.f, A, int(d_x), U, int(d_y), 0.f, V, int(d_x));
}

}  // namespace detail

mixture_path observation_operator::batch_path(std::int64_t n, mixture_path path) const {
  DIFFSAMPLE_EXPECTS(!empty(), "observation: the operator is empty");
  detail::check_mixture_path("path", path);
  if (path == mixture_path::gemm) {
    DIFFSAMPLE_EXPECTS(kind_ == observation_kind::dense,
                       "path: gemm applies dense operators only; a " << to_string(kind_)
                                                                     << " operator keeps its own form");
    return mixture_path::gemm;
  }
  if (path == mixture_path::direct || kind_ != observation_kind::dense) return mixture_path::direct;
  return operator_gemm_worthwhile(n, d_y_, d_x_) ? mixture_path::gemm : mixture_path::direct;
}

evaluate_report observation_operator::apply_batch(float* out, std::int64_t n, const float* x, bool transpose,
                                                  mixture_path path, execution exec) const {
  limits::check("n", n, 0, limits::max_int_count);
  const mixture_path chosen = batch_path(n, path);
  const executor where = detail::resolve_executor(exec.kind, x);
  DIFFSAMPLE_EXPECTS(where == executor::cpu,
                     "exec: observation_operator::apply_batch runs on the CPU executor only (no device form yet)");
  const std::int64_t in = transpose ? d_y_ : d_x_, width = transpose ? d_x_ : d_y_;
  detail::check_buffer("x", x, n * in, sizeof(float), where);
  detail::check_buffer("out", out, n * width, sizeof(float), where);
  // Each point's outputs are written while other points (and, in place, its own) are still read.
  detail::check_disjoint({{"x", x, static_cast<std::size_t>(n * in) * sizeof(float)},
                          {"out", out, static_cast<std::size_t>(n * width) * sizeof(float)}});
  // The FP32 copy of the operator's values, held to the bound problems.A is held to (the FP64 apply() takes any
  // finite value): a value past FP32 made the products inf or NaN.
  detail::check_operator_values("observation", *this, "apply_batch computes in FP32");
  if (n == 0) return {where, chosen};
  if (chosen == mixture_path::gemm) {
    if (transpose)
      detail::dense_rows_transpose_gemm(values32_.data(), d_y_, d_x_, x, n, out);
    else
      detail::dense_rows_forward_gemm(values32_.data(), d_y_, d_x_, x, n, out);
    return {where, chosen};
  }
  // Direct: one point per index, each output an FP32 sum in index order, from the FP32 factors rounded at
  // construction (no allocation here).
  const std::int64_t dy = d_y_, dx = d_x_;
  const auto r = static_cast<std::int64_t>(diagonal_.size());
  const float* A = values32_.data();
  const float* gains = kind_ == observation_kind::svd ? A + (dy + dx) * r : A;
  const float* U32 = A;
  const float* V32 = A + dy * r;
  const observation_kind kind = kind_;
  const std::int64_t* index = indices_.data();
  cpu::parallel_for_each(n, [&](std::int64_t i) {
    const float* xi = x + i * in;
    float* oi = out + i * width;
    switch (kind) {
      case observation_kind::dense:
        if (!transpose) {
          for (std::int64_t o = 0; o < dy; ++o) {
            float acc = 0.f;
            for (std::int64_t j = 0; j < dx; ++j) acc += A[o * dx + j] * xi[j];
            oi[o] = acc;
          }
        } else {
          for (std::int64_t j = 0; j < dx; ++j) {
            float acc = 0.f;
            for (std::int64_t o = 0; o < dy; ++o) acc += xi[o] * A[o * dx + j];
            oi[j] = acc;
          }
        }
        break;
      case observation_kind::mask:
        if (!transpose) {
          for (std::int64_t o = 0; o < dy; ++o) oi[o] = gains[o] * xi[index[o]];
        } else {
          for (std::int64_t j = 0; j < dx; ++j) oi[j] = 0.f;
          for (std::int64_t o = 0; o < dy; ++o) oi[index[o]] = gains[o] * xi[o];
        }
        break;
      case observation_kind::svd: {
        // t = S (V^T x) or S (U^T x), then U t or V t: r numbers between the two factors.
        const float* first = transpose ? U32 : V32;
        const float* second = transpose ? V32 : U32;
        const std::int64_t n_in = transpose ? dy : dx, n_out = transpose ? dx : dy;
        float t[64];
        for (std::int64_t k0 = 0; k0 < r; k0 += 64) {
          const std::int64_t k1 = std::min(r, k0 + 64);
          for (std::int64_t k = k0; k < k1; ++k) t[k - k0] = 0.f;
          for (std::int64_t j = 0; j < n_in; ++j)
            for (std::int64_t k = k0; k < k1; ++k) t[k - k0] += first[j * r + k] * xi[j];
          for (std::int64_t o = 0; o < n_out; ++o) {
            float acc = k0 == 0 ? 0.f : oi[o];
            for (std::int64_t k = k0; k < k1; ++k) acc += second[o * r + k] * gains[k] * t[k - k0];
            oi[o] = acc;
          }
        }
        break;
      }
    }
  });
  return {where, chosen};
}

}  // namespace diffsample
