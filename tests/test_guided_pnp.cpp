// DiffPIR, SKRock and DPS's published (normalised) step against FP64 hand computations of one step, against the
// exact posterior of a mixture prior (mixture_posterior), for bit-identity across thread counts and batch splits,
// and for finiteness where the likelihood form of DPS diverges. DiffPIR, both DPS steps and SKRock at its default
// step are biased: their distance to the exact posterior is printed (README, "Scores against the exact posterior"),
// not asserted; what is asserted of their whole runs is that they follow the law of their own algorithms (against
// FP64 runs of the algorithms from their formulas: ds::testing::expect_same_law).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/posterior.hpp>

#include "kernels/rng.cuh"
#include "reference/guided_helpers.hpp"
#include "reference/helpers.hpp"

namespace ds = diffsample;
using ds::testing::exact_with_counts;
using ds::testing::options;
using ds::testing::replicate;

namespace {

ds::execution cpu() { return {ds::executor::cpu, nullptr}; }

struct problem {
  ds::gaussian_mixture prior;
  ds::linear_observation observation;
};

ds::guided_problems as_problems(const ds::linear_observation& o) { return ds::testing::replicate(o, 1); }

std::vector<float> run(const ds::gaussian_mixture& prior, const ds::guided_problems& g, const ds::guided_options& o,
                       ds::executor where = ds::executor::cpu) {
  const std::int64_t count = g.problems * o.particles * prior.dim();
  std::vector<float> x(static_cast<std::size_t>(count), NAN);
  ds::guided_outputs out;
  if (where == ds::executor::cuda) {
    ds::testing::device_buffer<float> dx(x);
    out.samples = dx.ptr;
    EXPECT_EQ(ds::guided_sample(prior, out, g, o, {where, nullptr}).ran, where);
    return dx.download();
  }
  out.samples = x.data();
  EXPECT_EQ(ds::guided_sample(prior, out, g, o, cpu()).ran, where);
  return x;
}

std::int64_t non_finite(const std::vector<float>& x) {
  std::int64_t n = 0;
  for (float v : x) n += !std::isfinite(v);
  return n;
}

// Values that are non-finite or beyond 1e3 (far outside every test prior here).
std::int64_t diverged(const std::vector<float>& x) {
  std::int64_t n = 0;
  for (float v : x) n += !(std::abs(v) <= 1e3f);
  return n;
}

// --- FP64 references of the formulas (isotropic mixtures) --------------------------------------------------------

// Vector-valued views of ds::testing::iso_posterior64 (tests/reference/guided_helpers.hpp, the FP64 posterior the
// TMPD, DDRM and DCPS references use too): the denoiser and J u at a channel, the prior's score; and the prior's
// weights, means (K x d) and variances in FP64.
struct mixture64 {
  mutable ds::testing::iso_posterior64 post;
  std::vector<double> w, mu, v;
  int d;
  explicit mixture64(const ds::gaussian_mixture& m)
      : post(m), w(m.weights()), mu(m.means()), v(m.variances()), d(int(m.dim())) {}

  std::vector<double> denoiser(const std::vector<double>& x, double a, double s) const {
    post.at(x.data(), a, s);
    return post.m;
  }
  std::vector<double> jvp(const std::vector<double>& x, const std::vector<double>& u, double a, double s) const {
    post.at(x.data(), a, s);
    std::vector<double> out(u.size());
    post.jvp(u.data(), out.data());
    return out;
  }
  // grad log p(x) of the prior itself.
  std::vector<double> score(const std::vector<double>& x) const {
    post.at(x.data(), 1.0, 0.0);
    std::vector<double> g(x.size());
    post.score(g.data());
    return g;
  }
};

std::vector<double> normals(std::uint64_t seed, std::uint64_t id, std::uint64_t step, int d) {
  std::vector<double> z(d);
  ds::kernels::philox rng(seed, id, step);
  rng.normals(d, [&](int j, float v) { z[j] = v; });
  return z;
}

// A small problem for the one-step references: 3 isotropic components in d = 3, a dense 2 x 3 A.
problem small_problem(double sigma_y) {
  problem p{ds::gaussian_mixture(3, {0.2, 0.5, 0.3}, {-1.0, 0.5, 0.0, 1.5, -0.5, 1.0, 0.0, 2.0, -1.0}, {0.5, 1.0, 0.8}),
            {}};
  p.observation.d_x = 3;
  p.observation.d_y = 2;
  p.observation.A = {1.0, 0.5, -0.3, 0.2, -1.0, 0.7};
  p.observation.sigma_y = sigma_y;
  p.observation.y = {0.8, -1.1};
  return p;
}

std::vector<double> residual(const ds::linear_observation& o, const std::vector<double>& x) {
  std::vector<double> r(o.d_y);
  for (std::int64_t i = 0; i < o.d_y; ++i) {
    r[i] = o.y[i];
    for (std::int64_t j = 0; j < o.d_x; ++j) r[i] -= o.A[i * o.d_x + j] * x[j];
  }
  return r;
}

std::vector<double> adjoint(const ds::linear_observation& o, const std::vector<double>& r) {
  std::vector<double> v(o.d_x, 0.0);
  for (std::int64_t i = 0; i < o.d_y; ++i)
    for (std::int64_t j = 0; j < o.d_x; ++j) v[j] += o.A[i * o.d_x + j] * r[i];
  return v;
}

// The FP32 output of one step against its FP64 reference: |got - want| <= 1e-4 (1 + |want|) per coordinate. The
// step is a handful of FP32 operations on O(1) values (relative rounding ~1e-7 each); 1e-4 leaves room for the
// exp and division of the softmax while still failing any wrong coefficient (all of which are O(1) changes).
void expect_close(const std::vector<float>& got, const std::vector<std::vector<double>>& want, const char* what,
                  double tolerance = 1e-4) {
  const int d = int(want[0].size());
  for (std::size_t i = 0; i < want.size(); ++i)
    for (int j = 0; j < d; ++j)
      EXPECT_NEAR(got[i * d + j], want[i][j], tolerance * (1 + std::abs(want[i][j]))) << what << " particle " << i << " coordinate " << j;
}

}  // namespace

// One DiffPIR step (a grid of two times) against the formula in FP64 with the same Philox normals:
// x = s_0 z_0, m = m(x), rho = lambda sigma_y^2 a^2 / s^2, x0 = (A^T A + rho / 2 I)^-1 (A^T y + rho / 2 m) (solved here
// in the d_x-dimensional normal equations, not in the library's d_y-dimensional Woodbury form), x' = a' x0 + s'
// (sqrt(1 - zeta) (x - a x0) / s + sqrt(zeta) z_1). Seen to fail with rho's sigma_y^2 dropped (errors of 0.02 to 0.3).
TEST(GuidedPnp, DiffpirStepMatchesFp64Formula) {
  const problem p = small_problem(0.4);
  const mixture64 m(p.prior);
  ds::guided_options o = options(ds::guided_sampler::diffpir, 8, 1, 5);
  o.diffpir_zeta = 0.3;
  o.diffpir_lambda = 2.5;
  o.schedule.with_times({0.6, 0.45});
  const std::vector<ds::schedule_point> pts = o.schedule.points(1);
  const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s, sy = p.observation.sigma_y;
  const std::vector<float> got = run(p.prior, as_problems(p.observation), o);
  std::vector<std::vector<double>> want;
  for (std::uint64_t i = 0; i < 8; ++i) {
    std::vector<double> x = normals(5, i, 0, 3), z = normals(5, i, 1, 3);
    for (double& v : x) v *= s;
    const std::vector<double> mean = m.denoiser(x, a, s);
    const double rho = 0.5 * o.diffpir_lambda * sy * sy * a * a / (s * s);  // the weight rho_k / 2
    // Normal equations (A^T A + rho I) x0 = A^T y + rho m, 3 x 3, by Gaussian elimination.
    double M[3][4];
    const std::vector<double> aty = adjoint(p.observation, p.observation.y);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) {
        double v = r == c ? rho : 0.0;
        for (int k = 0; k < 2; ++k) v += p.observation.A[k * 3 + r] * p.observation.A[k * 3 + c];
        M[r][c] = v;
      }
      M[r][3] = aty[r] + rho * mean[r];
    }
    for (int c = 0; c < 3; ++c)
      for (int r = c + 1; r < 3; ++r) {
        const double f = M[r][c] / M[c][c];
        for (int k = c; k < 4; ++k) M[r][k] -= f * M[c][k];
      }
    std::vector<double> x0(3);
    for (int r = 2; r >= 0; --r) {
      double v = M[r][3];
      for (int c = r + 1; c < 3; ++c) v -= M[r][c] * x0[c];
      x0[r] = v / M[r][r];
    }
    std::vector<double> next(3);
    for (int j = 0; j < 3; ++j)
      next[j] = a1 * x0[j] + s1 * (std::sqrt(1 - o.diffpir_zeta) * (x[j] - a * x0[j]) / s +
                                   std::sqrt(o.diffpir_zeta) * z[j]);
    want.push_back(next);
  }
  expect_close(got, want, "diffpir");
}

