// The device half of the library's one launch pattern: a grid-stride CUDA kernel over [0, n) that runs a functor,
// its grid size, and a launch that returns the launch's error. src/launch.hpp picks the executor (this kernel, or an
// OpenMP loop over the same functor) and turns errors into exceptions.
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/config.cuh"

namespace diffsample::kernels {

constexpr int default_block = 256;

/// Blocks for n threads of block size `block`, capped at the grid limit (grid-stride loops cover the rest). The one
/// grid-size helper of the library: kernels with one block per item pass n = items x block.
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

/// Launches f(i) for i in [0, n) on `stream` (n > 0), Block threads per block; returns the launch's error.
template <int Block, class F>
cudaError_t launch_for_each_index(std::int64_t n, const F& f, cudaStream_t stream) {
  for_each_index_kernel<Block><<<grid_size(n, Block), Block, 0, stream>>>(n, f);
  return cudaPeekAtLastError();
}

}  // namespace diffsample::kernels
