// The C ABI of the sample metrics: the sliced Wasserstein distance (host, on an executor, asynchronous) and the
// recovered component weights of samples under a mixture or an analytic posterior.
#include "src/c_api/common.hpp"

#include <algorithm>

using namespace diffsample::c_api;

namespace {

// Writes the K component weights of n samples under the reference's components.
template <class Reference>
ds_status component_weights(const Reference* reference, const float* x, int64_t n, double* out) {
  return guard([&] {
    const auto& r = get(reference);
    require_out("out", out);
    // The weights are written over the caller's memory after the run: not over the samples it passed.
    if (n > 0 && n <= ds::limits::max_items / r.dim())
      check_apart({{"x", x, static_cast<std::size_t>(n * r.dim()) * sizeof(float)},
                                  {"out", out, static_cast<std::size_t>(r.components()) * sizeof(double)}});
    const std::vector<double> w = ds::component_weights(r, n, x);
    std::copy(w.begin(), w.end(), out);
  });
}

template <class Reference>
ds_status component_weight_error(const Reference* reference, const float* x, int64_t n, double* out) {
  return write_out("out", out, [&] {
    const auto& r = get(reference);
    // The error is written over the caller's memory after the run: not over the samples it read.
    check_written_apart({{"out", out, sizeof(double)}}, {{"x", x, floats(n, r.dim())}});
    return ds::component_weight_error(r, n, x);
  });
}

}  // namespace

extern "C" {

ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim, int directions,
                                uint64_t seed, int p, double* out) {
  return guard([&] {
    require_out("out", out);
    check_written_apart({{"out", out, sizeof(double)}}, {{"a", a, floats(n_a, dim)}, {"b", b, floats(n_b, dim)}});
    *out = ds::sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p);
  });
}

ds_status ds_sliced_wasserstein_workspace_bytes(int64_t n_a, int64_t n_b, int64_t dim, int directions_per_pass,
                                                ds_executor where, size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    return ds::sliced_wasserstein_workspace_bytes(n_a, n_b, dim, directions_per_pass,
                                                  enum_to_cpp<ds::executor>("where", where));
  });
}

ds_status ds_sliced_wasserstein_on(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim,
                                   int directions, uint64_t seed, int p, ds_execution exec, void* workspace,
                                   size_t workspace_bytes, double* out) {
  return guard([&] {
    require_out("out", out);
    check_written_apart({{"out", out, sizeof(double)}},
                        {{"a", a, floats(n_a, dim)},
                         {"b", b, floats(n_b, dim)},
                         {"workspace", workspace, workspace_bytes}});
    *out = ds::sliced_wasserstein(n_a, n_b, dim, a, b, directions, seed, p, to_cpp(exec), workspace, workspace_bytes);
  });
}

ds_status ds_sliced_wasserstein_async(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t dim,
                                      int directions, uint64_t seed, int p, double* result, ds_execution exec,
                                      void* workspace, size_t workspace_bytes, ds_executor* ran) {
  return guard([&] {
    check_written_apart({ran_span(ran)},
                        {{"a", a, floats(n_a, dim)},
                         {"b", b, floats(n_b, dim)},
                         {"result", result, sizeof(double)},
                         {"workspace", workspace, workspace_bytes}});
    set_ran(ran, ds::sliced_wasserstein_async(result, n_a, n_b, dim, a, b, directions, seed, p, to_cpp(exec), workspace,
                                              workspace_bytes));
  });
}

ds_status ds_component_weights(const ds_mixture* reference, const float* x, int64_t n, double* out) {
  return component_weights(reference, x, n, out);
}

ds_status ds_posterior_component_weights(const ds_posterior* reference, const float* x, int64_t n, double* out) {
  return component_weights(reference, x, n, out);
}

ds_status ds_component_weight_error(const ds_mixture* reference, const float* x, int64_t n, double* out) {
  return component_weight_error(reference, x, n, out);
}

ds_status ds_posterior_component_weight_error(const ds_posterior* reference, const float* x, int64_t n, double* out) {
  return component_weight_error(reference, x, n, out);
}

}  // extern "C"
