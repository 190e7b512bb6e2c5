/**
 * @file diffsample.h
 * @brief C ABI of libdiffsample, for embedding and foreign-function use (C99; also includable from C++).
 *
 * Every function that can fail returns a ::ds_status. On failure the output arguments are left unchanged and
 * ds_last_error() returns a one-line message naming the offending argument and its value; no C++ exception ever
 * crosses this interface. Handles are opaque pointers owned by the caller and released with their destroy function.
 * Buffers follow the C++ API's rules: row-major float32, device (or managed) memory for the CUDA executor, host (or
 * managed) memory for the CPU executor; calls on the CUDA executor are asynchronous on the given stream.
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

/** Langevin update rule (values match diffsample::langevin_method). */
typedef enum ds_langevin_method {
  DS_ULA = 0,      /**< x <- x + gamma g(x) + sqrt(2 gamma) xi */
  DS_MALA = 1,     /**< ULA proposal with a Metropolis-Hastings accept/reject step */
  DS_TAMED_ULA = 2, /**< x <- x + gamma g / (1 + gamma |g|) + sqrt(2 gamma) xi */
  DS_LANGEVIN_METHOD_MAX_ENUM = 0x7FFFFFFF /**< not a method: keeps the enum 32-bit */
} ds_langevin_method;

/** The Gaussian channel x_t = a x0 + s z (a > 0, s >= 0, both finite). {1, 0} is the prior itself. */
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

/** Settings of one Langevin run; initialise with ds_langevin_options_default() before changing fields. */
typedef struct ds_langevin_options {
  ds_langevin_method method; /**< update rule (default DS_MALA) */
  double step_size;          /**< gamma > 0 (default 1e-2) */
  int64_t steps;             /**< number of steps, >= 0 (default 1000) */
  ds_channel target;         /**< channel whose p_t the chains target (default the prior {1, 0}) */
  uint64_t seed;             /**< Philox key (default 0) */
  uint64_t first_chain;      /**< id of the call's first chain in the random stream (default 0) */
  uint64_t first_step;       /**< step index of the call's first step in the random stream, < 2^30 (default 0) */
  int64_t record_every;      /**< if > 0, record the state after every record_every-th step (default 0) */
} ds_langevin_options;

/** What a Langevin run did. */
typedef struct ds_langevin_report {
  ds_executor ran;   /**< executor that ran */
  int register_path; /**< nonzero when d was in the compiled list and chain state stayed in registers */
} ds_langevin_report;

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
 * @param means           K x d row-major component means
 * @param variances       variances_count values, every one positive and finite
 * @param variances_count K (isotropic components) or K x d (diagonal components)
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
 * n x d floats (DS_SCORE, DS_DENOISER). Asynchronous on the CUDA executor.
 * @param ran  receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_evaluate(const ds_mixture* mixture, ds_quantity what, const float* x, int64_t n,
                                     ds_channel ch, float* out, ds_execution exec, ds_executor* ran);

/**
 * Jacobian of the denoiser times v, per point: (d E[x0 | x_t = x] / dx) v. x, v and out are n x d.
 * Asynchronous on the CUDA executor.
 * @param ran  receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_denoiser_jvp(const ds_mixture* mixture, const float* x, const float* v, int64_t n,
                                         ds_channel ch, float* out, ds_execution exec, ds_executor* ran);

/**
 * Exact samples of p_t: point i draws from the Philox stream (seed, first_index + i, 0). Asynchronous on the CUDA
 * executor.
 * @param out     n x d floats
 * @param labels  n component indices, or NULL to skip
 * @param ran     receives the executor that ran (may be NULL)
 */
DS_API ds_status ds_mixture_sample(const ds_mixture* mixture, float* out, int64_t n, ds_channel ch, uint64_t seed,
                                   int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran);

/* --- Langevin --------------------------------------------------------------------------------------------- */

/** The default options: MALA, step size 1e-2, 1000 steps, the prior, seed 0, no recording. */
DS_API ds_langevin_options ds_langevin_options_default(void);

/**
 * Bytes of device workspace a ds_langevin() call with these arguments needs (0 when d is in the register list).
 */
DS_API ds_status ds_langevin_workspace_bytes(const ds_mixture* mixture, int64_t n, const ds_langevin_options* options,
                                             size_t* bytes);

/**
 * Runs options->steps Langevin steps of every chain in one fused launch. @p x (n x d) holds the initial states and
 * receives the final ones. Asynchronous on the CUDA executor.
 * @param trajectory       (steps / record_every) x n x d floats when options->record_every > 0, else NULL
 * @param accepted         n accepted-proposal counts (MALA; ULA variants write the step count), or NULL
 * @param workspace        ds_langevin_workspace_bytes() bytes of device memory, or NULL to allocate stream-ordered
 * @param workspace_bytes  size of @p workspace
 * @param report           receives what the run did (may be NULL)
 */
DS_API ds_status ds_langevin(const ds_mixture* mixture, float* x, int64_t n, const ds_langevin_options* options,
                             float* trajectory, int64_t* accepted, ds_execution exec, void* workspace,
                             size_t workspace_bytes, ds_langevin_report* report);

/* --- metrics ---------------------------------------------------------------------------------------------- */

/**
 * Sliced Wasserstein-p distance between two host sample sets (n_a x d and n_b x d, row-major float): the mean over
 * @p directions random unit directions of the exact 1-D W_p^p, to the power 1/p. Synchronous, host memory.
 * @param p    1 or 2
 * @param out  receives the distance
 */
DS_API ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t d,
                                       int directions, uint64_t seed, int p, double* out);

#ifdef __cplusplus
}
#endif

#endif /* DIFFSAMPLE_DIFFSAMPLE_H */
