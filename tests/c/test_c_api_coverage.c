/* The C ABI's forms of what the C++ API has beyond the first C release: ds_diffusion (and its former name), int64
 * ancestors, the executor and asynchronous forms of the sliced Wasserstein distance, component weights, SVD
 * operators in guided problems, the SMC potentials and time-grid settings and the grid's times, the full guided
 * report (ds_guided_sample2), the gemm path's preparation (ds_mixture_prepare_gemm), and the names of every enum.
 * Each new form is checked against the form it mirrors, bit for bit where the computation is the same, or against a
 * closed form; and every field of the Langevin, diffusion and guided options changes the run. CPU executor only
 * (host buffers): no GPU needed. Exits nonzero on any failed check. */
#include <diffsample/diffsample.h>

#include "check.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The call must fail with invalid_argument and a message naming `needle`. */
#define EXPECT_INVALID(call, needle) EXPECT_ERROR(call, DS_INVALID_ARGUMENT, needle)

static const ds_execution cpu = {DS_EXECUTOR_CPU, NULL};

/* ds_diffusion() and its former name ds_diffusion_sample() are one call: the same samples bit for bit. */
static void test_diffusion_name(ds_mixture* m) {
  enum { n = 64 };
  float a[n * 2], b[n * 2];
  ds_diffusion_options o;
  ds_diffusion_report report;
  CHECK_OK(ds_diffusion_options_init(&o, sizeof o));
  o.steps = 20;
  o.seed = 3;
  CHECK_OK(ds_diffusion(m, a, n, &o, NULL, cpu, NULL, 0, &report));
  CHECK(report.ran == DS_EXECUTOR_CPU && report.total_steps == 20);
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
  CHECK_OK(ds_diffusion_sample(m, b, n, &o, NULL, cpu, NULL, 0, NULL));
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
  CHECK(memcmp(a, b, sizeof a) == 0);
}

/* int64 ancestors: the same resampling and the same gather as with int32 ones. */
static void test_int64_ancestors(void) {
  enum { B = 3, N = 50, d = 2 };
  float lw[B * N], states[B * N * d], out32[B * N * d], out64[B * N * d];
  int32_t a32[B * N];
  int64_t a64[B * N];
  ds_resampling_options o;
  ds_executor ran = DS_EXECUTOR_AUTOMATIC;
  int i;
  for (i = 0; i < B * N; ++i) lw[i] = (float)sin(0.37 * i) * 3.0f;
  for (i = 0; i < B * N * d; ++i) states[i] = (float)i;
  CHECK_OK(ds_resampling_options_init(&o, sizeof o));
  o.ess_threshold = 1.0; /* resample every problem */
  o.seed = 5;
  CHECK_OK(ds_resample(lw, B, N, &o, a32, NULL, NULL, cpu, NULL, 0, NULL));
  CHECK_OK(ds_resample_int64(lw, B, N, &o, a64, NULL, NULL, cpu, NULL, 0, &ran));
  CHECK(ran == DS_EXECUTOR_CPU);
  for (i = 0; i < B * N; ++i) CHECK(a64[i] == a32[i]);
  CHECK_OK(ds_gather_particles(states, B, N, d, a32, out32, cpu, NULL));
  CHECK_OK(ds_gather_particles_int64(states, B, N, d, a64, out64, cpu, &ran));
  CHECK(memcmp(out32, out64, sizeof out32) == 0);
}

/* The sliced Wasserstein distance on the CPU executor, synchronous and asynchronous, against the host call: the
 * same directions; the executor form sorts float keys where the host call keeps FP64 projections, so the two agree
 * to float rounding of the projections (relative 2^-24 per key; 1e-6 allows for the averages: measured 1.4e-9).
 * The synchronous and asynchronous executor forms are the same computation: equal bit for bit. */
static void test_sliced_wasserstein(void) {
  enum { n = 200, d = 3 };
  float a[n * d], b[n * d];
  double host = 0, on = 0, async = -1;
  size_t bytes = 0;
  ds_executor ran = DS_EXECUTOR_AUTOMATIC;
  int i;
  for (i = 0; i < n * d; ++i) {
    a[i] = (float)sin(1.3 * i);
    b[i] = (float)cos(0.7 * i) + 0.5f;
  }
  CHECK_OK(ds_sliced_wasserstein(a, n, b, n, d, 32, 9, 1, &host));
  CHECK_OK(ds_sliced_wasserstein_workspace_bytes(n, n, d, 32, DS_EXECUTOR_CPU, &bytes));
  CHECK(bytes > 0);
  CHECK_OK(ds_sliced_wasserstein_on(a, n, b, n, d, 32, 9, 1, cpu, NULL, 0, &on));
  CHECK_OK(ds_sliced_wasserstein_async(a, n, b, n, d, 32, 9, 1, &async, cpu, NULL, 0, &ran));
  CHECK(ran == DS_EXECUTOR_CPU);
  CHECK(host > 0.1 && fabs(on - host) <= 1e-6 * host && on == async);
  EXPECT_INVALID(ds_sliced_wasserstein_on(a, n, b, n, d, 32, 9, 3, cpu, NULL, 0, &on), "p");
  EXPECT_INVALID(ds_sliced_wasserstein_on(a, n, b, n, d, 32, 9, 1, cpu, NULL, 0, NULL), "out");
  /* The workspace query names its own arguments (directions_per_pass was named "directions", where "exec.kind"). */
  EXPECT_INVALID(ds_sliced_wasserstein_workspace_bytes(n, n, d, 0, DS_EXECUTOR_CPU, &bytes),
                 "directions_per_pass: must be >= 1");
  EXPECT_INVALID(ds_sliced_wasserstein_workspace_bytes(n, n, d, 32, (ds_executor)9, &bytes), "where: invalid value 9");
}

/* Component weights of points at the means of two far-apart components (distance 40, unit variances): each point's
 * responsibility is 1 for its own component up to exp(-800), so the weights are the counts' shares exactly. */
static void test_component_weights(void) {
  const double w[2] = {0.5, 0.5}, mu[2] = {-20, 20}, var[2] = {1, 1};
  const float x[4] = {-20, -20, -20, 20};
  double shares[2] = {0, 0}, error = 0;
  ds_mixture* m = NULL;
  CHECK_OK(ds_mixture_create(1, 2, w, mu, var, 2, &m));
  CHECK_OK(ds_component_weights(m, x, 4, shares));
  CHECK(fabs(shares[0] - 0.75) < 1e-12 && fabs(shares[1] - 0.25) < 1e-12);
  CHECK_OK(ds_component_weight_error(m, x, 4, &error));
  CHECK(fabs(error - 0.25) < 1e-12);
  EXPECT_INVALID(ds_component_weights(NULL, x, 4, shares), "null handle");
  {
    /* Under the posterior of y = x + 0.1 z with y = 20: the second component takes all the weight. */
    const double A = 1, y = 20;
    ds_posterior* post = NULL;
    double pw[2] = {0, 0};
    CHECK_OK(ds_posterior_create(m, 1, &A, 0.1, &y, &post));
    CHECK_OK(ds_posterior_component_weights(post, x, 4, pw));
    CHECK(fabs(pw[0] - 0.75) < 1e-9 && fabs(pw[1] - 0.25) < 1e-9);
    CHECK_OK(ds_posterior_component_weight_error(post, x, 4, &error));
    CHECK(fabs(error - 0.75) < 1e-9);
    ds_posterior_destroy(post);
  }
  ds_mixture_destroy(m);
}

