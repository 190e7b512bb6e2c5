// Guided posterior samplers against the exact posterior of a mixture prior (mixture_posterior): the SMC
// log-normaliser against log p(y), SMC samples against exact posterior samples (sliced Wasserstein beside the
// exact-vs-exact floor, posterior component weights), and the DPS / Pi-GDM baselines as loose, biased references.
// Problems are built like seed 002's 25-component benchmark: means on the 5 x 5 grid of spacing 8 repeated across
// coordinates, unit covariances, random weights, a random A with d_y = 1 and sigma_y uniform in [0.5, 1.5].
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/plan.hpp>
#include <diffsample/posterior.hpp>

#include "kernels/guided.cuh"
#include "kernels/guided_diffpir.cuh"
#include "kernels/guided_skrock.cuh"
#include "reference/guided_helpers.hpp"
#include "reference/helpers.hpp"

namespace ds = diffsample;
using ds::testing::exact_with_counts;
using ds::testing::options;
using ds::testing::replicate;

namespace {

ds::execution cpu() { return {ds::executor::cpu, nullptr}; }

struct benchmark_problem {
  ds::gaussian_mixture prior;
  ds::linear_observation observation;
};

// Seed 002's mixture and a random observation: weights uniform in [0.1, 1] (normalised by the library), A with
// N(0, 1) entries, sigma_y uniform in [0.5, 1.5], y = A x0 + sigma_y z with x0 drawn from the prior.
benchmark_problem make_problem(std::int64_t d, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.1, 1.0), us(0.5, 1.5);
  std::normal_distribution<double> z;
  std::vector<double> w(25);
  for (auto& v : w) v = u(gen);
  benchmark_problem p{ds::grid_mixture(d, 5, 8.0, 1.0, w), {}};
  auto& o = p.observation;
  o.d_y = 1;
  o.d_x = d;
  o.A.resize(d);
  for (auto& a : o.A) a = z(gen);
  o.sigma_y = us(gen);
  // x0 from the prior: a component by its weight, then unit noise.
  std::discrete_distribution<int> pick(w.begin(), w.end());
  const int k = pick(gen);
  const auto& means = p.prior.means();
  double y = 0;
  for (std::int64_t j = 0; j < d; ++j) y += o.A[j] * (means[k * d + j] + z(gen));
  o.y = {y + o.sigma_y * z(gen)};
  return p;
}

struct smc_result {
  std::vector<float> samples, ess;
  std::vector<double> log_z;
  std::vector<std::int32_t> resamplings;
};

smc_result run(const benchmark_problem& p, const ds::guided_problems& g, const ds::guided_options& o,
               ds::executor where = ds::executor::cpu) {
  const std::int64_t B = g.problems, N = o.particles, d = p.prior.dim();
  smc_result r;
  r.samples.assign(B * N * d, NAN);
  r.log_z.assign(B, NAN);
  r.ess.assign(B * (o.steps + 1), NAN);
  r.resamplings.assign(B, -1);
  // Samples always; the SMC outputs only for SMC.
  const auto sample = [&](float* samples, double* log_z, float* ess, std::int32_t* resamplings) {
    ds::guided_outputs out;
    out.samples = samples;
    if (o.sampler == ds::guided_sampler::smc) {
      out.log_normaliser = log_z;
      out.ess_trace = ess;
      out.resample_count = resamplings;
    }
    EXPECT_EQ(ds::guided_sample(p.prior, out, g, o, {where, nullptr}).ran, where);
  };
  if (where == ds::executor::cuda) {
    ds::testing::device_buffer<float> samples(r.samples), ess(r.ess);
    ds::testing::device_buffer<double> log_z(r.log_z);
    ds::testing::device_buffer<std::int32_t> resamplings(r.resamplings);
    sample(samples.ptr, log_z.ptr, ess.ptr, resamplings.ptr);
    r.samples = samples.download();
    r.log_z = log_z.download();
    r.ess = ess.download();
    r.resamplings = resamplings.download();
  } else {
    sample(r.samples.data(), r.log_z.data(), r.ess.data(), r.resamplings.data());
  }
  return r;
}

}  // namespace

// The SMC estimate Z-hat of p(y) is unbiased for the model's evidence; log Z-hat has a bias of about -var/2 and a
// spread that shrinks like 1/sqrt(N). B = 8 replicas of one problem run as 8 problems of one call (independent
// particle streams), so their spread estimates the standard error of the mean of log Z-hat:
// se = sd / sqrt(8). Asserted: |mean - log p(y)| <= 4 se + 0.1 at N = 4096 (0.1 covers the DDPM discretisation of
// the model's prior with 200 steps; measured with the linear potentials (options() sets them): mean error -0.028 with se 0.026 at
// N = 4096, -0.026 with se 0.19 at N = 64), and the error at N = 4096 below the error at N = 64 plus 2 se.
// Seen to fail with the weight's division by the current potential removed (mean log Z-hat -15.3 against -4.73)
// and with the mutation noise scaled by 1.3 (-3.78). Dropping the mutation's Kalman shift moves it only by 0.35
// (under the bound); the posterior tests below catch that one.
TEST(Guided, LogNormaliserConvergesToExactEvidence) {
  const benchmark_problem p = make_problem(10, 7);
  const ds::mixture_posterior post(p.prior, p.observation);
  const double exact = post.log_evidence();
  const std::int64_t B = 8;
  double err[2], se[2];
  const std::int64_t sizes[2] = {64, 4096};
  for (int t = 0; t < 2; ++t) {
    const smc_result r = run(p, replicate(p.observation, B), options(ds::guided_sampler::smc, sizes[t], 200, 11 + t));
    std::vector<double> lz(r.log_z.begin(), r.log_z.end());
    for (double v : lz) ASSERT_TRUE(std::isfinite(v));
    err[t] = std::abs(ds::testing::mean(lz) - exact);
    se[t] = std::sqrt(ds::testing::variance(lz) / double(B));
    std::printf("N = %lld: mean log Z-hat %.4f, exact log p(y) %.4f, |error| %.4f, se %.4f, resamplings %d\n",
                static_cast<long long>(sizes[t]), ds::testing::mean(lz), exact, err[t], se[t], r.resamplings[0]);
  }
  EXPECT_LE(err[1], 4 * se[1] + 0.1);
  EXPECT_LT(err[1], err[0] + 2 * se[0]);
}

// The same estimator with the moment-projected potentials (guided_potentials::moment), at the budget they are meant
// for (100 steps): every weight is a ratio of normalised Gaussian densities whose constants the host adds, so a
// wrong constant or a wrong covariance shows here. B = 8 replicas of N = 1024, se = sd / sqrt(8); asserted
// |mean - log p(y)| <= 4 se + 0.1 (0.1: the 100-step DDPM prior's own evidence error, the same allowance as above).
// Measured: mean -4.716 against -4.731 (error 0.015, se 0.054, 6 resamplings). Seen to fail with the division by
// the linear potential that steered the mutation removed from the weights (mean -11.25); the solve program showed
// the last linear potential's constant left in (errors of 0.57 and 0.92 nats on two problems) before it was fixed.
TEST(Guided, MomentPotentialsLogNormaliser) {
  const benchmark_problem p = make_problem(10, 7);
  const ds::mixture_posterior post(p.prior, p.observation);
  const double exact = post.log_evidence();
  const std::int64_t B = 8;
  ds::guided_options o = options(ds::guided_sampler::smc, 1024, 100, 13);
  o.potentials = ds::guided_potentials::moment;
  const smc_result r = run(p, replicate(p.observation, B), o);
  std::vector<double> lz(r.log_z.begin(), r.log_z.end());
  for (double v : lz) ASSERT_TRUE(std::isfinite(v));
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("moment potentials, N = 1024, 100 steps: mean log Z-hat %.4f, exact %.4f, |error| %.4f, se %.4f, "
              "resamplings %d\n", ds::testing::mean(lz), exact, err, se, r.resamplings[0]);
  EXPECT_LE(err, 4 * se + 0.1);
}

// The same estimator with the twisted proposal (guided_potentials::twisted): the moment potentials, the particles
// drawn from N(mu + sig^2 grad log g_k, sig^2 I) and weighted by g_{k+1}(x') p(x' | x) / (g_k(x) q(x' | x)). Every
// factor is a ratio of normalised densities, so log Z-hat is unbiased for log p(y) up to the 100-step DDPM prior's
// own evidence error; B = 8 replicas of N = 1024, se = sd / sqrt(8), asserted |mean - log p(y)| <= 4 se + 0.1 (as
// the moment potentials' test). Measured: mean -4.698 against -4.731 (error 0.034, se 0.017, 2 resamplings). Seen to
// fail with the proposal's shift applied with its sign flipped (the weights unchanged: mean -14.75) and with the
// correction log p / q dropped from the weights (the mutation's -z . h / sig and the pending -|h|^2 / (2 sig^2):
// mean -1.25).
TEST(Guided, TwistedPotentialsLogNormaliser) {
  const benchmark_problem p = make_problem(10, 7);
  const ds::mixture_posterior post(p.prior, p.observation);
  const double exact = post.log_evidence();
  const std::int64_t B = 8;
  ds::guided_options o = options(ds::guided_sampler::smc, 1024, 100, 13);
  o.potentials = ds::guided_potentials::twisted;
  const smc_result r = run(p, replicate(p.observation, B), o);
  std::vector<double> lz(r.log_z.begin(), r.log_z.end());
  for (double v : lz) ASSERT_TRUE(std::isfinite(v));
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("twisted potentials, N = 1024, 100 steps: mean log Z-hat %.4f, exact %.4f, |error| %.4f, se %.4f, "
              "resamplings %d\n", ds::testing::mean(lz), exact, err, se, r.resamplings[0]);
  EXPECT_LE(err, 4 * se + 0.1);
}

// Every replica's sample mean within 0.5 posterior sd of the exact mean and its sd within 1 +- 0.35 of the exact sd,
// at every coordinate (B replicas of N samples of dimension d, row-major). Returns per coordinate the worst
// |mean error| / sd and |sd ratio - 1| over the replicas, for the caller's report.
struct coordinate_worst {
  std::vector<double> mean, sd;
};
coordinate_worst expect_replica_moments(const std::vector<float>& samples, std::int64_t B, std::int64_t N,
                                        std::int64_t d, const std::vector<double>& mean,
                                        const std::vector<double>& cov, const std::string& name) {
  coordinate_worst worst{std::vector<double>(d, 0.0), std::vector<double>(d, 0.0)};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < d; ++j) {
      std::vector<double> v(N);
      for (std::int64_t i = 0; i < N; ++i) v[i] = samples[(b * N + i) * d + j];
      const double sd = std::sqrt(cov[j * d + j]), m = ds::testing::mean(v), s = std::sqrt(ds::testing::variance(v));
      worst.mean[j] = std::max(worst.mean[j], std::abs(m - mean[j]) / sd);
      worst.sd[j] = std::max(worst.sd[j], std::abs(s / sd - 1.0));
      EXPECT_LE(std::abs(m - mean[j]), 0.5 * sd) << name << ", replica " << b << ", coordinate " << j;
      EXPECT_NEAR(s / sd, 1.0, 0.35) << name << ", replica " << b << ", coordinate " << j;
    }
  return worst;
}

// Small sigma_y without final moves: a two-mode prior 0.3 N((-2, -1.7), I) + 0.7 N((2, 1.8), I) under the
// full-rank A = [1 0.3; -0.4 0.9] with sigma_y = 1e-4, far below the spread s |A| (a few hundredths) of A m at the
// last noisy point. The last transition is the fully adapted draw of kernels::final_transition_draw, so log Z-hat
// and the filter's own samples stay right. B = 8 replicas of N = 256 particles, 100 steps; se = sd / sqrt(8).
// Asserted: |mean log Z-hat - log p(y)| <= 4 se + 0.1 (the 100-step DDPM prior's own evidence error, as above), and
// for every replica and coordinate the samples' mean within 0.5 posterior sd of the exact mean (4 standard errors at
// an effective sample size of N / 4 = 64) and their sd within a factor 1 +- 0.35 of the exact sd (4 relative
// standard errors 1 / sqrt(2 x 64)).
void check_small_noise(const ds::guided_options& given, const char* name,
                       ds::executor where = ds::executor::cpu) {
  const std::int64_t d = 2, dy = 2, B = 8, N = 256, K = 100;
  benchmark_problem p{ds::gaussian_mixture(d, {0.3, 0.7}, {-2.0, -1.7, 2.0, 1.8}, {1.0, 1.0, 1.0, 1.0}), {}};
  const std::vector<double> A = {1.0, 0.3, -0.4, 0.9};
  p.observation = {dy, d, A, 1e-4, {A[0] * 2.1 + A[1] * 1.7, A[2] * 2.1 + A[3] * 1.7}};
  const ds::mixture_posterior post(p.prior, p.observation);
  const double exact = post.log_evidence();
  const std::vector<double> mean = post.mean(), cov = post.covariance();
  ds::guided_options o = given;
  o.sampler = ds::guided_sampler::smc;
  o.particles = N;
  o.steps = K;
  o.seed = 21;
  o.final_moves = 0;
  const smc_result r = run(p, replicate(p.observation, B), o, where);
  std::vector<double> lz(r.log_z.begin(), r.log_z.end());
  for (double v : lz) ASSERT_TRUE(std::isfinite(v)) << name;
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("%s, sigma_y = 1e-4, N = %lld: mean log Z-hat %.4f, exact %.4f, |error| %.4f, se %.4f, final ESS %.1f\n",
              name, static_cast<long long>(N), ds::testing::mean(lz), exact, err, se, r.ess[K]);
  EXPECT_LE(err, 4 * se + 0.1) << name;
  expect_replica_moments(r.samples, B, N, d, mean, cov, name);
}

// The default options (twisted potentials on this d_y = 2 grid ending at s = 0). Measured: mean error -0.06 (se
// 0.01), largest mean error 0.2 sd, sd ratios 0.95 .. 1.05. With the deterministic last step the final ESS was 4 of
// 1024 at N = 1024 and log Z-hat -953 against -2.22 (samples' means 50 sd off, sd 0).
TEST(Guided, TwistedLogNormaliserAndSamplesAtSmallNoise) { check_small_noise({}, "twisted potentials"); }

