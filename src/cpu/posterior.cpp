// The exact posterior sampler (src/posterior_exec.cu) on one dispatch target (DS_SIMD_TARGET, see src/cpu/simd.hpp).
//
// Samples run in blocks of `block` consecutive indices. For each pack of `lanes` samples the Philox stream of every
// lane (the scalar sampler's: id = first + index, step 0, block 0 for the component, block p + 1 for normals 2p and
// 2p + 1) is drawn in vector registers, and each block of four 32-bit outputs becomes a pair of FP64 normals by
// cuRAND's double Box-Muller (a 53-bit u and v, sqrt(-2 log u) (sin pi v, cos pi v)) with FP64 vector log and
// sin/cos of pi v written here. The block's samples are then ordered by component and transformed in groups of up to
// four samples of one component, so each row of the component's factor is read once per group.
//
// Accuracy against the scalar sampler (cuRAND's host path, libm's log, sin and cos), tests/test_simd.cpp:
//   u and v: the same integer arithmetic and the same two FP64 operations: equal; so the components are equal.
//   log: u = 2^e m, m in [sqrt(1/2), sqrt(2)), log(1 + f) = 2 atanh(f / (2 + f)) with a degree-14 even minimax
//        polynomial in s = f / (2 + f) (the coefficients of the classic FP64 kernel), e log 2 in two parts: < 1 ulp.
//   sin, cos of pi v: v - q / 2 = r is exact (|r| <= 1/4), x = pi r rounded once (|x| <= pi / 4), then degree-13
//        and degree-14 minimax polynomials (the classic FP64 kernels): about 1 ulp of the result, and the argument
//        is the exact pi r to 2^-54 where the host's sin(v pi) rounds v pi (up to 2 pi) to 2^-51.
// The transform m'_k + L_k z sums over l in increasing order with one multiply and one add per term (no FMA: this
// file is compiled with -ffp-contract=off and calls no fma), as the scalar transform does; nothing here forms an FMA,
// so every target gives the same bits, whatever the thread count or the split of a call.
#include "src/cpu/simd.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "src/cpu/chains.hpp"
#include "src/cpu/pool.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

typedef double vd __attribute__((vector_size(lanes * 8)));
typedef std::int64_t vl __attribute__((vector_size(lanes * 8)));

/// Samples per block: a multiple of every target's lanes.
constexpr int block = 64;

/// a where mask (all ones), else b, bitwise (a ?: on vectors wider than a register is compiled lane by lane).
template <class V, class M>
DS_SIMD_INLINE V pick(M mask, V a, V b) {
  typedef std::uint64_t u __attribute__((vector_size(sizeof(V))));
  const u m = (u)mask;
  return (V)(((u)a & m) | ((u)b & ~m));
}

DS_SIMD_INLINE vd as_double(vu64 x) { return (vd)x; }
DS_SIMD_INLINE vu64 as_bits(vd x) { return (vu64)x; }

/// Unsigned 32-bit lanes to FP64, exactly (2^52 + x has x in its low mantissa bits).
DS_SIMD_INLINE vd to_double(vu x) {
  const vu64 w = __builtin_convertvector(x, vu64) | std::uint64_t(0x4330000000000000);
  return as_double(w) - 4503599627370496.0;
}

/// The 53-bit integer (lo ^ (hi << 21)) of _curand_box_muller_double / _curand_uniform_double_hq as FP64, exactly.
DS_SIMD_INLINE vd bits53(vu lo, vu hi) {
  const vu low = lo ^ (hi << 21);  // bits 0 .. 31
  const vu top = hi >> 11;         // bits 32 .. 52
  return to_double(top) * 4294967296.0 + to_double(low);
}

/// The IEEE square root of every lane (two halves of this target's widest FP64 register).
DS_SIMD_INLINE vd sqrt_pd(vd x) {
  typedef double half __attribute__((vector_size(lanes * 4)));
  half h[2];
  __builtin_memcpy(h, &x, sizeof x);
  for (half& v : h) {
#if DS_SIMD_TARGET == 0
    v = (half)_mm_sqrt_pd((__m128d)v);
#elif DS_SIMD_TARGET == 1
    v = (half)_mm256_sqrt_pd((__m256d)v);
#else
    v = (half)_mm512_sqrt_pd((__m512d)v);
#endif
  }
  __builtin_memcpy(&x, h, sizeof x);
  return x;
}

