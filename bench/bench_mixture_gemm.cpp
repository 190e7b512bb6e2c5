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
// With `cuda` as first argument the same on the CUDA executor (without a usable GPU each CUDA mode prints one line,
// "bench_mixture_gemm: no CUDA device (<reason>)", and exits 0). Points, outputs and workspaces are device memory;
// every call runs on the legacy default stream and is timed with CUDA events after a warm-up (prepare_gemm(cuda)
// first); contenders alternate within each round (the order rotating), figures are medians over rounds, and the
// GPU's name and FP32 / DRAM peaks are printed first. Each mode is sized to end within about 25 s on an H200
// (`crossover` and `operator` also start no new measurement past 20 s).
// - `cuda [rounds=5]`: the two cases above, K = 1024 x d = 256 over 262,144 points and K = 50,000 x d = 3,072 over
//   8,192 (one pass of the path): points/s of the score on the gemm path, the direct path and cuBLAS's sgemm of the
//   path's two products alone (its passes of 8,192 points x chunks of 512 components, FP32 without TF32, the path's
//   4 MiB workspace: the ceiling), the gemm path's fraction of that ceiling, TFLOP/s of the 4 K d flops per point, and
//   the error of both paths against the FP64 reference on 8 points. The direct path is timed only where a call is
//   predicted to take at most 0.5 s (from a 64-component mixture of the same kind at the same points: its per-point
//   loop is linear in K); elsewhere its figure is that extrapolation, marked "~".
// - `cuda crossover`: the direct / gemm time ratio of the score over d in {2, 16, 64, 256, 1024, 3072} x K in {64,
//   256, 1024, 4096, 16384, 65536} at 65,536 points per call (K d > 2^25 not run; the direct path extrapolated where
//   a call would exceed 0.1 s), as a table, and last the rule of gemm_crossover()'s form it implies,
//   "gemm_crossover_rule {min_dim, min_kd}" (the one sending the fewest cells, weighted by |ln ratio|, to the slower
//   path).
// - `cuda operator`: observation_operator::apply_batch has no device form (the CPU executor only), and on the CUDA
//   executor operator_gemm_worthwhile() decides for DPS and Pi-GDM alone; so this is the `guided` mode on the CUDA
//   executor: whole DPS (both step forms) and Pi-GDM runs with guided_options::operator_path forced either way, over
//   N in {64, 1024, 16384, 262144} x the same d_y x d_x shapes, median [min, max] of 5 interleaved rounds.
// bench/torch_mixture_gemm.py is the PyTorch peer of `cuda` (same cases, same line format).
//
// Usage: bench_mixture_gemm [rounds=3] | bench_mixture_gemm crossover | bench_mixture_gemm operator |
//        bench_mixture_gemm samplers | bench_mixture_gemm tmpd | bench_mixture_gemm guided [tmpd] |
//        bench_mixture_gemm cuda [rounds=5] | bench_mixture_gemm cuda crossover | bench_mixture_gemm cuda operator
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "bench_common.hpp"

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

// The operator shapes d_y x d_x of the `guided` and `cuda operator` tables, and a sampler form of their rows: the
// options of a whole run of N particles over `steps` steps (seed 3).
const int operator_shapes[][2] = {{1, 8}, {4, 16}, {16, 64}, {64, 64}, {32, 256}, {128, 512}};
struct form {
  const char* name;
  guided_sampler sampler;
  dps_step_form step;
  guided_options options(std::int64_t N, int steps) const {
    guided_options o;
    o.sampler = sampler;
    o.dps_step = step;
    o.particles = N;
    o.steps = steps;
    o.seed = 3;
    return o;
  }
};

// The tables' column heads, one per operator shape, and the end of the line.
void print_shape_columns() {
  for (const auto& sz : operator_shapes)
    std::printf("  %20s", (std::to_string(sz[0]) + "x" + std::to_string(sz[1])).c_str());
  std::printf("\n");
}

// One problem with a dense d_y x d_x operator of N(0, 1 / d_x) entries (seed 7), y = 0.3, sigma_y = 0.3: the `guided`
// and `cuda operator` tables' problem.
guided_problems dense_problem(int dy, int dx) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> z;
  guided_problems pr;
  pr.problems = 1;
  pr.d_y = dy;
  pr.A.resize(std::size_t(dy) * dx);
  for (double& a : pr.A) a = z(gen) / std::sqrt(double(dx));
  pr.y.assign(std::size_t(dy), 0.3);
  pr.sigma_y = {0.3};
  return pr;
}

