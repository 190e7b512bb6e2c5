// The C ABI of the ask/tell sampling plans (include/diffsample/plan.hpp): handles over diffsample::sampling_plan,
// and the versioned request struct the library fills.
#include "src/c_api/common.hpp"

#include <diffsample/plan.hpp>

using namespace diffsample::c_api;

struct ds_sampling_plan {
  ds::sampling_plan plan;
};

namespace diffsample::c_api {
// ds_plan_request: the first layout ended with vector; the second appends log_density.
template <>
struct layout<ds_plan_request> {
  static constexpr const char* name = "ds_plan_request";
  static constexpr std::size_t known_sizes[] = {offsetof(ds_plan_request, log_density), sizeof(ds_plan_request)};
};
}  // namespace diffsample::c_api

namespace {

// Writes r into the caller's request in the caller's layout.
// The caller's struct_size, checked against the request @p r it is to receive: returns it.
std::size_t request_size(const ds::plan_request& r, const ds_plan_request* out) {
  require_out("request", out);
  std::size_t struct_size = 0;
  std::memcpy(&struct_size, static_cast<const void*>(out), sizeof struct_size);
  check_size<ds_plan_request>("request", struct_size);
  if (r.log_density != nullptr && struct_size < sizeof(ds_plan_request))
    fail("request.struct_size: " + std::to_string(struct_size) + " is the first ds_plan_request layout, which has "
         "no log_density, and this plan asks for the model's log-density (MALA): use sizeof(ds_plan_request) from "
         "a header of the library's version");
  return struct_size;
}

void write_request(const ds::plan_request& r, ds_plan_request* out) {
  const std::size_t struct_size = request_size(r, out);
  ds_plan_request c{};
  c.struct_size = struct_size;
  c.index = r.index;
  c.points = r.points;
  c.rows = r.rows;
  c.dim = r.dim;
  c.at = ds_channel{r.at.a, r.at.s};
  c.time = r.time;
  c.output = to_c_enum<ds_model_output>(r.output);
  c.answer = r.answer;
  c.vector = r.vector;
  c.log_density = r.log_density;
  std::memcpy(static_cast<void*>(out), &c, struct_size);
}

template <class Make>
ds_status create(ds_sampling_plan** out, Make make) {
  return guard([&] {
    require_out("out", out);
    *out = new ds_sampling_plan{make()};  // assigned only once made: on failure *out is left unchanged
  });
}

}  // namespace

extern "C" {

ds_status ds_sampling_plan_create_diffusion(int64_t n, int64_t dim, const ds_diffusion_options* options,
                                            ds_model_output output, ds_execution exec, ds_sampling_plan** out) {
  return create(out, [&] {
    const ds::diffusion_options o = to_cpp(options);
    return ds::sampling_plan::diffusion(n, dim, o, enum_to_cpp<ds::model_output>("output", output), to_cpp(exec));
  });
}

ds_status ds_sampling_plan_create_langevin(int64_t n, int64_t dim, const ds_langevin_options* options,
                                           ds_model_output output, ds_execution exec, ds_sampling_plan** out) {
  return create(out, [&] {
    const ds::langevin_options o = to_cpp(options);
    return ds::sampling_plan::langevin(n, dim, o, enum_to_cpp<ds::model_output>("output", output), to_cpp(exec));
  });
}

ds_status ds_sampling_plan_create_guided(int64_t dim, const ds_guided_problems* problems,
                                         const ds_guided_options* options, ds_model_output output, ds_execution exec,
                                         ds_sampling_plan** out) {
  return create(out, [&] {
    if (!ds::limits::within(dim, 1, ds::limits::max_dim)) fail(ds::limits::message("dim", dim, 1, ds::limits::max_dim));
    const ds::guided_problems pr = to_cpp(problems, dim);
    const ds::guided_options o = to_cpp(options);
    return ds::sampling_plan::guided(dim, pr, o, enum_to_cpp<ds::model_output>("output", output), to_cpp(exec));
  });
}

void ds_sampling_plan_destroy(ds_sampling_plan* plan) { delete plan; }

ds_status ds_sampling_plan_get_info(const ds_sampling_plan* plan, int64_t* asks, int64_t* position,
                                    ds_executor* where) {
  return guard([&] {
    const auto& p = get(plan, "plan").plan;
    if (asks) *asks = p.asks();
    if (position) *position = p.position();
    if (where) *where = to_c(p.where());
  });
}

ds_status ds_sampling_plan_ask(const ds_sampling_plan* plan, ds_plan_request* request) {
  return guard([&] {
    const auto& p = get(plan, "plan").plan;
    require_out("request", request);
    // The struct first: ask() marks its position as asked, and a refused call must leave the plan as it was (the
    // next tell() after a refused ask() was refused as "not asked").
    if (!p.done()) (void)request_size(p.request(p.position()), request);
    write_request(p.ask(), request);
  });
}

ds_status ds_sampling_plan_request(const ds_sampling_plan* plan, int64_t k, ds_plan_request* request) {
  return guard([&] {
    const auto& p = get(plan, "plan").plan;
    require_out("request", request);
    write_request(p.request(k), request);
  });
}

ds_status ds_sampling_plan_tell(ds_sampling_plan* plan, ds_execution exec) {
  return guard([&] { get(plan, "plan").plan.tell(to_cpp(exec)); });
}

ds_status ds_sampling_plan_reset(ds_sampling_plan* plan, const float* initial, ds_execution exec) {
  return guard([&] { get(plan, "plan").plan.reset(initial, to_cpp(exec)); });
}

ds_status ds_sampling_plan_write_outputs(ds_sampling_plan* plan, const ds_guided_outputs* outputs,
                                         ds_execution exec) {
  return guard([&] { get(plan, "plan").plan.write_outputs(to_cpp(outputs), to_cpp(exec)); });
}

ds_status ds_sampling_plan_samples(const ds_sampling_plan* plan, float** samples) {
  return write_out("samples", samples, [&] { return get(plan, "plan").plan.samples(); });
}

ds_status ds_sampling_plan_position_counter(const ds_sampling_plan* plan, const int64_t** counter) {
  return write_out("counter", counter,
                   [&] { return reinterpret_cast<const int64_t*>(get(plan, "plan").plan.position_counter()); });
}

ds_status ds_sampling_plan_accepted(const ds_sampling_plan* plan, const int64_t** accepted) {
  return write_out("accepted", accepted,
                   [&] { return reinterpret_cast<const int64_t*>(get(plan, "plan").plan.accepted()); });
}

ds_status ds_sampling_plan_report(const ds_sampling_plan* plan, ds_guided_report2* report) {
  return guard([&] {
    const auto& p = get(plan, "plan").plan;
    require_out("report", report);
    const std::size_t size = guided_report2_size(report);
    const ds::guided_report r = p.report();
    write_guided_report2(r, report, size);
  });
}

}  // extern "C"
