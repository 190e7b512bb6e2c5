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

/// Per-particle scratch of one TMPD particle. The float vectors are in the run's layout (kernels/guided.cuh,
/// "Layout"): m and jv, accumulated once per component, are the launch's scratch (shared memory on the CUDA executor
/// when a warp's 2 d floats fit); the products J a_o and r are coordinate-major global rows on the CUDA executor. The
/// FP64 d_y x d_y system stays row-major per particle (kernels/linalg.cuh), O(d_y^3) accesses against the products'
/// O(K d d_y).
struct tmpd_scratch {
  strided_vec<float> m;      // d: the denoiser
  strided_vec<float> jv;     // d: one product J a_o as it accumulates
  strided_vec<float> jrows;  // d_y d: J a_o at coordinates [o d, o d + d)
  strided_vec<float> r;      // d_y: y - A m
  double* cyy;               // d_y x d_y: A C A^T + sigma_y^2 I, then its Cholesky factor
  double* f;                 // d_y: (A C A^T + sigma_y^2 I)^-1 (y - A m)
  DS_HD_INLINE strided_vec<float> jrow(int o) const {
    return {jrows.p + static_cast<std::int64_t>(o) * m.d * jrows.stride, jrows.stride, m.d};
  }
  /// Floats of one particle's row (m, jv, the products, r) and doubles of its system.
  DS_HD_INLINE static std::int64_t floats(int d, int dy) {
    return (2 + static_cast<std::int64_t>(dy)) * d + dy;
  }
  DS_HD_INLINE static std::int64_t doubles(int dy) { return static_cast<std::int64_t>(dy) * dy + dy; }
  /// The scratch over one contiguous row of floats(d, dy) floats and one of doubles(dy) doubles.
  DS_HD_INLINE static tmpd_scratch rows(float* f0, double* d0, int d, int dy) {
    return {{f0, 1, d},           {f0 + d, 1, d}, {f0 + 2 * d, 1, dy * d}, {f0 + 2 * d + dy * d, 1, dy},
            d0, d0 + static_cast<std::int64_t>(dy) * dy};
  }
};

/// Row o of A_b as a vector into v (d values): the vector of the product J a_o in a stepwise run.
template <class V>
DS_HD_INLINE void tmpd_row(const guided_params& p, std::int64_t b, int o, V& v) {
  for (int j = 0; j < p.d; ++j) v[j] = 0.f;
  guided_add_row(p, b, o, 1.f, v);
}

