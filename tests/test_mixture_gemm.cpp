// The gemm path of gaussian_mixture::evaluate (large isotropic mixtures): log-density, score and denoiser against the
// FP64 reference at K in {1, 1024, 65536} and d in {2, 64, 3072} (K = 65536 with d = 3072 left out: 3 GB of means),
// near the data, far from it and as s -> 0; invariance under chunking; the path choice; empirical mixtures.
//
// Tolerance: the centred form's accuracy is the reference. Over each batch of points, the gemm path's worst error
// against FP64 must stay within 4 x the FP32 direct path's worst error plus a rounding floor of the output itself
// (u = 2^-24: 4 u (|log p| + d) for the log-density; 16 u (|x'| + a max |mu'|) / c_min for the score, the size of
// the two terms a sum W mu' and x' sum W it subtracts; 16 u (max |mu| + max |x|) for the denoiser). The worst error
// over a batch is a stable statistic (a maximum over the same points for both paths); the floor is a few ulps.
// Seen failing against a wrong kernel: with the correction switched off (gemm_correct_factor = 1e30) the s -> 0 and
// s = 0.3 near-data log-densities fail (d = 64: 2.4e-3 against 1.3e-4 allowed; d = 3072: 0.063 against 0.0096).
// The JVP test fails with the second pass's pbar set to 0 (errors 41 against 3.8e-4 allowed at K = 1024, d = 64).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

using namespace diffsample;

namespace {

constexpr double unit_roundoff = 5.9604644775390625e-08;

struct data_case {
  int K;
  int d;
  const char* name;
};
void PrintTo(const data_case& c, std::ostream* os) { *os << c.name; }

// K means around an offset of 3 per coordinate (the recentring must remove it), spread 1 per coordinate, isotropic
// variances in [0.5, 1.5] x base_variance, unequal weights.
gaussian_mixture data_mixture(int K, int d, double base_variance, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z(0, 1);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<double> w(K), mu(std::size_t(K) * d), v(K);
  for (auto& x : w) x = u(gen);
  for (auto& x : mu) x = 3.0 + z(gen);
  for (auto& x : v) x = base_variance * u(gen);
  return gaussian_mixture(d, std::move(w), std::move(mu), std::move(v));
}

// n points: near ones are exact samples of p_t (a mu_k + sqrt(a^2 v_k + s^2) z); far ones are 30 data scales away.
std::vector<float> points(const gaussian_mixture& m, int n, channel ch, bool far, unsigned seed) {
  std::vector<float> x(std::size_t(n) * m.dim());
  if (!far) {
    m.sample(x.data(), n, ch, seed, nullptr, 0, {executor::cpu});
    return x;
  }
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z(0, 1);
  for (auto& v : x) v = float(ch.a * 3.0 + 30.0 * z(gen));
  return x;
}

void check_quantity(const gaussian_mixture& m, quantity what, const std::vector<float>& x, int n, channel ch,
                    const char* label) {
  const int d = int(m.dim()), K = int(m.components());
  const std::size_t width = what == quantity::log_density ? 1 : std::size_t(d);
  std::vector<double> x64(x.begin(), x.end()), ref(n * width);
  m.evaluate_fp64(ref.data(), n, x64.data(), ch, what);
  std::vector<float> got(n * width), direct(n * width);
  evaluate_options gemm_opt;
  gemm_opt.path = mixture_path::gemm;
  const evaluate_report r = m.evaluate(got.data(), n, x.data(), ch, what, gemm_opt, {executor::cpu});
  ASSERT_EQ(r.path, mixture_path::gemm);
  ASSERT_EQ(r.ran, executor::cpu);
  evaluate_options direct_opt;
  direct_opt.path = mixture_path::direct;
  ASSERT_EQ(m.evaluate(direct.data(), n, x.data(), ch, what, direct_opt, {executor::cpu}).path, mixture_path::direct);

  // Centre and spread of the means as the gemm path sees them.
  std::vector<double> centre(d, 0.0);
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < d; ++j) centre[j] += m.means()[std::size_t(k) * d + j] / K;
  double max_mu = 0, min_c = INFINITY;
  for (int k = 0; k < K; ++k) {
    double q = 0;
    for (int j = 0; j < d; ++j) {
      const double e = m.means()[std::size_t(k) * d + j] - centre[j];
      q += e * e;
    }
    max_mu = std::max(max_mu, std::sqrt(q));
    min_c = std::min(min_c, ch.a * ch.a * m.variances()[k] + ch.s * ch.s);
  }
  double max_x = 0, max_mean = 0;
  for (double v : x64) max_x = std::max(max_x, std::abs(v));
  for (double v : m.means()) max_mean = std::max(max_mean, std::abs(v));
  double worst_gemm = 0, worst_direct = 0, floor = 0;
  for (int i = 0; i < n; ++i) {
    double xn = 0;
    for (int j = 0; j < d; ++j) {
      const double e = x64[std::size_t(i) * d + j] - ch.a * centre[j];
      xn += e * e;
    }
    xn = std::sqrt(xn);
    for (std::size_t j = 0; j < width; ++j) {
      const std::size_t e = i * width + j;
      ASSERT_TRUE(std::isfinite(got[e])) << label << " point " << i << " entry " << j;
      // Rounding floor of the output itself: a few ulps of the magnitudes it is assembled from.
      if (what == quantity::log_density)
        floor = std::max(floor, 4 * unit_roundoff * (std::abs(ref[e]) + d));
      else if (what == quantity::score)
        floor = std::max(floor, 16 * unit_roundoff * (xn + ch.a * max_mu) / min_c);
      else
        floor = std::max(floor, 16 * unit_roundoff * (max_mean + max_x));
      worst_gemm = std::max(worst_gemm, std::abs(got[e] - ref[e]));
      worst_direct = std::max(worst_direct, std::abs(direct[e] - ref[e]));
    }
  }
  const double allowed = 4 * worst_direct + floor;
  std::printf("  %-28s worst |err| gemm %.3g direct %.3g, allowed %.3g\n", label, worst_gemm, worst_direct, allowed);
  EXPECT_LE(worst_gemm, allowed) << label;
}

class GemmAgainstFp64 : public ::testing::TestWithParam<data_case> {};

