// Calls from several application threads at once on the CPU executor (an inference server's use): every call's
// outputs are the bits the same call gives alone. The mixtures are shared by the threads; each thread has its own
// buffers, seed and (for the guided samplers) workspace. The calls overlap: the pool runs one call's loops at a time
// and a call that finds it busy runs on its own thread, so both routes run here, as do the per-thread scratch
// buffers, the GEMM path's shared tables (made by the first call, here by the threads at once) and its BLAS lock.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <diffsample/diffsample.hpp>

namespace ds = diffsample;

namespace {

constexpr ds::execution cpu{ds::executor::cpu, nullptr};
using bytes = std::vector<unsigned char>;

template <class T>
void append(bytes& b, const std::vector<T>& v) {
  const auto* c = reinterpret_cast<const unsigned char*>(v.data());
  b.insert(b.end(), c, c + v.size() * sizeof(T));
}

std::vector<float> points(std::int64_t n, std::int64_t d, unsigned seed, float scale) {
  std::vector<float> x(static_cast<std::size_t>(n * d));
  unsigned s = seed;
  for (float& v : x) {
    s = s * 1664525u + 1013904223u;
    v = scale * (float(s >> 8) / float(1u << 24) * 2.f - 1.f);
  }
  return x;
}

constexpr int threads = 4, repeats = 3;

// task(t) -> its outputs' bytes. Each task alone first (the references), then `threads` threads running their task
// `repeats` times each at once; every run must give its reference's bytes. Prints the most calls seen in flight
// (not asserted: a loaded machine may run the threads one after another).
void expect_same_bits_when_concurrent(const std::function<bytes(int)>& task, const std::string& what) {
  std::vector<bytes> reference;
  for (int t = 0; t < threads; ++t) reference.push_back(task(t));
  EXPECT_NE(reference[0], reference[1]) << what << ": the tasks must differ, so that a swap between threads shows";
  std::atomic<int> ready{0}, in_flight{0}, most{0}, mismatches{0};
  std::vector<std::string> errors(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ++ready;  // every thread made before the first call
      while (ready.load() < threads) std::this_thread::yield();
      for (int r = 0; r < repeats; ++r) {
        const int now = ++in_flight;
        for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
        }
        try {
          if (task(t) != reference[t]) ++mismatches;
        } catch (const std::exception& e) {
          errors[t] = e.what();
        }
        --in_flight;
      }
    });
  for (std::thread& th : pool) th.join();
  EXPECT_EQ(mismatches.load(), 0) << what << ": runs that differed from their task alone, of " << threads * repeats;
  for (int t = 0; t < threads; ++t) EXPECT_EQ(errors[t], "") << what << ", thread " << t;
  std::printf("%s: at most %d of %d calls in flight at once\n", what.c_str(), most.load(), threads);
}

TEST(Threads, FusedSamplersAndDirectEvaluateGiveTheirBitsAlone) {
  const std::int64_t d = 3, n = 1500;
  const ds::gaussian_mixture mix = ds::grid_mixture(d, 3, 2.0, 0.3);
  expect_same_bits_when_concurrent(
      [&](int t) {
        std::vector<float> x = points(n, d, 100 + t, 3.f);
        std::vector<std::int64_t> accepted(n);
        ds::langevin_options lo;
        lo.steps = 30;
        lo.step_size = 0.02;
        lo.seed = 7 + t;
        ds::langevin(mix, x.data(), {nullptr, accepted.data()}, n, lo, cpu);
        std::vector<float> y(static_cast<std::size_t>(n * d));
        ds::diffusion_options o;
        o.steps = 20;
        o.seed = 11 + t;
        ds::diffusion(mix, y.data(), {}, n, o, cpu);
        // d = 3 is no register dimension: the direct evaluate works in per-thread packs.
        std::vector<float> score(static_cast<std::size_t>(n * d));
        const std::vector<float> at = points(n, d, 200 + t, 3.f);
        ds::evaluate_options direct;
        direct.path = ds::mixture_path::direct;
        mix.evaluate(score.data(), n, at.data(), {0.8, 0.6}, ds::quantity::score, direct, cpu);
        bytes b;
        append(b, x);
        append(b, accepted);
        append(b, y);
        append(b, score);
        return b;
      },
      "langevin + diffusion + evaluate (direct)");
}

