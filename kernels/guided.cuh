// Posterior sampling for y = A x + sigma_y z on a mixture prior (formulas in the README): the per-particle math of
// the Monte Carlo guided diffusion particle filter (weighting and exact Gaussian mutation) and of the DPS and
// Pi-GDM baselines, shared by both executors.
//
// Layout: B problems x N particles, particle i = b N + j. The public buffers are row-major (i, coordinate). Inside a
// run a per-particle buffer is row-major on the CPU executor (one particle's floats in one cache line run) and
// coordinate-major on the CUDA executor, where one thread holds one particle: with rows of d = 100 floats a warp's
// access to coordinate j touches 32 addresses 400 B apart, 32 sectors of 32 B for 128 useful bytes; coordinate-major
// (element (i, j) at i + j B N) it touches 128 consecutive bytes, 4 sectors. guided_slice() is the one place that
// knows the layout; the copies out (guided_copy_out_functor) transpose back at the call's boundary. Accumulators
// that a particle adds to K times per coordinate (the denoiser's and the JVP's) live in a per-thread scratch in
// shared memory on the CUDA executor (kernels/launch.cuh for_each_index_scratch_kernel), never in global memory;
// sums over the rows of A run coordinate by coordinate in a register (guided_add_rows). Everything that depends only on the schedule and on (A, sigma_y) is folded on the
// host in FP64: per transition the backward-kernel coefficients, per (transition, problem) the inverse of the
// d_y x d_y matrix S = sigma_{y,k}^2 I + sig^2 A A^T (the predictive covariance, which is also the innovation
// covariance of the mutation), per (grid point, problem) 1 / sigma_{y,k}^2. The constant parts of the Gaussian
// log-densities (log-determinants) shift every particle of a problem equally: they never touch the float weights
// and are added to the log-normaliser on the host, in FP64.
//
// Operators: dense rows of A (d_y x d_x floats per operator), or masks (observed coordinate indices and gains, d_y
// each). With masks A A^T is diagonal, so every S above is diagonal and its table holds only the diagonal of S^-1:
// a particle's observation work is then O(d_y) instead of O(d_y d_x + d_y^2).
#pragma once

#include "kernels/backward.cuh"
#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/particles.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// One transition of the backward chain, from grid point k (channel a, s) to k + 1 (channel a_next, s_next):
/// x' ~ N(c0 m(x) + c1 x, sig^2 I), m the denoiser at (a, s).
struct guided_step {
  float a, s;            // channel of x (the denoiser's)
  float a_next;          // signal scale of the next point: the potential there compares a_next y with A x'
  float c0, c1, sig;     // backward kernel
  float guidance;        // DPS / Pi-GDM: c0 s^2 / a, the factor turning a likelihood score into a mean shift
};

/// The transition's affine update x' = c1 x + c0 m (+ sig z): the kernel mean and the draw (kernels/backward.cuh).
DS_HD_INLINE affine_update transition_update(const guided_step& st) { return {st.c1, st.c0, st.sig}; }

struct guided_params {
  mixture_view<float> mix;
  const guided_step* steps;    // `steps` transitions
  const float* inv_var;        // (steps + 1) x B: 1 / sigma_{y,k}^2 at every grid point (SMC potentials)
  const float* noise_std;      // (steps + 1) x B: sigma_{y,k} (SMC mutation)
  const float* precision;      // steps x B x d_y x d_y: S^-1 per transition and problem (masks: the diagonal only)
  const float* A;              // d_y x d_x (shared) or B x d_y x d_x; masks: d_y gains (shared) or B x d_y
  const std::int32_t* mask;    // masks: d_y observed coordinates (shared) or B x d_y; nullptr for dense A
  std::int64_t A_stride;       // 0 when shared, else the values per problem (d_y d_x dense, d_y mask)
  const float* y;              // B x d_y
  std::int64_t problems, particles;
  int d, d_y;
  std::uint64_t seed;
  float initial_scale;
  /// A shard of a larger run (src/guided_shard.hpp): this launch holds particles [stream_first, stream_first +
  /// particles) of each problem's particles + stream_skip, so particle i = b particles + j draws from the Philox
  /// stream of particle b (particles + stream_skip) + stream_first + j. Both 0 (the default): stream i.
  std::int64_t stream_skip = 0, stream_first = 0;
  /// Layout of the run's per-particle buffers: 0, row-major (the CPU executor); else coordinate-major with this
  /// stride, B N (the CUDA executor). See guided_slice().
  std::int64_t coordinate_stride = 0;
  /// When not null, the Philox seed is read from here (device memory on the CUDA executor) instead of `seed`: an
  /// ask/tell plan advances it on the device per trajectory, so that a captured trajectory draws fresh noise.
  const std::uint64_t* seed_at = nullptr;
  /// The mixture's constants at every step's channel (a grid sampler: channel k is step k's (a, s)) or at the
  /// prior's channel (1, 0) (SKRock: one channel), filled once per call by channel_table_functor<guided_channels>
  /// on the run's executor, so that no particle computes a per-component constant or divides per component and
  /// coordinate. Empty in an ask/tell plan, whose prior is the caller's model.
  mixture_channels channels{};
  /// SMC with the multistep kernel (guided_options::multistep_kernel; nullptr: the kernel mean c0 m + c1 x): per
  /// transition k the coefficient w_k = h_k / (2 h_{k-1}) of the extrapolated denoiser m_k + w_k (m_k - m_{k-1})
  /// (h the steps in lambda = log(a / s); 0 at the first step and at a last step to s = 0), see multistep_row.
  const float* multistep = nullptr;
  /// With `multistep`: 2 x B N x d, the denoiser outputs of the particles at two consecutive transitions in the run's
  /// layout (transition k's in half k & 1, particle i's at its row i: pre-resampling order).
  float* multistep_m = nullptr;
  /// With `multistep`: B N ancestors (indices within the problem) of the resampling between transitions k - 1 and
  /// k (the identity where a problem was not resampled), through which a particle finds its ancestor's m_{k-1}.
  const std::int32_t* ancestors = nullptr;
  /// SMC with linear potentials on a grid that ends at s = 0: the last transition's kernel N(c0 m, v_f P_A) (P_A the
  /// projector on the rows of A) drawn times the likelihood by linear_final_draw(). Per problem the lower Cholesky
  /// factor D of Cov(delta) = n^2 I + n^4 / v_f (A A^T + eps I)^-1 (eps = 1e-6 of A A^T's largest eigenvalue; d_y x
  /// d_y, row-major; masks: its diagonal, d_y) and v_f (final_var, B values). nullptr: the deterministic last step
  /// (x = c0 m).
  const float* final_noise = nullptr;
  const float* final_var = nullptr;
};

/// The channels of a guided run's constant table (guided_params::channels): channel c is step c's (a, s), or
/// without steps the prior's (1, 0).
struct guided_channels {
  const guided_step* steps;  // nullptr: one channel, (1, 0)
  /// SMC with final moves: channel `last` (= steps) is the grid's last point (last_a, 0).
  std::int64_t last = -1;
  float last_a = 1.f;
  DS_HD_INLINE bool operator()(std::int64_t c, float& a, float& s) const {
    if (c == last) {
      a = last_a;
      s = 0.f;
      return true;
    }
    a = steps != nullptr ? steps[c].a : 1.f;
    s = steps != nullptr ? steps[c].s : 0.f;
    return true;
  }
};

/// The mixture at step k's channel (a, s) from the run's table.
DS_HD_INLINE channel_view guided_channel(const guided_params& p, std::int64_t k) {
  const guided_step st = p.steps[k];
  return p.channels.at(k, st.a, st.s);
}

/// Components per chunk of the guided samplers' denoiser from a channel's constants (channel_denoiser's Chunk): 2 on
/// the device, where one thread carries a whole particle step (its strided rows, the step's pointers and scalars,
/// the stream) beside the chunk's weights, logits and mean pointers: with chunk_for's 4 the weighting, DiffPIR and
/// DPS kernels took 96 registers (31% occupancy at 128 threads), with 2 they take 64 .. 80 and none spills
/// (bench/static_record.md). 0 on the host: chunk_for's, as gaussian_mixture::evaluate() there, which the
/// stepwise runs and the plans must reproduce bit for bit.
#if defined(__CUDA_ARCH__)
constexpr int guided_chunk = 2;
#else
constexpr int guided_chunk = 0;
#endif

/// The guided samplers' denoiser at a channel from its constants (channel_denoiser with guided_chunk).
template <class X, class G>
DS_HD_INLINE void guided_denoiser(const channel_view& c, const X& x, G& out) {
  channel_denoiser<float, guided_chunk>(c, x, out);
}

/// The mixture at one channel as the TMPD and DCPS halves evaluate it: from the channel's constants
/// (channel_view, the fused runs' table) or from the mixture's parameters (mixture_at: the generic functions, for a
/// caller without a table).
struct mixture_at {
  mixture_view<float> mix;
  float a, s;
};
template <class X, class G>
DS_HD_INLINE void denoiser_at(const channel_view& c, const X& x, G& out) {
  guided_denoiser(c, x, out);
}
template <class X, class G>
DS_HD_INLINE void denoiser_at(const mixture_at& c, const X& x, G& out) {
  mixture_denoiser(c.mix, x, c.a, c.s, out);
}
template <class X, class V, class G>
DS_HD_INLINE void jvp_at(const channel_view& c, const X& x, const V& v, G& out) {
  // The parts and the accumulation rolled: TMPD's fused kernel 96 registers, DCPS's 128 (ptxas, sm_90); with only
  // the accumulation rolled 128 and 165, with the logits rolled instead of the parts 164 for DCPS.
  channel_jvp<float, jvp_loops<0, 1, 1>>(c, x, v, out);
}
template <class X, class V, class G>
DS_HD_INLINE void jvp_at(const mixture_at& c, const X& x, const V& v, G& out) {
  mixture_denoiser_jvp(c.mix, x, v, c.a, c.s, out);
}

/// The Philox seed of the launch (guided_params::seed_at).
DS_HD_INLINE std::uint64_t guided_seed(const guided_params& p) { return p.seed_at != nullptr ? *p.seed_at : p.seed; }

/// Coordinates [offset, offset + width) of particle i in a per-particle buffer whose rows hold `row` floats:
/// base + i row + offset + c row-major (coordinate_stride == 0), base + i + (offset + c) coordinate_stride
/// coordinate-major.
DS_HD_INLINE strided_vec<float> particle_slice(std::int64_t coordinate_stride, const float* base, std::int64_t i,
                                               std::int64_t row, int offset, int width) {
  float* b = const_cast<float*>(base);
  if (coordinate_stride == 0) return strided_vec<float>{b + i * row + offset, 1, width};
  return strided_vec<float>{b + i + offset * coordinate_stride, coordinate_stride, width};
}

/// particle_slice() in the layout of p (guided_params::coordinate_stride).
DS_HD_INLINE strided_vec<float> guided_slice(const guided_params& p, const float* base, std::int64_t i,
                                             std::int64_t row, int offset, int width) {
  return particle_slice(p.coordinate_stride, base, i, row, offset, width);
}

/// The Philox stream id of particle i of problem b of the launch (see guided_params::stream_skip); no division.
DS_HD_INLINE std::uint64_t guided_stream(const guided_params& p, std::int64_t i, std::int64_t b) {
  return static_cast<std::uint64_t>(i + b * p.stream_skip + p.stream_first);
}

/// r = scale * y_b - A_b x - noise * z for one particle (d_y values); z is read only when noise != 0. The products
/// and their sum are formed in FP64 and r is rounded to float once (as final_move_residual): near the posterior r is
/// of order sigma_y while its terms are of order |A| |x|, and an FP32 sum was off by up to d 2^-24 sum_j |A_oj x_j|.
/// A product of two floats is exact in FP64, so a fused multiply-add rounds as the separate operations do and both
/// executors give the same floats.
template <class X, class R, class Z = const float*>
DS_HD_INLINE void guided_residual(const guided_params& p, std::int64_t b, float scale, const X& x, R& r,
                                  float noise = 0.f, Z z = nullptr) {
  const float* A = p.A + b * p.A_stride;
  const float* y = p.y + b * p.d_y;
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o)
      r[o] = static_cast<float>(double(scale) * double(y[o]) - (noise != 0.f ? double(noise) * double(z[o]) : 0.0) -
                                double(A[o]) * double(x[index[o]]));
    return;
  }
  for (int o = 0; o < p.d_y; ++o) {
    double acc = double(scale) * double(y[o]) - (noise != 0.f ? double(noise) * double(z[o]) : 0.0);
    for (int j = 0; j < p.d; ++j) acc -= double(A[static_cast<std::int64_t>(o) * p.d + j]) * double(x[j]);
    r[o] = static_cast<float>(acc);
  }
}

