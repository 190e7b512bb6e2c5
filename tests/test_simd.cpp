// The CPU executor's SIMD packs: vector exp / log / sin / cos against FP64, the per-lane Philox stream and normals
// against the scalar stream, and the samplers on every dispatch target: bit-identical across batch splits and thread
// counts on each target, and within a derived tolerance of the scalar functors (the CUDA kernels' own source).
// Seen failing: with the exp polynomial's last coefficient off by 1e-3 (ExpWithinTwoUlps), with the cosine
// quadrant sign of q = 1 dropped (SinCos), and with the pack's chain ids starting at lane 1 (PhiloxPack).
#include <gtest/gtest.h>

#define DS_SIMD_TARGET 0
#include "src/cpu/simd.hpp"
#include "reference/cpu_target.hpp"
#include "src/cpu/denoiser_jvp.hpp"
#include "src/cpu/radix_sort.hpp"
#include "kernels/langevin.cuh"
#include "kernels/mixture_points.cuh"
#include "kernels/row_stage.cuh"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/observation.hpp>
#include <diffsample/posterior.hpp>

#include "reference/helpers.hpp"

namespace simd = diffsample::cpu::simd_sse2;
using diffsample::kernels::philox_stream;
using namespace diffsample;

namespace {

/// Distance in units in the last place of the float closest to the FP64 value.
double ulps(float got, double want) {
  const float w = static_cast<float>(want);
  const double ulp = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return std::fabs(double(got) - want) / ulp;
}

template <class F>
std::vector<float> map_packs(const std::vector<float>& in, F f) {
  std::vector<float> out(in.size());
  for (std::size_t i = 0; i + simd::lanes <= in.size(); i += simd::lanes) {
    simd::fpack p;
    for (int l = 0; l < simd::lanes; ++l) p.v[l] = in[i + l];
    const simd::fpack r = f(p);
    for (int l = 0; l < simd::lanes; ++l) out[i + l] = r.v[l];
  }
  return out;
}

std::vector<float> uniform_inputs(float lo, float hi, int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = lo + (hi - lo) * (i + 0.5f) / n;
  return v;
}

}  // namespace

TEST(SimdMath, ExpWithinTwoUlps) {
  // Every argument the softmax and the samplers pass lies in [-87.3, 88.7]; below, 0 exactly.
  const auto in = uniform_inputs(-87.3f, 88.7f, 1 << 20);
  const auto out = map_packs(in, [](simd::fpack x) { return simd::ds_exp(x); });
  double worst = 0;
  for (std::size_t i = 0; i < in.size(); ++i) worst = std::max(worst, ulps(out[i], std::exp(double(in[i]))));
  EXPECT_LE(worst, 2.0) << "largest error of exp in ulps";
  const auto edge = map_packs(std::vector<float>{-INFINITY, -1e30f, -88.f, 0.f, 89.f, INFINITY, NAN, 1.f},
                          [](simd::fpack x) { return simd::ds_exp(x); });
  EXPECT_EQ(edge[0], 0.f);
  EXPECT_EQ(edge[1], 0.f);
  EXPECT_EQ(edge[2], 0.f);
  EXPECT_EQ(edge[3], 1.f);
  EXPECT_EQ(edge[4], INFINITY);
  EXPECT_EQ(edge[5], INFINITY);
  EXPECT_TRUE(std::isnan(edge[6]));
}

TEST(SimdMath, LogWithinTwoUlps) {
  // Box-Muller's u in [2^-33, 1], the softmax sums in [1, K], and the whole normal and subnormal range.
  std::vector<float> in;
  for (int e = -149; e < 128; ++e)
    for (int i = 0; i < 4096; ++i) in.push_back(std::ldexp(1.f + i / 4096.f, e));
  while (in.size() % simd::lanes) in.push_back(1.f);
  const auto out = map_packs(in, [](simd::fpack x) { return simd::ds_log(x); });
  double worst = 0, worst_abs = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const double want = std::log(double(in[i]));
    if (std::isinf(want)) continue;
    // Near 1 the result is tiny: measure absolute error there (the polynomial's error is absolute in f = x - 1).
    if (std::fabs(want) < 0.5)
      worst_abs = std::max(worst_abs, std::fabs(out[i] - want) / std::max(std::fabs(want), 0.5 / 8388608.0 * 2));
    else
      worst = std::max(worst, ulps(out[i], want));
  }
  EXPECT_LE(worst, 2.0) << "largest error of log in ulps, |log x| >= 0.5";
  EXPECT_LE(worst_abs, 2.0 * 1.2e-7) << "largest relative error of log, |log x| < 0.5";
  const auto edge = map_packs(std::vector<float>{0.f, -1.f, INFINITY, NAN}, [](simd::fpack x) { return simd::ds_log(x); });
  EXPECT_EQ(edge[0], -INFINITY);
  EXPECT_TRUE(std::isnan(edge[1]));
  EXPECT_EQ(edge[2], INFINITY);
  EXPECT_TRUE(std::isnan(edge[3]));
}

TEST(SimdMath, SinCosOnTheBoxMullerRange) {
  const auto in = uniform_inputs(0.f, 6.2831855f, 1 << 20);
  std::vector<float> s(in.size()), c(in.size());
  for (std::size_t i = 0; i < in.size(); i += simd::lanes) {
    simd::fpack p, ps, pc;
    for (int l = 0; l < simd::lanes; ++l) p.v[l] = in[i + l];
    simd::ds_sincos(p, ps, pc);
    for (int l = 0; l < simd::lanes; ++l) {
      s[i + l] = ps.v[l];
      c[i + l] = pc.v[l];
    }
  }
  double worst = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    worst = std::max(worst, std::fabs(s[i] - std::sin(double(in[i]))));
    worst = std::max(worst, std::fabs(c[i] - std::cos(double(in[i]))));
  }
  EXPECT_LE(worst, std::ldexp(1.0, -22)) << "largest absolute error of sin / cos on [0, 2 pi]";
}

TEST(SimdMath, PhiloxPackEqualsTheScalarStreamAndNormalsAgree) {
  // Uniform bits identical lane by lane; normals within the accuracy of log, sqrt, sin and cos:
  // |z| <= 6.7 (u >= 2^-33), so |dz| <= |z| (2 ulp of log / 2 + sqrt) + sqrt(-2 log u) 2^-22 < 1e-5.
  const std::uint64_t seed = 0x9e3779b97f4a7c15ull, first = (std::uint64_t(1) << 33) - 2;
  for (std::uint64_t step : {0ull, 1ull, 12345ull}) {
    simd::philox_pack pack(seed, first, step);
    std::vector<float> zs(11 * simd::lanes);
    pack.normals(11, [&](int j, simd::fpack z) {
      for (int l = 0; l < simd::lanes; ++l) zs[j * simd::lanes + l] = z.v[l];
    });
    const simd::fpack u = pack.uniform();
    for (int l = 0; l < simd::lanes; ++l) {
      philox_stream s(seed, first + l, step);
      double worst = 0;
      s.normals(11, [&](int j, float z) { worst = std::max(worst, double(std::fabs(z - zs[j * simd::lanes + l]))); });
      EXPECT_LE(worst, 1e-5) << "lane " << l << " step " << step;
      EXPECT_EQ(s.uniform(), u.v[l]) << "lane " << l << " step " << step;
    }
  }
}

namespace {

using diffsample::testing::with_target;

const char* const targets[] = {"scalar", "sse2", "avx2", "avx512"};

std::vector<float> run_langevin(const gaussian_mixture& mix, const std::vector<float>& init, langevin_method m,
                                std::int64_t first, std::int64_t count, int steps) {
  const int d = int(mix.dim());
  std::vector<float> x(init.begin() + first * d, init.begin() + (first + count) * d);
  langevin_options o;
  o.method = m;
  o.step_size = 0.05;
  o.steps = steps;
  o.seed = 11;
  o.first_chain = first;
  langevin(mix, x.data(), {}, count, o, {executor::cpu});
  return x;
}

std::vector<float> run_diffusion(const gaussian_mixture& mix, diffusion_sampler s, std::int64_t first,
                                 std::int64_t count, int steps) {
  std::vector<float> x(count * mix.dim());
  diffusion_options o;
  o.sampler = s;
  o.steps = steps;
  o.seed = 12;
  o.first_chain = first;
  diffusion(mix, x.data(), {}, count, o, {executor::cpu});
  return x;
}

/// Largest |a - b| and how many elements differ by more than tol.
std::pair<double, int> compare(const std::vector<float>& a, const std::vector<float>& b, double tol) {
  double worst = 0;
  int over = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]);
    worst = std::max(worst, e);
    over += e > tol;
  }
  return {worst, over};
}

}  // namespace


namespace {

/// A mixture of K components in dimension d drawn from gen: weights uniform in [0.3, 1.5] (normalised, as logs),
/// means 2 N(0, 1), variances uniform in [0.15, 0.75] (one per component when isotropic), in FP64 and rounded to FP32.
struct random_jvp_mixture {
  int K, d;
  bool iso;
  std::vector<double> lw, mu, var;
  std::vector<float> lwf, muf, varf;
  random_jvp_mixture(int K_, int d_, bool iso_, std::mt19937& gen, std::normal_distribution<double>& normal,
                     std::uniform_real_distribution<double>& unif)
      : K(K_), d(d_), iso(iso_), lw(K_), mu(std::size_t(K_) * d_), var(iso_ ? K_ : std::size_t(K_) * d_) {
    double total = 0;
    for (int k = 0; k < K; ++k) total += (lw[k] = unif(gen));
    for (int k = 0; k < K; ++k) lw[k] = std::log(lw[k] / total);
    for (double& m : mu) m = 2.0 * normal(gen);
    for (double& v : var) v = unif(gen) * 0.5;
    lwf.assign(lw.begin(), lw.end());
    muf.assign(mu.begin(), mu.end());
    varf.assign(var.begin(), var.end());
  }
  diffsample::kernels::mixture_view<float> view_f32() const { return {lwf.data(), muf.data(), varf.data(), K, d, iso}; }
  diffsample::kernels::mixture_view<double> view_f64() const { return {lw.data(), mu.data(), var.data(), K, d, iso}; }
};

/// SimdJvp's derived rounding bound of the packed product at one point, per coordinate (see the test below).
std::vector<double> jvp_bound(const diffsample::kernels::mixture_view<double>& md, const std::vector<double>& xd,
                              const std::vector<double>& vd, double a, double s) {
  namespace kn = diffsample::kernels;
  const int K = md.components, d = md.dim;
  std::vector<double> r(K), q(K), delta(K * d), score(d, 0.0), e(K * d), bound(d, 0.0);
  double mx = -INFINITY;
  for (int k = 0; k < K; ++k) {
    r[k] = kn::component_logit(md, k, xd.data(), a, s * s);
    mx = std::max(mx, r[k]);
    q[k] = 0;
    for (int j = 0; j < d; ++j) {
      const double c = a * a * md.variance(k, j) + s * s, diff = a * md.mean(k, j) - xd[j];
      q[k] += diff * diff / c;
      delta[k * d + j] = diff / c;
    }
  }
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += (r[k] = std::exp(r[k] - mx));
  for (int k = 0; k < K; ++k) r[k] /= sum;
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < d; ++j) score[j] += r[k] * delta[k * d + j];
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < d; ++j) e[k * d + j] = delta[k * d + j] - score[j];
  const double ratio = s * s / a;
  for (int j = 0; j < d; ++j) {
    for (int k = 0; k < K; ++k) {
      double E = 0, F = 0;
      for (int i = 0; i < d; ++i) {
        E += std::fabs(e[k * d + i] * vd[i]);
        F += (std::fabs(delta[k * d + i]) + std::fabs(score[i])) * std::fabs(vd[i]);
      }
      const double c = a * a * md.variance(k, j) + s * s;
      const double T = a * md.variance(k, j) / c * std::fabs(vd[j]) + ratio * std::fabs(e[k * d + j]) * E;
      bound[j] += r[k] * (((d + 2) * q[k] / 2 + 64) * T +
                          8 * ratio * ((std::fabs(delta[k * d + j]) + std::fabs(score[j])) * E +
                                       std::fabs(e[k * d + j]) * F));
    }
    bound[j] *= std::ldexp(1.0, -24);
  }
  return bound;
}

