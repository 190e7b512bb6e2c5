/**
 * @file diffsample.h
 * @brief C ABI of libdiffsample, for embedding and foreign-function use (C99; also includable from C++).
 *
 * Every function that can fail returns a ::ds_status. On failure the output arguments are left unchanged and
 * ds_last_error() returns a one-line message naming the offending argument and its value; no C++ exception ever
 * crosses this interface. Handles are opaque pointers owned by the caller and released with their destroy function.
 * Buffers follow the C++ API's rules: row-major float32, device (or managed) memory for the CUDA executor, host (or
 * managed) memory for the CPU executor; calls on the CUDA executor are asynchronous on the given stream.
 *
 * Versioned structs. Every struct the caller fills in and passes by pointer (the `*_options` structs,
 * ::ds_schedule, ::ds_guided_problems, ::ds_guided_outputs) starts with `size_t struct_size`. Initialise it with the
 * struct's init function, passing `sizeof` of the struct as the caller's header declares it, e.g.
 * `ds_langevin_options o; ds_langevin_options_init(&o, sizeof o);`, then change fields. The init function writes the
 * defaults and sets struct_size. Every call that reads such a struct checks struct_size first: a struct_size that
 * is not the size of a layout this library knows (a caller built against another version of this header, or a
 * struct never initialised) fails with DS_INVALID_ARGUMENT and a message naming the struct, the size it got and the
 * size it expects, before anything else is read. New fields are only ever appended, after the last byte of the
 * previous layout, so that a library can keep accepting an older, smaller layout and give its missing fields their
 * defaults. Structs the library writes (the reports, ::ds_diffusion_plan_info, ::ds_particle_report) and
 * ::ds_channel, ::ds_execution and ::ds_schedule_point carry no size: their layout is fixed, and a change to one is
 * a new struct with new functions. Two structs the library writes are versioned all the same, the caller setting
 * struct_size so that they can grow: ::ds_plan_request and ::ds_guided_report2 (the report of ds_guided_sample2(),
 * which grew out of the fixed ::ds_guided_report); the library writes the fields of the layout the caller's size
 * names.
 */
#ifndef DIFFSAMPLE_DIFFSAMPLE_H
#define DIFFSAMPLE_DIFFSAMPLE_H

#include <stddef.h>
#include <stdint.h>

/** Marks the symbols of the C ABI as exported from the shared library (built with hidden visibility). */
#if defined(DIFFSAMPLE_BUILDING)
#define DS_API __attribute__((visibility("default")))
#else
#define DS_API
#endif

/** Marks a C function kept under an older name: the same call as the function its message names. */
#if defined(__GNUC__) || defined(__clang__)
#define DS_DEPRECATED(message) __attribute__((deprecated(message)))
#else
#define DS_DEPRECATED(message)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The CUDA runtime's stream type: cudaStream_t is `struct CUstream_st*`. */
struct CUstream_st;

/** Status code of every fallible call. */
typedef enum ds_status {
  DS_SUCCESS = 0,          /**< the call succeeded */
  DS_INVALID_ARGUMENT = 1, /**< an argument failed validation; nothing was launched */
  DS_OUT_OF_MEMORY = 2,    /**< the request needs more device (or host) memory than is free; nothing was launched */
  DS_CUDA_ERROR = 3,       /**< a CUDA runtime call or kernel launch failed */
  DS_INTERNAL = 4,         /**< any other failure (a bug in the library or an unexpected exception) */
  DS_STATUS_MAX_ENUM = 0x7FFFFFFF /**< not a status: keeps the enum 32-bit and every int value representable */
} ds_status;

/** Which executor runs a call (values match diffsample::executor). */
typedef enum ds_executor {
  DS_EXECUTOR_AUTOMATIC = 0, /**< CUDA when a GPU is present and the sample buffer is device-accessible, else CPU */
  DS_EXECUTOR_CUDA = 1,      /**< fused CUDA kernels; buffers must be device-accessible */
  DS_EXECUTOR_CPU = 2,       /**< OpenMP over chains; buffers must be host-accessible */
  DS_EXECUTOR_MAX_ENUM = 0x7FFFFFFF /**< not an executor: keeps the enum 32-bit */
} ds_executor;

/** What ds_mixture_evaluate() computes per point (values match diffsample::quantity). */
typedef enum ds_quantity {
  DS_LOG_DENSITY = 0, /**< log p_t(x): one float per point */
  DS_SCORE = 1,       /**< grad log p_t(x): d floats per point */
  DS_DENOISER = 2,    /**< E[x0 | x_t = x] (Tweedie): d floats per point */
  DS_QUANTITY_MAX_ENUM = 0x7FFFFFFF /**< not a quantity: keeps the enum 32-bit */
} ds_quantity;

/** How a mixture evaluation runs (values match diffsample::mixture_path; README "Large mixtures: the GEMM path"), and
 *  how the guided samplers apply a dense operator (ds_guided_options.operator_path). */
typedef enum ds_mixture_path {
  DS_MIXTURE_PATH_AUTOMATIC = 0, /**< gemm for isotropic mixtures past the measured size crossover, else direct */
  DS_MIXTURE_PATH_DIRECT = 1,    /**< per point and component (any mixture) */
  DS_MIXTURE_PATH_GEMM = 2,      /**< logits and weighted means as matrix products (isotropic mixtures only) */
  DS_MIXTURE_PATH_MAX_ENUM = 0x7FFFFFFF /**< not a path: keeps the enum 32-bit */
} ds_mixture_path;

/** Langevin update rule (values match diffsample::langevin_method). */
typedef enum ds_langevin_method {
  DS_ULA = 0,      /**< x <- x + gamma g(x) + sqrt(2 gamma) xi */
  DS_MALA = 1,     /**< ULA proposal with a Metropolis-Hastings accept/reject step */
  DS_TAMED_ULA = 2, /**< x <- x + gamma g / (1 + gamma |g|) + sqrt(2 gamma) xi */
  DS_LANGEVIN_METHOD_MAX_ENUM = 0x7FFFFFFF /**< not a method: keeps the enum 32-bit */
} ds_langevin_method;

/** The Gaussian channel x_t = a x0 + s z (0 <= a <= 1e18, 0 <= s <= 1e18, not both 0; a = 0 is N(0, s^2 I)). {1, 0}
 * is the prior itself. */
typedef struct ds_channel {
  double a; /**< signal scale */
  double s; /**< noise scale */
} ds_channel;

/**
 * Where and on which stream a call runs. All-zero ({DS_EXECUTOR_AUTOMATIC, NULL}) is the automatic executor on the
 * legacy default stream. `stream` is a cudaStream_t (the same type, spelled without the CUDA headers).
 */
typedef struct ds_execution {
  ds_executor kind;           /**< requested executor */
  struct CUstream_st* stream; /**< stream of every CUDA launch and copy of the call (ignored on the CPU) */
} ds_execution;

/** Opaque Gaussian mixture with diagonal or isotropic components (diffsample::gaussian_mixture). */
typedef struct ds_mixture ds_mixture;

/** Settings of one Langevin run; initialise with ds_langevin_options_init() before changing fields. */
typedef struct ds_langevin_options {
  size_t struct_size;        /**< sizeof(ds_langevin_options), set by ds_langevin_options_init() */
  ds_langevin_method method; /**< update rule (default DS_MALA) */
  double step_size;          /**< gamma in [FLT_MIN, 1e18] (default 1e-2) */
  int64_t steps;             /**< number of steps, >= 0 (default 1000) */
  ds_channel target;         /**< channel whose p_t the chains target (default the prior {1, 0}) */
  uint64_t seed;             /**< Philox key (default 0) */
  uint64_t first_chain;      /**< id of the call's first chain in the random stream (default 0) */
  /** step index of the call's first step in the random stream: first_step + steps <= 2^30
   *  (diffsample::limits::max_stream_steps) (default 0) */
  uint64_t first_step;
  int64_t record_every;      /**< if > 0, record the state after every record_every-th step (default 0); at most
                                  steps (a larger value, which would record nothing, is refused) */
} ds_langevin_options;

/** What a Langevin run did. */
typedef struct ds_langevin_report {
  ds_executor ran;   /**< executor that ran */
  int register_path; /**< nonzero when d was in the compiled list and chain state stayed in registers */
} ds_langevin_report;

/** Channel family of a noise schedule (values match diffsample::schedule_kind). */
typedef enum ds_schedule_kind {
  DS_SCHEDULE_VP_LINEAR = 0,               /**< variance preserving, linear beta(t), t in [0, 1] */
  DS_SCHEDULE_VP_COSINE = 1,               /**< variance preserving, cosine alpha-bar(t), t in [0, 1] */
  DS_SCHEDULE_VP_TABLE = 2,                /**< variance preserving, the caller's alpha-bar at t = n / N */
  DS_SCHEDULE_VARIANCE_EXPLODING = 3,      /**< a = 1, s = sigma_min (sigma_max / sigma_min)^t, t in [0, 1] */
  DS_SCHEDULE_ORNSTEIN_UHLENBECK = 4,      /**< a = exp(-t), s = sqrt(1 - exp(-2t)), t >= 0 */
  DS_SCHEDULE_LINEAR_INTERPOLANT = 5,      /**< a = 1 - t, s = t, t in [0, 1] */
  DS_SCHEDULE_STOCHASTIC_LOCALIZATION = 6, /**< a = t, s = sqrt(t), t >= 0 */
  DS_SCHEDULE_KIND_MAX_ENUM = 0x7FFFFFFF   /**< not a kind: keeps the enum 32-bit */
} ds_schedule_kind;

/** How the steps + 1 sampling times are spread (values match diffsample::time_grid). */
typedef enum ds_time_grid {
  DS_TIME_GRID_UNIFORM = 0,   /**< t_k = t_start + (t_end - t_start) k / N */
  DS_TIME_GRID_QUADRATIC = 1, /**< dense near t_end, the clean end */
  DS_TIME_GRID_GEOMETRIC = 2, /**< t_k = t_start (t_end / t_start)^(k / N): both ends positive */
  DS_TIME_GRID_CUSTOM = 3,    /**< the caller's times (ds_schedule::times), steps + 1 values in sampling order */
  DS_TIME_GRID_MAX_ENUM = 0x7FFFFFFF /**< not a grid: keeps the enum 32-bit */
} ds_time_grid;

/**
 * A noise schedule and its time grid (diffsample::noise_schedule): initialise with ds_schedule_init(), which fills
 * in the parameters and the grid of the kind's factory with its default arguments, then change fields. Only the
 * fields of the chosen kind are read: a parameter of another kind (beta_min, beta_max, cosine_offset, alpha_bar,
 * sigma_min, sigma_max) set away from the default ds_schedule_init() gave it is refused with DS_INVALID_ARGUMENT,
 * naming the field and the kind. The arrays are borrowed for the duration of each call that reads the schedule.
 */
typedef struct ds_schedule {
  size_t struct_size;      /**< sizeof(ds_schedule), set by ds_schedule_init() */
  ds_schedule_kind kind;   /**< channel family */
  double beta_min;         /**< vp_linear: beta(0) (default 0.1) */
  double beta_max;         /**< vp_linear: beta(1) (default 20) */
  double cosine_offset;    /**< vp_cosine: offset of theta(t) (default 0.008) */
  const double* alpha_bar; /**< vp_table: alpha-bar at t = n / N for n = 1..N, host memory (default NULL) */
  int64_t alpha_bar_count; /**< vp_table: N, the number of entries of alpha_bar (default 0) */
  double sigma_min;        /**< variance_exploding: s(0) (default 0.01) */
  double sigma_max;        /**< variance_exploding: s(1), <= 1e18 (default 50) */
  ds_time_grid grid;       /**< how the sampling times are spread (default: the kind's) */
  double t_start;          /**< first (noisiest) time of the grid; ornstein_uhlenbeck: the horizon (default 5) */
  double t_end;            /**< last (cleanest) time of the grid (defaults of t_start, t_end: the kind's factory) */
  const double* times;     /**< DS_TIME_GRID_CUSTOM: steps + 1 times in sampling order, host memory (default NULL;
                                refused with another grid, which places its own times) */
  int64_t times_count;     /**< number of entries of times (default 0) */
} ds_schedule;

