// The stepwise runs of the guided samplers whose steps need more than one model evaluation (DCPS's Langevin blocks
// and gradient steps, TMPD's d_y Jacobian products per step): one launch per model evaluation, shared by the fused
// sampler on the CPU executor (answered by the mixture's denoiser and J v) and the ask/tell plan (answered by a
// caller's model), so that a plan fed the mixture reproduces the fused run. The per-step arithmetic is the fused
// functors' own halves (kernels/guided_dcps.cuh, kernels/guided_tmpd.cuh).
#pragma once

#include "kernels/config.cuh"
#include "kernels/guided_dcps.cuh"
#include "kernels/guided_tmpd.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// What the tell of one DCPS ask does with its answer (the ask's points: x, or the gradient step's draw q).
enum dcps_op : int {
  dcps_op_initial = 0,      // x = s_0 z (no answer)
  dcps_op_langevin_m = 1,   // Langevin step (l, t): the denoiser at x; then the update unless a J^T u ask follows
  dcps_op_langevin_ju = 2,  // Langevin step (l, t): J^T u at x; then the update
  dcps_op_step_m = 3,       // transition j: the denoiser at x; the kernel's mean, then the first draw q (or x_{j+1})
  dcps_op_gradient_m = 4,   // gradient step g of transition j: the denoiser at q; then the step unless J^T u follows
  dcps_op_gradient_ju = 5,  // gradient step g: J^T u at q; then the step and the next draw
};

/// One ask of a stepwise DCPS run, built on the host from the tables (src/guided_dcps.cu); the sequence depends only
/// on the options.
struct dcps_ask {
  int op;
  std::int64_t block, t, step, g;  // the Langevin step (block, t) or the gradient step g of transition `step`
  std::int64_t point;              // grid point of the channel
  float a, s;                      // the channel of the evaluation
  bool at_q;                       // the points are q (gradient steps), else x
  bool vector;                     // a J^T u ask (u in the rows' u)
};

/// The per-row buffers of a stepwise DCPS run: B N rows of d (x, m, u, grad, mu, l, eps, q) and of d_y (r, t);
/// u, grad, mu, l, eps and q equally spaced (dcps_scratch finds them from u and grad - u).
struct dcps_rows {
  float *x, *m, *u, *grad, *mu, *l, *eps, *q, *r, *t;
  /// Row i's scratch, J u read from `answer`.
  DS_HD_INLINE dcps_scratch at(std::int64_t i, int d, int dy, const float* answer) const {
    const std::int64_t o = i * d;
    return dcps_scratch{m + o, u + o, r + i * dy, 1, answer - m, 1, grad - u, t - r, d, dy};
  }
};

/// A potential's gradient at point v from the model's answer ai there: the denoiser m = ux v + um ai, the first half
/// (dcps_potential_vector) and, when the potential needs no J^T u ask (pot.cm == 0), the second; true when the
/// gradient is finished, false when it waits for the J^T u answer.
template <class V>
DS_HD_INLINE bool dcps_potential_from_answer(const dcps_params& p, std::int64_t b, const dcps_potential pot,
                                             const float* P, const V& v, float ux, float um, const float* ai,
                                             const dcps_scratch& w) {
  for (int c = 0; c < p.g.d; ++c) w.m()[c] = ds_fma(ux, v[c], um * ai[c]);
  dcps_potential_vector(p, b, pot, P, v, w);
  if (pot.cm != 0.f) return false;
  dcps_potential_finish(p, pot, w);
  return true;
}

/// The tell of one ask over the B N rows (one launch). Particle i of problem b draws from the stream
/// id_base + guided_stream(p.g, i, b) (id_base: a plan's trajectory, in device memory; null for 0).
struct dcps_stage_functor {
  dcps_params p;
  dcps_rows rows;
  const float* answer;  // B N x d: the model's output (converted to the denoiser by ux x + um answer) or J^T u
  int op;
  std::int64_t l, t, j, g;
  float ux, um;
  const std::uint64_t* id_base;
  std::int64_t* position;  // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const int d = p.g.d, dy = p.g.d_y;
    const std::int64_t b = i / p.g.particles;
    const std::uint64_t id = (id_base != nullptr ? *id_base : 0) + guided_stream(p.g, i, b);
    const dcps_scratch w = rows.at(i, d, dy, answer);
    strided_vec<float> x{rows.x + i * d, 1, d};
    const strided_vec<const float> q{w.gl().p, 1, d};
    const float* ai = answer + i * d;
    switch (op) {
      case dcps_op_initial: {
        philox rng(p.g.seed, id, 0);
        const float s0 = p.initial_scale;
        rng.normals(d, [&](int c, float z) { x[c] = s0 * z; });
        return;
      }
      case dcps_op_langevin_m:
        if (dcps_potential_from_answer(p, b, p.blocks[l].start, dcps_block_precision(p, l, b), x, ux, um, ai, w))
          dcps_langevin_update(p, id, b, l, t, x, w);
        return;
      case dcps_op_langevin_ju:
        dcps_potential_finish(p, p.blocks[l].start, w);
        dcps_langevin_update(p, id, b, l, t, x, w);
        return;
      case dcps_op_step_m:
        for (int c = 0; c < d; ++c) w.m()[c] = ds_fma(ux, x[c], um * ai[c]);
        if (dcps_transition_start(p, j, x, w)) dcps_gradient_draw(p, id, j, 0, x, w);
        return;
      case dcps_op_gradient_m:
        if (dcps_potential_from_answer(p, b, p.steps[j].next, dcps_step_precision(p, j, b), q, ux, um, ai, w)) {
          dcps_gradient_update(p, b, j, x, w);
          dcps_gradient_draw(p, id, j, g + 1, x, w);
        }
        return;
      case dcps_op_gradient_ju:
        dcps_potential_finish(p, p.steps[j].next, w);
        dcps_gradient_update(p, b, j, x, w);
        dcps_gradient_draw(p, id, j, g + 1, x, w);
        return;
      default: return;
    }
  }
};

