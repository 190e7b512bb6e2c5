// The gemm path of a large isotropic mixture's score against the direct path, and against the BLAS's own sgemm on
// the same shapes, on the CPU executor. Rounds alternate between the contenders so that machine load hits all alike;
// figures are the median over rounds, and ratios are taken within a round.
//
// Cases: K = 1024 x d = 256 and K = 50,000 x d = 3,072 (a slice of points), an empirical-style mixture (means
// around an offset, equal variances). Work of the gemm path per point: 4 K d flops (two products; 2 K d for
// log-density). "BLAS sgemm" runs the two products of the path alone (blocks of 128 points x 512 components, one
// block per thread at a time, all threads busy), which is the ceiling the path can reach on this BLAS.
// With `crossover` as first argument it prints the direct / gemm ratio over a grid of K and d instead (the
// measurement behind gemm_crossover()).
//
// With `operator` it prints the direct / gemm ratio of a dense observation operator applied to n points
// (observation_operator::apply_batch; the measurement behind operator_gemm_worthwhile()).
//
// With `samplers` it times, for the operator products of the guided SMC (A x0_hat per particle and step), TMPD
// (A C A^T from the d_y rows J a_o, FP64 sums) and the exact posterior (x = m_k + L_k z per sample, FP64), each
// sampler's whole CPU run beside the product's loop restated as the kernels write it (per particle, index-order
// sums, on cpu_threads() threads) and the same product as one BLAS call per step (split over the threads),
// interleaved within each round: the counts' predictions against a measurement, before any sampler uses a product.
//
// With `tmpd` it prints TMPD's whole CPU run alone (the shape of `samplers`, median of 5), and the path its
// covariances took: run it alternately against two builds of the library to compare them.
//
// With `guided` it prints, for DPS (both step forms) and Pi-GDM on the CPU executor with a dense operator, the whole
// run's direct / gemm time ratio (guided_options::operator_path forced either way, interleaved within each round,
// median and range over 7 rounds) over a grid of particles N and operator shapes d_y x d_x: the measurement behind
// operator_gemm_worthwhile() inside the samplers. `guided tmpd` does the same for TMPD (its covariances A C A^T) on a
// smaller grid.
//
// Usage: bench_mixture_gemm [rounds=3] | bench_mixture_gemm crossover | bench_mixture_gemm operator |
//        bench_mixture_gemm samplers | bench_mixture_gemm tmpd | bench_mixture_gemm guided [tmpd]
#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <diffsample/diffsample.hpp>

#if defined(BENCH_HAVE_BLAS)
extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);
extern "C" void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                       const int*, const double*, const int*, const double*, double*, const int*);
#endif

using namespace diffsample;
using clock_type = std::chrono::steady_clock;

namespace {

gaussian_mixture make_mixture(int K, int d, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z(0, 1);
  std::vector<double> mu(std::size_t(K) * d);
  for (auto& v : mu) v = 0.5 + z(gen);
  return gaussian_mixture(d, std::vector<double>(K, 1.0), std::move(mu), std::vector<double>(K, 0.05));
}

double seconds_of(const std::function<void()>& f) {
  const auto t0 = clock_type::now();
  f();
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The path's two products alone: every thread runs its share of blocks (128 points x chunk of 512 components).
double blas_seconds(int n, int K, int d) {
#if defined(BENCH_HAVE_BLAS)
  const int threads = cpu_threads(), block = 128, chunk = std::min(512, K);
  std::vector<float> means(std::size_t(K) * d, 0.01f);
  const int blocks = (n + block - 1) / block;
  return seconds_of([&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::vector<float> x(std::size_t(block) * d, 0.5f), g(std::size_t(block) * chunk), acc(std::size_t(block) * d);
        const float one = 1.f, zero = 0.f;
        for (int b = t; b < blocks; b += threads) {
          const int rows = std::min(block, n - b * block);
          for (int k0 = 0; k0 < K; k0 += chunk) {
            const int count = std::min(chunk, K - k0);
            const float* m = means.data() + std::size_t(k0) * d;
            sgemm_("T", "N", &count, &rows, &d, &one, m, &d, x.data(), &d, &zero, g.data(), &count);
            sgemm_("N", "N", &d, &rows, &count, &one, m, &d, g.data(), &count, &one, acc.data(), &d);
          }
        }
      });
    for (auto& th : pool) th.join();
  });
#else
  (void)n, (void)K, (void)d;
  return NAN;
#endif
}

