// Langevin family against exact answers: ULA's stationary variance on a Gaussian, MALA's invariance of the
// mixture, tamed ULA's stability, one step of each method against its formula in FP64 with the documented stream
// (MALA's accept/reject against the Metropolis-Hastings ratio), MALA's exactness at a noisy channel, and independence
// from batch split, step split and executor.
// Seen failing against wrong kernels: MALA without the proposal-density correction (MALA variance and mixture
// tests), ULA noise sqrt(gamma) instead of sqrt(2 gamma) (ULA and MALA variance tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "reference/documented_stream.hpp"
#include "reference/helpers.hpp"

using namespace diffsample;
namespace dt = diffsample::testing;

namespace {

/// Pooled variance of every coordinate of an n x d array around the known mean m.
double pooled_variance(const std::vector<float>& x, double m) {
  double s = 0;
  for (float v : x) s += (v - m) * (v - m);
  return s / x.size();
}

}  // namespace

class LangevinGaussian : public ::testing::TestWithParam<int> {};  // parameter: dimension (register / workspace)

TEST_P(LangevinGaussian, UlaStationaryVarianceIsExact) {
  // Target N(m, tau^2 I). ULA's chain is the AR(1) x <- (1 - gamma/tau^2) x + sqrt(2 gamma) xi around m, whose
  // stationary variance is tau^2 / (1 - gamma / (2 tau^2)) (formulas in the README): 1.0526 here, 5% above the
  // target. Chains start exactly at the target law; 300 steps shrink the initial error by 0.9^300 ~ 2e-14.
  // n d = 2^16 d independent coordinates: the variance estimate has standard error sqrt(2/(n d)) sigma^2
  // (~0.003 for d = 2); 5 standard errors separate the exact value from both 1.0 and any wrong drift or noise.
  const int d = GetParam();
  const double m = 1.5, tau2 = 1.0, gamma = 0.1;
  const gaussian_mixture target(d, {1.0}, std::vector<double>(d, m), {tau2});
  const std::int64_t n = 1 << 16;
  std::vector<float> x(n * d);
  target.sample(x.data(), n, {}, 1, nullptr, 0, {executor::cpu});
  langevin_options o;
  o.method = langevin_method::ula;
  o.step_size = gamma;
  o.steps = 300;
  o.seed = 2;
  const auto report = langevin(target, x.data(), {}, n, o, {executor::cpu});
  EXPECT_EQ(report.ran, executor::cpu);
  const double expected = tau2 / (1 - gamma / (2 * tau2));
  const double se = expected * std::sqrt(2.0 / (double(n) * d));
  EXPECT_NEAR(pooled_variance(x, m), expected, 5 * se);
  std::vector<double> xd(x.begin(), x.end());
  EXPECT_NEAR(dt::mean(xd), m, 5 * std::sqrt(expected / (double(n) * d)));
}

TEST_P(LangevinGaussian, MalaStationaryVarianceIsTheTarget) {
  // Same setting, MALA: the Metropolis correction removes ULA's 5% bias, so the variance is tau^2 within
  // 5 standard errors (and ULA's biased value lies ~17 standard errors away for d = 2).
  const int d = GetParam();
  const double m = -0.5, tau2 = 1.0, gamma = 0.1;
  const gaussian_mixture target(d, {1.0}, std::vector<double>(d, m), {tau2});
  const std::int64_t n = 1 << 16;
  std::vector<float> x(n * d);
  target.sample(x.data(), n, {}, 3, nullptr, 0, {executor::cpu});
  langevin_options o;
  o.method = langevin_method::mala;
  o.step_size = gamma;
  o.steps = 200;
  o.seed = 4;
  std::vector<std::int64_t> accepted(n);
  langevin(target, x.data(), {nullptr, accepted.data()}, n, o, {executor::cpu});
  EXPECT_NEAR(pooled_variance(x, m), tau2, 5 * tau2 * std::sqrt(2.0 / (double(n) * d)));
  double rate = 0;
  for (auto a : accepted) {
    ASSERT_GE(a, 0);
    ASSERT_LE(a, o.steps);
    rate += double(a) / o.steps;
  }
  rate /= n;
  EXPECT_GT(rate, 0.5);  // gamma = 0.1 on a unit Gaussian accepts most proposals
  EXPECT_LT(rate, 1.0);  // but not all: the accept/reject step is live
}

