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

/// exp(x) for the softmax weights, x <= 0: 0 below FLT_MIN's exponent (e^-87.3), so that far components never reach
/// the C library's slow underflow path (and the CUDA and CPU executors agree there exactly).
DS_HD_INLINE float softmax_exp(float x) { return x < -87.f ? 0.f : ds_exp(x); }
DS_HD_INLINE double softmax_exp(double x) { return ds_exp(x); }

/// Running (max, sum) of an online softmax. push() returns the factor that rescales earlier accumulators and the
/// weight of the new term, both relative to the current maximum.
template <class T>
struct online_softmax {
  T max = -INFINITY;
  T sum = 0;
  DS_HD_INLINE void push(T logit, T& rescale, T& weight) {
    if (logit > max) {
      rescale = softmax_exp(max - logit);  // exp(-inf) = 0 on the first push
      sum *= rescale;
      max = logit;
      weight = T(1);
    } else {
      rescale = T(1);
      weight = softmax_exp(logit - max);
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
      const T inv_c = T(1) / (a * a * v + s2);  // s^2 / c <= 1 and a v / c first: s^2 mu, a v x overflowed FP32
      const T mk = s2 * inv_c * T(m.mean(k, j)) + a * v * inv_c * T(x[j]);
      out[j] = out[j] * rescale + weight * mk;
    }
  }
  const T inv_sum = T(1) / sm.sum;
  for (int j = 0; j < d; ++j) out[j] *= inv_sum;
  return sm.log_sum();
}

/// Denoiser Jacobian-vector product J v, J = (a / s^2) Cov(x0 | x_t = x), from the law of total covariance:
/// Cov(x0 | x) = sum_k r_k diag(v_k s^2 / c_k) + sum_k r_k (m_k - m)(m_k - m)^T (m_k component k's posterior mean,
/// m = sum_k r_k m_k), and m_k - m_l = s^2 (n_k - n_l) with
///   n_kj = mu_kj / c_kj + a x_j (v_kj - v_0j) / (c_kj c_0j)
/// (the difference of (s^2 mu_k + a v_k x) / c_k over components, v_k / c_k - v_l / c_l = s^2 (v_k - v_l) / (c_k c_l),
/// measured from component 0), so
///   J v = sum_k r_k [ (a v_k / c_k) v + a s^2 n_k ((n_k - nbar) . v) ],  nbar = sum_l r_l n_l,
/// where n_k . v - nbar . v is formed as p_k - sum_l r_l p_l (p_k = n_k . v) and the accumulation leaves out nbar's
/// part (its weight sum_k r_k (p_k - pbar) is zero). Three passes over the components (softmax statistics, pbar, the
/// sum); no division by a or s and no d x d matrix. The FP64 reference (denoiser_jvp_fp64, the tests' closed form).
/// The cancellations left are p_k - pbar and the sum, each of terms of size |n| |v| against a result of size
/// |n_k - n_l| |v|: about |mu| / |mu_k - mu_l| ulps, whatever a. Formed before as (s^2 / a) delta_k (delta_k . v -
/// score . v), delta_k = (a mu_k - x) / c_k, whose difference of two terms of size |x| |v| / c lost (|x| / (a |mu_k -
/// mu_l|))^2 ulps at the noisy end (6e-5 relative in FP64 at a = 1e-6 on a unit grid, all of it at a = 1e-9), and
/// whose s^2 / a overflowed FP32 below a = 3e-39.
template <class T, class P, class X, class V, class G>
DS_HD_INLINE void mixture_denoiser_jvp(const mixture_view<P>& m, const X& x, const V& v, T a, T s, G& out) {
  const int d = m.dim;
  const T s2 = s * s, a2 = a * a;
  if (a == T(0)) {  // J = (a / s^2) Cov(x0 | x_t) = 0: x_t carries nothing of x0
    for (int j = 0; j < d; ++j) out[j] = T(0);
    return;
  }
  online_softmax<T> sm;
  T rescale, weight;
  for (int k = 0; k < m.components; ++k) sm.push(component_logit(m, k, x, a, s2), rescale, weight);
  const T inv_sum = T(1) / sm.sum;
  // n_kj (above): 1 / c_kj and a x_j (v_kj - v_0j) / (c_kj c_0j).
  auto n_kj = [&](int k, int j) {
    const T vk = T(m.variance(k, j)), v0 = T(m.variance(0, j));
    const T ck = a2 * vk + s2, c0 = a2 * v0 + s2;
    return T(m.mean(k, j)) / ck + a * T(x[j]) * (vk - v0) / (ck * c0);
  };
  auto p_k = [&](int k) {
    T acc = 0;
    for (int j = 0; j < d; ++j) acc += n_kj(k, j) * T(v[j]);
    return acc;
  };
  // Pass 2: pbar = sum_k r_k (n_k . v).
  T pbar = 0;
  for (int k = 0; k < m.components; ++k)
    pbar += ds_exp(component_logit(m, k, x, a, s2) - sm.max) * inv_sum * p_k(k);
  // Pass 3: accumulate.
  for (int j = 0; j < d; ++j) out[j] = 0;
  const T scale = a * s2;
  for (int k = 0; k < m.components; ++k) {
    const T r = ds_exp(component_logit(m, k, x, a, s2) - sm.max) * inv_sum;
    const T g = scale * (p_k(k) - pbar);
    for (int j = 0; j < d; ++j) {
      const T vk = T(m.variance(k, j));
      out[j] += r * (a * vk / (a2 * vk + s2) * T(v[j]) + g * n_kj(k, j));
    }
  }
}

