// Scaling of distributed guided SMC (libdiffsample_mpi, global resampling) on the CPU executor:
//   mpirun -np P build/bench/bench_mpi [particles] [d] [steps] [repeats] [sigma_y]
// Prints, per run, particle-steps per second (B N K over the slowest rank's wall time), each rank's share of time
// inside MPI, the bytes each rank sent per resampling, and the communication-volume model beside them:
//
//   rows that cross the boundary between ranks k-1 and k at one resampling, for exchangeable particles:
//     E|D_k| = sqrt(2 / pi) sqrt(N (s - 1) f (1 - f)),  f = k / P,  s = N / ESS (the weight skew),
//   because the slots fed by the particles left of the boundary are [0, N C) with C the weight fraction held there,
//   C - f having variance (s - 1) f (1 - f) / N for weights of relative variance s - 1 (systematic resampling keeps
//   the ancestors in slot order, so only these rows move). Bytes per rank per resampling:
//     (4 d / P) sum_k E|D_k|  +  (P - 1) B 52  (the maximum and invalid count, 12 bytes, and the ranks' integer and
//                                               FP64 sums, 40 bytes, per problem)
//   and at most 4 d N (P - 1) / P from one rank when all the weight sits on one rank's particles (the worst skew).
// The model is evaluated with the ESS the run recorded before each resampling, and printed beside the measured bytes.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <diffsample/diffsample.hpp>
#include <diffsample/mpi.hpp>

