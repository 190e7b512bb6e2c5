// Particle-system launchers. Resampling runs in tiles (kernels::cuda_tile = 4096 particles on the GPU, one block of
// 256 threads x 16; kernels::cpu_tile on the CPU), each pass the same on both executors (its per-tile arithmetic in
// kernels/particle_passes.cuh, its CUDA kernels in kernels/particle_passes_cuda.cuh):
//   1. tile max:      each tile's largest valid log-weight and invalid count                        reads 4 B
//   2. problem max:   each problem's max over its tiles                                              (per tile)
//   3. tile weights:  fixed-point weights q; each tile's total, sum q^2 and FP64 report sums         reads 4 B
//   4. offsets:       exclusive scan of the tile totals over all problems' tiles (CUB's decoupled look-back
//                     DeviceScan on uint64 on the GPU: integer addition modulo 2^64 is exact and order-free, so a
//                     problem's offsets are the scan minus its first tile's, equal on both executors)
//   5. finish:        each problem's total T, fixed-point ESS, decision and report                   (per tile)
//   6. fill:          per tile, q again, its in-tile inclusive scan plus the tile's offset gives each particle's
//                     prefix P_i; normalised weights; stratified and systematic write their ancestors here (slots
//                     [J(P_i - q_i), J(P_i)) of kernels::slot_keys, no search), the other schemes store what
//                     their per-particle selection reads                                            reads 4 B
//   7. select:        multinomial, residual, Metropolis, rejection: kernels::select_ancestor_functor
// Bytes per particle at large N, counted from these passes (a search counted as reading its array once, its lower
// bound; without normalised weights, which add 4 written, read from the fill pass's load):
//   stratified, systematic: 4 + 4 + 4 read, 4 written                                                 = 16
//   multinomial:            16, + 8 written (P, pass 6) and 8 read back by the search                  = 32
//   residual:               32, + 4 read (copies pass) + 8 written and read (C) + 8 read (P)           = 52
//   metropolis, rejection:  4 + 4 read, 8 written (q, pass 3), 4 written, + 8 per proposal (random reads of q)
// Problems of one CUDA tile (N <= 4096) run every pass in one kernel, one block per problem, reading the log-weights
// once: 8 bytes per particle for stratified and systematic (plus the searches' reads for the other schemes).
// Before the tile passes, stratified and systematic moved 28 (4 + 4 read, 8 written as the prefix, 8 read back by
// the search, 4 written; normalised weights 8 more), in passes that looped a block over 2^16-particle chunks.
// Ancestors are exactly those of the search over stored prefix sums (tests/test_particles.cpp pins them).
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>

#include <cub/device/device_scan.cuh>

#include "kernels/particle_passes.cuh"
#include "kernels/particle_passes_cuda.cuh"
#include "kernels/particles.cuh"
#include "src/cpu/pool.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/option_readers.hpp"
#include "src/particles_detail.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/error.hpp>
#include <diffsample/particles.hpp>

