// Particle-system primitives: statistics against FP64 references, exact and deterministic resampling (same
// ancestors for every thread count and executor), unbiased offspring counts for every scheme, failure handling.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/particles.cuh"
#include "reference/helpers.hpp"

namespace ds = diffsample;

namespace {

const float neg_inf = -std::numeric_limits<float>::infinity();
const float nan_f = std::numeric_limits<float>::quiet_NaN();

const ds::resampling_scheme all_schemes[] = {ds::resampling_scheme::multinomial, ds::resampling_scheme::stratified,
                                             ds::resampling_scheme::systematic,  ds::resampling_scheme::residual,
                                             ds::resampling_scheme::metropolis,  ds::resampling_scheme::rejection};

ds::execution cpu() { return {ds::executor::cpu, nullptr}; }

struct fp64_stats {
  double lse, ess;
};

// FP64 reference with long-double accumulation, skipping NaN and +inf like the library.
fp64_stats reference_stats(const float* lw, int n) {
  long double m = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (!std::isnan(lw[i]) && lw[i] != INFINITY) m = std::max<long double>(m, lw[i]);
  long double s = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    if (std::isnan(lw[i]) || lw[i] == INFINITY) continue;
    const long double w = std::exp(static_cast<long double>(lw[i]) - m);
    s += w;
    s2 += w * w;
  }
  return {double(m + std::log(s)), double(s * s / s2)};
}

std::vector<float> random_log_weights(std::int64_t count, unsigned seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> lw(count);
  for (auto& l : lw) l = u(gen);
  return lw;
}

std::vector<std::int32_t> run(const std::vector<float>& lw, std::int64_t b, std::int64_t n,
                              const ds::resampling_options& o, std::vector<ds::particle_report>* reports = nullptr) {
  std::vector<std::int32_t> a(b * n, -1);
  std::vector<ds::particle_report> r(b);
  ds::particle_outputs out;
  out.ancestors = a.data();
  out.reports = r.data();
  EXPECT_EQ(ds::resample(out, b, n, lw.data(), o, cpu()), ds::executor::cpu);
  if (reports) *reports = r;
  return a;
}

/// Resamples B x N log-weights (host `lw`, device copy `lw_d`) on the CUDA executor into `ancestors` and checks it
/// against the CPU executor: identical ancestors, decisions and invalid counts, ESS, log-sum-exp and normalised
/// weights equal up to the rounding of FP64 sums taken in different orders. Returns the CPU's ancestors.
std::vector<std::int32_t> expect_cuda_matches_cpu(const std::vector<float>& lw,
                                                  const ds::testing::device_buffer<float>& lw_d, std::int64_t b,
                                                  std::int64_t n, const ds::resampling_options& o,
                                                  ds::testing::device_buffer<std::int32_t>& ancestors) {
  std::vector<ds::particle_report> cpu_reports;
  std::vector<std::int32_t> ref(b * n);
  std::vector<float> w(b * n);
  ds::particle_outputs out;
  out.ancestors = ref.data();
  out.normalised_weights = w.data();
  cpu_reports.resize(b);
  out.reports = cpu_reports.data();
  ds::resample(out, b, n, lw.data(), o, cpu());
  ds::testing::device_buffer<ds::particle_report> r_d(b);
  ds::testing::device_buffer<float> w_d(b * n);
  out.ancestors = ancestors.ptr;
  out.normalised_weights = w_d.ptr;
  out.reports = r_d.ptr;
  EXPECT_EQ(ds::resample(out, b, n, lw_d.ptr, o, {ds::executor::cuda, nullptr}), ds::executor::cuda);
  EXPECT_EQ(ancestors.download(), ref) << ds::to_string(o.scheme);
  // Normalised weights divide by FP64 sums taken in different orders: agreement to float rounding.
  const auto wg = w_d.download();
  std::size_t far = 0;
  for (std::size_t i = 0; i < w.size(); ++i) far += std::abs(wg[i] - w[i]) > 1e-6f * w[i] + 1e-30f;
  EXPECT_EQ(far, 0u) << ds::to_string(o.scheme);
  const auto r = r_d.download();
  for (std::int64_t p = 0; p < b; ++p) {
    EXPECT_EQ(r[p].failed, cpu_reports[p].failed) << p;
    EXPECT_EQ(r[p].resampled, cpu_reports[p].resampled) << p;
    EXPECT_EQ(r[p].nan_count, cpu_reports[p].nan_count) << p;
    if (!r[p].failed) {
      EXPECT_NEAR(r[p].ess, cpu_reports[p].ess, 1e-9 * cpu_reports[p].ess) << p;
      EXPECT_NEAR(r[p].log_sum_exp, cpu_reports[p].log_sum_exp, 1e-9) << p;
    }
  }
  return ref;
}

}  // namespace

// Seen failing with ESS computed as sum w / sum w^2, and with the log-sum-exp missing its max shift.
TEST(Particles, StatisticsMatchFp64Reference) {
  const int b = 3, n = 1000;
  auto lw = random_log_weights(b * n, 1, -12.f, 4.f);
  for (int i = 0; i < n; ++i) lw[2 * n + i] *= 1000.f;  // very uneven weights: ESS close to 1
  std::vector<ds::particle_report> reports(b);
  std::vector<float> w(b * n);
  ds::particle_outputs out;
  out.reports = reports.data();
  out.normalised_weights = w.data();
  ds::resample(out, b, n, lw.data(), {}, cpu());
  for (int p = 0; p < b; ++p) {
    const fp64_stats ref = reference_stats(lw.data() + p * n, n);
    // FP64 sums of at most 1000 terms in [0, 1]: relative error below 1000 * 2^-53 ~ 1e-13.
    EXPECT_NEAR(reports[p].log_sum_exp, ref.lse, 1e-12 * (1 + std::abs(ref.lse))) << p;
    EXPECT_NEAR(reports[p].log_normaliser_increment, ref.lse - std::log(double(n)), 1e-12 * (1 + std::abs(ref.lse)));
    EXPECT_NEAR(reports[p].ess, ref.ess, 1e-11 * ref.ess) << p;
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += w[p * n + i];
    EXPECT_NEAR(sum, 1.0, 1e-5);  // float outputs: n * 2^-24 rounding
  }
}

TEST(Particles, HugeMagnitudeLogWeights) {
  const std::vector<float> lw = {80.f, -1e30f, 79.5f, neg_inf, -1e30f, 80.f};
  std::vector<ds::particle_report> r;
  ds::resampling_options o;
  o.ess_threshold = 2;
  const auto a = run(lw, 1, 6, o, &r);
  const double s = 2 + std::exp(-0.5), s2 = 2 + std::exp(-1.0);
  EXPECT_NEAR(r[0].log_sum_exp, 80 + std::log(s), 1e-12 * 80);
  EXPECT_NEAR(r[0].ess, s * s / s2, 1e-12);
  EXPECT_EQ(r[0].failed, 0);
  EXPECT_EQ(r[0].resampled, 1);
  for (auto i : a) EXPECT_TRUE(i == 0 || i == 2 || i == 5) << i;
}

