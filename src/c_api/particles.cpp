// The C ABI of the SMC primitives: resampling (ancestors, normalised weights, per-problem reports) and the gather
// of particle states by ancestor.
#include "src/c_api/common.hpp"

using namespace diffsample::c_api;

// ds_resample() hands the caller's report array to the C++ call (it may be device memory): the layouts must agree.
static_assert(sizeof(ds_particle_report) == sizeof(ds::particle_report) &&
              offsetof(ds_particle_report, ess) == offsetof(ds::particle_report, ess) &&
              offsetof(ds_particle_report, log_normaliser_increment) ==
                  offsetof(ds::particle_report, log_normaliser_increment) &&
              offsetof(ds_particle_report, log_sum_exp) == offsetof(ds::particle_report, log_sum_exp) &&
              offsetof(ds_particle_report, nan_count) == offsetof(ds::particle_report, nan_count) &&
              offsetof(ds_particle_report, failed) == offsetof(ds::particle_report, failed) &&
              offsetof(ds_particle_report, resampled) == offsetof(ds::particle_report, resampled));

namespace diffsample::c_api {

#define DS_RESAMPLING_FIELDS(X) X(ess_threshold) X(seed) X(step) X(metropolis_steps)

ds_resampling_options to_c(const resampling_options& from) {
  auto to = zero_struct<ds_resampling_options>();
  DS_RESAMPLING_FIELDS(DS_COPY)
  to.scheme = to_c_enum<ds_resampling_scheme>(from.scheme);
  return to;
}

resampling_options to_cpp(const std::string& what, const ds_resampling_options& from) {
  check_size<ds_resampling_options>(what, from.struct_size);
  resampling_options to;
  DS_RESAMPLING_FIELDS(DS_COPY)
  to.scheme = enum_to_cpp<resampling_scheme>(what + ".scheme", from.scheme);
  return to;
}

}  // namespace diffsample::c_api

namespace {

// ds_resample() and ds_resample_int64(): int32 or int64 ancestors.
template <class Index>
ds_status resample(const float* log_weights, int64_t problems, int64_t particles, const ds_resampling_options* options,
                   Index* ancestors, float* normalised_weights, ds_particle_report* reports, ds_execution exec,
                   void* workspace, size_t workspace_bytes, ds_executor* ran) {
  return guard([&] {
    if (options == nullptr) fail("options: null pointer (initialise it with ds_resampling_options_init())");
    const ds::resampling_options o =
        to_cpp("options", read_struct("options", options, to_c(ds::resampling_options{})));
    ds::particle_outputs outputs;
    if constexpr (sizeof(Index) == 8)
      outputs.ancestors64 = reinterpret_cast<std::int64_t*>(ancestors);
    else
      outputs.ancestors = reinterpret_cast<std::int32_t*>(ancestors);
    outputs.normalised_weights = normalised_weights;
    outputs.reports = reinterpret_cast<ds::particle_report*>(reports);
    set_ran(ran, ds::resample(outputs, problems, particles, log_weights, o, to_cpp(exec), workspace, workspace_bytes));
  });
}

// ds_gather_particles() and ds_gather_particles_int64().
template <class CIndex, class Index>
ds_status gather(const float* states, int64_t problems, int64_t particles, int64_t dim, const CIndex* ancestors,
                 float* out, ds_execution exec, ds_executor* ran) {
  static_assert(sizeof(CIndex) == sizeof(Index));
  return guard([&] {
    set_ran(ran, ds::gather_particles(out, problems, particles, dim, states, reinterpret_cast<const Index*>(ancestors),
                                      to_cpp(exec)));
  });
}

}  // namespace

extern "C" {

ds_status ds_resampling_options_init(ds_resampling_options* options, size_t struct_size) {
  return guard([&] { init_struct(options, struct_size, to_c(ds::resampling_options{})); });
}

ds_status ds_resampling_workspace_bytes(int64_t problems, int64_t particles, ds_resampling_scheme scheme,
                                        size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    return ds::resampling_workspace_bytes(problems, particles, enum_to_cpp<ds::resampling_scheme>("scheme", scheme));
  });
}

ds_status ds_resample(const float* log_weights, int64_t problems, int64_t particles,
                      const ds_resampling_options* options, int32_t* ancestors, float* normalised_weights,
                      ds_particle_report* reports, ds_execution exec, void* workspace, size_t workspace_bytes,
                      ds_executor* ran) {
  return resample(log_weights, problems, particles, options, ancestors, normalised_weights, reports, exec, workspace,
                  workspace_bytes, ran);
}

ds_status ds_resample_int64(const float* log_weights, int64_t problems, int64_t particles,
                            const ds_resampling_options* options, int64_t* ancestors, float* normalised_weights,
                            ds_particle_report* reports, ds_execution exec, void* workspace, size_t workspace_bytes,
                            ds_executor* ran) {
  return resample(log_weights, problems, particles, options, ancestors, normalised_weights, reports, exec, workspace,
                  workspace_bytes, ran);
}

ds_status ds_gather_particles(const float* states, int64_t problems, int64_t particles, int64_t dim,
                              const int32_t* ancestors, float* out, ds_execution exec, ds_executor* ran) {
  return gather<int32_t, std::int32_t>(states, problems, particles, dim, ancestors, out, exec, ran);
}

ds_status ds_gather_particles_int64(const float* states, int64_t problems, int64_t particles, int64_t dim,
                                    const int64_t* ancestors, float* out, ds_execution exec, ds_executor* ran) {
  return gather<int64_t, std::int64_t>(states, problems, particles, dim, ancestors, out, exec, ran);
}

}  // extern "C"
