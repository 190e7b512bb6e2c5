// The calling rank and the number of ranks of a communicator, and the comparison of what every rank must pass alike,
// for the files of libdiffsample_mpi (internal).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstddef>
#include <exception>
#include <string>
#include <utility>
#include <vector>

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

/// Waits for a CUDA rank's stream: every call of diffsample/mpi.hpp and diffsample_mpi.h that ran work on the CUDA
/// executor calls it before its last agreement (the calls synchronise, and a kernel's failure on one rank, which
/// surfaces here, then fails every rank instead of leaving it to the caller's next call on that rank alone). Throws
/// cuda_error naming @p what when the work on the stream failed (the error state cleared, so that later calls are
/// not blamed for it).
void wait_for(cudaStream_t stream, const char* what);

/// A communicator of the library's own for the length of one call: MPI_Comm_dup of the caller's (collective over
/// it, as every call of diffsample/mpi.hpp is), freed by the destructor (MPI_Comm_free). The library's point-to-point
/// messages travel on it, never on the caller's communicator, where a receive of the caller's posted before the call
/// (MPI_ANY_SOURCE, MPI_ANY_TAG) would take them, or the library's receive a message of the caller's. Throws error
/// when MPI_Comm_dup fails (under an error handler that returns; the default one ends the job).
class private_comm {
 public:
  explicit private_comm(MPI_Comm comm);
  ~private_comm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  private_comm(const private_comm&) = delete;
  private_comm& operator=(const private_comm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// An argument every rank must pass alike: an integer, a double compared by its bits, a digest of an array, or a
/// value shown by its name (an enum, through @p name_of; a bool as true / false).
struct common_value {
  enum class kind : int { integer, real, digest, named };
  std::string name;
  std::int64_t value;
  kind as = kind::integer;
  const char* (*name_of)(std::int64_t) = nullptr;  // kind::named: the value's name ("unknown" outside the enum)
};
/// A shard's first chain, first_chain + first_row, refused (invalid_argument naming the caller's first_chain, not the
/// sum) past limits::max_first_chain.
std::uint64_t shard_first_chain(std::uint64_t first_chain, std::int64_t first_row, std::int64_t n);
common_value same(std::string name, std::int64_t v);
common_value same(std::string name, double v);
/// A flag every rank must pass alike, shown as true / false in a mismatch message.
common_value same_flag(std::string name, bool v);
/// An enum every rank must pass alike, shown by its to_string() name in a mismatch message.
template <class E>
common_value same_enum(std::string name, E v) {
  return {std::move(name), static_cast<std::int64_t>(v), common_value::kind::named,
          [](std::int64_t x) -> const char* { return to_string(static_cast<E>(x)); }};
}
/// A 64-bit digest of the bits of @p count 8-byte values (FNV-1a over words: a change to any one value changes it).
std::int64_t digest(const void* values, std::size_t count, std::int64_t seed = 0);

/// same_everywhere()'s collective part: @p failure (an error building the list or its buffers on this rank) agreed
/// on first (every rank throws the lowest failing rank's error: agree()), then the values gathered into @p all
/// (sized values.size() x P by the caller) and compared with rank 0's.
void compare_everywhere(MPI_Comm comm, comm_stats& stats, std::exception_ptr failure,
                        const std::vector<common_value>& values, const std::vector<std::int64_t>& mine,
                        std::vector<std::int64_t>& all);

/// Collective, first in a call: the list @p build returns, on every rank, gathered (one MPI_Allreduce of 4 bytes,
/// then one MPI_Allgather of 8 bytes per value, at P > 1); when a rank's values differ from rank 0's, every rank
/// throws the same invalid_argument naming the lowest such rank and the first such value ("rank r of P: NAME: v
/// here, v0 on rank 0 (every rank must pass the same)"). Building the list and its buffers allocates: a rank where
/// that fails (std::bad_alloc, or any error) makes every rank throw its error (out_of_memory "rank r of P: host
/// allocation failed ...") instead of leaving the others waiting in the gather. At P = 1 nothing is built.
template <class Build>
void same_everywhere(MPI_Comm comm, comm_stats& stats, Build&& build) {
  const int ranks = size_of(comm);
  if (ranks == 1) return;
  std::vector<common_value> values;
  std::vector<std::int64_t> mine, all;
  std::exception_ptr failure;
  try {
    values = build();
    mine.reserve(values.size());
    for (const common_value& c : values) mine.push_back(c.value);
    all.resize(values.size() * static_cast<std::size_t>(ranks));
  } catch (...) {
    failure = std::current_exception();
  }
  compare_everywhere(comm, stats, failure, values, mine, all);
}

/// What every rank must pass alike, one list per call, each covering every field that changes a result (an
/// array by its size and a digest of its values):
/// n, every field of langevin_options, and the mixture (dimension, components, digest of its parameters), for
/// mpi::langevin and ds_mpi_langevin (the C options converted as ds_langevin() converts them).
std::vector<common_value> langevin_arguments(const gaussian_mixture& mixture, std::int64_t n,
                                             const langevin_options& o);
/// n, every field of diffusion_options (the schedule's arrays by size and digest), and the mixture.
std::vector<common_value> diffusion_arguments(const gaussian_mixture& mixture, std::int64_t n,
                                              const diffusion_options& o);
/// The mode, every field of guided_options but resampling.seed and resampling.step (which the sampler sets), the
/// problems (sizes, and digests of A, the operators, y and sigma_y) and the prior, for mpi::guided_sample; in island
/// mode whether outputs.log_normaliser is given (the islands' log Z is combined over the ranks).
std::vector<common_value> guided_arguments(smc_mode mode, const gaussian_mixture& prior,
                                           const guided_problems& problems, const guided_options& o,
                                           const guided_outputs& outputs);

/// On a rank whose @p exec resolves to the CUDA executor: throws invalid_argument when the tables of @p mixture
/// (uploaded to the device current when it was built) are on another device than the one this rank runs on (the
/// device of a stream of the caller's, else the current device), naming both and @p name. A mixture built before
/// rank_execution() selected the rank's device stays on the device current then (device 0 in a fresh process),
/// and its kernels would read another device's memory. Nothing on the CPU executor or without device tables. Not
/// collective: the callers agree on it with their other checks.
void check_tables_device(const gaussian_mixture& mixture, execution exec, const char* name);

/// What every rank of a sharded chain run must pass alike (langevin_arguments / diffusion_arguments), compared: a rank
/// with another value throws the same invalid_argument on every rank.
inline void same_chain_arguments(MPI_Comm comm, comm_stats& stats, const gaussian_mixture& mixture, std::int64_t n,
                                 const langevin_options& o) {
  same_everywhere(comm, stats, [&] { return langevin_arguments(mixture, n, o); });
}
inline void same_chain_arguments(MPI_Comm comm, comm_stats& stats, const gaussian_mixture& mixture, std::int64_t n,
                                 const diffusion_options& o) {
  same_everywhere(comm, stats, [&] { return diffusion_arguments(mixture, n, o); });
}

}  // namespace diffsample::mpi::detail
