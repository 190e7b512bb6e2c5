// NumPy .npy reading and writing (see npy.hpp). The header is a Python dict literal; it is parsed by a small
// strict recursive-descent reader that accepts what numpy.save writes (and harmless variations in spacing, quotes
// and key order) and refuses everything else with a one-line message naming the file.
#include "src/cli/npy.hpp"
#include "src/cli/output.hpp"
#include "src/cli/problem.hpp"
#include "src/limits.hpp"

#include <diffsample/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

namespace diffsample::npy {

namespace {

constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
// Largest accepted dimension and element count: keeps count x 8 bytes far from overflow.
constexpr std::int64_t max_count = std::int64_t{1} << 56;
// Symbolic links followed from an output's name to the file it replaces (the kernel's own limit, MAXSYMLINKS).
constexpr int max_links = 40;

[[noreturn]] void bad(const std::string& name, const std::string& problem) {
  throw invalid_argument(name + ": " + problem);
}

[[noreturn]] void os_error(const std::string& name, const std::string& what, int err) {
  throw error(name + ": " + what + ": " + std::strerror(err));
}

// `count` elements in `v`: a size the host cannot give is diffsample::out_of_memory naming the file and the bytes (it
// was std::bad_alloc, which names nothing, and which the program's problem files could not attribute to a field).
template <class V>
void allocate(V& v, std::size_t count, const std::string& name, const char* what) {
  try {
    v.resize(count);
  } catch (const std::bad_alloc&) {
    throw out_of_memory(name + ": " + what + " (" + std::to_string(count) + " x " +
                        std::to_string(sizeof(typename V::value_type)) + " bytes) could not be allocated on the host");
  }
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

// Printable excerpt of header text for messages (no control characters, bounded length).
std::string excerpt(const char* p, const char* end) {
  std::string out;
  for (; p < end && out.size() < 24; ++p) out += (*p >= 32 && *p < 127) ? *p : '?';
  return out;
}

class dict_reader {
 public:
  dict_reader(const char* begin, const char* end, const std::string& name) : p_(begin), end_(end), name_(name) {}

  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool at_end() const { return p_ >= end_; }
  char peek() const { return p_ < end_ ? *p_ : '\0'; }

  void expect(char c, const char* what) {
    skip_space();
    if (p_ >= end_ || *p_ != c)
      fail(std::string("expected '") + c + "' " + what + ", found " +
           (p_ >= end_ ? std::string("end of header") : "'" + excerpt(p_, end_) + "'"));
    ++p_;
  }

  std::string string_literal(const char* what) {
    skip_space();
    if (p_ >= end_ || (*p_ != '\'' && *p_ != '"'))
      fail(std::string("expected a quoted string ") + what + ", found " +
           (p_ >= end_ ? std::string("end of header") : "'" + excerpt(p_, end_) + "'"));
    const char quote = *p_++;
    std::string s;
    while (p_ < end_ && *p_ != quote) {
      if (*p_ == '\\' || *p_ == '\n') fail(std::string("unsupported character in string ") + what);
      s += *p_++;
      if (s.size() > 64) fail(std::string("string too long ") + what);
    }
    if (p_ >= end_) fail(std::string("unterminated string ") + what);
    ++p_;
    return s;
  }

  bool boolean(const char* what) {
    skip_space();
    if (end_ - p_ >= 4 && std::memcmp(p_, "True", 4) == 0) {
      p_ += 4;
      return true;
    }
    if (end_ - p_ >= 5 && std::memcmp(p_, "False", 5) == 0) {
      p_ += 5;
      return false;
    }
    fail(std::string("expected True or False ") + what + ", found '" + excerpt(p_, end_) + "'");
  }

  std::int64_t integer(const char* what) {
    skip_space();
    if (p_ >= end_ || *p_ < '0' || *p_ > '9')
      fail(std::string("expected a non-negative integer ") + what + ", found " +
           (p_ >= end_ ? std::string("end of header") : "'" + excerpt(p_, end_) + "'"));
    std::int64_t v = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      v = v * 10 + (*p_++ - '0');
      if (v > max_count) fail(std::string("dimension too large ") + what);
    }
    if (p_ < end_ && *p_ == 'L') ++p_;  // Python 2 long literal, as old numpy wrote it
    return v;
  }

  std::vector<std::int64_t> tuple(const char* what) {
    expect('(', what);
    std::vector<std::int64_t> values;
    skip_space();
    if (peek() == ')') {
      ++p_;
      return values;
    }
    for (;;) {
      values.push_back(integer(what));
      if (values.size() > 8) fail(std::string("too many dimensions ") + what);
      skip_space();
      if (peek() == ')') {
        ++p_;
        return values;
      }
      expect(',', what);
      skip_space();
      if (peek() == ')') {
        ++p_;
        return values;
      }
    }
  }

  [[noreturn]] void fail(const std::string& problem) const { bad(name_, "malformed header: " + problem); }

 private:
  const char* p_;
  const char* end_;
  const std::string& name_;
};

std::uint32_t little_u32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

template <class T>
matrix<T> decode(const void* bytes, std::size_t size, const std::string& name) {
  const header h = parse_header(bytes, size, name);
  matrix<T> m;
  m.ndim = static_cast<int>(h.shape.size());
  m.rows = h.shape[0];
  m.cols = h.shape.size() == 2 ? h.shape[1] : 1;
  m.stored = h.type;
  allocate(m.values, static_cast<std::size_t>(h.count), name, "its values");
  const unsigned char* data = static_cast<const unsigned char*>(bytes) + h.data_offset;
  // Element i of the file goes to row-major index at(i): a 2-D Fortran-order file holds column i / rows, row
  // i % rows (a 1-D array is the same in either order).
  const bool transpose = h.fortran_order && m.ndim == 2;
  const auto at = [&](std::int64_t i) { return transpose ? (i % m.rows) * m.cols + i / m.rows : i; };
  // An element's bytes in host (little-endian) order.
  const auto element = [&](std::int64_t i, unsigned char* out, std::size_t item) {
    std::memcpy(out, data + item * static_cast<std::size_t>(i), item);
    if (h.big_endian) std::reverse(out, out + item);
  };
  if (h.type == dtype::float32) {
    for (std::int64_t i = 0; i < h.count; ++i) {
      unsigned char b[4];
      element(i, b, 4);
      float v;
      std::memcpy(&v, b, 4);
      m.values[at(i)] = static_cast<T>(v);
    }
  } else {
    for (std::int64_t i = 0; i < h.count; ++i) {
      unsigned char b[8];
      element(i, b, 8);
      double v;
      std::memcpy(&v, b, 8);
      if constexpr (sizeof(T) == 4) {
        if (std::isfinite(v) && std::fabs(v) > double(FLT_MAX)) {
          std::ostringstream s;
          s.precision(17);
          s << "value " << v << " at index " << at(i) << " is beyond float32 range";
          bad(name, s.str());
        }
      }
      m.values[at(i)] = static_cast<T>(v);
    }
  }
  return m;
}

std::vector<unsigned char> slurp(const std::string& path) {
  // Regular files only: a folder, a device (/dev/zero) or a fifo has no size to trust and could be read forever.
  // O_NONBLOCK: a fifo's open() would otherwise wait for a writer, before the check below could refuse it (it has no
  // effect on a regular file's reads).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) os_error(path, "cannot open", errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    os_error(path, "cannot determine size", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    bad(path, S_ISDIR(st.st_mode) ? "cannot read: it is a folder, not a .npy file"
                                  : "cannot read: not a regular file (a device, fifo or socket)");
  }
  // At most max_count float64 values and a header: larger files are refused before anything is allocated.
  const std::uint64_t limit = std::uint64_t(max_count) * 8u + 65536u + 12u;
  if (std::uint64_t(st.st_size) > limit) {
    ::close(fd);
    bad(path, "file of " + std::to_string(st.st_size) + " bytes is too large (the limit is " +
                  diffsample::limits::spell(max_count) + " values)");
  }
  std::vector<unsigned char> bytes;
  try {
    allocate(bytes, static_cast<std::size_t>(st.st_size), path, "the file's bytes");
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (const int err = read_fully(fd, bytes.data(), bytes.size())) {
    ::close(fd);
    os_error(path, err > 0 ? "read failed" : "read failed: the file shrank while being read", err > 0 ? err : EIO);
  }
  ::close(fd);
  return bytes;
}

template <class T>
void check_cols(const std::string& path, const matrix<T>& m, std::int64_t cols) {
  if (cols < 0) return;
  if (m.ndim != 2 || m.cols != cols) {
    std::vector<std::int64_t> shape{m.rows};
    if (m.ndim == 2) shape.push_back(m.cols);
    bad(path, "shape mismatch: expected (N, " + std::to_string(cols) + "), got " + shape_string(shape));
  }
}

}  // namespace