// The moment potentials, whose last transition is the twisted potentials' fully adapted draw with the weight
// log g_{K-1} - log ghat_{K-1} (kernels::twisted_finish's linear_mutation). Measured: mean error +0.08 (se 0.04),
// final ESS 256. With the deterministic last step log Z-hat was -1774 (se 767), final ESS 5, samples' sd 0.
TEST(Guided, MomentLogNormaliserAndSamplesAtSmallNoise) {
  ds::guided_options o;
  o.potentials = ds::guided_potentials::moment;
  check_small_noise(o, "moment potentials");
}

// The linear potentials, whose last transition is kernels::linear_final_draw (the kernel N(c0 m, v_f P_A) with the
// linear potentials' spread 4 (s / a)^2 of the last noisy point, times the likelihood), with the same checks.
// Measured: mean error +0.18 (se 0.10), final ESS 163 of 256. With the deterministic last step (bench/
// smc_small_noise.cpp at 256 particles: log Z-hat -9117 against -2.22 at sigma_y = 1e-4, final ESS 1, the samples'
// sd 0) this test failed on every check.
TEST(Guided, LinearLogNormaliserAndSamplesAtSmallNoise) {
  ds::guided_options o;
  o.potentials = ds::guided_potentials::linear;
  check_small_noise(o, "linear potentials");
}

// The same on the CUDA executor (kernels::linear_final_draw in guided_mutate_functor, coordinate-major).
TEST(Guided, GpuLinearLogNormaliserAndSamplesAtSmallNoise) {
  DIFFSAMPLE_REQUIRE_GPU();
  ds::guided_options o;
  o.potentials = ds::guided_potentials::linear;
  check_small_noise(o, "linear potentials, cuda", ds::executor::cuda);
}

// The same at d_y > 8, where the default (automatic) potentials are the linear ones, with a mask operator (the
// diagonal branch of linear_final_draw; gains 0.5 .. 1.4): d = 12, 10 observed coordinates, sigma_y = 1e-3, a
// two-mode prior 0.4 N(-1.5 1, 0.8 I) + 0.6 N(1.5 1, 0.6 I), y from a point of the second mode. B = 8 replicas of
// N = 1024, 100 steps, the default options (linear potentials, automatic_linear_final_moves = 20 final moves).
// Asserted: log Z-hat within 4 se + 0.5 of log p(y) (0.5: the estimator's own bias at this d_y, whose ESS falls to
// about 130 of 1024 at the last noisy points: Z-hat is unbiased, so log Z-hat is low by about Var(log Z-hat) / 2,
// 0.24 for the replicas' sd of 0.69; measured error -0.38, se 0.25), and for every replica and
// coordinate the samples' mean within 0.5 posterior sd and their sd within 1 +- 0.35 of the exact sd (measured: 0.09
// sd and 0.07 at most over the observed coordinates, 0.07 sd and 0.07 over the two unobserved ones). Seen failing
// with the deterministic last step: log Z-hat -8876 against -6.35, final ESS 1, the observed coordinates' means 97 sd
// off; and without the final moves: the unobserved coordinates 1.14 sd off, sd ratio 0.30 (the linear filter's
// ancestry at d_y = 10, which its last step does not change).
TEST(Guided, DefaultPotentialsAtSmallNoiseWithAMaskOfTenRows) {
  const std::int64_t d = 12, dy = 10, B = 8, N = 1024, K = 100;
  std::vector<double> mu(2 * d), v(2 * d);
  for (std::int64_t j = 0; j < d; ++j) {
    mu[j] = -1.5;
    mu[d + j] = 1.5;
    v[j] = 0.8;
    v[d + j] = 0.6;
  }
  const ds::gaussian_mixture prior(d, {0.4, 0.6}, mu, v);
  std::vector<std::int64_t> index(dy);
  std::vector<double> gain(dy), A(dy * d, 0.0), y(dy);
  std::vector<bool> observed(d, false);
  for (std::int64_t o = 0; o < dy; ++o) {
    index[o] = o + (o >= 5 ? 1 : 0);  // coordinates 5 and 11 unobserved
    observed[index[o]] = true;
    gain[o] = 0.5 + 0.1 * double(o);
    A[o * d + index[o]] = gain[o];
    y[o] = gain[o] * (1.2 + 0.05 * double(o));
  }
  const double sy = 1e-3;
  const ds::mixture_posterior post(prior, ds::linear_observation{dy, d, A, sy, y});
  const double exact = post.log_evidence();
  const std::vector<double> mean = post.mean(), cov = post.covariance();
  ds::guided_problems g;
  g.problems = B;
  g.d_y = dy;
  g.operators = {ds::observation_operator::mask(d, index, gain)};
  for (std::int64_t b = 0; b < B; ++b) g.y.insert(g.y.end(), y.begin(), y.end());
  g.sigma_y = {sy};
  ds::guided_options o;
  o.sampler = ds::guided_sampler::smc;
  o.particles = N;
  o.steps = K;
  o.seed = 23;
  std::vector<float> samples(B * N * d, NAN);
  std::vector<double> lz(B, NAN);
  ds::guided_outputs out;
  out.samples = samples.data();
  out.log_normaliser = lz.data();
  const ds::guided_report rep = ds::guided_sample(prior, out, g, o, {ds::executor::cpu, nullptr});
  EXPECT_EQ(rep.potentials, ds::guided_potentials::linear);
  for (double z : lz) ASSERT_TRUE(std::isfinite(z));
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("mask of 10 rows, sigma_y = 1e-3: mean log Z-hat %.4f, exact %.4f, |error| %.4f, se %.4f\n",
              ds::testing::mean(lz), exact, err, se);
  EXPECT_LE(err, 4 * se + 0.5);
  const coordinate_worst w = expect_replica_moments(samples, B, N, d, mean, cov, "mask of 10 rows");
  double worst[2][2] = {{0, 0}, {0, 0}};  // [observed][mean, sd]
  for (std::int64_t j = 0; j < d; ++j) {
    double* into = worst[observed[j] ? 1 : 0];
    into[0] = std::max(into[0], w.mean[j]);
    into[1] = std::max(into[1], w.sd[j]);
  }
  std::printf("observed coordinates: worst mean error %.3f sd, sd ratio off by %.3f; unobserved: %.3f sd, %.3f\n",
              worst[1][0], worst[1][1], worst[0][0], worst[0][1]);
}

// On a grid that stops at s > 0 (t_end = 0.3 of vp_linear: a = 0.63, s = 0.78; linear potentials) log Z-hat
// estimates the last potential's normaliser, log of the integral of p_t(x) N(a y; A x, v I) over x, v = a^2
// sigma_y^2 + s^2 c: the evidence of the prior noised to (a, s) for the observation a y = A x + sqrt(v) z. An
// observation with more rows than rank (two equal rows) runs on its orthogonal rows, and the row outside their span
// joined log Z-hat as the likelihood's part, log N(U_perp^T y; 0, sigma_y^2), instead of the last potential's,
// log N(a U_perp^T y; 0, v): the estimate was an estimate of neither (-2.16 and -1.95 over two seeds against
// -3.49 at 2048 particles). Tolerance from 8 replicas: 4 standard errors of their mean plus 0.05 for the 100-step
// discretisation (the unreduced estimate's own error at this size).
TEST(Guided, ReducedObservationLogNormaliserOnAGridEndingAtNoise) {
  const std::int64_t d = 2, dy = 2, B = 8, N = 1024, K = 100;
  benchmark_problem p{ds::gaussian_mixture(d, {0.3, 0.7}, {-2.0, 0.0, 2.0, 1.0}, {0.5, 0.25}), {}};
  p.observation = {dy, d, {1.0, 0.5, 1.0, 0.5}, 0.3, {1.0, 1.4}};
  ds::guided_options o;
  o.sampler = ds::guided_sampler::smc;
  o.particles = N;
  o.steps = K;
  o.seed = 5;
  o.schedule = ds::noise_schedule::vp_linear().with_grid(ds::time_grid::uniform, 1.0, 0.3);
  const ds::schedule_point end = o.schedule.at(0.3);
  const double spread = ds::default_potential_scale * (1.25 + 1.25) / double(dy);
  const double v = end.a * end.a * 0.09 + end.s * end.s * spread;
  const ds::gaussian_mixture noised(d, {0.3, 0.7}, {-2.0 * end.a, 0.0, 2.0 * end.a, 1.0 * end.a},
                                    {end.a * end.a * 0.5 + end.s * end.s, end.a * end.a * 0.25 + end.s * end.s});
  const double exact =
      ds::mixture_posterior(noised, ds::linear_observation{dy, d, p.observation.A, std::sqrt(v), {end.a, 1.4 * end.a}})
          .log_evidence();
  const smc_result r = run(p, replicate(p.observation, B), o);
  std::vector<double> lz(r.log_z.begin(), r.log_z.end());
  for (double z : lz) ASSERT_TRUE(std::isfinite(z));
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("t_end = 0.3, reduced rows: mean log Z-hat %.4f, exact %.4f, se %.4f\n", ds::testing::mean(lz), exact,
              se);
  EXPECT_LE(err, 4 * se + 0.05);
}

// SMC samples against the exact posterior at d_x = 10. A particle filter's samples are correlated (shared ancestors),
// so the tolerances come from R = 8 independent replicas of the problem run as 8 problems of one call:
// - posterior component weights: each replica's weights are recovered by ds::component_weights (the average
//   responsibility under the exact posterior); the spread of the 8 replicas gives the standard error of their
//   mean, se_k = sd_k / sqrt(8).
//   Asserted |mean_k - w'_k| <= 5 se_k + 0.02 for every component. 5 se: Student's t with 7 degrees of freedom
//   exceeds 5 with probability 0.0016, and only a handful of components carry weight, so a correct sampler fails
//   this under 1% of the time; 0.02: the DDPM discretisation at 500 steps, whose unconditional samples sit at
//   sliced-W1 0.13 from the prior at 1000 steps vs 0.29 at 100, measured.
// - the shapes and places of the components: sliced Wasserstein-1 (128 directions) of the pooled 8 x 2048 samples to
//   as many exact samples drawn with SMC's own pooled component weights (exact_with_counts), asserted within
//   sw_bound times the exact-vs-exact floor. The plain sliced distance to exact samples is printed but not
//   asserted: at this size it is dominated by the weight errors above, which move mass between modes 8 sqrt(d)
//   apart; with the linear potentials, over SMC seeds 21..26 it ranged from 1.7x to 10.7x the floor (max weight
//   errors 0.006 to 0.029). With the narrower potentials of c = trace(A A^T) / d_y it ranged from 6.8x to 35x
//   (weight errors 0.036 to 0.115) while the within-component distance stayed at 0.78x to 1.18x.
// - the fit along A, E[(y - A x)^2 | y]: per-replica means for SMC (se from their spread) against all exact samples
//   (se from their variance), within 4 combined se. The sliced distance hardly sees this one direction.
// Measured at d = 10 (seed 21): max weight error 0.0105, within-component distance 0.82x the floor, plain 2.99x,
// misfit 0.746 against 0.746. Seen to fail with the mutation mean left at mu (the Kalman shift dropped: misfit 1.17
// against 0.75, max weight error 0.075), with the division by the current potential removed from the weights
// (misfit 0.064 against 0.746), and with the mutation noise scaled by 1.3 (within-component distance 5.0x the
// floor).
void check_posterior(std::int64_t d, unsigned seed, double sw_bound, ds::executor where = ds::executor::cpu,
                     std::int64_t N = 2048, std::int64_t steps = 500,
                     ds::guided_potentials potentials = ds::guided_potentials::linear, double allowance = 0.02) {
  const std::int64_t R = 8;
  const benchmark_problem p = make_problem(d, seed);
  const ds::mixture_posterior post(p.prior, p.observation);
  ds::guided_options o = options(ds::guided_sampler::smc, N, steps, 21);
  o.potentials = potentials;
  const smc_result r = run(p, replicate(p.observation, R), o, where);
  const std::int64_t K = post.components();
  std::vector<std::vector<double>> per(K);
  for (std::int64_t b = 0; b < R; ++b) {
    const std::vector<double> w = ds::component_weights(post, N, r.samples.data() + b * N * d);
    for (std::int64_t k = 0; k < K; ++k) per[k].push_back(w[k]);
  }
  double worst = 0;
  std::vector<double> pooled(K);
  for (std::int64_t k = 0; k < K; ++k) {
    const double m = ds::testing::mean(per[k]), se = std::sqrt(ds::testing::variance(per[k]) / double(R));
    pooled[k] = m;
    const double excess = std::abs(m - post.weights()[k]) - (5 * se + allowance);
    worst = std::max(worst, std::abs(m - post.weights()[k]));
    EXPECT_LE(excess, 0.0) << "component " << k << ": smc " << m << " +- " << se << ", exact " << post.weights()[k];
  }
  std::vector<float> exact_a(R * N * d), exact_b(R * N * d);
  post.sample(exact_a.data(), R * N, 100);
  post.sample(exact_b.data(), R * N, 200);
  // Fit to the observation along A: E[(y - A x)^2 | y], per replica for SMC, over all exact samples.
  auto misfit = [&](const float* x, std::int64_t n) {
    std::vector<double> v(n);
    for (std::int64_t i = 0; i < n; ++i) {
      double ax = 0;
      for (std::int64_t j = 0; j < d; ++j) ax += p.observation.A[j] * x[i * d + j];
      v[i] = (p.observation.y[0] - ax) * (p.observation.y[0] - ax);
    }
    return v;
  };
  std::vector<double> smc_misfit;
  for (std::int64_t b = 0; b < R; ++b) smc_misfit.push_back(ds::testing::mean(misfit(r.samples.data() + b * N * d, N)));
  const std::vector<double> exact_misfit = misfit(exact_a.data(), R * N);
  const double se_misfit = std::sqrt(ds::testing::variance(smc_misfit) / double(R) +
                                     ds::testing::variance(exact_misfit) / double(R * N));
  std::printf("E[(y - A x)^2 | y]: smc %.4f, exact %.4f, se %.4f\n", ds::testing::mean(smc_misfit),
              ds::testing::mean(exact_misfit), se_misfit);
  EXPECT_NEAR(ds::testing::mean(smc_misfit), ds::testing::mean(exact_misfit), 4 * se_misfit);
  const double sw = ds::sliced_wasserstein(R * N, R * N, d, r.samples.data(), exact_a.data(), 128, 5);
  const double floor = ds::sliced_wasserstein(R * N, R * N, d, exact_b.data(), exact_a.data(), 128, 5);
  std::printf("d = %lld, %lld x %lld particles, %lld steps: SW1 %.4f, floor %.4f (%.2fx); max weight error %.4f\n",
              static_cast<long long>(d), static_cast<long long>(R), static_cast<long long>(N), static_cast<long long>(steps), sw, floor,
              sw / floor, worst);
  // Within the components: the same samples against exact ones whose component counts follow SMC's own pooled
  // weights, so that only the shapes and places of the components are compared.
  const std::vector<float> exact_c = exact_with_counts(post, ds::testing::counts_for(pooled, R * N), 300 + seed);
  const double sw_within = ds::sliced_wasserstein(R * N, R * N, d, r.samples.data(), exact_c.data(), 128, 5);
  std::printf("within components: SW1 %.4f (%.2fx the floor)\n", sw_within, sw_within / floor);
  EXPECT_LE(sw_within, sw_bound * floor);
}

