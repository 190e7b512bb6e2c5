// Binary data on {-1,1}^d (formulas in the README, section "Binary data"): a mixture of product Bernoulli priors
// seen through the binary-flip channel y = x o eps, P(eps_j = +-1) = sigmoid(+-2 alpha), and the discrete samplers
// that run on it. One source for both executors and for the FP64 reference (T = double, P = double).
//
// With theta_kj = atanh(2 p_kj - 1) / 1 = 0.5 log(p_kj / (1 - p_kj)) (so p_kj = sigmoid(2 theta_kj)), one factor of
// the smoothed density is p e^{alpha y} + (1 - p) e^{-alpha y} = cosh(theta + alpha y) / cosh(theta), hence
//   log q(y) = logsumexp_k [ log w_k + sum_j (logcosh(theta_kj + alpha y_j) - logcosh(theta_kj)) ] - d log(2 cosh alpha),
//   grad log q(y) = alpha sum_k r_k(y) tanh(theta_k + alpha y),   E[x | y] = sum_k r_k(y) tanh(theta_k + alpha y),
// exact as a pmf on {-1,1}^d and smooth on all of R^d. Written so, log q is a difference of two numbers of size
// d alpha (each logcosh(theta + alpha y) is about alpha |y|): FP32 lost ~1e-4 absolute at alpha = 1000, d = 1, and
// the logits (hence the responsibilities r_k) as much. The kernels therefore take alpha |y_j| - log 2 out of every
// coordinate's term before it is formed (logcosh_excess below: the part of size alpha never enters a rounding) and
// add back the part all components share, alpha sum_j (|y_j| - 1) (zero on {-1,1}^d), with the normalisation
// less d alpha (bernoulli_reduced_norm):
//   log q(y) = logsumexp_k [ log w_k + sum_j (logcosh_excess(theta_kj, alpha, y_j) - logcosh(theta_kj)) ]
//              + alpha sum_j (|y_j| - 1) - d (log 2 + log1p(e^{-2 alpha})),
// every logit term bounded by |theta| + |logcosh(theta)| + log 2 <= 2 |theta| + log 2 at any alpha and any real y.
// Several measurements y_1..y_m of one x enter only through their sum u = y_1 + ... + y_m: the same formulas at the
// point u (the "offset" of the samplers below).
#pragma once

#include <cmath>
#include <type_traits>

#include "kernels/chain_runner.cuh"
#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"
#include <diffsample/mixture.hpp>

namespace diffsample::kernels {

/// Non-owning view of a Bernoulli mixture, taken by value by kernels.
template <class P>
struct bernoulli_view {
  const P* log_weights;    // K, normalised
  const P* theta;          // K x d, 0.5 log(p / (1 - p)), clamped to +-max_theta
  const P* logcosh_theta;  // K x d
  int components;
  int dim;
  DS_HD_INLINE std::int64_t at(int k, int j) const { return static_cast<std::int64_t>(k) * dim + j; }
};

/// |theta| kept: p = 0 or 1 act as p = sigmoid(-+40), 4e-18 away, below FP64 resolution of p itself.
constexpr double max_theta = 20.0;

template <class T>
DS_HD_INLINE T ds_log1p(T x);
template <>
DS_HD_INLINE float ds_log1p(float x) {
  return log1pf(x);
}
template <>
DS_HD_INLINE double ds_log1p(double x) {
  return log1p(x);
}

/// a / b: the device's fast division for FP32 (2 ulp, no slow-path call whose spills would cost more than the
/// division), plain IEEE division on the host and in FP64.
DS_HD_INLINE float ds_quotient(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, b);
#else
  return a / b;
#endif
}
DS_HD_INLINE double ds_quotient(double a, double b) { return a / b; }

/// log cosh z and tanh z from one exponential: e = exp(-2|z|), logcosh = |z| + log1p(e) - log 2.
template <class T>
DS_HD_INLINE void logcosh_tanh(T z, T& logcosh, T& tanh_z) {
  const T a = z < T(0) ? -z : z;
  const T e = ds_exp(T(-2) * a);
  logcosh = a + ds_log1p(e) - T(0.69314718055994530942);
  const T t = ds_quotient(T(1) - e, T(1) + e);
  tanh_z = z < T(0) ? -t : t;
}
template <class T>
DS_HD_INLINE T logcosh(T z) {
  const T a = z < T(0) ? -z : z;
  return a + ds_log1p(ds_exp(T(-2) * a)) - T(0.69314718055994530942);
}

