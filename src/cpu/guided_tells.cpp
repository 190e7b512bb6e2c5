// The ask/tell plans' tells of DDRM, SKRock and the SMC's moment-projected and twisted weightings on one dispatch
// target (DS_SIMD_TARGET, see src/cpu/simd.hpp), over packs of `lanes` particles of one problem
// (src/cpu/guided_tells.hpp): the functors' arithmetic lane by lane, the problem's tables broadcast, the normals from
// the packs' Philox streams. Vectors of d (or r, d_y) packs live in per-thread workspace.
#include "src/cpu/guided_tells.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "src/cpu/guided_packs.hpp"
#include "src/cpu/pack_cores.hpp"
#include "src/cpu/simd.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

/// The tells' per-thread workspace on a fused run's rows (apart from the buffers of the answers' cores).
fpack* tell_packs(std::int64_t count) {
  static thread_local std::vector<fpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

/// A packed tell whose pack step is pack(f, pk, s) with `scratch` packs of scratch, over every particle (thread 0's
/// position store first; shape gives the problems and particles). pack is a template argument, so that the call
/// stays direct.
template <auto pack, class F>
void tell_every_particle(const F& f, const kernels::guided_params& shape, std::int64_t scratch) {
  if (f.position != nullptr) *f.position = f.next_position;
  for_each_particle_pack(shape, scratch, [&](const pack_rows& pk, fpack* s) { pack(f, pk, s); });
}

// --- DDRM -----------------------------------------------------------------------------------------------------------

std::int64_t ddrm_scratch_packs(const kernels::ddrm_params& p) { return 3 * std::int64_t(p.d) + 3 * p.r; }

/// kernels::ddrm_stage_functor's stage 1 on a pack of particles of one problem whose states are in xs and answers
/// in ms: m = ux x + um answer, then kernels::ddrm_update lane by lane (the three projections on V in one pass over
/// V, each summed over the coordinates in order as kernels::ddrm_project; the lift as kernels::ddrm_lift, then the
/// scaling by a_next); leaves x' in xs. s: d + 3 r packs of scratch. Not inlined: the plan's tell and the fused run
/// execute the same code on a pack.
__attribute__((noinline)) void ddrm_tell_packs(const kernels::ddrm_stage_functor& f, const pack_rows& pk, fpack* xs,
                                               fpack* ms, fpack* s) {
  const kernels::ddrm_params& p = f.p;
  const int d = p.d, r = p.r;
  fpack *xi = s, *proj_u = xi + d, *proj_xi = proj_u + r, *proj_m = proj_xi + r;
  const std::int64_t b = pk.b;
  const kernels::ddrm_step st = p.steps[f.k];
  const fpack ux(f.ux), um(f.um);
  for (int j = 0; j < d; ++j) ms[j] = ds_fma(ux, xs[j], um * ms[j]);  // kernels::answer_as_denoiser
  const float an = st.a_next, sn = st.s_next;
  const fpack step(sn * p.keep), spread(p.eta * sn), a(st.a), inv_s(st.inv_s), a_next(an);
  const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::ddrm_stream(p, pk.i0, b);
  philox_pack rng(p.seed, id, static_cast<std::uint64_t>(f.k) + 1);
  rng.normals(d, [&](int j, fpack z) {  // a' u = a' m + s' sqrt(1 - eta^2) eps + eta s' xi, in x
    xi[j] = z;
    const fpack eps = (xs[j] - a * ms[j]) * inv_s;
    xs[j] = a_next * ms[j] + step * eps + spread * z;
  });
  const float* V = p.V + b * p.V_stride;
  for (int i = 0; i < r; ++i) proj_u[i] = proj_xi[i] = proj_m[i] = fpack(0.f);
  for (int j = 0; j < d; ++j) {  // V^T u, V^T xi, V^T m
    const float* row = V + static_cast<std::int64_t>(j) * r;
    const fpack uj = xs[j], xj = xi[j], mj = ms[j];
    for (int i = 0; i < r; ++i) {
      const fpack v(row[i]);
      proj_u[i] = proj_u[i] + v * uj;
      proj_xi[i] = proj_xi[i] + v * xj;
      proj_m[i] = proj_m[i] + v * mj;
    }
  }
  const float* ybar = p.ybar + b * r;
  const float* noise = p.noise + b * r;
  const float* inv_noise = p.inv_noise + b * r;
  const std::int32_t* from = p.less_noisy_from + b * r;
  for (int c = 0; c < r; ++c) {
    const float n = an * noise[c];  // a' n_i (negative where unobserved)
    fpack v = proj_u[c];            // unobserved: the DDIM update as it is
    if (n >= 0.f) {
      const fpack x0 = proj_m[c];
      if (f.k + 1 >= from[c]) {  // s' < a' n_i, decided on the host (kernels::ddrm_params::less_noisy_from)
        v = a_next * x0 + step * (fpack(ybar[c]) - x0) * fpack(inv_noise[c]) + spread * proj_xi[c];
      } else {
        const float nb = n * p.eta_b;
        v = a_next * (fpack(1.f - p.eta_b) * x0 + fpack(p.eta_b * ybar[c])) +
            fpack(kernels::ddrm_sqrt(sn * sn - nb * nb)) * proj_xi[c];
      }
    }
    proj_m[c] = v - proj_u[c];
  }
  for (int j = 0; j < d; ++j) {  // x' = a' u + V (a' v - V^T a' u)
    const float* row = V + static_cast<std::int64_t>(j) * r;
    fpack acc(0.f);
    for (int i = 0; i < r; ++i) acc = acc + fpack(row[i]) * proj_m[i];
    xs[j] = xs[j] + acc;
  }
}

/// The plan's tell on a pack: x and the answer from their rows, ddrm_tell_packs, x stored.
void ddrm_tell_pack(const kernels::ddrm_stage_functor& f, const pack_rows& pk, fpack* s) {
  const int d = f.p.d;
  fpack *xs = s, *ms = xs + d;
  pk.load(xs, f.x, d);
  pk.load(ms, f.answer, d);
  ddrm_tell_packs(f, pk, xs, ms, ms + d);
  pk.store(xs, f.x, d);
}

// --- SKRock ---------------------------------------------------------------------------------------------------------

/// The packs of SKRock's pack step: x, cur, old, the answer (d each) and the residual (d_y).
std::int64_t skrock_scratch_packs(const kernels::guided_params& p) { return 4 * std::int64_t(p.d) + p.d_y; }

/// kernels::skrock_stage_functor's stage (s of iteration n) on a pack of particles of one problem whose x, cur and
/// old are in xs, cs and os and whose answer (the prior's score at cur) is in gs: the drift g = answer +
/// A^T (w (y - A cur)) in gs (the residual's sums over the coordinates in order, as kernels::guided_residual; the
/// rows of A one at a time, as kernels::guided_add_row), then skrock_first (s = 0: old = x, cur = x + mu_1 h g +
/// kappa_1 c xi, its normals on the pack's streams at step n + 1) or skrock_stage with the swap (the new value in
/// os, then the pointers cs and os swapped, so cs is the new cur); after the last stage x = cur and the next
/// iteration's first drift point in cs (kernels::skrock_perturb, normals at stream step n + 2). Reads xs at s = 0
/// only and os after it only. r: d_y packs of scratch. Not inlined: the plan's tell and the fused run execute the
/// same code on a pack.
__attribute__((noinline)) void skrock_tell_packs(const kernels::skrock_stage_functor& f, const pack_rows& pk,
                                                 fpack* xs, fpack*& cs, fpack*& os, fpack* gs, fpack* r) {
  const kernels::guided_params& p = f.p;
  const kernels::skrock_params& q = f.q;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const std::uint64_t key = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p, pk.i0, b);
  residual(p, b, 1.f, cs, r);
  const fpack w(q.inv_noise_var[b]);
  for (int o = 0; o < dy; ++o) {  // g += (w r_o) (row o of A)
    const fpack value = w * r[o];
    add_operator_row(p, b, o, value, gs);
  }
  const float h = q.step[b];
  const float c = kernels::ds_sqrt(2.f * h);
  if (f.s == 0) {  // kernels::skrock_first: old = x, cur = x + mu_1 h g + kappa_1 c xi
    const fpack fm(q.coefficients[0] * h), fk(q.coefficients[2] * c);
    philox_pack rng(p.seed, key, static_cast<std::uint64_t>(f.n) + 1);
    rng.normals(d, [&](int j, fpack z) {
      os[j] = xs[j];
      cs[j] = xs[j] + fm * gs[j] + fk * z;
    });
  } else {  // kernels::skrock_stage, then the swap: cur the new value, old the previous one
    const fpack mu(q.coefficients[3 * f.s] * h), nu(q.coefficients[3 * f.s + 1]), kappa(q.coefficients[3 * f.s + 2]);
    for (int j = 0; j < d; ++j) os[j] = mu * gs[j] + nu * cs[j] + kappa * os[j];
    std::swap(cs, os);
  }
  if (f.s + 1 < q.stages) return;
  for (int j = 0; j < d; ++j) xs[j] = cs[j];
  if (f.n + 1 < f.iterations) {  // kernels::skrock_perturb of iteration n + 1: cur = x + nu_1 c xi
    const fpack fn(q.coefficients[1] * c);
    philox_pack rng(p.seed, key, static_cast<std::uint64_t>(f.n) + 2);
    rng.normals(d, [&](int j, fpack z) { cs[j] = xs[j] + fn * z; });
  }
}

