// NumPy .npy files for the diffsample program: strict reading of float32/float64 arrays (1-D or 2-D, C or Fortran
// order, little- or big-endian, format versions 1.0, 2.0 and 3.0) and atomic writing of float32 N x d matrices.
//
// Part of the program, not of the library: built as the static library diffsample_npy, which the program, its
// tests and the fuzzers link (not installed, not exported from libdiffsample.so).
//
// Every failure throws: diffsample::invalid_argument for a malformed or unsupported file or a bad argument,
// diffsample::error for an operating-system failure (open, read, write, rename), diffsample::out_of_memory for a file
// or an array the host cannot hold (never std::bad_alloc). Messages are one line that starts with the file name:
// "samples.npy: truncated data: expected 800 bytes after the header, found 792".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace diffsample::npy {

/// Element type of a .npy file.
enum class dtype : int {
  float32 = 0,  ///< '<f4' (or big-endian '>f4')
  float64 = 1,  ///< '<f8' (or big-endian '>f8')
};

/// A decoded array in C order (a Fortran-order file is transposed into it, big-endian values byte-swapped). A 1-D
/// array of n values has ndim 1, rows n and cols 1.
template <class T>
struct matrix {
  int ndim = 2;           ///< 1 or 2, as stored in the file
  std::int64_t rows = 0;  ///< first dimension
  std::int64_t cols = 0;  ///< second dimension (1 for a 1-D array)
  dtype stored = dtype::float32;  ///< element type in the file
  std::vector<T> values;  ///< rows x cols values, row-major
};

/// What the header of a .npy image says, after validation against the image's size.
struct header {
  int major = 1;                     ///< format version: 1, 2 or 3 (minor is always 0)
  dtype type = dtype::float32;       ///< element type
  std::vector<std::int64_t> shape;   ///< one or two non-negative dimensions
  std::size_t data_offset = 0;       ///< bytes before the data
  std::int64_t count = 0;            ///< number of elements
  bool fortran_order = false;        ///< the file stores the array column by column
  bool big_endian = false;           ///< the file's descr is '>f4' or '>f8'
};

/// Parses and validates the header of an in-memory .npy image of @p size bytes; @p name prefixes messages.
/// Checks the magic, version, header dictionary (exactly 'descr', 'fortran_order' and 'shape'), dtype ('<f4',
/// '<f8', '>f4', '>f8'), rank, and that the data that follows is exactly count x itemsize bytes. Reads nothing past
/// @p size.
header parse_header(const void* bytes, std::size_t size, const std::string& name);

/// Decodes an in-memory image as float32 (float64 data is rounded; values beyond float range are refused).
matrix<float> decode_f32(const void* bytes, std::size_t size, const std::string& name);
/// Decodes an in-memory image as float64 (float32 data converts exactly).
matrix<double> decode_f64(const void* bytes, std::size_t size, const std::string& name);

/// Reads a .npy file as float32. When @p cols >= 0, the array must be 2-D with that many columns
/// ("shape mismatch" otherwise).
matrix<float> read_f32(const std::string& path, std::int64_t cols = -1);
/// Reads a .npy file as float64. When @p cols >= 0, the array must be 2-D with that many columns.
matrix<double> read_f64(const std::string& path, std::int64_t cols = -1);

/// The header of a float32 rows x cols C-order .npy image (magic, version, padded dictionary): the bytes that
/// encode_f32() puts before the data.
std::vector<unsigned char> encode_header_f32(std::int64_t rows, std::int64_t cols);

/// Encodes a float32 rows x cols row-major matrix as a .npy image (format 1.0, or 2.0 when the header needs it).
std::vector<unsigned char> encode_f32(const float* values, std::int64_t rows, std::int64_t cols);

/// Writes a float32 rows x cols row-major matrix to @p path, through the program's output writer (cli::output_set
/// in src/cli/output.hpp, one output), so that it is checked and replaced as the program's outputs are: a target
/// that is not a regular file, is read-only or is another user's in a sticky folder, and a link of /proc whose text
/// names no file to replace, are refused (diffsample::error) before anything is written; SIGXFSZ at its default
/// action is ignored (a write past the file-size limit fails and is undone), and SIGINT, SIGTERM, SIGHUP and SIGQUIT
/// at theirs remove the temporary. The data goes to a temporary file in the same
/// directory, which is synced and renamed over @p path at the end: on failure no partial file is left and an
/// existing @p path is untouched. The file keeps the permissions of the regular file it replaces; a new one gets
/// 0666 less the umask (replacement_mode()). A @p path that is a symbolic link is written through: the file it
/// leads to is replaced (or created, for a dangling link) and the link stays (write_target()), as numpy.save and
/// cp do.
void write_f32(const std::string& path, const float* values, std::int64_t rows, std::int64_t cols);

/// The permission bits of a file written over @p path (as a temporary renamed into place, which mkstemp makes 0600):
/// those of the regular file @p path names, else 0666 less the process's umask, as open(O_CREAT, 0666) would give.
/// write_f32() and the program's outputs (cli/output.hpp) follow this one rule.
unsigned replacement_mode(const std::string& path);

/// Gives the open file @p fd, a temporary about to be renamed over @p path, what it keeps of the regular file
/// @p path names: its owner and group where this process may set them (the owner as root, the group as one of its
/// members; otherwise they stay this process's, silently), and the permission bits of replacement_mode(). Returns 0,
/// or the errno of a failed fchmod.
int match_replaced(int fd, const std::string& path);

/// The process's umask, read without changing it (the Umask line of /proc/self/status); where that cannot be read,
/// the umask the process had at start (read during static initialisation, before any thread exists). Setting the
/// umask to read it back, as umask() alone can, would give every file another thread creates meanwhile mode 0666.
unsigned current_umask();

/// The file that a write to @p path replaces: @p path itself, or, when @p path is a symbolic link, the file the
/// link leads to, followed link by link (a relative link is read from the folder that holds it; at most 40 links,
/// then ELOOP). The last name may not exist (a dangling link: the write creates the file it names). Throws
/// diffsample::error for a link that cannot be read or a loop.
std::string write_target(const std::string& path);

/// A mkstemp() pattern for a file beside @p target: its folder, its name, @p tag, then "XXXXXX"
/// ("out.npy.tmp.XXXXXX"). The name is shortened to keep the whole within the file system's limit on a name
/// (NAME_MAX), so that a target whose name fits never fails for its temporary's.
std::string sibling_pattern(const std::string& target, const char* tag);

/// Reads @p size bytes of the open file @p fd into @p data, retrying reads a signal interrupted (the program's file
/// reads: .npy and problem files). Returns 0, the errno of a failed read, or -1 when the file ended early (it shrank
/// while being read). Leaves @p fd open.
int read_fully(int fd, void* data, std::size_t size);

}  // namespace diffsample::npy
