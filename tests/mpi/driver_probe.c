/* A stand-in for the CUDA driver (built as libcuda.so.1 in its own folder, put first on LD_LIBRARY_PATH by
 * tests/mpi/cpu_ranks.sh). The CUDA runtime looks up cuInit through cuGetProcAddress and calls it the first time a
 * process calls into CUDA; this cuInit records what CUDA_VISIBLE_DEVICES holds then (the driver reads it there), one
 * line per call in $DRIVER_PROBE_LOG, and reports no device, so the process runs on the CPU. Loading the library
 * (which libraries such as cuBLASLt do when the program starts) records nothing; a process that never starts CUDA
 * writes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NO_DEVICE 100 /* CUDA_ERROR_NO_DEVICE */
#define NOT_FOUND 500 /* CUDA_ERROR_NOT_FOUND */

int cuInit(unsigned flags) {
  (void)flags;
  const char* log = getenv("DRIVER_PROBE_LOG");
  FILE* f = log == NULL ? NULL : fopen(log, "a");
  if (f != NULL) {
    const char* visible = getenv("CUDA_VISIBLE_DEVICES");
    fprintf(f, "pid %ld cuInit CUDA_VISIBLE_DEVICES=%s\n", (long)getpid(), visible == NULL ? "(unset)" : visible);
    fclose(f);
  }
  return NO_DEVICE;
}

int cuDriverGetVersion(int* version) {
  *version = 13000;
  return 0;
}

int cuGetProcAddress(const char* symbol, void** pfn, int version, unsigned long long flags);

/* The driver's entry points by name; only the ones the runtime needs to reach cuInit. */
int cuGetProcAddress_v2(const char* symbol, void** pfn, int version, unsigned long long flags, int* status) {
  (void)flags;
  void* found = NULL;
  if (strcmp(symbol, "cuInit") == 0) found = (void*)cuInit;
  if (strcmp(symbol, "cuDriverGetVersion") == 0) found = (void*)cuDriverGetVersion;
  if (strcmp(symbol, "cuGetProcAddress") == 0)
    found = version >= 12000 ? (void*)cuGetProcAddress_v2 : (void*)cuGetProcAddress;
  *pfn = found;
  if (status != NULL) *status = found != NULL ? 1 : 0;
  return found != NULL ? 0 : NOT_FOUND;
}

int cuGetProcAddress(const char* symbol, void** pfn, int version, unsigned long long flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}
