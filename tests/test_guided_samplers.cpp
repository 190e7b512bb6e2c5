// The guided samplers TMPD, DDRM and DCPS against FP64 references of their formulas (one transition from a fixed
// state, TMPD's covariance from Jacobian-vector products against the mixture's exact Cov(x0 | x_k), DDRM's host
// factorisation against an SVD operator of the same A), their determinism across thread counts and batch splits,
// and their bias on seed 002's 25-component mixture: whole runs against FP64 references of the published algorithms
// (the bias is the method's), with the distance to the exact posterior printed (all three are biased baselines).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/plan.hpp>
#include <diffsample/posterior.hpp>

#include "kernels/guided_dcps.cuh"
#include "kernels/guided_ddrm.cuh"
#include "kernels/guided_skrock.cuh"
#include "kernels/guided_stepwise.cuh"
#include "kernels/guided_tmpd.cuh"
#include "kernels/rng.cuh"
#include "src/guided_reduction.hpp"
#include "src/guided_shard.hpp"
#include "reference/guided_helpers.hpp"
#include "reference/helpers.hpp"

namespace ds = diffsample;
using ds::testing::exact_with_counts;
using ds::testing::iso_posterior64;
using ds::testing::options;
using ds::testing::replicate;
namespace kn = diffsample::kernels;

namespace {

// A run's samples (problems x particles x d, row-major) on a workspace the caller sized with the workspace query,
// the CPU executor.
std::vector<float> samples_on_a_workspace(const ds::gaussian_mixture& prior, const ds::guided_problems& g,
                                          const ds::guided_options& o) {
  const ds::execution cpu{ds::executor::cpu, nullptr};
  std::vector<float> x(static_cast<std::size_t>(g.problems * o.particles * prior.dim()), NAN);
  ds::guided_outputs out;
  out.samples = x.data();
  const std::size_t bytes = ds::guided_workspace_bytes(prior, g, o, cpu);
  std::vector<std::max_align_t> ws(bytes / sizeof(std::max_align_t) + 1);
  ds::guided_sample(prior, out, g, o, cpu, ws.data(), bytes);
  return x;
}

// A small diagonal mixture as the kernels read it (host arrays, FP32) and in FP64 for the references.
struct small_mixture {
  int K = 3, d = 4;
  std::vector<float> log_w, mu, var;
  small_mixture() {
    std::mt19937_64 gen(7);
    std::normal_distribution<double> z;
    std::uniform_real_distribution<double> u(0.3, 2.0);
    std::vector<double> w = {0.2, 0.5, 0.3};
    for (double v : w) log_w.push_back(float(std::log(v)));
    for (int i = 0; i < K * d; ++i) mu.push_back(float(2 * z(gen)));
    for (int i = 0; i < K * d; ++i) var.push_back(float(u(gen)));
  }
  kn::mixture_view<float> view() const { return {log_w.data(), mu.data(), var.data(), K, d, false}; }
  // E[x0 | x] and Cov(x0 | x) at the channel (a, s), FP64 (README "Gaussian mixtures").
  void moments(const std::vector<double>& x, double a, double s, std::vector<double>& m,
               std::vector<double>& C) const {
    std::vector<double> logit(K), r(K);
    double top = -1e300;
    for (int k = 0; k < K; ++k) {
      double l = log_w[k];
      for (int j = 0; j < d; ++j) {
        const double c = a * a * var[k * d + j] + s * s, e = x[j] - a * mu[k * d + j];
        l += -0.5 * e * e / c - 0.5 * std::log(2 * M_PI * c);
      }
      logit[k] = l;
      top = std::max(top, l);
    }
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += (r[k] = std::exp(logit[k] - top));
    for (auto& v : r) v /= sum;
    m.assign(d, 0.0);
    C.assign(d * d, 0.0);
    std::vector<double> mk(d);
    for (int k = 0; k < K; ++k) {
      for (int j = 0; j < d; ++j) {
        const double c = a * a * var[k * d + j] + s * s;
        mk[j] = (s * s * mu[k * d + j] + a * var[k * d + j] * x[j]) / c;
        m[j] += r[k] * mk[j];
        C[j * d + j] += r[k] * var[k * d + j] * s * s / c;
      }
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) C[i * d + j] += r[k] * mk[i] * mk[j];
    }
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) C[i * d + j] -= m[i] * m[j];
  }
};

// Solves the SPD system M f = r (n x n, FP64) by Gaussian elimination (the reference's own route, not the kernel's
// Cholesky).
std::vector<double> solve(std::vector<double> M, std::vector<double> r, int n) {
  for (int c = 0; c < n; ++c)
    for (int i = c + 1; i < n; ++i) {
      const double f = M[i * n + c] / M[c * n + c];
      for (int j = c; j < n; ++j) M[i * n + j] -= f * M[c * n + j];
      r[i] -= f * r[c];
    }
  for (int i = n - 1; i >= 0; --i) {
    for (int j = i + 1; j < n; ++j) r[i] -= M[i * n + j] * r[j];
    r[i] /= M[i * n + i];
  }
  return r;
}

// Seed 002's 25-component mixture and a random observation, as tests/test_guided.cpp builds them.
struct benchmark_problem {
  ds::gaussian_mixture prior;
  ds::linear_observation observation;
};

benchmark_problem make_problem(std::int64_t d, std::int64_t dy, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.1, 1.0), us(0.5, 1.5);
  std::normal_distribution<double> z;
  std::vector<double> w(25);
  for (auto& v : w) v = u(gen);
  benchmark_problem p{ds::grid_mixture(d, 5, 8.0, 1.0, w), {}};
  auto& o = p.observation;
  o.d_y = dy;
  o.d_x = d;
  o.A.resize(dy * d);
  for (auto& a : o.A) a = z(gen);
  o.sigma_y = us(gen);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  const int k = pick(gen);
  const auto& means = p.prior.means();
  std::vector<double> x0(d);
  for (std::int64_t j = 0; j < d; ++j) x0[j] = means[k * d + j] + z(gen);
  o.y.assign(dy, 0.0);
  for (std::int64_t i = 0; i < dy; ++i) {
    for (std::int64_t j = 0; j < d; ++j) o.y[i] += o.A[i * d + j] * x0[j];
    o.y[i] += o.sigma_y * z(gen);
  }
  return p;
}

std::vector<float> run(const ds::gaussian_mixture& prior, const ds::guided_problems& g, const ds::guided_options& o,
                       ds::executor where = ds::executor::cpu) {
  std::vector<float> samples(g.problems * o.particles * prior.dim(), NAN);
  ds::guided_outputs out;
  if (where == ds::executor::cuda) {
    ds::testing::device_buffer<float> buf(samples);
    out.samples = buf.ptr;
    EXPECT_EQ(ds::guided_sample(prior, out, g, o, {where, nullptr}).ran, where);
    return buf.download();
  }
  out.samples = samples.data();
  EXPECT_EQ(ds::guided_sample(prior, out, g, o, {where, nullptr}).ran, where);
  return samples;
}

// Guided params over host tables for the one-step tests (dense A, one problem).
// The mixture's constants at `channels` channels named by `which` (kernels::channel_table_functor), as the fused
// runs' tables hold them, laid out in `storage`.
template <class Channels>
kn::mixture_channels channel_table(const kn::mixture_view<float>& mix, std::int64_t channels, Channels which,
                                   std::vector<float>& storage) {
  storage.assign(static_cast<std::size_t>(kn::mixture_channels::table_floats(mix, channels)), 0.f);
  const kn::mixture_channels t = kn::mixture_channels::in(mix, channels, storage.data());
  for (std::int64_t e = 0; e < channels * mix.components; ++e) kn::channel_table_functor<Channels>{t, which}(e);
  return t;
}

// One channel, index `index`, of a table (the others left unfilled).
struct single_channel {
  std::int64_t index;
  float a, s;
  bool operator()(std::int64_t c, float& ca, float& cs) const {
    ca = a;
    cs = s;
    return c == index;
  }
};

kn::guided_params host_params(const small_mixture& mix, const std::vector<float>& A, const std::vector<float>& y,
                              const kn::guided_step* step, int dy) {
  kn::guided_params p{};
  p.mix = mix.view();
  p.steps = step;
  p.A = A.data();
  p.mask = nullptr;
  p.A_stride = 0;
  p.y = y.data();
  p.problems = 1;
  p.particles = 1;
  p.d = mix.d;
  p.d_y = dy;
  p.seed = 5;
  return p;
}

// Bias scoring against the exact posterior (printed): sliced W1 (128 directions) beside the exact-vs-exact floor,
// the largest error of the component weights recovered by ds::component_weights, and the mean fit E[|y - A x|^2].
void score(const char* name, const benchmark_problem& p, const std::vector<float>& x, std::int64_t n) {
  const std::int64_t d = p.prior.dim();
  const ds::mixture_posterior post(p.prior, p.observation);
  std::vector<float> exact_a(n * d), exact_b(n * d);
  post.sample(exact_a.data(), n, 100);
  post.sample(exact_b.data(), n, 200);
  const double sw = ds::sliced_wasserstein(n, n, d, x.data(), exact_a.data(), 128, 5);
  const double floor = ds::sliced_wasserstein(n, n, d, exact_b.data(), exact_a.data(), 128, 5);
  const std::vector<double> w = ds::component_weights(post, n, x.data());
  double worst = 0;
  for (std::int64_t k = 0; k < post.components(); ++k) worst = std::max(worst, std::abs(w[k] - post.weights()[k]));
  std::printf("%s, d = %lld: SW1 %.4f (floor %.4f, %.1fx), max weight error %.4f\n", name,
              static_cast<long long>(d), sw, floor, sw / floor, worst);
}

// DCPS in FP64 from the formulas (README "DCPS"; seed 002, the published posterior_samplers/dcps.py), not from the
// kernels: a mixture of isotropic Gaussians (its exact denoiser m and J u, J = dm/dx), the library's grid and blocks,
// mt19937 normals. Per block [U, T]: M tamed ULA steps at U on p_U beta_U, then per transition j -> j + 1 a
// mean-field Gaussian started at the DDPM kernel N(mu_p, sig^2 I), moved by G normalised stochastic gradient steps on
// the one-draw KL (mean by rho sig sqrt(d), log-scales by rho sqrt(d)), and a draw from it; a point-mass kernel
// (sig = 0, the step to s = 0) gives mu_p. Returns n x d samples.
struct dcps_reference_options {
  std::int64_t steps = 100, blocks = 4, langevin = 50, gradient_steps = 2;
  double gamma = 1e-3, rho = 0.1;
};

std::vector<double> dcps_reference(const ds::gaussian_mixture& prior, const ds::linear_observation& obs,
                                   const dcps_reference_options& ro, std::int64_t n, std::uint64_t seed) {
  const std::int64_t d = prior.dim(), dy = obs.d_y;
  const std::vector<ds::schedule_point> pts = ds::guided_options{}.schedule.points(ro.steps);
  const double sy2 = obs.sigma_y * obs.sigma_y, root_d = std::sqrt(double(d));
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  std::vector<double> out(n * d), x(d), m(d), ju(d), u(d), grad(d), mean(d), l(d), eps(d), q(d), mu_p(d), gm(d),
      gl(d);
  // m(x) at (a, s) into m (the posterior's pieces kept for J u), and J v into ju.
  iso_posterior64 post(prior);
  auto denoise = [&](const std::vector<double>& at, double a, double s) {
    post.at(at.data(), a, s);
    m = post.m;
  };
  auto jvp = [&](const std::vector<double>& v, double, double) { post.jvp(v.data(), ju.data()); };
  // grad log beta at `at` (channel g, bridge to T) into grad; leaves m(at) in m.
  auto potential = [&](const std::vector<double>& at, std::int64_t g, std::int64_t T) {
    const double a = pts[g].a, s = pts[g].s, aT = pts[T].a;
    double cx = 1, cm = 0;
    if (g != T) {
      const double ratio = a / aT, v = s * s - ratio * ratio * pts[T].s * pts[T].s;
      cx = ratio * pts[T].s * pts[T].s / (s * s);
      cm = aT * std::max(v, 0.0) / (s * s);
    }
    denoise(at, a, s);
    for (std::int64_t j = 0; j < d; ++j) u[j] = 0;
    for (std::int64_t o = 0; o < dy; ++o) {
      double res = aT * obs.y[o];
      for (std::int64_t j = 0; j < d; ++j) res -= obs.A[o * d + j] * (cx * at[j] + cm * m[j]);
      for (std::int64_t j = 0; j < d; ++j) u[j] += obs.A[o * d + j] * res / sy2;
    }
    if (cm != 0) jvp(u, a, s);
    for (std::int64_t j = 0; j < d; ++j) grad[j] = cx * u[j] + (cm != 0 ? cm * ju[j] : 0.0);
  };
  auto norm = [&](const std::vector<double>& v) {
    double t = 0;
    for (double e : v) t += e * e;
    return std::sqrt(t);
  };
  const std::int64_t K = ro.steps, per = K / ro.blocks;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < d; ++j) x[j] = pts[0].s * z(gen);
    for (std::int64_t b = 0; b < ro.blocks; ++b) {
      const std::int64_t U = b * per, T = b + 1 == ro.blocks ? K : (b + 1) * per;
      for (std::int64_t t = 0; t < ro.langevin; ++t) {
        potential(x, U, T);
        for (std::int64_t j = 0; j < d; ++j)
          grad[j] += (pts[U].a * m[j] - x[j]) / (pts[U].s * pts[U].s);
        const double step = ro.gamma / (1 + ro.gamma * norm(grad));
        for (std::int64_t j = 0; j < d; ++j) x[j] += step * grad[j] + std::sqrt(2 * ro.gamma) * z(gen);
      }
      for (std::int64_t j0 = U; j0 < T; ++j0) {
        const double a = pts[j0].a, s = pts[j0].s, an = pts[j0 + 1].a, sn = pts[j0 + 1].s;
        const double ratio = a / an, v = std::max(s * s - ratio * ratio * sn * sn, 0.0);
        const double c1 = ratio * sn * sn / (s * s), c0 = an * v / (s * s), sig = std::sqrt(sn * sn * v / (s * s));
        denoise(x, a, s);
        for (std::int64_t j = 0; j < d; ++j) mean[j] = mu_p[j] = c0 * m[j] + c1 * x[j];
        if (sig == 0) {
          x = mu_p;
          continue;
        }
        for (std::int64_t j = 0; j < d; ++j) l[j] = std::log(sig);
        for (std::int64_t g = 0; g < ro.gradient_steps; ++g) {
          for (std::int64_t j = 0; j < d; ++j) q[j] = mean[j] + std::exp(l[j]) * (eps[j] = z(gen));
          potential(q, j0 + 1, T);
          for (std::int64_t j = 0; j < d; ++j) {
            const double sd = std::exp(l[j]);
            gm[j] = -grad[j] + (mean[j] - mu_p[j]) / (sig * sig);
            gl[j] = -grad[j] * sd * eps[j] + sd * sd / (sig * sig) - 1;
          }
          const double nm = norm(gm), nl = norm(gl);
          for (std::int64_t j = 0; j < d; ++j) {
            if (nm > 0) mean[j] -= ro.rho * sig * root_d * gm[j] / nm;
            if (nl > 0) l[j] -= ro.rho * root_d * gl[j] / nl;
          }
        }
        for (std::int64_t j = 0; j < d; ++j) x[j] = mean[j] + std::exp(l[j]) * z(gen);
      }
    }
    std::copy(x.begin(), x.end(), out.begin() + i * d);
  }
  return out;
}



// TMPD (Boys et al. 2023) in FP64 from its formulas, not from the kernels: x = s_0 z, then per step the DDPM kernel's
// mean at the exact denoiser plus guidance_scale cm C A^T (A C A^T + sigma_y^2 I)^-1 (y - A m) (C = Cov(x0 | x)
// exact, the score of the projected likelihood with C held fixed entering the mean through cm s^2 / a, times
// J = (a / s^2) C), plus the kernel's noise. n x d samples.
std::vector<double> tmpd_reference(const ds::gaussian_mixture& prior, const ds::linear_observation& obs,
                                   const ds::guided_options& o, std::int64_t n, std::uint64_t seed) {
  const std::int64_t d = prior.dim(), dy = obs.d_y;
  const std::vector<ds::schedule_point> pts = o.schedule.points(o.steps);
  iso_posterior64 post(prior);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  std::vector<double> out(n * d), x(d), CA(dy * d), M(dy * dy), res(dy);
  for (std::int64_t i = 0; i < n; ++i) {
    for (auto& v : x) v = pts[0].s * z(gen);
    for (std::int64_t k = 0; k < o.steps; ++k) {
      const double a = pts[k].a, s = pts[k].s;
      const ds::testing::ddpm_coefficients c = ds::testing::backward64(a, s, pts[k + 1].a, pts[k + 1].s, o.ddim, o.eta);
      post.at(x.data(), a, s);
      for (std::int64_t q = 0; q < dy; ++q) post.cov_times(obs.A.data() + q * d, CA.data() + q * d);
      for (std::int64_t q = 0; q < dy; ++q) {
        res[q] = obs.y[q];
        for (std::int64_t j = 0; j < d; ++j) res[q] -= obs.A[q * d + j] * post.m[j];
        for (std::int64_t l = 0; l < dy; ++l) {
          double v = q == l ? obs.sigma_y * obs.sigma_y : 0.0;
          for (std::int64_t j = 0; j < d; ++j) v += obs.A[q * d + j] * CA[l * d + j];
          M[q * dy + l] = v;
        }
      }
      const std::vector<double> f = solve(M, res, int(dy));
      for (std::int64_t j = 0; j < d; ++j) {
        double g = 0;
        for (std::int64_t q = 0; q < dy; ++q) g += f[q] * CA[q * d + j];
        x[j] = c.cm * post.m[j] + c.cx * x[j] + o.guidance_scale * c.cm * g + c.sig * z(gen);
      }
    }
    std::copy(x.begin(), x.end(), out.begin() + i * d);
  }
  return out;
}

// DDRM (Kawar et al. 2022, the published efficient_generalized_steps) in FP64 from its formulas for one measurement
// row a (d_y = 1: V = a / |a|, ybar = y / |a|, n = sigma_y / |a|), in the variance-exploding scaling xt = x / a
// (sigma = s / a), not from the kernels: xt_T = sigma_T xi with its observed component ybar + sqrt(sigma_T^2 - n^2)
// (V^T xi) where n < sigma_T; per step the DDIM update u = xbar0 + sigma' (sqrt(1 - eta^2) eps + eta xi), its
// observed component replaced by xbar0 + sigma' sqrt(1 - eta^2) (ybar - xbar0) / n + eta sigma' (V^T xi) where
// sigma' < n, else (1 - eta_b) xbar0 + eta_b ybar + sqrt(sigma'^2 - n^2 eta_b^2) (V^T xi); x = a' xt'. n x d samples.
std::vector<double> ddrm_reference(const ds::gaussian_mixture& prior, const ds::linear_observation& obs,
                                   const ds::guided_options& o, std::int64_t n, std::uint64_t seed) {
  const std::int64_t d = prior.dim();
  EXPECT_EQ(obs.d_y, 1) << "the reference takes one row";
  const std::vector<ds::schedule_point> pts = o.schedule.points(o.steps);
  double S = 0;
  for (std::int64_t j = 0; j < d; ++j) S += obs.A[j] * obs.A[j];
  S = std::sqrt(S);
  std::vector<double> V(d);
  for (std::int64_t j = 0; j < d; ++j) V[j] = obs.A[j] / S;
  const double ybar = obs.y[0] / S, noise = obs.sigma_y / S, eta = o.ddrm_eta, eta_b = o.ddrm_eta_b;
  const double keep = std::sqrt(1 - eta * eta);
  auto dot = [&](const std::vector<double>& v) {
    double t = 0;
    for (std::int64_t j = 0; j < d; ++j) t += V[j] * v[j];
    return t;
  };
  iso_posterior64 post(prior);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  std::vector<double> out(n * d), xt(d), xi(d), u(d);
  for (std::int64_t i = 0; i < n; ++i) {
    const double sigma_T = pts[0].s / pts[0].a;
    for (std::int64_t j = 0; j < d; ++j) xt[j] = sigma_T * (xi[j] = z(gen));
    if (noise < sigma_T) {
      const double pxi = dot(xi), target = ybar + std::sqrt(sigma_T * sigma_T - noise * noise) * pxi;
      for (std::int64_t j = 0; j < d; ++j) xt[j] += V[j] * (target - sigma_T * pxi);
    }
    for (std::int64_t k = 0; k < o.steps; ++k) {
      const double a = pts[k].a, sigma = pts[k].s / a, sigma_n = pts[k + 1].s / pts[k + 1].a;
      for (std::int64_t j = 0; j < d; ++j) u[j] = a * xt[j];
      post.at(u.data(), a, pts[k].s);
      for (std::int64_t j = 0; j < d; ++j) {
        xi[j] = z(gen);
        const double eps = (xt[j] - post.m[j]) / sigma;
        u[j] = post.m[j] + sigma_n * keep * eps + eta * sigma_n * xi[j];
      }
      const double pu = dot(u), pm = dot(post.m), pxi = dot(xi);
      const double v = sigma_n < noise ? pm + sigma_n * keep * (ybar - pm) / noise + eta * sigma_n * pxi
                                       : (1 - eta_b) * pm + eta_b * ybar +
                                             std::sqrt(std::max(sigma_n * sigma_n - noise * noise * eta_b * eta_b, 0.0)) * pxi;
      for (std::int64_t j = 0; j < d; ++j) xt[j] = u[j] + V[j] * (v - pu);
    }
    for (std::int64_t j = 0; j < d; ++j) out[i * d + j] = pts[o.steps].a * xt[j];
  }
  return out;
}

}  // namespace