// Seen failing when +inf was not treated as invalid, and (by hanging in the rejection sampler) when a failed
// problem was resampled; the systematic pre-check below now stops the test before any hang.
TEST(Particles, NanCountedAndAllZeroProblemFailed) {
  const int n = 8;
  std::vector<float> lw = {0.f, nan_f, 1.f, nan_f, INFINITY, 2.f, -1.f, 0.5f,                // 3 invalid
                           neg_inf, nan_f, neg_inf, neg_inf, neg_inf, nan_f, neg_inf, neg_inf};  // all zero
  ds::resampling_options o;
  o.ess_threshold = 2;
  {
    std::vector<ds::particle_report> r;
    run(lw, 2, n, o, &r);
    ASSERT_EQ(r[1].resampled, 0) << "a failed problem must not be resampled";
  }
  for (auto scheme : all_schemes) {
    o.scheme = scheme;
    std::vector<ds::particle_report> r;
    const auto a = run(lw, 2, n, o, &r);
    EXPECT_EQ(r[0].nan_count, 3);
    EXPECT_EQ(r[0].failed, 0);
    EXPECT_EQ(r[0].resampled, 1);
    for (int j = 0; j < n; ++j) EXPECT_TRUE(a[j] != 1 && a[j] != 3 && a[j] != 4) << ds::to_string(scheme);
    EXPECT_EQ(r[1].nan_count, 2);
    EXPECT_EQ(r[1].failed, 1);
    EXPECT_EQ(r[1].resampled, 0);
    EXPECT_EQ(r[1].ess, 0);
    EXPECT_EQ(r[1].log_sum_exp, -INFINITY);
    for (int j = 0; j < n; ++j) EXPECT_EQ(a[n + j], j) << "failed problem must keep identity ancestors";
  }
}

TEST(Particles, SingleNonZeroWeightSelectsOnlyIt) {
  const int n = 200;
  for (float other : {neg_inf, -1e30f}) {
    std::vector<float> lw(n, other);
    lw[7] = -3.f;
    ds::resampling_options o;
    o.ess_threshold = 2;
    // A Metropolis chain reaches the only non-zero weight once it proposes it: the chance that one of n chains
    // never does in 35 n steps is n (1 - 1/n)^(35 n) < n e^-35 ~ 1e-13.
    for (auto scheme : all_schemes) {
      o.scheme = scheme;
      // metropolis_steps is the metropolis scheme's (the others refuse another value than 64)
      o.metropolis_steps = scheme == ds::resampling_scheme::metropolis ? 35 * n : 64;
      for (auto i : run(lw, 1, n, o)) ASSERT_EQ(i, 7) << ds::to_string(scheme) << " other " << other;
    }
  }
}

// resample() promises that a particle of zero fixed-point weight (a -inf, NaN or +inf log-weight, or one more than
// 2^-k below the heaviest) is never an ancestor, for every scheme and at the default settings. A Metropolis chain
// that starts on such a particle and never proposes a weighted one within metropolis_steps must not stay there.
// Deterministic (no tolerance): every ancestor is checked. Seen failing before the fix: with one weighted particle of
// 200 and the default 64 steps, 146 of 200 ancestors had zero weight; with 190 NaN log-weights, 8 ancestors were NaN
// particles.
TEST(Particles, NoSchemeSelectsAZeroWeightAtDefaultSettings) {
  const int n = 200;
  ds::resampling_options o;  // default metropolis_steps
  o.ess_threshold = 2;
  std::vector<float> single(n, neg_inf), nans(n, nan_f);
  single[7] = -3.f;
  for (int i = 190; i < n; ++i) nans[i] = -0.5f * float(i - 190);
  for (auto scheme : all_schemes) {
    o.scheme = scheme;
    for (std::uint64_t seed : {1u, 2u, 3u}) {
      o.seed = seed;
      for (auto a : run(single, 1, n, o)) ASSERT_EQ(a, 7) << ds::to_string(scheme) << " seed " << seed;
      for (auto a : run(nans, 1, n, o)) ASSERT_GE(a, 190) << ds::to_string(scheme) << " seed " << seed;
    }
  }
}

TEST(Particles, AdaptiveThreshold) {
  const int n = 100;
  std::vector<float> lw(2 * n, 0.f);  // problem 0: equal weights, ESS = N
  for (int i = 0; i < n; ++i) lw[n + i] = -0.5f * i;  // problem 1: ESS ~ 4
  ds::resampling_options o;
  o.ess_threshold = 0.5;
  std::vector<ds::particle_report> r;
  const auto a = run(lw, 2, n, o, &r);
  EXPECT_EQ(r[0].resampled, 0);
  EXPECT_NEAR(r[0].ess, n, 1e-9);
  EXPECT_EQ(r[1].resampled, 1);
  for (int j = 0; j < n; ++j) EXPECT_EQ(a[j], j);
}

// Each problem of a batch draws from its own Philox streams, so B copies of one weight vector are B independent
// resampling replicates in one call. For every scheme the offspring count O_i of particle i has E[O_i] = N w_i
// (metropolis up to a bias of order (1 - mean w / max w)^steps, below 1e-60 here), and Var[O_i] <= max(N w_i, 1/4):
// multinomial N w (1 - w); stratified, rejection, metropolis and residual are sums of independent indicators
// (variance <= mean); systematic takes only floor(N w_i) and ceil(N w_i) (variance <= 1/4). The mean over B
// replicates is then within 5 sqrt(max(N w_i, 1/4) / B) of N w_i except with probability < 1e-6 per check.
// Seen failing against wrong kernels: rejection that accepts the starting particle without a test (every count
// 1), metropolis accepting with probability min(1, q_a / q_prop), and stratified with v drawn in [0, T / N).
// The threshold decides the same with and without an output for ancestors: every report (resampled included) and the
// normalised weights are the same bit for bit whether the call writes ancestors, ancestors64 or none, for every
// scheme, with a problem far below the threshold (ESS ~ 4 of 100), one at ESS = N, one failed, and with the threshold
// 0 (statistics only: nothing resampled). Seen failing: without ancestors the threshold was read as 0, so the first
// problem reported resampled = 0 there and 1 with ancestors (mpi::resample, which has no such branch, reported 1).
// A call that writes the reports alone (no ancestors, no normalised weights: residual resampling skips its pass of
// copies there, which only the selection reads) reports the same bytes too.
TEST(Particles, ReportsAreTheSameWithAndWithoutAncestors) {
  const int b = 3, n = 100;
  std::vector<float> lw(b * n, 0.f);
  for (int i = 0; i < n; ++i) lw[i] = -0.5f * i;  // problem 0: ESS ~ 4, below N / 2
  for (int i = 0; i < n; ++i) lw[2 * n + i] = neg_inf;  // problem 2: failed
  const auto as_bytes = [](const std::vector<ds::particle_report>& r) {
    return std::string(reinterpret_cast<const char*>(r.data()), r.size() * sizeof(ds::particle_report));
  };
  for (double threshold : {0.5, 0.0}) {
    for (auto scheme : all_schemes) {
      ds::resampling_options o;
      o.scheme = scheme;
      o.ess_threshold = threshold;
      o.seed = 11;
      std::vector<ds::particle_report> plain(b), with32(b), with64(b), alone(b);
      std::vector<float> w_plain(b * n), w32(b * n), w64(b * n);
      std::vector<std::int32_t> a32(b * n);
      std::vector<std::int64_t> a64(b * n);
      ds::particle_outputs out;
      out.reports = alone.data();
      ds::resample(out, b, n, lw.data(), o, cpu());
      out.reports = plain.data();
      out.normalised_weights = w_plain.data();
      ds::resample(out, b, n, lw.data(), o, cpu());
      out.reports = with32.data();
      out.normalised_weights = w32.data();
      out.ancestors = a32.data();
      ds::resample(out, b, n, lw.data(), o, cpu());
      out.reports = with64.data();
      out.normalised_weights = w64.data();
      out.ancestors = nullptr;
      out.ancestors64 = a64.data();
      ds::resample(out, b, n, lw.data(), o, cpu());
      const std::string where = std::string(ds::to_string(scheme)) + " at threshold " + std::to_string(threshold);
      EXPECT_EQ(plain[0].resampled, threshold > 0 ? 1 : 0) << where;
      EXPECT_EQ(plain[1].resampled, 0) << where;
      EXPECT_EQ(plain[2].resampled, 0) << where;
      EXPECT_EQ(plain[2].failed, 1) << where;
      EXPECT_EQ(as_bytes(plain), as_bytes(with32)) << where;
      EXPECT_EQ(as_bytes(plain), as_bytes(with64)) << where;
      EXPECT_EQ(as_bytes(plain), as_bytes(alone)) << where;
      EXPECT_EQ(w_plain, w32) << where;
      EXPECT_EQ(w_plain, w64) << where;
      for (int i = 0; i < b * n; ++i) ASSERT_EQ(a64[i], a32[i]) << where << " slot " << i;
    }
  }
}