// One DiffPIR step computed literally as DeepInverse's DiffPIR.forward takes it (deepinv/sampling/diffusion.py):
// images x_img in [0, 1], the diffusion on x = 2 x_img - 1 (the library's variable here; DeepInverse's clamp of x0
// to [-1, 1] left out), y_img = A x_img + sigma_img n with sigma_img the physics' noise level, rho_t = lambda_
// sigma_img^2 / sigma_t^2 with sigma_t = sqrt(1 - alpha-bar) / sqrt(alpha-bar) = s / a (the noise level of the
// [-1, 1] diffusion), the data step
// x0_img = L2().prox(x0 / 2 + 1/2, y_img, physics, gamma = 1 / (2 rho_t)) = argmin_u gamma / 2 |A u - y_img|^2 +
// 1/2 |u - x0 / 2 - 1/2|^2, x0 = 2 x0_img - 1, then eps = (x - a x0) / s and x' = a' x0 + s' (sqrt(1 - zeta) eps +
// sqrt(zeta) z). The library's problem is the same one in the diffusion's variable: y = 2 y_img - A 1 = A x +
// sigma_y n with sigma_y = 2 sigma_img. The same lambda must give the same step (FP64 reference, tolerance of
// expect_close). Seen to fail with the library's former weight rho_t instead of rho_t / 2 (the paper's prox
// argmin |y - A z|^2 + rho_t |z - m|^2): every coordinate off by 3e-4 to 5e-3 against the bound 1e-4 (1 + |x'|).
TEST(GuidedPnp, DiffpirStepIsDeepInversesStep) {
  const problem p = small_problem(0.3);
  const mixture64 m(p.prior);
  ds::guided_options o = options(ds::guided_sampler::diffpir, 8, 1, 11);
  o.diffpir_zeta = 0.3;
  o.diffpir_lambda = 7.0;  // DeepInverse's default lambda_
  o.schedule.with_times({0.55, 0.4});
  const std::vector<ds::schedule_point> pts = o.schedule.points(1);
  const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
  const ds::linear_observation& ob = p.observation;
  const int d = 3, dy = 2;
  // DeepInverse's side of the same problem: y_img = (y + A 1) / 2, sigma_img = sigma_y / 2.
  std::vector<double> y_img(dy);
  for (int i = 0; i < dy; ++i) {
    double row = 0;
    for (int j = 0; j < d; ++j) row += ob.A[i * d + j];
    y_img[i] = (ob.y[i] + row) / 2;
  }
  const double sigma_img = ob.sigma_y / 2, sigma_t = s / a;
  const double rho = o.diffpir_lambda * sigma_img * sigma_img / (sigma_t * sigma_t), gamma = 1 / (2 * rho);
  const std::vector<float> got = run(p.prior, as_problems(ob), o);
  std::vector<std::vector<double>> want;
  for (std::uint64_t i = 0; i < 8; ++i) {
    std::vector<double> x = normals(11, i, 0, d), z = normals(11, i, 1, d);
    for (double& v : x) v *= s;
    const std::vector<double> x0 = m.denoiser(x, a, s);
    // prox: (gamma A^T A + I) u = gamma A^T y_img + x0_img, by Gaussian elimination.
    double M[3][4];
    for (int r = 0; r < d; ++r) {
      double aty = 0;
      for (int k = 0; k < dy; ++k) aty += ob.A[k * d + r] * y_img[k];
      for (int c = 0; c < d; ++c) {
        double v = r == c ? 1.0 : 0.0;
        for (int k = 0; k < dy; ++k) v += gamma * ob.A[k * d + r] * ob.A[k * d + c];
        M[r][c] = v;
      }
      M[r][3] = gamma * aty + (x0[r] / 2 + 0.5);
    }
    for (int c = 0; c < d; ++c)
      for (int r = c + 1; r < d; ++r) {
        const double f = M[r][c] / M[c][c];
        for (int k = c; k < 4; ++k) M[r][k] -= f * M[c][k];
      }
    std::vector<double> u(d), next(d);
    for (int r = d - 1; r >= 0; --r) {
      double v = M[r][3];
      for (int c = r + 1; c < d; ++c) v -= M[r][c] * u[c];
      u[r] = v / M[r][r];
    }
    for (int j = 0; j < d; ++j) {
      const double x0p = 2 * u[j] - 1, eps = (x[j] - a * x0p) / s;
      next[j] = a1 * x0p + s1 * (std::sqrt(1 - o.diffpir_zeta) * eps + std::sqrt(o.diffpir_zeta) * z[j]);
    }
    want.push_back(next);
  }
  expect_close(got, want, "diffpir as DeepInverse");
}

namespace {

// The references below solve d_x x d_x systems whose condition reaches 1e14 (A^T A + w I with w ~ 1e-13): in
// quadruple precision where the compiler has it (error ~ 1e14 1e-34), else in long double.
#if defined(__SIZEOF_FLOAT128__)
using wide = __float128;
#else
using wide = long double;
#endif

// Solves M z = rhs (n x n row-major) by Gaussian elimination with partial pivoting in `wide`.
std::vector<wide> solve_wide(std::vector<wide> M, std::vector<wide> rhs, int n) {
  const auto magnitude = [](wide v) { return v < 0 ? -v : v; };
  for (int q = 0; q < n; ++q) {
    int pivot = q;
    for (int r = q + 1; r < n; ++r)
      if (magnitude(M[r * n + q]) > magnitude(M[pivot * n + q])) pivot = r;
    for (int k = 0; k < n; ++k) std::swap(M[q * n + k], M[pivot * n + k]);
    std::swap(rhs[q], rhs[pivot]);
    for (int r = q + 1; r < n; ++r) {
      const wide f = M[r * n + q] / M[q * n + q];
      for (int k = q; k < n; ++k) M[r * n + k] -= f * M[q * n + k];
      rhs[r] -= f * rhs[q];
    }
  }
  std::vector<wide> z(n);
  for (int r = n - 1; r >= 0; --r) {
    wide v = rhs[r];
    for (int q = r + 1; q < n; ++q) v -= M[r * n + q] * z[q];
    z[r] = v / M[r * n + r];
  }
  return z;
}

// Observations in d_x = 4 with more rows than A has rank (A A^T singular), and one whose A A^T is nearly singular
// (a scaled pivot of 1e-7), at sigma_y = 1e-7; the observations of repeated rows disagree.
struct rank_case {
  const char* what;
  std::int64_t d_y;
  std::vector<double> A, y;
};
std::vector<rank_case> more_rows_than_rank() {
  return {{"6 x 4, rows 5 and 6 repeat rows 1 and 3", 6,
           {1, 2, 0, -1, 0, 1, 3, 1, 2, -1, 1, 0, 1, 1, -2, 2, 1, 2, 0, -1, 2, -1, 1, 0},
           {0.5, -1.0, 0.8, 1.2, 0.7, 0.6}},
          {"4 x 4 of rank 2 (row 3 = row 1 + row 2, row 4 = 2 row 1 - row 2)", 4,
           {1, 2, 0, -1, 0, 1, 3, 1, 1, 3, 3, 0, 2, 3, -3, -3},
           {0.5, -1.0, -0.4, 2.1}},
          {"3 x 4, row 3 = row 1 + 1e-3 e_2", 3, {1, 2, 0, -1, 0, 1, 3, 1, 1, 2.001, 0, -1}, {0.5, -1.0, 0.5}}};
}

ds::linear_observation as_observation(const rank_case& c, double sigma_y) {
  ds::linear_observation obs;
  obs.d_x = 4;
  obs.d_y = c.d_y;
  obs.A = c.A;
  obs.y = c.y;
  obs.sigma_y = sigma_y;
  return obs;
}

// (c A^T A + tau I)^-1 (A^T b + tau m) in `wide` (d_x = 4): DiffPIR's x0 with c = 1, tau = w, b = y; Pi-GDM's
// A^T (c A A^T + tau I)^-1 b with m = 0 (the push-through identity), both without a d_y x d_y matrix.
std::vector<wide> regularised_solve(const rank_case& k, double c, double tau, const std::vector<double>& b,
                                    const std::vector<double>& m) {
  std::vector<wide> M(16), rhs(4);
  for (int r = 0; r < 4; ++r) {
    for (int q = 0; q < 4; ++q) {
      wide v = r == q ? wide(tau) : wide(0);
      for (std::int64_t o = 0; o < k.d_y; ++o) v += wide(c) * wide(k.A[o * 4 + r]) * wide(k.A[o * 4 + q]);
      M[r * 4 + q] = v;
    }
    wide v = wide(tau) * wide(m[r]);
    for (std::int64_t o = 0; o < k.d_y; ++o) v += wide(k.A[o * 4 + r]) * wide(b[o]);
    rhs[r] = v;
  }
  return solve_wide(M, rhs, 4);
}

}  // namespace

// DiffPIR's data step where A A^T is singular (more rows than rank) or nearly so, at sigma_y = 1e-7 (the cases of
// more_rows_than_rank). The regularised solve x0 = (A^T A + w I)^-1 (A^T y + w m), w = lambda sigma_y^2 a^2 /
// (2 s^2) ~ 1e-13, is well defined for any A, but A A^T + w I is singular to working precision. One step (zeta =
// 0.3) against the solve in the d_x-dimensional form in quadruple precision, to 1e-5 (1 + |x'|) per coordinate
// (measured 6e-8: FP32 rounding). Seen to fail before the observation was reduced to orthogonal rows: the first two
// refused ("problems: the predictive covariance S: matrix not numerically positive definite"), the third off by up
// to 0.12 (1 + |x'|) (its FP32 table (A A^T + w I)^-1 held entries ~1e13); at sigma_y = 1e-5 the first two ran, off
// by up to 73 and 3.9e3 (1 + |x'|).
TEST(GuidedPnp, DiffpirDataStepWithMoreRowsThanRankAtASmallSigmaY) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const mixture64 m(prior);
  for (const rank_case& c : more_rows_than_rank()) {
    const ds::linear_observation obs = as_observation(c, 1e-7);
    ds::guided_options o = options(ds::guided_sampler::diffpir, 8, 1, 9);
    o.diffpir_zeta = 0.3;
    o.schedule.with_times({0.5, 0.4});
    const std::vector<ds::schedule_point> pts = o.schedule.points(1);
    const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
    const double w = 0.5 * o.diffpir_lambda * obs.sigma_y * obs.sigma_y * a * a / (s * s);
    std::vector<float> got;
    try {
      got = run(prior, as_problems(obs), o);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.what << ": " << e.what();
      continue;
    }
    std::vector<std::vector<double>> want;
    for (std::uint64_t i = 0; i < 8; ++i) {
      std::vector<double> x = normals(9, i, 0, 4), z = normals(9, i, 1, 4);
      for (double& v : x) v *= s;
      const std::vector<wide> x0 = regularised_solve(c, 1.0, w, c.y, m.denoiser(x, a, s));
      std::vector<double> next(4);
      for (int j = 0; j < 4; ++j)
        next[j] = a1 * double(x0[j]) + s1 * (std::sqrt(1 - o.diffpir_zeta) * (x[j] - a * double(x0[j])) / s +
                                             std::sqrt(o.diffpir_zeta) * z[j]);
      want.push_back(next);
    }
    expect_close(got, want, c.what, 1e-5);
  }
}

