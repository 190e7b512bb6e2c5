// The calling rank and the number of ranks of a communicator, for the files of libdiffsample_mpi (internal).
#pragma once

#include <mpi.h>

namespace diffsample::mpi::detail {

/// This process's rank in @p comm (0 when MPI reports nothing).
inline int rank_of(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

/// The number of ranks of @p comm (1 when MPI reports nothing).
inline int size_of(MPI_Comm comm) {
  int s = 1;
  MPI_Comm_size(comm, &s);
  return s;
}

}  // namespace diffsample::mpi::detail
