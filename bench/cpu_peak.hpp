// The CPU's measured FP32 peak: every thread runs chains of independent fused multiply-adds on the widest vectors
// the CPU has (AVX-512, else AVX2 + FMA, else SSE2 multiply and add), enough of them in flight to cover the FMA
// latency. Used by the chain benchmarks to state the fraction of peak they reach.
#pragma once

#include <immintrin.h>
#include <omp.h>
#include <cstdio>

#include "bench_common.hpp"

#include <chrono>
#include <cstdint>

namespace bench {

namespace detail {

// 12 accumulators x 16 lanes x 2 FLOP per iteration.
__attribute__((target("avx512f"))) inline float fma_loop_avx512(std::int64_t iterations, double& flops) {
  __m512 acc[12];
  for (int a = 0; a < 12; ++a) acc[a] = _mm512_set1_ps(float(a) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < iterations; ++i)
    for (int a = 0; a < 12; ++a) acc[a] = _mm512_fmadd_ps(acc[a], m, c);
  __m512 s = acc[0];
  for (int a = 1; a < 12; ++a) s = _mm512_add_ps(s, acc[a]);
  flops = double(iterations) * 12 * 16 * 2;
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) inline float fma_loop_avx2(std::int64_t iterations, double& flops) {
  __m256 acc[12];
  for (int a = 0; a < 12; ++a) acc[a] = _mm256_set1_ps(float(a) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < iterations; ++i)
    for (int a = 0; a < 12; ++a) acc[a] = _mm256_fmadd_ps(acc[a], m, c);
  __m256 s = acc[0];
  for (int a = 1; a < 12; ++a) s = _mm256_add_ps(s, acc[a]);
  float out[8];
  _mm256_storeu_ps(out, s);
  flops = double(iterations) * 12 * 8 * 2;
  return out[0];
}

}  // namespace detail

/// Measured FP32 peak of all OpenMP threads together, in FLOP/s (best of 5 rounds of ~0.1 s), and the instruction
/// set it used in *isa.
inline double measure_cpu_fp32_peak(const char** isa) {
  __builtin_cpu_init();
  const bool has512 = __builtin_cpu_supports("avx512f");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  *isa = has512 ? "avx512 fma" : has2 ? "avx2 fma" : "none";
  if (!has512 && !has2) return 0;
  double best = 0;
  volatile float sink = 0;
  for (int round = 0; round < 5; ++round) {
    double total = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : total)
    {
      double f = 0;
      sink = sink + (has512 ? detail::fma_loop_avx512(4000000, f) : detail::fma_loop_avx2(4000000, f));
      total += f;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, total / s);
  }
  return best;
}


/// The FP32 peak a chain benchmark states its fraction of, printed as its header's second line: on the CUDA executor
/// the device's (bench_common.hpp's peak_fp32_flops(): multiprocessors x lanes x 2 x clock), on the CPU the measured
/// peak of all OpenMP threads. FLOP/s.
inline double announce_fp32_peak(bool gpu) {
  if (gpu) {
    const double peak = peak_fp32_flops();
    std::printf("# device FP32 peak: %.1f GFLOP/s (multiprocessors x FP32 lanes x 2 x the largest SM clock)\n",
                peak * 1e-9);
    return peak;
  }
  const char* isa = "";
  const double peak = measure_cpu_fp32_peak(&isa);
  std::printf("# measured FP32 peak: %.1f GFLOP/s (%s, %d threads)\n", peak * 1e-9, isa, omp_get_max_threads());
  return peak;
}

}  // namespace bench
