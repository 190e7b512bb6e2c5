// The one list of every public enum's values (internal): each value with its name and, where the C ABI has the enum,
// its C constant. The C++ names (to_string, parse_*, src/names.cpp) and the C ABI's range checks, names and value
// checks (src/c_api/) are all generated from these lists. A value added to a C++ enum without a line here fails to
// compile (listed() below switches over every enum with -Wswitch as an error), and a line here needs the C
// constant to exist with the same value (static_asserts in src/c_api/common.hpp).
//
// Each list is X(type, value, C constant); the C constant is empty for enums the C ABI does not have. The values of
// every enum run 0, 1, 2, ... in the order listed (checked below), so that a C value is range-checked by count.
#pragma once

#include <cstddef>
#include <iterator>
#include <string>

#include <diffsample/diffsample.hpp>

#define DIFFSAMPLE_EXECUTOR_VALUES(X)                 \
  X(executor, automatic, DS_EXECUTOR_AUTOMATIC)       \
  X(executor, cuda, DS_EXECUTOR_CUDA)                 \
  X(executor, cpu, DS_EXECUTOR_CPU)

#define DIFFSAMPLE_QUANTITY_VALUES(X)                 \
  X(quantity, log_density, DS_LOG_DENSITY)            \
  X(quantity, score, DS_SCORE)                        \
  X(quantity, denoiser, DS_DENOISER)

#define DIFFSAMPLE_LANGEVIN_METHOD_VALUES(X)          \
  X(langevin_method, ula, DS_ULA)                     \
  X(langevin_method, mala, DS_MALA)                   \
  X(langevin_method, tamed_ula, DS_TAMED_ULA)

#define DIFFSAMPLE_SCHEDULE_KIND_VALUES(X)                                        \
  X(schedule_kind, vp_linear, DS_SCHEDULE_VP_LINEAR)                              \
  X(schedule_kind, vp_cosine, DS_SCHEDULE_VP_COSINE)                              \
  X(schedule_kind, vp_table, DS_SCHEDULE_VP_TABLE)                                \
  X(schedule_kind, variance_exploding, DS_SCHEDULE_VARIANCE_EXPLODING)            \
  X(schedule_kind, ornstein_uhlenbeck, DS_SCHEDULE_ORNSTEIN_UHLENBECK)            \
  X(schedule_kind, linear_interpolant, DS_SCHEDULE_LINEAR_INTERPOLANT)            \
  X(schedule_kind, stochastic_localization, DS_SCHEDULE_STOCHASTIC_LOCALIZATION)

#define DIFFSAMPLE_TIME_GRID_VALUES(X)                \
  X(time_grid, uniform, DS_TIME_GRID_UNIFORM)         \
  X(time_grid, quadratic, DS_TIME_GRID_QUADRATIC)     \
  X(time_grid, geometric, DS_TIME_GRID_GEOMETRIC)     \
  X(time_grid, custom, DS_TIME_GRID_CUSTOM)

#define DIFFSAMPLE_DIFFUSION_SAMPLER_VALUES(X)                                           \
  X(diffusion_sampler, ddpm, DS_DIFFUSION_DDPM)                                          \
  X(diffusion_sampler, ddim, DS_DIFFUSION_DDIM)                                          \
  X(diffusion_sampler, reverse_sde, DS_DIFFUSION_REVERSE_SDE)                            \
  X(diffusion_sampler, ode_euler, DS_DIFFUSION_ODE_EULER)                                \
  X(diffusion_sampler, ode_heun, DS_DIFFUSION_ODE_HEUN)                                  \
  X(diffusion_sampler, stochastic_localization, DS_DIFFUSION_STOCHASTIC_LOCALIZATION)    \
  X(diffusion_sampler, walk_jump, DS_DIFFUSION_WALK_JUMP)                                \
  X(diffusion_sampler, sequential_measurements, DS_DIFFUSION_SEQUENTIAL_MEASUREMENTS)

#define DIFFSAMPLE_MODEL_OUTPUT_VALUES(X)             \
  X(model_output, score, DS_MODEL_SCORE)              \
  X(model_output, denoiser, DS_MODEL_DENOISER)        \
  X(model_output, eps, DS_MODEL_EPS)                  \
  X(model_output, velocity, DS_MODEL_VELOCITY)

#define DIFFSAMPLE_RESAMPLING_SCHEME_VALUES(X)                    \
  X(resampling_scheme, multinomial, DS_RESAMPLING_MULTINOMIAL)    \
  X(resampling_scheme, stratified, DS_RESAMPLING_STRATIFIED)      \
  X(resampling_scheme, systematic, DS_RESAMPLING_SYSTEMATIC)      \
  X(resampling_scheme, residual, DS_RESAMPLING_RESIDUAL)          \
  X(resampling_scheme, metropolis, DS_RESAMPLING_METROPOLIS)      \
  X(resampling_scheme, rejection, DS_RESAMPLING_REJECTION)

