// Helpers shared by the guided-sampler tests: batched problems, run options, exact posterior samples with
// prescribed component counts, and the two-sample comparison of a run with a reference implementation's samples.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/observation.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample::testing {

/// `copies` problems with the same observation (A and sigma_y shared, y repeated).
inline guided_problems replicate(const linear_observation& o, std::int64_t copies) {
  guided_problems g;
  g.problems = copies;
  g.d_y = o.d_y;
  g.A = o.A;  // shared
  g.sigma_y = {o.sigma_y};
  for (std::int64_t b = 0; b < copies; ++b) g.y.insert(g.y.end(), o.y.begin(), o.y.end());
  return g;
}

/// Options of a run: sampler, particles, steps and seed, linear potentials (what the SMC tests written against them
/// measure; guided_potentials::automatic, the library's default, has its own tests), every other setting at its
/// default.
inline guided_options options(guided_sampler s, std::int64_t particles, std::int64_t steps, std::uint64_t seed) {
  guided_options o;
  // Linear potentials for SMC (the other samplers read no potentials, and refuse a value set for them).
  if (s == guided_sampler::smc) o.potentials = guided_potentials::linear;
  o.sampler = s;
  o.particles = particles;
  o.steps = steps;
  o.seed = seed;
  return o;
}

/// Exact posterior samples with prescribed component counts: counts[k] draws from N(m'_k, S'_k) (FP64 Cholesky of
/// the exact covariance, normals from one mt19937 stream), so the set has the exact components and weights counts/n.
inline std::vector<float> exact_with_counts(const mixture_posterior& post, const std::vector<std::int64_t>& counts,
                                            unsigned seed) {
  const std::int64_t K = post.components(), d = post.dim();
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<float> out;
  std::vector<double> L(d * d), z(d);
  for (std::int64_t k = 0; k < K; ++k) {
    const double* S = post.covariances().data() + k * d * d;
    std::fill(L.begin(), L.end(), 0.0);
    for (std::int64_t j = 0; j < d; ++j) {
      double v = S[j * d + j];
      for (std::int64_t m = 0; m < j; ++m) v -= L[j * d + m] * L[j * d + m];
      L[j * d + j] = std::sqrt(std::max(v, 0.0));
      for (std::int64_t i = j + 1; i < d; ++i) {
        double u = S[i * d + j];
        for (std::int64_t m = 0; m < j; ++m) u -= L[i * d + m] * L[j * d + m];
        L[i * d + j] = L[j * d + j] > 0 ? u / L[j * d + j] : 0.0;
      }
    }
    for (std::int64_t n = 0; n < counts[k]; ++n) {
      for (auto& v : z) v = normal(gen);
      for (std::int64_t i = 0; i < d; ++i) {
        double x = post.means()[k * d + i];
        for (std::int64_t m = 0; m <= i; ++m) x += L[i * d + m] * z[m];
        out.push_back(float(x));
      }
    }
  }
  return out;
}


/// The DDPM backward kernel of the FP64 references from grid point (a, s) to (an, sn) (DDIM with eta when ddim):
/// x' = cm x0 + cx x + sig z.
struct ddpm_coefficients {
  double cm, cx, sig;
};
inline ddpm_coefficients backward64(double a, double s, double an, double sn, bool ddim, double eta) {
  const double ratio = a / an, v = std::max(s * s - ratio * ratio * sn * sn, 0.0), post = sn * sn * v / (s * s);
  if (!ddim) return {an * v / (s * s), ratio * sn * sn / (s * s), std::sqrt(post)};
  const double sig = eta * std::sqrt(post), c = std::sqrt(std::max(sn * sn - sig * sig, 0.0));
  return {an - c * a / s, c / s, sig};
}

/// The two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of two samples, times sqrt(n_a n_b / (n_a + n_b)):
/// under one continuous law its tail is P(> c) ~ 2 exp(-2 c^2) (2.69 at 1e-6).
inline double ks_scaled(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double na = double(a.size()), nb = double(b.size());
  std::size_t i = 0, j = 0;
  double worst = 0;
  while (i < a.size() && j < b.size()) {
    const double v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= v) ++i;
    while (j < b.size() && b[j] <= v) ++j;
    worst = std::max(worst, std::abs(double(i) / na - double(j) / nb));
  }
  return worst * std::sqrt(na * nb / (na + nb));
}

