// The C ABI's library-wide calls: version, CUDA availability, the last error, and the names of every enum (generated
// from the one list of values in src/enum_tables.hpp).
#include "src/c_api/common.hpp"

using namespace diffsample::c_api;

namespace {
thread_local std::string unavailable_reason;
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

int ds_cpu_threads(void) { return ds::cpu_threads(); }

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

// ds_<c>_name() and ds_parse_<c>() for the C enum ds_<c> and the C++ enum <cpp>.
#define DS_ENUM_NAME(c, cpp) \
  const char* ds_##c##_name(ds_##c value) { return c_enum_name<ds::cpp>(value); }
#define DS_ENUM_NAMES(c, cpp)                                                                         \
  DS_ENUM_NAME(c, cpp)                                                                                \
  ds_status ds_parse_##c(const char* name, ds_##c* out) {                                             \
    return parse_enum(name, out, [](const std::string& n) { return ds::parse_##cpp(n); });            \
  }
DS_ENUM_NAMES(executor, executor)
DS_ENUM_NAMES(langevin_method, langevin_method)
DS_ENUM_NAMES(schedule_kind, schedule_kind)
DS_ENUM_NAMES(time_grid, time_grid)
DS_ENUM_NAMES(diffusion_sampler, diffusion_sampler)
DS_ENUM_NAMES(model_output, model_output)
DS_ENUM_NAMES(resampling_scheme, resampling_scheme)
DS_ENUM_NAMES(guided_sampler, guided_sampler)
DS_ENUM_NAMES(dps_step, dps_step_form)
DS_ENUM_NAMES(discrete_method, discrete_method)
DS_ENUM_NAMES(guided_potentials, guided_potentials)
DS_ENUM_NAMES(guided_grid, guided_grid)
DS_ENUM_NAMES(mixture_path, mixture_path)
#undef DS_ENUM_NAMES
#undef DS_ENUM_NAME

}  // extern "C"
