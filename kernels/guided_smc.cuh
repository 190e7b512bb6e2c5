// Device functors of the guided SMC beside the per-particle math of kernels/guided.cuh: the final gather in an
// exchangeable order (guided_sample(), the MPI shards and the SMC plan) and the SMC ask/tell plan's own launches
// (src/guided.cu).
#pragma once

#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/guided.cuh"
#include "kernels/plan.cuh"
#include <diffsample/guided.hpp>

namespace diffsample::kernels {

/// A pseudo-random permutation of [0, n) keyed by a 64-bit key: a four-round Feistel network on the smallest even
/// number of bits covering n (fewer than 4n values), cycle-walked back into [0, n) (a bijection of [0, n): the walk
/// from i < n follows i's cycle of the network to the next value below n; under 4 rounds expected). The round
/// function is the splitmix64 finaliser of (key, round, half).
struct index_permutation {
  std::uint64_t key = 0, n = 1;
  int half = 1;  // bits per half

  index_permutation(std::uint64_t k, std::uint64_t count) : key(k), n(count) {
    while ((std::uint64_t(1) << (2 * half)) < count) ++half;
  }
  static DS_HD std::uint64_t mix(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  DS_HD std::uint64_t network(std::uint64_t v) const {
    const std::uint64_t mask = (std::uint64_t(1) << half) - 1;
    std::uint64_t left = v >> half, right = v & mask;
    for (std::uint64_t r = 0; r < 4; ++r) {
      const std::uint64_t next = left ^ (mix(key + 0x9E3779B97F4A7C15ull * (r + 1) + right) & mask);
      left = right;
      right = next;
    }
    return (left << half) | right;
  }
  DS_HD std::uint64_t operator()(std::uint64_t i) const {
    do i = network(i);
    while (i >= n);
    return i;
  }
};

/// The final gather of SMC samples in an exchangeable order: row i of problem b is the particle
/// ancestors[b, perm_b(i)]. Systematic and other ordered schemes return ancestors in increasing order, so without
/// the permutation consecutive rows would come from the same few parents (blocks of rows unrepresentative of the
/// whole); with it every block of rows is a uniformly random subset of the equally weighted samples.
struct permuted_gather_functor {
  const float* x;                  // B N x d in the run's layout (kernels::guided_slice)
  const std::int32_t* ancestors;   // B N
  float* out;                      // B N x d, row-major
  std::int64_t particles, d;
  std::uint64_t key;
  index_permutation perm;
  std::int64_t coordinate_stride;  // of x: 0 row-major, else B N
  const std::uint64_t* key_at = nullptr;  // when not null, the key is read here (an SMC plan's device key)
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t row = e / d, j = e - row * d;
    const std::int64_t b = row / particles, i = row - b * particles;
    index_permutation pb = perm;
    pb.key = (key_at != nullptr ? *key_at : key) + 0xD1B54A32D192ED03ull * static_cast<std::uint64_t>(b);
    const std::int64_t slot = b * particles + static_cast<std::int64_t>(pb(static_cast<std::uint64_t>(i)));
    const std::int64_t from = b * particles + ancestors[slot];
    out[e] = x[coordinate_stride == 0 ? from * d + j : from + j * coordinate_stride];
  }
};

// The Philox keys of an SMC plan's trajectory, in device memory: trajectory t draws as guided_sample() with
// options.seed = s_t = guided_run_seed(seed, t), its mutations from s_t, its resampling from s_t ^ resampling_key and
// the final samples' order from s_t ^ order_key. reset() advances them on the device (smc_reset_functor), so a captured
// trajectory replays with the next trajectory's keys.
constexpr std::uint64_t resampling_key = 0x9E3779B97F4A7C15ull;  // as guided_sample(): apart from the mutations'
constexpr std::uint64_t order_key = 0x5851F42D4C957F2Dull;       // the samples' order: a stream of its own
struct smc_plan_keys {
  std::uint64_t mutation, resampling, order;
};

/// A twisted-potential SMC plan's tell of one ask: twisted_stage_functor (guided_sample()'s CPU stage), and
/// thread 0 stores the next position. Final: twisted_stage_functor::run's (false for the CUDA plan's tells of
/// every transition but the last).
template <bool Final = true>
struct twisted_tell_functor {
  twisted_stage_functor stage;
  std::int64_t* position;
  std::int64_t next_position;
  DS_HD void operator()(std::int64_t i) const {
    if (i == 0) *position = next_position;
    stage.template run<Final>(i);
  }
};

/// Starts the next trajectory of an SMC plan (one thread): step 0 and the keys of guided_run_seed(seed, trajectory).
struct smc_reset_functor {
  plan_state* state;
  smc_plan_keys* keys;
  std::uint64_t seed;
  DS_HD void operator()(std::int64_t) const {
    const std::uint64_t s = guided_run_seed(seed, state->trajectory);
    state->step = 0;
    state->trajectory += 1;
    keys->mutation = s;
    keys->resampling = s ^ resampling_key;
    keys->order = s ^ order_key;
  }
};

}  // namespace diffsample::kernels
