// The shared layer of the C ABI (include/diffsample/diffsample.h), used by every file of src/c_api/ (one per domain):
// guard(), which turns each exception into a status code and a per-thread message so that none crosses the ABI;
// the versioned-struct layer (struct_size checks, init and read); enum conversion, range checks and names from the
// one list of values in src/enum_tables.hpp; the handles shared between domains; and the size limits of
// src/limits.hpp, the same as the C++ entry points'.
#pragma once

#include <diffsample/diffsample.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "src/enum_tables.hpp"
#include "src/overlap.hpp"
#include "src/limits.hpp"
#include <diffsample/diffsample.hpp>

namespace ds = diffsample;

struct ds_mixture {
  ds::gaussian_mixture mixture;
};

struct ds_posterior {
  ds::mixture_posterior posterior;
};

// --- enums -------------------------------------------------------------------------------------------------------
// The C enums are 32-bit and their values are the C++ ones (every value of every list in src/enum_tables.hpp), so
// that conversions are plain casts once a value is range-checked.
static_assert(sizeof(ds_status) == 4);
#define DS_C_VALUE_(T, v, c) static_assert(int(ds::T::v) == int(c), #c " must equal diffsample::" #T "::" #v);
#define DS_C_ENUM_(T, C, LIST) \
  static_assert(sizeof(C) == 4, #C " must be 32-bit");  \
  LIST(DS_C_VALUE_)
DIFFSAMPLE_C_ENUMS(DS_C_ENUM_)
#undef DS_C_ENUM_
#undef DS_C_VALUE_

namespace diffsample::c_api {

/// The message of the calling thread's last failed call (ds_last_error()).
inline thread_local std::string last_error;

/// Thrown inside an entry point for a bad argument detected at the C boundary.
[[noreturn]] inline void fail(const std::string& message) { throw invalid_argument(message); }

/// The status of a caught exception, with its message written to `message` (an internal error's message prefixed
/// "internal error: "). Never throws: a message that cannot be stored is left as it was.
inline ds_status status_of(std::exception_ptr e, std::string& message) noexcept {
  ds_status status = DS_INTERNAL;
  const char* what = "unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const invalid_argument& x) {
    status = DS_INVALID_ARGUMENT, what = x.what();
  } catch (const out_of_memory& x) {
    status = DS_OUT_OF_MEMORY, what = x.what();
  } catch (const cuda_error& x) {
    status = DS_CUDA_ERROR, what = x.what();
  } catch (const std::bad_alloc&) {
    status = DS_OUT_OF_MEMORY, what = "host allocation failed (std::bad_alloc)";
  } catch (const std::exception& x) {
    what = x.what();
  } catch (...) {
  }
  // `what` stays valid: `e` owns the exception object.
  try {
    message = status == DS_INTERNAL ? std::string("internal error: ") + what : std::string(what);
  } catch (...) {
  }
  return status;
}

/// Runs an entry point's body: DS_SUCCESS, or the status of the exception it threw with last_error set.
template <class F>
ds_status guard(F&& body) noexcept {
  try {
    body();
    last_error.clear();
    return DS_SUCCESS;
  } catch (...) {
    return status_of(std::current_exception(), last_error);
  }
}

/// ds_particle_report and particle_report have the same layout, so that a caller's report array (possibly device
/// memory) is handed to the C++ calls as it is.
inline constexpr bool same_report_layout =
    sizeof(ds_particle_report) == sizeof(particle_report) &&
    offsetof(ds_particle_report, ess) == offsetof(particle_report, ess) &&
    offsetof(ds_particle_report, log_normaliser_increment) == offsetof(particle_report, log_normaliser_increment) &&
    offsetof(ds_particle_report, log_sum_exp) == offsetof(particle_report, log_sum_exp) &&
    offsetof(ds_particle_report, nan_count) == offsetof(particle_report, nan_count) &&
    offsetof(ds_particle_report, failed) == offsetof(particle_report, failed) &&
    offsetof(ds_particle_report, resampled) == offsetof(particle_report, resampled);

/// The object behind a handle; a null handle fails naming the argument.
template <class Handle>
auto& get(Handle* h, const char* name) {
  if (h == nullptr) fail(std::string(name) + ": null handle");
  return *h;
}
inline const gaussian_mixture& get(const ds_mixture* m, const char* name = "mixture") {
  return get<const ds_mixture>(m, name).mixture;
}
inline const mixture_posterior& get(const ds_posterior* p, const char* name = "posterior") {
  return get<const ds_posterior>(p, name).posterior;
}

template <class T>
void require_out(const char* name, T* p) {
  if (p == nullptr) fail(std::string(name) + ": null output pointer");
}

/// One host output of a C entry point that the C layer itself writes (its name, first byte and size in bytes).
struct host_span {
  const char* name;
  const void* ptr;
  std::size_t bytes;
};

/// Fails naming both when two of `spans` share a byte (an absent one, null or empty, shares none): the C layer copies
/// its outputs one after the other, so overlapping ones would overwrite each other or the inputs. The same message as
/// the library's checks of its own buffers ("b: must not overlap a (...)"), with their comparison (the header-only
/// detail::bytes_overlap), so that src/c_api/ needs no symbol the library does not export.
inline void check_apart(std::initializer_list<host_span> spans) {
  for (auto a = spans.begin(); a != spans.end(); ++a)
    for (auto b = a + 1; b != spans.end(); ++b) {
      if (diffsample::detail::bytes_overlap(a->ptr, a->bytes, b->ptr, b->bytes))
        fail(std::string(b->name) + ": must not overlap " + a->name + " (" + b->name + " " + std::to_string(b->bytes) +
             " bytes, " + a->name + " " + std::to_string(a->bytes) + " bytes, sharing memory)");
    }
}

/// The bytes of a caller's array of the product of @p counts elements of @p element_bytes each, for check_apart() and
/// check_written_apart(): 0 (no check) for counts the call refuses with its own check, which runs before anything is
/// written (a count below 1 leaves the array empty; a product beyond a 64-bit byte count is refused by the call).
inline std::size_t array_bytes(std::size_t element_bytes, std::initializer_list<std::int64_t> counts) {
  const std::int64_t most = std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(element_bytes);
  std::int64_t product = 1;
  for (std::int64_t c : counts) {
    if (c < 1 || product > most / c) return 0;
    product *= c;
  }
  return static_cast<std::size_t>(product) * element_bytes;
}

/// array_bytes() of n points of `width` floats each.
inline std::size_t floats(std::int64_t n, std::int64_t width) { return array_bytes(sizeof(float), {n, width}); }

/// Refuses, before the call runs, a value the C layer writes after the call (@p written: the executor that ran, a
/// report struct, a host result) that shares memory with another of them or with one of @p arrays, the arrays the
/// call is handed (its outputs, the inputs it reads, its workspace as given): a report inside an output would be
/// overwritten by the results, or overwrite one, and one inside an input or the workspace would change the caller's
/// data (on the CUDA executor the call returns while its kernels still read and write them). check_apart()'s words,
/// naming both ("ran: must not overlap out (...)"); the arrays' overlaps among themselves are the call's own checks,
/// in its words.
inline void check_written_apart(std::initializer_list<host_span> written, std::initializer_list<host_span> arrays) {
  check_apart(written);
  for (const host_span& a : arrays)
    for (const host_span& w : written) check_apart({a, w});
}

/// The executor that ran, as check_written_apart() takes it (null: not asked for, so absent).
inline host_span ran_span(const ds_executor* ran) { return {"ran", ran, sizeof(ds_executor)}; }

/// The records of a chain run's trajectory: total_steps / record_every (total_steps = steps, or steps x measurements
/// for SMS), 0 without a recording and for counts the call refuses (a product beyond 64 bits).
inline std::int64_t trajectory_records(const langevin_options& o) {
  return o.record_every > 0 ? o.steps / o.record_every : 0;
}
inline std::int64_t trajectory_records(const diffusion_options& o) {
  const std::int64_t per_step =
      o.sampler == diffusion_sampler::sequential_measurements ? std::max<std::int64_t>(o.measurements, 1) : 1;
  if (o.record_every <= 0 || o.steps > std::numeric_limits<std::int64_t>::max() / per_step) return 0;
  return o.steps * per_step / o.record_every;
}

/// A chain sampler's values written after the run (@p written: its report, an MPI call's accepted total) apart from
/// its arrays (check_written_apart()): x (n x d floats), the trajectory (trajectory_records() x n x d floats), the
/// accepted counts (n int64, Langevin) and the workspace.
template <class Options>
void check_chain_written_apart(std::initializer_list<host_span> written, const gaussian_mixture& m, std::int64_t n,
                               const Options& o, const float* x, const float* trajectory,
                               const std::int64_t* accepted, const void* workspace, std::size_t workspace_bytes) {
  check_written_apart(written,
                      {{"x", x, floats(n, m.dim())},
                       {"trajectory", trajectory, array_bytes(sizeof(float), {trajectory_records(o), n, m.dim()})},
                       {"accepted", accepted, array_bytes(sizeof(std::int64_t), {n})},
                       {"workspace", workspace, workspace_bytes}});
}

/// A guided run's values written after the run (@p written: its report, an MPI call's result) apart from its outputs
/// (B problems of @p rows particles of dimension d each: all of them, or an MPI rank's share; @p steps transitions)
/// and its workspace (check_written_apart()). A count beyond its limit is refused by the run's own checks: steps is
/// clamped to it so that steps + 1 stays in range.
inline void check_guided_written_apart(std::initializer_list<host_span> written, const guided_outputs& out,
                                       std::int64_t B, std::int64_t rows, std::int64_t d, std::int64_t steps,
                                       const void* workspace, std::size_t workspace_bytes) {
  const std::int64_t K = std::min(steps, limits::max_steps);
  check_written_apart(written,
                      {{"outputs.particles", out.particles, array_bytes(sizeof(float), {B, rows, d})},
                       {"outputs.log_weights", out.log_weights, array_bytes(sizeof(float), {B, rows})},
                       {"outputs.samples", out.samples, array_bytes(sizeof(float), {B, rows, d})},
                       {"outputs.log_normaliser", out.log_normaliser, array_bytes(sizeof(double), {B})},
                       {"outputs.ess_trace", out.ess_trace, array_bytes(sizeof(float), {B, K + 1})},
                       {"outputs.resample_count", out.resample_count, array_bytes(sizeof(std::int32_t), {B})},
                       {"workspace", workspace, workspace_bytes}});
}

/// Refuses a count that sizes a caller's array unless it is one of @p allowed (its length as the other arguments fix
/// it, described by @p expected), before the array is read: a wrong count must not read past the array's end.
inline void check_count(const std::string& name, std::int64_t count, std::initializer_list<std::int64_t> allowed,
                        const std::string& expected) {
  for (std::int64_t a : allowed)
    if (count == a) return;
  fail(name + ": expected " + expected + ", got " + std::to_string(count) + " (checked before the array is read)");
}

/// `count` values from a caller's array (null only when count is 0). A count beyond the host's limit is refused as
/// the count (`name`_count), and one the host cannot hold names the array.
inline std::vector<double> copy_array(const std::string& name, const double* p, std::int64_t count) {
  if (count < 0) fail(name + ": negative count " + std::to_string(count));
  constexpr std::int64_t most = limits::max_host_bytes / std::int64_t(sizeof(double));
  if (count > most) fail(limits::above(name + "_count", std::to_string(count), most, "values of host memory"));
  if (count > 0 && p == nullptr) fail(name + ": null pointer for " + std::to_string(count) + " values");
  if (count == 0) return {};
  try {
    return std::vector<double>(p, p + count);
  } catch (const std::bad_alloc&) {
    throw out_of_memory(name + ": cannot copy " + std::to_string(count) + " values (" +
                        std::to_string(count * std::int64_t(sizeof(double))) + " bytes) to host memory");
  }
}

/// One field of diffsample::observation_operator's messages ("observation.indices") and the C argument that carries
/// it ("problems.mask"), where the factory was given entries offset.. of the C array (a row of a B x d_y one): a
/// message about the whole field gets @p part after the name ("problems.mask (row 1): ..."), one about an entry the
/// entry's index in the C array ("observation.diagonal[2]" becomes "problems.mask_gains[5]").
struct renamed_field {
  const char* cpp;
  std::string c;
  std::string part = {};
  std::int64_t offset = 0;
};

/// make()'s value (an observation_operator built from a C caller's arrays), with a refusal's message naming the C
/// argument instead of the C++ factory's field: the C caller passed problems.mask, not observation.indices.
template <class Make>
auto with_c_names(std::initializer_list<renamed_field> fields, Make make) {
  try {
    return make();
  } catch (const invalid_argument& e) {
    const std::string message = e.what();
    for (const renamed_field& f : fields) {
      const std::size_t n = std::strlen(f.cpp);
      if (message.compare(0, n, f.cpp) != 0 || message.size() == n) continue;
      if (message[n] == ':') throw invalid_argument(f.c + f.part + message.substr(n));
      char* end = nullptr;
      const long long i = message[n] == '[' ? std::strtoll(message.c_str() + n + 1, &end, 10) : 0;
      if (end != nullptr && *end == ']') {
        const std::size_t close = std::size_t(end - message.c_str());
        throw invalid_argument(f.c + "[" + std::to_string(i + f.offset) + "]" + message.substr(close + 1));
      }
    }
    throw;
  }
}

/// Checks the shape of a mixture before any of its arrays is read (the C++ constructor checks the rest).
inline void check_mixture_shape(std::int64_t components, std::int64_t dim) {
  limits::check("components", components, 1, limits::max_components);
  limits::check("dim", dim, 1, limits::max_dim);
}

/// A trajectory buffer is needed whenever options.record_every asks for one.
inline void check_trajectory(std::int64_t record_every, const float* trajectory) {
  if (record_every > 0 && trajectory == nullptr)
    fail("trajectory: null, but options.record_every is " + std::to_string(record_every) +
         " (give a buffer, or set record_every to 0)");
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

/// A C enum value as the C++ value, range-checked as an int against the C++ enum's list.
template <class Cpp, class C>
Cpp enum_to_cpp(const std::string& what, const C& value) {
  const int v = enum_int(value);
  if (v < 0 || v >= detail::enum_table<Cpp>::count) fail(what + ": invalid value " + std::to_string(v));
  return static_cast<Cpp>(v);
}

/// A C++ enum value as the C value.
template <class C, class Cpp>
C to_c_enum(Cpp value) noexcept {
  return static_cast<C>(static_cast<int>(value));
}

/// The name of a C enum value ("unknown" outside the list).
template <class Cpp, class C>
const char* c_enum_name(const C& value) noexcept {
  const int v = enum_int(value);
  if (v < 0 || v >= detail::enum_table<Cpp>::count) return "unknown";
  return detail::enum_name(static_cast<Cpp>(v));
}

/// A name parsed by the C++ parser into a C enum.
template <class C, class Parse>
ds_status parse_enum(const char* name, C* out, Parse parse) {
  return guard([&] {
    if (name == nullptr) fail("name: null pointer");
    require_out("out", out);
    *out = to_c_enum<C>(parse(std::string(name)));
  });
}

inline executor to_cpp(const ds_executor& e) { return enum_to_cpp<executor>("exec.kind", e); }
inline ds_executor to_c(executor e) { return to_c_enum<ds_executor>(e); }
inline execution to_cpp(ds_execution e) { return execution{to_cpp(e.kind), e.stream}; }
inline channel to_cpp(ds_channel c) { return channel{c.a, c.s}; }

/// Runs f(), then writes its value to *out (a null out fails after f's own checks: for a pure query).
template <class T, class F>
ds_status write_out(const char* name, T* out, F f) {
  return guard([&] {
    const T value = f();
    require_out(name, out);
    *out = value;
  });
}

/// Components and dimension of the mixture or posterior that object() returns, each written when asked for.
template <class Object>
ds_status write_shape(Object object, std::int64_t* components, std::int64_t* dim) {
  return guard([&] {
    const auto& m = object();
    if (components) *components = m.components();
    if (dim) *dim = m.dim();
  });
}

/// Writes the executor that ran, when the caller asked for it.
inline void set_ran(ds_executor* ran, executor r) {
  if (ran) *ran = to_c(r);
}

// --- versioned structs ---------------------------------------------------------------------------------------
// A caller's struct_size must be the size of a layout this library knows. A later version of a struct appends
// fields after the last byte of the previous layout and adds the previous size to known_sizes; read_struct() copies
// the caller's bytes over the defaults, so that the new fields of an older caller keep their defaults.
template <class T>
struct layout;
#define DS_LAYOUT(T, ...)                                                   \
  template <>                                                               \
  struct layout<T> {                                                        \
    static constexpr const char* name = #T;                                 \
    static constexpr std::size_t known_sizes[] = {__VA_ARGS__ sizeof(T)};   \
  };
DS_LAYOUT(ds_langevin_options)
DS_LAYOUT(ds_schedule)
DS_LAYOUT(ds_diffusion_options)
DS_LAYOUT(ds_resampling_options)
DS_LAYOUT(ds_guided_outputs)
DS_LAYOUT(ds_discrete_options)
DS_LAYOUT(ds_evaluate_options)
// ds_guided_report2: the first layout ended with final_moves; the second appends ess_threshold.
DS_LAYOUT(ds_guided_report2, offsetof(ds_guided_report2, ess_threshold), )
// ds_guided_problems: the first layout ended with mask_gains; the second appends the SVD operators.
DS_LAYOUT(ds_guided_problems, offsetof(ds_guided_problems, svd_count), )
// ds_guided_options: the first layout ended with seed; the second appends dps_step and the diffpir and skrock
// settings; the third the ddrm and dcps settings; the fourth the SMC potentials. The fifth (grid) sits in the fourth's
// tail padding, so its size is the fourth's (checked below): an older caller's init writes the grid's default. The
// sixth appends start_correction after the fourth / fifth layout's last byte, the seventh skrock_lipschitz, the
// eighth dcps_bridge_variance. The ninth (dcps_absolute_step) sits in the eighth's tail padding, so its size is the
// eighth's (checked below), as the fifth's is the fourth's. The tenth appends operator_path after the ninth's last
// byte, the eleventh final_moves and final_move_step after the tenth's, the twelfth multistep_kernel after the
// eleventh's, the thirteenth final_move_curvature after the twelfth's.
DS_LAYOUT(ds_guided_options, offsetof(ds_guided_options, dps_step), offsetof(ds_guided_options, ddrm_eta),
          offsetof(ds_guided_options, potentials), offsetof(ds_guided_options, start_correction),
          offsetof(ds_guided_options, skrock_lipschitz), offsetof(ds_guided_options, dcps_bridge_variance),
          offsetof(ds_guided_options, operator_path), offsetof(ds_guided_options, final_moves),
          offsetof(ds_guided_options, multistep_kernel), offsetof(ds_guided_options, final_move_curvature), )
#undef DS_LAYOUT
static_assert(offsetof(ds_guided_options, grid) == offsetof(ds_guided_options, potentials) + sizeof(int) &&
                  offsetof(ds_guided_options, start_correction) ==
                      (offsetof(ds_guided_options, potentials) + sizeof(int) + 7) / 8 * 8,
              "ds_guided_options: the grid must fit in the fourth layout's tail padding, and the sixth layout start "
              "after the fourth's last byte");
static_assert(offsetof(ds_guided_options, dcps_absolute_step) == offsetof(ds_guided_options, dcps_bridge_variance) +
                                                                     sizeof(int) &&
                  offsetof(ds_guided_options, operator_path) == offsetof(ds_guided_options, dcps_bridge_variance) + 8,
              "ds_guided_options: dcps_absolute_step must fit in the eighth layout's tail padding, and the tenth "
              "layout start after the ninth's last byte");

template <class T>
void check_size(const std::string& what, std::size_t struct_size) {
  for (std::size_t known : layout<T>::known_sizes)
    if (struct_size == known) return;
  fail(what + ".struct_size: " + std::to_string(struct_size) + " is not the size of a " + layout<T>::name +
       " layout this library knows (expected " + std::to_string(sizeof(T)) +
       "): initialise the struct with its init function and sizeof, from a header of the same version as the library");
}

/// Writes the defaults into the first struct_size bytes of *p (the caller's layout) and sets struct_size.
template <class T>
void init_struct(T* p, std::size_t struct_size, const T& defaults) {
  if (p == nullptr) fail(std::string(layout<T>::name) + ": null pointer");
  check_size<T>(layout<T>::name, struct_size);
  T value = defaults;
  value.struct_size = struct_size;
  std::memcpy(static_cast<void*>(p), &value, struct_size);
}

/// The caller's struct as this library's layout: the caller's bytes over the defaults.
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

/// A struct of the C ABI with every field zero but struct_size.
template <class T>
T zero_struct() noexcept {
  T value{};
  value.struct_size = sizeof value;
  return value;
}

// Field lists copy the fields that have one type on both sides with DS_COPY (`to.f = from.f`); flags (int in C,
// bool in C++) with DS_COPY_FLAG; enums and nested versioned structs with DS_CONVERT (convert(), below); all in both
// directions, so that one list of a struct's fields serves its to_c() and its to_cpp().
#define DS_COPY(f) to.f = from.f;
#define DS_COPY_FLAG(f) to.f = (from.f != 0);
#define DS_CONVERT(f) convert(to.f, from.f, what, #f);

// --- conversions shared between domains (src/c_api/diffusion.cpp, particles.cpp) --------------------------------
ds_schedule to_c(const noise_schedule& from);
noise_schedule to_cpp(const std::string& what, const ds_schedule& from);
/// Checks the schedule's struct_size, then refuses what.times_count unless 0 or steps + 1, and a steps (named
/// steps_name) outside 1..limits::max_steps with times, before the times are read.
void check_times_count(const std::string& what, const ds_schedule& s, const std::string& steps_name,
                       std::int64_t steps);
ds_resampling_options to_c(const resampling_options& from);
resampling_options to_cpp(const std::string& what, const ds_resampling_options& from);
// src/c_api/diffusion.cpp and langevin.cpp, also used by the sampling plans (src/c_api/plan.cpp); the options'
// readings exported for the C ABI of libdiffsample_mpi (ds_mpi_langevin, ds_mpi_diffusion), which compares them over
// the ranks. Throw invalid_argument.
ds_diffusion_options to_c(const diffusion_options& from);
DIFFSAMPLE_API diffusion_options to_cpp(const ds_diffusion_options* p);
ds_langevin_options to_c(const langevin_options& from);
DIFFSAMPLE_API langevin_options to_cpp(const ds_langevin_options* p);
// src/c_api/guided.cpp, also used by the guided plans.
ds_guided_options to_c(const guided_options& from);
guided_options to_cpp(const ds_guided_options* p);
guided_problems to_cpp(const ds_guided_problems* p, std::int64_t d_x);
guided_outputs to_cpp(const ds_guided_outputs* p);

/// An options struct's init function (ds_<prefix>_options_init): the C++ options' defaults in the caller's layout.
template <class Cpp, class C>
ds_status init_options(C* options, std::size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(Cpp{})); });
}

