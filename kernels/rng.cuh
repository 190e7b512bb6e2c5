// Counter-based randomness: cuRAND's Philox4x32-10 device API, made callable on the host.
//
// curand_kernel.h declares its functions through a QUALIFIERS macro that it defines only when it is not already
// defined. Defining it here as host+device makes the very same generator run on the CPU executor. This is the only
// place that includes curand_kernel.h; tests/test_rng pins the host stream bit for bit against cuRAND's own host
// generator (curandCreateGeneratorHost), since the trick is not documented by NVIDIA.
//
// Streams are keyed by (seed, id, step): subsequence = chain or particle id, offset = step * 2^34 outputs. Nothing
// depends on thread or block indices, so results do not change with launch configuration, batch split or executor.
#pragma once

#if defined(QUALIFIERS)
#error "curand_kernel.h must be included only through kernels/rng.cuh"
#endif
#if defined(__CUDACC__)
#define QUALIFIERS static __forceinline__ __host__ __device__
#else
#define QUALIFIERS static inline
#endif
#include <curand_kernel.h>

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// Number of 32-bit outputs reserved for one step of one chain: 2^34, so steps must stay below 2^30.
constexpr int philox_step_shift = 34;
constexpr std::uint64_t philox_max_step = std::uint64_t(1) << 30;

/// The random stream of one (seed, id, step). Cheap to construct (one Philox block), no state kept in memory.
struct philox {
  curandStatePhilox4_32_10_t state;

  DS_HD_INLINE philox(std::uint64_t seed, std::uint64_t id, std::uint64_t step) {
    curand_init(seed, id, step << philox_step_shift, &state);
  }
  /// The same stream, started `outputs` 32-bit outputs in (a multiple of 4 keeps whole Philox blocks aligned, so
  /// that block b of a stream can be drawn without drawing blocks 0 .. b-1 first).
  DS_HD_INLINE philox(std::uint64_t seed, std::uint64_t id, std::uint64_t step, std::uint64_t outputs) {
    curand_init(seed, id, (step << philox_step_shift) + outputs, &state);
  }
  DS_HD_INLINE unsigned int bits() { return curand(&state); }
  DS_HD_INLINE uint4 bits4() { return curand4(&state); }
  /// Uniform in (0, 1].
  DS_HD_INLINE float uniform() { return curand_uniform(&state); }
  DS_HD_INLINE float4 normal4() { return curand_normal4(&state); }

  /// Calls f(j, z_j) for j in [0, d) with standard normals z_j, four per Philox block, in order.
  template <class F>
  DS_HD_INLINE void normals(int d, F&& f) {
    for (int j = 0; j < d; j += 4) {
      const float4 z = normal4();
      f(j, z.x);
      if (j + 1 < d) f(j + 1, z.y);
      if (j + 2 < d) f(j + 2, z.z);
      if (j + 3 < d) f(j + 3, z.w);
    }
  }
};

}  // namespace diffsample::kernels
