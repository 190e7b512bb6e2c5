// Host-side plumbing shared by every entry point: executor selection, validation, errors, scratch memory.
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>

#include <cuda_runtime_api.h>
#include <omp.h>

#include "src/chain_checks.hpp"
#include "src/cuda_check.hpp"
#include "src/limits.hpp"
#include "src/option_readers.hpp"
#include "src/overlap.hpp"
#include "src/validate.hpp"
#include <diffsample/diffsample.hpp>

namespace diffsample {

const char* version() noexcept { return DIFFSAMPLE_VERSION_STRING; }

namespace {
struct device_probe {
  int count = 0;
  std::string reason;
};
const device_probe& probe() {
  static const device_probe result = [] {
    device_probe p;
    const cudaError_t status = cudaGetDeviceCount(&p.count);
    if (status != cudaSuccess) {
      p.count = 0;
      p.reason = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
      (void)cudaGetLastError();
    } else if (p.count == 0) {
      p.reason = "cudaGetDeviceCount found no CUDA device";
    }
    return p;
  }();
  return result;
}
}  // namespace

bool cuda_available() noexcept {
  try {
    return probe().count > 0;
  } catch (...) {
    return false;
  }
}

std::string cuda_unavailable_reason() { return probe().reason; }

int cpu_threads() noexcept { return omp_get_max_threads(); }

namespace detail {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  (void)cudaGetLastError();  // clear the error state so that later calls are not blamed for this one
  std::ostringstream msg;
  msg << "CUDA error " << cudaGetErrorName(status) << " (" << cudaGetErrorString(status) << ") in " << call
      << " at " << file << ":" << line;
  if (status == cudaErrorMemoryAllocation) throw out_of_memory(msg.str());
  throw cuda_error(msg.str(), static_cast<int>(status));
}

memory_kind pointer_kind(const void* ptr) noexcept {
  if (!cuda_available() || ptr == nullptr) return memory_kind::host;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    return memory_kind::host;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice: return memory_kind::device;
    case cudaMemoryTypeManaged: return memory_kind::managed;
    default: return memory_kind::host;
  }
}

std::string no_usable_gpu(const char* argument) {
  return std::string(argument) + ": cuda was requested but no GPU is usable (" + cuda_unavailable_reason() + ")";
}

executor resolve_executor(executor requested, const void* data, const char* name) {
  switch (requested) {
    case executor::cpu: return executor::cpu;
    case executor::cuda:
      DIFFSAMPLE_EXPECTS(cuda_available(), no_usable_gpu(name));
      return executor::cuda;
    case executor::automatic:
      if (cuda_available() && pointer_kind(data) != memory_kind::host) return executor::cuda;
      return executor::cpu;
  }
  DIFFSAMPLE_EXPECTS(false, name << ": invalid value " << static_cast<int>(requested));
  return executor::cpu;
}

executor plan_executor(execution exec) {
  return exec.kind == executor::automatic ? (cuda_available() ? executor::cuda : executor::cpu)
                                          : resolve_executor(exec.kind, nullptr);
}

cudaStream_t plan_stream(executor where, execution exec) {
  DIFFSAMPLE_EXPECTS(exec.kind == executor::automatic || exec.kind == where,
                     "exec: the plan runs on " << to_string(where) << ", got " << to_string(exec.kind));
  return exec.stream;
}

void check_buffer(const char* name, const void* ptr, std::int64_t count, std::size_t element_bytes, executor where) {
  if (count <= 0) return;
  DIFFSAMPLE_EXPECTS(ptr != nullptr, name << ": null pointer for " << count << " elements");
  DIFFSAMPLE_EXPECTS(reinterpret_cast<std::uintptr_t>(ptr) % element_bytes == 0,
                     name << ": pointer " << ptr << " is not aligned to " << element_bytes << " bytes");
  const memory_kind kind = pointer_kind(ptr);
  if (where == executor::cuda) {
    DIFFSAMPLE_EXPECTS(kind != memory_kind::host,
                       name << ": host pointer " << ptr << " passed to the CUDA executor (use device or managed memory,"
                            << " or executor::cpu)");
  } else {
    DIFFSAMPLE_EXPECTS(kind != memory_kind::device,
                       name << ": device pointer " << ptr << " passed to the CPU executor (use host or managed memory,"
                            << " or executor::cuda)");
  }
}

void check_workspace_bytes(std::size_t need, const void* workspace, std::size_t workspace_bytes) {
  if (workspace != nullptr)
    DIFFSAMPLE_EXPECTS(workspace_bytes >= need,
                       "workspace_bytes: " << workspace_bytes << " given, " << need << " needed");
}

bool share_memory(const buffer_span& a, const buffer_span& b) { return bytes_overlap(a.ptr, a.bytes, b.ptr, b.bytes); }

