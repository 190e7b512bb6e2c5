// The guided samplers' per-particle work on one dispatch target (DS_SIMD_TARGET, see src/cpu/simd.hpp): the SMC's
// mutation and weighting of kernels/guided.cuh, DiffPIR's and DPS / Pi-GDM's stages, the denoiser's J v and the
// fused stepwise runs, over packs of `lanes` particles of one problem, so that the problem's operator,
// observation and precision table are broadcast operands. The denoiser (score) is the chain samplers'
// channel_denoiser (channel_score): constants per channel, chunked softmax; everything else is the functors'
// arithmetic lane by lane. Vectors of d (or d_y) packs live in per-thread workspace.
#include "src/cpu/simd.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/guided.cuh"
#include "kernels/linalg.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/denoiser_jvp.hpp"
#include "src/cpu/guided_jvp.hpp"
#include "src/cpu/guided_packs.hpp"
#include "src/cpu/guided_tells.hpp"
#include "src/cpu/jacobian_tells.hpp"
#include "src/cpu/pack_cores.hpp"
#include "src/cpu/pool.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

/// guided_mutate_functor on a pack; leaves the new states in xs (their rows written as well).
void mutate_pack(const kernels::guided_mutate_functor& m, const pack_rows& pk, fpack* xs, fpack* zy, fpack* t) {
  const kernels::guided_params& p = m.p;
  const kernels::guided_step st = p.steps[m.k];
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  if (m.reports[b].resampled)
    for (int l = 0; l < pk.valid; ++l) m.lw[pk.i0 + l] = 0.f;
  const float* rows[lanes];
  for (int l = 0; l < lanes; ++l)
    rows[l] = m.mu + (b * p.particles + static_cast<std::int64_t>(m.ancestors[pk.i0 + (l < pk.valid ? l : 0)])) * d;
  const fpack sig(st.sig);
  // The pack's particles are consecutive in one problem: their streams are consecutive too.
  philox_pack rng(kernels::guided_seed(p), kernels::guided_stream(p, pk.i0, pk.b),
                  static_cast<std::uint64_t>(m.k) + 1);
  rng.normals(d + dy, [&](int j, fpack z) {
    if (j < d) {
      fpack mj;
      for (int l = 0; l < lanes; ++l) mj.v[l] = rows[l][j];
      xs[j] = mj + sig * z;
    } else {
      zy[j - d] = z;
    }
  });
  if (st.sig != 0.f) {
    const float noise = p.noise_std[(m.k + 1) * p.problems + b];
    residual(p, b, st.a_next, xs, t, noise, zy);
    const float* P = kernels::guided_precision(p, m.k, b);
    const fpack sig2(st.sig * st.sig);
    for (int o = 0; o < dy; ++o) {
      const fpack value = sig2 * precision_row(p, P, o, t);
      add_operator_row(p, b, o, value, xs);
    }
  } else if (p.final_noise != nullptr && kernels::final_transition(st)) {
    // kernels::linear_final_draw: delta = D zeta in place (rows in descending order), t = a_K y - A mu - delta,
    // x = mu + A^T (v_f V^-1 t).
    const bool diagonal = p.mask != nullptr;
    const float* D = p.final_noise + b * (diagonal ? dy : static_cast<std::int64_t>(dy) * dy);
    for (int o = dy - 1; o >= 0; --o) {
      if (diagonal) {
        zy[o] = fpack(D[o]) * zy[o];
        continue;
      }
      fpack acc(0.f);
      for (int e = 0; e <= o; ++e) acc = acc + fpack(D[o * dy + e]) * zy[e];
      zy[o] = acc;
    }
    residual(p, b, st.a_next, xs, t, 1.f, zy);
    const float* P = kernels::guided_precision(p, m.k, b);
    const fpack v(p.final_var[b]);
    for (int o = 0; o < dy; ++o) zy[o] = v * precision_row(p, P, o, t);
    for (int o = 0; o < dy; ++o) add_operator_row(p, b, o, zy[o], xs);
  }
  pk.store(xs, m.x, d);
}