// TMPD's A C A^T from d_y Jacobian-vector products against A Cov(x0 | x) A^T from the exact FP64 covariance (C = (s^2 /
// a) J, README "TMPD"), at three channels and two operators (a random 3 x 4 A, and A = I, where the whole of C is
// compared). The JVPs run in FP32 with the mixture's own logits: relative tolerance 2e-4 of the largest entry (FP32
// rounding of d-term sums, measured under 3e-6). Seen failing with the ratio s^2 / a replaced by s / a.
TEST(Tmpd, CovarianceFromJvpsMatchesExactPosteriorCovariance) {
  const small_mixture mix;
  const int d = mix.d;
  std::mt19937_64 gen(3);
  std::normal_distribution<double> z;
  for (int dy : {3, 4}) {
    std::vector<float> A(dy * d), y(dy, 0.f);
    for (int o = 0; o < dy; ++o)
      for (int j = 0; j < d; ++j) A[o * d + j] = dy == d ? (o == j ? 1.f : 0.f) : float(z(gen));
    for (double a : {0.95, 0.6, 0.2}) {
      const double s = std::sqrt(1 - a * a);
      std::vector<double> x(d);
      for (auto& v : x) v = a * 2 * z(gen) + s * z(gen);
      std::vector<float> xf(x.begin(), x.end()), fw(2 * d + dy * d + dy);
      std::vector<double> dw(dy * dy + dy);
      kn::guided_step st{};
      const kn::guided_params p = host_params(mix, A, y, &st, dy);
      const kn::tmpd_scratch w = kn::tmpd_scratch::rows(fw.data(), dw.data(), d, dy);
      const float sigma2 = 0.25f;
      kn::tmpd_moments(p, 0, xf.data(), float(a), float(s), sigma2, w);
      std::vector<double> m, C;
      mix.moments(x, a, s, m, C);
      double scale = 0;
      std::vector<double> ref(dy * dy);
      for (int o = 0; o < dy; ++o)
        for (int q = 0; q < dy; ++q) {
          double v = 0;
          for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j) v += A[o * d + i] * C[i * d + j] * A[q * d + j];
          ref[o * dy + q] = v;
          scale = std::max(scale, std::abs(v));
        }
      for (int o = 0; o < dy; ++o)
        for (int q = 0; q < dy; ++q)
          EXPECT_NEAR(w.cyy[o * dy + q] - (o == q ? sigma2 : 0.0), ref[o * dy + q], 2e-4 * scale + 1e-7)
              << "d_y " << dy << ", a " << a << ", entry (" << o << ", " << q << ")";
      for (int j = 0; j < d; ++j) EXPECT_NEAR(w.m[j], m[j], 1e-5 * (1 + std::abs(m[j])));
    }
  }
}

// One TMPD transition from a fixed state against the formula in FP64:
//   x' = c0 m + c1 x + scale * (c0 s^2 / a) * (a / s^2) C A^T (A C A^T + sigma_y^2 I)^-1 (y - A m)
// with m and C exact, the system solved by elimination, and a deterministic kernel (sig = 0). Tolerance
// 1e-4 relative to the largest |x'| (FP32 JVPs and Cholesky). Seen failing with the guidance sign flipped.
// row_scale multiplies row 0 of A and y_0; mix0 > 0 replaces row 1 by row 0 (unscaled) + mix0 x row 1, correlating
// the rows. Returns the FP64 matrix A C A^T + sigma_y^2 I of the reference.
namespace {

std::vector<double> check_tmpd_one_step(double row_scale, double mix0, double sigma2) {
  const small_mixture mix;
  const int d = mix.d, dy = 2;
  std::mt19937_64 gen(11);
  std::normal_distribution<double> z;
  std::vector<double> A64(dy * d), y64(dy);
  for (auto& v : A64) v = z(gen);
  for (auto& v : y64) v = 3 * z(gen);
  if (mix0 > 0)
    for (int j = 0; j < d; ++j) A64[d + j] = A64[j] + mix0 * A64[d + j];
  for (int j = 0; j < d; ++j) A64[j] *= row_scale;
  y64[0] *= row_scale;
  const std::vector<float> A(A64.begin(), A64.end()), y(y64.begin(), y64.end());
  const double a = 0.7, s = std::sqrt(1 - a * a), c0 = 0.4, c1 = 0.55, scale = 0.8;
  kn::guided_step st{};
  st.a = float(a);
  st.s = float(s);
  st.c0 = float(c0);
  st.c1 = float(c1);
  st.sig = 0.f;
  st.guidance = float(c0 * s * s / a);
  kn::guided_params p = host_params(mix, A, y, &st, dy);
  // The mixture's constants at the step's channel, as the fused run's table holds them.
  std::vector<float> table;
  p.channels = channel_table(p.mix, 1, kn::guided_channels{p.steps}, table);
  std::vector<double> x(d);
  for (auto& v : x) v = 1.5 * z(gen);
  std::vector<float> xf(x.begin(), x.end()), fw(2 * d + dy * d + dy);
  std::vector<double> dw(dy * dy + dy);
  const kn::tmpd_scratch w = kn::tmpd_scratch::rows(fw.data(), dw.data(), d, dy);
  kn::strided_vec<float> xp{xf.data(), 1, d};
  EXPECT_TRUE(kn::tmpd_step(p, 0, 0, float(scale), float(sigma2), xp, w));
  std::vector<double> m, C;
  mix.moments(x, a, s, m, C);
  std::vector<double> CAt(d * dy, 0.0), M(dy * dy, 0.0), r(dy);
  for (int j = 0; j < d; ++j)
    for (int o = 0; o < dy; ++o)
      for (int i = 0; i < d; ++i) CAt[j * dy + o] += C[j * d + i] * A[o * d + i];
  for (int o = 0; o < dy; ++o) {
    r[o] = y[o];
    for (int j = 0; j < d; ++j) r[o] -= A[o * d + j] * m[j];
    for (int q = 0; q < dy; ++q) {
      for (int j = 0; j < d; ++j) M[o * dy + q] += A[o * d + j] * CAt[j * dy + q];
      if (o == q) M[o * dy + q] += sigma2;
    }
  }
  const std::vector<double> f = solve(M, r, dy);
  double top = 0;
  std::vector<double> ref(d);
  for (int j = 0; j < d; ++j) {
    double g = 0;
    for (int o = 0; o < dy; ++o) g += CAt[j * dy + o] * f[o];
    ref[j] = c0 * m[j] + c1 * x[j] + scale * c0 * g;  // (c0 s^2 / a) (a / s^2) C A^T f
    top = std::max(top, std::abs(ref[j]));
  }
  for (int j = 0; j < d; ++j) EXPECT_NEAR(xf[j], ref[j], 1e-4 * top) << "coordinate " << j;
  return M;
}

}  // namespace

TEST(Tmpd, OneStepMatchesFp64Reference) { check_tmpd_one_step(1.0, 0.0, 0.3); }

// The same with rows of A 1e6 apart (row 0 and y_0 scaled by 1e6, row 1 correlated with row 0): A C A^T +
// sigma_y^2 I is positive definite, its pivot 1 far above 1e-13 of its own diagonal entry but below 1e-13 of the
// largest (row 0's, 1e12 times larger), which the reference's matrix is checked to be. The step must pass the
// Cholesky and match the FP64 formula as above.
TEST(Tmpd, OneStepWithRowsOnVeryDifferentScales) {
  std::vector<double> M = check_tmpd_one_step(1e6, 0.3, 0.01);
  std::vector<double> L = M;
  EXPECT_GE(kn::cholesky_failure(L.data(), 2), 0) << "the largest-entry test should refuse this matrix";
  L = M;
  EXPECT_LT(kn::cholesky_failure_scaled(L.data(), 2), 0);
  std::printf("A C A^T + sigma_y^2 I = [%.6g %.6g; %.6g %.6g]\n", M[0], M[1], M[2], M[3]);
}

// An observation with two repeated rows (6 x 4, its y consistent) has the likelihood of the full-rank 4 x 4 one with
// those rows and their y scaled by sqrt(2) (N(y; a x, s^2)^2 = (2 pi s^2)^-1/2 N(sqrt(2) y; sqrt(2) a x, s^2)), and
// every sampler reads A only through A^T A and A^T y (DiffPIR), A^T (c A A^T + tau I)^-1 (y - A m) (Pi-GDM, TMPD,
// DCPS with dcps_bridge_variance) or the likelihood (SMC): runs on the two from the same seed must agree. The first
// runs in the basis of its SVD (README "Observations with more rows than rank"), the second as given. At sigma_y =
// 1e-7 DiffPIR, Pi-GDM, TMPD and DCPS (64 particles, 30 steps): every coordinate within 1e-3 (measured 1.2e-7, and
// 2e-5 for DCPS's Langevin steps); before the reduction DiffPIR, Pi-GDM and DCPS refused the first ("not
// numerically positive definite") and TMPD returned NaN. SMC (twisted potentials, sigma_y = 0.3, where both ran
// before too) checks the log-normaliser's part outside the rows kept: log Z-hat differs by exactly -log(2 pi
// sigma_y^2) (two repeated rows), to 1e-4 (measured 4e-8).
TEST(GuidedSamplers, RepeatedRowsRunAsTheirScaledFullRankEquivalent) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const double r2 = std::sqrt(2.0);
  const std::vector<double> A6 = {1, 2, 0, -1, 0, 1, 3, 1, 2, -1, 1, 0, 1, 1, -2, 2, 1, 2, 0, -1, 2, -1, 1, 0},
                            y6 = {0.5, -1.0, 0.8, 1.2, 0.5, 0.8};
  const std::vector<double> A4 = {r2, 2 * r2, 0, -r2, 0, 1, 3, 1, 2 * r2, -r2, r2, 0, 1, 1, -2, 2},
                            y4 = {0.5 * r2, -1.0, 0.8 * r2, 1.2};
  using S = ds::guided_sampler;
  const std::int64_t N = 64;
  const auto run = [&](S sampler, double sy, bool repeated, double* log_z) {
    ds::guided_problems g;
    g.d_y = repeated ? 6 : 4;
    g.A = repeated ? A6 : A4;
    g.y = repeated ? y6 : y4;
    g.sigma_y = {sy};
    ds::guided_options o = options(sampler, N, 30, 5);
    if (sampler == S::dcps) o.dcps_bridge_variance = true;  // DCPS's setting: the others refuse it
    if (sampler == S::smc) o.potentials = ds::guided_potentials::automatic;
    std::vector<float> x(N * 4, NAN);
    ds::guided_outputs out;
    out.samples = x.data();
    out.log_normaliser = sampler == S::smc ? log_z : nullptr;
    try {
      ds::guided_sample(prior, out, g, o, {ds::executor::cpu, nullptr});
    } catch (const std::exception& e) {
      ADD_FAILURE() << ds::to_string(sampler) << (repeated ? " repeated rows: " : " scaled rows: ") << e.what();
    }
    return x;
  };
  for (S sampler : {S::diffpir, S::pigdm, S::tmpd, S::dcps}) {
    const std::vector<float> a = run(sampler, 1e-7, true, nullptr), b = run(sampler, 1e-7, false, nullptr);
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::isnan(a[i]) ? INFINITY : std::max(worst, double(std::abs(a[i] - b[i])));
    EXPECT_LE(worst, 1e-3) << ds::to_string(sampler);
    std::printf("%s: repeated rows against scaled rows, largest difference %.3g\n", ds::to_string(sampler), worst);
  }
  const double sy = 0.3;
  double lz6 = NAN, lz4 = NAN;
  run(S::smc, sy, true, &lz6);
  run(S::smc, sy, false, &lz4);
  EXPECT_NEAR(lz6 - lz4, -std::log(2 * M_PI * sy * sy), 1e-4);
  std::printf("smc: log Z-hat %.8f (repeated rows) - %.8f (scaled rows) against %.8f\n", lz6, lz4,
              -std::log(2 * M_PI * sy * sy));
}

// An observation with more rows than rank is factored once per operator set (src/guided_reduction.hpp): the
// guided_workspace_bytes() of a run and the guided_sample() that takes its workspace share one FP64 factorisation
// (they each factored the operators: 3.4 s for a 512 x 256 operator in Pi-GDM's reduction, 45 s in DDRM's), as do
// runs with another y under the same operators and a plan of them; an operator that differs in one bit is factored
// anew, and so are operators the memo no longer holds. An 8 x 4 A with two repeated rows (Pi-GDM reduces it; DDRM
// factors every operator) and per-problem operators (B = 2).
TEST(GuidedSamplers, OneFactorisationServesTheQueryTheRunAndOtherObservations) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  std::mt19937 gen(20261204);
  std::normal_distribution<double> normal;
  const std::int64_t N = 16, dy = 8, d = 4;
  const auto operators = [&](std::int64_t count) {
    std::vector<double> A(static_cast<std::size_t>(count * dy * d));
    for (std::int64_t c = 0; c < count; ++c) {
      double* a = A.data() + c * dy * d;
      for (std::int64_t i = 0; i < (dy - 1) * d; ++i) a[i] = normal(gen);
      for (std::int64_t j = 0; j < d; ++j) a[(dy - 1) * d + j] = a[j];  // the last row repeats the first
    }
    return A;
  };
  const auto observations = [&](std::int64_t B) {
    std::vector<double> y(static_cast<std::size_t>(B * dy));
    for (double& v : y) v = normal(gen);
    return y;
  };
  const ds::execution cpu{ds::executor::cpu, nullptr};
  for (ds::guided_sampler sampler : {ds::guided_sampler::pigdm, ds::guided_sampler::ddrm}) {
    const ds::guided_options o = options(sampler, N, 10, 5);
    // The workspace query, then the run on the caller's workspace.
    const auto run = [&](const ds::guided_problems& g) { return samples_on_a_workspace(prior, g, o); };
    const std::string name = ds::to_string(sampler);
    const auto made = [&] {
      return sampler == ds::guided_sampler::ddrm ? ds::detail::ddrm_factorisations()
                                                 : ds::detail::reduction_factorisations();
    };
    for (std::int64_t B : {1, 2}) {
      ds::guided_problems g;
      g.problems = B;
      g.d_y = dy;
      g.A = operators(B);
      g.y = observations(B);
      g.sigma_y = {1e-3};
      std::int64_t before = made();
      const std::vector<float> first = run(g);
      EXPECT_EQ(made() - before, 1) << name << ", B = " << B << ": the query and the run";
      EXPECT_EQ(run(g), first) << name << ", B = " << B;  // the same factors: the same samples
      ds::guided_problems other_y = g;
      other_y.y = observations(B);
      ds::guided_problems other_sigma = g;
      other_sigma.sigma_y = {2e-3};
      before = made();
      EXPECT_NE(run(other_y), first);
      (void)run(other_sigma);
      (void)ds::sampling_plan::guided(d, g, o, ds::model_output::denoiser, cpu);
      EXPECT_EQ(made() - before, 0) << name << ", B = " << B
                                    << ": another y or sigma_y under the same operators, and a plan";
      ds::guided_problems one_bit = g;
      one_bit.A.back() = std::nextafter(one_bit.A.back(), 10.0);
      before = made();
      (void)run(one_bit);
      EXPECT_EQ(made() - before, 1) << name << ", B = " << B << ": an operator one bit apart";
      // Operators the memo no longer holds are factored anew, with the same samples.
      for (std::size_t i = 0; i < ds::detail::reduction_memo_entries; ++i) {
        ds::guided_problems evict = g;
        evict.A = operators(B);
        (void)run(evict);
      }
      before = made();
      EXPECT_EQ(run(g), first) << name << ", B = " << B;
      EXPECT_EQ(made() - before, 1) << name << ", B = " << B << ": after " << ds::detail::reduction_memo_entries
                                    << " other operator sets";
    }
  }
}

// DDRM on a set mixing an SVD operator with a dense one (B = 2): the SVD operator's factors are its own, the dense
// one's come from the host factorisation, which is kept as for a set without SVD operators. Before, any set holding
// an SVD operator skipped the memo, so the dense operator beside it was factored by every workspace query, run and
// plan (none of it counted; seen failing so: 0 factorisations counted where 1 is expected). The SVD operator is taken
// as given per call, not from the memo: a set with another SVD operator beside the same dense one reuses the dense
// one's factors only (a memo that kept the SVD operator's factors under the dense one's key ran the second set with
// the first set's SVD operator; seen failing so), and each problem's samples are those of its operator alone.
TEST(Ddrm, KeepsTheDenseFactorsOfASetWithAnSvdOperator) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const std::int64_t N = 16, dy = 2, d = 4;
  const ds::execution cpu{ds::executor::cpu, nullptr};
  const ds::guided_options o = options(ds::guided_sampler::ddrm, N, 10, 5);
  const auto run = [&](const ds::guided_problems& g) { return samples_on_a_workspace(prior, g, o); };
  const auto svd = [&](double angle, double s0) {
    const double c = std::cos(angle), s = std::sin(angle);
    // U = I, V's columns (c, s, 0, 0) and (0, 0, 1, 0).
    return ds::observation_operator::svd(dy, d, {1, 0, 0, 1}, {s0, 0.7}, {c, 0, s, 0, 0, 1, 0, 0});
  };
  ds::guided_problems g;
  g.problems = 2;
  g.d_y = dy;
  g.operators = {svd(0.3, 2.0), ds::observation_operator::dense(dy, d, {1.0, 0.5, -0.2, 0.0, 0.0, 0.3, 1.1, -0.4})};
  g.y = {0.5, -0.3, 1.2, 0.4};
  g.sigma_y = {0.2};
  std::int64_t before = ds::detail::ddrm_factorisations();
  const std::vector<float> first = run(g);
  EXPECT_EQ(ds::detail::ddrm_factorisations() - before, 1) << "the query and the run";
  ds::guided_problems other = g;
  other.operators[0] = svd(-0.9, 3.0);
  other.y = {0.1, 0.2, -0.5, 0.6};
  before = ds::detail::ddrm_factorisations();
  const std::vector<float> second = run(other);
  (void)ds::sampling_plan::guided(d, other, o, ds::model_output::denoiser, cpu);
  EXPECT_EQ(ds::detail::ddrm_factorisations() - before, 0) << "another SVD operator and y beside the same dense one";
  EXPECT_EQ(run(g), first) << "the first set again";
  // Each problem as in a set of its own operator twice (the same streams, the same rank): the SVD problem's samples
  // from its own factors (a set of SVD operators alone is not kept), the dense one's from a set of dense operators.
  const auto alone = [&](const ds::guided_problems& set, int which) {
    ds::guided_problems twice = set;
    twice.operators = {set.operators[which], set.operators[which]};
    return run(twice);
  };
  for (const ds::guided_problems* set : {&g, &other})
    for (int which : {0, 1}) {
      const std::vector<float> ref = alone(*set, which), got = set == &g ? first : second;
      for (std::int64_t i = which * N * d; i < (which + 1) * N * d; ++i)
        ASSERT_EQ(got[i], ref[i]) << (set == &g ? "first" : "second") << " set, problem " << which << ", value " << i;
    }
}

// Whether a run needs the reduction (A A^T's scaled Cholesky pivots and, for Pi-GDM and DiffPIR, a condition
// estimate: O(d_y^3) per operator) is checked once per operator set too: guided_workspace_bytes() and the
// guided_sample() that takes its workspace each computed it (src/guided.cu, rank_reduction_needed), as did every run
// with another y. Operators that differ in one bit, another sampler's check (SMC's pivots alone, Pi-GDM's condition
// limit too) and operators the memo no longer holds are checked anew. The 2 x 4 operator's rows have correlation
// 0.998: cond = 999 of the scaled A A^T, whose pivot 0.004 passes SMC's test, so Pi-GDM reduces it and SMC does not
// (a check kept under the operators alone would have answered Pi-GDM with SMC's answer).
TEST(GuidedSamplers, OneReductionCheckServesTheQueryTheRunAndOtherObservations) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const std::int64_t N = 8, d = 4, dy = 2;
  const double c = 0.998, s = std::sqrt(1 - c * c);
  const std::vector<double> A = {0.6, 0.8, 0.0, 0.0, c * 0.6, c * 0.8, s, 0.0};
  const auto run = [&](const ds::guided_problems& g, const ds::guided_options& o) {
    return samples_on_a_workspace(prior, g, o);
  };
  for (bool operators : {false, true}) {
    ds::guided_problems g;
    g.problems = 1;
    g.d_y = dy;
    if (operators)
      g.operators = {ds::observation_operator::dense(dy, d, A)};
    else
      g.A = A;
    g.y = {0.3, -0.2};
    g.sigma_y = {1e-2};
    const std::string where = operators ? "operators" : "dense rows";
    std::int64_t checks = ds::detail::reduction_checks(), factored = ds::detail::reduction_factorisations();
    const ds::guided_options smc = options(ds::guided_sampler::smc, N, 6, 5);
    const std::vector<float> smc_first = run(g, smc);
    EXPECT_EQ(ds::detail::reduction_checks() - checks, 1) << where << ": smc's query and run";
    EXPECT_EQ(ds::detail::reduction_factorisations() - factored, 0) << where << ": smc keeps the rows";
    const ds::guided_options pigdm = options(ds::guided_sampler::pigdm, N, 6, 5);
    checks = ds::detail::reduction_checks();
    factored = ds::detail::reduction_factorisations();
    const std::vector<float> first = run(g, pigdm);
    EXPECT_EQ(ds::detail::reduction_checks() - checks, 1) << where << ": pigdm's query and run";
    // Pi-GDM reduces these rows (the dense rows' run factors them; the operators' run finds their factors kept).
    EXPECT_EQ(ds::detail::reduction_factorisations() - factored, operators ? 0 : 1) << where;
    ds::guided_problems other_y = g;
    other_y.y = {-0.1, 0.4};
    checks = ds::detail::reduction_checks();
    EXPECT_EQ(run(g, pigdm), first) << where;
    EXPECT_EQ(run(g, smc), smc_first) << where;
    EXPECT_NE(run(other_y, pigdm), first) << where;
    EXPECT_EQ(ds::detail::reduction_checks() - checks, 0) << where << ": the same operators, and another y";
    ds::guided_problems one_bit = g;
    if (operators) {
      std::vector<double> B = A;
      B.back() = std::nextafter(B.back(), 1.0);
      one_bit.operators = {ds::observation_operator::dense(dy, d, B)};
    } else {
      one_bit.A.back() = std::nextafter(one_bit.A.back(), 1.0);
    }
    checks = ds::detail::reduction_checks();
    (void)run(one_bit, pigdm);
    EXPECT_EQ(ds::detail::reduction_checks() - checks, 1) << where << ": an operator one bit apart";
    // Operators the memo no longer holds are checked anew, with the same samples.
    for (std::size_t i = 0; i < ds::detail::reduction_memo_entries; ++i) {
      ds::guided_problems evict = g;
      std::vector<double> B = A;
      B[0] += 0.25 * double(i + 1);
      if (operators)
        evict.operators = {ds::observation_operator::dense(dy, d, B)};
      else
        evict.A = B;
      (void)run(evict, pigdm);
    }
    checks = ds::detail::reduction_checks();
    EXPECT_EQ(run(g, pigdm), first) << where;
    EXPECT_EQ(ds::detail::reduction_checks() - checks, 1) << where << ": after " << ds::detail::reduction_memo_entries
                                                          << " other operator sets";
  }
}