TEST_P(GemmAgainstFp64, NearFarAndSmallNoise) {
  const data_case c = GetParam();
  // Few points at the large sizes: the FP64 reference costs K d per point and quantity.
  const double work = double(c.K) * c.d;
  const int n = work > 1e7 ? 3 : work > 1e5 ? 8 : 40;
  const gaussian_mixture m = data_mixture(c.K, c.d, 1e-2, 11u + c.K + c.d);
  struct setting {
    channel ch;
    bool far;
    const char* name;
  };
  const setting settings[] = {{{1.0, 1.0}, false, "a=1 s=1 near"},
                              {{0.8, 0.3}, false, "a=0.8 s=0.3 near"},
                              {{1.0, 1e-3}, false, "a=1 s=1e-3 near"},
                              {{0.9, 1e-4}, false, "a=0.9 s=1e-4 near"},
                              {{1.0, 0.5}, true, "a=1 s=0.5 far"},
                              {{1.0, 1e-3}, true, "a=1 s=1e-3 far"}};
  for (const setting& s : settings) {
    const std::vector<float> x = points(m, n, s.ch, s.far, 99);
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      const std::string label = std::string(s.name) + (q == quantity::log_density ? " log p"
                                                       : q == quantity::score    ? " score"
                                                                                 : " denoiser");
      check_quantity(m, q, x, n, s.ch, label.c_str());
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, GemmAgainstFp64,
                         ::testing::Values(data_case{1, 2, "K1_d2"}, data_case{1, 64, "K1_d64"},
                                           data_case{1, 3072, "K1_d3072"}, data_case{1024, 2, "K1024_d2"},
                                           data_case{1024, 64, "K1024_d64"}, data_case{1024, 3072, "K1024_d3072"},
                                           data_case{65536, 2, "K65536_d2"}, data_case{65536, 64, "K65536_d64"}),
                         [](const auto& info) { return std::string(info.param.name); });

// The denoiser JVP on the gemm path (CPU) against FP64, near and far, as s -> 0; same criterion as above, with the
// rounding floor 16 u |v| (a v_k / c_k + a s^2 |n|^2) for the output, n_k = mu'_k / c_k + x' e_k (the terms the JVP's
// gemm form sums and subtracts: kernels/mixture_gemm.cuh), bounded here by 16 u max|v| (max a v_k / c_k + a s^2 N^2),
// N = max|mu'| / c_min + max|x'| max|e_k|.
TEST(GemmPath, DenoiserJvpAgainstFp64) {
  for (const data_case c : {data_case{1, 64, "K1_d64"}, data_case{1024, 64, "K1024_d64"},
                            data_case{2048, 512, "K2048_d512"}}) {
    const int n = 12, d = c.d, K = c.K;
    const gaussian_mixture m = data_mixture(K, d, 1e-2, 31u + K);
    std::vector<double> centre(d, 0.0);
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < d; ++j) centre[j] += m.means()[std::size_t(k) * d + j] / K;
    double max_mu = 0;
    for (int k = 0; k < K; ++k) {
      double q = 0;
      for (int j = 0; j < d; ++j) q += std::pow(m.means()[std::size_t(k) * d + j] - centre[j], 2);
      max_mu = std::max(max_mu, std::sqrt(q));
    }
    for (const channel ch : {channel{1.0, 1.0}, channel{0.8, 0.3}, channel{1.0, 1e-3}}) {
      for (bool far : {false, true}) {
        const std::vector<float> x = points(m, n, ch, far, 17);
        std::vector<float> v(x.size());
        std::mt19937_64 gen(5);
        std::normal_distribution<double> z(0, 1);
        for (auto& e : v) e = float(z(gen));
        std::vector<double> x64(x.begin(), x.end()), v64(v.begin(), v.end()), ref(x.size());
        m.denoiser_jvp_fp64(ref.data(), n, x64.data(), v64.data(), ch);
        std::vector<float> got(x.size()), direct(x.size());
        evaluate_options o;
        o.path = mixture_path::gemm;
        const evaluate_report r = m.denoiser_jvp(got.data(), n, x.data(), v.data(), ch, o, {executor::cpu});
        ASSERT_EQ(r.path, mixture_path::gemm);
        m.denoiser_jvp(direct.data(), n, x.data(), v.data(), ch, {executor::cpu});
        double min_c = INFINITY, max_xs = 0, max_v = 0, max_xn = 0, max_e = 0;
        const double c0 = ch.a * ch.a * m.variances()[0] + ch.s * ch.s;
        for (int k = 0; k < K; ++k) {
          const double cc = ch.a * ch.a * m.variances()[k] + ch.s * ch.s;
          min_c = std::min(min_c, cc);
          max_xs = std::max(max_xs, ch.a * m.variances()[k] / cc);
          max_e = std::max(max_e, std::abs(ch.a * (m.variances()[k] - m.variances()[0]) / (cc * c0)));
        }
        for (float e : v) max_v = std::max(max_v, double(std::abs(e)));
        for (int i = 0; i < n; ++i) {
          double q = 0;
          for (int j = 0; j < d; ++j) q += std::pow(x64[std::size_t(i) * d + j] - ch.a * centre[j], 2);
          max_xn = std::max(max_xn, std::sqrt(q));
        }
        const double N = max_mu / min_c + max_xn * max_e;
        const double floor = 16 * unit_roundoff * max_v * (max_xs + ch.a * ch.s * ch.s * N * N);
        double worst_gemm = 0, worst_direct = 0;
        for (std::size_t e = 0; e < ref.size(); ++e) {
          ASSERT_TRUE(std::isfinite(got[e])) << c.name << " entry " << e;
          worst_gemm = std::max(worst_gemm, std::abs(got[e] - ref[e]));
          worst_direct = std::max(worst_direct, std::abs(direct[e] - ref[e]));
        }
        const double allowed = 4 * worst_direct + floor;
        std::printf("  %-10s a=%g s=%g %-4s JVP worst |err| gemm %.3g direct %.3g, allowed %.3g\n", c.name, ch.a,
                    ch.s, far ? "far" : "near", worst_gemm, worst_direct, allowed);
        EXPECT_LE(worst_gemm, allowed) << c.name << " a=" << ch.a << " s=" << ch.s << (far ? " far" : " near");
      }
    }
  }
}

