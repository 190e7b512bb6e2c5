// Input validation shared by every entry point (internal). Each check throws invalid_argument (or
// out_of_memory) whose message names the argument and the offending value; nothing is launched before all pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "src/cuda_check.hpp"
#include <diffsample/execution.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/schedule.hpp>

namespace diffsample {
class observation_operator;
}

namespace diffsample::detail {

/// Where a pointer's memory lives, as far as the CUDA runtime knows (host when no GPU is present).
enum class memory_kind { host, device, managed };
memory_kind pointer_kind(const void* ptr) noexcept;

/// Resolves `automatic` to cuda or cpu: CUDA when a GPU is present and `data` is device-accessible. Forcing cuda
/// without a GPU is an error, and so is a value outside the enum; both messages name @p name.
executor resolve_executor(executor requested, const void* data, const char* name = "executor");

/// The one refusal of a forced CUDA executor where no GPU is usable, naming the argument that asked for it:
/// "<argument>: cuda was requested but no GPU is usable (<the CUDA runtime's reason>)". Exported for the Python
/// package, whose checks of a CUDA request before the library sees it use these words.
DIFFSAMPLE_API std::string no_usable_gpu(const char* argument);

/// The executor a plan runs on, fixed when it is made: `automatic` means the GPU when there is one, else the CPU
/// (a plan holds no caller data to probe); cpu and cuda as resolve_executor() (cuda without a GPU is an error).
executor plan_executor(execution exec);

/// The stream of a call on a plan made for `where`, after checking that `exec` asks for that executor (automatic
/// means the plan's).
cudaStream_t plan_stream(executor where, execution exec);

/// Checks a caller buffer of `count` elements of `element_bytes` each: non-null when count > 0, aligned to
/// element_bytes, and accessible from the executor.
void check_buffer(const char* name, const void* ptr, std::int64_t count, std::size_t element_bytes, executor where);

/// Checks 0 <= n and that n * d elements fit in int64 and in a size_t byte count.
void check_count(const char* name, std::int64_t n, std::int64_t d = 1);

/// One caller buffer of a call, for check_disjoint(): its name, its first byte and its size in bytes (absent when ptr
/// is null or bytes is 0).
struct buffer_span {
  const char* name;
  const void* ptr;
  std::size_t bytes;
};

/// Checks that a caller's workspace (when given) holds the @p need bytes the call needs: "workspace_bytes: G given,
/// N needed". Called before the overlap checks, which measure the workspace by what the call will use.
void check_workspace_bytes(std::size_t need, const void* workspace, std::size_t workspace_bytes);

/// True when a and b share a byte (an absent buffer shares none). Compares addresses on the host.
bool share_memory(const buffer_span& a, const buffer_span& b);

/// Throws invalid_argument naming both buffers when two of `spans` share a byte: a launch that reads one while it
/// writes the other, or writes both, would lose data. Compares addresses on the host (no synchronisation).
void check_disjoint(std::initializer_list<buffer_span> spans);

/// Checks that `path` is one of mixture_path's values ("<name>: invalid value 7" otherwise).
void check_mixture_path(const char* name, mixture_path path);

/// The rule for an option that the chosen method (a sampler, a resampling scheme, an evaluation path, a plan) does
/// not read: it must hold its default, so that a value set for it cannot pass as if it had taken effect. Throws
/// "<name>: not read by <method>; leave it at its default <fallback>, got <value>" unless @p is_default.
void check_unread(const char* name, bool is_default, const std::string& method, const std::string& value,
                  const std::string& fallback);

/// An option's value as check_unread() words it: numbers as streamed, true / false, enums by to_string().
template <class T>
std::string option_text(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_enum_v<T>) {
    return to_string(value);
  } else {
    std::ostringstream s;
    s << value;
    return s.str();
  }
}

/// check_unread() for one field: @p value against the field's @p fallback (the default of its options struct). A NaN
/// is never the default, so it is refused too.
template <class T>
void check_unread(const char* name, const T& value, const T& fallback, const std::string& method) {
  if (!(value == fallback)) check_unread(name, false, method, option_text(value), option_text(fallback));
}

/// check_unread() for a whole schedule against noise_schedule::vp_linear() (the default of diffusion_options and
/// guided_options), naming its first field that differs ("options.schedule.kind", ".beta_min", ...).
void check_unread_schedule(const char* name, const noise_schedule& schedule, const std::string& method);