// guided_sample on the CPU executor with the rows of A 1e6 apart (d = 10, d_y = 2: row 1 = g0 + 0.1 g1, row 0 =
// 1e6 g0, y = A x0 + sigma_y z, sigma_y = 0.1), so that the d_y x d_y matrices (c A A^T + tau I of Pi-GDM, DiffPIR,
// SMC (potential_spread 1e-4) and DCPS (dcps_bridge_variance); TMPD's A C A^T + sigma_y^2 I) are positive definite
// with a pivot below 1e-13 of row 0's diagonal entry but far above its own. Each sampler runs on the problem and on
// the same problem with its rows (and y) swapped (the same posterior): both must run and give finite samples.
// Row 0 pins g0 . x to sigma_y / 1e6 = 1e-7, below what FP32 samples resolve (u sum_j |g0_j x_j|, u = 2^-24): TMPD,
// Pi-GDM and DiffPIR, whose guidance solves with the whole matrix, must meet it within 16 u sum_j |g0_j x_j| in
// every sample (measured at most 2.6 u on the scalar, SSE2, AVX2 and AVX-512 targets). SMC (2e4 to 8e4 u with
// potentials this sharp) and DCPS (1.4e6 u: tamed Langevin steps) are only run. Seen failing before each pivot was
// tested against its own diagonal entry: "matrix not numerically positive definite (pivot at row 1)" from Pi-GDM,
// DiffPIR, SMC and DCPS, and every TMPD sample NaN in the original row order (the swapped order passed the former
// test), also with only the packed TMPD tell (src/cpu/jacobian_tells.cpp) left on the former test.
TEST(GuidedSamplers, RowsOnVeryDifferentScales) {
  benchmark_problem p = make_problem(10, 2, 7);
  auto& o = p.observation;
  const std::int64_t d = 10;
  std::mt19937_64 gen(8);
  std::normal_distribution<double> z;
  std::vector<double> g0(d);
  for (std::int64_t j = 0; j < d; ++j) {
    g0[j] = o.A[j];
    o.A[d + j] = o.A[j] + 0.1 * o.A[d + j];
    o.A[j] *= 1e6;
  }
  o.sigma_y = 0.1;
  const auto& means = p.prior.means();
  std::vector<double> x0(d);
  for (std::int64_t j = 0; j < d; ++j) x0[j] = means[3 * d + j] + z(gen);
  for (int i = 0; i < 2; ++i) {
    o.y[i] = o.sigma_y * z(gen);
    for (std::int64_t j = 0; j < d; ++j) o.y[i] += o.A[i * d + j] * x0[j];
  }
  ds::linear_observation swapped = o;
  for (std::int64_t j = 0; j < d; ++j) std::swap(swapped.A[j], swapped.A[d + j]);
  std::swap(swapped.y[0], swapped.y[1]);
  const std::int64_t N = 256;
  const double u = std::ldexp(1.0, -24);
  for (ds::guided_sampler s : {ds::guided_sampler::tmpd, ds::guided_sampler::pigdm, ds::guided_sampler::diffpir,
                               ds::guided_sampler::smc, ds::guided_sampler::dcps}) {
    ds::guided_options opt = options(s, N, 50, 13);
    // DCPS's S = v A A^T + sigma_y^2 I (v = 0 without it); SMC's S = var_k I + sig2_k A A^T with var_k below sig2_k's
    // scale (each sampler's own setting: the others refuse it)
    opt.dcps_bridge_variance = s == ds::guided_sampler::dcps;
    if (s == ds::guided_sampler::smc) opt.potential_spread = 1e-4;
    const bool pinned = s != ds::guided_sampler::smc && s != ds::guided_sampler::dcps;
    for (const ds::linear_observation* obs : {&o, &swapped}) {
      const char* order = obs == &o ? "" : " (rows swapped)";
      std::vector<float> x;
      try {
        x = run(p.prior, replicate(*obs, 1), opt);
      } catch (const std::exception& e) {
        ADD_FAILURE() << ds::to_string(s) << order << ": " << e.what();
        continue;
      }
      std::int64_t nonfinite = 0, off = 0;
      double worst = 0;  // largest misfit in units of u sum_j |g0_j x_j|
      for (std::int64_t n = 0; n < N; ++n) {
        double r = o.y[0] / 1e6, size = 0;
        for (std::int64_t j = 0; j < d; ++j) {
          nonfinite += !std::isfinite(x[n * d + j]);
          r -= g0[j] * x[n * d + j];
          size += std::fabs(g0[j] * x[n * d + j]);
        }
        worst = std::max(worst, std::fabs(r) / (u * size));
        off += !(std::fabs(r) <= 16 * u * size);
      }
      std::printf("%s%s: largest |y_0 / 1e6 - g0 . x| %.3g u sum_j |g0_j x_j|\n", ds::to_string(s), order, worst);
      EXPECT_EQ(nonfinite, 0) << ds::to_string(s) << order;
      if (pinned) {
        EXPECT_EQ(off, 0) << ds::to_string(s) << order << ": samples off row 0's constraint";
      }
    }
  }
}

// Determinism: the same particles with 1 and 2 CPU threads, and problem 0 of a two-problem call equal to the
// one-problem call (particle ids b N + j, streams keyed by them), bit for bit, for both samplers.
TEST(GuidedSamplers, BitIdenticalAcrossThreadsAndBatchSplits) {
  const benchmark_problem p = make_problem(10, 2, 5);
  for (ds::guided_sampler s : {ds::guided_sampler::tmpd, ds::guided_sampler::ddrm, ds::guided_sampler::dcps}) {
    ds::guided_options o = options(s, 64, 40, 9);
    if (s == ds::guided_sampler::dcps) o.dcps_langevin_steps = 5;  // the other samplers refuse it
    const int before = omp_get_max_threads();
    omp_set_num_threads(1);
    const std::vector<float> one = run(p.prior, replicate(p.observation, 1), o);
    omp_set_num_threads(2);
    const std::vector<float> two = run(p.prior, replicate(p.observation, 1), o);
    ds::guided_problems both = replicate(p.observation, 2);
    both.y[2] += 1.0;  // a different second problem
    const std::vector<float> batch = run(p.prior, both, o);
    omp_set_num_threads(before);
    ASSERT_EQ(one.size(), two.size());
    for (std::size_t i = 0; i < one.size(); ++i) {
      ASSERT_TRUE(std::isfinite(one[i])) << ds::to_string(s);
      ASSERT_EQ(one[i], two[i]) << ds::to_string(s) << " index " << i;
      ASSERT_EQ(one[i], batch[i]) << ds::to_string(s) << " index " << i;
    }
  }
}

// Every problem of a batch reads only its own tables: in a two-problem call with different operators (per-problem
// dense matrices, masks with different indices and gains, or rank-2 SVD operators, which run on their projected
// problems), different y and different sigma_y, problem 0's outputs equal those of the call whose two problems are
// both problem 0, and problem 1's those of the call whose two problems are both problem 1, bit for bit (particle j
// of problem b draws from the stream b N + j in each call, so only the tables can differ). Every sampler: SMC with
// each potential (the twisted ones with the start correction, the multistep kernel and the final moves) and all its
// outputs (particles, log-weights, samples, log-normaliser, ESS trace, resampling counts), DPS with both step forms,
// DCPS with both bridge covariances. d_x = 7 leaves a partial SIMD pack. Seen failing (problem 1 only, each sampler
// it concerns) with problem 0's sigma_y taken for every problem in the SMC / DPS / Pi-GDM / DiffPIR tables, in
// SKRock's, TMPD's, the final moves' and the SVD reduction's log-normaliser constant, with problem 0's factors in
// DDRM's tables and with problem 0's A A^T in DCPS's bridge covariances.
TEST(GuidedSamplers, EachProblemOfABatchReadsOnlyItsOwnTables) {
  const std::int64_t d = 7, dy = 3, N = 16, K = 10;
  std::mt19937_64 gen(29);
  std::normal_distribution<double> z;
  std::uniform_real_distribution<double> u(0.4, 1.8);
  std::vector<double> means(2 * d), variances(2 * d);
  for (double& v : means) v = 1.5 * z(gen);
  for (double& v : variances) v = u(gen);
  const ds::gaussian_mixture prior(d, {0.35, 0.65}, means, variances);
  // Orthonormal columns (Gram-Schmidt) for the SVD operators.
  const auto orthonormal = [&](std::int64_t n, std::int64_t r) {
    std::vector<double> X(n * r);
    for (double& v : X) v = z(gen);
    for (std::int64_t a = 0; a < r; ++a) {
      for (std::int64_t c = 0; c < a; ++c) {
        double s = 0;
        for (std::int64_t i = 0; i < n; ++i) s += X[i * r + a] * X[i * r + c];
        for (std::int64_t i = 0; i < n; ++i) X[i * r + a] -= s * X[i * r + c];
      }
      double s = 0;
      for (std::int64_t i = 0; i < n; ++i) s += X[i * r + a] * X[i * r + a];
      for (std::int64_t i = 0; i < n; ++i) X[i * r + a] /= std::sqrt(s);
    }
    return X;
  };
  struct problem {
    ds::observation_operator op;
    std::vector<double> y;
    double sigma_y;
  };
  for (int kind = 0; kind < 3; ++kind) {
    problem P[2];
    for (int b = 0; b < 2; ++b) {
      if (kind == 0) {
        std::vector<double> A(dy * d);
        for (double& v : A) v = z(gen);
        P[b].op = ds::observation_operator::dense(dy, d, A);
      } else if (kind == 1) {
        P[b].op = ds::observation_operator::mask(d, {b == 0 ? 6 : 1, 0, 3 + b}, {1.3 - b, -0.7, 0.9 + 0.4 * b});
      } else {
        P[b].op = ds::observation_operator::svd(dy, d, orthonormal(dy, 2), {1.5 - 0.6 * b, 0.4 + 0.5 * b},
                                                orthonormal(d, 2));
      }
      for (std::int64_t o = 0; o < dy; ++o) P[b].y.push_back(z(gen));
      P[b].sigma_y = b == 0 ? 0.5 : 0.8;
    }
    const auto batch = [&](int first, int second) {
      ds::guided_problems g;
      g.problems = 2;
      g.d_y = dy;
      for (int b : {first, second}) {
        g.operators.push_back(P[b].op);
        g.y.insert(g.y.end(), P[b].y.begin(), P[b].y.end());
        g.sigma_y.push_back(P[b].sigma_y);
      }
      return g;
    };
    using S = ds::guided_sampler;
    for (S s : {S::smc, S::dps, S::pigdm, S::diffpir, S::skrock, S::tmpd, S::ddrm, S::dcps})
      for (int variant = 0; variant < (s == S::smc ? 3 : s == S::dps || s == S::dcps ? 2 : 1); ++variant) {
        ds::guided_options o = options(s, N, K, 31);
        if (s == S::dcps) {  // DCPS's settings (the other samplers refuse them as unread)
          o.dcps_langevin_steps = 3;
          o.dcps_bridge_variance = variant == 1;
        }
        if (s == S::dps) {
          o.guidance_scale = 0.1;
          o.dps_step = variant == 0 ? ds::dps_step_form::likelihood : ds::dps_step_form::normalised;
        }
        if (s == S::smc) {
          o.potentials = static_cast<ds::guided_potentials>(variant);  // linear, moment, twisted
          o.start_correction = o.potentials != ds::guided_potentials::moment;
          o.multistep_kernel = true;
          o.final_moves = o.potentials == ds::guided_potentials::twisted ? 2 : 0;
        }
        struct outputs {
          std::vector<float> x, lw, samples, ess;
          std::vector<double> lz;
          std::vector<std::int32_t> counts;
        };
        const auto run_batch = [&](const ds::guided_problems& g) {
          outputs r{std::vector<float>(2 * N * d), std::vector<float>(2 * N), std::vector<float>(2 * N * d),
                    std::vector<float>(2 * (K + 1)), std::vector<double>(2), std::vector<std::int32_t>(2)};
          ds::guided_outputs out;
          out.particles = r.x.data();
          if (s == S::smc) {
            out.log_weights = r.lw.data();
            out.samples = r.samples.data();
            out.ess_trace = r.ess.data();
            out.log_normaliser = r.lz.data();
            out.resample_count = r.counts.data();
          }
          ds::guided_sample(prior, out, g, o, {ds::executor::cpu, nullptr});
          return r;
        };
        const outputs mixed = run_batch(batch(0, 1));
        const std::string what = std::string(ds::to_string(s)) + " variant " + std::to_string(variant) +
                                 " operator " + ds::to_string(P[0].op.kind());
        for (int b = 0; b < 2; ++b) {
          const outputs alone = run_batch(batch(b, b));
          const auto rows = [&](const std::vector<float>& v, std::int64_t per) {
            return std::vector<float>(v.begin() + b * per, v.begin() + (b + 1) * per);
          };
          for (float v : rows(alone.x, N * d)) ASSERT_TRUE(std::isfinite(v)) << what;
          EXPECT_EQ(rows(mixed.x, N * d), rows(alone.x, N * d)) << what << ", problem " << b;
          if (s != S::smc) continue;
          EXPECT_EQ(rows(mixed.lw, N), rows(alone.lw, N)) << what << ", problem " << b;
          EXPECT_EQ(rows(mixed.samples, N * d), rows(alone.samples, N * d)) << what << ", problem " << b;
          EXPECT_EQ(rows(mixed.ess, K + 1), rows(alone.ess, K + 1)) << what << ", problem " << b;
          EXPECT_EQ(mixed.lz[b], alone.lz[b]) << what << ", problem " << b;
          EXPECT_EQ(mixed.counts[b], alone.counts[b]) << what << ", problem " << b;
        }
      }
  }
}

// On a Gaussian prior N(mu, diag v) every step of DPS (likelihood form), Pi-GDM and TMPD is affine in the particle
// plus Gaussian noise, so the law of the whole discrete chain is Gaussian and follows from a mean and covariance
// recursion in FP64, from the formulas in the README rather than from the kernels: at the
// step from (a, s) to (a', s'), with c = a^2 v + s^2 per coordinate,
//   m = D x + e,  D = diag(a v / c),  e = s^2 mu / c     (the denoiser; J = D, Cov(x0 | x) = (s^2 / a) D),
//   x' = c0 m + c1 x + g D A^T W (y - A m) + sig z,    g = c0 s^2 / a (guidance_scale 1),
//   W = I / sigma_y^2 (DPS), (r^2 A A^T + sigma_y^2 I)^-1 with r^2 = s^2 / (a^2 + s^2) (Pi-GDM),
//   (A Cov(x0 | x) A^T + sigma_y^2 I)^-1 (TMPD),
// and the DDPM kernel c0 = a' (s^2 - q^2 s'^2) / s^2, c1 = q s'^2 / s^2, sig^2 = s'^2 (s^2 - q^2 s'^2) / s^2, q = a / a'.
// So x' = M x + b + sig z with M = c0 D + c1 I - g D A^T W A D, b = c0 e + g D A^T W (y - A e), from x = s_0 z.
// Each sampler's N particles must match that law: per coordinate the mean within 5 standard errors
// (sqrt(Sigma_jj / N)) and the variance within 5 (sqrt(2 / N) Sigma_jj; the particles are independent); 5 se over
// 4 coordinates x 2 statistics x 4 samplers leaves a false failure probability below 1e-4. DiffPIR (its defaults,
// lambda 7 and zeta 0.1, on the diagonal prior) likewise: its proximal data step and re-noising are affine in x plus
// Gaussian noise (the recursion below; it was asserted at one step only, and a per-step table frozen at step 0
// passed everything but one bound). Pi-GDM's likelihood
// is the exact p(y | x_k) for a unit-variance prior and TMPD's for any Gaussian, so their chains also approach the
// exact posterior as the steps grow: the recursion at 4000 steps is checked against mixture_posterior (the
// discretisation error there, measured 4e-5 in a mean and 3.6e-3 relative in a variance, is below the 1e-2
// allowed). Seen failing with Pi-GDM's r^2 = s^2 / a^2 (the variance-exploding level instead of
// sigma_k^2 / (1 + sigma_k^2)), with DPS's precision 1 / sigma_y instead of 1 / sigma_y^2, with TMPD's sigma_y in
// place of sigma_y^2, and (Pi-GDM, TMPD) with the guidance factor c0 s^2 / a^2 instead of c0 s^2 / a.
TEST(GuidedSamplers, DpsPigdmTmpdAndDiffpirFollowTheExactLawOfTheirChainsOnAGaussianPrior) {
  const int d = 4, dy = 2;
  const std::int64_t N = 4000, K = 60;
  const std::vector<double> mu = {0.8, -1.2, 0.3, 1.5}, A = {1.0, 0.5, -0.3, 0.2, -0.4, 0.9, 0.6, -1.1},
                            y = {1.4, -0.6};
  const double sy = 0.5;
  using S = ds::guided_sampler;
  // The chain's law at the end: mean and covariance (row-major d x d), FP64.
  const auto chain_law = [&](S sampler, const std::vector<double>& v, std::int64_t steps, std::vector<double>& mean,
                             std::vector<double>& cov) {
    const std::vector<ds::schedule_point> pts = ds::noise_schedule::vp_linear().points(steps);
    mean.assign(d, 0.0);
    cov.assign(d * d, 0.0);
    for (int j = 0; j < d; ++j) cov[j * d + j] = pts[0].s * pts[0].s;
    std::vector<double> M(d * d), b(d), W(dy * dy), AD(dy * d), t(d * d), next(d * d);
    for (std::int64_t k = 0; k < steps; ++k) {
      const double a = pts[k].a, s = pts[k].s, an = pts[k + 1].a, sn = pts[k + 1].s, q = a / an;
      const double c0 = an * (s * s - q * q * sn * sn) / (s * s), c1 = q * sn * sn / (s * s);
      const double sig2 = sn * sn * (s * s - q * q * sn * sn) / (s * s), g = c0 * s * s / a;
      std::vector<double> D(d), e(d);
      for (int j = 0; j < d; ++j) {
        const double c = a * a * v[j] + s * s;
        D[j] = a * v[j] / c;
        e[j] = s * s * mu[j] / c;
      }
      double noise2 = sig2;  // the step's noise variance
      if (sampler == S::diffpir) {
        // x0 = m + A^T G (y - A m), G = (A A^T + (rho / 2) I)^-1, rho = lambda sigma_y^2 a^2 / s^2 (lambda 7, zeta
        // 0.1: the defaults); x' = a' x0 + s' (sqrt(1 - zeta) (x - a x0) / s + sqrt(zeta) z). With P = I - A^T G A:
        // x0 = P D x + P e + A^T G y, so M = kappa P D + (s' r / s) I, b = kappa (P e + A^T G y),
        // kappa = a' - s' r a / s, r = sqrt(1 - zeta), and sig^2 = s'^2 zeta.
        const double lambda = 7, zeta = 0.1, rho = lambda * sy * sy * a * a / (s * s), r = std::sqrt(1 - zeta);
        double H[4];
        for (int o = 0; o < dy; ++o)
          for (int p = 0; p < dy; ++p) {
            double acc = o == p ? rho / 2 : 0.0;
            for (int j = 0; j < d; ++j) acc += A[o * d + j] * A[p * d + j];
            H[o * dy + p] = acc;
          }
        const double hdet = H[0] * H[3] - H[1] * H[2];
        const double G[4] = {H[3] / hdet, -H[1] / hdet, -H[2] / hdet, H[0] / hdet};
        const double kappa = an - sn * r * a / s;
        std::vector<double> P(d * d), Gy(dy, 0.0);
        for (int o = 0; o < dy; ++o)
          for (int p = 0; p < dy; ++p) Gy[o] += G[o * dy + p] * y[p];
        for (int i = 0; i < d; ++i)
          for (int j = 0; j < d; ++j) {
            double acc = i == j ? 1.0 : 0.0;
            for (int o = 0; o < dy; ++o)
              for (int p = 0; p < dy; ++p) acc -= A[o * d + i] * G[o * dy + p] * A[p * d + j];
            P[i * d + j] = acc;
          }
        for (int i = 0; i < d; ++i) {
          double x0_const = 0;
          for (int j = 0; j < d; ++j) {
            x0_const += P[i * d + j] * e[j];
            M[i * d + j] = kappa * P[i * d + j] * D[j] + (i == j ? sn * r / s : 0.0);
          }
          for (int o = 0; o < dy; ++o) x0_const += A[o * d + i] * Gy[o];
          b[i] = kappa * x0_const;
        }
        noise2 = sn * sn * zeta;
      } else {
        // W: the likelihood's precision of each sampler (2 x 2, inverted in closed form).
        double C[4];
        for (int o = 0; o < dy; ++o)
          for (int p = 0; p < dy; ++p) {
            double acc = 0;
            for (int j = 0; j < d; ++j) {
              const double cov_x0 = sampler == S::tmpd ? s * s * v[j] / (a * a * v[j] + s * s)
                                                       : s * s / (a * a + s * s);  // Pi-GDM's r^2
              acc += A[o * d + j] * A[p * d + j] * cov_x0;
            }
            C[o * dy + p] = (sampler == S::dps ? 0.0 : acc) + (o == p ? sy * sy : 0.0);
          }
        const double det = C[0] * C[3] - C[1] * C[2];
        W = {C[3] / det, -C[1] / det, -C[2] / det, C[0] / det};
        for (int o = 0; o < dy; ++o)
          for (int j = 0; j < d; ++j) AD[o * d + j] = A[o * d + j] * D[j];
        std::vector<double> res(dy);  // y - A e
        for (int o = 0; o < dy; ++o) {
          res[o] = y[o];
          for (int j = 0; j < d; ++j) res[o] -= A[o * d + j] * e[j];
        }
        for (int i = 0; i < d; ++i) {
          double shift = 0;
          for (int o = 0; o < dy; ++o)
            for (int p = 0; p < dy; ++p) shift += AD[o * d + i] * W[o * dy + p] * res[p];
          b[i] = c0 * e[i] + g * shift;
          for (int j = 0; j < d; ++j) {
            double pull = 0;
            for (int o = 0; o < dy; ++o)
              for (int p = 0; p < dy; ++p) pull += AD[o * d + i] * W[o * dy + p] * AD[p * d + j];
            M[i * d + j] = (i == j ? c0 * D[i] + c1 : 0.0) - g * pull;
          }
        }
      }
      std::vector<double> m2(d, 0.0);
      for (int i = 0; i < d; ++i) {
        m2[i] = b[i];
        for (int j = 0; j < d; ++j) m2[i] += M[i * d + j] * mean[j];
      }
      mean = m2;
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) {
          double acc = 0;
          for (int l = 0; l < d; ++l) acc += M[i * d + l] * cov[l * d + j];
          t[i * d + j] = acc;
        }
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) {
          double acc = i == j ? noise2 : 0.0;
          for (int l = 0; l < d; ++l) acc += t[i * d + l] * M[j * d + l];
          next[i * d + j] = acc;
        }
      cov = next;
    }
  };
  ds::guided_problems g;
  g.d_y = dy;
  g.A = A;
  g.y = y;
  g.sigma_y = {sy};
  const std::vector<double> unit(d, 1.0), diagonal = {0.5, 1.7, 0.8, 1.2};
  for (S sampler : {S::dps, S::pigdm, S::tmpd, S::diffpir}) {
    const std::vector<double>& v = sampler == S::tmpd || sampler == S::diffpir ? diagonal : unit;
    const ds::gaussian_mixture prior(d, {1.0}, mu, v);
    std::vector<double> mean, cov;
    if (sampler == S::pigdm || sampler == S::tmpd) {
      // The chain approaches the exact posterior as the steps grow (the reference's own check).
      ds::linear_observation obs{dy, d, A, sy, y};
      const ds::mixture_posterior post(prior, obs);
      chain_law(sampler, v, 4000, mean, cov);
      for (int j = 0; j < d; ++j) {
        EXPECT_NEAR(mean[j], post.mean()[j], 1e-2) << ds::to_string(sampler);
        EXPECT_NEAR(cov[j * d + j] / post.covariance()[j * d + j], 1.0, 1e-2) << ds::to_string(sampler);
      }
    }
    chain_law(sampler, v, K, mean, cov);
    ds::guided_options o = options(sampler, N, K, 37);
    std::vector<float> x(N * d);
    ds::guided_outputs out;
    out.samples = x.data();
    ds::guided_sample(prior, out, g, o, {ds::executor::cpu, nullptr});
    for (int j = 0; j < d; ++j) {
      double m = 0, q = 0;
      for (std::int64_t i = 0; i < N; ++i) m += x[i * d + j];
      m /= double(N);
      for (std::int64_t i = 0; i < N; ++i) q += (x[i * d + j] - m) * (x[i * d + j] - m);
      q /= double(N - 1);
      const double var = cov[j * d + j];
      EXPECT_NEAR(m, mean[j], 5 * std::sqrt(var / double(N))) << ds::to_string(sampler) << " coordinate " << j;
      EXPECT_NEAR(q, var, 5 * std::sqrt(2.0 / double(N)) * var) << ds::to_string(sampler) << " coordinate " << j;
      std::printf("%s coordinate %d: mean %.4f (chain %.4f), variance %.4f (chain %.4f)\n", ds::to_string(sampler),
                  j, m, mean[j], q, var);
    }
  }
}