/// ds_<NAME>_options_init and ds_<NAME>_workspace_bytes of a chain sampler on a Gaussian mixture (NAME langevin or
/// diffusion), one definition for both samplers: the C++ defaults in the caller's layout, and the C++ size query's
/// answer for the mixture, n and the caller's options. The C header declares each function; a definition that
/// drifted from its declaration would not compile.
#define DS_CHAIN_OPTIONS(NAME)                                                                                      \
  ds_status ds_##NAME##_options_init(ds_##NAME##_options* options, size_t struct_size) {                          \
    return init_options<ds::NAME##_options>(options, struct_size);                                                \
  }                                                                                                               \
  ds_status ds_##NAME##_workspace_bytes(const ds_mixture* mixture, int64_t n, const ds_##NAME##_options* options, \
                                        size_t* bytes) {                                                          \
    return write_out("bytes", bytes,                                                                              \
                     [&] { return ds::NAME##_workspace_bytes(get(mixture), n, to_cpp(options)); });               \
  }

/// The body of a chain sampler's entry point (ds_langevin, ds_diffusion): the mixture, then the options read over
/// their defaults, then the trajectory buffer checked against options.record_every and set in the outputs, then
/// @p run(mixture, options, outputs), which sets the sampler's other outputs and makes the C++ call.
template <class Outputs, class C, class Run>
ds_status chain_call(const ds_mixture* mixture, const C* options, float* trajectory, Run run) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = to_cpp(options);
    check_trajectory(o.record_every, trajectory);
    Outputs outputs;
    outputs.trajectory = trajectory;
    run(m, o, outputs);
  });
}

