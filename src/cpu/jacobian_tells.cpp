// TMPD's and DCPS's tells on packs of particles of one problem, on one dispatch target (DS_SIMD_TARGET, see
// src/cpu/simd.hpp; declared in src/cpu/jacobian_tells.hpp): the stage functors' arithmetic of
// kernels/guided_stepwise.cuh lane by lane (kernels/guided_tmpd.cuh, kernels/guided_dcps.cuh), the operator, the
// observation and the precision tables broadcast, the normals drawn a pack at a time from the lanes' Philox streams
// (consecutive particles of one problem: consecutive streams), TMPD's d_y x d_y system in FP64 packs. Each tell
// reads its pack's rows of the stepwise buffers and writes back what a later tell reads. Built without FMA
// contraction (CMakeLists.txt) and with the functors' operations in their order (ds_fma is a b + c on the host), so
// a lane rounds as the scalar functor does: only the normals (vector log and sincos) and DCPS's exp differ from
// the scalar target's in the last bits.
#include "src/cpu/jacobian_tells.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/guided_stepwise.cuh"
#include "src/cpu/guided_packs.hpp"
#include "src/cpu/pack_cores.hpp"
#include "src/cpu/pool.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

typedef double vd __attribute__((vector_size(lanes * 8)));
typedef std::int64_t vl __attribute__((vector_size(lanes * 8)));

/// Per-thread packs of the tells (apart from the buffers of the answers' cores, which a fused run interleaves).
fpack* tell_packs(std::int64_t count) {
  static thread_local std::vector<fpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}
/// An FP64 pack in a struct of this target's namespace: std::vector of a bare vector type would be one template
/// instance shared with other targets' objects (a vector of 8 doubles is AVX2's pack here and AVX-512's half pack in
/// src/cpu/projection.cpp), compiled for either instruction set.
struct dpack {
  vd v;
};
vd* tell_doubles(std::int64_t count) {
  static thread_local std::vector<dpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return &buffer.data()->v;
}
float* tell_floats(std::int64_t count) {
  static thread_local std::vector<float> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// FP64 packs are twice a float pack's width: no function takes or returns one (the ABI's vector arguments differ
// by target), the conversions are written in place.
#define DS_WIDEN(x) __builtin_convertvector((x).v, vd)

/// u += A_b^T t (t: d_y packs), the terms in guided_add_rows' order.
void add_rows(const kernels::guided_params& p, std::int64_t b, const fpack* t, fpack* u) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o) u[index[o]] = u[index[o]] + t[o] * fpack(A[o]);
    return;
  }
  for (int j = 0; j < p.d; ++j) {
    fpack acc = u[j];
    for (int o = 0; o < p.d_y; ++o) acc = acc + t[o] * fpack(A[static_cast<std::int64_t>(o) * p.d + j]);
    u[j] = acc;
  }
}

// --- TMPD ---------------------------------------------------------------------------------------------------------

/// Row o of A_b (kernels::tmpd_row) into the rows of v of the pack.
void store_operator_row(const kernels::guided_params& p, const pack_rows& pk, int o, float* v) {
  const int d = p.d;
  float* row = tell_floats(d);
  kernels::tmpd_row(p, pk.b, o, row);
  for (int l = 0; l < pk.valid; ++l) std::memcpy(v + (pk.i0 + l) * d, row, sizeof(float) * d);
}