/// guided_residual with the products and their sum in FP32: for the terms that do not cancel, -A u of a direction u
/// (scale 0: the final moves' split forms) and the first weight's a_0 y - A x of x = s_0 z drawn from the prior's
/// scale, independent of y, where |r| is of the order of its terms and FP32 is off by d 2^-24 of it. (FP64 there took
/// guided_init_functor past its 64 registers on sm_90.)
template <class X, class R>
DS_HD_INLINE void guided_residual_float(const guided_params& p, std::int64_t b, float scale, const X& x, R& r) {
  const float* A = p.A + b * p.A_stride;
  const float* y = p.y + b * p.d_y;
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o) r[o] = scale * y[o] - A[o] * x[index[o]];
    return;
  }
  for (int o = 0; o < p.d_y; ++o) {
    float acc = scale * y[o];
    for (int j = 0; j < p.d; ++j) acc -= A[static_cast<std::int64_t>(o) * p.d + j] * x[j];
    r[o] = acc;
  }
}

/// The S^-1 table of transition k and problem b (d_y x d_y, or its diagonal for masks).
DS_HD_INLINE const float* guided_precision(const guided_params& p, std::int64_t k, std::int64_t b) {
  const std::int64_t size = p.mask != nullptr ? p.d_y : static_cast<std::int64_t>(p.d_y) * p.d_y;
  return p.precision + (k * p.problems + b) * size;
}

/// Row o of S^-1 t.
template <class T>
DS_HD_INLINE float guided_precision_row(const guided_params& p, const float* P, int o, const T& t) {
  if (p.mask != nullptr) return P[o] * t[o];
  float u = 0;
  for (int c = 0; c < p.d_y; ++c) u += P[o * p.d_y + c] * t[c];
  return u;
}

/// x += value * (row o of A_b), i.e. the o-th term of A^T u.
template <class X>
DS_HD_INLINE void guided_add_row(const guided_params& p, std::int64_t b, int o, float value, X& x) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    x[p.mask[b * p.A_stride + o]] += value * A[o];
    return;
  }
  const float* row = A + static_cast<std::int64_t>(o) * p.d;
  for (int j = 0; j < p.d; ++j) x[j] += value * row[j];
}

/// x += A_b^T u (u: d_y values). Dense A: coordinate by coordinate with the sum in a register, x_j + u_0 A_0j +
/// u_1 A_1j + ..., the same terms in the same order as d_y calls of guided_add_row (the same floats), but one read
/// and one write of x_j instead of d_y read-modify-writes. Masks: d_y scattered adds, as guided_add_row.
template <class U, class X>
DS_HD_INLINE void guided_add_rows(const guided_params& p, std::int64_t b, const U& u, X& x) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o) x[index[o]] += u[o] * A[o];
    return;
  }
  for (int j = 0; j < p.d; ++j) {
    float acc = x[j];
    for (int o = 0; o < p.d_y; ++o) acc += u[o] * A[static_cast<std::int64_t>(o) * p.d + j];
    x[j] = acc;
  }
}

/// Row o of A_b as a vector of d values, read in place rather than copied into a per-particle buffer: a dense row
/// from the operator table (the same addresses in every thread of a problem: one broadcast per warp access), a
/// mask's row as its gain at the observed coordinate and 0 elsewhere. The values equal those of a zeroed vector
/// after guided_add_row(p, b, o, 1, v) but for the sign of a zero entry, which no sum of products can tell.
struct operator_row {
  const float* row;  // dense: the row; nullptr for a mask
  int index;         // mask: the observed coordinate
  float gain;        // mask: its gain
  int d;
  DS_HD_INLINE float operator[](int j) const { return row != nullptr ? row[j] : (j == index ? gain : 0.f); }
  DS_HD_INLINE int size() const { return d; }
};

DS_HD_INLINE operator_row guided_operator_row(const guided_params& p, std::int64_t b, int o) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) return {nullptr, p.mask[b * p.A_stride + o], A[o], p.d};
  return {A + static_cast<std::int64_t>(o) * p.d, 0, 0.f, p.d};
}

/// m = ux x + um answer (d values): a model's answer at x as the denoiser (ux = 0, um = 1 for a denoiser output).
template <class X, class A, class M>
DS_HD_INLINE void answer_as_denoiser(int d, float ux, float um, const X& x, const A& answer, M& m) {
  for (int j = 0; j < d; ++j) m[j] = ds_fma(ux, x[j], um * answer[j]);
}

/// Gauss-Legendre nodes and weights of the SMC's start correction on [0, 1] (4 points: exact for polynomials of
/// degree 7 along the segment). Selected rather than read from a local array: the node's index is a run-time loop
/// counter, and an array indexed by it went to a 16-byte stack frame (a local store and load per call) in the
/// initial and stepwise start kernels.
constexpr int start_correction_nodes = 4;
DS_HD_INLINE float start_correction_node(int j) {
  return j == 0   ? 0.0694318442029737f
         : j == 1 ? 0.3300094782075719f
         : j == 2 ? 0.6699905217924281f
                  : 0.9305681557970263f;
}
DS_HD_INLINE float start_correction_weight(int j) {
  return j == 0 || j == 3 ? 0.1739274225687269f : 0.3260725774312731f;
}

/// Initial particles x = s_0 z (stream step 0) and their weight log g_0(x) (without its constant). With
/// `corrected` (guided_options::start_correction) the weight also carries
///   log p_0(x) - log N(x; 0, s_0^2 I) + const = int_0^1 x . (score(u x) + u x / s_0^2) du
///                                             = (a_0 / s_0^2) int_0^1 x . m(u x) du,
/// p_0 the prior diffused to the first grid point (channel a_0, s_0) and m its denoiser there, by Gauss-Legendre
/// quadrature (start_correction_nodes denoiser evaluations): the draws then stand for p_0, not for its Gaussian
/// approximation. The log-ratio itself goes to coordinate 0 of the particle's slot of `ratio` (the problem's
/// logsumexp of it normalises the log-normaliser: guided_start_lse_functor); `point` and `acc` are d-float slots.
struct guided_init_functor {
  guided_params p;
  float* x;    // B N x d
  float* lw;   // B N
  float* r;    // B N x d_y scratch
  bool corrected = false;
  float* ratio = nullptr;  // B N x d scratch: the log-ratio in coordinate 0, and the denoiser's accumulator
  float* point = nullptr;  // B N x d scratch: u x
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / p.particles;
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d), ri = guided_slice(p, r, i, p.d_y, 0, p.d_y);
    philox rng(guided_seed(p), guided_stream(p, i, b), 0);
    const float scale = p.initial_scale;
    rng.normals(p.d, [&](int j, float z) { xi[j] = scale * z; });
    guided_residual_float(p, b, p.steps[0].a, xi, ri);
    float q = 0;
    for (int o = 0; o < p.d_y; ++o) q += ri[o] * ri[o];
    lw[i] = -0.5f * q * p.inv_var[b];
    if (!corrected) return;
    const float a = p.steps[0].a, s = p.steps[0].s;
    const channel_view c0 = guided_channel(p, 0);
    strided_vec<float> acc = guided_slice(p, ratio, i, p.d, 0, p.d), ui = guided_slice(p, point, i, p.d, 0, p.d);
    float sum = 0;
    for (int n = 0; n < start_correction_nodes; ++n) {
      const float u = start_correction_node(n);
      for (int j = 0; j < p.d; ++j) ui[j] = u * xi[j];
      guided_denoiser(c0, ui, acc);
      float dot = 0;
      for (int j = 0; j < p.d; ++j) dot += xi[j] * acc[j];
      sum += start_correction_weight(n) * dot;
    }
    const float log_ratio = a / (s * s) * sum;
    lw[i] += log_ratio;
    acc[0] = log_ratio;
  }
};

/// guided_init_functor's start correction in stages around a denoiser evaluated elsewhere: by the caller's model
/// (the SMC's ask/tell plan asks for it at u_n x, n = 0 .. start_correction_nodes - 1) or by the mixture's
/// evaluate() (guided_sample() and the MPI shards on the CPU executor, so that the plan answered by the mixture
/// reproduces them bit for bit on every CPU target). Stage `node` = -1 writes the points of node 0; stage n >= 0
/// takes the answer at node n's points as the denoiser ux (u_n x) + um answer, adds w_n x . m to the particle's sum
/// (the same float operations in the same order as guided_init_functor), then writes node n + 1's points or, after
/// the last node, adds the log-ratio to lw and stores it in coordinate 0 of the particle's slot of `ratio`, as
/// guided_init_functor does. Runs after guided_init_functor without the correction (lw = log g_0).
struct guided_start_stage_functor {
  guided_params p;
  int node;              // -1: only the points of node 0
  float ux, um;          // the answer as the denoiser
  const float* x;        // B N x d
  const float* answer;   // B N x d, row-major: the output at node `node`'s points (may alias ratio)
  float* points;         // B N x d, row-major: u_n x
  float* ratio;          // B N x d: the denoiser m of the stage, then the log-ratio in coordinate 0
  float* sum;            // B N x d_y scratch (guided_init_functor's residual): the sum in coordinate 0
  float* lw;             // B N
  std::int64_t* position = nullptr;  // when not null, thread 0 stores next_position there
  std::int64_t next_position = 0;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d);
    float* ui = points + i * p.d;
    if (node >= 0) {
      strided_vec<float> mi = guided_slice(p, ratio, i, p.d, 0, p.d);
      float& si = guided_slice(p, sum, i, p.d_y, 0, 1)[0];
      answer_as_denoiser(p.d, ux, um, ui, answer + i * p.d, mi);
      float dot = 0;
      for (int j = 0; j < p.d; ++j) dot += xi[j] * mi[j];
      float s = node == 0 ? 0.f : si;
      s += start_correction_weight(node) * dot;
      si = s;
      if (node + 1 == start_correction_nodes) {
        const float a = p.steps[0].a, sd = p.steps[0].s;
        const float log_ratio = a / (sd * sd) * s;
        lw[i] += log_ratio;
        mi[0] = log_ratio;
        return;
      }
    }
    const float u = start_correction_node(node + 1);
    for (int j = 0; j < p.d; ++j) ui[j] = u * xi[j];
  }
};

/// After guided_init_functor with the start correction: the normalisation of problem b's starting weights is
/// logsumexp_j of the log-ratios, not log N (the ratio is known up to a constant, so the log-normaliser's first
/// increment is logsumexp(log g_0 + ratio) - logsumexp(ratio), the self-normalised estimate of E_{p_0}[g_0]).
/// The logsumexp is a running one, the particles in order (an order-dependent sum): with @p running_sum, the
/// running state (max, sum) of problem b comes in as (previous_lse[b], running_sum[b]) and goes out there unfinished,
/// so that a run whose particles are split over shards continues one state through the shards in order (the
/// distributed filter: guided_shard::in_order) and finishes it with guided_start_lse_finish_functor, the bits of one
/// process's.
struct guided_start_lse_functor {
  guided_params p;
  const float* ratio;     // coordinate 0 of each particle's slot (see guided_init_functor)
  double* previous_lse;   // B: the logsumexp, or (with running_sum) the running max
  double* running_sum = nullptr;  // B: the running sum (nullptr: start from nothing and finish)
  DS_HD void operator()(std::int64_t b) const {
    double m = running_sum != nullptr ? previous_lse[b] : -INFINITY;
    double sum = running_sum != nullptr ? running_sum[b] : 0.0;
    for (std::int64_t j = 0; j < p.particles; ++j) {
      const double v = guided_slice(p, ratio, b * p.particles + j, p.d, 0, 1)[0];
      if (!(v > -INFINITY) || v != v) continue;
      if (v > m) {
        sum = sum * ds_exp(m - v) + 1.0;
        m = v;
      } else {
        sum += ds_exp(v - m);
      }
    }
    if (running_sum != nullptr) {
      previous_lse[b] = m;
      running_sum[b] = sum;
    } else {
      previous_lse[b] = m + ds_log(sum);
    }
  }
};

