// The CPU executor's thread pool (src/cpu/pool.cpp, compiled into this test): every index runs once, on more than one
// thread when several are allowed, and an exception thrown by the loop's body, on the calling thread or on a pool
// thread, reaches the caller of parallel_for once every chunk in flight has finished, leaving the pool usable.
// A system that refuses new threads (a process limit on a shared machine) leaves the loop to the threads there are.
// Seen failing before the pool caught its bodies' exceptions: a throw on a pool thread ended the process
// (std::terminate), and one on the calling thread left the pool marked busy, so that every later loop ran on the
// calling thread alone; and before it caught a refused thread: std::system_error from parallel_for.
#include <gtest/gtest.h>

#include "src/cpu/pool.hpp"

#include <dirent.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using diffsample::cpu::parallel_for_each;

/// The threads that ran a loop of n indices, each index taking about a millisecond (so that the pool's threads
/// wake in time to take some), with every index checked to have run exactly once.
std::set<std::thread::id> threads_of_a_loop(std::int64_t n) {
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
  std::mutex m;
  std::set<std::thread::id> ids;
  parallel_for_each(
      n,
      [&](std::int64_t i) {
        runs[static_cast<std::size_t>(i)].fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      },
      1);
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(runs[static_cast<std::size_t>(i)].load(), 1) << "index " << i;
  return ids;
}

class Pool : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = omp_get_max_threads();
    omp_set_num_threads(4);  // pool threads exist whatever the machine's core count
  }
  void TearDown() override { omp_set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(Pool, RunsEveryIndexOnceOnSeveralThreads) { EXPECT_GT(threads_of_a_loop(200).size(), 1u); }

TEST_F(Pool, ExceptionOnAPoolThreadReachesTheCaller) {
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> thrown{0};
  EXPECT_THROW(parallel_for_each(
                   200,
                   [&](std::int64_t) {
                     std::this_thread::sleep_for(std::chrono::milliseconds(1));
                     if (std::this_thread::get_id() != caller) {
                       thrown.fetch_add(1);
                       throw std::runtime_error("pool thread");
                     }
                   },
                   1),
               std::runtime_error);
  EXPECT_GE(thrown.load(), 1);
  EXPECT_GT(threads_of_a_loop(200).size(), 1u);  // still parallel afterwards
}

TEST_F(Pool, ExceptionOnTheCallingThreadLeavesThePoolUsable) {
  const std::thread::id caller = std::this_thread::get_id();
  for (int round = 0; round < 3; ++round) {
    EXPECT_THROW(parallel_for_each(
                     200,
                     [&](std::int64_t) {
                       std::this_thread::sleep_for(std::chrono::milliseconds(1));
                       if (std::this_thread::get_id() == caller) throw std::runtime_error("calling thread");
                     },
                     1),
                 std::runtime_error);
    EXPECT_GT(threads_of_a_loop(200).size(), 1u) << "round " << round;
  }
}

// The first exception wins and the rest of the loop is skipped: far fewer indices run than the loop has.
TEST_F(Pool, ExceptionSkipsTheChunksNotYetClaimed) {
  std::atomic<std::int64_t> ran{0};
  try {
    parallel_for_each(
        100000,
        [&](std::int64_t i) {
          ran.fetch_add(1);
          if (i == 0) throw std::logic_error("first");
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        },
        1);
    ADD_FAILURE() << "no exception";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "first");
  }
  EXPECT_LT(ran.load(), 1000);
}

// In a fresh process (the death test's re-run of this program, so that the pool has no thread yet) where no thread
// can be made (RLIMIT_NPROC of 1 for an unprivileged user: root drops to nobody first, as the limit does not bind
// root), a loop asking for 4 threads runs every index once on the calling thread, and does not throw.
// The death test's body: its exit code says what happened (0: every index ran once).
[[noreturn]] void loop_where_no_thread_can_be_made() {
  if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
  rlimit one;
  one.rlim_cur = one.rlim_max = 1;
  if (::setrlimit(RLIMIT_NPROC, &one) != 0) ::_exit(4);
  try {
    std::thread probe([] {});  // the limit holds: no thread can be made
    probe.join();
    ::_exit(5);
  } catch (const std::system_error&) {
  }
  std::vector<int> runs(100, 0);
  try {
    parallel_for_each(100, [&](std::int64_t i) { ++runs[static_cast<std::size_t>(i)]; }, 1);
  } catch (...) {
    ::_exit(1);
  }
  for (int r : runs)
    if (r != 1) ::_exit(2);
  ::_exit(0);
}

