/// @file guided.hpp
/// @brief Posterior sampling for linear inverse problems y = A x + sigma_y z with a Gaussian-mixture prior by
/// guided reverse diffusion: Monte Carlo guided diffusion (a fully adapted particle filter on the DDPM backward
/// kernel, consistent as the number of particles grows, with a log-evidence estimate), and the DPS and Pi-GDM
/// baselines, DiffPIR (plug-and-play diffusion with a proximal data step) and SKRock (stabilised Runge-Kutta-Chebyshev
/// Langevin on the posterior). B independent problems of N particles each run in one launch sequence (README: "Guided posterior sampling").
#pragma once

#include <diffsample/execution.hpp>
#include <diffsample/export.hpp>
#include <diffsample/limits.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/observation.hpp>
#include <diffsample/particles.hpp>
#include <diffsample/schedule.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace diffsample {

/// The posterior samplers (formulas in the README).
enum class guided_sampler : int {
  /// Monte Carlo guided diffusion: potentials g_k(x) = N(a_k y; A x, sigma_{y,k}^2 I) on the DDPM backward kernel
  /// N(mu(x_{k+1}), sig^2 I); weights N(a_k y; A mu, sigma_{y,k}^2 I + sig^2 A A^T) / g_{k+1}, adaptive resampling,
  /// exact Gaussian mutation from g_k(x) N(x; mu, sig^2 I). Targets the exact posterior as N grows.
  smc = 0,
  /// Diffusion posterior sampling (Chung et al.): the DDPM mean shifted by guidance_scale times the likelihood score
  /// J A^T (y - A m) / sigma_y^2 (J the denoiser Jacobian, per particle). Biased; a cheap baseline.
  dps = 1,
  /// Pseudo-inverse guided diffusion (Song et al.): as dps with the likelihood N(y; A m, r_k^2 A A^T + sigma_y^2 I),
  /// r_k^2 = s_k^2 / (a_k^2 + s_k^2) (= 1 - alpha-bar_k on VP schedules). Biased; a cheap baseline.
  pigdm = 2,
  /// DiffPIR (Zhu et al. 2023) in DeepInverse's convention: at each step the denoiser m, the proximal data step
  /// x0 = argmin_z |y - A z|^2 + (rho_k / 2) |z - m|^2 = m + A^T (A A^T + rho_k / 2 I)^-1 (y - A m), rho_k = lambda
  /// sigma_y^2 a_k^2 / s_k^2, then x' = a' x0 + s' (sqrt(1 - zeta) (x - a x0) / s + sqrt(zeta) z). Biased; a baseline.
  diffpir = 3,
  /// SKRock (Pereyra, Vargas Mieles, Zygalakis 2020): `steps` iterations of the s-stage stabilised Runge-Kutta-Chebyshev
  /// Langevin scheme on p(x | y), drift grad log p(x) + A^T (y - A x) / sigma_y^2 (the prior's own score, channel
  /// (1, 0)), step skrock_step_fraction times the stability bound of the drift. Chains start from exact prior draws.
  /// Targets the posterior up to an O(step) bias, when the chains mix between its modes.
  skrock = 4,
  /// Tweedie moment projected diffusion (Boys et al.): the likelihood approximated by
  /// N(y; A m, A C A^T + sigma_y^2 I) with C = Cov(x0 | x_k) = (s^2 / a) J from d_y Jacobian-vector products per
  /// particle (symmetrised), its score J A^T (A C A^T + sigma_y^2 I)^-1 (y - A m) added to the DDPM / DDIM mean as
  /// for dps. Biased (a Gaussian projection of p(x0 | x_k)); O(d_y) denoiser JVPs and a d_y x d_y Cholesky per
  /// particle and step.
  tmpd = 5,
  /// Denoising diffusion restoration models (Kawar et al.) on the SVD A = U diag(S) V^T (an SVD operator as given,
  /// any other operator factored once on the host): in the spectral coordinates V^T x / a each observed component is
  /// pulled to S^-1 U^T y by ddrm_eta and ddrm_eta_b, the others follow DDIM with stochasticity ddrm_eta. Biased.
  ddrm = 6,
  /// Divide-and-conquer posterior sampling (Janati et al., seed 002): dcps_blocks blocks of the time grid, each
  /// starting with dcps_langevin_steps tamed ULA steps on the block's intermediate posterior, then the block's
  /// steps drawn from mean-field Gaussian fits of the backward kernels twisted by the block's potential (README:
  /// "DCPS").
  dcps = 7,
};

/// "smc", "dps", "pigdm", "diffpir", "skrock", "tmpd", "ddrm" or "dcps".
DIFFSAMPLE_API const char* to_string(guided_sampler s) noexcept;
/// Parses the names of to_string(guided_sampler); throws invalid_argument otherwise.
DIFFSAMPLE_API guided_sampler parse_guided_sampler(const std::string& name);

