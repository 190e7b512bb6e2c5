// Scaling of distributed guided SMC (libdiffsample_mpi, global resampling) on the CPU executor:
//   mpirun -np P build/bench/bench_mpi [particles] [d] [steps] [repeats] [sigma_y] [seeds] [cpu|cuda] [scheme]
// (cuda: each rank on its GPU by local rank, mpi::rank_execution, so P ranks on a machine of one GPU share it; every
// resampling staged through the host.)
// Prints, per run, particle-steps per second (B N K over the slowest rank's wall time), each rank's share of time
// inside MPI, the bytes each rank sent per resampling (as comm_stats reports them, and counted at the MPI calls by
// bench/mpi/mpi_counts.cpp), and the communication-volume model beside them. Systematic (the default) and stratified:
//
//   rows that cross the boundary between ranks k-1 and k at one resampling, for exchangeable particles:
//     E|D_k| = sqrt(2 / pi) sqrt(N (s - 1) f (1 - f)),  f = k / P,  s = N / ESS (the weight skew),
//   because the slots fed by the particles left of the boundary are [0, N C) with C the weight fraction held there,
//   C - f having variance (s - 1) f (1 - f) / N for weights of relative variance s - 1 (systematic resampling keeps
//   the ancestors in slot order, so only these rows move). Bytes per rank per resampling:
//     (4 d / P) sum_k E|D_k|  +  (P - 1) (52 B + 8)  (the maximum and invalid count, 12 bytes, and the ranks'
//                                                     integer and FP64 sums, 40 bytes, per problem; two 4-byte
//                                                     agreements, at the start and before the row exchange)
//       +  32 B (P - 1) / P  (the FP64 report sums carried from each rank but the last to the next, in rank order)
//   and at most 4 d N (P - 1) / P from one rank when all the weight sits on one rank's particles (the worst skew).
// Multinomial: the slots' keys are independent, so a slot's ancestor is on another rank with probability about
// (P - 1) / P whatever the skew: 4 d N (P - 1) / P^2 + 60 (P - 1) bytes per rank. Residual, Metropolis, rejection:
// each rank sends its 4 N / P log-weights to P - 1 ranks, then per slot whose ancestor is elsewhere an 8-byte request
// and a 4 d-byte row, plus 4 (P - 1) bytes of counts and three 4-byte agreements (at the start, after the whole
// problem's resampling, before the requests); with ancestors in random slots (Metropolis, rejection; residual keeps
// its floor(N w_i) copies in order and moves fewer) 4 N (P - 1) / P + (8 + 4 d) N (P - 1) / P^2 + 16 (P - 1).
// Not modelled: what a run sends once (the comparison of the arguments, the first resampling's agreement on its
// buffers, whether any rank wants samples, the end's agreement), spread over its resamplings in the measured bytes.
// The model is evaluated with the ESS the run recorded before each resampling, and printed beside the measured bytes.
// The filter's particles are not exchangeable in slot order: systematic resampling puts an ancestor's offspring in
// adjacent slots, and their weights at the next resampling are correlated, so Var(C - f) is R times the exchangeable
// value, R the variance of a sum of adjacent weights over its exchangeable value. With seeds > 0, rank 0 runs the
// filter for that many seeds through its shard interface in one process and prints, per run, the rows a P-rank run
// moves (P = 2, 3) in the filter's order, with the same weights in random orders, the model, and the model times
// sqrt(R) with R measured on blocks of N / 16 slots of each resampling's weights.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>
#include <diffsample/mpi.hpp>

#include "bench/mpi/mpi_counts.hpp"
#include "src/guided_shard.hpp"

namespace ds = diffsample;