void run_case(int K, int d, int n_gemm, int n_direct, int rounds) {
  const gaussian_mixture m = make_mixture(K, d, 7);
  const channel ch{0.9, 0.4};
  std::vector<float> x(std::size_t(n_gemm) * d), out(x.size());
  m.sample(x.data(), n_gemm, ch, 3, nullptr, 0, {executor::cpu});
  evaluate_options direct, gemm;
  direct.path = mixture_path::direct;
  gemm.path = mixture_path::gemm;
  const auto eval = [&](const evaluate_options& o, int n) {
    return seconds_of([&] { m.evaluate(out.data(), n, x.data(), ch, quantity::score, o, {executor::cpu}); });
  };
  eval(gemm, std::min(n_gemm, 64));  // warm-up: tables, pool, BLAS buffers
  eval(direct, 1);
  std::vector<double> pd, pg, pb, ratio;
  for (int r = 0; r < rounds; ++r) {
    const double td = eval(direct, n_direct) / n_direct;
    const double tg = eval(gemm, n_gemm) / n_gemm;
    const double tb = blas_seconds(n_gemm, K, d) / n_gemm;
    pd.push_back(1 / td);
    pg.push_back(1 / tg);
    pb.push_back(1 / tb);
    ratio.push_back(td / tg);
  }
  const double flops = 4.0 * K * d;
  std::printf("K = %d, d = %d (%d points gemm, %d direct, %d rounds, %d threads)\n", K, d, n_gemm, n_direct, rounds,
              cpu_threads());
  std::printf("  direct path : %10.1f points/s  (%6.2f GFLOP/s of the 4 K d count)\n", median(pd),
              median(pd) * flops / 1e9);
  std::printf("  gemm path   : %10.1f points/s  (%6.2f GFLOP/s)\n", median(pg), median(pg) * flops / 1e9);
  std::printf("  BLAS sgemm  : %10.1f points/s  (%6.2f GFLOP/s: the two products alone)\n", median(pb),
              median(pb) * flops / 1e9);
  std::printf("  gemm / direct: %.1fx (median of per-round ratios); gemm reaches %.0f%% of the BLAS's own sgemm\n",
              median(ratio), 100 * median(pg) / median(pb));
}

void crossover() {
  std::printf("direct / gemm time ratio for the score (>1: gemm faster), 512 points, CPU executor\n%8s", "K \\ d");
  const int dims[] = {8, 16, 32, 64, 128, 256};
  for (int d : dims) std::printf("%8d", d);
  std::printf("\n");
  for (int K : {16, 64, 256, 1024, 4096}) {
    std::printf("%8d", K);
    for (int d : dims) {
      const gaussian_mixture m = make_mixture(K, d, 1);
      const int n = 512;
      std::vector<float> x(std::size_t(n) * d), out(x.size());
      m.sample(x.data(), n, {1.0, 0.5}, 1, nullptr, 0, {executor::cpu});
      evaluate_options direct, gemm;
      direct.path = mixture_path::direct;
      gemm.path = mixture_path::gemm;
      std::vector<double> r;
      for (int round = 0; round < 3; ++round) {
        const double td = seconds_of([&] { m.evaluate(out.data(), n, x.data(), {1.0, 0.5}, quantity::score, direct, {executor::cpu}); });
        const double tg = seconds_of([&] { m.evaluate(out.data(), n, x.data(), {1.0, 0.5}, quantity::score, gemm, {executor::cpu}); });
        r.push_back(td / tg);
      }
      std::printf("%8.2f", median(r));
      std::fflush(stdout);
    }
    std::printf("\n");
  }
}