/// |A x - y|^2 of each of the n rows of x (float or double).
template <class T>
std::vector<double> misfits(const linear_observation& obs, const T* x, std::int64_t n) {
  std::vector<double> v(static_cast<std::size_t>(n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t o = 0; o < obs.d_y; ++o) {
      double e = -obs.y[o];
      for (std::int64_t j = 0; j < obs.d_x; ++j) e += obs.A[o * obs.d_x + j] * double(x[i * obs.d_x + j]);
      v[i] += e * e;
    }
  return v;
}

/// Asserts that a run's samples x (n rows) and a reference implementation's xr (nr rows; independent particles in
/// both) are draws of one law, to what n and nr resolve. Per component of the exact posterior post, the recovered
/// weights (ds::component_weights: means of responsibilities in [0, 1], of variance at most w (1 - w) / n) within
/// 5 sqrt(w (1 - w) (1 / n + 1 / nr)), w pooled and at least 1 / (n + nr) (one particle's share; less is below what
/// the samples resolve); every coordinate's mean within 5 combined standard errors. The misfit |A x - y|^2 is
/// heavy-tailed where modes far from y keep some mass (a few particles at hundreds of times the median, which the
/// mean's standard error does not capture), so the mean of its logarithm is compared (within 5 combined standard
/// errors; light-tailed both ways) and its distribution by the two-sample Kolmogorov-Smirnov distance (ks_scaled at
/// most 2.69, a 1e-6 tail). With K components and d coordinates, K + d + 2 checks: on the 25-component problems in
/// d = 10, a false alarm about once in 50,000 runs of a correct kernel. Prints the largest z of each kind.
template <class R>
void expect_same_law(const char* name, const mixture_posterior& post, const linear_observation& obs,
                     const std::vector<float>& x, std::int64_t n, const std::vector<R>& xr, std::int64_t nr) {
  const std::int64_t d = post.dim();
  const std::vector<float> xr32(xr.begin(), xr.end());
  const std::vector<double> w = component_weights(post, n, x.data()), wr = component_weights(post, nr, xr32.data());
  double z_weight = 0, z_mean = 0;
  for (std::int64_t k = 0; k < post.components(); ++k) {
    const double pooled = std::max((w[k] * n + wr[k] * nr) / double(n + nr), 1.0 / double(n + nr));
    const double se = std::sqrt(pooled * (1 - pooled) * (1.0 / n + 1.0 / nr));
    const double z = std::abs(w[k] - wr[k]) / se;
    z_weight = std::max(z_weight, z);
    EXPECT_LE(z, 5.0) << name << ": component " << k << " weight " << w[k] << ", reference " << wr[k];
  }
  auto mean_var = [](const std::vector<double>& v, double& m, double& var) {
    m = 0;
    for (double e : v) m += e;
    m /= double(v.size());
    var = 0;
    for (double e : v) var += (e - m) * (e - m);
    var /= double(v.size() - 1);
  };
  auto z_of = [&](const std::vector<double>& a, const std::vector<double>& b, double& ma, double& mb) {
    double va, vb;
    mean_var(a, ma, va);
    mean_var(b, mb, vb);
    return std::abs(ma - mb) / std::sqrt(va / double(a.size()) + vb / double(b.size()));
  };
  std::vector<double> a(n), b(nr);
  for (std::int64_t j = 0; j < d; ++j) {
    for (std::int64_t i = 0; i < n; ++i) a[i] = x[i * d + j];
    for (std::int64_t i = 0; i < nr; ++i) b[i] = double(xr[i * d + j]);
    double ma, mb;
    const double z = z_of(a, b, ma, mb);
    z_mean = std::max(z_mean, z);
    EXPECT_LE(z, 5.0) << name << ": coordinate " << j << " mean " << ma << ", reference " << mb;
  }
  const std::vector<double> mf = misfits(obs, x.data(), n), mr = misfits(obs, xr.data(), nr);
  std::vector<double> lf(mf), lr(mr);
  for (double& v : lf) v = std::log(v);
  for (double& v : lr) v = std::log(v);
  double ml, mlr, mean_f, mean_r, unused;
  const double z_misfit = z_of(lf, lr, ml, mlr), ks = ks_scaled(mf, mr);
  mean_var(mf, mean_f, unused);
  mean_var(mr, mean_r, unused);
  std::printf("%s against its FP64 reference (%lld and %lld particles): largest z of the component weights %.2f, of "
              "the coordinate means %.2f; mean misfit %.4f against %.4f, z of its log %.2f, scaled KS distance %.2f\n",
              name, static_cast<long long>(n), static_cast<long long>(nr), z_weight, z_mean, mean_f, mean_r, z_misfit,
              ks);
  EXPECT_LE(z_misfit, 5.0) << name;
  EXPECT_LE(ks, 2.69) << name;
}

// The mixture's exact posterior of x0 at a channel, FP64, for isotropic components (the references' denoiser):
// responsibilities r_k, the component means m_k = mu_k + a v_k (x - a mu_k) / (a^2 v_k + s^2), their variances
// v_k s^2 / (a^2 v_k + s^2), the denoiser m = sum_k r_k m_k, the component scores g_k = (a mu_k - x) / (a^2 v_k + s^2),
// and from them Cov(x0 | x) v and J v (J = dm/dx = (a / s^2) Cov(x0 | x)). At (a, s) = (1, 0) the component
// scores are the prior's: its score is sum_k r_k g_k.
struct iso_posterior64 {
  const gaussian_mixture& prior;
  std::int64_t d, C;
  std::vector<double> r, mk, gk, vk, m;
  double a = 1, s = 0;
  explicit iso_posterior64(const gaussian_mixture& p)
      : prior(p), d(p.dim()), C(static_cast<std::int64_t>(p.weights().size())), r(C), mk(C * d), gk(C * d), vk(C),
        m(d) {
    EXPECT_EQ(p.variances().size(), static_cast<std::size_t>(C)) << "isotropic components expected";
  }
  void at(const double* x, double a_, double s_) {
    a = a_;
    s = s_;
    const std::vector<double>&w = prior.weights(), &mus = prior.means(), &vs = prior.variances();
    double top = -1e300;
    for (std::int64_t k = 0; k < C; ++k) {
      const double c = a * a * vs[k] + s * s;
      double e = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        const double diff = x[j] - a * mus[k * d + j];
        e += diff * diff;
        gk[k * d + j] = -diff / c;
        mk[k * d + j] = mus[k * d + j] + a * vs[k] * diff / c;
      }
      vk[k] = vs[k] * s * s / c;
      r[k] = std::log(w[k]) - 0.5 * double(d) * std::log(c) - 0.5 * e / c;
      top = std::max(top, r[k]);
    }
    double sum = 0;
    for (std::int64_t k = 0; k < C; ++k) sum += (r[k] = std::exp(r[k] - top));
    std::fill(m.begin(), m.end(), 0.0);
    for (std::int64_t k = 0; k < C; ++k) {
      r[k] /= sum;
      for (std::int64_t j = 0; j < d; ++j) m[j] += r[k] * mk[k * d + j];
    }
  }
  // out = Cov(x0 | x) v after at(): sum_k r_k (v_k' v + m_k (m_k . v)) - m (m . v).
  void cov_times(const double* v, double* out) const {
    double mv = 0;
    for (std::int64_t j = 0; j < d; ++j) mv += m[j] * v[j];
    for (std::int64_t j = 0; j < d; ++j) out[j] = -m[j] * mv;
    for (std::int64_t k = 0; k < C; ++k) {
      double kv = 0;
      for (std::int64_t j = 0; j < d; ++j) kv += mk[k * d + j] * v[j];
      for (std::int64_t j = 0; j < d; ++j) out[j] += r[k] * (vk[k] * v[j] + mk[k * d + j] * kv);
    }
  }
  // out = J v after at(): sum_k r_k (a v_k / (a^2 v_k + s^2)) v + sum_k r_k m_k (g_k - gbar) . v.
  void jvp(const double* v, double* out) const {
    const std::vector<double>& vs = prior.variances();
    double gbar_v = 0;
    std::vector<double> gv(C);
    for (std::int64_t k = 0; k < C; ++k) {
      gv[k] = 0;
      for (std::int64_t j = 0; j < d; ++j) gv[k] += gk[k * d + j] * v[j];
      gbar_v += r[k] * gv[k];
    }
    for (std::int64_t j = 0; j < d; ++j) out[j] = 0;
    for (std::int64_t k = 0; k < C; ++k) {
      const double c = a * vs[k] / (a * a * vs[k] + s * s), f = r[k] * (gv[k] - gbar_v);
      for (std::int64_t j = 0; j < d; ++j) out[j] += r[k] * c * v[j] + f * mk[k * d + j];
    }
  }
  // out = sum_k r_k g_k after at(): the score of the prior noised to the channel (the prior's own at (1, 0)).
  void score(double* out) const {
    for (std::int64_t j = 0; j < d; ++j) out[j] = 0;
    for (std::int64_t k = 0; k < C; ++k)
      for (std::int64_t j = 0; j < d; ++j) out[j] += r[k] * gk[k * d + j];
  }
};

}  // namespace diffsample::testing
