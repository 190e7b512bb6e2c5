// Gaussian-mixture scores, denoisers, Jacobian-vector products and exact samples against FP64 references and
// finite differences of the FP64 log-density.
// Seen failing against a wrong kernel: an online softmax that forgets to rescale its accumulator when the
// running maximum grows (ScoreIsGradientOfLogDensity, DenoiserIsTweedieOfScore).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "kernels/mixture.cuh"
#include "reference/helpers.hpp"

using namespace diffsample;
namespace dt = diffsample::testing;

namespace {

struct mixture_case {
  int K;
  int d;
  bool isotropic;
  double spread;  // scale of the means
  const char* name;
};

// Test names and failure messages show the case's name rather than its bytes.
void PrintTo(const mixture_case& c, std::ostream* os) { *os << c.name; }

gaussian_mixture random_mixture(int K, int d, bool isotropic, double spread, unsigned seed, double tiny_weight = 0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.2, 1.0), m(-spread, spread), v(0.3, 2.0);
  std::vector<double> w(K), mu(std::size_t(K) * d), var(isotropic ? K : std::size_t(K) * d);
  for (auto& x : w) x = u(gen);
  if (tiny_weight > 0) w[0] = tiny_weight;
  for (auto& x : mu) x = m(gen);
  for (auto& x : var) x = v(gen);
  return gaussian_mixture(d, w, mu, var);
}

std::vector<double> random_points(std::int64_t n, int d, double scale, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z(0, scale);
  std::vector<double> x(n * d);
  for (auto& v : x) v = z(gen);
  return x;
}

// FP32 results against FP64: |got - ref| <= rtol |ref| + logit_error * scale, scale = max |ref|.
// rtol covers the per-component arithmetic (a few hundred float ulps). logit_error bounds how far float rounding
// moves the logits: each is a sum of d terms of size up to q / d, so its rounding error is ~ eps sqrt(d) q, and a
// near-tie between components turns a logit error e into an output error ~ e * scale.
void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double rtol, const char* what,
                  double logit_error = 0) {
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::abs(r));
  std::size_t bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " entry " << i;
    const double bound = rtol * (std::abs(ref[i]) + 1e-3 * scale) + logit_error * scale;
    worst = std::max(worst, std::abs(got[i] - ref[i]) / bound);
    if (std::abs(got[i] - ref[i]) > bound) ++bad;
  }
  EXPECT_EQ(bad, 0u) << what << ": worst error / bound = " << worst;
}

// eps_f32 sqrt(d) q_max for points within ~(spread + 1) of the means and variances >= 0.3 (random_mixture).
double logit_error_bound(int d, double spread) {
  const double q_max = d * 4 * (spread + 1) * (spread + 1) / 0.3;
  return 6e-8 * std::sqrt(double(d)) * q_max;
}

}  // namespace

class MixtureCases : public ::testing::TestWithParam<mixture_case> {};