/// The last product's tell on a pack in packs: cyy = sym(A C A^T) + sigma_y^2 I (kernels::tmpd_covariance, from the
/// products jr: d_y x d packs), its factor (kernels::cholesky_failure_scaled), f = cyy^-1 r and the update of x
/// (kernels::tmpd_update), lane by lane; leaves x' in xs. g: d packs, fo: d_y packs of scratch. Not inlined: the
/// plan's tell and the fused run execute the same code on a pack.
__attribute__((noinline)) void tmpd_update_packs(const kernels::tmpd_stage_functor& f, const pack_rows& pk,
                                                 const fpack* jr, fpack* xs, const fpack* ms, const fpack* r,
                                                 fpack* g, fpack* fo) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const kernels::guided_step st = p.steps[f.k];
  vd* c = tell_doubles(static_cast<std::int64_t>(dy) * dy + dy);
  vd* fv = c + static_cast<std::int64_t>(dy) * dy;
  const double ratio = double(st.s) * double(st.s) / double(st.a);
  for (int q = 0; q < dy; ++q) {
    const fpack* jq = jr + static_cast<std::int64_t>(q) * d;
    for (int o = 0; o < dy; ++o) {
      vd acc = vd{};
      if (p.mask != nullptr) {
        const std::int64_t base = b * p.A_stride;
        acc = double(p.A[base + o]) * DS_WIDEN(jq[p.mask[base + o]]);
      } else {
        const float* Arow = p.A + b * p.A_stride + static_cast<std::int64_t>(o) * d;
        for (int j = 0; j < d; ++j) acc += double(Arow[j]) * DS_WIDEN(jq[j]);
      }
      c[o * dy + q] = ratio * acc;
    }
  }
  for (int o = 0; o < dy; ++o) {
    for (int q = 0; q < o; ++q) {
      const vd v = 0.5 * (c[o * dy + q] + c[q * dy + o]);
      c[o * dy + q] = v;
      c[q * dy + o] = v;
    }
    c[o * dy + o] += double(f.sigma2[b]);
  }
  // kernels::cholesky_failure_scaled in every lane (each pivot against its own diagonal entry, as
  // kernels::tmpd_update); a failed lane goes on with meaningless values and ends NaN.
  vl failed = vl{};
  for (int j = 0; j < dy; ++j) {
    const vd own = c[j * dy + j];
    vd pivot = own;
    for (int k = 0; k < j; ++k) pivot -= c[j * dy + k] * c[j * dy + k];
    const vl finite = (pivot <= 1.7976931348623157e308) & (pivot >= -1.7976931348623157e308);
    failed |= ~(pivot > 1e-13 * own) | ~finite;
    vd root = pivot;
    for (int l = 0; l < lanes; ++l) root[l] = __builtin_sqrt(root[l]);
    c[j * dy + j] = root;
    for (int i = j + 1; i < dy; ++i) {
      vd v = c[i * dy + j];
      for (int k = 0; k < j; ++k) v -= c[i * dy + k] * c[j * dy + k];
      c[i * dy + j] = v / root;
    }
    for (int i = 0; i < j; ++i) c[i * dy + j] = vd{};
  }
  for (int o = 0; o < dy; ++o) fv[o] = DS_WIDEN(r[o]);
  for (int i = 0; i < dy; ++i) {  // kernels::forward_substitute
    vd v = fv[i];
    for (int k = 0; k < i; ++k) v -= c[i * dy + k] * fv[k];
    fv[i] = v / c[i * dy + i];
  }
  for (int i = dy - 1; i >= 0; --i) {  // kernels::back_substitute_transposed
    vd v = fv[i];
    for (int k = i + 1; k < dy; ++k) v -= c[k * dy + i] * fv[k];
    fv[i] = v / c[i * dy + i];
  }
  for (int o = 0; o < dy; ++o) fo[o] = fpack(__builtin_convertvector(fv[o], vf));
  for (int j = 0; j < d; ++j) {  // g_j = sum_o f_o (J a_o)_j
    fpack acc(0.f);
    for (int o = 0; o < dy; ++o) acc = acc + fo[o] * jr[static_cast<std::int64_t>(o) * d + j];
    g[j] = acc;
  }
  const fpack c0(st.c0), c1(st.c1), shift(f.scale * st.guidance), sig(st.sig);
  if (st.sig != 0.f) {
    const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p, pk.i0, b);
    philox_pack rng(p.seed, id, static_cast<std::uint64_t>(f.k) + 1);
    rng.normals(d, [&](int j, fpack z) { xs[j] = c0 * ms[j] + c1 * xs[j] + shift * g[j] + sig * z; });
  } else {
    for (int j = 0; j < d; ++j) xs[j] = c0 * ms[j] + c1 * xs[j] + shift * g[j];
  }
  // vl and vi lanes line up (lane l of both is particle l): narrow the 64-bit mask to the pack's.
  const mpack dead{__builtin_convertvector(failed, vi)};
  for (int j = 0; j < d; ++j) xs[j] = ds_select(dead, fpack(NAN), xs[j]);
}

