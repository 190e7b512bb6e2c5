// Host metrics: the sliced Wasserstein reference (random unit directions from the Philox stream, exact 1-D W_p
// between the sorted FP64 projections of possibly different sizes) and component weights recovered from samples
// (average posterior responsibilities, FP64).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/linalg.cuh"
#include "kernels/metrics.cuh"
#include "kernels/rng.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/pool.hpp"
#include "src/cpu/radix_sort.hpp"
#include "src/cuda_check.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/metrics.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample {

namespace {

// Throws naming the first non-finite value of an n x d host array.
void check_samples_finite(const char* name, const float* x, std::int64_t n, std::int64_t d) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j)
      DIFFSAMPLE_EXPECTS(std::isfinite(x[i * d + j]),
                         name << "[" << i << "][" << j << "]: sample values must be finite, got " << x[i * d + j]);
}

}  // namespace

void detail::check_sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t d, int directions, int p,
                                      const char* directions_name) {
  limits::check("dim", d, 1, limits::max_int_count);
  DIFFSAMPLE_EXPECTS(n_a >= 1, "n_a: must be >= 1, got " << n_a);
  DIFFSAMPLE_EXPECTS(n_b >= 1, "n_b: must be >= 1, got " << n_b);
  detail::check_count("n_a", n_a, d);
  detail::check_count("n_b", n_b, d);
  DIFFSAMPLE_EXPECTS(directions >= 1, directions_name << ": must be >= 1, got " << directions);
  DIFFSAMPLE_EXPECTS(p == 1 || p == 2, "p: must be 1 or 2, got " << p);
}

double sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t d, const float* a, const float* b,
                          int directions, std::uint64_t seed, int p) {
  detail::check_sliced_wasserstein(n_a, n_b, d, directions, p);
  DIFFSAMPLE_EXPECTS(a != nullptr && b != nullptr, "a, b: null pointer");
  DIFFSAMPLE_EXPECTS(detail::pointer_kind(a) != detail::memory_kind::device &&
                         detail::pointer_kind(b) != detail::memory_kind::device,
                     "a, b: sliced_wasserstein reads host memory; got a device pointer");
  check_samples_finite("a", a, n_a, d);
  check_samples_finite("b", b, n_b, d);
  // Directions run in parallel (one fork/join per call) in groups of up to 8, each group's projections and sorts
  // on one thread; the per-direction values are summed in direction order, so the result does not depend on the
  // thread count. The CPU executor's SIMD target projects a group's directions in lanes (cpu::run_projection: bit
  // for bit the scalar loop below) and radix-sorts them; the scalar target runs the scalar loop and std::sort.
  const cpu::simd_target target = cpu::chain_target();
  constexpr int group = 8;
  std::vector<double> value(static_cast<std::size_t>(directions));
  cpu::parallel_for_range(
      (directions + group - 1) / group,
      [&](std::int64_t first, std::int64_t last) {
        std::vector<double> u(group * d), pa(group * n_a), pb(group * n_b), tmp(std::max(n_a, n_b));
        auto project = [&](const float* x, std::int64_t n, int count, std::vector<double>& out) {
          if (target != cpu::simd_target::scalar) {
            cpu::run_projection(target, u.data(), count, x, n, d, out.data(), n);
          } else {
            for (int c = 0; c < count; ++c)
              for (std::int64_t i = 0; i < n; ++i) {
                double s = 0;
                for (std::int64_t j = 0; j < d; ++j) s += u[c * d + j] * x[i * d + j];
                out[c * n + i] = s;
              }
          }
          for (int c = 0; c < count; ++c) {
            if (target != cpu::simd_target::scalar)
              cpu::radix_sort(out.data() + c * n, n, tmp.data());  // the same sorted values as std::sort
            else
              std::sort(out.begin() + c * n, out.begin() + (c + 1) * n);
          }
        };
        for (std::int64_t g = first; g < last; ++g) {
          const std::int64_t t0 = g * group;
          const int count = static_cast<int>(std::min<std::int64_t>(group, directions - t0));
          for (int c = 0; c < count; ++c) kernels::direction_functor{u.data(), seed, t0, int(d)}(c);
          project(a, n_a, count, pa);
          project(b, n_b, count, pb);
          for (int c = 0; c < count; ++c)
            value[t0 + c] = kernels::wasserstein_1d_pow(pa.data() + c * n_a, n_a, pb.data() + c * n_b, n_b, p);
        }
      },
      1);
  double sum = 0;
  for (const double v : value) sum += v;
  const double mean = sum / directions;
  return p == 1 ? mean : std::sqrt(mean);
}