// --- a mixture at a fixed channel: the per-chain math of the fused samplers ------------------------------------

/// Constants of component k at one channel (a, s), c_kj = a^2 v_kj + s^2, computed once per call (per step and
/// channel for the diffusion samplers) rather than per chain, step and component.
/// 16-byte aligned (the tables are): one vector load reads all four.
struct alignas(16) component_constants {
  float log_norm;    // log w_k - 1/2 sum_j log(2 pi c_kj)
  float inv_c;       // 1 / c_k (isotropic; diagonal components keep 1 / c_kj in the inv_c table)
  float mean_scale;  // s^2 / c_k (isotropic): the denoiser is sum_k r_k (mean_scale mu_k + x_scale x)
  float x_scale;     // a v_k / c_k (isotropic)
};

/// One channel of a mixture as the per-chain functions read it: parameters and the constants above.
struct channel_view {
  const float* means;                // K x d
  const float* variances;            // K x d for diagonal components, K for isotropic ones (channel_jvp's e_k; a
                                     // chain launch stages them only for a body that reads them)
  const component_constants* comp;   // K
  const float* inv_c;                // K x d for diagonal components, else unused
  const float* scaled_means;         // K x d: a mu, the same float product as computed inline; or nullptr
  float a, s2;
  int components;
  bool isotropic;
};

/// The constants of a mixture at a set of channels (one for Langevin; two per step for the diffusion samplers),
/// laid out channel-major: comp[c K + k], inv_c[(c K + k) d + j].
struct mixture_channels {
  mixture_view<float> mix;
  component_constants* comp;
  float* inv_c;         // nullptr for isotropic mixtures
  float* scaled_means;  // a mu per channel, or nullptr (the CPU executor's SIMD loops read it as a broadcast operand)
  DS_HD_INLINE channel_view at(std::int64_t c, float a, float s) const {
    const std::int64_t K = mix.components, Kd = K * mix.dim;
    return {mix.means,
            mix.variances,
            comp + c * K,
            mix.isotropic ? nullptr : inv_c + c * Kd,
            scaled_means == nullptr ? nullptr : scaled_means + c * Kd,
            a,
            s * s,
            mix.components,
            mix.isotropic};
  }
  /// Whether a table of `channels` channels carries the scaled means: always for one channel, otherwise while they
  /// stay within 2^24 floats.
  static bool with_scaled_means(const mixture_view<float>& m, std::int64_t channels) {
    return channels == 1 || channels * m.components * std::int64_t(m.dim) <= (std::int64_t(1) << 24);
  }
  /// Floats of table space for `channels` channels (component_constants counted as 4 floats).
  static std::int64_t table_floats(const mixture_view<float>& m, std::int64_t channels) {
    const std::int64_t d = m.dim;
    return channels * m.components * (4 + (m.isotropic ? 0 : d) + (with_scaled_means(m, channels) ? d : 0));
  }
  /// `floats` rounded up to a multiple of 4 (16 bytes).
  DS_HD_INLINE static std::int64_t padded(std::int64_t floats) { return (floats + 3) / 4 * 4; }
  /// Floats that a CUDA chain launch stages in shared memory (kernels/chain_launch.cuh): the means and, for diagonal
  /// components, the variances, each padded to 16 bytes; with isotropic_variances an isotropic mixture's K variances
  /// in the variances' place (padded); with_channel (a table of one channel) also its constants (4 K) and, for
  /// diagonal components, its 1 / c_kj (K d).
  static std::int64_t staged_floats(const mixture_view<float>& m, bool with_channel, bool isotropic_variances) {
    const std::int64_t K = m.components, Kd = padded(K * std::int64_t(m.dim));
    const std::int64_t variances = m.isotropic ? (isotropic_variances ? padded(K) : 0) : Kd;
    return Kd + variances + (with_channel ? 4 * K + (m.isotropic ? 0 : Kd) : 0);
  }
  /// This table with its staged parts in `smem` (staged_floats(mix, WithChannel, IsotropicVariances) floats, 16-byte
  /// aligned), each part copied there by copy(to, from, count): the layout of kernels/chain_launch.cuh's
  /// stage_channels, which copies with the threads of a block, made here so that a host test can stage a table with
  /// std::copy. Every pointer a reader may follow points into `smem` whatever the mixture's kind (an unused one too),
  /// so that no read on the device sees a pointer that could be global or shared. Without IsotropicVariances an
  /// isotropic mixture's K variances are not copied and the staged mix.variances does not hold them: only for a
  /// reader that never reads them (a chain body whose reads_isotropic_variances is false: no channel_jvp, no
  /// mixture_view function).
  template <bool WithChannel, bool IsotropicVariances, class Copy>
  DS_HD_INLINE mixture_channels staged(float* smem, Copy&& copy) const {
    const std::int64_t K = mix.components, Kd = K * mix.dim, padded_kd = padded(Kd);
    const bool diagonal = !mix.isotropic;
    mixture_channels s = *this;
    float* at = smem;
    copy(at, mix.means, Kd);
    s.mix.means = at;
    at += padded_kd;
    s.mix.variances = at;
    if (diagonal) {
      copy(at, mix.variances, Kd);
      at += padded_kd;
    } else if (IsotropicVariances) {
      copy(at, mix.variances, K);
      at += padded(K);
    }
    if (WithChannel) {
      copy(at, reinterpret_cast<const float*>(comp), 4 * K);
      s.comp = reinterpret_cast<component_constants*>(at);
      at += 4 * K;
      s.inv_c = at;
      if (diagonal) copy(at, inv_c, Kd);
    }
    return s;
  }
  /// The table laid out in `table` (table_floats(m, channels) floats).
  static mixture_channels in(const mixture_view<float>& m, std::int64_t channels, float* table) {
    const std::int64_t Kd = channels * m.components * std::int64_t(m.dim);
    float* after = table + 4 * channels * m.components;
    float* inv_c = m.isotropic ? nullptr : after;
    float* scaled = with_scaled_means(m, channels) ? after + (m.isotropic ? 0 : Kd) : nullptr;
    return {m, reinterpret_cast<component_constants*>(table), inv_c, scaled};
  }
};

