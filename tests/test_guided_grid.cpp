// The time grids of the guided samplers (guided_grid, guided_times()): the sqrt_alpha_bar grid is uniform in the
// signal scale a, the spectral grid holds the closed-form times where alpha-bar sigma_y^2 = (1 - alpha-bar) S_i^2 on
// the continuous VP-linear schedule for every singular value of every problem's operator (dense, mask and SVD
// forms alike), and a sampler run on a grid option is the run on the schedule's custom times guided_times() gives.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>

#include "src/guided_reduction.hpp"

namespace ds = diffsample;

namespace {

constexpr double beta_min = 0.1, beta_max = 20.0;  // noise_schedule::vp_linear()'s defaults

// a(t) of the continuous VP-linear schedule: alpha-bar(t) = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2)).
double a_at(double t) { return std::exp(-0.5 * (beta_min * t + 0.5 * (beta_max - beta_min) * t * t)); }

// The time where alpha-bar sigma_y^2 = (1 - alpha-bar) S^2, i.e. alpha-bar = S^2 / (S^2 + sigma_y^2): the positive
// root of (beta_max - beta_min) t^2 / 2 + beta_min t - log(1 + sigma_y^2 / S^2) = 0.
double spectral_time(double S, double sigma_y) {
  const double c = std::log1p(sigma_y * sigma_y / (S * S)), q = beta_max - beta_min;
  return (-beta_min + std::sqrt(beta_min * beta_min + 2 * q * c)) / q;
}

ds::gaussian_mixture prior(std::int64_t d) { return ds::grid_mixture(d, 3, 4.0, 1.0, std::vector<double>(9, 1.0)); }

// A 2 x 6 matrix with orthogonal rows of norms S0 and S1 (its singular values).
std::vector<double> two_rows(double S0, double S1) {
  std::vector<double> A(12, 0.0);
  const double r = 1 / std::sqrt(2.0);
  A[0] = S0 * r;  // row 0 along (e0 + e3) / sqrt 2
  A[3] = S0 * r;
  A[6 + 1] = S1 * r;  // row 1 along (e1 - e4) / sqrt 2
  A[6 + 4] = -S1 * r;
  return A;
}

ds::guided_options grid_options(ds::guided_grid grid, std::int64_t steps) {
  ds::guided_options o;
  o.potentials = ds::guided_potentials::linear;
  o.grid = grid;
  o.steps = steps;
  o.particles = 64;
  return o;
}

// How many of the grid's points lie within 1e-9 of t.
int hits(const std::vector<double>& times, double t) {
  return int(std::count_if(times.begin(), times.end(), [&](double u) { return std::abs(u - t) < 1e-9; }));
}

// The message guided_times() throws with these options ("" if it does not throw).
std::string refusal(const ds::guided_problems& pr, const ds::guided_options& o) {
  try {
    ds::guided_times(prior(6), pr, o);
  } catch (const ds::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// The schedule's own grid is what guided_times() returns for guided_grid::schedule (uniform in t by default).
TEST(GuidedGrid, ScheduleGridIsTheSchedules) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  const std::vector<double> t = ds::guided_times(prior(6), pr, grid_options(ds::guided_grid::schedule, 40));
  ASSERT_EQ(t.size(), 41u);
  for (int k = 0; k <= 40; ++k) EXPECT_NEAR(t[k], 1.0 - k / 40.0, 1e-15) << k;
}

// sqrt_alpha_bar: a(t_k) = a(1) + (1 - a(1)) k / K, from t = 1 to t = 0.
TEST(GuidedGrid, SqrtAlphaBarIsUniformInA) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  const std::int64_t K = 50;
  const std::vector<double> t = ds::guided_times(prior(6), pr, grid_options(ds::guided_grid::sqrt_alpha_bar, K));
  ASSERT_EQ(t.size(), std::size_t(K + 1));
  EXPECT_EQ(t.front(), 1.0);
  EXPECT_EQ(t.back(), 0.0);
  const double a0 = a_at(1.0);
  for (std::int64_t k = 0; k <= K; ++k) EXPECT_NEAR(a_at(t[k]), a0 + (1 - a0) * double(k) / double(K), 1e-12) << k;
}

// noise_ratio: (s / a)^(1/7) uniform over the first K points, from t = 1 to the uniform grid's point (K - 1) / K
// of the way (t = 1 / K), then t = 0; s / a = sqrt(1 / alpha-bar - 1) in closed form on VP-linear. Seen to fail
// with rho = 3 in place of 7 (the third point at t = 0.9855 instead of 0.9759).
TEST(GuidedGrid, NoiseRatioIsUniformInTheRatiosSeventhRoot) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  const std::int64_t K = 40;
  const std::vector<double> t = ds::guided_times(prior(6), pr, grid_options(ds::guided_grid::noise_ratio, K));
  ASSERT_EQ(t.size(), std::size_t(K + 1));
  EXPECT_EQ(t.front(), 1.0);
  EXPECT_EQ(t.back(), 0.0);
  EXPECT_NEAR(t[K - 1], 1.0 / double(K), 1e-15);
  auto root = [](double u) { return std::pow(std::sqrt(1 / (a_at(u) * a_at(u)) - 1), 1 / 7.0); };
  const double r0 = root(1.0), r1 = root(1.0 / double(K));
  for (std::int64_t k = 0; k < K; ++k)
    EXPECT_NEAR(root(t[k]), r0 + (r1 - r0) * double(k) / double(K - 1), 1e-9) << k;
  for (std::int64_t k = 0; k < K; ++k) EXPECT_GT(t[k], t[k + 1]) << k;
  // Steps are finer than uniform in t at the noisy end.
  EXPECT_LT(t[0] - t[1], 1.0 / double(K));
  EXPECT_EQ(ds::guided_times(prior(6), pr, grid_options(ds::guided_grid::noise_ratio, 1)),
            (std::vector<double>{1.0, 0.0}));
}