/// The plan's last product's tell on a pack: the products, x, m and r from their rows, tmpd_update_packs, x stored.
void tmpd_update_pack(const kernels::tmpd_stage_functor& f, const pack_rows& pk) {
  const int d = f.p.d, dy = f.p.d_y;
  const std::int64_t dyd = static_cast<std::int64_t>(dy) * d;
  fpack* s = tell_packs(dyd + 3 * static_cast<std::int64_t>(d) + 2 * dy);
  fpack *jr = s, *xs = jr + dyd, *ms = xs + d, *g = ms + d, *r = g + d, *fo = r + dy;
  pk.load(jr, f.rows.jrows, static_cast<int>(dyd));
  pk.load(r, f.rows.r, dy);
  pk.load(xs, f.rows.x, d);
  pk.load(ms, f.rows.m, d);
  tmpd_update_packs(f, pk, jr, xs, ms, r, g, fo);
  pk.store(xs, f.rows.x, d);
}

/// The denoiser's tell on a pack in packs: m = ux x + um answer (ms holds the answer on entry), r = y - A m.
__attribute__((noinline)) void tmpd_m_packs(const kernels::tmpd_stage_functor& f, const pack_rows& pk,
                                            const fpack* xs, fpack* ms, fpack* r) {
  const fpack ux(f.ux), um(f.um);
  for (int j = 0; j < f.p.d; ++j) ms[j] = ux * xs[j] + um * ms[j];
  residual(f.p, pk.b, 1.f, ms, r);
}

void tmpd_tell_pack(const kernels::tmpd_stage_functor& f, const pack_rows& pk) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  if (f.op == kernels::tmpd_op_initial || f.finish != kernels::tmpd_finish_all) {
    for (int l = 0; l < pk.valid; ++l) f(pk.i0 + l);
    return;
  }
  if (f.op == kernels::tmpd_op_m) {  // m = ux x + um answer, r = y - A m, v = a_0
    fpack* s = tell_packs(2 * static_cast<std::int64_t>(d) + dy);
    fpack *xs = s, *ms = xs + d, *r = ms + d;
    pk.load(xs, f.rows.x, d);
    pk.load(ms, f.answer, d);
    tmpd_m_packs(f, pk, xs, ms, r);
    pk.store(ms, f.rows.m, d);
    pk.store(r, f.rows.r, dy);
    store_operator_row(p, pk, 0, f.rows.v);
    return;
  }
  // J a_o: row o of the products, then v = a_{o+1} or, after the last, the update.
  const std::int64_t dyd = static_cast<std::int64_t>(dy) * d;
  for (int l = 0; l < pk.valid; ++l)
    std::memcpy(f.rows.jrows + (pk.i0 + l) * dyd + static_cast<std::int64_t>(f.o) * d, f.answer + (pk.i0 + l) * d,
                sizeof(float) * d);
  if (f.o + 1 < dy) {
    store_operator_row(p, pk, f.o + 1, f.rows.v);
    return;
  }
  tmpd_update_pack(f, pk);
}

// --- DCPS ---------------------------------------------------------------------------------------------------------

