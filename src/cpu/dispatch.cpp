// Run-time choice of the CPU executor's SIMD target (src/cpu/chains.hpp).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "src/cpu/chains.hpp"
#include "src/cpu/guided_jvp.hpp"

namespace diffsample::cpu {
namespace {

simd_target widest_supported() {
#if !defined(DIFFSAMPLE_NO_SIMD)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return simd_target::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return simd_target::avx2;
  return simd_target::sse2;
#else
  return simd_target::scalar;
#endif
}

}  // namespace

const char* to_string(simd_target t) {
  switch (t) {
    case simd_target::scalar: return "scalar";
    case simd_target::sse2: return "sse2";
    case simd_target::avx2: return "avx2";
    case simd_target::avx512: return "avx512";
  }
  return "unknown";
}

simd_target chain_target() {
  static const simd_target widest = widest_supported();
  const char* env = std::getenv("DIFFSAMPLE_CPU_TARGET");
  if (env == nullptr) return widest;
  for (simd_target t : {simd_target::scalar, simd_target::sse2, simd_target::avx2, simd_target::avx512})
    if (std::strcmp(env, to_string(t)) == 0) return static_cast<int>(t) <= static_cast<int>(widest) ? t : widest;
  // Not a target's name (a typo such as "Scalar"): the widest target runs, and the process is told once, on stderr
  // (this runs inside parallel regions too, where an exception could not reach the caller).
  static std::once_flag told;
  std::call_once(told, [env] {
    std::fprintf(stderr,
                 "diffsample: DIFFSAMPLE_CPU_TARGET=%s is not one of scalar, sse2, avx2, avx512: the CPU executor "
                 "runs %s\n",
                 env, to_string(widest));
  });
  return widest;
}

#if defined(DIFFSAMPLE_NO_SIMD)
// No SIMD runners on this architecture: chain_target() is always scalar and these are never called.
void run_langevin(simd_target, const kernels::langevin_params&, float*, std::int64_t, float*) {}
void run_diffusion(simd_target, const kernels::diffusion_params&, float*, std::int64_t, float*) {}
void run_evaluate(simd_target, const kernels::channel_view&, int, const float*, std::int64_t, std::int64_t, float*) {}
void run_plan_step(simd_target, const kernels::plan_step_functor&, std::int64_t) {}
void run_plan_initial(simd_target, const kernels::plan_initial_functor&, std::int64_t) {}
void run_projection(simd_target, const double*, int, const float*, std::int64_t, std::int64_t, double*,
                    std::int64_t) {}
void run_projection_keys(simd_target, const double*, int, const float*, std::int64_t, std::int64_t, float*,
                         std::int64_t) {}
void run_guided_pass(simd_target, const guided_pass&) {}
void run_final_moves(simd_target, const kernels::final_move_functor&) {}
void run_plan_tell(simd_target, const kernels::plan_tell_functor&, std::int64_t) {}
void run_denoiser_jvp(simd_target, const kernels::channel_view&, const float*, const float*, std::int64_t,
                      std::int64_t, float*) {}
void run_baseline_stage(simd_target, const kernels::baseline_stage_functor&) {}
void run_stepwise(simd_target, const stepwise_run&) {}
void run_diffpir_tell(simd_target, const kernels::diffpir_stage_functor&) {}
void run_posterior_sample(simd_target, const posterior_sample_args&, float*) {}
void run_posterior_sample(simd_target, const posterior_sample_args&, double*) {}
#else

void run_evaluate(simd_target t, const kernels::channel_view& c, int what, const float* x, std::int64_t n,
                  std::int64_t d, float* out) {
  DIFFSAMPLE_SIMD_DISPATCH(run_evaluate(c, what, x, n, d, out))
}
void run_plan_step(simd_target t, const kernels::plan_step_functor& f, std::int64_t n) {
  DIFFSAMPLE_SIMD_DISPATCH(run_plan_step(f, n))
}
void run_plan_initial(simd_target t, const kernels::plan_initial_functor& f, std::int64_t n) {
  DIFFSAMPLE_SIMD_DISPATCH(run_plan_initial(f, n))
}
void run_plan_tell(simd_target t, const kernels::plan_tell_functor& f, std::int64_t n) {
  DIFFSAMPLE_SIMD_DISPATCH(run_plan_tell(f, n))
}

void run_projection(simd_target t, const double* u, int count, const float* x, std::int64_t n, std::int64_t d,
                    double* out, std::int64_t stride) {
  DIFFSAMPLE_SIMD_DISPATCH(run_projection(u, count, x, n, d, out, stride))
}
void run_projection_keys(simd_target t, const double* u, int count, const float* x, std::int64_t n, std::int64_t d,
                         float* out, std::int64_t stride) {
  DIFFSAMPLE_SIMD_DISPATCH(run_projection_keys(u, count, x, n, d, out, stride))
}
void run_guided_pass(simd_target t, const guided_pass& pass) { DIFFSAMPLE_SIMD_DISPATCH(run_guided_pass(pass)) }
void run_final_moves(simd_target t, const kernels::final_move_functor& f) {
  DIFFSAMPLE_SIMD_DISPATCH(run_final_moves(f))
}

void run_denoiser_jvp(simd_target t, const kernels::channel_view& c, const float* x, const float* v, std::int64_t n,
                      std::int64_t d, float* out) {
  DIFFSAMPLE_SIMD_DISPATCH(run_denoiser_jvp(c, x, v, n, d, out))
}

void run_baseline_stage(simd_target t, const kernels::baseline_stage_functor& f) {
  DIFFSAMPLE_SIMD_DISPATCH(run_baseline_stage(f))
}
void run_stepwise(simd_target t, const stepwise_run& r) { DIFFSAMPLE_SIMD_DISPATCH(run_stepwise(r)) }
void run_diffpir_tell(simd_target t, const kernels::diffpir_stage_functor& f) {
  DIFFSAMPLE_SIMD_DISPATCH(run_diffpir_tell(f))
}
void run_posterior_sample(simd_target t, const posterior_sample_args& a, float* out) {
  DIFFSAMPLE_SIMD_DISPATCH(run_posterior_sample(a, out))
}
void run_posterior_sample(simd_target t, const posterior_sample_args& a, double* out) {
  DIFFSAMPLE_SIMD_DISPATCH(run_posterior_sample(a, out))
}

void run_langevin(simd_target t, const kernels::langevin_params& p, float* x, std::int64_t d, float* state) {
  switch (t) {
    case simd_target::avx512: return simd_avx512::run_langevin(p, x, d, state);
    case simd_target::avx2: return simd_avx2::run_langevin(p, x, d, state);
    default: return simd_sse2::run_langevin(p, x, d, state);
  }
}

void run_diffusion(simd_target t, const kernels::diffusion_params& p, float* x, std::int64_t d, float* state) {
  switch (t) {
    case simd_target::avx512: return simd_avx512::run_diffusion(p, x, d, state);
    case simd_target::avx2: return simd_avx2::run_diffusion(p, x, d, state);
    default: return simd_sse2::run_diffusion(p, x, d, state);
  }
}
#endif

}  // namespace diffsample::cpu
