/**
 * @file diffsample_mpi.h
 * @brief C ABI of libdiffsample_mpi (distributed runs over MPI; the C++ API is diffsample/mpi.hpp).
 *
 * Every function is collective over its communicator: every rank calls it with the same arguments except its own
 * buffers (ds_mpi_langevin, ds_mpi_diffusion, ds_mpi_resample and ds_mpi_guided_sample compare first every argument
 * that changes the result: the sizes, every option, the schedule's arrays, the mixture and the problems' data by a
 * digest; and return DS_INVALID_ARGUMENT on every rank when a rank's differ). Each returns the same
 * ::ds_status on every rank: when any rank's arguments are invalid, every rank gets that rank's status and
 * ds_mpi_last_error() the same message ("rank r of P: ..."), and no rank is left waiting in a collective. Like
 * the C++ calls of diffsample/mpi.hpp, every call is synchronous: on a CUDA rank it waits for its work on
 * exec.stream before it returns, and a kernel that failed on one rank makes every rank return DS_CUDA_ERROR with that
 * rank's message. Link with -ldiffsample_mpi -ldiffsample and the MPI library.
 *
 * ds_mpi_resample and ds_mpi_guided_sample (global mode), which send point-to-point messages, send them on a
 * duplicate of the communicator that the call makes (MPI_Comm_dup) and frees before it returns, so that a receive of
 * the caller's pending on the communicator (MPI_ANY_SOURCE, MPI_ANY_TAG) never takes them; the other calls use
 * collectives alone. As for any collective, every rank makes the calls on a communicator in the same order.
 */
#ifndef DIFFSAMPLE_DIFFSAMPLE_MPI_H
#define DIFFSAMPLE_DIFFSAMPLE_MPI_H

#include <mpi.h>
#include <stdint.h>

#include <diffsample/diffsample.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The message of the last failed ds_mpi_* call on this thread (the same on every rank), or "" after a success. */
DS_API const char* ds_mpi_last_error(void);

/**
 * The rows [*first, *first + *count) of n held by the calling rank of @p comm: the first n mod P ranks hold
 * ceil(n / P) rows, the others floor(n / P), in rank order (diffsample::mpi::shard_of). Not collective.
 */
DS_API ds_status ds_mpi_shard(int64_t n, MPI_Comm comm, int64_t* first, int64_t* count);

/**
 * ds_langevin() on this rank's chains of n (ds_mpi_shard()): @p x holds the rank's count x d rows, and the rank's
 * chains draw from the streams of chains options->first_chain + first + i, so the union of the ranks' rows is a
 * single-process ds_langevin() of n chains bit for bit (CPU executor). trajectory, accepted and report as in
 * ds_langevin(), for this rank's rows. @p accepted_total (may be NULL) receives the accepted proposals summed over
 * the ranks when every rank with chains passed an @p accepted buffer (a rank whose share is empty may pass NULL),
 * else -1. On the CUDA executor, a mixture whose tables are on another device than the rank's (created before the
 * rank selected its device with cudaSetDevice) returns DS_INVALID_ARGUMENT on every rank, before any kernel. Every rank's arguments, its buffers included, are checked and
 * agreed on before any rank runs a chain: a failure on one rank leaves every rank's x and outputs as they were.
 */
DS_API ds_status ds_mpi_langevin(MPI_Comm comm, const ds_mixture* mixture, float* x, int64_t n,
                                 const ds_langevin_options* options, float* trajectory, int64_t* accepted,
                                 ds_execution exec, ds_langevin_report* report, int64_t* accepted_total);

/**
 * ds_diffusion() on this rank's chains of n, as ds_mpi_langevin(): the union of the ranks' rows equals a
 * single-process run bit for bit (CPU executor), and a mixture on another device than the rank's is refused.
 */
DS_API ds_status ds_mpi_diffusion(MPI_Comm comm, const ds_mixture* mixture, float* x, int64_t n,
                                  const ds_diffusion_options* options, float* trajectory, ds_execution exec,
                                  ds_diffusion_report* report);

/**
 * Exact global resampling of B problems of N particles spread over the ranks as ds_mpi_shard(N) (host memory): the
 * rank's B x count log-weights in, the global ancestor index (0..N-1) of each of its B x count slots out, equal to
 * ds_resample()'s bit for bit whatever the number of ranks (diffsample::mpi::resample). Every scheme (residual,
 * metropolis and rejection gather the ranks' log-weights, 4 N bytes per problem per rank). @p ancestors,
 * @p normalised_weights (B x count) and @p reports (B, global) may be NULL.
 */
