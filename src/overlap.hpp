// Whether two caller buffers share a byte: the one address comparison behind the library's overlap checks
// (detail::share_memory / check_disjoint) and the C layer's (src/c_api/common.hpp), header-only so that src/c_api/
// needs no symbol the library does not export.
#pragma once

#include <cstddef>
#include <cstdint>

namespace diffsample::detail {

/// True when [a, a + a_bytes) and [b, b + b_bytes) share a byte; an absent buffer (null or empty) shares none.
/// Compared without forming ptr + bytes past the other's start, which could wrap around the address space.
inline bool bytes_overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) noexcept {
  if (a == nullptr || a_bytes == 0 || b == nullptr || b_bytes == 0) return false;
  const auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return pa <= pb ? pb - pa < a_bytes : pa - pb < b_bytes;
}

}  // namespace diffsample::detail