namespace ds = diffsample;

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const std::int64_t N = argc > 1 ? std::atoll(argv[1]) : 65536;
  const std::int64_t d = argc > 2 ? std::atoll(argv[2]) : 8;
  const std::int64_t K = argc > 3 ? std::atoll(argv[3]) : 20;
  const int repeats = argc > 4 ? std::atoi(argv[4]) : 3;
  const double sigma_y = argc > 5 ? std::atof(argv[5]) : 0.5;  // smaller: sharper likelihood, larger skew s

  // A 25-component grid prior; one observation of the first coordinate, at a point between modes, so that the
  // weights are uneven (s = N / ESS above one).
  const ds::gaussian_mixture prior = ds::grid_mixture(d, 5, 4.0, 0.5);
  ds::guided_problems pr;
  pr.problems = 1;
  pr.d_y = 1;
  pr.A.assign(static_cast<std::size_t>(d), 0.0);
  pr.A[0] = 1.0;
  pr.y = {1.0};
  pr.sigma_y = {sigma_y};
  ds::guided_options o;
  o.particles = N;
  o.steps = K;
  o.seed = 1;
  o.resampling.ess_threshold = 2.0;  // every transition resamples: one exchange per transition
  const ds::mpi::shard s = ds::mpi::shard_of(N, MPI_COMM_WORLD);
  std::vector<float> particles(static_cast<std::size_t>(s.count * d) + 1);
  std::vector<float> ess(static_cast<std::size_t>(K + 1));
  std::vector<std::int32_t> count(1);
  ds::guided_outputs out{};
  out.particles = particles.data();
  out.ess_trace = ess.data();
  out.resample_count = count.data();

  // Latency of one small collective on this machine (the resampling issues three per transition).
  double latency = 0;
  {
    float v = 1.f;
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    for (int i = 0; i < 1000; ++i) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    latency = (MPI_Wtime() - t0) / 1000;
  }
  if (rank == 0)
    std::printf("bench_mpi: P = %d, N = %lld, d = %lld, K = %lld, B = 1, CPU executor, %d threads per rank; "
                "MPI_Allreduce latency %.2f us\n",
                ranks, static_cast<long long>(N), static_cast<long long>(d), static_cast<long long>(K),
                ds::cpu_threads(), latency * 1e6);
  for (int rep = 0; rep < repeats + 1; ++rep) {  // the first run warms up
    MPI_Barrier(MPI_COMM_WORLD);
    const ds::mpi::guided_result res = ds::mpi::guided_sample(MPI_COMM_WORLD, prior, out, pr, o);
    double mine[4] = {res.seconds, res.comm.seconds, double(res.comm.bytes_sent), double(res.comm.exchanges)};
    std::vector<double> all(4 * static_cast<std::size_t>(ranks));
    MPI_Gather(mine, 4, MPI_DOUBLE, all.data(), 4, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank != 0 || rep == 0) continue;
    double slowest = 0, share_max = 0, bytes = 0;
    for (int r = 0; r < ranks; ++r) {
      slowest = std::max(slowest, all[4 * r]);
      share_max = std::max(share_max, all[4 * r + 1] / all[4 * r]);
      bytes += all[4 * r + 2];
    }
    // Resamplings: the initial one (equal weights: no row moves) and one per transition.
    const int resamplings = count[0];
    double model_rows = 0;
    int seen = 0;
    for (std::int64_t c = 1; c <= K; ++c) {
      if (!(ess[c] < o.resampling.ess_threshold * double(N))) continue;
      ++seen;
      const double skew = double(N) / ess[c];
      for (int k = 1; k < ranks; ++k) {
        const double f = double(k) / ranks;
        model_rows += std::sqrt(2.0 / M_PI) * std::sqrt(double(N) * std::max(0.0, skew - 1.0) * f * (1 - f));
      }
    }
    const double per = std::max(1, resamplings);
    // Every transition (and the initial resampling) runs the two statistics collectives whether or not it resamples.
    const double collective_bytes = double(ranks - 1) * 52.0 * double(K + 1) / per;
    const double model = 4.0 * d * model_rows / ranks / std::max(1, seen) + collective_bytes;
    double mean_skew = 0;
    for (std::int64_t c = 1; c <= K; ++c) mean_skew += double(N) / ess[c] / double(K);
    std::printf("  %.3f s, %.3g particle-steps/s, MPI share (slowest rank) %.1f%%, %d resamplings, mean s = N/ESS "
                "%.2f; bytes per rank per resampling: measured %.0f, model %.0f (worst skew %.0f)\n",
                slowest, double(N) * double(K) / slowest, 100 * share_max, resamplings, mean_skew,
                bytes / ranks / per, model, 4.0 * d * double(N) * (ranks - 1) / ranks);
    if (ranks == 1) {
      // The same filter through the single-process entry point (its fused CPU loop), right after.
      ds::execution cpu;
      cpu.kind = ds::executor::cpu;
      const double t0 = MPI_Wtime();
      ds::guided_sample(prior, out, pr, o, cpu);
      const double t = MPI_Wtime() - t0;
      std::printf("  single-process guided_sample: %.3f s, %.3g particle-steps/s\n", t, double(N) * double(K) / t);
    }
  }
  // The model's premise alone: i.i.d. log-normal weights (relative variance s - 1 = e^(sigma^2) - 1), resampled by
  // mpi::resample; rows crossing rank boundaries counted from the ancestors, beside sum_k sqrt(2/pi) sqrt(N (s - 1)
  // f_k (1 - f_k)), averaged over 20 draws.
  for (double sigma : {0.5, 1.0, 1.5}) {
    const ds::mpi::shard mine = ds::mpi::shard_of(N, MPI_COMM_WORLD);
    std::vector<float> lw(static_cast<std::size_t>(mine.count) + 1);
    std::vector<std::int64_t> anc(static_cast<std::size_t>(mine.count) + 1);
    double crossing = 0, skew = 0;
    const int draws = 20;
    for (int t = 0; t < draws; ++t) {
      std::mt19937_64 gen(1000 + t);
      std::normal_distribution<float> normal(0.f, float(sigma));
      double sw = 0, sw2 = 0;
      for (std::int64_t j = 0; j < N; ++j) {  // every rank draws all N, keeps its own
        const float l = normal(gen);
        sw += std::exp(double(l));
        sw2 += std::exp(2.0 * l);
        if (j >= mine.first && j < mine.first + mine.count) lw[j - mine.first] = l;
      }
      skew += double(N) * sw2 / (sw * sw) / draws;
      ds::resampling_options ro;
      ro.ess_threshold = 2.0;
      ro.seed = 77 + t;
      ds::particle_outputs po;
      po.ancestors64 = anc.data();
      ds::mpi::resample(MPI_COMM_WORLD, po, 1, N, lw.data(), ro);
      long long away = 0, all = 0;
      for (std::int64_t i = 0; i < mine.count; ++i) away += anc[i] < mine.first || anc[i] >= mine.first + mine.count;
      MPI_Allreduce(&away, &all, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
      crossing += double(all) / draws;
    }
    double model = 0;
    for (int k = 1; k < ranks; ++k) {
      const double f = double(k) / ranks;
      model += std::sqrt(2.0 / M_PI) * std::sqrt(double(N) * (skew - 1) * f * (1 - f));
    }
    if (rank == 0)
      std::printf("  i.i.d. log-normal weights, s = N/ESS %.2f: rows crossing rank boundaries per resampling %.1f, "
                  "model %.1f\n",
                  skew, crossing, model);
  }
  MPI_Finalize();
  return 0;
}