// The denoiser JVP on the gemm path at the noisy end of an Ornstein-Uhlenbeck schedule (a = e^-t, s^2 = 1 - e^-2t,
// t = 5 .. 90), against denoiser_jvp_fp64, within a bound derived from FP32's unit roundoff u = 2^-24. With r_k the
// responsibilities, c_k = a^2 v_k + s^2, x' = x - a m (m the mean of the means), mu'_k = mu_k - m,
// e_k = a (v_k - v_0) / (c_k c_0) and n_k = mu'_k / c_k + x' e_k, the path forms
//   J v = a [ v sum_k r_k v_k / c_k + s^2 sum_k r_k (p_k - pbar) n_k ],  p_k = n_k . v, pbar = sum_k r_k p_k.
// First-order rounding, with P_k = (|mu'_k| / c_k + |x'| |e_k|) |v| >= |p_k| (the size p_k is rounded at), Pbar =
// sum_k r_k P_k and N_kj = |mu'_kj| / c_k + |x'_j| |e_k|:
//   p_k (the product mu'_k . v, its operands rounded once)   <= (gamma_d + 4 u) P_k,
//   pbar (a sum of K terms, the weights' relative error eps_w) <= (gamma_K + eps_w + 4 u) Pbar + that,
//   the weighted sums over k (the fourth product, K terms)   <= (gamma_K + eps_w + 4 u) of their absolute terms,
//   n_top sum_k B_k (the part common to every k taken out)  <= the same times N_top,j,
// so |err_j| <= C a [ |v_j| sum_k r_k v_k / c_k + s^2 sum_k r_k (P_k + Pbar) (N_kj + N_top,j) ] with
// C = 2 (gamma_d + gamma_K + eps_w) + 16 u, eps_w = 2 max_k e_k + gamma_K (e_k: the path's own bound on the expanded
// logit's error, kernels/mixture_gemm.cuh, which also bounds those it recomputes centred). Nothing in it grows as a -> 0:
// the form has no term of size |x| / a. On the 25-component grid (d = 10, modes 8 apart, equal variances: e_k = 0)
// and a 64-component mixture with unequal variances and weights around an offset of 3 (d = 16), 16 exact samples of
// p_t and 4 points 30 scales away. Seen failing with the former delta_k form (largest error over the bound 1.6e-3,
// 3.7e5, 2.7e14, 1.9e23 at t = 5, 10, 20, 30 on the grid; inf at t = 90).
TEST(GemmPath, DenoiserJvpAtTheNoisyEnd) {
  struct mix_case {
    gaussian_mixture m;
    const char* name;
  };
  const mix_case cases[] = {{grid_mixture(10, 5, 8.0, 1.0), "grid25_d10"}, {data_mixture(64, 16, 1.0, 7u), "K64_d16"}};
  const double u = unit_roundoff;
  for (const mix_case& mc : cases) {
    const gaussian_mixture& m = mc.m;
    const int d = int(m.dim()), K = int(m.components());
    std::vector<double> centre(d, 0.0), logw(K);
    for (int k = 0; k < K; ++k) {
      logw[k] = std::log(m.weights()[k]);
      for (int j = 0; j < d; ++j) centre[j] += m.means()[std::size_t(k) * d + j] / K;
    }
    const double gamma_d = d * u / (1 - d * u), gamma_K = K * u / (1 - K * u);
    for (const double t : {5.0, 10.0, 20.0, 30.0, 90.0}) {
      const channel ch{std::exp(-t), std::sqrt(-std::expm1(-2 * t))};
      const double a = ch.a, s2 = ch.s * ch.s;
      const int near = 16, n = near + 4;
      std::vector<float> x(std::size_t(n) * d);
      m.sample(x.data(), near, ch, 23, nullptr, 0, {executor::cpu});
      std::mt19937_64 gen(41);
      std::normal_distribution<double> z(0, 1);
      for (std::size_t e = std::size_t(near) * d; e < x.size(); ++e) x[e] = float(a * 3.0 + 30.0 * z(gen));
      std::vector<float> v(x.size());
      for (auto& e : v) e = float(z(gen));
      std::vector<double> x64(x.begin(), x.end()), v64(v.begin(), v.end()), ref(x.size());
      m.denoiser_jvp_fp64(ref.data(), n, x64.data(), v64.data(), ch);
      std::vector<float> got(x.size()), direct(x.size());
      evaluate_options o;
      o.path = mixture_path::gemm;
      ASSERT_EQ(m.denoiser_jvp(got.data(), n, x.data(), v.data(), ch, o, {executor::cpu}).path, mixture_path::gemm);
      m.denoiser_jvp(direct.data(), n, x.data(), v.data(), ch, {executor::cpu});
      double worst_ratio = 0, worst_err = 0, worst_direct = 0, largest = 0;
      for (int i = 0; i < n; ++i) {
        const double* xi = x64.data() + std::size_t(i) * d;
        const double* vi = v64.data() + std::size_t(i) * d;
        std::vector<double> xc(d), r(K), c(K), e(K), P(K);
        double xn = 0, vn = 0;
        for (int j = 0; j < d; ++j) {
          xc[j] = xi[j] - a * centre[j];
          xn += xc[j] * xc[j];
          vn += vi[j] * vi[j];
        }
        xn = std::sqrt(xn);
        vn = std::sqrt(vn);
        // Responsibilities (FP64, centred logits) and the path's bound on its logits' error.
        double lmax = -INFINITY, e_max = 0;
        int top = 0;
        for (int k = 0; k < K; ++k) {
          c[k] = a * a * m.variances()[k] + s2;
          double q = 0, mn = 0;
          for (int j = 0; j < d; ++j) {
            const double mu = m.means()[std::size_t(k) * d + j];
            q += std::pow(xi[j] - a * mu, 2);
            mn += std::pow(mu - centre[j], 2);
          }
          mn = std::sqrt(mn);
          const double log_norm = logw[k] - 0.5 * d * std::log(2 * M_PI * c[k]);
          r[k] = log_norm - 0.5 * q / c[k];
          if (r[k] > lmax) {
            lmax = r[k];
            top = k;
          }
          const double expanded = (a * gamma_d * xn * mn + 2 * u * std::pow(xn + a * mn, 2)) / c[k] +
                                  2 * u * std::abs(log_norm);
          e_max = std::max(e_max, expanded);  // a logit recomputed centred is within its expanded bound
          e[k] = a * (m.variances()[k] - m.variances()[0]) / (c[k] * c[0]);
          P[k] = (mn / c[k] + xn * std::abs(e[k])) * vn;
        }
        double sum = 0;
        for (int k = 0; k < K; ++k) sum += (r[k] = std::exp(r[k] - lmax));
        double pbar = 0, diag = 0;
        for (int k = 0; k < K; ++k) {
          r[k] /= sum;
          pbar += r[k] * P[k];
          diag += r[k] * m.variances()[k] / c[k];
        }
        const double eps_w = 2 * e_max + gamma_K;
        const double C = 2 * (gamma_d + gamma_K + eps_w) + 16 * u;
        for (int j = 0; j < d; ++j) {
          auto N = [&](int k) {
            return std::abs(m.means()[std::size_t(k) * d + j] - centre[j]) / c[k] + std::abs(xc[j] * e[k]);
          };
          double between = 0;
          for (int k = 0; k < K; ++k) between += r[k] * (P[k] + pbar) * (N(k) + N(top));
          const double bound = C * a * (std::abs(vi[j]) * diag + s2 * between);
          const std::size_t at = std::size_t(i) * d + j;
          ASSERT_TRUE(std::isfinite(got[at])) << mc.name << " t=" << t << " point " << i << " coordinate " << j;
          const double err = std::abs(got[at] - ref[at]);
          EXPECT_LE(err, bound) << mc.name << " t=" << t << " point " << i << " coordinate " << j << ": got "
                                << got[at] << ", FP64 " << ref[at];
          worst_ratio = std::max(worst_ratio, err / bound);
          worst_err = std::max(worst_err, err);
          worst_direct = std::max(worst_direct, std::abs(direct[at] - ref[at]));
          largest = std::max(largest, std::abs(ref[at]));
        }
      }
      std::printf("  %-10s t=%-3g largest error / largest |J v|: gemm %.3g direct %.3g; worst error / bound %.3g\n",
                  mc.name, t, worst_err / largest, worst_direct / largest, worst_ratio);
    }
  }
}