namespace {

void check_weight_samples(const float* x, std::int64_t n, std::int64_t d) {
  DIFFSAMPLE_EXPECTS(n >= 1, "n: must be >= 1, got " << n);
  detail::check_count("n", n, d);
  DIFFSAMPLE_EXPECTS(x != nullptr, "x: null pointer for " << n << " samples");
  DIFFSAMPLE_EXPECTS(detail::pointer_kind(x) != detail::memory_kind::device,
                     "x: component_weights reads host memory; got a device pointer");
  check_samples_finite("x", x, n, d);
}

// Average over the n samples of softmax_k(logits(x_i)). `logits(xi, out, work)` writes K log-weights of sample xi,
// with `work` a per-thread buffer of `work_size` doubles. Samples are cut into at most 256 blocks whose size depends
// on n only; each block is summed in sample order and the blocks in block order, whatever the thread count.
template <class Logits>
std::vector<double> average_responsibility(std::int64_t K, std::int64_t d, const float* x, std::int64_t n,
                                           std::size_t work_size, const Logits& logits) {
  const std::int64_t block = std::max<std::int64_t>(1024, (n + 255) / 256);
  const std::int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(static_cast<std::size_t>(blocks * K), 0.0);
  cpu::parallel_for_range(blocks, [&](std::int64_t first_block, std::int64_t last_block) {
    std::vector<double> lg(K), work(work_size);
    for (std::int64_t blk = first_block; blk < last_block; ++blk) {
      double* acc = partial.data() + blk * K;
      const std::int64_t end = std::min(n, (blk + 1) * block);
      for (std::int64_t i = blk * block; i < end; ++i) {
        logits(x + i * d, lg.data(), work.data());
        double mx = -INFINITY;
        for (std::int64_t k = 0; k < K; ++k) mx = std::max(mx, lg[k]);
        double total = 0;
        for (std::int64_t k = 0; k < K; ++k) total += (lg[k] = std::exp(lg[k] - mx));
        for (std::int64_t k = 0; k < K; ++k) acc[k] += lg[k] / total;
      }
    }
  }, 1);
  std::vector<double> sum(K, 0.0);
  for (std::int64_t blk = 0; blk < blocks; ++blk)
    for (std::int64_t k = 0; k < K; ++k) sum[k] += partial[blk * K + k];
  for (auto& s : sum) s /= double(n);
  return sum;
}

// z = L^-1 v by forward substitution (z may not alias v).
template <class T>
void forward_solve(const double* L, std::int64_t d, const T* v, double* z) {
  for (std::int64_t i = 0; i < d; ++i) {
    double s = v[i];
    for (std::int64_t m = 0; m < i; ++m) s -= L[i * d + m] * z[m];
    z[i] = s / L[i * d + i];
  }
}

// z = L^-T v by back substitution (z may not alias v).
void backward_solve(const double* L, std::int64_t d, const double* v, double* z) {
  for (std::int64_t i = d - 1; i >= 0; --i) {
    double s = v[i];
    for (std::int64_t m = i + 1; m < d; ++m) s -= L[m * d + i] * z[m];
    z[i] = s / L[i * d + i];
  }
}

}  // namespace

