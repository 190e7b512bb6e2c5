// Noise schedules: closed-form channels (a, s) and their time derivatives, time grids, and the validation that
// every sampler relies on before it builds its coefficient table.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "src/cuda_check.hpp"
#include "src/limits.hpp"
#include "src/schedule_defaults.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/schedule.hpp>

namespace diffsample {

noise_schedule noise_schedule::vp_linear(double beta_min, double beta_max) {
  noise_schedule s;
  s.kind = schedule_kind::vp_linear;
  s.beta_min = beta_min;
  s.beta_max = beta_max;
  return s;
}

noise_schedule noise_schedule::vp_cosine(double offset) {
  noise_schedule s;
  s.kind = schedule_kind::vp_cosine;
  s.cosine_offset = offset;
  return s;
}

noise_schedule noise_schedule::vp_table(std::vector<double> alpha_bar) {
  noise_schedule s;
  s.kind = schedule_kind::vp_table;
  s.alpha_bar = std::move(alpha_bar);
  return s;
}

noise_schedule noise_schedule::variance_exploding(double sigma_min, double sigma_max) {
  noise_schedule s;
  s.kind = schedule_kind::variance_exploding;
  s.sigma_min = sigma_min;
  s.sigma_max = sigma_max;
  return s;
}

noise_schedule noise_schedule::ornstein_uhlenbeck(double horizon) {
  noise_schedule s;
  s.kind = schedule_kind::ornstein_uhlenbeck;
  s.t_start = horizon;
  s.t_end = 0;
  return s;
}

noise_schedule noise_schedule::linear_interpolant() {
  noise_schedule s;
  s.kind = schedule_kind::linear_interpolant;
  return s;
}

noise_schedule noise_schedule::stochastic_localization(double t_min, double t_max) {
  noise_schedule s;
  s.kind = schedule_kind::stochastic_localization;
  s.grid = time_grid::geometric;
  s.t_start = t_min;
  s.t_end = t_max;
  return s;
}

noise_schedule& noise_schedule::with_grid(time_grid g, double start, double end) {
  grid = g;
  if (g != time_grid::custom) times.clear();  // the grid replaces a custom one: its times would be refused
  t_start = start;
  t_end = end;
  return *this;
}

noise_schedule& noise_schedule::with_times(std::vector<double> custom_times) {
  grid = time_grid::custom;
  times = std::move(custom_times);
  if (!times.empty()) {
    t_start = times.front();
    t_end = times.back();
  }
  return *this;
}

namespace {

constexpr double half_pi = 1.5707963267948966192;

// A VP point from log alpha-bar and its time derivative: a = sqrt(abar), s = sqrt(1 - abar).
schedule_point vp_point(double t, double log_abar, double dlog_abar, double s = NAN) {
  schedule_point p;
  p.t = t;
  p.a = std::exp(0.5 * log_abar);
  // expm1 keeps s accurate when alpha-bar is close to 1; the max makes s = +0 where log alpha-bar is +0 (a vp_table's
  // node 0), whose -expm1 is -0 and its square root -0. A caller that forms s itself (where log alpha-bar leaves the
  // normal range) passes it.
  p.s = std::isnan(s) ? std::sqrt(std::max(0.0, -std::expm1(log_abar))) : s;
  p.da_dt = 0.5 * p.a * dlog_abar;
  p.ds_dt = p.s > 0 ? -p.a * p.a * dlog_abar / (2 * p.s) : 0.0;
  return p;
}

// log alpha-bar at node n of a vp_table (t = n / N; node 0 is alpha-bar = 1).
double vp_table_log(const noise_schedule& sc, std::size_t n) { return n == 0 ? 0.0 : std::log(sc.alpha_bar[n - 1]); }

// d log alpha-bar / dt at node n of a vp_table: the central difference (f_{n+1} - f_{n-1}) N / 2 inside, and the
// one-sided second-order differences (-3 f_0 + 4 f_1 - f_2) N / 2 and (3 f_N - 4 f_{N-1} + f_{N-2}) N / 2 at the
// ends, each exact for a quadratic log alpha-bar (vp_linear's); a single segment has its slope. The slope of the
// segment on one side (the derivative before) is first order and, at a node, took the segment above or below by
// the rounding of t N: the ODE and SDE samplers' coefficients were off by O(1 / N) (vp_linear sampled at N = 1000:
// 10% of beta at t = 0). An end's difference of the wrong sign (log alpha-bar bending sharply) is replaced by the
// end segment's slope, so that alpha-bar decreases wherever the derivative is read.
double vp_table_slope(const noise_schedule& sc, std::size_t n) {
  const std::size_t N = sc.alpha_bar.size();
  const double scale = double(N);
  const auto f = [&](std::size_t m) { return vp_table_log(sc, m); };
  if (N == 1) return (f(1) - f(0)) * scale;
  if (n > 0 && n < N) return (f(n + 1) - f(n - 1)) * scale / 2;
  // The end node e, its neighbour e1 and the next e2 (towards t = 1 from node 0, towards t = 0 from node N); the
  // sign turns the differences towards t = 0 into derivatives in t.
  const std::size_t e = n == 0 ? 0 : N, e1 = n == 0 ? 1 : N - 1, e2 = n == 0 ? 2 : N - 2;
  const double sign = n == 0 ? 1.0 : -1.0;
  const double end = sign * (-3 * f(e) + 4 * f(e1) - f(e2)) * scale / 2;
  const double segment = sign * (f(e1) - f(e)) * scale;
  // A zero end slope is a derivative (vp_linear with beta_min = 0 has one at t = 0), and the difference above gives
  // it within the nodes' rounding (each node's log within 2^-52 of its size and 1, weighed by at most 4 N): such a
  // slope is taken as 0, and only a clearly wrong-signed one gives way to the segment's (a zero one did too: such a
  // table's s at t = 0.002 was twice vp_linear's). Within the rounding on either side: a slope of -1.4e-14 (a table
  // of vp_linear with beta_min = 0 at 1000 nodes) was kept, and s at t = 1e-15 was twice vp_linear's.
  const double noise = 4 * scale * 0x1p-52 * (std::abs(f(e)) + std::abs(f(e1)) + std::abs(f(e2)) + 1);
  if (std::abs(end) <= noise) return 0.0;
  if (end < 0) return end;
  return segment;
}

// The slope of log alpha-bar at node n that the interpolant between nodes takes (vp_table_slope), limited to 3 times
// the smaller of the two neighbouring segments' slopes (Fritsch and Carlson's sufficient condition: a cubic Hermite
// segment whose end slopes have the sign of its secant and are at most 3 times it is monotone), so that alpha-bar
// decreases strictly between nodes too. Second-order slopes of a smooth alpha-bar sampled finely enough are within
// that bound (a quadratic log alpha-bar's are at most twice the secant): the limit acts only on tables that bend
// sharply.
double vp_table_node_slope(const noise_schedule& sc, std::size_t n) {
  const std::size_t N = sc.alpha_bar.size();
  const double scale = double(N);
  double m = vp_table_slope(sc, n);  // negative, as every secant
  if (n > 0) m = std::max(m, 3 * (vp_table_log(sc, n) - vp_table_log(sc, n - 1)) * scale);
  if (n < N) m = std::max(m, 3 * (vp_table_log(sc, n + 1) - vp_table_log(sc, n)) * scale);
  return m;
}

void check_domain(const noise_schedule& sc, double t) {
  DIFFSAMPLE_EXPECTS(std::isfinite(t), "schedule: time must be finite, got " << t);
  switch (sc.kind) {
    case schedule_kind::vp_linear:
    case schedule_kind::vp_cosine:
    case schedule_kind::vp_table:
    case schedule_kind::variance_exploding:
    case schedule_kind::linear_interpolant:
      DIFFSAMPLE_EXPECTS(t >= 0 && t <= 1, "schedule: time " << t << " is outside [0, 1] for " << to_string(sc.kind));
      break;
    case schedule_kind::ornstein_uhlenbeck:
    case schedule_kind::stochastic_localization:
      DIFFSAMPLE_EXPECTS(t >= 0, "schedule: time " << t << " is negative for " << to_string(sc.kind));
      break;
  }
}

// Every parameter is read by one kind (t_start, t_end and grid by all, times by the custom grid, checked in
// points()): one set to another value than its default (noise_schedule's member initialisers, which every factory
// leaves to the kinds that do not read it) on a kind that does not read it was ignored, and the run took a channel
// its caller did not ask for. A NaN differs from every default and is refused too.
void check_unread_parameters(const noise_schedule& sc) {
  const noise_schedule defaults;
  struct parameter {
    const char* name;
    schedule_kind reader;
    bool is_default;
    double value;
    double default_value;
  };
  const parameter parameters[] = {
      {"beta_min", schedule_kind::vp_linear, sc.beta_min == defaults.beta_min, sc.beta_min, defaults.beta_min},
      {"beta_max", schedule_kind::vp_linear, sc.beta_max == defaults.beta_max, sc.beta_max, defaults.beta_max},
      {"cosine_offset", schedule_kind::vp_cosine, sc.cosine_offset == defaults.cosine_offset, sc.cosine_offset,
       defaults.cosine_offset},
      {"sigma_min", schedule_kind::variance_exploding, sc.sigma_min == defaults.sigma_min, sc.sigma_min,
       defaults.sigma_min},
      {"sigma_max", schedule_kind::variance_exploding, sc.sigma_max == defaults.sigma_max, sc.sigma_max,
       defaults.sigma_max},
  };
  for (const parameter& p : parameters)
    DIFFSAMPLE_EXPECTS(p.is_default || p.reader == sc.kind,
                       "schedule." << p.name << ": " << p.value << " is set, but schedule.kind "
                                   << to_string(sc.kind) << " does not read it (only " << to_string(p.reader)
                                   << " does): leave it at its default " << p.default_value << " or set kind = "
                                   << to_string(p.reader));
  DIFFSAMPLE_EXPECTS(sc.alpha_bar.empty() || sc.kind == schedule_kind::vp_table,
                     "schedule.alpha_bar: " << sc.alpha_bar.size() << " values are set, but schedule.kind "
                                            << to_string(sc.kind)
                                            << " does not read them (only vp_table does): leave alpha_bar empty or "
                                            << "set kind = vp_table");
}

void check_parameters(const noise_schedule& sc) {
  check_unread_parameters(sc);
  switch (sc.kind) {
    case schedule_kind::vp_linear:
      DIFFSAMPLE_EXPECTS(std::isfinite(sc.beta_min) && sc.beta_min >= 0,
                         "schedule.beta_min: must be >= 0 and finite, got " << sc.beta_min);
      DIFFSAMPLE_EXPECTS(std::isfinite(sc.beta_max) && sc.beta_max >= 0,
                         "schedule.beta_max: must be >= 0 and finite, got " << sc.beta_max);
      DIFFSAMPLE_EXPECTS(sc.beta_min + sc.beta_max > 0,
                         "schedule.beta_min, beta_max: both are 0, so no noise is ever added");
      break;
    case schedule_kind::vp_cosine:
      DIFFSAMPLE_EXPECTS(std::isfinite(sc.cosine_offset) && sc.cosine_offset >= 0 && sc.cosine_offset < 1,
                         "schedule.cosine_offset: must be in [0, 1), got " << sc.cosine_offset);
      break;
    case schedule_kind::vp_table: {
      DIFFSAMPLE_EXPECTS(!sc.alpha_bar.empty(), "schedule.alpha_bar: empty table");
      double previous = 1.0;
      for (std::size_t n = 0; n < sc.alpha_bar.size(); ++n) {
        const double v = sc.alpha_bar[n];
        DIFFSAMPLE_EXPECTS(std::isfinite(v) && v > 0 && v <= 1,
                           "schedule.alpha_bar[" << n << "]: must be in (0, 1], got " << v);
        DIFFSAMPLE_EXPECTS(v < previous,
                           "schedule.alpha_bar[" << n << "]: " << v << " does not decrease from the previous value "
                                                 << previous << " (alpha-bar must be strictly decreasing from "
                                                 << "alpha-bar(0) = 1)");
        previous = v;
      }
      break;
    }
    case schedule_kind::variance_exploding:
      DIFFSAMPLE_EXPECTS(std::isfinite(sc.sigma_min) && sc.sigma_min > 0,
                         "schedule.sigma_min: must be positive and finite, got " << sc.sigma_min);
      DIFFSAMPLE_EXPECTS(std::isfinite(sc.sigma_max) && sc.sigma_max > sc.sigma_min,
                         "schedule.sigma_max: must be finite and above sigma_min = " << sc.sigma_min << ", got "
                                                                                      << sc.sigma_max);
      DIFFSAMPLE_EXPECTS(sc.sigma_max <= max_abs_value, "schedule.sigma_max: " << sc.sigma_max << " is above "
                                                            << max_abs_value << " (the FP32 kernels square s)");
      break;
    default: break;
  }
}

// The channel at one time, as every sampler needs it (points() and at() alike): finite, a, s >= 0 not both 0, and
// within max_abs_value. Every sampler's FP32 kernels square a and s (a channel's bound, as for evaluate()'s): a larger
// one gave NaN. The slack covers the formulas' rounding (variance_exploding's exp(log(sigma_max / sigma_min) t) ends
// a few ulps above a sigma_max of 1e18); the FP32 squares have far more room than that.
void check_channel(const schedule_point& p) {
  DIFFSAMPLE_EXPECTS(std::isfinite(p.a) && std::isfinite(p.s) && p.a >= 0 && p.s >= 0 && p.a + p.s > 0,
                     "schedule: invalid channel a = " << p.a << ", s = " << p.s << " at t = " << p.t);
  constexpr double bound = max_abs_value * (1 + 1e-12);
  DIFFSAMPLE_EXPECTS(p.a <= bound && p.s <= bound,
                     "schedule: the channel a = " << p.a << ", s = " << p.s << " at t = " << p.t << " is beyond "
                                                  << max_abs_value << " (the FP32 kernels square a and s)");
}

}  // namespace

schedule_point noise_schedule::at(double t) const {
  DIFFSAMPLE_EXPECTS(kind >= schedule_kind::vp_linear && kind <= schedule_kind::stochastic_localization,
                     "schedule.kind: invalid value " << static_cast<int>(kind));
  // The parameters too, as points() checks them: an empty vp_table was read out of bounds, a NaN or non-monotone
  // parameter gave NaN or a channel no grid accepts.
  check_parameters(*this);
  check_domain(*this, t);
  // And the channel, as points() checks it: stochastic_localization's a = t passed beyond 1e18 here while points()
  // refused the same time.
  const schedule_point p = detail::point_at(*this, t);
  check_channel(p);
  return p;
}

schedule_point detail::point_at(const noise_schedule& sc, double t) {
  schedule_point p;
  p.t = t;
  switch (sc.kind) {
    case schedule_kind::vp_linear: {
      // -log alpha-bar = t g, g = beta_min + (beta_max - beta_min) t / 2. With beta_min = 0 it is (beta_max / 2) t^2,
      // which leaves the normal range below t of about 1e-154 and is 0 below 1e-162 (s was 0 there); there
      // s = sqrt(t g) (-expm1 of a subnormal is itself) is formed as sqrt(t) sqrt(g), both factors representable, and
      // passed to vp_point. Elsewhere the general form, bit for bit as before.
      const double L = -(sc.beta_min * t + 0.5 * (sc.beta_max - sc.beta_min) * t * t);
      const double g = sc.beta_min + 0.5 * (sc.beta_max - sc.beta_min) * t;
      const bool tiny = L > -1e-300 && t > 0 && g > 0;
      const double slope = -(sc.beta_min + (sc.beta_max - sc.beta_min) * t);
      return vp_point(t, L, slope, tiny ? std::sqrt(t) * std::sqrt(g) : NAN);
    }
    case schedule_kind::vp_cosine: {
      // a = cos(theta) / cos(theta0), theta = (t + o) scale, theta0 = o scale, scale = (pi / 2) / (1 + o), taken
      // in forms without cancellation at either end: cos(theta) = sin(pi / 2 - theta) = sin((1 - t) scale) (exact 0
      // at t = 1, and a's relative accuracy near it), and s^2 = 1 - a^2 = (cos^2 theta0 - cos^2 theta) / cos^2 theta0
      // = sin(theta - theta0) sin(theta + theta0) / cos^2 theta0 with theta - theta0 = t scale (sqrt(1 - a^2) lost
      // s's digits as t -> 0: 5.5e-4 relative at t = 1e-7, and s = 0 at t = 1e-9, which made valid grids
      // refused for a signal-to-noise ratio that did not increase).
      const double scale = half_pi / (1 + sc.cosine_offset);
      const double c0 = std::cos(sc.cosine_offset * scale);
      const double rest = (1 - t) * scale, u1 = t * scale, u2 = (t + 2 * sc.cosine_offset) * scale;
      p.a = std::sin(rest) / c0;
      // da/dt = -sin(theta) scale / c0, from theta itself: cos(rest), equal to it, kept rest's rounding (1e-16
      // absolute) where theta is tiny (offset 0, t = 1e-15: 2.8% of da_dt).
      p.da_dt = -std::sin((t + sc.cosine_offset) * scale) * scale / c0;
      p.s = std::sqrt(std::max(0.0, std::sin(u1) * std::sin(u2))) / c0;
      // d(s^2)/dt = scale sin(u1 + u2) / c0^2
      p.ds_dt = p.s > 0 ? 0.5 * scale * std::sin(u1 + u2) / (c0 * c0 * p.s) : 0.0;
      return p;
    }
    case schedule_kind::vp_table: {
      // log alpha-bar between the table's nodes n / N (node 0 is alpha-bar = 1) is the cubic Hermite interpolant of
      // the nodes' values and slopes (vp_table_node_slope: the derivative of the alpha-bar the table samples, to
      // second order), and the time derivative reported is that interpolant's own: the channel (a, s) and
      // (da_dt, ds_dt) describe one path, as the probability-flow ODE and the reverse SDE need. (The value was
      // log-linear between nodes while the derivative interpolated the node slopes linearly: the ODE samplers
      // followed another path than the channels their denoiser was evaluated at, and converged, as the steps grew,
      // to a map off the exact one.)
      const std::size_t N = sc.alpha_bar.size();
      const double u = t * double(N);
      std::size_t n = static_cast<std::size_t>(std::floor(u));
      if (n >= N) n = N - 1;
      const double f0 = vp_table_log(sc, n), f1 = vp_table_log(sc, n + 1), w = u - double(n);
      const double h = 1.0 / double(N), d0 = vp_table_node_slope(sc, n) * h, d1 = vp_table_node_slope(sc, n + 1) * h;
      const double w2 = w * w, w3 = w2 * w;
      // H(w) = f0 + (f1 - f0) h01(w) + d0 h10(w) + d1 h11(w) (h00 + h01 = 1), and dH/dt = N dH/dw.
      const double value = f0 + (f1 - f0) * (3 * w2 - 2 * w3) + d0 * (w3 - 2 * w2 + w) + d1 * (w3 - w2);
      const double slope = ((f1 - f0) * (6 * w - 6 * w2) + d0 * (3 * w2 - 4 * w + 1) + d1 * (3 * w2 - 2 * w)) * double(N);
      return vp_point(t, value, slope);
    }
    case schedule_kind::variance_exploding: {
      // log(sigma_max / sigma_min) and its growth by logs where the ratio or the growth passes the double range
      // (sigma_min = 1e-300 and sigma_max = 1e10 gave s = inf at every t > 0): the same bits otherwise.
      const double ratio = sc.sigma_max / sc.sigma_min;
      const double rate = std::isfinite(ratio) ? std::log(ratio) : std::log(sc.sigma_max) - std::log(sc.sigma_min);
      const double growth = std::exp(rate * t);
      p.a = 1;
      p.s = std::isfinite(growth) ? sc.sigma_min * growth : std::exp(std::log(sc.sigma_min) + rate * t);
      p.ds_dt = rate * p.s;
      return p;
    }
    case schedule_kind::ornstein_uhlenbeck: {
      p.a = std::exp(-t);
      p.da_dt = -p.a;
      p.s = std::sqrt(-std::expm1(-2 * t));
      p.ds_dt = p.s > 0 ? p.a * p.a / p.s : 0.0;
      return p;
    }
    case schedule_kind::linear_interpolant:
      p.a = 1 - t;
      p.s = t;
      p.da_dt = -1;
      p.ds_dt = 1;
      return p;
    case schedule_kind::stochastic_localization:
      p.a = t;
      p.s = std::sqrt(t);
      p.da_dt = 1;
      p.ds_dt = p.s > 0 ? 0.5 / p.s : 0.0;
      return p;
  }
  DIFFSAMPLE_EXPECTS(false, "schedule.kind: invalid value " << static_cast<int>(sc.kind));
  return p;
}

std::vector<schedule_point> noise_schedule::points(std::int64_t steps) const {
  DIFFSAMPLE_EXPECTS(kind >= schedule_kind::vp_linear && kind <= schedule_kind::stochastic_localization,
                     "schedule.kind: invalid value " << static_cast<int>(kind));
  limits::check("steps", steps, 1, limits::max_steps);
  check_parameters(*this);
  // Times are the custom grid's only: with another grid they would be ignored, and the run take a grid its caller
  // did not ask for.
  DIFFSAMPLE_EXPECTS(times.empty() || grid == time_grid::custom,
                     "schedule.times: " << times.size() << " times given, but schedule.grid is " << to_string(grid)
                                        << ", which places its own: set grid = custom to run on them (with_times() "
                                        << "does), or leave times empty");
  std::vector<double> t(static_cast<std::size_t>(steps) + 1);
  const double N = double(steps);
  switch (grid) {
    case time_grid::uniform:
      for (std::int64_t k = 0; k <= steps; ++k) t[k] = t_start + (t_end - t_start) * (double(k) / N);
      break;
    case time_grid::quadratic:
      for (std::int64_t k = 0; k <= steps; ++k) {
        const double u = 1 - double(k) / N;
        t[k] = t_end + (t_start - t_end) * u * u;
      }
      break;
    case time_grid::geometric:
      DIFFSAMPLE_EXPECTS(t_start > 0 && t_end > 0 && std::isfinite(t_start) && std::isfinite(t_end),
                         "schedule: a geometric grid needs positive finite ends, got t_start = "
                             << t_start << ", t_end = " << t_end);
      for (std::int64_t k = 0; k <= steps; ++k) t[k] = t_start * std::pow(t_end / t_start, double(k) / N);
      break;
    case time_grid::custom:
      DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(times.size()) == steps + 1,
                         "schedule.times: a custom grid of " << steps << " steps needs " << steps + 1
                                                             << " times, got " << times.size());
      t = times;
      break;
    default: DIFFSAMPLE_EXPECTS(false, "schedule.grid: invalid value " << static_cast<int>(grid));
  }
  t.front() = grid == time_grid::custom ? t.front() : t_start;  // exact ends despite rounding in the formulas
  t.back() = grid == time_grid::custom ? t.back() : t_end;