/* Guided problems with an SVD operator of full rank run as the dense matrix U diag(S) V^T: the same run bit for
 * bit as the problem given by A (here A = [2 0] exactly). Bad SVD settings are refused naming the field. */
static void test_guided_svd(ds_mixture* m) {
  enum { N = 128 };
  const double A[2] = {2, 0}, U[1] = {1}, S[1] = {2}, V[2] = {1, 0}, y = 1.5, sigma_y = 0.3;
  ds_guided_problems gp;
  ds_guided_options go;
  ds_guided_outputs out;
  float samples_dense[N * 2], samples_svd[N * 2];
  double z_dense = 0, z_svd = 0;
  CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
  CHECK(gp.svd_count == 0 && gp.svd_U == NULL);
  gp.A = A;
  gp.A_count = 2;
  gp.y = &y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  CHECK_OK(ds_guided_options_init(&go, sizeof go));
  CHECK(go.potentials == DS_POTENTIALS_AUTOMATIC);
  go.potentials = DS_POTENTIALS_LINEAR;
  go.particles = N;
  go.steps = 30;
  go.seed = 2;
  CHECK_OK(ds_guided_outputs_init(&out, sizeof out));
  out.samples = samples_dense;
  out.log_normaliser = &z_dense;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  gp.A = NULL;
  gp.A_count = 0;
  gp.svd_count = 1;
  gp.svd_rank = 1;
  gp.svd_U = U;
  gp.svd_S = S;
  gp.svd_V = V;
  out.samples = samples_svd;
  out.log_normaliser = &z_svd;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  CHECK(memcmp(samples_dense, samples_svd, sizeof samples_dense) == 0 && z_dense == z_svd);
  gp.svd_rank = 2;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "problems.svd_rank");
  gp.svd_rank = 1;
  gp.svd_count = 2;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "problems.svd_count");
  gp.svd_count = 1;
  gp.A = A;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "problems.svd_count");
  /* The fields of an operator form not in use keep their defaults (seen failing: with a dense A, NaN gains without a
   * mask and SVD factors with svd_count 0 were accepted and ignored). */
  gp.svd_count = 0;
  gp.A_count = 2;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL),
                 "problems.svd_rank: given, but problems.svd_count is 0");
  gp.svd_rank = 0;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "problems.svd_U: given");
  gp.svd_U = NULL;
  gp.svd_S = NULL;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "problems.svd_V: given");
  gp.svd_V = NULL;
  {
    const double nan_gains[1] = {NAN};
    gp.mask_gains = nan_gains;
    EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL),
                   "problems.mask_gains: given without a mask");
    gp.mask_gains = NULL;
  }
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  gp.svd_count = 1;
  gp.svd_rank = 1;
  gp.svd_U = U;
  gp.svd_S = S;
  gp.svd_V = V;
  gp.A = NULL;
  gp.A_count = 0;
  /* A caller of the first ds_guided_problems layout (no SVD fields) is still accepted. */
  {
    ds_guided_problems old;
    CHECK_OK(ds_guided_problems_init(&old, offsetof(ds_guided_problems, svd_count)));
  }
  /* The SMC potentials: moment and twisted potentials run (d_y = 1 <= 8); an out-of-range value is refused by name. */
  go.potentials = DS_POTENTIALS_MOMENT;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  CHECK(isfinite(z_svd));
  z_svd = NAN;
  go.potentials = DS_POTENTIALS_TWISTED;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  CHECK(isfinite(z_svd));
  go.potentials = (ds_guided_potentials)7;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "options.potentials");
  /* The default potentials reach the library through the C struct: a struct from ds_guided_options_init() runs, bit
   * for bit, as twisted potentials with the start correction, the multistep kernel and 4 final moves (final_moves =
   * -1, automatic; d_y = 1, a grid ending at s = 0), and not as the linear ones. Seen failing with the resolution
   * leaving the start correction off. */
  {
    ds_guided_options dflt, twisted;
    float s_default[N * 2], s_twisted[N * 2], s_linear[N * 2];
    double z_default = 0, z_twisted = 0, z_linear = 0;
    CHECK_OK(ds_guided_options_init(&dflt, sizeof dflt));
    CHECK(dflt.potentials == DS_POTENTIALS_AUTOMATIC && dflt.start_correction == 0 && dflt.multistep_kernel == 0 &&
          dflt.final_moves == -1);
    dflt.particles = N;
    dflt.steps = 30;
    dflt.seed = 2;
    twisted = dflt;
    twisted.potentials = DS_POTENTIALS_TWISTED;
    twisted.start_correction = 1;
    twisted.multistep_kernel = 1;
    twisted.final_moves = 4;
    twisted.resampling.ess_threshold = 0.2; /* the automatic threshold with the automatic potentials' twisted */
    out.samples = s_default;
    out.log_normaliser = &z_default;
    CHECK_OK(ds_guided_sample(m, &gp, &dflt, &out, cpu, NULL, 0, NULL));
    out.samples = s_twisted;
    out.log_normaliser = &z_twisted;
    CHECK_OK(ds_guided_sample(m, &gp, &twisted, &out, cpu, NULL, 0, NULL));
    twisted.potentials = DS_POTENTIALS_LINEAR;
    twisted.start_correction = 0;
    twisted.multistep_kernel = 0;
    twisted.final_moves = -1;
    twisted.resampling.ess_threshold = -1;
    out.samples = s_linear;
    out.log_normaliser = &z_linear;
    CHECK_OK(ds_guided_sample(m, &gp, &twisted, &out, cpu, NULL, 0, NULL));
    CHECK(memcmp(s_default, s_twisted, sizeof s_default) == 0 && z_default == z_twisted);
    CHECK(memcmp(s_default, s_linear, sizeof s_default) != 0);
    out.samples = samples_svd;
    out.log_normaliser = &z_svd;
  }
  go.potentials = DS_POTENTIALS_LINEAR;
  /* The time grid: the default is the schedule's; the spectral grid runs; an out-of-range value is refused by name. */
  CHECK(go.grid == DS_GUIDED_GRID_SCHEDULE);
  go.grid = DS_GUIDED_GRID_SPECTRAL;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  CHECK(isfinite(z_svd));
  go.grid = (ds_guided_grid)5;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL), "options.grid");
  go.grid = DS_GUIDED_GRID_SCHEDULE;
  {
    ds_guided_options third;
    CHECK_OK(ds_guided_options_init(&third, offsetof(ds_guided_options, potentials)));
  }
  /* The sixth layout's start_correction: off by default; a caller of the fourth / fifth layout (ending with grid)
   * runs without it, bit for bit as a caller of the current one that leaves it off. */
  {
    ds_guided_options fifth;
    float samples_fifth[N * 2];
    double z_fifth = 0;
    CHECK(go.start_correction == 0);
    CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
    CHECK_OK(ds_guided_options_init(&fifth, offsetof(ds_guided_options, start_correction)));
    CHECK(fifth.struct_size == offsetof(ds_guided_options, start_correction));
    fifth.potentials = DS_POTENTIALS_LINEAR;
    fifth.particles = N;
    fifth.steps = 30;
    fifth.seed = 2;
    out.samples = samples_fifth;
    out.log_normaliser = &z_fifth;
    CHECK_OK(ds_guided_sample(m, &gp, &fifth, &out, cpu, NULL, 0, NULL));
    CHECK(memcmp(samples_svd, samples_fifth, sizeof samples_fifth) == 0 && z_svd == z_fifth);
    out.samples = samples_svd;
    out.log_normaliser = &z_svd;
  }
}

