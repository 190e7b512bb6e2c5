// SKRock's host side: the Chebyshev coefficients and the stability bound in FP64 (formulas in the README, "SKRock"),
// and the launch of kernels/guided_skrock.cuh.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/guided_skrock.cuh"
#include "src/guided_samplers.hpp"
#include "src/launch.hpp"

namespace diffsample::detail {

namespace {

// Chebyshev polynomials of the first kind T_0..T_s at w >= 1 by the three-term recurrence.
std::vector<double> chebyshev(int s, double w) {
  std::vector<double> t(static_cast<std::size_t>(s) + 1);
  t[0] = 1.0;
  if (s >= 1) t[1] = w;
  for (int j = 2; j <= s; ++j) t[j] = 2 * w * t[j - 1] - t[j - 2];
  return t;
}

}  // namespace

std::vector<double> skrock_coefficients(int s, double eta) {
  // w0 = 1 + eta / s^2, w1 = T_s(w0) / T_s'(w0); T_s'(w) = s U_{s-1}(w), with U by its own recurrence.
  const double w0 = 1.0 + eta / (double(s) * double(s));
  const std::vector<double> t = chebyshev(s, w0);
  double u_prev = 1.0, u = 2 * w0;  // U_0, U_1
  for (int j = 2; j <= s - 1; ++j) {
    const double next = 2 * w0 * u - u_prev;
    u_prev = u;
    u = next;
  }
  const double u_s1 = s == 1 ? 1.0 : u;  // U_{s-1}
  const double w1 = t[s] / (double(s) * u_s1);
  std::vector<double> c(static_cast<std::size_t>(3 * s));
  c[0] = w1 / w0;                // mu_1
  c[1] = double(s) * w1 / 2.0;   // nu_1
  c[2] = double(s) * w1 / w0;    // kappa_1
  for (int j = 2; j <= s; ++j) {
    const double ratio = t[j - 1] / t[j];
    c[3 * (j - 1)] = 2 * w1 * ratio;          // mu_j
    c[3 * (j - 1) + 1] = 2 * w0 * ratio;      // nu_j
    c[3 * (j - 1) + 2] = 1.0 - 2 * w0 * ratio;  // kappa_j = 1 - nu_j
  }
  return c;
}

double skrock_stability_bound(int s, double eta) {
  return (double(s) - 0.5) * (double(s) - 0.5) * (2.0 - 4.0 * eta / 3.0) - 1.5;
}

double largest_eigenvalue(const double* m, std::int64_t n) {
  std::vector<double> v(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(n));
  // Start from fixed pseudo-random values in [-1, 1): a start orthogonal to the top eigenvector would converge to a
  // smaller eigenvalue (and a step too long for stability). A structured start, such as 1 + 1e-3 i, is orthogonal to
  // every eigenvector whose entries sum to zero with zero first moment, e.g. the Walsh function (1, -1, -1, 1).
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t z = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    v[i] = double(z >> 11) * 0x1.0p-52 - 1.0;
  }
  double lambda = 0;
  for (int it = 0; it < 2000; ++it) {
    double norm = 0;
    for (std::int64_t i = 0; i < n; ++i) norm += v[i] * v[i];
    norm = std::sqrt(norm);
    if (!(norm > 0)) return 0.0;
    for (std::int64_t i = 0; i < n; ++i) v[i] /= norm;
    double next = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < n; ++j) s += m[i * n + j] * v[j];
      w[i] = s;
      next += v[i] * s;  // Rayleigh quotient
    }
    v.swap(w);
    if (it > 0 && std::abs(next - lambda) <= 1e-12 * std::abs(next)) return next;
    lambda = next;
  }
  return lambda;
}

void launch_skrock(executor where, std::int64_t particles_total, const kernels::guided_params& p,
                   const kernels::skrock_params& q, std::int64_t iterations, float* x, float* work, float* r,
                   cudaStream_t stream) {
  kernels::for_each_index_scratch<128>(where, particles_total,
                                       kernels::guided_skrock_functor{p, q, iterations, x, work, r}, stream);
}

}  // namespace diffsample::detail