/** One point of a schedule's grid: the channel and its time derivatives (diffsample::schedule_point). */
typedef struct ds_schedule_point {
  double t;     /**< time */
  double a;     /**< signal scale alpha(t) */
  double s;     /**< noise scale beta(t) */
  double da_dt; /**< d alpha / dt */
  double ds_dt; /**< d beta / dt (0 where s = 0) */
} ds_schedule_point;

/** Reverse-diffusion update rule (values match diffsample::diffusion_sampler; formulas in the README). */
typedef enum ds_diffusion_sampler {
  DS_DIFFUSION_DDPM = 0,                    /**< DDPM ancestral step */
  DS_DIFFUSION_DDIM = 1,                    /**< DDIM with stochasticity eta */
  DS_DIFFUSION_REVERSE_SDE = 2,             /**< Euler-Maruyama on the reverse-time SDE */
  DS_DIFFUSION_ODE_EULER = 3,               /**< Euler on the probability-flow ODE */
  DS_DIFFUSION_ODE_HEUN = 4,                /**< Heun on the probability-flow ODE (fused only) */
  DS_DIFFUSION_STOCHASTIC_LOCALIZATION = 5, /**< stochastic localization (schedule stochastic_localization) */
  DS_DIFFUSION_WALK_JUMP = 6,               /**< ULA on the smoothed density, then the jump E[x0 | y] */
  DS_DIFFUSION_SEQUENTIAL_MEASUREMENTS = 7, /**< sequential multi-measurement sampling (fused only) */
  DS_DIFFUSION_SAMPLER_MAX_ENUM = 0x7FFFFFFF /**< not a sampler: keeps the enum 32-bit */
} ds_diffusion_sampler;

/** What a caller's model writes into the model buffer of a ::ds_diffusion_plan (values match diffsample::model_output). */
typedef enum ds_model_output {
  DS_MODEL_SCORE = 0,    /**< grad log p_t(x) */
  DS_MODEL_DENOISER = 1, /**< x0 prediction E[x0 | x_t = x] */
  DS_MODEL_EPS = 2,      /**< noise prediction (x - a x0) / s */
  DS_MODEL_VELOCITY = 3, /**< probability-flow velocity dx/dt */
  DS_MODEL_OUTPUT_MAX_ENUM = 0x7FFFFFFF /**< not an output: keeps the enum 32-bit */
} ds_model_output;

/**
 * Settings of one reverse-diffusion run (diffsample::diffusion_options); initialise with ds_diffusion_options_init()
 * before changing fields. Chain i uses the Philox stream (seed, first_chain + i, k). A field the sampler does not
 * read keeps the value ds_diffusion_options_init() writes: another value is DS_INVALID_ARGUMENT naming the field and
 * the sampler (README "Options a method does not read").
 */
typedef struct ds_diffusion_options {
  size_t struct_size;           /**< sizeof(ds_diffusion_options), set by ds_diffusion_options_init() */
  ds_diffusion_sampler sampler; /**< update rule (default DS_DIFFUSION_DDPM) */
  ds_schedule schedule;         /**< channel and time grid (default vp_linear, uniform from 1 to 0) */
  int64_t steps;                /**< grid steps; Langevin steps for walk_jump, per measurement for SMS (default 100) */
  double eta;                   /**< DDIM stochasticity in [0, 1] (default 0) */
  double sigma;                 /**< walk_jump and SMS: measurement noise sigma > 0 (default 1) */
  double step_size;             /**< walk_jump and SMS: Langevin step gamma > 0 (default 0.1) */
  int64_t measurements;         /**< SMS: number of measurements M >= 1 (default 4) */
  int final_denoise;            /**< nonzero: replace x by the denoiser at the last channel (default 0) */
  int draw_initial;             /**< nonzero: draw the initial state, ignoring x's contents (default 1) */
  uint64_t seed;                /**< Philox key (default 0) */
  uint64_t first_chain;         /**< id of the call's first chain in the random stream (default 0) */
  int64_t record_every;         /**< if > 0, record the state after every record_every-th step (default 0); at
                                     most the total steps (steps, or steps x measurements for SMS: a larger value,
                                     which would record nothing, is refused) */
} ds_diffusion_options;

/** What a reverse-diffusion run did. */
typedef struct ds_diffusion_report {
  ds_executor ran;     /**< executor that ran */
  int register_path;   /**< nonzero when d was in the compiled list and chain state stayed in registers */
  int64_t total_steps; /**< steps run per chain (steps x measurements for SMS) */
} ds_diffusion_report;

/** Opaque stepwise sampler for a caller's model (diffsample::diffusion_plan). */
typedef struct ds_diffusion_plan ds_diffusion_plan;

/** What a ::ds_diffusion_plan was built for, from ds_diffusion_plan_get_info(). */
typedef struct ds_diffusion_plan_info {
  int64_t steps;                /**< number of ds_diffusion_plan_step_on() calls of one trajectory */
  int64_t n;                    /**< batch size: x and the model buffer hold n x dim floats */
  int64_t dim;                  /**< dimension d */
  ds_executor where;            /**< executor the plan runs on (never DS_EXECUTOR_AUTOMATIC) */
  ds_model_output model_output; /**< what the model buffer must hold at each step */
  int needs_final_jump;         /**< nonzero when ds_diffusion_plan_finish_on() must follow the last step */
} ds_diffusion_plan_info;

/** Resampling scheme (values match diffsample::resampling_scheme). */
typedef enum ds_resampling_scheme {
  DS_RESAMPLING_MULTINOMIAL = 0, /**< N independent draws from the weights */
  DS_RESAMPLING_STRATIFIED = 1,  /**< one uniform draw in each of the N strata */
  DS_RESAMPLING_SYSTEMATIC = 2,  /**< one uniform shared by the N strata of a problem */
  DS_RESAMPLING_RESIDUAL = 3,    /**< floor(N w_i) copies, multinomial on the residuals */
  DS_RESAMPLING_METROPOLIS = 4,  /**< collective-free Metropolis chains (biased for finite steps) */
  DS_RESAMPLING_REJECTION = 5,   /**< collective-free rejection sampler (unbiased) */
  DS_RESAMPLING_SCHEME_MAX_ENUM = 0x7FFFFFFF /**< not a scheme: keeps the enum 32-bit */
} ds_resampling_scheme;

/** How and when to resample (diffsample::resampling_options); initialise with ds_resampling_options_init().
 * metropolis_steps other than 64 with another scheme than metropolis is DS_INVALID_ARGUMENT (it is not read). */
typedef struct ds_resampling_options {
  size_t struct_size;          /**< sizeof(ds_resampling_options), set by ds_resampling_options_init() */
  ds_resampling_scheme scheme; /**< the scheme (default DS_RESAMPLING_SYSTEMATIC) */
  double ess_threshold;        /**< resample a problem when its ESS < ess_threshold N; 0 never (default 0.5) */
  uint64_t seed;               /**< Philox seed; particle j of problem b draws from (seed, b N + j, step) (default 0) */
  /** step of the Philox stream, below 2^30 (diffsample::limits::max_stream_steps): the SMC iteration index
   *  (default 0) */
  uint64_t step;
  int metropolis_steps;        /**< Metropolis iterations per particle (scheme metropolis only), 1..2^20 (diffsample::limits::max_inner_steps) (default 64) */
} ds_resampling_options;

/** Per-problem result of ds_resample(); the same layout as diffsample::particle_report. */
typedef struct ds_particle_report {
  double ess;                      /**< (sum w)^2 / sum w^2 in FP64 (0 when failed), in [1, N] */
  double log_normaliser_increment; /**< logsumexp(log w) - log N (-inf when failed) */
  double log_sum_exp;              /**< logsumexp(log w), max-shifted (-inf when failed) */
  int64_t nan_count;               /**< log-weights that were NaN or +inf, treated as -inf */
  int32_t failed;                  /**< 1 when every weight is zero */
  int32_t resampled;               /**< 1 when this problem is resampled (ESS below the threshold): its ancestors are
                                        drawn, and written when an ancestors output is given; 0 when identity */
} ds_particle_report;

/** Guided posterior sampler (values match diffsample::guided_sampler; formulas in the README). */
typedef enum ds_guided_sampler {
  DS_GUIDED_SMC = 0,   /**< Monte Carlo guided diffusion: a particle filter with a log-evidence estimate */
  DS_GUIDED_DPS = 1,   /**< diffusion posterior sampling (biased baseline) */
  DS_GUIDED_PIGDM = 2, /**< pseudo-inverse guided diffusion (biased baseline) */
  DS_GUIDED_DIFFPIR = 3, /**< DiffPIR: plug-and-play diffusion with a proximal data step (biased baseline) */
  DS_GUIDED_SKROCK = 4,  /**< SKRock: stabilised Runge-Kutta-Chebyshev Langevin on the posterior */
  DS_GUIDED_TMPD = 5,  /**< Tweedie moment projected diffusion (biased baseline) */
  DS_GUIDED_DDRM = 6,  /**< denoising diffusion restoration on the SVD of A (biased baseline) */
  DS_GUIDED_DCPS = 7,  /**< divide-and-conquer posterior sampling (tamed ULA and variational kernels per block) */
  DS_GUIDED_SAMPLER_MAX_ENUM = 0x7FFFFFFF /**< not a sampler: keeps the enum 32-bit */
} ds_guided_sampler;

/** The guidance step of DS_GUIDED_DPS (values match diffsample::dps_step_form). */
typedef enum ds_dps_step {
  DS_DPS_STEP_LIKELIHOOD = 0, /**< the likelihood score J A^T (y - A m) / sigma_y^2 in the DDPM mean */
  DS_DPS_STEP_NORMALISED = 1, /**< as published: zeta J A^T (y - A m) / |y - A m|, zeta = guidance_scale */
  DS_DPS_STEP_MAX_ENUM = 0x7FFFFFFF /**< not a step: keeps the enum 32-bit */
} ds_dps_step;

/** The intermediate potentials of DS_GUIDED_SMC (values match diffsample::guided_potentials). */
typedef enum ds_guided_potentials {
  DS_POTENTIALS_LINEAR = 0, /**< N(a_k y; A x, a_k^2 sigma_y^2 + s_k^2 c): exact predictive, exact mutation */
  DS_POTENTIALS_MOMENT = 1, /**< N(y; A m(x), sigma_y^2 I + A Cov(x0|x) A^T) from the denoiser and its JVPs (d_y <= 8) */
  DS_POTENTIALS_TWISTED = 2, /**< the moment potentials with a proposal moved along their gradient (d_y <= 8) */
  DS_POTENTIALS_AUTOMATIC = 3, /**< the default: twisted with start_correction and multistep_kernel when d_y <= 8 and
                                    the grid ends at s = 0, else linear; linear in a sampling plan (README: "Default
                                    potentials") */
  DS_GUIDED_POTENTIALS_MAX_ENUM = 0x7FFFFFFF /**< not a value: keeps the enum 32-bit */
} ds_guided_potentials;

/** Where the guided samplers place their grid's times (values match diffsample::guided_grid). */
typedef enum ds_guided_grid {
  DS_GUIDED_GRID_SCHEDULE = 0,       /**< the schedule's own grid (uniform in t by default) */
  DS_GUIDED_GRID_SQRT_ALPHA_BAR = 1, /**< uniform in the signal scale a = sqrt(alpha-bar) */
  DS_GUIDED_GRID_SPECTRAL = 2,       /**< sqrt_alpha_bar plus a point where s / a = sigma_y / S_i per singular value */
  DS_GUIDED_GRID_NOISE_RATIO = 3,    /**< uniform in (s / a)^(1 / 7) to the uniform grid's last point before t_end */
  DS_GUIDED_GRID_MAX_ENUM = 0x7FFFFFFF /**< not a value: keeps the enum 32-bit */
} ds_guided_grid;

/**
 * B linear observations y_b = A_b x + sigma_{y,b} z of one prior with a dense A (diffsample::guided_problems); host
 * arrays, read during the call only. Initialise with ds_guided_problems_init().
 */
