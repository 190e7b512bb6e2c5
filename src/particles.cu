// Particle-system launchers: a per-problem statistics pass (max, NaN count, fixed-point weights and their integer
// prefix sums, FP64 report sums), then one functor per particle that draws its ancestor (kernels/particles.cuh).
// The statistics pass splits long problems into fixed chunks: OpenMP loops over chunks on the CPU; on the GPU one
// CUDA block per problem when a problem is one chunk, else one block per chunk and one per problem to stitch
// (CUB block primitives). The integer scans make both executors produce identical prefix sums.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/particles.cuh"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/particles_detail.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/particles.hpp>

namespace diffsample {

namespace {

using kernels::problem_state;
using kernels::u128;

constexpr std::int64_t max_particles = std::int64_t(1) << 24;
constexpr int pass_block = 256;

bool valid_scheme(resampling_scheme s) {
  return static_cast<int>(s) >= 0 && static_cast<int>(s) <= static_cast<int>(resampling_scheme::rejection);
}

void check_sizes(std::int64_t problems, std::int64_t particles) {
  DIFFSAMPLE_EXPECTS(problems >= 0, "problems: must be >= 0, got " << problems);
  DIFFSAMPLE_EXPECTS(particles >= 0 && particles <= max_particles,
                     "particles: must be in [0, 2^24], got " << particles);
  DIFFSAMPLE_EXPECTS(problems == 0 || particles >= 1, "particles: must be >= 1 when problems > 0, got " << particles);
  DIFFSAMPLE_EXPECTS(particles == 0 || problems < (std::int64_t(1) << 62) / particles,
                     "problems x particles: " << problems << " x " << particles << " reaches 2^62");
}

std::size_t align16(std::size_t bytes) { return (bytes + 15) / 16 * 16; }

// Problems longer than kernels::chunk_size are split into fixed chunks, scanned chunk-locally: OpenMP threads over
// chunks on the CPU, one CUDA block per chunk on the GPU. The CPU's FP64 report sums are thereby combined in the same
// order whatever the number of threads; the integer prefix sums are identical on both executors whatever the split.
using kernels::chunk_size;
using kernels::chunk_sums;
static_assert(((std::int64_t(1) << 24) + chunk_size - 1) / chunk_size <= pass_block,
              "the per-problem passes over chunks give one thread to each chunk");

std::int64_t chunks_per_problem(std::int64_t particles) { return (particles + chunk_size - 1) / chunk_size; }

struct workspace_layout {
  std::size_t states = 0, units = 0, residual = 0, chunks = 0, total = 0;
};

workspace_layout layout(std::int64_t problems, std::int64_t particles, resampling_scheme scheme) {
  workspace_layout w;
  const std::size_t count = static_cast<std::size_t>(problems) * static_cast<std::size_t>(particles);
  if (count == 0) return w;
  w.units = align16(static_cast<std::size_t>(problems) * sizeof(problem_state));
  w.residual = w.units + align16(count * sizeof(std::uint64_t));
  w.chunks = w.residual + align16(scheme == resampling_scheme::residual ? count * sizeof(u128) : 0);
  w.total = w.chunks + static_cast<std::size_t>(problems * chunks_per_problem(particles)) * sizeof(chunk_sums);
  return w;
}

DS_HD bool uses_prefix(resampling_scheme s) {
  return s == resampling_scheme::multinomial || s == resampling_scheme::stratified ||
         s == resampling_scheme::systematic;
}

/// What the statistics pass needs besides the buffers.
struct pass_params {
  const float* log_weights;
  std::int64_t n;
  int bits;
  resampling_scheme scheme;
  double threshold;
  problem_state* states;
  std::uint64_t* units;
  u128* residual;
  particle_report* reports;
};

/// The resampling decision and report from the reduced per-problem quantities. The decision uses the fixed-point
/// ESS T^2 / sum q^2 (integers, hence the same on every executor); the report uses the FP64 sums.
DS_HD void finish_problem(const pass_params& p, std::int64_t b, float max, std::int64_t nan_count, std::uint64_t total,
                          u128 sum_q2, double sum_w, double sum_w2, problem_state& st) {
  st.total = total;
  st.copies = 0;
  st.max = max;
  st.sum_w = sum_w;
  const bool failed = total == 0;
  const double fixed_ess = failed ? 0.0 : double(total) * double(total) / kernels::to_double(sum_q2);
  st.resample = !failed && fixed_ess < p.threshold * double(p.n);
  if (p.reports != nullptr) {
    particle_report r;
    r.nan_count = nan_count;
    r.failed = failed;
    r.resampled = st.resample;
    if (failed) {
      r.ess = 0;
      r.log_sum_exp = -INFINITY;
      r.log_normaliser_increment = -INFINITY;
    } else {
      r.ess = sum_w * sum_w / sum_w2;
      r.log_sum_exp = double(max) + log(sum_w);
      r.log_normaliser_increment = r.log_sum_exp - log(double(p.n));
    }
    p.reports[b] = r;
  }
}

// --- CPU statistics pass -----------------------------------------------------------------------------------------
// Every phase runs over all chunks of all problems in parallel; chunk results are combined per problem in chunk
// order. The integer prefix sums are exact whatever the split; the FP64 sums depend only on the fixed chunk size.

void statistics_pass_cpu(const pass_params& p, std::int64_t problems, chunk_sums* chunks) {
  const std::int64_t n = p.n;
  const std::int64_t per = chunks_per_problem(n);
  const std::int64_t count = problems * per;
  const bool prefix = uses_prefix(p.scheme);

  // 1. Largest valid log-weight and invalid count of each chunk.
  cpu::parallel_for_each(count, [&](std::int64_t ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * chunk_size, hi = std::min(n, lo + chunk_size);
    const float* lw = p.log_weights + b * n;
    float max = -INFINITY;
    std::int64_t nan_count = 0;
    for (std::int64_t i = lo; i < hi; ++i) {
      if (kernels::invalid_log_weight(lw[i]))
        ++nan_count;
      else if (lw[i] > max)
        max = lw[i];
    }
    chunks[ci].max = max;
    chunks[ci].nan_count = nan_count;
  }, 1);
  // The problem's max (exact, order-free) goes into chunk 0 of the problem.
  cpu::parallel_for_each(problems, [&](std::int64_t b) {
    for (std::int64_t k = 1; k < per; ++k) chunks[b * per].max = std::max(chunks[b * per].max, chunks[b * per + k].max);
  });

  // 2. Fixed-point weights, their chunk-local inclusive prefix sums, and the chunk's sums.
  cpu::parallel_for_each(count, [&](std::int64_t ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * chunk_size, hi = std::min(n, lo + chunk_size);
    const float* lw = p.log_weights + b * n;
    const float max = chunks[b * per].max;
    std::uint64_t total = 0;
    u128 sum_q2;
    double sum_w = 0, sum_w2 = 0;
    if (max > -INFINITY) {
      std::uint64_t* units = p.units + b * n;
      for (std::int64_t i = lo; i < hi; ++i) {
        const std::uint64_t q = kernels::fixed_weight(lw[i], max, p.bits);
        total += q;
        sum_q2 = sum_q2 + kernels::mul_wide(q, q);
        units[i] = prefix ? total : q;
        if (!kernels::invalid_log_weight(lw[i])) {
          const double w = std::exp(double(lw[i]) - double(max));
          sum_w += w;
          sum_w2 += w * w;
        }
      }
    }
    chunks[ci].total = total;
    chunks[ci].sum_q2 = sum_q2;
    chunks[ci].sum_w = sum_w;
    chunks[ci].sum_w2 = sum_w2;
  }, 1);

  // 3. Per problem: chunk offsets, totals, the resampling decision and the report.
  cpu::parallel_for_each(problems, [&](std::int64_t b) {
    chunk_sums* c = chunks + b * per;
    std::int64_t nan_count = 0;
    std::uint64_t total = 0;
    u128 sum_q2;
    double sum_w = 0, sum_w2 = 0;
    for (std::int64_t k = 0; k < per; ++k) {
      c[k].total_offset = total;
      nan_count += c[k].nan_count;
      total += c[k].total;
      sum_q2 = sum_q2 + c[k].sum_q2;
      sum_w += c[k].sum_w;
      sum_w2 += c[k].sum_w2;
    }
    problem_state st{};
    finish_problem(p, b, c[0].max, nan_count, total, sum_q2, sum_w, sum_w2, st);
    p.states[b] = st;
  });

  // 4. Residual: copies and residual weights with their chunk-local prefix sums.
  if (p.scheme != resampling_scheme::residual) return;
  cpu::parallel_for_each(count, [&](std::int64_t ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * chunk_size, hi = std::min(n, lo + chunk_size);
    const problem_state& st = p.states[b];
    if (!st.resample) return;
    std::uint64_t* units = p.units + b * n;
    const float* lw = p.log_weights + b * n;
    std::uint64_t copies = 0;
    u128 rest;
    for (std::int64_t i = lo; i < hi; ++i) {
      const std::uint64_t q = kernels::fixed_weight(lw[i], st.max, p.bits);
      const std::uint64_t c = kernels::residual_copies(std::uint64_t(n), q, st.total);
      copies += c;
      units[i] = copies;
      // N q - c T < T fits in 64 bits: the low words of the 128-bit difference.
      rest = rest + u128{kernels::mul_wide(std::uint64_t(n), q).lo - c * st.total, 0};
      p.residual[b * n + i] = rest;
    }
    chunks[ci].copies = copies;
    chunks[ci].rest = rest;
  }, 1);

  // 5. Residual: per-problem chunk offsets and the total of copies.
  cpu::parallel_for_each(problems, [&](std::int64_t b) {
    if (!p.states[b].resample) return;
    chunk_sums* c = chunks + b * per;
    std::uint64_t copies = 0;
    u128 rest;
    for (std::int64_t k = 0; k < per; ++k) {
      c[k].copies_offset = copies;
      c[k].rest_offset = rest;
      copies += c[k].copies;
      rest = rest + c[k].rest;
    }
    p.states[b].copies = copies;
  });
}

// --- CUDA statistics pass ----------------------------------------------------------------------------------------
// Block routines over a range [lo, hi) of one problem, shared by the one-block-per-problem kernel (problems of at
// most one chunk) and the per-chunk kernels of longer problems. Results of block reductions are valid in thread 0.

struct max_op {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};
struct add_u128_op {
  __device__ u128 operator()(u128 a, u128 b) const { return a + b; }
};
/// Carries the running total of a tiled block scan from one tile to the next.
template <class T>
struct running_prefix {
  T total;
  __device__ T operator()(T tile_total) {
    const T before = total;
    total = total + tile_total;
    return before;
  }
};

using reduce_f = cub::BlockReduce<float, pass_block>;
using reduce_i = cub::BlockReduce<std::int64_t, pass_block>;
using reduce_u = cub::BlockReduce<std::uint64_t, pass_block>;
using reduce_d = cub::BlockReduce<double, pass_block>;
using reduce_q = cub::BlockReduce<u128, pass_block>;
using scan_u = cub::BlockScan<std::uint64_t, pass_block>;
using scan_q = cub::BlockScan<u128, pass_block>;
union pass_temp {
  typename reduce_f::TempStorage f;
  typename reduce_i::TempStorage i;
  typename reduce_u::TempStorage u;
  typename reduce_d::TempStorage d;
  typename reduce_q::TempStorage q;
  typename scan_u::TempStorage su;
  typename scan_q::TempStorage sq;
};

struct range_max {
  float max;
  std::int64_t nan_count;
};

/// Largest valid log-weight and invalid count of lw[lo, hi).
__device__ range_max block_max(pass_temp& temp, const float* lw, std::int64_t lo, std::int64_t hi) {
  float max = -INFINITY;
  std::int64_t nan_count = 0;
  for (std::int64_t i = lo + threadIdx.x; i < hi; i += pass_block) {
    const float l = lw[i];
    if (kernels::invalid_log_weight(l))
      ++nan_count;
    else
      max = l > max ? l : max;
  }
  max = reduce_f(temp.f).Reduce(max, max_op{});
  __syncthreads();
  nan_count = reduce_i(temp.i).Sum(nan_count);
  __syncthreads();
  return {max, nan_count};
}

struct range_weights {
  std::uint64_t total;
  u128 sum_q2;
  double sum_w, sum_w2;
};

/// Fixed-point weights of lw[lo, hi) against the problem's max (the same in every thread): units[i] receives the
/// inclusive prefix sum from lo (prefix schemes) or the weight itself; the sums are returned.
__device__ range_weights block_weights(pass_temp& temp, const pass_params& p, const float* lw, std::uint64_t* units,
                                       std::int64_t lo, std::int64_t hi, float max) {
  std::uint64_t total = 0;
  u128 sum_q2;
  double sum_w = 0, sum_w2 = 0;
  if (max > -INFINITY) {
    running_prefix<std::uint64_t> prefix{0};
    const bool scan = uses_prefix(p.scheme);
    for (std::int64_t base = lo; base < hi; base += pass_block) {
      const std::int64_t i = base + threadIdx.x;
      const float l = i < hi ? lw[i] : -INFINITY;
      const std::uint64_t q = kernels::fixed_weight(l, max, p.bits);
      total += q;
      sum_q2 = sum_q2 + kernels::mul_wide(q, q);
      if (!kernels::invalid_log_weight(l) && l > -INFINITY) {
        const double w = exp(double(l) - double(max));
        sum_w += w;
        sum_w2 += w * w;
      }
      if (scan) {
        std::uint64_t c;
        scan_u(temp.su).InclusiveSum(q, c, prefix);
        __syncthreads();
        if (i < hi) units[i] = c;
      } else if (i < hi) {
        units[i] = q;
      }
    }
  }
  total = reduce_u(temp.u).Sum(total);
  __syncthreads();
  sum_q2 = reduce_q(temp.q).Reduce(sum_q2, add_u128_op{});
  __syncthreads();
  sum_w = reduce_d(temp.d).Sum(sum_w);
  __syncthreads();
  sum_w2 = reduce_d(temp.d).Sum(sum_w2);
  __syncthreads();
  return {total, sum_q2, sum_w, sum_w2};
}

struct range_residual {
  std::uint64_t copies;
  u128 rest;
};

/// Residual resampling over [lo, hi): copies floor(N q_i / T) and residual weights N q_i - copies_i T, with their
/// inclusive prefix sums from lo in units[i] and residual[i]; the range totals are returned.
__device__ range_residual block_residual(pass_temp& temp, const pass_params& p, const float* lw, std::uint64_t* units,
                                         u128* residual, std::int64_t lo, std::int64_t hi, float max,
                                         std::uint64_t total) {
  running_prefix<std::uint64_t> copies_prefix{0};
  running_prefix<u128> rest_prefix{u128{}};
  for (std::int64_t base = lo; base < hi; base += pass_block) {
    const std::int64_t i = base + threadIdx.x;
    const std::uint64_t q = i < hi ? kernels::fixed_weight(lw[i], max, p.bits) : 0;
    const std::uint64_t c = kernels::residual_copies(std::uint64_t(p.n), q, total);
    const u128 r{kernels::mul_wide(std::uint64_t(p.n), q).lo - c * total, 0};
    std::uint64_t copies;
    scan_u(temp.su).InclusiveSum(c, copies, copies_prefix);
    __syncthreads();
    u128 rest;
    scan_q(temp.sq).InclusiveScan(r, rest, add_u128_op{}, rest_prefix);
    __syncthreads();
    if (i < hi) {
      units[i] = copies;
      residual[i] = rest;
    }
  }
  // Warp 0 runs the prefix callbacks, so its lanes hold the running totals after the last tile.
  return {copies_prefix.total, rest_prefix.total};
}

/// Problems of at most one chunk: the whole pass in one block per problem.
static __global__ void __launch_bounds__(pass_block) statistics_pass_kernel(pass_params p, std::int64_t problems) {
  __shared__ pass_temp temp;
  __shared__ float shared_max;
  __shared__ problem_state shared_state;
  const std::int64_t n = p.n;
  const int tid = threadIdx.x;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    const float* lw = p.log_weights + b * n;
    std::uint64_t* units = p.units + b * n;
    const range_max m = block_max(temp, lw, 0, n);
    if (tid == 0) shared_max = m.max;
    __syncthreads();
    const float max = shared_max;
    const range_weights w = block_weights(temp, p, lw, units, 0, n, max);
    if (tid == 0) {
      problem_state st{};
      finish_problem(p, b, max, m.nan_count, w.total, w.sum_q2, w.sum_w, w.sum_w2, st);
      shared_state = st;
    }
    __syncthreads();
    if (p.scheme == resampling_scheme::residual && shared_state.resample) {
      const range_residual r = block_residual(temp, p, lw, units, p.residual + b * n, 0, n, max, shared_state.total);
      if (tid == 0) shared_state.copies = r.copies;
      __syncthreads();
    }
    if (tid == 0) p.states[b] = shared_state;
    __syncthreads();
  }
}

// Longer problems: the phases of the CPU pass, with one block per chunk for the passes over particles and one block
// per problem (a thread per chunk) for the passes over chunks.

struct chunk_range {
  std::int64_t b, lo, hi;
};
__device__ chunk_range chunk_of(std::int64_t ci, std::int64_t per, std::int64_t n) {
  const std::int64_t b = ci / per, lo = (ci - b * per) * chunk_size;
  return {b, lo, lo + chunk_size < n ? lo + chunk_size : n};
}

static __global__ void __launch_bounds__(pass_block) chunk_max_kernel(pass_params p, chunk_sums* chunks,
                                                                      std::int64_t count, std::int64_t per) {
  __shared__ pass_temp temp;
  for (std::int64_t ci = blockIdx.x; ci < count; ci += gridDim.x) {
    const chunk_range c = chunk_of(ci, per, p.n);
    const range_max m = block_max(temp, p.log_weights + c.b * p.n, c.lo, c.hi);
    if (threadIdx.x == 0) {
      chunks[ci].max = m.max;
      chunks[ci].nan_count = m.nan_count;
    }
  }
}

/// The problem's max into its chunk 0, as on the CPU.
static __global__ void __launch_bounds__(pass_block) problem_max_kernel(chunk_sums* chunks, std::int64_t problems,
                                                                        std::int64_t per) {
  __shared__ pass_temp temp;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    const float m = threadIdx.x < per ? chunks[b * per + threadIdx.x].max : -INFINITY;
    const float max = reduce_f(temp.f).Reduce(m, max_op{});
    if (threadIdx.x == 0) chunks[b * per].max = max;
    __syncthreads();
  }
}