TEST(Particles, OffspringCountsAreUnbiased) {
  const int n = 16, replicates = 4000;
  std::vector<double> w(n);
  double total = 0;
  for (int i = 0; i < n; ++i) total += w[i] = i + 1.0;
  std::vector<float> lw(n * replicates);
  for (int r = 0; r < replicates; ++r)
    for (int i = 0; i < n; ++i) lw[r * n + i] = float(std::log(w[i]));
  for (int i = 0; i < n; ++i) w[i] = double(float(std::exp(double(lw[i])))) / total;
  for (auto scheme : all_schemes) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 12345;
    if (scheme == ds::resampling_scheme::metropolis) o.metropolis_steps = 200;  // the others refuse it
    const auto a = run(lw, replicates, n, o);
    std::vector<double> counts(n, 0);
    for (auto i : a) {
      ASSERT_TRUE(i >= 0 && i < n);
      counts[i] += 1;
    }
    for (int i = 0; i < n; ++i) {
      const double mean = counts[i] / replicates, expected = n * w[i];
      const double se = std::sqrt(std::max(expected, 0.25) / replicates);
      EXPECT_NEAR(mean, expected, 5 * se) << ds::to_string(scheme) << " particle " << i;
    }
  }
}

// The rejection scheme's loop is bounded (64 tests, then one exact pass over the weights). Here mean w / max w is
// (1 + 255e-3) / 256 = 0.0049, so about 73% of the particles reach the fallback: the offspring counts must stay
// unbiased, within 5 standard errors over 2000 replicates as in OffspringCountsAreUnbiased (Var[O_i] <= N w_i for
// these sums of independent indicators). Seen failing with a fallback that keeps the last uniform proposal
// (particle 0's mean count 55.0 against 204).
TEST(Particles, BoundedRejectionKeepsOffspringCountsUnbiased) {
  const int n = 256, replicates = 2000;
  std::vector<float> lw(n * replicates);
  for (int r = 0; r < replicates; ++r)
    for (int i = 0; i < n; ++i) lw[r * n + i] = i == 0 ? 0.f : float(std::log(1e-3));
  double total = 0;
  std::vector<double> w(n);
  for (int i = 0; i < n; ++i) total += w[i] = std::exp(double(lw[i]));
  ds::resampling_options o;
  o.scheme = ds::resampling_scheme::rejection;
  o.ess_threshold = 2;
  o.seed = 7;
  const auto a = run(lw, replicates, n, o);
  std::vector<double> counts(n, 0);
  for (auto i : a) {
    ASSERT_TRUE(i >= 0 && i < n);
    counts[i] += 1;
  }
  for (int i : {0, 1, 128, 255}) {
    const double mean = counts[i] / replicates, expected = n * w[i] / total;
    EXPECT_NEAR(mean, expected, 5 * std::sqrt(std::max(expected, 0.25) / replicates)) << "particle " << i;
  }
}

// The Metropolis and rejection fallbacks' search through the tile offsets (kernels::first_above_tiled, used where a
// problem spans several tiles) finds the particle of the one-by-one scan (kernels::first_above) for every x in
// [0, T): tiles of 7 weights, some tiles and weights zero, x at every prefix boundary, one below it, and random x.
// Seen failing (outside the build) with the search taking a tile whose offset is at most x + 1 (a start one tile
// past the answer when x is a tile's last unit); a start before the right tile is only slower.
TEST(Particles, TiledFallbackSearchFindsTheScansParticle) {
  namespace k = ds::kernels;
  std::mt19937_64 gen(5);
  for (const std::int64_t n : {1, 6, 7, 8, 50, 700}) {
    const std::int64_t tile = 7, per = (n + tile - 1) / tile;
    std::vector<std::uint64_t> q(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      const bool zero_tile = (i / tile) % 3 == 1, zero = gen() % 4 == 0;
      q[i] = zero_tile || zero ? 0 : 1 + gen() % 1000;
    }
    if (n > 0 && q[0] == 0 && per == 1) q[0] = 5;
    std::vector<std::uint64_t> offsets(static_cast<std::size_t>(per + 1), 0);
    offsets[0] = 123456789;  // a problem's offsets start anywhere in the flat scan
    for (std::int64_t t = 0; t < per; ++t) {
      std::uint64_t sum = 0;
      for (std::int64_t i = t * tile; i < std::min(n, (t + 1) * tile); ++i) sum += q[i];
      offsets[t + 1] = offsets[t] + sum;
    }
    const std::uint64_t T = offsets[per] - offsets[0];
    if (T == 0) continue;
    std::vector<std::uint64_t> xs;
    std::uint64_t prefix = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      prefix += q[i];
      if (prefix < T) xs.push_back(prefix);
      if (prefix > 0) xs.push_back(prefix - 1);
    }
    for (int r = 0; r < 200; ++r) xs.push_back(gen() % T);
    for (const std::uint64_t x : xs)
      ASSERT_EQ(k::first_above_tiled(q.data(), n, x, offsets.data(), tile, per), k::first_above(q.data(), n, x))
          << "n = " << n << ", x = " << x << " of T = " << T;
  }
}

// Seen failing with a multinomial stream keyed by particle + OpenMP thread number.
TEST(Particles, SameAncestorsAcrossRunsThreadCountsAndIndexTypes) {
  const int b = 5, n = 3000;
  auto lw = random_log_weights(b * n, 7, -20.f, 3.f);
  lw[11] = nan_f;
  lw[n + 5] = neg_inf;
  const int threads = omp_get_max_threads();
  for (auto scheme : all_schemes) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 99;
    o.step = 3;
    omp_set_num_threads(1);
    const auto one = run(lw, b, n, o);
    omp_set_num_threads(2);
    const auto two = run(lw, b, n, o);
    const auto again = run(lw, b, n, o);
    omp_set_num_threads(threads);
    EXPECT_EQ(one, two) << ds::to_string(scheme);
    EXPECT_EQ(two, again) << ds::to_string(scheme);
    std::vector<std::int64_t> a64(b * n);
    ds::particle_outputs out;
    out.ancestors64 = a64.data();
    std::vector<char> ws(ds::resampling_workspace_bytes(b, n, scheme) + 16);
    void* aligned = ws.data() + (16 - reinterpret_cast<std::uintptr_t>(ws.data()) % 16) % 16;
    ds::resample(out, b, n, lw.data(), o, cpu(), aligned, ws.size() - 16);
    EXPECT_TRUE(std::equal(one.begin(), one.end(), a64.begin())) << ds::to_string(scheme);
    // A different step draws different ancestors (the stream is keyed by step).
    o.step = 4;
    EXPECT_NE(run(lw, b, n, o), one) << ds::to_string(scheme);
  }
}