/// The plan's tell on a pack: the rows skrock_tell_packs reads (x at the first stage, cur, old after it, the answer)
/// into packs, skrock_tell_packs, cur and old stored, and x after the last stage (g and r are not written: the
/// drift stays in the pack).
void skrock_tell_pack(const kernels::skrock_stage_functor& f, const pack_rows& pk, fpack* s) {
  const int d = f.p.d;
  fpack *xs = s, *cs = xs + d, *os = cs + d, *gs = os + d, *r = gs + d;
  if (f.s == 0) pk.load(xs, f.x, d);
  pk.load(cs, f.cur, d);
  if (f.s != 0) pk.load(os, f.old, d);
  pk.load(gs, f.answer, d);
  skrock_tell_packs(f, pk, xs, cs, os, gs, r);
  pk.store(cs, f.cur, d);
  pk.store(os, f.old, d);
  if (f.s + 1 >= f.q.stages) pk.store(xs, f.x, d);
}

// --- The SMC's moment-projected weighting ----------------------------------------------------------------------------

/// The packs of the moment weighting's pack step: x, m, v, the answer (d each), the residual (d_y) and the moment
/// matrix (d_y^2).
std::int64_t moment_scratch_packs(const kernels::guided_params& p) {
  return 4 * std::int64_t(p.d) + p.d_y + std::int64_t(p.d_y) * p.d_y;
}

