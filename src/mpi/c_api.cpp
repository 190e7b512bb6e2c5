// C ABI of libdiffsample_mpi (include/diffsample/diffsample_mpi.h): each call runs the core C ABI (or the C++ API)
// on this rank's share, then agrees on the status over the communicator, so that every rank returns the status and
// message of the lowest failing rank.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "src/c_api/common.hpp"
#include <diffsample/diffsample_mpi.h>
#include <diffsample/error.hpp>
#include <diffsample/mpi.hpp>

#include "src/chain_checks.hpp"
#include "src/mpi/comm.hpp"
#include "src/mpi/messages.hpp"

namespace {

thread_local std::string last_error;

using diffsample::mpi::detail::rank_of;
using diffsample::mpi::detail::size_of;
using diffsample::c_api::same_report_layout;
using diffsample::c_api::status_of;

// Collective: every rank returns the status and message of the lowest rank whose status is not DS_SUCCESS.
ds_status agree(MPI_Comm comm, ds_status status, std::string message) {
  const int rank = rank_of(comm), ranks = size_of(comm);
  int mine = status != DS_SUCCESS ? rank : ranks, lowest = ranks;
  MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm);
  if (lowest == ranks) {
    last_error.clear();
    return DS_SUCCESS;
  }
  long long header[2] = {static_cast<long long>(status), static_cast<long long>(message.size())};
  MPI_Bcast(header, 2, MPI_LONG_LONG, lowest, comm);
  message.resize(static_cast<std::size_t>(header[1]));
  diffsample::mpi::detail::bcast_bytes(message.data(), message.size(), lowest, comm);
  last_error = "rank " + std::to_string(lowest) + " of " + std::to_string(ranks) + ": " + message;
  return static_cast<ds_status>(header[0]);
}


void init_defaults(ds_langevin_options* o) { ds_langevin_options_init(o, sizeof *o); }
void init_defaults(ds_diffusion_options* o) { ds_diffusion_options_init(o, sizeof *o); }

// A sharded chain run: the checks of the mixture, n and the options on each rank (the options read as the core call
// reads them, into their C++ form), agreed; then what every rank must pass alike (detail::same_chain_arguments, the
// C++ calls' own lists, so a rank with another n or
// any other option fails every rank with the same message before any chain runs); then run(o) on this rank's `count`
// rows with its options (its first chain offset by the rows before it), which returns its status and sets `ran` to
// the executor that ran; a CUDA rank's stream is then waited for (detail::wait_for, as the C++ calls do: the call
// synchronises, and a kernel's failure on one rank fails every rank with DS_CUDA_ERROR instead of returning
// DS_SUCCESS there and leaving the others to the caller's next call); every rank returns the status of the lowest
// failing rank. The options are read as far as their struct_size says, once it is a layout this library knows (the
// core call then reads the copy as it would the caller's struct).
template <class Options, class Check, class Run>
ds_status run_shard(MPI_Comm comm, const ds_mixture* mixture, int64_t n, const Options* options, ds_execution exec,
                    int64_t& count, Check check, Run run) {
  ds_status status = DS_SUCCESS;
  std::string message;
  Options full{};
  const diffsample::gaussian_mixture* m = nullptr;
  decltype(diffsample::c_api::to_cpp(options)) cpp;
  if (options == nullptr) {
    status = DS_INVALID_ARGUMENT;
    message = "options: null pointer";
  } else if (n < 0) {
    status = DS_INVALID_ARGUMENT;
    message = "n: must be >= 0, got " + std::to_string(n);
  } else {
    try {
      m = &diffsample::c_api::get(mixture);
      Options defaults{};
      init_defaults(&defaults);
      full = diffsample::c_api::read_struct("options", options, defaults);  // every known layout holds first_chain
      cpp = diffsample::c_api::to_cpp(options);
    } catch (...) {
      status = status_of(std::current_exception(), message);
    }
  }
  status = agree(comm, status, message);
  if (status != DS_SUCCESS) return status;
  try {
    diffsample::mpi::comm_stats unused;
    diffsample::mpi::detail::same_chain_arguments(comm, unused, *m, n, cpp);
  } catch (...) {
    return status_of(std::current_exception(), last_error);  // the same class and message on every rank
  }
  const diffsample::mpi::shard s = diffsample::mpi::shard_of(n, comm);
  count = s.count;
  Options o{};
  std::memcpy(static_cast<void*>(&o), static_cast<const void*>(options), full.struct_size);
  // This rank's buffers checked as the core call checks them, and agreed on before any rank runs: a bad buffer on one
  // rank must not leave the other ranks' chains run and their x overwritten by a call that fails.
  try {
    // The mixture's tables on the device this rank runs on (diffsample::mpi::detail::check_tables_device).
    diffsample::execution where;
    where.kind = static_cast<diffsample::executor>(exec.kind);
    where.stream = exec.stream;
    diffsample::mpi::detail::check_tables_device(*m, where, "mixture");
    o.first_chain = diffsample::mpi::detail::shard_first_chain(o.first_chain, s.first, n);
    check(*m, diffsample::c_api::to_cpp(&o), diffsample::c_api::to_cpp(exec));
  } catch (...) {
    status = status_of(std::current_exception(), message);
  }
  status = agree(comm, status, message);
  if (status != DS_SUCCESS) return status;
  try {
    ds_executor ran = DS_EXECUTOR_AUTOMATIC;
    status = run(&o, ran);
    if (status != DS_SUCCESS)
      message = ds_last_error();
    else if (ran == DS_EXECUTOR_CUDA)
      diffsample::mpi::detail::wait_for(exec.stream, "the chains");
  } catch (...) {
    status = status_of(std::current_exception(), message);
  }
  return agree(comm, status, message);
}

}  // namespace

