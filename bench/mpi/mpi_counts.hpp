// Bytes this process handed to other ranks through MPI collectives, counted at the calls (bench/mpi/mpi_counts.cpp).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

namespace mpi_counts {
/// Payload sent to other ranks by every MPI collective and MPI_Send of this process so far.
std::int64_t sent();
/// The part of sent() that went through MPI_Alltoallv (the rows of the resamplings, and the gathered schemes'
/// requests); the rest is the small collectives.
std::int64_t sent_alltoallv();
/// The datatype size (bytes) of every MPI_Alltoallv of this process so far, in call order: the row each exchange
/// moves.
const std::vector<std::int64_t>& alltoallv_types();
/// The most bytes one MPI_Send, MPI_Bcast or MPI_Allgather of this process has handed over since the last
/// reset_largest() (the library's byte messages go in chunks: src/mpi/messages.hpp).
std::int64_t largest();
void reset_largest();
}  // namespace mpi_counts