// A whole-run direct / gemm time ratio cell of the `guided` and `cuda operator` tables: `rounds` rounds of `reps`
// runs of each path (run(path, reps) returns the seconds), the order alternating from round to round, printed as
// "median [min,max]" with '!' when a run reported another path than the one forced.
void print_ratio_cell(const std::function<double(mixture_path, int)>& run, int reps, int rounds, const bool& paths_ok) {
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
  std::snprintf(cell, sizeof cell, "%.2f [%.2f,%.2f]%s", median(ratio), *std::min_element(ratio.begin(), ratio.end()),
                *std::max_element(ratio.begin(), ratio.end()), paths_ok ? "" : "!");
  std::printf("  %20s", cell);
  std::fflush(stdout);
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
  std::vector<double> pd, pg, pb, ratio, of_blas;
  for (int r = 0; r < rounds; ++r) {
    const double td = eval(direct, n_direct) / n_direct;
    const double tg = eval(gemm, n_gemm) / n_gemm;
    const double tb = blas_seconds(n_gemm, K, d) / n_gemm;
    pd.push_back(1 / td);
    pg.push_back(1 / tg);
    pb.push_back(1 / tb);
    ratio.push_back(td / tg);
    of_blas.push_back(tb / tg);
  }
  const double flops = 4.0 * K * d;
  std::printf("K = %d, d = %d (%d points gemm, %d direct, %d rounds, %d threads)\n", K, d, n_gemm, n_direct, rounds,
              cpu_threads());
  std::printf("  direct path : %10.1f points/s  (%6.2f GFLOP/s of the 4 K d count)\n", median(pd),
              median(pd) * flops / 1e9);
  std::printf("  gemm path   : %10.1f points/s  (%6.2f GFLOP/s)\n", median(pg), median(pg) * flops / 1e9);
  std::printf("  BLAS sgemm  : %10.1f points/s  (%6.2f GFLOP/s: the two products alone)\n", median(pb),
              median(pb) * flops / 1e9);
  std::printf("  gemm / direct: %.1fx (median of per-round ratios); gemm reaches %.0f%% of the BLAS's own sgemm "
              "(median of per-round ratios)\n",
              median(ratio), 100 * median(of_blas));
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
  const guided_problems pr = dense_problem(dy, d);  // entries N(0, 1 / 64)
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
    print_shape_columns();
    for (int N : {4, 16, 64, 256, 2048}) {
      std::printf("%8d", N);
      for (const auto& sz : operator_shapes) {
        const int dy = sz[0], dx = sz[1];
        // TMPD runs d_y JVPs per particle and step: its grid stops where a run would take seconds.
        if (tmpd && double(N) * dy * dx > 3e6) {
          std::printf("  %20s", "-");
          continue;
        }
        const gaussian_mixture mix = make_mixture(K, dx, 5);
        const guided_problems pr = dense_problem(dy, dx);
        std::vector<float> particles(std::size_t(N) * dx);
        guided_outputs go;
        go.particles = particles.data();
        guided_options o = fm.options(N, steps);
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
        print_ratio_cell(run, reps, rounds, paths_ok);
      }
      std::printf("\n");
    }
    std::printf("(load average %s at end)\n", load_average().c_str());
  }
}

// --- The CUDA executor: `cuda [rounds]`, `cuda crossover`, `cuda operator` -------------------------------------------
// Every call runs on the legacy default stream (execution{cuda, nullptr}; the ceiling's cuBLAS handle is bound to
// stream 0 too), where the CUDA events are recorded: a timing spans from before a call's first launch to after its
// last one's end. Points, outputs and workspaces are device memory; nothing is allocated inside a timing.

double since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// `cuda crossover` and `cuda operator` start no new measurement past this many seconds from their start (they print
// "t" where the figure would have been), so that they end within about 25 s whatever the device.
constexpr double cuda_mode_budget_s = 20.0;

// Without a usable GPU: one line saying why, and the mode exits 0 (as the other benchmarks of the CUDA executor do).
bool no_cuda_device() {
  if (cuda_available()) return false;
  std::printf("bench_mixture_gemm: no CUDA device (%s)\n", cuda_unavailable_reason().c_str());
  return true;
}

void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS error %s\n", what, cublasGetStatusString(s));
    std::exit(1);
  }
}

void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// The GPU's name and peaks: the first lines of every CUDA mode.
void announce_device(const char* mode) {
  int device = 0, runtime = 0, driver = 0;
  bench::check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  bench::check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  bench::check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
  bench::check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
  std::printf("# bench_mixture_gemm %s: GPU %s (sm_%d%d, %d multiprocessors, %.1f GiB), CUDA runtime %d, driver %d\n",
              mode, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              double(prop.totalGlobalMem) / double(1 << 30), runtime, driver);
  std::printf("# FP32 peak %.1f TFLOP/s (multiprocessors x FP32 lanes x 2 x the largest SM clock), DRAM %.0f GB/s\n",
              bench::peak_fp32_flops() * 1e-12, bench::peak_dram_gbs());
  std::fflush(stdout);
}

