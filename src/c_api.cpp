// The C ABI (include/diffsample/diffsample.h) over the C++ API. Every entry point runs its body inside guard(),
// which turns each exception into a status code and a per-thread message, so that none crosses the ABI.
#include <diffsample/diffsample.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <diffsample/diffsample.hpp>

namespace ds = diffsample;

struct ds_mixture {
  ds::gaussian_mixture mixture;
};

struct ds_diffusion_plan {
  ds::diffusion_plan plan;
  std::int64_t n, dim;
  ds_model_output output;
};

struct ds_posterior {
  ds::mixture_posterior posterior;
};

// The C enums are 32-bit and their values are the C++ ones, so that conversions are plain casts.
static_assert(sizeof(ds_status) == 4 && sizeof(ds_executor) == 4 && sizeof(ds_quantity) == 4 &&
              sizeof(ds_langevin_method) == 4);
static_assert(int(ds::executor::automatic) == DS_EXECUTOR_AUTOMATIC && int(ds::executor::cuda) == DS_EXECUTOR_CUDA &&
              int(ds::executor::cpu) == DS_EXECUTOR_CPU);
static_assert(int(ds::quantity::log_density) == DS_LOG_DENSITY && int(ds::quantity::score) == DS_SCORE &&
              int(ds::quantity::denoiser) == DS_DENOISER);
static_assert(int(ds::langevin_method::ula) == DS_ULA && int(ds::langevin_method::mala) == DS_MALA &&
              int(ds::langevin_method::tamed_ula) == DS_TAMED_ULA);
static_assert(sizeof(ds_schedule_kind) == 4 && sizeof(ds_time_grid) == 4 && sizeof(ds_diffusion_sampler) == 4 &&
              sizeof(ds_model_output) == 4 && sizeof(ds_resampling_scheme) == 4 && sizeof(ds_guided_sampler) == 4);
static_assert(int(ds::schedule_kind::vp_linear) == DS_SCHEDULE_VP_LINEAR &&
              int(ds::schedule_kind::vp_cosine) == DS_SCHEDULE_VP_COSINE &&
              int(ds::schedule_kind::vp_table) == DS_SCHEDULE_VP_TABLE &&
              int(ds::schedule_kind::variance_exploding) == DS_SCHEDULE_VARIANCE_EXPLODING &&
              int(ds::schedule_kind::ornstein_uhlenbeck) == DS_SCHEDULE_ORNSTEIN_UHLENBECK &&
              int(ds::schedule_kind::linear_interpolant) == DS_SCHEDULE_LINEAR_INTERPOLANT &&
              int(ds::schedule_kind::stochastic_localization) == DS_SCHEDULE_STOCHASTIC_LOCALIZATION);
static_assert(int(ds::time_grid::uniform) == DS_TIME_GRID_UNIFORM && int(ds::time_grid::quadratic) == DS_TIME_GRID_QUADRATIC &&
              int(ds::time_grid::geometric) == DS_TIME_GRID_GEOMETRIC && int(ds::time_grid::custom) == DS_TIME_GRID_CUSTOM);
static_assert(int(ds::diffusion_sampler::ddpm) == DS_DIFFUSION_DDPM && int(ds::diffusion_sampler::ddim) == DS_DIFFUSION_DDIM &&
              int(ds::diffusion_sampler::reverse_sde) == DS_DIFFUSION_REVERSE_SDE &&
              int(ds::diffusion_sampler::ode_euler) == DS_DIFFUSION_ODE_EULER &&
              int(ds::diffusion_sampler::ode_heun) == DS_DIFFUSION_ODE_HEUN &&
              int(ds::diffusion_sampler::stochastic_localization) == DS_DIFFUSION_STOCHASTIC_LOCALIZATION &&
              int(ds::diffusion_sampler::walk_jump) == DS_DIFFUSION_WALK_JUMP &&
              int(ds::diffusion_sampler::sequential_measurements) == DS_DIFFUSION_SEQUENTIAL_MEASUREMENTS);
static_assert(int(ds::model_output::score) == DS_MODEL_SCORE && int(ds::model_output::denoiser) == DS_MODEL_DENOISER &&
              int(ds::model_output::eps) == DS_MODEL_EPS && int(ds::model_output::velocity) == DS_MODEL_VELOCITY);
static_assert(int(ds::resampling_scheme::multinomial) == DS_RESAMPLING_MULTINOMIAL &&
              int(ds::resampling_scheme::stratified) == DS_RESAMPLING_STRATIFIED &&
              int(ds::resampling_scheme::systematic) == DS_RESAMPLING_SYSTEMATIC &&
              int(ds::resampling_scheme::residual) == DS_RESAMPLING_RESIDUAL &&
              int(ds::resampling_scheme::metropolis) == DS_RESAMPLING_METROPOLIS &&
              int(ds::resampling_scheme::rejection) == DS_RESAMPLING_REJECTION);
static_assert(int(ds::guided_sampler::smc) == DS_GUIDED_SMC && int(ds::guided_sampler::dps) == DS_GUIDED_DPS &&
              int(ds::guided_sampler::pigdm) == DS_GUIDED_PIGDM &&
              int(ds::guided_sampler::diffpir) == DS_GUIDED_DIFFPIR &&
              int(ds::guided_sampler::skrock) == DS_GUIDED_SKROCK && int(ds::guided_sampler::tmpd) == DS_GUIDED_TMPD &&
              int(ds::guided_sampler::ddrm) == DS_GUIDED_DDRM && int(ds::guided_sampler::dcps) == DS_GUIDED_DCPS);
static_assert(int(ds::dps_step_form::likelihood) == DS_DPS_STEP_LIKELIHOOD &&
              int(ds::dps_step_form::normalised) == DS_DPS_STEP_NORMALISED && sizeof(ds_dps_step) == 4);
// ds_resample() hands the caller's report array to the C++ call (it may be device memory): the layouts must agree.
static_assert(sizeof(ds_particle_report) == sizeof(ds::particle_report) &&
              offsetof(ds_particle_report, ess) == offsetof(ds::particle_report, ess) &&
              offsetof(ds_particle_report, log_normaliser_increment) ==
                  offsetof(ds::particle_report, log_normaliser_increment) &&
              offsetof(ds_particle_report, log_sum_exp) == offsetof(ds::particle_report, log_sum_exp) &&
              offsetof(ds_particle_report, nan_count) == offsetof(ds::particle_report, nan_count) &&
              offsetof(ds_particle_report, failed) == offsetof(ds::particle_report, failed) &&
              offsetof(ds_particle_report, resampled) == offsetof(ds::particle_report, resampled));

