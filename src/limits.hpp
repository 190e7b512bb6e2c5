// The size limits of the public API (internal side): the constants are public (include/diffsample/limits.hpp), one
// set for the C++ entry points, the C ABI and the program, so that a size is accepted or refused the same way through
// any of them. Every check of a limit goes through limits::check() (or prints the limit with spell()), so that a
// message always shows the value the check compares against: "dim = 16777217, the limit is 16777216 (2^24)".
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include <diffsample/error.hpp>
#include <diffsample/limits.hpp>

namespace diffsample::limits {

/// A limit as a message prints it: its value, with the power of two beside it from 2^16 up ("16777216 (2^24)",
/// "2147483647 (2^31 - 1)").
inline std::string spell(std::int64_t limit) {
  std::string text = std::to_string(limit);
  for (int k = 16; k < 63; ++k) {
    const std::int64_t power = std::int64_t(1) << k;
    if (limit == power) return text + " (2^" + std::to_string(k) + ")";
    if (limit == power - 1) return text + " (2^" + std::to_string(k) + " - 1)";
  }
  return text;
}

/// Whether lo <= value <= limit, for a signed or unsigned value.
template <class T>
constexpr bool within(T value, std::int64_t lo, std::int64_t limit) noexcept {
  static_assert(std::is_integral_v<T>, "limits apply to integer sizes and counts");
  if constexpr (std::is_signed_v<T>) {
    return std::int64_t(value) >= lo && std::int64_t(value) <= limit;
  } else {
    return (lo <= 0 || std::uint64_t(value) >= std::uint64_t(lo)) && limit >= 0 &&
           std::uint64_t(value) <= std::uint64_t(limit);
  }
}

/// The message of a value above its limit: "name = value, the limit is N", with " (why)" after it when given. The
/// value is text, for a product shown as its factors ("25 x 10000000").
inline std::string above(const std::string& name, const std::string& value, std::int64_t limit,
                         const char* why = nullptr) {
  std::string text = name + " = " + value + ", the limit is " + spell(limit);
  if (why != nullptr) text += std::string(" (") + why + ")";
  return text;
}

/// The message of a value outside [lo, limit]: above() above it, "name = value, must be at least lo" below it.
template <class T>
std::string message(const std::string& name, T value, std::int64_t lo, std::int64_t limit, const char* why = nullptr) {
  bool below;
  if constexpr (std::is_signed_v<T>)
    below = std::int64_t(value) < lo;
  else
    below = lo > 0 && std::uint64_t(value) < std::uint64_t(lo);
  if (below) return name + " = " + std::to_string(value) + ", must be at least " + std::to_string(lo);
  return above(name, std::to_string(value), limit, why);
}

/// Throws invalid_argument with message() unless lo <= value <= limit.
template <class T>
void check(const std::string& name, T value, std::int64_t lo, std::int64_t limit, const char* why = nullptr) {
  if (!within(value, lo, limit)) throw invalid_argument(message(name, value, lo, limit, why));
}

}  // namespace diffsample::limits