// Seen failing with a gather that ignored the ancestors.
TEST(Particles, GatherByAncestor) {
  const int b = 2, n = 3, d = 2;
  std::vector<float> x(b * n * d);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  const std::vector<std::int32_t> a = {2, 2, 0, 1, 0, 1};
  std::vector<float> y(x.size());
  ds::gather_particles(y.data(), b, n, d, x.data(), a.data(), cpu());
  const std::vector<float> expected = {4, 5, 4, 5, 0, 1, 8, 9, 6, 7, 8, 9};
  EXPECT_EQ(y, expected);
  const std::vector<std::int64_t> a64(a.begin(), a.end());
  std::vector<float> y64(x.size());
  ds::gather_particles(y64.data(), b, n, d, x.data(), a64.data(), cpu());
  EXPECT_EQ(y64, expected);
}

// An ancestor outside [0, N) (the header: "indices in 0..N-1") was followed wherever it led: index N of problem 0
// gathered problem 1's first particle, -1 of problem 1 the last particle of problem 0, and a wild index read outside
// the states (a segmentation fault). The executors cannot refuse it before the launch (on the CUDA executor the
// indices are device memory), so such a row is written as NaN and nothing outside the problem is read. Seen failing
// before the fix: rows (6, 7) and (4, 5) of the neighbouring problems instead of NaN.
TEST(Particles, GatherWritesNanForAncestorsOutsideTheProblem) {
  const int b = 2, n = 3, d = 2;
  std::vector<float> x(b * n * d);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  const std::vector<std::int32_t> a = {3, 1, 0, -1, 2, 0};
  const std::vector<std::int64_t> a64(a.begin(), a.end());
  std::vector<float> y(x.size()), y64(x.size());
  ds::gather_particles(y.data(), b, n, d, x.data(), a.data(), cpu());
  ds::gather_particles(y64.data(), b, n, d, x.data(), a64.data(), cpu());
  for (const std::vector<float>* got : {&y, &y64}) {
    for (int row : {0, 3})
      for (int c = 0; c < d; ++c) EXPECT_TRUE(std::isnan((*got)[row * d + c])) << "row " << row << ": " << (*got)[row * d + c];
    const std::vector<float> valid = {2, 3, 0, 1, 10, 11, 6, 7};  // rows 1, 2, 4, 5
    const std::vector<float> rows = {(*got)[2], (*got)[3], (*got)[4], (*got)[5],
                                     (*got)[8], (*got)[9], (*got)[10], (*got)[11]};
    EXPECT_EQ(rows, valid);
  }
  // Far outside every buffer: the int64 extremes and the int32 ones.
  const std::vector<std::int64_t> wild = {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min(),
                                          std::int64_t(1) << 40, 0, 0, 0};
  ds::gather_particles(y64.data(), b, n, d, x.data(), wild.data(), cpu());
  for (int i = 0; i < 3 * d; ++i) EXPECT_TRUE(std::isnan(y64[i])) << i;
  const std::vector<std::int32_t> wild32 = {std::numeric_limits<std::int32_t>::max(),
                                            std::numeric_limits<std::int32_t>::min(), 0, 0, 0, 0};
  ds::gather_particles(y.data(), b, n, d, x.data(), wild32.data(), cpu());
  for (int i = 0; i < 2 * d; ++i) EXPECT_TRUE(std::isnan(y[i])) << i;
}

// B x N within limits::max_items (2^62 - 1) whose workspace needs more than 2^64 bytes: the size query summed its
// parts in size_t and returned what wrapped around (4000 bytes for B = 2^62 - 1, N = 1; 9.25e18 for multinomial and
// 2.7e16 for residual at B = 2^36, N = 2^24), which resample() then accepted as large enough. Seen failing before
// the fix: no exception, those sizes returned.
TEST(Particles, WorkspaceSizesBeyondSixtyFourBitsAreRefused) {
  const std::vector<std::pair<std::int64_t, std::int64_t>> sizes = {
      {(std::int64_t(1) << 62) - 1, 1}, {std::int64_t(1) << 36, std::int64_t(1) << 24}, {std::int64_t(1) << 59, 2}};
  for (const auto& [b, n] : sizes)
    for (const auto scheme : {ds::resampling_scheme::multinomial, ds::resampling_scheme::residual}) {
      try {
        const std::size_t bytes = ds::resampling_workspace_bytes(b, n, scheme);
        ADD_FAILURE() << b << " x " << n << ": no exception, " << bytes << " bytes";
      } catch (const ds::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("beyond a 64-bit byte count"), std::string::npos) << e.what();
      }
    }
  // The largest sizes that fit are still answered, each at least 16 bytes per particle.
  for (const auto& [b, n] : std::vector<std::pair<std::int64_t, std::int64_t>>{{std::int64_t(1) << 30, 1 << 24},
                                                                              {std::int64_t(1) << 50, 1}})
    EXPECT_GE(double(ds::resampling_workspace_bytes(b, n, ds::resampling_scheme::residual)), 16.0 * double(b) * n);
}

TEST(Particles, InvalidArgumentsAreRejected) {
  std::vector<float> lw(4, 0.f);
  std::vector<std::int32_t> a(4);
  std::vector<std::int64_t> a64(4);
  ds::particle_outputs out;
  out.ancestors = a.data();
  ds::resampling_options o;
  EXPECT_THROW(ds::resample(out, -1, 4, lw.data(), o, cpu()), ds::invalid_argument);
  EXPECT_THROW(ds::resample(out, 1, (std::int64_t(1) << 24) + 1, lw.data(), o, cpu()), ds::invalid_argument);
  EXPECT_THROW(ds::resample(out, 1, 0, lw.data(), o, cpu()), ds::invalid_argument);
  o.ess_threshold = -1;
  EXPECT_THROW(ds::resample(out, 1, 4, lw.data(), o, cpu()), ds::invalid_argument);
  o.ess_threshold = 0.5;
  o.step = std::uint64_t(1) << 30;
  EXPECT_THROW(ds::resample(out, 1, 4, lw.data(), o, cpu()), ds::invalid_argument);
  o.step = 0;
  o.scheme = ds::resampling_scheme::metropolis;
  o.metropolis_steps = 0;
  EXPECT_THROW(ds::resample(out, 1, 4, lw.data(), o, cpu()), ds::invalid_argument);
  o = {};
  out.ancestors64 = a64.data();
  EXPECT_THROW(ds::resample(out, 1, 4, lw.data(), o, cpu()), ds::invalid_argument);
  out.ancestors64 = nullptr;
  std::vector<unsigned char> ws(16);
  EXPECT_THROW(ds::resample(out, 1, 4, lw.data(), o, cpu(), ws.data(), ws.size()), ds::invalid_argument);
  EXPECT_THROW(ds::parse_resampling_scheme("best"), ds::invalid_argument);
  EXPECT_EQ(ds::parse_resampling_scheme("residual"), ds::resampling_scheme::residual);
  EXPECT_THROW(ds::gather_particles(lw.data(), 1, 4, 1, lw.data(), a.data(), cpu()), ds::invalid_argument);
}

