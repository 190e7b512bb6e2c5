// Portability macros for code that runs on both executors: __host__ __device__ under nvcc, plain inline under a
// host compiler, so that the per-chain math in kernels/ is one source for the CUDA and the CPU executor.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define DS_HD __host__ __device__
#define DS_HD_INLINE __host__ __device__ __forceinline__
// A rare path kept out of its caller, so that the caller's registers do not pay for it (a call on the device).
#define DS_HD_NOINLINE inline __host__ __device__ __noinline__
#else
#define DS_HD
#define DS_HD_INLINE inline
#define DS_HD_NOINLINE inline
#endif

namespace diffsample::kernels {

// Precision-explicit elementary functions: float stays float on both compilers (no silent promotion to double).
DS_HD_INLINE float ds_exp(float x) { return expf(x); }
DS_HD_INLINE double ds_exp(double x) { return exp(x); }
DS_HD_INLINE float ds_log(float x) { return logf(x); }
DS_HD_INLINE double ds_log(double x) { return log(x); }
DS_HD_INLINE float ds_sqrt(float x) { return sqrtf(x); }
DS_HD_INLINE double ds_sqrt(double x) { return sqrt(x); }

/// Chain state kept in registers: D is a compile-time dimension, every index a constant after unrolling.
template <class T, int D>
struct reg_vec {
  T v[D];
  DS_HD_INLINE T& operator[](int j) { return v[j]; }
  DS_HD_INLINE const T& operator[](int j) const { return v[j]; }
  DS_HD_INLINE static constexpr int size() { return D; }
};

/// A vector of run-time length d stored in memory with a stride: p[j * stride]. The CUDA executor lays workspace
/// out coordinate-major (stride = number of chains, coalesced across a warp); the CPU executor uses stride 1.
template <class T>
struct strided_vec {
  T* p;
  std::int64_t stride;
  int d;
  DS_HD_INLINE T& operator[](int j) const { return p[j * stride]; }
  DS_HD_INLINE int size() const { return d; }
};

// Lane-generic helpers: the chain bodies are written once over a lane type T, float here (one chain per thread on
// CUDA, the scalar CPU path) and a pack of chains in SIMD lanes on the CPU executor (src/cpu/simd.hpp), where the
// same names are overloaded.
DS_HD_INLINE float ds_select(bool c, float a, float b) { return c ? a : b; }
DS_HD_INLINE float ds_min(float a, float b) { return a < b ? a : b; }
DS_HD_INLINE float ds_max(float a, float b) { return a > b ? a : b; }
DS_HD_INLINE float ds_abs(float a) { return fabsf(a); }
/// a b + c: one rounding on the device; on the host as the build's instruction set allows (the x86-64 baseline has
/// no FMA: two roundings). Written explicitly where two code paths must round alike (fused and stepwise samplers).
#if defined(__CUDA_ARCH__)
DS_HD_INLINE float ds_fma(float a, float b, float c) { return fmaf(a, b, c); }
#else
DS_HD_INLINE float ds_fma(float a, float b, float c) { return a * b + c; }
#endif
/// True when no lane of the condition holds (for float: !c). Used only to skip work whose result would be exact.
DS_HD_INLINE bool ds_none(bool c) { return !c; }

/// The one list of compile-time dimensions whose chains keep their state in registers (Langevin, diffusion, and any
/// per-chain family): every entry is a kernel per family and executor to compile, so it stays short.
#define DIFFSAMPLE_REGISTER_DIMS(X) X(1) X(2) X(4) X(8) X(10) X(16) X(32)

DS_HD_INLINE constexpr bool is_register_dim(std::int64_t d) {
#define DIFFSAMPLE_IS_DIM_(D) d == D ||
  return DIFFSAMPLE_REGISTER_DIMS(DIFFSAMPLE_IS_DIM_) false;
#undef DIFFSAMPLE_IS_DIM_
}

/// Calls f(std::integral_constant<int, D>{}) for the register dimension D == d; returns false (calling nothing)
/// when d is not in the list.
template <class F>
inline bool dispatch_register_dim(std::int64_t d, F&& f) {
  switch (d) {
#define DIFFSAMPLE_DIM_CASE_(D) \
  case D: f(std::integral_constant<int, D>{}); return true;
    DIFFSAMPLE_REGISTER_DIMS(DIFFSAMPLE_DIM_CASE_)
#undef DIFFSAMPLE_DIM_CASE_
    default: return false;
  }
}

template <class V>
DS_HD_INLINE void swap_vec(V& a, V& b) {
  for (int j = 0; j < a.size(); ++j) {
    auto t = a[j];
    a[j] = b[j];
    b[j] = t;
  }
}
template <class T>
DS_HD_INLINE void swap_vec(strided_vec<T>& a, strided_vec<T>& b) {
  strided_vec<T> t = a;
  a = b;
  b = t;
}

}  // namespace diffsample::kernels