namespace {

// Rank of particle j of N over P ranks (the block split of shard_of()).
int owner(std::int64_t j, std::int64_t N, int P) {
  for (int r = P - 1; r > 0; --r)
    if (j >= ds::mpi::shard_of(N, r, P).first) return r;
  return 0;
}

// Rows that a P-rank run moves for these ancestors: slots whose ancestor another rank holds.
long long crossing(const std::vector<std::int64_t>& anc, std::int64_t N, int P) {
  long long n = 0;
  for (std::int64_t i = 0; i < N; ++i) n += owner(anc[i], N, P) != owner(i, N, P);
  return n;
}

// One process holding all N particles of one problem (the filter's own code through its shard interface), resampling
// with resample() as a 1-rank run does, and recording at every resampling of the filter, for P = 2 and 3: the rows a
// P-rank run moves (from the ancestors; the particles, hence the weights, are the same whatever P), the rows moved
// when the same weights are first put in a random order (the model's premise: exchangeable particles), and the model.
class probe_shard final : public ds::detail::guided_shard {
 public:
  explicit probe_shard(std::int64_t n) : n_(n), anc_(n), shuffled_anc_(n), shuffled_(n) {}
  std::int64_t first() const override { return 0; }
  std::int64_t local() const override { return n_; }
  void agree(std::exception_ptr e) override {
    if (e) std::rethrow_exception(e);
  }
  void resample(const float* lw, std::int64_t problems, const ds::resampling_options& o, ds::particle_report* reports,
                const void* rows, std::size_t row_bytes, void* out) override {
    ds::execution cpu;
    cpu.kind = ds::executor::cpu;
    ds::particle_outputs po;
    po.ancestors64 = anc_.data();
    po.reports = reports;
    ds::resample(po, problems, n_, lw, o, cpu);  // problems = 1 here
    for (std::int64_t i = 0; i < n_; ++i)
      std::memcpy(static_cast<char*>(out) + i * row_bytes,
                  static_cast<const char*>(rows) + (reports[0].resampled ? anc_[i] : i) * row_bytes, row_bytes);
    if (!reports[0].resampled || o.step == last_step_) return;
    ++resamplings;
    const double s = double(n_) / reports[0].ess;
    if (s > largest_skew) {  // the block-sum variance ratio of this resampling's weights in slot order
      largest_skew = s;
      const float top = *std::max_element(lw, lw + n_);
      std::vector<double> w(static_cast<std::size_t>(n_));
      double mean = 0, var = 0;
      for (std::int64_t i = 0; i < n_; ++i) mean += (w[i] = std::exp(double(lw[i]) - top)) / double(n_);
      for (double v : w) var += (v - mean) * (v - mean) / double(n_);
      for (int e = 0; e < 3; ++e) {
        const std::int64_t L = std::int64_t(16) << (4 * e), blocks = n_ / L;  // 16, 256, 4096
        double bv = 0;
        for (std::int64_t b = 0; b < blocks; ++b) {
          double t = 0;
          for (std::int64_t i = 0; i < L; ++i) t += w[b * L + i] - mean;
          bv += t * t / double(blocks);
        }
        block_ratio[e] = blocks > 1 && var > 0 ? bv / (double(L) * var) : 1.0;
      }
    }
    // Var(C - f) for the filter's order: the exchangeable value times R, the block-sum variance ratio at blocks of
    // N / 16 adjacent slots (16 blocks; their deviations from the exact mean sum to zero, hence 16 / 15).
    const double r_wide = wide_ratio(lw);
    for (int P : {2, 3})
      for (int k = 1; k < P; ++k) {
        const double f = double(ds::mpi::shard_of(n_, k, P).first) / double(n_);
        corrected[P] += std::sqrt(r_wide) * std::sqrt(2.0 / M_PI) *
                        std::sqrt(double(n_) * std::max(0.0, s - 1.0) * f * (1 - f));
      }
    std::copy(lw, lw + n_, shuffled_.begin());
    std::mt19937_64 gen(o.step * 7919 + 1);
    const int draws = 8;
    for (int P : {2, 3}) {
      rows_moved[P] += double(crossing(anc_, n_, P));
      for (int k = 1; k < P; ++k) {
        const double f = double(ds::mpi::shard_of(n_, k, P).first) / double(n_);
        model[P] += std::sqrt(2.0 / M_PI) * std::sqrt(double(n_) * std::max(0.0, s - 1.0) * f * (1 - f));
      }
    }
    for (int t = 0; t < draws; ++t) {
      std::shuffle(shuffled_.begin(), shuffled_.end(), gen);
      ds::particle_outputs sp;
      sp.ancestors64 = shuffled_anc_.data();
      ds::resample(sp, 1, n_, shuffled_.data(), o, cpu);
      for (int P : {2, 3}) shuffled_moved[P] += double(crossing(shuffled_anc_, n_, P)) / draws;
    }
  }
  void fetch(const void* rows, std::int64_t, std::size_t row_bytes, const std::int64_t* index, void* out) override {
    for (std::int64_t i = 0; i < n_; ++i)
      std::memcpy(static_cast<char*>(out) + i * row_bytes, static_cast<const char*>(rows) + index[i] * row_bytes,
                  row_bytes);
  }
  std::uint64_t last_step_ = ~0ull;  // the final resampling of the samples (not a transition's): not recorded
  int resamplings = 0;
  // At the resampling with the largest skew: Var(sum of L adjacent weights) / (L Var(w)) for L = 16, 256, 4096 (1
  // for exchangeable particles; above 1 when neighbouring slots' weights are correlated).
  double largest_skew = 0, block_ratio[3] = {1, 1, 1};
  double rows_moved[4] = {}, shuffled_moved[4] = {}, model[4] = {}, corrected[4] = {};