// A dense observation operator applied to n points (A x forward, then A^T u), direct path (one FP32 sum per point
// and output on the pool's threads) against one matrix product (sgemm), interleaved within each round: the
// measurement behind operator_gemm_worthwhile(). Prints direct / gemm time ratios (> 1: gemm faster), median of 5.
void operator_crossover() {
  std::printf("dense operator, A x then A^T u: direct / gemm time ratio (>1: gemm faster), CPU executor, %d threads\n",
              cpu_threads());
  const int sizes[][2] = {{4, 16}, {8, 32}, {16, 64}, {32, 32}, {32, 128}, {64, 64}, {64, 256}, {128, 512}};
  std::printf("%10s", "n \\ dy x dx");
  for (const auto& sz : sizes) std::printf("  %4dx%-4d", sz[0], sz[1]);
  std::printf("\n");
  for (int n : {4, 16, 64, 256, 2048}) {
    std::printf("%10d", n);
    for (const auto& sz : sizes) {
      const int dy = sz[0], dx = sz[1];
      std::mt19937_64 gen(3);
      std::normal_distribution<double> z;
      std::vector<double> A(std::size_t(dy) * dx);
      for (double& a : A) a = z(gen);
      const observation_operator op = observation_operator::dense(dy, dx, A);
      std::vector<float> x(std::size_t(n) * dx, 0.5f), y(std::size_t(n) * dy), back(x.size());
      // Enough repetitions for about 2e7 multiply-adds per timing.
      const int reps = std::max(1, int(2e7 / (2.0 * n * dy * dx)));
      auto run = [&](mixture_path path) {
        return seconds_of([&] {
          for (int r = 0; r < reps; ++r) {
            op.apply_batch(y.data(), n, x.data(), false, path, {executor::cpu});
            op.apply_batch(back.data(), n, y.data(), true, path, {executor::cpu});
          }
        });
      };
      std::vector<double> ratio;
      for (int round = 0; round < 5; ++round) {
        const double td = run(mixture_path::direct), tg = run(mixture_path::gemm);
        ratio.push_back(td / tg);
      }
      std::printf("  %9.2f", median(ratio));
      std::fflush(stdout);
    }
    std::printf("\n");
  }
}


// Runs body(t, threads) on cpu_threads() threads and joins them.
void on_threads(const std::function<void(int, int)>& body) {
  const int threads = cpu_threads();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t, threads);
  for (auto& th : pool) th.join();
}