/// The packs of one DCPS tell: the vectors of d of kernels::dcps_scratch (q its gl) and x, then r and t.
struct dcps_packs {
  fpack *x, *m, *u, *ju, *grad, *mu, *l, *eps, *q, *r, *t;
  dcps_packs(int d, int dy) {
    fpack* s = tell_packs(10 * static_cast<std::int64_t>(d) + 2 * dy);
    fpack** v[] = {&x, &m, &u, &ju, &grad, &mu, &l, &eps, &q, &r};
    for (int k = 0; k < 10; ++k) *v[k] = s + static_cast<std::int64_t>(k) * d;
    t = r + dy;
  }
};

/// kernels::dcps_potential_vector: u = A^T P (a_T y - A (cx q + cm m)).
void potential_vector(const kernels::dcps_params& p, std::int64_t b, const kernels::dcps_potential& pot,
                      const float* P, const fpack* q, const dcps_packs& w) {
  const int d = p.g.d, dy = p.g.d_y;
  const fpack cx(pot.cx), cm(pot.cm);
  for (int j = 0; j < d; ++j) w.grad[j] = cx * q[j] + cm * w.m[j];
  residual(p.g, b, pot.a_target, w.grad, w.r);
  for (int o = 0; o < dy; ++o) {
    fpack acc(0.f);
    for (int c = 0; c < dy; ++c) acc = acc + fpack(P[o * dy + c]) * w.r[c];
    w.t[o] = acc;
  }
  for (int j = 0; j < d; ++j) w.u[j] = fpack(0.f);
  add_rows(p.g, b, w.t, w.u);
}

/// kernels::dcps_potential_finish: grad = cx u + cm J u (cm = 0: cx u).
void potential_finish(const kernels::dcps_params& p, const kernels::dcps_potential& pot, const dcps_packs& w) {
  const int d = p.g.d;
  const fpack cx(pot.cx), cm(pot.cm);
  if (pot.cm != 0.f) {
    for (int j = 0; j < d; ++j) w.grad[j] = cx * w.u[j] + cm * w.ju[j];
  } else {
    for (int j = 0; j < d; ++j) w.grad[j] = cx * w.u[j];
  }
}

/// kernels::dcps_langevin_update (over the table's scale).
void langevin_update(const kernels::dcps_params& p, std::uint64_t id, std::int64_t b, std::int64_t l, std::int64_t t,
                     const dcps_packs& w) {
  const int d = p.g.d;
  const kernels::dcps_potential pot = p.blocks[l].start;
  const float inv_scale = kernels::dcps_block_inv_scale(p, l, b);
  const fpack inv_s2(1.f / (pot.s * pot.s) * inv_scale), a(pot.a);
  fpack top(0.f);
  for (int j = 0; j < d; ++j) {
    const fpack gj = (a * w.m[j] - w.x[j]) * inv_s2 + w.grad[j];
    w.grad[j] = gj;
    top = ds_max(top, ds_abs(gj));
  }
  const fpack gamma(p.gamma);
  const fpack step = gamma / (fpack(inv_scale) + gamma * kernels::dcps_scaled_norm(w.grad, d, top));
  const fpack noise(kernels::ds_sqrt(2.f * p.gamma));
  philox_pack rng(p.g.seed, id, kernels::dcps_counter_langevin(p, l, t));
  rng.normals(d, [&](int j, fpack z) { w.x[j] = w.x[j] + step * w.grad[j] + noise * z; });
}

/// kernels::dcps_gradient_draw: q = mu + e^l eps (g < G) or x = mu + e^l z (g = G).
void gradient_draw(const kernels::dcps_params& p, std::uint64_t id, std::int64_t j, std::int64_t g,
                   const dcps_packs& w) {
  const int d = p.g.d;
  philox_pack rng(p.g.seed, id, kernels::dcps_counter_step(p, j, g));
  if (g < p.gradient_steps) {
    rng.normals(d, [&](int c, fpack z) {
      w.eps[c] = z;
      w.q[c] = w.mu[c] + ds_exp(w.l[c]) * z;
    });
  } else {
    rng.normals(d, [&](int c, fpack z) { w.x[c] = w.mu[c] + ds_exp(w.l[c]) * z; });
  }
}

