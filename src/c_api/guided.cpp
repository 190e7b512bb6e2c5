// The C ABI of guided posterior sampling for linear inverse problems (SMC, DPS, PiGDM, DiffPIR, SKROCK, TMPD, DDRM,
// DCPS) under a Gaussian-mixture prior.
#include "src/c_api/common.hpp"

#include <algorithm>
#include <utility>

using namespace diffsample::c_api;

namespace diffsample::c_api {

#define DS_GUIDED_FIELDS(X)                                                                                     \
  X(steps) X(eta) X(particles) X(potential_spread) X(guidance_scale) X(seed) X(diffpir_zeta) X(diffpir_lambda) \
  X(skrock_stages) X(skrock_eta) X(skrock_step_fraction) X(ddrm_eta) X(ddrm_eta_b) X(dcps_blocks)             \
  X(dcps_langevin_steps) X(dcps_langevin_step) X(dcps_gradient_steps) X(dcps_learning_rate) X(skrock_lipschitz) \
  X(final_moves) X(final_move_step) X(final_move_curvature)
#define DS_GUIDED_FLAGS(X) \
  X(ddim) X(final_resample) X(start_correction) X(dcps_bridge_variance) X(dcps_absolute_step) X(multistep_kernel)

#define DS_GUIDED_CONVERTED(X) X(sampler) X(dps_step) X(potentials) X(grid) X(schedule) X(resampling) X(operator_path)

constexpr auto guided_fields = [](auto& to, const auto& from, const std::string& what) {
  DS_GUIDED_FIELDS(DS_COPY)
  DS_GUIDED_FLAGS(DS_COPY_FLAG)
  DS_GUIDED_CONVERTED(DS_CONVERT)
};

ds_guided_options to_c(const ds::guided_options& from) { return to_c_struct<ds_guided_options>(from, guided_fields); }

ds::guided_options to_cpp(const ds_guided_options* p) {
  const ds_guided_options c = read_struct("options", p, to_c(ds::guided_options{}));
  check_times_count("options.schedule", c.schedule, "options.steps", c.steps);
  return to_cpp_struct<ds::guided_options>("options", c, guided_fields);
}

ds_guided_problems default_problems() {
  const ds::guided_problems d;
  auto p = zero_struct<ds_guided_problems>();
  p.problems = d.problems;
  p.d_y = d.d_y;
  return p;
}

ds::guided_problems to_cpp(const ds_guided_problems* p, std::int64_t d_x) {
  const ds_guided_problems g = read_struct("problems", p, default_problems());
  // B and d_y size the copy of y, so they are checked here, against the C++ limits (guided_sample() checks the rest).
  ds::limits::check("problems.problems", g.problems, 1, ds::limits::max_guided_problems);
  ds::limits::check("problems.d_y", g.d_y, 1, ds::limits::max_guided_d_y);
  ds::guided_problems r;
  r.problems = g.problems;
  r.d_y = g.d_y;
  // The counts are checked against the lengths B, d_y and d_x fix before their arrays are read.
  const std::int64_t one = g.d_y * d_x;
  if (g.A_count != 0)
    check_count("problems.A_count", g.A_count, {one, g.problems * one},
                "d_y x d_x = " + std::to_string(one) + " or B x d_y x d_x = " + std::to_string(g.problems * one) +
                    " (or 0 with mask or SVD operators)");
  check_count("problems.sigma_y_count", g.sigma_y_count, {1, g.problems}, "1 or B = " + std::to_string(g.problems));
  r.A = copy_array("problems.A", g.A, g.A_count);
  if (g.mask != nullptr || g.mask_count != 0) {
    if (g.A != nullptr) fail("problems.mask: give either A or mask, not both");
    if (g.mask_count != g.d_y && g.mask_count != g.problems * g.d_y)
      fail("problems.mask_count: expected d_y = " + std::to_string(g.d_y) + " or B x d_y = " +
           std::to_string(g.problems * g.d_y) + ", got " + std::to_string(g.mask_count));
    if (g.mask == nullptr) fail("problems.mask: null pointer for " + std::to_string(g.mask_count) + " indices");
    const std::vector<double> gains = copy_array("problems.mask_gains", g.mask_gains, g.mask_gains ? g.mask_count : 0);
    for (std::int64_t c = 0; c < g.mask_count / g.d_y; ++c) {
      std::vector<std::int64_t> rows(g.mask + c * g.d_y, g.mask + (c + 1) * g.d_y);
      std::vector<double> row_gains;
      if (!gains.empty()) row_gains.assign(gains.begin() + c * g.d_y, gains.begin() + (c + 1) * g.d_y);
      // A row's refusal names the C fields (and the row, one per problem).
      const std::string row = g.mask_count == g.d_y ? "" : " (row " + std::to_string(c) + ")";
      r.operators.push_back(with_c_names({{"observation.indices", "problems.mask", row, c * g.d_y},
                                          {"observation.diagonal", "problems.mask_gains", row, c * g.d_y}},
                                         [&] {
                                           return ds::observation_operator::mask(d_x, std::move(rows),
                                                                                 std::move(row_gains));
                                         }));
    }
  }
  // The fields of an operator form the problems do not use must keep their defaults (a caller who set the gains or
  // the factors but not the mask or svd_count would otherwise get another problem than the one described).
  if (g.mask == nullptr && g.mask_count == 0 && g.mask_gains != nullptr)
    fail("problems.mask_gains: given without a mask (problems.mask is null, mask_count 0)");
  if (g.svd_count == 0) {
    const std::pair<const char*, bool> given[] = {{"problems.svd_rank", g.svd_rank != 0},
                                                  {"problems.svd_U", g.svd_U != nullptr},
                                                  {"problems.svd_S", g.svd_S != nullptr},
                                                  {"problems.svd_V", g.svd_V != nullptr}};
    for (const auto& [name, set] : given)
      if (set) fail(std::string(name) + ": given, but problems.svd_count is 0 (no SVD operator)");
  }
  if (g.svd_count != 0) {
    if (g.A != nullptr || g.mask != nullptr) fail("problems.svd_count: give one of A, mask and the SVD operators");
    if (g.svd_count != 1 && g.svd_count != g.problems)
      fail("problems.svd_count: expected 0, 1 or B = " + std::to_string(g.problems) + ", got " +
           std::to_string(g.svd_count));
    const std::int64_t r_max = std::min<std::int64_t>(g.d_y, d_x), rank = g.svd_rank;
    if (rank < 1 || rank > r_max)
      fail("problems.svd_rank: must be in [1, min(d_y, d_x) = " + std::to_string(r_max) + "], got " +
           std::to_string(rank));
    const std::vector<double> U = copy_array("problems.svd_U", g.svd_U, g.svd_count * g.d_y * rank);
    const std::vector<double> S = copy_array("problems.svd_S", g.svd_S, g.svd_count * rank);
    const std::vector<double> V = copy_array("problems.svd_V", g.svd_V, g.svd_count * d_x * rank);
    auto part = [](const std::vector<double>& v, std::int64_t c, std::int64_t size) {
      return std::vector<double>(v.begin() + c * size, v.begin() + (c + 1) * size);
    };
    for (std::int64_t c = 0; c < g.svd_count; ++c) {
      const std::string op = g.svd_count == 1 ? "" : " (operator " + std::to_string(c) + ")";
      r.operators.push_back(with_c_names(
          {{"observation.U", "problems.svd_U", op, c * g.d_y * rank},
           {"observation.singular_values", "problems.svd_S", op, c * rank},
           {"observation.V", "problems.svd_V", op, c * d_x * rank}},
          [&] {
            return ds::observation_operator::svd(g.d_y, d_x, part(U, c, g.d_y * rank), part(S, c, rank),
                                                 part(V, c, d_x * rank));
          }));
    }
  }
  r.y = copy_array("problems.y", g.y, g.problems * g.d_y);
  r.sigma_y = copy_array("problems.sigma_y", g.sigma_y, g.sigma_y_count);
  return r;
}

}  // namespace diffsample::c_api

