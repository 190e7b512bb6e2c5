// Langevin launchers: validation, then one fused launch running every step of every chain (register path for a
// short compile-time list of dimensions, workspace path otherwise).
#include <limits>

#include "kernels/langevin.cuh"
#include "src/chain_checks.hpp"
#include "src/chain_launch.hpp"
#include "src/cpu/chains.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/mixture_storage.hpp"
#include "src/plan_program.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/error.hpp>
#include <diffsample/langevin.hpp>

namespace diffsample {

namespace {

using kernels::is_register_dim;

// Per-call table of the mixture's constants at the target channel (kernels::mixture_channels), 256-byte aligned so
// that the state workspace behind it stays aligned.
std::size_t table_bytes(const gaussian_mixture& mixture) {
  const std::int64_t floats = kernels::mixture_channels::table_floats(mixture.storage().view(executor::cpu), 1);
  return (static_cast<std::size_t>(floats) * sizeof(float) + 255) / 256 * 256;
}

static_assert(limits::max_stream_steps == std::int64_t(kernels::philox_max_step), "one limit of the random streams");

void validate_options(const langevin_options& o) {
  detail::check_positive("options.step_size", o.step_size);
  DIFFSAMPLE_EXPECTS(o.step_size >= double(std::numeric_limits<float>::min()) && o.step_size <= max_abs_value,
                     "options.step_size: " << o.step_size << " is outside [" << std::numeric_limits<float>::min()
                                           << ", " << max_abs_value
                                           << "] (the FP32 chains need gamma and 1 / (4 gamma) as normal floats)");
  DIFFSAMPLE_EXPECTS(o.steps >= 0, "options.steps: must be >= 0, got " << o.steps);
  DIFFSAMPLE_EXPECTS(o.method == langevin_method::ula || o.method == langevin_method::mala ||
                         o.method == langevin_method::tamed_ula,
                     "options.method: invalid value " << static_cast<int>(o.method));
  detail::check_channel("options.target", o.target);
  DIFFSAMPLE_EXPECTS(o.record_every >= 0, "options.record_every: must be >= 0, got " << o.record_every);
  // Past the steps no record falls due: the trajectory was taken and never written.
  DIFFSAMPLE_EXPECTS(o.record_every == 0 || o.record_every <= o.steps,
                     "options.record_every: " << o.record_every << " is more than options.steps = " << o.steps
                                              << " (nothing would be recorded)");
  // Compared without forming first_step + steps, which can wrap around 2^64 back into range.
  DIFFSAMPLE_EXPECTS(o.first_step <= kernels::philox_max_step &&
                         static_cast<std::uint64_t>(o.steps) <= kernels::philox_max_step - o.first_step,
                     "options.first_step: first_step + steps = "
                         << o.first_step << " + " << o.steps << ", the limit is "
                         << limits::spell(kernels::philox_max_step) << " (the random stream's steps)");
  limits::check("options.first_chain", o.first_chain, 0, limits::max_first_chain);
}

void validate(const gaussian_mixture& mixture, std::int64_t n, const langevin_options& o) {
  detail::check_count("n", n, mixture.dim());
  validate_options(o);
  detail::check_mixture_channel(mixture.storage(), "options.target", o.target);
}

// Whether the chains run on the register path: a listed dimension, and on CUDA a mixture whose parameters and target
// channel fit in the shared memory the chain kernel stages them in (kernels/chain_launch.cuh); else the workspace
// path. The workspace size asks for the state whenever CUDA would need it.
bool register_path(const gaussian_mixture& mixture, executor where) {
  return is_register_dim(mixture.dim()) &&
         (where == executor::cpu ||
          kernels::chain_staging_fits<kernels::langevin_chain_body>(mixture.storage().view(executor::cpu)));
}

}  // namespace

std::size_t langevin_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n, const langevin_options& options) {
  validate(mixture, n, options);
  const std::size_t state = register_path(mixture, executor::cuda) ? 0 : detail::chain_state_bytes(n, mixture.dim());
  return table_bytes(mixture) + state;
}

namespace {

// The checks of langevin() but its workspace's (detail::check_langevin_arguments): the executor the call runs on.
executor check_arguments(const gaussian_mixture& mixture, const float* x, const langevin_outputs& outputs,
                         std::int64_t n, const langevin_options& o, execution exec) {
  validate(mixture, n, o);
  const std::int64_t d = mixture.dim();
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  const std::int64_t records = o.record_every > 0 ? o.steps / o.record_every : 0;
  // record_every asks for a recording: without a buffer it would go nowhere (as the C API refuses it). n = 0 records
  // nothing either way (an MPI rank without rows may hold no buffer).
  DIFFSAMPLE_EXPECTS(outputs.trajectory != nullptr || o.record_every == 0 || n == 0,
                     "outputs.trajectory: null, but options.record_every is "
                         << o.record_every << " (nothing would be recorded; give a buffer of (steps / record_every)"
                         << " x n x d floats, or set record_every to 0)");
  if (outputs.trajectory != nullptr) {
    DIFFSAMPLE_EXPECTS(o.record_every > 0, "outputs.trajectory: given but options.record_every is 0");
    // records x (n d) checked before it is formed: records x n could wrap around 2^64 into range.
    if (n > 0) detail::check_count("outputs.trajectory: records", records, n * d);
    detail::check_buffer("outputs.trajectory", outputs.trajectory, records * n * d, sizeof(float), where);
  }
  if (outputs.accepted != nullptr)
    detail::check_buffer("outputs.accepted", outputs.accepted, n, sizeof(std::int64_t), where);
  // x is read and written in place; the trajectory and the counts are written while other chains still read x, so
  // no two of them may share memory (langevin() adds its workspace).
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, x_bytes},
                          {"outputs.trajectory", outputs.trajectory, outputs.trajectory ? x_bytes * records : 0},
                          {"outputs.accepted", outputs.accepted, static_cast<std::size_t>(n) * sizeof(std::int64_t)}});
  return where;
}

}  // namespace