#define DIFFSAMPLE_GUIDED_SAMPLER_VALUES(X)           \
  X(guided_sampler, smc, DS_GUIDED_SMC)               \
  X(guided_sampler, dps, DS_GUIDED_DPS)               \
  X(guided_sampler, pigdm, DS_GUIDED_PIGDM)           \
  X(guided_sampler, diffpir, DS_GUIDED_DIFFPIR)       \
  X(guided_sampler, skrock, DS_GUIDED_SKROCK)         \
  X(guided_sampler, tmpd, DS_GUIDED_TMPD)             \
  X(guided_sampler, ddrm, DS_GUIDED_DDRM)             \
  X(guided_sampler, dcps, DS_GUIDED_DCPS)

#define DIFFSAMPLE_DPS_STEP_FORM_VALUES(X)                 \
  X(dps_step_form, likelihood, DS_DPS_STEP_LIKELIHOOD)     \
  X(dps_step_form, normalised, DS_DPS_STEP_NORMALISED)

#define DIFFSAMPLE_DISCRETE_METHOD_VALUES(X)               \
  X(discrete_method, one_stage, DS_DISCRETE_ONE_STAGE)     \
  X(discrete_method, metropolis, DS_DISCRETE_METROPOLIS)   \
  X(discrete_method, two_stage, DS_DISCRETE_TWO_STAGE)

#define DIFFSAMPLE_GUIDED_POTENTIALS_VALUES(X)             \
  X(guided_potentials, linear, DS_POTENTIALS_LINEAR)       \
  X(guided_potentials, moment, DS_POTENTIALS_MOMENT)       \
  X(guided_potentials, twisted, DS_POTENTIALS_TWISTED)       \
  X(guided_potentials, automatic, DS_POTENTIALS_AUTOMATIC)

#define DIFFSAMPLE_GUIDED_GRID_VALUES(X)                        \
  X(guided_grid, schedule, DS_GUIDED_GRID_SCHEDULE)             \
  X(guided_grid, sqrt_alpha_bar, DS_GUIDED_GRID_SQRT_ALPHA_BAR) \
  X(guided_grid, spectral, DS_GUIDED_GRID_SPECTRAL)             \
  X(guided_grid, noise_ratio, DS_GUIDED_GRID_NOISE_RATIO)

#define DIFFSAMPLE_MIXTURE_PATH_VALUES(X)                      \
  X(mixture_path, automatic, DS_MIXTURE_PATH_AUTOMATIC)         \
  X(mixture_path, direct, DS_MIXTURE_PATH_DIRECT)               \
  X(mixture_path, gemm, DS_MIXTURE_PATH_GEMM)

// Enums the C ABI does not have (README, "The C ABI": what it leaves out).
#define DIFFSAMPLE_OBSERVATION_KIND_VALUES(X) \
  X(observation_kind, dense, )                \
  X(observation_kind, mask, )                 \
  X(observation_kind, svd, )


/// Every enum with a C form: X(C++ type, C type, list).
#define DIFFSAMPLE_C_ENUMS(X)                                                      \
  X(executor, ds_executor, DIFFSAMPLE_EXECUTOR_VALUES)                             \
  X(quantity, ds_quantity, DIFFSAMPLE_QUANTITY_VALUES)                             \
  X(langevin_method, ds_langevin_method, DIFFSAMPLE_LANGEVIN_METHOD_VALUES)        \
  X(schedule_kind, ds_schedule_kind, DIFFSAMPLE_SCHEDULE_KIND_VALUES)              \
  X(time_grid, ds_time_grid, DIFFSAMPLE_TIME_GRID_VALUES)                          \
  X(diffusion_sampler, ds_diffusion_sampler, DIFFSAMPLE_DIFFUSION_SAMPLER_VALUES)  \
  X(model_output, ds_model_output, DIFFSAMPLE_MODEL_OUTPUT_VALUES)                 \
  X(resampling_scheme, ds_resampling_scheme, DIFFSAMPLE_RESAMPLING_SCHEME_VALUES)  \
  X(guided_sampler, ds_guided_sampler, DIFFSAMPLE_GUIDED_SAMPLER_VALUES)           \
  X(dps_step_form, ds_dps_step, DIFFSAMPLE_DPS_STEP_FORM_VALUES)                   \
  X(discrete_method, ds_discrete_method, DIFFSAMPLE_DISCRETE_METHOD_VALUES)         \
  X(guided_potentials, ds_guided_potentials, DIFFSAMPLE_GUIDED_POTENTIALS_VALUES)  \
  X(guided_grid, ds_guided_grid, DIFFSAMPLE_GUIDED_GRID_VALUES)                    \
  X(mixture_path, ds_mixture_path, DIFFSAMPLE_MIXTURE_PATH_VALUES)

