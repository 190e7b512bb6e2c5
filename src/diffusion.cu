// Reverse-diffusion launchers: the schedule and the sampler folded into a per-step coefficient table on the host
// (FP64, the formulas in the README), then one fused launch running every step of every chain (register path
// for a short compile-time list of dimensions, workspace path otherwise).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/backward.cuh"
#include "kernels/diffusion.cuh"
#include "kernels/plan.cuh"
#include "src/chain_checks.hpp"
#include "src/chain_launch.hpp"
#include "src/cpu/chains.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/mixture_storage.hpp"
#include "src/plan_program.hpp"
#include "src/option_readers.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/diffusion.hpp>
#include <diffsample/error.hpp>

namespace diffsample {

namespace {

using kernels::diffusion_step;

bool uses_schedule(diffusion_sampler s) {
  return s != diffusion_sampler::walk_jump && s != diffusion_sampler::sequential_measurements;
}

diffusion_step plain_step(double a, double s) {
  diffusion_step st{};
  st.a = float(a);
  st.s = float(s);
  st.ex = 1.f;
  st.cx = 1.f;
  return st;
}

/// Largest Heun corrector coefficient (|hx2|, |hm2|) of a step: above it the step falls back to Euler (2^14, so the
/// corrector's FP32 rounding stays below 2^-10 of |x|).
constexpr double heun_amplification_limit = 16384.0;

// The table of one run: total steps entries, plus a final-denoise entry. Everything is derived in FP64 here.
struct table {
  std::vector<diffusion_step> steps;
  bool final_denoise = false;
  float initial_scale = 1.f;
};

table build_schedule_table(const diffusion_options& o) {
  const std::vector<schedule_point> pts = o.schedule.points(o.steps);
  const bool is_sl = o.sampler == diffusion_sampler::stochastic_localization;
  DIFFSAMPLE_EXPECTS(!is_sl || o.schedule.kind == schedule_kind::stochastic_localization,
                     "options.schedule: the stochastic_localization sampler needs the stochastic_localization "
                     "schedule, got " << to_string(o.schedule.kind));
  table tb;
  tb.initial_scale = float(pts.front().s);
  tb.final_denoise = o.final_denoise || is_sl;
  for (std::int64_t k = 0; k < o.steps; ++k) {
    const schedule_point& p = pts[k];
    const schedule_point& q = pts[k + 1];
    const double dt = q.t - p.t;
    // Every update below divides by the noise scale of the point where the denoiser is evaluated.
    DIFFSAMPLE_EXPECTS(p.s > 0, "options.schedule: s = 0 at t = " << p.t << " (step " << k << "), where the "
                                                                   << to_string(o.sampler) << " update divides by s");
    diffusion_step st = plain_step(p.a, p.s);
    const double s2 = p.s * p.s;
    switch (o.sampler) {
      case diffusion_sampler::ddpm:
      case diffusion_sampler::ddim: {
        DIFFSAMPLE_EXPECTS(q.a > 0, "options.schedule: a = 0 at t = " << q.t << " (step " << k + 1 << "), where the "
                                                                      << to_string(o.sampler) << " update divides by a");
        // From t (p) to t' (q): kernels/backward.cuh, shared with the guided samplers.
        const kernels::backward_coefficients bk =
            kernels::ddpm_ddim_kernel(p.a, p.s, q.a, q.s, o.sampler == diffusion_sampler::ddim, o.eta);
        st.cx = float(bk.cx);
        st.cm = float(bk.cm);
        st.cn = float(bk.sigma);
        break;
      }
      case diffusion_sampler::reverse_sde:
      case diffusion_sampler::stochastic_localization: {
        DIFFSAMPLE_EXPECTS(p.a > 0, "options.schedule: a = 0 at t = " << p.t << " (step " << k << "), where the "
                                                                      << "reverse SDE's drift divides by a");
        // Forward SDE dx = f x dt + g dW with f = a'/a, g^2 = d(s^2)/dt - 2 f s^2. Step dt (signed) with the
        // reverse drift f x - g^2 score, score = (a m - x) / s^2, and noise variance -g^2 dt. On OU (f = -1,
        // g^2 = 2, dt = -h) this is y + h (y + 2 score) + sqrt(2 h) xi; on stochastic localization (f = 1/t,
        // g^2 = -1, dt = delta) the drift is delta (x / t + score) = delta m: Z + delta m + sqrt(delta) xi.
        const double f = p.da_dt / p.a;
        if (s2 < std::numeric_limits<double>::min()) {
          // s below 1.5e-154: s^2 is subnormal or 0 (NaN samples from g2 / s2); g^2 / s^2 = 2 s' / s - 2 f instead,
          // as kernels::ddpm_ddim_kernel does there (the other channels keep the form below and its bits).
          const double g2_s2 = 2 * p.ds_dt / p.s - 2 * f;
          st.cx = float(1 + dt * f + dt * g2_s2);
          st.cm = float(-dt * g2_s2 * p.a);
          st.cn = float(p.s * std::sqrt(std::max(0.0, -g2_s2 * dt)));
          break;
        }
        const double g2 = 2 * p.s * p.ds_dt - 2 * f * s2;
        st.cx = float(1 + dt * f + dt * g2 / s2);
        st.cm = float(-dt * g2 * p.a / s2);
        st.cn = float(std::sqrt(std::max(0.0, -g2 * dt)));
        break;
      }
      case diffusion_sampler::ode_euler:
      case diffusion_sampler::ode_heun: {
        // Velocity b(x, t) = (s'/s) x + (a' - s' a / s) m.
        const double fx = p.ds_dt / p.s, fm = p.da_dt - p.ds_dt * p.a / p.s;
        st.cx = float(1 + dt * fx);
        st.cm = float(dt * fm);
        if (o.sampler == diffusion_sampler::ode_heun && q.s > 0) {
          const double fx2 = q.ds_dt / q.s, fm2 = q.da_dt - q.ds_dt * q.a / q.s;
          const double hx2 = 0.5 * dt * fx2, hm2 = 0.5 * dt * fm2;
          // The corrector adds hx2 xe + hm2 m(xe), two terms that cancel to the bounded velocity at the next
          // channel: in FP32 it carries a rounding error of about 2^-24 max(|hx2|, |hm2|) |x|. Near s = 0 (a grid
          // that ends just above t = 0) the coefficients grow as dt s' / s (1 / s^2 on VP), so the step is taken
          // by Euler, as at s = 0, once that error could exceed 2^-10 |x|.
          if (std::max(std::abs(hx2), std::abs(hm2)) <= heun_amplification_limit) {
            st.flags |= kernels::step_heun;
            st.a2 = float(q.a);
            st.s2 = float(q.s);
            st.hx1 = float(0.5 * dt * fx);
            st.hm1 = float(0.5 * dt * fm);
            st.hx2 = float(hx2);
            st.hm2 = float(hm2);
          }
        }
        break;
      }
      default: break;
    }
    tb.steps.push_back(st);
  }
  const schedule_point& last = pts.back();
  tb.steps.push_back(plain_step(last.a, last.s));
  return tb;
}

table build_langevin_table(const diffusion_options& o) {
  const double sigma = o.sigma, gamma = o.step_size, s2 = sigma * sigma;
  const std::int64_t M = o.sampler == diffusion_sampler::sequential_measurements ? o.measurements : 1;
  table tb;
  tb.initial_scale = float(sigma);
  tb.final_denoise = true;
  // ULA on y with gradient (m - y) / sigma^2, m the denoiser at the measurement's average:
  // y <- (1 - gamma / sigma^2) y + (gamma / sigma^2) m + sqrt(2 gamma) xi.
  for (std::int64_t mm = 1; mm <= M; ++mm) {
    // ybar_m = (S + y_m) / m carries noise sigma / sqrt(m); (sigma^2/m) grad log q(ybar) = E[x0|ybar] - ybar.
    diffusion_step st = plain_step(1.0, sigma / std::sqrt(double(mm)));
    st.ex = float(1.0 / double(mm));
    st.es = mm > 1 ? float(1.0 / double(mm)) : 0.f;
    st.cx = float(1 - gamma / s2);
    st.cm = float(gamma / s2);
    st.cn = float(std::sqrt(2 * gamma));
    for (std::int64_t l = 0; l < o.steps; ++l) {
      diffusion_step e = st;
      if (l + 1 == o.steps && mm < M) {
        // The next measurement starts at the current average plus fresh measurement noise.
        e.flags |= kernels::step_accumulate;
        e.init_scale = float(1.0 / double(mm));
        e.init_noise = float(sigma);
      }
      tb.steps.push_back(e);
    }
  }
  diffusion_step final_entry = plain_step(1.0, sigma / std::sqrt(double(M)));
  final_entry.ex = float(1.0 / double(M));
  final_entry.es = M > 1 ? float(1.0 / double(M)) : 0.f;
  tb.steps.push_back(final_entry);
  return tb;
}

table build_table(const diffusion_options& o) {
  return uses_schedule(o.sampler) ? build_schedule_table(o) : build_langevin_table(o);
}

std::int64_t total_steps(const diffusion_options& o) {
  return o.sampler == diffusion_sampler::sequential_measurements ? o.steps * o.measurements : o.steps;
}

// The options the sampler does not read hold their defaults (README: "Options a method does not read"): each field's
// row in src/option_readers.hpp.
void check_unread_options(const diffusion_options& o) {
  using detail::unset;
  const diffusion_options d;
  const std::string method = std::string("sampler ") + to_string(o.sampler);
#define DIFFSAMPLE_DIFFUSION_CHECK_(F, R, W, V)                                                                 \
  static_assert(detail::read_when::W == detail::read_when::always, "a diffusion sampler reads a field or not"); \
  detail::check_unread_row("options." #F, o.F, d.F, V,                                                         \
                           (detail::diffusion_readers::R & detail::methods(o.sampler)) != 0 ? std::string() : method);
  DIFFSAMPLE_DIFFUSION_OPTION_READERS(DIFFSAMPLE_DIFFUSION_CHECK_)
#undef DIFFSAMPLE_DIFFUSION_CHECK_
}

/// Largest gamma / sigma^2 of a walk-jump or SMS step (2^23). The step forms (1 - R) y + R m in FP32, R = gamma /
/// sigma^2, with m the denoiser (FP32, relative rounding 2^-24 or more): one rounding of m moves y by R 2^-24 |m|, half
/// of y or more from 2^23 on. Measured on N(0, 1) (walk-jump, step 0.5, 20000 chains; stationary variance 1.333):
/// 1.320 at R = 2^20, 1.378 at 2^22, 1.179 at 2^23, diverged at 2^24 (inf / NaN past 3.4e38, where R itself is
/// infinite in FP32).
constexpr double walk_coefficient_limit = 8388608.0;

// The walk's step coefficients (build_langevin_table) must be usable in FP32: gamma / sigma^2 (cm, and cx = 1 - cm)
// below walk_coefficient_limit, and the noise level sigma / sqrt(m) of every measurement a normal FP32 number (the
// chains start at sigma z and the denoiser's channel holds s in FP32). Shared with diffusion_plan, which has no
// mixture to bound the step by (its model's denoiser is rounded to FP32 as well).
void check_walk_coefficients(const diffusion_options& o) {
  const std::int64_t M = o.sampler == diffusion_sampler::sequential_measurements ? o.measurements : 1;
  const double ratio = o.step_size / (o.sigma * o.sigma);
  DIFFSAMPLE_EXPECTS(ratio < walk_coefficient_limit,
                     "options.step_size / options.sigma^2: " << o.step_size << " / " << o.sigma << "^2 = " << ratio
                         << " is at or above 2^23 = " << walk_coefficient_limit
                         << ": the walk's step (1 - R) y + R m with R = gamma / sigma^2 is formed in FP32, where one "
                            "rounding of the denoiser m moves y by half of itself or more (take a smaller step size "
                            "or a larger sigma)");
  const double last = o.sigma / std::sqrt(double(M));
  DIFFSAMPLE_EXPECTS(last >= double(std::numeric_limits<float>::min()),
                     "options.sigma: " << o.sigma << (M > 1 ? " / sqrt(options.measurements)" : "") << " = " << last
                                       << " is below FP32's smallest normal number "
                                       << std::numeric_limits<float>::min()
                                       << " (the kernels hold the walk's noise level in FP32)");
}

// Walk-jump and SMS run ULA on y_m | y_1..m-1 with the update y <- (1 - gamma / sigma^2) y + (gamma / sigma^2) m(ybar_m)
// + sqrt(2 gamma) xi, ybar_m = (S + y_m) / m. Far from the means one component takes all the weight (in coordinate j
// the one with the largest variance v there); its denoiser is linear in ybar_m with slope v / (v + sigma^2 / m), so
// the walk multiplies y_j by 1 - gamma q_m, q_m = ((m - 1) v + sigma^2) / (sigma^2 (m v + sigma^2)) per step: the ULA
// map of a Gaussian of variance 1 / q_m (sigma^2 plus the posterior variance after m - 1 measurements). At gamma q_m
// >= 2 that factor is <= -1 and y_j grows without bound (as it did, to inf / NaN). q_m rises with m and falls with v:
// the binding bound is the last measurement's at the coordinate whose largest variance is smallest,
// 2 sigma^2 (M v + sigma^2) / ((M - 1) v + sigma^2). Below it every tail pulls the walk back (the step may still be
// too large for narrower components, which the walk then leaves: README, walk_jump).
void check_walk_stability(const gaussian_mixture& mixture, const diffusion_options& o) {
  const std::int64_t M = o.sampler == diffusion_sampler::sequential_measurements ? o.measurements : 1;
  const std::vector<double>& var = mixture.variances();
  const std::int64_t d = mixture.dim();
  const std::int64_t K = static_cast<std::int64_t>(mixture.weights().size());
  const bool iso = mixture.isotropic();
  double v = std::numeric_limits<double>::infinity();
  std::int64_t coordinate = 0;
  for (std::int64_t j = 0; j < (iso ? 1 : d); ++j) {
    double widest = 0;
    for (std::int64_t k = 0; k < K; ++k) widest = std::max(widest, iso ? var[k] : var[k * d + j]);
    if (widest < v) {
      v = widest;
      coordinate = j;
    }
  }
  const double s2 = o.sigma * o.sigma;
  const double bound = 2 * s2 * (double(M) * v + s2) / (double(M - 1) * v + s2);
  DIFFSAMPLE_EXPECTS(o.step_size < bound,
                     "options.step_size: " << o.step_size << " is at or above " << bound
                         << ", where the walk" << (M > 1 ? " on the last measurement" : "")
                         << " diverges: the bound 2 sigma^2 (M v + sigma^2) / ((M - 1) v + sigma^2) with options.sigma = "
                         << o.sigma << ", M = " << M << (M > 1 ? " (options.measurements)" : "") << " and v = " << v
                         << (iso ? std::string(", the mixture's largest variance")
                                 : ", the mixture's largest variance in coordinate " + std::to_string(coordinate) +
                                       " (the coordinate where it is smallest)")
                         << "; take a smaller step size");
}

void validate_options(const diffusion_options& o) {
  DIFFSAMPLE_EXPECTS(o.sampler >= diffusion_sampler::ddpm && o.sampler <= diffusion_sampler::sequential_measurements,
                     "options.sampler: invalid value " << static_cast<int>(o.sampler));
  check_unread_options(o);
  limits::check("options.steps", o.steps, 1, limits::max_steps);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.eta) && o.eta >= 0 && o.eta <= 1,
                     "options.eta: must be in [0, 1], got " << o.eta);
  DIFFSAMPLE_EXPECTS(o.record_every >= 0, "options.record_every: must be >= 0, got " << o.record_every);
  limits::check("options.first_chain", o.first_chain, 0, limits::max_first_chain);
  if (!uses_schedule(o.sampler)) {
    detail::check_positive("options.sigma", o.sigma);
    detail::check_positive("options.step_size", o.step_size);
    if (o.sampler == diffusion_sampler::sequential_measurements)
      limits::check("options.measurements", o.measurements, 1, limits::max_inner_steps);
    limits::check("options.steps x measurements", total_steps(o), 1, kernels::philox_max_step - 1,
                  "the random stream's steps");
    check_walk_coefficients(o);
  }
  // Past the steps no record falls due: the trajectory was taken and never written.
  DIFFSAMPLE_EXPECTS(o.record_every <= total_steps(o),
                     "options.record_every: " << o.record_every << " is more than the run's " << total_steps(o)
                                              << " steps (nothing would be recorded)");
}

