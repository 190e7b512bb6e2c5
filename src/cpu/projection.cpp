// The sliced Wasserstein projections of one dispatch target (DS_SIMD_TARGET, see src/cpu/simd.hpp): lanes are
// directions (a pack of lanes / 2 doubles), and four points share each load of a pack of direction coordinates.
// Every (point, direction) is still summed in FP64 in coordinate order, one multiply and one add per coordinate:
// this file is compiled with -ffp-contract=off, so no FMA is formed and every projection is bit for bit the scalar
// loop's (kernels/metrics.cuh, src/metrics.cpp) on every target.
#include "src/cpu/simd.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "src/cpu/chains.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

constexpr int dlanes = lanes / 2;  // doubles per pack
typedef double vd __attribute__((vector_size(lanes * 4)));

inline void put(double* out, double s) { *out = s; }
inline void put(float* out, double s) {  // as projection_functor: non-finite or beyond the float range -> +inf
  float f = static_cast<float>(s);
  if (!(std::fabs(f) <= FLT_MAX)) f = INFINITY;
  *out = f;
}

/// An FP64 pack in a struct of this target's namespace: std::vector of the bare vector type would be one template
/// instance (external linkage) shared with every other object that makes a vector of the same width, whichever
/// instruction set it was compiled for (4 doubles are the AVX2 build's pack here and the SSE2 build's FP64 pack in
/// src/cpu/jacobian_tells.cpp), and the linker keeps one of them.
struct dpack {
  vd v;
};
static_assert(sizeof(dpack) == sizeof(vd), "dpack is one pack");

/// Directions transposed to d packs of dlanes (coordinate-major), per thread, kept between calls.
vd* thread_directions(std::int64_t d) {
  static thread_local std::vector<dpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < d) buffer.resize(d);
  return &buffer.data()->v;
}

template <class O>
void project(const double* u, int count, const float* x, std::int64_t n, std::int64_t d, O* out,
             std::int64_t stride) {
  vd* ut = thread_directions(d);
  for (int c0 = 0; c0 < count; c0 += dlanes) {
    const int gc = std::min(dlanes, count - c0);
    for (std::int64_t j = 0; j < d; ++j)
      for (int l = 0; l < dlanes; ++l) ut[j][l] = l < gc ? u[(c0 + l) * d + j] : 0.0;
    auto store = [&](std::int64_t i, vd s) {
      for (int l = 0; l < gc; ++l) put(out + (c0 + l) * stride + i, s[l]);
    };
    std::int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const float *x0 = x + i * d, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
      vd s0 = vd{}, s1 = vd{}, s2 = vd{}, s3 = vd{};
      for (std::int64_t j = 0; j < d; ++j) {
        const vd uj = ut[j];
        s0 = s0 + uj * double(x0[j]);
        s1 = s1 + uj * double(x1[j]);
        s2 = s2 + uj * double(x2[j]);
        s3 = s3 + uj * double(x3[j]);
      }
      store(i, s0);
      store(i + 1, s1);
      store(i + 2, s2);
      store(i + 3, s3);
    }
    for (; i < n; ++i) {
      const float* xi = x + i * d;
      vd s = vd{};
      for (std::int64_t j = 0; j < d; ++j) s = s + ut[j] * double(xi[j]);
      store(i, s);
    }
  }
}

}  // namespace

void run_projection(const double* u, int count, const float* x, std::int64_t n, std::int64_t d, double* out,
                    std::int64_t stride) {
  project(u, count, x, n, d, out, stride);
}

void run_projection_keys(const double* u, int count, const float* x, std::int64_t n, std::int64_t d, float* out,
                         std::int64_t stride) {
  project(u, count, x, n, d, out, stride);
}

}  // namespace diffsample::cpu::DS_SIMD_NS
