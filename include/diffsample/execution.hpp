/// @file execution.hpp
/// @brief Choosing where kernels run: the CUDA executor (fused GPU kernels) or the CPU executor (the same kernels
/// over OpenMP threads).
#pragma once

#include <diffsample/export.hpp>

#include <cstdint>
#include <string>

/// Forward declaration of the CUDA stream handle, identical to the runtime's, so that plain C++ can include this.
typedef struct CUstream_st* cudaStream_t;

namespace diffsample {

/// Which executor runs a call.
enum class executor : int {
  automatic = 0,  ///< CUDA when a GPU is present and the sample buffer is device-accessible, else CPU.
  cuda = 1,       ///< Fused CUDA kernels; every buffer must be device-accessible (device or managed memory).
  cpu = 2,        ///< OpenMP over chains; every buffer must be host-accessible (host or managed memory).
};

/// "automatic", "cuda" or "cpu".
DIFFSAMPLE_API const char* to_string(executor e) noexcept;

/// Parses "auto"/"automatic", "cuda"/"gpu" or "cpu"; throws diffsample::invalid_argument otherwise.
DIFFSAMPLE_API executor parse_executor(const std::string& name);

/// Where and on which stream a call runs. The default is the automatic executor on the legacy default stream.
struct execution {
  executor kind = executor::automatic;  ///< requested executor
  cudaStream_t stream = nullptr;        ///< stream of every CUDA launch and copy of the call (ignored on the CPU)
};

/// True when the CUDA runtime finds at least one device. The answer is computed once and cached.
DIFFSAMPLE_API bool cuda_available() noexcept;

/// Why no GPU is used: the CUDA runtime's message from cudaGetDeviceCount, or "" when a device was found.
DIFFSAMPLE_API std::string cuda_unavailable_reason();

/// Number of OpenMP threads the CPU executor uses.
DIFFSAMPLE_API int cpu_threads() noexcept;

}  // namespace diffsample