void validate(const gaussian_mixture& mixture, std::int64_t n, const diffusion_options& o) {
  detail::check_count("n", n, mixture.dim());
  validate_options(o);
  if (!uses_schedule(o.sampler)) check_walk_stability(mixture, o);
}

using kernels::is_register_dim;

std::size_t table_bytes(const diffusion_options& o) {
  // 256-byte aligned so that the state workspace behind it stays aligned.
  const std::size_t raw = static_cast<std::size_t>(total_steps(o) + 1) * sizeof(diffusion_step);
  return (raw + 255) / 256 * 256;
}

// The mixture's constants at every table entry's channels (two per entry: the step's and Heun's next one).
std::size_t channel_bytes(const gaussian_mixture& mixture, const diffusion_options& o) {
  const std::int64_t floats = kernels::mixture_channels::table_floats(mixture.storage().view(executor::cpu),
                                                                      2 * (total_steps(o) + 1));
  return (static_cast<std::size_t>(floats) * sizeof(float) + 255) / 256 * 256;
}

// Whether the chains run on the register path: a listed dimension, and on CUDA a mixture whose parameters fit in the
// shared memory the chain kernel stages them in (kernels/chain_launch.cuh); else the workspace path.
bool register_path(const gaussian_mixture& mixture, executor where) {
  return is_register_dim(mixture.dim()) &&
         (where == executor::cpu ||
          kernels::chain_staging_fits<kernels::diffusion_chain_body>(mixture.storage().view(executor::cpu)));
}

