// Packs of chains in SIMD lanes for the CPU executor: a float pack with the lane-generic helpers the chain bodies of
// kernels/ call (ds_select, ds_fma, ds_exp, ds_log, ds_sqrt, ...), vector exp/log/sincos, and a Philox stream per
// lane. This header is compiled once per dispatch target (DS_SIMD_TARGET 0: x86-64 baseline SSE2, 1: AVX2 + FMA,
// 2: AVX-512), each in its own namespace, and chosen at run time (src/cpu/dispatch.cpp).
//
// Every operation is lane by lane: a chain's result does not depend on which pack or lane it runs in, so results are
// bit-identical across thread counts and batch splits for a given target.
//
// Accuracy (tests/test_simd.cpp measures it against FP64 over the ranges the samplers use):
//   exp: Cody-Waite reduction and a degree-6 polynomial (Cephes expf), <= 2 ulp; 0 below -87.3 (FLT_MIN's exponent)
//   log: mantissa in [sqrt(1/2), sqrt(2)), degree-9 polynomial (Cephes logf), <= 2 ulp
//   sin, cos: reduction by pi/2 in three parts, degree-7/8 polynomials, |error| <= 2^-22 on [0, 2 pi]
//   sqrt, +, -, *, /, fma: the IEEE instructions.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/rng.cuh"

#if !defined(DS_SIMD_TARGET)
#error "DS_SIMD_TARGET must be defined (0 sse2, 1 avx2, 2 avx512)"
#endif
#if DS_SIMD_TARGET == 0
#define DS_SIMD_NS simd_sse2
#define DS_SIMD_LANES 4
#elif DS_SIMD_TARGET == 1
#define DS_SIMD_NS simd_avx2
#define DS_SIMD_LANES 8
#elif DS_SIMD_TARGET == 2
#define DS_SIMD_NS simd_avx512
#define DS_SIMD_LANES 16
#else
#error "unknown DS_SIMD_TARGET"
#endif

