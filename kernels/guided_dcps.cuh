// Divide-and-conquer posterior sampling (seed 002; Janati, Moufad, Durmus, Moulines, Olsson) for y = A x + sigma_y z
// on a mixture prior: the per-particle math shared by both executors. Each particle runs the whole trajectory in one
// launch (DCPS never weights or resamples, so particles never interact).
//
// The time grid (noisiest point 0, cleanest K) is cut into L blocks [U, T] (U the noisier end). Block l targets the
// intermediate posterior at its clean end, g_T(x_T) p_T(x_T) with g_T(x) = N(a_T y; A x, sigma_y^2 I) (the
// published choice of the potentials' variance: sigma_y at every block). Its backward function at a point j of the
// block is approximated, with the DPS choice p0|j = delta at the denoiser (the published choice), by
//   beta_j(x) = N(a_T y; A mu_j(x), C_j),  mu_j(x) = cx_j x + cm_j m_j(x),
// (cx_j, cm_j, v_j) the DDPM bridge q(x_T | x_0, x_j) (kernels/backward.cuh from j to T; v_j = 0 at j = T) and
// C_j = sigma_y^2 I (the likelihood at the bridge mean, as published; the default) or v_j A A^T + sigma_y^2 I (the
// bridge in closed form; guided_options::dcps_bridge_variance), whose gradient is
// grad log beta_j(x) = cx_j u + cm_j J u, u = A^T P_j (a_T y - A mu_j(x)), P_j = C_j^-1 (tabled per point and problem
// on the host) and J the denoiser's Jacobian (one JVP). A block:
// 1. M tamed ULA steps at U on p_U(x) beta_U(x): x += gamma G / (1 + gamma |G|) + sqrt(2 gamma) xi, G the prior score
//    (a m - x) / s^2 plus grad log beta_U (seed 002's "Tamed ULA steps");
// 2. each step j -> j + 1 of the block from a mean-field Gaussian fit r = N(mu, diag(e^{2 l})) of the twisted kernel
//    beta_{j+1}(x') p(x' | x_j), started at the unconditional kernel N(mu_p, sig^2 I) and moved by G normalised
//    stochastic gradient steps on KL(r || twisted kernel) (one reparametrised draw q = mu + e^l eps per step, as
//    published):
//      grad_mu = -grad log beta(q) + (mu - mu_p) / sig^2,  grad_l = -grad log beta(q) e^l eps + e^{2 l} / sig^2 - 1,
//    each step of length lr_mu = rho sig sqrt(d) and lr_l = rho sqrt(d) along the normalised gradient (both rho with
//    absolute_step, the published form); then
//    x_{j+1} = mu + e^l z. A kernel with sig = 0 (a grid ending at s = 0) is a point mass: x_{j+1} = mu_p.
#pragma once

#include "kernels/config.cuh"
#include "kernels/guided.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// The approximate backward function at one point: the point's channel (a, s) for the denoiser, the bridge
/// mean coefficients to the block's clean end, the signal scale there, and which precision table row it reads.
struct dcps_potential {
  float a, s;       // channel of the point
  float cx, cm;     // bridge mean mu = cx x + cm m(x)
  float a_target;   // a_T: the potential compares a_T y with A mu
};

/// One transition j -> j + 1: the unconditional kernel and the potential at j + 1.
struct dcps_step {
  float a, s;        // channel of x_j
  float c0, c1, sig; // p(x_{j+1} | x_j) = N(c0 m + c1 x, sig^2 I)
  dcps_potential next;
};

/// One block: the grid index range of its steps and its Langevin potential at U.
struct dcps_block {
  std::int64_t first_step, last_step;  // steps first .. last - 1
  dcps_potential start;
};

struct dcps_params {
  guided_params g;             // mixture, operators, y, sizes, seed (its steps/precision fields are unused)
  const dcps_step* steps;      // K
  const dcps_block* blocks;    // L
  const float* step_precision;   // K x B x d_y x d_y: P of each step's potential, over its scale
  const float* block_precision;  // L x B x d_y x d_y: P of each block's Langevin potential, over its scale
  const float* step_inv_scale;   // K x B: 1 / the scale of each step table (dcps_table_scale); nullptr: all 1
  const float* block_inv_scale;  // L x B: the same for the block tables
  std::int64_t blocks_count, steps_count;
  std::int64_t langevin_steps, gradient_steps;
  float gamma;       // Langevin step
  float rho;         // learning rate: a multiple of the kernel's scale, or the step length with absolute_step
  int absolute_step; // nonzero: rho is the length of each normalised step (options.dcps_absolute_step)
  float initial_scale;
};