/// The derived rounding bound of jvp_bound for the products' present form, J v = sum_k r_k (a v_k / c_k) v + a s^2
/// sum_k r_k f_k (f_k . v), f_k = n_k - nbar, n_kj = (mu_kj - z_j) / c_kj + (x_j - a z_j) a (v_kj - v_ref,j) /
/// (c_kj c_ref,j) with the reference component `ref` (its mean z when `shift`, else z = 0): the same steps with
/// delta_k -> n_k (magnitude N_kj, the sum of its two terms' magnitudes: what its roundings scale with), score ->
/// nbar, e_k -> f_k, s^2 / a -> a s^2.
std::vector<double> jvp_bound_n(const diffsample::kernels::mixture_view<double>& md, const std::vector<double>& xd,
                                const std::vector<double>& vd, double a, double s, int ref, bool shift) {
  namespace kn = diffsample::kernels;
  const int K = md.components, d = md.dim;
  std::vector<double> r(K), q(K), n(K * d), N(K * d), nbar(d, 0.0), Nbar(d, 0.0), f(K * d), bound(d, 0.0);
  double mx = -INFINITY;
  for (int k = 0; k < K; ++k) {
    r[k] = kn::component_logit(md, k, xd.data(), a, s * s);
    mx = std::max(mx, r[k]);
    q[k] = 0;
    for (int j = 0; j < d; ++j) {
      const double c = a * a * md.variance(k, j) + s * s, cr = a * a * md.variance(ref, j) + s * s;
      const double diff = a * md.mean(k, j) - xd[j], z = shift ? md.mean(ref, j) : 0.0;
      q[k] += diff * diff / c;
      const double t1 = (md.mean(k, j) - z) / c, t2 = (xd[j] - a * z) * a * (md.variance(k, j) - md.variance(ref, j)) / (c * cr);
      n[k * d + j] = t1 + t2;
      N[k * d + j] = std::fabs(t1) + std::fabs(t2);
    }
  }
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += (r[k] = std::exp(r[k] - mx));
  for (int k = 0; k < K; ++k) r[k] /= sum;
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < d; ++j) {
      nbar[j] += r[k] * n[k * d + j];
      Nbar[j] += r[k] * N[k * d + j];
    }
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < d; ++j) f[k * d + j] = n[k * d + j] - nbar[j];
  const double ratio = a * s * s;
  for (int j = 0; j < d; ++j) {
    for (int k = 0; k < K; ++k) {
      double E = 0, F = 0;
      for (int i = 0; i < d; ++i) {
        E += std::fabs(f[k * d + i] * vd[i]);
        F += (N[k * d + i] + Nbar[i]) * std::fabs(vd[i]);
      }
      const double c = a * a * md.variance(k, j) + s * s;
      const double T = a * md.variance(k, j) / c * std::fabs(vd[j]) + ratio * std::fabs(f[k * d + j]) * E;
      bound[j] += r[k] * (((d + 2) * q[k] / 2 + 64) * T +
                          8 * ratio * ((N[k * d + j] + Nbar[j]) * E + std::fabs(f[k * d + j]) * F));
    }
    bound[j] *= std::ldexp(1.0, -24);
  }
  return bound;
}

/// The component of the largest FP64 logit at x (the kernel's top, up to near-ties).
int top_component(const diffsample::kernels::mixture_view<double>& md, const std::vector<double>& xd, double a,
                  double s) {
  int top = 0;
  double best = -INFINITY;
  for (int k = 0; k < md.components; ++k) {
    const double l = diffsample::kernels::component_logit(md, k, xd.data(), a, s * s);
    if (l > best) best = l, top = k;
  }
  return top;
}

}  // namespace

// The packed denoiser Jacobian-vector product (src/cpu/denoiser_jvp.hpp, two passes over the components, centred
// deltas, `count` vectors at once) against kernels::mixture_denoiser_jvp in FP64 (the closed form), on an isotropic
// and a diagonal mixture (45 components in d = 5: five chunks of 8 with a partial last one), at the noisy end of a
// diffusion (a = 0.02, where the uncentred forms lose precision), at a = 0.3 and at a clean channel, 4 points x 3
// vectors per pack on the SSE2 pack. Rounding bound per coordinate, derived: the FP32 logit of component k carries at
// most (d + 2) q_k / 2 ulps of error (q_k its Mahalanobis sum, d + 2 roundings in the sum; the per-channel constants
// are FP64-folded), which moves weight r_k relatively by as much; every other step (the exps' 2 ulps, the products
// and sums of at most 45 chunked terms, the final combination) adds at most 64 ulps of the term's magnitude; the
// centred delta e_kj = delta_kj - score_j is rounded within 8 ulps of |delta_kj| + |score_j| (an error in the score
// shifts every e_k alike and cancels to first order, since sum_k r_k e_k = 0). With u = 2^-24, E_k = sum_i |e_ki v_i|
// and F_k = sum_i (|delta_ki| + |score_i|) |v_i|:
//   |err_j| <= u sum_k r_k [((d + 2) q_k / 2 + 64) ((a v_kj / c_kj) |v_j| + (s^2 / a) |e_kj| E_k)
//                           + 8 (s^2 / a) ((|delta_kj| + |score_j|) E_k + |e_kj| F_k)].
// The scalar functor in FP32 is off by 1e-3 at a = 0.02 on such a mixture (uncentred: (|x| / (a |mu_k - mu_l|))^2
// ulps), the packed product by 4.5e-7.
// Seen failing with the second pass's weights not rescaled to the final maximum, and with the diagonal
// coefficient of v missing its 1 / c_kj.
TEST(SimdJvp, PackedProductWithinRoundingOfTheFp64ClosedForm) {
  namespace kn = diffsample::kernels;
  const int d = 5, K = 45, count = 3;
  std::mt19937 gen(5);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.3, 1.5);
  for (const bool iso : {true, false}) {
    const random_jvp_mixture mix(K, d, iso, gen, normal, unif);
    const kn::mixture_view<float> mf = mix.view_f32();
    const kn::mixture_view<double> md = mix.view_f64();
    for (const auto& [a, s] : {std::pair<float, float>{0.02f, 0.9998f}, {0.3f, 0.95f}, {0.95f, 0.3f}}) {
      std::vector<float> table(kn::mixture_channels::table_floats(mf, 1));
      const kn::mixture_channels t = kn::mixture_channels::in(mf, 1, table.data());
      for (int k = 0; k < K; ++k) kn::channel_table_functor<kn::langevin_channel>{t, {a, s}}(k);
      const kn::channel_view ch = t.at(0, a, s);
      double worst_ratio = 0;
      for (int rep = 0; rep < 8; ++rep) {
        simd::fpack x[d], v[count * d], out[count * d];
        std::vector<simd::fpack> scratch(simd::denoiser_jvp_scratch(d, count, K));
        for (int j = 0; j < d; ++j)
          for (int l = 0; l < simd::lanes; ++l) x[j].v[l] = float(2.5 * normal(gen));
        for (int e = 0; e < count * d; ++e)
          for (int l = 0; l < simd::lanes; ++l) v[e].v[l] = float(normal(gen));
        simd::channel_denoiser_jvp(ch, x, d, v, count, out, scratch.data());
        for (int l = 0; l < simd::lanes; ++l) {
          std::vector<double> xd(d);
          for (int j = 0; j < d; ++j) xd[j] = x[j].v[l];
          // FP64 responsibilities, deltas and score for the bound.
          std::vector<double> vd(d);
          for (int qv = 0; qv < count; ++qv) {
            std::vector<double> ref(d);
            for (int j = 0; j < d; ++j) vd[j] = v[qv * d + j].v[l];
            kn::mixture_denoiser_jvp(md, xd.data(), vd.data(), double(a), double(s), ref);
            const std::vector<double> bounds = jvp_bound(md, xd, vd, a, s);
            for (int j = 0; j < d; ++j) {
              const double bound = bounds[j];
              const double err = std::fabs(double(out[qv * d + j].v[l]) - ref[j]);
              EXPECT_LE(err, bound) << (iso ? "isotropic" : "diagonal") << " a " << a << " lane " << l
                                    << " vector " << qv << " coordinate " << j << ": " << out[qv * d + j].v[l]
                                    << " against " << ref[j];
              worst_ratio = std::max(worst_ratio, err / bound);
            }
          }
        }
      }
      std::printf("%s, a = %.2f: largest error / bound %.3g\n", iso ? "isotropic" : "diagonal", a, worst_ratio);
    }
  }
}


