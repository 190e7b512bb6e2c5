/* A stand-in for the CUDA runtime's device calls, preloaded (LD_PRELOAD) into the program's processes by
 * tests/mpi/cuda_ranks.sh: it reports $RUNTIME_PROBE_DEVICES devices (default 2) and keeps a current device
 * (cudaSetDevice, cudaGetDevice, 0 until set), and every call that would create a context or place something on
 * the current device (allocations, copies, memsets, synchronisations, cudaMemGetInfo) appends one line
 * "rank R touch CALL D" to $RUNTIME_PROBE_LOG, with R the launcher's rank of the process and D the current device;
 * cudaSetDevice appends "rank R set D". cudaMemGetInfo reports $RUNTIME_PROBE_FREE_BYTES free (default 16 GiB). Allocations are host memory (named device memory of the device current at
 * the allocation by cudaPointerGetAttributes) and copies are memcpy, so a gaussian_mixture's tables and a run's
 * buffers can be made; kernels are not launched by the stand-in (the real runtime, which finds no driver here,
 * refuses them, and the run then fails on every rank). $RUNTIME_PROBE_SYNC_ERROR makes cudaStreamSynchronize fail
 * and $RUNTIME_PROBE_CAPTURING makes cudaStreamIsCapturing report a capture (below). The cuBLAS calls the library
 * makes are stood in for too (at the end). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef void* cudaStream_t;

/* The runtime's struct cudaPointerAttributes (CUDA 11 and later). */
struct cudaPointerAttributes {
  int type; /* cudaMemoryTypeUnregistered 0, cudaMemoryTypeDevice 2 */
  int device;
  void* devicePointer;
  void* hostPointer;
};

static int current = 0;

/* The allocations made here, with their device, so that cudaPointerGetAttributes names them device memory. */
enum { max_blocks = 4096 };
static struct {
  char* at;
  size_t bytes;
  int device;
} blocks[max_blocks];

static void* allocate(size_t bytes) {
  char* p = malloc(bytes > 0 ? bytes : 1);
  for (int i = 0; p != NULL && i < max_blocks; ++i)
    if (blocks[i].at == NULL) {
      blocks[i].at = p;
      blocks[i].bytes = bytes > 0 ? bytes : 1;
      blocks[i].device = current;
      break;
    }
  return p;
}

static void release(void* p) {
  for (int i = 0; p != NULL && i < max_blocks; ++i)
    if (blocks[i].at == p) blocks[i].at = NULL;
  free(p);
}

static void record(const char* what, int device) {
  const char* log = getenv("RUNTIME_PROBE_LOG");
  const char* rank = getenv("OMPI_COMM_WORLD_RANK");
  if (rank == NULL) rank = getenv("PMI_RANK");
  FILE* f = log == NULL ? NULL : fopen(log, "a");
  if (f == NULL) return;
  fprintf(f, "rank %s %s %d\n", rank == NULL ? "-" : rank, what, device);
  fclose(f);
}

static int devices(void) {
  const char* v = getenv("RUNTIME_PROBE_DEVICES");
  return v == NULL ? 2 : atoi(v);
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = devices();
  return 0;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= devices()) return 101; /* cudaErrorInvalidDevice */
  current = device;
  record("set", device);
  return 0;
}

cudaError_t cudaGetDevice(int* device) {
  *device = current;
  return 0;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  record("touch cudaMemGetInfo", current);
  const char* v = getenv("RUNTIME_PROBE_FREE_BYTES"); /* a device whose memory others hold: "0" */
  *free_bytes = v == NULL ? (size_t)1 << 34 : (size_t)strtoull(v, NULL, 10);
  *total = (size_t)1 << 35;
  return 0;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  record("touch cudaMalloc", current);
  *ptr = allocate(bytes);
  return *ptr != NULL ? 0 : 2; /* cudaErrorMemoryAllocation */
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  (void)stream;
  record("touch cudaMallocAsync", current);
  *ptr = allocate(bytes);
  return *ptr != NULL ? 0 : 2;
}