namespace {

thread_local std::string last_error;
thread_local std::string unavailable_reason;

/// Thrown inside an entry point for a bad argument detected at the C boundary.
[[noreturn]] void fail(const std::string& message) { throw ds::invalid_argument(message); }

template <class F>
ds_status guard(F&& body) noexcept {
  try {
    body();
    last_error.clear();
    return DS_SUCCESS;
  } catch (const ds::invalid_argument& e) {
    last_error = e.what();
    return DS_INVALID_ARGUMENT;
  } catch (const ds::out_of_memory& e) {
    last_error = e.what();
    return DS_OUT_OF_MEMORY;
  } catch (const ds::cuda_error& e) {
    last_error = e.what();
    return DS_CUDA_ERROR;
  } catch (const std::bad_alloc&) {
    last_error = "host allocation failed (std::bad_alloc)";
    return DS_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    try {
      last_error = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    return DS_INTERNAL;
  } catch (...) {
    try {
      last_error = "internal error: unknown exception";
    } catch (...) {
    }
    return DS_INTERNAL;
  }
}

const ds::gaussian_mixture& get(const ds_mixture* m, const char* name = "mixture") {
  if (m == nullptr) fail(std::string(name) + ": null handle");
  return m->mixture;
}

template <class T>
void require_out(const char* name, T* p) {
  if (p == nullptr) fail(std::string(name) + ": null output pointer");
}

std::vector<double> copy_array(const char* name, const double* p, std::int64_t count) {
  if (count < 0) fail(std::string(name) + ": negative count " + std::to_string(count));
  if (count > 0 && p == nullptr) fail(std::string(name) + ": null pointer for " + std::to_string(count) + " values");
  return count > 0 ? std::vector<double>(p, p + count) : std::vector<double>{};
}

// An enum value from C as an int, copied from its bytes: a caller may store any 32-bit value in the field, and a
// load of an out-of-range value through the C++ enum type is undefined (UBSan's -fsanitize=enum flags it).
template <class C>
int enum_int(const C& value) noexcept {
  static_assert(sizeof(C) == sizeof(int), "C enums are int-sized");
  int v;
  std::memcpy(&v, &value, sizeof v);
  return v;
}

// Enum values from C are switched on as ints: a caller may pass any 32-bit value.
ds::executor to_cpp(const ds_executor& e) {
  switch (enum_int(e)) {
    case DS_EXECUTOR_AUTOMATIC: return ds::executor::automatic;
    case DS_EXECUTOR_CUDA: return ds::executor::cuda;
    case DS_EXECUTOR_CPU: return ds::executor::cpu;
  }
  fail("exec.kind: invalid executor value " + std::to_string(enum_int(e)));
}

ds_executor to_c(ds::executor e) { return static_cast<ds_executor>(static_cast<int>(e)); }

ds::execution to_cpp(ds_execution e) { return ds::execution{to_cpp(e.kind), e.stream}; }

ds::channel to_cpp(ds_channel c) { return ds::channel{c.a, c.s}; }

// --- versioned structs ---------------------------------------------------------------------------------------
// A caller's struct_size must be the size of a layout this library knows. Each struct has one published layout so
// far; a later version appends fields after the last byte of the previous layout and adds the previous size to
// known_sizes, and read_struct() then copies the caller's bytes over the defaults, so that the new fields of an
// older caller keep their defaults.
template <class T>
struct layout;
#define DS_LAYOUT(T)                                                            \
  template <>                                                                   \
  struct layout<T> {                                                            \
    static constexpr const char* name = #T;                                     \
    static constexpr std::size_t known_sizes[] = {sizeof(T)};                   \
  }
DS_LAYOUT(ds_langevin_options);
DS_LAYOUT(ds_schedule);
DS_LAYOUT(ds_diffusion_options);
DS_LAYOUT(ds_resampling_options);
DS_LAYOUT(ds_guided_problems);
DS_LAYOUT(ds_guided_outputs);
#undef DS_LAYOUT
// ds_guided_options: the first layout ended with seed; the second appends dps_step and the diffpir and skrock
// settings; the third the ddrm and dcps settings.
template <>
struct layout<ds_guided_options> {
  static constexpr const char* name = "ds_guided_options";
  static constexpr std::size_t known_sizes[] = {offsetof(ds_guided_options, dps_step),
                                                offsetof(ds_guided_options, ddrm_eta), sizeof(ds_guided_options)};
};

template <class T>
void check_size(const std::string& what, std::size_t struct_size) {
  for (std::size_t known : layout<T>::known_sizes)
    if (struct_size == known) return;
  fail(what + ".struct_size: " + std::to_string(struct_size) + " is not the size of a " + layout<T>::name +
       " layout this library knows (expected " + std::to_string(sizeof(T)) +
       "): initialise the struct with its init function and sizeof, from a header of the same version as the library");
}

// Writes the defaults into the first struct_size bytes of *p (the caller's layout) and sets struct_size.
template <class T>
void init_struct(T* p, std::size_t struct_size, const T& defaults) {
  if (p == nullptr) fail(std::string(layout<T>::name) + ": null pointer");
  check_size<T>(layout<T>::name, struct_size);
  T value = defaults;
  value.struct_size = struct_size;
  std::memcpy(static_cast<void*>(p), &value, struct_size);
}

// The caller's struct as this library's layout: the caller's bytes over the defaults.
template <class T>
T read_struct(const std::string& what, const T* p, const T& defaults) {
  if (p == nullptr) fail(what + ": null pointer (initialise it with " + layout<T>::name + "'s init function)");
  std::size_t struct_size = 0;
  std::memcpy(&struct_size, static_cast<const void*>(p), sizeof struct_size);
  check_size<T>(what, struct_size);
  T value = defaults;
  std::memcpy(static_cast<void*>(&value), static_cast<const void*>(p), struct_size);
  return value;
}

// --- enums -------------------------------------------------------------------------------------------------------
// Values from C are range-checked as ints (a caller may pass any 32-bit value), then cast: the values match.
template <class Cpp, class C>
Cpp enum_to_cpp(const std::string& what, const C& value, int count) {
  const int v = enum_int(value);
  if (v < 0 || v >= count) fail(what + ": invalid value " + std::to_string(v));
  return static_cast<Cpp>(v);
}

template <class C, class Cpp>
const char* enum_name(const C& value, int count) noexcept {
  const int v = enum_int(value);
  if (v < 0 || v >= count) return "unknown";
  return ds::to_string(static_cast<Cpp>(v));
}

ds::langevin_options to_cpp(const ds_langevin_options* p) {
  const ds_langevin_options o = read_struct("options", p, ds_langevin_options{});
  ds::langevin_options r;
  r.method = enum_to_cpp<ds::langevin_method>("options.method", o.method, 3);
  r.step_size = o.step_size;
  r.steps = o.steps;
  r.target = to_cpp(o.target);
  r.seed = o.seed;
  r.first_chain = o.first_chain;
  r.first_step = o.first_step;
  r.record_every = o.record_every;
  return r;
}

ds_langevin_options to_c(const ds::langevin_options& d) {
  ds_langevin_options o{};
  o.struct_size = sizeof o;
  o.method = static_cast<ds_langevin_method>(static_cast<int>(d.method));
  o.step_size = d.step_size;
  o.steps = d.steps;
  o.target = ds_channel{d.target.a, d.target.s};
  o.seed = d.seed;
  o.first_chain = d.first_chain;
  o.first_step = d.first_step;
  o.record_every = d.record_every;
  return o;
}

// --- schedules ---------------------------------------------------------------------------------------------------
ds_schedule to_c(const ds::noise_schedule& d) {
  ds_schedule s{};
  s.struct_size = sizeof s;
  s.kind = static_cast<ds_schedule_kind>(static_cast<int>(d.kind));
  s.beta_min = d.beta_min;
  s.beta_max = d.beta_max;
  s.cosine_offset = d.cosine_offset;
  s.alpha_bar = nullptr;  // the factories' defaults hold no arrays
  s.alpha_bar_count = 0;
  s.sigma_min = d.sigma_min;
  s.sigma_max = d.sigma_max;
  s.grid = static_cast<ds_time_grid>(static_cast<int>(d.grid));
  s.t_start = d.t_start;
  s.t_end = d.t_end;
  s.times = nullptr;
  s.times_count = 0;
  return s;
}

ds::noise_schedule to_cpp(const std::string& what, const ds_schedule& in) {
  check_size<ds_schedule>(what, in.struct_size);
  ds::noise_schedule r;
  r.kind = enum_to_cpp<ds::schedule_kind>(what + ".kind", in.kind, 7);
  r.beta_min = in.beta_min;
  r.beta_max = in.beta_max;
  r.cosine_offset = in.cosine_offset;
  r.alpha_bar = copy_array((what + ".alpha_bar").c_str(), in.alpha_bar, in.alpha_bar_count);
  r.sigma_min = in.sigma_min;
  r.sigma_max = in.sigma_max;
  r.grid = enum_to_cpp<ds::time_grid>(what + ".grid", in.grid, 4);
  r.t_start = in.t_start;
  r.t_end = in.t_end;
  r.times = copy_array((what + ".times").c_str(), in.times, in.times_count);
  return r;
}

// --- reverse diffusion -------------------------------------------------------------------------------------------
ds_diffusion_options to_c(const ds::diffusion_options& d) {
  ds_diffusion_options o{};
  o.struct_size = sizeof o;
  o.sampler = static_cast<ds_diffusion_sampler>(static_cast<int>(d.sampler));
  o.schedule = to_c(d.schedule);
  o.steps = d.steps;
  o.eta = d.eta;
  o.sigma = d.sigma;
  o.step_size = d.step_size;
  o.measurements = d.measurements;
  o.final_denoise = d.final_denoise ? 1 : 0;
  o.draw_initial = d.draw_initial ? 1 : 0;
  o.seed = d.seed;
  o.first_chain = d.first_chain;
  o.record_every = d.record_every;
  return o;
}

ds::diffusion_options to_cpp(const ds_diffusion_options* p) {
  const ds_diffusion_options o = read_struct("options", p, to_c(ds::diffusion_options{}));
  ds::diffusion_options r;
  r.sampler = enum_to_cpp<ds::diffusion_sampler>("options.sampler", o.sampler, 8);
  r.schedule = to_cpp("options.schedule", o.schedule);
  r.steps = o.steps;
  r.eta = o.eta;
  r.sigma = o.sigma;
  r.step_size = o.step_size;
  r.measurements = o.measurements;
  r.final_denoise = o.final_denoise != 0;
  r.draw_initial = o.draw_initial != 0;
  r.seed = o.seed;
  r.first_chain = o.first_chain;
  r.record_every = o.record_every;
  return r;
}

// --- resampling --------------------------------------------------------------------------------------------------
ds_resampling_options to_c(const ds::resampling_options& d) {
  ds_resampling_options o{};
  o.struct_size = sizeof o;
  o.scheme = static_cast<ds_resampling_scheme>(static_cast<int>(d.scheme));
  o.ess_threshold = d.ess_threshold;
  o.seed = d.seed;
  o.step = d.step;
  o.metropolis_steps = d.metropolis_steps;
  return o;
}

ds::resampling_options to_cpp(const std::string& what, const ds_resampling_options& o) {
  check_size<ds_resampling_options>(what, o.struct_size);
  ds::resampling_options r;
  r.scheme = enum_to_cpp<ds::resampling_scheme>(what + ".scheme", o.scheme, 6);
  r.ess_threshold = o.ess_threshold;
  r.seed = o.seed;
  r.step = o.step;
  r.metropolis_steps = o.metropolis_steps;
  return r;
}

// --- guided sampling ---------------------------------------------------------------------------------------------
ds_guided_options to_c(const ds::guided_options& d) {
  ds_guided_options o{};
  o.struct_size = sizeof o;
  o.sampler = static_cast<ds_guided_sampler>(static_cast<int>(d.sampler));
  o.schedule = to_c(d.schedule);
  o.steps = d.steps;
  o.ddim = d.ddim ? 1 : 0;
  o.eta = d.eta;
  o.particles = d.particles;
  o.potential_spread = d.potential_spread;
  o.resampling = to_c(d.resampling);
  o.final_resample = d.final_resample ? 1 : 0;
  o.guidance_scale = d.guidance_scale;
  o.seed = d.seed;
  o.dps_step = static_cast<ds_dps_step>(static_cast<int>(d.dps_step));
  o.diffpir_zeta = d.diffpir_zeta;
  o.diffpir_lambda = d.diffpir_lambda;
  o.skrock_stages = d.skrock_stages;
  o.skrock_eta = d.skrock_eta;
  o.skrock_step_fraction = d.skrock_step_fraction;
  o.ddrm_eta = d.ddrm_eta;
  o.ddrm_eta_b = d.ddrm_eta_b;
  o.dcps_blocks = d.dcps_blocks;
  o.dcps_langevin_steps = d.dcps_langevin_steps;
  o.dcps_langevin_step = d.dcps_langevin_step;
  o.dcps_gradient_steps = d.dcps_gradient_steps;
  o.dcps_learning_rate = d.dcps_learning_rate;
  return o;
}

ds::guided_options to_cpp(const ds_guided_options* p) {
  const ds_guided_options o = read_struct("options", p, to_c(ds::guided_options{}));
  ds::guided_options r;
  r.sampler = enum_to_cpp<ds::guided_sampler>("options.sampler", o.sampler, 8);
  r.schedule = to_cpp("options.schedule", o.schedule);
  r.steps = o.steps;
  r.ddim = o.ddim != 0;
  r.eta = o.eta;
  r.particles = o.particles;
  r.potential_spread = o.potential_spread;
  r.resampling = to_cpp("options.resampling", o.resampling);
  r.final_resample = o.final_resample != 0;
  r.guidance_scale = o.guidance_scale;
  r.seed = o.seed;
  r.dps_step = enum_to_cpp<ds::dps_step_form>("options.dps_step", o.dps_step, 2);
  r.diffpir_zeta = o.diffpir_zeta;
  r.diffpir_lambda = o.diffpir_lambda;
  r.skrock_stages = o.skrock_stages;
  r.skrock_eta = o.skrock_eta;
  r.skrock_step_fraction = o.skrock_step_fraction;
  r.ddrm_eta = o.ddrm_eta;
  r.ddrm_eta_b = o.ddrm_eta_b;
  r.dcps_blocks = o.dcps_blocks;
  r.dcps_langevin_steps = o.dcps_langevin_steps;
  r.dcps_langevin_step = o.dcps_langevin_step;
  r.dcps_gradient_steps = o.dcps_gradient_steps;
  r.dcps_learning_rate = o.dcps_learning_rate;
  return r;
}

ds_guided_problems default_problems() {
  const ds::guided_problems d;
  ds_guided_problems p{};
  p.struct_size = sizeof p;
  p.problems = d.problems;
  p.d_y = d.d_y;
  return p;
}

ds::guided_problems to_cpp(const ds_guided_problems* p, std::int64_t dim) {
  const ds_guided_problems g = read_struct("problems", p, default_problems());
  // B and d_y size the copy of y, so they are checked here (guided_sample() checks the rest).
  if (g.problems < 1 || g.problems > (std::int64_t{1} << 40))
    fail("problems.problems: must be in [1, 2^40], got " + std::to_string(g.problems));
  if (g.d_y < 1 || g.d_y > 1024) fail("problems.d_y: must be in [1, 1024], got " + std::to_string(g.d_y));
  ds::guided_problems r;
  r.problems = g.problems;
  r.d_y = g.d_y;
  r.A = copy_array("problems.A", g.A, g.A_count);
  if (g.mask != nullptr || g.mask_count != 0) {
    if (g.A != nullptr) fail("problems.mask: give either A or mask, not both");
    if (g.mask_count != g.d_y && g.mask_count != g.problems * g.d_y)
      fail("problems.mask_count: expected d_y = " + std::to_string(g.d_y) + " or B x d_y = " +
           std::to_string(g.problems * g.d_y) + ", got " + std::to_string(g.mask_count));
    if (g.mask == nullptr) fail("problems.mask: null pointer for " + std::to_string(g.mask_count) + " indices");
    const std::vector<double> gains = copy_array("problems.mask_gains", g.mask_gains, g.mask_gains ? g.mask_count : 0);
    const std::int64_t d_x = dim;
    for (std::int64_t c = 0; c < g.mask_count / g.d_y; ++c) {
      std::vector<std::int64_t> rows(g.mask + c * g.d_y, g.mask + (c + 1) * g.d_y);
      std::vector<double> row_gains;
      if (!gains.empty()) row_gains.assign(gains.begin() + c * g.d_y, gains.begin() + (c + 1) * g.d_y);
      r.operators.push_back(ds::observation_operator::mask(d_x, std::move(rows), std::move(row_gains)));
    }
  }
  r.y = copy_array("problems.y", g.y, g.problems * g.d_y);
  r.sigma_y = copy_array("problems.sigma_y", g.sigma_y, g.sigma_y_count);
  return r;
}

ds::guided_outputs to_cpp(const ds_guided_outputs* p) {
  ds_guided_outputs none{};
  none.struct_size = sizeof none;
  const ds_guided_outputs o = read_struct("outputs", p, none);
  ds::guided_outputs r;
  r.particles = o.particles;
  r.log_weights = o.log_weights;
  r.samples = o.samples;
  r.log_normaliser = o.log_normaliser;
  r.ess_trace = o.ess_trace;
  r.resample_count = o.resample_count;
  return r;
}

ds_diffusion_plan& get(ds_diffusion_plan* p) {
  if (p == nullptr) fail("plan: null handle");
  return *p;
}
const ds_diffusion_plan& get(const ds_diffusion_plan* p) {
  if (p == nullptr) fail("plan: null handle");
  return *p;
}
const ds::mixture_posterior& get(const ds_posterior* p) {
  if (p == nullptr) fail("posterior: null handle");
  return p->posterior;
}

template <class C, class Parse>
ds_status parse_enum(const char* name, C* out, Parse parse) {
  return guard([&] {
    if (name == nullptr) fail("name: null pointer");
    require_out("out", out);
    *out = static_cast<C>(static_cast<int>(parse(std::string(name))));
  });
}

}  // namespace

extern "C" {

const char* ds_version(void) { return ds::version(); }

int ds_cuda_available(void) { return ds::cuda_available() ? 1 : 0; }

const char* ds_cuda_unavailable_reason(void) {
  try {
    unavailable_reason = ds::cuda_unavailable_reason();
  } catch (...) {
    unavailable_reason.clear();
  }
  return unavailable_reason.c_str();
}

const char* ds_last_error(void) { return last_error.c_str(); }

const char* ds_status_name(ds_status status) {
  switch (enum_int(status)) {
    case DS_SUCCESS: return "success";
    case DS_INVALID_ARGUMENT: return "invalid_argument";
    case DS_OUT_OF_MEMORY: return "out_of_memory";
    case DS_CUDA_ERROR: return "cuda_error";
    case DS_INTERNAL: return "internal";
  }
  return "unknown";
}

const char* ds_executor_name(ds_executor executor) {
  switch (enum_int(executor)) {
    case DS_EXECUTOR_AUTOMATIC:
    case DS_EXECUTOR_CUDA:
    case DS_EXECUTOR_CPU: return ds::to_string(static_cast<ds::executor>(enum_int(executor)));
  }
  return "unknown";
}

ds_status ds_parse_executor(const char* name, ds_executor* out) {
  return guard([&] {
    if (name == nullptr) fail("name: null pointer");
    require_out("out", out);
    *out = to_c(ds::parse_executor(name));
  });
}

ds_status ds_mixture_create(int64_t dim, int64_t components, const double* weights, const double* means,
                            const double* variances, int64_t variances_count, ds_mixture** out) {
  return guard([&] {
    require_out("out", out);
    if (components < 1) fail("components: must be >= 1, got " + std::to_string(components));
    if (dim < 1) fail("dim: must be >= 1, got " + std::to_string(dim));
    if (components > (std::int64_t{1} << 24) || dim > (std::int64_t{1} << 24))
      fail("components x dim: " + std::to_string(components) + " x " + std::to_string(dim) + " is too large");
    // The count is checked before anything is read: a short array must not be read past its end.
    if (variances_count != components && variances_count != components * dim)
      fail("variances_count: expected K = " + std::to_string(components) + " (isotropic) or K x d = " +
           std::to_string(components * dim) + " (diagonal), got " + std::to_string(variances_count));
    auto w = copy_array("weights", weights, components);
    auto mu = copy_array("means", means, components * dim);
    auto v = copy_array("variances", variances, variances_count);
    *out = new ds_mixture{ds::gaussian_mixture(dim, std::move(w), std::move(mu), std::move(v))};
  });
}

ds_status ds_grid_mixture_create(int64_t dim, int grid, double spacing, double variance, const double* weights,
                                 int64_t weights_count, ds_mixture** out) {
  return guard([&] {
    require_out("out", out);
    auto w = copy_array("weights", weights, weights_count);
    *out = new ds_mixture{ds::grid_mixture(dim, grid, spacing, variance, std::move(w))};
  });
}

void ds_mixture_destroy(ds_mixture* mixture) { delete mixture; }

ds_status ds_mixture_shape(const ds_mixture* mixture, int64_t* components, int64_t* dim) {
  return guard([&] {
    const auto& m = get(mixture);
    if (components) *components = m.components();
    if (dim) *dim = m.dim();
  });
}

ds_status ds_mixture_evaluate(const ds_mixture* mixture, ds_quantity what, const float* x, int64_t n, ds_channel ch,
                              float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const int q = enum_int(what);
    if (q != DS_LOG_DENSITY && q != DS_SCORE && q != DS_DENOISER)
      fail("what: invalid quantity value " + std::to_string(q));
    const ds::executor r = m.evaluate(static_cast<ds::quantity>(q), x, n, to_cpp(ch), out, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_mixture_denoiser_jvp(const ds_mixture* mixture, const float* x, const float* v, int64_t n, ds_channel ch,
                                  float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const ds::executor r = get(mixture).denoiser_jvp(x, v, n, to_cpp(ch), out, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_mixture_sample(const ds_mixture* mixture, float* out, int64_t n, ds_channel ch, uint64_t seed,
                            int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const ds::executor r = get(mixture).sample(out, n, to_cpp(ch), seed, labels, first_index, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_langevin_options_init(ds_langevin_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::langevin_options{})); });
}

ds_status ds_langevin_workspace_bytes(const ds_mixture* mixture, int64_t n, const ds_langevin_options* options,
                                      size_t* bytes) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = to_cpp(options);
    require_out("bytes", bytes);
    *bytes = ds::langevin_workspace_bytes(m, n, o);
  });
}

ds_status ds_langevin(const ds_mixture* mixture, float* x, int64_t n, const ds_langevin_options* options,
                      float* trajectory, int64_t* accepted, ds_execution exec, void* workspace, size_t workspace_bytes,
                      ds_langevin_report* report) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = to_cpp(options);
    if (o.record_every > 0 && trajectory == nullptr)
      fail("trajectory: null, but options.record_every is " + std::to_string(o.record_every) +
           " (give a buffer, or set record_every to 0)");
    ds::langevin_outputs outputs;
    outputs.trajectory = trajectory;
    outputs.accepted = reinterpret_cast<std::int64_t*>(accepted);
    const ds::langevin_report r = ds::langevin(m, x, n, o, outputs, to_cpp(exec), workspace, workspace_bytes);
    if (report) {
      report->ran = to_c(r.ran);
      report->register_path = r.register_path ? 1 : 0;
    }
  });
}

