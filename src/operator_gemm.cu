// The DPS / Pi-GDM guidance half-step on the CUDA executor with a dense operator applied to every particle as cuBLAS
// products (src/operator_gemm.hpp): A m for all particles and A^T u for all particles with sgemm, and the d_y-sized
// work between them as one functor over the particles, all on the caller's stream. The same step as
// baseline_guidance_gemm() on the CPU executor.
#include <algorithm>
#include <map>
#include <mutex>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/guided.cuh"
#include "kernels/operator_gemm.cuh"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/mixture_gemm_cublas.hpp"
#include "src/operator_gemm.hpp"
#include "src/validate.hpp"

namespace diffsample::detail {

namespace {

// --- launchers ------------------------------------------------------------------------------------------------------

constexpr std::size_t align_bytes = 256;

std::size_t u_bytes(std::int64_t rows, std::int64_t dy) {
  return (sizeof(float) * std::size_t(rows * dy) + align_bytes - 1) / align_bytes * align_bytes;
}

// The operator products' handles (operator_handle()) and their mutex.
std::mutex& handles_mutex() {
  static std::mutex mutex;
  return mutex;
}

// The handles by device, guarded by handles_mutex().
std::map<int, cublasHandle_t>& handles_by_device() {
  static std::map<int, cublasHandle_t> handles;
  return handles;
}

// One cuBLAS handle per device for the operator products, made ahead of a run's first launch
// (operator_gemm_prepare(); cublasCreate allocates; once per device and process) and kept: destroying one
// synchronises the device. Calls hold `lock` while they use it. With `capture_check`, a handle still to be made while
// that stream captures is refused (cublasCreate allocates outside any stream: a capture cannot record it).
cublasHandle_t operator_handle(std::unique_lock<std::mutex>& lock, const cudaStream_t* capture_check = nullptr) {
  int device = 0;
  DIFFSAMPLE_CUDA_TRY(cudaGetDevice(&device));
  lock = std::unique_lock<std::mutex>(handles_mutex());
  cublasHandle_t& h = handles_by_device()[device];
  if (h == nullptr) {
    DIFFSAMPLE_EXPECTS(capture_check == nullptr || !stream_capturing(*capture_check),
                       "exec.stream: is being captured into a CUDA graph, and this first run of the operator's "
                       "products on device "
                           << device
                           << " would create their cuBLAS handle (cublasCreate), which a capture cannot record: call "
                              "prepare_gemm(executor::cuda) on any mixture (or run the call once) with that device "
                              "current before the capture begins");
    DIFFSAMPLE_CUBLAS_TRY(cublasCreate(&h));
  }
  return h;
}

}  // namespace

std::size_t baseline_guidance_gemm_bytes(std::int64_t rows, std::int64_t d_y, executor where) {
  return u_bytes(rows, d_y) + (where == executor::cuda ? cublas_workspace_bytes : 0);
}

std::size_t baseline_guidance_gemm_cuda_only_bytes() { return cublas_workspace_bytes; }

void operator_gemm_prepare(const cudaStream_t* capture_check) {
  std::unique_lock<std::mutex> lock;
  (void)operator_handle(lock, capture_check);
}

bool operator_gemm_ready() {
  int device = 0;
  DIFFSAMPLE_CUDA_TRY(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(handles_mutex());
  const auto& handles = handles_by_device();
  const auto h = handles.find(device);
  return h != handles.end() && h->second != nullptr;
}

void baseline_guidance_gemm_cuda(const kernels::guided_params& p, const kernels::baseline_settings& g,
                                 std::int64_t k, float ux, float um, const float* x, float* m, const float* answer,
                                 float* v, float* shift, float* r, std::int64_t rows, void* workspace,
                                 cudaStream_t stream) {
  const int d = p.d, dy = p.d_y;
  float* u = static_cast<float*>(workspace);
  void* cublas_workspace = static_cast<char*>(workspace) + u_bytes(rows, dy);
  if (!(ux == 0.f && um == 1.f && answer == m))
    kernels::for_each_index(executor::cuda, rows, kernels::denoiser_from_answer_functor{x, answer, m, ux, um, d},
                            stream);
  std::unique_lock<std::mutex> lock;
  cublasHandle_t handle = operator_handle(lock);
  DIFFSAMPLE_CUBLAS_TRY(cublasSetStream(handle, stream));
  DIFFSAMPLE_CUBLAS_TRY(cublasSetWorkspace(handle, cublas_workspace, cublas_workspace_bytes));
  DIFFSAMPLE_CUBLAS_TRY(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // FP32, no TF32
  const float one = 1.f, zero = 0.f;
  // r = A m for every particle (column-major: R^T (d_y x n) = A (stored as A^T, d x d_y: transposed) M^T), one
  // product per problem whether A is shared or not (as the CPU executor's, baseline_guidance_gemm: a problem's
  // products are the same calls alone as in a batch; at most 2^24 particles, within cuBLAS's int columns).
  const std::int64_t per = p.particles;
  const auto columns = [&](std::int64_t first) { return int(std::min(per, rows - first)); };
  for (std::int64_t first = 0; first < rows; first += per)
    DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, dy, columns(first), d, &one,
                                      p.A + (first / p.particles) * p.A_stride, d, m + first * d, d, &zero,
                                      r + first * dy, dy));
  kernels::for_each_index(executor::cuda, rows, kernels::baseline_residual_functor{p, g, k, r, u, shift}, stream);
  // v = A^T u for every particle (column-major: V^T (d x n) = A^T (as stored) U^T).
  const float* from = g.normalised ? r : u;
  for (std::int64_t first = 0; first < rows; first += per)
    DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, d, columns(first), dy, &one,
                                      p.A + (first / p.particles) * p.A_stride, d, from + first * dy, dy, &zero,
                                      v + first * d, d));
}

}  // namespace diffsample::detail