/* ds_guided_sample2: the same run as ds_guided_sample (samples, log-normaliser, executor and launches bit for bit),
 * with a ds_guided_report2 that says what ran with the automatic settings resolved, as guided_report does in C++
 * (guided_sample() resolves DS_POTENTIALS_AUTOMATIC at d_y <= 8 on a grid ending at s = 0 to twisted potentials with
 * the start correction, the multistep kernel and 4 final moves; at d_y = 9 to linear ones with the caller's flags;
 * explicit settings run as given; no outputs.samples, no final moves). A report of no known layout is refused before
 * anything runs. */
static void test_guided_report2(ds_mixture* m) {
  enum { N = 64, DY = 9 };
  const double A[2] = {1, -0.5}, y = 0.7, sigma_y = 0.4;
  double A9[DY * 2], y9[DY];
  ds_guided_problems gp;
  ds_guided_options go;
  ds_guided_outputs out;
  ds_guided_report r1;
  ds_guided_report2 r2;
  float s1[N * 2], s2[N * 2];
  double z1 = 0, z2 = 0;
  int i;
  for (i = 0; i < DY; ++i) {
    A9[2 * i] = 1.0 / (1 + i);
    A9[2 * i + 1] = (i % 2) ? 0.5 : -0.25;
    y9[i] = 0.1 * i;
  }
  CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
  gp.A = A;
  gp.A_count = 2;
  gp.y = &y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  CHECK_OK(ds_guided_options_init(&go, sizeof go));
  go.particles = N;
  go.steps = 12;
  go.seed = 5;
  CHECK_OK(ds_guided_outputs_init(&out, sizeof out));
  /* The init function: an empty report of the caller's size; a null pointer or an unknown size is refused. */
  memset(&r2, 0x5A, sizeof r2);
  CHECK_OK(ds_guided_report2_init(&r2, sizeof r2));
  CHECK(r2.struct_size == sizeof r2 && r2.ran == DS_EXECUTOR_AUTOMATIC && r2.launches == 0 &&
        r2.operator_path == DS_MIXTURE_PATH_DIRECT && r2.potentials == DS_POTENTIALS_LINEAR &&
        r2.start_correction == 0 && r2.multistep_kernel == 0 && r2.final_moves == 0 && r2.ess_threshold == 0);
  EXPECT_INVALID(ds_guided_report2_init(NULL, sizeof r2), "ds_guided_report2");
  /* sizeof r2 - 8 is the first layout's (up to final_moves), which is known; 4 bytes less is no layout. */
  CHECK_OK(ds_guided_report2_init(&r2, offsetof(ds_guided_report2, ess_threshold)));
  EXPECT_INVALID(ds_guided_report2_init(&r2, sizeof r2 - 4), "ds_guided_report2");
  CHECK_OK(ds_guided_report2_init(&r2, sizeof r2));
  CHECK(r2.struct_size == sizeof r2);

  /* Automatic (the defaults), d_y = 1: twisted, both corrections, 4 moves; the same run as ds_guided_sample. */
  out.samples = s1;
  out.log_normaliser = &z1;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, &r1));
  out.samples = s2;
  out.log_normaliser = &z2;
  CHECK_OK(ds_guided_report2_init(&r2, sizeof r2));
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(memcmp(s1, s2, sizeof s1) == 0 && z1 == z2);
  CHECK(r2.struct_size == sizeof r2 && r2.ran == r1.ran && r2.ran == DS_EXECUTOR_CPU && r2.launches == r1.launches);
  CHECK(r2.potentials == DS_POTENTIALS_TWISTED && r2.start_correction == 1 && r2.multistep_kernel == 1 &&
        r2.final_moves == 4 && r2.operator_path == DS_MIXTURE_PATH_DIRECT && r2.ess_threshold == 0.2);
  /* Without outputs.samples the moves do not run. */
  out.samples = NULL;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.potentials == DS_POTENTIALS_TWISTED && r2.start_correction == 1 && r2.multistep_kernel == 1 &&
        r2.final_moves == 0);
  out.samples = s2;
  /* Explicit settings run as given: linear with the start correction and 2 moves; twisted with neither. */
  go.potentials = DS_POTENTIALS_LINEAR;
  go.start_correction = 1;
  go.final_moves = 2;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.potentials == DS_POTENTIALS_LINEAR && r2.start_correction == 1 && r2.multistep_kernel == 0 &&
        r2.final_moves == 2 && r2.ess_threshold == 0.5);
  go.potentials = DS_POTENTIALS_TWISTED;
  go.start_correction = 0;
  go.final_moves = 0;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.potentials == DS_POTENTIALS_TWISTED && r2.start_correction == 0 && r2.multistep_kernel == 0 &&
        r2.final_moves == 0);
  /* Automatic at d_y = 9: linear, with the caller's multistep kernel and 20 moves (automatic_linear_final_moves). */
  go.potentials = DS_POTENTIALS_AUTOMATIC;
  go.final_moves = -1;
  go.multistep_kernel = 1;
  gp.d_y = DY;
  gp.A = A9;
  gp.A_count = DY * 2;
  gp.y = y9;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.potentials == DS_POTENTIALS_LINEAR && r2.start_correction == 0 && r2.multistep_kernel == 1 &&
        r2.final_moves == 20);
  /* Another sampler: no potentials, nothing SMC's; the operator path it took (forced GEMM for DPS). SMC's outputs
     are refused for it (they were left unwritten), naming the output, and the samples stay as they were. */
  go.sampler = DS_GUIDED_DPS;
  go.multistep_kernel = 0;
  go.operator_path = DS_MIXTURE_PATH_GEMM;
  z2 = -7.0;
  memset(s2, 0, sizeof s2);
  EXPECT_INVALID(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2),
                 "outputs.log_normaliser: written by smc only; dps writes outputs.particles and outputs.samples");
  CHECK(z2 == -7.0 && s2[0] == 0.f);
  out.log_normaliser = NULL;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.potentials == DS_POTENTIALS_LINEAR && r2.start_correction == 0 && r2.multistep_kernel == 0 &&
        r2.final_moves == 0 && r2.operator_path == DS_MIXTURE_PATH_GEMM);
  go.operator_path = DS_MIXTURE_PATH_DIRECT;
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2));
  CHECK(r2.operator_path == DS_MIXTURE_PATH_DIRECT);
  /* A NULL report runs; a report of no known layout is refused before the run (the samples stay as they were). */
  CHECK_OK(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  memset(s2, 0, sizeof s2);
  r2.struct_size = 12;
  EXPECT_INVALID(ds_guided_sample2(m, &gp, &go, &out, cpu, NULL, 0, &r2), "report.struct_size");
  for (i = 0; i < N * 2; ++i) CHECK(s2[i] == 0.0f);
  CHECK(r2.struct_size == 12 && r2.operator_path == DS_MIXTURE_PATH_DIRECT);
  EXPECT_INVALID(ds_guided_sample2(NULL, &gp, &go, &out, cpu, NULL, 0, &r2), "prior");
}

/* A mask's or SVD operator's refusal names the C argument that carries the bad value (problems.mask, problems.svd_S,
 * ds_posterior_create_masked's mask, ...) and, for an entry, its index in the caller's array, not the C++ factory's
 * field (observation.indices, observation.singular_values), which a C caller never passed. */
