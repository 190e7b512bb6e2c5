// Gaussian-mixture math at a channel x_t = a x0 + s z (formulas in the README), one point per call, shared by
// both executors and by the FP64 reference (T = double, P = double).
//
// Every quantity is a softmax-weighted sum over components. The softmax is computed in one pass with a running
// maximum (online softmax); logits use the centred form (x - a mu)^2 / c, never an expanded x . mu, so their error
// does not grow with |x| |mu| / s^2.
#pragma once

#include <cmath>

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// Non-owning view of a mixture, taken by value by kernels. P is the parameter type (float on device).
template <class P>
struct mixture_view {
  const P* log_weights;  // K, normalised
  const P* means;        // K x d
  const P* variances;    // K (isotropic) or K x d
  int components;
  int dim;
  bool isotropic;

  DS_HD_INLINE P mean(int k, int j) const { return means[static_cast<std::int64_t>(k) * dim + j]; }
  DS_HD_INLINE P variance(int k, int j) const {
    return isotropic ? variances[k] : variances[static_cast<std::int64_t>(k) * dim + j];
  }
};

template <class T>
DS_HD_INLINE T log_two_pi() {
  return T(1.8378770664093454836);
}

/// Largest squared Mahalanobis distance kept: far points give huge but finite logits, never inf - inf = NaN.
template <class T>
DS_HD_INLINE T max_mahalanobis() {
  return T(1e37);
}

/// Logit l_k(x) = log w_k - 1/2 sum_j (x_j - a mu_kj)^2 / c_kj - 1/2 sum_j log(2 pi c_kj), c_kj = a^2 v_kj + s^2.
template <class T, class P, class X>
DS_HD_INLINE T component_logit(const mixture_view<P>& m, int k, const X& x, T a, T s2) {
  const int d = m.dim;
  T q = 0, log_c = 0;
  if (m.isotropic) {
    const T c = a * a * T(m.variances[k]) + s2;
    for (int j = 0; j < d; ++j) {
      const T diff = T(x[j]) - a * T(m.mean(k, j));
      q += diff * diff;
    }
    q /= c;
    log_c = T(d) * ds_log(c);
  } else {
    for (int j = 0; j < d; ++j) {
      const T c = a * a * T(m.variance(k, j)) + s2;
      const T diff = T(x[j]) - a * T(m.mean(k, j));
      q += diff * diff / c;
      log_c += ds_log(c);
    }
  }
  q = q < max_mahalanobis<T>() ? q : max_mahalanobis<T>();  // also maps NaN-free inf to a finite value
  return T(m.log_weights[k]) - T(0.5) * (q + log_c + T(d) * log_two_pi<T>());
}

/// Running (max, sum) of an online softmax. push() returns the factor that rescales earlier accumulators and the
/// weight of the new term, both relative to the current maximum.
template <class T>
struct online_softmax {
  T max = -INFINITY;
  T sum = 0;
  DS_HD_INLINE void push(T logit, T& rescale, T& weight) {
    if (logit > max) {
      rescale = ds_exp(max - logit);  // exp(-inf) = 0 on the first push
      sum *= rescale;
      max = logit;
      weight = T(1);
    } else {
      rescale = T(1);
      weight = ds_exp(logit - max);
    }
    sum += weight;
  }
  DS_HD_INLINE T log_sum() const { return max + ds_log(sum); }
};

/// log p_t(x).
template <class T, class P, class X>
DS_HD_INLINE T mixture_log_density(const mixture_view<P>& m, const X& x, T a, T s) {
  online_softmax<T> sm;
  T rescale, weight;
  for (int k = 0; k < m.components; ++k) sm.push(component_logit(m, k, x, a, s * s), rescale, weight);
  return sm.log_sum();
}

/// score = grad log p_t(x) = sum_k r_k (a mu_k - x) / c_k; returns log p_t(x). score may not alias x.
/// (Score and denoiser keep their own loops: a shared loop taking the per-term lambda measured ~35% slower on the
/// CPU executor, the captured register vector no longer staying in registers.)
template <class T, class P, class X, class G>
DS_HD_INLINE T mixture_score(const mixture_view<P>& m, const X& x, T a, T s, G& score) {
  const int d = m.dim;
  const T s2 = s * s;
  online_softmax<T> sm;
  for (int j = 0; j < d; ++j) score[j] = 0;
  for (int k = 0; k < m.components; ++k) {
    T rescale, weight;
    sm.push(component_logit(m, k, x, a, s2), rescale, weight);
    const T iso_inv_c = m.isotropic ? T(1) / (a * a * T(m.variances[k]) + s2) : T(0);
    for (int j = 0; j < d; ++j) {
      const T inv_c = m.isotropic ? iso_inv_c : T(1) / (a * a * T(m.variance(k, j)) + s2);
      score[j] = score[j] * rescale + weight * (a * T(m.mean(k, j)) - T(x[j])) * inv_c;
    }
  }
  const T inv_sum = T(1) / sm.sum;
  for (int j = 0; j < d; ++j) score[j] *= inv_sum;
  return sm.log_sum();
}