// Chunks of components and blocks of points change only the order of sums: results agree to rounding.
// Bound: each output is a ratio of sums over <= K terms, regrouped; relative change <= ~2 K u per sum in the worst
// case, and the logits are the same per component (the same product entries up to the BLAS's blocking, <= gamma_d
// |x'| |mu'| / c, which the correction caps near the data). 1e-4 relative to the output's scale allows both.
TEST(GemmPath, ChunkingInvariance) {
  const int K = 3000, d = 48, n = 300;
  const gaussian_mixture m = data_mixture(K, d, 0.05, 5);
  const channel ch{0.9, 0.2};
  const std::vector<float> x = points(m, n, ch, false, 3);
  for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
    const std::size_t width = q == quantity::log_density ? 1 : d;
    std::vector<float> base(n * width), other(n * width);
    evaluate_options o;
    o.path = mixture_path::gemm;
    m.evaluate(base.data(), n, x.data(), ch, q, o, {executor::cpu});
    double scale = 0;
    for (float v : base) scale = std::max(scale, double(std::abs(v)));
    for (std::int64_t chunk : {1, 7, 100, 512, 3000}) {
      for (std::int64_t block : {1, 13, 128, 300}) {
        o.component_chunk = chunk;
        o.point_block = block;
        m.evaluate(other.data(), n, x.data(), ch, q, o, {executor::cpu});
        for (std::size_t e = 0; e < base.size(); ++e)
          ASSERT_NEAR(other[e], base[e], 1e-4 * scale)
              << "quantity " << int(q) << " chunk " << chunk << " block " << block << " entry " << e;
      }
    }
  }
}

// Points far from every component: the direct path floors each logit at log_norm_k - max_mahalanobis / 2 (finite
// values at any x, README "Gaussian mixtures"); the gemm path's expanded form did not, so from |x'|^2 beyond FLT_MAX
// (a coordinate of 2e19) every logit was -inf and every output NaN, and just below it the logits passed the floor
// (x = 1e19: denoiser 4.4e18 against the direct path's and the FP64 reference's 3.4e18). Both paths now agree there,
// the JVP too (where J v fits in FP32; beyond it both give the same infinity); a near point beside them is
// unchanged.
TEST(GemmPath, PointsFarFromEveryComponentGetTheDirectPathsFiniteValues) {
  const int d = 3;
  const gaussian_mixture m(d, {0.3, 0.7}, {-2.0, 0.0, 1.0, 1.5, 1.0, -0.5}, {0.3, 0.8});
  const std::vector<float> x = {1e19f, 0.5f, 0.0f,  1e20f,  0.5f, 0.0f, -3e30f, 2.0f,  1.0f,
                                0.5f,  1e25f, 0.0f, 0.25f, -0.5f, 1.0f};
  const int n = int(x.size()) / d;
  std::vector<float> v(x.size());
  for (std::size_t e = 0; e < v.size(); ++e) v[e] = 0.5f + 0.25f * float(e % 3);
  evaluate_options gemm_opt, direct_opt;
  gemm_opt.path = mixture_path::gemm;
  direct_opt.path = mixture_path::direct;
  for (const channel ch : {channel{1.0, 1.0}, channel{0.8, 0.3}}) {
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      const std::size_t width = q == quantity::log_density ? 1 : std::size_t(d);
      std::vector<float> gemm(n * width), direct(n * width);
      ASSERT_EQ(m.evaluate(gemm.data(), n, x.data(), ch, q, gemm_opt, {executor::cpu}).path, mixture_path::gemm);
      ASSERT_EQ(m.evaluate(direct.data(), n, x.data(), ch, q, direct_opt, {executor::cpu}).path, mixture_path::direct);
      for (std::size_t e = 0; e < gemm.size(); ++e) {
        ASSERT_TRUE(std::isfinite(gemm[e])) << "quantity " << int(q) << " a " << ch.a << " entry " << e;
        EXPECT_NEAR(gemm[e], direct[e], 1e-5 * (std::abs(direct[e]) + 1))
            << "quantity " << int(q) << " a " << ch.a << " entry " << e;
      }
    }
    std::vector<float> gemm(x.size()), direct(x.size());
    ASSERT_EQ(m.denoiser_jvp(gemm.data(), n, x.data(), v.data(), ch, gemm_opt, {executor::cpu}).path,
              mixture_path::gemm);
    m.denoiser_jvp(direct.data(), n, x.data(), v.data(), ch, {executor::cpu});
    for (std::size_t e = 0; e < gemm.size(); ++e) {
      if (!std::isfinite(direct[e])) {  // J v beyond FLT_MAX (5e58 at x = -3e30): the same infinity on both paths
        EXPECT_EQ(gemm[e], direct[e]) << "jvp a " << ch.a << " entry " << e;
        continue;
      }
      ASSERT_TRUE(std::isfinite(gemm[e])) << "jvp a " << ch.a << " entry " << e;
      EXPECT_NEAR(gemm[e], direct[e], 1e-5 * (std::abs(direct[e]) + 1)) << "jvp a " << ch.a << " entry " << e;
    }
  }
}

