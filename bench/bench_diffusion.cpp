// Throughput of the fused reverse-diffusion samplers (DDPM, DDIM, probability-flow ODE with Heun) on the
// 25-component isotropic grid mixture at d = 2, 10, 100: chain-steps per second, with FLOPs and bytes per
// chain-step counted below.
//
// Each step evaluates the mixture denoiser once (Heun: twice) and applies x <- cx x + cm m + cn xi.
// FLOPs per denoiser evaluation (K components, dimension d, isotropic), as the CPU kernel executes them (an FMA is
// 2): per (k, j) the logit's centred difference and its square (3 FLOP) and the accumulation acc + w mu (an FMA, 2)
// -> 5 K d (the CUDA kernel forms a mu_k again, 1 FLOP more per pair, not counted), plus ~12 per component (and one
// exp) and d. The update x <- cx x + cm m + cn xi: DDPM a product and two FMAs per coordinate (5 FLOP) plus its
// normals (~5 FLOP per coordinate); DDIM at eta = 0 (the default) draws nothing, a product and an FMA (3 FLOP);
// Heun's step two denoisers, the predictor (3 FLOP) and the corrector (8 FLOP), but its last step, which ends at
// s = 0, is an Euler step (one denoiser, 3 FLOP per coordinate).
// Bytes: state in registers (d in the register list) costs 2 d 4 bytes per call; the workspace path reads and
// writes x and m per step (4 d 4 bytes). The per-step coefficient table (a few floats) comes from L1/L2.
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

double flops_per_chain_step(ds::diffusion_sampler s, std::int64_t K, std::int64_t d, std::int64_t steps) {
  const double denoiser = 5.0 * K * d + 12.0 * K + d;
  if (s == ds::diffusion_sampler::ddpm) return denoiser + 5.0 * d + 5.0 * d;
  if (s == ds::diffusion_sampler::ddim) return denoiser + 3.0 * d;
  // ode_heun: steps - 1 Heun steps and a last Euler step, per step on average.
  return (double(steps - 1) * (2 * denoiser + 11.0 * d) + (denoiser + 3.0 * d)) / double(steps);
}


}  // namespace

int main(int argc, char** argv) {
  // usage: bench_diffusion [chains] [steps] [cpu] [d,d,...]
  const bench::chain_args args = bench::parse_chain_args(argc, argv);
  const bool gpu = args.gpu;
  const std::int64_t n = args.chains, steps = args.steps;
  const ds::executor where = args.where;
  std::printf("# bench_diffusion: executor %s, %lld chains, %lld steps, 25-component isotropic grid mixture\n",
              ds::to_string(where), static_cast<long long>(n), static_cast<long long>(steps));
  const double peak = bench::announce_fp32_peak(gpu);  // FLOP/s
  std::printf("%-9s %5s %14s %12s %14s %12s %10s %6s %11s\n", "sampler", "d", "chain-steps/s", "GFLOP/s", "FLOP/step",
              "B/step", "path", "%peak", "per CPU-s");
  for (std::int64_t d : args.dims) {
    const auto mix = ds::grid_mixture(d, 5, 8.0, 1.0);
    for (auto sampler : {ds::diffusion_sampler::ddpm, ds::diffusion_sampler::ddim, ds::diffusion_sampler::ode_heun}) {
      ds::diffusion_options o;
      o.sampler = sampler;
      o.steps = steps;
      o.seed = 1;
      double seconds = 0, cpu_seconds = 0;
      ds::diffusion_report report;
      if (gpu) {
        const std::size_t ws_bytes = ds::diffusion_workspace_bytes(mix, n, o);
        bench::device_memory xs(n * d * sizeof(float)), ws(ws_bytes);
        float* x = static_cast<float*>(xs.p);
        auto warm = o;
        warm.steps = 2;
        seconds = bench::time_on_gpu([&] { ds::diffusion(mix, x, {}, n, warm, {where}, ws.p, ws_bytes); },
                                     [&] { report = ds::diffusion(mix, x, {}, n, o, {where}, ws.p, ws_bytes); });
      } else {
        // Workspace allocated (and its pages touched) once, outside the timing, and a 2-step warm-up call.
        std::vector<float> host(n * d);
        std::vector<unsigned char> ws(ds::diffusion_workspace_bytes(mix, n, o), 1);
        auto warm = o;
        warm.steps = 2;
        ds::diffusion(mix, host.data(), {}, n, warm, {where}, ws.data(), ws.size());
        const double cpu0 = bench::process_cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        report = ds::diffusion(mix, host.data(), {}, n, o, {where}, ws.data(), ws.size());
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        cpu_seconds = bench::process_cpu_seconds() - cpu0;
      }
      const double rate = double(n) * steps / seconds;
      const double flops = flops_per_chain_step(sampler, mix.components(), d, steps);
      const double bytes = report.register_path ? 2.0 * d * 4 / double(steps) : 4.0 * d * 4;
      std::printf("%-9s %5lld %14.4g %12.4g %14.0f %12.2f %10s %6.1f %11.4g\n", ds::to_string(sampler),
                  static_cast<long long>(d), rate, rate * flops * 1e-9, flops, bytes,
                  report.register_path ? "registers" : "workspace", peak > 0 ? 100 * rate * flops / peak : 0.0,
                  cpu_seconds > 0 ? double(n) * steps / cpu_seconds : 0.0);
    }
  }
  return 0;
}