namespace diffsample {

namespace {

using kernels::copies_total_functor;
using kernels::fill_params;
using kernels::finish_problem;
using kernels::normalised_weight;
using kernels::pass_params;
using kernels::problem_offset;
using kernels::problem_state;
using kernels::problem_sum;
using kernels::range_of;
using kernels::runs_scheme;
using kernels::stores_q;
using kernels::tile_range;
using kernels::tile_sums;
using kernels::u128;
using kernels::write_ancestor;

using kernels::tile_threads;
static_assert(kernels::cpu_tile % kernels::cuda_tile == 0, "the CPU tile is a whole number of CUDA tiles");

bool valid_scheme(resampling_scheme s) {
  return static_cast<int>(s) >= 0 && static_cast<int>(s) <= static_cast<int>(resampling_scheme::rejection);
}

void check_sizes(std::int64_t problems, std::int64_t particles) {
  DIFFSAMPLE_EXPECTS(problems >= 0, "problems: must be >= 0, got " << problems);
  limits::check("particles", particles, 0, limits::max_particles);
  DIFFSAMPLE_EXPECTS(problems == 0 || particles >= 1, "particles: must be >= 1 when problems > 0, got " << particles);
  DIFFSAMPLE_EXPECTS(particles == 0 || problems <= limits::max_items / particles,
                     limits::above("problems x particles", std::to_string(problems) + " x " + std::to_string(particles),
                                   limits::max_items));
}

std::size_t align16(std::size_t bytes) { return (bytes + 15) / 16 * 16; }

std::int64_t tiles_per_problem(std::int64_t particles, std::int64_t tile) { return (particles + tile - 1) / tile; }

// CUB's DeviceScan keeps one small descriptor per tile of at least 128 items in its temporary storage; the
// workspace reserves 16 bytes per scanned item plus 4 KiB, and the CUDA path checks the size CUB asks for.
std::size_t scan_reserve(std::int64_t items) { return align16(static_cast<std::size_t>(items) * 16 + 4096); }

struct workspace_layout {
  std::size_t states = 0, tiles = 0, totals = 0, offsets = 0, copies = 0, copies_offsets = 0, scan = 0, units = 0,
              prefix = 0, total = 0;
};

// Sized for the CUDA executor's tiles (the CPU's are longer, so fewer), whatever the executor. B x N within
// limits::max_items can still need more than 2^63 bytes (about 16 per particle and 130 per tile, so a tile per
// particle at N = 1): such sizes are refused here, where the size_t sums below would wrap to a small workspace.
workspace_layout layout(std::int64_t problems, std::int64_t particles, resampling_scheme scheme) {
  workspace_layout w;
  const std::size_t count = static_cast<std::size_t>(problems) * static_cast<std::size_t>(particles);
  if (count == 0) return w;
  const std::int64_t tiles = problems * tiles_per_problem(particles, kernels::cuda_tile);
  // An upper bound of the sums below in FP64 (each term rounded up by its 16-byte alignment and CUB's 4 KiB).
  const double bound = double(problems) * (sizeof(problem_state) + 16) +
                       double(tiles) * (sizeof(tile_sums) + 4 * sizeof(std::uint64_t) + 16 + 5 * 16) +
                       double(count) * 2 * sizeof(std::uint64_t) + 4096 + 3 * 16;
  DIFFSAMPLE_EXPECTS(bound < 0x1p62, "problems x particles: " << problems << " x " << particles
                                                              << " need a resampling workspace of about " << bound
                                                              << " bytes, beyond a 64-bit byte count");
  const std::size_t words = align16(static_cast<std::size_t>(tiles) * sizeof(std::uint64_t));
  w.tiles = align16(static_cast<std::size_t>(problems) * sizeof(problem_state));
  w.totals = w.tiles + align16(static_cast<std::size_t>(tiles) * sizeof(tile_sums));
  w.offsets = w.totals + words;
  w.copies = w.offsets + words;
  w.copies_offsets = w.copies + words;
  w.scan = w.copies_offsets + words;
  w.units = w.scan + scan_reserve(tiles);
  w.prefix = w.units + align16(count * sizeof(std::uint64_t));
  w.total = w.prefix + (scheme == resampling_scheme::residual ? count * sizeof(std::uint64_t) : 0);
  return w;
}

// --- CPU passes ----------------------------------------------------------------------------------------------------
// Each pass runs over all tiles (or problems) on the pool; per-problem results combine tiles in tile order, so the
// FP64 sums do not depend on the thread count either.

// `copies`: whether anything selects ancestors after these passes (residual resampling's copies are read by the
// selection only: a call that writes reports or normalised weights alone skips their pass).
void statistics_cpu(const pass_params& p, std::int64_t problems, bool copies) {
  const std::int64_t count = problems * p.per;
  // 1. Tile max and invalid count.
  cpu::parallel_for_each(count, [&](std::int64_t t) {
    const tile_range r = range_of(p, t);
    const float* lw = p.log_weights + r.b * p.n + r.lo;
    float max = -INFINITY;
    std::int64_t nan_count = 0;
    for (std::int64_t i = 0; i < r.len; ++i) {
      if (kernels::invalid_log_weight(lw[i]))
        ++nan_count;
      else if (lw[i] > max)
        max = lw[i];
    }
    p.tiles[t].max = max;
    p.tiles[t].nan_count = nan_count;
  }, 1);
  // 2. Problem max (exact, order-free).
  cpu::parallel_for_each(problems, [&](std::int64_t b) {
    float max = -INFINITY;
    for (std::int64_t k = 0; k < p.per; ++k) max = std::max(max, p.tiles[b * p.per + k].max);
    p.states[b].max = max;
  });
  // 3. Fixed-point weights: tile totals and sums (metropolis and rejection keep q for their selection).
  cpu::parallel_for_each(count, [&](std::int64_t t) {
    const tile_range r = range_of(p, t);
    const float* lw = p.log_weights + r.b * p.n + r.lo;
    const float max = p.states[r.b].max;
    std::uint64_t total = 0;
    u128 sum_q2;
    double sum_w = 0, sum_w2 = 0;
    std::uint64_t* q_out = stores_q(p.scheme) ? p.units + r.b * p.n + r.lo : nullptr;
    for (std::int64_t i = 0; i < r.len; ++i) {
      const kernels::weight_pair wq = kernels::fixed_weight_pair(lw[i], max, p.bits);
      total += wq.q;
      sum_q2 = sum_q2 + kernels::mul_wide(wq.q, wq.q);
      sum_w += wq.w;
      sum_w2 += wq.w * wq.w;
      if (q_out != nullptr) q_out[i] = wq.q;
    }
    p.totals[t] = total;
    p.tiles[t].sum_q2 = sum_q2;
    p.tiles[t].sum_w = sum_w;
    p.tiles[t].sum_w2 = sum_w2;
  }, 1);
  // 4. Offsets: exclusive scan of the tile totals over all tiles, modulo 2^64.
  std::uint64_t running = 0;
  for (std::int64_t t = 0; t < count; ++t) {
    p.offsets[t] = running;
    running += p.totals[t];
  }
  // 5. Per problem: total, decision, report.
  cpu::parallel_for_each(problems, [&](std::int64_t b) {
    std::int64_t nan_count = 0;
    u128 sum_q2;
    double sum_w = 0, sum_w2 = 0;
    for (std::int64_t k = 0; k < p.per; ++k) {
      const tile_sums& s = p.tiles[b * p.per + k];
      nan_count += s.nan_count;
      sum_q2 = sum_q2 + s.sum_q2;
      sum_w += s.sum_w;
      sum_w2 += s.sum_w2;
    }
    problem_state st{};
    finish_problem(p, b, p.states[b].max, nan_count, problem_sum(p.offsets, p.totals, p, b), sum_q2, sum_w, sum_w2,
                   st);
    p.states[b] = st;
  });
  if (p.scheme != resampling_scheme::residual || !copies) return;
  // Residual: tile totals of the copies floor(N q / T), their offsets, each problem's total of copies.
  cpu::parallel_for_each(count, [&](std::int64_t t) {
    const tile_range r = range_of(p, t);
    const problem_state& st = p.states[r.b];
    const float* lw = p.log_weights + r.b * p.n + r.lo;
    std::uint64_t copies = 0;
    if (st.resample)
      for (std::int64_t i = 0; i < r.len; ++i)
        copies += kernels::residual_copies(std::uint64_t(p.n), kernels::fixed_weight(lw[i], st.max, p.bits),
                                           st.total);
    p.copies[t] = copies;
  }, 1);
  running = 0;
  for (std::int64_t t = 0; t < count; ++t) {
    p.copies_offsets[t] = running;
    running += p.copies[t];
  }
  for (std::int64_t b = 0; b < problems; ++b) p.states[b].copies = problem_sum(p.copies_offsets, p.copies, p, b);
}

/// 6. The fill pass of one tile on the CPU: the GPU's tile_fill_kernel, one particle after another.
void fill_tile_cpu(const pass_params& p, const fill_params& f, std::int64_t t) {
  const tile_range r = range_of(p, t);
  const problem_state st = p.states[r.b];
  const std::int64_t first = r.b * p.n + r.lo;  // global index of the tile's first particle
  const float* lw = p.log_weights + first;
  const bool ancestors = f.ancestors != nullptr || f.ancestors64 != nullptr;
  if (f.normalised != nullptr)
    for (std::int64_t i = 0; i < r.len; ++i)
      f.normalised[first + i] = normalised_weight(kernels::fixed_weight_pair(lw[i], st.max, p.bits).w, st);
  if (!ancestors || stores_q(p.scheme)) return;  // the selection writes ancestors (identity when not resampled)
  if (!st.resample) {
    if (f.runs)
      for (std::int64_t i = 0; i < r.len; ++i) write_ancestor(f, first + i, r.lo + i);
    return;
  }
  const std::uint64_t N = std::uint64_t(p.n), T = st.total;
  std::uint64_t P = problem_offset(p.offsets, p, t);
  std::uint64_t C = p.scheme == resampling_scheme::residual ? problem_offset(p.copies_offsets, p, t) : 0;
  if (f.runs) {
    // The CUDA tile's computation, one CUDA tile after another: every particle's J(P_i), then the slots in order.
    const kernels::slot_keys key(p.scheme, f.key(), f.step, T, r.b, p.n);
    std::int32_t ends[kernels::cuda_tile];
    for (std::int64_t lo = 0; lo < r.len; lo += kernels::cuda_tile) {
      const int len = static_cast<int>(std::min(kernels::cuda_tile, r.len - lo));
      const std::int64_t begin = key.count_below(P);
      for (int i = 0; i < len; ++i) {
        P += kernels::fixed_weight(lw[lo + i], st.max, p.bits);
        ends[i] = static_cast<std::int32_t>(key.count_below(P));
      }
      for (std::int64_t j = begin; j < ends[len - 1]; ++j)
        write_ancestor(f, r.b * p.n + j, r.lo + lo + kernels::upper_bound(ends, len, std::int32_t(j)));
    }
    return;
  }
  std::uint64_t* units = p.units + first;
  for (std::int64_t i = 0; i < r.len; ++i) {
    const std::uint64_t q = kernels::fixed_weight(lw[i], st.max, p.bits);
    P += q;
    if (p.scheme == resampling_scheme::residual) {
      C += kernels::residual_copies(N, q, T);
      units[i] = C;
      p.prefix[first + i] = P;
    } else {
      units[i] = P;
    }
  }
}

/// The bytes of temporary storage CUB's scan of `tiles` tile totals asks (a size query: nothing is launched),
/// checked against the workspace's reserve (scan_reserve()), so that the check comes before any launch.
std::size_t checked_scan_bytes(std::int64_t tiles, cudaStream_t stream) {
  std::size_t bytes = 0;
  const std::uint64_t* totals = nullptr;
  std::uint64_t* offsets = nullptr;
  // Through checked_launch although nothing is launched: CUB's first call on a device reads the runtime's last
  // error (its per-device attribute queries), and one a caller's failed call left there came back as the query's
  // own (cudaErrorInvalidDevice after a refused cudaMalloc, seen on an H200).
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { return cub::DeviceScan::ExclusiveSum(nullptr, bytes, totals, offsets, tiles, stream); }));
  const std::size_t reserved = scan_reserve(tiles);
  DIFFSAMPLE_EXPECTS(bytes <= reserved, "resampling workspace: CUB's scan asks " << bytes << " bytes, "
                                                                                 << reserved << " reserved");
  return bytes;
}

