// Exact posterior of a diagonal Gaussian-mixture prior under y = A x + sigma_y z: closed-form component weights,
// means and full covariances in FP64 (Kalman form): validation and the mixture-level quantities here, the per-component
// functor and the sampler's functors in kernels/posterior.cuh, launched on both executors by src/posterior_exec.cu.
#include <algorithm>
#include <cmath>
#include <utility>

#include "src/limits.hpp"
#include "src/cuda_check.hpp"
#include "src/posterior_tables.hpp"
#include "src/row_space.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample {
namespace {

// The sizes of an observation, checked before its d_y x d_x matrix exists (an operator's is built from them).
void validate_sizes(const gaussian_mixture& prior, std::int64_t d_y, std::int64_t d_x) {
  limits::check("observation.d_y", d_y, 1, limits::max_posterior_d_y, "each component factors a d_y x d_y matrix");
  DIFFSAMPLE_EXPECTS(d_x == prior.dim(), "observation.d_x: must equal the prior's dimension " << prior.dim() << ", got "
                                                                                              << d_x);
  limits::check("observation: d_y x d_x", d_y * d_x, 1, limits::max_posterior_values,
                "the operator is held on the host in FP64");
}

void validate(const gaussian_mixture& prior, const linear_observation& obs) {
  validate_sizes(prior, obs.d_y, obs.d_x);
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(obs.A.size()) == obs.d_y * obs.d_x,
                     "observation.A: expected d_y x d_x = " << obs.d_y * obs.d_x << " values, got " << obs.A.size());
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(obs.y.size()) == obs.d_y,
                     "observation.y: expected d_y = " << obs.d_y << " values, got " << obs.y.size());
  DIFFSAMPLE_EXPECTS(std::isfinite(obs.sigma_y) && obs.sigma_y >= 0,
                     "observation.sigma_y: must be finite and >= 0, got " << obs.sigma_y);
  detail::check_values("observation.A", obs.A, false);
  detail::check_values("observation.y", obs.y, false);
  detail::check_range("observation.A", obs.A, -max_abs_value, max_abs_value, "the FP32 samplers square A x");
  detail::check_range("observation.y", obs.y, -max_abs_value, max_abs_value, "the FP32 samplers square residuals");
  DIFFSAMPLE_EXPECTS(obs.sigma_y <= max_abs_value,
                     "observation.sigma_y: " << obs.sigma_y << " is above " << max_abs_value);
}

}  // namespace