/// v = row o of the problem's A (a mask's row: its gain at its coordinate, zeros elsewhere) for the pack's rows, as
/// kernels::moment_stage_functor writes it (zeros, then kernels::guided_add_row with value 1).
void store_row(const kernels::guided_params& p, const pack_rows& pk, int o, float* v) {
  const int d = p.d;
  const float* A = p.A + pk.b * p.A_stride;
  for (int l = 0; l < pk.valid; ++l) {
    float* row = v + (pk.i0 + l) * d;
    if (p.mask != nullptr) {
      for (int j = 0; j < d; ++j) row[j] = 0.f;
      row[p.mask[pk.b * p.A_stride + o]] += 1.f * A[o];
    } else {
      const float* a = A + static_cast<std::int64_t>(o) * d;
      for (int j = 0; j < d; ++j) row[j] = 0.f + 1.f * a[j];
    }
  }
}

/// vs = the same row in every lane (the floats store_row writes).
void row_packs(const kernels::guided_params& p, std::int64_t b, int o, fpack* vs) {
  const int d = p.d;
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    const int at = p.mask[b * p.A_stride + o];
    for (int j = 0; j < d; ++j) vs[j] = fpack(j == at ? 0.f + 1.f * A[o] : 0.f);
  } else {
    const float* a = A + static_cast<std::int64_t>(o) * d;
    for (int j = 0; j < d; ++j) vs[j] = fpack(0.f + 1.f * a[j]);
  }
}

// kernels::moment_stage_functor's steps on a pack of particles of one problem, in packs: stage 0 (moment_m_packs),
// row o of stage 1 (moment_row_packs) and, after the last row, kernels::moment_finish (moment_finish_packs). Not
// inlined: the plan's tells and the fused run execute the same code on a pack.

/// Stage 0: the denoiser m = ux x + um answer in ms (the answer in ms on entry), as kernels::answer_as_denoiser.
/// The twisted weighting's stage 0 too.
__attribute__((noinline)) void moment_m_packs(float ux_, float um_, int d, const fpack* xs, fpack* ms) {
  const fpack ux(ux_), um(um_);
  for (int j = 0; j < d; ++j) ms[j] = ds_fma(ux, xs[j], um * ms[j]);
}

/// Row o of the moment matrix from the answer us = J^T a_o: Mrow[c] = (s^2 / a) a_c . us, c < d_y, as
/// kernels::moment_row (each sum over the coordinates in order), at step k. The twisted weighting's rows too.
__attribute__((noinline)) void moment_row_packs(const kernels::guided_params& p, std::int64_t k, const pack_rows& pk,
                                                const fpack* us, fpack* Mrow) {
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const kernels::guided_step st = p.steps[k];
  const float* A = p.A + b * p.A_stride;
  const fpack cov_scale(st.s * st.s / st.a);
  for (int c = 0; c < dy; ++c) {  // kernels::moment_row: (A u)_c with row c of A as a d-vector
    fpack acc(0.f);
    if (p.mask != nullptr) {
      const int at = p.mask[b * p.A_stride + c];
      for (int j = 0; j < d; ++j) acc = acc + fpack(j == at ? 0.f + 1.f * A[c] : 0.f) * us[j];
    } else {
      const float* a = A + static_cast<std::int64_t>(c) * d;
      for (int j = 0; j < d; ++j) acc = acc + fpack(0.f + 1.f * a[j]) * us[j];
    }
    Mrow[c] = cov_scale * acc;
  }
}