typedef struct ds_guided_problems {
  size_t struct_size;    /**< sizeof(ds_guided_problems), set by ds_guided_problems_init() */
  int64_t problems;      /**< B >= 1 (default 1) */
  /** observation dimension, 1 <= d_y <= 1024 (diffsample::limits::max_guided_d_y) (default 1) */
  int64_t d_y;
  const double* A;       /**< d_y x d_x (shared) or B x d_y x d_x, row-major (default NULL) */
  int64_t A_count;       /**< entries of A: d_y d_x or B d_y d_x (default 0) */
  const double* y;       /**< B x d_y observations (default NULL) */
  const double* sigma_y; /**< 1 value (shared) or B values, each in [1e-18, 1e18] (default NULL) */
  int64_t sigma_y_count; /**< entries of sigma_y: 1 or B (default 0) */
  /** Instead of A (leave A NULL then): mask (inpainting) operators, observed value i of a problem being
   *  gains[i] x[mask[i]]. d_y coordinate indices shared by every problem, or B x d_y (one row per problem), each
   *  in [0, d_x) and distinct within a row. Run as a gather/scatter with diagonal tables (default NULL). */
  const int64_t* mask;
  int64_t mask_count;      /**< entries of mask: d_y or B d_y (default 0) */
  const double* mask_gains; /**< mask_count gains, or NULL for all ones (default NULL; only with a mask) */
  /* Appended in the second layout (a caller of the first layout gets no SVD operators). */
  /** Instead of A or mask: operators given by their thin SVD A = U diag(S) V^T of rank svd_rank, one shared by
   *  every problem (svd_count 1) or one per problem (svd_count B). The samplers run on the projected
   *  svd_rank-dimensional problem when svd_rank < d_y (diffsample::guided_problems::operators). */
  int64_t svd_count;       /**< operators: 0 (none, default), 1 or B; with 0 the four fields below keep 0 / NULL */
  int64_t svd_rank;        /**< r, 1 <= r <= min(d_y, d_x) */
  const double* svd_U;     /**< svd_count x d_y x r, orthonormal columns */
  const double* svd_S;     /**< svd_count x r singular values, >= 0 */
  const double* svd_V;     /**< svd_count x d_x x r, orthonormal columns */
} ds_guided_problems;

/** Settings of one guided run (diffsample::guided_options); initialise with ds_guided_options_init(). A field the
 * sampler does not read keeps the value ds_guided_options_init() writes: another value is DS_INVALID_ARGUMENT naming
 * the field and the sampler (README "Options a method does not read"). */
typedef struct ds_guided_options {
  size_t struct_size;        /**< sizeof(ds_guided_options), set by ds_guided_options_init() */
  ds_guided_sampler sampler; /**< posterior sampler (default DS_GUIDED_SMC) */
  ds_schedule schedule;      /**< channel and time grid (default vp_linear) */
  int64_t steps;             /**< transitions, 1..2^24 (diffsample::limits::max_steps) (default 100) */
  int ddim;                  /**< nonzero: DDIM backward kernel with stochasticity eta instead of DDPM (default 0) */
  double eta;                /**< DDIM stochasticity in [0, 1] (default 1) */
  int64_t particles;         /**< N per problem, 1..2^24 (diffsample::limits::max_particles) (default 1024) */
  double potential_spread;   /**< SMC: c of the intermediate potentials; 0 uses 4 trace(A A^T) / d_y (default 0) */
  ds_resampling_options resampling; /**< SMC: scheme and ESS threshold (default -1, automatic: 0.2 where the automatic
                                         potentials resolve to twisted, else 0.5); its seed and step are set by the
                                         sampler */
  int final_resample;        /**< SMC: nonzero draws equally weighted samples after the last step (default 1) */
  double guidance_scale;     /**< dps, pigdm and tmpd: multiplier of the guidance term, >= 0 (default 1) */
  uint64_t seed;             /**< Philox key (default 0) */
  /* Appended in the second layout (a caller of the first layout gets the defaults below). */
  ds_dps_step dps_step;      /**< dps: guidance step (default DS_DPS_STEP_LIKELIHOOD) */
  double diffpir_zeta;       /**< diffpir: share of fresh noise in the re-noising, in [0, 1] (default 0.1) */
  double diffpir_lambda;     /**< diffpir: lambda of rho_k = lambda sigma_y^2 a_k^2 / s_k^2, proximal weight rho_k / 2
                                  (DeepInverse's lambda_), > 0 (default 7) */
  /** skrock: stages per iteration, 2..200 (diffsample::limits::max_skrock_stages) (default 10) */
  int64_t skrock_stages;
  double skrock_eta;         /**< skrock: damping, in (0, 1] (default 0.05) */
  double skrock_step_fraction; /**< skrock: step as a fraction of the stability bound, in (0, 1] (default 0.005) */
  /* Appended in the third layout (a caller of an earlier one keeps their defaults): ddrm and dcps. */
  double ddrm_eta;           /**< ddrm: eta in [0, 1] (default 0.85) */
  double ddrm_eta_b;         /**< ddrm: eta_b in [0, 1] (default 1) */
  int64_t dcps_blocks;          /**< dcps: blocks L of the time grid, 1..steps (default 4) */
  /** dcps: tamed ULA steps M per block, 0..2^20 (diffsample::limits::max_inner_steps) (default 50) */
  int64_t dcps_langevin_steps;
  double dcps_langevin_step;    /**< dcps: Langevin step gamma > 0 (default 1e-3) */
  /** dcps: normalised gradient steps per variational fit, 0..64 (diffsample::limits::max_dcps_gradient_steps)
   *  (default 2) */
  int64_t dcps_gradient_steps;
  double dcps_learning_rate;    /**< dcps: gradient step length in units of the kernel's scale, >= 0 (default 0.1) */
  /* Appended in the fourth layout (a caller of an earlier one gets the default). */
  ds_guided_potentials potentials; /**< smc: intermediate potentials (default DS_POTENTIALS_AUTOMATIC) */
  /* Appended in the fifth layout, inside the fourth's tail padding (the size is the same; the init function writes
     the default there). */
  ds_guided_grid grid;       /**< all samplers but skrock: placement of the grid's times (default DS_GUIDED_GRID_SCHEDULE) */
  /* Appended in the sixth layout (a caller of an earlier one gets the default). */
  int start_correction;      /**< SMC: nonzero weights the starting draws by p_0(x) / N(x; 0, s_0^2 I), p_0 the prior
                                  diffused to the first grid point (diffsample::guided_options::start_correction; linear
                                  potentials only, not in a plan; default 0) */
  /* Appended in the seventh layout (a caller of an earlier one gets the default). */
  double skrock_lipschitz;   /**< skrock: Lipschitz bound of the prior's score, >= 0; 0 takes the mixture's (default 0);
                                  a SKRock plan needs it > 0 */
  /* Appended in the eighth layout (a caller of an earlier one gets the default). */
  int dcps_bridge_variance;  /**< dcps: nonzero adds the bridge variance to the block potentials' covariance,
                                  v_j A A^T + sigma_y^2 I, instead of sigma_y^2 I (the published choice)
                                  (diffsample::guided_options::dcps_bridge_variance; default 0) */
  /* Appended in the ninth layout, inside the eighth's tail padding (the size is the same; the init function writes
     the default there). */
  int dcps_absolute_step;    /**< dcps: nonzero takes dcps_learning_rate as the length of each normalised gradient
                                  step (the published form, learning rate 1) instead of a multiple of the kernel's
                                  scale (diffsample::guided_options::dcps_absolute_step; default 0) */
  /* Appended in the tenth layout (a caller of an earlier one gets the default). */
  ds_mixture_path operator_path; /**< dps, pigdm (either executor) and tmpd (CPU executor) with a dense A: its products
                                      A m and A^T u as matrix products over all particles per step (GEMM), or
                                      particle by particle (DIRECT); AUTOMATIC follows the size rule
                                      (diffsample::guided_options::operator_path; default DS_MIXTURE_PATH_AUTOMATIC);
                                      masks and SVD operators run direct whatever it says; the other samplers
                                      do not read it and refuse a value other than AUTOMATIC;
                                      a guided plan runs the path ds_guided_sample() resolves */
  /* Appended in the eleventh layout (a caller of an earlier one gets the defaults). */
  int64_t final_moves;       /**< SMC: preconditioned MALA steps per sample on p(x) p(y | x) after the final resampling,
                                  0..2^20, or -1 (default, automatic): 4 where DS_POTENTIALS_AUTOMATIC resolves to
                                  twisted, 20 where it resolves to linear on a grid ending at s = 0 (d_y > 8), and the
                                  moves run (ds_guided_sample with final_resample, the distributed runs), else 0
                                  (diffsample::guided_options::final_moves; in a plan -1 resolves to 0, and K > 0
                                  needs final_move_curvature > 0: 1 + 2 K more asks) */
  double final_move_step;    /**< SMC: their step in the preconditioner's units, >= 0; 0 takes 2 d_x^(-1/3)
                                  (diffsample::guided_options::final_move_step; default 0) */
  /* Appended in the twelfth layout (a caller of an earlier one gets the default). */
  int multistep_kernel;      /**< smc: nonzero takes the second-order multistep backward kernel, whose mean extrapolates
                                  the denoiser from the particle's previous output
                                  (diffsample::guided_options::multistep_kernel; also in a plan and a distributed
                                  run; default 0) */
  /* Appended in the thirteenth layout (a caller of an earlier one gets the default). */
  double final_move_curvature; /**< SMC: lambda of the final moves' preconditioner, the prior's largest curvature,
                                    finite, >= 0 and <= 1e30; 0 takes the mixture's max_k 1 / min_j v_kj; a plan with
                                    final moves needs it > 0 (diffsample::guided_options::final_move_curvature;
                                    default 0) */
} ds_guided_options;

/**
 * Output buffers of ds_guided_sample() (diffsample::guided_outputs): device-accessible on the CUDA executor,
 * host-accessible on the CPU one; NULL to skip. Initialise with ds_guided_outputs_init() (all NULL). No two of them,
 * nor one and the workspace, may overlap (DS_INVALID_ARGUMENT). log_weights, log_normaliser, ess_trace and
 * resample_count are written by smc only: with another sampler each must be NULL (DS_INVALID_ARGUMENT naming the
 * first given).
 */
typedef struct ds_guided_outputs {
  size_t struct_size;       /**< sizeof(ds_guided_outputs), set by ds_guided_outputs_init() */
  float* particles;         /**< B x N x d_x final particles (weighted by log_weights for smc) */
  float* log_weights;       /**< B x N final unnormalised log-weights (smc) */
  float* samples;           /**< B x N x d_x equally weighted samples (smc with final_resample; the others) */
  double* log_normaliser;   /**< B estimates of log p(y_b) (smc) */
  float* ess_trace;         /**< B x (steps + 1): ESS at the start and after each transition (smc) */
  int32_t* resample_count;  /**< B resamplings per problem, final resample excluded (smc) */
} ds_guided_outputs;

/** What a guided run did (ds_guided_sample()); fixed layout. ::ds_guided_report2 adds the settings the run resolved. */
typedef struct ds_guided_report {
  ds_executor ran;  /**< executor that ran */
  int64_t launches; /**< kernel launches (or CPU loops) issued */
} ds_guided_report;

/**
 * What a guided run did, with the settings it resolved (diffsample::guided_report), from ds_guided_sample2().
 * Versioned although the library writes it: initialise it with ds_guided_report2_init() (or set struct_size =
 * sizeof(ds_guided_report2)); the library checks struct_size before the run and writes only the fields of the layout
 * that size names, so that later fields can be appended.
 */
