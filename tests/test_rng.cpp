// The counter-based Philox streams of kernels/rng.cuh: pinned bit for bit to cuRAND's host generator, keyed by
// (seed, id, step) independently of batching, and equal on the CPU and GPU executors.
#include <gtest/gtest.h>

#include <curand.h>

#include <vector>

#include "kernels/rng.cuh"
#include "reference/helpers.hpp"

using diffsample::kernels::philox;

namespace {

// cuRAND's host Philox generator lays its output out as 65536 interleaved subsequences: 32-bit output
// 4 * (65536 r + j) + c is output 4 r + c of subsequence j (offset 0). Our host-callable curand_init/curand
// must reproduce that stream exactly, which pins the QUALIFIERS trick to cuRAND's own implementation.
constexpr int host_generator_subsequences = 65536;

std::vector<unsigned> host_generator_bits(unsigned long long seed, std::size_t n) {
  curandGenerator_t gen;
  EXPECT_EQ(curandCreateGeneratorHost(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandSetPseudoRandomGeneratorSeed(gen, seed), CURAND_STATUS_SUCCESS);
  std::vector<unsigned> out(n);
  EXPECT_EQ(curandGenerate(gen, out.data(), n), CURAND_STATUS_SUCCESS);
  curandDestroyGenerator(gen);
  return out;
}

}  // namespace

TEST(Rng, HostStreamEqualsCurandHostGeneratorBitForBit) {
  for (unsigned long long seed : {0ull, 42ull, 0x123456789abcdefull}) {
    const int rounds = 3;
    const auto ref = host_generator_bits(seed, std::size_t(4) * host_generator_subsequences * rounds);
    std::size_t mismatches = 0;
    for (int j = 0; j < host_generator_subsequences; ++j) {
      curandStatePhilox4_32_10_t state;
      curand_init(seed, j, 0, &state);
      for (int r = 0; r < rounds; ++r)
        for (int c = 0; c < 4; ++c)
          mismatches += curand(&state) != ref[4 * (std::size_t(host_generator_subsequences) * r + j) + c];
    }
    EXPECT_EQ(mismatches, 0u) << "seed " << seed;
  }
}

TEST(Rng, HostNormalsEqualCurandHostGenerator) {
  // The host generator's normals use the same Box-Muller on the same bits; on the host both use sinf/cosf.
  const unsigned long long seed = 7;
  const std::size_t n = 4 * host_generator_subsequences;
  curandGenerator_t gen;
  ASSERT_EQ(curandCreateGeneratorHost(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
  curandSetPseudoRandomGeneratorSeed(gen, seed);
  std::vector<float> ref(n);
  ASSERT_EQ(curandGenerateNormal(gen, ref.data(), n, 0.f, 1.f), CURAND_STATUS_SUCCESS);
  curandDestroyGenerator(gen);
  double worst = 0;
  for (int j = 0; j < host_generator_subsequences; ++j) {
    curandStatePhilox4_32_10_t state;
    curand_init(seed, j, 0, &state);
    const float4 z = curand_normal4(&state);
    const float got[4] = {z.x, z.y, z.z, z.w};
    for (int c = 0; c < 4; ++c) worst = std::max(worst, double(std::abs(got[c] - ref[4 * j + c])));
  }
  EXPECT_LE(worst, 1e-5) << "largest |difference| between host normals and the host generator";
}

TEST(Rng, StreamKeyedBySeedIdAndStepOnly) {
  // Same key -> same stream; any change of seed, id or step -> a different stream.
  philox a(1, 2, 3), b(1, 2, 3), c(1, 2, 4), d(1, 3, 3), e(2, 2, 3);
  const unsigned va = a.bits();
  EXPECT_EQ(va, b.bits());
  EXPECT_NE(va, c.bits());
  EXPECT_NE(va, d.bits());
  EXPECT_NE(va, e.bits());
  // Step k starts 2^34 outputs into the subsequence: skipping ahead by hand gives the same numbers.
  curandStatePhilox4_32_10_t manual;
  curand_init(1, 2, 0, &manual);
  skipahead(std::uint64_t(3) << 34, &manual);
  philox f(1, 2, 3);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(curand(&manual), f.bits());
}

TEST(Rng, NormalsHaveUnitMomentsAndUniformsLieInUnitInterval) {
  // 2^18 normals: the standard error of the mean is 1/sqrt(n) = 0.00195 and of the variance sqrt(2/n) = 0.0028;
  // 5 standard errors bound each check (false alarm < 1e-6).
  const int n = 1 << 18;
  double s1 = 0, s2 = 0;
  float umin = 2, umax = -1;
  for (int i = 0; i < n / 4; ++i) {
    philox r(99, i, 0);
    const float4 z = r.normal4();
    for (float v : {z.x, z.y, z.z, z.w}) { s1 += v; s2 += double(v) * v; }
    const float u = r.uniform();
    umin = std::min(umin, u);
    umax = std::max(umax, u);
  }
  const double m = s1 / n, var = s2 / n - m * m;
  EXPECT_NEAR(m, 0.0, 5.0 / std::sqrt(double(n)));
  EXPECT_NEAR(var, 1.0, 5.0 * std::sqrt(2.0 / n));
  EXPECT_GT(umin, 0.f);
  EXPECT_LE(umax, 1.f);
}
