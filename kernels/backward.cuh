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
  if (s2 < 2.2250738585072014e-308) {
    // s below 1.5e-154 (a grid point a positive s away from the data channel, variance_exploding(1e-300, ...)): s^2
    // is subnormal or 0 and the quotients above lose every digit or divide by 0 (NaN samples). The same
    // coefficients in ratios of s_next / s, which the kernel's scale invariance allows; other channels keep the
    // former form and its bits.
    const double q = s_next / s, r = a / a_next;
    const double w_raw = 1.0 - (r * q) * (r * q);  // v / s^2
    const double w = w_raw > 0.0 ? w_raw : 0.0;
    backward_coefficients k;
    if (!ddim) {
      k.cx = r * q * q;
      k.cm = a_next * w;
      k.sigma = s_next * sqrt(w);
    } else {
      k.sigma = eta * s_next * sqrt(w);
      const double keep2 = 1.0 - eta * eta * w;  // (s_next^2 - sigma^2) / s_next^2
      const double c_over_s = q * sqrt(keep2 > 0.0 ? keep2 : 0.0);
      k.cx = c_over_s;
      k.cm = a_next - c_over_s * a;
    }
    k.variance = k.sigma * k.sigma;
    return k;
  }
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
