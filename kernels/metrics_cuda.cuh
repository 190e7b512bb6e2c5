// The sliced Wasserstein distance's CUDA kernel (src/sliced_wasserstein.cu launches it): a direction's 1-D W_p
// summed by one block, over kernels/metrics.cuh's wasserstein_direction_functor, which the CPU runs serially.
// CUDA only.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/metrics.cuh"

namespace diffsample::kernels {

// One block per direction: thread t adds the parts of atoms t, t + block, ... of the larger sample in order, then a
// fixed-shape tree in shared memory adds the block's partial sums, so the value does not depend on timing.
constexpr int distance_block = 256;

static __global__ void __launch_bounds__(distance_block)
    wasserstein_direction_kernel(wasserstein_direction_functor f) {
  __shared__ double partial[distance_block];
  const std::int64_t c = blockIdx.x;
  const float *smaller, *larger;
  std::int64_t ns, nl;
  const bool finite = f.samples(c, smaller, ns, larger, nl);
  double sum = 0;
  if (finite)
    for (std::int64_t j = threadIdx.x; j < nl; j += distance_block) sum += f.part(smaller, ns, larger, nl, j);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = distance_block / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) f.values[c] = finite ? f.finish(partial[0]) : NAN;
}

}  // namespace diffsample::kernels
