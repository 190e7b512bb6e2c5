// One reverse-diffusion trajectory per chain (formulas in the README), every step from a precomputed
// coefficient table, generic over where the chain's vectors live (registers or strided workspace).
//
// Every sampler of the library is, per step, linear in the state x, the denoiser m = E[x0 | point] and fresh noise:
//   x <- cx x + cm m + cn xi,
// with the denoiser evaluated at the channel (a, s) of the step and at point = ex x + es S (S = running sum of
// earlier measurements, used only by sequential multi-measurement sampling). The host folds the schedule and the
// sampler into (cx, cm, cn) in FP64, so one functor serves DDPM, DDIM, reverse SDEs, probability-flow ODEs,
// stochastic localization, walk-jump and SMS, with no per-sampler kernel to compile. Heun's corrector adds a
// second denoiser evaluation at the next channel.
#pragma once

#include "kernels/chain_runner.cuh"
#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// Flags of a table entry.
enum diffusion_step_flags : int {
  step_heun = 1,        // Heun corrector: x <- x + hx1 x + hm1 m + hx2 xe + hm2 m(xe), xe = cx x + cm m
  step_accumulate = 2,  // after the update: S += x, then x = S init_scale + init_noise xi (next measurement)
};

/// Coefficients of one step (FP32 copies of FP64 host values).
struct diffusion_step {
  float a, s;           // channel of the denoiser
  float ex, es;         // evaluation point ex x + es S
  float cx, cm, cn;     // x <- cx x + cm m + cn xi
  float a2, s2;         // Heun: channel at the next time
  float hx1, hm1, hx2, hm2;
  float init_scale, init_noise;
  int flags;
};

struct diffusion_params {
  mixture_view<float> mix;
  const diffusion_step* table;  // steps + 1 entries; entry `steps` is the final denoise when final_denoise
  std::int64_t steps;
  bool final_denoise;
  bool draw_initial;            // true: x = initial_scale z from step 0 of the chain's stream; false: x is read
  float initial_scale;
  std::uint64_t seed, first_chain;
  std::int64_t n;
  std::int64_t record_every;
  float* trajectory;            // (steps / record_every) x n x d, or nullptr
};

/// Runs the whole trajectory of chain i whose state is in x; m, p, sum are scratch vectors of the same size.
/// Random stream: the initial draw uses step 0 of (seed, chain), table step k uses step k + 1.
template <class V>
DS_HD_INLINE void diffusion_chain(const diffusion_params& p, std::int64_t i, V& x, V& m, V& pt, V& sum) {
  const int d = x.size();
  const std::uint64_t chain = p.first_chain + static_cast<std::uint64_t>(i);
  if (p.draw_initial) {
    philox rng(p.seed, chain, 0);
    const float scale = p.initial_scale;
    rng.normals(d, [&](int j, float z) { x[j] = scale * z; });
  }
  for (int j = 0; j < d; ++j) sum[j] = 0.f;
  for (std::int64_t k = 0; k < p.steps; ++k) {
    const diffusion_step st = p.table[k];
    philox rng(p.seed, chain, static_cast<std::uint64_t>(k) + 1);
    if (st.es != 0.f) {
      for (int j = 0; j < d; ++j) pt[j] = st.ex * x[j] + st.es * sum[j];
      mixture_denoiser(p.mix, pt, st.a, st.s, m);
    } else {
      mixture_denoiser(p.mix, x, st.a, st.s, m);
    }
    if (st.flags & step_heun) {
      // Predictor in pt, the denoiser there in sum (Heun never runs with SMS, whose sum it would overwrite).
      for (int j = 0; j < d; ++j) pt[j] = st.cx * x[j] + st.cm * m[j];
      mixture_denoiser(p.mix, pt, st.a2, st.s2, sum);
      for (int j = 0; j < d; ++j)
        x[j] = x[j] + st.hx1 * x[j] + st.hm1 * m[j] + st.hx2 * pt[j] + st.hm2 * sum[j];
      for (int j = 0; j < d; ++j) sum[j] = 0.f;
    } else if (st.cn != 0.f) {
      rng.normals(d, [&](int j, float z) { x[j] = st.cx * x[j] + st.cm * m[j] + st.cn * z; });
    } else {
      for (int j = 0; j < d; ++j) x[j] = st.cx * x[j] + st.cm * m[j];
    }
    if (st.flags & step_accumulate) {
      rng.normals(d, [&](int j, float z) {
        sum[j] += x[j];
        x[j] = st.init_scale * sum[j] + st.init_noise * z;
      });
    }
    if (p.trajectory != nullptr && (k + 1) % p.record_every == 0) {
      float* out = p.trajectory + (((k + 1) / p.record_every - 1) * p.n + i) * d;
      for (int j = 0; j < d; ++j) out[j] = x[j];
    }
  }
  if (p.final_denoise) {
    const diffusion_step st = p.table[p.steps];
    for (int j = 0; j < d; ++j) pt[j] = st.ex * x[j] + st.es * sum[j];
    mixture_denoiser(p.mix, pt, st.a, st.s, x);
  }
}

/// The diffusion chain body for the runners of kernels/chain_runner.cuh (scratch: m, the Heun point, the SMS sum).
/// The initial state is read from x unless the library draws it.
struct diffusion_chain_body {
  diffusion_params p;
  DS_HD_INLINE bool loads_state() const { return !p.draw_initial; }
  template <class V>
  DS_HD_INLINE void operator()(std::int64_t i, V& x, V& m, V& pt, V& sum) const {
    diffusion_chain(p, i, x, m, pt, sum);
  }
};

}  // namespace diffsample::kernels
