// Command-line arguments of the diffsample program: the options of a subcommand as flag -> value, and the
// conversions of their values, each failing with a usage_error (exit status 2) that names the flag.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <diffsample/error.hpp>

#include "cli/problem.hpp"

namespace diffsample::cli {

/// `v` with `digits` significant digits ("%.*g").
std::string fmt(double v, int digits = 6);

/// Command-line options as flag -> value ("" for switches).
struct options {
  std::map<std::string, std::string> values;
  bool has(const std::string& f) const { return values.count(f) != 0; }
  const std::string& get(const std::string& f) const { return values.at(f); }
};

/// Parses argv[first..argc): `--help`/`-h` prints @p usage and exits; every other argument must be a flag of
/// @p with_value (followed by its value) or of @p switches, each given at most once. @p command names the
/// subcommand in messages (default argv[first - 1]).
options parse_options(int argc, char** argv, int first, const char* usage, const std::vector<std::string>& with_value,
                      const std::vector<std::string>& switches, const char* command = nullptr);

/// An integer >= @p min_value.
std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value);
/// An integer in [min_value, limit] (a limit of src/limits.hpp: "--flag = value, the limit is N" above it).
std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value, std::int64_t limit);
/// --seed: a decimal integer in [0, 2^64 - 1] (the library's seeds are 64-bit unsigned).
std::uint64_t to_seed(const std::string& text);
/// --steps: an integer in [min_value, limits::max_steps].
std::int64_t to_steps(const std::string& text, std::int64_t min_value);
/// A finite number.
double to_double(const std::string& flag, const std::string& text);
/// The value of @p flag as a number in [lo, hi] (lo excluded when lo_open).
double flag_number(const options& o, const char* flag, double lo, bool lo_open, double hi);

/// A name given on the command line, parsed with the library's parser: an unknown name is a bad command line,
/// reported with the flag in place of the library's own field name.
template <class Parse>
auto parse_flag(const std::string& flag, const std::string& text, Parse parse) {
  try {
    return parse(text);
  } catch (const invalid_argument& e) {
    const std::string m = e.what();  // the library's "executor: unknown name ..." without its own field name
    const auto colon = m.find(": ");
    throw usage_error(flag + ": " + (colon == std::string::npos ? m : m.substr(colon + 2)));
  }
}

}  // namespace diffsample::cli
