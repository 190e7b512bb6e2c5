// The resampling passes without argument checks (the layer under resample() and gather_particles()), for samplers
// that validate once per call and then resample every transition (guided SMC).
#pragma once

#include <cstdint>

#include "kernels/particles.cuh"
#include <diffsample/execution.hpp>
#include <diffsample/particles.hpp>

namespace diffsample::detail {

/// resample() on `where` without validation: the caller has checked the sizes, options and buffers, and `workspace`
/// holds resampling_workspace_bytes(problems, particles, options.scheme) bytes on `where`, 16-byte aligned.
/// @p seed_at: when not null, the Philox seed is read from this word of `where`'s memory when the passes run, not
/// taken from options.seed (an ask/tell plan advances it on the device, so that a captured resampling draws fresh).
void resample_unchecked(const float* log_weights, std::int64_t problems, std::int64_t particles,
                        const resampling_options& options, const particle_outputs& out, executor where,
                        cudaStream_t stream, void* workspace, const std::uint64_t* seed_at = nullptr);

/// The CUDA executor's check of the resampling of `problems` x `particles` that resample_unchecked() repeats before
/// its first pass: the temporary storage CUB's scan asks (a size query, nothing launched; it depends on the device)
/// fits the workspace's reserve; invalid_argument otherwise. A run that resamples between launches of its own calls
/// it with its other checks, so that nothing is launched before all of them pass.
void check_resampling_scan(std::int64_t problems, std::int64_t particles, cudaStream_t stream);

/// The passes of resample_unchecked() on the CPU executor alone (int32 ancestors) up to the selection, which it
/// returns: called with g it writes ancestors[g], so that a sampler can select each particle's ancestor inside its
/// own per-particle pass instead of a separate one (stratified and systematic then select by a search over the
/// stored prefix sums, the same ancestors as resample()'s slot ranges). Normalised weights, when requested, are
/// written by this call. The selection reads the workspace's integer arrays only, which the caller must leave
/// untouched until every index has been selected.
kernels::select_ancestor_functor<std::int32_t> resample_statistics_cpu(const float* log_weights,
                                                                       std::int64_t problems, std::int64_t particles,
                                                                       const resampling_options& options,
                                                                       const particle_outputs& out, void* workspace,
                                                                       const std::uint64_t* seed_at = nullptr);

/// gather_particles() on `where` without validation (out must not alias states).
void gather_unchecked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                      const std::int32_t* ancestors, float* out, executor where, cudaStream_t stream);

}  // namespace diffsample::detail
