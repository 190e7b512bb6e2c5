// One Langevin chain run for many steps (formulas in the README), generic over where its vectors live:
// registers (reg_vec, compile-time d) or strided workspace (run-time d). Both executors run this same code.
#pragma once

#include "kernels/chain_runner.cuh"
#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

struct langevin_params {
  mixture_view<float> mix;
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

/// Runs params.steps steps of chain i whose state is in x; g, xp, gp are scratch vectors of the same size.
template <class V>
DS_HD_INLINE void langevin_chain(const langevin_params& p, std::int64_t i, V& x, V& g, V& xp, V& gp) {
  const int d = x.size();
  const float gamma = p.gamma;
  const float noise = ds_sqrt(2.f * gamma);
  const std::uint64_t chain = p.first_chain + static_cast<std::uint64_t>(i);
  float logp = mixture_score(p.mix, x, p.a, p.s, g);
  std::int64_t accepted = 0;
  for (std::int64_t k = 0; k < p.steps; ++k) {
    philox rng(p.seed, chain, p.first_step + static_cast<std::uint64_t>(k));
    if (p.method == 1) {
      // MALA: x' = x + gamma g(x) + sqrt(2 gamma) xi; log q(x'|x) = -|xi|^2 / 2 + const.
      float forward = 0.f;
      rng.normals(d, [&](int j, float z) {
        xp[j] = x[j] + gamma * g[j] + noise * z;
        forward += z * z;
      });
      const float logp_new = mixture_score(p.mix, xp, p.a, p.s, gp);
      float backward = 0.f;  // |x - x' - gamma g(x')|^2 / (4 gamma)
      for (int j = 0; j < d; ++j) {
        const float r = x[j] - xp[j] - gamma * gp[j];
        backward += r * r;
      }
      const float log_alpha = (logp_new - logp) - backward / (4.f * gamma) + 0.5f * forward;
      const float u = rng.uniform();
      if (ds_log(u) < log_alpha) {  // false for NaN log_alpha: a non-finite proposal is rejected
        swap_vec(x, xp);
        swap_vec(g, gp);
        logp = logp_new;
        ++accepted;
      }
    } else {
      float drift = gamma;
      if (p.method == 2) {  // tamed: gamma g / (1 + gamma |g|)
        float norm2 = 0.f;
        for (int j = 0; j < d; ++j) norm2 += g[j] * g[j];
        drift = gamma / (1.f + gamma * ds_sqrt(norm2));
      }
      rng.normals(d, [&](int j, float z) { x[j] = x[j] + drift * g[j] + noise * z; });
      logp = mixture_score(p.mix, x, p.a, p.s, g);
      ++accepted;
    }
    if (p.trajectory != nullptr && (k + 1) % p.record_every == 0) {
      float* out = p.trajectory + (((k + 1) / p.record_every - 1) * p.n + i) * d;
      for (int j = 0; j < d; ++j) out[j] = x[j];
    }
  }
  if (p.accepted != nullptr) p.accepted[i] = accepted;
}

/// The Langevin chain body for the runners of kernels/chain_runner.cuh (scratch: g, x', g').
struct langevin_chain_body {
  langevin_params p;
  DS_HD_INLINE bool loads_state() const { return true; }
  template <class V>
  DS_HD_INLINE void operator()(std::int64_t i, V& x, V& g, V& xp, V& gp) const {
    langevin_chain(p, i, x, g, xp, gp);
  }
};

}  // namespace diffsample::kernels
