// Exact, deterministic resampling: fixed-point weights, 128-bit integer helpers and the per-particle ancestor
// selection shared by the CUDA and CPU executors.
//
// Why integers: a float prefix sum over millions of weights is order-dependent, so CPU and GPU (or two thread
// counts) would pick different ancestors. Here every quantity that decides an ancestor is an integer built from
// IEEE operations that are correctly rounded on both compilers (explicit fma, multiplication by powers of two,
// floor), and integer addition is associative, so any summation order gives the same bits.
#pragma once

#include <cstdint>

#include "kernels/config.cuh"
#include "kernels/rng.cuh"
#include <diffsample/particles.hpp>

namespace diffsample::kernels {

/// Unsigned 128-bit integer as two words (CUDA and host alike; no reliance on __int128 in device code).
struct u128 {
  std::uint64_t lo = 0, hi = 0;
};

DS_HD_INLINE u128 operator+(u128 a, u128 b) {
  u128 r;
  r.lo = a.lo + b.lo;
  r.hi = a.hi + b.hi + (r.lo < a.lo ? 1u : 0u);
  return r;
}
DS_HD_INLINE bool operator<(u128 a, u128 b) { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo); }
/// a - b for b <= a.
DS_HD_INLINE u128 operator-(u128 a, u128 b) {
  u128 r;
  r.lo = a.lo - b.lo;
  r.hi = a.hi - b.hi - (a.lo < b.lo ? 1u : 0u);
  return r;
}

DS_HD_INLINE std::uint64_t mul_hi(std::uint64_t a, std::uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}
DS_HD_INLINE u128 mul_wide(std::uint64_t a, std::uint64_t b) { return u128{a * b, mul_hi(a, b)}; }

/// Exactly representable conversion order: hi * 2^64 is exact, so one rounding at the add on every compiler.
DS_HD_INLINE double to_double(u128 a) { return double(a.hi) * 18446744073709551616.0 + double(a.lo); }

/// Uniform integer in [0, n) by multiply-shift: each interval of the range gets its exact probability to within
/// 2^-64 (no modulo bias).
DS_HD_INLINE std::uint64_t uniform_below(philox& rng, std::uint64_t n) {
  const std::uint64_t r = (std::uint64_t(rng.bits()) << 32) | rng.bits();
  return mul_hi(r, n);
}

/// Fixed-point scale: weights relative to the largest are stored as floor(w * 2^k), k = 62 - ceil(log2 N), so a
/// problem's total is at most N 2^k <= 2^62 and sums of squares at most N 2^2k < 2^124 (both without overflow).
DS_HD_INLINE int fixed_point_bits(std::int64_t n) {
  int b = 0;
  while ((std::int64_t(1) << b) < n) ++b;
  return 62 - b;
}

/// exp(x) for x <= 0 from correctly rounded operations only (explicit fma, powers of two), so that host and
/// device produce the same bits; library exp() is not guaranteed to. Accurate to a few ulp, which only matters
/// for where floor() lands, not for determinism. Values below e^-50 < 2^-62 floor to zero anyway.
DS_HD_INLINE double fixed_exp(double x) {
  if (!(x > -50.0)) return 0.0;
  const double log2e = 1.4426950408889634;
  const double ln2_hi = 6.93147180369123816490e-01;  // ln 2 split so that n * ln2_hi is exact for |n| < 2^10
  const double ln2_lo = 1.90821492927058770002e-10;
  const double n = floor(fma(x, log2e, 0.5));
  double r = fma(-n, ln2_hi, x);
  r = fma(-n, ln2_lo, r);
  // Taylor series to degree 13 on |r| <= 0.35: truncation below 1e-17.
  double p = 1.0 / 6227020800.0;
  p = fma(p, r, 1.0 / 479001600.0);
  p = fma(p, r, 1.0 / 39916800.0);
  p = fma(p, r, 1.0 / 3628800.0);
  p = fma(p, r, 1.0 / 362880.0);
  p = fma(p, r, 1.0 / 40320.0);
  p = fma(p, r, 1.0 / 5040.0);
  p = fma(p, r, 1.0 / 720.0);
  p = fma(p, r, 1.0 / 120.0);
  p = fma(p, r, 1.0 / 24.0);
  p = fma(p, r, 1.0 / 6.0);
  p = fma(p, r, 0.5);
  p = fma(p, r, 1.0);
  p = fma(p, r, 1.0);
  return ldexp(p, static_cast<int>(n));
}

/// NaN and +inf log-weights are invalid: they count as -inf (and are counted by the caller).
DS_HD_INLINE bool invalid_log_weight(float l) { return l != l || l == INFINITY; }

/// Fixed-point weight of log-weight l in a problem whose largest valid log-weight is m (finite).
DS_HD_INLINE std::uint64_t fixed_weight(float l, float m, int bits) {
  if (invalid_log_weight(l)) return 0;
  const double w = fixed_exp(double(l) - double(m));
  return static_cast<std::uint64_t>(floor(ldexp(w, bits)));
}

