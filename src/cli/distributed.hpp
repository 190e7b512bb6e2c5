// Runs of the diffsample program under an MPI launcher (mpirun -np P diffsample sample|solve ...): each process runs
// its slice of the chains (diffsample::mpi::shard_of, first_chain advanced to the slice) or of the SMC particles
// (diffsample::mpi::guided_sample, global resampling), rank 0 gathers the samples in order and writes the one output
// and report; the other ranks print nothing. Built with MPI when
// libdiffsample_mpi is (DIFFSAMPLE_CLI_MPI); without it, a launch by mpirun with more than one process is refused.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/runner.hpp"

namespace diffsample::cli::distributed {

/// True when an MPI launcher started this process among more than one (OMPI_COMM_WORLD_SIZE, MV2_COMM_WORLD_SIZE or
/// PMI_SIZE > 1, or under srun with PMIx: PMIX_RANK set and SLURM_STEP_NUM_TASKS > 1); starts MPI if it has not
/// started.
/// @throws error when so but the program was built without MPI
bool launched();

/// This process's rank (0 when not launched).
int rank();

/// True when a process of a run of @p processes processes that asks for @p requested keeps off the node's GPUs
/// altogether: a run under an MPI launcher (processes > 1) on the CPU executor.
bool hides_devices(executor requested, std::int64_t processes);

/// Called first by a command that may run under a launcher, with the executor it asks for (requested_executor()):
/// when hides_devices(), hides the node's GPUs from this process (CUDA_VISIBLE_DEVICES=-1) before anything starts
/// CUDA, MPI included. A gaussian_mixture (the prior, a grid prior read from a problem file, the posterior's)
/// copies its tables to the current device whenever one is visible, whatever executor reads them later, so without
/// this every CPU rank of a node with a GPU opened a context on device 0. The driver reads the variable once, when
/// it starts: nothing of CUDA may run in the process before this call (the program calls none before it).
void keep_off_devices(executor requested);

/// Collective over every launched process: selects this rank's GPU for @p where (diffsample::mpi::rank_execution:
/// its rank among the node's ranks mod the node's devices; nothing for the CPU executor). Called before the run's
/// mixture is built (a gaussian_mixture uploads its tables to the current device when it is built), so that the
/// ranks of a node with several GPUs spread over them instead of all running on device 0. On a rank not on the CPU
/// executor whose launcher's local rank (launcher_local_rank(), from which choose_device() selected the device
/// before MPI started) gives another device than MPI's node split, every process throws error naming the variable
/// ("rank r of P: OMPI_COMM_WORLD_LOCAL_RANK=1 selected device 1, but this process is rank 0 of its node by MPI
/// ..."): the tables built so far are on the launcher's device, and MPI's choice would run the rank on another.
void select_device(executor where);

/// The launcher's rank of this process among the job's processes on its node, from the first of these variables that
/// holds one: OMPI_COMM_WORLD_LOCAL_RANK (Open MPI), MV2_COMM_WORLD_LOCAL_RANK (MVAPICH2), MPI_LOCALRANKID (MPICH's
/// and Intel MPI's Hydra), PALS_LOCAL_RANKID (HPE Cray PALS), PMI_LOCAL_RANK (Cray PMI), SLURM_LOCALID (Slurm: last,
/// since a launcher started inside an allocation passes on the SLURM_LOCALID of its own step); -1 when none does.
/// No MPI call.
int launcher_local_rank();

/// Called first by sample, demo and solve, with the executor the arguments ask for (requested_executor()), before
/// anything of the command places something on a device: keep_off_devices(), then, under a launcher with more than
/// one process and unless @p requested is the CPU executor, selects this process's GPU,
/// diffsample::mpi::rank_device(local rank, devices), the choice select_device() makes later from MPI's node split.
/// The local rank is the launcher's (launcher_local_rank()), read before MPI starts, so that anything MPI itself
/// puts on the current device when it starts lands on the rank's device too; when the launcher sets none of those
/// variables, MPI is started here and the local rank is MPI's own (diffsample::mpi::local_rank: MPI_Comm_split_type,
/// collective: every process of the run calls this at the same point, whatever executor it asks for). So every table the command builds (a grid
/// prior while the arguments are read, the problem file's; a gaussian_mixture uploads its tables to the current
/// device when it is built) and the context with them land on the rank's own device, not on device 0.
/// select_device() checks that the launcher's local rank gives the device MPI's gives.
void choose_device(executor requested);

/// The checks of a run before it starts, which one process can fail alone (its own arguments): collective over
/// every launched process, so that none is left waiting for one that stopped. When any failed, every process throws
/// the failure of the lowest-numbered failing one with its class (usage_error, exit status 2; input_error, 1; else
/// as diffsample::mpi::agree() gives it) and its message prefixed "rank r of P: ". Not launched, it rethrows
/// @p failure, if any.
void agree(std::exception_ptr failure);

/// Called by sample, demo and solve after choose_device(), with the reading of their arguments (@p check: the
/// options and their values, the problem file, the outputs; nothing collective): runs @p check and, under a
/// launcher with more than one process, starts MPI if choose_device() did not and agrees on its failure (agree():
/// every process throws the lowest failing rank's error, "rank r of P: ", with its class, usage_error status 2 for
/// an argument). So a bad argument, given to every process or to one alone, ends every process with the same
/// message and status and MPI_Finalize, whether or not MPI started before the arguments were read (without a
/// launcher's local rank it does: the device comes from MPI's node split), not through end_job_if_alone()'s
/// MPI_Abort nor by one process leaving before MPI starts. A help_request (--help) is agreed on too, after the
/// failures: when no process failed and any asked for help, every process throws help_request, whose text only the
/// lowest one that asked holds (it prints the usage once; every process exits 0). Not launched, it rethrows @p
/// check's failure or help_request.
void check_arguments(const std::function<void()>& check);

/// The smallest of every launched process's @p mine: collective over every launched process (each calls it at the
/// same point); @p mine when not launched. For the defaults that depend on a process's executor (sample's and demo's
/// chains, solve's particles: 2^20 and 65,536 on a GPU against 16,384 and 4,096 on the CPU): processes on different
/// executors run one run of the smallest default. Before, each sharded its own default: a CPU rank ran chains 0 ..
/// 8,191 of 16,384 and a GPU rank 524,288 .. 1,048,575 of 2^20, gathered into one output of neither count.
std::int64_t smallest_everywhere(std::int64_t mine);

/// Called by sample, demo and solve on every process once their checks of the run's settings are agreed on (so that
/// a value one process refuses is reported by that check), before the run: under a launcher with more than one
/// process, every process must run its part of the same run, so each compares its options (@p o, the flags and their values,
/// but for those in @p per_process: the executor, the outputs, which rank 0 alone writes, --quiet) and the bytes of
/// the files it read (@p files: the problem file and its .npy files) with rank 0's. A difference on any process stops
/// every process with the lowest differing rank's message, as agree() does: usage_error (status 2) naming the flag
/// ("--steps: '6' on this process, '5' on rank 0"), input_error (1) naming a file whose content differs. Before,
/// sample ran each process's slice of the chains with its own settings (another sampler, seed or step count) and
/// wrote the mixture without a word. Not launched: nothing.
void same_run_everywhere(const options& o, const std::vector<std::string>& files,
                         const std::vector<std::string>& per_process);

/// The flags that may differ between the processes of a run: the executor (CPU ranks among CUDA ones), the outputs
/// (rank 0 alone writes them) and --quiet.
inline const std::vector<std::string> per_process_flags = {"--executor", "--out", "--report", "--plot", "--ess-plot",
                                                           "--quiet"};

/// The end of a command whose samples rank 0 holds, in two steps, so that a failure on any process is agreed on
/// before any output changes. With @p spread (launched): rank 0 runs @p stage (its scores, its report and standard
/// output, checked, and its outputs written to temporary files), while every other process checks what can fail on
/// it alone (its standard output, check_stdout(), which the program checks again at its end); then every process
/// agrees (agree()): when any failed, every process throws the lowest failing rank's error with its status and
/// message ("rank r of P: ..."), and rank 0's temporaries are removed as the error leaves the command (its
/// output_set), so that no output is created or replaced. Otherwise rank 0 runs @p commit (the renames, all or
/// none), agreed on too, so that a failed rename stops every process with rank 0's error. Before, a failure of a
/// process other than rank 0 at the end (its standard output) came after rank 0 had renamed its outputs: the run
/// failed (that process ended the job) with the new outputs in place. Returns stage()'s status (0 on the other
/// ranks). Without @p spread: stage(), then commit().
int on_root(bool spread, const std::function<int()>& stage, const std::function<void()>& commit);

/// Called by the program's last handler, with the exit status and the message of the failure it caught: when MPI
/// has started in this process (launched, not yet finalized) and that failure was not thrown by every process alike
/// (by agree(), on_root(), or a collective call of libdiffsample_mpi, which agree on their errors), prints
/// "diffsample: rank r of P: MESSAGE (ending every process: the others may be waiting for this one)" on stderr and
/// ends the job (MPI_Abort with @p status; does not return): the other processes may be waiting in a collective this
/// one will never enter, and its MPI_Finalize at exit would wait for them, so the run hung. Returns otherwise.
void end_job_if_alone(int status, const std::string& message);

/// One rank's share of a distributed run.
struct rank_stats {
  std::int64_t chains = 0;   ///< chains (or particles) run by the rank
  double seconds = 0;        ///< the rank's time in the sampler
  double gather_seconds = 0; ///< the rank's time gathering the samples on rank 0
  double comm_seconds = 0;   ///< solve: the rank's time in MPI during the filter (resampling exchanges)
  double bytes_sent = 0;     ///< solve: bytes the rank sent to other ranks during the filter
};

/// Collective over every launched process: runs this rank's slice of the n chains of @p s and gathers the samples
/// on rank 0. On rank 0 the result holds all n x d samples in chain order (bit for bit those of one process's run
/// on the CPU executor), seconds the slowest rank's time in the sampler, the acceptance over all chains, and
/// @p ranks one entry per rank; elsewhere its samples are empty.
run_result run(const gaussian_mixture& target, run_settings s, std::int64_t n, std::int64_t chunks, progress* bar,
               std::vector<rank_stats>& ranks);

/// What a distributed run of `solve` gives rank 0 (the other ranks get empty samples).
struct guided_run {
  std::vector<float> samples;  ///< n x d samples, those of one process's guided_sample() bit for bit
  std::vector<float> ess;      ///< smc: steps + 1 values (global)
  double log_z = 0;            ///< smc: log p(y) estimate (global)
  std::int32_t resamplings = 0;
  double seconds = 0;          ///< the slowest rank's time in the sampler
  guided_report local;         ///< rank 0's guided_report (the potentials that ran: the same resolution on every rank)
};

/// Collective over every launched process: a guided sampler on one problem with the particles spread over the
/// processes (diffsample::mpi::guided_sample on @p where: smc in global mode, the others with no communication),
/// samples gathered on rank 0. Invalid settings throw the same error on every rank.
guided_run solve_guided(const gaussian_mixture& prior, const guided_problems& problems, const guided_options& options,
                        executor where, std::vector<rank_stats>& ranks);

}  // namespace diffsample::cli::distributed
