// The sample, bench and solve subcommands of the diffsample program.
#include "cli/commands.hpp"

#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <diffsample/diffsample.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/binary.hpp"
#include "cli/output.hpp"
#include "cli/problem.hpp"
#include "cli/progress.hpp"
#include "npy.hpp"

namespace diffsample::cli {

namespace {

namespace ds = diffsample;
using json = nlohmann::ordered_json;

const char* sample_usage =
    "usage: diffsample sample [options]\n"
    "Samples a Gaussian-mixture prior with any sampler of the library and scores the samples against exact ones.\n"
    "\n"
    "prior (built-in grid mixture unless --problem gives one):\n"
    "  --problem FILE.json     problem file: prior and sampler settings (schema in README); options override it\n"
    "  --dim D                 dimension of the grid mixture (default 2)\n"
    "  --grid G                G x G grid of means (default 5: 25 components, the demo's weights)\n"
    "  --spacing S             distance between neighbouring means (default 2)\n"
    "  --variance V            isotropic component variance (default 0.25)\n"
    "sampler:\n"
    "  --sampler NAME          ula, mala, tamed_ula (Langevin from N(mean, var) of the prior); ddpm, ddim,\n"
    "                          reverse_sde, ode_euler, ode_heun, stochastic_localization, walk_jump,\n"
    "                          sequential_measurements (default mala); discrete_langevin, discrete_walk_jump for\n"
    "                          a Bernoulli-mixture prior (options: diffsample sample --sampler discrete_langevin -h)\n"
    "  --steps N               steps (default 1000 for Langevin, 100 otherwise; per measurement for SMS)\n"
    "  --chains N              chains (default 2^20 on a GPU, 16384 on the CPU)\n"
    "  --schedule NAME         vp_linear, vp_cosine, vp_table (file only), variance_exploding,\n"
    "                          ornstein_uhlenbeck, linear_interpolant, stochastic_localization\n"
    "                          (default vp_linear; stochastic_localization for that sampler)\n"
    "  --time-grid NAME        uniform, quadratic, geometric (default: the schedule's)\n"
    "  --t-start T, --t-end T  ends of the time grid (default: the schedule's)\n"
    "  --eta E                 DDIM stochasticity in [0, 1] (default 0)\n"
    "  --sigma S               walk_jump and SMS measurement noise (default 1)\n"
    "  --step-size G           Langevin, walk_jump and SMS step size (default 0.03 Langevin, 0.1 otherwise)\n"
    "  --measurements M        SMS measurements (default 4)\n"
    "  --final-denoise         diffusion samplers: output the denoiser at the last channel\n"
    "  --seed S                random seed (default 1)\n"
    "  --executor auto|cuda|cpu  where to run (default auto)\n"
    "output:\n"
    "  --out FILE.npy          write the samples (float32, N x d)\n"
    "  --report FILE.json      write the JSON report (settings, executor, timings, accuracy)\n"
    "  --plot FILE.svg         write an SVG of the first two coordinates over exact samples\n"
    "  --quiet                 print nothing on success (and no progress line)\n"
    "A progress line (chains done, chains/s, time left) is drawn on stderr when it is a terminal; the chains then\n"
    "run in 20 chunks (DIFFSAMPLE_CHUNKS=K sets K), which changes no sample.\n"
    "Exit status: 0 success, 1 bad input or failed run, 2 bad command line.\n";

const char* bench_usage =
    "usage: diffsample bench [options]\n"
    "Throughput (chain-steps/s) of ULA, MALA, DDPM, DDIM and ODE-Heun on the 25-component grid mixture at\n"
    "d = 2, 10 and 100, after one warm-up call each.\n"
    "  --chains N              chains per run (default 2^20 on a GPU, 4096 on the CPU)\n"
    "  --steps N               steps per run (default 100 on a GPU, 20 on the CPU)\n"
    "  --dims LIST             comma-separated dimensions (default 2,10,100)\n"
    "  --seed S                random seed (default 1)\n"
    "  --executor auto|cuda|cpu  where to run (default auto)\n"
    "  --report FILE.json      also write the table as JSON\n"
    "Exit status: 0 success, 1 failed run, 2 bad command line.\n";

const char* solve_usage =
    "usage: diffsample solve --problem FILE.json [options]\n"
    "Posterior sampling for a problem file's prior under its observation y = A x + sigma_y z, scored against the\n"
    "exact posterior (sliced W1 beside the exact-vs-exact floor, log p(y) estimate beside the exact value).\n"
    "  --problem FILE.json     problem file with 'prior' and 'observation' (docs in README)\n"
    "  --sampler NAME          smc (Monte Carlo guided diffusion, default), dps, pigdm, diffpir, skrock, tmpd, ddrm,\n"
    "                          dcps, or exact (the exact posterior's own samples: the reference itself)\n"
    "  --particles N           particles (samples) per problem (default 4096 on the CPU, 65536 on a GPU)\n"
    "  --steps N               diffusion steps of the guided samplers, skrock's iterations (default 100)\n"
    "  --dps-step likelihood|normalised  dps: the likelihood score (default) or the step as published,\n"
    "                          zeta J A^T (y - A m) / |y - A m|\n"
    "  --guidance-scale G      dps, pigdm and tmpd: guidance multiplier, the normalised step's zeta (default 1)\n"
    "  --diffpir-zeta Z        diffpir: share of fresh noise in the re-noising, in [0, 1] (default 0.1)\n"
    "  --diffpir-lambda L      diffpir: rho_k = L sigma_y^2 a_k^2 / s_k^2 of the proximal step (default 7)\n"
    "  --skrock-stages S       skrock: stages per iteration, 2..200 (default 10)\n"
    "  --skrock-eta E          skrock: damping, in (0, 1] (default 0.05)\n"
    "  --skrock-step-fraction F  skrock: step as a fraction of the stability bound, in (0, 1] (default 0.005)\n"
    "  --ddrm-eta E            ddrm: eta in [0, 1] (default 0.85)\n"
    "  --ddrm-eta-b E          ddrm: eta_b in [0, 1] (default 1)\n"
    "  --dcps-blocks L         dcps: blocks of the time grid, 1..steps (default 4)\n"
    "  --dcps-langevin-steps M dcps: tamed ULA steps per block, 0..2^20 (default 50)\n"
    "  --dcps-langevin-step G  dcps: Langevin step, > 0 (default 1e-3)\n"
    "  (each of these may also be given in the problem file's sampler section, with '_' for '-'; the command line\n"
    "   wins)\n"
    "  --samples N             alias of --particles (the exact sampler's sample count)\n"
    "  --executor auto|cuda|cpu  where the sampler runs, the exact one included (default auto)\n"
    "  --seed S                random seed (default 1)\n"
    "  --out FILE.npy          write the samples (float32, N x d)\n"
    "  --report FILE.json      write the JSON report\n"
    "  --plot FILE.svg         write an SVG of the first two coordinates over exact posterior samples\n"
    "  --ess-plot FILE.svg     smc: write an SVG of ESS / N against the step (resamplings show as jumps back to 1;\n"
    "                          the resampling threshold dashed)\n"
    "SMC settings (defaults: the library's guided_options):\n"
    "  --potential-scale X     intermediate potentials' spread c = X trace(A A^T) / d_y (default 4)\n"
    "  --resampling NAME       systematic (default), stratified, residual, multinomial, metropolis, rejection\n"
    "  --ess-threshold T       resample when ESS < T N (default 0.5)\n"
    "  --time-grid NAME        vp_linear grid from t = 1 to 0: uniform (default) or quadratic\n"
    "  --ddim-eta E            DDIM kernels with stochasticity E in [0, 1] instead of DDPM\n"
    "  --potentials NAME       linear (default) or moment: N(y; A m(x), sigma_y^2 I + A Cov(x0|x) A^T) from the\n"
    "                          denoiser and its Jacobian (d_y <= 8)\n"
    "  --quiet                 print nothing on success (and no progress line)\n"
    "A progress line (elapsed time: the run is one library call) is drawn on stderr when it is a terminal.\n"
    "Exit status: 0 success, 1 bad input or failed run, 2 bad command line.\n";

std::string fmt(double v, int digits = 6) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

/// Command-line options as flag -> value ("" for switches), with the order kept for error messages.
struct options {
  std::map<std::string, std::string> values;
  bool has(const std::string& f) const { return values.count(f) != 0; }
  const std::string& get(const std::string& f) const { return values.at(f); }
};

options parse_options(int argc, char** argv, int first, const char* usage, const std::vector<std::string>& with_value,
                      const std::vector<std::string>& switches) {
  options o;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") print_and_exit(usage);
    if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
      if (o.has(a)) throw usage_error(a + ": given twice");
      o.values[a] = "";
    } else if (std::find(with_value.begin(), with_value.end(), a) != with_value.end()) {
      if (i + 1 >= argc) throw usage_error(a + ": missing value");
      if (o.has(a)) throw usage_error(a + ": given twice");
      o.values[a] = argv[++i];
    } else {
      throw usage_error("unknown option '" + a + "' (see diffsample " + std::string(argv[first - 1]) + " --help)");
    }
  }
  return o;
}

std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str() || *end != '\0' || v < min_value)
    throw usage_error(flag + ": expected an integer >= " + std::to_string(min_value) + ", got '" + text + "'");
  return v;
}

/// --steps: an integer in [min_value, 2^24] (the library's limit on steps).
std::int64_t to_steps(const std::string& text, std::int64_t min_value) {
  const std::int64_t v = to_int("--steps", text, min_value);
  if (v > max_steps) throw usage_error("--steps: at most 2^24 (16777216), got " + text);
  return v;
}