// Narrow components (variances down to the library's 1e-36): the expanded logits' error grows as |x'|^2 / c (about
// 1e16 nats at c = 1e-24), so the correction lowers the logit that set the chunk's maximum by far more than the
// softmax's range. The maximum was kept from before the correction, every weight relative to it underflowed to 0,
// and the point's log-density was -inf, its score and denoiser NaN (K = 6, d = 4, points 0.5 from a mean: 8 of 10
// cases at variances 1e-24 .. 1e-30). Now the maximum is that of the corrected logits: the direct path's values.
TEST(GemmPath, NarrowComponentsKeepTheCorrectedMaximum) {
  const int K = 6, d = 4, n = 6;
  std::mt19937_64 gen(11);
  std::normal_distribution<double> z(0, 1);
  evaluate_options gemm_opt, direct_opt;
  gemm_opt.path = mixture_path::gemm;
  direct_opt.path = mixture_path::direct;
  for (double variance : {1e-20, 1e-24, 1e-26, 1e-28, 1e-30, 1e-36}) {
    std::vector<double> means(std::size_t(K) * d);
    for (auto& v : means) v = z(gen);
    const gaussian_mixture m(d, std::vector<double>(K, 1.0), means, std::vector<double>(K, variance));
    std::vector<float> x(std::size_t(n) * d);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) x[std::size_t(i) * d + j] = float(means[std::size_t(i % K) * d + j] + 0.5 * (j + 1));
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      const std::size_t width = q == quantity::log_density ? 1 : std::size_t(d);
      std::vector<float> gemm(n * width), direct(n * width);
      ASSERT_EQ(m.evaluate(gemm.data(), n, x.data(), channel{1.0, 0.0}, q, gemm_opt, {executor::cpu}).path,
                mixture_path::gemm);
      m.evaluate(direct.data(), n, x.data(), channel{1.0, 0.0}, q, direct_opt, {executor::cpu});
      for (std::size_t e = 0; e < gemm.size(); ++e) {
        ASSERT_TRUE(std::isfinite(direct[e])) << "variance " << variance << " quantity " << int(q) << " entry " << e;
        ASSERT_TRUE(std::isfinite(gemm[e])) << "variance " << variance << " quantity " << int(q) << " entry " << e;
        EXPECT_NEAR(gemm[e], direct[e], 1e-4 * std::abs(direct[e]) + 1e-6)
            << "variance " << variance << " quantity " << int(q) << " entry " << e;
      }
    }
  }
}

// Narrow components far from the centre of the means: the second products' weights w_k / c_k (up to 1e36 at the
// smallest variance) times centred means of a few hundred passed FP32, and the score (inf - inf), the denoiser
// (s^2 times inf, NaN at s = 0) and J v (its products (B_k / c_k) mu'_k) were NaN or inf where the direct path and
// FP64 are finite; an empirical prior of data in [0, 2000) at variance 1e-36 went through the automatic path choice to
// gemm and NaN. The weights are scaled by a power of two now (gemm_weight_scale): the values are FP64's within the
// gemm path's bound (where FP32 holds them: the score halfway between two components at c = 1e-36 is 5e39), and
// channels with c_min >= 2^-40 keep their bits (a scale of 1). Seen failing before the fix: NaN and inf.
TEST(GemmPath, NarrowComponentsFarFromTheCentreStayFinite) {
  evaluate_options gemm_opt;
  gemm_opt.path = mixture_path::gemm;
  struct narrow_case {
    double mu, variance, s;
    bool jvp;  // J v at the centre (shared responsibilities); else the score and denoiser at a mean and halfway
  };
  for (const narrow_case nc : {narrow_case{1e4, 1e-36, 0.0, false}, narrow_case{1e4, 1e-36, 1e-19, false},
                               narrow_case{1e3, 1e-36, 0.0, false}, narrow_case{1e9, 1e-30, 1e-16, false},
                               narrow_case{0.5, 1e-20, 1e-20, true}, narrow_case{0.5, 1e-20, 0.0, true},
                               narrow_case{100, 1e-18, 1e-9, true}}) {
    const gaussian_mixture m(1, {1.0, 1.0}, {-nc.mu, nc.mu}, {nc.variance, nc.variance});
    const channel ch{1.0, nc.s};
    const std::string what = "mu " + std::to_string(nc.mu) + " variance " + std::to_string(nc.variance) + " s " +
                             std::to_string(nc.s);
    const std::vector<float> x = nc.jvp ? std::vector<float>{0.f} : std::vector<float>{float(nc.mu), float(nc.mu / 2)};
    const int n = int(x.size());
    const std::vector<double> x64(x.begin(), x.end()), v64(std::size_t(n), 1.0);
    const std::vector<float> v(std::size_t(n), 1.f);
    std::vector<float> got(static_cast<std::size_t>(n));
    std::vector<double> ref(static_cast<std::size_t>(n));
    if (nc.jvp) {
      m.denoiser_jvp(got.data(), n, x.data(), v.data(), ch, gemm_opt, {executor::cpu});
      m.denoiser_jvp_fp64(ref.data(), n, x64.data(), v64.data(), ch);
      ASSERT_TRUE(std::isfinite(got[0])) << what << " J v";
      EXPECT_NEAR(got[0], ref[0], 1e-3 * std::abs(ref[0])) << what << " J v";
      continue;
    }
    for (quantity q : {quantity::score, quantity::denoiser}) {
      ASSERT_EQ(m.evaluate(got.data(), n, x.data(), ch, q, gemm_opt, {executor::cpu}).path, mixture_path::gemm);
      m.evaluate_fp64(ref.data(), n, x64.data(), ch, q);
      for (int i = 0; i < n; ++i) {
        if (std::abs(ref[i]) > 1e38) continue;  // beyond FP32 itself (the score halfway at c = 1e-36: 5e39)
        ASSERT_TRUE(std::isfinite(got[i])) << what << " quantity " << int(q) << " point " << i;
        EXPECT_NEAR(got[i], ref[i], 1e-4 * std::abs(ref[i]) + 1e-3) << what << " quantity " << int(q) << " point " << i;
      }
    }
  }
  // The automatic choice on an empirical prior of data in [0, 2000) at variance 1e-36: gemm, and the data points'
  // denoiser at (1, 0) the points themselves.
  const int n = 64, d = 256;
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> u(0, 2000);
  std::vector<double> data(std::size_t(n) * d);
  for (double& e : data) e = u(gen);
  const gaussian_mixture prior = gaussian_mixture::empirical(n, d, data.data(), 1e-36);
  const std::vector<float> xf(data.begin(), data.end());
  std::vector<float> out(xf.size());
  EXPECT_EQ(prior.evaluate(out.data(), n, xf.data(), channel{1.0, 0.0}, quantity::denoiser, {}, {executor::cpu}).path,
            mixture_path::gemm);
  for (std::size_t e = 0; e < out.size(); ++e) ASSERT_NEAR(out[e], xf[e], 1e-3 * std::abs(xf[e])) << "entry " << e;
}

