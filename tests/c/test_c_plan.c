/* The ask/tell sampling plans through the C ABI from a C99 program: Heun, SMS and tamed ULA plans answered with the
 * library's own denoiser or score (ds_mixture_evaluate) reproduce the fused samplers bit for bit on the CPU
 * executor, and so do MALA plans (score and log-density) against ds_langevin() and Pi-GDM, DCPS, TMPD and guided SMC
 * plans against ds_guided_sample(); the request struct is versioned (struct_size); misuse gets an error naming the
 * argument; a guided plan's report (ds_sampling_plan_report) equals ds_guided_sample2()'s for the run the plan makes.
 * Exits nonzero on the first failed check. */
#include <diffsample/diffsample.h>

#include "check.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


enum { n = 50, d = 3 };
static const ds_execution cpu = {DS_EXECUTOR_CPU, NULL};

/* Runs one trajectory of the plan with the mixture as the model; returns the number of asks answered. */
static int64_t run(ds_sampling_plan* plan, const ds_mixture* m, const float* initial, float* out, int64_t rows) {
  ds_plan_request r;
  int64_t asks = 0, position = -1, told = 0;
  const int64_t* counter = NULL;
  float* samples = NULL;
  ds_executor where = DS_EXECUTOR_AUTOMATIC;
  CHECK_OK(ds_sampling_plan_get_info(plan, &asks, NULL, &where));
  CHECK(where == DS_EXECUTOR_CPU);
  CHECK_OK(ds_sampling_plan_position_counter(plan, &counter));
  CHECK_OK(ds_sampling_plan_reset(plan, initial, cpu));
  for (told = 0; told < asks; ++told) {
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    CHECK_OK(ds_sampling_plan_ask(plan, &r));
    CHECK(r.index == told && r.rows == rows && r.dim == d && counter != NULL && *counter == told);
    if (r.vector != NULL)
      CHECK_OK(ds_mixture_denoiser_jvp(m, r.points, r.vector, r.rows, r.at, r.answer, cpu, NULL));
    else
      CHECK_OK(ds_mixture_evaluate(m, r.output == DS_MODEL_DENOISER ? DS_DENOISER : DS_SCORE, r.points, r.rows, r.at,
                                   r.answer, cpu, NULL));
    if (r.log_density != NULL)
      CHECK_OK(ds_mixture_evaluate(m, DS_LOG_DENSITY, r.points, r.rows, r.at, r.log_density, cpu, NULL));
    CHECK_OK(ds_sampling_plan_tell(plan, cpu));
  }
  CHECK_OK(ds_sampling_plan_get_info(plan, NULL, &position, NULL));
  CHECK(position == asks);
  r.struct_size = sizeof r;
  EXPECT_ERROR(ds_sampling_plan_ask(plan, &r), DS_INVALID_ARGUMENT, "done");
  EXPECT_ERROR(ds_sampling_plan_tell(plan, cpu), DS_INVALID_ARGUMENT, "done");
  CHECK_OK(ds_sampling_plan_samples(plan, &samples));
  if (samples != NULL) memcpy(out, samples, sizeof(float) * rows * d);
  return told;
}

/* The settings two guided reports give (launches aside: a plan's report counts none); prints the first that
 * differs. */
static void expect_same_settings(const ds_guided_report2* plan, const ds_guided_report2* fused, const char* what) {
  if (plan->ran != fused->ran || plan->operator_path != fused->operator_path || plan->potentials != fused->potentials ||
      plan->start_correction != fused->start_correction || plan->multistep_kernel != fused->multistep_kernel ||
      plan->final_moves != fused->final_moves) {
    fprintf(stderr,
            "%s: the plan reports ran %d, operator_path %d, potentials %d, start_correction %d, multistep_kernel %d, "
            "final_moves %lld; ds_guided_sample2 %d, %d, %d, %d, %d, %lld\n",
            what, (int)plan->ran, (int)plan->operator_path, (int)plan->potentials, plan->start_correction,
            plan->multistep_kernel, (long long)plan->final_moves, (int)fused->ran, (int)fused->operator_path,
            (int)fused->potentials, fused->start_correction, fused->multistep_kernel, (long long)fused->final_moves);
    ++failures;
  }
}