INSTANTIATE_TEST_SUITE_P(Dims, LangevinGaussian, ::testing::Values(2, 3, 10));

TEST(Langevin, MalaKeepsExactMixtureSamplesAtTheMixture) {
  // Start from exact samples of a 2-D 25-component mixture whose modes overlap enough for MALA to move between
  // them; after 100 steps the chains must still be distributed as the mixture. Yardsticks:
  //  - per-coordinate mean and variance within 5 standard errors of the exact ones;
  //  - sliced W1 to fresh exact samples within 1.5x the floor (two independent exact sets of the same size).
  // With gamma = 0.15 against component variance 0.3, plain ULA inflates each component's variance by ~33%,
  // which both checks catch.
  const auto mix = grid_mixture(2, 5, 1.5, 0.3, {1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 1, 3, 1, 3});
  const std::int64_t n = 1 << 15;
  std::vector<float> x(n * 2), fresh(n * 2), fresh2(n * 2);
  mix.sample(x.data(), n, {}, 10, nullptr, 0, {executor::cpu});
  mix.sample(fresh.data(), n, {}, 11, nullptr, 0, {executor::cpu});
  mix.sample(fresh2.data(), n, {}, 12, nullptr, 0, {executor::cpu});
  langevin_options o;
  o.method = langevin_method::mala;
  o.step_size = 0.15;
  o.steps = 100;
  o.seed = 13;
  langevin(mix, x.data(), {}, n, o, {executor::cpu});
  for (int j = 0; j < 2; ++j) {
    double mean = 0, second = 0;
    for (std::int64_t k = 0; k < mix.components(); ++k) {
      const double mu = mix.means()[k * 2 + j], w = mix.weights()[k];
      mean += w * mu;
      second += w * (mu * mu + mix.variances()[k]);
    }
    const double var = second - mean * mean;
    const auto c = dt::column(x, 2, j);
    EXPECT_NEAR(dt::mean(c), mean, 5 * std::sqrt(var / n)) << "coordinate " << j;
    EXPECT_NEAR(dt::variance(c), var, 5 * std::sqrt(3.0 / n) * var) << "coordinate " << j;
  }
  const double floor = sliced_wasserstein(n, n, 2, fresh.data(), fresh2.data(), 64, 99);
  const double sw = sliced_wasserstein(n, n, 2, x.data(), fresh.data(), 64, 99);
  EXPECT_LT(sw, 1.5 * floor) << "MALA SW " << sw << " vs exact-vs-exact floor " << floor;
}

TEST(Langevin, TamedUlaStaysFiniteWhereUlaExplodes) {
  // A narrow Gaussian N(0, tau^2 I), tau^2 = 1e-4, d = 2, seen from x = (1e3, 1e3): the score is -x / tau^2.
  // ULA with gamma = 0.01 multiplies x by 1 - gamma / tau^2 = -99 every step and overflows.
  // Tamed ULA is radial: x <- x (1 - c / (1 + c r)) + sqrt(2 gamma) xi with c = gamma / tau^2 = 100, r = |x|, so
  // the norm after the drift is f(r) = r |1 - c / (1 + c r)|:
  //  - for r >= 1.8 the drift shortens x by c r / (1 + c r) >= 0.9945 and the noise lengthens it by at most
  //    sqrt(2 gamma) |xi| = 0.1414 |xi| (mean 1.2533, variance 2 - pi/2 = 0.43): from r = 1414 the norm after k
  //    steps is at most 1414 - 0.9945 k + 0.1414 sum |xi|, which at k = 1900 is -139 with standard deviation 4,
  //    so every chain is below 1.8 before step 1900 of 2000;
  //  - on [0, 1.8] f is at most 0.81 (the overshoot maximum at c r = 9: f = 9 * 90 / 10 / c), so a chain
  //    inside 1.8 stays inside: 0.81 + sqrt(2 gamma) |xi| <= 1.8 unless |xi| > 7, which has probability
  //    exp(-49 / 2) ~ 2e-11 per step (|xi|^2 is chi-square with 2 degrees of freedom), < 1e-5 over all steps.
  // So every final state has |x| <= 0.81 + sqrt(2 gamma) max_i |xi_i| over the 256 chains' last draws, and
  // P(max |xi| > 6) <= 256 exp(-18) < 4e-6: the bound is 0.81 + 0.1414 * 6 = 1.66.
  const gaussian_mixture narrow(2, {1.0}, {0.0, 0.0}, {1e-4});
  const std::int64_t n = 256;
  langevin_options o;
  o.step_size = 0.01;
  o.steps = 2000;
  std::vector<float> tamed(n * 2, 1e3f), plain(n * 2, 1e3f);
  o.method = langevin_method::tamed_ula;
  langevin(narrow, tamed.data(), {}, n, o, {executor::cpu});
  o.method = langevin_method::ula;
  langevin(narrow, plain.data(), {}, n, o, {executor::cpu});
  const double bound = 0.81 + std::sqrt(2 * o.step_size) * 6;
  for (std::int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(tamed[2 * i]) && std::isfinite(tamed[2 * i + 1])) << "chain " << i;
    EXPECT_LE(std::hypot(tamed[2 * i], tamed[2 * i + 1]), bound) << "chain " << i;
  }
  bool exploded = false;
  for (float v : plain) exploded |= !std::isfinite(v) || std::abs(v) > 1e6f;
  EXPECT_TRUE(exploded) << "plain ULA should diverge here, else this test checks nothing";
}

