// Output files and standard output of the diffsample program (see output.hpp).
#include "src/cli/output.hpp"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <diffsample/error.hpp>

#include "src/cli/npy.hpp"
#include "src/cli/problem.hpp"

namespace diffsample::cli {

namespace {

// Temporaries the signal handler removes. A slot's name is written while its flag is 0 and signals are blocked;
// the handler reads only slots whose flag is 1, and calls only unlink, signal and raise, or sends the signal on to the
// thread that writes the outputs (async-signal-safe).
constexpr int max_temporaries = 16;
char temporary_names[max_temporaries][PATH_MAX];
volatile sig_atomic_t temporary_used[max_temporaries];
const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
bool stdout_was_closed = false;

// The thread that writes the outputs: the one that blocks the cleanup signals around each temporary's registration
// and around the renames (sigprocmask blocks them in the calling thread only). Set by every stage() and commit(), not
// once with the handlers: a child process forked after an output set inherits the handlers but not the thread that
// installed them, and another thread may write a later set.
volatile pid_t output_thread = 0;

pid_t current_thread() { return pid_t(::syscall(SYS_gettid)); }

extern "C" void remove_temporaries_and_die(int sig) {
  // A process-directed signal goes to any thread that does not block it: while the output thread blocks it, an
  // OpenMP worker would take it and kill the process midway through a registration (leaving the new temporary) or
  // the renames (leaving a mixed set). It is sent on to the output thread instead, which takes it once it unblocks.
  if (output_thread != 0 && current_thread() != output_thread) {
    const int saved = errno;
    ::syscall(SYS_tgkill, ::getpid(), output_thread, sig);
    errno = saved;
    return;
  }
  for (int i = 0; i < max_temporaries; ++i)
    if (temporary_used[i]) ::unlink(temporary_names[i]);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Checked at every stage(), not once per process: a signal set back to its default action since (a forked child
// that resets its signals, a caller between two writes) takes the handler again.
void install_handlers() {
  output_thread = current_thread();
  struct sigaction sa {};
  sa.sa_handler = remove_temporaries_and_die;
  sigemptyset(&sa.sa_mask);
  for (int s : cleanup_signals) sigaddset(&sa.sa_mask, s);
  for (int s : cleanup_signals) {
    struct sigaction old {};
    // A signal the caller's shell ignores (nohup, a background job's SIGINT) stays ignored, and one the process
    // handles itself keeps its handler (a program that writes through npy::write_f32 with its own SIGINT handler):
    // only the default action, which would leave the temporary, is replaced.
    if (sigaction(s, nullptr, &old) == 0 && old.sa_handler != SIG_DFL) continue;
    sigaction(s, &sa, nullptr);
  }
  // A write past the file-size limit (ulimit -f, RLIMIT_FSIZE) raises SIGXFSZ, whose default action kills the process
  // and leaves the temporary written so far. Ignored, the write fails with EFBIG instead: the output's error is
  // reported and every temporary removed, as for a full disk.
  struct sigaction xfsz {};
  if (sigaction(SIGXFSZ, nullptr, &xfsz) == 0 && xfsz.sa_handler == SIG_DFL) ::signal(SIGXFSZ, SIG_IGN);
}

/// Blocks the cleanup signals for its lifetime.
struct signals_blocked {
  sigset_t old;
  signals_blocked() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : cleanup_signals) sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, &old);
  }
  ~signals_blocked() { sigprocmask(SIG_SETMASK, &old, nullptr); }
};

std::string folder_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a fifo";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

void unlink_slot(int slot) {
  if (slot < 0) return;
  signals_blocked guard;
  ::unlink(temporary_names[slot]);
  temporary_used[slot] = 0;
}

}  // namespace

bool file_identity::operator==(const file_identity& o) const {
  if (exists != o.exists) return false;
  return exists ? device == o.device && inode == o.inode : canonical == o.canonical;
}