TEST_P(MixtureCases, Fp32MatchesFp64Reference) {
  const auto c = GetParam();
  const auto mix = random_mixture(c.K, c.d, c.isotropic, c.spread, 11);
  const std::int64_t n = 64;
  for (channel ch : {channel{1.0, 0.0}, channel{0.7, 0.7}, channel{0.05, 1.0}, channel{1.0, 1e-3}}) {
    const auto x64 = random_points(n, c.d, c.spread + 1, 5);
    std::vector<float> x(x64.begin(), x64.end());
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      const std::size_t m = q == quantity::log_density ? n : n * c.d;
      std::vector<double> ref(m);
      std::vector<float> got(m);
      mix.evaluate_fp64(ref.data(), n, x64.data(), ch, q);
      EXPECT_EQ(mix.evaluate(got.data(), n, x.data(), ch, q, {executor::cpu}), executor::cpu);
      // Evaluate at the float-rounded points in FP64 so that only the arithmetic differs.
      std::vector<double> xr(x.begin(), x.end());
      mix.evaluate_fp64(ref.data(), n, xr.data(), ch, q);
      // Scores at s = 1e-3 are ~1/s^2 times position errors: float rounding of the logits dominates there.
      const double rtol = ch.s < 0.01 && q == quantity::score ? 2e-2 : 2e-3;
      expect_close(got, ref, rtol, c.name, logit_error_bound(c.d, c.spread));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Mixtures, MixtureCases,
                         ::testing::Values(mixture_case{1, 3, true, 2.0, "K1_d3_iso"},
                                           mixture_case{25, 2, true, 8.0, "K25_d2_iso"},
                                           mixture_case{7, 10, false, 3.0, "K7_d10_diag"},
                                           mixture_case{1024, 16, false, 4.0, "K1024_d16_diag"},
                                           mixture_case{8, 1024, true, 1.0, "K8_d1024_iso"}),
                         [](const auto& info) { return std::string(info.param.name); });

// Both variance forms (isotropic: one variance per component; diagonal: one per coordinate), at channels with
// a != 1 so that a and a^2 in c = a^2 v + s^2 differ.
TEST(Mixture, ScoreIsGradientOfLogDensity) {
  // Central differences of the FP64 log-density: error O(h^2 |f'''|) + O(eps |f| / h) ~ 1e-8 with h = 1e-5.
  const int d = 5;
  for (bool iso : {false, true}) {
    const auto mix = random_mixture(6, d, iso, 2.0, 3);
    for (channel ch : {channel{0.8, 0.5}, channel{0.4, 0.3}, channel{1.7, 0.9}}) {
      auto x = random_points(8, d, 2.0, 9);
      std::vector<double> score(x.size());
      mix.evaluate_fp64(score.data(), 8, x.data(), ch, quantity::score);
      const double h = 1e-5;
      for (int i = 0; i < 8; ++i)
        for (int j = 0; j < d; ++j) {
          auto xp = std::vector<double>(x.begin() + i * d, x.begin() + (i + 1) * d), xm = xp;
          xp[j] += h;
          xm[j] -= h;
          double lp, lm;
          mix.evaluate_fp64(&lp, 1, xp.data(), ch, quantity::log_density);
          mix.evaluate_fp64(&lm, 1, xm.data(), ch, quantity::log_density);
          EXPECT_NEAR(score[i * d + j], (lp - lm) / (2 * h), 1e-6 * (1 + std::abs(score[i * d + j])))
              << "iso " << iso << " a " << ch.a << " point " << i << " coordinate " << j;
        }
    }
  }
}

TEST(Mixture, LogDensityOfOneComponentIsGaussian) {
  const int d = 4;
  const gaussian_mixture mix(d, {3.0}, {1, -2, 0.5, 0}, {0.5, 2, 1, 3});
  const channel ch{0.6, 0.8};
  const std::vector<double> x{0.3, -1, 2, 0.1};
  double got;
  mix.evaluate_fp64(&got, 1, x.data(), ch, quantity::log_density);
  double ref = 0;
  const double mu[4] = {1, -2, 0.5, 0}, v[4] = {0.5, 2, 1, 3};
  for (int j = 0; j < d; ++j) {
    const double c = ch.a * ch.a * v[j] + ch.s * ch.s, r = x[j] - ch.a * mu[j];
    ref += -0.5 * r * r / c - 0.5 * std::log(2 * M_PI * c);
  }
  EXPECT_NEAR(got, ref, 1e-12);
}

TEST(Mixture, DenoiserIsTweedieOfScore) {
  // Two independent formulas: E[x0|x] = sum r_k (s^2 mu_k + a v_k x)/c_k and (x + s^2 score)/a, on both variance
  // forms and at channels with a != 1.
  const int d = 3;
  for (bool iso : {false, true}) {
    const auto mix = random_mixture(9, d, iso, 3.0, 21);
    for (channel ch : {channel{0.9, 0.6}, channel{0.3, 0.4}, channel{2.5, 1.2}}) {
      const auto x = random_points(16, d, 3.0, 4);
      std::vector<double> score(x.size()), den(x.size());
      mix.evaluate_fp64(score.data(), 16, x.data(), ch, quantity::score);
      mix.evaluate_fp64(den.data(), 16, x.data(), ch, quantity::denoiser);
      for (std::size_t i = 0; i < x.size(); ++i)
        EXPECT_NEAR(den[i], (x[i] + ch.s * ch.s * score[i]) / ch.a, 1e-10 * (1 + std::abs(den[i])))
            << "iso " << iso << " a " << ch.a << " entry " << i;
    }
  }
}

// A mixture with isotropic components is the same distribution as the one with each variance repeated in every
// coordinate. The two storage forms take different code paths (one c_k per component against one per coordinate)
// and must agree on every quantity at every channel: in FP64 to rounding, and each form's FP32 against the other's
// FP64 within the float bounds of expect_close. Channels with a far from 1 separate a^2 v from a v and from v.
TEST(Mixture, IsotropicAndDiagonalFormsAgree) {
  const int K = 7, d = 4;
  std::mt19937_64 gen(31);
  std::uniform_real_distribution<double> u(0.2, 1.0), mu(-2.0, 2.0), var(0.3, 2.0);
  std::vector<double> w(K), means(K * d), tau2(K), diag(K * d);
  for (auto& x : w) x = u(gen);
  for (auto& x : means) x = mu(gen);
  for (int k = 0; k < K; ++k) {
    tau2[k] = var(gen);
    for (int j = 0; j < d; ++j) diag[k * d + j] = tau2[k];
  }
  const gaussian_mixture iso(d, w, means, tau2), dia(d, w, means, diag);
  ASSERT_TRUE(iso.isotropic());
  ASSERT_FALSE(dia.isotropic());
  const std::int64_t n = 32;
  const auto x64 = random_points(n, d, 3.0, 13), v64 = random_points(n, d, 1.0, 14);
  const std::vector<float> x(x64.begin(), x64.end()), v(v64.begin(), v64.end());
  const std::vector<double> xr(x.begin(), x.end()), vr(v.begin(), v.end());
  for (channel ch : {channel{0.5, 0.8}, channel{0.25, 0.3}, channel{2.0, 0.5}, channel{0.9, 1e-2}}) {
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      const std::size_t m = q == quantity::log_density ? n : n * d;
      std::vector<double> ri(m), rd(m);
      iso.evaluate_fp64(ri.data(), n, xr.data(), ch, q);
      dia.evaluate_fp64(rd.data(), n, xr.data(), ch, q);
      for (std::size_t i = 0; i < m; ++i)
        ASSERT_NEAR(ri[i], rd[i], 1e-9 * (1 + std::abs(rd[i])))
            << "fp64 quantity " << int(q) << " a " << ch.a << " s " << ch.s << " entry " << i;
      std::vector<float> gi(m), gd(m);
      iso.evaluate(gi.data(), n, x.data(), ch, q, {executor::cpu});
      dia.evaluate(gd.data(), n, x.data(), ch, q, {executor::cpu});
      // Scores at s = 1e-2 are ~1/s^2 times position errors (as in Fp32MatchesFp64Reference).
      const double rtol = ch.s < 0.05 && q == quantity::score ? 2e-2 : 2e-3;
      expect_close(gi, rd, rtol, "isotropic fp32 vs diagonal fp64", logit_error_bound(d, 2.0));
      expect_close(gd, ri, rtol, "diagonal fp32 vs isotropic fp64", logit_error_bound(d, 2.0));
    }
    std::vector<double> ji(n * d), jd(n * d);
    iso.denoiser_jvp_fp64(ji.data(), n, xr.data(), vr.data(), ch);
    dia.denoiser_jvp_fp64(jd.data(), n, xr.data(), vr.data(), ch);
    for (std::int64_t i = 0; i < n * d; ++i)
      ASSERT_NEAR(ji[i], jd[i], 1e-9 * (1 + std::abs(jd[i]))) << "fp64 jvp a " << ch.a << " s " << ch.s << " entry " << i;
    std::vector<float> gi(n * d), gd(n * d);
    iso.denoiser_jvp(gi.data(), n, x.data(), v.data(), ch, {executor::cpu});
    dia.denoiser_jvp(gd.data(), n, x.data(), v.data(), ch, {executor::cpu});
    expect_close(gi, jd, 5e-3, "isotropic fp32 jvp vs diagonal fp64", logit_error_bound(d, 2.0));
    expect_close(gd, ji, 5e-3, "diagonal fp32 jvp vs isotropic fp64", logit_error_bound(d, 2.0));
  }
}

TEST(Mixture, DenoiserJvpMatchesFiniteDifferencesAndFp32) {
  const int d = 6;
  for (bool iso : {true, false}) {
    const auto mix = random_mixture(5, d, iso, 2.0, 8);
    for (channel ch : {channel{0.8, 0.6}, channel{0.2, 1.0}, channel{1.0, 0.05}}) {
      const auto x = random_points(4, d, 2.0, 2), v = random_points(4, d, 1.0, 3);
      std::vector<double> jvp(x.size());
      mix.denoiser_jvp_fp64(jvp.data(), 4, x.data(), v.data(), ch);
      const double h = 1e-6;
      for (int i = 0; i < 4; ++i) {
        std::vector<double> xp(x.begin() + i * d, x.begin() + (i + 1) * d), xm = xp, dp(d), dm(d);
        for (int j = 0; j < d; ++j) {
          xp[j] += h * v[i * d + j];
          xm[j] -= h * v[i * d + j];
        }
        mix.evaluate_fp64(dp.data(), 1, xp.data(), ch, quantity::denoiser);
        mix.evaluate_fp64(dm.data(), 1, xm.data(), ch, quantity::denoiser);
        for (int j = 0; j < d; ++j)
          EXPECT_NEAR(jvp[i * d + j], (dp[j] - dm[j]) / (2 * h), 1e-5 * (1 + std::abs(jvp[i * d + j])))
              << "iso " << iso << " s " << ch.s << " point " << i << " coordinate " << j;
      }
      std::vector<float> xf(x.begin(), x.end()), vf(v.begin(), v.end()), got(x.size());
      mix.denoiser_jvp(got.data(), 4, xf.data(), vf.data(), ch, {executor::cpu});
      std::vector<double> xr(xf.begin(), xf.end()), vr(vf.begin(), vf.end());
      mix.denoiser_jvp_fp64(jvp.data(), 4, xr.data(), vr.data(), ch);
      expect_close(got, jvp, 5e-3, "jvp fp32");
    }
  }
}

