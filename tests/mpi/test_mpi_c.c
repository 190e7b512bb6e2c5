/* The C ABI of libdiffsample_mpi from a C99 program under mpirun: sharded Langevin and diffusion rows against a
 * single-process run of all chains (bit for bit, each rank checking its own rows), the global resampling against
 * ds_resample(), guided SMC and DPS over the ranks against ds_guided_sample() (this rank's rows bit for bit), and an
 * invalid argument, or an n, steps, seed or other option that changes the rows other than the others', on the last
 * rank returning the same status and message on every rank. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <diffsample/diffsample_mpi.h>

static int failures = 0;
#define CHECK(cond, what)                                                   \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "test_mpi_c: rank %d: %s failed\n", rank, (what));   \
      ++failures;                                                           \
    }                                                                       \
  } while (0)

/* The runtime calls of the stand-in check (cudaError_t is an int-sized enum). */
int cudaSetDevice(int device);
int cudaMalloc(void** ptr, size_t bytes);
int cudaFree(void* ptr);

/* Under the stand-in for the runtime's device calls (tests/mpi/runtime_probe.c preloaded, 2 devices; ctest
 * test_mpi_c_stand_in_np2 and _np3), where rank r runs on device r mod 2: a mixture whose tables are on the other
 * device is refused by ds_mpi_langevin and ds_mpi_diffusion on every rank (DS_INVALID_ARGUMENT, rank 0's message),
 * before any kernel; one made on the rank's device is not (its run fails at its first kernel, which the real
 * runtime refuses here). Seen failing before the check: the runtime's error at the kernel instead. */