TEST(Guided, SmcReachesExactPosteriorD10) { check_posterior(10, 1, 2.0); }

// The start correction (guided_options::start_correction) on a grid that starts at t = 0.8, where the diffused
// prior still holds a_0 mu_k with |a_0 mu_k| up to 2.0 (a_0 = 0.040), so that N(0, s_0^2 I) is a poor stand-in for
// it: the uncorrected filter's target has the modes far from the origin under-weighted by up to exp(-2). With the
// correction the filter targets the exact posterior again (up to the DDPM discretisation). R = 8 replicas of
// N = 2048 at 100 steps, as check_posterior: component weights within 5 se_k + 0.02 (0.02: the 100-step DDPM's own
// mode-weight error), and log Z-hat within 4 se + 0.1 of log p(y) (as LogNormaliserConvergesToExactEvidence). The
// uncorrected run must fail the same weight check (else this problem could not tell the two apart).
// Seen to fail with the log-ratio's factor a_0 / s_0^2 halved (worst weight error 0.113) and with the log-normaliser's
// first normalisation left at log N (log Z-hat -2.31 against -2.80).
TEST(Guided, StartCorrectionStandsForTheDiffusedPrior) {
  const std::int64_t R = 8, N = 2048, d = 10;
  const benchmark_problem p = make_problem(d, 2);
  const ds::mixture_posterior post(p.prior, p.observation);
  const std::int64_t K = post.components();
  auto check = [&](bool corrected, double* worst_excess,
                   ds::guided_potentials potentials = ds::guided_potentials::linear) {
    ds::guided_options o = options(ds::guided_sampler::smc, N, 100, 31);
    o.schedule.with_grid(ds::time_grid::uniform, 0.75, 0.0);
    o.start_correction = corrected;
    o.potentials = potentials;
    const smc_result r = run(p, replicate(p.observation, R), o);
    double excess = -1, worst = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      std::vector<double> per;
      for (std::int64_t b = 0; b < R; ++b) per.push_back(ds::component_weights(post, N, r.samples.data() + b * N * d)[k]);
      const double m = ds::testing::mean(per), se = std::sqrt(ds::testing::variance(per) / double(R));
      excess = std::max(excess, std::abs(m - post.weights()[k]) - (5 * se + 0.02));
      worst = std::max(worst, std::abs(m - post.weights()[k]));
    }
    std::vector<double> lz(r.log_z.begin(), r.log_z.end());
    const double err = std::abs(ds::testing::mean(lz) - post.log_evidence());
    const double se = std::sqrt(ds::testing::variance(lz) / double(R));
    std::printf("start correction %s (%s potentials): worst weight error %.4f; log Z-hat %.4f against %.4f (se %.4f)\n",
                corrected ? "on" : "off", ds::to_string(potentials), worst, ds::testing::mean(lz), post.log_evidence(),
                se);
    *worst_excess = excess;
    return err - (4 * se + 0.1);
  };
  double on = 0, off = 0;
  EXPECT_LE(check(true, &on), 0.0);
  EXPECT_LE(on, 0.0);
  check(false, &off);
  EXPECT_GT(off, 0.0);
  // The twisted potentials take the same correction (their starting weights the log-ratio alone, log g_0 added by
  // the first weighting), and fail the weight check without it. Measured: worst weight error 0.0044, log Z-hat
  // -5.036 against -5.111 (se 0.037). Seen to fail with the proposal's shift sign-flipped (weight error 0.28).
  double twisted = 0, twisted_off = 0;
  EXPECT_LE(check(true, &twisted, ds::guided_potentials::twisted), 0.0);
  EXPECT_LE(twisted, 0.0);
  check(false, &twisted_off, ds::guided_potentials::twisted);
  EXPECT_GT(twisted_off, 0.0);
}

// The same checks at d_x = 100 (seed 002's larger case): measured within-component sliced-W1 at 0.52x the floor
// (plain sliced-W1 0.86x, max weight error 0.0017), bound 2x. Seen to fail with the mutation's Kalman shift dropped
// (misfit 1.31 against 0.97, weight error 0.11), with the division by the current potential removed (misfit 0.16
// against 0.97; without it the filter targets a sharper likelihood along A, which the component weights of these
// problems barely feel; only the misfit exposes it) and with the mutation noise scaled by 1.3 (within-component
// 2.65x the floor).
TEST(Guided, SmcReachesExactPosteriorD100) { check_posterior(100, 4, 2.0); }

// The moment-projected potentials at 100 steps (the checks above, 8 replicas of N = 2048):
// component weights within 5 se + 0.02, the misfit along A within 4 se, the within-component distance within 2x
// the floor. Measured at d_x = 10: max weight error 0.0115, misfit 0.742 against 0.746 (se 0.011), within-component
// SW 1.09x the floor (plain 2.09x, against 2.99x for the linear potentials at 500 steps). Seen to fail with the
// division by the steering linear potential removed from the weights (misfit 0.168 against 0.746). Only d_x = 10
// runs here: the d_x = 100 case costs (1 + d_y) times the linear filter's 17 s.
TEST(Guided, MomentPotentialsReachExactPosteriorD10) {
  check_posterior(10, 1, 2.0, ds::executor::cpu, 2048, 100, ds::guided_potentials::moment);
}

// The twisted proposal at 100 steps, the checks of check_posterior (8 replicas of N = 2048): component weights
// within 5 se + 0.02, the misfit along A within 4 se, the within-component distance within 2x the floor. Measured:
// max weight error 0.0117, misfit 0.748 against 0.746 (se 0.012), within-component SW 1.06x the floor (plain 3.16x).
// Seen to fail with the proposal's shift sign-flipped (weight errors up to 0.20) and with log p / q dropped (weight
// errors up to 0.24, misfit 0.505 against 0.746).
TEST(Guided, TwistedPotentialsReachExactPosteriorD10) {
  check_posterior(10, 1, 2.0, ds::executor::cpu, 2048, 100, ds::guided_potentials::twisted);
}

// The baselines are biased: asserted only that they run, stay finite, land near the posterior mean (each
// coordinate of the sample mean within 5 posterior standard deviations of the posterior mean: loose, since DPS
// and Pi-GDM are known to miss modes), and are no closer to the posterior than SMC (sliced Wasserstein at least
// 0.9 times SMC's, the 0.9 allowing for sampling noise). Seen to fail with the guidance sign flipped (mean offsets of
// 817 sd for dps and 11.7 sd for pigdm).
TEST(Guided, BaselinesRunAndAreNoBetterThanSmc) {
  const benchmark_problem p = make_problem(10, 3);
  const ds::mixture_posterior post(p.prior, p.observation);
  const std::int64_t N = 2048, d = 10;
  std::vector<float> exact(N * d);
  post.sample(exact.data(), N, 300);
  const smc_result s = run(p, replicate(p.observation, 1), options(ds::guided_sampler::smc, N, 100, 31));
  const double sw_smc = ds::sliced_wasserstein(N, N, d, s.samples.data(), exact.data(), 128, 5);
  const std::vector<double> mean = post.mean(), cov = post.covariance();
  for (ds::guided_sampler b : {ds::guided_sampler::dps, ds::guided_sampler::pigdm}) {
    const smc_result r = run(p, replicate(p.observation, 1), options(b, N, 100, 41));
    for (float v : r.samples) ASSERT_TRUE(std::isfinite(v)) << ds::to_string(b);
    const double sw = ds::sliced_wasserstein(N, N, d, r.samples.data(), exact.data(), 128, 5);
    double worst = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double m = ds::testing::mean(ds::testing::column(r.samples, d, j));
      worst = std::max(worst, std::abs(m - mean[j]) / std::sqrt(cov[j * d + j]));
    }
    std::printf("%s: SW1 %.4f (smc %.4f); worst mean offset %.2f posterior sd\n", ds::to_string(b), sw, sw_smc,
                worst);
    EXPECT_LE(worst, 5.0) << ds::to_string(b);
    EXPECT_GE(sw, 0.9 * sw_smc) << ds::to_string(b);
  }
}

// The posterior checks of SmcReachesExactPosteriorD100 on the CUDA executor with four times the particles
// (8 replicas of 8192, 500 steps): the same kernels in FP32, the same derived tolerances, which shrink with N. The
// plain sliced distance is printed, not asserted, as in the CPU tests. The same configuration run once on the CPU
// executor passes: max weight error 0.013, within-component sliced-W1 0.78x the floor, fit 0.942 against 0.952
// (se 0.009), plain sliced-W1 5.1x the floor.
TEST(Guided, GpuSmcReachesExactPosteriorD100) {
  DIFFSAMPLE_REQUIRE_GPU();
  // 8 x 8192 particles of d = 100 over 500 steps: 3.3e9 particle-coordinate-steps, each over the K components.
  DIFFSAMPLE_SKIP_UNDER_SANITIZER("8 x 8192 particles x 500 steps at d = 100; the other GPU tests run the same kernels");
  check_posterior(100, 4, 2.0, ds::executor::cuda, 8192);
}

TEST(Guided, RejectsInvalidInput) {
  const benchmark_problem p = make_problem(2, 5);
  ds::guided_problems g = replicate(p.observation, 2);
  ds::guided_options o = options(ds::guided_sampler::smc, 8, 4, 0);
  std::vector<float> x(2 * 8 * 2);
  ds::guided_outputs out;
  out.particles = x.data();
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, o, cpu()));
  auto bad = g;
  bad.A.push_back(1.0);
  EXPECT_THROW(ds::guided_sample(p.prior, out, bad, o, cpu()), ds::invalid_argument);
  bad = g;
  bad.sigma_y = {0.0};
  EXPECT_THROW(ds::guided_sample(p.prior, out, bad, o, cpu()), ds::invalid_argument);
  bad = g;
  bad.y.pop_back();
  EXPECT_THROW(ds::guided_sample(p.prior, out, bad, o, cpu()), ds::invalid_argument);
  auto bo = o;
  bo.particles = 0;
  EXPECT_THROW(ds::guided_sample(p.prior, out, g, bo, cpu()), ds::invalid_argument);
  // Moment potentials: d_y <= 8, a grid ending at s = 0, a known enum value.
  bo = o;
  bo.potentials = ds::guided_potentials::moment;
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, bo, cpu()));
  auto wide = g;
  wide.d_y = 9;
  wide.A.assign(9 * 2, 0.5);
  wide.y.assign(2 * 9, 0.1);
  EXPECT_THROW(ds::guided_sample(p.prior, out, wide, bo, cpu()), ds::invalid_argument);
  auto early = bo;
  early.schedule.with_grid(ds::time_grid::uniform, 1.0, 0.01);
  EXPECT_THROW(ds::guided_sample(p.prior, out, g, early, cpu()), ds::invalid_argument);
  // Twisted potentials: the same limits.
  bo.potentials = ds::guided_potentials::twisted;
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, bo, cpu()));
  EXPECT_THROW(ds::guided_sample(p.prior, out, wide, bo, cpu()), ds::invalid_argument);
  early.potentials = ds::guided_potentials::twisted;
  EXPECT_THROW(ds::guided_sample(p.prior, out, g, early, cpu()), ds::invalid_argument);
  auto twisted_start = bo;  // the start correction applies to linear and twisted potentials, not to moment ones
  twisted_start.start_correction = true;
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, twisted_start, cpu()));
  twisted_start.potentials = ds::guided_potentials::moment;
  EXPECT_THROW(ds::guided_sample(p.prior, out, g, twisted_start, cpu()), ds::invalid_argument);
  EXPECT_EQ(ds::parse_guided_potentials("twisted"), ds::guided_potentials::twisted);
  EXPECT_STREQ(ds::to_string(ds::guided_potentials::twisted), "twisted");
  bo.potentials = static_cast<ds::guided_potentials>(7);
  EXPECT_THROW(ds::guided_sample(p.prior, out, g, bo, cpu()), ds::invalid_argument);
  EXPECT_EQ(ds::parse_guided_potentials("moment"), ds::guided_potentials::moment);
  EXPECT_THROW(ds::parse_guided_potentials("tweedie"), ds::invalid_argument);
  EXPECT_EQ(ds::parse_guided_sampler("pigdm"), ds::guided_sampler::pigdm);
  EXPECT_THROW(ds::parse_guided_sampler("mcmc"), ds::invalid_argument);
}

