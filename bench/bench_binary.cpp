// Throughput of the discrete samplers on a 20-component Bernoulli mixture at d = 64 (8 x 8 images) and d = 784
// (28 x 28): chain-steps per second of discrete Langevin (one-stage, Metropolis-adjusted, two-stage) and of
// discrete walk-jump (Metropolis walk, one measurement, jump included), each timed after a warm-up call.
//
// Work per chain-step: one evaluation of the score and log q at the new state, i.e. K d terms each costing one
// exp (shared by logcosh and tanh), one log1p, one division and ~10 FLOP, plus d uniforms and d sigmoids for the
// flips (2 d for two-stage); the Metropolis step adds d log-sigmoids each way. The state and three scratch vectors
// (four for walk-jump) live in workspace: ~4 d floats read and written per step per chain. The workspace is
// allocated (and touched by the warm-up call) once per sampler and d, outside the timing. A call also evaluates the
// score once at its start (steps + 1 evaluations), so the rate is taken from two timed calls, of 1 step and of
// `steps`: (steps - 1) n chain-steps in the difference of their times, the start's evaluation and the call's fixed
// costs cancelled. (Figures in README dated before this divided steps n by one call's time: up to a tenth low at
// the CPU default of 10 steps.)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "bench_common.hpp"

namespace ds = diffsample;

namespace {

ds::bernoulli_mixture random_prior(std::int64_t d, int K) {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> p(0.02, 0.98);
  std::vector<double> w(K, 1.0), probs(K * d);
  for (auto& v : probs) v = p(g);
  return ds::bernoulli_mixture(d, w, probs);
}

}  // namespace

int main(int argc, char** argv) {
  // usage: bench_binary [chains] [steps] [cpu]; defaults 2^20 x 100 on a GPU, 2^12 x 10 on the CPU
  const bool gpu = ds::cuda_available() && !(argc > 3 && std::string(argv[3]) == "cpu");
  const std::int64_t n = bench::count_arg(argc, argv, 1, "chains", gpu ? (std::int64_t(1) << 20) : (std::int64_t(1) << 12));
  const std::int64_t steps = bench::count_arg(argc, argv, 2, "steps", gpu ? 100 : 10);
  if (steps < 2) {
    std::fprintf(stderr, "bench_binary: steps must be at least 2 (the rate is the difference of a 1-step call and a "
                         "steps-step call), got %lld\n", static_cast<long long>(steps));
    return 2;
  }
  const ds::executor where = gpu ? ds::executor::cuda : ds::executor::cpu;
  const int K = 20;
  std::printf("# bench_binary: executor %s (%d CPU threads), %lld chains x %lld steps, %d-component Bernoulli mixture\n",
              ds::to_string(where), ds::cpu_threads(), static_cast<long long>(n), static_cast<long long>(steps), K);
  std::printf("%-22s %5s %14s %16s\n", "sampler", "d", "chain-steps/s", "score terms/s");
  for (std::int64_t d : {64, 784}) {
    const auto prior = random_prior(d, K);
    std::vector<float> host(n * d);
    float* x = host.data();
    bench::device_memory dev(gpu ? n * d * sizeof(float) : 0);
    if (gpu) x = static_cast<float*>(dev.p);
    struct row {
      const char* name;
      bool walk_jump;
      ds::discrete_method method;
    };
    for (const row r : {row{"langevin one_stage", false, ds::discrete_method::one_stage},
                        row{"langevin metropolis", false, ds::discrete_method::metropolis},
                        row{"langevin two_stage", false, ds::discrete_method::two_stage},
                        row{"walk_jump metropolis", true, ds::discrete_method::metropolis}}) {
      ds::discrete_walk_jump_options wo;
      wo.method = r.method;
      wo.alpha = 1.0;
      wo.seed = 1;
      ds::discrete_langevin_options lo;
      lo.method = r.method;
      lo.alpha = 1.0;
      lo.seed = 1;
      lo.start_uniform = true;
      // The workspace once, outside the timing (a call without one allocates and zero-fills its own: 51.8 MB at
      // n = 4096, d = 784, inside the timed call before).
      const std::size_t ws_bytes = r.walk_jump ? ds::discrete_walk_jump_workspace_bytes(prior, n, wo)
                                               : ds::discrete_langevin_workspace_bytes(prior, n, lo);
      std::vector<unsigned char> host_ws(gpu ? 0 : ws_bytes);
      bench::device_memory dev_ws(gpu ? ws_bytes : 0);
      void* ws = gpu ? dev_ws.p : static_cast<void*>(host_ws.data());
      auto run = [&](std::int64_t s) {
        if (r.walk_jump) {
          ds::discrete_walk_jump_options o = wo;
          o.steps = s;
          ds::discrete_walk_jump(prior, x, {}, n, o, {where}, ws, ws_bytes);
        } else {
          ds::discrete_langevin_options o = lo;
          o.steps = s;
          ds::discrete_langevin(prior, x, {}, n, o, {where}, ws, ws_bytes);
        }
        if (gpu) bench::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      };
      run(1);  // warm-up (first touch of the workspace, thread pool start)
      auto timed = [&](std::int64_t s) {
        if (gpu) {
          cudaEvent_t a, b;
          bench::check(cudaEventCreate(&a), "cudaEventCreate");
          bench::check(cudaEventCreate(&b), "cudaEventCreate");
          bench::check(cudaEventRecord(a), "cudaEventRecord");
          run(s);
          bench::check(cudaEventRecord(b), "cudaEventRecord");
          bench::check(cudaEventSynchronize(b), "cudaEventSynchronize");
          float ms = 0;
          bench::check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
          cudaEventDestroy(a);
          cudaEventDestroy(b);
          return ms / 1e3;
        }
        const auto t0 = std::chrono::steady_clock::now();
        run(s);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      };
      const double one = timed(1), all = timed(steps);
      const double seconds = all - one;
      if (!(seconds > 0)) {
        std::printf("%-22s %5lld %14s %16s   (the %lld-step call took no longer than the 1-step call: %.3g s, %.3g s)\n",
                    r.name, static_cast<long long>(d), "-", "-", static_cast<long long>(steps), all, one);
        continue;
      }
      const double rate = double(n) * double(steps - 1) / seconds;
      std::printf("%-22s %5lld %14.4g %16.4g\n", r.name, static_cast<long long>(d), rate, rate * K * d);
      std::fflush(stdout);
    }
  }
  return 0;
}
