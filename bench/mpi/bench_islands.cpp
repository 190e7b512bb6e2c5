// The bias of island mode against the global filter: the posterior mean of x_1 estimated from the samples of
// mpi::guided_sample in both modes (N particles over the P ranks, 8 steps, seeds 1000 + 7 i), its error against the
// exact posterior mean (mixture_posterior), mean and standard error over the seeds.
//   mpirun -np P build/bench/bench_mpi_islands N seeds
#include <mpi.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <diffsample/diffsample.hpp>
#include <diffsample/mpi.hpp>
namespace ds = diffsample;
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, P; MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &P);
  const std::int64_t N = std::atoll(argv[1]); const int seeds = std::atoi(argv[2]);
  ds::execution cpu; cpu.kind = ds::executor::cpu;
  ds::gaussian_mixture prior(2, {0.3, 0.7}, {-2.0, 0.0, 2.0, 1.0}, {0.25, 0.5});
  ds::guided_problems pr; pr.problems = 1; pr.d_y = 1; pr.A = {1.0, 0.5}; pr.y = {0.7}; pr.sigma_y = {0.3};
  ds::linear_observation lo; lo.A = {1.0, 0.5}; lo.y = {0.7}; lo.sigma_y = 0.3; lo.d_y = 1; lo.d_x = 2;
  const ds::mixture_posterior post(prior, lo);
  const double exact = post.mean()[0];
  const ds::mpi::shard s = ds::mpi::shard_of(N, MPI_COMM_WORLD);
  double sum[2] = {0, 0}, sum2[2] = {0, 0};
  for (int seed = 0; seed < seeds; ++seed) {
    for (int m = 0; m < 2; ++m) {
      ds::guided_options o; o.particles = N; o.steps = 8; o.seed = 1000 + seed * 7;
      std::vector<float> x(s.count * 2 + 1);
      ds::guided_outputs out{}; out.samples = x.data();
      ds::mpi::guided_sample(MPI_COMM_WORLD, prior, out, pr, o, m == 0 ? ds::mpi::smc_mode::global : ds::mpi::smc_mode::islands, cpu);
      double local = 0, all = 0;
      for (std::int64_t i = 0; i < s.count; ++i) local += x[2 * i];
      MPI_Allreduce(&local, &all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      const double e = all / N - exact;
      sum[m] += e; sum2[m] += e * e;
    }
  }
  if (rank == 0)
    for (int m = 0; m < 2; ++m) {
      const double mean = sum[m] / seeds, se = std::sqrt((sum2[m] / seeds - mean * mean) / (seeds - 1));
      std::printf("%s P=%d N=%lld seeds=%d: bias of the posterior mean of x_1 %.4f +- %.4f (exact %.4f)\n",
                  m == 0 ? "global " : "islands", P, (long long)N, seeds, mean, se, exact);
    }
  MPI_Finalize();
}