// The workspace size asks for the state whenever CUDA would need it.
std::size_t state_bytes(const gaussian_mixture& mixture, std::int64_t n) {
  return register_path(mixture, executor::cuda) ? 0 : detail::chain_state_bytes(n, mixture.dim());
}

}  // namespace

std::size_t diffusion_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n, const diffusion_options& o) {
  validate(mixture, n, o);
  (void)build_table(o);  // validates the schedule against the sampler
  return table_bytes(o) + channel_bytes(mixture, o) + state_bytes(mixture, n);
}

namespace {

// The checks of diffusion() but its workspace's (detail::check_diffusion_arguments): the executor the call runs on.
// Sets *tb to the step table when given (diffusion() builds it once).
executor check_arguments(const gaussian_mixture& mixture, const float* x, const diffusion_outputs& outputs,
                         std::int64_t n, const diffusion_options& o, execution exec, table* tb_out) {
  validate(mixture, n, o);
  table tb = build_table(o);
  const std::int64_t d = mixture.dim();
  const std::int64_t total = total_steps(o);
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  const std::int64_t records = o.record_every > 0 ? total / o.record_every : 0;
  // record_every asks for a recording: without a buffer it would go nowhere (as the C API refuses it). n = 0 records
  // nothing either way (an MPI rank without rows may hold no buffer).
  DIFFSAMPLE_EXPECTS(outputs.trajectory != nullptr || o.record_every == 0 || n == 0,
                     "outputs.trajectory: null, but options.record_every is "
                         << o.record_every
                         << " (nothing would be recorded; give a buffer of (total_steps / record_every) x n x d floats,"
                            " or set record_every to 0)");
  if (outputs.trajectory != nullptr) {
    DIFFSAMPLE_EXPECTS(o.record_every > 0, "outputs.trajectory: given but options.record_every is 0");
    // records x (n d) checked before it is formed: records x n could wrap around 2^64 into range.
    if (n > 0) detail::check_count("outputs.trajectory: records", records, n * d);
    detail::check_buffer("outputs.trajectory", outputs.trajectory, records * n * d, sizeof(float), where);
  }
  // The trajectory is written while other chains still read x: they may not share memory (diffusion() adds its
  // workspace).
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, x_bytes},
                          {"outputs.trajectory", outputs.trajectory, outputs.trajectory ? x_bytes * records : 0}});
  if (tb_out != nullptr) *tb_out = std::move(tb);
  return where;
}

}  // namespace