// The CPU executor's J v at channels where a component's c = a^2 v + s^2 is tiny but inside the accepted range (near
// point masses, v = 1e-24, at s = 1e-12 and 1e-10): J v is finite (6.2e22 and 2.5e19 at the two means' midpoint) while
// the sum of r_k f_k (f_k . v) before its scale a s^2, each f_k about |x - a mu_k| / c, passed FP32's range. Both
// variance forms, against the FP64 JVP at the same float inputs. Seen failing (inf at the first point, both forms)
// with the scale applied after the sum.
TEST(Mixture, DenoiserJvpIsFiniteAtTinyComponentVariances) {
  const int d = 4;
  for (bool iso : {true, false}) {
    const std::vector<double> w{0.5, 0.5}, mu{0, 0, 0, 0, 1, 0, 0, 0};
    const gaussian_mixture mix(d, w, mu, std::vector<double>(iso ? 2 : 2 * d, 1e-24));
    const std::vector<float> x{0.5f, 0.1f, 0.f, 0.f, 0.3f, 0.f, 0.2f, 0.f}, v{1.f, 0.f, 0.f, 0.f, 0.5f, 1.f, 0.f, 0.f};
    const std::vector<double> xr(x.begin(), x.end()), vr(v.begin(), v.end());
    for (double s : {1e-12, 1e-10}) {
      std::vector<float> got(x.size());
      std::vector<double> ref(x.size());
      mix.denoiser_jvp(got.data(), 2, x.data(), v.data(), {1.0, s}, {executor::cpu});
      mix.denoiser_jvp_fp64(ref.data(), 2, xr.data(), vr.data(), {1.0, s});
      for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_TRUE(std::isfinite(ref[i])) << "reference entry " << i;
      expect_close(got, ref, 5e-3, iso ? "isotropic" : "diagonal");
    }
  }
}

// kernels::channel_jvp (the CUDA guided samplers' J v from a channel's constants: no division per component and
// coordinate) against the FP64 JVP at the float-rounded inputs, both variance forms and three channels (the
// constants rounded to float once per channel; same tolerance as the FP32 JVP above, 5e-3 relative to the entry
// plus 1e-3 of the largest: a few hundred float ulps of the per-component sums). The same table staged as a CUDA
// chain launch stages it in shared memory (mixture_channels::staged, the layout kernels/chain_launch.cuh copies with
// the threads of a block; here into a NaN-filled host buffer with std::copy), with and without its channel: with the
// isotropic variances (a chain body whose reads_isotropic_variances is true) channel_jvp on the staged view equals
// the table's bit for bit, and in either form the denoiser does (the one the chain bodies read). Seen failing with
// the isotropic variances left out of the staged table (the staged view's variances fell on the channel's constants
// or past the copy).
TEST(Mixture, ChannelJvpFromTheConstantsMatchesFp64) {
  const int d = 6, K = 5, n = 4;
  struct one_channel {
    float a, s;
    bool operator()(std::int64_t, float& ca, float& cs) const {
      ca = a;
      cs = s;
      return true;
    }
  };
  for (bool iso : {true, false}) {
    std::mt19937_64 gen(8);
    std::uniform_real_distribution<double> u(0.2, 1.0), m(-2.0, 2.0), var(0.3, 2.0);
    std::vector<double> w(K), mu(std::size_t(K) * d), v(iso ? K : std::size_t(K) * d);
    for (auto& e : w) e = u(gen);
    for (auto& e : mu) e = m(gen);
    for (auto& e : v) e = var(gen);
    const gaussian_mixture mix(d, w, mu, v);
    double total = 0;
    for (double e : w) total += e;
    std::vector<float> lw(K), muf(mu.begin(), mu.end()), vf(v.begin(), v.end());
    for (int k = 0; k < K; ++k) lw[k] = float(std::log(w[k] / total));
    const kernels::mixture_view<float> view{lw.data(), muf.data(), vf.data(), K, d, iso};
    for (channel ch : {channel{0.8, 0.6}, channel{0.2, 1.0}, channel{1.0, 0.05}}) {
      std::vector<float> table(static_cast<std::size_t>(kernels::mixture_channels::table_floats(view, 1)));
      const kernels::mixture_channels t = kernels::mixture_channels::in(view, 1, table.data());
      const kernels::channel_table_functor<one_channel> fill{t, {float(ch.a), float(ch.s)}};
      for (int k = 0; k < K; ++k) fill(k);
      const kernels::channel_view c = t.at(0, float(ch.a), float(ch.s));
      const auto x = random_points(n, d, 2.0, 2), dir = random_points(n, d, 1.0, 3);
      std::vector<float> xf(x.begin(), x.end()), df(dir.begin(), dir.end()), got(x.size());
      for (int i = 0; i < n; ++i) {
        const kernels::strided_vec<const float> xi{xf.data() + i * d, 1, d}, di{df.data() + i * d, 1, d};
        kernels::strided_vec<float> oi{got.data() + i * d, 1, d};
        kernels::channel_jvp<float>(c, xi, di, oi);
      }
      std::vector<double> xr(xf.begin(), xf.end()), dr(df.begin(), df.end()), ref(x.size());
      mix.denoiser_jvp_fp64(ref.data(), n, xr.data(), dr.data(), ch);
      expect_close(got, ref, 5e-3, iso ? "channel jvp, isotropic" : "channel jvp, diagonal");
      std::vector<float> denoised(x.size());
      for (int i = 0; i < n; ++i) {
        const kernels::strided_vec<const float> xi{xf.data() + i * d, 1, d};
        kernels::strided_vec<float> oi{denoised.data() + i * d, 1, d};
        kernels::channel_denoiser<float>(c, xi, oi);
      }
      const auto copy = [](float* to, const float* from, std::int64_t count) { std::copy(from, from + count, to); };
      for (int form = 0; form < 4; ++form) {
        const bool with_channel = form & 1, isotropic_variances = form & 2;
        std::vector<float> smem(
            static_cast<std::size_t>(kernels::mixture_channels::staged_floats(view, with_channel, isotropic_variances)),
            NAN);
        const kernels::mixture_channels st =
            form == 0   ? t.staged<false, false>(smem.data(), copy)
            : form == 1 ? t.staged<true, false>(smem.data(), copy)
            : form == 2 ? t.staged<false, true>(smem.data(), copy)
                        : t.staged<true, true>(smem.data(), copy);
        const kernels::channel_view sc = st.at(0, float(ch.a), float(ch.s));
        std::vector<float> staged_jvp(x.size()), staged_denoised(x.size());
        for (int i = 0; i < n; ++i) {
          const kernels::strided_vec<const float> xi{xf.data() + i * d, 1, d}, di{df.data() + i * d, 1, d};
          kernels::strided_vec<float> oi{staged_jvp.data() + i * d, 1, d}, mi{staged_denoised.data() + i * d, 1, d};
          // (an isotropic mixture staged without its variances has none for channel_jvp to read: their pointer is
          // past the copy, as no chain body that reads them stages it so)
          if (isotropic_variances || !iso) kernels::channel_jvp<float>(sc, xi, di, oi);
          kernels::channel_denoiser<float>(sc, xi, mi);
        }
        const std::string what = std::string(iso ? "isotropic" : "diagonal") +
                                 ", staged with_channel = " + std::to_string(with_channel) +
                                 ", isotropic_variances = " + std::to_string(isotropic_variances);
        EXPECT_EQ(staged_denoised, denoised) << what;
        if (isotropic_variances || !iso) {
          EXPECT_EQ(staged_jvp, got) << what;
        }
      }
    }
  }
}

