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

/// What `--help` or `-h` asks for: the subcommand's usage text, which the program prints on stdout before it exits
/// with status 0 (main()). Thrown by parse_options() rather than printed there, so that under mpirun the processes
/// agree on it with the rest of their arguments (distributed::check_arguments()): one process that exited while the
/// others waited for it left the run hanging. Not a std::exception: no handler of errors takes it. @p text is null
/// on a process that prints nothing (another one prints the text).
struct help_request {
  const char* text;
};

/// Parses argv[first..argc): `--help`/`-h` throws help_request{usage}; every other argument must be a flag of
/// @p with_value (followed by its value, which may not read as an option: a flag of this command, --help, -h or
/// anything starting with "--") or of @p switches, each given at most once. @p command names the
/// subcommand in messages (default argv[first - 1]).
options parse_options(int argc, char** argv, int first, const char* usage, const std::vector<std::string>& with_value,
                      const std::vector<std::string>& switches, const char* command = nullptr);

/// A decimal integer (-?[0-9]+: no '+' sign, no white space, no prefix; 010 is ten) >= @p min_value.
std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value);
/// An integer in [min_value, limit] (a limit of src/limits.hpp: "--flag = value, the limit is N" above it).
std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value, std::int64_t limit);
/// --seed: a decimal integer in [0, 2^64 - 1] (the library's seeds are 64-bit unsigned).
std::uint64_t to_seed(const std::string& text);
/// --steps: an integer in [min_value, limits::max_steps].
std::int64_t to_steps(const std::string& text, std::int64_t min_value);
/// A finite decimal number (-?([0-9]+(.[0-9]*)?|.[0-9]+)([eE][+-]?[0-9]+)?: no '+' sign before it, no white
/// space, no hexadecimal, inf or nan): a JSON number of a problem file, and also "5." and ".5".
double to_double(const std::string& flag, const std::string& text);
/// A switch given as a value: "0" (false) or "1" (true).
bool to_bool(const std::string& flag, const std::string& text);

/// A setting of a library call and where the program takes it from, so that the library's own check of it is
/// reported with the program's names: the option as the library's messages name it ("options.steps"), the flag that
/// sets it ("--steps") and the key of the problem file's sampler section ("steps"; null: none). Several flags or keys
/// that set one option together are separated by '/' ("--schedule/--time-grid"), the factors of a product by " x "
/// ("options.steps x measurements" from "--steps x --measurements"). @p note follows the flag's name in a message
/// where the option is not the flag's value itself ("the spread c = X trace(A A^T) / d_y").
struct setting {
  const char* option;
  const char* flag;
  const char* key = nullptr;
  const char* note = nullptr;
};

/// Reports @p message, an invalid_argument of the library about the settings in @p table, with the program's names:
/// each option it names becomes the flag that set it (or the file's "sampler.KEY" when only the problem file gave
/// it). A usage_error (exit status 2) when the command line gave a setting the message names or mentions ("steps =
/// 5"), else an input_error starting with the file's name (exit status 1) when the file gave one, else the library's
/// invalid_argument with the program's names. The file's name starts the message whenever it names a file key.
[[noreturn]] void report_setting(const options& o, const problem* file, const std::vector<setting>& table,
                                 const std::string& message);

/// Runs @p check, the library's validation of a run's options (its *_workspace_bytes function), before the run
/// starts, reporting a refused setting with report_setting(): every flag that fills an option of the library is
/// checked against the library's own limits, through one table per run.
template <class Check>
void check_settings(const options& o, const problem* file, const std::vector<setting>& table, Check check) {
  try {
    check();
  } catch (const invalid_argument& e) {
    report_setting(o, file, table, e.what());
  }
}

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