executor detail::check_diffusion_arguments(const gaussian_mixture& mixture, const float* x,
                                           const diffusion_outputs& outputs, std::int64_t n,
                                           const diffusion_options& options, execution exec) {
  return check_arguments(mixture, x, outputs, n, options, exec, nullptr);
}

diffusion_report diffusion(const gaussian_mixture& mixture, float* x, diffusion_outputs outputs, std::int64_t n,
                           const diffusion_options& o, execution exec, void* workspace, std::size_t workspace_bytes) {
  table tb;
  const executor where = check_arguments(mixture, x, outputs, n, o, exec, &tb);
  const std::int64_t d = mixture.dim();
  const std::int64_t total = total_steps(o);
  const std::int64_t records = o.record_every > 0 ? total / o.record_every : 0;
  diffusion_report report{where, register_path(mixture, where), total};
  if (n == 0) return report;

  const std::size_t need = table_bytes(o) + channel_bytes(mixture, o) + state_bytes(mixture, n);
  detail::check_workspace_bytes(need, workspace, workspace_bytes);
  // The trajectory and the workspace are written while other chains still read x: none may share memory.
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, x_bytes},
                          {"outputs.trajectory", outputs.trajectory, outputs.trajectory ? x_bytes * records : 0},
                          {"workspace", workspace, need}});
  // The step table is built on the host per call: a captured graph would copy it again at every replay, after tb
  // is gone (the plans capture instead).
  if (where == executor::cuda) detail::refuse_capture(exec.stream, "diffusion()", "sampling_plan::diffusion or diffusion_plan");
  std::unique_ptr<detail::scratch> owned;
  unsigned char* ws = detail::workspace_or_scratch(need, workspace, workspace_bytes, 16, where, exec.stream, owned);
  auto* table_dst = reinterpret_cast<diffusion_step*>(ws);
  const std::size_t copy_bytes = tb.steps.size() * sizeof(diffusion_step);
  if (where == executor::cuda) {
    // Through a pinned staging block (no host synchronisation); tb may go out of scope afterwards.
    detail::upload_async(table_dst, tb.steps.data(), copy_bytes, exec.stream);
  } else {
    std::memcpy(table_dst, tb.steps.data(), copy_bytes);
  }
  // The constants of every step's channels, computed once per call on the executor that runs the chains.
  const kernels::mixture_view<float> view = mixture.storage().view(where);
  auto* channel_dst = reinterpret_cast<float*>(ws + table_bytes(o));
  const kernels::mixture_channels channels = kernels::mixture_channels::in(view, 2 * (total + 1), channel_dst);
  kernels::for_each_index(where, 2 * (total + 1) * view.components,
                          kernels::channel_table_functor<kernels::diffusion_channels>{channels, {table_dst}},
                          exec.stream);
  kernels::diffusion_params p{channels,
                              table_dst,
                              total,
                              tb.final_denoise,
                              o.draw_initial,
                              tb.initial_scale,
                              o.seed,
                              o.first_chain,
                              n,
                              o.record_every > 0 ? o.record_every : 1,
                              outputs.trajectory};
  float* state = reinterpret_cast<float*>(ws + table_bytes(o) + channel_bytes(mixture, o));
  kernels::run_chains<kernels::diffusion_chain_body>(where, n, d, p, x, state, report.register_path, exec.stream,
                                                     &cpu::run_diffusion);
  return report;
}

