// The guided sampler that needs the denoiser's Jacobian on packs (the moment-projected SMC's weighting) on the
// CPU executor's packs of particles (src/cpu/guided.cpp), with the packed Jacobian-vector product of
// src/cpu/denoiser_jvp.hpp; declared apart from src/cpu/chains.hpp so that only their launches include it.
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
/// The moment-projected SMC's weighting (kernels::guided_moment_functor) over packs of particles, with the
/// mixture's constants at step f.k's channel in `channel`. The same guarantees.
void run_guided_moment(simd_target t, const kernels::guided_moment_functor& f, const kernels::channel_view& channel);

#define DIFFSAMPLE_DECLARE_JVP_TARGET_(NS)                                                                         \
  namespace NS {                                                                                                   \
  void run_denoiser_jvp(const kernels::channel_view& c, const float* x, const float* v, std::int64_t n,           \
                        std::int64_t d, float* out);                                                               \
  void run_guided_moment(const kernels::guided_moment_functor& f, const kernels::channel_view& channel);           \
  }
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_sse2)
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_avx2)
DIFFSAMPLE_DECLARE_JVP_TARGET_(simd_avx512)
#undef DIFFSAMPLE_DECLARE_JVP_TARGET_

}  // namespace diffsample::cpu