// --- names -------------------------------------------------------------------------------------------------------

const char* ds_langevin_method_name(ds_langevin_method method) {
  return enum_name<ds_langevin_method, ds::langevin_method>(method, 3);
}
ds_status ds_parse_langevin_method(const char* name, ds_langevin_method* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_langevin_method(n); });
}
const char* ds_schedule_kind_name(ds_schedule_kind kind) {
  return enum_name<ds_schedule_kind, ds::schedule_kind>(kind, 7);
}
ds_status ds_parse_schedule_kind(const char* name, ds_schedule_kind* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_schedule_kind(n); });
}
const char* ds_time_grid_name(ds_time_grid grid) { return enum_name<ds_time_grid, ds::time_grid>(grid, 4); }
ds_status ds_parse_time_grid(const char* name, ds_time_grid* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_time_grid(n); });
}
const char* ds_diffusion_sampler_name(ds_diffusion_sampler sampler) {
  return enum_name<ds_diffusion_sampler, ds::diffusion_sampler>(sampler, 8);
}
ds_status ds_parse_diffusion_sampler(const char* name, ds_diffusion_sampler* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_diffusion_sampler(n); });
}
const char* ds_model_output_name(ds_model_output output) {
  return enum_name<ds_model_output, ds::model_output>(output, 4);
}
ds_status ds_parse_model_output(const char* name, ds_model_output* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_model_output(n); });
}
const char* ds_resampling_scheme_name(ds_resampling_scheme scheme) {
  return enum_name<ds_resampling_scheme, ds::resampling_scheme>(scheme, 6);
}
ds_status ds_parse_resampling_scheme(const char* name, ds_resampling_scheme* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_resampling_scheme(n); });
}
const char* ds_guided_sampler_name(ds_guided_sampler sampler) {
  return enum_name<ds_guided_sampler, ds::guided_sampler>(sampler, 8);
}
ds_status ds_parse_guided_sampler(const char* name, ds_guided_sampler* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_guided_sampler(n); });
}
const char* ds_dps_step_name(ds_dps_step step) { return enum_name<ds_dps_step, ds::dps_step_form>(step, 2); }
ds_status ds_parse_dps_step(const char* name, ds_dps_step* out) {
  return parse_enum(name, out, [](const std::string& n) { return ds::parse_dps_step_form(n); });
}

