// cuBLAS for the library's matrix products on the CUDA executor (internal, nvcc only): the error check of every
// cuBLAS call and the workspace each call hands cuBLAS from its own buffer, so that cuBLAS allocates nothing per call.
#pragma once

#include <cstddef>
#include <string>

#include <cublas_v2.h>

#include <diffsample/error.hpp>

/// Throws diffsample::cuda_error naming the cuBLAS status and the call.
#define DIFFSAMPLE_CUBLAS_TRY(call)                                                                 \
  do {                                                                                              \
    const cublasStatus_t status_ = (call);                                                          \
    if (status_ != CUBLAS_STATUS_SUCCESS)                                                           \
      throw ::diffsample::cuda_error(std::string("cuBLAS error ") + cublasGetStatusString(status_) + \
                                         " in " #call,                                              \
                                     static_cast<int>(status_));                                    \
  } while (0)

namespace diffsample::detail {

/// Bytes of cuBLAS workspace a call sets on its handle (cublasSetWorkspace) before its products.
constexpr std::size_t cublas_workspace_bytes = std::size_t(4) << 20;

}  // namespace diffsample::detail