double to_double(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(v))
    throw usage_error(flag + ": expected a finite number, got '" + text + "'");
  return v;
}

/// Parses a name given on the command line with the library's parser: an unknown name is a bad command line.
template <class Parse>
auto parse_flag(const std::string& flag, const std::string& text, Parse parse) {
  try {
    return parse(text);
  } catch (const ds::invalid_argument& e) {
    const std::string m = e.what();  // the library's "executor: unknown name ..." without its own field name
    const auto colon = m.find(": ");
    throw usage_error(flag + ": " + (colon == std::string::npos ? m : m.substr(colon + 2)));
  }
}

/// Checks the outputs named by @p flags before any work: none may name an input file of @p file or another output
/// (by file identity), their folders must be writable, and an existing target must be a regular file.
void check_outputs(output_set& out, const options& o, const std::vector<std::string>& flags,
                   const problem* file = nullptr) {
  if (file)
    for (std::size_t i = 0; i < file->files.size(); ++i)
      out.add_input(file->files[i], i == 0 ? "problem file " + file->files[i] : "array file " + file->files[i]);
  for (const auto& f : flags)
    if (o.has(f)) out.add_output(f, o.get(f));
}

/// Stages a float32 n x d .npy image for the output of @p flag (header and data written straight from @p x).
void stage_npy(output_set& out, const std::string& flag, const float* x, std::int64_t n, std::int64_t d) {
  const std::vector<unsigned char> header = npy::encode_header_f32(n, d);
  out.stage(flag, {{header.data(), header.size()}, {x, std::size_t(n * d) * sizeof(float)}});
}

/// Stages @p text for the output of @p flag.
void stage_text(output_set& out, const std::string& flag, const std::string& text) {
  out.stage(flag, {{text.data(), text.size()}});
}


void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw ds::error(std::string(what) + ": " + cudaGetErrorString(status));
}

/// A device buffer freed on scope exit.
template <class T>
struct device_buffer {
  T* p = nullptr;
  explicit device_buffer(std::int64_t count) {
    check(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::int64_t>(count, 1) * sizeof(T)), "cudaMalloc");
  }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

/// The executor that runs: automatic resolved, cuda refused without a GPU. @p source names where the setting came
/// from in the message ("--executor cuda", or the problem file's field).
ds::executor resolve(ds::executor e, const std::string& source = "--executor cuda") {
  if (e == ds::executor::automatic) return ds::cuda_available() ? ds::executor::cuda : ds::executor::cpu;
  if (e == ds::executor::cuda && !ds::cuda_available())
    throw input_error(source + ": no GPU is available (" + ds::cuda_unavailable_reason() + ")");
  return e;
}

/// Where an executor setting came from: the command line, else the problem file's sampler.executor.
std::string executor_source(const options& o, const problem& file) {
  if (o.has("--executor")) return "--executor " + o.get("--executor");
  if (file.sampler.executor) return file.path + ": sampler.executor: '" + *file.sampler.executor + "'";
  return "--executor auto";
}

std::string executor_text(ds::executor e) {
  return e == ds::executor::cpu ? "cpu (" + std::to_string(ds::cpu_threads()) + " threads)" : ds::to_string(e);
}

bool is_langevin(const std::string& name) { return name == "ula" || name == "mala" || name == "tamed_ula"; }

/// Everything a sampler run needs, after merging defaults, the problem file and the command line.
struct run_settings {
  std::string sampler = "mala";
  ds::executor exec = ds::executor::automatic;
  std::int64_t chains = -1, steps = -1, measurements = 4;
  double eta = 0, sigma = 1, step_size = -1;
  std::string schedule, time_grid;
  std::optional<double> t_start, t_end;
  std::vector<double> alpha_bar;
  bool final_denoise = false;
  std::uint64_t seed = 1;
};

ds::noise_schedule make_schedule(const run_settings& s, ds::diffusion_sampler sampler) {
  std::string name = s.schedule;
  if (name.empty())
    name = sampler == ds::diffusion_sampler::stochastic_localization ? "stochastic_localization" : "vp_linear";
  ds::noise_schedule sched;
  switch (ds::parse_schedule_kind(name)) {
    case ds::schedule_kind::vp_linear:
      sched = ds::noise_schedule::vp_linear();
      break;
    case ds::schedule_kind::vp_cosine:
      sched = ds::noise_schedule::vp_cosine();
      break;
    case ds::schedule_kind::vp_table:
      if (s.alpha_bar.empty()) throw input_error("schedule vp_table needs sampler.alpha_bar in a problem file");
      sched = ds::noise_schedule::vp_table(s.alpha_bar);
      break;
    case ds::schedule_kind::variance_exploding:
      sched = ds::noise_schedule::variance_exploding();
      break;
    case ds::schedule_kind::ornstein_uhlenbeck:
      sched = ds::noise_schedule::ornstein_uhlenbeck();
      break;
    case ds::schedule_kind::linear_interpolant:
      sched = ds::noise_schedule::linear_interpolant();
      break;
    case ds::schedule_kind::stochastic_localization:
      sched = ds::noise_schedule::stochastic_localization();
      break;
  }
  if (!s.time_grid.empty() || s.t_start || s.t_end) {
    const ds::time_grid g = s.time_grid.empty() ? sched.grid : ds::parse_time_grid(s.time_grid);
    if (g == ds::time_grid::custom) throw usage_error("time grid 'custom' is not available from the program");
    sched.with_grid(g, s.t_start.value_or(sched.t_start), s.t_end.value_or(sched.t_end));
  }
  return sched;
}

/// Result of one sampler run: samples on the host and timings.
struct run_result {
  std::vector<float> samples;
  ds::executor ran = ds::executor::cpu;
  double seconds = 0;
  double acceptance = -1;  // MALA only
  std::int64_t total_steps = 0;
};

/// Calls body(first, count) for @p chunks consecutive slices of n chains (sizes differing by at most one), then
/// redraws @p bar (may be null) with the chains done.
template <class Body>
void for_each_chunk(std::int64_t n, std::int64_t chunks, progress* bar, Body body) {
  chunks = std::max<std::int64_t>(1, std::min(chunks, n));
  std::int64_t first = 0;
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t count = n / chunks + (c < n % chunks ? 1 : 0);
    body(first, count);
    first += count;
    if (bar) bar->update(first);
  }
}