/// The channels of a DCPS run's constant table (guided_params::channels, filled once per call on the executor):
/// channel j < K is step j's (a, s), K + j its potential's (steps[j].next), 2 K + l block l's Langevin potential's.
struct dcps_channels {
  const dcps_step* steps;
  const dcps_block* blocks;
  std::int64_t K;
  DS_HD_INLINE bool operator()(std::int64_t c, float& a, float& s) const {
    const dcps_potential pot = c < 2 * K ? steps[c < K ? c : c - K].next : blocks[c - 2 * K].start;
    a = c < K ? steps[c].a : pot.a;
    s = c < K ? steps[c].s : pot.s;
    return true;
  }
  /// Channels of the table: 2 K + L.
  static std::int64_t count(std::int64_t K, std::int64_t L) { return 2 * K + L; }
};

/// Scratch of one particle: 8 vectors of d and 2 of d_y, in the run's layout (guided_params::coordinate_stride).
/// m and ju, accumulated once per component, are the fused launch's scratch (shared memory on the CUDA executor
/// when a warp's 2 d floats fit); the others, written a few times per step, are global rows. Held as three base
/// pointers and the distances between the vectors (vector k of d at rest + k step) rather than a pointer and a
/// stride per vector: the fused CUDA kernel keeps the scratch live across every loop of a trajectory, and ten
/// 64-bit pointers with their strides took registers the J v's loops needed (bench/static_record.md).
struct dcps_scratch {
  float* first;  // m; ju at first + ju_offset (both with stride first_stride)
  float* rest;   // u, grad, mu, l, eps, gl: vector k at rest + k step (stride `stride`)
  float* obs;    // r; t at obs + obs_step (stride `stride`)
  std::int64_t first_stride, ju_offset, stride, step, obs_step;
  int d, dy;
  DS_HD_INLINE strided_vec<float> m() const { return {first, first_stride, d}; }
  DS_HD_INLINE strided_vec<float> ju() const { return {first + ju_offset, first_stride, d}; }
  DS_HD_INLINE strided_vec<float> u() const { return {rest, stride, d}; }
  DS_HD_INLINE strided_vec<float> grad() const { return {rest + step, stride, d}; }
  DS_HD_INLINE strided_vec<float> mu() const { return {rest + 2 * step, stride, d}; }
  DS_HD_INLINE strided_vec<float> l() const { return {rest + 3 * step, stride, d}; }
  DS_HD_INLINE strided_vec<float> eps() const { return {rest + 4 * step, stride, d}; }
  DS_HD_INLINE strided_vec<float> gl() const { return {rest + 5 * step, stride, d}; }
  DS_HD_INLINE strided_vec<float> r() const { return {obs, stride, dy}; }
  DS_HD_INLINE strided_vec<float> t() const { return {obs + obs_step, stride, dy}; }
  /// Floats of one particle's row: m, ju, then the other vectors of d, then r and t.
  DS_HD_INLINE static std::int64_t floats(int d, int dy) {
    return 8 * static_cast<std::int64_t>(d) + 2 * static_cast<std::int64_t>(dy);
  }
  /// The vectors of particle i in a buffer of rows of floats(d, dy) in the layout of coordinate_stride, the first
  /// two (m, ju) from `first` instead (the launch's scratch).
  DS_HD_INLINE static dcps_scratch at(std::int64_t coordinate_stride, float* work, std::int64_t i, int d, int dy,
                                      strided_vec<float> first) {
    const std::int64_t row = floats(d, dy), stride = coordinate_stride == 0 ? 1 : coordinate_stride;
    return {first.p,
            particle_slice(coordinate_stride, work, i, row, 2 * d, d).p,
            particle_slice(coordinate_stride, work, i, row, 8 * d, dy).p,
            first.stride,
            d * first.stride,
            stride,
            d * stride,
            dy * stride,
            d,
            dy};
  }
  /// The scratch over one contiguous row of floats(d, dy) floats.
  DS_HD_INLINE static dcps_scratch rows(float* w0, int d, int dy) {
    return at(0, w0, 0, d, dy, {w0, 1, 2 * d});
  }
};