// The FP64 reference JVP (denoiser_jvp_fp64) at the noisy end of a diffusion, a = 1e-3 down to 1.9e-22 (an
// Ornstein-Uhlenbeck horizon of 50; s = sqrt(1 - a^2)), against the posterior covariance formed explicitly in long
// double: J v = (a / s^2) sum_k r_k [diag(v_k s^2 / c_k) v + (m_k - m)((m_k - m) . v)], m_k = (s^2 mu_k + a v_k x) /
// c_k straight from its definition (no term of size |x| / a: its cancellations are of |mu| against |mu_k - mu_l|,
// whatever a). Both variance forms, 5 components in d = 6. Tolerance 1e-12 of the point's largest |J v| (the
// reference's remaining cancellations cost about |mu| / |mu_k - mu_l| FP64 ulps). Seen failing with the former
// form (s^2 / a) delta_k (delta_k . v - score . v): 2.3e-10 of max |J v| at a = 1e-3, 3.4e-4 at 1e-6, 182 at 1e-9,
// 1e10 at 1e-13 (both variance forms).
TEST(Mixture, Fp64JvpAccurateAtTinySignalScales) {
  using ld = long double;
  const int d = 6, n = 6;
  for (bool iso : {true, false}) {
    const auto mix = random_mixture(5, d, iso, 2.0, 31);
    const int K = int(mix.components());
    const auto x = random_points(n, d, 1.5, 7), v = random_points(n, d, 1.0, 8);
    for (const double a : {1e-3, 1e-6, 1e-9, 1e-13, std::exp(-50.0)}) {
      const double s = std::sqrt(1 - a * a);
      std::vector<double> got(n * d);
      mix.denoiser_jvp_fp64(got.data(), n, x.data(), v.data(), {a, s});
      double worst = 0;
      for (int i = 0; i < n; ++i) {
        const double* xi = x.data() + i * d;
        const double* vi = v.data() + i * d;
        std::vector<ld> logit(K), r(K), mk(std::size_t(K) * d), mbar(d, 0), ref(d, 0);
        ld mx = -INFINITY, sum = 0;
        const ld A = a, S2 = ld(s) * ld(s);
        for (int k = 0; k < K; ++k) {
          ld q = 0, logc = 0;
          for (int j = 0; j < d; ++j) {
            const ld vk = mix.variances()[iso ? k : k * d + j], c = A * A * vk + S2;
            const ld diff = ld(xi[j]) - A * ld(mix.means()[k * d + j]);
            q += diff * diff / c;
            logc += std::log(c);
            mk[k * d + j] = (S2 * ld(mix.means()[k * d + j]) + A * vk * ld(xi[j])) / c;
          }
          logit[k] = std::log(ld(mix.weights()[k])) - 0.5L * (q + logc);
          mx = std::max(mx, logit[k]);
        }
        for (int k = 0; k < K; ++k) sum += (r[k] = std::exp(logit[k] - mx));
        for (int k = 0; k < K; ++k) r[k] /= sum;
        for (int k = 0; k < K; ++k)
          for (int j = 0; j < d; ++j) mbar[j] += r[k] * mk[k * d + j];
        for (int k = 0; k < K; ++k) {
          ld dot = 0;
          for (int j = 0; j < d; ++j) dot += (mk[k * d + j] - mbar[j]) * ld(vi[j]);
          for (int j = 0; j < d; ++j) {
            const ld vk = mix.variances()[iso ? k : k * d + j], c = A * A * vk + S2;
            ref[j] += r[k] * (vk * S2 / c * ld(vi[j]) + (mk[k * d + j] - mbar[j]) * dot);
          }
        }
        ld scale = 0;
        for (int j = 0; j < d; ++j) scale = std::max(scale, std::fabs(ref[j] *= A / S2));
        for (int j = 0; j < d; ++j) {
          const double err = double(std::fabs(ld(got[i * d + j]) - ref[j]) / scale);
          worst = std::max(worst, err);
          EXPECT_LE(err, 1e-12) << (iso ? "isotropic" : "diagonal") << " a " << a << " point " << i << " coordinate "
                                << j << ": " << got[i * d + j] << " against " << double(ref[j]);
        }
      }
      std::printf("%s, a = %.3g: largest |J v - long double| / max |J v| %.3g\n", iso ? "isotropic" : "diagonal", a,
                  worst);
    }
  }
}

TEST(Mixture, FarPointsAndTinyNoiseStayFinite) {
  const int d = 8;
  const auto mix = random_mixture(25, d, false, 8.0, 4, /*tiny_weight=*/1e-30);
  for (double far : {1e3, 1e5, 1e7}) {
    for (channel ch : {channel{1.0, 0.0}, channel{1.0, 1e-6}, channel{0.01, 1.0}}) {
      std::vector<float> x(4 * d, float(far)), out(4 * d), logp(4);
      for (int j = 0; j < d; ++j) x[d + j] = -float(far);
      mix.evaluate(out.data(), 4, x.data(), ch, quantity::score, {executor::cpu});
      for (float v : out) ASSERT_TRUE(std::isfinite(v)) << "score at |x| = " << far << ", s = " << ch.s;
      mix.evaluate(out.data(), 4, x.data(), ch, quantity::denoiser, {executor::cpu});
      for (float v : out) ASSERT_TRUE(std::isfinite(v)) << "denoiser at |x| = " << far;
      mix.evaluate(logp.data(), 4, x.data(), ch, quantity::log_density, {executor::cpu});
      for (float v : logp) ASSERT_TRUE(std::isfinite(v)) << "log-density at |x| = " << far;
      // Far from every component the score points back: sign(score) = -sign(x) in every coordinate.
      mix.evaluate(out.data(), 1, x.data(), ch, quantity::score, {executor::cpu});
      for (int j = 0; j < d; ++j) EXPECT_LT(out[j], 0.f);
    }
  }
}

