// The backward (reverse-time) kernel of one DDPM or DDIM step, in FP64: the one source of these coefficients for the
// fused diffusion samplers and the stepwise plan (src/diffusion.cu) and the guided samplers (src/guided.cu); and the
// affine update that applies a step's coefficients, the one source of that arithmetic.
#pragma once

#include <cmath>

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// x' ~ N(cx x + cm m, sigma^2 I), m the denoiser at x; variance = sigma^2 as computed (no square root round trip).
struct backward_coefficients {
  double cx, cm, sigma, variance;
};

/// One step from the channel (a, s) of the current point x to (a_next, s_next), a_next > 0, s > 0. The forward kernel
/// between them is x = r x' + sqrt(v) z with r = a / a_next and v = s^2 - r^2 s_next^2 (clamped at 0 as the SNR
/// increases along the grid). DDPM is its posterior q(x' | x, x0 = m): mean (a_next v / s^2) m + (r s_next^2 / s^2) x,
/// variance s_next^2 v / s^2 (for VP: c0 = sqrt(abar') beta / (1 - abar), c1 = sqrt(alpha) (1 - abar') / (1 - abar),
/// README "Reverse-diffusion samplers"). DDIM with stochasticity eta: x' = a_next m + c eps + sigma xi with eps = (x -
/// a m) / s, sigma = eta sqrt(s_next^2 v / s^2), c = sqrt(max(0, s_next^2 - sigma^2)); eta = 1 is DDPM up to rounding.
DS_HD_INLINE backward_coefficients ddpm_ddim_kernel(double a, double s, double a_next, double s_next, bool ddim,
                                                    double eta) {
  const double s2 = s * s;
  const double r = a / a_next;
  const double v_raw = s2 - r * r * s_next * s_next;
  const double v = v_raw > 0.0 ? v_raw : 0.0;
  const double posterior_variance = s_next * s_next * v / s2;
  backward_coefficients k;
  if (!ddim) {
    k.cx = r * s_next * s_next / s2;
    k.cm = a_next * v / s2;
    k.sigma = sqrt(posterior_variance);
    k.variance = posterior_variance;
  } else {
    k.sigma = eta * sqrt(posterior_variance);
    k.variance = k.sigma * k.sigma;
    const double keep2 = s_next * s_next - k.variance;
    const double c = sqrt(keep2 > 0.0 ? keep2 : 0.0);
    k.cx = c / s;
    k.cm = a_next - c * a / s;
  }
  return k;
}

/// The one affine step of every sampler, x <- cx x + cm m + cn z (m the denoiser or the quantity the step reads, z a
/// standard normal), rounded as cn z + (cm m + cx x) with ds_fma on both executors: the fused diffusion samplers
/// (kernels/diffusion.cuh), the stepwise plan (kernels/plan.cuh) and the guided samplers' kernel means
/// (kernels/guided.cuh) apply it, so that the same coefficients give the same floats on every path.
struct affine_update {
  float cx, cm, cn;
  /// cx x + cm m (a deterministic step, or the mean of a stochastic one).
  template <class T>
  DS_HD_INLINE T operator()(T x, T m) const {
    return ds_fma(T(cm), m, T(cx) * x);
  }
  /// cx x + cm m + cn z.
  template <class T>
  DS_HD_INLINE T operator()(T x, T m, T z) const {
    return ds_fma(T(cn), z, (*this)(x, m));
  }
};

}  // namespace diffsample::kernels
