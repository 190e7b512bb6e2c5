// Output files and standard output of the diffsample program.
//
// Outputs are checked before a run starts (folders exist and are writable, an existing target is a regular file,
// no output names an input file or another output: compared by file identity, not by spelling) and written after
// it succeeded as one transaction: every output goes to a temporary file in its target's folder first (the target of
// an output named through a symbolic link being the file the link leads to: the link stays), and only
// when all of them are written and synced are they renamed over their targets. A failure before the renames removes
// every temporary and leaves every target untouched; so does a rename that fails after others succeeded (each target
// renamed over is put back from a hard link to its previous file made before the first rename, or removed if it did
// not exist); SIGINT, SIGTERM, SIGHUP and SIGQUIT during the writes remove
// the temporaries too (the handler unlinks the registered names, then the signal takes its default action). The
// thread that writes the outputs takes these signals: one that another thread (an OpenMP worker) receives is sent on
// to it, so that it waits while that thread blocks them (a temporary's registration, the renames). SIGXFSZ is
// ignored, so that a write past the file-size limit fails with EFBIG and is undone like any failed write, rather
// than killing the process with its temporary left. The signals' handlers replace only their default actions (a
// handler of the process's own stays), checked at every stage().
//
// Every file the program writes goes through an output_set, and so does npy::write_f32 (one output): both live in
// the static library diffsample_npy.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace diffsample::cli {

/// The identity of a path: (device, inode) of an existing file, else the canonical path of its folder joined with
/// its last component (the file a later open would create).
struct file_identity {
  bool exists = false;
  unsigned long long device = 0, inode = 0;
  std::string canonical;
  bool operator==(const file_identity& o) const;
};

/// The identity of @p path; throws input_error when its folder cannot be resolved.
file_identity identify(const std::string& path);

/// The outputs of one run: checked up front, then written all or none.
class output_set {
 public:
  output_set() = default;
  ~output_set();  ///< removes every temporary not yet renamed
  output_set(const output_set&) = delete;
  output_set& operator=(const output_set&) = delete;

  /// An input file of the run (the problem file, its .npy files), which no output may name.
  void add_input(const std::string& path, const std::string& what);
  /// Checks the output @p path of option @p flag (usage_error for two outputs naming one file; input_error for an
  /// output naming an input, a missing or unwritable folder, an existing target that is not a regular file or is
  /// read-only, or a name the file system refuses). A symbolic link is followed to the file it leads to
  /// (npy::write_target()), which is then checked, staged beside and replaced, in its own folder.
  void add_output(const std::string& flag, const std::string& path);

  /// Writes the concatenation of @p parts to a new temporary file beside the output of @p flag (registered for
  /// removal on a signal), synced, with the permissions of the file it replaces (0666 less the umask for a new
  /// one). Throws diffsample::error on failure (the destructor then removes every temporary).
  void stage(const std::string& flag, const std::vector<std::pair<const void*, std::size_t>>& parts);
  /// Renames every staged temporary over its target, all or none: an existing target is first linked to a backup
  /// name beside it (NAME.old.XXXXXX, removed after), and a rename that fails puts back every target renamed before
  /// it, then throws diffsample::error. The cleanup signals wait until it returns.
  void commit();

 private:
  struct entry {
    std::string flag, path;
    std::string target;  // the file replaced: path, or where the symbolic link path leads (npy::write_target)
    file_identity id;
    std::string temporary;  // empty until staged
    int slot = -1;          // signal-handler registration
  };
  std::vector<entry> outputs_;
  std::vector<std::pair<std::string, file_identity>> inputs_;
  entry& find(const std::string& flag);
};

/// Flushes stdout; throws input_error ("standard output: write failed: ...", or "standard output is closed") if
/// anything written to it was lost.
void check_stdout();

/// Prepares standard output at program start: a closed descriptor 1 is replaced by one on which every write fails
/// (so that no file the program opens lands on it), and check_stdout() then reports it as closed.
void guard_stdout();

/// Prints @p text to stdout and exits: status 0, or 1 with a message on stderr if stdout could not take it.
[[noreturn]] void print_and_exit(const char* text);

}  // namespace diffsample::cli