// gather_particles() documents that states and out must not overlap; the check caught only out == states, so an out
// shifted by a row passed and the gather overwrote states it had still to read. Seen failing before the fix: no
// exception, the caller's row 1 (10, 11) destroyed, and out's row 2 = (30, 31) instead of the ancestor's (10, 11).
TEST(Particles, GatherRejectsOverlappingBuffers) {
  const std::int64_t n = 4, d = 2;
  const std::vector<float> before = {0, 1, 10, 11, 20, 21, 30, 31, -1, -1};
  const std::vector<std::int32_t> a = {3, 2, 1, 0};
  for (std::int64_t shift : {d, -d, 2 * d - 1}) {  // out one row after, one row before, 3 floats after states
    std::vector<float> buffer = before;
    float* states = buffer.data() + (shift < 0 ? -shift : 0);
    float* out = states + shift;
    EXPECT_THROW(ds::gather_particles(out, 1, n, d, states, a.data(), cpu()), ds::invalid_argument) << shift;
    EXPECT_EQ(buffer, before) << "shift " << shift;
  }
  // Adjacent buffers do not overlap.
  std::vector<float> two(2 * n * d, 0.f);
  EXPECT_NO_THROW(ds::gather_particles(two.data() + n * d, 1, n, d, two.data(), a.data(), cpu()));
}

// The gather reads ancestor j while it writes out's rows, so ancestors kept in out's memory were overwritten by rows
// written before they were read: out = (30, 31), (20, 21), then rows gathered by indices made of those floats' bits.
// Both index types, ancestors at out's start and in its middle; refused and out untouched.
TEST(Particles, GatherRejectsAncestorsInsideOut) {
  const std::int64_t n = 4, d = 2;
  const std::vector<float> states = {0, 1, 10, 11, 20, 21, 30, 31};
  for (std::int64_t offset : {0, 3}) {
    std::vector<float> out(n * d + 4, -1.f);
    auto* a32 = reinterpret_cast<std::int32_t*>(out.data() + offset);
    for (std::int32_t j = 0; j < n; ++j) a32[j] = std::int32_t(n - 1 - j);
    std::vector<float> before = out;
    try {
      ds::gather_particles(out.data(), 1, n, d, states.data(), a32, cpu());
      ADD_FAILURE() << "ancestors inside out accepted (offset " << offset << ")";
    } catch (const ds::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("must not overlap ancestors"), std::string::npos) << e.what();
    }
    EXPECT_EQ(0, std::memcmp(out.data(), before.data(), out.size() * sizeof(float))) << "offset " << offset;

    std::vector<std::int64_t> a64buf(n * d);
    auto* o64 = reinterpret_cast<float*>(a64buf.data());  // out in the int64 ancestors' memory
    for (std::int64_t j = 0; j < n; ++j) a64buf[j] = n - 1 - j;
    const auto before64 = a64buf;
    EXPECT_THROW(ds::gather_particles(o64 + offset, 1, n, d, states.data(), a64buf.data(), cpu()),
                 ds::invalid_argument);
    EXPECT_EQ(a64buf, before64) << "offset " << offset;
  }
  // Separate buffers gather the rows in the ancestors' order.
  std::vector<float> out(n * d);
  const std::vector<std::int32_t> a = {3, 2, 1, 0};
  ds::gather_particles(out.data(), 1, n, d, states.data(), a.data(), cpu());
  EXPECT_EQ(out, (std::vector<float>{30, 31, 20, 21, 10, 11, 0, 1}));
}

// resample() reads the log-weights after it has written outputs (the ancestor search of every scheme but metropolis
// and rejection reads them again), so an output in the log-weights' memory gave wrong ancestors: normalised weights
// written in place (normalised_weights == log_weights) changed the ancestors of multinomial, stratified, systematic
// and residual resampling without a word. Every output that overlaps log_weights is refused, before anything is
// written. Seen failing before the fix: no exception for any case, the in-place call's ancestors differing.
TEST(Particles, OutputsMustNotOverlapTheLogWeights) {
  const std::int64_t B = 2, N = 100;
  std::vector<float> lw(B * N);
  for (std::size_t i = 0; i < lw.size(); ++i) lw[i] = float(2.0 * std::sin(0.37 * double(i)));
  ds::resampling_options o;
  o.scheme = ds::resampling_scheme::systematic;
  o.ess_threshold = 2.0;  // always resample
  const char* places[] = {"in place", "starting inside", "ending inside"};
  for (int place = 0; place < 3; ++place) {
    for (int which = 0; which < 4; ++which) {
      // The output's size in floats, and where it starts, in floats from the start of the log-weights: at it, half a
      // problem into it, or ending half a problem into it (offsets stay 8-byte aligned).
      const std::int64_t size = which == 0 || which == 1 ? B * N
                                : which == 2             ? 2 * B * N
                                                         : B * std::int64_t(sizeof(ds::particle_report) / sizeof(float));
      const std::int64_t offset = place == 0 ? 0 : place == 1 ? N / 2 : N / 2 - size;
      std::vector<float> buffer(6 * B * N, 0.f);  // room for int64 ancestors on either side of the log-weights
      float* log_weights = buffer.data() + 2 * B * N;
      std::copy(lw.begin(), lw.end(), log_weights);
      void* p = log_weights + offset;
      ds::particle_outputs out;
      std::vector<std::int32_t> ancestors(B * N);
      out.ancestors = ancestors.data();
      const char* field = "normalised_weights";
      if (which == 0) out.normalised_weights = static_cast<float*>(p);
      if (which == 1) (out.ancestors = static_cast<std::int32_t*>(p)), field = "ancestors";
      if (which == 2) (out.ancestors = nullptr), (out.ancestors64 = static_cast<std::int64_t*>(p)), field = "ancestors64";
      if (which == 3) out.reports = static_cast<ds::particle_report*>(p), field = "reports";
      const std::vector<float> before = buffer;
      try {
        ds::resample(out, B, N, log_weights, o, cpu());
        ADD_FAILURE() << field << " " << places[place] << " the log-weights: accepted";
      } catch (const ds::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(std::string("outputs.") + field + ": must not overlap log_weights"),
                  std::string::npos)
            << e.what();
      }
      EXPECT_EQ(buffer, before) << field << " " << places[place];
    }
  }
  // Adjacent buffers do not overlap; the ancestors equal those of separate buffers.
  std::vector<float> two(2 * B * N);
  std::copy(lw.begin(), lw.end(), two.begin());
  std::vector<std::int32_t> a1(B * N), a2(B * N);
  std::vector<float> nw(B * N);
  ds::particle_outputs sep;
  sep.ancestors = a1.data();
  sep.normalised_weights = nw.data();
  ds::resample(sep, B, N, lw.data(), o, cpu());
  ds::particle_outputs adj;
  adj.ancestors = a2.data();
  adj.normalised_weights = two.data() + B * N;
  EXPECT_NO_THROW(ds::resample(adj, B, N, two.data(), o, cpu()));
  EXPECT_EQ(a1, a2);
  EXPECT_TRUE(std::equal(nw.begin(), nw.end(), two.begin() + B * N));
}