// The three FP32 products at the noisy end of a diffusion, a = 1e-3 down to 1.9e-22 (an Ornstein-Uhlenbeck horizon
// of 50; s = 1 in FP32): the packed product (SSE2 pack, 4 points x 3 vectors), kernels::channel_jvp (the CUDA
// executor's and the scalar target's) and the public denoiser_jvp on every CPU target, against the FP64 closed form
// (itself accurate there: Mixture.Fp64JvpAccurateAtTinySignalScales) within jvp_bound_n, the derived bound of the
// present form (relative to J v, which is of size a); on the mixtures of PackedProductWithinRoundingOfTheFp64ClosedForm
// (45 components, isotropic and diagonal). At a = 1e-40 (below FP32's normal range) every path gives finite values
// of at most 1e-30. Seen failing with the products formed from delta_k = (a mu_k - x) / c_k and s^2 / a: the packed
// product off by 1e6 .. 1e22 times the bound from a = 1e-6 on (J v of O(1) against a true 1e-11 at a = 1e-13; NaN
// samples from DPS, Pi-GDM and TMPD on an OU horizon of 50), channel_jvp by up to 5e3 times it, and NaN at a = 1e-40.
TEST(SimdJvp, TinySignalScalesWithinTheDerivedBound) {
  namespace kn = diffsample::kernels;
  const int d = 5, K = 45, count = 3;
  std::mt19937 gen(15);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.3, 1.5);
  for (const bool iso : {true, false}) {
    const random_jvp_mixture mix(K, d, iso, gen, normal, unif);
    const kn::mixture_view<float> mf = mix.view_f32();
    const kn::mixture_view<double> md = mix.view_f64();
    // The public API over the same (FP32-rounded) parameters.
    std::vector<double> w(K), mu64(mix.muf.begin(), mix.muf.end()), var64(mix.varf.begin(), mix.varf.end());
    for (int k = 0; k < K; ++k) w[k] = std::exp(mix.lw[k]);
    const gaussian_mixture pub(d, w, mu64, var64);
    for (const double a64 : {1e-3, 1e-6, 1e-13, std::exp(-50.0), 1e-40}) {
      const float a = float(a64), s = float(std::sqrt(1 - a64 * a64));
      const bool tiny = a64 < 1e-38;
      std::vector<float> table(kn::mixture_channels::table_floats(mf, 1));
      const kn::mixture_channels t = kn::mixture_channels::in(mf, 1, table.data());
      for (int k = 0; k < K; ++k) kn::channel_table_functor<kn::langevin_channel>{t, {a, s}}(k);
      const kn::channel_view ch = t.at(0, a, s);
      double worst_packed = 0, worst_kernel = 0, worst_public = 0;
      auto check = [&](const char* what, double got, double ref, double bound, double& worst) {
        if (tiny) {
          EXPECT_TRUE(std::isfinite(got) && std::fabs(got) <= 1e-30) << what << " a " << a64 << ": " << got;
          return;
        }
        const double err = std::fabs(got - ref);
        EXPECT_LE(err, bound) << what << (iso ? " isotropic" : " diagonal") << " a " << a64 << ": " << got
                              << " against " << ref;
        worst = std::max(worst, err / bound);
      };
      for (int rep = 0; rep < 4; ++rep) {
        simd::fpack x[d], v[count * d], out[count * d];
        std::vector<simd::fpack> scratch(simd::denoiser_jvp_scratch(d, count, K));
        for (int j = 0; j < d; ++j)
          for (int l = 0; l < simd::lanes; ++l) x[j].v[l] = float(2.5 * normal(gen));
        for (int e = 0; e < count * d; ++e)
          for (int l = 0; l < simd::lanes; ++l) v[e].v[l] = float(normal(gen));
        simd::channel_denoiser_jvp(ch, x, d, v, count, out, scratch.data());
        for (int l = 0; l < simd::lanes; ++l) {
          std::vector<float> xf(d), vf(d), kout(d), pout(d);
          std::vector<double> xd(d), vd(d), ref(d);
          for (int j = 0; j < d; ++j) xd[j] = xf[j] = x[j].v[l];
          const int top = top_component(md, xd, a, s);
          for (int qv = 0; qv < count; ++qv) {
            for (int j = 0; j < d; ++j) vd[j] = vf[j] = v[qv * d + j].v[l];
            kn::mixture_denoiser_jvp(md, xd.data(), vd.data(), double(a), double(s), ref);
            const std::vector<double> b0 = jvp_bound_n(md, xd, vd, a, s, 0, false),
                                      bt = jvp_bound_n(md, xd, vd, a, s, top, true);
            const kn::strided_vec<const float> xs{xf.data(), 1, d}, vs{vf.data(), 1, d};
            kn::strided_vec<float> os{kout.data(), 1, d};
            kn::channel_jvp<float>(ch, xs, vs, os);
            for (int j = 0; j < d; ++j) {
              check("packed", out[qv * d + j].v[l], ref[j], b0[j], worst_packed);
              check("channel_jvp", kout[j], ref[j], std::max(b0[j], bt[j]), worst_kernel);
            }
            for (const char* tg : targets) {
              with_target(tg, [&] {
                pub.denoiser_jvp(pout.data(), 1, xf.data(), vf.data(), channel{a, s}, {executor::cpu});
              });
              for (int j = 0; j < d; ++j) check(tg, pout[j], ref[j], std::max(b0[j], bt[j]), worst_public);
            }
          }
        }
      }
      std::printf("%s, a = %.3g: largest error / bound: packed %.3g, channel_jvp %.3g, public %.3g\n",
                  iso ? "isotropic" : "diagonal", a64, worst_packed, worst_kernel, worst_public);
    }
  }
}


// Every guided sampler on an Ornstein-Uhlenbeck schedule of horizon 50 (a = e^-50 = 1.9e-22 at the first point;
// uniform grid, 100 steps, 128 particles) with a 25-component grid prior (modes 8 apart) in d = 10 and d_y = 2, on
// every CPU target: every sample finite. Seen failing before the JVPs were formed without s^2 / a and delta_k =
// (a mu_k - x) / c_k: DPS, Pi-GDM and TMPD all NaN on the SSE2, AVX2 and AVX-512 targets (the packed J v of O(1e9)
// at a = 2e-22, against a true 1e-19); DDRM was NaN on every target before its kernels left the VE scaling.
TEST(SimdGuided, EverySamplerFiniteOnAnOuHorizonOf50) {
  const int d = 10, dy = 2;
  std::vector<double> w(25);
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> u(0.1, 1.0);
  std::normal_distribution<double> z;
  for (auto& e : w) e = u(gen);
  const gaussian_mixture prior = grid_mixture(d, 5, 8.0, 1.0, w);
  guided_problems pr;
  pr.problems = 1;
  pr.d_y = dy;
  pr.A.resize(dy * d);
  for (auto& e : pr.A) e = z(gen);
  pr.sigma_y = {0.7};
  pr.y = {3.0, -2.0};
  for (const char* t : targets) {
    with_target(t, [&] {
      for (const guided_sampler s :
           {guided_sampler::smc, guided_sampler::dps, guided_sampler::pigdm, guided_sampler::diffpir,
            guided_sampler::skrock, guided_sampler::tmpd, guided_sampler::ddrm, guided_sampler::dcps}) {
        guided_options o;
        o.sampler = s;
        o.particles = 128;
        o.steps = 100;
        o.seed = 3;
        // SKRock has no diffusion grid (and refuses a schedule): it runs on its own
        if (s != guided_sampler::skrock) o.schedule = noise_schedule::ornstein_uhlenbeck(50.0);
        std::vector<float> x(o.particles * d);
        guided_outputs out;
        out.samples = x.data();
        guided_sample(prior, out, pr, o, {executor::cpu});
        std::int64_t bad = 0;
        for (float e : x) bad += !std::isfinite(e);
        EXPECT_EQ(bad, 0) << to_string(s) << " on " << t;
      }
    });
  }
}

// DIFFSAMPLE_CPU_TARGET with a value that names no target (here "Scalar": the names are lower case) runs the widest
// target, as without the variable, and says so once per process on stderr, naming the value and the valid names.
// Seen failing before: nothing was said, so a run meant for the scalar target silently ran the widest one.
TEST(SimdTargets, AnUnknownTargetNameIsReportedOnce) {
  const auto mix = grid_mixture(2, 3, 2.0, 0.5);
  const std::vector<float> x = {0.3f, -0.2f, 1.0f, 2.0f};
  std::vector<float> widest(4), named(4);
  with_target(nullptr, [&] {
    mix.evaluate(widest.data(), 2, x.data(), channel{0.5, 0.8}, quantity::score, {executor::cpu});
  });
  with_target("Scalar", [&] {
    ::testing::internal::CaptureStderr();
    mix.evaluate(named.data(), 2, x.data(), channel{0.5, 0.8}, quantity::score, {executor::cpu});
    mix.evaluate(named.data(), 2, x.data(), channel{0.5, 0.8}, quantity::score, {executor::cpu});
    const std::string said = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(said.find("DIFFSAMPLE_CPU_TARGET=Scalar is not one of scalar, sse2, avx2, avx512"), std::string::npos)
        << said;
    EXPECT_EQ(said.find("DIFFSAMPLE_CPU_TARGET", said.find("DIFFSAMPLE_CPU_TARGET") + 1), std::string::npos)
        << "said more than once: " << said;
  });
  EXPECT_EQ(named, widest);
}

// kernels::channel_jvp, the CUDA executor's J v (DPS, Pi-GDM, TMPD, DCPS, the moment and twisted potentials) and the
// scalar target's, against the FP64 closed form within the packed product's derived rounding bound (above), on the
// mixtures of PackedProductWithinRoundingOfTheFp64ClosedForm (45 components, isotropic and diagonal) at a = 0.003,
// 0.02, 0.3 and 0.95 (the noisy end is where J v's terms cancel). Seen failing at a = 0.02 and 0.003 with g_k formed
// as delta_k . v - score . v (errors up to 1e2 times the bound): that difference of two terms of size |x| |v| / c
// left its rounding in every g_k alike, which the accumulation's -x / c parts multiplied again.
TEST(SimdJvp, ChannelJvpOfTheCudaExecutorWithinTheDerivedBound) {
  namespace kn = diffsample::kernels;
  const int d = 5, K = 45;
  std::mt19937 gen(6);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.3, 1.5);
  for (const bool iso : {true, false}) {
    const random_jvp_mixture mix(K, d, iso, gen, normal, unif);
    const kn::mixture_view<float> mf = mix.view_f32();
    const kn::mixture_view<double> md = mix.view_f64();
    for (const auto& [a, s] :
         {std::pair<float, float>{0.003f, 1.0f}, {0.02f, 0.9998f}, {0.3f, 0.95f}, {0.95f, 0.3f}}) {
      std::vector<float> table(kn::mixture_channels::table_floats(mf, 1));
      const kn::mixture_channels t = kn::mixture_channels::in(mf, 1, table.data());
      for (int k = 0; k < K; ++k) kn::channel_table_functor<kn::langevin_channel>{t, {a, s}}(k);
      const kn::channel_view ch = t.at(0, a, s);
      double worst_ratio = 0;
      for (int rep = 0; rep < 64; ++rep) {
        std::vector<float> x(d), v(d), out(d);
        for (float& e : x) e = float(2.5 * normal(gen));
        for (float& e : v) e = float(normal(gen));
        const kn::strided_vec<const float> xs{x.data(), 1, d}, vs{v.data(), 1, d};
        kn::strided_vec<float> os{out.data(), 1, d};
        kn::channel_jvp<float>(ch, xs, vs, os);
        const std::vector<double> xd(x.begin(), x.end()), vd(v.begin(), v.end());
        std::vector<double> ref(d);
        kn::mixture_denoiser_jvp(md, xd.data(), vd.data(), double(a), double(s), ref);
        const std::vector<double> bounds = jvp_bound(md, xd, vd, a, s);
        for (int j = 0; j < d; ++j) {
          const double err = std::fabs(double(out[j]) - ref[j]);
          EXPECT_LE(err, bounds[j]) << (iso ? "isotropic" : "diagonal") << " a " << a << " point " << rep
                                    << " coordinate " << j << ": " << out[j] << " against " << ref[j];
          worst_ratio = std::max(worst_ratio, err / bounds[j]);
        }
      }
      std::printf("channel_jvp, %s, a = %.3f: largest error / bound %.3g\n", iso ? "isotropic" : "diagonal", a,
                  worst_ratio);
    }
  }
}