/// floor(N q / T) for q <= T: the deterministic copies of residual resampling, exact in 128-bit arithmetic.
/// A double estimate, then integer corrections (the estimate is off by at most a few units).
DS_HD_INLINE std::uint64_t residual_copies(std::uint64_t n, std::uint64_t q, std::uint64_t total) {
  const u128 nq = mul_wide(n, q);
  std::uint64_t c = static_cast<std::uint64_t>(floor(double(n) * (double(q) / double(total))));
  if (c > n) c = n;
  while (c > 0 && nq < mul_wide(c, total)) --c;
  while (c < n && !(nq < mul_wide(c + 1, total))) ++c;
  return c;
}

/// Per-problem state between the statistics pass and ancestor selection (workspace).
/// Trivially constructible so that a block can keep one in shared memory.
struct problem_state {
  std::uint64_t total;   ///< T = sum of fixed-point weights (0 when failed)
  std::uint64_t copies;  ///< residual: sum of floor(N q_i / T)
  double sum_w;          ///< FP64 sum of exp(l_i - max), for normalised weights
  float max;             ///< largest valid log-weight
  int resample;          ///< 1 when this problem's ancestors are drawn
};

/// Problems longer than this are split into chunks of this fixed size (never a function of the thread count or the
/// grid), scanned chunk-locally: prefix sums stay chunk-local, and selection searches the chunk totals first.
constexpr std::int64_t chunk_size = std::int64_t(1) << 16;

/// Bound on the rejection scheme's loop: acceptance tests per particle before its exact fallback (one pass over
/// the problem's weights). With mean weight / max weight = rho the fallback runs with probability (1 - rho)^63.
constexpr int rejection_trials = 64;

/// Partial results of one chunk of one problem (workspace), and its offsets into the problem's prefix sums.
struct chunk_sums {
  float max;
  std::int64_t nan_count;
  std::uint64_t total, copies, total_offset, copies_offset;
  u128 sum_q2, rest, rest_offset;
  double sum_w, sum_w2;
};