// The random numbers a step uses. From a point where the score is exactly zero (the mean of a single Gaussian at
// the channel a = 1), one ULA or tamed-ULA step is x + sqrt(2 gamma) z and a MALA step proposes the same point, with
// z the first d normals of the documented stream (seed, chain, step) (tests/reference/documented_stream.hpp).
// Chains and steps start at different offsets so that a stream keyed (seed, step, chain) or by the call-local
// chain index cannot pass. Host normals agree with the generator to 1e-5 (test_rng), so the tolerance is 1e-5 on
// |z| <~ 5 scaled by sqrt(2 gamma) < 1, plus float rounding of x.
TEST(Langevin, OneStepFromZeroScoreAddsTheDocumentedNoise) {
  for (int d : {2, 3, 10}) {
    std::vector<double> mean(d);
    for (int j = 0; j < d; ++j) mean[j] = 0.5 * j - 1.0;
    const gaussian_mixture target(d, {1.0}, mean, {0.7});
    const std::int64_t n = 6;
    for (auto method : {langevin_method::ula, langevin_method::tamed_ula, langevin_method::mala}) {
      langevin_options o;
      o.method = method;
      o.step_size = 0.02;
      o.steps = 1;
      o.seed = 2024;
      o.first_chain = 11;
      o.first_step = 5;
      std::vector<float> x(n * d);
      for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) x[i * d + j] = float(mean[j]);
      const auto start = x;
      std::vector<std::int64_t> accepted(n, -1);
      langevin(target, x.data(), {nullptr, accepted.data()}, n, o, {executor::cpu});
      const float noise = std::sqrt(2.f * float(o.step_size));
      int moved = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        const auto z = dt::documented_normals(o.seed, o.first_chain + i, o.first_step, d);
        // MALA may reject the proposal (then x stays put and the count is 0); ULA variants always move.
        const bool move = method != langevin_method::mala || accepted[i] == 1;
        if (method != langevin_method::mala) {
          EXPECT_EQ(accepted[i], 1);
        }
        moved += move;
        for (int j = 0; j < d; ++j) {
          const float want = move ? start[i * d + j] + noise * z[j] : start[i * d + j];
          EXPECT_NEAR(x[i * d + j], want, 1e-5 * (1 + std::abs(want)))
              << to_string(method) << " d " << d << " chain " << i << " coordinate " << j;
        }
      }
      EXPECT_GT(moved, 0) << to_string(method) << ": no chain moved, the draw was not checked";
    }
  }
}

class LangevinSplit : public ::testing::TestWithParam<int> {};