// kernels::mixture_jvp_functor, the CUDA executor's public denoiser_jvp (and the CPU executor's scalar target), run on
// the host as the launcher runs it on the device: the one-channel table laid out by jvp_channel_table and filled by
// channel_table_functor (FP64, rounded to float), then the functor over 64 row-major points at once; against the
// FP64 closed form within the packed product's derived rounding bound (jvp_bound), on the mixtures of
// PackedProductWithinRoundingOfTheFp64ClosedForm (45 components, isotropic and diagonal) at a = 0.003, 0.02, 0.3
// and 0.95. Seen failing with the functor's former body (kernels::mixture_denoiser_jvp in FP32 on the mixture's
// parameters, g_k = delta_k . v - score . v): up to 61 times the bound at a = 0.003, 15 at 0.02, 1.9 at 0.3.
TEST(SimdJvp, PublicJvpFunctorOfTheCudaExecutorWithinTheDerivedBound) {
  namespace kn = diffsample::kernels;
  const int d = 5, K = 45, n = 64;
  std::mt19937 gen(7);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.3, 1.5);
  for (const bool iso : {true, false}) {
    const random_jvp_mixture mix(K, d, iso, gen, normal, unif);
    const kn::mixture_view<float> mf = mix.view_f32();
    const kn::mixture_view<double> md = mix.view_f64();
    for (const auto& [a, s] :
         {std::pair<float, float>{0.003f, 1.0f}, {0.02f, 0.9998f}, {0.3f, 0.95f}, {0.95f, 0.3f}}) {
      std::vector<float> table(std::size_t(kn::jvp_table_floats(mf)));
      ASSERT_EQ(table.size(), std::size_t(K) * (iso ? 4 : 4 + d));
      const kn::mixture_channels t = kn::jvp_channel_table(mf, table.data());
      for (int k = 0; k < K; ++k) kn::channel_table_functor<kn::langevin_channel>{t, {a, s}}(k);
      std::vector<float> x(n * d), v(n * d), out(n * d, std::nanf(""));
      for (float& e : x) e = float(2.5 * normal(gen));
      for (float& e : v) e = float(normal(gen));
      const kn::mixture_jvp_functor f{t.at(0, a, s), x.data(), v.data(), out.data(), d};
      for (std::int64_t i = 0; i < n; ++i) f(i);
      double worst_ratio = 0;
      for (int i = 0; i < n; ++i) {
        const std::vector<double> xd(x.begin() + i * d, x.begin() + (i + 1) * d),
            vd(v.begin() + i * d, v.begin() + (i + 1) * d);
        std::vector<double> ref(d);
        kn::mixture_denoiser_jvp(md, xd.data(), vd.data(), double(a), double(s), ref);
        const std::vector<double> bounds = jvp_bound(md, xd, vd, a, s);
        for (int j = 0; j < d; ++j) {
          const double err = std::fabs(double(out[i * d + j]) - ref[j]);
          EXPECT_LE(err, bounds[j]) << (iso ? "isotropic" : "diagonal") << " a " << a << " point " << i
                                    << " coordinate " << j << ": " << out[i * d + j] << " against " << ref[j];
          worst_ratio = std::max(worst_ratio, err / bounds[j]);
        }
      }
      std::printf("mixture_jvp_functor, %s, a = %.3f: largest error / bound %.3g\n", iso ? "isotropic" : "diagonal",
                  a, worst_ratio);
    }
  }
}

namespace {
/// for_each_row_staged_kernel's blocks run on the host, thread by thread between its barriers, in block order (each
/// block's three phases: every thread's copies in, every thread's functor call on the staged views, every thread's
/// copies out), with the stage's unwritten floats NaN.
template <class F>
void run_row_staged_on_host(const F& f, std::int64_t n, int threads) {
  namespace kn = diffsample::kernels;
  const kn::row_stage st = kn::row_stage::of(threads);
  const int d = f.row_width(), inputs = f.staged_inputs();
  float* const out_rows = f.staged_output();
  // The kernel's stage: the inputs' parts, and the output's only when it is staged (a null view otherwise).
  std::vector<float> staged(std::size_t(st.pitch) * d * (inputs + (out_rows != nullptr)), std::nanf(""));
  float* const staged_out = out_rows != nullptr ? staged.data() + std::size_t(inputs) * d * st.pitch : nullptr;
  for (std::int64_t first = 0; first < n; first += threads) {
    const int rows = int(std::min<std::int64_t>(threads, n - first));
    for (int a = 0; a < inputs; ++a)
      for (int tid = 0; tid < threads; ++tid)
        st.load(f.staged_input(a) + first * d, rows, d, tid, staged.data() + std::size_t(a) * d * st.pitch);
    for (int tid = 0; tid < rows; ++tid)
      f(first + tid, kn::strided_vec<const float>{staged.data() + tid, st.pitch, d},
        kn::strided_vec<const float>{staged.data() + std::size_t(inputs - 1) * d * st.pitch + tid, st.pitch,
                                             d},
        kn::strided_vec<float>{staged_out != nullptr ? staged_out + tid : nullptr, st.pitch, d});
    if (out_rows != nullptr)
      for (int tid = 0; tid < threads; ++tid) st.store(staged_out, rows, d, tid, out_rows + first * d);
  }
}
}  // namespace

// The CUDA executor's evaluate() and denoiser_jvp() stage each block's rows through shared memory
// (kernels/row_stage.cuh, for_each_row_staged_kernel): their blocks run on the host as above (the block sizes the
// launcher picks: 256 rows at d = 8 and 13, 32 at d = 100, where the stage takes 33 x 2 d or 3 d floats; three
// blocks, the last partial) give the functors' results on the global rows bit for bit, for the score, the
// denoiser and the log-density (written by the functor, not staged) and the JVP of an isotropic and a diagonal
// mixture. Seen failing with the stage's pitch one float short (rows overlapping) and with the copy out's rows
// taken from the next row's.
TEST(RowStaging, StagedBlocksGiveTheGlobalRowsResultsBitForBit) {
  namespace kn = diffsample::kernels;
  std::mt19937 gen(11);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.3, 1.5);
  EXPECT_EQ(kn::row_staged_block(256, 4, 8), 0);             // narrow rows: the direct kernel
  EXPECT_EQ(kn::row_staged_block(256, 100, 200), 32);        // 33 x 200 floats = 26,400 bytes
  EXPECT_EQ(kn::row_staged_block(256, 124, 372), 32);        // 33 x 372 x 4 = 49,104 <= 49,152
  EXPECT_EQ(kn::row_staged_block(256, 125, 375), 0);         // a warp's stage past 48 KiB: the direct kernel
  EXPECT_EQ(kn::row_staged_block(256, 10, 20), 256);
  EXPECT_EQ(kn::row_staged_block(128, 40, 80), 128);         // 129 x 80 x 4 = 41,280
  EXPECT_EQ(kn::row_staged_block(256, 40, 80), 128);         // 257 x 80 x 4 = 82,240 > 48 KiB; 160 .. 224 too
  for (const int d : {8, 13, 100}) {
    for (const bool iso : {true, false}) {
      const random_jvp_mixture mix(7, d, iso, gen, normal, unif);
      const kn::mixture_view<float> mf = mix.view_f32();
      const float a = 0.8f, s = 0.6f;
      const int threads = kn::row_staged_block(256, d, 2 * d);
      ASSERT_GE(threads, 32) << d;
      const std::int64_t n = 2 * threads + 7;
      std::vector<float> x(n * d), v(n * d);
      for (float& e : x) e = float(2.5 * normal(gen));
      for (float& e : v) e = float(normal(gen));
      for (const quantity q : {quantity::score, quantity::denoiser, quantity::log_density}) {
        const std::size_t width = q == quantity::log_density ? 1 : d;
        std::vector<float> direct(n * width, std::nanf("")), staged(n * width, std::nanf(""));
        const kn::mixture_evaluate_functor fd{mf, x.data(), direct.data(), a, s, q};
        for (std::int64_t i = 0; i < n; ++i) fd(i);
        run_row_staged_on_host(kn::mixture_evaluate_functor{mf, x.data(), staged.data(), a, s, q}, n, threads);
        ASSERT_EQ(std::memcmp(direct.data(), staged.data(), direct.size() * sizeof(float)), 0)
            << "evaluate " << int(q) << ", d " << d << (iso ? ", isotropic" : ", diagonal");
      }
      std::vector<float> table(std::size_t(kn::jvp_table_floats(mf)));
      const kn::mixture_channels t = kn::jvp_channel_table(mf, table.data());
      for (int k = 0; k < mix.K; ++k) kn::channel_table_functor<kn::langevin_channel>{t, {a, s}}(k);
      const int jvp_threads = kn::row_staged_block(256, d, 3 * d);
      ASSERT_GE(jvp_threads, 32) << d;
      std::vector<float> direct(n * d, std::nanf("")), staged(n * d, std::nanf(""));
      const kn::mixture_jvp_functor fd{t.at(0, a, s), x.data(), v.data(), direct.data(), d};
      for (std::int64_t i = 0; i < n; ++i) fd(i);
      run_row_staged_on_host(kn::mixture_jvp_functor{t.at(0, a, s), x.data(), v.data(), staged.data(), d}, n,
                             jvp_threads);
      ASSERT_EQ(std::memcmp(direct.data(), staged.data(), direct.size() * sizeof(float)), 0)
          << "jvp, d " << d << (iso ? ", isotropic" : ", diagonal");
    }
  }
}

