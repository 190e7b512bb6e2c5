// Tweedie moment projected diffusion (Boys et al. 2023) for y = A x + sigma_y z on a mixture prior: the per-particle
// math shared by both executors. p(x0 | x_k) is projected on the Gaussian N(m, C) with its own first two moments,
// m = E[x0 | x_k] and C = Cov(x0 | x_k) = (s^2 / a) J (J the denoiser's Jacobian, symmetric for a score model), so
// the likelihood of x_k becomes N(y; A m, A C A^T + sigma_y^2 I). C A^T comes from d_y Jacobian-vector products
// J a_o (a_o the rows of A), never a d x d matrix; the d_y x d_y matrix A C A^T is symmetrised and factored in FP64
// per particle. The guidance is the score of that likelihood with the covariance held fixed, as in the published
// code: J A^T (A C A^T + sigma_y^2 I)^-1 (y - A m) = sum_o f_o (J a_o), added to the DDPM / DDIM mean through the
// factor c0 s^2 / a (how a score enters the mean), like the dps and pigdm baselines.
#pragma once

#include "kernels/config.cuh"
#include "kernels/guided.cuh"
#include "kernels/linalg.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// Per-particle scratch of one TMPD particle.
struct tmpd_scratch {
  float* m;       // d: the denoiser
  float* row;     // d: a row of A as a vector
  float* jrows;   // d_y x d: J a_o
  float* r;       // d_y: y - A m
  double* cyy;    // d_y x d_y: A C A^T + sigma_y^2 I, then its Cholesky factor
  double* f;      // d_y: (A C A^T + sigma_y^2 I)^-1 (y - A m)
};

/// The projected likelihood's pieces at x (channel a, s) for problem b: m, r = y - A m, the rows J a_o, and
/// cyy = sym(A C A^T) + sigma_y^2 I with C = (s^2 / a) J. Costs one denoiser, d_y JVPs, O(d_y^2 d) for A (J A^T).
template <class X>
DS_HD_INLINE void tmpd_moments(const guided_params& p, std::int64_t b, const X& x, float a, float s, float sigma2,
                               const tmpd_scratch& w) {
  const int d = p.d, dy = p.d_y;
  strided_vec<float> m{w.m, 1, d}, row{w.row, 1, d}, r{w.r, 1, dy};
  mixture_denoiser(p.mix, x, a, s, m);
  guided_residual(p, b, 1.f, m, r);
  for (int o = 0; o < dy; ++o) {
    for (int j = 0; j < d; ++j) row[j] = 0.f;
    guided_add_row(p, b, o, 1.f, row);
    strided_vec<float> jo{w.jrows + static_cast<std::int64_t>(o) * d, 1, d};
    mixture_denoiser_jvp(p.mix, x, row, a, s, jo);
  }
  // (A J a_q)_o for every q, accumulated in FP64.
  const double ratio = double(s) * double(s) / double(a);
  for (int q = 0; q < dy; ++q) {
    strided_vec<float> jq{w.jrows + static_cast<std::int64_t>(q) * d, 1, d};
    for (int o = 0; o < dy; ++o) {
      double acc = 0;
      if (p.mask != nullptr) {
        const std::int64_t base = b * p.A_stride;
        acc = double(p.A[base + o]) * double(jq[p.mask[base + o]]);
      } else {
        const float* Arow = p.A + b * p.A_stride + static_cast<std::int64_t>(o) * d;
        for (int j = 0; j < d; ++j) acc += double(Arow[j]) * double(jq[j]);
      }
      w.cyy[o * dy + q] = ratio * acc;
    }
  }
  for (int o = 0; o < dy; ++o) {
    for (int q = 0; q < o; ++q) {
      const double v = 0.5 * (w.cyy[o * dy + q] + w.cyy[q * dy + o]);
      w.cyy[o * dy + q] = v;
      w.cyy[q * dy + o] = v;
    }
    w.cyy[o * dy + o] += double(sigma2);
  }
}

