// The size limits of the public API (internal), one set for the C++ entry points and the C ABI, so that a size is
// accepted or refused the same way through either. Messages spell them as powers of two ("2^24").
#pragma once

#include <cstdint>

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

}  // namespace diffsample::limits