/// kernels::dcps_gradient_update (over the table's scale; x holds mu_p; u and q are scratch).
void gradient_update(const kernels::dcps_params& p, std::int64_t b, std::int64_t j, const dcps_packs& w) {
  const int d = p.g.d;
  const kernels::dcps_step st = p.steps[j];
  const float inv_scale_1 = kernels::dcps_step_inv_scale(p, j, b);
  const fpack inv_scale(inv_scale_1);
  const fpack inv_sig2(1.f / (st.sig * st.sig)), inv_sig2_scaled(1.f / (st.sig * st.sig) * inv_scale_1);
  const float root_d = kernels::ds_sqrt(float(d));
  const fpack lr_mu(p.absolute_step ? p.rho : p.rho * st.sig * root_d);
  const fpack lr_l(p.absolute_step ? p.rho : p.rho * root_d);
  fpack top_mu(0.f), top_l(0.f);
  for (int c = 0; c < d; ++c) {
    const fpack sd = ds_exp(w.l[c]);
    const fpack gm = -w.grad[c] + (w.mu[c] - w.x[c]) * inv_sig2_scaled;
    const fpack gv = -w.grad[c] * sd * w.eps[c] + sd * sd * inv_sig2 * inv_scale - inv_scale;
    w.u[c] = gm;
    w.q[c] = gv;
    top_mu = ds_max(top_mu, ds_abs(gm));
    top_l = ds_max(top_l, ds_abs(gv));
  }
  const fpack guard(1e-30f * inv_scale_1), zero(0.f);
  const fpack den_mu = guard + kernels::dcps_scaled_norm(w.u, d, top_mu);
  const fpack den_l = guard + kernels::dcps_scaled_norm(w.q, d, top_l);
  const fpack s_mu = ds_select(den_mu > zero, lr_mu / den_mu, zero);
  const fpack s_l = ds_select(den_l > zero, lr_l / den_l, zero);
  for (int c = 0; c < d; ++c) {
    w.mu[c] = w.mu[c] - s_mu * w.u[c];
    w.l[c] = w.l[c] - s_l * w.q[c];
  }
}

/// The end of a gradient step (kernels::dcps_stage_functor's gradient ops) on packs: grad log beta from u and J u,
/// the step on (mu, l) from x (mu_p), l and eps, the next draw (eps and q, or x after the last step).
void gradient_step(const kernels::dcps_stage_functor& f, std::int64_t b, std::uint64_t id, const dcps_packs& w) {
  const kernels::dcps_params& p = f.p;
  potential_finish(p, p.steps[f.j].next, w);
  gradient_update(p, b, f.j, w);
  gradient_draw(p, id, f.j, f.g + 1, w);
}

