/* The C ABI's forms of what the C++ API has beyond the first C release: ds_diffusion (and its former name), int64
 * ancestors, the executor and asynchronous forms of the sliced Wasserstein distance, component weights, SVD
 * operators in guided problems, the SMC potentials and time-grid settings and the grid's times, and the names of every enum. Each new form is checked
 * against the form it mirrors, bit for bit where the computation is the same, or against a closed form. CPU executor
 * only (host buffers): no GPU needed. Exits nonzero on any failed check. */
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
  CHECK(go.potentials == DS_POTENTIALS_LINEAR);
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
  gp.A = NULL;
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

int main(void) {
  const double w[2] = {0.3, 0.7}, mu[4] = {-1, 0.5, 2, -0.5}, var[2] = {0.4, 0.2};
  ds_mixture* m = NULL;
  CHECK_OK(ds_mixture_create(2, 2, w, mu, var, 2, &m));
  test_diffusion_name(m);
  test_int64_ancestors();
  test_sliced_wasserstein();
  test_component_weights();
  test_guided_svd(m);
  test_guided_times(m);
  test_names();
  test_evaluate_path();
  ds_mixture_destroy(m);
  if (failures) {
    fprintf(stderr, "test_c_api_coverage: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api_coverage: all checks passed\n");
  return 0;
}
