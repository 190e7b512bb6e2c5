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

#include "kernels/backward.cuh"
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
  mixture_channels mix;         // the mixture and its constants at every step's channels (diffusion_channels)
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

/// The channels of a diffusion run for channel_table_functor: 2 per table entry, (a, s) and Heun's (a2, s2).
struct diffusion_channels {
  const diffusion_step* table;
  DS_HD_INLINE bool operator()(std::int64_t c, float& a, float& s) const {
    const diffusion_step& st = table[c / 2];
    if (c % 2 == 0) {
      a = st.a;
      s = st.s;
      return true;
    }
    a = st.a2;
    s = st.s2;
    return (st.flags & step_heun) != 0;
  }
};

/// The per-element operations of a step, shared by the fused chain below and the ask/tell plan (kernels/plan.cuh,
/// src/cpu/chains.cpp), so that a plan answered with the mixture's own denoiser reproduces the fused run bit for bit.
/// The denoiser's evaluation point: ex x + es S.
template <class T>
DS_HD_INLINE T diffusion_point(const diffusion_step& st, T x, T sum) {
  return T(st.ex) * x + T(st.es) * sum;
}
/// The step's affine update x <- cx x + cm m + cn z (kernels/backward.cuh).
DS_HD_INLINE affine_update step_update(const diffusion_step& st) { return {st.cx, st.cm, st.cn}; }
/// x <- cx x + cm m (deterministic steps).
template <class T>
DS_HD_INLINE T diffusion_update(const diffusion_step& st, T x, T m) {
  return step_update(st)(x, m);
}
/// x <- cx x + cm m + cn z.
template <class T>
DS_HD_INLINE T diffusion_update(const diffusion_step& st, T x, T m, T z) {
  return step_update(st)(x, m, z);
}
/// Heun's predictor xe = cx x + cm m.
template <class T>
DS_HD_INLINE T heun_predictor(const diffusion_step& st, T x, T m) {
  return T(st.cx) * x + T(st.cm) * m;
}
/// Heun's corrector x + hx1 x + hm1 m + hx2 xe + hm2 m(xe).
template <class T>
DS_HD_INLINE T heun_corrector(const diffusion_step& st, T x, T m, T xe, T me) {
  return x + T(st.hx1) * x + T(st.hm1) * m + T(st.hx2) * xe + T(st.hm2) * me;
}
/// The start of the next measurement (SMS): S += x, x = init_scale S + init_noise z.
template <class T>
DS_HD_INLINE void diffusion_accumulate(const diffusion_step& st, T& x, T& sum, T z) {
  sum = sum + x;
  x = T(st.init_scale) * sum + T(st.init_noise) * z;
}

/// Runs the whole trajectory of the chain(s) of `lane` whose state is in x; m, pt, sum are scratch vectors.
/// Random stream: the initial draw uses step 0 of (seed, chain), table step k uses step k + 1.
template <class L, class V>
DS_HD_INLINE void diffusion_chain(const diffusion_params& p, const L& lane, V& x, V& m, V& pt, V& sum) {
  using T = typename L::value;
  const int d = x.size();
  if (p.draw_initial) {
    auto rng = lane.rng(p.seed, p.first_chain, 0);
    const T scale = T(p.initial_scale);
    rng.normals(d, [&](int j, T z) { x[j] = scale * z; });  // as plan_initial_functor
  }
  for (int j = 0; j < d; ++j) sum[j] = T(0);
  for (std::int64_t k = 0; k < p.steps; ++k) {
    // A reference, not a copy: the entry's 16 fields are read where they are used, after the denoiser, instead of
    // being held in registers across it (a copy made the CUDA workspace kernel spill at its 128-register limit).
    const diffusion_step& st = p.table[k];
    const channel_view ch = p.mix.at(2 * k, st.a, st.s);
    auto rng = lane.rng(p.seed, p.first_chain, static_cast<std::uint64_t>(k) + 1);
    if (st.es != 0.f) {
      for (int j = 0; j < d; ++j) pt[j] = diffusion_point(st, x[j], sum[j]);
      channel_denoiser<T>(ch, pt, m);
    } else {
      channel_denoiser<T>(ch, x, m);
    }
    if (st.flags & step_heun) {
      // Predictor in pt, the denoiser there in sum (Heun never runs with SMS, whose sum it would overwrite).
      for (int j = 0; j < d; ++j) pt[j] = heun_predictor(st, x[j], m[j]);
      channel_denoiser<T>(p.mix.at(2 * k + 1, st.a2, st.s2), pt, sum);
      for (int j = 0; j < d; ++j) x[j] = heun_corrector(st, x[j], m[j], pt[j], sum[j]);
      for (int j = 0; j < d; ++j) sum[j] = T(0);
    } else if (st.cn != 0.f) {
      rng.normals(d, [&](int j, T z) { x[j] = diffusion_update(st, x[j], m[j], z); });
    } else {
      for (int j = 0; j < d; ++j) x[j] = diffusion_update(st, x[j], m[j]);
    }
    if (st.flags & step_accumulate) {
      rng.normals(d, [&](int j, T z) { diffusion_accumulate(st, x[j], sum[j], z); });
    }
    if (p.trajectory != nullptr && (k + 1) % p.record_every == 0)
      lane.store_row(p.trajectory, (k + 1) / p.record_every - 1, p.n, x);
  }
  if (p.final_denoise) {
    const diffusion_step st = p.table[p.steps];
    for (int j = 0; j < d; ++j) pt[j] = diffusion_point(st, x[j], sum[j]);
    channel_denoiser<T>(p.mix.at(2 * p.steps, st.a, st.s), pt, x);
  }
}

/// The diffusion chain body for the runners of kernels/chain_runner.cuh (scratch: m, the Heun point, the SMS sum).
/// The initial state is read from x unless the library draws it.
struct diffusion_chain_body {
  static constexpr bool single_channel = false;  // p.mix has two channels per step
  // No J v (channel_jvp) and no mixture_view function: a CUDA chain launch need not stage an isotropic mixture's
  // variances (kernels/chain_launch.cuh).
  static constexpr bool reads_isotropic_variances = false;
  diffusion_params p;
  DS_HD_INLINE bool loads_state() const { return !p.draw_initial; }
  template <class L, class V>
  DS_HD_INLINE void operator()(const L& lane, V& x, V& m, V& pt, V& sum) const {
    diffusion_chain(p, lane, x, m, pt, sum);
  }
};

}  // namespace diffsample::kernels