/// The guidance step of guided_sampler::dps (README: "DPS step").
enum class dps_step_form : int {
  /// The likelihood score: the DDPM mean shifted by guidance_scale (c0 s^2 / a) J A^T (y - A m) / sigma_y^2. Diverges
  /// when sigma_y is small against the step (the shift grows like 1 / sigma_y^2).
  likelihood = 0,
  /// As published (Chung et al. 2022): the draw shifted by zeta J A^T (y - A m) / |y - A m| = -zeta grad_x |y - A m(x)|,
  /// zeta = guidance_scale; its size does not depend on sigma_y.
  normalised = 1,
};

/// "likelihood" or "normalised".
DIFFSAMPLE_API const char* to_string(dps_step_form f) noexcept;
/// Parses the names of to_string(dps_step_form); throws invalid_argument otherwise.
DIFFSAMPLE_API dps_step_form parse_dps_step_form(const std::string& name);

/// B linear observations y_b = A_b x + sigma_{y,b} z of the same prior (host data, FP64; the sampler folds them
/// into per-step tables on the host and copies those once per call).
struct guided_problems {
  std::int64_t problems = 1;     ///< B >= 1
  std::int64_t d_y = 1;          ///< observation dimension, 1 <= d_y <= limits::max_guided_d_y
  std::vector<double> A;         ///< d_y x d_x (shared by every problem) or B x d_y x d_x, row-major, each in
                                 ///< [-max_abs_value, max_abs_value]
  /// Instead of A (leave A empty then): one operator shared by every problem or B of them, each d_y x d_x, of any
  /// observation_kind. When every operator is a mask the samplers apply them as a gather and a scatter, O(d_y) per
  /// particle instead of O(d_y d_x). When every operator is an SVD of one rank r < d_y they run on the projected
  /// r-dimensional problem (U^T y, diag(S) V^T), which has the same posterior and guidance, and add the part of
  /// log p(y) outside the span of U to the log-normaliser. Other operators run as dense matrices. A dense matrix's
  /// entries, a mask's gains and an SVD's singular values must lie in [-max_abs_value, max_abs_value], as A's.
  std::vector<observation_operator> operators;
  std::vector<double> y;         ///< B x d_y observations, finite
  std::vector<double> sigma_y;   ///< 1 value (shared) or B values, each in [1e-18, max_abs_value]
};

/// The intermediate potentials of guided_sampler::smc (README: "Moment-projected potentials").
enum class guided_potentials : int {
  /// g_k(x) = N(a_k y; A x, sigma_{y,k}^2 I) with sigma_{y,k}^2 = a_k^2 sigma_y^2 + s_k^2 c (guided_options::
  /// potential_spread): weights by their exact predictive, exact Gaussian mutation. On a grid ending at s = 0 the
  /// last transition is fully adapted without JVPs: the kernel N(m, v_f P_A) in the observed directions (P_A the
  /// projector on the rows of A, v_f = c (a_K s / a)^2 at the last noisy point (a, s), c the spread per unit of
  /// squared row norm) drawn times the likelihood, weight its predictive, so log Z-hat and the samples stay right at
  /// small sigma_y (README: "Accuracy at small sigma_y").
  linear = 0,
  /// g_k(x) = N(y; A m(x), sigma_y^2 I + A Cov(x0 | x) A^T), m the denoiser and Cov(x0 | x) = (s^2 / a) J from d_y
  /// Jacobian-vector products per particle (what a neural prior gives: no closed form of the prior is used); the
  /// mutation stays the exact Gaussian one of the linear potentials, and the weights correct for it; the last
  /// transition (to s = 0) is fully adapted as the twisted potentials' below (weight g_{K-1} over the linear
  /// potential that steered x). Needs d_y <= 8, a grid ending at s = 0; (1 + d_y) denoiser evaluations a step.
  moment = 1,
  /// The moment potentials g_k above with a twisted proposal (the twisted diffusion sampler of Wu et al. 2023): the
  /// particles move along the gradient of their potential, x' ~ N(mu(x) + sig^2 grad log g_k(x), sig^2 I) (mu, sig
  /// the DDPM / DDIM kernel's), grad log g_k(x) = J A^T V^-1 (y - A m(x)), V = sigma_y^2 I + A Cov(x0 | x) A^T (V's
  /// own dependence on x left out; the same d_y JVPs give V and the gradient), weighted by g_{k+1}(x') p(x' | x) /
  /// (g_k(x) q(x' | x)). The last transition (to s = 0) is fully adapted: the particle is drawn from the Gaussian
  /// moment N(m, Cov) of p(x0 | x), restricted to the observed directions, times the likelihood, with weight g_{K-1}
  /// itself, so log Z-hat stays right at small sigma_y (README: "Accuracy at small sigma_y"). The same cost and
  /// limits as moment (d_y <= 8, a grid ending at s = 0); start_correction applies. guided_sample(), the ask/tell plan
  /// and the MPI shards run it, the plan and the shards bit for bit guided_sample() on the CPU executor (README:
  /// "Moment-projected potentials").
  twisted = 2,
  /// The default: chosen once at the start of a run from the problems and the grid. guided_sample() and a distributed
  /// run (mpi::guided_sample, islands and global) take twisted potentials with start_correction and multistep_kernel
  /// on when d_y <= 8 (kernels' limit, as twisted's) and the grid ends at s = 0, the multistep kernel only where
  /// log(a / s) increases strictly along the grid (a caller's multistep_kernel = true stays on, and is checked as
  /// always); otherwise linear potentials with start_correction and multistep_kernel as given. On the seed-002
  /// posterior benchmark (2000 particles x 100 steps) this meets the accuracy targets (sliced Wasserstein within
  /// 1.5x, mode-weight error within 2x of the exact-vs-exact floor) that linear potentials miss by 2 to 3x, at about
  /// 1 + d_y denoiser-sized evaluations per particle and step instead of 1 (README: "Default potentials").
  /// The ask/tell plan (sampling_plan::guided) always takes linear potentials for automatic: its caller's model
  /// answers the asks and need not answer Jacobian products; ask for twisted there explicitly. The other samplers
  /// read no potentials: they refuse moment and twisted (linear, what guided_report names for them, passes).
  automatic = 3,
};

