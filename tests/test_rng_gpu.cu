// The Philox streams on the GPU: uniform bits identical to the host's, normals within the stated tolerance
// (the device uses __sincosf and hardware logf; the host sinf/cosf/logf).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/rng.cuh"
#include "reference/helpers.hpp"

using diffsample::kernels::philox;
namespace dt = diffsample::testing;

namespace {

struct draws {
  unsigned bits[4];
  float normals[4];
  float uniform;
};

__host__ __device__ draws draw(std::uint64_t seed, std::uint64_t id, std::uint64_t step) {
  draws out;
  philox a(seed, id, step);
  const uint4 b = a.bits4();
  out.bits[0] = b.x, out.bits[1] = b.y, out.bits[2] = b.z, out.bits[3] = b.w;
  philox c(seed, id, step + 1);
  const float4 z = c.normal4();
  out.normals[0] = z.x, out.normals[1] = z.y, out.normals[2] = z.z, out.normals[3] = z.w;
  out.uniform = c.uniform();
  return out;
}

__global__ void draw_kernel(draws* out, std::int64_t n, std::uint64_t seed) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = draw(seed, std::uint64_t(i) * 7919, std::uint64_t(i % 1000) * 3);
}

}  // namespace

TEST(RngGpu, DeviceStreamsEqualHostStreams) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t n = 1 << 16;
  dt::device_buffer<draws> dev(n);
  draw_kernel<<<(n + 255) / 256, 256>>>(dev.ptr, n, 12345);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto gpu = dev.download();
  std::size_t bit_mismatches = 0, uniform_mismatches = 0;
  double worst_normal = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const draws host = draw(12345, std::uint64_t(i) * 7919, std::uint64_t(i % 1000) * 3);
    for (int c = 0; c < 4; ++c) {
      bit_mismatches += host.bits[c] != gpu[i].bits[c];
      worst_normal = std::max(worst_normal, double(std::abs(host.normals[c] - gpu[i].normals[c])));
    }
    uniform_mismatches += host.uniform != gpu[i].uniform;
  }
  EXPECT_EQ(bit_mismatches, 0u);
  EXPECT_EQ(uniform_mismatches, 0u);  // a uniform is bits * 2^-32 + 2^-33: exact in both
  // |z| <= ~6 here; __sincosf's absolute error is ~2^-21.4 on [-pi, pi], times sqrt(-2 log u) <= 6.
  EXPECT_LE(worst_normal, 1e-5);
}