void check_disjoint(std::initializer_list<buffer_span> spans) {
  for (auto a = spans.begin(); a != spans.end(); ++a) {
    for (auto b = a + 1; b != spans.end(); ++b) {
      DIFFSAMPLE_EXPECTS(!share_memory(*a, *b), b->name << ": must not overlap " << a->name << " (" << b->name << " " << b->ptr << ", "
                                        << b->bytes << " bytes; " << a->name << " " << a->ptr << ", " << a->bytes
                                        << " bytes)");
    }
  }
}

void check_mixture_path(const char* name, mixture_path path) {
  DIFFSAMPLE_EXPECTS(path == mixture_path::automatic || path == mixture_path::direct || path == mixture_path::gemm,
                     name << ": invalid value " << static_cast<int>(path));
}

void check_count(const char* name, std::int64_t n, std::int64_t d) {
  DIFFSAMPLE_EXPECTS(n >= 0, name << ": must be >= 0, got " << n);
  DIFFSAMPLE_EXPECTS(d >= 1, name << ": dimension must be >= 1, got " << d);
  DIFFSAMPLE_EXPECTS(n <= std::numeric_limits<std::int64_t>::max() / 8 / d,
                     name << ": " << n << " x " << d << " elements overflow a 64-bit byte count");
}

void check_unread(const char* name, bool is_default, const std::string& method, const std::string& value,
                  const std::string& fallback) {
  if (!is_default) refuse_unread(name, method, value, fallback);
}

void check_finite(const char* name, double value) {
  DIFFSAMPLE_EXPECTS(std::isfinite(value), name << ": must be finite, got " << value);
}

void check_positive(const char* name, double value) {
  DIFFSAMPLE_EXPECTS(std::isfinite(value) && value > 0, name << ": must be positive and finite, got " << value);
  check_at_most_max_abs(name, value);
}

void check_at_most_max_abs(const char* name, double value) {
  DIFFSAMPLE_EXPECTS(value <= max_abs_value, name << ": " << value << " is above " << max_abs_value
                                                  << " (the FP32 kernels square it or scale by it)");
}

void check_channel(const char* name, channel ch, bool require_noise) {
  DIFFSAMPLE_EXPECTS(std::isfinite(ch.a) && ch.a >= 0, name << ".a: must be >= 0 and finite, got " << ch.a);
  DIFFSAMPLE_EXPECTS(std::isfinite(ch.s) && ch.s >= 0, name << ".s: must be >= 0 and finite, got " << ch.s);
  // a = 0 is N(0, s^2 I) whatever the prior (the end of the linear interpolant and of the cosine schedule); with
  // s = 0 too it is a point mass at 0, which has no density.
  DIFFSAMPLE_EXPECTS(ch.a > 0 || ch.s > 0, name << ".s: must be positive where a = 0, got " << ch.s);
  DIFFSAMPLE_EXPECTS(ch.a <= max_abs_value, name << ".a: " << ch.a << " is above " << max_abs_value
                                                 << " (the FP32 kernels square it)");
  DIFFSAMPLE_EXPECTS(ch.s <= max_abs_value, name << ".s: " << ch.s << " is above " << max_abs_value
                                                 << " (the FP32 kernels square it)");
  if (require_noise) DIFFSAMPLE_EXPECTS(ch.s > 0, name << ".s: must be positive here, got " << ch.s);
}

void check_mixture_shape(std::int64_t dim, std::int64_t K, const char* name, std::size_t entries) {
  limits::check("dim", dim, 1, limits::max_dim);
  limits::check("weights: components", K, 1, limits::max_components);
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(entries) == K * dim, name << ": expected K x d = " << K << " x " << dim
                                                                         << " = " << K * dim << " values, got "
                                                                         << entries);
}

void check_values(const char* name, const std::vector<double>& values, bool positive) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    DIFFSAMPLE_EXPECTS(std::isfinite(v), name << "[" << i << "]: must be finite, got " << v);
    if (positive) DIFFSAMPLE_EXPECTS(v > 0, name << "[" << i << "]: must be positive, got " << v);
  }
}

void check_range(const char* name, const std::vector<double>& values, double lo, double hi, const char* why) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    DIFFSAMPLE_EXPECTS(v >= lo && v <= hi,
                       name << "[" << i << "]: " << v << " is outside [" << lo << ", " << hi << "] (" << why << ")");
  }
}

bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(stream, &status);
  if (e == cudaErrorStreamCaptureImplicit) {
    // The legacy stream while a blocking stream captures: not an error of the capture (it is not invalidated), but
    // the runtime records it as the thread's last error.
    (void)cudaGetLastError();
    return true;
  }
  DIFFSAMPLE_CUDA_TRY(e);
  return status != cudaStreamCaptureStatusNone;
}

void refuse_capture_unrecordable(cudaStream_t stream, const char* stream_name, const std::string& call_does,
                                 const char* remedy) {
  DIFFSAMPLE_EXPECTS(!stream_capturing(stream), stream_name << ": is being captured into a CUDA graph, and " << call_does
                                                            << ", which a capture cannot record: " << remedy);
}

