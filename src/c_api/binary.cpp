// The C ABI of binary data: Bernoulli mixtures (evaluation and exact sampling) and the discrete samplers on them
// (discrete Langevin and discrete walk-jump).
#include "src/c_api/common.hpp"
#include "src/option_readers.hpp"

#include <utility>

using namespace diffsample::c_api;

struct ds_bernoulli_mixture {
  ds::bernoulli_mixture mixture;
};

namespace {

const ds::bernoulli_mixture& get(const ds_bernoulli_mixture* m) {
  return diffsample::c_api::get<const ds_bernoulli_mixture>(m, "mixture").mixture;
}

ds_discrete_options discrete_defaults() {
  const ds::discrete_walk_jump_options from;
  auto to = zero_struct<ds_discrete_options>();
  to.method = to_c_enum<ds_discrete_method>(from.method);
  to.alpha = from.alpha;
  to.eta = from.eta;
  to.steps = from.steps;
  to.measurements = from.measurements;
  return to;
}

ds_discrete_options read_discrete(const ds_discrete_options* p) {
  ds_discrete_options o = read_struct("options", p, discrete_defaults());
  enum_to_cpp<ds::discrete_method>("options.method", o.method);
  return o;
}

// The fields both discrete samplers take.
#define DS_DISCRETE_FIELDS(X) X(alpha) X(eta) X(steps) X(seed) X(first_chain)

// Either discrete sampler's options (T) with the fields both take.
template <class T>
T to_discrete(const ds_discrete_options& from) {
  T to;
  DS_DISCRETE_FIELDS(DS_COPY)
  to.method = enum_to_cpp<ds::discrete_method>("options.method", from.method);
  return to;
}

// The one options struct of both discrete samplers: a field the chosen one does not read must keep its default
// (README, "Options a method does not read"), refused as every call refuses one (detail::refuse_unread, header-only,
// so that the C sources still link against the public library alone).
void check_unread(const char* name, std::int64_t value, std::int64_t fallback, const char* method) {
  if (value != fallback) ds::detail::refuse_unread(name, method, std::to_string(value), std::to_string(fallback));
}

ds::discrete_langevin_options to_langevin(const ds_discrete_options& from) {
  check_unread("options.measurements", from.measurements, discrete_defaults().measurements, "discrete_langevin");
  check_unread("options.mean", from.mean, 0, "discrete_langevin");
  auto to = to_discrete<ds::discrete_langevin_options>(from);
  DS_COPY_FLAG(start_uniform)
  to.first_step = from.first_step;
  return to;
}

ds::discrete_walk_jump_options to_walk_jump(const ds_discrete_options& from) {
  if (from.first_step != 0)
    fail("options.first_step: walk-jump runs each chain whole in one call, got " + std::to_string(from.first_step));
  check_unread("options.start_uniform", from.start_uniform, 0, "discrete_walk_jump");
  auto to = to_discrete<ds::discrete_walk_jump_options>(from);
  DS_COPY_FLAG(mean)
  to.measurements = from.measurements;
  return to;
}

}  // namespace

extern "C" {

ds_status ds_bernoulli_mixture_create(int64_t dim, int64_t components, const double* weights,
                                      const double* probabilities, ds_bernoulli_mixture** out) {
  return guard([&] {
    require_out("out", out);
    check_mixture_shape(components, dim);
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
    const auto q = enum_to_cpp<ds::quantity>("what", what);
    check_written_apart({ran_span(ran)}, {{"out", out, floats(n, q == ds::quantity::log_density ? 1 : m.dim())},
                                          {"y", y, floats(n, m.dim())}});
    set_ran(ran, m.evaluate(out, n, y, alpha, q, to_cpp(exec)));
  });
}

ds_status ds_bernoulli_mixture_sample(const ds_bernoulli_mixture* mixture, float* out, int64_t n, double alpha,
                                      uint64_t seed, int32_t* labels, uint64_t first_index, ds_execution exec,
                                      ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    check_written_apart({ran_span(ran)}, {{"out", out, floats(n, m.dim())},
                                          {"labels", labels, array_bytes(sizeof(std::int32_t), {n})}});
    set_ran(ran, m.sample(out, n, alpha, seed, labels, first_index, to_cpp(exec)));
  });
}

ds_status ds_discrete_options_init(ds_discrete_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, discrete_defaults()); });
}

ds_status ds_discrete_workspace_bytes(const ds_bernoulli_mixture* mixture, int64_t n, const ds_discrete_options* options,
                                      int walk_jump, size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    const auto& m = get(mixture);
    const auto o = read_discrete(options);
    return walk_jump ? ds::discrete_walk_jump_workspace_bytes(m, n, to_walk_jump(o))
                     : ds::discrete_langevin_workspace_bytes(m, n, to_langevin(o));
  });
}

ds_status ds_discrete_langevin(const ds_bernoulli_mixture* mixture, float* y, int64_t n,
                               const ds_discrete_options* options, int64_t* accepted, ds_execution exec,
                               void* workspace, size_t workspace_bytes, ds_executor* ran) {
  return guard([&] {
    const auto& m = get(mixture);
    const auto o = read_discrete(options);
    check_written_apart({ran_span(ran)}, {{"y", y, floats(n, m.dim())},
                                          {"accepted", accepted, array_bytes(sizeof(std::int64_t), {n})},
                                          {"workspace", workspace, workspace_bytes}});
    set_ran(ran, ds::discrete_langevin(m, y, {reinterpret_cast<std::int64_t*>(accepted)}, n, to_langevin(o),
                                       to_cpp(exec), workspace, workspace_bytes));
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
    check_written_apart({ran_span(ran)}, {{"x", x, floats(n, m.dim())},
                                          {"noisy", noisy, floats(n, m.dim())},
                                          {"accepted", accepted, array_bytes(sizeof(std::int64_t), {n})},
                                          {"workspace", workspace, workspace_bytes}});
    set_ran(ran, ds::discrete_walk_jump(m, x, outputs, n, to_walk_jump(o), to_cpp(exec), workspace, workspace_bytes));
  });
}

}  // extern "C"