/// kernels::moment_log_potential lane by lane from the denoiser (ms) and the moment matrix (M, d_y^2 packs, row o at
/// M + o d_y): V = sigma_y^2 I + (M + M^T) / 2 into M's lower triangle and factorised there (the Cholesky factor L),
/// r = L^-1 (y - A m) (d_y packs); returns log g_k. Shared by the moment and the twisted weighting.
__attribute__((noinline)) fpack moment_log_potential_packs(const kernels::guided_params& p, std::int64_t b, float s2y,
                                                           const fpack* ms, fpack* M, fpack* r) {
  const int dy = p.d_y;
  for (int o = 0; o < dy; ++o)
    for (int c = 0; c <= o; ++c)
      M[o * dy + c] = fpack(0.5f) * (M[o * dy + c] + M[c * dy + o]) + fpack(o == c ? s2y : 0.f);
  // Cholesky in place (lower triangle); a pivot below sigma_y^2 / 2 is floored there.
  fpack logdet(0.f);
  const fpack floor(0.5f * s2y);
  for (int o = 0; o < dy; ++o)
    for (int c = 0; c <= o; ++c) {
      fpack acc = M[o * dy + c];
      for (int e = 0; e < c; ++e) acc = acc - M[o * dy + e] * M[c * dy + e];
      if (c == o) {
        const fpack pivot = ds_select(acc > floor, acc, floor);
        M[o * dy + o] = ds_sqrt(pivot);
        logdet = logdet + ds_log(pivot);
      } else {
        M[o * dy + c] = acc / M[c * dy + c];
      }
    }
  residual(p, b, 1.f, ms, r);  // r = y - A m; q = |L^-1 r|^2
  fpack q(0.f);
  for (int o = 0; o < dy; ++o) {
    fpack acc = r[o];
    for (int e = 0; e < o; ++e) acc = acc - M[o * dy + e] * r[e];
    acc = acc / M[o * dy + o];
    r[o] = acc;
    q = q + acc * acc;
  }
  return fpack(-0.5f) * (q + logdet + fpack(float(dy) * kernels::log_two_pi<float>()));
}

/// |a_k y - A x|^2 / v_k at step k > 0 (the exponent of ghat_k(x), the previous transition's Gaussian potential),
/// lane by lane; r: d_y packs of scratch, left holding a_k y - A x.
inline fpack moment_q_hat(const kernels::guided_params& p, std::int64_t b, std::int64_t k, float a, const fpack* xs,
                          fpack* r) {
  residual(p, b, a, xs, r);
  fpack q_hat(0.f);
  for (int o = 0; o < p.d_y; ++o) q_hat = q_hat + r[o] * r[o];
  return q_hat * fpack(p.inv_var[k * p.problems + b]);
}

/// The moment potentials' weight into lw (the pack's valid lanes): log g_0 at k = 0, else lw += log g_k - log
/// ghat_k(x) = log g_k + q_hat / 2.
inline void add_moment_weight(float* lw, const pack_rows& pk, std::int64_t k, fpack log_g, fpack q_hat) {
  const fpack add = log_g + fpack(0.5f) * q_hat;
  for (int l = 0; l < pk.valid; ++l) {
    if (k == 0)
      lw[pk.i0 + l] = log_g.v[l];
    else
      lw[pk.i0 + l] += add.v[l];
  }
}

/// kernels::moment_finish lane by lane from x (xs), the denoiser (ms) and the moment matrix (M, d_y^2 packs,
/// factorised in place): the d_y x d_y Cholesky, the weight into lw and lz (the pack's valid lanes), the kernel mean
/// left in ms. r: d_y packs of scratch.
__attribute__((noinline)) void moment_finish_packs(const kernels::moment_stage_functor& f, const pack_rows& pk,
                                                   const fpack* xs, fpack* ms, fpack* M, fpack* r) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const kernels::guided_step st = p.steps[f.k];
  const fpack q_hat = f.k > 0 ? moment_q_hat(p, b, f.k, st.a, xs, r) : fpack(0.f);
  const fpack log_g = moment_log_potential_packs(p, b, f.sigma2_b[b], ms, M, r);
  add_moment_weight(f.lw, pk, f.k, log_g, q_hat);
  multistep_packs(p, f.k, pk, ms);
  const fpack cx(st.c1), cm(st.c0);  // kernels::transition_update: ds_fma(cm, m, cx x)
  for (int j = 0; j < d; ++j) ms[j] = ds_fma(cm, ms[j], cx * xs[j]);
  residual(p, b, st.a_next, ms, r);
  const float* P = kernels::guided_precision(p, f.k, b);
  fpack q_next(0.f);
  for (int o = 0; o < dy; ++o) q_next = q_next + r[o] * precision_row(p, P, o, r);
  const fpack lz = fpack(-0.5f) * q_next - log_g;
  for (int l = 0; l < pk.valid; ++l) f.lz[pk.i0 + l] = lz.v[l];
}

