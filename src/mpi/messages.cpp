// Messages of any size in bytes (src/mpi/messages.hpp). Needs MPI alone: tests/mpi/test_mpi.cpp compiles it in to
// check the chunking with small chunks.
#include "src/mpi/messages.hpp"

#include <algorithm>

namespace diffsample::mpi::detail {

namespace {

// f(offset, length) for each chunk of at most `chunk` bytes of [0, bytes), in order (at least 1 byte a chunk).
template <class F>
void chunks(std::size_t bytes, std::size_t chunk, F&& f) {
  chunk = std::clamp<std::size_t>(chunk, 1, max_message_bytes);
  for (std::size_t at = 0; at < bytes; at += chunk) f(at, static_cast<int>(std::min(chunk, bytes - at)));
}

}  // namespace

void send_bytes(const void* data, std::size_t bytes, int dest, int tag, MPI_Comm comm, std::size_t chunk) {
  const auto* p = static_cast<const unsigned char*>(data);
  chunks(bytes, chunk, [&](std::size_t at, int n) { MPI_Send(p + at, n, MPI_BYTE, dest, tag, comm); });
}

void recv_bytes(void* data, std::size_t bytes, int source, int tag, MPI_Comm comm, std::size_t chunk) {
  auto* p = static_cast<unsigned char*>(data);
  chunks(bytes, chunk,
         [&](std::size_t at, int n) { MPI_Recv(p + at, n, MPI_BYTE, source, tag, comm, MPI_STATUS_IGNORE); });
}

void bcast_bytes(void* data, std::size_t bytes, int root, MPI_Comm comm, std::size_t chunk) {
  auto* p = static_cast<unsigned char*>(data);
  chunks(bytes, chunk, [&](std::size_t at, int n) { MPI_Bcast(p + at, n, MPI_BYTE, root, comm); });
}

void allgather_bytes(const void* mine, std::size_t bytes, void* all, MPI_Comm comm, std::size_t chunk) {
  const auto* p = static_cast<const unsigned char*>(mine);
  auto* q = static_cast<unsigned char*>(all);
  if (bytes == 0) return;
  if (bytes <= std::clamp<std::size_t>(chunk, 1, max_message_bytes)) {  // one chunk: the plain call
    const int n = static_cast<int>(bytes);
    MPI_Allgather(p, n, MPI_BYTE, q, n, MPI_BYTE, comm);
    return;
  }
  chunks(bytes, chunk, [&](std::size_t at, int n) {
    MPI_Datatype piece = MPI_DATATYPE_NULL, block = MPI_DATATYPE_NULL;
    MPI_Type_contiguous(n, MPI_BYTE, &piece);
    MPI_Type_create_resized(piece, 0, static_cast<MPI_Aint>(bytes), &block);
    MPI_Type_commit(&block);
    MPI_Allgather(p + at, n, MPI_BYTE, q + at, 1, block, comm);
    MPI_Type_free(&block);
    MPI_Type_free(&piece);
  });
}

}  // namespace diffsample::mpi::detail
