// Sliced Wasserstein distance on the host: random unit directions from the Philox stream, exact 1-D W_p between
// the sorted projections (empirical distributions of possibly different sizes).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/rng.cuh"
#include "src/cuda_check.hpp"
#include "src/validate.hpp"
#include <diffsample/metrics.hpp>

namespace diffsample {

namespace {

// Exact W_p^p between two sorted samples with uniform weights 1/na and 1/nb: walk the merged quantile grid.
// Masses are counted in integer units of 1/(na nb) (each atom of a holds nb units, each of b holds na), so the
// walk has no rounding drift.
double wasserstein_1d_pow(const std::vector<double>& a, const std::vector<double>& b, int p) {
  const std::int64_t na = static_cast<std::int64_t>(a.size()), nb = static_cast<std::int64_t>(b.size());
  std::int64_t i = 0, j = 0, left_a = nb, left_b = na;
  double total = 0;
  while (i < na && j < nb) {
    const std::int64_t m = std::min(left_a, left_b);
    const double gap = std::abs(a[i] - b[j]);
    total += double(m) * (p == 1 ? gap : gap * gap);
    left_a -= m;
    left_b -= m;
    if (left_a == 0) { ++i; left_a = nb; }
    if (left_b == 0) { ++j; left_b = na; }
  }
  return total / (double(na) * double(nb));
}

}  // namespace

double sliced_wasserstein(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t d,
                          int directions, std::uint64_t seed, int p) {
  DIFFSAMPLE_EXPECTS(n_a >= 1, "n_a: must be >= 1, got " << n_a);
  DIFFSAMPLE_EXPECTS(n_b >= 1, "n_b: must be >= 1, got " << n_b);
  detail::check_count("n_a", n_a, d);
  detail::check_count("n_b", n_b, d);
  DIFFSAMPLE_EXPECTS(directions >= 1, "directions: must be >= 1, got " << directions);
  DIFFSAMPLE_EXPECTS(p == 1 || p == 2, "p: must be 1 or 2, got " << p);
  DIFFSAMPLE_EXPECTS(a != nullptr && b != nullptr, "a, b: null pointer");
  DIFFSAMPLE_EXPECTS(detail::pointer_kind(a) != detail::memory_kind::device &&
                         detail::pointer_kind(b) != detail::memory_kind::device,
                     "a, b: sliced_wasserstein reads host memory; got a device pointer");
  double sum = 0;
  std::vector<double> u(d), pa(n_a), pb(n_b);
  for (int t = 0; t < directions; ++t) {
    kernels::philox rng(seed, static_cast<std::uint64_t>(t), 0);
    double norm = 0;
    rng.normals(int(d), [&](int j, float z) {
      u[j] = z;
      norm += double(z) * z;
    });
    norm = std::sqrt(norm);
    for (auto& v : u) v /= norm;
    auto project = [&](const float* x, std::int64_t n, std::vector<double>& out) {
#pragma omp parallel for schedule(static)
      for (std::int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (std::int64_t j = 0; j < d; ++j) s += u[j] * x[i * d + j];
        out[i] = s;
      }
      std::sort(out.begin(), out.end());
    };
    project(a, n_a, pa);
    project(b, n_b, pb);
    sum += wasserstein_1d_pow(pa, pb, p);
  }
  const double mean = sum / directions;
  return p == 1 ? mean : std::sqrt(mean);
}

}  // namespace diffsample