// One DDRM transition from a fixed state against the published update in FP64 (in its VE scaling xt = x / a, which
// FP64 holds at any a here), with the kernel's own normals (kernels/rng.cuh, stream (seed, 0, 1)) and a rank-2
// operator in d = 4 given by an orthonormal V: component 0 observed with noise n_0, component 1 with n_1, the
// unobserved complement. Tolerance 1e-5 relative (FP32).
namespace {
void check_ddrm_one_step(double a, double s, double a_next, double s_next, std::vector<float> noise) {
  const small_mixture mix;
  const int d = mix.d, r = 2;
  // V: two orthonormal columns (rotations of e0, e1).
  const double c = std::cos(0.3), s_ = std::sin(0.3);
  const std::vector<float> V = {float(c), 0.f, float(s_), 0.f, 0.f, 1.f, 0.f, 0.f};  // d x r, column 0 = (c, s, 0, 0)
  const std::vector<float> ybar = {1.3f, -0.7f}, inv_noise = {1.f / noise[0], 1.f / noise[1]};
  const double sigma_next = s_next / a_next, eta = 0.85, eta_b = 0.9;
  kn::ddrm_step st{float(a), float(s), float(a_next), float(s_next), float(1 / s)};
  kn::ddrm_params p{};
  std::vector<float> table(kn::mixture_channels::table_floats(mix.view(), 1));
  p.channels = kn::mixture_channels::in(mix.view(), 1, table.data());
  for (int k = 0; k < mix.K; ++k) kn::channel_table_functor<kn::ddrm_channels>{p.channels, {&st}}(k);
  p.steps = &st;
  p.V = V.data();
  p.V_stride = 0;
  p.ybar = ybar.data();
  p.noise = noise.data();
  p.inv_noise = inv_noise.data();
  // The cases as the reference below takes them: the grid's points (a, s), (a_next, s_next).
  const struct {
    double a, s;
  } pts[2] = {{a, s}, {a_next, s_next}};
  const std::vector<std::int32_t> from = {kn::ddrm_less_noisy_from(pts, 2, noise[0]),
                                          kn::ddrm_less_noisy_from(pts, 2, noise[1])};
  p.less_noisy_from = from.data();
  p.problems = 1;
  p.particles = 1;
  p.d = d;
  p.r = r;
  p.eta = float(eta);
  p.eta_b = float(eta_b);
  p.keep = float(std::sqrt(1 - eta * eta));
  p.seed = 13;
  std::vector<double> x = {0.4, -1.2, 2.0, 0.3};
  std::vector<float> xf(x.begin(), x.end()), work(2 * d + 3 * r);
  const kn::ddrm_scratch w = kn::ddrm_scratch::rows(work.data(), d, r);
  kn::strided_vec<float> xp{xf.data(), 1, d};
  kn::ddrm_transition(p, 0, 0, 0, xp, w);
  std::vector<double> xi(d);
  kn::philox rng(13, 0, 1);
  rng.normals(d, [&](int j, float z) { xi[j] = z; });
  std::vector<double> m, C;
  mix.moments(x, a, s, m, C);
  // Spectral basis: V's columns and the complement; the update in each coordinate, then back.
  auto col = [&](int i, int j) { return double(V[j * r + i]); };
  std::vector<double> u(d);
  const double keep = std::sqrt(1 - eta * eta);
  for (int j = 0; j < d; ++j) u[j] = m[j] + sigma_next * keep * (x[j] - a * m[j]) / s + eta * sigma_next * xi[j];
  std::vector<double> out = u;
  for (int i = 0; i < r; ++i) {
    double pu = 0, pm = 0, pxi = 0;
    for (int j = 0; j < d; ++j) {
      pu += col(i, j) * u[j];
      pm += col(i, j) * m[j];
      pxi += col(i, j) * xi[j];
    }
    const double n = noise[i];
    const double v_ref = sigma_next >= n ? (1 - eta_b) * pm + eta_b * ybar[i] +
                                               std::sqrt(sigma_next * sigma_next - n * n * eta_b * eta_b) * pxi
                                         : pm + sigma_next * keep * (ybar[i] - pm) / n + eta * sigma_next * pxi;
    for (int j = 0; j < d; ++j) out[j] += col(i, j) * (v_ref - pu);
  }
  for (int j = 0; j < d; ++j)
    EXPECT_NEAR(xf[j], a_next * out[j], 1e-5 * (1 + std::abs(a_next * out[j]))) << "a " << a << " coordinate " << j;

  // The initial state at channel (a, s) (ddrm_init, stream step 0): xt = sigma xi, observed components with n <
  // sigma set to ybar + sqrt(sigma^2 - n^2) (V^T xi), x = a xt; at a = 0 (sigma infinite) its limit x = s xi.
  p.s_start = float(s);
  p.a_start = float(a);
  kn::ddrm_init(p, 0, 0, xp, w);
  kn::philox rng0(13, 0, 0);
  rng0.normals(d, [&](int j, float z) { xi[j] = z; });
  const double sigma = s / a;
  std::vector<double> x0(d);
  for (int j = 0; j < d; ++j) x0[j] = sigma * xi[j];
  for (int i = 0; i < r; ++i) {
    double pxi = 0;
    for (int j = 0; j < d; ++j) pxi += col(i, j) * xi[j];
    const double n = noise[i];
    if (!(n < sigma)) continue;
    const double target = ybar[i] + std::sqrt(sigma * sigma - n * n) * pxi;
    for (int j = 0; j < d; ++j) x0[j] += col(i, j) * (target - sigma * pxi);
  }
  for (int j = 0; j < d; ++j) {
    const double expected = a > 0 ? a * x0[j] : s * xi[j];
    EXPECT_NEAR(xf[j], expected, 1e-5 * (1 + std::abs(expected))) << "initial state, a " << a << " coordinate " << j;
  }
}
}  // namespace

// Component 0 observed with less noise than sigma' (n = 0.2), component 1 with more (n = 2.0). Seen failing with
// eta_b's weight applied to the observed value's complement.
TEST(Ddrm, OneStepMatchesFp64Reference) { check_ddrm_one_step(0.6, 0.8, 0.8, 0.6, {0.2f, 2.0f}); }

// Component 0's level n = 1 between the two points' (s / a = 1.33 and 0.75; less_noisy_from = 1), component 1's
// above both (n = 2, less_noisy_from = 0): the initial state conditions component 0 on y (it is noisier than y there)
// and the step takes the sigma' < n case for both. The cases above have every less_noisy_from at 0 or 2: the initial
// state's test read at 1 (from > 1 for from > 0, the mutation audit's ddrm-initial-from-off-by-one, left component 0
// unconditioned) passed every Ddrm.* and GuidedSamplers.* test and test_plan.
TEST(Ddrm, OneStepMatchesFp64ReferenceWithALevelBetweenTheFirstTwoPoints) {
  const struct {
    double a, s;
  } pts[2] = {{0.6, 0.8}, {0.8, 0.6}};
  ASSERT_EQ(kn::ddrm_less_noisy_from(pts, 2, 1.0), 1);
  ASSERT_EQ(kn::ddrm_less_noisy_from(pts, 2, 2.0), 0);
  check_ddrm_one_step(0.6, 0.8, 0.8, 0.6, {1.0f, 2.0f});
}

// The same at the start of an Ornstein-Uhlenbeck schedule of horizon 50 (a = e^-50 = 1.9e-22, s = 1; the next
// point t = 49.5): sigma = s / a = 5e21, whose square leaves FP32. Component 1's noise n = 1e22 keeps it in the
// sigma' < n case (a' n = 3.3 > s'). Seen failing before the kernels formed a' xt' directly: every coordinate NaN
// (sqrt of inf - inf), initial state and step.
TEST(Ddrm, OneStepMatchesFp64ReferenceAtAnOuHorizonOf50) {
  check_ddrm_one_step(std::exp(-50.0), std::sqrt(-std::expm1(-100.0)), std::exp(-49.5),
                      std::sqrt(-std::expm1(-99.0)), {0.2f, 1e22f});
}

// The first step of a schedule starting at a = 0 (the linear interpolant's t = 1 -> 0.9: a' = 0.1, s' = 0.9, sigma'
// = 9): component 0 (n = 0.2) noisier than y, component 1 (n = 20) less; the denoiser at a = 0 is the prior mean.
// The initial state is x = s xi.
TEST(Ddrm, OneStepMatchesFp64ReferenceFromAZeroSignalScale) { check_ddrm_one_step(0.0, 1.0, 0.1, 0.9, {0.2f, 20.f}); }

// A schedule whose first point has a = 0 runs: DDRM forms its step in x = a xt and divides only by s (refused before
// as "DDRM's scaling x / a needs a > 0"; seen failing so). The linear interpolant from t = 1 against the same custom
// grid from t = 1 - 1e-6 (a_0 = 1e-6, every later point equal; the same streams): every output finite, and the runs
// differ by the first channel's 1e-6 carried through 20 steps, so at most 1% of the coordinates (a particle tipped
// across a boundary between modes, 8 apart) may differ by more than 1e-3.
TEST(Ddrm, RunsFromAZeroSignalScale) {
  const benchmark_problem p = make_problem(10, 2, 4);
  const std::int64_t N = 512, K = 20;
  std::vector<double> times(K + 1);
  for (std::int64_t k = 0; k <= K; ++k) times[k] = 1.0 - double(k) / K;
  ds::guided_options o = options(ds::guided_sampler::ddrm, N, K, 17);
  o.schedule = ds::noise_schedule::linear_interpolant().with_times(times);
  ASSERT_EQ(o.schedule.points(K).front().a, 0.0);
  const std::vector<float> from_zero = run(p.prior, replicate(p.observation, 1), o);
  times[0] = 1.0 - 1e-6;
  o.schedule = ds::noise_schedule::linear_interpolant().with_times(times);
  const std::vector<float> near_zero = run(p.prior, replicate(p.observation, 1), o);
  ASSERT_EQ(from_zero.size(), near_zero.size());
  std::int64_t apart = 0;
  double largest = 0;
  for (std::size_t i = 0; i < from_zero.size(); ++i) {
    ASSERT_TRUE(std::isfinite(from_zero[i])) << i;
    const double e = std::abs(double(from_zero[i]) - near_zero[i]);
    apart += e > 1e-3;
    largest = std::max(largest, e);
  }
  std::printf("from a = 0 against a = 1e-6: largest difference %.3g, %lld of %zu coordinates above 1e-3\n", largest,
              static_cast<long long>(apart), from_zero.size());
  EXPECT_LE(apart, std::int64_t(from_zero.size()) / 100);
}

// A row scaled by 1e-7 beside unit rows, one of them repeated (A = [e_1; 1e-7 e_2; e_1], d_y = 3 above its rank 2),
// at sigma_y = 1e-9: y_2 pins x_2 to within sigma_y / 1e-7 = 0.01 (the exact posterior mean 2.0 on a N(mu, I)
// prior). DDRM's factor kept the eigenvalues of A A^T above 1e-12 of the largest, dropped the 1e-14 one and ignored
// y_2: its samples' mean of x_2 was the prior's, -0.195 (measured). Where that cut drops a direction, the rank now
// comes from the SVD of A (row_svd), which keeps the row. 2000 particles, 100 steps: the means of x_1 and x_2
// within 0.05 of the exact ones (DDRM's own bias on this prior with unit rows is 0.005; the posterior's standard
// errors are below 3e-4).
TEST(Ddrm, ObservesARowScaledFarBelowTheOthers) {
  const int d = 4;
  const std::int64_t N = 2000;
  const ds::gaussian_mixture prior(d, {1.0}, {0.3, -0.2, 0.5, 0.1}, {1.0});
  const ds::linear_observation obs{3, d, {1, 0, 0, 0, 0, 1e-7, 0, 0, 1, 0, 0, 0}, 1e-9, {1.0, 2e-7, 1.0}};
  const ds::mixture_posterior post(prior, obs);
  std::vector<float> x(N * d);
  ds::guided_outputs out;
  out.samples = x.data();
  ds::guided_sample(prior, out, replicate(obs, 1), options(ds::guided_sampler::ddrm, N, 100, 3),
                    {ds::executor::cpu, nullptr});
  for (int j = 0; j < 2; ++j) {
    double m = 0;
    for (std::int64_t i = 0; i < N; ++i) m += x[i * d + j] / double(N);
    EXPECT_NEAR(m, post.mean()[j], 0.05) << "coordinate " << j;
    std::printf("x_%d: DDRM mean %.4f, exact %.4f\n", j + 1, m, post.mean()[j]);
  }
}

// DDRM on a grid ending at a noised level (t_end = 0.3 of vp_linear: a = 0.63, s = 0.78) returns its own state
// there, x_t of the published update, which is not the posterior noised to that channel (README "DDRM"). On a
// Gaussian prior N(mu, diag(1, 0.5)) with A = [1, 0.5] (one observed direction v = A^T / |A|, n = sigma_y / |A|)
// every DDRM step is affine in x plus a Gaussian draw, so the law of its output is Gaussian with a mean and
// covariance computed here in FP64 from the update's three cases (kernels/guided_ddrm.cuh, checked against the
// published formula by Ddrm.OneStepMatchesFp64Reference), step by step from p(x_T | y). Three settings: sigma_y =
// 0.3 (the last point noisier than y, s / a = 1.23 > n = 0.27: v^T x_t = a ybar + sqrt(s^2 - a^2 n^2) xi,
// whatever the prior), sigma_y = 3 (less noisy, n = 2.7) and sigma_y = 0.3 to t = 0. The samples' means and
// covariance entries lie within 5 standard errors of that law (N = 16384: measured 3.3, 3.3 and 2.3 with this
// seed, at most 2.5 over seeds 0 to 19, within 1.8 at N = 400000), and the posterior noised to the last channel
// (means a m', covariance a^2 C' + s^2 I) is more than 6 standard errors away in some statistic (measured 12, 68
// and 58; W2 0.094 and 0.29 at t_end = 0.3, 0.18 at t = 0). Seen failing (86 standard errors from the law) with
// the last step taken to s' = 0, which returns a x0-like state at t_end.
TEST(Ddrm, OnAGridEndingAtNoiseReturnsItsOwnStateNotTheNoisedPosterior) {
  const int d = 2;
  const std::int64_t N = 16384, K = 20;
  const std::vector<double> mu = {0.3, -0.2}, P = {1.0, 0.5};
  const ds::gaussian_mixture prior(d, {1.0}, mu, P);
  const std::vector<double> A = {1.0, 0.5};
  const double norm = std::sqrt(1.25), y = 1.0, eta = 0.85, keep = std::sqrt(1 - eta * eta);
  const double v[2] = {A[0] / norm, A[1] / norm}, ybar = y / norm;
  struct setting {
    double sigma_y, t_end;
  };
  for (const setting c : {setting{0.3, 0.3}, setting{3.0, 0.3}, setting{0.3, 0.0}}) {
    SCOPED_TRACE("sigma_y " + std::to_string(c.sigma_y) + ", t_end " + std::to_string(c.t_end));
    ds::guided_options o = options(ds::guided_sampler::ddrm, N, K, 29);
    o.schedule.t_end = c.t_end;
    const std::vector<ds::schedule_point> pts = o.schedule.points(K);
    const double n = c.sigma_y / norm;
    // x = L x_prev + b + W xi per step (2 x 2, row-major); the law's mean M and covariance C.
    using mat = std::array<double, 4>;
    const auto mul = [](const mat& X, const mat& Y) {
      return mat{X[0] * Y[0] + X[1] * Y[2], X[0] * Y[1] + X[1] * Y[3], X[2] * Y[0] + X[3] * Y[2],
                 X[2] * Y[1] + X[3] * Y[3]};
    };
    const auto tr = [](const mat& X) { return mat{X[0], X[2], X[1], X[3]}; };
    const mat Q = {v[0] * v[0], v[0] * v[1], v[1] * v[0], v[1] * v[1]}, I = {1, 0, 0, 1};
    const mat Qc = {1 - Q[0], -Q[1], -Q[2], 1 - Q[3]};  // the complement's projector
    // The start: x = s0 xi, its v-component a0 ybar + sqrt(s0^2 - (a0 n)^2) v^T xi where a0 n < s0.
    const double a0 = pts[0].a, s0 = pts[0].s;
    std::array<double, 2> M = {0, 0};
    mat W = {s0, 0, 0, s0};
    if (a0 * n < s0) {
      const double g = std::sqrt(s0 * s0 - a0 * n * a0 * n);
      for (int i = 0; i < 4; ++i) W[i] = s0 * Qc[i] + g * Q[i];
      M = {a0 * ybar * v[0], a0 * ybar * v[1]};
    }
    mat C = mul(W, tr(W));
    for (std::int64_t k = 0; k < K; ++k) {
      const double a = pts[k].a, s = pts[k].s, an = pts[k + 1].a, sn = pts[k + 1].s;
      // The denoiser m = G x + g (diagonal G).
      const mat G = {a * P[0] / (a * a * P[0] + s * s), 0, 0, a * P[1] / (a * a * P[1] + s * s)};
      const std::array<double, 2> g0 = {mu[0] - G[0] * a * mu[0], mu[1] - G[3] * a * mu[1]};
      // The full-space DDIM update u = an m + sn keep (x - a m) / s + eta sn xi, kept off v.
      mat L{}, Wn{};
      std::array<double, 2> b{};
      for (int i = 0; i < 4; ++i) L[i] = an * G[i] + sn * keep * (I[i] - a * G[i]) / s;
      for (int j = 0; j < 2; ++j) b[j] = an * g0[j] - sn * keep * a * g0[j] / s;
      L = mul(Qc, L);
      b = {Qc[0] * b[0] + Qc[1] * b[1], Qc[2] * b[0] + Qc[3] * b[1]};
      for (int i = 0; i < 4; ++i) Wn[i] = eta * sn * Qc[i];
      // Along v: v^T m = (v^T G) x + v^T g0, then the case of the next level against a' n.
      const double vG[2] = {v[0] * G[0], v[1] * G[3]}, vg = v[0] * g0[0] + v[1] * g0[1];
      double lx, cv, noise;
      if (sn < an * n) {
        lx = an - sn * keep / n;  // times v^T m
        cv = an * vg + sn * keep * (ybar - vg) / n;
        noise = eta * sn;
      } else {
        lx = 0;  // eta_b = 1: the denoiser drops out
        cv = an * ybar;
        noise = std::sqrt(sn * sn - an * n * an * n);
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) L[i * 2 + j] += v[i] * lx * vG[j];
        b[i] += v[i] * cv;
        for (int j = 0; j < 2; ++j) Wn[i * 2 + j] += noise * Q[i * 2 + j];
      }
      M = {L[0] * M[0] + L[1] * M[1] + b[0], L[2] * M[0] + L[3] * M[1] + b[1]};
      const mat LC = mul(mul(L, C), tr(L)), WW = mul(Wn, tr(Wn));
      for (int i = 0; i < 4; ++i) C[i] = LC[i] + WW[i];
    }
    // The posterior of x0 and its noising to the last channel.
    const ds::mixture_posterior post(prior, ds::linear_observation{1, d, A, c.sigma_y, {y}});
    const double a = pts[K].a, s = pts[K].s;
    const std::array<double, 2> Mn = {a * post.mean()[0], a * post.mean()[1]};
    const mat Cn = {a * a * post.covariance()[0] + s * s, a * a * post.covariance()[1], a * a * post.covariance()[2],
                    a * a * post.covariance()[3] + s * s};
    ds::guided_problems g;
    g.d_y = 1;
    g.A = A;
    g.y = {y};
    g.sigma_y = {c.sigma_y};
    const std::vector<float> x = run(prior, g, o);
    std::array<double, 2> m{};
    mat q{};
    for (std::int64_t i = 0; i < N; ++i)
      for (int j = 0; j < 2; ++j) m[j] += x[i * d + j] / double(N);
    for (std::int64_t i = 0; i < N; ++i)
      for (int j = 0; j < 2; ++j)
        for (int l = 0; l < 2; ++l) q[j * 2 + l] += (x[i * d + j] - m[j]) * (x[i * d + l] - m[l]) / double(N - 1);
    double law_worst = 0, noised_worst = 0;
    for (int j = 0; j < 2; ++j) {
      const double se = std::sqrt(C[j * 3] / double(N));
      law_worst = std::max(law_worst, std::abs(m[j] - M[j]) / se);
      noised_worst = std::max(noised_worst, std::abs(m[j] - Mn[j]) / se);
      for (int l = 0; l < 2; ++l) {
        const double se_c = std::sqrt((C[j * 3] * C[l * 3] + C[j * 2 + l] * C[j * 2 + l]) / double(N));
        law_worst = std::max(law_worst, std::abs(q[j * 2 + l] - C[j * 2 + l]) / se_c);
        noised_worst = std::max(noised_worst, std::abs(q[j * 2 + l] - Cn[j * 2 + l]) / se_c);
      }
    }
    std::printf("sigma_y %.1f, t_end %.1f: mean (%.4f, %.4f), DDRM's law (%.4f, %.4f), noised posterior (%.4f, "
                "%.4f); variances (%.4f, %.4f), law (%.4f, %.4f), noised posterior (%.4f, %.4f); largest deviation "
                "from the law %.2f, from the noised posterior %.1f standard errors\n",
                c.sigma_y, c.t_end, m[0], m[1], M[0], M[1], Mn[0], Mn[1], q[0], q[3], C[0], C[3], Cn[0], Cn[3],
                law_worst, noised_worst);
    EXPECT_LE(law_worst, 5.0);
    EXPECT_GT(noised_worst, 6.0);
  }
}