// The mixture's public denoiser_jvp on the CPU executor runs the packed product on every SIMD target (the scalar
// target kernels::mixture_jvp_functor): on a 3^5 grid mixture (spacing 2, variance 0.5; 243 components, a partial
// last chunk) at a = 0.05 and a = 0.8, 203 points (no multiple of a pack width), bit-identical across 1 and 2
// threads and across a split of the points (37 + 166), and within SimdJvp's derived rounding bound (below) of
// denoiser_jvp_fp64 at every coordinate, the scalar target included: seen failing
// there at a = 0.05 while its g_k = delta_k . v - score . v was a rounded difference of two terms of size |x| |v| / c
// ((|x| / (a |mu_k - mu_l|))^2 ulps lost, ~1e-3 at a = 0.05).
// Seen failing with the packed path reading v from the rows of x.
TEST(SimdJvp, PublicProductOnEveryTargetBitIdenticalAcrossSplitsAndNearFp64) {
  const int d = 5;
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  const std::int64_t n = 203;
  std::mt19937 gen(9);
  std::normal_distribution<float> normal;
  std::vector<float> x(n * d), v(n * d);
  for (auto& e : x) e = 1.3f * normal(gen);
  for (auto& e : v) e = normal(gen);
  const std::vector<double> xd(x.begin(), x.end()), vd(v.begin(), v.end());
  const std::vector<double> lw64 = [&] {
    std::vector<double> w(mix.weights());
    for (double& e : w) e = std::log(e);
    return w;
  }();
  const diffsample::kernels::mixture_view<double> md{lw64.data(), mix.means().data(), mix.variances().data(),
                                                     int(mix.components()), d, mix.isotropic()};
  for (const double a : {0.05, 0.8}) {
    const channel ch{a, std::sqrt(1 - a * a)};
    std::vector<double> ref(n * d);
    mix.denoiser_jvp_fp64(ref.data(), n, xd.data(), vd.data(), ch);
    for (const char* t : targets) {
      with_target(t, [&] {
        std::vector<float> whole(n * d), parts(n * d), one(n * d);
        mix.denoiser_jvp(whole.data(), n, x.data(), v.data(), ch, {executor::cpu});
        mix.denoiser_jvp(parts.data(), 37, x.data(), v.data(), ch, {executor::cpu});
        mix.denoiser_jvp(parts.data() + 37 * d, n - 37, x.data() + 37 * d, v.data() + 37 * d, ch, {executor::cpu});
        omp_set_num_threads(1);
        mix.denoiser_jvp(one.data(), n, x.data(), v.data(), ch, {executor::cpu});
        omp_set_num_threads(2);
        EXPECT_EQ(whole, parts) << t << " a " << a << ": split";
        EXPECT_EQ(whole, one) << t << " a " << a << ": thread counts";
        double worst = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          const std::vector<double> xi(xd.begin() + i * d, xd.begin() + (i + 1) * d),
              vi(vd.begin() + i * d, vd.begin() + (i + 1) * d);
          const std::vector<double> bound = jvp_bound(md, xi, vi, a, ch.s);
          for (int j = 0; j < d; ++j) {
            const double e = std::fabs(whole[i * d + j] - ref[i * d + j]);
            worst = std::max(worst, e / bound[j]);
            EXPECT_LE(e, bound[j]) << t << " a " << a << " point " << i << " coordinate " << j;
          }
        }
        std::printf("%s a = %.2f: largest |J v - FP64| / bound %.3g\n", t, a, worst);
      });
    }
  }
}

// At a = 0 (s > 0) every path of the public evaluate() and denoiser_jvp() on the CPU executor (each SIMD target;
// the direct path for both variance forms, the gemm path for the isotropic mixture when a BLAS is available) gives
// the closed forms: log p = log N(x; 0, s^2 I), score -x / s^2, denoiser the prior mean sum_k w_k mu_k, J v = 0
// exactly. FP32 tolerances: the log-density and score are one Gaussian term each (1e-5 relative); the denoiser is
// sum_k r_k mu_k / sum_k r_k with r_k = exp(logit_k - max), whose FP32 logits |x|^2 / (2 s^2) ~ 40 are rounded to
// ~4e-6 absolute, so 2e-5 relative plus 2e-5 of the largest mean. Seen failing before a = 0 was accepted
// (invalid_argument "ch.a: must be positive"), and with the packed JVP's s^2 / a left unguarded (NaN on every
// target).
TEST(SimdTargetsZeroSignal, EveryPathGivesTheClosedFormsAtAZero) {
  const int d = 7, n = 37;
  const double s = 0.6;
  std::mt19937 gen(4);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> u(0.3, 1.5);
  std::vector<float> x(n * d), v(n * d);
  for (auto& e : x) e = 1.2f * normal(gen);
  for (auto& e : v) e = normal(gen);
  for (bool iso : {true, false}) {
    const int K = 11;
    std::vector<double> w(K), mu(K * d), var(iso ? K : K * d);
    for (auto& e : w) e = u(gen);
    for (auto& e : mu) e = 3 * u(gen) - 2.5;
    for (auto& e : var) e = u(gen);
    const gaussian_mixture mix(d, w, mu, var);
    std::vector<double> mean(d, 0.0);
    double mmax = 0;
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < d; ++j) mean[j] += mix.weights()[k] * mix.means()[k * d + j];
    for (double m : mean) mmax = std::max(mmax, std::abs(m));
    std::vector<mixture_path> paths{mixture_path::direct};
    if (iso && cpu_blas_available()) paths.push_back(mixture_path::gemm);
    for (const char* t : targets) {
      with_target(t, [&] {
        for (const mixture_path path : paths) {
          evaluate_options eo;
          eo.path = path;
          const std::string where = std::string(t) + (iso ? " isotropic " : " diagonal ") + to_string(path);
          std::vector<float> logp(n), score(n * d), den(n * d), jvp(n * d, 1.f);
          EXPECT_EQ(mix.evaluate(logp.data(), n, x.data(), {0.0, s}, quantity::log_density, eo, {executor::cpu}).path,
                    path);
          mix.evaluate(score.data(), n, x.data(), {0.0, s}, quantity::score, eo, {executor::cpu});
          mix.evaluate(den.data(), n, x.data(), {0.0, s}, quantity::denoiser, eo, {executor::cpu});
          mix.denoiser_jvp(jvp.data(), n, x.data(), v.data(), {0.0, s}, eo, {executor::cpu});
          for (int i = 0; i < n; ++i) {
            double xx = 0;
            for (int j = 0; j < d; ++j) xx += double(x[i * d + j]) * x[i * d + j];
            const double gauss = -0.5 * xx / (s * s) - 0.5 * d * std::log(2 * M_PI * s * s);
            EXPECT_NEAR(logp[i], gauss, 1e-5 * (1 + std::abs(gauss))) << where << " point " << i;
            for (int j = 0; j < d; ++j) {
              const std::size_t e = std::size_t(i) * d + j;
              const double sc = -double(x[e]) / (s * s);
              EXPECT_NEAR(score[e], sc, 1e-5 * (1 + std::abs(sc))) << where << " point " << i;
              EXPECT_NEAR(den[e], mean[j], 2e-5 * (std::abs(mean[j]) + mmax)) << where << " point " << i;
              EXPECT_EQ(jvp[e], 0.f) << where << " point " << i;
            }
          }
        }
      });
    }
  }
}

class SimdTargets : public ::testing::TestWithParam<int> {};  // parameter: d (register list, or workspace)

TEST_P(SimdTargets, SplitsAndThreadsBitIdenticalAndTargetsAgree) {
  // Chains: 2 x 4 x 3 mixture grid spacing 2, variance 0.5, 10 steps of gamma = 0.05. Between targets only the
  // elementary functions differ (<= 2 ulp, normals <= 1e-5 absolute): per step |dx| <= gamma |d score| +
  // sqrt(2 gamma) |dz| <= 0.05 * 1e-5 * |score| + 0.32e-5 < 1e-5 (|score| <= 20 here), amplified by at most
  // (1 + gamma L) per step with L = sup |Hessian log p| <= 1/v + spacing^2 / (4 v^2) = 6: 1.3^10 = 14, so
  // |dx| <= 10 x 14 x 1e-5 = 1.4e-3 after 10 steps. MALA may flip an accept decision where log u is within
  // that of log alpha: allowed for at most 1% of the coordinates.
  const int d = GetParam();
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  const std::int64_t n = 203;  // not a multiple of any pack width
  std::vector<float> init(n * d);
  mix.sample(init.data(), n, {}, 1, nullptr, 0, {executor::cpu});
  const double tol = 1.4e-3;
  for (auto m : {langevin_method::ula, langevin_method::mala, langevin_method::tamed_ula}) {
    std::vector<float> reference;
    with_target("scalar", [&] { reference = run_langevin(mix, init, m, 0, n, 10); });
    for (const char* t : targets) {
      with_target(t, [&] {
        const auto whole = run_langevin(mix, init, m, 0, n, 10);
        auto parts = run_langevin(mix, init, m, 0, 37, 10);
        const auto rest = run_langevin(mix, init, m, 37, n - 37, 10);
        parts.insert(parts.end(), rest.begin(), rest.end());
        EXPECT_EQ(whole, parts) << t << " " << to_string(m) << ": batch split";
        omp_set_num_threads(1);
        const auto one = run_langevin(mix, init, m, 0, n, 10);
        omp_set_num_threads(2);
        const auto two = run_langevin(mix, init, m, 0, n, 10);
        EXPECT_EQ(one, whole) << t << " " << to_string(m) << ": 1 thread";
        EXPECT_EQ(two, whole) << t << " " << to_string(m) << ": 2 threads";
        const auto [worst, over] = compare(whole, reference, tol);
        if (m == langevin_method::mala)
          EXPECT_LE(over, int(n * d / 100)) << t << ": coordinates off the scalar path by more than " << tol;
        else
          EXPECT_LE(worst, tol) << t << " " << to_string(m) << ": largest difference from the scalar path";
      });
    }
  }
  // Diffusion: 20 steps of DDPM / DDIM / Heun from the prior. The same per-step error (<= 1e-5, the denoiser's
  // relative error times |x| <= 10, and the normals') is contracted by the reverse process except near the
  // boundaries between components, where it is amplified by at most 1 + |cm| L per step; we allow 1e-3 and at most
  // 1% of the coordinates beyond it (chains sitting on a boundary may end in a neighbouring component).
  for (auto s : {diffusion_sampler::ddpm, diffusion_sampler::ddim, diffusion_sampler::ode_heun}) {
    std::vector<float> reference;
    with_target("scalar", [&] { reference = run_diffusion(mix, s, 0, n, 20); });
    for (const char* t : targets) {
      with_target(t, [&] {
        const auto whole = run_diffusion(mix, s, 0, n, 20);
        auto parts = run_diffusion(mix, s, 0, 37, 20);
        const auto rest = run_diffusion(mix, s, 37, n - 37, 20);
        parts.insert(parts.end(), rest.begin(), rest.end());
        EXPECT_EQ(whole, parts) << t << " " << to_string(s) << ": batch split";
        omp_set_num_threads(1);
        const auto one = run_diffusion(mix, s, 0, n, 20);
        omp_set_num_threads(2);
        EXPECT_EQ(one, whole) << t << " " << to_string(s) << ": 1 thread";
        const auto [worst, over] = compare(whole, reference, 1e-3);
        EXPECT_LE(over, int(n * d / 100)) << t << " " << to_string(s) << ": largest difference " << worst;
      });
    }
  }
}


