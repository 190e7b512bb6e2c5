// The mixture's exact denoiser Jacobian-vector products at one channel, over packs of points (T = fpack of one
// dispatch target, src/cpu/simd.hpp): the guided samplers' J v (DPS's and Pi-GDM's guidance, TMPD's J A^T, DCPS's
// J u, the moment-projected SMC's A J A^T) without kernels::mixture_denoiser_jvp's per-lane branches and its three
// passes that recompute every logit.
//
// With r_k the posterior component weights, J = (a / s^2) Cov(x0 | x) and the posterior means' differences
// m_k - m_l = s^2 (n_k - n_l), n_kj = mu_kj / c_kj + x_j e_kj, e_kj = a (v_kj - v_0j) / (c_kj c_0j),
//   J v = sum_k r_k (a v_k / c_k) v + a s^2 sum_k r_k f_k (f_k . v),   f_k = n_k - sum_l r_l n_l,
// kernels::mixture_denoiser_jvp's form with both factors centred. No term of size |x| / a: the centring loses about
// |mu| / |mu_k - mu_l| of float precision whatever a. Formed before from delta_k = (a mu_k - x) / c_k (f_k a times
// delta_k - score), where every delta_k is close to -x / c at small a: about |x| / (a |mu_k - mu_l|) of precision lost
// in each factor (J v of O(1) against a true 6e-11 at a = 1e-13 on a grid of spacing 8; NaN samples from DPS, Pi-GDM
// and TMPD on an Ornstein-Uhlenbeck schedule of horizon 50, a = 2e-22).
// Two passes over the components: the first is the denoiser's chunked online softmax (kernels::channel_chunk_weights,
// constants per channel) with the sum of the n_k, keeping each chunk's weights and running maximum; the second
// rescales them to the final maximum (one exp per chunk), centres the chunk's n_k, and accumulates (the centred n_k
// formed twice, for f_k . v and for the sum, rather than stored: 8 d packs of them would leave L1 at d = 100).
// `count` vectors at the same point share the weights and nbar: per component and coordinate 7 FLOP (logit, n_kj,
// the sum; 10 for diagonal components, whose e_kj is formed per coordinate) plus 6 per vector (n_kj and its centring
// twice, f . v, the sum).
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/mixture.cuh"