/// "linear", "moment", "twisted" or "automatic".
DIFFSAMPLE_API const char* to_string(guided_potentials s) noexcept;
/// Parses the names of to_string(guided_potentials) and "auto" (automatic); throws invalid_argument otherwise.
DIFFSAMPLE_API guided_potentials parse_guided_potentials(const std::string& name);

/// Where the guided samplers (every one but skrock) place the steps + 1 times of their grid (README: "Time grids of
/// the guided samplers"). Every value but schedule is refused on a schedule with custom times (time_grid::custom).
enum class guided_grid : int {
  /// The schedule's own grid (options.schedule.grid, t_start, t_end: uniform in t by default).
  schedule = 0,
  /// Uniform in the signal scale a = sqrt(alpha-bar): a_k = a(t_start) + (a(t_end) - a(t_start)) k / steps, each
  /// mapped back to its time (the schedule's a must increase strictly from t_start to t_end).
  sqrt_alpha_bar = 1,
  /// sqrt_alpha_bar with a grid point at each level where the noise reaches the observation's noise along a
  /// singular direction of A: s(t) / a(t) = sigma_y / S_i, i.e. alpha-bar sigma_y^2 = (1 - alpha-bar) S_i^2 on VP
  /// schedules, for every singular value S_i > 0 of every problem's operator whose level lies strictly inside the
  /// grid (the times of the published MCGDiff experiments). These m distinct points cut [a(t_start), a(t_end)] into
  /// m + 1 segments; segment j gets 1 + n_j steps, uniform in a inside it, where the n_j split the other
  /// steps - m - 1 steps in proportion to the segments' lengths in a (largest remainders). Needs steps >= m + 1.
  spectral = 2,
  /// Uniform in (s / a)^(1 / 7), the noise-to-signal ratio's spacing of Karras et al. (2022) with rho = 7: from
  /// t_start to the schedule's uniform grid's last point before t_end (t_start + (t_end - t_start)(steps - 1) /
  /// steps), then t_end. Denser than uniform in t where the noise is large (where the modes of a mixture separate)
  /// and as fine as it at the clean end (README: "Time grids of the guided samplers"). Needs s / a to decrease to a
  /// positive value at that last point.
  noise_ratio = 3,
};

/// "schedule", "sqrt_alpha_bar", "spectral" or "noise_ratio".
DIFFSAMPLE_API const char* to_string(guided_grid g) noexcept;
/// Parses the names of to_string(guided_grid); throws invalid_argument otherwise.
DIFFSAMPLE_API guided_grid parse_guided_grid(const std::string& name);

/// The default spread of the SMC's intermediate potentials, as a multiple of trace(A A^T) / d_y (see
/// guided_options::potential_spread).
constexpr double default_potential_scale = 4.0;

/// The final moves (guided_options::final_moves) that the automatic default takes where the automatic potentials
/// resolve to twisted and the moves run: at d_y = 2, d_x = 10 they bring the median sliced W1 from 1.72x to 1.09x the
/// exact floor at ~8 prior evaluations per sample (two per move; README "The final resample-move at d_y = 2").
inline constexpr std::int64_t automatic_final_moves = 4;

