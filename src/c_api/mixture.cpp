// The C ABI of Gaussian mixtures: creation, evaluation of log-density, score and denoiser, the denoiser's JVP, and
// exact sampling.
#include "src/c_api/common.hpp"

#include <utility>

using namespace diffsample::c_api;

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
    set_ran(ran, m.evaluate(out, n, x, to_cpp(ch), q, to_cpp(exec)));
  });
}

ds_status ds_mixture_denoiser_jvp(const ds_mixture* mixture, const float* x, const float* v, int64_t n, ds_channel ch,
                                  float* out, ds_execution exec, ds_executor* ran) {
  return guard([&] { set_ran(ran, get(mixture).denoiser_jvp(out, n, x, v, to_cpp(ch), to_cpp(exec))); });
}

ds_status ds_mixture_sample(const ds_mixture* mixture, float* out, int64_t n, ds_channel ch, uint64_t seed,
                            int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return guard([&] {
    set_ran(ran, get(mixture).sample(out, n, to_cpp(ch), seed, labels, first_index, to_cpp(exec)));
  });
}

}  // extern "C"