// The three candidates for matrix products in the other samplers (see the file's comment). Shapes: d = d_y = 64,
// K = 25 components, N = 256 particles, 10 steps (the posterior: N x 10 samples from K = 25 components).
void sampler_products() {
  const int d = 64, dy = 64, K = 25, N = 256, steps = 10, rounds = 5;
  std::printf("operator products of the other samplers: d = d_y = %d, K = %d, N = %d, %d steps, %d threads, "
              "medians of %d interleaved rounds (seconds per run)\n", d, K, N, steps, cpu_threads(), rounds);
  const gaussian_mixture mix = make_mixture(K, d, 5);
  std::mt19937_64 gen(7);
  std::normal_distribution<double> z;
  std::vector<double> A(std::size_t(dy) * d);
  for (double& a : A) a = z(gen) / 8.0;
  guided_problems pr;
  pr.problems = 1;
  pr.d_y = dy;
  pr.A = A;
  pr.y.assign(dy, 0.3);
  pr.sigma_y = {0.3};
  const std::vector<float> A32(A.begin(), A.end());
  std::vector<float> particles(std::size_t(N) * d);
  guided_outputs go;
  go.particles = particles.data();
  auto run = [&](guided_sampler which) {
    guided_options o;
    o.potentials = guided_potentials::linear;  // the SMC step whose A x0_hat is timed below (not the default)
    o.sampler = which;
    o.particles = N;
    o.steps = steps;
    o.seed = 3;
    return seconds_of([&] { guided_sample(mix, go, pr, o, {executor::cpu}); });
  };
  // TMPD's A C A^T: per particle-step 2 d_y^2 d flops over the d_y x d rows J a_o (FP32 values, FP64 sums).
  std::vector<float> rows(std::size_t(N) * dy * d);
  for (float& v : rows) v = float(z(gen));
  std::vector<double> cyy(std::size_t(N) * dy * dy), rows64(rows.size()), A64(A.begin(), A.end());
  auto tmpd_direct = [&] {
    return seconds_of([&] {
      for (int k = 0; k < steps; ++k)
        on_threads([&](int t, int T) {
          for (int i = t; i < N; i += T) {
            const float* J = rows.data() + std::size_t(i) * dy * d;
            double* C = cyy.data() + std::size_t(i) * dy * dy;
            for (int q = 0; q < dy; ++q)
              for (int o = 0; o < dy; ++o) {
                double acc = 0;
                for (int j = 0; j < d; ++j) acc += double(A32[std::size_t(o) * d + j]) * double(J[std::size_t(q) * d + j]);
                C[o * dy + q] = acc;
              }
          }
        });
    });
  };
  // One dgemm per step and thread over its particles: C (d_y x n d_y) = A J^T, the rows widened to FP64 first.
  auto tmpd_gemm = [&] {
    return seconds_of([&] {
#if defined(BENCH_HAVE_BLAS)
      for (int k = 0; k < steps; ++k)
        on_threads([&](int t, int T) {
          const int first = N * t / T, last = N * (t + 1) / T, cols = (last - first) * dy;
          const std::size_t at = std::size_t(first) * dy * d;
          for (std::size_t e = at; e < std::size_t(last) * dy * d; ++e) rows64[e] = rows[e];
          const double one = 1, zero = 0;
          dgemm_("T", "N", &dy, &cols, &d, &one, A64.data(), &d, rows64.data() + at, &d, &zero,
                 cyy.data() + std::size_t(first) * dy * dy, &dy);
        });
#endif
    });
  };
  // SMC's A x0_hat: per particle-step 2 d_y d flops (FP32, index order) against one sgemm per step.
  std::vector<float> x0(std::size_t(N) * d, 0.5f), ax(std::size_t(N) * dy);
  auto smc_direct = [&] {
    return seconds_of([&] {
      for (int k = 0; k < steps; ++k)
        on_threads([&](int t, int T) {
          for (int i = t; i < N; i += T)
            for (int o = 0; o < dy; ++o) {
              float acc = 0.f;
              for (int j = 0; j < d; ++j) acc += A32[std::size_t(o) * d + j] * x0[std::size_t(i) * d + j];
              ax[std::size_t(i) * dy + o] = acc;
            }
        });
    });
  };
  auto smc_gemm = [&] {
    return seconds_of([&] {
#if defined(BENCH_HAVE_BLAS)
      for (int k = 0; k < steps; ++k)
        on_threads([&](int t, int T) {
          const int first = N * t / T, n = N * (t + 1) / T - first;
          const float one = 1.f, zero = 0.f;
          sgemm_("T", "N", &dy, &n, &d, &one, A32.data(), &d, x0.data() + std::size_t(first) * d, &d, &zero,
                 ax.data() + std::size_t(first) * dy, &dy);
        });
#endif
    });
  };
  // The exact posterior's transform: per sample 2 d^2 flops (FP64) with the factor of its component; samples grouped
  // by component, one dgemm per component against the same loop.
  linear_observation obs;
  obs.d_y = dy;
  obs.d_x = d;
  obs.A = A;
  obs.sigma_y = 0.3;
  obs.y.assign(dy, 0.3);
  const mixture_posterior post(mix, obs);
  const int n = N * steps, per = n / K;
  std::vector<double> L(std::size_t(K) * d * d), zs(std::size_t(n) * d), xs(zs.size()), mk(std::size_t(K) * d, 0.1);
  for (double& v : L) v = z(gen) * 0.1;
  for (double& v : zs) v = z(gen);
  std::vector<float> samples(std::size_t(n) * d);
  auto post_direct = [&] {
    return seconds_of([&] {
      on_threads([&](int t, int T) {
        for (int i = t; i < n; i += T) {
          const int k = std::min(K - 1, i / per);
          const double* Lk = L.data() + std::size_t(k) * d * d;
          for (int j = 0; j < d; ++j) {
            double acc = mk[std::size_t(k) * d + j];
            for (int l = 0; l <= j; ++l) acc += Lk[std::size_t(j) * d + l] * zs[std::size_t(i) * d + l];
            xs[std::size_t(i) * d + j] = acc;
          }
        }
      });
    });
  };
  auto post_gemm = [&] {
    return seconds_of([&] {
#if defined(BENCH_HAVE_BLAS)
      on_threads([&](int t, int T) {
        for (int k = t; k < K; k += T) {
          const int first = k * per, count = k == K - 1 ? n - first : per;
          const double one = 1;
          for (int i = first; i < first + count; ++i)
            for (int j = 0; j < d; ++j) xs[std::size_t(i) * d + j] = mk[std::size_t(k) * d + j];
          dgemm_("T", "N", &d, &count, &d, &one, L.data() + std::size_t(k) * d * d, &d, zs.data() + std::size_t(first) * d,
                 &d, &one, xs.data() + std::size_t(first) * d, &d);
        }
      });
#endif
    });
  };
  auto post_run = [&] { return seconds_of([&] { post.sample(samples.data(), n, 11); }); };
  std::vector<double> t[9];
  for (int r = 0; r < rounds; ++r) {
    t[0].push_back(run(guided_sampler::tmpd));
    t[1].push_back(tmpd_direct());
    t[2].push_back(tmpd_gemm());
    t[3].push_back(run(guided_sampler::smc));
    t[4].push_back(smc_direct());
    t[5].push_back(smc_gemm());
    t[6].push_back(post_run());
    t[7].push_back(post_direct());
    t[8].push_back(post_gemm());
  }
  const char* names[3] = {"TMPD A C A^T", "SMC A x0_hat", "posterior L_k z"};
  const double flops[3] = {2.0 * dy * dy * d * N * steps, 2.0 * dy * d * N * steps, 1.0 * d * (d + 1) * n};
  std::printf("%-16s %12s %12s %12s %10s %10s %12s\n", "product", "whole run", "direct loop", "BLAS", "direct/run",
              "BLAS/run", "direct/BLAS");
  for (int c = 0; c < 3; ++c) {
    const double whole = median(t[3 * c]), direct = median(t[3 * c + 1]), blas = median(t[3 * c + 2]);
    std::printf("%-16s %12.4g %12.4g %12.4g %10.3f %10.3f %12.2f   (%.3g Gflop/s direct, %.3g BLAS)\n", names[c],
                whole, direct, blas, direct / whole, blas / whole, direct / blas, flops[c] / direct * 1e-9,
                flops[c] / blas * 1e-9);
  }
}

