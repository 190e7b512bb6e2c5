// Throughput of the guided SMC (Monte Carlo guided diffusion), DiffPIR and SKRock on the 25-component grid mixture
// with d_y = 1 at d = 10 and 100 (particle-steps per second; SKRock's steps are its iterations), of the exact posterior's sampler on the same problem (samples per
// second; its rows reuse the columns), of TMPD, DDRM and DCPS on the same problem (particle-steps per second), and of resampling alone at N = 2^20 and 2^24 (particles per second).
//
// Per particle-step the SMC runs one denoiser (K components: ~5 K d + 12 K FLOP, the CPU kernel's operations), the
// residuals A x and A mu (4 d_y d FLOP), the mutation (d + d_y normals, 2 d_y d + d_y^2 FLOP) and, when the ESS
// falls below N / 2, a resampling and a gather. Bytes per particle-step through DRAM (the state's workspace rows:
// row-major on the CPU executor, coordinate-major on CUDA; bench/static_record.md counts the cache-level traffic):
// weighting reads x and writes mu (8 d), mutation reads mu and writes x (8 d), the log-weight is read and written
// twice (16); a resampling step adds the gather (8 d) and the resampling's own traffic below.
// Resampling bytes per particle, counted from the passes of src/particles.cu (its header comment derives them; a
// search counted as reading its array once): systematic 16 (log-weights read three times, ancestor written), 28
// before the tile passes; multinomial 32; residual 52; rejection 20 plus 8 per proposal (counted at 1 proposal:
// the log-weights here have mean w / max w ~ 0.2, about 5 proposals). workspace_bytes / N is printed beside it as
// the scratch reserved. The schemes run interleaved in one process.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/particles.hpp>

#include "bench_common.hpp"

namespace ds = diffsample;

namespace {

using bench::check;

// A buffer on the executor's side.
template <class T>
struct buffer {
  T* ptr = nullptr;
  bool device;
  std::vector<T> host;
  buffer(std::size_t n, bool on_device) : device(on_device) {
    if (device) {
      check(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)), "cudaMalloc");
    } else {
      host.resize(n);
      ptr = host.data();
    }
  }
  ~buffer() {
    if (device) cudaFree(ptr);
  }
};