/// What the tell of one TMPD ask does: step k asks for the model's output at x (then v = a_0, the first row of
/// A_b), then for J^T a_o, o = 0 .. d_y - 1 (kept as row o of the products; after the last, the covariance, its
/// factor and the update of x).
enum tmpd_op : int {
  tmpd_op_initial = 0,  // x = s_0 z (no answer)
  tmpd_op_m = 1,        // the denoiser at x: m, r = y - A m, v = a_0
  tmpd_op_ju = 2,       // J^T a_o at x: row o; then v = a_{o+1}, or the update after the last row
};

/// How the last product's tell of a TMPD step ends (tmpd_stage_functor::finish).
constexpr int tmpd_finish_all = 0, tmpd_finish_rows = 1, tmpd_finish_update = 2;

/// The per-row buffers of a stepwise TMPD run: B N rows of x, m, v (d), the products (d_y x d), r (d_y), and in
/// FP64 the covariance (d_y x d_y) and f (d_y).
struct tmpd_rows {
  float *x, *m, *v, *jrows, *r;
  double *cyy, *f;
  /// Row i's scratch; its jv slot holds the vector v of the next product ask (the products come from the answers).
  DS_HD_INLINE tmpd_scratch at(std::int64_t i, int d, int dy) const {
    const std::int64_t o = i * d, oy = i * dy;
    return tmpd_scratch{{m + o, 1, d}, {v + o, 1, d}, {jrows + oy * d, 1, dy * d}, {r + oy, 1, dy}, cyy + oy * dy,
                        f + oy};
  }
};

/// The tell of one TMPD ask over the B N rows (one launch). Particle i of problem b draws from the stream
/// id_base + guided_stream(p, i, b) (id_base: a plan's trajectory, in device memory; null for 0). A particle whose covariance
/// was not positive definite is NaN, and stays NaN, as in the fused functor.
struct tmpd_stage_functor {
  guided_params p;
  tmpd_rows rows;
  const float* answer;  // B N x d: the model's output (converted to the denoiser by ux x + um answer) or J^T a_o
  int op, o;
  std::int64_t k;
  float ux, um, scale;
  const float* sigma2;  // B values of sigma_y^2
  const std::uint64_t* id_base;
  std::int64_t* position;  // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  // The last product's tell: tmpd_finish_all (the covariance per particle, then the update), or split around
  // covariances formed as one product over all particles (src/operator_gemm.hpp): tmpd_finish_rows stores the last
  // row only, tmpd_finish_update runs the update from rows.cyy.
  int finish = tmpd_finish_all;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const int d = p.d, dy = p.d_y;
    const std::int64_t b = i / p.particles;
    const std::uint64_t id = (id_base != nullptr ? *id_base : 0) + guided_stream(p, i, b);
    const tmpd_scratch w = rows.at(i, d, dy);
    strided_vec<float> x{rows.x + i * d, 1, d}, v = w.jv, m = w.m, r = w.r;
    const float* ai = answer + i * d;
    if (op == tmpd_op_initial) {
      philox rng(p.seed, id, 0);
      const float s0 = p.initial_scale;
      rng.normals(d, [&](int c, float z) { x[c] = s0 * z; });
      return;
    }
    if (op == tmpd_op_m) {
      for (int c = 0; c < d; ++c) m[c] = ds_fma(ux, x[c], um * ai[c]);
      guided_residual(p, b, 1.f, m, r);
      tmpd_row(p, b, 0, v);
      return;
    }
    const strided_vec<float> jo = w.jrow(o);
    if (finish != tmpd_finish_update)
      for (int c = 0; c < d; ++c) jo[c] = ai[c];
    if (o + 1 < dy) {
      tmpd_row(p, b, o + 1, v);
      return;
    }
    if (finish == tmpd_finish_rows) return;
    const guided_step st = p.steps[k];
    if (finish == tmpd_finish_all) tmpd_covariance(p, b, st.a, st.s, sigma2[b], w);
    (void)tmpd_update(p, id, k, scale, x, w);
  }
};

}  // namespace diffsample::kernels