// Pi-GDM's step on the same observations: the DDPM draw c_m m + c_x x + sig z (as the DPS test below) plus
// (c_m s^2 / a) J A^T (r^2 A A^T + sigma_y^2 I)^-1 (y - A m), r^2 = s^2 / (a^2 + s^2), the guidance computed as
// (r^2 A^T A + sigma_y^2 I)^-1 A^T (y - A m) in quadruple precision; tolerance 1e-4 (1 + |x'|) (expect_close's).
// Seen to fail before the reduction: the first two refused as DiffPIR's, the third off by up to 0.12 (1 + |x'|).
TEST(GuidedPnp, PigdmStepWithMoreRowsThanRankAtASmallSigmaY) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const mixture64 m(prior);
  for (const rank_case& c : more_rows_than_rank()) {
    const ds::linear_observation obs = as_observation(c, 1e-7);
    ds::guided_options o = options(ds::guided_sampler::pigdm, 8, 1, 11);
    o.schedule.with_times({0.5, 0.4});
    const std::vector<ds::schedule_point> pts = o.schedule.points(1);
    const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
    const double rho = a / a1, v = s * s - rho * rho * s1 * s1;
    const double cx = rho * s1 * s1 / (s * s), cm = a1 * v / (s * s), sig = std::sqrt(s1 * s1 * v / (s * s));
    const double r2 = s * s / (a * a + s * s);
    std::vector<float> got;
    try {
      got = run(prior, as_problems(obs), o);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.what << ": " << e.what();
      continue;
    }
    std::vector<std::vector<double>> want;
    for (std::uint64_t i = 0; i < 8; ++i) {
      std::vector<double> x = normals(11, i, 0, 4), z = normals(11, i, 1, 4);
      for (double& t : x) t *= s;
      const std::vector<double> mean = m.denoiser(x, a, s);
      const std::vector<wide> g =
          regularised_solve(c, r2, obs.sigma_y * obs.sigma_y, residual(obs, mean), std::vector<double>(4, 0.0));
      const std::vector<double> jv = m.jvp(x, {double(g[0]), double(g[1]), double(g[2]), double(g[3])}, a, s);
      std::vector<double> next(4);
      for (int j = 0; j < 4; ++j)
        next[j] = cm * mean[j] + cx * x[j] + sig * z[j] + o.guidance_scale * (cm * s * s / a) * jv[j];
      want.push_back(next);
    }
    expect_close(got, want, c.what);
  }
}

// TMPD's step on the same observations: the DDPM draw c_m m + c_x x + sig z plus (c_m s^2 / a) J A^T (A C A^T +
// sigma_y^2 I)^-1 (y - A m) with J = (a / s^2) C, C = Cov(x0 | x) (from the reference's JVPs), the guidance computed
// as (C A^T A + sigma_y^2 I)^-1 C A^T (y - A m) in quadruple precision (no d_y x d_y matrix); tolerance 1e-4
// (1 + |x'|) (expect_close's). Seen to fail before TMPD ran the reduced problem: every sample NaN for the first two
// (the per-particle Cholesky of A C A^T + sigma_y^2 I failed; nothing was refused).
TEST(GuidedPnp, TmpdStepWithMoreRowsThanRankAtASmallSigmaY) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const mixture64 m(prior);
  for (const rank_case& c : more_rows_than_rank()) {
    const ds::linear_observation obs = as_observation(c, 1e-7);
    ds::guided_options o = options(ds::guided_sampler::tmpd, 8, 1, 13);
    o.schedule.with_times({0.5, 0.4});
    const std::vector<ds::schedule_point> pts = o.schedule.points(1);
    const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
    const double rho = a / a1, v = s * s - rho * rho * s1 * s1;
    const double cx = rho * s1 * s1 / (s * s), cm = a1 * v / (s * s), sig = std::sqrt(s1 * s1 * v / (s * s));
    const double tau = obs.sigma_y * obs.sigma_y;
    std::vector<float> got;
    try {
      got = run(prior, as_problems(obs), o);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.what << ": " << e.what();
      continue;
    }
    std::vector<std::vector<double>> want;
    for (std::uint64_t i = 0; i < 8; ++i) {
      std::vector<double> x = normals(13, i, 0, 4), z = normals(13, i, 1, 4);
      for (double& t : x) t *= s;
      const std::vector<double> mean = m.denoiser(x, a, s);
      const std::vector<double> res = residual(obs, mean);
      std::vector<wide> atr(4, wide(0));  // A^T (y - A m) in `wide`: in FP64 it would leave range(A^T) by 1e-16
      for (int q = 0; q < 4; ++q)
        for (std::int64_t k = 0; k < c.d_y; ++k) atr[q] += wide(c.A[k * 4 + q]) * wide(res[k]);
      std::vector<double> C(16);  // Cov(x0 | x) = (s^2 / a) J, column by column
      for (int q = 0; q < 4; ++q) {
        std::vector<double> e(4, 0.0);
        e[q] = 1;
        const std::vector<double> col = m.jvp(x, e, a, s);
        for (int r = 0; r < 4; ++r) C[r * 4 + q] = s * s / a * col[r];
      }
      std::vector<wide> M(16), rhs(4, wide(0));
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) {
          wide acc = r == q ? wide(tau) : wide(0);
          for (int l = 0; l < 4; ++l)
            for (std::int64_t k = 0; k < c.d_y; ++k) acc += wide(C[r * 4 + l]) * wide(c.A[k * 4 + l]) * wide(c.A[k * 4 + q]);
          M[r * 4 + q] = acc;
          rhs[r] += wide(C[r * 4 + q]) * atr[q];
        }
      const std::vector<wide> g = solve_wide(M, rhs, 4);  // C A^T (A C A^T + tau I)^-1 (y - A m)
      std::vector<double> next(4);
      for (int j = 0; j < 4; ++j)
        next[j] = cm * mean[j] + cx * x[j] + sig * z[j] + o.guidance_scale * cm * double(g[j]);
      want.push_back(next);
    }
    expect_close(got, want, c.what);
  }
}

// One DPS step in the published form against FP64: x = s_0 z_0, m = m(x), r = y - A m, the DDPM draw
// c_m m + c_x x + sig z_1 (c_x = rho s'^2 / s^2, c_m = a' v / s^2, sig^2 = s'^2 v / s^2, rho = a / a',
// v = s^2 - rho^2 s'^2) plus zeta J A^T r / |r|, J = (a / s^2) Cov(x0 | x) computed from the mixture's posterior
// moments. Seen to fail with the normalisation by |r| dropped.
TEST(GuidedPnp, NormalisedDpsStepMatchesFp64Formula) {
  const problem p = small_problem(0.3);
  const mixture64 m(p.prior);
  ds::guided_options o = options(ds::guided_sampler::dps, 8, 1, 7);
  o.dps_step = ds::dps_step_form::normalised;
  o.guidance_scale = 0.7;
  o.schedule.with_times({0.5, 0.4});
  const std::vector<ds::schedule_point> pts = o.schedule.points(1);
  const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
  const double rho = a / a1, v = s * s - rho * rho * s1 * s1;
  const double cx = rho * s1 * s1 / (s * s), cm = a1 * v / (s * s), sig = std::sqrt(s1 * s1 * v / (s * s));
  const std::vector<float> got = run(p.prior, as_problems(p.observation), o);
  std::vector<std::vector<double>> want;
  for (std::uint64_t i = 0; i < 8; ++i) {
    std::vector<double> x = normals(7, i, 0, 3), z = normals(7, i, 1, 3);
    for (double& t : x) t *= s;
    const std::vector<double> mean = m.denoiser(x, a, s);
    const std::vector<double> r = residual(p.observation, mean);
    const double norm = std::sqrt(r[0] * r[0] + r[1] * r[1]);
    const std::vector<double> jv = m.jvp(x, adjoint(p.observation, r), a, s);
    std::vector<double> next(3);
    for (int j = 0; j < 3; ++j) next[j] = cm * mean[j] + cx * x[j] + sig * z[j] + o.guidance_scale * jv[j] / norm;
    want.push_back(next);
  }
  expect_close(got, want, "dps normalised");
}