/// The first tell of a step of the moment or twisted weighting (F: kernels::moment_stage_functor or
/// twisted_stage_functor) on a pack: x and the answer into packs (xs, ms), moment_m_packs, m stored, v = a_0.
template <class F>
void moment_first_tell_pack(const F& f, const pack_rows& pk, fpack* xs, fpack* ms) {
  const int d = f.p.d;
  pk.load(xs, f.x, d);
  pk.load(ms, f.answer, d);
  moment_m_packs(f.ux, f.um, d, xs, ms);
  pk.store(ms, f.m, d);
  store_row(f.p, pk, 0, f.v);
}

/// Row f.row of the moment matrix from its answer J^T a_o (in packs at us): moment_row_packs into M's row, stored into
/// f.M; then v = a_{o + 1} and false, or true at the last row (the caller finishes).
template <class F>
bool moment_row_tell_pack(const F& f, const pack_rows& pk, const fpack* us, fpack* M) {
  const int dy = f.p.d_y;
  fpack* Mrow = M + f.row * dy;
  moment_row_packs(f.p, f.k, pk, us, Mrow);
  for (int l = 0; l < pk.valid; ++l)
    for (int c = 0; c < dy; ++c) f.M[(pk.i0 + l) * dy * dy + f.row * dy + c] = Mrow[c].v[l];
  if (f.row + 1 < dy) {
    store_row(f.p, pk, f.row + 1, f.v);
    return false;
  }
  return true;
}

/// The plan's tell on a pack (kernels::moment_stage_functor): stage 0 x and the answer into packs, moment_m_packs,
/// m stored, v = a_0; stage 1 (row o) the answer into packs, moment_row_packs, row o of M stored, then v = a_{o + 1},
/// or at the last row M, x and m into packs, moment_finish_packs and the kernel mean stored into mu. v is written
/// along the rows (store_row: the floats row_packs broadcasts).
void moment_tell_pack(const kernels::moment_stage_functor& f, const pack_rows& pk, fpack* s) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  fpack *xs = s, *ms = xs + d, *us = ms + 2 * d, *r = us + d, *M = r + dy;
  if (f.stage == 0) {
    moment_first_tell_pack(f, pk, xs, ms);
    return;
  }
  pk.load(us, f.answer, d);
  if (!moment_row_tell_pack(f, pk, us, M)) return;
  pk.load(M, f.M, dy * dy);
  pk.load(xs, f.x, d);
  pk.load(ms, f.m, d);
  moment_finish_packs(f, pk, xs, ms, M, r);
  pk.store(ms, f.mu, d);
}


// --- The SMC's twisted weighting ------------------------------------------------------------------------------------

/// The packs of the twisted weighting's pack step: x, m, h, v (d each), the residual (d_y), the moment matrix
/// (d_y^2) and the d_y answers J^T a_o (d each, row o's at o d: the gradient needs every row's).
std::int64_t twisted_scratch_packs(const kernels::guided_params& p) {
  return (4 + std::int64_t(p.d_y)) * p.d + p.d_y + std::int64_t(p.d_y) * p.d_y;
}

