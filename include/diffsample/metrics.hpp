/// @file metrics.hpp
/// @brief Accuracy metrics against exact references: sliced Wasserstein distances (host, or either executor) and
/// the error of recovered mixture-component weights (host).
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace diffsample {

class gaussian_mixture;
class mixture_posterior;

/// Sliced Wasserstein distance between two host sample sets (n_a x dim and n_b x dim, row-major float): the average
/// over @p directions random unit directions (Philox stream of @p seed) of the exact 1-D Wasserstein-p distance
/// between the projected empirical distributions (sizes may differ), returned as (mean of W_p^p)^(1/p).
/// p is 1 or 2. Projections are computed in FP64. Synchronous, host memory.
/// Two independent exact sets of the same sizes give the floor.
/// @throws invalid_argument for n_a, n_b, d or directions < 1, p not 1 or 2, a null or device pointer, sizes whose
///         byte count overflows, or a non-finite value in @p a or @p b (the message names the sample)
DIFFSAMPLE_API double sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t dim, const float* a,
                                         const float* b, int directions, std::uint64_t seed, int p = 1);
/// The host sliced_wasserstein() in the argument order before 0.3.0 (each set before its size).
[[deprecated("sizes first: sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p)")]] inline double
sliced_wasserstein(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t dim,
                   int directions, std::uint64_t seed, int p = 1) {
  return sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p);
}

/// Scratch budget of sliced_wasserstein() on an executor when no workspace is given: directions are processed in
/// passes of as many as fit in 256 MiB (at least one, whatever its size).
inline constexpr std::size_t sliced_wasserstein_scratch_limit = std::size_t(256) << 20;

/// Bytes of workspace that sliced_wasserstein_async() (or the executor overload of sliced_wasserstein()) needs to
/// process @p directions_per_pass directions in one pass: about (n_a + n_b) x directions_per_pass x 8 bytes on the
/// CUDA executor (two float key buffers, plus CUB's sort storage) and half that on the CPU executor. A workspace
/// of the size for one direction is the smallest accepted; a larger one lets more directions share a pass.
/// @param where  executor::cuda or executor::cpu; executor::automatic means CUDA when a GPU is present
/// @throws invalid_argument for sizes < 1 or a byte count that overflows
DIFFSAMPLE_API std::size_t sliced_wasserstein_workspace_bytes(std::int64_t n_a, std::int64_t n_b, std::int64_t dim,
                                                              int directions_per_pass,
                                                              executor where = executor::automatic);

/// Sliced Wasserstein distance on an executor, written to @p result; asynchronous on the CUDA executor.
///
/// Computes what the host sliced_wasserstein() computes, with the same directions (the Philox stream (seed, t, 0)
/// for direction t, normalised in FP64), the same FP64 dot products and the same exact 1-D W_p^p, summed over
/// directions in the same order. The one difference is that projections are rounded to float before sorting.
/// Rounding moves each projected atom by at most 2^-24 of its value, and the 1-D W_p (and their mean, or root mean
/// square for p = 2) is 1-Lipschitz in such moves, so on the CPU executor the result differs from the host
/// function's by at most 2^-23 max_i ||x_i|| (over both sets) plus FP64 rounding. On the CUDA executor the normals
/// z of a direction may differ from the host's in their last bits (the device's __sincosf; at most 1e-5 each), which
/// moves the direction by at most 2e-5 sqrt(d) / ||z|| and adds twice that times max_i ||x_i|| (a few 1e-5
/// max_i ||x_i|| for d >= 8; far less in practice).
///
/// Work: one pass per chunk of directions (projections, a per-direction sort: CUB's segmented radix sort on CUDA,
/// std::sort on the CPU; then each direction's exact 1-D distance, summed over the atoms of the larger set: by one
/// CUDA block per direction on the GPU, in a fixed order so the value does not depend on timing). On the CUDA
/// executor nothing is read back and nothing synchronises the host, so with a caller workspace the call can be
/// captured in a CUDA graph (stream capture, relaxed mode); n_a + n_b must be at most limits::max_int_count there.
/// Memory: without a workspace, one stream-ordered allocation of at most sliced_wasserstein_scratch_limit bytes (or
/// the size for one direction when that is larger); with a workspace, as many directions per pass as fit in it.
///
/// A non-finite value in the samples (or a projection beyond the float range) makes @p result NaN; samples are not
/// scanned beforehand, as that would need a synchronising reduction.
///
/// @param a, b      n_a x dim and n_b x dim row-major floats: device-accessible (device or managed memory) on the CUDA
///                  executor, host-accessible on the CPU executor
/// @param p         1 or 2
/// @param result    one double on the executor's side, receives (mean over directions of W_p^p)^(1/p)
/// @param exec      executor and stream; executor::automatic follows where @p a lives
/// @param workspace optional caller buffer on the executor's side (see sliced_wasserstein_workspace_bytes()), or
///                  nullptr to allocate stream-ordered
/// @return the executor that ran
/// @throws invalid_argument for n_a, n_b, d or directions < 1, d > limits::max_int_count, p not 1 or 2, a null
///         pointer, a pointer on the wrong side, sizes whose byte count overflows, a workspace too small for one
///         direction, or a result or workspace that shares memory with a or b (a and b may be one array);
///         out_of_memory when the scratch does not fit
DIFFSAMPLE_API executor sliced_wasserstein_async(double* result, std::int64_t n_a, std::int64_t n_b,
                                                 std::int64_t dim, const float* a, const float* b, int directions,
                                                 std::uint64_t seed, int p, execution exec = {},
                                                 void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// sliced_wasserstein_async() in the argument order before 0.3.0 (the result after the inputs).
[[deprecated("output and sizes first: sliced_wasserstein_async(result, n_a, n_b, dim, a, b, directions, seed, p, "
             "exec)")]] inline executor
sliced_wasserstein_async(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t dim,
                         int directions, std::uint64_t seed, int p, double* result, execution exec = {},
                         void* workspace = nullptr, std::size_t workspace_bytes = 0) {
  return sliced_wasserstein_async(result, n_a, n_b, dim, a, b, directions, seed, p, exec, workspace,
                                  workspace_bytes);
}

/// Sliced Wasserstein distance on an executor, returned on the host: sliced_wasserstein_async() followed by a
/// copy of the value to the host. Synchronises exec.stream on the CUDA executor (it returns a host value).
/// Same arguments, guarantees and agreement with the host sliced_wasserstein() as sliced_wasserstein_async().
/// @throws invalid_argument as sliced_wasserstein_async(), when the result is NaN because a sample holds a
///         non-finite value (checked after the run), and on the CUDA executor while exec.stream is being captured
///         into a CUDA graph (the synchronisation cannot be captured: capture sliced_wasserstein_async()), before
///         anything is issued
DIFFSAMPLE_API double sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t dim, const float* a,
                                         const float* b, int directions, std::uint64_t seed, int p, execution exec,
                                         void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// sliced_wasserstein() on an executor in the argument order before 0.3.0 (each set before its size).
[[deprecated("sizes first: sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p, exec)")]] inline double
sliced_wasserstein(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t dim,
                   int directions, std::uint64_t seed, int p, execution exec, void* workspace = nullptr,
                   std::size_t workspace_bytes = 0) {
  return sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p, exec, workspace, workspace_bytes);
}