  std::vector<schedule_point> out(t.size());
  const bool custom = grid == time_grid::custom;
  for (const bool first : {true, false}) {
    const double end = first ? t.front() : t.back();
    DIFFSAMPLE_EXPECTS(std::isfinite(end),
                       (custom ? (first ? std::string("schedule.times[0]")
                                        : "schedule.times[" + std::to_string(t.size() - 1) + "]")
                               : std::string(first ? "schedule.t_start" : "schedule.t_end"))
                           << ": must be finite, got " << end);
  }
  const double direction = t.back() - t.front();
  DIFFSAMPLE_EXPECTS(std::isfinite(direction) && direction != 0,
                     "schedule: t_start = " << t.front() << " and t_end = " << t.back() << " must differ");
  for (std::size_t k = 0; k < t.size(); ++k) {
    if (k > 0)
      // By the sign, not the product (t[k] - t[k - 1]) direction, which underflowed to 0 for times about 1e-162
      // apart and refused a strictly monotone grid.
      DIFFSAMPLE_EXPECTS(direction > 0 ? t[k] > t[k - 1] : t[k] < t[k - 1],
                         "schedule.times[" << k << "]: " << t[k] << " after " << t[k - 1]
                                           << " is not strictly monotone from t_start to t_end");
    check_domain(*this, t[k]);
    out[k] = detail::point_at(*this, t[k]);  // the parameters were checked above
    const schedule_point& p = out[k];
    check_channel(p);
    // Signal-to-noise ratio a^2 / s^2 strictly increasing, compared without dividing: s_k a_{k+1} > s_{k+1} a_k.
    if (k > 0)
      DIFFSAMPLE_EXPECTS(out[k - 1].s * p.a > p.s * out[k - 1].a,
                         "schedule: the signal-to-noise ratio does not increase from t = "
                             << out[k - 1].t << " (a = " << out[k - 1].a << ", s = " << out[k - 1].s << ") to t = "
                             << p.t << " (a = " << p.a << ", s = " << p.s
                             << "); sampling must run from noise towards data");
  }
  return out;
}

