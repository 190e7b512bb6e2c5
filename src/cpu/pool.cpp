// The CPU executor's thread pool (src/cpu/pool.hpp).
//
// A call publishes a job (shared with the threads that pick it up), works on it itself, and returns as soon as every
// chunk has finished: a pool thread that wakes late finds no chunk left and drops its reference, so it never holds
// the caller. Idle pool threads sleep on a condition variable (no spinning between calls).
#include "src/cpu/pool.hpp"

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DS_PAUSE() _mm_pause()
#else
#define DS_PAUSE() ((void)0)
#endif

namespace diffsample::cpu {
namespace {

// The CPUs the process runs on: the affinity of the thread that loaded the library, read then. The pool's threads
// take it when they start, rather than the affinity of the application thread that happened to make them (they are
// made on the first call that needs them, which in a server may come from a worker pinned to one core: every later
// call's helpers then shared that core). Where the system does not say, the threads keep what they inherit.
struct load_affinity {
  cpu_set_t cpus;
  bool known;
  load_affinity() {
    CPU_ZERO(&cpus);
    known = sched_getaffinity(0, sizeof cpus, &cpus) == 0;
  }
};
const load_affinity process_cpus;

struct job {
  void (*body)(void*, std::int64_t, std::int64_t);
  void* context;
  std::int64_t n, chunk;
  int helpers;                          // pool threads asked to take part
  std::atomic<std::int64_t> next{0};    // first index not yet claimed
  std::atomic<std::int64_t> remaining;  // chunks not yet finished
  std::atomic<bool> failed{false};      // a chunk threw: `error` holds the first exception
  std::exception_ptr error;
};

// Whether this thread is running a job's chunks: a parallel loop started inside a chunk (a nested loop) runs on its
// own thread, as the whole loop it belongs to is already spread over the pool.
thread_local bool in_chunk = false;

// The pool runs every job published by the application's threads at once: each caller works on its own job, and
// each pool thread takes chunks of the oldest job that still has some and that it may join (its index below the
// job's helpers). Before, one job ran at a time and a call that found the pool busy ran its whole loop on its own
// thread: with two callers, the second kept one thread for its whole call, even after the first call's threads had
// gone idle (on a machine of P cores, about P times the time it needs).
// Set when the pool is destroyed (at exit or when the library is unloaded): a loop called after that (from an
// application's static destructor or atexit handler registered before the pool was made, which run after its
// destructor) runs on its caller, instead of publishing a job into the destroyed pool (a use after free). Constant-
// initialised and trivially destructible, so it is valid throughout.
std::atomic<bool> pool_closed{false};

class pool {
 public:
  pool() { pthread_atfork(nullptr, nullptr, &pool::in_forked_child); }

  ~pool() {
    pool_closed.store(true, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  bool try_run(std::int64_t n, std::int64_t chunk, void (*body)(void*, std::int64_t, std::int64_t), void* context,
               int helpers) {
    auto j = std::make_shared<job>();  // before anything is published: a failed allocation leaves the pool as it was
    j->body = body;
    j->context = context;
    j->n = n;
    j->chunk = chunk;
    j->helpers = helpers;
    j->remaining.store((n + chunk - 1) / chunk, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int>(threads_.size()) < helpers) {
        // The pool's threads are born with every signal blocked (they inherit the mask of the thread that creates
        // them), so that signals sent to the process reach the application's own threads, which may be blocking
        // them for a reason (the program blocks its cleanup signals while it registers a temporary file).
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        // A thread the system refuses (std::system_error under a process or memory limit, on a machine shared
        // with other work) leaves the job to the threads there are: the loop runs on fewer, never fails for it.
        try {
          while (static_cast<int>(threads_.size()) < helpers) {
            const int index = static_cast<int>(threads_.size());
            threads_.emplace_back([this, index, seen = generation_] {
              if (process_cpus.known) pthread_setaffinity_np(pthread_self(), sizeof process_cpus.cpus, &process_cpus.cpus);
              loop(index, seen);
            });
          }
        } catch (...) {
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        if (static_cast<int>(threads_.size()) < helpers) j->helpers = static_cast<int>(threads_.size());
      }
      try {
        jobs_.push_back(j);
      } catch (...) {
        return false;  // the caller runs the loop itself
      }
      ++generation_;
    }
    wake_.notify_all();
    work(*j);
    // Every chunk claimed: wait for those still running elsewhere, spinning briefly, then sleeping.
    for (int spin = 0; spin < 500 && j->remaining.load(std::memory_order_acquire) != 0; ++spin) DS_PAUSE();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return j->remaining.load(std::memory_order_acquire) == 0; });
      jobs_.erase(std::find(jobs_.begin(), jobs_.end(), j));
    }
    // Every chunk has finished or was skipped, so nothing uses the caller's context any more: its exception may
    // unwind the caller's frame.
    if (j->failed.load(std::memory_order_acquire)) std::rethrow_exception(j->error);
    return true;
  }

