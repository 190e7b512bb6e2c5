// The diffsample command-line program. With no arguments it runs the embedded demo: MALA on a 2-D,
// 25-component Gaussian mixture, reporting the executor, throughput and accuracy against exact samples.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "cli/commands.hpp"
#include "cli/output.hpp"
#include "cli/problem.hpp"
#include "cli/progress.hpp"

namespace ds = diffsample;

namespace {

const char* usage =
    "usage: diffsample [demo] [options]      run the Langevin demo (default)\n"
    "       diffsample sample [options]      sample a mixture prior with any sampler, scored against exact samples\n"
    "       diffsample solve --problem FILE  posterior sampling (smc, dps, pigdm, diffpir, skrock, tmpd,\n"
    "                                        ddrm, dcps) for a problem file's prior and observation, scored against the\n"
    "                                        exact posterior (or --sampler exact)\n"
    "       diffsample bench [options]       throughput table of ULA, MALA, DDPM, DDIM and ODE-Heun\n"
    "       diffsample info                  describe the machine: executor, GPU, driver and runtime\n"
    "       diffsample COMMAND --help        the options of a subcommand\n"
    "\n"
    "demo options:\n"
    "  --executor auto|cuda|cpu   where to run (default auto: the GPU when one is present)\n"
    "  --method ula|mala|tamed_ula  Langevin update (default mala)\n"
    "  --chains N                 number of chains (default 2^20 on a GPU, 16384 on the CPU)\n"
    "  --steps N                  steps per chain (default 1000)\n"
    "  --step-size G              Langevin step size gamma (default 0.03)\n"
    "  --dim D                    dimension of the grid mixture (default 2)\n"
    "  --seed S                   random seed (default 1)\n"
    "  --quiet                    print only the result lines\n"
    "  --help                     this text\n";

struct demo_settings {
  ds::executor exec = ds::executor::automatic;
  ds::langevin_method method = ds::langevin_method::mala;
  std::int64_t chains = -1;
  std::int64_t steps = 1000;
  double step_size = 0.03;
  std::int64_t dim = 2;
  std::uint64_t seed = 1;
  bool quiet = false;
};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "diffsample: %s\n", message.c_str());
  std::exit(2);
}

std::int64_t parse_int(const std::string& flag, const char* text, std::int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 0);
  if (errno != 0 || end == text || *end != '\0' || v < min_value)
    fail(flag + ": expected an integer >= " + std::to_string(min_value) + ", got '" + text + "'");
  return v;
}

double parse_double(const std::string& flag, const char* text) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0') fail(flag + ": expected a number, got '" + text + "'");
  return v;
}

/// A name on the command line through the library's parser: an unknown name is a bad command line (status 2).
template <class Parse>
auto parse_name(const std::string& flag, const char* text, Parse parse) {
  try {
    return parse(std::string(text));
  } catch (const ds::invalid_argument& e) {
    const std::string m = e.what();  // the library's "method: unknown ..." without its own field name
    const auto colon = m.find(": ");
    fail(flag + ": " + (colon == std::string::npos ? m : m.substr(colon + 2)));
  }
}

demo_settings parse_demo(int argc, char** argv, int first) {
  demo_settings s;
  std::vector<std::string> seen;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) fail(a + ": missing value");
      return argv[++i];
    };
    if (a.size() > 2 && a.compare(0, 2, "--") == 0 && a != "--help") {
      if (std::find(seen.begin(), seen.end(), a) != seen.end()) fail(a + ": given twice");
      seen.push_back(a);
    }
    if (a == "--help" || a == "-h") {
      ds::cli::print_and_exit(usage);
    } else if (a == "--executor") {
      s.exec = parse_name(a, value(), ds::parse_executor);
    } else if (a == "--method") {
      s.method = parse_name(a, value(), ds::parse_langevin_method);
    } else if (a == "--chains") {
      s.chains = parse_int(a, value(), 1);
    } else if (a == "--steps") {
      s.steps = parse_int(a, value(), 0);
      if (s.steps > ds::cli::max_steps) fail("--steps: at most 2^24 (16777216), got " + std::to_string(s.steps));
    } else if (a == "--step-size") {
      s.step_size = parse_double(a, value());
      if (!(s.step_size > 0) || !std::isfinite(s.step_size)) fail("--step-size: must be a finite number > 0");
    } else if (a == "--dim") {
      s.dim = parse_int(a, value(), 1);
    } else if (a == "--seed") {
      s.seed = static_cast<std::uint64_t>(parse_int(a, value(), 0));
    } else if (a == "--quiet") {
      s.quiet = true;
    } else {
      fail("unknown option '" + a + "' (see --help)");
    }
  }
  return s;
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw ds::error(std::string(what) + ": " + cudaGetErrorString(status));
}

