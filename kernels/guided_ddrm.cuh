// Denoising diffusion restoration models (Kawar et al. 2022) for y = A x + sigma_y z on a mixture prior: the
// per-particle math shared by both executors.
//
// With A = U diag(S) V^T (rank r, V: d x r) the observation reads ybar = S^-1 U^T y = V^T x + (sigma_y / S) z in the
// spectral coordinates V^T x. DDRM runs in the variance-exploding scaling xt = x / a, whose noise level at a grid
// point is sigma = s / a, and updates each spectral component of xt by how its observation noise n_i = sigma_y / S_i
// compares with the next level sigma' (the published efficient_generalized_steps):
//   unobserved (S_i = 0, and the complement of V): xbar0 + sigma' sqrt(1 - eta^2) eps + eta sigma' xi (DDIM);
//   sigma' <  n_i: xbar0 + sigma' sqrt(1 - eta^2) (ybar_i - xbar0_i) / n_i + eta sigma' xi_i;
//   sigma' >= n_i: (1 - eta_b) xbar0_i + eta_b ybar_i + sqrt(sigma'^2 - n_i^2 eta_b^2) xi_i,
// with xbar0 = V^T m (m the denoiser) and eps = (x - a m) / s. The complement of V is never formed: the full-space
// DDIM update is made first and its projection on V replaced, xt' = u + V (v - V^T u), which needs only V; the
// observed components' noise is V^T xi, independent of the complement's part of xi. Then x' = a' xt'.
// The kernels form a' xt' directly (every term above times a', so a' sigma' = s'): the VE quantities sigma = s / a
// are never formed, since their squares leave FP32 where a is tiny (an OU schedule of horizon 50 starts at
// a = 2e-22, sigma = 5e21, sigma^2 = 3e43: NaN before). The noise of the second case is sqrt(s'^2 - (a' n_i eta_b)^2),
// below the schedule's bound on s (1e18) squared.
// Which case a step takes is decided on the host in FP64, not by comparing s' with a' n_i in FP32: the spectral grid
// (guided_grid::spectral) puts a point at each level s / a = n_i, where the two sides meet and FP32 rounding picked
// either. Per problem and component the host stores the first grid point from which the points are less noisy than
// the observation (ddrm_params::less_noisy_from, ties to the noisier side); grid points' s / a decrease, so one index
// decides every step's case and the initial state's.
#pragma once

#include "kernels/config.cuh"
#include "kernels/guided.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// One DDRM transition: channel (a, s) of x and channel (a_next, s_next) of the next point.
struct ddrm_step {
  float a, s, a_next, s_next;
  float inv_s;  // 1 / s, from the host (no division in the step)
};

/// The channels of the steps, for the mixture's per-channel constant table (channel_table_functor): channel k is
/// step k's (a, s).
struct ddrm_channels {
  const ddrm_step* steps;
  DS_HD_INLINE bool operator()(std::int64_t c, float& a, float& s) const {
    a = steps[c].a;
    s = steps[c].s;
    return true;
  }
};

struct ddrm_params {
  mixture_channels channels;  // the mixture's constants at every step's channel (no division in the step)
  const ddrm_step* steps;
  const float* V;           // d x r per operator (row-major), 1 shared or B
  std::int64_t V_stride;    // 0 when shared, else d r
  const float* ybar;        // B x r: S^-1 U^T y (0 where S_i = 0)
  const float* noise;       // B x r: n_i = sigma_y / S_i, or a negative value where S_i = 0 (unobserved)
  const float* inv_noise;   // B x r: 1 / n_i (0 where unobserved)
  /// B x r: the first grid point j (0 .. K + 1) from which every point is less noisy than the component's
  /// observation, s_j < a_j n_i decided in FP64 with ties (and differences within a few FP32 ulps) counted as not
  /// less noisy (ddrm_less_noisy_from); K + 1 where unobserved. Step k (to point k + 1) takes the sigma' < n_i case
  /// when k + 1 >= it; the initial state conditions on y when it is above 0.
  const std::int32_t* less_noisy_from;
  std::int64_t problems, particles;
  int d, r;
  float eta, eta_b;
  float keep;               // sqrt(1 - eta^2)
  float s_start;            // s_0
  float a_start;            // a_0
  std::uint64_t seed;
  /// A shard of a larger run, as kernels::guided_params::stream_skip and stream_first (0: every particle here).
  std::int64_t stream_skip = 0, stream_first = 0;
  /// Layout of the run's per-particle buffers, as kernels::guided_params::coordinate_stride: 0 row-major (the CPU
  /// executor), B N coordinate-major (the CUDA executor).
  std::int64_t coordinate_stride = 0;
};