TEST_P(LangevinSplit, BatchAndStepSplitsGiveIdenticalSamples) {
  // The random stream is keyed by (seed, chain, step): two batches (first_chain) or two consecutive calls
  // (first_step) reproduce one call bit for bit on the same executor.
  const int d = GetParam();
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  const std::int64_t n = 300;
  std::vector<float> init(n * d);
  mix.sample(init.data(), n, {0.9, 0.5}, 1, nullptr, 0, {executor::cpu});
  for (auto method : {langevin_method::ula, langevin_method::mala, langevin_method::tamed_ula}) {
    langevin_options o;
    o.method = method;
    o.step_size = 0.05;
    o.steps = 40;
    o.seed = 77;
    auto whole = init;
    langevin(mix, whole.data(), {}, n, o, {executor::cpu});
    auto parts = init;
    langevin(mix, parts.data(), {}, 100, o, {executor::cpu});
    auto o2 = o;
    o2.first_chain = 100;
    langevin(mix, parts.data() + 100 * d, {}, n - 100, o2, {executor::cpu});
    EXPECT_EQ(whole, parts) << to_string(method) << ": batch split";
    auto steps = init;
    auto o3 = o;
    o3.steps = 15;
    langevin(mix, steps.data(), {}, n, o3, {executor::cpu});
    o3.first_step = 15;
    o3.steps = 25;
    langevin(mix, steps.data(), {}, n, o3, {executor::cpu});
    EXPECT_EQ(whole, steps) << to_string(method) << ": step split";
    EXPECT_NE(whole, init) << to_string(method) << ": chains must move";
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, LangevinSplit, ::testing::Values(2, 5));

TEST(Langevin, TrajectoryRecordsEveryKthState) {
  const auto mix = grid_mixture(2, 2, 2.0, 0.5);
  const std::int64_t n = 50;
  std::vector<float> x(n * 2), y;
  mix.sample(x.data(), n, {}, 1, nullptr, 0, {executor::cpu});
  y = x;
  langevin_options o;
  o.method = langevin_method::mala;
  o.steps = 10;
  o.record_every = 3;  // records after steps 3, 6, 9
  std::vector<float> traj(3 * n * 2);
  langevin(mix, x.data(), {traj.data(), nullptr}, n, o, {executor::cpu});
  // The record after step 9 equals a 9-step run from the same start.
  o.steps = 9;
  o.record_every = 0;
  langevin(mix, y.data(), {}, n, o, {executor::cpu});
  EXPECT_EQ(std::vector<float>(traj.begin() + 2 * n * 2, traj.end()), y);
}

// record_every without a trajectory buffer recorded nothing and said nothing; it is refused before anything runs (x
// untouched), naming the buffer and the setting, as the C API refuses it. n = 0 has nothing to record.
TEST(Langevin, RecordEveryWithoutATrajectoryIsRefused) {
  const auto mix = grid_mixture(2, 2, 2.0, 0.5);
  const std::int64_t n = 8;
  std::vector<float> x(n * 2, 0.25f);
  const std::vector<float> before = x;
  langevin_options o;
  o.steps = 4;
  o.record_every = 2;
  try {
    langevin(mix, x.data(), {}, n, o, {executor::cpu});
    ADD_FAILURE() << "record_every = 2 without a trajectory ran";
  } catch (const invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("outputs.trajectory: null, but options.record_every is 2"), std::string::npos) << what;
  }
  EXPECT_EQ(x, before);
  EXPECT_NO_THROW(langevin(mix, x.data(), {}, 0, o, {executor::cpu}));
  o.record_every = 0;
  EXPECT_NO_THROW(langevin(mix, x.data(), {}, n, o, {executor::cpu}));
}

// The CUDA register path reads the mixture from a copy in 48 KiB of shared memory (kernels/chain_launch.cuh); a
// mixture whose copy is larger (K (d + 4) floats, isotropic) runs on the workspace path there, so the workspace size
// includes the chains' state, while the CPU executor keeps the register path. Seen failing with the register path
// chosen by d alone (the large mixture's size then lacked the state).
TEST(Langevin, WorkspaceCoversTheCudaPathOfALargeMixture) {
  const std::int64_t d = 2, n = 64;
  auto mixture = [&](std::int64_t K) {
    std::vector<double> means(K * d);
    for (std::int64_t i = 0; i < K * d; ++i) means[i] = double(i % 97) / 10;
    return gaussian_mixture(d, std::vector<double>(K, 1.0), means, std::vector<double>(K, 0.5));
  };
  langevin_options o;
  o.steps = 2;
  const std::size_t state = 4 * n * d * sizeof(float);
  // K = 16: 96 floats staged; the table is 16 x (4 + d) floats (constants and a mu), no state.
  EXPECT_LT(langevin_workspace_bytes(mixture(16), n, o), state);
  // K = 4096: 24,576 floats (96 KiB) staged, over 48 KiB: the table (4096 x (4 + d) floats) and the state.
  const auto large = mixture(4096);
  EXPECT_GE(langevin_workspace_bytes(large, n, o), 4096 * (4 + d) * sizeof(float) + state);
  std::vector<float> x(n * d, 0.5f);
  EXPECT_TRUE(langevin(large, x.data(), {}, n, o, {executor::cpu}).register_path);
}