static __global__ void __launch_bounds__(pass_block) chunk_weights_kernel(pass_params p, chunk_sums* chunks,
                                                                          std::int64_t count, std::int64_t per) {
  __shared__ pass_temp temp;
  for (std::int64_t ci = blockIdx.x; ci < count; ci += gridDim.x) {
    const chunk_range c = chunk_of(ci, per, p.n);
    const float max = chunks[c.b * per].max;
    const range_weights w =
        block_weights(temp, p, p.log_weights + c.b * p.n, p.units + c.b * p.n, c.lo, c.hi, max);
    if (threadIdx.x == 0) {
      chunks[ci].total = w.total;
      chunks[ci].sum_q2 = w.sum_q2;
      chunks[ci].sum_w = w.sum_w;
      chunks[ci].sum_w2 = w.sum_w2;
    }
  }
}

/// Per problem: the chunks' prefix offsets, the totals, the resampling decision and the report.
static __global__ void __launch_bounds__(pass_block) problem_finish_kernel(pass_params p, chunk_sums* chunks,
                                                                           std::int64_t problems, std::int64_t per) {
  __shared__ pass_temp temp;
  const int t = threadIdx.x;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    chunk_sums* c = chunks + b * per;
    const bool mine = t < per;
    std::uint64_t offset, total;
    scan_u(temp.su).ExclusiveSum(mine ? c[t].total : 0, offset, total);
    __syncthreads();
    if (mine) c[t].total_offset = offset;
    const std::int64_t nan_count = reduce_i(temp.i).Sum(mine ? c[t].nan_count : 0);
    __syncthreads();
    const u128 sum_q2 = reduce_q(temp.q).Reduce(mine ? c[t].sum_q2 : u128{}, add_u128_op{});
    __syncthreads();
    const double sum_w = reduce_d(temp.d).Sum(mine ? c[t].sum_w : 0.0);
    __syncthreads();
    const double sum_w2 = reduce_d(temp.d).Sum(mine ? c[t].sum_w2 : 0.0);
    if (t == 0) {
      problem_state st{};
      finish_problem(p, b, c[0].max, nan_count, total, sum_q2, sum_w, sum_w2, st);
      p.states[b] = st;
    }
    __syncthreads();
  }
}