// A large mixture's GEMM path: its tables are made by the first call, here by four threads at once.
TEST(Threads, GemmPathEvaluateAndJvpGiveTheirBitsAlone) {
  const std::int64_t K = 600, d = 8;
  std::vector<double> w(K), mu(K * d), var(K);
  for (std::int64_t k = 0; k < K; ++k) {
    w[k] = 1.0 + double(k % 7);
    var[k] = 0.1 + 0.01 * double(k % 13);
    for (std::int64_t j = 0; j < d; ++j) mu[k * d + j] = 3.0 * std::sin(0.37 * double(k) + 1.3 * double(j));
  }
  const ds::gaussian_mixture mix(d, w, mu, var);
  ds::evaluate_options o;
  o.path = ds::mixture_path::gemm;
  expect_same_bits_when_concurrent(
      [&](int t) {
        const std::int64_t n = t % 2 == 0 ? 700 : 130;
        const std::vector<float> x = points(n, d, 500 + t, 3.f), v = points(n, d, 600 + t, 1.f);
        std::vector<float> m(static_cast<std::size_t>(n * d)), jv(static_cast<std::size_t>(n * d));
        if (mix.evaluate(m.data(), n, x.data(), {0.9, 0.5}, ds::quantity::denoiser, o, cpu).path != o.path)
          throw std::runtime_error("not the GEMM path");
        mix.denoiser_jvp(jv.data(), n, x.data(), v.data(), {0.9, 0.5}, cpu);
        bytes b;
        append(b, m);
        append(b, jv);
        return b;
      },
      "evaluate (GEMM path) + denoiser_jvp");
}

// The guided samplers, the default SMC and the other posterior samplers, each thread with its own workspace.
TEST(Threads, GuidedSamplersGiveTheirBitsAlone) {
  const std::int64_t d = 4;
  const ds::gaussian_mixture mix = ds::grid_mixture(d, 3, 2.0, 0.3);
  ds::guided_problems pr;
  pr.problems = 2;
  pr.d_y = 2;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < d; ++j) pr.A.push_back(std::sin(1.0 + b + 3 * i + 0.7 * j));
  pr.y = {1.0, -0.5, 0.3, 2.0};
  pr.sigma_y = {0.3, 0.5};
  for (ds::guided_sampler s : {ds::guided_sampler::smc, ds::guided_sampler::dps, ds::guided_sampler::tmpd,
                               ds::guided_sampler::dcps}) {
    expect_same_bits_when_concurrent(
        [&](int t) {
          ds::guided_options o;
          o.sampler = s;
          o.particles = 200;
          o.steps = 12;
          o.seed = 31 + t;
          if (s == ds::guided_sampler::dcps) o.dcps_langevin_steps = 3;
          const std::int64_t BN = pr.problems * o.particles;
          std::vector<float> particles(static_cast<std::size_t>(BN * d));
          std::vector<double> logz(2);
          ds::guided_outputs out;
          out.particles = particles.data();
          if (s == ds::guided_sampler::smc) out.log_normaliser = logz.data();
          const std::size_t bytes_needed = ds::guided_workspace_bytes(mix, pr, o, cpu);
          std::vector<std::uint64_t> workspace(bytes_needed / 8 + 2);  // 16-byte aligned
          void* base = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(workspace.data()) + 15) &
                                               ~std::uintptr_t(15));
          ds::guided_sample(mix, out, pr, o, cpu, base, bytes_needed);
          bytes b;
          append(b, particles);
          append(b, logz);
          return b;
        },
        std::string("guided_sample ") + ds::to_string(s));
  }
}

}  // namespace
