/// @file mpi.hpp
/// @brief Distributed runs over MPI (libdiffsample_mpi, CMake target diffsample::mpi, found by
/// `find_package(diffsample COMPONENTS mpi)`): chains sharded over the ranks of a communicator, and guided SMC whose
/// particles are spread over the ranks with a global, exact resampling. Every function here is collective over its
/// communicator: every rank calls it with the same arguments except its own buffers (langevin, diffusion, resample
/// and guided_sample compare first every argument that changes the result: the sizes, every field of the options,
/// the schedule's arrays, the mixture and the problems' data by a digest; and throw invalid_argument on every rank
/// when a rank's differ). Every function here is
/// synchronous: it returns once this rank's work (on the CUDA executor, its stream) and its communication are done.
///
/// The library's messages never meet the caller's on a communicator: resample() and guided_sample() (global SMC), which send
/// point-to-point messages, send them on a duplicate of the communicator made by the call (MPI_Comm_dup, collective
/// over it) and freed before it returns (MPI_Comm_free), so that a receive of the caller's pending on the
/// communicator (MPI_ANY_SOURCE, MPI_ANY_TAG) never takes them, nor the library's receives a message of the caller's;
/// the other calls use collectives alone, which MPI keeps apart from point-to-point messages. As for any collective,
/// every rank makes the calls on a communicator in the same order, and no other thread runs a collective on it
/// meanwhile.
///
/// Results do not depend on the number of ranks P: chain i of a sharded run, and particle j of a distributed SMC
/// run, draw from the Philox streams they draw from in a single-process run, and the resampling picks the same
/// ancestors from the same integer fixed-point weights (README: "Distributed runs").
#pragma once

#include <mpi.h>

#include <diffsample/diffusion.hpp>
#include <diffsample/export.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/langevin.hpp>
#include <diffsample/particles.hpp>

#include <cstdint>
#include <exception>
#include <vector>

