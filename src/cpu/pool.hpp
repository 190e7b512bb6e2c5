// The CPU executor's threads: a small pool that waits passively (a short spin, then a condition variable) and hands
// out work in chunks claimed dynamically, so that a loaded machine neither burns CPU on idle spinning between calls
// nor stalls a call on one descheduled thread. Every per-index loop of the CPU executor runs through it.
#pragma once

#include <cstdint>

namespace diffsample::cpu {

/// Threads a loop may use: omp_get_max_threads(), so OMP_NUM_THREADS and omp_set_num_threads keep their meaning.
int max_threads();

/// Runs body(context, begin, end) over [0, n) in chunks of `chunk` indices claimed dynamically by the calling thread
/// and up to max_threads() - 1 pool threads; returns when every index has run. A call made while the pool is busy
/// (from another thread, or nested inside a body) runs serially on its caller.
void parallel_for(std::int64_t n, std::int64_t chunk, void (*body)(void*, std::int64_t, std::int64_t),
                  void* context);

/// parallel_for over a callable f(i), with chunks sized for about 8 per thread.
template <class F>
void parallel_for_each(std::int64_t n, const F& f) {
  if (n <= 0) return;
  const std::int64_t threads = max_threads();
  std::int64_t chunk = n / (threads * 8);
  if (chunk < 1) chunk = 1;
  parallel_for(
      n, chunk,
      [](void* c, std::int64_t b, std::int64_t e) {
        const F& fn = *static_cast<const F*>(c);
        for (std::int64_t i = b; i < e; ++i) fn(i);
      },
      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace diffsample::cpu