/// Fills the constants of one (channel, component) pair, in FP64. Channels is a functor
/// `bool operator()(std::int64_t c, float& a, float& s) const` naming each channel's (a, s); false skips an unused
/// channel. Runs over channels x K indices on either executor, so the table never crosses the bus.
template <class Channels>
struct channel_table_functor {
  mixture_channels t;
  Channels channels;
  DS_HD void operator()(std::int64_t e) const {
    const int K = t.mix.components, d = t.mix.dim;
    const std::int64_t c = e / K;
    const int k = static_cast<int>(e - c * K);
    float a, s;
    if (!channels(c, a, s)) return;
    const double a2 = double(a) * a, s2 = double(s) * s;
    component_constants cc{};
    double log_c = 0;
    if (t.mix.isotropic) {
      const double v = t.mix.variances[k], cv = a2 * v + s2;
      cc.inv_c = float(1.0 / cv);
      cc.mean_scale = float(s2 / cv);
      cc.x_scale = float(double(a) * v / cv);
      log_c = d * log(cv);
    } else {
      float* ic = t.inv_c + (c * K + k) * d;
      for (int j = 0; j < d; ++j) {
        const double cv = a2 * double(t.mix.variance(k, j)) + s2;
        ic[j] = float(1.0 / cv);
        log_c += log(cv);
      }
    }
    cc.log_norm = float(double(t.mix.log_weights[k]) - 0.5 * (log_c + d * log_two_pi<double>()));
    t.comp[c * K + k] = cc;
    if (t.scaled_means != nullptr) {
      float* sm = t.scaled_means + (c * K + k) * d;
      for (int j = 0; j < d; ++j) sm[j] = a * t.mix.mean(k, j);  // the float product the loops form inline
    }
  }
};

#if defined(__CUDA_ARCH__)
#define DS_UNROLL _Pragma("unroll")
#else
#define DS_UNROLL
#endif

/// f(j) for j = 0 .. d - 1 in order. On the device the loop is unrolled Unroll times (1: kept rolled), or as the
/// compiler chooses for Unroll = 0; the host ignores it. The same operations in the same order either way: only the
/// registers and the loop's instructions differ.
template <int Unroll, class F>
DS_HD_INLINE void for_coordinates(int d, F&& f) {
#if defined(__CUDA_ARCH__)
  if constexpr (Unroll > 0) {
#pragma unroll Unroll
    for (int j = 0; j < d; ++j) f(j);
  } else {
    for (int j = 0; j < d; ++j) f(j);
  }
#else
  for (int j = 0; j < d; ++j) f(j);
#endif
}