TEST_F(Pool, RunsOnTheCallingThreadWhenNoThreadCanBeMade) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(loop_where_no_thread_can_be_made(), ::testing::ExitedWithCode(0), "");
}

// Loops of two application threads share the pool: a loop started while another thread's loop holds the pool's
// threads gets them once that loop's chunks are taken (seen failing before the pool ran several loops at once: the
// second loop ran on its own thread alone, start to end, here 200 ms on one thread of four).
TEST_F(Pool, ALoopStartedWhileAnotherRunsGetsThePoolsThreads) {
  std::atomic<bool> first_started{false};
  std::set<std::thread::id> first, second;
  std::thread a([&] {
    std::mutex m;
    parallel_for_each(
        40,
        [&](std::int64_t) {
          first_started = true;
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          std::lock_guard<std::mutex> lock(m);
          first.insert(std::this_thread::get_id());
        },
        1);
  });
  while (!first_started) std::this_thread::yield();
  std::thread b([&] { second = threads_of_a_loop(200); });
  a.join();
  b.join();
  EXPECT_GT(second.size(), 1u) << "the second loop ran on its caller alone";
}

// A loop started inside a body runs on that body's thread (its loop already spread over the pool).
TEST_F(Pool, ALoopInsideABodyRunsOnTheBodysThread) {
  std::atomic<int> wrong{0};
  parallel_for_each(
      8,
      [&](std::int64_t) {
        const std::thread::id outer = std::this_thread::get_id();
        parallel_for_each(
            16, [&](std::int64_t) { wrong += std::this_thread::get_id() != outer ? 1 : 0; }, 1);
      },
      1);
  EXPECT_EQ(wrong.load(), 0);
}

// The pool's threads run on the process's CPUs (its affinity when the library was loaded), not on those of the
// application thread that made them: here a thread pinned to one CPU makes the pool (every test runs in a process
// of its own under ctest), and afterwards every other thread of the process has the process's CPUs. Seen failing
// before the pool set its threads' affinity: each pool thread kept the pinned thread's one CPU.
TEST_F(Pool, ThreadsRunOnTheProcessCpusWhateverThreadMadeThem) {
  cpu_set_t process;
  CPU_ZERO(&process);
  ASSERT_EQ(sched_getaffinity(0, sizeof process, &process), 0);
  if (CPU_COUNT(&process) < 2) GTEST_SKIP() << "one CPU: a pinned thread's affinity is the process's";
  int first = 0;
  while (!CPU_ISSET(first, &process)) ++first;
  std::size_t helpers = 0;
  std::thread pinned([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
    helpers = threads_of_a_loop(200).size() - 1;
  });
  pinned.join();
  ASSERT_GT(helpers, 0u) << "no pool thread took part";
  int threads = 0;
  DIR* tasks = opendir("/proc/self/task");
  ASSERT_NE(tasks, nullptr);
  while (const dirent* e = readdir(tasks)) {
    if (e->d_name[0] == '.') continue;
    const pid_t tid = static_cast<pid_t>(std::stol(e->d_name));
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    ASSERT_EQ(sched_getaffinity(tid, sizeof cpus, &cpus), 0);
    EXPECT_TRUE(CPU_EQUAL(&cpus, &process)) << "thread " << tid << ": " << CPU_COUNT(&cpus) << " of the process's "
                                            << CPU_COUNT(&process) << " CPUs";
    ++threads;
  }
  closedir(tasks);
  EXPECT_GT(threads, 1);
}


// A child forked after the pool's threads exist (Python's multiprocessing forks by default on Linux): only the forking
// thread exists there. The child's loops must run (on threads it makes itself) and its exit must not wait for the
// parent's threads: ~pool joined them, and the child hung at exit. The child runs a loop, then exits through
// std::exit (static destructors, ~pool among them); the parent waits at most 60 s. Seen failing before the pool
// forgot the parent's threads in the child (the child still running after 60 s).
TEST_F(Pool, AForkedChildRunsLoopsAndExits) {
  ASSERT_GT(threads_of_a_loop(200).size(), 1u);  // the pool's threads exist in the parent
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::vector<std::atomic<int>> runs(500);
    parallel_for_each(500, [&](std::int64_t i) { runs[static_cast<std::size_t>(i)].fetch_add(1); }, 1);
    int wrong = 0;
    for (auto& r : runs) wrong += r.load() != 1;
    std::exit(wrong == 0 ? 0 : 3);
  }
  int status = 0;
  pid_t done = 0;
  for (int waited = 0; waited < 600 && done == 0; ++waited) {
    done = waitpid(child, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (done == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the forked child did not exit within 60 s";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: an index of the child's loop did not run exactly once";
}

}  // namespace
