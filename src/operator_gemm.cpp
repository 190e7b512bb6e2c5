// The guided samplers' stepwise CPU runs with a dense operator applied to every particle as one matrix product per
// step (src/operator_gemm.hpp): DPS / Pi-GDM's guidance half-step forms A m for all particles, u = P r for all
// particles of a problem (not for the normalised DPS step, whose u is r) and A^T u for all particles with sgemm, and
// only the d_y-sized work between them per particle.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/guided.cuh"
#include "kernels/guided_stepwise.cuh"
#include "kernels/operator_gemm.cuh"
#include "src/mixture_gemm.hpp"
#include "src/cpu/pool.hpp"
#include "src/operator_gemm.hpp"

namespace diffsample::detail {

bool baseline_operator_gemm(bool mask, std::int64_t particles, std::int64_t d_y, std::int64_t d, mixture_path path,
                            executor where) {
  // Dense rows (no mask), shared or per problem; the size rule on a problem's particles (one product each) unless
  // forced: a problem's path and its bits do not depend on the other problems of the call.
  if (mask || path == mixture_path::direct) return false;
  if (path == mixture_path::gemm) return true;
  return operator_gemm_worthwhile(particles, d_y, d, where);
}

bool tmpd_operator_gemm(bool masks, std::int64_t d_y, std::int64_t d, mixture_path path) {
  if (masks || path == mixture_path::direct) return false;
  return path == mixture_path::gemm || d_y * d >= tmpd_gemm_min_size;
}

bool tmpd_operator_gemm(const kernels::guided_params& p, mixture_path path) {
  return tmpd_operator_gemm(p.mask != nullptr, p.d_y, p.d, path);
}

namespace {

// The tiles of `tile` particles, aligned to the particles' indices in the whole run, that cover `count` particles of a
// problem whose first is index `first` there (guided_params::stream_first): f(i, lead, take) for the call's particles
// i .. i + take - 1, at places lead .. lead + take - 1 of their tile (a tile the call holds part of: take < tile).
template <class F>
void for_each_run_tile(std::int64_t count, std::int64_t first, std::int64_t tile, const F& f) {
  for (std::int64_t i = 0; i < count;) {
    const std::int64_t lead = (first + i) % tile, take = std::min(tile - lead, count - i);
    f(i, lead, take);
    i += take;
  }
}

// Particles per call of the guidance's products (a multiple of every BLAS's column unroll).
constexpr std::int64_t guidance_tile = 128;

// out = product(in) over `count` particles of a problem, `in_values` and `out_values` values each, as calls
// product(in, out, columns) of exactly guidance_tile particles, the tiles aligned to the particles' indices in the
// whole run (the call's first particle is index `first` there: guided_params::stream_first). A tile the call holds
// part of runs on zero-padded copies in this thread's scratch. Every call then has one shape and each particle one
// place in it, so a particle's product does not depend on how many particles the call holds or where its share of
// the run begins: a BLAS picks its kernel by the product's shape, and with it the order of a column's operations
// (one call per problem had rounded an MPI rank's share of 64 of 128 particles otherwise than the whole run).
template <class Product>
void tiled_guidance_product(const float* in, std::int64_t in_values, float* out, std::int64_t out_values,
                            std::int64_t count, std::int64_t first, const Product& product) {
  thread_local std::vector<float> scratch;
  for_each_run_tile(count, first, guidance_tile, [&](std::int64_t i, std::int64_t lead, std::int64_t take) {
    if (take == guidance_tile) {
      product(in + i * in_values, out + i * out_values, int(guidance_tile));
      return;
    }
    scratch.assign(std::size_t(guidance_tile * (in_values + out_values)), 0.f);
    float* tile_in = scratch.data();
    float* tile_out = tile_in + guidance_tile * in_values;
    std::copy(in + i * in_values, in + (i + take) * in_values, tile_in + lead * in_values);
    product(tile_in, tile_out, int(guidance_tile));
    std::copy(tile_out + lead * out_values, tile_out + (lead + take) * out_values, out + i * out_values);
  });
}

}  // namespace

void baseline_guidance_gemm(const kernels::guided_params& p, const kernels::baseline_settings& g, std::int64_t k,
                            float ux, float um, const float* x, float* m, const float* answer, float* v,
                            float* shift, float* r, std::int64_t rows, void* workspace) {
  const int d = p.d, dy = p.d_y;
  if (!(ux == 0.f && um == 1.f && answer == m))
    cpu::parallel_for_each(rows, [&](std::int64_t i) {
      for (int j = 0; j < d; ++j) m[i * d + j] = kernels::ds_fma(ux, x[i * d + j], um * answer[i * d + j]);
    });
  // r = A m for every particle: per problem, whether A is shared or not, in tiles of the whole run's particles
  // (tiled_guidance_product), so that a particle's products are the same calls alone as in a batch, in one process
  // as in an MPI rank's share (one product over a batch's rows took other column counts, and a problem's path had
  // depended on the batch's size).
  const std::int64_t per = p.particles;
  for (std::int64_t first = 0; first < rows; first += per) {
    const float* A = p.A + (first / p.particles) * p.A_stride;
    tiled_guidance_product(m + first * d, d, r + first * dy, dy, std::min(per, rows - first), p.stream_first,
                           [&](const float* X, float* Y, int n) { dense_rows_forward_gemm(A, dy, d, X, n, Y); });
  }
  // Per particle: r = y - A m and the step's factor (the normalised step: from |r|^2, and u = r itself).
  float* u = static_cast<float*>(workspace);
  if (g.normalised) {
    cpu::parallel_for_each(rows, [&](std::int64_t i) { kernels::baseline_residual(p, g, k, i, r, u, shift); });
  } else {
    const float step_shift = g.scale * p.steps[k].guidance;
    cpu::parallel_for_each(rows, [&](std::int64_t i) {
      const float* y = p.y + (i / p.particles) * dy;
      for (int o = 0; o < dy; ++o) r[i * dy + o] = y[o] - r[i * dy + o];
      shift[i] = step_shift;
    });
    // u = P r for every particle of a problem as one product (P: the step's d_y x d_y precision of the problem,
    // row-major), instead of d_y index-order sums of d_y terms per particle (kernels::baseline_residual's).
    for (std::int64_t first = 0; first < rows; first += p.particles) {
      const float* P = kernels::guided_precision(p, k, first / p.particles);
      // Column-major: U^T (d_y x n) = P (P^T as stored: transposed) R^T (d_y x n).
      tiled_guidance_product(r + first * dy, dy, u + first * dy, dy, std::min(per, rows - first), p.stream_first,
                             [&](const float* R, float* U, int n) {
                               cpu_sgemm('T', 'N', dy, n, dy, 1.f, P, dy, R, dy, 0.f, U, dy);
                             });
    }
  }
  const float* from = g.normalised ? r : u;
  // v = A^T u for every particle.
  for (std::int64_t first = 0; first < rows; first += per) {
    const float* A = p.A + (first / p.particles) * p.A_stride;
    tiled_guidance_product(from + first * dy, dy, v + first * d, d, std::min(per, rows - first), p.stream_first,
                           [&](const float* U, float* V, int n) { dense_rows_transpose_gemm(A, dy, d, U, n, V); });
  }
}

namespace {

// Particles per product of tmpd_covariance_gemm: 16, fewer where 16 particles' widened rows pass 2^18 values (2 MiB),
// at least one. From the operator's shape alone, so that every process of a run takes the same.
std::int64_t tmpd_tile(std::int64_t row_values) {
  return std::max<std::int64_t>(1, std::min<std::int64_t>(16, (std::int64_t(1) << 18) / row_values));
}

}  // namespace

std::size_t tmpd_covariance_gemm_values(std::int64_t d_y, std::int64_t d, std::int64_t) {
  const std::int64_t row_values = d_y * d, tile = tmpd_tile(row_values);
  return std::size_t(row_values + tile * row_values + tile * d_y * d_y);
}

void tmpd_covariance_gemm(const kernels::guided_params& p, const kernels::tmpd_rows& rows, std::int64_t k,
                          const float* sigma2, std::int64_t n, double* widened) {
  const int d = p.d, dy = p.d_y;
  const std::int64_t row_values = std::int64_t(dy) * d, tile = tmpd_tile(row_values), cyy_values = std::int64_t(dy) * dy;
  double* A64 = widened;
  double* J64 = A64 + row_values;
  double* C64 = J64 + tile * row_values;
  const kernels::guided_step st = p.steps[k];
  const double ratio = double(st.s) * double(st.s) / double(st.a);
  // Per problem, in products of exactly `tile` particles aligned to the particles' indices in the whole run
  // (guided_params::stream_first), a tile the call holds part of zero-padded: every product has one shape and each
  // particle one place in it, so its covariance does not depend on how many particles the call holds or where an MPI
  // rank's share begins (chunks counted from the call's first particle rounded a share otherwise than the whole).
  std::int64_t widened_problem = -1;
  for (std::int64_t b = 0; b * p.particles < n; ++b) {
    if (widened_problem != (p.A_stride == 0 ? 0 : b)) {
      const float* A = p.A + b * p.A_stride;
      for (std::int64_t e = 0; e < row_values; ++e) A64[e] = A[e];
      widened_problem = p.A_stride == 0 ? 0 : b;
    }
    const std::int64_t count = std::min<std::int64_t>(p.particles, n - b * p.particles);
    for_each_run_tile(count, p.stream_first, tile, [&](std::int64_t i, std::int64_t lead, std::int64_t take) {
      const std::int64_t first = b * p.particles + i;  // the call's row of the tile's first held particle
      const float* J = rows.jrows + first * row_values;
      if (take < tile) std::fill(J64, J64 + tile * row_values, 0.0);
      double* to = J64 + lead * row_values;
      cpu::parallel_for_range(take * row_values, [&](std::int64_t e0, std::int64_t e1) {
        for (std::int64_t e = e0; e < e1; ++e) to[e] = J[e];
      });
      // Column-major: C (d_y x tile d_y) = A (stored as A^T, d x d_y: transposed) J^T (d x tile d_y); column
      // i d_y + q of C is row q of particle i's cyy, whose entry o is (A_o . J_q), the transpose of the per-particle
      // form's entry, which the symmetrisation below makes the same.
      double* out = take == tile ? rows.cyy + first * cyy_values : C64;
      cpu_dgemm('T', 'N', dy, int(tile * dy), d, ratio, A64, d, J64, d, 0.0, out, dy);
      if (take < tile) std::copy(C64 + lead * cyy_values, C64 + (lead + take) * cyy_values, rows.cyy + first * cyy_values);
    });
  }
  cpu::parallel_for_each(n, [&](std::int64_t i) {
    double* c = rows.cyy + i * dy * dy;
    const double s2 = double(sigma2[i / p.particles]);
    for (int o = 0; o < dy; ++o) {
      for (int q = 0; q < o; ++q) {
        const double v = 0.5 * (c[o * dy + q] + c[q * dy + o]);
        c[o * dy + q] = v;
        c[q * dy + o] = v;
      }
      c[o * dy + o] += s2;
    }
  });
}

}  // namespace diffsample::detail