namespace diffsample::mpi {

/// The rows [first, first + count) of a set held by one rank.
struct shard {
  std::int64_t first = 0;  ///< first row held
  std::int64_t count = 0;  ///< rows held (0 when n < P for the last ranks)
};

/// The block of rank @p rank of @p ranks when n rows are split as evenly as possible: the first n mod P ranks hold
/// ceil(n / P) rows, the others floor(n / P), in rank order.
/// @throws invalid_argument for n < 0, ranks < 1 or rank outside [0, ranks)
DIFFSAMPLE_API shard shard_of(std::int64_t n, int rank, int ranks);

/// shard_of() for the calling rank of @p comm.
DIFFSAMPLE_API shard shard_of(std::int64_t n, MPI_Comm comm);

/// Time and bytes this rank spent in MPI during a call (bytes to and from other ranks, collectives included).
struct comm_stats {
  double seconds = 0;              ///< wall time inside MPI calls
  std::int64_t bytes_sent = 0;     ///< bytes this rank sent to other ranks
  std::int64_t bytes_received = 0; ///< bytes this rank received from other ranks
  std::int64_t exchanges = 0;      ///< all-to-all particle exchanges
};

/// Collective error agreement: each rank passes the exception its own checks threw (nullptr when they passed). Every
/// call of this header agrees so on whatever can fail on one rank before the collective that follows it (its checks,
/// its allocations, between the exchanges of a distributed filter), so that no rank is left waiting.
/// When any rank failed, every rank throws the same exception: the class (invalid_argument, out_of_memory (also for
/// std::bad_alloc), cuda_error, or error) and message of the lowest-numbered failing rank, prefixed by "rank r of P: ". Otherwise
/// returns on every rank. One MPI_Allreduce, plus two broadcasts on failure.
DIFFSAMPLE_API void agree(MPI_Comm comm, std::exception_ptr error);

/// The device of a rank whose rank among the ranks of its node is @p local_rank, on a node where it sees @p devices
/// devices: local_rank mod devices, so that the ranks of one node share its GPUs round-robin (distinct devices while
/// there are as many devices as ranks); -1, the CPU executor, when devices = 0. Not collective, no CUDA call: the
/// choice rank_execution() makes, on its own so that it can be checked without a GPU.
/// @throws invalid_argument for local_rank < 0 or devices < 0
DIFFSAMPLE_API int rank_device(int local_rank, int devices);

/// This process's rank among the ranks of @p comm on its node (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED, in
/// the order of their ranks in @p comm). Collective.
DIFFSAMPLE_API int local_rank(MPI_Comm comm);

/// The execution of this rank for @p exec. The CPU executor is returned as is. Otherwise, when @p exec.stream is
/// null (or the legacy or per-thread default stream), it selects device rank_device(local_rank(comm), devices) with
/// cudaSetDevice; on a rank that sees no device, automatic becomes the CPU executor (cuda stays cuda, and the call
/// given it fails as it would without MPI). A stream of the caller's is an explicit choice: its device is made
/// current (cudaStreamGetDevice, cudaSetDevice) and no other is chosen. Call it before anything reaches a device
/// (a gaussian_mixture uploads its tables to the current device when it is built): langevin(), diffusion() and
/// guided_sample() on a CUDA rank refuse a mixture whose tables are on another device than the one the rank runs
/// on (invalid_argument on every rank, "mixture: its tables are on device 0, but this rank runs on device 1 ...",
/// before any kernel). The other calls of this header never change the current device. Collective (one node split and one agreement on every rank, whatever each
/// rank's executor resolves to): a rank whose device cannot be selected makes every rank throw the same cuda_error
/// ("rank r of P: rank_execution: cudaSetDevice(...) failed: ...").
DIFFSAMPLE_API execution rank_execution(MPI_Comm comm, execution exec);

/// rank_execution() for @p kind on the default stream: rank_execution(comm, execution{kind, nullptr}).
DIFFSAMPLE_API execution rank_execution(MPI_Comm comm, executor kind = executor::automatic);

/// What a sharded chain run did.
struct chain_report {
  shard rows;                   ///< the chains this rank ran
  executor ran = executor::automatic;  ///< this rank's executor
  std::int64_t chains = 0;      ///< chains over all ranks
  std::int64_t accepted = -1;   ///< Langevin: accepted proposals over all ranks and steps (-1 when not counted)
  double acceptance_rate = -1;  ///< accepted / (chains x steps) (-1 when not counted)
  double seconds = 0;           ///< this rank's time in the sampler
  comm_stats comm;              ///< this rank's communication
};

/// langevin() on chains [first, first + count) = shard_of(n, comm) of n: @p x holds this rank's count x d rows and
/// chain first + i runs on the stream of chain options.first_chain + first + i, so the union of the ranks' rows is a
/// single-process langevin() of n chains bit for bit (CPU executor). outputs.trajectory and outputs.accepted are
/// this rank's rows. The accepted proposals are summed over the ranks (counted in a host buffer of this call when
/// outputs.accepted is nullptr and the rank runs on the CPU; read back from outputs.accepted otherwise).
/// Validation is collective: an invalid argument on any rank (its buffers included) throws the same error on every
/// rank, before any rank runs a chain, so that a failed call leaves every rank's x and outputs as they were. On a
/// CUDA rank the call waits for exec.stream after the chains, which a CUDA graph capture cannot record: a rank whose
/// exec.stream is being captured is refused within that validation (invalid_argument on every rank, nothing issued).
DIFFSAMPLE_API chain_report langevin(MPI_Comm comm, const gaussian_mixture& mixture, float* x,
                                     langevin_outputs outputs, std::int64_t n, const langevin_options& options,
                                     execution exec = {});
/// mpi::langevin() in the argument order before 0.3.0 (the outputs after the options).
[[deprecated("state and outputs first: langevin(comm, mixture, x, outputs, n, options, exec)")]] inline chain_report
langevin(MPI_Comm comm, const gaussian_mixture& mixture, float* x, std::int64_t n, const langevin_options& options,
         langevin_outputs outputs = {}, execution exec = {}) {
  return langevin(comm, mixture, x, outputs, n, options, exec);
}

/// diffusion() on chains shard_of(n, comm) of n, as langevin() above: chain first + i uses the stream of chain
/// options.first_chain + first + i, so the union of the ranks' rows equals a single-process run bit for bit (CPU
/// executor). Collective validation, before any rank runs a chain, a capturing exec.stream on a CUDA rank refused
/// (as langevin() above).
DIFFSAMPLE_API chain_report diffusion(MPI_Comm comm, const gaussian_mixture& mixture, float* x,
                                      diffusion_outputs outputs, std::int64_t n, const diffusion_options& options,
                                      execution exec = {});
/// mpi::diffusion() in the argument order before 0.3.0 (the outputs after the options).
[[deprecated("state and outputs first: diffusion(comm, mixture, x, outputs, n, options, exec)")]] inline chain_report
diffusion(MPI_Comm comm, const gaussian_mixture& mixture, float* x, std::int64_t n, const diffusion_options& options,
          diffusion_outputs outputs = {}, execution exec = {}) {
  return diffusion(comm, mixture, x, outputs, n, options, exec);
}

/// Per-coordinate mean and variance (divisor n) of n rows spread over the ranks (host floats, @p count rows of
/// dim on this rank), in FP64: per-rank statistics combined in rank order, so the result is the same on every rank.
struct moments {
  std::vector<double> mean;      ///< dim values
  std::vector<double> variance;  ///< dim values
  std::int64_t n = 0;            ///< rows over all ranks
};
/// Collective; see moments. Each rank's mean and squared deviations are taken about its own mean and combined
/// pairwise (exact when the mean is far from zero). @throws invalid_argument (on every rank) for dim outside
/// 1..limits::max_dim, a dim that differs between ranks, count < 0, count x dim above limits::max_items or a null
/// pointer.
DIFFSAMPLE_API moments row_moments(MPI_Comm comm, std::int64_t count, std::int64_t dim, const float* x);
/// row_moments() in the argument order before 0.3.0 (the rows before their sizes).
[[deprecated("sizes first: row_moments(comm, count, dim, x)")]] inline moments row_moments(MPI_Comm comm,
                                                                                          const float* x,
                                                                                          std::int64_t count,
                                                                                          std::int64_t dim) {
  return row_moments(comm, count, dim, x);
}

/// Gathers the ranks' rows (host floats, @p count rows of @p width on this rank) on @p root in rank order
/// (MPI_Gatherv); returns them there and an empty vector elsewhere. Collective: a failure on the root (the total
/// beyond MPI_Gatherv's int counts, its allocation) throws on every rank, as does any rank's invalid argument (width
/// outside 1..limits::max_int_count, count x width above it) and a width or root that differs between ranks.
DIFFSAMPLE_API std::vector<float> gather_rows(MPI_Comm comm, std::int64_t count, std::int64_t width, const float* x,
                                              int root = 0);
/// gather_rows() in the argument order before 0.3.0 (the rows before their sizes).
[[deprecated("sizes first: gather_rows(comm, count, width, x, root)")]] inline std::vector<float> gather_rows(
    MPI_Comm comm, const float* x, std::int64_t count, std::int64_t width, int root = 0) {
  return gather_rows(comm, count, width, x, root);
}

/// Per-problem statistics and exact global resampling of B problems of N particles spread over the ranks as
/// shard_of(N, comm): @p log_weights holds this rank's B x count log-weights (host, CPU executor). Every rank
/// computes its particles' fixed-point weights against the global maximum, the ranks' integer totals are gathered
/// (their exclusive prefix is each rank's offset in the global integer prefix), and each slot's ancestor is found by
/// the same integer search as resample() does, so that outputs.ancestors64 (B x count: the global index, 0..N-1, of
/// the ancestor of each slot held here) equals resample()'s ancestors of those slots bit for bit, whatever P.
/// Schemes: multinomial, stratified and systematic by the global prefix; residual, metropolis and rejection (whose
/// ancestors depend on weights anywhere in the problem) by gathering every rank's log-weights (4 N bytes per problem
/// received by each rank, B x N floats and int64 of host scratch) and running resample() on the whole problems on
/// every rank, then fetching each slot's row from its holder. Reports and outputs.normalised_weights equal those of
/// resample() on the CPU executor bit for bit, whatever P: the decision uses the integer fixed-point ESS; the FP64
/// ess, log_sum_exp and log_normaliser_increment come from the same weights (fixed_exp) added in the same order (the
/// prefix schemes carry the running sums from rank to rank, one MPI_Send of 32 B bytes per rank but the last, on the
/// call's duplicate of @p comm; the
/// gathered schemes run resample() itself). (resample() on the CUDA executor adds in another order: within rounding.)
/// outputs.ancestors (int32) and outputs.normalised_weights (B x count) are supported too.
/// @throws invalid_argument on every rank for an invalid argument on any rank, an output that overlaps the
///         log-weights or another output included
DIFFSAMPLE_API comm_stats resample(MPI_Comm comm, particle_outputs outputs, std::int64_t problems,
                                   std::int64_t particles, const float* log_weights,
                                   const resampling_options& options);
/// mpi::resample() in the argument order before 0.3.0 (the outputs after the inputs and options).
[[deprecated("outputs first: resample(comm, outputs, problems, particles, log_weights, options)")]] inline comm_stats
resample(MPI_Comm comm, const float* log_weights, std::int64_t problems, std::int64_t particles,
         const resampling_options& options, particle_outputs outputs) {
  return resample(comm, outputs, problems, particles, log_weights, options);
}

/// How guided_sample() spreads a filter over the ranks.
enum class smc_mode : int {
  /// One filter of N particles: particles shard_of(N, comm) on each rank, global resampling (resample() above),
  /// the ancestors' rows moved with MPI_Alltoallv. Particles, samples, ESS and log Z are those of a single-process
  /// guided_sample() (particles and samples bit for bit on the CPU executor, whatever P).
  global = 0,
  /// Independent filters (islands; guided_sampler::smc only, another sampler is refused): rank r runs
  /// guided_sample() with its count of the N particles and the seed
  /// guided_run_seed(options.seed, r) (rank 0 keeps options.seed); log Z is the particle-weighted mean of the islands' Z_r, in log
  /// space (unbiased for Z); samples are the union of the islands' equally weighted samples. Biased against one
  /// filter of N: each island carries the O(1 / (N / P)) bias of a filter of N / P particles, and the union weighs
  /// the islands equally instead of by Z_r (README: "Island mode").
  islands = 1,
};

/// What a distributed guided run did.
struct guided_result {
  shard particles;            ///< the particles of each problem this rank holds
  guided_report local;        ///< this rank's guided_report
  double seconds = 0;         ///< this rank's wall time in the call
  comm_stats comm;            ///< this rank's communication
};

/// Guided SMC (guided_sampler::smc, linear, moment or twisted potentials) over the ranks of @p comm, on the CPU executor or
/// the CUDA executor (each rank's particles on its device; each resampling copies the rank's log-weights and rows to
/// the host, exchanges them as a CPU rank does, and copies the rows back: host staging, which waits for
/// exec.stream). Buffers as guided_sample()'s, on the rank's executor, for this rank's particles: outputs.particles and outputs.samples hold B x count x
/// d_x rows (rows [first, first + count) of each problem of the single-process outputs; outputs.samples may be
/// null on some ranks, a rank without particles included: the final gather runs on every rank when any rank passes
/// it), outputs.log_weights B x count; log_normaliser, ess_trace and resample_count are global and the same on every rank (islands: log Z
/// combined, the ESS trace and count this rank's island's). Validation is collective: every rank's outputs are
/// checked and agreed on before any rank runs, so that a failed call leaves every rank's outputs as they were. On a
/// CUDA rank every mode copies tables built for the call and waits for exec.stream, which a CUDA graph capture cannot
/// record: a rank whose exec.stream is being captured is refused within that validation (invalid_argument on every
/// rank, nothing issued).
/// dps, pigdm, diffpir, ddrm, dcps, skrock and tmpd, whose particles never interact, run this rank's share on their
/// single-process Philox streams with no communication, on either executor: outputs.samples and outputs.particles
/// hold this rank's rows, equal to the single-process rows on the same executor bit for bit. That is what
/// smc_mode::global (the default) asks of them; smc_mode::islands (independent SMC filters) is for smc alone, and
/// is refused for them (invalid_argument on every rank naming mode and options.sampler, before any rank runs).
DIFFSAMPLE_API guided_result guided_sample(MPI_Comm comm, const gaussian_mixture& prior, guided_outputs outputs,
                                           const guided_problems& problems, const guided_options& options,
                                           smc_mode mode = smc_mode::global, execution exec = {});
/// mpi::guided_sample() in the argument order before 0.3.0 (the outputs after the problems and options).
[[deprecated("outputs first: guided_sample(comm, prior, outputs, problems, options, mode, exec)")]] inline
guided_result guided_sample(MPI_Comm comm, const gaussian_mixture& prior, const guided_problems& problems,
                            const guided_options& options, guided_outputs outputs, smc_mode mode = smc_mode::global,
                            execution exec = {}) {
  return guided_sample(comm, prior, outputs, problems, options, mode, exec);
}

}  // namespace diffsample::mpi