TEST(LangevinGpu, CudaMatchesCpuAndBatchSplit) {
  DIFFSAMPLE_REQUIRE_GPU();
  for (int d : {2, 5}) {
    const auto mix = grid_mixture(d, 5, 2.0, 0.5);
    const std::int64_t n = 1 << 12;
    std::vector<float> init(n * d);
    mix.sample(init.data(), n, {}, 1, nullptr, 0, {executor::cpu});
    langevin_options o;
    o.method = langevin_method::ula;  // no accept/reject: last-bit differences cannot flip a decision
    o.step_size = 0.01;
    o.steps = 20;
    auto cpu = init;
    langevin(mix, cpu.data(), {}, n, o, {executor::cpu});
    dt::device_buffer<float> gx(init);
    EXPECT_EQ(langevin(mix, gx.ptr, {}, n, o).ran, executor::cuda);
    const auto gpu = gx.download();
    // Normals differ in the last bits (__sincosf) and scores by float rounding: 20 steps of contraction keep
    // differences at ~1e-5 of the state.
    for (std::int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(gpu[i], cpu[i], 1e-3 * (1 + std::abs(cpu[i]))) << i;
    dt::device_buffer<float> gparts(init);
    langevin(mix, gparts.ptr, {}, 1000, o);
    auto o2 = o;
    o2.first_chain = 1000;
    langevin(mix, gparts.ptr + 1000 * d, {}, n - 1000, o2);
    EXPECT_EQ(gparts.download(), gpu);
  }
}

// Every dimension of the register list (1, 2, 4, 8, 10, 16, 32) and one workspace dimension (5), each method, with
// trajectory and acceptance outputs, on both executors from the same start. ULA and tamed ULA are continuous in the
// noise, so states agree to ~1e-5 (last-bit normals, FP32 scores) and 1e-3 relative is asserted; their acceptance
// output is the step count. MALA's accept/reject can flip where a last-bit difference meets the threshold: at most
// 1% of chains may end more than 1e-2 apart, and the total acceptance counts must agree within 1% (a flipped
// decision changes a chain's count by at most the number of steps after it).
TEST(LangevinGpu, EveryRegisterDimensionEveryMethodAndTheOutputs) {
  DIFFSAMPLE_REQUIRE_GPU();
  for (int d : {1, 2, 4, 5, 8, 10, 16, 32}) {
    const auto mix = grid_mixture(d, 3, 2.0, 0.5);
    const std::int64_t n = 2048, steps = 12, every = 4, records = steps / every;
    std::vector<float> init(n * d);
    mix.sample(init.data(), n, {}, 2, nullptr, 0, {executor::cpu});
    for (langevin_method m : {langevin_method::ula, langevin_method::mala, langevin_method::tamed_ula}) {
      langevin_options o;
      o.method = m;
      o.step_size = 0.01;
      o.steps = steps;
      o.record_every = every;
      auto cpu = init;
      std::vector<float> cpu_traj(records * n * d);
      std::vector<std::int64_t> cpu_acc(n);
      langevin(mix, cpu.data(), {cpu_traj.data(), cpu_acc.data()}, n, o, {executor::cpu});
      dt::device_buffer<float> gx(init), gtraj(records * n * d);
      dt::device_buffer<std::int64_t> gacc(n);
      const auto report = langevin(mix, gx.ptr, {gtraj.ptr, gacc.ptr}, n, o);
      EXPECT_EQ(report.ran, executor::cuda);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto gpu = gx.download(), traj = gtraj.download();
      const auto acc = gacc.download();
      const std::string what = "d = " + std::to_string(d) + ", method " + std::to_string(int(m));
      if (m != langevin_method::mala) {
        for (std::int64_t i = 0; i < n * d; ++i)
          ASSERT_NEAR(gpu[i], cpu[i], 1e-3 * (1 + std::abs(cpu[i]))) << what << ", " << i;
        for (std::int64_t i = 0; i < records * n * d; ++i)
          ASSERT_NEAR(traj[i], cpu_traj[i], 1e-3 * (1 + std::abs(cpu_traj[i]))) << what << ", record " << i;
        for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], steps) << what;
      } else {
        std::int64_t far = 0, total_cpu = 0, total_gpu = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          double diff = 0;
          for (int j = 0; j < d; ++j) diff = std::max(diff, double(std::abs(gpu[i * d + j] - cpu[i * d + j])));
          far += diff > 1e-2;
          total_cpu += cpu_acc[i];
          total_gpu += acc[i];
        }
        EXPECT_LE(far, n / 100) << what;
        EXPECT_NEAR(double(total_gpu), double(total_cpu), 0.01 * double(total_cpu) + 1) << what;
      }
    }
  }
}

