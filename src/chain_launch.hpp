// The two executors of a per-chain sampler (Langevin, diffusion): the CUDA chain kernel of kernels/chain_launch.cuh,
// which stages the mixture in shared memory, and the same functor over the CPU executor's thread pool. Included only
// from .cu files of src/.
#pragma once

#include <cstdint>

#include "kernels/chain_launch.cuh"
#include "src/launch.hpp"

namespace diffsample::kernels {

/// Runs the chain functor f over chains [0, n) on the chosen executor (cuda or cpu), Block threads per CUDA block,
/// the mixture staged in shared memory on CUDA (always for a register-path functor: see chain_staging_fits).
/// Asynchronous on CUDA; a launch error throws cuda_error.
template <int Block = default_block, class F>
void for_each_chain(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  on_executor(where, n, f, stream, &launch_chains<Block, F>);
}

}  // namespace diffsample::kernels