// The host factorisation of a dense A (eigendecomposition of A A^T, V = A^T U / S) against the same A given as an
// SVD operator (from the same factorisation done here by hand on a 2 x 10 matrix with known singular vectors): the
// runs agree to FP32 rounding (the update is invariant to the signs and order of the singular vectors).
TEST(Ddrm, DenseOperatorMatchesItsSvd) {
  const benchmark_problem base = make_problem(10, 2, 8);
  const std::int64_t d = 10, dy = 2;
  // A = U diag(S) V^T with U a rotation, V two orthonormal columns.
  const double t = 0.4;
  const std::vector<double> U = {std::cos(t), -std::sin(t), std::sin(t), std::cos(t)};  // 2 x 2
  const std::vector<double> S = {3.0, 0.8};
  std::vector<double> V(d * 2, 0.0);
  for (std::int64_t j = 0; j < d; ++j) {
    V[j * 2 + 0] = 1 / std::sqrt(double(d));
    V[j * 2 + 1] = (j % 2 == 0 ? 1.0 : -1.0) / std::sqrt(double(d));
  }
  std::vector<double> A(dy * d, 0.0);
  for (std::int64_t o = 0; o < dy; ++o)
    for (std::int64_t j = 0; j < d; ++j)
      for (int i = 0; i < 2; ++i) A[o * d + j] += U[o * 2 + i] * S[i] * V[j * 2 + i];
  ds::guided_problems dense;
  dense.d_y = dy;
  dense.A = A;
  dense.y = {2.0, -1.0};
  dense.sigma_y = {0.5};
  ds::guided_problems svd = dense;
  svd.A.clear();
  svd.operators = {ds::observation_operator::svd(dy, d, U, S, V)};
  const ds::guided_options o = options(ds::guided_sampler::ddrm, 64, 50, 3);
  const std::vector<float> x1 = run(base.prior, dense, o), x2 = run(base.prior, svd, o);
  double worst = 0;
  for (std::size_t i = 0; i < x1.size(); ++i) worst = std::max(worst, double(std::abs(x1[i] - x2[i])));
  std::printf("dense vs SVD operator: largest difference %.3g\n", worst);
  EXPECT_LE(worst, 1e-3);
}

// TMPD and DDRM on seed-002-style problems follow the law of their own algorithms. Both are biased (TMPD projects
// p(x0 | x_k) on a Gaussian; DDRM's spectral update assumes a Gaussian prior), so their distance to the exact
// posterior is printed (README "Guided posterior sampling"), not asserted. What is asserted is that the bias is the
// method's: the library's run (FP32, Philox) and an FP64 reference of the published algorithm written from its
// formulas (the mixture's exact denoiser and posterior covariance, mt19937 normals: tmpd_reference, ddrm_reference)
// are draws of one law (expect_same_law; the particles of both are independent), 4096 particles each. Measured: the
// largest z 2.2 (TMPD) and 2.2 (DDRM), scaled KS distances 1.25 and 1.10. Seen failing with the run's coefficients
// off the reference's: TMPD's guidance scaled by 1.05 (z of the log misfit 4.5, KS 2.94) and 1.1 (7.5, 4.53);
// DDRM's eta_b at 0.8 for 1 (z 6.9, KS 3.94) and eta at 0.8 for 0.85 (KS 3.10); eta_b at 0.9 passes (z 3.8).
TEST(GuidedSamplers, BiasAgainstExactPosteriorIsTheMethods) {
  const std::int64_t N = 4096, NR = 4096;
  const benchmark_problem p = make_problem(10, 1, 1);
  for (ds::guided_sampler s : {ds::guided_sampler::tmpd, ds::guided_sampler::ddrm}) {
    const ds::guided_options o = options(s, N, 100, 41);
    const std::vector<float> x = run(p.prior, replicate(p.observation, 1), o);
    for (float v : x) ASSERT_TRUE(std::isfinite(v)) << ds::to_string(s);
    score(ds::to_string(s), p, x, 2048);  // the first 2048 particles: README's figures (each particle its own stream)
    const std::vector<double> xr = s == ds::guided_sampler::tmpd ? tmpd_reference(p.prior, p.observation, o, NR, 7)
                                                                 : ddrm_reference(p.prior, p.observation, o, NR, 7);
    ds::testing::expect_same_law(ds::to_string(s), ds::mixture_posterior(p.prior, p.observation), p.observation, x,
                                 N, xr, NR);
  }
}

// E |A x - y|^2 under the posterior post (d_y x d rows A): |A m - y|^2 + tr(A C A^T).
double exact_misfit(const ds::mixture_posterior& post, const std::vector<double>& A, const std::vector<double>& y,
                    int d, int dy) {
  const std::vector<double> m = post.mean(), C = post.covariance();
  double exact = 0;
  for (int o = 0; o < dy; ++o) {
    double e = -y[o];
    for (int j = 0; j < d; ++j) e += A[o * d + j] * m[j];
    exact += e * e;
    for (int j = 0; j < d; ++j)
      for (int l = 0; l < d; ++l) exact += A[o * d + j] * C[j * d + l] * A[o * d + l];
  }
  return exact;
}

// The problem of the small-sigma_y misfit tests (the residual, DDRM and DCPS): N(mu, I) in d dimensions with integer
// means in [5, 10] (exact in float), d_y rows of multiples of 1/8 in [1, 2], and y = A x of a prior draw rounded to
// quarters (exact in float; |y| about 350 at d = 32), seed 7.
struct misfit_problem {
  std::vector<double> mu, A, y;
};
misfit_problem make_misfit_problem(int d, int dy) {
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> normal;
  misfit_problem p{std::vector<double>(d), std::vector<double>(std::size_t(dy) * d), std::vector<double>(dy, 0.0)};
  for (double& m : p.mu) m = std::round(5 + 5 * u(gen));
  for (double& a : p.A) a = std::round(8 + 8 * u(gen)) / 8;
  for (int j = 0; j < d; ++j) {
    const double x = std::round(4 * (p.mu[j] + normal(gen))) / 4;
    for (int o = 0; o < dy; ++o) p.y[o] += p.A[o * d + j] * x;
  }
  return p;
}

// The observation residual y - A x at small sigma_y: DPS-style guidance, the proximal steps, the moment and twisted
// potentials all divide it by sigma_y^2 (or project on it), and near the posterior it is of order sigma_y while its
// terms are of order |A| |x|. Here d_x = 32, two rows of positive entries in [1, 2] (an average of 32 positive
// coordinates of order 10), |y| about 350, sigma_y = 1e-5: an FP32 sum of the row is off by up to d 2^-24 |y|, several
// sigma_y. Pi-GDM, TMPD and DiffPIR end data-consistent (their samples sit on A x = y to well within sigma_y), the
// moment and twisted SMC potentials follow the posterior; with the residual formed in FP32 their mean misfit
// |A x - y|^2 was 6 to 9 times the exact posterior's (the rounding of the residual, fed back as the data step).
// Checked: the samples' mean |A x - y|^2 against the exact posterior's, |A m - y|^2 + tr(A C A^T), at most 1.5 times
// it (512 samples of a 2-row misfit: 1.5 is above 10 standard errors of a sampler with the posterior's law; the
// output's rounding to float adds about 5 percent).
TEST(GuidedSamplers, SmallSigmaYResidualKeepsTheDataMisfit) {
  const int d = 32, dy = 2;
  const std::int64_t N = 512;
  const misfit_problem mp = make_misfit_problem(d, dy);
  const std::vector<double>&mu = mp.mu, &A = mp.A, &y = mp.y;
  const double sigma_y = 1e-5;
  const ds::gaussian_mixture prior(d, {1.0}, mu, {1.0});
  const ds::linear_observation obs{dy, d, A, sigma_y, y};
  const ds::mixture_posterior post(prior, obs);
  const double exact = exact_misfit(post, A, y, d, dy);  // E |A x - y|^2 under the posterior
  struct run_case {
    const char* name;
    ds::guided_sampler sampler;
    ds::guided_potentials potentials;
  };
  for (const run_case& c : {run_case{"pigdm", ds::guided_sampler::pigdm, ds::guided_potentials::automatic},
                            run_case{"tmpd", ds::guided_sampler::tmpd, ds::guided_potentials::automatic},
                            run_case{"diffpir", ds::guided_sampler::diffpir, ds::guided_potentials::automatic},
                            run_case{"smc moment", ds::guided_sampler::smc, ds::guided_potentials::moment},
                            run_case{"smc twisted", ds::guided_sampler::smc, ds::guided_potentials::twisted}}) {
    ds::guided_options o = options(c.sampler, N, 50, 11);
    if (c.sampler == ds::guided_sampler::smc) o.potentials = c.potentials;
    const std::vector<float> x = run(prior, replicate(obs, 1), o);
    double misfit = 0;
    for (std::int64_t i = 0; i < N; ++i)
      for (int o2 = 0; o2 < dy; ++o2) {
        double e = -y[o2];
        for (int j = 0; j < d; ++j) e += A[o2 * d + j] * double(x[i * d + j]);
        misfit += e * e / double(N);
      }
    std::printf("%s at sigma_y = %g, |y| = %.0f: mean |A x - y|^2 / the exact posterior's = %.3f\n", c.name, sigma_y,
                std::abs(y[0]), misfit / exact);
    EXPECT_LE(misfit, 1.5 * exact) << c.name;
  }
}

// DDRM's data misfit at a small sigma_y is the method's, not this implementation's: on the problem of
// GuidedSamplers.SmallSigmaYResidualKeepsTheDataMisfit (N(mu, I) in d = 32, two rows of positive entries in [1, 2],
// |y| about 350), 512 samples, 50 steps of vp_linear to t = 0, defaults (eta 0.85, eta_b 1), the mean |A x - y|^2
// is 0.80 at every sigma_y from 1e-2 down: 4.0e5 times the exact posterior's at sigma_y = 1e-3. On an isotropic
// Gaussian prior the denoiser is m = G x + g (G = a / (a^2 + s^2)), so each spectral coordinate z_i = v_i^T x of the
// update (kernels/guided_ddrm.cuh, README "DDRM") is a scalar affine map of its own z_i plus a Gaussian draw, and
// |A x - y|^2 = sum_i S_i^2 (z_i - ybar_i)^2 (d_y = rank 2): the misfit's mean and variance under DDRM's law follow
// in FP64 from the update's cases, step by step from p(x_T | y), with nothing summed over the 32 coordinates and
// nothing sampled. The samples' mean misfit lies within 5 standard errors of the law's (the law's own variance over
// N) at sigma_y = 1 .. 1e-4 (measured 0.11 to 0.17). So no FP32 cancellation is behind the misfit: the law has none.
// What sets it is the last step: at s' = 0 < a' n_i the observed components become the denoiser's x0_i at the last
// noised point (a_1, s_1), where z_i is a_1 ybar_i + sqrt(s_1^2 - (a_1 n_i)^2) xi: a spread of about s_1 S_i around
// y in the data, whatever sigma_y (law 0.80, 0.100, 0.0148 at 50, 200, 1000 steps, s_1 = 0.077, 0.027, 0.0105:
// about 134 s_1^2 each). Seen failing (the samples' 2.8e-9 against the law's 0.80, 16 standard errors) with the CPU
// packs' last step made to return ybar_i on the observed components.
// The same on the spectral grid (guided_grid::spectral), whose points at s / a = n_i lie on the boundary of the two
// observed cases: the law takes them as at equality (the noisier case), as the host's FP64 decision does
// (kernels::ddrm_params::less_noisy_from). Measured 0.4 to 1.8 standard errors from it. Seen failing with the cases
// decided by the former FP32 comparison of s' with a' n_i in the kernel and the packs: at sigma_y = 1e-3 the samples'
// 0.0192 against the law's 1.4e-8.
TEST(Ddrm, SmallSigmaYMisfitIsTheMethods) {
  const int d = 32, dy = 2;
  const std::int64_t N = 512, K = 50;
  const misfit_problem mp = make_misfit_problem(d, dy);
  const std::vector<double>&mu = mp.mu, &A = mp.A, &y = mp.y;
  // A A^T = U diag(S^2) U^T (2 x 2, closed form), v_i = A^T u_i / S_i, ybar_i = u_i^T y / S_i.
  double g00 = 0, g01 = 0, g11 = 0;
  for (int j = 0; j < d; ++j) {
    g00 += A[j] * A[j];
    g01 += A[j] * A[d + j];
    g11 += A[d + j] * A[d + j];
  }
  const double th = 0.5 * std::atan2(2 * g01, g00 - g11), c = std::cos(th), sth = std::sin(th);
  const double U[2][2] = {{c, sth}, {-sth, c}};  // rows: u_0, u_1
  double S[2], ybar[2], muv[2];
  for (int i = 0; i < 2; ++i) {
    const double l = U[i][0] * U[i][0] * g00 + 2 * U[i][0] * U[i][1] * g01 + U[i][1] * U[i][1] * g11;
    S[i] = std::sqrt(l);
    ybar[i] = (U[i][0] * y[0] + U[i][1] * y[1]) / S[i];
    muv[i] = 0;
    for (int j = 0; j < d; ++j) muv[i] += (U[i][0] * A[j] + U[i][1] * A[d + j]) / S[i] * mu[j];
  }
  const ds::gaussian_mixture prior(d, {1.0}, mu, {1.0});
  for (const ds::guided_grid grid : {ds::guided_grid::schedule, ds::guided_grid::spectral})
    for (const double sigma_y : {1.0, 0.1, 1e-2, 1e-3, 1e-4}) {
      SCOPED_TRACE(std::string(ds::to_string(grid)) + " grid, sigma_y " + std::to_string(sigma_y));
      const ds::linear_observation obs{dy, d, A, sigma_y, y};
      const ds::mixture_posterior post(prior, obs);
      const double exact = exact_misfit(post, A, y, d, dy);  // E |A x - y|^2 under the posterior
      ds::guided_options o = options(ds::guided_sampler::ddrm, N, K, 11);
      o.grid = grid;
      const double eta = o.ddrm_eta, eta_b = o.ddrm_eta_b, keep = std::sqrt(1 - eta * eta);
      // The run's grid (the spectral one has a point at each level s / a = n_i), its points in FP64.
      ds::noise_schedule sched = o.schedule;
      if (grid != ds::guided_grid::schedule) sched.with_times(ds::guided_times(prior, replicate(obs, 1), o));
      const std::vector<ds::schedule_point> pts = sched.points(K);
      // DDRM's law of each z_i: mean M, variance C; the misfit's mean and variance (independent normals z_i). A point
      // (a, s) is less noisy than the observation when s < a n_i; at equality (the spectral grid's points, FP64 roots
      // of s / a = n_i: within a few FP32 ulps counted as equal) it is not, as the update's cases read.
      const auto less_noisy = [](double a, double s, double noise) {
        return s < a * noise * (1 - 4 * double(std::numeric_limits<float>::epsilon()));
      };
      double law = 0, law_var = 0;
      for (int i = 0; i < 2; ++i) {
        const double noise = sigma_y / S[i];
        double M = 0, C = pts[0].s * pts[0].s;
        if (!less_noisy(pts[0].a, pts[0].s, noise)) {
          M = pts[0].a * ybar[i];
          C = pts[0].s * pts[0].s - pts[0].a * noise * pts[0].a * noise;
        }
        for (std::int64_t k = 0; k < K; ++k) {
          const double a = pts[k].a, s = pts[k].s, an = pts[k + 1].a, sn = pts[k + 1].s;
          const double G = a / (a * a + s * s), g = s * s / (a * a + s * s) * muv[i];  // x0_i = G z_i + g
          double L, b, w2;
          if (less_noisy(an, sn, noise)) {
            const double h = an - sn * keep / noise;
            L = h * G;
            b = h * g + sn * keep * ybar[i] / noise;
            w2 = eta * sn * eta * sn;
          } else {
            const double nb = an * noise * eta_b;
            L = an * (1 - eta_b) * G;
            b = an * ((1 - eta_b) * g + eta_b * ybar[i]);
            w2 = std::max(0.0, sn * sn - nb * nb);
          }
          M = L * M + b;
          C = L * L * C + w2;
        }
        const double e2 = (M - ybar[i]) * (M - ybar[i]), s4 = S[i] * S[i] * S[i] * S[i];
        law += S[i] * S[i] * (e2 + C);
        law_var += s4 * (2 * C * C + 4 * C * e2);
      }
      const std::vector<float> x = run(prior, replicate(obs, 1), o);
      const double lib = ds::testing::mean(ds::testing::misfits(obs, x.data(), N));
      const double se = std::sqrt(law_var / double(N));
      std::printf("ddrm, %s grid, sigma_y = %g: misfit %.4g, DDRM's law (FP64) %.4g (se %.2g, %.2f se away); exact "
                  "posterior %.3g (%.3gx)\n",
                  ds::to_string(grid), sigma_y, lib, law, se, std::abs(lib - law) / se, exact, lib / exact);
      EXPECT_NEAR(lib, law, 5 * se);
    }
}

TEST(GuidedSamplers, RejectsInvalidOptions) {
  const benchmark_problem p = make_problem(10, 1, 1);
  std::vector<float> out(10 * 8);
  ds::guided_outputs o;
  o.samples = out.data();
  ds::guided_options bad = options(ds::guided_sampler::ddrm, 8, 10, 1);
  bad.ddrm_eta = 1.5;
  EXPECT_THROW(ds::guided_sample(p.prior, o, replicate(p.observation, 1), bad, {ds::executor::cpu, nullptr}),
               ds::invalid_argument);
  bad = options(ds::guided_sampler::ddrm, 8, 10, 1);
  bad.ddrm_eta_b = -0.1;
  EXPECT_THROW(ds::guided_sample(p.prior, o, replicate(p.observation, 1), bad, {ds::executor::cpu, nullptr}),
               ds::invalid_argument);
  EXPECT_EQ(ds::parse_guided_sampler("tmpd"), ds::guided_sampler::tmpd);
  EXPECT_EQ(ds::parse_guided_sampler("ddrm"), ds::guided_sampler::ddrm);
  EXPECT_EQ(ds::parse_guided_sampler("dcps"), ds::guided_sampler::dcps);
  for (int field = 0; field < 5; ++field) {
    bad = options(ds::guided_sampler::dcps, 8, 10, 1);
    if (field == 0) bad.dcps_blocks = 11;  // more blocks than steps
    if (field == 1) bad.dcps_langevin_steps = -1;
    if (field == 2) bad.dcps_langevin_step = 0;
    if (field == 3) bad.dcps_gradient_steps = 65;
    if (field == 4) bad.dcps_learning_rate = NAN;
    EXPECT_THROW(ds::guided_sample(p.prior, o, replicate(p.observation, 1), bad, {ds::executor::cpu, nullptr}),
                 ds::invalid_argument)
        << field;
  }
}