/// logcosh(theta + alpha y) - alpha |y| + log 2 = (|z| - a) + log1p(e^{-2 |z|}), z = theta + alpha y, a = alpha |y|,
/// with |z| - a formed without rounding theta into z: with v = theta sign(y), |z| = |v + a| is v + a when v + a >= 0,
/// so |z| - a = v exactly, and -v - a otherwise (|v| > a there), so |z| - a = -v - 2 a, of size at most |theta| and
/// within 2 ulp(a) <= 2 ulp(theta) of it. The rounding of |z| itself only reaches the log1p term, whose derivative is
/// at most 2 e^{-2 |z|}.
template <class T>
DS_HD_INLINE T logcosh_excess(T theta, T alpha, T y) {
  const T a = alpha * (y < T(0) ? -y : y);
  const T v = y < T(0) ? -theta : theta;
  const bool along = v + a >= T(0);
  const T r = along ? v : -v - T(2) * a;
  return r + ds_log1p(ds_exp(T(-2) * (along ? v + a : -v - a)));
}

/// alpha sum_j (|y_j| - 1): the part of log q that logcosh_excess takes out of every component's terms alike (zero
/// on {-1,1}^d; |y_j| - 1 is exact for |y_j| in [1/2, 2], and an integer at the samplers' sums of measurements).
template <class T, class Y>
DS_HD_INLINE T bernoulli_level_shift(const Y& y, int d, T alpha) {
  T s = T(0);
  for (int j = 0; j < d; ++j) s += (T(y[j]) < T(0) ? -T(y[j]) : T(y[j])) - T(1);
  return alpha * s;
}

/// log sigmoid(x) = -log(1 + e^{-x}), stable for either sign.
template <class T>
DS_HD_INLINE T log_sigmoid(T x) {
  return x < T(0) ? x - ds_log1p(ds_exp(x)) : -ds_log1p(ds_exp(-x));
}
template <class T>
DS_HD_INLINE T sigmoid(T x) {
  return x < T(0) ? ds_quotient(ds_exp(x), T(1) + ds_exp(x)) : ds_quotient(T(1), T(1) + ds_exp(-x));
}

/// The point u + y of a multiple-measurement stage (u: sum of the earlier measurements), read coordinate-wise.
template <class U, class Y>
struct sum_point {
  const U& u;
  const Y& y;
  DS_HD_INLINE auto operator[](int j) const -> decltype(u[j] + y[j]) { return u[j] + y[j]; }
};

/// d (log 2 + log1p(e^{-2 alpha})) = d log(2 cosh alpha) - d alpha: the normalisation of the smoothed pmf less the
/// d alpha that logcosh_excess and bernoulli_level_shift leave out, a constant of the call (between d log 2 and
/// d log 4, so subtracting it cancels nothing of size alpha). Launchers compute it once and pass it in (a kernel
/// that recomputes it after its component loop keeps alpha and its exponent live across the loop:
/// binary_evaluate_functor spilled them).
template <class T>
DS_HD_INLINE T bernoulli_reduced_norm(int d, T alpha) {
  return T(d) * (T(0.69314718055994530942) + ds_log1p(ds_exp(T(-2) * alpha)));
}

/// The logit term of coordinate j of component k at y_j: logcosh(theta + alpha y_j) - logcosh(theta) - alpha |y_j|
/// + log 2, bounded by 2 |theta| + log 2.
template <class T, class P>
DS_HD_INLINE T bernoulli_logit_term(const bernoulli_view<P>& m, int k, int j, T alpha, T yj) {
  return logcosh_excess(T(m.theta[m.at(k, j)]), alpha, yj) - T(m.logcosh_theta[m.at(k, j)]);
}