/// kernels::twisted_finish lane by lane from x (xs), the denoiser (ms), the d_y answers (us, row o's at us + o d)
/// and the moment matrix (M, d_y^2 packs, factorised in place): log g_k (moment_log_potential_packs) added to lw,
/// w = V^-1 (y - A m) by back substitution in r, h = sig^2 sum_o w_o J^T a_o into hs, the proposal mean
/// c0 m + c1 x + h left in ms and lz = -|h|^2 / (2 sig^2) - log g_k (the pack's valid lanes).
__attribute__((noinline)) void twisted_finish_packs(const kernels::twisted_stage_functor& f, const pack_rows& pk,
                                                    const fpack* xs, fpack* ms, const fpack* us, fpack* M, fpack* r,
                                                    fpack* hs) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const kernels::guided_step st = p.steps[f.k];
  // moment_finish_packs's ghat_k(x) where the mutation is linear
  const fpack q_hat = f.linear_mutation && f.k > 0 ? moment_q_hat(p, b, f.k, st.a, xs, r) : fpack(0.f);
  const fpack log_g = moment_log_potential_packs(p, b, f.sigma2_b[b], ms, M, r);
  if (!f.linear_mutation) {
    for (int l = 0; l < pk.valid; ++l) f.lw[pk.i0 + l] += log_g.v[l];
  } else {  // kernels::twisted_finish's linear_mutation: moment_finish_packs's weight
    add_moment_weight(f.lw, pk, f.k, log_g, q_hat);
  }
  for (int o = dy - 1; o >= 0; --o) {  // w = L^-T (L^-1 r): back substitution in place
    fpack acc = r[o];
    for (int e = o + 1; e < dy; ++e) acc = acc - M[e * dy + o] * r[e];
    r[o] = acc / M[o * dy + o];
  }
  multistep_packs(p, f.k, pk, ms);
  const fpack cx(st.c1), cm(st.c0);  // kernels::transition_update: ds_fma(cm, m, cx x)
  if (kernels::final_transition(st)) {
    // The last transition's draw at s = 0 (kernels::final_transition_draw), lane by lane; h = 0, lz = 0.
    const float cov_scale = st.s * st.s / st.a;
    for (int l = 0; l < pk.valid; ++l) {
      float w[kernels::moment_potential_max_dy];
      for (int o = 0; o < dy; ++o) w[o] = r[o].v[l];
      kernels::final_transition_draw(
          p, f.k, b, pk.i0 + l, f.sigma2_b[b], cov_scale, [&](int o, int c) { return M[o * dy + c].v[l]; },
          [&](int o, int j) { return us[o * d + j].v[l]; }, w);
      for (int o = 0; o < dy; ++o) r[o].v[l] = w[o];
    }
    const fpack scale(cov_scale);
    for (int j = 0; j < d; ++j) {
      fpack g(0.f);
      for (int o = 0; o < dy; ++o) g = g + r[o] * us[o * d + j];
      hs[j] = fpack(0.f);
      ms[j] = ds_fma(cm, ms[j] + scale * g, cx * xs[j]);
    }
    for (int l = 0; l < pk.valid; ++l) f.lz[pk.i0 + l] = 0.f;
    return;
  }
  const float sig2f = st.sig * st.sig;
  const fpack sig2(sig2f);
  fpack norm(0.f);
  for (int j = 0; j < d; ++j) {
    fpack g(0.f);
    for (int o = 0; o < dy; ++o) g = g + r[o] * us[o * d + j];
    const fpack h = sig2 * g;
    hs[j] = h;
    ms[j] = ds_fma(cm, ms[j], cx * xs[j]) + h;
    norm = norm + h * h;
  }
  const fpack lz = (sig2f > 0.f ? fpack(-0.5f) * norm / sig2 : fpack(0.f)) - log_g;
  for (int l = 0; l < pk.valid; ++l) f.lz[pk.i0 + l] = lz.v[l];
}

/// The plan's twisted tell on a pack (kernels::twisted_stage_functor): stage 0 as the moment weighting's (m stored,
/// v = a_0); stage 1 (row o) row o's answer (plane o of u) into packs, moment_row_packs, row o of M stored, then
/// v = a_{o + 1}, or at the last row M, x, m and every row's answer into packs, twisted_finish_packs, and the
/// proposal mean stored into mu, h into shift.
void twisted_tell_pack(const kernels::twisted_stage_functor& f, const pack_rows& pk, fpack* s) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t plane = f.rows * d;
  fpack *xs = s, *ms = xs + d, *hs = ms + d, *us = hs + 2 * d, *r = us + std::int64_t(dy) * d, *M = r + dy;
  if (f.stage == 0) {
    moment_first_tell_pack(f, pk, xs, ms);
    return;
  }
  fpack* ur = us + f.row * d;
  pk.load(ur, f.u + f.row * plane, d);
  if (!moment_row_tell_pack(f, pk, ur, M)) return;
  pk.load(M, f.M, dy * dy);
  pk.load(xs, f.x, d);
  pk.load(ms, f.m, d);
  for (int o = 0; o < f.row; ++o) pk.load(us + o * d, f.u + o * plane, d);
  twisted_finish_packs(f, pk, xs, ms, us, M, r, hs);
  pk.store(ms, f.mu, d);
  pk.store(hs, f.shift, d);
}

}  // namespace

void run_ddrm_tell(const kernels::ddrm_stage_functor& f) {
  kernels::guided_params shape{};
  shape.problems = f.p.problems;
  shape.particles = f.p.particles;
  tell_every_particle<ddrm_tell_pack>(f, shape, ddrm_scratch_packs(f.p));
}


