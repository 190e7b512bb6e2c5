// The global, exact resampling of particles spread over the ranks of a communicator (src/mpi/resampler.cpp), shared
// by mpi::resample() and the distributed guided SMC (the shard of src/guided_shard.hpp).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include "kernels/particles.cuh"
#include "src/mpi/comm.hpp"
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

/// Per rank and problem: what step 2 of resampler::run() gathers.
struct rank_sums {
  std::uint64_t total, q2_lo, q2_hi;
  double sum_w, sum_w2;
};

/// Per problem: the FP64 report sums carried from rank to rank in step 2 of resampler::run() (the sums of the
/// tiles completed so far and of the current tile's particles so far).
struct report_carry {
  double sum_w = 0, sum_w2 = 0, tile_w = 0, tile_w2 = 0;
};
/// The tag of that carry's messages, and of the start correction's running logsumexp (in_order() of the guided shard,
/// src/mpi/mpi.cpp): the only point-to-point messages of the library, on the resampler's own communicator.
constexpr int report_sums_tag = 0x6473;

/// Particles [first, first + count) of each problem's N on every rank, in the block split of shard_of(). Every
/// message it exchanges travels on a duplicate of the caller's communicator (private_comm) made by the constructor
/// and freed by the destructor: both are collective over @p comm (every rank constructs and destroys it at the same
/// point of its calls on @p comm).
class resampler {
 public:
  /// Collective over @p comm (MPI_Comm_dup). Any @p particles is taken (check() refuses those below 1).
  resampler(MPI_Comm comm, std::int64_t particles, comm_stats& stats);
  ~resampler();
  resampler(const resampler&) = delete;
  resampler& operator=(const resampler&) = delete;

  std::int64_t first() const { return first_; }
  std::int64_t local() const { return local_; }
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }
  /// The resampler's own communicator (the caller's duplicated), for the messages of its owner's calls too.
  MPI_Comm comm() const { return comm_; }

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

  // Whatever can fail inside run() and fetch() (an allocation sized by this rank's particles or by what it sends,
  // resample() on the gathered problems) is agreed on before the collective that follows it, so that a failure on
  // one rank throws on every rank (mpi::agree: the failing rank's class and message, "rank r of P: ...") instead of
  // leaving the others waiting: the scratch sized by B (and B x N for the gathered schemes) is reserved when B
  // first grows (a decision every rank makes alike), with one agreement then; the buffers sized by what a rank
  // sends and receives are agreed on (one 4-byte MPI_Allreduce) before each row exchange, and the gathered
  // schemes' resample() before theirs. A failure outside these calls is the caller's to agree on.
  // run() writes its outputs (reports, normalised weights, out) only once every one of these has passed: a call that
  // fails leaves them as they were.

 private:
  void reserve(std::int64_t problems, const resampling_options& options);
  void agree(std::exception_ptr error);  // mpi::agree, timed and counted in stats_
  // Residual, Metropolis and rejection: every rank's log-weights gathered, resample() on the whole problems, rows
  // fetched from their holders.
  void run_gathered(const float* log_weights, std::int64_t problems, const resampling_options& options,
                    particle_report* reports, const void* rows, std::size_t row_bytes, void* out, float* normalised);
  std::int64_t owner(std::int64_t j) const;      // rank holding particle j of a problem
  std::int64_t first_of(std::int64_t r) const;   // first particle of rank r
  MPI_Datatype row_type(std::size_t row_bytes);
  void alltoallv(const void* send, const std::vector<int>& sc, void* recv, const std::vector<int>& rc,
                 std::size_t row_bytes);

  private_comm own_;  // first: constructed before, freed after, everything that uses it
  MPI_Comm comm_;
  int rank_ = 0, ranks_ = 1;
  std::int64_t n_ = 0, first_ = 0, local_ = 0;
  comm_stats& stats_;
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  std::size_t type_bytes_ = 0;
  // Scratch reused across calls (no allocation once sizes have been seen).
  std::int64_t reserved_ = -1;           // problems the B-sized scratch holds (the same on every rank)
  std::int64_t reserved_gathered_ = -1;  // problems the B x N scratch of the gathered schemes holds
  std::size_t reserved_workspace_ = 0;   // bytes of resample()'s workspace held (the same on every rank)
  std::vector<float> max_;
  std::vector<std::int64_t> nans_, requests_, incoming_;
  std::vector<rank_sums> mine_, all_;  // what step 2 of run() gathers: this rank's and every rank's
  std::vector<unsigned char> workspace_;  // resample()'s, for the gathered schemes
  std::vector<std::uint64_t> units_, ends_;
  std::vector<double> weights_;       // this rank's FP64 weights exp(l - max), B x local
  std::vector<report_carry> carry_;   // B
  std::vector<kernels::problem_state> states_;
  std::vector<int> source_, send_counts_, recv_counts_, send_displs_, recv_displs_, cursor_;
  std::vector<std::int64_t> picks_;
  std::vector<int> pick_dest_;
  std::vector<unsigned char> send_, recv_;
  std::vector<float> gathered_, whole_, whole_normalised_;
  std::vector<std::int64_t> ancestors_, index_;
  std::vector<particle_report> whole_reports_;
  std::vector<particle_report> reports_;  // B: run()'s reports, copied out once nothing can fail
};

}  // namespace diffsample::mpi::detail
