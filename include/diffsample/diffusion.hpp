/// @file diffusion.hpp
/// @brief Fused reverse-diffusion samplers on a Gaussian mixture's exact denoiser: DDPM, DDIM, reverse SDE,
/// probability-flow ODE (Euler, Heun), stochastic localization, walk-jump and sequential multi-measurement sampling.
/// One launch runs every step of every chain, on the CUDA or the CPU executor.
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/schedule.hpp>

#include <cstdint>
#include <string>

namespace diffsample {

/// The update rule (shared/math.md sections 3 and 4). The model quantity is always the denoiser
/// m = E[x0 | x_t = x] at the step's channel (a, s); the score is (a m - x) / s^2 and eps = (x - a m) / s.
enum class diffusion_sampler : int {
  /// DDPM ancestral step from channel (a, s) to (a', s'): x' = c0 m + c1 x + sqrt(betatilde) xi, the posterior
  /// q(x_t' | x_t, x0 = m) of the forward channel (for VP schedules exactly the coefficients of Ho et al.).
  ddpm = 0,
  /// DDIM with eta in [0, 1]: x' = a' m + sqrt(s'^2 - sigma^2) eps + sigma xi; eta = 0 is deterministic.
  ddim = 1,
  /// Euler-Maruyama on the reverse-time SDE of the schedule's forward SDE dx = f x dt + g dW (f = a'/a,
  /// g^2 = d(s^2)/dt - 2 f s^2). On ornstein_uhlenbeck: y <- y + h (y + 2 score) + sqrt(2 h) xi.
  reverse_sde = 2,
  /// Euler on the probability-flow ODE dx/dt = (s'/s) x + (a' - s' a / s) m (the stochastic-interpolant velocity;
  /// on ornstein_uhlenbeck it is dY/dtau = Y + score, on linear_interpolant the interpolant's backward ODE).
  ode_euler = 3,
  /// Heun (explicit trapezoid) on the same ODE; a step whose next channel has s = 0 falls back to Euler.
  ode_heun = 4,
  /// Stochastic localization (schedule stochastic_localization): Z <- Z + delta m(Z, t) + sqrt(delta) xi, and the
  /// output m(Z_T, T).
  stochastic_localization = 5,
  /// Walk-jump: `steps` ULA steps on q_sigma = p0 * N(0, sigma^2 I) with step size gamma, then the jump
  /// x = y + sigma^2 grad log q_sigma(y) = E[x0 | y]. The schedule is not used.
  walk_jump = 6,
  /// Sequential multi-measurement sampling (SMS): for m = 1..M, `steps` ULA steps on y_m | y_1..m-1 with
  /// gradient (E[x0 | ybar_m] - y_m) / sigma^2 at noise sigma / sqrt(m), then the jump E[x0 | y_1..M].
  sequential_measurements = 7,
};

/// "ddpm", "ddim", "reverse_sde", "ode_euler", "ode_heun", "stochastic_localization", "walk_jump" or
/// "sequential_measurements".
DIFFSAMPLE_API const char* to_string(diffusion_sampler s) noexcept;
/// Parses the names of to_string(diffusion_sampler) (and "sms", "heun", "euler", "sl"); throws invalid_argument.
DIFFSAMPLE_API diffusion_sampler parse_diffusion_sampler(const std::string& name);

/// Settings of one run. Chain i uses the Philox stream (seed, first_chain + i, k): k = 0 for its initial noise and
/// k = j + 1 for its j-th step, so a batch split by first_chain gives the same samples as one call.
struct diffusion_options {
  diffusion_sampler sampler = diffusion_sampler::ddpm;
  noise_schedule schedule = noise_schedule::vp_linear();  ///< channel and time grid (diffusion samplers)
  std::int64_t steps = 100;   ///< grid steps; Langevin steps (walk_jump) or Langevin steps per measurement (SMS)
  double eta = 0.0;           ///< DDIM stochasticity, in [0, 1]
  double sigma = 1.0;         ///< walk_jump and SMS: measurement noise sigma > 0
  double step_size = 0.1;     ///< walk_jump and SMS: Langevin step gamma > 0
  std::int64_t measurements = 4;  ///< SMS: number of measurements M >= 1
  /// Diffusion samplers: after the last step, replace x by the denoiser at the last channel (always done by
  /// stochastic_localization, walk_jump and SMS, whose output is that jump).
  bool final_denoise = false;
  /// true: the library draws the initial state x = s_0 z (s_0 the first channel's noise; sigma for walk_jump and
  /// SMS) from the random stream and ignores x's contents; false: x holds the caller's initial state.
  bool draw_initial = true;
  std::uint64_t seed = 0;         ///< Philox key
  std::uint64_t first_chain = 0;  ///< id of the call's first chain in the random stream
  std::int64_t record_every = 0;  ///< if > 0, write the state after every record_every-th step to the trajectory
};

/// Optional outputs (caller buffers on the executor's side; nullptr to skip).
struct diffusion_outputs {
  /// (total_steps / record_every) x n x d floats: the state after steps record_every, 2 record_every, ...
  /// (before the final denoise). total_steps = steps, or steps x measurements for SMS.
  float* trajectory = nullptr;
};

/// What a run did.
struct diffusion_report {
  executor ran = executor::automatic;  ///< executor that ran
  bool register_path = false;          ///< true when d was in the compiled list and state stayed in registers
  std::int64_t total_steps = 0;        ///< steps run per chain (steps x measurements for SMS)
};

/// Bytes of device workspace a run needs: the coefficient table, plus 4 n d floats when d is not in the
/// register-path list. Pass a buffer of at least this size to diffusion() to keep it allocation-free.
/// @throws invalid_argument as diffusion() does for invalid options
DIFFSAMPLE_API std::size_t diffusion_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n,
                                                     const diffusion_options& options);

/// Runs the whole trajectory of n chains in one fused launch. @p x (n x d, row-major) receives the samples (and
/// holds the initial states when options.draw_initial is false). The per-step coefficients are computed on the
/// host in FP64 and copied once per call (cudaMemcpyAsync on exec.stream) into the workspace. Asynchronous on the
/// CUDA executor: no host synchronisation; without a caller workspace one stream-ordered allocation is made
/// per call, never per step.
/// @throws invalid_argument for bad sizes, pointers, schedules (non-monotone, a channel where a step divides by
///         s = 0 or a = 0) or options, before anything is launched
DIFFSAMPLE_API diffusion_report diffusion(const gaussian_mixture& mixture, float* x, std::int64_t n,
                                          const diffusion_options& options, diffusion_outputs outputs = {},
                                          execution exec = {}, void* workspace = nullptr,
                                          std::size_t workspace_bytes = 0);

}  // namespace diffsample
