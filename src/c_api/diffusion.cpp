// The C ABI of noise schedules and reverse diffusion: the whole-run sampler and the stepwise plan driven by the
// caller's model.
#include "src/c_api/common.hpp"
#include "src/schedule_defaults.hpp"

using namespace diffsample::c_api;

struct ds_diffusion_plan {
  ds::diffusion_plan plan;
  std::int64_t n, dim;
  ds_model_output output;
};

// --- schedules ---------------------------------------------------------------------------------------------------
namespace diffsample::c_api {

// ds_schedule's fields but its arrays, both directions.
constexpr auto schedule_fields = [](auto& to, const auto& from, const std::string& what) {
  DS_COPY(beta_min) DS_COPY(beta_max) DS_COPY(cosine_offset) DS_COPY(sigma_min) DS_COPY(sigma_max) DS_COPY(t_start)
  DS_COPY(t_end) DS_CONVERT(kind) DS_CONVERT(grid)
};

ds_schedule to_c(const noise_schedule& from) {
  // The factories' defaults hold no arrays: alpha_bar and times stay null.
  return to_c_struct<ds_schedule>(from, schedule_fields);
}

void check_times_count(const std::string& what, const ds_schedule& s, const std::string& steps_name,
                       std::int64_t steps) {
  check_size<ds_schedule>(what, s.struct_size);
  if (s.times_count == 0) return;
  // Every call that reads a schedule takes 1..max_steps steps: one outside them is refused here, naming it, since no
  // times_count can be right for it and the times must not be read.
  limits::check(steps_name, steps, 1, limits::max_steps);
  check_count(what + ".times_count", s.times_count, {steps + 1},
              "steps + 1 = " + std::to_string(steps + 1) + " times for " + std::to_string(steps) + " steps");
}

noise_schedule to_cpp(const std::string& what, const ds_schedule& from) {
  check_size<ds_schedule>(what, from.struct_size);
  noise_schedule to = to_cpp_struct<noise_schedule>(what, from, schedule_fields);
  to.alpha_bar = copy_array(what + ".alpha_bar", from.alpha_bar, from.alpha_bar_count);
  to.times = copy_array(what + ".times", from.times, from.times_count);
  return to;
}

}  // namespace diffsample::c_api

namespace diffsample::c_api {

// --- reverse diffusion -------------------------------------------------------------------------------------------
#define DS_DIFFUSION_FIELDS(X) X(steps) X(eta) X(sigma) X(step_size) X(measurements) X(seed) X(first_chain) X(record_every)
#define DS_DIFFUSION_FLAGS(X) X(final_denoise) X(draw_initial)

constexpr auto diffusion_fields = [](auto& to, const auto& from, const std::string& what) {
  DS_DIFFUSION_FIELDS(DS_COPY)
  DS_DIFFUSION_FLAGS(DS_COPY_FLAG)
  DS_CONVERT(sampler) DS_CONVERT(schedule)
};

ds_diffusion_options to_c(const ds::diffusion_options& from) {
  return to_c_struct<ds_diffusion_options>(from, diffusion_fields);
}
ds::diffusion_options to_cpp(const ds_diffusion_options* p) {
  const ds_diffusion_options c = read_struct("options", p, to_c(ds::diffusion_options{}));
  check_times_count("options.schedule", c.schedule, "options.steps", c.steps);
  return to_cpp_struct<ds::diffusion_options>("options", c, diffusion_fields);
}

}  // namespace diffsample::c_api

namespace {

// A plan call that takes the state and the model's output, both required.
template <class Call>
ds_status plan_call(ds_diffusion_plan* plan, float* x, const float* model, Call call) {
  return guard([&] {
    auto& p = get(plan, "plan");
    if (x == nullptr) fail("x: null pointer");
    if (model == nullptr) fail("model: null pointer");
    call(p.plan, x, model);
  });
}

}  // namespace