/// The precision tables are stored over a scale S per table (src/guided_dcps.cu, dcps_table_scale): 1 while the
/// table's largest entry is at most 2^64, else the power of two at or above that entry, so that the stored P / S has
/// entries of at most 1. The potentials' vectors u = A^T (P / S) r, their gradients and the steps' G are then
/// carried over S (dcps_potential_vector), and the steps take S back where a sum with an unscaled term or the
/// taming needs it (dcps_langevin_update, dcps_gradient_update). P = (v A A^T + sigma_y^2 I)^-1 reaches 1e36 at
/// sigma_y = 1e-18: unscaled, P r overflowed FP32 once |r| passed 3.4e38 / |P| (a residual of 340 at
/// sigma_y = 1e-18), and the run's samples became NaN. A power of two scales exactly: runs whose tables stay at or
/// below 2^64 (sigma_y above 2.3e-10 in the default potentials) keep their former arithmetic bit for bit.
/// 1 / the scale of block l's (step j's) table for problem b (1 without scale tables).
DS_HD_INLINE float dcps_block_inv_scale(const dcps_params& p, std::int64_t l, std::int64_t b) {
  return p.block_inv_scale != nullptr ? p.block_inv_scale[l * p.g.problems + b] : 1.f;
}
DS_HD_INLINE float dcps_step_inv_scale(const dcps_params& p, std::int64_t j, std::int64_t b) {
  return p.step_inv_scale != nullptr ? p.step_inv_scale[j * p.g.problems + b] : 1.f;
}

/// First half of grad log beta(q) for problem b, from the denoiser m(q) (in w.m()): u = A^T P (a_T y - A mu(q))
/// into w.u() (w.grad(), w.r(), w.t() scratch), over the table's scale (P is the table as stored: dcps_table_scale).
/// The fused functor and the stepwise run (CPU executor, ask/tell plan) share it.
template <class Q>
DS_HD_INLINE void dcps_potential_vector(const dcps_params& p, std::int64_t b, const dcps_potential& pot,
                                        const float* P, const Q& q, const dcps_scratch& w) {
  const int d = p.g.d, dy = p.g.d_y;
  const strided_vec<float> m = w.m(), u = w.u(), grad = w.grad(), r = w.r(), t = w.t();
  for (int j = 0; j < d; ++j) grad[j] = pot.cx * q[j] + pot.cm * m[j];  // mu, held in grad for the residual
  guided_residual(p.g, b, pot.a_target, grad, r);
  for (int o = 0; o < dy; ++o) {
    float acc = 0.f;
    for (int c = 0; c < dy; ++c) acc += P[o * dy + c] * r[c];
    t[o] = acc;
  }
  for (int j = 0; j < d; ++j) u[j] = 0.f;
  guided_add_rows(p.g, b, t, u);  // u = A^T t, coordinate by coordinate (the terms of d_y guided_add_row calls)
}

/// Second half: grad log beta = cx u + cm J u into w.grad(), J u in w.ju() (read only when pot.cm != 0: the
/// potential at its block's clean end has cm = 0 and needs no Jacobian); over the table's scale, as u (J is linear).
DS_HD_INLINE void dcps_potential_finish(const dcps_params& p, const dcps_potential& pot, const dcps_scratch& w) {
  const int d = p.g.d;
  const strided_vec<float> grad = w.grad(), u = w.u();
  if (pot.cm != 0.f) {
    const strided_vec<float> ju = w.ju();
    for (int j = 0; j < d; ++j) grad[j] = pot.cx * u[j] + pot.cm * ju[j];
  } else {
    for (int j = 0; j < d; ++j) grad[j] = pot.cx * u[j];
  }
}

/// grad log beta(q) for problem b into w.grad() (uses w.m(), w.u(), w.ju(), w.r(), w.t()); also leaves the denoiser
/// m(q) in w.m().
/// c: the mixture at the potential's channel (pot.a, pot.s), denoiser_at / jvp_at (kernels/guided.cuh).
template <class Q, class Ch>
DS_HD_INLINE void dcps_potential_grad(const dcps_params& p, std::int64_t b, const dcps_potential& pot, const Ch& c,
                                      const float* P, const Q& q, const dcps_scratch& w) {
  const strided_vec<float> m = w.m(), u = w.u(), ju = w.ju();
  denoiser_at(c, q, m);
  dcps_potential_vector(p, b, pot, P, q, w);
  if (pot.cm != 0.f) jvp_at(c, q, u, ju);
  dcps_potential_finish(p, pot, w);
}