// The CUDA executor against the CPU on the three samplers (normals may differ in the last bits: compared with a
// tolerance after 20 steps; at most 1% of the values more than 1e-2 relative apart, finite where the CPU's are;
// DCPS: at most 2% of the particles holding such values, see there).
// Settings that run every placement of the coordinate-major scratch (kernels/launch.cuh): d = 10 (shared, 128
// threads), d = 100 with a mask operator (TMPD's and DCPS's 2 d floats: 32 threads; DDRM's d: 96) and d = 400 (global
// rows for all three). A particle or coordinate mix-up moves values by the prior's scale (means 8 apart), far outside
// the tolerance.
TEST(GuidedSamplers, GpuMatchesTheCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  for (std::int64_t d : {10, 100, 400}) {
    const benchmark_problem p = make_problem(d, 2, 5);
    ds::guided_problems g = replicate(p.observation, 2);
    if (d == 100) {
      g.A.clear();
      g.d_y = 3;
      g.operators = {ds::observation_operator::mask(d, {0, d / 2, d - 1}, {1.0, 0.5, 2.0})};
      g.y = {4.0, -4.0, 8.0, 4.0, -4.0, 8.0};
    }
    for (ds::guided_sampler s : {ds::guided_sampler::tmpd, ds::guided_sampler::ddrm, ds::guided_sampler::dcps}) {
      ds::guided_options o = options(s, d > 100 ? 64 : 256, 20, 9);
      if (s == ds::guided_sampler::dcps) o.dcps_langevin_steps = 5;  // the other samplers refuse it
      const std::vector<float> cpu = run(p.prior, g, o);
      const std::vector<float> gpu = run(p.prior, g, o, ds::executor::cuda);
      std::int64_t far = 0;
      std::vector<std::int64_t> far_rows;  // particles (rows of d values) holding a far value
      double largest = 0;
      for (std::size_t i = 0; i < cpu.size(); ++i) {
        if (std::isfinite(cpu[i])) {
          ASSERT_TRUE(std::isfinite(gpu[i])) << ds::to_string(s) << ", d = " << d << ", value " << i;
        }
        largest = std::max(largest, double(std::abs(cpu[i] - gpu[i])));
        if (!(std::abs(cpu[i] - gpu[i]) <= 1e-2 * (1 + std::abs(cpu[i])))) {
          ++far;
          if (far_rows.empty() || far_rows.back() != std::int64_t(i) / d) far_rows.push_back(std::int64_t(i) / d);
        }
      }
      // Where they differ: scattered values (rounding amplified) or whole particles (one particle's run diverging).
      std::printf("%s, d = %lld: %lld of %zu values far, in %zu of %zu particles; largest difference %.3g\n",
                  ds::to_string(s), static_cast<long long>(d), static_cast<long long>(far), cpu.size(),
                  far_rows.size(), cpu.size() / std::size_t(d), largest);
      if (s == ds::guided_sampler::dcps) {
        // DCPS's tamed Langevin moves, between modes 8 apart, amplify the executors' rounding differences into a
        // different mode for a particle now and then: on an H200, 2 of 128 particles at d = 400 (726 values, the
        // rest within 1e-4) and 1 of 512 at d = 100. Whole particles, at most 2% of them, may differ; a particle or
        // coordinate mix-up moves every particle.
        EXPECT_LE(std::int64_t(far_rows.size()), std::max<std::int64_t>(1, std::int64_t(cpu.size()) / d / 50))
            << "dcps, d = " << d;
      } else {
        EXPECT_LE(far, std::int64_t(cpu.size() / 100)) << ds::to_string(s) << ", d = " << d;
      }
    }
  }
}

// DCPS's gradient of the approximate backward function, grad log beta(x) = cx u + cm J u with
// u = A^T P (a_T y - A (cx x + cm m(x))), against central finite differences of log beta computed in FP64 from the
// exact denoiser, on the small mixture with a random 2 x 4 A and a random SPD P. Step 1e-4; the difference
// quotient's error is O(h^2) and the FP32 kernel's ~1e-6 relative: tolerance 1e-3 of the largest component.
// Seen failing with the JVP term dropped (cm J u missing).
TEST(Dcps, PotentialGradientMatchesFiniteDifferences) {
  const small_mixture mix;
  const int d = mix.d, dy = 2;
  std::mt19937_64 gen(21);
  std::normal_distribution<double> z;
  std::vector<float> A(dy * d), y(dy);
  for (auto& v : A) v = float(z(gen));
  for (auto& v : y) v = float(2 * z(gen));
  const std::vector<float> P = {0.8f, 0.2f, 0.2f, 0.5f};
  kn::guided_step unused{};
  kn::dcps_params p{};
  p.g = host_params(mix, A, y, &unused, dy);
  kn::dcps_potential pot{};
  pot.a = 0.7f;
  pot.s = float(std::sqrt(1 - 0.49));
  pot.cx = 0.6f;
  pot.cm = 0.5f;
  pot.a_target = 0.9f;
  std::vector<double> x(d);
  for (auto& v : x) v = 1.2 * z(gen);
  std::vector<float> xf(x.begin(), x.end()), work(8 * d + 2 * dy);
  float* w0 = work.data();
  const kn::dcps_scratch w = kn::dcps_scratch::rows(w0, d, dy);
  kn::dcps_potential_grad(p, 0, pot, P.data(), kn::strided_vec<float>{xf.data(), 1, d}, w);
  auto log_beta = [&](const std::vector<double>& v) {
    std::vector<double> m, C;
    mix.moments(v, pot.a, pot.s, m, C);
    std::vector<double> r(dy);
    for (int o = 0; o < dy; ++o) {
      r[o] = double(pot.a_target) * y[o];
      for (int j = 0; j < d; ++j) r[o] -= A[o * d + j] * (pot.cx * v[j] + pot.cm * m[j]);
    }
    double q = 0;
    for (int o = 0; o < dy; ++o)
      for (int c = 0; c < dy; ++c) q += r[o] * P[o * dy + c] * r[c];
    return -0.5 * q;
  };
  const double h = 1e-4;
  std::vector<double> ref(d);
  double top = 0;
  for (int j = 0; j < d; ++j) {
    std::vector<double> up = x, down = x;
    up[j] += h;
    down[j] -= h;
    ref[j] = (log_beta(up) - log_beta(down)) / (2 * h);
    top = std::max(top, std::abs(ref[j]));
  }
  for (int j = 0; j < d; ++j) EXPECT_NEAR(w.grad()[j], ref[j], 1e-3 * top) << "coordinate " << j;
}

// One tamed ULA step of DCPS against the formula in FP64 with the kernel's own normals (stream
// dcps_counter_langevin): x' = x + gamma G / (1 + gamma |G|) + sqrt(2 gamma) xi, G = (a m - x) / s^2 + grad log beta,
// the gradient taken from the kernel's own (tested above) function. Tolerance 1e-5 relative. Seen failing with the
// taming dropped (step gamma instead of gamma / (1 + gamma |G|)). Also with the precision 1e24 of a potential at
// sigma_y = 1e-12, where G's entries are about 1e24 and their plain FP32 sum of squares overflowed: the step was 0
// and x' = x + sqrt(2 gamma) xi (seen failing so, every coordinate off by 0.27 to 0.57).
TEST(Dcps, LangevinStepMatchesFp64Reference) {
  for (const float precision : {2.0f, 1e24f}) {
  SCOPED_TRACE(precision);
  const small_mixture mix;
  const int d = mix.d, dy = 1;
  std::vector<float> A = {0.5f, -1.0f, 0.3f, 0.8f}, y = {1.5f};
  const std::vector<float> P = {precision};
  kn::guided_step unused{};
  kn::dcps_block block{};
  block.start = {0.6f, 0.8f, 0.7f, 0.4f, 0.95f};
  kn::dcps_params p{};
  p.g = host_params(mix, A, y, &unused, dy);
  p.blocks = &block;
  p.block_precision = P.data();
  p.blocks_count = 1;
  p.steps_count = 10;
  p.langevin_steps = 5;
  p.gradient_steps = 2;
  p.gamma = 0.05f;
  // The block's channel in the fused run's table (kernels::dcps_channels: index 2 K + l).
  std::vector<float> table;
  p.g.channels = channel_table(p.g.mix, kn::dcps_channels::count(10, 1), single_channel{20, block.start.a, block.start.s},
                               table);
  const std::vector<double> x = {0.3, -0.8, 1.1, 0.2};
  std::vector<float> xf(x.begin(), x.end()), work(8 * d + 2 * dy), work2(8 * d + 2 * dy);
  auto scratch = [&](std::vector<float>& v) {
    float* w0 = v.data();
    return kn::dcps_scratch::rows(w0, d, dy);
  };
  // The gradient of log beta at x, as the step uses it.
  std::vector<float> x0f = xf;
  const kn::dcps_scratch w2 = scratch(work2);
  kn::dcps_potential_grad(p, 0, block.start, P.data(), kn::strided_vec<float>{x0f.data(), 1, d}, w2);
  kn::strided_vec<float> xv{xf.data(), 1, d};
  kn::dcps_langevin_step(p, 0, 0, 0, 3, xv, scratch(work));
  std::vector<double> m, C;
  mix.moments(x, 0.6, 0.8, m, C);
  std::vector<double> G(d);
  double norm = 0;
  for (int j = 0; j < d; ++j) {
    G[j] = (0.6 * m[j] - x[j]) / 0.64 + w2.grad()[j];
    norm += G[j] * G[j];
  }
  const double gamma = 0.05, step = gamma / (1 + gamma * std::sqrt(norm));
  kn::philox rng(p.g.seed, 0, kn::dcps_counter_langevin(p, 0, 3));
  std::vector<double> xi(d);
  rng.normals(d, [&](int j, float v) { xi[j] = v; });
  for (int j = 0; j < d; ++j) {
    const double ref = x[j] + step * G[j] + std::sqrt(2 * gamma) * xi[j];
    EXPECT_NEAR(xf[j], ref, 1e-5 * (1 + std::abs(ref))) << "coordinate " << j;
  }
  }
}

// Every normal draw of a DCPS particle reads its own counter of the particle's Philox stream: the initial draw at 0,
// transition j's G reparametrised draws and its final draw at dcps_counter_step(j, 0 .. G), block l's Langevin steps
// at dcps_counter_langevin(l, 0 .. M - 1), on both executors and every CPU target (the packs call these functions).
// Two draws on one counter reuse the same normals, a correlation that the law tests of whole runs do not resolve:
// transition j's final draw on transition j + 1's first counter (the mutation audit's dcps-counter-step-overlap)
// passed the Dcps.* and GuidedSamplers.* tests here and SimdGuided.* of test_simd. Checked over grids with and
// without gradient and Langevin steps.
TEST(Dcps, EveryDrawOfAParticleReadsItsOwnCounter) {
  struct shape {
    std::int64_t K, G, L, M;
  };
  for (const shape c : {shape{10, 2, 1, 5}, shape{7, 0, 3, 4}, shape{100, 1, 4, 50}, shape{5, 64, 5, 0}}) {
    kn::dcps_params p{};
    p.steps_count = c.K;
    p.gradient_steps = c.G;
    p.blocks_count = c.L;
    p.langevin_steps = c.M;
    std::vector<std::uint64_t> counters = {0};  // the initial draw
    for (std::int64_t j = 0; j < c.K; ++j)
      for (std::int64_t g = 0; g <= c.G; ++g) counters.push_back(kn::dcps_counter_step(p, j, g));
    for (std::int64_t l = 0; l < c.L; ++l)
      for (std::int64_t t = 0; t < c.M; ++t) counters.push_back(kn::dcps_counter_langevin(p, l, t));
    const std::size_t draws = counters.size();
    std::sort(counters.begin(), counters.end());
    EXPECT_EQ(std::unique(counters.begin(), counters.end()) - counters.begin(), static_cast<std::ptrdiff_t>(draws))
        << "K " << c.K << ", G " << c.G << ", L " << c.L << ", M " << c.M << ": two draws share a counter";
  }
}

// The stepwise run's initial draw (kernels::dcps_stage_functor's dcps_op_initial: the CPU executor's guided_sample()
// on every target, a plan's reset()) is the fused functor's (the CUDA executor's): x = s_0 z, z the normals at
// counter 0 of the particle's stream (Dcps.EveryDrawOfAParticleReadsItsOwnCounter). No other CPU test compares the
// two (GuidedSamplers.GpuMatchesTheCpu needs a GPU): an initial draw on counter 1, transition 0's first
// reparametrised draw (the mutation audit's dcps-stage-initial-stream), passed the Dcps.* and GuidedSamplers.* tests
// here, SimdGuided.* and test_plan. Two problems of three particles, bit for bit.
TEST(Dcps, StepwiseInitialDrawIsTheFusedRunsDraw) {
  const int d = 5, dy = 1;
  const std::int64_t B = 2, N = 3, n = B * N;
  kn::dcps_params q{};
  q.g.d = d;
  q.g.d_y = dy;
  q.g.problems = B;
  q.g.particles = N;
  q.g.seed = 77;
  q.initial_scale = 1.3f;  // no blocks: the fused functor draws x and stops
  std::vector<float> fused(n * d), work(n * kn::dcps_scratch::floats(d, dy));
  const kn::guided_dcps_functor f{q, fused.data(), work.data()};
  for (std::int64_t i = 0; i < n; ++i) f(i);
  // The stepwise rows (x, m, u, grad, mu, l, eps, q, r, t) and the answer.
  std::vector<std::vector<float>> rows(11, std::vector<float>(n * d, 0.f));
  kn::dcps_stage_functor s{};
  s.p = q;
  s.rows = {rows[0].data(), rows[1].data(), rows[2].data(), rows[3].data(), rows[4].data(),
            rows[5].data(), rows[6].data(), rows[7].data(), rows[8].data(), rows[9].data()};
  s.answer = rows[10].data();
  s.op = kn::dcps_op_initial;
  for (std::int64_t i = 0; i < n; ++i) s(i);
  EXPECT_EQ(rows[0], fused);
  for (std::int64_t i = 0; i < n; ++i) {
    kn::philox rng(q.g.seed, static_cast<std::uint64_t>(i), 0);
    rng.normals(d, [&](int j, float z) { EXPECT_EQ(rows[0][i * d + j], q.initial_scale * z) << i << ", " << j; });
  }
}

// DCPS at its published defaults (L = 4, M = 50, gamma = 1e-3, two gradient steps of rho = 0.1) on the seed-002
// problem 1 (d = 10, d_y = 1, 100 steps): its distance to the exact posterior is printed, not asserted (its component
// weights are off by about 0.3, README "DCPS"). What is asserted is that the bias is the method's: the run and the
// algorithm in FP64 (dcps_reference) are draws of one law (expect_same_law), 4096 particles each (measured: the
// largest z 2.2, scaled KS distance 0.97). Seen failing with the run's learning rate at 0.2 for 0.1 (weights z 5.1,
// log misfit z 5.9, KS 4.3) and its Langevin step at 1e-2 for 1e-3 (weights z 7.3); not resolved at 4096: rho 0.13
// or gamma 2e-3 (largest z 3.6).
TEST(Dcps, BiasAgainstExactPosteriorIsTheMethods) {
  const std::int64_t N = 4096, NR = 4096;
  const benchmark_problem p = make_problem(10, 1, 1);
  const ds::guided_options o = options(ds::guided_sampler::dcps, N, 100, 41);
  const std::vector<float> x = run(p.prior, replicate(p.observation, 1), o);
  for (float v : x) ASSERT_TRUE(std::isfinite(v));
  score("dcps", p, x, 1024);  // the first 1024 particles: README's figures (each particle its own stream)
  ds::testing::expect_same_law("dcps", ds::mixture_posterior(p.prior, p.observation), p.observation, x, N,
                               dcps_reference(p.prior, p.observation, dcps_reference_options{}, NR, 9), NR);
}

// DCPS with enough Langevin mixing at each block's start puts the exact posterior's mass on the right components,
// on a problem whose modes the Langevin can cross (examples/posterior_d10.json: the 25-component grid of spacing 2
// and variance 0.25 in d = 10, three measurements, sigma_y = 0.5): L = 4 blocks, M = 200 tamed ULA steps of
// gamma = 0.05, 100 steps. DCPS particles are independent (no resampling), so the tolerance follows from N alone:
// the recovered weight (ds::component_weights, the average responsibility, whose variance is at most the Bernoulli
// w (1 - w) / N) within 5 sqrt(w'_k (1 - w'_k) / N) + 0.02 of the exact w'_k, the allowance the SMC tests give the
// 100-step discretisation. Inside the components DCPS stays biased (the point-mass potentials are overconfident,
// the fits are mean-field Gaussians, and two one-draw normalised gradient steps leave them short of their optimum),
// so the shapes are scored and the bias pinned rather than the exact shapes asserted: the misfit along A against
// dcps_reference (the algorithm in FP64, 1024 particles) within 5 combined standard errors, and above the exact
// posterior's by more than 4 se (the SMC tests' check, which DCPS fails: README "DCPS"); the within-component
// sliced W1 (against exact samples in DCPS's own recovered proportions) is printed. Seen failing with the last
// block's fits on the CPU packs made to ignore the likelihood (misfit 1.16 against the reference's 0.62, weights
// off by 0.05).
// Measured: max weight error 0.008, misfit E|y - A x|^2 0.619 against 0.509 (se 0.012), reference 0.624 (combined
// se 0.016); sliced W1 1.8x the exact-vs-exact floor, within the components 1.9x.
// At the published gamma = 1e-3 and M = 50 the weight error is 0.22 (the Langevin moves nothing; the mode shares are
// those the first block's rough potentials leave). Seen to fail with the potential's gradient dropped from the
// Langevin drift (max weight error 0.89).
TEST(Dcps, ReachesExactPosteriorWithLangevinMixing) {
  const std::int64_t N = 2048, d = 10;
  const ds::gaussian_mixture prior = ds::grid_mixture(d, 5, 2.0, 0.25);
  ds::linear_observation obs;
  obs.d_y = 3;
  obs.d_x = d;
  obs.A.assign(3 * d, 0.0);
  obs.A[0] = 1;
  obs.A[d + 1] = 1;
  for (std::int64_t j = 0; j < d; ++j) obs.A[2 * d + j] = 0.2;
  obs.sigma_y = 0.5;
  obs.y = {1.5, -2.0, 0.4};
  const ds::mixture_posterior post(prior, obs);
  ds::guided_options o = options(ds::guided_sampler::dcps, N, 100, 3);
  o.dcps_blocks = 4;
  o.dcps_langevin_steps = 200;
  o.dcps_langevin_step = 0.05;
  std::vector<float> x(N * d);
  ds::guided_outputs out;
  out.samples = x.data();
  ds::guided_sample(prior, out, replicate(obs, 1), o, {ds::executor::cpu, nullptr});
  for (float v : x) ASSERT_TRUE(std::isfinite(v));
  const std::vector<double> w = ds::component_weights(post, N, x.data());
  double worst = 0;
  for (std::int64_t k = 0; k < post.components(); ++k) {
    const double ref = post.weights()[k], se = std::sqrt(ref * (1 - ref) / double(N));
    worst = std::max(worst, std::abs(w[k] - ref));
    EXPECT_LE(std::abs(w[k] - ref), 5 * se + 0.02) << "component " << k << ": dcps " << w[k] << ", exact " << ref;
  }
  std::vector<float> exact_a(N * d), exact_b(N * d);
  post.sample(exact_a.data(), N, 100);
  post.sample(exact_b.data(), N, 200);
  auto misfit = [&](const float* v) {
    std::vector<double> m(N);
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t o2 = 0; o2 < 3; ++o2) {
        double ax = 0;
        for (std::int64_t j = 0; j < d; ++j) ax += obs.A[o2 * d + j] * v[i * d + j];
        m[i] += (obs.y[o2] - ax) * (obs.y[o2] - ax);
      }
    return m;
  };
  const std::vector<double> mf = misfit(x.data()), me = misfit(exact_a.data());
  const double se = std::sqrt((ds::testing::variance(mf) + ds::testing::variance(me)) / double(N));
  const double floor = ds::sliced_wasserstein(N, N, d, exact_b.data(), exact_a.data(), 128, 5);
  const double plain = ds::sliced_wasserstein(N, N, d, x.data(), exact_a.data(), 128, 5);
  // Within the components: against exact samples in DCPS's own recovered proportions (largest remainders).
  const std::vector<std::int64_t> counts = ds::testing::counts_for(w, N);
  const std::vector<float> exact_c = exact_with_counts(post, counts, 300);
  const double within = ds::sliced_wasserstein(N, N, d, x.data(), exact_c.data(), 128, 5);
  // The same algorithm in FP64 (dcps_reference), NR particles: the misfit along A is its, not an implementation's.
  const std::int64_t NR = 1024;
  dcps_reference_options ro;
  ro.langevin = 200;
  ro.gamma = 0.05;
  const std::vector<double> xr = dcps_reference(prior, obs, ro, NR, 9);
  const std::vector<double> mr_n = ds::testing::misfits(obs, xr.data(), NR);
  const double se_ref = std::sqrt(ds::testing::variance(mf) / double(N) + ds::testing::variance(mr_n) / double(NR));
  std::printf("dcps (M = 200, gamma = 0.05): max weight error %.4f; misfit %.4f against %.4f (se %.4f), FP64 "
              "reference %.4f (se %.4f); SW1 %.4f, floor %.4f (%.2fx), within components %.4f (%.2fx)\n",
              worst, ds::testing::mean(mf), ds::testing::mean(me), se, ds::testing::mean(mr_n), se_ref, plain, floor,
              plain / floor, within, within / floor);
  EXPECT_NEAR(ds::testing::mean(mf), ds::testing::mean(mr_n), 5 * se_ref);
  EXPECT_GT(ds::testing::mean(mf) - ds::testing::mean(me), 4 * se);
}

