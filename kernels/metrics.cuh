// Sliced Wasserstein pieces shared by the host reference (src/metrics.cpp) and both executors
// (src/sliced_wasserstein.cu): random unit directions from the Philox stream, projections, the exact 1-D W_p^p
// of two sorted samples, and the fixed-order reduction over directions.
#pragma once

#include <cfloat>
#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/rng.cuh"

namespace diffsample::kernels {

/// Exact W_p^p (p = 1 or 2) between two sorted samples with uniform weights 1/na and 1/nb: walk the merged
/// quantile grid. Masses are counted in integer units of 1/(na nb) (each atom of a holds nb units, each of b holds
/// na), so the walk has no rounding drift. Gaps are taken in FP64 whatever T is.
template <class T>
DS_HD double wasserstein_1d_pow(const T* a, std::int64_t na, const T* b, std::int64_t nb, int p) {
  std::int64_t i = 0, j = 0, left_a = nb, left_b = na;
  double total = 0;
  while (i < na && j < nb) {
    const std::int64_t m = left_a < left_b ? left_a : left_b;
    const double gap = fabs(double(a[i]) - double(b[j]));
    total += double(m) * (p == 1 ? gap : gap * gap);
    left_a -= m;
    left_b -= m;
    if (left_a == 0) {
      ++i;
      left_a = nb;
    }
    if (left_b == 0) {
      ++j;
      left_b = na;
    }
  }
  return total / (double(na) * double(nb));
}

/// Direction first + c of the sliced distance, for c in [0, count): d standard normals from the Philox stream
/// (seed, first + c, 0) divided by their FP64 norm, written to u[c d, (c + 1) d). The host reference builds its
/// directions with the same operations in the same order.
struct direction_functor {
  double* u;
  std::uint64_t seed;
  std::int64_t first;
  int d;

  DS_HD void operator()(std::int64_t c) const {
    double* v = u + c * d;
    philox rng(seed, static_cast<std::uint64_t>(first + c), 0);
    double norm = 0;
    rng.normals(d, [&](int j, float z) {
      v[j] = z;
      norm += double(z) * z;
    });
    norm = sqrt(norm);
    for (int j = 0; j < d; ++j) v[j] /= norm;
  }
};

/// Projection of every point of a and b on every direction of a chunk, laid out as 2 * chunk segments
/// [direction 0: a | direction 0: b | direction 1: a | ...]. The dot product is summed in FP64 in coordinate order
/// (as the host reference does) and rounded once to float. A value that is not finite (a non-finite input, or a
/// projection beyond the float range) is stored as +inf, which sorts last and marks the direction.
struct projection_functor {
  const float* a;
  const float* b;
  const double* u;
  float* keys;
  std::int64_t na, nb;
  int d;

  DS_HD void operator()(std::int64_t i) const {
    const std::int64_t n = na + nb;
    const std::int64_t c = i / n, r = i - c * n;
    const float* x = r < na ? a + r * d : b + (r - na) * d;
    const double* v = u + c * d;
    double s = 0;
    for (int j = 0; j < d; ++j) s += v[j] * x[j];
    float f = static_cast<float>(s);
    if (!(fabsf(f) <= FLT_MAX)) f = INFINITY;
    keys[i] = f;
  }
};

/// Segment boundaries of the projection layout: offsets[s] for s in [0, 2 chunk].
struct segment_offsets_functor {
  std::int64_t* offsets;
  std::int64_t na, nb;

  DS_HD void operator()(std::int64_t s) const { offsets[s] = (s / 2) * (na + nb) + (s % 2) * na; }
};

/// Part of the exact W_p^p of two sorted samples with uniform weights carried by atom j of the larger one, in units
/// of 1/(ns nl): the same integer quantile grid as wasserstein_1d_pow (atom i of the smaller sample, ns atoms, holds
/// mass [i nl, (i + 1) nl), atom j of the larger one, nl >= ns atoms, holds [j ns, (j + 1) ns)). As ns <= nl, atom j
/// meets at most two atoms of the smaller sample, so every atom's part is O(1) work and the atoms can be summed in
/// parallel. W_p^p = (sum over j of the parts) / (ns nl).
template <class T>
DS_HD_INLINE double wasserstein_atom_pow(const T* smaller, std::int64_t ns, const T* larger, std::int64_t nl, int p,
                                         std::int64_t j) {
  const std::int64_t lo = j * ns, hi = lo + ns;
  double part = 0;
  for (std::int64_t i = lo / nl; i < ns && i * nl < hi; ++i) {
    const std::int64_t from = i * nl > lo ? i * nl : lo, to = (i + 1) * nl < hi ? (i + 1) * nl : hi;
    const double gap = fabs(double(smaller[i]) - double(larger[j]));
    part += double(to - from) * (p == 1 ? gap : gap * gap);
  }
  return part;
}

/// W_p^p of direction c of a chunk from its two sorted segments; NaN when a segment holds a non-finite projection.
/// A segment of one element is read from the unsorted keys (a sort has nothing to do there, and a double-buffered
/// sort need not copy it to its output buffer). The CPU executor runs operator() (one direction per call); the CUDA
/// executor sums the atoms' parts of one direction in parallel (src/sliced_wasserstein.cu) with the same pieces.
struct wasserstein_direction_functor {
  const float* sorted;
  const float* unsorted;
  double* values;
  std::int64_t na, nb;
  int p;

  /// The smaller and the larger sorted sample of direction c; false when either holds a non-finite projection.
  DS_HD_INLINE bool samples(std::int64_t c, const float*& smaller, std::int64_t& ns, const float*& larger,
                            std::int64_t& nl) const {
    const std::int64_t at = c * (na + nb);
    const float* sa = (na == 1 ? unsorted : sorted) + at;
    const float* sb = (nb == 1 ? unsorted : sorted) + at + na;
    const bool a_smaller = na <= nb;
    smaller = a_smaller ? sa : sb;
    larger = a_smaller ? sb : sa;
    ns = a_smaller ? na : nb;
    nl = a_smaller ? nb : na;
    return sa[na - 1] != INFINITY && sb[nb - 1] != INFINITY;
  }
  DS_HD_INLINE double part(const float* smaller, std::int64_t ns, const float* larger, std::int64_t nl,
                           std::int64_t j) const {
    return wasserstein_atom_pow(smaller, ns, larger, nl, p, j);
  }
  DS_HD_INLINE double finish(double sum) const { return sum / (double(na) * double(nb)); }

  DS_HD void operator()(std::int64_t c) const {
    const float *smaller, *larger;
    std::int64_t ns, nl;
    if (!samples(c, smaller, ns, larger, nl)) {
      values[c] = NAN;
      return;
    }
    double sum = 0;
    for (std::int64_t j = 0; j < nl; ++j) sum += part(smaller, ns, larger, nl, j);
    values[c] = finish(sum);
  }
};

/// One thread: adds the chunk's per-direction values to the running sum in direction order (the host reference's
/// order), starting from zero on the first chunk; after the last chunk writes (sum / directions)^(1/p).
struct accumulate_functor {
  const double* values;
  double* sum;
  double* result;
  std::int64_t count;
  int directions;
  int p;
  bool first, last;

  DS_HD void operator()(std::int64_t) const {
    double s = first ? 0.0 : *sum;
    for (std::int64_t c = 0; c < count; ++c) s += values[c];
    *sum = s;
    if (last) {
      const double mean = s / directions;
      *result = p == 1 ? mean : sqrt(mean);
    }
  }
};

}  // namespace diffsample::kernels
