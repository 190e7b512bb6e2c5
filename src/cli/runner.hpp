// The sampler runner of the diffsample program: one body for both executors (buffers where the executor reads
// them, exec_buffer), the executor choice, and the runs of `sample` and `bench` (Langevin and reverse diffusion on a
// Gaussian mixture) in chunks of chains. A run is a slice of chains (run_settings::first_chain), so that a
// distributed run can hand each process its own slice and gather the samples.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <diffsample/diffsample.hpp>

#include "cli/args.hpp"
#include "cli/problem.hpp"
#include "cli/progress.hpp"

namespace diffsample::cli {

/// The executor that runs: automatic resolved, cuda refused without a GPU. @p source names where the setting came
/// from in the message ("--executor cuda", or the problem file's field).
executor resolve(executor e, const std::string& source = "--executor cuda");

/// The executor a run asks for, from its arguments argv[first..argc) before anything is parsed or checked: the last
/// --executor, else the last --problem file's sampler.executor (peek_executor()), else automatic; a name that does
/// not parse counts as automatic (the run reports it later).
executor requested_executor(int argc, char** argv, int first);

/// Where an executor setting came from: the command line, else the problem file's sampler.executor.
std::string executor_source(const options& o, const problem& file);

/// "cpu (N threads)" or "cuda".
std::string executor_text(executor e);

/// Waits for the executor's work (the CUDA device; nothing on the CPU).
void wait(executor where);

/// Refuses n x d float buffers (times @p copies) that the program can never hold, before allocating: more bytes
/// than limits::max_host_bytes, or more than 80% of this machine's memory (computed in long double, so no product
/// overflows). @p what names where n came from: a flag ("--chains"; @p from_flag true, a bad command line, usage_error,
/// exit status 2), else the problem file's key or the default (input_error, exit status 1). An allocation that
/// fails later, at run time, is no argument's fault: it stays a failed run (exit status 1).
void check_memory(std::int64_t n, std::int64_t d, int copies, const std::string& what, bool from_flag);

/// Where a run's count came from, as check_memory() names it: @p flag when the command line gives it or the file does
/// not (the default), else the problem file's key ("p.json: sampler.chains").
std::string count_source(const options& o, const problem& file, const char* flag, const char* key);

/// @p count values of T where the executor reads and writes them: device memory on CUDA (freed on scope exit),
/// host memory on the CPU. to_host() copies them back (synchronising) and returns the host copy.
template <class T>
class exec_buffer {
 public:
  exec_buffer(executor where, std::int64_t count);
  ~exec_buffer();
  exec_buffer(const exec_buffer&) = delete;
  exec_buffer& operator=(const exec_buffer&) = delete;
  T* data() noexcept { return device_ ? device_ : host_.data(); }
  std::vector<T>& to_host();

 private:
  std::vector<T> host_;
  T* device_ = nullptr;
};

extern template class exec_buffer<float>;
extern template class exec_buffer<double>;
extern template class exec_buffer<std::int32_t>;
extern template class exec_buffer<std::int64_t>;

/// True for the Langevin samplers' names: ula, mala, tamed_ula.
bool is_langevin(const std::string& name);

/// Everything a sampler run needs, after merging defaults, the problem file and the command line.
struct run_settings {
  std::string sampler = "mala";
  executor exec = executor::automatic;
  std::int64_t chains = -1, steps = -1, measurements = 4;
  double eta = 0, sigma = 1, step_size = -1;
  std::string schedule, time_grid;
  std::optional<double> t_start, t_end;
  std::vector<double> alpha_bar;
  bool final_denoise = false;
  std::uint64_t seed = 1;
  std::uint64_t first_chain = 0;  ///< id of the run's first chain in the random stream (a slice of a larger run)
};

/// The noise schedule of a diffusion run: the named kind (default vp_linear, stochastic_localization for that
/// sampler) with the settings' time grid.
noise_schedule make_schedule(const run_settings& s, diffusion_sampler sampler);

/// The schedule's settings of a run, into @p s: the problem file's sampler.schedule, t_start, t_end and alpha_bar,
/// then --schedule, --t-start and --t-end over them (their values checked, a bad one a usage_error naming the flag).
/// `sample` and `solve` read them alike; the time grid each reads itself (solve's --time-grid has grids of its own).
void read_schedule(const options& o, const sampler_spec& f, run_settings& s);

/// make_schedule() on a grid of @p steps steps, checked: a setting the library refuses is reported with where it
/// came from, the flags (--schedule/--time-grid/--t-start/--t-end, usage_error, exit status 2) or the problem file's
/// sampler section (input_error, exit status 1); vp_table without the file's alpha_bar likewise, naming --schedule or
/// sampler.schedule.
noise_schedule checked_schedule(const options& o, const problem& file, const run_settings& s,
                                diffusion_sampler sampler, std::int64_t steps);

/// The library's options of a Langevin run (@p s names ula, mala or tamed_ula) and of a reverse-diffusion run: the
/// settings with the program's defaults for those left unset.
langevin_options langevin_settings(const run_settings& s);
diffusion_options diffusion_settings(const run_settings& s);

/// The library's own check of the run run_sampler() would make with n chains (its *_workspace_bytes function):
/// throws the library's invalid_argument for a setting it refuses, before anything runs.
void check_run(const gaussian_mixture& target, const run_settings& s, std::int64_t n);

/// The settings of a `sample` or `demo` run and where they come from, for check_settings() (cli/args.hpp).
extern const std::vector<setting> sampler_settings;

/// Result of one sampler run: samples on the host and timings.
struct run_result {
  std::vector<float> samples;
  executor ran = executor::cpu;
  double seconds = 0;
  double acceptance = -1;  ///< MALA only
  std::int64_t total_steps = 0;
};

/// Runs the sampler of @p s on @p target with n chains (ids first_chain ... first_chain + n - 1); Langevin chains
/// start from N(mean, var I) of the prior. With @p chunks > 1 the chains run as that many consecutive calls over
/// slices of the chains, redrawing @p bar between calls: every chain draws from the Philox stream
/// (seed, chain, step) whichever call runs it, so the samples are bit-identical to one call.
run_result run_sampler(const gaussian_mixture& target, const run_settings& s, std::int64_t n,
                       std::int64_t chunks = 1, progress* bar = nullptr);

}  // namespace diffsample::cli
