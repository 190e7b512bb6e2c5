// Which method reads which field of an options struct (internal): one table per struct, the one place the rule of
// README "Options a method does not read" is written. A field that the chosen method (a sampler, a resampling scheme,
// an evaluation path) does not read must hold its default, so that a value set for another method cannot pass as if
// it had taken effect. The library's checks are generated from these tables (guided.cu, diffusion.cu,
// mixture_gemm.cpp, particles.cu, mpi/resampler.cpp), and the program (src/cli/solve.cpp) passes a problem file's
// setting only to the samplers that read it by the same table.
//
// Every field of each struct has a row, the fields every method reads included, in the struct's order:
// UnreadOptions.EveryFieldHasOneRow (tests/test_unread_options.cpp) counts each struct's fields and fails when a
// field has no row, so that a new field cannot be left out of the rule unnoticed.
//
// A noise_schedule's parameters by schedule kind are checked apart, in schedule.cpp's check_unread_parameters():
// that is the schedule's own invariant (points() and at() check it for every caller, outside any method's options),
// each parameter has exactly one reader kind, and its message names that kind as the fix ("leave it at its default
// 20 or set kind = vp_linear"), which the rows here have no column for.
//
// A row is X(field, readers, when, reported):
// - field: the member (a nested one as resampling.scheme), named "options.<field>" in messages;
// - readers: the methods that read it, a name from the struct's *_readers namespace below (bit i: enum value i);
// - when: read_when, the condition under which a method of readers reads it (always for most);
// - reported: a value other than the default that also passes, the one a report gives for a method that does not
//   read the field (guided_report's linear potentials and final_moves = 0), or unset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "src/validate.hpp"
#include <diffsample/diffusion.hpp>
#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/particles.hpp>

