// The default noise schedule of each kind (internal, header-only over the public factories), shared by the C ABI's
// ds_schedule_init() and the program, so that the choice of factory per kind is written once; and the unchecked
// channel of a schedule already validated.
#pragma once

#include <utility>
#include <vector>

#include <diffsample/schedule.hpp>

namespace diffsample::detail {

/// noise_schedule::<kind>() with its default parameters; vp_table takes @p alpha_bar.
inline noise_schedule default_schedule(schedule_kind kind, std::vector<double> alpha_bar = {}) {
  switch (kind) {
    case schedule_kind::vp_linear: return noise_schedule::vp_linear();
    case schedule_kind::vp_cosine: return noise_schedule::vp_cosine();
    case schedule_kind::vp_table: return noise_schedule::vp_table(std::move(alpha_bar));
    case schedule_kind::variance_exploding: return noise_schedule::variance_exploding();
    case schedule_kind::ornstein_uhlenbeck: return noise_schedule::ornstein_uhlenbeck();
    case schedule_kind::linear_interpolant: return noise_schedule::linear_interpolant();
    case schedule_kind::stochastic_localization: return noise_schedule::stochastic_localization();
  }
  return noise_schedule::vp_linear();
}

/// noise_schedule::at() without its checks (src/schedule.cpp), for loops over a schedule whose parameters and times
/// were validated once (points()): at() checks the parameters on every call, a vp_table's whole table.
schedule_point point_at(const noise_schedule& sc, double t);

}  // namespace diffsample::detail