/// log(u) for normal positive finite u (here u in [2^-54, 1]).
DS_SIMD_INLINE vd log_pd(vd u) {
  const vu64 bits = as_bits(u);
  vd e = as_double((bits >> 52) | std::uint64_t(0x4330000000000000)) - 4503599627371519.0;  // 2^52 + 1023
  vd m = as_double((bits & std::uint64_t(0x000fffffffffffff)) | std::uint64_t(0x3ff0000000000000));  // [1, 2)
  const vl big = m > 1.4142135623730951;
  m = pick(big, m * 0.5, m);
  e = pick(big, e + 1.0, e);
  const vd f = m - 1.0;  // exact
  const vd s = f / (2.0 + f);
  const vd z = s * s;
  const vd w = z * z;
  const vd t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const vd t2 = z * (6.666666666666735130e-01 +
                     w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const vd r = t2 + t1;
  const vd hfsq = 0.5 * f * f;
  return e * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + r) + e * 1.90821492927058770002e-10)) - f);
}

/// sin(pi v) and cos(pi v) for v in [0, 2].
DS_SIMD_INLINE void sincospi_pd(vd v, vd& sn, vd& cs) {
  const vd magic = vd{} + 6755399441055744.0;  // 1.5 * 2^52: rounds 2 v to an integer, ties to even
  const vd t = 2.0 * v + magic;
  const vd q = t - magic;
  const vl qi = (vl)as_bits(t);  // the integer in the low bits
  const vd r = v - 0.5 * q;      // exact, |r| <= 1/4
  const vd x = r * 3.14159265358979311600e+00;
  const vd z = x * x;
  const vd ps = 8.33333333332248946124e-03 +
                z * (-1.98412698298579493134e-04 +
                     z * (2.75573137070700676789e-06 + z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)));
  const vd s = x + (z * x) * (-1.66666666666666324348e-01 + z * ps);
  const vd pc = z * (4.16666666666666019037e-02 +
                     z * (-1.38888888888741095749e-03 +
                          z * (2.48015872894767294178e-05 +
                               z * (-2.75573143513906633035e-07 +
                                    z * (2.08757232129817482790e-09 + z * -1.13596475577881948265e-11)))));
  const vd hz = 0.5 * z;
  const vd w = 1.0 - hz;
  const vd c = w + (((1.0 - w) - hz) + z * pc);
  // (sin, cos) of pi v = pi r + q pi / 2: quadrant q mod 4 swaps and negates.
  const vl swap = (qi & 1) != 0;
  const vd sv = pick(swap, c, s), cv = pick(swap, s, c);
  const vu64 qu = (vu64)qi;
  const vu64 sneg = (qu & 2) << 62, cneg = ((qu + 1) & 2) << 62;
  sn = as_double(as_bits(sv) ^ sneg);
  cs = as_double(as_bits(cv) ^ cneg);
}

/// Normals 2p, 2p + 1 of every lane from Philox outputs (x, y, z, w), as _curand_box_muller_double.
DS_SIMD_INLINE void box_muller_pd(vu x, vu y, vu z, vu w, vd& g0, vd& g1) {
  const vd u = bits53(x, y) * 1.1102230246251565e-16 + 1.1102230246251565e-16 / 2.0;   // 2^-53
  const vd v = bits53(z, w) * (1.1102230246251565e-16 * 2.0) + 1.1102230246251565e-16;  // (0, 2]
  const vd s = sqrt_pd(-2.0 * log_pd(u));
  vd sn, cs;
  sincospi_pd(v, sn, cs);
  g0 = sn * s;
  g1 = cs * s;
}