/// Checks a finite positive value at most max_abs_value (step sizes, variances).
void check_positive(const char* name, double value);
/// Throws invalid_argument naming `name` when value > max_abs_value (1e18): finite as a double but beyond what the
/// FP32 kernels can square or scale by without overflow.
void check_at_most_max_abs(const char* name, double value);
/// Checks a finite value.
void check_finite(const char* name, double value);
/// Checks a channel: a > 0 and s >= 0, both finite; s > 0 too when require_noise.
void check_channel(const char* name, channel ch, bool require_noise = false);
/// Checks that every entry is finite; positive too when `positive`.
void check_values(const char* name, const std::vector<double>& values, bool positive);
/// The sizes of a mixture's parameters: dim in [1, 2^24], K in [1, 2^24] components (the number of weights) and
/// `entries` = K x dim values in the table `name` (the means, the probabilities).
void check_mixture_shape(std::int64_t dim, std::int64_t K, const char* name, std::size_t entries);

/// Checks that every entry lies in [lo, hi] (NaN fails); the message names the entry, its value and the range,
/// and @p why says what the range protects.
void check_range(const char* name, const std::vector<double>& values, double lo, double hi, const char* why);

/// check_range() of an operator's defining values against +-max_abs_value: a dense matrix's entries, a mask's gains,
/// an SVD's singular values (|A_ij| <= max_k S_k, as U and V have orthonormal columns), named @p prefix followed by
/// ".A", ".diagonal" or ".singular_values" (defined in src/observation.cpp).
void check_operator_values(const char* prefix, const observation_operator& op, const char* why);

/// Checks the sizes and settings of a sliced Wasserstein call: n_a, n_b, d, directions >= 1, d < 2^31, p in {1, 2}
/// (defined in src/metrics.cpp; both executors' entry points share it).
void check_sliced_wasserstein(std::int64_t n_a, std::int64_t n_b, std::int64_t d, int directions, int p,
                              const char* directions_name = "directions");

/// Copies `bytes` of host memory to the device on `stream` and synchronises that stream, so that kernels on any
/// stream see the data once this returns (a plain cudaMemcpy from pageable memory may return before its DMA lands).
void upload_and_wait(void* device, const void* host, std::size_t bytes, cudaStream_t stream);

/// Copies `bytes` of host memory to the device on `stream` without synchronising: through a pinned block of the
/// process's staging pool (src/host_staging.hpp) whose event has completed, so `host` may be reused at once and the
/// host never waits for the stream; when the pool is at staging_limit_bytes (or pinned memory cannot be had), from
/// pageable memory, which the CUDA runtime may copy synchronously with respect to the stream. Not for a capturing
/// stream (refuse_capture() first): a graph would read the block again at every replay.
void upload_async(void* device, const void* host, std::size_t bytes, cudaStream_t stream);

/// The pinned bytes the staging pool of upload_async() holds at most (256 MiB).
constexpr std::size_t staging_limit_bytes = std::size_t(256) << 20;

/// Throws invalid_argument naming exec.stream, @p call and @p remedy (the capturable alternative) when `stream` is
/// being captured (stream_capturing()): for the calls that copy per-call host tables (upload_async()).
void refuse_capture(cudaStream_t stream, const char* call, const char* remedy);

/// Throws invalid_argument when `stream` is being captured (stream_capturing()), for a call that does what a capture
/// cannot record: a cudaMalloc (not stream-ordered, not observed by the capture, and one of the calls the runtime
/// refuses under the global and thread-local capture modes, invalidating the capture) or a synchronisation of the
/// stream (not permitted on a capturing stream: cudaErrorStreamCaptureUnsupported, and the capture is invalidated).
/// Called before the call issues anything to the runtime, so that the capture stays valid. The message is
/// "<stream_name>: is being captured into a CUDA graph, and <call_does>, which a capture cannot record: <remedy>":
/// @p call_does names the call and what it does ("sampling_plan::diffusion() allocates ... and synchronises ..."),
/// @p remedy what to do instead ("make the plan before the capture begins").
void refuse_capture_unrecordable(cudaStream_t stream, const char* stream_name, const std::string& call_does,
                                 const char* remedy);

/// refuse_capture_unrecordable() for a plan's creation (sampling_plan's and diffusion_plan's, on the CUDA executor):
/// @p call allocates the plan's memory (cudaMalloc) and synchronises exec.stream after its uploads; the remedy is to
/// make the plan before the capture begins (the plan's own calls, which never allocate or wait, are what a capture
/// records).
void refuse_plan_capture(cudaStream_t stream, const char* call);

