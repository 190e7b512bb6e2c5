// The cost of driving a sampler through an ask/tell plan (sampling_plan) instead of the fused sampler: chain-steps
// per second of DDPM with a trivial model, interleaved in one run.
//   fused        diffusion() on a one-component mixture N(0, 1e-4 I) (every step in one launch, the denoiser fused)
//   plan+zero    a plan whose "model" is a memset of the answer to 0 (the denoiser of a point mass at 0): the plan's
//                own cost per step, one launch (CPU: one pass of the pool) per ask plus the model's memset
//   plan+mixture a plan answered by gaussian_mixture::evaluate on the same one-component mixture: the fused
//                sampler's work split into a model call and a tell per step
// The per-step overhead is (time of plan+zero - time of fused) / steps: what a caller's model pays on top of its
// own evaluation. Usage: bench_plan [chains] [steps] [cpu] [d,d,...] (defaults as bench_diffusion's, d = 2, 10,
// 100); 5 interleaved rounds, the median of each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include <diffsample/plan.hpp>

namespace ds = diffsample;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const bench::chain_args args = bench::parse_chain_args(argc, argv);
  const ds::execution exec{args.where, nullptr};
  const bool gpu = args.gpu;
  std::printf("# bench_plan: executor %s, %lld chains, %lld DDPM steps, 5 interleaved rounds (median)\n",
              gpu ? "cuda" : "cpu", static_cast<long long>(args.chains), static_cast<long long>(args.steps));
  std::printf("%5s %-13s %14s %12s %16s\n", "d", "variant", "chain-steps/s", "ms/run", "overhead/step us");
  for (const std::int64_t d : args.dims) {
    const std::int64_t n = args.chains;
    const ds::gaussian_mixture mix(d, {1.0}, std::vector<double>(d, 0.0), {1e-4});
    ds::diffusion_options o;
    o.steps = args.steps;
    o.seed = 1;
    const std::size_t bytes = static_cast<std::size_t>(n * d) * sizeof(float);
    std::vector<float> host_x(gpu ? 0 : n * d);
    bench::device_memory dev_x(gpu ? bytes : 0);
    float* x = gpu ? static_cast<float*>(dev_x.p) : host_x.data();
    const std::size_t ws_bytes = ds::diffusion_workspace_bytes(mix, n, o);
    std::vector<unsigned char> host_ws(gpu ? 0 : ws_bytes);
    bench::device_memory dev_ws(gpu ? ws_bytes : 0);
    void* ws = gpu ? dev_ws.p : static_cast<void*>(host_ws.data());
    ds::sampling_plan zero_plan = ds::sampling_plan::diffusion(n, d, o, ds::model_output::denoiser, exec);
    ds::sampling_plan mix_plan = ds::sampling_plan::diffusion(n, d, o, ds::model_output::denoiser, exec);

    auto fused = [&] { ds::diffusion(mix, x, {}, n, o, exec, ws, ws_bytes); };
    auto plan_zero = [&] {
      zero_plan.reset();
      while (!zero_plan.done()) {
        const ds::plan_request r = zero_plan.ask();
        if (gpu)
          bench::check(cudaMemsetAsync(r.answer, 0, bytes), "cudaMemsetAsync");
        else
          std::memset(r.answer, 0, bytes);
        zero_plan.tell();
      }
    };
    auto plan_mix = [&] {
      mix_plan.reset();
      while (!mix_plan.done()) {
        const ds::plan_request r = mix_plan.ask();
        mix.evaluate(r.answer, r.rows, r.points, r.at, ds::quantity::denoiser, exec);
        mix_plan.tell();
      }
    };
    auto seconds = [&](auto&& run) {
      if (gpu) return bench::time_on_gpu(run, run);
      run();  // warm-up: pool threads, first-touch of the buffers
      const auto t0 = std::chrono::steady_clock::now();
      run();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<double> tf, tz, tm;
    for (int round = 0; round < 5; ++round) {
      tf.push_back(seconds(fused));
      tz.push_back(seconds(plan_zero));
      tm.push_back(seconds(plan_mix));
    }
    const double f = median(tf), z = median(tz), m = median(tm);
    const double chain_steps = double(n) * double(o.steps);
    std::printf("%5lld %-13s %14.4g %12.3f %16s\n", static_cast<long long>(d), "fused", chain_steps / f, f * 1e3, "-");
    std::printf("%5lld %-13s %14.4g %12.3f %16.2f\n", static_cast<long long>(d), "plan+zero", chain_steps / z,
                z * 1e3, (z - f) / double(o.steps) * 1e6);
    std::printf("%5lld %-13s %14.4g %12.3f %16.2f\n", static_cast<long long>(d), "plan+mixture", chain_steps / m,
                m * 1e3, (m - f) / double(o.steps) * 1e6);
  }
  return 0;
}