/// How channel_jvp unrolls its loops over coordinates on the device (for_coordinates' Unroll: 0 the compiler's
/// choice, 1 rolled, n n times): the logits of its three passes, the parts p_k, q_k of passes 2 and 3 (and
/// (x - z) . v), and the accumulation of J v. Registers only: the results are the same bits whatever the choice.
template <int Logits, int Parts, int Accumulation>
struct jvp_loops {
  static constexpr int logits = Logits, parts = Parts, accumulation = Accumulation;
};

/// Whether the loops read a mu from the table: on the host (the SIMD loops take it as a broadcast memory operand
/// instead of a scalar multiply and a broadcast); the device forms a mu inline (one FMA from a register).
DS_HD_INLINE bool scaled_means_present(const channel_view& c) {
#if defined(__CUDA_ARCH__)
  (void)c;
  return false;
#else
  return c.scaled_means != nullptr;
#endif
}

/// Components are taken `channel_chunk` at a time: the chunk's logits are independent of each other (j outer, the
/// chunk's components inner: x_j is read once per chunk, and the chunk gives that many independent accumulation
/// chains), its weights are exp(logit - running max) with no dependency between them, and the running sums are
/// rescaled once per chunk (two-pass softmax inside a chunk, online across chunks).
/// 8 on the host (more independent chains for the SIMD pipelines), 4 on the device, where the register path keeps
/// D-float vectors live beside the chunk's accumulators (D = 32 spills with 8).
#if defined(__CUDA_ARCH__)
constexpr int channel_chunk = 4;
#else
constexpr int channel_chunk = 8;
#endif

/// The chunk for a state vector type: 2 for 32-float register vectors on the device (four of them are live in MALA,
/// 128 registers, and a chunk of 4 spills there), channel_chunk otherwise.
template <class X>
struct chunk_for {
  static constexpr int value = channel_chunk;
};
#if defined(__CUDA_ARCH__)
template <class T, int D>
struct chunk_for<reg_vec<T, D>> {
  static constexpr int value = D >= 32 ? 2 : channel_chunk;
};
#endif

/// Calls f(std::integral_constant<int, N>{}, k0) for the chunks of `components` in order: N = C for the full chunks
/// and, on the host, 1, 2 or 4 for the last one where that covers what is left (C otherwise). The components past the
/// end of a chunk weigh exactly 0 (channel_chunk_weights) and add exact zeros to every sum of the callers, so a
/// narrower last chunk gives the same bits and skips their work: the 25 components of the benchmarks' grid mixture
/// are 8 + 8 + 8 + 1 on the host rather than 32, and 1 to 8 components one chunk of 1, 2, 4 or 8 (3 components: 4)
/// rather than 8. The device keeps one width (each width is another copy of the chunk's code in every kernel).
template <int C, class F>
DS_HD_INLINE void for_each_chunk(int components, F&& f) {
#if defined(__CUDA_ARCH__)
  for (int k0 = 0; k0 < components; k0 += C) f(std::integral_constant<int, C>{}, k0);
#else
  int k0 = 0;
  for (; k0 + C <= components; k0 += C) f(std::integral_constant<int, C>{}, k0);
  if (k0 >= components) return;
  const int rest = components - k0;
  if constexpr (C > 1)
    if (rest == 1) return f(std::integral_constant<int, 1>{}, k0);
  if constexpr (C > 2)
    if (rest <= 2) return f(std::integral_constant<int, 2>{}, k0);
  if constexpr (C > 4)
    if (rest <= 4) return f(std::integral_constant<int, 4>{}, k0);
  f(std::integral_constant<int, C>{}, k0);
#endif
}