file_identity identify(const std::string& path) {
  file_identity id;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    id.exists = true;
    id.device = st.st_dev;
    id.inode = st.st_ino;
  }
  const std::string dir = folder_of(path);
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr)
    throw input_error(path + ": cannot resolve folder '" + dir + "': " + std::strerror(errno));
  const auto slash = path.find_last_of('/');
  id.canonical = std::string(resolved) + "/" + (slash == std::string::npos ? path : path.substr(slash + 1));
  return id;
}

output_set::~output_set() {
  for (auto& e : outputs_) unlink_slot(e.slot);
}

void output_set::add_input(const std::string& path, const std::string& what) {
  file_identity id;
  try {
    id = identify(path);
  } catch (const input_error&) {
    return;  // an input that cannot be resolved was not read, so no output can be it
  }
  inputs_.emplace_back(what, id);
}

void output_set::add_output(const std::string& flag, const std::string& path) {
  if (path.empty()) throw usage_error(flag + ": empty file name");
  // "-" means standard output to most programs; here it would be a file named "-" in the current folder.
  if (path == "-")
    throw usage_error(flag + ": '-' is not standard output here: outputs are files (a file of that name is ./-)");
  // A symbolic link is written through: the file it leads to is the one checked, staged beside and replaced.
  std::string target;
  try {
    target = npy::write_target(path);
  } catch (const diffsample::error& e) {
    throw input_error(e.what());  // "PATH: cannot follow the symbolic link: Too many levels of symbolic links"
  }
  const std::string through = target == path ? "" : " (the symbolic link leads to '" + target + "')";
  if (target != path) {
    // The file the kernel opens for the name must be the one its links name: not so for the links of /proc, which
    // lead to open files whatever their text reads ("pipe:[1234]", "/tmp/x (deleted)"); /dev/stdout is one.
    struct stat opened {}, named {};
    if (::stat(path.c_str(), &opened) == 0 &&
        (::stat(target.c_str(), &named) != 0 || named.st_dev != opened.st_dev || named.st_ino != opened.st_ino)) {
      if (!S_ISREG(opened.st_mode))
        throw input_error(path + ": cannot write: it is " + kind_of(opened.st_mode) +
                          " (outputs replace regular files only)");
      throw input_error(path + ": cannot write: it leads to an open file that has no name to replace (" + target +
                        ")");
    }
  }
  // A temporary's name lives in a buffer of PATH_MAX bytes (the signal handler reads it), as does the backup's:
  // a path too long for them is refused now, not after the run.
  const std::size_t longest = npy::sibling_pattern(target, ".tmp.").size();
  if (longest >= PATH_MAX)
    throw input_error(path + ": cannot write: the path is too long for its temporary file (" +
                      std::to_string(longest) + " bytes, the limit is " + std::to_string(PATH_MAX - 1) + ")" +
                      through);
  const std::string dir = folder_of(target);
  struct stat folder {};
  if (::stat(dir.c_str(), &folder) != 0)
    throw input_error(path + ": cannot write: folder '" + dir + "': " + std::strerror(errno) + through);
  if (!S_ISDIR(folder.st_mode)) throw input_error(path + ": cannot write: '" + dir + "' is not a folder" + through);
  if (::access(dir.c_str(), W_OK) != 0)
    throw input_error(path + ": cannot write: folder '" + dir + "': " + std::strerror(errno) + through);
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      throw input_error(path + ": cannot write: it is " + kind_of(st.st_mode) +
                        " (outputs replace regular files only)" + through);
    // A write-protected file is not replaced behind its protection (the rename needs no write permission on it):
    // no write permission for this user, or none for anyone (which access() does not report to root).
    if ((st.st_mode & 0222) == 0 || ::access(target.c_str(), W_OK) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
      throw input_error(path + ": cannot write: it is read-only (mode " + mode +
                        "); make it writable or choose another name" + through);
    }
    // In a sticky folder (/tmp) only the owner of a file or of the folder may rename over it (root may too): the
    // rename after the run would fail.
    const uid_t me = ::geteuid();
    if ((folder.st_mode & S_ISVTX) && me != 0 && st.st_uid != me && folder.st_uid != me)
      throw input_error(path + ": cannot write: it belongs to another user (uid " + std::to_string(st.st_uid) +
                        ") in the sticky folder '" + dir + "', where only its owner may replace it" + through);
  } else if (errno != ENOENT) {
    // A name too long for the file system, a path through something that is not a folder: found now, not after
    // the run.
    throw input_error(path + ": cannot write: " + std::strerror(errno) + through);
  }
  entry e;
  e.flag = flag;
  e.path = path;
  e.target = target;
  e.id = identify(target);
  for (const auto& [what, id] : inputs_)
    if (id == e.id) throw input_error(flag + " " + path + ": is the input " + what + " (an output never replaces an input)");
  for (const auto& other : outputs_)
    if (other.id == e.id)
      throw usage_error(flag + " and " + other.flag + " name the same file ('" + path + "', '" + other.path + "')");
  outputs_.push_back(std::move(e));
}