/// The end of a running logsumexp of guided_start_lse_functor: previous_lse[b] = max + log(sum), as it finishes one;
/// running_sum[b] is left at 0.
struct guided_start_lse_finish_functor {
  double* previous_lse;  // B: the running max in, the logsumexp out
  double* running_sum;   // B
  DS_HD void operator()(std::int64_t b) const {
    previous_lse[b] = previous_lse[b] + ds_log(running_sum[b]);
    running_sum[b] = 0.0;
  }
};

/// The denoiser that enters the kernel mean of transition k for particle i (SMC): m_k itself, or with the multistep
/// kernel (guided_params::multistep; the SDE-DPM-Solver++(2M) form of Lu et al. 2022, second order in the step)
///   m_k + w_k (m_k - m_{k-1}),  w_k = 1 / (2 r_k),  r_k = h_{k-1} / h_k,  h_k = lambda_{k+1} - lambda_k,
/// lambda = log(a / s), m_{k-1} the denoiser output of the particle's ancestor at transition k - 1 (it travels with
/// the ancestor through the resampling). The kernel's variance and the potentials' own use of m stay as they are.
/// operator()(j, m_j) keeps m_j (coordinate j of m_k) for transition k + 1 and returns coordinate j of the kernel's
/// denoiser; read m_j before writing a kernel mean that aliases m.
struct multistep_row {
  float w = 0.f;
  strided_vec<float> previous{nullptr, 0, 0};  // the ancestor's m_{k-1} (read when w != 0)
  strided_vec<float> keep{nullptr, 0, 0};      // particle i's m_k (nullptr: no multistep kernel)
  DS_HD_INLINE float operator()(int j, float m) const {
    if (keep.p == nullptr) return m;
    keep[j] = m;
    return w != 0.f ? m + w * (m - previous[j]) : m;
  }
};

/// The multistep_row of transition k for particle i of problem b (b = i / particles, which the callers have).
DS_HD_INLINE multistep_row guided_multistep_row(const guided_params& p, std::int64_t k, std::int64_t i,
                                                std::int64_t b) {
  multistep_row row;
  if (p.multistep == nullptr) return row;
  const std::int64_t half = p.problems * p.particles * p.d;
  row.keep = guided_slice(p, p.multistep_m + (k & 1) * half, i, p.d, 0, p.d);
  row.w = p.multistep[k];
  if (row.w != 0.f) {
    row.previous = guided_slice(p, p.multistep_m + ((k + 1) & 1) * half,
                                b * p.particles + static_cast<std::int64_t>(p.ancestors[i]), p.d, 0, p.d);
  }
  return row;
}

/// The weight of transition k of a particle x of problem b, in two halves around its denoiser m: guided_weight_now
/// gives the current potential's quadratic form q_now (r: d_y scratch), guided_weight_next the kernel mean
/// mu = c0 m + c1 x (m and mu may alias) and the increment log N(a_next y; A mu, S) - log g_k(x) (constants
/// omitted), the fully adapted weight (predictive of the next potential over the current one). Shared by the fused
/// weighting and the SMC's ask/tell plan, whose denoiser is the caller's model.
template <class X, class R>
DS_HD_INLINE float guided_weight_now(const guided_params& p, std::int64_t k, std::int64_t b, const X& x, R& r) {
  guided_residual(p, b, p.steps[k].a, x, r);
  float q_now = 0;
  for (int o = 0; o < p.d_y; ++o) q_now += r[o] * r[o];
  return q_now * p.inv_var[k * p.problems + b];
}

template <class X, class M, class U, class R>
DS_HD_INLINE float guided_weight_next(const guided_params& p, std::int64_t k, std::int64_t b, const X& x, const M& m,
                                      U& mu, R& r, float q_now, const multistep_row& ms) {
  const guided_step st = p.steps[k];
  for (int j = 0; j < p.d; ++j) mu[j] = transition_update(st)(x[j], ms(j, m[j]));
  guided_residual(p, b, st.a_next, mu, r);
  const float* P = guided_precision(p, k, b);
  float q_next = 0;
  for (int o = 0; o < p.d_y; ++o) q_next += r[o] * guided_precision_row(p, P, o, r);
  return -0.5f * q_next + 0.5f * q_now;
}

/// Weighting of transition k: mu = c0 m(x) + c1 x and lw += the increment of guided_weight_next, m the mixture's
/// denoiser.
struct guided_weight_functor {
  guided_params p;
  std::int64_t k;
  const float* x;  // B N x d
  float* mu;       // B N x d
  float* lw;       // B N
  float* r;        // B N x 2 d_y scratch, the first d_y of particle i's 2 d_y (the mutation's scratch), so that a
                   // pass may weight one particle while another thread mutates another
  /// The denoiser's accumulator: d floats (shared memory on the CUDA executor, else particle i's row of mu).
  DS_HD int scratch_floats() const { return p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const { return guided_slice(p, mu, i, p.d, 0, p.d); }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> acc) const {
    const std::int64_t b = i / p.particles;
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d), mi = guided_slice(p, mu, i, p.d, 0, p.d),
                       ri = guided_slice(p, r, i, 2 * p.d_y, 0, p.d_y);
    // Current potential g_k(x).
    const float q_now = guided_weight_now(p, k, b, xi, ri);
    guided_denoiser(guided_channel(p, k), xi, acc);
    lw[i] += guided_weight_next(p, k, b, xi, acc, mi, ri, q_now, guided_multistep_row(p, k, i, b));
  }
};

/// The same weighting with the denoiser from a caller's model (the SMC's ask/tell plan, src/guided.cu): the model's
/// output at x (row-major, B N x d) becomes the denoiser ux x + um answer (ux = 0, um = 1 for a denoiser output).
struct guided_weight_answer_functor {
  guided_params p;
  std::int64_t k;
  float ux, um;
  const float* x;          // B N x d
  const float* answer;     // B N x d, row-major
  float* mu;               // B N x d
  float* lw;               // B N
  float* r;                // B N x 2 d_y scratch (the first d_y of each particle's slot)
  std::int64_t* position;  // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const std::int64_t b = i / p.particles;
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d), mi = guided_slice(p, mu, i, p.d, 0, p.d),
                       ri = guided_slice(p, r, i, 2 * p.d_y, 0, p.d_y);
    const float q_now = guided_weight_now(p, k, b, xi, ri);
    answer_as_denoiser(p.d, ux, um, xi, answer + i * p.d, mi);
    lw[i] += guided_weight_next(p, k, b, xi, mi, mi, ri, q_now, guided_multistep_row(p, k, i, b));
  }
};

/// The deterministic DDPM / DDIM step to s = 0 (x' = c0 m: no noise, and no c1 x term, which only that step lacks;
/// check_grid() puts s > 0 at the start of every step): the grid's last step, which the moment and twisted potentials
/// replace by final_transition_draw() and the linear ones by linear_final_draw().
DS_HD_INLINE bool final_transition(const guided_step& st) { return st.sig == 0.f && st.c1 == 0.f; }

/// The linear potentials' last transition (guided_params::final_noise), from the kernel mean x = mu = c0 m to s = 0:
/// the kernel N(mu, v_f P_A) in the directions the observation sees (P_A the projector on the rows of A; the other
/// directions keep the deterministic step's x = mu), v_f = final_var[b] = c (a_K s / a)^2: the flat-prior
/// Cov(x_0 | x) = s^2 / a^2 of the last noisy point (a, s) at the grid's last scale a_K, times the spread c that the
/// linear potentials give A x_0 per unit of squared row norm (src/guided.cu build_tables; 4 by default). Drawn times
/// the likelihood N(a_K y; A x, n^2 I) (n = a_K sigma_y) exactly by the perturbation form with M = v_f A A^T and
/// V = n^2 I + M:
///   x = mu + v_f A^T V^-1 (a_K y - A mu - delta),  delta ~ N(0, n^2 I + n^4 M^-1) = D zeta,
/// so that A x - A mu ~ N(M V^-1 (a_K y - A mu), n^2 M V^-1), the exact conditional of the observed part (as
/// final_transition_draw, with C = v_f I). V^-1 is the precision table of transition k, built with v_f as the
/// kernel's variance, so that the weighting's predictive N(a_K y; A mu, V) is the transition's weight whatever the
/// draw (fully adapted; the deterministic step's likelihood at one point per particle degenerates once sigma_y is far
/// below the spread s |A| / a of A m). In: zy the d_y normals zeta; t d_y scratch. Costs the Gaussian mutation's
/// O(d d_y + d_y^2) per particle (O(d_y) with masks).
template <class X, class Z, class T>
DS_HD_INLINE void linear_final_draw(const guided_params& p, std::int64_t k, std::int64_t b, X& xi, Z& zy, T& t) {
  const int dy = p.d_y;
  const bool diagonal = p.mask != nullptr;
  const float* D = p.final_noise + b * (diagonal ? dy : static_cast<std::int64_t>(dy) * dy);
  // delta = D zeta in place: row o of the lower factor reads zeta_0 .. zeta_o, so the rows go in descending order.
  for (int o = dy - 1; o >= 0; --o) {
    if (diagonal) {
      zy[o] = D[o] * zy[o];
      continue;
    }
    float acc = 0;
    for (int e = 0; e <= o; ++e) acc += D[o * dy + e] * zy[e];
    zy[o] = acc;
  }
  guided_residual(p, b, p.steps[k].a_next, xi, t, 1.f, zy);  // t = a_K y - A mu - delta
  const float* P = guided_precision(p, k, b);
  const float vf = p.final_var[b];
  for (int o = 0; o < dy; ++o) zy[o] = vf * guided_precision_row(p, P, o, t);
  guided_add_rows(p, b, zy, xi);
}

/// Mutation of transition k from the (resampled) kernel means mu: an exact draw of
/// N(x; mu, sig^2 I) g_{k+1}(x) / Z by the perturbation (Matheron) form of the Kalman update:
///   x' = mu + sig z,  t = a_next y - A x' - sigma_{y,k+1} z_y,  x = x' + sig^2 A^T S^-1 t,
/// which has mean mu + sig^2 A^T S^-1 (a_next y - A mu) and covariance sig^2 I - sig^4 A^T S^-1 A, the Woodbury form
/// of (I / sig^2 + A^T A / sigma_{y,k+1}^2)^-1. Costs O(d d_y + d_y^2) per particle (O(d + d_y) with masks).
/// Stream step k + 1. The resampling is folded in: particle i starts from the mean of its ancestor (row
/// b N + ancestors[i] of mu, which is not copied first), and its carried log-weight is reset to 0 when its problem
/// was resampled; one pass over the particles instead of three (weights reset, gather, mutation).
struct guided_mutate_functor {
  guided_params p;
  std::int64_t k;
  const float* mu;                     // B N x d, in pre-resampling order
  const std::int32_t* ancestors;       // B N, indices within the problem
  const particle_report* reports;      // B: reports[b].resampled resets the problem's log-weights
  float* lw;                           // B N carried log-weights
  float* x;                            // B N x d
  float* r;                            // B N x 2 d_y scratch: the observation normals z_y, then t
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / p.particles;
    const guided_step st = p.steps[k];
    const float sig = st.sig;
    const float noise = p.noise_std[(k + 1) * p.problems + b];
    if (reports[b].resampled) lw[i] = 0.f;
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d);
    const strided_vec<float> mi =
        guided_slice(p, mu, b * p.particles + static_cast<std::int64_t>(ancestors[i]), p.d, 0, p.d);
    philox rng(guided_seed(p), guided_stream(p, i, b), static_cast<std::uint64_t>(k) + 1);
    strided_vec<float> zy = guided_slice(p, r, i, 2 * p.d_y, 0, p.d_y);  // the d_y observation normals
    strided_vec<float> t = guided_slice(p, r, i, 2 * p.d_y, p.d_y, p.d_y);
    rng.normals(p.d + p.d_y, [&](int j, float z) {
      if (j < p.d)
        xi[j] = mi[j] + sig * z;
      else
        zy[j - p.d] = z;
    });
    if (sig == 0.f) {  // a deterministic kernel: x = mu exactly, but for the linear potentials' last transition
      if (p.final_noise != nullptr && final_transition(st)) linear_final_draw(p, k, b, xi, zy, t);
      return;
    }
    // t = a_next y - A x' - noise z_y, u = sig^2 S^-1 t (into z_y's slots, spent), then x = x' + A^T u.
    guided_residual(p, b, st.a_next, xi, t, noise, zy);
    const float* P = guided_precision(p, k, b);
    const float sig2 = sig * sig;
    for (int o = 0; o < p.d_y; ++o) zy[o] = sig2 * guided_precision_row(p, P, o, t);
    guided_add_rows(p, b, zy, xi);
  }
};

