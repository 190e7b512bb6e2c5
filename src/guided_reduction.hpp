// The factorisations behind the guided samplers' reduction of an observation with more rows than rank to the basis
// of its SVD (src/guided.cu, reduce_rank; internal). Each operator's A = U diag(S) V^T (detail::row_svd, FP64 on the
// host) is the reduction's only costly part and depends on the operators alone (not on y or sigma_y), so the
// factorisations of the last reduction_memo_entries operator sets are kept, keyed by every bit of the operators
// (d_y, d_x and their dense matrices): guided_workspace_bytes() and the guided_sample() that follows it, a plan made
// after either, or runs of one operator with other observations y, factor once. An entry is at most
// reduction_memo_bytes (the operators, U, S and V); a larger set is factored per call and not kept. Thread-safe:
// lookups hold a mutex; a factorisation runs outside it (two threads may factor the same operators, with the same
// result).
#pragma once

#include <cstddef>
#include <cstdint>

#include <diffsample/export.hpp>

namespace diffsample::detail {

/// Operator sets whose factorisations are kept (the most recently used first).
inline constexpr std::size_t reduction_memo_entries = 2;
/// The largest entry kept, in bytes: its operators' matrices (the key), U, S and V, all FP64.
inline constexpr std::size_t reduction_memo_bytes = std::size_t(128) << 20;

/// Operator sets this process has factored for a reduction (each a miss of the memo), for the tests.
DIFFSAMPLE_API std::int64_t reduction_factorisations() noexcept;

}  // namespace diffsample::detail
