// The per-point functors of gaussian_mixture's evaluate, denoiser_jvp and sample (src/mixture.cu launches them on
// either executor): point i's score, denoiser or log-density, its denoiser JVP, and draw i at a channel.
#pragma once

#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"
#include <diffsample/mixture.hpp>

namespace diffsample::kernels {

/// evaluate(): the score, denoiser or log-density of point i (row-major x and out) at the channel (a, s).
struct mixture_evaluate_functor {
  mixture_view<float> mix;
  const float* x;
  float* out;
  float a, s;
  quantity what;
  DS_HD void operator()(std::int64_t i) const {
    const int d = mix.dim;
    const strided_vec<const float> xi{x + i * d, 1, d};
    if (what == quantity::log_density) {
      out[i] = mixture_log_density(mix, xi, a, s);
    } else {
      strided_vec<float> oi{out + i * d, 1, d};
      if (what == quantity::score)
        mixture_score(mix, xi, a, s, oi);
      else
        mixture_denoiser(mix, xi, a, s, oi);
    }
  }
};

/// denoiser_jvp(): J v at point i (row-major x, v and out, d floats each) from the mixture's constants at the call's
/// channel (kernels::channel_jvp: g_k from two parts centred on their weighted means, no division per component or
/// coordinate). The CUDA executor's public product and the CPU executor's scalar target run this functor; the
/// constants come from jvp_channel_table below, filled once per call by channel_table_functor.
struct mixture_jvp_functor {
  channel_view c;
  const float* x;
  const float* v;
  float* out;
  int d;
  DS_HD void operator()(std::int64_t i) const {
    const strided_vec<const float> xi{x + i * d, 1, d}, vi{v + i * d, 1, d};
    strided_vec<float> oi{out + i * d, 1, d};
    if (c.a == 0.f) {  // J = (a / s^2) Cov(x0 | x_t) = 0: x_t carries nothing of x0
      for (int j = 0; j < d; ++j) oi[j] = 0.f;
      return;
    }
    channel_jvp<float>(c, xi, vi, oi);
  }
};

/// Floats of the one-channel table that mixture_jvp_functor reads: K component_constants (4 floats each) and, for
/// diagonal components, K x d values 1 / c_kj; no scaled means (channel_jvp forms a mu inline).
inline std::int64_t jvp_table_floats(const mixture_view<float>& m) {
  return std::int64_t(m.components) * (4 + (m.isotropic ? 0 : std::int64_t(m.dim)));
}

/// That table laid out in `table` (jvp_table_floats(m) floats, 16-byte aligned), for channel_table_functor to fill
/// and mixture_channels::at(0, a, s) to read.
inline mixture_channels jvp_channel_table(const mixture_view<float>& m, float* table) {
  float* inv_c = m.isotropic ? nullptr : table + 4 * std::int64_t(m.components);
  return {m, reinterpret_cast<component_constants*>(table), inv_c, nullptr};
}

/// sample(): draw first + i at the channel (a, s^2): its component from the FP64 cumulative weights, then
/// a mu_k + sqrt(a^2 var_k + s^2) z per coordinate.
struct mixture_sample_functor {
  mixture_view<float> mix;
  const double* cumulative;  // FP64
  float* out;
  std::int32_t* labels;
  float a, s2;
  std::uint64_t seed, first;
  DS_HD void operator()(std::int64_t i) const {
    const std::uint64_t id = first + static_cast<std::uint64_t>(i);
    philox rng(seed, id, 0);
    // The component's 64-bit uniform: output 0 of the stream (the normals follow it, as before) and one output far
    // beyond any normal of the step (2^33 of its 2^34 outputs in).
    const unsigned hi = rng.bits();
    const unsigned lo = philox(seed, id, 0, std::uint64_t(1) << 33).bits();
    const int k = pick_component(cumulative, mix.components, component_uniform(hi, lo));
    if (labels != nullptr) labels[i] = k;
    float* o = out + i * mix.dim;
    const auto& m = mix;
    const float aa = a, ss2 = s2;
    rng.normals(mix.dim, [&](int j, float z) {
      o[j] = aa * m.mean(k, j) + ds_sqrt(aa * aa * m.variance(k, j) + ss2) * z;
    });
  }
};

}  // namespace diffsample::kernels