extern "C" {

const char* ds_mpi_last_error(void) { return last_error.c_str(); }

ds_status ds_mpi_shard(int64_t n, MPI_Comm comm, int64_t* first, int64_t* count) {
  if (first == nullptr || count == nullptr) {
    last_error = "first, count: null pointer";
    return DS_INVALID_ARGUMENT;
  }
  try {
    const diffsample::mpi::shard s = diffsample::mpi::shard_of(n, comm);
    *first = s.first;
    *count = s.count;
  } catch (...) {
    return status_of(std::current_exception(), last_error);
  }
  last_error.clear();
  return DS_SUCCESS;
}

ds_status ds_mpi_langevin(MPI_Comm comm, const ds_mixture* mixture, float* x, int64_t n,
                          const ds_langevin_options* options, float* trajectory, int64_t* accepted,
                          ds_execution exec, ds_langevin_report* report, int64_t* accepted_total) {
  ds_langevin_report rep{};
  int64_t count = 0;
  const auto check = [&](const diffsample::gaussian_mixture& m, const diffsample::langevin_options& o,
                          diffsample::execution e) {
    diffsample::c_api::check_trajectory(o.record_every, trajectory);
    diffsample::langevin_outputs out;
    out.trajectory = trajectory;
    out.accepted = reinterpret_cast<std::int64_t*>(accepted);
    diffsample::detail::check_langevin_arguments(m, x, out, count, o, e);
    // The report and the total are written after the run (the total after the counts are read): apart from them.
    diffsample::c_api::check_chain_written_apart(
        {{"report", report, sizeof(ds_langevin_report)}, {"accepted_total", accepted_total, sizeof(int64_t)}}, m,
        count, o, x, trajectory, out.accepted, nullptr, 0);
  };
  const auto run = [&](const ds_langevin_options* o, ds_executor& ran) {
    const ds_status st = ds_langevin(mixture, x, count, o, trajectory, accepted, exec, nullptr, 0, &rep);
    ran = rep.ran;
    return st;
  };
  const ds_status status = run_shard(comm, mixture, n, options, exec, count, check, run);
  if (status != DS_SUCCESS) return status;
  if (report != nullptr) *report = rep;
  // Accepted proposals over the ranks, when every rank counted them: summed where they are on the host, copied from a
  // CUDA rank's device in blocks of a fixed host buffer (no allocation, nothing that throws out of this C call); a
  // failed copy fails every rank (one 4-byte agreement) before the sum. A rank without chains has nothing to count:
  // it counts as having counted, with or without a buffer.
  long long mine[2] = {0, accepted != nullptr || count == 0 ? 1 : 0}, all[2] = {0, 0};
  ds_status copied = DS_SUCCESS;
  std::string message;
  if (accepted != nullptr && rep.ran == DS_EXECUTOR_CUDA) {
    int64_t block[4096];
    for (int64_t at = 0; at < count && copied == DS_SUCCESS; at += 4096) {
      const int64_t k = std::min<int64_t>(4096, count - at);
      // On the call's stream, then waited for: a plain cudaMemcpy runs on the legacy default stream, which does not
      // wait for a stream created with cudaStreamNonBlocking (the counts were read before the chains wrote them).
      cudaError_t e = cudaMemcpyAsync(block, accepted + at, static_cast<std::size_t>(k) * sizeof(int64_t),
                                      cudaMemcpyDefault, exec.stream);
      if (e == cudaSuccess) e = cudaStreamSynchronize(exec.stream);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        copied = DS_CUDA_ERROR;
        message = std::string("accepted: read back failed: ") + cudaGetErrorString(e);
        break;
      }
      for (int64_t i = 0; i < k; ++i) mine[0] += block[i];
    }
  } else if (accepted != nullptr) {
    for (int64_t i = 0; i < count; ++i) mine[0] += accepted[i];
  }
  const ds_status agreed = agree(comm, copied, message);
  if (agreed != DS_SUCCESS) return agreed;
  MPI_Allreduce(mine, all, 2, MPI_LONG_LONG, MPI_SUM, comm);
  if (accepted_total != nullptr) *accepted_total = all[1] == size_of(comm) ? all[0] : -1;
  return DS_SUCCESS;
}