/// log q(y) with log_norm = bernoulli_reduced_norm(d, alpha): the exact log pmf on {-1,1}^d (any real y accepted).
template <class T, class P, class Y>
DS_HD_INLINE T bernoulli_log_density(const bernoulli_view<P>& m, const Y& y, T alpha, T log_norm) {
  online_softmax<T> sm;
  T rescale, weight;
  for (int k = 0; k < m.components; ++k) {
    T l = T(m.log_weights[k]);
    for (int j = 0; j < m.dim; ++j) l += bernoulli_logit_term(m, k, j, alpha, T(y[j]));
    sm.push(l, rescale, weight);
  }
  return sm.log_sum() + bernoulli_level_shift(y, m.dim, alpha) - log_norm;
}

/// out = sum_k r_k(y) tanh(theta_k + alpha y) = E[x | y] (the score is alpha times it); returns log q(y) (normalised
/// by log_norm = bernoulli_reduced_norm(d, alpha), as bernoulli_log_density). out may not alias y.
template <class T, class P, class Y, class G>
DS_HD_INLINE T bernoulli_posterior_mean(const bernoulli_view<P>& m, const Y& y, T alpha, T log_norm, G& out) {
  const int d = m.dim;
  online_softmax<T> sm;
  for (int j = 0; j < d; ++j) out[j] = 0;
  // Two passes per component: the logit first (its softmax weight decides how earlier sums rescale), then the
  // tanh terms; recomputing the exponential costs less than storing K x d of them.
  for (int k = 0; k < m.components; ++k) {
    T l = T(m.log_weights[k]);
    for (int j = 0; j < d; ++j) l += bernoulli_logit_term(m, k, j, alpha, T(y[j]));
    T rescale, weight;
    sm.push(l, rescale, weight);
    for (int j = 0; j < d; ++j) {
      const T z = T(m.theta[m.at(k, j)]) + alpha * T(y[j]);
      const T a = z < T(0) ? -z : z;
      const T e = ds_exp(T(-2) * a);
      const T t = ds_quotient(T(1) - e, T(1) + e);
      out[j] = out[j] * rescale + weight * (z < T(0) ? -t : t);
    }
  }
  const T inv_sum = ds_quotient(T(1), sm.sum);
  for (int j = 0; j < d; ++j) out[j] *= inv_sum;
  return sm.log_sum() + bernoulli_level_shift(y, d, alpha) - log_norm;
}

/// One entry of a lattice table: the logit term and the posterior-mean term of one (component, coordinate) at the
/// point alpha * level.
struct lattice_term {
  float logit;  // logcosh(theta + alpha level) - logcosh(theta) - alpha |level| + log 2 (bernoulli_logit_term)
  float tanh;   // tanh(theta + alpha level)
};

/// The chains only visit integer points (states +-1; sums of m measurements in [-m, m]), where every term of the
/// score is one of K d (2 L + 1) values: entry ((k d + j) (2 L + 1) + level + L), computed once per call in FP64
/// and stored in FP32, replaces two exponentials, a log1p and a division per term and step.
struct lattice_table {
  const lattice_term* values;  // nullptr: evaluate the formulas directly
  int max_level;               // L
};

/// Fills the lattice table for flip strength alpha: one entry per index (run over K d (2 L + 1) indices). The logit
/// term in FP64 from the FP32 theta (as the direct formulas read it), then rounded once: within half an FP32 ulp of
/// a number bounded by 2 |theta| + log 2 (a logcosh difference, of size alpha |level|, lost ~1e-4 at alpha = 1000 in
/// that rounding alone).
struct lattice_table_functor {
  bernoulli_view<float> mix;
  double alpha;
  int max_level;
  lattice_term* out;
  DS_HD void operator()(std::int64_t i) const {
    const int levels = 2 * max_level + 1;
    const std::int64_t kj = i / levels;
    const int level = int(i % levels) - max_level;
    const double theta = double(mix.theta[kj]);
    double unused, t;
    logcosh_tanh(theta + alpha * level, unused, t);
    out[i] = {float(logcosh_excess(theta, alpha, double(level)) - logcosh(theta)), float(t)};
  }
};