// One point against many components splits the components across tasks (partial states merged): same result as
// a single block within the same rounding bound.
TEST(GemmPath, SplitComponentsMerge) {
  const int K = 20000, d = 40;
  const gaussian_mixture m = data_mixture(K, d, 0.02, 8);
  const channel ch{1.0, 0.1};
  const std::vector<float> x = points(m, 5, ch, false, 4);
  std::vector<double> x64(x.begin(), x.end()), ref(5 * d);
  m.evaluate_fp64(ref.data(), 5, x64.data(), ch, quantity::score);
  for (int n : {1, 5}) {
    std::vector<float> got(std::size_t(n) * d);
    evaluate_options o;
    o.path = mixture_path::gemm;
    m.evaluate(got.data(), n, x.data(), ch, quantity::score, o, {executor::cpu});
    double scale = 0;
    for (int e = 0; e < n * d; ++e) scale = std::max(scale, std::abs(ref[e]));
    for (int e = 0; e < n * d; ++e) ASSERT_NEAR(got[e], ref[e], 1e-4 * scale) << "n " << n << " entry " << e;
  }
}

TEST(GemmPath, PathChoice) {
  // Small and low-dimensional: direct. Large isotropic: gemm when a BLAS is present. Diagonal: always direct.
  const gaussian_mixture small = grid_mixture(2, 5, 2.0, 0.25);
  EXPECT_EQ(small.chosen_path(100, quantity::score, {}, executor::cpu), mixture_path::direct);
  const gaussian_mixture large = data_mixture(1024, 256, 0.1, 1);
  const gemm_crossover_rule rule = gemm_crossover(executor::cpu);
  ASSERT_LE(rule.min_dim, 256);
  ASSERT_LE(rule.min_kd, 1024 * 256);
  EXPECT_EQ(large.chosen_path(100, quantity::score, {}, executor::cpu),
            cpu_blas_available() ? mixture_path::gemm : mixture_path::direct);
  std::vector<double> var(std::size_t(200) * 64, 0.5), mu(std::size_t(200) * 64, 0.0), w(200, 1.0);
  const gaussian_mixture diagonal(64, w, mu, var);
  EXPECT_EQ(diagonal.chosen_path(100, quantity::score, {}, executor::cpu), mixture_path::direct);
  evaluate_options forced;
  forced.path = mixture_path::gemm;
  EXPECT_THROW(diagonal.chosen_path(1, quantity::score, forced, executor::cpu), invalid_argument);
  EXPECT_EQ(small.chosen_path(1, quantity::score, forced, executor::cpu), mixture_path::gemm);
  forced.path = mixture_path::direct;
  EXPECT_EQ(large.chosen_path(1, quantity::score, forced, executor::cpu), mixture_path::direct);
  forced.path = static_cast<mixture_path>(9);
  EXPECT_THROW(large.chosen_path(1, quantity::score, forced, executor::cpu), invalid_argument);

  // The CUDA executor's rule (measured on an H200, gemm_crossover()): gemm from d = 16 and K d = 4096, whatever the
  // host's BLAS. Seen failing against the CPU rule the CUDA executor followed before ({256, 2^14}: K = 256, d = 16 and
  // K = 64, d = 64 went direct, 1.24x and 2.7x slower there).
  const gemm_crossover_rule cuda_rule = gemm_crossover(executor::cuda);
  EXPECT_EQ(cuda_rule.min_dim, 16);
  EXPECT_EQ(cuda_rule.min_kd, 4096);
  const auto cuda_path = [](std::int64_t K, std::int64_t d) {
    return data_mixture(K, d, 0.1, 3).chosen_path(1000, quantity::score, {}, executor::cuda);
  };
  EXPECT_EQ(cuda_path(256, 16), mixture_path::gemm);
  EXPECT_EQ(cuda_path(64, 64), mixture_path::gemm);
  EXPECT_EQ(cuda_path(64, 16), mixture_path::direct);
  EXPECT_EQ(cuda_path(4096, 2), mixture_path::direct);
  EXPECT_EQ(cuda_path(1024, 8), mixture_path::direct);
  EXPECT_EQ(diagonal.chosen_path(100, quantity::score, {}, executor::cuda), mixture_path::direct);

  // The plain evaluate() follows the automatic choice: bit for bit the explicit call of the chosen path.
  const channel ch{1.0, 0.3};
  const std::vector<float> x = points(large, 7, ch, false, 2);
  std::vector<float> plain(7 * 256), explicit_path(7 * 256);
  large.evaluate(plain.data(), 7, x.data(), ch, quantity::score, {executor::cpu});
  evaluate_options o;
  o.path = large.chosen_path(7, quantity::score, {}, executor::cpu);
  const evaluate_report r = large.evaluate(explicit_path.data(), 7, x.data(), ch, quantity::score, o, {executor::cpu});
  EXPECT_EQ(r.path, o.path);
  EXPECT_EQ(0, std::memcmp(plain.data(), explicit_path.data(), plain.size() * sizeof(float)));
  evaluate_options a;
  EXPECT_EQ(large.evaluate(plain.data(), 7, x.data(), ch, quantity::score, a, {executor::cpu}).path, o.path);
  EXPECT_EQ(large.evaluate_workspace_bytes(7, quantity::score, a, {executor::cpu}), 0u);
  EXPECT_STREQ(to_string(mixture_path::gemm), "gemm");
  EXPECT_EQ(parse_mixture_path("direct"), mixture_path::direct);
  EXPECT_THROW(parse_mixture_path("fast"), invalid_argument);
  o.path = mixture_path::gemm;
  o.component_chunk = -1;
  EXPECT_THROW(large.evaluate(plain.data(), 7, x.data(), ch, quantity::score, o, {executor::cpu}), invalid_argument);
}

