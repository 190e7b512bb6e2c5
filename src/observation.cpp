// Observation operators: dense, mask/diagonal and SVD forms of A, validated at construction, applied in their own
// form on the host. The guided samplers' device representation is built in src/guided.cu.
#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/linalg.cuh"
#include "src/cuda_check.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/observation.hpp>

namespace diffsample {

namespace {

// Bound on stored values (d_y d_x for dense, and the factors of an SVD): 2^28 doubles = 2 GiB of host memory.
constexpr std::int64_t max_values = std::int64_t(1) << 28;

void check_dims(std::int64_t d_y, std::int64_t d_x) {
  DIFFSAMPLE_EXPECTS(d_y >= 1, "observation: d_y must be >= 1, got " << d_y);
  DIFFSAMPLE_EXPECTS(d_x >= 1, "observation: d_x must be >= 1, got " << d_x);
  DIFFSAMPLE_EXPECTS(d_y <= max_values / d_x,
                     "observation: d_y x d_x = " << d_y << " x " << d_x << " exceeds 2^28 values");
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
  return op;
}

observation_operator observation_operator::mask(std::int64_t d_x, std::vector<std::int64_t> indices,
                                                std::vector<double> diagonal) {
  DIFFSAMPLE_EXPECTS(d_x >= 1, "observation: d_x must be >= 1, got " << d_x);
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

void observation_operator::apply(const double* x, double* y) const {
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

}  // namespace diffsample