// One SKRock iteration against FP64 with the coefficients from the closed forms T_s(w) = cosh(s arccosh w),
// T_s'(w) = s sinh(s arccosh w) / sqrt(w^2 - 1) (the library uses the three-term recurrences): w0 = 1 + eta / s^2,
// w1 = T_s(w0) / T_s'(w0); X_1 = X_0 + mu_1 h b(X_0 + nu_1 c xi) + kappa_1 c xi, X_j = mu_j h b(X_{j-1}) +
// nu_j X_{j-1} + kappa_j X_{j-2}; h = fraction ((s - 1/2)^2 (2 - 4 eta / 3) - 3/2) / (max 1/v_k + lambda_max(A^T A) /
// sigma_y^2); b = prior score + A^T (y - A x) / sigma_y^2; X_0 an exact prior draw with the kernel's uniform and
// normals. The tolerance is 1e-3 relative: s = 5 stages chain five drift evaluations in FP32 at steps h |b| of
// order 1. Seen to fail with kappa_1 replaced by nu_1 and with the likelihood gradient's 1 / sigma_y^2 dropped.
TEST(GuidedPnp, SkrockIterationMatchesFp64Formula) {
  const problem p = small_problem(0.6);
  const mixture64 m(p.prior);
  const int stages = 5;
  ds::guided_options o = options(ds::guided_sampler::skrock, 8, 1, 9);
  o.skrock_stages = stages;
  o.skrock_eta = 0.1;
  o.skrock_step_fraction = 0.3;
  const std::vector<float> got = run(p.prior, as_problems(p.observation), o);
  const double eta = o.skrock_eta, w0 = 1 + eta / (stages * stages);
  auto T = [](int s, double w) { return std::cosh(s * std::acosh(w)); };
  const double w1 = T(stages, w0) / (stages * std::sinh(stages * std::acosh(w0)) / std::sqrt(w0 * w0 - 1));
  const double mu1 = w1 / w0, nu1 = stages * w1 / 2, kappa1 = stages * w1 / w0;
  // lambda_max(A A^T) of the 2 x 2 Gram matrix.
  double g[3] = {0, 0, 0};
  for (int j = 0; j < 3; ++j) {
    g[0] += p.observation.A[j] * p.observation.A[j];
    g[1] += p.observation.A[j] * p.observation.A[3 + j];
    g[2] += p.observation.A[3 + j] * p.observation.A[3 + j];
  }
  const double lmax = 0.5 * (g[0] + g[2] + std::sqrt((g[0] - g[2]) * (g[0] - g[2]) + 4 * g[1] * g[1]));
  const double sy2 = p.observation.sigma_y * p.observation.sigma_y;
  const double L = 1 / 0.5 + lmax / sy2;
  const double h = o.skrock_step_fraction * ((stages - 0.5) * (stages - 0.5) * (2 - 4 * eta / 3) - 1.5) / L;
  const double c = std::sqrt(2 * h);
  auto drift = [&](const std::vector<double>& x) {
    std::vector<double> b = m.score(x);
    const std::vector<double> r = residual(p.observation, x), at = adjoint(p.observation, r);
    for (int j = 0; j < 3; ++j) b[j] += at[j] / sy2;
    return b;
  };
  std::vector<std::vector<double>> want;
  for (std::uint64_t i = 0; i < 8; ++i) {
    // The prior draw: one uniform picks the component by the cumulative weights, then the normals.
    ds::kernels::philox rng(9, i, 0);
    const float u = rng.uniform();
    int k = 0;
    double cumulative = m.w[0];
    while (k < 2 && u > cumulative) cumulative += m.w[++k];
    std::vector<double> x(3);
    rng.normals(3, [&](int j, float zj) { x[j] = m.mu[k * 3 + j] + std::sqrt(m.v[k]) * zj; });
    const std::vector<double> xi = normals(9, i, 1, 3);
    std::vector<double> point(3), old = x, cur(3);
    for (int j = 0; j < 3; ++j) point[j] = x[j] + nu1 * c * xi[j];
    const std::vector<double> b1 = drift(point);
    for (int j = 0; j < 3; ++j) cur[j] = x[j] + mu1 * h * b1[j] + kappa1 * c * xi[j];
    for (int st = 2; st <= stages; ++st) {
      const double ratio = T(st - 1, w0) / T(st, w0);
      const double mu = 2 * w1 * ratio, nu = 2 * w0 * ratio, kappa = -T(st - 2, w0) / T(st, w0);
      const std::vector<double> b = drift(cur);
      std::vector<double> next(3);
      for (int j = 0; j < 3; ++j) next[j] = mu * h * b[j] + nu * cur[j] + kappa * old[j];
      old = cur;
      cur = next;
    }
    want.push_back(cur);
  }
  const int d = 3;
  for (std::size_t i = 0; i < want.size(); ++i)
    for (int j = 0; j < d; ++j)
      EXPECT_NEAR(got[i * d + j], want[i][j], 1e-3 * (1 + std::abs(want[i][j]))) << "particle " << i << " coordinate " << j;
}

// Results are a function of (inputs, seed): the same bits with 1 or 2 CPU threads, and problem 0 of a batch of 2 (a
// different second observation) equals the same problem run alone (its particles' streams are keyed by b N + j).
TEST(GuidedPnp, BitIdenticalAcrossThreadsAndBatchSplits) {
  const problem p = small_problem(0.5);
  ds::guided_problems two = as_problems(p.observation);
  two.problems = 2;
  two.y = {0.8, -1.1, -0.4, 2.0};
  for (ds::guided_sampler s : {ds::guided_sampler::diffpir, ds::guided_sampler::skrock, ds::guided_sampler::dps}) {
    ds::guided_options o = options(s, 64, 20, 3);
    if (s == ds::guided_sampler::dps) o.dps_step = ds::dps_step_form::normalised;  // DPS's (the others refuse it)
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const std::vector<float> one_thread = run(p.prior, two, o);
    omp_set_num_threads(2);
    const std::vector<float> two_threads = run(p.prior, two, o);
    omp_set_num_threads(threads);
    EXPECT_EQ(one_thread, two_threads) << ds::to_string(s);
    const std::vector<float> alone = run(p.prior, as_problems(p.observation), o);
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), two_threads.begin())) << ds::to_string(s);
    EXPECT_EQ(non_finite(two_threads), 0) << ds::to_string(s);
  }
}

namespace {

// The d_x = 10 problem of examples/posterior_d10.json (the 25-component grid mixture, spacing 2, variance 0.25,
// equal weights; 3 measurements) with its sigma_y replaced.
problem example_d10(double sigma_y) {
  problem p{ds::grid_mixture(10, 5, 2.0, 0.25), {}};
  auto& o = p.observation;
  o.d_x = 10;
  o.d_y = 3;
  o.A.assign(30, 0.0);
  o.A[0] = 1;
  o.A[11] = 1;
  for (int j = 0; j < 10; ++j) o.A[20 + j] = 0.2;
  o.sigma_y = sigma_y;
  o.y = {1.5, -2.0, 0.4};
  return p;
}

}  // namespace

// With small sigma_y the likelihood form of DPS (a mean shift growing like 1 / sigma_y^2) diverges, the published
// normalised form (a shift of size zeta whatever sigma_y) must not: at sigma_y = 0.04 and 0.02 on the d = 10 example
// the likelihood form leaves diverged values, non-finite or beyond 1e3 (the prior's means lie within +-4; asserted, so
// that this test keeps showing the contrast), and the normalised form none. At 0.04 the likelihood form's values
// are finite, up to about 5e33: they were inf only while the CPU JVP overflowed in an intermediate sum.
TEST(GuidedPnp, NormalisedDpsStaysFiniteWhereTheLikelihoodFormDiverges) {
  for (double sigma_y : {0.04, 0.02}) {
    const problem p = example_d10(sigma_y);
    ds::guided_options o = options(ds::guided_sampler::dps, 256, 100, 11);
    const std::int64_t bad_likelihood = diverged(run(p.prior, as_problems(p.observation), o));
    o.dps_step = ds::dps_step_form::normalised;
    const std::vector<float> x = run(p.prior, as_problems(p.observation), o);
    std::printf("sigma_y = %.2f: diverged values, likelihood form %lld, normalised form %lld of %zu\n", sigma_y,
                static_cast<long long>(bad_likelihood), static_cast<long long>(diverged(x)), x.size());
    EXPECT_GT(bad_likelihood, 0) << "sigma_y " << sigma_y;
    EXPECT_EQ(diverged(x), 0) << "sigma_y " << sigma_y;
  }
}

namespace {

// Two overlapping unit-variance components at (-1.5, 0) and (1.5, 0), weights 0.3 and 0.7, observed through
// A = [0.5, 1] with sigma_y = 0.7, y = 1.2: a two-mode posterior whose modes a Langevin chain crosses easily, so that
// SKRock's stationary law, not its mixing, is what the checks see.
problem overlapping_modes() {
  problem p{ds::gaussian_mixture(2, {0.3, 0.7}, {-1.5, 0.0, 1.5, 0.0}, {1.0, 1.0}), {}};
  p.observation.d_x = 2;
  p.observation.d_y = 1;
  p.observation.A = {0.5, 1.0};
  p.observation.sigma_y = 0.7;
  p.observation.y = {1.2};
  return p;
}

struct scores {
  double weight_error = 0, weight_bound = 0, sw = 0, sw_within = 0, floor = 0, misfit = 0, misfit_exact = 0,
         misfit_se = 0;
};

// Exact posterior samples with prescribed component counts (FP64 Cholesky of each component's covariance).
std::vector<float> exact_with_counts(const ds::mixture_posterior& post, const std::vector<double>& w, std::int64_t n,
                                     unsigned seed) {
  const std::int64_t K = post.components();
  std::vector<std::int64_t> counts(K);
  std::int64_t used = 0;
  for (std::int64_t k = 0; k < K; ++k) used += counts[k] = static_cast<std::int64_t>(std::floor(w[k] * double(n)));
  for (std::int64_t i = 0; used < n; ++i, ++used) counts[i % K] += 1;
  return ds::testing::exact_with_counts(post, counts, seed);
}

// Scores of n independent samples x against the exact posterior: the largest component-weight error and its bound
// max_k 5 sqrt(w_k (1 - w_k) / n) (each recovered weight is a mean of n independent responsibilities in [0, 1],
// whose variance is at most w_k (1 - w_k)); sliced W1 (128 directions) to n exact samples, beside the floor of two
// exact sets of n; the within-component distance (to exact samples carrying x's own recovered weights); and the fit
// E[|y - A x|^2 | y] with its combined standard error.
scores score(const problem& p, const std::vector<float>& x, std::int64_t n, unsigned seed) {
  const ds::mixture_posterior post(p.prior, p.observation);
  const std::int64_t d = p.prior.dim(), K = post.components();
  scores s;
  const std::vector<double> w = ds::component_weights(post, n, x.data());
  for (std::int64_t k = 0; k < K; ++k) {
    const double wk = post.weights()[k];
    s.weight_error = std::max(s.weight_error, std::abs(w[k] - wk));
    s.weight_bound = std::max(s.weight_bound, 5 * std::sqrt(wk * (1 - wk) / double(n)));
  }
  std::vector<float> a(n * d), b(n * d);
  post.sample(a.data(), n, seed + 1);
  post.sample(b.data(), n, seed + 2);
  s.sw = ds::sliced_wasserstein(n, n, d, x.data(), a.data(), 128, 5);
  s.floor = ds::sliced_wasserstein(n, n, d, b.data(), a.data(), 128, 5);
  const std::vector<float> c = exact_with_counts(post, w, n, seed + 3);
  s.sw_within = ds::sliced_wasserstein(n, n, d, x.data(), c.data(), 128, 5);
  auto fit = [&](const std::vector<float>& v) {
    std::vector<double> f(n);
    for (std::int64_t i = 0; i < n; ++i) {
      double q = 0;
      for (std::int64_t o = 0; o < p.observation.d_y; ++o) {
        double r = p.observation.y[o];
        for (std::int64_t j = 0; j < d; ++j) r -= p.observation.A[o * d + j] * v[i * d + j];
        q += r * r;
      }
      f[i] = q;
    }
    return f;
  };
  const std::vector<double> fx = fit(x), fa = fit(a);
  s.misfit = ds::testing::mean(fx);
  s.misfit_exact = ds::testing::mean(fa);
  s.misfit_se = std::sqrt((ds::testing::variance(fx) + ds::testing::variance(fa)) / double(n));
  return s;
}

void print(const char* what, const scores& s) {
  std::printf("%s: max weight error %.4f (5 se %.4f); SW1 %.4f, within components %.4f, floor %.4f (%.2fx, %.2fx); "
              "E|y - A x|^2 %.4f vs exact %.4f (se %.4f)\n",
              what, s.weight_error, s.weight_bound, s.sw, s.sw_within, s.floor, s.sw / s.floor, s.sw_within / s.floor,
              s.misfit, s.misfit_exact, s.misfit_se);
}

}  // namespace

