/// @file binary.hpp
/// @brief Binary data on {-1,1}^d: mixtures of product Bernoulli priors seen through the binary-flip channel, and
/// the discrete samplers (discrete Langevin, its Metropolis-adjusted and two-stage forms, discrete walk-jump).
///
/// The channel is y = x o eps with independent flips, P(eps_j = +-1) = sigmoid(+-2 alpha): alpha plays the part of
/// an inverse noise variance. For the prior p(x) = sum_k w_k prod_j p_kj^{[x_j = 1]} (1 - p_kj)^{[x_j = -1]} the
/// law of y is q(y) = sum_k w_k prod_j (p_kj e^{alpha y_j} + (1 - p_kj) e^{-alpha y_j}) / (2 cosh alpha)^d, a pmf on
/// {-1,1}^d that extends smoothly to all of R^d; its score grad log q(y) = alpha E[x | y] gives the denoiser, and
/// sign(E[x | y]) is the optimal binary denoiser. m measurements y_1..y_m of one x enter through their sum
/// u = y_1 + ... + y_m only: E[x | y_1..m] is the denoiser at the point u (equivalently, at ybar with strength m alpha).
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>
#include <diffsample/mixture.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffsample {

namespace detail {
struct bernoulli_storage;
}

/// An owning mixture of product Bernoulli distributions on {-1,1}^d: host copies in FP64 and FP32, and a device copy
/// when a GPU is present. Construction validates every parameter and copies to the device on the legacy default
/// stream, synchronising it (the tables are in place for kernels on any stream when it returns); the
/// evaluation and sampling calls are then asynchronous on the CUDA executor. Movable, not copyable.
class DIFFSAMPLE_API bernoulli_mixture {
 public:
  /// @param dim            dimension d >= 1
  /// @param weights        K positive finite weights (normalised internally)
  /// @param probabilities  K x d row-major values p_kj = P(x_j = +1 | component k), each in [0, 1]. Values within
  ///                       e^-40 of 0 or 1 act as that distance away (the natural parameters are clamped to +-20).
  /// @throws invalid_argument naming the bad argument and value; cuda_error if the device copy fails
  bernoulli_mixture(std::int64_t dim, std::vector<double> weights, std::vector<double> probabilities);
  ~bernoulli_mixture();
  /// Moves the storage; the moved-from object may only be destroyed or assigned.
  bernoulli_mixture(bernoulli_mixture&&) noexcept;
  /// Moves the storage; the moved-from object may only be destroyed or assigned.
  bernoulli_mixture& operator=(bernoulli_mixture&&) noexcept;
  bernoulli_mixture(const bernoulli_mixture&) = delete;
  bernoulli_mixture& operator=(const bernoulli_mixture&) = delete;

  std::int64_t components() const noexcept;                 ///< K
  std::int64_t dim() const noexcept;                        ///< d
  const std::vector<double>& weights() const noexcept;       ///< normalised weights, K
  const std::vector<double>& probabilities() const noexcept;  ///< K x d, P(x_j = +1 | k)

  /// Evaluates @p what at n points y (n x d row-major, any real values) for the flip strength @p alpha in
  /// (0, max_abs_value] (a float in the kernels; evaluate_fp64() takes any finite positive alpha):
  /// log_density: log q(y) (n floats; on {-1,1}^d the exact log pmf of the noisy variable), score: grad log q(y),
  /// denoiser: E[x | y] = score / alpha (n x d floats each). FP32, one-pass online softmax over components. Buffers are
  /// device-accessible for the CUDA executor and host-accessible for the CPU one; @p out may not overlap @p y, in
  /// place included (invalid_argument). Asynchronous on the CUDA executor.
  /// @return the executor that ran
  executor evaluate(float* out, std::int64_t n, const float* y, double alpha, quantity what,
                    execution exec = {}) const;
  /// evaluate() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: evaluate(out, n, y, alpha, what, exec)")]] executor evaluate(
      quantity what, const float* y, std::int64_t n, double alpha, float* out, execution exec = {}) const {
    return evaluate(out, n, y, alpha, what, exec);
  }

  /// FP64 reference of evaluate() on the host (synchronous, OpenMP over points); @p out may not overlap @p y.
  void evaluate_fp64(double* out, std::int64_t n, const double* y, double alpha, quantity what) const;
  /// evaluate_fp64() in the argument order before 0.3.0 (output after the inputs).
  [[deprecated("outputs first: evaluate_fp64(out, n, y, alpha, what)")]] void evaluate_fp64(
      quantity what, const double* y, std::int64_t n, double alpha, double* out) const {
    evaluate_fp64(out, n, y, alpha, what);
  }

  /// Exact samples of the noisy variable y (entries +-1, as floats): point i draws its component and coordinates from
  /// the Philox stream (seed, first_index + i, 0). @p alpha > 0, or +infinity for samples of the prior itself.
  /// @param out     n x d floats
  /// @param labels  optional n int32 component indices (nullptr to skip), not overlapping @p out
  /// @param first_index 0..limits::max_first_chain
  /// @return the executor that ran. Asynchronous on the CUDA executor.
  executor sample(float* out, std::int64_t n, double alpha, std::uint64_t seed, std::int32_t* labels = nullptr,
                  std::uint64_t first_index = 0, execution exec = {}) const;

  /// Internal storage (device and host arrays) for the library's launchers.
  const detail::bernoulli_storage& storage() const noexcept { return *storage_; }

 private:
  std::unique_ptr<detail::bernoulli_storage> storage_;
};

