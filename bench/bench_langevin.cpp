// Throughput of the fused Langevin kernels (ULA, MALA) on the 25-component isotropic grid mixture at
// d = 2, 10, 100: chain-steps per second, with FLOPs and bytes per chain-step counted below.
//
// FLOPs per score evaluation (K components, dimension d, isotropic), as the CPU kernel executes them (an FMA is 2):
// per (k, j) the logit's centred difference and its square (a subtraction and an FMA, 3 FLOP) and the accumulation's
// centred difference again and acc + w * diff (a subtraction and an FMA, 3 FLOP) -> 6 K d (the CUDA kernel forms
// a mu_k in each pass, 2 FLOP more per pair, not counted: implementation, not work); per component ~12 FLOP plus
// one exp (not in the FLOP figure); final scaling d.
//   ULA  chain-step: 1 score + update (2 FMA per coordinate) + normals (Box-Muller ~ 10 FLOP per pair)
//   MALA chain-step: 1 score + proposal (2 FMA) + backward residual (3 FLOP per coordinate) + |z|^2 and r . r (4 FLOP
//   per coordinate) + normals
// Bytes: chain state stays in registers (d in the register list) or in coordinate-major workspace (other d):
//   register path: 2 d 4 bytes per *call* (load and store the state), ~0 per step;
//   workspace path: ULA reads and writes x and g per step (4 d 4 bytes), MALA also x' and g' (8 d 4 bytes).
// Mixture parameters (K (d + 2) floats) are read by every chain but come from L1/L2, not DRAM.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "bench_common.hpp"
#include "cpu_peak.hpp"

namespace ds = diffsample;

namespace {

double flops_per_chain_step(ds::langevin_method m, std::int64_t K, std::int64_t d) {
  const double score = 6.0 * K * d + 12.0 * K + d;
  const double normals = 5.0 * d;
  return m == ds::langevin_method::mala ? score + 2 * 2.0 * d + 3.0 * d + 4.0 * d + normals + 10
                                        : score + 4.0 * d + normals;
}

double dram_bytes_per_chain_step(ds::langevin_method m, std::int64_t d, bool register_path, std::int64_t steps) {
  if (register_path) return 2.0 * d * 4 / double(steps);
  return (m == ds::langevin_method::mala ? 8.0 : 4.0) * d * 4;
}


}  // namespace

int main(int argc, char** argv) {
  // usage: bench_langevin [chains] [steps] [cpu] [d,d,...]
  const bench::chain_args args = bench::parse_chain_args(argc, argv);
  const bool gpu = args.gpu;
  const std::int64_t n = args.chains, steps = args.steps;
  const ds::executor where = args.where;
  std::printf("# bench_langevin: executor %s, %lld chains, %lld steps, 25-component isotropic grid mixture\n",
              ds::to_string(where), static_cast<long long>(n), static_cast<long long>(steps));
  const double peak = bench::announce_fp32_peak(gpu);  // FLOP/s
  std::printf("%-6s %5s %14s %12s %14s %12s %10s %6s %11s\n", "method", "d", "chain-steps/s", "GFLOP/s", "FLOP/step",
              "B/step", "path", "%peak", "per CPU-s");
  for (std::int64_t d : args.dims) {
    const auto mix = ds::grid_mixture(d, 5, 8.0, 1.0);
    for (auto method : {ds::langevin_method::ula, ds::langevin_method::mala}) {
      ds::langevin_options o;
      o.method = method;
      o.step_size = 0.05;
      o.steps = steps;
      std::vector<float> host(n * d);
      double seconds = 0, cpu_seconds = 0;
      ds::langevin_report report;
      if (gpu) {
        const std::size_t ws_bytes = ds::langevin_workspace_bytes(mix, n, o);
        bench::device_memory xs(n * d * sizeof(float)), ws(ws_bytes);
        float* x = static_cast<float*>(xs.p);
        mix.sample(x, n, {}, 1, nullptr, 0, {where});
        auto warm = o;
        warm.steps = 2;
        seconds = bench::time_on_gpu([&] { ds::langevin(mix, x, {}, n, warm, {where}, ws.p, ws_bytes); },
                                     [&] { report = ds::langevin(mix, x, {}, n, o, {where}, ws.p, ws_bytes); });
      } else {
        // Workspace allocated (and its pages touched) once, outside the timing, and a 2-step warm-up call, as a
        // caller running many calls would see it.
        mix.sample(host.data(), n, {}, 1, nullptr, 0, {where});
        std::vector<unsigned char> ws(ds::langevin_workspace_bytes(mix, n, o), 1);
        auto warm = o;
        warm.steps = 2;
        ds::langevin(mix, host.data(), {}, n, warm, {where}, ws.data(), ws.size());
        const double cpu0 = bench::process_cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        report = ds::langevin(mix, host.data(), {}, n, o, {where}, ws.data(), ws.size());
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        cpu_seconds = bench::process_cpu_seconds() - cpu0;
      }
      const double rate = double(n) * steps / seconds;
      const double flops = flops_per_chain_step(method, mix.components(), d);
      std::printf("%-6s %5lld %14.4g %12.4g %14.0f %12.2f %10s %6.1f %11.4g\n", ds::to_string(method),
                  static_cast<long long>(d), rate, rate * flops * 1e-9, flops,
                  dram_bytes_per_chain_step(method, d, report.register_path, steps),
                  report.register_path ? "registers" : "workspace", peak > 0 ? 100 * rate * flops / peak : 0.0,
                  cpu_seconds > 0 ? double(n) * steps / cpu_seconds : 0.0);
    }
  }
  return 0;
}