// --- noise schedules ---------------------------------------------------------------------------------------------

ds_status ds_schedule_init(ds_schedule* schedule, size_t struct_size, ds_schedule_kind kind) {
  return guard([&] {
    ds::noise_schedule d;
    switch (enum_to_cpp<ds::schedule_kind>("kind", kind, 7)) {
      case ds::schedule_kind::vp_linear: d = ds::noise_schedule::vp_linear(); break;
      case ds::schedule_kind::vp_cosine: d = ds::noise_schedule::vp_cosine(); break;
      case ds::schedule_kind::vp_table: d = ds::noise_schedule::vp_table({}); break;
      case ds::schedule_kind::variance_exploding: d = ds::noise_schedule::variance_exploding(); break;
      case ds::schedule_kind::ornstein_uhlenbeck: d = ds::noise_schedule::ornstein_uhlenbeck(); break;
      case ds::schedule_kind::linear_interpolant: d = ds::noise_schedule::linear_interpolant(); break;
      case ds::schedule_kind::stochastic_localization: d = ds::noise_schedule::stochastic_localization(); break;
    }
    init_struct(schedule, struct_size, to_c(d));
  });
}

ds_status ds_schedule_points(const ds_schedule* schedule, int64_t steps, ds_schedule_point* out) {
  return guard([&] {
    if (schedule == nullptr) fail("schedule: null pointer (initialise it with ds_schedule_init())");
    const ds::noise_schedule s = to_cpp("schedule", *schedule);
    require_out("out", out);
    const std::vector<ds::schedule_point> points = s.points(steps);
    for (std::size_t i = 0; i < points.size(); ++i)
      out[i] = ds_schedule_point{points[i].t, points[i].a, points[i].s, points[i].da_dt, points[i].ds_dt};
  });
}