// Two outputs of resample() in the same memory, or an output in the caller's workspace, lost one of them: the
// normalised weights written over the ancestors (or the workspace's prefix sums over the ancestors) without a word.
// Each pair is refused before anything is written, the message naming both. Seen failing before the check: no
// exception, the buffer changed.
TEST(Particles, OutputsMustNotOverlapEachOtherOrTheWorkspace) {
  const std::int64_t B = 2, N = 100, count = B * N;
  std::vector<float> lw(count);
  for (std::size_t i = 0; i < lw.size(); ++i) lw[i] = float(std::cos(0.21 * double(i)));
  ds::resampling_options o;
  o.scheme = ds::resampling_scheme::systematic;
  o.ess_threshold = 2.0;  // always resample
  const std::size_t need = ds::resampling_workspace_bytes(B, N, o.scheme);
  std::vector<float> buffer(count * 2 + need / sizeof(float) + 64, 0.f);
  std::vector<float> nw(count);
  const std::vector<float> before = buffer;
  auto* shared = reinterpret_cast<std::int32_t*>(buffer.data() + 16);  // 64 bytes in: every alignment holds
  auto expect_refused = [&](ds::particle_outputs out, void* ws, std::size_t ws_bytes, const char* a, const char* b) {
    try {
      ds::resample(out, B, N, lw.data(), o, cpu(), ws, ws_bytes);
      ADD_FAILURE() << a << " and " << b << ": accepted";
    } catch (const ds::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(a) + ": must not overlap " + b), std::string::npos) << e.what();
    }
    EXPECT_EQ(buffer, before) << a << " and " << b;
  };
  ds::particle_outputs out;
  out.ancestors = shared;
  out.normalised_weights = reinterpret_cast<float*>(shared) + count / 2;  // from the ancestors' middle
  expect_refused(out, nullptr, 0, "outputs.ancestors", "outputs.normalised_weights");
  out.normalised_weights = nw.data();
  out.reports = reinterpret_cast<ds::particle_report*>(shared + count - 4);  // over the last 4 ancestors
  expect_refused(out, nullptr, 0, "outputs.reports", "outputs.ancestors");
  out.reports = nullptr;
  expect_refused(out, shared, need, "workspace", "outputs.ancestors");  // the workspace at the ancestors
}

// N = 5000 runs the tiled passes (two 4096-particle tiles), N = 4096, 1000 and 1 the one-kernel path of problems
// of one tile.
TEST(Particles, CudaAndCpuExecutorsPickTheSameAncestors) {
  DIFFSAMPLE_REQUIRE_GPU();
  for (const int n : {5000, 4096, 1000, 1}) {
    const int b = 6;
    auto lw = random_log_weights(b * n, 3, -15.f, 2.f);
    lw[n / 2] = nan_f;
    for (int i = 0; i < n; ++i) lw[4 * n + i] = neg_inf;  // a failed problem
    ds::testing::device_buffer<float> lw_d(lw);
    for (auto scheme : all_schemes) {
      ds::resampling_options o;
      o.scheme = scheme;
      o.ess_threshold = 2;
      o.seed = 5;
      ds::testing::device_buffer<std::int32_t> a_d(b * n);
      const auto ref = expect_cuda_matches_cpu(lw, lw_d, b, n, o, a_d);
      std::vector<float> x(b * n * 3);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 977);
      ds::testing::device_buffer<float> x_d(x), y_d(x.size());
      ds::gather_particles(y_d.ptr, b, n, 3, x_d.ptr, a_d.ptr, {ds::executor::cuda, nullptr});
      std::vector<float> y(x.size());
      ds::gather_particles(y.data(), b, n, 3, x.data(), ref.data(), cpu());
      EXPECT_EQ(y_d.download(), y);
    }
  }
}

// The integer helpers that make resampling exact, against long-double and __int128 references.
// Seen failing with a degree-12 series in fixed_exp, without the downward correction of residual_copies, and with
// fixed-point weights rounded up by one unit.
TEST(Particles, FixedPointHelpers) {
  using namespace diffsample::kernels;
  // fixed_exp: Taylor truncation < 1e-17 and a handful of roundings: within 4 ulp of exp on (-50, 0].
  for (int i = 0; i < 100000; ++i) {
    const double x = -50.0 * i / 100000;
    const double ref = double(std::exp(static_cast<long double>(x)));
    ASSERT_NEAR(fixed_exp(x), ref, 4 * std::numeric_limits<double>::epsilon() * ref) << x;
  }
  EXPECT_EQ(fixed_exp(0.0), 1.0);
  EXPECT_EQ(fixed_exp(-51.0), 0.0);
  EXPECT_EQ(fixed_exp(-INFINITY), 0.0);
  EXPECT_EQ(fixed_point_bits(1), 62);
  EXPECT_EQ(fixed_point_bits(2), 61);
  EXPECT_EQ(fixed_point_bits(3), 60);
  EXPECT_EQ(fixed_point_bits(std::int64_t(1) << 24), 38);
  EXPECT_EQ(fixed_weight(2.f, 2.f, 40), std::uint64_t(1) << 40);
  EXPECT_EQ(fixed_weight(nan_f, 2.f, 40), 0u);
  EXPECT_EQ(fixed_weight(neg_inf, 2.f, 40), 0u);
  // residual_copies = floor(N q / T) exactly, including where the double estimate is off.
  std::mt19937_64 gen(1);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t n = 1 + gen() % (std::uint64_t(1) << 24);
    const std::uint64_t total = 1 + gen() % (n << fixed_point_bits(std::int64_t(n)));
    const std::uint64_t q = gen() % (total + 1);
    const auto ref = static_cast<std::uint64_t>((static_cast<unsigned __int128>(n) * q) / total);
    ASSERT_EQ(residual_copies(n, q, total), ref) << n << " " << q << " " << total;
  }
  EXPECT_EQ(residual_copies(16777216, (std::uint64_t(1) << 62) - 1, std::uint64_t(1) << 62), 16777215u);
  const u128 big = mul_wide(~std::uint64_t(0), ~std::uint64_t(0));
  EXPECT_EQ(big.hi, ~std::uint64_t(0) - 1);
  EXPECT_EQ(big.lo, 1u);
  EXPECT_TRUE((u128{5, 1} < u128{0, 2}));
  EXPECT_EQ((u128{~std::uint64_t(0), 0} + u128{1, 0}).hi, 1u);
}

// A million particles in one problem: systematic offspring counts are exactly floor or ceil of N w_i, residual
// counts at least floor(N w_i) (deterministic properties, so no statistical tolerance; 1e-6 absorbs the fixed-point
// truncation, at most N 2^-k = 2^-22 of a particle). Seen failing when systematic drew one uniform per particle.
TEST(Particles, LargeProblemCountsAreExact) {
  const std::int64_t n = std::int64_t(1) << 20;
  const auto lw = random_log_weights(n, 11, -8.f, 0.f);
  std::vector<double> nw(n);
  long double total = 0;
  for (std::int64_t i = 0; i < n; ++i) total += std::exp(static_cast<long double>(lw[i]));
  for (std::int64_t i = 0; i < n; ++i) nw[i] = double(n * std::exp(static_cast<long double>(lw[i])) / total);
  for (auto scheme : {ds::resampling_scheme::systematic, ds::resampling_scheme::residual}) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    const auto a = run(lw, 1, n, o);
    std::vector<std::int64_t> counts(n, 0);
    for (auto i : a) ++counts[i];
    for (std::int64_t i = 0; i < n; ++i) {
      ASSERT_GE(counts[i], std::floor(nw[i] - 1e-6)) << ds::to_string(scheme) << " " << i;
      if (scheme == ds::resampling_scheme::systematic) {
        ASSERT_LE(counts[i], std::ceil(nw[i] + 1e-6)) << i;
      }
    }
  }
}