// SKRock at a small step reaches the exact posterior: N = 4096 independent chains (one sample each, no shared
// ancestry), 400 iterations of s = 10 stages at 0.1% of the stability bound (h = 0.049, h L = 0.17: the stationary
// variance of a Gaussian along the stiffest direction is 0.997 of the exact one, a bias far below the tolerances;
// 400 h = 19.5 of drift time, far past the mixing time of this two-mode posterior). Asserted with tolerances from the
// sample size: every component weight within 5 sqrt(w (1 - w) / N); the fit along A within 4 combined standard
// errors; the within-component sliced W1 within 2x the exact-vs-exact floor at N (as the SMC tests). At fractions
// 0.005 (the default) and 0.02 the bias is printed, not asserted (at 0.02 the fit is 0.29 against 0.40: the
// variance along A shrinks as the analysis of a Gaussian predicts, 0.69). Seen to fail with the likelihood
// gradient's 1 / sigma_y^2 dropped from the drift and with the stage-1 noise kappa_1 c xi scaled by 1.3 (figures
// in the commit message).
TEST(GuidedPnp, SkrockAtASmallStepReachesTheExactPosterior) {
  const problem p = overlapping_modes();
  const std::int64_t N = 4096;
  ds::guided_options o = options(ds::guided_sampler::skrock, N, 400, 21);
  o.skrock_step_fraction = 0.001;
  const scores s = score(p, run(p.prior, as_problems(p.observation), o), N, 100);
  print("skrock fraction 0.001", s);
  EXPECT_LE(s.weight_error, s.weight_bound);
  EXPECT_NEAR(s.misfit, s.misfit_exact, 4 * s.misfit_se);
  EXPECT_LE(s.sw_within, 2 * s.floor);
  for (double fraction : {0.005, 0.02}) {
    o.skrock_step_fraction = fraction;
    o.steps = 100;
    const std::string what = "skrock fraction " + std::to_string(fraction);
    print(what.c_str(), score(p, run(p.prior, as_problems(p.observation), o), N, 200));
  }
}

namespace {

// The baselines' algorithms in FP64 from their formulas (README "DPS and Pi-GDM", "DiffPIR", "SKRock"), not from the
// kernels or the host's tables: mixture64's exact denoiser, J u and score; the grid of options.schedule.points; the
// DDPM kernel, DiffPIR's proximal step (in the d_x-dimensional normal equations) and re-noising in the published
// form, SKRock's step and Chebyshev coefficients (closed forms, as SkrockIterationMatchesFp64Formula) written out
// here; mt19937_64 normals and SKRock's component draws. n independent particles; returns n x d values.
std::vector<double> baseline_reference(const problem& p, const ds::guided_options& o, std::int64_t n,
                                       std::uint64_t seed) {
  const mixture64 m(p.prior);
  const ds::linear_observation& ob = p.observation;
  const int d = m.d;
  const std::int64_t K = o.steps;
  const double sy2 = ob.sigma_y * ob.sigma_y;
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> out(static_cast<std::size_t>(n * d)), x(d), z(d);
  auto draw = [&](std::vector<double>& v) {
    for (double& e : v) e = normal(gen);
  };
  if (o.sampler == ds::guided_sampler::skrock) {
    const int st = int(o.skrock_stages);
    const double eta = o.skrock_eta, w0 = 1 + eta / (st * st);
    auto T = [](int j, double w) { return std::cosh(j * std::acosh(w)); };
    const double w1 = T(st, w0) / (st * std::sinh(st * std::acosh(w0)) / std::sqrt(w0 * w0 - 1));
    std::vector<double> mu(st + 1), nu(st + 1), kappa(st + 1);
    mu[1] = w1 / w0, nu[1] = st * w1 / 2, kappa[1] = st * w1 / w0;
    for (int j = 2; j <= st; ++j) {
      mu[j] = 2 * w1 * T(j - 1, w0) / T(j, w0);
      nu[j] = 2 * w0 * T(j - 1, w0) / T(j, w0);
      kappa[j] = -T(j - 2, w0) / T(j, w0);
    }
    // lambda_max(A^T A) by power iteration from normals; L = max_k 1 / v_k + lambda_max / sigma_y^2.
    std::vector<double> e(d), ae(ob.d_y);
    draw(e);
    double lmax = 0;
    for (int it = 0; it < 1000; ++it) {
      double norm = 0;
      for (double v : e) norm += v * v;
      for (double& v : e) v /= std::sqrt(norm);
      for (std::int64_t l = 0; l < ob.d_y; ++l) {
        ae[l] = 0;
        for (int j = 0; j < d; ++j) ae[l] += ob.A[l * d + j] * e[j];
      }
      const std::vector<double> next = adjoint(ob, ae);  // A^T A e
      lmax = 0;
      for (int j = 0; j < d; ++j) lmax += e[j] * next[j];
      e = next;
    }
    double curvature = 0;
    for (double v : m.v) curvature = std::max(curvature, 1 / v);
    const double h = o.skrock_step_fraction * ((st - 0.5) * (st - 0.5) * (2 - 4 * eta / 3) - 1.5) /
                     (curvature + lmax / sy2);
    const double c = std::sqrt(2 * h);
    auto drift = [&](const std::vector<double>& at) {
      std::vector<double> b = m.score(at);
      const std::vector<double> g = adjoint(ob, residual(ob, at));
      for (int j = 0; j < d; ++j) b[j] += g[j] / sy2;
      return b;
    };
    std::discrete_distribution<int> pick(m.w.begin(), m.w.end());
    std::vector<double> old(d), cur(d), point(d);
    for (std::int64_t i = 0; i < n; ++i) {
      const int k = pick(gen);
      draw(z);
      for (int j = 0; j < d; ++j) x[j] = m.mu[k * d + j] + std::sqrt(m.v[k]) * z[j];
      for (std::int64_t it = 0; it < K; ++it) {
        draw(z);  // xi
        for (int j = 0; j < d; ++j) point[j] = x[j] + nu[1] * c * z[j];
        std::vector<double> b = drift(point);
        for (int j = 0; j < d; ++j) cur[j] = x[j] + mu[1] * h * b[j] + kappa[1] * c * z[j];
        old = x;
        for (int j = 2; j <= st; ++j) {
          b = drift(cur);
          for (int q = 0; q < d; ++q) point[q] = mu[j] * h * b[q] + nu[j] * cur[q] + kappa[j] * old[q];
          old = cur;
          cur = point;
        }
        x = cur;
      }
      std::copy(x.begin(), x.end(), out.begin() + i * d);
    }
    return out;
  }
  const std::vector<ds::schedule_point> pts = o.schedule.points(K);
  const bool diffpir = o.sampler == ds::guided_sampler::diffpir;
  // DiffPIR: per step (A^T A + w_k I)^-1, w_k = lambda sigma_y^2 a^2 / (2 s^2), solved in `wide` column by column
  // (its condition number is at most 1 + lambda_max(A^T A) / w_0: 4.5e4 on the instance below).
  std::vector<std::vector<double>> inverse(diffpir ? K : 0);
  std::vector<double> weight(diffpir ? K : 0);
  const std::vector<double> aty = adjoint(ob, ob.y);
  for (std::int64_t k = 0; k < (diffpir ? K : 0); ++k) {
    const double a = pts[k].a, s = pts[k].s;
    weight[k] = 0.5 * o.diffpir_lambda * sy2 * a * a / (s * s);
    std::vector<wide> M(d * d);
    for (int r = 0; r < d; ++r)
      for (int q = 0; q < d; ++q) {
        double v = r == q ? weight[k] : 0.0;
        for (std::int64_t l = 0; l < ob.d_y; ++l) v += ob.A[l * d + r] * ob.A[l * d + q];
        M[r * d + q] = wide(v);
      }
    inverse[k].resize(d * d);
    for (int q = 0; q < d; ++q) {
      std::vector<wide> unit(d, wide(0));
      unit[q] = wide(1);
      const std::vector<wide> col = solve_wide(M, unit, d);
      for (int r = 0; r < d; ++r) inverse[k][r * d + q] = double(col[r]);
    }
  }
  std::vector<double> x0(d), rhs(d);
  for (std::int64_t i = 0; i < n; ++i) {
    draw(z);
    for (int j = 0; j < d; ++j) x[j] = pts[0].s * z[j];
    for (std::int64_t k = 0; k < K; ++k) {
      const double a = pts[k].a, s = pts[k].s, a1 = pts[k + 1].a, s1 = pts[k + 1].s;
      const std::vector<double> mean = m.denoiser(x, a, s);
      draw(z);
      if (diffpir) {
        // x0 = argmin |y - A u|^2 + w_k |u - m|^2, then x' = a' x0 + s' (sqrt(1 - zeta) (x - a x0) / s + sqrt(zeta) z).
        for (int j = 0; j < d; ++j) rhs[j] = aty[j] + weight[k] * mean[j];
        for (int r = 0; r < d; ++r) {
          x0[r] = 0;
          for (int q = 0; q < d; ++q) x0[r] += inverse[k][r * d + q] * rhs[q];
        }
        const double zeta = o.diffpir_zeta;
        for (int j = 0; j < d; ++j)
          x[j] = a1 * x0[j] + s1 * (std::sqrt(1 - zeta) * (x[j] - a * x0[j]) / s + std::sqrt(zeta) * z[j]);
        continue;
      }
      // DPS: the DDPM draw c_m m + c_x x + sig z (backward64) plus shift J A^T (y - A m),
      // shift = zeta (c_m s^2 / a) / sigma_y^2 (likelihood) or zeta / |y - A m| (normalised).
      const ds::testing::ddpm_coefficients c = ds::testing::backward64(a, s, a1, s1, o.ddim, o.eta);
      const double cx = c.cx, cm = c.cm, sig = c.sig;
      const std::vector<double> r = residual(ob, mean);
      double shift = o.guidance_scale * cm * s * s / a / sy2;
      if (o.dps_step == ds::dps_step_form::normalised) {
        double norm2 = 0;
        for (double e : r) norm2 += e * e;
        shift = norm2 > 0 ? o.guidance_scale / std::sqrt(norm2) : 0.0;
      }
      const std::vector<double> jv = m.jvp(x, adjoint(ob, r), a, s);
      for (int j = 0; j < d; ++j) x[j] = cm * mean[j] + cx * x[j] + shift * jv[j] + sig * z[j];
    }
    std::copy(x.begin(), x.end(), out.begin() + i * d);
  }
  return out;
}


}  // namespace