// At a = 0 (s > 0) the channel forgets x0: p_t = N(0, s^2 I) whatever the prior, its score is -x / s^2, the
// denoiser E[x0 | x_t] is the prior mean sum_k w_k mu_k, and its Jacobian (a / s^2) Cov(x0 | x_t) is 0. The FP64
// reference gives these closed forms (both variance forms), and is continuous there: at small a the denoiser is the
// prior mean plus (a / s^2) Cov_0 x and J v = (a / s^2) Cov_0 v (Cov_0 the prior's covariance) up to O(a^2). Seen failing before a = 0 was accepted
// (invalid_argument "ch.a: must be positive"), and with the JVP's s^2 / a left unguarded (NaN).
TEST(Mixture, ZeroSignalScaleIsTheClosedFormGaussianAndContinuous) {
  const int d = 6, n = 5;
  const double s = 0.7;
  for (bool iso : {true, false}) {
    const auto mix = random_mixture(5, d, iso, 2.0, 21);
    const int K = int(mix.components());
    const auto x = random_points(n, d, 1.5, 4), v = random_points(n, d, 1.0, 6);
    std::vector<double> mean(d, 0.0), cov(d * d, 0.0);
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < d; ++j) mean[j] += mix.weights()[k] * mix.means()[k * d + j];
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < d; ++i) {
        const double di = mix.means()[k * d + i] - mean[i];
        for (int j = 0; j < d; ++j) cov[i * d + j] += mix.weights()[k] * di * (mix.means()[k * d + j] - mean[j]);
        cov[i * d + i] += mix.weights()[k] * mix.variances()[iso ? k : k * d + i];
      }
    const char* form = iso ? "isotropic" : "diagonal";
    // a = 0: the closed forms.
    std::vector<double> logp(n), score(n * d), den(n * d), jvp(n * d, 1.0);
    mix.evaluate_fp64(logp.data(), n, x.data(), {0.0, s}, quantity::log_density);
    mix.evaluate_fp64(score.data(), n, x.data(), {0.0, s}, quantity::score);
    mix.evaluate_fp64(den.data(), n, x.data(), {0.0, s}, quantity::denoiser);
    mix.denoiser_jvp_fp64(jvp.data(), n, x.data(), v.data(), {0.0, s});
    for (int i = 0; i < n; ++i) {
      double xx = 0;
      for (int j = 0; j < d; ++j) xx += x[i * d + j] * x[i * d + j];
      const double gauss = -0.5 * xx / (s * s) - 0.5 * d * std::log(2 * M_PI * s * s);
      EXPECT_NEAR(logp[i], gauss, 1e-12 * (1 + std::abs(gauss))) << form << " point " << i;
      for (int j = 0; j < d; ++j) {
        const std::size_t e = std::size_t(i) * d + j;
        EXPECT_NEAR(score[e], -x[e] / (s * s), 1e-12 * (1 + std::abs(x[e]) / (s * s))) << form << " point " << i;
        EXPECT_NEAR(den[e], mean[j], 1e-12 * (1 + std::abs(mean[j]))) << form << " point " << i;
        EXPECT_EQ(jvp[e], 0.0) << form << " point " << i;
      }
    }
    // Small a: first order in a from the closed forms. The second-order terms are of relative size
    // a |x| |mu| / s^2 (<= 4.5 x 2.5 / 0.49 a here), so 25 a of the first-order term's scale bounds them; a = 1e-3
    // and 1e-4 (the reference's accuracy at smaller a: Fp64JvpAccurateAtTinySignalScales).
    for (const double a : {1e-3, 1e-4}) {
      std::vector<double> den_a(n * d), jvp_a(n * d), score_a(n * d);
      mix.evaluate_fp64(den_a.data(), n, x.data(), {a, s}, quantity::denoiser);
      mix.evaluate_fp64(score_a.data(), n, x.data(), {a, s}, quantity::score);
      mix.denoiser_jvp_fp64(jvp_a.data(), n, x.data(), v.data(), {a, s});
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) {
          double cx = 0, cv = 0, cmax = 0;
          for (int l = 0; l < d; ++l) {
            cx += cov[j * d + l] * x[i * d + l];
            cv += cov[j * d + l] * v[i * d + l];
            cmax = std::max(cmax, std::abs(cov[j * d + l]));
          }
          const std::size_t e = std::size_t(i) * d + j;
          const double first = a / (s * s) * cmax * 4;  // the size of the first-order terms (|x|, |v| of order 1)
          const double tol = 25 * a * first;
          EXPECT_NEAR(den_a[e], mean[j] + a / (s * s) * cx, tol) << form << " a " << a << " point " << i;
          EXPECT_NEAR(jvp_a[e], a / (s * s) * cv, tol) << form << " a " << a << " point " << i;
          // score = (a E[x0 | x] - x) / s^2.
          EXPECT_NEAR(score_a[e], (a * mean[j] - x[e]) / (s * s), tol + 1e-13) << form << " a " << a << " point " << i;
        }
    }
  }
}

TEST(Mixture, ExactSamplesHaveMixtureMomentsAndWeights) {
  // n = 2^17 samples of a 1-D three-component mixture at a channel: the sample mean has standard error
  // sqrt(Var / n) and each component share sqrt(w (1 - w) / n); 5 standard errors each.
  const gaussian_mixture mix(1, {0.2, 0.5, 0.3}, {-4, 0, 5}, {0.5, 1, 2});
  const channel ch{0.8, 0.6};
  const std::int64_t n = 1 << 17;
  std::vector<float> x(n);
  std::vector<std::int32_t> labels(n);
  mix.sample(x.data(), n, ch, 17, labels.data(), 0, {executor::cpu});
  double mean = 0, second = 0;
  const double w[3] = {0.2, 0.5, 0.3}, mu[3] = {-4, 0, 5}, v[3] = {0.5, 1, 2};
  for (int k = 0; k < 3; ++k) {
    mean += w[k] * ch.a * mu[k];
    second += w[k] * (ch.a * ch.a * (mu[k] * mu[k] + v[k]) + ch.s * ch.s);
  }
  const double var = second - mean * mean;
  std::vector<double> xd(x.begin(), x.end());
  EXPECT_NEAR(dt::mean(xd), mean, 5 * std::sqrt(var / n));
  // Var of the sample variance ~ (mu4 - var^2) / n, with the mixture's exact fourth central moment
  // mu4 = sum_k w_k (delta_k^4 + 6 delta_k^2 c_k + 3 c_k^2), delta_k = a mu_k - mean, c_k = a^2 v_k + s^2 (a bound
  // of 9 var^2 stood for it, 12.5 standard errors wide: a sampler drawing a v_k + s^2 passed).
  double mu4 = 0;
  for (int k = 0; k < 3; ++k) {
    const double delta = ch.a * mu[k] - mean, c = ch.a * ch.a * v[k] + ch.s * ch.s;
    mu4 += w[k] * (delta * delta * delta * delta + 6 * delta * delta * c + 3 * c * c);
  }
  EXPECT_NEAR(dt::variance(xd), var, 5 * std::sqrt((mu4 - var * var) / n));
  for (int k = 0; k < 3; ++k) {
    const double share = std::count(labels.begin(), labels.end(), k) / double(n);
    EXPECT_NEAR(share, w[k], 5 * std::sqrt(w[k] * (1 - w[k]) / n)) << "component " << k;
    // Within each component (its label): mean a mu_k and variance c_k = a^2 v_k + s^2, 5 standard errors each
    // (the sample variance of n_k normal draws: sd c_k sqrt(2 / (n_k - 1))).
    std::vector<double> xk;
    for (std::int64_t i = 0; i < n; ++i)
      if (labels[i] == k) xk.push_back(x[i]);
    const double c = ch.a * ch.a * v[k] + ch.s * ch.s, nk = double(xk.size());
    EXPECT_NEAR(dt::mean(xk), ch.a * mu[k], 5 * std::sqrt(c / nk)) << "component " << k;
    EXPECT_NEAR(dt::variance(xk), c, 5 * c * std::sqrt(2 / (nk - 1))) << "component " << k;
  }
}

