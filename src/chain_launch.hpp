// The two executors of a per-chain sampler (Langevin, diffusion): the CUDA chain kernel of kernels/chain_launch.cuh,
// which stages the mixture in shared memory, and the same functor over the CPU executor's thread pool. Included only
// from .cu files of src/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "kernels/chain_launch.cuh"
#include "kernels/chain_runner.cuh"
#include "src/cpu/chains.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"

namespace diffsample::kernels {

/// Runs the chain functor f over chains [0, n) on the chosen executor (cuda or cpu), Block threads per CUDA block,
/// the mixture staged in shared memory on CUDA (always for a register-path functor: see chain_staging_fits).
/// Asynchronous on CUDA; a launch error throws cuda_error.
template <int Block = default_block, class F>
void for_each_chain(executor where, std::int64_t n, const F& f, cudaStream_t stream) {
  on_executor(where, n, f, stream, &launch_chains<Block, F>);
}

/// Runs chains [0, n) of the chain body Body, made from its parameters p, on x (n x d): on a SIMD target of the CPU
/// executor, `packed` (src/cpu/chains.hpp: run_langevin, run_diffusion; `state` unless register_path); else the
/// register-path functor of dimension d in blocks of 128 threads when register_path (register-heavy chains: smaller
/// blocks leave the compiler room and keep occupancy up), or the workspace path over `state`
/// (kernels/chain_runner.cuh, coordinate-major on CUDA). Asynchronous on CUDA.
template <class Body, class Params>
void run_chains(executor where, std::int64_t n, std::int64_t d, const Params& p, float* x, float* state,
                bool register_path, cudaStream_t stream,
                void (*packed)(cpu::simd_target, const Params&, float*, std::int64_t, float*)) {
  const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    packed(target, p, x, d, register_path ? nullptr : state);
    return;
  }
  if (register_path) {
    dispatch_register_dim(d, [&](auto dim) {
      using functor = register_chain_functor<decltype(dim)::value, Body>;
      for_each_chain<128>(where, n, functor{{p}, x}, stream);
    });
    return;
  }
  for_each_chain(where, n, workspace_chain_functor<Body>{{p}, x, state, n, int(d), where == executor::cuda}, stream);
}

}  // namespace diffsample::kernels

namespace diffsample::detail {

/// The CPU executor's chain state of a Langevin or diffusion workspace, cpu::state_floats(n, d) floats, as bytes:
/// refused when they reach 2^63 (16 bytes per element: an n x d within check_count's 8 bytes per element could wrap
/// the size_t product around to a small workspace).
inline std::size_t chain_state_bytes(std::int64_t n, std::int64_t d) {
  DIFFSAMPLE_EXPECTS(n <= (std::numeric_limits<std::int64_t>::max() / 16 - 64) / d - 16,
                     "n: " << n << " x " << d << " elements need a chain state of 16 bytes each, beyond a 64-bit byte "
                                                 "count");
  return static_cast<std::size_t>(cpu::state_floats(n, d)) * sizeof(float);
}

}  // namespace diffsample::detail