namespace {

#define DS_GUIDED_OUTPUTS(X) X(particles) X(log_weights) X(samples) X(log_normaliser) X(ess_trace) X(resample_count)

}  // namespace

namespace diffsample::c_api {
ds::guided_outputs to_cpp(const ds_guided_outputs* p) {
  const ds_guided_outputs from = read_struct("outputs", p, zero_struct<ds_guided_outputs>());
  ds::guided_outputs to;
  DS_GUIDED_OUTPUTS(DS_COPY)
  return to;
}
}  // namespace diffsample::c_api

namespace diffsample::c_api {

std::size_t guided_report2_size(const ds_guided_report2* report) {
  if (report == nullptr) return 0;
  std::size_t size = 0;
  std::memcpy(&size, static_cast<const void*>(report), sizeof size);
  check_size<ds_guided_report2>("report", size);
  return size;
}

guided_arguments guided_arguments_from_c(const ds_guided_problems* problems, const ds_guided_options* options,
                                         const ds_guided_outputs* outputs, std::int64_t d_x) {
  return guided_arguments{::to_cpp(problems, d_x), ::to_cpp(options), ::to_cpp(outputs)};
}

}  // namespace diffsample::c_api

namespace {

// The body of ds_guided_sample() and ds_guided_sample2(): the arguments read and checked in order, then
// @p report_span() (the caller's report: its name, address and the bytes the C layer writes, its layout checked),
// then the report apart from the run's outputs and workspace (check_written_apart(): it is written after the run),
// then the run. The problems' arrays are copied here, so the run never reads them.
template <class ReportSpan>
ds::guided_report guided_run(const ds_mixture* prior, const ds_guided_problems* problems,
                             const ds_guided_options* options, const ds_guided_outputs* outputs, ds_execution exec,
                             void* workspace, size_t workspace_bytes, ReportSpan report_span) {
  const auto& m = get(prior, "prior");
  const auto g = to_cpp(problems, m.dim());
  const auto o = to_cpp(options);
  const auto out = to_cpp(outputs);
  const ds::execution e = to_cpp(exec);
  check_guided_written_apart({report_span()}, out, g.problems, o.particles, m.dim(), o.steps, workspace,
                             workspace_bytes);
  return ds::guided_sample(m, out, g, o, e, workspace, workspace_bytes);
}

// The full report in this library's layout of ds_guided_report2.
ds_guided_report2 to_c_report(const ds::guided_report& r) {
  auto c = zero_struct<ds_guided_report2>();
  c.ran = to_c(r.ran);
  c.launches = r.launches;
  c.operator_path = to_c_enum<ds_mixture_path>(r.operator_path);
  c.potentials = to_c_enum<ds_guided_potentials>(r.potentials);
  c.start_correction = r.start_correction ? 1 : 0;
  c.multistep_kernel = r.multistep_kernel ? 1 : 0;
  c.final_moves = r.final_moves;
  c.ess_threshold = r.ess_threshold;
  return c;
}

}  // namespace