// The baselines on a seed-002-style instance (the 25-component grid mixture of spacing 8 at d = 10, unit variances,
// random weights, one random measurement with sigma_y = 1.39): N = 2048 samples of each, 100 steps, default
// settings. Their scores against the exact posterior are printed for the README, not asserted: all four are biased
// by design here (weight errors 0.39 to 0.94; SKRock's chains keep the basins of their prior draws, modes 8 apart).
// Asserted: each run follows the law of its own algorithm. Against baseline_reference (the algorithm in FP64 from
// its formulas, NR = 2048 particles, mt19937_64 normals), ds::testing::expect_same_law: every component weight
// recovered under the exact posterior, every coordinate's mean and the mean of log |y - A x|^2 within 5 combined
// standard errors, the misfit's distribution by a two-sample Kolmogorov-Smirnov test at 1e-6. Those standard errors
// need independent particles: none of these samplers resamples, and each particle reads only its own Philox stream
// and the shared tables; the first 256 particles of each run are asserted equal, bit for bit, to a run of 256. At
// this sigma_y the likelihood form of DPS does not diverge, so it is compared as the others. Measured (largest z of
// the weights, of the log misfit; scaled KS distance): DiffPIR 2.39, 1.19, 0.94; DPS likelihood 2.71, 0.47, 0.84;
// DPS normalised 1.74, 1.43, 0.53; SKRock 1.49, 0.99, 1.00. Seen failing with the run's coefficients off the
// reference's: DPS's guidance_scale at 1.2 or 1.3 for 1 (normalised form: log misfit z 8.7 and 19.4, KS 4.5 and
// 8.7; the likelihood form fails at 2: z 12.1, KS 6.4, passes at 1.3: z 4.3), DiffPIR's lambda at 1.3 times (z 5.8,
// KS 3.2; 1.15 times passes at z 3.5), SKRock's likelihood gradient 1.3 and 1.15 times (sigma_y^2 divided so: z 7.5
// and 4.5, KS 4.4 and 2.8). Not resolved here: SKRock's step fraction (chains that stay in their basins reach
// nearly the same law at 0.005 and 0.05) and DiffPIR's zeta at 0.2 for 0.1.
TEST(GuidedPnp, BaselinesScoredAgainstTheExactPosterior) {
  const std::int64_t d = 10, N = 2048, NR = 2048, few = 256;
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<double> u(0.1, 1.0), us(0.5, 1.5);
  std::normal_distribution<double> z;
  std::vector<double> w(25);
  for (auto& v : w) v = u(gen);
  problem p{ds::grid_mixture(d, 5, 8.0, 1.0, w), {}};
  p.observation.d_x = d;
  p.observation.d_y = 1;
  p.observation.A.resize(d);
  for (auto& a : p.observation.A) a = z(gen);
  p.observation.sigma_y = us(gen);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  const int k = pick(gen);
  double y = 0;
  for (std::int64_t j = 0; j < d; ++j) y += p.observation.A[j] * (p.prior.means()[k * d + j] + z(gen));
  p.observation.y = {y + p.observation.sigma_y * z(gen)};
  ASSERT_EQ(p.prior.variances().size(), w.size());  // isotropic components (mixture64's reading)
  const ds::mixture_posterior post(p.prior, p.observation);
  struct row {
    const char* name;
    ds::guided_sampler s;
    ds::dps_step_form form;
  };
  std::uint64_t reference_seed = 50;
  for (const row& r : {row{"diffpir", ds::guided_sampler::diffpir, ds::dps_step_form::likelihood},
                       row{"dps likelihood", ds::guided_sampler::dps, ds::dps_step_form::likelihood},
                       row{"dps normalised", ds::guided_sampler::dps, ds::dps_step_form::normalised},
                       row{"skrock", ds::guided_sampler::skrock, ds::dps_step_form::likelihood}}) {
    ds::guided_options o = options(r.s, N, 100, 41);
    o.dps_step = r.form;
    const std::vector<float> x = run(p.prior, as_problems(p.observation), o);
    ASSERT_EQ(non_finite(x), 0) << r.name;
    print(r.name, score(p, x, N, 300));
    // No particle reads another: the first `few` particles of the run are, bit for bit, a run of `few`.
    ds::guided_options o_few = o;
    o_few.particles = few;
    const std::vector<float> x_few = run(p.prior, as_problems(p.observation), o_few);
    EXPECT_TRUE(std::equal(x_few.begin(), x_few.end(), x.begin())) << r.name;
    // The algorithm in FP64, NR particles of its own.
    const std::vector<double> ref64 = baseline_reference(p, o, NR, ++reference_seed);
    for (double v : ref64) ASSERT_TRUE(std::isfinite(v)) << r.name << " reference";
    ds::testing::expect_same_law(r.name, post, p.observation, x, N, ref64, NR);
  }
}

