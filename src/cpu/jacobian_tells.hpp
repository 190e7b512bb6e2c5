// The ask/tell plans' tells of TMPD and DCPS (the guided samplers whose steps ask for the denoiser's Jacobian) on
// packs of particles of one problem (src/cpu/jacobian_tells.cpp), declared apart from src/cpu/chains.hpp so that
// only their samplers include them. The plan's tell on a SIMD target and guided_sample()'s fused run
// (src/fused_stepwise.hpp, one pack's rows at a time) both call them, so they agree bit for bit; against the scalar
// stage functors they differ by the packs' rounding (the packs' normals and exp; the file is built without FMA contraction).
#pragma once

#include <cstdint>

#include "kernels/guided_stepwise.cuh"
#include "src/cpu/chains.hpp"

namespace diffsample::cpu {

#define DIFFSAMPLE_DECLARE_JACOBIAN_TELLS_(NS)                                                                \
  namespace NS {                                                                                              \
  void run_tmpd_tell(const kernels::tmpd_stage_functor& f);                                                   \
  void run_tmpd_tell_rows(const kernels::tmpd_stage_functor& f, std::int64_t first, std::int64_t last);       \
  void run_tmpd_stepwise(const stepwise_run& r);                                                              \
  void run_dcps_tell(const kernels::dcps_stage_functor& f);                                                   \
  void run_dcps_tell_rows(const kernels::dcps_stage_functor& f, std::int64_t first, std::int64_t last);       \
  void run_dcps_stepwise(const stepwise_run& r);                                                              \
  }
DIFFSAMPLE_DECLARE_JACOBIAN_TELLS_(simd_sse2)
DIFFSAMPLE_DECLARE_JACOBIAN_TELLS_(simd_avx2)
DIFFSAMPLE_DECLARE_JACOBIAN_TELLS_(simd_avx512)
#undef DIFFSAMPLE_DECLARE_JACOBIAN_TELLS_

/// TMPD's tell (kernels::tmpd_stage_functor, finish = tmpd_finish_all) over every particle, on packs of particles
/// of one problem on target t (not scalar): the denoiser's tell (m, r = y - A m, v = a_0) and the products' tells
/// (row o, v = a_{o+1}; after the last, A C A^T + sigma_y^2 I, its Cholesky factor and the solve in FP64 lane by
/// lane, then the update with the normals of the packs' Philox streams id_base + guided_stream(i, b), step
/// k + 1). A lane whose matrix is not numerically positive definite is NaN, as in the functor. The initial draw and
/// the other finishes run the functor per particle. Stores next_position first when position is set.
inline void run_tmpd_tell(simd_target t, const kernels::tmpd_stage_functor& f) {
  DIFFSAMPLE_SIMD_DISPATCH(run_tmpd_tell(f))
}
/// The same tell on rows [first, last) only, on the calling thread (packs split where a problem ends): the fused
/// run's tell of one pack of rows.
inline void run_tmpd_tell_rows(simd_target t, const kernels::tmpd_stage_functor& f, std::int64_t first,
                               std::int64_t last) {
  DIFFSAMPLE_SIMD_DISPATCH(run_tmpd_tell_rows(f, first, last))
}

/// DCPS's tell (kernels::dcps_stage_functor: the tamed Langevin steps, the transitions' starts, the KL gradient
/// steps and draws) over every particle, on packs of particles of one problem on target t (not scalar): the
/// functor's arithmetic lane by lane, the normals from the packs' Philox streams id_base + guided_stream(i, b) at the
/// functor's stream steps. The initial draw runs the functor per particle. Stores next_position first when position
/// is set.
inline void run_dcps_tell(simd_target t, const kernels::dcps_stage_functor& f) {
  DIFFSAMPLE_SIMD_DISPATCH(run_dcps_tell(f))
}
/// The same tell on rows [first, last) only, on the calling thread (packs split where a problem ends).
inline void run_dcps_tell_rows(simd_target t, const kernels::dcps_stage_functor& f, std::int64_t first,
                               std::int64_t last) {
  DIFFSAMPLE_SIMD_DISPATCH(run_dcps_tell_rows(f, first, last))
}

}  // namespace diffsample::cpu
