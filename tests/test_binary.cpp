// Binary data on {-1,1}^d against exact answers by enumeration (d <= 8): the Bernoulli mixture's log pmf, score and
// denoiser (also against finite differences and the multiple-measurement posterior); exact samples; the
// Metropolis-adjusted discrete Langevin chain's law against the exact pmf; the unadjusted chains' laws against the
// exact stationary laws of their kernels, and those laws' bias against eta and alpha; the walk-jump's jump law
// against the exact law of sign(E[x | y_1..m]); bit-identical results across chain and step splits.
//
// Every total-variation tolerance is tv_allowance(pmf, N): the expected TV of N iid samples from the pmf
// (E|phat_s - p_s| <= sqrt(p_s (1 - p_s) / N) summed over states, halved) plus McDiarmid's deviation
// sqrt(log(1e6) / (2 N)) (TV changes by at most 1/N when one sample changes), so a correct sampler fails with
// probability below 1e-6 (fixed seeds make each outcome deterministic anyway).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/binary.cuh"
#include "reference/helpers.hpp"

using namespace diffsample;

namespace {

struct problem_params {
  int d;
  std::vector<double> weights, probabilities;
};

problem_params random_problem(int d, int K, unsigned seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> w(0.5, 1.5), p(0.1, 0.9);
  problem_params r{d, {}, {}};
  for (int k = 0; k < K; ++k) r.weights.push_back(w(g));
  for (int i = 0; i < K * d; ++i) r.probabilities.push_back(p(g));
  return r;
}

/// State s of {-1,1}^d: coordinate j is +1 when bit j of s is set.
std::vector<double> state(int s, int d) {
  std::vector<double> y(d);
  for (int j = 0; j < d; ++j) y[j] = (s >> j) & 1 ? 1.0 : -1.0;
  return y;
}
int index_of(const float* y, int d) {
  int s = 0;
  for (int j = 0; j < d; ++j) s |= (y[j] > 0 ? 1 : 0) << j;
  return s;
}

/// Prior pmf p(x) by enumeration.
double prior_pmf(const problem_params& q, const std::vector<double>& x) {
  double total = 0, wsum = 0;
  for (double w : q.weights) wsum += w;
  for (std::size_t k = 0; k < q.weights.size(); ++k) {
    double prod = q.weights[k] / wsum;
    for (int j = 0; j < q.d; ++j) {
      const double p = q.probabilities[k * q.d + j];
      prod *= x[j] > 0 ? p : 1 - p;
    }
    total += prod;
  }
  return total;
}

/// Brute force over all x: q(y) = sum_x p(x) prod_j e^{alpha x_j y_j} / (2 cosh alpha), and the posterior mean
/// E[x | y] with weights p(x) e^{alpha x . y} (any real y).
void brute_force(const problem_params& q, const std::vector<double>& y, double alpha, double& pmf,
                 std::vector<double>& mean) {
  const int d = q.d;
  pmf = 0;
  mean.assign(d, 0.0);
  for (int s = 0; s < (1 << d); ++s) {
    const auto x = state(s, d);
    double dot = 0;
    for (int j = 0; j < d; ++j) dot += x[j] * y[j];
    const double w = prior_pmf(q, x) * std::exp(alpha * dot) / std::pow(2 * std::cosh(alpha), d);
    pmf += w;
    for (int j = 0; j < d; ++j) mean[j] += w * x[j];
  }
  for (int j = 0; j < d; ++j) mean[j] /= pmf;
}

/// The log density, posterior mean and error bounds of the mixture q at the FP32 point y, in long double from the
/// probabilities, by a route of its own: each coordinate's term of component k, less alpha |y| - log 2, is
///   t_kj = log(2 p e^{alpha (y - |y|)} + 2 (1 - p) e^{-alpha (y + |y|)})
/// (cosh(theta + alpha y) / cosh(theta) = p e^{alpha y} + (1 - p) e^{-alpha y}; one exponent is 0, the other <= 0), and
///   log q(y) = logsumexp_k (log w_k + sum_j t_kj) + alpha sum_j (|y_j| - 1) - d (log 2 + log1p(e^{-2 alpha})).
/// logit_bound: max over k of sum_j |S_kj| + 4 sum_j M_kj, with S_kj = log w_k + t_k1 + ... + t_kj the partial sums
/// (a recursive sum's rounding is at most u sum_j |S_kj|, u the unit roundoff) and M_kj = 3 |theta| + |logcosh(theta)|
/// + ||z| - alpha |y|| + |t_kj| + log 2 the magnitudes of the pieces each term is formed from (theta's rounding to the
/// working precision moves t_kj by at most 2 u |theta|; the pieces' own roundings by u each), so that logits formed
/// without cancellation are within u logit_bound of the exact ones. shift_bound: the same for alpha sum_j (|y_j| - 1)
/// (alpha (sum_j ||y_j| - 1| + sum_j |P_j| + |P_d|), P_j its partial sums). norm: d (log 2 + log1p(e^{-2 alpha})).
struct accurate_values {
  long double log_q = 0, logit_bound = 0, shift_bound = 0, norm = 0;
  std::vector<long double> mean;
};

accurate_values accurate(const problem_params& q, const float* y, long double alpha) {
  const int d = q.d, K = int(q.weights.size());
  const long double ln2 = std::log(2.0L);
  auto lc = [&](long double z) {
    z = std::fabs(z);
    return z + std::log1p(std::exp(-2 * z)) - ln2;
  };
  long double wsum = 0;
  for (double w : q.weights) wsum += w;
  accurate_values r;
  r.mean.assign(d, 0.0L);
  std::vector<long double> logit(K);
  long double top = -INFINITY;
  for (int k = 0; k < K; ++k) {
    long double l = std::log(q.weights[k] / wsum), partial = 0, pieces = 0;
    for (int j = 0; j < d; ++j) {
      const long double p = q.probabilities[k * d + j], yj = y[j];
      const long double theta = 0.5L * std::log(p / (1 - p)), z = theta + alpha * yj;
      const long double e1 = std::log(2 * p) + alpha * (yj - std::fabs(yj));
      const long double e2 = std::log(2 * (1 - p)) - alpha * (yj + std::fabs(yj));
      const long double t = std::max(e1, e2) + std::log1p(std::exp(std::min(e1, e2) - std::max(e1, e2)));
      l += t;
      partial += std::fabs(l);
      pieces += 3 * std::fabs(theta) + std::fabs(lc(theta)) + std::fabs(std::fabs(z) - alpha * std::fabs(yj)) +
                std::fabs(t) + ln2;
    }
    logit[k] = l;
    top = std::max(top, l);
    r.logit_bound = std::max(r.logit_bound, partial + 4 * pieces);
  }
  long double sum = 0, shift = 0, shift_pieces = 0;
  for (int k = 0; k < K; ++k) sum += std::exp(logit[k] - top);
  for (int j = 0; j < d; ++j) {
    shift += std::fabs((long double)y[j]) - 1;
    shift_pieces += std::fabs(std::fabs((long double)y[j]) - 1) + std::fabs(shift);
  }
  r.shift_bound = alpha * (shift_pieces + std::fabs(shift));
  r.norm = d * (ln2 + std::log1p(std::exp(-2 * alpha)));
  r.log_q = top + std::log(sum) + alpha * shift - r.norm;
  for (int k = 0; k < K; ++k) {
    const long double resp = std::exp(logit[k] - top) / sum;
    for (int j = 0; j < d; ++j) {
      const long double p = q.probabilities[k * d + j];
      r.mean[j] += resp * std::tanh(0.5L * std::log(p / (1 - p)) + alpha * (long double)y[j]);
    }
  }
  return r;
}

/// The exact pmf of q on {-1,1}^d from the library's FP64 log density.
std::vector<double> exact_pmf(const bernoulli_mixture& m, double alpha) {
  const int d = int(m.dim());
  std::vector<double> ys, lq(1 << d);
  for (int s = 0; s < (1 << d); ++s)
    for (double v : state(s, d)) ys.push_back(v);
  m.evaluate_fp64(lq.data(), 1 << d, ys.data(), alpha, quantity::log_density);
  for (double& v : lq) v = std::exp(v);
  return lq;
}

std::vector<double> histogram(const std::vector<float>& y, int d) {
  const std::int64_t n = std::int64_t(y.size()) / d;
  std::vector<double> h(1 << d, 0.0);
  for (std::int64_t i = 0; i < n; ++i) h[index_of(&y[i * d], d)] += 1.0 / double(n);
  return h;
}

double tv(const std::vector<double>& a, const std::vector<double>& b) {
  double t = 0;
  for (std::size_t s = 0; s < a.size(); ++s) t += std::fabs(a[s] - b[s]);
  return 0.5 * t;
}

double tv_allowance(const std::vector<double>& pmf, std::int64_t n) {
  double e = 0;
  for (double p : pmf) e += std::sqrt(p * (1 - p) / double(n));
  return 0.5 * e + std::sqrt(std::log(1e6) / (2.0 * double(n)));
}

/// Stationary law of a transition matrix T (row-stochastic, S x S) by solving pi (T - I) = 0, sum pi = 1 (Gaussian
/// elimination with partial pivoting in FP64).
std::vector<double> stationary(const std::vector<double>& T, int S) {
  std::vector<double> A(S * (S + 1), 0.0);  // rows: equations, last column: right-hand side
  for (int i = 0; i < S; ++i)
    for (int j = 0; j < S; ++j) A[i * (S + 1) + j] = T[j * S + i] - (i == j ? 1.0 : 0.0);
  for (int j = 0; j < S; ++j) A[(S - 1) * (S + 1) + j] = 1.0;
  A[(S - 1) * (S + 1) + S] = 1.0;
  for (int c = 0; c < S; ++c) {
    int piv = c;
    for (int r = c + 1; r < S; ++r)
      if (std::fabs(A[r * (S + 1) + c]) > std::fabs(A[piv * (S + 1) + c])) piv = r;
    for (int j = 0; j <= S; ++j) std::swap(A[c * (S + 1) + j], A[piv * (S + 1) + j]);
    for (int r = 0; r < S; ++r) {
      if (r == c) continue;
      const double f = A[r * (S + 1) + c] / A[c * (S + 1) + c];
      for (int j = c; j <= S; ++j) A[r * (S + 1) + j] -= f * A[c * (S + 1) + j];
    }
  }
  std::vector<double> pi(S);
  for (int i = 0; i < S; ++i) pi[i] = A[i * (S + 1) + S] / A[i * (S + 1) + i];
  return pi;
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// The transition matrix of an unadjusted discrete chain (one_stage or two_stage) on {-1,1}^d, built from the
/// library's FP64 score at every state and the README's formulas.
std::vector<double> kernel_matrix(const bernoulli_mixture& m, double alpha, double eta, discrete_method method) {
  const int d = int(m.dim()), S = 1 << d;
  std::vector<double> ys, score(S * d);
  for (int s = 0; s < S; ++s)
    for (double v : state(s, d)) ys.push_back(v);
  m.evaluate_fp64(score.data(), S, ys.data(), alpha, quantity::score);
  // Y(s' | z): independent coordinates with P(y'_j = +1) = sigmoid(c * score_j(z) + 2 z_j / eta), c = 1 (one-stage)
  // or 2 (two-stage's y | z).
  auto product = [&](double c) {
    std::vector<double> P(S * S);
    for (int s = 0; s < S; ++s)
      for (int t = 0; t < S; ++t) {
        double pr = 1;
        for (int j = 0; j < d; ++j) {
          const double plus = sig(c * score[s * d + j] + 2 * ys[s * d + j] / eta);
          pr *= (t >> j) & 1 ? plus : 1 - plus;
        }
        P[s * S + t] = pr;
      }
    return P;
  };
  if (method == discrete_method::one_stage) return product(1.0);
  const std::vector<double> Y = product(2.0);
  std::vector<double> T(S * S, 0.0);
  const double f = sig(-2 / eta);
  for (int s = 0; s < S; ++s)
    for (int z = 0; z < S; ++z) {
      const int flips = __builtin_popcount(unsigned(s ^ z));
      const double pz = std::pow(f, flips) * std::pow(1 - f, d - flips);
      for (int t = 0; t < S; ++t) T[s * S + t] += pz * Y[z * S + t];
    }
  return T;
}

/// The Metropolis-adjusted one-stage kernel: the one-stage proposal T accepted with min(1, q(t) T(t, s) / (q(s) T(s, t))).
std::vector<double> metropolis_matrix(const std::vector<double>& T, const std::vector<double>& q, int S) {
  std::vector<double> M(S * S, 0.0);
  for (int s = 0; s < S; ++s) {
    double stay = 1;
    for (int t = 0; t < S; ++t) {
      if (t == s) continue;
      M[s * S + t] = T[s * S + t] * std::min(1.0, q[t] * T[t * S + s] / (q[s] * T[s * S + t]));
      stay -= M[s * S + t];
    }
    M[s * S + s] = stay;
  }
  return M;
}

/// The exact law after `steps` steps of the kernel T from the uniform start.
std::vector<double> law_after(const std::vector<double>& T, int S, int steps) {
  std::vector<double> law(S, 1.0 / S), next(S);
  for (int k = 0; k < steps; ++k) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int s = 0; s < S; ++s)
      for (int t = 0; t < S; ++t) next[t] += law[s] * T[s * S + t];
    law.swap(next);
  }
  return law;
}

}  // namespace