/// The final moves that the automatic default takes where the automatic potentials resolve to linear on a grid ending
/// at s = 0 (d_y above the twisted potentials' limit of 8) and the moves run: at d_x = 100 and d_y = 16, 32, 64 they
/// bring the median sliced W1 from 2.3x, 2.0x and 7.4x the exact floor to 1.03x, 1.03x and 1.03x (10 moves: 1.07x,
/// 1.08x, 1.41x) at about 19% of a 100-step run's time on the CPU executor (two prior evaluations per move;
/// README "Final moves with the linear potentials").
inline constexpr std::int64_t automatic_linear_final_moves = 20;

/// The ESS threshold (guided_options::resampling.ess_threshold = -1, the default) that the automatic default takes
/// where the automatic potentials resolve to twisted; elsewhere -1 resolves to 0.5. Fewer resamplings in the window
/// where the modes separate keep the twisted filter's mode weights: on the 25-mode benchmark at d_y = 1 it brings
/// the mean weight error at d_x = 10 from 2.28x to 1.67x the exact floor (4096 particles, 3 seeds of 20 instances)
/// and leaves d_x = 100 unchanged (README "The ESS threshold with the twisted potentials").
inline constexpr double automatic_twisted_ess_threshold = 0.2;

/// Settings of one run. A field the sampler does not read (another sampler's field, the SMC's fields for the other
/// samplers, eta with ddim false, the schedule and grid for skrock) must hold its default: invalid_argument naming
/// the field and the sampler otherwise, from guided_sample(), the size query, guided_times() and the plan (README:
/// "Options a method does not read").
struct guided_options {
  guided_sampler sampler = guided_sampler::smc;  ///< posterior sampler
  /// Channel and time grid, sampled with DDPM steps between consecutive grid points (any schedule whose signal
  /// scale a stays positive: VP schedules are the intended use). The last grid point may have s = 0.
  noise_schedule schedule = noise_schedule::vp_linear();
  std::int64_t steps = 100;       ///< transitions, 1..limits::max_steps
  /// How the steps + 1 times of the grid are placed between the schedule's t_start and t_end (all samplers but
  /// skrock). guided_times() returns the times a run uses.
  guided_grid grid = guided_grid::schedule;
  /// Backward kernel: false for DDPM, true for DDIM with stochasticity eta, whose kernel
  /// N(a' m + sqrt(s'^2 - sig^2) eps, sig^2 I), eps = (x - a m) / s, sig = eta sqrt(s'^2 v / s^2), is again of the
  /// form N(c0 m + c1 x, sig^2 I) (eta = 1 is DDPM on VP schedules). eta = 0 makes the SMC mutation deterministic,
  /// so resampled copies never separate: a valid but degenerate filter.
  bool ddim = false;
  double eta = 1.0;  ///< DDIM stochasticity in [0, 1]
  std::int64_t particles = 1024;  ///< N per problem, 1..limits::max_particles
  /// SMC: the intermediate potentials' variance is sigma_{y,k}^2 = a_k^2 sigma_y^2 + s_k^2 c. With
  /// c = trace(A A^T) / d_y it would be the variance of a_k y - A x_k given x_0 (when A A^T = c I); flatter
  /// potentials, which leave room for the uncertainty of x_0 given x_k, give far smaller errors in the posterior's
  /// mode proportions (README: "Default sigma_{y,k}"). c = potential_spread when > 0; when 0 (default),
  /// c = default_potential_scale x trace(A A^T) / d_y per problem. At most max_abs_value. Linear and moment
  /// potentials (the moment ones' mutation); the twisted ones, and so the default automatic where it takes them, do
  /// not use it.
  double potential_spread = 0.0;
  /// SMC: the intermediate potentials that steer the resampling (the mutation uses the linear ones, except with
  /// twisted potentials, whose proposal follows the moment potentials' gradient).
  /// automatic (default): twisted potentials with the start correction and the multistep kernel where they run
  /// (d_y <= 8, a grid ending at s = 0), else linear ones; the ask/tell plan takes linear (guided_potentials::automatic).
  guided_potentials potentials = guided_potentials::automatic;
  /// SMC resampling: scheme and ESS threshold (resampling.seed and resampling.step are set by the sampler and must
  /// stay 0; metropolis_steps is read with the metropolis scheme only). resampling.ess_threshold -1 (the default
  /// here, automatic): automatic_twisted_ess_threshold where the automatic potentials resolve to twisted, else 0.5
  /// (resampling_options' own default), as final_moves' -1; any value >= 0 is taken as given.
  resampling_options resampling = {resampling_scheme::systematic, -1.0};
  /// SMC: weight the starting draws x ~ N(0, s_0^2 I) by p_0(x) / N(x; 0, s_0^2 I), p_0 the prior diffused to the
  /// first grid point, so that the filter starts from p_0 rather than from its Gaussian approximation (which misses
  /// the signal a_0 x_0 still present at t_start: on the 25-mode benchmark at d_x = 100, a_0 |mu_k| reaches 1.1).
  /// The log-ratio is (a_0 / s_0^2) int_0^1 x . m(u x) du, m the prior's denoiser at the first grid point, by
  /// 4-point Gauss-Legendre quadrature (4 denoiser evaluations per particle, once); the log-normaliser stays
  /// consistent (README: "Start correction"). Linear or twisted potentials; the ask/tell plan asks the caller's
  /// model for the 4 evaluations first (sampling_plan::guided); the MPI shards weight their own particles.
  bool start_correction = false;
  /// SMC: the second-order multistep backward kernel (SDE-DPM-Solver++(2M) of Lu et al. 2022, midpoint form): the
  /// kernel mean c0 m + c1 x takes m_k + (m_k - m_{k-1}) / (2 r_k) instead of the denoiser output m_k, with
  /// r_k = h_{k-1} / h_k the ratio of consecutive steps in lambda = log(a / s) and m_{k-1} the particle's previous
  /// denoiser output, which travels with its ancestor through the resampling. The first step and a last step to
  /// s = 0 keep m_k; the variance and the potentials are unchanged, as is the cost in denoiser evaluations (2 B N d
  /// floats more workspace). With linear, moment or twisted potentials, on both executors, in the ask/tell plan
  /// (sampling_plan::guided) and in a distributed run (mpi::guided_sample: the output travels with the particle
  /// between the ranks) (README: "Backward kernels at the same budget").
  bool multistep_kernel = false;
  /// SMC: after the last step draw equally weighted samples with one more resampling (outputs.samples).
  bool final_resample = true;
  /// SMC: a final resample-move. After the final resampling each sample (outputs.samples) runs final_moves
  /// preconditioned MALA steps on p_a(x) N(a y; A x, a^2 sigma_y^2 I) at the grid's last point (a, 0), the exact
  /// posterior when the grid ends at t = 0 (a = 1), so that the samples carry no duplicated rows. The drift is the
  /// prior's score at (a, 0) plus the likelihood's gradient; the Metropolis test reads the prior only through its
  /// score, as a model gives it: log p_a(x') - log p_a(x) by Simpson's rule along the move (exact for a Gaussian
  /// prior; README "Final resample-move"), the likelihood's part exactly. The
  /// preconditioner is M = (lambda I + A^T A / (a sigma_y)^2)^-1, lambda = max_k 1 / min_j v_kj / a^2 the prior's
  /// largest curvature (final_move_curvature / a^2 when given): within a mode of equal variances M is its exact
  /// posterior covariance. Two evaluations of the prior's score per sample and move (the proposal and the
  /// midpoint). 0 .. limits::max_inner_steps; needs a grid ending at s = 0 and final_resample (mpi::guided_sample
  /// runs them on each island, and in the global filter on each rank's rows of the samples, bit for bit one
  /// process's). -1 (default, automatic):
  /// automatic_final_moves where the automatic potentials resolve to twisted (potentials automatic, d_y <= 8, a grid
  /// ending at s = 0), automatic_linear_final_moves where they resolve to linear on a grid ending at s = 0 (d_y > 8),
  /// where the moves run (guided_sample() and mpi::guided_sample() with final_resample), else 0: none on a grid
  /// ending above s = 0, none in an ask/tell plan, and none with potentials given explicitly (README "Default
  /// potentials").
  /// guided_report::final_moves says what ran. An ask/tell plan runs K > 0 moves with final_move_curvature > 0
  /// (1 + 2 K more asks: a score model's at the grid's last point (a_K, 0); a denoiser or eps model's at the last
  /// transition's channel, whose answers give the score of the prior smoothed to that noise; README "Final moves in
  /// the plan"); -1 resolves to none there, and a plan without moves refuses final_move_step and
  /// final_move_curvature other than their defaults.
  std::int64_t final_moves = -1;
  /// SMC: the MALA step h of the final moves in the preconditioner's units (x' = x + (h / 2) M g + sqrt(h) M^1/2 z),
  /// finite, >= 0 and <= max_abs_value. 0 (default): h = 2 d_x^(-1/3), whose acceptance on a Gaussian the
  /// preconditioner matches exactly is 0.72 at every d_x from 10 to 4096 (MALA's optimal scaling is d^(-1/3)).
  double final_move_step = 0.0;
  /// SMC: lambda of the final moves' preconditioner M = (lambda I + A^T A / sigma_y^2)^-1, the prior's largest
  /// curvature (an upper bound of the eigenvalues of -Hessian log p_0 over x, at a = 1), finite, >= 0 and <= 1e30.
  /// 0 (default): the mixture's max_k 1 / min_j v_kj in guided_sample() and the distributed runs. An ask/tell plan
  /// with final moves needs it > 0 (its prior is the caller's model). Any lambda > 0 leaves the moves' target
  /// exact; a lambda far from the prior's curvature only slows them (smaller accepted steps where it is too large,
  /// more rejections where it is too small).
  double final_move_curvature = 0.0;
  double guidance_scale = 1.0;  ///< dps, pigdm and tmpd: multiplier of the guidance term (zeta of the normalised DPS
                                ///< step), in [0, max_abs_value]
  dps_step_form dps_step = dps_step_form::likelihood;  ///< dps: the guidance step's form
  double diffpir_zeta = 0.1;     ///< diffpir: share of fresh noise in the re-noising, in [0, 1]
  /// diffpir: lambda of rho_k = lambda sigma_y^2 a_k^2 / s_k^2 (the proximal weight is rho_k / 2: DeepInverse's
  /// lambda_, twice the paper's), finite and > 0
  double diffpir_lambda = 7.0;
  /// skrock: stages s per iteration, 2..limits::max_skrock_stages (s drift evaluations each)
  std::int64_t skrock_stages = 10;
  double skrock_eta = 0.05;            ///< skrock: damping eta, in (0, 1]
  /// skrock: step h = fraction x l_s / L, l_s = (s - 1/2)^2 (2 - 4 eta / 3) - 3/2 the stability bound of the
  /// s-stage scheme on a drift of Lipschitz constant L = max_k 1 / v_k,min + lambda_max(A^T A) / sigma_y^2 (per
  /// problem); in (0, 1]. Stable is not accurate: the stationary law's bias grows with h L (on a Gaussian, the
  /// variance along the stiffest direction is 0.997, 0.98, 0.69 and 0.50 of the exact one at fractions 0.001,
  /// 0.005, 0.02 and 0.5 with s = 10, eta = 0.05), hence the default h L = 0.86 for s = 10 (README: "SKRock").
  double skrock_step_fraction = 0.005;
  /// skrock: a Lipschitz bound of the prior's score (the largest eigenvalue of -Hessian log p_0 over x), standing
  /// for the mixture's max_k 1 / v_k,min in L; finite and >= 0, 0 (the default) takes it from the mixture. A
  /// sampling_plan for skrock needs it (> 0): its prior is the caller's model.
  double skrock_lipschitz = 0.0;
  /// ddrm: stochasticity eta of the unobserved components and of those observed with less noise than the current
  /// level, in [0, 1] (0.85, the published default).
  double ddrm_eta = 0.85;
  /// ddrm: eta_b, the weight of S^-1 U^T y in the components observed with more noise than the current level, in
  /// [0, 1] (1, the published default).
  double ddrm_eta_b = 1.0;
  /// dcps: blocks L of the time grid (block l spans grid steps l (steps / L) .. (l + 1) (steps / L), the last
  /// block up to steps), 1..steps.
  std::int64_t dcps_blocks = 4;
  /// dcps: tamed unadjusted Langevin steps M at the start of each block, 0..limits::max_inner_steps.
  std::int64_t dcps_langevin_steps = 50;
  /// dcps: Langevin step gamma, in (0, max_abs_value] (1e-3, the published default).
  double dcps_langevin_step = 1e-3;
  /// dcps: normalised stochastic gradient steps of each variational fit, 0..limits::max_dcps_gradient_steps (2, the
  /// published default).
  std::int64_t dcps_gradient_steps = 2;
  /// dcps: length of each normalised gradient step as a multiple rho of the kernel's scale: the mean moves by
  /// rho sig sqrt(d), the log standard deviations by rho sqrt(d) (sig the unconditional kernel's standard
  /// deviation); with dcps_absolute_step, the length itself (both vectors move by rho); in [0, max_abs_value].
  double dcps_learning_rate = 0.1;
  /// dcps: covariance of the approximate backward functions beta_j(x) = N(a_T y; A mu_j(x), C_j). false (default):
  /// C_j = sigma_y^2 I, the likelihood g_T at the bridge mean, as the published code evaluates it (its Langevin
  /// potential at the DDIM mean; its KL on one bridge draw, whose expected gradient is the same); true:
  /// C_j = v_j A A^T + sigma_y^2 I, the closed form of the point-mass bridge (v_j the bridge's variance from j to the
  /// block's clean end T), flatter away from T.
  bool dcps_bridge_variance = false;
  /// dcps: false (default): dcps_learning_rate is relative to the kernel's scale (above); true: it is the length of
  /// each normalised step of the mean and of the log standard deviations, whatever the kernel and the dimension
  /// (the published code's form: learning rate 1 by default, 1.5 in its image demos). On the seed-002 mixture
  /// benchmark the published form with learning rate 1 gives lower mode-weight errors (README: "DCPS").
  bool dcps_absolute_step = false;
  /// How a dense operator's A and A^T reach the particles where a run can apply them as matrix products over all
  /// particles per step (DPS / Pi-GDM on either executor, TMPD and its sampling_plan on the CPU executor):
  /// automatic (default) follows operator_gemm_worthwhile() on a problem's particles (DPS / Pi-GDM take one product
  /// per problem, so a problem's run is the same alone as in a batch; TMPD: d_y x d_x >= 4096), gemm forces the
  /// products there, direct forbids them.
  /// Elsewhere (masks, SVD operators, TMPD on the CUDA executor) the run is direct whatever this says; the other
  /// samplers do not read it and refuse a value other than automatic. guided_report::operator_path says which ran.
  /// A guided sampling_plan runs the path guided_sample() resolves for the same options and problems
  /// (sampling_plan::report() says which). The paths differ in the FP32 / FP64 sums' order, and in the residual
  /// y - A m: the direct path forms it in FP64 and rounds once, the products' path subtracts the FP32 product A m,
  /// which at a small sigma_y is off by several sigma_y where |y| is large (README: "The observation residual at
  /// small sigma_y", section "Monte Carlo guided diffusion").
  mixture_path operator_path = mixture_path::automatic;
  std::uint64_t seed = 0;       ///< Philox key; particle j of problem b uses the stream (seed, b N + j, step)
};