std::vector<double> component_weights(const mixture_posterior& reference, std::int64_t n, const float* x) {
  const std::int64_t K = reference.components(), d = reference.dim();
  check_weight_samples(x, n, d);
  const auto& S = reference.covariances();
  const auto& m = reference.means();
  const auto& logw = reference.log_weights();
  // Components with the same covariance (e.g. unit prior covariances under one observation) share one factor L:
  // then the sample is whitened once, z = L^-1 x, and q_k = |z - L^-1 m_k|^2 costs K d per sample instead of K d^2.
  bool shared = true;
  for (std::int64_t k = 1; k < K && shared; ++k)
    shared = std::equal(S.begin() + k * d * d, S.begin() + (k + 1) * d * d, S.begin());
  const std::int64_t factors = shared ? 1 : K;
  std::vector<double> L(factors * d * d), half_logdet(K, 0.0);
  for (std::int64_t f = 0; f < factors; ++f) {
    std::copy(S.begin() + f * d * d, S.begin() + (f + 1) * d * d, L.begin() + f * d * d);
    DIFFSAMPLE_EXPECTS(kernels::cholesky(L.data() + f * d * d, d),
                       "reference: posterior covariance of component "
                           << f << " is not numerically positive definite (a degenerate posterior, e.g. sigma_y = 0);"
                           << " responsibilities need densities");
    double h = 0;
    for (std::int64_t j = 0; j < d; ++j) h += std::log(L[f * d * d + j * d + j]);
    for (std::int64_t k = shared ? 0 : f; k < (shared ? K : f + 1); ++k) half_logdet[k] = h;
  }
  if (shared) {
    // Centred at m_0: c_k = L^-1 (m_k - m_0) once, and per sample w = L^-1 (x - m_0), so that z_k = L^-1 (x - m_k) =
    // w - c_k. (It was L^-1 x - L^-1 m_k: for samples and means near 1e16 both terms are of order 1e16 / sqrt(S)
    // and their difference lost every digit.) The log-weights are then taken relative to the most likely component
    // r's, with q_k - q_r = sum_j (c_rj - c_kj) (z_kj + z_rj): q_k alone is |x - m_k|^2 / S, of order 1e16 for a
    // sample 1e8 deviations from the means, and its rounding was of the order of the differences the softmax takes.
    std::vector<double> c(K * d), centred(d);  // L^-1 (m_k - m_0)
    for (std::int64_t k = 0; k < K; ++k) {
      for (std::int64_t j = 0; j < d; ++j) centred[j] = m[k * d + j] - m[j];
      forward_solve(L.data(), d, centred.data(), c.data() + k * d);
    }
    return average_responsibility(K, d, x, n, std::size_t(2 * d), [&](const float* xi, double* lg, double* work) {
      double* diff = work;
      double* w = work + d;
      for (std::int64_t j = 0; j < d; ++j) diff[j] = double(xi[j]) - m[j];
      forward_solve(L.data(), d, diff, w);
      std::int64_t r = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        double q = 0;
        for (std::int64_t j = 0; j < d; ++j) {
          const double z = w[j] - c[k * d + j];
          q += z * z;
        }
        lg[k] = logw[k] - 0.5 * q - half_logdet[k];
        if (lg[k] > lg[r]) r = k;
      }
      for (std::int64_t k = 0; k < K; ++k) {
        double dq = 0;  // q_k - q_r
        for (std::int64_t j = 0; j < d; ++j)
          dq += (c[r * d + j] - c[k * d + j]) * ((w[j] - c[k * d + j]) + (w[j] - c[r * d + j]));
        if (k != r) lg[k] = logw[k] - logw[r] - 0.5 * dq;
      }
      lg[r] = 0;
    });
  }
  // Distinct covariances: the most likely component r from the whole forms q_k = |L_k^-1 (x - m_k)|^2, then each
  // other log-weight relative to r's from differences that do not cancel. With e = x - m_r, delta = m_r - m_k and
  // P_k = S_k^-1,
  //   q_k - q_r = delta^T P_k (2 e + delta) + e^T (P_k - P_r) e
  //             = 2 delta . p_k + |L_k^-1 delta|^2 + p_k^T (S_r - S_k) p_r,   p_k = P_k e, p_r = P_r e,
  // since P_k - P_r = P_k (S_r - S_k) P_r (the covariances' difference entry by entry, as the diagonal mixture's
  // form below takes 1 / v_k - 1 / v_r). The whole forms are of order |e|^2 / S and round by 2^-53 (q_k + q_r): for
  // a sample 1e8 deviations out they are near 1e16, and their rounding was of the order of the differences the
  // softmax takes. Here the means' part is exact to rounding and the covariances' part rounds by about
  // 2^-53 |p_k| |S_r - S_k| |p_r|: smaller by the covariances' relative difference, not zero (far out the weights
  // depend on the stored covariances' last bits). Costs three more triangular solves and one d x d product per
  // component and sample.
  return average_responsibility(K, d, x, n, std::size_t(6 * d), [&](const float* xi, double* lg, double* work) {
    double* diff = work;
    double* z = work + d;
    double* pr = work + 2 * d;
    double* pk = work + 3 * d;
    double* delta = work + 4 * d;
    double* ld = work + 5 * d;
    std::int64_t r = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      for (std::int64_t j = 0; j < d; ++j) diff[j] = double(xi[j]) - m[k * d + j];
      forward_solve(L.data() + k * d * d, d, diff, z);
      double q = 0;
      for (std::int64_t j = 0; j < d; ++j) q += z[j] * z[j];
      lg[k] = logw[k] - 0.5 * q - half_logdet[k];
      if (lg[k] > lg[r]) r = k;
    }
    const double* Lr = L.data() + r * d * d;
    const double* Sr = S.data() + r * d * d;
    for (std::int64_t j = 0; j < d; ++j) diff[j] = double(xi[j]) - m[r * d + j];  // e
    forward_solve(Lr, d, diff, z);
    backward_solve(Lr, d, z, pr);
    for (std::int64_t k = 0; k < K; ++k) {
      if (k == r) continue;
      const double* Lk = L.data() + k * d * d;
      const double* Sk = S.data() + k * d * d;
      forward_solve(Lk, d, diff, z);
      backward_solve(Lk, d, z, pk);
      for (std::int64_t j = 0; j < d; ++j) delta[j] = m[r * d + j] - m[k * d + j];
      forward_solve(Lk, d, delta, ld);
      double dq = 0;
      for (std::int64_t i = 0; i < d; ++i) {
        double row = 0;  // row i of (S_r - S_k) p_r
        for (std::int64_t j = 0; j < d; ++j) row += (Sr[i * d + j] - Sk[i * d + j]) * pr[j];
        dq += 2 * delta[i] * pk[i] + ld[i] * ld[i] + pk[i] * row;
      }
      lg[k] = logw[k] - logw[r] - 0.5 * dq - (half_logdet[k] - half_logdet[r]);
    }
    lg[r] = 0;
  });
}

