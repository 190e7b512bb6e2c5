// SKRock (Pereyra, Vargas Mieles, Zygalakis 2020: the s-stage stochastic orthogonal Runge-Kutta-Chebyshev method,
// SK-ROCK) on the posterior p(x | y) of a mixture prior under y = A x + sigma_y z: the per-particle math, shared by
// both executors. Formulas in the README ("SKRock").
//
// Drift b(x) = grad log p(x | y) = score(x) + A^T (y - A x) / sigma_y^2, score the prior's own score (the mixture at
// channel (1, 0), as the Langevin samplers use it). One iteration from X_0 = x with xi ~ N(0, I) (stream (seed,
// particle, n + 1)), c = sqrt(2 h):
//   X_1 = X_0 + mu_1 h b(X_0 + nu_1 c xi) + kappa_1 c xi,
//   X_j = mu_j h b(X_{j-1}) + nu_j X_{j-1} + kappa_j X_{j-2},   j = 2..s,
// and x <- X_s. The Chebyshev coefficients (mu_j, nu_j, kappa_j) depend only on s and the damping eta and the step
// h only on the problem: the host computes them in FP64 (src/guided_skrock.cu).
#pragma once

#include "kernels/guided.cuh"
#include "kernels/mixture_points.cuh"

namespace diffsample::kernels {

/// SKRock's tables (device-side copies of the host's FP64 values, rounded to float).
struct skrock_params {
  const float* step;           // B: h per problem
  const float* inv_noise_var;  // B: 1 / sigma_y^2 per problem
  const float* coefficients;   // stages x 3: mu_j, nu_j, kappa_j (j = 1..s)
  int stages;
  /// The prior's FP64 cumulative weights (K, on the run's executor) for the exact initial draws (prior_draw); nullptr
  /// where nothing draws from the prior (an ask/tell plan, whose state is the caller's).
  const double* cumulative = nullptr;
};

/// g += A_b^T (y_b - A_b x) / sigma_y^2, the likelihood's part of the drift (r: d_y scratch).
template <class X, class G, class R>
DS_HD_INLINE void skrock_add_likelihood(const guided_params& p, const skrock_params& q, std::int64_t b, const X& x,
                                        G& g, R& r) {
  guided_residual(p, b, 1.f, x, r);
  const float w = q.inv_noise_var[b];
  for (int o = 0; o < p.d_y; ++o) guided_add_row(p, b, o, w * r[o], g);
}

/// g = b(x) = score(x) + A_b^T (y_b - A_b x) / sigma_y^2 (r: d_y scratch).
template <class X, class G, class R>
DS_HD_INLINE void skrock_drift(const guided_params& p, const skrock_params& q, std::int64_t b, const X& x, G& g,
                               R& r) {
  channel_score<float>(p.channels.at(0, 1.f, 0.f), x, g);  // the table's one channel, (1, 0)
  skrock_add_likelihood(p, q, b, x, g, r);
}

// The pieces of one iteration, shared by the fused iteration (skrock_iteration), the CPU executor's stepwise run and
// the ask/tell plan (skrock_stage_functor): `key` is the particle's Philox stream, n the iteration.

/// The first drift point of iteration n: cur = x + nu_1 c xi (xi: stream step n + 1).
template <class X, class V>
DS_HD_INLINE void skrock_perturb(const guided_params& p, const skrock_params& q, std::uint64_t key, std::int64_t b,
                                 std::int64_t n, const X& x, V& cur) {
  const float c = ds_sqrt(2.f * q.step[b]);
  const float nu1 = q.coefficients[1];
  philox rng(p.seed, key, static_cast<std::uint64_t>(n) + 1);
  rng.normals(p.d, [&](int j, float z) { cur[j] = x[j] + nu1 * c * z; });
}

/// Stage 1 of iteration n from the drift g at the perturbed point: old = x, cur = x + mu_1 h g + kappa_1 c xi (the
/// same xi again).
template <class X, class V, class G>
DS_HD_INLINE void skrock_first(const guided_params& p, const skrock_params& q, std::uint64_t key, std::int64_t b,
                               std::int64_t n, const X& x, const G& g, V& cur, V& old) {
  const float h = q.step[b];
  const float c = ds_sqrt(2.f * h);
  const float mu1 = q.coefficients[0], kappa1 = q.coefficients[2];
  philox rng(p.seed, key, static_cast<std::uint64_t>(n) + 1);
  rng.normals(p.d, [&](int j, float z) {
    old[j] = x[j];
    cur[j] = x[j] + mu1 * h * g[j] + kappa1 * c * z;
  });
}

/// Stage s + 1 (s = 1 .. stages - 1) from the drift g at cur: old = mu h g + nu cur + kappa old, the new value
/// (the caller swaps cur and old).
template <class V, class G>
DS_HD_INLINE void skrock_stage(const skrock_params& q, std::int64_t b, int s, int d, const G& g, const V& cur,
                               V& old) {
  const float h = q.step[b];
  const float mu = q.coefficients[3 * s], nu = q.coefficients[3 * s + 1], kappa = q.coefficients[3 * s + 2];
  for (int j = 0; j < d; ++j) old[j] = mu * h * g[j] + nu * cur[j] + kappa * old[j];
}

/// Iteration n of a particle of problem b with stream `key` (stream step n + 1), x in place; cur, old and g are
/// d-vectors of scratch.
template <class X, class V, class R>
DS_HD_INLINE void skrock_iteration_of(const guided_params& p, const skrock_params& q, std::int64_t b,
                                      std::uint64_t key, std::int64_t n, X& x, V& cur, V& old, V& g, R& r) {
  const int d = p.d;
  skrock_perturb(p, q, key, b, n, x, cur);
  skrock_drift(p, q, b, cur, g, r);
  skrock_first(p, q, key, b, n, x, g, cur, old);
  for (int s = 1; s < q.stages; ++s) {
    skrock_drift(p, q, b, cur, g, r);
    skrock_stage(q, b, s, d, g, cur, old);
    swap_vec(cur, old);
  }
  for (int j = 0; j < d; ++j) x[j] = cur[j];
}

/// Iteration n of particle i (stream step n + 1), x in place; cur, old and g are d-vectors of scratch.
template <class X, class V, class R>
DS_HD_INLINE void skrock_iteration(const guided_params& p, const skrock_params& q, std::int64_t i, std::int64_t n,
                                   X& x, V& cur, V& old, V& g, R& r) {
  const std::int64_t b = i / p.particles;
  skrock_iteration_of(p, q, b, guided_stream(p, i, b), n, x, cur, old, g, r);
}

/// SKRock's initial state: the exact prior draw `key` (stream step 0), as gaussian_mixture::sample() draws it at
/// channel (1, 0) (exact_draw: the component by a 64-bit uniform against the FP64 cumulative weights).
template <class X>
DS_HD_INLINE void prior_draw(const guided_params& p, const skrock_params& q, std::uint64_t key, X& x) {
  exact_draw(p.mix, q.cumulative, p.seed, key, 1.f, 0.f, x);
}

/// A whole SKRock chain per particle: an exact prior draw (stream step 0), then `iterations` iterations. The drift
/// g (the score accumulated K times per coordinate, then d_y rows of A added) lives in the scratch: shared memory
/// on the CUDA executor when a warp's d floats fit, else work's rows (kernels/guided.cuh, "Layout").
struct guided_skrock_functor {
  guided_params p;
  skrock_params q;
  std::int64_t iterations;
  float* x;     // B N x d (output), in the run's layout
  float* work;  // B N x 3 d scratch (cur, old, g)
  float* r;     // B N x d_y scratch
  DS_HD int scratch_floats() const { return p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const { return guided_slice(p, work, i, 3 * p.d, 2 * p.d, p.d); }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> g) const {
    const int d = p.d;
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d), cur = guided_slice(p, work, i, 3 * d, 0, d),
                       old = guided_slice(p, work, i, 3 * d, d, d), ri = guided_slice(p, r, i, p.d_y, 0, p.d_y);
    // The problem once, not per iteration (a 64-bit division). The stream (a shard's offset included: two
    // multiply-adds) per iteration instead of held across it: held, the kernel took 128 registers instead of 96.
    const std::int64_t b = i / p.particles;
    prior_draw(p, q, guided_stream(p, i, b), xi);
    for (std::int64_t n = 0; n < iterations; ++n)
      skrock_iteration_of(p, q, b, guided_stream(p, i, b), n, xi, cur, old, g, ri);
  }
};

