// Dense observation operators applied to many points at once (internal): one matrix product over every point's row
// instead of one sum per point and output (src/observation.cpp). Row-major FP32 points, A row-major d_y x d_x.
#pragma once

#include <cstdint>

#include <diffsample/observation.hpp>

namespace diffsample::kernels {
struct guided_params;
struct baseline_settings;
}  // namespace diffsample::kernels

namespace diffsample::detail {

/// Y (n x d_y) = X A^T for X n x d_x: one sgemm (src/mixture_gemm.cpp cpu_sgemm), CPU executor.
void dense_rows_forward_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* X, std::int64_t n,
                             float* Y);
/// V (n x d_x) = U A for U n x d_y: one sgemm, CPU executor.
void dense_rows_transpose_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* U, std::int64_t n,
                               float* V);

/// True when the DPS / Pi-GDM stepwise CPU run applies the operator of `p` as matrix products over `rows`
/// particles: dense rows (not a mask; an SVD operator reaches the kernels reduced to dense rows and is excluded by
/// the caller) and operator_gemm_worthwhile() on the rows of one product.
bool baseline_operator_gemm(const kernels::guided_params& p, std::int64_t rows);

/// Stage 1 of kernels::baseline_stage_functor (the guidance half-step of step k) for all `rows` particles, with
/// A m and A^T u as matrix products: m = ux x + um answer, r = y - A m, shift and u = P r (or r), v = A^T u. The same
/// values as the functor up to the products' summation order.
void baseline_guidance_gemm(const kernels::guided_params& p, const kernels::baseline_settings& g, std::int64_t k,
                            float ux, float um, const float* x, float* m, const float* answer, float* v,
                            float* shift, float* r, std::int64_t rows);

}  // namespace diffsample::detail