/// One TMPD transition of one particle in place: x <- c0 m + c1 x + scale * guidance * J A^T f + sig z, with
/// f = cyy^-1 (y - A m) (z from the stream (seed, i, k + 1)). Returns false when cyy is not numerically positive
/// definite; the particle is then set to NaN (a diverged run, which solve reports), never silently guided otherwise.
template <class X>
DS_HD_INLINE bool tmpd_step(const guided_params& p, std::int64_t i, std::int64_t k, float scale, float sigma2,
                            X& x, const tmpd_scratch& w) {
  const std::int64_t b = i / p.particles;
  const int d = p.d, dy = p.d_y;
  const guided_step st = p.steps[k];
  tmpd_moments(p, b, x, st.a, st.s, sigma2, w);
  const bool ok = cholesky_failure(w.cyy, dy) < 0;
  if (!ok) {
    for (int j = 0; j < d; ++j) x[j] = NAN;
    return false;
  }
  for (int o = 0; o < dy; ++o) w.f[o] = double(w.r[o]);
  forward_substitute(w.cyy, dy, w.f, 1);
  back_substitute_transposed(w.cyy, dy, w.f, 1);
  // g = sum_o f_o (J a_o), accumulated in row.
  for (int j = 0; j < d; ++j) w.row[j] = 0.f;
  for (int o = 0; o < dy; ++o) {
    const float fo = float(w.f[o]);
    const float* jo = w.jrows + static_cast<std::int64_t>(o) * d;
    for (int j = 0; j < d; ++j) w.row[j] += fo * jo[j];
  }
  const float shift = scale * st.guidance;
  if (st.sig != 0.f) {
    philox rng(p.seed, host_shard_stream(p, i, b), static_cast<std::uint64_t>(k) + 1);
    rng.normals(d, [&](int j, float z) { x[j] = st.c0 * w.m[j] + st.c1 * x[j] + shift * w.row[j] + st.sig * z; });
  } else {
    for (int j = 0; j < d; ++j) x[j] = st.c0 * w.m[j] + st.c1 * x[j] + shift * w.row[j];
  }
  return true;
}

/// A whole TMPD trajectory per particle (B N particles, particle i = b N + j): x = s_0 z (stream step 0), then
/// `steps` transitions. sigma2: 1 value (shared) or B values of sigma_y^2.
struct guided_tmpd_functor {
  guided_params p;
  std::int64_t steps;
  float scale;
  const float* sigma2;  // B values
  float* x;             // B N x d (output)
  float* fwork;         // B N x (2 d + d_y d + d_y) floats
  double* dwork;        // B N x (d_y^2 + d_y) doubles
  DS_HD void operator()(std::int64_t i) const {
    const int d = p.d, dy = p.d_y;
    const std::int64_t b = i / p.particles;
    const std::int64_t fper = 2 * static_cast<std::int64_t>(d) + static_cast<std::int64_t>(dy) * d + dy;
    const std::int64_t dper = static_cast<std::int64_t>(dy) * dy + dy;
    float* f0 = fwork + i * fper;
    double* d0 = dwork + i * dper;
    tmpd_scratch w{f0, f0 + d, f0 + 2 * d, f0 + 2 * d + static_cast<std::int64_t>(dy) * d, d0,
                   d0 + static_cast<std::int64_t>(dy) * dy};
    strided_vec<float> xi{x + i * d, 1, d};
    {
      philox rng(p.seed, host_shard_stream(p, i, b), 0);
      const float s0 = p.initial_scale;
      rng.normals(d, [&](int j, float z) { xi[j] = s0 * z; });
    }
    const float s2 = sigma2[b];
    for (std::int64_t k = 0; k < steps; ++k)
      if (!tmpd_step(p, i, k, scale, s2, xi, w)) return;
  }
};

}  // namespace diffsample::kernels
