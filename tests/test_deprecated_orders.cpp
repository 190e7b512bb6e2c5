// The argument orders before 0.3.0 stay as deprecated overloads until 1.0 (CHANGELOG, CONTRIBUTING "Argument
// order"): code written for 0.2.0 must compile and give what the current order gives. Each test calls both forms on
// the CPU executor with the same inputs and compares the results bit for bit (deterministic calls: the same
// functions run on the same data), so a forwarding overload that swaps or drops an argument fails here.
// This file uses the deprecated forms on purpose (tests/CMakeLists.txt silences their warnings for it alone).
#include <diffsample/diffsample.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

using namespace diffsample;

const execution cpu{executor::cpu, nullptr};

gaussian_mixture two_modes() { return gaussian_mixture(2, {0.3, 0.7}, {-2.0, 0.5, 1.5, -1.0}, {0.5, 0.8}); }

std::vector<float> points(std::int64_t n, std::int64_t d, float scale) {
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = scale * (static_cast<float>(i % 7) - 3.0f) + 0.1f * float(i);
  return x;
}

TEST(DeprecatedOrders, MixtureEvaluation) {
  const gaussian_mixture mix = two_modes();
  const std::int64_t n = 5;
  const std::vector<float> x = points(n, 2, 0.7f), v = points(n, 2, -0.3f);
  const channel ch{0.8, 0.6};
  for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
    // The same fill for both: log_density writes n of the n x 2 entries.
    std::vector<float> now(n * 2, -7), then(n * 2, -7);
    EXPECT_EQ(mix.evaluate(now.data(), n, x.data(), ch, q, cpu), executor::cpu);
    EXPECT_EQ(mix.evaluate(q, x.data(), n, ch, then.data(), cpu), executor::cpu);
    EXPECT_EQ(now, then) << to_string(executor::cpu);
    evaluate_options o;
    o.path = mixture_path::direct;
    std::fill(then.begin(), then.end(), -7.0f);
    EXPECT_EQ(mix.evaluate(q, x.data(), n, ch, then.data(), o, cpu).path, mixture_path::direct);
    EXPECT_EQ(now, then);
    std::vector<double> x64(x.begin(), x.end()), now64(n * 2, -7), then64(n * 2, -7);
    mix.evaluate_fp64(now64.data(), n, x64.data(), ch, q);
    mix.evaluate_fp64(q, x64.data(), n, ch, then64.data());
    EXPECT_EQ(now64, then64);
    EXPECT_EQ(mix.evaluate_workspace_bytes(q, n, o, cpu), mix.evaluate_workspace_bytes(n, q, o, cpu));
    EXPECT_EQ(mix.chosen_path(q, n, executor::cpu, o), mix.chosen_path(n, q, o, executor::cpu));
  }
  std::vector<float> now(n * 2, -1), then(n * 2, -2);
  mix.denoiser_jvp(now.data(), n, x.data(), v.data(), ch, cpu);
  mix.denoiser_jvp(x.data(), v.data(), n, ch, then.data(), cpu);
  EXPECT_EQ(now, then);
  std::fill(then.begin(), then.end(), -2.0f);
  mix.denoiser_jvp(x.data(), v.data(), n, ch, then.data(), evaluate_options{}, cpu);
  EXPECT_EQ(now, then);
  std::vector<double> x64(x.begin(), x.end()), v64(v.begin(), v.end()), now64(n * 2, -1), then64(n * 2, -2);
  mix.denoiser_jvp_fp64(now64.data(), n, x64.data(), v64.data(), ch);
  mix.denoiser_jvp_fp64(x64.data(), v64.data(), n, ch, then64.data());
  EXPECT_EQ(now64, then64);

  const std::vector<double> data = {0.0, 1.0, 2.0, -1.0, 0.5, 0.5};
  const gaussian_mixture a = gaussian_mixture::empirical(3, 2, data.data(), 0.1);
  const gaussian_mixture b = gaussian_mixture::empirical(data.data(), 3, 2, 0.1);
  EXPECT_EQ(a.means(), b.means());
  EXPECT_EQ(a.variances(), b.variances());
}

