// The CPU executor's SIMD chain runners: the chain bodies of kernels/langevin.cuh and kernels/diffusion.cuh run over
// packs of chains in SIMD lanes, one build per x86-64 level (src/cpu/chains.cpp), chosen at run time.
#pragma once

#include <cstdint>

#include "kernels/diffusion.cuh"
#include "kernels/langevin.cuh"
#include "kernels/plan.cuh"

namespace diffsample::cpu {

/// Where the CPU executor's chains run: the scalar functors (the CUDA kernels' own source, one chain per thread),
/// or packs of 4, 8 or 16 chains.
enum class simd_target { scalar = 0, sse2 = 1, avx2 = 2, avx512 = 3 };

/// The target used by the next call: the widest one this CPU supports, unless the environment variable
/// DIFFSAMPLE_CPU_TARGET names another (scalar, sse2, avx2, avx512; used by the tests and benchmarks to compare
/// targets; a target the CPU lacks falls back to the widest supported).
simd_target chain_target();
const char* to_string(simd_target t);

/// Floats of state workspace the SIMD runners need for n chains of dimension d outside the register list:
/// four vectors per chain, n rounded up to the widest pack, and room to align the start to a pack.
inline std::int64_t state_floats(std::int64_t n, std::int64_t d) { return 4 * d * ((n + 15) / 16 * 16) + 16; }

/// Runs every chain of a Langevin / diffusion call on target t (not scalar). state: state_floats(n, d) floats, or
/// nullptr when d is in the register list.
void run_langevin(simd_target t, const kernels::langevin_params& p, float* x, std::int64_t d, float* state);
void run_diffusion(simd_target t, const kernels::diffusion_params& p, float* x, std::int64_t d, float* state);

/// The mixture's score (what 1), denoiser (2) or log-density (0) at n points (n x d, row-major) at channel c.
void run_evaluate(simd_target t, const kernels::channel_view& c, int what, const float* x, std::int64_t n,
                  std::int64_t d, float* out);
/// The stepwise plan's step (or final jump) and initial draw over its n rows, with the fused samplers' operations.
void run_plan_step(simd_target t, const kernels::plan_step_functor& f, std::int64_t n);
void run_plan_initial(simd_target t, const kernels::plan_initial_functor& f, std::int64_t n);

#define DIFFSAMPLE_DECLARE_SIMD_TARGET_(NS)                                                                    \
  namespace NS {                                                                                               \
  void run_langevin(const kernels::langevin_params& p, float* x, std::int64_t d, float* state);               \
  void run_diffusion(const kernels::diffusion_params& p, float* x, std::int64_t d, float* state);             \
  void run_evaluate(const kernels::channel_view& c, int what, const float* x, std::int64_t n, std::int64_t d,  \
                    float* out);                                                                               \
  void run_plan_step(const kernels::plan_step_functor& f, std::int64_t n);                                     \
  void run_plan_initial(const kernels::plan_initial_functor& f, std::int64_t n);                               \
  }
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_sse2)
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_avx2)
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_avx512)
#undef DIFFSAMPLE_DECLARE_SIMD_TARGET_

}  // namespace diffsample::cpu
