// Distributed runs over MPI: shards of chains, collective error agreement, reduced metrics, and the guided SMC
// shard (src/guided_shard.hpp) whose resampling is src/mpi/resampler.cpp.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "src/chain_checks.hpp"
#include "src/cuda_check.hpp"
#include "src/guided_shard.hpp"
#include "src/mpi/comm.hpp"
#include "src/mpi/messages.hpp"
#include "src/mpi/resampler.hpp"
#include "src/limits.hpp"
#include "src/mixture_storage.hpp"
#include "src/overlap.hpp"
#include <diffsample/error.hpp>
#include <diffsample/mpi.hpp>

namespace diffsample::mpi {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

using detail::rank_of;
using detail::size_of;
using detail::same;
using detail::same_enum;
using detail::same_flag;
using detail::same_everywhere;
using detail::wait_for;

// bytes from src to dst, on the host or (a CUDA rank) on the call's stream, then waited for: the values are the ones
// the call's kernels wrote (a plain cudaMemcpy runs on the legacy default stream, which does not wait for a stream
// created with cudaStreamNonBlocking, and read log_normaliser before the run had written it). Throws cuda_error when
// the copy fails.
void copy_back(void* dst, const void* src, std::size_t bytes, executor ran, cudaStream_t stream) {
  if (ran != executor::cuda) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const cudaError_t status = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    throw cuda_error(std::string("guided_sample: cudaMemcpyAsync of log_normaliser: ") + cudaGetErrorString(status),
                     int(status));
  }
  wait_for(stream, "guided_sample: log_normaliser");
}

// One of this rank's buffers of a call, for check_apart(): its name, first byte and size in bytes (absent when null
// or empty).
struct host_span {
  const char* name;
  const void* ptr;
  std::size_t bytes;
};

// Throws invalid_argument naming both when two of `spans` share a byte, in the words of the library's own check
// (detail::check_disjoint, which libdiffsample does not export), with its comparison (detail::bytes_overlap).
void check_apart(std::initializer_list<host_span> spans) {
  for (auto a = spans.begin(); a != spans.end(); ++a)
    for (auto b = a + 1; b != spans.end(); ++b)
      DIFFSAMPLE_EXPECTS(!diffsample::detail::bytes_overlap(a->ptr, a->bytes, b->ptr, b->bytes),
                         b->name << ": must not overlap " << a->name << " (" << b->name << " " << b->ptr << ", "
                                 << b->bytes << " bytes; " << a->name << " " << a->ptr << ", " << a->bytes
                                 << " bytes)");
}

// agree(), timed and counted in stats (its 4 bytes to each other rank).
void agree_counted(MPI_Comm comm, comm_stats& stats, std::exception_ptr failure) {
  {
    detail::timed clock(stats);
    agree(comm, failure);
  }
  const std::int64_t others = size_of(comm) - 1;
  stats.bytes_sent += 4 * others;
  stats.bytes_received += 4 * others;
}

// Runs f, then agrees: every rank throws when any rank's f threw.
template <class F>
void collectively(MPI_Comm comm, comm_stats& stats, F&& f) {
  std::exception_ptr failure;
  try {
    f();
  } catch (...) {
    failure = std::current_exception();
  }
  agree_counted(comm, stats, failure);
}

}  // namespace