// --- reverse diffusion -------------------------------------------------------------------------------------------

ds_status ds_diffusion_options_init(ds_diffusion_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::diffusion_options{})); });
}

ds_status ds_diffusion_workspace_bytes(const ds_mixture* mixture, int64_t n, const ds_diffusion_options* options,
                                       size_t* bytes) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = to_cpp(options);
    require_out("bytes", bytes);
    *bytes = ds::diffusion_workspace_bytes(m, n, o);
  });
}

ds_status ds_diffusion_sample(const ds_mixture* mixture, float* x, int64_t n, const ds_diffusion_options* options,
                              float* trajectory, ds_execution exec, void* workspace, size_t workspace_bytes,
                              ds_diffusion_report* report) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = to_cpp(options);
    if (o.record_every > 0 && trajectory == nullptr)
      fail("trajectory: null, but options.record_every is " + std::to_string(o.record_every) +
           " (give a buffer, or set record_every to 0)");
    ds::diffusion_outputs outputs;
    outputs.trajectory = trajectory;
    const ds::diffusion_report r = ds::diffusion(m, x, n, o, outputs, to_cpp(exec), workspace, workspace_bytes);
    if (report) {
      report->ran = to_c(r.ran);
      report->register_path = r.register_path ? 1 : 0;
      report->total_steps = r.total_steps;
    }
  });
}

