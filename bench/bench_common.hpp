// Helpers shared by the benchmark programs: the chain benchmarks' command line, CUDA error checks and event timing
// of one launch after a warm-up.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <time.h>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

namespace bench {

/// CPU time of the whole process (all threads) in seconds: chain-steps per CPU-second is the per-core rate, which
/// other processes on a shared machine disturb far less than the wall-clock rate.
inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

/// The command line of the chain benchmarks, `[chains] [steps] [cpu] [d,d,...]`: the GPU when one is present
/// unless the third argument is `cpu` (any other word, e.g. `auto`, keeps the default); defaults 2^20 chains x 1000 steps on a GPU, 2^14 x 20 on the CPU; the
/// dimensions 2, 10, 100 unless the fourth argument lists others (comma-separated).
struct chain_args {
  bool gpu;
  std::int64_t chains, steps;
  diffsample::executor where;
  std::vector<std::int64_t> dims;
};

/// argv[i] as a count of at least 1 when given (argc > i), else @p fallback; anything else (0, negative, not a
/// number, trailing characters) exits with status 2, naming the argument: a benchmark does not print rates of
/// nothing.
inline std::int64_t count_arg(int argc, char** argv, int i, const char* name, std::int64_t fallback) {
  if (argc <= i) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(argv[i], &end, 10);
  if (end == argv[i] || *end != '\0' || v < 1) {
    std::fprintf(stderr, "%s: expected a positive integer, got '%s'\n", name, argv[i]);
    std::exit(2);
  }
  return v;
}

inline chain_args parse_chain_args(int argc, char** argv) {
  chain_args a{};
  a.gpu = diffsample::cuda_available() && !(argc > 3 && std::string(argv[3]) == "cpu");
  a.chains = count_arg(argc, argv, 1, "chains", a.gpu ? (std::int64_t(1) << 20) : (std::int64_t(1) << 14));
  a.steps = count_arg(argc, argv, 2, "steps", a.gpu ? 1000 : 20);
  a.where = a.gpu ? diffsample::executor::cuda : diffsample::executor::cpu;
  if (argc > 4) {
    for (const char* p = argv[4]; *p != '\0';) {
      char* end = nullptr;
      const long long d = std::strtoll(p, &end, 10);
      if (end == p || d < 1) {
        std::fprintf(stderr, "dimensions: expected a comma-separated list of positive integers, got '%s'\n", argv[4]);
        std::exit(2);
      }
      a.dims.push_back(d);
      p = *end == ',' ? end + 1 : end;
    }
  } else {
    a.dims = {2, 10, 100};
  }
  return a;
}

inline void check(cudaError_t s, const char* what) {
  if (s != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(s));
    std::exit(1);
  }
}

/// The current device's peak DRAM bandwidth in GB/s, from its memory clock and bus width (2 transfers per clock),
/// or 0 when the runtime does not report them.
inline double peak_dram_gbs() {
  int device = 0, clock_khz = 0, bus_bits = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess)
    return 0;
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
}

/// The current device's FP32 peak in FLOP/s: multiprocessors x FP32 lanes per multiprocessor x 2 (a fused
/// multiply-add) x the largest SM clock; 0 when the runtime does not report them or the architecture is not listed.
/// Lanes: 64 on sm_60, sm_70 and sm_80; 128 on sm_61, sm_75 (64), sm_86, sm_89, sm_90 and sm_100 and later.
inline double peak_fp32_flops() {
  int device = 0, sms = 0, clock_khz = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    return 0;
  int lanes = 0;
  if (major == 6) lanes = minor == 0 ? 64 : 128;
  else if (major == 7) lanes = 64;
  else if (major == 8) lanes = minor == 0 ? 64 : 128;
  else if (major >= 9) lanes = 128;
  return double(sms) * lanes * 2.0 * clock_khz * 1e3;
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