static __global__ void __launch_bounds__(pass_block) chunk_residual_kernel(pass_params p, chunk_sums* chunks,
                                                                           std::int64_t count, std::int64_t per) {
  __shared__ pass_temp temp;
  for (std::int64_t ci = blockIdx.x; ci < count; ci += gridDim.x) {
    const chunk_range c = chunk_of(ci, per, p.n);
    const problem_state st = p.states[c.b];
    if (!st.resample) return;  // the same in every thread of the block
    const range_residual r = block_residual(temp, p, p.log_weights + c.b * p.n, p.units + c.b * p.n,
                                            p.residual + c.b * p.n, c.lo, c.hi, st.max, st.total);
    if (threadIdx.x == 0) {
      chunks[ci].copies = r.copies;
      chunks[ci].rest = r.rest;
    }
  }
}

/// Residual, per problem: the chunks' offsets into both prefix sums, and the problem's total of copies.
static __global__ void __launch_bounds__(pass_block) problem_residual_kernel(pass_params p, chunk_sums* chunks,
                                                                             std::int64_t problems, std::int64_t per) {
  __shared__ pass_temp temp;
  const int t = threadIdx.x;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    if (!p.states[b].resample) return;
    chunk_sums* c = chunks + b * per;
    const bool mine = t < per;
    std::uint64_t copies_offset, copies;
    scan_u(temp.su).ExclusiveSum(mine ? c[t].copies : 0, copies_offset, copies);
    __syncthreads();
    u128 rest_offset, rest;
    scan_q(temp.sq).ExclusiveScan(mine ? c[t].rest : u128{}, rest_offset, u128{}, add_u128_op{}, rest);
    __syncthreads();
    if (mine) {
      c[t].copies_offset = copies_offset;
      c[t].rest_offset = rest_offset;
    }
    if (t == 0) p.states[b].copies = copies;
  }
}