/// The part of the score / denoiser shared by both: for the chunk of components k0 .. k0 + chunk - 1 (those >= K
/// get weight 0), computes the weights w relative to the updated running maximum and returns the factor that
/// rescales earlier sums (exactly 1 when the maximum did not move). Logits use the centred form (x - a mu)^2 / c.
template <int C, class T, class X>
DS_HD_INLINE T channel_chunk_weights(const channel_view& c, int k0, const X& x, T& run_max, T& run_sum, T (&w)[C]) {
  constexpr int channel_chunk = C;
  const int d = x.size();
  const float* mu[channel_chunk];
  T q[channel_chunk];
  DS_UNROLL
  for (int kk = 0; kk < channel_chunk; ++kk) {
    const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
    mu[kk] = c.means + static_cast<std::int64_t>(k) * d;
    q[kk] = T(0);
  }
  if (c.isotropic && scaled_means_present(c)) {
    const float* am[channel_chunk];
    DS_UNROLL
    for (int kk = 0; kk < channel_chunk; ++kk) am[kk] = c.scaled_means + (mu[kk] - c.means);
    DS_UNROLL
    for (int j = 0; j < d; ++j) {
      const T xj = x[j];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) {
        const T diff = T(am[kk][j]) - xj;
        q[kk] = ds_fma(diff, diff, q[kk]);
      }
    }
  } else if (c.isotropic) {
    DS_UNROLL
    for (int j = 0; j < d; ++j) {
      const T xj = x[j];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) {
        const T diff = T(c.a * mu[kk][j]) - xj;
        q[kk] = ds_fma(diff, diff, q[kk]);
      }
    }
  } else {
    const float* ic[channel_chunk];
    DS_UNROLL
    for (int kk = 0; kk < channel_chunk; ++kk) ic[kk] = c.inv_c + (mu[kk] - c.means);
    DS_UNROLL
    for (int j = 0; j < d; ++j) {
      const T xj = x[j];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) {
        const T diff = T(c.a * mu[kk][j]) - xj;
        q[kk] = ds_fma(diff * diff, T(ic[kk][j]), q[kk]);
      }
    }
  }
  T chunk_max = T(-INFINITY);
  DS_UNROLL
  for (int kk = 0; kk < channel_chunk; ++kk) {
    const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
    const component_constants cc = c.comp[k];
    T qk = c.isotropic ? q[kk] * T(cc.inv_c) : q[kk];
    qk = ds_min(qk, T(max_mahalanobis<float>()));  // NaN (from non-finite x) maps to the finite cap as well
    // A component past the end gets -inf: weight exp(-inf) = 0.
    w[kk] = k0 + kk < c.components ? T(cc.log_norm) - T(0.5f) * qk : T(-INFINITY);
    chunk_max = ds_max(chunk_max, w[kk]);
  }
  const T new_max = ds_max(run_max, chunk_max);
  const T rescale = softmax_exp(run_max - new_max);  // exp(-inf) = 0 on the first chunk; exactly 1 if unmoved
  T sum = T(0);
  DS_UNROLL
  for (int kk = 0; kk < channel_chunk; ++kk) {
    w[kk] = softmax_exp(w[kk] - new_max);
    sum = sum + w[kk];
  }
  run_sum = ds_fma(run_sum, rescale, sum);
  run_max = new_max;
  return rescale;
}

/// score = sum_k r_k (a mu_k - x) / c_k at the channel; returns log p(x). score may not alias x.
template <class T, class X, class G>
DS_HD_INLINE T channel_score(const channel_view& c, const X& x, G& score) {
  const int d = x.size();
  T run_max = T(-INFINITY), run_sum = T(0);
  for (int j = 0; j < d; ++j) score[j] = T(0);
  for_each_chunk<chunk_for<X>::value>(c.components, [&](auto width, int k0) {
    constexpr int channel_chunk = decltype(width)::value;
    T w[channel_chunk];
    const T rescale = channel_chunk_weights<channel_chunk>(c, k0, x, run_max, run_sum, w);
    const bool moved = !ds_none(rescale != T(1));  // x 1 is exact: skipping it changes no lane
    const float* mu[channel_chunk];
    DS_UNROLL
    for (int kk = 0; kk < channel_chunk; ++kk) {
      const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
      mu[kk] = c.means + static_cast<std::int64_t>(k) * d;
      if (c.isotropic) w[kk] = w[kk] * T(c.comp[k].inv_c);  // weight / c_k
    }
    if (c.isotropic && scaled_means_present(c)) {
      const float* am[channel_chunk];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) am[kk] = c.scaled_means + (mu[kk] - c.means);
      DS_UNROLL
      for (int j = 0; j < d; ++j) {
        const T xj = x[j];
        T acc = moved ? score[j] * rescale : score[j];
        DS_UNROLL
        for (int kk = 0; kk < channel_chunk; ++kk) acc = ds_fma(w[kk], T(am[kk][j]) - xj, acc);
        score[j] = acc;
      }
    } else if (c.isotropic) {
      DS_UNROLL
      for (int j = 0; j < d; ++j) {
        const T xj = x[j];
        T acc = moved ? score[j] * rescale : score[j];
        DS_UNROLL
        for (int kk = 0; kk < channel_chunk; ++kk) acc = ds_fma(w[kk], T(c.a * mu[kk][j]) - xj, acc);
        score[j] = acc;
      }
    } else {
      const float* ic[channel_chunk];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) ic[kk] = c.inv_c + (mu[kk] - c.means);
      DS_UNROLL
      for (int j = 0; j < d; ++j) {
        const T xj = x[j];
        T acc = moved ? score[j] * rescale : score[j];
        DS_UNROLL
        for (int kk = 0; kk < channel_chunk; ++kk)
          acc = ds_fma(w[kk] * T(ic[kk][j]), T(c.a * mu[kk][j]) - xj, acc);
        score[j] = acc;
      }
    }
  });
  const T inv_sum = T(1) / run_sum;
  for (int j = 0; j < d; ++j) score[j] = score[j] * inv_sum;
  return run_max + ds_log(run_sum);
}