/// Largest d_y of the moment-projected SMC potentials (a d_y x d_y Cholesky per particle in local memory).
constexpr int moment_potential_max_dy = 8;
/// The symmetrised moment matrix V = sigma_y^2 I + (M + M^T) / 2 of a particle and then its Cholesky factor: the
/// lower triangle packed by rows, entry (o, c), c <= o, at moment_at(o, c): 36 floats, a 144-byte stack frame on the
/// device where the full d_y x d_y matrix took 256 bytes, and one pass less (the symmetrisation happens as the
/// entries arrive). Tried without a frame (ptxas 13.0, sm_90): loops unrolled to moment_potential_max_dy so that
/// the factor stays in registers took the fused kernels from 80 to 128 registers and made moment_stage_functor
/// spill; factorising in place in the per-thread scratch or in global memory took guided_twisted_functor to 96,
/// moment_stage_functor to 56 and twisted_stage_functor to 64 (from 80, 48 and 40).
constexpr int moment_packed = moment_potential_max_dy * (moment_potential_max_dy + 1) / 2;
DS_HD_INLINE constexpr int moment_at(int o, int c) { return o * (o + 1) / 2 + c; }

/// Entry (o, c) of the moment matrix M (row o, as moment_row computes it) into the packed V: on the diagonal
/// (M_oo + M_oo) / 2 + sigma_y^2; below it (c < o) (M_oc + M_co) / 2 with M_co, which row c left in the slot; above it
/// (c > o) M_oc waits in slot (c, o) for row c. Rows in order 0, 1, ..., d_y - 1. The operations of the full matrix's
/// symmetrisation, 0.5 (M_oc + M_co) + (o == c ? sigma_y^2 : 0), operand for operand.
DS_HD_INLINE void moment_put(float (&V)[moment_packed], int o, int c, float value, float s2y) {
  if (c > o) {
    V[moment_at(c, o)] = value;
  } else {
    const float other = c == o ? value : V[moment_at(o, c)];
    V[moment_at(o, c)] = 0.5f * (value + other) + (o == c ? s2y : 0.f);
  }
}

/// Moment-projected SMC (guided_potentials::moment) at grid point k < steps, for particle x:
///   log g_k(x) = log N(y; A m(x), sigma_y^2 I + A Cov(x0 | x) A^T),  Cov(x0 | x) v = (s^2 / a) J v,
/// m the denoiser and J its Jacobian at the channel (a, s) of point k (d_y Jacobian-vector products with the rows
/// of A; the d_y x d_y matrix is symmetrised). Then
///   lw  = log g_0(x)                                     (k = 0: x ~ N(0, s_0^2 I))
///   lw += log g_k(x) - log ghat_k(x)                     (k > 0: x was drawn from the Gaussian-twisted kernel)
///   mu  = c0 m + c1 x,  lz = log Z_k(x) - log g_k(x)     (applied after the resampling of point k; m in mu is
///                                                        multistep_row's with the multistep kernel)
/// with ghat_k(x) = N(a_k y; A x, sigma_{y,k}^2 I) the linear potential that steers the exact Gaussian mutation and
/// Z_k(x) = N(a_{k+1} y; A mu, S_k) its predictive (quadratic parts only; their constants are added on the host).
/// The last transition (to s = 0) runs twisted_finish's fully adapted draw instead (linear_mutation; see there).
/// Row o of the moment matrix M = (s^2 / a) A J A^T of a particle of problem b from u = J a_o (a_o row o of A):
/// put(c, M_oc) with M_oc = cov_scale (A u)_c for every row c in order (v: d scratch). Shared by
/// guided_moment_functor and the stepwise run (moment_stage_functor), whose u is a caller's J^T a_o.
template <class U, class V, class Put>
DS_HD_INLINE void moment_row(const guided_params& p, std::int64_t b, float cov_scale, const U& u, V& v,
                             const Put& put) {
  const int d = p.d, dy = p.d_y;
  for (int c = 0; c < dy; ++c) {
    for (int j = 0; j < d; ++j) v[j] = 0.f;
    guided_add_row(p, b, c, 1.f, v);
    float acc = 0;
    for (int j = 0; j < d; ++j) acc += v[j] * u[j];
    put(c, cov_scale * acc);
  }
}

/// The packed V of a full d_y x d_y moment matrix M (row o at M + o d_y), as the stepwise runs keep it between their
/// launches: the operations of moment_put.
DS_HD_INLINE void moment_pack(int dy, float s2y, const float* M, float (&V)[moment_packed]) {
  for (int o = 0; o < dy; ++o)
    for (int c = 0; c <= o; ++c) V[moment_at(o, c)] = 0.5f * (M[o * dy + c] + M[c * dy + o]) + (o == c ? s2y : 0.f);
}

/// log g_k(x) = log N(y; A m, V), V = sigma_y^2 I + (M + M^T) / 2 (M the moment matrix, d_y x d_y; V packed by
/// moment_put), for a particle of problem b with denoiser m: V is left holding its Cholesky factor L (packed) and r
/// the whitened residual L^-1 (y - A m). Shared by the moment and the twisted weighting.
template <class M, class R>
DS_HD_INLINE float moment_log_potential(const guided_params& p, std::int64_t b, float s2y, const M& m,
                                        float (&V)[moment_packed], R& ri) {
  const int dy = p.d_y;
  // Cholesky in place; a pivot below sigma_y^2 / 2 (rounding of a tiny Cov) is floored there.
  float logdet = 0;
  for (int o = 0; o < dy; ++o) {
    for (int c = 0; c <= o; ++c) {
      float acc = V[moment_at(o, c)];
      for (int e = 0; e < c; ++e) acc -= V[moment_at(o, e)] * V[moment_at(c, e)];
      if (c == o) {
        const float pivot = acc > 0.5f * s2y ? acc : 0.5f * s2y;
        V[moment_at(o, o)] = ds_sqrt(pivot);
        logdet += ds_log(pivot);
      } else {
        V[moment_at(o, c)] = acc / V[moment_at(c, c)];
      }
    }
  }
  // r = y - A m; q = |L^-1 r|^2.
  guided_residual(p, b, 1.f, m, ri);
  float q = 0;
  for (int o = 0; o < dy; ++o) {
    float acc = ri[o];
    for (int e = 0; e < o; ++e) acc -= V[moment_at(o, e)] * ri[e];
    acc /= V[moment_at(o, o)];
    ri[o] = acc;  // forward substitution in place
    q += acc * acc;
  }
  return -0.5f * (q + logdet + float(dy) * log_two_pi<float>());
}

/// The rest of the moment-projected weighting of transition k for particle x of problem b, from its denoiser m and
/// its packed V (moment_put; overwritten): the weight (lw, lz) and the kernel mean mu (r: d_y scratch). See
/// guided_moment_functor.
template <class X, class M, class U, class R>
DS_HD_INLINE void moment_finish(const guided_params& p, std::int64_t k, std::int64_t b, float s2y, const X& xi,
                                const M& m, float (&V)[moment_packed], U& mi, R& ri, float& lw, float& lz,
                                const multistep_row& ms) {
  const guided_step st = p.steps[k];
  const int dy = p.d_y;
  float q_hat = 0;
  if (k > 0) {
    guided_residual(p, b, st.a, xi, ri);
    for (int o = 0; o < dy; ++o) q_hat += ri[o] * ri[o];
    q_hat *= p.inv_var[k * p.problems + b];
  }
  const float log_g = moment_log_potential(p, b, s2y, m, V, ri);
  if (k == 0)
    lw = log_g;
  else
    lw += log_g + 0.5f * q_hat;
  // Kernel mean and the predictive of the next linear potential.
  for (int j = 0; j < p.d; ++j) mi[j] = transition_update(st)(xi[j], ms(j, m[j]));
  guided_residual(p, b, st.a_next, mi, ri);
  const float* P = guided_precision(p, k, b);
  float q_next = 0;
  for (int o = 0; o < dy; ++o) q_next += ri[o] * guided_precision_row(p, P, o, ri);
  lz = -0.5f * q_next - log_g;
}

struct guided_moment_functor {
  guided_params p;
  std::int64_t k;
  const float* sigma2_b;  // B values of sigma_y^2
  const float* x;         // B N x d
  float* mu;              // B N x d
  float* lw;              // B N
  float* lz;              // B N
  float* work;            // B N x 3 d scratch in global memory (used when the scratch is not in shared memory)
  float* r;               // B N x 2 d_y scratch (the first d_y of each particle's slot)
  /// The denoiser m, a row v of A and the JVP J v: 3 d floats (shared memory on the CUDA executor, else work).
  DS_HD int scratch_floats() const { return 3 * p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const { return guided_slice(p, work, i, 3 * p.d, 0, 3 * p.d); }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const std::int64_t b = i / p.particles;
    const guided_step st = p.steps[k];
    const int d = p.d, dy = p.d_y;
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d), mi = guided_slice(p, mu, i, d, 0, d),
                       ri = guided_slice(p, r, i, 2 * dy, 0, dy);
    strided_vec<float> m{s.p, s.stride, d}, vi{s.p + d * s.stride, s.stride, d},
        ui{s.p + 2 * d * s.stride, s.stride, d};
    const channel_view ch = guided_channel(p, k);
    guided_denoiser(ch, xi, m);
    // M = A Cov A^T = (s^2 / a) A J A^T, one JVP per row of A, into V = sigma_y^2 I + (M + M^T) / 2 (packed).
    const float cov_scale = st.s * st.s / st.a, s2y = sigma2_b[b];
    float V[moment_packed];
    for (int o = 0; o < dy; ++o) {
      for (int j = 0; j < d; ++j) vi[j] = 0.f;
      guided_add_row(p, b, o, 1.f, vi);
      channel_jvp<float>(ch, xi, vi, ui);
      moment_row(p, b, cov_scale, ui, vi, [&](int c, float value) { moment_put(V, o, c, value, s2y); });
    }
    moment_finish(p, k, b, s2y, xi, m, V, mi, ri, lw[i], lz[i], guided_multistep_row(p, k, i, b));
  }
};

/// The moment-projected weighting of transition k step by step over B N row-major particles (the CPU executor and
/// the SMC's ask/tell plan), one launch per ask: stage 0 turns the model's answer into the denoiser m = ux x +
/// um answer and sets v = a_0 (row 0 of the particle's A); stage 1 (row o) takes the answer as J^T a_o for row o of
/// the moment matrix and sets v = a_{o + 1}, or at the last row finishes the weight (moment_finish).
struct moment_stage_functor {
  guided_params p;
  std::int64_t k;
  int stage, row;
  float ux, um;
  const float* sigma2_b;   // B values of sigma_y^2
  const float* x;          // B N x d
  float* m;                // B N x d: the denoiser (may be `answer` at stage 0 when ux = 0, um = 1)
  float* v;                // B N x d: the vector of the next J^T v ask
  const float* answer;     // B N x d
  float* M;                // B N x d_y^2: the moment matrices
  float* mu;               // B N x d
  float* lw;               // B N
  float* lz;               // B N
  float* r;                // B N x 2 d_y scratch (the first d_y of each particle's slot)
  std::int64_t* position;  // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const std::int64_t b = i / p.particles;
    const int d = p.d, dy = p.d_y;
    strided_vec<float> xi{const_cast<float*>(x) + i * d, 1, d}, mi{m + i * d, 1, d}, vi{v + i * d, 1, d};
    const float* ai = answer + i * d;
    float* Mi = M + i * dy * dy;
    if (stage == 0) {
      answer_as_denoiser(d, ux, um, xi, ai, mi);
    } else {
      const guided_step st = p.steps[k];
      const strided_vec<const float> ui{ai, 1, d};
      moment_row(p, b, st.s * st.s / st.a, ui, vi, [&](int c, float value) { Mi[row * dy + c] = value; });
      if (row + 1 == dy) {
        // The finish factorises a packed local copy, as guided_moment_functor (see moment_packed).
        const float s2y = sigma2_b[b];
        float V[moment_packed];
        moment_pack(dy, s2y, Mi, V);
        strided_vec<float> mui{mu + i * d, 1, d}, ri{r + i * 2 * dy, 1, dy};
        moment_finish(p, k, b, s2y, xi, mi, V, mui, ri, lw[i], lz[i], guided_multistep_row(p, k, i, b));
        return;
      }
    }
    const int next = stage == 0 ? 0 : row + 1;
    for (int j = 0; j < d; ++j) vi[j] = 0.f;
    guided_add_row(p, b, next, 1.f, vi);
  }
};