namespace detail {

void wait_for(cudaStream_t stream, const char* what) {
  const cudaError_t status = cudaStreamSynchronize(stream);
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  throw cuda_error(std::string(what) + ": cudaStreamSynchronize: " + cudaGetErrorString(status), int(status));
}

private_comm::private_comm(MPI_Comm comm) {
  const int status = MPI_Comm_dup(comm, &comm_);
  if (status == MPI_SUCCESS) return;
  comm_ = MPI_COMM_NULL;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw error(std::string("MPI_Comm_dup of the caller's communicator failed: ") + text);
}

std::uint64_t shard_first_chain(std::uint64_t first_chain, std::int64_t first_row, std::int64_t n) {
  const auto limit = static_cast<std::uint64_t>(limits::max_first_chain);
  DIFFSAMPLE_EXPECTS(first_chain <= limit, "options.first_chain = " << first_chain << ", the limit is " << limit
                                                                    << " (2^62)");
  DIFFSAMPLE_EXPECTS(static_cast<std::uint64_t>(first_row) <= limit - first_chain,
                     "options.first_chain = " << first_chain << ": a distributed run gives each rank the chains from "
                                              "first_chain + its first row, here "
                                              << first_row << " of n = " << n << ", past the limit " << limit
                                              << " (2^62); keep first_chain + n - 1 within it");
  return first_chain + static_cast<std::uint64_t>(first_row);
}

common_value same(std::string name, std::int64_t v) { return {std::move(name), v, common_value::kind::integer}; }
common_value same(std::string name, double v) {
  std::int64_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return {std::move(name), bits, common_value::kind::real};
}
common_value same_flag(std::string name, bool v) {
  return {std::move(name), std::int64_t(v), common_value::kind::named,
          [](std::int64_t x) -> const char* { return x == 0 ? "false" : x == 1 ? "true" : "unknown"; }};
}

std::int64_t digest(const void* values, std::size_t count, std::int64_t seed) {
  std::uint64_t h = 14695981039346656037ull ^ static_cast<std::uint64_t>(seed);
  const auto* p = static_cast<const unsigned char*>(values);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, p + 8 * i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  std::int64_t out = 0;
  std::memcpy(&out, &h, sizeof out);
  return out;
}

namespace {

std::string shown(const common_value& c, std::int64_t v) {
  std::ostringstream s;
  if (c.as == common_value::kind::integer) {
    s << v;
  } else if (c.as == common_value::kind::named) {
    s << c.name_of(v);
  } else if (c.as == common_value::kind::real) {
    double d = 0;
    std::memcpy(&d, &v, sizeof d);
    s << d;
  } else {
    s << "digest " << std::hex << static_cast<std::uint64_t>(v);
  }
  return s.str();
}

// An array: its size, then the digest of its values (named NAME size and NAME).
template <class T>
void add_array(std::vector<common_value>& v, const std::string& name, const std::vector<T>& a) {
  static_assert(sizeof(T) == 8);
  v.push_back(same(name + " size", std::int64_t(a.size())));
  v.push_back({name, digest(a.data(), a.size()), common_value::kind::digest});
}

void add_schedule(std::vector<common_value>& v, const std::string& name, const noise_schedule& s) {
  v.insert(v.end(), {same_enum(name + ".kind", s.kind), same(name + ".beta_min", s.beta_min),
                     same(name + ".beta_max", s.beta_max), same(name + ".cosine_offset", s.cosine_offset)});
  add_array(v, name + ".alpha_bar", s.alpha_bar);
  v.insert(v.end(), {same(name + ".sigma_min", s.sigma_min), same(name + ".sigma_max", s.sigma_max),
                     same_enum(name + ".grid", s.grid), same(name + ".t_start", s.t_start),
                     same(name + ".t_end", s.t_end)});
  add_array(v, name + ".times", s.times);
}

// The mixture's dimension, components, kind and a digest of its weights, means and variances.
void add_mixture(std::vector<common_value>& v, const std::string& name, const gaussian_mixture& m) {
  std::int64_t h = digest(m.weights().data(), m.weights().size());
  h = digest(m.means().data(), m.means().size(), h);
  h = digest(m.variances().data(), m.variances().size(), h);
  v.insert(v.end(), {same(name + " dimension", m.dim()), same(name + " components", m.components()),
                     same_flag(name + " isotropic", m.isotropic()), {name, h, common_value::kind::digest}});
}

}  // namespace

void check_tables_device(const gaussian_mixture& mixture, execution exec, const char* name) {
  const float* tables = mixture.storage().device;
  const bool cuda = exec.kind == executor::cuda || (exec.kind == executor::automatic && cuda_available());
  if (!cuda || tables == nullptr) return;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, tables) != cudaSuccess) {
    (void)cudaGetLastError();
    return;  // the sampler's own checks report a runtime that cannot tell
  }
  int device = -1;
  const bool own_stream =
      exec.stream != nullptr && exec.stream != cudaStreamLegacy && exec.stream != cudaStreamPerThread;
#if CUDART_VERSION >= 12080
  if (own_stream && cudaStreamGetDevice(exec.stream, &device) != cudaSuccess) device = -1;
#else
  (void)own_stream;
#endif
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  DIFFSAMPLE_EXPECTS(attributes.device == device,
                     name << ": its tables are on device " << attributes.device << ", but this rank runs on device "
                          << device << " (build it after mpi::rank_execution, which selects the rank's device: a "
                          << "gaussian_mixture uploads its tables to the device current when it is built)");
}

std::vector<common_value> langevin_arguments(const gaussian_mixture& mixture, std::int64_t n,
                                             const langevin_options& o) {
  std::vector<common_value> v = {same("n", n), same_enum("options.method", o.method),
                                 same("options.step_size", o.step_size), same("options.steps", o.steps),
                                 same("options.target.a", o.target.a), same("options.target.s", o.target.s),
                                 same("options.seed", std::int64_t(o.seed)),
                                 same("options.first_chain", std::int64_t(o.first_chain)),
                                 same("options.first_step", std::int64_t(o.first_step)),
                                 same("options.record_every", o.record_every)};
  add_mixture(v, "mixture", mixture);
  return v;
}

std::vector<common_value> diffusion_arguments(const gaussian_mixture& mixture, std::int64_t n,
                                              const diffusion_options& o) {
  std::vector<common_value> v = {same("n", n), same_enum("options.sampler", o.sampler)};
  add_schedule(v, "options.schedule", o.schedule);
  v.insert(v.end(), {same("options.steps", o.steps), same("options.eta", o.eta), same("options.sigma", o.sigma),
                     same("options.step_size", o.step_size), same("options.measurements", o.measurements),
                     same_flag("options.final_denoise", o.final_denoise),
                     same_flag("options.draw_initial", o.draw_initial),
                     same("options.seed", std::int64_t(o.seed)),
                     same("options.first_chain", std::int64_t(o.first_chain)),
                     same("options.record_every", o.record_every)});
  add_mixture(v, "mixture", mixture);
  return v;
}