// TMPD's whole CPU run at the shape of sampler_products(), median of 5, and the operator path it reported.
void tmpd_run() {
  const int d = 64, dy = 64, K = 25, N = 256, steps = 10;
  const gaussian_mixture mix = make_mixture(K, d, 5);
  std::mt19937_64 gen(7);
  std::normal_distribution<double> z;
  guided_problems pr;
  pr.problems = 1;
  pr.d_y = dy;
  pr.A.resize(std::size_t(dy) * d);
  for (double& a : pr.A) a = z(gen) / 8.0;
  pr.y.assign(dy, 0.3);
  pr.sigma_y = {0.3};
  std::vector<float> particles(std::size_t(N) * d);
  guided_outputs go;
  go.particles = particles.data();
  guided_options o;
  o.sampler = guided_sampler::tmpd;
  o.particles = N;
  o.steps = steps;
  o.seed = 3;
  std::vector<double> t;
  mixture_path path = mixture_path::direct;
  for (int r = 0; r < 5; ++r)
    t.push_back(seconds_of([&] { path = guided_sample(mix, go, pr, o, {executor::cpu}).operator_path; }));
  std::printf("tmpd d = d_y = %d, K = %d, N = %d, %d steps, %d threads: %.4g s (median of 5), operator path %s\n", d,
              K, N, steps, cpu_threads(), median(t), to_string(path));
}
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  char buf[64] = {0};
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!ok) return "?";
  std::string s(buf);
  return s.substr(0, s.find(' '));
}

