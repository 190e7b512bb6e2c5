// Command-line arguments of the diffsample program (args.hpp).
#include "cli/args.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cli/output.hpp"

namespace diffsample::cli {

std::string fmt(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

options parse_options(int argc, char** argv, int first, const char* usage, const std::vector<std::string>& with_value,
                      const std::vector<std::string>& switches, const char* command) {
  options o;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") print_and_exit(usage);
    if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
      if (o.has(a)) throw usage_error(a + ": given twice");
      o.values[a] = "";
    } else if (std::find(with_value.begin(), with_value.end(), a) != with_value.end()) {
      if (i + 1 >= argc) throw usage_error(a + ": missing value");
      if (o.has(a)) throw usage_error(a + ": given twice");
      o.values[a] = argv[++i];
    } else {
      throw usage_error("unknown option '" + a + "' (see diffsample " +
                        std::string(command ? command : argv[first - 1]) + " --help)");
    }
  }
  return o;
}

std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);  // decimal, as in problem files: 010 is ten
  if (errno != 0 || end == text.c_str() || *end != '\0' || v < min_value)
    throw usage_error(flag + ": expected an integer >= " + std::to_string(min_value) + ", got '" + text + "'");
  return v;
}

std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value, std::int64_t limit) {
  const std::int64_t v = to_int(flag, text, min_value);
  if (v > limit) throw usage_error(diffsample::limits::message(flag, v, min_value, limit));
  return v;
}

std::uint64_t to_seed(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);  // decimal; a sign is refused below
  if (text.empty() || text[0] < '0' || text[0] > '9' || errno != 0 || *end != '\0')
    throw usage_error("--seed: expected an integer in [0, 18446744073709551615] (2^64 - 1), got '" + text + "'");
  return v;
}

std::int64_t to_steps(const std::string& text, std::int64_t min_value) {
  return to_int("--steps", text, min_value, diffsample::limits::max_steps);
}

double to_double(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(v))
    throw usage_error(flag + ": expected a finite number, got '" + text + "'");
  return v;
}

double flag_number(const options& o, const char* flag, double lo, bool lo_open, double hi) {
  const std::string& text = o.get(flag);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || !(lo_open ? v > lo : v >= lo) ||
      !(v <= hi))
    throw usage_error(std::string(flag) + ": expected a number in " + (lo_open ? "(" : "[") + fmt(lo) + ", " +
                      fmt(hi) + "], got '" + text + "'");
  return v;
}

}  // namespace diffsample::cli
