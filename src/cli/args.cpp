// Command-line arguments of the diffsample program (args.hpp).
#include "cli/args.hpp"

#include <algorithm>
#include <cctype>
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
    if (a == "--help" || a == "-h") throw help_request{usage};
    if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
      if (o.has(a)) throw usage_error(a + ": given twice");
      o.values[a] = "";
    } else if (std::find(with_value.begin(), with_value.end(), a) != with_value.end()) {
      if (i + 1 >= argc) throw usage_error(a + ": missing value");
      if (o.has(a)) throw usage_error(a + ": given twice");
      // A value that reads as an option is a forgotten value ("--out --quiet"), not a file named --quiet written
      // while --quiet goes unread. A negative number ("-1") is a value; a file of such a name is ./--quiet.
      const std::string v = argv[i + 1];
      const auto listed = [&](const std::vector<std::string>& flags) {
        return std::find(flags.begin(), flags.end(), v) != flags.end();
      };
      const bool option = v == "--help" || v == "-h" || listed(with_value) || listed(switches);
      if (option || v.rfind("--", 0) == 0)
        throw usage_error(a + ": missing value: '" + v + "' " + (option ? "is an option" : "reads as an option") +
                          " (a file of that name is ./" + v + ")");
      o.values[a] = argv[++i];
    } else {
      throw usage_error("unknown option '" + a + "' (see diffsample " +
                        std::string(command ? command : argv[first - 1]) + " --help)");
    }
  }
  return o;
}

namespace {
// Numeric flags are decimal, as the values of problem files (JSON numbers): strtoll / strtod alone would also take
// leading white space ("' 10'", a quoting slip), a '+' sign, and strtod hexadecimal numbers ("0x1p-7"), "inf" and
// "nan". These are refused as trailing characters are, and as --seed refuses them.
bool digits(const std::string& text, std::size_t& at) {
  const std::size_t from = at;
  while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
  return at > from;
}

/// -?[0-9]+
bool decimal_integer(const std::string& text) {
  std::size_t at = text.size() > 0 && text[0] == '-' ? 1 : 0;
  return digits(text, at) && at == text.size();
}

/// -?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?
bool decimal_number(const std::string& text) {
  std::size_t at = text.size() > 0 && text[0] == '-' ? 1 : 0;
  const bool whole = digits(text, at);
  bool fraction = false;
  if (at < text.size() && text[at] == '.') {
    ++at;
    fraction = digits(text, at);
  }
  if (!whole && !fraction) return false;
  if (at < text.size() && (text[at] == 'e' || text[at] == 'E')) {
    ++at;
    if (at < text.size() && (text[at] == '+' || text[at] == '-')) ++at;
    if (!digits(text, at)) return false;
  }
  return at == text.size();
}
}  // namespace

std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);  // decimal, as in problem files: 010 is ten
  if (!decimal_integer(text) || errno != 0 || end == text.c_str() || *end != '\0' || v < min_value)
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
  if (!decimal_number(text) || end == text.c_str() || *end != '\0' || !std::isfinite(v))
    throw usage_error(flag + ": expected a finite number, got '" + text + "'");
  if (v == 0.0) {  // a non-zero number too small for a double reads as 0: refused rather than run as 0
    const std::string mantissa = text.substr(0, text.find_first_of("eE"));
    if (mantissa.find_first_of("123456789") != std::string::npos)
      throw usage_error(flag + ": '" + text + "' is not zero but below the smallest double (about 4.9e-324)");
  }
  return v;
}

bool to_bool(const std::string& flag, const std::string& text) {
  if (text != "0" && text != "1") throw usage_error(flag + ": expected 0 or 1, got '" + text + "'");
  return text == "1";
}

namespace {

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; }

/// Where @p name occurs in @p text as a whole word (no name character on either side), from @p from; npos if not.
std::size_t find_word(const std::string& text, const std::string& name, std::size_t from = 0) {
  for (std::size_t at = text.find(name, from); at != std::string::npos; at = text.find(name, at + 1))
    if ((at == 0 || !word_char(text[at - 1])) &&
        (at + name.size() == text.size() || !word_char(text[at + name.size()])))
      return at;
  return std::string::npos;
}

/// The names of a setting's list: split at '/' and " x ".
std::vector<std::string> parts(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= list.size();) {
    const bool slash = i < list.size() && list[i] == '/';
    const bool times = list.compare(i, 3, " x ") == 0;
    if (i == list.size() || slash || times) {
      out.push_back(list.substr(start, i - start));
      i += times ? 3 : 1;
      start = i;
    } else {
      ++i;
    }
  }
  return out;
}

/// A list of keys as the file's fields: "steps x measurements" -> "sampler.steps x sampler.measurements".
std::string key_fields(const std::string& list) {
  std::string out;
  for (std::size_t i = 0; i < list.size();) {
    if (list[i] == '/' || list[i] == ' ') {
      out += list[i++];
      continue;
    }
    std::size_t end = i;
    while (end < list.size() && list[end] != '/' && list[end] != ' ') ++end;
    const std::string name = list.substr(i, end - i);
    out += name == "x" ? name : "sampler." + name;
    i = end;
  }
  return out;
}

/// The keys of @p list that @p file gives, where the list names alternatives ("schedule/time_grid/t_start"): the
/// file's "schedule" alone names sampler.schedule, not every key that could have set the option. A product's factors
/// ("steps x measurements") are kept whole.
std::string given_keys(const std::string& list, const problem& file) {
  if (list.find(" x ") != std::string::npos) return list;
  std::string out;
  for (const std::string& k : parts(list))
    if (file.sampler.keys.count(k) != 0) out += (out.empty() ? "" : "/") + k;
  return out.empty() ? list : out;
}

}  // namespace

void report_setting(const options& o, const problem* file, const std::vector<setting>& table,
                    const std::string& message) {
  // Longest options first, so that a product ("options.steps x measurements") is named before its factors.
  std::vector<const setting*> order;
  for (const setting& s : table) order.push_back(&s);
  std::stable_sort(order.begin(), order.end(), [](const setting* a, const setting* b) {
    return std::string(a->option).size() > std::string(b->option).size();
  });
  bool from_flags = false, from_file = false, file_named = false;
  std::string text = message;
  for (const setting* s : order) {
    bool flag_given = false, key_given = false;
    for (const std::string& f : parts(s->flag)) flag_given = flag_given || o.has(f);
    if (file && s->key)
      for (const std::string& k : parts(s->key)) key_given = key_given || file->sampler.keys.count(k) != 0;
    // Mentioned: the option by its name, or its bare name in the text ("must be in [1, steps = 5]").
    const std::string option = s->option;
    const std::string bare = option.rfind("options.", 0) == 0 ? option.substr(8) : option;
    const bool named = find_word(text, option) != std::string::npos;
    if (!named && find_word(message, bare) == std::string::npos) continue;
    from_flags = from_flags || flag_given;
    from_file = from_file || key_given;
    if (!named) continue;
    const bool as_key = key_given && !flag_given;
    file_named = file_named || as_key;
    const std::string shown = as_key ? key_fields(given_keys(s->key, *file))
                                     : std::string(s->flag) + (s->note ? std::string(" (") + s->note + ")" : "");
    for (std::size_t at = find_word(text, option); at != std::string::npos;
         at = find_word(text, option, at + shown.size()))
      text.replace(at, option.size(), shown);
  }
  if (file_named) text = file->path + ": " + text;
  if (from_flags) throw usage_error(text);
  if (from_file) throw input_error(text);
  throw invalid_argument(text);
}

}  // namespace diffsample::cli