static void test_operator_messages(ds_mixture* m) {
  const double y[2] = {0.5, -0.5}, sigma_y = 0.3, U[2] = {1, 0}, V[2] = {1, 0}, bad_U[2] = {2, 0};
  const double S_bad[2] = {1, -1}, gains[2] = {1, NAN};
  const int64_t out_of_range[1] = {5}, rows[2] = {0, 0}, twice[2] = {1, 1};
  ds_guided_problems gp;
  ds_guided_options go;
  ds_posterior* post = NULL;
  size_t bytes = 0;
  CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
  CHECK_OK(ds_guided_options_init(&go, sizeof go));
  gp.y = y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  gp.mask = out_of_range;
  gp.mask_count = 1;
  EXPECT_INVALID(ds_guided_workspace_bytes(m, &gp, &go, &bytes), "problems.mask: index 0 is 5, outside [0, 2)");
  /* Two problems, one row each: row 1's gain is NaN, entry 1 of mask_gains. */
  gp.problems = 2;
  gp.mask = rows;
  gp.mask_count = 2;
  gp.mask_gains = gains;
  EXPECT_INVALID(ds_guided_workspace_bytes(m, &gp, &go, &bytes), "problems.mask_gains[1]: must be finite");
  gp.mask_gains = NULL;
  gp.problems = 1;
  gp.d_y = 2;
  gp.mask = twice;
  EXPECT_INVALID(ds_guided_workspace_bytes(m, &gp, &go, &bytes), "problems.mask: coordinate 1 appears twice");
  gp.d_y = 1;
  gp.mask = NULL;
  gp.mask_count = 0;
  /* Two SVD operators of rank 1: operator 1's singular value is negative. */
  {
    const double U2[2] = {1, 1}, V2[4] = {1, 0, 0, 1};
    gp.problems = 2;
    gp.svd_count = 2;
    gp.svd_rank = 1;
    gp.svd_U = U2;
    gp.svd_S = S_bad;
    gp.svd_V = V2;
    EXPECT_INVALID(ds_guided_workspace_bytes(m, &gp, &go, &bytes), "problems.svd_S (operator 1): value 0 is -1");
  }
  gp.problems = 1;
  gp.svd_count = 1;
  gp.svd_U = bad_U;
  gp.svd_S = S_bad;
  gp.svd_V = V;
  EXPECT_INVALID(ds_guided_workspace_bytes(m, &gp, &go, &bytes), "problems.svd_U: columns are not orthonormal");
  /* The exact posterior's forms name their own arguments. */
  EXPECT_INVALID(ds_posterior_create_masked(m, 1, out_of_range, NULL, sigma_y, y, &post), "mask: index 0 is 5");
  EXPECT_INVALID(ds_posterior_create_masked(m, 2, rows + 0, gains, sigma_y, y, &post), "mask: coordinate 0 appears");
  {
    const int64_t two[2] = {0, 1};
    EXPECT_INVALID(ds_posterior_create_masked(m, 2, two, gains, sigma_y, y, &post), "gains[1]: must be finite");
  }
  EXPECT_INVALID(ds_posterior_create_svd(m, 1, 1, U, S_bad + 1, V, sigma_y, y, &post), "S: value 0 is -1");
  EXPECT_INVALID(ds_posterior_create_svd(m, 1, 1, bad_U, S_bad, V, sigma_y, y, &post), "U: columns are not");
  CHECK(post == NULL);
}

/* ds_guided_times: the schedule's own grid is ds_schedule_points' times; the sqrt_alpha_bar grid is uniform in
 * a = sqrt(alpha-bar(t)), checked against vp_linear's closed form alpha-bar(t) = exp(-(beta_min t + (beta_max -
 * beta_min) t^2 / 2)) (the grid's bisection resolves t to double precision: 1e-9 leaves room for rounding); a
 * wrong count or a NULL output is refused by name. */
static void test_guided_times(ds_mixture* m) {
  enum { K = 12 };
  const double A[2] = {2, 0}, y = 1.5, sigma_y = 0.3;
  ds_guided_problems gp;
  ds_guided_options go;
  ds_schedule_point points[K + 1];
  double times[K + 1], a[K + 1];
  int k;
  CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
  gp.A = A;
  gp.A_count = 2;
  gp.y = &y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  CHECK_OK(ds_guided_options_init(&go, sizeof go));
  go.steps = K;
  CHECK_OK(ds_guided_times(m, &gp, &go, times, K + 1));
  CHECK_OK(ds_schedule_points(&go.schedule, K, points));
  for (k = 0; k <= K; ++k) CHECK(times[k] == points[k].t);
  go.grid = DS_GUIDED_GRID_SQRT_ALPHA_BAR;
  CHECK_OK(ds_guided_times(m, &gp, &go, times, K + 1));
  CHECK(times[0] == go.schedule.t_start && times[K] == go.schedule.t_end);
  for (k = 0; k <= K; ++k) {
    const double t = times[k], b0 = go.schedule.beta_min, b1 = go.schedule.beta_max;
    a[k] = exp(-0.5 * (b0 * t + 0.5 * (b1 - b0) * t * t));
  }
  for (k = 0; k < K; ++k) {
    CHECK(times[k + 1] < times[k]);
    CHECK(fabs((a[k + 1] - a[k]) - (a[K] - a[0]) / K) < 1e-9);
  }
  EXPECT_INVALID(ds_guided_times(m, &gp, &go, times, K), "count");
  EXPECT_INVALID(ds_guided_times(m, &gp, &go, NULL, K + 1), "times");
  go.grid = (ds_guided_grid)5;
  EXPECT_INVALID(ds_guided_times(m, &gp, &go, times, K + 1), "options.grid");
}


/* Every field of ds_langevin_options, ds_diffusion_options (its schedule's fields included) and ds_guided_options
 * reaches the run: changed alone from a base setting (each row under a sampler that reads it), it changes the
 * output bit pattern. A field that the C-to-C++ copy dropped would leave the output of the base setting. Not
 * covered here: particles (the output's size), final_resample (decides whether samples may be given), record_every
 * (the trajectory's size) and the arrays alpha_bar and times (checked with their kinds in test_c_api.c). Seen
 * failing with guided_fields' X(ddrm_eta) and diffusion's X(sigma) removed from src/c_api/ (those two rows). */
#define L_ROW(NAME, BASE, CHANGE)                                      \
  static void lb_##NAME(ds_langevin_options* o) { (void)o; BASE; }     \
  static void lc_##NAME(ds_langevin_options* o) { CHANGE; }
#define D_ROW(NAME, BASE, CHANGE)                                      \
  static void db_##NAME(ds_diffusion_options* o) { (void)o; BASE; }    \
  static void dc_##NAME(ds_diffusion_options* o) { CHANGE; }
#define G_ROW(NAME, BASE, CHANGE)                                      \
  static void gb_##NAME(ds_guided_options* o) { (void)o; BASE; }       \
  static void gc_##NAME(ds_guided_options* o) { CHANGE; }