template <class T, class = void>
struct is_versioned : std::false_type {};
template <class T>
struct is_versioned<T, std::void_t<decltype(std::declval<T&>().struct_size)>> : std::true_type {};

/// One field of a struct from its other form (DS_CONVERT): an enum (C++ enums are scoped, C enums are not; a C value
/// is range-checked, the message naming what.field) or a nested versioned struct (to_c(), or to_cpp() naming
/// what.field).
template <class To, class From>
void convert(To& to, const From& from, const std::string& what, const char* field) {
  if constexpr (std::is_enum_v<To> && !std::is_convertible_v<To, int>)
    to = enum_to_cpp<To>(what + "." + field, from);
  else if constexpr (std::is_enum_v<To>)
    to = to_c_enum<To>(from);
  else if constexpr (is_versioned<From>::value)
    to = to_cpp(what + "." + field, from);
  else
    to = to_c(from);
}

/// A versioned C struct from its C++ form through @p fields(to, from, what) (the struct's one field list).
template <class C, class Cpp, class Fields>
C to_c_struct(const Cpp& from, Fields fields) {
  auto to = zero_struct<C>();
  fields(to, from, std::string());
  return to;
}

/// The C++ form of a caller's C struct through the same @p fields (@p what names the argument in messages).
template <class Cpp, class C, class Fields>
Cpp to_cpp_struct(const std::string& what, const C& from, Fields fields) {
  Cpp to;
  fields(to, from, what);
  return to;
}