// The potentials' covariance (options.dcps_bridge_variance) against the Langevin target it defines, in closed form
// on a Gaussian prior N(0, I_2), A = [1, 0]: one block [U, T] of one step (t = 0.5 to 0.2, so the block's clean end
// keeps noise and its bridge variance v from U to T is 0.33), M = 1000 tamed ULA steps of gamma = 0.01 at U, then
// the DDPM step. With m(x) = rho x, rho = a_U / (a_U^2 + s_U^2), the bridge mean is mu_U(x) = c x, c = cx + cm rho
// (the DDPM bridge q(x_T | x_0, x_U) written out here), and the Langevin target p_U(x) beta_U(x) is Gaussian along
// the first coordinate: precision lambda = 1 / (a_U^2 + s_U^2) + c^2 / V, mean (c a_T y / V) / lambda, with
// V = v + sigma_y^2 (true, the seed's closed form) or sigma_y^2 (false, the published likelihood at the bridge mean).
// The step is the same DDPM kernel as the bridge (the bridge follows the transitions' kernel), x_T = c x + sqrt(v) z,
// so the output's first coordinate has mean c mu and variance c^2 / lambda + v. Tolerances: the mean within 5
// standard errors (N = 2048 independent particles; the tamed ULA's stationary mean is exact here, its drift
// symmetric about mu); the variance within 5 sqrt(2 / N) relative plus gamma (lambda / 2 + 3): ULA's variance bias
// gamma lambda / 2 and the taming's, about gamma |G| with |G| near 2 here. Measured (true / false): mean 0.371 /
// 0.936 against 0.363 / 0.928 (0.6 standard errors each), variance 0.435 / 0.390 against 0.420 / 0.378. Seen failing
// with the option ignored (false gave the closed form's mean, when this test ran a DDIM step with eta = 0: 0.842
// against 2.112); that DDIM step's bridge has no variance now that the bridge follows the transitions' kernel, so
// the test runs DDPM.
TEST(Dcps, BridgeVarianceOptionSetsThePotentialsCovariance) {
  const std::int64_t N = 2048, d = 2;
  const ds::gaussian_mixture prior(d, {1.0}, {0.0, 0.0}, {1.0});
  ds::linear_observation obs;
  obs.d_y = 1;
  obs.d_x = d;
  obs.A = {1.0, 0.0};
  obs.sigma_y = 0.3;
  obs.y = {2.0};
  for (const bool bridge : {true, false}) {
    ds::guided_options o = options(ds::guided_sampler::dcps, N, 1, 17);
    o.schedule.t_start = 0.5;
    o.schedule.t_end = 0.2;
    o.dcps_blocks = 1;
    o.dcps_langevin_steps = 1000;
    o.dcps_langevin_step = 0.01;
    o.dcps_gradient_steps = 0;
    o.dcps_bridge_variance = bridge;
    const std::vector<float> x = run(prior, replicate(obs, 1), o);
    const std::vector<ds::schedule_point> pts = o.schedule.points(1);
    const double aU = pts[0].a, sU = pts[0].s, aT = pts[1].a, sT = pts[1].s;
    const double r = aU / aT, vUT = sU * sU - r * r * sT * sT;  // x_U | x_T: N(r x_T, vUT)
    const double v = 1.0 / (1.0 / (sT * sT) + r * r / vUT);  // x_T | x_0, x_U: N(cx x_U + cm x_0, v)
    const double cx = v * r / vUT, cm = v * aT / (sT * sT);
    const double rho = aU / (aU * aU + sU * sU), c = cx + cm * rho;
    const double V = (bridge ? v : 0.0) + obs.sigma_y * obs.sigma_y;
    const double lambda = 1.0 / (aU * aU + sU * sU) + c * c / V;
    const double mu = (c * aT * obs.y[0] / V) / lambda;
    std::vector<double> first(N);
    for (std::int64_t i = 0; i < N; ++i) first[i] = x[i * d];
    const double mean = ds::testing::mean(first), var = ds::testing::variance(first);
    const double want_mean = c * mu, want_var = c * c / lambda + v;
    std::printf("dcps_bridge_variance %d: first coordinate mean %.4f against %.4f, variance %.4f against %.4f\n",
                int(bridge), mean, want_mean, var, want_var);
    EXPECT_NEAR(mean, want_mean, 5 * std::sqrt(want_var / double(N))) << "bridge variance " << bridge;
    EXPECT_NEAR(var, want_var, want_var * (5 * std::sqrt(2.0 / double(N)) + 0.01 * (lambda / 2 + 3)))
        << "bridge variance " << bridge;
  }
}

// One DCPS transition (the variational fit of the twisted kernel, then the draw) against the formula in FP64 with
// the kernel's own normals: G = 2 normalised gradient steps from (mu_p, log sig), each on one draw
// q = mu + e^l eps, with grad log beta(q) = cx u + cm (a / s^2) Cov(x0 | q) u in FP64, then
// x' = mu + e^l z. Tolerance 1e-4 relative (FP32 JVPs through two normalised steps). Both step forms: lengths
// rho sig sqrt(d) and rho sqrt(d) (relative, the default) and rho for both vectors (absolute_step, the published
// form). Seen failing with the KL's prior term (mu - mu_p) / sig^2 dropped from the mean's gradient, and with
// absolute_step ignored by the kernel (coordinate errors 0.06 to 0.15). Also with the precision 1e24 of a potential
// at sigma_y = 1e-12 (gradients of about 1e24): the plain FP32 sums of squares of the two gradients overflowed, both
// steps had length 0 and the draw came from the unconditional kernel (seen failing so, coordinates off by about 0.1).
TEST(Dcps, TransitionMatchesFp64Reference) {
  for (const float precision : {1.5f, 1e24f})
  for (const int absolute : {0, 1}) {
    SCOPED_TRACE(absolute ? "absolute step" : "relative step");
    SCOPED_TRACE(precision);
  const small_mixture mix;
  const int d = mix.d, dy = 1;
  std::vector<float> A = {0.5f, -1.0f, 0.3f, 0.8f}, y = {1.5f};
  const std::vector<float> P = {precision};
  kn::guided_step unused{};
  kn::dcps_step st{};
  st.a = 0.6f;
  st.s = 0.8f;
  st.c0 = 0.3f;
  st.c1 = 0.9f;
  st.sig = 0.2f;
  st.next = {0.7f, float(std::sqrt(0.51)), 0.8f, 0.3f, 0.95f};
  kn::dcps_params p{};
  p.g = host_params(mix, A, y, &unused, dy);
  p.steps = &st;
  p.step_precision = P.data();
  p.steps_count = 1;
  p.gradient_steps = 2;
  p.rho = 0.3f;
  p.absolute_step = absolute;
  std::vector<float> table;
  p.g.channels = channel_table(p.g.mix, kn::dcps_channels::count(1, 0), kn::dcps_channels{&st, nullptr, 1}, table);
  const std::vector<double> x = {0.3, -0.8, 1.1, 0.2};
  std::vector<float> xf(x.begin(), x.end()), work(8 * d + 2 * dy);
  float* w0 = work.data();
  const kn::dcps_scratch w = kn::dcps_scratch::rows(w0, d, dy);
  kn::strided_vec<float> xv{xf.data(), 1, d};
  kn::dcps_transition(p, 0, 0, 0, xv, w);
  // FP64 reference.
  std::vector<double> m, C;
  mix.moments(x, st.a, st.s, m, C);
  std::vector<double> mu_p(d), mu(d), l(d, std::log(double(st.sig)));
  for (int j = 0; j < d; ++j) mu[j] = mu_p[j] = st.c0 * m[j] + st.c1 * x[j];
  const kn::dcps_potential pot = st.next;
  auto grad_log_beta = [&](const std::vector<double>& q) {
    std::vector<double> mq, Cq;
    mix.moments(q, pot.a, pot.s, mq, Cq);
    double r = pot.a_target * y[0];
    for (int j = 0; j < d; ++j) r -= A[j] * (pot.cx * q[j] + pot.cm * mq[j]);
    std::vector<double> u(d), g(d);
    for (int j = 0; j < d; ++j) u[j] = A[j] * P[0] * r;
    for (int j = 0; j < d; ++j) {
      double cu = 0;
      for (int i = 0; i < d; ++i) cu += Cq[j * d + i] * u[i];
      g[j] = pot.cx * u[j] + pot.cm * (pot.a / (pot.s * pot.s)) * cu;
    }
    return g;
  };
  const double sig = st.sig;
  const double lr_mu = absolute ? 0.3 : 0.3 * sig * std::sqrt(double(d));
  const double lr_l = absolute ? 0.3 : 0.3 * std::sqrt(double(d));
  for (int g = 0; g < 2; ++g) {
    kn::philox rng(p.g.seed, 0, kn::dcps_counter_step(p, 0, g));
    std::vector<double> eps(d), q(d);
    rng.normals(d, [&](int j, float v) { eps[j] = v; });
    for (int j = 0; j < d; ++j) q[j] = mu[j] + std::exp(l[j]) * eps[j];
    const std::vector<double> gb = grad_log_beta(q);
    std::vector<double> gm(d), gl(d);
    double nm = 0, nl = 0;
    for (int j = 0; j < d; ++j) {
      const double sd = std::exp(l[j]);
      gm[j] = -gb[j] + (mu[j] - mu_p[j]) / (sig * sig);
      gl[j] = -gb[j] * sd * eps[j] + sd * sd / (sig * sig) - 1;
      nm += gm[j] * gm[j];
      nl += gl[j] * gl[j];
    }
    for (int j = 0; j < d; ++j) {
      mu[j] -= lr_mu / std::sqrt(nm) * gm[j];
      l[j] -= lr_l / std::sqrt(nl) * gl[j];
    }
  }
  kn::philox rng(p.g.seed, 0, kn::dcps_counter_step(p, 0, 2));
  std::vector<double> z(d);
  rng.normals(d, [&](int j, float v) { z[j] = v; });
  for (int j = 0; j < d; ++j) {
    const double ref = mu[j] + std::exp(l[j]) * z[j];
    EXPECT_NEAR(xf[j], ref, 1e-4 * (1 + std::abs(ref))) << "coordinate " << j;
  }
  }
}

// DCPS's steps at a tiny sigma_y through the whole sampler (the CPU executor's pack code, which the FP64 tests above do
// not run): once the likelihood's gradient, of order 1 / sigma_y^2, outweighs the prior's score, the tamed Langevin
// step and the normalised gradient steps follow its direction only (their lengths do not depend on its size), so a
// run at sigma_y = 1e-12 or 1e-18 (the smallest accepted) gives the samples of the run at 1e-7 (same seed and y) up
// to FP32 rounding. Prior N(m, I_4), a 2 x 4 operator of full rank, 256 particles, 20 steps, 2 blocks of 10 Langevin
// steps; y near the prior's reach and y = (600, -450) far from it (residuals of several hundred). Checked: the two
// runs' misfits E|y - A x|^2 within 1% and every coordinate within 1e-3 (1 + |x|) of the other run's. Seen failing
// before the norms were taken on scaled entries: at 1e-12 the gradients' plain FP32 sums of squares overflowed
// (entries past 1.8e19), every step had length 0 and the run went unguided (misfit 4.17 against 1.22, coordinates up
// to 1.4 apart). Seen failing before the precision tables were stored over their scale (dcps_table_scale): at 1e-18
// with the far y, P r = r / sigma_y^2 passed FP32's largest value and the samples were NaN.
TEST(Dcps, TinySigmaYRunsAsTheLikelihoodDominatedLimit) {
  const std::int64_t N = 256, d = 4;
  const ds::gaussian_mixture prior(d, {1.0}, {0.5, -1.0, 1.5, 0.0}, {1.0});
  ds::linear_observation obs;
  obs.d_y = 2;
  obs.d_x = d;
  obs.A = {0.8, -0.4, 1.1, 0.3, -0.6, 1.2, 0.2, 0.9};
  auto run_at = [&](double sigma_y) {
    obs.sigma_y = sigma_y;
    ds::guided_options o = options(ds::guided_sampler::dcps, N, 20, 29);
    o.dcps_blocks = 2;
    o.dcps_langevin_steps = 10;
    return run(prior, replicate(obs, 1), o);
  };
  auto misfit = [&](const std::vector<float>& x) {
    double sum = 0;
    for (std::int64_t i = 0; i < N; ++i)
      for (int r = 0; r < 2; ++r) {
        double e = obs.y[r];
        for (std::int64_t j = 0; j < d; ++j) e -= obs.A[r * d + j] * x[i * d + j];
        sum += e * e;
      }
    return sum / double(N);
  };
  for (const std::vector<double>& y : {std::vector<double>{1.7, -0.8}, std::vector<double>{600.0, -450.0}}) {
    obs.y = y;
    const std::vector<float> near = run_at(1e-7);
    const double m_near = misfit(near);
    for (const double sigma_y : {1e-12, 1e-18}) {
      SCOPED_TRACE("y_1 = " + std::to_string(y[0]) + ", sigma_y = " + std::to_string(sigma_y));
      const std::vector<float> tiny = run_at(sigma_y);
      const double m_tiny = misfit(tiny);
      std::int64_t far = 0, bad = 0;
      double worst = 0;
      for (std::size_t i = 0; i < near.size(); ++i) {
        bad += !std::isfinite(tiny[i]);
        worst = std::max(worst, double(std::abs(tiny[i] - near[i])));
        if (!(std::abs(tiny[i] - near[i]) <= 1e-3 * (1 + std::abs(near[i])))) ++far;
      }
      std::printf("dcps at y_1 = %g, sigma_y 1e-7 / %g: misfit %.4f / %.4f, largest difference %.3g\n", y[0],
                  sigma_y, m_near, m_tiny, worst);
      EXPECT_EQ(bad, 0) << "non-finite values";
      EXPECT_NEAR(m_tiny, m_near, 0.01 * m_near);
      EXPECT_EQ(far, 0);
    }
  }
}
// DCPS's data misfit at a small sigma_y is the algorithm's, not this implementation's: on the problem of
// GuidedSamplers.SmallSigmaYResidualKeepsTheDataMisfit (N(mu, I) in d = 32, two rows of positive entries in [1, 2],
// |y| about 350) at sigma_y = 1e-3, 512 samples, 50 steps, defaults, the mean |A x - y|^2 is about 1.6e6 times the
// exact posterior's. Against dcps_reference (the same algorithm in FP64 from the formulas, its own normals): the
// mean misfits within 5 combined standard errors (independent particles), at the default 2 gradient steps and at 16.
// So neither an FP32 cancellation nor a step of the implementation is behind the misfit: the reference has neither.
// What bounds it is the fit: G normalised gradient steps move the fit's log-scales by at most G rho sqrt(d) in norm,
// so the last fitted draw x_{K-1} keeps at least e^{-G rho sqrt(d)} of its kernel's scale sig in every coordinate,
// and the last step x_K = m(x_{K-1}) = kappa x_{K-1} + const (kappa = a / (a^2 + s^2) at K - 1 on N(mu, I)) gives
// E|A x - y|^2 >= kappa^2 sig^2 e^{-2 G rho sqrt(d)} |A|_F^2 (the last draw's variance alone), asserted within 5 se:
// 0.058 at G = 2, 3e4 times the exact misfit (README "DCPS", "At small sigma_y"). Measured: 3.19 against the
// reference's 3.42 (se 0.33) at G = 2, 0.676 against 0.724 (se 0.058) at G = 16; exact 2.0e-6. Seen failing with the
// last block's fits on the CPU packs made to ignore the likelihood (misfit 76 against 3.4; the final steps then
// ignore the data).
TEST(Dcps, SmallSigmaYMisfitIsTheAlgorithms) {
  const int d = 32, dy = 2;
  const std::int64_t N = 512, K = 50;
  const misfit_problem mp = make_misfit_problem(d, dy);
  const std::vector<double>&mu = mp.mu, &A = mp.A, &y = mp.y;
  const double sigma_y = 1e-3;
  const ds::gaussian_mixture prior(d, {1.0}, mu, {1.0});
  const ds::linear_observation obs{dy, d, A, sigma_y, y};
  const ds::mixture_posterior post(prior, obs);
  std::vector<float> exact_x(N * d);
  post.sample(exact_x.data(), N, 100);
  const double exact = ds::testing::mean(ds::testing::misfits(obs, exact_x.data(), N));
  double frobenius = 0;
  for (double a : A) frobenius += a * a;
  const std::vector<ds::schedule_point> pts = ds::guided_options{}.schedule.points(K);
  const double a1 = pts[K - 1].a, s1 = pts[K - 1].s, a2 = pts[K - 2].a, s2 = pts[K - 2].s;
  const double sig2 = s1 * s1 * (s2 * s2 - (a2 / a1) * (a2 / a1) * s1 * s1) / (s2 * s2);  // kernel K - 2 -> K - 1
  const double kappa = a1 / (a1 * a1 + s1 * s1);                                        // m(x) at K - 1 on N(mu, I)
  for (std::int64_t G : {2, 16}) {
    ds::guided_options o = options(ds::guided_sampler::dcps, N, K, 11);
    o.dcps_gradient_steps = G;
    const std::vector<float> x = run(prior, replicate(obs, 1), o);
    dcps_reference_options ro;
    ro.steps = K;
    ro.gradient_steps = G;
    const std::vector<double> xr = dcps_reference(prior, obs, ro, N, 5);
    const std::vector<double> mf = ds::testing::misfits(obs, x.data(), N), mr = ds::testing::misfits(obs, xr.data(), N);
    const double lib = ds::testing::mean(mf), ref = ds::testing::mean(mr);
    const double se = std::sqrt((ds::testing::variance(mf) + ds::testing::variance(mr)) / double(N));
    const double bound = kappa * kappa * sig2 * std::exp(-2.0 * double(G) * o.dcps_learning_rate * std::sqrt(double(d))) *
                         frobenius;
    std::printf("dcps at sigma_y = %g, %lld gradient steps: misfit %.4g, FP64 reference %.4g (se %.2g); exact %.3g "
                "(%.3gx); the fit's step bound %.3g\n",
                sigma_y, static_cast<long long>(G), lib, ref, se, exact, lib / exact, bound);
    EXPECT_NEAR(lib, ref, 5 * se) << G;
    const double se_lib = std::sqrt(ds::testing::variance(mf) / double(N));
    EXPECT_GE(lib + 5 * se_lib, bound) << G;
  }
}


// options.dcps_absolute_step through the whole sampler (the CPU executor's pack code, which the FP64 test above does
// not run): prior N(0, I_4), A = e_1, sigma_y = 1, y = 1000, two steps (t = 1, 0.5, 0), one block, no Langevin
// steps, one gradient step of length rho = 0.5. With y that far, grad log beta(q) = a_1 (y - a_1 q_1) e_1 points
// along +e_1 for every draw, so the normalised step moves the mean of the first transition's fit by exactly its
// length along e_1 (the log-scale step does not move the mean); the draw x_1 then has E[x_1,1] = length (the
// unconditional kernel's mean has mean 0 on this symmetric prior), and the last transition, a point mass at the
// denoiser a_1 x_1 (s = 0), gives E[output_1] = a_1 x length: a_1 rho with the absolute step, a_1 rho sig_0 sqrt(4)
// with the relative one (sig_0 = 0.96, the first kernel's scale: about twice as far). The mean of N = 4096
// particles is checked within 5 standard errors (the sample's own); the two forms' expectations differ by about
// 24 of them. Seen failing with the option ignored by the CPU pack code (0.2606 against 0.1406 for absolute).
TEST(Dcps, AbsoluteStepMovesTheFitByTheLearningRate) {
  const std::int64_t N = 4096, d = 4;
  const ds::gaussian_mixture prior(d, {1.0}, std::vector<double>(d, 0.0), {1.0});
  ds::linear_observation obs;
  obs.d_y = 1;
  obs.d_x = d;
  obs.A = {1.0, 0.0, 0.0, 0.0};
  obs.sigma_y = 1.0;
  obs.y = {1000.0};
  for (const bool absolute : {true, false}) {
    ds::guided_options o = options(ds::guided_sampler::dcps, N, 2, 23);
    o.dcps_blocks = 1;
    o.dcps_langevin_steps = 0;
    o.dcps_gradient_steps = 1;
    o.dcps_learning_rate = 0.5;
    o.dcps_absolute_step = absolute;
    const std::vector<float> x = run(prior, replicate(obs, 1), o);
    const std::vector<ds::schedule_point> pts = o.schedule.points(2);
    const double a0 = pts[0].a, s0 = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
    const double sig0 = std::sqrt((1 - (a0 * a0) / (a1 * a1)) * s1 * s1 / (s0 * s0));
    const double length = absolute ? 0.5 : 0.5 * sig0 * std::sqrt(double(d));
    std::vector<double> first(N);
    for (std::int64_t i = 0; i < N; ++i) first[i] = x[i * d];
    const double mean = ds::testing::mean(first), se = std::sqrt(ds::testing::variance(first) / double(N));
    std::printf("dcps_absolute_step %d: first coordinate mean %.4f against %.4f (se %.4f)\n", int(absolute), mean,
                a1 * length, se);
    EXPECT_NEAR(mean, a1 * length, 5 * se) << "absolute step " << absolute;
  }
}