/// One DCPS tell (ops langevin_m .. gradient_ju) on a pack whose inputs are in the packs w, the answer in w.m (the
/// denoiser's ops, before its conversion m = ux x + um answer) or in w.ju (the J u ops); the results left in w. Not
/// inlined: the plan's tell and the fused run execute the same code on a pack.
__attribute__((noinline)) void dcps_tell_packs(const kernels::dcps_stage_functor& f, const pack_rows& pk,
                                               std::uint64_t id, const dcps_packs& w) {
  const kernels::dcps_params& p = f.p;
  const int d = p.g.d;
  const std::int64_t b = pk.b;
  const fpack ux(f.ux), um(f.um);
  switch (f.op) {
    case kernels::dcps_op_langevin_m: {
      for (int c = 0; c < d; ++c) w.m[c] = ux * w.x[c] + um * w.m[c];
      const kernels::dcps_potential pot = p.blocks[f.l].start;
      potential_vector(p, b, pot, kernels::dcps_block_precision(p, f.l, b), w.x, w);
      if (pot.cm != 0.f) return;  // J u next: its tell reads m and u
      potential_finish(p, pot, w);
      langevin_update(p, id, b, f.l, f.t, w);
      return;
    }
    case kernels::dcps_op_langevin_ju:
      potential_finish(p, p.blocks[f.l].start, w);
      langevin_update(p, id, b, f.l, f.t, w);
      return;
    case kernels::dcps_op_step_m: {  // kernels::dcps_transition_start, then the first draw
      for (int c = 0; c < d; ++c) w.m[c] = ux * w.x[c] + um * w.m[c];
      const kernels::dcps_step st = p.steps[f.j];
      const fpack c0(st.c0), c1(st.c1);
      for (int c = 0; c < d; ++c) w.mu[c] = c0 * w.m[c] + c1 * w.x[c];
      for (int c = 0; c < d; ++c) w.x[c] = w.mu[c];
      if (st.sig != 0.f) {
        const fpack log_sig(kernels::ds_log(st.sig));
        for (int c = 0; c < d; ++c) w.l[c] = log_sig;
        gradient_draw(p, id, f.j, 0, w);
      }
      return;
    }
    case kernels::dcps_op_gradient_m: {
      for (int c = 0; c < d; ++c) w.m[c] = ux * w.q[c] + um * w.m[c];
      const kernels::dcps_potential pot = p.steps[f.j].next;
      potential_vector(p, b, pot, kernels::dcps_step_precision(p, f.j, b), w.q, w);
      if (pot.cm != 0.f) return;  // J u next: its tell reads u
      gradient_step(f, b, id, w);
      return;
    }
    case kernels::dcps_op_gradient_ju:
      gradient_step(f, b, id, w);
      return;
    default: return;
  }
}

/// The rows a gradient step reads (x holds mu_p) and writes.
void load_gradient_rows(const kernels::dcps_stage_functor& f, const pack_rows& pk, const dcps_packs& w) {
  const int d = f.p.g.d;
  pk.load(w.x, f.rows.x, d);
  pk.load(w.mu, f.rows.mu, d);
  pk.load(w.l, f.rows.l, d);
  pk.load(w.eps, f.rows.eps, d);
}
void store_gradient_rows(const kernels::dcps_stage_functor& f, const pack_rows& pk, const dcps_packs& w) {
  const int d = f.p.g.d;
  pk.store(w.mu, f.rows.mu, d);
  pk.store(w.l, f.rows.l, d);
  if (f.g + 1 < f.p.gradient_steps) {
    pk.store(w.eps, f.rows.eps, d);
    pk.store(w.q, f.rows.q, d);
  } else {
    pk.store(w.x, f.rows.x, d);
  }
}

