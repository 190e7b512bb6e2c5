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
#include <memory>
#include <string>

namespace diffsample {

/// The update rule (formulas in the README). The model quantity is always the denoiser
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
  /// Heun (explicit trapezoid) on the same ODE; a step whose next channel has s = 0, or whose corrector would
  /// scale its terms by more than 2^14 (a next channel just above s = 0, where FP32 cannot resolve it), falls back
  /// to Euler.
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
/// k = j + 1 for its j-th step, so a batch split by first_chain gives the same samples as one call. A field the
/// sampler does not read (the schedule for walk_jump and SMS, eta for all but ddim, sigma and step_size for the
/// schedule-based samplers, measurements for all but SMS) must hold its default: invalid_argument naming the field
/// and the sampler otherwise (README: "Options a method does not read").
struct diffusion_options {
  diffusion_sampler sampler = diffusion_sampler::ddpm;  ///< update rule
  noise_schedule schedule = noise_schedule::vp_linear();  ///< channel and time grid (diffusion samplers)
  std::int64_t steps = 100;   ///< grid steps; Langevin steps (walk_jump) or Langevin steps per measurement (SMS)
  double eta = 0.0;           ///< DDIM stochasticity, in [0, 1]
  /// walk_jump and SMS: measurement noise sigma in (0, max_abs_value], with sigma / sqrt(M) at least FP32's smallest
  /// normal number
  double sigma = 1.0;
  /// walk_jump and SMS: Langevin step gamma in (0, max_abs_value], with gamma / sigma^2 below 2^23 (the FP32 step
  /// (1 - R) y + R m, R = gamma / sigma^2, loses y to the rounding of m beyond it); diffusion() also refuses gamma at
  /// or above 2 sigma^2 (M v + sigma^2) / ((M - 1) v + sigma^2), v the mixture's largest variance in the coordinate
  /// where that is smallest, where the walk diverges (README, "Walk-jump and SMS step sizes")
  double step_size = 0.1;
  std::int64_t measurements = 4;  ///< SMS: number of measurements M >= 1
  /// Diffusion samplers: after the last step, replace x by the denoiser at the last channel (always done by
  /// stochastic_localization, walk_jump and SMS, whose output is that jump).
  bool final_denoise = false;
  /// true: the library draws the initial state x = s_0 z (s_0 the first channel's noise; sigma for walk_jump and
  /// SMS) from the random stream and ignores x's contents; false: x holds the caller's initial state.
  bool draw_initial = true;
  std::uint64_t seed = 0;         ///< Philox key
  std::uint64_t first_chain = 0;  ///< id of the call's first chain in the random stream
  /// if > 0, write the state after every record_every-th step to outputs.trajectory, which must then be given
  /// (refused without it for n > 0: the recording would go nowhere). At most the run's total steps (steps, or
  /// steps x measurements for SMS): a larger value is refused, naming both, since no record would fall due and the
  /// trajectory would keep the caller's contents.
  std::int64_t record_every = 0;
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

/// Bytes of workspace a run needs: the coefficient table, the mixture's constants at every step's channels, plus
/// about 4 n d floats when d is not in the register-path list or the mixture is too large for the CUDA register path
/// (its shared-memory copy, K x d floats for isotropic components, over 48 KiB). Pass a buffer of at least this size to diffusion() to keep it allocation-free.
/// @throws invalid_argument as diffusion() does for invalid options
DIFFSAMPLE_API std::size_t diffusion_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n,
                                                     const diffusion_options& options);

/// Runs the whole trajectory of n chains in one fused launch. @p x (n x d, row-major) receives the samples (and
/// holds the initial states when options.draw_initial is false); @p outputs names the optional buffers (pass {}
/// for none); no two of x, the trajectory and the workspace may share memory. The per-step coefficients are computed
/// on the
/// host in FP64 and copied once per call into the workspace (on exec.stream, through a pinned staging block of the
/// library's, so the copy does not wait for the stream while that pool's 256 MiB suffice). Asynchronous on the
/// CUDA executor: no host synchronisation; without a caller workspace one stream-ordered allocation is made per call, never per step. Not
/// capturable in a CUDA graph (the table is the call's own host memory, which a replay would read again): capture a
/// diffusion_plan or sampling_plan::diffusion loop instead.
/// @throws invalid_argument for bad sizes, pointers (overlapping ones included), schedules (non-monotone, a channel
///         where a step divides by s = 0 or a = 0) or options (options.record_every above the total steps or
///         without outputs.trajectory among them), or for a CUDA run while exec.stream is being captured, before
///         anything is launched
DIFFSAMPLE_API diffusion_report diffusion(const gaussian_mixture& mixture, float* x, diffusion_outputs outputs,
                                          std::int64_t n, const diffusion_options& options, execution exec = {},
                                          void* workspace = nullptr, std::size_t workspace_bytes = 0);
/// diffusion() in the argument order before 0.3.0 (the outputs after the options).
[[deprecated("state and outputs first: diffusion(mixture, x, outputs, n, options, exec)")]] inline diffusion_report
diffusion(const gaussian_mixture& mixture, float* x, std::int64_t n, const diffusion_options& options,
          diffusion_outputs outputs = {}, execution exec = {}, void* workspace = nullptr,
          std::size_t workspace_bytes = 0) {
  return diffusion(mixture, x, outputs, n, options, exec, workspace, workspace_bytes);
}


/// What a neural model writes into the plan's model buffer at each step (declared once per plan).
enum class model_output : int {
  score = 0,     ///< grad log p_t(x)
  denoiser = 1,  ///< x0 prediction E[x0 | x_t = x]
  eps = 2,       ///< noise prediction (x - a x0) / s
  velocity = 3,  ///< probability-flow velocity dx/dt = (s'/s) x + (a' - s' a / s) x0
};

/// "score", "denoiser", "eps" or "velocity".
DIFFSAMPLE_API const char* to_string(model_output m) noexcept;
/// Parses the names of to_string(model_output) (and "x0"); throws invalid_argument otherwise.
DIFFSAMPLE_API model_output parse_model_output(const std::string& name);

namespace detail {
struct plan_storage;
}

/// Stepwise sampling with a caller's model (a neural network): the plan holds the coefficient table and, in device
/// memory, the step index and the random-stream key of the current trajectory; per step the caller evaluates its
/// model at the channel step_channel(k) on the current x for the whole batch, writes the output into a buffer, and
/// step() applies the fused update. step() neither synchronises nor allocates, and everything that changes between
/// steps or trajectories is read and advanced on the device, so a loop of (model, step), with or without reset(),
/// can be captured in a CUDA graph and replayed.
/// Samplers: ddpm, ddim, reverse_sde, ode_euler, stochastic_localization and walk_jump (ode_heun and
/// sequential_measurements evaluate the model away from x and are fused-only).
///
/// Randomness: trajectory t (the one begun by the (t+1)-th reset(), t = 0, 1, ...) draws row i's noise from the
/// Philox stream of chain options.first_chain + t n + i, as diffusion() does for that chain. So N trajectories of
/// a plan (N replays of a captured graph that contains reset(), or N resets around a replayed step loop) draw fresh
/// noise each time and equal, bit for bit on the CPU executor with the mixture's denoiser as the model, one
/// diffusion() call over N n chains from options.first_chain. Before the first reset() the key is that of t = 0.
/// Work is one thread per four coordinates of a row (one Philox block), so a small batch of large images fills the
/// GPU. A plan is not thread-safe: one thread at a time may call it (step() and reset() advance the host's step
/// count); distinct plans are independent.
class DIFFSAMPLE_API diffusion_plan {
 public:
  /// Validates the options, builds the table and allocates device memory once: cudaMalloc, copies on exec.stream,
  /// then cudaStreamSynchronize(exec.stream), so the plan is ready for any stream when the constructor returns;
  /// nothing afterwards synchronises.
  /// @param n, dim    batch size and dimension of x and of the model buffer (n x dim floats each)
  /// @param exec      executor::cuda or executor::cpu (automatic picks CUDA when a GPU is present)
  /// @throws invalid_argument for bad sizes, unsupported samplers, invalid schedules or options.record_every other
  ///         than 0 (a plan records nothing: x is the caller's between steps), and on the CUDA executor while
  ///         exec.stream is being captured into a CUDA graph (make the plan before the capture begins), before
  ///         anything is issued
  diffusion_plan(std::int64_t n, std::int64_t dim, const diffusion_options& options, model_output output,
                 execution exec = {});
  ~diffusion_plan();
  /// Moves the plan and its device buffers. The moved-from plan holds none: steps() is 0, step_counter() null, and
  /// step_channel(), step_time(), reset(), step() and finish() throw invalid_argument naming the call, until a plan
  /// is assigned to it.
  diffusion_plan(diffusion_plan&&) noexcept;
  /// Moves the plan and its device buffers; the moved-from plan is as after the move constructor.
  diffusion_plan& operator=(diffusion_plan&&) noexcept;
  diffusion_plan(const diffusion_plan&) = delete;
  diffusion_plan& operator=(const diffusion_plan&) = delete;