std::vector<common_value> guided_arguments(smc_mode mode, const gaussian_mixture& prior,
                                           const guided_problems& problems, const guided_options& o,
                                           const guided_outputs& outputs) {
  std::vector<common_value> v = {{"mode", std::int64_t(mode), common_value::kind::named,
                                  [](std::int64_t x) -> const char* {
                                    return x == std::int64_t(smc_mode::global)    ? "global"
                                           : x == std::int64_t(smc_mode::islands) ? "islands"
                                                                                  : "unknown";
                                  }}, same_enum("options.sampler", o.sampler),
                                 same("options.particles", o.particles), same("options.steps", o.steps),
                                 same("problems.problems", problems.problems), same("problems.d_y", problems.d_y),
                                 same("prior dimension", prior.dim()), same("options.seed", std::int64_t(o.seed))};
  add_schedule(v, "options.schedule", o.schedule);
  v.insert(v.end(),
           {same_enum("options.grid", o.grid), same_flag("options.ddim", o.ddim),
            same("options.eta", o.eta), same("options.potential_spread", o.potential_spread),
            same_enum("options.potentials", o.potentials),
            same_enum("options.resampling.scheme", o.resampling.scheme),
            same("options.resampling.ess_threshold", o.resampling.ess_threshold),
            same("options.resampling.metropolis_steps", std::int64_t(o.resampling.metropolis_steps)),
            same_flag("options.start_correction", o.start_correction),
            same_flag("options.multistep_kernel", o.multistep_kernel),
            same_flag("options.final_resample", o.final_resample),
            same("options.final_moves", o.final_moves), same("options.final_move_step", o.final_move_step),
            same("options.final_move_curvature", o.final_move_curvature),
            same("options.guidance_scale", o.guidance_scale), same_enum("options.dps_step", o.dps_step),
            same("options.diffpir_zeta", o.diffpir_zeta), same("options.diffpir_lambda", o.diffpir_lambda),
            same("options.skrock_stages", o.skrock_stages), same("options.skrock_eta", o.skrock_eta),
            same("options.skrock_step_fraction", o.skrock_step_fraction),
            same("options.skrock_lipschitz", o.skrock_lipschitz), same("options.ddrm_eta", o.ddrm_eta),
            same("options.ddrm_eta_b", o.ddrm_eta_b), same("options.dcps_blocks", o.dcps_blocks),
            same("options.dcps_langevin_steps", o.dcps_langevin_steps),
            same("options.dcps_langevin_step", o.dcps_langevin_step),
            same("options.dcps_gradient_steps", o.dcps_gradient_steps),
            same("options.dcps_learning_rate", o.dcps_learning_rate),
            same_flag("options.dcps_bridge_variance", o.dcps_bridge_variance),
            same_flag("options.dcps_absolute_step", o.dcps_absolute_step),
            same_enum("options.operator_path", o.operator_path)});
  add_array(v, "problems.A", problems.A);
  // The operators: kind, shape and every stored array, in one digest.
  std::int64_t h = 0;
  for (const observation_operator& op : problems.operators) {
    const std::int64_t shape[3] = {std::int64_t(op.kind()), op.d_y(), op.d_x()};
    h = digest(shape, 3, h);
    h = digest(op.dense_matrix().data(), op.dense_matrix().size(), h);
    h = digest(op.indices().data(), op.indices().size(), h);
    h = digest(op.diagonal().data(), op.diagonal().size(), h);
    h = digest(op.U().data(), op.U().size(), h);
    h = digest(op.V().data(), op.V().size(), h);
  }
  v.push_back(same("problems.operators size", std::int64_t(problems.operators.size())));
  v.push_back({"problems.operators", h, common_value::kind::digest});
  add_array(v, "problems.y", problems.y);
  add_array(v, "problems.sigma_y", problems.sigma_y);
  add_mixture(v, "prior", prior);
  // Island mode combines the islands' log Z over the ranks (a collective that needs every rank's estimate). Listed in
  // either mode (false in global mode), so that every rank gathers as many values whatever its mode: a rank in the
  // other mode is then reported by "mode" instead of failing the gather (MPI_ERR_TRUNCATE).
  v.push_back(same_flag("outputs.log_normaliser given",
                        mode == smc_mode::islands && outputs.log_normaliser != nullptr));
  return v;
}

// same_everywhere()'s collective part (comm.hpp): a rank that failed to build its list throws on every rank first.
void compare_everywhere(MPI_Comm comm, comm_stats& stats, std::exception_ptr failure,
                        const std::vector<common_value>& values, const std::vector<std::int64_t>& mine,
                        std::vector<std::int64_t>& all) {
  agree_counted(comm, stats, failure);
  const int ranks = size_of(comm);
  const std::size_t k = values.size();
  {
    detail::timed clock(stats);
    MPI_Allgather(mine.data(), int(k), MPI_INT64_T, all.data(), int(k), MPI_INT64_T, comm);
  }
  stats.bytes_sent += std::int64_t(ranks - 1) * std::int64_t(k) * 8;
  stats.bytes_received += std::int64_t(ranks - 1) * std::int64_t(k) * 8;
  for (int r = 1; r < ranks; ++r) {
    for (std::size_t j = 0; j < k; ++j) {
      const std::int64_t v = all[r * k + j], v0 = all[j];
      if (v != v0) {
        std::ostringstream what;
        what << "rank " << r << " of " << ranks << ": " << values[j].name << ": " << shown(values[j], v) << " here, "
             << shown(values[j], v0) << " on rank 0 (every rank must pass the same)";
        throw invalid_argument(what.str());
      }
    }
  }
}

}  // namespace detail

shard shard_of(std::int64_t n, int rank, int ranks) {
  DIFFSAMPLE_EXPECTS(n >= 0, "n: must be >= 0, got " << n);
  DIFFSAMPLE_EXPECTS(ranks >= 1, "ranks: must be >= 1, got " << ranks);
  DIFFSAMPLE_EXPECTS(rank >= 0 && rank < ranks, "rank: must be in [0, " << ranks << "), got " << rank);
  const std::int64_t q = n / ranks, rem = n % ranks;
  shard s;
  s.first = rank < rem ? rank * (q + 1) : rem * (q + 1) + (rank - rem) * q;
  s.count = q + (rank < rem ? 1 : 0);
  return s;
}

shard shard_of(std::int64_t n, MPI_Comm comm) { return shard_of(n, rank_of(comm), size_of(comm)); }