TEST(GuidedPnp, RejectsInvalidOptions) {
  const problem p = small_problem(0.5);
  const ds::guided_problems g = as_problems(p.observation);
  std::vector<float> x(8 * 3);
  ds::guided_outputs out;
  out.samples = x.data();
  auto expect_refused = [&](ds::guided_options o, const char* field) {
    try {
      ds::guided_sample(p.prior, out, g, o, cpu());
      ADD_FAILURE() << field << " accepted";
    } catch (const ds::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  const ds::guided_options base = options(ds::guided_sampler::skrock, 8, 2, 1);
  EXPECT_NO_THROW(ds::guided_sample(p.prior, out, g, base, cpu()));
  ds::guided_options o = base;
  o.skrock_stages = 1;
  expect_refused(o, "options.skrock_stages");
  o = base;
  o.skrock_stages = 201;
  expect_refused(o, "options.skrock_stages");
  o = base;
  o.skrock_eta = 0;
  expect_refused(o, "options.skrock_eta");
  o = base;
  o.skrock_step_fraction = 1.5;
  expect_refused(o, "options.skrock_step_fraction");
  o = base;
  o.skrock_step_fraction = NAN;
  expect_refused(o, "options.skrock_step_fraction");
  o = base;
  o.sampler = ds::guided_sampler::diffpir;  // each sampler's own settings under it (the others refuse them unread)
  o.diffpir_zeta = 1.01;
  expect_refused(o, "options.diffpir_zeta: must be");
  o = base;
  o.sampler = ds::guided_sampler::diffpir;
  o.diffpir_lambda = 0;
  expect_refused(o, "options.diffpir_lambda: must be");
  o = base;
  o.sampler = ds::guided_sampler::dps;
  o.dps_step = static_cast<ds::dps_step_form>(7);
  expect_refused(o, "options.dps_step");
  o = base;
  o.sampler = static_cast<ds::guided_sampler>(9);
  expect_refused(o, "options.sampler");
  EXPECT_EQ(ds::parse_guided_sampler("diffpir"), ds::guided_sampler::diffpir);
  EXPECT_EQ(ds::parse_guided_sampler("skrock"), ds::guided_sampler::skrock);
  EXPECT_EQ(ds::parse_dps_step_form("normalised"), ds::dps_step_form::normalised);
  EXPECT_THROW(ds::parse_dps_step_form("normalized"), ds::invalid_argument);
}

// The CUDA executor runs the same functors: DiffPIR, SKRock and the normalised DPS step on the GPU against the CPU.
// Normals differ in the last bits, and no step resamples, so each trajectory stays close: at most 1% of the
// coordinates may differ by more than 1e-2 relative, and every output must be finite.
TEST(GuidedPnp, GpuMatchesTheCpu) {
  DIFFSAMPLE_REQUIRE_GPU();
  const problem p = example_d10(0.5);
  for (ds::guided_sampler s : {ds::guided_sampler::diffpir, ds::guided_sampler::skrock, ds::guided_sampler::dps}) {
    ds::guided_options o = options(s, 512, 50, 17);
    if (s == ds::guided_sampler::dps) o.dps_step = ds::dps_step_form::normalised;  // DPS's (the others refuse it)
    const std::vector<float> host = run(p.prior, as_problems(p.observation), o);
    const std::vector<float> got = run(p.prior, as_problems(p.observation), o, ds::executor::cuda);
    std::int64_t far = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << ds::to_string(s) << " " << i;
      far += std::abs(got[i] - host[i]) > 1e-2 * (1 + std::abs(host[i]));
    }
    EXPECT_LE(far, static_cast<std::int64_t>(got.size()) / 100) << ds::to_string(s);
  }
}

// DiffPIR's re-noising x' = a' x0 + s' (sqrt(1 - zeta) eps + sqrt(zeta) z) is DDIM's kernel with sigma^2 =
// zeta s'^2. With an uninformative observation (sigma_y = 1e3, so that the proximal weight lambda sigma_y^2 a^2 /
// (2 s^2) makes the proximal step a shift below 1e-6) DiffPIR is that DDIM sampler with the denoiser in place of x0,
// which approaches the prior as the steps shrink when zeta = 0 (DDIM's deterministic sampler) and stays close for a
// small zeta; a fixed
// zeta does not vanish with the step, so zeta = 1 is biased at any number of steps (measured: 8.3x the floor,
// weight error 0.055, printed in the README's DiffPIR section). Checked on the 25-component grid mixture at d = 2
// (spacing 4, unit variances, random weights), N = 4096, 500 steps, zeta = 0 and 0.1 (the default): every component
// weight of the prior within 5 sqrt(w (1 - w) / N) + 0.02 (the discretisation allowance of the SMC tests at 500
// steps) and sliced W1 to exact prior samples within 2x the exact-vs-exact floor. Seen to fail with c1 = s' / s
// (the sqrt(1 - zeta) dropped) and with c0 = a' (the - c1 a dropped): figures in the commit message.
TEST(GuidedPnp, DiffpirWithAnUninformativeObservationSamplesThePrior) {
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> u(0.1, 1.0);
  std::vector<double> w(25);
  for (auto& v : w) v = u(gen);
  const ds::gaussian_mixture prior = ds::grid_mixture(2, 5, 4.0, 1.0, w);
  ds::linear_observation o;
  o.d_x = 2;
  o.d_y = 1;
  o.A = {1.0, 0.0};
  o.sigma_y = 1e3;
  o.y = {0.0};
  const std::int64_t N = 4096;
  std::vector<float> exact_a(N * 2), exact_b(N * 2);
  prior.sample(exact_a.data(), N, ds::channel{}, 1, nullptr, 0, cpu());
  prior.sample(exact_b.data(), N, ds::channel{}, 2, nullptr, 0, cpu());
  const double floor = ds::sliced_wasserstein(N, N, 2, exact_a.data(), exact_b.data(), 128, 5);
  for (double zeta : {0.0, 0.1}) {
    ds::guided_options opt = options(ds::guided_sampler::diffpir, N, 500, 13);
    opt.diffpir_zeta = zeta;
    const std::vector<float> x = run(prior, as_problems(o), opt);
    const std::vector<double> got = ds::component_weights(prior, N, x.data());
    double worst = 0, excess = -1;
    for (std::size_t k = 0; k < w.size(); ++k) {
      const double wk = prior.weights()[k];
      worst = std::max(worst, std::abs(got[k] - wk));
      excess = std::max(excess, std::abs(got[k] - wk) - (5 * std::sqrt(wk * (1 - wk) / double(N)) + 0.02));
    }
    const double sw = ds::sliced_wasserstein(N, N, 2, x.data(), exact_a.data(), 128, 5);
    std::printf("zeta %.1f: max weight error %.4f, SW1 %.4f (floor %.4f, %.2fx)\n", zeta, worst, sw, floor, sw / floor);
    EXPECT_LE(excess, 0.0) << "zeta " << zeta;
    EXPECT_LE(sw, 2 * floor) << "zeta " << zeta;
  }
}

// Mask and SVD operators reach DiffPIR, SKRock and the normalised DPS step as the existing samplers use them: a
// mask (gather/scatter, diagonal tables) and a rank-1 SVD with d_y = 2 (run on the projected 1-dimensional problem,
// the normalised step's |y - A m|^2 including the part of y outside U's span) give the dense path's results up to
// float rounding (the same formulas, summed in another order): every coordinate within 1e-3 (1 + |x|) after 20
// steps. Seen to fail with the normalised step's norm offset left at 0 for the SVD (relative differences up to 1.03).
TEST(GuidedPnp, MaskAndSvdOperatorsMatchTheDensePath) {
  const ds::gaussian_mixture prior(4, {0.3, 0.7}, {-1, 0, 1, 0, 1, 1, -1, 0.5}, {0.8, 1.2});
  const ds::observation_operator mask = ds::observation_operator::mask(4, {2, 0}, {1.5, -0.5});
  const double r = std::sqrt(0.5);
  const ds::observation_operator svd =
      ds::observation_operator::svd(2, 4, {r, r}, {1.3}, {0.5, 0.5, -0.5, 0.5});
  for (const ds::observation_operator* op : {&mask, &svd}) {
    ds::guided_problems with_op;
    with_op.d_y = 2;
    with_op.operators = {*op};
    with_op.y = {0.7, -0.4};
    with_op.sigma_y = {0.3};
    ds::guided_problems dense = with_op;
    dense.operators.clear();
    dense.A = op->matrix();
    for (ds::guided_sampler s : {ds::guided_sampler::diffpir, ds::guided_sampler::skrock, ds::guided_sampler::dps}) {
      ds::guided_options o = options(s, 64, 20, 5);
      if (s == ds::guided_sampler::dps) o.dps_step = ds::dps_step_form::normalised;  // DPS's (the others refuse it)
      const std::vector<float> a = run(prior, with_op, o), b = run(prior, dense, o);
      ASSERT_EQ(non_finite(a), 0);
      double worst = 0;
      for (std::size_t i = 0; i < a.size(); ++i)
        worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (1 + std::abs(double(b[i]))));
      EXPECT_LE(worst, 1e-3) << ds::to_string(s) << " " << ds::to_string(op->kind());
    }
  }
}

// SKRock's step is fraction x l_s / L with L = 1 / v_min + lambda_max(A A^T) / sigma_y^2. An operator whose top
// eigenvector of A A^T is the Walsh function (1, -1, -1, 1) / 2: A = U diag(1, 1, 1, 100) with U the orthonormal
// Walsh-Hadamard basis (d = d_y = 4), prior N(0, I), sigma_y = 1, so lambda_max = 10^4. The power iteration that
// estimated lambda_max started from (1, 1.001, 1.002, 1.003), which is orthogonal to that eigenvector: it returned 1,
// the step came out 5000x too long (h L = 4300 against the stability bound l_s = 173) and every chain diverged to
// NaN after 50 iterations (seen failing: 256 of 256 values non-finite). A^T A = diag(S^2), so along the stiff
// coordinate x_3 the exact posterior is N(100 u4.y / (1 + 10^4), 1 / (1 + 10^4)), u4 = (1, -1, -1, 1) / 2; after 50
// iterations (the contraction per iteration at h L = 0.87 is far below 1) the 64 chains' mean of x_3 must lie within
// 5 standard errors, 5 / sqrt(64 (1 + 10^4)), of it (SKRock's variance bias at this h L is below 1%, and its mean is
// unbiased on a Gaussian). Seen failing too with the drift's residual taken against 2 y (mean 0.118 against 0.059).
TEST(GuidedPnp, SkrockStepSeesTheTopEigenvalueForAnyOperator) {
  const ds::gaussian_mixture prior(4, {1.0}, {0, 0, 0, 0}, {1.0});
  const double walsh[4][4] = {{1, 1, 1, 1}, {1, -1, 1, -1}, {1, 1, -1, -1}, {1, -1, -1, 1}};
  const double S[4] = {1, 1, 1, 100};
  ds::guided_problems g;
  g.d_y = 4;
  g.sigma_y = {1.0};
  g.y = {3.1, -2.8, -3.0, 2.9};  // u4.y = 5.9: the stiff coordinate's posterior mean, 0.059, is 47 se from 0
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) g.A.push_back(0.5 * walsh[j][i] * S[j]);  // A_ij = U_ij S_j, U = walsh^T / 2
  ds::guided_options o = options(ds::guided_sampler::skrock, 64, 50, 3);
  const std::vector<float> x = run(prior, g, o);
  ASSERT_EQ(non_finite(x), 0);
  double uy = 0;
  for (int i = 0; i < 4; ++i) uy += 0.5 * walsh[3][i] * g.y[i];
  const double exact = S[3] * uy / (1 + S[3] * S[3]), se = 1 / std::sqrt(64 * (1 + S[3] * S[3]));
  double mean = 0;
  for (int c = 0; c < 64; ++c) mean += x[c * 4 + 3] / 64.0;
  std::printf("stiff coordinate: mean %.6f, exact %.6f, se %.6f\n", mean, exact, se);
  EXPECT_LE(std::abs(mean - exact), 5 * se);
}