/// Caller buffers (device-accessible on the CUDA executor, host-accessible on the CPU one); nullptr to skip. No two
/// of them, nor one and the caller's workspace, may share memory (invalid_argument naming both). log_weights,
/// log_normaliser, ess_trace and resample_count are written by smc only: with another sampler each must be nullptr
/// (invalid_argument naming the first given).
struct guided_outputs {
  float* particles = nullptr;        ///< B x N x d_x final particles (weighted by log_weights for smc)
  float* log_weights = nullptr;      ///< B x N final log-weights, unnormalised (smc; zeros after a resampling)
  float* samples = nullptr;          ///< B x N x d_x equally weighted samples: smc after the final resample
                                     ///< (needs final_resample), the other samplers their particles. smc's rows come in
                                     ///< an order permuted by a permutation keyed by the seed (the same on both
                                     ///< executors), so that any block of rows is a random subset of the samples
  /// B estimates of log p(y_b) (smc) on a grid ending at a = 1, s = 0; on a grid whose last point (a, s) has s > 0,
  /// of the last potential's normaliser, log E[N(a y_b; A x_t, v I)] over the prior's x_t there (README, "Guided
  /// posterior sampling")
  double* log_normaliser = nullptr;
  float* ess_trace = nullptr;        ///< B x (steps + 1): ESS at the start and after each transition (smc)
  std::int32_t* resample_count = nullptr;  ///< B: resamplings per problem, final resample excluded (smc)
};