namespace detail {

void check_unread_schedule(const char* name, const noise_schedule& s, const std::string& method) {
  const noise_schedule d = noise_schedule::vp_linear();
  const std::string at = name;
  auto field = [&](const char* f, const auto& value, const auto& fallback) {
    check_unread((at + "." + f).c_str(), value, fallback, method);
  };
  auto values = [&](const char* f, const std::vector<double>& value, const std::vector<double>& fallback) {
    // Compared entry by entry: a NaN is never equal, so a vector holding one is refused too.
    const bool same = value.size() == fallback.size() && std::equal(value.begin(), value.end(), fallback.begin());
    check_unread((at + "." + f).c_str(), same, method, std::to_string(value.size()) + " values",
                 std::to_string(fallback.size()) + " values");
  };
  field("kind", s.kind, d.kind);
  field("beta_min", s.beta_min, d.beta_min);
  field("beta_max", s.beta_max, d.beta_max);
  field("cosine_offset", s.cosine_offset, d.cosine_offset);
  values("alpha_bar", s.alpha_bar, d.alpha_bar);
  field("sigma_min", s.sigma_min, d.sigma_min);
  field("sigma_max", s.sigma_max, d.sigma_max);
  field("grid", s.grid, d.grid);
  field("t_start", s.t_start, d.t_start);
  field("t_end", s.t_end, d.t_end);
  values("times", s.times, d.times);
}

}  // namespace detail

}  // namespace diffsample