/// The update of a discrete chain on q (formulas in the README, section "Binary data").
enum class discrete_method : int {
  /// One-stage discrete Langevin: P(y'_j = +1) = sigmoid(2 (s_j(y) / 2 + y_j / eta)), coordinates independent,
  /// s = grad log q. Biased: as eta -> 0 the bias levels off at a floor (the flip rates' ratio uses the trapezoid
  /// rule for log q(y) - log q(y with y_j flipped)) that vanishes only with alpha.
  one_stage = 0,
  /// The one-stage proposal with a Metropolis-Hastings correction that uses the proposal's own probabilities in both
  /// directions: its invariant law is q exactly.
  metropolis = 1,
  /// Two-stage (proximal): z_j = y_j flipped with probability sigmoid(-2 / eta), then
  /// P(y_j = +1 | z) = sigmoid(2 (s_j(z) + z_j / eta)), q(y | z) linearised around z. Biased, with a floor as
  /// eta -> 0 like one_stage's (README, "Discrete samplers").
  two_stage = 2,
};

/// "one_stage", "metropolis" or "two_stage".
DIFFSAMPLE_API const char* to_string(discrete_method m) noexcept;
/// Parses the names of to_string(discrete_method) (and "mh" for metropolis); throws invalid_argument otherwise.
DIFFSAMPLE_API discrete_method parse_discrete_method(const std::string& name);

/// Settings of a discrete Langevin run on q at flip strength alpha. Chain i uses the Philox stream
/// (seed, first_chain + i, first_step + k) at its k-th step, so runs split by chains or by consecutive calls give the
/// same states as one call, on either executor.
struct discrete_langevin_options {
  discrete_method method = discrete_method::metropolis;  ///< update rule
  double alpha = 1.0;             ///< flip strength of the target q, in (0, max_abs_value]
  double eta = 1.0;               ///< step eta > 0 (larger: more coordinates flip per step)
  std::int64_t steps = 100;       ///< number of steps, >= 0
  std::uint64_t seed = 0;         ///< Philox key
  std::uint64_t first_chain = 0;  ///< id of the call's first chain in the random stream, <= limits::max_first_chain
  /// stream step of the call's first step: first_step + steps <= limits::max_stream_steps - 1 (the last step keys
  /// the uniform start)
  std::uint64_t first_step = 0;
  /// When true, chains start uniformly on {-1,1}^d from the stream (seed, chain, limits::max_stream_steps - 1) and
  /// the input states are not read; when false, the input y gives the start, every entry +1 or -1 (see
  /// discrete_langevin() for what happens to another value).
  bool start_uniform = false;
};

/// What a discrete run did: the return value of the discrete samplers' argument order before 0.3.0 (the current
/// order returns the executor, as every call whose report would hold nothing else).
struct discrete_report {
  executor ran = executor::automatic;  ///< executor that ran
};

/// Optional outputs of a discrete Langevin run (caller buffers on the executor's side; nullptr to skip).
struct discrete_langevin_outputs {
  std::int64_t* accepted = nullptr;  ///< n: accepted moves of each chain (the step count for the unadjusted methods)
};

/// Bytes of workspace discrete_langevin() needs: 4 n d floats (device memory on the CUDA executor) and a table of
/// the score's terms at the lattice points, K d 3 pairs of floats (left out above limits::max_lattice_entries).
DIFFSAMPLE_API std::size_t discrete_langevin_workspace_bytes(const bernoulli_mixture& prior, std::int64_t n,
                                                             const discrete_langevin_options& options);

