// The resampling passes without argument checks (the layer under resample() and gather_particles()), for samplers
// that validate once per call and then resample every transition (guided SMC).
#pragma once

#include <cstdint>

#include <diffsample/execution.hpp>
#include <diffsample/particles.hpp>

namespace diffsample::detail {

/// resample() on `where` without validation: the caller has checked the sizes, options and buffers, and `workspace`
/// holds resampling_workspace_bytes(problems, particles, options.scheme) bytes on `where`, 16-byte aligned.
void resample_unchecked(const float* log_weights, std::int64_t problems, std::int64_t particles,
                        const resampling_options& options, const particle_outputs& out, executor where,
                        cudaStream_t stream, void* workspace);

/// gather_particles() on `where` without validation (out must not alias states).
void gather_unchecked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                      const std::int32_t* ancestors, float* out, executor where, cudaStream_t stream);

}  // namespace diffsample::detail