/// The twisted SMC's last transition, from x at the last noisy point (a, s) to s = 0, as the Gaussian moment of
/// p(x_0 | x) conditioned on y: the kernel N(m, C_r), C_r = C A^T M^-1 A C the part of C = Cov(x_0 | x) = (s^2 / a) J
/// that the observation sees (M = A C A^T, the moment matrix), whose predictive of y is N(A m, V), V = sigma_y^2 I + M:
/// the moment potential g(x) itself. The particle is drawn from the kernel times the likelihood exactly, by the
/// perturbation form in the d_y observed directions:
///   x_0 = m + C A^T w,  w = V^-1 (y - A m - delta),  delta ~ N(0, sigma_y^2 I + sigma_y^4 M^-1),
/// so that A x_0 - A m = M w ~ N(M V^-1 (y - A m), sigma_y^2 M V^-1), the exact conditional of the observed part, and
/// the rest of x_0 follows it by the regression C A^T M^-1 of C. Its weight, likelihood x kernel / proposal, is g(x)
/// whatever the draw: the transition is fully adapted (the deterministic step's likelihood at one point per
/// particle degenerates once sigma_y is far below the spread s |A| of A m; README, "Accuracy at small sigma_y").
/// In: w = V^-1 (y - A m), lv(o, c) V's Cholesky factor (c <= o), u(o, j) coordinate j of J a_o. Out: w. M is
/// rebuilt from the u (symmetrised) and factorised with pivots floored at 1e-6 of its largest diagonal entry. Normals
/// (2 d_y: delta's two parts) from stream step k + 1 of particle i of problem b.
template <class LV, class U>
DS_HD_INLINE void final_transition_draw(const guided_params& p, std::int64_t k, std::int64_t b, std::int64_t i,
                                        float s2y, float cov_scale, const LV& lv, const U& u,
                                        float (&w)[moment_potential_max_dy]) {
  const int d = p.d, dy = p.d_y;
  float L[moment_packed];
  float largest = 0.f;
  for (int o = 0; o < dy; ++o) {
    const operator_row ro = guided_operator_row(p, b, o);
    for (int c = 0; c <= o; ++c) {
      const operator_row rc = guided_operator_row(p, b, c);
      float oc = 0, co = 0;
      for (int j = 0; j < d; ++j) {
        oc += rc[j] * u(o, j);
        co += ro[j] * u(c, j);
      }
      L[moment_at(o, c)] = 0.5f * cov_scale * (oc + co);
    }
    largest = L[moment_at(o, o)] > largest ? L[moment_at(o, o)] : largest;
  }
  const float floor = 1e-6f * largest + 1e-30f;
  for (int o = 0; o < dy; ++o) {
    for (int c = 0; c <= o; ++c) {
      float acc = L[moment_at(o, c)];
      for (int e = 0; e < c; ++e) acc -= L[moment_at(o, e)] * L[moment_at(c, e)];
      if (c == o)
        L[moment_at(o, o)] = ds_sqrt(acc > floor ? acc : floor);
      else
        L[moment_at(o, c)] = acc / L[moment_at(c, c)];
    }
  }
  float z[2 * moment_potential_max_dy];  // zeta (d_y), then the observation normals (d_y)
  philox rng(guided_seed(p), guided_stream(p, i, b), static_cast<std::uint64_t>(k) + 1);
  rng.normals(2 * dy, [&](int j, float v) { z[j] = v; });
  for (int o = dy - 1; o >= 0; --o) {  // t = L_M^-T zeta, a draw of N(0, M^-1), in place
    float acc = z[o];
    for (int e = o + 1; e < dy; ++e) acc -= L[moment_at(e, o)] * z[e];
    z[o] = acc / L[moment_at(o, o)];
  }
  const float sy = ds_sqrt(s2y);
  for (int o = 0; o < dy; ++o) {  // delta = sigma_y z_y + sigma_y^2 t, then L_V^-1 delta in place
    float acc = sy * z[dy + o] + s2y * z[o];
    for (int e = 0; e < o; ++e) acc -= lv(o, e) * z[dy + e];
    z[dy + o] = acc / lv(o, o);
  }
  for (int o = dy - 1; o >= 0; --o) {  // L_V^-T: V^-1 delta
    float acc = z[dy + o];
    for (int e = o + 1; e < dy; ++e) acc -= lv(e, o) * z[dy + e];
    z[dy + o] = acc / lv(o, o);
  }
  for (int o = 0; o < dy; ++o) w[o] -= z[dy + o];
}

/// The twisted SMC (guided_potentials::twisted) at grid point k < steps, for particle x of problem b with denoiser m
/// and the d_y JVPs u_o = J a_o (a_o row o of A; row o of u at u + o u_rows, coordinate j at j u_step), from its
/// packed V (moment_put; overwritten): with g_k the moment potential (moment_log_potential),
///   lw += log g_k(x)                          (k = 0: lw is 0, or the start correction's log-ratio; k > 0: the
///                                              pending part came with the mutation)
///   h   = sig^2 J A^T V^-1 (y - A m)          (the gradient of log g_k with V held fixed, times sig^2)
///   mu  = c0 m + c1 x + h,  lz = -|h|^2 / (2 sig^2) - log g_k(x)  (m in mu: multistep_row's)
/// into shift (h), mu and lz; the mutation draws x' = mu + sig z from its ancestor's and adds lz - z . h / sig, so
/// that the weights carry g_{k+1}(x') p(x' | x) / (g_k(x) q(x' | x)), p the backward kernel N(c0 m + c1 x, sig^2 I)
/// and q the proposal N(mu, sig^2 I) (twisted_mutate_functor). r: d_y scratch. At the last transition
/// (final_transition(): the deterministic step to s = 0) mu is instead the particle's draw at s = 0 from
/// final_transition_draw() (normals of stream step k + 1 of particle i), h = 0 and lz = 0: that transition's
/// weight is g_k(x) itself, already in lw, so the mutation copies mu and adds nothing, and no likelihood follows.
/// Final = false compiles that branch out: the CUDA executor launches the kernels of the other transitions without
/// it (its local arrays took guided_twisted_functor from 96 to 128 registers and its frame from 144 to 384 bytes).
/// linear_mutation: x was drawn by the linear potentials' Gaussian mutation (the moment potentials' last
/// transition, which runs this fully adapted draw too): the weight is then moment_finish's, lw = log g_0(x) at
/// k = 0, else lw += log g_k(x) - log ghat_k(x) (quadratic part of ghat_k; its constant is the host's). Read only
/// when Final (compiled out of the other transitions' kernels: as a runtime flag there it took
/// guided_twisted_functor<false> from 96 to 128 registers).
template <bool Final, class X, class M, class U, class MU, class H, class R>
DS_HD_INLINE void twisted_finish(const guided_params& p, std::int64_t k, std::int64_t i, std::int64_t b, float s2y,
                                 const X& xi,
                                 const M& m, const U& u, std::int64_t u_rows, std::int64_t u_step,
                                 float (&V)[moment_packed], MU& mi, H& hi, R& ri, float& lw, float& lz,
                                 const multistep_row& ms, bool linear_mutation = false) {
  const guided_step st = p.steps[k];
  const int dy = p.d_y;
  const bool hat = Final && linear_mutation;
  float q_hat = 0;
  if (hat && k > 0) {  // moment_finish's ghat_k(x)
    guided_residual(p, b, st.a, xi, ri);
    for (int o = 0; o < dy; ++o) q_hat += ri[o] * ri[o];
    q_hat *= p.inv_var[k * p.problems + b];
  }
  const float log_g = moment_log_potential(p, b, s2y, m, V, ri);
  if (!hat)
    lw += log_g;
  else if (k == 0)
    lw = log_g;
  else
    lw += log_g + 0.5f * q_hat;
  // w = V^-1 (y - A m) = L^-T (L^-1 r): back substitution in place.
  for (int o = dy - 1; o >= 0; --o) {
    float acc = ri[o];
    for (int e = o + 1; e < dy; ++e) acc -= V[moment_at(e, o)] * ri[e];
    ri[o] = acc / V[moment_at(o, o)];
  }
  if (Final && final_transition(st)) {
    const float cov_scale = st.s * st.s / st.a;
    float w[moment_potential_max_dy];
    for (int o = 0; o < dy; ++o) w[o] = ri[o];
    final_transition_draw(
        p, k, b, i, s2y, cov_scale, [&](int o, int c) { return V[moment_at(o, c)]; },
        [&](int o, int j) { return float(u[o * u_rows + j * u_step]); }, w);
    for (int j = 0; j < p.d; ++j) {
      float g = 0;
      for (int o = 0; o < dy; ++o) g += w[o] * u[o * u_rows + j * u_step];
      hi[j] = 0.f;
      mi[j] = transition_update(st)(xi[j], ms(j, m[j]) + cov_scale * g);
    }
    lz = 0.f;
    return;
  }
  const float sig2 = st.sig * st.sig;
  float norm = 0;
  for (int j = 0; j < p.d; ++j) {
    float g = 0;
    for (int o = 0; o < dy; ++o) g += ri[o] * u[o * u_rows + j * u_step];
    const float h = sig2 * g;
    hi[j] = h;
    mi[j] = transition_update(st)(xi[j], ms(j, m[j])) + h;
    norm += h * h;
  }
  lz = (sig2 > 0.f ? -0.5f * norm / sig2 : 0.f) - log_g;
}

/// The twisted weighting of transition k, fused for one particle (the CUDA executor): the denoiser m, the d_y JVPs
/// J a_o and twisted_finish. Scratch (2 + d_y) d floats: m, a row of A, the d_y JVPs. Final: twisted_finish's
/// (true for the last transition; false elsewhere, where it changes nothing but the kernel's registers).
/// linear_mutation: twisted_finish's (the moment potentials' last transition).
template <bool Final = true>
struct guided_twisted_functor {
  guided_params p;
  std::int64_t k;
  const float* sigma2_b;  // B values of sigma_y^2
  const float* x;         // B N x d
  float* mu;              // B N x d: the proposal mean
  float* shift;           // B N x d: h
  float* lw;              // B N
  float* lz;              // B N
  float* work;            // B N x (2 + d_y) d scratch in global memory (used when the scratch is not in shared memory)
  float* r;               // B N x 2 d_y scratch (the first d_y of each particle's slot)
  bool linear_mutation = false;
  DS_HD int scratch_floats() const { return (2 + p.d_y) * p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const {
    return guided_slice(p, work, i, scratch_floats(), 0, scratch_floats());
  }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const std::int64_t b = i / p.particles;
    const guided_step st = p.steps[k];
    const int d = p.d, dy = p.d_y;
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d), mi = guided_slice(p, mu, i, d, 0, d),
                       hi = guided_slice(p, shift, i, d, 0, d), ri = guided_slice(p, r, i, 2 * dy, 0, dy);
    strided_vec<float> m{s.p, s.stride, d}, vi{s.p + d * s.stride, s.stride, d};
    const channel_view ch = guided_channel(p, k);
    guided_denoiser(ch, xi, m);
    const float cov_scale = st.s * st.s / st.a, s2y = sigma2_b[b];
    float V[moment_packed];
    for (int o = 0; o < dy; ++o) {
      strided_vec<float> ui{s.p + (2 + o) * d * s.stride, s.stride, d};
      for (int j = 0; j < d; ++j) vi[j] = 0.f;
      guided_add_row(p, b, o, 1.f, vi);
      channel_jvp<float>(ch, xi, vi, ui);
      moment_row(p, b, cov_scale, ui, vi, [&](int c, float value) { moment_put(V, o, c, value, s2y); });
    }
    twisted_finish<Final>(p, k, i, b, s2y, xi, m, s.p + 2 * d * s.stride, d * s.stride, s.stride, V, mi, hi, ri, lw[i],
                          lz[i], guided_multistep_row(p, k, i, b), linear_mutation);
  }
};

