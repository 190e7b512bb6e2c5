/// @file posterior.hpp
/// @brief The exact posterior of a Gaussian-mixture prior under a linear-Gaussian observation y = A x + sigma_y z.
///
/// With prior sum_k w_k N(mu_k, Sigma_k) (Sigma_k diagonal) the posterior is again a mixture,
/// p(x | y) = sum_k w'_k N(m'_k, S'_k), with full covariances S'_k (formulas in the README). Everything is
/// computed once in FP64 (per component, on either executor), in the covariance (Kalman) form, which also covers
/// sigma_y = 0 when A Sigma_k A^T is non-singular. This is the reference that posterior samplers are scored against.
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/observation.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace diffsample {

namespace detail {
struct posterior_tables;
}

/// A linear observation y = A x + sigma_y z, z ~ N(0, I_{d_y}).
struct linear_observation {
  std::int64_t d_y = 0;   ///< observation dimension, >= 1
  std::int64_t d_x = 0;   ///< signal dimension, equal to the prior's dimension
  std::vector<double> A;  ///< d_y x d_x, row-major, finite
  double sigma_y = 0;     ///< noise scale, finite and >= 0
  std::vector<double> y;  ///< d_y observed values, finite
};

/// The exact posterior mixture of a gaussian_mixture prior given a linear_observation (FP64, results in host vectors).
///
/// Construction is synchronous work of O(K (d_x^3 + d_y^3 + d_y d_x^2)), on the CPU executor unless an execution
/// names CUDA. When a GPU is present it also copies the sampling tables (K (d_x^2 + d_x + 1) doubles) to the device
/// on exec.stream (the legacy default stream for the constructors without an execution) and synchronises that
/// stream, so the tables are in place for kernels on any stream when the constructor returns; copies of the object
/// share that device copy.
class DIFFSAMPLE_API mixture_posterior {
 public:
  /// A component whose A Sigma_k A^T + sigma_y^2 I fails that test while sigma_y > 0 (more rows than A has rank,
  /// with sigma_y small against A Sigma_k A^T), or whose sigma_y^2 is below 1e-6 of its largest predictive variance
  /// (where Sigma_k - W^T W cancels), is computed in the square-root information form instead (on the host).
  /// @throws invalid_argument when sizes disagree, a value is not finite, sigma_y < 0, or
  ///         A Sigma_k A^T + sigma_y^2 I is not numerically positive definite for some component (a Cholesky pivot
  ///         at or below 1e-13 times its own diagonal entry) with sigma_y = 0 (A not of full row rank), or with a
  ///         sigma_y so small that A Sigma_k^(1/2) / sigma_y overflows; the message names the argument and value
  mixture_posterior(const gaussian_mixture& prior, const linear_observation& observation);
  /// The same posterior computed on a chosen executor: one functor call per component (its closed form and the
  /// Cholesky factor of S'_k, serial FP64) on the CUDA executor (one thread per component) or the CPU one (OpenMP
  /// over components; what the constructor above runs). The results always land in host vectors, so on CUDA this
  /// uploads the inputs, runs on exec.stream and synchronises it. `automatic` picks the CPU (the inputs are host
  /// vectors). Components agree across executors up to FP64 rounding; the CPU result does not depend on threads.
  /// @throws invalid_argument as above, when cuda is requested without a GPU, or when a GPU is present and
  ///         exec.stream (the legacy default stream when null) is being captured into a CUDA graph (the allocation
  ///         and the synchronisation cannot be captured), before anything is issued
  mixture_posterior(const gaussian_mixture& prior, const linear_observation& observation, execution exec);
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

  /// Exact posterior samples on the host (synchronous; the CPU executor, OpenMP over samples). Sample i draws its
  /// component and normals from the Philox stream (seed, first_index + i, 0): block 0 gives a 53-bit uniform that
  /// picks the component against the cumulative weights, block p >= 1 gives the normals z_{2p-2}, z_{2p-1}, and
  /// x = m'_k + L_k z with L_k the Cholesky factor of S'_k. Results do not depend on how a set of samples is split
  /// into calls, on the thread count, or (up to rounding of the FP64 arithmetic) on the executor.
  /// @param out     n x d_x host doubles
  /// @param labels  optional n host int32 component indices (nullptr to skip), not overlapping @p out
  void sample(double* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels = nullptr,
              std::uint64_t first_index = 0) const;
  /// The same samples rounded to float (n x d_x host floats), e.g. for sliced_wasserstein() against a sampler.
  void sample(float* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels = nullptr,
              std::uint64_t first_index = 0) const;
  /// The same samples on either executor: `out` and `labels` device-accessible for CUDA (computed in FP64 on the
  /// device from the copy made at construction), host-accessible for the CPU. Asynchronous on the CUDA executor;
  /// the call's scratch (at most 32 MiB, stream-ordered) bounds how many samples run per launch, never which
  /// values they get.
  /// @return the executor that ran
  /// @throws invalid_argument for a negative n, an n x d_x that overflows, first_index > limits::max_first_chain, or
  ///         a buffer the executor cannot reach; out_of_memory when the scratch cannot be allocated
  executor sample(float* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels, std::uint64_t first_index,
                  execution exec) const;
  /// FP64 output on either executor (n x d_x doubles); otherwise as the float overload above.
  executor sample(double* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels, std::uint64_t first_index,
                  execution exec) const;
  /// sample() on an executor with the execution before labels and first_index: the order before every sibling put
  /// the execution last (gaussian_mixture::sample).
  [[deprecated("put the execution last: sample(out, n, seed, labels, first_index, exec)")]] executor sample(
      float* out, std::int64_t n, std::uint64_t seed, execution exec, std::int32_t* labels = nullptr,
      std::uint64_t first_index = 0) const {
    return sample(out, n, seed, labels, first_index, exec);
  }
  /// The FP64 form of the deprecated order above.
  [[deprecated("put the execution last: sample(out, n, seed, labels, first_index, exec)")]] executor sample(
      double* out, std::int64_t n, std::uint64_t seed, execution exec, std::int32_t* labels = nullptr,
      std::uint64_t first_index = 0) const {
    return sample(out, n, seed, labels, first_index, exec);
  }

 private:
  std::int64_t components_ = 0, dim_ = 0;
  std::vector<double> weights_, log_weights_, means_, covariances_;
  // Cumulative weights, means and the Cholesky factors of S'_k for sampling, on the host and the device; shared
  // (immutable) between copies of this object.
  std::shared_ptr<const detail::posterior_tables> tables_;
  template <class T>
  executor sample_on(T* out, std::int64_t n, std::uint64_t seed, execution exec, std::int32_t* labels,
                     std::uint64_t first_index) const;
  double log_evidence_ = 0;
};

}  // namespace diffsample