void agree(MPI_Comm comm, std::exception_ptr error) {
  const int rank = rank_of(comm), ranks = size_of(comm);
  int mine = error ? rank : ranks, lowest = ranks;
  MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm);
  if (lowest == ranks) return;
  // kind: 0 invalid_argument, 1 out_of_memory, 2 cuda_error, 3 any other error
  long long header[3] = {3, 0, 0};  // kind, cuda code, message length
  std::string message;
  if (rank == lowest) {
    try {
      std::rethrow_exception(error);
    } catch (const invalid_argument& e) {
      header[0] = 0;
      message = e.what();
    } catch (const out_of_memory& e) {
      header[0] = 1;
      message = e.what();
    } catch (const cuda_error& e) {
      header[0] = 2;
      header[1] = e.code();
      message = e.what();
    } catch (const std::bad_alloc&) {
      header[0] = 1;
      message = "host allocation failed (std::bad_alloc)";
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
      message = "unknown exception";
    }
    header[2] = static_cast<long long>(message.size());
  }
  MPI_Bcast(header, 3, MPI_LONG_LONG, lowest, comm);
  message.resize(static_cast<std::size_t>(header[2]));
  detail::bcast_bytes(message.data(), message.size(), lowest, comm);
  std::ostringstream what;
  what << "rank " << lowest << " of " << ranks << ": " << message;
  switch (header[0]) {
    case 0: throw invalid_argument(what.str());
    case 1: throw out_of_memory(what.str());
    case 2: throw cuda_error(what.str(), int(header[1]));
    default: throw diffsample::error(what.str());
  }
}

int rank_device(int local_rank, int devices) {
  DIFFSAMPLE_EXPECTS(local_rank >= 0, "local_rank: must be >= 0, got " << local_rank);
  DIFFSAMPLE_EXPECTS(devices >= 0, "devices: must be >= 0, got " << devices);
  return devices == 0 ? -1 : local_rank % devices;
}

int local_rank(MPI_Comm comm) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  const int local = rank_of(node);
  MPI_Comm_free(&node);
  return local;
}

namespace {

void set_device(int device) {
  const cudaError_t status = cudaSetDevice(device);
  if (status != cudaSuccess)
    throw cuda_error("rank_execution: cudaSetDevice(" + std::to_string(device) + ") failed: " +
                         cudaGetErrorString(status),
                     int(status));
}

}  // namespace

execution rank_execution(MPI_Comm comm, execution exec) {
  // The node split and the agreement run on every rank whatever it resolves to: automatic resolves per rank (the
  // CPU on a rank that sees no device), so a rank leaving before them would leave the others in a collective.
  const int local = local_rank(comm);
  std::exception_ptr failure;
  try {
    if (exec.kind != executor::cpu) {
      int devices = 0;
      if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
      const bool own_stream =
          exec.stream != nullptr && exec.stream != cudaStreamLegacy && exec.stream != cudaStreamPerThread;
      if (own_stream && devices > 0) {
#if CUDART_VERSION >= 12080
        int device = 0;
        const cudaError_t status = cudaStreamGetDevice(exec.stream, &device);
        if (status != cudaSuccess)
          throw cuda_error(std::string("rank_execution: cudaStreamGetDevice(exec.stream) failed: ") +
                               cudaGetErrorString(status),
                           int(status));
        set_device(device);
#endif  // older runtimes cannot name the stream's device: the current one is left as the caller set it
      } else {
        const int device = rank_device(local, devices);
        if (device >= 0)
          set_device(device);
        else if (exec.kind == executor::automatic)
          exec.kind = executor::cpu;
      }
    }
  } catch (...) {
    failure = std::current_exception();
  }
  agree(comm, failure);
  return exec;
}

execution rank_execution(MPI_Comm comm, executor kind) {
  execution exec;
  exec.kind = kind;
  return rank_execution(comm, exec);
}

// This rank's rows of n chains (into rep) and the options of its shard: chain first + i runs on the stream of chain
// options.first_chain + first + i.
template <class Options>
Options shard_options(MPI_Comm comm, std::int64_t n, const Options& options, chain_report& rep) {
  rep.rows = shard_of(n, comm);
  rep.chains = n;
  Options o = options;
  o.first_chain = detail::shard_first_chain(options.first_chain, rep.rows.first, n);
  return o;
}