// log_weights, log_normaliser, ess_trace and resample_count are smc's outputs: the other samplers left them as they
// were, so a caller read what the buffers held as results (Python's new outputs: uninitialised memory). Refused for
// them, naming the output, with nothing written; smc still fills each. Seen failing before the check: every
// sampler returned with the sentinels in place.
TEST(Guided, SmcOutputsAreRefusedForTheOtherSamplers) {
  const benchmark_problem p = make_problem(2, 5);
  const ds::guided_problems g = replicate(p.observation, 1);
  const std::int64_t N = 8, K = 4;
  for (ds::guided_sampler s : {ds::guided_sampler::smc, ds::guided_sampler::dps, ds::guided_sampler::pigdm,
                               ds::guided_sampler::diffpir, ds::guided_sampler::skrock, ds::guided_sampler::tmpd,
                               ds::guided_sampler::ddrm, ds::guided_sampler::dcps}) {
    const ds::guided_options o = options(s, N, K, 1);
    const bool smc = s == ds::guided_sampler::smc;
    for (int which = 0; which < 4; ++which) {
      std::vector<float> x(N * 2), lw(N, -7.f), ess(K + 1, -7.f);
      std::vector<double> z(1, -7.0);
      std::vector<std::int32_t> count(1, -7);
      ds::guided_outputs out;
      out.particles = x.data();
      const char* names[] = {"outputs.log_weights", "outputs.log_normaliser", "outputs.ess_trace",
                             "outputs.resample_count"};
      if (which == 0) out.log_weights = lw.data();
      if (which == 1) out.log_normaliser = z.data();
      if (which == 2) out.ess_trace = ess.data();
      if (which == 3) out.resample_count = count.data();
      const std::string what = std::string(ds::to_string(s)) + " " + names[which];
      if (smc) {
        EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, o, cpu())) << what;
        EXPECT_TRUE(lw[0] != -7.f || z[0] != -7.0 || ess[0] != -7.f || count[0] != -7) << what;
        continue;
      }
      try {
        ds::guided_sample(p.prior, out, g, o, cpu());
        ADD_FAILURE() << what << ": not refused";
      } catch (const ds::invalid_argument& e) {
        EXPECT_EQ(std::string(e.what()).rfind(std::string(names[which]) + ": written by smc only; " +
                                                  ds::to_string(s) + " writes outputs.particles",
                                              0),
                  0u)
            << e.what();
      }
      EXPECT_TRUE(lw[0] == -7.f && z[0] == -7.0 && ess[0] == -7.f && count[0] == -7) << what;
      out.log_weights = nullptr;
      out.log_normaliser = nullptr;
      out.ess_trace = nullptr;
      out.resample_count = nullptr;
      EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, o, cpu())) << what;  // valid options: runs without them
    }
  }
}

// A caller's workspace of guided_workspace_bytes() gives the same results, bit for bit, as the call's own scratch
// (CPU executor: keyed random streams and exact resampling make the run a function of the inputs). Per-problem A
// and sigma_y are used here. Seen to fail with the table copy skipped for a caller's
// workspace (the tables read as zeros).
TEST(Guided, CallerWorkspaceMatchesOwnScratch) {
  const benchmark_problem p = make_problem(3, 6);
  ds::guided_problems g = replicate(p.observation, 2);
  g.A.insert(g.A.end(), p.observation.A.begin(), p.observation.A.end());
  g.A.back() += 0.5;
  g.sigma_y = {p.observation.sigma_y, 2 * p.observation.sigma_y};
  const ds::guided_options o = options(ds::guided_sampler::smc, 64, 20, 9);
  std::vector<float> x1(2 * 64 * 3), x2(x1.size()), lw1(2 * 64), lw2(lw1.size());
  std::vector<double> z1(2), z2(2);
  ds::guided_outputs a, b;
  a.particles = x1.data();
  a.log_weights = lw1.data();
  a.log_normaliser = z1.data();
  b.particles = x2.data();
  b.log_weights = lw2.data();
  b.log_normaliser = z2.data();
  ds::guided_sample(p.prior, a, g, o, cpu());
  const std::size_t bytes = ds::guided_workspace_bytes(p.prior, g, o);
  std::vector<double> ws(bytes / sizeof(double) + 1);
  ds::guided_sample(p.prior, b, g, o, cpu(), ws.data(), bytes);
  EXPECT_EQ(x1, x2);
  EXPECT_EQ(lw1, lw2);
  EXPECT_EQ(z1, z2);
  EXPECT_NE(z1[0], z1[1]);
  EXPECT_THROW(ds::guided_sample(p.prior, b, g, o, cpu(), ws.data(), bytes - 8), ds::invalid_argument);
}

// The CPU executor's one-pass transition (select, mutate, weight for the next transition, particles split over the
// pool's threads) gives the same bits whatever the thread count: any overlap of one particle's scratch or state
// with another's would show here as a difference between 1, 2 and 5 threads (each scheme, two problems).
TEST(Guided, CpuRunIsBitIdenticalAcrossThreadCounts) {
  const benchmark_problem p = make_problem(4, 12);
  ds::guided_problems g = replicate(p.observation, 2);
  g.sigma_y = {p.observation.sigma_y, 0.5 * p.observation.sigma_y};
  const int saved = omp_get_max_threads();
  for (const auto scheme : {ds::resampling_scheme::systematic, ds::resampling_scheme::residual,
                            ds::resampling_scheme::metropolis}) {
    ds::guided_options o = options(ds::guided_sampler::smc, 1500, 12, 21);
    o.resampling.scheme = scheme;
    o.resampling.ess_threshold = 0.9;  // resample often
    std::vector<std::vector<float>> x, s;
    std::vector<std::vector<double>> z;
    for (const int threads : {1, 2, 5}) {
      omp_set_num_threads(threads);
      x.emplace_back(2 * 1500 * 4);
      s.emplace_back(2 * 1500 * 4);
      z.emplace_back(2);
      ds::guided_outputs out;
      out.particles = x.back().data();
      out.samples = s.back().data();
      out.log_normaliser = z.back().data();
      ds::guided_sample(p.prior, out, g, o, cpu());
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 3; ++t) {
      EXPECT_EQ(x[0], x[t]) << "scheme " << static_cast<int>(scheme);
      EXPECT_EQ(s[0], s[t]) << "scheme " << static_cast<int>(scheme);
      EXPECT_EQ(z[0], z[t]) << "scheme " << static_cast<int>(scheme);
    }
  }
}

// The CUDA executor runs the same functors; its normals may differ from the CPU's in the last bits, which can flip
// a resampling decision and let trajectories part, so the executors are compared statistically: 8 replicas each,
// mean log Z-hat within 4 combined standard errors, and every estimate finite.
TEST(Guided, GpuAndCpuAgreeOnLogNormaliser) {
  DIFFSAMPLE_REQUIRE_GPU();
  const benchmark_problem p = make_problem(10, 8);
  const ds::guided_problems g = replicate(p.observation, 8);
  const ds::guided_options o = options(ds::guided_sampler::smc, 1024, 100, 61);
  std::vector<double> cpu_z(8);
  ds::guided_outputs out;
  out.log_normaliser = cpu_z.data();
  ds::guided_sample(p.prior, out, g, o, cpu());
  ds::testing::device_buffer<double> z(8);
  ds::testing::device_buffer<float> samples(8 * 1024 * 10);
  out.log_normaliser = z.ptr;
  out.samples = samples.ptr;
  ASSERT_EQ(ds::guided_sample(p.prior, out, g, o, {ds::executor::cuda, nullptr}).ran, ds::executor::cuda);
  const std::vector<double> gpu_z = z.download();
  for (double v : gpu_z) ASSERT_TRUE(std::isfinite(v));
  for (float v : samples.download()) ASSERT_TRUE(std::isfinite(v));
  const double se = std::sqrt((ds::testing::variance(cpu_z) + ds::testing::variance(gpu_z)) / 8.0);
  EXPECT_NEAR(ds::testing::mean(gpu_z), ds::testing::mean(cpu_z), 4 * se + 1e-3);
}

// The CUDA executor keeps the particles of SMC, DiffPIR, SKRock, DPS and Pi-GDM coordinate-major inside the run and
// their accumulators (SMC's denoiser, the moment potentials' denoiser, row and JVP, DiffPIR's denoiser, SKRock's
// drift, DPS's denoiser and JVP) in shared memory when one warp's scratch fits in 48 KB (384 floats per thread), else
// in the coordinate-major global rows; the outputs are transposed back to row-major. Without resampling (SMC's
// ess_threshold 0) each particle's trajectory is continuous in its noise, so the GPU's particles (and SMC's
// log-weights) must match the CPU's (row-major throughout) value by value as in GpuDpsAndPigdmMatchTheCpu: at most
// 1% differ by more than 1e-2 relative, all finite. A coordinate or particle mix-up in the layout (a transposition,
// a wrong stride, a scratch offset) moves values by the prior's scale (means on a grid of spacing 8), far outside
// that. Settings: d = 10 (128 threads, shared), d = 100 with a mask operator (96 threads, shared; DPS's 2 d floats:
// 32 threads), d = 400 (global rows), and SMC's moment potentials at d = 10 (shared) and d = 150 (3 d floats:
// global rows). 20 steps, but 3 for DPS and Pi-GDM, whose trajectories amplify last-bit differences (see
// GpuDpsAndPigdmMatchTheCpu): on the CPU alone a 1e-6 relative change of y moves 45,600 of the 51,200 values of
// DPS at d = 400 and 278 of Pi-GDM's at d = 100 beyond the tolerance after 20 steps, at most 46 after 3 (measured);
// SMC, DiffPIR and SKRock move none after 20.
TEST(Guided, GpuLayoutsMatchTheCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  struct setting {
    std::int64_t d;
    bool mask;
    ds::guided_potentials potentials;
    ds::guided_sampler sampler;
  };
  const ds::guided_potentials linear = ds::guided_potentials::linear, moment = ds::guided_potentials::moment;
  std::vector<setting> settings = {{10, false, moment, ds::guided_sampler::smc},
                                   {150, false, moment, ds::guided_sampler::smc}};
  for (ds::guided_sampler sampler : {ds::guided_sampler::smc, ds::guided_sampler::diffpir, ds::guided_sampler::skrock,
                                     ds::guided_sampler::dps, ds::guided_sampler::pigdm})
    for (std::int64_t d : {10, 100, 400}) settings.push_back({d, d == 100, linear, sampler});
  for (const setting& s : settings) {
    const benchmark_problem p = make_problem(s.d, 12);
    ds::guided_problems g = replicate(p.observation, 2);
    if (s.mask) {
      g.A.clear();
      g.d_y = 3;
      g.operators = {ds::observation_operator::mask(s.d, {0, s.d / 2, s.d - 1}, {1.0, 0.5, 2.0})};
      g.y = {4.0, -4.0, 8.0, 4.0, -4.0, 8.0};
    }
    const std::int64_t particles = s.d > 100 ? 64 : 256;
    const bool smc = s.sampler == ds::guided_sampler::smc;
    const bool chaotic = s.sampler == ds::guided_sampler::dps || s.sampler == ds::guided_sampler::pigdm;
    ds::guided_options o = options(s.sampler, particles, chaotic ? 3 : 20, 23);
    o.potentials = s.potentials;
    if (smc) o.resampling.ess_threshold = 0;  // never resample: trajectories stay continuous in their noise
    const std::int64_t n = 2 * particles, count = n * s.d;
    const std::string what = std::string(ds::to_string(s.sampler)) + (s.potentials == moment ? " (moment)" : "") +
                             ", d = " + std::to_string(s.d);
    std::vector<float> x(count, NAN), lw(n, NAN);
    ds::guided_outputs out;
    out.particles = x.data();
    out.log_weights = smc ? lw.data() : nullptr;
    ds::guided_sample(p.prior, out, g, o, cpu());
    ds::testing::device_buffer<float> dx(count), dlw(n);
    out.particles = dx.ptr;
    out.log_weights = smc ? dlw.ptr : nullptr;
    ASSERT_EQ(ds::guided_sample(p.prior, out, g, o, {ds::executor::cuda, nullptr}).ran, ds::executor::cuda);
    // The log weights only where the sampler wrote them (initcheck flags a read of the unwritten buffer).
    const std::vector<float> gx = dx.download(), glw = smc ? dlw.download() : std::vector<float>();
    std::int64_t far = 0, far_weights = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      ASSERT_TRUE(std::isfinite(gx[i])) << what << ", value " << i;
      far += std::abs(gx[i] - x[i]) > 1e-2 * (1 + std::abs(x[i]));
    }
    for (std::int64_t i = 0; smc && i < n; ++i) {
      ASSERT_TRUE(std::isfinite(glw[i])) << what << ", weight " << i;
      far_weights += std::abs(glw[i] - lw[i]) > 1e-2 * (1 + std::abs(lw[i]));
    }
    EXPECT_LE(far, count / 100) << what;
    EXPECT_LE(far_weights, n / 100) << what;
  }
}

