// DiffPIR (Zhu et al. 2023, plug-and-play diffusion) on the guided samplers' tables (kernels/guided.cuh): per
// particle and step the denoiser, the closed-form proximal data step of the linear Gaussian likelihood, and the
// re-noising. Formulas in the README ("DiffPIR"); shared by both executors.
//
// Step k goes from grid point k (channel a, s) to k + 1 (a', s'). The host folds into the tables:
// - the precision table of step k and problem b: (A A^T + w_k I)^-1, w_k = rho_k / 2 = lambda sigma_y^2 a^2 / (2 s^2)
//   (DeepInverse's convention: the prox of 2 f / rho_k, f = |y - A z|^2 / 2; masks: its diagonal), so that the
//   proximal step is x0 = m + A^T (A A^T + w_k I)^-1 (y - A m), the Woodbury form of (A^T A + w_k I)^-1 (A^T y + w_k m);
// - the re-noising x' = a' x0 + s' (sqrt(1 - zeta) eps + sqrt(zeta) z), eps = (x - a x0) / s, written as
//   x' = c0 x0 + c1 x + sig z with c1 = s' sqrt(1 - zeta) / s, c0 = a' - c1 a, sig = s' sqrt(zeta), in the step's
//   c0, c1 and sig fields (the DDPM kernel's fields, which DiffPIR does not use).
#pragma once

#include "kernels/guided.cuh"

namespace diffsample::kernels {

/// The second half of DiffPIR step k for particle `id` of problem b, from its denoiser m (overwritten by x0):
/// x0 = m + A^T P (y - A m), then x' = c0 x0 + c1 x + sig z with z from the stream (seed, id, k + 1). Shared by the
/// fused step (diffpir_step), the CPU executor's stepwise run and the ask/tell plan (diffpir_stage_functor), so
/// that a plan answered with the mixture's denoiser reproduces the fused run.
template <class X, class M, class R>
DS_HD_INLINE void diffpir_update(const guided_params& p, std::int64_t b, std::int64_t k, std::uint64_t id, X& x, M& m,
                                 R& r) {
  const guided_step st = p.steps[k];
  guided_residual(p, b, 1.f, m, r);
  const float* P = guided_precision(p, k, b);
  // x0 = m + A^T P r, one row of A at a time (r stays as it is while m moves).
  for (int o = 0; o < p.d_y; ++o) guided_add_row(p, b, o, guided_precision_row(p, P, o, r), m);
  philox rng(p.seed, id, static_cast<std::uint64_t>(k) + 1);
  const affine_update update = transition_update(st);
  if (st.sig != 0.f) {
    rng.normals(p.d, [&](int j, float z) { x[j] = update(float(x[j]), float(m[j]), z); });
  } else {
    for (int j = 0; j < p.d; ++j) x[j] = update(float(x[j]), float(m[j]));
  }
}

/// One DiffPIR step of particle i from x (in place): m = m(x) at (a, s), then diffpir_update with the particle's
/// stream (seed, i, k + 1).
template <class X, class M, class R>
DS_HD_INLINE void diffpir_step(const guided_params& p, std::int64_t i, std::int64_t k, X& x, M& m, R& r) {
  const std::int64_t b = i / p.particles;
  guided_denoiser(guided_channel(p, k), x, m);
  diffpir_update(p, b, k, guided_stream(p, i, b), x, m, r);
}

/// A whole DiffPIR trajectory per particle: x = s_0 z (stream step 0), then `steps` steps of diffpir_step. The
/// denoiser m (accumulated K times per coordinate, then d_y rows of A added) lives in the scratch: shared memory on
/// the CUDA executor when a warp's d floats fit, else work's rows (kernels/guided.cuh, "Layout").
struct guided_diffpir_functor {
  guided_params p;
  std::int64_t steps;
  float* x;     // B N x d (output), in the run's layout
  float* work;  // B N x 3 d scratch (m)
  float* r;     // B N x d_y scratch
  DS_HD int scratch_floats() const { return p.d; }
  DS_HD strided_vec<float> scratch(std::int64_t i) const { return guided_slice(p, work, i, 3 * p.d, 0, p.d); }
  DS_HD void operator()(std::int64_t i) const { (*this)(i, scratch(i)); }
  DS_HD void operator()(std::int64_t i, strided_vec<float> mi) const {
    const int d = p.d;
    strided_vec<float> xi = guided_slice(p, x, i, d, 0, d), ri = guided_slice(p, r, i, p.d_y, 0, p.d_y);
    baseline_initial(p, guided_stream(p, i, i / p.particles), xi);
    for (std::int64_t k = 0; k < steps; ++k) diffpir_step(p, i, k, xi, mi, ri);
  }
};

/// The stepwise DiffPIR run over B N row-major particles (the CPU executor and the ask/tell plan), one launch per
/// stage: stage 0 draws x = s_0 z (stream step 0), stage 1 turns the model's answer into the denoiser m = ux x +
/// um answer and applies diffpir_update. Particle i of problem b draws from the stream id_base + guided_stream(p, i,
/// b) (id_base: the plan's trajectory, in its state; nullptr for 0).
struct diffpir_stage_functor {
  guided_params p;
  std::int64_t k;
  int stage;
  float ux, um;
  float* x;                      // B N x d
  float* m;                      // B N x d: the denoiser, then x0 (may be `answer` when ux = 0, um = 1)
  const float* answer;           // B N x d: the model's output at x and step k's channel
  float* r;                      // B N x d_y scratch
  const std::uint64_t* id_base;  // the trajectory's first particle id (device memory), or nullptr for 0
  std::int64_t* position;        // when not null, thread 0 stores next_position there
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    const int d = p.d;
    const std::int64_t b = i / p.particles;
    strided_vec<float> xi{x + i * d, 1, d};
    const std::uint64_t id = stage_begin(p, i, b, id_base, position, next_position, stage, xi);
    if (stage == 0) return;
    strided_vec<float> mi{m + i * d, 1, d}, ri{r + i * p.d_y, 1, p.d_y};
    answer_as_denoiser(d, ux, um, xi, answer + i * d, mi);
    diffpir_update(p, b, k, id, xi, mi, ri);
  }
};

}  // namespace diffsample::kernels
