// The time grids of the guided samplers (guided_grid): uniform in the signal scale a = sqrt(alpha-bar), the
// spectral grid, which adds a point where the noise level s / a reaches each singular direction's observation noise
// sigma_y / S_i, and the noise-ratio grid, uniform in (s / a)^(1 / 7). Host-only, FP64; the result is a custom grid of the schedule, so the samplers run unchanged.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "kernels/linalg.cuh"
#include "src/cuda_check.hpp"
#include "src/guided_reduction.hpp"
#include "src/guided_samplers.hpp"
#include "src/schedule_defaults.hpp"
#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>

namespace diffsample::detail {

namespace {

/// The time at fraction u in [0, 1] of the way from t_start to t_end.
double time_at(const noise_schedule& sc, double u) { return sc.t_start + (sc.t_end - sc.t_start) * u; }

/// The fraction u in [0, 1] where the increasing function f(u) reaches `target` (f(0) <= target <= f(1)), by
/// bisection to the resolution of double.
template <class F>
double solve_fraction(F f, double target) {
  double lo = 0, hi = 1;
  for (int i = 0; i < 200 && hi - lo > 0; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    if (f(mid) < target)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

/// The singular values S_i > 0 of operator c of the problems (an SVD's as given, the others' from A A^T).
std::vector<double> singular_values(const guided_problems& pr, std::int64_t c, std::int64_t d) {
  const std::int64_t dy = pr.d_y;
  std::vector<double> G(static_cast<std::size_t>(dy * dy));
  if (pr.operators.empty()) {
    kernels::gram(pr.A.data() + c * dy * d, dy, d, G.data());
  } else {
    const observation_operator& op = pr.operators[static_cast<std::size_t>(c)];
    if (op.kind() == observation_kind::svd) return op.diagonal();
    G = op.gram();
  }
  std::vector<double> values, E;
  symmetric_eigen(G, dy, values, E);
  double largest = 0;
  for (double v : values) largest = std::max(largest, v);
  std::vector<double> out;
  for (double v : values)
    if (v > 1e-12 * largest) out.push_back(std::sqrt(v));
  return out;
}

std::atomic<std::int64_t> spectra_made{0};

// The singular values of the problems' `count` operators (singular_values()). A dense operator's (the eigenvalues of
// its A A^T: seconds for a few hundred rows) come from the memo of the last operator sets (src/guided_reduction.hpp)
// when the set's key matches, else are computed and kept; an SVD operator's values are its own and a mask's its
// gains (cheap: taken per call, not part of the key). The key: the dense rows given then their count and 0; or per
// operator a tag, 0 followed by a dense operator's matrix, 1 for any other, then the count of operators and 1 (the
// tags and the trailing pair fix the layout, so that no two sets share a key). A set mixing dense operators with
// SVD operators or masks is kept too: before, it was decomposed on every call, the dense operators included.
std::shared_ptr<const std::vector<std::vector<double>>> operator_spectra(const guided_problems& pr, std::int64_t count,
                                                                        std::int64_t d) {
  const auto cheap = [&](std::int64_t c) {
    return !pr.operators.empty() && pr.operators[static_cast<std::size_t>(c)].kind() != observation_kind::dense;
  };
  bool any_cheap = false, all_cheap = true;
  for (std::int64_t c = 0; c < count; ++c) {
    if (cheap(c))
      any_cheap = true;
    else
      all_cheap = false;
  }
  if (all_cheap) {
    auto S = std::make_shared<std::vector<std::vector<double>>>(static_cast<std::size_t>(count));
    for (std::int64_t c = 0; c < count; ++c) (*S)[c] = singular_values(pr, c, d);
    return S;
  }
  std::vector<double> key;
  if (pr.operators.empty()) {
    key = operator_matrices(pr, d);
  } else {
    for (std::int64_t c = 0; c < count; ++c) {
      key.push_back(cheap(c) ? 1.0 : 0.0);
      if (cheap(c)) continue;
      const std::vector<double>& A = pr.operators[static_cast<std::size_t>(c)].dense_matrix();
      key.insert(key.end(), A.begin(), A.end());
    }
  }
  key.push_back(static_cast<double>(count));
  key.push_back(pr.operators.empty() ? 0.0 : 1.0);
  static factorisation_memo<std::vector<std::vector<double>>> memo;
  std::shared_ptr<const std::vector<std::vector<double>>> kept = memo.find(pr.d_y, d, key);
  if (!kept) {
    auto S = std::make_shared<std::vector<std::vector<double>>>(static_cast<std::size_t>(count));
    std::size_t values = 0;
    for (std::int64_t c = 0; c < count; ++c) {
      if (cheap(c)) continue;
      (*S)[c] = singular_values(pr, c, d);
      values += (*S)[c].size();
    }
    spectra_made.fetch_add(1, std::memory_order_relaxed);
    memo.keep(pr.d_y, d, std::move(key), S, values);
    kept = std::move(S);
  }
  if (!any_cheap) return kept;
  auto S = std::make_shared<std::vector<std::vector<double>>>(*kept);
  for (std::int64_t c = 0; c < count; ++c)
    if (cheap(c)) (*S)[c] = singular_values(pr, c, d);
  return S;
}

}  // namespace

std::int64_t spectral_factorisations() noexcept { return spectra_made.load(std::memory_order_relaxed); }

guided_options resolve_grid(std::int64_t d, const guided_problems& pr, const guided_options& o) {
  if (o.grid == guided_grid::schedule || o.sampler == guided_sampler::skrock) return o;
  DIFFSAMPLE_EXPECTS(
      o.grid == guided_grid::sqrt_alpha_bar || o.grid == guided_grid::spectral || o.grid == guided_grid::noise_ratio,
      "options.grid: invalid value " << static_cast<int>(o.grid));
  const noise_schedule& sc = o.schedule;
  // A grid option places the steps + 1 times itself, between t_start and t_end; custom times would be replaced.
  DIFFSAMPLE_EXPECTS(sc.grid != time_grid::custom,
                     "options.grid: " << to_string(o.grid) << " places the grid's times itself, but "
                                      << "options.schedule.times holds a custom grid (" << sc.times.size()
                                      << " times): pass one or the other (options.grid = schedule runs on the "
                                      << "custom times)");
  (void)sc.points(1);  // the schedule's parameters and ends (what points() checks of a one-step grid), so that the
                      // loops below read channels with detail::point_at(), without at()'s checks
  const std::int64_t K = o.steps;
  auto a_of = [&](double u) { return detail::point_at(sc, time_at(sc, u)).a; };
  const double a0 = a_of(0), a1 = a_of(1);
  DIFFSAMPLE_EXPECTS(std::isfinite(a0) && std::isfinite(a1) && a1 > a0,
                     "options.grid: " << to_string(o.grid) << " needs a signal scale a that increases from t_start = "
                                      << sc.t_start << " (a = " << a0 << ") to t_end = " << sc.t_end << " (a = " << a1
                                      << ")");
  // s / a decreases along the grid; solve on its negative, which increases.
  auto minus_ratio = [&](double u) {
    const schedule_point p = detail::point_at(sc, time_at(sc, u));
    return -p.s / p.a;
  };
  if (o.grid == guided_grid::noise_ratio) {
    // Uniform in (s / a)^(1 / rho) from t_start to the schedule's uniform grid's last point before t_end, then t_end.
    std::vector<double> times{sc.t_start};
    if (K > 1) {
      constexpr double rho = 7;
      const double u_last = double(K - 1) / double(K);
      const double r0 = -minus_ratio(0), r_last = -minus_ratio(u_last);
      DIFFSAMPLE_EXPECTS(std::isfinite(r0) && r_last > 0 && r_last < r0,
                         "options.grid: noise_ratio needs s / a to decrease from t_start (" << r0 << ") to a positive "
                                                                                            << "value before t_end ("
                                                                                            << r_last << ")");
      const double p0 = std::pow(r0, 1 / rho), p1 = std::pow(r_last, 1 / rho);
      for (std::int64_t k = 1; k + 1 < K; ++k) {
        const double r = std::pow(p0 + (p1 - p0) * double(k) / double(K - 1), rho);
        times.push_back(time_at(sc, solve_fraction(minus_ratio, -r)));
      }
      times.push_back(time_at(sc, u_last));
    }
    times.push_back(sc.t_end);
    guided_options out = o;
    out.schedule.with_times(std::move(times));
    return out;
  }
  // The knots, as fractions u of the way from t_start to t_end: where s / a = sigma_y / S_i, strictly inside.
  std::vector<double> knots;
  if (o.grid == guided_grid::spectral) {
    const double r0 = detail::point_at(sc, sc.t_start).s / a0, r1 = detail::point_at(sc, sc.t_end).s / a1;
    const std::int64_t count = pr.operators.empty()
                                   ? (pr.A.size() == static_cast<std::size_t>(pr.d_y * d) ? 1 : pr.problems)
                                   : static_cast<std::int64_t>(pr.operators.size());
    const std::shared_ptr<const std::vector<std::vector<double>>> spectra = operator_spectra(pr, count, d);
    const std::vector<std::vector<double>>& S = *spectra;
    for (std::int64_t b = 0; b < pr.problems; ++b) {
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      for (double s : S[count == 1 ? 0 : b]) {
        const double level = sy / s;
        if (!(level < r0 && level > r1)) continue;
        knots.push_back(solve_fraction(minus_ratio, -level));
      }
    }
    std::sort(knots.begin(), knots.end());
    // Knots closer than 1e-9 of the grid's span in a to each other or to an end are one point.
    const double tolerance = 1e-9 * (a1 - a0);
    std::vector<double> distinct;
    double last = a0;
    for (double u : knots) {
      const double a = a_of(u);
      if (a - last > tolerance && a1 - a > tolerance) {
        distinct.push_back(u);
        last = a;
      }
    }
    knots.swap(distinct);
  }
  const std::int64_t m = static_cast<std::int64_t>(knots.size());
  DIFFSAMPLE_EXPECTS(K >= m + 1, "options.steps: the spectral grid has " << m << " points at the operators' singular "
                                                                        << "levels, so it needs at least " << m + 1
                                                                        << " steps, got " << K);
  // Segment ends in a: a0, the knots' a, a1. Segment j gets 1 + n_j steps, the n_j a largest-remainder split of
  // K - m - 1 in proportion to the segments' lengths.
  std::vector<double> ends{a0};
  for (double u : knots) ends.push_back(a_of(u));
  ends.push_back(a1);
  const std::int64_t segments = m + 1, spare = K - segments;
  std::vector<std::int64_t> n(static_cast<std::size_t>(segments), 1);
  std::vector<std::pair<double, std::int64_t>> remainders;
  std::int64_t given = 0;
  for (std::int64_t j = 0; j < segments; ++j) {
    const double share = double(spare) * (ends[j + 1] - ends[j]) / (a1 - a0);
    const std::int64_t whole = std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(share)), spare - given);
    n[j] += whole;
    given += whole;
    remainders.emplace_back(share - double(whole), j);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& x, const auto& y) { return x.first > y.first; });
  for (std::int64_t i = 0; given < spare; ++i, ++given) ++n[remainders[static_cast<std::size_t>(i % segments)].second];
  std::vector<double> times;
  times.reserve(static_cast<std::size_t>(K + 1));
  for (std::int64_t j = 0; j < segments; ++j) {
    for (std::int64_t i = 0; i < n[j]; ++i) {
      double t;
      if (i == 0) {
        t = j == 0 ? sc.t_start : time_at(sc, knots[j - 1]);
      } else {
        const double a = ends[j] + (ends[j + 1] - ends[j]) * double(i) / double(n[j]);
        t = time_at(sc, solve_fraction(a_of, a));
      }
      times.push_back(t);
    }
  }
  times.push_back(sc.t_end);
  guided_options out = o;
  out.schedule.with_times(std::move(times));
  return out;
}