/// denoiser = E[x0 | x_t = x] = sum_k r_k (s^2 mu_k + a v_k x) / c_k at the channel; returns log p(x). out may not
/// alias x. Chunk: components per chunk (channel_chunk_weights), 0 for chunk_for<X>'s.
template <class T, int Chunk = 0, class X, class G>
DS_HD_INLINE T channel_denoiser(const channel_view& c, const X& x, G& out) {
  const int d = x.size();
  T run_max = T(-INFINITY), run_sum = T(0);
  T x_part = T(0);  // isotropic: sum_k r_k a v_k / c_k, the coefficient of x
  for (int j = 0; j < d; ++j) out[j] = T(0);
  for_each_chunk<(Chunk > 0 ? Chunk : chunk_for<X>::value)>(c.components, [&](auto width, int k0) {
    constexpr int channel_chunk = decltype(width)::value;
    T w[channel_chunk];
    const T rescale = channel_chunk_weights<channel_chunk>(c, k0, x, run_max, run_sum, w);
    const bool moved = !ds_none(rescale != T(1));
    const float* mu[channel_chunk];
    DS_UNROLL
    for (int kk = 0; kk < channel_chunk; ++kk) {
      const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
      mu[kk] = c.means + static_cast<std::int64_t>(k) * d;
    }
    if (c.isotropic) {
      T xs = moved ? x_part * rescale : x_part;
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) {
        const int k = k0 + kk < c.components ? k0 + kk : c.components - 1;
        const component_constants cc = c.comp[k];
        xs = ds_fma(w[kk], T(cc.x_scale), xs);
        w[kk] = w[kk] * T(cc.mean_scale);
      }
      x_part = xs;
      DS_UNROLL
      for (int j = 0; j < d; ++j) {
        T acc = moved ? out[j] * rescale : out[j];
        DS_UNROLL
        for (int kk = 0; kk < channel_chunk; ++kk) acc = ds_fma(w[kk], T(mu[kk][j]), acc);
        out[j] = acc;
      }
    } else {
      const float *ic[channel_chunk], *v[channel_chunk];
      DS_UNROLL
      for (int kk = 0; kk < channel_chunk; ++kk) {
        ic[kk] = c.inv_c + (mu[kk] - c.means);
        v[kk] = c.variances + (mu[kk] - c.means);
      }
      DS_UNROLL
      for (int j = 0; j < d; ++j) {
        const T xj = x[j];
        T acc = moved ? out[j] * rescale : out[j];
        DS_UNROLL
        for (int kk = 0; kk < channel_chunk; ++kk) {
          // s^2 / c and a v / c first (each at most 1 and 1 / a): s^2 mu and a v x overflowed FP32 at s = 1e18,
          // |mu| = 1e18 or v = 1e36 where the posterior mean is finite.
          const float icj = ic[kk][j];
          const T mk = ds_fma(T(c.a * v[kk][j] * icj), xj, T(c.s2 * icj * mu[kk][j]));
          acc = ds_fma(w[kk], mk, acc);
        }
        out[j] = acc;
      }
    }
  });
  const T inv_sum = T(1) / run_sum;
  if (c.isotropic) {
    const T xs = x_part * inv_sum;
    for (int j = 0; j < d; ++j) out[j] = ds_fma(out[j], inv_sum, xs * x[j]);
  } else {
    for (int j = 0; j < d; ++j) out[j] = out[j] * inv_sum;
  }
  return run_max + ds_log(run_sum);
}

/// Logit of component k at the channel from its constants: log_norm_k - 1/2 min(sum_j (x_j - a mu_kj)^2 / c_kj,
/// cap), the same operations as channel_chunk_weights' for one component (no division). Unroll: for_coordinates'.
template <class T, int Unroll = 0, class X>
DS_HD_INLINE T channel_logit(const channel_view& c, int k, const X& x) {
  const int d = x.size();
  const float* mu = c.means + static_cast<std::int64_t>(k) * d;
  const component_constants cc = c.comp[k];
  T q = T(0);
  if (c.isotropic) {
    for_coordinates<Unroll>(d, [&](int j) {
      const T diff = T(c.a * mu[j]) - T(x[j]);
      q = ds_fma(diff, diff, q);
    });
    q = q * T(cc.inv_c);
  } else {
    const float* ic = c.inv_c + static_cast<std::int64_t>(k) * d;
    for_coordinates<Unroll>(d, [&](int j) {
      const T diff = T(c.a * mu[j]) - T(x[j]);
      q = ds_fma(diff * diff, T(ic[j]), q);
    });
  }
  q = ds_min(q, T(max_mahalanobis<float>()));
  return T(cc.log_norm) - T(0.5f) * q;
}

