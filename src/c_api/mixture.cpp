// The C ABI of Gaussian mixtures: creation, evaluation of log-density, score and denoiser, the denoiser's JVP, and
// exact sampling.
#include "src/c_api/common.hpp"

#include <utility>

using namespace diffsample::c_api;

namespace {

// Runs f() (an evaluate_report) as an entry point's body and writes what ran: the executor and the path, each when
// the caller asked for it.
template <class F>
ds_status evaluate_call(ds_executor* ran, ds_mixture_path* path_ran, F f) {
  return guard([&] {
    const ds::evaluate_report r = f();
    set_ran(ran, r.ran);
    if (path_ran) *path_ran = to_c_enum<ds_mixture_path>(r.path);
  });
}

// The mixture calls' reports apart from their arrays (check_written_apart(): ran and path_ran are written after the
// call): out (n x width floats), the inputs x and v (n x d floats), labels (n int32 of ds_mixture_sample) and the
// workspace of ds_mixture_evaluate_with.
void check_reports_apart(std::initializer_list<host_span> arrays, const ds_executor* ran,
                         const ds_mixture_path* path_ran = nullptr) {
  check_written_apart({ran_span(ran), {"path_ran", path_ran, sizeof(ds_mixture_path)}}, arrays);
}

// The floats per point of `what` (1 for the log-density, dim for the score and the denoiser).
std::int64_t width_of(const ds::gaussian_mixture& m, ds::quantity what) {
  return what == ds::quantity::log_density ? 1 : m.dim();
}

}  // namespace

extern "C" {

ds_status ds_mixture_create(int64_t dim, int64_t components, const double* weights, const double* means,
                            const double* variances, int64_t variances_count, ds_mixture** out) {
  return guard([&] {
    require_out("out", out);
    check_mixture_shape(components, dim);
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
    // grid x grid weights (or none: equal weights), checked before they are read.
    ds::limits::check("grid", grid, 1, ds::limits::max_grid);
    if (weights_count != 0)
      check_count("weights_count", weights_count, {std::int64_t(grid) * grid},
                  "grid x grid = " + std::to_string(std::int64_t(grid) * grid) + " (or 0 for equal weights)");
    auto w = copy_array("weights", weights, weights_count);
    *out = new ds_mixture{ds::grid_mixture(dim, grid, spacing, variance, std::move(w))};
  });
}

void ds_mixture_destroy(ds_mixture* mixture) { delete mixture; }

ds_status ds_mixture_shape(const ds_mixture* mixture, int64_t* components, int64_t* dim) {
  return write_shape([&]() -> const auto& { return get(mixture); }, components, dim);
}

ds_status ds_mixture_evaluate(const ds_mixture* mixture, ds_quantity what, const float* x, int64_t n, ds_channel ch,
                              float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto q = enum_to_cpp<ds::quantity>("what", what);
    check_reports_apart({{"out", out, floats(n, width_of(m, q))}, {"x", x, floats(n, m.dim())}}, ran);
    set_ran(ran, m.evaluate(out, n, x, to_cpp(ch), q, to_cpp(exec)));
  });
}

ds_status ds_mixture_denoiser_jvp(const ds_mixture* mixture, const float* x, const float* v, int64_t n, ds_channel ch,
                                  float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    check_reports_apart({{"out", out, floats(n, m.dim())}, {"x", x, floats(n, m.dim())}, {"v", v, floats(n, m.dim())}},
                        ran);
    set_ran(ran, m.denoiser_jvp(out, n, x, v, to_cpp(ch), to_cpp(exec)));
  });
}