output_set::entry& output_set::find(const std::string& flag) {
  for (auto& e : outputs_)
    if (e.flag == flag) return e;
  throw diffsample::error(flag + ": not a checked output");
}

void output_set::stage(const std::string& flag, const std::vector<std::pair<const void*, std::size_t>>& parts) {
  entry& e = find(flag);
  install_handlers();
  const std::string pattern = npy::sibling_pattern(e.target, ".tmp.");
  if (pattern.size() >= PATH_MAX) throw diffsample::error(e.path + ": cannot open: file name too long");
  int fd = -1;
  {
    signals_blocked guard;  // the temporary exists only once it is registered
    int slot = -1;
    for (int i = 0; i < max_temporaries && slot < 0; ++i)
      if (!temporary_used[i]) slot = i;
    if (slot < 0) throw diffsample::error(e.path + ": too many outputs");
    std::memcpy(temporary_names[slot], pattern.c_str(), pattern.size() + 1);
    fd = ::mkstemp(temporary_names[slot]);
    if (fd < 0) throw diffsample::error(e.path + ": cannot open a temporary file: " + std::strerror(errno));
    temporary_used[slot] = 1;
    e.slot = slot;
    e.temporary = temporary_names[slot];
  }
  int err = 0;
  for (const auto& [data, size] : parts) {
    const char* p = static_cast<const char*>(data);
    std::size_t left = size;
    while (err == 0 && left > 0) {
      const ssize_t w = ::write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        err = w < 0 ? errno : EIO;
        break;
      }
      p += w;
      left -= std::size_t(w);
    }
  }
  if (err == 0) err = npy::match_replaced(fd, e.target);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    unlink_slot(e.slot);
    e.slot = -1;
    e.temporary.clear();
    throw diffsample::error(e.path + ": write failed: " + std::strerror(err));
  }
}

namespace {

// A second name for an existing target, made in its folder before the renames (a hard link, so that the target
// itself is never missing; where the file system has no hard links, the target is moved to it instead and put back
// by the rename that follows, or by the rollback). Empty when the target does not exist.
struct backup {
  std::string name;
  bool moved = false;  // the target was renamed to `name` (no hard link), not linked
};

backup make_backup(const std::string& path) {
  backup b;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return b;
    throw diffsample::error(path + ": cannot keep the previous file: " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) return b;  // a folder that appeared since the checks: the rename over it fails
  for (int attempt = 0;; ++attempt) {
    std::string name = npy::sibling_pattern(path, ".old.");
    if (name.size() >= PATH_MAX) throw diffsample::error(path + ": cannot keep the previous file: file name too long");
    const int fd = ::mkstemp(name.data());  // a unique name, then the link takes its place
    if (fd < 0) throw diffsample::error(path + ": cannot keep the previous file: " + std::strerror(errno));
    ::close(fd);
    ::unlink(name.c_str());
    if (::link(path.c_str(), name.c_str()) == 0) {
      b.name = name;
      return b;
    }
    if (errno == EEXIST && attempt < 16) continue;
    if (errno == EPERM || errno == EOPNOTSUPP || errno == EMLINK || errno == EXDEV) {
      if (::rename(path.c_str(), name.c_str()) == 0) {
        b.name = name;
        b.moved = true;
        return b;
      }
    }
    throw diffsample::error(path + ": cannot keep the previous file: " + std::strerror(errno));
  }
}

}  // namespace

