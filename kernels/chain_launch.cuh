// The CUDA kernel of the per-chain samplers (kernels/chain_runner.cuh runners over the Langevin and diffusion chain
// bodies): before a block's chains run, its threads copy the launch's mixture parameters into shared memory with
// 16-byte vector loads, and every chain then reads them from there. All lanes of a warp read the same word at the
// same time (the chains walk the components in the same order), so each shared-memory read is one broadcast, with
// no bank conflict, instead of a trip through L1 that competes with the workspace path's own traffic.
//
// What is staged (mixture_channels::staged lays it out, staged_floats counts it): the means and, for diagonal
// components, the variances (the parameters every channel reads); an isotropic mixture's K variances only for a chain
// body that reads them (reads_isotropic_variances: channel_jvp's e_k; none does today, and without them ptxas keeps
// the chain kernels' code as it was: the copy, in any form tried, moved the diffusion kernels' registers, D = 4 from
// 86 to 90-96); with a table of one channel (Langevin) also that channel's constants (log weight folded with the
// normalising constant, 1 / c, the denoiser factors) and its 1 / c_kj. A diffusion run's constants differ per step
// (two channels per step, thousands of steps), so they stay in global memory and are read uniformly through L1. The
// CPU executor runs the same functors on the tables in host memory.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/launch.cuh"
#include "kernels/mixture.cuh"

namespace diffsample::kernels {

/// Dynamic shared memory a chain launch stages at most (every architecture takes 48 KiB without opting in).
constexpr std::int64_t chain_staging_bytes = 48 * 1024;

/// Bytes a chain launch of the chain body Body stages for the mixture m (its single_channel: the table's one channel
/// too; its reads_isotropic_variances: an isotropic mixture's variances too).
template <class Body>
std::int64_t chain_staged_bytes(const mixture_view<float>& m) {
  return mixture_channels::staged_floats(m, Body::single_channel, Body::reads_isotropic_variances) *
         std::int64_t(sizeof(float));
}

/// Whether the register path runs a mixture on the CUDA executor: its staged part fits (else the workspace path).
template <class Body>
bool chain_staging_fits(const mixture_view<float>& m) {
  return chain_staged_bytes<Body>(m) <= chain_staging_bytes;
}

#if defined(__CUDACC__)
/// Copies `count` floats into shared memory with the threads of the block: 16-byte vector loads when `from` is
/// 16-byte aligned (`to` always is), the tail one float at a time.
__device__ __forceinline__ void stage_copy(float* to, const float* from, std::int64_t count) {
  std::int64_t first_scalar = 0;
  if ((reinterpret_cast<std::uintptr_t>(from) & 15) == 0) {
    const std::int64_t vectors = count / 4;
    const float4* src = reinterpret_cast<const float4*>(from);
    float4* dst = reinterpret_cast<float4*>(to);
    for (std::int64_t v = threadIdx.x; v < vectors; v += blockDim.x) dst[v] = __ldg(src + v);
    first_scalar = vectors * 4;
  }
  for (std::int64_t e = first_scalar + threadIdx.x; e < count; e += blockDim.x) to[e] = __ldg(from + e);
}

/// The table t with its staged parts read from `smem` (mixture_channels::staged_floats floats, 16-byte aligned),
/// copied there by the threads of the block (mixture_channels::staged lays them out); returns after the block's
/// barrier. IsotropicVariances: the chain body's reads_isotropic_variances (kernels/chain_runner.cuh).
template <bool WithChannel, bool IsotropicVariances>
__device__ __forceinline__ mixture_channels stage_channels(const mixture_channels& t, float* smem) {
  const mixture_channels s = t.staged<WithChannel, IsotropicVariances>(
      smem, [](float* to, const float* from, std::int64_t count) { stage_copy(to, from, count); });
  __syncthreads();
  return s;
}

/// for_each_index_kernel for a chain functor F (register_chain_functor or workspace_chain_functor over a body whose
/// parameters p hold the mixture table p.mix): stages the table, then runs f(i) over [0, n). The chains read the
/// staged table through pointers the compiler sees are shared (ld.shared, 32-bit addresses); a pointer that could be
/// either (one loop over a run-time choice) would make every read a generic load with a 64-bit address, which cost
/// the register path up to 84 registers per thread. So a register-path functor always stages (its launcher takes the
/// register path only when the table fits), and the workspace kernel holds two loops, staged or not.
template <int Block, class F>
static __global__ void __launch_bounds__(Block) chain_kernel(std::int64_t n, F f, bool staged) {
  extern __shared__ float4 chain_staging_storage[];
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t step = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  if (F::always_staged || staged) {
    F g = f;
    using body = decltype(f.chain);
    g.chain.p.mix = stage_channels<body::single_channel, body::reads_isotropic_variances>(
        f.chain.p.mix, reinterpret_cast<float*>(chain_staging_storage));
    for (std::int64_t i = first; i < n; i += step) g(i);
  } else {
    for (std::int64_t i = first; i < n; i += step) f(i);
  }
}

/// Launches chain_kernel<Block> over n > 0 chains on `stream`, staging the table when it fits (always for a
/// register-path functor, whose launcher checked chain_staging_fits). Returns the launch's error.
template <int Block, class F>
cudaError_t launch_chains(std::int64_t n, const F& f, cudaStream_t stream) {
  using body = decltype(f.chain);
  const bool staged = chain_staging_fits<body>(f.chain.p.mix.mix);
  // A register-path kernel stages whatever it is told: its launcher checks the fit first, and a table that does not
  // fit is refused here too rather than staged past the shared memory given.
  if (F::always_staged && !staged) return cudaErrorInvalidConfiguration;
  const std::size_t bytes = staged ? static_cast<std::size_t>(chain_staged_bytes<body>(f.chain.p.mix.mix)) : 0;
  return checked_launch([&] { chain_kernel<Block><<<grid_size(n, Block), Block, bytes, stream>>>(n, f, staged); });
}
#endif

}  // namespace diffsample::kernels
