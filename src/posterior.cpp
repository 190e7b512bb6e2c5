// Exact posterior of a diagonal Gaussian-mixture prior under y = A x + sigma_y z: closed-form component weights,
// means and full covariances in FP64 (Kalman form). The sampler is in src/posterior_sample.cu.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "src/cuda_check.hpp"
#include "src/linalg.hpp"
#include "src/posterior_tables.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample {
namespace {

constexpr double log_two_pi = 1.8378770664093454835606594728112;

/// Cholesky factor of a positive semi-definite matrix: a pivot below a relative tolerance (rounding of an exactly
/// singular posterior, e.g. sigma_y = 0) zeroes its column, so the factor spans only the non-degenerate directions.
std::vector<double> psd_factor(std::vector<double> m, std::int64_t n) {
  double scale = 0;
  for (std::int64_t j = 0; j < n; ++j) scale = std::max(scale, std::abs(m[j * n + j]));
  const double tolerance = 1e-13 * scale;
  for (std::int64_t j = 0; j < n; ++j) {
    double pivot = m[j * n + j];
    for (std::int64_t k = 0; k < j; ++k) pivot -= m[j * n + k] * m[j * n + k];
    const bool degenerate = !(pivot > tolerance);
    const double l = degenerate ? 0.0 : std::sqrt(pivot);
    m[j * n + j] = l;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double s = m[i * n + j];
      for (std::int64_t k = 0; k < j; ++k) s -= m[i * n + k] * m[j * n + k];
      m[i * n + j] = degenerate ? 0.0 : s / l;
    }
    for (std::int64_t i = 0; i < j; ++i) m[i * n + j] = 0;
  }
  return m;
}

/// Solves L x = b in place (L lower triangular, n x n), for b with `columns` columns stored row-major (n x columns).
void forward_substitute(const std::vector<double>& L, std::int64_t n, double* b, std::int64_t columns) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < columns; ++c) {
      double s = b[i * columns + c];
      for (std::int64_t k = 0; k < i; ++k) s -= L[i * n + k] * b[k * columns + c];
      b[i * columns + c] = s / L[i * n + i];
    }
}

void validate(const gaussian_mixture& prior, const linear_observation& obs) {
  DIFFSAMPLE_EXPECTS(obs.d_y >= 1, "observation.d_y: must be >= 1, got " << obs.d_y);
  DIFFSAMPLE_EXPECTS(obs.d_x == prior.dim(),
                     "observation.d_x: must equal the prior's dimension " << prior.dim() << ", got " << obs.d_x);
  DIFFSAMPLE_EXPECTS(obs.d_y <= (std::int64_t(1) << 20) / std::max<std::int64_t>(obs.d_x, 1),
                     "observation.d_y: d_y x d_x = " << obs.d_y << " x " << obs.d_x << " is too large for the host");
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(obs.A.size()) == obs.d_y * obs.d_x,
                     "observation.A: expected d_y x d_x = " << obs.d_y * obs.d_x << " values, got " << obs.A.size());
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(obs.y.size()) == obs.d_y,
                     "observation.y: expected d_y = " << obs.d_y << " values, got " << obs.y.size());
  DIFFSAMPLE_EXPECTS(std::isfinite(obs.sigma_y) && obs.sigma_y >= 0,
                     "observation.sigma_y: must be finite and >= 0, got " << obs.sigma_y);
  detail::check_values("observation.A", obs.A, false);
  detail::check_values("observation.y", obs.y, false);
}

}  // namespace

namespace {
linear_observation from_operator(const gaussian_mixture& prior, const observation_operator& A, double sigma_y,
                                 std::vector<double> y) {
  DIFFSAMPLE_EXPECTS(!A.empty(), "observation: the operator is empty (build it with observation_operator::dense, "
                                 "mask or svd)");
  DIFFSAMPLE_EXPECTS(A.d_x() == prior.dim(),
                     "observation: the operator's d_x " << A.d_x() << " is not the prior's dimension " << prior.dim());
  linear_observation obs;
  obs.d_y = A.d_y();
  obs.d_x = A.d_x();
  obs.A = A.matrix();
  obs.sigma_y = sigma_y;
  obs.y = std::move(y);
  return obs;
}
}  // namespace

mixture_posterior::mixture_posterior(const gaussian_mixture& prior, const observation_operator& A, double sigma_y,
                                     std::vector<double> y)
    : mixture_posterior(prior, from_operator(prior, A, sigma_y, std::move(y))) {}

