// Packs of particles of one problem on one dispatch target (DS_SIMD_TARGET, see src/cpu/simd.hpp): the pack's rows,
// per-thread workspace of packs, the pool's pass over the packs of every problem, and the residual and precision rows
// the guided samplers' packed stages share (src/cpu/guided.cpp, src/cpu/guided_tells.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/guided.cuh"
#include "src/cpu/pool.hpp"
#include "src/cpu/simd.hpp"

namespace diffsample::cpu::DS_SIMD_NS {

/// A run-time-length vector of packs.
struct span {
  fpack* p;
  int d;
  fpack& operator[](int j) const { return p[j]; }
  int size() const { return d; }
};

inline fpack* thread_packs(std::int64_t count) {
  static thread_local std::vector<fpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

/// A second per-thread buffer (beside thread_packs'), kept between calls.
inline fpack* thread_packs_extra(std::int64_t count) {
  static thread_local std::vector<fpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

/// Particles i0 .. i0 + valid - 1 of problem b.
struct pack_rows {
  std::int64_t b, i0;
  int valid;
  void load(fpack* v, const float* rows, int d) const {
    for (int j = 0; j < d; ++j) v[j] = fpack(0.f);
    for (int l = 0; l < valid; ++l)
      for (int j = 0; j < d; ++j) v[j].v[l] = rows[(i0 + l) * d + j];
  }
  void store(const fpack* v, float* rows, int d) const {
    for (int l = 0; l < valid; ++l)
      for (int j = 0; j < d; ++j) rows[(i0 + l) * d + j] = v[j].v[l];
  }
};

/// kernels::multistep_row on a pack (rows row-major): the denoiser ms of transition k kept at the lanes' rows for
/// transition k + 1, then replaced by the kernel's denoiser m + w_k (m - m_{k-1}), m_{k-1} from the rows of the
/// lanes' ancestors. Nothing without the multistep kernel (guided_params::multistep).
inline void multistep_packs(const kernels::guided_params& p, std::int64_t k, const pack_rows& pk, fpack* ms) {
  if (p.multistep == nullptr) return;
  const int d = p.d;
  const std::int64_t half = p.problems * p.particles * d;
  pk.store(ms, p.multistep_m + (k & 1) * half, d);
  const float w = p.multistep[k];
  if (w == 0.f) return;
  const float* previous = p.multistep_m + ((k + 1) & 1) * half;
  const float* rows[lanes];
  for (int l = 0; l < lanes; ++l)
    rows[l] = previous + (pk.b * p.particles + static_cast<std::int64_t>(p.ancestors[pk.i0 + (l < pk.valid ? l : 0)])) * d;
  const fpack wk(w);
  for (int j = 0; j < d; ++j) {
    fpack mj;
    for (int l = 0; l < lanes; ++l) mj.v[l] = rows[l][j];
    ms[j] = ms[j] + wk * (ms[j] - mj);
  }
}

/// Half a pack in FP64 (lanes / 2 doubles: one native vector of the target), and a pack's two halves widened or
/// narrowed (exact one way, one rounding the other). A whole pack of doubles would be two native vectors that GCC
/// keeps in memory in a loop.
typedef double dhalf __attribute__((vector_size(lanes * 4)));
typedef float fhalf __attribute__((vector_size(lanes * 2)));
DS_SIMD_INLINE void widen(fpack v, dhalf& lo, dhalf& hi) {
  fhalf a, b;
  std::memcpy(&a, &v.v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&v.v) + sizeof a, sizeof b);
  lo = __builtin_convertvector(a, dhalf);
  hi = __builtin_convertvector(b, dhalf);
}
DS_SIMD_INLINE fpack narrow(dhalf lo, dhalf hi) {
  const fhalf a = __builtin_convertvector(lo, fhalf), b = __builtin_convertvector(hi, fhalf);
  fpack v;
  std::memcpy(&v.v, &a, sizeof a);
  std::memcpy(reinterpret_cast<char*>(&v.v) + sizeof a, &b, sizeof b);
  return v;
}

/// r = scale y_b - A_b x - noise z (d_y packs), as guided_residual: the products and their sum in FP64 (exact
/// products, so the same floats as the kernel's), r rounded to float once. Dense A: x widened once into a per-thread
/// buffer (2 d half packs), then each row's sum over the coordinates in order, two half-pack accumulators.
inline void residual(const kernels::guided_params& p, std::int64_t b, float scale, const fpack* x, fpack* r,
                     float noise = 0.f, const fpack* z = nullptr) {
  const float* A = p.A + b * p.A_stride;
  const float* y = p.y + b * p.d_y;
  const dhalf zero{};
  auto start = [&](int o, dhalf& lo, dhalf& hi) {
    lo = hi = zero + double(scale) * double(y[o]);
    if (noise != 0.f) {
      dhalf zl, zh;
      widen(z[o], zl, zh);
      lo = lo - double(noise) * zl;
      hi = hi - double(noise) * zh;
    }
  };
  if (p.mask != nullptr) {
    const std::int32_t* index = p.mask + b * p.A_stride;
    for (int o = 0; o < p.d_y; ++o) {
      dhalf lo, hi, xl, xh;
      start(o, lo, hi);
      widen(x[index[o]], xl, xh);
      lo = lo - double(A[o]) * xl;
      hi = hi - double(A[o]) * xh;
      r[o] = narrow(lo, hi);
    }
    return;
  }
  static thread_local std::vector<dhalf> wide;
  if (static_cast<std::int64_t>(wide.size()) < 2 * std::int64_t(p.d)) wide.resize(2 * std::int64_t(p.d));
  dhalf* xd = wide.data();
  for (int j = 0; j < p.d; ++j) widen(x[j], xd[2 * j], xd[2 * j + 1]);
  for (int o = 0; o < p.d_y; ++o) {
    dhalf lo, hi;
    start(o, lo, hi);
    const float* row = A + static_cast<std::int64_t>(o) * p.d;
    for (int j = 0; j < p.d; ++j) {
      const double a = row[j];
      lo = lo - a * xd[2 * j];
      hi = hi - a * xd[2 * j + 1];
    }
    r[o] = narrow(lo, hi);
  }
}

/// x += value (row o of A_b), as guided_add_row: the one coordinate that a mask observes, or the dense row.
inline void add_operator_row(const kernels::guided_params& p, std::int64_t b, int o, fpack value, fpack* x) {
  const float* A = p.A + b * p.A_stride;
  if (p.mask != nullptr) {
    const int j = p.mask[b * p.A_stride + o];
    x[j] = x[j] + value * fpack(A[o]);
  } else {
    const float* row = A + static_cast<std::int64_t>(o) * p.d;
    for (int j = 0; j < p.d; ++j) x[j] = x[j] + value * fpack(row[j]);
  }
}

/// Row o of S^-1 t.
inline fpack precision_row(const kernels::guided_params& p, const float* P, int o, const fpack* t) {
  if (p.mask != nullptr) return fpack(P[o]) * t[o];
  fpack u(0.f);
  for (int c = 0; c < p.d_y; ++c) u = u + fpack(P[o * p.d_y + c]) * t[c];
  return u;
}

/// Runs f(pack, scratch) over the packs of every problem on the pool; scratch holds `scratch_packs` packs per thread.
template <class F>
inline void for_each_particle_pack(const kernels::guided_params& p, std::int64_t scratch_packs, const F& f) {
  const std::int64_t per = (p.particles + lanes - 1) / lanes, packs = p.problems * per;
  const std::int64_t chunk = std::max<std::int64_t>(1, packs / (std::int64_t(max_threads()) * 16));
  parallel_for_range(
      packs,
      [&](std::int64_t first, std::int64_t last) {
        fpack* scratch = thread_packs(scratch_packs);
        for (std::int64_t q = first; q < last; ++q) {
          const std::int64_t b = q / per, j0 = (q - b * per) * lanes;
          f(pack_rows{b, b * p.particles + j0, static_cast<int>(std::min<std::int64_t>(lanes, p.particles - j0))},
            scratch);
        }
      },
      chunk);
}

}  // namespace diffsample::cpu::DS_SIMD_NS
