// Sliced Wasserstein distance on either executor: directions, projections and the per-direction 1-D W_p are the
// functors of kernels/metrics.cuh; the per-direction sort differs (CUB's segmented radix sort on the GPU, std::sort
// on the CPU), and the GPU sums a direction's 1-D distance with one block per direction (kernels/metrics_cuda.cuh).
// Directions are processed in chunks sized to a memory budget, and reduced in direction order.
//
// Asynchronous on the GPU: segment offsets are computed on the device and CUB's DeviceSegmentedRadixSort launches
// one block per segment without reading anything back (DeviceSegmentedSort, by contrast, copies its segment-group
// sizes to the host and synchronises the stream in every call), so the whole call can be captured in a CUDA graph.
#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include <climits>

#include <cub/device/device_segmented_radix_sort.cuh>

#include "kernels/metrics.cuh"
#include "kernels/metrics_cuda.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/pool.hpp"
#include "src/cpu/radix_sort.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/metrics.hpp>

namespace diffsample {

namespace {

constexpr std::size_t align_bytes = 256;
constexpr std::size_t too_large = std::numeric_limits<std::size_t>::max();

std::size_t round_up(std::size_t x) { return (x + align_bytes - 1) / align_bytes * align_bytes; }

// Workspace of one pass over `chunk` directions, regions aligned to 256 bytes from an aligned base (the total
// includes the slack to align an arbitrary base). Returns too_large when the sizes overflow.
struct layout {
  std::size_t u = 0, offsets = 0, values = 0, sums = 0, keys0 = 0, keys1 = 0, temp = 0, temp_bytes = 0, total = 0;
};

layout make_layout(std::int64_t na, std::int64_t nb, std::int64_t d, std::int64_t chunk, executor where) {
  layout l;
  // CUB's segmented radix sort counts items and segments in int.
  const std::int64_t items_limit =
      where == executor::cuda ? std::int64_t(INT_MAX) : std::numeric_limits<std::int64_t>::max() / 16;
  if (chunk > items_limit / (na + nb) || chunk > items_limit / d || 2 * chunk > items_limit) {
    l.total = too_large;
    return l;
  }
  const std::int64_t items = chunk * (na + nb);
  std::size_t at = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t start = at;
    at = round_up(at + bytes);
    return start;
  };
  l.u = take(std::size_t(chunk * d) * sizeof(double));
  l.offsets = take(std::size_t(2 * chunk + 1) * sizeof(std::int64_t));
  l.values = take(std::size_t(chunk) * sizeof(double));
  l.sums = take(2 * sizeof(double));  // running sum, result slot of the synchronous call
  l.keys0 = take(std::size_t(items) * sizeof(float));
  if (where == executor::cuda) {
    l.keys1 = take(std::size_t(items) * sizeof(float));
    cub::DoubleBuffer<float> keys(nullptr, nullptr);
    const std::int64_t* no_offsets = nullptr;
    // A size query, through checked_launch so that a caller's pending error is not read as CUB's (see
    // particles.cu's checked_scan_bytes).
    DIFFSAMPLE_CUDA_TRY(kernels::checked_launch([&] {
      return cub::DeviceSegmentedRadixSort::SortKeys(nullptr, l.temp_bytes, keys, int(items), int(2 * chunk),
                                                     no_offsets, no_offsets + 1);
    }));
    l.temp = take(l.temp_bytes);
  }
  l.total = at + align_bytes;
  return l;
}

executor resolve_for_query(executor where) {
  if (where == executor::automatic) return cuda_available() ? executor::cuda : executor::cpu;
  return detail::resolve_executor(where, nullptr, "where");
}

// The largest chunk of directions whose layout fits `budget` bytes (0 when not even one direction fits).
std::int64_t chunk_for(std::int64_t na, std::int64_t nb, std::int64_t d, int directions, std::size_t budget,
                       executor where) {
  std::int64_t lo = 0, hi = directions;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo + 1) / 2;
    if (make_layout(na, nb, d, mid, where).total <= budget)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// The whole computation; `result` receives the value (device-accessible on CUDA). With result == nullptr the
// value goes to the workspace's result slot, whose address is returned through `slot`.
void run(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t d, int directions,
         std::uint64_t seed, int p, double* result, executor where, cudaStream_t stream, void* workspace,
         std::size_t workspace_bytes, std::unique_ptr<detail::scratch>& owned, double** slot) {
  if (where == executor::cuda)
    limits::check("n_a + n_b", n_a + n_b, 0, limits::max_int_count,
                  "on the CUDA executor: CUB's segmented sort counts in int");
  std::int64_t chunk = 0;
  unsigned char* base = nullptr;
  if (workspace != nullptr) {
    chunk = chunk_for(n_a, n_b, d, directions, workspace_bytes, where);
    DIFFSAMPLE_EXPECTS(chunk >= 1, "workspace_bytes: " << workspace_bytes << " given, at least "
                                                       << make_layout(n_a, n_b, d, 1, where).total
                                                       << " needed (one direction per pass)");
    detail::check_buffer("workspace", workspace, 1, 1, where);
    base = static_cast<unsigned char*>(workspace);
  } else {
    chunk = std::max<std::int64_t>(1, chunk_for(n_a, n_b, d, directions, sliced_wasserstein_scratch_limit, where));
    owned = std::make_unique<detail::scratch>(make_layout(n_a, n_b, d, chunk, where).total, where, stream);
    base = static_cast<unsigned char*>(owned->data());
  }
  const layout l = make_layout(n_a, n_b, d, chunk, where);
  base += (align_bytes - reinterpret_cast<std::uintptr_t>(base) % align_bytes) % align_bytes;
  double* u = reinterpret_cast<double*>(base + l.u);
  std::int64_t* offsets = reinterpret_cast<std::int64_t*>(base + l.offsets);
  double* values = reinterpret_cast<double*>(base + l.values);
  double* sums = reinterpret_cast<double*>(base + l.sums);
  float* keys0 = reinterpret_cast<float*>(base + l.keys0);
  if (result == nullptr) result = sums + 1;
  if (slot != nullptr) *slot = result;

  kernels::for_each_index(where, 2 * chunk + 1, kernels::segment_offsets_functor{offsets, n_a, n_b}, stream);
  for (std::int64_t first = 0; first < directions; first += chunk) {
    const std::int64_t count = std::min<std::int64_t>(chunk, directions - first);
    const std::int64_t items = count * (n_a + n_b);
    kernels::for_each_index(where, count, kernels::direction_functor{u, seed, first, int(d)}, stream);
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar) {
      // Packs of directions in SIMD lanes (bit for bit projection_functor's keys): tasks of up to 8 directions x
      // 1024 points of a or b.
      const std::int64_t groups = (count + 7) / 8, blocks_a = (n_a + 1023) / 1024, blocks_b = (n_b + 1023) / 1024;
      cpu::parallel_for_each(groups * (blocks_a + blocks_b), [&](std::int64_t task) {
        const std::int64_t g = task / (blocks_a + blocks_b), blk = task - g * (blocks_a + blocks_b);
        const bool in_a = blk < blocks_a;
        const std::int64_t i0 = (in_a ? blk : blk - blocks_a) * 1024, n = in_a ? n_a : n_b;
        const int dirs = static_cast<int>(std::min<std::int64_t>(8, count - g * 8));
        const float* x = (in_a ? a : b) + i0 * d;
        float* keys = keys0 + g * 8 * (n_a + n_b) + (in_a ? 0 : n_a) + i0;
        cpu::run_projection_keys(target, u + g * 8 * d, dirs, x, std::min<std::int64_t>(1024, n - i0), d, keys,
                                 n_a + n_b);
      }, 1);
    } else {
      kernels::for_each_index(where, items, kernels::projection_functor{a, b, u, keys0, n_a, n_b, int(d)}, stream);
    }
    if (where == executor::cuda) {
      cub::DoubleBuffer<float> keys(keys0, reinterpret_cast<float*>(base + l.keys1));
      const std::int64_t* const_offsets = offsets;  // the type the size query instantiated
      std::size_t temp_bytes = l.temp_bytes;
      DIFFSAMPLE_CUDA_TRY(kernels::checked_launch([&] {
        return cub::DeviceSegmentedRadixSort::SortKeys(base + l.temp, temp_bytes, keys, int(items), int(2 * count),
                                                       const_offsets, const_offsets + 1, 0, int(sizeof(float) * 8),
                                                       stream);
      }));
      DIFFSAMPLE_CUDA_TRY(kernels::checked_launch([&] {
        kernels::wasserstein_direction_kernel<<<unsigned(count), kernels::distance_block, 0, stream>>>(
            kernels::wasserstein_direction_functor{keys.Current(), keys0, values, n_a, n_b, p});
      }));
    } else {
      const bool radix = cpu::chain_target() != cpu::simd_target::scalar;
      cpu::parallel_for_each(
          2 * count,
          [&](std::int64_t s) {
            if (!radix) {
              std::sort(keys0 + offsets[s], keys0 + offsets[s + 1]);
              return;
            }
            // Radix sort (the same sorted values; keys hold no NaN): scratch per thread, kept between calls.
            static thread_local std::vector<float> tmp;
            const std::int64_t n = offsets[s + 1] - offsets[s];
            if (static_cast<std::int64_t>(tmp.size()) < n) tmp.resize(n);
            cpu::radix_sort(keys0 + offsets[s], n, tmp.data());
          },
          1);
      const kernels::wasserstein_direction_functor distance{keys0, keys0, values, n_a, n_b, p};
      cpu::parallel_for_each(count, [&](std::int64_t c) { distance(c); }, 1);
    }
    kernels::for_each_index(where, 1,
                            kernels::accumulate_functor{values, sums, result, count, directions, p, first == 0,
                                                        first + count == directions},
                            stream);
  }
}

