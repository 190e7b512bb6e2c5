// The gemm path of gaussian_mixture::evaluate on the CUDA executor: cuBLAS sgemm for the two products of each pass
// of points and chunk of components, and the per-point functors of kernels/mixture_gemm.cuh around them, all on the
// caller's stream. Workspace comes from the caller (size from gemm_cuda_workspace_bytes) or from one stream-ordered
// allocation per call; cuBLAS gets its own workspace from the same buffer, so it allocates nothing per call.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/mixture_gemm.cuh"
#include "src/launch.hpp"
#include "src/mixture_gemm.hpp"
#include "src/mixture_gemm_cublas.hpp"
#include "src/mixture_storage.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>

namespace diffsample::detail {

namespace {

using kernels::gemm_centre_functor;
using kernels::gemm_chunk_functor;
using kernels::gemm_chunk_rows;
using kernels::gemm_finish_functor;
using kernels::gemm_jvp_finish_functor;
using kernels::gemm_jvp_first_functor;
using kernels::gemm_jvp_second_functor;
using kernels::gemm_jvp_start_functor;

constexpr std::size_t align_bytes = 256;
// The default pass (evaluate_options::point_block = 0): as many points as hold cuda_pass_bytes of per-point buffers
// (x', the chunk's logits and the accumulator: 2 d + chunk floats a point), within [cuda_pass_min, cuda_pass_max].
// The functors between the products run one thread per point of a pass: 8192 points put 62 threads on each of an
// H200's 132 multiprocessors, and the score of 1024 x 256 over 262,144 points ran 2.6x (32,768 points a pass), 2.9x
// (65,536) and 2.8x (131,072) faster than with 8192 (bench_mixture_gemm cuda, bench/results/2026-12-04T1522).
constexpr std::int64_t cuda_pass_min = 8192, cuda_pass_max = 65536;
constexpr std::int64_t cuda_pass_bytes = std::int64_t(256) << 20;

std::size_t round_up(std::size_t b) { return (b + align_bytes - 1) / align_bytes * align_bytes; }

struct layout {
  std::size_t comp, xc, g, acc, state, norms, cublas, h, js, total;
};

// jvp: the denoiser JVP's buffers too (h: mu'_k . v, then the fourth product's operand, per chunk; acc =
// sum_k (B_k / c_k) mu'_k; the JVP's sums per point).
layout workspace_layout(quantity what, std::int64_t pass, std::int64_t K, std::int64_t d, std::int64_t chunk,
                        bool jvp = false) {
  layout l{};
  std::size_t at = 0;
  const auto take = [&](std::size_t bytes) {
    const std::size_t here = at;
    at += round_up(bytes);
    return here;
  };
  l.comp = take(sizeof(kernels::gemm_component) * std::size_t(K));
  l.xc = take(sizeof(float) * std::size_t(pass * d));
  l.g = take(sizeof(float) * std::size_t(pass * chunk));
  l.acc = take(what == quantity::log_density ? 0 : sizeof(float) * std::size_t(pass * d));
  l.state = take(sizeof(kernels::gemm_point_state) * std::size_t(pass));
  l.norms = take(sizeof(float) * 2 * std::size_t(pass));
  l.cublas = take(cublas_workspace_bytes);
  l.h = take(jvp ? sizeof(float) * std::size_t(pass * chunk) : 0);
  l.js = take(jvp ? sizeof(kernels::gemm_jvp_state) * std::size_t(pass) : 0);
  // The regions sit at 256-byte offsets from a base aligned to 256 bytes (cublasSetWorkspace refuses a workspace
  // off that alignment, and the functors read floats): the slack aligns a caller's workspace of any address.
  l.total = at + align_bytes;
  return l;
}

// The base of the regions in `workspace`: its first address aligned to align_bytes (within the layout's slack).
char* aligned_base(void* workspace) {
  const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(workspace);
  return static_cast<char*>(workspace) + (align_bytes - at % align_bytes) % align_bytes;
}

// The products' scalars (cuBLAS's host pointer mode): C = one A B + zero C, or + one C to accumulate.
constexpr float one = 1.f, zero = 0.f;

// What a call's passes share: the per-component terms of the channel in `comp`, then the cuBLAS handle bound to this
// call's stream, workspace and math mode under the mixture's lock (calls on other threads wait until `lock` goes), and
// the products' error bound gamma_d (u = 2^-24, plus TF32's 2 2^-11 when allowed).
struct cuda_call {
  std::unique_lock<std::mutex> lock;
  cublasHandle_t handle;
  float gamma;
  float inv_scale;  // 1 / gemm_weight_scale of the channel (comp's inv_cs)
};

cuda_call start_cuda_call(const mixture_storage& st, const gemm_tables& t, channel ch, const evaluate_options& o,
                          cudaStream_t stream, kernels::gemm_component* comp, void* cublas_workspace) {
  const std::int64_t K = st.components, d = st.dim;
  const kernels::mixture_view<float> view = st.view(executor::cuda);
  const double u = 5.9604644775390625e-08;
  const float gamma = float(double(d) * u / (1 - double(d) * u) + (o.allow_tf32 ? 2.0 * 0.00048828125 : 0.0));
  const double scale = kernels::gemm_weight_scale(t.smallest_variance, ch.a, ch.s);
  kernels::for_each_index(executor::cuda, K,
                          kernels::gemm_component_functor{view.log_weights, view.variances, t.device_norms2, comp,
                                                           int(d), ch.a, ch.s, scale},
                          stream);
  cuda_call c{std::unique_lock<std::mutex>(st.gemm_mutex), static_cast<cublasHandle_t>(t.cublas), gamma,
              float(1.0 / scale)};
  DIFFSAMPLE_CUBLAS_TRY(cublasSetStream(c.handle, stream));
  DIFFSAMPLE_CUBLAS_TRY(cublasSetWorkspace(c.handle, cublas_workspace, cublas_workspace_bytes));
  DIFFSAMPLE_CUBLAS_TRY(
      cublasSetMathMode(c.handle, o.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return c;
}

}  // namespace

void gemm_prepare_device(const mixture_storage& st, gemm_tables& t) {
  const std::int64_t K = st.components, d = st.dim;
  const std::size_t bytes = sizeof(float) * std::size_t(K * d + d) + sizeof(double) * std::size_t(K);
  check_allocation("gemm tables", bytes, executor::cuda);
  DIFFSAMPLE_CUDA_TRY(cudaMalloc(&t.device_means, sizeof(float) * std::size_t(K * d)));
  DIFFSAMPLE_CUDA_TRY(cudaMalloc(&t.device_centre, sizeof(float) * std::size_t(d)));
  DIFFSAMPLE_CUDA_TRY(cudaMalloc(&t.device_norms2, sizeof(double) * std::size_t(K)));
  upload_and_wait(t.device_means, t.means32.data(), sizeof(float) * std::size_t(K * d), cudaStreamLegacy);
  upload_and_wait(t.device_centre, t.centre32.data(), sizeof(float) * std::size_t(d), cudaStreamLegacy);
  upload_and_wait(t.device_norms2, t.norms2.data(), sizeof(double) * std::size_t(K), cudaStreamLegacy);
  cublasHandle_t handle = nullptr;
  DIFFSAMPLE_CUBLAS_TRY(cublasCreate(&handle));
  t.cublas = handle;
}

void gemm_release_device(gemm_tables& t) noexcept {
  if (t.cublas != nullptr) (void)cublasDestroy(static_cast<cublasHandle_t>(t.cublas));
  if (t.device_means != nullptr) (void)cudaFree(t.device_means);
  if (t.device_centre != nullptr) (void)cudaFree(t.device_centre);
  if (t.device_norms2 != nullptr) (void)cudaFree(t.device_norms2);
  t.cublas = nullptr;
  t.device_means = t.device_centre = nullptr;
  t.device_norms2 = nullptr;
}

std::int64_t gemm_cuda_pass_points(std::int64_t n, std::int64_t K, std::int64_t d, const evaluate_options& o) {
  const std::int64_t per_point = std::int64_t(sizeof(float)) * (2 * d + gemm_chunk(o, K)) + 64;
  const std::int64_t p = o.point_block > 0 ? o.point_block
                                           : std::clamp(cuda_pass_bytes / per_point, cuda_pass_min, cuda_pass_max);
  return std::max<std::int64_t>(1, std::min(n, p));
}

std::size_t gemm_cuda_workspace_bytes(quantity what, std::int64_t n, std::int64_t K, std::int64_t d,
                                      const evaluate_options& o) {
  return workspace_layout(what, gemm_cuda_pass_points(n, K, d, o), K, d, gemm_chunk(o, K)).total;
}

void gemm_evaluate_cuda(const mixture_storage& st, const gemm_tables& t, quantity what, const float* x,
                        std::int64_t n, channel ch, float* out, const evaluate_options& o, cudaStream_t stream,
                        void* workspace, std::size_t workspace_bytes) {
  const std::int64_t K = st.components, d = st.dim;
  const std::int64_t pass = gemm_cuda_pass_points(n, K, d, o), chunk = gemm_chunk(o, K);
  const layout l = workspace_layout(what, pass, K, d, chunk);
  DIFFSAMPLE_EXPECTS(workspace == nullptr || workspace_bytes >= l.total,
                     "workspace_bytes: the gemm path needs " << l.total << " bytes, got " << workspace_bytes);
  if (workspace != nullptr) check_buffer("workspace", workspace, std::int64_t(l.total), 1, executor::cuda);
  scratch own(workspace == nullptr ? l.total : 0, executor::cuda, stream);
  char* base = aligned_base(workspace != nullptr ? workspace : own.data());
  auto* comp = reinterpret_cast<kernels::gemm_component*>(base + l.comp);
  auto* xc = reinterpret_cast<float*>(base + l.xc);
  auto* g = reinterpret_cast<float*>(base + l.g);
  auto* acc = what == quantity::log_density ? nullptr : reinterpret_cast<float*>(base + l.acc);
  auto* state = reinterpret_cast<kernels::gemm_point_state*>(base + l.state);
  auto* xn = reinterpret_cast<float*>(base + l.norms);
  const float a = float(ch.a), s2 = float(ch.s * ch.s);
  const int what_code = what == quantity::log_density ? 0 : what == quantity::score ? 1 : 2;
  const cuda_call call = start_cuda_call(st, t, ch, o, stream, comp, base + l.cublas);
  for (std::int64_t first = 0; first < n; first += pass) {
    const int rows = int(std::min(pass, n - first));
    kernels::for_each_index(executor::cuda, rows,
                            gemm_centre_functor{x, t.device_centre, xc, xn, state, acc, first, int(d), a}, stream);
    for (std::int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int count = int(std::min(chunk, K - k0));
      const float* m = t.device_means + k0 * d;
      DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(call.handle, CUBLAS_OP_T, CUBLAS_OP_N, count, rows, int(d), &one, m, int(d), xc,
                                        int(d), &zero, g, count));
      const gemm_chunk_rows c{g, comp, xc, xn, t.device_means, count, int(k0), int(d), a, call.gamma};
      kernels::for_each_index(executor::cuda, rows, gemm_chunk_functor{c, state, acc}, stream);
      if (acc != nullptr)
        DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(call.handle, CUBLAS_OP_N, CUBLAS_OP_N, int(d), rows, count, &one, m, int(d),
                                          g, count, &one, acc, int(d)));
    }
    kernels::for_each_index(
        executor::cuda, rows,
        gemm_finish_functor{state, acc, xc, x, t.device_centre, out, first, what_code, int(d), a, s2,
                                                     call.inv_scale}, stream);
  }
}

std::size_t gemm_cuda_jvp_workspace_bytes(std::int64_t n, std::int64_t K, std::int64_t d, const evaluate_options& o) {
  return workspace_layout(quantity::denoiser, gemm_cuda_pass_points(n, K, d, o), K, d, gemm_chunk(o, K), true).total;
}

void gemm_denoiser_jvp_cuda(const mixture_storage& st, const gemm_tables& t, const float* x, const float* v,
                            std::int64_t n, channel ch, float* out, const evaluate_options& o, cudaStream_t stream) {
  // The CPU executor's two passes (src/mixture_gemm.cpp, cpu_task), with cuBLAS products: per chunk G = X' M'^T and
  // H = V M'^T in both passes, and acc += (B / c) M' in the second.
  const std::int64_t K = st.components, d = st.dim;
  const std::int64_t pass = gemm_cuda_pass_points(n, K, d, o), chunk = gemm_chunk(o, K);
  const layout l = workspace_layout(quantity::denoiser, pass, K, d, chunk, true);
  scratch own(l.total, executor::cuda, stream);
  char* base = aligned_base(own.data());
  auto* comp = reinterpret_cast<kernels::gemm_component*>(base + l.comp);
  auto* xc = reinterpret_cast<float*>(base + l.xc);
  auto* g = reinterpret_cast<float*>(base + l.g);
  auto* acc = reinterpret_cast<float*>(base + l.acc);
  auto* state = reinterpret_cast<kernels::gemm_point_state*>(base + l.state);
  auto* xn = reinterpret_cast<float*>(base + l.norms);
  auto* h = reinterpret_cast<float*>(base + l.h);
  auto* js = reinterpret_cast<kernels::gemm_jvp_state*>(base + l.js);
  const float a = float(ch.a), s2 = float(ch.s * ch.s);
  const cuda_call call = start_cuda_call(st, t, ch, o, stream, comp, base + l.cublas);
  for (std::int64_t first = 0; first < n; first += pass) {
    const int rows = int(std::min(pass, n - first));
    const float* vb = v + first * d;
    kernels::for_each_index(executor::cuda, rows,
                            gemm_centre_functor{x, t.device_centre, xc, xn, state, acc, first, int(d), a}, stream);
    kernels::for_each_index(executor::cuda, rows, gemm_jvp_start_functor{xc, v, js, first, int(d)}, stream);
    for (int second = 0; second < 2; ++second)
      for (std::int64_t k0 = 0; k0 < K; k0 += chunk) {
        const int count = int(std::min(chunk, K - k0));
        const float* m = t.device_means + k0 * d;
        DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(call.handle, CUBLAS_OP_T, CUBLAS_OP_N, count, rows, int(d), &one, m, int(d),
                                          xc, int(d), &zero, g, count));
        DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(call.handle, CUBLAS_OP_T, CUBLAS_OP_N, count, rows, int(d), &one, m, int(d),
                                          vb, int(d), &zero, h, count));
        const gemm_chunk_rows c{g, comp, xc, xn, t.device_means, count, int(k0), int(d), a, call.gamma};
        if (second == 0) {
          kernels::for_each_index(executor::cuda, rows, gemm_jvp_first_functor{c, h, state, js}, stream);
        } else {
          kernels::for_each_index(executor::cuda, rows, gemm_jvp_second_functor{c, h, state, js}, stream);
          DIFFSAMPLE_CUBLAS_TRY(cublasSgemm(call.handle, CUBLAS_OP_N, CUBLAS_OP_N, int(d), rows, count, &one, m, int(d),
                                            h, count, &one, acc, int(d)));
        }
      }
    kernels::for_each_index(executor::cuda, rows,
                            gemm_jvp_finish_functor{state, js, acc, xc, v, t.device_means, comp, out, first, int(d), ch.a, s2,
                                                    call.inv_scale}, stream);
  }
}

}  // namespace diffsample::detail
