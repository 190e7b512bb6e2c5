// Messages of any size in bytes for the files of libdiffsample_mpi (internal): MPI counts are ints, so a message of
// more than INT_MAX bytes cast to one would wrap (a negative count, MPI_ERR_COUNT, or the wrong bytes). Each call
// here moves its bytes in chunks of at most `chunk` bytes, one MPI call per chunk in order; every rank taking part in
// a message passes the same bytes and chunk (the sizes of the library's messages are the same on every rank, or
// known to both ends), so the chunks match. No message of zero bytes is sent.
#pragma once

#include <mpi.h>

#include <cstddef>

namespace diffsample::mpi::detail {

/// The most bytes one MPI call of the library moves as MPI_BYTE: INT_MAX, the largest int count. Tests pass less.
inline constexpr std::size_t max_message_bytes = 2147483647;

/// MPI_Send of @p bytes to @p dest, in chunks of at most @p chunk bytes.
void send_bytes(const void* data, std::size_t bytes, int dest, int tag, MPI_Comm comm,
                std::size_t chunk = max_message_bytes);
/// MPI_Recv of @p bytes from @p source, in the chunks send_bytes() sends them in.
void recv_bytes(void* data, std::size_t bytes, int source, int tag, MPI_Comm comm,
                std::size_t chunk = max_message_bytes);
/// MPI_Bcast of @p bytes from @p root, in chunks of at most @p chunk bytes.
void bcast_bytes(void* data, std::size_t bytes, int root, MPI_Comm comm, std::size_t chunk = max_message_bytes);
/// MPI_Allgather of @p bytes from every rank: rank r's land at all + r x bytes. Each chunk's receive type is a
/// chunk of bytes whose extent is the whole block (MPI_Type_create_resized), so one call per chunk places every
/// rank's part of it.
void allgather_bytes(const void* mine, std::size_t bytes, void* all, MPI_Comm comm,
                     std::size_t chunk = max_message_bytes);

}  // namespace diffsample::mpi::detail