/// ddrm_params::less_noisy_from of one observed component with noise level n_i = @p noise (FP64) over the grid's
/// K + 1 points (a_j, s_j): the first j from which s_j < a_j n_i (1 - 4 FLT_EPSILON), else K + 1. The margin settles
/// ties (a spectral grid's points at s / a = n_i, FP64 roots of it) on the noisier side, as the update does at
/// equality. Host code; the grid's s / a decrease, so the points from it on are all less noisy.
template <class Point>
inline std::int32_t ddrm_less_noisy_from(const Point* pts, std::int64_t points, double noise) {
  constexpr double margin = 1.0 - 4 * 1.1920928955078125e-7;
  std::int64_t j = points;
  while (j > 0 && pts[j - 1].s < pts[j - 1].a * noise * margin) --j;
  return static_cast<std::int32_t>(j);
}

/// The Philox stream id of particle i of problem b of the launch (see guided_stream()).
DS_HD_INLINE std::uint64_t ddrm_stream(const ddrm_params& p, std::int64_t i, std::int64_t b) {
  return static_cast<std::uint64_t>(i + b * p.stream_skip + p.stream_first);
}

/// sqrt(max(v, 0)). On the device as v * rsqrt(v) (MUFU, relative error ~2^-22), which avoids the IEEE square
/// root's slow-path call (and the register spills around it) inside the step; the device already differs from the
/// host in the last bits of its normals.
DS_HD_INLINE float ddrm_sqrt(float v) {
#ifdef __CUDA_ARCH__
  return v > 0.f ? v * rsqrtf(v) : 0.f;
#else
  return v > 0.f ? sqrtf(v) : 0.f;
#endif
}

/// out = V^T v (r values) for problem b: each value summed over the coordinates in a register (the same terms in
/// the same order as accumulating out over the coordinates, without d read-modify-writes of each value).
template <class Vec, class Out>
DS_HD_INLINE void ddrm_project(const ddrm_params& p, std::int64_t b, const Vec& v, Out& out) {
  const float* V = p.V + b * p.V_stride;
  for (int i = 0; i < p.r; ++i) {
    float acc = 0.f;
    for (int j = 0; j < p.d; ++j) acc += V[static_cast<std::int64_t>(j) * p.r + i] * v[j];
    out[i] = acc;
  }
}

/// u += V c (c: r values) for problem b.
template <class C, class Vec>
DS_HD_INLINE void ddrm_lift(const ddrm_params& p, std::int64_t b, const C& c, Vec& u) {
  const float* V = p.V + b * p.V_stride;
  for (int j = 0; j < p.d; ++j) {
    const float* row = V + static_cast<std::int64_t>(j) * p.r;
    float acc = 0.f;
    for (int i = 0; i < p.r; ++i) acc += row[i] * c[i];
    u[j] += acc;
  }
}

/// Scratch of one particle, in the run's layout (ddrm_params::coordinate_stride): m, accumulated once per
/// component, is the launch's scratch (shared memory on the CUDA executor when a warp's d floats fit); xi and the
/// three r-vectors, written once per step, are global rows.
struct ddrm_scratch {
  strided_vec<float> m;
  strided_vec<float> xi;
  strided_vec<float> proj_u;   // r: V^T u
  strided_vec<float> proj_xi;  // r: V^T xi
  strided_vec<float> proj_m;   // r: V^T m, then the new spectral values minus V^T u
  /// Floats of one particle's row: m (d), xi (d), then the three r-vectors.
  DS_HD_INLINE static std::int64_t floats(int d, int r) { return 2 * static_cast<std::int64_t>(d) + 3 * r; }
  /// The scratch over one contiguous row of floats(d, r) floats.
  DS_HD_INLINE static ddrm_scratch rows(float* w0, int d, int r) {
    return {{w0, 1, d}, {w0 + d, 1, d}, {w0 + 2 * d, 1, r}, {w0 + 2 * d + r, 1, r}, {w0 + 2 * d + 2 * r, 1, r}};
  }
};