/// twisted_mutate_functor on a pack: x' = mu_a + sig z from each lane's ancestor a and lw = (0 when its problem was
/// resampled, else lw) + lz_a - z . h_a / sig, the functor's arithmetic lane by lane with the pack's normals; the
/// new states' rows written (xs: d packs of scratch).
void twisted_mutate_pack(const kernels::twisted_mutate_functor& m, const pack_rows& pk, fpack* xs) {
  const kernels::guided_params& p = m.p;
  const int d = p.d;
  const std::int64_t b = pk.b;
  const float sig = p.steps[m.k].sig;
  const float* mu_rows[lanes];
  const float* h_rows[lanes];
  std::int64_t ancestor[lanes];
  for (int l = 0; l < lanes; ++l) {
    ancestor[l] = b * p.particles + static_cast<std::int64_t>(m.ancestors[pk.i0 + (l < pk.valid ? l : 0)]);
    mu_rows[l] = m.mu + ancestor[l] * d;
    h_rows[l] = m.shift + ancestor[l] * d;
  }
  const fpack sigp(sig);
  fpack dot(0.f);
  philox_pack rng(kernels::guided_seed(p), kernels::guided_stream(p, pk.i0, pk.b), static_cast<std::uint64_t>(m.k) + 1);
  rng.normals(d, [&](int j, fpack z) {
    fpack mj, hj;
    for (int l = 0; l < lanes; ++l) {
      mj.v[l] = mu_rows[l][j];
      hj.v[l] = h_rows[l][j];
    }
    xs[j] = mj + sigp * z;
    dot = dot + z * hj;
  });
  const bool reset = m.reports[b].resampled;
  for (int l = 0; l < pk.valid; ++l) {
    const std::int64_t i = pk.i0 + l;
    const float w = reset ? 0.f : m.lw[i];
    m.lw[i] = w + m.lz[ancestor[l]] - (sig > 0.f ? dot.v[l] / sig : 0.f);
  }
  pk.store(xs, m.x, d);
}

/// kernels::guided_weight_increment on a pack whose states are in xs and denoisers in ms (the kernel means on
/// exit, stored into mu): lw += the increment.
void weight_from_denoiser(const kernels::guided_params& p, std::int64_t k, float* lw, float* mu, const pack_rows& pk,
                          fpack* xs, fpack* ms, fpack* r) {
  const kernels::guided_step st = p.steps[k];
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  residual(p, b, st.a, xs, r);
  fpack q_now(0.f);
  for (int o = 0; o < dy; ++o) q_now = q_now + r[o] * r[o];
  q_now = q_now * fpack(p.inv_var[k * p.problems + b]);
  multistep_packs(p, k, pk, ms);
  const fpack c0(st.c0), c1(st.c1);
  for (int j = 0; j < d; ++j) ms[j] = c0 * ms[j] + c1 * xs[j];
  residual(p, b, st.a_next, ms, r);
  const float* P = kernels::guided_precision(p, k, b);
  fpack q_next(0.f);
  for (int o = 0; o < dy; ++o) q_next = q_next + r[o] * precision_row(p, P, o, r);
  const fpack dl = fpack(-0.5f) * q_next + fpack(0.5f) * q_now;
  for (int l = 0; l < pk.valid; ++l) lw[pk.i0 + l] += dl.v[l];
  pk.store(ms, mu, d);
}

/// guided_weight_functor on a pack whose states are in xs.
void weight_pack(const kernels::guided_weight_functor& w, const kernels::channel_view& ch, const pack_rows& pk,
                 fpack* xs, fpack* ms, fpack* r) {
  const span x{xs, w.p.d};
  span m{ms, w.p.d};
  kernels::channel_denoiser<fpack>(ch, x, m);
  weight_from_denoiser(w.p, w.k, w.lw, w.mu, pk, xs, ms, r);
}

/// guided_weight_answer_functor on a pack whose states are in xs: the denoiser from the model's answer.
void weight_answer_pack(const kernels::guided_weight_answer_functor& w, const pack_rows& pk, fpack* xs, fpack* ms,
                        fpack* r) {
  const int d = w.p.d;
  pk.load(ms, w.answer, d);
  if (w.ux != 0.f || w.um != 1.f)
    for (int j = 0; j < d; ++j) ms[j] = ds_fma(fpack(w.ux), xs[j], fpack(w.um) * ms[j]);
  weight_from_denoiser(w.p, w.k, w.lw, w.mu, pk, xs, ms, r);
}