/// refuse_capture_unrecordable() on the legacy default stream, for the set-up that runs there (the mixtures'
/// constructors, prepare_gemm()): it is reported capturing while a blocking stream of the current device captures,
/// whose capture the legacy stream's work would join. @p call allocates device tables (cudaMalloc) and synchronises
/// the legacy stream after uploading them; the remedy is "<remedy> before the capture begins". A capture of a
/// non-blocking stream is not seen here (the legacy stream does not join it).
void refuse_legacy_capture(const char* call, const char* remedy);

/// Whether work issued to `stream` now would be recorded by a CUDA stream capture (cudaStreamIsCapturing: active or
/// invalidated), the legacy stream while a blocking stream of the device captures included (work there would join
/// that capture). For the one-time set-up a capture cannot record (cudaMalloc, synchronised uploads, cublasCreate),
/// which is refused under capture with the remedy instead of failing inside the CUDA runtime or cuBLAS.
bool stream_capturing(cudaStream_t stream);

/// Throws out_of_memory when `bytes` exceed the free device memory (CUDA) or are absurd for the host. For an
/// allocation that is not stream-ordered (cudaMalloc in a constructor or a plan's creation, which synchronise).
void check_allocation(const char* what, std::size_t bytes, executor where);

/// check_allocation() of a stream-ordered allocation on `stream` (scratch: cudaMallocAsync), which a CUDA graph
/// capture of `stream` records. The capture check comes first (stream_capturing(), cudaStreamIsCapturing, which is
/// legal under capture and leaves it valid), and under capture nothing else is asked of the runtime:
/// cudaMemGetInfo is not stream-ordered and not among the calls documented as capture-safe (under the global and
/// thread-local capture modes a call the runtime deems unsafe fails and invalidates the capture), and the free memory
/// it would report says nothing about a graph's launch, when a captured cudaMallocAsync allocates. Outside a capture
/// it is check_allocation() above.
void check_allocation(const char* what, std::size_t bytes, executor where, cudaStream_t stream);

/// "cpu" / "cuda" device-side memory: a stream-ordered buffer on CUDA (cudaMallocAsync/cudaFreeAsync, no host
/// synchronisation), or a host vector on the CPU. Used once per call for workspace, never per step.
class scratch {
 public:
  scratch(std::size_t bytes, executor where, cudaStream_t stream);
  ~scratch();
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  void* data() const noexcept { return ptr_; }

 private:
  void* ptr_ = nullptr;
  executor where_;
  cudaStream_t stream_;
  std::vector<unsigned char> host_;
};

/// The workspace of one call: the caller's (checked to hold `need` bytes on `where`, aligned to `align` bytes) when
/// given, otherwise a scratch buffer of `need` bytes owned by `owned` for the call.
unsigned char* workspace_or_scratch(std::size_t need, void* workspace, std::size_t workspace_bytes, std::size_t align,
                                    executor where, cudaStream_t stream, std::unique_ptr<scratch>& owned);

/// Normalises mixture weights in place (already checked finite and >= 0) and fills their logs and running sums,
/// the last sum set to exactly 1 so that a uniform draw always finds a component.
inline void normalise_weights(std::vector<double>& weights, std::vector<double>& log_weights,
                              std::vector<double>& cumulative) {
  double total = 0;
  for (double w : weights) total += w;
  if (std::isinf(total)) {
    // Every weight is finite (checked by the callers) but their sum overflows FP64: divide by the largest first,
    // so the sum is at most K. Only this case takes the extra division, so every other mixture keeps its bits.
    double largest = 0;
    for (double w : weights) largest = std::max(largest, w);
    if (std::isfinite(largest) && largest > 0) {
      total = 0;
      for (double& w : weights) {
        w /= largest;
        total += w;
      }
    }
  }
  DIFFSAMPLE_EXPECTS(std::isfinite(total) && total > 0, "weights: sum must be positive and finite, got " << total);
  const std::size_t K = weights.size();
  log_weights.resize(K);
  cumulative.resize(K);
  double running = 0;
  for (std::size_t k = 0; k < K; ++k) {
    weights[k] /= total;
    log_weights[k] = std::log(weights[k]);
    running += weights[k];
    cumulative[k] = running;
  }
  cumulative[K - 1] = 1.0;
}

}  // namespace diffsample::detail
