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
//
// The denoiser JVP, J = (a / s^2) Cov(x0 | x), from the law of total covariance as kernels::mixture_denoiser_jvp
// forms it, in the centred coordinates: component k's posterior mean is m_k = (s^2 mu_k + a v_k x) / c_k and
// m_k - m_l = s^2 (n_k - n_l) with
//   n_k = mu'_k / c_k + x' e_k,  e_k = a (v_k - v_0) / (c_k c_0)
// (the centre's part m a^2 (v_l - v_k) / (c_k c_l) joins x's: x - a m = x'), so
//   J v = a [ v sum_k r_k v_k / c_k + s^2 sum_k r_k (p_k - pbar) n_k ],  p_k = n_k . v = (mu'_k . v) / c_k + e_k (x' . v),
// pbar = sum_k r_k p_k. mu'_k . v is a third product (H = V M'^T) beside the logits; the first pass gets the softmax
// statistics and pbar, the second B_k = w_k (p_k - pbar) and sum_k (B_k / c_k) mu'_k as a fourth product, x' sum_k
// B_k e_k and a applied last (in FP64: below FP32's normal range a is not rounded). No term of size |x| / a and no
// division by a: the cancellations left (p_k - pbar, the sums over k) are of |mu'| against |mu_k - mu_l|, whatever
// a. e_k = 0 exactly when the variances are equal (an empirical prior).
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
  float e;           // a (v_k - v_0) / (c_k c_0): the JVP's coefficient of x' in n_k
  float var_c;       // v_k / c_k: the JVP's coefficient of a v
  float inv_cs;      // scale / c_k (gemm_weight_scale): the second products' weights, without the FP32 overflow
  float pad;
};

/// The power of two by which the second products' weights w_k / c_k are scaled (gemm_component::inv_cs, undone in
/// gemm_finish_row and gemm_finish_jvp_row), from the channel (a, s)'s smallest c_k = a^2 v_min + s^2 (v_min the
/// smallest variance, gemm_tables::smallest_variance): 1 (nothing changes)
/// for c_min >= 2^-40, else a power of two near 2^40 c_min, so that scale / c_k <= 2^40. Unscaled, 1 / c_k reaches
/// 1e36 (variances down to 1e-36) and the products sum_k (w_k / c_k) mu'_k and the JVP's (B_k / c_k) mu'_k passed
/// FP32 at |mu'| of a few hundred, where the results are finite: NaN or inf from the score, the denoiser and J v
/// (the direct path forms its terms per component and was finite). A power of two scales and unscales without
/// rounding (but where a weight of a component 1e50 times wider than the narrowest falls below FP32's normal range).
inline double gemm_weight_scale(double smallest_variance, double a, double s) {
  const double c_min = a * a * smallest_variance + s * s;  // gemm_component_functor's c of that variance
  if (!(c_min < 0x1p-40)) return 1.0;
  int e = 0;
  (void)std::frexp(c_min, &e);         // c_min in [2^(e - 1), 2^e)
  return std::ldexp(1.0, e - 1 + 40);  // at most 2^40 c_min: scale / c_k <= 2^40
}

/// Running softmax statistics of one point: max and sum of exp(l - max), and sum_k w_k / c_k, sum_k w_k a v_k / c_k.
struct gemm_point_state {
  float max, sum, inv_c_sum, x_sum;
};

/// The denoiser JVP's sums of one point (w_k = exp(l_k - max), rescaled with the running maximum in the first pass):
/// p_sum = sum_k w_k p_k (pbar = p_sum / sum), var_sum = sum_k w_k v_k / c_k, the point's x' . v, the component of
/// the largest logit (top, and that logit), and from the second pass be = sum_k B_k e_k and b_sum = sum_k B_k
/// (B_k = w_k (p_k - pbar)).
struct gemm_jvp_state {
  float p_sum, var_sum, xv, be, b_sum, top_logit;
  int top;
};

/// JVP operands of one point for gemm_chunk_row's first pass: h = the chunk's mu'_k . v (a product V M'^T), st its
/// sums.
struct gemm_jvp_row {
  const float* h;
  gemm_jvp_state* st;
};