/// Runs options.steps steps of n chains on q (one fused launch). @p y (n x d) holds the start (unless
/// options.start_uniform; every entry +1 or -1) and receives the final states (entries +-1 as floats). A start entry
/// with another value (0, -0.0, 0.5, NaN, ...) is refused on the CPU executor, which scans the host data before the
/// run (invalid_argument naming y, the entry, its chain and coordinate); on the CUDA executor the start is not
/// scanned, as that would synchronise the host: the chain writes NaN over its row of y and -1 to its accepted count,
/// and the other chains run as without it. outputs.accepted (optional, n int64) receives each chain's accepted moves (the
/// step count for the unadjusted methods). Without @p workspace a buffer of discrete_langevin_workspace_bytes() is
/// allocated for the call (stream-ordered on CUDA), never per step. No two of y, outputs.accepted and the workspace
/// may share memory. Asynchronous on the CUDA executor.
/// @return the executor that ran
/// @throws invalid_argument for bad sizes, strengths, steps, pointers (overlapping ones included), or (CPU executor)
///         a start entry other than +-1, before anything is launched
DIFFSAMPLE_API executor discrete_langevin(const bernoulli_mixture& prior, float* y,
                                          discrete_langevin_outputs outputs, std::int64_t n,
                                          const discrete_langevin_options& options, execution exec = {},
                                          void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// discrete_langevin() in the argument order before 0.3.0 (the optional output after the options), returning a
/// discrete_report.
[[deprecated("state and outputs first: discrete_langevin(prior, y, {accepted}, n, options, exec)")]] inline
discrete_report discrete_langevin(const bernoulli_mixture& prior, float* y, std::int64_t n,
                                  const discrete_langevin_options& options, std::int64_t* accepted = nullptr,
                                  execution exec = {}, void* workspace = nullptr, std::size_t workspace_bytes = 0) {
  return {discrete_langevin(prior, y, discrete_langevin_outputs{accepted}, n, options, exec, workspace,
                            workspace_bytes)};
}

/// Settings of a discrete walk-jump run: for each of `measurements` measurements, `steps` steps of the chosen
/// discrete chain on the measurement given the earlier ones (the law q(u + y) in y, u the sum of the earlier
/// measurements), then the jump sign(E[x | y_1..m]) or E[x | y_1..m]. Chain i, measurement r, step k use the Philox
/// stream (seed, first_chain + i, r steps + k); the uniform start uses (seed, first_chain + i,
/// limits::max_stream_steps - 1).
struct discrete_walk_jump_options {
  discrete_method method = discrete_method::metropolis;  ///< the walk's update rule
  double alpha = 1.0;               ///< flip strength of each measurement, in (0, max_abs_value]
  double eta = 1.0;                 ///< step of the walk, > 0
  std::int64_t steps = 100;         ///< steps per measurement, >= 0
  std::int64_t measurements = 1;    ///< 1 <= m <= limits::max_inner_steps, m x steps <= limits::max_stream_steps - 1
  bool mean = false;                ///< output E[x | y_1..m] instead of its sign (+1 where it is 0)
  std::uint64_t seed = 0;           ///< Philox key
  std::uint64_t first_chain = 0;    ///< id of the call's first chain in the random stream, <= limits::max_first_chain
};

/// Optional outputs of a discrete walk-jump run (caller buffers on the executor's side; nullptr to skip).
struct discrete_walk_jump_outputs {
  float* noisy = nullptr;            ///< n x d: the sum y_1 + ... + y_m of the walk's measurements (m = 1: y itself)
  std::int64_t* accepted = nullptr;  ///< n: accepted moves over all measurements
};

/// Bytes of workspace discrete_walk_jump() needs: 5 n d floats and a table of K d (2 m + 1) pairs of floats (m the
/// number of measurements; left out above limits::max_lattice_entries).
DIFFSAMPLE_API std::size_t discrete_walk_jump_workspace_bytes(const bernoulli_mixture& prior, std::int64_t n,
                                                              const discrete_walk_jump_options& options);

/// Discrete walk-jump sampling of the prior: writes n x d jumps to @p x (entries +-1, or E[x | y] with
/// options.mean). The input content of @p x is not read. No two of x, the outputs and the workspace may share
/// memory. Asynchronous on the CUDA executor; workspace as for discrete_langevin().
/// @return the executor that ran
/// @throws invalid_argument for bad sizes, strengths, steps, pointers (overlapping ones included), before anything
///         is launched
DIFFSAMPLE_API executor discrete_walk_jump(const bernoulli_mixture& prior, float* x,
                                           discrete_walk_jump_outputs outputs, std::int64_t n,
                                           const discrete_walk_jump_options& options, execution exec = {},
                                           void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// discrete_walk_jump() in the argument order before 0.3.0 (the outputs after the options), returning a
/// discrete_report.
[[deprecated("state and outputs first: discrete_walk_jump(prior, x, outputs, n, options, exec)")]] inline
discrete_report discrete_walk_jump(const bernoulli_mixture& prior, float* x, std::int64_t n,
                                   const discrete_walk_jump_options& options, discrete_walk_jump_outputs outputs = {},
                                   execution exec = {}, void* workspace = nullptr, std::size_t workspace_bytes = 0) {
  return {discrete_walk_jump(prior, x, outputs, n, options, exec, workspace, workspace_bytes)};
}

}  // namespace diffsample