/// What a run did.
struct guided_report {
  executor ran = executor::automatic;  ///< executor that ran
  std::int64_t launches = 0;  ///< kernel launches (or CPU loops) issued
  /// How a dense operator's A and A^T reached the particles: gemm when the run applied them as matrix products over
  /// all particles per step (DPS / Pi-GDM on either executor and TMPD on the CPU executor, past
  /// operator_gemm_worthwhile(), TMPD past d_y x d_x >= 4096, or forced by guided_options::operator_path), else
  /// direct.
  mixture_path operator_path = mixture_path::direct;
  /// smc: the intermediate potentials that ran, guided_options::potentials with automatic resolved for this run
  /// (twisted or linear: guided_potentials::automatic); the other samplers, which have none, leave linear.
  guided_potentials potentials = guided_potentials::linear;
  /// smc: whether the start correction ran (guided_options::start_correction, or turned on by automatic potentials
  /// resolved to twisted); false for the other samplers.
  bool start_correction = false;
  /// smc: whether the multistep backward kernel ran (guided_options::multistep_kernel, or turned on by automatic
  /// potentials resolved to twisted); false for the other samplers.
  bool multistep_kernel = false;
  /// smc: the final moves that ran per sample (guided_options::final_moves with -1 resolved: automatic_final_moves,
  /// automatic_linear_final_moves or 0); 0 for the other samplers.
  std::int64_t final_moves = 0;
  /// smc: the ESS threshold that ran (guided_options::resampling.ess_threshold with -1 resolved:
  /// automatic_twisted_ess_threshold or 0.5); 0 for the other samplers, which do not resample.
  double ess_threshold = 0;
};