// The result and the caller's workspace share no byte with either sample set (a and b may be one array): a result
// written after a pass would be read back as samples by the next, and the workspace is written before b is read.
void check_apart(const float* a, std::int64_t n_a, const float* b, std::int64_t n_b, std::int64_t d,
                 const double* result, const void* workspace, std::size_t workspace_bytes) {
  const detail::buffer_span out = {"result", result, result ? sizeof(double) : 0};
  const detail::buffer_span ws = {"workspace", workspace, workspace ? workspace_bytes : 0};
  detail::check_disjoint({{"a", a, static_cast<std::size_t>(n_a * d) * sizeof(float)}, out, ws});
  detail::check_disjoint({{"b", b, static_cast<std::size_t>(n_b * d) * sizeof(float)}, out, ws});
}

}  // namespace

std::size_t sliced_wasserstein_workspace_bytes(std::int64_t n_a, std::int64_t n_b, std::int64_t d,
                                               int directions_per_pass, executor where) {
  detail::check_sliced_wasserstein(n_a, n_b, d, directions_per_pass, 1, "directions_per_pass");
  const layout l = make_layout(n_a, n_b, d, directions_per_pass, resolve_for_query(where));
  DIFFSAMPLE_EXPECTS(l.total != too_large, "directions_per_pass: " << directions_per_pass << " x (n_a + n_b) = "
                                                                   << directions_per_pass << " x " << n_a + n_b
                                                                   << " projections overflow a byte count");
  return l.total;
}

