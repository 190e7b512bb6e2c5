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

/// The same stream as `philox` (bit for bit: tests/test_rng), computing each Philox block only when it is drawn.
/// cuRAND's state computes a block at initialisation, again when the subsequence and the offset are set, and the
/// next one after each curand4(): three blocks for a step that needs one at d <= 4. Chain bodies draw from this.
struct philox_stream {
  uint4 counter;  // (block lo, block hi + step, id lo, id hi), the next block to draw
  uint2 key;
  uint4 block;
  int used;  // outputs of `block` already returned; 4 = none left

  DS_HD_INLINE philox_stream(std::uint64_t seed, std::uint64_t id, std::uint64_t step) {
    counter = make_uint4(0u, static_cast<unsigned>(step), static_cast<unsigned>(id), static_cast<unsigned>(id >> 32));
    key = make_uint2(static_cast<unsigned>(seed), static_cast<unsigned>(seed >> 32));
    used = 4;
  }
  DS_HD_INLINE uint4 next_block() {
    const uint4 b = curand_Philox4x32_10(counter, key);
    ++counter.x;  // at most 2^32 blocks per step are ever drawn (steps are 2^32 blocks apart)
    return b;
  }
  DS_HD_INLINE unsigned bits() {
    if (used == 4) {
      block = next_block();
      used = 0;
    }
    const unsigned r = used == 0 ? block.x : used == 1 ? block.y : used == 2 ? block.z : block.w;
    ++used;
    return r;
  }
  /// Uniform in (0, 1], as curand_uniform.
  DS_HD_INLINE float uniform() { return _curand_uniform(bits()); }
  /// Calls f(j, z_j) for j in [0, d) with the standard normals of curand_normal4 (Box-Muller, one block per four
  /// normals), starting at a block boundary.
  template <class F>
  DS_HD_INLINE void normals(int d, F&& f) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 0; j < d; j += 4) {
      const uint4 b = next_block();
      const float2 z0 = _curand_box_muller(b.x, b.y);
      f(j, z0.x);
      if (j + 1 < d) f(j + 1, z0.y);
      if (j + 2 < d) {
        const float2 z1 = _curand_box_muller(b.z, b.w);
        f(j + 2, z1.x);
        if (j + 3 < d) f(j + 3, z1.y);
      }
    }
    used = 4;
  }
};

}  // namespace diffsample::kernels