void run_ddrm_stepwise(const stepwise_run& r) {
  const kernels::ddrm_stage_functor& f0 = *r.ddrm;
  const int d = f0.p.d;
  kernels::guided_params shape{};
  shape.problems = f0.p.problems;
  shape.particles = f0.p.particles;
  for_each_particle_pack(shape, ddrm_scratch_packs(f0.p), [&](const pack_rows& pk, fpack* s) {
    fpack *xs = s, *ms = xs + d;
    pk.load(xs, f0.x, d);
    kernels::ddrm_stage_functor f = f0;
    for (std::int64_t a = 0; a < r.count; ++a) {
      evaluate_packs(r.asks[a].channel, r.asks[a].what, xs, ms, nullptr, d);
      f.k = r.first_ask + a;
      ddrm_tell_packs(f, pk, xs, ms, ms + d);
    }
    pk.store(xs, f0.x, d);
  });
}

void run_skrock_tell(const kernels::skrock_stage_functor& f) {
  tell_every_particle<skrock_tell_pack>(f, f.p, skrock_scratch_packs(f.p));
}


// SKRock's fused run with each pack's particles kept in packs (stepwise_run::skrock: ask a is the drift evaluation
// first_ask + a, stage (first_ask + a) % stages of iteration (first_ask + a) / stages): the prior's score at the
// pack's cur (evaluate_packs) into its answer, then skrock_tell_packs. The rows of x are written after the run's
// last ask, and those of cur and old when more asks follow (the next group of asks of run_fused_stepwise), which
// reads them back.
void run_skrock_stepwise(const stepwise_run& run) {
  const kernels::skrock_stage_functor& f0 = *run.skrock;
  const int d = f0.p.d, stages = f0.q.stages;
  const bool resumed = run.first_ask > 0, more = run.first_ask + run.count < run.total;
  for_each_particle_pack(f0.p, skrock_scratch_packs(f0.p), [&](const pack_rows& pk, fpack* s) {
    fpack *xs = s, *cs = xs + d, *os = cs + d, *gs = os + d, *r = gs + d;
    pk.load(xs, f0.x, d);
    pk.load(cs, f0.cur, d);
    if (resumed) pk.load(os, f0.old, d);
    kernels::skrock_stage_functor f = f0;
    for (std::int64_t a = 0; a < run.count; ++a) {
      const std::int64_t at = run.first_ask + a;
      f.n = at / stages;
      f.s = static_cast<int>(at - f.n * stages);
      evaluate_packs(run.asks[a].channel, run.asks[a].what, cs, gs, nullptr, d);
      skrock_tell_packs(f, pk, xs, cs, os, gs, r);
    }
    pk.store(xs, f0.x, d);
    if (more) {
      pk.store(cs, f0.cur, d);
      pk.store(os, f0.old, d);
    }
  });
}

void run_moment_tell(const kernels::moment_stage_functor& f) {
  tell_every_particle<moment_tell_pack>(f, f.p, moment_scratch_packs(f.p));
}


// One ask of a moment-matrix step on a pack (the moment and the twisted weightings' fused runs): ask `at` of the
// step is 0 the denoiser at x (evaluate_packs into ms, then moment_m_packs) or 1 + o the product J^T a_o
// (denoiser_jvp_packs with a_o in every lane, into the answer's packs at us + o * answer_stride, then
// moment_row_packs into row o of M). Returns o, or -1 for the denoiser.
template <class F>
inline int moment_ask_packs(const F& f0, const stepwise_ask& ask, std::int64_t at, const pack_rows& pk, const fpack* xs,
                            fpack* ms, fpack* vs, fpack* us, std::int64_t answer_stride, fpack* M, fpack* js) {
  const kernels::guided_params& p = f0.p;
  const int d = p.d;
  if (at == 0) {
    evaluate_packs(ask.channel, ask.what, xs, ms, nullptr, d);
    moment_m_packs(f0.ux, f0.um, d, xs, ms);
    return -1;
  }
  const int o = static_cast<int>(at - 1);
  fpack* ur = us + o * answer_stride;
  row_packs(p, pk.b, o, vs);
  denoiser_jvp_packs(ask.channel, xs, vs, ur, js, d);
  moment_row_packs(p, f0.k, pk, ur, M + o * p.d_y);
  return o;
}