// SKRock at a finite step against its own exact stationary law. On a Gaussian posterior the drift is linear,
// b(x) = -P (x - mu), and one iteration is x' - mu = R(h lambda) (x - mu) + S(h lambda) sqrt(2 h) xi per eigen-direction
// lambda of P, with R and S from the stage recursion (computed here from the closed forms T_j(w) = cosh(j arccosh w));
// so the chains' stationary law is N(mu, 2 h S^2 / (1 - R^2)) exactly: the mean is unbiased and the variance is
// biased by a known factor. Prior N(0, I) in d = 2, A = [2, 0], sigma_y = 0.5, y = 1: P = diag(17, 1) = diag(L, 1),
// mu = (8/17, 0). At fraction 0.02 (s = 10, eta = 0.05, h L = 3.46) the predicted variance along x_0 is 0.69 times
// the exact 1/17, along x_1 0.99 times 1. N = 4096 chains, 200 iterations (|R|^200 < 1e-9). Asserted: each
// coordinate's sample mean within 5 se of mu, each sample variance within 5 sqrt(2 / (N - 1)) (relative) of the
// predicted one (the exact posterior variance would fail along x_0 by 0.31, about 14 of those standard errors).
// Measured: variances 0.04058 and 0.987 against the predicted 0.04069 and 0.996. Seen to fail with the stage-1 noise
// kappa_1 c xi scaled by 1.1 (variances 1.21x and 1.20x the predicted) and with mu_j's 2 w1 replaced by 2 w0 (the
// chains diverge); not with nu_1 doubled (variance 0.96x the predicted, inside the tolerance at this N: the
// perturbation point enters the variance only weakly).
TEST(GuidedPnp, SkrockMatchesItsExactStationaryLawOnAGaussian) {
  const ds::gaussian_mixture prior(2, {1.0}, {0.0, 0.0}, {1.0});
  ds::linear_observation o;
  o.d_x = 2;
  o.d_y = 1;
  o.A = {2.0, 0.0};
  o.sigma_y = 0.5;
  o.y = {1.0};
  const std::int64_t N = 4096;
  const int s = 10;
  ds::guided_options opt = options(ds::guided_sampler::skrock, N, 200, 31);
  opt.skrock_stages = s;
  opt.skrock_eta = 0.05;
  opt.skrock_step_fraction = 0.02;
  const std::vector<float> x = run(prior, as_problems(o), opt);
  const double eta = opt.skrock_eta, w0 = 1 + eta / (s * s);
  auto T = [](int j, double w) { return std::cosh(j * std::acosh(w)); };
  const double w1 = T(s, w0) / (s * std::sinh(s * std::acosh(w0)) / std::sqrt(w0 * w0 - 1));
  const double L = 17.0, h = opt.skrock_step_fraction * ((s - 0.5) * (s - 0.5) * (2 - 4 * eta / 3) - 1.5) / L;
  // Stationary variance along an eigen-direction lambda: track X_j = a_j x + b_j Q, Q = sqrt(2 h) xi.
  auto predicted = [&](double lambda) {
    double a0 = 1, b0 = 0;
    double a1 = 1 - (w1 / w0) * h * lambda, b1 = -(w1 / w0) * h * lambda * (s * w1 / 2) + s * w1 / w0;
    for (int j = 2; j <= s; ++j) {
      const double mu = 2 * w1 * T(j - 1, w0) / T(j, w0), nu = 2 * w0 * T(j - 1, w0) / T(j, w0), kappa = 1 - nu;
      const double a2 = -mu * h * lambda * a1 + nu * a1 + kappa * a0, b2 = -mu * h * lambda * b1 + nu * b1 + kappa * b0;
      a0 = a1, b0 = b1, a1 = a2, b1 = b2;
    }
    return 2 * h * b1 * b1 / (1 - a1 * a1);
  };
  const double mu_exact[2] = {8.0 / 17.0, 0.0}, lambdas[2] = {17.0, 1.0};
  for (int j = 0; j < 2; ++j) {
    const std::vector<double> c = ds::testing::column(x, 2, j);
    const double m = ds::testing::mean(c), v = ds::testing::variance(c), want = predicted(lambdas[j]);
    std::printf("x_%d: mean %.5f (exact %.5f), variance %.5f, predicted %.5f (%.3f of the exact %.5f)\n", j, m,
                mu_exact[j], v, want, want * lambdas[j], 1 / lambdas[j]);
    EXPECT_NEAR(m, mu_exact[j], 5 * std::sqrt(want / double(N))) << "x_" << j;
    EXPECT_NEAR(v / want, 1.0, 5 * std::sqrt(2.0 / double(N - 1))) << "x_" << j;
  }
}

namespace {

// Full-rank 3 x 4 operators whose A A^T is ill conditioned without a scaled Cholesky pivot below reduce_rank's floor
// of 1e-4: row 3 = `scale` (row 1 + angle |row 1| e_2), about `angle` rad off row 1 (angle 0.1: cond_2 of A A^T scaled
// to a unit diagonal 1.6e3, smallest scaled pivot 2.5e-3; angle 0.03: 1.6e4 and 2.5e-4); the entries FP32 values, so
// that the reference solves the problem the kernels read.
rank_case ill_conditioned(double angle, double scale) {
  rank_case c{"", 3, {1, 2, 0, -1, 0, 1, 3, 1, 1, 2, 0, -1}, {0.5, -1.0, 0.5 * scale}};
  c.A[9] += angle * std::sqrt(6.0);
  for (int j = 0; j < 4; ++j) c.A[8 + j] *= scale;
  for (double& v : c.A) v = double(float(v));
  for (double& v : c.y) v = double(float(v));
  return c;
}

}  // namespace

// DiffPIR's and Pi-GDM's steps on full-rank but ill-conditioned operators (ill_conditioned: angles 0.1 and 0.03, row 3
// at scales 1 and 0.03, sigma_y 1e-3 and 1e-7) against the solves in quadruple precision of the d_x-dimensional forms
// (the references of the rank tests above), to 8e-7 (1 + |x'|) per coordinate (measured at most 2.6e-7 on the rows
// reduce_rank makes orthogonal). Seen failing while only a scaled pivot below 1e-4 chose the orthogonal rows: the
// FP32 tables (A A^T + w I)^-1 and (r^2 A A^T + sigma_y^2 I)^-1 of these operators were applied as they were, off by
// up to 5e-6 (angle 0.1) and 6e-5 (angle 0.03) of the step.
TEST(GuidedPnp, DiffpirAndPigdmStepsOnIllConditionedFullRankOperators) {
  const ds::gaussian_mixture prior(4, {0.4, 0.6}, {-1.0, 0.5, 0.0, 1.0, 1.5, -0.5, 1.0, 0.5}, {0.7, 1.2});
  const mixture64 m(prior);
  for (double angle : {0.1, 0.03})
    for (double scale : {1.0, 0.03})
      for (double sy : {1e-3, 1e-7}) {
        const rank_case c = ill_conditioned(angle, scale);
        const ds::linear_observation obs = as_observation(c, sy);
        const std::string what =
            "angle " + std::to_string(angle) + ", scale " + std::to_string(scale) + ", sigma_y " + std::to_string(sy);
        {
          ds::guided_options o = options(ds::guided_sampler::diffpir, 8, 1, 9);
          o.diffpir_zeta = 0.3;
          o.schedule.with_times({0.5, 0.4});
          const std::vector<ds::schedule_point> pts = o.schedule.points(1);
          const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
          const double w = 0.5 * o.diffpir_lambda * sy * sy * a * a / (s * s);
          const std::vector<float> got = run(prior, as_problems(obs), o);
          std::vector<std::vector<double>> want;
          for (std::uint64_t i = 0; i < 8; ++i) {
            std::vector<double> x = normals(9, i, 0, 4), z = normals(9, i, 1, 4);
            for (double& v : x) v *= s;
            const std::vector<wide> x0 = regularised_solve(c, 1.0, w, c.y, m.denoiser(x, a, s));
            std::vector<double> next(4);
            for (int j = 0; j < 4; ++j)
              next[j] = a1 * double(x0[j]) + s1 * (std::sqrt(1 - o.diffpir_zeta) * (x[j] - a * double(x0[j])) / s +
                                                   std::sqrt(o.diffpir_zeta) * z[j]);
            want.push_back(next);
          }
          expect_close(got, want, ("diffpir, " + what).c_str(), 8e-7);
        }
        {
          ds::guided_options o = options(ds::guided_sampler::pigdm, 8, 1, 11);
          o.schedule.with_times({0.5, 0.4});
          const std::vector<ds::schedule_point> pts = o.schedule.points(1);
          const double a = pts[0].a, s = pts[0].s, a1 = pts[1].a, s1 = pts[1].s;
          const double rho = a / a1, v = s * s - rho * rho * s1 * s1;
          const double cx = rho * s1 * s1 / (s * s), cm = a1 * v / (s * s), sig = std::sqrt(s1 * s1 * v / (s * s));
          const double r2 = s * s / (a * a + s * s);
          const std::vector<float> got = run(prior, as_problems(obs), o);
          std::vector<std::vector<double>> want;
          for (std::uint64_t i = 0; i < 8; ++i) {
            std::vector<double> x = normals(11, i, 0, 4), z = normals(11, i, 1, 4);
            for (double& t : x) t *= s;
            const std::vector<double> mean = m.denoiser(x, a, s);
            const std::vector<wide> g = regularised_solve(c, r2, sy * sy, residual(obs, mean), std::vector<double>(4, 0.0));
            const std::vector<double> jv = m.jvp(x, {double(g[0]), double(g[1]), double(g[2]), double(g[3])}, a, s);
            std::vector<double> next(4);
            for (int j = 0; j < 4; ++j)
              next[j] = cm * mean[j] + cx * x[j] + sig * z[j] + o.guidance_scale * (cm * s * s / a) * jv[j];
            want.push_back(next);
          }
          expect_close(got, want, ("pigdm, " + what).c_str(), 8e-7);
        }
      }
}