typedef struct ds_guided_report2 {
  size_t struct_size;   /**< sizeof(ds_guided_report2), set by ds_guided_report2_init() */
  ds_executor ran;      /**< executor that ran */
  int64_t launches;     /**< kernel launches (or CPU loops) issued */
  /** how a dense operator's A and A^T reached the particles: DS_MIXTURE_PATH_GEMM when the run applied them as
   *  matrix products over all particles per step, else DS_MIXTURE_PATH_DIRECT
   *  (diffsample::guided_report::operator_path) */
  ds_mixture_path operator_path;
  /** smc: the potentials that ran, DS_POTENTIALS_AUTOMATIC resolved (twisted or linear); DS_POTENTIALS_LINEAR for
   *  the other samplers */
  ds_guided_potentials potentials;
  int start_correction; /**< smc: 1 when the start correction ran (asked for, or turned on by automatic potentials
                             resolved to twisted), else 0; 0 for the other samplers */
  int multistep_kernel; /**< smc: 1 when the multistep backward kernel ran (likewise), else 0; 0 for the others */
  int64_t final_moves;  /**< smc: the final MALA moves that ran per sample (options.final_moves with -1 resolved; 0
                             without outputs.samples); 0 for the other samplers */
  /** smc: the ESS threshold that ran (options.resampling.ess_threshold with -1 resolved: 0.2 with the automatic
   *  potentials resolved to twisted, else 0.5; diffsample::guided_report::ess_threshold); 0 for the other samplers.
   *  Second layout: a caller of the first (sizeof up to final_moves) gets the fields before it. */
  double ess_threshold;
} ds_guided_report2;

/** Opaque exact posterior mixture of a mixture prior under a dense linear-Gaussian observation. */
typedef struct ds_posterior ds_posterior;

/* --- library ---------------------------------------------------------------------------------------------- */

/** Library version string, "major.minor.patch" (static storage). */
DS_API const char* ds_version(void);

/** 1 when the CUDA runtime finds at least one device, else 0. Computed once and cached. */
DS_API int ds_cuda_available(void);

/**
 * Why no GPU is used: the CUDA runtime's message, or "" when a device was found. The string is owned by the
 * calling thread and valid until its next call of this function.
 */
DS_API const char* ds_cuda_unavailable_reason(void);

/**
 * Message of the last failed call on the calling thread, or "" when the last call succeeded. Every function that
 * returns a ::ds_status sets it (clearing it on success). The string is owned by the thread and valid until its
 * next call into the library.
 */
DS_API const char* ds_last_error(void);

/** Threads of the CPU executor's pool (diffsample::cpu_threads). */
DS_API int ds_cpu_threads(void);

/** "success", "invalid_argument", "out_of_memory", "cuda_error", "internal" (or "unknown"). Static storage. */
DS_API const char* ds_status_name(ds_status status);

/** "automatic", "cuda" or "cpu" (or "unknown"). Static storage. */
DS_API const char* ds_executor_name(ds_executor executor);

/**
 * Parses "auto"/"automatic", "cuda"/"gpu" or "cpu" into @p out.
 * @return DS_INVALID_ARGUMENT for a null pointer or an unknown name
 */
DS_API ds_status ds_parse_executor(const char* name, ds_executor* out);

/* --- Gaussian mixtures ------------------------------------------------------------------------------------ */

/**
 * Creates a mixture of K components in dimension d. Host arrays, copied; when a GPU is present the FP32
 * parameters are copied to the device synchronously.
 * @param dim             d >= 1
 * @param components      K >= 1
 * @param weights         K positive finite weights (normalised internally)
 * @param means           K x d row-major component means, each within [-1e18, 1e18] (the FP32 kernels square
 *                        coordinate differences)
 * @param variances       variances_count values, each in [1e-36, 1e36] (a variance and its inverse are normal FP32
 *                        numbers)
 * @param variances_count K (isotropic components) or K x d (diagonal components); checked before @p variances is
 *                        read
 * @param out             receives the new handle (release with ds_mixture_destroy())
 */
DS_API ds_status ds_mixture_create(int64_t dim, int64_t components, const double* weights, const double* means,
                                   const double* variances, int64_t variances_count, ds_mixture** out);

/**
 * Creates the grid mixture: K = grid^2 isotropic components whose means lie on a grid x grid lattice with the given
 * spacing in the first two coordinates, repeated across higher ones (see diffsample::grid_mixture).
 * @param weights        grid^2 weights, or NULL (with weights_count 0) for equal weights
 * @param weights_count  number of entries of @p weights
 * @param out            receives the new handle (release with ds_mixture_destroy())
 */
DS_API ds_status ds_grid_mixture_create(int64_t dim, int grid, double spacing, double variance, const double* weights,
                                        int64_t weights_count, ds_mixture** out);

/** Releases a mixture (synchronous: frees its device copy). NULL is ignored. */
DS_API void ds_mixture_destroy(ds_mixture* mixture);

/**
 * Reports the number of components K and the dimension d; either output pointer may be NULL.
 */
DS_API ds_status ds_mixture_shape(const ds_mixture* mixture, int64_t* components, int64_t* dim);

/**
 * Evaluates @p what at n points x (n x d) of channel @p ch, in FP32. @p out holds n floats (DS_LOG_DENSITY) or
 * n x d floats (DS_SCORE, DS_DENOISER) and may not overlap @p x, in place included (DS_INVALID_ARGUMENT).
 * Asynchronous on the CUDA executor.
 * @param ran  receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_evaluate(const ds_mixture* mixture, ds_quantity what, const float* x, int64_t n,
                                     ds_channel ch, float* out, ds_execution exec, ds_executor* ran);

/**
 * Jacobian of the denoiser times v, per point: (d E[x0 | x_t = x] / dx) v. x, v and out are n x d; out may overlap
 * neither x nor v (DS_INVALID_ARGUMENT). Asynchronous on the CUDA executor.
 * @param ran  receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_denoiser_jvp(const ds_mixture* mixture, const float* x, const float* v, int64_t n,
                                         ds_channel ch, float* out, ds_execution exec, ds_executor* ran);

/** Options of ds_mixture_evaluate_with() and ds_mixture_denoiser_jvp_with() (diffsample::evaluate_options). With
 * path DS_MIXTURE_PATH_DIRECT, which reads none of the gemm path's settings, allow_tf32, component_chunk and
 * point_block keep the values ds_evaluate_options_init() writes: another value is DS_INVALID_ARGUMENT naming the
 * field (README "Options a method does not read"). */
typedef struct ds_evaluate_options {
  size_t struct_size;     /**< sizeof(ds_evaluate_options), set by ds_evaluate_options_init() */
  ds_mixture_path path;   /**< which path (default DS_MIXTURE_PATH_AUTOMATIC) */
  int allow_tf32;         /**< CUDA gemm path: let cuBLAS round the logits' operands to TF32 (default 0) */
  int64_t component_chunk; /**< components per chunk of the gemm path (0: 512) */
  int64_t point_block;    /**< points per block of the gemm path (0: 128 on the CPU; per CUDA pass 8192 .. 65536, sized to 256 MiB) */
} ds_evaluate_options;

/**
 * Writes the default evaluation options (automatic path, no TF32, default chunk and block) and sets struct_size.
 * @return DS_INVALID_ARGUMENT for a null pointer or a struct_size of no known layout (nothing written then)
 */
DS_API ds_status ds_evaluate_options_init(ds_evaluate_options* options, size_t struct_size);

/**
 * ds_mixture_evaluate() with options: the caller may force the direct or the gemm path (gemm on a diagonal mixture
 * is DS_INVALID_ARGUMENT) and learns which ran. Asynchronous on the CUDA executor.
 * @param options          from ds_evaluate_options_init(), or NULL for the defaults
 * @param workspace        device workspace of ds_mixture_evaluate_workspace_bytes() bytes on the CUDA gemm path
 *                         (NULL: the call allocates and synchronises), ignored otherwise
 * @param workspace_bytes  bytes at @p workspace
 * @param ran              receives the executor that ran (may be NULL)
 * @param path_ran         receives the path that ran, DS_MIXTURE_PATH_DIRECT or DS_MIXTURE_PATH_GEMM (may be NULL)
 */
DS_API ds_status ds_mixture_evaluate_with(const ds_mixture* mixture, float* out, int64_t n, const float* x,
                                          ds_channel ch, ds_quantity what, const ds_evaluate_options* options,
                                          ds_execution exec, void* workspace, size_t workspace_bytes,
                                          ds_executor* ran, ds_mixture_path* path_ran);

/**
 * Bytes of device workspace ds_mixture_evaluate_with() needs for n points (0 when the call would not run the CUDA
 * gemm path).
 * @param options  as for ds_mixture_evaluate_with(), or NULL for the defaults
 */
DS_API ds_status ds_mixture_evaluate_workspace_bytes(const ds_mixture* mixture, int64_t n, ds_quantity what,
                                                     const ds_evaluate_options* options, ds_execution exec,
                                                     size_t* bytes);

/**
 * ds_mixture_denoiser_jvp() with options and the path that ran (the gemm path's JVP runs on the CPU executor;
 * forcing it on the CUDA executor is DS_INVALID_ARGUMENT). Asynchronous on the CUDA executor.
 * @param options   from ds_evaluate_options_init(), or NULL for the defaults
 * @param ran       receives the executor that ran (may be NULL)
 * @param path_ran  receives the path that ran (may be NULL)
 */
DS_API ds_status ds_mixture_denoiser_jvp_with(const ds_mixture* mixture, float* out, int64_t n, const float* x,
                                              const float* v, ds_channel ch, const ds_evaluate_options* options,
                                              ds_execution exec, ds_executor* ran, ds_mixture_path* path_ran);

/**
 * The path ds_mixture_evaluate_with() would run for n points on executor @p where (DS_EXECUTOR_CPU or
 * DS_EXECUTOR_CUDA), without running it.
 * @param options  as for ds_mixture_evaluate_with(), or NULL for the defaults
 * @param out      receives DS_MIXTURE_PATH_DIRECT or DS_MIXTURE_PATH_GEMM
 */
DS_API ds_status ds_mixture_chosen_path(const ds_mixture* mixture, int64_t n, ds_quantity what,
                                        const ds_evaluate_options* options, ds_executor where,
                                        ds_mixture_path* out);

/**
 * Builds the gemm path's tables of the mixture for executor @p where ahead of its first gemm-path call
 * (diffsample::gaussian_mixture::prepare_gemm): on DS_EXECUTOR_CUDA also the mixture's cuBLAS handle and the current
 * device's cuBLAS handle of the guided samplers' operator products. Allocates and synchronises; thread-safe;
 * idempotent (a second call does nothing). Call it before capturing gemm-path calls (ds_mixture_evaluate_with(),
 * ds_mixture_denoiser_jvp_with()) in a CUDA graph: none of this can be captured (ds_guided_sample() itself cannot
 * be captured: it copies per-call host tables, and fails with DS_INVALID_ARGUMENT under capture), and a first gemm-path call of the mixture on the CUDA executor while its stream is being captured
 * fails with DS_INVALID_ARGUMENT, its message naming the C++ form of this call, prepare_gemm(executor::cuda).
 * @param where  DS_EXECUTOR_CPU or DS_EXECUTOR_CUDA: DS_INVALID_ARGUMENT naming @p where for DS_EXECUTOR_AUTOMATIC,
 *               a value outside the enum, and DS_EXECUTOR_CUDA when no GPU is present
 */
DS_API ds_status ds_mixture_prepare_gemm(const ds_mixture* mixture, ds_executor where);

/**
 * Exact samples of p_t: point i draws from the Philox stream (seed, first_index + i, 0). Asynchronous on the CUDA
 * executor.
 * @param out     n x d floats
 * @param labels  n component indices, or NULL to skip; not overlapping @p out
 * @param ran     receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_sample(const ds_mixture* mixture, float* out, int64_t n, ds_channel ch, uint64_t seed,
                                   int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran);

/* --- Langevin --------------------------------------------------------------------------------------------- */

/**
 * Writes the default options (MALA, step size 1e-2, 1000 steps, the prior, seed 0, no recording) and sets
 * options->struct_size.
 * @param options      the struct to initialise
 * @param struct_size  sizeof(ds_langevin_options) as the caller's header declares it
 * @return DS_INVALID_ARGUMENT for a null pointer or a struct_size of no known layout (nothing written then)
 */
DS_API ds_status ds_langevin_options_init(ds_langevin_options* options, size_t struct_size);

/**
 * Bytes of workspace a ds_langevin() call with these arguments needs (the mixture's constants at the target
 * channel, plus about 4 n d floats when d is not in the register list).
 */