// spectral: the closed-form times for both singular values, uniform in a between them, and the steps split between
// the three segments in proportion to their lengths in a (each 1 + its share of K - 3, to one step). The dense
// matrix, the SVD operator and a mask with the same singular values give the same grid.
TEST(GuidedGrid, SpectralHoldsTheClosedFormTimes) {
  const double S0 = 2.0, S1 = 0.5, sigma_y = 0.3;
  const std::int64_t K = 60, d = 6;
  const double t0 = spectral_time(S0, sigma_y), t1 = spectral_time(S1, sigma_y);
  ASSERT_LT(t0, t1);  // the larger singular value's level is reached later (less noise)
  ds::guided_problems dense;
  dense.A = two_rows(S0, S1);
  dense.d_y = 2;
  dense.y = {0.3, -0.2};
  dense.sigma_y = {sigma_y};
  const ds::guided_options o = grid_options(ds::guided_grid::spectral, K);
  const std::vector<double> t = ds::guided_times(prior(d), dense, o);
  ASSERT_EQ(t.size(), std::size_t(K + 1));
  EXPECT_EQ(hits(t, t0), 1);
  EXPECT_EQ(hits(t, t1), 1);
  for (std::int64_t k = 0; k < K; ++k) ASSERT_GT(t[k], t[k + 1]) << k;
  // Segments [1, t1], [t1, t0], [t0, 0] in sampling order: uniform in a inside each, counts by length in a.
  const double a_lo = a_at(1.0), a_1 = a_at(t1), a_0 = a_at(t0), a_hi = 1.0;
  const double ends[] = {a_lo, a_1, a_0, a_hi};
  std::int64_t k = 0;
  for (int j = 0; j < 3; ++j) {
    const std::int64_t first = k;
    while (k < K && a_at(t[k + 1]) <= ends[j + 1] + 1e-12) ++k;
    const std::int64_t n = k - first;
    const double share = double(K - 3) * (ends[j + 1] - ends[j]) / (a_hi - a_lo);
    EXPECT_GE(double(n), 1 + std::floor(share)) << j;
    EXPECT_LE(double(n), 2 + std::floor(share)) << j;
    for (std::int64_t i = first; i <= k; ++i)
      EXPECT_NEAR(a_at(t[i]), ends[j] + (ends[j + 1] - ends[j]) * double(i - first) / double(n), 1e-12) << i;
  }
  EXPECT_EQ(k, K);

  // The same operator as a thin SVD (U = I, V the rows' directions) and a mask with gains S0, S1.
  const double r = 1 / std::sqrt(2.0);
  std::vector<double> V(d * 2, 0.0);
  V[0 * 2 + 0] = r;
  V[3 * 2 + 0] = r;
  V[1 * 2 + 1] = r;
  V[4 * 2 + 1] = -r;
  ds::guided_problems svd = dense, mask = dense;
  svd.A.clear();
  svd.operators = {ds::observation_operator::svd(2, d, {1, 0, 0, 1}, {S0, S1}, V)};
  mask.A.clear();
  mask.operators = {ds::observation_operator::mask(d, {2, 5}, {-S1, S0})};
  for (const auto* other : {&svd, &mask}) {
    const std::vector<double> u = ds::guided_times(prior(d), *other, o);
    ASSERT_EQ(u.size(), t.size());
    for (std::size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(u[i], t[i], 1e-12) << i;
  }
}

// B problems share one grid: the union of every problem's levels; a level outside the grid adds nothing.
TEST(GuidedGrid, SpectralGridOfSeveralProblems) {
  ds::guided_problems pr;
  pr.problems = 3;
  pr.d_y = 1;
  pr.A = {0.0, 1.5, 0.0, 0.0, 0.0, 0.0};  // one 1 x 6 row shared: S = 1.5
  pr.y = {0.1, 0.2, 0.3};
  pr.sigma_y = {0.2, 0.7, 1e4};  // the third level, s / a = 6667, is noisier than the grid's start
  const std::vector<double> t = ds::guided_times(prior(6), pr, grid_options(ds::guided_grid::spectral, 30));
  ASSERT_EQ(t.size(), 31u);
  EXPECT_EQ(hits(t, spectral_time(1.5, 0.2)), 1);
  EXPECT_EQ(hits(t, spectral_time(1.5, 0.7)), 1);
}

// The spectral grid's singular values (an FP64 eigendecomposition of each dense operator's A A^T) are computed once
// per operator set (src/guided_reduction.hpp): the workspace query and the run it sizes, guided_times() and runs
// with another y under the same operator share them; an operator one bit apart is decomposed anew.
TEST(GuidedGrid, SpectralValuesAreComputedOncePerOperatorSet) {
  ds::guided_problems pr;
  pr.A = two_rows(2.125, 0.375);  // used by no other test: the memo does not hold it yet
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.05};
  ds::guided_options o = grid_options(ds::guided_grid::spectral, 12);
  o.particles = 8;
  const ds::gaussian_mixture p = prior(6);
  const ds::execution cpu{ds::executor::cpu, nullptr};
  const auto run = [&](const ds::guided_problems& g) {
    std::vector<float> x(static_cast<std::size_t>(o.particles * 6));
    ds::guided_outputs out;
    out.particles = x.data();
    const std::size_t bytes = ds::guided_workspace_bytes(p, g, o, cpu);
    std::vector<std::max_align_t> ws(bytes / sizeof(std::max_align_t) + 1);
    ds::guided_sample(p, out, g, o, cpu, ws.data(), bytes);
  };
  std::int64_t before = ds::detail::spectral_factorisations();
  run(pr);
  EXPECT_EQ(ds::detail::spectral_factorisations() - before, 1) << "the query and the run";
  ds::guided_problems other = pr;
  other.y = {-0.4, 0.1};
  before = ds::detail::spectral_factorisations();
  (void)ds::guided_times(p, pr, o);
  run(other);
  EXPECT_EQ(ds::detail::spectral_factorisations() - before, 0) << "guided_times() and another y";
  other.A[0] = std::nextafter(other.A[0], 10.0);
  before = ds::detail::spectral_factorisations();
  (void)ds::guided_times(p, other, o);
  EXPECT_EQ(ds::detail::spectral_factorisations() - before, 1) << "an operator one bit apart";
}

