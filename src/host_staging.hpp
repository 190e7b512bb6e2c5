// Pinned host blocks through which a call's host-built tables reach the device without synchronising (internal).
//
// cudaMemcpyAsync from pageable host memory may synchronise: the driver stages the bytes through pinned buffers of its
// own and "may synchronize with the stream" to do so (CUDA runtime API, "API synchronization behavior"), so a large
// table copied from a std::vector can wait for every launch queued before it. A copy from pinned memory is fully
// asynchronous, but the memory must then stay untouched until the copy has run, and freeing pinned memory
// (cudaFreeHost) synchronises the device. So the blocks are kept and reused, as CUB's and PyTorch's caching host
// allocators do: after each copy an event is recorded on the copy's stream, and a block is handed out again only
// once its event has completed (an event query, which never waits). A request no free block can serve makes a new
// block while the pool stays within its limit; beyond it (or when pinned memory cannot be had) the caller copies
// from pageable memory as before. Blocks are never freed (that would synchronise); the pool lives until the process
// ends.
//
// The pool is written over a backend so that its bookkeeping is tested on the host (tests/test_host_staging.cpp);
// the CUDA backend lives in src/host_staging.cpp. A backend provides:
//   using stream = ...; using event = ...;
//   int device(stream);                            the stream's device (blocks and events belong to one device)
//   void* allocate(std::size_t bytes);             pinned memory, nullptr when none can be had
//   event make_event(int device);                  an event of that device
//   void destroy(event);                           releases an event (never waits)
//   int state(event);                              1 when the work the event last recorded has run, 0 while it has
//                                                  not (never waits), -1 when the event can no longer be queried
//                                                  (its context destroyed, cudaDeviceReset): the block is retired
//   void copy(void* dst, const void* src, std::size_t bytes, stream);  the asynchronous copy from pinned src
//   void record(event, stream);                    records the event after the copy on the stream
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace diffsample::detail {

template <class Backend>
class staging_pool {
 public:
  /// The smallest block (requests are rounded up to a power of two from here, so that blocks serve later requests
  /// of other sizes).
  static constexpr std::size_t min_block = std::size_t(64) << 10;

  /// A pool over @p backend that holds at most @p limit bytes of pinned memory in all.
  staging_pool(Backend backend, std::size_t limit) : backend_(std::move(backend)), limit_(limit) {}
  staging_pool(const staging_pool&) = delete;
  staging_pool& operator=(const staging_pool&) = delete;

  /// Copies @p bytes from @p host to @p device_dst on @p stream through a pinned block and returns true; returns false
  /// without copying when no block can serve (the limit reached, or no pinned memory): the caller copies itself.
  /// @p host may be reused as soon as this returns. Thread-safe; a backend error propagates, and a block whose copy
  /// may have been issued without its event being recorded is never handed out again.
  bool copy(void* device_dst, const void* host, std::size_t bytes, typename Backend::stream stream) {
    if (bytes == 0) return true;
    block* b = take(bytes, stream);
    if (b == nullptr) return false;
    struct give_back {  // on every path out: the block is free again (or retired when its copy's end is unknown)
      staging_pool& pool;
      block* b;
      bool retire = false;
      ~give_back() {
        std::lock_guard<std::mutex> lock(pool.mutex_);
        b->taken = retire;
      }
    } back{*this, b};
    std::memcpy(b->host, host, bytes);
    backend_.copy(device_dst, b->host, bytes, stream);  // a copy that failed was not issued: the block is free
    back.retire = true;  // from here the copy may be in flight: only a recorded event frees the block again
    backend_.record(b->ready, stream);
    back.retire = false;
    return true;
  }

  /// Pinned bytes held (for tests and diagnostics).
  std::size_t held_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }
  /// Blocks held.
  std::size_t blocks() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_.size();
  }

  /// The size of the block a request of @p bytes takes when it makes one: the next power of two from min_block.
  static std::size_t block_bytes(std::size_t bytes) {
    std::size_t size = min_block;
    while (size < bytes && size <= (~std::size_t(0) >> 1)) size <<= 1;
    return size < bytes ? bytes : size;
  }

 private:
  struct block {
    void* host;
    std::size_t bytes;
    int device;
    typename Backend::event ready;
    bool taken;
  };

  // The smallest free block of the stream's device that holds bytes and whose last copy has run, else a new one
  // within the limit, else nullptr; marked taken.
  block* take(std::size_t bytes, typename Backend::stream stream) {
    const int device = backend_.device(stream);
    std::lock_guard<std::mutex> lock(mutex_);
    block* best = nullptr;
    for (const std::unique_ptr<block>& b : blocks_) {
      if (b->taken || b->device != device || b->bytes < bytes || (best != nullptr && b->bytes >= best->bytes))
        continue;
      const int state = backend_.state(b->ready);
      if (state > 0) best = b.get();
      if (state < 0) b->taken = true;  // retired: its memory may be gone with its context; never touched again
    }
    if (best == nullptr) {
      const std::size_t size = block_bytes(bytes);
      if (size > limit_ || held_ > limit_ - size) return nullptr;
      blocks_.reserve(blocks_.size() + 1);  // so that push_back cannot throw once the memory is held
      std::unique_ptr<block> fresh(new block{nullptr, size, device, backend_.make_event(device), false});
      fresh->host = backend_.allocate(size);
      if (fresh->host == nullptr) {
        backend_.destroy(fresh->ready);
        return nullptr;
      }
      held_ += size;
      blocks_.push_back(std::move(fresh));
      best = blocks_.back().get();
    }
    best->taken = true;
    return best;
  }

  Backend backend_;
  std::size_t limit_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<block>> blocks_;
  std::size_t held_ = 0;
};

}  // namespace diffsample::detail
