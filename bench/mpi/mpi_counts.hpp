// Bytes this process handed to other ranks through MPI collectives, counted at the calls (bench/mpi/mpi_counts.cpp).
#pragma once

#include <mpi.h>

#include <cstdint>

namespace mpi_counts {
/// Payload sent to other ranks by every MPI collective of this process so far.
std::int64_t sent();
}  // namespace mpi_counts