// The CUDA executor's layout of the guided samplers' per-particle buffers, checked on the CPU with the very
// functors: SMC's initial draw, weighting, mutation (with a resampled and a kept problem), gather, moment potentials
// and copy out, and whole DiffPIR, SKRock and (fused) DPS trajectories run over coordinate-major buffers
// (guided_params::coordinate_stride = B N, as on CUDA) with their scratch shaped as for_each_index_scratch_kernel's
// shared memory (thread t of a block of 4 at c * 4 + t), and every
// output, transposed back, must equal the row-major run (the CPU executor's layout, scratch in the functors' own
// rows) bit for bit: the arithmetic does not depend on the layout, so any difference is an indexing error. Dense A
// (d_y = 2) and a diagonal mixture so that every index path runs. The whole-trajectory functors (DiffPIR, SKRock,
// DPS) must also equal their steps run over separate vectors. Seen failing with guided_slice ignoring the offset of
// a coordinate-major slice (the mutation's t overwrote z_y), with the gather reading the particle's own row instead
// of its ancestor's, and with DPS's J v placed over its m in the scratch.
TEST(Guided, CoordinateMajorLayoutMatchesRowMajorBitForBit) {
  namespace k = ds::kernels;
  const int d = 5, dy = 2, K = 3, steps = 2;
  const std::int64_t B = 2, N = 6, n = B * N;
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(0.2f, 1.0f);
  std::normal_distribution<float> z;
  std::vector<float> log_w = {-1.2f, -0.9f, -1.3f}, means(K * d), vars(K * d);
  for (auto& v : means) v = 2 * z(gen);
  for (auto& v : vars) v = u(gen);
  std::vector<k::guided_step> table(steps);
  for (auto& st : table) st = {u(gen), u(gen), u(gen), u(gen), u(gen), 0.3f * u(gen), u(gen)};
  std::vector<float> inv_var((steps + 1) * B), noise((steps + 1) * B), precision(steps * B * dy * dy), A(dy * d),
      y(B * dy), sigma2(B, 0.5f);
  for (auto* v : {&inv_var, &noise, &precision, &A, &y})
    for (auto& e : *v) e = u(gen);
  k::guided_params p{};
  p.mix = {log_w.data(), means.data(), vars.data(), K, d, false};
  p.steps = table.data();
  p.inv_var = inv_var.data();
  p.noise_std = noise.data();
  p.precision = precision.data();
  p.A = A.data();
  p.y = y.data();
  p.problems = B;
  p.particles = N;
  p.d = d;
  p.d_y = dy;
  p.seed = 9;
  p.initial_scale = 1.5f;
  // The mixture's constants at the steps' channels (the grid samplers' table), and SKRock's at the prior's (1, 0).
  std::vector<float> step_table(static_cast<std::size_t>(k::mixture_channels::table_floats(p.mix, steps))),
      prior_table(static_cast<std::size_t>(k::mixture_channels::table_floats(p.mix, 1)));
  p.channels = k::mixture_channels::in(p.mix, steps, step_table.data());
  for (std::int64_t e = 0; e < steps * K; ++e) k::channel_table_functor<k::guided_channels>{p.channels, {p.steps}}(e);
  k::guided_params p_prior = p;  // SKRock's
  p_prior.channels = k::mixture_channels::in(p.mix, 1, prior_table.data());
  for (std::int64_t e = 0; e < K; ++e) k::channel_table_functor<k::guided_channels>{p_prior.channels, {nullptr}}(e);
  std::vector<std::int32_t> ancestors(n);
  for (std::int64_t i = 0; i < n; ++i) ancestors[i] = static_cast<std::int32_t>((i * 5 + 1) % N);
  std::vector<ds::particle_report> reports(B);
  reports[0].resampled = 1;
  // SKRock: 3 stages, small steps (any values run the same indexing).
  std::vector<float> skrock_step(B, 0.01f), skrock_inv(B, 0.5f), skrock_coefficients(9);
  for (auto& c : skrock_coefficients) c = 0.5f * u(gen);
  // The FP64 cumulative weights of log_w (their total, 0.98, scaled to 1) for the exact prior draws.
  std::vector<double> cumulative(K);
  double total = 0;
  for (int c = 0; c < K; ++c) total += std::exp(double(log_w[c]));
  for (int c = 0; c < K; ++c) cumulative[c] = (c > 0 ? cumulative[c - 1] : 0.0) + std::exp(double(log_w[c])) / total;
  cumulative[K - 1] = 1.0;
  const k::skrock_params skrock{skrock_step.data(), skrock_inv.data(), skrock_coefficients.data(), 3,
                                cumulative.data()};

  const k::baseline_settings settings{0.7f, false, nullptr};
  struct run_outputs {
    std::vector<float> x, mu, lw, lz, gathered, out, diffpir, skrock, dps;
    std::vector<float> tw_lw_in, tw_mu, tw_h, tw_lw, tw_lz, tw_x, tw_lw_out;  // the twisted weighting and mutation
  };
  const auto run = [&](bool coordinate_major) {
    k::guided_params q = p;
    q.coordinate_stride = coordinate_major ? n : 0;
    std::vector<float> x(n * d), mu(n * d), mu2(n * d), lw(n), lz(n), r(n * 2 * dy), work(n * 3 * d),
        block(4 * (2 + dy) * d), gathered(n * d), out(n * d);
    // Thread i % 4 of a block of 4: the scratch as the shared memory of for_each_index_scratch_kernel.
    const auto shared = [&](std::int64_t i, int width) {
      return k::strided_vec<float>{block.data() + i % 4, 4, width};
    };
    for (std::int64_t i = 0; i < n; ++i) k::guided_init_functor{q, x.data(), lw.data(), r.data()}(i);
    const k::guided_weight_functor weight{q, 0, x.data(), mu.data(), lw.data(), r.data()};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? weight(i, shared(i, d)) : weight(i);
    const k::guided_mutate_functor mutate{q, 0, mu.data(), ancestors.data(), reports.data(), lw.data(), x.data(),
                                          r.data()};
    for (std::int64_t i = 0; i < n; ++i) mutate(i);
    if (coordinate_major) {
      for (std::int64_t e = 0; e < n * d; ++e) k::guided_gather_functor{x.data(), ancestors.data(), gathered.data(), N, n}(e);
    } else {
      for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) gathered[i * d + j] = x[((i / N) * N + ancestors[i]) * d + j];
    }
    const k::guided_moment_functor moment{q, 1, sigma2.data(), x.data(), mu2.data(), lw.data(), lz.data(),
                                          work.data(), r.data()};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? moment(i, shared(i, 3 * d)) : moment(i);
    // The twisted weighting of point 1 (scratch (2 + d_y) d) and its mutation.
    const std::vector<float> tw_lw_in = lw;
    std::vector<float> tw_mu(n * d), tw_h(n * d), tw_lw = lw, tw_lz(n), tw_x = x, tw_work(n * (2 + dy) * d);
    const k::guided_twisted_functor<> twisted{q, 1, sigma2.data(), x.data(), tw_mu.data(), tw_h.data(), tw_lw.data(),
                                            tw_lz.data(), tw_work.data(), r.data()};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? twisted(i, shared(i, (2 + dy) * d)) : twisted(i);
    std::vector<float> tw_lw_out = tw_lw;
    const k::twisted_mutate_functor twisted_mutate{q, 1, tw_mu.data(), tw_h.data(), tw_lz.data(), ancestors.data(),
                                                   reports.data(), tw_lw_out.data(), tw_x.data()};
    for (std::int64_t i = 0; i < n; ++i) twisted_mutate(i);
    for (std::int64_t e = 0; e < n * d; ++e) k::guided_copy_out_functor{x.data(), out.data(), d, q.coordinate_stride}(e);
    std::vector<float> pir_x(n * d);
    const k::guided_diffpir_functor pir{q, steps, pir_x.data(), work.data(), r.data()};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? pir(i, shared(i, d)) : pir(i);
    std::vector<float> kr_x(n * d);
    k::guided_params q_prior = q;
    q_prior.channels = p_prior.channels;
    const k::guided_skrock_functor kr{q_prior, skrock, 2, kr_x.data(), work.data(), r.data()};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? kr(i, shared(i, d)) : kr(i);
    std::vector<float> dps_x(n * d);
    const k::guided_baseline_functor dps{q, steps, dps_x.data(), work.data(), r.data(), settings};
    for (std::int64_t i = 0; i < n; ++i) coordinate_major ? dps(i, shared(i, 2 * d)) : dps(i);
    // Row-major views of the per-particle buffers.
    const auto rows = [&](const std::vector<float>& v) {
      if (!coordinate_major) return v;
      std::vector<float> t(n * d);
      for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) t[i * d + j] = v[i + j * n];
      return t;
    };
    return run_outputs{rows(x),  rows(mu2),  lw,     lz,          rows(gathered), out,  rows(pir_x),
                       rows(kr_x), rows(dps_x), tw_lw_in, rows(tw_mu), rows(tw_h), tw_lw, tw_lz,
                       rows(tw_x), tw_lw_out};
  };
  const run_outputs row = run(false), col = run(true);
  // The whole-trajectory functors against their steps run over separate vectors (no scratch at all), so that a
  // scratch offset that is wrong in both layouts alike (two vectors aliased) is seen too.
  std::vector<float> ref_pir(n * d), ref_kr(n * d), ref_dps(n * d), m(d), v(d), jv(d), old(d), rr(dy);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t b = i / N;
    k::strided_vec<float> mi{m.data(), 1, d}, vi{v.data(), 1, d}, ji{jv.data(), 1, d}, oi{old.data(), 1, d},
        ri{rr.data(), 1, dy};
    k::strided_vec<float> xp{ref_pir.data() + i * d, 1, d}, xk{ref_kr.data() + i * d, 1, d},
        xd{ref_dps.data() + i * d, 1, d};
    k::baseline_initial(p, k::guided_stream(p, i, b), xp);
    for (int s = 0; s < steps; ++s) k::diffpir_step(p, i, s, xp, mi, ri);
    k::prior_draw(p, skrock, static_cast<std::uint64_t>(i), xk);
    for (int s = 0; s < 2; ++s) k::skrock_iteration(p_prior, skrock, i, s, xk, mi, oi, vi, ri);
    k::baseline_initial(p, k::guided_stream(p, i, b), xd);
    for (int s = 0; s < steps; ++s) {
      const k::channel_view ch = k::guided_channel(p, s);
      k::channel_denoiser<float>(ch, xd, mi);
      const float shift = k::baseline_guidance(p, settings, b, s, mi, vi, ri);
      k::channel_jvp<float>(ch, xd, vi, ji);
      k::baseline_update(p, s, k::guided_stream(p, i, b), shift, xd, mi, ji);
    }
  }
  const auto same = [](const std::vector<float>& a, const std::vector<float>& b, const char* what) {
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      ASSERT_TRUE(std::isfinite(a[i])) << what << " " << i;
      ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(float)), 0) << what << " " << i << ": " << a[i] << " vs " << b[i];
    }
  };
  same(row.x, col.x, "x");
  same(row.mu, col.mu, "moment mu");
  same(row.lw, col.lw, "log-weights");
  same(row.lz, col.lz, "pending log-weights");
  same(row.gathered, col.gathered, "gathered");
  same(row.x, col.out, "copied out");
  same(row.out, col.out, "copied out (row-major run)");
  same(row.diffpir, col.diffpir, "DiffPIR");
  same(row.skrock, col.skrock, "SKRock");
  same(row.dps, col.dps, "DPS / Pi-GDM fused trajectory");
  same(ref_pir, row.diffpir, "DiffPIR against its steps");
  same(ref_kr, row.skrock, "SKRock against its iterations");
  same(ref_dps, row.dps, "DPS against its halves");
  same(row.tw_mu, col.tw_mu, "twisted proposal means");
  same(row.tw_h, col.tw_h, "twisted shifts");
  same(row.tw_lw, col.tw_lw, "twisted log-weights");
  same(row.tw_lz, col.tw_lz, "twisted pending log-weights");
  same(row.tw_x, col.tw_x, "twisted mutation");
  same(row.tw_lw_out, col.tw_lw_out, "twisted mutation's log-weights");
  // The fused twisted weighting (the CUDA executor's) against the CPU executor's stage by stage run
  // (twisted_stage_functor around the denoiser and the d_y JVPs as separate answers): the same operations.
  {
    std::vector<float> sm(n * d), sv(n * d), su(dy * n * d), sM(n * dy * dy), smu(n * d), sh(n * d),
        slw = row.tw_lw_in, slz(n), sr(n * 2 * dy);
    k::twisted_stage_functor f{p,         1,         0,          0,         0.f,        1.f,        n,
                               sigma2.data(), row.x.data(), sm.data(), sv.data(), sm.data(), su.data(), sM.data(),
                               smu.data(), sh.data(), slw.data(), slz.data(), sr.data()};
    const k::channel_view ch = k::guided_channel(p, 1);
    for (std::int64_t i = 0; i < n; ++i) {
      const k::strided_vec<const float> xi{row.x.data() + i * d, 1, d};
      k::strided_vec<float> mi{sm.data() + i * d, 1, d};
      k::channel_denoiser<float>(ch, xi, mi);
    }
    for (std::int64_t i = 0; i < n; ++i) f(i);
    f.stage = 1;
    for (int o = 0; o < dy; ++o) {
      for (std::int64_t i = 0; i < n; ++i) {
        const k::strided_vec<const float> xi{row.x.data() + i * d, 1, d}, vi{sv.data() + i * d, 1, d};
        k::strided_vec<float> ui{su.data() + (o * n + i) * d, 1, d};
        k::channel_jvp<float>(ch, xi, vi, ui);
      }
      f.row = o;
      for (std::int64_t i = 0; i < n; ++i) f(i);
    }
    same(smu, row.tw_mu, "twisted proposal means, stage by stage");
    same(sh, row.tw_h, "twisted shifts, stage by stage");
    same(slw, row.tw_lw, "twisted log-weights, stage by stage");
    same(slz, row.tw_lz, "twisted pending log-weights, stage by stage");
  }
}

// The moment potentials' packed V = sigma_y^2 I + (M + M^T) / 2, filled entry by entry as the fused weightings
// compute the rows of M (kernels::moment_put, rows in order), must equal the packed copy of the full matrix that the
// stepwise runs take (moment_pack), and both the full matrix's symmetrisation, bit for bit, at every d_y up to the
// limit (M is not symmetric, so a transposed or misplaced entry shows; slots outside the triangle stay NaN and are
// never read). Seen failing with moment_put storing an entry above the diagonal at (o, c) instead of (c, o).
TEST(Guided, MomentMatrixPackedAsItsRowsArrive) {
  namespace k = ds::kernels;
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int dy = 1; dy <= k::moment_potential_max_dy; ++dy) {
    std::vector<float> M(dy * dy);
    for (auto& e : M) e = u(gen);
    const float s2y = 0.5f + 0.25f * u(gen);
    float arriving[k::moment_packed], packed[k::moment_packed];
    std::fill(arriving, arriving + k::moment_packed, NAN);
    std::fill(packed, packed + k::moment_packed, NAN);
    for (int o = 0; o < dy; ++o)
      for (int c = 0; c < dy; ++c) k::moment_put(arriving, o, c, M[o * dy + c], s2y);
    k::moment_pack(dy, s2y, M.data(), packed);
    ASSERT_EQ(k::moment_at(dy - 1, dy - 1), dy * (dy + 1) / 2 - 1);
    for (int o = 0; o < dy; ++o)
      for (int c = 0; c <= o; ++c) {
        const float want = 0.5f * (M[o * dy + c] + M[c * dy + o]) + (o == c ? s2y : 0.f);
        const int at = k::moment_at(o, c);
        ASSERT_EQ(std::memcmp(&arriving[at], &want, sizeof(float)), 0)
            << "d_y " << dy << " (" << o << ", " << c << "): " << arriving[at] << " vs " << want;
        ASSERT_EQ(std::memcmp(&packed[at], &want, sizeof(float)), 0)
            << "d_y " << dy << " (" << o << ", " << c << "): " << packed[at] << " vs " << want;
      }
  }
}

// DDIM kernels. With eta = 1 the DDIM kernel is the DDPM kernel on a VP schedule (same c0, c1, sig up to FP64
// rounding), so the whole filter must agree to float rounding. With eta = 0.5 the filter targets the posterior of
// the DDIM chain's prior: its log Z-hat over 8 replicas at N = 2048 must lie within 4 se + 0.1 of log p(y) (the
// allowance as in LogNormaliserConvergesToExactEvidence). Measured -4.713 +- 0.032 against -4.731. Seen to fail
// with c1 = keep * a in place of keep (log Z-hat -118 against -4.73, and eta = 1 no longer matching DDPM).
TEST(Guided, DdimKernels) {
  const benchmark_problem p = make_problem(10, 7);
  const ds::mixture_posterior post(p.prior, p.observation);
  {
    const ds::guided_problems g = replicate(p.observation, 2);
    ds::guided_options o = options(ds::guided_sampler::smc, 256, 50, 3);
    const smc_result ddpm = run(p, g, o);
    o.ddim = true;
    o.eta = 1.0;
    const smc_result ddim = run(p, g, o);
    for (int b = 0; b < 2; ++b) EXPECT_NEAR(ddim.log_z[b], ddpm.log_z[b], 1e-3);
  }
  const std::int64_t B = 8;
  ds::guided_options o = options(ds::guided_sampler::smc, 2048, 200, 13);
  o.ddim = true;
  o.eta = 0.5;
  const smc_result r = run(p, replicate(p.observation, B), o);
  const double m = ds::testing::mean(r.log_z), se = std::sqrt(ds::testing::variance(r.log_z) / double(B));
  std::printf("DDIM eta 0.5: mean log Z-hat %.4f +- %.4f, exact %.4f\n", m, se, post.log_evidence());
  EXPECT_LE(std::abs(m - post.log_evidence()), 4 * se + 0.1);
}

