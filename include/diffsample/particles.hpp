/// @file particles.hpp
/// @brief Particle-system primitives for a batch of independent SMC problems: log-sum-exp, effective sample size,
/// log-normaliser increments and exact, deterministic resampling.
///
/// A batch holds B problems of N particles each; log-weights are B x N floats, one row per problem. Every
/// resampling scheme works on fixed-point integer weights and integer prefix sums, so the same inputs give the
/// same ancestors on every run, for every thread count and on both executors (README: "Why the ancestors are exact and deterministic").
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace diffsample {

/// Resampling schemes. All are unbiased (E[offspring_i] = N w_i) except metropolis, whose bias decays
/// geometrically with resampling_options::metropolis_steps.
enum class resampling_scheme : int {
  multinomial = 0,  ///< N independent draws from the weights
  stratified = 1,   ///< one uniform draw in each of the N strata [j/N, (j+1)/N)
  systematic = 2,   ///< one uniform shared by the N strata of a problem
  residual = 3,     ///< floor(N w_i) copies of particle i, multinomial on the residual weights
  metropolis = 4,   ///< collective-free Metropolis chains (Murray, Lee and Jacob 2016), biased for finite steps;
                    ///< a chain still on a zero weight after its steps draws its ancestor exactly by one pass
                    ///< over its problem's N weights
  rejection = 5,    ///< collective-free rejection sampler (Murray, Lee and Jacob 2016), unbiased; costs
                    ///< max w / mean w proposals per particle on average, at most 64, after which the particle's
                    ///< ancestor is drawn exactly by one pass over its problem's N weights (same law)
};

/// "multinomial", "stratified", "systematic", "residual", "metropolis" or "rejection".
DIFFSAMPLE_API const char* to_string(resampling_scheme s) noexcept;
/// Parses the names of to_string(resampling_scheme); throws invalid_argument otherwise.
DIFFSAMPLE_API resampling_scheme parse_resampling_scheme(const std::string& name);

/// How and when to resample.
struct resampling_options {
  resampling_scheme scheme = resampling_scheme::systematic;  ///< the scheme
  /// Resample a problem when its ESS < ess_threshold * N. 0 never resamples (statistics only); any value above 1
  /// always resamples a problem that has a positive weight. The decision uses the fixed-point ESS (see
  /// particle_report::ess), so it is the same on both executors.
  double ess_threshold = 0.5;
  std::uint64_t seed = 0;  ///< Philox seed; particle j of problem b draws from the stream (seed, b * N + j, step)
  std::uint64_t step = 0;  ///< step of the Philox stream (< limits::max_stream_steps): the SMC iteration index
  /// Metropolis iterations per particle, 1..limits::max_inner_steps; read by scheme metropolis only (the other
  /// schemes refuse a value other than 64)
  int metropolis_steps = 64;
};

/// Per-problem result of resample().
struct particle_report {
  double ess = 0;  ///< (sum w)^2 / sum w^2 in FP64 (0 when failed), in [1, N]
  /// logsumexp(log w) - log N in FP64: the increment of the log-normaliser estimate (-inf when failed)
  double log_normaliser_increment = 0;
  double log_sum_exp = 0;       ///< logsumexp(log w), max-shifted, in FP64 (-inf when failed)
  std::int64_t nan_count = 0;   ///< log-weights that were NaN or +inf; they are treated as -inf
  std::int32_t failed = 0;      ///< 1 when every weight is zero (all log-weights -inf, NaN or +inf)
  /// 1 when this problem is resampled (its fixed-point ESS below options.ess_threshold x N, and not failed): its
  /// ancestors are drawn, and written when an ancestors output is given; 0 when its ancestors are the identity. The
  /// same whichever outputs the call writes.
  std::int32_t resampled = 0;
};

/// Output buffers of resample(). Every pointer is optional; on the CUDA executor they must be device-accessible
/// (device or managed memory), on the CPU executor host-accessible. The threshold decides the same whichever are
/// given: without ancestors the reports (resampled included) and normalised weights are those of the call with them
/// (options.ess_threshold = 0 for statistics only, resampled = 0). No output may overlap the log-weights, another
/// output or the workspace (invalid_argument naming both).
struct particle_outputs {
  std::int32_t* ancestors = nullptr;    ///< B x N ancestor indices within the problem (0..N-1), or
  std::int64_t* ancestors64 = nullptr;  ///< the same as int64 (at most one of the two)
  float* normalised_weights = nullptr;  ///< B x N weights w_i / sum w (0 for a failed problem)
  particle_report* reports = nullptr;   ///< B reports
};

/// Bytes of workspace resample() needs for B problems of N particles with @p scheme (0 when B * N == 0).
/// @throws invalid_argument for negative or overflowing sizes, N > limits::max_particles or
///         B * N > limits::max_items
DIFFSAMPLE_API std::size_t resampling_workspace_bytes(std::int64_t problems, std::int64_t particles,
                                                      resampling_scheme scheme);

/// Computes per-problem statistics and resamples the problems whose ESS falls below the threshold.
///
/// NaN and +inf log-weights count as -inf (and are counted). A problem whose weights are all zero is reported as
/// failed and never resampled; its ancestors are the identity, like every problem that is not resampled.
/// Resampling uses fixed-point weights q_i = floor(2^k exp(l_i - max l)) with k = 62 - ceil(log2 N), integer
/// prefix sums and integer uniforms, so ancestors are exact functions of (log_weights, options) and agree across
/// runs, thread counts and executors. Particles whose weight is below 2^-k times the largest one are never chosen.
///
/// @param log_weights  B x N floats, device-accessible on the CUDA executor, host-accessible on the CPU one
/// @param problems     B >= 0
/// @param particles    N, 1 <= N <= limits::max_particles (N = 0 only when B = 0)
/// @param workspace    resampling_workspace_bytes(B, N, scheme) bytes on the executor's side, or nullptr to
///                     allocate stream-ordered scratch for this call
/// @return the executor that ran. Asynchronous on the CUDA executor: reports are written to device memory.
/// @throws invalid_argument naming the bad argument and value; nothing is launched then
DIFFSAMPLE_API executor resample(particle_outputs outputs, std::int64_t problems, std::int64_t particles,
                                 const float* log_weights, const resampling_options& options, execution exec = {},
                                 void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// resample() in the argument order before 0.3.0 (the outputs after the inputs and options).
[[deprecated("outputs first: resample(outputs, problems, particles, log_weights, options, exec)")]] inline executor
resample(const float* log_weights, std::int64_t problems, std::int64_t particles, const resampling_options& options,
         particle_outputs outputs, execution exec = {}, void* workspace = nullptr, std::size_t workspace_bytes = 0) {
  return resample(outputs, problems, particles, log_weights, options, exec, workspace, workspace_bytes);
}

/// Gathers particle states by ancestor: out[b, j, :] = states[b, ancestors[b, j], :] for B x N particles of
/// dimension dim. @p out must not overlap @p states or @p ancestors. An ancestor outside 0..N-1 gives a row of NaN
/// (nothing outside problem b's states is read; the indices are not scanned before the launch). Asynchronous on the
/// CUDA executor.
/// @return the executor that ran.
DIFFSAMPLE_API executor gather_particles(float* out, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                                         const float* states, const std::int32_t* ancestors, execution exec = {});
/// int64 ancestors overload of gather_particles().
DIFFSAMPLE_API executor gather_particles(float* out, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                                         const float* states, const std::int64_t* ancestors, execution exec = {});
/// gather_particles() in the argument order before 0.3.0 (the output after the inputs).
[[deprecated("output first: gather_particles(out, problems, particles, dim, states, ancestors, exec)")]] inline executor
gather_particles(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                 const std::int32_t* ancestors, float* out, execution exec = {}) {
  return gather_particles(out, problems, particles, dim, states, ancestors, exec);
}
/// The int64 ancestors form of the deprecated order above.
[[deprecated("output first: gather_particles(out, problems, particles, dim, states, ancestors, exec)")]] inline executor
gather_particles(const float* states, std::int64_t problems, std::int64_t particles, std::int64_t dim,
                 const std::int64_t* ancestors, float* out, execution exec = {}) {
  return gather_particles(out, problems, particles, dim, states, ancestors, exec);
}

}  // namespace diffsample