// A set mixing a dense operator with an SVD operator keeps the dense one's singular values as a set of dense
// operators does (before, any set holding another kind was decomposed per call, the dense operator included: 0
// decompositions counted where 1 is expected, seen failing so); the SVD operator's values are its own, taken per
// call: another SVD operator beside the same dense one reuses the dense values only, and the grid holds the new SVD
// operator's level, not the first one's.
TEST(GuidedGrid, SpectralValuesOfADenseOperatorBesideAnSvdOneAreKept) {
  const auto svd = [](double S) {
    const double r = 1 / std::sqrt(2.0);  // V's column along (e2 + e5) / sqrt 2
    return ds::observation_operator::svd(2, 6, {1.0, 0.0}, {S}, {0, 0, r, 0, 0, r});
  };
  ds::guided_problems pr;
  pr.problems = 2;
  pr.d_y = 2;
  pr.operators = {svd(1.5), ds::observation_operator::dense(2, 6, two_rows(2.25, 0.625))};
  pr.y = {0.3, -0.2, 0.1, 0.4};
  pr.sigma_y = {0.05};
  const ds::guided_options o = grid_options(ds::guided_grid::spectral, 30);
  std::int64_t before = ds::detail::spectral_factorisations();
  std::vector<double> t = ds::guided_times(prior(6), pr, o);
  (void)ds::guided_times(prior(6), pr, o);
  EXPECT_EQ(ds::detail::spectral_factorisations() - before, 1) << "two calls";
  for (double S : {1.5, 2.25, 0.625}) EXPECT_EQ(hits(t, spectral_time(S, 0.05)), 1) << S;
  pr.operators[0] = svd(0.8);
  before = ds::detail::spectral_factorisations();
  t = ds::guided_times(prior(6), pr, o);
  EXPECT_EQ(ds::detail::spectral_factorisations() - before, 0) << "another SVD operator beside the same dense one";
  for (double S : {0.8, 2.25, 0.625}) EXPECT_EQ(hits(t, spectral_time(S, 0.05)), 1) << S;
  EXPECT_EQ(hits(t, spectral_time(1.5, 0.05)), 0);
}