/// Runs o.steps Langevin steps as ~20 consecutive calls (first_step advancing), which the (seed, chain, step)
/// keying makes identical to one call, redrawing the progress line between them. Acceptance counts of the chunks
/// are summed on the host into total_accepted (n entries). On CUDA each chunk is waited for.
ds::langevin_report run_chunked(const ds::gaussian_mixture& target, float* x, std::int64_t n,
                                const ds::langevin_options& o, ds::executor where, std::int64_t* accepted,
                                std::vector<std::int64_t>& total_accepted, ds::cli::progress& bar) {
  const std::int64_t chunk = std::max<std::int64_t>(1, (o.steps + 19) / 20);
  ds::langevin_report report{where, false};
  std::vector<std::int64_t> part_accepted(n);
  total_accepted.assign(n, 0);
  ds::langevin_options part = o;
  std::int64_t done = 0;
  do {
    part.first_step = o.first_step + done;
    part.steps = std::min(chunk, o.steps - done);
    report = ds::langevin(target, x, n, part, {nullptr, accepted}, {where});
    if (where == ds::executor::cuda)
      check(cudaMemcpy(part_accepted.data(), accepted, n * sizeof(std::int64_t), cudaMemcpyDeviceToHost),
            "cudaMemcpy");
    else
      std::copy(accepted, accepted + n, part_accepted.begin());
    for (std::int64_t i = 0; i < n; ++i) total_accepted[i] += part_accepted[i];
    done += part.steps;
    bar.update(done);
  } while (done < o.steps);
  return report;
}


int run_info() {
  std::printf("diffsample %s\n", ds::version());
  std::printf("CPU executor: %d OpenMP threads\n", ds::cpu_threads());
  if (!ds::cuda_available()) {
    std::printf("CUDA executor: unavailable (%s)\n", ds::cuda_unavailable_reason().c_str());
    std::printf("automatic executor: cpu\n");
    return 0;
  }
  int device = 0, driver = 0, runtime = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
  check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
  std::size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  std::printf("CUDA executor: device %d, %s, compute capability %d.%d, %d SMs\n", device, prop.name, prop.major,
              prop.minor, prop.multiProcessorCount);
  std::printf("GPU memory: %.1f GiB free of %.1f GiB\n", free_bytes / 1073741824.0, total_bytes / 1073741824.0);
  std::printf("driver %d.%d, runtime %d.%d\n", driver / 1000, (driver % 1000) / 10, runtime / 1000,
              (runtime % 1000) / 10);
  std::printf("automatic executor: cuda (for device buffers)\n");
  return 0;
}