/// p_k = n_k . v of component g from h = mu'_k . v and the point's x' . v.
DS_HD_INLINE float gemm_jvp_p(const gemm_component& g, float h, float xv) { return h * g.inv_c + g.e * xv; }

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
  double scale = 1.0;  // gemm_weight_scale
  DS_HD void operator()(std::int64_t k) const {
    const double v = variances[k], c = a * a * v + s * s, v0 = variances[0], c0 = a * a * v0 + s * s;
    const double log_norm = double(log_weights[k]) - 0.5 * d * (log_two_pi<double>() + log(c));
    gemm_component g;
    g.log_norm = float(log_norm);
    g.bias = float(log_norm - 0.5 * a * a * norms2[k] / c);
    g.cross = float(a / c);
    g.half_inv_c = float(0.5 / c);
    g.inv_c = float(1.0 / c);
    g.x_scale = float(a * v / c);
    g.norm = float(sqrt(norms2[k]));
    g.e = float(a * (v - v0) / (c * c0));
    g.var_c = float(v / c);
    g.inv_cs = float(scale / c);  // exactly scale times inv_c: scale is a power of two
    g.pad = 0.f;
    out[k] = g;
  }
};

/// Maxima over a chunk of components of 1 / c_k, |mu'_k| and |log_norm_k|: with them one bound on every e_k of the
/// chunk replaces a per-component evaluation in the first pass (the window only widens: each candidate is still
/// tested with its own e_k).
struct gemm_chunk_bound {
  float inv_c, norm, log_norm;
};

/// The expanded logit floored as component_logit() floors the centred one (q_k = |x - a mu_k|^2 / c_k at most
/// max_mahalanobis, so l_k >= log_norm_k - max / 2): a point far from every component gets the direct path's finite
/// logits, where |x'|^2 beyond FLT_MAX made them -inf (and -inf + inf NaN), so that the softmax's maximum was -inf and
/// every output NaN, and a |x'|^2 just below it gave logits beyond the direct path's floor.
DS_HD_INLINE float gemm_floored(const gemm_component& g, float l) {
  const float lowest = g.log_norm - 0.5f * max_mahalanobis<float>();
  return l >= lowest ? l : lowest;  // NaN too (the direct path maps a NaN q to the floor as well)
}

/// The logits of one point for a chunk of `count` components starting at k0, from row = G_i (count floats,
/// overwritten with the logits): the expanded form, then the correction (centred form from xc_i and the centred
/// means) of those the bound flags against the running maximum run_max. Returns the new maximum.
/// xc: x' of the point (d floats); xn = |x'|; xx = |x'|^2; means: centred means K x d; gamma: gamma_d + 2 u_in.
DS_HD_INLINE float gemm_logits(float* row, int count, int k0, const gemm_component* comp, const float* xc, float xn,
                               float xx, const float* means, int d, float a, float gamma, float run_max,
                               const gemm_chunk_bound* cb = nullptr) {
  const float u = 5.9604644775390625e-08f;  // 2^-24
  const float gamma_d = float(d) * u / (1.f - float(d) * u);
  float chunk_max = -INFINITY, e_max = 0.f;
  if (cb != nullptr) {
    const float span = xn + a * cb->norm;
    e_max = cb->inv_c * (a * gamma * xn * cb->norm + 2.f * u * span * span) + 2.f * u * cb->log_norm;
    for (int kk = 0; kk < count; ++kk) {
      const gemm_component g = comp[k0 + kk];
      const float l = gemm_floored(g, (g.bias - g.half_inv_c * xx) + g.cross * row[kk]);
      row[kk] = l;
      chunk_max = l > chunk_max ? l : chunk_max;
    }
  } else {
    for (int kk = 0; kk < count; ++kk) {
      const gemm_component g = comp[k0 + kk];
      const float l = gemm_floored(g, (g.bias - g.half_inv_c * xx) + g.cross * row[kk]);
      const float span = xn + a * g.norm;
      const float e = g.inv_c * (a * gamma * xn * g.norm + 2.f * u * span * span) + 2.f * u * fabsf(g.log_norm);
      row[kk] = l;
      chunk_max = l > chunk_max ? l : chunk_max;
      e_max = e > e_max ? e : e_max;
    }
  }
  const float threshold = (run_max > chunk_max ? run_max : chunk_max) - (gemm_window_nats + 2.f * e_max);
  // Correction: recompute, in the centred form, the logits that could carry weight and whose expanded form may have
  // lost more than a few times the centred form's own accuracy. The maximum returned is that of the logits as
  // corrected: a correction may lower the logit that set the expanded maximum by more than the softmax's range (the
  // expanded form's error grows as |x'|^2 / c: 1e16 nats at c = 1e-24), and weights taken relative to that stale
  // maximum all underflowed to 0 (a log-density of -inf, NaN scores and denoisers).
  float top = run_max;
  for (int kk = 0; kk < count; ++kk) {
    float l = row[kk];
    if (l >= threshold) {
      const gemm_component g = comp[k0 + kk];
      const float span = xn + a * g.norm;
      const float e = g.inv_c * (a * gamma * xn * g.norm + 2.f * u * span * span) + 2.f * u * fabsf(g.log_norm);
      const float q_est = 2.f * (g.log_norm - l);  // estimate of |x - a mu_k|^2 / c_k
      const float centred_bound = 0.5f * gamma_d * (q_est > 0.f ? q_est : 0.f);
      if (e > gemm_correct_factor * centred_bound + gemm_correct_floor) {
        const float* mu = means + std::int64_t(k0 + kk) * d;
        float q = 0.f;
        for (int j = 0; j < d; ++j) {
          const float diff = xc[j] - a * mu[j];
          q += diff * diff;
        }
        q *= g.inv_c;
        q = q < max_mahalanobis<float>() ? q : max_mahalanobis<float>();
        l = g.log_norm - 0.5f * q;
        row[kk] = l;
      }
    }
    top = l > top ? l : top;
  }
  return top;
}