// Schedules without an increasing a, and too few steps for the spectral grid's segments, are refused by name.
TEST(GuidedGrid, RefusesWhatTheScheduleCannotGive) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  ds::guided_options o = grid_options(ds::guided_grid::sqrt_alpha_bar, 20);
  o.schedule = ds::noise_schedule::variance_exploding();  // a = 1 throughout
  EXPECT_NE(refusal(pr, o).find("options.grid"), std::string::npos) << refusal(pr, o);
  o.grid = ds::guided_grid::noise_ratio;
  EXPECT_NE(refusal(pr, o).find("options.grid"), std::string::npos) << refusal(pr, o);
  o = grid_options(ds::guided_grid::spectral, 2);  // two levels inside the grid: three segments
  EXPECT_NE(refusal(pr, o).find("options.steps"), std::string::npos) << refusal(pr, o);
  o.grid = static_cast<ds::guided_grid>(7);
  EXPECT_NE(refusal(pr, o).find("options.grid"), std::string::npos) << refusal(pr, o);
  o = grid_options(ds::guided_grid::spectral, 3);
  EXPECT_EQ(ds::guided_times(prior(6), pr, o).size(), 4u);
}

// A grid option places the times itself: with a schedule that already holds custom times the two conflict, and
// both guided_times() and guided_sample() refuse it naming both options (it failed with "schedule.times: a custom
// grid of 1 steps needs 2 times, got 16", naming neither).
TEST(GuidedGrid, RefusesAGridOptionOnCustomScheduleTimes) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  std::vector<double> times(16);
  for (int k = 0; k < 16; ++k) times[k] = 1.0 - k / 15.0;
  for (const ds::guided_grid g : {ds::guided_grid::sqrt_alpha_bar, ds::guided_grid::spectral, ds::guided_grid::noise_ratio}) {
    ds::guided_options o = grid_options(g, 15);
    o.schedule.with_times(times);
    const std::string message = refusal(pr, o);
    EXPECT_NE(message.find("options.grid"), std::string::npos) << message;
    EXPECT_NE(message.find(ds::to_string(g)), std::string::npos) << message;
    EXPECT_NE(message.find("options.schedule.times"), std::string::npos) << message;
    std::vector<float> x(64 * 6);
    ds::guided_outputs outs;
    outs.samples = x.data();
    try {
      ds::guided_sample(prior(6), outs, pr, o, {ds::executor::cpu, nullptr});
      ADD_FAILURE() << ds::to_string(g) << ": guided_sample accepted the conflict";
    } catch (const ds::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
    // Either option alone runs: the custom times on the schedule's grid, the grid option on the schedule's own.
    o.grid = ds::guided_grid::schedule;
    EXPECT_EQ(ds::guided_times(prior(6), pr, o), times) << ds::to_string(g);
  }
}

// A run on a grid option is the run on the schedule's custom times that guided_times() returns, bit for bit (SMC and
// DDRM, CPU executor).
TEST(GuidedGrid, SamplersRunOnTheGuidedTimes) {
  ds::guided_problems pr;
  pr.A = two_rows(2.0, 0.5);
  pr.d_y = 2;
  pr.y = {0.3, -0.2};
  pr.sigma_y = {0.3};
  const ds::gaussian_mixture m = prior(6);
  for (const ds::guided_sampler s : {ds::guided_sampler::smc, ds::guided_sampler::ddrm}) {
    ds::guided_options o = grid_options(ds::guided_grid::spectral, 12);
    o.sampler = s;
    o.seed = 3;
    ds::guided_options custom = o;
    custom.grid = ds::guided_grid::schedule;
    custom.schedule.with_times(ds::guided_times(m, pr, o));
    ds::guided_options plain = custom;
    plain.schedule = ds::noise_schedule::vp_linear();
    std::vector<float> x(64 * 6), y(64 * 6), z(64 * 6);
    for (auto [opts, out] : {std::pair{&o, &x}, std::pair{&custom, &y}, std::pair{&plain, &z}}) {
      ds::guided_outputs outs;
      outs.samples = out->data();
      ds::guided_sample(m, outs, pr, *opts, {ds::executor::cpu, nullptr});
    }
    EXPECT_EQ(x, y) << ds::to_string(s);
    EXPECT_NE(x, z) << ds::to_string(s);  // the grid changed the run
  }
}

// Names round-trip.
TEST(GuidedGrid, Names) {
  for (const ds::guided_grid g :
       {ds::guided_grid::schedule, ds::guided_grid::sqrt_alpha_bar, ds::guided_grid::spectral,
        ds::guided_grid::noise_ratio})
    EXPECT_EQ(ds::parse_guided_grid(ds::to_string(g)), g);
  EXPECT_THROW(ds::parse_guided_grid("quadratic"), ds::invalid_argument);
}