/// Runs the sampler of @p s on @p target with n chains; Langevin chains start from N(mean, var I) of the prior.
/// With @p chunks > 1 the chains run as that many consecutive calls over slices of the chains (first_chain set to
/// each slice's first chain), redrawing @p bar between calls: every chain draws from the Philox stream
/// (seed, chain, step) whichever call runs it, so the samples are bit-identical to one call.
run_result run_sampler(const ds::gaussian_mixture& target, const run_settings& s, std::int64_t n,
                       std::int64_t chunks = 1, progress* bar = nullptr) {
  const std::int64_t d = target.dim();
  const ds::executor where = resolve(s.exec);
  run_result r;
  r.samples.resize(std::size_t(n * d));
  if (is_langevin(s.sampler)) {
    // A broad start: the prior's mean, and its largest per-coordinate variance in every coordinate.
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
    const ds::gaussian_mixture start(d, {1.0}, mean, {std::max(var, 1e-12)});
    ds::langevin_options o;
    o.method = ds::parse_langevin_method(s.sampler);
    o.step_size = s.step_size > 0 ? s.step_size : 0.03;
    o.steps = s.steps >= 0 ? s.steps : 1000;
    o.seed = s.seed;
    r.total_steps = o.steps;
    std::vector<std::int64_t> accepted(n);
    if (where == ds::executor::cuda) {
      device_buffer<float> x(n * d);
      device_buffer<std::int64_t> acc(n);
      start.sample(x.p, n, {}, s.seed + 1000, nullptr, 0, {where});
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      const auto t0 = std::chrono::steady_clock::now();
      for_each_chunk(n, chunks, bar, [&](std::int64_t first, std::int64_t count) {
        ds::langevin_options part = o;
        part.first_chain = std::uint64_t(first);
        r.ran = ds::langevin(target, x.p + first * d, count, part, {nullptr, acc.p + first}, {where}).ran;
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      });
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      check(cudaMemcpy(r.samples.data(), x.p, n * d * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
      check(cudaMemcpy(accepted.data(), acc.p, n * sizeof(std::int64_t), cudaMemcpyDeviceToHost), "cudaMemcpy");
    } else {
      start.sample(r.samples.data(), n, {}, s.seed + 1000, nullptr, 0, {where});
      const auto t0 = std::chrono::steady_clock::now();
      for_each_chunk(n, chunks, bar, [&](std::int64_t first, std::int64_t count) {
        ds::langevin_options part = o;
        part.first_chain = std::uint64_t(first);
        r.ran = ds::langevin(target, r.samples.data() + first * d, count, part, {nullptr, accepted.data() + first},
                             {where})
                    .ran;
      });
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (o.method == ds::langevin_method::mala) {
      double a = 0;
      for (auto c : accepted) a += double(c);
      r.acceptance = o.steps > 0 ? a / (double(n) * double(o.steps)) : 0;
    }
    return r;
  }
  ds::diffusion_options o;
  o.sampler = ds::parse_diffusion_sampler(s.sampler);
  o.schedule = make_schedule(s, o.sampler);
  o.steps = s.steps >= 0 ? s.steps : 100;
  o.eta = s.eta;
  o.sigma = s.sigma;
  o.step_size = s.step_size > 0 ? s.step_size : 0.1;
  o.measurements = s.measurements;
  o.final_denoise = s.final_denoise;
  o.seed = s.seed;
  if (where == ds::executor::cuda) {
    device_buffer<float> x(n * d);
    const auto t0 = std::chrono::steady_clock::now();
    for_each_chunk(n, chunks, bar, [&](std::int64_t first, std::int64_t count) {
      ds::diffusion_options part = o;
      part.first_chain = std::uint64_t(first);
      const ds::diffusion_report rep = ds::diffusion(target, x.p + first * d, count, part, {}, {where});
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      r.ran = rep.ran;
      r.total_steps = rep.total_steps;
    });
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    check(cudaMemcpy(r.samples.data(), x.p, n * d * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    for_each_chunk(n, chunks, bar, [&](std::int64_t first, std::int64_t count) {
      ds::diffusion_options part = o;
      part.first_chain = std::uint64_t(first);
      const ds::diffusion_report rep = ds::diffusion(target, r.samples.data() + first * d, count, part, {}, {where});
      r.ran = rep.ran;
      r.total_steps = rep.total_steps;
    });
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return r;
}

/// Component shares: the library's recovered component weights (ds::component_weights, the average posterior
/// responsibility of each component over the samples); the error of component k is |share_k - w_k| in standard
/// errors sqrt(w_k (1 - w_k) / m), which bounds the standard error of an average responsibility. Returns the maximum.
struct share_result {
  double max_z = 0;
  std::int64_t worst = 0;
  std::vector<double> shares;
};

share_result component_shares(const ds::gaussian_mixture& p, const float* x, std::int64_t m) {
  const std::int64_t K = p.components();
  const auto& w = p.weights();
  share_result r;
  r.shares = ds::component_weights(p, x, m);
  for (std::int64_t k = 0; k < K; ++k) {
    const double se = std::sqrt(std::max(w[k] * (1 - w[k]), 1e-300) / double(m));
    const double z = std::fabs(r.shares[k] - w[k]) / se;
    if (k == 0 || z > r.max_z) r.max_z = z, r.worst = k;
  }
  return r;
}

/// An SVG scatter plot of the first two coordinates: reference points (grey), samples (blue), and optionally the
/// 1- and 2-standard-deviation ellipses of each component of a mixture (red), over a square frame.
/// A component's 2-D marginal in the plotted coordinates: mean and covariance [[xx, xy], [xy, yy]].
struct component_2d {
  double x, y, xx, xy, yy;
};

/// The 2-D marginals of a mixture's components (coordinates 0 and 1, or 0 and 0 in one dimension).
std::vector<component_2d> marginals(const ds::gaussian_mixture& m) {
  const std::int64_t d = m.dim(), cy = d >= 2 ? 1 : 0;
  const auto& mu = m.means();
  const auto& v = m.variances();
  std::vector<component_2d> c;
  for (std::int64_t k = 0; k < m.components(); ++k) {
    const double v0 = m.isotropic() ? v[k] : v[k * d], v1 = m.isotropic() ? v[k] : v[k * d + cy];
    c.push_back({mu[k * d], mu[k * d + cy], v0, d >= 2 ? 0.0 : v0, v1});
  }
  return c;
}

/// The 2-D marginals of the posterior components whose weight is at least 1e-3.
std::vector<component_2d> marginals(const ds::mixture_posterior& p) {
  const std::int64_t d = p.dim(), cy = d >= 2 ? 1 : 0;
  std::vector<component_2d> c;
  for (std::int64_t k = 0; k < p.components(); ++k) {
    if (p.weights()[k] < 1e-3) continue;
    const double* S = p.covariances().data() + k * d * d;
    const double* m = p.means().data() + k * d;
    c.push_back({m[0], m[cy], S[0], S[cy], S[cy * d + cy]});
  }
  return c;
}

/// Round tick values in [lo, hi]: multiples of 1, 2 or 5 times a power of ten, 4 to 10 of them.
std::vector<double> round_ticks(double lo, double hi) {
  std::vector<double> ticks;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  const double raw = (hi - lo) / 5, power = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / power < 1.5 ? power : raw / power < 3.5 ? 2 * power : raw / power < 7.5 ? 5 * power
                                                                                                     : 10 * power;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step)
    ticks.push_back(std::fabs(t) < 1e-9 * step ? 0.0 : t);
  return ticks;
}

std::string svg_plot(const std::string& title, const float* ref, std::int64_t n_ref, const float* x, std::int64_t n,
                     std::int64_t d, const std::vector<component_2d>& components, const char* x_label,
                     const char* ref_label) {
  const int size = 640, pad = 64;
  const std::int64_t shown = 3000;
  const int cy = d >= 2 ? 1 : 0;
  double lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
  auto extend = [&](const float* p, std::int64_t count) {
    for (std::int64_t i = 0; i < std::min(count, shown); ++i) {
      const double a = p[i * d], b = p[i * d + cy];
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      lo0 = std::min(lo0, a), hi0 = std::max(hi0, a), lo1 = std::min(lo1, b), hi1 = std::max(hi1, b);
    }
  };
  extend(ref ? ref : x, ref ? n_ref : n);  // the frame follows the reference so that outliers do not shrink it
  if (!std::isfinite(lo0)) lo0 = lo1 = -1, hi0 = hi1 = 1;
  const double c0 = 0.5 * (lo0 + hi0), c1 = 0.5 * (lo1 + hi1);
  const double half = 0.55 * std::max({hi0 - lo0, hi1 - lo1, 1e-6});
  const double scale = (size - 2 * pad) / (2 * half);
  auto px = [&](double a) { return pad + (a - (c0 - half)) * scale; };
  auto py = [&](double b) { return size - pad - (b - (c1 - half)) * scale; };
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << size << "\" height=\"" << size + 24
    << "\" viewBox=\"0 0 " << size << ' ' << size + 24 << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << size / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n"
    << "<rect x=\"" << pad << "\" y=\"" << pad << "\" width=\"" << size - 2 * pad << "\" height=\"" << size - 2 * pad
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<clipPath id=\"frame\"><rect x=\"" << pad << "\" y=\"" << pad << "\" width=\"" << size - 2 * pad
    << "\" height=\"" << size - 2 * pad << "\"/></clipPath>\n<g clip-path=\"url(#frame)\">\n";
  auto dots = [&](const float* p, std::int64_t count, const char* colour) {
    s << "<g fill=\"" << colour << "\" fill-opacity=\"0.45\">\n";
    for (std::int64_t i = 0; i < std::min(count, shown); ++i) {
      const double a = p[i * d], b = p[i * d + cy];
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      s << "<circle cx=\"" << px(a) << "\" cy=\"" << py(b) << "\" r=\"1.6\"/>\n";
    }
    s << "</g>\n";
  };
  if (ref) dots(ref, n_ref, "#9a9a9a");
  dots(x, n, "#1f5fbf");
  if (!components.empty()) {
    // The 1- and 2-standard-deviation ellipses of each component's 2-D marginal (principal axes of its covariance;
    // the angle is negated because the SVG y axis points down).
    s << "<g fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1\">\n";
    for (std::size_t k = 0; k < std::min<std::size_t>(components.size(), 400); ++k) {
      const component_2d& c = components[k];
      const double mid = 0.5 * (c.xx + c.yy), half_diff = 0.5 * (c.xx - c.yy);
      const double root = std::sqrt(half_diff * half_diff + c.xy * c.xy);
      const double l1 = std::max(mid + root, 0.0), l2 = std::max(mid - root, 0.0);
      const double angle = -0.5 * std::atan2(2 * c.xy, c.xx - c.yy) * 180.0 / M_PI;
      for (int r = 1; r <= 2; ++r)
        s << "<ellipse cx=\"" << px(c.x) << "\" cy=\"" << py(c.y) << "\" rx=\"" << r * std::sqrt(l1) * scale
          << "\" ry=\"" << r * std::sqrt(l2) * scale << "\" transform=\"rotate(" << angle << ' ' << px(c.x) << ' '
          << py(c.y) << ")\"/>\n";
    }
    s << "</g>\n";
  }
  s << "</g>\n";
  s.precision(3);
  // Axis ticks at round values (1, 2 or 5 times a power of ten) inside the frame.
  s.precision(1);
  for (double t : round_ticks(c0 - half, c0 + half))
    s << "<line x1=\"" << px(t) << "\" y1=\"" << size - pad << "\" x2=\"" << px(t) << "\" y2=\"" << size - pad + 5
      << "\" stroke=\"black\"/><text x=\"" << px(t) << "\" y=\"" << size - pad + 18 << "\" text-anchor=\"middle\">"
      << fmt(t, 4) << "</text>\n";
  for (double t : round_ticks(c1 - half, c1 + half))
    s << "<line x1=\"" << pad - 5 << "\" y1=\"" << py(t) << "\" x2=\"" << pad << "\" y2=\"" << py(t)
      << "\" stroke=\"black\"/><text x=\"" << pad - 8 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">"
      << fmt(t, 4) << "</text>\n";
  s << "<text x=\"" << size / 2 << "\" y=\"" << size - 12 << "\" text-anchor=\"middle\">x[0]</text>\n"
    << "<text x=\"14\" y=\"" << size / 2 << "\" transform=\"rotate(-90 14 " << size / 2
    << ")\" text-anchor=\"middle\">x[" << cy << "]</text>\n";
  // Legend.
  int ly = size + 10;
  s << "<circle cx=\"" << pad << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"#1f5fbf\"/><text x=\"" << pad + 8
    << "\" y=\"" << ly << "\">" << x_label << "</text>\n";
  if (ref)
    s << "<circle cx=\"" << pad + 220 << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"#9a9a9a\"/><text x=\"" << pad + 228
      << "\" y=\"" << ly << "\">" << ref_label << "</text>\n";
  if (!components.empty())
    s << "<ellipse cx=\"" << pad + 400 << "\" cy=\"" << ly - 4
      << "\" rx=\"6\" ry=\"4\" fill=\"none\" stroke=\"#c0392b\"/>"
      << "<text x=\"" << pad + 410 << "\" y=\"" << ly << "\">components: 1 and 2 sd</text>\n";
  s << "</svg>\n";
  return s.str();
}

/// An SVG line plot of SMC effective sample sizes: ESS / N against the step, one polyline per problem (the first 8
/// of a B x (steps + 1) trace), with the resampling threshold dashed. A resampling shows as a jump back up to 1.
/// Traces longer than twice the plot's width keep the lowest and highest value of each pixel column.
std::string svg_ess_plot(const std::string& title, const std::vector<float>& trace, std::int64_t problems,
                         std::int64_t steps, std::int64_t particles, double threshold) {
  const int width = 640, height = 400, left = 64, right = 24, top = 40, bottom = 72;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  const std::int64_t shown = std::min<std::int64_t>(problems, 8);
  const char* colours[8] = {"#1f5fbf", "#c0392b", "#27ae60", "#8e44ad", "#d68910", "#17a589", "#7f8c8d", "#2c3e50"};
  auto px = [&](double step) { return left + (steps > 0 ? step / double(steps) : 0.0) * plot_w; };
  auto py = [&](double r) { return top + (1 - std::clamp(r, 0.0, 1.0)) * plot_h; };
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n";
  // Grid and ticks: ESS / N at 0, 0.25, ..., 1; steps at fifths of the run.
  s << "<g stroke=\"#e3e3e3\">\n";
  for (int i = 0; i <= 4; ++i)
    s << "<line x1=\"" << left << "\" y1=\"" << py(i / 4.0) << "\" x2=\"" << left + plot_w << "\" y2=\"" << py(i / 4.0)
      << "\"/>\n";
  s << "</g>\n";
  for (int i = 0; i <= 4; ++i)
    s << "<text x=\"" << left - 6 << "\" y=\"" << py(i / 4.0) + 4 << "\" text-anchor=\"end\">" << fmt(i / 4.0, 3)
      << "</text>\n";
  for (int i = 0; i <= 5; ++i) {
    const std::int64_t step = steps * i / 5;
    s << "<line x1=\"" << px(double(step)) << "\" y1=\"" << top + plot_h << "\" x2=\"" << px(double(step)) << "\" y2=\""
      << top + plot_h + 5 << "\" stroke=\"black\"/>\n"
      << "<text x=\"" << px(double(step)) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">" << step
      << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 36 << "\" text-anchor=\"middle\">step</text>\n"
    << "<text x=\"16\" y=\"" << top + plot_h / 2 << "\" transform=\"rotate(-90 16 " << top + plot_h / 2
    << ")\" text-anchor=\"middle\">ESS / N (N = " << particles << ")</text>\n";
  // The resampling threshold.
  if (threshold > 0 && threshold <= 1)
    s << "<line x1=\"" << left << "\" y1=\"" << py(threshold) << "\" x2=\"" << left + plot_w << "\" y2=\""
      << py(threshold) << "\" stroke=\"black\" stroke-width=\"1\" stroke-dasharray=\"6 4\"/>\n";
  // One polyline per problem.
  const std::int64_t points = steps + 1;
  for (std::int64_t b = 0; b < shown; ++b) {
    const float* e = trace.data() + b * points;
    s << "<polyline fill=\"none\" stroke=\"" << colours[b] << "\" stroke-width=\"1.5\" stroke-linejoin=\"round\" "
      << "points=\"";
    auto point = [&](std::int64_t k) { s << px(double(k)) << ',' << py(double(e[k]) / double(particles)) << ' '; };
    if (points <= 2 * plot_w) {
      for (std::int64_t k = 0; k < points; ++k) point(k);
    } else {
      for (int c = 0; c < plot_w; ++c) {
        const std::int64_t lo = points * c / plot_w, hi = points * (c + 1) / plot_w;
        std::int64_t kmin = lo, kmax = lo;
        for (std::int64_t k = lo; k < hi; ++k) {
          if (e[k] < e[kmin]) kmin = k;
          if (e[k] > e[kmax]) kmax = k;
        }
        point(std::min(kmin, kmax));
        if (kmin != kmax) point(std::max(kmin, kmax));
      }
    }
    s << "\"/>\n";
  }
  // Legend, below the axis label.
  const int ly = height - 14;
  int lx = left;
  for (std::int64_t b = 0; b < shown; ++b) {
    const std::string name = problems == 1 ? "ESS / N" : "problem " + std::to_string(b + 1);
    s << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 18 << "\" y2=\"" << ly - 4 << "\" stroke=\""
      << colours[b] << "\" stroke-width=\"2\"/><text x=\"" << lx + 22 << "\" y=\"" << ly << "\">" << name
      << "</text>\n";
    lx += 40 + 7 * int(name.size());
  }
  if (problems > shown) {
    s << "<text x=\"" << lx << "\" y=\"" << ly << "\">(first " << shown << " of " << problems << ")</text>\n";
    lx += 110;
  }
  if (threshold > 0 && threshold <= 1)
    s << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly - 4
      << "\" stroke=\"black\" stroke-dasharray=\"6 4\"/><text x=\"" << lx + 28 << "\" y=\"" << ly
      << "\">resampling threshold " << fmt(threshold, 3) << " (below it the particles are resampled)</text>\n";
  s << "</svg>\n";
  return s.str();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

json prior_json(const prior_spec& p, const std::string& source) {
  json j;
  j["source"] = source;
  j["description"] = p.description;
  j["dim"] = p.dim;
  j["components"] = p.weights.size();
  j["isotropic"] = p.variances.size() == p.weights.size();
  return j;
}

}  // namespace

void check_memory(std::int64_t n, std::int64_t d, int copies, const std::string& what) {
  const long double bytes = (long double)n * (long double)d * 4.0L * copies;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const long double total = pages > 0 && page > 0 ? (long double)pages * page : 0;
  if (bytes > 9.0e18L || (total > 0 && bytes > total * 0.8L))
    throw input_error(what + ": " + std::to_string(n) + " x " + std::to_string(d) + " samples need " +
                      fmt(double(bytes / 1073741824.0L), 4) + " GiB of host memory, more than this machine's " +
                      fmt(double(total / 1073741824.0L), 4) + " GiB allows");
}

int run_sample(int argc, char** argv, int first) {
  if (wants_binary_sample(argc, argv, first)) return run_sample_binary(argc, argv, first);
  const options o =
      parse_options(argc, argv, first, sample_usage,
                    {"--problem",   "--dim",          "--grid",      "--spacing",  "--variance", "--sampler", "--steps",
                     "--chains",    "--schedule",     "--time-grid", "--t-start",  "--t-end",    "--eta",     "--sigma",
                     "--step-size", "--measurements", "--seed",      "--executor", "--out",      "--report",  "--plot"},
                    {"--final-denoise", "--quiet"});
  const bool quiet = o.has("--quiet");

  // Prior and settings: the problem file, then the command line over it.
  problem file;
  if (o.has("--problem")) file = read_problem(o.get("--problem"));
  const bool grid_flags = o.has("--dim") || o.has("--grid") || o.has("--spacing") || o.has("--variance");
  if (file.prior && grid_flags)
    throw usage_error("--dim/--grid/--spacing/--variance conflict with the prior of " + file.path +
                      " (the built-in grid prior is used only without one)");
  prior_spec prior;
  std::string source = "built-in";
  if (file.prior) {
    prior = *file.prior;
    source = file.path;
  } else {
    const std::int64_t dim = o.has("--dim") ? to_int("--dim", o.get("--dim"), 1) : 2;
    const std::int64_t g = o.has("--grid") ? to_int("--grid", o.get("--grid"), 1) : 5;
    if (g > 1000) throw usage_error("--grid: at most 1000, got " + std::to_string(g));
    prior = grid_prior(dim, int(g), o.has("--spacing") ? to_double("--spacing", o.get("--spacing")) : 2.0,
                       o.has("--variance") ? to_double("--variance", o.get("--variance")) : 0.25);
  }

  run_settings s;
  const sampler_spec& f = file.sampler;
  if (f.name) s.sampler = *f.name;
  if (o.has("--sampler")) s.sampler = o.get("--sampler");
  if (!is_langevin(s.sampler)) {
    try {
      s.sampler = ds::to_string(ds::parse_diffusion_sampler(s.sampler));
    } catch (const ds::invalid_argument&) {
      throw usage_error("sampler '" + s.sampler +
                        "' is unknown (expected ula, mala, tamed_ula, ddpm, ddim, reverse_sde, ode_euler, ode_heun, "
                        "stochastic_localization, walk_jump or sequential_measurements)");
    }
  }
  const bool langevin = is_langevin(s.sampler);
  const bool jump = s.sampler == "walk_jump" || s.sampler == "sequential_measurements";
  // Options that the chosen sampler does not use are refused rather than silently ignored.
  auto refuse = [&](const char* flag, bool unused) {
    if (unused && o.has(flag)) throw usage_error(std::string(flag) + " does not apply to the sampler " + s.sampler);
  };
  for (const char* flag : {"--schedule", "--time-grid", "--t-start", "--t-end", "--final-denoise"})
    refuse(flag, langevin || jump);
  refuse("--eta", s.sampler != "ddim");
  refuse("--sigma", !jump);
  refuse("--measurements", s.sampler != "sequential_measurements");
  refuse("--step-size", !langevin && !jump);

  s.exec = o.has("--executor") ? parse_flag("--executor", o.get("--executor"), ds::parse_executor)
                               : ds::parse_executor(f.executor.value_or("auto"));  // checked by the reader
  if (f.steps) s.steps = *f.steps;
  if (o.has("--steps")) s.steps = to_steps(o.get("--steps"), 0);
  if (f.chains) s.chains = *f.chains;
  if (o.has("--chains")) s.chains = to_int("--chains", o.get("--chains"), 1);
  if (f.measurements) s.measurements = *f.measurements;
  if (o.has("--measurements")) s.measurements = to_int("--measurements", o.get("--measurements"), 1);
  if (o.has("--measurements") && s.measurements > (std::int64_t(1) << 20))
    throw usage_error("--measurements: at most 2^20, got " + o.get("--measurements"));
  if (f.eta) s.eta = *f.eta;
  if (o.has("--eta")) s.eta = to_double("--eta", o.get("--eta"));
  if (o.has("--eta") && !(s.eta >= 0 && s.eta <= 1)) throw usage_error("--eta: must be in [0, 1], got " + o.get("--eta"));
  if (f.sigma) s.sigma = *f.sigma;
  if (o.has("--sigma")) s.sigma = to_double("--sigma", o.get("--sigma"));
  if (o.has("--sigma") && !(s.sigma > 0)) throw usage_error("--sigma: must be > 0, got " + o.get("--sigma"));
  if (f.step_size) s.step_size = *f.step_size;
  if (o.has("--step-size")) s.step_size = to_double("--step-size", o.get("--step-size"));
  if (o.has("--step-size") && !(s.step_size > 0)) throw usage_error("--step-size: must be > 0");
  if (f.schedule) s.schedule = *f.schedule;
  if (o.has("--schedule")) s.schedule = o.get("--schedule");
  if (o.has("--schedule")) parse_flag("--schedule", s.schedule, ds::parse_schedule_kind);
  if (f.time_grid) s.time_grid = *f.time_grid;
  if (o.has("--time-grid")) s.time_grid = o.get("--time-grid");
  if (o.has("--time-grid") && parse_flag("--time-grid", s.time_grid, ds::parse_time_grid) == ds::time_grid::custom)
    throw usage_error("--time-grid: 'custom' is not available from the program (uniform, quadratic or geometric)");
  s.t_start = f.t_start;
  s.t_end = f.t_end;
  if (o.has("--t-start")) s.t_start = to_double("--t-start", o.get("--t-start"));
  if (o.has("--t-end")) s.t_end = to_double("--t-end", o.get("--t-end"));
  for (const char* flag : {"--t-start", "--t-end"})
    if (o.has(flag) && to_double(flag, o.get(flag)) < 0) throw usage_error(std::string(flag) + ": must be >= 0, got " + o.get(flag));
  if (f.alpha_bar) s.alpha_bar = *f.alpha_bar;
  s.final_denoise = f.final_denoise.value_or(false) || o.has("--final-denoise");
  if (f.seed) s.seed = *f.seed;
  if (o.has("--seed")) s.seed = std::uint64_t(to_int("--seed", o.get("--seed"), 0));

  output_set outputs;
  check_outputs(outputs, o, {"--out", "--report", "--plot"}, &file);
  const ds::executor where = resolve(s.exec, executor_source(o, file));
  s.exec = where;
  const std::int64_t n = s.chains > 0 ? s.chains : (where == ds::executor::cuda ? (std::int64_t(1) << 20) : 16384);
  const std::int64_t d = prior.dim;
  check_memory(n, d, 1, "--chains");

  const ds::gaussian_mixture target(d, prior.weights, prior.means, prior.variances);
  // The schedule from the merged settings, built before the run: a setting the library refuses is reported with
  // where it came from (the problem file's sampler section, exit status 1, or the command line, 2).
  if (!langevin && !jump) {
    try {
      make_schedule(s, ds::parse_diffusion_sampler(s.sampler)).points(std::max<std::int64_t>(s.steps, 1));
    } catch (const ds::invalid_argument& e) {
      const bool from_flags =
          o.has("--schedule") || o.has("--time-grid") || o.has("--t-start") || o.has("--t-end");
      if (from_flags) throw usage_error(std::string("--schedule/--time-grid/--t-start/--t-end: ") + e.what());
      throw input_error(file.path + ": sampler: " + e.what());
    }
  }
  if (!quiet)
    std::printf("diffsample sample: %s on a %lld-D, %s (%s), %lld chains\n", s.sampler.c_str(),
                static_cast<long long>(d), prior.description.c_str(), source.c_str(), static_cast<long long>(n));
  std::fflush(stdout);
  // Progress: when the line is drawn (stderr a terminal, no --quiet) the chains run in 20 chunks, redrawing it
  // between them; DIFFSAMPLE_CHUNKS=K forces K chunks (the tests compare the samples with and without chunking).
  progress bar(n, "chains", 1.0, "chains/s", quiet);
  std::int64_t chunks = bar.on() ? 20 : 1;
  if (const char* forced = std::getenv("DIFFSAMPLE_CHUNKS")) chunks = to_int("DIFFSAMPLE_CHUNKS", forced, 1);
  const run_result r = run_sampler(target, s, n, chunks, &bar);

  // Accuracy on up to 2^15 samples against as many exact samples, beside the exact-vs-exact floor.
  const std::int64_t m = std::min<std::int64_t>(n, 1 << 15);
  std::vector<float> exact_a(std::size_t(m * d)), exact_b(std::size_t(m * d));
  target.sample(exact_a.data(), m, {}, s.seed + 2000, nullptr, 0, {ds::executor::cpu});
  target.sample(exact_b.data(), m, {}, s.seed + 3000, nullptr, 0, {ds::executor::cpu});
  std::int64_t non_finite = 0;
  for (float v : r.samples) non_finite += !std::isfinite(v);
  double sw = NAN;
  if (non_finite == 0) sw = ds::sliced_wasserstein(r.samples.data(), m, exact_a.data(), m, d, 64, s.seed);
  const double floor = ds::sliced_wasserstein(exact_b.data(), m, exact_a.data(), m, d, 64, s.seed);
  share_result shares;  // of non-finite samples: not computed, reported as null
  if (non_finite == 0) shares = component_shares(target, r.samples.data(), m);
  const share_result shares_exact = component_shares(target, exact_b.data(), m);
  const double rate = r.seconds > 0 ? double(n) * double(r.total_steps) / r.seconds : 0.0;

  if (!quiet) {
    std::printf("executor: %s\n", executor_text(r.ran).c_str());
    std::printf("throughput: %.4g chain-steps/s (%lld steps, %.3f s)\n", rate, static_cast<long long>(r.total_steps),
                r.seconds);
    if (r.acceptance >= 0) std::printf("acceptance rate: %.3f\n", r.acceptance);
    if (non_finite > 0)
      std::printf("non-finite values in the samples: %lld (the sampler diverged; try a smaller step)\n",
                  static_cast<long long>(non_finite));
    else
      std::printf("sliced W1 to exact samples: %.4f (exact-vs-exact floor %.4f; %lld samples, 64 directions)\n", sw,
                  floor, static_cast<long long>(m));
    if (non_finite == 0)
      std::printf("component shares (average responsibility): max error %.2f standard errors (component %lld; "
                  "exact samples: %.2f)\n",
                  shares.max_z, static_cast<long long>(shares.worst), shares_exact.max_z);
  }

  // Outputs last, all or none: standard output must have taken the results, then every output is written to a
  // temporary file and only then are they renamed over their targets.
  check_stdout();
  if (o.has("--out")) stage_npy(outputs, "--out", r.samples.data(), n, d);
  if (o.has("--plot"))
    stage_text(outputs, "--plot", svg_plot(s.sampler + ": " + std::to_string(n) + " chains, " + prior.description,
                                           exact_a.data(), m, r.samples.data(), n, d, marginals(target),
                                           (s.sampler + " samples").c_str(), "exact samples"));
  if (o.has("--report")) {
    json j;
    j["command"] = "sample";
    j["version"] = ds::version();
    j["date"] = utc_now();
    j["prior"] = prior_json(prior, source);
    json st;
    st["sampler"] = s.sampler;
    st["chains"] = n;
    st["steps"] = r.total_steps;
    if (langevin) {
      st["step_size"] = s.step_size > 0 ? s.step_size : 0.03;
    } else if (jump) {
      st["sigma"] = s.sigma;
      st["step_size"] = s.step_size > 0 ? s.step_size : 0.1;
      if (s.sampler == "sequential_measurements") st["measurements"] = s.measurements;
    } else {
      const ds::noise_schedule sched = make_schedule(s, ds::parse_diffusion_sampler(s.sampler));
      st["schedule"] = ds::to_string(sched.kind);
      st["time_grid"] = ds::to_string(sched.grid);
      st["t_start"] = sched.t_start;
      st["t_end"] = sched.t_end;
      if (s.sampler == "ddim") st["eta"] = s.eta;
      st["final_denoise"] = s.final_denoise;
    }
    j["settings"] = st;
    j["seed"] = s.seed;
    j["executor"] = ds::to_string(r.ran);
    if (r.ran == ds::executor::cpu) j["cpu_threads"] = ds::cpu_threads();
    j["timings"] = {{"seconds", r.seconds}, {"chain_steps_per_second", rate}};
    json acc;
    acc["samples_compared"] = m;
    acc["non_finite_values"] = non_finite;
    acc["sliced_w1"] = non_finite == 0 ? json(sw) : json(nullptr);
    acc["sliced_w1_floor"] = floor;
    acc["directions"] = 64;
    acc["component_share_max_error_se"] = non_finite == 0 ? json(shares.max_z) : json(nullptr);
    acc["component_share_worst_component"] = non_finite == 0 ? json(shares.worst) : json(nullptr);
    acc["component_share_max_error_se_exact"] = shares_exact.max_z;
    if (r.acceptance >= 0) acc["acceptance_rate"] = r.acceptance;
    j["accuracy"] = acc;
    if (o.has("--out")) j["samples_file"] = o.get("--out");
    stage_text(outputs, "--report", j.dump(2) + "\n");
  }
  outputs.commit();
  return 0;
}

int run_bench(int argc, char** argv, int first) {
  const options o = parse_options(argc, argv, first, bench_usage,
                                  {"--chains", "--steps", "--dims", "--seed", "--executor", "--report"}, {});
  output_set outputs;
  check_outputs(outputs, o, {"--report"});
  const ds::executor where =
      resolve(parse_flag("--executor", o.has("--executor") ? o.get("--executor") : "auto", ds::parse_executor));
  const bool gpu = where == ds::executor::cuda;
  const std::int64_t n = o.has("--chains") ? to_int("--chains", o.get("--chains"), 1) : (gpu ? 1 << 20 : 4096);
  const std::int64_t steps = o.has("--steps") ? to_steps(o.get("--steps"), 1) : (gpu ? 100 : 20);
  const std::uint64_t seed = o.has("--seed") ? std::uint64_t(to_int("--seed", o.get("--seed"), 0)) : 1;
  std::vector<std::int64_t> dims;
  {
    const std::string list = o.has("--dims") ? o.get("--dims") : "2,10,100";
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ',')) dims.push_back(to_int("--dims", item, 1));
    if (dims.empty()) throw usage_error("--dims: expected a comma-separated list of dimensions");
  }
  for (auto d : dims) check_memory(n, d, 2, "--chains");

  std::printf("diffsample bench: 25-component grid mixture, %lld chains x %lld steps, executor %s\n",
              static_cast<long long>(n), static_cast<long long>(steps), executor_text(where).c_str());
  const std::vector<std::string> samplers{"ula", "mala", "ddpm", "ddim", "ode_heun"};
  std::printf("%6s", "d");
  for (const auto& name : samplers) std::printf(" %12s", name.c_str());
  std::printf("   (chain-steps/s)\n");
  std::fflush(stdout);
  json rows = json::array();
  for (const auto d : dims) {
    const prior_spec p = grid_prior(d, 5, 2.0, 0.25);
    const ds::gaussian_mixture target(d, p.weights, p.means, p.variances);
    std::printf("%6lld", static_cast<long long>(d));
    json row;
    row["dim"] = d;
    for (const auto& name : samplers) {
      run_settings s;
      s.sampler = name;
      s.exec = where;
      s.seed = seed;
      s.steps = 1;
      run_sampler(target, s, std::min<std::int64_t>(n, 4096));  // warm-up
      s.steps = steps;
      const run_result r = run_sampler(target, s, n);
      const double rate = r.seconds > 0 ? double(n) * double(r.total_steps) / r.seconds : 0.0;
      std::printf(" %12.4g", rate);
      std::fflush(stdout);
      row[name] = rate;
    }
    std::printf("\n");
    rows.push_back(row);
  }
  if (o.has("--report")) {
    json j;
    j["command"] = "bench";
    j["version"] = ds::version();
    j["date"] = utc_now();
    j["executor"] = ds::to_string(where);
    if (!gpu) j["cpu_threads"] = ds::cpu_threads();
    j["chains"] = n;
    j["steps"] = steps;
    j["seed"] = seed;
    j["unit"] = "chain-steps per second";
    j["rows"] = rows;
    check_stdout();
    stage_text(outputs, "--report", j.dump(2) + "\n");
    outputs.commit();
  }
  return 0;
}

/// "dense", "mask" or "svd": how the problem file gave A.
const char* operator_kind(const problem& file) {
  return file.observation_op ? ds::to_string(file.observation_op->kind()) : "dense";
}

std::int64_t count_non_finite(const std::vector<float>& x) {
  std::int64_t bad = 0;
  for (float v : x) bad += !std::isfinite(v);
  return bad;
}

/// Runs the guided sampler of @p g for its first @p k steps only (the same grid points, as a custom grid of k + 1
/// times; every step draws from the Philox stream (seed, particle, step), so these steps are those of the full run)
/// and returns the non-finite values among the particles.
std::int64_t non_finite_after(const ds::gaussian_mixture& mixture, const ds::guided_problems& problems,
                              const ds::guided_options& g, const std::vector<ds::schedule_point>& points,
                              std::int64_t k, ds::executor where) {
  ds::guided_options h = g;
  h.steps = k;
  std::vector<double> times(std::size_t(k + 1));
  for (std::int64_t i = 0; i <= k; ++i) times[std::size_t(i)] = points[std::size_t(i)].t;
  h.schedule.with_times(times);
  const std::int64_t count = g.particles * mixture.dim();
  std::vector<float> x(static_cast<std::size_t>(count));
  ds::guided_outputs out;
  if (where == ds::executor::cuda) {
    device_buffer<float> dx(count);
    out.particles = dx.p;
    ds::guided_sample(mixture, problems, h, out, {where});
    check(cudaMemcpy(x.data(), dx.p, x.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } else {
    out.particles = x.data();
    ds::guided_sample(mixture, problems, h, out, {where});
  }
  return count_non_finite(x);
}

/// The first step after which the sampler's particles hold a non-finite value, found by bisection over runs of the
/// first k steps (a value that is not finite stays so: every step maps it to inf or NaN). @p g diverged.
std::int64_t divergence_step(const ds::gaussian_mixture& mixture, const ds::guided_problems& problems,
                             const ds::guided_options& g, ds::executor where) {
  const std::vector<ds::schedule_point> points = g.schedule.points(g.steps);
  std::int64_t lo = 1, hi = g.steps;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (non_finite_after(mixture, problems, g, points, mid, where) > 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/// The flags of the posterior samplers' settings, the sampler that reads each, and its problem-file field.
struct posterior_flag {
  const char* flag;
  const char* field;
  const char* samplers;  // the --sampler values it applies to, space separated
};
const posterior_flag posterior_flags[] = {
    {"--dps-step", "dps_step", "dps"},
    {"--guidance-scale", "guidance_scale", "dps pigdm tmpd"},
    {"--diffpir-zeta", "diffpir_zeta", "diffpir"},
    {"--diffpir-lambda", "diffpir_lambda", "diffpir"},
    {"--skrock-stages", "skrock_stages", "skrock"},
    {"--skrock-eta", "skrock_eta", "skrock"},
    {"--skrock-step-fraction", "skrock_step_fraction", "skrock"},
    {"--ddrm-eta", "ddrm_eta", "ddrm"},
    {"--ddrm-eta-b", "ddrm_eta_b", "ddrm"},
    {"--dcps-blocks", "dcps_blocks", "dcps"},
    {"--dcps-langevin-steps", "dcps_langevin_steps", "dcps"},
    {"--dcps-langevin-step", "dcps_langevin_step", "dcps"},
};

/// A number from the command line in [lo, hi] (lo excluded when lo_open), else a usage error naming the flag.
double flag_number(const options& o, const char* flag, double lo, bool lo_open, double hi) {
  const std::string& text = o.get(flag);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || !(lo_open ? v > lo : v >= lo) ||
      !(v <= hi))
    throw usage_error(std::string(flag) + ": expected a number in " + (lo_open ? "(" : "[") + fmt(lo) + ", " +
                      fmt(hi) + "], got '" + text + "'");
  return v;
}

/// The posterior samplers' settings: the problem file's sampler section, then the command line over it.
void apply_posterior_settings(const options& o, const sampler_spec& file, ds::guided_options& g) {
  if (file.dps_step) g.dps_step = ds::parse_dps_step_form(*file.dps_step);
  if (file.guidance_scale) g.guidance_scale = *file.guidance_scale;
  if (file.diffpir_zeta) g.diffpir_zeta = *file.diffpir_zeta;
  if (file.diffpir_lambda) g.diffpir_lambda = *file.diffpir_lambda;
  if (file.skrock_stages) g.skrock_stages = *file.skrock_stages;
  if (file.skrock_eta) g.skrock_eta = *file.skrock_eta;
  if (file.skrock_step_fraction) g.skrock_step_fraction = *file.skrock_step_fraction;
  if (file.ddrm_eta) g.ddrm_eta = *file.ddrm_eta;
  if (file.ddrm_eta_b) g.ddrm_eta_b = *file.ddrm_eta_b;
  if (file.dcps_blocks) g.dcps_blocks = *file.dcps_blocks;
  if (file.dcps_langevin_steps) g.dcps_langevin_steps = *file.dcps_langevin_steps;
  if (file.dcps_langevin_step) g.dcps_langevin_step = *file.dcps_langevin_step;
  if (o.has("--dps-step")) g.dps_step = parse_flag("--dps-step", o.get("--dps-step"), ds::parse_dps_step_form);
  if (o.has("--guidance-scale")) g.guidance_scale = flag_number(o, "--guidance-scale", 0, false, 1e30);
  if (o.has("--diffpir-zeta")) g.diffpir_zeta = flag_number(o, "--diffpir-zeta", 0, false, 1);
  if (o.has("--diffpir-lambda")) g.diffpir_lambda = flag_number(o, "--diffpir-lambda", 0, true, 1e12);
  if (o.has("--skrock-stages")) g.skrock_stages = to_int("--skrock-stages", o.get("--skrock-stages"), 2);
  if (g.skrock_stages > 200)
    throw usage_error("--skrock-stages: at most 200, got " + std::to_string(g.skrock_stages));
  if (o.has("--skrock-eta")) g.skrock_eta = flag_number(o, "--skrock-eta", 0, true, 1);
  if (o.has("--skrock-step-fraction")) g.skrock_step_fraction = flag_number(o, "--skrock-step-fraction", 0, true, 1);
  if (o.has("--ddrm-eta")) g.ddrm_eta = flag_number(o, "--ddrm-eta", 0, false, 1);
  if (o.has("--ddrm-eta-b")) g.ddrm_eta_b = flag_number(o, "--ddrm-eta-b", 0, false, 1);
  if (o.has("--dcps-blocks")) g.dcps_blocks = to_int("--dcps-blocks", o.get("--dcps-blocks"), 1);
  if (g.sampler == ds::guided_sampler::dcps && g.dcps_blocks > g.steps)
    throw usage_error("--dcps-blocks: at most --steps = " + std::to_string(g.steps) + ", got " +
                      std::to_string(g.dcps_blocks));
  if (o.has("--dcps-langevin-steps"))
    g.dcps_langevin_steps = to_int("--dcps-langevin-steps", o.get("--dcps-langevin-steps"), 0);
  if (g.dcps_langevin_steps > (std::int64_t(1) << 20))
    throw usage_error("--dcps-langevin-steps: at most 2^20, got " + std::to_string(g.dcps_langevin_steps));
  if (o.has("--dcps-langevin-step")) g.dcps_langevin_step = flag_number(o, "--dcps-langevin-step", 0, true, 1e30);
}

/// solve with a guided posterior sampler: runs it on the CPU or CUDA executor and scores its samples against the
/// exact posterior. Samples that are not finite (a diverged run) are counted, the step at which the sampler
/// diverged is found and printed, the distance is not computed (null in the report), and the outputs are written.
int run_guided(const options& o, const problem& file, const ds::gaussian_mixture& mixture,
               const ds::mixture_posterior& post, const std::string& method, ds::executor where, std::int64_t n,
               std::uint64_t seed, bool quiet, output_set& outputs) {
  const ds::linear_observation& obs = *file.observation;
  const std::int64_t d = mixture.dim();
  if (!(obs.sigma_y > 0))
    throw input_error(file.path + ": observation.sigma_y: the guided samplers need sigma_y > 0, got " +
                      fmt(obs.sigma_y) + " (use --sampler exact for the noiseless posterior)");
  ds::guided_problems problems;
  problems.problems = 1;
  problems.d_y = obs.d_y;
  if (file.observation_op && file.observation_op->kind() != ds::observation_kind::dense)
    problems.operators = {*file.observation_op};  // masks run as a gather/scatter
  else
    problems.A = obs.A;
  problems.y = obs.y;
  problems.sigma_y = {obs.sigma_y};
  ds::guided_options g;
  g.sampler = ds::parse_guided_sampler(method);
  g.steps = o.has("--steps") ? to_steps(o.get("--steps"), 1) : 100;
  apply_posterior_settings(o, file.sampler, g);
  g.particles = n;
  g.seed = seed;
  if (o.has("--potential-scale")) {
    const double scale = to_double("--potential-scale", o.get("--potential-scale"));
    if (!(scale > 0)) throw usage_error("--potential-scale: must be > 0, got " + o.get("--potential-scale"));
    double trace = 0;
    for (double a : obs.A) trace += a * a;
    g.potential_spread = scale * trace / double(obs.d_y);
  }
  if (o.has("--resampling"))
    g.resampling.scheme = parse_flag("--resampling", o.get("--resampling"), ds::parse_resampling_scheme);
  if (o.has("--ess-threshold")) {
    g.resampling.ess_threshold = to_double("--ess-threshold", o.get("--ess-threshold"));
    if (!(g.resampling.ess_threshold >= 0))
      throw usage_error("--ess-threshold: must be >= 0, got " + o.get("--ess-threshold"));
  }
  if (o.has("--time-grid")) {
    const ds::time_grid grid = parse_flag("--time-grid", o.get("--time-grid"), ds::parse_time_grid);
    if (grid != ds::time_grid::uniform && grid != ds::time_grid::quadratic)
      throw usage_error("--time-grid: uniform or quadratic (the grid ends at t = 0), got " + o.get("--time-grid"));
    g.schedule.with_grid(grid, g.schedule.t_start, g.schedule.t_end);
  }
  if (o.has("--ddim-eta")) {
    g.ddim = true;
    g.eta = to_double("--ddim-eta", o.get("--ddim-eta"));
    if (!(g.eta >= 0 && g.eta <= 1)) throw usage_error("--ddim-eta: must be in [0, 1], got " + o.get("--ddim-eta"));
  }
  if (o.has("--potentials"))
    g.potentials = parse_flag("--potentials", o.get("--potentials"), ds::parse_guided_potentials);
  check_memory(n, d, 6, "--particles");

  std::vector<float> x(std::size_t(n * d)), ess(std::size_t(g.steps + 1));
  double log_z = 0;
  std::int32_t resamplings = 0;
  const auto t0 = std::chrono::steady_clock::now();
  // One problem runs as one library call that cannot be split (SMC resamples across all particles at every step), so
  // the progress line is indeterminate: the elapsed time, redrawn while the call runs.
  ticker line(method + ": " + std::to_string(n) + " particles x " + std::to_string(g.steps) + " steps", quiet);
  if (where == ds::executor::cuda) {
    device_buffer<float> dx(n * d), dess(g.steps + 1);
    device_buffer<double> dz(1);
    device_buffer<std::int32_t> dr(1);
    ds::guided_outputs out;
    out.samples = dx.p;
    if (g.sampler == ds::guided_sampler::smc) {
      out.log_normaliser = dz.p;
      out.ess_trace = dess.p;
      out.resample_count = dr.p;
    }
    ds::guided_sample(mixture, problems, g, out, {where});
    check(cudaMemcpy(x.data(), dx.p, x.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    if (g.sampler == ds::guided_sampler::smc) {
      check(cudaMemcpy(ess.data(), dess.p, ess.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
      check(cudaMemcpy(&log_z, dz.p, sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy");
      check(cudaMemcpy(&resamplings, dr.p, sizeof(std::int32_t), cudaMemcpyDeviceToHost), "cudaMemcpy");
    }
  } else {
    ds::guided_outputs out;
    out.samples = x.data();
    if (g.sampler == ds::guided_sampler::smc) {
      out.log_normaliser = &log_z;
      out.ess_trace = ess.data();
      out.resample_count = &resamplings;
    }
    ds::guided_sample(mixture, problems, g, out, {where});
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  line.finish();

  // Accuracy: sliced W1 (64 directions) against as many exact posterior samples, beside the floor of two
  // independent exact sets of that size.
  const std::int64_t m = std::min<std::int64_t>(n, 1 << 15);
  std::vector<float> ref(std::size_t(m * d)), ref2(std::size_t(m * d));
  post.sample(ref.data(), m, seed + 1000);
  post.sample(ref2.data(), m, seed + 2000);
  const std::int64_t non_finite = count_non_finite(x);
  const std::int64_t diverged_at = non_finite > 0 ? divergence_step(mixture, problems, g, where) : 0;
  const double sw = non_finite == 0 ? ds::sliced_wasserstein(x.data(), m, ref.data(), m, d, 64, seed) : NAN;
  const double floor = ds::sliced_wasserstein(ref2.data(), m, ref.data(), m, d, 64, seed);
  float ess_min = 0;
  if (g.sampler == ds::guided_sampler::smc) ess_min = *std::min_element(ess.begin(), ess.end());

  if (!quiet) {
    std::printf("diffsample solve: %s on a %lld-D %s under y = A x + %g z (d_y = %lld, %s A)\n", method.c_str(),
                static_cast<long long>(d), file.prior->description.c_str(), obs.sigma_y,
                static_cast<long long>(obs.d_y), operator_kind(file));
    std::printf("executor: %s\n", executor_text(where).c_str());
    std::printf("particles x steps: %lld x %lld in %.3f s (%.4g particle-steps/s)\n", static_cast<long long>(n),
                static_cast<long long>(g.steps), seconds, seconds > 0 ? double(n) * g.steps / seconds : 0.0);
    if (g.sampler == ds::guided_sampler::smc) {
      std::printf("log p(y): SMC estimate %.5f, exact %.5f\n", log_z, post.log_evidence());
      std::printf("ESS: minimum %.1f of %lld; resamplings: %d\n", ess_min, static_cast<long long>(n), resamplings);
    }
    if (non_finite > 0)
      std::printf("%s diverged at step %lld of %lld: %lld non-finite values in the samples (its guidance is unstable for this sigma_y; smc is not)\n",
                  method.c_str(), static_cast<long long>(diverged_at), static_cast<long long>(g.steps),
                  static_cast<long long>(non_finite));
    else
      std::printf(
          "sliced W1 to exact posterior samples: %.4f (exact-vs-exact floor %.4f; %lld samples, 64 directions)\n", sw,
          floor, static_cast<long long>(m));
  }
  check_stdout();
  if (o.has("--out")) stage_npy(outputs, "--out", x.data(), n, d);
  if (o.has("--plot"))
    stage_text(outputs, "--plot", svg_plot(method + ": " + std::to_string(n) + " particles over exact posterior samples",
                                           ref.data(), m, x.data(), n, d, marginals(post),
                                           (method + " samples").c_str(),
                                           "exact posterior samples"));
  if (o.has("--ess-plot"))
    stage_text(outputs, "--ess-plot",
                 svg_ess_plot(method + ": effective sample size of " + std::to_string(n) + " particles, " +
                                  std::to_string(resamplings) + " resamplings in " + std::to_string(g.steps) + " steps",
                              ess, problems.problems, g.steps, n, g.resampling.ess_threshold));
  if (o.has("--report")) {
    json j;
    j["command"] = "solve";
    j["method"] = method;
    j["version"] = ds::version();
    j["date"] = utc_now();
    j["executor"] = ds::to_string(where);
    j["prior"] = prior_json(*file.prior, file.path);
    j["observation"] = {{"d_y", obs.d_y}, {"sigma_y", obs.sigma_y}, {"operator", operator_kind(file)}};
    j["seed"] = seed;
    j["particles"] = n;
    j["steps"] = g.steps;
    j["seconds"] = seconds;
    j["particle_steps_per_second"] = seconds > 0 ? double(n) * g.steps / seconds : 0.0;
    if (g.sampler == ds::guided_sampler::dps) {
      j["dps_step"] = ds::to_string(g.dps_step);
      j["guidance_scale"] = g.guidance_scale;
    } else if (g.sampler == ds::guided_sampler::pigdm || g.sampler == ds::guided_sampler::tmpd) {
      j["guidance_scale"] = g.guidance_scale;
    } else if (g.sampler == ds::guided_sampler::diffpir) {
      j["diffpir_zeta"] = g.diffpir_zeta;
      j["diffpir_lambda"] = g.diffpir_lambda;
    } else if (g.sampler == ds::guided_sampler::skrock) {
      j["skrock_stages"] = g.skrock_stages;
      j["skrock_eta"] = g.skrock_eta;
      j["skrock_step_fraction"] = g.skrock_step_fraction;
    } else if (g.sampler == ds::guided_sampler::ddrm) {
      j["ddrm_eta"] = g.ddrm_eta;
      j["ddrm_eta_b"] = g.ddrm_eta_b;
    } else if (g.sampler == ds::guided_sampler::dcps) {
      j["dcps_blocks"] = g.dcps_blocks;
      j["dcps_langevin_steps"] = g.dcps_langevin_steps;
      j["dcps_langevin_step"] = g.dcps_langevin_step;
    }
    j["non_finite_values"] = non_finite;
    j["diverged_at_step"] = non_finite > 0 ? json(diverged_at) : json(nullptr);
    j["sliced_w1"] = {{"value", non_finite == 0 ? json(sw) : json(nullptr)},
                      {"floor", floor},
                      {"samples", m},
                      {"directions", 64}};
    j["log_evidence_exact"] = post.log_evidence();
    if (g.sampler == ds::guided_sampler::smc) {
      j["log_evidence_estimate"] = std::isfinite(log_z) ? json(log_z) : json(nullptr);
      j["ess_trace"] = ess;
      j["resamplings"] = resamplings;
    }
    if (o.has("--out")) j["samples_file"] = o.get("--out");
    stage_text(outputs, "--report", j.dump(2) + "\n");
  }
  outputs.commit();
  return 0;
}

int run_solve(int argc, char** argv, int first) {
  const options o = parse_options(argc, argv, first, solve_usage,
                                  {"--problem", "--samples", "--particles", "--steps", "--sampler", "--executor", "--seed",
                                   "--out", "--report", "--plot", "--ess-plot", "--potential-scale", "--resampling",
                                   "--ess-threshold", "--time-grid", "--ddim-eta", "--potentials", "--dps-step",
                                   "--guidance-scale", "--diffpir-zeta", "--diffpir-lambda", "--skrock-stages",
                                   "--skrock-eta", "--skrock-step-fraction", "--ddrm-eta", "--ddrm-eta-b",
                                   "--dcps-blocks", "--dcps-langevin-steps", "--dcps-langevin-step"},
                                  {"--quiet"});
  const bool quiet = o.has("--quiet");
  if (!o.has("--problem")) throw usage_error("solve: --problem FILE.json is required (see diffsample solve --help)");
  if (o.has("--samples") && o.has("--particles"))
    throw usage_error("solve: --samples and --particles are the same setting; give one");
  const std::string method = o.has("--sampler") ? o.get("--sampler") : "smc";
  if (method != "exact" && method != "smc" && method != "dps" && method != "pigdm" && method != "diffpir" &&
      method != "skrock" && method != "tmpd" && method != "ddrm" &&
      method != "dcps")
    throw usage_error("--sampler: unknown posterior sampler '" + method +
                      "' (expected smc, dps, pigdm, diffpir, skrock, tmpd, ddrm, dcps or exact)");
  for (const posterior_flag& f : posterior_flags)
    if (o.has(f.flag) && (" " + std::string(f.samplers) + " ").find(" " + method + " ") == std::string::npos)
      throw usage_error(std::string(f.flag) + ": applies to --sampler " + f.samplers + ", not " + method);
  if (method == "exact" && o.has("--steps"))
    throw usage_error("solve: --steps applies to the guided samplers, not to --sampler exact");
  if (method != "smc" && o.has("--ess-plot"))
    throw usage_error("--ess-plot: only --sampler smc has an effective sample size, not " + method);
  for (const char* f :
       {"--potential-scale", "--resampling", "--ess-threshold", "--time-grid", "--ddim-eta", "--potentials"})
    if (method != "smc" && o.has(f)) throw usage_error(std::string(f) + ": an SMC setting, not one of " + method);
  const problem file = read_problem(o.get("--problem"));
  if (!file.prior) throw input_error(file.path + ": prior: missing (solve needs a prior and an observation)");
  if (!file.observation) throw input_error(file.path + ": observation: missing (solve needs A, sigma_y and y)");
  if (o.has("--steps")) to_steps(o.get("--steps"), 1);
  const ds::executor where =
      resolve(o.has("--executor") ? parse_flag("--executor", o.get("--executor"), ds::parse_executor)
                                  : ds::parse_executor(file.sampler.executor.value_or("auto")),
              executor_source(o, file));
  const char* count_flag = o.has("--particles") ? "--particles" : "--samples";
  const std::int64_t n = o.has(count_flag) ? to_int(count_flag, o.get(count_flag), 1)
                         : method == "exact"                     ? 16384
                         : where == ds::executor::cuda           ? 65536
                                                                 : 4096;
  const std::uint64_t seed =
      o.has("--seed") ? std::uint64_t(to_int("--seed", o.get("--seed"), 0)) : file.sampler.seed.value_or(1);
  output_set outputs;
  check_outputs(outputs, o, {"--out", "--report", "--plot", "--ess-plot"}, &file);
  const prior_spec& prior = *file.prior;
  const ds::linear_observation& obs = *file.observation;
  const std::int64_t d = prior.dim;
  check_memory(n, d, 3, "--samples");

  const ds::gaussian_mixture mixture(d, prior.weights, prior.means, prior.variances);
  const ds::mixture_posterior post(mixture, obs);
  if (method != "exact") return run_guided(o, file, mixture, post, method, where, n, seed, quiet, outputs);
  std::vector<float> x(std::size_t(n * d));
  if (where == ds::executor::cuda) {
    device_buffer<float> dx(n * d);
    post.sample(dx.p, n, seed, ds::execution{where});
    check(cudaMemcpy(x.data(), dx.p, std::size_t(n * d) * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } else {
    post.sample(x.data(), n, seed);
  }
  const std::vector<double> mean = post.mean();

  std::vector<std::int64_t> order(post.components());
  for (std::int64_t k = 0; k < post.components(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return post.weights()[a] > post.weights()[b]; });
  const std::int64_t top = std::min<std::int64_t>(post.components(), 5);
  if (!quiet) {
    std::printf("diffsample solve: exact posterior of a %lld-D, %s under y = A x + %g z (d_y = %lld, %s A)\n",
                static_cast<long long>(d), prior.description.c_str(), obs.sigma_y, static_cast<long long>(obs.d_y),
                operator_kind(file));
    std::printf("log evidence log p(y): %.6f\n", post.log_evidence());
    std::printf("largest posterior weights:");
    for (std::int64_t i = 0; i < top; ++i)
      std::printf(" w[%lld] = %.4g%s", static_cast<long long>(order[i]), post.weights()[order[i]],
                  i + 1 < top ? "," : "");
    std::printf("\nposterior mean:");
    for (std::int64_t j = 0; j < std::min<std::int64_t>(d, 6); ++j) std::printf(" %.4f", mean[j]);
    std::printf("%s\n", d > 6 ? " ..." : "");
    std::printf("exact posterior samples: %lld (seed %llu, %s executor)%s\n", static_cast<long long>(n),
                static_cast<unsigned long long>(seed), ds::to_string(where),
                o.has("--out") ? (" -> " + o.get("--out")).c_str() : "");
    std::printf("(the exact reference itself: --sampler smc, dps, pigdm, diffpir, skrock, tmpd, ddrm or dcps runs a posterior sampler)\n");
  }
  check_stdout();
  if (o.has("--out")) stage_npy(outputs, "--out", x.data(), n, d);
  if (o.has("--plot"))
    stage_text(outputs, "--plot", svg_plot("exact posterior (reference): " + std::to_string(n) + " samples", nullptr, 0,
                                           x.data(), n, d, marginals(post), "exact posterior samples", ""));
  if (o.has("--report")) {
    json j;
    j["command"] = "solve";
    j["method"] = "exact";
    j["note"] = "exact posterior reference (mixture_posterior); no posterior sampler ran";
    j["version"] = ds::version();
    j["date"] = utc_now();
    j["prior"] = prior_json(prior, file.path);
    j["observation"] = {{"d_y", obs.d_y}, {"sigma_y", obs.sigma_y}, {"operator", operator_kind(file)}};
    j["seed"] = seed;
    j["samples"] = n;
    j["executor"] = ds::to_string(where);
    j["log_evidence"] = post.log_evidence();
    j["posterior_weights"] = post.weights();
    j["posterior_mean"] = mean;
    if (o.has("--out")) j["samples_file"] = o.get("--out");
    stage_text(outputs, "--report", j.dump(2) + "\n");
  }
  outputs.commit();
  return 0;
}

}  // namespace diffsample::cli
