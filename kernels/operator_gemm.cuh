// The per-particle work of the DPS / Pi-GDM guidance between its two operator products (src/operator_gemm.hpp),
// shared by the CPU executor's run (src/operator_gemm.cpp) and the CUDA executor's (src/operator_gemm.cu, which
// launches the functors below around its cuBLAS products).
#pragma once

#include <cstdint>

#include "kernels/guided.cuh"

namespace diffsample::kernels {

/// Particle i of step k, with r_i holding A m: r_i = y_b - A m in place, shift_i the step's factor, and u_i = P r_i
/// (likelihood step) into u, or r_i itself as u (DPS's normalised step, where u is not written). The values of
/// baseline_guidance for the same A m.
DS_HD_INLINE void baseline_residual(const guided_params& p, const baseline_settings& g, std::int64_t k,
                                    std::int64_t i, float* r, float* u, float* shift) {
  const int dy = p.d_y;
  const std::int64_t b = i / p.particles;
  const float* y = p.y + b * dy;
  float* ri = r + i * dy;
  for (int o = 0; o < dy; ++o) ri[o] = y[o] - ri[o];
  if (g.normalised) {
    float norm2 = g.norm_offset[b];
    for (int o = 0; o < dy; ++o) norm2 += ri[o] * ri[o];
    shift[i] = norm2 > 0.f ? g.scale / ds_sqrt(norm2) : 0.f;
    return;
  }
  shift[i] = g.scale * p.steps[k].guidance;
  const float* P = guided_precision(p, k, b);
  float* ui = u + i * dy;
  for (int o = 0; o < dy; ++o) ui[o] = guided_precision_row(p, P, o, ri);
}

/// m = ux x + um answer (the model's output turned into the denoiser), row-major rows of d floats.
struct denoiser_from_answer_functor {
  const float* x;
  const float* answer;
  float* m;
  float ux, um;
  int d;
  DS_HD void operator()(std::int64_t i) const {
    for (int j = 0; j < d; ++j) m[i * d + j] = ds_fma(ux, x[i * d + j], um * answer[i * d + j]);
  }
};

/// baseline_residual() over the particles.
struct baseline_residual_functor {
  guided_params p;
  baseline_settings g;
  std::int64_t k;
  float* r;
  float* u;
  float* shift;
  DS_HD void operator()(std::int64_t i) const { baseline_residual(p, g, k, i, r, u, shift); }
};

}  // namespace diffsample::kernels
