// Helpers shared by the guided-sampler tests: batched problems, run options and exact posterior samples with
// prescribed component counts.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <diffsample/guided.hpp>
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

}  // namespace diffsample::testing
