// The resampling passes on the CUDA executor (src/particles.cu lists them and launches these kernels): one block of
// tile_threads threads per tile (passes 1, 3, 6 and the residual copies) or per problem (2, 5), grid-stride over the
// rest, each thread holding tile_items consecutive particles of a tile; the per-tile arithmetic is
// kernels/particle_passes.cuh's, which the CPU passes run too. CUDA only (CUB's block primitives).
#pragma once

#include <cmath>
#include <cstdint>

#include <cub/block/block_load.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/particle_passes.cuh"
#include "kernels/particles.cuh"

namespace diffsample::kernels {

constexpr int tile_threads = 256;
constexpr int tile_items = 16;
static_assert(tile_threads * tile_items == cuda_tile, "a CUDA tile is one block's items");

struct max_count {
  float max;
  std::int64_t nan_count;
};
struct max_count_op {
  __device__ max_count operator()(max_count a, max_count b) const {
    return {b.max > a.max ? b.max : a.max, a.nan_count + b.nan_count};
  }
};
/// The sums of pass 3 (and of pass 5, where `total` counts invalid log-weights).
struct weight_sums {
  std::uint64_t total;
  u128 sum_q2;
  double sum_w, sum_w2;
};
struct weight_sums_op {
  __device__ weight_sums operator()(const weight_sums& a, const weight_sums& b) const {
    return {a.total + b.total, a.sum_q2 + b.sum_q2, a.sum_w + b.sum_w, a.sum_w2 + b.sum_w2};
  }
};
struct max_op {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

using reduce_mc = cub::BlockReduce<max_count, tile_threads>;
using reduce_ws = cub::BlockReduce<weight_sums, tile_threads>;
using reduce_u = cub::BlockReduce<std::uint64_t, tile_threads>;

/// One block per item (a tile or a problem), grid-stride over the rest: each thread folds its share of item t with
/// fold(t), the block reduces the threads' values with op, and thread 0 stores the result with store(t, value).
template <class T, class Op, class Fold, class Store>
__device__ __forceinline__ void reduce_per_block(std::int64_t count, Op op, Fold fold, Store store) {
  using reduce = cub::BlockReduce<T, tile_threads>;
  __shared__ typename reduce::TempStorage temp;
  for (std::int64_t t = blockIdx.x; t < count; t += gridDim.x) {
    T v = fold(t);
    v = reduce(temp).Reduce(v, op);
    if (threadIdx.x == 0) store(t, v);
    __syncthreads();
  }
}

static __global__ void __launch_bounds__(tile_threads) tile_max_kernel(pass_params p, std::int64_t count) {
  reduce_per_block<max_count>(
      count, max_count_op{},
      [&](std::int64_t t) {
        const tile_range r = range_of(p, t);
        const float* lw = p.log_weights + r.b * p.n + r.lo;
        max_count m{-INFINITY, 0};
        for (std::int64_t i = threadIdx.x; i < r.len; i += tile_threads) {
          const float l = lw[i];
          if (invalid_log_weight(l))
            ++m.nan_count;
          else
            m.max = l > m.max ? l : m.max;
        }
        return m;
      },
      [&](std::int64_t t, const max_count& m) {
        p.tiles[t].max = m.max;
        p.tiles[t].nan_count = m.nan_count;
      });
}

static __global__ void __launch_bounds__(tile_threads) problem_max_kernel(pass_params p, std::int64_t problems) {
  reduce_per_block<float>(
      problems, max_op{},
      [&](std::int64_t b) {
        float m = -INFINITY;
        for (std::int64_t k = threadIdx.x; k < p.per; k += tile_threads) m = max_op{}(m, p.tiles[b * p.per + k].max);
        return m;
      },
      [&](std::int64_t b, float m) { p.states[b].max = m; });
}

static __global__ void __launch_bounds__(tile_threads) tile_weights_kernel(pass_params p, std::int64_t count) {
  const bool keep_q = stores_q(p.scheme);
  reduce_per_block<weight_sums>(
      count, weight_sums_op{},
      [&](std::int64_t t) {
        const tile_range r = range_of(p, t);
        const std::int64_t first = r.b * p.n + r.lo;
        const float max = p.states[r.b].max;
        weight_sums s{0, u128{}, 0.0, 0.0};
        for (std::int64_t i = threadIdx.x; i < r.len; i += tile_threads) {
          const weight_pair wq = fixed_weight_pair(p.log_weights[first + i], max, p.bits);
          s.total += wq.q;
          s.sum_q2 = s.sum_q2 + mul_wide(wq.q, wq.q);
          s.sum_w += wq.w;
          s.sum_w2 += wq.w * wq.w;
          if (keep_q) p.units[first + i] = wq.q;
        }
        return s;
      },
      [&](std::int64_t t, const weight_sums& s) {
        p.totals[t] = s.total;
        p.tiles[t].sum_q2 = s.sum_q2;
        p.tiles[t].sum_w = s.sum_w;
        p.tiles[t].sum_w2 = s.sum_w2;
      });
}

static __global__ void __launch_bounds__(tile_threads) problem_finish_kernel(pass_params p, std::int64_t problems) {
  reduce_per_block<weight_sums>(
      problems, weight_sums_op{},
      [&](std::int64_t b) {
        weight_sums s{0, u128{}, 0.0, 0.0};
        for (std::int64_t k = threadIdx.x; k < p.per; k += tile_threads) {
          const tile_sums& ts = p.tiles[b * p.per + k];
          s = weight_sums_op{}(s, weight_sums{std::uint64_t(ts.nan_count), ts.sum_q2, ts.sum_w, ts.sum_w2});
        }
        return s;
      },
      [&](std::int64_t b, const weight_sums& s) {
        problem_state st{};
        finish_problem(p, b, p.states[b].max, std::int64_t(s.total), problem_sum(p.offsets, p.totals, p, b),
                       s.sum_q2, s.sum_w, s.sum_w2, st);
        p.states[b] = st;
      });
}

static __global__ void __launch_bounds__(tile_threads) tile_copies_kernel(pass_params p, std::int64_t count) {
  __shared__ typename reduce_u::TempStorage temp;
  for (std::int64_t t = blockIdx.x; t < count; t += gridDim.x) {
    const tile_range r = range_of(p, t);
    const problem_state st = p.states[r.b];
    const float* lw = p.log_weights + r.b * p.n + r.lo;
    std::uint64_t copies = 0;
    if (st.resample)
      for (std::int64_t i = threadIdx.x; i < r.len; i += tile_threads)
        copies += residual_copies(std::uint64_t(p.n), fixed_weight(lw[i], st.max, p.bits),
                                           st.total);
    copies = reduce_u(temp).Sum(copies);
    if (threadIdx.x == 0) p.copies[t] = copies;
    __syncthreads();
  }
}

using load_f = cub::BlockLoad<float, tile_threads, tile_items, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
using scan_u = cub::BlockScan<std::uint64_t, tile_threads>;
union fill_temp {
  typename load_f::TempStorage load;
  typename scan_u::TempStorage scan;
  typename reduce_mc::TempStorage max_count;
  typename reduce_ws::TempStorage sums;
  std::int32_t ends[cuda_tile];  // runs: J(P_i) of the tile's particles
};

/// 6. The fill pass of tile t, whose log-weights thread k holds as particles 16 k .. 16 k + 15 of the tile (blocked,
/// so one block scan gives the in-tile prefix); base: the tile's problem-local offset. Stratified
/// and systematic: every particle's J(P_i) goes to shared memory, then the tile's slots [J(base), J(P_last)) are
/// written in order by the block's threads, slot j's ancestor being the first particle with J(P_i) > j (a binary
/// search in shared memory): coalesced writes, and a heavy particle's many slots are shared by the whole block.
/// Called by every thread of the block with the same t and st (the branches are uniform); ends with a barrier.
__device__ __forceinline__ void fill_tile(fill_temp& temp, const pass_params& p, const fill_params& f,
                                          std::int64_t t, const problem_state& st, const float (&l)[tile_items],
                                          std::uint64_t base) {
  const tile_range r = range_of(p, t);
  const std::int64_t first = r.b * p.n + r.lo;
  const int len = static_cast<int>(r.len);
  const bool ancestors = f.ancestors != nullptr || f.ancestors64 != nullptr;
  std::uint64_t q[tile_items];
  for (int m = 0; m < tile_items; ++m) {
    const int i = threadIdx.x * tile_items + m;
    const weight_pair wq = fixed_weight_pair(l[m], st.max, p.bits);
    q[m] = wq.q;
    if (f.normalised != nullptr && i < len) f.normalised[first + i] = normalised_weight(wq.w, st);
  }
  if (ancestors && !stores_q(p.scheme)) {
    if (!st.resample) {
      if (f.runs)
        for (int m = 0; m < tile_items; ++m) {
          const int i = threadIdx.x * tile_items + m;
          if (i < len) write_ancestor(f, first + i, r.lo + i);
        }
    } else {
      std::uint64_t P[tile_items];
      scan_u(temp.scan).InclusiveSum(q, P);
      __syncthreads();
      if (f.runs) {
        const slot_keys key(p.scheme, f.key(), f.step, st.total, r.b, p.n);
        for (int m = 0; m < tile_items; ++m) {
          const int i = threadIdx.x * tile_items + m;
          if (i < len) temp.ends[i] = static_cast<std::int32_t>(key.count_below(base + P[m]));
        }
        __syncthreads();
        const std::int64_t begin = key.count_below(base), end = temp.ends[len - 1];
        for (std::int64_t j = begin + threadIdx.x; j < end; j += tile_threads)
          write_ancestor(f, r.b * p.n + j, r.lo + upper_bound(temp.ends, len, std::int32_t(j)));
      } else if (p.scheme == resampling_scheme::residual) {
        // The tile's problem-local offset of the copies, read here alone: the passes compute the copies only where
        // ancestors are selected (statistics_cuda's `copies`), and a problem of one tile (one_tile_kernel) has none.
        const std::uint64_t copies_base = p.per == 1 ? 0 : problem_offset(p.copies_offsets, p, t);
        std::uint64_t c[tile_items], C[tile_items];
        for (int m = 0; m < tile_items; ++m) c[m] = residual_copies(std::uint64_t(p.n), q[m], st.total);
        scan_u(temp.scan).InclusiveSum(c, C);
        for (int m = 0; m < tile_items; ++m) {
          const int i = threadIdx.x * tile_items + m;
          if (i < len) {
            p.units[first + i] = copies_base + C[m];
            p.prefix[first + i] = base + P[m];
          }
          // A problem of one tile: its total of copies (the tiled path's copies_total_functor).
          if (p.per == 1 && i == len - 1) p.states[r.b].copies = C[m];
        }
      } else {
        for (int m = 0; m < tile_items; ++m) {
          const int i = threadIdx.x * tile_items + m;
          if (i < len) p.units[first + i] = base + P[m];
        }
      }
    }
  }
  __syncthreads();  // the caller's next tile reuses the shared memory
}

static __global__ void __launch_bounds__(tile_threads) tile_fill_kernel(pass_params p, fill_params f,
                                                                        std::int64_t count) {
  __shared__ fill_temp temp;
  for (std::int64_t t = blockIdx.x; t < count; t += gridDim.x) {
    const tile_range r = range_of(p, t);
    const problem_state st = p.states[r.b];
    float l[tile_items];
    load_f(temp.load).Load(p.log_weights + r.b * p.n + r.lo, l, static_cast<int>(r.len), -INFINITY);
    __syncthreads();
    fill_tile(temp, p, f, t, st, l, problem_offset(p.offsets, p, t));
  }
}

/// Problems of one tile (N <= 4096), every pass in one block per problem: the log-weights are read once into
/// registers, reduced for the max, reduced for the sums and the decision, then filled (8 bytes per particle for
/// stratified and systematic: the log-weight in, the ancestor out).
static __global__ void __launch_bounds__(tile_threads) one_tile_kernel(pass_params p, fill_params f,
                                                                       std::int64_t problems) {
  __shared__ fill_temp temp;
  __shared__ problem_state shared_state;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    const int len = static_cast<int>(p.n);
    float l[tile_items];
    load_f(temp.load).Load(p.log_weights + b * p.n, l, len, -INFINITY);  // -inf padding: no weight, not invalid
    __syncthreads();
    max_count mc{-INFINITY, 0};
    for (int m = 0; m < tile_items; ++m) {
      if (invalid_log_weight(l[m]))
        ++mc.nan_count;
      else
        mc.max = l[m] > mc.max ? l[m] : mc.max;
    }
    mc = reduce_mc(temp.max_count).Reduce(mc, max_count_op{});
    if (threadIdx.x == 0) shared_state.max = mc.max;
    __syncthreads();
    const float max = shared_state.max;
    weight_sums s{0, u128{}, 0.0, 0.0};
    for (int m = 0; m < tile_items; ++m) {
      const int i = threadIdx.x * tile_items + m;
      const weight_pair wq = fixed_weight_pair(l[m], max, p.bits);
      s = weight_sums_op{}(s, weight_sums{wq.q, mul_wide(wq.q, wq.q), wq.w, wq.w * wq.w});
      if (stores_q(p.scheme) && i < len) p.units[b * p.n + i] = wq.q;  // Metropolis, rejection: pass 3's q
    }
    s = reduce_ws(temp.sums).Reduce(s, weight_sums_op{});
    // Every thread has read shared_state.max above (CUB's reduction has a barrier of its own; this one does not rely on
    // it) before thread 0 overwrites shared_state.
    __syncthreads();
    if (threadIdx.x == 0) {
      problem_state st{};
      finish_problem(p, b, max, mc.nan_count, s.total, s.sum_q2, s.sum_w, s.sum_w2, st);
      shared_state = st;
      p.states[b] = st;
    }
    __syncthreads();
    const problem_state st = shared_state;
    fill_tile(temp, p, f, b, st, l, 0);
  }
}

}  // namespace diffsample::kernels
