// Helpers shared by the benchmark programs: CUDA error checks and event timing of one launch after a warm-up.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <cuda_runtime_api.h>

namespace bench {

inline void check(cudaError_t s, const char* what) {
  if (s != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(s));
    std::exit(1);
  }
}

/// A device allocation of `bytes` (none when 0), freed on scope exit.
struct device_memory {
  void* p = nullptr;
  explicit device_memory(std::size_t bytes) {
    if (bytes) check(cudaMalloc(&p, bytes), "cudaMalloc");
  }
  ~device_memory() { cudaFree(p); }
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;
};

/// Seconds taken by run() on the legacy default stream, timed with CUDA events after warm_up() has run once
/// (module load, caches).
template <class Warm, class Run>
double time_on_gpu(Warm&& warm_up, Run&& run) {
  warm_up();
  cudaEvent_t t0, t1;
  check(cudaEventCreate(&t0), "cudaEventCreate");
  check(cudaEventCreate(&t1), "cudaEventCreate");
  check(cudaEventRecord(t0), "cudaEventRecord");
  run();
  check(cudaEventRecord(t1), "cudaEventRecord");
  check(cudaEventSynchronize(t1), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, t0, t1), "cudaEventElapsedTime");
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  return ms * 1e-3;
}

}  // namespace bench