/// The plan's tell on a pack: what the op reads from its rows and the answer, dcps_tell_packs, what a later tell
/// reads stored.
void dcps_tell_pack(const kernels::dcps_stage_functor& f, const pack_rows& pk) {
  const kernels::dcps_params& p = f.p;
  const int d = p.g.d, dy = p.g.d_y;
  if (f.op == kernels::dcps_op_initial || f.op > kernels::dcps_op_gradient_ju) {
    for (int l = 0; l < pk.valid; ++l) f(pk.i0 + l);
    return;
  }
  const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p.g, pk.i0, pk.b);
  const kernels::dcps_rows& rows = f.rows;
  const dcps_packs w(d, dy);
  switch (f.op) {
    case kernels::dcps_op_langevin_m:
      pk.load(w.x, rows.x, d);
      pk.load(w.m, f.answer, d);
      dcps_tell_packs(f, pk, id, w);
      if (p.blocks[f.l].start.cm != 0.f) {  // J u next: its tell reads m and u
        pk.store(w.m, rows.m, d);
        pk.store(w.u, rows.u, d);
      } else {
        pk.store(w.x, rows.x, d);
      }
      return;
    case kernels::dcps_op_langevin_ju:
      pk.load(w.x, rows.x, d);
      pk.load(w.m, rows.m, d);
      pk.load(w.u, rows.u, d);
      pk.load(w.ju, f.answer, d);
      dcps_tell_packs(f, pk, id, w);
      pk.store(w.x, rows.x, d);
      return;
    case kernels::dcps_op_step_m:
      pk.load(w.x, rows.x, d);
      pk.load(w.m, f.answer, d);
      dcps_tell_packs(f, pk, id, w);
      if (p.steps[f.j].sig != 0.f) {
        pk.store(w.mu, rows.mu, d);
        pk.store(w.l, rows.l, d);
        if (p.gradient_steps > 0) {
          pk.store(w.eps, rows.eps, d);
          pk.store(w.q, rows.q, d);
        }
      }
      pk.store(w.x, rows.x, d);
      return;
    case kernels::dcps_op_gradient_m: {
      pk.load(w.q, rows.q, d);
      pk.load(w.m, f.answer, d);
      const bool ju_next = p.steps[f.j].next.cm != 0.f;
      if (!ju_next) load_gradient_rows(f, pk, w);
      dcps_tell_packs(f, pk, id, w);
      if (ju_next)  // J u next: its tell reads u
        pk.store(w.u, rows.u, d);
      else
        store_gradient_rows(f, pk, w);
      return;
    }
    case kernels::dcps_op_gradient_ju:
      pk.load(w.u, rows.u, d);
      pk.load(w.ju, f.answer, d);
      load_gradient_rows(f, pk, w);
      dcps_tell_packs(f, pk, id, w);
      store_gradient_rows(f, pk, w);
      return;
    default: return;
  }
}

}  // namespace

void run_tmpd_tell(const kernels::tmpd_stage_functor& f) {
  if (f.position != nullptr) *f.position = f.next_position;
  kernels::tmpd_stage_functor g = f;
  g.position = nullptr;
  for_each_particle_pack(g.p, 0, [&](const pack_rows& pk, fpack*) { tmpd_tell_pack(g, pk); });
}


// TMPD's fused run with each pack's particles kept in packs (stepwise_run::tmpd): ask a of the run is step
// a / (1 + d_y)'s denoiser (a % (1 + d_y) == 0) or its product with row a % (1 + d_y) - 1 of A. The state between
// asks is x, m, r and the products so far, in packs; the rows of x are written after the run's last ask, and those
// of m, r and the products as well when the run ends within a step (a group of asks of run_fused_stepwise), read
// back when one starts within a step. The vectors of the products are the rows of A as store_operator_row writes
// them, broadcast.
void run_tmpd_stepwise(const stepwise_run& run) {
  const kernels::tmpd_stage_functor& f0 = *run.tmpd;
  const kernels::guided_params& p = f0.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t dyd = static_cast<std::int64_t>(dy) * d, per = 1 + dy;
  const bool starts_within = run.first_ask % per != 0, ends_within = (run.first_ask + run.count) % per != 0;
  for_each_particle_pack(p, jvp_scratch_packs(d, run.asks[0].channel), [&](const pack_rows& pk, fpack* js) {
    fpack* s = tell_packs(dyd + 4 * static_cast<std::int64_t>(d) + 2 * dy);
    fpack *jr = s, *xs = jr + dyd, *ms = xs + d, *g = ms + d, *r = g + d, *fo = r + dy, *vs = fo + dy;
    float* row = tell_floats(d);
    pk.load(xs, f0.rows.x, d);
    if (starts_within) {
      pk.load(ms, f0.rows.m, d);
      pk.load(r, f0.rows.r, dy);
      pk.load(jr, f0.rows.jrows, static_cast<int>(dyd));
    }
    kernels::tmpd_stage_functor f = f0;
    for (std::int64_t a = 0; a < run.count; ++a) {
      const std::int64_t at = run.first_ask + a;
      f.k = at / per;
      const int q = static_cast<int>(at - f.k * per);
      if (q == 0) {
        evaluate_packs(run.asks[a].channel, run.asks[a].what, xs, ms, nullptr, d);
        tmpd_m_packs(f, pk, xs, ms, r);
        continue;
      }
      f.o = q - 1;
      kernels::tmpd_row(p, pk.b, f.o, row);
      for (int j = 0; j < d; ++j) vs[j] = fpack(row[j]);
      denoiser_jvp_packs(run.asks[a].channel, xs, vs, jr + static_cast<std::int64_t>(f.o) * d, js, d);
      if (q == dy) tmpd_update_packs(f, pk, jr, xs, ms, r, g, fo);
    }
    pk.store(xs, f0.rows.x, d);
    if (ends_within) {
      pk.store(ms, f0.rows.m, d);
      pk.store(r, f0.rows.r, dy);
      pk.store(jr, f0.rows.jrows, static_cast<int>(dyd));
    }
  });
}

