// Error-checking macros of the library (internal): every CUDA call and launch goes through DIFFSAMPLE_CUDA_TRY,
// every precondition through DIFFSAMPLE_EXPECTS.
#pragma once

#include <sstream>
#include <string>

#include <cuda_runtime_api.h>

#include <diffsample/error.hpp>

namespace diffsample::detail {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);

}  // namespace diffsample::detail

/// Throws diffsample::cuda_error (or out_of_memory) with file and line, after clearing the sticky error state.
#define DIFFSAMPLE_CUDA_TRY(call)                                                              \
  do {                                                                                         \
    const cudaError_t diffsample_status_ = (call);                                             \
    if (diffsample_status_ != cudaSuccess)                                                     \
      ::diffsample::detail::throw_cuda_error(diffsample_status_, #call, __FILE__, __LINE__);   \
  } while (0)

/// Throws diffsample::invalid_argument with the streamed message when cond is false.
#define DIFFSAMPLE_EXPECTS(cond, message)                                                      \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::ostringstream diffsample_msg_;                                                      \
      diffsample_msg_ << message;                                                              \
      throw ::diffsample::invalid_argument(diffsample_msg_.str());                             \
    }                                                                                          \
  } while (0)