/// The initial state at the first grid point (VE level sigma_T = s_0 / a_0): xt = sigma_T xi, then every observed
/// component with n_i < sigma_T is set to ybar_i + sqrt(sigma_T^2 - n_i^2) (V^T xi)_i (the published p(x_T | y));
/// x = a_0 xt, formed as x = s_0 xi with the observed components a_0 ybar_i + sqrt(s_0^2 - (a_0 n_i)^2) (V^T xi)_i
/// where a_0 n_i < s_0 (no sigma_T: see the top of this file). At a_0 = 0 (sigma_T infinite) that is x = s_0 xi:
/// x_T carries nothing of x0 or y. Stream step 0 of the Philox stream @p id: ddrm_init's arithmetic, for the
/// stepwise run.
template <class X>
DS_HD_INLINE void ddrm_init_stream(const ddrm_params& p, std::uint64_t id, std::int64_t b, X& x,
                                   const ddrm_scratch& w) {
  const float s0 = p.s_start, a0 = p.a_start;
  philox rng(p.seed, id, 0);
  rng.normals(p.d, [&](int j, float z) {
    w.xi[j] = z;
    x[j] = s0 * z;
  });
  ddrm_project(p, b, w.xi, w.proj_xi);
  const float* ybar = p.ybar + b * p.r;
  const float* noise = p.noise + b * p.r;
  const std::int32_t* from = p.less_noisy_from + b * p.r;
  for (int c = 0; c < p.r; ++c) {
    // a_0 n_i; 0 at a_0 = 0, where n_i may be inf in FP32 (sigma_y / S_i past FLT_MAX) and 0 x inf, NaN, made the
    // square root 0 and collapsed the component instead of keeping s_0 xi.
    const float an = a0 > 0.f ? a0 * noise[c] : 0.f;
    const float keep = s0 * w.proj_xi[c];  // the current spectral value
    float target = keep;
    if (noise[c] >= 0.f && from[c] > 0) target = a0 * ybar[c] + ddrm_sqrt(s0 * s0 - an * an) * w.proj_xi[c];
    w.proj_m[c] = target - keep;
  }
  ddrm_lift(p, b, w.proj_m, x);
}

/// The DDRM transition k of one particle in place from its denoiser w.m at step k's channel (stream step k + 1 of
/// the Philox stream @p id): ddrm_transition's arithmetic after the denoiser, for the stepwise run (the CPU
/// executor's guided_sample() and the ask/tell plan, through ddrm_stage_functor) and for the fused one
/// (ddrm_transition).
template <class X>
DS_HD_INLINE void ddrm_update(const ddrm_params& p, std::uint64_t id, std::int64_t b, std::int64_t k, X& x,
                              const ddrm_scratch& w) {
  const ddrm_step st = p.steps[k];
  const int d = p.d;
  const strided_vec<float> m = w.m;
  const float an = st.a_next, sn = st.s_next;  // a' and s' = a' sigma'
  const float keep = p.keep;
  const float spread = p.eta * sn;  // std of the fresh noise (times a')
  philox rng(p.seed, id, static_cast<std::uint64_t>(k) + 1);
  // a' u = a' m + s' sqrt(1 - eta^2) eps + eta s' xi (the VE-scaled DDIM update times a'), in x.
  const float inv_s = st.inv_s;
  rng.normals(d, [&](int j, float z) {
    w.xi[j] = z;
    const float eps = (x[j] - st.a * m[j]) * inv_s;
    x[j] = an * m[j] + sn * keep * eps + spread * z;
  });
  ddrm_project(p, b, x, w.proj_u);
  ddrm_project(p, b, w.xi, w.proj_xi);
  ddrm_project(p, b, m, w.proj_m);
  const float* ybar = p.ybar + b * p.r;
  const float* noise = p.noise + b * p.r;
  const float* inv_noise = p.inv_noise + b * p.r;
  const std::int32_t* from = p.less_noisy_from + b * p.r;
  for (int c = 0; c < p.r; ++c) {
    const float n = an * noise[c];  // a' n_i (negative where unobserved)
    float v = w.proj_u[c];          // unobserved: the DDIM update as it is
    if (n >= 0.f) {
      const float x0 = w.proj_m[c];
      if (k + 1 >= from[c]) {  // s' < a' n_i, decided on the host (less_noisy_from)
        v = an * x0 + sn * keep * (ybar[c] - x0) * inv_noise[c] + spread * w.proj_xi[c];
      } else {
        const float nb = n * p.eta_b;
        v = an * ((1.f - p.eta_b) * x0 + p.eta_b * ybar[c]) + ddrm_sqrt(sn * sn - nb * nb) * w.proj_xi[c];
      }
    }
    w.proj_m[c] = v - w.proj_u[c];
  }
  ddrm_lift(p, b, w.proj_m, x);
}

