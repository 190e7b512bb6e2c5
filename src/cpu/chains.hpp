// The CPU executor's SIMD chain runners: the chain bodies of kernels/langevin.cuh and kernels/diffusion.cuh run over
// packs of chains in SIMD lanes, one build per x86-64 level (src/cpu/chains.cpp), chosen at run time.
#pragma once

#include <cstdint>

#include "kernels/diffusion.cuh"
#include "kernels/guided.cuh"
#include "kernels/guided_diffpir.cuh"
#include "kernels/langevin.cuh"
#include "kernels/particles.cuh"
#include "kernels/plan.cuh"

namespace diffsample::kernels {
struct ddrm_stage_functor;
struct skrock_stage_functor;
struct twisted_stage_functor;
struct twisted_mutate_functor;
struct tmpd_stage_functor;
struct dcps_stage_functor;
struct dcps_ask;
}

namespace diffsample::cpu {

/// Where the CPU executor's chains run: the scalar functors (the CUDA kernels' own source, one chain per thread),
/// or packs of 4, 8 or 16 chains.
enum class simd_target { scalar = 0, sse2 = 1, avx2 = 2, avx512 = 3 };

/// The target used by the next call: the widest one this CPU supports, unless the environment variable
/// DIFFSAMPLE_CPU_TARGET names another (scalar, sse2, avx2, avx512; used by the tests and benchmarks to compare
/// targets; a target the CPU lacks falls back to the widest supported).
simd_target chain_target();
const char* to_string(simd_target t);

// The body of a dispatcher on target t (not scalar): calls CALL in the namespace of t's build (simd_avx512,
// simd_avx2, else simd_sse2). Empty in a build without SIMD targets, whose dispatchers are never called.
#if defined(DIFFSAMPLE_NO_SIMD)
#define DIFFSAMPLE_SIMD_DISPATCH(CALL)
#else
#define DIFFSAMPLE_SIMD_DISPATCH(CALL)                  \
  switch (t) {                                          \
    case simd_target::avx512: return simd_avx512::CALL; \
    case simd_target::avx2: return simd_avx2::CALL;     \
    default: return simd_sse2::CALL;                    \
  }
#endif

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
/// The tell of a sampling_plan over its n rows, with the fused samplers' operations.
void run_plan_tell(simd_target t, const kernels::plan_tell_functor& f, std::int64_t n);

/// One ask of a fused stepwise run: the mixture's denoiser (vectors null) or its Jacobian-vector product J v
/// (vectors: rows x d) at the rows of `points` and channel `channel`, into the same rows of `answer` (rows x d,
/// row-major; the buffers may change between asks, as the tells write them).
struct stepwise_ask {
  const float* points;
  const float* vectors;
  float* answer;
  kernels::channel_view channel;
  int what;  // evaluate_rows's quantity when vectors is null: 1 the score, 2 the denoiser
};
/// A run of `count` asks over `rows` rows of dimension d, fused per pack of rows: the pool hands out packs of rows
/// (as run_evaluate does), and each pack runs ask after ask, the answer for its rows from the same per-pack code as
/// run_evaluate (denoiser) and run_denoiser_jvp (so the same bits as those calls), then tell(context, ask, first,
/// last) on its rows [first, last), while the pack's rows stay in cache. The tells must act on their rows alone.
struct stepwise_run {
  std::int64_t rows;
  int d;
  const stepwise_ask* asks;
  std::int64_t count;
  void (*tell)(const void* context, std::int64_t ask, std::int64_t first, std::int64_t last);
  const void* context;
  /// When not null, the tells are DiffPIR's packed tell (run_diffpir_tell) of step first_ask + ask, with this
  /// functor's other fields, on packs of particles of one problem (tell and context unused), and each pack stays in
  /// packs from its first ask to its last: the denoiser on the packs of its particles (the asks' points and answer
  /// are the functor's x and m), the rows of x and m written after its last tell.
  const kernels::diffpir_stage_functor* diffpir = nullptr;
  std::int64_t first_ask = 0;
  /// The same for DDRM's packed tell (run_ddrm_tell; the asks' points are the functor's x, their answers stay in
  /// the packs), the rows of x written after the last tell.
  const kernels::ddrm_stage_functor* ddrm = nullptr;
  /// The same for TMPD's packed tells (run_tmpd_tell; ask a is step (first_ask + a) / (1 + d_y)'s denoiser or one
  /// of its products, the asks' points the functor's x), the rows of x written after the last tell.
  const kernels::tmpd_stage_functor* tmpd = nullptr;
  /// The same for DCPS's packed tells (run_dcps_tell): ask a's tell is this one functor with the op and indices
  /// (block, t, step, g) of dcps_asks[first_ask + a] (the asks at its x or q, J u with its u), the rows of x written
  /// after the last tell, every row of the tells' when asks follow.
  const kernels::dcps_stage_functor* dcps = nullptr;
  /// The asks of the whole fused run (of which these are asks first_ask .. first_ask + count - 1).
  std::int64_t total = 0;
  /// DCPS's asks, one per ask of the whole run, when dcps is set.
  const kernels::dcps_ask* dcps_asks = nullptr;
  /// The same for SKRock's packed tells (run_skrock_tell): ask a is the drift evaluation first_ask + a (stage
  /// (first_ask + a) % stages of iteration (first_ask + a) / stages, with this functor's other fields), the prior's
  /// score at the functor's cur; the rows of x written after the last tell, those of cur and old too when asks follow.
  const kernels::skrock_stage_functor* skrock = nullptr;
  /// The same for the SMC's moment-projected weighting (run_moment_tell) of the functor's step k: ask a is the
  /// step's ask first_ask + a (0 the denoiser at x, 1 + o the product J^T a_o at x, the vector a_o in the pack);
  /// the rows of mu, lw and lz written at the last row's tell, those of m and M too when asks follow.
  const kernels::moment_stage_functor* moment = nullptr;
  /// The same for the SMC's twisted weighting (run_twisted_tell) of the functor's step k: the asks as moment's, every
  /// row's product kept in the pack for the gradient; the rows of mu, shift, lw and lz written at the last row's
  /// tell, those of m, M and the products so far (u's planes) too when asks follow.
  const kernels::twisted_stage_functor* twisted = nullptr;
};
void run_stepwise(simd_target t, const stepwise_run& r);

/// DiffPIR's tell (kernels::diffpir_stage_functor with stage 1: the denoiser m = ux x + um answer, then
/// kernels::diffpir_update) over every particle, on packs of particles of one problem: diffpir_update's arithmetic
/// lane by lane, the normals from the packs' Philox streams (the same guarantees as guided_pass). The plan's tells
/// and guided_sample()'s fused run both use it on a SIMD target, so they agree bit for bit.
void run_diffpir_tell(simd_target t, const kernels::diffpir_stage_functor& f);

/// Projections of n points x (n x d, row-major) on `count` directions u (count x d, row-major):
/// out[c stride + i] = sum_j u[c d + j] x[i d + j], summed in FP64 in coordinate order with one multiply and one add
/// per coordinate, bit for bit the scalar loop on every target (lanes are directions, not terms of a sum). Runs on
/// the calling thread.
void run_projection(simd_target t, const double* u, int count, const float* x, std::int64_t n, std::int64_t d,
                    double* out, std::int64_t stride);
/// The same projections rounded to float, a value that is not finite or beyond the float range stored as +inf
/// (kernels::projection_functor's keys).
void run_projection_keys(simd_target t, const double* u, int count, const float* x, std::int64_t n, std::int64_t d,
                         float* out, std::int64_t stride);

/// One pass of the guided SMC over packs of particles (a pack never spans two problems; the last pack of a problem
/// may be partial). For each particle, in this order: select its ancestor (if `select`), mutate it (if `mutate`),
/// weight it (if `weight`, with the mixture's constants at the weighting step's channel in `weight_channel`). The
/// per-particle math is kernels/guided.cuh's, lane by lane, with the channel denoiser of the chain samplers
/// (constants per channel, chunked softmax) and the pack's vector exp/log/sincos: results depend on the target but
/// not on the thread count or on which pack a particle falls in.
struct guided_pass {
  const kernels::select_ancestor_functor<std::int32_t>* select = nullptr;
  const kernels::guided_mutate_functor* mutate = nullptr;
  /// The twisted SMC's mutation (kernels::twisted_mutate_functor); alone in a pass.
  const kernels::twisted_mutate_functor* twisted_mutate = nullptr;
  const kernels::guided_weight_functor* weight = nullptr;
  kernels::channel_view weight_channel{};
  /// The SMC plan's weighting (the denoiser from the model's answer); alone in a pass.
  const kernels::guided_weight_answer_functor* weight_answer = nullptr;
};
void run_guided_pass(simd_target t, const guided_pass& pass);

/// The SMC's final resample-move (kernels::final_move_functor) over every sample, on packs of samples of one problem:
/// the functor's arithmetic lane by lane (the prior's score by the chain samplers' channel_score), the normals and
/// uniforms from the packs' Philox streams, the state kept in per-thread packs (the functor's scratch rows unused).
/// Results depend on the target, not on the thread count or on which pack a sample falls in.
void run_final_moves(simd_target t, const kernels::final_move_functor& f);

/// One DPS / Pi-GDM stage (kernels::baseline_stage_functor: 0 the initial draw, 1 the guidance from the answer,
/// 2 the update from J^T v) over every particle, on packs of particles of one problem: the functor's arithmetic lane
/// by lane, the normals from the packs' Philox streams (the same guarantees as guided_pass).
void run_baseline_stage(simd_target t, const kernels::baseline_stage_functor& f);

/// The exact posterior sampler's draw (src/posterior_exec.cu) of samples [0, n) of a call: sample i is the scalar
/// sampler's sample first + i (Philox stream id first + i, step 0: block 0 picks the component from the cumulative
/// weights, block p + 1 gives normals 2p, 2p + 1 by cuRAND's FP64 Box-Muller), transformed to means_k + L_k z.
struct posterior_sample_args {
  const double* cumulative;  // K, the last entry the total
  std::int64_t components;
  const double* means;      // K x d
  const double* factors_t;  // K x d x d, U_k[l d + j] = L_k[j, l]
  int d;
  std::uint64_t seed, first;
  std::int64_t n;
  std::int32_t* labels;  // n components, or nullptr
};
/// Runs the draw on packs of samples (src/cpu/posterior.cpp): the scalar sampler's components exactly, its normals
/// within a few FP64 ulp (vector log and sin / cos of pi v), its transform's arithmetic; the same bits on every target
/// (no FMA), thread count and split of a call.
void run_posterior_sample(simd_target t, const posterior_sample_args& a, float* out);
void run_posterior_sample(simd_target t, const posterior_sample_args& a, double* out);

#define DIFFSAMPLE_DECLARE_SIMD_TARGET_(NS)                                                                    \
  namespace NS {                                                                                               \
  void run_langevin(const kernels::langevin_params& p, float* x, std::int64_t d, float* state);               \
  void run_diffusion(const kernels::diffusion_params& p, float* x, std::int64_t d, float* state);             \
  void run_evaluate(const kernels::channel_view& c, int what, const float* x, std::int64_t n, std::int64_t d,  \
                    float* out);                                                                               \
  void run_plan_step(const kernels::plan_step_functor& f, std::int64_t n);                                     \
  void run_plan_initial(const kernels::plan_initial_functor& f, std::int64_t n);                               \
  void run_projection(const double* u, int count, const float* x, std::int64_t n, std::int64_t d, double* out,  \
                      std::int64_t stride);                                                                    \
  void run_projection_keys(const double* u, int count, const float* x, std::int64_t n, std::int64_t d,          \
                           float* out, std::int64_t stride);                                                   \
  void run_guided_pass(const guided_pass& pass);                                                               \
  void run_final_moves(const kernels::final_move_functor& f);                                                  \
  void run_plan_tell(const kernels::plan_tell_functor& f, std::int64_t n);                                     \
  void run_posterior_sample(const posterior_sample_args& a, float* out);                                        \
  void run_baseline_stage(const kernels::baseline_stage_functor& f);                                           \
  void run_stepwise(const stepwise_run& r);                                                                     \
  void run_diffpir_tell(const kernels::diffpir_stage_functor& f);                                              \
  void run_posterior_sample(const posterior_sample_args& a, double* out);                                       \
  }
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_sse2)
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_avx2)
DIFFSAMPLE_DECLARE_SIMD_TARGET_(simd_avx512)
#undef DIFFSAMPLE_DECLARE_SIMD_TARGET_

}  // namespace diffsample::cpu