namespace {
linear_observation from_operator(const gaussian_mixture& prior, const observation_operator& A, double sigma_y,
                                 std::vector<double> y) {
  DIFFSAMPLE_EXPECTS(!A.empty(), "observation: the operator is empty (build it with observation_operator::dense, "
                                 "mask or svd)");
  validate_sizes(prior, A.d_y(), A.d_x());  // before A.matrix() holds d_y x d_x doubles
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

mixture_posterior::mixture_posterior(const gaussian_mixture& prior, const linear_observation& obs)
    : mixture_posterior(prior, obs, execution{executor::cpu, nullptr}) {}

namespace {
// An observation whose A has fewer independent rows than rows (repeated rows, d_y > d_x, A = 0) reduced to A's
// row space: with A = U diag(S) V^T (detail::row_svd) of numerical rank r, U_r^T y = diag(S_r) V_r^T x + sigma_y
// U_r^T z keeps everything that depends on x, and U_perp^T y, pure noise, adds the same log N(U_perp^T y; 0,
// sigma_y^2 I) to every component's log-joint. Left in, that shared term (|U_perp^T y|^2 / 2 sigma_y^2: 5e17 at
// sigma_y = 1e-9) took the weights' FP64 digits (A = 0 at 1e-9: weights 1 and 1), and the Householder QR's rounding
// in the dependent rows, at 1e-16 |A D| / sigma_y, outgrew the identity rows below sigma_y of about 1e-15: the
// unobserved directions' variances collapsed (0.004 for 0.5) and an inconsistent y moved the means along them. rank
// 0 keeps one zero row with y 0 (everything outside). Returns the shared term; obs is left as it is at full rank.
double reduce_to_row_space(linear_observation& obs) {
  if (!(obs.sigma_y > 0)) return 0;  // (sigma_y = 0 needs A of full row rank: refused below as before)
  const std::int64_t dy = obs.d_y, dx = obs.d_x;
  // The rank of A's rows each scaled to unit norm: rows on very different scales (units: 1e9 and 1e-9) are
  // independent however small, and stay (A's own singular values would put the small row below the rank rule).
  std::vector<double> unit = obs.A, U, S, V;
  for (std::int64_t i = 0; i < dy; ++i) {
    double n2 = 0;
    for (std::int64_t j = 0; j < dx; ++j) n2 += unit[i * dx + j] * unit[i * dx + j];
    if (n2 > 0)
      for (std::int64_t j = 0; j < dx; ++j) unit[i * dx + j] /= std::sqrt(n2);
  }
  const std::int64_t rank = detail::row_svd(unit.data(), dy, dx, U, S, V);
  if (rank >= dy) return 0;
  // A's own SVD, keeping its `rank` largest singular directions (a small independent row's among them: the dependent
  // rows' singular values are rounding, below it).
  (void)detail::row_svd(obs.A.data(), dy, dx, U, S, V);
  const std::int64_t rows = std::max<std::int64_t>(rank, 1);
  std::vector<double> A(static_cast<std::size_t>(rows * dx), 0.0), y(static_cast<std::size_t>(rows), 0.0);
  detail::row_space_operator(S, V, dy, dx, rank, A.data());
  const double outside = detail::row_space_observation(U, dy, rank, obs.y.data(), y.data());
  const double shared = detail::outside_log_density(dy - rows, obs.sigma_y, outside);
  obs.d_y = rows;
  obs.A = std::move(A);
  obs.y = std::move(y);
  return shared;
}
}  // namespace

mixture_posterior::mixture_posterior(const gaussian_mixture& prior, const linear_observation& given, execution exec) {
  validate(prior, given);
  linear_observation obs = given;
  const double shared = reduce_to_row_space(obs);
  const executor where = detail::resolve_executor(exec.kind, obs.A.data());
  const cudaStream_t stream = exec.stream != nullptr ? exec.stream : cudaStreamLegacy;
  // Before anything is issued: the components computed on the device are read back, and the tables are allocated
  // (cudaMalloc) and uploaded on the stream, which is then synchronised; none of it can be captured.
  if (cuda_available())  // where == cuda is refused without a GPU
    detail::refuse_capture_unrecordable(stream, "exec.stream",
                                        "mixture_posterior's constructor allocates its device tables (cudaMalloc) "
                                        "and synchronises exec.stream after uploading them (the legacy default "
                                        "stream when exec.stream is null, which joins a blocking stream's capture)",
                                        "make the posterior before the capture begins");
  const std::int64_t K = prior.components(), d = prior.dim();
  components_ = K;
  dim_ = d;
  detail::posterior_components_out c;
  const std::int64_t bad = detail::posterior_components(prior, obs, where, exec.stream, c);
  DIFFSAMPLE_EXPECTS(bad < 0, "observation: A Sigma_k A^T + sigma_y^2 I is not positive definite for component k = "
                                  << bad << " (sigma_y = " << obs.sigma_y
                                  << "; sigma_y = 0 needs A of full row rank)");
  means_ = std::move(c.means);
  covariances_ = std::move(c.covariances);
  const double top = *std::max_element(c.log_joint.begin(), c.log_joint.end());
  double sum = 0;
  for (std::int64_t k = 0; k < K; ++k) sum += std::exp(c.log_joint[k] - top);
  log_evidence_ = top + std::log(sum) + shared;
  DIFFSAMPLE_EXPECTS(std::isfinite(log_evidence_),
                     "observation: log p(y) is " << log_evidence_
                                                 << ": y is too far from the prior's predictions for sigma_y = "
                                                 << obs.sigma_y << " (the weights underflow in FP64)");
  weights_.assign(K, 0);
  log_weights_.assign(K, 0);
  for (std::int64_t k = 0; k < K; ++k) {
    // Relative to the largest log-joint: top + log(sum) rounded back to top where top is large (-5e17: an ulp of
    // 64), and the weights summed to 2.
    log_weights_[k] = (c.log_joint[k] - top) - std::log(sum);
    weights_[k] = std::exp(log_weights_[k]);
  }
  tables_ = detail::make_posterior_tables(K, d, weights_, means_, c.factors, stream);
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
