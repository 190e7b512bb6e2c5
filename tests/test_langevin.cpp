// Langevin family against exact answers: ULA's stationary variance on a Gaussian, MALA's invariance of the
// mixture, tamed ULA's stability, and independence from batch split, step split and executor.
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
