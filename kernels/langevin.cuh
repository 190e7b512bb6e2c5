// One Langevin chain run for many steps (formulas in the README), generic over where its vectors live
// (registers: reg_vec, compile-time d; or strided workspace: run-time d) and over its lanes: one chain (CUDA, the
// scalar CPU path) or a pack of chains in SIMD lanes (the CPU executor, src/cpu/). Both executors run this code.
#pragma once

#include "kernels/chain_runner.cuh"
#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

struct langevin_params {
  mixture_channels mix;   // the mixture and its constants at the target channel (channel 0)
  float a, s;             // target channel
  float gamma;            // step size
  int method;             // 0 ula, 1 mala, 2 tamed ula
  std::int64_t steps;
  std::uint64_t seed, first_chain, first_step;
  std::int64_t n;         // chains in this call
  std::int64_t record_every;
  float* trajectory;      // (steps / record_every) x n x d, or nullptr
  std::int64_t* accepted; // n, or nullptr
};

/// The channels of a Langevin call for channel_table_functor: one, the target.
struct langevin_channel {
  float a, s;
  DS_HD_INLINE bool operator()(std::int64_t, float& ca, float& cs) const {
    ca = a;
    cs = s;
    return true;
  }
};

/// The ULA-family update x + drift g + noise z, shared with the ask/tell plan (kernels/plan.cuh) so that a plan
/// answered with the mixture's own score reproduces the fused chain bit for bit.
template <class T>
DS_HD_INLINE T langevin_update(T x, T drift, T g, T noise, T z) {
  return x + drift * g + noise * z;
}
/// The tamed drift gamma / (1 + gamma |g|) from |g|^2.
template <class T>
DS_HD_INLINE T tamed_drift(float gamma, T norm2) {
  return T(gamma) / (T(1) + T(gamma) * ds_sqrt(norm2));
}

/// MALA's residual x - x' - gamma g(x') of the reverse move, one coordinate (|r|^2 / (4 gamma) is -log q(x | x')).
template <class T>
DS_HD_INLINE T mala_residual(T x, T xp, float gamma, T gp) {
  return x - xp - T(gamma) * gp;
}
/// MALA's log acceptance ratio from log p at the proposal and the state, |r|^2 of the reverse move and |z|^2 of the
/// forward move's normals: log p(x') - log p(x) - |r|^2 / (4 gamma) + |z|^2 / 2. A NaN compares false: rejected.
template <class T>
DS_HD_INLINE T mala_log_alpha(T logp_new, T logp, T backward, T forward, float gamma) {
  return (logp_new - logp) - backward * T(1.f / (4.f * gamma)) + T(0.5f) * forward;
}

/// Runs params.steps steps of the chain(s) in `lane` whose state is in x; g, xp, gp are scratch vectors.
template <class L, class V>
DS_HD_INLINE void langevin_chain(const langevin_params& p, const L& lane, V& x, V& g, V& xp, V& gp) {
  using T = typename L::value;
  const int d = x.size();
  const float gamma = p.gamma;
  const float noise = ds_sqrt(2.f * gamma);
  const channel_view ch = p.mix.at(0, p.a, p.s);
  T logp = channel_score<T>(ch, x, g);
  typename L::counter accepted;
  for (std::int64_t k = 0; k < p.steps; ++k) {
    auto rng = lane.rng(p.seed, p.first_chain, p.first_step + static_cast<std::uint64_t>(k));
    if (p.method == 1) {
      // MALA: x' = x + gamma g(x) + sqrt(2 gamma) xi; log q(x'|x) = -|xi|^2 / 2 + const.
      T forward = T(0);
      // The proposal and the acceptance in the ask/tell plan's operations (kernels/plan.cuh), shared.
      rng.normals(d, [&](int j, T z) {
        xp[j] = langevin_update(x[j], T(gamma), g[j], T(noise), z);
        forward = forward + z * z;
      });
      const T logp_new = channel_score<T>(ch, xp, gp);
      T backward = T(0);  // |x - x' - gamma g(x')|^2
      for (int j = 0; j < d; ++j) {
        const T r = mala_residual<T>(x[j], xp[j], gamma, gp[j]);
        backward = backward + r * r;
      }
      const T log_alpha = mala_log_alpha<T>(logp_new, logp, backward, forward, gamma);
      const auto accept = ds_log(rng.uniform()) < log_alpha;  // false for NaN: a non-finite proposal is rejected
      for (int j = 0; j < d; ++j) {
        x[j] = ds_select(accept, xp[j], x[j]);
        g[j] = ds_select(accept, gp[j], g[j]);
      }
      logp = ds_select(accept, logp_new, logp);
      accepted.add(accept);
    } else {
      T drift = T(gamma);
      if (p.method == 2) {  // tamed: gamma g / (1 + gamma |g|)
        T norm2 = T(0);
        for (int j = 0; j < d; ++j) norm2 = norm2 + g[j] * g[j];
        drift = tamed_drift<T>(gamma, norm2);
      }
      rng.normals(d, [&](int j, T z) { x[j] = langevin_update(x[j], drift, g[j], T(noise), z); });
      logp = channel_score<T>(ch, x, g);
      accepted.add_all();
    }
    if (p.trajectory != nullptr && (k + 1) % p.record_every == 0)
      lane.store_row(p.trajectory, (k + 1) / p.record_every - 1, p.n, x);
  }
  if (p.accepted != nullptr) lane.store_count(p.accepted, accepted);
}

/// The Langevin chain body for the runners of kernels/chain_runner.cuh (scratch: g, x', g').
struct langevin_chain_body {
  static constexpr bool single_channel = true;  // p.mix has the target channel only
  // No J v (channel_jvp) and no mixture_view function: a CUDA chain launch need not stage an isotropic mixture's
  // variances (kernels/chain_launch.cuh).
  static constexpr bool reads_isotropic_variances = false;
  langevin_params p;
  DS_HD_INLINE bool loads_state() const { return true; }
  template <class L, class V>
  DS_HD_INLINE void operator()(const L& lane, V& x, V& g, V& xp, V& gp) const {
    langevin_chain(p, lane, x, g, xp, gp);
  }
};

}  // namespace diffsample::kernels
