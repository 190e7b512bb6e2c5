// Fused stepwise runs of the guided samplers on the CPU executor's SIMD targets (DiffPIR, DDRM, TMPD, DCPS, SKRock,
// the SMC's moment-projected weighting): the asks that guided_sample() answers with the mixture's denoiser and J v,
// each followed by its tell (the ask/tell plan's stage functor), run per pack of particles rather than one pool pass
// per ask and one per tell. A pack's answer comes from the per-pack code of evaluate() and denoiser_jvp() (src/cpu/
// pack_cores.hpp) at the channel constants those calls compute, and its tell is the plan's own functor, so the
// fused run gives the bits of the step-by-step run, which a plan answered by the mixture reproduces.
#pragma once

#include <cstdint>

#include <diffsample/mixture.hpp>

namespace diffsample::kernels {
struct diffpir_stage_functor;
struct ddrm_stage_functor;
struct skrock_stage_functor;
struct moment_stage_functor;
struct twisted_stage_functor;
struct tmpd_stage_functor;
struct dcps_stage_functor;
struct dcps_ask;
}

namespace diffsample::detail {

struct mixture_storage;

/// One ask: the mixture's denoiser (vectors null; its score when `score` is set) or J v (vectors: rows x d) at
/// channel `at`, at the rows of `points`, into the rows of `answer`.
struct fused_ask {
  channel at;
  const float* points;
  const float* vectors;
  float* answer;
  bool score = false;
};

/// Whether the CPU executor runs fused stepwise runs now (a SIMD target: not DIFFSAMPLE_CPU_TARGET=scalar).
bool fused_stepwise_available();

/// Runs asks[0 .. count) over `rows` rows (row-major, dimension mix.dim) fused per pack of rows: for each ask the
/// answer for the pack's rows, then tell(context, ask, first, last) on its rows [first, last), or, when diffpir,
/// ddrm, tmpd, dcps or skrock is not null, that sampler's packed tell of ask `ask` (cpu::run_diffpir_tell's,
/// cpu::run_ddrm_tell's: step `ask`; cpu::run_tmpd_tell's: step ask / (1 + d_y)'s denoiser or product, with the
/// functor's other fields; cpu::run_dcps_tell's with the one functor dcps given the op and indices of dcps_asks[ask],
/// so that the host holds one functor, not one per ask; cpu::run_skrock_tell's: stage ask % stages of iteration
/// ask / stages; cpu::run_moment_tell's of the functor's step: ask 0 the denoiser, 1 + o the product J^T a_o;
/// cpu::run_twisted_tell's: the same asks, every product kept for the gradient), the
/// pack's particles kept in packs from ask to ask (the asks' points are the functor's x, DCPS's gradient asks' its
/// q, SKRock's its cur; DiffPIR's answers its m). The channel constants are filled on the pool
/// for groups of asks (a bounded table), one pool pass per group. Returns the pool passes issued.
std::int64_t run_fused_stepwise(const mixture_storage& mix, std::int64_t rows, const fused_ask* asks, std::int64_t count,
                                void (*tell)(const void* context, std::int64_t ask, std::int64_t first,
                                             std::int64_t last),
                                const void* context, const kernels::diffpir_stage_functor* diffpir = nullptr,
                                const kernels::ddrm_stage_functor* ddrm = nullptr,
                                const kernels::tmpd_stage_functor* tmpd = nullptr,
                                const kernels::dcps_stage_functor* dcps = nullptr,
                                const kernels::dcps_ask* dcps_asks = nullptr,
                                const kernels::skrock_stage_functor* skrock = nullptr,
                                const kernels::moment_stage_functor* moment = nullptr,
                                const kernels::twisted_stage_functor* twisted = nullptr);

/// run_fused_stepwise with a callable tell(ask, first, last).
template <class Tell>
std::int64_t run_fused_stepwise(const mixture_storage& mix, std::int64_t rows, const fused_ask* asks,
                                std::int64_t count, const Tell& tell) {
  return run_fused_stepwise(
      mix, rows, asks, count,
      [](const void* c, std::int64_t a, std::int64_t first, std::int64_t last) {
        (*static_cast<const Tell*>(c))(a, first, last);
      },
      static_cast<const void*>(&tell));
}

}  // namespace diffsample::detail