/// The twisted weighting of transition k step by step over `rows` row-major particles (the CPU executor), one pass
/// per answer: stage 0 takes the answer as the denoiser m = ux x + um answer and sets v = a_0; stage 1 (row o) takes
/// row o's answer J a_o (in u + o rows d) for row o of the moment matrix and sets v = a_{o + 1}, or at the last row
/// finishes (twisted_finish). As moment_stage_functor, with the answers of every row kept for the gradient.
/// linear_mutation: twisted_finish's (the moment potentials' last transition).
struct twisted_stage_functor {
  guided_params p;
  std::int64_t k;
  int stage, row;
  float ux, um;
  std::int64_t rows;       // the particles of the pass (u's row stride over rows d)
  const float* sigma2_b;   // B values of sigma_y^2
  const float* x;          // rows x d
  float* m;                // rows x d: the denoiser (may be `answer` when ux = 0, um = 1)
  float* v;                // rows x d: the vector of the next JVP
  const float* answer;     // rows x d: the denoiser's answer (stage 0)
  const float* u;          // d_y x rows x d: the JVPs J a_o
  float* M;                // rows x d_y^2: the moment matrices
  float* mu;               // rows x d
  float* shift;            // rows x d
  float* lw;               // rows
  float* lz;               // rows
  float* r;                // rows x 2 d_y scratch (the first d_y of each particle's slot)
  bool linear_mutation = false;
  DS_HD void operator()(std::int64_t i) const { run<true>(i); }
  /// The stage for particle i; Final as twisted_finish's (the CUDA plan's tells of the other transitions: false).
  template <bool Final>
  DS_HD void run(std::int64_t i) const {
    const std::int64_t b = i / p.particles;
    const int d = p.d, dy = p.d_y;
    strided_vec<float> xi{const_cast<float*>(x) + i * d, 1, d}, mi{m + i * d, 1, d}, vi{v + i * d, 1, d};
    float* Mi = M + i * dy * dy;
    if (stage == 0) {
      answer_as_denoiser(d, ux, um, xi, answer + i * d, mi);
    } else {
      const guided_step st = p.steps[k];
      const std::int64_t plane = rows * d;
      const strided_vec<const float> ui{u + row * plane + i * d, 1, d};
      moment_row(p, b, st.s * st.s / st.a, ui, vi, [&](int c, float value) { Mi[row * dy + c] = value; });
      if (row + 1 == dy) {
        const float s2y = sigma2_b[b];
        float V[moment_packed];
        moment_pack(dy, s2y, Mi, V);
        strided_vec<float> mui{mu + i * d, 1, d}, hi{shift + i * d, 1, d}, ri{r + i * 2 * dy, 1, dy};
        twisted_finish<Final>(p, k, i, b, s2y, xi, mi, u + i * d, plane, 1, V, mui, hi, ri, lw[i], lz[i],
                              guided_multistep_row(p, k, i, b), linear_mutation);
        return;
      }
    }
    const int next = stage == 0 ? 0 : row + 1;
    for (int j = 0; j < d; ++j) vi[j] = 0.f;
    guided_add_row(p, b, next, 1.f, vi);
  }
};

/// The twisted proposal of transition k from the (resampled) proposal means: particle i draws x' = mu_a + sig z from
/// its ancestor a (row b N + ancestors[i], stream step k + 1, as guided_mutate_functor) and adds lz_a - z . h_a / sig
/// to its log-weight (reset to 0 first when its problem was resampled): with lz_a (twisted_finish) the weight's
/// log p(x' | x) / q(x' | x) - log g_k(x_a).
struct twisted_mutate_functor {
  guided_params p;
  std::int64_t k;
  const float* mu;                     // B N x d proposal means, in pre-resampling order
  const float* shift;                  // B N x d: h, in pre-resampling order
  const float* lz;                     // B N, in pre-resampling order
  const std::int32_t* ancestors;       // B N, indices within the problem
  const particle_report* reports;      // B: reports[b].resampled resets the problem's log-weights
  float* lw;                           // B N carried log-weights
  float* x;                            // B N x d
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / p.particles;
    const float sig = p.steps[k].sig;
    const std::int64_t a = b * p.particles + static_cast<std::int64_t>(ancestors[i]);
    float w = reports[b].resampled ? 0.f : lw[i];
    strided_vec<float> xi = guided_slice(p, x, i, p.d, 0, p.d);
    const strided_vec<float> mi = guided_slice(p, mu, a, p.d, 0, p.d), hi = guided_slice(p, shift, a, p.d, 0, p.d);
    philox rng(guided_seed(p), guided_stream(p, i, b), static_cast<std::uint64_t>(k) + 1);
    float dot = 0;
    rng.normals(p.d, [&](int j, float z) {
      xi[j] = mi[j] + sig * z;
      dot += z * hi[j];
    });
    lw[i] = w + lz[a] - (sig > 0.f ? dot / sig : 0.f);
  }
};

/// The twisted SMC's starting log-weights, in place of the linear log g_0 that guided_init_functor gives them: 0, or
/// with the start correction its log-ratio (coordinate 0 of the particle's slot of `ratio`); twisted_finish adds
/// log g_0 at point 0.
struct twisted_start_functor {
  guided_params p;
  const float* ratio;  // guided_init_functor's ratio buffer (read when corrected)
  float* lw;           // B N
  bool corrected;
  DS_HD void operator()(std::int64_t i) const { lw[i] = corrected ? guided_slice(p, ratio, i, p.d, 0, 1)[0] : 0.f; }
};

/// lw += lz of the particle's ancestor (the moment-projected SMC's pending weight, after the resampling).
struct guided_add_weight_functor {
  const float* lz;                 // B N, in pre-resampling order
  const std::int32_t* ancestors;   // B N, indices within the problem
  float* lw;                       // B N
  std::int64_t particles;
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / particles;
    lw[i] += lz[b * particles + ancestors[i]];
  }
};

/// Per-problem bookkeeping after the resampling of step `column`: log-normaliser increment against the previous
/// normalisation, ESS trace and resampling count. A failed problem (every weight zero) gets log Z = -inf.
struct guided_bookkeeping_functor {
  const particle_report* reports;
  double* log_normaliser;  // B
  double* previous_lse;    // B: logsumexp of the carried weights (log N right after a resampling)
  float* ess_trace;        // B x (steps + 1), or nullptr
  std::int32_t* resample_count;  // B, or nullptr
  std::int64_t columns, column;
  double log_n;
  DS_HD void operator()(std::int64_t b) const {
    const particle_report rep = reports[b];
    if (rep.failed) {
      log_normaliser[b] = -INFINITY;
    } else {
      log_normaliser[b] += rep.log_sum_exp - previous_lse[b];
    }
    previous_lse[b] = rep.resampled ? log_n : rep.log_sum_exp;
    if (ess_trace != nullptr) ess_trace[b * columns + column] = float(rep.ess);
    if (resample_count != nullptr && rep.resampled) resample_count[b] += 1;
  }
};

/// After a resampling the offspring carry equal weights.
struct guided_reset_weights_functor {
  const particle_report* reports;
  float* lw;
  std::int64_t particles;
  DS_HD void operator()(std::int64_t i) const {
    if (reports[i / particles].resampled) lw[i] = 0.f;
  }
};

/// DPS and Pi-GDM: a DDPM trajectory per particle whose kernel mean is shifted by
///   guidance_scale * (c0 s^2 / a) * J A^T P (y - A m),   J = d m / d x (symmetric, so J^T = J),
/// P = I / sigma_y^2 (DPS) or (r_k^2 A A^T + sigma_y^2 I)^-1 (Pi-GDM), from the precision table. The factor
/// c0 s^2 / a is how a score term enters the DDPM mean (m = (x + s^2 score) / a).
/// DPS's normalised step (as published) instead adds guidance_scale * J A^T (y - A m) / |y - A m| to the draw,
/// = -guidance_scale grad_x |y - A m(x)|; |y - A m|^2 includes the problem's norm_offset (the part of y outside
/// the span of a reduced SVD operator; 0 otherwise), and a zero residual adds nothing.
/// A step is two halves around the Jacobian product, shared by the fused functor below, the CPU executor's stepwise
/// run and the ask/tell plan (src/guided.cu), so that a plan answered with the mixture's denoiser and J^T v
/// reproduces the fused run.
struct baseline_settings {
  float scale;
  bool normalised;                     // DPS's normalised step
  const float* norm_offset;            // B: added to |y - A m|^2 (normalised step)
};

/// First half of step k for a particle of problem b: from the denoiser m, the vector v whose J^T v the update
/// needs (A^T P (y - A m), or A^T (y - A m) for the normalised step) and the factor of J^T v in the update.
template <class M, class V, class R>
DS_HD_INLINE float baseline_guidance(const guided_params& p, const baseline_settings& g, std::int64_t b,
                                     std::int64_t k, const M& m, V& v, R& r) {
  const guided_step st = p.steps[k];
  guided_residual(p, b, 1.f, m, r);
  for (int j = 0; j < p.d; ++j) v[j] = 0.f;
  float shift = g.scale * st.guidance;
  if (g.normalised) {
    float norm2 = g.norm_offset[b];
    for (int o = 0; o < p.d_y; ++o) norm2 += r[o] * r[o];
    shift = norm2 > 0.f ? g.scale / ds_sqrt(norm2) : 0.f;
    for (int o = 0; o < p.d_y; ++o) guided_add_row(p, b, o, r[o], v);
  } else {
    const float* P = guided_precision(p, k, b);
    for (int o = 0; o < p.d_y; ++o) guided_add_row(p, b, o, guided_precision_row(p, P, o, r), v);
  }
  return shift;
}

/// Second half of step k for particle `id`: x <- c0 m + c1 x + shift J^T v + sig z (stream step k + 1).
template <class X, class M, class J>
DS_HD_INLINE void baseline_update(const guided_params& p, std::int64_t k, std::uint64_t id, float shift, X& x,
                                  const M& m, const J& jv) {
  const guided_step st = p.steps[k];
  const int d = p.d;
  if (st.sig != 0.f) {
    philox rng(p.seed, id, static_cast<std::uint64_t>(k) + 1);
    rng.normals(d, [&](int j, float z) { x[j] = st.c0 * m[j] + st.c1 * x[j] + shift * jv[j] + st.sig * z; });
  } else {
    for (int j = 0; j < d; ++j) x[j] = st.c0 * m[j] + st.c1 * x[j] + shift * jv[j];
  }
}

/// The initial particle x = s_0 z (stream step 0 of particle `id`).
template <class X>
DS_HD_INLINE void baseline_initial(const guided_params& p, std::uint64_t id, X& x) {
  philox rng(p.seed, id, 0);
  const float s0 = p.initial_scale;
  rng.normals(p.d, [&](int j, float z) { x[j] = s0 * z; });
}

/// The whole DPS / Pi-GDM trajectory of one particle in one thread (the CUDA executor's fused run). The denoiser m
/// and J v, each accumulated K times per coordinate and step, live in the scratch: shared memory on the CUDA
/// executor when a warp's 2 d floats fit, else work's rows (kernels/guided.cuh, "Layout"); v = A^T P r is built
/// once per step in work's third row.
struct guided_baseline_functor {
  guided_params p;
  std::int64_t steps;
  float* x;        // B N x d (output), in the run's layout
  float* work;     // B N x 3 d scratch (m, J v, v)
  float* r;        // B N x d_y scratch
  baseline_settings g;
  DS_HD int scratch_floats() const { return 2 * p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const { return guided_slice(p, work, i, 3 * p.d, 0, 2 * p.d); }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const std::int64_t b = i / p.particles;
    const int d = p.d;
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d), vi = guided_slice(p, work, i, 3 * d, 2 * d, d),
                       ri = guided_slice(p, r, i, p.d_y, 0, p.d_y);
    strided_vec<float> mi{s.p, s.stride, d}, ji{s.p + d * s.stride, s.stride, d};
    const std::uint64_t stream = guided_stream(p, i, b);  // once: i is not needed in the loop
    baseline_initial(p, stream, xi);
    for (std::int64_t k = 0; k < steps; ++k) {
      const channel_view ch = guided_channel(p, k);
      guided_denoiser(ch, xi, mi);
      const float shift = baseline_guidance(p, g, b, k, mi, vi, ri);
      // The logits unrolled twice: 80 registers (ptxas, sm_90); 96 with every loop as the compiler chooses, with the
      // logits rolled or unrolled 3, 4 or 8 times, or the parts rolled; 72 with spills with the passes rolled.
      channel_jvp<float, jvp_loops<2, 0, 0>>(ch, xi, vi, ji);
      baseline_update(p, k, stream, shift, xi, mi, ji);
    }
  }
};