/// bernoulli_posterior_mean at an integer point y (|y_j| <= L) through the lattice table; log_norm =
/// bernoulli_reduced_norm(d, alpha).
template <class Y, class G>
DS_HD_INLINE float lattice_posterior_mean(const bernoulli_view<float>& m, const lattice_table& table, const Y& y,
                                          float alpha, float log_norm, G& out) {
  const int d = m.dim, levels = 2 * table.max_level + 1;
  online_softmax<float> sm;
  for (int j = 0; j < d; ++j) out[j] = 0;
  for (int k = 0; k < m.components; ++k) {
    const lattice_term* row = table.values + static_cast<std::int64_t>(k) * d * levels + table.max_level;
    float l = m.log_weights[k];
    for (int j = 0; j < d; ++j) l += row[j * levels + int(y[j])].logit;
    float rescale, weight;
    sm.push(l, rescale, weight);
    for (int j = 0; j < d; ++j) out[j] = out[j] * rescale + weight * row[j * levels + int(y[j])].tanh;
  }
  const float inv_sum = ds_quotient(1.f, sm.sum);
  for (int j = 0; j < d; ++j) out[j] *= inv_sum;
  return sm.log_sum() + bernoulli_level_shift(y, d, alpha) - log_norm;
}

/// Settings of a discrete chain (one-stage discrete Langevin, its Metropolis-adjusted form, or the two-stage
/// proximal sampler) on the target q(u + y) in y, u the sum of earlier measurements (absent: u = 0).
struct discrete_params {
  bernoulli_view<float> mix;
  float alpha;
  float eta;
  int method;  // 0 one-stage, 1 Metropolis-adjusted one-stage, 2 two-stage
  std::int64_t steps;
  std::uint64_t seed, first_chain, first_step;
  std::int64_t* accepted;  // n, or nullptr
  lattice_table table;     // values nullptr: direct formulas
  float log_norm;          // bernoulli_reduced_norm(d, alpha)
};

/// E[x | point] into out, returning log q(point): through the lattice table when the call built one.
template <class Y, class G>
DS_HD_INLINE float posterior_mean_at(const discrete_params& p, const Y& y, G& out) {
  if (p.table.values != nullptr) return lattice_posterior_mean(p.mix, p.table, y, p.alpha, p.log_norm, out);
  return bernoulli_posterior_mean(p.mix, y, p.alpha, p.log_norm, out);
}

/// A zero vector of d coordinates (the offset of a single measurement).
struct zero_vec {
  DS_HD_INLINE float operator[](int) const { return 0.f; }
};

/// Runs p.steps steps of chain `chain` on the state y (entries +-1); s, yp, sp are scratch of the same size; u is the
/// offset. Step k draws from the Philox stream (seed, chain, first_step + k + step_base). Returns accepted moves.
///
/// One-stage: y'_j flips with probability sigmoid(-(s_j(y) y_j + 2 / eta)), i.e. P(y'_j = +1) =
/// sigmoid(2 (s_j / 2 + y_j / eta)), coordinates independent. Metropolis: the same proposal accepted with
/// min(1, q(y') t(y | y') / (q(y) t(y' | y))), t the product of the per-coordinate flip probabilities.
/// Two-stage: z_j = y_j flipped with probability sigmoid(-2 / eta), then P(y_j = +1 | z) = sigmoid(2 (s_j(z) + z_j / eta)).
template <class V, class U>
DS_HD_INLINE std::int64_t discrete_chain(const discrete_params& p, std::uint64_t chain, std::uint64_t step_base,
                                         const U& u, V& y, V& s, V& yp, V& sp) {
  const int d = y.size();
  const float alpha = p.alpha, two_over_eta = ds_quotient(2.f, p.eta);
  std::int64_t accepted = 0;
  float logq = 0.f;
  if (p.method != 2) logq = posterior_mean_at(p, sum_point<U, V>{u, y}, s);  // s = E[x|.] here
  for (std::int64_t k = 0; k < p.steps; ++k) {
    philox rng(p.seed, chain, p.first_step + step_base + static_cast<std::uint64_t>(k));
    if (p.method == 0) {
      for (int j = 0; j < d; ++j) {
        const float a = alpha * s[j] * y[j] + two_over_eta;
        if (rng.uniform() < sigmoid(-a)) y[j] = -y[j];
      }
      logq = posterior_mean_at(p, sum_point<U, V>{u, y}, s);
      ++accepted;
    } else if (p.method == 1) {
      float forward = 0.f;
      for (int j = 0; j < d; ++j) {
        const float a = alpha * s[j] * y[j] + two_over_eta;
        const bool flip = rng.uniform() < sigmoid(-a);
        yp[j] = flip ? -y[j] : y[j];
        forward += log_sigmoid(flip ? -a : a);
      }
      const float logq_new = posterior_mean_at(p, sum_point<U, V>{u, yp}, sp);
      float backward = 0.f;
      for (int j = 0; j < d; ++j) {
        const float a = alpha * sp[j] * yp[j] + two_over_eta;
        backward += log_sigmoid(yp[j] != y[j] ? -a : a);
      }
      const float log_accept = (logq_new - logq) + backward - forward;
      if (ds_log(rng.uniform()) < log_accept) {  // false for NaN: a non-finite proposal is rejected
        swap_vec(y, yp);
        swap_vec(s, sp);
        logq = logq_new;
        ++accepted;
      }
    } else {
      const float flip_z = sigmoid(-two_over_eta);
      for (int j = 0; j < d; ++j)
        if (rng.uniform() < flip_z) y[j] = -y[j];  // y now holds z
      posterior_mean_at(p, sum_point<U, V>{u, y}, s);
      for (int j = 0; j < d; ++j) {
        const float plus = sigmoid(2.f * (alpha * s[j] + 0.5f * two_over_eta * y[j]));
        y[j] = rng.uniform() <= plus ? 1.f : -1.f;
      }
      ++accepted;
    }
  }
  return accepted;
}