int main(void) {
  const double w[3] = {0.2, 0.5, 0.3};
  const double mu[3 * 3] = {-2.0, 0.0, 1.0, 1.5, 2.5, -1.0, 0.5, -2.0, 2.0};
  const double var[3] = {0.3, 0.5, 0.2};
  ds_mixture* m = NULL;
  float fused[n * d], stepped[n * d], initial[n * d];
  int c, i;
  for (i = 0; i < n * d; ++i) initial[i] = (float)(3.0 * sin(0.37 * i));
  CHECK_OK(ds_mixture_create(d, 3, w, mu, var, 3, &m));
  if (m == NULL) return 1;

  /* Heun (two asks per step, the second at the predictor), SMS (asks at the measurements' average), DDPM. */
  for (c = 0; c < 3; ++c) {
    ds_diffusion_options o;
    ds_sampling_plan* plan = NULL;
    CHECK_OK(ds_diffusion_options_init(&o, sizeof o));
    o.seed = 7;
    o.steps = 8;
    if (c == 0) {
      o.sampler = DS_DIFFUSION_ODE_HEUN;
      o.final_denoise = 1;
    } else if (c == 1) {
      o.sampler = DS_DIFFUSION_SEQUENTIAL_MEASUREMENTS;
      o.measurements = 3;
      o.sigma = 1.5;
    }
    CHECK_OK(ds_diffusion(m, fused, n, &o, NULL, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_diffusion(n, d, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan == NULL) continue;
    run(plan, m, NULL, stepped, n);
    if (memcmp(fused, stepped, sizeof fused) != 0) {
      fprintf(stderr, "diffusion plan %s: samples differ from the fused sampler's\n", ds_diffusion_sampler_name(o.sampler));
      ++failures;
    }
    ds_sampling_plan_destroy(plan);
  }

  /* Tamed ULA from the caller's initial state. */
  {
    ds_langevin_options o;
    ds_sampling_plan* plan = NULL;
    CHECK_OK(ds_langevin_options_init(&o, sizeof o));
    o.method = DS_TAMED_ULA;
    o.steps = 12;
    o.step_size = 0.05;
    o.seed = 3;
    memcpy(fused, initial, sizeof fused);
    CHECK_OK(ds_langevin(m, fused, n, &o, NULL, NULL, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_langevin(n, d, &o, DS_MODEL_SCORE, cpu, &plan));
    if (plan != NULL) {
      CHECK(run(plan, m, initial, stepped, n) == 12);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "tamed ULA plan: samples differ from the fused chain's\n");
        ++failures;
      }
      EXPECT_ERROR(ds_sampling_plan_reset(plan, NULL, cpu), DS_INVALID_ARGUMENT, "initial");
      ds_sampling_plan_destroy(plan);
    }
  }

  /* MALA: asks for the score and the log-density, at the state, then at each proposal; equal to ds_langevin() with
   * its accepted counts. A request of the first layout (no log_density) is refused. */
  {
    ds_langevin_options o;
    ds_sampling_plan* plan = NULL;
    int64_t accepted[n], total = 0;
    const int64_t* plan_accepted = NULL;
    CHECK_OK(ds_langevin_options_init(&o, sizeof o));
    o.method = DS_MALA;
    o.steps = 12;
    o.step_size = 0.2;
    o.seed = 3;
    memcpy(fused, initial, sizeof fused);
    CHECK_OK(ds_langevin(m, fused, n, &o, NULL, accepted, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_langevin(n, d, &o, DS_MODEL_SCORE, cpu, &plan));
    if (plan != NULL) {
      ds_plan_request r;
      CHECK(run(plan, m, initial, stepped, n) == 13);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "MALA plan: samples differ from the fused chain's\n");
        ++failures;
      }
      CHECK_OK(ds_sampling_plan_accepted(plan, &plan_accepted));
      CHECK(plan_accepted != NULL && memcmp(accepted, plan_accepted, sizeof accepted) == 0);
      for (i = 0; i < n; ++i) total += accepted[i];
      CHECK(total > 0 && total < n * o.steps);
      memset(&r, 0, sizeof r);
      r.struct_size = offsetof(ds_plan_request, log_density);
      EXPECT_ERROR(ds_sampling_plan_request(plan, 0, &r), DS_INVALID_ARGUMENT, "log_density");
      {
        /* A refused ask() leaves the plan as it was: a request(k) / tell loop then runs the whole trajectory (the
         * refused call had marked ask 0 as asked, and the tell after ask 0's refused the loop as "not asked"). */
        int64_t asks = 0, k;
        CHECK_OK(ds_sampling_plan_get_info(plan, &asks, NULL, NULL));
        CHECK_OK(ds_sampling_plan_reset(plan, initial, cpu));
        memset(&r, 0, sizeof r);
        r.struct_size = offsetof(ds_plan_request, log_density);
        EXPECT_ERROR(ds_sampling_plan_ask(plan, &r), DS_INVALID_ARGUMENT, "log_density");
        for (k = 0; k < asks; ++k) {
          memset(&r, 0, sizeof r);
          r.struct_size = sizeof r;
          CHECK_OK(ds_sampling_plan_request(plan, k, &r));
          CHECK_OK(ds_mixture_evaluate(m, DS_SCORE, r.points, r.rows, r.at, r.answer, cpu, NULL));
          CHECK_OK(ds_mixture_evaluate(m, DS_LOG_DENSITY, r.points, r.rows, r.at, r.log_density, cpu, NULL));
          CHECK_OK(ds_sampling_plan_tell(plan, cpu));
        }
      }
      ds_sampling_plan_destroy(plan);
    }
    o.method = DS_ULA;
    CHECK_OK(ds_sampling_plan_create_langevin(n, d, &o, DS_MODEL_SCORE, cpu, &plan));
    if (plan != NULL) {
      ds_plan_request r;
      plan_accepted = accepted;
      CHECK_OK(ds_sampling_plan_accepted(plan, &plan_accepted));
      CHECK(plan_accepted == NULL);
      memset(&r, 0, sizeof r);
      r.struct_size = offsetof(ds_plan_request, log_density);  /* the first layout serves every other plan */
      CHECK_OK(ds_sampling_plan_request(plan, 0, &r));
      CHECK(r.answer != NULL && r.log_density == NULL);
      ds_sampling_plan_destroy(plan);
    }
  }

  /* Pi-GDM on B = 2 problems of 25 particles (rows = 50): asks alternate between the denoiser and J^T v. */
  {
    const double A[2 * 2 * 3] = {1.0, 0.0, -0.5, 0.3, 1.0, 0.4, 0.8, 0.2, 0.0, -0.3, 0.9, 0.5};
    const double y[2 * 2] = {1.5, -0.5, 0.2, 1.1};
    const double sigma_y[2] = {0.3, 0.5};
    ds_guided_problems pr;
    ds_guided_options o;
    ds_guided_outputs outputs;
    ds_sampling_plan* plan = NULL;
    CHECK_OK(ds_guided_problems_init(&pr, sizeof pr));
    CHECK_OK(ds_guided_options_init(&o, sizeof o));
    CHECK_OK(ds_guided_outputs_init(&outputs, sizeof outputs));
    pr.problems = 2;
    pr.d_y = 2;
    pr.A = A;
    pr.A_count = 12;
    pr.y = y;
    pr.sigma_y = sigma_y;
    pr.sigma_y_count = 2;
    o.sampler = DS_GUIDED_PIGDM;
    o.particles = 25;
    o.steps = 10;
    o.seed = 5;
    outputs.particles = fused;
    CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan != NULL) {
      CHECK(run(plan, m, NULL, stepped, 50) == 20);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "pigdm plan: particles differ from the fused sampler's\n");
        ++failures;
      }
      EXPECT_ERROR(ds_sampling_plan_write_outputs(plan, &outputs, cpu), DS_INVALID_ARGUMENT, "SMC");
      ds_sampling_plan_destroy(plan);
    }

    /* DCPS on the same problems: Langevin asks, transition asks and gradient asks at the fit's draws, each J^T u
     * ask after the denoiser at the same points; the particles equal ds_guided_sample()'s bit for bit. */
    plan = NULL;
    o.sampler = DS_GUIDED_DCPS;
    o.dcps_blocks = 2;
    o.dcps_langevin_steps = 2;
    o.dcps_langevin_step = 0.05;
    CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan != NULL) {
      int64_t asks = 0;
      CHECK_OK(ds_sampling_plan_get_info(plan, &asks, NULL, NULL));
      CHECK(asks > 20 && run(plan, m, NULL, stepped, 50) == asks);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "dcps plan: particles differ from the fused sampler's\n");
        ++failures;
      }
      ds_sampling_plan_destroy(plan);
    }
    /* TMPD: per step the denoiser, then J^T a_o for both rows of A_b (30 asks); bit for bit again. */
    plan = NULL;
    o.dcps_blocks = 4; /* DCPS's settings back to their defaults: the other samplers refuse them */
    o.dcps_langevin_steps = 50;
    o.dcps_langevin_step = 1e-3;
    o.sampler = DS_GUIDED_TMPD;
    CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan != NULL) {
      CHECK(run(plan, m, NULL, stepped, 50) == 30);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "tmpd plan: particles differ from the fused sampler's\n");
        ++failures;
      }
      ds_sampling_plan_destroy(plan);
    }
    /* DiffPIR: one ask per step (the model's output); the same particles as ds_guided_sample() bit for bit. */
    o.sampler = DS_GUIDED_DIFFPIR;
    plan = NULL;
    CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan != NULL) {
      CHECK(run(plan, m, NULL, stepped, 50) == 10);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "diffpir plan: particles differ from the fused sampler's\n");
        ++failures;
      }
      ds_sampling_plan_destroy(plan);
    }
    /* DDRM: one ask per step (the model's output); the same particles as ds_guided_sample() bit for bit. */
    o.sampler = DS_GUIDED_DDRM;
    plan = NULL;
    CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
    if (plan != NULL) {
      CHECK(run(plan, m, NULL, stepped, 50) == 10);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "ddrm plan: particles differ from the fused sampler's\n");
        ++failures;
      }
      ds_sampling_plan_destroy(plan);
    }
    /* SKRock: it asks for the prior's score at (1, 0) (no denoiser), needs the caller's Lipschitz bound of that score
     * and the caller's initial particles. */
    o.sampler = DS_GUIDED_SKROCK;
    EXPECT_ERROR(ds_sampling_plan_create_guided(0, &pr, &o, DS_MODEL_SCORE, cpu, &plan), DS_INVALID_ARGUMENT,
                 "dim = 0, must be at least 1");
    EXPECT_ERROR(ds_sampling_plan_create_guided((int64_t)1 << 25, &pr, &o, DS_MODEL_SCORE, cpu, &plan),
                 DS_INVALID_ARGUMENT, "dim = 33554432, the limit is 16777216 (2^24)");
    EXPECT_ERROR(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan), DS_INVALID_ARGUMENT,
                 "output");
    EXPECT_ERROR(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_SCORE, cpu, &plan), DS_INVALID_ARGUMENT,
                 "skrock_lipschitz");
    o.skrock_lipschitz = -1.0;
    EXPECT_ERROR(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL), DS_INVALID_ARGUMENT, "skrock_lipschitz");
    o.skrock_lipschitz = 1.0;
    o.skrock_stages = 3;
    plan = NULL;
    CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_SCORE, cpu, &plan));
    if (plan != NULL) {
      int64_t asks = 0;
      CHECK_OK(ds_sampling_plan_get_info(plan, &asks, NULL, NULL));
      CHECK(asks == 30);
      EXPECT_ERROR(ds_sampling_plan_reset(plan, NULL, cpu), DS_INVALID_ARGUMENT, "initial");
      ds_sampling_plan_destroy(plan);
    }
    o.skrock_lipschitz = 0.0;
    o.skrock_stages = 10;
    o.sampler = DS_GUIDED_PIGDM;

    /* The guided SMC on the same problems: one ask per transition; log-weights, final samples and log-normalisers
     * from ds_sampling_plan_write_outputs() equal ds_guided_sample()'s bit for bit (on every CPU target), with
     * linear potentials (the plan's choice for the default, DS_POTENTIALS_AUTOMATIC, which ds_guided_sample()
     * resolves to twisted ones here). */
    {
      float lw_fused[n], lw_plan[n], samples_fused[n * d], samples_plan[n * d];
      double lz_fused[2], lz_plan[2];
      ds_guided_outputs mine;
      plan = NULL;
      o.sampler = DS_GUIDED_SMC;
      o.potentials = DS_POTENTIALS_LINEAR;
      outputs.log_weights = lw_fused;
      outputs.samples = samples_fused;
      outputs.log_normaliser = lz_fused;
      CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
      CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
      if (plan != NULL) {
        CHECK_OK(ds_guided_outputs_init(&mine, sizeof mine));
        mine.log_weights = lw_plan;
        mine.samples = samples_plan;
        mine.log_normaliser = lz_plan;
        EXPECT_ERROR(ds_sampling_plan_write_outputs(plan, &mine, cpu), DS_INVALID_ARGUMENT, "done");
        CHECK(run(plan, m, NULL, stepped, 50) == 10);
        CHECK_OK(ds_sampling_plan_write_outputs(plan, &mine, cpu));
        if (memcmp(fused, stepped, sizeof fused) != 0 || memcmp(lw_fused, lw_plan, sizeof lw_plan) != 0 ||
            memcmp(samples_fused, samples_plan, sizeof samples_plan) != 0 ||
            memcmp(lz_fused, lz_plan, sizeof lz_plan) != 0) {
          fprintf(stderr, "smc plan: outputs differ from the fused sampler's\n");
          ++failures;
        }
        EXPECT_ERROR(ds_sampling_plan_reset(plan, initial, cpu), DS_INVALID_ARGUMENT, "initial");
        ds_sampling_plan_destroy(plan);
      }
      /* Moment-projected potentials: per transition the model's output, then J^T a_o for every row of A (d_y asks);
       * the same outputs as ds_guided_sample() bit for bit. */
      plan = NULL;
      o.potentials = DS_POTENTIALS_MOMENT;
      CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
      CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
      if (plan != NULL) {
        CHECK(run(plan, m, NULL, stepped, 50) == 10 * (1 + pr.d_y));
        CHECK_OK(ds_sampling_plan_write_outputs(plan, &mine, cpu));
        if (memcmp(fused, stepped, sizeof fused) != 0 || memcmp(lw_fused, lw_plan, sizeof lw_plan) != 0 ||
            memcmp(samples_fused, samples_plan, sizeof samples_plan) != 0 ||
            memcmp(lz_fused, lz_plan, sizeof lz_plan) != 0) {
          fprintf(stderr, "smc plan (moment potentials): outputs differ from the fused sampler's\n");
          ++failures;
        }
        ds_sampling_plan_destroy(plan);
      }
      /* Twisted potentials: the same asks (each J^T a_o into its own buffer); weights, resampling and the twisted
       * proposal in the tells. The same outputs as ds_guided_sample() bit for bit. */
      plan = NULL;
      o.potentials = DS_POTENTIALS_TWISTED;
      CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
      CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
      if (plan != NULL) {
        CHECK(run(plan, m, NULL, stepped, 50) == 10 * (1 + pr.d_y));
        CHECK_OK(ds_sampling_plan_write_outputs(plan, &mine, cpu));
        if (memcmp(fused, stepped, sizeof fused) != 0 || memcmp(lw_fused, lw_plan, sizeof lw_plan) != 0 ||
            memcmp(samples_fused, samples_plan, sizeof samples_plan) != 0 ||
            memcmp(lz_fused, lz_plan, sizeof lz_plan) != 0) {
          fprintf(stderr, "smc plan (twisted potentials): outputs differ from the fused sampler's\n");
          ++failures;
        }
        ds_sampling_plan_destroy(plan);
      }
      /* The start correction: four asks first (the model's output at u_n x, the Gauss-Legendre nodes u_n, at the
       * first grid point's channel), then the transitions' asks; twisted and linear potentials give the same outputs
       * as ds_guided_sample() bit for bit. Moment potentials refuse it, naming the option. */
      o.start_correction = 1;
      for (int c = 0; c < 2; ++c) {
        plan = NULL;
        o.potentials = c == 0 ? DS_POTENTIALS_TWISTED : DS_POTENTIALS_LINEAR;
        CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
        CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
        if (plan != NULL) {
          CHECK(run(plan, m, NULL, stepped, 50) == 4 + 10 * (c == 0 ? 1 + pr.d_y : 1));
          CHECK_OK(ds_sampling_plan_write_outputs(plan, &mine, cpu));
          if (memcmp(fused, stepped, sizeof fused) != 0 || memcmp(lw_fused, lw_plan, sizeof lw_plan) != 0 ||
              memcmp(samples_fused, samples_plan, sizeof samples_plan) != 0 ||
              memcmp(lz_fused, lz_plan, sizeof lz_plan) != 0) {
            fprintf(stderr, "smc plan (start correction, %s potentials): outputs differ from the fused sampler's\n",
                    c == 0 ? "twisted" : "linear");
            ++failures;
          }
          ds_sampling_plan_destroy(plan);
        }
      }
      o.potentials = DS_POTENTIALS_MOMENT;
      plan = NULL;
      EXPECT_ERROR(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan), DS_INVALID_ARGUMENT,
                   "options.start_correction");
      o.start_correction = 0;
      o.potentials = DS_POTENTIALS_LINEAR;
      /* The multistep kernel (m_k + w_k (m_k - m_{k-1}), m_{k-1} the ancestor's): linear, moment and twisted
       * potentials, and twisted with the start correction, resampled at every transition (multinomial at threshold
       * 1); the same outputs as ds_guided_sample() bit for bit, which differ from the run without the kernel. Other
       * samplers' plans refuse it, naming the option and the sampler. */
      o.multistep_kernel = 1;
      o.resampling.scheme = DS_RESAMPLING_MULTINOMIAL;
      o.resampling.ess_threshold = 1.0;
      for (int c = 0; c < 4; ++c) {
        static const char* const names[4] = {"linear potentials", "moment potentials", "twisted potentials",
                                             "twisted potentials with the start correction"};
        int32_t counts[2] = {0, 0};
        float plain[n * d];
        plan = NULL;
        o.potentials = c == 0 ? DS_POTENTIALS_LINEAR : c == 1 ? DS_POTENTIALS_MOMENT : DS_POTENTIALS_TWISTED;
        o.start_correction = c == 3;
        o.multistep_kernel = 0;
        CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
        memcpy(plain, fused, sizeof plain);
        o.multistep_kernel = 1;
        outputs.resample_count = counts;
        CHECK_OK(ds_guided_sample(m, &pr, &o, &outputs, cpu, NULL, 0, NULL));
        outputs.resample_count = NULL;
        /* columns 0 .. K of the ESS trace; the moment and twisted potentials' last transition is fully adapted
         * (its weights all equal): columns 0 .. K - 1 */
        CHECK(counts[0] == (c >= 1 ? 10 : 11) && counts[1] == (c >= 1 ? 10 : 11));
        if (memcmp(plain, fused, sizeof plain) == 0) {
          fprintf(stderr, "smc multistep kernel (%s): the particles of the run without it\n", names[c]);
          ++failures;
        }
        CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
        if (plan != NULL) {
          CHECK(run(plan, m, NULL, stepped, 50) == (c == 3 ? 4 : 0) + 10 * (c == 0 ? 1 : 1 + pr.d_y));
          CHECK_OK(ds_sampling_plan_write_outputs(plan, &mine, cpu));
          if (memcmp(fused, stepped, sizeof fused) != 0 || memcmp(lw_fused, lw_plan, sizeof lw_plan) != 0 ||
              memcmp(samples_fused, samples_plan, sizeof samples_plan) != 0 ||
              memcmp(lz_fused, lz_plan, sizeof lz_plan) != 0) {
            fprintf(stderr, "smc plan (multistep kernel, %s): outputs differ from the fused sampler's\n",
                    names[c]);
            ++failures;
          }
          ds_sampling_plan_destroy(plan);
        }
      }
      /* The SMC's other settings back to their defaults: DPS refuses each (the first named would be potentials). */
      o.start_correction = 0;
      o.potentials = DS_POTENTIALS_AUTOMATIC;
      o.resampling.scheme = DS_RESAMPLING_SYSTEMATIC;
      o.resampling.ess_threshold = -1; /* automatic, the default */
      o.sampler = DS_GUIDED_DPS;
      plan = NULL;
      EXPECT_ERROR(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan), DS_INVALID_ARGUMENT,
                   "options.multistep_kernel: not read by sampler dps");
      o.sampler = DS_GUIDED_SMC;
      o.multistep_kernel = 0;
      o.resampling.scheme = DS_RESAMPLING_SYSTEMATIC;
      o.resampling.ess_threshold = -1;
    }
  }

  /* A guided plan's report (ds_sampling_plan_report, in ds_guided_sample2()'s ds_guided_report2): the settings
   * the plan runs, the same before and after a trajectory, equal to ds_guided_sample2()'s report of the same run
   * (launches aside). The default DS_POTENTIALS_AUTOMATIC resolves to linear potentials in a plan (and to twisted
   * ones with both corrections and 4 final moves in ds_guided_sample2() here: d_y = 2), so the plan reports what
   * ds_guided_sample2() reports with linear potentials; explicit twisted potentials with both corrections; TMPD
   * with its covariances as products (DS_MIXTURE_PATH_GEMM, CPU executor); DPS with the path forced to gemm takes
   * its guidance as products in the plan as in ds_guided_sample2() (the same particles bit for bit; seen failing
   * with the plan running it per particle and reporting DS_MIXTURE_PATH_DIRECT). Refusals name the argument. */
  {
    const double A[2 * 2 * 3] = {1.0, 0.0, -0.5, 0.3, 1.0, 0.4, 0.8, 0.2, 0.0, -0.3, 0.9, 0.5};
    const double y[2 * 2] = {1.5, -0.5, 0.2, 1.1};
    const double sigma_y[2] = {0.3, 0.5};
    float samples[n * d];
    ds_guided_problems pr;
    ds_guided_options o;
    ds_guided_outputs outputs;
    ds_guided_report2 mine, theirs;
    ds_sampling_plan* plan = NULL;
    CHECK_OK(ds_guided_problems_init(&pr, sizeof pr));
    CHECK_OK(ds_guided_options_init(&o, sizeof o));
    CHECK_OK(ds_guided_outputs_init(&outputs, sizeof outputs));
    pr.problems = 2;
    pr.d_y = 2;
    pr.A = A;
    pr.A_count = 12;
    pr.y = y;
    pr.sigma_y = sigma_y;
    pr.sigma_y_count = 2;
    o.particles = 25;
    o.steps = 6;
    o.seed = 11;
    outputs.particles = fused;
    outputs.samples = samples;
    for (int c = 0; c < 5; ++c) {
      static const char* const names[5] = {"smc, automatic potentials", "smc, twisted with both corrections",
                                           "tmpd, operator path gemm", "tmpd, automatic operator path",
                                           "dps, operator path gemm"};
      o.sampler = c < 2 ? DS_GUIDED_SMC : c < 4 ? DS_GUIDED_TMPD : DS_GUIDED_DPS;
      o.potentials = c == 0 ? DS_POTENTIALS_AUTOMATIC : c == 1 ? DS_POTENTIALS_TWISTED : DS_POTENTIALS_LINEAR;
      o.start_correction = c == 1;
      o.multistep_kernel = c == 1;
      o.operator_path = c == 2 || c == 4 ? DS_MIXTURE_PATH_GEMM : DS_MIXTURE_PATH_AUTOMATIC;
      outputs.samples = o.sampler == DS_GUIDED_SMC ? samples : NULL;
      plan = NULL;
      CHECK_OK(ds_sampling_plan_create_guided(d, &pr, &o, DS_MODEL_DENOISER, cpu, &plan));
      if (plan == NULL) continue;
      CHECK_OK(ds_guided_report2_init(&mine, sizeof mine));
      CHECK_OK(ds_sampling_plan_report(plan, &mine));
      CHECK(mine.struct_size == sizeof mine && mine.ran == DS_EXECUTOR_CPU && mine.launches == 0 &&
            mine.final_moves == 0);
      if (c == 0) {
        CHECK(mine.potentials == DS_POTENTIALS_LINEAR && mine.start_correction == 0 && mine.multistep_kernel == 0);
        CHECK_OK(ds_guided_report2_init(&theirs, sizeof theirs));
        CHECK_OK(ds_guided_sample2(m, &pr, &o, &outputs, cpu, NULL, 0, &theirs));
        CHECK(theirs.potentials == DS_POTENTIALS_TWISTED && theirs.final_moves == 4);
        o.potentials = mine.potentials; /* what the plan resolved, made explicit */
      }
      CHECK_OK(ds_guided_report2_init(&theirs, sizeof theirs));
      CHECK_OK(ds_guided_sample2(m, &pr, &o, &outputs, cpu, NULL, 0, &theirs));
      CHECK(theirs.launches > 0);
      expect_same_settings(&mine, &theirs, names[c]);
      if (c == 1) CHECK(mine.potentials == DS_POTENTIALS_TWISTED && mine.start_correction == 1 && mine.multistep_kernel == 1);
      if (c == 2) CHECK(mine.operator_path == DS_MIXTURE_PATH_GEMM);
      if (c == 3) CHECK(mine.operator_path == DS_MIXTURE_PATH_DIRECT);
      if (c == 4) CHECK(mine.operator_path == DS_MIXTURE_PATH_GEMM);
      /* After a trajectory fed the mixture's model: the same report, and ds_guided_sample2()'s particles. */
      run(plan, m, NULL, stepped, 50);
      CHECK_OK(ds_guided_report2_init(&theirs, sizeof theirs));
      CHECK_OK(ds_sampling_plan_report(plan, &theirs));
      expect_same_settings(&mine, &theirs, "the report after the trajectory");
      CHECK(theirs.launches == 0);
      if (memcmp(fused, stepped, sizeof fused) != 0) {
        fprintf(stderr, "%s: the plan's particles differ from ds_guided_sample2()'s\n", names[c]);
        ++failures;
      }
      if (c == 0) {
        /* Refusals: a null report, a struct_size of no layout (nothing written), a null plan. */
        EXPECT_ERROR(ds_sampling_plan_report(plan, NULL), DS_INVALID_ARGUMENT, "report");
        theirs.struct_size = sizeof theirs + 8;
        theirs.final_moves = 77;
        EXPECT_ERROR(ds_sampling_plan_report(plan, &theirs), DS_INVALID_ARGUMENT, "report.struct_size");
        CHECK(theirs.final_moves == 77);
        EXPECT_ERROR(ds_sampling_plan_report(NULL, &mine), DS_INVALID_ARGUMENT, "plan: null handle");
      }
      ds_sampling_plan_destroy(plan);
    }
    {
      /* A plan that is not guided has no guided report. */
      ds_diffusion_options diffusion;
      CHECK_OK(ds_diffusion_options_init(&diffusion, sizeof diffusion));
      diffusion.steps = 3;
      plan = NULL;
      CHECK_OK(ds_sampling_plan_create_diffusion(n, d, &diffusion, DS_MODEL_DENOISER, cpu, &plan));
      CHECK_OK(ds_guided_report2_init(&mine, sizeof mine));
      EXPECT_ERROR(ds_sampling_plan_report(plan, &mine), DS_INVALID_ARGUMENT, "report: only a guided plan");
      ds_sampling_plan_destroy(plan);
    }
  }

  /* Versioned request, bad arguments, null handles. */
  {
    ds_diffusion_options o;
    ds_sampling_plan* plan = NULL;
    ds_plan_request r;
    CHECK_OK(ds_diffusion_options_init(&o, sizeof o));
    o.steps = 4;
    CHECK_OK(ds_sampling_plan_create_diffusion(n, d, &o, DS_MODEL_EPS, cpu, &plan));
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r - 1;
    EXPECT_ERROR(ds_sampling_plan_request(plan, 0, &r), DS_INVALID_ARGUMENT, "struct_size");
    r.struct_size = sizeof r;
    CHECK_OK(ds_sampling_plan_request(plan, 3, &r));
    CHECK(r.index == 3 && r.output == DS_MODEL_EPS && r.answer != NULL && r.at.s > 0);
    EXPECT_ERROR(ds_sampling_plan_request(plan, 4, &r), DS_INVALID_ARGUMENT, "k");
    EXPECT_ERROR(ds_sampling_plan_ask(plan, NULL), DS_INVALID_ARGUMENT, "request");
    {
      const ds_execution gpu = {DS_EXECUTOR_CUDA, NULL};
      EXPECT_ERROR(ds_sampling_plan_reset(plan, NULL, gpu), DS_INVALID_ARGUMENT, "exec");
    }
    EXPECT_ERROR(ds_sampling_plan_samples(plan, NULL), DS_INVALID_ARGUMENT, "samples");
    ds_sampling_plan_destroy(plan);
    /* A failed create leaves *out as it was (seen failing: it was set to NULL first, losing a caller's live plan). */
    plan = (ds_sampling_plan*)&o;
    o.record_every = 1;
    EXPECT_ERROR(ds_sampling_plan_create_diffusion(n, d, &o, DS_MODEL_DENOISER, cpu, &plan), DS_INVALID_ARGUMENT,
                 "record_every");
    o.record_every = 0;
    EXPECT_ERROR(ds_sampling_plan_create_diffusion(n, d, &o, (ds_model_output)7, cpu, &plan), DS_INVALID_ARGUMENT,
                 "output");
    EXPECT_ERROR(ds_sampling_plan_create_diffusion(n, d, &o, DS_MODEL_DENOISER, cpu, NULL), DS_INVALID_ARGUMENT, "out");
    CHECK(plan == (ds_sampling_plan*)&o);
    {
      ds_langevin_options lo;
      CHECK_OK(ds_langevin_options_init(&lo, sizeof lo));
      lo.steps = -1;
      EXPECT_ERROR(ds_sampling_plan_create_langevin(n, d, &lo, DS_MODEL_SCORE, cpu, &plan), DS_INVALID_ARGUMENT,
                   "steps");
      CHECK(plan == (ds_sampling_plan*)&o);
    }
    plan = NULL;
    EXPECT_ERROR(ds_sampling_plan_tell(NULL, cpu), DS_INVALID_ARGUMENT, "plan");
    ds_sampling_plan_destroy(NULL);
  }
  {
    /* A null handle is refused by every call that takes one (seen failing with ds_sampling_plan_accepted() not
     * checking it: a segmentation fault), and calls out of sequence by their status and a message naming the call
     * (seen failing before the checks: ask and tell ran on a plan never reset, a second tell after one ask ran). */
    const int64_t n = 6, d = 2;
    ds_diffusion_options o;
    ds_sampling_plan* plan = NULL;
    ds_plan_request r;
    int64_t asks = 0, position = 0;
    ds_executor where = DS_EXECUTOR_AUTOMATIC;
    float* samples = NULL;
    const int64_t* counter = NULL;
    const int64_t* accepted = NULL;
    ds_guided_outputs outputs;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    memset(&outputs, 0, sizeof outputs);
    outputs.struct_size = sizeof outputs;
    EXPECT_ERROR(ds_sampling_plan_get_info(NULL, &asks, &position, &where), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_ask(NULL, &r), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_request(NULL, 0, &r), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_tell(NULL, cpu), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_reset(NULL, NULL, cpu), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_write_outputs(NULL, &outputs, cpu), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_samples(NULL, &samples), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_position_counter(NULL, &counter), DS_INVALID_ARGUMENT, "plan: null handle");
    EXPECT_ERROR(ds_sampling_plan_accepted(NULL, &accepted), DS_INVALID_ARGUMENT, "plan: null handle");
    CHECK(samples == NULL && counter == NULL && accepted == NULL);

    CHECK_OK(ds_diffusion_options_init(&o, sizeof o));
    o.steps = 3;
    CHECK_OK(ds_sampling_plan_create_diffusion(n, d, &o, DS_MODEL_DENOISER, cpu, &plan));
    EXPECT_ERROR(ds_sampling_plan_ask(plan, &r), DS_INVALID_ARGUMENT, "ask: no trajectory started");
    EXPECT_ERROR(ds_sampling_plan_tell(plan, cpu), DS_INVALID_ARGUMENT, "tell: no trajectory started");
    CHECK_OK(ds_sampling_plan_reset(plan, NULL, cpu));
    CHECK_OK(ds_sampling_plan_ask(plan, &r));
    memset(r.answer, 0, sizeof(float) * (size_t)(n * d));
    CHECK_OK(ds_sampling_plan_tell(plan, cpu));
    EXPECT_ERROR(ds_sampling_plan_tell(plan, cpu), DS_INVALID_ARGUMENT, "tell: ask 1 was not asked");
    CHECK_OK(ds_sampling_plan_get_info(plan, NULL, &position, NULL));
    CHECK(position == 1);
    EXPECT_ERROR(ds_sampling_plan_write_outputs(plan, &outputs, cpu), DS_INVALID_ARGUMENT,
                 "write_outputs: only a guided SMC plan has outputs");
    ds_sampling_plan_destroy(plan);
  }
  ds_mixture_destroy(m);
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_plan: all checks passed\n");
  return 0;
}