// The moment weighting's fused run (of one step k) with each pack's particles kept in packs (stepwise_run::moment:
// ask a is the step's ask first_ask + a: 0 the denoiser, 1 + o the product J^T a_o): the denoiser at the pack's x
// (evaluate_packs) into its m, then moment_m_packs; J^T a_o (denoiser_jvp_packs with a_o in every lane) into the
// answer's packs, then moment_row_packs, and after the last row moment_finish_packs and the kernel mean into the
// rows of mu. The rows of m and M are written when more asks follow (the next group of asks of
// run_fused_stepwise), which reads them back; v and the answers stay in the packs.
void run_moment_stepwise(const stepwise_run& run) {
  const kernels::moment_stage_functor& f0 = *run.moment;
  const kernels::guided_params& p = f0.p;
  const int d = p.d, dy = p.d_y;
  const bool resumed = run.first_ask > 0, more = run.first_ask + run.count < run.total;
  for_each_particle_pack(p, jvp_scratch_packs(d, run.asks[0].channel), [&](const pack_rows& pk, fpack* js) {
    fpack* s = tell_packs(moment_scratch_packs(p));
    fpack *xs = s, *ms = xs + d, *vs = ms + d, *us = vs + d, *r = us + d, *M = r + dy;
    pk.load(xs, f0.x, d);
    if (resumed) {
      pk.load(ms, f0.m, d);
      pk.load(M, f0.M, dy * dy);
    }
    for (std::int64_t a = 0; a < run.count; ++a) {
      // Every row's answer into the same packs (us): the moment matrix keeps only its rows.
      if (moment_ask_packs(f0, run.asks[a], run.first_ask + a, pk, xs, ms, vs, us, 0, M, js) + 1 == dy) {
        moment_finish_packs(f0, pk, xs, ms, M, r);
        pk.store(ms, f0.mu, d);
      }
    }
    if (more) {
      pk.store(ms, f0.m, d);
      pk.store(M, f0.M, dy * dy);
    }
  });
}

void run_twisted_tell(const kernels::twisted_stage_functor& f) {
  for_each_particle_pack(f.p, twisted_scratch_packs(f.p),
                         [&](const pack_rows& pk, fpack* s) { twisted_tell_pack(f, pk, s); });
}

// The twisted weighting's fused run (of one step k) with each pack's particles kept in packs (stepwise_run::twisted:
// ask a is the step's ask first_ask + a: 0 the denoiser, 1 + o the product J^T a_o), as run_moment_stepwise with
// every row's answer kept in its own packs for the gradient, and after the last row twisted_finish_packs, the
// proposal mean into the rows of mu and h into those of shift. The rows of m, M and the answers so far (u's planes)
// are written when more asks follow (the next group of asks of run_fused_stepwise), which reads them back.
void run_twisted_stepwise(const stepwise_run& run) {
  const kernels::twisted_stage_functor& f0 = *run.twisted;
  const kernels::guided_params& p = f0.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t plane = f0.rows * d;
  const bool resumed = run.first_ask > 0, more = run.first_ask + run.count < run.total;
  // Rows whose answers came before this group, and the rows answered by the end of it.
  const int before = static_cast<int>(std::max<std::int64_t>(0, run.first_ask - 1));
  const int after = static_cast<int>(std::max<std::int64_t>(0, run.first_ask + run.count - 1));
  for_each_particle_pack(p, jvp_scratch_packs(d, run.asks[0].channel), [&](const pack_rows& pk, fpack* js) {
    fpack* s = tell_packs(twisted_scratch_packs(p));
    fpack *xs = s, *ms = xs + d, *hs = ms + d, *vs = hs + d, *us = vs + d, *r = us + std::int64_t(dy) * d, *M = r + dy;
    pk.load(xs, f0.x, d);
    if (resumed) {
      pk.load(ms, f0.m, d);
      pk.load(M, f0.M, dy * dy);
      for (int o = 0; o < before; ++o) pk.load(us + o * d, f0.u + o * plane, d);
    }
    for (std::int64_t a = 0; a < run.count; ++a) {
      // Row o's answer into its own packs (us + o * d): the gradient reads every row's.
      if (moment_ask_packs(f0, run.asks[a], run.first_ask + a, pk, xs, ms, vs, us, d, M, js) + 1 == dy) {
        twisted_finish_packs(f0, pk, xs, ms, us, M, r, hs);
        pk.store(ms, f0.mu, d);
        pk.store(hs, f0.shift, d);
      }
    }
    if (more) {
      pk.store(ms, f0.m, d);
      pk.store(M, f0.M, dy * dy);
      // u: the fused run's own workspace (the functor reads it only), the planes its asks answer into.
      float* u = const_cast<float*>(f0.u);
      for (int o = before; o < after; ++o) pk.store(us + o * d, u + o * plane, d);
    }
  });
}

}  // namespace diffsample::cpu::DS_SIMD_NS