/// Exclusive scan of n tile totals into offsets, modulo 2^64: CUB's single-pass (decoupled look-back) scan, with
/// the temporary storage checked_scan_bytes() answered.
void scan_tiles(const std::uint64_t* totals, std::uint64_t* offsets, std::int64_t n, void* temp, std::size_t bytes,
                cudaStream_t stream) {
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { return cub::DeviceScan::ExclusiveSum(temp, bytes, totals, offsets, n, stream); }));
}

// Passes 1 to 5 on the GPU; scan_bytes: checked_scan_bytes() of the problems' tiles, asked before any launch;
// copies: as statistics_cpu()'s (residual's copies only where ancestors are selected).
void statistics_cuda(const pass_params& p, std::int64_t problems, void* scan_temp, std::size_t scan_bytes,
                     cudaStream_t stream, bool copies) {
  const auto grid = [](std::int64_t blocks) { return kernels::grid_size(blocks * tile_threads, tile_threads); };
  const std::int64_t count = problems * p.per;
  DIFFSAMPLE_CUDA_TRY(
      kernels::checked_launch([&] { kernels::tile_max_kernel<<<grid(count), tile_threads, 0, stream>>>(p, count); }));
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { kernels::problem_max_kernel<<<grid(problems), tile_threads, 0, stream>>>(p, problems); }));
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { kernels::tile_weights_kernel<<<grid(count), tile_threads, 0, stream>>>(p, count); }));
  scan_tiles(p.totals, p.offsets, count, scan_temp, scan_bytes, stream);
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { kernels::problem_finish_kernel<<<grid(problems), tile_threads, 0, stream>>>(p, problems); }));
  if (p.scheme != resampling_scheme::residual || !copies) return;
  DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
      [&] { kernels::tile_copies_kernel<<<grid(count), tile_threads, 0, stream>>>(p, count); }));
  scan_tiles(p.copies, p.copies_offsets, count, scan_temp, scan_bytes, stream);
  kernels::for_each_index(executor::cuda, problems, copies_total_functor{p}, stream);
}