chain_report langevin(MPI_Comm comm, const gaussian_mixture& mixture, float* x, langevin_outputs outputs,
                      std::int64_t n, const langevin_options& options, execution exec) {
  chain_report rep;
  detail::same_chain_arguments(comm, rep.comm, mixture, n, options);
  std::vector<std::int64_t> counted;
  bool counting = outputs.accepted != nullptr;  // not outputs.accepted alone: an empty buffer's data() may be null
  langevin_options o;
  // Every rank's buffers are checked and agreed on before any rank runs: a bad buffer on one rank must not leave the
  // others' chains run and their x overwritten by a call that fails.
  collectively(comm, rep.comm, [&] {
    detail::check_tables_device(mixture, exec, "mixture");
    o = shard_options(comm, n, options, rep);
    const bool host = exec.kind == executor::cpu || (exec.kind == executor::automatic && !cuda_available());
    if (outputs.accepted == nullptr && host) {
      counted.assign(static_cast<std::size_t>(rep.rows.count), 0);
      outputs.accepted = counted.data();
      counting = true;
    }
    const executor where = diffsample::detail::check_langevin_arguments(mixture, x, outputs, rep.rows.count, o, exec);
    // The run is waited for below (its failure agreed on by every rank): refused here on a capturing stream, before
    // any rank runs.
    diffsample::detail::refuse_distributed_capture(where, exec,
                                                   "mpi::langevin() synchronises exec.stream after this rank's chains");
  });
  collectively(comm, rep.comm, [&] {
    const double t0 = now();
    rep.ran = diffsample::langevin(mixture, x, outputs, rep.rows.count, o, exec).ran;
    if (outputs.accepted != nullptr && rep.rows.count > 0) {
      if (rep.ran == executor::cuda) {
        counted.resize(static_cast<std::size_t>(rep.rows.count));
        const cudaError_t status = cudaMemcpyAsync(counted.data(), outputs.accepted,
                                                   counted.size() * sizeof(std::int64_t), cudaMemcpyDefault, exec.stream);
        if (status != cudaSuccess) {
          (void)cudaGetLastError();
          throw cuda_error(std::string("outputs.accepted: read back: cudaMemcpyAsync: ") + cudaGetErrorString(status),
                           int(status));
        }
        wait_for(exec.stream, "outputs.accepted: read back");
      } else if (counted.empty()) {
        counted.assign(outputs.accepted, outputs.accepted + rep.rows.count);
      }
    }
    if (rep.ran == executor::cuda) wait_for(exec.stream, "the chains");
    rep.seconds = now() - t0;
  });
  // Accepted proposals over all ranks, when every rank counted them.
  long long mine[2] = {0, counting ? 1 : 0};
  for (std::int64_t a : counted) mine[0] += a;
  long long all[2] = {0, 0};
  {
    detail::timed clock(rep.comm);
    MPI_Allreduce(mine, all, 2, MPI_LONG_LONG, MPI_SUM, comm);
  }
  rep.comm.bytes_sent += 16 * std::int64_t(size_of(comm) - 1);
  rep.comm.bytes_received += 16 * std::int64_t(size_of(comm) - 1);
  if (all[1] == size_of(comm)) {
    rep.accepted = all[0];
    const double proposals = double(n) * double(options.steps);
    rep.acceptance_rate = proposals > 0 ? double(all[0]) / proposals : 0.0;
  }
  return rep;
}

chain_report diffusion(MPI_Comm comm, const gaussian_mixture& mixture, float* x, diffusion_outputs outputs,
                       std::int64_t n, const diffusion_options& options, execution exec) {
  chain_report rep;
  detail::same_chain_arguments(comm, rep.comm, mixture, n, options);
  diffusion_options o;
  // Every rank's buffers are checked and agreed on before any rank runs (as langevin() above).
  collectively(comm, rep.comm, [&] {
    detail::check_tables_device(mixture, exec, "mixture");
    o = shard_options(comm, n, options, rep);
    const executor where = diffsample::detail::check_diffusion_arguments(mixture, x, outputs, rep.rows.count, o, exec);
    // As langevin() above (diffusion() itself refuses the capture too, but only once the other ranks have run).
    diffsample::detail::refuse_distributed_capture(where, exec,
                                                   "mpi::diffusion() synchronises exec.stream after this rank's chains");
  });
  collectively(comm, rep.comm, [&] {
    const double t0 = now();
    rep.ran = diffsample::diffusion(mixture, x, outputs, rep.rows.count, o, exec).ran;
    if (rep.ran == executor::cuda) wait_for(exec.stream, "the chains");
    rep.seconds = now() - t0;
  });
  return rep;
}

moments row_moments(MPI_Comm comm, std::int64_t count, std::int64_t d, const float* x) {
  comm_stats unused;
  same_everywhere(comm, unused, [&] { return std::vector<detail::common_value>{same("dim", d)}; });
  // Per rank: its count, and per coordinate its mean and sum of squared deviations from that mean (two passes in
  // FP64), gathered and combined in rank order by the pairwise update (Chan, Golub and LeVeque): exact where the
  // mean is far from zero. A single pass's sum2 / n - mean^2 cancelled there (1e8 and 1e8 + 8 alternating gave
  // variance 0 for 16). Allocated before the agreement, so that a failed allocation fails every rank.
  const int ranks = size_of(comm);
  std::size_t width = 0;
  std::vector<double> mine, all;
  collectively(comm, unused, [&] {
    limits::check("dim", d, 1, limits::max_dim);  // and so 1 + 2 d, the int count of the gather below
    DIFFSAMPLE_EXPECTS(count >= 0, "count: must be >= 0, got " << count);
    // count x dim indexes x: a count whose product overflows would read anywhere.
    limits::check("count", count, 0, limits::max_items / d, "count x dim values of x within 2^62 - 1");
    DIFFSAMPLE_EXPECTS(count == 0 || x != nullptr, "x: null pointer for " << count << " rows");
    width = static_cast<std::size_t>(1 + 2 * d);
    mine.assign(width, 0.0);
    all.resize(width * ranks);
  });
  mine[0] = double(count);
  double* const mean = mine.data() + 1;
  double* const m2 = mine.data() + 1 + d;
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t j = 0; j < d; ++j) mean[j] += x[i * d + j];
  if (count > 0)
    for (std::int64_t j = 0; j < d; ++j) mean[j] /= double(count);
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t j = 0; j < d; ++j) {
      const double e = double(x[i * d + j]) - mean[j];
      m2[j] += e * e;
    }
  MPI_Allgather(mine.data(), int(width), MPI_DOUBLE, all.data(), int(width), MPI_DOUBLE, comm);
  moments m;
  m.mean.assign(static_cast<std::size_t>(d), 0.0);
  m.variance.assign(static_cast<std::size_t>(d), 0.0);
  std::vector<double> total_m2(static_cast<std::size_t>(d), 0.0);
  double total = 0;
  for (int r = 0; r < ranks; ++r) {
    const double nb = all[r * width];
    if (nb == 0) continue;
    const double n = total + nb;
    for (std::int64_t j = 0; j < d; ++j) {
      const double mb = all[r * width + 1 + j], delta = mb - m.mean[j];
      m.mean[j] += delta * (nb / n);
      total_m2[j] += all[r * width + 1 + d + j] + delta * delta * (total * nb / n);
    }
    total = n;
  }
  m.n = static_cast<std::int64_t>(total);
  if (total > 0)
    for (std::int64_t j = 0; j < d; ++j) m.variance[j] = total_m2[j] / total;
  return m;
}