/// denoiser = E[x0 | x_t = x] = sum_k r_k (s^2 mu_k + a v_k x) / c_k (stable as a -> 0); returns log p_t(x).
template <class T, class P, class X, class G>
DS_HD_INLINE T mixture_denoiser(const mixture_view<P>& m, const X& x, T a, T s, G& out) {
  const int d = m.dim;
  const T s2 = s * s;
  online_softmax<T> sm;
  for (int j = 0; j < d; ++j) out[j] = 0;
  for (int k = 0; k < m.components; ++k) {
    T rescale, weight;
    sm.push(component_logit(m, k, x, a, s2), rescale, weight);
    for (int j = 0; j < d; ++j) {
      const T v = T(m.variance(k, j));
      const T mk = (s2 * T(m.mean(k, j)) + a * v * T(x[j])) / (a * a * v + s2);
      out[j] = out[j] * rescale + weight * mk;
    }
  }
  const T inv_sum = T(1) / sm.sum;
  for (int j = 0; j < d; ++j) out[j] *= inv_sum;
  return sm.log_sum();
}

/// Denoiser Jacobian-vector product J v, J = (a / s^2) Cov(x0 | x_t = x), computed as
///   J v = sum_k r_k [ (a v_k / c_k) * v + (s^2 / a) delta_k ((delta_k - score) . v) ],  delta_k = (a mu_k - x) / c_k,
/// which follows from m_k = x / a + (s^2 / a) delta_k. The centred form needs no division by s^2 and no d x d
/// matrix; three passes over the components (softmax statistics, score . v, accumulation).
template <class T, class P, class X, class V, class G>
DS_HD_INLINE void mixture_denoiser_jvp(const mixture_view<P>& m, const X& x, const V& v, T a, T s, G& out) {
  const int d = m.dim;
  const T s2 = s * s;
  online_softmax<T> sm;
  T rescale, weight;
  for (int k = 0; k < m.components; ++k) sm.push(component_logit(m, k, x, a, s2), rescale, weight);
  const T inv_sum = T(1) / sm.sum;
  // Pass 2: alpha = score . v = sum_k r_k (delta_k . v).
  T alpha = 0;
  for (int k = 0; k < m.components; ++k) {
    const T r = ds_exp(component_logit(m, k, x, a, s2) - sm.max) * inv_sum;
    T dv = 0;
    for (int j = 0; j < d; ++j) dv += (a * T(m.mean(k, j)) - T(x[j])) / (a * a * T(m.variance(k, j)) + s2) * T(v[j]);
    alpha += r * dv;
  }
  // Pass 3: accumulate.
  for (int j = 0; j < d; ++j) out[j] = 0;
  for (int k = 0; k < m.components; ++k) {
    const T r = ds_exp(component_logit(m, k, x, a, s2) - sm.max) * inv_sum;
    T dv = 0;
    for (int j = 0; j < d; ++j) dv += (a * T(m.mean(k, j)) - T(x[j])) / (a * a * T(m.variance(k, j)) + s2) * T(v[j]);
    const T centred = (s2 / a) * (dv - alpha);
    for (int j = 0; j < d; ++j) {
      const T inv_c = T(1) / (a * a * T(m.variance(k, j)) + s2);
      out[j] += r * (a * T(m.variance(k, j)) * inv_c * T(v[j]) + centred * (a * T(m.mean(k, j)) - T(x[j])) * inv_c);
    }
  }
}

/// Component of an exact sample: the first k with u <= cumulative weight k (the last one if rounding leaves u above).
template <class P>
DS_HD_INLINE int pick_component(const P* cumulative_weights, int components, float u) {
  for (int k = 0; k < components - 1; ++k)
    if (u <= float(cumulative_weights[k])) return k;
  return components - 1;
}

}  // namespace diffsample::kernels
