// The exact posterior's executor code (internal): the per-component closed form, and the sampler's FP64 tables on the
// host and, when a GPU is present, one device copy made at construction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <diffsample/execution.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample::detail {

/// Cumulative weights (K), component means (K x d) and transposed Cholesky factors (K x d x d, with
/// U_k[l d + j] = L_k[j d + l], so that consecutive output coordinates read consecutive entries), in this order.
struct posterior_tables {
  std::int64_t components = 0, dim = 0;
  std::vector<double> host;
  double* device = nullptr;  // the same values, or nullptr without a GPU

  posterior_tables() = default;
  posterior_tables(const posterior_tables&) = delete;
  posterior_tables& operator=(const posterior_tables&) = delete;
  ~posterior_tables();

  const double* cumulative(bool on_device) const { return on_device ? device : host.data(); }
  const double* means(bool on_device) const { return cumulative(on_device) + components; }
  const double* factors(bool on_device) const { return means(on_device) + components * dim; }
};

/// Builds the tables from normalised weights, means and lower-triangular factors L_k (K x d x d, row-major), and
/// copies them to the device on `stream` and synchronises it when a GPU is present.
/// @throws out_of_memory or cuda_error when the device copy fails
std::shared_ptr<const posterior_tables> make_posterior_tables(std::int64_t components, std::int64_t dim,
                                                              const std::vector<double>& weights,
                                                              const std::vector<double>& means,
                                                              const std::vector<double>& factors,
                                                              cudaStream_t stream);

/// Per-component closed form of the posterior: log(w_k N(y; A mu_k, C_k)) (K), means m'_k (K x d), covariances S'_k
/// and their factors L_k (K x d x d each).
struct posterior_components_out {
  std::vector<double> log_joint, means, covariances, factors;
};

/// Computes every component on `where` (cpu or cuda, one functor call per component; synchronous: on CUDA the
/// inputs go up, the results come back and `stream` is synchronised). Returns the first component whose
/// A Sigma_k A^T + sigma_y^2 I is not numerically positive definite, or -1. Inputs must be validated.
std::int64_t posterior_components(const gaussian_mixture& prior, const linear_observation& obs, executor where,
                                  cudaStream_t stream, posterior_components_out& out);

}  // namespace diffsample::detail