DS_API ds_status ds_langevin_workspace_bytes(const ds_mixture* mixture, int64_t n, const ds_langevin_options* options,
                                             size_t* bytes);

/**
 * Runs options->steps Langevin steps of every chain in one fused launch. @p x (n x d) holds the initial states and
 * receives the final ones. No two of @p x, @p trajectory, @p accepted and @p workspace may overlap
 * (DS_INVALID_ARGUMENT). Asynchronous on the CUDA executor.
 * @param trajectory       (steps / record_every) x n x d floats when options->record_every > 0, else NULL
 *                         (NULL with record_every > 0 is refused)
 * @param accepted         n accepted-proposal counts (MALA; ULA variants write the step count), or NULL
 * @param workspace        ds_langevin_workspace_bytes() bytes of device memory, or NULL to allocate stream-ordered
 * @param workspace_bytes  size of @p workspace
 * @param report           receives what the run did (may be NULL)
 */
DS_API ds_status ds_langevin(const ds_mixture* mixture, float* x, int64_t n, const ds_langevin_options* options,
                             float* trajectory, int64_t* accepted, ds_execution exec, void* workspace,
                             size_t workspace_bytes, ds_langevin_report* report);

/* --- names ------------------------------------------------------------------------------------------------ */

/** "ula", "mala" or "tamed_ula" (or "unknown"). Static storage. */
DS_API const char* ds_langevin_method_name(ds_langevin_method method);
/** Parses the names of ds_langevin_method_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_langevin_method(const char* name, ds_langevin_method* out);
/** "vp_linear", "vp_cosine", "vp_table", "variance_exploding", "ornstein_uhlenbeck", "linear_interpolant" or
 * "stochastic_localization" (or "unknown"). Static storage. */
DS_API const char* ds_schedule_kind_name(ds_schedule_kind kind);
/** Parses the names of ds_schedule_kind_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_schedule_kind(const char* name, ds_schedule_kind* out);
/** "uniform", "quadratic", "geometric" or "custom" (or "unknown"). Static storage. */
DS_API const char* ds_time_grid_name(ds_time_grid grid);
/** Parses the names of ds_time_grid_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_time_grid(const char* name, ds_time_grid* out);
/** "ddpm", "ddim", "reverse_sde", "ode_euler", "ode_heun", "stochastic_localization", "walk_jump" or
 * "sequential_measurements" (or "unknown"). Static storage. */
DS_API const char* ds_diffusion_sampler_name(ds_diffusion_sampler sampler);
/** Parses the names of ds_diffusion_sampler_name() (and "sms", "heun", "euler", "sl") into @p out.
 * @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_diffusion_sampler(const char* name, ds_diffusion_sampler* out);
/** "score", "denoiser", "eps" or "velocity" (or "unknown"). Static storage. */
DS_API const char* ds_model_output_name(ds_model_output output);
/** Parses the names of ds_model_output_name() (and "x0") into @p out.
 * @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_model_output(const char* name, ds_model_output* out);
/** "multinomial", "stratified", "systematic", "residual", "metropolis" or "rejection" (or "unknown"). Static
 * storage. */
DS_API const char* ds_resampling_scheme_name(ds_resampling_scheme scheme);
/** Parses the names of ds_resampling_scheme_name() into @p out.
 * @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_resampling_scheme(const char* name, ds_resampling_scheme* out);
/** "smc", "dps", "pigdm", "diffpir", "skrock", "tmpd", "ddrm" or "dcps" (or "unknown"). Static storage. */
DS_API const char* ds_guided_sampler_name(ds_guided_sampler sampler);
/** Parses the names of ds_guided_sampler_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_guided_sampler(const char* name, ds_guided_sampler* out);
/** "likelihood" or "normalised" (or "unknown"). Static storage. */
DS_API const char* ds_dps_step_name(ds_dps_step step);
/** Parses the names of ds_dps_step_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_dps_step(const char* name, ds_dps_step* out);
/** "linear", "moment" or "twisted" (or "unknown"). Static storage. */
DS_API const char* ds_guided_potentials_name(ds_guided_potentials potentials);
/** Parses the names of ds_guided_potentials_name() into @p out. */
DS_API ds_status ds_parse_guided_potentials(const char* name, ds_guided_potentials* out);
/** "schedule", "sqrt_alpha_bar" or "spectral" (or "unknown"). Static storage. */
DS_API const char* ds_guided_grid_name(ds_guided_grid grid);
/** Parses the names of ds_guided_grid_name() into @p out. @return DS_INVALID_ARGUMENT for NULL or an unknown name */
DS_API ds_status ds_parse_guided_grid(const char* name, ds_guided_grid* out);
/** The name of a ds_mixture_path ("automatic", "direct", "gemm"; "unknown" outside the enum). */
DS_API const char* ds_mixture_path_name(ds_mixture_path path);
/** Parses the names of ds_mixture_path_name() (and "auto") into @p out. @return DS_INVALID_ARGUMENT for NULL or an
 * unknown name */
DS_API ds_status ds_parse_mixture_path(const char* name, ds_mixture_path* out);

/* --- noise schedules -------------------------------------------------------------------------------------- */

/**
 * Writes the schedule of @p kind with the C++ factory's default arguments (vp_linear(0.1, 20), vp_cosine(0.008),
 * vp_table with no table yet, variance_exploding(0.01, 50), ornstein_uhlenbeck(5), linear_interpolant(),
 * stochastic_localization(1e-3, 1e3)) and its default grid, and sets schedule->struct_size.
 * @param schedule     the struct to initialise
 * @param struct_size  sizeof(ds_schedule) as the caller's header declares it
 * @param kind         channel family
 * @return DS_INVALID_ARGUMENT for a null pointer, a struct_size of no known layout or an unknown kind
 */
DS_API ds_status ds_schedule_init(ds_schedule* schedule, size_t struct_size, ds_schedule_kind kind);

/**
 * Validates a schedule and writes the steps + 1 points of its grid in sampling order (host memory, synchronous).
 * @param steps  number of steps N >= 1 (for DS_TIME_GRID_CUSTOM, times_count - 1)
 * @param out    steps + 1 points
 * @return DS_INVALID_ARGUMENT naming the field and the bad value for an invalid schedule
 */
DS_API ds_status ds_schedule_points(const ds_schedule* schedule, int64_t steps, ds_schedule_point* out);

/* --- reverse diffusion ------------------------------------------------------------------------------------ */

/**
 * Writes the default options (DDPM on vp_linear, 100 steps, eta 0, sigma 1, step size 0.1, 4 measurements, no final
 * denoise, initial state drawn, seed 0, no recording) and sets options->struct_size and options->schedule.struct_size.
 * @param options      the struct to initialise
 * @param struct_size  sizeof(ds_diffusion_options) as the caller's header declares it
 * @return DS_INVALID_ARGUMENT for a null pointer or a struct_size of no known layout
 */
DS_API ds_status ds_diffusion_options_init(ds_diffusion_options* options, size_t struct_size);

/**
 * Bytes of workspace a ds_diffusion_sample() call with these arguments needs (the coefficient table, the
 * mixture's constants at every step's channels, plus about 4 n d floats when d is not in the register-path list).
 * @param bytes  receives the size
 */
DS_API ds_status ds_diffusion_workspace_bytes(const ds_mixture* mixture, int64_t n,
                                              const ds_diffusion_options* options, size_t* bytes);

/**
 * Runs the whole trajectory of n chains of options->sampler on the mixture's exact denoiser in one fused launch
 * (diffsample::diffusion). @p x (n x d) receives the samples, and holds the initial states when
 * options->draw_initial is 0; no two of @p x, @p trajectory and @p workspace may overlap (DS_INVALID_ARGUMENT). The
 * per-step coefficients are computed on the host in FP64 and copied once per call.
 * Asynchronous on the CUDA executor (no host synchronisation).
 * @param trajectory       (total_steps / record_every) x n x d floats when options->record_every > 0, else NULL
 *                         (NULL with record_every > 0 is refused)
 * @param exec             executor and stream
 * @param workspace        ds_diffusion_workspace_bytes() bytes on the executor's side, or NULL to allocate
 *                         stream-ordered once per call
 * @param workspace_bytes  size of @p workspace
 * @param report           receives what the run did (may be NULL)
 */
DS_API ds_status ds_diffusion(const ds_mixture* mixture, float* x, int64_t n, const ds_diffusion_options* options,
                              float* trajectory, ds_execution exec, void* workspace, size_t workspace_bytes,
                              ds_diffusion_report* report);

/** The former name of ds_diffusion() (the C++ call is diffsample::diffusion); the same call. */
DS_API DS_DEPRECATED("use ds_diffusion()") ds_status ds_diffusion_sample(
    const ds_mixture* mixture, float* x, int64_t n, const ds_diffusion_options* options, float* trajectory,
    ds_execution exec, void* workspace, size_t workspace_bytes, ds_diffusion_report* report);

/**
 * Creates a stepwise plan for a caller's model (diffsample::diffusion_plan): per step k the caller evaluates its
 * model at the channel of ds_diffusion_plan_step_channel(k) on the current x for the whole batch, writes the
 * declared @p output into a buffer and calls ds_diffusion_plan_step_on(). Samplers: ddpm, ddim, reverse_sde,
 * ode_euler, stochastic_localization, walk_jump (ode_heun and sequential_measurements are fused only). With the
 * mixture's denoiser as the model the result equals ds_diffusion_sample() bit for bit on the CPU executor.
 * Creation validates (options->record_every must be 0: the plan records nothing), builds the coefficient table and
 * allocates device memory once (cudaMalloc and a synchronous copy: it synchronises; nothing afterwards does).
 * A plan is not thread-safe: one thread at a time may call it (distinct plans are independent).
 * @param n, dim  batch size and dimension of x and of the model buffer (n x dim floats each)
 * @param output  what the model writes
 * @param exec    DS_EXECUTOR_CUDA or DS_EXECUTOR_CPU (automatic picks CUDA when a GPU is present)
 * @param out     receives the new handle (release with ds_diffusion_plan_destroy())
 */
DS_API ds_status ds_diffusion_plan_create(int64_t n, int64_t dim, const ds_diffusion_options* options,
                                          ds_model_output output, ds_execution exec, ds_diffusion_plan** out);

/** Releases a plan and its device buffers (synchronous). NULL is ignored. */
DS_API void ds_diffusion_plan_destroy(ds_diffusion_plan* plan);

/** Reports the step count, sizes, executor, model output and whether a final jump is needed. */
DS_API ds_status ds_diffusion_plan_get_info(const ds_diffusion_plan* plan, ds_diffusion_plan_info* info);

/**
 * The channel (a, s) at which the model must be evaluated before step k, and the step's time (walk_jump: 0).
 * @param k        0 <= k <= steps; k = steps is the channel of ds_diffusion_plan_finish_on()
 * @param channel  receives (a, s) (may be NULL)
 * @param t        receives the time (may be NULL)
 */
DS_API ds_status ds_diffusion_plan_step_channel(const ds_diffusion_plan* plan, int64_t k, ds_channel* channel,
                                                double* t);

/**
 * Device (host, on the CPU executor) pointer to the plan's current step index, for models captured in a CUDA
 * graph; valid until the plan is destroyed.
 * @param counter  receives the pointer
 */
DS_API ds_status ds_diffusion_plan_step_counter(const ds_diffusion_plan* plan, const int64_t** counter);

/**
 * Resets the step counter to 0 and, when the options drew the initial state, writes x = s_0 z (n x d, on the plan's
 * executor) as ds_diffusion() does. @p x may be NULL when nothing is written to it (options.draw_initial 0: the
 * initial state is the caller's; or n = 0). Asynchronous on the CUDA executor (on exec.stream).
 * @param exec  exec.kind is the plan's executor or DS_EXECUTOR_AUTOMATIC (anything else fails, naming both)
 */
DS_API ds_status ds_diffusion_plan_reset_on(ds_diffusion_plan* plan, float* x, ds_execution exec);

