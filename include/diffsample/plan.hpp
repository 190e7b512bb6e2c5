/// @file plan.hpp
/// @brief Ask/tell sampling plans: any sampler of the library driven by a caller's model (a neural network). The
/// plan says what it needs next (points, a channel and which model output), the caller writes the model's answer
/// into the plan's buffer, and the plan advances. The sequence of asks is fixed by the options, nothing allocates
/// or synchronises per ask, and a whole trajectory (model calls included) can be captured in one CUDA graph.
#pragma once

#include <diffsample/diffusion.hpp>
#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/langevin.hpp>
#include <diffsample/mixture.hpp>

#include <cstdint>
#include <memory>

namespace diffsample {

/// One ask of a sampling_plan: evaluate the model at @p points, channel @p at, and write @p output into @p answer.
/// Every pointer is plan memory on the plan's executor (device memory on CUDA, host memory on the CPU) and stays
/// the same for a given position in every trajectory, so a captured graph may bake it in.
struct plan_request {
  std::int64_t index = 0;         ///< position of this ask in the trajectory, 0 .. asks() - 1
  const float* points = nullptr;  ///< rows x dim points (row-major) at which the model is evaluated
  std::int64_t rows = 0;          ///< number of points
  std::int64_t dim = 0;           ///< dimension of a point
  channel at{};                   ///< the channel (a, s) of the evaluation: x_t = a x0 + s z
  double time = 0.0;              ///< the schedule's time of that channel (0 where the sampler has no schedule)
  model_output output = model_output::denoiser;  ///< what to write into answer (the plan's declared output)
  float* answer = nullptr;        ///< rows x dim: the caller writes the model's output at the points here
  /// Null, or rows x dim vectors v: then the caller writes J(x)^T v into answer instead, J the Jacobian of its
  /// denoiser at the points and channel (what autograd's vector-Jacobian product gives; DPS, Pi-GDM, DCPS and TMPD
  /// ask for it)
  const float* vector = nullptr;
  /// Null, or rows floats: then the caller also writes the model's log-density log p_t(x) at the points and channel
  /// here (MALA plans ask for it beside the score at every ask). Only differences between points enter (MALA's
  /// acceptance ratio), so an unnormalised log-density does, such as the negative energy of an energy-based model,
  /// as long as its constant is the same at every ask.
  float* log_density = nullptr;
};

namespace detail {
struct sampling_plan_storage;
struct sampling_plan_access;
}

/// A sampler driven step by step by a caller's model. Use:
///
///     plan.reset(nullptr, exec);
///     while (!plan.done()) {
///       const plan_request r = plan.ask();
///       my_model(r.points, r.rows, r.at, r.answer, exec.stream);  // writes r.output at r.points
///       plan.tell(exec);
///     }
///     // plan.samples(): rows() x dim() results
///
/// The plan owns its state (samples()), the points it asks about and the answer buffer; all are allocated once by
/// the constructor (out_of_memory when the executor cannot give them). A plan is not thread-safe: one thread at a
/// time may call it (distinct plans are independent). ask() is host-only and cheap; tell() issues one launch (on the CUDA executor) or one pass of the
/// CPU pool and never synchronises or allocates. Positions and pointers of the asks depend only on the options, so
/// a loop (reset, then ask/model/tell asks() times) captured in a CUDA graph replays a whole trajectory with fresh
/// noise per replay: the random key of a trajectory lives in device memory and reset() advances it there.
///
/// A plan whose asks set plan_request::log_density (MALA) needs the model's log-density too: write it there.
///
/// Randomness: trajectory t (the one begun by the (t+1)-th reset(), t = 0, 1, ...) draws row i's noise from the
/// Philox stream of chain first_chain + t rows() + i (guided plans: particle t rows() + i), as the fused sampler
/// does for that chain. Exactness: answered with the mixture's own denoiser (diffusion samplers, with its J^T v for
/// DPS, Pi-GDM, DCPS and TMPD) or score (Langevin; MALA with its log-density) through gaussian_mixture::evaluate
/// and denoiser_jvp on the direct path, a plan on the CPU executor gives the fused sampler's samples bit for bit
/// (t trajectories of a chain sampler equal one fused call over t rows() chains).
class DIFFSAMPLE_API sampling_plan {
 public:
  /// A plan for a reverse-diffusion sampler (every diffusion_sampler: ddpm, ddim, reverse_sde, ode_euler,
  /// ode_heun, stochastic_localization, walk_jump, sequential_measurements) with options.record_every = 0.
  /// One ask per step (two for a Heun step: at x, then at the predictor), plus one for the final jump when the
  /// sampler or options.final_denoise has one. SMS asks at the measurements' average (S + y) / m, Heun's second ask
  /// at the predictor: the points of an ask need not be the state.
  /// Allocates and copies once (cudaMalloc, then cudaStreamSynchronize(exec.stream) on the CUDA executor).
  /// @param n, dim  rows and dimension of the state
  /// @param output  what the caller's model returns: denoiser, score, eps or velocity (velocity only for samplers
  ///                with a schedule); converted to the denoiser per ask
  /// @param exec    executor::cuda or executor::cpu (automatic: CUDA when a GPU is present)
  /// @throws invalid_argument for bad sizes, options, schedules or an output that does not determine the denoiser,
  ///         and on the CUDA executor while exec.stream is being captured into a CUDA graph (neither the allocation
  ///         nor the synchronisation can be captured: make the plan before the capture begins), before anything is
  ///         issued; the same for langevin() and guided()
  static sampling_plan diffusion(std::int64_t n, std::int64_t dim, const diffusion_options& options,
                                 model_output output = model_output::denoiser, execution exec = {});
  /// A plan for a Langevin chain targeting p_t at options.target (options.record_every = 0). The initial state is
  /// the caller's: pass it to reset(). ULA and tamed ULA: one ask per step, at the state. MALA: options.steps + 1
  /// asks (none for 0 steps), each asking for the model's output and, through plan_request::log_density, its
  /// log-density at the same points: ask 0 at the state, ask k = 1 .. steps at step k - 1's proposal
  /// x' = x + gamma g(x) + sqrt(2 gamma) z (plan_request::points is then the proposal, not the state); the tell of
  /// ask k accepts or rejects the proposal with MALA's probability and draws the next one, so the plan keeps the
  /// score and log-density of the state and each step costs one evaluation, as in the fused chain. accepted()
  /// counts the accepted proposals per row.
  /// @param output  score, denoiser or eps (denoiser and eps need options.target.s > 0), converted to the score
  /// @throws invalid_argument for bad sizes or options, and while exec.stream is being captured (as diffusion())
  static sampling_plan langevin(std::int64_t n, std::int64_t dim, const langevin_options& options,
                                model_output output = model_output::score, execution exec = {});
  /// A plan for the guided samplers smc, dps, pigdm, diffpir, dcps, tmpd, ddrm and skrock on B = problems.problems problems of
  /// options.particles particles each (rows() = B N, particle j of problem b in row b N + j), for dim-dimensional
  /// states. The prior is the caller's model: nothing of a mixture is used.
  /// DPS and Pi-GDM: two asks per step, both at the particles and the step's channel: the model's output (converted
  /// to the denoiser m), then, with plan_request::vector set to v = A^T P (y - A m) (DPS's normalised step:
  /// A^T (y - A m)), the denoiser's J^T v. DiffPIR: one ask per step, the model's output at the particles and the
  /// step's channel; the tell takes the proximal data step and re-noises. For these, outputs of guided_sample()
  /// beyond the particles (samples()) do not apply, reset() draws x = s_0 z unless given an initial state, and
  /// trajectory t draws particle i's noise from the stream t rows() + i (its key in device memory).
  /// SMC: one ask per transition, the model's output at the particles and the transition's channel; the tell
  /// weights the particles from it, resamples (options.resampling, on the device on the CUDA executor) and mutates
  /// them, with no host synchronisation. Moment potentials: then d_y asks for J^T a_o per transition
  /// (plan_request::vector set to row a_o of each particle's own A), whose last tell weights, resamples and
  /// mutates. Twisted potentials: the same 1 + d_y asks, each J^T a_o answer in its own plan_request::answer buffer
  /// (the twisted proposal needs all d_y of them at the last tell; the pointers are the same at every step).
  /// options.start_correction (linear or twisted potentials): first 4 asks, one per node u_n of the Gauss-Legendre
  /// quadrature on [0, 1] (u_n = 0.0694, 0.3300, 0.6700, 0.9306), for the model's output at the points u_n x
  /// (plan_request::points: not the particles) and the first grid point's channel; their tells fold
  /// (a_0 / s_0^2) sum_n w_n x . m(u_n x) into the starting log-weights and the first normalisation of the
  /// log-normaliser, as guided_sample() does, and the last of them resamples column 0 (linear potentials). The
  /// transitions' asks follow. reset() draws the particles itself (initial must be null); write_outputs() gives the
  /// log-weights, the resampled samples, log-normaliser estimates, ESS trace and resampling counts of a done
  /// trajectory. Trajectory t runs as guided_sample() with options.seed = guided_run_seed(seed, t): the
  /// keys live in device memory and reset() advances them there, so a captured trajectory (reset, asks, tells and
  /// write_outputs) replays with fresh noise, replay t equal to uncaptured trajectory t.
  /// DCPS: the asks of guided_sample()'s run, in order. Per block l of the time grid, its options.dcps_langevin_steps
  /// tamed Langevin steps, each asking twice at the particles and the block's start channel: the model's output,
  /// then J^T u with plan_request::vector = u = A^T P (a_T y - A mu(x)) (the gradient of the block's potential needs
  /// it). Per transition j of the block, one ask at the particles and step j's channel; then, unless its kernel is a
  /// point mass (DDIM with eta = 0, or a step to s = 0), per gradient step of its variational fit (options.
  /// dcps_gradient_steps) an ask at the fit's draw q (plan_request::points is then q, not the particles) and the next
  /// point's channel, followed by J^T u at q unless the next point is the block's clean end. reset() draws
  /// x = s_0 z (or copies @p initial); trajectory t keys particle i's stream t rows() + i.
  /// TMPD: 1 + d_y asks per step k, all at the particles and step k's channel: the model's output, then for each
  /// row a_o of the problem's operator A_b (o = 0 .. d_y - 1) J^T v with plan_request::vector = a_o. TMPD's
  /// covariance C = (s^2 / a) J needs J a_o; the plan asks for J^T a_o, what one backward pass of autograd gives,
  /// which equals J a_o for a denoiser that is a gradient field (the exact Tweedie denoiser: J = C a / s^2 is
  /// symmetric); a network's Jacobian is symmetric only approximately, and TMPD symmetrises A C A^T anyway. The
  /// factorisation of A C A^T + sigma_y^2 I (FP64, per particle), the solve and the update happen in the last tell
  /// of the step; a particle whose matrix is not positive definite becomes NaN, as in guided_sample().
  /// DDRM: one ask per step k, the model's output at the particles and step k's channel; the tell takes DDRM's
  /// spectral update (each operator factored once when the plan is made, an SVD operator as given). reset() draws
  /// the initial state of p(x_T | y) as guided_sample() does (or copies @p initial); trajectory t keys particle i's
  /// stream t rows() + i.
  /// SKRock (output score only): options.skrock_stages asks per iteration, one per drift evaluation, each for the
  /// prior's score at channel (1, 0) (time 0) at the stage's point (plan_request::points: the drift point, not the
  /// particles); the likelihood's part of the drift and the stage's recursion happen in the tell. The step needs
  /// options.skrock_lipschitz > 0 (a Lipschitz bound of the prior's score; guided_sample() takes the mixture's), and
  /// reset() needs the caller's initial particles (guided_sample() draws them exactly from its mixture prior).
  /// Trajectory t keys particle i's stream t rows() + i.
  /// @param output  denoiser, score or eps (converted to the denoiser at each ask's channel); score for skrock
  /// @throws invalid_argument for another sampler (a skrock plan: for another output or skrock_lipschitz = 0), or as
  ///         guided_sample() does for the problems and options, and while exec.stream is being captured (as
  ///         diffusion())
  static sampling_plan guided(std::int64_t dim, const guided_problems& problems, const guided_options& options,
                              model_output output = model_output::denoiser, execution exec = {});

