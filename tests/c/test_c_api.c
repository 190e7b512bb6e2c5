/* The C ABI from a C99 program: success paths checked against closed-form values, and error paths checked for the
 * status code and a last-error message that names the argument. Runs on the CPU executor (host buffers), so it
 * needs no GPU. Exits nonzero on the first failed check. */
#include <diffsample/diffsample.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

#define CHECK_OK(call)                                                                              \
  do {                                                                                              \
    ds_status status_ = (call);                                                                     \
    if (status_ != DS_SUCCESS) {                                                                    \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, ds_status_name(status_), \
              ds_last_error());                                                                     \
      ++failures;                                                                                   \
    }                                                                                               \
  } while (0)

/* The call must fail with `expected` and a last-error message containing `needle`. */
static void expect_error(ds_status got, ds_status expected, const char* needle, const char* what, int line) {
  if (got != expected) {
    fprintf(stderr, "line %d: %s: expected %s, got %s (%s)\n", line, what, ds_status_name(expected),
            ds_status_name(got), ds_last_error());
    ++failures;
  } else if (strstr(ds_last_error(), needle) == NULL) {
    fprintf(stderr, "line %d: %s: message \"%s\" does not name \"%s\"\n", line, what, ds_last_error(), needle);
    ++failures;
  }
}
#define EXPECT_ERROR(call, expected, needle) expect_error((call), (expected), (needle), #call, __LINE__)

static int near(double got, double want, double tol) { return fabs(got - want) <= tol * (1.0 + fabs(want)); }

static void test_library(void) {
  ds_executor e = DS_EXECUTOR_AUTOMATIC;
  CHECK(strcmp(ds_version(), "0.1.0") == 0);
  CHECK(ds_cuda_available() == 0 || ds_cuda_available() == 1);
  CHECK(ds_cuda_unavailable_reason() != NULL);
  CHECK(strcmp(ds_status_name(DS_OUT_OF_MEMORY), "out_of_memory") == 0);
  CHECK(strcmp(ds_executor_name(DS_EXECUTOR_CPU), "cpu") == 0);
  CHECK(strcmp(ds_executor_name((ds_executor)42), "unknown") == 0);
  CHECK_OK(ds_parse_executor("gpu", &e));
  CHECK(e == DS_EXECUTOR_CUDA);
  CHECK(strcmp(ds_last_error(), "") == 0);
  EXPECT_ERROR(ds_parse_executor("tpu", &e), DS_INVALID_ARGUMENT, "tpu");
  CHECK(e == DS_EXECUTOR_CUDA); /* outputs unchanged on failure */
  EXPECT_ERROR(ds_parse_executor(NULL, &e), DS_INVALID_ARGUMENT, "name");
}

/* One isotropic Gaussian N(mu, var I) in d = 3: score (mu - x) / var, denoiser x at the prior, log-density in closed
 * form; at channel (a, s) the marginal is N(a mu, (a^2 var + s^2) I). */