/// The statistics pass on the CUDA executor: one kernel for problems of one chunk, the chunked phases otherwise.
void statistics_pass_cuda(const pass_params& p, std::int64_t problems, chunk_sums* chunks, cudaStream_t stream) {
  // One block per problem or chunk (the kernels stride over the rest), sized by the library's one grid helper.
  const auto grid = [](std::int64_t blocks) { return kernels::grid_size(blocks * pass_block, pass_block); };
  const std::int64_t per = chunks_per_problem(p.n);
  if (per == 1) {
    statistics_pass_kernel<<<grid(problems), pass_block, 0, stream>>>(p, problems);
    DIFFSAMPLE_CUDA_TRY(cudaPeekAtLastError());
    return;
  }
  const std::int64_t count = problems * per;
  chunk_max_kernel<<<grid(count), pass_block, 0, stream>>>(p, chunks, count, per);
  problem_max_kernel<<<grid(problems), pass_block, 0, stream>>>(chunks, problems, per);
  chunk_weights_kernel<<<grid(count), pass_block, 0, stream>>>(p, chunks, count, per);
  problem_finish_kernel<<<grid(problems), pass_block, 0, stream>>>(p, chunks, problems, per);
  if (p.scheme == resampling_scheme::residual) {
    chunk_residual_kernel<<<grid(count), pass_block, 0, stream>>>(p, chunks, count, per);
    problem_residual_kernel<<<grid(problems), pass_block, 0, stream>>>(p, chunks, problems, per);
  }
  DIFFSAMPLE_CUDA_TRY(cudaPeekAtLastError());
}