/**
 * Applies the update of the current step to x given the model output at x (both n x d, device memory on the CUDA
 * executor, host memory on the CPU one) and advances the step counter; past the last step x and the counter are left
 * unchanged (the counter stops at the plan's steps).
 * Asynchronous on the CUDA executor (on exec.stream), no allocation, no validation beyond the host-side checks of
 * the pointers and the executor, so that it can be captured in a CUDA graph. @p x and @p model must not share memory,
 * not even as the same buffer (DS_INVALID_ARGUMENT naming both, nothing advanced; as ds_diffusion_plan_finish_on()).
 * @param exec  exec.kind is the plan's executor or DS_EXECUTOR_AUTOMATIC
 */
DS_API ds_status ds_diffusion_plan_step_on(ds_diffusion_plan* plan, float* x, const float* model, ds_execution exec);

/**
 * The final jump x <- E[x0 | x] from the model output at ds_diffusion_plan_step_channel(steps), when
 * ds_diffusion_plan_info::needs_final_jump. Asynchronous on the CUDA executor (on exec.stream).
 * @param exec  exec.kind is the plan's executor or DS_EXECUTOR_AUTOMATIC
 */
DS_API ds_status ds_diffusion_plan_finish_on(ds_diffusion_plan* plan, float* x, const float* model,
                                             ds_execution exec);

/** ds_diffusion_plan_reset_on() with {DS_EXECUTOR_AUTOMATIC, stream}: the raw-stream form before 0.4.0. */
DS_API DS_DEPRECATED("use ds_diffusion_plan_reset_on() with a ds_execution") ds_status
ds_diffusion_plan_reset(ds_diffusion_plan* plan, float* x, struct CUstream_st* stream);

/** ds_diffusion_plan_step_on() with {DS_EXECUTOR_AUTOMATIC, stream}: the raw-stream form before 0.4.0. */
DS_API DS_DEPRECATED("use ds_diffusion_plan_step_on() with a ds_execution") ds_status
ds_diffusion_plan_step(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream);

/** ds_diffusion_plan_finish_on() with {DS_EXECUTOR_AUTOMATIC, stream}: the raw-stream form before 0.4.0. */
DS_API DS_DEPRECATED("use ds_diffusion_plan_finish_on() with a ds_execution") ds_status
ds_diffusion_plan_finish(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream);

/* --- ask/tell sampling plans ---------------------------------------------------------------------------- */

/** Opaque ask/tell plan driving a sampler with a caller's model (diffsample::sampling_plan). */
typedef struct ds_sampling_plan ds_sampling_plan;

/**
 * One ask of a ::ds_sampling_plan: evaluate the model at @p points, channel @p at, and write @p output into
 * @p answer. Versioned: set struct_size = sizeof(ds_plan_request) before passing it; the library writes the fields
 * of the layout that size names. Pointers are plan memory on the plan's executor, the same for a given position in
 * every trajectory. Layouts: the first ends with vector; the second appends log_density (a plan that asks for the
 * log-density, MALA, refuses a request of the first layout).
 */
typedef struct ds_plan_request {
  size_t struct_size;     /**< sizeof(ds_plan_request), set by the caller */
  int64_t index;          /**< position of the ask in the trajectory */
  const float* points;    /**< rows x dim points (row-major) at which the model is evaluated */
  int64_t rows;           /**< number of points */
  int64_t dim;            /**< dimension of a point */
  ds_channel at;          /**< channel (a, s) of the evaluation */
  double time;            /**< the schedule's time of that channel (0 without a schedule) */
  ds_model_output output; /**< what to write into answer */
  float* answer;          /**< rows x dim: the caller writes the model's output here */
  const float* vector;    /**< NULL, or rows x dim vectors v: then the caller writes J^T v of its denoiser at the
                               points (a vector-Jacobian product) into answer instead (DPS and Pi-GDM plans) */
  float* log_density;     /**< NULL, or rows floats: the caller also writes the model's log-density at the points
                               here (MALA plans; only differences enter, so an unnormalised one does) */
} ds_plan_request;

/**
 * Creates a plan for a reverse-diffusion sampler (every ::ds_diffusion_sampler, Heun and SMS included;
 * options->record_every must be 0). Allocates once; on the CUDA executor it synchronises exec.stream once.
 * @param output  what the caller's model returns (DS_MODEL_VELOCITY only for samplers with a schedule)
 * @param out     receives the new handle (release with ds_sampling_plan_destroy())
 */
DS_API ds_status ds_sampling_plan_create_diffusion(int64_t n, int64_t dim, const ds_diffusion_options* options,
                                                   ds_model_output output, ds_execution exec,
                                                   ds_sampling_plan** out);

/**
 * Creates a plan for a Langevin chain (DS_ULA, DS_TAMED_ULA or DS_MALA; options->record_every must be 0). The
 * initial state is the caller's: pass it to ds_sampling_plan_reset(). ULA and tamed ULA: one ask per step at the
 * state. MALA: steps + 1 asks (none for 0 steps), each for the model's output and its log-density
 * (ds_plan_request::log_density), ask 0 at the state and ask k at step k - 1's proposal; the tells accept or
 * reject (ds_sampling_plan_accepted() counts the accepted proposals).
 * @param output  DS_MODEL_SCORE, DS_MODEL_DENOISER or DS_MODEL_EPS (the last two need options->target.s > 0)
 */
DS_API ds_status ds_sampling_plan_create_langevin(int64_t n, int64_t dim, const ds_langevin_options* options,
                                                  ds_model_output output, ds_execution exec,
                                                  ds_sampling_plan** out);

/**
 * Creates a plan for the guided samplers DS_GUIDED_SMC, DS_GUIDED_DPS, DS_GUIDED_PIGDM, DS_GUIDED_DIFFPIR,
 * DS_GUIDED_DCPS and DS_GUIDED_TMPD (diffsample::sampling_plan::guided): rows = problems x particles; SMC one ask per
 * transition (the tell weights, resamples and mutates; its outputs from ds_sampling_plan_write_outputs(); moment
 * potentials add d_y asks for J^T a_o per transition, request.vector a row of the particle's A; twisted potentials
 * the same asks, each J^T a_o written into its own request.answer; final_moves = K > 0, with
 * final_move_curvature > 0, adds 1 + 2 K asks: at the final resampling's samples, then per move at the proposal
 * and at the midpoint, a score model's at the grid's last point (a_K, 0), a denoiser or eps model's at the last
 * transition's channel and the points (a_m / a_K) x), DPS and Pi-GDM two
 * asks per step (the model's output, then J^T v with request.vector set), DiffPIR one ask per step (the model's
 * output; the tell takes the data step and re-noises); DCPS asks at the particles for its Langevin steps and
 * transitions and at its variational fits' draws (request.points) for their gradient steps, each ask whose
 * potential needs the Jacobian followed by one for J^T u at the same points; TMPD 1 + d_y asks per step (the
 * model's output, then J^T a_o with request.vector = a_o for every row a_o of the problem's operator).
 * @param dim     dimension of the states
 * @param output  DS_MODEL_DENOISER, DS_MODEL_SCORE or DS_MODEL_EPS
 */
DS_API ds_status ds_sampling_plan_create_guided(int64_t dim, const ds_guided_problems* problems,
                                                const ds_guided_options* options, ds_model_output output,
                                                ds_execution exec, ds_sampling_plan** out);

/** Releases a plan and its buffers (synchronous on the CUDA executor). NULL is ignored. */
DS_API void ds_sampling_plan_destroy(ds_sampling_plan* plan);

/**
 * The plan's shape and progress; each output may be NULL.
 * @param asks      asks of one trajectory
 * @param position  asks told in the current trajectory
 * @param where     executor the plan runs on
 */
DS_API ds_status ds_sampling_plan_get_info(const ds_sampling_plan* plan, int64_t* asks, int64_t* position,
                                           ds_executor* where);

/**
 * The next ask (host-only: no launch, no synchronisation; asking again before the tell gives the same ask).
 * DS_INVALID_ARGUMENT before the first ds_sampling_plan_reset() and when the trajectory is done.
 * @param request  request->struct_size must be set
 */
DS_API ds_status ds_sampling_plan_ask(const ds_sampling_plan* plan, ds_plan_request* request);

/** The ask at position @p k (0 <= k < asks) of every trajectory, for setting up a captured loop. */
DS_API ds_status ds_sampling_plan_request(const ds_sampling_plan* plan, int64_t k, ds_plan_request* request);

/**
 * Applies the answer written into the current ask's buffer and advances to the next ask, on exec.stream
 * (exec.kind: DS_EXECUTOR_AUTOMATIC or the plan's executor). Asynchronous on the CUDA executor; no allocation, no
 * synchronisation (capturable). DS_INVALID_ARGUMENT before the first ds_sampling_plan_reset(), when the trajectory
 * is done, and for a second tell after one ds_sampling_plan_ask() (it would apply the next ask with the previous
 * answer; loops of ds_sampling_plan_request() and tells without asks run). A tell whose update fails part-way (a
 * failed launch: DS_CUDA_ERROR) does not advance, and every call but ds_sampling_plan_reset() then fails with
 * DS_INVALID_ARGUMENT ("the last tell() failed"). A plan is not thread-safe: one thread at a time may call it.
 */
DS_API ds_status ds_sampling_plan_tell(ds_sampling_plan* plan, ds_execution exec);

/**
 * Starts the next trajectory (position 0, the next trajectory's random key advanced on the device), at any position
 * of the current one. The initial state is @p initial (rows x dim on the plan's executor) when not NULL, else drawn
 * as the fused sampler draws it (diffusion plans with draw_initial), on exec.stream; the plan's own samples continue
 * the state, another pointer that overlaps them is refused. Asynchronous on the CUDA executor; capturable. A refused
 * reset (DS_INVALID_ARGUMENT) changes nothing; a reset that fails once its work began (a failed launch or copy:
 * DS_CUDA_ERROR) leaves every call but ds_sampling_plan_reset() failing with DS_INVALID_ARGUMENT ("the last reset()
 * failed") until a reset succeeds.
 */
DS_API ds_status ds_sampling_plan_reset(ds_sampling_plan* plan, const float* initial, ds_execution exec);

/**
 * A done guided SMC trajectory's outputs as ds_guided_sample() writes them (log-weights, resampled samples,
 * log-normaliser estimates, ESS trace, resampling counts, particles; NULL members skipped), memory of the plan's
 * executor, on exec.stream. DS_INVALID_ARGUMENT for another plan, a trajectory not done, or an output that overlaps
 * the plan's own memory (its samples, the asks' buffers) or another output.
 */
DS_API ds_status ds_sampling_plan_write_outputs(ds_sampling_plan* plan, const ds_guided_outputs* outputs,
                                                ds_execution exec);

/** The plan's state, rows x dim (plan memory on its executor): the samples once the trajectory is done. */
DS_API ds_status ds_sampling_plan_samples(const ds_sampling_plan* plan, float** samples);

/**
 * Device (host, on the CPU executor) pointer to the position as the device sees it, advanced by each tell on the
 * device: for models captured in a CUDA graph; valid until the plan is destroyed.
 */
DS_API ds_status ds_sampling_plan_position_counter(const ds_sampling_plan* plan, const int64_t** counter);

/**
 * MALA plans: the rows counts of proposals accepted in the current trajectory (plan memory on its executor, set to
 * 0 by the trajectory's first tell and advanced by each later one); NULL for every other plan. Valid until the plan
 * is destroyed.
 */
DS_API ds_status ds_sampling_plan_accepted(const ds_sampling_plan* plan, const int64_t** accepted);

