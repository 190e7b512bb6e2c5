/// @file posterior.hpp
/// @brief The exact posterior of a Gaussian-mixture prior under a linear-Gaussian observation y = A x + sigma_y z.
///
/// With prior sum_k w_k N(mu_k, Sigma_k) (Sigma_k diagonal) the posterior is again a mixture,
/// p(x | y) = sum_k w'_k N(m'_k, S'_k), with full covariances S'_k (formulas in the README). Everything is
/// computed once, in FP64 on the host, in the covariance (Kalman) form, which also covers sigma_y = 0 when
/// A Sigma_k A^T is non-singular. This is the reference that posterior samplers are scored against.
#pragma once

#include <diffsample/export.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/observation.hpp>

#include <cstdint>
#include <vector>

namespace diffsample {

/// A linear observation y = A x + sigma_y z, z ~ N(0, I_{d_y}).
struct linear_observation {
  std::int64_t d_y = 0;   ///< observation dimension, >= 1
  std::int64_t d_x = 0;   ///< signal dimension, equal to the prior's dimension
  std::vector<double> A;  ///< d_y x d_x, row-major, finite
  double sigma_y = 0;     ///< noise scale, finite and >= 0
  std::vector<double> y;  ///< d_y observed values, finite
};

/// The exact posterior mixture of a gaussian_mixture prior given a linear_observation (host, FP64).
///
/// Construction is synchronous host work of O(K (d_x^3 + d_y^3 + d_y d_x^2)); it launches nothing.
class DIFFSAMPLE_API mixture_posterior {
 public:
  /// @throws invalid_argument when sizes disagree, a value is not finite, sigma_y < 0, or
  ///         A Sigma_k A^T + sigma_y^2 I is not numerically positive definite for some component (a Cholesky pivot
  ///         at or below 1e-13 times its largest diagonal entry, e.g. sigma_y = 0 with A not of full row rank);
  ///         the message names the argument and value
  mixture_posterior(const gaussian_mixture& prior, const linear_observation& observation);
  /// The posterior under y = A x + sigma_y z for an observation_operator of any kind (used through its dense
  /// matrix(), so the host cost is the dense one above).
  /// @throws invalid_argument as the constructor above, and for an empty operator or one whose d_x is not the
  ///         prior's dimension
  mixture_posterior(const gaussian_mixture& prior, const observation_operator& A, double sigma_y,
                    std::vector<double> y);

  std::int64_t components() const noexcept { return components_; }  ///< K
  std::int64_t dim() const noexcept { return dim_; }                 ///< d_x

  /// Posterior weights w'_k, normalised, K values.
  const std::vector<double>& weights() const noexcept { return weights_; }
  /// log w'_k, K values (finite even when w'_k underflows).
  const std::vector<double>& log_weights() const noexcept { return log_weights_; }
  /// Posterior component means m'_k, K x d_x row-major.
  const std::vector<double>& means() const noexcept { return means_; }
  /// Posterior component covariances S'_k, K x d_x x d_x row-major, symmetric positive semi-definite.
  const std::vector<double>& covariances() const noexcept { return covariances_; }
  /// log p(y) = log sum_k w_k N(y; A mu_k, A Sigma_k A^T + sigma_y^2 I).
  double log_evidence() const noexcept { return log_evidence_; }

  /// Mean of the whole posterior mixture, d_x values.
  std::vector<double> mean() const;
  /// Covariance of the whole posterior mixture, d_x x d_x row-major.
  std::vector<double> covariance() const;

  /// Exact posterior samples on the host (synchronous, OpenMP over samples). Sample i draws its component and
  /// normals from the Philox stream (seed, first_index + i, 0), so results do not depend on how a set of samples
  /// is split into calls or on the thread count.
  /// @param out     n x d_x host doubles
  /// @param labels  optional n host int32 component indices (nullptr to skip)
  void sample(double* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels = nullptr,
              std::uint64_t first_index = 0) const;
  /// The same samples rounded to float (n x d_x host floats), e.g. for sliced_wasserstein() against a sampler.
  void sample(float* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels = nullptr,
              std::uint64_t first_index = 0) const;

 private:
  std::int64_t components_ = 0, dim_ = 0;
  std::vector<double> weights_, log_weights_, means_, covariances_;
  std::vector<double> factors_;  // K lower-triangular L_k with L_k L_k^T = S'_k, for sampling
  template <class T>
  void sample_into(T* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels, std::uint64_t first_index) const;
  double log_evidence_ = 0;
};

}  // namespace diffsample