/// The start of a stepwise stage (baseline_stage_functor, diffpir_stage_functor) for particle i of problem b:
/// thread 0 stores next_position (when position is not null); stage 0 draws the initial particle x = s_0 z; returns
/// the particle's stream id, id_base + guided_stream(p, i, b) (id_base nullptr for 0).
template <class X>
DS_HD_INLINE std::uint64_t stage_begin(const guided_params& p, std::int64_t i, std::int64_t b,
                                       const std::uint64_t* id_base, std::int64_t* position,
                                       std::int64_t next_position, int stage, X& x) {
  if (position != nullptr && i == 0) *position = next_position;
  const std::uint64_t id = (id_base != nullptr ? *id_base : 0) + guided_stream(p, i, b);
  if (stage == 0) baseline_initial(p, id, x);
  return id;
}

/// The stepwise DPS / Pi-GDM run over B N particles (CPU executor and the ask/tell plan), one launch per half step.
/// Particle i of problem b draws from the stream id_base + guided_stream(p, i, b) (id_base: the plan's trajectory,
/// in its state; the shard fields of p place a shard of a larger run, 0 in a plan).
struct baseline_stage_functor {
  guided_params p;
  baseline_settings g;
  std::int64_t k;
  int stage;              // 0: initial draw; 1: guidance from m (m = ux x + um answer); 2: update from J^T v
  float ux, um;           // stage 1: the answer r becomes the denoiser ux x + um r
  float* x;               // B N x d
  float* m;               // B N x d denoiser
  float* v;               // B N x d the vector of the J^T v ask
  const float* answer;    // B N x d: stage 1 the model's output, stage 2 J^T v
  float* shift;           // B N
  float* r;               // B N x d_y scratch
  const std::uint64_t* id_base;  // the trajectory's first particle id (device memory), or nullptr for 0
  std::int64_t* position;        // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    const int d = p.d;
    const std::int64_t b = i / p.particles;
    strided_vec<float> xi{x + i * d, 1, d}, mi{m + i * d, 1, d};
    const std::uint64_t id = stage_begin(p, i, b, id_base, position, next_position, stage, xi);
    if (stage == 0) return;
    const strided_vec<const float> ai{answer + i * d, 1, d};
    if (stage == 1) {
      strided_vec<float> vi{v + i * d, 1, d}, ri{r + i * p.d_y, 1, p.d_y};
      answer_as_denoiser(d, ux, um, xi, ai, mi);
      shift[i] = baseline_guidance(p, g, b, k, mi, vi, ri);
      return;
    }
    baseline_update(p, k, id, shift[i], xi, mi, ai);
  }
};

/// Copies n floats (final outputs).
struct guided_copy_functor {
  const float* from;
  float* to;
  DS_HD void operator()(std::int64_t i) const { to[i] = from[i]; }
};

/// The run's B N x d particles out in the public row-major layout: element e = i d + j of `to` from (i, j) of `from`
/// in the run's layout (guided_slice; coordinate_stride 0: a plain copy). Once per call; coordinate-major, the
/// writes are coalesced and the reads gather (32 sectors per warp access, d B N 4 bytes read once).
struct guided_copy_out_functor {
  const float* from;
  float* to;
  std::int64_t d, coordinate_stride;
  DS_HD void operator()(std::int64_t e) const {
    if (coordinate_stride == 0) {
      to[e] = from[e];
      return;
    }
    const std::int64_t i = e / d, j = e - i * d;
    to[e] = from[i + j * coordinate_stride];
  }
};

/// Resampling's gather in the coordinate-major layout (the row-major one is gather_particles'): element (i, j) of
/// `to` from (b N + ancestors[i], j) of `from`, over e = i + j B N so that the writes are coalesced (the reads are
/// too where ancestors are ordered, as the systematic, stratified and residual schemes return them).
struct guided_gather_functor {
  const float* from;
  const std::int32_t* ancestors;  // B N, indices within the problem
  float* to;
  std::int64_t particles, coordinate_stride;  // coordinate_stride = B N
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t j = e / coordinate_stride, i = e - j * coordinate_stride;
    const std::int64_t b = i / particles;
    to[e] = from[b * particles + ancestors[i] + j * coordinate_stride];
  }
};

/// The SMC's final resample-move (guided_options::final_moves): each equally weighted sample runs `moves`
/// preconditioned MALA steps on the target of the grid's last point (s = 0, signal scale a = a_K),
///   pi(x) = p_a(x) N(a y; A x, a^2 sigma_y^2 I),   grad log pi = g_p(x) + A^T r(x) inv_s2,   r = a y - A x,
/// with p_a the prior at the channel (a, 0) and g_p its score (from the run's table), inv_s2 = 1 / s2 =
/// 1 / (a^2 sigma_y^2) = inv_var[K B + b]. The Metropolis test reads the prior only through its score, as a neural
/// prior gives it: log p_a(x') - log p_a(x) = int_0^1 (x' - x) . g_p(x + u (x' - x)) du by Simpson's rule,
///   (x' - x) . (g_p(x) + 4 g_p((x + x') / 2) + g_p(x')) / 6,
/// exact for a Gaussian prior (any quadratic log-density) and off by O(|x' - x|^5) times the fourth derivative of
/// log p_a along the segment, i.e. only where the components' responsibilities change along it (the trapezoid rule,
/// free of the midpoint's evaluation, is exact on a Gaussian too but biased the moments of an overlapping 2-D mixture's
/// posterior by 19-34 standard errors at 2e5 samples, where Simpson's matched the exact test). The likelihood's part
/// of log pi is exact (the operator is known). Two prior evaluations per move (x' and the midpoint). Proposal
///   x' = x + M ((h / 2) g + n),   n = sqrt(h lambda) z_1 + sqrt(h inv_s2) A^T z_2,  z_1 ~ N(0, I_d), z_2 ~ N(0, I_dy),
/// so that M n ~ N(0, h M) with the preconditioner M = (lambda I + inv_s2 A^T A)^-1 = (I - A^T W A) / lambda,
/// W = (lambda s2 I + A A^T)^-1 (Woodbury; per problem from the host, the diagonal for masks) and lambda = the
/// prior's curvature at the channel (max_k 1 / min_j v_kj over a^2). The proposal densities need only quadratic
/// forms of M: log q(x' | x) = -n^T M n / (2 h), log q(x | x') = -v^T M v / (2 h) with v = n + (h / 2) (g + g'),
/// since x - x' - (h / 2) M g' = -M v.
/// Every vector u here (g, n, v, (h / 2) g + n) splits as u = u_p + A^T mu with u_p of order 1 and mu of order
/// 1 / s2 (the likelihood's gradient, the noise along A^T): the terms in mu are never formed. With mu~ = s2 mu (of
/// order sigma_y) and e = A u_p - lambda mu~, from M A^T = s2 A^T W and A A^T W = I - lambda s2 W:
///   M u = (u_p - A^T W e) / lambda,   u^T M u = |u_p|^2 / lambda + inv_s2 |mu~|^2 - e^T W e / lambda,
/// every term of order 1 whatever sigma_y. (The unsplit forms, |u|^2 - (A u)^T W (A u) and u - A^T W A u, cancel
/// terms of order 1 / s2 down to order 1: at sigma_y = 1e-5 FP32 left nothing of the Metropolis test.) For g,
/// mu~ = r; for n, mu~ = sqrt(h s2) z_2.
/// Move m draws from stream step first_step + m of the sample's row (z_1, then z_2, then the uniform).
struct final_move_params {
  const float* W;           // B x d_y x d_y (masks: B x d_y): (lambda a^2 sigma_{y,b}^2 I + A_b A_b^T)^-1
  channel_view channel;     // the prior at (a_K, 0)
  float a;                  // a_K
  float curvature;          // lambda
  float step;               // h
  std::int64_t last;        // K: the grid point of inv_var
  std::uint64_t first_step; // K + 1: the first stream step of the moves
  int moves;
};

/// r = a y_b - A_b v (d_y values) for the final moves: guided_residual's FP64 form without its noise term. Near the
/// posterior r is of order sigma_y while its terms are of order |A| |v|; in FP32 |r| was off by up to d 2^-24 sum_j
/// |A_oj v_j| (a quarter of the posterior's width along a row at sigma_y = 1e-6). In FP64 every product of two floats
/// is exact, the sum of d + 1 of them is off by at most d 2^-53 (|a y_o| + sum_j |A_oj v_j|), and the result by that
/// plus 2^-24 |r_o|: relative to sigma_y, 2^-24 plus 1e-9 at d = 1e3, |A| |v| = 10, sigma_y = 1e-7. Cost: d d_y FP64
/// multiply-adds per residual, two residuals per move (half the FP32 rate on H100 / H200, against the prior's K d per
/// evaluation).
template <class V, class R>
DS_HD_INLINE void final_move_residual(const guided_params& p, std::int64_t b, float a, const V& v, R& r) {
  guided_residual(p, b, a, v, r);  // its FP64 form, without a noise term
}

/// The likelihood's part of log pi(v), -|r|^2 inv_s2 / 2 (the prior's part enters the test by quadrature of its
/// score), with r = a y - A v (d_y) into r.
template <class V, class R>
DS_HD_INLINE float final_move_log_likelihood(const guided_params& p, const final_move_params& q, std::int64_t b,
                                             float inv_s2, const V& v, R& r) {
  final_move_residual(p, b, q.a, v, r);  // a y - A v
  // |r|^2 in FP64 (products of floats exact): the log-likelihood, of order d_y near the posterior, is then off by
  // about 2^-24 of itself, not d_y 2^-24 (log pi' - log pi must be right to well below 1).
  double sq = 0.0;
  for (int o = 0; o < p.d_y; ++o) sq += double(r[o]) * double(r[o]);
  return -static_cast<float>(0.5 * sq * double(inv_s2));
}

/// e = A u_p - lambda mu~ into e (from -A u_p, which e may hold on entry), and e^T W e; with `into` (d_y values, not
/// aliasing e) also W e.
template <class E, class Mu, class Into>
DS_HD_INLINE float final_move_split(const guided_params& p, const final_move_params& q, std::int64_t b,
                                    float lambda, const Mu& mu, E& e, Into* into) {
  const int dy = p.d_y;
  for (int o = 0; o < dy; ++o) e[o] = -e[o] - lambda * mu[o];
  float ewe = 0.f;
  if (p.mask != nullptr) {
    const float* W = q.W + b * dy;
    for (int o = 0; o < dy; ++o) {
      const float we = W[o] * e[o];
      ewe += e[o] * we;
      if (into != nullptr) (*into)[o] = we;
    }
  } else {
    const float* W = q.W + b * static_cast<std::int64_t>(dy) * dy;
    for (int o = 0; o < dy; ++o) {
      float we = 0.f;
      for (int c = 0; c < dy; ++c) we += W[o * dy + c] * e[c];
      ewe += e[o] * we;
      if (into != nullptr) (*into)[o] = we;
    }
  }
  return ewe;
}

/// One sample's rows of the final moves' buffers (final_move_functor's layout): the sample x, the prior's score g at
/// x, the proposal x', its score g', the noise n (then v, then the midpoint), the score gm at the midpoint, and the
/// d_y-vectors r(x), r(x'), mu~ and e.
struct final_move_row {
  strided_vec<float> x, g, xp, gp, n, gm, r, rp, nu, e;
};

/// A move's scalars between its stages: the log-likelihood at x and at x', log q(x' | x), log u, and the test's
/// part other than the prior's.
struct final_move_scalars {
  float log_lik, log_lik_new, log_forward, log_u, rest;
};