/// kernels::diffpir_stage_functor's stage 1 on a pack of particles of one problem whose states are in xs and answers
/// in ms: m = ux x + um answer, then kernels::diffpir_update lane by lane (x0 = m + A^T P (y - A m),
/// x' = c0 x0 + c1 x + sig z with z from the pack's streams (seed, id_base + guided_stream(i, b), k + 1)); leaves x'
/// in xs and x0 in ms. Not inlined: the plan's tell and the fused run execute the same code on a pack.
__attribute__((noinline)) void diffpir_tell_packs(const kernels::diffpir_stage_functor& f, const pack_rows& pk,
                                                  fpack* xs, fpack* ms, fpack* r) {
  const kernels::guided_params& p = f.p;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  const kernels::guided_step st = p.steps[f.k];
  const fpack ux(f.ux), um(f.um);
  for (int j = 0; j < d; ++j) ms[j] = ds_fma(ux, xs[j], um * ms[j]);
  residual(p, b, 1.f, ms, r);
  const float* P = kernels::guided_precision(p, f.k, b);
  for (int o = 0; o < dy; ++o) {  // x0 = m + A^T P r, one row of A at a time (r stays as it is while m moves)
    const fpack value = precision_row(p, P, o, r);
    add_operator_row(p, b, o, value, ms);
  }
  const fpack cx(st.c1), cm(st.c0), cn(st.sig);  // kernels::transition_update: ds_fma(cn, z, ds_fma(cm, m, cx x))
  if (st.sig != 0.f) {
    const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p, pk.i0, b);
    philox_pack rng(p.seed, id, static_cast<std::uint64_t>(f.k) + 1);
    rng.normals(d, [&](int j, fpack z) { xs[j] = ds_fma(cn, z, ds_fma(cm, ms[j], cx * xs[j])); });
  } else {
    for (int j = 0; j < d; ++j) xs[j] = ds_fma(cm, ms[j], cx * xs[j]);
  }
}

/// The plan's tell on a pack: x and the answer from their rows, diffpir_tell_packs, x and m (x0) stored as the
/// functor leaves them.
void diffpir_tell_pack(const kernels::diffpir_stage_functor& f, const pack_rows& pk, fpack* xs, fpack* ms, fpack* r) {
  const int d = f.p.d;
  pk.load(xs, f.x, d);
  pk.load(ms, f.answer, d);
  diffpir_tell_packs(f, pk, xs, ms, r);
  pk.store(xs, f.x, d);
  pk.store(ms, f.m, d);
}

/// e = -A_b v (d_y packs; kernels::guided_residual_float with scale 0), the products and their sum in FP32.
void negated_operator(const kernels::guided_params& p, std::int64_t b, const fpack* v, fpack* e) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o) e[o] = fpack(0.f) - fpack(A[o]) * v[index[o]];
    return;
  }
  for (int o = 0; o < p.d_y; ++o) {
    const float* row = A + static_cast<std::int64_t>(o) * p.d;
    fpack acc(0.f);
    for (int j = 0; j < p.d; ++j) acc = acc - fpack(row[j]) * v[j];
    e[o] = acc;
  }
}

/// kernels::final_move_split on packs: e = -e - lambda mu (e held -A u_p), returns e^T W e, and W e into `into` when
/// given (it may be mu: mu is read whole before).
fpack final_move_split_packs(const kernels::guided_params& p, const kernels::final_move_params& q, std::int64_t b,
                             float lambda, const fpack* mu, fpack* e, fpack* into) {
  const int dy = p.d_y;
  const fpack lam(lambda);
  for (int o = 0; o < dy; ++o) e[o] = fpack(0.f) - e[o] - lam * mu[o];
  fpack ewe(0.f);
  if (p.mask != nullptr) {
    const float* W = q.W + b * dy;
    for (int o = 0; o < dy; ++o) {
      const fpack we = fpack(W[o]) * e[o];
      ewe = ewe + e[o] * we;
      if (into != nullptr) into[o] = we;
    }
    return ewe;
  }
  const float* W = q.W + b * static_cast<std::int64_t>(dy) * dy;
  for (int o = 0; o < dy; ++o) {
    fpack we(0.f);
    for (int c = 0; c < dy; ++c) we = we + fpack(W[o * dy + c]) * e[c];
    ewe = ewe + e[o] * we;
    if (into != nullptr) into[o] = we;
  }
  return ewe;
}

