// Particle-system launchers: a per-problem statistics pass (max, NaN count, fixed-point weights and their integer
// prefix sums, FP64 report sums), then one functor per particle that draws its ancestor (kernels/particles.cuh).
// The statistics pass is a plain loop per problem on the CPU and one CUDA block per problem on the GPU (CUB block
// primitives); the integer scans make both produce identical prefix sums.
#include <cmath>
#include <limits>
#include <memory>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/launch.cuh"
#include "kernels/particles.cuh"
#include "src/cuda_check.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/particles.hpp>

namespace diffsample {

const char* to_string(resampling_scheme s) noexcept {
  switch (s) {
    case resampling_scheme::multinomial: return "multinomial";
    case resampling_scheme::stratified: return "stratified";
    case resampling_scheme::systematic: return "systematic";
    case resampling_scheme::residual: return "residual";
    case resampling_scheme::metropolis: return "metropolis";
    case resampling_scheme::rejection: return "rejection";
  }
  return "unknown";
}

resampling_scheme parse_resampling_scheme(const std::string& name) {
  for (int s = 0; s <= static_cast<int>(resampling_scheme::rejection); ++s)
    if (name == to_string(static_cast<resampling_scheme>(s))) return static_cast<resampling_scheme>(s);
  throw invalid_argument("scheme: unknown resampling scheme '" + name +
                         "' (expected multinomial, stratified, systematic, residual, metropolis or rejection)");
}

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

// The CPU statistics pass splits every problem into chunks of this fixed size (never a function of the thread
// count), so its FP64 report sums are combined in the same order whatever the number of threads.
constexpr std::int64_t cpu_chunk = std::int64_t(1) << 16;

/// Partial results of one chunk of one problem (CPU executor).
struct chunk_sums {
  float max;
  std::int64_t nan_count;
  std::uint64_t total, copies, total_offset, copies_offset;
  u128 sum_q2, rest, rest_offset;
  double sum_w, sum_w2;
};

std::int64_t chunks_per_problem(std::int64_t particles) { return (particles + cpu_chunk - 1) / cpu_chunk; }

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
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t ci = 0; ci < count; ++ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * cpu_chunk, hi = std::min(n, lo + cpu_chunk);
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
  }
  // The problem's max (exact, order-free) goes into chunk 0 of the problem.
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < problems; ++b)
    for (std::int64_t k = 1; k < per; ++k) chunks[b * per].max = std::max(chunks[b * per].max, chunks[b * per + k].max);

  // 2. Fixed-point weights, their chunk-local inclusive prefix sums, and the chunk's sums.
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t ci = 0; ci < count; ++ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * cpu_chunk, hi = std::min(n, lo + cpu_chunk);
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
  }

  // 3. Per problem: chunk offsets, totals, the resampling decision and the report.
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < problems; ++b) {
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
  }

  // 4. Chunk offsets into the prefix sums; residual copies and residual weights, chunk-locally.
  const bool residual = p.scheme == resampling_scheme::residual;
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t ci = 0; ci < count; ++ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * cpu_chunk, hi = std::min(n, lo + cpu_chunk);
    const problem_state& st = p.states[b];
    if (!st.resample) continue;
    std::uint64_t* units = p.units + b * n;
    if (prefix) {
      const std::uint64_t offset = chunks[ci].total_offset;
      for (std::int64_t i = lo; i < hi; ++i) units[i] += offset;
    } else if (residual) {
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
    }
  }
  if (!residual) return;

  // 5. Residual: per-problem chunk offsets, then applied.
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < problems; ++b) {
    if (!p.states[b].resample) continue;
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
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t ci = 0; ci < count; ++ci) {
    const std::int64_t b = ci / per, lo = (ci % per) * cpu_chunk, hi = std::min(n, lo + cpu_chunk);
    if (!p.states[b].resample || ci % per == 0) continue;
    for (std::int64_t i = lo; i < hi; ++i) {
      p.units[b * n + i] += chunks[ci].copies_offset;
      p.residual[b * n + i] = p.residual[b * n + i] + chunks[ci].rest_offset;
    }
  }
}

// --- CUDA statistics pass: one block per problem -----------------------------------------------------------------

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