// --- One step against FP64 formulas with the documented stream ----------------------------------------------------
//
// The target below is a diagonal two-component mixture seen at the channel (a, s) = (0.8, 0.6) (options.target), so
// that log p_t is not a quadratic and every constant of the channel (c_kj = a^2 v_kj + s^2, the means a mu_kj) enters.
// The FP64 reference is written from the formulas (README "Gaussian mixtures" and "Langevin samplers"), not from the
// kernels.

namespace {

struct channel_mixture64 {
  int d;
  std::vector<double> w, mu, v;  // K, K x d, K x d (diagonal)
  double a, s;
  int components() const { return static_cast<int>(w.size()); }
  /// log p_t(x) and its gradient: l_k = log w_k - 1/2 sum_j (x_j - a mu_kj)^2 / c_kj - 1/2 sum_j log(2 pi c_kj),
  /// log p = logsumexp_k l_k, grad = sum_k r_k (a mu_k - x) / c_k.
  double log_density(const std::vector<double>& x, std::vector<double>* grad = nullptr) const {
    const int K = components();
    std::vector<double> l(K);
    for (int k = 0; k < K; ++k) {
      l[k] = std::log(w[k]);
      for (int j = 0; j < d; ++j) {
        const double c = a * a * v[k * d + j] + s * s, e = x[j] - a * mu[k * d + j];
        l[k] -= 0.5 * (e * e / c + std::log(2 * M_PI * c));
      }
    }
    const double top = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (double t : l) sum += std::exp(t - top);
    const double lse = top + std::log(sum);
    if (grad) {
      grad->assign(d, 0.0);
      for (int k = 0; k < K; ++k) {
        const double r = std::exp(l[k] - lse);
        for (int j = 0; j < d; ++j)
          (*grad)[j] += r * (a * mu[k * d + j] - x[j]) / (a * a * v[k * d + j] + s * s);
      }
    }
    return lse;
  }
  gaussian_mixture build() const { return gaussian_mixture(d, w, mu, v); }
};

channel_mixture64 two_diagonal_components(int d) {
  channel_mixture64 m{d, {0.35, 0.65}, std::vector<double>(2 * d), std::vector<double>(2 * d), 0.8, 0.6};
  for (int j = 0; j < d; ++j) {
    m.mu[j] = -1.0 + 0.3 * j;
    m.mu[d + j] = 1.5 - 0.2 * j;
    m.v[j] = 0.4 + 0.1 * j;
    m.v[d + j] = 0.9 - 0.05 * j;
  }
  return m;
}

/// Starting points spread well beyond the target (coordinates in [-4, 4]), so that MALA rejects often.
std::vector<float> spread_points(std::int64_t n, int d) {
  std::vector<float> x(n * d);
  for (std::int64_t e = 0; e < n * d; ++e) x[e] = float(-4.0 + 8.0 * double((e * 7919) % 1000) / 999.0);
  return x;
}

}  // namespace

class LangevinOneStep : public ::testing::TestWithParam<int> {};  // parameter: d (2 register path, 3 and 5 workspace)

