// The resampling passes' parameters and their per-tile arithmetic, shared by the CPU passes and the CUDA kernels of
// src/particles.cu (the passes are listed at the top of that file): what each pass reads and writes, a tile's range,
// a problem's offsets and sums from the scanned tile totals, its decision, and the fill pass's writes.
#pragma once

#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/particles.cuh"
#include <diffsample/particles.hpp>

namespace diffsample::kernels {

DS_HD inline bool runs_scheme(resampling_scheme s) {
  return s == resampling_scheme::stratified || s == resampling_scheme::systematic;
}
DS_HD inline bool stores_q(resampling_scheme s) {
  return s == resampling_scheme::metropolis || s == resampling_scheme::rejection;
}

/// Everything the passes read and write besides the ancestors.
struct pass_params {
  const float* log_weights;
  std::int64_t n;
  int bits;
  resampling_scheme scheme;
  double threshold;
  std::int64_t tile, per;  // tile length and tiles per problem on this executor
  problem_state* states;
  tile_sums* tiles;
  std::uint64_t *totals, *offsets, *copies, *copies_offsets;
  std::uint64_t* units;
  std::uint64_t* prefix;
  particle_report* reports;
};

struct tile_range {
  std::int64_t b, lo, len;
};
DS_HD inline tile_range range_of(const pass_params& p, std::int64_t t) {
  const std::int64_t b = t / p.per, lo = (t - b * p.per) * p.tile;
  return {b, lo, p.n - lo < p.tile ? p.n - lo : p.tile};
}

/// A problem's offsets are the flat scan minus its first tile's (modulo 2^64, exact: problem totals are < 2^63).
DS_HD inline std::uint64_t problem_offset(const std::uint64_t* offsets, const pass_params& p, std::int64_t t) {
  return offsets[t] - offsets[t / p.per * p.per];
}
DS_HD inline std::uint64_t problem_sum(const std::uint64_t* offsets, const std::uint64_t* totals,
                                       const pass_params& p, std::int64_t b) {
  const std::int64_t last = b * p.per + p.per - 1;
  return offsets[last] + totals[last] - offsets[b * p.per];
}

/// The resampling decision and report of problem b from its reduced quantities (decide_problem).
DS_HD inline void finish_problem(const pass_params& p, std::int64_t b, float max, std::int64_t nan_count,
                                 std::uint64_t total, u128 sum_q2, double sum_w, double sum_w2, problem_state& st) {
  st = decide_problem(max, nan_count, total, sum_q2, sum_w, sum_w2, p.threshold, p.n,
                      p.reports == nullptr ? nullptr : p.reports + b);
}

/// Normalised weight of a particle with FP64 weight w (0 in a failed problem).
DS_HD inline float normalised_weight(double w, const problem_state& st) {
  return st.total == 0 ? 0.f : float(w / st.sum_w);
}

/// What the fill pass writes besides the arrays of pass_params.
struct fill_params {
  std::uint64_t seed, step;
  std::int32_t* ancestors;
  std::int64_t* ancestors64;
  float* normalised;
  bool runs;  // stratified, systematic: write the ancestors here; otherwise store the prefix for the search
  const std::uint64_t* seed_at;  // when not null, the seed is read here (see resample_unchecked)
  DS_HD std::uint64_t key() const { return seed_at != nullptr ? *seed_at : seed; }
};

DS_HD inline void write_ancestor(const fill_params& f, std::int64_t g, std::int64_t a) {
  if (f.ancestors64 != nullptr)
    f.ancestors64[g] = a;
  else
    f.ancestors[g] = static_cast<std::int32_t>(a);
}

/// Each problem's total of residual copies, for the selection.
struct copies_total_functor {
  pass_params p;
  DS_HD void operator()(std::int64_t b) const { p.states[b].copies = problem_sum(p.copies_offsets, p.copies, p, b); }
};

}  // namespace diffsample::kernels