// The component of an exact sample (kernels::pick_component, a binary search) is the one a scan from the front
// finds: the first k with u <= cumulative weight k, else the last, on cumulative weights with ties (equal and zero
// weights), with u at 0, at every cumulative value, between them and above the last (rounding). Seen failing with
// the search's "<=" made "<" (the tie at a cumulative value went to the next component).
TEST(Mixture, ComponentPickIsTheFirstCumulativeAtOrAboveU) {
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int K : {1, 2, 3, 7, 64, 1000}) {
    std::vector<double> w(K);
    for (int k = 0; k < K; ++k) w[k] = (k % 5 == 3) ? 0.0 : (k % 3 == 0 ? 1.0 : unit(gen));
    double total = 0;
    for (double v : w) total += v;
    if (total == 0) w[0] = total = 1;
    std::vector<float> c(K);
    double run = 0;
    for (int k = 0; k < K; ++k) c[k] = float((run += w[k]) / total);
    std::vector<float> us = {0.f, 1.f, 1.0000001f};
    for (float v : c) us.insert(us.end(), {v, std::nextafter(v, 0.f), std::nextafter(v, 2.f)});
    for (int r = 0; r < 200; ++r) us.push_back(float(unit(gen)));
    for (float u : us) {
      int scan = K - 1;
      for (int k = 0; k < K - 1; ++k)
        if (u <= c[k]) {
          scan = k;
          break;
        }
      ASSERT_EQ(kernels::pick_component(c.data(), K, u), scan) << "K " << K << ", u " << u;
    }
  }
}

TEST(Mixture, SamplesDoNotDependOnBatchSplit) {
  const auto mix = grid_mixture(3, 5, 4.0, 0.5);
  const std::int64_t n = 1000;
  std::vector<float> whole(n * 3), parts(n * 3);
  mix.sample(whole.data(), n, {}, 5, nullptr, 0, {executor::cpu});
  mix.sample(parts.data(), 400, {}, 5, nullptr, 0, {executor::cpu});
  mix.sample(parts.data() + 400 * 3, n - 400, {}, 5, nullptr, 400, {executor::cpu});
  EXPECT_EQ(whole, parts);
}

TEST(MixtureGpu, CudaMatchesCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  const int d = 10;
  const auto mix = random_mixture(25, d, false, 4.0, 6);
  const std::int64_t n = 4096;
  const auto x64 = random_points(n, d, 4.0, 1);
  std::vector<float> x(x64.begin(), x64.end()), cpu(n * d);
  dt::device_buffer<float> dx(x), dout(n * d);
  for (quantity q : {quantity::score, quantity::denoiser}) {
    mix.evaluate(cpu.data(), n, x.data(), {0.7, 0.5}, q, {executor::cpu});
    EXPECT_EQ(mix.evaluate(dout.ptr, n, dx.ptr, {0.7, 0.5}, q), executor::cuda);
    const auto gpu = dout.download();
    for (std::int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i]))) << i;
  }
  // Denoiser Jacobian-vector products, isotropic and diagonal mixtures, same FP32 functor on both executors: they
  // differ by FP32 rounding only (exp, division and contraction order), so 1e-4 relative as above.
  const auto v64 = random_points(n, d, 1.0, 2);
  std::vector<float> v(v64.begin(), v64.end());
  dt::device_buffer<float> dv(v);
  for (bool iso : {true, false}) {
    const auto m2 = random_mixture(25, d, iso, 4.0, 7);
    m2.denoiser_jvp(cpu.data(), n, x.data(), v.data(), {0.7, 0.5}, {executor::cpu});
    EXPECT_EQ(m2.denoiser_jvp(dout.ptr, n, dx.ptr, dv.ptr, {0.7, 0.5}), executor::cuda);
    const auto gpu = dout.download();
    for (std::int64_t i = 0; i < n * d; ++i)
      ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i]))) << "jvp, isotropic " << iso << ", " << i;
  }
  // At a = 0 (the linear interpolant's and the cosine schedule's t = 1): the same closed forms on both executors
  // (N(0, s^2 I), the prior mean, J v = 0), through the same functors.
  for (quantity q : {quantity::score, quantity::denoiser}) {
    mix.evaluate(cpu.data(), n, x.data(), {0.0, 0.5}, q, {executor::cpu});
    EXPECT_EQ(mix.evaluate(dout.ptr, n, dx.ptr, {0.0, 0.5}, q), executor::cuda);
    const auto gpu = dout.download();
    for (std::int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i]))) << "a = 0, " << i;
  }
  for (bool iso : {true, false}) {
    const auto m2 = random_mixture(25, d, iso, 4.0, 7);
    EXPECT_EQ(m2.denoiser_jvp(dout.ptr, n, dx.ptr, dv.ptr, {0.0, 0.5}), executor::cuda);
    const auto gpu = dout.download();
    for (std::int64_t i = 0; i < n * d; ++i) ASSERT_EQ(gpu[i], 0.f) << "jvp at a = 0, isotropic " << iso << ", " << i;
  }
  // Exact samples: component labels come from uniform bits, identical on both executors.
  std::vector<std::int32_t> lcpu(n);
  dt::device_buffer<std::int32_t> lgpu(n);
  mix.sample(cpu.data(), n, {}, 3, lcpu.data(), 0, {executor::cpu});
  mix.sample(dout.ptr, n, {}, 3, lgpu.ptr);
  EXPECT_EQ(lgpu.download(), lcpu);
  const auto gpu = dout.download();
  for (std::int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i]))) << i;
}