/// Denoiser Jacobian-vector product J v at the channel from its constants, one point per call (the CUDA guided
/// samplers' J v and the scalar target's): mixture_denoiser_jvp's form,
///   J v = sum_k r_k [ (a v_k / c_k) v + a s^2 n_k g_k ],  g_k = (n_k - nbar) . v,
/// with n_k measured from the component of the largest logit (top; any shift common to all k leaves n_k - nbar as it
/// is): n_kj = (mu_kj - mu_top,j) / c_kj + (x_j - a mu_top,j) e_kj, e_kj = a (v_kj - v_top,j) / (c_kj c_top,j)
/// (= (1 / c_top,j - 1 / c_kj) / a, formed without that difference of rounded reciprocals), and g_k from two parts
/// each centred on its weighted mean:
///   g_k = (p_k - sum_l r_l p_l) + (q_k - sum_l r_l q_l),  p_k = ((mu_k - mu_top) / c_k) . v,
///   q_k = ((x - a mu_top) e_k) . v
/// (isotropic: (x - a mu_top) . v once, times e_k). No term of size |x| / a: the rounding left is of |mu_k - mu_top|
/// against |mu_k - mu_l|, whatever a, and nothing divides by a (s^2 / a overflowed FP32 below a = 3e-39). Formed
/// before as (s^2 / a) delta_k g_k with delta_k = (a mu_k - x) / c_k, the same quantity, whose x-parts used the
/// difference 1 / c_k - 1 / c_top of the table's rounded reciprocals. x's part is zero for components of equal
/// variance (q_k = 0 exactly), and the accumulation leaves out the part of n_k common to all components (it sums to
/// zero against g), as the CPU executor's packed product centres both factors (src/cpu/denoiser_jvp.hpp). 1 / c_k and
/// a v_k / c_k come from the channel's table: no division. out may not alias x or v.
/// Loops (jvp_loops): how the loops over coordinates unroll on the device, for the fused kernels whose registers the
/// JVP sets. Unrolled, the loads and strided addresses of several coordinates of x, v and a component's rows are live
/// at once inside the three passes (nvdisasm's live ranges put the peak of the DPS / Pi-GDM and DCPS kernels in the
/// logits and the parts of passes 2 and 3); rolled everywhere, the moment-projected SMC's kernel fell to 64 registers
/// with spills, and ptxas spills a few of the DPS / Pi-GDM kernel's long-lived values at 72. The choices per kernel
/// are ptxas's register counts measured in bench/static_record.md. The same operations either way.
template <class T, class Loops = jvp_loops<0, 0, 0>, class X, class V, class G>
DS_HD_INLINE void channel_jvp(const channel_view& c, const X& x, const V& v, G& out) {
  const int d = x.size();
  // Pass 1: softmax statistics, and the component of the largest logit (top).
  T run_max = T(-INFINITY), run_sum = T(0);
  int top = 0;
  for (int k = 0; k < c.components; ++k) {
    const T l = channel_logit<T, Loops::logits>(c, k, x);
    if (l > run_max) {
      run_sum = ds_fma(run_sum, softmax_exp(run_max - l), T(1));
      run_max = l;
      top = k;
    } else {
      run_sum = run_sum + softmax_exp(l - run_max);
    }
  }
  const T inv_sum = T(1) / run_sum;
  const std::int64_t top_off = static_cast<std::int64_t>(top) * d;
  const float* zmu = c.means + top_off;  // mu_top; z = a mu_top
  // (x - z) . v (isotropic components: q_k = ((x - z) . v) e_k).
  T xv = T(0);
  if (c.isotropic)
    for_coordinates<Loops::parts>(d, [&](int j) { xv = ds_fma(T(x[j]) - T(c.a * zmu[j]), T(v[j]), xv); });
  // e_k of an isotropic component: a (v_k - v_top) / (c_k c_top).
  auto e_iso = [&](int k) {
    return T(c.a * (c.variances[k] - c.variances[top])) * T(c.comp[k].inv_c) * T(c.comp[top].inv_c);
  };
  // p_k and q_k of component k.
  struct pq {
    T p, q;
  };
  auto parts = [&](int k) {
    const std::int64_t off = static_cast<std::int64_t>(k) * d;
    const float* mu = c.means + off;
    pq r{T(0), T(0)};
    if (c.isotropic) {
      for_coordinates<Loops::parts>(d, [&](int j) { r.p = ds_fma(T(mu[j] - zmu[j]), T(v[j]), r.p); });
      r.p = r.p * T(c.comp[k].inv_c);
      r.q = xv * e_iso(k);
      return r;
    }
    const float *ic = c.inv_c + off, *ict = c.inv_c + top_off, *var = c.variances + off, *vt = c.variances + top_off;
    for_coordinates<Loops::parts>(d, [&](int j) {
      const T icj = T(ic[j]), zj = T(c.a * zmu[j]);
      const T ej = T(c.a * (var[j] - vt[j])) * icj * T(ict[j]);
      r.p = ds_fma(T(mu[j] - zmu[j]) * icj, T(v[j]), r.p);
      r.q = ds_fma((T(x[j]) - zj) * ej, T(v[j]), r.q);
    });
    return r;
  };

  // Pass 2: the weighted means of p_k and q_k.
  T p_mean = T(0), q_mean = T(0);
  for (int k = 0; k < c.components; ++k) {
    const T r = softmax_exp(channel_logit<T, Loops::logits>(c, k, x) - run_max) * inv_sum;
    const pq g = parts(k);
    p_mean = ds_fma(r, g.p, p_mean);
    q_mean = ds_fma(r, g.q, q_mean);
  }
  // Pass 3: accumulate.
  const T scale = T(c.a * c.s2);
  for_coordinates<Loops::accumulation>(d, [&](int j) { out[j] = T(0); });
  for (int k = 0; k < c.components; ++k) {
    const T r = softmax_exp(channel_logit<T, Loops::logits>(c, k, x) - run_max) * inv_sum;
    const pq g = parts(k);
    // n_kj = (mu_kj - mu_top,j) / c_kj + (x_j - z_j) e_kj; the sum over k of r_k g_k times a part common to every
    // component is zero (sum_k r_k g_k = 0): left out, its rounding with it.
    const T rg = r * scale * ((g.p - p_mean) + (g.q - q_mean));
    const std::int64_t off = static_cast<std::int64_t>(k) * d;
    const float* mu = c.means + off;
    if (c.isotropic) {
      const component_constants cc = c.comp[k];
      const T rx = r * T(cc.x_scale), ick = T(cc.inv_c), ek = e_iso(k);
      for_coordinates<Loops::accumulation>(d, [&](int j) {
        const T zj = T(c.a * zmu[j]);
        const T nj = T(mu[j] - zmu[j]) * ick + (T(x[j]) - zj) * ek;
        out[j] = ds_fma(rx, T(v[j]), ds_fma(rg, nj, T(out[j])));
      });
    } else {
      const float *ic = c.inv_c + off, *var = c.variances + off, *ict = c.inv_c + top_off,
                  *vt = c.variances + top_off;
      for_coordinates<Loops::accumulation>(d, [&](int j) {
        const T icj = T(ic[j]), zj = T(c.a * zmu[j]);
        const T ej = T(c.a * (var[j] - vt[j])) * icj * T(ict[j]);
        const T nj = T(mu[j] - zmu[j]) * icj + (T(x[j]) - zj) * ej;
        out[j] = ds_fma(r * T(c.a * var[j]) * icj, T(v[j]), ds_fma(rg, nj, T(out[j])));
      });
    }
  }
}