ds_status ds_mpi_diffusion(MPI_Comm comm, const ds_mixture* mixture, float* x, int64_t n,
                           const ds_diffusion_options* options, float* trajectory, ds_execution exec,
                           ds_diffusion_report* report) {
  ds_diffusion_report rep{};
  int64_t count = 0;
  const auto check = [&](const diffsample::gaussian_mixture& m, const diffsample::diffusion_options& o,
                          diffsample::execution e) {
    diffsample::c_api::check_trajectory(o.record_every, trajectory);
    diffsample::diffusion_outputs out;
    out.trajectory = trajectory;
    diffsample::detail::check_diffusion_arguments(m, x, out, count, o, e);
    // The report is written after the run: apart from the rows and the trajectory.
    diffsample::c_api::check_chain_written_apart({{"report", report, sizeof(ds_diffusion_report)}}, m, count, o, x,
                                                 trajectory, nullptr, nullptr, 0);
  };
  const auto run = [&](const ds_diffusion_options* o, ds_executor& ran) {
    const ds_status st = ds_diffusion(mixture, x, count, o, trajectory, exec, nullptr, 0, &rep);
    ran = rep.ran;
    return st;
  };
  const ds_status status = run_shard(comm, mixture, n, options, exec, count, check, run);
  if (status == DS_SUCCESS && report != nullptr) *report = rep;
  return status;
}

ds_status ds_mpi_resample(MPI_Comm comm, const float* log_weights, int64_t problems, int64_t particles,
                          const ds_resampling_options* options, int64_t* ancestors, float* normalised_weights,
                          ds_particle_report* reports) {
  // The options as ds_resample() reads them (struct_size, the scheme's range); a rank that cannot read its options
  // fails every rank before the exchange.
  ds_status status = DS_SUCCESS;
  std::string message;
  diffsample::resampling_options o;
  try {
    if (options == nullptr) diffsample::c_api::fail("options: null pointer");
    ds_resampling_options defaults;
    ds_resampling_options_init(&defaults, sizeof defaults);
    const ds_resampling_options c = diffsample::c_api::read_struct("options", options, defaults);
    o.scheme = diffsample::c_api::enum_to_cpp<diffsample::resampling_scheme>("options.scheme", c.scheme);
    o.ess_threshold = c.ess_threshold;
    o.seed = c.seed;
    o.step = c.step;
    o.metropolis_steps = c.metropolis_steps;
  } catch (...) {
    status = status_of(std::current_exception(), message);
  }
  status = agree(comm, status, message);
  if (status != DS_SUCCESS) return status;
  diffsample::particle_outputs out;
  out.ancestors64 = ancestors;
  out.normalised_weights = normalised_weights;
  // The caller's reports directly (the layouts are the same, as ds_resample() assumes): no scratch sized by
  // `problems` before mpi::resample has checked it.
  static_assert(same_report_layout, "report layouts differ");
  out.reports = reinterpret_cast<diffsample::particle_report*>(reports);
  try {
    diffsample::mpi::resample(comm, out, problems, particles, log_weights, o);  // collective validation inside
  } catch (...) {
    return status_of(std::current_exception(), last_error);  // the same class and message on every rank
  }
  last_error.clear();
  return DS_SUCCESS;
}