void refuse_distributed_capture(executor where, execution exec, const char* call_does) {
  if (where != executor::cuda) return;
  refuse_capture_unrecordable(exec.stream, "exec.stream", call_does,
                              "run it outside the capture (a distributed run cannot be captured)");
}

void refuse_plan_capture(cudaStream_t stream, const char* call) {
  refuse_capture_unrecordable(stream, "exec.stream",
                              std::string(call) +
                                  " allocates the plan's memory (cudaMalloc) and synchronises exec.stream after its "
                                  "uploads",
                              "make the plan before the capture begins (the plan's reset, step, ask and tell calls "
                              "neither allocate nor wait, and are what a capture records)");
}

void refuse_legacy_capture(const char* call, const char* remedy) {
  refuse_capture_unrecordable(cudaStreamLegacy, "a blocking stream of the current device",
                              std::string(call) +
                                  " allocates its device tables (cudaMalloc), uploads them on the legacy default "
                                  "stream (which joins the capture of a blocking stream of the device) and "
                                  "synchronises it",
                              (std::string(remedy) + " before the capture begins").c_str());
}

namespace {

// Bytes the current device's stream-ordered pool (cudaMallocAsync's) holds reserved but unused: what earlier calls
// released with cudaFreeAsync, which the pool keeps until the next synchronisation (its release threshold) and
// cudaMallocAsync reuses, while cudaMemGetInfo counts it as taken. 0 when the pool cannot be queried. Host queries
// only: nothing waits for the device.
std::size_t pooled_unused_bytes() {
  int device = 0;
  cudaMemPool_t pool = nullptr;
  std::uint64_t reserved = 0, used = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetMemPool(&pool, device) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) != cudaSuccess) {
    (void)cudaGetLastError();  // no pool to count (a device without memory pools): the free memory alone
    return 0;
  }
  return reserved > used ? static_cast<std::size_t>(reserved - used) : 0;
}

}  // namespace

void check_allocation(const char* what, std::size_t bytes, executor where) {
  if (where == executor::cuda) {
    // The pool's unused reserve counts as free: a loop of calls that each allocate their workspace stream-ordered
    // (and free it so) without synchronising keeps the last call's workspace reserved in the pool, where the next
    // call's allocation finds it; cudaMemGetInfo alone refused that call once its workspace exceeded the rest of the
    // device's memory. A cudaMalloc the check let through and that fails is out_of_memory all the same.
    std::size_t free_bytes = 0, total_bytes = 0;
    DIFFSAMPLE_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
    const std::size_t pooled = pooled_unused_bytes();
    if (bytes > free_bytes && bytes - free_bytes > pooled) {
      std::ostringstream msg;
      msg << what << ": needs " << bytes << " bytes of device memory but only " << free_bytes << " of "
          << total_bytes << " are free";
      if (pooled > 0) msg << " (and " << pooled << " held unused by the stream-ordered pool)";
      throw out_of_memory(msg.str());
    }
  } else if (bytes > std::size_t(limits::max_host_bytes)) {
    std::ostringstream msg;
    msg << what << ": needs " << bytes << " bytes of host memory, the limit is " << limits::spell(limits::max_host_bytes);
    throw out_of_memory(msg.str());
  }
}

void check_allocation(const char* what, std::size_t bytes, executor where, cudaStream_t stream) {
  // The capture check before any other runtime call (see validate.hpp): a captured allocation is made at each launch
  // of the graph, so the free memory now is not asked for.
  if (where == executor::cuda && bytes > 0 && stream_capturing(stream)) return;
  check_allocation(what, bytes, where);
}

void upload_and_wait(void* device, const void* host, std::size_t bytes, cudaStream_t stream) {
  DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
  DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream));
}

unsigned char* workspace_or_scratch(std::size_t need, void* workspace, std::size_t workspace_bytes, std::size_t align,
                                    executor where, cudaStream_t stream, std::unique_ptr<scratch>& owned) {
  if (workspace != nullptr) {
    check_workspace_bytes(need, workspace, workspace_bytes);
    check_buffer("workspace", workspace, static_cast<std::int64_t>((need + align - 1) / align), align, where);
    return static_cast<unsigned char*>(workspace);
  }
  owned = std::make_unique<scratch>(need, where, stream);
  return static_cast<unsigned char*>(owned->data());
}

scratch::scratch(std::size_t bytes, executor where, cudaStream_t stream) : where_(where), stream_(stream) {
  if (bytes == 0) return;
  check_allocation("workspace", bytes, where, stream);
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(cudaMallocAsync(&ptr_, bytes, stream));
  } else {
    try {
      host_.resize(bytes);
    } catch (const std::bad_alloc&) {
      std::ostringstream msg;
      msg << "workspace: could not allocate " << bytes << " bytes of host memory";
      throw out_of_memory(msg.str());
    }
    ptr_ = host_.data();
  }
}

scratch::~scratch() {
  if (where_ == executor::cuda && ptr_ != nullptr) (void)cudaFreeAsync(ptr_, stream_);
}

}  // namespace detail
}  // namespace diffsample