std::vector<double> component_weights(const gaussian_mixture& reference, std::int64_t n, const float* x) {
  const std::int64_t K = reference.components(), d = reference.dim();
  check_weight_samples(x, n, d);
  const bool iso = reference.isotropic();
  const auto& mu = reference.means();
  const auto& v = reference.variances();
  std::vector<double> logw(K), half_logdet(K, 0.0);
  for (std::int64_t k = 0; k < K; ++k) {
    logw[k] = std::log(reference.weights()[k]);
    for (std::int64_t j = 0; j < d; ++j) half_logdet[k] += 0.5 * std::log(iso ? v[k] : v[k * d + j]);
  }
  // The log-weights relative to the most likely component r's, from differences that do not cancel:
  // r_kj^2 / v_kj - r_rj^2 / v_rj = (mu_rj - mu_kj) (r_kj + r_rj) / v_kj + r_rj^2 (v_rj - v_kj) / (v_kj v_rj), with
  // r_kj = x_j - mu_kj. (Each q_k = sum_j r_kj^2 / v_kj alone is of order 1e16 for a sample at 1e16 from means near
  // 0 with variance 1e16, and its rounding was of the order of the differences the softmax takes: the weights came
  // out as the mixture's, whatever the sample.)
  auto var = [&](std::int64_t k, std::int64_t j) { return iso ? v[k] : v[k * d + j]; };
  return average_responsibility(K, d, x, n, 0, [&](const float* xi, double* lg, double*) {
    std::int64_t r = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      double q = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        const double e = double(xi[j]) - mu[k * d + j];
        q += e * e / var(k, j);
      }
      lg[k] = logw[k] - 0.5 * q - half_logdet[k];
      if (lg[k] > lg[r]) r = k;
    }
    for (std::int64_t k = 0; k < K; ++k) {
      if (k == r) continue;
      double dq = 0;  // q_k - q_r
      for (std::int64_t j = 0; j < d; ++j) {
        const double ek = double(xi[j]) - mu[k * d + j], er = double(xi[j]) - mu[r * d + j];
        const double vk = var(k, j), vr = var(r, j);
        dq += (mu[r * d + j] - mu[k * d + j]) * (ek + er) / vk + (vr == vk ? 0.0 : er * er * ((vr - vk) / (vk * vr)));
      }
      lg[k] = logw[k] - logw[r] - 0.5 * dq - (half_logdet[k] - half_logdet[r]);
    }
    lg[r] = 0;
  });
}

namespace {
double max_error(const std::vector<double>& recovered, const std::vector<double>& weights) {
  double worst = 0;
  for (std::size_t k = 0; k < weights.size(); ++k) worst = std::max(worst, std::abs(recovered[k] - weights[k]));
  return worst;
}
}  // namespace

double component_weight_error(const mixture_posterior& reference, std::int64_t n, const float* x) {
  return max_error(component_weights(reference, n, x), reference.weights());
}

double component_weight_error(const gaussian_mixture& reference, std::int64_t n, const float* x) {
  return max_error(component_weights(reference, n, x), reference.weights());
}

}  // namespace diffsample
