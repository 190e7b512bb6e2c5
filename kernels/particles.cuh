// Exact, deterministic resampling: fixed-point weights, 128-bit integer helpers and the per-particle ancestor
// selection shared by the CUDA and CPU executors.
//
// Why integers: a float prefix sum over millions of weights is order-dependent, so CPU and GPU (or two thread
// counts) would pick different ancestors. Here every quantity that decides an ancestor is an integer built from
// IEEE operations that are correctly rounded on both compilers (explicit fma, multiplication by powers of two,
// floor), and integer addition is associative, so any summation order gives the same bits.
#pragma once

#include <cstdint>
#include <cstring>

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
  // Two statements: the operands of | are unsequenced, so which draw became the high word was the compiler's choice
  // (every compiler in use took the left first; the CPU, CUDA and MPI bit identity rests on the order).
  const std::uint64_t hi = rng.bits();
  const std::uint64_t r = (hi << 32) | rng.bits();
  return mul_hi(r, n);
}

/// Fixed-point scale: weights relative to the largest are stored as floor(w * 2^k), k = 62 - ceil(log2 N), so a
/// problem's total is at most N 2^k <= 2^62 and sums of squares at most N 2^2k < 2^124 (both without overflow).
DS_HD_INLINE int fixed_point_bits(std::int64_t n) {
  int b = 0;
  while ((std::int64_t(1) << b) < n) ++b;
  return 62 - b;
}

/// 2^e as a double from its bits, for -1022 <= e <= 1023 (a normal power of two): multiplying by it is exact wherever
/// the product is normal, as ldexp is, without ldexp's library call on the host (it took 3% of the default guided
/// SMC's CPU profile at d = 10 through the resampling's weights).
DS_HD_INLINE double pow2(int e) {
  const std::uint64_t bits = static_cast<std::uint64_t>(1023 + e) << 52;
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
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
  return p * pow2(static_cast<int>(n));  // n >= -73 here and p in [0.7, 1.5]: a normal product, as ldexp's
}

/// NaN and +inf log-weights are invalid: they count as -inf (and are counted by the caller).
DS_HD_INLINE bool invalid_log_weight(float l) { return l != l || l == INFINITY; }