static void test_gaussian(void) {
  const double mu[3] = {1.0, -2.0, 0.5};
  const double w[1] = {1.0};
  const double var[1] = {0.25};
  const float x[2 * 3] = {0.0f, 0.0f, 0.0f, 1.5f, -1.0f, 2.0f};
  const ds_channel prior = {1.0, 0.0};
  const ds_channel noisy = {0.8, 0.6};
  const ds_execution cpu = {DS_EXECUTOR_CPU, NULL};
  ds_mixture* m = NULL;
  float out[2 * 3];
  float logp[2];
  float v[2 * 3] = {1.0f, 0.0f, 0.0f, 0.0f, 1.0f, -1.0f};
  float jvp[2 * 3];
  int64_t k = 0, d = 0;
  ds_executor ran = DS_EXECUTOR_AUTOMATIC;
  int i, j;

  CHECK_OK(ds_mixture_create(3, 1, w, mu, var, 1, &m));
  if (m == NULL) return;
  CHECK_OK(ds_mixture_shape(m, &k, &d));
  CHECK(k == 1 && d == 3);

  CHECK_OK(ds_mixture_evaluate(m, DS_SCORE, x, 2, prior, out, cpu, &ran));
  CHECK(ran == DS_EXECUTOR_CPU);
  for (i = 0; i < 2; ++i)
    for (j = 0; j < 3; ++j) CHECK(near(out[i * 3 + j], (mu[j] - x[i * 3 + j]) / var[0], 1e-5));

  CHECK_OK(ds_mixture_evaluate(m, DS_LOG_DENSITY, x, 2, prior, logp, cpu, NULL));
  for (i = 0; i < 2; ++i) {
    double r2 = 0;
    for (j = 0; j < 3; ++j) r2 += (x[i * 3 + j] - mu[j]) * (x[i * 3 + j] - mu[j]);
    CHECK(near(logp[i], -0.5 * r2 / var[0] - 1.5 * log(2 * 3.14159265358979323846 * var[0]), 1e-5));
  }

  /* Denoiser at (a, s): mu + a var / c (x - a mu) with c = a^2 var + s^2; its Jacobian is a var / c times I. */
  CHECK_OK(ds_mixture_evaluate(m, DS_DENOISER, x, 2, noisy, out, cpu, NULL));
  {
    const double c = noisy.a * noisy.a * var[0] + noisy.s * noisy.s;
    for (i = 0; i < 2; ++i)
      for (j = 0; j < 3; ++j)
        CHECK(near(out[i * 3 + j], mu[j] + noisy.a * var[0] / c * (x[i * 3 + j] - noisy.a * mu[j]), 1e-5));
    CHECK_OK(ds_mixture_denoiser_jvp(m, x, v, 2, noisy, jvp, cpu, &ran));
    for (i = 0; i < 6; ++i) CHECK(near(jvp[i], noisy.a * var[0] / c * v[i], 1e-5));
  }

  /* Exact samples: the sample mean is within 5 standard errors (sqrt(var / n)) of mu. */
  {
    enum { n = 4096 };
    float* s = (float*)malloc(sizeof(float) * n * 3);
    int32_t* labels = (int32_t*)malloc(sizeof(int32_t) * n);
    CHECK_OK(ds_mixture_sample(m, s, n, prior, 11, labels, 0, cpu, &ran));
    CHECK(ran == DS_EXECUTOR_CPU);
    for (j = 0; j < 3; ++j) {
      double mean = 0;
      for (i = 0; i < n; ++i) mean += s[i * 3 + j];
      mean /= n;
      CHECK(fabs(mean - mu[j]) < 5 * sqrt(var[0] / n));
    }
    for (i = 0; i < n; ++i) CHECK(labels[i] == 0);
    free(s);
    free(labels);
  }

  /* Error paths: the message names the argument. */
  EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, x, -1, prior, out, cpu, NULL), DS_INVALID_ARGUMENT, "n");
  EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, NULL, 2, prior, out, cpu, NULL), DS_INVALID_ARGUMENT, "x");
  EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, x, 2, prior, NULL, cpu, NULL), DS_INVALID_ARGUMENT, "out");
  EXPECT_ERROR(ds_mixture_evaluate(m, (ds_quantity)7, x, 2, prior, out, cpu, NULL), DS_INVALID_ARGUMENT, "what");
  {
    const ds_channel bad = {-1.0, 0.0};
    EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, x, 2, bad, out, cpu, NULL), DS_INVALID_ARGUMENT, "-1");
  }
  {
    const ds_execution bad = {(ds_executor)9, NULL};
    EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, x, 2, prior, out, bad, NULL), DS_INVALID_ARGUMENT, "exec.kind");
  }
  EXPECT_ERROR(ds_mixture_evaluate(NULL, DS_SCORE, x, 2, prior, out, cpu, NULL), DS_INVALID_ARGUMENT, "mixture");
  EXPECT_ERROR(ds_mixture_denoiser_jvp(m, x, NULL, 2, noisy, jvp, cpu, NULL), DS_INVALID_ARGUMENT, "v");
  EXPECT_ERROR(ds_mixture_sample(m, NULL, 2, prior, 0, NULL, 0, cpu, NULL), DS_INVALID_ARGUMENT, "out");
  if (!ds_cuda_available()) {
    const ds_execution gpu = {DS_EXECUTOR_CUDA, NULL};
    EXPECT_ERROR(ds_mixture_evaluate(m, DS_SCORE, x, 2, prior, out, gpu, NULL), DS_INVALID_ARGUMENT, "executor");
  }
  /* A success clears the message. */
  CHECK_OK(ds_mixture_shape(m, NULL, NULL));
  CHECK(strcmp(ds_last_error(), "") == 0);

  ds_mixture_destroy(m);
  ds_mixture_destroy(NULL);
}

static void test_create_errors(void) {
  const double w[2] = {1.0, 1.0};
  const double mu[4] = {0, 0, 1, 1};
  const double var_bad[2] = {1.0, -0.5};
  const double w_nan[2] = {1.0, NAN};
  ds_mixture* m = NULL;
  EXPECT_ERROR(ds_mixture_create(2, 2, w, mu, var_bad, 2, &m), DS_INVALID_ARGUMENT, "variances[1]");
  EXPECT_ERROR(ds_mixture_create(2, 2, w_nan, mu, var_bad, 2, &m), DS_INVALID_ARGUMENT, "weights[1]");
  EXPECT_ERROR(ds_mixture_create(2, 2, w, mu, var_bad, 3, &m), DS_INVALID_ARGUMENT, "variances");
  EXPECT_ERROR(ds_mixture_create(2, 2, w, NULL, var_bad, 2, &m), DS_INVALID_ARGUMENT, "means");
  EXPECT_ERROR(ds_mixture_create(0, 2, w, mu, var_bad, 2, &m), DS_INVALID_ARGUMENT, "dim");
  EXPECT_ERROR(ds_mixture_create(2, 0, w, mu, var_bad, 2, &m), DS_INVALID_ARGUMENT, "components");
  EXPECT_ERROR(ds_mixture_create(2, 2, w, mu, var_bad, 2, NULL), DS_INVALID_ARGUMENT, "out");
  CHECK(m == NULL);
  EXPECT_ERROR(ds_grid_mixture_create(2, 0, 1.0, 0.1, NULL, 0, &m), DS_INVALID_ARGUMENT, "grid");
  EXPECT_ERROR(ds_grid_mixture_create(2, 3, 1.0, 0.1, w, 2, &m), DS_INVALID_ARGUMENT, "weights");
  EXPECT_ERROR(ds_grid_mixture_create(2, 3, 1.0, 0.1, NULL, -1, &m), DS_INVALID_ARGUMENT, "weights");
  CHECK(m == NULL);
}