/// One point's work on a chunk: the logits (gemm_logits), the running state updated, the accumulator row acc_i (d
/// floats, nullptr for log_density or the JVP's first pass) rescaled when the maximum moves, and row overwritten with
/// W_ik = exp(l_k - max) / c_k for the second product. With jvp.h (the JVP's first pass), also its sums p_sum and
/// var_sum.
DS_HD_INLINE void gemm_chunk_row(float* row, int count, int k0, const gemm_component* comp, const float* xc, float xn,
                                 float xx, const float* means, int d, float a, float gamma, gemm_point_state& st,
                                 float* acc, gemm_jvp_row jvp = {nullptr, nullptr},
                                 const gemm_chunk_bound* cb = nullptr) {
  const float top = gemm_logits(row, count, k0, comp, xc, xn, xx, means, d, a, gamma, st.max, cb);
  const float rescale = softmax_exp(st.max - top);  // 0 on the first chunk, exactly 1 if the maximum did not move
  const float xv = jvp.h != nullptr ? jvp.st->xv : 0.f;
  float sum = 0.f, inv_c_sum = 0.f, x_sum = 0.f, p_sum = 0.f, var_sum = 0.f;
  for (int kk = 0; kk < count; ++kk) {
    const gemm_component g = comp[k0 + kk];
    const float l = row[kk];
    const float w = softmax_exp(l - top);
    sum += w;
    inv_c_sum += w * g.inv_cs;
    x_sum += w * g.x_scale;
    row[kk] = w * g.inv_cs;
    if (jvp.h != nullptr) {
      p_sum += w * gemm_jvp_p(g, jvp.h[kk], xv);
      var_sum += w * g.var_c;
      if (l > jvp.st->top_logit) {
        jvp.st->top_logit = l;
        jvp.st->top = k0 + kk;
      }
    }
  }
  if (rescale != 1.f && acc != nullptr)
    for (int j = 0; j < d; ++j) acc[j] *= rescale;
  if (jvp.h != nullptr) {
    jvp.st->p_sum = jvp.st->p_sum * rescale + p_sum;
    jvp.st->var_sum = jvp.st->var_sum * rescale + var_sum;
  }
  st.sum = st.sum * rescale + sum;
  st.inv_c_sum = st.inv_c_sum * rescale + inv_c_sum;
  st.x_sum = st.x_sum * rescale + x_sum;
  st.max = top;
}

