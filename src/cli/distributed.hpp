// Runs of the diffsample program under an MPI launcher (mpirun -np P diffsample sample ...): each process runs its
// slice of the chains (diffsample::mpi::shard_of, first_chain advanced to the slice), rank 0 gathers the samples in
// chain order and writes the one output and report; the other ranks print nothing. Built with MPI when
// libdiffsample_mpi is (DIFFSAMPLE_CLI_MPI); without it, a launch by mpirun with more than one process is refused.
#pragma once

#include <cstdint>
#include <vector>

#include "cli/runner.hpp"

namespace diffsample::cli::distributed {

/// True when an MPI launcher started this process among more than one (OMPI_COMM_WORLD_SIZE or PMI_SIZE > 1).
/// @throws error when so but the program was built without MPI
bool launched();

/// This process's rank (0 when not launched).
int rank();

/// One rank's share of a distributed run.
struct rank_stats {
  std::int64_t chains = 0;   ///< chains run by the rank
  double seconds = 0;        ///< the rank's time in the sampler
  double gather_seconds = 0; ///< the rank's time gathering the samples on rank 0
};

/// Collective over every launched process: runs this rank's slice of the n chains of @p s and gathers the samples
/// on rank 0. On rank 0 the result holds all n x d samples in chain order (bit for bit those of one process's run
/// on the CPU executor), seconds the slowest rank's time in the sampler, the acceptance over all chains, and
/// @p ranks one entry per rank; elsewhere its samples are empty.
run_result run(const gaussian_mixture& target, run_settings s, std::int64_t n, std::int64_t chunks, progress* bar,
               std::vector<rank_stats>& ranks);

}  // namespace diffsample::cli::distributed