/**
 * A guided plan's report (diffsample::sampling_plan::report), in the ::ds_guided_report2 of ds_guided_sample2():
 * the settings the plan runs, set when it was made (host-only, the same at every position and trajectory). ran is
 * the plan's executor; for DS_GUIDED_SMC the potentials (DS_POTENTIALS_AUTOMATIC resolved as a plan resolves it:
 * DS_POTENTIALS_LINEAR), start_correction and multistep_kernel; final_moves as given (-1 resolves to 0);
 * operator_path DS_MIXTURE_PATH_GEMM where the tells apply a dense operator as matrix products (the path
 * ds_guided_sample2() resolves for the same options and problems: DPS and Pi-GDM on either executor, TMPD on the CPU
 * executor), else DS_MIXTURE_PATH_DIRECT; launches 0 (a plan's launches are its tells'). Fed the mixture's own
 * model, a plan that runs what ds_guided_sample2() runs reports what it reports, launches aside; the per-problem
 * results are ds_sampling_plan_write_outputs()'s.
 * @param report  from ds_guided_report2_init(): the fields of the layout its struct_size names are written
 * @return DS_INVALID_ARGUMENT for a null plan or report, a struct_size of no known layout, or a plan that is not
 *         guided (nothing written then)
 */
DS_API ds_status ds_sampling_plan_report(const ds_sampling_plan* plan, ds_guided_report2* report);

/* --- SMC primitives --------------------------------------------------------------------------------------- */

/**
 * Writes the default resampling options (systematic, ESS threshold 0.5, seed 0, step 0, 64 Metropolis steps) and
 * sets options->struct_size.
 * @param options      the struct to initialise
 * @param struct_size  sizeof(ds_resampling_options) as the caller's header declares it
 */
DS_API ds_status ds_resampling_options_init(ds_resampling_options* options, size_t struct_size);

/**
 * Bytes of workspace ds_resample() needs for B problems of N particles with @p scheme (0 when B N = 0).
 * @param bytes  receives the size
 */
DS_API ds_status ds_resampling_workspace_bytes(int64_t problems, int64_t particles, ds_resampling_scheme scheme,
                                               size_t* bytes);

/**
 * Per-problem statistics and exact, deterministic resampling of the problems whose ESS falls below the threshold
 * (diffsample::resample): the same inputs give the same ancestors on every run, thread count and executor. NaN and
 * +inf log-weights count as -inf; a problem whose weights are all zero is reported failed and keeps the identity.
 * Every buffer is device-accessible on the CUDA executor and host-accessible on the CPU one; the output pointers
 * are optional, and the threshold decides the same whichever are given (without ancestors the reports and
 * normalised weights are those of the call with them); none may overlap @p log_weights, another output or
 * @p workspace (DS_INVALID_ARGUMENT).
 * Asynchronous on the CUDA executor (reports are written to device memory then).
 * @param log_weights         B x N floats
 * @param problems            B >= 0
 * @param particles           N, 1 <= N <= 2^24, diffsample::limits::max_particles (0 only when B = 0)
 * @param ancestors           B x N ancestor indices within each problem (0..N-1), or NULL
 * @param normalised_weights  B x N weights w_i / sum w (0 for a failed problem), or NULL
 * @param reports             B reports, or NULL
 * @param workspace           ds_resampling_workspace_bytes() bytes, or NULL to allocate stream-ordered
 * @param workspace_bytes     size of @p workspace
 * @param ran                 receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_resample(const float* log_weights, int64_t problems, int64_t particles,
                             const ds_resampling_options* options, int32_t* ancestors, float* normalised_weights,
                             ds_particle_report* reports, ds_execution exec, void* workspace, size_t workspace_bytes,
                             ds_executor* ran);

/**
 * Gathers particle states by ancestor: out[b, j, :] = states[b, ancestors[b, j], :] for B x N particles of
 * dimension d. @p out must not overlap @p states or @p ancestors. Asynchronous on the CUDA executor.
 * @param states     B x N x d floats
 * @param ancestors  B x N indices in 0..N-1 (an index outside it gives a row of NaN)
 * @param out        B x N x d floats
 * @param ran        receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_gather_particles(const float* states, int64_t problems, int64_t particles, int64_t dim,
                                     const int32_t* ancestors, float* out, ds_execution exec, ds_executor* ran);

/** ds_resample() with int64 ancestors (diffsample::particle_outputs::ancestors64). @param ancestors B x N, or NULL */
DS_API ds_status ds_resample_int64(const float* log_weights, int64_t problems, int64_t particles,
                                   const ds_resampling_options* options, int64_t* ancestors,
                                   float* normalised_weights, ds_particle_report* reports, ds_execution exec,
                                   void* workspace, size_t workspace_bytes, ds_executor* ran);

/** ds_gather_particles() with int64 ancestors. @param ancestors B x N indices in 0..N-1 */
DS_API ds_status ds_gather_particles_int64(const float* states, int64_t problems, int64_t particles, int64_t dim,
                                           const int64_t* ancestors, float* out, ds_execution exec,
                                           ds_executor* ran);

/* --- guided posterior sampling ---------------------------------------------------------------------------- */

/**
 * Writes the defaults (B = 1, d_y = 1, every array NULL with count 0) and sets problems->struct_size.
 * @param problems     the struct to initialise
 * @param struct_size  sizeof(ds_guided_problems) as the caller's header declares it
 */
DS_API ds_status ds_guided_problems_init(ds_guided_problems* problems, size_t struct_size);

/**
 * Writes the default options (smc on vp_linear, 100 DDPM steps, 1024 particles, automatic potentials
 * (DS_POTENTIALS_AUTOMATIC), systematic resampling at the automatic ESS threshold (-1: 0.2 N where the potentials
 * resolve to twisted, else 0.5 N), final resample, automatic final moves (-1), guidance scale 1, seed 0) and sets the
 * struct_size of the struct and of its nested schedule and resampling options.
 * @param options      the struct to initialise
 * @param struct_size  sizeof(ds_guided_options) as the caller's header declares it
 */
DS_API ds_status ds_guided_options_init(ds_guided_options* options, size_t struct_size);

/**
 * Sets every output pointer to NULL and sets outputs->struct_size.
 * @param outputs      the struct to initialise
 * @param struct_size  sizeof(ds_guided_outputs) as the caller's header declares it
 */
DS_API ds_status ds_guided_outputs_init(ds_guided_outputs* outputs, size_t struct_size);

/**
 * Bytes of workspace ds_guided_sample() needs (state buffers, per-step tables, resampling workspace).
 * @param bytes  receives the size
 */
DS_API ds_status ds_guided_workspace_bytes(const ds_mixture* prior, const ds_guided_problems* problems,
                                           const ds_guided_options* options, size_t* bytes);

/**
 * ds_guided_workspace_bytes() for the executor @p exec names (diffsample::guided_workspace_bytes with an execution):
 * on DS_EXECUTOR_CPU less the bytes only the CUDA executor uses (cuBLAS's 4 MiB workspace of DPS and Pi-GDM's
 * operator products); on DS_EXECUTOR_CUDA the size of ds_guided_workspace_bytes(), which names no executor and so
 * answers the bound on either; DS_EXECUTOR_AUTOMATIC answers for CUDA when a GPU is usable, else the CPU.
 * @param bytes  receives the size
 */
DS_API ds_status ds_guided_workspace_bytes_on(const ds_mixture* prior, const ds_guided_problems* problems,
                                              const ds_guided_options* options, ds_execution exec, size_t* bytes);

/**
 * The steps + 1 times, in sampling order, of the grid ds_guided_sample() runs on with these options
 * (diffsample::guided_times): the schedule's own grid for DS_GUIDED_GRID_SCHEDULE, else the grid options->grid
 * places. Fails as ds_guided_sample() does, and for a grid the schedule cannot give.
 * @param times  receives the times (host memory)
 * @param count  the length of @p times: options->steps + 1
 */
DS_API ds_status ds_guided_times(const ds_mixture* prior, const ds_guided_problems* problems,
                                 const ds_guided_options* options, double* times, int64_t count);

/**
 * Runs a guided posterior sampler on every problem (diffsample::guided_sample). The tables are built on the host in
 * FP64 and copied once; each SMC transition then issues a fixed handful of launches with no allocation and no host
 * synchronisation; dps and pigdm run fused. Asynchronous on the CUDA executor.
 * @param prior            the mixture prior, of dimension d_x
 * @param problems         observations (host arrays)
 * @param outputs          caller buffers on the executor's side
 * @param workspace        ds_guided_workspace_bytes() bytes, or NULL to allocate stream-ordered once per call
 * @param workspace_bytes  size of @p workspace
 * @param report           receives what the run did (may be NULL)
 */
DS_API ds_status ds_guided_sample(const ds_mixture* prior, const ds_guided_problems* problems,
                                  const ds_guided_options* options, const ds_guided_outputs* outputs,
                                  ds_execution exec, void* workspace, size_t workspace_bytes,
                                  ds_guided_report* report);

/**
 * Writes an empty report (DS_EXECUTOR_AUTOMATIC, every count and flag 0, DS_MIXTURE_PATH_DIRECT,
 * DS_POTENTIALS_LINEAR) and sets report->struct_size.
 * @param report       the struct to initialise
 * @param struct_size  sizeof(ds_guided_report2) as the caller's header declares it
 * @return DS_INVALID_ARGUMENT for a null pointer or a struct_size of no known layout (nothing written then)
 */
DS_API ds_status ds_guided_report2_init(ds_guided_report2* report, size_t struct_size);

/**
 * ds_guided_sample() with the full report: the same run, whose ::ds_guided_report2 also says which potentials,
 * start correction, multistep kernel, final moves and operator path ran, with the automatic settings resolved
 * (DS_POTENTIALS_AUTOMATIC, final_moves -1, DS_MIXTURE_PATH_AUTOMATIC). Asynchronous on the CUDA executor.
 * @param report  from ds_guided_report2_init(), or NULL; a struct_size of no known layout fails with
 *                DS_INVALID_ARGUMENT before anything runs
 */
DS_API ds_status ds_guided_sample2(const ds_mixture* prior, const ds_guided_problems* problems,
                                   const ds_guided_options* options, const ds_guided_outputs* outputs,
                                   ds_execution exec, void* workspace, size_t workspace_bytes,
                                   ds_guided_report2* report);

/**
 * Creates the exact posterior mixture of @p prior given y = A x + sigma_y z (diffsample::mixture_posterior):
 * synchronous host work in FP64, nothing launched. Arrays are host memory, copied.
 * @param prior    the mixture prior, of dimension d_x
 * @param d_y      observation dimension >= 1
 * @param A        d_y x d_x row-major
 * @param sigma_y  noise scale, finite and >= 0 (0 needs A Sigma_k A^T non-singular)
 * @param y        d_y observed values
 * @param out      receives the new handle (release with ds_posterior_destroy())
 */
DS_API ds_status ds_posterior_create(const ds_mixture* prior, int64_t d_y, const double* A, double sigma_y,
                                     const double* y, ds_posterior** out);

/**
 * Computes the exact posterior under a mask (inpainting) operator: observed value i is gains[i] x[mask[i]] plus
 * noise, for d_y distinct coordinates mask[0..d_y-1] in [0, d_x). @p gains may be NULL (all ones). Otherwise as
 * ds_posterior_create().
 */
DS_API ds_status ds_posterior_create_masked(const ds_mixture* prior, int64_t d_y, const int64_t* mask,
                                            const double* gains, double sigma_y, const double* y, ds_posterior** out);

/**
 * Computes the exact posterior under an operator given by its thin SVD, A = U diag(S) V^T of rank r
 * (diffsample::observation_operator::svd): U is d_y x r and V is d_x x r, row-major, with orthonormal columns (to
 * 1e-6), S holds r finite values >= 0, 1 <= r <= min(d_y, d_x). Otherwise as ds_posterior_create(); the posterior is computed through the dense A.
 */
DS_API ds_status ds_posterior_create_svd(const ds_mixture* prior, int64_t d_y, int64_t rank, const double* U,
                                         const double* S, const double* V, double sigma_y, const double* y,
                                         ds_posterior** out);

/** Releases an exact posterior. NULL is ignored. */
DS_API void ds_posterior_destroy(ds_posterior* posterior);

/** Reports the number of components K and the dimension d_x; either output pointer may be NULL. */
DS_API ds_status ds_posterior_shape(const ds_posterior* posterior, int64_t* components, int64_t* dim);

/** log p(y) = log sum_k w_k N(y; A mu_k, A Sigma_k A^T + sigma_y^2 I). @param out receives the value */
DS_API ds_status ds_posterior_log_evidence(const ds_posterior* posterior, double* out);