namespace {

// diffsample::evaluate_options as the C struct, and back (NULL: the defaults).
ds_evaluate_options to_c(const ds::evaluate_options& o) {
  ds_evaluate_options c = zero_struct<ds_evaluate_options>();
  c.path = to_c_enum<ds_mixture_path>(o.path);
  c.allow_tf32 = o.allow_tf32 ? 1 : 0;
  c.component_chunk = o.component_chunk;
  c.point_block = o.point_block;
  return c;
}

ds::evaluate_options to_cpp(const ds_evaluate_options* options) {
  if (options == nullptr) return {};
  const ds_evaluate_options c = read_struct("options", options, to_c(ds::evaluate_options{}));
  ds::evaluate_options o;
  o.path = enum_to_cpp<ds::mixture_path>("options.path", c.path);
  if (c.allow_tf32 != 0 && c.allow_tf32 != 1)
    fail("options.allow_tf32: must be 0 or 1, got " + std::to_string(c.allow_tf32));
  o.allow_tf32 = c.allow_tf32 != 0;
  o.component_chunk = c.component_chunk;
  o.point_block = c.point_block;
  return o;
}

}  // namespace

ds_status ds_evaluate_options_init(ds_evaluate_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::evaluate_options{})); });
}

ds_status ds_mixture_evaluate_with(const ds_mixture* mixture, float* out, int64_t n, const float* x, ds_channel ch,
                                   ds_quantity what, const ds_evaluate_options* options, ds_execution exec,
                                   void* workspace, size_t workspace_bytes, ds_executor* ran,
                                   ds_mixture_path* path_ran) {
  return evaluate_call(ran, path_ran, [&] {
    const auto& m = get(mixture);
    const auto q = enum_to_cpp<ds::quantity>("what", what);
    check_reports_apart({{"out", out, floats(n, width_of(m, q))},
                         {"x", x, floats(n, m.dim())},
                         {"workspace", workspace, workspace_bytes}},
                        ran, path_ran);
    return m.evaluate(out, n, x, to_cpp(ch), q, to_cpp(options), to_cpp(exec), workspace, workspace_bytes);
  });
}

ds_status ds_mixture_evaluate_workspace_bytes(const ds_mixture* mixture, int64_t n, ds_quantity what,
                                              const ds_evaluate_options* options, ds_execution exec, size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    const auto& m = get(mixture);
    return m.evaluate_workspace_bytes(n, enum_to_cpp<ds::quantity>("what", what), to_cpp(options), to_cpp(exec));
  });
}

ds_status ds_mixture_denoiser_jvp_with(const ds_mixture* mixture, float* out, int64_t n, const float* x,
                                       const float* v, ds_channel ch, const ds_evaluate_options* options,
                                       ds_execution exec, ds_executor* ran, ds_mixture_path* path_ran) {
  return evaluate_call(ran, path_ran, [&] {
    const auto& m = get(mixture);
    check_reports_apart({{"out", out, floats(n, m.dim())}, {"x", x, floats(n, m.dim())}, {"v", v, floats(n, m.dim())}},
                        ran, path_ran);
    return m.denoiser_jvp(out, n, x, v, to_cpp(ch), to_cpp(options), to_cpp(exec));
  });
}

ds_status ds_mixture_chosen_path(const ds_mixture* mixture, int64_t n, ds_quantity what,
                                 const ds_evaluate_options* options, ds_executor where, ds_mixture_path* out) {
  return write_out("out", out, [&] {
    const auto& m = get(mixture);
    const auto q = enum_to_cpp<ds::quantity>("what", what);
    return to_c_enum<ds_mixture_path>(m.chosen_path(n, q, to_cpp(options), enum_to_cpp<ds::executor>("where", where)));
  });
}

ds_status ds_mixture_prepare_gemm(const ds_mixture* mixture, ds_executor where) {
  return guard([&] {
    const auto& m = get(mixture);
    m.prepare_gemm(enum_to_cpp<ds::executor>("where", where));
  });
}

ds_status ds_mixture_sample(const ds_mixture* mixture, float* out, int64_t n, ds_channel ch, uint64_t seed,
                            int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    check_reports_apart({{"out", out, floats(n, m.dim())}, {"labels", labels, array_bytes(sizeof(std::int32_t), {n})}},
                        ran);
    set_ran(ran, m.sample(out, n, to_cpp(ch), seed, labels, first_index, to_cpp(exec)));
  });
}

}  // extern "C"
