// The packed Jacobian-vector product of src/cpu/denoiser_jvp.hpp on the CPU executor's packs of points
// (src/cpu/guided.cpp); declared apart from src/cpu/chains.hpp so that only its callers include it.
#pragma once

#include <cstdint>

#include "kernels/guided.cuh"
#include "kernels/mixture.cuh"
#include "src/cpu/chains.hpp"

namespace diffsample::cpu {

/// out[i d + j] = (J(x_i) v_i)_j for n points x and vectors v (n x d, row-major), J the mixture's denoiser Jacobian
/// at channel c: the packed product of the guided samplers (for tests and benchmarks against
/// kernels::mixture_denoiser_jvp).
void run_denoiser_jvp(simd_target t, const kernels::channel_view& c, const float* x, const float* v, std::int64_t n,
                      std::int64_t d, float* out);

#define DIFFSAMPLE_DECLARE_JVP_TARGET_(NS)                                                                         \
  namespace NS {                                                                                                   \
  void run_denoiser_jvp(const kernels::channel_view& c, const float* x, const float* v, std::int64_t n,           \
                        std::int64_t d, float* out);                                                               \
  }
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_sse2)
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_avx2)
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_avx512)
#undef DIFFSAMPLE_DECLARE_JVP_TARGET_

}  // namespace diffsample::cpu
