// Runs of the diffsample program under an MPI launcher (distributed.hpp).
#include "cli/distributed.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

#include <diffsample/error.hpp>

#include "cli/args.hpp"
#include "cli/output.hpp"

#if defined(DIFFSAMPLE_CLI_MPI)
#include <mpi.h>

#include <diffsample/mpi.hpp>

#include "src/mpi/messages.hpp"
#endif

namespace diffsample::cli::distributed {
namespace {

// True while the failure being thrown is thrown by every launched process alike (by agree(), on_root(), or a
// collective call of libdiffsample_mpi, which agree on their errors): end_job_if_alone() then leaves the processes
// to exit together.
bool agreed_failure = false;

// f(), whose exceptions every launched process throws alike (a collective call that agrees on its errors).
template <class F>
decltype(auto) together(F&& f) {
  try {
    return f();
  } catch (...) {
    agreed_failure = true;
    throw;
  }
}

// The launcher's variable that holds this process's rank on its node, and its value; {nullptr, -1} when none is set
// (or none holds a rank). The MPI libraries' own launchers first: Open MPI's mpirun, MVAPICH2's mpirun_rsh, MPICH's
// and Intel MPI's Hydra, HPE Cray's PALS mpiexec, Cray PMI; Slurm's srun last, because a launcher started inside an
// allocation passes on to the processes it starts the SLURM_LOCALID of the step it runs in (0 in a batch script).
std::pair<const char*, int> local_rank_variable() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                           "PALS_LOCAL_RANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) {
      char* end = nullptr;
      const long r = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && r >= 0 && r < (1L << 30)) return {name, int(r)};
    }
  return {nullptr, -1};
}

std::int64_t launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoll(v);
  // srun with PMIx sets none of those: a process it starts has PMIX_RANK, and the step's task count is
  // SLURM_STEP_NUM_TASKS (a batch script's own step has no PMIX_RANK, so it stays one process).
  if (std::getenv("PMIX_RANK") != nullptr)
    if (const char* v = std::getenv("SLURM_STEP_NUM_TASKS")) return std::atoll(v);
  return 1;
}

#if defined(DIFFSAMPLE_CLI_MPI)
void finish() {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

void init() {
  int started = 0;
  MPI_Initialized(&started);
  if (started) return;
  MPI_Init(nullptr, nullptr);
  std::atexit(finish);
}

// True in a launched run whose MPI has started, with the world's size and this process's rank: the processes'
// collective agreements (agree(), check_arguments()) run only then.
bool launched_world(int& size, int& me) {
  int started = 0;
  MPI_Initialized(&started);
  if (!started || launcher_size() <= 1) return false;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  return true;
}
#endif

}  // namespace