// --- stepwise plan ------------------------------------------------------------------------------------------------

namespace detail {

struct plan_storage {
  executor where = executor::cpu;
  std::int64_t n = 0, d = 0, steps = 0;
  bool final_jump = false, draw_initial = true;
  float initial_scale = 1.f;
  std::uint64_t seed = 0, first_chain = 0;
  std::vector<diffusion_step> table;
  std::vector<float> convert;  // ux, um per entry
  std::vector<double> times;
  kernels::plan_state host_state{};
  void* device = nullptr;  // table | convert | state
  const diffusion_step* table_ptr = nullptr;
  const float* convert_ptr = nullptr;
  kernels::plan_state* state_ptr = nullptr;
  ~plan_storage() {
    if (device != nullptr) (void)cudaFree(device);
  }
};

}  // namespace detail

diffusion_plan::diffusion_plan(std::int64_t n, std::int64_t d, const diffusion_options& o, model_output output,
                               execution exec)
    : storage_(std::make_unique<detail::plan_storage>()) {
  limits::check("dim", d, 1, limits::max_dim);  // first: check_count would name n for a d below 1
  detail::check_count("n", n, d);
  DIFFSAMPLE_EXPECTS(o.sampler != diffusion_sampler::ode_heun && o.sampler != diffusion_sampler::sequential_measurements,
                     "options.sampler: " << to_string(o.sampler)
                                         << " evaluates the model away from x and is available only fused (diffusion())");
  DIFFSAMPLE_EXPECTS(output >= model_output::score && output <= model_output::velocity,
                     "output: invalid value " << static_cast<int>(output));
  limits::check("options.steps", o.steps, 1, limits::max_steps);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.eta) && o.eta >= 0 && o.eta <= 1, "options.eta: must be in [0, 1], got " << o.eta);
  limits::check("options.first_chain", o.first_chain, 0, limits::max_first_chain);
  // As sampling_plan refuses it: the plan keeps no trajectory, and x is the caller's between steps.
  DIFFSAMPLE_EXPECTS(o.sampler >= diffusion_sampler::ddpm && o.sampler <= diffusion_sampler::sequential_measurements,
                     "options.sampler: invalid value " << static_cast<int>(o.sampler));
  check_unread_options(o);
  DIFFSAMPLE_EXPECTS(o.record_every == 0, "options.record_every: a plan records nothing (x is the caller's between "
                                          "steps), got " << o.record_every);
  if (!uses_schedule(o.sampler)) {
    detail::check_positive("options.sigma", o.sigma);
    detail::check_positive("options.step_size", o.step_size);
    check_walk_coefficients(o);
  }
  DIFFSAMPLE_EXPECTS(output != model_output::velocity || uses_schedule(o.sampler),
                     "output: velocity needs a schedule-based sampler, not " << to_string(o.sampler));
  const table tb = build_table(o);
  auto& st = *storage_;
  st.where = detail::plan_executor(exec);
  st.n = n;
  st.d = d;
  st.steps = o.steps;
  st.final_jump = tb.final_denoise;
  st.draw_initial = o.draw_initial;
  st.initial_scale = tb.initial_scale;
  st.seed = o.seed;
  st.first_chain = o.first_chain;
  st.table = tb.steps;
  std::vector<schedule_point> pts;
  if (uses_schedule(o.sampler)) pts = o.schedule.points(o.steps);
  for (std::int64_t k = 0; k <= o.steps; ++k) {
    const diffusion_step& e = st.table[k];
    st.times.push_back(pts.empty() ? 0.0 : pts[k].t);
    double ux = 0, um = 1;
    detail::denoiser_form(output, e.a, e.s, pts.empty() ? nullptr : &pts[k], k, ux, um);
    st.convert.push_back(float(ux));
    st.convert.push_back(float(um));
  }
  const kernels::plan_state initial{0, o.first_chain, 0};
  if (st.where == executor::cuda) {
    detail::refuse_plan_capture(exec.stream, "diffusion_plan's constructor");  // before anything is issued
    const std::size_t table_b = (st.table.size() * sizeof(diffusion_step) + 255) / 256 * 256;
    const std::size_t convert_b = (st.convert.size() * sizeof(float) + 255) / 256 * 256;
    const std::size_t state_b = sizeof(kernels::plan_state);
    detail::check_allocation("diffusion_plan", table_b + convert_b + state_b, st.where);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&st.device, table_b + convert_b + state_b));
    auto* base = static_cast<unsigned char*>(st.device);
    // Copies on the caller's stream, then that stream is synchronised: the plan is usable on any stream afterwards,
    // and the host vectors (pageable) may change.
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(base, st.table.data(), st.table.size() * sizeof(diffusion_step),
                                        cudaMemcpyHostToDevice, exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(base + table_b, st.convert.data(), st.convert.size() * sizeof(float),
                                        cudaMemcpyHostToDevice, exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(base + table_b + convert_b, &initial, state_b, cudaMemcpyHostToDevice,
                                        exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(exec.stream));
    st.table_ptr = reinterpret_cast<const diffusion_step*>(base);
    st.convert_ptr = reinterpret_cast<const float*>(base + table_b);
    st.state_ptr = reinterpret_cast<kernels::plan_state*>(base + table_b + convert_b);
  } else {
    st.host_state = initial;
    st.table_ptr = st.table.data();
    st.convert_ptr = st.convert.data();
    st.state_ptr = &st.host_state;
  }
}