namespace diffsample::cpu::DS_SIMD_NS {

/// Packs of scratch channel_denoiser_jvp needs for `count` vectors of dimension d and a mixture of `components`.
inline std::int64_t denoiser_jvp_scratch(int d, int count, int components) {
  constexpr std::int64_t C = kernels::channel_chunk;
  const std::int64_t chunks = (components + C - 1) / C;
  return 2 * static_cast<std::int64_t>(d) + chunks * (C + 1) + C * count;
}

/// out[q d + j] = (J v_q)_j for q < count, v_q = v + q d (packs; out may not alias v or x), J the denoiser's
/// Jacobian at x (d packs) and channel c. scratch: denoiser_jvp_scratch(d, count, c.components) packs.
template <class T>
void channel_denoiser_jvp(const kernels::channel_view& c, const T* x, int d, const T* v, int count, T* out,
                          T* scratch) {
  constexpr int C = kernels::channel_chunk;
  struct view {
    const T* p;
    int n;
    const T& operator[](int j) const { return p[j]; }
    int size() const { return n; }
  };
  const view xv{x, d};
  const int chunks = (c.components + C - 1) / C;
  T* s1 = scratch;          // sum_k w_k n_k, then nbar = sum_k r_k n_k
  T* xpart = s1 + d;        // diagonal components: sum_k w_k a v_kj / c_kj per coordinate
  T* wts = xpart + d;       // chunks x C: each chunk's weights relative to its running maximum
  T* cmax = wts + chunks * C;  // chunks: that running maximum
  T* dv = cmax + chunks;    // C x count: r_k (f_k . v_q)
  T xs_iso = T(0.f);        // isotropic: sum_k w_k a v_k / c_k
  for (int j = 0; j < d; ++j) s1[j] = T(0.f);
  if (!c.isotropic)
    for (int j = 0; j < d; ++j) xpart[j] = T(0.f);
  // Pointers of the chunk's components (a past-the-end component repeats the last: its weight is 0); component 0's
  // 1 / c and variances for e_k.
  const float *mu[C], *ic[C], *var[C];
  float ic_iso[C], e_iso[C];
  const float* ic0 = c.isotropic ? nullptr : c.inv_c;
  const float* var0 = c.variances;
  auto set_chunk = [&](int k0, int width) {
    for (int kk = 0; kk < width; ++kk) {
      const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
      const std::int64_t off = static_cast<std::int64_t>(k) * d;
      mu[kk] = c.means + off;
      ic[kk] = c.isotropic ? nullptr : c.inv_c + off;
      var[kk] = c.isotropic ? nullptr : c.variances + off;
      ic_iso[kk] = c.isotropic ? c.comp[k].inv_c : 0.f;
      e_iso[kk] = c.isotropic ? c.a * (c.variances[k] - var0[0]) * c.comp[k].inv_c * c.comp[0].inv_c : 0.f;
    }
  };
  auto deltas = [&](int j, auto& dk) {  // n_kj for the chunk's N components
    constexpr int N = std::extent_v<std::remove_reference_t<decltype(dk)>>;
    const T xj = x[j];
    if (c.isotropic) {
      for (int kk = 0; kk < N; ++kk) dk[kk] = ds_fma(xj, T(e_iso[kk]), T(mu[kk][j]) * T(ic_iso[kk]));
      return;
    }
    const float v0 = var0[j], i0 = ic0[j];
    for (int kk = 0; kk < N; ++kk) {
      const float icj = ic[kk][j];
      dk[kk] = ds_fma(xj, T(c.a * (var[kk][j] - v0) * icj * i0), T(mu[kk][j]) * T(icj));
    }
  };
  // Pass 1: weights, the sum of the n_k and the coefficient of v.
  T run_max = T(-INFINITY), run_sum = T(0.f);
  // The chunks as the denoiser's (kernels::for_each_chunk: the last one 1, 2 or 4 wide where that covers it, each
  // chunk's weights at wts + its index * C).
  kernels::for_each_chunk<C>(c.components, [&](auto width, int k0) {
    constexpr int N = decltype(width)::value;
    const int ci = k0 / C;
    T* w = wts + ci * C;
    T wl[N];
    const T rescale = kernels::channel_chunk_weights<N>(c, k0, xv, run_max, run_sum, wl);
    const bool moved = !ds_none(rescale != T(1.f));
    for (int kk = 0; kk < N; ++kk) w[kk] = wl[kk];
    cmax[ci] = run_max;
    set_chunk(k0, N);
    if (c.isotropic) {
      if (moved) xs_iso = xs_iso * rescale;
      for (int kk = 0; kk < N; ++kk) {
        const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
        xs_iso = ds_fma(w[kk], T(c.comp[k].x_scale), xs_iso);
      }
    }
    for (int j = 0; j < d; ++j) {
      T dk[N];
      deltas(j, dk);
      T a1 = moved ? s1[j] * rescale : s1[j];
      for (int kk = 0; kk < N; ++kk) a1 = ds_fma(w[kk], dk[kk], a1);
      s1[j] = a1;
      if (!c.isotropic) {
        T xp = moved ? xpart[j] * rescale : xpart[j];
        for (int kk = 0; kk < N; ++kk) xp = ds_fma(w[kk], T(c.a * var[kk][j]) * T(ic[kk][j]), xp);
        xpart[j] = xp;
      }
    }
  });
  const T inv_sum = T(1.f) / run_sum;
  for (int j = 0; j < d; ++j) s1[j] = s1[j] * inv_sum;  // nbar
  // Pass 2: a s^2 sum_k r_k f_k (f_k . v_q), r_k = w_k exp(chunk max - final max) / sum. The scale a s^2 goes into
  // each (f_k . v_q) r_k before it multiplies f_k again (no extra multiply: r_k's own): with the scale applied after
  // the sum, f_k (f_k . v) (about |x - a mu| / c squared) overflowed FP32 at c below about 1e-19 (v = 1e-24,
  // s = 1e-10) where J v itself is finite. a = 0: J v = 0 (the scale is 0, and x_scale, a v_k / c_k, is 0 too).
  const T ratio(c.a * c.s2);
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(count) * d; ++i) out[i] = T(0.f);
  kernels::for_each_chunk<C>(c.components, [&](auto width, int k0) {
    constexpr int N = decltype(width)::value;
    const int ci = k0 / C;
    set_chunk(k0, N);
    const T f = softmax_exp(cmax[ci] - run_max) * inv_sum;
    for (int i = 0; i < N * count; ++i) dv[i] = T(0.f);
    for (int j = 0; j < d; ++j) {
      T dk[N];
      deltas(j, dk);
      const T sj = s1[j];
      for (int kk = 0; kk < N; ++kk) dk[kk] = dk[kk] - sj;
      for (int q = 0; q < count; ++q) {
        const T vq = v[static_cast<std::int64_t>(q) * d + j];
        for (int kk = 0; kk < N; ++kk) dv[kk * count + q] = ds_fma(dk[kk], vq, dv[kk * count + q]);
      }
    }
    for (int kk = 0; kk < N; ++kk) {
      const T r = wts[ci * C + kk] * f * ratio;
      for (int q = 0; q < count; ++q) dv[kk * count + q] = dv[kk * count + q] * r;
    }
    for (int j = 0; j < d; ++j) {  // f_kj again (recomputed: 8 d stored packs would leave L1 at large d)
      T dk[N];
      deltas(j, dk);
      const T sj = s1[j];
      for (int kk = 0; kk < N; ++kk) dk[kk] = dk[kk] - sj;
      for (int q = 0; q < count; ++q) {
        T& o = out[static_cast<std::int64_t>(q) * d + j];
        T acc = o;
        for (int kk = 0; kk < N; ++kk) acc = ds_fma(dv[kk * count + q], dk[kk], acc);
        o = acc;
      }
    }
  });
  for (int q = 0; q < count; ++q) {
    const T* vq = v + static_cast<std::int64_t>(q) * d;
    T* oq = out + static_cast<std::int64_t>(q) * d;
    for (int j = 0; j < d; ++j) {
      const T coeff = c.isotropic ? xs_iso * inv_sum : xpart[j] * inv_sum;
      oq[j] = ds_fma(coeff, vq[j], oq[j]);
    }
  }
}

}  // namespace diffsample::cpu::DS_SIMD_NS