/// Uniform start on {-1,1}^d from the reserved stream (seed, chain, philox_max_step - 1).
template <class V>
DS_HD_INLINE void uniform_start(std::uint64_t seed, std::uint64_t chain, V& y) {
  philox rng(seed, chain, philox_max_step - 1);
  for (int j = 0; j < y.size(); j += 32) {
    const unsigned int b = rng.bits();
    for (int i = 0; i < 32 && j + i < y.size(); ++i) y[j + i] = (b >> i) & 1u ? 1.f : -1.f;
  }
}

/// The discrete Langevin chain body: state from x (signs) or a uniform start, then p.steps steps.
struct discrete_langevin_body {
  discrete_params p;
  bool start_uniform;
  template <class V>
  DS_HD_INLINE void operator()(std::int64_t i, V& y, V& s, V& yp, V& sp) const {
    const std::uint64_t chain = p.first_chain + static_cast<std::uint64_t>(i);
    if (start_uniform) uniform_start(p.seed, chain, y);
    const std::int64_t acc = discrete_chain(p, chain, 0, zero_vec{}, y, s, yp, sp);
    if (p.accepted != nullptr) p.accepted[i] = acc;
  }
};

/// Discrete walk-jump with m measurements: a uniform start; for each measurement, p.steps steps on q(u + y) with u
/// the sum of the earlier ones (the next measurement starts from the last); then the jump E[x | y_1..m] (or its
/// sign, +1 where it is 0) at the sum u of all of them. Measurement r's step k uses the stream step r * steps + k.
struct discrete_walk_jump_body {
  discrete_params p;
  std::int64_t measurements;
  bool mean;
  float* noisy;  // n x d: the sum of the measurements, or nullptr
  template <class V>
  DS_HD_INLINE void operator()(std::int64_t i, V& y, V& s, V& yp, V& sp, V& u) const {
    const std::uint64_t chain = p.first_chain + static_cast<std::uint64_t>(i);
    const int d = y.size();
    uniform_start(p.seed, chain, y);
    for (int j = 0; j < d; ++j) u[j] = 0.f;
    std::int64_t acc = 0;
    for (std::int64_t r = 0; r < measurements; ++r) {
      acc += discrete_chain(p, chain, static_cast<std::uint64_t>(r * p.steps), u, y, s, yp, sp);
      for (int j = 0; j < d; ++j) u[j] += y[j];
    }
    if (p.accepted != nullptr) p.accepted[i] = acc;
    if (noisy != nullptr)
      for (int j = 0; j < d; ++j) noisy[i * d + j] = u[j];
    posterior_mean_at(p, u, s);
    for (int j = 0; j < d; ++j) y[j] = mean ? s[j] : (s[j] >= 0.f ? 1.f : -1.f);
  }
};