/// Bytes of workspace guided_sample() needs on either executor (state buffers, the per-step tables and the
/// resampling workspace; DPS and Pi-GDM when they take the operator's products, guided_report::operator_path gemm,
/// also the products' buffer, cuBLAS's 4 MiB workspace included). This form names no executor, so it answers the
/// bound on both: the CUDA executor's size, which the CPU executor accepts too. The form with an execution answers
/// for one executor.
/// @throws invalid_argument as guided_sample() does
DIFFSAMPLE_API std::size_t guided_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                                  const guided_options& options);
/// Bytes of workspace guided_sample() needs on the executor @p exec names: on the CPU executor less the bytes only
/// the CUDA executor uses (cuBLAS's 4 MiB workspace of DPS and Pi-GDM's products, which the CPU run never touches),
/// on the CUDA executor the bound of the form without an execution. exec.kind automatic answers for the executor a
/// call with device buffers would run on: CUDA when a GPU is usable, else the CPU (the stream is not used).
/// @throws invalid_argument as guided_sample() does, and for exec.kind cuda without a usable GPU
DIFFSAMPLE_API std::size_t guided_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                                  const guided_options& options, execution exec);

/// The steps + 1 times, in sampling order, of the grid guided_sample() runs on with these options (the schedule's
/// own grid for guided_grid::schedule; the spectral grid from the singular values of every problem's operator:
/// an SVD operator's as given, a mask's |gains|, a dense A's from the eigenvalues of A A^T).
/// @throws invalid_argument as guided_sample() does, and for a grid the schedule cannot give (a not increasing
///         from t_start to t_end, or fewer steps than the spectral grid's segments)
DIFFSAMPLE_API std::vector<double> guided_times(const gaussian_mixture& prior, const guided_problems& problems,
                                                const guided_options& options);