diffusion_plan::~diffusion_plan() = default;
diffusion_plan::diffusion_plan(diffusion_plan&&) noexcept = default;
diffusion_plan& diffusion_plan::operator=(diffusion_plan&&) noexcept = default;

// A moved-from plan holds no storage: its noexcept getters give an empty plan (0 steps, null counter) and every other
// call throws, naming the call (a null dereference before).
std::int64_t diffusion_plan::steps() const noexcept { return storage_ ? storage_->steps : 0; }
executor diffusion_plan::where() const noexcept { return storage_ ? storage_->where : executor::cpu; }
bool diffusion_plan::needs_final_jump() const noexcept { return storage_ && storage_->final_jump; }
const std::int64_t* diffusion_plan::step_counter() const noexcept {
  return storage_ ? &storage_->state_ptr->step : nullptr;
}

namespace {
const detail::plan_storage& live(const std::unique_ptr<detail::plan_storage>& storage, const char* call) {
  DIFFSAMPLE_EXPECTS(storage != nullptr, call << ": this diffusion_plan was moved from and holds no plan; assign a "
                                                 "plan to it (or make a new one) before using it");
  return *storage;
}
}  // namespace

channel diffusion_plan::step_channel(std::int64_t k) const {
  const auto& st = live(storage_, "step_channel");
  DIFFSAMPLE_EXPECTS(k >= 0 && k <= st.steps, "k: must be in [0, " << st.steps << "], got " << k);
  return {st.table[k].a, st.table[k].s};
}