/// From the rows J a_o (w.jrow(o)): cyy = sym(A C A^T) + sigma_y^2 I with C = (s^2 / a) J, (A J a_q)_o accumulated
/// in FP64.
DS_HD_INLINE void tmpd_covariance(const guided_params& p, std::int64_t b, float a, float s, float sigma2,
                                  const tmpd_scratch& w) {
  const int d = p.d, dy = p.d_y;
  const double ratio = double(s) * double(s) / double(a);
  for (int q = 0; q < dy; ++q) {
    const strided_vec<float> jq = w.jrow(q);
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

/// The projected likelihood's pieces at x (channel a, s; c: the mixture there, denoiser_at / jvp_at) for problem b:
/// m, r = y - A m, the rows J a_o, and cyy = sym(A C A^T) + sigma_y^2 I with C = (s^2 / a) J. Costs one denoiser,
/// d_y JVPs, O(d_y^2 d) for A (J A^T). The rows of A enter the products in place (operator_row), not copied per
/// particle.
template <class X, class Ch>
DS_HD_INLINE void tmpd_moments(const guided_params& p, std::int64_t b, const X& x, const Ch& c, float a, float s,
                               float sigma2, const tmpd_scratch& w) {
  const int d = p.d, dy = p.d_y;
  denoiser_at(c, x, w.m);
  guided_residual(p, b, 1.f, w.m, w.r);
  for (int o = 0; o < dy; ++o) {
    jvp_at(c, x, guided_operator_row(p, b, o), w.jv);
    const strided_vec<float> jo = w.jrow(o);
    for (int j = 0; j < d; ++j) jo[j] = w.jv[j];
  }
  tmpd_covariance(p, b, a, s, sigma2, w);
}

/// tmpd_moments() from the mixture's own functions at (a, s) (no table).
template <class X>
DS_HD_INLINE void tmpd_moments(const guided_params& p, std::int64_t b, const X& x, float a, float s, float sigma2,
                               const tmpd_scratch& w) {
  tmpd_moments(p, b, x, mixture_at{p.mix, a, s}, a, s, sigma2, w);
}

/// The second half of TMPD transition k from its moments (w.m, w.r, the rows, w.cyy), for the particle of stream
/// `id`: f = cyy^-1 (y - A m), then x <- c0 m + c1 x + scale * guidance * sum_o f_o (J a_o) + sig z (z from the
/// stream step k + 1). Returns false when cyy is not numerically positive definite; the particle is then set to NaN
/// (a diverged run, which solve reports), never silently guided otherwise.
template <class X>
DS_HD_INLINE bool tmpd_update(const guided_params& p, std::uint64_t id, std::int64_t k, float scale, X& x,
                              const tmpd_scratch& w) {
  const int d = p.d, dy = p.d_y;
  const guided_step st = p.steps[k];
  // Each pivot against its own diagonal entry: that entry is ratio a_o^T (J a_o) + sigma_y^2, a quadratic form of the
  // PSD C (a sum of non-negative parts up to FP32 rounding) plus sigma_y^2, so rows of A on very different scales are
  // not taken for a singular matrix.
  const bool ok = cholesky_failure_scaled(w.cyy, dy) < 0;
  if (!ok) {
    for (int j = 0; j < d; ++j) x[j] = NAN;
    return false;
  }
  for (int o = 0; o < dy; ++o) w.f[o] = double(w.r[o]);
  forward_substitute(w.cyy, dy, w.f, 1);
  back_substitute_transposed(w.cyy, dy, w.f, 1);
  // g_j = sum_o f_o (J a_o)_j, coordinate by coordinate in a register.
  auto guidance = [&](int j) {
    float g = 0.f;
    for (int o = 0; o < dy; ++o) g += float(w.f[o]) * w.jrow(o)[j];
    return g;
  };
  const float shift = scale * st.guidance;
  if (st.sig != 0.f) {
    philox rng(p.seed, id, static_cast<std::uint64_t>(k) + 1);
    rng.normals(d, [&](int j, float z) { x[j] = st.c0 * w.m[j] + st.c1 * x[j] + shift * guidance(j) + st.sig * z; });
  } else {
    for (int j = 0; j < d; ++j) x[j] = st.c0 * w.m[j] + st.c1 * x[j] + shift * guidance(j);
  }
  return true;
}

/// One TMPD transition of one particle in place: the moments, then tmpd_update() (stream (seed, i, k + 1)).
template <class X>
DS_HD_INLINE bool tmpd_step(const guided_params& p, std::int64_t i, std::int64_t k, float scale, float sigma2,
                            X& x, const tmpd_scratch& w) {
  const std::int64_t b = i / p.particles;
  const guided_step st = p.steps[k];
  tmpd_moments(p, b, x, guided_channel(p, k), st.a, st.s, sigma2, w);
  return tmpd_update(p, guided_stream(p, i, b), k, scale, x, w);
}

/// A whole TMPD trajectory per particle (B N particles, particle i = b N + j): x = s_0 z (stream step 0), then
/// `steps` transitions. sigma2: 1 value (shared) or B values of sigma_y^2. The scratch (m and jv, 2 d floats) is
/// shared memory on the CUDA executor when a warp's fits (kernels/launch.cuh for_each_index_scratch_kernel), else
/// the first 2 d floats of the particle's row of fwork.
struct guided_tmpd_functor {
  guided_params p;
  std::int64_t steps;
  float scale;
  const float* sigma2;  // B values
  float* x;             // B N x d (output), in the run's layout
  float* fwork;         // B N x tmpd_scratch::floats(d, d_y), in the run's layout
  double* dwork;        // B N x tmpd_scratch::doubles(d_y), row-major
  DS_HD int scratch_floats() const { return 2 * p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const {
    return guided_slice(p, fwork, i, tmpd_scratch::floats(p.d, p.d_y), 0, 2 * p.d);
  }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> s) const {
    const int d = p.d, dy = p.d_y;
    const std::int64_t b = i / p.particles;
    const std::int64_t row = tmpd_scratch::floats(d, dy);
    double* d0 = dwork + i * tmpd_scratch::doubles(dy);
    const tmpd_scratch w{{s.p, s.stride, d},
                         {s.p + d * s.stride, s.stride, d},
                         guided_slice(p, fwork, i, row, 2 * d, dy * d),
                         guided_slice(p, fwork, i, row, (2 + dy) * d, dy),
                         d0,
                         d0 + static_cast<std::int64_t>(dy) * dy};
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d);
    {
      philox rng(p.seed, guided_stream(p, i, b), 0);
      const float s0 = p.initial_scale;
      rng.normals(d, [&](int j, float z) { xi[j] = s0 * z; });
    }
    const float s2 = sigma2[b];
    for (std::int64_t k = 0; k < steps; ++k)
      if (!tmpd_step(p, i, k, scale, s2, xi, w)) return;
  }
};

}  // namespace diffsample::kernels