  std::int64_t steps() const noexcept;     ///< number of step() calls of one trajectory
  executor where() const noexcept;         ///< executor the plan runs on
  bool needs_final_jump() const noexcept;  ///< true when finish() must follow the last step (SL, walk-jump, option)
  /// Channel at which the model must be evaluated before step k (k = steps() for finish()).
  channel step_channel(std::int64_t k) const;
  /// Time of step k in the schedule (walk_jump: 0).
  double step_time(std::int64_t k) const;
  /// Device (or, on the CPU executor, host) pointer to the current step index, for models captured in a graph.
  const std::int64_t* step_counter() const noexcept;

  /// Starts the next trajectory: the step counter goes to 0 and the random key to that trajectory's chains (see
  /// the class comment), both on the device; when options.draw_initial, draws x = s_0 z (n x dim) as diffusion()
  /// does. Asynchronous on the CUDA executor (on exec.stream); capturable.
  /// @param exec  the plan's executor or executor::automatic (which means the plan's), and the stream
  /// @throws invalid_argument for another executor, or a null x when the plan draws the initial states
  void reset(float* x, execution exec = {});
  /// Applies the update of the current step to x given the model output at x (both n x dim, on the plan's
  /// executor) and advances the step counter. A call past the last step leaves x and the counter unchanged (the
  /// counter stops at steps()). Asynchronous on
  /// exec.stream; no validation beyond the host-side checks of the pointers and the executor, so that it can be
  /// captured. x and model must not share memory, not even as the same buffer: the update reads the state and the
  /// model's output at it, and a model that wrote its output into x has replaced the state.
  /// @throws invalid_argument, before anything is launched and with nothing advanced, for a null x or model, a
  ///         model buffer that overlaps x (naming both), or another executor
  void step(float* x, const float* model, execution exec = {});
  /// The final jump x <- E[x0 | x] from the model output at step_channel(steps()). Asynchronous on exec.stream.
  /// @throws invalid_argument as step()
  void finish(float* x, const float* model, execution exec = {});

  /// reset() on a raw stream (the plan's executor): the form before every call took an execution.
  [[deprecated("pass an execution: reset(x, {executor::automatic, stream})")]] void reset(float* x,
                                                                                           cudaStream_t stream) {
    reset(x, execution{executor::automatic, stream});
  }
  /// step() on a raw stream (the plan's executor): the form before every call took an execution.
  [[deprecated("pass an execution: step(x, model, {executor::automatic, stream})")]] void step(
      float* x, const float* model, cudaStream_t stream) {
    step(x, model, execution{executor::automatic, stream});
  }
  /// finish() on a raw stream (the plan's executor): the form before every call took an execution.
  [[deprecated("pass an execution: finish(x, model, {executor::automatic, stream})")]] void finish(
      float* x, const float* model, cudaStream_t stream) {
    finish(x, model, execution{executor::automatic, stream});
  }

 private:
  std::unique_ptr<detail::plan_storage> storage_;
};

}  // namespace diffsample
