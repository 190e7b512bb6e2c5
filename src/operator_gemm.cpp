// The guided samplers' stepwise CPU runs with a dense operator applied to every particle as one matrix product per
// step (src/operator_gemm.hpp): DPS / Pi-GDM's guidance half-step forms A m for all particles and A^T u for all
// particles with sgemm, and only the d_y-sized work between them per particle.
#include <cmath>
#include <vector>

#include "kernels/guided.cuh"
#include "src/cpu/pool.hpp"
#include "src/operator_gemm.hpp"

namespace diffsample::detail {

bool baseline_operator_gemm(const kernels::guided_params& p, std::int64_t rows) {
  // Dense rows (no mask), shared or per problem; the size rule on the rows one product covers.
  const std::int64_t per_product = p.A_stride == 0 ? rows : p.particles;
  return p.mask == nullptr && operator_gemm_worthwhile(per_product, p.d_y, p.d);
}

void baseline_guidance_gemm(const kernels::guided_params& p, const kernels::baseline_settings& g, std::int64_t k,
                            float ux, float um, const float* x, float* m, const float* answer, float* v,
                            float* shift, float* r, std::int64_t rows) {
  const int d = p.d, dy = p.d_y;
  if (!(ux == 0.f && um == 1.f && answer == m))
    cpu::parallel_for_each(rows, [&](std::int64_t i) {
      for (int j = 0; j < d; ++j) m[i * d + j] = kernels::ds_fma(ux, x[i * d + j], um * answer[i * d + j]);
    });
  // r = A m for every particle: one product when A is shared, one per problem otherwise.
  const std::int64_t per = p.A_stride == 0 ? rows : p.particles;
  for (std::int64_t first = 0; first < rows; first += per)
    dense_rows_forward_gemm(p.A + (first / p.particles) * p.A_stride, dy, d, m + first * d, per, r + first * dy);
  // Per particle: r = y - A m, the step's factor and u = P r (likelihood step) or r (normalised step), into r.
  const kernels::guided_step st = p.steps[k];
  cpu::parallel_for_each(rows, [&](std::int64_t i) {
    thread_local std::vector<float> t;
    t.resize(std::size_t(dy));
    const std::int64_t b = i / p.particles;
    const float* y = p.y + b * dy;
    float* ri = r + i * dy;
    for (int o = 0; o < dy; ++o) t[o] = y[o] - ri[o];
    if (g.normalised) {
      float norm2 = g.norm_offset[b];
      for (int o = 0; o < dy; ++o) norm2 += t[o] * t[o];
      shift[i] = norm2 > 0.f ? g.scale / kernels::ds_sqrt(norm2) : 0.f;
      for (int o = 0; o < dy; ++o) ri[o] = t[o];
    } else {
      shift[i] = g.scale * st.guidance;
      const float* P = kernels::guided_precision(p, k, b);
      for (int o = 0; o < dy; ++o) ri[o] = kernels::guided_precision_row(p, P, o, t.data());
    }
  });
  // v = A^T u for every particle.
  for (std::int64_t first = 0; first < rows; first += per)
    dense_rows_transpose_gemm(p.A + (first / p.particles) * p.A_stride, dy, d, r + first * dy, per, v + first * d);
}

}  // namespace diffsample::detail