// Whole guided runs with the operator's products forced on and off (see the file's comment). K = 25 components,
// 10 steps (TMPD: 3), one problem, y = 0.3, sigma_y = 0.3, A with N(0, 1 / d_x) entries.
void guided_operator_crossover(bool tmpd) {
  const int K = 25, steps = tmpd ? 3 : 10, rounds = 7;
  const int shapes[][2] = {{1, 8}, {4, 16}, {16, 64}, {64, 64}, {32, 256}, {128, 512}};
  struct form {
    const char* name;
    guided_sampler sampler;
    dps_step_form step;
  };
  const std::vector<form> forms =
      tmpd ? std::vector<form>{{"tmpd", guided_sampler::tmpd, dps_step_form::likelihood}}
           : std::vector<form>{{"dps (likelihood step)", guided_sampler::dps, dps_step_form::likelihood},
                               {"dps (normalised step)", guided_sampler::dps, dps_step_form::normalised},
                               {"pigdm", guided_sampler::pigdm, dps_step_form::likelihood}};
  std::printf("guided runs, dense operator: direct / gemm whole-run time ratio (>1: gemm faster), median [min, max] of "
              "%d interleaved rounds; K = %d, %d steps, CPU executor, %d threads, BLAS %s\n",
              rounds, K, steps, cpu_threads(), cpu_blas_name().c_str());
  for (const form& fm : forms) {
    std::printf("%s (load average %s at start)\n%8s", fm.name, load_average().c_str(), "N \\ dy x dx");
    for (const auto& sz : shapes) std::printf("  %20s", (std::to_string(sz[0]) + "x" + std::to_string(sz[1])).c_str());
    std::printf("\n");
    for (int N : {4, 16, 64, 256, 2048}) {
      std::printf("%8d", N);
      for (const auto& sz : shapes) {
        const int dy = sz[0], dx = sz[1];
        // TMPD runs d_y JVPs per particle and step: its grid stops where a run would take seconds.
        if (tmpd && double(N) * dy * dx > 3e6) {
          std::printf("  %20s", "-");
          continue;
        }
        const gaussian_mixture mix = make_mixture(K, dx, 5);
        std::mt19937_64 gen(7);
        std::normal_distribution<double> z;
        guided_problems pr;
        pr.problems = 1;
        pr.d_y = dy;
        pr.A.resize(std::size_t(dy) * dx);
        for (double& a : pr.A) a = z(gen) / std::sqrt(double(dx));
        pr.y.assign(dy, 0.3);
        pr.sigma_y = {0.3};
        std::vector<float> particles(std::size_t(N) * dx);
        guided_outputs go;
        go.particles = particles.data();
        guided_options o;
        o.sampler = fm.sampler;
        o.dps_step = fm.step;
        o.particles = N;
        o.steps = steps;
        o.seed = 3;
        bool paths_ok = true;
        auto run = [&](mixture_path path, int reps) {
          o.operator_path = path;
          return seconds_of([&] {
            for (int r = 0; r < reps; ++r)
              paths_ok = paths_ok && guided_sample(mix, go, pr, o, {executor::cpu}).operator_path == path;
          });
        };
        // Enough repetitions for about 0.1 s per timing (one untimed warm-up of each path first).
        run(mixture_path::gemm, 1);
        const double one = run(mixture_path::direct, 1);
        const int reps = std::max(1, int(0.1 / std::max(one, 1e-7)));
        std::vector<double> ratio;
        for (int round = 0; round < rounds; ++round) {
          double td, tg;
          if (round % 2 == 0) {
            td = run(mixture_path::direct, reps);
            tg = run(mixture_path::gemm, reps);
          } else {
            tg = run(mixture_path::gemm, reps);
            td = run(mixture_path::direct, reps);
          }
          ratio.push_back(td / tg);
        }
        char cell[64];
        std::snprintf(cell, sizeof cell, "%.2f [%.2f,%.2f]%s", median(ratio),
                      *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()),
                      paths_ok ? "" : "!");
        std::printf("  %20s", cell);
        std::fflush(stdout);
      }
      std::printf("\n");
    }
    std::printf("(load average %s at end)\n", load_average().c_str());
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "guided") {
    guided_operator_crossover(argc > 2 && std::string(argv[2]) == "tmpd");
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "crossover") {
    crossover();
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "tmpd") {
    tmpd_run();
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "samplers") {
    sampler_products();
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "operator") {
    operator_crossover();
    return 0;
  }
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  std::printf("CPU BLAS: %s\n", cpu_blas_name().c_str());
  run_case(1024, 256, 4096, 512, rounds);
  run_case(50000, 3072, 256, 4, rounds);
  return 0;
}
