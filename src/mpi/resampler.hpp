// The global, exact resampling of particles spread over the ranks of a communicator (src/mpi/resampler.cpp), shared
// by mpi::resample() and the distributed guided SMC (the shard of src/guided_shard.hpp).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/particles.cuh"
#include <diffsample/mpi.hpp>

namespace diffsample::mpi::detail {

/// Wall time inside MPI calls and bytes to and from other ranks, accumulated into a comm_stats.
class timed {
 public:
  explicit timed(comm_stats& s) : s_(s), t0_(MPI_Wtime()) {}
  ~timed() { s_.seconds += MPI_Wtime() - t0_; }
  timed(const timed&) = delete;
  timed& operator=(const timed&) = delete;

 private:
  comm_stats& s_;
  double t0_;
};

/// Particles [first, first + count) of each problem's N on every rank, in the block split of shard_of().
class resampler {
 public:
  resampler(MPI_Comm comm, std::int64_t particles, comm_stats& stats);
  ~resampler();
  resampler(const resampler&) = delete;
  resampler& operator=(const resampler&) = delete;

  std::int64_t first() const { return first_; }
  std::int64_t local() const { return local_; }
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }

  /// The checks of everything resample() is given besides the log-weights (scheme, sizes); throws invalid_argument
  /// naming the options' fields after @p name.
  void check(std::int64_t problems, const resampling_options& options, const char* name = "options") const;

  /// Statistics, decision and exchange: reports (B, global), and out[slot] = rows[ancestor of slot] (B x local
  /// rows of row_bytes; a problem not resampled keeps its rows). normalised (B x local) when non-null. Every rank
  /// takes part in the exchange whenever a problem is resampled (rows and out may be null only where local = 0).
  void run(const float* log_weights, std::int64_t problems, const resampling_options& options,
           particle_report* reports, const void* rows, std::size_t row_bytes, void* out, float* normalised = nullptr);

  /// out[b local + i] = row index[b local + i] (0..N-1 within problem b) of rows (B x local), from its rank.
  void fetch(const void* rows, std::int64_t problems, std::size_t row_bytes, const std::int64_t* index, void* out);

 private:
  // Residual, Metropolis and rejection: every rank's log-weights gathered, resample() on the whole problems, rows
  // fetched from their holders.
  void run_gathered(const float* log_weights, std::int64_t problems, const resampling_options& options,
                    particle_report* reports, const void* rows, std::size_t row_bytes, void* out, float* normalised);
  std::int64_t owner(std::int64_t j) const;      // rank holding particle j of a problem
  std::int64_t first_of(std::int64_t r) const;   // first particle of rank r
  MPI_Datatype row_type(std::size_t row_bytes);
  void alltoallv(const void* send, const std::vector<int>& sc, void* recv, const std::vector<int>& rc,
                 std::size_t row_bytes);

  MPI_Comm comm_;
  int rank_ = 0, ranks_ = 1;
  std::int64_t n_ = 0, first_ = 0, local_ = 0;
  comm_stats& stats_;
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  std::size_t type_bytes_ = 0;
  // Scratch reused across calls (no allocation once sizes have been seen).
  std::vector<std::uint64_t> units_, ends_;
  std::vector<kernels::problem_state> states_;
  std::vector<int> source_, send_counts_, recv_counts_, send_displs_, recv_displs_, cursor_;
  std::vector<std::int64_t> picks_;
  std::vector<int> pick_dest_;
  std::vector<unsigned char> send_, recv_;
  std::vector<float> gathered_, whole_, whole_normalised_;
  std::vector<std::int64_t> ancestors_, index_;
  std::vector<particle_report> whole_reports_;
};

}  // namespace diffsample::mpi::detail
