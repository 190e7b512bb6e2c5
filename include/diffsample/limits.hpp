/// @file limits.hpp
/// @brief The size and count limits of the public API: one set for the C++ entry points, the C ABI and the program,
/// so that a size is accepted or refused the same way through any of them. A value beyond one is refused with
/// invalid_argument (DS_INVALID_ARGUMENT in C) and a message naming the argument, its value and the limit
/// ("dim = 16777217, the limit is 16777216 (2^24)"). The headers' comments name these constants.
#pragma once

#include <cstdint>

/// The size and count limits of the public API (limits.hpp).
namespace diffsample::limits {

/// Dimension of a mixture (Gaussian or Bernoulli), and of anything sampled from one.
inline constexpr std::int64_t max_dim = std::int64_t(1) << 24;
/// Components of a mixture.
inline constexpr std::int64_t max_components = std::int64_t(1) << 24;
/// Independent problems of one guided call.
inline constexpr std::int64_t max_guided_problems = std::int64_t(1) << 24;
/// Observation size of a guided problem (each particle holds d_y residuals in registers or shared memory).
inline constexpr std::int64_t max_guided_d_y = 1024;
/// Observation size of an analytic posterior (each component factors a d_y x d_y matrix).
inline constexpr std::int64_t max_posterior_d_y = 4096;
/// d_y x d_x of an analytic posterior's dense operator, held on the host in FP64.
inline constexpr std::int64_t max_posterior_values = std::int64_t(1) << 20;
/// d_y x d_x of an observation operator's dense matrix.
inline constexpr std::int64_t max_operator_values = std::int64_t(1) << 28;
/// Steps of a sampler run or a schedule's grid.
inline constexpr std::int64_t max_steps = std::int64_t(1) << 24;
/// Particles of one guided or resampled problem.
inline constexpr std::int64_t max_particles = std::int64_t(1) << 24;
/// Inner loops of one step: the measurements of sequential_measurements, DCPS's Langevin steps per block, the
/// Metropolis resampling scheme's iterations per particle.
inline constexpr std::int64_t max_inner_steps = std::int64_t(1) << 20;
/// Tile sizes a caller may force on the mixture's GEMM path (component_chunk, point_block).
inline constexpr std::int64_t max_gemm_tile = std::int64_t(1) << 20;
/// Points per axis of grid_mixture() (grid^dim components).
inline constexpr std::int64_t max_grid = 4096;
/// Normalised gradient steps of each of DCPS's variational fits.
inline constexpr std::int64_t max_dcps_gradient_steps = 64;
/// Stages of an SKRock step.
inline constexpr std::int64_t max_skrock_stages = 200;
/// Entries of a discrete sampler's lattice table (components x dim x levels, 128 MiB); above it the table is left out
/// and the chains evaluate the formulas directly.
inline constexpr std::int64_t max_lattice_entries = std::int64_t(1) << 24;
/// The first chain (or sample) index of a call: chain ids stay clear of the random streams' reserved ids.
inline constexpr std::int64_t max_first_chain = std::int64_t(1) << 62;
/// Steps of one random stream (Philox counter offsets): a run's steps, its first step included, stay within it.
inline constexpr std::int64_t max_stream_steps = std::int64_t(1) << 30;
/// Items of one call (problems x particles), so that their byte counts stay within int64.
inline constexpr std::int64_t max_items = (std::int64_t(1) << 62) - 1;
/// Bytes of host memory a call may ask for before it is refused as absurd (64 TiB).
inline constexpr std::int64_t max_host_bytes = std::int64_t(1) << 46;
/// Counts that CUB, MPI or an int-indexed routine holds in a 32-bit int.
inline constexpr std::int64_t max_int_count = (std::int64_t(1) << 31) - 1;

}  // namespace diffsample::limits
