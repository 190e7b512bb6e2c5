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
void resample_unchecked(const float* log_weights, std::int64_t problems, std::int64_t particles,
                        const resampling_options& options, const particle_outputs& out, executor where,
                        cudaStream_t stream, void* workspace);

/// The statistics pass of resample_unchecked() on the CPU executor alone (int32 ancestors): returns the selection,
/// which writes ancestors[g] (and normalised_weights[g]) when called with g, so that a sampler can select each
/// particle's ancestor inside its own per-particle pass instead of a separate one. The selection reads the
/// log-weights of index g only, and the workspace's integer weights, which the caller must leave untouched until
/// every index has been selected.
kernels::select_ancestor_functor<std::int32_t> resample_statistics_cpu(const float* log_weights,
                                                                       std::int64_t problems, std::int64_t particles,
                                                                       const resampling_options& options,
                                                                       const particle_outputs& out, void* workspace);

/// gather_particles() on `where` without validation (out must not alias states).
void gather_unchecked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                      const std::int32_t* ancestors, float* out, executor where, cudaStream_t stream);

}  // namespace diffsample::detail