// MALA's kernel against the Metropolis-Hastings rule in FP64, step by step, with the documented stream: chain i at step
// k draws z (the first d normals of (seed, first_chain + i, first_step + k)) and u (the uniform after them), proposes
// x' = x + gamma g(x) + sqrt(2 gamma) z and accepts iff log u < log alpha,
//   log alpha = log p(x') - log p(x) + log q(x | x') - log q(x' | x),
//   log q(b | a) = -|b - a - gamma g(a)|^2 / (4 gamma)   (the density of N(a + gamma g(a), 2 gamma I) up to a constant
//   that cancels), written from both points rather than from z.
// The kernel rounds in FP32: log alpha to about 1e-5 here (terms of order 10), so a chain whose |log u - log alpha|
// falls below 1e-3 at some step has an undecidable step and is left out from there (about 1e-3 of the steps; at
// most a tenth of the chains is allowed to be). Every other chain must match: its accepted count exactly, its state
// within 1e-4 relative (FP32 states after three steps). Both decisions must occur often: at least n / 8 of each
// among the 3 n steps (about 1000 accepts and 120 .. 130 rejects here).
// Since the reference's rule satisfies detailed balance with respect to p_t exactly (the ratio of the two proposal
// densities is in it), a kernel that follows it leaves p_t invariant; MalaIsExactOnADiagonalGaussianAtAChannel
// checks the consequence statistically.
// Seen failing with 1 / (2 gamma) for 1 / (4 gamma) in the reverse move's term, with the forward term's sign
// flipped, with the state's score or its log p kept after an accepted move, and with the uniform drawn before the
// normals.
TEST_P(LangevinOneStep, MalaAcceptsExactlyByTheMetropolisHastingsRatio) {
  const int d = GetParam();
  const channel_mixture64 m = two_diagonal_components(d);
  const gaussian_mixture mix = m.build();
  const std::int64_t n = 512;
  std::vector<float> x = spread_points(n, d);
  const std::vector<float> start = x;
  langevin_options o;
  o.method = langevin_method::mala;
  o.step_size = 0.3;
  o.steps = 3;
  o.target = {m.a, m.s};
  o.seed = 99;
  o.first_chain = 1000;
  o.first_step = 17;
  std::vector<std::int64_t> accepted(n, -1);
  langevin(mix, x.data(), {nullptr, accepted.data()}, n, o, {executor::cpu});
  const double gamma = o.step_size;
  int undecidable = 0;
  std::int64_t accepts = 0, rejects = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<double> xi(start.begin() + i * d, start.begin() + (i + 1) * d), g, gp;
    double logp = m.log_density(xi, &g);
    std::int64_t count = 0;
    bool decided = true;
    for (std::int64_t k = 0; k < o.steps && decided; ++k) {
      const std::uint64_t id = o.first_chain + std::uint64_t(i), step = o.first_step + std::uint64_t(k);
      const auto z = dt::documented_normals(o.seed, id, step, d);
      const double log_u = std::log(double(dt::documented_uniform_after_normals(o.seed, id, step, d)));
      std::vector<double> xp(d);
      for (int j = 0; j < d; ++j) xp[j] = xi[j] + gamma * g[j] + std::sqrt(2 * gamma) * z[j];
      const double logp_new = m.log_density(xp, &gp);
      double forward = 0, backward = 0;
      for (int j = 0; j < d; ++j) {
        const double f = xp[j] - xi[j] - gamma * g[j], b = xi[j] - xp[j] - gamma * gp[j];
        forward += f * f;
        backward += b * b;
      }
      const double log_alpha = logp_new - logp - backward / (4 * gamma) + forward / (4 * gamma);
      if (std::abs(log_u - log_alpha) < 1e-3) {
        decided = false;
        break;
      }
      if (log_u < log_alpha) {
        xi = xp;
        g = gp;
        logp = logp_new;
        ++count;
        ++accepts;
      } else {
        ++rejects;
      }
    }
    if (!decided) {
      ++undecidable;
      continue;
    }
    EXPECT_EQ(accepted[i], count) << "d " << d << " chain " << i;
    for (int j = 0; j < d; ++j)
      EXPECT_NEAR(x[i * d + j], xi[j], 1e-4 * (1 + std::abs(xi[j]))) << "d " << d << " chain " << i << " coordinate " << j;
  }
  EXPECT_LE(undecidable, n / 10);
  EXPECT_GT(accepts, n / 8) << "too few accepted moves for the test to check them";
  EXPECT_GT(rejects, n / 8) << "too few rejected moves for the test to check them";
}