double diffusion_plan::step_time(std::int64_t k) const {
  const auto& st = live(storage_, "step_time");
  DIFFSAMPLE_EXPECTS(k >= 0 && k <= st.steps, "k: must be in [0, " << st.steps << "], got " << k);
  return st.times[k];
}

namespace {
// The caller's float buffers of the stepwise plan, checked for alignment on the host as the fused calls' buffers are
// (check_buffer's words): a misaligned float pointer was written without a word on the CPU executor and is a
// misaligned-address fault, which ends the CUDA context, on the CUDA executor.
void check_float_aligned(const char* name, const float* p) {
  DIFFSAMPLE_EXPECTS(reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0,
                     name << ": pointer " << static_cast<const void*>(p) << " is not aligned to " << sizeof(float)
                          << " bytes");
}
}  // namespace

void diffusion_plan::reset(float* x, execution exec) {
  const auto& st = live(storage_, "reset");
  const cudaStream_t stream = detail::plan_stream(st.where, exec);
  DIFFSAMPLE_EXPECTS(x != nullptr || st.n == 0 || !st.draw_initial, "x: null pointer");
  check_float_aligned("x", x);
  kernels::for_each_index<32>(st.where, 1,
                              kernels::plan_reset_functor{st.state_ptr, st.first_chain, std::uint64_t(st.n)}, stream);
  const std::int64_t blocks = kernels::philox_blocks(int(st.d));
  const kernels::plan_initial_functor initial{x, st.state_ptr, int(st.d), blocks, st.initial_scale, st.seed};
  const cpu::simd_target target = st.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (st.draw_initial && target != cpu::simd_target::scalar)
    cpu::run_plan_initial(target, initial, st.n);  // as the fused samplers draw it on this target
  else if (st.draw_initial)
    kernels::for_each_index(st.where, st.n * blocks, initial, stream);
}

