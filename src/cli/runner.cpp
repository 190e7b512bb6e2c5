// The sampler runner of the diffsample program (runner.hpp).
#include "cli/runner.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <cuda_runtime_api.h>

#include "src/schedule_defaults.hpp"

namespace diffsample::cli {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw error(std::string(what) + ": " + cudaGetErrorString(status));
}

/// Calls body(first, count) for @p chunks consecutive slices of n chains (sizes differing by at most one), waits
/// for the executor, then redraws @p bar (may be null) with the chains done.
template <class Body>
void for_each_chunk(std::int64_t n, std::int64_t chunks, executor where, progress* bar, Body body) {
  chunks = std::max<std::int64_t>(1, std::min(chunks, n));
  std::int64_t first = 0;
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t count = n / chunks + (c < n % chunks ? 1 : 0);
    body(first, count);
    wait(where);
    first += count;
    if (bar) bar->update(first);
  }
}

/// A broad start for Langevin chains: N(mean, var I) with the prior's mean and its largest per-coordinate variance.
gaussian_mixture langevin_start(const gaussian_mixture& target) {
  const std::int64_t d = target.dim();
  std::vector<double> mean(d, 0.0), second(d, 0.0);
  const auto& w = target.weights();
  const auto& mu = target.means();
  const auto& v = target.variances();
  for (std::int64_t k = 0; k < target.components(); ++k)
    for (std::int64_t j = 0; j < d; ++j) {
      const double vk = target.isotropic() ? v[k] : v[k * d + j];
      mean[j] += w[k] * mu[k * d + j];
      second[j] += w[k] * (vk + mu[k * d + j] * mu[k * d + j]);
    }
  double var = 0;
  for (std::int64_t j = 0; j < d; ++j) var = std::max(var, second[j] - mean[j] * mean[j]);
  return gaussian_mixture(d, {1.0}, mean, {std::max(var, 1e-12)});
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

executor resolve(executor e, const std::string& source) {
  if (e == executor::automatic) return cuda_available() ? executor::cuda : executor::cpu;
  if (e == executor::cuda && !cuda_available())
    throw input_error(source + ": no GPU is usable (" + cuda_unavailable_reason() + ")");
  return e;
}

executor requested_executor(int argc, char** argv, int first) {
  const char* flag = nullptr;
  const char* file = nullptr;
  for (int i = first; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--executor") == 0) flag = argv[i + 1];
    if (std::strcmp(argv[i], "--problem") == 0) file = argv[i + 1];
  }
  const std::string name = flag != nullptr ? flag : file != nullptr ? peek_executor(file) : std::string();
  try {
    return name.empty() ? executor::automatic : parse_executor(name);
  } catch (const std::exception&) {
    return executor::automatic;
  }
}

std::string executor_source(const options& o, const problem& file) {
  if (o.has("--executor")) return "--executor " + o.get("--executor");
  if (file.sampler.executor) return file.path + ": sampler.executor: '" + *file.sampler.executor + "'";
  return "--executor auto";
}

std::string executor_text(executor e) {
  return e == executor::cpu ? "cpu (" + std::to_string(cpu_threads()) + " threads)" : to_string(e);
}

void wait(executor where) {
  if (where == executor::cuda) check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void check_memory(std::int64_t n, std::int64_t d, int copies, const std::string& what, bool from_flag) {
  const long double bytes = (long double)n * (long double)d * 4.0L * copies;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const long double total = pages > 0 && page > 0 ? (long double)pages * page : 0;
  // A count from the command line that no run can hold is a bad command line, as a value above any other limit is;
  // from the problem file (or the default, against the file's prior) a bad input.
  const auto refuse = [&](const std::string& text) {
    if (from_flag) throw usage_error(text);
    throw input_error(text);
  };
  const std::string need = what + ": " + std::to_string(n) + " x " + std::to_string(d) + " samples need " +
                           fmt(double(bytes / 1073741824.0L), 4) + " GiB of host memory";
  if (bytes > (long double)diffsample::limits::max_host_bytes)
    refuse(need + ", the limit is " + diffsample::limits::spell(diffsample::limits::max_host_bytes) +
           " bytes (limits::max_host_bytes, 64 TiB)");
  if (total > 0 && bytes > total * 0.8L)
    refuse(need + ", more than this machine's " + fmt(double(total / 1073741824.0L), 4) + " GiB allows (80%: " +
           fmt(double(total * 0.8L / 1073741824.0L), 4) + " GiB)");
}

std::string count_source(const options& o, const problem& file, const char* flag, const char* key) {
  if (o.has(flag) || file.sampler.keys.count(key) == 0) return flag;
  return file.path + ": sampler." + key;
}

template <class T>
exec_buffer<T>::exec_buffer(executor where, std::int64_t count) : host_(std::size_t(std::max<std::int64_t>(count, 0))) {
  if (where == executor::cuda)
    check(cudaMalloc(reinterpret_cast<void**>(&device_), std::max<std::size_t>(host_.size(), 1) * sizeof(T)),
          "cudaMalloc");
}

template <class T>
exec_buffer<T>::~exec_buffer() {
  if (device_) cudaFree(device_);
}

template <class T>
std::vector<T>& exec_buffer<T>::to_host() {
  if (device_)
    check(cudaMemcpy(host_.data(), device_, host_.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return host_;
}

template class exec_buffer<float>;
template class exec_buffer<double>;
template class exec_buffer<std::int32_t>;
template class exec_buffer<std::int64_t>;

bool is_langevin(const std::string& name) { return name == "ula" || name == "mala" || name == "tamed_ula"; }

noise_schedule make_schedule(const run_settings& s, diffusion_sampler sampler) {
  std::string name = s.schedule;
  if (name.empty()) name = sampler == diffusion_sampler::stochastic_localization ? "stochastic_localization" : "vp_linear";
  const schedule_kind kind = parse_schedule_kind(name);
  if (kind == schedule_kind::vp_table && s.alpha_bar.empty())
    throw input_error("schedule vp_table needs sampler.alpha_bar in a problem file");
  noise_schedule sched = detail::default_schedule(kind, s.alpha_bar);
  // The file's alpha_bar goes to every kind, so that the library refuses it where the kind does not read it (with
  // --schedule vp_cosine, say) instead of the run dropping it.
  sched.alpha_bar = s.alpha_bar;
  if (!s.time_grid.empty() || s.t_start || s.t_end) {
    const time_grid g = s.time_grid.empty() ? sched.grid : parse_time_grid(s.time_grid);
    if (g == time_grid::custom) throw usage_error("time grid 'custom' is not available from the program");
    sched.with_grid(g, s.t_start.value_or(sched.t_start), s.t_end.value_or(sched.t_end));
  }
  return sched;
}

void read_schedule(const options& o, const sampler_spec& f, run_settings& s) {
  if (f.schedule) s.schedule = *f.schedule;  // checked by the reader
  if (o.has("--schedule")) s.schedule = o.get("--schedule");
  if (o.has("--schedule")) parse_flag("--schedule", s.schedule, parse_schedule_kind);
  s.t_start = f.t_start;
  s.t_end = f.t_end;
  for (const char* flag : {"--t-start", "--t-end"}) {
    if (!o.has(flag)) continue;
    const double t = to_double(flag, o.get(flag));
    if (t < 0) throw usage_error(std::string(flag) + ": must be >= 0, got " + o.get(flag));
    (std::string(flag) == "--t-start" ? s.t_start : s.t_end) = t;
  }
  if (f.alpha_bar) s.alpha_bar = *f.alpha_bar;
}

noise_schedule checked_schedule(const options& o, const problem& file, const run_settings& s,
                                diffusion_sampler sampler, std::int64_t steps) {
  // vp_table is a table: from the file alone (make_schedule() refuses it without one, naming neither).
  if (s.schedule == "vp_table" && s.alpha_bar.empty()) {
    if (o.has("--schedule"))
      throw usage_error("--schedule: vp_table needs its table, the problem file's sampler.alpha_bar" +
                        std::string(file.path.empty() ? " (no --problem given)" : ", which " + file.path + " lacks"));
    throw input_error(file.path + ": sampler.schedule: vp_table needs sampler.alpha_bar (its table)");
  }
  try {
    noise_schedule sched = make_schedule(s, sampler);
    (void)sched.points(std::max<std::int64_t>(steps, 1));
    return sched;
  } catch (const invalid_argument& e) {
    const bool from_flags = o.has("--schedule") || o.has("--time-grid") || o.has("--t-start") || o.has("--t-end");
    if (from_flags) throw usage_error(std::string("--schedule/--time-grid/--t-start/--t-end: ") + e.what());
    throw input_error(file.path + ": sampler: " + e.what());
  }
}

langevin_options langevin_settings(const run_settings& s) {
  langevin_options o;
  o.method = parse_langevin_method(s.sampler);
  o.step_size = s.step_size > 0 ? s.step_size : 0.03;
  o.steps = s.steps >= 0 ? s.steps : 1000;
  o.seed = s.seed;
  return o;
}

diffusion_options diffusion_settings(const run_settings& s) {
  diffusion_options o;
  o.sampler = parse_diffusion_sampler(s.sampler);
  o.schedule = make_schedule(s, o.sampler);
  o.steps = s.steps >= 0 ? s.steps : 100;
  o.eta = s.eta;
  o.sigma = s.sigma;
  o.step_size = s.step_size > 0 ? s.step_size : 0.1;
  o.measurements = s.measurements;
  o.final_denoise = s.final_denoise;
  o.seed = s.seed;
  return o;
}

void check_run(const gaussian_mixture& target, const run_settings& s, std::int64_t n) {
  if (is_langevin(s.sampler))
    (void)langevin_workspace_bytes(target, n, langevin_settings(s));
  else
    (void)diffusion_workspace_bytes(target, n, diffusion_settings(s));
}

const std::vector<setting> sampler_settings = {
    {"options.steps", "--steps", "steps"},
    {"options.steps x measurements", "--steps x --measurements", "steps x measurements"},
    {"options.measurements", "--measurements", "measurements"},
    {"options.step_size", "--step-size", "step_size"},
    {"options.sigma", "--sigma", "sigma"},
    {"options.eta", "--eta", "eta"},
    {"options.schedule", "--schedule/--time-grid/--t-start/--t-end", "schedule/time_grid/t_start/t_end/alpha_bar"},
};

run_result run_sampler(const gaussian_mixture& target, const run_settings& s, std::int64_t n, std::int64_t chunks,
                       progress* bar) {
  const std::int64_t d = target.dim();
  const executor where = resolve(s.exec);
  run_result r;
  exec_buffer<float> x(where, n * d);
  std::chrono::steady_clock::time_point t0;
  if (is_langevin(s.sampler)) {
    const langevin_options o = langevin_settings(s);
    r.total_steps = o.steps;
    exec_buffer<std::int64_t> accepted(where, n);
    langevin_start(target).sample(x.data(), n, {}, s.seed + 1000, nullptr, s.first_chain, {where});
    wait(where);
    t0 = std::chrono::steady_clock::now();
    for_each_chunk(n, chunks, where, bar, [&](std::int64_t first, std::int64_t count) {
      langevin_options part = o;
      part.first_chain = s.first_chain + std::uint64_t(first);
      r.ran = langevin(target, x.data() + first * d, {nullptr, accepted.data() + first}, count, part, {where}).ran;
    });
    r.seconds = seconds_since(t0);
    if (o.method == langevin_method::mala) {
      double a = 0;
      for (auto c : accepted.to_host()) a += double(c);
      r.acceptance = o.steps > 0 ? a / (double(n) * double(o.steps)) : 0;
    }
  } else {
    const diffusion_options o = diffusion_settings(s);
    t0 = std::chrono::steady_clock::now();
    for_each_chunk(n, chunks, where, bar, [&](std::int64_t first, std::int64_t count) {
      diffusion_options part = o;
      part.first_chain = s.first_chain + std::uint64_t(first);
      const diffusion_report rep = diffusion(target, x.data() + first * d, {}, count, part, {where});
      r.ran = rep.ran;
      r.total_steps = rep.total_steps;
    });
    r.seconds = seconds_since(t0);
  }
  r.samples = std::move(x.to_host());
  return r;
}

}  // namespace diffsample::cli