cudaError_t cudaFree(void* ptr) {
  release(ptr);
  return 0;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  (void)stream;
  release(ptr);
  return 0;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, int kind) {
  (void)kind;
  record("touch cudaMemcpy", current);
  memcpy(dst, src, bytes);
  return 0;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, int kind, cudaStream_t stream) {
  (void)kind, (void)stream;
  record("touch cudaMemcpyAsync", current);
  memcpy(dst, src, bytes);
  return 0;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  (void)stream;
  record("touch cudaMemsetAsync", current);
  memset(dst, value, bytes);
  return 0;
}

/* $RUNTIME_PROBE_SYNC_ERROR (read at each call, so that a test sets it around one call on one rank): the error code
 * the synchronisation returns, as the real one returns a kernel's failure (700, cudaErrorIllegalAddress); 0 or unset,
 * success. */
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  (void)stream;
  record("touch cudaStreamSynchronize", current);
  const char* failure = getenv("RUNTIME_PROBE_SYNC_ERROR");
  return failure == NULL ? 0 : atoi(failure);
}

/* $RUNTIME_PROBE_CAPTURING (read at each call): nonzero reports every stream as being captured into a CUDA graph
 * (cudaStreamCaptureStatusActive, 1), as the runtime does while a capture is under way; 0 or unset, none (0). Each
 * query appends "rank R query cudaStreamIsCapturing D". */
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, int* status) {
  (void)stream;
  record("query cudaStreamIsCapturing", current);
  const char* capturing = getenv("RUNTIME_PROBE_CAPTURING");
  *status = capturing != NULL && atoi(capturing) != 0 ? 1 : 0;
  return 0;
}

cudaError_t cudaDeviceSynchronize(void) {
  record("touch cudaDeviceSynchronize", current);
  return 0;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attr, const void* ptr) {
  memset(attr, 0, sizeof *attr);
  attr->device = -2;
  for (int i = 0; i < max_blocks; ++i)
    if (blocks[i].at != NULL && (const char*)ptr >= blocks[i].at && (const char*)ptr < blocks[i].at + blocks[i].bytes) {
      attr->type = 2;
      attr->device = blocks[i].device;
      attr->devicePointer = (void*)ptr;
    }
  return 0;
}

/* cuBLAS, which the library calls beside the runtime: a handle is made (cublasCreate allocates on the current device:
 * "rank R touch cublasCreate D") only while $RUNTIME_PROBE_CUBLAS (read at each call) is nonzero, so that a test can
 * reach the set-up that follows it; otherwise it fails as cuBLAS does without a driver (CUBLAS_STATUS_NOT_INITIALIZED,
 * 1). A stand-in handle configures (stream, workspace, math mode) but computes nothing: cublasSgemm fails
 * (CUBLAS_STATUS_EXECUTION_FAILED, 13), as the stand-in's kernels are not launched. */
typedef int cublasStatus_t;
static char stand_in_handle;

cublasStatus_t cublasCreate_v2(void** handle) {
  record("touch cublasCreate", current);
  const char* allowed = getenv("RUNTIME_PROBE_CUBLAS");
  if (allowed == NULL || atoi(allowed) == 0) return 1;
  *handle = &stand_in_handle;
  return 0;
}

cublasStatus_t cublasDestroy_v2(void* handle) { return handle == &stand_in_handle ? 0 : 1; }

cublasStatus_t cublasSetStream_v2(void* handle, cudaStream_t stream) {
  (void)stream;
  return handle == &stand_in_handle ? 0 : 1;
}

cublasStatus_t cublasSetWorkspace_v2(void* handle, void* workspace, size_t bytes) {
  (void)workspace, (void)bytes;
  return handle == &stand_in_handle ? 0 : 1;
}

cublasStatus_t cublasSetMathMode(void* handle, int mode) {
  (void)mode;
  return handle == &stand_in_handle ? 0 : 1;
}

cublasStatus_t cublasSgemm_v2(void* handle, int ta, int tb, int m, int n, int k, const float* alpha, const float* a,
                              int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
  (void)handle, (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb;
  (void)beta, (void)c, (void)ldc;
  record("touch cublasSgemm", current);
  return 13;
}