// CUDA-event timing on the legacy default stream.
class event_timer {
 public:
  event_timer() {
    bench::check(cudaEventCreate(&t0_), "cudaEventCreate");
    bench::check(cudaEventCreate(&t1_), "cudaEventCreate");
  }
  ~event_timer() {
    cudaEventDestroy(t0_);
    cudaEventDestroy(t1_);
  }
  event_timer(const event_timer&) = delete;
  event_timer& operator=(const event_timer&) = delete;
  /// Seconds from before the first of `reps` calls of f() to after the last one's end on the device.
  double seconds(const std::function<void()>& f, int reps = 1) {
    bench::check(cudaEventRecord(t0_, nullptr), "cudaEventRecord");
    for (int r = 0; r < reps; ++r) f();
    bench::check(cudaGetLastError(), "a launch of the timed call");
    bench::check(cudaEventRecord(t1_, nullptr), "cudaEventRecord");
    bench::check(cudaEventSynchronize(t1_), "cudaEventSynchronize (the timed call)");
    float ms = 0;
    bench::check(cudaEventElapsedTime(&ms, t0_, t1_), "cudaEventElapsedTime");
    return 1e-3 * double(ms);
  }

 private:
  cudaEvent_t t0_ = nullptr, t1_ = nullptr;
};

// count floats of device memory, freed on scope exit.
struct device_floats {
  bench::device_memory mem;
  explicit device_floats(std::int64_t count) : mem(std::size_t(count) * sizeof(float)) {}
  float* get() const { return static_cast<float*>(mem.p); }
};

// make_mixture()'s kind of mixture (means 0.5 + N(0, 1), equal weights, variances 0.05) with the normals drawn on
// every hardware thread (one stream per thread): the K d = 1.5 x 10^8 means of the large case in a fraction of a
// second instead of several.
gaussian_mixture make_mixture_fast(std::int64_t K, std::int64_t d, unsigned seed) {
  std::vector<double> mu(std::size_t(K * d));
  const int threads = std::max(1, std::min(32, int(std::thread::hardware_concurrency())));
  const std::size_t per = (mu.size() + std::size_t(threads) - 1) / std::size_t(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&mu, per, seed, t] {
      std::mt19937_64 gen(std::uint64_t(seed) * 1000003u + std::uint64_t(t));
      std::normal_distribution<double> z(0, 1);
      const std::size_t first = std::min(mu.size(), per * std::size_t(t));
      const std::size_t last = std::min(mu.size(), per * std::size_t(t + 1));
      for (std::size_t i = first; i < last; ++i) mu[i] = 0.5 + z(gen);
    });
  for (auto& th : pool) th.join();
  return gaussian_mixture(d, std::vector<double>(std::size_t(K), 1.0), std::move(mu),
                          std::vector<double>(std::size_t(K), 0.05));
}

