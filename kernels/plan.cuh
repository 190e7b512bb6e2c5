// Stepwise reverse diffusion with a caller's model (diffusion_plan): the per-element functors of reset, step and
// finish, and the one-thread functors that advance the plan's device-resident state.
//
// Work is one thread per Philox block, i.e. per four consecutive coordinates of one row: thread g handles row
// i = g / blocks_per_row, coordinates 4 b .. 4 b + 3 with b = g mod blocks_per_row, and draws its four normals from
// block b of the row's stream directly (philox's offset constructor), so the draws equal those of a loop over the
// whole row and the result does not depend on the launch shape. Adjacent threads touch adjacent 16-byte pieces of
// a row: accesses are coalesced, and n = 64 rows of d = 12,288 are 196,608 threads.
//
// Graph safety: nothing that changes between trajectories or steps is a kernel argument. The step index and the
// Philox id of row 0 (chain_base) live in device memory (plan_state) and are advanced on the device by one-thread
// launches ordered on the caller's stream, so a captured (reset,) model, step, ... sequence draws fresh noise on
// every replay.
#pragma once

#include "kernels/config.cuh"
#include "kernels/diffusion.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// The plan's state in device memory (host memory on the CPU executor).
struct plan_state {
  std::int64_t step;         // next step of the current trajectory (first member: diffusion_plan::step_counter())
  std::uint64_t chain_base;  // Philox id of row 0 of the current trajectory: first_chain + trajectory n
  std::uint64_t trajectory;  // reset() calls so far
};

/// Thread g of a per-element launch: row i and first coordinate j0 of its Philox block; count = coordinates (1-4).
struct plan_element {
  std::int64_t i;
  int j0, count;
  DS_HD_INLINE plan_element(std::int64_t g, std::int64_t blocks_per_row, int d) {
    i = g / blocks_per_row;
    j0 = static_cast<int>(g - i * blocks_per_row) * 4;
    count = d - j0 < 4 ? d - j0 : 4;
  }
};

DS_HD_INLINE std::int64_t philox_blocks(int d) { return (d + 3) / 4; }

DS_HD_INLINE float pick(const float4& z, int c) { return c == 0 ? z.x : c == 1 ? z.y : c == 2 ? z.z : z.w; }

/// One step of the stepwise path for one Philox block of one row: the caller's model output is converted to a
/// denoiser m = ux x + um output (per step, so score, eps, x0 or velocity outputs all work), then the step's update
/// x <- cx x + cm m + cn z runs. A step past the end is a no-op. final_jump: x <- m with the final entry, no noise.
struct plan_step_functor {
  const diffusion_step* table;
  const float* convert;  // 2 per step: ux, um
  const plan_state* state;
  std::int64_t steps;
  float* x;              // n x d
  const float* model;    // n x d
  int d;
  std::int64_t blocks_per_row;
  bool final_jump;
  std::uint64_t seed;
  DS_HD void operator()(std::int64_t g) const {
    const std::int64_t k = final_jump ? steps : state->step;
    if (k > steps || (!final_jump && k == steps)) return;
    const plan_element e(g, blocks_per_row, d);
    float* xi = x + e.i * d + e.j0;
    const float* mi = model + e.i * d + e.j0;
    const float ux = convert[2 * k], um = convert[2 * k + 1];
    if (final_jump) {
      for (int c = 0; c < e.count; ++c) xi[c] = ux * xi[c] + um * mi[c];
      return;
    }
    const diffusion_step st = table[k];
    if (st.cn != 0.f) {
      philox rng(seed, state->chain_base + static_cast<std::uint64_t>(e.i), static_cast<std::uint64_t>(k) + 1,
                 static_cast<std::uint64_t>(e.j0));
      const float4 z = rng.normal4();
      for (int c = 0; c < e.count; ++c)
        xi[c] = st.cx * xi[c] + st.cm * (ux * xi[c] + um * mi[c]) + st.cn * pick(z, c);
    } else {
      for (int c = 0; c < e.count; ++c) xi[c] = st.cx * xi[c] + st.cm * (ux * xi[c] + um * mi[c]);
    }
  }
};

/// Draws the initial state x = scale z from step 0 of each row's stream (as the fused samplers do), one Philox
/// block per thread.
struct plan_initial_functor {
  float* x;
  const plan_state* state;
  int d;
  std::int64_t blocks_per_row;
  float scale;
  std::uint64_t seed;
  DS_HD void operator()(std::int64_t g) const {
    const plan_element e(g, blocks_per_row, d);
    philox rng(seed, state->chain_base + static_cast<std::uint64_t>(e.i), 0, static_cast<std::uint64_t>(e.j0));
    const float4 z = rng.normal4();
    float* xi = x + e.i * d + e.j0;
    for (int c = 0; c < e.count; ++c) xi[c] = scale * pick(z, c);
  }
};

/// Starts the next trajectory (one thread): step 0, rows keyed from first_chain + trajectory n.
struct plan_reset_functor {
  plan_state* state;
  std::uint64_t first_chain;
  std::uint64_t n;
  DS_HD void operator()(std::int64_t) const {
    state->step = 0;
    state->chain_base = first_chain + state->trajectory * n;
    state->trajectory += 1;
  }
};

/// Advances the step index (one thread), stream-ordered after the step that read it.
struct plan_advance_functor {
  plan_state* state;
  DS_HD void operator()(std::int64_t) const { state->step += 1; }
};

}  // namespace diffsample::kernels