int run_demo(const demo_settings& s) {
  if (s.exec == ds::executor::cuda && !ds::cuda_available())
    throw ds::cli::input_error("--executor cuda: no GPU is available (" + ds::cuda_unavailable_reason() + ")");
  const bool gpu = s.exec == ds::executor::cuda || (s.exec == ds::executor::automatic && ds::cuda_available());
  const ds::executor where = gpu ? ds::executor::cuda : ds::executor::cpu;
  const std::int64_t n = s.chains > 0 ? s.chains : (gpu ? (std::int64_t(1) << 20) : 16384);
  const std::int64_t d = s.dim;
  // The limits of `sample`: at most 2^24 mean values (25 x d) and n x d samples that fit in memory, checked in
  // floating point before any product of n and d is formed.
  if (d > ds::cli::max_grid_values / 25)
    throw ds::cli::usage_error("--dim: 25 components x dimension " + std::to_string(d) +
                               " is too large (at most 2^24 mean values)");
  ds::cli::check_memory(n, d, 3, "--chains");
  // 25 components on a 5 x 5 grid with spacing 2 and variance 0.25: separated modes that MALA can still cross.
  const std::vector<double> weights{1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 2, 2, 2, 2, 2, 1, 3, 5, 3, 1, 4, 1, 4, 1, 4};
  const ds::gaussian_mixture target = ds::grid_mixture(d, 5, 2.0, 0.25, weights);
  // Chains start from a broad Gaussian N(0, 9 I) covering every mode.
  const ds::gaussian_mixture start(d, {1.0}, std::vector<double>(d, 0.0), {9.0});

  ds::langevin_options o;
  o.method = s.method;
  o.step_size = s.step_size;
  o.steps = s.steps;
  o.seed = s.seed;
  if (!s.quiet)
    std::printf("diffsample demo: %s on a %lld-D, 25-component Gaussian mixture, %lld chains x %lld steps\n",
                ds::to_string(s.method), static_cast<long long>(d), static_cast<long long>(n),
                static_cast<long long>(s.steps));

  std::vector<float> samples(n * d);
  std::vector<std::int64_t> accepted;
  ds::cli::progress bar(s.steps, "step", double(n), "chain-steps/s", s.quiet);
  const auto t0 = std::chrono::steady_clock::now();
  ds::langevin_report report;
  if (where == ds::executor::cuda) {
    float* x = nullptr;
    std::int64_t* acc = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&x), n * d * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(reinterpret_cast<void**>(&acc), n * sizeof(std::int64_t)), "cudaMalloc");
    start.sample(x, n, {}, s.seed + 1000, nullptr, 0, {where});
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    report = run_chunked(target, x, n, o, where, acc, accepted, bar);
    check(cudaMemcpy(samples.data(), x, n * d * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    cudaFree(x);
    cudaFree(acc);
  } else {
    std::vector<std::int64_t> acc(n);
    start.sample(samples.data(), n, {}, s.seed + 1000, nullptr, 0, {where});
    report = run_chunked(target, samples.data(), n, o, where, acc.data(), accepted, bar);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Accuracy: sliced W1 (64 directions) of up to 2^15 chains against as many exact samples, beside the floor of
  // two independent exact sets of that size.
  const std::int64_t m = std::min<std::int64_t>(n, 1 << 15);
  std::vector<float> exact_a(m * d), exact_b(m * d);
  target.sample(exact_a.data(), m, {}, s.seed + 2000, nullptr, 0, {ds::executor::cpu});
  target.sample(exact_b.data(), m, {}, s.seed + 3000, nullptr, 0, {ds::executor::cpu});
  const double sw = ds::sliced_wasserstein(samples.data(), m, exact_a.data(), m, d, 64, s.seed);
  const double floor = ds::sliced_wasserstein(exact_b.data(), m, exact_a.data(), m, d, 64, s.seed);
  double acceptance = 0;
  for (auto a : accepted) acceptance += double(a);
  acceptance /= double(n) * std::max<std::int64_t>(s.steps, 1);

  std::printf("executor: %s%s\n", ds::to_string(report.ran),
              report.ran == ds::executor::cpu ? (" (" + std::to_string(ds::cpu_threads()) + " threads)").c_str() : "");
  std::printf("throughput: %.4g chain-steps/s (%.3f s)\n", seconds > 0 ? double(n) * s.steps / seconds : 0.0,
              seconds);
  if (s.method == ds::langevin_method::mala) std::printf("acceptance rate: %.3f\n", acceptance);
  std::printf("sliced W1 to exact samples: %.4f (exact-vs-exact floor %.4f; %lld samples, 64 directions)\n", sw,
              floor, static_cast<long long>(m));
  return 0;
}

int run(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "info") == 0) return run_info();
  if (argc >= 2 && std::strcmp(argv[1], "sample") == 0) return ds::cli::run_sample(argc, argv, 2);
  if (argc >= 2 && std::strcmp(argv[1], "bench") == 0) return ds::cli::run_bench(argc, argv, 2);
  if (argc >= 2 && std::strcmp(argv[1], "solve") == 0) return ds::cli::run_solve(argc, argv, 2);
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0))
    ds::cli::print_and_exit(usage);
  const int first = (argc >= 2 && std::strcmp(argv[1], "demo") == 0) ? 2 : 1;
  return run_demo(parse_demo(argc, argv, first));
}

}  // namespace

int main(int argc, char** argv) {
  ds::cli::guard_stdout();
  try {
    const int status = run(argc, argv);
    ds::cli::check_stdout();  // every subcommand: results that did not reach stdout are a failed run
    return status;
  } catch (const ds::cli::usage_error& e) {
    std::fprintf(stderr, "diffsample: %s\n", e.what());
    return 2;
  } catch (const ds::cli::input_error& e) {
    std::fprintf(stderr, "diffsample: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "diffsample: out of host memory (try fewer chains or samples)\n");
    return 1;
  } catch (const ds::error& e) {
    std::fprintf(stderr, "diffsample: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "diffsample: unexpected error: %s\n", e.what());
    return 1;
  }
}