extern "C" {

ds_status ds_schedule_init(ds_schedule* schedule, size_t struct_size, ds_schedule_kind kind) {
  return guard([&] {
    const ds::noise_schedule d = ds::detail::default_schedule(enum_to_cpp<ds::schedule_kind>("kind", kind));
    init_struct(schedule, struct_size, to_c(d));
  });
}

ds_status ds_schedule_points(const ds_schedule* schedule, int64_t steps, ds_schedule_point* out) {
  return guard([&] {
    if (schedule == nullptr) fail("schedule: null pointer (initialise it with ds_schedule_init())");
    check_times_count("schedule", *schedule, "steps", steps);
    const ds::noise_schedule s = to_cpp("schedule", *schedule);
    require_out("out", out);
    const std::vector<ds::schedule_point> points = s.points(steps);
    for (std::size_t i = 0; i < points.size(); ++i)
      out[i] = ds_schedule_point{points[i].t, points[i].a, points[i].s, points[i].da_dt, points[i].ds_dt};
  });
}

DS_CHAIN_OPTIONS(diffusion)  // ds_diffusion_options_init, ds_diffusion_workspace_bytes

ds_status ds_diffusion(const ds_mixture* mixture, float* x, int64_t n, const ds_diffusion_options* options,
                       float* trajectory, ds_execution exec, void* workspace, size_t workspace_bytes,
                       ds_diffusion_report* report) {
  return chain_call<ds::diffusion_outputs>(mixture, options, trajectory, [&](const auto& m, const auto& o, auto& out) {
    // The report is written after the run: apart from the chains, the trajectory and the workspace.
    check_chain_written_apart({{"report", report, sizeof(ds_diffusion_report)}}, m, n, o, x, trajectory, nullptr,
                              workspace, workspace_bytes);
    const ds::diffusion_report r = ds::diffusion(m, x, out, n, o, to_cpp(exec), workspace, workspace_bytes);
    if (report) *report = ds_diffusion_report{to_c(r.ran), r.register_path ? 1 : 0, r.total_steps};
  });
}

ds_status ds_diffusion_sample(const ds_mixture* mixture, float* x, int64_t n, const ds_diffusion_options* options,
                              float* trajectory, ds_execution exec, void* workspace, size_t workspace_bytes,
                              ds_diffusion_report* report) {
  return ds_diffusion(mixture, x, n, options, trajectory, exec, workspace, workspace_bytes, report);
}

ds_status ds_diffusion_plan_create(int64_t n, int64_t dim, const ds_diffusion_options* options, ds_model_output output,
                                   ds_execution exec, ds_diffusion_plan** out) {
  return guard([&] {
    require_out("out", out);
    const auto o = to_cpp(options);
    const auto model = enum_to_cpp<ds::model_output>("output", output);
    *out = new ds_diffusion_plan{ds::diffusion_plan(n, dim, o, model, to_cpp(exec)), n, dim, output};
  });
}

void ds_diffusion_plan_destroy(ds_diffusion_plan* plan) { delete plan; }

ds_status ds_diffusion_plan_get_info(const ds_diffusion_plan* plan, ds_diffusion_plan_info* info) {
  return guard([&] {
    const auto& p = get(plan, "plan");
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
    const auto& p = get(plan, "plan");
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
    const auto& p = get(plan, "plan");
    require_out("counter", counter);
    *counter = reinterpret_cast<const int64_t*>(p.plan.step_counter());
  });
}

ds_status ds_diffusion_plan_reset_on(ds_diffusion_plan* plan, float* x, ds_execution exec) {
  return guard([&] {
    auto& p = get(plan, "plan");
    p.plan.reset(x, to_cpp(exec));  // x may be null where nothing is written to it (diffusion_plan::reset)
  });
}

ds_status ds_diffusion_plan_step_on(ds_diffusion_plan* plan, float* x, const float* model, ds_execution exec) {
  return plan_call(plan, x, model, [&](ds::diffusion_plan& p, float* s, const float* m) { p.step(s, m, to_cpp(exec)); });
}

ds_status ds_diffusion_plan_finish_on(ds_diffusion_plan* plan, float* x, const float* model, ds_execution exec) {
  return plan_call(plan, x, model,
                   [&](ds::diffusion_plan& p, float* s, const float* m) { p.finish(s, m, to_cpp(exec)); });
}

// The raw-stream forms before 0.4.0 (deprecated): the automatic executor on the caller's stream.
ds_status ds_diffusion_plan_reset(ds_diffusion_plan* plan, float* x, struct CUstream_st* stream) {
  return ds_diffusion_plan_reset_on(plan, x, ds_execution{DS_EXECUTOR_AUTOMATIC, stream});
}

ds_status ds_diffusion_plan_step(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream) {
  return ds_diffusion_plan_step_on(plan, x, model, ds_execution{DS_EXECUTOR_AUTOMATIC, stream});
}

ds_status ds_diffusion_plan_finish(ds_diffusion_plan* plan, float* x, const float* model, struct CUstream_st* stream) {
  return ds_diffusion_plan_finish_on(plan, x, model, ds_execution{DS_EXECUTOR_AUTOMATIC, stream});
}

}  // extern "C"