// The CUDA executor stages each block's rows through shared memory (kernels/launch.cuh for_each_row_staged_kernel)
// from d = 8: at d = 100 in blocks of 32 rows (the stage's 33 x 2 d floats, 3 d for the JVP), here 1,027 points
// (the last block partial), and at d = 3 the direct kernel; score, denoiser, log-density and the JVP of isotropic
// and diagonal mixtures against the CPU executor within FP32 rounding, as CudaMatchesCpu. The staging itself runs
// on the host in RowStaging.StagedBlocksGiveTheGlobalRowsResultsBitForBit (tests/test_simd.cpp).
TEST(MixtureGpu, StagedRowsMatchTheCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t n = 1027;
  for (const int d : {3, 100}) {
    for (const bool iso : {true, false}) {
      const auto mix = random_mixture(25, d, iso, 4.0, 8);
      const auto x64 = random_points(n, d, 4.0, 3), v64 = random_points(n, d, 1.0, 4);
      const std::vector<float> x(x64.begin(), x64.end()), v(v64.begin(), v64.end());
      std::vector<float> cpu(n * d);
      dt::device_buffer<float> dx(x), dv(v), dout(n * d);
      for (quantity q : {quantity::score, quantity::denoiser, quantity::log_density}) {
        const std::int64_t width = q == quantity::log_density ? 1 : d;
        mix.evaluate(cpu.data(), n, x.data(), {0.7, 0.5}, q, {executor::cpu});
        EXPECT_EQ(mix.evaluate(dout.ptr, n, dx.ptr, {0.7, 0.5}, q), executor::cuda);
        const auto gpu = dout.download();
        for (std::int64_t i = 0; i < n * width; ++i)
          ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i])))
              << "d " << d << ", isotropic " << iso << ", quantity " << int(q) << ", " << i;
      }
      mix.denoiser_jvp(cpu.data(), n, x.data(), v.data(), {0.7, 0.5}, {executor::cpu});
      EXPECT_EQ(mix.denoiser_jvp(dout.ptr, n, dx.ptr, dv.ptr, {0.7, 0.5}), executor::cuda);
      const auto gpu = dout.download();
      for (std::int64_t i = 0; i < n * d; ++i)
        ASSERT_NEAR(gpu[i], cpu[i], 1e-4 * (1 + std::abs(cpu[i]))) << "jvp, d " << d << ", isotropic " << iso << ", " << i;
    }
  }
}

// Components of weight below the FP32 uniform's resolution near 1 (2^-24, about 6e-8) are drawn with their
// probability. Weights: 0.5, then M = 2^20 components of weight 2^-26 each (total 2^-6), then the rest. Their
// cumulative weights 0.5 + j 2^-26 are exact in FP64; in FP32 (spacing 2^-24 above 0.5) four consecutive ones share
// one value, so with FP32 cumulative weights and an FP32 uniform only the first of each four could be drawn, and
// tiny component j = 1 (which rounds onto the large component's 0.5) and every fourth after it never. With
// n = 2^22 draws: the tiny components' share is 2^-6 (standard error sqrt(p (1 - p) / n) = 6.1e-5), and of the
// about n 2^-6 = 65536 tiny draws those with j = 1 mod 4 make a quarter (standard error sqrt(3 / 16 / 65536) =
// 0.0017); 5 standard errors each. Seen failing with the FP32 pick (share of j = 1 mod 4: exactly 0).
TEST(Mixture, ComponentsBelowTheFp32UniformsResolutionAreDrawn) {
  const std::int64_t M = std::int64_t(1) << 20, K = M + 2, n = std::int64_t(1) << 22;
  const auto size = static_cast<std::size_t>(K);
  std::vector<double> w(size, std::ldexp(1.0, -26)), means(size), var(size, 1.0);
  w[0] = 0.5;
  w[std::size_t(K - 1)] = 0.5 - std::ldexp(1.0, -6);
  for (std::int64_t k = 0; k < K; ++k) means[std::size_t(k)] = double(k % 7);
  const gaussian_mixture mix(1, w, means, var);
  std::vector<float> x(static_cast<std::size_t>(n));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  mix.sample(x.data(), n, {}, 11, labels.data(), 0, {executor::cpu});
  std::int64_t tiny = 0, quarter = 0;
  for (const std::int32_t k : labels) {
    if (k < 1 || k > M) continue;
    ++tiny;
    quarter += (k - 1) % 4 == 0;  // tiny component j = k with j = 1 mod 4
  }
  const double p = std::ldexp(1.0, -6);
  EXPECT_NEAR(double(tiny) / n, p, 5 * std::sqrt(p * (1 - p) / n));
  ASSERT_GT(tiny, 0);
  EXPECT_NEAR(double(quarter) / tiny, 0.25, 5 * std::sqrt(0.25 * 0.75 / (p * n)));
}

// The constructor's FP32 copy of the means, in a fresh process (the death test's re-run of this program: a small heap,
// so that the copy cannot come from memory the allocator already holds) whose address space is limited (RLIMIT_AS)
// to what it holds once the K x d = 1 x 2^23 means (64 MiB of doubles) are made, plus 8 MiB: the 32 MiB copy cannot
// be allocated, every smaller table can. The body's exit code says what happened (0: out_of_memory naming the copy,
// 1: std::bad_alloc, 2: no exception, 3: another exception, 4: the limit could not be set); its message goes to
// stderr. Seen failing with std::bad_alloc (exit 1), which is no diffsample::error and names nothing.
[[noreturn]] void construct_where_the_fp32_means_cannot_be_allocated() {
  (void)cuda_available();  // the runtime's probe before the limit, as a program would have made it
  const std::int64_t d = std::int64_t(1) << 23;
  std::vector<double> means(static_cast<std::size_t>(d), 0.0);
  std::size_t pages = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%zu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  rlimit limit{};
  if (pages == 0 || ::getrlimit(RLIMIT_AS, &limit) != 0) ::_exit(4);
  limit.rlim_cur = pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) + (std::size_t(8) << 20);
  if (::setrlimit(RLIMIT_AS, &limit) != 0) ::_exit(4);
  try {
    const gaussian_mixture m(d, {1.0}, std::move(means), {1.0});
    ::_exit(2);
  } catch (const out_of_memory& e) {
    std::fprintf(stderr, "%s\n", e.what());
    ::_exit(0);
  } catch (const std::bad_alloc&) {
    ::_exit(1);
  } catch (...) {
    ::_exit(3);
  }
}

TEST(Mixture, HostTablesBeyondTheHostAreOutOfMemory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(construct_where_the_fp32_means_cannot_be_allocated(), ::testing::ExitedWithCode(0),
              "gaussian_mixture: the FP32 copy of the means \\(K x d floats\\) for K = 1, d = 8388608 could not be "
              "allocated on the host \\(33554432 bytes\\)");
}