/// The C++ form of an entry point's `options` argument: the caller's layout read over the defaults (to_c(Cpp{})),
/// then converted through @p fields.
template <class Cpp, class C, class Fields>
Cpp options_to_cpp(const C* p, Fields fields) {
  return to_cpp_struct<Cpp>("options", read_struct("options", p, to_c(Cpp{})), fields);
}

// ds_guided_sample()'s reading and checks of its arguments (src/c_api/guided.cpp), exported for the C ABI of
// libdiffsample_mpi (ds_mpi_guided_sample), which takes the same structs. Throws invalid_argument.
struct guided_arguments {
  guided_problems problems;
  guided_options options;
  guided_outputs outputs;
};
DIFFSAMPLE_API guided_arguments guided_arguments_from_c(const ds_guided_problems* problems,
                                                        const ds_guided_options* options,
                                                        const ds_guided_outputs* outputs, std::int64_t d_x);
// ds_guided_sample2()'s report (src/c_api/guided.cpp), also written by ds_mpi_guided_sample2: the caller's
// struct_size, checked (0 for a null report; throws invalid_argument naming report.struct_size), and the report
// written in the layout that size names.
DIFFSAMPLE_API std::size_t guided_report2_size(const ds_guided_report2* report);
DIFFSAMPLE_API void write_guided_report2(const guided_report& from, ds_guided_report2* to, std::size_t struct_size);

}  // namespace diffsample::c_api