/// The seed of run t of a family of SMC runs keyed by one options.seed: trajectory t of a guided SMC ask/tell plan
/// (sampling_plan::guided) and the island of rank t in mpi::guided_sample's island mode run as guided_sample() with
/// options.seed = guided_run_seed(seed, t) = seed + t * 0xDA942042E4DD58B5 (mod 2^64). Run 0 keeps the seed; the
/// runs of two seeds less than 2^46 apart share no seed for t < 2^16 (every multiple t C, 0 < t < 2^16, of the odd
/// constant C lies at least 2^46 from 0 mod 2^64), so replicates at consecutive seeds are independent runs. (It was
/// seed + t: trajectory 1 of seed s was trajectory 0 of seed s + 1.)
constexpr std::uint64_t guided_run_seed(std::uint64_t seed, std::uint64_t t) noexcept {
  return seed + t * 0xDA942042E4DD58B5ull;
}

/// Runs a guided sampler on every problem. The tables are built on the host in FP64 (O(steps B d_y^3 +
/// steps B d_y^2 d_x)) and copied once (on exec.stream, through a pinned staging block of the library's up to
/// 256 MiB of tables in flight, so the copy does not wait for the stream; beyond that from pageable memory, which
/// the CUDA runtime may copy synchronously with the stream's earlier work); then each SMC transition issues a fixed
/// handful of launches (weighting, resample(), bookkeeping, mutation from the ancestors' means) with no allocation and
/// no host synchronisation; diffpir and skrock run fused in one launch (skrock: no diffusion grid; its `steps` are
/// iterations of s stages each, the schedule unused), dps and pigdm too on the CUDA executor, while on the CPU
/// executor they run step by step (the mixture's denoiser, the guidance, its J v, the update: the stages of the
/// ask/tell plan, sampling_plan::guided). Without a caller workspace one stream-ordered
/// allocation is made per call; a caller's workspace holds guided_workspace_bytes(prior, problems, options, exec)
/// bytes (the form without an execution answers for either executor). Asynchronous on the CUDA executor. Not
/// capturable in a CUDA graph (the tables are the call's own host memory, which a replay would read again): a
/// sampling_plan::guided loop captures instead.
/// @throws invalid_argument for inconsistent sizes, non-finite values, non-positive sigma_y, an invalid schedule
///         or options, overlapping outputs, an output that smc alone writes (log_weights, log_normaliser,
///         ess_trace, resample_count) given to another sampler, or for a CUDA run while exec.stream is being
///         captured, before anything is launched
DIFFSAMPLE_API guided_report guided_sample(const gaussian_mixture& prior, guided_outputs outputs,
                                           const guided_problems& problems, const guided_options& options,
                                           execution exec = {}, void* workspace = nullptr,
                                           std::size_t workspace_bytes = 0);
/// guided_sample() in the argument order before 0.3.0 (the outputs after the problems and options).
[[deprecated("outputs first: guided_sample(prior, outputs, problems, options, exec)")]] inline guided_report
guided_sample(const gaussian_mixture& prior, const guided_problems& problems, const guided_options& options,
              guided_outputs outputs, execution exec = {}, void* workspace = nullptr,
              std::size_t workspace_bytes = 0) {
  return guided_sample(prior, outputs, problems, options, exec, workspace, workspace_bytes);
}

}  // namespace diffsample