static __global__ void __launch_bounds__(pass_block) statistics_pass_kernel(pass_params p, std::int64_t problems) {
  using reduce_f = cub::BlockReduce<float, pass_block>;
  using reduce_i = cub::BlockReduce<std::int64_t, pass_block>;
  using reduce_u = cub::BlockReduce<std::uint64_t, pass_block>;
  using reduce_d = cub::BlockReduce<double, pass_block>;
  using reduce_q = cub::BlockReduce<u128, pass_block>;
  using scan_u = cub::BlockScan<std::uint64_t, pass_block>;
  using scan_q = cub::BlockScan<u128, pass_block>;
  __shared__ union {
    typename reduce_f::TempStorage f;
    typename reduce_i::TempStorage i;
    typename reduce_u::TempStorage u;
    typename reduce_d::TempStorage d;
    typename reduce_q::TempStorage q;
    typename scan_u::TempStorage su;
    typename scan_q::TempStorage sq;
  } temp;
  __shared__ float shared_max;
  __shared__ std::uint64_t shared_total;
  __shared__ problem_state shared_state;

  const std::int64_t n = p.n;
  const int tid = threadIdx.x;
  for (std::int64_t b = blockIdx.x; b < problems; b += gridDim.x) {
    const float* lw = p.log_weights + b * n;
    std::uint64_t* units = p.units + b * n;

    float max = -INFINITY;
    std::int64_t nan_count = 0;
    for (std::int64_t i = tid; i < n; i += pass_block) {
      const float l = lw[i];
      if (kernels::invalid_log_weight(l))
        ++nan_count;
      else
        max = l > max ? l : max;
    }
    max = reduce_f(temp.f).Reduce(max, max_op{});
    if (tid == 0) shared_max = max;
    __syncthreads();
    nan_count = reduce_i(temp.i).Sum(nan_count);
    __syncthreads();
    max = shared_max;

    std::uint64_t total = 0;
    u128 sum_q2;
    double sum_w = 0, sum_w2 = 0;
    if (max > -INFINITY) {
      running_prefix<std::uint64_t> prefix{0};
      const bool scan = uses_prefix(p.scheme);
      for (std::int64_t base = 0; base < n; base += pass_block) {
        const std::int64_t i = base + tid;
        const float l = i < n ? lw[i] : -INFINITY;
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
          if (i < n) units[i] = c;
        } else if (i < n) {
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
    if (tid == 0) {
      problem_state st{};
      finish_problem(p, b, max, nan_count, total, sum_q2, sum_w, sum_w2, st);
      shared_state = st;
      shared_total = total;
    }
    __syncthreads();

    if (p.scheme == resampling_scheme::residual && shared_state.resample) {
      total = shared_total;
      running_prefix<std::uint64_t> copies_prefix{0};
      running_prefix<u128> rest_prefix{u128{}};
      for (std::int64_t base = 0; base < n; base += pass_block) {
        const std::int64_t i = base + tid;
        const std::uint64_t q = i < n ? kernels::fixed_weight(lw[i], max, p.bits) : 0;
        const std::uint64_t c = kernels::residual_copies(std::uint64_t(n), q, total);
        const u128 r{kernels::mul_wide(std::uint64_t(n), q).lo - c * total, 0};
        std::uint64_t copies;
        scan_u(temp.su).InclusiveSum(c, copies, copies_prefix);
        __syncthreads();
        u128 rest;
        scan_q(temp.sq).InclusiveScan(r, rest, add_u128_op{}, rest_prefix);
        __syncthreads();
        if (i < n) {
          units[i] = copies;
          p.residual[b * n + i] = rest;
        }
      }
      // Warp 0 runs the prefix callback, so its lanes hold the running total after the last tile.
      if (tid == 0) shared_state.copies = copies_prefix.total;
      __syncthreads();
    }
    if (tid == 0) p.states[b] = shared_state;
    __syncthreads();
  }
}

template <class Index>
void check_ancestors_pointer(const char* name, const Index* a, std::int64_t count, executor where) {
  detail::check_buffer(name, a, count, sizeof(Index), where);
}

template <class Index>
void select_ancestors(executor where, const pass_params& p, const resampling_options& o, std::int64_t count,
                      Index* ancestors, float* normalised_weights, cudaStream_t stream) {
  kernels::select_ancestor_functor<Index> f{p.log_weights, p.states,          p.units,  p.residual, p.n,
                                            p.bits,        o.scheme,          o.metropolis_steps,   o.seed,
                                            o.step,        ancestors,         normalised_weights};
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
  DIFFSAMPLE_EXPECTS(count == 0 || states != out, "out: must not alias states (" << static_cast<const void*>(out)
                                                                                  << ")");
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
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  if (workspace != nullptr) {
    DIFFSAMPLE_EXPECTS(workspace_bytes >= w.total,
                       "workspace_bytes: " << workspace_bytes << " given, " << w.total << " needed");
    detail::check_buffer("workspace", workspace, static_cast<std::int64_t>(w.total / 16), 16, where);
  } else {
    owned = std::make_unique<detail::scratch>(w.total, where, exec.stream);
    ws = static_cast<unsigned char*>(owned->data());
  }
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
  if (where == executor::cuda) {
    const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(problems, 65535 * 32));
    statistics_pass_kernel<<<grid, pass_block, 0, exec.stream>>>(p, problems);
    DIFFSAMPLE_CUDA_TRY(cudaPeekAtLastError());
  } else {
    statistics_pass_cpu(p, problems, reinterpret_cast<chunk_sums*>(ws + w.chunks));
  }
  if (out.ancestors64 != nullptr)
    select_ancestors(where, p, o, count, out.ancestors64, out.normalised_weights, exec.stream);
  else
    select_ancestors(where, p, o, count, out.ancestors, out.normalised_weights, exec.stream);
  return where;
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