// Seconds of f(), with CUDA events on the GPU (after one warm-up call) and a steady clock on the CPU.
template <class F>
double timed(bool gpu, F&& f) {
  if (gpu) return bench::time_on_gpu(f, f);
  f();
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  // usage: bench_smc [particles] [steps] [executor]
  const bool gpu = ds::cuda_available() && !(argc > 3 && std::string(argv[3]) == "cpu");
  const std::int64_t n_arg = bench::count_arg(argc, argv, 1, "particles", 0);  // 0: the defaults per d
  const std::int64_t steps = bench::count_arg(argc, argv, 2, "steps", gpu ? 100 : 10);
  const ds::executor where = gpu ? ds::executor::cuda : ds::executor::cpu;
  const ds::execution exec{where, nullptr};
  std::printf("# bench_smc: executor %s, %lld steps, 25-component grid mixture, d_y = 1, one problem\n",
              ds::to_string(where), static_cast<long long>(steps));
  std::printf("%-10s %5s %10s %16s %12s %10s\n", "what", "d", "N", "particle-steps/s", "GFLOP/s", "B/step");
  for (std::int64_t d : {10, 100}) {
    const std::int64_t N = n_arg > 0 ? n_arg : (gpu ? (d == 10 ? (1 << 20) : (1 << 18)) : (1 << 12));
    const auto prior = ds::grid_mixture(d, 5, 8.0, 1.0);
    std::mt19937_64 gen(1);
    std::normal_distribution<double> z;
    ds::guided_problems pr;
    pr.A.resize(d);
    for (auto& a : pr.A) a = z(gen);
    pr.y = {3.0};
    pr.sigma_y = {1.0};
    // "guided": linear potentials, whose FLOP and byte counts are those above; "guided:def" (further down): the
    // library's default potentials (automatic: here twisted with the start correction and the multistep kernel,
    // d_y = 1 and a grid ending at t = 0: about 1 + d_y denoiser-sized evaluations per particle-step), rate only.
    ds::guided_options o;
    o.potentials = ds::guided_potentials::linear;
    o.steps = steps;
    o.particles = N;
    o.final_resample = false;
    buffer<double> log_z(1, gpu);
    ds::guided_outputs out;
    out.log_normaliser = log_z.ptr;
    const std::size_t ws_bytes = ds::guided_workspace_bytes(prior, pr, o);
    buffer<unsigned char> ws(ws_bytes, gpu);
    const double seconds = timed(gpu, [&] { ds::guided_sample(prior, out, pr, o, exec, ws.ptr, ws_bytes); });
    const double K = 25;
    const double flop = 5 * K * d + 12 * K + 4.0 * d + 2.0 * d + 1 + 5.0 * (d + 1);
    const double bytes = 16.0 * d + 16;
    const double rate = double(N) * steps / seconds;
    std::printf("%-10s %5lld %10lld %16.3e %12.2f %10.0f\n", "guided", static_cast<long long>(d),
                static_cast<long long>(N), rate, rate * flop / 1e9, bytes);
    {
      ds::guided_options def = o;
      def.potentials = ds::guided_options{}.potentials;
      const std::size_t def_bytes = ds::guided_workspace_bytes(prior, pr, def);
      buffer<unsigned char> def_ws(def_bytes, gpu);
      const double t = timed(gpu, [&] { ds::guided_sample(prior, out, pr, def, exec, def_ws.ptr, def_bytes); });
      std::printf("%-10s %5lld %10lld %16.3e %12s %10s   (default potentials: %s)\n", "guided:def",
                  static_cast<long long>(d), static_cast<long long>(N), double(N) * steps / t, "-", "-",
                  ds::to_string(def.potentials));
    }

    // DiffPIR and SKRock on the same problem, interleaved with the SMC run above (one fused launch each). DiffPIR per
    // particle-step: the denoiser, A m and A^T u (4 d_y d), the re-noising (3 d and d normals). SKRock per iteration
    // (a "step" here) of s = 10 stages: s drift evaluations (the prior's score, 6 K d + 12 K, plus A x and A^T r,
    // 4 d_y d) and 5 d per stage; its rate is also given per drift evaluation. Bytes: the state's row-major
    // workspace, x and m (DiffPIR) or X_{j-1}, X_{j-2} and the drift (SKRock) read and written per step.
    for (ds::guided_sampler sampler : {ds::guided_sampler::diffpir, ds::guided_sampler::skrock}) {
      ds::guided_options b;  // SMC's settings (potentials, final_resample) are refused by the other samplers
      b.steps = o.steps;
      b.particles = o.particles;
      b.sampler = sampler;
      buffer<float> samples(std::size_t(N * d), gpu);
      ds::guided_outputs bout;
      bout.samples = samples.ptr;
      const std::size_t b_bytes = ds::guided_workspace_bytes(prior, pr, b);
      buffer<unsigned char> bws(b_bytes, gpu);
      const double t = timed(gpu, [&] { ds::guided_sample(prior, bout, pr, b, exec, bws.ptr, b_bytes); });
      const double r = double(N) * steps / t;
      const bool skrock = sampler == ds::guided_sampler::skrock;
      const double stages = double(b.skrock_stages);
      const double f = skrock ? stages * (6 * K * d + 12 * K + 4.0 * d + 5.0 * d) + 5.0 * d
                              : 5 * K * d + 12 * K + 4.0 * d + 3.0 * d + 5.0 * d;
      const double by = skrock ? stages * 24.0 * d : 16.0 * d;
      std::printf("%-10s %5lld %10lld %16.3e %12.2f %10.0f\n", ds::to_string(sampler), static_cast<long long>(d),
                  static_cast<long long>(N), r, r * f / 1e9, by);
      if (skrock)
        std::printf("%-10s %5lld %10lld %16.3e   (drift evaluations/s, %lld per iteration)\n", "skrock/eval",
                    static_cast<long long>(d), static_cast<long long>(N), r * stages,
                    static_cast<long long>(b.skrock_stages));
    }
    // The other posterior samplers on the same problem, in the same run (particle-steps per second only, a step
    // being one grid transition; DCPS's Langevin steps count as extra work inside its transitions): TMPD (a
    // denoiser, d_y JVPs and a d_y x d_y Cholesky per particle-step), DDRM (a denoiser and three projections on the
    // rank-r SVD) and DCPS with its defaults (a denoiser plus two denoiser-and-JVP pairs per transition, and
    // L M = 200 tamed ULA steps of a denoiser and a JVP each per trajectory).
    for (ds::guided_sampler s : {ds::guided_sampler::tmpd, ds::guided_sampler::ddrm, ds::guided_sampler::dcps}) {
      ds::guided_options so;
      so.steps = o.steps;
      so.particles = o.particles;
      so.sampler = s;
      // DCPS's blocks cannot outnumber the steps (bench_smc 256 2 cpu was refused there); the others refuse the field.
      if (s == ds::guided_sampler::dcps) so.dcps_blocks = std::min(so.dcps_blocks, decltype(so.dcps_blocks)(steps));
      buffer<float> samples(std::size_t(N * d), gpu);
      ds::guided_outputs sout;
      sout.samples = samples.ptr;
      const std::size_t s_bytes = ds::guided_workspace_bytes(prior, pr, so);
      buffer<unsigned char> s_ws(s_bytes, gpu);
      const double s_seconds =
          timed(gpu, [&] { ds::guided_sample(prior, sout, pr, so, exec, s_ws.ptr, s_bytes); });
      std::printf("%-10s %5lld %10lld %16.3e %12s %10s\n", ds::to_string(s), static_cast<long long>(d),
                  static_cast<long long>(N), double(N) * steps / s_seconds, "-", "-");
    }

    // The exact posterior's sampler on the same problem: per sample d (d + 1) / 2 FP64 multiply-adds (2 FLOP each),
    // d / 2 Box-Muller pairs (not counted) and d floats out; the rate column is samples per second.
    const ds::mixture_posterior post(prior, ds::observation_operator::dense(1, d, pr.A), 1.0, {3.0});
    buffer<float> x(std::size_t(N * d), gpu);
    const double exact_seconds =
        timed(gpu, [&] { post.sample(x.ptr, N, 7, nullptr, 0, ds::execution{where, nullptr}); });
    const double exact_rate = double(N) / exact_seconds;
    std::printf("%-10s %5lld %10lld %16.3e %12.2f %10.0f\n", "exact", static_cast<long long>(d),
                static_cast<long long>(N), exact_rate, exact_rate * double(d) * double(d + 1) / 1e9, 4.0 * d);
  }
  const double peak = gpu ? bench::peak_dram_gbs() : 0.0;
  if (gpu) std::printf("# peak DRAM bandwidth (memory clock x bus width): %.0f GB/s\n", peak);
  std::printf("%-16s %10s %16s %12s %10s %12s %10s\n", "what", "N", "particles/s", "GB/s", "B/part",
              "ws B/part", "of peak");
  struct scheme_bytes {
    ds::resampling_scheme scheme;
    double bytes;
  };
  const scheme_bytes schemes[] = {{ds::resampling_scheme::systematic, 16},
                                  {ds::resampling_scheme::multinomial, 32},
                                  {ds::resampling_scheme::residual, 52},
                                  {ds::resampling_scheme::rejection, 28}};
  for (int log2n : {20, 24}) {
    const std::int64_t N = std::int64_t(1) << log2n;
    if (!gpu && log2n > 20) {
      std::printf("%-16s %10lld %16s (GPU only)\n", "resample", static_cast<long long>(N), "-");
      continue;
    }
    std::vector<float> lw_host(N);
    std::mt19937 gen(2);
    std::uniform_real_distribution<float> u(-5.f, 0.f);
    for (auto& v : lw_host) v = u(gen);
    buffer<float> lw(N, gpu);
    buffer<std::int32_t> anc(N, gpu);
    buffer<ds::particle_report> rep(1, gpu);
    if (gpu)
      check(cudaMemcpy(lw.ptr, lw_host.data(), N * sizeof(float), cudaMemcpyHostToDevice), "copy");
    else
      lw.host = lw_host, lw.ptr = lw.host.data();
    std::size_t ws_bytes = 0;
    for (const scheme_bytes& s : schemes) ws_bytes = std::max(ws_bytes, ds::resampling_workspace_bytes(1, N, s.scheme));
    buffer<unsigned char> ws(ws_bytes, gpu);
    for (const scheme_bytes& s : schemes) {
      ds::resampling_options ro;
      ro.scheme = s.scheme;
      ro.ess_threshold = 2.0;  // always resample
      ds::particle_outputs po;
      po.ancestors = anc.ptr;
      po.reports = rep.ptr;
      // Several calls per timing on the GPU: one call at N = 2^20 is tens of microseconds.
      const int reps = gpu ? 20 : 1;
      const double seconds =
          timed(gpu, [&] {
            for (int r = 0; r < reps; ++r) ds::resample(po, 1, N, lw.ptr, ro, exec, ws.ptr, ws_bytes);
          }) /
          reps;
      const double gbs = double(N) * s.bytes / seconds / 1e9;
      char of_peak[32] = "-";
      if (peak > 0) std::snprintf(of_peak, sizeof of_peak, "%.0f%%", 100 * gbs / peak);
      const std::string what = std::string("res/") + ds::to_string(s.scheme);
      std::printf("%-16s %10lld %16.3e %12.2f %10.0f %12.1f %10s\n", what.c_str(), static_cast<long long>(N),
                  double(N) / seconds, gbs, s.bytes,
                  double(ds::resampling_workspace_bytes(1, N, s.scheme)) / double(N), of_peak);
    }
  }
  return 0;
}