L_ROW(method, , o->method = DS_ULA)
L_ROW(step_size, , o->step_size = 0.02)
L_ROW(steps, , o->steps = 6)
L_ROW(target_a, , o->target.a = 0.9)
L_ROW(target_s, , o->target.s = 0.3)
L_ROW(seed, , o->seed = 7)
L_ROW(first_chain, , o->first_chain = 3)
L_ROW(first_step, , o->first_step = 2)
D_ROW(sampler, , o->sampler = DS_DIFFUSION_DDIM)
D_ROW(steps, , o->steps = 6)
D_ROW(eta, o->sampler = DS_DIFFUSION_DDIM, o->eta = 0.5)
D_ROW(sigma, o->sampler = DS_DIFFUSION_WALK_JUMP, o->sigma = 0.7)
D_ROW(step_size, o->sampler = DS_DIFFUSION_WALK_JUMP, o->step_size = 0.05)
D_ROW(measurements, o->sampler = DS_DIFFUSION_SEQUENTIAL_MEASUREMENTS, o->measurements = 2)
/* At t_end = 0 the last step already lands on the denoiser: final_denoise shows from t_end > 0. */
D_ROW(final_denoise, o->schedule.t_end = 0.05, o->final_denoise = 1)
D_ROW(draw_initial, , o->draw_initial = 0)
D_ROW(seed, , o->seed = 7)
D_ROW(first_chain, , o->first_chain = 3)
D_ROW(schedule_kind, , ds_schedule_init(&o->schedule, sizeof o->schedule, DS_SCHEDULE_VP_COSINE))
D_ROW(schedule_beta_min, , o->schedule.beta_min = 0.2)
D_ROW(schedule_beta_max, , o->schedule.beta_max = 15)
D_ROW(schedule_cosine_offset, ds_schedule_init(&o->schedule, sizeof o->schedule, DS_SCHEDULE_VP_COSINE),
      o->schedule.cosine_offset = 0.02)
D_ROW(schedule_sigma_min,
      o->sampler = DS_DIFFUSION_REVERSE_SDE;
      ds_schedule_init(&o->schedule, sizeof o->schedule, DS_SCHEDULE_VARIANCE_EXPLODING), o->schedule.sigma_min = 0.02)
D_ROW(schedule_sigma_max,
      o->sampler = DS_DIFFUSION_REVERSE_SDE;
      ds_schedule_init(&o->schedule, sizeof o->schedule, DS_SCHEDULE_VARIANCE_EXPLODING), o->schedule.sigma_max = 40)
D_ROW(schedule_grid, , o->schedule.grid = DS_TIME_GRID_QUADRATIC)
D_ROW(schedule_t_start, , o->schedule.t_start = 0.9)
D_ROW(schedule_t_end, , o->schedule.t_end = 0.01)
G_ROW(sampler, , o->sampler = DS_GUIDED_DPS)
G_ROW(schedule_beta_max, , o->schedule.beta_max = 15)
G_ROW(schedule_grid, , o->schedule.grid = DS_TIME_GRID_QUADRATIC)
G_ROW(steps, , o->steps = 6)
G_ROW(ddim, , o->ddim = 1; o->eta = 0.5) /* eta alone is refused by the DDPM kernel (it is DDIM's) */
G_ROW(eta, o->ddim = 1, o->eta = 0.5)
G_ROW(potential_spread, o->potentials = DS_POTENTIALS_LINEAR, o->potential_spread = 2)
G_ROW(resampling_scheme, o->resampling.ess_threshold = 1, o->resampling.scheme = DS_RESAMPLING_MULTINOMIAL)
G_ROW(resampling_ess_threshold, , o->resampling.ess_threshold = 1)
G_ROW(resampling_metropolis_steps, o->resampling.scheme = DS_RESAMPLING_METROPOLIS; o->resampling.ess_threshold = 1,
      o->resampling.metropolis_steps = 2)
G_ROW(guidance_scale, o->sampler = DS_GUIDED_DPS, o->guidance_scale = 0.5)
G_ROW(seed, , o->seed = 7)
G_ROW(dps_step, o->sampler = DS_GUIDED_DPS, o->dps_step = DS_DPS_STEP_NORMALISED)
G_ROW(diffpir_zeta, o->sampler = DS_GUIDED_DIFFPIR, o->diffpir_zeta = 0.3)
G_ROW(diffpir_lambda, o->sampler = DS_GUIDED_DIFFPIR, o->diffpir_lambda = 3)
G_ROW(skrock_stages, o->sampler = DS_GUIDED_SKROCK, o->skrock_stages = 5)
G_ROW(skrock_eta, o->sampler = DS_GUIDED_SKROCK, o->skrock_eta = 0.1)
G_ROW(skrock_step_fraction, o->sampler = DS_GUIDED_SKROCK, o->skrock_step_fraction = 0.01)
G_ROW(skrock_lipschitz, o->sampler = DS_GUIDED_SKROCK, o->skrock_lipschitz = 30)
G_ROW(ddrm_eta, o->sampler = DS_GUIDED_DDRM, o->ddrm_eta = 0.5)
G_ROW(ddrm_eta_b, o->sampler = DS_GUIDED_DDRM, o->ddrm_eta_b = 0.5)
G_ROW(dcps_blocks, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3, o->dcps_blocks = 1)
G_ROW(dcps_langevin_steps, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_langevin_steps = 2)
G_ROW(dcps_langevin_step, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_langevin_step = 2e-3)
G_ROW(dcps_gradient_steps, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_gradient_steps = 1)
G_ROW(dcps_learning_rate, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_learning_rate = 0.2)
G_ROW(dcps_bridge_variance, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_bridge_variance = 1)
G_ROW(dcps_absolute_step, o->sampler = DS_GUIDED_DCPS; o->dcps_blocks = 2; o->dcps_langevin_steps = 3,
      o->dcps_absolute_step = 1)
G_ROW(potentials, , o->potentials = DS_POTENTIALS_MOMENT)
G_ROW(grid, , o->grid = DS_GUIDED_GRID_SQRT_ALPHA_BAR)
/* start_correction changes the first weights only, and little where the grid starts near pure noise: from t = 0.3 and
 * resampling at every step the particles show it. */
G_ROW(start_correction,
      o->potentials = DS_POTENTIALS_LINEAR; o->schedule.t_start = 0.3; o->resampling.ess_threshold = 1,
      o->start_correction = 1)
G_ROW(multistep_kernel, o->potentials = DS_POTENTIALS_LINEAR, o->multistep_kernel = 1)
G_ROW(operator_path, o->sampler = DS_GUIDED_DPS; o->operator_path = DS_MIXTURE_PATH_DIRECT,
      o->operator_path = DS_MIXTURE_PATH_GEMM)