// Per-problem A, y and sigma_y: two different observations of the same prior, each replicated 4 times, in one call
// of 8 problems. Each group's mean log Z-hat must match its own exact log p(y) within 4 se + 0.1 (se from the
// group's 4 replicas; the allowance as in LogNormaliserConvergesToExactEvidence; measured -4.653 +- 0.031 against
// -4.731 and -5.052 +- 0.042 against -5.155). Seen to fail with A_stride forced
// to 0 (every problem reading the first A: the second group at -4.08 +- 0.03 against -5.15).
TEST(Guided, PerProblemObservations) {
  const benchmark_problem p = make_problem(10, 7);
  const benchmark_problem q = make_problem(10, 9);  // only q's observation (A, sigma_y, y) is used, with p's prior
  const ds::mixture_posterior post_p(p.prior, p.observation), post_q(p.prior, q.observation);
  ds::guided_problems g;
  g.problems = 8;
  g.d_y = 1;
  for (int b = 0; b < 8; ++b) {
    const ds::linear_observation& o = b < 4 ? p.observation : q.observation;
    g.A.insert(g.A.end(), o.A.begin(), o.A.end());
    g.y.push_back(o.y[0]);
    g.sigma_y.push_back(o.sigma_y);
  }
  const smc_result r = run(p, g, options(ds::guided_sampler::smc, 2048, 200, 17));
  for (int group = 0; group < 2; ++group) {
    const std::vector<double> lz(r.log_z.begin() + 4 * group, r.log_z.begin() + 4 * group + 4);
    const double exact = (group == 0 ? post_p : post_q).log_evidence();
    const double m = ds::testing::mean(lz), se = std::sqrt(ds::testing::variance(lz) / 4.0);
    std::printf("group %d: mean log Z-hat %.4f +- %.4f, exact %.4f\n", group, m, se, exact);
    EXPECT_LE(std::abs(m - exact), 4 * se + 0.1) << "group " << group;
  }
}

// DPS and Pi-GDM on the CUDA executor against the CPU one (same functors; no resampling, so each particle's
// trajectory is continuous in its noise): the two executors' arithmetic differs in the last bits (contracted
// multiply-adds, the device's math functions), so at most 1% of the coordinates may differ by more than 1e-2
// relative, and every output must be finite. Over 3 steps: both samplers amplify last-bit differences along a
// trajectory (DPS's step has the fixed length zeta in the direction of the residual's gradient, which turns over
// where the residual changes sign), so that on the CPU alone a 1e-6 relative change of y moves 1,900 of these
// 10,240 values (DPS) and 270 (Pi-GDM) beyond the tolerance after 50 steps, 100 and 37 after 10, and none after 3
// (measured). An indexing or layout error moves values by the prior's scale at any step count.
TEST(Guided, GpuDpsAndPigdmMatchTheCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  const benchmark_problem p = make_problem(10, 9);
  const ds::guided_problems g = replicate(p.observation, 2);
  for (ds::guided_sampler s : {ds::guided_sampler::dps, ds::guided_sampler::pigdm}) {
    const ds::guided_options o = options(s, 512, 3, 17);
    const std::int64_t count = 2 * 512 * 10;
    std::vector<float> host(count, NAN);
    ds::guided_outputs out;
    out.samples = host.data();
    ds::guided_sample(p.prior, out, g, o, cpu());
    ds::testing::device_buffer<float> dev(count);
    out.samples = dev.ptr;
    ASSERT_EQ(ds::guided_sample(p.prior, out, g, o, {ds::executor::cuda, nullptr}).ran, ds::executor::cuda);
    const std::vector<float> got = dev.download();
    std::int64_t far = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << ds::to_string(s) << " " << i;
      far += std::abs(got[i] - host[i]) > 1e-2 * (1 + std::abs(host[i]));
    }
    EXPECT_LE(far, count / 100) << ds::to_string(s);
  }
}

namespace {

// A symmetric two-mode posterior: prior components at (-4, 0) and (4, 0) with unit variance and equal weights,
// coordinate 1 observed (y = 0, sigma_y = 0.1), so each mode keeps posterior weight 1/2 and the modes are 8
// standard deviations apart (a sample's mode is the sign of its coordinate 0). The sharp observation makes the
// weights uneven, so resampling copies particles many times: in ancestor order the copies sit in runs.
benchmark_problem two_modes() {
  benchmark_problem p{ds::gaussian_mixture(2, {1.0, 1.0}, {-4, 0, 4, 0}, {1.0, 1.0}), {}};
  p.observation.d_y = 1;
  p.observation.d_x = 2;
  p.observation.A = {0, 1};
  p.observation.sigma_y = 0.1;
  p.observation.y = {0.0};
  return p;
}

// Blocks of m consecutive rows against uniformly random subsets: with M of the N samples in the right mode and
// p = M / N, a random subset of m rows holds c ~ Hypergeometric(N, M, m) of them, Var c = m p (1 - p) (N - m) /
// (N - 1), and R = sum over the N / m blocks of (c_i - m p)^2 / (blocks x Var c) has expectation exactly 1 for a
// uniformly random order, and a standard deviation of about sqrt(2 / (blocks - 1)) (a chi-square with blocks - 1
// degrees of freedom over its mean).
double block_variance_ratio(const std::vector<float>& samples, std::int64_t n, std::int64_t d, std::int64_t m) {
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < n; ++i) total += samples[i * d] > 0;
  const double p = double(total) / double(n);
  const std::int64_t blocks = n / m;
  const double var = double(m) * p * (1 - p) * double(n - m) / double(n - 1);
  double sum = 0;
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::int64_t c = 0;
    for (std::int64_t i = b * m; i < (b + 1) * m; ++i) c += samples[i * d] > 0;
    sum += (double(c) - double(m) * p) * (double(c) - double(m) * p);
  }
  return sum / (double(blocks) * var);
}

}  // namespace

// The equally weighted samples after the final resampling come in an exchangeable order: blocks of 32 consecutive
// rows of N = 8192 samples (256 blocks) have the mode-count variance of random subsets. R's standard deviation is
// sqrt(2 / 255) = 0.089; asserted |R - 1| < 5 x 0.089 = 0.44 for each of 3 seeds (measured 0.91, 1.04, 0.96).
// Seen to fail with the final gather in ancestor order (gather_particles, as before the permutation):
// R = 4.00, 4.24 and 4.40.
TEST(Guided, FinalSamplesComeInAnExchangeableOrder) {
  const benchmark_problem p = two_modes();
  const ds::guided_problems g = replicate(p.observation, 1);
  const std::int64_t n = 8192, d = 2, m = 32;
  for (std::uint64_t seed : {3u, 4u, 5u}) {
    const smc_result r = run(p, g, options(ds::guided_sampler::smc, n, 20, seed));
    std::int64_t right = 0;
    for (std::int64_t i = 0; i < n; ++i) right += r.samples[i * d] > 0;
    ASSERT_GT(right, n / 4) << "both modes must be well represented for the statistic to mean anything";
    ASSERT_LT(right, 3 * n / 4);
    const double ratio = block_variance_ratio(r.samples, n, d, m);
    std::printf("seed %llu: block variance ratio %.3f\n", static_cast<unsigned long long>(seed), ratio);
    EXPECT_NEAR(ratio, 1.0, 5 * std::sqrt(2.0 / double(n / m - 1))) << "seed " << seed;
  }
}

// The GPU's final samples come in an exchangeable order too (the same permutation functor runs on both
// executors): the block statistic of FinalSamplesComeInAnExchangeableOrder, same tolerance.
TEST(Guided, GpuFinalSamplesComeInAnExchangeableOrder) {
  DIFFSAMPLE_REQUIRE_GPU();
  const benchmark_problem p = two_modes();
  const ds::guided_problems g = replicate(p.observation, 1);
  const std::int64_t n = 8192, d = 2;
  const smc_result gpu = run(p, g, options(ds::guided_sampler::smc, n, 20, 3), ds::executor::cuda);
  EXPECT_NEAR(block_variance_ratio(gpu.samples, n, d, 32), 1.0, 5 * std::sqrt(2.0 / 255.0));
}

namespace {

// The multistep kernel (guided_options::multistep_kernel) on a deterministic kernel (DDIM, eta = 0: x' = c1 x + c0 m'
// exactly, m' the kernel's denoiser) and a Gaussian prior N(mu0, v0 I), whose denoiser is affine:
// m(x) = mu0 + a v0 / (a^2 v0 + s^2) (x - a mu0). Every particle's path is then a known function of its first draw
// x_0 = s_0 z (z from its Philox stream, step 0, as the sampler draws it), computed here in FP64 from the schedule:
// c1 = s' / s, c0 = a' - s' a / s, and with the multistep kernel m' = m_k + w_k (m_k - m_{k-1}), w_k = h_k /
// (2 h_{k-1}), h_k = lambda_{k+1} - lambda_k, lambda = log(a / s), for 0 < k with s_{k+1} > 0 (m_{k-1} the previous
// denoiser output of the same path: a resampled particle continues its ancestor's path, m_{k-1} included).
std::vector<double> multistep_paths(const std::vector<ds::schedule_point>& pts, const std::vector<float>& x0,
                                    std::int64_t n, std::int64_t d, const std::vector<double>& mu0, double v0,
                                    bool multistep) {
  const std::int64_t K = std::int64_t(pts.size()) - 1;
  std::vector<double> out(n * d);
  const auto lambda = [&](std::int64_t k) { return std::log(pts[k].a / pts[k].s); };
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<double> x(x0.begin() + i * d, x0.begin() + (i + 1) * d), m(d), previous(d);
    for (std::int64_t k = 0; k < K; ++k) {
      const double a = pts[k].a, s = pts[k].s, an = pts[k + 1].a, sn = pts[k + 1].s;
      const double w =
          multistep && k > 0 && sn > 0 ? 0.5 * (lambda(k + 1) - lambda(k)) / (lambda(k) - lambda(k - 1)) : 0.0;
      for (std::int64_t j = 0; j < d; ++j) {
        m[j] = mu0[j] + a * v0 / (a * a * v0 + s * s) * (x[j] - a * mu0[j]);
        const double kernel_m = m[j] + w * (m[j] - previous[j]);
        x[j] = sn / s * x[j] + (an - sn * a / s) * kernel_m;
      }
      previous = m;
    }
    std::copy(x.begin(), x.end(), out.begin() + i * d);
  }
  return out;
}

}  // namespace

// Each final particle of the SMC with the multistep kernel must be the FP64 path above of one of the first draws
// (within 1e-5 (1 + |x|): FP32 rounding over 20 steps; measured 4e-7 at most), with linear, moment and twisted potentials and on every CPU
// target (DIFFSAMPLE_CPU_TARGET) and, where a GPU is present, the CUDA executor. N = 1 checks the kernel mean itself;
// N = 64 on an observation that makes the filter resample (checked: resample_count > 0) checks that m_{k-1} travels
// with the ancestor (a resampled particle that took its own row's m_{k-1} would follow no path of the set). The
// DDPM-kernel run must match the paths with w = 0 (the harness: first draws, coefficients), and the two sets of paths
// must differ by far more than the tolerance, so that a wrong coefficient shows. Seen to fail with w_k = h_k / h_{k-1}
// (the factor 1/2 left out: N = 1 off by 0.03 .. 0.2) and with m_{k-1} read from the particle's own row instead of its
// ancestor's (N = 64: particles off every path by up to 0.5, all three potentials). The last transition of every
// potentials is a fully adapted draw at s = 0 (kernels::final_transition_draw for the moment and twisted ones, whose
// C A^T is A^T itself for this isotropic Gaussian prior; kernels::linear_final_draw, in the directions A^T, for the
// linear ones): it moves the particle off its path along A^T, so the distances (and the two paths' distance apart)
// are measured orthogonally to A^T.
TEST(Guided, MultistepKernelFollowsItsExactPath) {
  const std::int64_t d = 2, K = 20;
  const std::vector<double> mu0 = {1.5, -0.5};
  const double v0 = 2.0;
  const ds::gaussian_mixture prior(d, {1.0}, mu0, {v0});
  ds::guided_problems g;
  g.d_y = 1;
  g.A = {1.0, 0.3};
  g.y = {3.0};
  g.sigma_y = {0.3};
  std::vector<ds::executor> executors = {ds::executor::cpu};
  if (ds::cuda_available()) executors.push_back(ds::executor::cuda);
  for (const ds::executor where : executors)
    for (const auto potentials :
         {ds::guided_potentials::linear, ds::guided_potentials::moment, ds::guided_potentials::twisted})
      for (const std::int64_t N : {std::int64_t(1), std::int64_t(64)}) {
        ds::guided_options o = options(ds::guided_sampler::smc, N, K, 17);
        o.ddim = true;
        o.eta = 0.0;
        o.potentials = potentials;
        o.final_resample = false;
        const std::vector<ds::schedule_point> pts = o.schedule.points(K);
        std::vector<float> x0(N * d);
        for (std::int64_t i = 0; i < N; ++i) {
          ds::kernels::philox rng(o.seed, static_cast<std::uint64_t>(i), 0);
          rng.normals(int(d), [&](int j, float z) { x0[i * d + j] = float(pts[0].s) * z; });
        }
        const auto sample = [&](bool multistep, std::int32_t* resamplings) {
          o.multistep_kernel = multistep;
          std::vector<float> x(N * d, NAN);
          ds::guided_outputs out;
          if (where == ds::executor::cuda) {
            ds::testing::device_buffer<float> xs(x);
            ds::testing::device_buffer<std::int32_t> count(1);
            out.particles = xs.ptr;
            out.resample_count = count.ptr;
            ds::guided_sample(prior, out, g, o, {where, nullptr});
            x = xs.download();
            *resamplings = count.download()[0];
          } else {
            out.particles = x.data();
            out.resample_count = resamplings;
            ds::guided_sample(prior, out, g, o, {where, nullptr});
          }
          return x;
        };
        for (const bool multistep : {false, true}) {
          const std::vector<double> paths = multistep_paths(pts, x0, N, d, mu0, v0, multistep);
          const std::vector<double> other = multistep_paths(pts, x0, N, d, mu0, v0, !multistep);
          std::int32_t resamplings = -1;
          const std::vector<float> x = sample(multistep, &resamplings);
          // The difference of two points, orthogonally to A^T (the last transition's draw).
          const bool project = true;
          const double norm = std::hypot(g.A[0], g.A[1]);
          const auto difference = [&](double u0, double u1, std::int64_t c) {
            const double along = project ? (u0 * g.A[0] + u1 * g.A[1]) / (norm * norm) : 0.0;
            return (c == 0 ? u0 : u1) - along * g.A[c];
          };
          double worst = 0, apart = 0;
          for (std::int64_t i = 0; i < N; ++i) {
            double nearest = INFINITY;
            for (std::int64_t j = 0; j < N; ++j) {
              double e = 0;
              for (std::int64_t c = 0; c < d; ++c)
                e = std::max(e, std::abs(difference(x[i * d] - paths[j * d], x[i * d + 1] - paths[j * d + 1], c)) /
                                    (1 + std::abs(paths[j * d + c])));
              nearest = std::min(nearest, e);
            }
            worst = std::max(worst, nearest);
            for (std::int64_t c = 0; c < d; ++c)
              apart = std::max(apart, std::abs(difference(paths[i * d] - other[i * d],
                                                          paths[i * d + 1] - other[i * d + 1], c)));
          }
          std::printf("%s, %s potentials, N = %lld, %s kernel: worst distance to a path %.2e (paths of the two "
                      "kernels %.3f apart), %d resamplings\n",
                      ds::to_string(where), ds::to_string(potentials), static_cast<long long>(N),
                      multistep ? "multistep" : "DDPM", worst, apart, resamplings);
          EXPECT_LE(worst, 1e-5);
          EXPECT_GE(apart, 1e-2);
          if (N > 1) {
            EXPECT_GT(resamplings, 0);
          }
        }
      }
}

