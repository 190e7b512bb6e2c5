// The gemm path of an isotropic mixture's evaluate(): the per-point and per-component work around two matrix
// products, shared by the CPU executor (BLAS) and the CUDA executor (cuBLAS).
//
// With a centre m (the mean of the means), x' = x - a m and mu'_k = mu_k - m, the logit is
//   l_k(x) = log w_k - d/2 log(2 pi c_k) - |x' - a mu'_k|^2 / (2 c_k)
//          = bias_k + (a / c_k) G_k - |x'|^2 / (2 c_k),   G_k = x' . mu'_k (first product),
//   bias_k = log w_k - d/2 log(2 pi c_k) - a^2 |mu'_k|^2 / (2 c_k).
// Error bound of the expanded logit (FP32, unit roundoff u = 2^-24, gamma_d = d u / (1 - d u), any summation order
// of the product; u_in is the rounding of the product's operands: 0 in FP32, 2^-11 with TF32):
//   |l_k - fl(l_k)| <= e_k = [a (gamma_d + 2 u_in) |x'| |mu'_k| + 2 u (|x'| + a |mu'_k|)^2] / c_k + 2 u |log_norm_k|.
// The centred form's own bound is about gamma_d q_k / 2 with q_k = |x - a mu_k|^2 / c_k. Near the data at small s,
// |x' - a mu'_k|^2 << |x'| |mu'_k| and the expanded form loses digits: there, every component whose logit could lie
// within window = 20 + 2 max_k e_k nats of the running maximum and whose e_k exceeds 4 times the centred bound (plus
// 2^-20 nats) is recomputed in the centred form. Components left uncorrected are either within 4 times the centred
// form's bound or carry a weight below e^-20 of the largest, so the responsibilities keep the centred form's
// accuracy up to those factors.
// The weighted sum of the means is the second product: A += W M' with W_k = exp(l_k - max) / c_k.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/mixture.cuh"