/// Mixture-component weights recovered from samples: the average over the n samples of each component's
/// posterior responsibility r_k(x) = w'_k N(x; m'_k, S'_k) / sum_j w'_j N(x; m'_j, S'_j) under the exact
/// posterior mixture (full covariances), K values summing to one.
///
/// Host, synchronous, FP64: log-densities through Cholesky factors of S'_k (whitened differences, no expanded
/// quadratic forms), responsibilities by a max-shifted softmax in log space. OpenMP over samples in fixed blocks
/// whose partial sums are added in block order, so the result does not depend on the thread count.
/// For exact samples each recovered weight is unbiased with standard error at most sqrt(w'_k (1 - w'_k) / n)
/// (a responsibility lies in [0, 1] with mean w'_k).
/// @param x  n x d_x host floats
/// @throws invalid_argument for n < 1, a null or device pointer, a non-finite sample value (naming the sample), or a
///         posterior covariance that is not numerically positive definite (e.g. sigma_y = 0)
DIFFSAMPLE_API std::vector<double> component_weights(const mixture_posterior& reference, std::int64_t n,
                                                     const float* x);
/// component_weights() in the argument order before 0.3.0 (the samples before their count).
[[deprecated("size first: component_weights(reference, n, x)")]] inline std::vector<double>
component_weights(const mixture_posterior& reference, const float* x, std::int64_t n) {
  return component_weights(reference, n, x);
}

/// Mixture-component weights recovered from samples of a gaussian_mixture (diagonal or isotropic components):
/// the average responsibility r_k(x) = w_k N(x; mu_k, diag v_k) / sum_j w_j N(x; mu_j, diag v_j), K values.
/// Host, synchronous, FP64, deterministic as the posterior overload; same standard error sqrt(w_k (1 - w_k) / n).
/// @param x  n x dim host floats
/// @throws invalid_argument for n < 1, a null or device pointer, or a non-finite sample value
DIFFSAMPLE_API std::vector<double> component_weights(const gaussian_mixture& reference, std::int64_t n,
                                                     const float* x);
/// component_weights() in the argument order before 0.3.0 (the samples before their count).
[[deprecated("size first: component_weights(reference, n, x)")]] inline std::vector<double>
component_weights(const gaussian_mixture& reference, const float* x, std::int64_t n) {
  return component_weights(reference, n, x);
}

/// Error of the recovered component weights: max_k |component_weights(reference, n, x)_k - w'_k| against the
/// posterior weights w'_k. For n exact samples the Monte Carlo standard error of component k is about
/// sqrt(w'_k (1 - w'_k) / n) (at most that), so errors of a few of those are chance.
/// @throws invalid_argument as component_weights()
DIFFSAMPLE_API double component_weight_error(const mixture_posterior& reference, std::int64_t n, const float* x);
/// component_weight_error() in the argument order before 0.3.0 (the samples before their count).
[[deprecated("size first: component_weight_error(reference, n, x)")]] inline double
component_weight_error(const mixture_posterior& reference, const float* x, std::int64_t n) {
  return component_weight_error(reference, n, x);
}

/// Error of the recovered component weights of a gaussian_mixture: max_k |component_weights(reference, n, x)_k - w_k|;
/// standard error about sqrt(w_k (1 - w_k) / n) per component for exact samples.
/// @throws invalid_argument as component_weights()
DIFFSAMPLE_API double component_weight_error(const gaussian_mixture& reference, std::int64_t n, const float* x);
/// component_weight_error() in the argument order before 0.3.0 (the samples before their count).
[[deprecated("size first: component_weight_error(reference, n, x)")]] inline double
component_weight_error(const gaussian_mixture& reference, const float* x, std::int64_t n) {
  return component_weight_error(reference, n, x);
}

}  // namespace diffsample
