// The C ABI (include/diffsample/diffsample.h) over the C++ API. Every entry point runs its body inside guard(),
// which turns each exception into a status code and a per-thread message, so that none crosses the ABI.
#include <diffsample/diffsample.h>

#include <cstdint>
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

// The C enums are 32-bit and their values are the C++ ones, so that conversions are plain casts.
static_assert(sizeof(ds_status) == 4 && sizeof(ds_executor) == 4 && sizeof(ds_quantity) == 4 &&
              sizeof(ds_langevin_method) == 4);
static_assert(int(ds::executor::automatic) == DS_EXECUTOR_AUTOMATIC && int(ds::executor::cuda) == DS_EXECUTOR_CUDA &&
              int(ds::executor::cpu) == DS_EXECUTOR_CPU);
static_assert(int(ds::quantity::log_density) == DS_LOG_DENSITY && int(ds::quantity::score) == DS_SCORE &&
              int(ds::quantity::denoiser) == DS_DENOISER);
static_assert(int(ds::langevin_method::ula) == DS_ULA && int(ds::langevin_method::mala) == DS_MALA &&
              int(ds::langevin_method::tamed_ula) == DS_TAMED_ULA);

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

const ds::gaussian_mixture& get(const ds_mixture* m) {
  if (m == nullptr) fail("mixture: null handle");
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

// Enum values from C are switched on as ints: a caller may pass any 32-bit value.
ds::executor to_cpp(ds_executor e) {
  switch (static_cast<int>(e)) {
    case DS_EXECUTOR_AUTOMATIC: return ds::executor::automatic;
    case DS_EXECUTOR_CUDA: return ds::executor::cuda;
    case DS_EXECUTOR_CPU: return ds::executor::cpu;
  }
  fail("exec.kind: invalid executor value " + std::to_string(static_cast<int>(e)));
}

ds_executor to_c(ds::executor e) { return static_cast<ds_executor>(static_cast<int>(e)); }

ds::execution to_cpp(ds_execution e) { return ds::execution{to_cpp(e.kind), e.stream}; }

ds::channel to_cpp(ds_channel c) { return ds::channel{c.a, c.s}; }

ds::langevin_options to_cpp(const ds_langevin_options* o) {
  if (o == nullptr) fail("options: null pointer (use ds_langevin_options_default())");
  ds::langevin_options r;
  switch (static_cast<int>(o->method)) {
    case DS_ULA: r.method = ds::langevin_method::ula; break;
    case DS_MALA: r.method = ds::langevin_method::mala; break;
    case DS_TAMED_ULA: r.method = ds::langevin_method::tamed_ula; break;
    default: fail("options.method: invalid value " + std::to_string(static_cast<int>(o->method)));
  }
  r.step_size = o->step_size;
  r.steps = o->steps;
  r.target = to_cpp(o->target);
  r.seed = o->seed;
  r.first_chain = o->first_chain;
  r.first_step = o->first_step;
  r.record_every = o->record_every;
  return r;
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
  switch (static_cast<int>(status)) {
    case DS_SUCCESS: return "success";
    case DS_INVALID_ARGUMENT: return "invalid_argument";
    case DS_OUT_OF_MEMORY: return "out_of_memory";
    case DS_CUDA_ERROR: return "cuda_error";
    case DS_INTERNAL: return "internal";
  }
  return "unknown";
}

const char* ds_executor_name(ds_executor executor) {
  switch (static_cast<int>(executor)) {
    case DS_EXECUTOR_AUTOMATIC:
    case DS_EXECUTOR_CUDA:
    case DS_EXECUTOR_CPU: return ds::to_string(static_cast<ds::executor>(static_cast<int>(executor)));
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
    const int q = static_cast<int>(what);
    if (q != DS_LOG_DENSITY && q != DS_SCORE && q != DS_DENOISER)
      fail("what: invalid quantity value " + std::to_string(static_cast<int>(what)));
    const ds::executor r =
        m.evaluate(static_cast<ds::quantity>(static_cast<int>(what)), x, n, to_cpp(ch), out, to_cpp(exec));
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

ds_langevin_options ds_langevin_options_default(void) {
  const ds::langevin_options d;
  ds_langevin_options o;
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

ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t d, int directions,
                                uint64_t seed, int p, double* out) {
  return guard([&] {
    require_out("out", out);
    *out = ds::sliced_wasserstein(a, n_a, b, n_b, d, directions, seed, p);
  });
}

}  // extern "C"
