/// @file metrics.hpp
/// @brief Accuracy metrics against exact references (host).
#pragma once

#include <diffsample/export.hpp>

#include <cstdint>

namespace diffsample {

/// Sliced Wasserstein distance between two host sample sets (n_a x d and n_b x d, row-major float): the average
/// over @p directions random unit directions (Philox stream of @p seed) of the exact 1-D Wasserstein-p distance
/// between the projected empirical distributions (sizes may differ), returned as (mean of W_p^p)^(1/p).
/// p is 1 or 2. Synchronous, host memory. Two independent exact sets of the same sizes give the floor.
DIFFSAMPLE_API double sliced_wasserstein(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b,
                                         std::int64_t d, int directions, std::uint64_t seed, int p = 1);

}  // namespace diffsample
