// The ask/tell plans' tells of DDRM, SKRock and the SMC's moment-projected weighting on packs of particles of one
// problem (src/cpu/guided_tells.cpp), declared apart from src/cpu/chains.hpp so that only their samplers include
// them. The plan's tell on a SIMD target and guided_sample()'s fused run (src/fused_stepwise.hpp, one pack's rows at a
// time) both call them, so they agree bit for bit; against the scalar functors they differ by the packs' rounding (the
// packs' normals, log and sqrt, FMA contraction).
#pragma once

#include <cstdint>

#include "kernels/guided_ddrm.cuh"
#include "kernels/guided_skrock.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/packed_tell.hpp"

namespace diffsample::cpu {

DIFFSAMPLE_DECLARE_ON_TARGETS(void run_ddrm_stepwise(const stepwise_run& r))
DIFFSAMPLE_DECLARE_ON_TARGETS(void run_skrock_stepwise(const stepwise_run& r))
DIFFSAMPLE_DECLARE_ON_TARGETS(void run_moment_stepwise(const stepwise_run& r))
DIFFSAMPLE_DECLARE_ON_TARGETS(void run_twisted_stepwise(const stepwise_run& r))

/// DDRM's tell (kernels::ddrm_stage_functor with stage 1: the denoiser m = ux x + um answer, then
/// kernels::ddrm_update) over every particle, on packs of particles of one problem on target t (not scalar):
/// ddrm_update's arithmetic lane by lane (the projections on V and the lift summed in the functor's order), the
/// normals from the packs' Philox streams (id_base + ddrm_stream(i, b), step k + 1). Only x is written (not the
/// functor's scratch rows). Stores next_position first when position is set. Results do not depend on the thread
/// count or on which pack a particle falls in.
DIFFSAMPLE_PACKED_TELL(run_ddrm_tell, kernels::ddrm_stage_functor)

/// SKRock's tell (kernels::skrock_stage_functor with op skrock_op_stage: stage s of iteration n from the prior's
/// score at cur, in answer) over every particle, on packs of particles of one problem on target t (not scalar): the
/// functor's arithmetic lane by lane (the likelihood's residual and rows of A in its order), the normals from the
/// packs' Philox streams (id_base + guided_stream(i, b), step n + 1, and n + 2 for the next iteration's first drift
/// point). x, cur and old are written as the functor leaves them; g and r are not (the drift stays in the pack).
/// Stores next_position first when position is set. The rows go into packs and back around the pack code that
/// guided_sample()'s fused run (run_skrock_stepwise) runs on packs it keeps from ask to ask.
DIFFSAMPLE_PACKED_TELL(run_skrock_tell, kernels::skrock_stage_functor)

/// The SMC's moment-projected weighting (kernels::moment_stage_functor: stage 0 the denoiser from the answer and
/// v = a_0; stage 1 row o of the moment matrix from the answer J^T a_o, then v = a_{o + 1} or, at the last row, the
/// weight, lz and the kernel mean) over every particle, on packs of particles of one problem on target t (not
/// scalar): the functor's arithmetic lane by lane (the d_y x d_y Cholesky with the pack's log and sqrt). Writes m,
/// v, M, and at the last row lw, lz and mu, as the functor; r is not written. Stores next_position first when
/// position is set. The rows go into packs and back around the pack code that guided_sample()'s fused weighting
/// (run_moment_stepwise) runs on packs it keeps from ask to ask.
DIFFSAMPLE_PACKED_TELL(run_moment_tell, kernels::moment_stage_functor)

/// The SMC's twisted weighting (kernels::twisted_stage_functor: stage 0 and the rows of the moment matrix as the
/// moment weighting's, the answer of row o read from plane o of u; at the last row kernels::twisted_finish: the
/// weight, the shift h, lz and the proposal mean) over every particle, on packs of particles of one problem on
/// target t (not scalar), with the moment weighting's pack cores (the d_y x d_y Cholesky with the pack's log and
/// sqrt). Writes m, v, M, and at the last row lw, lz, mu and shift, as the functor; r is not written. The rows go
/// into packs and back around the pack code that guided_sample()'s fused weighting (run_twisted_stepwise) runs on
/// packs it keeps from ask to ask.
DIFFSAMPLE_PACKED_TELL(run_twisted_tell, kernels::twisted_stage_functor)

}  // namespace diffsample::cpu