header parse_header(const void* bytes, std::size_t size, const std::string& name) {
  static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float32/float64 expected");
  const unsigned char* p = static_cast<const unsigned char*>(bytes);
  if (size == 0) bad(name, "bad magic: empty file, not a .npy file");
  if (p == nullptr) bad(name, "null buffer");
  if (std::memcmp(p, magic, size < 6 ? size : 6) != 0) bad(name, "bad magic: not a .npy file");
  if (size < 8) bad(name, "truncated header: " + std::to_string(size) + " bytes");
  header h;
  h.major = p[6];
  if ((h.major != 1 && h.major != 2 && h.major != 3) || p[7] != 0)
    bad(name, "unsupported format version " + std::to_string(p[6]) + "." + std::to_string(p[7]) +
                  " (expected 1.0, 2.0 or 3.0)");
  const std::size_t prefix = h.major == 1 ? 10 : 12;
  if (size < prefix) bad(name, "truncated header: " + std::to_string(size) + " bytes");
  const std::size_t header_len = h.major == 1 ? std::size_t(p[8]) | std::size_t(p[9]) << 8 : little_u32(p + 8);
  if (header_len > size - prefix)
    bad(name, "truncated header: it declares " + std::to_string(header_len) + " bytes, the file has " +
                  std::to_string(size - prefix) + " after the prefix");
  h.data_offset = prefix + header_len;

  const char* text = reinterpret_cast<const char*>(p + prefix);
  dict_reader r(text, text + header_len, name);
  bool seen_descr = false, seen_order = false, seen_shape = false;
  std::string descr;
  bool fortran = false;
  r.expect('{', "at the start of the header dictionary");
  for (;;) {
    r.skip_space();
    if (r.peek() == '}') break;
    const std::string key = r.string_literal("(a dictionary key)");
    r.expect(':', "after a dictionary key");
    bool* seen = nullptr;
    if (key == "descr") {
      seen = &seen_descr;
      descr = r.string_literal("for 'descr'");
    } else if (key == "fortran_order") {
      seen = &seen_order;
      fortran = r.boolean("for 'fortran_order'");
    } else if (key == "shape") {
      seen = &seen_shape;
      h.shape = r.tuple("for 'shape'");
    } else {
      r.fail("unexpected key '" + key + "'");
    }
    if (*seen) r.fail("duplicate key '" + key + "'");
    *seen = true;
    r.skip_space();
    if (r.peek() == ',') {
      r.expect(',', "");
      continue;
    }
    r.skip_space();
    if (r.peek() != '}') r.expect('}', "or ',' after a dictionary value");
  }
  r.expect('}', "at the end of the header dictionary");
  r.skip_space();
  if (!r.at_end()) r.fail("unexpected text after the dictionary");
  if (!seen_descr) r.fail("missing key 'descr'");
  if (!seen_order) r.fail("missing key 'fortran_order'");
  if (!seen_shape) r.fail("missing key 'shape'");

  if (descr == "<f4" || descr == ">f4") {
    h.type = dtype::float32;
  } else if (descr == "<f8" || descr == ">f8") {
    h.type = dtype::float64;
  } else {
    bad(name, "wrong dtype '" + descr + "' (expected '<f4' float32 or '<f8' float64, or big-endian '>f4', '>f8')");
  }
  h.big_endian = descr[0] == '>';
  h.fortran_order = fortran;
  if (h.shape.empty()) bad(name, "0-d arrays are not supported (expected 1-D or 2-D)");
  if (h.shape.size() > 2)
    bad(name, std::to_string(h.shape.size()) + "-d shape " + shape_string(h.shape) +
                  " is not supported (expected 1-D or 2-D)");

  h.count = 1;
  for (const std::int64_t n : h.shape) {
    if (n != 0 && h.count > max_count / n) bad(name, "shape " + shape_string(h.shape) + " is too large");
    h.count *= n;
  }
  const std::size_t item = h.type == dtype::float32 ? 4 : 8;
  const std::size_t want = static_cast<std::size_t>(h.count) * item;
  const std::size_t have = size - h.data_offset;
  if (have < want)
    bad(name, "truncated data: expected " + std::to_string(want) + " bytes after the header for shape " +
                  shape_string(h.shape) + ", found " + std::to_string(have));
  if (have > want)
    bad(name, "trailing data: " + std::to_string(have - want) + " bytes after the " + std::to_string(want) +
                  " bytes of shape " + shape_string(h.shape));
  return h;
}

