// LSD radix sort of float or double keys on the calling thread (the sliced Wasserstein distance's per-direction
// sorts on the CPU): 8-bit digits of the keys' bits mapped to an unsigned order (sign bit flipped for positive keys,
// every bit flipped for negative ones), all digit histograms in one read pass, and a digit that every key shares
// skipped. The result is the ascending order of std::sort for keys without NaN, except that -0 sorts before +0
// (std::sort may leave them in either order; they are equal in value, so nothing computed from the sorted values
// changes).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace diffsample::cpu {

/// Sorts keys[0, n) ascending; tmp holds n keys of scratch. Keys must not be NaN.
template <class T>
void radix_sort(T* keys, std::int64_t n, T* tmp) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "float or double keys");
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr int digits = sizeof(T);
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  if (n < 64) {
    std::sort(keys, keys + n);
    return;
  }
  static_assert(sizeof(U) == sizeof(T));
  U* a = reinterpret_cast<U*>(keys);
  U* b = reinterpret_cast<U*>(tmp);
  std::int64_t count[digits][256] = {};
  for (std::int64_t i = 0; i < n; ++i) {
    U u;
    std::memcpy(&u, keys + i, sizeof u);
    u = (u & sign) ? ~u : (u | sign);
    a[i] = u;
    for (int g = 0; g < digits; ++g) ++count[g][(u >> (8 * g)) & 0xff];
  }
  for (int g = 0; g < digits; ++g) {
    std::int64_t* c = count[g];
    if (c[(a[0] >> (8 * g)) & 0xff] == n) continue;  // every key has this digit: the pass would not move any
    std::int64_t total = 0;
    for (int v = 0; v < 256; ++v) {
      const std::int64_t here = c[v];
      c[v] = total;
      total += here;
    }
    for (std::int64_t i = 0; i < n; ++i) b[c[(a[i] >> (8 * g)) & 0xff]++] = a[i];
    std::swap(a, b);
  }
  for (std::int64_t i = 0; i < n; ++i) {  // a is keys or tmp; either way the unmapped value lands in keys as a T
    U u = a[i];
    u = (u & sign) ? (u & ~sign) : ~u;
    std::memcpy(keys + i, &u, sizeof u);
  }
}

}  // namespace diffsample::cpu