// ULA and tamed ULA from points where the score is far from zero, two steps (the second from the state the first left,
// so the score is recomputed there), against x <- x + gamma g + sqrt(2 gamma) z and x <- x + gamma g / (1 + gamma |g|)
// + sqrt(2 gamma) z (README "Langevin samplers") in FP64 with the documented normals. At |x| <= 4 the score is at most
// ~15 in each coordinate, so FP32 keeps 1e-5 relative. accepted counts every step.
// Seen failing with the tamed drift gamma / (1 + |g|) and gamma / (1 + gamma |g|^2), and with ULA's drift gamma / 2.
TEST_P(LangevinOneStep, UlaAndTamedUlaStepsMatchTheirFormulas) {
  const int d = GetParam();
  const channel_mixture64 m = two_diagonal_components(d);
  const gaussian_mixture mix = m.build();
  const std::int64_t n = 64;
  for (auto method : {langevin_method::ula, langevin_method::tamed_ula}) {
    std::vector<float> x = spread_points(n, d);
    const std::vector<float> start = x;
    langevin_options o;
    o.method = method;
    o.step_size = 0.05;
    o.steps = 2;
    o.target = {m.a, m.s};
    o.seed = 5;
    o.first_chain = 3;
    o.first_step = 40;
    std::vector<std::int64_t> accepted(n, -1);
    langevin(mix, x.data(), {nullptr, accepted.data()}, n, o, {executor::cpu});
    const double gamma = o.step_size;
    for (std::int64_t i = 0; i < n; ++i) {
      std::vector<double> xi(start.begin() + i * d, start.begin() + (i + 1) * d), g;
      for (std::int64_t k = 0; k < o.steps; ++k) {
        m.log_density(xi, &g);
        double norm2 = 0;
        for (double t : g) norm2 += t * t;
        const double drift = method == langevin_method::ula ? gamma : gamma / (1 + gamma * std::sqrt(norm2));
        const auto z = dt::documented_normals(o.seed, o.first_chain + i, o.first_step + k, d);
        for (int j = 0; j < d; ++j) xi[j] += drift * g[j] + std::sqrt(2 * gamma) * z[j];
      }
      EXPECT_EQ(accepted[i], o.steps) << to_string(method);
      for (int j = 0; j < d; ++j)
        EXPECT_NEAR(x[i * d + j], xi[j], 1e-5 * (1 + std::abs(xi[j])))
            << to_string(method) << " d " << d << " chain " << i << " coordinate " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, LangevinOneStep, ::testing::Values(2, 3, 5));

// MALA leaves p_t exactly invariant: on a diagonal Gaussian N(m, diag(v)) seen at the channel (a, s) = (0.8, 0.6)
// the target is N(a m, diag(a^2 v + s^2)); chains started at exact draws of it must still be distributed so after
// 60 steps. n = 2^14 independent chains: per coordinate the mean's standard error is sqrt(c_j / n) and the variance's
// sqrt(2 / n) c_j (1.1%); 5 standard errors. The step gamma = 0.4 min c_j would give ULA a variance
// 1 / (1 - gamma / (2 c_j)) - 1 >= 25% too large in the narrowest coordinate (over 20 standard errors), and a MALA
// whose ratio had a proposal density of the wrong width or a stale state a wrong law.
// Seen failing with 1 / (2 gamma) for 1 / (4 gamma) in the reverse move's term, with the forward term's sign flipped,
// and with the state's score or its log p kept after an accepted move.
TEST(Langevin, MalaIsExactOnADiagonalGaussianAtAChannel) {
  const int d = 3;
  const std::vector<double> mean = {1.0, -2.0, 0.5}, var = {0.3, 1.2, 0.6};
  const double a = 0.8, s = 0.6;
  const gaussian_mixture prior(d, {1.0}, mean, var);
  std::vector<double> c(d);
  for (int j = 0; j < d; ++j) c[j] = a * a * var[j] + s * s;
  const std::int64_t n = 1 << 14;
  std::vector<float> x(n * d);
  prior.sample(x.data(), n, {a, s}, 21, nullptr, 0, {executor::cpu});
  langevin_options o;
  o.method = langevin_method::mala;
  o.step_size = 0.4 * *std::min_element(c.begin(), c.end());
  o.steps = 60;
  o.target = {a, s};
  o.seed = 22;
  std::vector<std::int64_t> accepted(n);
  langevin(prior, x.data(), {nullptr, accepted.data()}, n, o, {executor::cpu});
  for (int j = 0; j < d; ++j) {
    const auto col = dt::column(x, d, j);
    EXPECT_NEAR(dt::mean(col), a * mean[j], 5 * std::sqrt(c[j] / n)) << "coordinate " << j;
    EXPECT_NEAR(dt::variance(col), c[j], 5 * std::sqrt(2.0 / n) * c[j]) << "coordinate " << j;
  }
  double rate = 0;
  for (auto k : accepted) rate += double(k);
  rate /= double(n) * double(o.steps);
  EXPECT_GT(rate, 0.5);
  EXPECT_LT(rate, 1.0);
}