matrix<float> decode_f32(const void* bytes, std::size_t size, const std::string& name) {
  return decode<float>(bytes, size, name);
}

matrix<double> decode_f64(const void* bytes, std::size_t size, const std::string& name) {
  return decode<double>(bytes, size, name);
}

matrix<float> read_f32(const std::string& path, std::int64_t cols) {
  const auto bytes = slurp(path);
  auto m = decode<float>(bytes.data(), bytes.size(), path);
  check_cols(path, m, cols);
  return m;
}

matrix<double> read_f64(const std::string& path, std::int64_t cols) {
  const auto bytes = slurp(path);
  auto m = decode<double>(bytes.data(), bytes.size(), path);
  check_cols(path, m, cols);
  return m;
}

std::vector<unsigned char> encode_header_f32(std::int64_t rows, std::int64_t cols) {
  if (rows < 0) throw invalid_argument("rows: must be >= 0, got " + std::to_string(rows));
  if (cols < 1) throw invalid_argument("cols: must be >= 1, got " + std::to_string(cols));
  if (rows > max_count / cols)
    throw invalid_argument("rows x cols: " + std::to_string(rows) + " x " + std::to_string(cols) + " is too large");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                     std::to_string(cols) + "), }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes, and end the header with a newline.
  std::size_t prefix = 10;
  std::size_t total = prefix + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  std::size_t header_len = total - prefix;
  if (header_len > 65535) {  // cannot happen for two int64 dimensions, kept for format completeness
    prefix = 12;
    total = (prefix + dict.size() + 1 + 63) / 64 * 64;
    header_len = total - prefix;
  }
  dict.append(header_len - dict.size() - 1, ' ');
  dict += '\n';

  std::vector<unsigned char> out;
  out.reserve(total);
  out.insert(out.end(), magic, magic + 6);
  out.push_back(prefix == 10 ? 1 : 2);
  out.push_back(0);
  for (std::size_t i = 0; i < prefix - 8; ++i) out.push_back(static_cast<unsigned char>(header_len >> (8 * i)));
  out.insert(out.end(), dict.begin(), dict.end());
  return out;
}

