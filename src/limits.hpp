// The size limits of the public API (internal), one set for the C++ entry points, the C ABI and the program, so that
// a size is accepted or refused the same way through any of them. Every check of a limit goes through limits::check()
// (or prints the limit with spell()), so that a message always shows the value the check compares against:
// "dim = 16777217, the limit is 16777216 (2^24)".
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include <diffsample/error.hpp>

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
/// Inner loops of one step: the measurements of sequential_measurements, DCPS's Langevin steps per block.
inline constexpr std::int64_t max_inner_steps = std::int64_t(1) << 20;
/// Tile sizes a caller may force on the mixture's GEMM path (component_chunk, point_block).
inline constexpr std::int64_t max_gemm_tile = std::int64_t(1) << 20;
/// Points per axis of grid_mixture() (grid^dim components).
inline constexpr std::int64_t max_grid = 4096;
/// Stages of an SKRock step.
inline constexpr std::int64_t max_skrock_stages = 200;
/// The first chain (or sample) index of a call: chain ids stay clear of the random streams' reserved ids.
inline constexpr std::int64_t max_first_chain = std::int64_t(1) << 62;
/// Steps of one random stream (Philox offsets; kernels::philox_max_step).
inline constexpr std::int64_t max_stream_steps = std::int64_t(1) << 30;
/// Items of one call (problems x particles), so that their byte counts stay within int64.
inline constexpr std::int64_t max_items = (std::int64_t(1) << 62) - 1;
/// Bytes of host memory a call may ask for before it is refused as absurd (64 TiB).
inline constexpr std::int64_t max_host_bytes = std::int64_t(1) << 46;
/// Counts that CUB, MPI or an int-indexed routine holds in a 32-bit int.
inline constexpr std::int64_t max_int_count = (std::int64_t(1) << 31) - 1;

/// A limit as a message prints it: its value, with the power of two beside it from 2^16 up ("16777216 (2^24)",
/// "2147483647 (2^31 - 1)").
inline std::string spell(std::int64_t limit) {
  std::string text = std::to_string(limit);
  for (int k = 16; k < 63; ++k) {
    const std::int64_t power = std::int64_t(1) << k;
    if (limit == power) return text + " (2^" + std::to_string(k) + ")";
    if (limit == power - 1) return text + " (2^" + std::to_string(k) + " - 1)";
  }
  return text;
}

/// Whether lo <= value <= limit, for a signed or unsigned value.
template <class T>
constexpr bool within(T value, std::int64_t lo, std::int64_t limit) noexcept {
  static_assert(std::is_integral_v<T>, "limits apply to integer sizes and counts");
  if constexpr (std::is_signed_v<T>) {
    return std::int64_t(value) >= lo && std::int64_t(value) <= limit;
  } else {
    return (lo <= 0 || std::uint64_t(value) >= std::uint64_t(lo)) && limit >= 0 &&
           std::uint64_t(value) <= std::uint64_t(limit);
  }
}

/// The message of a value above its limit: "name = value, the limit is N", with " (why)" after it when given. The
/// value is text, for a product shown as its factors ("25 x 10000000").
inline std::string above(const std::string& name, const std::string& value, std::int64_t limit,
                         const char* why = nullptr) {
  std::string text = name + " = " + value + ", the limit is " + spell(limit);
  if (why != nullptr) text += std::string(" (") + why + ")";
  return text;
}

/// The message of a value outside [lo, limit]: above() above it, "name = value, must be at least lo" below it.
template <class T>
std::string message(const std::string& name, T value, std::int64_t lo, std::int64_t limit, const char* why = nullptr) {
  bool below;
  if constexpr (std::is_signed_v<T>)
    below = std::int64_t(value) < lo;
  else
    below = lo > 0 && std::uint64_t(value) < std::uint64_t(lo);
  if (below) return name + " = " + std::to_string(value) + ", must be at least " + std::to_string(lo);
  return above(name, std::to_string(value), limit, why);
}

/// Throws invalid_argument with message() unless lo <= value <= limit.
template <class T>
void check(const std::string& name, T value, std::int64_t lo, std::int64_t limit, const char* why = nullptr) {
  if (!within(value, lo, limit)) throw invalid_argument(message(name, value, lo, limit, why));
}

}  // namespace diffsample::limits