namespace {
// The update of the current step (final_jump false) or the final jump (true) on x from the model's answer, after
// checking the call's execution and pointers; returns the call's stream.
cudaStream_t apply_update(const detail::plan_storage& st, float* x, const float* model, bool final_jump,
                          execution exec) {
  const cudaStream_t stream = detail::plan_stream(st.where, exec);
  DIFFSAMPLE_EXPECTS((x != nullptr && model != nullptr) || st.n == 0, "x, model: null pointer");
  check_float_aligned("x", x);
  check_float_aligned("model", model);
  // Each thread reads its block of x and of the model's output and writes x: a model buffer that shares a byte with
  // x would be read after other threads wrote it (a shifted view), or would have replaced the state the update
  // needs (x itself). Refused on the host, before the launch (no synchronisation; capturable).
  const std::size_t bytes = static_cast<std::size_t>(st.n * st.d) * sizeof(float);
  detail::check_disjoint({{"x", x, bytes}, {"model", model, bytes}});
  const std::int64_t blocks = kernels::philox_blocks(int(st.d));
  const kernels::plan_step_functor f{st.table_ptr, st.convert_ptr, st.state_ptr, st.steps, x, model,
                                     int(st.d), blocks, final_jump, st.seed};
  const cpu::simd_target target = st.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar)
    cpu::run_plan_step(target, f, st.n);  // the fused samplers' operations on this target
  else
    kernels::for_each_index(st.where, st.n * blocks, f, stream);
  return stream;
}
}  // namespace

void diffusion_plan::step(float* x, const float* model, execution exec) {
  const cudaStream_t stream = apply_update(live(storage_, "step"), x, model, false, exec);
  kernels::for_each_index<32>(storage_->where, 1, kernels::plan_advance_functor{storage_->state_ptr, storage_->steps},
                              stream);
}

void diffusion_plan::finish(float* x, const float* model, execution exec) {
  apply_update(live(storage_, "finish"), x, model, true, exec);
}

// --- ask/tell program ---------------------------------------------------------------------------------------------

namespace detail {

plan_program diffusion_program(std::int64_t n, std::int64_t d, const diffusion_options& o, model_output output) {
  check_program(n, d, o, validate_options);
  DIFFSAMPLE_EXPECTS(output >= model_output::score && output <= model_output::velocity,
                     "output: invalid value " << static_cast<int>(output));
  DIFFSAMPLE_EXPECTS(output != model_output::velocity || uses_schedule(o.sampler),
                     "output: velocity needs a schedule-based sampler, not " << to_string(o.sampler));
  const table tb = build_table(o);
  const std::int64_t total = total_steps(o);
  std::vector<schedule_point> pts;
  if (uses_schedule(o.sampler)) pts = o.schedule.points(o.steps);
  plan_program pr;
  pr.output = output;
  pr.draw_initial = o.draw_initial;
  pr.initial_scale = tb.initial_scale;
  pr.seed = o.seed;
  pr.first_chain = o.first_chain;
  // One ask: the channel (FP32 table values, as the fused sampler evaluates), its time and the conversion.
  auto add = [&](const diffusion_step& st, int op, bool at_point, float a, float s, std::int64_t node,
                 std::int64_t k) {
    kernels::plan_entry e{};
    e.st = st;
    e.op = op;
    e.at_point = at_point ? 1 : 0;
    e.rng_step = static_cast<std::uint64_t>(k) + 1;
    double ux = 0, um = 1;
    detail::denoiser_form(output, a, s, pts.empty() ? nullptr : &pts[node], k, ux, um);
    e.ux = float(ux);
    e.um = float(um);
    pr.entries.push_back(e);
    pr.channels.push_back({double(a), double(s)});
    pr.times.push_back(pts.empty() ? 0.0 : pts[node].t);
  };
  auto at_point = [](const diffusion_step& st) { return st.es != 0.f || st.ex != 1.f; };
  for (std::int64_t k = 0; k < total; ++k) {
    const diffusion_step& st = tb.steps[k];
    const std::int64_t node = pts.empty() ? 0 : k;
    if (st.flags & kernels::step_heun) {
      add(st, kernels::plan_op_heun_predict, false, st.a, st.s, node, k);
      add(st, kernels::plan_op_heun_correct, true, st.a2, st.s2, pts.empty() ? 0 : k + 1, k);
      pr.uses_point = pr.uses_m = true;
    } else {
      add(st, kernels::plan_op_step, at_point(st), st.a, st.s, node, k);
    }
    if (st.flags & kernels::step_accumulate) pr.uses_sum = true;
  }
  if (tb.final_denoise) {
    const diffusion_step& st = tb.steps[total];
    add(st, kernels::plan_op_jump, at_point(st), st.a, st.s, pts.empty() ? 0 : o.steps, total);
  }
  // The points of an ask at P are written by the tell before it (SMS's average of the measurements).
  for (std::size_t i = 0; i < pr.entries.size(); ++i) {
    kernels::plan_entry& e = pr.entries[i];
    if (!e.at_point || e.op == kernels::plan_op_heun_correct) continue;
    pr.uses_point = pr.uses_sum = true;
    if (i == 0) {
      pr.first = e.st;
    } else {
      pr.entries[i - 1].next_point = 1;
      pr.entries[i - 1].next = e.st;
    }
  }
  return pr;
}

}  // namespace detail

}  // namespace diffsample