/// What a stage of the stepwise SKRock run does (skrock_stage_functor::op).
enum skrock_op : int {
  skrock_op_initial = 0,  ///< an exact prior draw (stream step 0), then the first drift point
  skrock_op_start = 1,    ///< the first drift point from the state as it is (a plan's caller-given state)
  skrock_op_stage = 2,    ///< stage s of iteration n from the prior's score at the stage's point (the answer)
};

/// The stepwise SKRock run over B N row-major particles (the CPU executor and the ask/tell plan), one launch per
/// drift evaluation: stage s of iteration n takes the prior's score at cur (answer), adds the likelihood's part and
/// applies the stage (skrock_first for s = 0, else skrock_stage and the swap, as copies); after the last stage x =
/// cur and, unless the run is over, cur = the next iteration's first drift point. Particle i of problem b draws
/// from the stream id_base + guided_stream(p, i, b) (id_base: a plan's trajectory, in device memory; nullptr for
/// 0), formed at each use rather than held across the normals' square-root slow-path calls (held, the device code
/// spilled 20/32 bytes).
struct skrock_stage_functor {
  guided_params p;
  skrock_params q;
  int op;
  std::int64_t n;  // iteration
  int s;           // stage, 0 .. stages - 1
  std::int64_t iterations;
  float* x;              // B N x d: the particles
  float* cur;            // B N x d: the points of the drift evaluations
  float* old;            // B N x d
  float* g;              // B N x d: the drift (may be `answer`)
  const float* answer;   // B N x d: the prior's score at cur
  float* r;              // B N x d_y scratch
  const std::uint64_t* id_base;  // the trajectory's first particle id (device memory), or nullptr for 0
  std::int64_t* position;        // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (position != nullptr && i == 0) *position = next_position;
    const int d = p.d;
    const std::int64_t b = i / p.particles;
    const auto key = [&] { return (id_base != nullptr ? *id_base : 0) + guided_stream(p, i, b); };
    strided_vec<float> xi{x + i * d, 1, d}, ci{cur + i * d, 1, d}, oi{old + i * d, 1, d}, gi{g + i * d, 1, d},
        ri{r + i * p.d_y, 1, p.d_y};
    if (op == skrock_op_initial) prior_draw(p, q, key(), xi);
    if (op != skrock_op_stage) {
      if (iterations > 0) skrock_perturb(p, q, key(), b, 0, xi, ci);
      return;
    }
    const float* ai = answer + i * d;
    for (int j = 0; j < d; ++j) gi[j] = ai[j];
    skrock_add_likelihood(p, q, b, ci, gi, ri);
    if (s == 0) {
      skrock_first(p, q, key(), b, n, xi, gi, ci, oi);
    } else {
      skrock_stage(q, b, s, d, gi, ci, oi);
      for (int j = 0; j < d; ++j) {  // swap: cur the new value, old the previous one
        const float t = oi[j];
        oi[j] = ci[j];
        ci[j] = t;
      }
    }
    if (s + 1 < q.stages) return;
    for (int j = 0; j < d; ++j) xi[j] = ci[j];
    if (n + 1 < iterations) skrock_perturb(p, q, key(), b, n + 1, xi, ci);
  }
};

}  // namespace diffsample::kernels