template <class Index>
void check_ancestors_pointer(const char* name, const Index* a, std::int64_t count, executor where) {
  detail::check_buffer(name, a, count, sizeof(Index), where);
}

template <class Index>
void select_ancestors(executor where, const pass_params& p, const chunk_sums* chunks, const resampling_options& o,
                      std::int64_t count, Index* ancestors, float* normalised_weights, cudaStream_t stream) {
  kernels::select_ancestor_functor<Index> f{p.log_weights,      p.states, p.units, p.residual, chunks,
                                            chunks_per_problem(p.n), p.n,    p.bits,  o.scheme,   o.metropolis_steps,
                                            o.seed,             o.step,   ancestors, normalised_weights};
  kernels::for_each_index(where, count, f, stream);
}

template <class Index>
void gather(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
            const Index* ancestors, float* out, executor where, cudaStream_t stream) {
  const std::int64_t count = problems * particles;
  kernels::for_each_index(where, count * dim, kernels::gather_functor<Index>{states, ancestors, out, particles, dim},
                          stream);
}

template <class Index>
executor gather_checked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                        const Index* ancestors, float* out, execution exec) {
  check_sizes(problems, particles);
  detail::check_count("problems x particles", problems * particles, dim);
  const executor where = detail::resolve_executor(exec.kind, states);
  const std::int64_t count = problems * particles;
  detail::check_buffer("states", states, count * dim, sizeof(float), where);
  detail::check_buffer("ancestors", ancestors, count, sizeof(Index), where);
  detail::check_buffer("out", out, count * dim, sizeof(float), where);
  // Any overlap, not only out == states: the gather would overwrite states it has still to read.
  const auto first = [](const float* p) { return reinterpret_cast<std::uintptr_t>(p); };
  const std::uintptr_t bytes = static_cast<std::uintptr_t>(count * dim) * sizeof(float);
  DIFFSAMPLE_EXPECTS(count * dim == 0 || first(out) + bytes <= first(states) || first(states) + bytes <= first(out),
                     "out: must not overlap states (out " << static_cast<const void*>(out) << ", states "
                                                          << static_cast<const void*>(states) << ", " << bytes
                                                          << " bytes each)");
  gather(states, problems, particles, dim, ancestors, out, where, exec.stream);
  return where;
}

}  // namespace