/// dcps_potential_grad() from the mixture's own functions at (pot.a, pot.s) (no table).
template <class Q>
DS_HD_INLINE void dcps_potential_grad(const dcps_params& p, std::int64_t b, const dcps_potential& pot,
                                      const float* P, const Q& q, const dcps_scratch& w) {
  dcps_potential_grad(p, b, pot, mixture_at{p.g.mix, pot.a, pot.s}, P, q, w);
}

/// Stream steps of one particle: 0 the initial draw; then for transition j the G draws eps and the final draw at
/// 1 + j (G + 1) + g; the Langevin noise of block l, step t at 1 + K (G + 1) + l M + t.
DS_HD_INLINE std::uint64_t dcps_counter_step(const dcps_params& p, std::int64_t j, std::int64_t g) {
  return 1 + static_cast<std::uint64_t>(j) * static_cast<std::uint64_t>(p.gradient_steps + 1) +
         static_cast<std::uint64_t>(g);
}
DS_HD_INLINE std::uint64_t dcps_counter_langevin(const dcps_params& p, std::int64_t l, std::int64_t t) {
  return 1 + static_cast<std::uint64_t>(p.steps_count) * static_cast<std::uint64_t>(p.gradient_steps + 1) +
         static_cast<std::uint64_t>(l) * static_cast<std::uint64_t>(p.langevin_steps) + static_cast<std::uint64_t>(t);
}

/// The Langevin potential of block l for problem b: the block's start point and its precision table.
DS_HD_INLINE const float* dcps_block_precision(const dcps_params& p, std::int64_t l, std::int64_t b) {
  return p.block_precision + (l * p.g.problems + b) * p.g.d_y * p.g.d_y;
}
/// The potential of transition j's next point for problem b: its precision table.
DS_HD_INLINE const float* dcps_step_precision(const dcps_params& p, std::int64_t j, std::int64_t b) {
  return p.step_precision + (j * p.g.problems + b) * p.g.d_y * p.g.d_y;
}

/// |v| of the d entries of v (any lane type T: float here, a pack of lanes on the CPU executor), from the largest
/// magnitude top = max_j |v_j| the caller found: top sqrt(sum_j (v_j / top)^2), so that the sum of squares neither
/// overflows nor underflows FP32. The tamed Langevin step and the normalised gradient steps divide by this norm; the
/// potentials' gradients are of order |A|^2 |y - A x| / sigma_y^2, whose plain sum of squares overflowed to infinity
/// from sigma_y of about 1e-10 (entries past 1.8e19): the steps then had length 0 and the run went unguided.
template <class T, class V>
DS_HD_INLINE T dcps_scaled_norm(const V& v, int d, T top) {
  const T scale = ds_max(top, T(1.17549435e-38f));  // FLT_MIN: its reciprocal is finite
  const T inv = T(1.f) / scale;
  T sum(0.f);
  for (int j = 0; j < d; ++j) {
    const T e = v[j] * inv;
    sum = sum + e * e;
  }
  return scale * ds_sqrt(sum);
}

/// The update of a tamed ULA step of block l for problem b (stream step dcps_counter_langevin(l, t) of particle
/// `id`), from the denoiser m(x) in w.m() and grad log beta(x) in w.grad() (over the table's scale S).
template <class X>
DS_HD_INLINE void dcps_langevin_update(const dcps_params& p, std::uint64_t id, std::int64_t b, std::int64_t l,
                                       std::int64_t t, X& x, const dcps_scratch& w) {
  const int d = p.g.d;
  const dcps_potential pot = p.blocks[l].start;
  // G / S = prior score (a m - x) / s^2 / S + grad log beta / S; the step gamma G / (1 + gamma |G|) is
  // gamma (G / S) / (1 / S + gamma |G / S|).
  const strided_vec<float> m = w.m(), grad = w.grad();
  const float inv_scale = dcps_block_inv_scale(p, l, b);
  const float inv_s2 = 1.f / (pot.s * pot.s) * inv_scale;
  float top = 0.f;
  for (int j = 0; j < d; ++j) {
    const float gj = (pot.a * m[j] - x[j]) * inv_s2 + grad[j];
    grad[j] = gj;
    top = ds_max(top, ds_abs(gj));
  }
  const float step = p.gamma / (inv_scale + p.gamma * dcps_scaled_norm(grad, d, top));
  const float noise = ds_sqrt(2.f * p.gamma);
  philox rng(p.g.seed, id, dcps_counter_langevin(p, l, t));
  rng.normals(d, [&](int j, float z) { x[j] = x[j] + step * grad[j] + noise * z; });
}

