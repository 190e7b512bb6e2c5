// A program of a separate project that finds libdiffsample_mpi through find_package(diffsample COMPONENTS mpi):
// Langevin chains sharded over the ranks, gathered on rank 0 and compared with one process's run of all chains.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include <diffsample/diffsample.hpp>
#include <diffsample/mpi.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const diffsample::gaussian_mixture mix(2, {1.0, 2.0}, {-1.0, 0.0, 1.0, 0.5}, {0.3, 0.2});
  diffsample::langevin_options o;
  o.steps = 20;
  o.seed = 5;
  diffsample::execution cpu;
  cpu.kind = diffsample::executor::cpu;
  const std::int64_t n = 11;
  const diffsample::mpi::shard s = diffsample::mpi::shard_of(n, MPI_COMM_WORLD);
  std::vector<float> mine(s.count * 2 + 1, 0.f), whole(n * 2, 0.f);
  const diffsample::mpi::chain_report rep = diffsample::mpi::langevin(MPI_COMM_WORLD, mix, mine.data(), {}, n, o, cpu);
  const std::vector<float> gathered = diffsample::mpi::gather_rows(MPI_COMM_WORLD, s.count, 2, mine.data());
  int status = 0;
  if (rank == 0) {
    diffsample::langevin(mix, whole.data(), {}, n, o, cpu);
    status = gathered.size() == whole.size() && std::memcmp(gathered.data(), whole.data(), whole.size() * 4) == 0 ? 0 : 1;
    std::printf("consumer_mpi: %lld chains, acceptance %.3f, %s\n", static_cast<long long>(rep.chains),
                rep.acceptance_rate, status == 0 ? "equal to one process" : "DIFFERENT from one process");
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return status;
}