std::vector<float> gather_rows(MPI_Comm comm, std::int64_t count, std::int64_t width, const float* x, int root) {
  const int rank = rank_of(comm), ranks = size_of(comm);
  comm_stats unused;
  // Every rank names the same width and root (a rank's own root was a hang; its own width mixed rows of two widths).
  same_everywhere(comm, unused, [&] {
    return std::vector<detail::common_value>{same("width", width), same("root", std::int64_t(root))};
  });
  collectively(comm, unused, [&] {
    // Each bounded before their product is formed (a width of 2^62 + 1 times 4 rows wrapped to 4 values).
    limits::check("width", width, 1, limits::max_int_count, "MPI_Gatherv's int counts");
    limits::check("count", count, 0, limits::max_int_count);
    limits::check("count x width", count * width, 0, limits::max_int_count, "MPI_Gatherv's int counts");
    DIFFSAMPLE_EXPECTS(count == 0 || x != nullptr, "x: null pointer for " << count << " rows");
    DIFFSAMPLE_EXPECTS(root >= 0 && root < ranks, "root: must be in [0, " << ranks << "), got " << root);
  });
  const int mine = static_cast<int>(count * width);
  std::vector<int> counts(static_cast<std::size_t>(ranks)), displs(static_cast<std::size_t>(ranks));
  MPI_Gather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, root, comm);
  // The root's check of the total and its allocation, agreed on before the rows move (one 4-byte MPI_Allreduce):
  // a failure there throws on every rank instead of leaving the others in MPI_Gatherv.
  std::vector<float> out;
  std::exception_ptr failure;
  if (rank == root) {
    try {
      std::int64_t at = 0;
      for (int r = 0; r < ranks; ++r) {
        displs[r] = static_cast<int>(std::min<std::int64_t>(at, limits::max_int_count));
        at += counts[r];
      }
      limits::check("gather_rows: floats", at, 0, limits::max_int_count, "MPI_Gatherv's int displacements");
      out.resize(static_cast<std::size_t>(at));
    } catch (...) {
      failure = std::current_exception();
    }
  }
  agree(comm, failure);
  MPI_Gatherv(x, mine, MPI_FLOAT, out.data(), counts.data(), displs.data(), MPI_FLOAT, root, comm);
  return out;
}

comm_stats resample(MPI_Comm comm, particle_outputs outputs, std::int64_t problems, std::int64_t particles,
                    const float* log_weights, const resampling_options& options) {
  comm_stats stats;
  same_everywhere(comm, stats, [&] {
    return std::vector<detail::common_value>{same("problems", problems), same("particles", particles),
                   same_enum("options.scheme", options.scheme), same("options.ess_threshold", options.ess_threshold),
                   same("options.seed", std::int64_t(options.seed)), same("options.step", std::int64_t(options.step)),
                   same("options.metropolis_steps", std::int64_t(options.metropolis_steps))};
  });
  // Every rank reaches this point (the comparison above throws on every rank alike): the resampler's duplicate of
  // comm (collective) is made here, on the stack, before anything that could fail on one rank alone.
  detail::resampler rs(comm, particles, stats);
  std::vector<std::int64_t> own, picked;
  collectively(comm, stats, [&] {
    DIFFSAMPLE_EXPECTS(particles >= 1, "particles: must be >= 1, got " << particles);
    rs.check(problems, options);
    DIFFSAMPLE_EXPECTS(outputs.ancestors == nullptr || outputs.ancestors64 == nullptr,
                       "outputs: give ancestors or ancestors64, not both");
    const std::int64_t count = problems * rs.local();
    DIFFSAMPLE_EXPECTS(count == 0 || log_weights != nullptr, "log_weights: null pointer for " << count << " values");
    // The normalised weights are written while the log-weights are still read, the reports beside them and the
    // ancestors last: no output may share memory with the log-weights or another output (as resample() refuses).
    const std::size_t items = static_cast<std::size_t>(count);
    check_apart({{"log_weights", log_weights, items * sizeof(float)},
                 {"outputs.normalised_weights", outputs.normalised_weights, items * sizeof(float)},
                 {"outputs.ancestors", outputs.ancestors, items * sizeof(std::int32_t)},
                 {"outputs.ancestors64", outputs.ancestors64, items * sizeof(std::int64_t)},
                 {"outputs.reports", outputs.reports, static_cast<std::size_t>(problems) * sizeof(particle_report)}});
    // Every rank exchanges the rows' global indices (whether or not it asked for ancestors), so that the collectives
    // match whatever each rank passed; allocated before the agreement, so that a failed allocation fails every rank.
    own.resize(static_cast<std::size_t>(count));
    picked.resize(static_cast<std::size_t>(count));
  });
  const std::int64_t B = problems, L = rs.local(), count = B * L;
  for (std::int64_t s = 0; s < count; ++s) own[s] = rs.first() + s % L;
  rs.run(log_weights, B, options, outputs.reports, own.data(), sizeof(std::int64_t), picked.data(),
         outputs.normalised_weights);
  for (std::int64_t s = 0; s < count; ++s) {
    if (outputs.ancestors64 != nullptr) outputs.ancestors64[s] = picked[s];
    if (outputs.ancestors != nullptr) outputs.ancestors[s] = static_cast<std::int32_t>(picked[s]);
  }
  return stats;
}

