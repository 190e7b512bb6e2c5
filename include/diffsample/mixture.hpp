/// @file mixture.hpp
/// @brief Gaussian mixtures with diagonal (or isotropic) components, evaluated exactly at any noise channel.
///
/// The channel is x_t = a x0 + s z with z ~ N(0, I): the prior p0 = sum_k w_k N(mu_k, diag(v_k)) becomes
/// p_t = sum_k w_k N(a mu_k, diag(a^2 v_k + s^2)). Scores, denoisers E[x0 | x_t] and their Jacobian-vector products
/// are closed-form, which is what makes every sampler of the library exactly testable.
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffsample {

/// Largest magnitude of a mean, an observation value or an operator entry that the library accepts (10^18): the
/// FP32 kernels square differences of such values, and (2 x 10^18)^2 = 4 x 10^36 stays below FLT_MAX (3.4 x 10^38).
constexpr double max_abs_value = 1e18;
/// Smallest variance a mixture component accepts (10^-36): a standard deviation of at least 10^-18, so that the
/// variance and its inverse are normal FP32 numbers (FLT_MIN is 1.2 x 10^-38).
constexpr double min_variance = 1e-36;
/// Largest variance a mixture component accepts (10^36): a standard deviation of at most max_abs_value.
constexpr double max_variance = 1e36;

/// The Gaussian channel x_t = a x0 + s z. 0 <= a <= max_abs_value and 0 <= s <= max_abs_value (the FP32 kernels square
/// them), not both 0. The default (1, 0) is the prior itself; a = 0 (the linear interpolant's and the cosine
/// schedule's t = 1) is N(0, s^2 I) whatever the prior: score -x / s^2, denoiser the prior mean, its Jacobian 0.
struct channel {
  double a = 1.0;  ///< signal scale alpha(t)
  double s = 0.0;  ///< noise scale beta(t)
};

/// What gaussian_mixture::evaluate computes for each point.
enum class quantity : int {
  log_density = 0,  ///< log p_t(x): one float per point
  score = 1,        ///< grad log p_t(x): d floats per point
  denoiser = 2,     ///< E[x0 | x_t = x] (Tweedie): d floats per point
};

/// How evaluate() forms the softmax over the K components of a mixture.
enum class mixture_path : int {
  /// The library's choice: gemm when the mixture is isotropic, the executor has a matrix-product library (a BLAS
  /// found at build time on the CPU, cuBLAS on the GPU) and the size passes the measured crossover
  /// (gemm_crossover()), otherwise direct.
  automatic = 0,
  /// Per point and component: centred logits (x - a mu_k)^2 / c_k and an online softmax, the fused samplers' own
  /// functions. Any mixture.
  direct = 1,
  /// Logits from the products x . mu_k of a matrix product (BLAS sgemm on the CPU, cuBLAS on the GPU) with the
  /// norms precomputed, recentred on the mean of the means, corrected where cancellation could lose accuracy, and
  /// the responsibility-weighted sum of the means as a second product; components in chunks, so memory stays
  /// bounded for any K. Isotropic mixtures only. Error bound in the README ("Large mixtures: the GEMM path").
  gemm = 2,
};

/// "automatic", "direct" or "gemm".
DIFFSAMPLE_API const char* to_string(mixture_path p) noexcept;
/// Parses "auto"/"automatic", "direct" or "gemm"; throws invalid_argument otherwise.
DIFFSAMPLE_API mixture_path parse_mixture_path(const std::string& name);

/// Settings of gaussian_mixture::evaluate() beyond the executor. The direct path reads none of the gemm path's
/// settings: with path = direct, allow_tf32, component_chunk and point_block must hold their defaults
/// (invalid_argument naming the field otherwise).
struct evaluate_options {
  mixture_path path = mixture_path::automatic;  ///< which path; automatic follows gemm_crossover()
  /// CUDA gemm path only: let cuBLAS round the operands of the logits' product to TF32 (10-bit mantissa, unit
  /// roundoff 2^-11 instead of 2^-24). The error bound and the correction use that unit roundoff, so results keep
  /// the stated accuracy but more components are recomputed exactly. Ignored on the CPU.
  bool allow_tf32 = false;
  /// Components per chunk of the gemm path (0: 512). Results do not depend on it beyond rounding.
  std::int64_t component_chunk = 0;
  /// Points per block of the gemm path (0: 128 on the CPU; on the CUDA executor points per pass, 0: as many as hold
  /// 256 MiB of (2 d + component_chunk) floats a point, between 8192 and 65536). Memory
  /// of a call is about point_block x (2 d + component_chunk) floats per thread (CPU) or per pass (CUDA).
  std::int64_t point_block = 0;
};

/// What an evaluate() call did.
struct evaluate_report {
  executor ran = executor::automatic;         ///< executor that ran
  mixture_path path = mixture_path::automatic;  ///< path that ran (direct or gemm)
};

/// The size rule of mixture_path::automatic: gemm when d >= min_dim and K x d >= min_kd (and the mixture is
/// isotropic with a matrix-product library present). Measured with bench_mixture_gemm (README).
struct gemm_crossover_rule {
  std::int64_t min_dim;  ///< smallest dimension d
  std::int64_t min_kd;   ///< smallest K x d
};
/// The crossover of the executor (cpu or cuda).
DIFFSAMPLE_API gemm_crossover_rule gemm_crossover(executor where) noexcept;
/// True when the CPU executor's gemm path runs on a BLAS found at build time (false: on the library's own loops,
/// correct but slower, and automatic never picks it).
DIFFSAMPLE_API bool cpu_blas_available() noexcept;
/// Name of the CPU BLAS ("OpenBLAS 0.3.21 ... SINGLE_THREADED", or "none").
DIFFSAMPLE_API std::string cpu_blas_name();

namespace detail {
struct mixture_storage;
}

/// An owning Gaussian mixture: host copies in FP64 and FP32, and a device copy when a GPU is present.
///
/// Construction validates every parameter and, when a GPU is present, copies the FP32 parameters to the device
/// synchronously (cudaMemcpy). All evaluation calls are then asynchronous on the CUDA executor. The object is
/// cheap to move and not copyable; kernels receive a non-owning view of it by value.
class DIFFSAMPLE_API gaussian_mixture {
 public:
  /// @param dim        dimension d >= 1
  /// @param weights    K positive finite weights (normalised internally; they need not sum to one)
  /// @param means      K x d row-major component means
  /// @param variances  K values (isotropic components, v_k = tau_k^2 in every coordinate) or K x d values
  ///                   (diagonal components); every value positive and finite
  /// When a GPU is present the FP32 parameter tables are copied to the device on the legacy default stream and that
  /// stream is synchronised: construction synchronises, and the tables are in place for kernels on any stream
  /// (non-blocking ones included) when the constructor returns.
  /// @throws invalid_argument naming the bad argument and value; out_of_memory naming the table (FP32 copy of the
  ///         means, ...) and its size when the host cannot hold it, or when the device copy needs more memory than
  ///         is free; cuda_error if the device copy fails
  gaussian_mixture(std::int64_t dim, std::vector<double> weights, std::vector<double> means,
                   std::vector<double> variances);
  ~gaussian_mixture();
  /// Moves the storage; the moved-from object may only be destroyed or assigned.
  gaussian_mixture(gaussian_mixture&&) noexcept;
  /// Moves the storage; the moved-from object may only be destroyed or assigned.
  gaussian_mixture& operator=(gaussian_mixture&&) noexcept;
  gaussian_mixture(const gaussian_mixture&) = delete;
  gaussian_mixture& operator=(const gaussian_mixture&) = delete;

  std::int64_t components() const noexcept;  ///< K
  std::int64_t dim() const noexcept;         ///< d
  bool isotropic() const noexcept;           ///< true when variances were given as K values
  const std::vector<double>& weights() const noexcept;    ///< normalised weights, K
  const std::vector<double>& means() const noexcept;      ///< K x d
  const std::vector<double>& variances() const noexcept;  ///< K (isotropic) or K x d

  /// Evaluates @p what at n points x (n x d row-major) of the channel @p ch, in FP32 with a one-pass online
  /// softmax over components. @p out holds n floats (log_density) or n x d floats (score, denoiser).
  /// Buffers are device-accessible for the CUDA executor and host-accessible for the CPU one; @p out may not overlap
  /// @p x, in place included (invalid_argument). Asynchronous on the CUDA executor. @return the executor that ran.
  executor evaluate(float* out, std::int64_t n, const float* x, channel ch, quantity what,
                    execution exec = {}) const;
  /// evaluate() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: evaluate(out, n, x, ch, what, exec)")]] executor evaluate(
      quantity what, const float* x, std::int64_t n, channel ch, float* out, execution exec = {}) const {
    return evaluate(out, n, x, ch, what, exec);
  }

  /// evaluate() with a choice of path (mixture_path) and a report of what ran. On the CUDA executor the gemm path
  /// needs evaluate_workspace_bytes() of device workspace: pass it to keep the call free of allocation, or nullptr
  /// for one stream-ordered allocation per call. Asynchronous on the CUDA executor (no host synchronisation), except
  /// that the first gemm-path call of a mixture on the CUDA executor prepares its tables and cuBLAS handle
  /// (allocates and synchronises; prepare_gemm() does this ahead, and must have done it before the call is captured
  /// in a CUDA graph).
  /// @throws invalid_argument as evaluate() does, when gemm is forced on a diagonal mixture or the workspace is too
  ///         small, and for that first CUDA gemm-path call while exec.stream is being captured
  evaluate_report evaluate(float* out, std::int64_t n, const float* x, channel ch, quantity what,
                           const evaluate_options& options, execution exec = {}, void* workspace = nullptr,
                           std::size_t workspace_bytes = 0) const;
  /// evaluate() with options in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: evaluate(out, n, x, ch, what, options, exec, workspace, workspace_bytes)")]]
  evaluate_report evaluate(quantity what, const float* x, std::int64_t n, channel ch, float* out,
                           const evaluate_options& options, execution exec = {}, void* workspace = nullptr,
                           std::size_t workspace_bytes = 0) const {
    return evaluate(out, n, x, ch, what, options, exec, workspace, workspace_bytes);
  }

  /// Bytes of device workspace evaluate(out, n, x, ch, what, options, exec, workspace) needs for n points (0 on
  /// the CPU executor and on the direct path).
  std::size_t evaluate_workspace_bytes(std::int64_t n, quantity what, const evaluate_options& options = {},
                                       execution exec = {}) const;
  /// evaluate_workspace_bytes() in the argument order before 0.3.0 (the quantity before the size).
  [[deprecated("sizes first: evaluate_workspace_bytes(n, what, options, exec)")]] std::size_t
  evaluate_workspace_bytes(quantity what, std::int64_t n, const evaluate_options& options = {},
                           execution exec = {}) const {
    return evaluate_workspace_bytes(n, what, options, exec);
  }

  /// The path evaluate() runs for n points on executor @p where under options.path (never automatic).
  mixture_path chosen_path(std::int64_t n, quantity what, const evaluate_options& options, executor where) const;
  /// chosen_path() in the argument order before 0.3.0 (the quantity before the size, the executor before the
  /// options).
  [[deprecated("sizes first, executor last: chosen_path(n, what, options, where)")]] mixture_path chosen_path(
      quantity what, std::int64_t n, executor where, const evaluate_options& options = {}) const {
    return chosen_path(n, what, options, where);
  }

  /// Builds the gemm path's tables (recentred means, norms) for the executor ahead of the first gemm-path call; on
  /// the CUDA executor also the mixture's cuBLAS handle and the current device's handle of the guided samplers'
  /// operator products (which a DPS or Pi-GDM plan on the products path makes when it is created). Allocates and
  /// synchronises; thread-safe; idempotent. Call it before capturing gemm-path calls in a CUDA graph: none of this
  /// can be captured, and a first gemm-path call of the mixture on the CUDA executor under stream capture is refused
  /// (invalid_argument naming this call). guided_sample() itself is refused under capture on any path.
  /// @throws invalid_argument for where = cuda without a GPU, and when the CUDA tables or the current device's
  ///         operator-products handle are still to be made while a blocking stream of the current device is being
  ///         captured (the work on the legacy default stream would join that capture; cublasCreate allocates outside
  ///         any stream), before anything is issued. Once both exist the call makes nothing and is accepted.
  void prepare_gemm(executor where) const;

  /// The empirical distribution of n points in dimension d smoothed by an isotropic Gaussian of variance
  /// @p variance: a mixture of n equal-weight components N(point_i, variance I). Its score at any channel is the
  /// exact score of the smoothed data, the "optimal denoiser" of a diffusion model trained to zero loss.
  /// @param n       1..limits::max_components
  /// @param dim     1..limits::max_dim
  /// @param points  n x d row-major host array (copied as the means)
  /// @throws invalid_argument naming the bad argument and value; out_of_memory naming the points when their n x d
  ///         doubles exceed limits::max_host_bytes (before anything is allocated or read) or the host cannot give
  ///         their copy
  static gaussian_mixture empirical(std::int64_t n, std::int64_t dim, const double* points, double variance);
  /// empirical() in the argument order before 0.3.0 (the points before their sizes).
  [[deprecated("sizes first: empirical(n, dim, points, variance)")]] static gaussian_mixture empirical(
      const double* points, std::int64_t n, std::int64_t dim, double variance) {
    return empirical(n, dim, points, variance);
  }

  /// Jacobian of the denoiser times v: (d E[x0|x_t=x] / dx) v, per point, with no d x d matrix formed.
  /// x, v and out are n x d; out may overlap neither x nor v (invalid_argument). Asynchronous on the CUDA executor.
  /// @return the executor that ran.
  executor denoiser_jvp(float* out, std::int64_t n, const float* x, const float* v, channel ch,
                        execution exec = {}) const;
  /// denoiser_jvp() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: denoiser_jvp(out, n, x, v, ch, exec)")]] executor denoiser_jvp(
      const float* x, const float* v, std::int64_t n, channel ch, float* out, execution exec = {}) const {
    return denoiser_jvp(out, n, x, v, ch, exec);
  }

  /// FP64 reference of evaluate() on the host (synchronous, single-threaded per point, OpenMP over points). @p out
  /// may not overlap @p x (invalid_argument), as for evaluate().
  void evaluate_fp64(double* out, std::int64_t n, const double* x, channel ch, quantity what) const;
  /// evaluate_fp64() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: evaluate_fp64(out, n, x, ch, what)")]] void evaluate_fp64(
      quantity what, const double* x, std::int64_t n, channel ch, double* out) const {
    evaluate_fp64(out, n, x, ch, what);
  }
  /// denoiser_jvp() with a choice of path and a report of what ran. The gemm path (BLAS on the CPU executor, cuBLAS
  /// on the CUDA executor, where the call allocates its device workspace on the stream) forms mu_k . v as a third
  /// product and sum_k r_k (p_k - pbar) mu_k / c_k as a fourth (the direct path's law-of-total-covariance form,
  /// accurate relative to J v at any a), with the same recentring and correction as evaluate().
  /// The plain denoiser_jvp() always runs the direct path.
  evaluate_report denoiser_jvp(float* out, std::int64_t n, const float* x, const float* v, channel ch,
                               const evaluate_options& options, execution exec = {}) const;
  /// denoiser_jvp() with options in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: denoiser_jvp(out, n, x, v, ch, options, exec)")]] evaluate_report denoiser_jvp(
      const float* x, const float* v, std::int64_t n, channel ch, float* out, const evaluate_options& options,
      execution exec = {}) const {
    return denoiser_jvp(out, n, x, v, ch, options, exec);
  }

  /// FP64 reference of denoiser_jvp() on the host. @p out may overlap neither @p x nor @p v (invalid_argument).
  void denoiser_jvp_fp64(double* out, std::int64_t n, const double* x, const double* v, channel ch) const;
  /// denoiser_jvp_fp64() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: denoiser_jvp_fp64(out, n, x, v, ch)")]] void denoiser_jvp_fp64(
      const double* x, const double* v, std::int64_t n, channel ch, double* out) const {
    denoiser_jvp_fp64(out, n, x, v, ch);
  }

  /// Exact samples of p_t: point i draws its component and noise from the Philox stream (seed, first_index + i, 0),
  /// so samples do not depend on batch split or executor (up to the last bits of the normals).
  /// @param out         n x d floats
  /// @param labels      optional n int32 component indices (nullptr to skip), not overlapping @p out
  /// @param first_index 0..limits::max_first_chain
  /// @return the executor that ran. Asynchronous on the CUDA executor.
  executor sample(float* out, std::int64_t n, channel ch, std::uint64_t seed, std::int32_t* labels = nullptr,
                  std::uint64_t first_index = 0, execution exec = {}) const;

  /// Internal storage (device and host arrays) for the library's launchers.
  const detail::mixture_storage& storage() const noexcept { return *storage_; }

 private:
  std::unique_ptr<detail::mixture_storage> storage_;
  // The direct path of evaluate() (per point, per component).
  executor evaluate_direct(quantity what, const float* x, std::int64_t n, channel ch, float* out,
                           execution exec) const;

};

/// A mixture whose K means lie on a g x g grid with the given spacing in the first two coordinates, repeated
/// across higher coordinates (coordinate j uses the grid coordinate j mod 2), with isotropic variance @p variance
/// and the given weights (K = g^2 entries; pass {} for equal weights). The 25-component benchmark mixture is
/// grid_mixture(d, 5, spacing, variance, weights).
/// @throws invalid_argument for dim outside [1, limits::max_dim] or grid outside [1, limits::max_grid], a spacing
///         that puts the outermost means beyond max_abs_value or a variance outside [min_variance, max_variance]
///         (each named as given), and out_of_memory when the K x dim means exceed limits::max_host_bytes, before
///         anything is allocated
DIFFSAMPLE_API gaussian_mixture grid_mixture(std::int64_t dim, int grid, double spacing, double variance,
                                             std::vector<double> weights = {});

}  // namespace diffsample
