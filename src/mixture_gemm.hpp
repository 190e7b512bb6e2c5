// The gemm path of gaussian_mixture::evaluate (internal): tables built once per mixture and executor, and the
// CUDA executor's entry points (src/mixture_gemm.cu); the CPU executor and the host API are in src/mixture_gemm.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/mixture_gemm.cuh"
#include <diffsample/mixture.hpp>

namespace diffsample::detail {

struct mixture_storage;

/// Recentred means and their norms, host side (built on first use) and device side (built on first CUDA use).
struct gemm_tables {
  std::vector<double> centre;      // d: the mean of the means
  std::vector<float> centre32;     // d
  std::vector<float> means32;      // K x d: mu_k - centre, rounded once from FP64
  std::vector<double> norms2;      // K: |mu_k - centre|^2 in FP64
  double smallest_variance = 0;    // min_k v_k of the FP32 variances: a channel's smallest c_k (gemm_weight_scale)
  float* device_means = nullptr;   // K x d
  float* device_centre = nullptr;  // d
  double* device_norms2 = nullptr; // K
  void* cublas = nullptr;          // cublasHandle_t
  ~gemm_tables();
};

/// C = alpha op(A) op(B) + beta C (column-major, the reference BLAS's sgemm) on the CPU: the BLAS found at build time
/// (one call at a time, single-threaded: see src/mixture_gemm.cpp), else the library's own loops.
void cpu_sgemm(char transa, char transb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
               int ldb, float beta, float* C, int ldc);

/// cpu_sgemm() in FP64 (the reference BLAS's dgemm).
void cpu_dgemm(char transa, char transb, int m, int n, int k, double alpha, const double* A, int lda,
               const double* B, int ldb, double beta, double* C, int ldc);

/// The tables of a mixture, host part always, device part too when where == cuda (thread-safe, built once).
const gemm_tables& gemm_tables_for(const mixture_storage& st, executor where);

/// Device part of the tables and the cuBLAS handle (src/mixture_gemm.cu).
void gemm_prepare_device(const mixture_storage& st, gemm_tables& t);
void gemm_release_device(gemm_tables& t) noexcept;

/// Points per CUDA pass and components per chunk for the options.
std::int64_t gemm_cuda_pass_points(std::int64_t n, std::int64_t K, std::int64_t d, const evaluate_options& o);
std::int64_t gemm_chunk(const evaluate_options& o, std::int64_t K);

/// Bytes of device workspace of the CUDA gemm path.
std::size_t gemm_cuda_workspace_bytes(quantity what, std::int64_t n, std::int64_t K, std::int64_t d,
                                      const evaluate_options& o);

/// The CUDA gemm path: enqueues everything on `stream`; workspace holds gemm_cuda_workspace_bytes().
void gemm_evaluate_cuda(const mixture_storage& st, const gemm_tables& t, quantity what, const float* x,
                        std::int64_t n, channel ch, float* out, const evaluate_options& o, cudaStream_t stream,
                        void* workspace, std::size_t workspace_bytes);

/// The denoiser JVP on the CUDA gemm path: enqueues everything on `stream` (its workspace is allocated on the
/// stream: gemm_cuda_jvp_workspace_bytes()).
void gemm_denoiser_jvp_cuda(const mixture_storage& st, const gemm_tables& t, const float* x, const float* v,
                            std::int64_t n, channel ch, float* out, const evaluate_options& o, cudaStream_t stream);
std::size_t gemm_cuda_jvp_workspace_bytes(std::int64_t n, std::int64_t K, std::int64_t d, const evaluate_options& o);

/// Checks evaluate_options whatever the path: the gemm path's sizes, and the direct path's refusal of the gemm
/// path's settings (allow_tf32, component_chunk, point_block), which it does not read.
void check_evaluate_options(const evaluate_options& o);

/// Which path evaluate() runs (never automatic), after check_evaluate_options().
mixture_path choose_path(const mixture_storage& st, quantity what, std::int64_t n, executor where,
                         const evaluate_options& o);

/// The whole gemm-path evaluate, after validation of the common arguments (x, out, n, channel, executor).
evaluate_report gemm_evaluate(const mixture_storage& st, quantity what, const float* x, std::int64_t n, channel ch,
                              float* out, const evaluate_options& o, executor where, cudaStream_t stream,
                              void* workspace, std::size_t workspace_bytes);

/// The denoiser JVP on the gemm path (either executor), after validation.
evaluate_report gemm_denoiser_jvp(const mixture_storage& st, const float* x, const float* v, std::int64_t n,
                                  channel ch, float* out, const evaluate_options& o, executor where,
                                  cudaStream_t stream);

}  // namespace diffsample::detail
