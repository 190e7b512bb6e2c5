// The C ABI of the SMC primitives: resampling (ancestors, normalised weights, per-problem reports) and the gather
// of particle states by ancestor.
#include "src/c_api/common.hpp"

using namespace diffsample::c_api;

// ds_resample() hands the caller's report array to the C++ call (it may be device memory): the layouts must agree.
static_assert(same_report_layout, "ds_particle_report and particle_report layouts differ");

namespace diffsample::c_api {

constexpr auto resampling_fields = [](auto& to, const auto& from, const std::string& what) {
  DS_COPY(ess_threshold) DS_COPY(seed) DS_COPY(step) DS_COPY(metropolis_steps) DS_CONVERT(scheme)
};

ds_resampling_options to_c(const resampling_options& from) {
  return to_c_struct<ds_resampling_options>(from, resampling_fields);
}

resampling_options to_cpp(const std::string& what, const ds_resampling_options& from) {
  check_size<ds_resampling_options>(what, from.struct_size);
  return to_cpp_struct<resampling_options>(what, from, resampling_fields);
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
    check_written_apart({ran_span(ran)},
                        {{"log_weights", log_weights, floats(problems, particles)},
                         {"ancestors", ancestors, array_bytes(sizeof(Index), {problems, particles})},
                         {"normalised_weights", normalised_weights, floats(problems, particles)},
                         {"reports", reports, array_bytes(sizeof(ds_particle_report), {problems})},
                         {"workspace", workspace, workspace_bytes}});
    set_ran(ran, ds::resample(outputs, problems, particles, log_weights, o, to_cpp(exec), workspace, workspace_bytes));
  });
}

// ds_gather_particles() and ds_gather_particles_int64().
template <class CIndex, class Index>
ds_status gather(const float* states, int64_t problems, int64_t particles, int64_t dim, const CIndex* ancestors,
                 float* out, ds_execution exec, ds_executor* ran) {
  static_assert(sizeof(CIndex) == sizeof(Index));
  return guard([&] {
    check_written_apart({ran_span(ran)},
                        {{"states", states, array_bytes(sizeof(float), {problems, particles, dim})},
                         {"ancestors", ancestors, array_bytes(sizeof(CIndex), {problems, particles})},
                         {"out", out, array_bytes(sizeof(float), {problems, particles, dim})}});
    set_ran(ran, ds::gather_particles(out, problems, particles, dim, states, reinterpret_cast<const Index*>(ancestors),
                                      to_cpp(exec)));
  });
}

}  // namespace

extern "C" {

ds_status ds_resampling_options_init(ds_resampling_options* options, size_t struct_size) {
  return init_options<ds::resampling_options>(options, struct_size);
}

ds_status ds_resampling_workspace_bytes(int64_t problems, int64_t particles, ds_resampling_scheme scheme,
                                        size_t* bytes) {
  return write_out("bytes", bytes, [&] {
    return ds::resampling_workspace_bytes(problems, particles, enum_to_cpp<ds::resampling_scheme>("scheme", scheme));
  });
}

// The int32 and int64 forms of ds_resample() and ds_gather_particles(): one definition each, the index type apart
// (the C header declares both; a definition that drifted from its declaration would not compile).
#define DS_RESAMPLE(NAME, INDEX)                                                                                     \
  ds_status NAME(const float* log_weights, int64_t problems, int64_t particles, const ds_resampling_options* options, \
                 INDEX* ancestors, float* normalised_weights, ds_particle_report* reports, ds_execution exec,         \
                 void* workspace, size_t workspace_bytes, ds_executor* ran) {                                        \
    return resample(log_weights, problems, particles, options, ancestors, normalised_weights, reports, exec,          \
                    workspace, workspace_bytes, ran);                                                                \
  }
#define DS_GATHER(NAME, INDEX)                                                                                       \
  ds_status NAME(const float* states, int64_t problems, int64_t particles, int64_t dim, const INDEX* ancestors,       \
                 float* out, ds_execution exec, ds_executor* ran) {                                                  \
    return gather<INDEX, std::INDEX>(states, problems, particles, dim, ancestors, out, exec, ran);                   \
  }
DS_RESAMPLE(ds_resample, int32_t)
DS_RESAMPLE(ds_resample_int64, int64_t)
DS_GATHER(ds_gather_particles, int32_t)
DS_GATHER(ds_gather_particles_int64, int64_t)
#undef DS_GATHER
#undef DS_RESAMPLE

}  // extern "C"
