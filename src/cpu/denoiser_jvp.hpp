// The mixture's exact denoiser Jacobian-vector products at one channel, over packs of points (T = fpack of one
// dispatch target, src/cpu/simd.hpp): the guided samplers' J v (TMPD's J A^T, DCPS's J u, the moment-projected
// SMC's A J A^T) without kernels::mixture_denoiser_jvp's per-lane branches and three passes over the components.
//
// With delta_k = (a mu_k - x) / c_k, r_k the posterior component weights and score = sum_k r_k delta_k,
//   J v = sum_k r_k (a v_k / c_k) v + (s^2 / a) [ sum_k r_k delta_k (delta_k . v) - score (score . v) ],
// the same identity as kernels::mixture_denoiser_jvp (sum_k r_k delta_k (delta_k . v - alpha), alpha = score . v),
// with the sums taken in one pass over the components: the chunked online softmax of kernels::channel_chunk_weights
// (constants per channel, exp of a chunk's logits without dependencies), the three running sums rescaled with it.
// `count` vectors at the same point share the weights, the score sum and the coefficient of v: per component and
// coordinate 4 operations for the logit and the score sum, 4 per vector (delta . v and the second-moment sum).
#pragma once

#include <cstdint>

#include "kernels/mixture.cuh"

namespace diffsample::cpu::DS_SIMD_NS {

/// Packs of scratch channel_denoiser_jvp needs for `count` vectors of dimension d.
inline std::int64_t denoiser_jvp_scratch(int d, int count) {
  return 2 * static_cast<std::int64_t>(d) + static_cast<std::int64_t>(kernels::channel_chunk) * count;
}

/// out[q d + j] = (J v_q)_j for q < count, v_q = v + q d (packs; out may not alias v or x), J the denoiser's
/// Jacobian at x (d packs) and channel c. scratch: denoiser_jvp_scratch(d, count) packs.
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
  T* s1 = scratch;      // sum_k w_k delta_k
  T* xpart = s1 + d;    // diagonal components: sum_k w_k a v_kj / c_kj per coordinate
  T* dv = xpart + d;    // C x count: delta_k . v_q of the chunk
  T xs_iso = T(0.f);    // isotropic: sum_k w_k a v_k / c_k
  for (int j = 0; j < d; ++j) s1[j] = T(0.f);
  if (!c.isotropic)
    for (int j = 0; j < d; ++j) xpart[j] = T(0.f);
  for (std::int64_t e = 0; e < static_cast<std::int64_t>(count) * d; ++e) out[e] = T(0.f);
  T run_max = T(-INFINITY), run_sum = T(0.f);
  for (int k0 = 0; k0 < c.components; k0 += C) {
    T w[C];
    const T rescale = kernels::channel_chunk_weights<C>(c, k0, xv, run_max, run_sum, w);
    const bool moved = !ds_none(rescale != T(1.f));
    const float *am[C], *ic[C], *var[C];
    float ic_iso[C];
    if (c.isotropic && moved) xs_iso = xs_iso * rescale;
    for (int kk = 0; kk < C; ++kk) {
      const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
      const std::int64_t off = static_cast<std::int64_t>(k) * d;
      am[kk] = c.scaled_means != nullptr ? c.scaled_means + off : c.means + off;
      ic[kk] = c.isotropic ? nullptr : c.inv_c + off;
      var[kk] = c.isotropic ? nullptr : c.variances + off;
      ic_iso[kk] = c.isotropic ? c.comp[k].inv_c : 0.f;
      if (c.isotropic) xs_iso = ds_fma(w[kk], T(c.comp[k].x_scale), xs_iso);
    }
    const bool scaled = c.scaled_means != nullptr;
    // delta_kj of the chunk's components at coordinate j (a past-the-end component repeats the last: weight 0).
    auto deltas = [&](int j, T (&dk)[C]) {
      const T xj = x[j];
      for (int kk = 0; kk < C; ++kk) {
        const T e = (scaled ? T(am[kk][j]) : T(c.a * am[kk][j])) - xj;
        dk[kk] = c.isotropic ? e * T(ic_iso[kk]) : e * T(ic[kk][j]);
      }
    };
    // Pass 1 over the coordinates: delta_k . v_q, then times w_k.
    for (int e = 0; e < C * count; ++e) dv[e] = T(0.f);
    for (int j = 0; j < d; ++j) {
      T dk[C];
      deltas(j, dk);
      for (int q = 0; q < count; ++q) {
        const T vq = v[static_cast<std::int64_t>(q) * d + j];
        for (int kk = 0; kk < C; ++kk) dv[kk * count + q] = ds_fma(dk[kk], vq, dv[kk * count + q]);
      }
    }
    for (int kk = 0; kk < C; ++kk)
      for (int q = 0; q < count; ++q) dv[kk * count + q] = dv[kk * count + q] * w[kk];
    // Pass 2: the running sums, rescaled once per chunk when the maximum moved.
    for (int j = 0; j < d; ++j) {
      T dk[C];
      deltas(j, dk);
      T a1 = moved ? s1[j] * rescale : s1[j];
      for (int kk = 0; kk < C; ++kk) a1 = ds_fma(w[kk], dk[kk], a1);
      s1[j] = a1;
      if (!c.isotropic) {
        T xp = moved ? xpart[j] * rescale : xpart[j];
        for (int kk = 0; kk < C; ++kk) xp = ds_fma(w[kk], T(c.a * var[kk][j]) * T(ic[kk][j]), xp);
        xpart[j] = xp;
      }
      for (int q = 0; q < count; ++q) {
        T& o = out[static_cast<std::int64_t>(q) * d + j];
        T acc = moved ? o * rescale : o;
        for (int kk = 0; kk < C; ++kk) acc = ds_fma(dv[kk * count + q], dk[kk], acc);
        o = acc;
      }
    }
  }
  const T inv_sum = T(1.f) / run_sum;
  const T ratio(c.s2 / c.a);
  for (int j = 0; j < d; ++j) s1[j] = s1[j] * inv_sum;  // the score
  for (int q = 0; q < count; ++q) {
    const T* vq = v + static_cast<std::int64_t>(q) * d;
    T* oq = out + static_cast<std::int64_t>(q) * d;
    T alpha = T(0.f);
    for (int j = 0; j < d; ++j) alpha = ds_fma(s1[j], vq[j], alpha);
    for (int j = 0; j < d; ++j) {
      const T coeff = c.isotropic ? xs_iso * inv_sum : xpart[j] * inv_sum;
      oq[j] = ds_fma(coeff, vq[j], ratio * ds_fma(oq[j], inv_sum, -(s1[j] * alpha)));
    }
  }
}

}  // namespace diffsample::cpu::DS_SIMD_NS