// DCPS's fused run with each pack's particles kept in packs (stepwise_run::dcps: ask a's tell is the functor dcps
// with the op and indices of dcps_asks[first_ask + a]): the denoiser or J u at the pack's x or q (the gradient ops'
// points) into its m or ju, then dcps_tell_packs; the packs of the plan's rows (x, m, u, mu, l, eps, q) hold what
// those rows would. The rows of x are written after the run's last ask, and all of them when more asks follow (the
// next group of asks of run_fused_stepwise), which reads them back.
void run_dcps_stepwise(const stepwise_run& run) {
  const kernels::dcps_ask* asks = run.dcps_asks + run.first_ask;
  const kernels::dcps_params& p = run.dcps->p;
  const kernels::dcps_rows& rows = run.dcps->rows;
  const int d = p.g.d, dy = p.g.d_y;
  const bool resumed = run.first_ask > 0, more = run.first_ask + run.count < run.total;
  for_each_particle_pack(p.g, jvp_scratch_packs(d, run.asks[0].channel), [&](const pack_rows& pk, fpack* js) {
    const dcps_packs w(d, dy);
    float* const row_of[] = {rows.m, rows.u, rows.mu, rows.l, rows.eps, rows.q};
    fpack* const pack_of[] = {w.m, w.u, w.mu, w.l, w.eps, w.q};
    pk.load(w.x, rows.x, d);
    if (resumed)
      for (int v = 0; v < 6; ++v) pk.load(pack_of[v], row_of[v], d);
    kernels::dcps_stage_functor f = *run.dcps;
    for (std::int64_t a = 0; a < run.count; ++a) {
      f.op = asks[a].op;  // ask a's tell, as the plan's (make_dcps_plan's stage())
      f.l = asks[a].block;
      f.t = asks[a].t;
      f.j = asks[a].step;
      f.g = asks[a].g;
      const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p.g, pk.i0, pk.b);
      const bool at_q = f.op == kernels::dcps_op_gradient_m || f.op == kernels::dcps_op_gradient_ju;
      if (f.op == kernels::dcps_op_langevin_ju || f.op == kernels::dcps_op_gradient_ju)
        denoiser_jvp_packs(run.asks[a].channel, at_q ? w.q : w.x, w.u, w.ju, js, d);
      else
        evaluate_packs(run.asks[a].channel, run.asks[a].what, at_q ? w.q : w.x, w.m, nullptr, d);
      dcps_tell_packs(f, pk, id, w);
    }
    pk.store(w.x, rows.x, d);
    if (more)
      for (int v = 0; v < 6; ++v) pk.store(pack_of[v], row_of[v], d);
  });
}

void run_dcps_tell(const kernels::dcps_stage_functor& f) {
  if (f.position != nullptr) *f.position = f.next_position;
  kernels::dcps_stage_functor g = f;
  g.position = nullptr;
  for_each_particle_pack(g.p.g, 0, [&](const pack_rows& pk, fpack*) { dcps_tell_pack(g, pk); });
}


#undef DS_WIDEN

}  // namespace diffsample::cpu::DS_SIMD_NS