// A channel that takes a component's variance c = a^2 v + s^2 below min_variance, a^2 v above max_variance or a
// mean's a mu beyond max_abs_value, is refused by the FP32 evaluations (invalid_argument naming the channel and the bound): the
// kernels divide by c and use 1 / c, which left the FP32 range. Seen failing before the check, where these channels
// gave NaN or inf scores, log-densities and JVPs while the FP64 reference is finite: v = 1e-36 at a = 1e-3, s = 0
// (c = 1e-42: score NaN), a = 0 with s = 1e-20 on a unit-variance mixture (c = 1e-40: log-density -5e36, score
// NaN), a = 1e-18, s = 0 (c = 1e-36 is kept; the JVP there is the next case's), and a^2 v above 1e36.
TEST(Mixture, ChannelsThatTakeTheVarianceOutOfTheFp32RangeAreRefused) {
  const int d = 2;
  struct refused {
    double v, mu, a, s;
    const char* says;
  };
  for (const refused& r : {refused{1e-36, 1.0, 1e-3, 0.0, "is below min_variance = 1e-36"},
                           refused{1.0, 1.0, 0.0, 1e-20, "is below min_variance = 1e-36"},
                           refused{1e-30, 1.0, 1e-4, 1e-19, "is below min_variance = 1e-36"},
                           refused{1e36, 1.0, 2.0, 0.0, "a^2 v = 4e+36 at a = 2 and the largest variance v = 1e+36 is above max_variance = 1e+36"},
                           refused{1.0, 1e18, 10.0, 0.0, "is above max_abs_value = 1e+18"}}) {
    const gaussian_mixture mix(d, {0.4, 0.6}, {r.mu, -r.mu, -0.5 * r.mu, 0.25 * r.mu}, {r.v, r.v});
    const channel ch{r.a, r.s};
    // The FP64 reference stays defined there, and finite.
    const std::vector<double> x64 = {r.a * r.mu, -r.a * r.mu, 0.0, 0.0};
    std::vector<double> ref(4);
    mix.evaluate_fp64(ref.data(), 2, x64.data(), ch, quantity::log_density);
    EXPECT_TRUE(std::isfinite(ref[0]) && std::isfinite(ref[1]));
    const std::vector<float> x(x64.begin(), x64.end()), v = {0.3f, -0.2f, 1.f, 0.5f};
    std::vector<float> out(4);
    char where[96];
    std::snprintf(where, sizeof where, "v = %g, mu = %g, a = %g, s = %g", r.v, r.mu, r.a, r.s);
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      for (mixture_path path : {mixture_path::direct, mixture_path::gemm}) {
        evaluate_options o;
        o.path = path;
        try {
          mix.evaluate(out.data(), 2, x.data(), ch, q, o, {executor::cpu});
          ADD_FAILURE() << "accepted " << where << ": " << out[0] << " " << out[1];
        } catch (const invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("ch: "), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find(r.says), std::string::npos) << e.what();
        }
      }
    }
    EXPECT_THROW(mix.denoiser_jvp(out.data(), 2, x.data(), v.data(), ch, {executor::cpu}), invalid_argument) << where;
    langevin_options lo;
    lo.target = ch;
    lo.steps = 1;
    EXPECT_THROW(langevin(mix, out.data(), {}, 2, lo, {executor::cpu}), invalid_argument) << where;
  }
  // The bounds themselves are accepted: c = 1e-36 exactly (a = 1, s = 0 on the smallest variance), and
  // a = s = 1e18 on a unit variance (c = 2e36, its inverse a normal float).
  const gaussian_mixture tiny(1, {1.0}, {0.0}, {min_variance});
  std::vector<float> x = {1e-18f}, out(1);
  tiny.evaluate(out.data(), 1, x.data(), {1.0, 0.0}, quantity::score, {executor::cpu});
  EXPECT_NEAR(out[0], -1e18, 1e12);
  const gaussian_mixture unit(1, {1.0}, {1.0}, {1.0});
  x = {1e18f};
  unit.evaluate(out.data(), 1, x.data(), {1e18, 1e18}, quantity::score, {executor::cpu});
  EXPECT_TRUE(std::isfinite(out[0]));
}

// The posterior mean of a component, (s^2 mu + a v x) / c, is formed from s^2 / c and a v / c (at most 1 and 1 / a):
// s^2 mu and a v x overflowed FP32 for admitted values (s = 1e18 with |mu| = 1e18; v = 1e36 with x = 3e17) and gave
// NaN denoisers where the FP64 reference is of size 1e18. Seen failing before: the CPU executor's diagonal denoiser
// (channel_denoiser) and the FP32 mixture_denoiser (the CUDA executor's direct path) returned NaN.
TEST(Mixture, DenoiserStaysFiniteWhereSSquaredMuOrAVXPassFp32) {
  const int d = 2;
  struct extreme {
    double v, mu, a, s;
  };
  for (const extreme& e : {extreme{1.0, 1e18, 0.5, 1e18}, extreme{1e36, 1.0, 0.5, 1.0}, extreme{1e36, 1e18, 1.0, 0.0},
                           extreme{1e-36, 1e18, 1e-3, 1e18}}) {
    const std::vector<double> means = {e.mu, -e.mu, -0.5 * e.mu, 0.25 * e.mu};
    const gaussian_mixture diag(d, {0.4, 0.6}, means, std::vector<double>(4, e.v));
    const gaussian_mixture iso(d, {0.4, 0.6}, means, {e.v, e.v});
    const double c = e.a * e.a * e.v + e.s * e.s;
    const std::vector<float> x = {float(e.a * e.mu + 0.3 * std::sqrt(c)), float(-e.a * e.mu - 0.7 * std::sqrt(c)),
                                  float(-0.5 * e.a * e.mu + std::sqrt(c)), float(0.25 * e.a * e.mu)};
    const std::vector<double> x64(x.begin(), x.end());
    char where[96];
    std::snprintf(where, sizeof where, "v = %g, mu = %g, a = %g, s = %g", e.v, e.mu, e.a, e.s);
    for (const gaussian_mixture* mix : {&diag, &iso}) {
      std::vector<double> ref(4);
      mix->evaluate_fp64(ref.data(), 2, x64.data(), {e.a, e.s}, quantity::denoiser);
      std::vector<float> got(4);
      mix->evaluate(got.data(), 2, x.data(), {e.a, e.s}, quantity::denoiser, {executor::cpu});
      // The FP32 tables as the CUDA executor holds them.
      std::vector<float> lw, mu32(mix->means().begin(), mix->means().end()),
          v32(mix->variances().begin(), mix->variances().end());
      for (double w : mix->weights()) lw.push_back(float(std::log(w)));
      const kernels::mixture_view<float> view{lw.data(), mu32.data(), v32.data(), 2, d, mix->isotropic()};
      for (int i = 0; i < 2; ++i) {
        const kernels::strided_vec<const float> xi{x.data() + i * d, 1, d};
        float dev[2];
        kernels::mixture_denoiser(view, xi, float(e.a), float(e.s), dev);
        for (int j = 0; j < d; ++j) {
          const double r = ref[i * d + j], tol = 1e-5 * std::abs(r) + 1e-5 * (std::abs(ref[0]) + std::abs(ref[1]));
          ASSERT_TRUE(std::isfinite(r)) << where;
          EXPECT_NEAR(got[i * d + j], r, tol) << where << (mix == &iso ? " isotropic" : " diagonal") << " cpu";
          EXPECT_NEAR(dev[j], r, tol) << where << (mix == &iso ? " isotropic" : " diagonal") << " mixture_denoiser";
        }
      }
    }
  }
}