void output_set::commit() {
  // Signals wait until every output is renamed or every target is back as it was.
  signals_blocked guard;
  output_thread = current_thread();
  std::vector<entry*> staged;
  for (auto& e : outputs_)
    if (e.slot >= 0) staged.push_back(&e);
  std::vector<backup> backups(staged.size());
  std::size_t renamed = 0;
  std::string failure;
  try {
    for (std::size_t i = 0; i < staged.size(); ++i) backups[i] = make_backup(staged[i]->target);
    for (; renamed < staged.size(); ++renamed) {
      entry& e = *staged[renamed];
      if (::rename(e.temporary.c_str(), e.target.c_str()) != 0)
        throw diffsample::error(e.path + ": cannot rename the temporary file over it: " + std::strerror(errno));
    }
  } catch (const diffsample::error& x) {
    failure = x.what();
  }
  if (failure.empty()) {
    std::vector<std::string> folders;
    for (std::size_t i = 0; i < staged.size(); ++i) {
      if (!backups[i].name.empty()) ::unlink(backups[i].name.c_str());
      temporary_used[staged[i]->slot] = 0;
      staged[i]->slot = -1;
      const std::string folder = folder_of(staged[i]->target);
      if (std::find(folders.begin(), folders.end(), folder) == folders.end()) folders.push_back(folder);
    }
    // The outputs' data were synced before the renames; the renames (and the backups' removal) are on the disk once
    // their folders are synced too: a power loss after the program ends then finds the new outputs, not the old.
    // Best effort (some file systems refuse fsync on a folder): the outputs are in place either way.
    for (const std::string& folder : folders) {
      const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) continue;
      (void)::fsync(fd);
      ::close(fd);
    }
    return;
  }
  // Put back every target renamed over (its previous file, or none), then drop the backups of the others; the
  // temporaries not renamed stay registered, and the destructor removes them.
  std::string kept;
  for (std::size_t i = 0; i < staged.size(); ++i) {
    const backup& b = backups[i];
    const std::string& path = staged[i]->target;
    if (i < renamed) {
      temporary_used[staged[i]->slot] = 0;
      staged[i]->slot = -1;
      const bool back = b.name.empty() ? ::unlink(path.c_str()) == 0 : ::rename(b.name.c_str(), path.c_str()) == 0;
      if (!back) kept += b.name.empty() ? "; " + path + " is new and could not be removed"
                                        : "; the previous " + path + " is kept as " + b.name;
    } else if (!b.name.empty()) {
      const bool back = b.moved ? ::rename(b.name.c_str(), path.c_str()) == 0 : ::unlink(b.name.c_str()) == 0;
      if (!back)
        kept += b.moved ? "; the previous " + path + " is kept as " + b.name
                        : "; " + b.name + ", a second name of " + path + ", could not be removed";
    }
  }
  throw diffsample::error(failure + (kept.empty() ? "; every output is left as it was" : kept));
}

void check_stdout() {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return;
  const int err = errno;
  std::clearerr(stdout);
  if (stdout_was_closed) throw input_error("standard output is closed: the results could not be printed");
  throw input_error(std::string("standard output: write failed: ") + std::strerror(err));
}

void guard_stdout() {
  if (::fcntl(1, F_GETFD) != -1 || errno != EBADF) return;
  stdout_was_closed = true;
  int fd = ::open("/dev/full", O_WRONLY);
  if (fd < 0) fd = ::open("/dev/null", O_WRONLY);
  if (fd >= 0 && fd != 1) {
    ::dup2(fd, 1);
    ::close(fd);
  }
}

void print_and_exit(const char* text) {
  std::fputs(text, stdout);
  try {
    check_stdout();
  } catch (const input_error& e) {
    std::fprintf(stderr, "diffsample: %s\n", e.what());
    std::exit(1);
  }
  std::exit(0);
}

}  // namespace diffsample::cli
