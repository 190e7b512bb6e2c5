// Dense observation operators applied to many points at once (internal): one matrix product over every point's row
// instead of one sum per point and output (src/observation.cpp). Row-major FP32 points, A row-major d_y x d_x.
#pragma once

#include <cstddef>
#include <cstdint>

#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/observation.hpp>

namespace diffsample::kernels {
struct guided_params;
struct baseline_settings;
struct tmpd_rows;
}  // namespace diffsample::kernels

namespace diffsample::detail {

/// Y (n x d_y) = X A^T for X n x d_x: one sgemm (src/mixture_gemm.cpp cpu_sgemm), CPU executor.
void dense_rows_forward_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* X, std::int64_t n,
                             float* Y);
/// V (n x d_x) = U A for U n x d_y: one sgemm, CPU executor.
void dense_rows_transpose_gemm(const float* A, std::int64_t d_y, std::int64_t d_x, const float* U, std::int64_t n,
                               float* V);

/// True when the DPS / Pi-GDM run (stepwise on either executor) applies its operator as matrix products, one per
/// problem of `particles` particles, from the sizes alone, as guided_workspace_bytes() knows them: dense rows (`mask`
/// false; an SVD operator reaches the kernels reduced to dense rows and is excluded by the caller) and, under
/// mixture_path::automatic, operator_gemm_worthwhile() on a problem's particles, whatever the other problems
/// (guided_options::operator_path: gemm takes the products for any dense rows, direct never); the rule of the
/// executor `where` (executor::automatic: either's, for a workspace query that does not name one).
bool baseline_operator_gemm(bool mask, std::int64_t particles, std::int64_t d_y, std::int64_t d, mixture_path path,
                            executor where);

/// True when TMPD's CPU run (and its plan) forms the covariances A C A^T of all particles as FP64 products: dense rows
/// (not a mask) and, under mixture_path::automatic, d_y x d_x >= tmpd_gemm_min_size (gemm forces, direct forbids).
bool tmpd_operator_gemm(const kernels::guided_params& p, mixture_path path);
/// The same rule from the problems' shape: masks (every operator a mask), d_y and d.
bool tmpd_operator_gemm(bool masks, std::int64_t d_y, std::int64_t d, mixture_path path);

/// TMPD's size bound (bench_mixture_gemm guided tmpd, whole CPU runs with the path forced either way, K = 25, 3 steps,
/// 2 threads): with d_y x d_x <= 1024 the fused per-pack direct run won or tied at every N from 4 to 2048 (direct /
/// gemm medians 0.40 to 1.01); from 4096 (64 x 64, 32 x 256, 128 x 512) the products won or tied at every N measured
/// (0.89 to 4.6; most at few particles, whose packs the direct run fills partly), so the bound ignores N.
constexpr std::int64_t tmpd_gemm_min_size = 4096;

/// Stage 1 of kernels::baseline_stage_functor (the guidance half-step of step k) for all `rows` particles, with
/// A m, P r (per problem) and A^T u as matrix products: m = ux x + um answer, r = y - A m, shift and u = P r (or r
/// for the normalised step), v = A^T u. The same values as the functor up to the products' summation order.
/// workspace: baseline_guidance_gemm_bytes(rows, p.d_y, executor::cpu) bytes of host memory (u).
void baseline_guidance_gemm(const kernels::guided_params& p, const kernels::baseline_settings& g, std::int64_t k,
                            float ux, float um, const float* x, float* m, const float* answer, float* v,
                            float* shift, float* r, std::int64_t rows, void* workspace);

/// TMPD's covariances for all `rows` particles of step k at once, CPU executor: with the d_y rows J a_o of each
/// particle in rows.jrows, cyy_i = sym((s^2 / a) A_b J_i^T) + sigma_y^2 I into rows.cyy, as kernels::tmpd_covariance
/// forms it per particle (FP64 sums of the FP32 values' products) but as cpu_dgemm() products over tiles of
/// particles aligned to their indices in the whole run (values differ in the sums' last bits; an MPI rank's share
/// rounds as the whole). `widened`: the caller's FP64 scratch of tmpd_covariance_gemm_values(p.d_y, p.d, n) doubles
/// (bounded: A, one tile's rows of at most 2^18 values and its covariances; a region of the run's workspace, so that
/// the call allocates nothing).
void tmpd_covariance_gemm(const kernels::guided_params& p, const kernels::tmpd_rows& rows, std::int64_t k,
                          const float* sigma2, std::int64_t n, double* widened);
/// Doubles of tmpd_covariance_gemm()'s scratch for d_y x d operators (one tile, whatever the particles n).
std::size_t tmpd_covariance_gemm_values(std::int64_t d_y, std::int64_t d, std::int64_t n);

/// Bytes of workspace of baseline_guidance_gemm() (cpu) or baseline_guidance_gemm_cuda() (cuda) over `rows`
/// particles: u (rows x d_y floats), and on the CUDA executor cuBLAS's own workspace.
std::size_t baseline_guidance_gemm_bytes(std::int64_t rows, std::int64_t d_y, executor where);
/// The part of baseline_guidance_gemm_bytes(rows, d_y, executor::cuda) that only the CUDA executor uses: cuBLAS's
/// own workspace, the workspace's last bytes (it starts 256-byte aligned when the workspace does).
std::size_t baseline_guidance_gemm_cuda_only_bytes();

/// Makes the current device's cuBLAS handle of baseline_guidance_gemm_cuda() unless it exists (cublasCreate: once per
/// device and process), so that a run makes it before its first launch. With @p capture_check, a handle still to be
/// made while that stream is being captured is refused (invalid_argument naming the remedy, prepare_gemm()): a
/// capture cannot record cublasCreate.
void operator_gemm_prepare(const cudaStream_t* capture_check);

/// Whether the current device's cuBLAS handle of baseline_guidance_gemm_cuda() exists (operator_gemm_prepare() has
/// nothing to make there). Once true it stays true (the handles are kept for the process).
bool operator_gemm_ready();

/// baseline_guidance_gemm() on the CUDA executor (src/operator_gemm.cu): the products through cuBLAS (FP32, no
/// TF32) on one handle per device kept for the process, the work between them as one functor, all enqueued on
/// `stream` (nothing synchronises). Particles row-major (coordinate_stride 0); every pointer, the tables of `p` and
/// `g` included, is device memory; workspace holds baseline_guidance_gemm_bytes(rows, p.d_y, executor::cuda).
void baseline_guidance_gemm_cuda(const kernels::guided_params& p, const kernels::baseline_settings& g,
                                 std::int64_t k, float ux, float um, const float* x, float* m, const float* answer,
                                 float* v, float* shift, float* r, std::int64_t rows, void* workspace,
                                 cudaStream_t stream);

}  // namespace diffsample::detail