/// Per-thread normals of one block, coordinate-major: z[c block + s] is normal c of the block's sample s.
double* thread_normals(std::int64_t count) {
  static thread_local std::vector<double> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

/// One register of doubles (2, 4 or 8).
constexpr int width = lanes / 2;
typedef double nd __attribute__((vector_size(lanes * 4)));
typedef float nf __attribute__((vector_size(lanes * 2)));

DS_SIMD_INLINE nd load(const double* p) {
  nd v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
/// The first n (< width) doubles at p, zeros after (a masked load: nothing past p + n is read).
DS_SIMD_INLINE nd load(const double* p, int n) {
#if DS_SIMD_TARGET == 0
  (void)n;  // n = 1
  return (nd)_mm_load_sd(p);
#elif DS_SIMD_TARGET == 1
  const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(3, 2, 1, 0));
  return (nd)_mm256_maskload_pd(p, mask);
#else
  return (nd)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
#endif
}
DS_SIMD_INLINE nd splat(double x) {
#if DS_SIMD_TARGET == 0
  return (nd)_mm_set1_pd(x);
#elif DS_SIMD_TARGET == 1
  return (nd)_mm256_set1_pd(x);
#else
  return (nd)_mm512_set1_pd(x);
#endif
}
/// The first n (<= width) lanes of v to p.
DS_SIMD_INLINE void store(double* p, nd v, int n) {
  if (n == width) {
    __builtin_memcpy(p, &v, sizeof v);
    return;
  }
  for (int w = 0; w < n; ++w) p[w] = v[w];
}
DS_SIMD_INLINE void store(float* p, nd v, int n) {
  const nf f = __builtin_convertvector(v, nf);
  if (n == width) {
    __builtin_memcpy(p, &f, sizeof f);
    return;
  }
  for (int w = 0; w < n; ++w) p[w] = f[w];
}

/// Coordinates [j0, j0 + n) (n <= T width; n < T width only with T = 1, at the end of a row) of samples
/// idx[0 .. G) of the block (one component): acc = m, then for l increasing acc += U[l, j] z_l, the terms l > j of
/// the diagonal block left out by a mask (the scalar loop stops at l = j). G T registers of accumulators: each row
/// segment of U is loaded once for the G samples.
template <int G, int T, bool full, class Out>
DS_SIMD_INLINE void transform_tile(const double* U, const double* m, int d, int j0, int n, const double* zb,
                                   const int* idx, Out* const* rows) {
  nd acc[G][T];
  for (int t = 0; t < T; ++t) {
    const nd mt = full ? load(m + j0 + t * width) : load(m + j0, n);
    for (int g = 0; g < G; ++g) acc[g][t] = mt;
  }
  for (int l = 0; l < j0; ++l) {
    const double* row = U + static_cast<std::int64_t>(l) * d + j0;
    nd r[T];
    for (int t = 0; t < T; ++t) r[t] = full ? load(row + t * width) : load(row, n);
    for (int g = 0; g < G; ++g) {
      const nd z = splat(zb[static_cast<std::int64_t>(l) * block + idx[g]]);
      for (int t = 0; t < T; ++t) acc[g][t] = acc[g][t] + r[t] * z;
    }
  }
  // jd[t] = the coordinates j0 + t width + w of the tile's lanes (small integers, exact in FP64).
  alignas(64) static constexpr double lane_index[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  static_assert(width <= 8, "lane_index covers one vector of doubles");
  nd jd[T];
  for (int t = 0; t < T; ++t) jd[t] = load(lane_index) + splat(double(j0 + t * width));
  for (int l = j0; l < j0 + n; ++l) {
    const double* row = U + static_cast<std::int64_t>(l) * d + j0;
    nd r[T];
    typedef std::int64_t nl __attribute__((vector_size(lanes * 4)));
    nl keep[T];
    for (int t = 0; t < T; ++t) {
      r[t] = full ? load(row + t * width) : load(row, n);
      keep[t] = jd[t] >= double(l);
    }
    for (int g = 0; g < G; ++g) {
      const nd z = splat(zb[static_cast<std::int64_t>(l) * block + idx[g]]);
      for (int t = 0; t < T; ++t) acc[g][t] = pick(keep[t], acc[g][t] + r[t] * z, acc[g][t]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int t = 0; t < T; ++t) store(rows[g] + j0 + t * width, acc[g][t], full ? width : n);
}

/// Samples idx[0 .. G) of the block (one component k): out row = m + sum_l U[l, .] z_l, l increasing.
template <int G, class T>
void transform_group(const posterior_sample_args& a, const double* zb, const int* idx, std::int64_t k,
                     std::int64_t first_row, T* out) {
  const int d = a.d;
  const double* U = a.factors_t + k * d * d;
  const double* m = a.means + k * d;
  T* rows[G];
  for (int g = 0; g < G; ++g) rows[g] = out + (first_row + idx[g]) * d;
  int j0 = 0;
  for (; j0 + 2 * width <= d; j0 += 2 * width) transform_tile<G, 2, true>(U, m, d, j0, 2 * width, zb, idx, rows);
  for (; j0 + width <= d; j0 += width) transform_tile<G, 1, true>(U, m, d, j0, width, zb, idx, rows);
  if (j0 < d) transform_tile<G, 1, false>(U, m, d, j0, d - j0, zb, idx, rows);
}

template <class T>
void sample(const posterior_sample_args& a, T* out) {
  const int d = a.d, pairs = (d + 1) / 2;
  const std::int64_t blocks = (a.n + block - 1) / block;
  parallel_for_each(blocks, [&](std::int64_t b) {
    const std::int64_t i0 = b * block;
    const int count = static_cast<int>(std::min<std::int64_t>(block, a.n - i0));
    double* zb = thread_normals(2 * static_cast<std::int64_t>(pairs) * block);
    std::int32_t chosen[block];
    for (int p0 = 0; p0 < count; p0 += lanes) {
      philox_pack rng(a.seed, a.first + static_cast<std::uint64_t>(i0 + p0), 0);
      vu x, y, z, w;
      rng.next_block(x, y, z, w);
      const vd u = bits53(x, y) * 1.1102230246251565e-16 + 1.1102230246251565e-16 / 2.0;
      const double total = a.cumulative[a.components - 1];
      for (int l = 0; l < lanes && p0 + l < count; ++l) {
        // The first k with cumulative[k] >= ul (the last component when none of the first K - 1 is), as the scalar
        // sampler's search, without branches: the answer stays in [base, base + len].
        const double ul = u[l] * total;
        std::int64_t base = 0, len = a.components - 1;
        while (len > 1) {
          const std::int64_t half = len / 2;
          base = a.cumulative[base + half - 1] < ul ? base + half : base;
          len -= half;
        }
        if (len == 1 && a.cumulative[base] < ul) ++base;
        chosen[p0 + l] = static_cast<std::int32_t>(base);
      }
      for (int p = 0; p < pairs; ++p) {
        rng.next_block(x, y, z, w);
        vd g0, g1;
        box_muller_pd(x, y, z, w, g0, g1);
        double* z0 = zb + static_cast<std::int64_t>(2 * p) * block + p0;
        double* z1 = z0 + block;
        // A partial last pack fills the block's spare columns, which no sample reads.
        __builtin_memcpy(z0, &g0, sizeof g0);
        __builtin_memcpy(z1, &g1, sizeof g1);
      }
    }
    if (a.labels != nullptr)
      for (int s = 0; s < count; ++s) a.labels[i0 + s] = chosen[s];
    // The block's samples grouped by component (counting sort for up to 256 components, else a sort).
    int idx[block];
    if (a.components <= 256) {
      int start[257] = {};
      for (int s = 0; s < count; ++s) ++start[chosen[s] + 1];
      for (std::int64_t k = 0; k < a.components; ++k) start[k + 1] += start[k];
      for (int s = 0; s < count; ++s) idx[start[chosen[s]]++] = s;
    } else {
      std::int64_t order[block];  // component << 8 | sample
      for (int s = 0; s < count; ++s) order[s] = (static_cast<std::int64_t>(chosen[s]) << 8) | s;
      std::sort(order, order + count);
      for (int s = 0; s < count; ++s) idx[s] = static_cast<int>(order[s] & 0xff);
    }
    for (int s = 0; s < count;) {
      const std::int64_t k = chosen[idx[s]];
      int e = s + 1;
      while (e < count && chosen[idx[e]] == k) ++e;
      for (; s + 4 <= e; s += 4) transform_group<4>(a, zb, idx + s, k, i0, out);
      if (e - s >= 2) {
        transform_group<2>(a, zb, idx + s, k, i0, out);
        s += 2;
      }
      if (s < e) transform_group<1>(a, zb, idx + s, k, i0, out);
      s = e;
    }
  });
}

}  // namespace

void run_posterior_sample(const posterior_sample_args& a, float* out) { sample(a, out); }
void run_posterior_sample(const posterior_sample_args& a, double* out) { sample(a, out); }

}  // namespace diffsample::cpu::DS_SIMD_NS