std::size_t resampling_workspace_bytes(std::int64_t problems, std::int64_t particles, resampling_scheme scheme) {
  check_sizes(problems, particles);
  DIFFSAMPLE_EXPECTS(valid_scheme(scheme), "scheme: invalid value " << static_cast<int>(scheme));
  return layout(problems, particles, scheme).total;
}

executor resample(const float* log_weights, std::int64_t problems, std::int64_t particles,
                  const resampling_options& o, particle_outputs out, execution exec, void* workspace,
                  std::size_t workspace_bytes) {
  check_sizes(problems, particles);
  DIFFSAMPLE_EXPECTS(valid_scheme(o.scheme), "options.scheme: invalid value " << static_cast<int>(o.scheme));
  DIFFSAMPLE_EXPECTS(std::isfinite(o.ess_threshold) && o.ess_threshold >= 0,
                     "options.ess_threshold: must be finite and >= 0, got " << o.ess_threshold);
  DIFFSAMPLE_EXPECTS(o.step < kernels::philox_max_step, "options.step: must be < 2^30, got " << o.step);
  DIFFSAMPLE_EXPECTS(o.scheme != resampling_scheme::metropolis || o.metropolis_steps >= 1,
                     "options.metropolis_steps: must be >= 1, got " << o.metropolis_steps);
  DIFFSAMPLE_EXPECTS(out.ancestors == nullptr || out.ancestors64 == nullptr,
                     "outputs: give ancestors or ancestors64, not both");
  const executor where = detail::resolve_executor(exec.kind, log_weights);
  const std::int64_t count = problems * particles;
  detail::check_buffer("log_weights", log_weights, count, sizeof(float), where);
  detail::check_buffer("outputs.ancestors", out.ancestors, out.ancestors ? count : 0, sizeof(std::int32_t), where);
  detail::check_buffer("outputs.ancestors64", out.ancestors64, out.ancestors64 ? count : 0, sizeof(std::int64_t),
                       where);
  detail::check_buffer("outputs.normalised_weights", out.normalised_weights, out.normalised_weights ? count : 0,
                       sizeof(float), where);
  detail::check_buffer("outputs.reports", out.reports, out.reports ? problems : 0, alignof(particle_report), where);
  if (count == 0) return where;

  const workspace_layout w = layout(problems, particles, o.scheme);
  std::unique_ptr<detail::scratch> owned;
  workspace = detail::workspace_or_scratch(w.total, workspace, workspace_bytes, 16, where, exec.stream, owned);
  detail::resample_unchecked(log_weights, problems, particles, o, out, where, exec.stream, workspace);
  return where;
}

