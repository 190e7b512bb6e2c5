// The CPU executor's threads: a small pool that waits passively (a short spin, then a condition variable) and hands
// out work in chunks claimed dynamically, so that a loaded machine neither burns CPU on idle spinning between calls
// nor stalls a call on one descheduled thread. Every per-index loop of the CPU executor runs through it.
#pragma once

#include <cstdint>

namespace diffsample::cpu {

/// Threads a loop may use: omp_get_max_threads(), so OMP_NUM_THREADS and omp_set_num_threads keep their meaning.
int max_threads();

/// The pool's threads block every signal, so that signals sent to the process reach the application's threads.
///
/// Runs body(context, begin, end) over [0, n) in chunks of `chunk` indices claimed dynamically by the calling thread
/// and up to max_threads() - 1 pool threads; returns when every index has run. Calls from several application
/// threads at once share the pool: each caller works on its own loop and each pool thread takes chunks of the oldest
/// loop that has some left. A call nested inside a body runs serially on its caller.
void parallel_for(std::int64_t n, std::int64_t chunk, void (*body)(void*, std::int64_t, std::int64_t),
                  void* context);

/// Chunk size that gives about 8 chunks per thread over n indices (at least 1).
inline std::int64_t default_chunk(std::int64_t n) {
  const std::int64_t c = n / (static_cast<std::int64_t>(max_threads()) * 8);
  return c < 1 ? 1 : c;
}

/// parallel_for over a callable f(begin, end) on chunks of `chunk` indices (default_chunk(n) when chunk <= 0).
/// Per-chunk scratch belongs inside f.
template <class F>
void parallel_for_range(std::int64_t n, const F& f, std::int64_t chunk = 0) {
  if (n <= 0) return;
  parallel_for(
      n, chunk > 0 ? chunk : default_chunk(n),
      [](void* c, std::int64_t b, std::int64_t e) { (*static_cast<const F*>(c))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

/// parallel_for over a callable f(i) on chunks of `chunk` indices (default_chunk(n) when chunk <= 0): chunk 1
/// balances loops whose iterations differ widely in cost.
template <class F>
void parallel_for_each(std::int64_t n, const F& f, std::int64_t chunk = 0) {
  parallel_for_range(
      n,
      [&f](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) f(i);
      },
      chunk);
}

}  // namespace diffsample::cpu
