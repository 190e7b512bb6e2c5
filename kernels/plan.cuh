// Stepwise sampling with a caller's model: the per-element functors of diffusion_plan (reset, step, finish), the
// tell of the ask/tell sampling_plan (plan_tell_functor), and the one-thread functors that advance the plans'
// device-resident state.
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
#include "kernels/langevin.cuh"
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
    // The denoiser from the model output, then the step's affine update, in the fused samplers' rounding (as the
    // CPU executor's packed plan step, src/cpu/chains.cpp).
    if (final_jump) {
      for (int c = 0; c < e.count; ++c) xi[c] = ds_fma(ux, xi[c], um * mi[c]);
      return;
    }
    const diffusion_step& st = table[k];
    const affine_update update = step_update(st);
    if (st.cn != 0.f) {
      philox rng(seed, state->chain_base + static_cast<std::uint64_t>(e.i), static_cast<std::uint64_t>(k) + 1,
                 static_cast<std::uint64_t>(e.j0));
      const float4 z = rng.normal4();
      for (int c = 0; c < e.count; ++c) xi[c] = update(xi[c], ds_fma(ux, xi[c], um * mi[c]), pick(z, c));
    } else {
      for (int c = 0; c < e.count; ++c) xi[c] = update(xi[c], ds_fma(ux, xi[c], um * mi[c]));
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

/// Advances the step index (one thread), stream-ordered after the step that read it, up to `last` (a diffusion
/// plan's steps: a step past the last leaves x and the counter as they are, so that steps minus the counter stays
/// the steps left and a captured model indexing a per-step table by it stays inside the table).
struct plan_advance_functor {
  plan_state* state;
  std::int64_t last = INT64_MAX;
  DS_HD void operator()(std::int64_t) const {
    if (state->step < last) state->step += 1;
  }
};

/// What the tell of one ask does with the answer (an ask/tell sampling_plan; src/plan.cu builds the list).
enum plan_op : int {
  plan_op_step = 0,          // diffusion step x <- cx x + cm m (+ cn z), then the SMS accumulate when flagged
  plan_op_heun_predict = 1,  // Heun: M <- m, P <- cx x + cm m (the next ask is at P)
  plan_op_heun_correct = 2,  // Heun: x <- x + hx1 x + hm1 M + hx2 P + hm2 m(P)
  plan_op_jump = 3,          // x <- m
  plan_op_ula = 4,           // x <- x + gamma g + sqrt(2 gamma) z, g the score
  plan_op_tamed = 5,         // x <- x + gamma g / (1 + gamma |g|) + sqrt(2 gamma) z (one thread per row)
  // MALA (one thread per row; the ask's answer is the score g and log p at its points):
  plan_op_mala_start = 6,    // at x: G <- g, log_p <- log p, accepted <- 0
  plan_op_mala_accept = 7,   // at P: accept P with MALA's probability (x <- P, G <- g, log_p <- log p)
};

/// One ask of a sampling_plan and its tell, built on the host and passed by value to the tell's launch (the ask
/// sequence is fixed, so a captured graph replays the right entry at every position).
struct plan_entry {
  diffusion_step st;     // the step's coefficients (diffusion operations)
  diffusion_step next;   // ex, es of the next ask's point when next_point (SMS)
  float ux, um;          // the answer r at the ask's point q becomes the operation's quantity ux q + um r
  float gamma, noise;    // Langevin step and sqrt(2 gamma)
  int op;                // plan_op
  int at_point;          // 1: the ask's points are P; 0: x
  int next_point;        // 1: after the operation, P <- next.ex x + next.es S; MALA: P <- the next proposal
  std::uint64_t rng_step;  // Philox step of the operation's noise (MALA: of the next proposal)
};

/// The plan's buffers (n x d each; point, m and sum only where the sampler uses them).
struct plan_buffers {
  float* x;
  const float* answer;
  float* point;  // P: the ask's points away from x (SMS averages, Heun's predictor)
  float* m;      // M: Heun's first denoiser
  float* sum;    // S: SMS's sum of earlier measurements
  int d;
  std::int64_t blocks_per_row;
  // MALA only (n each): the answer's log-density, log p at x, |z|^2 of the pending proposal, the uniform of its
  // acceptance (drawn with it, after its normals, as the fused chain draws it), accepted proposals. G is m.
  const float* log_density;
  float* log_p;
  float* forward;
  float* uniform;
  std::int64_t* accepted;
};

/// MALA's tell for row i on one chain (plan_op_mala_start, plan_op_mala_accept; see run_plan_tell in
/// src/cpu/chains.cpp for the packed form): the fused chain's operations (kernels/langevin.cuh) in its order.
DS_HD_INLINE void mala_tell(const plan_entry& e, const plan_buffers& b, std::uint64_t seed, std::uint64_t id,
                            std::int64_t i) {
  const int d = b.d;
  float* x = b.x + i * d;
  float* g = b.m + i * d;
  float* p = b.point + i * d;
  const float* r = b.answer + i * d;
  if (e.op == plan_op_mala_start) {
    for (int j = 0; j < d; ++j) g[j] = ds_fma(e.ux, x[j], e.um * r[j]);
    b.log_p[i] = b.log_density[i];
    b.accepted[i] = 0;
  } else {
    float backward = 0.f;
    for (int j = 0; j < d; ++j) {
      const float res = mala_residual<float>(x[j], p[j], e.gamma, ds_fma(e.ux, p[j], e.um * r[j]));
      backward = backward + res * res;
    }
    const float log_alpha = mala_log_alpha<float>(b.log_density[i], b.log_p[i], backward, b.forward[i], e.gamma);
    if (ds_log(b.uniform[i]) < log_alpha) {  // false for NaN: a non-finite proposal is rejected
      for (int j = 0; j < d; ++j) {
        g[j] = ds_fma(e.ux, p[j], e.um * r[j]);
        x[j] = p[j];
      }
      b.log_p[i] = b.log_density[i];
      b.accepted[i] += 1;
    }
  }
  if (e.next_point) {
    philox_stream rng(seed, id, e.rng_step);
    float forward = 0.f;
    rng.normals(d, [&](int j, float z) {
      p[j] = langevin_update(x[j], e.gamma, g[j], e.noise, z);
      forward = forward + z * z;
    });
    b.forward[i] = forward;
    b.uniform[i] = rng.uniform();
  }
}

/// The tell of one ask: thread g handles one Philox block of one row (as plan_step_functor), or one whole row for
/// plan_op_tamed, whose drift needs the row's norm, and for MALA's operations. Thread 0 also stores the next ask's index in the state.
struct plan_tell_functor {
  plan_entry e;
  plan_buffers b;
  plan_state* state;
  std::uint64_t seed;
  std::int64_t next_index;
  DS_HD_INLINE float quantity(std::int64_t idx) const {
    const float q = e.at_point ? b.point[idx] : b.x[idx];
    return ds_fma(e.ux, q, e.um * b.answer[idx]);
  }
  DS_HD void operator()(std::int64_t g) const {
    if (g == 0) state->step = next_index;
    const int d = b.d;
    if (e.op == plan_op_mala_start || e.op == plan_op_mala_accept) {
      mala_tell(e, b, seed, state->chain_base + static_cast<std::uint64_t>(g), g);
      return;
    }
    if (e.op == plan_op_tamed) {
      const std::int64_t base = g * d;
      float norm2 = 0.f;
      for (int j = 0; j < d; ++j) {
        const float gj = quantity(base + j);
        norm2 = norm2 + gj * gj;
      }
      const float drift = tamed_drift<float>(e.gamma, norm2);
      philox_stream rng(seed, state->chain_base + static_cast<std::uint64_t>(g), e.rng_step);
      rng.normals(d, [&](int j, float z) {
        b.x[base + j] = langevin_update(b.x[base + j], drift, quantity(base + j), e.noise, z);
      });
      return;
    }
    const plan_element el(g, b.blocks_per_row, d);
    const std::int64_t base = el.i * d + el.j0;
    const std::uint64_t id = state->chain_base + static_cast<std::uint64_t>(el.i);
    const bool noisy = (e.op == plan_op_step && e.st.cn != 0.f) || e.op == plan_op_ula;
    float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    if (noisy) z = philox(seed, id, e.rng_step, static_cast<std::uint64_t>(el.j0)).normal4();
    float4 z2 = make_float4(0.f, 0.f, 0.f, 0.f);
    const bool accumulate = e.op == plan_op_step && (e.st.flags & step_accumulate) != 0;
    if (accumulate) {
      // The accumulate's draws follow the step's in the same stream (as the fused chain's second normals()).
      const std::uint64_t first = noisy ? static_cast<std::uint64_t>(b.blocks_per_row) * 4 : 0;
      z2 = philox(seed, id, e.rng_step, first + static_cast<std::uint64_t>(el.j0)).normal4();
    }
    for (int c = 0; c < el.count; ++c) {
      const std::int64_t idx = base + c;
      const float r = quantity(idx);
      float& x = b.x[idx];
      switch (e.op) {
        case plan_op_step:
          x = noisy ? diffusion_update(e.st, x, r, pick(z, c)) : diffusion_update(e.st, x, r);
          if (accumulate) diffusion_accumulate(e.st, x, b.sum[idx], pick(z2, c));
          break;
        case plan_op_heun_predict:
          b.m[idx] = r;
          b.point[idx] = heun_predictor(e.st, x, r);
          break;
        case plan_op_heun_correct: x = heun_corrector(e.st, x, b.m[idx], b.point[idx], r); break;
        case plan_op_jump: x = r; break;
        case plan_op_ula: x = langevin_update(x, e.gamma, r, e.noise, pick(z, c)); break;
        default: break;
      }
      if (e.next_point) b.point[idx] = diffusion_point(e.next, x, b.sum[idx]);
    }
  }
};

/// The start of a sampling_plan's trajectory on its buffers: S <- 0 (SMS), P <- the first ask's point.
struct plan_start_functor {
  plan_buffers b;
  diffusion_step first;
  bool clear_sum, first_point;
  DS_HD void operator()(std::int64_t idx) const {
    if (clear_sum) b.sum[idx] = 0.f;
    if (first_point) b.point[idx] = diffusion_point(first, b.x[idx], clear_sum ? 0.f : b.sum[idx]);
  }
};

}  // namespace diffsample::kernels