/// The final moves' per-problem constants (final_move_functor's doc).
struct final_move_constants {
  float inv_s2, h, lambda, half, noise_x, noise_y, inv_lambda, inv_2h;
  DS_HD_INLINE final_move_constants(const guided_params& p, const final_move_params& q, std::int64_t b)
      : inv_s2(p.inv_var[q.last * p.problems + b]), h(q.step), lambda(q.curvature), half(0.5f * h),
        noise_x(ds_sqrt(h * lambda)), noise_y(ds_sqrt(h / inv_s2)), inv_lambda(1.f / lambda), inv_2h(1.f / (2.f * h)) {}
};

/// The moves' stages, so that guided_sample() (final_move_functor, the prior's score from its table between them)
/// and the ask/tell plan (its caller's model answering each score) run the same operations. Every stage reads the
/// prior's score it needs from the row's buffer.
/// Start: r = a y - A x and the log-likelihood at x (g holds the score at x).
DS_HD_INLINE void final_move_start(const guided_params& p, const final_move_params& q, std::int64_t b,
                                   const final_move_constants& c, final_move_row& w, final_move_scalars& v) {
  v.log_lik = final_move_log_likelihood(p, q, b, c.inv_s2, w.x, w.r);
}

/// Propose (move m): the noise, log q(x' | x), x' and the move's uniform (its stream's draws: z_1, z_2, u).
DS_HD_INLINE void final_move_propose(const guided_params& p, const final_move_params& q, std::int64_t i,
                                     std::int64_t b, int m, const final_move_constants& c, final_move_row& w,
                                     final_move_scalars& v) {
  const int d = p.d, dy = p.d_y;
  philox rng(guided_seed(p), guided_stream(p, i, b), q.first_step + static_cast<std::uint64_t>(m));
  rng.normals(d, [&](int j, float z) { w.n[j] = c.noise_x * z; });  // n_p
  rng.normals(dy, [&](int o, float z) { w.nu[o] = c.noise_y * z; });  // mu~ of n
  v.log_u = ds_log(rng.uniform());
  // n^T M n: e = A n_p - lambda mu~.
  float nn = 0.f;
  for (int j = 0; j < d; ++j) nn += w.n[j] * w.n[j];
  float nu2 = 0.f;
  for (int o = 0; o < dy; ++o) nu2 += w.nu[o] * w.nu[o];
  guided_residual_float(p, b, 0.f, w.n, w.e);  // -A n_p
  const float nmn = nn * c.inv_lambda + nu2 * c.inv_s2 -
                    final_move_split(p, q, b, c.lambda, w.nu, w.e, static_cast<strided_vec<float>*>(nullptr)) *
                        c.inv_lambda;
  // x' = x + M w, w = (h / 2) g + n: w_p = (h / 2) g_p + n_p into x' - x, mu~ = (h / 2) r + mu~ of n (into rp).
  for (int j = 0; j < d; ++j) w.xp[j] = c.half * w.g[j] + w.n[j];
  for (int o = 0; o < dy; ++o) w.rp[o] = c.half * w.r[o] + w.nu[o];
  guided_residual_float(p, b, 0.f, w.xp, w.e);  // -A w_p
  final_move_split(p, q, b, c.lambda, w.rp, w.e, &w.rp);  // rp = W e
  for (int o = 0; o < dy; ++o) w.rp[o] = -w.rp[o];
  guided_add_rows(p, b, w.rp, w.xp);  // w_p - A^T W e
  for (int j = 0; j < d; ++j) w.xp[j] = w.x[j] + w.xp[j] * c.inv_lambda;
  v.log_forward = -nmn * c.inv_2h;
}

/// Weigh (gp holds the score at x'): r' and the log-likelihood at x', log q(x | x'), the test but the prior's part,
/// and the midpoint (x + x') / 2 into n (v_p is read by then).
DS_HD_INLINE void final_move_weigh(const guided_params& p, const final_move_params& q, std::int64_t b,
                                   const final_move_constants& c, final_move_row& w, final_move_scalars& v) {
  const int d = p.d, dy = p.d_y;
  v.log_lik_new = final_move_log_likelihood(p, q, b, c.inv_s2, w.xp, w.rp);
  // v = n + (h / 2) (g + g'): v_p = n_p + (h / 2) (g_p + g_p'), mu~ = mu~ of n + (h / 2) (r + r').
  float vv = 0.f;
  for (int j = 0; j < d; ++j) {
    w.n[j] += c.half * (w.g[j] + w.gp[j]);
    vv += w.n[j] * w.n[j];
  }
  float psi2 = 0.f;
  for (int o = 0; o < dy; ++o) {
    w.nu[o] += c.half * (w.r[o] + w.rp[o]);
    psi2 += w.nu[o] * w.nu[o];
  }
  guided_residual_float(p, b, 0.f, w.n, w.e);  // -A v_p
  const float vmv = vv * c.inv_lambda + psi2 * c.inv_s2 -
                    final_move_split(p, q, b, c.lambda, w.nu, w.e, static_cast<strided_vec<float>*>(nullptr)) *
                        c.inv_lambda;
  const float log_backward = -vmv * c.inv_2h;
  v.rest = (v.log_lik_new - v.log_lik) + log_backward - v.log_forward;
  for (int j = 0; j < d; ++j) w.n[j] = 0.5f * (w.x[j] + w.xp[j]);
}

/// Accept (gm holds the score at the midpoint): log p_a(x') - log p_a(x) by Simpson's rule on the score, and the
/// Metropolis test; on acceptance x, g, r and the log-likelihood take the proposal's.
DS_HD_INLINE void final_move_accept(const guided_params& p, final_move_row& w, final_move_scalars& v) {
  const int d = p.d, dy = p.d_y;
  float simpson = 0.f;
  for (int j = 0; j < d; ++j) simpson += (w.xp[j] - w.x[j]) * (w.g[j] + 4.f * w.gm[j] + w.gp[j]);
  const float log_alpha = simpson * (1.f / 6.f) + v.rest;
  if (v.log_u < log_alpha) {  // NaN: rejected
    for (int j = 0; j < d; ++j) {
      w.x[j] = w.xp[j];
      w.g[j] = w.gp[j];
    }
    for (int o = 0; o < dy; ++o) w.r[o] = w.rp[o];
    v.log_lik = v.log_lik_new;
  }
}

/// The rows of sample i in the moves' buffers: x row-major (the samples), the others in the run's layout.
DS_HD_INLINE final_move_row final_move_slices(const guided_params& p, float* x, float* g, float* xp, float* gp,
                                              float* n, float* gm, float* t, std::int64_t i) {
  const int d = p.d, dy = p.d_y;
  return {particle_slice(0, x, i, d, 0, d),       guided_slice(p, g, i, d, 0, d),
          guided_slice(p, xp, i, d, 0, d),        guided_slice(p, gp, i, d, 0, d),
          guided_slice(p, n, i, d, 0, d),         guided_slice(p, gm, i, d, 0, d),
          guided_slice(p, t, i, 4 * dy, 0, dy),   guided_slice(p, t, i, 4 * dy, dy, dy),
          guided_slice(p, t, i, 4 * dy, 2 * dy, dy), guided_slice(p, t, i, 4 * dy, 3 * dy, dy)};
}

struct final_move_functor {
  guided_params p;
  final_move_params q;
  float* x;    // B N x d, row-major: the samples
  float* g;    // B N x d scratch in the run's layout: the prior's score at x
  float* xp;   // B N x d scratch: the proposal
  float* gp;   // B N x d scratch: the prior's score at x'
  float* n;    // B N x d scratch: the proposal's noise n_p, then v_p, then the midpoint (x + x') / 2
  float* gm;   // B N x d scratch: the prior's score at the midpoint
  float* t;    // B N x 4 d_y scratch: the residuals r(x) and r(x'), mu~ of n (then of v), and e
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / p.particles;
    final_move_row w = final_move_slices(p, x, g, xp, gp, n, gm, t, i);
    const final_move_constants c(p, q, b);
    final_move_scalars v{};
    channel_score<float>(q.channel, w.x, w.g);  // its log-density is not read
    final_move_start(p, q, b, c, w, v);
    for (int m = 0; m < q.moves; ++m) {
      final_move_propose(p, q, i, b, m, c, w, v);
      channel_score<float>(q.channel, w.xp, w.gp);
      final_move_weigh(p, q, b, c, w, v);
      channel_score<float>(q.channel, w.n, w.gm);
      final_move_accept(p, w, v);
    }
  }
};

/// The ask/tell plan's tells of the final moves (the model's answers written into the row's buffer the stage
/// reads): stage 0 after the answer at the samples (start, then propose move 0), stage 1 + 2 m after the answer at
/// x' (weigh move m), stage 2 + 2 m after the answer at the midpoint (accept move m, then propose move m + 1). `s`
/// holds each row's final_move_scalars between tells. Thread 0 stores next_position.
/// A model answering scores is asked at (a_K, 0) and its answers are the scores. Any other (`points` set) is asked at
/// another channel, at the points `scale` v: the stage first turns the answer r at v into the score cx v + cr r
/// (the prior smoothed to that channel's noise: make_smc_plan), and last writes the next ask's points scale v.
struct final_move_stage_functor {
  final_move_functor f;
  final_move_scalars* s;  // B N
  std::int64_t stage;
  std::int64_t* position;
  std::int64_t next_position;
  float* points = nullptr;  // B N x d, row-major: the next ask's points, or nullptr (a model answering scores)
  float scale = 1.f, cx = 0.f, cr = 1.f;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const guided_params& p = f.p;
    const std::int64_t b = i / p.particles;
    final_move_row w = final_move_slices(p, f.x, f.g, f.xp, f.gp, f.n, f.gm, f.t, i);
    const final_move_constants c(p, f.q, b);
    final_move_scalars v = s[i];
    const int d = p.d;
    // (Each case names its own rows: a row chosen at run time would put w in local memory.)
    const auto to_score = [&](const strided_vec<float>& at, strided_vec<float>& r) {
      for (int j = 0; j < d; ++j) r[j] = cx * at[j] + cr * r[j];
    };
    if (points != nullptr) {  // the answer just given, at the points of this stage, into the score there
      if (stage == 0)
        to_score(w.x, w.g);
      else if (stage % 2 == 1)
        to_score(w.xp, w.gp);
      else
        to_score(w.n, w.gm);
    }
    bool proposed = false;
    if (stage == 0) {
      final_move_start(p, f.q, b, c, w, v);
      final_move_propose(p, f.q, i, b, 0, c, w, v);
      proposed = true;
    } else if (stage % 2 == 1) {
      final_move_weigh(p, f.q, b, c, w, v);
    } else {
      const int m = static_cast<int>((stage - 2) / 2);
      final_move_accept(p, w, v);
      proposed = m + 1 < f.q.moves;
      if (proposed) final_move_propose(p, f.q, i, b, m + 1, c, w, v);
    }
    s[i] = v;
    if (points != nullptr && (proposed || stage % 2 == 1)) {  // the next ask's points: x', or the midpoint
      strided_vec<float> next = particle_slice(0, points, i, d, 0, d);  // row-major, as the field says
      if (proposed)
        for (int j = 0; j < d; ++j) next[j] = scale * w.xp[j];
      else
        for (int j = 0; j < d; ++j) next[j] = scale * w.n[j];
    }
  }
};

/// to[e] = scale from[e]: the first points of the plan's final moves for a model asked at another channel.
struct scaled_copy_functor {
  const float* from;
  float* to;
  float scale;
  DS_HD void operator()(std::int64_t e) const { to[e] = scale * from[e]; }
};

/// Starts the per-problem accumulators.
struct guided_problem_init_functor {
  double* log_normaliser;
  double* previous_lse;
  std::int32_t* counts;
  double log_n;
  DS_HD void operator()(std::int64_t b) const {
    log_normaliser[b] = 0.0;
    previous_lse[b] = log_n;  // the initial weights are all one
    counts[b] = 0;
  }
};

/// Adds the host's FP64 constants to the log-normaliser estimates and copies the per-problem results out.
struct guided_finish_functor {
  const double* log_normaliser;
  const double* constants;
  const std::int32_t* counts;
  double* log_normaliser_out;        // B, or nullptr
  std::int32_t* resample_count_out;  // B, or nullptr
  DS_HD void operator()(std::int64_t b) const {
    if (log_normaliser_out != nullptr) log_normaliser_out[b] = log_normaliser[b] + constants[b];
    if (resample_count_out != nullptr) resample_count_out[b] = counts[b];
  }
};

}  // namespace diffsample::kernels