/// Fixed-point weight of log-weight l in a problem whose largest valid log-weight is m (finite).
DS_HD_INLINE std::uint64_t fixed_weight(float l, float m, int bits) {
  if (invalid_log_weight(l)) return 0;
  const double w = fixed_exp(double(l) - double(m));
  return static_cast<std::uint64_t>(floor(w * pow2(bits)));  // w = 0 or normal, bits <= 62: exact
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

/// Fixed-point weight and the FP64 weight it came from: w = exp(l - m) (0 for an invalid l), q = floor(w 2^bits).
/// The report sums and normalised weights use this w, so a particle costs one FP64 exponential per pass.
struct weight_pair {
  std::uint64_t q;
  double w;
};
DS_HD_INLINE weight_pair fixed_weight_pair(float l, float m, int bits) {
  if (invalid_log_weight(l)) return {0, 0.0};
  const double w = fixed_exp(double(l) - double(m));
  return {static_cast<std::uint64_t>(floor(w * pow2(bits))), w};
}

/// Per-problem state between the statistics passes and ancestor selection (workspace).
/// Trivially constructible so that a block can keep one in shared memory.
struct problem_state {
  std::uint64_t total;   ///< T = sum of fixed-point weights (0 when failed)
  std::uint64_t copies;  ///< residual: sum of floor(N q_i / T)
  double sum_w;          ///< FP64 sum of exp(l_i - max), for normalised weights
  float max;             ///< largest valid log-weight
  int resample;          ///< 1 when this problem's ancestors are drawn
};

/// A problem's resampling decision and report from its reduced quantities (the executors' passes and the MPI
/// resampler): the decision uses the fixed-point ESS T^2 / sum q^2 (integers, hence the same on every executor and
/// rank count), the report the FP64 sums. Writes *report when report is not null; copies stay 0.
DS_HD_INLINE problem_state decide_problem(float max, std::int64_t nan_count, std::uint64_t total, u128 sum_q2,
                                          double sum_w, double sum_w2, double threshold, std::int64_t n,
                                          particle_report* report) {
  problem_state st{};
  st.total = total;
  st.max = max;
  st.sum_w = sum_w;
  const bool failed = total == 0;
  const double fixed_ess = failed ? 0.0 : double(total) * double(total) / to_double(sum_q2);
  st.resample = !failed && fixed_ess < threshold * double(n);
  if (report != nullptr) {
    particle_report r;
    r.nan_count = nan_count;
    r.failed = failed;
    r.resampled = st.resample;
    if (failed) {
      r.ess = 0;
      r.log_sum_exp = -INFINITY;
      r.log_normaliser_increment = -INFINITY;
    } else {
      r.ess = sum_w * sum_w / sum_w2;
      r.log_sum_exp = double(max) + log(sum_w);
      r.log_normaliser_increment = r.log_sum_exp - log(double(n));
    }
    *report = r;
  }
  return st;
}

/// Problems are cut into tiles of a fixed length (never a function of the thread count or the grid; a tile never
/// spans two problems): the passes over particles work tile by tile, the passes over a problem combine its tiles'
/// sums in tile order. Integer sums are exact whatever the tiling; the FP64 report sums depend on it only in their
/// rounding. The CUDA executor's tile is one block of 256 threads x 16 particles; the CPU executor's is longer.
constexpr std::int64_t cuda_tile = 4096;
constexpr std::int64_t cpu_tile = std::int64_t(1) << 16;

/// Sums of one tile (workspace). A tile's total of fixed-point weights and of residual copies live in separate
/// arrays (`totals`, `copies`), scanned into problem-local offsets.
struct tile_sums {
  float max;
  std::int64_t nan_count;
  u128 sum_q2;
  double sum_w, sum_w2;
};

/// Bound on the rejection scheme's loop: acceptance tests per particle before its exact fallback (one pass over
/// the problem's weights). With mean weight / max weight = rho the fallback runs with probability (1 - rho)^63.
constexpr int rejection_trials = 64;

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

/// The first particle whose inclusive prefix of q exceeds x < T, by one pass over the problem's n weights: the exact
/// fallback draw of the Metropolis and rejection schemes, which store q and no prefix sum.
DS_HD_INLINE std::int64_t first_above(const std::uint64_t* q, std::int64_t n, std::uint64_t x) {
  std::uint64_t below = 0;
  std::int64_t a = 0;
  while (a + 1 < n && below + q[a] <= x) below += q[a++];
  return a;
}

/// first_above() through the problem's tile offsets (offsets[t] - offsets[0]: the exclusive prefix of q before tile
/// t of `tile` particles, per tiles; the statistics passes' scan): the last tile whose offset is at most x by binary
/// search, then the scan within it. The same particle as first_above() (the tile found holds the first inclusive
/// prefix above x, a later tile's offset being above x), in O(log per + tile) reads instead of O(n): a GPU thread's
/// one-by-one scan of n = 2^24 weights took seconds.
DS_HD_INLINE std::int64_t first_above_tiled(const std::uint64_t* q, std::int64_t n, std::uint64_t x,
                                            const std::uint64_t* offsets, std::int64_t tile, std::int64_t per) {
  const std::uint64_t base = offsets[0];
  std::int64_t lo = 0, hi = per - 1;  // the last t with offsets[t] - base <= x (t = 0 always qualifies)
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo + 1) / 2;
    if (offsets[mid] - base <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  std::uint64_t below = offsets[lo] - base;
  std::int64_t a = lo * tile;
  while (a + 1 < n && below + q[a] <= x) below += q[a++];
  return a;
}

/// The Metropolis and rejection fallbacks' exact draw: first_above_tiled() through a problem's tile offsets, or
/// first_above() without them (nullptr). Out of line on the device, by value: a rare path whose registers the
/// selection's common path does not pay for (inlined, the int64 selection spilled).
DS_HD_NOINLINE std::int64_t exact_draw(const std::uint64_t* q, std::int64_t n, std::uint64_t x,
                                       const std::uint64_t* offsets, std::int64_t tile, std::int64_t per) {
  return offsets != nullptr ? first_above_tiled(q, n, x, offsets, tile, per) : first_above(q, n, x);
}

/// The stratified and systematic slots of a resampled problem b: slot j sits at key x_j = floor((j T + v_j) / N)
/// in [0, T), v_j uniform in [0, T) (one v for the whole problem when systematic, keyed by the problem's first
/// particle; one per slot when stratified, keyed by the slot's particle). Every unit of [0, T) is hit N / T times in
/// expectation (unbiased). The ancestor of slot j is the first particle whose inclusive prefix P_i exceeds x_j.
/// The keys grow with j, so the slots whose ancestor is particle i are the contiguous range [J(P_i - q_i), J(P_i)),
/// J(y) = #{j : x_j < y}: a particle finds its offspring slots from its own prefix sum, without a search.
struct slot_keys {
  std::uint64_t seed, step, total, n;
  std::int64_t b;
  bool stratified;
  std::uint64_t v;  // systematic: the problem's one uniform

  DS_HD slot_keys(resampling_scheme scheme, std::uint64_t seed_, std::uint64_t step_, std::uint64_t t,
                  std::int64_t problem, std::int64_t particles)
      : seed(seed_), step(step_), total(t), n(std::uint64_t(particles)), b(problem),
        stratified(scheme == resampling_scheme::stratified), v(0) {
    if (!stratified) {
      philox rng(seed, std::uint64_t(b) * n, step);
      v = uniform_below(rng, total);
    }
  }
  /// x_j, split as j (T / N) + (j (T mod N) + v_j) / N to stay within 64 bits.
  DS_HD std::uint64_t operator()(std::int64_t j) const {
    std::uint64_t vj = v;
    if (stratified) {
      philox rng(seed, std::uint64_t(b) * n + std::uint64_t(j), step);
      vj = uniform_below(rng, total);
    }
    const std::uint64_t uj = std::uint64_t(j);
    return uj * (total / n) + (uj * (total % n) + vj) / n;
  }
  /// J(y) = #{j : x_j < y} for y in [0, T]. x_j < y iff j T + v_j < y N: true for j < j* = floor(y N / T), false
  /// for j > j*, so J(y) = j* + [x_j* < y] (j* = N only at y = T).
  DS_HD std::int64_t count_below(std::uint64_t y) const {
    const std::uint64_t js = residual_copies(n, y, total);
    if (js >= n) return std::int64_t(n);
    return std::int64_t(js) + ((*this)(std::int64_t(js)) < y ? 1 : 0);
  }
};

/// Draws the ancestor of particle j of problem b (multinomial, residual, Metropolis, rejection; stratified and
/// systematic by a search, for callers that select one particle at a time). One call per particle, no communication
/// between particles beyond the read-only per-particle arrays of the statistics passes:
///   multinomial, stratified, systematic: units = problem-local inclusive prefix P of the fixed-point weights q;
///   residual: units = problem-local inclusive prefix C of the copies floor(N q / T), prefix = P; the residual
///             weights' inclusive prefix is then N P_i - T C_i (exact in 128 bits, nondecreasing);
///   metropolis, rejection: units = q.
template <class Index>
struct select_ancestor_functor {
  const problem_state* states;
  const std::uint64_t* units;
  const std::uint64_t* prefix;
  std::int64_t n;
  int bits;
  resampling_scheme scheme;
  int metropolis_steps;
  std::uint64_t seed, step;
  Index* ancestors;
  /// When not null, the Philox seed is read from here (device memory on the CUDA executor) instead of `seed`, so
  /// that a captured launch draws with the key its sampler has advanced on the device since (an ask/tell plan).
  const std::uint64_t* seed_at = nullptr;
  /// When not null, the statistics passes' flat exclusive scan of the tile totals (tiles of `tile` particles, `per`
  /// = ceil(n / tile) per problem, kept rather than divided out: the division took the int32 selection from 48 to 50
  /// registers): the Metropolis and rejection fallbacks search it (first_above_tiled) instead of scanning n weights.
  const std::uint64_t* tile_offsets = nullptr;
  std::int64_t tile = 0, per = 0;

  DS_HD void operator()(std::int64_t g) const {
    const std::uint64_t key = seed_at != nullptr ? *seed_at : seed;
    const std::int64_t b = g / n;
    const std::int64_t j = g - b * n;
    const problem_state st = states[b];
    if (!st.resample) {
      ancestors[g] = static_cast<Index>(j);
      return;
    }
    const std::uint64_t* u = units + b * n;
    const std::uint64_t T = st.total;
    const std::uint64_t N = static_cast<std::uint64_t>(n);
    std::int64_t a = j;
    bool exact = false;  // Metropolis and rejection: draw exactly from q / T at `at` (after the switch)
    std::uint64_t at = 0;
    switch (scheme) {
      case resampling_scheme::multinomial: {
        philox rng(key, g, step);
        a = upper_bound(u, n, uniform_below(rng, T));
        break;
      }
      case resampling_scheme::stratified:
      case resampling_scheme::systematic:
        a = upper_bound(u, n, slot_keys(scheme, key, step, T, b, n)(j));
        break;
      case resampling_scheme::residual: {
        const std::uint64_t copies = st.copies;
        if (std::uint64_t(j) < copies) {
          a = upper_bound(u, n, std::uint64_t(j));
        } else {
          // Uniform on [0, R T), R = N - copies, drawn as slot s in [0, R) and offset o in [0, T); the first
          // particle whose residual prefix N P_i - T C_i exceeds it.
          philox rng(key, g, step);
          const std::uint64_t s = uniform_below(rng, N - copies);
          const std::uint64_t o = uniform_below(rng, T);
          const u128 x = mul_wide(s, T) + u128{o, 0};
          const std::uint64_t* p = prefix + b * n;
          std::int64_t lo = 0, hi = n - 1;
          while (lo < hi) {
            const std::int64_t mid = lo + (hi - lo) / 2;
            if (x < mul_wide(N, p[mid]) - mul_wide(T, u[mid]))
              hi = mid;
            else
              lo = mid + 1;
          }
          a = lo;
        }
        break;
      }
      case resampling_scheme::metropolis: {
        philox rng(key, g, step);
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
          exact = true;
          at = uniform_below(rng, T);
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
        philox rng(key, g, step);
        const std::uint64_t envelope = std::uint64_t(1) << bits;
        int trials = 1;
        while (!(uniform_below(rng, envelope) < u[a])) {
          if (trials++ == rejection_trials) {
            exact = true;
            at = uniform_below(rng, T);
            break;
          }
          a = static_cast<std::int64_t>(uniform_below(rng, N));
        }
        break;
      }
    }
    // The Metropolis and rejection schemes' exact draw from q / T (one site: its search inlined once).
    if (exact) a = exact_draw(u, n, at, tile_offsets != nullptr ? tile_offsets + b * per : nullptr, tile, per);
    ancestors[g] = static_cast<Index>(a);
  }
};

/// out[g, :] = states[b N + ancestors[g], :] for g = b N + j; NaN for an ancestor outside [0, N), which would
/// name a particle of another problem or memory outside the states (the indices may be device memory, so they are
/// not checked before the launch).
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
    const std::int64_t a = static_cast<std::int64_t>(ancestors[g]);
    out[e] = static_cast<std::uint64_t>(a) < static_cast<std::uint64_t>(n) ? states[(b * n + a) * d + c] : NAN;
  }
};

}  // namespace diffsample::kernels
