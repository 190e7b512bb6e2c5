// The closed form of one component of a mixture prior's posterior under a linear-Gaussian observation, as a
// functor over components run by both executors (src/posterior_exec.cu): FP64, serial per component; and the exact
// sampler's two functors, each sample's component and normals, then x = m'_k + L_k z per coordinate.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/linalg.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// Component k of the posterior, in the covariance (Kalman) form. With C = A Sigma_k A^T + sigma_y^2 I = L L^T,
/// W = L^-1 A Sigma_k and e = L^-1 (y - A mu_k): S' = Sigma_k - W^T W, m' = mu_k + W^T e and
/// log N(y; A mu_k, C) = -(m log 2 pi + |e|^2) / 2 - sum log L_ii. Serial FP64 per component.
struct posterior_component_functor {
  const double* prior_means;        // K x d
  const double* prior_variances;    // K (isotropic) or K x d
  const double* log_prior_weights;  // K
  bool isotropic;
  const double* A;  // m x d
  const double* y;  // m
  double s2;
  std::int64_t m, d;
  double* work;          // K x (m d + m m + m)
  double* log_joint;     // K
  double* means;         // K x d
  double* covariances;   // K x d x d
  double* factors;       // K x d x d
  std::int32_t* singular;  // K: 1 when C is not numerically positive definite
  DS_HD void operator()(std::int64_t k) const {
    double* a_sigma = work + k * (m * d + m * m + m);
    double* c = a_sigma + m * d;
    double* r = c + m * m;
    const double* mu = prior_means + k * d;
    const double* v = isotropic ? prior_variances + k : prior_variances + k * d;
    const std::int64_t v_stride = isotropic ? 0 : 1;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < d; ++j) a_sigma[i * d + j] = A[i * d + j] * v[j * v_stride];
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t l = 0; l <= i; ++l) {
        double s = 0;
        for (std::int64_t j = 0; j < d; ++j) s += a_sigma[i * d + j] * A[l * d + j];
        c[i * m + l] = c[l * m + i] = s + (i == l ? s2 : 0.0);
      }
      double s = y[i];
      for (std::int64_t j = 0; j < d; ++j) s -= A[i * d + j] * mu[j];
      r[i] = s;
    }
    singular[k] = cholesky_failure_scaled(c, m) < 0 ? 0 : 1;  // c's diagonal is a sum of squares plus s2
    if (singular[k]) {
      // Defined outputs all the same (zeros, as the CPU executor's buffers start): the CUDA executor copies every
      // component's outputs back with the flags, and a copy of unwritten device memory is what initcheck reports.
      // Not unrolled on the device: unrolled, these loops took the 32-thread kernel from 80 registers to 128.
      log_joint[k] = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
      for (std::int64_t j = 0; j < d; ++j) means[k * d + j] = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
      for (std::int64_t e = 0; e < d * d; ++e) covariances[k * d * d + e] = factors[k * d * d + e] = 0;
      return;
    }
    forward_substitute(c, m, a_sigma, d);
    forward_substitute(c, m, r, 1);
    double log_det_half = 0, quad = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      log_det_half += ds_log(c[i * m + i]);
      quad += r[i] * r[i];
    }
    log_joint[k] = log_prior_weights[k] - 0.5 * (double(m) * log_two_pi<double>() + quad) - log_det_half;
    double* mean = means + k * d;
    double* cov = covariances + k * d * d;
    double* L = factors + k * d * d;
    for (std::int64_t j = 0; j < d; ++j) {
      double s = mu[j];
      for (std::int64_t i = 0; i < m; ++i) s += a_sigma[i * d + j] * r[i];
      mean[j] = s;
      for (std::int64_t l = 0; l <= j; ++l) {
        double t = (j == l ? v[j * v_stride] : 0.0);
        for (std::int64_t i = 0; i < m; ++i) t -= a_sigma[i * d + j] * a_sigma[i * d + l];
        cov[j * d + l] = cov[l * d + j] = t;
        L[j * d + l] = L[l * d + j] = t;
      }
    }
    psd_factor(L, d);
  }
};

/// Item (i, slot) of a chunk: slot 0 draws the component of sample i from Philox block 0 of its stream (a 53-bit
/// uniform against the cumulative weights scaled by their FP64 total); slot p >= 1 draws normals 2(p-1), 2p-1
/// from block p. The blocks are those a sequential draw (uniform2, then normal2 pairs) would consume.
struct posterior_draw_functor {
  const double* cumulative;
  std::int64_t components;
  int pairs;
  std::uint64_t seed, first;
  double* z;               // chunk x 2 pairs
  std::int32_t* chosen;    // chunk
  std::int32_t* labels;    // chunk, or nullptr
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t i = e / (pairs + 1);
    const int slot = static_cast<int>(e - i * (pairs + 1));
    philox rng(seed, first + static_cast<std::uint64_t>(i), 0, 4 * static_cast<std::uint64_t>(slot));
    if (slot == 0) {
      const double u = curand_uniform2_double(&rng.state).x * cumulative[components - 1];
      // The first k with cumulative[k] >= u (the last component when rounding leaves u above every entry).
      std::int64_t lo = 0, hi = components - 1;
      while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        if (cumulative[mid] < u)
          lo = mid + 1;
        else
          hi = mid;
      }
      chosen[i] = static_cast<std::int32_t>(lo);
      if (labels != nullptr) labels[i] = static_cast<std::int32_t>(lo);
    } else {
      const double2 g = curand_normal2_double(&rng.state);
      double* zi = z + i * 2 * pairs + 2 * (slot - 1);
      zi[0] = g.x;
      zi[1] = g.y;
    }
  }
};

/// Coordinate j of sample i: m'_k[j] + sum_{l <= j} L_k[j, l] z_l, summed in order of l (operator() per coordinate on
/// CUDA, row() per sample on the CPU).
template <class T>
struct posterior_transform_functor {
  const double* means;
  const double* factors_t;
  const double* z;
  const std::int32_t* chosen;
  int d, pairs;
  T* out;
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t i = e / d;
    const int j = static_cast<int>(e - i * d);
    const std::int64_t k = chosen[i];
    const double* U = factors_t + k * d * d + j;
    const double* zi = z + i * 2 * pairs;
    double s = means[k * d + j];
    for (int l = 0; l <= j; ++l) s += U[static_cast<std::int64_t>(l) * d] * zi[l];
    out[e] = static_cast<T>(s);
  }

  /// The CPU's form of operator(): sample i, its coordinates in blocks of 256 accumulated over l in increasing
  /// order (the same sums in the same order as operator(), so the same bits), reading U_k row by row (contiguous in
  /// j, a loop the compiler vectorises) instead of one stride-d column per coordinate.
  void row(std::int64_t i) const {
    constexpr int block = 256;
    double acc[block];
    const std::int64_t k = chosen[i];
    const double* U = factors_t + k * d * d;
    const double* zi = z + i * 2 * pairs;
    const double* m = means + k * d;
    T* o = out + i * d;
    for (int j0 = 0; j0 < d; j0 += block) {
      const int j1 = std::min(d, j0 + block);
      for (int j = j0; j < j1; ++j) acc[j - j0] = m[j];
      for (int l = 0; l < j1; ++l) {
        const double zl = zi[l];
        const double* row = U + static_cast<std::int64_t>(l) * d;
        for (int j = std::max(l, j0); j < j1; ++j) acc[j - j0] += row[j] * zl;
      }
      for (int j = j0; j < j1; ++j) o[j] = static_cast<T>(acc[j - j0]);
    }
  }
};

}  // namespace diffsample::kernels
