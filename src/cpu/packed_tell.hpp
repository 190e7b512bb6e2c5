// Declarations of the guided samplers' packed tells on every SIMD target and their dispatchers (used by
// src/cpu/guided_tells.hpp and src/cpu/jacobian_tells.hpp).
#pragma once

#include <cstdint>

#include "src/cpu/chains.hpp"

namespace diffsample::cpu {

// Declares DECLARATION (one declaration, no semicolon) in the namespace of each SIMD target's build.
#define DIFFSAMPLE_DECLARE_ON_TARGETS(...)  \
  namespace simd_sse2 { __VA_ARGS__; }      \
  namespace simd_avx2 { __VA_ARGS__; }      \
  namespace simd_avx512 { __VA_ARGS__; }

// A packed tell of a guided sampler's stage functor FUNCTOR, TELL(f) over every particle (the plans' tell; the fused
// runs keep their packs from ask to ask through the samplers' run_*_stepwise instead). Declares it in each SIMD
// target's namespace and defines its dispatcher on a target t (not scalar) here.
#define DIFFSAMPLE_PACKED_TELL(TELL, FUNCTOR)                                 \
  DIFFSAMPLE_DECLARE_ON_TARGETS(void TELL(const FUNCTOR& f))                  \
  inline void TELL(simd_target t, const FUNCTOR& f) { DIFFSAMPLE_SIMD_DISPATCH(TELL(f)) }

}  // namespace diffsample::cpu