namespace diffsample::detail {

/// A set of methods: bit i for the enum value i.
using method_set = std::uint32_t;

/// The bit of @p e (none for a value past the set's 32 bits, which no method has: the checks of the enums come first).
template <class E>
constexpr method_set method_bit(E e) {
  return static_cast<unsigned>(e) < 32 ? method_set{1} << static_cast<unsigned>(e) : method_set{0};
}

/// The set holding @p e.
template <class... E>
constexpr method_set methods(E... e) {
  return (method_set{0} | ... | method_bit(e));
}

/// When a method of a row's readers reads the field.
enum class read_when {
  always,
  ddim,         ///< only with options.ddim: eta is DDIM's stochasticity, the DDPM kernel reads none
  metropolis,   ///< only with the metropolis resampling scheme
  final_moves,  ///< only with final moves (options.final_moves other than 0)
  never,        ///< never from the caller: the sampler sets it (a guided run's resampling.seed and step)
};

/// The reported column of a row without a second value that passes.
struct unset_t {};
inline constexpr unset_t unset{};

namespace guided_readers {
using s = guided_sampler;
inline constexpr method_set all = ~method_set{0};
inline constexpr method_set none = 0;
/// The samplers on a diffusion grid: all but skrock, whose steps are iterations on p(x | y).
inline constexpr method_set grid_samplers = all & ~methods(s::skrock);
/// The samplers whose transition is the DDPM / DDIM backward kernel.
inline constexpr method_set ddpm_kernel = methods(s::smc, s::dps, s::pigdm, s::tmpd, s::dcps);
/// The samplers that add a guidance term to the kernel's mean.
inline constexpr method_set guidance = methods(s::dps, s::pigdm, s::tmpd);
inline constexpr method_set smc = methods(s::smc);
inline constexpr method_set dps = methods(s::dps);
inline constexpr method_set diffpir = methods(s::diffpir);
inline constexpr method_set skrock = methods(s::skrock);
inline constexpr method_set ddrm = methods(s::ddrm);
inline constexpr method_set dcps = methods(s::dcps);
}  // namespace guided_readers

// guided_options, by guided sampler, in guided_sample() and sampling_plan::guided alike: operator_path is read by
// DPS, Pi-GDM and TMPD and their plans (a plan runs the operator path guided_sample() resolves), and the one
// difference is a plan's, checked beside the table in make_guided_plan (guided.cu): it reads neither final_moves
// (0 passes) nor final_move_step.
#define DIFFSAMPLE_GUIDED_OPTION_READERS(X)                                \
  X(sampler, all, always, unset)                                           \
  X(schedule, grid_samplers, always, unset)                                \
  X(steps, all, always, unset)                                             \
  X(grid, grid_samplers, always, unset)                                    \
  X(ddim, ddpm_kernel, always, unset)                                      \
  X(eta, ddpm_kernel, ddim, unset)                                         \
  X(particles, all, always, unset)                                         \
  X(potential_spread, smc, always, unset)                                  \
  X(potentials, smc, always, guided_potentials::linear)                    \
  X(resampling.scheme, smc, always, unset)                                 \
  X(resampling.ess_threshold, smc, always, unset)                          \
  X(resampling.seed, none, never, unset)                                   \
  X(resampling.step, none, never, unset)                                   \
  X(resampling.metropolis_steps, smc, metropolis, unset)                   \
  X(start_correction, smc, always, unset)                                  \
  X(multistep_kernel, smc, always, unset)                                  \
  X(final_resample, smc, always, unset)                                    \
  X(final_moves, smc, always, std::int64_t{0})                             \
  X(final_move_step, smc, final_moves, unset)                              \
  X(final_move_curvature, smc, final_moves, unset)                         \
  X(guidance_scale, guidance, always, unset)                               \
  X(dps_step, dps, always, unset)                                          \
  X(diffpir_zeta, diffpir, always, unset)                                  \
  X(diffpir_lambda, diffpir, always, unset)                                \
  X(skrock_stages, skrock, always, unset)                                  \
  X(skrock_eta, skrock, always, unset)                                     \
  X(skrock_step_fraction, skrock, always, unset)                           \
  X(skrock_lipschitz, skrock, always, unset)                               \
  X(ddrm_eta, ddrm, always, unset)                                         \
  X(ddrm_eta_b, ddrm, always, unset)                                       \
  X(dcps_blocks, dcps, always, unset)                                      \
  X(dcps_langevin_steps, dcps, always, unset)                              \
  X(dcps_langevin_step, dcps, always, unset)                               \
  X(dcps_gradient_steps, dcps, always, unset)                              \
  X(dcps_learning_rate, dcps, always, unset)                               \
  X(dcps_bridge_variance, dcps, always, unset)                             \
  X(dcps_absolute_step, dcps, always, unset)                               \
  X(operator_path, guidance, always, unset)                                \
  X(seed, all, always, unset)

namespace diffusion_readers {
using s = diffusion_sampler;
inline constexpr method_set all = ~method_set{0};
/// The Langevin samplers on a fixed noise level: walk_jump and SMS.
inline constexpr method_set langevin = methods(s::walk_jump, s::sequential_measurements);
/// The samplers on a noise schedule: all but walk_jump and SMS.
inline constexpr method_set schedule_samplers = all & ~langevin;
inline constexpr method_set ddim = methods(s::ddim);
inline constexpr method_set sms = methods(s::sequential_measurements);
}  // namespace diffusion_readers

// diffusion_options, by diffusion sampler. final_denoise = true is what stochastic_localization, walk_jump and SMS do
// anyway: every sampler reads it.
#define DIFFSAMPLE_DIFFUSION_OPTION_READERS(X)  \
  X(sampler, all, always, unset)                \
  X(schedule, schedule_samplers, always, unset) \
  X(steps, all, always, unset)                  \
  X(eta, ddim, always, unset)                   \
  X(sigma, langevin, always, unset)             \
  X(step_size, langevin, always, unset)         \
  X(measurements, sms, always, unset)           \
  X(final_denoise, all, always, unset)          \
  X(draw_initial, all, always, unset)           \
  X(seed, all, always, unset)                   \
  X(first_chain, all, always, unset)            \
  X(record_every, all, always, unset)

namespace evaluate_readers {
using p = mixture_path;
inline constexpr method_set all = ~method_set{0};
/// The gemm path's settings: read where the gemm path may run (automatic or gemm), not on the direct path.
inline constexpr method_set gemm = all & ~methods(p::direct);
}  // namespace evaluate_readers

// evaluate_options, by mixture_path.
#define DIFFSAMPLE_EVALUATE_OPTION_READERS(X) \
  X(path, all, always, unset)                 \
  X(allow_tf32, gemm, always, unset)          \
  X(component_chunk, gemm, always, unset)     \
  X(point_block, gemm, always, unset)

namespace resampling_readers {
inline constexpr method_set all = ~method_set{0};
inline constexpr method_set metropolis = methods(resampling_scheme::metropolis);
}  // namespace resampling_readers

// resampling_options in resample() and mpi::resample, by resampling scheme (in a guided run, the guided table's rows
// resampling.* apply).
#define DIFFSAMPLE_RESAMPLING_OPTION_READERS(X) \
  X(scheme, all, always, unset)                 \
  X(ess_threshold, all, always, unset)          \
  X(seed, all, always, unset)                   \
  X(step, all, always, unset)                   \
  X(metropolis_steps, metropolis, always, unset)

/// The refusal: "<name>: not read by <method>; leave it at its default <fallback>, got <value>".
[[noreturn]] inline void refuse_unread(const std::string& name, const std::string& method, const std::string& value,
                                       const std::string& fallback) {
  throw invalid_argument(name + ": not read by " + method + "; leave it at its default " + fallback + ", got " + value);
}

/// Whether @p value passes as the default @p fallback does: equal to it (a NaN never is) or to the row's @p reported.
template <class T, class R>
bool passes_as_default(const T& value, const T& fallback, const R& reported) {
  if constexpr (std::is_same_v<R, unset_t>)
    return value == fallback;
  else
    return value == fallback || value == static_cast<T>(reported);
}

/// The default as the refusal words it, with the reported value that passes beside it.
template <class T, class R>
std::string default_text(const T& fallback, const R& reported) {
  if constexpr (std::is_same_v<R, unset_t>)
    return option_text(fallback);
  else
    return option_text(fallback) + " (or " + option_text(static_cast<T>(reported)) + ", what the report gives)";
}

/// One row of a table: @p value refused unless it passes as the default does, where @p method (the method that does
/// not read it, from the row's readers) is not empty.
template <class T, class R>
void check_unread_row(const std::string& name, const T& value, const T& fallback, const R& reported,
                      const std::string& method) {
  if (!method.empty() && !passes_as_default(value, fallback, reported))
    refuse_unread(name, method, option_text(value), default_text(fallback, reported));
}

/// A schedule's row: refused field by field against the default schedule, naming the first that differs
/// ("options.schedule.beta_min").
inline void check_unread_row(const std::string& name, const noise_schedule& value, const noise_schedule&, unset_t,
                             const std::string& method) {
  if (!method.empty()) check_unread_schedule(name.c_str(), value, method);
}

/// The method that does not read a field of @p readers read @p when, or "" when the run reads it.
inline std::string guided_unread_by(method_set readers, read_when when, const guided_options& o) {
  const std::string sampler = std::string("sampler ") + to_string(o.sampler);
  if ((readers & methods(o.sampler)) == 0) return sampler;
  switch (when) {
    case read_when::always: return {};
    case read_when::ddim: return o.ddim ? std::string() : sampler + "'s DDPM kernel (options.ddim is false)";
    case read_when::metropolis:
      return o.resampling.scheme == resampling_scheme::metropolis
                 ? std::string()
                 : std::string("resampling scheme ") + to_string(o.resampling.scheme);
    case read_when::final_moves:
      return o.final_moves != 0 ? std::string() : sampler + " with options.final_moves = 0 (no final moves)";
    case read_when::never: break;
  }
  return sampler + ", which sets it itself (the seed from options.seed, the step per transition)";
}

/// Whether the guided sampler @p s reads the field of guided_options named @p field ("dps_step",
/// "resampling.scheme") under some setting of the other fields; false for a name without a row.
inline bool guided_sampler_reads(guided_sampler s, std::string_view field) {
  bool found = false, reads = false;
#define DIFFSAMPLE_GUIDED_READS_(F, R, W, V)                                         \
  if (!found && field == #F) {                                                       \
    found = true;                                                                    \
    reads = (guided_readers::R & methods(s)) != 0 && read_when::W != read_when::never; \
  }
  DIFFSAMPLE_GUIDED_OPTION_READERS(DIFFSAMPLE_GUIDED_READS_)
#undef DIFFSAMPLE_GUIDED_READS_
  return reads;
}

/// Refuses a field of resampling_options that the scheme does not read (resample(), mpi::resample), naming it
/// "<prefix>.<field>".
inline void check_unread_resampling(const std::string& prefix, const resampling_options& o) {
  const resampling_options d;
  const std::string method = std::string("scheme ") + to_string(o.scheme);
#define DIFFSAMPLE_RESAMPLING_CHECK_(F, R, W, V)                                          \
  static_assert(read_when::W == read_when::always, "resample() reads a field by its scheme alone"); \
  if ((resampling_readers::R & methods(o.scheme)) == 0 && !passes_as_default(o.F, d.F, V))        \
    refuse_unread(prefix + "." #F, method, option_text(o.F), default_text(d.F, V));
  DIFFSAMPLE_RESAMPLING_OPTION_READERS(DIFFSAMPLE_RESAMPLING_CHECK_)
#undef DIFFSAMPLE_RESAMPLING_CHECK_
}

}  // namespace diffsample::detail