/// The prior's score and kernels::final_move_log_likelihood on packs: grad = the prior's score at the channel
/// (a_K, 0), r = a y - A v (FP64 sums), returns the likelihood's part of log pi(v), -|r|^2 inv_s2 / 2 (|r|^2 in FP64
/// per lane).
fpack final_move_target_packs(const kernels::guided_params& p, const kernels::final_move_params& q, std::int64_t b,
                              float inv_s2, fpack* v, fpack* grad, fpack* r) {
  const span vs{v, p.d};
  span gs{grad, p.d};
  kernels::channel_score<fpack>(q.channel, vs, gs);  // its log-density is not read
  residual(p, b, q.a, v, r);
  dhalf lo{}, hi{};
  for (int o = 0; o < p.d_y; ++o) {
    dhalf rl, rh;
    widen(r[o], rl, rh);
    lo = lo + rl * rl;
    hi = hi + rh * rh;
  }
  const double scale = 0.5 * double(inv_s2);
  return fpack(0.f) - narrow(lo * scale, hi * scale);
}

/// kernels::final_move_functor on a pack of samples (rows of f.x), lane by lane: the same proposal, densities and
/// Metropolis test (the prior's part by Simpson's rule on its score), the normals and uniforms of the lanes' Philox
/// streams (stream steps first_step + m); the state (x, its score and residual, the log-likelihood) stays in the
/// thread's packs between moves, so that no scratch row is written. Scratch: 6 d + 4 d_y packs.
void final_move_pack(const kernels::final_move_functor& f, const pack_rows& pk, fpack* scratch) {
  const kernels::guided_params& p = f.p;
  const kernels::final_move_params& q = f.q;
  const int d = p.d, dy = p.d_y;
  const std::int64_t b = pk.b;
  fpack *xs = scratch, *gs = xs + d, *xps = gs + d, *gps = xps + d, *ns = gps + d, *gms = ns + d;
  fpack *r = gms + d, *rp = r + dy, *nu = rp + dy, *e = nu + dy;
  pk.load(xs, f.x, d);
  const float inv_s2 = p.inv_var[q.last * p.problems + b];
  const float h = q.step, lambda = q.curvature;
  const fpack half(0.5f * h), noise_x(ds_sqrt(h * lambda)), noise_y(ds_sqrt(h / inv_s2));
  const fpack inv_lambda(1.f / lambda), inv_2h(1.f / (2.f * h)), inv_s2p(inv_s2);
  fpack log_lik = final_move_target_packs(p, q, b, inv_s2, xs, gs, r);
  for (int m = 0; m < q.moves; ++m) {
    philox_pack rng(kernels::guided_seed(p), kernels::guided_stream(p, pk.i0, b),
                    q.first_step + static_cast<std::uint64_t>(m));
    rng.normals(d, [&](int j, fpack z) { ns[j] = noise_x * z; });   // n_p
    rng.normals(dy, [&](int o, fpack z) { nu[o] = noise_y * z; });  // mu~ of n
    fpack nn(0.f), nu2(0.f);
    for (int j = 0; j < d; ++j) nn = nn + ns[j] * ns[j];
    for (int o = 0; o < dy; ++o) nu2 = nu2 + nu[o] * nu[o];
    negated_operator(p, b, ns, e);
    const fpack nmn =
        nn * inv_lambda + nu2 * inv_s2p - final_move_split_packs(p, q, b, lambda, nu, e, nullptr) * inv_lambda;
    for (int j = 0; j < d; ++j) xps[j] = half * gs[j] + ns[j];
    for (int o = 0; o < dy; ++o) rp[o] = half * r[o] + nu[o];
    negated_operator(p, b, xps, e);
    final_move_split_packs(p, q, b, lambda, rp, e, rp);  // rp = W e
    for (int o = 0; o < dy; ++o) add_operator_row(p, b, o, fpack(0.f) - rp[o], xps);  // w_p - A^T W e
    for (int j = 0; j < d; ++j) xps[j] = xs[j] + xps[j] * inv_lambda;
    const fpack log_forward = fpack(0.f) - nmn * inv_2h;
    const fpack log_lik_new = final_move_target_packs(p, q, b, inv_s2, xps, gps, rp);
    fpack vv(0.f), psi2(0.f);
    for (int j = 0; j < d; ++j) {
      ns[j] = ns[j] + half * (gs[j] + gps[j]);
      vv = vv + ns[j] * ns[j];
    }
    for (int o = 0; o < dy; ++o) {
      nu[o] = nu[o] + half * (r[o] + rp[o]);
      psi2 = psi2 + nu[o] * nu[o];
    }
    negated_operator(p, b, ns, e);
    const fpack vmv =
        vv * inv_lambda + psi2 * inv_s2p - final_move_split_packs(p, q, b, lambda, nu, e, nullptr) * inv_lambda;
    const fpack log_backward = fpack(0.f) - vmv * inv_2h;
    const fpack rest = (log_lik_new - log_lik) + log_backward - log_forward;  // the test but the prior's part
    // log p_a(x') - log p_a(x) by Simpson's rule on the score (ns, read, holds the midpoint now).
    const fpack one_half(0.5f), four(4.f);
    for (int j = 0; j < d; ++j) ns[j] = one_half * (xs[j] + xps[j]);
    {
      const span ms{ns, d};
      span gm{gms, d};
      kernels::channel_score<fpack>(q.channel, ms, gm);
    }
    fpack simpson(0.f);
    for (int j = 0; j < d; ++j) simpson = simpson + (xps[j] - xs[j]) * (gs[j] + four * gms[j] + gps[j]);
    const fpack log_alpha = simpson * fpack(1.f / 6.f) + rest;
    const mpack accept = ds_log(rng.uniform()) < log_alpha;  // NaN: rejected
    for (int j = 0; j < d; ++j) {
      xs[j] = ds_select(accept, xps[j], xs[j]);
      gs[j] = ds_select(accept, gps[j], gs[j]);
    }
    for (int o = 0; o < dy; ++o) r[o] = ds_select(accept, rp[o], r[o]);
    log_lik = ds_select(accept, log_lik_new, log_lik);
  }
  pk.store(xs, f.x, d);
}

}  // namespace