std::int64_t multistep_weights(const std::vector<schedule_point>& pts, float* w, double* h_prev, double* h) {
  // w_k = h_k / (2 h_{k-1}), h_k = lambda_{k+1} - lambda_k, lambda = log(a / s) (FP64); 0 at the first step and at a
  // last step to s = 0, which keep the denoiser (kernels::multistep_row).
  const auto lambda = [&](std::size_t k) { return std::log(pts[k].a / pts[k].s); };
  const std::size_t K = pts.size() - 1;
  for (std::size_t k = 0; k < K; ++k) {
    if (w != nullptr) w[k] = 0.f;
    if (k == 0 || !(pts[k + 1].s > 0)) continue;
    *h_prev = lambda(k) - lambda(k - 1);
    *h = lambda(k + 1) - lambda(k);
    if (!(std::isfinite(*h_prev) && std::isfinite(*h) && *h_prev > 0 && *h > 0)) return static_cast<std::int64_t>(k);
    if (w != nullptr) w[k] = float(0.5 * *h / *h_prev);
  }
  return -1;
}

guided_options resolve_options(std::int64_t d, const guided_problems& pr, const guided_options& given,
                               resolve_route route) {
  guided_options o = resolve_grid(d, pr, given);
  // final_moves = -1 (automatic): none unless the automatic potentials resolve to twisted below.
  const bool automatic_moves = o.final_moves < 0;
  if (automatic_moves) o.final_moves = 0;
  // resampling.ess_threshold = -1 (automatic, smc): 0.5 unless the automatic potentials resolve to twisted below.
  const bool automatic_threshold = o.sampler == guided_sampler::smc && o.resampling.ess_threshold == -1.0;
  if (automatic_threshold) o.resampling.ess_threshold = resampling_options{}.ess_threshold;
  if (o.potentials != guided_potentials::automatic) return o;
  o.potentials = guided_potentials::linear;
  // The plan's model is the caller's (it may not answer Jacobian products); the other samplers have no potentials.
  if (route == resolve_route::plan || o.sampler != guided_sampler::smc) return o;
  const std::vector<schedule_point> pts = o.schedule.points(o.steps);
  if (!(pts.back().s == 0.0)) return o;
  if (pr.d_y > kernels::moment_potential_max_dy) {
    // Linear potentials on a grid ending at s = 0 (d_y above the twisted potentials' limit): the final moves, as
    // below, with automatic_linear_final_moves.
    if (automatic_moves && o.final_resample) o.final_moves = automatic_linear_final_moves;
    return o;
  }
  o.potentials = guided_potentials::twisted;
  o.start_correction = true;
  double h_prev = 0, h = 0;
  o.multistep_kernel = o.multistep_kernel || multistep_weights(pts, nullptr, &h_prev, &h) < 0;
  // The final moves run where the prior's table reaches the grid's last point (a run or a shard of the global
  // distributed filter, which moves its own rows of the samples; not a plan) on the final resampling's samples.
  if (automatic_moves && o.final_resample) o.final_moves = automatic_final_moves;
  if (automatic_threshold) o.resampling.ess_threshold = automatic_twisted_ess_threshold;
  return o;
}

}  // namespace diffsample::detail