TEST(DeprecatedOrders, Samplers) {
  const gaussian_mixture mix = two_modes();
  const std::int64_t n = 6;
  langevin_options lo;
  lo.steps = 20;
  lo.seed = 3;
  std::vector<float> x1 = points(n, 2, 0.5f), x2 = x1;
  std::vector<std::int64_t> acc1(n, -1), acc2(n, -2);
  const langevin_report r1 = langevin(mix, x1.data(), {nullptr, acc1.data()}, n, lo, cpu);
  const langevin_report r2 = langevin(mix, x2.data(), n, lo, {nullptr, acc2.data()}, cpu);
  EXPECT_EQ(r1.ran, r2.ran);
  EXPECT_EQ(x1, x2);
  EXPECT_EQ(acc1, acc2);

  diffusion_options dopt;
  dopt.steps = 10;
  dopt.seed = 4;
  std::vector<float> y1(n * 2, 0), y2(n * 2, 1);
  diffusion(mix, y1.data(), {}, n, dopt, cpu);
  diffusion(mix, y2.data(), n, dopt, {}, cpu);
  EXPECT_EQ(y1, y2);

  guided_problems problems;
  problems.d_y = 1;
  problems.A = {1.0, 0.5};
  problems.y = {0.4};
  problems.sigma_y = {0.3};
  guided_options go;
  go.potentials = guided_potentials::linear;
  go.steps = 6;
  go.particles = 16;
  go.seed = 5;
  std::vector<float> s1(16 * 2, 0), s2(16 * 2, 1);
  double z1 = 0, z2 = 1;
  guided_outputs o1, o2;
  o1.samples = s1.data();
  o1.log_normaliser = &z1;
  o2.samples = s2.data();
  o2.log_normaliser = &z2;
  guided_sample(mix, o1, problems, go, cpu);
  guided_sample(mix, problems, go, o2, cpu);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(z1, z2);
}

TEST(DeprecatedOrders, DiscreteSamplers) {
  const bernoulli_mixture prior(3, {0.4, 0.6}, {0.9, 0.2, 0.5, 0.1, 0.7, 0.6});
  const std::int64_t n = 4;
  const std::vector<float> y = points(n, 3, 1.0f);
  std::vector<float> now(n * 3, -1), then(n * 3, -2);
  prior.evaluate(now.data(), n, y.data(), 0.8, quantity::score, cpu);
  prior.evaluate(quantity::score, y.data(), n, 0.8, then.data(), cpu);
  EXPECT_EQ(now, then);
  std::vector<double> y64(y.begin(), y.end()), now64(n * 3, -1), then64(n * 3, -2);
  prior.evaluate_fp64(now64.data(), n, y64.data(), 0.8, quantity::denoiser);
  prior.evaluate_fp64(quantity::denoiser, y64.data(), n, 0.8, then64.data());
  EXPECT_EQ(now64, then64);

  discrete_langevin_options lo;
  lo.steps = 15;
  lo.seed = 9;
  std::vector<float> c1(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) c1[i] = y[i] > 0 ? 1.f : -1.f;  // a start on {-1,1}^d
  std::vector<float> c2 = c1;
  std::vector<std::int64_t> a1(n, -1), a2(n, -2);
  EXPECT_EQ(discrete_langevin(prior, c1.data(), {a1.data()}, n, lo, cpu), executor::cpu);
  EXPECT_EQ(discrete_langevin(prior, c2.data(), n, lo, a2.data(), cpu).ran, executor::cpu);
  EXPECT_EQ(c1, c2);
  EXPECT_EQ(a1, a2);

  discrete_walk_jump_options wo;
  wo.steps = 5;
  wo.measurements = 2;
  wo.seed = 2;
  std::vector<float> j1(n * 3, 0), j2(n * 3, 1), u1(n * 3, 0), u2(n * 3, 1);
  EXPECT_EQ(discrete_walk_jump(prior, j1.data(), {u1.data(), nullptr}, n, wo, cpu), executor::cpu);
  EXPECT_EQ(discrete_walk_jump(prior, j2.data(), n, wo, {u2.data(), nullptr}, cpu).ran, executor::cpu);
  EXPECT_EQ(j1, j2);
  EXPECT_EQ(u1, u2);
}