// The per-particle selection over the statistics passes' arrays; where a problem spans more than one tile its exact
// fallback draws search the tile offsets (else one tile's scan).
template <class Index>
kernels::select_ancestor_functor<Index> selection(const pass_params& p, const resampling_options& o, Index* ancestors,
                                                  const std::uint64_t* seed_at) {
  kernels::select_ancestor_functor<Index> f{p.states, p.units, p.prefix, p.n,    p.bits,
                                            o.scheme, o.metropolis_steps, o.seed, o.step, ancestors, seed_at};
  if (p.per > 1) {
    f.tile_offsets = p.offsets;
    f.tile = p.tile;
    f.per = p.per;
  }
  return f;
}

template <class Index>
void select_ancestors(executor where, const pass_params& p, const resampling_options& o, std::int64_t count,
                      Index* ancestors, cudaStream_t stream, const std::uint64_t* seed_at) {
  kernels::for_each_index(where, count, selection(p, o, ancestors, seed_at), stream);
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
  // The dimension first, by its own name (check_count would name the count it multiplies); no upper bound but the
  // byte count's.
  limits::check("dim", dim, 1, std::numeric_limits<std::int64_t>::max());
  detail::check_count("problems x particles", problems * particles, dim);
  const executor where = detail::resolve_executor(exec.kind, states);
  const std::int64_t count = problems * particles;
  detail::check_buffer("states", states, count * dim, sizeof(float), where);
  detail::check_buffer("ancestors", ancestors, count, sizeof(Index), where);
  detail::check_buffer("out", out, count * dim, sizeof(float), where);
  // Any overlap, not only out == states: the gather would overwrite states it has still to read, and ancestors in
  // out's memory would be overwritten by rows written before those indices are read.
  const std::size_t bytes = static_cast<std::size_t>(count * dim) * sizeof(float);
  detail::check_disjoint({{"states", states, bytes},
                          {"ancestors", ancestors, static_cast<std::size_t>(count) * sizeof(Index)},
                          {"out", out, bytes}});
  gather(states, problems, particles, dim, ancestors, out, where, exec.stream);
  return where;
}

}  // namespace