// guided_options::multistep_kernel is an SMC option of guided_sample() and of the SMC's ask/tell plan: refused by the
// other samplers, run or planned, naming the option and the sampler.
TEST(Guided, MultistepKernelRefusedWhereItDoesNotRun) {
  const benchmark_problem p = make_problem(4, 3);
  const ds::guided_problems g = replicate(p.observation, 1);
  ds::guided_options o = options(ds::guided_sampler::dps, 8, 10, 1);
  o.multistep_kernel = true;
  std::vector<float> samples(8 * 4);
  ds::guided_outputs out;
  out.samples = samples.data();
  const auto expect_refused = [](const std::function<void()>& f, const std::string& sampler) {
    try {
      f();
      ADD_FAILURE() << "not refused: " << sampler;
    } catch (const ds::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("options.multistep_kernel"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not read by sampler " + sampler), std::string::npos) << e.what();
    }
  };
  expect_refused([&] { ds::guided_sample(p.prior, out, g, o, cpu()); }, "dps");
  // Every other sampler with a plan, asked as its plan asks (SKRock: the score, with a Lipschitz bound).
  for (const ds::guided_sampler s :
       {ds::guided_sampler::dps, ds::guided_sampler::pigdm, ds::guided_sampler::diffpir, ds::guided_sampler::dcps,
        ds::guided_sampler::tmpd, ds::guided_sampler::ddrm, ds::guided_sampler::skrock}) {
    ds::guided_options os = o;
    os.sampler = s;
    os.skrock_lipschitz = 4.0;
    const ds::model_output output =
        s == ds::guided_sampler::skrock ? ds::model_output::score : ds::model_output::denoiser;
    expect_refused([&] { (void)ds::sampling_plan::guided(4, g, os, output, cpu()); }, ds::to_string(s));
  }
  o.sampler = ds::guided_sampler::smc;
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, o, cpu()));
  EXPECT_NO_THROW((void)ds::sampling_plan::guided(4, g, o, ds::model_output::denoiser, cpu()));
}

namespace {

// Every SMC output of one CPU run, for bit-for-bit comparisons.
struct all_outputs {
  std::vector<float> particles, log_weights, samples, ess;
  std::vector<double> log_z;
  std::vector<std::int32_t> counts;
  bool operator==(const all_outputs& o) const {
    const auto same = [](const auto& a, const auto& b) {
      // (empty vectors' data() may be null, which memcmp may not be given even for 0 bytes)
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
    };
    return same(particles, o.particles) && same(log_weights, o.log_weights) && same(samples, o.samples) &&
           same(ess, o.ess) && same(log_z, o.log_z) && same(counts, o.counts);
  }
};

all_outputs run_all(const ds::gaussian_mixture& prior, const ds::guided_problems& g, const ds::guided_options& o) {
  const std::int64_t B = g.problems, N = o.particles, d = prior.dim();
  const bool smc = o.sampler == ds::guided_sampler::smc;
  all_outputs r;
  r.particles.assign(B * N * d, NAN);
  r.samples.assign(B * N * d, NAN);
  if (smc) {
    r.log_weights.assign(B * N, NAN);
    r.ess.assign(B * (o.steps + 1), NAN);
    r.log_z.assign(B, NAN);
    r.counts.assign(B, -1);
  }
  ds::guided_outputs out;
  out.particles = r.particles.data();
  out.samples = r.samples.data();
  if (smc) {
    out.log_weights = r.log_weights.data();
    out.ess_trace = r.ess.data();
    out.log_normaliser = r.log_z.data();
    out.resample_count = r.counts.data();
  }
  ds::guided_sample(prior, out, g, o, cpu());
  return r;
}

// B = 2 problems with a random d_y x d operator each, observations of prior draws, sigma_y = 0.6.
ds::guided_problems random_problems(const ds::gaussian_mixture& prior, std::int64_t dy, unsigned seed) {
  const std::int64_t d = prior.dim(), B = 2;
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  ds::guided_problems g;
  g.problems = B;
  g.d_y = dy;
  g.A.resize(B * dy * d);
  for (auto& a : g.A) a = z(gen) / std::sqrt(double(d));
  g.sigma_y = {0.6};
  std::vector<float> x(B * d);
  prior.sample(x.data(), B, ds::channel{1.0, 0.0}, seed, nullptr, 0, cpu());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < dy; ++i) {
      double v = 0.6 * z(gen);
      for (std::int64_t j = 0; j < d; ++j) v += g.A[(b * dy + i) * d + j] * x[b * d + j];
      g.y.push_back(v);
    }
  return g;
}

}  // namespace

// guided_potentials::automatic, the default, resolved once per run (detail::resolve_options): on a problem with
// d_y <= 8 and a grid ending at s = 0 the run is, bit for bit (particles, log-weights, samples, ESS trace,
// log-normaliser, resampling counts), the run with twisted potentials, the start correction and the multistep kernel
// given explicitly, and needs its workspace; at d_y = 9 it is the linear run, with the start correction and the
// multistep kernel as the caller set them (off, then on); on a grid ending above s = 0 (t_end = 0.05), where twisted
// potentials are refused, the linear run. DPS at d_y = 9 ignores the potentials. Each pair of references differs, so
// that the comparison can tell which ran. Seen failing with the start correction left off in the resolution (the d_y
// = 3 run differed from the explicit one), with the d_y limit taken as 9 (d_y = 9 ran twisted potentials past the
// kernels' limit: a segmentation fault) and with the s = 0 condition dropped (the t_end = 0.05 run refused: twisted
// potentials need a grid ending at s = 0).
TEST(Guided, DefaultPotentialsResolvePerRun) {
  const benchmark_problem p = make_problem(4, 5);
  const std::int64_t N = 48, K = 12;
  ds::guided_options o;
  ASSERT_EQ(o.potentials, ds::guided_potentials::automatic);
  ASSERT_FALSE(o.start_correction);
  ASSERT_FALSE(o.multistep_kernel);
  o.final_moves = 0;  // the potentials only (the automatic final moves: DefaultFinalMovesResolvePerRun)
  o.particles = N;
  o.steps = K;
  o.seed = 19;
  o.resampling.ess_threshold = 0.8;
  const auto with = [&](ds::guided_potentials potentials, bool corrected, bool multistep) {
    ds::guided_options e = o;
    e.potentials = potentials;
    e.start_correction = corrected;
    e.multistep_kernel = multistep;
    return e;
  };
  const ds::guided_options twisted = with(ds::guided_potentials::twisted, true, true);
  const ds::guided_options linear = with(ds::guided_potentials::linear, false, false);
  {
    const ds::guided_problems g = random_problems(p.prior, 3, 7);
    const all_outputs automatic = run_all(p.prior, g, o);
    EXPECT_TRUE(automatic == run_all(p.prior, g, twisted)) << "d_y = 3: not the twisted run with both corrections";
    EXPECT_FALSE(automatic == run_all(p.prior, g, with(ds::guided_potentials::twisted, true, false)))
        << "d_y = 3: the multistep kernel must be on";
    EXPECT_FALSE(automatic == run_all(p.prior, g, linear)) << "d_y = 3: the linear run must differ";
    EXPECT_GT(automatic.counts[0], 0) << "the run must resample";
    EXPECT_EQ(ds::guided_workspace_bytes(p.prior, g, o), ds::guided_workspace_bytes(p.prior, g, twisted));
    EXPECT_GT(ds::guided_workspace_bytes(p.prior, g, o), ds::guided_workspace_bytes(p.prior, g, linear));
  }
  {
    const ds::guided_problems g = random_problems(p.prior, 9, 8);
    const all_outputs automatic = run_all(p.prior, g, o);
    EXPECT_TRUE(automatic == run_all(p.prior, g, linear)) << "d_y = 9: not the linear run";
    EXPECT_FALSE(automatic == run_all(p.prior, g, with(ds::guided_potentials::linear, true, true)));
    ds::guided_options both = o;
    both.start_correction = both.multistep_kernel = true;
    EXPECT_TRUE(run_all(p.prior, g, both) == run_all(p.prior, g, with(ds::guided_potentials::linear, true, true)))
        << "d_y = 9: the caller's start correction and multistep kernel";
    EXPECT_EQ(ds::guided_workspace_bytes(p.prior, g, o), ds::guided_workspace_bytes(p.prior, g, linear));
    ds::guided_options dps = o, dps_linear = linear;
    dps.sampler = dps_linear.sampler = ds::guided_sampler::dps;
    dps.resampling = dps_linear.resampling = ds::guided_options{}.resampling;  // DPS refuses another value
    EXPECT_TRUE(run_all(p.prior, g, dps) == run_all(p.prior, g, dps_linear)) << "dps ignores the potentials";
  }
  {
    const ds::guided_problems g = random_problems(p.prior, 3, 9);
    ds::guided_options above = o;
    above.schedule.with_grid(ds::time_grid::uniform, 1.0, 0.05);
    ds::guided_options above_linear = linear;
    above_linear.schedule = above.schedule;
    ds::guided_options above_twisted = twisted;
    above_twisted.schedule = above.schedule;
    EXPECT_THROW(run_all(p.prior, g, above_twisted), ds::invalid_argument);
    const all_outputs automatic = run_all(p.prior, g, above);
    EXPECT_TRUE(automatic == run_all(p.prior, g, above_linear)) << "grid ending above s = 0: not the linear run";
    ds::guided_options ms = above_linear;
    ms.multistep_kernel = true;
    EXPECT_FALSE(automatic == run_all(p.prior, g, ms));
  }
}