mixture_posterior::mixture_posterior(const gaussian_mixture& prior, const linear_observation& obs) {
  validate(prior, obs);
  const std::int64_t K = prior.components(), d = prior.dim(), m = obs.d_y;
  components_ = K;
  dim_ = d;
  weights_.assign(K, 0);
  log_weights_.assign(K, 0);
  means_.assign(K * d, 0);
  covariances_.assign(K * d * d, 0);
  std::vector<double> factors(K * d * d, 0.0);
  const double s2 = obs.sigma_y * obs.sigma_y;

  std::vector<double> log_joint(K);
  std::vector<double> a_sigma(m * d), c(m * m), r(m), v(d);
  for (std::int64_t k = 0; k < K; ++k) {
    const double* mu = prior.means().data() + k * d;
    for (std::int64_t j = 0; j < d; ++j) v[j] = prior.isotropic() ? prior.variances()[k] : prior.variances()[k * d + j];
    // A Sigma_k (m x d), C = A Sigma_k A^T + sigma^2 I (m x m), residual r = y - A mu_k.
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < d; ++j) a_sigma[i * d + j] = obs.A[i * d + j] * v[j];
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t l = 0; l <= i; ++l) {
        double s = 0;
        for (std::int64_t j = 0; j < d; ++j) s += a_sigma[i * d + j] * obs.A[l * d + j];
        c[i * m + l] = c[l * m + i] = s + (i == l ? s2 : 0.0);
      }
      double s = obs.y[i];
      for (std::int64_t j = 0; j < d; ++j) s -= obs.A[i * d + j] * mu[j];
      r[i] = s;
    }
    DIFFSAMPLE_EXPECTS(detail::cholesky(c.data(), m), "observation: A Sigma_k A^T + sigma_y^2 I is not positive definite for "
                                       "component k = " << k << " (sigma_y = " << obs.sigma_y
                                                         << "; sigma_y = 0 needs A of full row rank)");
    // With C = L L^T: W = L^-1 A Sigma_k and e = L^-1 r give S' = Sigma - W^T W, m' = mu + W^T e and
    // log N(y; A mu, C) = -(m log 2 pi + |e|^2) / 2 - sum log L_ii.
    forward_substitute(c, m, a_sigma.data(), d);
    forward_substitute(c, m, r.data(), 1);
    double log_det_half = 0, quad = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      log_det_half += std::log(c[i * m + i]);
      quad += r[i] * r[i];
    }
    log_joint[k] = std::log(prior.weights()[k]) - 0.5 * (double(m) * log_two_pi + quad) - log_det_half;
    double* mean = means_.data() + k * d;
    double* cov = covariances_.data() + k * d * d;
    for (std::int64_t j = 0; j < d; ++j) {
      double s = mu[j];
      for (std::int64_t i = 0; i < m; ++i) s += a_sigma[i * d + j] * r[i];
      mean[j] = s;
      for (std::int64_t l = 0; l <= j; ++l) {
        double t = (j == l ? v[j] : 0.0);
        for (std::int64_t i = 0; i < m; ++i) t -= a_sigma[i * d + j] * a_sigma[i * d + l];
        cov[j * d + l] = cov[l * d + j] = t;
      }
    }
    const std::vector<double> L = psd_factor(std::vector<double>(cov, cov + d * d), d);
    std::copy(L.begin(), L.end(), factors.begin() + k * d * d);
  }
  const double top = *std::max_element(log_joint.begin(), log_joint.end());
  double sum = 0;
  for (std::int64_t k = 0; k < K; ++k) sum += std::exp(log_joint[k] - top);
  log_evidence_ = top + std::log(sum);
  for (std::int64_t k = 0; k < K; ++k) {
    log_weights_[k] = log_joint[k] - log_evidence_;
    weights_[k] = std::exp(log_weights_[k]);
  }
  tables_ = detail::make_posterior_tables(K, d, weights_, means_, factors);
}

std::vector<double> mixture_posterior::mean() const {
  std::vector<double> out(dim_, 0.0);
  for (std::int64_t k = 0; k < components_; ++k)
    for (std::int64_t j = 0; j < dim_; ++j) out[j] += weights_[k] * means_[k * dim_ + j];
  return out;
}

std::vector<double> mixture_posterior::covariance() const {
  // Law of total covariance: sum_k w_k (S_k + (m_k - m)(m_k - m)^T).
  const std::vector<double> m = mean();
  const std::int64_t d = dim_;
  std::vector<double> out(d * d, 0.0);
  for (std::int64_t k = 0; k < components_; ++k)
    for (std::int64_t i = 0; i < d; ++i)
      for (std::int64_t j = 0; j < d; ++j)
        out[i * d + j] += weights_[k] * (covariances_[(k * d + i) * d + j] +
                                         (means_[k * d + i] - m[i]) * (means_[k * d + j] - m[j]));
  return out;
}

}  // namespace diffsample