// A shard of a run (kernels::guided_params::stream_skip and stream_first, as guided_sample_streams() sets them for
// mpi::guided_sample): the fused functors of TMPD, SKRock and DCPS, the CUDA executor's kernels, run here on the
// CPU over particles [first, first + local) of each problem's N must give rows [first, first + local) of the run
// over all N bit for bit (each particle draws from its stream in the whole run). The device code takes the same
// offset (no executor-specific stream), which the GPU test Mpi.GuidedSamplersWithoutInteractionOnCudaRanksEqual-
// OneDevice checks on a device. Seen failing with TMPD's and SKRock's functors keyed by the launch's index i
// (their device streams before the shard's offset reached them).
TEST(GuidedSamplers, FusedFunctorsOfAShardDrawTheWholeRunsStreams) {
  const small_mixture mix;
  const int d = mix.d, dy = 2, steps = 3;
  const std::int64_t B = 2, N = 7, first = 2, local = 3;
  std::mt19937 gen(29);
  std::uniform_real_distribution<float> u(0.2f, 1.0f);
  std::normal_distribution<float> z;
  std::vector<kn::guided_step> table(steps);
  for (auto& st : table) st = {u(gen), u(gen), u(gen), u(gen), u(gen), 0.3f * u(gen), u(gen)};
  std::vector<float> A(dy * d), y(B * dy), sigma2 = {0.4f, 0.7f};
  for (auto& v : A) v = z(gen);
  for (auto& v : y) v = 2 * z(gen);
  std::vector<float> step_table, prior_table, dcps_table;
  kn::guided_params base{};
  base.mix = mix.view();
  base.steps = table.data();
  base.A = A.data();
  base.y = y.data();
  base.problems = B;
  base.d = d;
  base.d_y = dy;
  base.seed = 31;
  base.initial_scale = 1.3f;
  base.channels = channel_table(base.mix, steps, kn::guided_channels{base.steps}, step_table);
  const kn::mixture_channels prior_channel = channel_table(base.mix, 1, kn::guided_channels{nullptr}, prior_table);
  std::vector<float> skrock_step = {0.01f, 0.02f}, skrock_inv = {0.5f, 0.8f}, skrock_coefficients(9);
  for (auto& c : skrock_coefficients) c = 0.5f * u(gen);
  const std::vector<double> cumulative = {0.2, 0.7, 1.0};  // the weights 0.2, 0.5, 0.3
  const kn::skrock_params skrock{skrock_step.data(), skrock_inv.data(), skrock_coefficients.data(), 3,
                                 cumulative.data()};
  std::vector<kn::dcps_step> dsteps(steps);
  for (auto& st : dsteps) {
    st = {u(gen), u(gen), u(gen), u(gen), 0.3f * u(gen), {}};
    st.next = {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)};
  }
  std::vector<kn::dcps_block> blocks = {{0, 2, {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)}},
                                        {2, 3, {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)}}};
  std::vector<float> step_precision(steps * B * dy * dy), block_precision(2 * B * dy * dy);
  for (auto* t : {&step_precision, &block_precision})
    for (auto& v : *t) v = 0.5f * u(gen);
  const kn::mixture_channels dcps_channels = channel_table(base.mix, kn::dcps_channels::count(steps, 2),
                                                           kn::dcps_channels{dsteps.data(), blocks.data(), steps},
                                                           dcps_table);
  // The three samplers' rows (B x particles x d each, row-major) over `particles` of each problem's
  // particles + skip, starting at `from`.
  const auto run = [&](std::int64_t particles, std::int64_t skip, std::int64_t from) {
    kn::guided_params p = base;
    p.particles = particles;
    p.stream_skip = skip;
    p.stream_first = from;
    const std::int64_t n = B * particles;
    std::vector<float> out;
    {
      std::vector<float> x(n * d), fwork(n * kn::tmpd_scratch::floats(d, dy));
      std::vector<double> dwork(n * kn::tmpd_scratch::doubles(dy));
      const kn::guided_tmpd_functor f{p, steps, 0.8f, sigma2.data(), x.data(), fwork.data(), dwork.data()};
      for (std::int64_t i = 0; i < n; ++i) f(i);
      out.insert(out.end(), x.begin(), x.end());
    }
    {
      kn::guided_params q = p;
      q.channels = prior_channel;
      std::vector<float> x(n * d), work(n * 3 * d), r(n * dy);
      const kn::guided_skrock_functor f{q, skrock, 2, x.data(), work.data(), r.data()};
      for (std::int64_t i = 0; i < n; ++i) f(i);
      out.insert(out.end(), x.begin(), x.end());
    }
    {
      kn::dcps_params q{};
      q.g = p;
      q.g.channels = dcps_channels;
      q.steps = dsteps.data();
      q.blocks = blocks.data();
      q.step_precision = step_precision.data();
      q.block_precision = block_precision.data();
      q.blocks_count = 2;
      q.steps_count = steps;
      q.langevin_steps = 2;
      q.gradient_steps = 2;
      q.gamma = 0.05f;
      q.rho = 0.3f;
      q.initial_scale = 1.1f;
      std::vector<float> x(n * d), work(n * kn::dcps_scratch::floats(d, dy));
      const kn::guided_dcps_functor f{q, x.data(), work.data()};
      for (std::int64_t i = 0; i < n; ++i) f(i);
      out.insert(out.end(), x.begin(), x.end());
    }
    return out;
  };
  const std::vector<float> whole = run(N, 0, 0), shard = run(local, N - local, first);
  ASSERT_EQ(shard.size(), std::size_t(3 * B * local * d));
  const char* names[] = {"TMPD", "SKRock", "DCPS"};
  for (int s = 0; s < 3; ++s)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < local; ++j) {
        const float* mine = shard.data() + ((s * B + b) * local + j) * d;
        const float* ref = whole.data() + ((s * B + b) * N + first + j) * d;
        EXPECT_EQ(std::memcmp(mine, ref, sizeof(float) * d), 0)
            << names[s] << ": problem " << b << ", particle " << first + j;
      }
}

// guided_sample_streams() (the call a rank of mpi::guided_sample makes) on particles [2, 5) of 7 per problem against
// rows [2, 5) of each problem of guided_sample() with all 7, bit for bit on one executor, for every sampler whose
// particles never interact: the launch holds 3 particles (coordinate stride B 3 on CUDA) and keys each one's Philox
// stream by its index in the whole run (kernels::guided_stream). Two problems, d = 10 with a dense 2 x 10 A, 4 steps.
namespace {
void expect_shard_rows_equal_the_whole_run(ds::executor where) {
  const benchmark_problem p = make_problem(10, 2, 17);
  const ds::guided_problems g = replicate(p.observation, 2);
  const std::int64_t B = g.problems, N = 7, first = 2, local = 3, d = p.prior.dim();
  for (ds::guided_sampler s : {ds::guided_sampler::dps, ds::guided_sampler::pigdm, ds::guided_sampler::diffpir,
                               ds::guided_sampler::ddrm, ds::guided_sampler::dcps, ds::guided_sampler::skrock,
                               ds::guided_sampler::tmpd}) {
    ds::guided_options o = options(s, N, 4, 23);
    if (s == ds::guided_sampler::dcps) o.dcps_langevin_steps = 2;  // the other samplers refuse it
    const std::vector<float> whole = run(p.prior, g, o, where);
    o.particles = local;
    std::vector<float> shard(B * local * d, NAN);
    ds::guided_outputs out;
    ds::guided_report r;
    if (where == ds::executor::cuda) {
      ds::testing::device_buffer<float> buf(shard);
      out.samples = buf.ptr;
      r = ds::detail::guided_sample_streams(p.prior, g, o, out, {where, nullptr}, N, first);
      shard = buf.download();
    } else {
      out.samples = shard.data();
      r = ds::detail::guided_sample_streams(p.prior, g, o, out, {where, nullptr}, N, first);
    }
    EXPECT_EQ(r.ran, where) << ds::to_string(s);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < local; ++j)
        EXPECT_EQ(std::memcmp(shard.data() + (b * local + j) * d, whole.data() + (b * N + first + j) * d,
                              sizeof(float) * d),
                  0)
            << ds::to_string(s) << ": problem " << b << ", particle " << first + j;
  }
}
}  // namespace

// Seen failing (every sampler, every row) with guided_sample_streams() keying the shard's particles from 0 (its
// particle_streams left at {0, 0}).
TEST(GuidedSamplers, ShardOfARunEqualsItsRowsOfTheWholeRun) {
  expect_shard_rows_equal_the_whole_run(ds::executor::cpu);
}

// The same on the CUDA executor, where SKRock's and TMPD's kernels take the shard's offset as every guided kernel
// does; no GPU has run it yet.
TEST(GuidedSamplers, GpuShardOfARunEqualsItsRowsOfTheWholeRun) {
  DIFFSAMPLE_REQUIRE_GPU();
  expect_shard_rows_equal_the_whole_run(ds::executor::cuda);
}

// The CUDA executor's layout of TMPD's, DDRM's and DCPS's per-particle buffers, checked on the CPU with the very
// functors, as Guided.CoordinateMajorLayoutMatchesRowMajorBitForBit does for SMC, DPS, DiffPIR and SKRock: whole
// trajectories over coordinate-major buffers (coordinate_stride = B N, as on CUDA) with the scratch shaped as
// for_each_index_scratch_kernel's shared memory (thread t of a block of 4 at c * 4 + t), transposed back, must equal
// the row-major run (the CPU executor's layout, the scratch in the functors' own rows) bit for bit: the arithmetic
// does not depend on the layout, so any difference is an indexing error. Both must also equal the steps run over
// separately allocated vectors, so that two vectors aliased alike in both layouts are seen too, and each particle
// must write nothing outside its own slots (the particles run one after another here, so two sharing a slot would
// not show in the values; on the GPU they run at once). A diagonal mixture, dense A and a mask operator (d_y = 2),
// two problems of six particles. Seen failing with the DCPS scratch's ju placed over its m (dcps_scratch::at),
// with TMPD's product rows at the row-major offset o d instead of o d stride (rows of other particles: seen by the
// slot check only), and with DDRM's xi taken from the scratch past its d floats.
TEST(GuidedSamplers, CoordinateMajorLayoutMatchesRowMajorBitForBit) {
  const small_mixture mix;
  const int d = mix.d, dy = 2, steps = 3, r = 2;
  const std::int64_t B = 2, N = 6, n = B * N;
  std::mt19937 gen(17);
  std::uniform_real_distribution<float> u(0.2f, 1.0f);
  std::normal_distribution<float> z;
  std::vector<kn::guided_step> table(steps);
  for (auto& st : table) st = {u(gen), u(gen), u(gen), u(gen), u(gen), 0.3f * u(gen), u(gen)};
  std::vector<float> A(dy * d), gains = {1.0f, -0.5f}, y(B * dy), sigma2 = {0.4f, 0.7f};
  for (auto& v : A) v = z(gen);
  for (auto& v : y) v = 2 * z(gen);
  const std::vector<std::int32_t> observed = {0, 3};
  // The three samplers' trajectories of all particles, row-major, in one layout (coordinate_major) and operator.
  const auto run = [&](bool coordinate_major, bool mask, bool separate) {
    kn::guided_params p{};
    p.mix = mix.view();
    p.steps = table.data();
    p.A = mask ? gains.data() : A.data();
    p.mask = mask ? observed.data() : nullptr;
    p.A_stride = 0;
    p.y = y.data();
    p.problems = B;
    p.particles = N;
    p.d = d;
    p.d_y = dy;
    p.seed = 21;
    p.initial_scale = 1.3f;
    p.coordinate_stride = coordinate_major ? n : 0;
    std::vector<float> step_table, dcps_table;
    p.channels = channel_table(p.mix, steps, kn::guided_channels{p.steps}, step_table);
    std::vector<float> block(4 * 2 * d + 16);  // 16 floats past the widest scratch: overruns are seen there
    // Thread i % 4 of a block of 4: the scratch as the shared memory of for_each_index_scratch_kernel.
    const auto shared = [&](std::int64_t i, int width) {
      return kn::strided_vec<float>{block.data() + i % 4, 4, width};
    };
    // Runs particle i and counts the values it changed outside its own slots: of x (d floats per particle) and
    // work (`per` floats per particle) the other particles' (row-major: other rows; coordinate-major: elements
    // e with e % n != i), of the block every lane but i % 4 and everything past its 4 width floats, of the FP64
    // rows (`dper` doubles per particle, row-major in both layouts) the other rows. Particles run one after
    // another here, so a slot shared by two of them would go unseen in the values alone.
    const auto confined = [&](std::int64_t i, int width, std::vector<float>& x, std::vector<float>& work,
                              std::int64_t per, std::vector<double>* dwork, std::int64_t dper,
                              const std::function<void()>& body) {
      const std::vector<float> x0 = x, w0 = work, b0 = block;
      const std::vector<double> d0 = dwork != nullptr ? *dwork : std::vector<double>();
      body();
      std::int64_t foreign = 0;
      const auto own = [&](std::size_t e, std::int64_t row) {
        return coordinate_major ? static_cast<std::int64_t>(e) % n == i : static_cast<std::int64_t>(e) / row == i;
      };
      for (std::size_t e = 0; e < x.size(); ++e) foreign += !own(e, d) && std::memcmp(&x[e], &x0[e], 4) != 0;
      for (std::size_t e = 0; e < work.size(); ++e) foreign += !own(e, per) && std::memcmp(&work[e], &w0[e], 4) != 0;
      for (std::size_t e = 0; coordinate_major && e < block.size(); ++e)
        foreign += !(e < std::size_t(4 * width) && e % 4 == std::size_t(i % 4)) &&
                   std::memcmp(&block[e], &b0[e], 4) != 0;
      for (std::size_t e = 0; dwork != nullptr && e < dwork->size(); ++e)
        foreign += static_cast<std::int64_t>(e) / dper != i && std::memcmp(&(*dwork)[e], &d0[e], 8) != 0;
      return foreign;
    };
    std::int64_t foreign[3] = {0, 0, 0};
    std::vector<float> out;
    const auto append_rows = [&](const std::vector<float>& v) {
      for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) out.push_back(coordinate_major ? v[i + j * n] : v[i * d + j]);
    };
    // TMPD.
    {
      std::vector<float> x(n * d), fwork(n * kn::tmpd_scratch::floats(d, dy));
      std::vector<double> dwork(n * kn::tmpd_scratch::doubles(dy));
      const kn::guided_tmpd_functor f{p, steps, 0.8f, sigma2.data(), x.data(), fwork.data(), dwork.data()};
      for (std::int64_t i = 0; i < n; ++i) {
        if (!separate) {
          foreign[0] += confined(i, 2 * d, x, fwork, kn::tmpd_scratch::floats(d, dy), &dwork,
                                 kn::tmpd_scratch::doubles(dy),
                                 [&] { coordinate_major ? f(i, shared(i, 2 * d)) : f(i); });
          continue;
        }
        std::vector<float> m(d), jv(d), jrows(dy * d), rr(dy);
        std::vector<double> cyy(dy * dy), fv(dy);
        const kn::tmpd_scratch w{{m.data(), 1, d}, {jv.data(), 1, d}, {jrows.data(), 1, dy * d}, {rr.data(), 1, dy},
                                 cyy.data(), fv.data()};
        kn::strided_vec<float> xi{x.data() + i * d, 1, d};
        kn::philox rng(p.seed, static_cast<std::uint64_t>(i), 0);
        rng.normals(d, [&](int j, float v) { xi[j] = p.initial_scale * v; });
        for (int k = 0; k < steps; ++k) EXPECT_TRUE(kn::tmpd_step(p, i, k, 0.8f, sigma2[i / N], xi, w));
      }
      append_rows(x);
    }
    // DDRM (its own operator V; the mask setting changes nothing here but runs it twice).
    {
      std::vector<kn::ddrm_step> dsteps(steps);
      for (auto& st : dsteps) st = {u(gen), u(gen), u(gen), 0.5f * u(gen), 0.f};
      for (auto& st : dsteps) st.inv_s = 1.f / st.s;
      std::vector<float> V(d * r), ybar(B * r), noise = {0.1f, -1.f, 0.9f, -1.f},
                         inv_noise = {10.f, 0.f, 1.f / 0.9f, 0.f};
      for (auto& v : V) v = 0.5f * z(gen);
      for (auto& v : ybar) v = z(gen);
      kn::ddrm_params q{};
      const kn::mixture_view<float> view = mix.view();
      std::vector<float> channel_table(kn::mixture_channels::table_floats(view, steps));
      q.channels = kn::mixture_channels::in(view, steps, channel_table.data());
      for (std::int64_t e = 0; e < steps * view.components; ++e)
        kn::channel_table_functor<kn::ddrm_channels>{q.channels, {dsteps.data()}}(e);
      q.steps = dsteps.data();
      q.V = V.data();
      q.ybar = ybar.data();
      q.noise = noise.data();
      q.inv_noise = inv_noise.data();
      const std::vector<std::int32_t> from = {1, std::int32_t(steps + 1), 3, std::int32_t(steps + 1)};
      q.less_noisy_from = from.data();
      q.problems = B;
      q.particles = N;
      q.d = d;
      q.r = r;
      q.eta = 0.5f;
      q.eta_b = 0.7f;
      q.keep = std::sqrt(0.75f);
      q.s_start = 0.45f;
      q.a_start = 0.3f;
      q.seed = 23;
      q.coordinate_stride = p.coordinate_stride;
      std::vector<float> x(n * d), work(n * kn::ddrm_scratch::floats(d, r));
      const kn::guided_ddrm_functor f{q, steps, x.data(), work.data()};
      for (std::int64_t i = 0; i < n; ++i) {
        if (!separate) {
          foreign[1] += confined(i, d, x, work, kn::ddrm_scratch::floats(d, r), nullptr, 0,
                                 [&] { coordinate_major ? f(i, shared(i, d)) : f(i); });
          continue;
        }
        std::vector<float> m(d), xi(d), pu(r), pxi(r), pm(r);
        const kn::ddrm_scratch w{{m.data(), 1, d}, {xi.data(), 1, d}, {pu.data(), 1, r}, {pxi.data(), 1, r},
                                 {pm.data(), 1, r}};
        kn::strided_vec<float> xv{x.data() + i * d, 1, d};
        kn::ddrm_init(q, i, i / N, xv, w);
        for (int k = 0; k < steps; ++k) kn::ddrm_transition(q, i, i / N, k, xv, w);
      }
      append_rows(x);
    }
    // DCPS: two blocks over the steps, two Langevin and two gradient steps.
    {
      std::vector<kn::dcps_step> csteps(steps);
      for (auto& st : csteps) {
        st = {u(gen), u(gen), u(gen), u(gen), 0.3f * u(gen), {}};
        st.next = {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)};
      }
      csteps[1].next.cm = 0.f;  // a potential at its block's clean end: no JVP
      std::vector<kn::dcps_block> blocks = {{0, 2, {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)}},
                                            {2, 3, {u(gen), u(gen), u(gen), 0.5f * u(gen), u(gen)}}};
      std::vector<float> step_precision(steps * B * dy * dy), block_precision(2 * B * dy * dy);
      for (auto* t : {&step_precision, &block_precision})
        for (auto& v : *t) v = 0.5f * u(gen);
      kn::dcps_params q{};
      q.g = p;
      q.steps = csteps.data();
      q.blocks = blocks.data();
      q.step_precision = step_precision.data();
      q.block_precision = block_precision.data();
      q.blocks_count = 2;
      q.steps_count = steps;
      q.langevin_steps = 2;
      q.gradient_steps = 2;
      q.gamma = 0.05f;
      q.rho = 0.3f;
      q.initial_scale = 1.1f;
      q.g.channels = channel_table(q.g.mix, kn::dcps_channels::count(steps, 2),
                                   kn::dcps_channels{csteps.data(), blocks.data(), steps}, dcps_table);
      std::vector<float> x(n * d), work(n * kn::dcps_scratch::floats(d, dy));
      const kn::guided_dcps_functor f{q, x.data(), work.data()};
      for (std::int64_t i = 0; i < n; ++i) {
        if (!separate) {
          foreign[2] += confined(i, 2 * d, x, work, kn::dcps_scratch::floats(d, dy), nullptr, 0,
                                 [&] { coordinate_major ? f(i, shared(i, 2 * d)) : f(i); });
          continue;
        }
        // Another order than the fused run's rows: u .. gl first, then m and ju, then t and r.
        std::vector<float> v(8 * d + 2 * dy);
        kn::dcps_scratch w{};
        w.first = v.data() + 6 * d;
        w.ju_offset = d;
        w.rest = v.data();
        w.obs = v.data() + 8 * d + dy;
        w.obs_step = -dy;
        w.first_stride = w.stride = 1;
        w.step = d;
        w.d = d;
        w.dy = dy;
        kn::strided_vec<float> xv{x.data() + i * d, 1, d};
        const std::int64_t b = i / N;
        kn::philox rng(q.g.seed, static_cast<std::uint64_t>(i), 0);
        rng.normals(d, [&](int j, float e) { xv[j] = q.initial_scale * e; });
        for (std::int64_t l = 0; l < 2; ++l) {
          for (std::int64_t t = 0; t < q.langevin_steps; ++t) kn::dcps_langevin_step(q, i, b, l, t, xv, w);
          for (std::int64_t j = blocks[l].first_step; j < blocks[l].last_step; ++j)
            kn::dcps_transition(q, i, b, j, xv, w);
        }
      }
      append_rows(x);
    }
    const char* names[] = {"TMPD", "DDRM", "DCPS"};
    for (int e = 0; e < 3; ++e)
      EXPECT_EQ(foreign[e], 0) << names[e] << (coordinate_major ? ", coordinate-major" : ", row-major")
                               << (mask ? " (mask)" : "") << ": values written outside the particle's slots";
    return out;
  };
  for (bool mask : {false, true}) {
    // The draws of u(gen) inside run() make the tables: restart the generator so that all three runs see the same.
    const std::mt19937 start = gen;
    gen = start;
    const std::vector<float> row = run(false, mask, false);
    gen = start;
    const std::vector<float> col = run(true, mask, false);
    gen = start;
    const std::vector<float> ref = run(false, mask, true);
    ASSERT_EQ(row.size(), static_cast<std::size_t>(3 * n * d));
    const char* names[] = {"TMPD", "DDRM", "DCPS"};
    for (std::size_t e = 0; e < row.size(); ++e) {
      const char* what = names[e / (n * d)];
      ASSERT_TRUE(std::isfinite(row[e])) << what << (mask ? " (mask)" : "") << ", value " << e % (n * d);
      ASSERT_EQ(std::memcmp(&row[e], &col[e], sizeof(float)), 0)
          << what << (mask ? " (mask)" : "") << " coordinate-major, value " << e % (n * d) << ": " << col[e]
          << " vs " << row[e];
      ASSERT_EQ(std::memcmp(&row[e], &ref[e], sizeof(float)), 0)
          << what << (mask ? " (mask)" : "") << " against its steps, value " << e % (n * d) << ": " << row[e]
          << " vs " << ref[e];
    }
  }
}
