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

/// The Langevin arguments every rank must pass alike, for mpi::langevin (langevin_options) and ds_mpi_langevin
/// (ds_langevin_options, read over the defaults): one list for both.
template <class Options>
void same_langevin_arguments(MPI_Comm comm, comm_stats& stats, std::int64_t n, const Options& o) {
  same_everywhere(comm, stats,
                  {same("n", n), same("options.method", std::int64_t(o.method)), same("options.steps", o.steps),
                   same("options.seed", std::int64_t(o.seed)), same("options.first_chain", std::int64_t(o.first_chain)),
                   same("options.first_step", std::int64_t(o.first_step)), same("options.step_size", o.step_size)});
}

/// The diffusion arguments every rank must pass alike, for mpi::diffusion (diffusion_options) and ds_mpi_diffusion
/// (ds_diffusion_options, read over the defaults).
template <class Options>
void same_diffusion_arguments(MPI_Comm comm, comm_stats& stats, std::int64_t n, const Options& o) {
  same_everywhere(comm, stats,
                  {same("n", n), same("options.sampler", std::int64_t(o.sampler)), same("options.steps", o.steps),
                   same("options.seed", std::int64_t(o.seed)), same("options.first_chain", std::int64_t(o.first_chain))});
}

}  // namespace diffsample::mpi::detail