/// Runs a discrete chain body over workspace: 4 vectors of d floats per chain (5 for walk-jump, whose last one holds
/// the sum of the measurements), laid out as in kernels/chain_runner.cuh (coordinate-major on CUDA, chain-major on
/// the CPU); x (n x d) in and out. A loaded start with an entry other than +-1 gives a row of NaN and -1 accepted
/// moves for that chain.
template <class Body>
struct binary_chain_functor {
  Body body;
  float* x;
  float* workspace;
  std::int64_t n;
  int d;
  bool coordinate_major;
  bool loads_state;
  DS_HD void operator()(std::int64_t i) const {
    const chain_workspace w(workspace, i, n, d, coordinate_major);
    // Named vectors, no array of them: an array indexed through the swaps would live in local memory.
    strided_vec<float> y = w[0], s = w[1], yp = w[2], sp = w[3];
    float* row = x + i * d;
    if (loads_state) {
      // A start off {-1,1}^d: NaN over the row and -1 accepted moves, as no chain can give. The host refuses such
      // a start before a CPU launch; device-resident starts are not scanned (that would need a read-back).
      bool on_lattice = true;
      for (int j = 0; j < d; ++j) {
        const float v = row[j];
        on_lattice = on_lattice && (v == 1.f || v == -1.f);
        y[j] = v;
      }
      if (!on_lattice) {
        for (int j = 0; j < d; ++j) row[j] = NAN;
        if (body.p.accepted != nullptr) body.p.accepted[i] = -1;
        return;
      }
    }
    if constexpr (std::is_same<Body, discrete_walk_jump_body>::value) {
      strided_vec<float> u = w[4];
      body(i, y, s, yp, sp, u);
    } else {
      body(i, y, s, yp, sp);
    }
    for (int j = 0; j < d; ++j) row[j] = y[j];
  }
};

// --- the Bernoulli mixture's functors over points (src/binary.cu launches them on either executor) --------------

/// bernoulli_mixture::evaluate: the score, posterior mean or log-density of point i (row-major y and out).
struct binary_evaluate_functor {
  bernoulli_view<float> mix;
  const float* y;
  float* out;
  float alpha;
  float log_norm;  // bernoulli_reduced_norm(d, alpha)
  quantity what;
  DS_HD void operator()(std::int64_t i) const {
    const int d = mix.dim;
    const strided_vec<const float> yi{y + i * d, 1, d};
    if (what == quantity::log_density) {
      out[i] = bernoulli_log_density(mix, yi, alpha, log_norm);
    } else {
      strided_vec<float> oi{out + i * d, 1, d};
      bernoulli_posterior_mean(mix, yi, alpha, log_norm, oi);
      if (what == quantity::score)
        for (int j = 0; j < d; ++j) oi[j] *= alpha;
    }
  }
};

/// bernoulli_mixture::sample: draw first + i through the channel of strength alpha (flip = sigmoid(-2 alpha)).
struct binary_sample_functor {
  const double* cumulative;    // FP64
  const float* probabilities;  // K x d
  int components, dim;
  float* out;
  std::int32_t* labels;
  float flip;  // sigmoid(-2 alpha)
  std::uint64_t seed, first;
  DS_HD void operator()(std::int64_t i) const {
    const std::uint64_t id = first + static_cast<std::uint64_t>(i);
    philox rng(seed, id, 0);
    // The component's 64-bit uniform against FP64 cumulative weights, as gaussian_mixture::sample draws it: output 0
    // of the stream (the coordinates' uniforms follow it, as before) and one output far beyond them (2^33 in).
    const unsigned hi = rng.bits();
    const unsigned lo = philox(seed, id, 0, std::uint64_t(1) << 33).bits();
    const int k = pick_component(cumulative, components, component_uniform(hi, lo));
    if (labels != nullptr) labels[i] = k;
    for (int j = 0; j < dim; ++j) {
      const float p = probabilities[static_cast<std::int64_t>(k) * dim + j];
      const float plus = p * (1.f - flip) + (1.f - p) * flip;  // P(y_j = +1)
      out[i * dim + j] = rng.uniform() <= plus ? 1.f : -1.f;
    }
  }
};

}  // namespace diffsample::kernels