// max |out - FP64 reference| / max |reference| of the score over the first m points (copied to the host), NaN when
// a value is not finite.
double error_vs_fp64(const gaussian_mixture& mix, const float* x_dev, const float* out_dev, std::int64_t m,
                     channel ch) {
  const std::int64_t d = mix.dim();
  std::vector<float> x32(std::size_t(m * d)), out(std::size_t(m * d));
  bench::check(cudaMemcpy(x32.data(), x_dev, x32.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy (x)");
  bench::check(cudaMemcpy(out.data(), out_dev, out.size() * sizeof(float), cudaMemcpyDeviceToHost),
               "cudaMemcpy (out)");
  const std::vector<double> x64(x32.begin(), x32.end());
  std::vector<double> ref(x64.size());
  mix.evaluate_fp64(ref.data(), m, x64.data(), ch, quantity::score);
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i]) || !std::isfinite(ref[i])) return NAN;
    err = std::max(err, std::abs(double(out[i]) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0 ? err / scale : err;
}

// The ceiling's cuBLAS handle: stream 0, FP32 without TF32 (the gemm path's default), and the 4 MiB workspace the
// gemm path gives its own handle.
struct ceiling_blas {
  bench::device_memory workspace{std::size_t(4) << 20};
  cublasHandle_t handle = nullptr;
  ceiling_blas() {
    cublas_check(cublasCreate(&handle), "cublasCreate");
    cublas_check(cublasSetStream(handle, nullptr), "cublasSetStream");
    cublas_check(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    cublas_check(cublasSetWorkspace(handle, workspace.p, std::size_t(4) << 20), "cublasSetWorkspace");
  }
  ~ceiling_blas() { cublasDestroy(handle); }
  ceiling_blas(const ceiling_blas&) = delete;
  ceiling_blas& operator=(const ceiling_blas&) = delete;
};

void print_rate(const char* name, double points_per_s, double flops_per_point, const char* note) {
  std::printf("  %-26s %14.1f points/s  (%7.2f TFLOP/s)%s\n", name, points_per_s,
              points_per_s * flops_per_point * 1e-12, note);
}

// The gemm path of K components in dimension d over n device-resident points (section comment of the file: `cuda`).
// The direct path is timed when a call of it is predicted to take at most direct_cap_s, from a call of a 64-component
// mixture of the same kind at the same points (its per-point loop is linear in K); otherwise its figure is that
// extrapolation, marked as such.
void cuda_case(std::int64_t K, std::int64_t d, std::int64_t n, int rounds, double direct_cap_s,
               const ceiling_blas& blas) {
  const auto setup_start = clock_type::now();
  const execution on_gpu{executor::cuda, nullptr};
  const channel ch{0.9, 0.4};
  const gaussian_mixture m = make_mixture_fast(K, d, 7);
  evaluate_options direct, gemm;
  direct.path = mixture_path::direct;
  gemm.path = mixture_path::gemm;
  device_floats x(n * d), out_g(n * d), out_d(n * d);
  m.sample(x.get(), n, ch, 3, nullptr, 0, on_gpu);
  m.prepare_gemm(executor::cuda);
  const std::size_t ws_bytes = m.evaluate_workspace_bytes(n, quantity::score, gemm, on_gpu);
  bench::device_memory ws(ws_bytes);
  // The ceiling: the gemm path's two products with its shapes (passes of 8192 points, chunks of 512 components) on
  // buffers of their own, filled with 0.0115 (bytes 0x3c): finite sums whatever the number of calls.
  const std::int64_t pass = std::min<std::int64_t>(n, 8192), chunk = std::min<std::int64_t>(K, 512);
  device_floats means(K * d), xc(pass * d), g(pass * chunk), acc(pass * d);
  const auto fill = [](const device_floats& b, std::int64_t count) {
    bench::check(cudaMemset(b.get(), 0x3c, std::size_t(count) * sizeof(float)), "cudaMemset");
  };
  fill(means, K * d);
  fill(xc, pass * d);
  fill(g, pass * chunk);
  fill(acc, pass * d);
  bench::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (setup)");
  const double setup_s = since(setup_start);

  const auto gemm_call = [&] {
    const evaluate_report r = m.evaluate(out_g.get(), n, x.get(), ch, quantity::score, gemm, on_gpu, ws.p, ws_bytes);
    expect(r.path == mixture_path::gemm && r.ran == executor::cuda, "the gemm path did not run on the CUDA executor");
  };
  const auto direct_of = [&](const gaussian_mixture* mix) {
    return [&, mix] {
      const evaluate_report r = mix->evaluate(out_d.get(), n, x.get(), ch, quantity::score, direct, on_gpu);
      expect(r.path == mixture_path::direct && r.ran == executor::cuda,
             "the direct path did not run on the CUDA executor");
    };
  };
  const auto ceiling_call = [&] {
    const float one = 1.f, zero = 0.f;
    for (std::int64_t first = 0; first < n; first += pass) {
      const int rows = int(std::min(pass, n - first));
      for (std::int64_t k0 = 0; k0 < K; k0 += chunk) {
        const int count = int(std::min(chunk, K - k0));
        const float* mk = means.get() + k0 * d;
        cublas_check(cublasSgemm(blas.handle, CUBLAS_OP_T, CUBLAS_OP_N, count, rows, int(d), &one, mk, int(d),
                                 xc.get(), int(d), &zero, g.get(), count),
                     "cublasSgemm (logits)");
        cublas_check(cublasSgemm(blas.handle, CUBLAS_OP_N, CUBLAS_OP_N, int(d), rows, count, &one, mk, int(d), g.get(),
                                 count, &one, acc.get(), int(d)),
                     "cublasSgemm (weighted means)");
      }
    }
  };
  event_timer timer;
  timer.seconds(gemm_call);  // warm-up: cuBLAS's kernels, the functors' modules
  timer.seconds(ceiling_call);
  const std::int64_t K_probe = std::min<std::int64_t>(K, 64);
  double direct_predicted;
  if (K_probe < K) {
    const gaussian_mixture probe = make_mixture_fast(K_probe, d, 11);
    timer.seconds(direct_of(&probe));  // warm-up
    direct_predicted = timer.seconds(direct_of(&probe)) * double(K) / double(K_probe);
  } else {
    timer.seconds(direct_of(&m));
    direct_predicted = timer.seconds(direct_of(&m));
  }
  const bool direct_timed = direct_predicted <= direct_cap_s;

  // Rounds: the contenders in turn, the order rotating from round to round.
  const std::function<void()> calls[3] = {direct_of(&m), gemm_call, ceiling_call};
  std::vector<double> t[3], ratio, fraction;
  for (int r = 0; r < rounds; ++r) {
    double s[3] = {NAN, NAN, NAN};
    for (int i = 0; i < 3; ++i) {
      const int c = (r + i) % 3;
      if (c == 0 && !direct_timed) continue;
      s[c] = timer.seconds(calls[c]);
      t[c].push_back(s[c]);
    }
    if (direct_timed) ratio.push_back(s[0] / s[1]);
    fraction.push_back(s[2] / s[1]);
  }
  const double flops = 4.0 * double(K) * double(d);
  std::printf("K = %lld, d = %lld, %lld points, %d rounds (setup %.1f s; 4 K d = %.4g flops per point)\n",
              static_cast<long long>(K), static_cast<long long>(d), static_cast<long long>(n), rounds, setup_s, flops);
  char note[200];
  if (direct_timed) {
    print_rate("direct path", double(n) / median(t[0]), flops, "  (of the 4 K d count)");
  } else {
    std::snprintf(note, sizeof note,
                  "  not timed: ~%.3g s a call, extrapolated from %lld components at the same points (cap %.2g s)",
                  direct_predicted, static_cast<long long>(K_probe), direct_cap_s);
    print_rate("direct path (~)", double(n) / direct_predicted, flops, note);
  }
  print_rate("gemm path", double(n) / median(t[1]), flops, "");
  std::snprintf(note, sizeof note, "  the path's two products alone: passes of %lld points x chunks of %lld components",
                static_cast<long long>(pass), static_cast<long long>(chunk));
  print_rate("cuBLAS sgemm (ceiling)", double(n) / median(t[2]), flops, note);
  if (direct_timed)
    std::printf("  gemm / direct: %.1fx (median of per-round ratios)", median(ratio));
  else
    std::printf("  gemm / direct: ~%.0fx (extrapolated)", direct_predicted / median(t[1]));
  std::printf("; the gemm path reaches %.0f%% of the cuBLAS ceiling (median of per-round fractions)\n",
              100 * median(fraction));
  // Larger passes than the default 8192 points (evaluate_options::point_block): the per-point kernels between the
  // products run one thread per point of a pass, so a pass of 8192 points fills 62 threads per multiprocessor of an
  // H200. Median of `rounds` calls each, after a warm-up; same points, so the same work.
  for (const std::int64_t block : {32768, 65536, 131072}) {
    if (block >= n) break;
    evaluate_options big = gemm;
    big.point_block = block;
    const std::size_t big_bytes = m.evaluate_workspace_bytes(n, quantity::score, big, on_gpu);
    bench::device_memory big_ws(big_bytes);
    const auto big_call = [&] {
      const evaluate_report r = m.evaluate(out_g.get(), n, x.get(), ch, quantity::score, big, on_gpu, big_ws.p, big_bytes);
      expect(r.path == mixture_path::gemm && r.ran == executor::cuda, "the gemm path did not run on the CUDA executor");
    };
    timer.seconds(big_call);
    std::vector<double> tb;
    for (int r = 0; r < rounds; ++r) tb.push_back(timer.seconds(big_call));
    std::snprintf(note, sizeof note, "  point_block %lld (workspace %.0f MiB): %.2fx the default pass's time",
                  static_cast<long long>(block), double(big_bytes) / 1048576.0, median(tb) / median(t[1]));
    print_rate("gemm path, larger pass", double(n) / median(tb), flops, note);
  }
  // Accuracy beside the FP64 reference (host) on a few points: a wrong or non-finite result makes the figures moot.
  const std::int64_t m_check = std::min<std::int64_t>(n, 8);
  std::printf("  max |error| / max |score| against the FP64 reference, first %lld points: gemm %.2g",
              static_cast<long long>(m_check), error_vs_fp64(m, x.get(), out_g.get(), m_check, ch));
  if (direct_timed) std::printf(", direct %.2g", error_vs_fp64(m, x.get(), out_d.get(), m_check, ch));
  std::printf("\n");
  std::fflush(stdout);
}

void cuda_headline(int rounds) {
  const auto start = clock_type::now();
  announce_device("cuda");
  std::printf("# score of an isotropic mixture on the CUDA executor, device-resident points and outputs; CUDA-event "
              "timing on the legacy default stream after a warm-up (prepare_gemm(cuda) first); contenders interleaved "
              "within each round, medians over rounds\n");
  const ceiling_blas blas;
  cuda_case(1024, 256, 262144, rounds, 0.5, blas);
  cuda_case(50000, 3072, 8192, rounds, 0.5, blas);
  std::printf("# cuda mode: %.1f s\n", since(start));
}

// `cuda crossover`: the direct / gemm time ratio of the score over a grid of K and d, n = 65536 points per call.
void cuda_crossover() {
  const auto start = clock_type::now();
  announce_device("cuda crossover");
  const std::int64_t n = 65536, max_kd = std::int64_t(1) << 25;
  const int rounds = 3;
  const double direct_cap_s = 0.1;
  const std::int64_t dims[] = {2, 16, 64, 256, 1024, 3072};
  const std::int64_t Ks[] = {64, 256, 1024, 4096, 16384, 65536};
  constexpr int nd = 6, nk = 6;
  std::printf("# direct / gemm time ratio of the score (>1: gemm faster), %lld device-resident points per call, "
              "CUDA events, median of %d interleaved rounds (each timing repeats the call to at least 1 ms). '~': the "
              "direct path not timed (a call predicted over %.2g s from the K = 64 cell of its d, its per-point loop "
              "being linear in K), the ratio extrapolated; '-': K d > 2^25 not run (setup time); 't': past the "
              "mode's time budget\n",
              static_cast<long long>(n), rounds, direct_cap_s);
  const execution on_gpu{executor::cuda, nullptr};
  const channel ch{1.0, 0.5};
  evaluate_options direct, gemm;
  direct.path = mixture_path::direct;
  gemm.path = mixture_path::gemm;
  double ratio[nk][nd];
  char mark[nk][nd];  // ' ' measured, '~' extrapolated, '-' not run, 't' out of time
  event_timer timer;
  for (int j = 0; j < nd; ++j) {
    const std::int64_t d = dims[j];
    device_floats x(n * d), out(n * d);
    double t64 = NAN;  // the direct path's call at K = 64 for this d
    for (int i = 0; i < nk; ++i) {
      const std::int64_t K = Ks[i];
      ratio[i][j] = NAN;
      mark[i][j] = ' ';
      if (K * d > max_kd) {
        mark[i][j] = '-';
        continue;
      }
      if (since(start) > cuda_mode_budget_s) {
        mark[i][j] = 't';
        continue;
      }
      const gaussian_mixture m = make_mixture_fast(K, d, 1);
      m.sample(x.get(), n, ch, 1, nullptr, 0, on_gpu);
      m.prepare_gemm(executor::cuda);
      const std::size_t ws_bytes = m.evaluate_workspace_bytes(n, quantity::score, gemm, on_gpu);
      bench::device_memory ws(ws_bytes);
      const auto gemm_call = [&] {
        const evaluate_report r = m.evaluate(out.get(), n, x.get(), ch, quantity::score, gemm, on_gpu, ws.p, ws_bytes);
        expect(r.path == mixture_path::gemm && r.ran == executor::cuda, "the gemm path did not run on the GPU");
      };
      const auto direct_call = [&] {
        const evaluate_report r = m.evaluate(out.get(), n, x.get(), ch, quantity::score, direct, on_gpu);
        expect(r.path == mixture_path::direct && r.ran == executor::cuda, "the direct path did not run on the GPU");
      };
      timer.seconds(gemm_call);  // warm-up
      const double g1 = timer.seconds(gemm_call);
      double d1;
      if (i == 0) {
        timer.seconds(direct_call);  // warm-up
        d1 = t64 = timer.seconds(direct_call);
      } else {
        d1 = t64 * double(K) / double(Ks[0]);
      }
      if (!std::isfinite(d1)) {  // no K = 64 timing for this d
        mark[i][j] = 't';
        continue;
      }
      const bool direct_timed = d1 <= direct_cap_s;
      const int reps_g = int(std::min(100.0, std::max(1.0, std::ceil(1e-3 / std::max(g1, 1e-7))))),
                reps_d = int(std::min(100.0, std::max(1.0, std::ceil(1e-3 / std::max(d1, 1e-7)))));
      std::vector<double> r, tg, tdv;
      for (int round = 0; round < rounds; ++round) {
        double td = 0, tgr = 0;
        if (round % 2 == 0) {
          if (direct_timed) td = timer.seconds(direct_call, reps_d) / reps_d;
          tgr = timer.seconds(gemm_call, reps_g) / reps_g;
        } else {
          tgr = timer.seconds(gemm_call, reps_g) / reps_g;
          if (direct_timed) td = timer.seconds(direct_call, reps_d) / reps_d;
        }
        tg.push_back(tgr);
        if (direct_timed) {
          tdv.push_back(td);
          r.push_back(td / tgr);
        }
      }
      if (direct_timed) {
        ratio[i][j] = median(r);
      } else {
        ratio[i][j] = d1 / median(tg);
        mark[i][j] = '~';
      }
      std::printf("  K = %6lld, d = %4lld: gemm %.4g s, direct %s%.4g s a call, ratio %s%.3g\n",
                  static_cast<long long>(K), static_cast<long long>(d), median(tg), direct_timed ? "" : "~",
                  direct_timed ? median(tdv) : d1, direct_timed ? "" : "~", ratio[i][j]);
      std::fflush(stdout);
    }
  }
  std::printf("%8s", "K \\ d");
  for (std::int64_t d : dims) std::printf("%9lld", static_cast<long long>(d));
  std::printf("\n");
  for (int i = 0; i < nk; ++i) {
    std::printf("%8lld", static_cast<long long>(Ks[i]));
    for (int j = 0; j < nd; ++j) {
      if (mark[i][j] == '-' || mark[i][j] == 't')
        std::printf("%9c", mark[i][j]);
      else
        std::printf("%8.2f%c", ratio[i][j], mark[i][j]);
    }
    std::printf("\n");
  }
  // The rule of gemm_crossover()'s form (gemm when d >= min_dim and K d >= min_kd) that loses the least over the
  // cells: each cell it sends to the slower path costs |ln ratio|. Candidates: the grid's d and K d values (and
  // "never"); ties go to the smaller thresholds.
  const std::int64_t never = std::numeric_limits<std::int64_t>::max();
  std::vector<std::int64_t> dim_candidates(std::begin(dims), std::end(dims)), kd_candidates;
  for (std::int64_t K : Ks)
    for (std::int64_t d : dims) kd_candidates.push_back(K * d);
  dim_candidates.push_back(never);
  kd_candidates.push_back(never);
  std::sort(kd_candidates.begin(), kd_candidates.end());
  kd_candidates.erase(std::unique(kd_candidates.begin(), kd_candidates.end()), kd_candidates.end());
  double best_cost = INFINITY;
  std::int64_t best_dim = never, best_kd = never;
  int best_wrong = 0, cells = 0;
  for (std::int64_t min_dim : dim_candidates)
    for (std::int64_t min_kd : kd_candidates) {
      double cost = 0;
      int wrong = 0, counted = 0;
      for (int i = 0; i < nk; ++i)
        for (int j = 0; j < nd; ++j) {
          if (mark[i][j] == '-' || mark[i][j] == 't' || !(ratio[i][j] > 0)) continue;
          ++counted;
          const bool gemm_rule = dims[j] >= min_dim && Ks[i] * dims[j] >= min_kd;
          const bool gemm_faster = ratio[i][j] > 1;
          if (gemm_rule != gemm_faster) {
            cost += std::abs(std::log(ratio[i][j]));
            ++wrong;
          }
        }
      if (cost < best_cost - 1e-12) {
        best_cost = cost;
        best_dim = min_dim;
        best_kd = min_kd;
        best_wrong = wrong;
        cells = counted;
      }
    }
  // Thresholds raised to the smallest d and K d the rule sends to the gemm path among the measured cells (the same
  // split of the grid): the rule then names values that were measured.
  if (best_dim != never && best_kd != never) {
    std::int64_t snap_dim = never, snap_kd = never;
    for (int i = 0; i < nk; ++i)
      for (int j = 0; j < nd; ++j)
        if (mark[i][j] != '-' && mark[i][j] != 't' && ratio[i][j] > 0 && dims[j] >= best_dim &&
            Ks[i] * dims[j] >= best_kd) {
          snap_dim = std::min(snap_dim, dims[j]);
          snap_kd = std::min(snap_kd, Ks[i] * dims[j]);
        }
    best_dim = snap_dim;
    best_kd = snap_kd;
  }
  const gemm_crossover_rule now = gemm_crossover(executor::cuda);
  std::printf("# rule in the library now (not measured on a GPU): gemm_crossover_rule {%lld, %lld}\n",
              static_cast<long long>(now.min_dim), static_cast<long long>(now.min_kd));
  std::printf("# cells sent to the slower path by the rule below: %d of %d (sum of |ln ratio| %.3g); "
              "crossover mode %.1f s\n",
              best_wrong, cells, best_cost, since(start));
  if (best_dim == never || best_kd == never)
    std::printf("gemm_crossover_rule {never}: no rule of this form loses less than the direct path everywhere\n");
  else
    std::printf("gemm_crossover_rule {%lld, %lld}\n", static_cast<long long>(best_dim),
                static_cast<long long>(best_kd));
}

// `cuda operator`: whole DPS and Pi-GDM runs on the CUDA executor with guided_options::operator_path forced either way
// (the measurement behind operator_gemm_worthwhile() there: observation_operator::apply_batch has no device form).
void cuda_operator() {
  const auto start = clock_type::now();
  announce_device("cuda operator");
  const int K = 25, steps = 10, rounds = 5;
  const std::int64_t particles[] = {64, 1024, 16384, 262144};
  const form forms[] = {{"dps (likelihood step)", guided_sampler::dps, dps_step_form::likelihood},
                        {"pigdm", guided_sampler::pigdm, dps_step_form::likelihood},
                        {"dps (normalised step)", guided_sampler::dps, dps_step_form::normalised}};
  std::printf("# observation_operator::apply_batch runs on the CPU executor only (no device form yet): on the CUDA "
              "executor operator_gemm_worthwhile() decides for DPS and Pi-GDM alone (fused kernel against cuBLAS "
              "products per step), so this times their whole runs with guided_options::operator_path forced either "
              "way, as the CPU's `guided` mode does\n");
  std::printf("# direct / gemm whole-run time ratio (>1: gemm faster), median [min, max] of %d interleaved rounds; "
              "K = %d, %d steps, one problem, y = 0.3, sigma_y = 0.3, A with N(0, 1 / d_x) entries; device-resident "
              "particles and workspace; CUDA events, each timing repeating the run to at least 2 ms; '!': a run "
              "reported another path; 't': past the mode's time budget\n",
              rounds, K, steps);
  const execution on_gpu{executor::cuda, nullptr};
  event_timer timer;
  for (const form& fm : forms) {
    std::printf("%s\n%8s", fm.name, "N \\ dy x dx");
    print_shape_columns();
    for (std::int64_t N : particles) {
      std::printf("%8lld", static_cast<long long>(N));
      for (const auto& sz : operator_shapes) {
        if (since(start) > cuda_mode_budget_s) {
          std::printf("  %20s", "t");
          continue;
        }
        const int dy = sz[0], dx = sz[1];
        const gaussian_mixture mix = make_mixture(K, dx, 5);
        const guided_problems pr = dense_problem(dy, dx);
        guided_options o = fm.options(N, steps);
        std::size_t ws_bytes = 0;
        for (mixture_path p : {mixture_path::direct, mixture_path::gemm}) {
          o.operator_path = p;
          ws_bytes = std::max(ws_bytes, guided_workspace_bytes(mix, pr, o, on_gpu));
        }
        device_floats samples(N * dx);
        bench::device_memory ws(ws_bytes);
        guided_outputs go;
        go.particles = samples.get();
        bool paths_ok = true;
        const auto run = [&](mixture_path path, int reps) {
          o.operator_path = path;
          return timer.seconds(
              [&] {
                paths_ok = paths_ok && guided_sample(mix, go, pr, o, on_gpu, ws.p, ws_bytes).operator_path == path;
              },
              reps);
        };
        run(mixture_path::gemm, 1);  // warm-up of each path
        run(mixture_path::direct, 1);
        const double one = std::min(run(mixture_path::direct, 1), run(mixture_path::gemm, 1));
        const int reps = int(std::min(32.0, std::max(1.0, std::ceil(2e-3 / std::max(one, 1e-7)))));
        print_ratio_cell(run, reps, rounds, paths_ok);
      }
      std::printf("\n");
    }
  }
  std::printf("# rule in the library now (measured on the CPU only): operator_gemm_worthwhile(n, d_y, d_x) = n >= 64 "
              "and d_y d_x >= 1024; cuda operator mode %.1f s\n",
              since(start));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "cuda") {
    if (no_cuda_device()) return 0;
    try {
      const std::string sub = argc > 2 ? argv[2] : "";
      if (sub == "crossover")
        cuda_crossover();
      else if (sub == "operator")
        cuda_operator();
      else if (sub.empty() || std::isdigit(static_cast<unsigned char>(sub[0])))
        cuda_headline(sub.empty() ? 5 : std::max(1, std::atoi(sub.c_str())));
      else {
        std::fprintf(stderr, "usage: bench_mixture_gemm cuda [rounds=5] | cuda crossover | cuda operator\n");
        return 2;
      }
    } catch (const std::exception& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "bench_mixture_gemm cuda: %s\n", e.what());
      return 1;
    }
    return 0;
  }
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
  // A round count, or one of the modes above: anything else (a misspelled mode ran the default cases) is refused.
  char* end = nullptr;
  const long rounds = argc > 1 ? std::strtol(argv[1], &end, 10) : 3;
  if (argc > 1 && (end == argv[1] || *end != '\0' || rounds < 1)) {
    std::fprintf(stderr, "usage: bench_mixture_gemm [rounds=3] | crossover | operator | guided [tmpd] | tmpd | samplers | "
                         "cuda [rounds=5] | cuda crossover | cuda operator\n");
    return 2;
  }
  std::printf("CPU BLAS: %s\n", cpu_blas_name().c_str());
  run_case(1024, 256, 4096, 512, int(rounds));
  run_case(50000, 3072, 256, 4, int(rounds));
  return 0;
}