std::size_t resampling_workspace_bytes(std::int64_t problems, std::int64_t particles, resampling_scheme scheme) {
  check_sizes(problems, particles);
  DIFFSAMPLE_EXPECTS(valid_scheme(scheme), "scheme: invalid value " << static_cast<int>(scheme));
  return layout(problems, particles, scheme).total;
}

executor resample(particle_outputs out, std::int64_t problems, std::int64_t particles, const float* log_weights,
                  const resampling_options& o, execution exec, void* workspace, std::size_t workspace_bytes) {
  check_sizes(problems, particles);
  DIFFSAMPLE_EXPECTS(valid_scheme(o.scheme), "options.scheme: invalid value " << static_cast<int>(o.scheme));
  DIFFSAMPLE_EXPECTS(std::isfinite(o.ess_threshold) && o.ess_threshold >= 0,
                     "options.ess_threshold: must be finite and >= 0, got " << o.ess_threshold);
  limits::check("options.step", o.step, 0, kernels::philox_max_step - 1, "the random stream's steps");
  if (o.scheme == resampling_scheme::metropolis)
    limits::check("options.metropolis_steps", o.metropolis_steps, 1, limits::max_inner_steps);
  detail::check_unread_resampling("options", o);  // what the scheme does not read (src/option_readers.hpp)
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
  detail::check_workspace_bytes(w.total, workspace, workspace_bytes);
  // The passes read the log-weights after writing outputs (the ancestor search reads them again), so no output may
  // share their memory (normalised weights written in place gave wrong ancestors), nor another output's or the
  // workspace's.
  const std::size_t items = static_cast<std::size_t>(count);
  detail::check_disjoint({{"log_weights", log_weights, items * sizeof(float)},
                          {"outputs.normalised_weights", out.normalised_weights, items * sizeof(float)},
                          {"outputs.ancestors", out.ancestors, items * sizeof(std::int32_t)},
                          {"outputs.ancestors64", out.ancestors64, items * sizeof(std::int64_t)},
                          {"outputs.reports", out.reports, static_cast<std::size_t>(problems) * sizeof(particle_report)},
                          {"workspace", workspace, w.total}});
  if (where == executor::cuda) detail::check_resampling_scan(problems, particles, exec.stream);
  std::unique_ptr<detail::scratch> owned;
  workspace = detail::workspace_or_scratch(w.total, workspace, workspace_bytes, 16, where, exec.stream, owned);
  detail::resample_unchecked(log_weights, problems, particles, o, out, where, exec.stream, workspace);
  return where;
}