namespace {

// The statistics pass of resample_unchecked; returns its parameters and the chunk sums the selection reads.
std::pair<pass_params, chunk_sums*> statistics_unchecked(const float* log_weights, std::int64_t problems,
                                                         std::int64_t particles, const resampling_options& o,
                                                         const particle_outputs& out, executor where,
                                                         cudaStream_t stream, void* workspace) {
  const workspace_layout w = layout(problems, particles, o.scheme);
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  pass_params p{log_weights,
                particles,
                kernels::fixed_point_bits(particles),
                o.scheme,
                // Without an output for ancestors nothing is resampled, whatever the threshold.
                (out.ancestors || out.ancestors64) ? o.ess_threshold : 0.0,
                reinterpret_cast<problem_state*>(ws + w.states),
                reinterpret_cast<std::uint64_t*>(ws + w.units),
                o.scheme == resampling_scheme::residual ? reinterpret_cast<u128*>(ws + w.residual) : nullptr,
                out.reports};
  chunk_sums* chunks = reinterpret_cast<chunk_sums*>(ws + w.chunks);
  if (where == executor::cuda)
    statistics_pass_cuda(p, problems, chunks, stream);
  else
    statistics_pass_cpu(p, problems, chunks);
  return {p, chunks};
}

}  // namespace