// guided_options::final_moves = -1, the default, resolved with the potentials (detail::resolve_options): where the
// automatic potentials resolve to twisted (d_y = 3, a grid ending at s = 0) the default run is, bit for bit, the run
// with twisted potentials, both corrections and automatic_final_moves = 4 final moves given explicitly (and not the
// one without moves, nor with 3 or 5), and needs its workspace; explicit final_moves = 0 is that run without moves.
// Where they resolve to linear on a grid ending at s = 0 (d_y = 9) it is the linear run with
// automatic_linear_final_moves = 20 moves (not 0, not 10); on a grid ending at t = 0.05, where explicit moves are
// refused, the run without moves, refused nowhere; with potentials given explicitly (twisted or linear) the run
// without moves. The report names the moves that ran (none without outputs.samples). -2 is refused, naming
// options.final_moves. Seen failing with the resolution giving 0 moves (the d_y = 3 default run was the run without
// moves), with it giving 4 whatever the potentials resolved to (t_end = 0.05 refused: the moves need a grid ending at
// s = 0), with the linear resolution giving none (d_y = 9: the run without moves), and with -2 accepted as
// automatic.
TEST(Guided, DefaultFinalMovesResolvePerRun) {
  const benchmark_problem p = make_problem(4, 5);
  ds::guided_options o;
  ASSERT_EQ(o.final_moves, -1);
  ASSERT_EQ(ds::automatic_final_moves, 4);
  o.particles = 48;
  o.steps = 12;
  o.seed = 23;
  o.resampling.ess_threshold = 0.8;
  const auto explicit_run = [&](ds::guided_potentials potentials, bool corrections, std::int64_t moves) {
    ds::guided_options e = o;
    e.potentials = potentials;
    e.start_correction = e.multistep_kernel = corrections;
    e.final_moves = moves;
    return e;
  };
  const auto report = [&](const ds::guided_problems& g, const ds::guided_options& e, bool samples) {
    std::vector<float> x(static_cast<std::size_t>(g.problems * e.particles * p.prior.dim()));
    ds::guided_outputs out;
    (samples ? out.samples : out.particles) = x.data();
    return ds::guided_sample(p.prior, out, g, e, cpu()).final_moves;
  };
  {
    const ds::guided_problems g = random_problems(p.prior, 3, 7);
    const ds::guided_options moved = explicit_run(ds::guided_potentials::twisted, true, 4);
    const all_outputs automatic = run_all(p.prior, g, o);
    EXPECT_TRUE(automatic == run_all(p.prior, g, moved)) << "d_y = 3: not the twisted run with 4 final moves";
    const all_outputs unmoved = run_all(p.prior, g, explicit_run(ds::guided_potentials::twisted, true, 0));
    EXPECT_FALSE(automatic == unmoved) << "d_y = 3: the final moves must run";
    EXPECT_FALSE(automatic == run_all(p.prior, g, explicit_run(ds::guided_potentials::twisted, true, 3)));
    EXPECT_FALSE(automatic == run_all(p.prior, g, explicit_run(ds::guided_potentials::twisted, true, 5)));
    ds::guided_options off = o;
    off.final_moves = 0;
    EXPECT_TRUE(run_all(p.prior, g, off) == unmoved) << "d_y = 3, final_moves = 0: moves ran";
    EXPECT_EQ(ds::guided_workspace_bytes(p.prior, g, o), ds::guided_workspace_bytes(p.prior, g, moved));
    EXPECT_EQ(report(g, o, true), 4);
    EXPECT_EQ(report(g, o, false), 0) << "no samples, no moves";
    EXPECT_EQ(report(g, off, true), 0);
    // Explicit potentials keep the caller's count: none by default.
    EXPECT_TRUE(run_all(p.prior, g, explicit_run(ds::guided_potentials::twisted, true, -1)) == unmoved);
    EXPECT_EQ(report(g, explicit_run(ds::guided_potentials::twisted, true, -1), true), 0);
    ds::guided_options bad = o;
    bad.final_moves = -2;
    try {
      run_all(p.prior, g, bad);
      ADD_FAILURE() << "final_moves = -2 accepted";
    } catch (const ds::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("options.final_moves"), std::string::npos) << e.what();
    }
  }
  {
    ASSERT_EQ(ds::automatic_linear_final_moves, 20);
    const ds::guided_problems g = random_problems(p.prior, 9, 8);
    const all_outputs automatic = run_all(p.prior, g, o);
    EXPECT_TRUE(automatic == run_all(p.prior, g, explicit_run(ds::guided_potentials::linear, false, 20)))
        << "d_y = 9: not the linear run with 20 final moves";
    EXPECT_FALSE(automatic == run_all(p.prior, g, explicit_run(ds::guided_potentials::linear, false, 0)));
    EXPECT_FALSE(automatic == run_all(p.prior, g, explicit_run(ds::guided_potentials::linear, false, 10)));
    EXPECT_EQ(report(g, o, true), 20);
    EXPECT_EQ(report(g, o, false), 0) << "d_y = 9: no samples, no moves";
    EXPECT_EQ(report(g, explicit_run(ds::guided_potentials::linear, false, -1), true), 0) << "explicit linear";
  }
  {
    const ds::guided_problems g = random_problems(p.prior, 3, 9);
    ds::guided_options above = o;
    above.schedule.with_grid(ds::time_grid::uniform, 1.0, 0.05);
    ds::guided_options above_linear = explicit_run(ds::guided_potentials::linear, false, 0);
    above_linear.schedule = above.schedule;
    EXPECT_TRUE(run_all(p.prior, g, above) == run_all(p.prior, g, above_linear))
        << "grid ending above s = 0: not the linear run without moves";
    EXPECT_EQ(report(g, above, true), 0);
  }
}

// resampling.ess_threshold = -1 (the default) resolves per run, as final_moves' -1: automatic_twisted_ess_threshold
// where the automatic potentials resolve to twisted (d_y = 3), 0.5 where they resolve to linear (d_y = 9) and with
// explicit potentials; a value >= 0 is taken as given; -2 and NaN are refused; guided_report::ess_threshold gives the
// value that ran. Seen failing with -1 resolved to 0.5 everywhere (the d_y = 3 run equal to the 0.5 run, not to the
// 0.2 one).
TEST(Guided, DefaultEssThresholdResolvesPerRun) {
  const benchmark_problem p = make_problem(4, 5);
  ds::guided_options o;
  ASSERT_EQ(o.resampling.ess_threshold, -1.0);
  ASSERT_EQ(ds::automatic_twisted_ess_threshold, 0.2);
  ASSERT_EQ(ds::resampling_options{}.ess_threshold, 0.5);
  o.particles = 64;
  o.steps = 16;
  o.seed = 31;
  const auto with = [&](double threshold, ds::guided_potentials potentials = ds::guided_potentials::automatic) {
    ds::guided_options e = o;
    e.resampling.ess_threshold = threshold;
    e.potentials = potentials;
    return e;
  };
  const auto threshold_ran = [&](const ds::guided_problems& g, const ds::guided_options& e) {
    std::vector<float> x(static_cast<std::size_t>(g.problems * e.particles * p.prior.dim()));
    ds::guided_outputs out;
    out.particles = x.data();
    return ds::guided_sample(p.prior, out, g, e, cpu()).ess_threshold;
  };
  {
    const ds::guided_problems g = random_problems(p.prior, 3, 7);
    const all_outputs automatic = run_all(p.prior, g, o), half = run_all(p.prior, g, with(0.5));
    EXPECT_TRUE(automatic == run_all(p.prior, g, with(0.2))) << "d_y = 3: not the run at 0.2";
    EXPECT_FALSE(automatic == half) << "d_y = 3: the thresholds 0.2 and 0.5 must give different runs here";
    EXPECT_GT(half.counts[0], 0) << "the run at 0.5 must resample";
    // guided_report gives the threshold that ran, -1 resolved.
    EXPECT_EQ(threshold_ran(g, o), 0.2) << "d_y = 3, automatic";
    EXPECT_EQ(threshold_ran(g, with(-1, ds::guided_potentials::twisted)), 0.5) << "d_y = 3, explicit twisted";
    EXPECT_EQ(threshold_ran(g, with(0.7)), 0.7) << "d_y = 3, as given";
    // Explicit twisted potentials keep resampling_options' 0.5.
    EXPECT_TRUE(run_all(p.prior, g, with(-1, ds::guided_potentials::twisted)) ==
                run_all(p.prior, g, with(0.5, ds::guided_potentials::twisted)));
    for (double bad : {-2.0, -0.5, std::nan("")}) {
      try {
        run_all(p.prior, g, with(bad));
        ADD_FAILURE() << "ess_threshold = " << bad << " accepted";
      } catch (const ds::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("options.resampling.ess_threshold"), std::string::npos) << e.what();
      }
    }
  }
  {
    const ds::guided_problems g = random_problems(p.prior, 9, 8);
    EXPECT_TRUE(run_all(p.prior, g, o) == run_all(p.prior, g, with(0.5))) << "d_y = 9 (linear): not the run at 0.5";
    EXPECT_EQ(threshold_ran(g, o), 0.5) << "d_y = 9, automatic";
    EXPECT_FALSE(run_all(p.prior, g, o) == run_all(p.prior, g, with(0.2))) << "d_y = 9: 0.2 must differ here";
  }
}

// guided_report names the potentials, start correction and multistep kernel a run took, automatic resolved: at
// d_y = 3 twisted with both corrections; at d_y = 9 linear with the caller's flags (none, then the multistep kernel);
// on a grid ending above s = 0 linear; explicit choices as given; dps, which has no potentials, linear and neither
// correction. Seen failing with the report left at its defaults (d_y = 3 reported linear, no corrections).
TEST(Guided, ReportNamesThePotentialsThatRan) {
  const benchmark_problem p = make_problem(4, 5);
  ds::guided_options o;
  o.particles = 32;
  o.steps = 8;
  o.seed = 3;
  const auto report = [&](const ds::guided_problems& g, const ds::guided_options& e) {
    std::vector<float> x(static_cast<std::size_t>(g.problems * e.particles * p.prior.dim()));
    ds::guided_outputs out;
    out.particles = x.data();
    return ds::guided_sample(p.prior, out, g, e, cpu());
  };
  const auto expect = [](const ds::guided_report& r, ds::guided_potentials potentials, bool corrected,
                         bool multistep, const char* what) {
    EXPECT_EQ(r.potentials, potentials) << what << ": " << ds::to_string(r.potentials);
    EXPECT_EQ(r.start_correction, corrected) << what;
    EXPECT_EQ(r.multistep_kernel, multistep) << what;
  };
  const ds::guided_problems small = random_problems(p.prior, 3, 7), large = random_problems(p.prior, 9, 8);
  expect(report(small, o), ds::guided_potentials::twisted, true, true, "automatic, d_y = 3");
  expect(report(large, o), ds::guided_potentials::linear, false, false, "automatic, d_y = 9");
  ds::guided_options e = o;
  e.multistep_kernel = true;
  expect(report(large, e), ds::guided_potentials::linear, false, true, "automatic, d_y = 9, multistep kernel");
  e = o;
  e.schedule.with_grid(ds::time_grid::uniform, 1.0, 0.05);
  expect(report(small, e), ds::guided_potentials::linear, false, false, "automatic, grid ending at t = 0.05");
  e = o;
  e.potentials = ds::guided_potentials::moment;
  expect(report(small, e), ds::guided_potentials::moment, false, false, "moment");
  e.potentials = ds::guided_potentials::linear;
  e.start_correction = true;
  expect(report(small, e), ds::guided_potentials::linear, true, false, "linear, start correction");
  e = o;
  e.sampler = ds::guided_sampler::dps;
  expect(report(small, e), ds::guided_potentials::linear, false, false, "dps");
}

// The default potentials against the exact posterior at the budget they are meant for (100 steps), the checks of
// check_posterior (8 replicas of N = 2048 at d_x = 10): component weights within 5 se + 0.02, the misfit along A
// within 4 se, the within-component distance within 2x the floor. Measured: max weight error 0.0096, misfit 0.752
// against 0.746 (se 0.012), within-component SW 0.61x the floor. It checks the default's accuracy, not which
// potentials ran (the linear ones pass it too, at 1.05x): DefaultPotentialsResolvePerRun does that. Seen failing with
// the resolution giving the twisted run a deterministic kernel (DDIM, eta = 0: within-component SW 2.32x the floor).
TEST(Guided, DefaultPotentialsReachExactPosteriorD10) {
  check_posterior(10, 1, 2.0, ds::executor::cpu, 2048, 100, ds::guided_potentials::automatic);
}

// The log-normaliser of a run with the default options: B = 8 replicas of N = 1024 at 100 steps (as the twisted
// potentials' test above), |mean log Z-hat - log p(y)| <= 4 se + 0.05 (0.05: half the 0.1 allowed for the 100-step
// DDPM prior's own evidence error elsewhere). Measured: mean -4.7225 against -4.7311 (error 0.0086, se 0.016). Seen
// failing with 0.2 added to the twisted potentials' log-normaliser constant (mean -4.5225).
TEST(Guided, DefaultPotentialsLogNormaliser) {
  const benchmark_problem p = make_problem(10, 7);
  const ds::mixture_posterior post(p.prior, p.observation);
  const double exact = post.log_evidence();
  const std::int64_t B = 8;
  ds::guided_options o;
  o.particles = 1024;
  o.steps = 100;
  o.seed = 13;
  const smc_result r = run(p, replicate(p.observation, B), o);
  std::vector<double> lz(r.log_z.begin(), r.log_z.end());
  for (double v : lz) ASSERT_TRUE(std::isfinite(v));
  const double err = std::abs(ds::testing::mean(lz) - exact), se = std::sqrt(ds::testing::variance(lz) / double(B));
  std::printf("default potentials, N = 1024, 100 steps: mean log Z-hat %.4f, exact %.4f, |error| %.4f, se %.4f, "
              "resamplings %d\n", ds::testing::mean(lz), exact, err, se, r.resamplings[0]);
  EXPECT_LE(err, 4 * se + 0.05);
}

// SKRock's initial state is an exact prior draw per particle. It picked the component against an FP32 running sum of
// the weights, which loses every weight below half an ulp of the sum before it: here component 0 of weight 3/4,
// then 4094 components of weight 2^-27 each (7.5e-9, under half the ulp of 0.75, 3e-8), then one of the rest. The
// small ones hold 4094 2^-27 = 3.05e-5 of the mass and were never drawn (all of it went to the last component). Over
// N = 2^21 draws the count in each group is binomial around N w: 64 for the small ones, within 5 standard deviations
// (sqrt(N w (1 - w)) each) of the exact FP64 weights. The draws go through the very functor of the CPU executor's
// run (op skrock_op_initial, no iteration); the fused functor calls the same prior_draw. Seen failing on the FP32
// running sum (0 small draws).
TEST(Guided, SkrockPriorDrawsKeepThousandsOfSmallComponents) {
  namespace k = ds::kernels;
  const int K = 4096, small = K - 2;
  const double w_small = std::ldexp(1.0, -27), w_first = 0.75, w_last = 0.25 - small * w_small;
  std::vector<double> w(K, w_small), cumulative(K);
  w[0] = w_first;
  w[K - 1] = w_last;
  std::vector<float> log_w(K), means(K, 0.f), vars(K, 1e-6f);
  double running = 0;
  for (int c = 0; c < K; ++c) {
    log_w[c] = float(std::log(w[c]));
    running += w[c];  // binary fractions: exact
    cumulative[c] = running;
  }
  ASSERT_EQ(cumulative[K - 1], 1.0);
  means[0] = -10.f;  // the groups apart: x < -5, |x| < 5, x > 5
  means[K - 1] = 10.f;
  const std::int64_t N = std::int64_t(1) << 21;
  k::guided_params p{};
  p.mix = {log_w.data(), means.data(), vars.data(), K, 1, true};
  p.problems = 1;
  p.particles = N;
  p.d = 1;
  p.d_y = 0;
  p.seed = 17;
  const float one = 1.f;
  const k::skrock_params q{&one, &one, &one, 1, cumulative.data()};
  std::vector<float> x(N), unused(N);  // cur, old, g and the answer: untouched without iterations
  float* u = unused.data();
  const k::skrock_stage_functor f{p, q, k::skrock_op_initial, 0, 0, 0, x.data(), u, u, u, u, nullptr, nullptr,
                                  nullptr, 0};
  for (std::int64_t i = 0; i < N; ++i) f(i);
  std::int64_t counts[3] = {0, 0, 0};
  for (float v : x) ++counts[v < -5.f ? 0 : v > 5.f ? 2 : 1];
  const double expected[3] = {w_first, small * w_small, w_last};
  for (int g = 0; g < 3; ++g) {
    const double mean = double(N) * expected[g], sd = std::sqrt(mean * (1 - expected[g]));
    EXPECT_NEAR(double(counts[g]), mean, 5 * sd) << "group " << g << " (0: the heavy first component, 1: the "
                                                 << small << " small ones, 2: the last)";
  }
}
