// The names of the public enums: to_string() and the parse_*() functions, all from the one list of values in
// src/enum_tables.hpp. A parser accepts each value's own name and the short aliases listed here.
#include <initializer_list>
#include <string>
#include <utility>

#include "src/enum_tables.hpp"
#include "src/printable.hpp"
#include <diffsample/error.hpp>

namespace diffsample {
namespace {

// "a, b or c" from E's names.
template <class E>
std::string name_list() {
  std::string s;
  const int n = detail::enum_table<E>::count;
  for (int i = 0; i < n; ++i) {
    if (i > 0) s += i + 1 == n ? " or " : ", ";
    s += detail::enum_table<E>::entries[i].name;
  }
  return s;
}

// The value named `name` (its own name or an alias); otherwise invalid_argument "<unknown> '<name>' (expected ...)",
// the list being E's names unless `expected` is given.
template <class E>
E parse_named(const std::string& name, const char* unknown, std::initializer_list<std::pair<const char*, E>> aliases = {},
              const char* expected = nullptr) {
  E value{};
  if (detail::enum_from_name(name, value)) return value;
  for (const auto& alias : aliases)
    if (name == alias.first) return alias.second;
  throw invalid_argument(std::string(unknown) + " '" + detail::printable(name) + "' (expected " +
                         (expected ? std::string(expected) : name_list<E>()) + ")");
}

}  // namespace

#define DIFFSAMPLE_TO_STRING_(T) \
  const char* to_string(T v) noexcept { return detail::enum_name(v); }
DIFFSAMPLE_TO_STRING_(executor)
DIFFSAMPLE_TO_STRING_(langevin_method)
DIFFSAMPLE_TO_STRING_(schedule_kind)
DIFFSAMPLE_TO_STRING_(time_grid)
DIFFSAMPLE_TO_STRING_(diffusion_sampler)
DIFFSAMPLE_TO_STRING_(model_output)
DIFFSAMPLE_TO_STRING_(resampling_scheme)
DIFFSAMPLE_TO_STRING_(guided_sampler)
DIFFSAMPLE_TO_STRING_(dps_step_form)
DIFFSAMPLE_TO_STRING_(guided_potentials)
DIFFSAMPLE_TO_STRING_(guided_grid)
DIFFSAMPLE_TO_STRING_(discrete_method)
DIFFSAMPLE_TO_STRING_(observation_kind)
DIFFSAMPLE_TO_STRING_(mixture_path)
#undef DIFFSAMPLE_TO_STRING_

executor parse_executor(const std::string& name) {
  return parse_named<executor>(name, "executor: unknown name", {{"auto", executor::automatic}, {"gpu", executor::cuda}},
                               "auto, cuda or cpu");
}

langevin_method parse_langevin_method(const std::string& name) {
  return parse_named<langevin_method>(name, "method: unknown Langevin method", {{"tamed", langevin_method::tamed_ula}});
}

schedule_kind parse_schedule_kind(const std::string& name) {
  using k = schedule_kind;
  return parse_named<k>(name, "schedule: unknown kind",
                        {{"ddpm", k::vp_linear}, {"vp", k::vp_linear}, {"cosine", k::vp_cosine},
                         {"ve", k::variance_exploding}, {"ou", k::ornstein_uhlenbeck},
                         {"interpolant", k::linear_interpolant}, {"si", k::linear_interpolant},
                         {"localization", k::stochastic_localization}, {"sl", k::stochastic_localization}});
}

time_grid parse_time_grid(const std::string& name) { return parse_named<time_grid>(name, "grid: unknown time grid"); }

diffusion_sampler parse_diffusion_sampler(const std::string& name) {
  using s = diffusion_sampler;
  return parse_named<s>(name, "sampler: unknown diffusion sampler",
                        {{"euler", s::ode_euler}, {"heun", s::ode_heun}, {"sde", s::reverse_sde},
                         {"sl", s::stochastic_localization}, {"sms", s::sequential_measurements}});
}

model_output parse_model_output(const std::string& name) {
  return parse_named<model_output>(name, "output: unknown model output", {{"x0", model_output::denoiser}});
}

resampling_scheme parse_resampling_scheme(const std::string& name) {
  return parse_named<resampling_scheme>(name, "scheme: unknown resampling scheme");
}

guided_sampler parse_guided_sampler(const std::string& name) {
  return parse_named<guided_sampler>(name, "sampler: unknown guided sampler");
}

dps_step_form parse_dps_step_form(const std::string& name) {
  return parse_named<dps_step_form>(name, "dps_step: unknown DPS step");
}

guided_potentials parse_guided_potentials(const std::string& name) {
  return parse_named<guided_potentials>(name, "potentials: unknown SMC potentials",
                                        {{"auto", guided_potentials::automatic}});
}

guided_grid parse_guided_grid(const std::string& name) {
  return parse_named<guided_grid>(name, "grid: unknown guided time grid");
}

discrete_method parse_discrete_method(const std::string& name) {
  return parse_named<discrete_method>(name, "method: unknown discrete method", {{"mh", discrete_method::metropolis}});
}

mixture_path parse_mixture_path(const std::string& name) {
  return parse_named<mixture_path>(name, "path: unknown name", {{"auto", mixture_path::automatic}},
                                   "auto, direct or gemm");
}

}  // namespace diffsample
