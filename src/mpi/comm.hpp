// The calling rank and the number of ranks of a communicator, and the comparison of what every rank must pass alike,
// for the files of libdiffsample_mpi (internal).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <initializer_list>

#include <diffsample/mpi.hpp>

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

/// An argument every rank must pass alike (a double compared by its bits).
struct common_value {
  const char* name;
  std::int64_t value;
  bool is_double = false;
};
common_value same(const char* name, std::int64_t v);
common_value same(const char* name, double v);

/// Collective, first in a call: every rank's values gathered (one MPI_Allgather of 8 bytes per value, at P > 1);
/// when a rank's differ from rank 0's, every rank throws the same invalid_argument naming the lowest such rank and
/// the first such value ("rank r of P: NAME: v here, v0 on rank 0 (every rank must pass the same)").
void same_everywhere(MPI_Comm comm, comm_stats& stats, std::initializer_list<common_value> values);

}  // namespace diffsample::mpi::detail