executor detail::check_langevin_arguments(const gaussian_mixture& mixture, const float* x,
                                          const langevin_outputs& outputs, std::int64_t n,
                                          const langevin_options& options, execution exec) {
  return check_arguments(mixture, x, outputs, n, options, exec);
}

langevin_report langevin(const gaussian_mixture& mixture, float* x, langevin_outputs outputs, std::int64_t n,
                         const langevin_options& o, execution exec, void* workspace, std::size_t workspace_bytes) {
  const executor where = check_arguments(mixture, x, outputs, n, o, exec);
  const std::int64_t d = mixture.dim();
  const std::int64_t records = o.record_every > 0 ? o.steps / o.record_every : 0;
  langevin_report report{where, register_path(mixture, where)};
  if (n == 0) return report;
  const std::size_t need = langevin_workspace_bytes(mixture, n, o);
  detail::check_workspace_bytes(need, workspace, workspace_bytes);
  // x is read and written in place; the trajectory, the counts and the workspace are written while other chains
  // still read x, so no two of them may share memory.
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, x_bytes},
                          {"outputs.trajectory", outputs.trajectory, outputs.trajectory ? x_bytes * records : 0},
                          {"outputs.accepted", outputs.accepted, static_cast<std::size_t>(n) * sizeof(std::int64_t)},
                          {"workspace", workspace, need}});
  std::unique_ptr<detail::scratch> owned;
  unsigned char* ws = detail::workspace_or_scratch(need, workspace, workspace_bytes, 16, where, exec.stream, owned);
  // The constants of the target channel, computed once per call on the executor that runs the chains.
  const kernels::mixture_view<float> view = mixture.storage().view(where);
  const kernels::mixture_channels channels = kernels::mixture_channels::in(view, 1, reinterpret_cast<float*>(ws));
  kernels::for_each_index(where, view.components,
                          kernels::channel_table_functor<kernels::langevin_channel>{
                              channels, {float(o.target.a), float(o.target.s)}},
                          exec.stream);
  kernels::langevin_params p{channels,
                             float(o.target.a),
                             float(o.target.s),
                             float(o.step_size),
                             static_cast<int>(o.method),
                             o.steps,
                             o.seed,
                             o.first_chain,
                             o.first_step,
                             n,
                             o.record_every > 0 ? o.record_every : 1,
                             outputs.trajectory,
                             outputs.accepted};
  float* state = reinterpret_cast<float*>(ws + table_bytes(mixture));
  kernels::run_chains<kernels::langevin_chain_body>(where, n, d, p, x, state, report.register_path, exec.stream,
                                                    &cpu::run_langevin);
  return report;
}

// --- ask/tell program ---------------------------------------------------------------------------------------------

namespace detail {

plan_program langevin_program(std::int64_t n, std::int64_t d, const langevin_options& o, model_output output) {
  check_program(n, d, o, validate_options);
  DIFFSAMPLE_EXPECTS(output == model_output::score || output == model_output::denoiser || output == model_output::eps,
                     "output: a Langevin plan takes score, denoiser or eps, got " << to_string(output));
  // The channel as the fused chain evaluates it (FP32).
  const float a = float(o.target.a), s = float(o.target.s);
  DIFFSAMPLE_EXPECTS(output == model_output::score || s > 0,
                     "output: " << (output == model_output::eps ? "an " : "a ") << to_string(output)
                                 << " model needs options.target.s > 0 to give the score");
  // The score from the output r at x: score = (a m - x) / s^2 = -eps / s.
  double ux = 0, um = 1;
  if (output == model_output::denoiser) {
    ux = -1.0 / (double(s) * s);
    um = double(a) / (double(s) * s);
  } else if (output == model_output::eps) {
    um = -1.0 / s;
  }
  plan_program pr;
  pr.output = output;
  pr.seed = o.seed;
  pr.first_chain = o.first_chain;
  const float gamma = float(o.step_size);
  // MALA: ask 0 at x, ask k = 1 .. steps at step k - 1's proposal P; each tell but the last draws the next proposal
  // (Philox step first_step + k, as the fused chain's step k), whose acceptance the next tell decides. ULA and tamed
  // ULA: one ask per step.
  const bool mala = o.method == langevin_method::mala;
  if (mala) pr.mala = pr.uses_point = pr.uses_m = true;
  const std::int64_t asks = mala ? (o.steps > 0 ? o.steps + 1 : 0) : o.steps;
  for (std::int64_t k = 0; k < asks; ++k) {
    kernels::plan_entry e{};
    if (mala) {
      e.op = k == 0 ? kernels::plan_op_mala_start : kernels::plan_op_mala_accept;
      e.at_point = k == 0 ? 0 : 1;
      e.next_point = k < o.steps ? 1 : 0;
    } else {
      e.op = o.method == langevin_method::tamed_ula ? kernels::plan_op_tamed : kernels::plan_op_ula;
    }
    e.ux = float(ux);
    e.um = float(um);
    e.gamma = gamma;
    e.noise = kernels::ds_sqrt(2.f * gamma);  // as langevin_chain
    e.rng_step = o.first_step + static_cast<std::uint64_t>(k);
    pr.entries.push_back(e);
    pr.channels.push_back({double(a), double(s)});
    pr.times.push_back(0.0);
  }
  return pr;
}

}  // namespace detail

}  // namespace diffsample
