// The per-point functors of gaussian_mixture's evaluate, denoiser_jvp and sample (src/mixture.cu launches them on
// either executor): point i's score, denoiser or log-density, its denoiser JVP, and draw i at a channel.
#pragma once

#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/mixture.cuh"
#include "kernels/rng.cuh"
#include <diffsample/mixture.hpp>

namespace diffsample::kernels {

/// evaluate(): the score, denoiser or log-density of point i (row-major x and out) at the channel (a, s). On the
/// CUDA executor the rows are staged through shared memory (launch_for_each_row_staged: the row functor's members
/// below); f(i) runs the same body on the global rows.
struct mixture_evaluate_functor {
  mixture_view<float> mix;
  const float* x;
  float* out;
  float a, s;
  quantity what;
  DS_HD int row_width() const { return mix.dim; }
  DS_HD int staged_inputs() const { return 1; }
  DS_HD const float* staged_input(int) const { return x; }
  DS_HD float* staged_output() const { return what == quantity::log_density ? nullptr : out; }
  DS_HD void operator()(std::int64_t i) const {
    const int d = mix.dim;
    const strided_vec<const float> xi{x + i * d, 1, d};
    (*this)(i, xi, xi, strided_vec<float>{out + i * d, 1, d});
  }
  /// Point i at x (v unused); the score or denoiser into o, the log-density into out[i].
  DS_HD void operator()(std::int64_t i, const strided_vec<const float>& xi, const strided_vec<const float>&,
                        const strided_vec<float>& o) const {
    strided_vec<float> oi = o;
    if (what == quantity::log_density)
      out[i] = mixture_log_density(mix, xi, a, s);
    else if (what == quantity::score)
      mixture_score(mix, xi, a, s, oi);
    else
      mixture_denoiser(mix, xi, a, s, oi);
  }
};

/// denoiser_jvp(): J v at point i (row-major x, v and out, d floats each) from the mixture's constants at the call's
/// channel (kernels::channel_jvp: g_k from two parts centred on their weighted means, no division per component or
/// coordinate). The CUDA executor's public product (rows staged as evaluate()'s) and the CPU executor's scalar
/// target run this functor; the constants come from jvp_channel_table below, filled once per call by
/// channel_table_functor.
struct mixture_jvp_functor {
  channel_view c;
  const float* x;
  const float* v;
  float* out;
  int d;
  DS_HD int row_width() const { return d; }
  DS_HD int staged_inputs() const { return 2; }
  DS_HD const float* staged_input(int k) const { return k == 0 ? x : v; }
  DS_HD float* staged_output() const { return out; }
  DS_HD void operator()(std::int64_t i) const {
    (*this)(i, strided_vec<const float>{x + i * d, 1, d}, strided_vec<const float>{v + i * d, 1, d},
            strided_vec<float>{out + i * d, 1, d});
  }
  DS_HD void operator()(std::int64_t, const strided_vec<const float>& xi, const strided_vec<const float>& vi,
                        const strided_vec<float>& o) const {
    strided_vec<float> oi = o;
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

/// Exact draw `id` of the mixture at the channel (a, s^2) from the Philox stream (seed, id, 0): its component k by
/// the 64-bit uniform of component_uniform against the FP64 cumulative weights (its high word the stream's first
/// output, its low word an output far beyond any normal of the step, 2^33 of its 2^34 outputs in), then
/// out_j = a mu_kj + sqrt(a^2 var_kj + s^2) z_j with the stream's next normals; returns k. The one exact draw of the
/// library: gaussian_mixture::sample() and SKRock's initial prior draws (kernels/guided_skrock.cuh), so that no
/// sampler picks a component against FP32 running sums (which lose every weight below half an ulp of the sum
/// before it: 3e-8 once the sum passes 0.5, so that thousands of small components were never drawn).
template <class X>
DS_HD_INLINE int exact_draw(const mixture_view<float>& m, const double* cumulative, std::uint64_t seed,
                            std::uint64_t id, float a, float s2, X& out) {
  philox rng(seed, id, 0);
  const unsigned hi = rng.bits();
  const unsigned lo = philox(seed, id, 0, std::uint64_t(1) << 33).bits();
  const int k = pick_component(cumulative, m.components, component_uniform(hi, lo));
  rng.normals(m.dim, [&](int j, float z) { out[j] = a * m.mean(k, j) + ds_sqrt(a * a * m.variance(k, j) + s2) * z; });
  return k;
}

/// sample(): draw first + i at the channel (a, s^2) (exact_draw).
struct mixture_sample_functor {
  mixture_view<float> mix;
  const double* cumulative;  // FP64
  float* out;
  std::int32_t* labels;
  float a, s2;
  std::uint64_t seed, first;
  DS_HD void operator()(std::int64_t i) const {
    float* o = out + i * mix.dim;
    const int k = exact_draw(mix, cumulative, seed, first + static_cast<std::uint64_t>(i), a, s2, o);
    if (labels != nullptr) labels[i] = k;
  }
};

}  // namespace diffsample::kernels