namespace diffsample::kernels {

/// Constants of component k of an isotropic mixture at one channel (a, s), computed in FP64, stored in FP32.
struct gemm_component {
  float bias;        // log w_k - d/2 log(2 pi c_k) - a^2 |mu'_k|^2 / (2 c_k)
  float log_norm;    // log w_k - d/2 log(2 pi c_k): the centred form's constant
  float cross;       // a / c_k: the coefficient of G_k
  float half_inv_c;  // 1 / (2 c_k): the coefficient of |x'|^2
  float inv_c;       // 1 / c_k
  float x_scale;     // a v_k / c_k: the denoiser's coefficient of x
  float norm;        // |mu'_k|
  float pad;
};

/// Running softmax statistics of one point: max and sum of exp(l - max), and sum_k w_k / c_k, sum_k w_k a v_k / c_k.
struct gemm_point_state {
  float max, sum, inv_c_sum, x_sum;
};

constexpr float gemm_window_nats = 20.f;      // weights below e^-20 of the maximum are not corrected
constexpr float gemm_correct_factor = 4.f;    // correct when the bound exceeds 4 x the centred form's bound
constexpr float gemm_correct_floor = 9.5367431640625e-07f;  // ... plus 2^-20 nats

/// Fills gemm_component k at channel (a, s) from FP32 log-weights and variances and FP64-derived norms |mu'_k|^2.
struct gemm_component_functor {
  const float* log_weights;   // K
  const float* variances;     // K (isotropic)
  const double* norms2;       // K: |mu'_k|^2 in FP64
  gemm_component* out;        // K
  int d;
  double a, s;
  DS_HD void operator()(std::int64_t k) const {
    const double v = variances[k], c = a * a * v + s * s;
    const double log_norm = double(log_weights[k]) - 0.5 * d * (log_two_pi<double>() + log(c));
    gemm_component g;
    g.log_norm = float(log_norm);
    g.bias = float(log_norm - 0.5 * a * a * norms2[k] / c);
    g.cross = float(a / c);
    g.half_inv_c = float(0.5 / c);
    g.inv_c = float(1.0 / c);
    g.x_scale = float(a * v / c);
    g.norm = float(sqrt(norms2[k]));
    g.pad = 0.f;
    out[k] = g;
  }
};

/// One point's work on a chunk of `count` components starting at k0, given row = G_i (count floats): computes the
/// logits, corrects those the bound flags (centred form from xc_i and the centred means), updates the running
/// state, rescales the accumulator row acc_i (d floats, nullptr for log_density) when the maximum moves, and
/// overwrites row with W_ik = exp(l_k - max) / c_k for the second product.
/// xc: x' of the point (d floats); xn = |x'|; xx = |x'|^2; means: centred means K x d; gamma: gamma_d + 2 u_in.
DS_HD_INLINE void gemm_chunk_row(float* row, int count, int k0, const gemm_component* comp, const float* xc, float xn,
                                 float xx, const float* means, int d, float a, float gamma, gemm_point_state& st,
                                 float* acc) {
  const float u = 5.9604644775390625e-08f;  // 2^-24
  const float gamma_d = float(d) * u / (1.f - float(d) * u);
  float chunk_max = -INFINITY, e_max = 0.f;
  for (int kk = 0; kk < count; ++kk) {
    const gemm_component g = comp[k0 + kk];
    const float l = (g.bias - g.half_inv_c * xx) + g.cross * row[kk];
    const float span = xn + a * g.norm;
    const float e = g.inv_c * (a * gamma * xn * g.norm + 2.f * u * span * span) + 2.f * u * fabsf(g.log_norm);
    row[kk] = l;
    chunk_max = l > chunk_max ? l : chunk_max;
    e_max = e > e_max ? e : e_max;
  }
  float top = st.max > chunk_max ? st.max : chunk_max;
  const float threshold = top - (gemm_window_nats + 2.f * e_max);
  // Correction: recompute, in the centred form, the logits that could carry weight and whose expanded form may have
  // lost more than a few times the centred form's own accuracy.
  for (int kk = 0; kk < count; ++kk) {
    const float l = row[kk];
    if (!(l >= threshold)) continue;
    const gemm_component g = comp[k0 + kk];
    const float span = xn + a * g.norm;
    const float e = g.inv_c * (a * gamma * xn * g.norm + 2.f * u * span * span) + 2.f * u * fabsf(g.log_norm);
    const float q_est = 2.f * (g.log_norm - l);  // estimate of |x - a mu_k|^2 / c_k
    const float centred_bound = 0.5f * gamma_d * (q_est > 0.f ? q_est : 0.f);
    if (!(e > gemm_correct_factor * centred_bound + gemm_correct_floor)) continue;
    const float* mu = means + std::int64_t(k0 + kk) * d;
    float q = 0.f;
    for (int j = 0; j < d; ++j) {
      const float diff = xc[j] - a * mu[j];
      q += diff * diff;
    }
    q *= g.inv_c;
    q = q < max_mahalanobis<float>() ? q : max_mahalanobis<float>();
    const float exact = g.log_norm - 0.5f * q;
    row[kk] = exact;
    top = exact > top ? exact : top;
  }
  const float rescale = softmax_exp(st.max - top);  // 0 on the first chunk, exactly 1 if the maximum did not move
  float sum = 0.f, inv_c_sum = 0.f, x_sum = 0.f;
  for (int kk = 0; kk < count; ++kk) {
    const gemm_component g = comp[k0 + kk];
    const float w = softmax_exp(row[kk] - top);
    sum += w;
    inv_c_sum += w * g.inv_c;
    x_sum += w * g.x_scale;
    row[kk] = w * g.inv_c;
  }
  if (rescale != 1.f && acc != nullptr)
    for (int j = 0; j < d; ++j) acc[j] *= rescale;
  st.sum = st.sum * rescale + sum;
  st.inv_c_sum = st.inv_c_sum * rescale + inv_c_sum;
  st.x_sum = st.x_sum * rescale + x_sum;
  st.max = top;
}

/// Merges state b (with accumulator acc_b) into state a (acc_a); either may be empty (max = -inf).
DS_HD_INLINE void gemm_merge(gemm_point_state& sa, float* acc_a, const gemm_point_state& sb, const float* acc_b,
                             int d) {
  if (!(sb.sum > 0.f)) return;
  const float top = sa.max > sb.max ? sa.max : sb.max;
  const float fa = softmax_exp(sa.max - top), fb = softmax_exp(sb.max - top);
  if (acc_a != nullptr)
    for (int j = 0; j < d; ++j) acc_a[j] = acc_a[j] * fa + acc_b[j] * fb;
  sa.sum = sa.sum * fa + sb.sum * fb;
  sa.inv_c_sum = sa.inv_c_sum * fa + sb.inv_c_sum * fb;
  sa.x_sum = sa.x_sum * fa + sb.x_sum * fb;
  sa.max = top;
}

/// Writes the point's result from its final state: what = 0 log-density (one float), 1 score, 2 denoiser (d floats).
/// acc = sum_k W_k mu'_k; score = (a acc - x' sum_k W_k) / sum; denoiser = (s^2 (acc + m sum_k W_k) + x sum_k w_k
/// a v_k / c_k) / sum.
DS_HD_INLINE void gemm_finish_row(int what, const gemm_point_state& st, const float* acc, const float* xc,
                                  const float* x, const float* centre, int d, float a, float s2, float* out) {
  if (what == 0) {
    out[0] = st.max + ds_log(st.sum);
    return;
  }
  const float inv_sum = 1.f / st.sum;
  if (what == 1) {
    for (int j = 0; j < d; ++j) out[j] = (a * acc[j] - xc[j] * st.inv_c_sum) * inv_sum;
  } else {
    for (int j = 0; j < d; ++j) out[j] = (s2 * (acc[j] + centre[j] * st.inv_c_sum) + x[j] * st.x_sum) * inv_sum;
  }
}

}  // namespace diffsample::kernels