DS_API ds_status ds_mpi_resample(MPI_Comm comm, const float* log_weights, int64_t problems, int64_t particles,
                                 const ds_resampling_options* options, int64_t* ancestors, float* normalised_weights,
                                 ds_particle_report* reports);

/** How ds_mpi_guided_sample() spreads an SMC filter over the ranks (diffsample::mpi::smc_mode). */
typedef enum ds_mpi_smc_mode {
  DS_MPI_SMC_GLOBAL = 0,  /**< one filter of N particles, global exact resampling (bit for bit one process's) */
  DS_MPI_SMC_ISLANDS = 1  /**< independent filters per rank, log Z combined (biased: README "Island mode"); smc only */
} ds_mpi_smc_mode;

/** A rank's communication in a distributed call (diffsample::mpi::comm_stats). */
typedef struct ds_mpi_comm_stats {
  double seconds;          /**< wall time inside MPI calls */
  int64_t bytes_sent;      /**< bytes this rank sent to other ranks */
  int64_t bytes_received;  /**< bytes this rank received from other ranks */
  int64_t exchanges;       /**< all-to-all particle exchanges */
} ds_mpi_comm_stats;

/** What a distributed guided run did on this rank (diffsample::mpi::guided_result). */
typedef struct ds_mpi_guided_result {
  int64_t first;           /**< first particle of each problem held by this rank */
  int64_t count;           /**< particles of each problem held by this rank (may be 0) */
  ds_guided_report local;  /**< this rank's executor and launches */
  double seconds;          /**< this rank's wall time in the call */
  ds_mpi_comm_stats comm;  /**< this rank's communication */
} ds_mpi_guided_result;

/**
 * ds_guided_sample() over the ranks of @p comm (diffsample::mpi::guided_sample): smc (linear, moment or twisted potentials;
 * CPU executor, or CUDA ranks whose resamplings are staged through the host) as one filter of N = options->particles particles spread as ds_mpi_shard(N) with global
 * exact resampling, or as islands (@p mode); dps, pigdm, diffpir, ddrm, dcps, skrock and tmpd run this rank's
 * share on their single-process random streams with no communication (either executor) under DS_MPI_SMC_GLOBAL;
 * DS_MPI_SMC_ISLANDS (independent SMC filters) is for smc alone and is refused for them with DS_INVALID_ARGUMENT
 * on every rank, naming mode and the sampler.
 * @p outputs holds this rank's buffers: particles and samples B x count x d_x (rows
 * [first, first + count) of each problem of the single-process outputs, bit for bit on the CPU executor),
 * log_weights B x count; log_normaliser, ess_trace and resample_count global, the same on every rank. @p result (may be NULL) receives this rank's share and
 * statistics. Problems, options and outputs are read as ds_guided_sample() reads them (struct_size versioning). A
 * prior on another device than a CUDA rank's is refused as by ds_mpi_langevin().
 */
DS_API ds_status ds_mpi_guided_sample(MPI_Comm comm, const ds_mixture* prior, const ds_guided_problems* problems,
                                      const ds_guided_options* options, const ds_guided_outputs* outputs,
                                      ds_mpi_smc_mode mode, ds_execution exec, ds_mpi_guided_result* result);

/**
 * ds_mpi_guided_sample() with this rank's full report, as ds_guided_sample2() gives it: @p local (from
 * ds_guided_report2_init(), or NULL) receives this rank's executor and launches, the operator path, and for smc the
 * potentials, start correction, multistep kernel and final moves that ran, with the automatic settings resolved as
 * the distributed run resolves them (final_moves -1 reports 4 where the potentials resolve to twisted, in the global
 * filter as in island mode; 0 on a rank of the global filter that passes no samples). A @p local whose struct_size is of no known layout on any
 * rank fails every rank before the run (DS_INVALID_ARGUMENT naming report.struct_size).
 */
DS_API ds_status ds_mpi_guided_sample2(MPI_Comm comm, const ds_mixture* prior, const ds_guided_problems* problems,
                                       const ds_guided_options* options, const ds_guided_outputs* outputs,
                                       ds_mpi_smc_mode mode, ds_execution exec, ds_mpi_guided_result* result,
                                       ds_guided_report2* local);

#ifdef __cplusplus
}
#endif

#endif /* DIFFSAMPLE_DIFFSAMPLE_MPI_H */