void run_guided_pass(const guided_pass& g) {
  if (g.twisted_mutate != nullptr) {
    const kernels::twisted_mutate_functor& m = *g.twisted_mutate;
    for_each_particle_pack(m.p, m.p.d, [&](const pack_rows& pk, fpack* scratch) { twisted_mutate_pack(m, pk, scratch); });
    return;
  }
  const kernels::guided_params& p = g.mutate != nullptr ? g.mutate->p
                                    : g.weight != nullptr ? g.weight->p
                                                          : g.weight_answer->p;
  const int d = p.d, dy = p.d_y;
  for_each_particle_pack(p, 2 * static_cast<std::int64_t>(d) + 2 * dy, [&](const pack_rows& pk, fpack* scratch) {
    fpack *xs = scratch, *ms = xs + d, *zy = ms + d, *t = zy + dy;
    if (g.select != nullptr)
      for (int l = 0; l < pk.valid; ++l) (*g.select)(pk.i0 + l);
    if (g.mutate != nullptr) mutate_pack(*g.mutate, pk, xs, zy, t);
    if (g.weight != nullptr) {
      if (g.mutate == nullptr) pk.load(xs, g.weight->x, d);
      weight_pack(*g.weight, g.weight_channel, pk, xs, ms, t);
    }
    if (g.weight_answer != nullptr) {
      pk.load(xs, g.weight_answer->x, d);
      weight_answer_pack(*g.weight_answer, pk, xs, ms, t);
    }
  });
}

void run_final_moves(const kernels::final_move_functor& f) {
  const int d = f.p.d, dy = f.p.d_y;
  for_each_particle_pack(f.p, 6 * static_cast<std::int64_t>(d) + 4 * dy,
                         [&](const pack_rows& pk, fpack* scratch) { final_move_pack(f, pk, scratch); });
}

std::int64_t jvp_scratch_packs(int d, const kernels::channel_view& c) {
  return denoiser_jvp_scratch(d, 1, c.components);
}