/// The initial state (ddrm_init_stream) of particle i of problem b, from the particle's stream (ddrm_stream).
template <class X>
DS_HD_INLINE void ddrm_init(const ddrm_params& p, std::int64_t i, std::int64_t b, X& x, const ddrm_scratch& w) {
  ddrm_init_stream(p, ddrm_stream(p, i, b), b, x, w);
}

/// One DDRM transition of particle i of problem b in place (stream step k + 1 of its stream, ddrm_stream): the
/// denoiser at step k's channel from the run's table into w.m, then ddrm_update.
template <class X>
DS_HD_INLINE void ddrm_transition(const ddrm_params& p, std::int64_t i, std::int64_t b, std::int64_t k, X& x,
                                  const ddrm_scratch& w) {
  const ddrm_step st = p.steps[k];
  const strided_vec<float> m = w.m;
  guided_denoiser(p.channels.at(k, st.a, st.s), x, m);
  ddrm_update(p, ddrm_stream(p, i, b), b, k, x, w);
}

/// A whole DDRM trajectory per particle (B N particles). The scratch (the denoiser, d floats) is shared memory on
/// the CUDA executor when a warp's fits (kernels/launch.cuh for_each_index_scratch_kernel), else the first d floats
/// of the particle's row of work.
struct guided_ddrm_functor {
  ddrm_params p;
  std::int64_t steps;
  float* x;     // B N x d (output), in the run's layout
  float* work;  // B N x ddrm_scratch::floats(d, r), in the run's layout
  DS_HD int scratch_floats() const { return p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const {
    return particle_slice(p.coordinate_stride, work, i, ddrm_scratch::floats(p.d, p.r), 0, p.d);
  }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const int d = p.d, r = p.r;
    const std::int64_t row = ddrm_scratch::floats(d, r), cs = p.coordinate_stride;
    const ddrm_scratch w{{s.p, s.stride, d},
                         particle_slice(cs, work, i, row, d, d),
                         particle_slice(cs, work, i, row, 2 * d, r),
                         particle_slice(cs, work, i, row, 2 * d + r, r),
                         particle_slice(cs, work, i, row, 2 * d + 2 * r, r)};
    strided_vec<float> xi = particle_slice(cs, x, i, d, 0, d);
    const std::int64_t b = i / p.particles;
    ddrm_init(p, i, b, xi, w);
    for (std::int64_t k = 0; k < steps; ++k) ddrm_transition(p, i, b, k, xi, w);
  }
};

/// The stepwise DDRM run over B N row-major particles (the CPU executor and the ask/tell plan), one launch per
/// stage: stage 0 draws the initial state (ddrm_init_stream), stage 1 turns the model's answer at step k's channel
/// into the denoiser m = ux x + um answer and applies ddrm_update. Particle i of problem b draws from the stream
/// id_base + ddrm_stream(p, i, b) (id_base: a plan's trajectory, in device memory; nullptr for 0).
struct ddrm_stage_functor {
  ddrm_params p;
  std::int64_t k;
  int stage;
  float ux, um;
  float* x;                      // B N x d
  float* work;                   // B N x ddrm_scratch::floats(d, r), row-major
  const float* answer;           // B N x d: the model's output at x and step k's channel
  const std::uint64_t* id_base;  // the trajectory's first particle id (device memory), or nullptr for 0
  std::int64_t* position;        // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const int d = p.d;
    const std::int64_t b = i / p.particles;
    const std::uint64_t id = (id_base != nullptr ? *id_base : 0) + ddrm_stream(p, i, b);
    const ddrm_scratch w = ddrm_scratch::rows(work + i * ddrm_scratch::floats(d, p.r), d, p.r);
    strided_vec<float> xi{x + i * d, 1, d};
    if (stage == 0) {
      ddrm_init_stream(p, id, b, xi, w);
      return;
    }
    strided_vec<float> m = w.m;
    answer_as_denoiser(d, ux, um, xi, answer + i * d, m);
    ddrm_update(p, id, b, k, xi, w);
  }
};

}  // namespace diffsample::kernels