std::vector<unsigned char> encode_f32(const float* values, std::int64_t rows, std::int64_t cols) {
  std::vector<unsigned char> out = encode_header_f32(rows, cols);
  const std::int64_t count = rows * cols;
  if (count > 0 && values == nullptr) throw invalid_argument("values: null pointer for " + std::to_string(count) + " values");
  out.reserve(out.size() + static_cast<std::size_t>(count) * 4);
  const auto* data = reinterpret_cast<const unsigned char*>(values);
  if (count > 0) out.insert(out.end(), data, data + count * 4);
  return out;
}

void write_f32(const std::string& path, const float* values, std::int64_t rows, std::int64_t cols) {
  if (path.empty()) throw invalid_argument("path: empty file name");
  const std::vector<unsigned char> image = encode_f32(values, rows, cols);
  // The program's output writer with one output, so that a file written here is checked, staged and renamed as the
  // program's outputs are: a link of /proc whose text names no file to replace, a target that is not a regular
  // file, is read-only or is another user's in a sticky folder are refused before anything is written; the
  // temporary is removed on SIGINT, SIGTERM, SIGHUP and SIGQUIT; a write past the file-size limit fails (SIGXFSZ
  // ignored) and is undone. Its own writer wrote through a link's text, replaced fifos and read-only files, and was
  // killed by SIGXFSZ with its temporary left.
  cli::output_set out;
  try {
    out.add_output("path", path);
  } catch (const cli::input_error& e) {
    throw diffsample::error(e.what());  // "PATH: cannot write: it is a fifo (outputs replace regular files only)"
  } catch (const cli::usage_error& e) {
    throw invalid_argument(e.what());  // "path: '-' is not standard output here: ..."
  }
  out.stage("path", {{image.data(), image.size()}});
  out.commit();
}

