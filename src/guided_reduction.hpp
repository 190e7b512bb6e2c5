// The factorisations behind the guided samplers' treatment of an observation with more rows than rank (internal):
// the reduction to the basis of each operator's SVD (src/guided.cu, reduce_rank: detail::row_svd), DDRM's thin SVD
// (src/guided_ddrm.cu) and the spectral grid's singular values (src/guided_grid.cpp, dense operators). Each is FP64
// host work of seconds to minutes for operators of a few hundred rows (reduce_rank 3.4 s, DDRM 45 s for 512 x 256)
// that depends on the operators alone (not on y or sigma_y), so the factors of the last reduction_memo_entries
// operator sets of each kind are kept in a factorisation_memo, keyed by every bit of the operators (d_y, d_x and
// their dense matrices, the input the factorisation reads): guided_workspace_bytes() and the guided_sample() that
// follows it, a plan made after either, or runs of the same operators with other observations y factor once. An
// entry is at most reduction_memo_bytes (the operators and their factors); a larger set is factored per call and not
// kept. Thread-safe: lookups hold a mutex; a factorisation runs outside it (two threads may factor the same
// operators, with the same result).
// The check whether a run reduces at all (src/guided.cu, rank_reduction_needed: A A^T's pivots and a condition
// estimate, O(d_y^3) per operator) keeps its answers in a memo of the same kind, keyed by what that check reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <diffsample/export.hpp>
#include <diffsample/guided.hpp>

namespace diffsample::detail {

/// Operator sets whose factorisations are kept per kind (the most recently used first).
inline constexpr std::size_t reduction_memo_entries = 2;
/// The largest entry kept, in bytes: its operators' matrices (the key) and their factors, all FP64.
inline constexpr std::size_t reduction_memo_bytes = std::size_t(128) << 20;

/// Operator sets this process has factored for reduce_rank (each a miss of its memo), for the tests.
DIFFSAMPLE_API std::int64_t reduction_factorisations() noexcept;
/// Checks whether a run needs the reduction (src/guided.cu, rank_reduction_needed) this process has computed (each a
/// miss of its memo, or a set it does not keep), for the tests.
DIFFSAMPLE_API std::int64_t reduction_checks() noexcept;
/// Operator sets this process has factored for DDRM (each a miss of its memo), for the tests.
DIFFSAMPLE_API std::int64_t ddrm_factorisations() noexcept;
/// Operator sets this process has factored for the spectral grid's singular values (each a miss of its memo; dense
/// operators only), for the tests.
DIFFSAMPLE_API std::int64_t spectral_factorisations() noexcept;

/// The problems' operators (1 shared or B: the dense rows given, or each operator's matrix()), d_y x d_x each,
/// row-major, concatenated: what a factorisation of them reads, a factorisation_memo's key.
inline std::vector<double> operator_matrices(const guided_problems& pr, std::int64_t d) {
  const std::size_t size = static_cast<std::size_t>(pr.d_y * d);
  if (pr.operators.empty()) {
    const std::size_t count = pr.A.size() == size ? 1 : static_cast<std::size_t>(pr.problems);
    return std::vector<double>(pr.A.begin(), pr.A.begin() + static_cast<std::ptrdiff_t>(count * size));
  }
  std::vector<double> key;
  key.reserve(pr.operators.size() * size);
  for (const observation_operator& op : pr.operators) {
    const std::vector<double> A = op.matrix();
    key.insert(key.end(), A.begin(), A.end());
  }
  return key;
}

/// The factors (Factors) of the last reduction_memo_entries operator sets, keyed by d_y, d_x and the bits of the
/// operators' dense matrices (`key`, their concatenation).
template <class Factors>
class factorisation_memo {
 public:
  std::shared_ptr<const Factors> find(std::int64_t dy, std::int64_t d, const std::vector<double>& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (!it->matches(dy, d, key)) continue;
      entries_.splice(entries_.begin(), entries_, it);
      return entries_.front().factors;
    }
    return nullptr;
  }
  /// Keeps @p factors (@p values FP64 values besides the key) unless the entry would exceed reduction_memo_bytes.
  void keep(std::int64_t dy, std::int64_t d, std::vector<double> key, std::shared_ptr<const Factors> factors,
            std::size_t values) {
    if (key.size() + values > reduction_memo_bytes / sizeof(double)) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const entry& e : entries_)  // another thread factored the same operators meanwhile
      if (e.matches(dy, d, key)) return;
    entries_.push_front(entry{dy, d, std::move(key), std::move(factors)});
    while (entries_.size() > reduction_memo_entries) entries_.pop_back();
  }

 private:
  struct entry {
    std::int64_t dy, d;
    std::vector<double> key;
    std::shared_ptr<const Factors> factors;
    bool matches(std::int64_t dy_, std::int64_t d_, const std::vector<double>& key_) const {
      return dy == dy_ && d == d_ && key.size() == key_.size() &&
             std::memcmp(key.data(), key_.data(), key.size() * sizeof(double)) == 0;
    }
  };
  std::mutex mutex_;
  std::list<entry> entries_;
};

}  // namespace diffsample::detail
