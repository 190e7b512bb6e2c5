// Storage behind gaussian_mixture (internal): FP64 and FP32 host copies and one device allocation, with views
// for the kernels of either executor.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/mixture.cuh"
#include <diffsample/execution.hpp>
#include <diffsample/mixture.hpp>

namespace diffsample::detail {

struct gemm_tables;

struct mixture_storage {
  std::int64_t components = 0;
  std::int64_t dim = 0;
  bool isotropic = true;
  std::vector<double> weights, means, variances;  // normalised weights
  std::vector<double> log_weights, cumulative;    // FP64
  std::vector<float> log_weights32, means32, variances32;
  double min_variance = 0, max_variance = 0, max_abs_mean = 0;  // over all entries: the channel range check's bounds
  float* device = nullptr;  // log_weights | cumulative (FP64) | means | variances, or nullptr without a GPU

  // The gemm path's tables (src/mixture_gemm.hpp), built on first use under gemm_mutex.
  mutable std::shared_ptr<gemm_tables> gemm;
  mutable std::mutex gemm_mutex;
  mutable bool gemm_device_ready = false;

  ~mixture_storage();

  kernels::mixture_view<double> view64() const {
    return {log_weights.data(), means.data(), variances.data(), int(components), int(dim), isotropic};
  }
  /// Offsets (floats) of the FP64 cumulative weights, the means and the variances in the device allocation.
  std::int64_t cumulative_offset() const;
  std::int64_t means_offset() const;
  std::int64_t variances_offset() const;
  /// FP32 view for the executor: device arrays for cuda, host arrays for cpu.
  kernels::mixture_view<float> view(executor where) const;
  /// FP64 cumulative weights (K) for the executor (exact samples pick their component against these).
  const double* cumulative_for(executor where) const;
};

/// Checks that the FP32 evaluations of `mix` can run at the channel `ch` (already checked by check_channel()):
/// every component's variance at the channel, c_k = a^2 v_k + s^2, is at least min_variance (the kernels divide by
/// it and take its inverse, which must be normal FP32 numbers, as for the variances themselves), and the channel's
/// image of the prior stays within the prior's limits: a^2 v_k within max_variance and a |mu| within max_abs_value
/// (the kernels form a^2 v and square x - a mu). The message names `name`, the bound and the variance or mean that
/// crosses it.
void check_mixture_channel(const mixture_storage& mix, const char* name, channel ch);

}  // namespace diffsample::detail