// One pack's J v on packs; not inlined, so that run_denoiser_jvp and the fused stepwise runs execute the same code on
// a pack.
__attribute__((noinline)) void denoiser_jvp_packs(const kernels::channel_view& c, const fpack* xs, const fpack* vs,
                                                  fpack* os, fpack* scratch, int d) {
  channel_denoiser_jvp(c, xs, d, vs, 1, os, scratch);
}

// One pack's J v from its rows into its rows, through denoiser_jvp_packs, in per-thread workspace.
__attribute__((noinline)) void denoiser_jvp_rows(const kernels::channel_view& c, const float* x, const float* v,
                                                 float* out, std::int64_t i0, int valid, int d) {
  fpack* s = thread_packs(3 * static_cast<std::int64_t>(d) + jvp_scratch_packs(d, c));
  fpack *xs = s, *vs = xs + d, *os = vs + d;
  const pack_rows pk{0, i0, valid};
  pk.load(xs, x, d);
  pk.load(vs, v, d);
  denoiser_jvp_packs(c, xs, vs, os, os + d, d);
  pk.store(os, out, d);
}

void run_denoiser_jvp(const kernels::channel_view& c, const float* x, const float* v, std::int64_t n, std::int64_t d,
                      float* out) {
  kernels::guided_params shape{};
  shape.problems = 1;
  shape.particles = n;
  for_each_particle_pack(shape, 0, [&](const pack_rows& pk, fpack*) {
    denoiser_jvp_rows(c, x, v, out, pk.i0, pk.valid, static_cast<int>(d));
  });
}

// The fused stepwise run: the packs of rows of run_evaluate / run_denoiser_jvp (consecutive rows, the last pack
// partial), each running every ask: its answer by the batched calls' per-pack cores, then the tell on its rows.
// DiffPIR's run (and DDRM's, TMPD's, DCPS's, SKRock's and the moment and twisted weightings': run_ddrm_stepwise,
// run_tmpd_stepwise, run_dcps_stepwise, run_skrock_stepwise, run_moment_stepwise, run_twisted_stepwise) keeps each
// pack's particles in packs from its first ask to its last: the denoiser on the packs (evaluate_packs, evaluate_rows's
// core), the tell on the packs (diffpir_tell_packs, the plan's tell's core), the rows read once and written once; the
// same operations on the same values as the plan's asks and tells, whose row transfers only copy.
void run_stepwise(const stepwise_run& r) {
  if (r.ddrm != nullptr) return run_ddrm_stepwise(r);
  if (r.tmpd != nullptr) return run_tmpd_stepwise(r);
  if (r.dcps != nullptr) return run_dcps_stepwise(r);
  if (r.skrock != nullptr) return run_skrock_stepwise(r);
  if (r.moment != nullptr) return run_moment_stepwise(r);
  if (r.twisted != nullptr) return run_twisted_stepwise(r);
  if (r.diffpir != nullptr) {
    const kernels::diffpir_stage_functor& f0 = *r.diffpir;
    const int d = r.d;
    for_each_particle_pack(f0.p, 0, [&](const pack_rows& pk, fpack*) {
      fpack* s = thread_packs_extra(2 * static_cast<std::int64_t>(d) + f0.p.d_y);
      fpack *xs = s, *ms = xs + d, *t = ms + d;
      pk.load(xs, f0.x, d);
      kernels::diffpir_stage_functor f = f0;
      for (std::int64_t a = 0; a < r.count; ++a) {
        evaluate_packs(r.asks[a].channel, r.asks[a].what, xs, ms, nullptr, d);
        f.k = r.first_ask + a;
        diffpir_tell_packs(f, pk, xs, ms, t);
      }
      pk.store(xs, f0.x, d);
      pk.store(ms, f0.m, d);
    });
    return;
  }
  kernels::guided_params shape{};
  shape.problems = 1;
  shape.particles = r.rows;
  for_each_particle_pack(shape, 0, [&](const pack_rows& pk, fpack*) {
    for (std::int64_t a = 0; a < r.count; ++a) {
      const stepwise_ask& q = r.asks[a];
      if (q.vectors != nullptr)
        denoiser_jvp_rows(q.channel, q.points, q.vectors, q.answer, pk.i0, pk.valid, r.d);
      else
        evaluate_rows(q.channel, q.what, q.points, q.answer, pk.i0, pk.valid, r.d);
      r.tell(r.context, a, pk.i0, pk.i0 + pk.valid);
    }
  });
}