namespace {

// The guided SMC shard over MPI. Each exchange (resample, fetch, in_order) starts with an agreement (one 4-byte
// MPI_Allreduce), and so does the end of the run (guided_sample below): a rank that throws between two exchanges,
// where the filter runs on its own (its kernels, a CUDA rank's host staging), calls agree(error) instead of its next
// exchange, and the others, at the start of theirs, throw its error with it. An error thrown on every rank at once
// (by an agreement) is rethrown as it is. Every message travels on the resampler's duplicate of the caller's
// communicator (made by the constructor, collective; freed by the destructor).
class mpi_shard final : public diffsample::detail::guided_shard {
 public:
  mpi_shard(MPI_Comm comm, std::int64_t particles, comm_stats& stats) : rs_(comm, particles, stats),
                                                                         comm_(rs_.comm()), stats_(stats) {}
  std::int64_t first() const override { return rs_.first(); }
  std::int64_t local() const override { return rs_.local(); }
  void agree(std::exception_ptr error) override {
    if (error && together_) std::rethrow_exception(error);  // every rank is throwing it
    if (!error) error = own_;
    together([&] {
      detail::timed clock(stats_);
      mpi::agree(comm_, error);
    });
    stats_.bytes_sent += 4 * std::int64_t(rs_.ranks() - 1);
    stats_.bytes_received += 4 * std::int64_t(rs_.ranks() - 1);
  }
  void resample(const float* lw, std::int64_t problems, const resampling_options& o, particle_report* reports,
                const void* rows, std::size_t row_bytes, void* out) override {
    agree(nullptr);
    together([&] { rs_.run(lw, problems, o, reports, rows, row_bytes, out); });
  }
  void fetch(const void* rows, std::int64_t problems, std::size_t row_bytes, const std::int64_t* index,
             void* out) override {
    agree(nullptr);
    together([&] { rs_.fetch(rows, problems, row_bytes, index, out); });
  }
  // The state travels from rank r - 1 to rank r (MPI_Recv), which continues it over its particles and sends it on
  // to rank r + 1 (MPI_Send), whether or not its step failed, so that the chain always completes; the failures are
  // agreed on after it, and the last rank's state is broadcast (MPI_Bcast).
  void in_order(void* state, std::size_t bytes, const std::function<void()>& step) override {
    agree(nullptr);
    const int r = rs_.rank(), P = rs_.ranks();
    const std::int64_t n = static_cast<std::int64_t>(bytes);
    if (r > 0) {
      together([&] {
        detail::timed clock(stats_);
        detail::recv_bytes(state, bytes, r - 1, detail::report_sums_tag, comm_);
      });
      stats_.bytes_received += n;
    }
    std::exception_ptr failure;
    try {
      step();
    } catch (...) {
      failure = std::current_exception();
    }
    if (r < P - 1) {
      together([&] {
        detail::timed clock(stats_);
        detail::send_bytes(state, bytes, r + 1, detail::report_sums_tag, comm_);
      });
      stats_.bytes_sent += n;
    }
    agree(failure);
    if (P == 1) return;
    together([&] {
      detail::timed clock(stats_);
      detail::bcast_bytes(state, bytes, P - 1, comm_);
    });
    if (r == P - 1)
      stats_.bytes_sent += n * (P - 1);
    else
      stats_.bytes_received += n;
  }
  bool any(bool mine) override {
    int v = mine ? 1 : 0, all = 0;
    {
      detail::timed clock(stats_);
      MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_LOR, comm_);
    }
    stats_.bytes_sent += 4 * std::int64_t(rs_.ranks() - 1);
    stats_.bytes_received += 4 * std::int64_t(rs_.ranks() - 1);
    return all != 0;
  }
  /// A failure of this rank's own checks, reported at agree().
  void fail(std::exception_ptr e) { own_ = e; }
  detail::resampler& resampler() { return rs_; }

 private:
  // f, whose errors are thrown on every rank at once (agreements, the resampler's collectives).
  template <class F>
  void together(F&& f) {
    try {
      f();
    } catch (...) {
      together_ = true;
      throw;
    }
  }
  detail::resampler rs_;  // first: its communicator is comm_
  MPI_Comm comm_;
  comm_stats& stats_;
  std::exception_ptr own_;
  bool together_ = false;
};

}  // namespace