ds_status ds_diffusion_plan_create(int64_t n, int64_t dim, const ds_diffusion_options* options, ds_model_output output,
                                   ds_execution exec, ds_diffusion_plan** out) {
  return guard([&] {
    require_out("out", out);
    const auto o = to_cpp(options);
    const auto model = enum_to_cpp<ds::model_output>("output", output, 4);
    *out = new ds_diffusion_plan{ds::diffusion_plan(n, dim, o, model, to_cpp(exec)), n, dim, output};
  });
}

void ds_diffusion_plan_destroy(ds_diffusion_plan* plan) { delete plan; }

ds_status ds_diffusion_plan_get_info(const ds_diffusion_plan* plan, ds_diffusion_plan_info* info) {
  return guard([&] {
    const auto& p = get(plan);
    require_out("info", info);
    info->steps = p.plan.steps();
    info->n = p.n;
    info->dim = p.dim;
    info->where = to_c(p.plan.where());
    info->model_output = p.output;
    info->needs_final_jump = p.plan.needs_final_jump() ? 1 : 0;
  });
}

ds_status ds_diffusion_plan_step_channel(const ds_diffusion_plan* plan, int64_t k, ds_channel* channel, double* t) {
  return guard([&] {
    const auto& p = get(plan);
    if (k < 0 || k > p.plan.steps())
      fail("k: must be in [0, " + std::to_string(p.plan.steps()) + "], got " + std::to_string(k));
    const ds::channel ch = p.plan.step_channel(k);
    const double time = p.plan.step_time(k);
    if (channel) *channel = ds_channel{ch.a, ch.s};
    if (t) *t = time;
  });
}

ds_status ds_diffusion_plan_step_counter(const ds_diffusion_plan* plan, const int64_t** counter) {
  return guard([&] {
    const auto& p = get(plan);
    require_out("counter", counter);
    *counter = reinterpret_cast<const int64_t*>(p.plan.step_counter());
  });
}

ds_status ds_diffusion_plan_reset(ds_diffusion_plan* plan, float* x, struct CUstream_st* stream) {
  return guard([&] {
    auto& p = get(plan);
    if (x == nullptr) fail("x: null pointer");
    p.plan.reset(x, stream);
  });
}

ds_status ds_diffusion_plan_step(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream) {
  return guard([&] {
    auto& p = get(plan);
    if (x == nullptr) fail("x: null pointer");
    if (model == nullptr) fail("model: null pointer");
    p.plan.step(x, model, stream);
  });
}

ds_status ds_diffusion_plan_finish(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream) {
  return guard([&] {
    auto& p = get(plan);
    if (x == nullptr) fail("x: null pointer");
    if (model == nullptr) fail("model: null pointer");
    p.plan.finish(x, model, stream);
  });
}

// --- SMC primitives ----------------------------------------------------------------------------------------------

ds_status ds_resampling_options_init(ds_resampling_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::resampling_options{})); });
}

ds_status ds_resampling_workspace_bytes(int64_t problems, int64_t particles, ds_resampling_scheme scheme,
                                        size_t* bytes) {
  return guard([&] {
    const auto s = enum_to_cpp<ds::resampling_scheme>("scheme", scheme, 6);
    require_out("bytes", bytes);
    *bytes = ds::resampling_workspace_bytes(problems, particles, s);
  });
}