// Every CPU dispatch target against the CUDA executor (skipped with the reason when no GPU is usable), on the
// chains of SplitsAndThreadsBitIdenticalAndTargetsAgree. The CUDA executor runs the scalar functors' source with the
// device's exp / log / sincos (a few ulps from glibc's; its normals within 1e-5 of the host Box-Muller on the same
// Philox bits): the same rounding sources, of the same size, as between a target and the scalar functors. So the
// bounds derived there hold for the scalar path against CUDA, and by the triangle inequality
// |target - CUDA| <= |target - scalar| + |scalar - CUDA| the tolerance between a target and CUDA is twice them:
// 2.8e-3 for ULA and tamed ULA after 10 steps (every coordinate), 2e-3 for DDPM and DDIM after 20 steps with at most
// 1% of the coordinates beyond (chains on a boundary between components). MALA is left out (its accept decisions
// may flip on any rounding difference; its continuous part is ULA's).
TEST_P(SimdTargets, EveryTargetWithinTwiceTheTargetBoundOfTheCudaExecutor) {
  DIFFSAMPLE_REQUIRE_GPU();
  const int d = GetParam();
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  const std::int64_t n = 203;
  std::vector<float> init(n * d);
  mix.sample(init.data(), n, {}, 1, nullptr, 0, {executor::cpu});
  for (auto m : {langevin_method::ula, langevin_method::tamed_ula}) {
    diffsample::testing::device_buffer<float> gx(init);
    langevin_options o;
    o.method = m;
    o.step_size = 0.05;
    o.steps = 10;
    o.seed = 11;
    ASSERT_EQ(langevin(mix, gx.ptr, {}, n, o, {executor::cuda}).ran, executor::cuda);
    const std::vector<float> gpu = gx.download();
    for (const char* t : targets) {
      with_target(t, [&] {
        const auto [worst, over] = compare(run_langevin(mix, init, m, 0, n, 10), gpu, 2.8e-3);
        EXPECT_EQ(over, 0) << t << " " << to_string(m) << ": largest difference from CUDA " << worst;
        std::printf("%s %s d = %d: largest |cpu - cuda| %.3g\n", t, to_string(m), d, worst);
      });
    }
  }
  for (auto s : {diffusion_sampler::ddpm, diffusion_sampler::ddim}) {
    diffsample::testing::device_buffer<float> gx(n * d);
    diffusion_options o;
    o.sampler = s;
    o.steps = 20;
    o.seed = 12;
    diffusion(mix, gx.ptr, {}, n, o, {executor::cuda});
    const std::vector<float> gpu = gx.download();
    for (const char* t : targets) {
      with_target(t, [&] {
        const auto [worst, over] = compare(run_diffusion(mix, s, 0, n, 20), gpu, 2e-3);
        EXPECT_LE(over, int(n * d / 100)) << t << " " << to_string(s) << ": largest difference from CUDA " << worst;
        std::printf("%s %s d = %d: largest |cpu - cuda| %.3g, %d beyond 2e-3\n", t, to_string(s), d, worst, over);
      });
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, SimdTargets, ::testing::Values(2, 5));

namespace {

/// A guided SMC run on the CPU executor: the particles and their log-weights after `steps` transitions.
struct guided_run {
  std::vector<float> x, lw;
  std::vector<double> log_z;
};

guided_run run_guided(const gaussian_mixture& mix, const guided_problems& g, std::int64_t particles, int steps,
                      double ess_threshold, guided_sampler sampler = guided_sampler::smc,
                      guided_potentials potentials = guided_potentials::linear,
                      dps_step_form dps_step = dps_step_form::likelihood) {
  guided_options o;
  o.sampler = sampler;
  // Each sampler's own settings (the others refuse them as unread).
  o.dps_step = dps_step;
  o.potentials = potentials;
  if (sampler == guided_sampler::dcps) {
    o.dcps_blocks = 2;
    o.dcps_langevin_steps = 3;
  }
  o.particles = particles;
  o.steps = steps;
  o.seed = 31;
  if (sampler == guided_sampler::smc) o.resampling.ess_threshold = ess_threshold;
  guided_run r;
  r.x.resize(g.problems * particles * mix.dim());
  r.lw.resize(g.problems * particles);
  r.log_z.resize(g.problems);
  guided_outputs out;
  out.particles = r.x.data();
  if (sampler == guided_sampler::smc) {
    out.log_weights = r.lw.data();
    out.log_normaliser = r.log_z.data();
  }
  guided_sample(mix, out, g, o, {executor::cpu});
  return r;
}

/// B problems observing y = A x + sigma_y z, A dense d_y x d (fixed draws) or a mask of d_y coordinates.
guided_problems guided_test_problems(std::int64_t B, std::int64_t d, bool mask) {
  std::mt19937 gen(17);
  std::normal_distribution<double> normal;
  guided_problems g;
  g.problems = B;
  g.d_y = 2;
  if (mask) {
    g.operators.push_back(observation_operator::mask(d, {1, d - 1}, {0.8, 1.3}));
  } else {
    for (std::int64_t e = 0; e < 2 * d; ++e) g.A.push_back(normal(gen) / std::sqrt(double(d)));
  }
  for (std::int64_t e = 0; e < 2 * B; ++e) g.y.push_back(1.5 * normal(gen));
  g.sigma_y = {0.4};
  return g;
}

}  // namespace

// Guided SMC's per-particle passes on packs of particles (src/cpu/guided.cpp) against the scalar functors, with
// 37 particles per problem (a partial pack on every width: 37 = 2 x 16 + 5 = 4 x 8 + 5 = 9 x 4 + 1) and 3 problems:
//  - bit-identical across thread counts on every target, and a problem's particles do not depend on the problems
//    beside it (problem 0 alone against problem 0 of the batch);
//  - within a derived tolerance of the scalar path. No resampling, so the trajectories stay paired. Per transition
//    only rounding differs: the denoiser from per-channel constants (FP64-folded, chunked softmax) against the
//    generic online softmax, and the pack's exp/log/sincos (normals within 1e-5 absolute, PhiloxPack above). On this
//    mixture (3^5 components, spacing 2, variance 0.5, |x| <= 6) the denoiser's relative error is a few float ulps
//    of the logits (|logit| <= 100: 1e-5 absolute in a weight), times the spread of the means (<= 8): <= 1e-4 per
//    step; the kernel means contract it (|c0| + |c1| <= 1.1 per step on this schedule) and the Kalman update adds
//    sig^2 |A^T S^-1 A| <= 1 times it: over 8 transitions <= 8 x 1.1^8 x 2e-4 = 3.4e-3 in a coordinate. The
//    log-weights are quadratics of residuals of size <= 10 / sigma_{y,k}^2: their difference is held to 1e-2
//    absolute plus 1e-4 relative.
TEST(SimdGuided, PacksMatchTheScalarPassesWithPartialPacks) {
  const std::int64_t d = 5, B = 3, N = 37;
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  for (const bool mask : {false, true}) {
    const guided_problems g = guided_test_problems(B, d, mask);
    guided_problems first = g;
    first.problems = 1;
    first.y.resize(2);
    guided_run reference;
    with_target("scalar", [&] { reference = run_guided(mix, g, N, 8, 0.0); });
    for (const char* t : {"sse2", "avx2", "avx512"}) {
      with_target(t, [&] {
        const guided_run whole = run_guided(mix, g, N, 8, 0.0);
        const guided_run alone = run_guided(mix, first, N, 8, 0.0);
        EXPECT_EQ(std::vector<float>(whole.x.begin(), whole.x.begin() + N * d), alone.x) << t << ": problem 0 alone";
        EXPECT_EQ(std::vector<float>(whole.lw.begin(), whole.lw.begin() + N), alone.lw) << t << ": problem 0 alone";
        for (const double ess : {0.0, 0.9}) {
          omp_set_num_threads(1);
          const guided_run one = run_guided(mix, g, N, 8, ess);
          omp_set_num_threads(2);
          const guided_run two = run_guided(mix, g, N, 8, ess);
          EXPECT_EQ(one.x, two.x) << t << " ess " << ess << ": thread counts";
          EXPECT_EQ(one.lw, two.lw) << t << " ess " << ess << ": thread counts";
          EXPECT_EQ(one.log_z, two.log_z) << t << " ess " << ess << ": thread counts";
        }
        const auto [worst, over] = compare(whole.x, reference.x, 3.4e-3);
        EXPECT_EQ(over, 0) << t << (mask ? " mask" : " dense") << ": largest difference from the scalar path "
                           << worst;
        double worst_w = 0;
        int over_w = 0;
        for (std::size_t i = 0; i < whole.lw.size(); ++i) {
          const double e = std::fabs(double(whole.lw[i]) - reference.lw[i]);
          worst_w = std::max(worst_w, e);
          over_w += e > 1e-2 + 1e-4 * std::fabs(reference.lw[i]);
        }
        EXPECT_EQ(over_w, 0) << t << (mask ? " mask" : " dense") << ": log-weights off the scalar path, largest "
                             << worst_w;
        std::printf("%s %s: largest |dx| %.3g, |dlw| %.3g\n", t, mask ? "mask" : "dense", worst, worst_w);
      });
    }
  }
}

// DiffPIR's, DDRM's and SKRock's chains on packs of particles (src/cpu/guided.cpp) against the scalar functors, on the
// problems and sizes above (partial packs, 3 problems, dense and mask operators): bit-identical across thread counts
// and with a problem alone, and within the bound derived above for 8 steps (3.4e-3): per step the same rounding
// sources (the denoiser's, the pack's normals); DiffPIR's proximal step x0 = m + A^T P (y - A m) is a contraction of
// m's error (|I - A^T P A| <= 1) and its re-noising c0 x0 + c1 x has |c0| + |c1| <= 1.1; DDRM's update replaces the
// projection on V of a DDIM step (coefficients <= 1 in the VE scaling) by a combination of the same projections with
// coefficients <= 1; SKRock's iteration is a damped Chebyshev recursion whose step keeps h L inside its stability
// domain (|R| <= 1), so an error in a drift evaluation (the score from per-channel constants instead of the generic
// online softmax) is not amplified either.
TEST(SimdGuided, DiffpirDdrmAndSkrockPacksMatchTheScalarFunctors) {
  const std::int64_t d = 5, B = 3, N = 37;
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  for (const guided_sampler sampler : {guided_sampler::diffpir, guided_sampler::ddrm, guided_sampler::skrock}) {
    for (const bool mask : {false, true}) {
      const guided_problems g = guided_test_problems(B, d, mask);
      guided_problems first = g;
      first.problems = 1;
      first.y.resize(2);
      guided_run reference;
      with_target("scalar", [&] { reference = run_guided(mix, g, N, 8, 0.0, sampler); });
      for (const char* t : {"sse2", "avx2", "avx512"}) {
        with_target(t, [&] {
          const guided_run whole = run_guided(mix, g, N, 8, 0.0, sampler);
          const guided_run alone = run_guided(mix, first, N, 8, 0.0, sampler);
          const std::string what = std::string(to_string(sampler)) + " " + t + (mask ? " mask" : " dense");
          EXPECT_EQ(std::vector<float>(whole.x.begin(), whole.x.begin() + N * d), alone.x)
              << what << ": problem 0 alone";
          omp_set_num_threads(1);
          const guided_run one = run_guided(mix, g, N, 8, 0.0, sampler);
          omp_set_num_threads(2);
          EXPECT_EQ(one.x, whole.x) << what << ": thread counts";
          const auto [worst, over] = compare(whole.x, reference.x, 3.4e-3);
          EXPECT_EQ(over, 0) << what << ": largest difference from the scalar path " << worst;
          std::printf("%s: largest |dx| %.3g\n", what.c_str(), worst);
        });
      }
    }
  }
}


// DPS's, Pi-GDM's, TMPD's and DCPS's chains and the moment-projected and twisted SMC's weightings on packs of particles
// (src/cpu/guided.cpp, src/cpu/guided_tells.cpp, the products J v of src/cpu/denoiser_jvp.hpp) against the scalar
// functors (kernels::mixture_denoiser_jvp), on the problems and sizes above: bit-identical across thread counts and
// with a problem alone, and within a derived bound of the scalar path. Per step the rounding sources are those of the
// tests above (denoiser, normals) plus the product J v, whose error is a few 1e-6 relative (SimdJvp: <= 0.1 of a bound
// of ~64 ulps of the terms' sum). TMPD's guidance c0 s^2 / a J A^T (A C A^T + sigma_y^2 I)^-1 r has a norm <= 1 in r
// here (it is the Kalman gain of the projected Gaussian, |C A^T (A C A^T + sigma_y^2)^-1 A| <= 1), so a step amplifies
// an error by at most 1.1 + 1 and 8 steps by (2.1)^8 = 378 from 2e-5 per step: we hold 1e-2. DCPS's steps are
// normalised gradient steps of fixed length rho sig sqrt(d) (the direction's rounding moves the point by at most that
// length times the relative error of the gradient, 1e-5) and tamed Langevin steps (|drift| <= 1 / gamma per step, 1e-3
// here): within the 3.4e-3 of the chains above. The moment-projected weights are log-densities of residuals of size <=
// 10 over a variance floored at sigma_y^2 / 2 = 0.08: their rounding difference, and that of the log-normalisers
// (logsumexps of them), is held to 1e-2 absolute plus 1e-3 relative; the particles follow the linear mutation (tested
// above) from the weighting's kernel means, within 3.4e-3. The twisted weighting's proposal means add h = sig^2 J A^T
// V^-1 (y - A m), whose rounding (the product's 1e-5 relative and the Cholesky's) moves a particle by sig^2 times that,
// below the 2e-5 per step of the chains above: the same 3.4e-3 and weight bounds. The SMC resamples (ESS threshold
// 0.5): without resampling the potentials' log g_k telescope out of the weights; the rounding differences (1e-5) leave
// the ancestors unchanged at this seed. DPS and Pi-GDM run step by step around the mixture's evaluate and denoiser_jvp
// (both packed on a SIMD target): one product J A^T P r per step, added with the factor c0 s^2 / a. Pi-GDM's P = (r_k^2
// A A^T + sigma_y^2)^-1 keeps that step a contraction of r as TMPD's, so TMPD's 1e-2 holds. DPS's P = I / sigma_y^2
// does not: at the first, noisiest step the step reaches 66 in a coordinate, and there it is the scalar functor's
// product that is off, by up to 1e-2 relative (uncentred sums; the packed one stays within 1e-6 of FP64, SimdJvp
// above): measured on these problems (mask operator) with the fused packed form, a one-step run differed by 0.25 on |x|
// = 66, a four-step one by 0.1 on 28, an eight-step one by 0.01 .. 0.04 on 7 (the later, cleaner steps contract it). We
// hold 0.1 for DPS. DPS's normalised step moves by guidance_scale along J A^T r / |r| (a fixed length): its rounding
// (1e-5 relative in the direction) moves a point by 1e-5 per step, less than the likelihood form's; we hold the same
// 0.1. Both also run their two per-particle stages on packs (the guidance from the denoiser, and the update with the
// packs' normals, within 1e-5 of the scalar ones: PhiloxPack above), through the same tolerance. Seen failing with the
// packed product reading v from the rows of x (DPS, Pi-GDM), TMPD's per-lane solve reading lane 0's residual, DCPS's
// Langevin drift taking the transition's channel, the moment weight's log-determinant halved, and the twisted
// weighting's back substitution without its division (particles off by 4.75).
TEST(SimdGuided, JacobianSamplersPacksMatchTheScalarFunctors) {
  const std::int64_t d = 5, B = 3, N = 37;
  const auto mix = grid_mixture(d, 3, 2.0, 0.5);
  struct config {
    guided_sampler sampler;
    guided_potentials potentials;
    double tol;
    dps_step_form dps_step = dps_step_form::likelihood;
  };
  for (const config c : {config{guided_sampler::dps, guided_potentials::linear, 0.1},
                         config{guided_sampler::dps, guided_potentials::linear, 0.1, dps_step_form::normalised},
                         config{guided_sampler::pigdm, guided_potentials::linear, 1e-2},
                         config{guided_sampler::tmpd, guided_potentials::linear, 1e-2},
                         config{guided_sampler::dcps, guided_potentials::linear, 3.4e-3},
                         config{guided_sampler::smc, guided_potentials::moment, 3.4e-3},
                         config{guided_sampler::smc, guided_potentials::twisted, 3.4e-3}}) {
    for (const bool mask : {false, true}) {
      const guided_problems g = guided_test_problems(B, d, mask);
      guided_problems first = g;
      first.problems = 1;
      first.y.resize(2);
      const double ess = c.sampler == guided_sampler::smc ? 0.5 : 0.0;
      auto run = [&](const guided_problems& pr) {
        return run_guided(mix, pr, N, 8, ess, c.sampler, c.potentials, c.dps_step);
      };
      guided_run reference;
      with_target("scalar", [&] { reference = run(g); });
      for (const char* t : {"sse2", "avx2", "avx512"}) {
        with_target(t, [&] {
          const guided_run whole = run(g);
          const guided_run alone = run(first);
          const std::string potentials =
              c.potentials != guided_potentials::linear ? std::string(" ") + to_string(c.potentials) + " " : " ";
          const std::string what = std::string(to_string(c.sampler)) + potentials +
                                   (c.dps_step == dps_step_form::normalised ? "normalised " : "") + t +
                                   (mask ? " mask" : " dense");
          EXPECT_EQ(std::vector<float>(whole.x.begin(), whole.x.begin() + N * d), alone.x)
              << what << ": problem 0 alone";
          omp_set_num_threads(1);
          const guided_run one = run(g);
          omp_set_num_threads(2);
          EXPECT_EQ(one.x, whole.x) << what << ": thread counts";
          EXPECT_EQ(one.lw, whole.lw) << what << ": thread counts";
          const auto [worst, over] = compare(whole.x, reference.x, c.tol);
          EXPECT_EQ(over, 0) << what << ": largest difference from the scalar path " << worst;
          double worst_w = 0;
          int over_w = 0;
          for (std::size_t i = 0; i < whole.lw.size() && c.sampler == guided_sampler::smc; ++i) {
            const double e = std::fabs(double(whole.lw[i]) - reference.lw[i]);
            worst_w = std::max(worst_w, e);
            over_w += e > 1e-2 + 1e-3 * std::fabs(reference.lw[i]);
          }
          EXPECT_EQ(over_w, 0) << what << ": log-weights off the scalar path, largest " << worst_w;
          EXPECT_EQ(one.log_z, whole.log_z) << what << ": thread counts";
          double worst_z = 0;
          for (std::size_t b = 0; b < whole.log_z.size(); ++b) {
            const double e = std::fabs(whole.log_z[b] - reference.log_z[b]);
            worst_z = std::max(worst_z, e);
            EXPECT_LE(e, 1e-2 + 1e-3 * std::fabs(reference.log_z[b])) << what << ": log Z of problem " << b;
          }
          std::printf("%s: largest |dx| %.3g |dlw| %.3g |dlog Z| %.3g\n", what.c_str(), worst, worst_w, worst_z);
        });
      }
    }
  }
}

// The radix sort of the sliced distance's keys (src/cpu/radix_sort.hpp) gives std::sort's values: floats and
// doubles with both signs, zeros of both signs, infinities, subnormals and repeats, at sizes below its std::sort
// cut-off (63), at it (64) and above (4097).
TEST(SimdSlicedWasserstein, RadixSortGivesStdSortsValues) {
  std::mt19937 gen(8);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> pick(0, 9);
  auto check = [&](auto zero) {
    using T = decltype(zero);
    for (const std::int64_t n : {63, 64, 4097}) {
      std::vector<T> keys(n), tmp(n);
      for (auto& k : keys) {
        const int c = pick(gen);
        k = c == 0   ? T(0)
            : c == 1 ? -T(0)
            : c == 2 ? (normal(gen) > 0 ? T(INFINITY) : -T(INFINITY))
            : c == 3 ? T(normal(gen)) * std::numeric_limits<T>::denorm_min()
            : c == 4 ? T(std::round(normal(gen)))
                     : T(normal(gen) * 1e3);
      }
      std::vector<T> want = keys;
      std::sort(want.begin(), want.end());
      cpu::radix_sort(keys.data(), n, tmp.data());
      EXPECT_TRUE(std::equal(keys.begin(), keys.end(), want.begin())) << sizeof(T) << "-byte keys, n = " << n;
      for (std::int64_t i = 1; i < n; ++i)
        if (n >= 64 && keys[i] == 0 && keys[i - 1] == 0) {  // below 64 std::sort itself leaves zeros in any order
          EXPECT_FALSE(!std::signbit(keys[i - 1]) && std::signbit(keys[i])) << "+0 before -0 at " << i;
        }
    }
  };
  check(0.f);
  check(0.0);
}

// The sliced Wasserstein projections in lanes of directions (src/cpu/projection.cpp) are bit for bit the scalar
// FP64 loop: the host reference and the CPU executor give the same value on every target. Sizes leave partial
// groups everywhere: 13 directions (8 + 5; packs of 2, 4, 8 doubles), 1037 and 515 points (not multiples of the
// 4-point unroll; 1037 > 1024, the executor's block of points), d = 7.
TEST(SimdSlicedWasserstein, ProjectionsBitIdenticalOnEveryTarget) {
  const std::int64_t d = 7, na = 1037, nb = 515;
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  std::vector<float> a(na * d), b(nb * d);
  for (auto& v : a) v = normal(gen);
  for (auto& v : b) v = 0.5f + 1.5f * normal(gen);
  for (const int p : {1, 2}) {
    double host = 0, exec = 0;
    with_target("scalar", [&] {
      host = sliced_wasserstein(na, nb, d, a.data(), b.data(), 13, 9, p);
      exec = sliced_wasserstein(na, nb, d, a.data(), b.data(), 13, 9, p, {executor::cpu});
    });
    for (const char* t : targets) {
      with_target(t, [&] {
        EXPECT_EQ(sliced_wasserstein(na, nb, d, a.data(), b.data(), 13, 9, p), host) << t << " p " << p;
        EXPECT_EQ(sliced_wasserstein(na, nb, d, a.data(), b.data(), 13, 9, p, {executor::cpu}), exec)
            << t << " p " << p;
      });
    }
  }
}

// The exact posterior sampler on packs of samples (src/cpu/posterior.cpp) against the scalar sampler (cuRAND's host
// FP64 Box-Muller with libm's log, sin and cos, then the same transform), at d = 3 (shorter than a pack of samples'
// coordinates), 37 (odd: the last normal pair half used) and 300 (two blocks of accumulated coordinates), n = 301
// (a partial block and a partial pack), first_index 5, 9 components (grouped by a counting sort) and, at d = 3, 289
// (grouped by a sort):
//  - components: the same 53-bit uniform and the same search, so the labels are equal;
//  - values: a normal z = sqrt(-2 log u) t, t = sin or cos of pi v, |z| <= sqrt(2 * 54 log 2) = 8.66 (u >= 2^-54).
//    The host rounds pi v (v <= 2) to 2^-51 and libm's sin / cos add 1 ulp (<= 2^-53); the packs round x = pi r
//    (|x| <= pi / 4) to 2^-54 and their polynomials add about 1 ulp: |dt| <= 7.5e-16. log and sqrt within 1 ulp on
//    each side: |ds| <= 8.66 * 2^-51 = 3.8e-15, and the product's rounding 2 * 8.66 * 2^-53 = 1.9e-15; so
//    |dz| <= 8.66 * 7.5e-16 + 3.8e-15 + 1.9e-15 = 1.2e-14, taken as dz = 2e-14. Coordinate j sums j + 2 terms in
//    the same order on both sides: |dx_j| <= dz sum_l |L_jl| + 2 (j + 2) 2^-53 (|m_j| + 8.66 sum_l |L_jl|), with
//    sum_l |L_jl| <= sqrt((j + 1) S_jj) (Cauchy-Schwarz, sum_l L_jl^2 = S_jj). Float output: that plus one float
//    ulp of the value (the two doubles may round to neighbouring floats);
//  - every pack target gives the same bits (no FMA anywhere), with 1 and 2 threads and split in two calls.
// Seen failing with the log's low part of log 2 dropped (errors up to 7e-9 at d = 3) and with the quadrant's
// cosine sign taken from q instead of q + 1.
TEST(SimdPosterior, PackedSamplesWithinFp64RoundingOfTheScalarSamplerAndBitIdenticalAcrossTargets) {
  for (const auto& [d, side] : {std::pair{3, 3}, {37, 3}, {300, 3}, {3, 17}}) {
    const auto prior = grid_mixture(d, side, 3.0, 0.7);
    linear_observation obs;
    obs.d_y = 2;
    obs.d_x = d;
    std::mt19937 gen(4);
    std::normal_distribution<double> normal;
    for (int e = 0; e < 2 * d; ++e) obs.A.push_back(normal(gen) / std::sqrt(double(d)));
    obs.y = {1.0, -0.5};
    obs.sigma_y = 0.3;
    const mixture_posterior post(prior, obs);
    const std::int64_t n = 301, split = 100, K = post.components();
    ASSERT_GT(K, 1);
    std::vector<float> ref_f(n * d);
    std::vector<double> ref_d(n * d);
    std::vector<std::int32_t> ref_labels(n);
    with_target("scalar", [&] {
      post.sample(ref_f.data(), n, 5, nullptr, 5);
      post.sample(ref_d.data(), n, 5, ref_labels.data(), 5);
    });
    const double u = std::ldexp(1.0, -53), zmax = 8.66, dz = 2e-14;
    std::vector<double> first_d;
    std::vector<float> first_f;
    double worst = 0;  // largest |dx| / bound seen
    std::int64_t differing = 0;
    for (const char* t : {"sse2", "avx2", "avx512"}) {
      with_target(t, [&] {
        std::vector<float> f(n * d), f1(n * d), fs(n * d);
        std::vector<double> dd(n * d);
        std::vector<std::int32_t> labels(n);
        post.sample(f.data(), n, 5, nullptr, 5);
        post.sample(dd.data(), n, 5, labels.data(), 5);
        omp_set_num_threads(1);
        post.sample(f1.data(), n, 5, nullptr, 5);
        omp_set_num_threads(2);
        post.sample(fs.data(), split, 5, nullptr, 5);
        post.sample(fs.data() + split * d, n - split, 5, nullptr, 5 + split);
        EXPECT_EQ(labels, ref_labels) << t << " d " << d;
        EXPECT_EQ(f1, f) << t << " d " << d << ": thread counts";
        EXPECT_EQ(fs, f) << t << " d " << d << ": split";
        if (first_d.empty()) {
          first_d = dd;
          first_f = f;
        } else {
          EXPECT_EQ(dd, first_d) << t << " d " << d << ": targets differ (double)";
          EXPECT_EQ(f, first_f) << t << " d " << d << ": targets differ (float)";
        }
        for (std::int64_t i = 0; i < n; ++i) {
          const std::int64_t k = ref_labels[i];
          for (int j = 0; j < d; ++j) {
            const double s_jj = post.covariances()[(k * d + j) * d + j];
            const double l1 = std::sqrt((j + 1) * s_jj);
            const double bound = dz * l1 + 2 * (j + 2) * u * (std::fabs(post.means()[k * d + j]) + zmax * l1);
            const std::int64_t e = i * d + j;
            const double err = std::fabs(dd[e] - ref_d[e]);
            differing += dd[e] != ref_d[e];
            worst = std::max(worst, err / bound);
            ASSERT_LE(err, bound) << t << " d " << d << " sample " << i << " x_" << j;
            const float rf = ref_f[e];
            const double ulp_f = std::nextafter(std::fabs(rf), INFINITY) - std::fabs(rf);
            ASSERT_LE(std::fabs(double(f[e]) - rf), bound + ulp_f) << t << " d " << d << " sample " << i << " x_" << j;
          }
        }
      });
    }
    std::printf("d = %d, K = %lld: %lld of %lld FP64 coordinates differ from the scalar sampler's, largest |dx| / bound %.3g\n",
                d, static_cast<long long>(K), static_cast<long long>(differing / 3), static_cast<long long>(n * d), worst);
  }
}

// The mixture loops' last chunk of components is 1, 2 or 4 wide where that covers what is left (kernels::
// for_each_chunk), which is meant to give the bits of the full padded chunk: a padded component weighs exactly 0.
// A mixture of K components against the same mixture padded to a multiple of 8 with components of weight 1e-300
// (refused at 0; the FP32 weight of such a component, exp(log 1e-300 - the largest logit), is 0 exactly, as a
// padded component's is), whose chunks are all full: evaluate (log-density, score, denoiser), J v and the fused Langevin and
// diffusion samplers, bit for bit, on every target, isotropic and diagonal, at a register dimension and another.
// Seen failing with a tail chunk that dropped its last component.
TEST(SimdTargets, ANarrowLastChunkGivesThePaddedChunksBits) {
  for (int K : {1, 2, 3, 5, 9, 17, 25}) {
    const int padded = (K + 7) / 8 * 8;
    for (int d : {10, 7}) {
      for (bool iso : {true, false}) {
        std::mt19937_64 gen(100 + K * 7 + d);
        std::uniform_real_distribution<double> u(0.2, 1.0), m(-3.0, 3.0), v(0.3, 2.0);
        const std::size_t per = iso ? 1 : std::size_t(d);
        std::vector<double> w(padded, 1e-300), mu(std::size_t(padded) * d), var(padded * per);
        for (int k = 0; k < K; ++k) w[k] = u(gen);
        for (auto& x : mu) x = m(gen);
        for (auto& x : var) x = v(gen);
        const gaussian_mixture pad(d, w, mu, var),
            mix(d, std::vector<double>(w.begin(), w.begin() + K), std::vector<double>(mu.begin(), mu.begin() + K * d),
                std::vector<double>(var.begin(), var.begin() + K * per));
        const std::int64_t n = 37;  // not a whole number of packs
        std::vector<float> x(n * d), dir(n * d);
        std::normal_distribution<float> z(0.f, 2.f);
        for (auto& e : x) e = z(gen);
        for (auto& e : dir) e = z(gen);
        for (const char* t : targets) {
          with_target(t, [&] {
            const std::string where = std::string(t) + " K " + std::to_string(K) + " d " + std::to_string(d) +
                                      (iso ? " isotropic" : " diagonal");
            for (channel ch : {channel{0.8, 0.6}, channel{0.1, 1.0}}) {
              for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
                const std::size_t size = q == quantity::log_density ? n : n * d;
                std::vector<float> a(size), b(size);
                mix.evaluate(a.data(), n, x.data(), ch, q, {executor::cpu});
                pad.evaluate(b.data(), n, x.data(), ch, q, {executor::cpu});
                ASSERT_EQ(0, std::memcmp(a.data(), b.data(), size * sizeof(float))) << where << " quantity " << int(q);
              }
              std::vector<float> a(n * d), b(n * d);
              mix.denoiser_jvp(a.data(), n, x.data(), dir.data(), ch, {executor::cpu});
              pad.denoiser_jvp(b.data(), n, x.data(), dir.data(), ch, {executor::cpu});
              ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << where << " J v";
            }
            ASSERT_EQ(run_langevin(mix, x, langevin_method::mala, 0, n, 3), run_langevin(pad, x, langevin_method::mala, 0, n, 3))
                << where << " MALA";
            ASSERT_EQ(run_diffusion(mix, diffusion_sampler::ddpm, 0, n, 3), run_diffusion(pad, diffusion_sampler::ddpm, 0, n, 3))
                << where << " DDPM";
          });
        }
      }
    }
  }
}