namespace {

// The passes' parameters over `workspace` (laid out by layout()) on `where`.
pass_params make_params(const float* log_weights, std::int64_t problems, std::int64_t particles,
                        const resampling_options& o, const particle_outputs& out, executor where, void* workspace) {
  const workspace_layout w = layout(problems, particles, o.scheme);
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  const std::int64_t tile = where == executor::cuda ? kernels::cuda_tile : kernels::cpu_tile;
  return {log_weights,
          particles,
          kernels::fixed_point_bits(particles),
          o.scheme,
          // The decision (and each report's `resampled`) is the same whatever outputs the call writes: without an
          // output for ancestors the drawn ancestors are just not written.
          o.ess_threshold,
          tile,
          tiles_per_problem(particles, tile),
          reinterpret_cast<problem_state*>(ws + w.states),
          reinterpret_cast<tile_sums*>(ws + w.tiles),
          reinterpret_cast<std::uint64_t*>(ws + w.totals),
          reinterpret_cast<std::uint64_t*>(ws + w.offsets),
          reinterpret_cast<std::uint64_t*>(ws + w.copies),
          reinterpret_cast<std::uint64_t*>(ws + w.copies_offsets),
          reinterpret_cast<std::uint64_t*>(ws + w.units),
          o.scheme == resampling_scheme::residual ? reinterpret_cast<std::uint64_t*>(ws + w.prefix) : nullptr,
          out.reports};
}

// Passes 1 to 6 on the CPU; `runs`: stratified and systematic write their ancestors in the fill pass; `selects`:
// whether ancestors are selected (in the fill pass or after it).
void passes_cpu(const pass_params& p, std::int64_t problems, const resampling_options& o, const particle_outputs& out,
                bool runs, const std::uint64_t* seed_at, bool selects) {
  statistics_cpu(p, problems, selects);
  const fill_params f{o.seed, o.step, out.ancestors, out.ancestors64, out.normalised_weights, runs, seed_at};
  cpu::parallel_for_each(problems * p.per, [&](std::int64_t t) { fill_tile_cpu(p, f, t); }, 1);
}

}  // namespace