/// The JVP's second pass over a chunk, with the point's final maximum and pbar known: the same logits again, h
/// (mu'_k . v on entry) overwritten with B_k / c_k, B_k = w_k (p_k - pbar) (w_k = exp(l_k - max)), for the product
/// sum_k (B_k / c_k) mu'_k, and js.be += sum_k B_k e_k. Centring p_k on pbar before the sums keeps their terms of the
/// size of p_k - p_l.
DS_HD_INLINE void gemm_jvp_second_row(float* row, float* h, gemm_jvp_state& js, int count, int k0,
                                      const gemm_component* comp, const float* xc, float xn, float xx,
                                      const float* means, int d, float a, float gamma, float final_max, float pbar,
                                      const gemm_chunk_bound* cb = nullptr) {
  (void)gemm_logits(row, count, k0, comp, xc, xn, xx, means, d, a, gamma, final_max, cb);
  float be = 0.f, b_sum = 0.f;
  for (int kk = 0; kk < count; ++kk) {
    const gemm_component g = comp[k0 + kk];
    const float w = softmax_exp(row[kk] - final_max);
    const float b = w * (gemm_jvp_p(g, h[kk], js.xv) - pbar);
    h[kk] = b * g.inv_cs;
    be += b * g.e;
    b_sum += b;
  }
  js.be += be;
  js.b_sum += b_sum;
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
/// a v_k / c_k) / sum, with W_k = w_k scale / c_k and inv_scale = 1 / scale (gemm_weight_scale).
DS_HD_INLINE void gemm_finish_row(int what, const gemm_point_state& st, const float* acc, const float* xc,
                                  const float* x, const float* centre, int d, float a, float s2, float inv_scale,
                                  float* out) {
  if (what == 0) {
    out[0] = st.max + ds_log(st.sum);
    return;
  }
  const float inv_sum = 1.f / st.sum;
  if (what == 1) {
    for (int j = 0; j < d; ++j) out[j] = ((a * acc[j] - xc[j] * st.inv_c_sum) * inv_sum) * inv_scale;
  } else {
    const float s2s = s2 * inv_scale;  // at most 2^-39 when scaled (s^2 <= c_min)
    for (int j = 0; j < d; ++j) out[j] = (s2s * (acc[j] + centre[j] * st.inv_c_sum) + x[j] * st.x_sum) * inv_sum;
  }
}

/// The denoiser JVP of a point: J v = a [v var_sum + s^2 (acc2 + x' be - n_top b_sum)] / sum, acc2 =
/// sum_k (B_k / c_k) mu'_k, the gemm form of a sum_k r_k [(v_k / c_k) v + s^2 (p_k - pbar) (n_k - n_top)]: n_top
/// (the component of the largest logit, top: its mean mu'_top and constants g_top) is common to every k, and
/// sum_k B_k = 0 but for rounding; taking it out removes the rounding of pbar times n_top where top dominates (that
/// rounding, u |p_top| |n_top|, was the largest error there). a multiplies last, in FP64 (a = 0: J v = 0). acc2's
/// weights are scaled (B_k scale / c_k, gemm_component::inv_cs), and so are bc and be here; s^2 takes inv_scale.
DS_HD_INLINE void gemm_finish_jvp_row(const gemm_point_state& st, const gemm_jvp_state& js, const float* acc2,
                                      const float* xc, const float* v, const float* mu_top,
                                      const gemm_component& g_top, int d, double a, float s2, float inv_scale,
                                      float* out) {
  const float inv_sum = 1.f / st.sum, s2s = s2 * inv_scale, scale = 1.f / inv_scale;
  const float bc = js.b_sum * g_top.inv_cs, be = (js.be - js.b_sum * g_top.e) * scale;
  for (int j = 0; j < d; ++j)
    out[j] = float(a * double((v[j] * js.var_sum + s2s * ((acc2[j] - mu_top[j] * bc) + xc[j] * be)) * inv_sum));
}

// --- the CUDA executor's per-point functors around the products (src/mixture_gemm.cu launches them) -------------

// x' = x - a m for the pass's points, |x'| and |x'|^2, the running state emptied and the accumulator zeroed.
struct gemm_centre_functor {
  const float* x;
  const float* centre;
  float* xc;
  float* xn;  // pass: |x'| then |x'|^2
  gemm_point_state* st;
  float* acc;
  std::int64_t first;
  int d;
  float a;
  DS_HD void operator()(std::int64_t r) const {
    const float* xi = x + (first + r) * d;
    float* o = xc + r * d;
    double q = 0;
    for (int j = 0; j < d; ++j) {
      o[j] = xi[j] - a * centre[j];
      q += double(o[j]) * o[j];
    }
    xn[2 * r] = float(sqrt(q));
    xn[2 * r + 1] = float(q);
    st[r] = gemm_point_state{-INFINITY, 0.f, 0.f, 0.f};
    if (acc != nullptr)
      for (int j = 0; j < d; ++j) acc[r * d + j] = 0.f;
  }
};

// What every pass over a chunk of components reads: the logits g (count per point), the chunk's components
// [k0, k0 + count), the centred points xc, their norms xn and the means.
struct gemm_chunk_rows {
  float* g;
  const gemm_component* comp;
  const float* xc;
  const float* xn;
  const float* means;
  int count, k0, d;
  float a, gamma;
};

struct gemm_chunk_functor {
  gemm_chunk_rows c;
  gemm_point_state* st;
  float* acc;
  DS_HD void operator()(std::int64_t r) const {
    gemm_chunk_row(c.g + r * c.count, c.count, c.k0, c.comp, c.xc + r * c.d, c.xn[2 * r], c.xn[2 * r + 1],
                            c.means, c.d, c.a, c.gamma, st[r], acc == nullptr ? nullptr : acc + r * c.d);
  }
};

struct gemm_finish_functor {
  const gemm_point_state* st;
  const float* acc;
  const float* xc;
  const float* x;
  const float* centre;
  float* out;
  std::int64_t first;
  int what, d;
  float a, s2, inv_scale;
  DS_HD void operator()(std::int64_t r) const {
    const std::int64_t i = first + r;
    gemm_finish_row(what, st[r], acc == nullptr ? nullptr : acc + r * d, xc + r * d, x + i * d, centre, d,
                             a, s2, inv_scale, what == 0 ? out + i : out + i * d);
  }
};

// The JVP's per-point start: x' . v (FP64 sum), zero sums.
struct gemm_jvp_start_functor {
  const float* xc;
  const float* v;
  gemm_jvp_state* js;
  std::int64_t first;
  int d;
  DS_HD void operator()(std::int64_t r) const {
    double q = 0;
    for (int j = 0; j < d; ++j) q += double(xc[r * d + j]) * v[(first + r) * d + j];
    js[r] = gemm_jvp_state{0.f, 0.f, float(q), 0.f, 0.f, -INFINITY, 0};
  }
};

// First pass over a chunk: softmax statistics and the JVP's first sums (h holds mu'_k . v).
struct gemm_jvp_first_functor {
  gemm_chunk_rows c;
  const float* h;
  gemm_point_state* st;
  gemm_jvp_state* js;
  DS_HD void operator()(std::int64_t r) const {
    gemm_chunk_row(c.g + r * c.count, c.count, c.k0, c.comp, c.xc + r * c.d, c.xn[2 * r], c.xn[2 * r + 1],
                            c.means, c.d, c.a, c.gamma, st[r], nullptr, {h + r * c.count, js + r});
  }
};

// Second pass over a chunk: h becomes B_k / c_k for the product sum_k (B_k / c_k) mu'_k, and be accumulates.
struct gemm_jvp_second_functor {
  gemm_chunk_rows c;
  float* h;
  const gemm_point_state* st;
  gemm_jvp_state* js;
  DS_HD void operator()(std::int64_t r) const {
    gemm_jvp_second_row(c.g + r * c.count, h + r * c.count, js[r], c.count, c.k0, c.comp, c.xc + r * c.d,
                                 c.xn[2 * r], c.xn[2 * r + 1], c.means, c.d, c.a, c.gamma, st[r].max,
                                 js[r].p_sum / st[r].sum);
  }
};

struct gemm_jvp_finish_functor {
  const gemm_point_state* st;
  const gemm_jvp_state* js;
  const float* acc;
  const float* xc;
  const float* v;
  const float* means;  // centred, K x d
  const gemm_component* comp;
  float* out;
  std::int64_t first;
  int d;
  double a;
  float s2, inv_scale;
  DS_HD void operator()(std::int64_t r) const {
    const std::int64_t i = first + r;
    const int top = js[r].top;
    gemm_finish_jvp_row(st[r], js[r], acc + r * d, xc + r * d, v + i * d, means + std::int64_t(top) * d, comp[top],
                        d, a, s2, inv_scale, out + i * d);
  }
};

}  // namespace diffsample::kernels