 private:
  double wide_ratio(const float* lw) const {
    const std::int64_t blocks = 16, L = n_ / blocks;
    if (L < 1) return 1.0;
    const float top = *std::max_element(lw, lw + n_);
    double mean = 0, var = 0, bv = 0;
    for (std::int64_t i = 0; i < n_; ++i) mean += std::exp(double(lw[i]) - top) / double(n_);
    for (std::int64_t i = 0; i < n_; ++i) var += std::pow(std::exp(double(lw[i]) - top) - mean, 2) / double(n_);
    for (std::int64_t b = 0; b < blocks; ++b) {
      double t = 0;
      for (std::int64_t i = b * L; i < (b + 1) * L; ++i) t += std::exp(double(lw[i]) - top) - mean;
      bv += t * t / double(blocks - 1);
    }
    return var > 0 ? bv / (double(L) * var) : 1.0;
  }

  std::int64_t n_;
  std::vector<std::int64_t> anc_, shuffled_anc_;
  std::vector<float> shuffled_;
};

}  // namespace

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
  const int seeds = argc > 6 ? std::atoi(argv[6]) : 0;          // the model's check over seeds (rank 0)
  const bool on_cuda = argc > 7 && std::string(argv[7]) == "cuda";
  const ds::resampling_scheme scheme =
      argc > 8 ? ds::parse_resampling_scheme(argv[8]) : ds::resampling_scheme::systematic;
  if (on_cuda && !ds::cuda_available()) {
    if (rank == 0) std::printf("bench_mpi: no CUDA device (%s)\n", ds::cuda_unavailable_reason().c_str());
    MPI_Finalize();
    return 0;
  }
  const ds::execution exec = ds::mpi::rank_execution(MPI_COMM_WORLD, on_cuda ? ds::executor::cuda : ds::executor::cpu);

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
  o.resampling.scheme = scheme;
  const ds::mpi::shard s = ds::mpi::shard_of(N, MPI_COMM_WORLD);
  std::vector<float> particles(static_cast<std::size_t>(s.count * d) + 1);
  std::vector<float> ess(static_cast<std::size_t>(K + 1));
  std::vector<std::int32_t> count(1);
  ds::guided_outputs out{};
  out.particles = particles.data();
  out.ess_trace = ess.data();
  out.resample_count = count.data();
  if (on_cuda) {  // the outputs on the rank's device
    void* p = nullptr;
    if (cudaMalloc(&p, particles.size() * sizeof(float) + ess.size() * sizeof(float) + 16) != cudaSuccess) {
      std::fprintf(stderr, "bench_mpi: cudaMalloc failed\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    out.particles = static_cast<float*>(p);
    out.ess_trace = out.particles + particles.size();
    out.resample_count = reinterpret_cast<std::int32_t*>(out.ess_trace + ess.size());
  }
  auto read_back = [&] {  // the ESS trace and the resampling count, on the host
    if (!on_cuda) return;
    cudaMemcpy(ess.data(), out.ess_trace, ess.size() * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(count.data(), out.resample_count, sizeof(std::int32_t), cudaMemcpyDeviceToHost);
  };

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
    std::printf("bench_mpi: P = %d, N = %lld, d = %lld, K = %lld, B = 1, %s executor, %d CPU threads per rank; "
                "MPI_Allreduce latency %.2f us; %s resampling\n",
                ranks, static_cast<long long>(N), static_cast<long long>(d), static_cast<long long>(K),
                ds::to_string(exec.kind), ds::cpu_threads(), latency * 1e6, ds::to_string(scheme));
  for (int rep = 0; rep < repeats + 1; ++rep) {  // the first run warms up
    MPI_Barrier(MPI_COMM_WORLD);
    const std::int64_t counted_before = mpi_counts::sent(), rows_before = mpi_counts::sent_alltoallv();
    const ds::mpi::guided_result res =
        ds::mpi::guided_sample(MPI_COMM_WORLD, prior, out, pr, o, ds::mpi::smc_mode::global, exec);
    const double counted_mine = double(mpi_counts::sent() - counted_before);
    const double rows_mine = double(mpi_counts::sent_alltoallv() - rows_before);
    read_back();
    double mine[6] = {res.seconds, res.comm.seconds, double(res.comm.bytes_sent), double(res.comm.exchanges),
                      counted_mine, rows_mine};
    std::vector<double> all(6 * static_cast<std::size_t>(ranks));
    MPI_Gather(mine, 6, MPI_DOUBLE, all.data(), 6, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank != 0 || rep == 0) continue;
    double slowest = 0, share_max = 0, bytes = 0, counted = 0, rows = 0;
    for (int r = 0; r < ranks; ++r) {
      slowest = std::max(slowest, all[6 * r]);
      share_max = std::max(share_max, all[6 * r + 1] / all[6 * r]);
      bytes += all[6 * r + 2];
      counted += all[6 * r + 4];
      rows += all[6 * r + 5];
    }
    // Resamplings: the initial one (the weights g_0 of the prior's draws) and one per transition.
    const int resamplings = count[0];
    double model_rows = 0;
    int seen = 0;
    for (std::int64_t c = 0; c <= K; ++c) {
      if (!(ess[c] < o.resampling.ess_threshold * double(N))) continue;
      ++seen;
      const double skew = double(N) / ess[c];
      for (int k = 1; k < ranks; ++k) {
        const double f = double(k) / ranks;
        model_rows += std::sqrt(2.0 / M_PI) * std::sqrt(double(N) * std::max(0.0, skew - 1.0) * f * (1 - f));
      }
    }
    const double per = std::max(1, resamplings);
    // Every transition (and the initial resampling) runs its starting agreement and the two statistics collectives
    // whether or not it resamples, and every rank but the last sends the next its running FP64 report sums (32
    // bytes); one that resamples agrees again before the row exchange.
    const double collective_bytes = double(ranks - 1) * ((52.0 + 4.0 + 32.0 / ranks) * double(K + 1) / per + 4.0);
    double model = 4.0 * d * model_rows / ranks / std::max(1, seen) + collective_bytes;
    const double nn = double(N), pp = double(ranks), moved = nn * (pp - 1) / (pp * pp);  // random ancestors
    if (scheme == ds::resampling_scheme::multinomial) model = 4.0 * d * moved + collective_bytes;
    if (scheme == ds::resampling_scheme::residual || scheme == ds::resampling_scheme::metropolis ||
        scheme == ds::resampling_scheme::rejection)
      model = 4.0 * nn * (pp - 1) / pp + (8.0 + 4.0 * d) * moved + 16.0 * (pp - 1);
    double mean_skew = 0, top_skew = 0;
    for (std::int64_t c = 0; c <= K; ++c) {
      mean_skew += double(N) / ess[c] / double(K + 1);
      top_skew = std::max(top_skew, double(N) / ess[c]);
    }
    std::printf("  %.3f s, %.3g particle-steps/s, MPI share (slowest rank) %.1f%%, %d resamplings, s = N/ESS mean "
                "%.2f, largest %.1f; bytes per rank per resampling: measured %.1f (counted at the MPI calls %.1f, "
                "of which MPI_Alltoallv %.1f), model %.0f (worst skew %.0f)\n",
                slowest, double(N) * double(K) / slowest, 100 * share_max, resamplings, mean_skew, top_skew,
                bytes / ranks / per, counted / ranks / per, rows / ranks / per, model,
                4.0 * d * double(N) * (ranks - 1) / ranks);
    if (ranks == 1) {
      // The same filter through the single-process entry point (its fused CPU loop, or its CUDA run), right after.
      const double t0 = MPI_Wtime();
      ds::guided_sample(prior, out, pr, o, exec);
      if (on_cuda) cudaStreamSynchronize(exec.stream);
      const double t = MPI_Wtime() - t0;
      std::printf("  single-process guided_sample: %.3f s, %.3g particle-steps/s\n", t, double(N) * double(K) / t);
    }
  }
  // The filter's rows against the model over many seeds, rank 0 alone: one run of one seed is one draw of each
  // boundary's |C - f| (a half-normal's spread: standard deviation 0.75 of its mean), and the resampling with the
  // largest skew dominates the mean, so the runs above (one seed, repeated) do not test the model. Per seed: the same
  // filter in one process (its particles, hence its weights, are those of every P), its weights at each resampling
  // resampled in the filter's order and in random orders; the rows a P-rank run moves are counted from the ancestors.
  if (rank == 0 && seeds > 0) {
    double sum[4][4] = {}, sum2[4][4] = {};  // [filter order, random order, model, corrected model][P]
    int per_run = 0;
    double ratio[3] = {}, top_skew = 0;
    for (int seed = 1; seed <= seeds; ++seed) {
      probe_shard probe(N);
      probe.last_step_ = static_cast<std::uint64_t>(K + 1);
      ds::execution cpu;
      cpu.kind = ds::executor::cpu;
      ds::guided_options so = o;
      so.seed = static_cast<std::uint64_t>(1000 + seed);
      ds::detail::guided_smc_shard(prior, pr, so, ds::guided_outputs{}, cpu, probe);
      per_run = probe.resamplings;
      top_skew += probe.largest_skew / seeds;
      for (int e = 0; e < 3; ++e) ratio[e] += probe.block_ratio[e] / seeds;
      for (int P : {2, 3}) {
        const double v[4] = {probe.rows_moved[P], probe.shuffled_moved[P], probe.model[P], probe.corrected[P]};
        for (int w = 0; w < 4; ++w) {
          sum[w][P] += v[w] / seeds;
          sum2[w][P] += v[w] * v[w] / seeds;
        }
      }
    }
    for (int P : {2, 3}) {
      double se[2];  // standard errors of the two counts' means over the seeds
      for (int w = 0; w < 2; ++w)
        se[w] = std::sqrt(std::max(0.0, sum2[w][P] - sum[w][P] * sum[w][P]) / std::max(1, seeds - 1));
      std::printf("  %d seeds, P = %d, rows crossing rank boundaries per run of %d resamplings (mean +- standard "
                  "error): filter's order %.0f +- %.0f, the same weights in random orders %.0f +- %.0f, model %.0f "
                  "(filter / model %.2f); model times sqrt(R) of the filter's order %.0f\n",
                  seeds, P, per_run, sum[0][P], se[0], sum[1][P], se[1], sum[2][P], sum[0][P] / sum[2][P], sum[3][P]);
    }
    std::printf("  at the resampling of largest skew (mean s = N/ESS %.2f): Var(sum of L adjacent weights) / "
                "(L Var(w)) = %.2f, %.2f, %.2f for L = 16, 256, 4096 (1 for exchangeable particles)\n",
                top_skew, ratio[0], ratio[1], ratio[2]);
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
  if (on_cuda) cudaFree(out.particles);
  MPI_Finalize();
  return 0;
}