/* MALA on N(0, tau^2) in d = 2 started at exact samples stays there: the sample variance is within 6 standard errors
 * (var * sqrt(2 / n)) of tau^2. */
static void test_langevin(void) {
  enum { n = 8192 };
  const double zero[2] = {0, 0};
  const double w[1] = {1.0};
  const double var[1] = {2.0};
  const ds_execution cpu = {DS_EXECUTOR_CPU, NULL};
  ds_langevin_options o;
  ds_langevin_report report;
  ds_mixture* m = NULL;
  float* x = (float*)malloc(sizeof(float) * n * 2);
  int64_t* accepted = (int64_t*)malloc(sizeof(int64_t) * n);
  size_t bytes = 1;
  double second = 0;
  int i;

  CHECK_OK(ds_langevin_options_init(&o, sizeof o));
  CHECK(o.struct_size == sizeof o);
  CHECK(o.method == DS_MALA && o.step_size == 1e-2 && o.steps == 1000 && o.target.a == 1.0 && o.target.s == 0.0);
  CHECK(o.record_every == 0 && o.seed == 0 && o.first_chain == 0 && o.first_step == 0);
  CHECK_OK(ds_mixture_create(2, 1, w, zero, var, 1, &m));
  if (m == NULL) return;
  CHECK_OK(ds_mixture_sample(m, x, n, o.target, 3, NULL, 0, cpu, NULL));
  o.steps = 50;
  o.step_size = 0.5;
  o.seed = 5;
  CHECK_OK(ds_langevin_workspace_bytes(m, n, &o, &bytes));
  CHECK(bytes == 0); /* d = 2 is in the register list */
  CHECK_OK(ds_langevin(m, x, n, &o, NULL, accepted, cpu, NULL, 0, &report));
  CHECK(report.ran == DS_EXECUTOR_CPU);
  CHECK(report.register_path == 1);
  for (i = 0; i < n; ++i) {
    CHECK(accepted[i] >= 0 && accepted[i] <= o.steps);
    second += x[2 * i] * x[2 * i] + x[2 * i + 1] * x[2 * i + 1];
  }
  second /= 2.0 * n;
  CHECK(fabs(second - var[0]) < 6 * var[0] * sqrt(2.0 / (2.0 * n)));

  {
    double sw = -1;
    CHECK_OK(ds_sliced_wasserstein(x, n, x, n, 2, 16, 0, 1, &sw));
    CHECK(sw == 0.0);
    EXPECT_ERROR(ds_sliced_wasserstein(x, n, x, n, 2, 16, 0, 3, &sw), DS_INVALID_ARGUMENT, "p");
    EXPECT_ERROR(ds_sliced_wasserstein(x, n, x, n, 2, 16, 0, 1, NULL), DS_INVALID_ARGUMENT, "out");
    CHECK(sw == 0.0);
  }

  o.step_size = -1.0;
  EXPECT_ERROR(ds_langevin(m, x, n, &o, NULL, NULL, cpu, NULL, 0, NULL), DS_INVALID_ARGUMENT, "step_size");
  o.step_size = 0.1;
  o.method = (ds_langevin_method)5;
  EXPECT_ERROR(ds_langevin(m, x, n, &o, NULL, NULL, cpu, NULL, 0, NULL), DS_INVALID_ARGUMENT, "options.method");
  EXPECT_ERROR(ds_langevin(m, x, n, NULL, NULL, NULL, cpu, NULL, 0, NULL), DS_INVALID_ARGUMENT, "options");
  EXPECT_ERROR(ds_langevin_workspace_bytes(m, n, &o, NULL), DS_INVALID_ARGUMENT, "options.method");
  o.method = DS_ULA;
  EXPECT_ERROR(ds_langevin_workspace_bytes(m, n, &o, NULL), DS_INVALID_ARGUMENT, "bytes");

  ds_mixture_destroy(m);
  free(x);
  free(accepted);
}

int main(void) {
  test_library();
  test_gaussian();
  test_create_errors();
  test_langevin();
  if (failures) {
    fprintf(stderr, "test_c_api: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api: all checks passed\n");
  return 0;
}
