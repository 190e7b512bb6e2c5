// Staging of row-major rows through shared memory (kernels/launch.cuh for_each_row_staged_kernel): the index
// arithmetic and the block size, without CUDA syntax, so that host code and tests can include them.
#pragma once

#include <cstdint>

#include "kernels/config.cuh"

namespace diffsample::kernels {

/// Dynamic shared memory a kernel may take without opting in (every architecture the library builds for).
constexpr std::int64_t shared_scratch_bytes = 48 * 1024;

/// Staging of row-major rows through shared memory, for per-point functors over row-major arrays (a point's d
/// floats contiguous, the public layout of evaluate() and denoiser_jvp()). One thread per row reading its own row
/// makes every warp load touch 32 rows d floats apart (32 sectors per request for 32 useful words) and, as the rows
/// outgrow the L1, fetches each sector about once per float read. Staged, a block copies its T rows with consecutive
/// threads on consecutive floats (whole sectors), coordinate-major with a pitch of T + 1 floats: row r's float j at
/// to[j pitch + r], so that the copy's consecutive floats of a row land in consecutive banks (pitch = 1 mod 32) and
/// the compute's warp reads one coordinate of 32 consecutive rows, also in 32 banks. Results are those of the
/// functor on its global rows bit for bit: the same operations on the same values, only their addresses differ.
/// The index arithmetic is here, callable on the host, so that a host test runs a block's copies thread by thread.
struct row_stage {
  int threads;  // T: rows per block
  int pitch;    // T + 1
  DS_HD_INLINE static row_stage of(int threads) { return {threads, threads + 1}; }
  /// Thread tid's part of copying `rows` (<= T) row-major rows of d floats from `from` into `to` (coordinate-major).
  DS_HD_INLINE void load(const float* from, int rows, int d, int tid, float* to) const {
    const int count = rows * d;
    for (int e = tid; e < count; e += threads) {
      const int r = e / d;
      to[(e - r * d) * pitch + r] = from[e];
    }
  }
  /// Thread tid's part of the copy back: the staged rows into `rows` row-major rows of d floats at `to`.
  DS_HD_INLINE void store(const float* from, int rows, int d, int tid, float* to) const {
    const int count = rows * d;
    for (int e = tid; e < count; e += threads) {
      const int r = e / d;
      to[e] = from[(e - r * d) * pitch + r];
    }
  }
  /// Shared bytes for `columns` staged floats per row.
  DS_HD_INLINE std::int64_t bytes(std::int64_t columns) const {
    return static_cast<std::int64_t>(pitch) * columns * static_cast<std::int64_t>(sizeof(float));
  }
};

/// The narrowest rows that are staged: below 8 floats (32 bytes) a warp's row-per-thread load already reads whole
/// sectors of a few contiguous lines, and the copies would only add two barriers.
constexpr int row_staged_min_width = 8;

/// Rows per block for `columns` staged floats per row (the inputs' d each, and the output's d): `block`, or the
/// largest multiple of 32 below it whose stage fits in shared_scratch_bytes; 0 when not even 32 rows fit (columns >
/// 372) or the rows are narrower than row_staged_min_width.
inline int row_staged_block(int block, int d, std::int64_t columns) {
  if (d < row_staged_min_width) return 0;
  for (int t = block / 32 * 32; t >= 32; t -= 32)
    if (row_stage::of(t).bytes(columns) <= shared_scratch_bytes) return t;
  return 0;
}

}  // namespace diffsample::kernels
