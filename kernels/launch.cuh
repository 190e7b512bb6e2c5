// The two executors of one functor: a grid-stride CUDA kernel and an OpenMP loop over the same indices.
// Included only from .cu files of src/ (compiled by nvcc with -fopenmp for the host side).
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/config.cuh"
#include "src/cuda_check.hpp"
#include <diffsample/execution.hpp>

namespace diffsample::kernels {

constexpr int default_block = 256;

/// Blocks for n threads of block size `block`, capped at the grid limit (grid-stride loops cover the rest).
inline unsigned grid_size(std::int64_t n, int block = default_block) {
  const std::int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(std::min<std::int64_t>(blocks, 0x7fffffff));
}

// The block size is a template parameter so that it appears in the kernel's name (bench/static_record.md reads it
// from there) and bounds the compiler's register allocation.
template <int Block, class F>
static __global__ void __launch_bounds__(Block) for_each_index_kernel(std::int64_t n, F f) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
    f(i);
}

/// Runs f(i) for i in [0, n) on the chosen executor (cuda or cpu; never automatic here), Block threads per CUDA
/// block. Asynchronous on CUDA.
template <int Block = default_block, class F>
void for_each_index(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  if (n <= 0) return;
  if (where == executor::cuda) {
    for_each_index_kernel<Block><<<grid_size(n, Block), Block, 0, stream>>>(n, f);
    DIFFSAMPLE_CUDA_TRY(cudaPeekAtLastError());
  } else {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) f(i);
  }
}

}  // namespace diffsample::kernels
