// `diffsample info`: the executors of this machine, its GPU, driver and runtime; `diffsample version`.
#include <cstdio>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "cli/args.hpp"
#include "cli/commands.hpp"

namespace diffsample::cli {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw error(std::string(what) + ": " + cudaGetErrorString(status));
}

const char* info_usage =
    "usage: diffsample info\n"
    "Describes the machine: the library's version, the CPU executor's threads, and the GPU, its memory, driver and\n"
    "runtime versions (or why no GPU was found). Takes no options.\n";

const char* version_usage =
    "usage: diffsample version (or diffsample --version, diffsample -V)\n"
    "Prints the library's version, \"diffsample MAJOR.MINOR.PATCH\", and exits with status 0. Takes no options.\n";

}  // namespace

int run_version(int argc, char** argv, int first) {
  parse_options(argc, argv, first, version_usage, {}, {}, "version");  // only --help
  std::printf("diffsample %s\n", version());
  return 0;
}

int run_info(int argc, char** argv, int first) {
  parse_options(argc, argv, first, info_usage, {}, {});  // only --help
  std::printf("diffsample %s\n", version());
  std::printf("CPU executor: %d OpenMP threads\n", cpu_threads());
  if (!cuda_available()) {
    std::printf("CUDA executor: unavailable (%s)\n", cuda_unavailable_reason().c_str());
    std::printf("automatic executor: cpu\n");
    return 0;
  }
  int device = 0, driver = 0, runtime = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
  check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
  std::size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  std::printf("CUDA executor: device %d, %s, compute capability %d.%d, %d SMs\n", device, prop.name, prop.major,
              prop.minor, prop.multiProcessorCount);
  std::printf("GPU memory: %.1f GiB free of %.1f GiB\n", free_bytes / 1073741824.0, total_bytes / 1073741824.0);
  std::printf("driver %d.%d, runtime %d.%d\n", driver / 1000, (driver % 1000) / 10, runtime / 1000,
              (runtime % 1000) / 10);
  std::printf("automatic executor: cuda (for device buffers)\n");
  return 0;
}

}  // namespace diffsample::cli