namespace diffsample::c_api {
void write_guided_report2(const guided_report& from, ds_guided_report2* to, std::size_t struct_size) {
  ds_guided_report2 c = to_c_report(from);
  c.struct_size = struct_size;
  std::memcpy(static_cast<void*>(to), &c, struct_size);
}
}  // namespace diffsample::c_api

extern "C" {

ds_status ds_guided_problems_init(ds_guided_problems* problems, size_t struct_size) {
  return guard([&] { init_struct(problems, struct_size, default_problems()); });
}

ds_status ds_guided_options_init(ds_guided_options* options, size_t struct_size) {
  return init_options<ds::guided_options>(options, struct_size);
}

ds_status ds_guided_outputs_init(ds_guided_outputs* outputs, size_t struct_size) {
  return guard([&] { init_struct(outputs, struct_size, ds_guided_outputs{}); });
}

ds_status ds_guided_workspace_bytes(const ds_mixture* prior, const ds_guided_problems* problems,
                                    const ds_guided_options* options, size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    const auto& m = get(prior, "prior");
    return ds::guided_workspace_bytes(m, to_cpp(problems, m.dim()), to_cpp(options));
  });
}

ds_status ds_guided_workspace_bytes_on(const ds_mixture* prior, const ds_guided_problems* problems,
                                       const ds_guided_options* options, ds_execution exec, size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    const auto& m = get(prior, "prior");
    return ds::guided_workspace_bytes(m, to_cpp(problems, m.dim()), to_cpp(options), to_cpp(exec));
  });
}

ds_status ds_guided_times(const ds_mixture* prior, const ds_guided_problems* problems,
                          const ds_guided_options* options, double* times, int64_t count) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    const auto g = to_cpp(problems, m.dim());
    const auto o = to_cpp(options);
    const std::vector<double> t = ds::guided_times(m, g, o);
    if (count != static_cast<int64_t>(t.size()))
      fail("count: expected options.steps + 1 = " + std::to_string(t.size()) + ", got " + std::to_string(count));
    require_out("times", times);
    std::copy(t.begin(), t.end(), times);
  });
}

ds_status ds_guided_sample(const ds_mixture* prior, const ds_guided_problems* problems,
                           const ds_guided_options* options, const ds_guided_outputs* outputs, ds_execution exec,
                           void* workspace, size_t workspace_bytes, ds_guided_report* report) {
  return guard([&] {
    const ds::guided_report r = guided_run(prior, problems, options, outputs, exec, workspace, workspace_bytes, [&] {
      return host_span{"report", report, sizeof(ds_guided_report)};
    });
    if (report) *report = ds_guided_report{to_c(r.ran), r.launches};
  });
}

ds_status ds_guided_report2_init(ds_guided_report2* report, size_t struct_size) {
  return guard([&] { init_struct(report, struct_size, to_c_report(ds::guided_report{})); });
}

ds_status ds_guided_sample2(const ds_mixture* prior, const ds_guided_problems* problems,
                            const ds_guided_options* options, const ds_guided_outputs* outputs, ds_execution exec,
                            void* workspace, size_t workspace_bytes, ds_guided_report2* report) {
  return guard([&] {
    std::size_t report_size = 0;
    // The report's layout is checked with the other arguments, before the run.
    auto check_report = [&] {
      report_size = guided_report2_size(report);
      return host_span{"report", report, report_size};
    };
    const ds::guided_report r =
        guided_run(prior, problems, options, outputs, exec, workspace, workspace_bytes, check_report);
    if (report != nullptr) write_guided_report2(r, report, report_size);
  });
}

}  // extern "C"