namespace diffsample::cpu::DS_SIMD_NS {

constexpr int lanes = DS_SIMD_LANES;

/// Forced inlining for the vector math: a call would make every live vector register caller-saved (the SysV ABI
/// preserves none), so an out-of-line exp in the softmax spills and reloads the chunk's weights around each call.
#define DS_SIMD_INLINE inline __attribute__((always_inline))
typedef float vf __attribute__((vector_size(lanes * 4)));
typedef std::int32_t vi __attribute__((vector_size(lanes * 4)));
typedef std::uint32_t vu __attribute__((vector_size(lanes * 4)));
typedef std::uint64_t vu64 __attribute__((vector_size(lanes * 8)));

/// Lane mask: all ones where true.
struct mpack {
  vi m;
};

/// lanes floats, one chain each.
struct fpack {
  vf v;
  fpack() = default;
  fpack(float s) : v(s - vf{}) {}  // broadcast (T(gamma), T(0) in the chain bodies); s - 0 is s, -0 included
  explicit fpack(vf x) : v(x) {}
  float operator[](int l) const { return v[l]; }
};

inline fpack operator+(fpack a, fpack b) { return fpack(a.v + b.v); }
inline fpack operator-(fpack a, fpack b) { return fpack(a.v - b.v); }
inline fpack operator*(fpack a, fpack b) { return fpack(a.v * b.v); }
inline fpack operator/(fpack a, fpack b) { return fpack(a.v / b.v); }
inline fpack operator-(fpack a) { return fpack(-a.v); }
inline mpack operator<(fpack a, fpack b) { return {a.v < b.v}; }
inline mpack operator>(fpack a, fpack b) { return {a.v > b.v}; }
inline mpack operator!=(fpack a, fpack b) { return {a.v != b.v}; }
inline mpack operator&&(mpack a, mpack b) { return {a.m & b.m}; }

inline vf as_float(vi x) { return (vf)x; }  // vector casts reinterpret the bits
inline vi as_int(vf x) { return (vi)x; }

inline fpack ds_select(mpack m, fpack a, fpack b) { return fpack(m.m ? a.v : b.v); }
inline fpack ds_min(fpack a, fpack b) { return fpack(a.v < b.v ? a.v : b.v); }
inline fpack ds_max(fpack a, fpack b) { return fpack(a.v > b.v ? a.v : b.v); }
inline fpack ds_abs(fpack a) { return fpack(as_float(as_int(a.v) & 0x7fffffff)); }

#if DS_SIMD_TARGET == 0
inline fpack ds_fma(fpack a, fpack b, fpack c) { return fpack(a.v * b.v + c.v); }  // no FMA unit: two roundings
inline fpack ds_sqrt(fpack a) { return fpack(_mm_sqrt_ps(a.v)); }
inline bool ds_none(mpack m) { return _mm_movemask_ps(_mm_castsi128_ps(__m128i(m.m))) == 0; }
#elif DS_SIMD_TARGET == 1
inline fpack ds_fma(fpack a, fpack b, fpack c) { return fpack(_mm256_fmadd_ps(a.v, b.v, c.v)); }
inline fpack ds_sqrt(fpack a) { return fpack(_mm256_sqrt_ps(a.v)); }
inline bool ds_none(mpack m) { return _mm256_movemask_ps(_mm256_castsi256_ps(__m256i(m.m))) == 0; }
#else
inline fpack ds_fma(fpack a, fpack b, fpack c) { return fpack(_mm512_fmadd_ps(a.v, b.v, c.v)); }
inline fpack ds_sqrt(fpack a) { return fpack(_mm512_maskz_sqrt_ps(__mmask16(0xffff), a.v)); }
inline bool ds_none(mpack m) { return _mm512_test_epi32_mask(__m512i(m.m), __m512i(m.m)) == 0; }
#endif

/// Round to nearest integer (ties to even) as float and as int, |x| < 2^22.
DS_SIMD_INLINE void round_split(vf x, vf& n, vi& ni) {
  const vf magic = vf{} + 12582912.f;  // 1.5 * 2^23
  const vf t = x + magic;
  n = t - magic;
  ni = as_int(t) - as_int(magic);
}

/// e^x.
DS_SIMD_INLINE fpack ds_exp(fpack xp) {
  vf x = xp.v;
  const vi nan = x != x;
  const vi under = x < -87.33654f;
  const vi over = x > 88.72283f;
  x = under ? vf{} - 87.f : x;
  x = over ? vf{} + 88.f : x;
  vf n;
  vi ni;
  round_split(x * 1.44269504088896341f, n, ni);
  vf r = ds_fma(fpack(n), fpack(-0.693359375f), fpack(x)).v;
  r = ds_fma(fpack(n), fpack(2.12194440e-4f), fpack(r)).v;
  fpack p(1.9875691500e-4f);
  const fpack rr(r);
  p = ds_fma(p, rr, 1.3981999507e-3f);
  p = ds_fma(p, rr, 8.3334519073e-3f);
  p = ds_fma(p, rr, 4.1665795894e-2f);
  p = ds_fma(p, rr, 1.6666665459e-1f);
  p = ds_fma(p, rr, 5.0000001201e-1f);
  const fpack y = ds_fma(p * rr, rr, rr + fpack(1.f));
  vf out = as_float(as_int(y.v) + (ni << 23));
  out = under ? vf{} : out;
  out = over ? vf{} + INFINITY : out;
  out = nan ? xp.v : out;
  return fpack(out);
}
DS_SIMD_INLINE fpack softmax_exp(fpack x) { return ds_exp(x); }

/// Natural logarithm: -inf at 0, NaN below 0 and for NaN, inf at inf.
DS_SIMD_INLINE fpack ds_log(fpack xp) {
  vf x = xp.v;
  const vi tiny = x < 1.17549435e-38f;  // subnormal (or <= 0): scale up by 2^23
  x = tiny ? x * 8388608.f : x;
  const vi bits = as_int(x);
  vi e = ((bits >> 23) & 0xff) - 127 - (tiny & 23);
  vf m = as_float((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const vi big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = e - big;  // big is -1 where true
  const fpack f(m - 1.f);
  const fpack z = f * f;
  fpack p(7.0376836292e-2f);
  p = ds_fma(p, f, -1.1514610310e-1f);
  p = ds_fma(p, f, 1.1676998740e-1f);
  p = ds_fma(p, f, -1.2420140846e-1f);
  p = ds_fma(p, f, 1.4249322787e-1f);
  p = ds_fma(p, f, -1.6668057665e-1f);
  p = ds_fma(p, f, 2.0000714765e-1f);
  p = ds_fma(p, f, -2.4999993993e-1f);
  p = ds_fma(p, f, 3.3333331174e-1f);
  const fpack ef(__builtin_convertvector(e, vf));
  fpack y = p * f * z;
  y = ds_fma(ef, -2.12194440e-4f, y);
  y = ds_fma(z, -0.5f, y);
  fpack out = f + y;
  out = ds_fma(ef, 0.693359375f, out);
  vf o = out.v;
  const vf xin = xp.v;
  o = xin == 0.f ? vf{} - INFINITY : o;
  o = xin == INFINITY ? xin : o;
  o = (xin < 0.f) | (xin != xin) ? vf{} + NAN : o;
  return fpack(o);
}

/// sin and cos of v, |v| < 2^20 (the samplers call it on [0, 2 pi]).
DS_SIMD_INLINE void ds_sincos(fpack vp, fpack& s, fpack& c) {
  vf n;
  vi q;
  round_split(vp.v * 0.636619772367581343f, n, q);
  const fpack nn(n);
  fpack r = ds_fma(nn, -1.5703125f, vp);
  r = ds_fma(nn, -4.837512969970703125e-4f, r);
  r = ds_fma(nn, -7.54978995489188216e-8f, r);
  const fpack z = r * r;
  fpack ps(-1.9515295891e-4f);
  ps = ds_fma(ps, z, 8.3321608736e-3f);
  ps = ds_fma(ps, z, -1.6666654611e-1f);
  const fpack sr = ds_fma(ps * z, r, r);
  fpack pc(2.443315711809948e-5f);
  pc = ds_fma(pc, z, -1.388731625493765e-3f);
  pc = ds_fma(pc, z, 4.166664568298827e-2f);
  const fpack cr = ds_fma(pc * z, z, ds_fma(z, -0.5f, 1.f));
  const vi swap = (q & 1) != 0;
  const vf sv = swap ? cr.v : sr.v, cv = swap ? sr.v : cr.v;
  const vi sneg = (q & 2) << 30, cneg = ((q + 1) & 2) << 30;
  s = fpack(as_float(as_int(sv) ^ sneg));
  c = fpack(as_float(as_int(cv) ^ cneg));
}

/// 32 x 32 -> 64-bit products of every lane: low and high halves.
DS_SIMD_INLINE void mulhilo(std::uint32_t m, vu a, vu& lo, vu& hi) {
  const vu64 p = __builtin_convertvector(a, vu64) * std::uint64_t(m);
  lo = __builtin_convertvector(p, vu);
  hi = __builtin_convertvector(p >> 32, vu);
}

/// The Philox stream of kernels::philox_stream, one per lane (chain ids first_id + lane), drawing whole blocks.
struct philox_pack {
  vu cx, cy, cz, cw;
  std::uint32_t kx, ky;
  philox_pack(std::uint64_t seed, std::uint64_t first_id, std::uint64_t step) {
    kx = static_cast<std::uint32_t>(seed);
    ky = static_cast<std::uint32_t>(seed >> 32);
    std::uint32_t lo[lanes], hi[lanes];
    for (int l = 0; l < lanes; ++l) {
      const std::uint64_t id = first_id + static_cast<std::uint64_t>(l);
      lo[l] = static_cast<std::uint32_t>(id);
      hi[l] = static_cast<std::uint32_t>(id >> 32);
    }
    std::memcpy(&cz, lo, sizeof cz);
    std::memcpy(&cw, hi, sizeof cw);
    cx = vu{};
    cy = vu{} + static_cast<std::uint32_t>(step);
  }
  /// The next Philox4x32-10 block of every lane (as curand_Philox4x32_10).
  DS_SIMD_INLINE void next_block(vu& x, vu& y, vu& z, vu& w) {
    vu a = cx, b = cy, c = cz, e = cw;
    std::uint32_t k0 = kx, k1 = ky;
    for (int round = 0; round < 10; ++round) {
      vu lo0, hi0, lo1, hi1;
      mulhilo(0xD2511F53u, a, lo0, hi0);
      mulhilo(0xCD9E8D57u, c, lo1, hi1);
      a = hi1 ^ b ^ k0;
      b = lo1;
      c = hi0 ^ e ^ k1;
      e = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    x = a;
    y = b;
    z = c;
    w = e;
    cx += 1u;
  }
  static fpack to_uniform(vu x) {
    // curand_uniform: x 2^-32 + 2^-33, in (0, 1].
    return ds_fma(fpack(__builtin_convertvector(x, vf)), 2.3283064e-10f, 2.3283064e-10f / 2.f);
  }
  /// The first output of the next block, uniform in (0, 1] (the scalar stream's uniform() after whole blocks).
  fpack uniform() {
    vu x, y, z, w;
    next_block(x, y, z, w);
    return to_uniform(x);
  }
  /// Box-Muller as cuRAND's _curand_box_muller: (sin v, cos v) sqrt(-2 log u).
  DS_SIMD_INLINE static void box_muller(vu x, vu y, fpack& z0, fpack& z1) {
    const fpack u = to_uniform(x);
    const fpack v = ds_fma(fpack(__builtin_convertvector(y, vf)), 2.3283064e-10f * 6.2831855f,
                           2.3283064e-10f * 6.2831855f / 2.f);
    const fpack s = ds_sqrt(fpack(-2.f) * ds_log(u));
    fpack sn, cs;
    ds_sincos(v, sn, cs);
    z0 = sn * s;
    z1 = cs * s;
  }
  template <class F>
  void normals(int d, F&& f) {
    for (int j = 0; j < d; j += 4) {
      vu x, y, z, w;
      next_block(x, y, z, w);
      fpack a, b;
      box_muller(x, y, a, b);
      f(j, a);
      if (j + 1 < d) f(j + 1, b);
      if (j + 2 < d) {
        box_muller(z, w, a, b);
        f(j + 2, a);
        if (j + 3 < d) f(j + 3, b);
      }
    }
  }
};

}  // namespace diffsample::cpu::DS_SIMD_NS