/// First index i in [0, n) with c[i] > u, for a nondecreasing c with c[n - 1] > u.
template <class T>
DS_HD_INLINE std::int64_t upper_bound(const T* c, std::int64_t n, T u) {
  std::int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (u < c[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/// A chunk's offset into, and share of, the problem-wide prefix sums: of the fixed-point weights, of the residual
/// copies, of the residual weights.
struct weights_part {
  DS_HD void operator()(const chunk_sums& c, std::uint64_t& offset, std::uint64_t& total) const {
    offset = c.total_offset;
    total = c.total;
  }
};
struct copies_part {
  DS_HD void operator()(const chunk_sums& c, std::uint64_t& offset, std::uint64_t& total) const {
    offset = c.copies_offset;
    total = c.copies;
  }
};
struct rest_part {
  DS_HD void operator()(const chunk_sums& c, u128& offset, u128& total) const {
    offset = c.rest_offset;
    total = c.rest;
  }
};

/// Draws the ancestor of particle j of problem b; writes ancestors and normalised weights. One call per particle,
/// no communication between particles beyond the read-only prefix sums of the statistics pass.
///
/// Prefix sums are chunk-local when a problem spans several chunks: a search for the first particle whose
/// problem-wide prefix exceeds x first finds the chunk (binary search over the chunk ends, offset + chunk total),
/// then searches inside it for x minus the chunk's offset. That is the same particle as a search over problem-wide
/// prefix sums, without a pass that adds the offsets to every particle.
template <class Index>
struct select_ancestor_functor {
  const float* log_weights;
  const problem_state* states;
  const std::uint64_t* units;  // per particle: chunk-local inclusive prefix of q (multinomial, stratified,
                               // systematic), of residual copies (residual), or q itself (metropolis, rejection)
  const u128* residual;        // residual: chunk-local inclusive prefix of the residual weights N q_i - copies_i T
  const chunk_sums* chunks;    // per problem and chunk (read only when a problem spans several chunks)
  std::int64_t per;            // chunks per problem
  std::int64_t n;
  int bits;
  resampling_scheme scheme;
  int metropolis_steps;
  std::uint64_t seed, step;
  Index* ancestors;
  float* normalised_weights;

  /// First particle of problem b whose problem-wide prefix exceeds x, for the chunk-local prefix sums `prefix`
  /// (B x N). part(chunk, offset, total) gives a chunk's offset into the problem-wide sum and its own total: the
  /// chunk is the first whose end, offset + total, exceeds x, and the particle is found inside it at x - offset.
  template <class T, class Part>
  DS_HD std::int64_t search(const T* prefix, std::int64_t b, T x, Part part) const {
    const T* p = prefix + b * n;
    if (per == 1) return upper_bound(p, n, x);
    const chunk_sums* c = chunks + b * per;
    T offset, total;
    std::int64_t lo = 0, hi = per - 1;
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      part(c[mid], offset, total);
      if (x < offset + total)
        hi = mid;
      else
        lo = mid + 1;
    }
    part(c[lo], offset, total);
    const std::int64_t first = lo * chunk_size, len = n - first < chunk_size ? n - first : chunk_size;
    return first + upper_bound(p + first, len, x - offset);
  }

  DS_HD void operator()(std::int64_t g) const {
    const std::int64_t b = g / n;
    const std::int64_t j = g - b * n;
    const problem_state st = states[b];
    if (normalised_weights != nullptr) {
      const float l = log_weights[g];
      normalised_weights[g] = (st.total == 0 || invalid_log_weight(l))
                                  ? 0.f
                                  : float(exp(double(l) - double(st.max)) / st.sum_w);
    }
    if (ancestors == nullptr) return;
    if (!st.resample) {
      ancestors[g] = static_cast<Index>(j);
      return;
    }
    const std::uint64_t* u = units + b * n;
    const std::uint64_t T = st.total;
    const std::uint64_t N = static_cast<std::uint64_t>(n);
    std::int64_t a = j;
    switch (scheme) {
      case resampling_scheme::multinomial: {
        philox rng(seed, g, step);
        a = search(units, b, uniform_below(rng, T), weights_part{});
        break;
      }
      case resampling_scheme::stratified:
      case resampling_scheme::systematic: {
        // Point j sits at (j T + v) / N with v uniform in [0, T): every unit of [0, T) is hit N / T times in
        // expectation (unbiased), split as j (T / N) + (j (T mod N) + v) / N to stay within 64 bits.
        philox rng(seed, scheme == resampling_scheme::systematic ? b * n : g, step);
        const std::uint64_t v = uniform_below(rng, T);
        const std::uint64_t uj = std::uint64_t(j);
        const std::uint64_t x = uj * (T / N) + (uj * (T % N) + v) / N;
        a = search(units, b, x, weights_part{});
        break;
      }
      case resampling_scheme::residual: {
        const std::uint64_t copies = st.copies;
        if (std::uint64_t(j) < copies) {
          a = search(units, b, std::uint64_t(j), copies_part{});
        } else {
          // Uniform on [0, R T), R = N - copies, drawn as slot s in [0, R) and offset o in [0, T).
          philox rng(seed, g, step);
          const std::uint64_t s = uniform_below(rng, N - copies);
          const std::uint64_t o = uniform_below(rng, T);
          a = search(residual, b, mul_wide(s, T) + u128{o, 0}, rest_part{});
        }
        break;
      }
      case resampling_scheme::metropolis: {
        philox rng(seed, g, step);
        std::uint64_t qa = u[a];
        for (int it = 0; it < metropolis_steps; ++it) {
          const std::int64_t prop = static_cast<std::int64_t>(uniform_below(rng, N));
          const std::uint64_t qp = u[prop];
          // Accept with probability min(1, q_prop / q_a): v uniform in [0, q_a), accept when v < q_prop. From a
          // zero weight, any weighted proposal is accepted and a zero-weight one is not (no move inside q = 0).
          if (qa == 0 ? qp != 0 : uniform_below(rng, qa) < qp) {
            a = prop;
            qa = qp;
          }
        }
        if (qa == 0) {
          // The chain started on a zero weight and never proposed a weighted particle: a zero-weight particle is
          // never an ancestor, so draw this one exactly from q / T by one pass over the problem's weights (as the
          // rejection scheme's fallback). Runs with probability (1 - share of weighted particles)^steps.
          const std::uint64_t x = uniform_below(rng, T);
          std::uint64_t below = 0;
          a = 0;
          while (a + 1 < n && below + u[a] <= x) below += u[a++];
        }
        break;
      }
      case resampling_scheme::rejection: {
        // The largest fixed-point weight is exactly 2^bits (exp(0) = 1), the rejection envelope. The loop is bounded:
        // after rejection_trials rejections the ancestor is drawn exactly from q / T by one pass over the problem's
        // weights. Conditional on stopping at any trial after the first, an accepted candidate has law q / T too, so
        // the fallback leaves every particle's law, and hence the unbiased offspring counts, as they were; it only
        // caps the work at rejection_trials draws plus, with probability (1 - T / (N 2^bits))^(rejection_trials - 1)
        // or less, one pass of N weights.
        philox rng(seed, g, step);
        const std::uint64_t envelope = std::uint64_t(1) << bits;
        int trials = 1;
        while (!(uniform_below(rng, envelope) < u[a])) {
          if (trials++ == rejection_trials) {
            const std::uint64_t x = uniform_below(rng, T);
            std::uint64_t below = 0;
            a = 0;
            while (a + 1 < n && below + u[a] <= x) below += u[a++];
            break;
          }
          a = static_cast<std::int64_t>(uniform_below(rng, N));
        }
        break;
      }
    }
    ancestors[g] = static_cast<Index>(a);
  }
};

/// out[g, :] = states[b N + ancestors[g], :] for g = b N + j.
template <class Index>
struct gather_functor {
  const float* states;
  const Index* ancestors;
  float* out;
  std::int64_t n, d;
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t g = e / d;
    const std::int64_t c = e - g * d;
    const std::int64_t b = g / n;
    out[e] = states[(b * n + static_cast<std::int64_t>(ancestors[g])) * d + c];
  }
};

}  // namespace diffsample::kernels