/// Component of an exact sample: the first k with u <= cumulative weight k (the last one if rounding leaves u above).
/// A binary search over the non-decreasing cumulative weights: O(log K) per sample (an empirical prior has one
/// component per data point), the same k as a scan from the front. The comparison is made in U's precision:
/// the samplers pass FP64 cumulative weights and component_uniform()'s FP64 uniform.
template <class P, class U = float>
DS_HD_INLINE int pick_component(const P* cumulative_weights, int components, U u) {
  int lo = 0, hi = components - 1;  // the answer lies in [lo, hi]; hi = components - 1 is the fallback
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (u <= U(cumulative_weights[mid])) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/// The uniform that picks an exact sample's component, in (0, 1]: (hi 2^32 + lo + 1) 2^-64 rounded once to FP64.
/// An FP32 uniform (curand_uniform) lies on a grid of spacing 2^-24 near 1 and FP32 cumulative weights round
/// to it too, so a component of weight below about 6e-8 (2^-24) whose cumulative weight rounds onto its
/// predecessor's was never drawn; with 64 random bits against FP64 cumulative weights every component of weight
/// above about 1e-16 is drawn with its probability to within 2^-53 relative to 1. `hi` is the word the FP32 uniform
/// was made from, so a component changes only for the samples whose FP32 uniform lay within 2^-24 of a boundary.
DS_HD_INLINE double component_uniform(unsigned hi, unsigned lo) {
  return double(hi) * 2.3283064365386963e-10 + (double(lo) + 1.0) * 5.421010862427522e-20;
}

}  // namespace diffsample::kernels