namespace {

// The umask as the kernel reports it in /proc/self/status ("Umask:\t0022", Linux 4.7 and later), or -1 where that
// line cannot be read. Reading it changes nothing, unlike umask(), which can only read the mask by setting it.
long umask_from_proc() {
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[8192];
  std::size_t size = 0;
  for (;;) {
    const ssize_t k = ::read(fd, text + size, sizeof text - 1 - size);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    size += std::size_t(k);
    if (size == sizeof text - 1) break;
  }
  ::close(fd);
  text[size] = '\0';
  const char* line = std::strstr(text, "\nUmask:");
  if (line == nullptr) return -1;
  char* end = nullptr;
  const unsigned long mask = std::strtoul(line + 7, &end, 8);
  return end == line + 7 || mask > 0777 ? -1 : long(mask);
}

// The umask read once at program start, during static initialisation, before the program (or a test) starts any
// thread: the fallback where /proc cannot tell, and the only moment at which umask(0) and back races with nothing.
mode_t umask_at_start() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}
const mode_t startup_umask = umask_at_start();

}  // namespace

unsigned current_umask() {
  const long mask = umask_from_proc();
  return mask >= 0 ? unsigned(mask) : unsigned(startup_umask);
}

unsigned replacement_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return unsigned(st.st_mode & 0777);
  return unsigned(0666 & ~current_umask());
}

int match_replaced(int fd, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      (st.st_uid != ::geteuid() || st.st_gid != ::getegid())) {
    // The owner only root may give away; the group any of its members may set. Before the mode: a chown by another
    // than root clears the set-user and set-group bits, which the mode below does not set anyway.
    if (::fchown(fd, st.st_uid, st.st_gid) != 0) (void)::fchown(fd, uid_t(-1), st.st_gid);
  }
  return ::fchmod(fd, mode_t(replacement_mode(path))) == 0 ? 0 : errno;
}

std::string write_target(const std::string& path) {
  std::string p = path;
  for (int links = 0;; ++links) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    if (links == max_links) os_error(path, "cannot follow the symbolic link", ELOOP);
    std::string to(PATH_MAX, '\0');
    const ssize_t k = ::readlink(p.c_str(), to.data(), to.size());
    if (k < 0) os_error(path, "cannot read the symbolic link " + p, errno);
    if (k == 0 || std::size_t(k) >= to.size()) os_error(path, "cannot read the symbolic link " + p, ENAMETOOLONG);
    to.resize(std::size_t(k));
    // A relative link is read from the folder that holds it.
    const auto slash = p.find_last_of('/');
    p = to[0] == '/' || slash == std::string::npos ? to : p.substr(0, slash + 1) + to;
  }
}

std::string sibling_pattern(const std::string& target, const char* tag) {
  const auto slash = target.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "" : target.substr(0, slash + 1);
  std::string name = slash == std::string::npos ? target : target.substr(slash + 1);
  // Keep the name within the file system's limit on one component (NAME_MAX, 255 bytes on Linux's file systems):
  // a target whose name fits must not fail for its temporary's longer one.
  long name_max = ::pathconf(folder.empty() ? "." : folder.c_str(), _PC_NAME_MAX);
  if (name_max <= 0) name_max = NAME_MAX;
  const std::size_t suffix = std::strlen(tag) + 6;
  if (name.size() + suffix > std::size_t(name_max))
    name.resize(std::size_t(name_max) > suffix ? std::size_t(name_max) - suffix : 0);
  return folder + name + tag + "XXXXXX";
}

int read_fully(int fd, void* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t k = ::read(fd, static_cast<unsigned char*>(data) + done, size - done);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return errno;
    if (k == 0) return -1;
    done += static_cast<std::size_t>(k);
  }
  return 0;
}

}  // namespace diffsample::npy
