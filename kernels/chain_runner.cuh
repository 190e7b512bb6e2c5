// Where a chain's working vectors live, written once for every per-chain sampler: registers for a compile-time
// dimension D, or workspace for any d. A chain body is a functor with
//   bool loads_state() const                  whether x holds the chain's initial state
//   void operator()(lane, x, v1, v2, v3) const  runs the chain(s) of `lane` on state x and three scratch vectors
// and both runners below run it, on either executor, with one chain per lane (scalar_lane). The CPU executor's
// SIMD runners (src/cpu/) run the same bodies over packs of chains. For the CUDA chain kernel, which stages the
// body's table p.mix in shared memory (kernels/chain_launch.cuh), a body also declares
//   static constexpr bool single_channel             whether p.mix has one channel (staged with it)
//   static constexpr bool reads_isotropic_variances  whether it reads an isotropic mixture's variances through p.mix
//                                                    (channel_jvp does, as do the mixture_view functions): staged only
//                                                    then, so that a body that does not pays nothing for them
#pragma once

#include "kernels/config.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// One chain in one thread, lane type float. The SIMD lanes of the CPU executor provide the same members over
/// packs of chains.
struct scalar_lane {
  using value = float;
  std::int64_t i;  // chain index in this call
  /// The random stream of this chain at `step`: (seed, first_chain + i, step).
  DS_HD_INLINE philox_stream rng(std::uint64_t seed, std::uint64_t first_chain, std::uint64_t step) const {
    return {seed, first_chain + static_cast<std::uint64_t>(i), step};
  }
  /// Accepted-step counter.
  struct counter {
    std::int64_t c = 0;
    DS_HD_INLINE void add(bool accepted) { c += accepted ? 1 : 0; }
    DS_HD_INLINE void add_all() { ++c; }
  };
  DS_HD_INLINE void store_count(std::int64_t* out, const counter& c) const { out[i] = c.c; }
  /// Element j of this chain's row of an n x d row-major array, and its store.
  DS_HD_INLINE float get(const float* rows, int d, int j) const { return rows[i * d + j]; }
  DS_HD_INLINE void put(float* rows, int d, int j, float v) const { rows[i * d + j] = v; }
  /// Writes x to row (r, i) of an r x n x d record array.
  template <class V>
  DS_HD_INLINE void store_row(float* records, std::int64_t r, std::int64_t n, const V& x) const {
    const int d = x.size();
    float* out = records + (r * n + i) * d;
    for (int j = 0; j < d; ++j) out[j] = x[j];
  }
};

/// Chain state in registers; x is n x D, row-major.
template <int D, class Chain>
struct register_chain_functor {
  static constexpr bool always_staged = true;  // CUDA: the mixture is in shared memory (kernels/chain_launch.cuh)
  Chain chain;
  float* x;
  DS_HD void operator()(std::int64_t i) const {
    reg_vec<float, D> xs{}, v1{}, v2{}, v3{};
    float* row = x + i * D;
    if (chain.loads_state())
      for (int j = 0; j < D; ++j) xs[j] = row[j];
    chain(scalar_lane{i}, xs, v1, v2, v3);
    for (int j = 0; j < D; ++j) row[j] = xs[j];
  }
};

/// Chain i's vectors of d floats in a workspace of n chains: element j of vector v at
/// workspace[v d n + base(i) + j stride], coordinate-major (base i, stride n: coalesced across a warp on CUDA) or
/// chain-major (base i d, stride 1: the CPU).
struct chain_workspace {
  float* first;  // workspace + base(i)
  std::int64_t stride, block;
  int d;
  DS_HD_INLINE chain_workspace(float* workspace, std::int64_t i, std::int64_t n, int dim, bool coordinate_major)
      : first(workspace + (coordinate_major ? i : i * dim)), stride(coordinate_major ? n : 1),
        block(static_cast<std::int64_t>(dim) * n), d(dim) {}
  DS_HD_INLINE strided_vec<float> operator[](int v) const { return {first + v * block, stride, d}; }
};

/// Chain state in workspace for any d: four vectors of d floats per chain (chain_workspace).
template <class Chain>
struct workspace_chain_functor {
  static constexpr bool always_staged = false;
  Chain chain;
  float* x;  // n x d, row-major
  float* workspace;
  std::int64_t n;
  int d;
  bool coordinate_major;
  DS_HD void operator()(std::int64_t i) const {
    const chain_workspace w(workspace, i, n, d, coordinate_major);
    strided_vec<float> xs = w[0], v1 = w[1], v2 = w[2], v3 = w[3];
    float* row = x + i * d;
    if (chain.loads_state())
      for (int j = 0; j < d; ++j) xs[j] = row[j];
    chain(scalar_lane{i}, xs, v1, v2, v3);
    for (int j = 0; j < d; ++j) row[j] = xs[j];
  }
};

}  // namespace diffsample::kernels
