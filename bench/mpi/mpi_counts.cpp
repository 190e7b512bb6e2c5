// Bytes counted at the MPI calls (PMPI interposition), independent of the library's own comm_stats: every collective
// libdiffsample_mpi issues (and bench_mpi's own) passes through these wrappers, which add the payload this process
// hands to the other ranks (Alltoallv: its send counts to other ranks; the all-to-all, all-gather and all-reduce
// forms: the send buffer times P - 1; a broadcast root: the buffer times P - 1; a gather: the send buffer off the
// root; a point-to-point send: its buffer), then call the PMPI_ entry point. Each MPI_Alltoallv's datatype size is also recorded (the row it moves). bench_mpi is linked with ENABLE_EXPORTS so that the shared library's calls
// resolve here.
#include "bench/mpi/mpi_counts.hpp"

#include <algorithm>

namespace {
std::int64_t sent_bytes = 0, alltoallv_bytes = 0, largest_bytes = 0;
std::vector<std::int64_t> alltoallv_rows;

std::int64_t type_bytes(MPI_Datatype t) {
  int s = 0;
  PMPI_Type_size(t, &s);
  return s;
}
int rank_in(MPI_Comm c) {
  int r = 0;
  PMPI_Comm_rank(c, &r);
  return r;
}
std::int64_t others(MPI_Comm c) {
  int p = 1;
  PMPI_Comm_size(c, &p);
  return p - 1;
}
}  // namespace

std::int64_t mpi_counts::sent() { return sent_bytes; }
std::int64_t mpi_counts::sent_alltoallv() { return alltoallv_bytes; }
const std::vector<std::int64_t>& mpi_counts::alltoallv_types() { return alltoallv_rows; }
std::int64_t mpi_counts::largest() { return largest_bytes; }
void mpi_counts::reset_largest() { largest_bytes = 0; }

extern "C" {
int MPI_Alltoallv(const void* sb, const int sc[], const int sd[], MPI_Datatype st, void* rb, const int rc[],
                  const int rd[], MPI_Datatype rt, MPI_Comm c) {
  const int me = rank_in(c), p = int(others(c)) + 1;
  const std::int64_t before = alltoallv_bytes;
  for (int k = 0; k < p; ++k)
    if (k != me) alltoallv_bytes += std::int64_t(sc[k]) * type_bytes(st);
  sent_bytes += alltoallv_bytes - before;
  alltoallv_rows.push_back(type_bytes(st));
  return PMPI_Alltoallv(sb, sc, sd, st, rb, rc, rd, rt, c);
}
int MPI_Send(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c) {
  sent_bytes += std::int64_t(n) * type_bytes(t);
  largest_bytes = std::max(largest_bytes, std::int64_t(n) * type_bytes(t));
  return PMPI_Send(b, n, t, dest, tag, c);
}
int MPI_Alltoall(const void* sb, int sc, MPI_Datatype st, void* rb, int rc, MPI_Datatype rt, MPI_Comm c) {
  sent_bytes += others(c) * sc * type_bytes(st);
  return PMPI_Alltoall(sb, sc, st, rb, rc, rt, c);
}
int MPI_Allreduce(const void* sb, void* rb, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  sent_bytes += others(c) * n * type_bytes(t);
  return PMPI_Allreduce(sb, rb, n, t, op, c);
}
int MPI_Allgather(const void* sb, int sc, MPI_Datatype st, void* rb, int rc, MPI_Datatype rt, MPI_Comm c) {
  sent_bytes += others(c) * sc * type_bytes(st);
  largest_bytes = std::max(largest_bytes, std::int64_t(sc) * type_bytes(st));
  return PMPI_Allgather(sb, sc, st, rb, rc, rt, c);
}
int MPI_Allgatherv(const void* sb, int sc, MPI_Datatype st, void* rb, const int rc[], const int rd[], MPI_Datatype rt,
                   MPI_Comm c) {
  sent_bytes += others(c) * sc * type_bytes(st);
  return PMPI_Allgatherv(sb, sc, st, rb, rc, rd, rt, c);
}
int MPI_Bcast(void* b, int n, MPI_Datatype t, int root, MPI_Comm c) {
  if (rank_in(c) == root) sent_bytes += others(c) * n * type_bytes(t);
  largest_bytes = std::max(largest_bytes, std::int64_t(n) * type_bytes(t));
  return PMPI_Bcast(b, n, t, root, c);
}
int MPI_Gather(const void* sb, int sc, MPI_Datatype st, void* rb, int rc, MPI_Datatype rt, int root, MPI_Comm c) {
  if (rank_in(c) != root) sent_bytes += std::int64_t(sc) * type_bytes(st);
  return PMPI_Gather(sb, sc, st, rb, rc, rt, root, c);
}
int MPI_Gatherv(const void* sb, int sc, MPI_Datatype st, void* rb, const int rc[], const int rd[], MPI_Datatype rt,
                int root, MPI_Comm c) {
  if (rank_in(c) != root) sent_bytes += std::int64_t(sc) * type_bytes(st);
  return PMPI_Gatherv(sb, sc, st, rb, rc, rd, rt, root, c);
}
}