ds_status ds_mpi_guided_sample2(MPI_Comm comm, const ds_mixture* prior, const ds_guided_problems* problems,
                                const ds_guided_options* options, const ds_guided_outputs* outputs,
                                ds_mpi_smc_mode mode, ds_execution exec, ds_mpi_guided_result* result,
                                ds_guided_report2* local) {
  static_assert(int(DS_MPI_SMC_GLOBAL) == int(diffsample::mpi::smc_mode::global) &&
                    int(DS_MPI_SMC_ISLANDS) == int(diffsample::mpi::smc_mode::islands),
                "ds_mpi_smc_mode must equal diffsample::mpi::smc_mode");
  // The C structs are read on each rank; a rank whose structs are unreadable fails every rank before the run's own
  // collective validation.
  ds_status status = DS_SUCCESS;
  std::string message;
  const diffsample::gaussian_mixture* mixture = nullptr;
  diffsample::c_api::guided_arguments args;
  diffsample::execution ex;
  std::size_t local_size = 0;
  try {
    mixture = &diffsample::c_api::get(prior, "prior");
    args = diffsample::c_api::guided_arguments_from_c(problems, options, outputs, mixture->dim());
    if (mode != DS_MPI_SMC_GLOBAL && mode != DS_MPI_SMC_ISLANDS)
      diffsample::c_api::fail("mode: invalid value " + std::to_string(int(mode)));
    ex = diffsample::c_api::to_cpp(exec);
    local_size = diffsample::c_api::guided_report2_size(local);
    // The result and the report are written after the run: apart from this rank's outputs (B x count rows of its
    // share of the particles, a count the run refuses left to its check) and from each other.
    const std::int64_t N = args.options.particles;
    const std::int64_t count =
        N >= 1 && N <= diffsample::limits::max_particles ? diffsample::mpi::shard_of(N, comm).count : 0;
    diffsample::c_api::check_guided_written_apart(
        {{"result", result, sizeof(ds_mpi_guided_result)}, {"local", local, local_size}}, args.outputs,
        args.problems.problems, count, mixture->dim(), args.options.steps, nullptr, 0);
  } catch (...) {
    status = status_of(std::current_exception(), message);
  }
  status = agree(comm, status, message);
  if (status != DS_SUCCESS) return status;
  diffsample::mpi::guided_result r;
  try {
    r = diffsample::mpi::guided_sample(comm, *mixture, args.outputs, args.problems, args.options,
                                       static_cast<diffsample::mpi::smc_mode>(mode), ex);
  } catch (...) {
    return status_of(std::current_exception(), last_error);  // the same class and message on every rank
  }
  if (result != nullptr) {
    result->first = r.particles.first;
    result->count = r.particles.count;
    result->local = ds_guided_report{static_cast<ds_executor>(r.local.ran), r.local.launches};
    result->seconds = r.seconds;
    result->comm = ds_mpi_comm_stats{r.comm.seconds, r.comm.bytes_sent, r.comm.bytes_received, r.comm.exchanges};
  }
  if (local != nullptr) diffsample::c_api::write_guided_report2(r.local, local, local_size);
  last_error.clear();
  return DS_SUCCESS;
}

ds_status ds_mpi_guided_sample(MPI_Comm comm, const ds_mixture* prior, const ds_guided_problems* problems,
                               const ds_guided_options* options, const ds_guided_outputs* outputs,
                               ds_mpi_smc_mode mode, ds_execution exec, ds_mpi_guided_result* result) {
  return ds_mpi_guided_sample2(comm, prior, problems, options, outputs, mode, exec, result, nullptr);
}

}  // extern "C"
