// The C ABI of Langevin chains (ULA, MALA, tamed ULA) on a Gaussian mixture.
#include "src/c_api/common.hpp"

using namespace diffsample::c_api;

namespace diffsample::c_api {

#define DS_LANGEVIN_FIELDS(X) X(step_size) X(steps) X(seed) X(first_chain) X(first_step) X(record_every)

constexpr auto langevin_fields = [](auto& to, const auto& from, const std::string& what) {
  DS_LANGEVIN_FIELDS(DS_COPY)
  DS_CONVERT(method) DS_COPY(target.a) DS_COPY(target.s)
};

ds_langevin_options to_c(const ds::langevin_options& from) {
  return to_c_struct<ds_langevin_options>(from, langevin_fields);
}
ds::langevin_options to_cpp(const ds_langevin_options* p) {
  return options_to_cpp<ds::langevin_options>(p, langevin_fields);
}

}  // namespace diffsample::c_api

extern "C" {

DS_CHAIN_OPTIONS(langevin)  // ds_langevin_options_init, ds_langevin_workspace_bytes

ds_status ds_langevin(const ds_mixture* mixture, float* x, int64_t n, const ds_langevin_options* options,
                      float* trajectory, int64_t* accepted, ds_execution exec, void* workspace, size_t workspace_bytes,
                      ds_langevin_report* report) {
  return chain_call<ds::langevin_outputs>(mixture, options, trajectory, [&](const auto& m, const auto& o, auto& out) {
    out.accepted = reinterpret_cast<std::int64_t*>(accepted);
    // The report is written after the run: apart from the chains, the trajectory, the counts and the workspace.
    check_chain_written_apart({{"report", report, sizeof(ds_langevin_report)}}, m, n, o, x, trajectory, out.accepted,
                              workspace, workspace_bytes);
    const ds::langevin_report r = ds::langevin(m, x, out, n, o, to_cpp(exec), workspace, workspace_bytes);
    if (report) *report = ds_langevin_report{to_c(r.ran), r.register_path ? 1 : 0};
  });
}

}  // extern "C"
