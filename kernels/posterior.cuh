// The closed form of one component of a mixture prior's posterior under a linear-Gaussian observation, as a
// functor over components run by both executors (src/posterior_exec.cu): FP64, serial per component.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/linalg.cuh"
#include "kernels/mixture.cuh"

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
    singular[k] = cholesky(c, m) ? 0 : 1;
    if (singular[k]) return;
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

}  // namespace diffsample::kernels