TEST(Empirical, EqualWeightsAndValidation) {
  const std::vector<double> pts = {0, 0, 1, 2, -3, 4};
  const gaussian_mixture m = gaussian_mixture::empirical(3, 2, pts.data(), 0.01);
  EXPECT_EQ(m.components(), 3);
  EXPECT_EQ(m.dim(), 2);
  EXPECT_TRUE(m.isotropic());
  for (double w : m.weights()) EXPECT_DOUBLE_EQ(w, 1.0 / 3);
  EXPECT_EQ(m.means(), pts);
  for (double v : m.variances()) EXPECT_EQ(v, 0.01);
  EXPECT_THROW(gaussian_mixture::empirical(0, 2, pts.data(), 0.01), invalid_argument);
  EXPECT_THROW(gaussian_mixture::empirical(3, 2, pts.data(), 0.0), invalid_argument);
  EXPECT_THROW(gaussian_mixture::empirical(3, 2, nullptr, 0.01), invalid_argument);
  const std::vector<double> bad = {0, NAN};
  EXPECT_THROW(gaussian_mixture::empirical(1, 2, bad.data(), 0.01), invalid_argument);
  // At small noise the denoiser of a point next to a data point returns that data point.
  const std::vector<float> x = {1.001f, 1.999f};
  std::vector<float> out(2);
  evaluate_options o;
  o.path = mixture_path::gemm;
  m.evaluate(out.data(), 1, x.data(), {1.0, 1e-2}, quantity::denoiser, o, {executor::cpu});
  EXPECT_NEAR(out[0], 1.0, 2e-3);
  EXPECT_NEAR(out[1], 2.0, 2e-3);
}

// Seen failing with std::bad_alloc (no diffsample::error) out of the copy of the n x dim points: 2^24 x 2^24 values
// (2 PiB) beyond limits::max_host_bytes, and 2^24 x 2^18 (32 TiB) within it but beyond any host. Both are now
// out_of_memory naming the points and their sizes, before a point is read (the array here holds one).
TEST(Empirical, PointsBeyondTheHostAreOutOfMemory) {
  const std::vector<double> one = {0.5};
  const auto expect_oom = [&](std::int64_t n, std::int64_t dim, const char* part) {
    try {
      (void)gaussian_mixture::empirical(n, dim, one.data(), 0.01);
      ADD_FAILURE() << n << " x " << dim << ": no error";
    } catch (const out_of_memory& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << n << " x " << dim << ": " << typeid(e).name() << ": " << e.what();
    }
  };
  expect_oom(std::int64_t(1) << 24, std::int64_t(1) << 24,
             "points: n x dim = 16777216 x 16777216 values need 281474976710656 x 8 bytes of host memory, the limit "
             "is 70368744177664 (2^46)");
  // Under vm.overcommit_memory = 1 the kernel might grant 32 TiB and the copy would read past the array: skipped.
  std::FILE* f = std::fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = 0;
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &mode) != 1) mode = 0;
    std::fclose(f);
  }
  if (mode == 1) GTEST_SKIP() << "vm.overcommit_memory = 1 grants any allocation";
  expect_oom(std::int64_t(1) << 24, std::int64_t(1) << 18,
             "points: the copy of n x dim = 16777216 x 262144 values (35184372088832 bytes) could not be allocated");
}

// The CUDA gemm path against the CPU gemm path (the same functors around cuBLAS instead of the BLAS).
TEST(GemmPathGpu, MatchesCpu) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")";
  }
  const int K = 5000, d = 96, n = 700;
  const gaussian_mixture m = data_mixture(K, d, 0.02, 21);
  for (const channel ch : {channel{1.0, 0.5}, channel{1.0, 1e-3}}) {
    const std::vector<float> x = points(m, n, ch, false, 6);
    for (quantity q : {quantity::log_density, quantity::score, quantity::denoiser}) {
      for (bool tf32 : {false, true}) {
        const std::size_t width = q == quantity::log_density ? 1 : d;
        std::vector<float> cpu(n * width), gpu(n * width);
        evaluate_options o;
        o.path = mixture_path::gemm;
        o.allow_tf32 = tf32;
        o.point_block = 256;  // three passes
        m.evaluate(cpu.data(), n, x.data(), ch, q, o, {executor::cpu});
        float *dx = nullptr, *dout = nullptr;
        void* ws = nullptr;
        const std::size_t bytes = m.evaluate_workspace_bytes(n, q, o, {executor::cuda});
        ASSERT_GT(bytes, 0u);
        ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * sizeof(float)), cudaSuccess);
        ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), gpu.size() * sizeof(float)), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&ws, bytes), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
        // The copy's DMA is ordered on the legacy default stream only: wait for it before the non-blocking stream.
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        cudaStream_t stream;
        ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
        m.prepare_gemm(executor::cuda);
        const evaluate_report r = m.evaluate(dout, n, dx, ch, q, o, {executor::cuda, stream}, ws, bytes);
        EXPECT_EQ(r.ran, executor::cuda);
        EXPECT_EQ(r.path, mixture_path::gemm);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(gpu.data(), dout, gpu.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        double scale = 0;
        for (float v : cpu) scale = std::max(scale, double(std::abs(v)));
        // FP32: both paths satisfy the same bound, so they agree to 1e-4 of the scale; TF32 operands (2^-11) move
        // logits by up to 2^-10 |x'| |mu'| / c before correction: 1e-2 of the scale.
        const double tol = (tf32 ? 1e-2 : 1e-4) * scale;
        for (std::size_t e = 0; e < cpu.size(); ++e)
          ASSERT_NEAR(gpu[e], cpu[e], tol) << "quantity " << int(q) << " tf32 " << tf32 << " entry " << e;
        cudaStreamDestroy(stream);
        cudaFree(dx);
        cudaFree(dout);
        cudaFree(ws);
      }
    }
  }
}