TEST(DeprecatedOrders, Particles) {
  const std::int64_t B = 2, N = 8, d = 3;
  std::vector<float> log_w(B * N);
  for (std::size_t i = 0; i < log_w.size(); ++i) log_w[i] = -0.3f * float(i % 5) + (i % 3 == 0 ? 1.0f : 0.0f);
  resampling_options o;
  o.ess_threshold = 2.0;  // always resample
  o.seed = 11;
  std::vector<std::int32_t> anc1(B * N, -1), anc2(B * N, -2);
  std::vector<std::int64_t> anc64(B * N, -1);
  std::vector<particle_report> rep1(B), rep2(B);
  particle_outputs p1, p2;
  p1.ancestors = anc1.data();
  p1.reports = rep1.data();
  p2.ancestors = anc2.data();
  p2.reports = rep2.data();
  resample(p1, B, N, log_w.data(), o, cpu);
  resample(log_w.data(), B, N, o, p2, cpu);
  EXPECT_EQ(anc1, anc2);
  for (std::int64_t b = 0; b < B; ++b) EXPECT_EQ(rep1[b].ess, rep2[b].ess);
  for (std::size_t i = 0; i < anc1.size(); ++i) anc64[i] = anc1[i];

  const std::vector<float> states = points(B * N, d, 0.9f);
  std::vector<float> g1(B * N * d, -1), g2(B * N * d, -2), g3(B * N * d, -3), g4(B * N * d, -4);
  gather_particles(g1.data(), B, N, d, states.data(), anc1.data(), cpu);
  gather_particles(states.data(), B, N, d, anc1.data(), g2.data(), cpu);
  gather_particles(g3.data(), B, N, d, states.data(), anc64.data(), cpu);
  gather_particles(states.data(), B, N, d, anc64.data(), g4.data(), cpu);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(g1, g3);
  EXPECT_EQ(g1, g4);
}

TEST(DeprecatedOrders, Metrics) {
  const std::int64_t na = 40, nb = 30, d = 2;
  const std::vector<float> a = points(na, d, 0.4f), b = points(nb, d, -0.6f);
  // Different sizes, so a forwarding that swapped n_a and n_b or a and b would read other values (or refuse).
  EXPECT_EQ(sliced_wasserstein(na, nb, d, a.data(), b.data(), 16, 7, 2),
            sliced_wasserstein(a.data(), na, b.data(), nb, d, 16, 7, 2));
  EXPECT_EQ(sliced_wasserstein(na, nb, d, a.data(), b.data(), 16, 7, 1, cpu),
            sliced_wasserstein(a.data(), na, b.data(), nb, d, 16, 7, 1, cpu));
  double r1 = -1, r2 = -2;
  sliced_wasserstein_async(&r1, na, nb, d, a.data(), b.data(), 16, 7, 1, cpu);
  sliced_wasserstein_async(a.data(), na, b.data(), nb, d, 16, 7, 1, &r2, cpu);
  EXPECT_EQ(r1, r2);

  const gaussian_mixture mix = two_modes();
  EXPECT_EQ(component_weights(mix, na, a.data()), component_weights(mix, a.data(), na));
  EXPECT_EQ(component_weight_error(mix, na, a.data()), component_weight_error(mix, a.data(), na));
  linear_observation obs;
  obs.d_y = 1;
  obs.d_x = 2;
  obs.A = {1.0, -0.5};
  obs.sigma_y = 0.4;
  obs.y = {0.2};
  const mixture_posterior post(mix, obs);
  EXPECT_EQ(component_weights(post, na, a.data()), component_weights(post, a.data(), na));
  EXPECT_EQ(component_weight_error(post, na, a.data()), component_weight_error(post, a.data(), na));
}

}  // namespace