/// Every public enum: X(C++ type, list).
#define DIFFSAMPLE_ENUMS(X)                                          \
  X(executor, DIFFSAMPLE_EXECUTOR_VALUES)                            \
  X(quantity, DIFFSAMPLE_QUANTITY_VALUES)                            \
  X(langevin_method, DIFFSAMPLE_LANGEVIN_METHOD_VALUES)              \
  X(schedule_kind, DIFFSAMPLE_SCHEDULE_KIND_VALUES)                  \
  X(time_grid, DIFFSAMPLE_TIME_GRID_VALUES)                          \
  X(diffusion_sampler, DIFFSAMPLE_DIFFUSION_SAMPLER_VALUES)          \
  X(model_output, DIFFSAMPLE_MODEL_OUTPUT_VALUES)                    \
  X(resampling_scheme, DIFFSAMPLE_RESAMPLING_SCHEME_VALUES)          \
  X(guided_sampler, DIFFSAMPLE_GUIDED_SAMPLER_VALUES)                \
  X(dps_step_form, DIFFSAMPLE_DPS_STEP_FORM_VALUES)                  \
  X(discrete_method, DIFFSAMPLE_DISCRETE_METHOD_VALUES)              \
  X(observation_kind, DIFFSAMPLE_OBSERVATION_KIND_VALUES)            \
  X(mixture_path, DIFFSAMPLE_MIXTURE_PATH_VALUES)                    \
  X(guided_potentials, DIFFSAMPLE_GUIDED_POTENTIALS_VALUES)          \
  X(guided_grid, DIFFSAMPLE_GUIDED_GRID_VALUES)

namespace diffsample::detail {

/// One value of an enum and its name (the name is the enumerator's).
template <class E>
struct enum_entry {
  E value;
  const char* name;
};

/// enum_table<E>::entries: E's values in order; enum_table<E>::count: how many.
template <class E>
struct enum_table;

#define DIFFSAMPLE_ENUM_ENTRY_(T, v, c) enum_entry<T>{T::v, #v},
#define DIFFSAMPLE_ENUM_CASE_(T, v, c) case T::v:
// listed(): a switch over every value with no default, so that -Wswitch (an error here) names any value missing from
// the list.
#define DIFFSAMPLE_ENUM_TABLE_(T, LIST)                                              \
  template <>                                                                        \
  struct enum_table<T> {                                                             \
    static constexpr enum_entry<T> entries[] = {LIST(DIFFSAMPLE_ENUM_ENTRY_)};       \
    static constexpr int count = static_cast<int>(std::size(entries));              \
  };                                                                                 \
  constexpr bool listed(T v) noexcept {                                              \
    switch (v) { LIST(DIFFSAMPLE_ENUM_CASE_) return true; }                          \
    return false;                                                                    \
  }

#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
DIFFSAMPLE_ENUMS(DIFFSAMPLE_ENUM_TABLE_)
#pragma GCC diagnostic pop

#undef DIFFSAMPLE_ENUM_TABLE_
#undef DIFFSAMPLE_ENUM_CASE_
#undef DIFFSAMPLE_ENUM_ENTRY_

/// True when E's values are 0, 1, ..., count - 1 in the listed order.
template <class E>
constexpr bool dense_from_zero() noexcept {
  for (int i = 0; i < enum_table<E>::count; ++i)
    if (static_cast<int>(enum_table<E>::entries[i].value) != i) return false;
  return true;
}
#define DIFFSAMPLE_ENUM_DENSE_(T, LIST) \
  static_assert(dense_from_zero<T>(), #T ": values must run 0, 1, 2, ... in the order listed");
DIFFSAMPLE_ENUMS(DIFFSAMPLE_ENUM_DENSE_)
#undef DIFFSAMPLE_ENUM_DENSE_

/// The name of v ("unknown" for a value outside the list).
template <class E>
constexpr const char* enum_name(E v) noexcept {
  for (const auto& e : enum_table<E>::entries)
    if (e.value == v) return e.name;
  return "unknown";
}

/// The value named `name` (the enumerator's own name), or false.
template <class E>
bool enum_from_name(const std::string& name, E& out) {
  for (const auto& e : enum_table<E>::entries)
    if (name == e.name) {
      out = e.value;
      return true;
    }
  return false;
}

}  // namespace diffsample::detail
