// The per-particle work of the DPS / Pi-GDM guidance between its two operator products (internal), shared by the CPU
// executor's run (src/operator_gemm.cpp) and the CUDA executor's (src/operator_gemm.cu).
#pragma once

#include "kernels/guided.cuh"

namespace diffsample::detail {

/// Particle i of step k, with r_i holding A m: r_i = y_b - A m in place, shift_i the step's factor, and u_i = P r_i
/// (likelihood step) into u, or r_i itself as u (DPS's normalised step, where u is not written). The values of
/// kernels::baseline_guidance for the same A m.
DS_HD_INLINE void baseline_residual(const kernels::guided_params& p, const kernels::baseline_settings& g,
                                    std::int64_t k, std::int64_t i, float* r, float* u, float* shift) {
  const int dy = p.d_y;
  const std::int64_t b = i / p.particles;
  const float* y = p.y + b * dy;
  float* ri = r + i * dy;
  for (int o = 0; o < dy; ++o) ri[o] = y[o] - ri[o];
  if (g.normalised) {
    float norm2 = g.norm_offset[b];
    for (int o = 0; o < dy; ++o) norm2 += ri[o] * ri[o];
    shift[i] = norm2 > 0.f ? g.scale / kernels::ds_sqrt(norm2) : 0.f;
    return;
  }
  shift[i] = g.scale * p.steps[k].guidance;
  const float* P = kernels::guided_precision(p, k, b);
  float* ui = u + i * dy;
  for (int o = 0; o < dy; ++o) ui[o] = kernels::guided_precision_row(p, P, o, ri);
}

}  // namespace diffsample::detail
