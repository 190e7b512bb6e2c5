/// @file error.hpp
/// @brief Exceptions thrown by the C++ API. Every message names the offending argument and its value.
#pragma once

#include <diffsample/export.hpp>

#include <stdexcept>
#include <string>

namespace diffsample {

/// Base class of every exception the library throws.
class DIFFSAMPLE_API error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument failed validation (size, pointer, non-finite or out-of-range value). Nothing was launched.
class DIFFSAMPLE_API invalid_argument : public error {
 public:
  using error::error;
};

/// A request needs more memory than the device (or host) has free. Nothing was launched.
class DIFFSAMPLE_API out_of_memory : public error {
 public:
  using error::error;
};

/// A CUDA runtime call or kernel launch failed; the message carries the CUDA error name, file and line.
class DIFFSAMPLE_API cuda_error : public error {
 public:
  /// @param what message (CUDA error name, call, file and line)
  /// @param code the cudaError_t value
  cuda_error(const std::string& what, int code) : error(what), code_(code) {}
  /// The cudaError_t value, as an int so that this header needs no CUDA include.
  int code() const noexcept { return code_; }

 private:
  int code_;
};

}  // namespace diffsample
