// Portability macros for code that runs on both executors: __host__ __device__ under nvcc, plain inline under a
// host compiler, so that the per-chain math in kernels/ is one source for the CUDA and the CPU executor.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DS_HD __host__ __device__
#define DS_HD_INLINE __host__ __device__ __forceinline__
#else
#define DS_HD
#define DS_HD_INLINE inline
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