TEST(Particles, CudaAndCpuAgreeOnALargeProblemWithInt64AndWeights) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t n = std::int64_t(1) << 20;
  const auto lw = random_log_weights(n, 21, -30.f, 0.f);
  ds::testing::device_buffer<float> lw_d(lw), w_d(n);
  for (auto scheme : all_schemes) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 8;
    std::vector<std::int64_t> ref(n);
    std::vector<float> w(n);
    ds::particle_outputs out;
    out.ancestors64 = ref.data();
    out.normalised_weights = w.data();
    ds::resample(out, 1, n, lw.data(), o, cpu());
    ds::testing::device_buffer<std::int64_t> a_d(n);
    out.ancestors64 = a_d.ptr;
    out.normalised_weights = w_d.ptr;
    const std::size_t bytes = ds::resampling_workspace_bytes(1, n, scheme);
    ds::testing::device_buffer<unsigned char> ws(bytes);
    ds::resample(out, 1, n, lw_d.ptr, o, {ds::executor::cuda, nullptr}, ws.ptr, bytes);
    EXPECT_EQ(a_d.download(), ref) << ds::to_string(scheme);
    // Normalised weights use FP64 sums in different orders: agreement to float rounding.
    const auto wg = w_d.download();
    for (std::int64_t i = 0; i < n; i += 997) EXPECT_NEAR(wg[i], w[i], 1e-6f * w[i] + 1e-30f) << i;
  }
}

// The selection against a restatement of its rule with problem-wide prefix sums built here (the same fixed-point
// weights and Philox draws, one binary search per particle): identical ancestors for multinomial, stratified,
// systematic and residual over 2 problems of 2^17 + 123 particles (several tiles on both executors, partial last
// tiles). Stratified and systematic ancestors come from the slot ranges [J(P_i - q_i), J(P_i)) of the fill pass,
// residual's random part from the prefix N P_i - T C_i, so this pins them to the search.
// Seen failing with J(y) = floor(y N / T) (the draw of the boundary slot ignored) and with a tile's offset not added
// to its prefix (CPU fill pass).
TEST(Particles, SelectionEqualsAGlobalSearch) {
  using namespace diffsample::kernels;
  const std::int64_t b = 2, n = (std::int64_t(1) << 17) + 123;
  const auto lw = random_log_weights(b * n, 13, -8.f, 0.f);
  const int bits = fixed_point_bits(n);
  for (auto scheme : {ds::resampling_scheme::multinomial, ds::resampling_scheme::stratified,
                      ds::resampling_scheme::systematic, ds::resampling_scheme::residual}) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 31;
    o.step = 4;
    const auto got = run(lw, b, n, o);
    for (std::int64_t p = 0; p < b; ++p) {
      const float* l = lw.data() + p * n;
      float max = -INFINITY;
      for (std::int64_t i = 0; i < n; ++i) max = std::max(max, l[i]);
      std::vector<std::uint64_t> q(n), prefix(n), copies(n);
      std::vector<u128> rest(n);
      std::uint64_t T = 0;
      for (std::int64_t i = 0; i < n; ++i) prefix[i] = T += q[i] = fixed_weight(l[i], max, bits);
      std::uint64_t c_total = 0;
      u128 r_total;
      for (std::int64_t i = 0; i < n; ++i) {
        const std::uint64_t c = residual_copies(std::uint64_t(n), q[i], T);
        copies[i] = c_total += c;
        rest[i] = r_total = r_total + u128{mul_wide(std::uint64_t(n), q[i]).lo - c * T, 0};
      }
      for (std::int64_t j = 0; j < n; ++j) {
        const std::int64_t g = p * n + j;
        std::int64_t a = -1;
        if (scheme == ds::resampling_scheme::multinomial) {
          philox rng(o.seed, g, o.step);
          a = upper_bound(prefix.data(), n, uniform_below(rng, T));
        } else if (scheme == ds::resampling_scheme::systematic || scheme == ds::resampling_scheme::stratified) {
          philox rng(o.seed, scheme == ds::resampling_scheme::systematic ? p * n : g, o.step);
          const std::uint64_t v = uniform_below(rng, T), uj = std::uint64_t(j), N = std::uint64_t(n);
          a = upper_bound(prefix.data(), n, uj * (T / N) + (uj * (T % N) + v) / N);
        } else if (std::uint64_t(j) < c_total) {
          a = upper_bound(copies.data(), n, std::uint64_t(j));
        } else {
          philox rng(o.seed, g, o.step);
          const std::uint64_t s = uniform_below(rng, std::uint64_t(n) - c_total), off = uniform_below(rng, T);
          a = upper_bound(rest.data(), n, mul_wide(s, T) + u128{off, 0});
        }
        ASSERT_EQ(got[g], a) << ds::to_string(scheme) << " problem " << p << " particle " << j;
      }
    }
  }
}

// Residual resampling on the CUDA executor's tile passes with normalised weights and reports but no ancestors: the
// passes skip the residual copies and their scan (only the selection reads them), so the copies' offsets in the
// workspace are never written, and the fill pass read them all the same for each tile (its copies_base, unused
// without ancestors): compute-sanitizer's initcheck (scripts/gpu-check.sh runs it on this program) reports such a
// read of never-written device memory; the plain run cannot see it (the value is unused), so it checks the outputs
// against the CPU executor's: weights to float rounding, reports as expect_cuda_matches_cpu's. 3 problems of
// 5000 particles (two tiles each), every problem resampled and the adaptive threshold.
TEST(Particles, CudaResidualWeightsWithoutAncestorsReadOnlyWhatThePassesWrote) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t b = 3, n = 5000;
  const auto lw = random_log_weights(b * n, 12, -10.f, 1.f);
  ds::testing::device_buffer<float> lw_d(lw);
  for (double threshold : {2.0, 0.5}) {
    ds::resampling_options o;
    o.scheme = ds::resampling_scheme::residual;
    o.ess_threshold = threshold;
    o.seed = 31;
    std::vector<float> w(b * n);
    std::vector<ds::particle_report> reports(b);
    ds::particle_outputs out;
    out.normalised_weights = w.data();
    out.reports = reports.data();
    ds::resample(out, b, n, lw.data(), o, cpu());
    ds::testing::device_buffer<float> w_d(b * n);
    ds::testing::device_buffer<ds::particle_report> r_d(b);
    out.normalised_weights = w_d.ptr;
    out.reports = r_d.ptr;
    EXPECT_EQ(ds::resample(out, b, n, lw_d.ptr, o, {ds::executor::cuda, nullptr}), ds::executor::cuda);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto wg = w_d.download();
    std::size_t far = 0;
    for (std::size_t i = 0; i < w.size(); ++i) far += std::abs(wg[i] - w[i]) > 1e-6f * w[i] + 1e-30f;
    EXPECT_EQ(far, 0u) << "threshold " << threshold;
    const auto r = r_d.download();
    for (std::int64_t p = 0; p < b; ++p) {
      EXPECT_EQ(r[p].resampled, reports[p].resampled) << p;
      EXPECT_NEAR(r[p].ess, reports[p].ess, 1e-9 * reports[p].ess) << p;
      EXPECT_NEAR(r[p].log_sum_exp, reports[p].log_sum_exp, 1e-9) << p;
    }
  }
}