static void test_every_option_field(ds_mixture* m) {
  enum { n = 64, N = 64 };
  static const struct {
    const char* name;
    void (*base)(ds_langevin_options*);
    void (*change)(ds_langevin_options*);
  } lrows[] = {
#define L_ENTRY(NAME) {#NAME, lb_##NAME, lc_##NAME},
      L_ENTRY(method) L_ENTRY(step_size) L_ENTRY(steps) L_ENTRY(target_a) L_ENTRY(target_s) L_ENTRY(seed)
      L_ENTRY(first_chain) L_ENTRY(first_step)};
  static const struct {
    const char* name;
    void (*base)(ds_diffusion_options*);
    void (*change)(ds_diffusion_options*);
  } drows[] = {
#define D_ENTRY(NAME) {#NAME, db_##NAME, dc_##NAME},
      D_ENTRY(sampler) D_ENTRY(steps) D_ENTRY(eta) D_ENTRY(sigma) D_ENTRY(step_size) D_ENTRY(measurements)
      D_ENTRY(final_denoise) D_ENTRY(draw_initial) D_ENTRY(seed) D_ENTRY(first_chain) D_ENTRY(schedule_kind)
      D_ENTRY(schedule_beta_min) D_ENTRY(schedule_beta_max) D_ENTRY(schedule_cosine_offset)
      D_ENTRY(schedule_sigma_min) D_ENTRY(schedule_sigma_max) D_ENTRY(schedule_grid) D_ENTRY(schedule_t_start)
      D_ENTRY(schedule_t_end)};
  static const struct {
    const char* name;
    void (*base)(ds_guided_options*);
    void (*change)(ds_guided_options*);
  } grows[] = {
#define G_ENTRY(NAME) {#NAME, gb_##NAME, gc_##NAME},
      G_ENTRY(sampler) G_ENTRY(schedule_beta_max) G_ENTRY(schedule_grid) G_ENTRY(steps) G_ENTRY(ddim) G_ENTRY(eta)
      G_ENTRY(potential_spread) G_ENTRY(resampling_scheme) G_ENTRY(resampling_ess_threshold)
      G_ENTRY(resampling_metropolis_steps) G_ENTRY(guidance_scale) G_ENTRY(seed) G_ENTRY(dps_step)
      G_ENTRY(diffpir_zeta) G_ENTRY(diffpir_lambda) G_ENTRY(skrock_stages) G_ENTRY(skrock_eta)
      G_ENTRY(skrock_step_fraction) G_ENTRY(skrock_lipschitz) G_ENTRY(ddrm_eta) G_ENTRY(ddrm_eta_b)
      G_ENTRY(dcps_blocks) G_ENTRY(dcps_langevin_steps) G_ENTRY(dcps_langevin_step) G_ENTRY(dcps_gradient_steps)
      G_ENTRY(dcps_learning_rate) G_ENTRY(dcps_bridge_variance) G_ENTRY(dcps_absolute_step) G_ENTRY(potentials)
      G_ENTRY(grid) G_ENTRY(start_correction) G_ENTRY(multistep_kernel) G_ENTRY(operator_path)};
  static float a[N * 2], b[N * 2];
  size_t i;
  int k;
  for (i = 0; i < sizeof lrows / sizeof lrows[0]; ++i) {
    ds_langevin_options o;
    CHECK_OK(ds_langevin_options_init(&o, sizeof o));
    o.steps = 5;
    lrows[i].base(&o);
    for (k = 0; k < 2 * n; ++k) a[k] = b[k] = 0.5f * (float)(k % 7) - 1.5f;
    CHECK_OK(ds_langevin(m, a, n, &o, NULL, NULL, cpu, NULL, 0, NULL));
    lrows[i].change(&o);
    CHECK_OK(ds_langevin(m, b, n, &o, NULL, NULL, cpu, NULL, 0, NULL));
    if (memcmp(a, b, sizeof(float) * 2 * n) == 0) {
      fprintf(stderr, "ds_langevin_options.%s: changing it left the samples as they were\n", lrows[i].name);
      ++failures;
    }
  }
  for (i = 0; i < sizeof drows / sizeof drows[0]; ++i) {
    ds_diffusion_options o;
    CHECK_OK(ds_diffusion_options_init(&o, sizeof o));
    o.steps = 5;
    drows[i].base(&o);
    for (k = 0; k < 2 * n; ++k) a[k] = b[k] = 0.5f * (float)(k % 7) - 1.5f;
    CHECK_OK(ds_diffusion(m, a, n, &o, NULL, cpu, NULL, 0, NULL));
    drows[i].change(&o);
    CHECK_OK(ds_diffusion(m, b, n, &o, NULL, cpu, NULL, 0, NULL));
    if (memcmp(a, b, sizeof(float) * 2 * n) == 0) {
      fprintf(stderr, "ds_diffusion_options.%s: changing it left the samples as they were\n", drows[i].name);
      ++failures;
    }
  }
  for (i = 0; i < sizeof grows / sizeof grows[0]; ++i) {
    const double A[2] = {1, 0.5}, y = 0.7, sigma_y = 0.4;
    ds_guided_problems gp;
    ds_guided_options o;
    ds_guided_outputs out;
    CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
    gp.A = A;
    gp.A_count = 2;
    gp.y = &y;
    gp.sigma_y = &sigma_y;
    gp.sigma_y_count = 1;
    CHECK_OK(ds_guided_options_init(&o, sizeof o));
    o.particles = N;
    o.steps = 5;
    grows[i].base(&o);
    CHECK_OK(ds_guided_outputs_init(&out, sizeof out));
    out.particles = a;
    CHECK_OK(ds_guided_sample(m, &gp, &o, &out, cpu, NULL, 0, NULL));
    grows[i].change(&o);
    out.particles = b;
    CHECK_OK(ds_guided_sample(m, &gp, &o, &out, cpu, NULL, 0, NULL));
    if (memcmp(a, b, sizeof(float) * 2 * N) == 0) {
      fprintf(stderr, "ds_guided_options.%s: changing it left the particles as they were\n", grows[i].name);
      ++failures;
    }
  }
}
/* Every enum's names: each value's name parses back to it. */
static void test_names(void) {
  ds_guided_potentials p = DS_POTENTIALS_LINEAR;
  ds_discrete_method dm = DS_DISCRETE_ONE_STAGE;
  CHECK(strcmp(ds_guided_potentials_name(DS_POTENTIALS_MOMENT), "moment") == 0);
  CHECK(strcmp(ds_guided_potentials_name((ds_guided_potentials)9), "unknown") == 0);
  CHECK_OK(ds_parse_guided_potentials("moment", &p));
  CHECK(p == DS_POTENTIALS_MOMENT);
  CHECK(strcmp(ds_guided_potentials_name(DS_POTENTIALS_TWISTED), "twisted") == 0);
  CHECK_OK(ds_parse_guided_potentials("twisted", &p));
  CHECK(p == DS_POTENTIALS_TWISTED);
  CHECK(strcmp(ds_guided_potentials_name(DS_POTENTIALS_AUTOMATIC), "automatic") == 0);
  CHECK_OK(ds_parse_guided_potentials("automatic", &p));
  CHECK(p == DS_POTENTIALS_AUTOMATIC);
  p = DS_POTENTIALS_LINEAR;
  CHECK_OK(ds_parse_guided_potentials("auto", &p));
  CHECK(p == DS_POTENTIALS_AUTOMATIC);
  EXPECT_INVALID(ds_parse_guided_potentials("quadratic", &p), "quadratic");
  {
    ds_guided_grid g = DS_GUIDED_GRID_SCHEDULE;
    CHECK(strcmp(ds_guided_grid_name(DS_GUIDED_GRID_SQRT_ALPHA_BAR), "sqrt_alpha_bar") == 0);
    CHECK(strcmp(ds_guided_grid_name((ds_guided_grid)9), "unknown") == 0);
    CHECK_OK(ds_parse_guided_grid("spectral", &g));
    CHECK(g == DS_GUIDED_GRID_SPECTRAL);
    EXPECT_INVALID(ds_parse_guided_grid("uniform", &g), "uniform");
  }
  CHECK_OK(ds_parse_discrete_method("mh", &dm));
  CHECK(dm == DS_DISCRETE_METROPOLIS);
  CHECK_OK(ds_parse_discrete_method(ds_discrete_method_name(DS_DISCRETE_TWO_STAGE), &dm));
  CHECK(dm == DS_DISCRETE_TWO_STAGE);
  CHECK(ds_cpu_threads() >= 1);
}