void run_diffpir_tell(const kernels::diffpir_stage_functor& f) {
  if (f.position != nullptr) *f.position = f.next_position;
  const int d = f.p.d;
  for_each_particle_pack(f.p, 2 * static_cast<std::int64_t>(d) + f.p.d_y, [&](const pack_rows& pk, fpack* s) {
    diffpir_tell_pack(f, pk, s, s + d, s + 2 * d);
  });
}

// DPS / Pi-GDM's stages (kernels::baseline_stage_functor) over packs of particles of one problem: the functor's
// arithmetic lane by lane, the normals from the pack's Philox streams (the particles of a pack are consecutive in one
// problem, so are their streams).
void run_baseline_stage(const kernels::baseline_stage_functor& f) {
  const kernels::guided_params& p = f.p;
  if (f.position != nullptr) *f.position = f.next_position;
  const std::uint64_t base = f.id_base != nullptr ? *f.id_base : 0;
  const int d = p.d, dy = p.d_y;
  for_each_particle_pack(p, 3 * static_cast<std::int64_t>(d) + dy, [&](const pack_rows& pk, fpack* scratch) {
    fpack *xs = scratch, *ms = xs + d, *ws = ms + d, *r = ws + d;
    const std::uint64_t id = base + kernels::guided_stream(p, pk.i0, pk.b);
    if (f.stage == 0) {
      const fpack s0(p.initial_scale);
      philox_pack rng(p.seed, id, 0);
      rng.normals(d, [&](int j, fpack z) { xs[j] = s0 * z; });
      pk.store(xs, f.x, d);
      return;
    }
    const kernels::guided_step st = p.steps[f.k];
    pk.load(xs, f.x, d);
    if (f.stage == 1) {
      pk.load(ms, f.answer, d);
      const fpack ux(f.ux), um(f.um);
      for (int j = 0; j < d; ++j) ms[j] = ds_fma(ux, xs[j], um * ms[j]);  // the denoiser from the answer
      pk.store(ms, f.m, d);
      residual(p, pk.b, 1.f, ms, r);
      fpack* v = ws;
      for (int j = 0; j < d; ++j) v[j] = fpack(0.f);
      fpack shift(f.g.scale * st.guidance);
      const float* P = kernels::guided_precision(p, f.k, pk.b);
      if (f.g.normalised) {
        fpack norm2(f.g.norm_offset[pk.b]);
        for (int o = 0; o < dy; ++o) norm2 = norm2 + r[o] * r[o];
        shift = ds_select(fpack(0.f) < norm2, fpack(f.g.scale) / ds_sqrt(norm2), fpack(0.f));
      }
      for (int o = 0; o < dy; ++o) {  // v += value_o (row o of A), as guided_add_row
        const fpack value = f.g.normalised ? r[o] : precision_row(p, P, o, r);
        add_operator_row(p, pk.b, o, value, v);
      }
      pk.store(v, f.v, d);
      for (int l = 0; l < pk.valid; ++l) f.shift[pk.i0 + l] = shift.v[l];
      return;
    }
    // Stage 2: x <- c0 m + c1 x + shift J^T v + sig z (baseline_update).
    fpack shift(0.f);
    for (int l = 0; l < pk.valid; ++l) shift.v[l] = f.shift[pk.i0 + l];
    pk.load(ms, f.m, d);
    pk.load(ws, f.answer, d);
    const fpack c0(st.c0), c1(st.c1), sig(st.sig);
    if (st.sig != 0.f) {
      philox_pack rng(p.seed, id, static_cast<std::uint64_t>(f.k) + 1);
      rng.normals(d, [&](int j, fpack z) { xs[j] = c0 * ms[j] + c1 * xs[j] + shift * ws[j] + sig * z; });
    } else {
      for (int j = 0; j < d; ++j) xs[j] = c0 * ms[j] + c1 * xs[j] + shift * ws[j];
    }
    pk.store(xs, f.x, d);
  });
}

}  // namespace diffsample::cpu::DS_SIMD_NS
