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

// A packed tell of a guided sampler's stage functor FUNCTOR, in two forms: TELL(f) over every particle and
// TELL_ROWS(f, first, last) over rows [first, last) of a fused run on the calling thread. Declares both in each SIMD
// target's namespace and defines their dispatchers on a target t (not scalar) here.
#define DIFFSAMPLE_PACKED_TELL(TELL, TELL_ROWS, FUNCTOR)                                                      \
  DIFFSAMPLE_DECLARE_ON_TARGETS(void TELL(const FUNCTOR& f))                                                  \
  DIFFSAMPLE_DECLARE_ON_TARGETS(void TELL_ROWS(const FUNCTOR& f, std::int64_t first, std::int64_t last))      \
  inline void TELL(simd_target t, const FUNCTOR& f) { DIFFSAMPLE_SIMD_DISPATCH(TELL(f)) }                     \
  inline void TELL_ROWS(simd_target t, const FUNCTOR& f, std::int64_t first, std::int64_t last) {             \
    DIFFSAMPLE_SIMD_DISPATCH(TELL_ROWS(f, first, last))                                                       \
  }

}  // namespace diffsample::cpu