bool launched() {
  if (launcher_size() <= 1) return false;
#if defined(DIFFSAMPLE_CLI_MPI)
  init();
  return true;
#else
  throw error("started by an MPI launcher with " + std::to_string(launcher_size()) +
              " processes, but this diffsample was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

int rank() {
#if defined(DIFFSAMPLE_CLI_MPI)
  int started = 0;
  MPI_Initialized(&started);
  if (!started) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
#else
  return 0;
#endif
}

std::int64_t smallest_everywhere(std::int64_t mine) {
#if defined(DIFFSAMPLE_CLI_MPI)
  int size = 1, me = 0;
  if (launched_world(size, me)) {
    std::int64_t least = mine;
    MPI_Allreduce(&mine, &least, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    return least;
  }
#endif
  return mine;
}

void agree(std::exception_ptr failure) {
#if defined(DIFFSAMPLE_CLI_MPI)
  int size = 1, me = 0;
  if (launched_world(size, me)) {
    int kind = 3;  // of a failure: 1 input_error, 2 usage_error, 3 any other
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const usage_error&) {
        kind = 2;
      } catch (const input_error&) {
        kind = 1;
      } catch (...) {
      }
    }
    // The lowest failing rank and its kind, then its message through mpi::agree (which picks the same rank).
    int mine = failure ? me * 4 + kind : size * 4, lowest = size * 4;
    MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (lowest == size * 4) return;
    agreed_failure = true;  // every process throws below
    try {
      mpi::agree(MPI_COMM_WORLD, failure);
    } catch (const std::exception& e) {
      if (lowest % 4 == 2) throw usage_error(e.what());
      if (lowest % 4 == 1) throw input_error(e.what());
      throw;
    }
  }
#endif
  if (failure) std::rethrow_exception(failure);
}

void check_arguments(const std::function<void()>& check) {
  std::exception_ptr failure;
  const char* help = nullptr;
  try {
    check();
  } catch (const help_request& h) {
    help = h.text;
  } catch (...) {
    failure = std::current_exception();
  }
  // Started here when choose_device() did not (a launcher's local rank, or the CPU executor): every process of a
  // launched run reaches this point, whatever its arguments. Without MPI in the program, launched() throws.
  if (launcher_size() > 1) (void)launched();
  agree(failure);  // a failure on any process wins over a --help
#if defined(DIFFSAMPLE_CLI_MPI)
  int size = 1, me = 0;
  if (launched_world(size, me)) {
    // --help on any process: every process ends, and the lowest one that asked prints the usage text (once).
    int mine = help != nullptr ? me : size, lowest = size;
    MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (lowest < size) throw help_request{lowest == me ? help : nullptr};
    return;
  }
#endif
  if (help != nullptr) throw help_request{help};
}

namespace {
// FNV-1a over a file's bytes, as 16 hex digits; "unreadable" when it cannot be read now (it was read just before).
std::string digest(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "unreadable";
  std::uint64_t h = 1469598103934665603ull;
  unsigned char buffer[1 << 16];
  for (std::size_t got; (got = std::fread(buffer, 1, sizeof buffer, f)) > 0;)
    for (std::size_t i = 0; i < got; ++i) h = (h ^ buffer[i]) * 1099511628211ull;
  std::fclose(f);
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}
}  // namespace

void same_run_everywhere(const options& o, const std::vector<std::string>& files,
                         const std::vector<std::string>& per_process) {
#if defined(DIFFSAMPLE_CLI_MPI)
  int size = 1, me = 0;
  if (!launched_world(size, me)) return;
  // This process's run as (name, value) lines in order of name: its flags, then its files' digests, in the order
  // read, under the name '\x7f' and the file's position (after every flag; the paths may differ between
  // processes, the contents may not: --problem's value is compared through them, its presence as a flag's). Rank
  // 0's is broadcast; each compares.
  std::vector<std::pair<std::string, std::string>> mine;
  for (const auto& [flag, value] : o.values)
    if (std::find(per_process.begin(), per_process.end(), flag) == per_process.end()) mine.emplace_back(flag, value);
  char position[32];
  for (std::size_t k = 0; k < files.size(); ++k) {
    std::snprintf(position, sizeof position, "\x7f%08zu", k);
    mine.emplace_back(position, digest(files[k]));
  }
  std::string text;
  for (const auto& [name, value] : mine) text += name + '\0' + value + '\0';
  long long length = static_cast<long long>(text.size());
  MPI_Bcast(&length, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  std::string root(static_cast<std::size_t>(length), '\0');
  if (me == 0) root = text;
  // In chunks of at most INT_MAX bytes (src/mpi/messages.hpp): the length cast to MPI's int count wrapped above it.
  diffsample::mpi::detail::bcast_bytes(root.data(), root.size(), 0, MPI_COMM_WORLD);
  std::vector<std::pair<std::string, std::string>> theirs;
  for (std::size_t at = 0; at < root.size();) {
    const std::size_t name_end = root.find('\0', at), value_end = root.find('\0', name_end + 1);
    theirs.emplace_back(root.substr(at, name_end - at), root.substr(name_end + 1, value_end - name_end - 1));
    at = value_end + 1;
  }
  std::exception_ptr failure;
  try {
    const std::string why = " (every process of a run under mpirun must be given the same arguments and files)";
    // The first name (in order: the flags, then the files) whose value differs or that one side lacks.
    std::size_t i = 0, j = 0;
    while (i < mine.size() || j < theirs.size()) {
      const bool here = i < mine.size(), there = j < theirs.size();
      const std::string& name = here && (!there || mine[i].first <= theirs[j].first) ? mine[i].first : theirs[j].first;
      const bool file = name[0] == '\x7f';
      const std::size_t k = file ? std::stoul(name.substr(1)) : 0;
      const std::string shown = !file ? name : k < files.size() ? files[k] : "file " + std::to_string(k + 1);
      const bool mine_has = here && mine[i].first == name, theirs_has = there && theirs[j].first == name;
      std::string problem;
      if (mine_has && theirs_has && mine[i].second != theirs[j].second && name != "--problem")
        problem = file ? "its content differs from rank 0's copy"
                       : "'" + mine[i].second + "' on this process, '" + theirs[j].second + "' on rank 0";
      else if (mine_has && !theirs_has)
        problem = file ? "read by this process, not by rank 0 (it reads " + std::to_string(k) + " files)"
                       : "given on this process ('" + mine[i].second + "'), not on rank 0";
      else if (!mine_has && theirs_has)
        problem = file ? "rank 0 reads " + std::to_string(k + 1) + " files or more, this process " +
                             std::to_string(files.size())
                       : "given on rank 0 ('" + theirs[j].second + "'), not on this process";
      if (!problem.empty()) {
        if (file) throw input_error(shown + ": " + problem + why);
        throw usage_error(shown + ": " + problem + why);
      }
      i += mine_has ? 1 : 0;
      j += theirs_has ? 1 : 0;
    }
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
#else
  (void)o, (void)files, (void)per_process;
#endif
}

int on_root(bool spread, const std::function<int()>& stage, const std::function<void()>& commit) {
  if (!spread) {
    const int status = stage();
    commit();
    return status;
  }
  // Rank 0 stages its outputs; every other process checks its own standard output (the check the program makes at
  // its end, made here before anything is committed): all agree, then rank 0 commits, agreed on again.
  const bool root = rank() == 0;
  std::exception_ptr failure;
  int status = 0;
  try {
    if (root)
      status = stage();
    else
      check_stdout();
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  try {
    if (root) commit();
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  return status;
}

void end_job_if_alone(int status, const std::string& message) {
#if defined(DIFFSAMPLE_CLI_MPI)
  int done = 0;
  MPI_Finalized(&done);  // first: nothing else may be called after MPI_Finalize
  int size = 1, me = 0;
  if (done || agreed_failure || !launched_world(size, me)) return;
  std::fprintf(stderr, "diffsample: rank %d of %d: %s (ending every process: the others may be waiting for this one)\n",
               me, size, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, status);
#else
  (void)status, (void)message;
#endif
}

bool hides_devices(executor requested, std::int64_t processes) {
  return processes > 1 && requested == executor::cpu;
}

void keep_off_devices(executor requested) {
  // An index that is not a device hides it and every device after it: the driver finds none, and nothing can
  // create a context.
  if (hides_devices(requested, launcher_size())) setenv("CUDA_VISIBLE_DEVICES", "-1", 1);
}

int launcher_local_rank() { return local_rank_variable().second; }

void choose_device(executor requested) {
  keep_off_devices(requested);
  if (launcher_size() <= 1) return;
#if defined(DIFFSAMPLE_CLI_MPI)
  int local = launcher_local_rank();
  if (local < 0) {
    // No local rank from the launcher: MPI's own, from the node split, which needs MPI started. Every process calls
    // this first in its command and splits whatever executor its arguments ask for (a process on the CPU executor
    // too, its GPUs hidden above), so the split is collective: whether a process splits depends on the launcher's
    // variables alone, not on its own arguments or on the devices it sees. Before anything reaches a device.
    init();
    local = mpi::local_rank(MPI_COMM_WORLD);
  }
  if (requested == executor::cpu) return;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  const int device = mpi::rank_device(local, devices);
  // A failure is left to select_device(), which reports it on every rank.
  if (device >= 0 && cudaSetDevice(device) != cudaSuccess) (void)cudaGetLastError();
#endif
}

void select_device(executor where) {
#if defined(DIFFSAMPLE_CLI_MPI)
  init();
  // The device choose_device() selected from the launcher's local rank, against the one MPI's node split gives
  // (which rank_execution() selects below): they must be the same, or the tables built before MPI started would sit
  // on another device than the rank's.
  const int local = mpi::local_rank(MPI_COMM_WORLD);  // collective: on every process, whatever its executor
  std::exception_ptr failure;
  try {
    const auto [name, variable] = local_rank_variable();
    int devices = 0;
    if (where != executor::cpu && variable >= 0 && cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0 &&
        mpi::rank_device(variable, devices) != mpi::rank_device(local, devices))
      throw error(std::string(name) + "=" + std::to_string(variable) + " selected device " +
                  std::to_string(mpi::rank_device(variable, devices)) + ", but this process is rank " +
                  std::to_string(local) + " of its node by MPI (MPI_Comm_split_type), whose device is " +
                  std::to_string(mpi::rank_device(local, devices)) + " of " + std::to_string(devices) +
                  ": the launcher's local rank must be MPI's (unset " + name + " to select by MPI's alone)");
  } catch (...) {
    (void)cudaGetLastError();
    failure = std::current_exception();
  }
  agree(failure);
  together([&] { (void)mpi::rank_execution(MPI_COMM_WORLD, where); });
#else
  (void)where;
#endif
}

run_result run(const gaussian_mixture& target, run_settings s, std::int64_t n, std::int64_t chunks, progress* bar,
               std::vector<rank_stats>& ranks) {
#if defined(DIFFSAMPLE_CLI_MPI)
  init();
  const std::int64_t d = target.dim();
  const mpi::shard mine = mpi::shard_of(n, MPI_COMM_WORLD);
  s.first_chain += static_cast<std::uint64_t>(mine.first);
  run_result r;
  // A failure on this rank alone (a device, memory, an argument the sampler refuses) must reach the others before
  // the gather: every rank throws the same error (mpi::agree), so that no rank waits in MPI_Gatherv for one that left.
  std::exception_ptr failure;
  try {
    r.ran = resolve(s.exec);
    if (mine.count > 0) r = run_sampler(target, s, mine.count, chunks, bar);
  } catch (...) {
    failure = std::current_exception();
  }
  together([&] { mpi::agree(MPI_COMM_WORLD, failure); });
  const double t0 = MPI_Wtime();
  std::vector<float> all =
      together([&] { return mpi::gather_rows(MPI_COMM_WORLD, mine.count, d, r.samples.data(), 0); });
  // Per rank: chains, seconds, accepted proposals (MALA), total steps, gather seconds.
  const double accepted = r.acceptance >= 0 ? r.acceptance * double(mine.count) * double(r.total_steps) : -1.0;
  double stats[5] = {double(mine.count), r.seconds, accepted, double(r.total_steps), MPI_Wtime() - t0};
  int size = 1, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  std::vector<double> every(static_cast<std::size_t>(5 * size));
  MPI_Gather(stats, 5, MPI_DOUBLE, every.data(), 5, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  run_result out;
  out.ran = r.ran;
  if (me != 0) return out;
  out.samples = std::move(all);
  double acc = 0;
  bool counted = true;
  ranks.assign(static_cast<std::size_t>(size), {});
  for (int k = 0; k < size; ++k) {
    ranks[k] = rank_stats{static_cast<std::int64_t>(every[5 * k]), every[5 * k + 1], every[5 * k + 4]};
    out.seconds = std::max(out.seconds, every[5 * k + 1]);
    out.total_steps = std::max(out.total_steps, static_cast<std::int64_t>(every[5 * k + 3]));
    if (every[5 * k] > 0 && every[5 * k + 2] < 0) counted = false;
    acc += std::max(0.0, every[5 * k + 2]);
  }
  if (counted && r.acceptance >= 0 && out.total_steps > 0) out.acceptance = acc / (double(n) * double(out.total_steps));
  return out;
#else
  (void)target, (void)s, (void)n, (void)chunks, (void)bar, (void)ranks;
  throw error("this diffsample was built without MPI");
#endif
}

guided_run solve_guided(const gaussian_mixture& prior, const guided_problems& problems, const guided_options& options,
                        executor where, std::vector<rank_stats>& ranks) {
#if defined(DIFFSAMPLE_CLI_MPI)
  init();
  const std::int64_t d = prior.dim(), n = options.particles;
  const mpi::shard mine = mpi::shard_of(n, MPI_COMM_WORLD);
  guided_run out;
  // Every sampler runs where asked, its buffers there (smc on CUDA ranks stages each resampling through the host).
  execution exec;
  exec.kind = where;
  // The buffers (device memory on CUDA ranks) and the copies back can fail on one rank alone: every rank agrees
  // (mpi::agree) before the next collective, so that all of them throw the same error and none is left waiting.
  std::exception_ptr failure;
  std::unique_ptr<exec_buffer<float>> on, ess;
  std::unique_ptr<exec_buffer<double>> log_z;
  std::unique_ptr<exec_buffer<std::int32_t>> resamplings;
  try {
    on = std::make_unique<exec_buffer<float>>(where, std::max<std::int64_t>(mine.count * d, 1));
    ess = std::make_unique<exec_buffer<float>>(where, options.steps + 1);
    log_z = std::make_unique<exec_buffer<double>>(where, 1);
    resamplings = std::make_unique<exec_buffer<std::int32_t>>(where, 1);
  } catch (...) {
    failure = std::current_exception();
  }
  together([&] { mpi::agree(MPI_COMM_WORLD, failure); });
  guided_outputs g;
  g.samples = on->data();
  const bool smc = options.sampler == guided_sampler::smc;
  if (smc) {
    g.log_normaliser = log_z->data();
    g.ess_trace = ess->data();
    g.resample_count = resamplings->data();
  }
  const mpi::guided_result res = together(
      [&] { return mpi::guided_sample(MPI_COMM_WORLD, prior, g, problems, options, mpi::smc_mode::global, exec); });
  std::vector<float> samples;
  try {
    samples = on->to_host();
    if (smc) {
      out.ess = ess->to_host();
      out.log_z = log_z->to_host()[0];
      out.resamplings = resamplings->to_host()[0];
    }
  } catch (...) {
    failure = std::current_exception();
  }
  together([&] { mpi::agree(MPI_COMM_WORLD, failure); });
  const double t0 = MPI_Wtime();
  std::vector<float> all =
      together([&] { return mpi::gather_rows(MPI_COMM_WORLD, mine.count, d, samples.data(), 0); });
  double stats[5] = {double(mine.count), res.seconds, MPI_Wtime() - t0, res.comm.seconds, double(res.comm.bytes_sent)};
  int size = 1, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  std::vector<double> every(static_cast<std::size_t>(5 * size));
  MPI_Gather(stats, 5, MPI_DOUBLE, every.data(), 5, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (me != 0) return guided_run{};
  out.samples = std::move(all);
  out.local = res.local;
  ranks.assign(static_cast<std::size_t>(size), {});
  for (int k = 0; k < size; ++k) {
    ranks[k] = rank_stats{static_cast<std::int64_t>(every[5 * k]), every[5 * k + 1], every[5 * k + 2],
                          every[5 * k + 3], every[5 * k + 4]};
    out.seconds = std::max(out.seconds, every[5 * k + 1]);
  }
  return out;
#else
  (void)prior, (void)problems, (void)options, (void)where, (void)ranks;
  throw error("this diffsample was built without MPI");
#endif
}

}  // namespace diffsample::cli::distributed