  ~sampling_plan();
  /// Moves the plan and its buffers. The moved-from plan holds none: its getters give an empty plan (0 rows and
  /// asks, done(), null pointers) and ask(), request(), tell(), reset() and write_outputs() throw invalid_argument
  /// naming the call, until a plan is assigned to it.
  sampling_plan(sampling_plan&&) noexcept;
  /// Moves the plan and its buffers; the moved-from plan is as after the move constructor.
  sampling_plan& operator=(sampling_plan&&) noexcept;
  sampling_plan(const sampling_plan&) = delete;
  sampling_plan& operator=(const sampling_plan&) = delete;

  std::int64_t rows() const noexcept;      ///< rows of the state (chains)
  std::int64_t dim() const noexcept;       ///< dimension of a row
  executor where() const noexcept;         ///< executor the plan runs on
  std::int64_t asks() const noexcept;      ///< asks of one trajectory
  std::int64_t position() const noexcept;  ///< asks told in the current trajectory (host-side count)
  bool done() const noexcept;              ///< position() == asks()

  /// The next ask (position()). Host-only; no launch, no synchronisation. Calling it again before tell() gives the
  /// same ask (nothing advances).
  /// @throws invalid_argument before the first reset() (no trajectory: the state is not drawn) and when the
  ///         trajectory is done
  plan_request ask() const;
  /// The ask at position @p k of every trajectory (for setting up a captured loop).
  /// @throws invalid_argument unless 0 <= k < asks()
  plan_request request(std::int64_t k) const;
  /// Applies the answer written into ask().answer and advances to the next ask, on exec.stream. Asynchronous on the
  /// CUDA executor; no allocation, no synchronisation, no validation on the device (capturable). The answer is not
  /// read on the host: a non-finite one makes its row's state non-finite (guided SMC: its particle's weight zero,
  /// as resample() counts NaN log-weights) and touches no other row or problem. tell() needs no ask() (loops of
  /// request(k) and tell(), as a captured loop is set up, run), but once ask() has been called in a trajectory each
  /// tell() must follow the ask() of its position: a second tell() after one ask() would apply the next ask with
  /// the previous one's answer, and is refused. position() advances once the update has been issued: an update
  /// that throws part-way (a failed launch) leaves position() where it was and the plan refusing ask(), request(),
  /// tell() and write_outputs() ("the last tell() failed") until reset(), as the state may hold part of it.
  /// @throws invalid_argument before the first reset(), when the trajectory is done, for a second tell() after one
  ///         ask(), after a tell() that failed, or when exec.kind is neither automatic nor where() (checked on the
  ///         host); what the update throws (cuda_error) passes through
  void tell(execution exec = {});
  /// Starts the next trajectory: position 0 and, on the device, the random key of the next trajectory's chains.
  /// The initial state is @p initial (rows() x dim() on the plan's executor, copied with cudaMemcpyAsync) when
  /// given, otherwise drawn as the fused sampler draws it (diffusion plans with options.draw_initial), on
  /// exec.stream. Asynchronous on the CUDA executor; capturable.
  /// reset(samples()) starts from the current state (nothing is copied). Callable at any position: a trajectory
  /// interrupted by reset() leaves nothing behind (the next one is as if the interrupted one had run to the end).
  /// The arguments are checked first: a refused reset() changes nothing. A reset() that throws once its work has
  /// begun (a failed launch or copy: the random key may have advanced, the state be half drawn) leaves the plan
  /// refusing ask(), request(), tell() and write_outputs() ("the last reset() failed") until a reset() succeeds,
  /// as after a failed tell().
  /// @throws invalid_argument when @p initial is null and the plan has no draw of its own, overlaps samples()
  ///         without being it, or exec.kind is neither automatic nor where(); what the work throws (cuda_error)
  ///         passes through
  void reset(const float* initial = nullptr, execution exec = {});
  /// The state, rows() x dim() (plan memory on its executor): the samples once done(). Writable between asks.
  float* samples() const noexcept;
  /// The outputs of a done guided SMC trajectory as guided_sample() writes them (trajectory t: with options.seed +
  /// t): particles, log_weights, samples (the final resampling, options.final_resample), log_normaliser,
  /// ess_trace and resample_count, each null to skip, memory of the plan's executor. Asynchronous on exec.stream.
  /// @throws invalid_argument unless the plan is a guided SMC plan and done() (a trajectory begun by reset()), for a
  ///         buffer on another executor, for an output that overlaps the plan's own memory (samples(), the asks'
  ///         buffers) or another output, or for outputs.samples without options.final_resample
  void write_outputs(const guided_outputs& outputs, execution exec = {});
  /// A guided plan's report: what guided_sample() reports of its run (guided_report), for the plan's own run, so
  /// that a caller whose model drives the plan sees what the automatic settings resolved to. Set when the plan is
  /// made (host-only; no launch, no synchronisation; the same at every position and trajectory): ran, the plan's
  /// executor; potentials, start_correction and multistep_kernel for smc, guided_options::potentials automatic
  /// resolved as a plan resolves it (linear; README "Default potentials"); final_moves, the count the plan runs
  /// (final_moves = -1, automatic, resolves to 0 in a plan; a count above 0 runs that many moves and needs
  /// options.final_move_curvature); operator_path, gemm where the plan's tells apply
  /// a dense operator as matrix products over all particles, else direct: the path guided_sample() resolves for the
  /// same options and problems, which the plan runs (DPS and Pi-GDM on either executor and TMPD on the CPU executor,
  /// past the size rule or forced by guided_options::operator_path; masks and SVD operators run direct whatever it
  /// says, in both, and the other samplers, direct, refuse it other than automatic). The other samplers report linear, false, false and 0, as guided_sample()
  /// does. launches is 0: a plan's
  /// launches are its tells', issued by the caller's loop (and replayed unseen by a captured graph). The
  /// per-problem results of a run (log-weights, log-normaliser estimates, ESS trace, resampling counts) are
  /// outputs, not report fields: write_outputs() gives them. Fed the mixture's own model, a plan that runs what
  /// guided_sample() runs reports what guided_sample() reports, launches aside.
  /// @throws invalid_argument for a plan that is not guided (diffusion, langevin) and for a moved-from plan
  guided_report report() const;
  /// Device (on the CPU executor, host) pointer to position() as the device sees it, advanced by tell() on the
  /// device: for models captured in a graph that need the step index.
  const std::int64_t* position_counter() const noexcept;
  /// MALA plans: rows() counts of the proposals accepted in the current trajectory (plan memory on its executor,
  /// set to 0 by the trajectory's first tell and advanced by each later one; what langevin_outputs::accepted
  /// gives the fused chain once done()). Null for every other plan.
  const std::int64_t* accepted() const noexcept;

 private:
  friend struct detail::sampling_plan_access;  // internal: a plan around a given storage (the library's tests)
  explicit sampling_plan(std::unique_ptr<detail::sampling_plan_storage> storage);
  std::unique_ptr<detail::sampling_plan_storage> storage_;
};

}  // namespace diffsample
