// One shard of a guided SMC run whose particles are split over several processes (internal; the distributed
// library libdiffsample_mpi implements the shard over MPI, src/mpi/). The shard holds particles
// [first, first + local) of every problem's N; guided_smc_shard() runs the same functors, on the same Philox streams
// (kernels::guided_params::stream_skip and stream_first), as guided_sample() does on all N, and leaves every step that needs the
// other shards' particles (the resampling statistics and decision, the movement of the ancestors' rows, the final
// permuted gather) to the shard. With a shard that resamples exactly as resample() does, the particles are those of
// guided_sample() bit for bit on the CPU executor.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>

#include <diffsample/export.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/particles.hpp>

namespace diffsample::detail {

class guided_shard {
 public:
  virtual ~guided_shard() = default;
  /// First particle of each problem held here.
  virtual std::int64_t first() const = 0;
  /// Particles of each problem held here (may be 0).
  virtual std::int64_t local() const = 0;
  /// Collective, once, after every shard's validation and set-up: when any shard's @p error is set, every shard
  /// throws the same error (that of the lowest-numbered failing shard); otherwise returns.
  virtual void agree(std::exception_ptr error) = 0;
  /// Collective, once, after agree(): whether @p mine is true on any shard (one process: @p mine).
  virtual bool any(bool mine) { return mine; }
  /// Collective resampling of B problems from the local log-weights (B x local): @p reports (B) receive the
  /// statistics and decision over all N particles, as resample() computes them; @p out (B x local rows of
  /// @p row_bytes) receives, for each slot held here, the row (from @p rows, B x local, pre-resampling order, on
  /// whichever shard holds it) of the slot's ancestor; a problem that is not resampled keeps its own rows.
  virtual void resample(const float* log_weights, std::int64_t problems, const resampling_options& options,
                        particle_report* reports, const void* rows, std::size_t row_bytes, void* out) = 0;
  /// Collective, in shard order: a running state (@p bytes of host memory at @p state) continued over every shard's
  /// particles in the order of one process, so that an order-dependent reduction (a running logsumexp) gives its
  /// bits: the first shard starts from the state it is given, each other shard receives its predecessor's state,
  /// and each calls @p step (which continues the state over the particles held here), then passes the state on. On
  /// return every shard holds the last shard's final state. A failure of @p step on any shard throws on every shard
  /// (the chain completes first). One process: step().
  virtual void in_order(void* state, std::size_t bytes, const std::function<void()>& step) {
    (void)state;
    (void)bytes;
    step();
  }
  /// Collective: out[b local + i] = the row of particle index[b local + i] (0..N-1 within problem b, on whichever
  /// shard holds it) of @p rows (B x local rows of @p row_bytes).
  virtual void fetch(const void* rows, std::int64_t problems, std::size_t row_bytes, const std::int64_t* index,
                     void* out) = 0;
};

/// guided_sample() on one shard: guided_sampler::smc, linear, moment or twisted potentials (the start correction
/// included), on the CPU executor or the CUDA
/// executor (the particles in device memory, row-major; every exchange copies the weights and rows to the host,
/// calls @p shard on host buffers and copies the rows and reports back, waiting for exec.stream). Validates
/// everything, then calls shard.agree() (so that an invalid argument on any shard throws on every shard before any
/// other collective), then runs the filter. Outputs hold the shard's particles: particles, log_weights (B x local
/// rows), samples (rows [first, first + local) of each problem of guided_sample()'s permuted samples);
/// log_normaliser, ess_trace and resample_count are global (the same on every shard).
DIFFSAMPLE_API guided_report guided_smc_shard(const gaussian_mixture& prior, const guided_problems& problems,
                                              const guided_options& options, guided_outputs outputs,
                                              execution exec, guided_shard& shard);

/// What guided_sample(prior, outputs, problems, options, exec) checks of its outputs before it runs (with the
/// problems and options): each given output's size, alignment and reach on the executor the call resolves to, the
/// SMC-only rule for outputs.samples, and no two outputs sharing memory. libdiffsample_mpi runs it on every rank and
/// agrees on it before any rank runs its own guided_sample() (island mode, the samplers whose particles never
/// interact), so that a bad output on one rank leaves every rank's outputs as they were. A sampler's own checks
/// still run in its call. Returns the executor the call runs on. @throws invalid_argument naming the output
DIFFSAMPLE_API executor check_guided_outputs(const gaussian_mixture& prior, const guided_problems& problems,
                                             const guided_options& options, const guided_outputs& outputs,
                                             execution exec);

/// The Philox streams of the particles of the guided_sample() calls made on this thread: a call holds particles
/// [first, first + options.particles) of `total` per problem, particle j of problem b drawing from the stream of
/// particle b total + first + j. total = 0 (the default): the call holds all of its particles.
struct particle_streams {
  std::int64_t total = 0, first = 0;
  /// Particles of each problem held elsewhere when a call holds @p particles of them (0 when total is 0).
  std::int64_t skip(std::int64_t particles) const { return total == 0 ? 0 : total - particles; }
};
/// This thread's particle_streams (read by the samplers when they build their kernel parameters).
particle_streams& current_particle_streams() noexcept;

/// guided_sample() on particles [first, first + options.particles) of @p total per problem, for the samplers whose
/// particles never interact (dps, pigdm, diffpir, ddrm, dcps, skrock, tmpd; on either executor): each particle draws
/// from its stream in a run of @p total (kernels::guided_stream), so the rows equal rows [first, first +
/// options.particles) of each problem of a guided_sample() of @p total particles on the same executor bit for bit.
/// @throws invalid_argument for smc, or a range outside [0, total)
DIFFSAMPLE_API guided_report guided_sample_streams(const gaussian_mixture& prior, const guided_problems& problems,
                                                   const guided_options& options, guided_outputs outputs,
                                                   execution exec, std::int64_t total, std::int64_t first);

}  // namespace diffsample::detail