guided_result guided_sample(MPI_Comm comm, const gaussian_mixture& prior, guided_outputs outputs,
                            const guided_problems& problems, const guided_options& options, smc_mode mode,
                            execution exec) {
  guided_result res;
  const double t0 = now();
  const int rank = rank_of(comm);
  same_everywhere(comm, res.comm, [&] { return detail::guided_arguments(mode, prior, problems, options, outputs); });
  if (mode == smc_mode::islands) {
    std::vector<double> mine, all;
    guided_options o = options;
    collectively(comm, res.comm, [&] {
      detail::check_tables_device(prior, exec, "prior");
      res.particles = shard_of(options.particles, comm);
      // Islands are independent SMC filters (their own resampling, seeds and log Z): a sampler whose particles never
      // interact has nothing of that to run, and the default mode already runs its single-process rows. Refused, not
      // ignored, so that a caller who asked for islands is told.
      DIFFSAMPLE_EXPECTS(options.sampler == guided_sampler::smc,
                         "mode: islands runs independent SMC filters, options.sampler smc only, got options.sampler = "
                             << to_string(options.sampler)
                             << " (its particles never interact: smc_mode::global, the default, runs this rank's "
                                "share of the single-process run)");
      DIFFSAMPLE_EXPECTS(res.particles.count >= 1, "options.particles: island mode needs at least one particle per "
                                                   "rank, got " << options.particles << " over " << size_of(comm)
                                                                << " ranks");
      o.particles = res.particles.count;
      o.seed = guided_run_seed(options.seed, static_cast<std::uint64_t>(rank));
      const executor where = diffsample::detail::check_guided_outputs(prior, problems, o, outputs, exec);
      diffsample::detail::refuse_distributed_capture(where, exec,
                                                     "mpi::guided_sample() (island mode) copies tables it builds on the "
                                                     "host for this call alone and synchronises exec.stream after "
                                                     "this rank's island");
    });
    // Every rank's outputs agreed on above, before any island runs: a bad output on one rank must not leave the
    // others' written by a call that fails.
    collectively(comm, res.comm, [&] {
      res.local = diffsample::guided_sample(prior, outputs, problems, o, exec);
      // The island's run waited for whether or not its log-normaliser is read back: its kernels' failure fails every
      // rank here (without the wait, a failure on one rank returned success everywhere).
      if (res.local.ran == executor::cuda) wait_for(exec.stream, "guided_sample");
      // Every rank's estimate, read back from the executor before the agreement (outputs.log_normaliser is given on
      // every rank or on none: compared first).
      if (outputs.log_normaliser != nullptr) {
        mine.assign(static_cast<std::size_t>(problems.problems), 0.0);
        all.resize(static_cast<std::size_t>(problems.problems) * size_of(comm));
        copy_back(mine.data(), outputs.log_normaliser, mine.size() * sizeof(double), res.local.ran, exec.stream);
      }
    });
    // log Z = log sum_r (n_r / N) Z_r per problem.
    const std::int64_t B = problems.problems;
    if (outputs.log_normaliser != nullptr) {
      for (double& v : mine) v += std::log(double(res.particles.count) / double(options.particles));
      {
        detail::timed clock(res.comm);
        MPI_Allgather(mine.data(), int(B), MPI_DOUBLE, all.data(), int(B), MPI_DOUBLE, comm);
      }
      for (std::int64_t b = 0; b < B; ++b) {
        double m = -INFINITY;
        for (int r = 0; r < size_of(comm); ++r) m = std::max(m, all[r * B + b]);
        double s = 0;
        for (int r = 0; r < size_of(comm) && m > -INFINITY; ++r) s += std::exp(all[r * B + b] - m);
        mine[b] = m > -INFINITY ? m + std::log(s) : -INFINITY;
      }
      collectively(comm, res.comm, [&] {  // a failed copy throws on every rank
        copy_back(outputs.log_normaliser, mine.data(), mine.size() * sizeof(double), res.local.ran, exec.stream);
      });
    }
    res.seconds = now() - t0;
    return res;
  }
  DIFFSAMPLE_EXPECTS(mode == smc_mode::global, "mode: invalid value " << static_cast<int>(mode));
  if (options.sampler != guided_sampler::smc) {
    // Particles that never interact: each rank runs its share on the single-process streams.
    collectively(comm, res.comm, [&] {
      detail::check_tables_device(prior, exec, "prior");
      res.particles = shard_of(options.particles, comm);
      (void)guided_workspace_bytes(prior, problems, options);  // the options' checks, on every rank
      if (res.particles.count > 0) {
        guided_options o = options;
        o.particles = res.particles.count;
        const executor where = diffsample::detail::check_guided_outputs(prior, problems, o, outputs, exec);
        diffsample::detail::refuse_distributed_capture(where, exec,
                                                       "mpi::guided_sample() copies tables it builds on the host for "
                                                       "this call alone and synchronises exec.stream after this "
                                                       "rank's share");
      }
    });
    // Every rank's outputs agreed on above, before any rank runs (as island mode).
    collectively(comm, res.comm, [&] {
      if (res.particles.count > 0) {
        guided_options o = options;
        o.particles = res.particles.count;
        res.local = diffsample::detail::guided_sample_streams(prior, problems, o, outputs, exec, options.particles,
                                                              res.particles.first);
        if (res.local.ran == executor::cuda) wait_for(exec.stream, "guided_sample");
      }
    });
    res.seconds = now() - t0;
    return res;
  }
  std::exception_ptr early;
  try {
    limits::check("options.particles", options.particles, 1, limits::max_particles);
    detail::check_tables_device(prior, exec, "prior");
  } catch (...) {
    early = std::current_exception();
  }
  agree_counted(comm, res.comm, early);
  // On the stack, right after the agreement, where every rank arrives: its resampler's duplicate of comm is
  // collective, and no allocation of one rank alone may precede it.
  mpi_shard filter(comm, options.particles, res.comm);
  try {
    // ess_threshold -1 (automatic) resolves per run to 0.5 or automatic_twisted_ess_threshold (guided_smc_shard):
    // both pass the resampler's check, which sees the value the run will take at most.
    resampling_options checked = options.resampling;
    if (checked.ess_threshold == -1.0) checked.ess_threshold = resampling_options{}.ess_threshold;
    filter.resampler().check(problems.problems, checked, "options.resampling");
  } catch (...) {
    filter.fail(std::current_exception());
  }
  res.particles = shard{filter.first(), filter.local()};
  try {
    res.local = diffsample::detail::guided_smc_shard(prior, problems, options, outputs, exec, filter);
    if (res.local.ran == executor::cuda) wait_for(exec.stream, "guided_sample");
  } catch (...) {
    filter.agree(std::current_exception());  // this rank's own failure: the others throw it at their next agreement
    throw;
  }
  filter.agree(nullptr);  // the end: every rank returns, or every rank throws the error of one that failed after the
                          // last exchange
  res.seconds = now() - t0;
  return res;
}

}  // namespace diffsample::mpi