static void stand_in_devices(int rank, int ranks) {
  const double weights[2] = {0.4, 0.6}, means[4] = {-1.0, 0.5, 1.5, -0.5}, variances[2] = {0.3, 0.2};
  ds_mixture *early = NULL, *late = NULL;
  CHECK(cudaSetDevice((rank + 1) % 2) == 0, "cudaSetDevice");
  CHECK(ds_mixture_create(2, 2, weights, means, variances, 2, &early) == DS_SUCCESS, "ds_mixture_create");
  CHECK(cudaSetDevice(rank % 2) == 0, "cudaSetDevice");
  CHECK(ds_mixture_create(2, 2, weights, means, variances, 2, &late) == DS_SUCCESS, "ds_mixture_create");
  float* x = NULL;
  CHECK(cudaMalloc((void**)&x, 64 * sizeof(float)) == 0, "cudaMalloc");
  const ds_execution gpu = {DS_EXECUTOR_CUDA, NULL};
  ds_langevin_options lo;
  ds_langevin_options_init(&lo, sizeof lo);
  lo.steps = 2;
  ds_diffusion_options dop;
  ds_diffusion_options_init(&dop, sizeof dop);
  dop.steps = 2;
  char expected[160];
  snprintf(expected, sizeof expected, "rank 0 of %d: mixture: its tables are on device 1, but this rank runs on device 0",
           ranks);
  for (int k = 0; k < 2; ++k) {
    const ds_mixture* m = k == 0 ? early : late;
    for (int call = 0; call < 2; ++call) {
      const ds_status st = call == 0 ? ds_mpi_langevin(MPI_COMM_WORLD, m, x, 11, &lo, NULL, NULL, gpu, NULL, NULL)
                                     : ds_mpi_diffusion(MPI_COMM_WORLD, m, x, 11, &dop, NULL, gpu, NULL);
      const char* message = ds_mpi_last_error();
      if (k == 0) {
        CHECK(st == DS_INVALID_ARGUMENT && strncmp(message, expected, strlen(expected)) == 0,
              call == 0 ? "ds_mpi_langevin refusing tables on another device" : "ds_mpi_diffusion refusing tables "
                                                                                "on another device");
      } else {
        CHECK(strstr(message, "its tables are on device") == NULL,
              call == 0 ? "ds_mpi_langevin with tables on the rank's device" : "ds_mpi_diffusion with tables on the "
                                                                               "rank's device");
      }
      if ((k == 0) != (st == DS_INVALID_ARGUMENT && strstr(message, "its tables") != NULL))
        fprintf(stderr, "test_mpi_c: rank %d: status %d, %s\n", rank, (int)st, message);
    }
  }
  /* A CUDA run whose kernels fail on the last rank alone (its stream's synchronisation returns 700, illegal address,
   * as the real runtime reports a failed kernel; n = 0, so that no rank launches a kernel the stand-in cannot run):
   * ds_mpi_langevin and ds_mpi_diffusion wait for the stream, as the C++ calls do, and every rank returns
   * DS_CUDA_ERROR with the last rank's message. Seen failing before the wait: DS_SUCCESS on every rank. */
  for (int call = 0; call < 2; ++call) {
    if (rank == ranks - 1) setenv("RUNTIME_PROBE_SYNC_ERROR", "700", 1);
    const ds_status st = call == 0 ? ds_mpi_langevin(MPI_COMM_WORLD, late, NULL, 0, &lo, NULL, NULL, gpu, NULL, NULL)
                                   : ds_mpi_diffusion(MPI_COMM_WORLD, late, NULL, 0, &dop, NULL, gpu, NULL);
    unsetenv("RUNTIME_PROBE_SYNC_ERROR");
    const char* message = ds_mpi_last_error();
    snprintf(expected, sizeof expected, "rank %d of %d: the chains: cudaStreamSynchronize: ", ranks - 1, ranks);
    CHECK(st == DS_CUDA_ERROR && strncmp(message, expected, strlen(expected)) == 0,
          call == 0 ? "ds_mpi_langevin: a kernel failing on the last rank fails every rank"
                    : "ds_mpi_diffusion: a kernel failing on the last rank fails every rank");
    char rank0[256] = {0};
    strncpy(rank0, message, sizeof rank0 - 1);
    MPI_Bcast(rank0, (int)sizeof rank0, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(strcmp(rank0, message) == 0, "the same message on every rank");
    if (st != DS_CUDA_ERROR) fprintf(stderr, "test_mpi_c: rank %d: status %d, %s\n", rank, (int)st, message);
  }
  cudaFree(x);
  ds_mixture_destroy(early);
  ds_mixture_destroy(late);
}

/* This process's address space in bytes (/proc/self/statm). */
static size_t address_space(void) {
  FILE* f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f != NULL) {
    if (fscanf(f, "%lu", &pages) != 1) pages = 0;
    fclose(f);
  }
  return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

int main(int argc, char** argv) {
  int rank = 0, ranks = 1;
  /* One allocator arena, and every block above 128 KiB mapped on its own: under a lowered address-space limit an
   * allocation needs new address space. */
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (getenv("RUNTIME_PROBE_DEVICES") != NULL) { /* under the stand-in runtime: that check alone */
    stand_in_devices(rank, ranks);
    int worst = 0;
    MPI_Allreduce(&failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) printf("test_mpi_c: stand-in devices %s on %d ranks\n", worst == 0 ? "ok" : "FAILED", ranks);
    MPI_Finalize();
    return worst == 0 ? 0 : 1;
  }
  const double weights[2] = {0.4, 0.6}, means[4] = {-1.0, 0.5, 1.5, -0.5}, variances[2] = {0.3, 0.2};
  ds_mixture* mix = NULL;
  CHECK(ds_mixture_create(2, 2, weights, means, variances, 2, &mix) == DS_SUCCESS, "ds_mixture_create");
  ds_execution cpu = {DS_EXECUTOR_CPU, NULL};
  const int64_t n = 23, d = 2;
  int64_t first = -1, count = -1;
  CHECK(ds_mpi_shard(n, MPI_COMM_WORLD, &first, &count) == DS_SUCCESS, "ds_mpi_shard");

  /* Langevin: this rank's rows against the same rows of one process's run. */
  ds_langevin_options lo;
  ds_langevin_options_init(&lo, sizeof lo);
  lo.steps = 30;
  lo.seed = 9;
  lo.first_chain = 4;
  float* whole = calloc((size_t)(n * d), sizeof(float));
  float* mine = calloc((size_t)(count * d + 1), sizeof(float));
  int64_t* accepted = calloc((size_t)n, sizeof(int64_t));
  int64_t* mine_accepted = calloc((size_t)(count + 1), sizeof(int64_t));
  CHECK(ds_langevin(mix, whole, n, &lo, NULL, accepted, cpu, NULL, 0, NULL) == DS_SUCCESS, "ds_langevin");
  int64_t total = -2;
  CHECK(ds_mpi_langevin(MPI_COMM_WORLD, mix, mine, n, &lo, NULL, mine_accepted, cpu, NULL, &total) == DS_SUCCESS,
        "ds_mpi_langevin");
  CHECK(memcmp(mine, whole + first * d, (size_t)(count * d) * sizeof(float)) == 0, "Langevin rows bit for bit");
  int64_t expected = 0;
  for (int64_t i = 0; i < n; ++i) expected += accepted[i];
  CHECK(total == expected, "accepted proposals summed over the ranks");
  {
    /* One chain over the ranks: a rank whose share is empty passes no accepted buffer and still counts as counted. */
    int64_t f1 = -1, c1 = -1, one_accepted = -1, mine_one = -1, total_one = -2;
    float one[2] = {0.0f, 0.0f}, mine_row[2] = {0.0f, 0.0f};
    CHECK(ds_mpi_shard(1, MPI_COMM_WORLD, &f1, &c1) == DS_SUCCESS, "ds_mpi_shard of one chain");
    CHECK(ds_langevin(mix, one, 1, &lo, NULL, &one_accepted, cpu, NULL, 0, NULL) == DS_SUCCESS, "ds_langevin, 1 chain");
    CHECK(ds_mpi_langevin(MPI_COMM_WORLD, mix, mine_row, 1, &lo, NULL, c1 > 0 ? &mine_one : NULL, cpu, NULL,
                          &total_one) == DS_SUCCESS,
          "ds_mpi_langevin of one chain, NULL counts on the empty ranks");
    CHECK(total_one == one_accepted, "the accepted total of one chain over the ranks");
  }

  /* Diffusion (DDPM). */
  ds_diffusion_options dopt;
  ds_diffusion_options_init(&dopt, sizeof dopt);
  dopt.steps = 15;
  dopt.seed = 2;
  CHECK(ds_diffusion(mix, whole, n, &dopt, NULL, cpu, NULL, 0, NULL) == DS_SUCCESS, "ds_diffusion");
  CHECK(ds_mpi_diffusion(MPI_COMM_WORLD, mix, mine, n, &dopt, NULL, cpu, NULL) == DS_SUCCESS,
        "ds_mpi_diffusion");
  CHECK(memcmp(mine, whole + first * d, (size_t)(count * d) * sizeof(float)) == 0, "diffusion rows bit for bit");

  /* Global resampling against ds_resample(). */
  const int64_t N = 101;
  float* lw = calloc((size_t)N, sizeof(float));
  for (int64_t j = 0; j < N; ++j) lw[j] = (float)(2.0 * sin(0.37 * (double)j));
  ds_resampling_options ro;
  ds_resampling_options_init(&ro, sizeof ro);
  ro.ess_threshold = 2.0;
  ro.seed = 5;
  int32_t* all_ancestors = calloc((size_t)N, sizeof(int32_t));
  CHECK(ds_resample(lw, 1, N, &ro, all_ancestors, NULL, NULL, cpu, NULL, 0, NULL) == DS_SUCCESS, "ds_resample");
  int64_t pf = 0, pc = 0;
  ds_mpi_shard(N, MPI_COMM_WORLD, &pf, &pc);
  int64_t* ancestors = calloc((size_t)(pc + 1), sizeof(int64_t));
  ds_particle_report report;
  CHECK(ds_mpi_resample(MPI_COMM_WORLD, lw + pf, 1, N, &ro, ancestors, NULL, &report) == DS_SUCCESS,
        "ds_mpi_resample");
  for (int64_t i = 0; i < pc; ++i) CHECK(ancestors[i] == all_ancestors[pf + i], "ancestors bit for bit");
  CHECK(report.resampled == 1, "the problem was resampled");
  /* Options ds_resample() refuses (struct_size 0, an unknown scheme) on the last rank only: every rank returns
   * DS_INVALID_ARGUMENT naming the field, before the exchange. */
  for (int bad = 0; bad < 2; ++bad) {
    ds_resampling_options wrong = ro;
    if (rank == ranks - 1) {
      if (bad == 0)
        wrong.struct_size = 0;
      else
        memset(&wrong.scheme, 0x7f, sizeof wrong.scheme);
    }
    CHECK(ds_resample(lw, 1, N, &wrong, all_ancestors, NULL, NULL, cpu, NULL, 0, NULL) ==
              (rank == ranks - 1 ? DS_INVALID_ARGUMENT : DS_SUCCESS),
          "ds_resample on the rank's own options");
    const ds_status rs = ds_mpi_resample(MPI_COMM_WORLD, lw + pf, 1, N, &wrong, ancestors, NULL, &report);
    CHECK(rs == DS_INVALID_ARGUMENT, "unreadable resampling options fail every rank");
    CHECK(strstr(ds_mpi_last_error(), bad == 0 ? "options.struct_size" : "options.scheme") != NULL,
          "the field named in the message");
  }

  /* A problem count beyond the limits (2^40, every rank), with a reports buffer: DS_INVALID_ARGUMENT naming it on every
   * rank, and the process goes on. Seen failing: std::bad_alloc from a B-report scratch allocated before the checks
   * escaped the C call and aborted every rank. */
  {
    const ds_status rs = ds_mpi_resample(MPI_COMM_WORLD, lw + pf, (int64_t)1 << 40, N, &ro, ancestors, NULL, &report);
    CHECK(rs == DS_INVALID_ARGUMENT, "2^40 problems refused");
    CHECK(strstr(ds_mpi_last_error(), "problems") != NULL, "the argument named in the message");
  }

  /* Guided SMC (one global filter), DPS (independent particles), guided SMC with the start correction and guided SMC
   * with the multistep kernel (its denoiser rows travelling with the particles between the ranks) against one
   * process's ds_guided_sample(). */
  const double A[2] = {1.0, 0.5}, y[2] = {0.7, -1.5}, sigma_y = 0.3;
  ds_guided_problems gp;
  ds_guided_problems_init(&gp, sizeof gp);
  gp.problems = 2;
  gp.d_y = 1;
  gp.A = A;
  gp.A_count = 2;
  gp.y = y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  const int64_t GP = 31, GB = 2;
  int64_t gf = 0, gc = 0;
  ds_mpi_shard(GP, MPI_COMM_WORLD, &gf, &gc);
  float* g_whole = calloc((size_t)(GB * GP * d), sizeof(float));
  float* g_mine = calloc((size_t)(GB * gc * d + 1), sizeof(float));
  double logz[2] = {0, 0}, mine_logz[2] = {1, 1};
  for (int sampler = 0; sampler < 5; ++sampler) {
    ds_guided_options go;
    ds_guided_options_init(&go, sizeof go);
    /* 0, 2, 3: linear potentials, plain, with the start correction, with the multistep kernel; 4: the default
     * potentials (automatic: here twisted with both, d_y = 1 and a grid ending at s = 0). */
    if (sampler != 4) go.potentials = DS_POTENTIALS_LINEAR;
    go.sampler = sampler == 1 ? DS_GUIDED_DPS : DS_GUIDED_SMC;
    go.start_correction = sampler == 2;
    go.multistep_kernel = sampler == 3;
    go.particles = GP;
    go.steps = 10;
    go.seed = 13;
    /* the multistep kernel: a resampling between weightings; DPS reads no resampling (and refuses the setting) */
    if (sampler != 1) go.resampling.ess_threshold = sampler >= 3 ? 2.0 : 0.8;
    ds_guided_outputs gw, gm;
    ds_guided_outputs_init(&gw, sizeof gw);
    ds_guided_outputs_init(&gm, sizeof gm);
    gw.samples = g_whole;
    gm.samples = g_mine;
    if (sampler != 1) {
      gw.log_normaliser = logz;
      gm.log_normaliser = mine_logz;
    }
    /* The default final moves (automatic): 4 moves in one process and in the global filter (each rank moves its own
     * rows of the samples). */
    CHECK(ds_guided_sample(mix, &gp, &go, &gw, cpu, NULL, 0, NULL) == DS_SUCCESS, "ds_guided_sample");
    ds_mpi_guided_result gr;
    memset(&gr, 0xff, sizeof gr);
    CHECK(ds_mpi_guided_sample(MPI_COMM_WORLD, mix, &gp, &go, &gm, DS_MPI_SMC_GLOBAL, cpu, &gr) == DS_SUCCESS,
          "ds_mpi_guided_sample");
    CHECK(gr.first == gf && gr.count == gc && gr.local.ran == DS_EXECUTOR_CPU, "the rank's share in the result");
    for (int64_t b = 0; b < GB; ++b)
      CHECK(memcmp(g_mine + b * gc * d, g_whole + (b * GP + gf) * d, (size_t)(gc * d) * sizeof(float)) == 0,
            sampler == 0   ? "guided SMC samples bit for bit"
            : sampler == 1 ? "DPS samples bit for bit"
            : sampler == 2 ? "guided SMC samples with the start correction bit for bit"
            : sampler == 3 ? "guided SMC samples with the multistep kernel bit for bit"
                           : "guided SMC samples with the default potentials bit for bit");
    if (sampler != 1)
      for (int b = 0; b < 2; ++b)
        CHECK(fabs(mine_logz[b] - logz[b]) <= 1e-9 * (1 + fabs(logz[b])), "log Z reduced over the ranks");
  }
  /* A struct the last rank cannot read (struct_size 0) fails every rank before the run. */
  {
    ds_guided_options go;
    ds_guided_options_init(&go, sizeof go);
    go.particles = GP;
    if (rank == ranks - 1) go.struct_size = 0;
    ds_guided_outputs gm;
    ds_guided_outputs_init(&gm, sizeof gm);
    gm.samples = g_mine;
    const ds_status gs = ds_mpi_guided_sample(MPI_COMM_WORLD, mix, &gp, &go, &gm, DS_MPI_SMC_GLOBAL, cpu, NULL);
    CHECK(gs == DS_INVALID_ARGUMENT, "an unreadable options struct fails every rank");
    CHECK(strstr(ds_mpi_last_error(), "options") != NULL, "the struct named in the message");
  }
  /* ds_mpi_guided_sample2: this rank's full report with the default settings resolved as the distributed run
   * resolves them (d_y = 1, a grid ending at s = 0: twisted with both corrections and 4 final moves, in the global
   * filter as in island mode), the same report ds_guided_sample2 gives one process for the island's run; a report of
   * no known layout on the last rank fails every rank before the run. */
  {
    ds_guided_options go;
    ds_guided_options_init(&go, sizeof go);
    go.particles = GP;
    go.steps = 6;
    go.seed = 21;
    ds_guided_outputs gm;
    ds_guided_outputs_init(&gm, sizeof gm);
    gm.samples = g_mine;
    ds_guided_report2 local;
    ds_mpi_guided_result gr;
    for (int islands = 0; islands < 2; ++islands) {
      ds_guided_report2_init(&local, sizeof local);
      memset(&gr, 0xff, sizeof gr);
      CHECK(ds_mpi_guided_sample2(MPI_COMM_WORLD, mix, &gp, &go, &gm, islands ? DS_MPI_SMC_ISLANDS : DS_MPI_SMC_GLOBAL,
                                  cpu, &gr, &local) == DS_SUCCESS,
            "ds_mpi_guided_sample2");
      CHECK(local.struct_size == sizeof local && local.ran == DS_EXECUTOR_CPU && gr.local.ran == DS_EXECUTOR_CPU &&
                local.launches == gr.local.launches,
            "the full report's executor and launches, as the result's");
      CHECK(local.potentials == DS_POTENTIALS_TWISTED && local.start_correction == 1 && local.multistep_kernel == 1,
            "the default potentials resolved to twisted with both corrections");
      CHECK(local.final_moves == 4, "the final moves that ran: 4, in the global filter as on each island");
    }
    ds_guided_report2_init(&local, sizeof local);
    if (rank == ranks - 1) local.struct_size = 12;
    const ds_status gs =
        ds_mpi_guided_sample2(MPI_COMM_WORLD, mix, &gp, &go, &gm, DS_MPI_SMC_GLOBAL, cpu, NULL, &local);
    CHECK(gs == DS_INVALID_ARGUMENT, "a report of no known layout fails every rank");
    CHECK(strstr(ds_mpi_last_error(), "report.struct_size") != NULL, "the report named in the message");
    /* The result and the full report, written after the run, inside the last rank's samples (B x count rows): every
     * rank fails before the run naming both, no rank's samples written. Seen failing before: the run went on and
     * wrote them over the last rank's samples. */
    const size_t bytes = (size_t)(GB * gc * d) * sizeof(float);
    float* before = malloc(bytes);
    for (int which = 0; which < 2; ++which) {
      const int last = rank == ranks - 1;
      ds_mpi_guided_result* res = which == 0 && last ? (ds_mpi_guided_result*)(void*)(g_mine + 2) : &gr;
      ds_guided_report2* loc = which == 1 && last ? (ds_guided_report2*)(void*)(g_mine + 2) : &local;
      for (int64_t i = 0; i < GB * gc * d; ++i) g_mine[i] = 0.5f;
      ds_guided_report2_init(loc, sizeof *loc);
      memcpy(before, g_mine, bytes);
      const ds_status st = ds_mpi_guided_sample2(MPI_COMM_WORLD, mix, &gp, &go, &gm, DS_MPI_SMC_GLOBAL, cpu, res, loc);
      CHECK(st == DS_INVALID_ARGUMENT, "a result or report inside the last rank's samples fails every rank");
      char named[96];
      snprintf(named, sizeof named, "rank %d of %d: %s: must not overlap outputs.samples", ranks - 1, ranks,
               which == 0 ? "result" : "local");
      CHECK(strncmp(ds_mpi_last_error(), named, strlen(named)) == 0, "the result or report named with the samples");
      CHECK(memcmp(before, g_mine, bytes) == 0, "no rank's samples written");
    }
    free(before);
  }
  free(g_whole);
  free(g_mine);

  /* A trajectory that overlaps x on the last rank only: every rank returns DS_INVALID_ARGUMENT naming it before any
   * rank runs, and every rank's x and trajectory are left as they were. Seen failing before the agreement on the
   * buffers: the other ranks ran their chains, wrote x and their trajectory, then returned the last rank's error. */
  {
    const size_t values = (size_t)(count * d);
    float* rows = malloc(values * sizeof(float));
    float* traj = malloc(values * sizeof(float));
    ds_langevin_options one = lo;
    one.record_every = one.steps; /* one record: count x d floats */
    ds_diffusion_options done = dopt;
    done.record_every = done.steps;
    for (int call = 0; call < 2; ++call) {
      for (size_t i = 0; i < values; ++i) rows[i] = traj[i] = 0.25f;
      float* t = rank == ranks - 1 ? rows : traj;
      const ds_status st = call == 0 ? ds_mpi_langevin(MPI_COMM_WORLD, mix, rows, n, &one, t, NULL, cpu, NULL, NULL)
                                     : ds_mpi_diffusion(MPI_COMM_WORLD, mix, rows, n, &done, t, cpu, NULL);
      CHECK(st == DS_INVALID_ARGUMENT, call == 0 ? "ds_mpi_langevin: an overlap on the last rank fails every rank"
                                                 : "ds_mpi_diffusion: an overlap on the last rank fails every rank");
      char overlap[96];
      snprintf(overlap, sizeof overlap, "rank %d of %d: outputs.trajectory: must not overlap x", ranks - 1, ranks);
      CHECK(strncmp(ds_mpi_last_error(), overlap, strlen(overlap)) == 0, "the overlap named in the message");
      int untouched = 1;
      for (size_t i = 0; i < values; ++i) untouched = untouched && rows[i] == 0.25f && traj[i] == 0.25f;
      CHECK(untouched, call == 0 ? "ds_mpi_langevin: no rank's x or trajectory written"
                                 : "ds_mpi_diffusion: no rank's x or trajectory written");
    }
    free(rows);
    free(traj);
  }

  /* A report (or the accepted total) the C layer writes after the run, inside x, the trajectory or the counts on the
   * last rank only: every rank returns DS_INVALID_ARGUMENT naming both before any rank runs, every rank's buffers as
   * they were. Seen failing before: the run went on and wrote the report over the last rank's rows (and counts). */
  {
    const size_t values = (size_t)(count * d) + 8;
    double* store = malloc(values * sizeof(double)); /* 8-byte aligned: reports hold int64 */
    float* rows = (float*)(void*)store;
    float* other = malloc(values * sizeof(float));
    int64_t* acc = malloc(((size_t)count + 1) * sizeof(int64_t));
    const int last = rank == ranks - 1;
    ds_langevin_options one = lo;
    one.record_every = one.steps; /* one record: count x d floats */
    ds_diffusion_options done = dopt;
    done.record_every = done.steps;
    for (int call = 0; call < 5; ++call) {
      ds_langevin_report lrep;
      ds_diffusion_report drep;
      int64_t total_out = 0;
      const char* named = "report: must not overlap x";
      ds_status st;
      for (size_t i = 0; i < values; ++i) rows[i] = other[i] = 0.25f;
      for (int64_t i = 0; i <= count; ++i) acc[i] = 7;
      if (call == 0) {
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, rows, n, &lo, NULL, NULL, cpu,
                             last ? (ds_langevin_report*)(void*)(rows + 2) : &lrep, NULL);
      } else if (call == 1) {
        named = "report: must not overlap trajectory";
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, other, n, &one, rows, NULL, cpu,
                             last ? (ds_langevin_report*)(void*)(rows + 2) : &lrep, NULL);
      } else if (call == 2) {
        named = "accepted_total: must not overlap accepted";
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, other, n, &lo, NULL, acc, cpu, &lrep,
                             last ? acc + count - 1 : &total_out);
      } else if (call == 3) {
        named = "report: must not overlap trajectory";
        st = ds_mpi_diffusion(MPI_COMM_WORLD, mix, other, n, &done, rows, cpu,
                              last ? (ds_diffusion_report*)(void*)(rows + 2) : &drep);
      } else {
        st = ds_mpi_diffusion(MPI_COMM_WORLD, mix, rows, n, &dopt, NULL, cpu,
                              last ? (ds_diffusion_report*)(void*)(rows + 2) : &drep);
      }
      CHECK(st == DS_INVALID_ARGUMENT, "a report inside the last rank's buffers fails every rank");
      char expected_words[96];
      snprintf(expected_words, sizeof expected_words, "rank %d of %d: %s", ranks - 1, ranks, named);
      CHECK(strncmp(ds_mpi_last_error(), expected_words, strlen(expected_words)) == 0,
            "the report and the buffer named in the message");
      int untouched = 1;
      for (size_t i = 0; i < values; ++i) untouched = untouched && rows[i] == 0.25f && other[i] == 0.25f;
      for (int64_t i = 0; i <= count; ++i) untouched = untouched && acc[i] == 7;
      CHECK(untouched, "no rank's rows, trajectory or counts written");
    }
    free(store);
    free(other);
    free(acc);
  }

  /* An invalid step size on the last rank only: every rank returns DS_INVALID_ARGUMENT with the same message. */
  if (rank == ranks - 1) lo.step_size = -1.0;
  const ds_status status = ds_mpi_langevin(MPI_COMM_WORLD, mix, mine, n, &lo, NULL, NULL, cpu, NULL, NULL);
  CHECK(status == DS_INVALID_ARGUMENT, "the invalid argument's status on every rank");
  char prefix[64];
  snprintf(prefix, sizeof prefix, "rank %d of %d: ", ranks - 1, ranks);
  CHECK(strncmp(ds_mpi_last_error(), prefix, strlen(prefix)) == 0, "the failing rank named in the message");
  CHECK(strstr(ds_mpi_last_error(), "step_size") != NULL, "the argument named in the message");

  /* Options of a layout the library does not know, as short as their struct_size says (8 bytes at the end of a page
   * whose next page is unreadable), on the last rank: every rank fails naming options.struct_size, and no call
   * reads past the caller's bytes. */
  {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char* pages = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(pages != MAP_FAILED && mprotect(pages + page, page, PROT_NONE) == 0, "a page with an unreadable neighbour");
    const size_t short_size = sizeof(size_t);
    memcpy(pages + page - short_size, &short_size, sizeof short_size);
    ds_langevin_options full_lo = lo;
    ds_diffusion_options full_do = dopt;
    full_lo.step_size = 1e-2;
    const ds_langevin_options* lo_arg = rank == ranks - 1 ? (const ds_langevin_options*)(pages + page - short_size) : &full_lo;
    const ds_diffusion_options* do_arg = rank == ranks - 1 ? (const ds_diffusion_options*)(pages + page - short_size) : &full_do;
    CHECK(ds_mpi_langevin(MPI_COMM_WORLD, mix, mine, n, lo_arg, NULL, NULL, cpu, NULL, NULL) == DS_INVALID_ARGUMENT,
          "ds_mpi_langevin: a short options struct fails every rank");
    CHECK(strstr(ds_mpi_last_error(), "options.struct_size") != NULL, "ds_mpi_langevin: struct_size named");
    CHECK(ds_mpi_diffusion(MPI_COMM_WORLD, mix, mine, n, do_arg, NULL, cpu, NULL) == DS_INVALID_ARGUMENT,
          "ds_mpi_diffusion: a short options struct fails every rank");
    CHECK(strstr(ds_mpi_last_error(), "options.struct_size") != NULL, "ds_mpi_diffusion: struct_size named");
    munmap(pages, 2 * page);
  }

  /* What every rank must pass alike (n and the options) differing on the last rank: every rank returns
   * DS_INVALID_ARGUMENT with the same message naming the last rank and the value, before any chain runs. */
  if (ranks > 1) {
    const int last = rank == ranks - 1;
    char expected_prefix[64];
    snprintf(expected_prefix, sizeof expected_prefix, "rank %d of %d: ", ranks - 1, ranks);
    float* rows = calloc((size_t)((n + 1) * d), sizeof(float)); /* room for any shard of n + 1 chains */
    float* path = calloc((size_t)(31 * (n + 1) * d), sizeof(float)); /* a trajectory of up to 31 records */
    for (int which = 0; which < 11; ++which) {
      ds_langevin_options l = lo;
      ds_diffusion_options o = dopt;
      int64_t nn = n;
      ds_status st;
      const char* name;
      l.step_size = 1e-2;
      if (which == 0) {
        nn = last ? n + 1 : n;
        name = "n: ";
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, rows, nn, &l, NULL, NULL, cpu, NULL, NULL);
      } else if (which == 1) {
        l.steps += last;
        name = "options.steps: ";
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, rows, nn, &l, NULL, NULL, cpu, NULL, NULL);
      } else if (which == 2) {
        o.seed += (uint64_t)last;
        name = "options.seed: ";
        st = ds_mpi_diffusion(MPI_COMM_WORLD, mix, rows, nn, &o, NULL, cpu, NULL);
      } else if (which == 3) {
        nn = last ? n - 1 : n;
        name = "n: ";
        st = ds_mpi_diffusion(MPI_COMM_WORLD, mix, rows, nn, &o, NULL, cpu, NULL);
      } else if (which <= 8) {
        /* Diffusion options that change the rows, each valid on its own (seen failing: DS_SUCCESS on every rank). */
        if (which == 4) {
          o.schedule.t_start = last ? 0.9 : 1.0;
          name = "options.schedule.t_start: ";
        } else if (which == 5) {
          o.sampler = DS_DIFFUSION_DDIM;
          o.eta = last ? 0.5 : 0.0;
          name = "options.eta: ";
        } else if (which == 6) {
          o.sampler = DS_DIFFUSION_WALK_JUMP;
          o.sigma = last ? 0.8 : 1.0;
          name = "options.sigma: ";
        } else if (which == 7) {
          o.sampler = DS_DIFFUSION_WALK_JUMP;
          o.step_size = last ? 0.05 : 0.1;
          name = "options.step_size: ";
        } else {
          o.record_every = last ? 5 : 0;
          name = "options.record_every: ";
        }
        st = ds_mpi_diffusion(MPI_COMM_WORLD, mix, rows, nn, &o, o.record_every > 0 ? path : NULL, cpu, NULL);
      } else {
        /* Langevin's target channel and trajectory. */
        if (which == 9) {
          l.target.s = last ? 0.2 : 0.0;
          name = "options.target.s: ";
        } else {
          l.record_every = last ? 1 : 0;
          name = "options.record_every: ";
        }
        st = ds_mpi_langevin(MPI_COMM_WORLD, mix, rows, nn, &l, l.record_every > 0 ? path : NULL, NULL, cpu, NULL,
                             NULL);
      }
      char what[96];
      snprintf(what, sizeof what, "a differing %s(case %d) fails every rank", name, which);
      CHECK(st == DS_INVALID_ARGUMENT, what);
      const char* msg = ds_mpi_last_error();
      CHECK(strncmp(msg, expected_prefix, strlen(expected_prefix)) == 0 && strstr(msg, name) != NULL &&
                strstr(msg, "every rank must pass the same") != NULL,
            "the differing rank and value named in the message");
      char rank0[512] = {0};
      strncpy(rank0, msg, sizeof rank0 - 1);
      MPI_Bcast(rank0, (int)sizeof rank0, MPI_CHAR, 0, MPI_COMM_WORLD);
      CHECK(strcmp(rank0, msg) == 0, "the same message on every rank");
    }
    free(rows);
    free(path);
  }

  /* ds_mpi_langevin sums this rank's accepted counts without allocating: with the last rank's address space limited to
   * what it holds plus 1 MiB, a million chains' counts per rank (8 MB) still sum (seen failing: the counts copied to
   * a host vector first, whose std::bad_alloc escaped the C call and aborted the job at P = 1, 2 and 3). */
  {
    const int64_t big = 1000000 * (int64_t)ranks;
    int64_t bf = 0, bc = 0;
    ds_mpi_shard(big, MPI_COMM_WORLD, &bf, &bc);
    float* bx = calloc((size_t)(bc * d + 1), sizeof(float));
    int64_t* bacc = calloc((size_t)(bc + 1), sizeof(int64_t));
    ds_langevin_options bl = lo;
    bl.steps = 1;
    bl.step_size = 1e-2;
    int64_t unlimited = -2, limited = -3;
    CHECK(ds_mpi_langevin(MPI_COMM_WORLD, mix, bx, big, &bl, NULL, bacc, cpu, NULL, &unlimited) == DS_SUCCESS,
          "ds_mpi_langevin of a million chains per rank");
    struct rlimit saved, lowered;
    const int last = rank == ranks - 1;
    if (last) {
      malloc_trim(0);
      getrlimit(RLIMIT_AS, &saved);
      lowered = saved;
      lowered.rlim_cur = address_space() + ((size_t)1 << 20);
      CHECK(setrlimit(RLIMIT_AS, &lowered) == 0, "setrlimit");
    }
    memset(bx, 0, (size_t)(bc * d) * sizeof(float));
    const ds_status st = ds_mpi_langevin(MPI_COMM_WORLD, mix, bx, big, &bl, NULL, bacc, cpu, NULL, &limited);
    if (last) setrlimit(RLIMIT_AS, &saved);
    CHECK(st == DS_SUCCESS, "ds_mpi_langevin with 1 MiB of address space left on the last rank");
    CHECK(limited == unlimited && limited >= 0, "the same accepted total");
    free(bx);
    free(bacc);
  }

  free(whole);
  free(mine);
  free(accepted);
  free(mine_accepted);
  free(lw);
  free(all_ancestors);
  free(ancestors);
  ds_mixture_destroy(mix);
  int worst = 0;
  MPI_Allreduce(&failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) printf("test_mpi_c: %s on %d ranks\n", worst == 0 ? "ok" : "FAILED", ranks);
  MPI_Finalize();
  return worst == 0 ? 0 : 1;
}