kernels::select_ancestor_functor<std::int32_t> detail::resample_statistics_cpu(
    const float* log_weights, std::int64_t problems, std::int64_t particles, const resampling_options& o,
    const particle_outputs& out, void* workspace, const std::uint64_t* seed_at) {
  const pass_params p = make_params(log_weights, problems, particles, o, out, executor::cpu, workspace);
  // The selection of every scheme runs per particle here, stratified and systematic by their search.
  passes_cpu(p, problems, o, out, false, seed_at, true);  // the caller selects with the functor returned
  return selection(p, o, out.ancestors, seed_at);
}

void detail::check_resampling_scan(std::int64_t problems, std::int64_t particles, cudaStream_t stream) {
  const std::int64_t per = tiles_per_problem(particles, kernels::cuda_tile);
  if (problems > 0 && per > 1) (void)checked_scan_bytes(problems * per, stream);
}

void detail::resample_unchecked(const float* log_weights, std::int64_t problems, std::int64_t particles,
                                const resampling_options& o, const particle_outputs& out, executor where,
                                cudaStream_t stream, void* workspace, const std::uint64_t* seed_at) {
  const std::int64_t count = problems * particles;
  if (count == 0) return;
  const pass_params p = make_params(log_weights, problems, particles, o, out, where, workspace);
  const bool ancestors = out.ancestors != nullptr || out.ancestors64 != nullptr;
  const bool runs = runs_scheme(o.scheme);
  if (where == executor::cuda) {
    const fill_params f{o.seed, o.step, out.ancestors, out.ancestors64, out.normalised_weights, runs, seed_at};
    const auto grid = [](std::int64_t blocks) { return kernels::grid_size(blocks * tile_threads, tile_threads); };
    if (p.per == 1) {
      DIFFSAMPLE_CUDA_TRY(kernels::checked_launch(
          [&] { kernels::one_tile_kernel<<<grid(problems), tile_threads, 0, stream>>>(p, f, problems); }));
    } else {
      // CUB's scan storage is checked before the first pass is launched (nothing launches before every check).
      const std::size_t scan_bytes = checked_scan_bytes(problems * p.per, stream);
      const workspace_layout w = layout(problems, particles, o.scheme);
      statistics_cuda(p, problems, static_cast<unsigned char*>(workspace) + w.scan, scan_bytes, stream, ancestors);
      if (out.normalised_weights != nullptr || (ancestors && !stores_q(o.scheme))) {
        DIFFSAMPLE_CUDA_TRY(kernels::checked_launch([&] {
          kernels::tile_fill_kernel<<<grid(problems * p.per), tile_threads, 0, stream>>>(p, f, problems * p.per);
        }));
      }
    }
  } else {
    passes_cpu(p, problems, o, out, runs, seed_at, ancestors);
  }
  if (!ancestors || runs) return;
  if (out.ancestors64 != nullptr)
    select_ancestors(where, p, o, count, out.ancestors64, stream, seed_at);
  else
    select_ancestors(where, p, o, count, out.ancestors, stream, seed_at);
}

void detail::gather_unchecked(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                              const std::int32_t* ancestors, float* out, executor where, cudaStream_t stream) {
  gather(states, problems, particles, dim, ancestors, out, where, stream);
}

executor gather_particles(float* out, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                          const float* states, const std::int32_t* ancestors, execution exec) {
  return gather_checked(states, problems, particles, dim, ancestors, out, exec);
}

executor gather_particles(float* out, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                          const float* states, const std::int64_t* ancestors, execution exec) {
  return gather_checked(states, problems, particles, dim, ancestors, out, exec);
}

}  // namespace diffsample