/// One tamed ULA step of block l at its start point (stream dcps_counter_langevin(l, t)).
template <class X>
DS_HD_INLINE void dcps_langevin_step(const dcps_params& p, std::int64_t i, std::int64_t b, std::int64_t l,
                                     std::int64_t t, X& x, const dcps_scratch& w) {
  const dcps_potential pot = p.blocks[l].start;
  dcps_potential_grad(p, b, pot, p.g.channels.at(2 * p.steps_count + l, pot.a, pot.s), dcps_block_precision(p, l, b),
                      x, w);
  dcps_langevin_update(p, guided_stream(p.g, i, b), b, l, t, x, w);
}

/// Start of transition j from the denoiser m(x_j) in w.m(): the unconditional kernel's mean mu_p into x and w.mu(),
/// and the fit's log-scales log sig into w.l(). Returns false for a point-mass kernel (sig = 0): then x = mu_p is
/// x_{j+1}.
template <class X>
DS_HD_INLINE bool dcps_transition_start(const dcps_params& p, std::int64_t j, X& x, const dcps_scratch& w) {
  const int d = p.g.d;
  const dcps_step st = p.steps[j];
  const strided_vec<float> m = w.m(), mu = w.mu();
  for (int c = 0; c < d; ++c) mu[c] = st.c0 * m[c] + st.c1 * x[c];  // mu_p, kept in x below once x is free
  for (int c = 0; c < d; ++c) x[c] = mu[c];  // x now holds mu_p for the KL's prior term
  if (st.sig == 0.f) return false;
  const float log_sig = ds_log(st.sig);
  const strided_vec<float> l = w.l();
  for (int c = 0; c < d; ++c) l[c] = log_sig;
  return true;
}

/// Gradient step g of transition j (g < G): the reparametrised draw q = mu + e^l eps into w.gl(), eps into w.eps();
/// for g = G the transition's final draw x_{j+1} = mu + e^l z into x instead (stream step dcps_counter_step(j, g)).
template <class X>
DS_HD_INLINE void dcps_gradient_draw(const dcps_params& p, std::uint64_t id, std::int64_t j, std::int64_t g, X& x,
                                     const dcps_scratch& w) {
  const int d = p.g.d;
  const strided_vec<float> mu = w.mu(), l = w.l();
  philox rng(p.g.seed, id, dcps_counter_step(p, j, g));
  if (g < p.gradient_steps) {
    const strided_vec<float> eps = w.eps(), q = w.gl();
    rng.normals(d, [&](int c, float z) {
      eps[c] = z;
      q[c] = mu[c] + ds_exp(l[c]) * z;
    });
  } else {
    rng.normals(d, [&](int c, float z) { x[c] = mu[c] + ds_exp(l[c]) * z; });
  }
}

