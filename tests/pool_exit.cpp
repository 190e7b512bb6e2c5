// A CPU-executor loop run after the thread pool's destruction: from an atexit handler registered before the pool
// was made (as an application's static object built before its first library call is destroyed after the
// library's statics). The pool is a function-local static made on first use, so it is destroyed before this
// handler runs; the loop must then run on its caller. Built with AddressSanitizer (tests/CMakeLists.txt), which
// reports the use after free of a loop published into the destroyed pool; exits 0 only when both loops summed
// every index.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "src/cpu/pool.hpp"

namespace {

std::int64_t loop_sum() {
  std::atomic<std::int64_t> sum{0};
  diffsample::cpu::parallel_for_each(1000, [&](std::int64_t i) { sum += i; }, 1);
  return sum.load();
}

void after_the_pool() {
  const std::int64_t sum = loop_sum();
  std::printf("after the pool's destruction: sum %lld (expected 499500)\n", static_cast<long long>(sum));
  std::fflush(stdout);
  if (sum != 499500) std::_Exit(1);
}

}  // namespace

int main() {
  std::atexit(after_the_pool);  // registered before the pool is made: runs after its destructor
  const std::int64_t sum = loop_sum();
  std::printf("main: sum %lld (expected 499500)\n", static_cast<long long>(sum));
  return sum == 499500 ? 0 : 1;
}