kernels::select_ancestor_functor<std::int32_t> detail::resample_statistics_cpu(
    const float* log_weights, std::int64_t problems, std::int64_t particles, const resampling_options& o,
    const particle_outputs& out, void* workspace) {
  const auto [p, chunks] = statistics_unchecked(log_weights, problems, particles, o, out, executor::cpu, nullptr,
                                                workspace);
  return {p.log_weights, p.states, p.units,  p.residual, chunks, chunks_per_problem(p.n), p.n, p.bits,
          o.scheme,      o.metropolis_steps, o.seed,  o.step,     out.ancestors,          out.normalised_weights};
}

void detail::resample_unchecked(const float* log_weights, std::int64_t problems, std::int64_t particles,
                                const resampling_options& o, const particle_outputs& out, executor where,
                                cudaStream_t stream, void* workspace) {
  const std::int64_t count = problems * particles;
  if (count == 0) return;
  const auto [p, chunks] = statistics_unchecked(log_weights, problems, particles, o, out, where, stream, workspace);
  if (out.ancestors64 != nullptr)
    select_ancestors(where, p, chunks, o, count, out.ancestors64, out.normalised_weights, stream);
  else
    select_ancestors(where, p, chunks, o, count, out.ancestors, out.normalised_weights, stream);
}

void detail::gather_unchecked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                              const std::int32_t* ancestors, float* out, executor where, cudaStream_t stream) {
  gather(states, problems, particles, dim, ancestors, out, where, stream);
}

executor gather_particles(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                          const std::int32_t* ancestors, float* out, execution exec) {
  return gather_checked(states, problems, particles, dim, ancestors, out, exec);
}

executor gather_particles(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                          const std::int64_t* ancestors, float* out, execution exec) {
  return gather_checked(states, problems, particles, dim, ancestors, out, exec);
}

}  // namespace diffsample