ds_status ds_resample(const float* log_weights, int64_t problems, int64_t particles,
                      const ds_resampling_options* options, int32_t* ancestors, float* normalised_weights,
                      ds_particle_report* reports, ds_execution exec, void* workspace, size_t workspace_bytes,
                      ds_executor* ran) {
  return guard([&] {
    if (options == nullptr) fail("options: null pointer (initialise it with ds_resampling_options_init())");
    const ds::resampling_options o =
        to_cpp("options", read_struct("options", options, to_c(ds::resampling_options{})));
    ds::particle_outputs outputs;
    outputs.ancestors = reinterpret_cast<std::int32_t*>(ancestors);
    outputs.normalised_weights = normalised_weights;
    outputs.reports = reinterpret_cast<ds::particle_report*>(reports);
    const ds::executor r =
        ds::resample(log_weights, problems, particles, o, outputs, to_cpp(exec), workspace, workspace_bytes);
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_gather_particles(const float* states, int64_t problems, int64_t particles, int64_t dim,
                              const int32_t* ancestors, float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const ds::executor r = ds::gather_particles(states, problems, particles, dim,
                                                reinterpret_cast<const std::int32_t*>(ancestors), out, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

// --- guided posterior sampling -----------------------------------------------------------------------------------

ds_status ds_guided_problems_init(ds_guided_problems* problems, size_t struct_size) {
  return guard([&] { init_struct(problems, struct_size, default_problems()); });
}

ds_status ds_guided_options_init(ds_guided_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::guided_options{})); });
}

ds_status ds_guided_outputs_init(ds_guided_outputs* outputs, size_t struct_size) {
  return guard([&] {
    ds_guided_outputs none{};
    init_struct(outputs, struct_size, none);
  });
}

ds_status ds_guided_workspace_bytes(const ds_mixture* prior, const ds_guided_problems* problems,
                                    const ds_guided_options* options, size_t* bytes) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    const auto g = to_cpp(problems, m.dim());
    const auto o = to_cpp(options);
    require_out("bytes", bytes);
    *bytes = ds::guided_workspace_bytes(m, g, o);
  });
}

ds_status ds_guided_sample(const ds_mixture* prior, const ds_guided_problems* problems,
                           const ds_guided_options* options, const ds_guided_outputs* outputs, ds_execution exec,
                           void* workspace, size_t workspace_bytes, ds_guided_report* report) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    const auto g = to_cpp(problems, m.dim());
    const auto o = to_cpp(options);
    const auto out = to_cpp(outputs);
    const ds::guided_report r = ds::guided_sample(m, g, o, out, to_cpp(exec), workspace, workspace_bytes);
    if (report) {
      report->ran = to_c(r.ran);
      report->launches = r.launches;
    }
  });
}

ds_status ds_posterior_create(const ds_mixture* prior, int64_t d_y, const double* A, double sigma_y, const double* y,
                              ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    if (d_y < 1 || d_y > (std::int64_t{1} << 24)) fail("d_y: must be in [1, 2^24], got " + std::to_string(d_y));
    ds::linear_observation obs;
    obs.d_y = d_y;
    obs.d_x = m.dim();
    obs.A = copy_array("A", A, d_y * m.dim());
    obs.sigma_y = sigma_y;
    obs.y = copy_array("y", y, d_y);
    *out = new ds_posterior{ds::mixture_posterior(m, obs)};
  });
}

ds_status ds_posterior_create_masked(const ds_mixture* prior, int64_t d_y, const int64_t* mask, const double* gains,
                                     double sigma_y, const double* y, ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    if (d_y < 1 || d_y > m.dim()) fail("d_y: must be in [1, d_x = " + std::to_string(m.dim()) + "], got " + std::to_string(d_y));
    if (mask == nullptr) fail("mask: null pointer for " + std::to_string(d_y) + " indices");
    std::vector<std::int64_t> indices(mask, mask + d_y);
    const auto op = ds::observation_operator::mask(m.dim(), std::move(indices), copy_array("gains", gains, gains ? d_y : 0));
    *out = new ds_posterior{ds::mixture_posterior(m, op, sigma_y, copy_array("y", y, d_y))};
  });
}

ds_status ds_posterior_create_svd(const ds_mixture* prior, int64_t d_y, int64_t rank, const double* U, const double* S,
                                  const double* V, double sigma_y, const double* y, ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    if (d_y < 1 || d_y > (std::int64_t(1) << 20)) fail("d_y: must be in [1, 2^20], got " + std::to_string(d_y));
    if (rank < 1 || rank > std::min<std::int64_t>(d_y, m.dim()))
      fail("rank: must be in [1, min(d_y, d_x) = " + std::to_string(std::min<std::int64_t>(d_y, m.dim())) +
           "], got " + std::to_string(rank));
    const auto op = ds::observation_operator::svd(d_y, m.dim(), copy_array("U", U, d_y * rank),
                                                  copy_array("S", S, rank), copy_array("V", V, m.dim() * rank));
    *out = new ds_posterior{ds::mixture_posterior(m, op, sigma_y, copy_array("y", y, d_y))};
  });
}

void ds_posterior_destroy(ds_posterior* posterior) { delete posterior; }

ds_status ds_posterior_shape(const ds_posterior* posterior, int64_t* components, int64_t* dim) {
  return guard([&] {
    const auto& p = get(posterior);
    if (components) *components = p.components();
    if (dim) *dim = p.dim();
  });
}

ds_status ds_posterior_log_evidence(const ds_posterior* posterior, double* out) {
  return guard([&] {
    const auto& p = get(posterior);
    require_out("out", out);
    *out = p.log_evidence();
  });
}

ds_status ds_posterior_components(const ds_posterior* posterior, double* weights, double* log_weights, double* means,
                                  double* covariances) {
  return guard([&] {
    const auto& p = get(posterior);
    auto copy = [](const std::vector<double>& from, double* to) {
      if (to) std::copy(from.begin(), from.end(), to);
    };
    copy(p.weights(), weights);
    copy(p.log_weights(), log_weights);
    copy(p.means(), means);
    copy(p.covariances(), covariances);
  });
}

ds_status ds_posterior_moments(const ds_posterior* posterior, double* mean, double* covariance) {
  return guard([&] {
    const auto& p = get(posterior);
    // Both are computed before either is written, so that a failure leaves the outputs unchanged.
    const std::vector<double> mu = mean ? p.mean() : std::vector<double>{};
    const std::vector<double> cov = covariance ? p.covariance() : std::vector<double>{};
    if (mean) std::copy(mu.begin(), mu.end(), mean);
    if (covariance) std::copy(cov.begin(), cov.end(), covariance);
  });
}

ds_status ds_posterior_sample(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed, int32_t* labels,
                              uint64_t first_index) {
  return guard([&] {
    get(posterior).sample(out, n, seed, reinterpret_cast<std::int32_t*>(labels), first_index);
  });
}

ds_status ds_posterior_sample_double(const ds_posterior* posterior, double* out, int64_t n, uint64_t seed,
                                     int32_t* labels, uint64_t first_index) {
  return guard([&] {
    get(posterior).sample(out, n, seed, reinterpret_cast<std::int32_t*>(labels), first_index);
  });
}