// The GPU's tile passes (4096-particle tiles, offsets from CUB's device-wide scan of the tile totals, the fill
// pass's slot ranges) against the CPU executor (2^16-particle tiles): 4 problems of 2^17 + 123 particles (a partial
// last tile; problem 1 has NaNs, problem 2 fails, problem 3 has one weighted particle, whose tile fills every slot),
// every scheme, ancestors and decisions identical, reports equal to FP64 rounding, with every problem resampled and
// with the adaptive threshold; then one problem of 2^24 particles (4096 tiles).
TEST(Particles, CudaTiledPassMatchesCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t b = 4, n = (std::int64_t(1) << 17) + 123;
  auto lw = random_log_weights(b * n, 9, -20.f, 0.f);
  for (std::int64_t i = 0; i < n; i += 1000) lw[n + i] = nan_f;
  for (std::int64_t i = 0; i < n; ++i) lw[2 * n + i] = neg_inf;
  for (std::int64_t i = 0; i < n; ++i) lw[3 * n + i] = i == 70000 ? 0.f : neg_inf;  // one tile fills every slot
  ds::testing::device_buffer<float> lw_d(lw);
  for (auto scheme : all_schemes) {
    for (double threshold : {2.0, 0.5}) {
      ds::resampling_options o;
      o.scheme = scheme;
      o.ess_threshold = threshold;
      o.seed = 23;
      ds::testing::device_buffer<std::int32_t> a_d(b * n);
      expect_cuda_matches_cpu(lw, lw_d, b, n, o, a_d);
    }
  }
  if (std::getenv("DIFFSAMPLE_SANITIZER_RUN") != nullptr) return;  // minutes under compute-sanitizer; ctest runs it
  const std::int64_t big = std::int64_t(1) << 24;
  const auto lw_big = random_log_weights(big, 10, -5.f, 0.f);
  ds::testing::device_buffer<float> big_d(lw_big);
  for (auto scheme : {ds::resampling_scheme::systematic, ds::resampling_scheme::multinomial,
                      ds::resampling_scheme::residual}) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 29;
    ds::testing::device_buffer<std::int32_t> a_d(big);
    expect_cuda_matches_cpu(lw_big, big_d, 1, big, o, a_d);
  }
}

// Problems longer than the CPU executor's chunk (2^16 particles) are scanned chunk by chunk and stitched with
// integer offsets: ancestors must not depend on the thread count, and offspring must match the weights exactly
// (systematic: floor or ceil of N w_i) across chunk boundaries.
// Seen failing when the residual weights' chunk offsets were not applied.
TEST(Particles, MultiChunkProblemsAreStitchedExactly) {
  const std::int64_t b = 2, n = (std::int64_t(1) << 17) + 123;
  const auto lw = random_log_weights(b * n, 5, -6.f, 0.f);
  const int threads = omp_get_max_threads();
  for (auto scheme : {ds::resampling_scheme::multinomial, ds::resampling_scheme::systematic,
                      ds::resampling_scheme::residual}) {
    ds::resampling_options o;
    o.scheme = scheme;
    o.ess_threshold = 2;
    o.seed = 17;
    std::vector<ds::particle_report> r;
    omp_set_num_threads(1);
    const auto one = run(lw, b, n, o, &r);
    omp_set_num_threads(2);
    const auto two = run(lw, b, n, o);
    omp_set_num_threads(threads);
    EXPECT_EQ(one, two) << ds::to_string(scheme);
    for (std::int64_t p = 0; p < b; ++p) {
      const fp64_stats ref = reference_stats(lw.data() + p * n, int(n));
      // FP64 sums of 1.3e5 terms: relative error below 1e5 * 2^-53 ~ 1e-11.
      EXPECT_NEAR(r[p].ess, ref.ess, 1e-10 * ref.ess);
      EXPECT_NEAR(r[p].log_sum_exp, ref.lse, 1e-10);
      long double total = 0;
      for (std::int64_t i = 0; i < n; ++i) total += std::exp(static_cast<long double>(lw[p * n + i]));
      std::vector<std::int64_t> counts(n, 0);
      for (std::int64_t j = 0; j < n; ++j) ++counts[one[p * n + j]];
      // Offspring landing in each chunk: a sum of counts with mean N W_c and variance at most the multinomial
      // N W_c (1 - W_c) (the residual and systematic counts vary less), so within 6 standard errors.
      for (std::int64_t lo = 0; lo < n; lo += std::int64_t(1) << 16) {
        const std::int64_t hi = std::min(n, lo + (std::int64_t(1) << 16));
        long double mass = 0;
        std::int64_t landed = 0;
        for (std::int64_t i = lo; i < hi; ++i) {
          mass += std::exp(static_cast<long double>(lw[p * n + i]));
          landed += counts[i];
        }
        const double wc = double(mass / total);
        EXPECT_NEAR(double(landed), n * wc, 6 * std::sqrt(n * wc * (1 - wc))) << ds::to_string(scheme) << " " << lo;
      }
      if (scheme == ds::resampling_scheme::multinomial) continue;
      for (std::int64_t i = 0; i < n; ++i) {
        const double nw = double(n * std::exp(static_cast<long double>(lw[p * n + i])) / total);
        ASSERT_GE(counts[i], std::floor(nw - 1e-6)) << ds::to_string(scheme) << " " << i;
        if (scheme == ds::resampling_scheme::systematic) {
          ASSERT_LE(counts[i], std::ceil(nw + 1e-6)) << i;
        }
      }
    }
  }
}

// The ancestors of every scheme, pinned: FNV-1a hashes of the ancestors drawn by the search over stored prefix sums
// that selected them before the tile passes (recorded from that implementation), over problems with NaN, -inf, a
// failed problem, a single weighted particle and problems of several tiles. Any change of an ancestor fails here.
TEST(Particles, AncestorsArePinned) {
  const auto fnv = [](const std::vector<std::int32_t>& a) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::int32_t v : a) {
      for (int k = 0; k < 4; ++k) {
        h ^= (std::uint32_t(v) >> (8 * k)) & 0xffu;
        h *= 1099511628211ull;
      }
    }
    return h;
  };
  struct config {
    std::int64_t b, n;
  };
  const config configs[] = {{4, 1000}, {1, 5}, {2, (std::int64_t(1) << 17) + 123}, {3, 4097}};
  std::vector<std::uint64_t> got;
  for (const config& c : configs) {
    auto lw = random_log_weights(c.b * c.n, unsigned(c.n), -12.f, 2.f);
    if (c.b == 4) {
      lw[17] = nan_f;
      lw[c.n + 3] = neg_inf;
      for (std::int64_t i = 0; i < c.n; ++i) lw[2 * c.n + i] = neg_inf;     // failed problem
      for (std::int64_t i = 0; i < c.n; ++i) lw[3 * c.n + i] = i == 500 ? 0.f : neg_inf;  // one weighted particle
    }
    for (auto scheme : all_schemes) {
      ds::resampling_options o;
      o.scheme = scheme;
      o.ess_threshold = 2;
      o.seed = 41;
      o.step = 2;
      if (scheme == ds::resampling_scheme::metropolis) o.metropolis_steps = 8;  // the others refuse it
      got.push_back(fnv(run(lw, c.b, c.n, o)));
    }
  }
  // Six per configuration, in the order of all_schemes.
  const std::vector<std::uint64_t> pinned = {
      0x4e57ed31e997f841ull, 0x9a2a51c0fb53e9a8ull, 0x9674bccfee45872aull,
      0x20963f9dce6ca089ull, 0xa355d8e113ee250aull, 0x27d074aae4a3be7full,
      0x46a8e5b269567200ull, 0x67a376ba0ad2a101ull, 0x67a376ba0ad2a101ull,
      0x67a376ba0ad2a101ull, 0x0476d5d89754b5c0ull, 0x16a596f36130a3e0ull,
      0xfa05e5bb638d66a4ull, 0xf32b48dad9b0d34dull, 0x6f3f0bd4520ab0fdull,
      0xb65e91b98549b7acull, 0x301eda5344dc437cull, 0x7e8abdba601f4637ull,
      0x76ebe3e314931e89ull, 0x6946be89374246b0ull, 0x0cd5be4ba3c3bd69ull,
      0x9375cbeeb0842b46ull, 0x2d75fa043b1584acull, 0xde133726f571a169ull};
  EXPECT_EQ(got, pinned);
}