/**
 * Copies the posterior components out (host memory); every output pointer may be NULL; no two may overlap.
 * @param weights      K normalised weights w'_k
 * @param log_weights  K values log w'_k (finite even when w'_k underflows)
 * @param means        K x d_x component means
 * @param covariances  K x d_x x d_x component covariances
 */
DS_API ds_status ds_posterior_components(const ds_posterior* posterior, double* weights, double* log_weights,
                                         double* means, double* covariances);

/**
 * Mean (d_x values) and covariance (d_x x d_x) of the whole posterior mixture (host memory); either may be NULL;
 * they may not overlap.
 */
DS_API ds_status ds_posterior_moments(const ds_posterior* posterior, double* mean, double* covariance);

/**
 * Exact posterior samples (host memory, synchronous, OpenMP over samples): sample i draws from the Philox stream
 * (seed, first_index + i, 0), so results do not depend on how a set of samples is split into calls.
 * @param out     n x d_x host floats
 * @param labels  n host component indices, or NULL
 */
DS_API ds_status ds_posterior_sample(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed,
                                     int32_t* labels, uint64_t first_index);

/** ds_posterior_sample() in FP64. @param out n x d_x host doubles @param labels n indices, or NULL */
DS_API ds_status ds_posterior_sample_double(const ds_posterior* posterior, double* out, int64_t n, uint64_t seed,
                                            int32_t* labels, uint64_t first_index);

/**
 * ds_posterior_sample() on either executor: `out` and `labels` device-accessible for DS_EXECUTOR_CUDA (FP64 on the
 * device; the same samples up to rounding), host-accessible for DS_EXECUTOR_CPU. Asynchronous on the CUDA executor.
 * @param out     n x d_x floats
 * @param labels  n component indices, or NULL
 * @param ran     receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_posterior_sample_on(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed,
                                        int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran);

/** ds_posterior_sample_on() in FP64. @param out n x d_x doubles @param labels n indices, or NULL
 *  @param ran receives the executor that ran (may be NULL) */
DS_API ds_status ds_posterior_sample_double_on(const ds_posterior* posterior, double* out, int64_t n,
                                               uint64_t seed, int32_t* labels, uint64_t first_index,
                                               ds_execution exec, ds_executor* ran);

/* --- metrics ---------------------------------------------------------------------------------------------- */

/**
 * Sliced Wasserstein-p distance between two host sample sets (n_a x dim and n_b x dim, row-major float): the mean over
 * @p directions random unit directions of the exact 1-D W_p^p, to the power 1/p. Synchronous, host memory.
 * @param p    1 or 2
 * @param out  receives the distance
 */
DS_API ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim,
                                       int directions, uint64_t seed, int p, double* out);

/**
 * Bytes of workspace ds_sliced_wasserstein_on() and ds_sliced_wasserstein_async() need to run @p directions_per_pass
 * directions per pass on @p where (diffsample::sliced_wasserstein_workspace_bytes).
 * @param bytes  receives the size
 */
DS_API ds_status ds_sliced_wasserstein_workspace_bytes(int64_t n_a, int64_t n_b, int64_t dim, int directions_per_pass,
                                                       ds_executor where, size_t* bytes);

/**
 * ds_sliced_wasserstein() on an executor: @p a and @p b device-accessible on CUDA, host-accessible on the CPU.
 * Synchronous: returns with the distance in *out (on CUDA it waits for the stream).
 * @param workspace        ds_sliced_wasserstein_workspace_bytes() bytes on the executor's side, or NULL to allocate
 * @param workspace_bytes  size of @p workspace
 * @param out              receives the distance (host memory)
 */
DS_API ds_status ds_sliced_wasserstein_on(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim,
                                          int directions, uint64_t seed, int p, ds_execution exec, void* workspace,
                                          size_t workspace_bytes, double* out);

/**
 * The asynchronous form of ds_sliced_wasserstein_on(): never synchronises; the distance lands in *result (device-
 * accessible on CUDA, host memory on the CPU) when the stream reaches it. Neither result nor the workspace may
 * overlap a or b (DS_INVALID_ARGUMENT).
 * @param result  one double where the executor writes the distance
 * @param ran     receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_sliced_wasserstein_async(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim,
                                             int directions, uint64_t seed, int p, double* result, ds_execution exec,
                                             void* workspace, size_t workspace_bytes, ds_executor* ran);

/**
 * Recovered component weights of n host samples under a mixture (diffsample::component_weights): the average
 * posterior responsibility of each component. Synchronous, host memory.
 * @param x    n x d host floats
 * @param out  receives K doubles
 */
DS_API ds_status ds_component_weights(const ds_mixture* reference, const float* x, int64_t n, double* out);

/** ds_component_weights() under an analytic posterior's components. @param out receives K doubles */
DS_API ds_status ds_posterior_component_weights(const ds_posterior* reference, const float* x, int64_t n,
                                                double* out);

/** max_k |ds_component_weights()_k - w_k| (diffsample::component_weight_error). @param out receives the error */
DS_API ds_status ds_component_weight_error(const ds_mixture* reference, const float* x, int64_t n, double* out);

/** ds_component_weight_error() under an analytic posterior. @param out receives the error */
DS_API ds_status ds_posterior_component_weight_error(const ds_posterior* reference, const float* x, int64_t n,
                                                     double* out);

/* --- binary data ----------------------------------------------------------------------------------------- */

/** Opaque mixture of product Bernoulli distributions on {-1,1}^d (diffsample::bernoulli_mixture). */
typedef struct ds_bernoulli_mixture ds_bernoulli_mixture;

/** Update rule of the discrete chains (values match diffsample::discrete_method). */
typedef enum ds_discrete_method {
  DS_DISCRETE_ONE_STAGE = 0,  /**< one-stage discrete Langevin (unadjusted) */
  DS_DISCRETE_METROPOLIS = 1, /**< one-stage proposal with the Metropolis-Hastings correction (exact law q) */
  DS_DISCRETE_TWO_STAGE = 2,  /**< two-stage (proximal) discrete Langevin (unadjusted) */
  DS_DISCRETE_METHOD_MAX_ENUM = 0x7FFFFFFF /**< not a method: keeps the enum 32-bit */
} ds_discrete_method;

/** Settings of ds_discrete_langevin() and ds_discrete_walk_jump(); initialise with ds_discrete_options_init(). */
typedef struct ds_discrete_options {
  size_t struct_size;        /**< sizeof(ds_discrete_options), set by ds_discrete_options_init() */
  ds_discrete_method method; /**< update rule (default DS_DISCRETE_METROPOLIS) */
  double alpha;              /**< flip strength, in (0, 1e18] (default 1) */
  double eta;                /**< step, > 0 (default 1) */
  int64_t steps;             /**< steps (per measurement for walk-jump), >= 0 (default 100) */
  int64_t measurements;      /**< walk-jump: measurements of one x, >= 1 (default 1) */
  int mean;                  /**< walk-jump: nonzero to output E[x | y_1..m] instead of its sign (default 0) */
  int start_uniform;         /**< discrete Langevin: nonzero to start uniformly instead of from y (default 0) */
  uint64_t seed;             /**< Philox key (default 0) */
  uint64_t first_chain;      /**< id of the call's first chain in the random stream (default 0) */
  uint64_t first_step;       /**< discrete Langevin: stream step of the call's first step (default 0) */
} ds_discrete_options;

/**
 * Creates a Bernoulli mixture of K components on {-1,1}^d from host arrays (copied; copied to the device
 * synchronously when a GPU is present).
 * @param weights        K positive finite weights (normalised internally)
 * @param probabilities  K x d row-major values P(x_j = +1 | component k), each in [0, 1]
 * @param out            receives the new handle (release with ds_bernoulli_mixture_destroy())
 */
DS_API ds_status ds_bernoulli_mixture_create(int64_t dim, int64_t components, const double* weights,
                                             const double* probabilities, ds_bernoulli_mixture** out);

/** Releases a Bernoulli mixture (synchronous: frees its device copy). NULL is ignored. */
DS_API void ds_bernoulli_mixture_destroy(ds_bernoulli_mixture* mixture);

/**
 * Evaluates @p what for the noisy law q at flip strength @p alpha in (0, 1e18] at n points y (n x d, any real values):
 * DS_LOG_DENSITY (n floats; the exact log pmf on {-1,1}^d), DS_SCORE (grad log q) or DS_DENOISER (E[x | y] =
 * score / alpha), n x d floats. Asynchronous on the CUDA executor.
 * @param ran  receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_bernoulli_mixture_evaluate(const ds_bernoulli_mixture* mixture, ds_quantity what, const float* y,
                                               int64_t n, double alpha, float* out, ds_execution exec,
                                               ds_executor* ran);

/**
 * Exact samples of the noisy variable (entries +-1 as floats; @p alpha = INFINITY for the prior itself): point i
 * draws from the Philox stream (seed, first_index + i, 0). Asynchronous on the CUDA executor.
 * @param labels  n component indices, or NULL
 * @param ran     receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_bernoulli_mixture_sample(const ds_bernoulli_mixture* mixture, float* out, int64_t n, double alpha,
                                             uint64_t seed, int32_t* labels, uint64_t first_index, ds_execution exec,
                                             ds_executor* ran);

/**
 * Writes the default options (metropolis, alpha 1, eta 1, 100 steps, 1 measurement, seed 0) and sets struct_size.
 * @return DS_INVALID_ARGUMENT for a null pointer or a struct_size of no known layout (nothing written then)
 */
DS_API ds_status ds_discrete_options_init(ds_discrete_options* options, size_t struct_size);

/**
 * Bytes of workspace a ds_discrete_langevin() (@p walk_jump 0) or ds_discrete_walk_jump() (nonzero) call needs.
 */
DS_API ds_status ds_discrete_workspace_bytes(const ds_bernoulli_mixture* mixture, int64_t n,
                                             const ds_discrete_options* options, int walk_jump, size_t* bytes);

/**
 * Discrete Langevin on q: options->steps steps of n chains in one fused launch; @p y (n x d) holds the start (every
 * entry +1 or -1) unless options->start_uniform, and receives the final states. On the CPU executor a start with
 * another value is refused before the run (DS_INVALID_ARGUMENT naming the entry); on the CUDA executor it is not
 * scanned (no synchronisation): that chain's row becomes NaN and its accepted count -1. No two of @p y, @p accepted
 * and @p workspace may overlap (DS_INVALID_ARGUMENT). Asynchronous on the CUDA executor.
 * @param accepted         n accepted-move counts, or NULL
 * @param workspace        ds_discrete_workspace_bytes() bytes, or NULL to allocate for the call
 * @param ran              receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_discrete_langevin(const ds_bernoulli_mixture* mixture, float* y, int64_t n,
                                      const ds_discrete_options* options, int64_t* accepted, ds_execution exec,
                                      void* workspace, size_t workspace_bytes, ds_executor* ran);

/**
 * Discrete walk-jump: per measurement, options->steps steps of the discrete chain on the measurement given the earlier
 * ones, then the jump sign(E[x | y_1..m]) (or E[x | y_1..m] with options->mean) written to @p x (n x d). No two of
 * @p x, @p noisy, @p accepted and @p workspace may overlap (DS_INVALID_ARGUMENT). Asynchronous on the CUDA executor.
 * @param noisy     n x d: the sum of the measurements, or NULL
 * @param accepted  n accepted-move counts, or NULL
 * @param ran       receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_discrete_walk_jump(const ds_bernoulli_mixture* mixture, float* x, int64_t n,
                                       const ds_discrete_options* options, float* noisy, int64_t* accepted,
                                       ds_execution exec, void* workspace, size_t workspace_bytes, ds_executor* ran);

/** "one_stage", "metropolis" or "two_stage" (or "unknown"). Static storage. */
DS_API const char* ds_discrete_method_name(ds_discrete_method method);
/** Parses the names of ds_discrete_method_name() (and "mh") into @p out. */
DS_API ds_status ds_parse_discrete_method(const char* name, ds_discrete_method* out);

#ifdef __cplusplus
}
#endif

#endif /* DIFFSAMPLE_DIFFSAMPLE_H */