ds_status ds_posterior_sample_on(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed,
                                 int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const ds::executor r =
        get(posterior).sample(out, n, seed, to_cpp(exec), reinterpret_cast<std::int32_t*>(labels), first_index);
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_posterior_sample_double_on(const ds_posterior* posterior, double* out, int64_t n, uint64_t seed,
                                        int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const ds::executor r =
        get(posterior).sample(out, n, seed, to_cpp(exec), reinterpret_cast<std::int32_t*>(labels), first_index);
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t d, int directions,
                                uint64_t seed, int p, double* out) {
  return guard([&] {
    require_out("out", out);
    *out = ds::sliced_wasserstein(a, n_a, b, n_b, d, directions, seed, p);
  });
}

}  // extern "C"

// --- binary data -------------------------------------------------------------------------------------------------

struct ds_bernoulli_mixture {
  ds::bernoulli_mixture mixture;
};

static_assert(sizeof(ds_discrete_method) == 4 && int(ds::discrete_method::one_stage) == DS_DISCRETE_ONE_STAGE &&
              int(ds::discrete_method::metropolis) == DS_DISCRETE_METROPOLIS &&
              int(ds::discrete_method::two_stage) == DS_DISCRETE_TWO_STAGE);

namespace {

template <>
struct layout<ds_discrete_options> {
  static constexpr const char* name = "ds_discrete_options";
  static constexpr std::size_t known_sizes[] = {sizeof(ds_discrete_options)};
};

const ds::bernoulli_mixture& get(const ds_bernoulli_mixture* m) {
  if (m == nullptr) fail("mixture: null handle");
  return m->mixture;
}

ds_discrete_options discrete_defaults() {
  const ds::discrete_walk_jump_options w;
  ds_discrete_options o{};
  o.struct_size = sizeof o;
  o.method = static_cast<ds_discrete_method>(static_cast<int>(w.method));
  o.alpha = w.alpha;
  o.eta = w.eta;
  o.steps = w.steps;
  o.measurements = w.measurements;
  return o;
}

ds_discrete_options read_discrete(const ds_discrete_options* p) {
  ds_discrete_options o = read_struct("options", p, discrete_defaults());
  enum_to_cpp<ds::discrete_method>("options.method", o.method, 3);
  return o;
}

ds::discrete_langevin_options to_langevin(const ds_discrete_options& o) {
  ds::discrete_langevin_options r;
  r.method = static_cast<ds::discrete_method>(static_cast<int>(o.method));
  r.alpha = o.alpha;
  r.eta = o.eta;
  r.steps = o.steps;
  r.seed = o.seed;
  r.first_chain = o.first_chain;
  r.first_step = o.first_step;
  r.start_uniform = o.start_uniform != 0;
  return r;
}

ds::discrete_walk_jump_options to_walk_jump(const ds_discrete_options& o) {
  if (o.first_step != 0)
    fail("options.first_step: walk-jump runs each chain whole in one call, got " + std::to_string(o.first_step));
  ds::discrete_walk_jump_options r;
  r.method = static_cast<ds::discrete_method>(static_cast<int>(o.method));
  r.alpha = o.alpha;
  r.eta = o.eta;
  r.steps = o.steps;
  r.measurements = o.measurements;
  r.mean = o.mean != 0;
  r.seed = o.seed;
  r.first_chain = o.first_chain;
  return r;
}

}  // namespace

ds_status ds_bernoulli_mixture_create(int64_t dim, int64_t components, const double* weights,
                                      const double* probabilities, ds_bernoulli_mixture** out) {
  return guard([&] {
    require_out("out", out);
    if (components < 1) fail("components: must be >= 1, got " + std::to_string(components));
    if (dim < 1) fail("dim: must be >= 1, got " + std::to_string(dim));
    if (components > (std::int64_t(1) << 24) || dim > (std::int64_t(1) << 24))
      fail("components x dim: " + std::to_string(components) + " x " + std::to_string(dim) + " is too large");
    auto w = copy_array("weights", weights, components);
    auto p = copy_array("probabilities", probabilities, components * dim);
    *out = new ds_bernoulli_mixture{ds::bernoulli_mixture(dim, std::move(w), std::move(p))};
  });
}

void ds_bernoulli_mixture_destroy(ds_bernoulli_mixture* mixture) { delete mixture; }

ds_status ds_bernoulli_mixture_evaluate(const ds_bernoulli_mixture* mixture, ds_quantity what, const float* y,
                                        int64_t n, double alpha, float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto q = enum_to_cpp<ds::quantity>("what", what, 3);
    const ds::executor r = m.evaluate(q, y, n, alpha, out, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_bernoulli_mixture_sample(const ds_bernoulli_mixture* mixture, float* out, int64_t n, double alpha,
                                      uint64_t seed, int32_t* labels, uint64_t first_index, ds_execution exec,
                                      ds_executor* ran) {
  return guard([&] {
    const ds::executor r = get(mixture).sample(out, n, alpha, seed, labels, first_index, to_cpp(exec));
    if (ran) *ran = to_c(r);
  });
}

ds_status ds_discrete_options_init(ds_discrete_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, discrete_defaults()); });
}

ds_status ds_discrete_workspace_bytes(const ds_bernoulli_mixture* mixture, int64_t n, const ds_discrete_options* options,
                                      int walk_jump, size_t* bytes) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = read_discrete(options);
    require_out("bytes", bytes);
    *bytes = walk_jump ? ds::discrete_walk_jump_workspace_bytes(m, n, to_walk_jump(o))
                       : ds::discrete_langevin_workspace_bytes(m, n, to_langevin(o));
  });
}

ds_status ds_discrete_langevin(const ds_bernoulli_mixture* mixture, float* y, int64_t n,
                               const ds_discrete_options* options, int64_t* accepted, ds_execution exec,
                               void* workspace, size_t workspace_bytes, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = read_discrete(options);
    const auto r = ds::discrete_langevin(m, y, n, to_langevin(o), reinterpret_cast<std::int64_t*>(accepted),
                                         to_cpp(exec), workspace, workspace_bytes);
    if (ran) *ran = to_c(r.ran);
  });
}

ds_status ds_discrete_walk_jump(const ds_bernoulli_mixture* mixture, float* x, int64_t n,
                                const ds_discrete_options* options, float* noisy, int64_t* accepted,
                                ds_execution exec, void* workspace, size_t workspace_bytes, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = read_discrete(options);
    ds::discrete_walk_jump_outputs outputs;
    outputs.noisy = noisy;
    outputs.accepted = reinterpret_cast<std::int64_t*>(accepted);
    const auto r = ds::discrete_walk_jump(m, x, n, to_walk_jump(o), outputs, to_cpp(exec), workspace, workspace_bytes);
    if (ran) *ran = to_c(r.ran);
  });
}

const char* ds_discrete_method_name(ds_discrete_method method) {
  return enum_name<ds_discrete_method, ds::discrete_method>(method, 3);
}
