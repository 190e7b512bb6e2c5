// The ask/tell plans' tells of TMPD and DCPS (the guided samplers whose steps ask for the denoiser's Jacobian) on
// packs of particles of one problem (src/cpu/jacobian_tells.cpp), declared apart from src/cpu/chains.hpp so that
// only their samplers include them. The plan's tell on a SIMD target and guided_sample()'s fused run
// (src/fused_stepwise.hpp, one pack's rows at a time) both call them, so they agree bit for bit; against the scalar
// stage functors they differ by the packs' rounding (the packs' normals and exp; the file is built without FMA contraction).
#pragma once

#include <cstdint>

#include "kernels/guided_stepwise.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/packed_tell.hpp"

namespace diffsample::cpu {

DIFFSAMPLE_DECLARE_ON_TARGETS(void run_tmpd_stepwise(const stepwise_run& r))
DIFFSAMPLE_DECLARE_ON_TARGETS(void run_dcps_stepwise(const stepwise_run& r))

/// TMPD's tell (kernels::tmpd_stage_functor, finish = tmpd_finish_all) over every particle, on packs of particles
/// of one problem on target t (not scalar): the denoiser's tell (m, r = y - A m, v = a_0) and the products' tells
/// (row o, v = a_{o+1}; after the last, A C A^T + sigma_y^2 I, its Cholesky factor and the solve in FP64 lane by
/// lane, then the update with the normals of the packs' Philox streams id_base + guided_stream(i, b), step
/// k + 1). A lane whose matrix is not numerically positive definite is NaN, as in the functor. The initial draw and
/// the other finishes run the functor per particle. Stores next_position first when position is set.
DIFFSAMPLE_PACKED_TELL(run_tmpd_tell, kernels::tmpd_stage_functor)

/// DCPS's tell (kernels::dcps_stage_functor: the tamed Langevin steps, the transitions' starts, the KL gradient
/// steps and draws) over every particle, on packs of particles of one problem on target t (not scalar): the
/// functor's arithmetic lane by lane, the normals from the packs' Philox streams id_base + guided_stream(i, b) at the
/// functor's stream steps. The initial draw runs the functor per particle. Stores next_position first when position
/// is set.
DIFFSAMPLE_PACKED_TELL(run_dcps_tell, kernels::dcps_stage_functor)

}  // namespace diffsample::cpu
