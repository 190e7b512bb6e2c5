// Test helpers: GPU detection with clean skips, device buffers, statistics with derived tolerances.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

namespace diffsample::testing {

/// Skips the current test (with the reason) when no GPU is usable.
#define DIFFSAMPLE_REQUIRE_GPU()                                                                      \
  do {                                                                                                \
    if (!::diffsample::cuda_available())                                                              \
      GTEST_SKIP() << "no CUDA device: " << ::diffsample::cuda_unavailable_reason();                  \
  } while (0)

/// Skips the current test under compute-sanitizer (scripts/gpu-check.sh sets DIFFSAMPLE_SANITIZER_RUN), with the
/// reason: for a statistical test whose size is its point, which the plain GPU run covers, and which would spend a
/// sanitizer run's whole time limit (the kernels there run one to two orders of magnitude slower) and take the
/// other GPU tests of its program down with it.
#define DIFFSAMPLE_SKIP_UNDER_SANITIZER(why)                                                          \
  do {                                                                                                \
    if (std::getenv("DIFFSAMPLE_SANITIZER_RUN") != nullptr)                                           \
      GTEST_SKIP() << "under compute-sanitizer (DIFFSAMPLE_SANITIZER_RUN): " << why;                  \
  } while (0)

/// A device buffer for GPU tests (synchronous copies; tests only).
template <class T>
struct device_buffer {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit device_buffer(std::size_t count) : n(count) {
    if (cudaMalloc(reinterpret_cast<void**>(&ptr), count * sizeof(T) + 16) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  }
  device_buffer(const std::vector<T>& host) : device_buffer(host.size()) { upload(host); }
  ~device_buffer() { cudaFree(ptr); }
  /// Copies host to the buffer and waits until the copy has landed: cudaMemcpy from pageable memory returns once the
  /// data is staged, its DMA ordered on the legacy default stream only, so a launch on a stream created with
  /// cudaStreamNonBlocking could read the buffer before it (src/validate.hpp, upload_and_wait).
  void upload(const std::vector<T>& host) {
    if (cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess)
      throw std::runtime_error("cudaMemcpy H2D failed");
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    if (cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy D2H failed");
    return host;
  }
};

inline double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

/// Sample variance (n - 1 denominator).
inline double variance(const std::vector<double>& v) {
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / (v.size() - 1);
}

/// Component counts summing to n in the proportions w (largest remainders).
inline std::vector<std::int64_t> counts_for(const std::vector<double>& w, std::int64_t n) {
  std::vector<std::int64_t> c(w.size());
  std::vector<std::pair<double, std::size_t>> rest;
  std::int64_t used = 0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    c[k] = static_cast<std::int64_t>(std::floor(w[k] * double(n)));
    used += c[k];
    rest.push_back({w[k] * double(n) - double(c[k]), k});
  }
  std::sort(rest.rbegin(), rest.rend());
  for (std::int64_t i = 0; i < n - used; ++i) c[rest[static_cast<std::size_t>(i) % rest.size()].second] += 1;
  return c;
}

/// Coordinate j of an n x d float array as doubles.
inline std::vector<double> column(const std::vector<float>& x, std::int64_t d, std::int64_t j) {
  std::vector<double> c(x.size() / d);
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = x[i * d + j];
  return c;
}

}  // namespace diffsample::testing
