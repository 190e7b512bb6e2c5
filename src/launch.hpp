// The two executors of one functor: the grid-stride CUDA kernel of kernels/launch.cuh and an OpenMP loop over the
// same indices. Included only from .cu files of src/ (compiled by nvcc with -fopenmp for the host side).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/launch.cuh"
#include "src/cuda_check.hpp"
#include <diffsample/execution.hpp>

namespace diffsample::kernels {

/// Runs f(i) for i in [0, n) on the chosen executor (cuda or cpu; never automatic here), Block threads per CUDA
/// block. Asynchronous on CUDA; a launch error throws cuda_error.
template <int Block = default_block, class F>
void for_each_index(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  if (n <= 0) return;
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(launch_for_each_index<Block>(n, f, stream));
  } else {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) f(i);
  }
}

}  // namespace diffsample::kernels