// The first gemm-path call of a mixture on the CUDA executor builds its device tables and cuBLAS handle (cudaMalloc,
// uploads synchronised on the legacy stream, cublasCreate), which a stream capture cannot record: under capture
// (relaxed mode, as any validated call needs; a blocking and a non-blocking stream) evaluate() and denoiser_jvp()
// refuse it with invalid_argument naming prepare_gemm(executor::cuda), before anything is issued, and the capture
// stays valid (it ends with an empty graph). After prepare_gemm() the call is captured, and two replays of the graph
// give the uncaptured call's outputs bit for bit. Before, the capture failed inside the CUDA runtime (the legacy
// stream's upload joins a blocking stream's capture: cudaErrorStreamCaptureImplicit, the capture invalidated) or
// cuBLAS. Not run here (no GPU).
TEST(GemmPathGpu, FirstCallUnderCaptureIsRefusedUntilPrepared) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")";
  }
  const int K = 3000, d = 64, n = 300;
  const channel ch{1.0, 0.3};
  evaluate_options o;
  o.path = mixture_path::gemm;
  const gaussian_mixture probe = data_mixture(K, d, 0.02, 31);
  const std::vector<float> x = points(probe, n, ch, false, 7);
  const std::size_t bytes = probe.evaluate_workspace_bytes(n, quantity::score, o, {executor::cuda});
  float *dx = nullptr, *dout = nullptr;
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (const unsigned flags : {unsigned(cudaStreamDefault), unsigned(cudaStreamNonBlocking)}) {
    const gaussian_mixture m = data_mixture(K, d, 0.02, 31);  // tables not built yet
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, flags), cudaSuccess);
    const execution gpu{executor::cuda, stream};
    const auto expect_refused = [&](const std::function<void()>& call, const char* what) {
      cudaGraph_t graph = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
      try {
        call();
        ADD_FAILURE() << what << " (flags " << flags << "): accepted under capture";
      } catch (const invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("prepare_gemm(executor::cuda)"), std::string::npos) << e.what();
      } catch (const std::exception& e) {
        ADD_FAILURE() << what << " (flags " << flags << "): " << e.what();
      }
      EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << what << ": the capture was invalidated";
      if (graph != nullptr) cudaGraphDestroy(graph);
    };
    expect_refused([&] { (void)m.evaluate(dout, n, dx, ch, quantity::score, o, gpu, ws, bytes); }, "evaluate");
    expect_refused([&] { (void)m.denoiser_jvp(dout, n, dx, dx, ch, o, gpu); }, "denoiser_jvp");
    std::vector<float> direct(x.size()), replayed(x.size());
    m.prepare_gemm(executor::cuda);
    (void)m.evaluate(dout, n, dx, ch, quantity::score, o, gpu, ws, bytes);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(direct.data(), dout, direct.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemset(dout, 0, x.size() * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
    (void)m.evaluate(dout, n, dx, ch, quantity::score, o, gpu, ws, bytes);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 2; ++replay) {
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(replayed.data(), dout, replayed.size() * sizeof(float), cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_EQ(0, std::memcmp(replayed.data(), direct.data(), direct.size() * sizeof(float))) << "replay " << replay;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
  cudaFree(dx);
  cudaFree(dout);
  cudaFree(ws);
}

// A caller's workspace need not be 256-byte aligned: evaluate_workspace_bytes() holds the slack and the call aligns
// its regions (cuBLAS's workspace among them: cublasSetWorkspace refuses one off 256 bytes). Workspaces 4 and 16
// bytes into a device allocation give the bits of the call's own stream-ordered workspace. Before, the regions
// started at the caller's address: an offset of 16 bytes (which every other call's workspace may have) put cuBLAS's
// workspace off its alignment. Not run here (no GPU).
TEST(GemmPathGpu, AWorkspaceAtAnyFloatAlignedAddressGivesTheSameBits) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")";
  }
  const int K = 600, d = 64, n = 300;
  const gaussian_mixture m = data_mixture(K, d, 0.02, 31);
  const channel ch{1.0, 0.3};
  const std::vector<float> x = points(m, n, ch, false, 9);
  evaluate_options o;
  o.path = mixture_path::gemm;
  o.point_block = 128;  // three passes
  const quantity q = quantity::score;
  const std::size_t bytes = m.evaluate_workspace_bytes(n, q, o, {executor::cuda});
  float *dx = nullptr, *dout = nullptr;
  char* ws = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ws), bytes + 16), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  m.prepare_gemm(executor::cuda);
  std::vector<float> own(x.size()), got(x.size());
  (void)m.evaluate(dout, n, dx, ch, q, o, {executor::cuda, nullptr});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(own.data(), dout, own.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (const std::size_t offset : {std::size_t(4), std::size_t(16)}) {
    ASSERT_EQ(cudaMemset(dout, 0xff, x.size() * sizeof(float)), cudaSuccess);
    EXPECT_NO_THROW(m.evaluate(dout, n, dx, ch, q, o, {executor::cuda, nullptr}, ws + offset, bytes))
        << "offset " << offset;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got.data(), dout, got.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(got.data(), own.data(), own.size() * sizeof(float)), 0) << "offset " << offset;
  }
  cudaFree(dx);
  cudaFree(dout);
  cudaFree(ws);
}

// The denoiser JVP on the CUDA gemm path (cuBLAS products, the CPU path's two passes and per-point functions)
// against the CPU gemm path, three passes of points, near the data and at small noise. Both run the same algorithm
// on the same FP32 tables; they differ by the BLAS's summation order in the four products, each within gamma_d (d =
// 96: 5.7e-6) of the sum of magnitudes, which the softmax weights and the J v sums carry at most K-fold regrouped
// (<= 2 K u = 6e-4 relative in the worst case of cancellation): 1e-3 of the output's scale, as for evaluate's
// GPU test with the JVP's extra subtraction; TF32 operands (2^-11) 2e-2. Not run here (no GPU): never seen failing.
TEST(GemmPathGpu, DenoiserJvpMatchesCpu) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")";
  }
  const int K = 3000, d = 96, n = 600;
  const gaussian_mixture m = data_mixture(K, d, 0.02, 23);
  for (const channel ch : {channel{1.0, 0.5}, channel{1.0, 1e-3}}) {
    const std::vector<float> x = points(m, n, ch, false, 8);
    std::vector<float> v(x.size());
    std::mt19937_64 gen(7);
    std::normal_distribution<double> z(0, 1);
    for (auto& e : v) e = float(z(gen));
    for (bool tf32 : {false, true}) {
      evaluate_options o;
      o.path = mixture_path::gemm;
      o.allow_tf32 = tf32;
      o.point_block = 256;  // three passes
      std::vector<float> cpu(x.size()), gpu(x.size());
      m.denoiser_jvp(cpu.data(), n, x.data(), v.data(), ch, o, {executor::cpu});
      float *dx = nullptr, *dv = nullptr, *dout = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dv), v.size() * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), gpu.size() * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dv, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
      m.prepare_gemm(executor::cuda);
      const evaluate_report r = m.denoiser_jvp(dout, n, dx, dv, ch, o, {executor::cuda, nullptr});
      EXPECT_EQ(r.ran, executor::cuda);
      EXPECT_EQ(r.path, mixture_path::gemm);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(gpu.data(), dout, gpu.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
      double scale = 0;
      for (float e : cpu) scale = std::max(scale, double(std::abs(e)));
      const double tol = (tf32 ? 2e-2 : 1e-3) * scale;
      for (std::size_t e = 0; e < cpu.size(); ++e)
        ASSERT_NEAR(gpu[e], cpu[e], tol) << "s " << ch.s << " tf32 " << tf32 << " entry " << e;
      cudaFree(dx);
      cudaFree(dv);
      cudaFree(dout);
    }
  }
}

}  // namespace