// --- the prior ------------------------------------------------------------------------------------------------

TEST(BernoulliMixture, LogDensityIsTheExactPmfAndDenoiserThePosteriorMean) {
  // Every state of {-1,1}^6 and 16 real points, two flip strengths: FP64 to 1e-12 (relative) of the enumeration,
  // FP32 (CPU executor) to 2e-5 absolute (log densities ~ -4, so ~30 ulp), denoisers likewise; the score is alpha
  // times the denoiser; the pmf sums to one.
  const auto q = random_problem(6, 3, 1);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  std::mt19937_64 g(2);
  std::normal_distribution<double> normal;
  for (double alpha : {0.3, 1.2}) {
    std::vector<std::vector<double>> points;
    for (int s = 0; s < 64; ++s) points.push_back(state(s, q.d));
    for (int i = 0; i < 16; ++i) {
      std::vector<double> y(q.d);
      for (double& v : y) v = 1.5 * normal(g);
      points.push_back(y);
    }
    const int n = int(points.size());
    std::vector<double> y64;
    for (const auto& p : points) y64.insert(y64.end(), p.begin(), p.end());
    std::vector<float> y32(y64.begin(), y64.end());
    std::vector<double> lq(n), den(n * q.d), sc(n * q.d);
    std::vector<float> lq32(n), den32(n * q.d), sc32(n * q.d);
    m.evaluate_fp64(lq.data(), n, y64.data(), alpha, quantity::log_density);
    m.evaluate_fp64(den.data(), n, y64.data(), alpha, quantity::denoiser);
    m.evaluate_fp64(sc.data(), n, y64.data(), alpha, quantity::score);
    m.evaluate(lq32.data(), n, y32.data(), alpha, quantity::log_density, {executor::cpu});
    m.evaluate(den32.data(), n, y32.data(), alpha, quantity::denoiser, {executor::cpu});
    m.evaluate(sc32.data(), n, y32.data(), alpha, quantity::score, {executor::cpu});
    double total = 0;
    for (int i = 0; i < n; ++i) {
      double pmf;
      std::vector<double> mean;
      brute_force(q, points[i], alpha, pmf, mean);
      if (i < 64) total += std::exp(lq[i]);
      EXPECT_NEAR(lq[i], std::log(pmf), 1e-12 * std::fabs(std::log(pmf))) << "point " << i;
      EXPECT_NEAR(lq32[i], std::log(pmf), 2e-5) << "point " << i;
      for (int j = 0; j < q.d; ++j) {
        EXPECT_NEAR(den[i * q.d + j], mean[j], 1e-12) << "point " << i << " coordinate " << j;
        EXPECT_NEAR(sc[i * q.d + j], alpha * mean[j], 1e-12);
        EXPECT_NEAR(den32[i * q.d + j], mean[j], 2e-6);
        EXPECT_NEAR(sc32[i * q.d + j], alpha * mean[j], 2e-6 * alpha);
      }
    }
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
}

// The log density and denoiser without cancellation at any alpha: FP32 (CPU executor) and FP64 (evaluate_fp64)
// against the long-double values of accurate() over alpha = 1e-3 .. 1e4 and d = 1 .. 300 (K = 3), at random states
// of {-1,1}^d, at real points near them (|y_j| in [0.7, 1.3]), at sums of two measurements (entries -2, 0, 2) and at
// points whose coordinates are +-1 or c / alpha (c standard normal: tanh(theta + c) unsaturated, so that the
// denoiser depends on the responsibilities). Tolerance from the working precision's unit roundoff u (2^-24, 2^-53):
// the logits are within u logit_bound (accurate()); log q adds u shift_bound and the log-sum-exp's and the
// normalisation's roundings, 8 u (|log q| + norm + 1); the denoiser moves by at most 3 u logit_bound through the
// responsibilities plus (4 K + 8) u from its own tanh and sums. Seen failing with the former sums of
// logcosh(theta + alpha y) - logcosh(theta) less d log(2 cosh alpha) (log q at alpha >= 100 for every d, FP32 off by
// ~1e-4 at alpha = 1000, d = 1; the denoiser at the c / alpha points), and with alpha - log 2 (not alpha |y_j| -
// log 2) taken out of the terms (the denoiser at the c / alpha points).
TEST(BernoulliMixture, LogDensityAndDenoiserAccurateAtEveryAlpha) {
  const int K = 3;
  std::mt19937_64 g(41);
  std::uniform_real_distribution<double> jitter(-0.3, 0.3);
  std::normal_distribution<double> normal;
  int failures = 0;
  for (int d : {1, 8, 64, 300}) {
    const auto q = random_problem(d, K, 40 + unsigned(d));
    const bernoulli_mixture m(q.d, q.weights, q.probabilities);
    for (double alpha : {1e-3, 0.1, 1.0, 10.0, 100.0, 1000.0, 1e4}) {
      const int n = 11;
      std::vector<float> y32(n * d);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) {
          const float sgn = (g() & 1) ? 1.f : -1.f;
          float& v = y32[i * d + j];
          if (i < 5) v = sgn;
          else if (i < 7) v = sgn * float(1 + jitter(g));
          else if (i < 8) v = float(2 * int(g() % 3) - 2);
          else v = (g() & 1) && d > 1 ? sgn : float(normal(g) / alpha);
        }
      const std::vector<double> y64(y32.begin(), y32.end());
      std::vector<float> lq32(n), den32(n * d);
      std::vector<double> lq64(n), den64(n * d);
      m.evaluate(lq32.data(), n, y32.data(), alpha, quantity::log_density, {executor::cpu});
      m.evaluate(den32.data(), n, y32.data(), alpha, quantity::denoiser, {executor::cpu});
      m.evaluate_fp64(lq64.data(), n, y64.data(), alpha, quantity::log_density);
      m.evaluate_fp64(den64.data(), n, y64.data(), alpha, quantity::denoiser);
      for (int i = 0; i < n; ++i) {
        for (const long double u : {0x1p-24L, 0x1p-53L}) {
          const bool single = u > 0x1p-30L;
          // evaluate() reads alpha as a float
          const accurate_values r = accurate(q, &y32[i * d], single ? (long double)float(alpha) : alpha);
          const double got = single ? double(lq32[i]) : lq64[i];
          const double tol =
              double(u * (r.logit_bound + r.shift_bound) + 8 * u * (std::fabs(r.log_q) + r.norm + 1));
          const bool ok = std::fabs(got - double(r.log_q)) <= tol;
          EXPECT_TRUE(ok) << (single ? "FP32" : "FP64") << " log q, d = " << d << ", alpha = " << alpha
                          << ", point " << i << ": " << got << " vs " << double(r.log_q) << " (tolerance " << tol
                          << ")";
          const double tol_mean = double(3 * u * r.logit_bound + (4 * K + 8) * u);
          int bad = 0;
          double worst = 0;
          for (int j = 0; j < d; ++j) {
            const double e = std::fabs((single ? double(den32[i * d + j]) : den64[i * d + j]) - double(r.mean[j]));
            worst = std::max(worst, e);
            bad += !(e <= tol_mean);
          }
          EXPECT_EQ(bad, 0) << (single ? "FP32" : "FP64") << " denoiser, d = " << d << ", alpha = " << alpha
                            << ", point " << i << ": largest error " << worst << " (tolerance " << tol_mean << ")";
          failures += !ok + (bad > 0);
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

// The discrete samplers' lattice table (kernels::lattice_table_functor, levels -2..2) read by
// kernels::lattice_posterior_mean, against accurate() at states of {-1,1}^d and at sums of two measurements, with the
// FP32 tolerances of the test above (each entry is rounded once from FP64, within the same u |piece| allowance).
// Seen failing with the entries stored as logcosh(theta + alpha level) - logcosh(theta) and the normalisation
// d log(2 cosh alpha) (alpha >= 100).
TEST(BernoulliMixture, LatticeTableAccurateAtEveryAlpha) {
  const int K = 3, L = 2, levels = 2 * L + 1;
  std::mt19937_64 g(43);
  for (int d : {1, 8, 64, 300}) {
    const auto q = random_problem(d, K, 44 + unsigned(d));
    double wsum = 0;
    for (double w : q.weights) wsum += w;
    std::vector<float> log_w(K), theta(K * d), lc_theta(K * d);
    for (int k = 0; k < K; ++k) log_w[k] = float(std::log(q.weights[k] / wsum));
    for (int i = 0; i < K * d; ++i) {
      const double p = q.probabilities[i], t = 0.5 * (std::log(p) - std::log1p(-p));
      theta[i] = float(t);
      lc_theta[i] = float(kernels::logcosh(t));
    }
    const kernels::bernoulli_view<float> view{log_w.data(), theta.data(), lc_theta.data(), K, d};
    for (double alpha : {1e-3, 0.1, 1.0, 10.0, 100.0, 1000.0, 1e4}) {
      std::vector<kernels::lattice_term> table(std::size_t(K) * d * levels);
      const kernels::lattice_table_functor fill{view, alpha, L, table.data()};
      for (std::int64_t e = 0; e < std::int64_t(table.size()); ++e) fill(e);
      const float log_norm = float(kernels::bernoulli_reduced_norm(d, alpha));
      for (int i = 0; i < 4; ++i) {
        std::vector<float> y(d), out(d);
        for (int j = 0; j < d; ++j) y[j] = i < 3 ? ((g() & 1) ? 1.f : -1.f) : float(2 * int(g() % 3) - 2);
        const float lq = kernels::lattice_posterior_mean(view, {table.data(), L}, y, float(alpha), log_norm, out);
        const accurate_values r = accurate(q, y.data(), float(alpha));
        const long double u = 0x1p-24L;
        const double tol =
            double(u * (r.logit_bound + r.shift_bound) + 8 * u * (std::fabs(r.log_q) + r.norm + 1));
        EXPECT_NEAR(lq, double(r.log_q), tol) << "d = " << d << ", alpha = " << alpha << ", point " << i;
        const double tol_mean = double(3 * u * r.logit_bound + (4 * K + 8) * u);
        int bad = 0;
        for (int j = 0; j < d; ++j) bad += !(std::fabs(out[j] - double(r.mean[j])) <= tol_mean);
        EXPECT_EQ(bad, 0) << "denoiser, d = " << d << ", alpha = " << alpha << ", point " << i;
      }
    }
  }
}

TEST(BernoulliMixture, ScoreMatchesFiniteDifferences) {
  // Central differences of the FP64 log density, h = 1e-5: truncation error h^2 |f'''| / 6 < 1e-10 (|f'''| <= a few
  // alpha^3) plus rounding 1e-16 |f| / h ~ 1e-10; tolerance 1e-8.
  const auto q = random_problem(8, 4, 3);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  std::mt19937_64 g(4);
  std::normal_distribution<double> normal;
  const double alpha = 0.8, h = 1e-5;
  for (int i = 0; i < 20; ++i) {
    std::vector<double> y(q.d), score(q.d);
    for (double& v : y) v = 2 * normal(g);
    m.evaluate_fp64(score.data(), 1, y.data(), alpha, quantity::score);
    for (int j = 0; j < q.d; ++j) {
      auto yp = y, ym = y;
      yp[j] += h;
      ym[j] -= h;
      double lp, lm;
      m.evaluate_fp64(&lp, 1, yp.data(), alpha, quantity::log_density);
      m.evaluate_fp64(&lm, 1, ym.data(), alpha, quantity::log_density);
      EXPECT_NEAR(score[j], (lp - lm) / (2 * h), 1e-8) << "point " << i << " coordinate " << j;
    }
  }
}

TEST(BernoulliMixture, MultipleMeasurementsEnterThroughTheirSum) {
  // E[x | y_1, y_2] by enumeration of x for every pair of states of {-1,1}^4 equals the denoiser at u = y_1 + y_2.
  const auto q = random_problem(4, 3, 5);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const double alpha = 0.7;
  for (int a = 0; a < 16; ++a)
    for (int b = 0; b < 16; ++b) {
      const auto y1 = state(a, q.d), y2 = state(b, q.d);
      std::vector<double> mean(q.d, 0.0), u(q.d), den(q.d);
      double total = 0;
      for (int s = 0; s < 16; ++s) {
        const auto x = state(s, q.d);
        double dot = 0;
        for (int j = 0; j < q.d; ++j) dot += x[j] * (y1[j] + y2[j]);
        const double w = prior_pmf(q, x) * std::exp(alpha * dot);
        total += w;
        for (int j = 0; j < q.d; ++j) mean[j] += w * x[j];
      }
      for (int j = 0; j < q.d; ++j) u[j] = y1[j] + y2[j];
      m.evaluate_fp64(den.data(), 1, u.data(), alpha, quantity::denoiser);
      for (int j = 0; j < q.d; ++j) EXPECT_NEAR(den[j], mean[j] / total, 1e-12);
    }
}

TEST(BernoulliMixture, ExactSamplesFollowThePmf) {
  // 2^15 exact samples of q (alpha = 0.9) and of the prior (alpha = infinity) on {-1,1}^6 against the exact pmfs.
  const auto q = random_problem(6, 3, 6);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 1 << 15;
  std::vector<float> y(n * q.d);
  m.sample(y.data(), n, 0.9, 7, nullptr, 0, {executor::cpu});
  const auto pmf = exact_pmf(m, 0.9);
  EXPECT_LT(tv(histogram(y, q.d), pmf), tv_allowance(pmf, n));
  m.sample(y.data(), n, INFINITY, 8, nullptr, 0, {executor::cpu});
  std::vector<double> prior(64);
  for (int s = 0; s < 64; ++s) prior[s] = prior_pmf(q, state(s, q.d));
  EXPECT_LT(tv(histogram(y, q.d), prior), tv_allowance(prior, n));
}

// Components of weight below the FP32 uniform's resolution near 1 (2^-24, about 6e-8) are drawn with their
// probability, as gaussian_mixture's are (Mixture.ComponentsBelowTheFp32UniformsResolutionAreDrawn). Weights: 0.5,
// then M = 2^20 components of weight 2^-26 each (total 2^-6), then the rest. Their cumulative weights 0.5 + j 2^-26
// are exact in FP64; in FP32 (spacing 2^-24 above 0.5) four consecutive ones share one value, so with FP32
// cumulative weights and an FP32 uniform only the first of each four could be drawn, and tiny component j = 1 and
// every fourth after it never. With n = 2^22 draws: the tiny components' share is 2^-6 (standard error
// sqrt(p (1 - p) / n) = 6.1e-5), and of the about n 2^-6 = 65536 tiny draws those with j = 1 mod 4 make a quarter
// (standard error sqrt(3 / 16 / 65536) = 0.0017); 5 standard errors each. Seen failing with the FP32 pick (share of
// j = 1 mod 4: exactly 0).
TEST(BernoulliMixture, ComponentsBelowTheFp32UniformsResolutionAreDrawn) {
  const std::int64_t M = std::int64_t(1) << 20, K = M + 2, n = std::int64_t(1) << 22;
  const auto size = static_cast<std::size_t>(K);
  std::vector<double> w(size, std::ldexp(1.0, -26)), probabilities(size);
  w[0] = 0.5;
  w[std::size_t(K - 1)] = 0.5 - std::ldexp(1.0, -6);
  for (std::int64_t k = 0; k < K; ++k) probabilities[std::size_t(k)] = double(k % 5) / 4.0;
  const bernoulli_mixture m(1, w, probabilities);
  std::vector<float> y(static_cast<std::size_t>(n));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  m.sample(y.data(), n, INFINITY, 11, labels.data(), 0, {executor::cpu});
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

TEST(BernoulliMixture, RejectsBadParameters) {
  EXPECT_THROW(bernoulli_mixture(2, {1.0}, {0.5}), invalid_argument);             // K x d = 2 values needed
  EXPECT_THROW(bernoulli_mixture(2, {1.0}, {0.5, 1.5}), invalid_argument);        // p > 1
  EXPECT_THROW(bernoulli_mixture(2, {-1.0}, {0.5, 0.5}), invalid_argument);       // negative weight
  EXPECT_THROW(bernoulli_mixture(2, {1.0}, {0.5, std::nan("")}), invalid_argument);
  EXPECT_NO_THROW(bernoulli_mixture(2, {1.0}, {0.0, 1.0}));  // deterministic coordinates are allowed
  try {  // the value as given, not rounded to 6 digits ("1", which looked valid)
    bernoulli_mixture(2, {1.0}, {1.0000001, 0.5});
    ADD_FAILURE() << "p = 1.0000001 accepted";
  } catch (const invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("value 0 is 1.0000001"), std::string::npos) << e.what();
  }
  const bernoulli_mixture m(2, {1.0}, {0.2, 0.7});
  std::vector<float> y(4, 1.f), out(4);
  EXPECT_THROW(m.evaluate(out.data(), 2, y.data(), 0.0, quantity::score, {executor::cpu}), invalid_argument);
  EXPECT_THROW(m.evaluate(out.data(), 2, y.data(), INFINITY, quantity::score, {executor::cpu}), invalid_argument);
  discrete_langevin_options o;
  o.eta = -1;
  EXPECT_THROW(discrete_langevin(m, y.data(), {}, 2, o, {executor::cpu}), invalid_argument);
  o.eta = 1;
  o.first_step = (1u << 30) - 10;
  o.steps = 20;
  EXPECT_THROW(discrete_langevin(m, y.data(), {}, 2, o, {executor::cpu}), invalid_argument);
  discrete_walk_jump_options w;
  w.measurements = 0;
  EXPECT_THROW(discrete_walk_jump(m, y.data(), {}, 2, w, {executor::cpu}), invalid_argument);
  EXPECT_THROW(parse_discrete_method("gibbs"), invalid_argument);
  // Measurements past limits::max_inner_steps whatever the steps: with steps = 0 the jump drew every measurement, so
  // 2^63 - 1 was accepted and did not return, and past 2^24 the FP32 sum of the flips stopped counting them.
  const std::vector<float> before = y;
  for (const std::int64_t measurements : {limits::max_inner_steps + 1, std::int64_t(1) << 40, INT64_MAX})
    for (const std::int64_t steps : {0, 1}) {
      w.measurements = measurements;
      w.steps = steps;
      EXPECT_THROW(discrete_walk_jump_workspace_bytes(m, 2, w), invalid_argument) << measurements << " x " << steps;
      EXPECT_THROW(discrete_walk_jump(m, y.data(), {}, 2, w, {executor::cpu}), invalid_argument)
          << measurements << " x " << steps;
      EXPECT_EQ(y, before);
    }
  w.measurements = limits::max_inner_steps;
  w.steps = 0;
  EXPECT_NO_THROW(discrete_walk_jump_workspace_bytes(m, 2, w));
}

// The FP32 evaluation and the discrete samplers take alpha as a float: above FLT_MAX it became +inf, and the log
// density at a point of {-1,1}^d came out NaN (inf x 0) where the FP64 reference is finite; the Metropolis chain
// rejected every move. Such an alpha is refused, as eta is, above max_abs_value; the FP64 reference takes any.
TEST(BernoulliMixture, StrengthBeyondTheFp32RangeIsRefused) {
  const bernoulli_mixture m(2, {1.0, 2.0}, {0.2, 0.7, 0.6, 0.1});
  std::vector<float> y{1.f, -1.f}, out(2);
  for (const double alpha : {1e19, 1e39, 1e300}) {
    for (const quantity q : {quantity::log_density, quantity::score, quantity::denoiser})
      EXPECT_THROW(m.evaluate(out.data(), 1, y.data(), alpha, q, {executor::cpu}), invalid_argument) << alpha;
    discrete_langevin_options o;
    o.alpha = alpha;
    o.steps = 2;
    EXPECT_THROW(discrete_langevin(m, y.data(), {}, 1, o, {executor::cpu}), invalid_argument) << alpha;
    EXPECT_THROW((void)discrete_langevin_workspace_bytes(m, 1, o), invalid_argument) << alpha;
    discrete_walk_jump_options w;
    w.alpha = alpha;
    w.steps = 2;
    EXPECT_THROW(discrete_walk_jump(m, out.data(), {}, 1, w, {executor::cpu}), invalid_argument) << alpha;
    EXPECT_THROW((void)discrete_walk_jump_workspace_bytes(m, 1, w), invalid_argument) << alpha;
    const std::vector<double> y64{1.0, -1.0};
    double lq = 0;
    m.evaluate_fp64(&lq, 1, y64.data(), alpha, quantity::log_density);
    EXPECT_TRUE(std::isfinite(lq)) << alpha;
  }
  // max_abs_value itself runs, and the FP32 log density on the lattice agrees with the FP64 one.
  m.evaluate(out.data(), 1, y.data(), max_abs_value, quantity::log_density, {executor::cpu});
  const std::vector<double> y64{1.0, -1.0};
  double lq = 0;
  m.evaluate_fp64(&lq, 1, y64.data(), max_abs_value, quantity::log_density);
  EXPECT_NEAR(out[0], lq, 1e-5 * std::fabs(lq));
  // alpha past its limit is refused, naming it (a call that did not throw passed this check before).
  std::string refused;
  try {
    m.evaluate(out.data(), 1, y.data(), 1e39, quantity::log_density, {executor::cpu});
  } catch (const invalid_argument& e) {
    refused = e.what();
  }
  EXPECT_NE(refused.find("alpha: 1e+39 is above 1e+18"), std::string::npos) << "message: " << refused;
}

TEST(BernoulliMixture, DeterministicCoordinatesStayFinite) {
  // p = 0 and 1 (natural parameters clamped at +-20): the log density stays finite and the denoiser is +-1 there.
  const bernoulli_mixture m(2, {1.0, 1.0}, {0.0, 0.5, 1.0, 0.5});
  std::vector<double> y{1, -1}, den(2), lq(1);
  m.evaluate_fp64(lq.data(), 1, y.data(), 2.0, quantity::log_density);
  m.evaluate_fp64(den.data(), 1, y.data(), 2.0, quantity::denoiser);
  EXPECT_TRUE(std::isfinite(lq[0]));
  // Coordinate 0: component 0 gives tanh(-20 + alpha) = -1, component 1 tanh(20 + alpha) = 1 (to 1e-15), weighted by
  // responsibilities in the ratio cosh(20 + alpha) / cosh(-20 + alpha) = e^(2 alpha) (coordinate 1 alike in both):
  // r_1 - r_0 = tanh(alpha).
  EXPECT_NEAR(den[0], std::tanh(2.0), 1e-12);
  EXPECT_NEAR(den[1], (std::tanh(-2.0) + std::tanh(-2.0)) / 2, 1e-12);  // both components: tanh(0 - alpha)
}

// --- discrete Langevin ----------------------------------------------------------------------------------------

namespace {

std::vector<float> run_chains(const bernoulli_mixture& m, std::int64_t n, discrete_method method, double alpha,
                              double eta, std::int64_t steps, std::uint64_t seed) {
  std::vector<float> y(n * m.dim());
  discrete_langevin_options o;
  o.method = method;
  o.alpha = alpha;
  o.eta = eta;
  o.steps = steps;
  o.seed = seed;
  o.start_uniform = true;
  discrete_langevin(m, y.data(), {}, n, o, {executor::cpu});
  return y;
}

}  // namespace

TEST(DiscreteLangevin, MetropolisChainsFollowTheExactPmf) {
  // 2^15 independent chains x 80 steps from a uniform start on {-1,1}^6 (alpha = 1, eta = 1.5). The exact kernel
  // matrix (README formulas, library score) has q as its stationary law (to 1e-12) and, after 80 steps from the
  // uniform start, a law within 1e-3 TV of q (both checked here), so the chains' empirical law must be within the
  // allowance (~0.035) of q. Power: the one-stage chain without the correction, same settings, lies at TV ~0.13
  // from q, which this bound rejects (checked below).
  const auto q = random_problem(6, 3, 11);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 1 << 15;
  const double alpha = 1.0, eta = 1.5;
  const int steps = 80;
  const auto pmf = exact_pmf(m, alpha);
  const auto M = metropolis_matrix(kernel_matrix(m, alpha, eta, discrete_method::one_stage), pmf, 64);
  EXPECT_LT(tv(stationary(M, 64), pmf), 1e-12);
  EXPECT_LT(tv(law_after(M, 64, steps), pmf), 1e-3);
  const double allowance = tv_allowance(pmf, n);
  const double mh = tv(histogram(run_chains(m, n, discrete_method::metropolis, alpha, eta, steps, 12), q.d), pmf);
  const double unadjusted =
      tv(histogram(run_chains(m, n, discrete_method::one_stage, alpha, eta, steps, 12), q.d), pmf);
  std::printf("[ metropolis ] TV to q %.4f, allowance %.4f (one-stage, same settings: %.4f)\n", mh, allowance,
              unadjusted);
  EXPECT_LT(mh, allowance);
  EXPECT_GT(unadjusted, allowance);
}

TEST(DiscreteLangevin, UnadjustedChainsFollowTheirKernelsStationaryLaws) {
  // The one-stage and two-stage chains (alpha = 1, eta = 1.5, 80 steps) against the exact stationary law pi_eta of
  // the kernel the README gives (transition matrix over the 64 states from the library's FP64 score; its law after
  // 80 steps from the uniform start is within 1e-3 of pi_eta, checked): TV below the allowance, while TV(pi_eta, q)
  // is well above it, so the test tells the kernel from the target.
  const auto q = random_problem(6, 3, 11);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 1 << 15;
  const double alpha = 1.0, eta = 1.5;
  const int steps = 80;
  const auto pmf = exact_pmf(m, alpha);
  for (auto method : {discrete_method::one_stage, discrete_method::two_stage}) {
    const auto T = kernel_matrix(m, alpha, eta, method);
    const auto pi = stationary(T, 64);
    EXPECT_LT(tv(law_after(T, 64, steps), pi), 1e-3);
    const double allowance = tv_allowance(pi, n);
    const double got = tv(histogram(run_chains(m, n, method, alpha, eta, steps, 13), q.d), pi);
    std::printf("[ %s ] TV to the kernel's stationary law %.4f, allowance %.4f; TV(pi_eta, q) = %.4f\n",
                to_string(method), got, allowance, tv(pi, pmf));
    EXPECT_LT(got, allowance) << to_string(method);
    EXPECT_GT(tv(pi, pmf), 2 * allowance) << to_string(method);
  }
}

TEST(DiscreteLangevin, OneStepFromAFixedStateFollowsTheKernelRow) {
  // One step of 2^15 chains from the same state s0 on {-1,1}^6 (alpha = 1, eta = 1.5): the empirical law of the next
  // state against row s0 of the exact kernel (README formulas, library FP64 score; the Metropolis row accepts the
  // one-stage proposal with min(1, q(t) T(t, s0) / (q(s0) T(s0, t)))), within tv_allowance. A single step is not
  // washed out by mixing, so the flip probabilities themselves are pinned: power, checked below, against the row of
  // the same kernel at 2 eta (every 2 / eta logit halved) and against the row with every logit halved (two-stage).
  const auto q = random_problem(6, 3, 11);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const int S = 64;
  const std::int64_t n = 1 << 15;
  const double alpha = 1.0, eta = 1.5;
  const auto pmf = exact_pmf(m, alpha);
  auto row = [&](const std::vector<double>& T, int s) { return std::vector<double>(T.begin() + s * S, T.begin() + (s + 1) * S); };
  for (auto method : {discrete_method::one_stage, discrete_method::metropolis, discrete_method::two_stage}) {
    const auto kernel = [&](double e) {
      const auto T = kernel_matrix(m, alpha, e, method == discrete_method::metropolis ? discrete_method::one_stage : method);
      return method == discrete_method::metropolis ? metropolis_matrix(T, pmf, S) : T;
    };
    const auto T = kernel(eta), T2 = kernel(2 * eta);
    for (int s0 : {0b101100, 0b010011, 0b111111}) {
      const auto want = row(T, s0);
      const double allowance = tv_allowance(want, n);
      std::vector<float> y(n * q.d);
      const auto start = state(s0, q.d);
      for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < q.d; ++j) y[i * q.d + j] = float(start[j]);
      discrete_langevin_options o;
      o.method = method;
      o.alpha = alpha;
      o.eta = eta;
      o.steps = 1;
      o.seed = 21;
      o.first_step = 7;
      discrete_langevin(m, y.data(), {}, n, o, {executor::cpu});
      const double got = tv(histogram(y, q.d), want);
      EXPECT_LT(got, allowance) << to_string(method) << " from state " << s0;
      // Power: the kernel at 2 eta is far from this one at every start used.
      EXPECT_GT(tv(row(T2, s0), want), 2 * allowance) << to_string(method) << " from state " << s0;
    }
  }
  // Power for the two-stage y | z logit: halving it (sigmoid(score + z / eta) for sigmoid(2 score + 2 z / eta))
  // moves the row by more than twice the allowance too.
  std::vector<double> ys, score(S * q.d);
  for (int s = 0; s < S; ++s)
    for (double v : state(s, q.d)) ys.push_back(v);
  m.evaluate_fp64(score.data(), S, ys.data(), alpha, quantity::score);
  const auto T = kernel_matrix(m, alpha, eta, discrete_method::two_stage);
  const double f = sig(-2 / eta);
  const int s0 = 0b101100;
  std::vector<double> halved(S, 0.0);
  for (int z = 0; z < S; ++z) {
    const int flips = __builtin_popcount(unsigned(s0 ^ z));
    const double pz = std::pow(f, flips) * std::pow(1 - f, q.d - flips);
    for (int t = 0; t < S; ++t) {
      double pr = 1;
      for (int j = 0; j < q.d; ++j) {
        const double plus = sig(score[z * q.d + j] + ys[z * q.d + j] / eta);
        pr *= (t >> j) & 1 ? plus : 1 - plus;
      }
      halved[t] += pz * pr;
    }
  }
  EXPECT_GT(tv(halved, row(T, s0)), 2 * tv_allowance(row(T, s0), n));
}

/// The eta -> 0 limit of an unadjusted kernel, as a transition matrix with the same stationary law. For small eta
/// both chains move by rare single flips (the one-stage flips y_j with probability ~ e^{-2/eta} e^{-a}, the two-stage
/// proposes z = y with z_j flipped with probability ~ e^{-4/eta} and keeps it, or draws y'_j != z_j = y_j with
/// probability ~ e^{-4/eta} e^{-2a}; a = y_j s_j(y)), so in time units of these probabilities they become jump
/// processes with flip rates e^{-a} (one-stage) and 1 + e^{-2a} (two-stage). Returned uniformised: I + Q / lambda.
std::vector<double> small_eta_limit(const bernoulli_mixture& m, double alpha, discrete_method method) {
  const int d = int(m.dim()), S = 1 << d;
  std::vector<double> ys, score(S * d);
  for (int s = 0; s < S; ++s)
    for (double v : state(s, d)) ys.push_back(v);
  m.evaluate_fp64(score.data(), S, ys.data(), alpha, quantity::score);
  std::vector<double> T(S * S, 0.0);
  double lambda = 0;
  for (int s = 0; s < S; ++s) {
    double out = 0;
    for (int j = 0; j < d; ++j) {
      const double a = ys[s * d + j] * score[s * d + j];
      const double rate = method == discrete_method::one_stage ? std::exp(-a) : 1 + std::exp(-2 * a);
      T[s * S + (s ^ (1 << j))] = rate;
      out += rate;
    }
    lambda = std::max(lambda, 2 * out);
  }
  for (int s = 0; s < S; ++s) {
    double stay = 1;
    for (int t = 0; t < S; ++t)
      if (t != s) stay -= (T[s * S + t] /= lambda);
    T[s * S + s] = stay;
  }
  return T;
}

TEST(DiscreteLangevin, BiasAgainstEtaAndAlpha) {
  // Exact bias TV(pi_eta, q) of the unadjusted chains' stationary laws on {-1,1}^6 (no sampling error), against the
  // theory (README, "Discrete samplers"): as eta -> 0 each pi_eta tends to the stationary law pi_0 of its small-eta
  // jump process (small_eta_limit), which is not q: detailed balance with q needs the flip rates' ratio
  // r(y -> y^j) / r(y^j -> y) = q(y^j) / q(y) = e^{-D}, D = log q(y) - log q(y^j), and the limits give e^{-(a + b)}
  // (one-stage: the trapezoid rule for D) and (1 + e^{-2a}) / (1 + e^{2b}) (two-stage), a = y_j s_j(y),
  // b = y_j s_j(y^j). So the bias does not vanish with eta; it levels off at TV(pi_0, q), which vanishes only with
  // alpha (D - (a + b) = O(alpha^3), and (1 + e^{-2a}) / (1 + e^{2b}) = e^{-(a + b) + (a - b) tanh((a + b) / 2) + ..}).
  // Asserted: TV(pi_eta, pi_0) shrinks strictly with eta and is below 2% of the floor at eta = 0.25; the one-stage
  // bias falls with eta; the floors are positive and shrink at least 4-fold each time alpha halves.
  const auto q = random_problem(6, 3, 11);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const double etas[] = {4, 2, 1, 0.5, 0.25};
  const discrete_method methods[] = {discrete_method::one_stage, discrete_method::two_stage};
  std::printf("  alpha    eta   one_stage  (to pi_0)   two_stage  (to pi_0)   exact TV of the stationary law to q "
              "and to the eta -> 0 limit pi_0\n");
  std::vector<double> at_eta1;
  double previous_floor[2] = {1, 1};
  for (double alpha : {1.0, 0.5, 0.25}) {
    const auto pmf = exact_pmf(m, alpha);
    std::vector<double> limit[2], floor(2);
    for (int i = 0; i < 2; ++i) {
      limit[i] = stationary(small_eta_limit(m, alpha, methods[i]), 64);
      floor[i] = tv(limit[i], pmf);
    }
    std::printf("  %5.2f   -> 0   %9.5f              %9.5f\n", alpha, floor[0], floor[1]);
    double previous = 1, previous_gap[2] = {1, 1};
    for (double eta : etas) {
      double bias[2], gap[2];
      for (int i = 0; i < 2; ++i) {
        const auto pi = stationary(kernel_matrix(m, alpha, eta, methods[i]), 64);
        bias[i] = tv(pi, pmf);
        gap[i] = tv(pi, limit[i]);
        EXPECT_LT(gap[i], previous_gap[i]) << to_string(methods[i]) << ": pi_eta must approach pi_0 (alpha " << alpha
                                           << ", eta " << eta << ")";
        previous_gap[i] = gap[i];
      }
      std::printf("  %5.2f  %5.2f   %9.5f  %9.2e   %9.5f  %9.2e\n", alpha, eta, bias[0], gap[0], bias[1], gap[1]);
      EXPECT_LT(bias[0], previous) << "one-stage bias must shrink with eta (alpha " << alpha << ", eta " << eta << ")";
      previous = bias[0];
      if (eta == 1) at_eta1.push_back(std::max(bias[0], bias[1]));
    }
    for (int i = 0; i < 2; ++i) {
      EXPECT_LT(previous_gap[i], 0.02 * floor[i]) << to_string(methods[i]) << " at eta 0.25, alpha " << alpha;
      EXPECT_GT(floor[i], 1e-4) << to_string(methods[i]) << ": the limit is not q (alpha " << alpha << ")";
      EXPECT_LT(floor[i], 0.25 * previous_floor[i]) << to_string(methods[i]) << ": floor must fall with alpha";
      previous_floor[i] = floor[i];
    }
  }
  EXPECT_LT(at_eta1[1], 0.5 * at_eta1[0]);
  EXPECT_LT(at_eta1[2], 0.5 * at_eta1[1]);
}

TEST(DiscreteLangevin, BitIdenticalAcrossChainAndStepSplits) {
  // One call of 64 chains x 40 steps equals two calls split by chains (first_chain) and two calls split by steps
  // (first_step), bit for bit, for every method; accepted counts add up.
  const auto q = random_problem(5, 2, 14);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 64, d = q.d;
  for (auto method : {discrete_method::one_stage, discrete_method::metropolis, discrete_method::two_stage}) {
    discrete_langevin_options o;
    o.method = method;
    o.alpha = 0.8;
    o.eta = 1.5;
    o.steps = 40;
    o.seed = 15;
    o.start_uniform = true;
    std::vector<float> one(n * d), chains(n * d), steps(n * d);
    std::vector<std::int64_t> acc(n), acc_a(n), acc_b(n);
    discrete_langevin(m, one.data(), {acc.data()}, n, o, {executor::cpu});
    auto part = o;
    part.first_chain = 0;
    discrete_langevin(m, chains.data(), {}, 24, part, {executor::cpu});
    part.first_chain = 24;
    discrete_langevin(m, chains.data() + 24 * d, {}, n - 24, part, {executor::cpu});
    part = o;
    part.steps = 15;
    discrete_langevin(m, steps.data(), {acc_a.data()}, n, part, {executor::cpu});
    part.start_uniform = false;
    part.first_step = 15;
    part.steps = 25;
    discrete_langevin(m, steps.data(), {acc_b.data()}, n, part, {executor::cpu});
    EXPECT_EQ(one, chains) << to_string(method);
    EXPECT_EQ(one, steps) << to_string(method);
    for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(acc[i], acc_a[i] + acc_b[i]);
    for (float v : one) EXPECT_TRUE(v == 1.f || v == -1.f);
  }
}

TEST(DiscreteLangevin, RefusesStartStatesOtherThanPlusMinusOne) {
  // The caller's start must lie on {-1,1}^d. On the CPU executor (host data) every entry is checked before the run:
  // a value other than +1 or -1 (0, +-0.5, 2, -0.0, +-inf, NaN) throws invalid_argument naming y, the entry, its chain
  // and coordinate, and leaves y and the counts untouched. With start_uniform the input is not read, so any content
  // is accepted.
  const auto q = random_problem(3, 2, 51);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 4, d = q.d;
  discrete_langevin_options o;
  o.steps = 3;
  o.seed = 52;
  for (const float bad : {0.f, 0.5f, -0.5f, 2.f, -0.f, INFINITY, -INFINITY, NAN}) {
    std::vector<float> y(n * d, 1.f);
    for (std::int64_t i = 0; i < n * d; i += 2) y[i] = -1.f;
    y[2 * d + 1] = bad;  // chain 2, coordinate 1: entry 7
    const std::vector<float> before = y;
    std::vector<std::int64_t> accepted(n, 99);
    try {
      discrete_langevin(m, y.data(), {accepted.data()}, n, o, {executor::cpu});
      ADD_FAILURE() << "start entry " << bad << " accepted";
    } catch (const invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("y: entry 7 (chain 2, coordinate 1)"), std::string::npos) << what;
      EXPECT_NE(what.find("+1 or -1"), std::string::npos) << what;
    }
    EXPECT_EQ(std::memcmp(y.data(), before.data(), y.size() * sizeof(float)), 0) << bad;
    EXPECT_EQ(accepted, std::vector<std::int64_t>(n, 99)) << bad;
    auto uniform = o;
    uniform.start_uniform = true;
    EXPECT_NO_THROW(discrete_langevin(m, y.data(), {accepted.data()}, n, uniform, {executor::cpu})) << bad;
    for (float v : y) EXPECT_TRUE(v == 1.f || v == -1.f);
  }
}

TEST(DiscreteLangevin, ChainFunctorMarksAnInvalidStartWithNaN) {
  // Device-resident starts are not scanned before the launch (that would need a synchronising read-back): the chain
  // functor both executors run writes NaN over a chain whose start has an entry other than +-1 and -1 to its
  // accepted count, and leaves every other chain as a run without it would leave it. Called
  // here directly, on the host, over a mixture view built from the FP32 parameters.
  const int d = 3, K = 1;
  const std::vector<float> theta{0.3f, -0.2f, 0.1f}, log_weights{0.f};
  std::vector<float> logcosh_theta;
  for (float t : theta) logcosh_theta.push_back(float(kernels::logcosh(double(t))));
  kernels::discrete_params p{};
  p.mix = {log_weights.data(), theta.data(), logcosh_theta.data(), K, d};
  p.alpha = 1.f;
  p.eta = 1.f;
  p.method = 1;
  p.steps = 5;
  p.seed = 53;
  p.log_norm = float(kernels::bernoulli_reduced_norm(d, 1.0));
  const std::int64_t n = 3;
  std::vector<std::int64_t> accepted(n, 99);
  p.accepted = accepted.data();
  std::vector<float> x{1, -1, 1, 1, 0.5f, -1, -1, -1, 1}, ws(4 * n * d);
  const std::vector<float> start = x;
  const kernels::binary_chain_functor<kernels::discrete_langevin_body> f{{p, false}, x.data(), ws.data(), n, d,
                                                                          false, true};
  for (std::int64_t i = 0; i < n; ++i) f(i);
  for (int j = 0; j < d; ++j) EXPECT_TRUE(std::isnan(x[d + j])) << j;
  EXPECT_EQ(accepted[1], -1);
  // The valid chains ran: the same as a run of those two chains alone (chain ids kept by first_chain).
  for (std::int64_t i : {0, 2}) {
    std::vector<float> one(start.begin() + i * d, start.begin() + (i + 1) * d), ws1(4 * d);
    std::vector<std::int64_t> acc1(1);
    auto p1 = p;
    p1.first_chain = std::uint64_t(i);
    p1.accepted = acc1.data();
    const kernels::binary_chain_functor<kernels::discrete_langevin_body> g{{p1, false}, one.data(), ws1.data(), 1, d,
                                                                            false, true};
    g(0);
    for (int j = 0; j < d; ++j) EXPECT_EQ(x[i * d + j], one[j]) << i << " " << j;
    EXPECT_EQ(accepted[i], acc1[0]);
    EXPECT_GE(accepted[i], 0);
  }
}

// --- discrete walk-jump ---------------------------------------------------------------------------------------

namespace {

/// Exact law of sign(E[x | u]) (ties to +1) where u = y_1 + ... + y_m, y_i = x o eps_i: u_j = x_j c_j with c_j the
/// sum of m independent +-1 flips, so u's law is sum_k w_k prod_j P_k(u_j), enumerated over {-m, -m+2, .., m}^d.
std::vector<double> jump_law(const bernoulli_mixture& m, const problem_params& q, double alpha, int measurements) {
  const int d = q.d, levels = measurements + 1;
  std::vector<double> flip_sum(levels);  // P(c = m - 2 i): i flips to -1
  const double f = sig(-2 * alpha);
  for (int i = 0; i < levels; ++i)
    flip_sum[i] = std::tgamma(measurements + 1.0) / (std::tgamma(i + 1.0) * std::tgamma(measurements - i + 1.0)) *
                  std::pow(f, i) * std::pow(1 - f, measurements - i);
  std::vector<double> law(1 << d, 0.0);
  double wsum = 0;
  for (double w : q.weights) wsum += w;
  int total = 1;
  for (int j = 0; j < d; ++j) total *= levels;
  std::vector<double> u(d), den(d);
  for (int code = 0; code < total; ++code) {
    int c = code;
    std::vector<int> level(d);
    for (int j = 0; j < d; ++j) level[j] = c % levels, c /= levels;
    for (int j = 0; j < d; ++j) u[j] = measurements - 2.0 * level[j];
    double pu = 0;
    for (std::size_t k = 0; k < q.weights.size(); ++k) {
      double prod = q.weights[k] / wsum;
      for (int j = 0; j < d; ++j) {
        // u_j = x_j c_j: x_j = +1 with c_j = u_j, or x_j = -1 with c_j = -u_j (level index (m - c) / 2).
        const double p = q.probabilities[k * d + j];
        const int i_plus = level[j], i_minus = measurements - level[j];
        prod *= p * flip_sum[i_plus] + (1 - p) * flip_sum[i_minus];
      }
      pu += prod;
    }
    m.evaluate_fp64(den.data(), 1, u.data(), alpha, quantity::denoiser);
    int s = 0;
    for (int j = 0; j < d; ++j) s |= (den[j] >= 0 ? 1 : 0) << j;
    law[s] += pu;
  }
  return law;
}

}  // namespace

TEST(DiscreteWalkJump, JumpLawIsExact) {
  // Metropolis walk (alpha = 0.8, eta = 1.5, 80 steps per measurement) then the jump sign(E[x | y_1..m]), for
  // m = 1 and 3 measurements, 2^15 chains on {-1,1}^6: the jumps' law against the exact law of sign(E[x | u]) under
  // the measurements' joint law (enumerated through u's law). Power: the same check with the m = 1 law in place of
  // the m = 3 one fails (printed).
  const auto q = random_problem(6, 3, 21);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 1 << 15;
  const double alpha = 0.8;
  std::vector<double> law1;
  for (int measurements : {1, 3}) {
    discrete_walk_jump_options o;
    o.alpha = alpha;
    o.eta = 1.5;
    o.steps = 80;
    o.measurements = measurements;
    o.seed = 22;
    std::vector<float> x(n * q.d);
    discrete_walk_jump(m, x.data(), {}, n, o, {executor::cpu});
    const auto law = jump_law(m, q, alpha, measurements);
    if (measurements == 1) law1 = law;
    const double got = tv(histogram(x, q.d), law), allowance = tv_allowance(law, n);
    std::printf("[ walk-jump m = %d ] TV to the exact jump law %.4f, allowance %.4f (to the m = 1 law: %.4f)\n",
                measurements, got, allowance, tv(histogram(x, q.d), law1));
    EXPECT_LT(got, allowance) << measurements << " measurements";
    if (measurements == 3) {
      EXPECT_GT(tv(histogram(x, q.d), law1), allowance);
    }
  }
}

TEST(DiscreteWalkJump, MeanOutputIsTheDenoiserOfTheMeasurementSum) {
  // With mean = true the output is E[x | y_1..m] at the returned sum of measurements (FP32 evaluate, same inputs:
  // equal to rounding), the sum has entries in {-m, .., m} of m's parity, and the sign output is its sign.
  const auto q = random_problem(7, 3, 23);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 200, d = q.d;
  discrete_walk_jump_options o;
  o.alpha = 0.6;
  o.steps = 20;
  o.measurements = 4;
  o.mean = true;
  o.seed = 24;
  std::vector<float> x(n * d), u(n * d), den(n * d), sign(n * d);
  discrete_walk_jump(m, x.data(), {u.data(), nullptr}, n, o, {executor::cpu});
  m.evaluate(den.data(), n, u.data(), o.alpha, quantity::denoiser, {executor::cpu});
  o.mean = false;
  discrete_walk_jump(m, sign.data(), {}, n, o, {executor::cpu});
  for (std::int64_t i = 0; i < n * d; ++i) {
    EXPECT_NEAR(x[i], den[i], 1e-6);
    EXPECT_EQ(sign[i], x[i] >= 0 ? 1.f : -1.f);
    EXPECT_TRUE(std::fabs(u[i]) <= 4 && std::fmod(std::fabs(u[i]), 2.f) == 0.f) << u[i];
  }
}

// --- GPU ------------------------------------------------------------------------------------------------------

TEST(BinaryGpu, MatchesTheCpuExecutor) {
  // The same functors on the CUDA executor. Uniform draws are identical, but the flip probabilities come from FP32
  // exponentials and divisions whose device versions may differ from the host's in the last bits, so a chain can
  // take one different decision and from there a different path: at most 2% of the chains may differ at all, and the
  // coordinate means of the two runs agree within 5 standard errors of a difference of means (sqrt(2 / n) for +-1
  // entries). evaluate() to 1e-5.
  DIFFSAMPLE_REQUIRE_GPU();
  const auto q = random_problem(64, 5, 31);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const std::int64_t n = 4096, d = q.d;
  for (auto method : {discrete_method::one_stage, discrete_method::metropolis, discrete_method::two_stage}) {
    discrete_walk_jump_options o;
    o.method = method;
    o.alpha = 0.7;
    o.steps = 30;
    o.measurements = 2;
    o.seed = 32;
    std::vector<float> cpu(n * d);
    discrete_walk_jump(m, cpu.data(), {}, n, o, {executor::cpu});
    diffsample::testing::device_buffer<float> dx(n * d);
    discrete_walk_jump(m, dx.ptr, {}, n, o, {executor::cuda});
    const auto gpu = dx.download();
    std::int64_t chains_differing = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      bool same = true;
      for (std::int64_t j = 0; j < d; ++j) same = same && cpu[i * d + j] == gpu[i * d + j];
      chains_differing += !same;
    }
    EXPECT_LE(chains_differing, n / 50) << to_string(method);
    for (std::int64_t j = 0; j < d; ++j) {
      double mc = 0, mg = 0;
      for (std::int64_t i = 0; i < n; ++i) mc += cpu[i * d + j], mg += gpu[i * d + j];
      EXPECT_NEAR(mc / n, mg / n, 5 * std::sqrt(2.0 / n)) << to_string(method) << " coordinate " << j;
    }
  }
  std::vector<float> y(n * d), out_cpu(n * d);
  m.sample(y.data(), n, 0.7, 33, nullptr, 0, {executor::cpu});
  m.evaluate(out_cpu.data(), n, y.data(), 0.7, quantity::score, {executor::cpu});
  diffsample::testing::device_buffer<float> dy(y), dout(n * d);
  m.evaluate(dout.ptr, n, dy.ptr, 0.7, quantity::score, {executor::cuda});
  const auto out_gpu = dout.download();
  for (std::int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(out_gpu[i], out_cpu[i], 1e-5);
}

// Every step of the discrete walk-jump, rebuilt chain by chain in FP64: the uniform start from bits of the reserved
// stream (seed, chain, limits::max_stream_steps - 1), then for measurement r and step k the stream (seed, chain,
// r steps + k) read as cuRAND's uniforms in order (curand_init / curand_uniform, as documented), each method's
// kernel from its formula (README "Discrete samplers") with the score alpha E[x | u + y] from brute_force() (u the
// sum of the earlier measurements), the sum of the measurements as outputs.noisy, the accepted moves, and the jump
// E[x | u] or its sign. The library's decisions compare an FP32 probability with the uniform, the reference's an
// FP64 one: they differ only when the uniform falls within ~1e-6 of the threshold, so with some 10^4 decisions the
// expected number of chains that part ways is about 0.01; one in fifty is allowed. A measurement keyed to another
// stream step (r (steps + 1) + k), a jump at another point, or a wrong kernel moves almost every chain.
// Seen failing with measurement r keyed r (steps + 1) + k, which every other test of this file passed (its law is
// the same).
TEST(DiscreteWalkJump, EveryStepFollowsTheDocumentedStreamAndKernel) {
  const auto q = random_problem(5, 2, 31);
  const bernoulli_mixture m(q.d, q.weights, q.probabilities);
  const int d = q.d;
  const std::int64_t n = 19;
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  int parted = 0, chains = 0;
  for (discrete_method method : {discrete_method::one_stage, discrete_method::metropolis, discrete_method::two_stage}) {
    for (bool mean : {false, true}) {
      discrete_walk_jump_options o;
      o.method = method;
      o.alpha = 0.8;
      o.eta = 1.5;
      o.steps = 4;
      o.measurements = 3;
      o.mean = mean;
      o.seed = 21;
      o.first_chain = 2;
      std::vector<float> x(n * d), noisy(n * d);
      std::vector<std::int64_t> accepted(n);
      discrete_walk_jump(m, x.data(), {noisy.data(), accepted.data()}, n, o, {executor::cpu});
      for (std::int64_t i = 0; i < n; ++i) {
        const std::uint64_t chain = o.first_chain + std::uint64_t(i);
        std::vector<double> y(d), u(d, 0.0), s, sp;
        curandStatePhilox4_32_10_t st;
        curand_init(o.seed, chain, std::uint64_t(limits::max_stream_steps - 1) << 34, &st);
        const unsigned bits = curand(&st);
        for (int j = 0; j < d; ++j) y[j] = (bits >> j) & 1u ? 1.0 : -1.0;
        // E[x | u + v] into out; returns log q(u + v) up to a constant.
        auto score_at = [&](const std::vector<double>& v, std::vector<double>& out) {
          std::vector<double> point(d);
          for (int j = 0; j < d; ++j) point[j] = u[j] + v[j];
          double pmf;
          brute_force(q, point, o.alpha, pmf, out);
          return std::log(pmf);
        };
        std::int64_t moves = 0;
        for (std::int64_t r = 0; r < o.measurements; ++r) {
          for (std::int64_t k = 0; k < o.steps; ++k) {
            curand_init(o.seed, chain, std::uint64_t(r * o.steps + k) << 34, &st);
            if (method == discrete_method::two_stage) {
              for (int j = 0; j < d; ++j)
                if (curand_uniform(&st) < sig(-2 / o.eta)) y[j] = -y[j];
              score_at(y, s);
              for (int j = 0; j < d; ++j) y[j] = curand_uniform(&st) <= sig(2 * (o.alpha * s[j] + y[j] / o.eta)) ? 1 : -1;
              ++moves;
              continue;
            }
            const double log_q = score_at(y, s);
            std::vector<double> proposal = y;
            double forward = 0;
            for (int j = 0; j < d; ++j) {
              const double a = o.alpha * s[j] * y[j] + 2 / o.eta;  // flip with probability sigmoid(-a)
              const bool flip = curand_uniform(&st) < sig(-a);
              if (flip) proposal[j] = -y[j];
              forward += std::log(sig(flip ? -a : a));
            }
            if (method == discrete_method::one_stage) {
              y = proposal;
              ++moves;
              continue;
            }
            const double log_q_new = score_at(proposal, sp);
            double backward = 0;
            for (int j = 0; j < d; ++j) {
              const double a = o.alpha * sp[j] * proposal[j] + 2 / o.eta;
              backward += std::log(sig(proposal[j] != y[j] ? -a : a));
            }
            if (std::log(curand_uniform(&st)) < log_q_new - log_q + backward - forward) {
              y = proposal;
              ++moves;
            }
          }
          for (int j = 0; j < d; ++j) u[j] += y[j];
        }
        double unused;
        brute_force(q, u, o.alpha, unused, s);
        bool same = accepted[i] == moves;
        for (int j = 0; j < d; ++j) {
          same = same && noisy[i * d + j] == float(u[j]);
          const double jump = mean ? s[j] : (s[j] >= 0 ? 1.0 : -1.0);
          same = same && std::fabs(x[i * d + j] - jump) < 1e-5;
        }
        parted += same ? 0 : 1;
        ++chains;
      }
    }
  }
  EXPECT_LE(parted, chains / 50) << parted << " of " << chains << " chains differ from their FP64 rebuild";
}
