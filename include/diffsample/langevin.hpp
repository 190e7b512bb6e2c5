/// @file langevin.hpp
/// @brief Fused Langevin-family samplers (ULA, MALA, tamed ULA) on a Gaussian mixture at any channel.
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>
#include <diffsample/mixture.hpp>

#include <cstdint>

namespace diffsample {

/// The update rule (formulas in the README).
enum class langevin_method : int {
  ula = 0,        ///< x <- x + gamma g(x) + sqrt(2 gamma) xi
  mala = 1,       ///< ULA proposal, Metropolis-Hastings accept/reject (unbiased)
  tamed_ula = 2,  ///< x <- x + gamma g / (1 + gamma |g|) + sqrt(2 gamma) xi (stable when the score explodes)
};

/// "ula", "mala" or "tamed_ula".
DIFFSAMPLE_API const char* to_string(langevin_method m) noexcept;
/// Parses the names of to_string(langevin_method); throws invalid_argument otherwise.
DIFFSAMPLE_API langevin_method parse_langevin_method(const std::string& name);

/// Settings of one Langevin run. Chain i of the call uses the Philox stream (seed, first_chain + i, first_step + k)
/// at its k-th step, so a run split into batches (first_chain) or into consecutive calls (first_step) gives the
/// same samples as one call.
struct langevin_options {
  langevin_method method = langevin_method::mala;  ///< update rule
  double step_size = 1e-2;        ///< gamma in [FLT_MIN, max_abs_value] (a normal FP32 number, as is 1 / (4 gamma))
  std::int64_t steps = 1000;      ///< number of steps, >= 0
  channel target{};               ///< the chains target p_t at this channel (default: the prior)
  std::uint64_t seed = 0;         ///< Philox key
  std::uint64_t first_chain = 0;  ///< id of the call's first chain in the random stream
  /// step index of the call's first step in the random stream: first_step + steps <= limits::max_stream_steps
  std::uint64_t first_step = 0;
  /// if > 0, write the state after every record_every-th step to outputs.trajectory, which must then be given
  /// (refused without it for n > 0: the recording would go nowhere). At most steps: a larger value is refused,
  /// naming both, since no record would fall due and the trajectory would keep the caller's contents.
  std::int64_t record_every = 0;
};

/// Optional outputs of a Langevin run (caller buffers, on the executor's side; nullptr to skip).
struct langevin_outputs {
  /// (steps / record_every) x n x d floats: the state after steps record_every, 2 record_every, ...
  float* trajectory = nullptr;
  /// n counts of accepted proposals in this call (MALA; ULA variants write the step count).
  std::int64_t* accepted = nullptr;
};

/// What a run did.
struct langevin_report {
  executor ran = executor::automatic;  ///< executor that ran
  bool register_path = false;          ///< true when d was in the compiled list and state stayed in registers
};

/// Bytes of workspace a run needs (on the executor that runs it): the mixture's constants at the target channel
/// (K x (4 + d) floats, plus K x d for diagonal components), plus the chains' state (4 d floats per chain) when d is not in
/// the register-path list or the mixture is too large for the CUDA register path (its shared-memory copy, K x (d + 4)
/// floats for isotropic components, over 48 KiB). Pass a buffer of at least this
/// size as @p workspace to langevin() to keep it allocation-free; otherwise it allocates stream-ordered
/// (cudaMallocAsync) once per call, never per step.
DIFFSAMPLE_API std::size_t langevin_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n,
                                                    const langevin_options& options);

/// Runs @p options.steps steps of every chain in one fused launch. @p x (n x d, row-major) holds the initial
/// states and receives the final ones; @p outputs names the optional buffers (pass {} for none). No two of x, the
/// outputs and the workspace may share memory. Asynchronous on the CUDA executor (no host synchronisation).
/// @throws invalid_argument for bad sizes, step sizes, pointers (overlapping ones included), channels, or
///         options.record_every above options.steps or without outputs.trajectory (before anything is launched)
DIFFSAMPLE_API langevin_report langevin(const gaussian_mixture& mixture, float* x, langevin_outputs outputs,
                                        std::int64_t n, const langevin_options& options, execution exec = {},
                                        void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// langevin() in the argument order before 0.3.0 (the outputs after the options).
[[deprecated("state and outputs first: langevin(mixture, x, outputs, n, options, exec)")]] inline langevin_report
langevin(const gaussian_mixture& mixture, float* x, std::int64_t n, const langevin_options& options,
         langevin_outputs outputs = {}, execution exec = {}, void* workspace = nullptr,
         std::size_t workspace_bytes = 0) {
  return langevin(mixture, x, outputs, n, options, exec, workspace, workspace_bytes);
}

}  // namespace diffsample