/* The evaluation path option: forced direct and gemm run the path asked for and say so; automatic reports what
 * ds_mixture_chosen_path() predicts; direct is bit for bit ds_mixture_evaluate() on a mixture the automatic choice
 * sends to direct; gemm agrees with direct within 1e-4 (1 + |value|). The gemm score subtracts x' sum W from a A
 * (README, "Large mixtures"), an error of a few u (|x'| + a max |mu'|) / c: with |x'| about 17, |mu'| up to 40 and
 * c = 0.565 here, 4 u 53 / 0.565 = 2e-5; seen 3.3e-5 (score), 8e-6 (denoiser), 2.6e-7 (log-density), 2.6e-5 (JVP).
 * The JVP's gemm path (CPU) the same way. Diagonal mixtures refuse gemm, bad enum values and flags are named. Seen
 * failing with the path reported as direct whatever ran. */
static void test_evaluate_path(void) {
  enum { d = 64, n = 24, grid = 6 };
  ds_mixture* m = NULL;
  CHECK_OK(ds_grid_mixture_create(d, grid, 2.0, 0.5, NULL, 0, &m));
  static float x[n * d], v[n * d], plain[n * d], direct[n * d], gemm[n * d], automatic[n * d];
  for (int i = 0; i < n * d; ++i) {
    x[i] = (float)(3.0 * sin(0.37 * i + 0.1));
    v[i] = (float)cos(0.21 * i);
  }
  const ds_channel ch = {0.9, 0.4};
  ds_evaluate_options o;
  ds_executor ran = DS_EXECUTOR_AUTOMATIC;
  ds_mixture_path path = DS_MIXTURE_PATH_AUTOMATIC, chosen = DS_MIXTURE_PATH_AUTOMATIC;
  CHECK_OK(ds_evaluate_options_init(&o, sizeof o));
  CHECK(o.path == DS_MIXTURE_PATH_AUTOMATIC && o.allow_tf32 == 0 && o.component_chunk == 0 && o.point_block == 0);
  for (int q = 0; q < 3; ++q) {
    const ds_quantity what = (ds_quantity)q;
    const int width = what == DS_LOG_DENSITY ? 1 : d;
    CHECK_OK(ds_mixture_evaluate(m, what, x, n, ch, plain, cpu, NULL));
    o.path = DS_MIXTURE_PATH_DIRECT;
    CHECK_OK(ds_mixture_evaluate_with(m, direct, n, x, ch, what, &o, cpu, NULL, 0, &ran, &path));
    CHECK(ran == DS_EXECUTOR_CPU && path == DS_MIXTURE_PATH_DIRECT);
    CHECK_OK(ds_mixture_chosen_path(m, n, what, NULL, DS_EXECUTOR_CPU, &chosen));
    if (chosen == DS_MIXTURE_PATH_DIRECT) CHECK(memcmp(plain, direct, sizeof(float) * n * width) == 0);
    o.path = DS_MIXTURE_PATH_GEMM;
    CHECK_OK(ds_mixture_evaluate_with(m, gemm, n, x, ch, what, &o, cpu, NULL, 0, &ran, &path));
    CHECK(path == DS_MIXTURE_PATH_GEMM);
    for (int i = 0; i < n * width; ++i)
      if (!(fabs(gemm[i] - direct[i]) <= 1e-4 * (1 + fabs(direct[i])))) {
        fprintf(stderr, "quantity %d entry %d: gemm %.9g direct %.9g\n", q, i, gemm[i], direct[i]);
        CHECK(0);
        break;
      }
    CHECK_OK(ds_mixture_evaluate_with(m, automatic, n, x, ch, what, NULL, cpu, NULL, 0, NULL, &path));
    CHECK(path == chosen);
    CHECK(memcmp(automatic, path == DS_MIXTURE_PATH_GEMM ? gemm : direct, sizeof(float) * n * width) == 0);
  }
  o.path = DS_MIXTURE_PATH_GEMM;
  CHECK_OK(ds_mixture_chosen_path(m, n, DS_SCORE, &o, DS_EXECUTOR_CPU, &chosen));
  CHECK(chosen == DS_MIXTURE_PATH_GEMM);
  {
    size_t bytes = 1;
    CHECK_OK(ds_mixture_evaluate_workspace_bytes(m, n, DS_SCORE, &o, cpu, &bytes));
    CHECK(bytes == 0); /* device workspace only */
  }
  /* The JVP: plain (direct) against forced gemm. */
  CHECK_OK(ds_mixture_denoiser_jvp(m, x, v, n, ch, plain, cpu, NULL));
  o.path = DS_MIXTURE_PATH_DIRECT;
  CHECK_OK(ds_mixture_denoiser_jvp_with(m, direct, n, x, v, ch, &o, cpu, &ran, &path));
  CHECK(path == DS_MIXTURE_PATH_DIRECT && memcmp(plain, direct, sizeof direct) == 0);
  o.path = DS_MIXTURE_PATH_GEMM;
  CHECK_OK(ds_mixture_denoiser_jvp_with(m, gemm, n, x, v, ch, &o, cpu, &ran, &path));
  CHECK(ran == DS_EXECUTOR_CPU && path == DS_MIXTURE_PATH_GEMM);
  for (int i = 0; i < n * d; ++i)
    if (!(fabs(gemm[i] - direct[i]) <= 1e-4 * (1 + fabs(direct[i])))) {
      fprintf(stderr, "JVP entry %d: gemm %.9g direct %.9g\n", i, gemm[i], direct[i]);
      CHECK(0);
      break;
    }
  /* Refusals. */
  o.path = (ds_mixture_path)7;
  EXPECT_INVALID(ds_mixture_evaluate_with(m, gemm, n, x, ch, DS_SCORE, &o, cpu, NULL, 0, NULL, NULL), "options.path");
  o.path = DS_MIXTURE_PATH_GEMM;
  o.allow_tf32 = 2;
  EXPECT_INVALID(ds_mixture_evaluate_with(m, gemm, n, x, ch, DS_SCORE, &o, cpu, NULL, 0, NULL, NULL),
                 "options.allow_tf32");
  o.allow_tf32 = 0;
  o.struct_size = 3;
  EXPECT_INVALID(ds_mixture_chosen_path(m, n, DS_SCORE, &o, DS_EXECUTOR_CPU, &chosen), "options.struct_size");
  CHECK_OK(ds_evaluate_options_init(&o, sizeof o));
  o.path = DS_MIXTURE_PATH_GEMM;
  {
    const double w[2] = {0.5, 0.5}, mu[4] = {0, 0, 1, 1}, var[4] = {1, 2, 1, 2};
    ds_mixture* diag = NULL;
    float y[2 * 2] = {0, 0, 1, 1}, out[2 * 2];
    CHECK_OK(ds_mixture_create(2, 2, w, mu, var, 4, &diag));
    EXPECT_INVALID(ds_mixture_evaluate_with(diag, out, 2, y, ch, DS_SCORE, &o, cpu, NULL, 0, NULL, NULL), "isotropic");
    ds_mixture_destroy(diag);
  }
  /* Names. */
  CHECK(strcmp(ds_mixture_path_name(DS_MIXTURE_PATH_GEMM), "gemm") == 0);
  CHECK(strcmp(ds_mixture_path_name((ds_mixture_path)9), "unknown") == 0);
  CHECK_OK(ds_parse_mixture_path("auto", &path));
  CHECK(path == DS_MIXTURE_PATH_AUTOMATIC);
  CHECK_OK(ds_parse_mixture_path("direct", &path));
  CHECK(path == DS_MIXTURE_PATH_DIRECT);
  EXPECT_INVALID(ds_parse_mixture_path("blas", &path), "blas");
  ds_mixture_destroy(m);
}