 private:
  // Counts @p chunks as finished, waking the callers when they were their job's last.
  void finish(job& j, std::int64_t chunks) {
    if (j.remaining.fetch_sub(chunks, std::memory_order_acq_rel) == chunks) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_all();
    }
  }

  // Runs chunks until none is left. A body that throws (std::bad_alloc from a per-thread buffer, say) must not end
  // the process from a pool thread nor leave the job unfinished: its first exception is kept for the caller, the
  // chunks not yet claimed are skipped (counted as finished), and those running elsewhere finish first.
  void work(job& j) {
    in_chunk = true;
    for (;;) {
      const std::int64_t b = j.next.fetch_add(j.chunk, std::memory_order_relaxed);
      if (b >= j.n) break;
      try {
        j.body(j.context, b, b + j.chunk < j.n ? b + j.chunk : j.n);
      } catch (...) {
        if (!j.failed.exchange(true, std::memory_order_acq_rel)) j.error = std::current_exception();
        // Claim every chunk from here on: a chunk claimed before this (first < n) is still counted by its thread.
        const std::int64_t first = j.next.exchange(j.n, std::memory_order_relaxed);
        const std::int64_t skipped = first < j.n ? (j.n - first + j.chunk - 1) / j.chunk : 0;
        finish(j, 1 + skipped);
        continue;
      }
      finish(j, 1);
    }
    in_chunk = false;
  }

  // The oldest job with chunks left that pool thread `index` may join (mutex_ held), or null.
  std::shared_ptr<job> next_job(int index) const {
    for (const std::shared_ptr<job>& j : jobs_)
      if (index < j->helpers && j->next.load(std::memory_order_relaxed) < j->n) return j;
    return nullptr;
  }

  void loop(int index, std::uint64_t seen) {
    for (;;) {
      std::shared_ptr<job> j;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
          if (stop_) return;
          j = next_job(index);
          if (j) break;
          wake_.wait(lock, [&] { return generation_ != seen; });
          seen = generation_;
        }
      }
      work(*j);
    }
  }

  // In the child of a fork(): only the forking thread exists there, so the parent's pool threads (and any job they
  // were running) are gone, and the mutex may have been held by one of them. The threads are dropped unjoined (their
  // std::thread objects moved into a leaked vector: joining a thread that does not exist hung the child's exit in
  // ~pool), the jobs likewise, and the mutex and condition variables made afresh; the child's loops make new threads.
  static void in_forked_child();
  void forget_the_parents_threads() {
    new (&mutex_) std::mutex;
    new (&wake_) std::condition_variable;
    new (&done_) std::condition_variable;
    new std::vector<std::thread>(std::move(threads_));
    threads_.clear();
    new std::vector<std::shared_ptr<job>>(std::move(jobs_));
    jobs_.clear();
    stop_ = false;
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::shared_ptr<job>> jobs_;  // published and not yet returned, oldest first
  std::vector<std::thread> threads_;
};

pool& the_pool() {
  static pool p;
  return p;
}

void pool::in_forked_child() {
  if (!pool_closed.load(std::memory_order_acquire)) the_pool().forget_the_parents_threads();
}

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void parallel_for(std::int64_t n, std::int64_t chunk, void (*body)(void*, std::int64_t, std::int64_t),
                  void* context) {
  if (n <= 0) return;
  if (chunk < 1) chunk = 1;
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  const int threads = max_threads();
  const int helpers = static_cast<int>(chunks - 1 < threads - 1 ? chunks - 1 : threads - 1);
  if (helpers <= 0 || in_chunk || pool_closed.load(std::memory_order_acquire) ||
      !the_pool().try_run(n, chunk, body, context, helpers))
    body(context, 0, n);
}

}  // namespace diffsample::cpu
