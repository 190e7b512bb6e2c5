// The two executors of one functor: the grid-stride CUDA kernel of kernels/launch.cuh and a loop over the same
// indices on the CPU executor's thread pool (src/cpu/pool.hpp). Included only from .cu files of src/.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/launch.cuh"
#include "src/cpu/pool.hpp"
#include "src/cuda_check.hpp"
#include <diffsample/execution.hpp>

namespace diffsample::kernels {

/// Runs f over [0, n) on the chosen executor (cuda or cpu; never automatic here): on CUDA through `launch(n, f,
/// stream)`, a launcher of kernels/ that returns the launch's cudaError_t; on the CPU executor f(i) over the thread
/// pool (passive waiting, chunks claimed dynamically: src/cpu/pool.hpp). Asynchronous on CUDA; a launch error throws
/// cuda_error.
template <class F>
void on_executor(executor where, std::int64_t n, const F& f, cudaStream_t stream,
                 cudaError_t (*launch)(std::int64_t, const F&, cudaStream_t)) {
  if (n <= 0) return;
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(launch(n, f, stream));
  } else {
    cpu::parallel_for_each(n, f);
  }
}

/// Runs f(i) for i in [0, n) on the chosen executor (cuda or cpu), Block threads per CUDA block.
template <int Block = default_block, class F>
void for_each_index(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  on_executor(where, n, f, stream, &launch_for_each_index<Block, F>);
}

/// for_each_index for a functor with a per-particle scratch (kernels/launch.cuh for_each_index_scratch_kernel): on
/// CUDA the scratch is shared memory when a warp's fits, else the functor's global rows; on the CPU executor f(i),
/// which runs f(i, f.scratch(i)) over the functor's global rows.
template <int Block = default_block, class F>
void for_each_index_scratch(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  on_executor(where, n, f, stream, &launch_for_each_index_scratch<Block, F>);
}

/// for_each_index for a row functor over row-major rows (kernels/launch.cuh for_each_row_staged_kernel): on CUDA
/// each block's rows staged through shared memory where 32 of them fit, else f(i) on the global rows; on the CPU
/// executor f(i).
template <int Block = default_block, class F>
void for_each_row_staged(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  on_executor(where, n, f, stream, &launch_for_each_row_staged<Block, F>);
}

}  // namespace diffsample::kernels
