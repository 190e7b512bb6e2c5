// Where a chain's working vectors live, written once for every per-chain sampler: registers for a compile-time
// dimension D, or workspace for any d. A chain body is a functor with
//   bool loads_state() const               whether x holds the chain's initial state
//   void operator()(i, x, v1, v2, v3) const  runs chain i on its state x and three scratch vectors of the same kind
// and both runners below run it, on either executor.
#pragma once

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// Chain state in registers; x is n x D, row-major.
template <int D, class Chain>
struct register_chain_functor {
  Chain chain;
  float* x;
  DS_HD void operator()(std::int64_t i) const {
    reg_vec<float, D> xs{}, v1{}, v2{}, v3{};
    float* row = x + i * D;
    if (chain.loads_state())
      for (int j = 0; j < D; ++j) xs[j] = row[j];
    chain(i, xs, v1, v2, v3);
    for (int j = 0; j < D; ++j) row[j] = xs[j];
  }
};

/// Chain state in workspace for any d: four vectors of d floats per chain, element j of vector v of chain i at
/// workspace[v d n + base(i) + j stride], coordinate-major on CUDA (coalesced across a warp), chain-major on the CPU.
template <class Chain>
struct workspace_chain_functor {
  Chain chain;
  float* x;  // n x d, row-major
  float* workspace;
  std::int64_t n;
  int d;
  bool coordinate_major;
  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t stride = coordinate_major ? n : 1;
    const std::int64_t base = coordinate_major ? i : i * d;
    const std::int64_t block = static_cast<std::int64_t>(d) * n;
    strided_vec<float> xs{workspace + base, stride, d}, v1{workspace + block + base, stride, d},
        v2{workspace + 2 * block + base, stride, d}, v3{workspace + 3 * block + base, stride, d};
    float* row = x + i * d;
    if (chain.loads_state())
      for (int j = 0; j < d; ++j) xs[j] = row[j];
    chain(i, xs, v1, v2, v3);
    for (int j = 0; j < d; ++j) row[j] = xs[j];
  }
};

}  // namespace diffsample::kernels
