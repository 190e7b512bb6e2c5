// What the exact posterior sampler reads (internal): FP64 tables on the host and, when a GPU is present, one device
// copy made at construction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

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
/// copies them to the device (synchronous cudaMemcpy) when a GPU is present.
/// @throws out_of_memory or cuda_error when the device copy fails
std::shared_ptr<const posterior_tables> make_posterior_tables(std::int64_t components, std::int64_t dim,
                                                              const std::vector<double>& weights,
                                                              const std::vector<double>& means,
                                                              const std::vector<double>& factors);

}  // namespace diffsample::detail
