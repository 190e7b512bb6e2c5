// `diffsample solve`: the exact posterior of a problem file's prior under its linear-Gaussian observation, and
// posterior sampling with the guided samplers (smc, dps, pigdm, diffpir, skrock, tmpd, ddrm, dcps) scored against it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <diffsample/diffsample.hpp>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "cli/distributed.hpp"
#include "cli/io.hpp"
#include "cli/plot.hpp"
#include "cli/runner.hpp"
#include "cli/score.hpp"
#include "src/enum_tables.hpp"
#include "src/guided_resolved.hpp"
#include "src/option_readers.hpp"

namespace diffsample::cli {
namespace {

namespace ds = diffsample;

// The usage text states these limits in words (2..200, 0..2^20, 0..64): it changes with them.
static_assert(ds::limits::max_skrock_stages == 200 && ds::limits::max_inner_steps == (std::int64_t(1) << 20) &&
                  ds::limits::max_dcps_gradient_steps == 64,
              "solve's usage text states the SKRock stage, DCPS Langevin step and DCPS gradient step limits");
const char* solve_usage =
    "usage: diffsample solve --problem FILE.json [options]\n"
    "Posterior sampling for a problem file's prior under its observation y = A x + sigma_y z, scored against the\n"
    "exact posterior (sliced W1 beside the exact-vs-exact floor, log p(y) estimate beside the exact value).\n"
    "  --problem FILE.json     problem file with 'prior' and 'observation' (docs in README)\n"
    "  --sampler NAME          smc (Monte Carlo guided diffusion, default), dps, pigdm, diffpir, skrock, tmpd, ddrm,\n"
    "                          dcps, or exact (the exact posterior's own samples: the reference itself)\n"
    "  --particles N           particles (samples) per problem (default 4096 on the CPU, 65536 on a GPU;\n"
    "                          the exact sampler 16384 on either)\n"
    "  --steps N               diffusion steps of the guided samplers, skrock's iterations (default: the problem\n"
    "                          file's sampler.steps, else 100)\n"
    "  --dps-step likelihood|normalised  dps: the likelihood score (default) or the step as published,\n"
    "                          zeta J A^T (y - A m) / |y - A m|\n"
    "  --guidance-scale G      dps, pigdm and tmpd: guidance multiplier, the normalised step's zeta (default 1)\n"
    "  --ddim-eta E            smc, dps, pigdm, tmpd and dcps: DDIM kernels with stochasticity E in [0, 1]\n"
    "                          instead of DDPM\n"
    "  --operator-path automatic|gemm|direct  dps, pigdm and tmpd with a dense A: its products over all particles\n"
    "                          per step as matrix products (gemm; tmpd on the CPU executor only) or per particle\n"
    "                          (direct); automatic (default) by the size rule. The paths differ in rounding only\n"
    "  --diffpir-zeta Z        diffpir: share of fresh noise in the re-noising, in [0, 1] (default 0.1)\n"
    "  --diffpir-lambda L      diffpir: rho_k = L sigma_y^2 a_k^2 / s_k^2 of the proximal step (default 7)\n"
    "  --skrock-stages S       skrock: stages per iteration, 2..200 (default 10)\n"
    "  --skrock-eta E          skrock: damping, in (0, 1] (default 0.05)\n"
    "  --skrock-step-fraction F  skrock: step as a fraction of the stability bound, in (0, 1] (default 0.005)\n"
    "  --ddrm-eta E            ddrm: eta in [0, 1] (default 0.85)\n"
    "  --ddrm-eta-b E          ddrm: eta_b in [0, 1] (default 1)\n"
    "  --dcps-blocks L         dcps: blocks of the time grid, 1..steps (default 4)\n"
    "  --dcps-langevin-steps M dcps: tamed ULA steps per block, 0..2^20 (default 50)\n"
    "  --dcps-langevin-step G  dcps: Langevin step, > 0 (default 1e-3)\n"
    "  --dcps-bridge-variance 0|1  dcps: the potentials' covariance sigma_y^2 I, the likelihood at the bridge\n"
    "                          mean as published (0, default), or v_j A A^T + sigma_y^2 I (1)\n"
    "  --dcps-gradient-steps G dcps: normalised gradient steps per kernel fit, 0..64 (default 2)\n"
    "  --dcps-learning-rate R  dcps: gradient step length in units of the kernel's scale, >= 0 (default 0.1)\n"
    "  --dcps-absolute-step 0|1  dcps: the learning rate as the step's length itself (1, the published form,\n"
    "                          whose learning rate is 1) or in units of the kernel's scale (0, default)\n"
    "  --time-grid NAME        every sampler but skrock: the grid's times from t = 1 to 0, uniform (default) or\n"
    "                          quadratic in t, sqrt_alpha_bar (uniform in a = sqrt(alpha-bar)), or spectral\n"
    "                          (sqrt_alpha_bar plus the time where s / a = sigma_y / S_i for each singular value S_i),\n"
    "                          or noise_ratio (uniform in (s / a)^(1/7), then the uniform grid's last step)\n"
    "                          (a problem file's sampler.time_grid: uniform or quadratic)\n"
    "  --schedule NAME         every sampler but skrock: the noise schedule, vp_linear (default), vp_cosine,\n"
    "                          vp_table (file only: its sampler.alpha_bar), variance_exploding, ornstein_uhlenbeck,\n"
    "                          ... (sample --help; the samplers need a signal scale a > 0 on the grid)\n"
    "  --t-start T, --t-end T  every sampler but skrock: ends of the time grid (default: the schedule's)\n"
    "  (each of these may also be given in the problem file's sampler section, with '_' for '-'; the command line\n"
    "   wins)\n"
    "  --samples N             alias of --particles (the exact sampler's sample count)\n"
    "  --executor auto|cuda|cpu  where the sampler runs, the exact one included (default auto)\n"
    "  --seed S                random seed (default 1)\n"
    "  --out FILE.npy          write the samples (float32, N x d)\n"
    "  --report FILE.json      write the JSON report\n"
    "  --plot FILE.svg         write an SVG of the first two coordinates over exact posterior samples\n"
    "  --ess-plot FILE.svg     smc: write an SVG of ESS / N against the step (resamplings show as jumps back to 1;\n"
    "                          the resampling threshold dashed)\n"
    "SMC settings (defaults: the library's guided_options):\n"
    "  --potential-scale X     intermediate potentials' spread c = X trace(A A^T) / d_y (default 4; linear and\n"
    "                          moment potentials)\n"
    "  --resampling NAME       systematic (default), stratified, residual, multinomial, metropolis, rejection\n"
    "  --ess-threshold T|auto  resample when ESS < T N; auto (default): 0.2 where the automatic potentials run\n"
    "                          twisted, else 0.5\n"
    "  --potentials NAME       automatic (default), linear, moment or twisted: automatic is twisted with\n"
    "                          --start-correction and --multistep-kernel when d_y <= 8 and the grid ends at t = 0\n"
    "                          (about 1 + d_y denoiser evaluations per particle and step), else linear; linear\n"
    "                          N(a y; A x, a^2 sigma_y^2 + s^2 c) (one evaluation); moment N(y; A m(x), sigma_y^2 I +\n"
    "                          A Cov(x0|x) A^T) from the denoiser and its Jacobian (d_y <= 8); twisted: the moment\n"
    "                          potentials with the proposal moved along their gradient (d_y <= 8)\n"
    "                          (the summary's potentials: line and the report's potentials_ran name what ran)\n"
    "  --start-correction      weight the starting draws by p_0(x) / N(x; 0, s_0^2 I) (4 denoiser evaluations per\n"
    "                          particle; linear or twisted potentials; on with the automatic potentials' twisted)\n"
    "  --final-moves K|auto    after the final resampling, K preconditioned MALA steps per sample on p(x) p(y | x) at\n"
    "                          the grid's last point (one prior score per sample and step); auto (default, or -1):\n"
    "                          4 where the automatic potentials run twisted, 20 where they run linear on a grid\n"
    "                          ending at t = 0 (d_y > 8), else 0 (the summary's final moves: line)\n"
    "  --final-move-step H     their step in the preconditioner's units (default 2 d^(-1/3))\n"
    "  --multistep-kernel      second-order multistep backward kernel: the kernel mean takes m_k + (m_k - m_{k-1}) /\n"
    "                          (2 r_k), m_{k-1} the particle's previous denoiser output (no extra evaluation; on\n"
    "                          with the automatic potentials' twisted)\n"
    "  --quiet                 print nothing on success (and no progress line)\n"
    "A progress line (elapsed time: the run is one library call) is drawn on stderr when it is a terminal.\n"
    "Exit status: 0 success, 1 bad input or failed run, 2 bad command line.\n";

/// The flag of the particle count: --samples (its alias) when given, else --particles (which also names the default).
const char* count_flag(const options& o) { return o.has("--samples") ? "--samples" : "--particles"; }

/// Whether the command line gave the particle count (a count the program cannot hold is then a bad command line).
bool count_given(const options& o) { return o.has("--samples") || o.has("--particles"); }

/// "dense", "mask" or "svd": how the problem file gave A.
const char* operator_kind(const problem& file) {
  return file.observation_op ? ds::to_string(file.observation_op->kind()) : "dense";
}

/// The potentials of an SMC run: as given, then, for automatic, what the run resolved them to, with the corrections
/// that ran beside them ("automatic -> twisted (start correction, multistep kernel)", "linear").
std::string potentials_text(ds::guided_potentials given, const ds::guided_report& ran) {
  std::string text = ds::to_string(ran.potentials);
  if (ran.start_correction || ran.multistep_kernel)
    text += std::string(" (") + (ran.start_correction ? "start correction" : "") +
            (ran.start_correction && ran.multistep_kernel ? ", " : "") +
            (ran.multistep_kernel ? "multistep kernel" : "") + ")";
  return given == ds::guided_potentials::automatic ? std::string("automatic -> ") + text : text;
}

/// The final moves of an SMC run: as given, then, for automatic (-1), what the run resolved them to
/// ("automatic -> 4", "0").
std::string final_moves_text(std::int64_t given, const ds::guided_report& ran) {
  const std::string text = std::to_string(ran.final_moves) + " per sample";
  return given < 0 ? std::string("automatic -> ") + text : text;
}

/// Runs the guided sampler of @p g for its first @p k steps only (the run's grid points, @p times: the first k + 1 as
/// a custom grid of the schedule, which the guided grids' own placement must not replace; every step draws from the
/// Philox stream (seed, particle, step), so these steps are those of the full run) and returns the non-finite values
/// among the particles.
std::int64_t non_finite_after(const ds::gaussian_mixture& mixture, const ds::guided_problems& problems,
                              const ds::guided_options& g, const std::vector<double>& times, std::int64_t k,
                              ds::executor where) {
  ds::guided_options h = g;
  h.steps = k;
  h.grid = ds::guided_grid::schedule;
  h.schedule.with_times(std::vector<double>(times.begin(), times.begin() + k + 1));
  exec_buffer<float> x(where, g.particles * mixture.dim());
  ds::guided_outputs out;
  out.particles = x.data();
  ds::guided_sample(mixture, out, problems, h, {where});
  return count_non_finite(x.to_host());
}

/// The first step after which the sampler's particles hold a non-finite value, found by bisection over runs of the
/// first k steps (a value that is not finite stays so: every step maps it to inf or NaN). @p g diverged. 0 for dcps,
/// whose first k steps are not a run of k steps: its blocks are cut from the number of steps (each potential aims at
/// its block's clean end) and its Langevin noise sits at stream steps after steps x (dcps_gradient_steps + 1), so a
/// shorter run is another run (and one with fewer steps than dcps_blocks is refused).
std::int64_t divergence_step(const ds::gaussian_mixture& mixture, const ds::guided_problems& problems,
                             const ds::guided_options& g, ds::executor where) {
  if (g.sampler == ds::guided_sampler::dcps) return 0;
  // The times the run took: guided_times() places the guided grids (sqrt_alpha_bar, spectral, noise_ratio), which
  // the schedule's own points are not.
  const std::vector<double> times = ds::guided_times(mixture, problems, g);
  std::int64_t lo = 1, hi = g.steps;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (non_finite_after(mixture, problems, g, times, mid, where) > 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/// The flags of the posterior samplers' settings and their problem-file fields, each the name of the field of
/// guided_options it sets; the library's table (src/option_readers.hpp) says which samplers read it.
struct posterior_flag {
  const char* flag;
  const char* field;
};
const posterior_flag posterior_flags[] = {
    {"--ddim-eta", "ddim"},
    {"--dps-step", "dps_step"},
    {"--guidance-scale", "guidance_scale"},
    {"--operator-path", "operator_path"},
    {"--diffpir-zeta", "diffpir_zeta"},
    {"--diffpir-lambda", "diffpir_lambda"},
    {"--skrock-stages", "skrock_stages"},
    {"--skrock-eta", "skrock_eta"},
    {"--skrock-step-fraction", "skrock_step_fraction"},
    {"--ddrm-eta", "ddrm_eta"},
    {"--ddrm-eta-b", "ddrm_eta_b"},
    {"--dcps-blocks", "dcps_blocks"},
    {"--dcps-langevin-steps", "dcps_langevin_steps"},
    {"--dcps-langevin-step", "dcps_langevin_step"},
    {"--dcps-bridge-variance", "dcps_bridge_variance"},
    {"--dcps-gradient-steps", "dcps_gradient_steps"},
    {"--dcps-learning-rate", "dcps_learning_rate"},
    {"--dcps-absolute-step", "dcps_absolute_step"},
};

/// Whether --sampler @p method reads the field of guided_options named @p field (exact reads none).
bool sampler_reads(const std::string& method, const char* field) {
  return method != "exact" && ds::detail::guided_sampler_reads(ds::parse_guided_sampler(method), field);
}

/// The --sampler values that read @p field, as "dps, pigdm or tmpd".
std::string samplers_reading(const char* field) {
  std::vector<std::string> names;
#define DIFFSAMPLE_CLI_READER_(T, v, c) \
  if (ds::detail::guided_sampler_reads(ds::guided_sampler::v, field)) names.push_back(#v);
  DIFFSAMPLE_GUIDED_SAMPLER_VALUES(DIFFSAMPLE_CLI_READER_)
#undef DIFFSAMPLE_CLI_READER_
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

/// The posterior samplers' settings: the problem file's sampler section, then the command line over it. A file's
/// setting reaches only the samplers that read it (a file serves every sampler; the library refuses a setting its
/// sampler does not read), the command line's are checked against --sampler in read_solve().
void apply_posterior_settings(const options& o, const sampler_spec& given, ds::guided_options& g) {
  const std::string method = ds::to_string(g.sampler);
  sampler_spec file = given;
  const auto drop_unread = [&](const char* field, auto& value) {
    if (!sampler_reads(method, field)) value.reset();
  };
  drop_unread("dps_step", file.dps_step);
  drop_unread("guidance_scale", file.guidance_scale);
  drop_unread("operator_path", file.operator_path);
  drop_unread("diffpir_zeta", file.diffpir_zeta);
  drop_unread("diffpir_lambda", file.diffpir_lambda);
  drop_unread("skrock_stages", file.skrock_stages);
  drop_unread("skrock_eta", file.skrock_eta);
  drop_unread("skrock_step_fraction", file.skrock_step_fraction);
  drop_unread("ddrm_eta", file.ddrm_eta);
  drop_unread("ddrm_eta_b", file.ddrm_eta_b);
  drop_unread("dcps_blocks", file.dcps_blocks);
  drop_unread("dcps_langevin_steps", file.dcps_langevin_steps);
  drop_unread("dcps_langevin_step", file.dcps_langevin_step);
  drop_unread("dcps_bridge_variance", file.dcps_bridge_variance);
  drop_unread("dcps_gradient_steps", file.dcps_gradient_steps);
  drop_unread("dcps_learning_rate", file.dcps_learning_rate);
  drop_unread("dcps_absolute_step", file.dcps_absolute_step);
  if (file.dps_step) g.dps_step = ds::parse_dps_step_form(*file.dps_step);
  if (file.guidance_scale) g.guidance_scale = *file.guidance_scale;
  if (file.operator_path) g.operator_path = ds::parse_mixture_path(*file.operator_path);
  if (file.diffpir_zeta) g.diffpir_zeta = *file.diffpir_zeta;
  if (file.diffpir_lambda) g.diffpir_lambda = *file.diffpir_lambda;
  if (file.skrock_stages) g.skrock_stages = *file.skrock_stages;
  if (file.skrock_eta) g.skrock_eta = *file.skrock_eta;
  if (file.skrock_step_fraction) g.skrock_step_fraction = *file.skrock_step_fraction;
  if (file.ddrm_eta) g.ddrm_eta = *file.ddrm_eta;
  if (file.ddrm_eta_b) g.ddrm_eta_b = *file.ddrm_eta_b;
  if (file.dcps_blocks) g.dcps_blocks = *file.dcps_blocks;
  if (file.dcps_langevin_steps) g.dcps_langevin_steps = *file.dcps_langevin_steps;
  if (file.dcps_langevin_step) g.dcps_langevin_step = *file.dcps_langevin_step;
  if (file.dcps_bridge_variance) g.dcps_bridge_variance = *file.dcps_bridge_variance;
  if (file.dcps_gradient_steps) g.dcps_gradient_steps = *file.dcps_gradient_steps;
  if (file.dcps_learning_rate) g.dcps_learning_rate = *file.dcps_learning_rate;
  if (file.dcps_absolute_step) g.dcps_absolute_step = *file.dcps_absolute_step;
  if (o.has("--dps-step")) g.dps_step = parse_flag("--dps-step", o.get("--dps-step"), ds::parse_dps_step_form);
  if (o.has("--guidance-scale")) g.guidance_scale = to_double("--guidance-scale", o.get("--guidance-scale"));
  if (o.has("--operator-path"))
    g.operator_path = parse_flag("--operator-path", o.get("--operator-path"), ds::parse_mixture_path);
  if (o.has("--diffpir-zeta")) g.diffpir_zeta = to_double("--diffpir-zeta", o.get("--diffpir-zeta"));
  if (o.has("--diffpir-lambda")) g.diffpir_lambda = to_double("--diffpir-lambda", o.get("--diffpir-lambda"));
  if (o.has("--skrock-stages"))
    g.skrock_stages = to_int("--skrock-stages", o.get("--skrock-stages"), 2, diffsample::limits::max_skrock_stages);
  if (o.has("--skrock-eta")) g.skrock_eta = to_double("--skrock-eta", o.get("--skrock-eta"));
  if (o.has("--skrock-step-fraction"))
    g.skrock_step_fraction = to_double("--skrock-step-fraction", o.get("--skrock-step-fraction"));
  if (o.has("--ddrm-eta")) g.ddrm_eta = to_double("--ddrm-eta", o.get("--ddrm-eta"));
  if (o.has("--ddrm-eta-b")) g.ddrm_eta_b = to_double("--ddrm-eta-b", o.get("--ddrm-eta-b"));
  if (o.has("--dcps-blocks")) g.dcps_blocks = to_int("--dcps-blocks", o.get("--dcps-blocks"), 1);
  if (o.has("--dcps-langevin-steps"))
    g.dcps_langevin_steps =
        to_int("--dcps-langevin-steps", o.get("--dcps-langevin-steps"), 0, diffsample::limits::max_inner_steps);
  if (o.has("--dcps-langevin-step"))
    g.dcps_langevin_step = to_double("--dcps-langevin-step", o.get("--dcps-langevin-step"));
  if (o.has("--dcps-bridge-variance"))
    g.dcps_bridge_variance = to_bool("--dcps-bridge-variance", o.get("--dcps-bridge-variance"));
  if (o.has("--dcps-gradient-steps"))
    g.dcps_gradient_steps = to_int("--dcps-gradient-steps", o.get("--dcps-gradient-steps"), 0,
                                   diffsample::limits::max_dcps_gradient_steps);
  if (o.has("--dcps-learning-rate"))
    g.dcps_learning_rate = to_double("--dcps-learning-rate", o.get("--dcps-learning-rate"));
  if (o.has("--dcps-absolute-step"))
    g.dcps_absolute_step = to_bool("--dcps-absolute-step", o.get("--dcps-absolute-step"));
}

/// solve with a guided posterior sampler: runs it on the CPU or CUDA executor and scores its samples against the
/// exact posterior. Samples that are not finite (a diverged run) are counted, the step at which the sampler
/// diverged is found and printed, the distance is not computed (null in the report), and the outputs are written.
int run_guided(const options& o, const problem& file, const ds::gaussian_mixture& mixture,
               const ds::mixture_posterior& post, const std::string& method, ds::executor where, std::int64_t n,
               std::uint64_t seed, bool quiet, output_set& outputs) {
  const ds::linear_observation& obs = *file.observation;
  const std::int64_t d = mixture.dim();
  ds::guided_problems problems;
  ds::guided_options g;
  // Every setting against the library's own limits before the run (the workspace query refuses what the run
  // refuses, the schedule's a = 0 where the samplers need a > 0 included), reported with its flag (exit status 2) or
  // its key in the problem file (exit status 1).
  const std::vector<setting> table = {
      {"options.steps", "--steps", "steps"},
      {"options.particles", count_flag(o)},
      {"options.potential_spread", "--potential-scale", nullptr, "as the spread c = X trace(A A^T) / d_y"},
      {"options.resampling.ess_threshold", "--ess-threshold"},
      {"options.eta", "--ddim-eta"},
      {"options.potentials", "--potentials", "potentials"},
      {"options.start_correction", "--start-correction"},
      {"options.final_moves", "--final-moves"},
      {"options.final_move_step", "--final-move-step"},
      {"options.multistep_kernel", "--multistep-kernel"},
      {"options.schedule", "--schedule/--time-grid/--t-start/--t-end", "schedule/time_grid/t_start/t_end/alpha_bar"},
      {"options.grid", "--time-grid", "time_grid"},
      {"options.dps_step", "--dps-step", "dps_step"},
      {"options.guidance_scale", "--guidance-scale", "guidance_scale"},
      {"options.operator_path", "--operator-path", "operator_path"},
      {"options.diffpir_zeta", "--diffpir-zeta", "diffpir_zeta"},
      {"options.diffpir_lambda", "--diffpir-lambda", "diffpir_lambda"},
      {"options.skrock_stages", "--skrock-stages", "skrock_stages"},
      {"options.skrock_eta", "--skrock-eta", "skrock_eta"},
      {"options.skrock_step_fraction", "--skrock-step-fraction", "skrock_step_fraction"},
      {"options.ddrm_eta", "--ddrm-eta", "ddrm_eta"},
      {"options.ddrm_eta_b", "--ddrm-eta-b", "ddrm_eta_b"},
      {"options.dcps_blocks", "--dcps-blocks", "dcps_blocks"},
      {"options.dcps_langevin_steps", "--dcps-langevin-steps", "dcps_langevin_steps"},
      {"options.dcps_langevin_step", "--dcps-langevin-step", "dcps_langevin_step"},
      {"options.dcps_gradient_steps", "--dcps-gradient-steps", "dcps_gradient_steps"},
      {"options.dcps_learning_rate", "--dcps-learning-rate", "dcps_learning_rate"},
  };
  // Every setting of the run and its checks, under mpirun by every process alike (an agreement): the command
  // line of one process alone can hold a value the others refuse or accept, and MPI has started.
  std::exception_ptr refused;
  try {
    if (!(obs.sigma_y > 0))
      throw input_error(file.path + ": observation.sigma_y: the guided samplers need sigma_y > 0, got " +
                        fmt(obs.sigma_y) + " (use --sampler exact for the noiseless posterior)");
    // The library's own bound (guided_sample's validation), named here with the file's field: below 1e-18 the FP32
    // samplers' sigma_y^2 is no normal number.
    if (obs.sigma_y < std::sqrt(ds::min_variance))
      throw input_error(file.path + ": observation.sigma_y: the guided samplers need sigma_y >= " +
                        fmt(std::sqrt(ds::min_variance)) + " (they square it in FP32), got " + fmt(obs.sigma_y) +
                        " (use --sampler exact for the posterior at this noise)");
    problems.problems = 1;
    problems.d_y = obs.d_y;
    if (file.observation_op && file.observation_op->kind() != ds::observation_kind::dense)
      problems.operators = {*file.observation_op};  // masks run as a gather/scatter
    else
      problems.A = obs.A;
    problems.y = obs.y;
    problems.sigma_y = {obs.sigma_y};
    g.sampler = ds::parse_guided_sampler(method);
    // --steps, else the problem file's sampler.steps (as its seed and executor), else 100.
    g.steps = o.has("--steps") ? to_steps(o.get("--steps"), 1) : file.sampler.steps.value_or(100);
    apply_posterior_settings(o, file.sampler, g);
    // gemm forces the operator's products where a run of dps, pigdm or tmpd can take them (a dense A; tmpd on the CPU
    // executor only); elsewhere the library runs direct whatever it says, so the program refuses it rather than
    // ignore it, naming where it came from (flag: exit status 2; the file's key: 1).
    if (g.operator_path == ds::mixture_path::gemm &&
        (g.sampler == ds::guided_sampler::dps || g.sampler == ds::guided_sampler::pigdm ||
         g.sampler == ds::guided_sampler::tmpd)) {
      const bool dense = !file.observation_op || file.observation_op->kind() == ds::observation_kind::dense;
      if (!dense || (g.sampler == ds::guided_sampler::tmpd && where == ds::executor::cuda)) {
        const std::string why =
            !dense ? std::string("this problem's operator is a ") + operator_kind(file) +
                         ", which runs per particle (direct) whatever the path; gemm needs a dense A"
                   : std::string("tmpd takes the operator's products on the CPU executor only");
        if (o.has("--operator-path")) throw usage_error("--operator-path: gemm: " + why);
        throw input_error(file.path + ": sampler.operator_path: gemm: " + why);
      }
    }
    g.particles = n;
    g.seed = seed;
    if (o.has("--potential-scale")) {
      const double scale = to_double("--potential-scale", o.get("--potential-scale"));
      if (!(scale > 0)) throw usage_error("--potential-scale: must be > 0, got " + o.get("--potential-scale"));
      double trace = 0;
      for (double a : obs.A) trace += a * a;
      g.potential_spread = scale * trace / double(obs.d_y);
    }
    if (o.has("--resampling"))
      g.resampling.scheme = parse_flag("--resampling", o.get("--resampling"), ds::parse_resampling_scheme);
    if (o.has("--ess-threshold")) {
      // T >= 0 as given, or auto (the library's -1: 0.2 where the automatic potentials run twisted, else 0.5)
      const std::string t = o.get("--ess-threshold");
      if (t == "auto" || t == "automatic") {
        g.resampling.ess_threshold = -1;
      } else {
        g.resampling.ess_threshold = to_double("--ess-threshold", t);
        if (!(std::isfinite(g.resampling.ess_threshold) && g.resampling.ess_threshold >= 0))
          throw usage_error("--ess-threshold: must be finite and >= 0, got " + t);
      }
    }
    // The schedule of every sampler with a diffusion grid (skrock has none, and leaves the file's keys to the samplers
    // that read them, as it leaves dps_step): the problem file's sampler.schedule, alpha_bar, t_start, t_end and
    // time_grid, as `sample` reads them, then --schedule, --t-start, --t-end and --time-grid over them.
    if (ds::detail::guided_sampler_reads(g.sampler, "schedule")) {
      run_settings s;
      read_schedule(o, file.sampler, s);
      if (o.has("--time-grid")) {
        const std::string name = o.get("--time-grid");
        if (name == "uniform" || name == "quadratic") {
          s.time_grid = name;
        } else if (name == "sqrt_alpha_bar" || name == "spectral" || name == "noise_ratio") {
          g.grid = ds::parse_guided_grid(name);
        } else {
          throw usage_error("--time-grid: uniform, quadratic, sqrt_alpha_bar, spectral or noise_ratio (the grid ends "
                            "at t = 0), got " + name);
        }
      } else if (file.sampler.time_grid) {
        const std::string& name = *file.sampler.time_grid;  // uniform, quadratic or geometric (checked by the reader)
        if (name != "uniform" && name != "quadratic")
          throw input_error(file.path + ": sampler.time_grid: solve's samplers take uniform or quadratic from a "
                            "problem file (or --time-grid sqrt_alpha_bar, spectral or noise_ratio), got " + name);
        s.time_grid = name;
      }
      g.schedule = checked_schedule(o, file, s, ds::diffusion_sampler::ddpm, g.steps);
    }
    if (o.has("--ddim-eta")) {
      g.ddim = true;
      g.eta = to_double("--ddim-eta", o.get("--ddim-eta"));
    }
    // --potentials, else the problem file's sampler.potentials, else the library's default (automatic).
    if (o.has("--potentials"))
      g.potentials = parse_flag("--potentials", o.get("--potentials"), ds::parse_guided_potentials);
    else if (file.sampler.potentials && ds::detail::guided_sampler_reads(g.sampler, "potentials"))
      g.potentials = ds::parse_guided_potentials(*file.sampler.potentials);
    g.start_correction = o.has("--start-correction");
    // --final-moves auto (or automatic, or -1) is the library's default: resolved inside the run.
    if (o.has("--final-moves")) {
      const std::string& moves = o.get("--final-moves");
      g.final_moves = moves == "auto" || moves == "automatic" ? -1 : to_int("--final-moves", moves, -1);
    }
    if (o.has("--final-move-step")) g.final_move_step = to_double("--final-move-step", o.get("--final-move-step"));
    g.multistep_kernel = o.has("--multistep-kernel");
    // Two SMC flags that the run never reads are refused rather than ignored: the potentials' spread where the
    // potentials run twisted, which do not use it, and the final moves' step where none run. Given explicitly, from
    // the settings as given (the library refuses the step with --final-moves 0 too, in its words)...
    if (o.has("--potential-scale") && g.potentials == ds::guided_potentials::twisted)
      throw usage_error("--potential-scale: the twisted potentials do not use the spread (linear and moment "
                        "potentials do)" +
                        std::string(o.has("--potentials") ? "" : "; twisted from " + file.path + ": sampler.potentials"));
    if (o.has("--final-move-step") && g.final_moves == 0)
      throw usage_error("--final-move-step: no final moves run (--final-moves 0)");
    check_settings(o, &file, table, [&] { (void)ds::guided_workspace_bytes(mixture, problems, g); });
    // ... and under the automatic choices, from the settings the run resolves (the library takes the flags there,
    // as a caller cannot foresee its choice; this run's is known here): the automatic potentials run twisted at
    // d_y <= 8 on a grid ending at t = 0, and --final-moves auto runs none with explicit potentials or where the
    // automatic ones resolve to linear (under mpirun too: the global distributed filter resolves them alike).
    if (g.sampler == ds::guided_sampler::smc && (o.has("--potential-scale") || o.has("--final-move-step"))) {
      const bool spread_run = distributed::launched();
      const ds::guided_options ran = ds::detail::resolved_guided_options(mixture, problems, g, spread_run);
      if (o.has("--potential-scale") && ran.potentials == ds::guided_potentials::twisted)
        throw usage_error("--potential-scale: the twisted potentials do not use the spread (linear and moment "
                          "potentials do); twisted from --potentials automatic (d_y <= 8 and the grid ends at t = 0; "
                          "--potentials linear or moment read the flag)");
      if (o.has("--final-move-step") && ran.final_moves == 0)
        throw usage_error(
            std::string("--final-move-step: no final moves run (--final-moves auto resolves to none: ") +
            (g.potentials != ds::guided_potentials::automatic
                 ? "it runs moves with the automatic potentials only"
                 : "the automatic potentials resolve to linear here (d_y > 8 or a grid that does not end at t = 0)") +
            ")");
    }
    check_memory(n, d, 6, count_flag(o), count_given(o));  // this machine's memory: under mpirun, possibly one process alone
  } catch (...) {
    refused = std::current_exception();
  }
  distributed::agree(refused);
  // Every process runs its share of one filter: the same settings and files on every process (after the checks, so
  // that a value one process refuses is reported by its own check).
  distributed::same_run_everywhere(o, file.files, distributed::per_process_flags);

  std::vector<float> x, ess(std::size_t(g.steps + 1));  // x: the samples, from the run
  double log_z = 0;
  std::int32_t resamplings = 0;
  std::vector<distributed::rank_stats> ranks;
  std::optional<ds::mixture_path> operator_path_ran;  // one process: the path its run took (guided_report)
  ds::guided_report ran;  // what the run did: on rank 0 under mpirun, its potentials (resolved alike on every rank)
  const auto t0 = std::chrono::steady_clock::now();
  // One problem runs as one library call that cannot be split (SMC resamples across all particles at every step), so
  // the progress line is indeterminate: the elapsed time, redrawn while the call runs.
  const bool spread = distributed::launched();
  ticker line(method + ": " + std::to_string(n) + " particles x " + std::to_string(g.steps) + " steps",
              quiet || spread);
  if (spread) {  // particles over the processes
    distributed::guided_run run;
    // A setting the distributed run refuses that guided_sample() and its query accept is named as the query's
    // refusals are, on every process alike (the library's MPI call agrees on its errors).
    try {
      run = distributed::solve_guided(mixture, problems, g, where, ranks);
    } catch (const ds::invalid_argument& e) {
      report_setting(o, &file, table, e.what());
    }
    x = std::move(run.samples);  // on rank 0 (empty elsewhere)
    ess = std::move(run.ess);
    log_z = run.log_z;
    resamplings = run.resamplings;
    ran = run.local;
  } else {
    exec_buffer<float> dx(where, n * d), dess(where, g.steps + 1);
    exec_buffer<double> dz(where, 1);
    exec_buffer<std::int32_t> dr(where, 1);
    ds::guided_outputs out;
    out.samples = dx.data();
    if (g.sampler == ds::guided_sampler::smc) {
      out.log_normaliser = dz.data();
      out.ess_trace = dess.data();
      out.resample_count = dr.data();
    }
    ran = ds::guided_sample(mixture, out, problems, g, {where});
    operator_path_ran = ran.operator_path;
    x = std::move(dx.to_host());
    if (g.sampler == ds::guided_sampler::smc) {
      ess = std::move(dess.to_host());
      log_z = dz.to_host()[0];
      resamplings = dr.to_host()[0];
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  line.finish();
  const double threshold_ran = ran.ess_threshold;  // smc: the ESS threshold the run took, -1 (automatic) resolved
  // Rank 0 holds the samples: it scores, prints and stages them while the others check their own standard output;
  // a failure on any process stops every process with its error before rank 0 commits the outputs (on_root).
  return distributed::on_root(spread, [&]() -> int {

    // The channel the samples are at: every diffusion grid ends at the schedule's t_end, where the samplers output
    // the last point's x, x_t = a x0 + s z (a = 1, s = 0 at t = 0 of every schedule); skrock's samples are x0.
    double t_end = NAN;
    ds::channel end;
    if (g.sampler != ds::guided_sampler::skrock) {
      const ds::schedule_point last =
          g.grid == ds::guided_grid::schedule ? g.schedule.points(g.steps).back() : g.schedule.at(g.schedule.t_end);
      t_end = last.t;
      end = {last.a, last.s};
    }
    const bool noised = !at_data(end);
    // Accuracy: sliced W1 (sliced_directions) against as many exact posterior samples, beside the floor of two
    // independent exact sets of that size; at a noised end, exact samples of the posterior noised to that channel,
    // a x0 + s z with x0 ~ p(x0 | y) (the law of x_t given y).
    const std::int64_t m = scored_samples(n);
    std::vector<float> ref(std::size_t(m * d)), ref2(std::size_t(m * d));
    post.sample(ref.data(), m, seed + 1000);
    post.sample(ref2.data(), m, seed + 2000);
    if (noised) {
      noise_to(ref, d, end, seed + 1001);
      noise_to(ref2, d, end, seed + 2001);
    }
    // SMC's log-normaliser estimates log of the integral of p_t(x) g_K(x) over x, g_K the last potential at the
    // grid's end (a, s): N(a y; A x, v I) with v = a^2 sigma_y^2 + s^2 c (the linear potentials', c the spread; only
    // they run on a grid whose end has s > 0). That is log p(y) at a = 1, s = 0 only; elsewhere its exact value is
    // the evidence of the prior noised to (a, s) (weights w_k, means a mu_k, variances a^2 v_k + s^2) for the
    // observation a y = A x + sqrt(v) z.
    double potential_variance = obs.sigma_y * obs.sigma_y;
    std::optional<double> normaliser_exact;
    if (g.sampler == ds::guided_sampler::smc) {
      if (!noised) {
        normaliser_exact = post.log_evidence();
      } else {
        double trace = 0;
        for (double a : obs.A) trace += a * a;
        const double spread =
            g.potential_spread > 0 ? g.potential_spread : ds::default_potential_scale * trace / double(obs.d_y);
        potential_variance = end.a * end.a * obs.sigma_y * obs.sigma_y + end.s * end.s * spread;
        try {
          ds::linear_observation last = obs;
          last.sigma_y = std::sqrt(potential_variance);
          for (double& v : last.y) v *= end.a;
          normaliser_exact = ds::mixture_posterior(noised_mixture(mixture, end), last).log_evidence();
        } catch (const ds::invalid_argument&) {
          // A channel whose noised prior the library refuses (variances beyond its range): no exact value.
        }
      }
    }
    const sliced_score score = score_sliced(x, ref, ref2, m, d, seed);
    const std::int64_t non_finite = score.non_finite;
    const std::int64_t diverged_at = non_finite > 0 ? divergence_step(mixture, problems, g, where) : 0;
    const double sw = score.w1, floor = score.floor;
    float ess_min = 0;
    if (g.sampler == ds::guided_sampler::smc) ess_min = *std::min_element(ess.begin(), ess.end());

    if (!quiet) {
      std::printf("diffsample solve: %s on a %lld-D %s under y = A x + %g z (d_y = %lld, %s A)\n", method.c_str(),
                  static_cast<long long>(d), file.prior->description.c_str(), obs.sigma_y,
                  static_cast<long long>(obs.d_y), operator_kind(file));
      std::printf("executor: %s\n", executor_text(where).c_str());
      std::printf("particles x steps: %lld x %lld in %.3f s (%.4g particle-steps/s)\n", static_cast<long long>(n),
                  static_cast<long long>(g.steps), seconds, seconds > 0 ? double(n) * g.steps / seconds : 0.0);
      if (g.sampler == ds::guided_sampler::smc) {
        std::printf("potentials: %s\n", potentials_text(g.potentials, ran).c_str());
        std::printf("final moves: %s\n", final_moves_text(g.final_moves, ran).c_str());
        if (!noised) {
          std::printf("log p(y): SMC estimate %.5f, exact %.5f\n", log_z, post.log_evidence());
        } else {
          char exact[64] = "not computed";
          if (normaliser_exact) std::snprintf(exact, sizeof exact, "%.5f", *normaliser_exact);
          std::printf("log normaliser: SMC estimate %.5f, exact %s (the last potential's: log E[N(a y; A x_t, v I)] "
                      "over the prior's x_t at the grid's end %s, v = %.4g)\n",
                      log_z, exact, channel_text(t_end, end).c_str(), potential_variance);
          std::printf("log p(y): exact %.5f (not estimated: only a grid ending at a = 1, s = 0 estimates it)\n",
                      post.log_evidence());
        }
        std::printf("ESS: minimum %.1f of %lld; resamplings: %d (threshold %g N)\n", ess_min, static_cast<long long>(n),
                    resamplings, threshold_ran);
      }
      for (std::size_t k = 0; k < ranks.size(); ++k)
        std::printf("rank %zu: %lld particles, %.4g particle-steps/s, %.3f s in the filter of which %.3f s in MPI "
                    "(%.0f bytes sent), %.3f s gathering on rank 0\n",
                    k, static_cast<long long>(ranks[k].chains),
                    ranks[k].seconds > 0 ? double(ranks[k].chains) * double(g.steps) / ranks[k].seconds : 0.0,
                    ranks[k].seconds, ranks[k].comm_seconds, ranks[k].bytes_sent, ranks[k].gather_seconds);
      if (non_finite > 0 && diverged_at > 0)
        std::printf("%s diverged at step %lld of %lld: %lld non-finite values in the samples (its guidance is unstable for this sigma_y; smc is not)\n",
                    method.c_str(), static_cast<long long>(diverged_at), static_cast<long long>(g.steps),
                    static_cast<long long>(non_finite));
      else if (non_finite > 0)
        std::printf("%s diverged: %lld non-finite values in the samples (its guidance is unstable for this sigma_y; smc "
                    "is not; its first steps are no run of their own, so no step is named)\n",
                    method.c_str(), static_cast<long long>(non_finite));
      else
        std::printf(
            "sliced W1 to exact %s samples: %.4f (exact-vs-exact floor %.4f; %lld samples, %d directions)\n",
            noised ? ("posterior noised to " + channel_text(t_end, end)).c_str() : "posterior", sw, floor,
            static_cast<long long>(m), sliced_directions);
    }
    check_stdout();
    if (o.has("--out")) stage_npy(outputs, "--out", x.data(), n, d);
    if (o.has("--plot"))
      stage_text(outputs, "--plot",
                 svg_plot(method + ": " + std::to_string(n) + " particles over exact posterior samples" +
                              (noised ? " noised to " + channel_text(t_end, end) : std::string()),
                          ref.data(), m, x.data(), n, d, marginals(post, end), (method + " samples").c_str(),
                          noised ? "exact noised posterior samples" : "exact posterior samples"));
    if (o.has("--ess-plot"))
      stage_text(outputs, "--ess-plot",
                   svg_ess_plot(method + ": effective sample size of " + std::to_string(n) + " particles, " +
                                    std::to_string(resamplings) + " resamplings in " + std::to_string(g.steps) + " steps",
                                ess, problems.problems, g.steps, n, threshold_ran));
    if (o.has("--report")) {
      json j = report_head("solve", {{"method", method}});
      j["executor"] = ds::to_string(where);
      j["prior"] = prior_json(*file.prior, file.path);
      j["observation"] = {{"d_y", obs.d_y}, {"sigma_y", obs.sigma_y}, {"operator", operator_kind(file)}};
      j["seed"] = seed;
      j["particles"] = n;
      j["steps"] = g.steps;
      if (g.sampler != ds::guided_sampler::skrock) {  // the diffusion grid's schedule (skrock has none)
        j["schedule"] = ds::to_string(g.schedule.kind);
        j["time_grid"] = g.grid == ds::guided_grid::schedule ? ds::to_string(g.schedule.grid) : ds::to_string(g.grid);
        j["t_start"] = g.schedule.t_start;
        j["t_end"] = g.schedule.t_end;
      }
      j["seconds"] = seconds;
      j["particle_steps_per_second"] = seconds > 0 ? double(n) * g.steps / seconds : 0.0;
      if (!ranks.empty()) {
        json per = json::array();
        for (const distributed::rank_stats& k : ranks)
          per.push_back({{"particles", k.chains}, {"seconds", k.seconds}, {"mpi_seconds", k.comm_seconds},
                         {"bytes_sent", k.bytes_sent}, {"gather_seconds", k.gather_seconds}});
        j["ranks"] = per;
      }
      // The sampler's own settings, each under its guided_options name.
  #define DS_ECHO(f) j[#f] = g.f;
      if (g.sampler == ds::guided_sampler::dps || g.sampler == ds::guided_sampler::pigdm ||
          g.sampler == ds::guided_sampler::tmpd) {
        j["operator_path"] = ds::to_string(g.operator_path);
        if (operator_path_ran) j["operator_path_ran"] = ds::to_string(*operator_path_ran);
      }
      if (g.sampler == ds::guided_sampler::dps) {
        j["dps_step"] = ds::to_string(g.dps_step);
        DS_ECHO(guidance_scale)
      } else if (g.sampler == ds::guided_sampler::pigdm || g.sampler == ds::guided_sampler::tmpd) {
        DS_ECHO(guidance_scale)
      } else if (g.sampler == ds::guided_sampler::diffpir) {
        DS_ECHO(diffpir_zeta) DS_ECHO(diffpir_lambda)
      } else if (g.sampler == ds::guided_sampler::skrock) {
        DS_ECHO(skrock_stages) DS_ECHO(skrock_eta) DS_ECHO(skrock_step_fraction)
      } else if (g.sampler == ds::guided_sampler::ddrm) {
        DS_ECHO(ddrm_eta) DS_ECHO(ddrm_eta_b)
      } else if (g.sampler == ds::guided_sampler::dcps) {
        DS_ECHO(dcps_blocks) DS_ECHO(dcps_langevin_steps) DS_ECHO(dcps_langevin_step) DS_ECHO(dcps_bridge_variance)
        DS_ECHO(dcps_gradient_steps) DS_ECHO(dcps_learning_rate) DS_ECHO(dcps_absolute_step)
      } else if (g.sampler == ds::guided_sampler::smc) {
        // As given (automatic is resolved inside the run), and what ran.
        j["potentials"] = ds::to_string(g.potentials);
        j["start_correction"] = g.start_correction;
        j["multistep_kernel"] = g.multistep_kernel;
        j["potentials_ran"] = ds::to_string(ran.potentials);
        j["start_correction_ran"] = ran.start_correction;
        j["multistep_kernel_ran"] = ran.multistep_kernel;
        j["final_moves"] = g.final_moves < 0 ? json("automatic") : json(g.final_moves);
        j["final_moves_ran"] = ran.final_moves;
        j["ess_threshold"] = g.resampling.ess_threshold < 0 ? json("automatic") : json(g.resampling.ess_threshold);
        j["ess_threshold_ran"] = threshold_ran;
      }
  #undef DS_ECHO
      j["non_finite_values"] = non_finite;
      j["diverged_at_step"] = diverged_at > 0 ? json(diverged_at) : json(nullptr);
      j["sliced_w1"] = {{"value", non_finite == 0 ? json(sw) : json(nullptr)},
                        {"floor", floor},
                        {"samples", m},
                        {"directions", sliced_directions}};
      // What the samples were scored against: the posterior, or at a noised end the posterior noised to it.
      j["reference"] = {{"of", noised ? "noised_posterior" : "posterior"},
                        {"t", std::isnan(t_end) ? json(nullptr) : json(t_end)},
                        {"a", end.a},
                        {"s", end.s}};
      j["log_evidence_exact"] = post.log_evidence();
      if (g.sampler == ds::guided_sampler::smc) {
        // An estimate of log p(y) only where the grid ends at a = 1, s = 0; log_normaliser says what it estimates.
        j["log_evidence_estimate"] = !noised && std::isfinite(log_z) ? json(log_z) : json(nullptr);
        json ln = {{"of", noised ? "last_potential" : "log_evidence"},
                   {"estimate", std::isfinite(log_z) ? json(log_z) : json(nullptr)},
                   {"exact", normaliser_exact ? json(*normaliser_exact) : json(nullptr)}};
        if (noised) ln["potential_variance"] = potential_variance;
        j["log_normaliser"] = ln;
        j["ess_trace"] = ess;
        j["resamplings"] = resamplings;
      }
      stage_report(outputs, o, j);
    }
    return 0;
  }, [&] { outputs.commit(); });
}

/// A `solve` run as its arguments give it: the options, the problem file, the sampler and the settings read before
/// the prior is built, and the outputs checked.
struct solve_plan {
  options o;
  problem file;
  std::string method;
  ds::executor where = ds::executor::cpu;
  std::int64_t n = 0;
  std::uint64_t seed = 1;
  output_set outputs;
};

/// Reads the plan of `solve` from its arguments argv[first..argc). Nothing collective: under mpirun,
/// distributed::check_arguments() agrees on its failure.
void read_solve(solve_plan& p, int argc, char** argv, int first) {
  options& o = p.o;
  o = parse_options(argc, argv, first, solve_usage,
                                  {"--problem", "--samples", "--particles", "--steps", "--sampler", "--executor", "--seed",
                                   "--out", "--report", "--plot", "--ess-plot", "--potential-scale", "--resampling",
                                   "--ess-threshold", "--time-grid", "--ddim-eta", "--potentials", "--dps-step",
                                   "--guidance-scale", "--operator-path", "--diffpir-zeta", "--diffpir-lambda", "--skrock-stages",
                                   "--skrock-eta", "--skrock-step-fraction", "--ddrm-eta", "--ddrm-eta-b",
                                   "--dcps-blocks", "--dcps-langevin-steps", "--dcps-langevin-step",
                                   "--dcps-bridge-variance", "--dcps-gradient-steps", "--dcps-learning-rate",
                                   "--dcps-absolute-step", "--final-moves", "--final-move-step", "--schedule",
                                   "--t-start", "--t-end"},
                                  {"--quiet", "--start-correction", "--multistep-kernel"});
  if (!o.has("--problem")) throw usage_error("solve: --problem FILE.json is required (see diffsample solve --help)");
  if (o.has("--samples") && o.has("--particles"))
    throw usage_error("solve: --samples and --particles are the same setting; give one");
  const std::string& method = p.method = o.has("--sampler") ? o.get("--sampler") : "smc";
  if (method != "exact" && method != "smc" && method != "dps" && method != "pigdm" && method != "diffpir" &&
      method != "skrock" && method != "tmpd" && method != "ddrm" &&
      method != "dcps")
    throw usage_error("--sampler: unknown posterior sampler '" + method +
                      "' (expected smc, dps, pigdm, diffpir, skrock, tmpd, ddrm, dcps or exact)");
  for (const posterior_flag& f : posterior_flags)
    if (o.has(f.flag) && !sampler_reads(method, f.field))
      throw usage_error(std::string(f.flag) + ": applies to --sampler " + samplers_reading(f.field) + ", not " + method);
  if (method == "exact" && distributed::launched())
    throw usage_error(
        "solve: --sampler exact runs as one process (under mpirun the guided samplers spread their particles over the "
        "processes)");
  if (method == "exact" && o.has("--steps"))
    throw usage_error("solve: --steps applies to the guided samplers, not to --sampler exact");
  if (method != "smc" && o.has("--ess-plot"))
    throw usage_error("--ess-plot: only --sampler smc has an effective sample size, not " + method);
  for (const char* f :
       {"--potential-scale", "--resampling", "--ess-threshold", "--potentials", "--start-correction",
        "--final-moves", "--final-move-step", "--multistep-kernel"})
    if (method != "smc" && o.has(f)) throw usage_error(std::string(f) + ": an SMC setting, not one of " + method);
  for (const char* f : {"--time-grid", "--schedule", "--t-start", "--t-end"})
    if ((method == "skrock" || method == "exact") && o.has(f))
      throw usage_error(std::string(f) + ": " + method + " has no diffusion grid");
  const problem& file = p.file = read_problem(o.get("--problem"));
  if (!file.prior) throw input_error(file.path + ": prior: missing (solve needs a prior and an observation)");
  if (!file.observation) throw input_error(file.path + ": observation: missing (solve needs A, sigma_y and y)");
  if (o.has("--steps")) to_steps(o.get("--steps"), 1);
  const ds::executor where = p.where =
      resolve(o.has("--executor") ? parse_flag("--executor", o.get("--executor"), ds::parse_executor)
                                  : ds::parse_executor(file.sampler.executor.value_or("auto")),
              executor_source(o, file));
  const char* count = count_flag(o);
  const std::int64_t n = p.n = o.has(count) ? to_int(count, o.get(count), 1)
                         : method == "exact"                     ? 16384
                         : where == ds::executor::cuda           ? 65536
                                                                 : 4096;
  p.seed = o.has("--seed") ? to_seed(o.get("--seed")) : file.sampler.seed.value_or(1);
  check_outputs(p.outputs, o, {"--out", "--report", "--plot", "--ess-plot"}, &file);
  check_memory(n, file.prior->dim, 3, count_flag(o), count_given(o));
}

}  // namespace

int run_solve(int argc, char** argv, int first) {
  // Under mpirun, before anything starts CUDA or MPI: a process on the CPU executor hides the GPUs from itself, any
  // other selects its own GPU (a grid prior in the problem file is a gaussian_mixture, whose tables go to the
  // current device).
  distributed::choose_device(requested_executor(argc, argv, first));
  // The arguments and the problem file, read by every process and agreed on under mpirun (a bad argument stops every
  // process alike, exit status 2), before anything collective.
  solve_plan plan;
  distributed::check_arguments([&] { read_solve(plan, argc, argv, first); });
  // Every process (collective): a default particle count, which depends on the executor, is the processes' smallest.
  const std::int64_t fewest = distributed::smallest_everywhere(plan.n);
  if (!count_given(plan.o)) plan.n = fewest;
  const options& o = plan.o;
  const bool quiet = o.has("--quiet");
  const problem& file = plan.file;
  const std::string& method = plan.method;
  const ds::executor where = plan.where;
  const std::int64_t n = plan.n;
  const std::uint64_t seed = plan.seed;
  output_set& outputs = plan.outputs;
  const prior_spec& prior = *file.prior;
  const ds::linear_observation& obs = *file.observation;
  const std::int64_t d = prior.dim;

  // Under mpirun each rank selects its GPU (its rank on the node mod the node's devices) before the mixture's and the
  // posterior's tables reach the current device (already selected by distributed::choose_device() above, which this
  // checks against MPI's node split).
  if (distributed::launched()) distributed::select_device(where);
  // The prior's and the posterior's tables on the device can fail on one rank alone: every rank stops with its error.
  std::optional<ds::gaussian_mixture> built;
  std::optional<ds::mixture_posterior> built_post;
  std::exception_ptr failed;
  try {
    built.emplace(d, prior.weights, prior.means, prior.variances);
    built_post.emplace(*built, obs);
  } catch (...) {
    failed = std::current_exception();
  }
  distributed::agree(failed);
  const ds::gaussian_mixture& mixture = *built;
  const ds::mixture_posterior& post = *built_post;
  if (method != "exact") return run_guided(o, file, mixture, post, method, where, n, seed, quiet, outputs);
  exec_buffer<float> samples(where, n * d);
  if (where == ds::executor::cuda)
    post.sample(samples.data(), n, seed, nullptr, 0, ds::execution{where});
  else
    post.sample(samples.data(), n, seed);  // the host call, as before the executor form existed
  const std::vector<float>& x = samples.to_host();
  const std::vector<double> mean = post.mean();

  std::vector<std::int64_t> order(post.components());
  for (std::int64_t k = 0; k < post.components(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return post.weights()[a] > post.weights()[b]; });
  const std::int64_t top = std::min<std::int64_t>(post.components(), 5);
  if (!quiet) {
    std::printf("diffsample solve: exact posterior of a %lld-D, %s under y = A x + %g z (d_y = %lld, %s A)\n",
                static_cast<long long>(d), prior.description.c_str(), obs.sigma_y, static_cast<long long>(obs.d_y),
                operator_kind(file));
    std::printf("log evidence log p(y): %.6f\n", post.log_evidence());
    std::printf("largest posterior weights:");
    for (std::int64_t i = 0; i < top; ++i)
      std::printf(" w[%lld] = %.4g%s", static_cast<long long>(order[i]), post.weights()[order[i]],
                  i + 1 < top ? "," : "");
    std::printf("\nposterior mean:");
    for (std::int64_t j = 0; j < std::min<std::int64_t>(d, 6); ++j) std::printf(" %.4f", mean[j]);
    std::printf("%s\n", d > 6 ? " ..." : "");
    std::printf("exact posterior samples: %lld (seed %llu, %s executor)%s\n", static_cast<long long>(n),
                static_cast<unsigned long long>(seed), ds::to_string(where),
                o.has("--out") ? (" -> " + o.get("--out")).c_str() : "");
    std::printf("(the exact reference itself: --sampler smc, dps, pigdm, diffpir, skrock, tmpd, ddrm or dcps runs a posterior sampler)\n");
  }
  check_stdout();
  if (o.has("--out")) stage_npy(outputs, "--out", x.data(), n, d);
  if (o.has("--plot"))
    stage_text(outputs, "--plot", svg_plot("exact posterior (reference): " + std::to_string(n) + " samples", nullptr, 0,
                                           x.data(), n, d, marginals(post), "exact posterior samples", ""));
  if (o.has("--report")) {
    json j = report_head("solve", {{"method", "exact"},
                                   {"note", "exact posterior reference (mixture_posterior); no posterior sampler ran"}});
    j["prior"] = prior_json(prior, file.path);
    j["observation"] = {{"d_y", obs.d_y}, {"sigma_y", obs.sigma_y}, {"operator", operator_kind(file)}};
    j["seed"] = seed;
    j["samples"] = n;
    j["executor"] = ds::to_string(where);
    j["log_evidence"] = post.log_evidence();
    j["posterior_weights"] = post.weights();
    j["posterior_mean"] = mean;
    stage_report(outputs, o, j);
  }
  outputs.commit();
  return 0;
}

}  // namespace diffsample::cli