executor sliced_wasserstein_async(double* result, std::int64_t n_a, std::int64_t n_b, std::int64_t d, const float* a,
                                  const float* b, int directions, std::uint64_t seed, int p, execution exec,
                                  void* workspace, std::size_t workspace_bytes) {
  detail::check_sliced_wasserstein(n_a, n_b, d, directions, p);
  const executor where = detail::resolve_executor(exec.kind, a);
  detail::check_buffer("a", a, n_a * d, sizeof(float), where);
  detail::check_buffer("b", b, n_b * d, sizeof(float), where);
  DIFFSAMPLE_EXPECTS(result != nullptr, "result: null pointer");
  detail::check_buffer("result", result, 1, sizeof(double), where);
  check_apart(a, n_a, b, n_b, d, result, workspace, workspace_bytes);
  std::unique_ptr<detail::scratch> owned;
  run(a, n_a, b, n_b, d, directions, seed, p, result, where, exec.stream, workspace, workspace_bytes, owned,
      nullptr);
  return where;
}

double sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t d, const float* a, const float* b,
                          int directions, std::uint64_t seed, int p, execution exec, void* workspace,
                          std::size_t workspace_bytes) {
  detail::check_sliced_wasserstein(n_a, n_b, d, directions, p);
  const executor where = detail::resolve_executor(exec.kind, a);
  detail::check_buffer("a", a, n_a * d, sizeof(float), where);
  detail::check_buffer("b", b, n_b * d, sizeof(float), where);
  check_apart(a, n_a, b, n_b, d, nullptr, workspace, workspace_bytes);
  // Before anything is issued: the synchronisation that returns the value would invalidate a capture of the stream.
  if (where == executor::cuda)
    detail::refuse_capture_unrecordable(exec.stream, "exec.stream",
                                        "sliced_wasserstein() returns the distance on the host, for which it "
                                        "synchronises exec.stream",
                                        "capture sliced_wasserstein_async(), which writes it to device memory");
  std::unique_ptr<detail::scratch> owned;
  double* slot = nullptr;
  run(a, n_a, b, n_b, d, directions, seed, p, nullptr, where, exec.stream, workspace, workspace_bytes, owned, &slot);
  double value = 0;
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(&value, slot, sizeof(double), cudaMemcpyDeviceToHost, exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(exec.stream));
  } else {
    value = *slot;
  }
  DIFFSAMPLE_EXPECTS(!std::isnan(value), "a, b: a sample holds a non-finite value (or a projection exceeds the "
                                         "float range); the sliced distance is undefined");
  return value;
}

}  // namespace diffsample