/* ds_mixture_prepare_gemm() (gaussian_mixture::prepare_gemm): on the CPU executor it succeeds, twice, and the gemm
 * path then gives what it gives on a mixture never prepared, bit for bit (the tables it builds are the ones the first
 * gemm-path call would build); a diagonal mixture's CPU tables too, as in C++. DS_EXECUTOR_CUDA succeeds with a GPU
 * and is refused naming `where` and the missing GPU without one; automatic, a value outside the enum and a null
 * mixture are refused by name, and a success clears the last error. */
static void test_prepare_gemm(void) {
  enum { d = 16, n = 8, grid = 3 };
  ds_mixture *prepared = NULL, *fresh = NULL;
  CHECK_OK(ds_grid_mixture_create(d, grid, 2.0, 0.5, NULL, 0, &prepared));
  CHECK_OK(ds_grid_mixture_create(d, grid, 2.0, 0.5, NULL, 0, &fresh));
  float x[n * d], a[n * d], b[n * d];
  for (int i = 0; i < n * d; ++i) x[i] = (float)(2.0 * sin(0.61 * i + 0.3));
  const ds_channel ch = {0.8, 0.5};
  ds_evaluate_options o;
  ds_mixture_path path = DS_MIXTURE_PATH_AUTOMATIC;
  CHECK_OK(ds_evaluate_options_init(&o, sizeof o));
  o.path = DS_MIXTURE_PATH_GEMM;
  EXPECT_INVALID(ds_mixture_prepare_gemm(prepared, DS_EXECUTOR_AUTOMATIC), "where");
  CHECK_OK(ds_mixture_prepare_gemm(prepared, DS_EXECUTOR_CPU));
  CHECK(strcmp(ds_last_error(), "") == 0);
  CHECK_OK(ds_mixture_prepare_gemm(prepared, DS_EXECUTOR_CPU)); /* idempotent */
  CHECK_OK(ds_mixture_evaluate_with(prepared, a, n, x, ch, DS_DENOISER, &o, cpu, NULL, 0, NULL, &path));
  CHECK(path == DS_MIXTURE_PATH_GEMM);
  CHECK_OK(ds_mixture_evaluate_with(fresh, b, n, x, ch, DS_DENOISER, &o, cpu, NULL, 0, NULL, &path));
  CHECK(path == DS_MIXTURE_PATH_GEMM && memcmp(a, b, sizeof a) == 0);
  if (ds_cuda_available()) {
    CHECK_OK(ds_mixture_prepare_gemm(prepared, DS_EXECUTOR_CUDA));
  } else {
    EXPECT_INVALID(ds_mixture_prepare_gemm(prepared, DS_EXECUTOR_CUDA), "where: cuda was requested but no GPU is usable (");
  }
  EXPECT_INVALID(ds_mixture_prepare_gemm(prepared, (ds_executor)9), "where");
  EXPECT_INVALID(ds_mixture_prepare_gemm(NULL, DS_EXECUTOR_CPU), "mixture");
  {
    const double w[2] = {0.5, 0.5}, mu[4] = {0, 0, 1, 1}, var[4] = {1, 2, 1, 2};
    ds_mixture* diag = NULL;
    CHECK_OK(ds_mixture_create(2, 2, w, mu, var, 4, &diag));
    CHECK_OK(ds_mixture_prepare_gemm(diag, DS_EXECUTOR_CPU));
    ds_mixture_destroy(diag);
  }
  ds_mixture_destroy(prepared);
  ds_mixture_destroy(fresh);
}

/* ds_guided_workspace_bytes_on(): on the CPU executor DPS's products (forced, with a dense A on the 2-d mixture)
 * leave out cuBLAS's 4 MiB, and ds_guided_sample() on the CPU accepts a workspace of that size (one byte less is
 * refused naming the workspace) with the particles of the run that allocates its own; ds_guided_workspace_bytes()
 * stays the bound on either executor. */
static void test_guided_workspace_on(ds_mixture* m) {
  enum { N = 8 };
  const double A[2] = {1.0, -0.5}, y[1] = {0.4}, sigma_y = 0.5;
  float own[N * 2], given[N * 2];
  unsigned char* workspace;
  size_t bound = 0, on_cpu = 0, automatic = 0;
  int i;
  ds_guided_problems gp;
  ds_guided_options go;
  ds_guided_outputs out;
  const ds_execution automatic_exec = {DS_EXECUTOR_AUTOMATIC, NULL};
  CHECK_OK(ds_guided_problems_init(&gp, sizeof gp));
  gp.A = A;
  gp.A_count = 2;
  gp.y = y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  CHECK_OK(ds_guided_options_init(&go, sizeof go));
  go.sampler = DS_GUIDED_DPS;
  go.particles = N;
  go.steps = 3;
  go.operator_path = DS_MIXTURE_PATH_GEMM;
  CHECK_OK(ds_guided_workspace_bytes(m, &gp, &go, &bound));
  CHECK_OK(ds_guided_workspace_bytes_on(m, &gp, &go, cpu, &on_cpu));
  CHECK(bound - on_cpu == ((size_t)4 << 20));
  CHECK_OK(ds_guided_workspace_bytes_on(m, &gp, &go, automatic_exec, &automatic));
  CHECK(automatic == (ds_cuda_available() ? bound : on_cpu));
  EXPECT_INVALID(ds_guided_workspace_bytes_on(m, &gp, &go, cpu, NULL), "bytes");
  CHECK_OK(ds_guided_outputs_init(&out, sizeof out));
  out.particles = own;
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, NULL, 0, NULL));
  workspace = (unsigned char*)malloc(on_cpu);
  CHECK(workspace != NULL);
  if (workspace == NULL) return;
  out.particles = given;
  EXPECT_INVALID(ds_guided_sample(m, &gp, &go, &out, cpu, workspace, on_cpu - 1, NULL), "workspace");
  CHECK_OK(ds_guided_sample(m, &gp, &go, &out, cpu, workspace, on_cpu, NULL));
  for (i = 0; i < N * 2; ++i) CHECK(given[i] == own[i]);
  free(workspace);
}

int main(void) {
  const double w[2] = {0.3, 0.7}, mu[4] = {-1, 0.5, 2, -0.5}, var[2] = {0.4, 0.2};
  ds_mixture* m = NULL;
  CHECK_OK(ds_mixture_create(2, 2, w, mu, var, 2, &m));
  test_diffusion_name(m);
  test_int64_ancestors();
  test_sliced_wasserstein();
  test_component_weights();
  test_guided_svd(m);
  test_guided_report2(m);
  test_operator_messages(m);
  test_guided_times(m);
  test_names();
  test_evaluate_path();
  test_prepare_gemm();
  test_every_option_field(m);
  test_guided_workspace_on(m);
  ds_mixture_destroy(m);
  if (failures) {
    fprintf(stderr, "test_c_api_coverage: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api_coverage: all checks passed\n");
  return 0;
}
