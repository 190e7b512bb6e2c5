// The CUDA backend of the pinned staging pool (src/host_staging.hpp) and upload_async(), through which the calls copy
// the tables they build on the host per call.
#include <sstream>

#include <cuda_runtime_api.h>

#include "src/cuda_check.hpp"
#include "src/host_staging.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>

namespace diffsample::detail {

namespace {

struct cuda_staging {
  using stream = cudaStream_t;
  using event = cudaEvent_t;

  int device(stream s) {
    int d = 0;
#if CUDART_VERSION >= 12080
    // The stream's own device (a caller may pass a stream of a device other than the current one).
    if (s != nullptr && s != cudaStreamLegacy && s != cudaStreamPerThread) {
      DIFFSAMPLE_CUDA_TRY(cudaStreamGetDevice(s, &d));
      return d;
    }
#else
    (void)s;
#endif
    DIFFSAMPLE_CUDA_TRY(cudaGetDevice(&d));
    return d;
  }
  void* allocate(std::size_t bytes) {
    void* p = nullptr;
    // Portable: pinned for every device, though each block serves one (its event's).
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();  // not an error of the call: it copies from pageable memory instead
      return nullptr;
    }
    return p;
  }
  event make_event(int on) {
    int current = 0;
    DIFFSAMPLE_CUDA_TRY(cudaGetDevice(&current));
    if (current != on) DIFFSAMPLE_CUDA_TRY(cudaSetDevice(on));
    event e = nullptr;
    const cudaError_t status = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    if (current != on) (void)cudaSetDevice(current);
    DIFFSAMPLE_CUDA_TRY(status);
    return e;
  }
  void destroy(event e) { (void)cudaEventDestroy(e); }
  int state(event e) {
    const cudaError_t status = cudaEventQuery(e);  // never waits; an event never recorded has completed
    if (status == cudaSuccess) return 1;
    (void)cudaGetLastError();
    // Not ready yet; or the event is gone (its context destroyed by cudaDeviceReset, which frees the block's pinned
    // memory too) or the context holds a sticky error: the block is retired, and the call's own copy or launch
    // reports a sticky error.
    return status == cudaErrorNotReady ? 0 : -1;
  }
  void copy(void* dst, const void* src, std::size_t bytes, stream s) {
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  }
  void record(event e, stream s) { DIFFSAMPLE_CUDA_TRY(cudaEventRecord(e, s)); }
};

}  // namespace

void upload_async(void* device, const void* host, std::size_t bytes, cudaStream_t stream) {
  // Never destroyed: freeing pinned memory synchronises the device, and the CUDA runtime may be gone by the time
  // static objects are destroyed. The blocks return to the system with the process.
  static staging_pool<cuda_staging>& pool = *new staging_pool<cuda_staging>(cuda_staging{}, staging_limit_bytes);
  if (bytes == 0 || pool.copy(device, host, bytes, stream)) return;
  DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
}

void refuse_capture(cudaStream_t stream, const char* call, const char* remedy) {
  DIFFSAMPLE_EXPECTS(!stream_capturing(stream),
                     "exec.stream: is being captured into a CUDA graph, and "
                         << call
                         << " copies tables it builds on the host for this call alone, which every replay of the "
                            "graph would read again after the call has released them: capture "
                         << remedy << " instead, whose loop captures");
}

}  // namespace diffsample::detail
