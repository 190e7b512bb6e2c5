// The random stream every sampler documents, rebuilt from cuRAND's own calls rather than the library's wrapper:
// stream (seed, id, step) is Philox4x32-10 with key seed, subsequence id and offset step * 2^34 outputs, read as
// standard normals four per block (curand_normal4) in order. tests/test_rng.cpp pins these calls to cuRAND's host
// generator, so a sampler's draws can be checked against this without trusting kernels/rng.cuh's wrapper.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/rng.cuh"  // the only way in to curand_kernel.h (defines its QUALIFIERS for the host)

namespace diffsample::testing {

/// The first d standard normals of stream (seed, id, step).
inline std::vector<float> documented_normals(std::uint64_t seed, std::uint64_t id, std::uint64_t step, int d) {
  curandStatePhilox4_32_10_t state;
  curand_init(seed, id, step << 34, &state);
  std::vector<float> z;
  while (static_cast<int>(z.size()) < d) {
    const float4 q = curand_normal4(&state);
    for (float v : {q.x, q.y, q.z, q.w})
      if (static_cast<int>(z.size()) < d) z.push_back(v);
  }
  return z;
}

/// The uniform in (0, 1] that stream (seed, id, step) gives after its first d normals: curand_uniform's first output
/// of the block after the ceil(d / 4) blocks of curand_normal4 (MALA's acceptance draws it after its proposal's
/// normals, README "Langevin samplers").
inline float documented_uniform_after_normals(std::uint64_t seed, std::uint64_t id, std::uint64_t step, int d) {
  curandStatePhilox4_32_10_t state;
  curand_init(seed, id, step << 34, &state);
  for (int j = 0; j < d; j += 4) (void)curand_normal4(&state);
  return curand_uniform(&state);
}

}  // namespace diffsample::testing
