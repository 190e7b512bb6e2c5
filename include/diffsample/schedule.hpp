/// @file schedule.hpp
/// @brief Noise schedules of the reverse-diffusion samplers: a time t mapped to the channel x_t = a(t) x0 + s(t) z,
/// and a grid of steps + 1 times in sampling order (noisiest first).
#pragma once

#include <diffsample/export.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace diffsample {

/// The families of channels (formulas in the README).
enum class schedule_kind : int {
  vp_linear = 0,                ///< variance preserving, beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1]
  vp_cosine = 1,                ///< variance preserving, alpha-bar(t) = cos^2(theta(t)) / cos^2(theta(0)), t in [0, 1]
  vp_table = 2,                 ///< variance preserving, the caller's alpha-bar at t = n / N (monotone cubic between)
  variance_exploding = 3,       ///< a = 1, s = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]
  ornstein_uhlenbeck = 4,       ///< a = exp(-t), s = sqrt(1 - exp(-2t)), t >= 0
  linear_interpolant = 5,       ///< a = 1 - t, s = t, t in [0, 1]
  stochastic_localization = 6,  ///< a = t, s = sqrt(t), t >= 0 (the signal grows with t)
};

/// "vp_linear", "vp_cosine", "vp_table", "variance_exploding", "ornstein_uhlenbeck", "linear_interpolant" or
/// "stochastic_localization".
DIFFSAMPLE_API const char* to_string(schedule_kind k) noexcept;
/// Parses the names of to_string(schedule_kind); throws invalid_argument otherwise.
DIFFSAMPLE_API schedule_kind parse_schedule_kind(const std::string& name);

/// How the steps + 1 sampling times are spread between t_start and t_end.
enum class time_grid : int {
  uniform = 0,    ///< t_k = t_start + (t_end - t_start) k / N
  quadratic = 1,  ///< t_k = t_end + (t_start - t_end) (1 - k / N)^2: dense near t_end, the clean end
  geometric = 2,  ///< t_k = t_start (t_end / t_start)^(k / N): both ends positive
  custom = 3,     ///< the caller's times (noise_schedule::times), steps + 1 values in sampling order
};

/// "uniform", "quadratic", "geometric" or "custom".
DIFFSAMPLE_API const char* to_string(time_grid g) noexcept;
/// Parses the names of to_string(time_grid); throws invalid_argument otherwise.
DIFFSAMPLE_API time_grid parse_time_grid(const std::string& name);

/// The channel at one time and its time derivatives (what the ODE and SDE updates need). For variance-preserving
/// schedules alpha-bar = a^2. Where s = 0 the derivative ds_dt is reported as 0 and never used.
struct schedule_point {
  double t = 0;      ///< time
  double a = 1;      ///< signal scale alpha(t)
  double s = 0;      ///< noise scale beta(t)
  double da_dt = 0;  ///< d alpha / dt
  double ds_dt = 0;  ///< d beta / dt
};

/// A schedule and its time grid. Build one with the factory functions, then adjust the grid with with_grid() or
/// with_times(). Plain data: copy it freely; points() validates it. Each parameter is read by one kind only (beta_min
/// and beta_max by vp_linear, cosine_offset by vp_cosine, alpha_bar by vp_table, sigma_min and sigma_max by
/// variance_exploding; grid, t_start and t_end by every kind): one set away from its default here on another kind is
/// refused by points() and at(), naming the field and the kind, rather than ignored.
struct DIFFSAMPLE_API noise_schedule {
  schedule_kind kind = schedule_kind::vp_linear;  ///< channel family
  double beta_min = 0.1;             ///< vp_linear: beta(0) (the continuous-time VP SDE of Song et al.)
  double beta_max = 20.0;            ///< vp_linear: beta(1)
  double cosine_offset = 0.008;      ///< vp_cosine: theta(t) = (t + offset) / (1 + offset) * pi / 2
  std::vector<double> alpha_bar;     ///< vp_table: alpha-bar at t = n / N for n = 1..N (alpha-bar(0) = 1)
  double sigma_min = 0.01;           ///< variance_exploding: s(0)
  double sigma_max = 50.0;           ///< variance_exploding: s(1), at most max_abs_value (1e18)
  time_grid grid = time_grid::uniform;  ///< how the sampling times are spread
  double t_start = 1.0;              ///< first (noisiest) time of the grid
  double t_end = 0.0;                ///< last (cleanest) time of the grid
  std::vector<double> times;         ///< time_grid::custom: steps + 1 times in sampling order (else empty)

  /// Continuous-time VP with linear beta(t); beta_min = 0.1, beta_max = 20 matches DDPM's 1000 steps of
  /// beta in [1e-4, 0.02]. Grid: uniform from t = 1 to 0.
  static noise_schedule vp_linear(double beta_min = 0.1, double beta_max = 20.0);
  /// Cosine VP (Nichol and Dhariwal). Grid: uniform from t = 1 to 0 (alpha-bar(1) = 0: a = 0 at the first point).
  static noise_schedule vp_cosine(double offset = 0.008);
  /// VP from the caller's alpha-bar_1..N, each in (0, 1] and strictly decreasing; t = n / N. Grid: 1 to 0.
  static noise_schedule vp_table(std::vector<double> alpha_bar);
  /// Variance exploding with geometric sigma. Grid: uniform from t = 1 (sigma_max) to 0 (sigma_min).
  static noise_schedule variance_exploding(double sigma_min = 0.01, double sigma_max = 50.0);
  /// Ornstein-Uhlenbeck dX = -X dt + sqrt(2) dB run to time horizon. Grid: uniform from horizon to 0.
  static noise_schedule ornstein_uhlenbeck(double horizon = 5.0);
  /// Linear stochastic interpolant x = (1 - t) x0 + t z. Grid: uniform from t = 1 to 0.
  static noise_schedule linear_interpolant();
  /// Stochastic localization Z_t = t X + B_t. Grid: geometric from t_min to t_max (the signal grows with t).
  static noise_schedule stochastic_localization(double t_min = 1e-3, double t_max = 1e3);

  /// Sets the grid kind and its ends (returns *this for chaining); a grid other than custom drops custom times.
  noise_schedule& with_grid(time_grid g, double start, double end);
  /// Sets a custom grid of steps + 1 times in sampling order (returns *this for chaining).
  noise_schedule& with_times(std::vector<double> custom_times);

  /// The channel and its derivatives at time t. @throws invalid_argument if t is outside the schedule's domain, a
  /// parameter is invalid (as points() checks them: an empty or not decreasing vp_table, a NaN rate or sigma, a
  /// parameter of another kind set away from its default), or the channel is one points() refuses (a or s beyond
  /// max_abs_value, a = s = 0).
  schedule_point at(double t) const;

  /// The steps + 1 points of the grid in sampling order. Validates the schedule: parameters finite and in range,
  /// times strictly monotone and inside the domain, 0 <= a, s <= max_abs_value (1e18; the FP32 kernels square
  /// them) with a + s > 0, and the signal-to-noise ratio a^2 / s^2 strictly increasing along the grid (so every
  /// step removes noise); times given with a grid other than custom are refused (they would be ignored).
  /// A parameter of another kind than this one's, set away from its default, is refused too (it would be ignored).
  /// @throws invalid_argument naming the field and the bad value
  std::vector<schedule_point> points(std::int64_t steps) const;
};

}  // namespace diffsample