/// The normalised stochastic gradient step on (mu, l) of transition j for problem b from grad log beta(q) in
/// w.grad() (over the table's scale S; x holds mu_p; w.u() and w.gl() are scratch). Both gradients are formed over
/// S, and each step lr g / (1e-30 + |g|) as lr (g / S) / (1e-30 / S + |g / S|); where 1e-30 / S underflows to 0 a
/// zero gradient takes no step (as before: 0 / 1e-30).
template <class X>
DS_HD_INLINE void dcps_gradient_update(const dcps_params& p, std::int64_t b, std::int64_t j, const X& x,
                                       const dcps_scratch& w) {
  const int d = p.g.d;
  const dcps_step st = p.steps[j];
  const float inv_scale = dcps_step_inv_scale(p, j, b);
  const float inv_sig2 = 1.f / (st.sig * st.sig);
  const float inv_sig2_scaled = inv_sig2 * inv_scale;
  const float root_d = ds_sqrt(float(d));
  const float lr_mu = p.absolute_step ? p.rho : p.rho * st.sig * root_d;
  const float lr_l = p.absolute_step ? p.rho : p.rho * root_d;
  const strided_vec<float> grad = w.grad(), mu = w.mu(), l = w.l(), eps = w.eps(), u = w.u(), gl = w.gl();
  float top_mu = 0.f, top_l = 0.f;
  for (int c = 0; c < d; ++c) {
    const float sd = ds_exp(l[c]);
    const float gm = -grad[c] + (mu[c] - x[c]) * inv_sig2_scaled;
    const float gv = -grad[c] * sd * eps[c] + sd * sd * inv_sig2 * inv_scale - inv_scale;
    u[c] = gm;
    gl[c] = gv;
    top_mu = ds_max(top_mu, ds_abs(gm));
    top_l = ds_max(top_l, ds_abs(gv));
  }
  const float guard = 1e-30f * inv_scale;
  const float den_mu = guard + dcps_scaled_norm(u, d, top_mu), den_l = guard + dcps_scaled_norm(gl, d, top_l);
  const float s_mu = den_mu > 0.f ? lr_mu / den_mu : 0.f;
  const float s_l = den_l > 0.f ? lr_l / den_l : 0.f;
  for (int c = 0; c < d; ++c) {
    mu[c] -= s_mu * u[c];
    l[c] -= s_l * gl[c];
  }
}

/// Transition j -> j + 1 of one particle in place: the variational fit of the twisted kernel, then a draw from it.
template <class X>
DS_HD_INLINE void dcps_transition(const dcps_params& p, std::int64_t i, std::int64_t b, std::int64_t j, X& x,
                                  const dcps_scratch& w) {
  const dcps_step st = p.steps[j];
  const strided_vec<float> m = w.m();
  guided_denoiser(p.g.channels.at(j, st.a, st.s), x, m);
  if (!dcps_transition_start(p, j, x, w)) return;
  const std::uint64_t id = guided_stream(p.g, i, b);
  const float* P = dcps_step_precision(p, j, b);
  const strided_vec<float> q = w.gl();
  const channel_view next = p.g.channels.at(p.steps_count + j, st.next.a, st.next.s);
  for (std::int64_t g = 0; g < p.gradient_steps; ++g) {
    dcps_gradient_draw(p, id, j, g, x, w);
    dcps_potential_grad(p, b, st.next, next, P, q, w);
    dcps_gradient_update(p, b, j, x, w);
  }
  dcps_gradient_draw(p, id, j, p.gradient_steps, x, w);
}

/// A whole DCPS trajectory per particle (B N particles): x = s_0 z (stream step 0), then every block. The scratch
/// (m and ju, 2 d floats) is shared memory on the CUDA executor when a warp's fits (kernels/launch.cuh
/// for_each_index_scratch_kernel), else the first 2 d floats of the particle's row of work.
struct guided_dcps_functor {
  dcps_params p;
  float* x;     // B N x d (output), in the run's layout
  float* work;  // B N x dcps_scratch::floats(d, d_y), in the run's layout
  DS_HD int scratch_floats() const { return 2 * p.g.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const {
    return guided_slice(p.g, work, i, dcps_scratch::floats(p.g.d, p.g.d_y), 0, 2 * p.g.d);
  }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const int d = p.g.d;
    const dcps_scratch w = dcps_scratch::at(p.g.coordinate_stride, work, i, d, p.g.d_y, s);
    strided_vec<float> xi = guided_slice(p.g, x, i, d, 0, d);
    const std::int64_t b = i / p.g.particles;
    {
      philox rng(p.g.seed, guided_stream(p.g, i, b), 0);
      const float s0 = p.initial_scale;
      rng.normals(d, [&](int j, float z) { xi[j] = s0 * z; });
    }
    for (std::int64_t l = 0; l < p.blocks_count; ++l) {
      for (std::int64_t t = 0; t < p.langevin_steps; ++t) dcps_langevin_step(p, i, b, l, t, xi, w);
      for (std::int64_t j = p.blocks[l].first_step; j < p.blocks[l].last_step; ++j) dcps_transition(p, i, b, j, xi, w);
    }
  }
};

}  // namespace diffsample::kernels
