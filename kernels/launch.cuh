// The device half of the library's one launch pattern: a grid-stride CUDA kernel over [0, n) that runs a functor,
// its grid size, and a launch that returns the launch's error. src/launch.hpp picks the executor (this kernel, or an
// OpenMP loop over the same functor) and turns errors into exceptions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cuda_runtime.h>

#include "kernels/config.cuh"
#include "kernels/row_stage.cuh"

namespace diffsample::kernels {

constexpr int default_block = 256;

/// Runs `launch` (a kernel launch, or a call that launches kernels and returns a cudaError_t, as CUB's do) and
/// returns the error of that launch alone: the launch-error idiom of every launch site of the library. The CUDA
/// runtime keeps one last error per host thread, which a failed call sets and only cudaGetLastError() resets. Read
/// after a launch without a reset before it (cudaPeekAtLastError()), it reported an error that a
/// caller's earlier failed call had left there as the launch's own, which the library then threw. So the pending
/// error is cleared before the launch (the call that failed returned it to its caller already) and the launch's own
/// error is read and cleared right after it. A sticky error (a kernel's fault: the context is unusable) survives
/// both reads: the launch fails with it, and it is reported as the launch's error, which it is, as nothing can
/// run on that context any more.
template <class Launch>
cudaError_t checked_launch(Launch&& launch) {
  (void)cudaGetLastError();
  if constexpr (std::is_void_v<decltype(launch())>) {
    launch();
    return cudaGetLastError();
  } else {
    const cudaError_t status = launch();
    const cudaError_t pending = cudaGetLastError();
    return status != cudaSuccess ? status : pending;
  }
}

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
  return checked_launch([&] { for_each_index_kernel<Block><<<grid_size(n, Block), Block, 0, stream>>>(n, f); });
}

/// Threads per block for a per-thread scratch of `width` floats in shared memory: `block`, or the largest multiple
/// of 32 below it whose scratch fits in shared_scratch_bytes; 0 when not even one warp's fits (width > 384).
inline int shared_scratch_block(int block, std::int64_t width) {
  if (width <= 0) return block;
  const std::int64_t fit = shared_scratch_bytes / (width * static_cast<std::int64_t>(sizeof(float))) / 32 * 32;
  return static_cast<int>(std::min<std::int64_t>(block, fit));
}

// for_each_index_kernel for a functor with a per-thread scratch (F::scratch_floats(), F::scratch(i), f(i, s)).
// With shared = true the scratch is dynamic shared memory, coordinate-major over the block: thread t's float c at
// scratch[c blockDim.x + t], so a warp's access to one c is 32 consecutive words in 32 banks (no conflict, no global
// traffic); otherwise f.scratch(i), the functor's own rows in global memory. One kernel per functor either way.
template <int Block, class F>
static __global__ void __launch_bounds__(Block) for_each_index_scratch_kernel(std::int64_t n, bool shared, F f) {
  extern __shared__ float scratch[];
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const strided_vec<float> s = shared ? strided_vec<float>{scratch + threadIdx.x, blockDim.x, f.scratch_floats()}
                                        : f.scratch(i);
    f(i, s);
  }
}

/// Launches f(i, scratch) for i in [0, n) on `stream` (n > 0): the scratch in shared memory with
/// shared_scratch_block(Block, f.scratch_floats()) threads per block when that is at least one warp, else in the
/// functor's global rows with Block threads; returns the launch's error.
template <int Block, class F>
cudaError_t launch_for_each_index_scratch(std::int64_t n, const F& f, cudaStream_t stream) {
  const int width = f.scratch_floats();
  const int block = shared_scratch_block(Block, width);
  const bool shared = block >= 32;
  const int threads = shared ? block : Block;
  const std::size_t bytes = shared ? static_cast<std::size_t>(threads) * width * sizeof(float) : 0;
  return checked_launch(
      [&] { for_each_index_scratch_kernel<Block><<<grid_size(n, threads), threads, bytes, stream>>>(n, shared, f); });
}

// for_each_index_kernel for a per-point functor over row-major rows (F: row_width() = d, staged_inputs() = 1 or 2,
// staged_input(a), staged_output() (row-major d-float rows out, or nullptr when f writes its own outputs), and
// f(i, x, v, out) on strided views): each block stages its rows' inputs (row_stage), runs f on the staged views
// (v = x for one input; out staged too when staged_output() is set), then copies the outputs back. Two barriers per
// block of rows: after the copy in (the compute reads other threads' copies) and after the compute (the copy out
// reads other threads' results); the next block's copy in writes only the inputs' part, which every thread has
// finished reading by the second barrier.
template <int Block, class F>
static __global__ void __launch_bounds__(Block) for_each_row_staged_kernel(std::int64_t n, F f) {
  extern __shared__ float staged[];
  const row_stage st = row_stage::of(static_cast<int>(blockDim.x));
  const int d = f.row_width(), inputs = f.staged_inputs(), tid = static_cast<int>(threadIdx.x);
  float* const out_rows = f.staged_output();
  // Without staged outputs (the functor writes its own) the stage has no output part: f gets a null view there.
  float* const staged_out = out_rows != nullptr ? staged + static_cast<std::int64_t>(inputs) * d * st.pitch : nullptr;
  for (std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x); first < n;
       first += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const int rows = static_cast<int>(n - first < blockDim.x ? n - first : blockDim.x);
    for (int a = 0; a < inputs; ++a)
      st.load(f.staged_input(a) + first * d, rows, d, tid, staged + static_cast<std::int64_t>(a) * d * st.pitch);
    __syncthreads();
    if (tid < rows) {
      const strided_vec<const float> x{staged + tid, st.pitch, d},
          v{staged + static_cast<std::int64_t>(inputs - 1) * d * st.pitch + tid, st.pitch, d};
      f(first + tid, x, v, strided_vec<float>{staged_out != nullptr ? staged_out + tid : nullptr, st.pitch, d});
    }
    __syncthreads();
    if (out_rows != nullptr) st.store(staged_out, rows, d, tid, out_rows + first * d);
  }
}

/// Launches a row functor (for_each_row_staged_kernel's F) for i in [0, n) on `stream` (n > 0): staged with
/// row_staged_block(Block, ...) rows per block where that is at least one warp, else for_each_index_kernel with f(i)
/// on the global rows (the same results); returns the launch's error.
template <int Block, class F>
cudaError_t launch_for_each_row_staged(std::int64_t n, const F& f, cudaStream_t stream) {
  const int d = f.row_width();
  const std::int64_t columns = static_cast<std::int64_t>(f.staged_inputs() + (f.staged_output() != nullptr)) * d;
  const int threads = row_staged_block(Block, d, columns);
  if (threads == 0) return launch_for_each_index<Block>(n, f, stream);
  const std::size_t bytes = static_cast<std::size_t>(row_stage::of(threads).bytes(columns));
  return checked_launch(
      [&] { for_each_row_staged_kernel<Block><<<grid_size(n, threads), threads, bytes, stream>>>(n, f); });
}

}  // namespace diffsample::kernels
