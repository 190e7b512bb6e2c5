// Progress lines of the diffsample program on stderr, redrawn in place with a carriage return. They appear only
// when stderr is a terminal and the run is not --quiet: a redirected or piped stderr, as in scripts and tests,
// gets nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace diffsample::cli {

/// True when progress lines are drawn: not @p quiet and stderr is a terminal.
bool progress_wanted(bool quiet);

/// A determinate progress line for work done in chunks: "  step 300/1000  2.61e+06 chain-steps/s  3.1 s left".
class progress {
 public:
  /// @p total units named @p unit ("step", "chains"), each worth @p per_unit items of the rate @p rate_unit
  /// ("chain-steps/s", "chains/s").
  progress(std::int64_t total, std::string unit, double per_unit, std::string rate_unit, bool quiet);
  /// Whether the line is drawn (see progress_wanted).
  bool on() const { return on_; }
  /// Redraws the line after @p done units; ends it with a newline when done == total.
  void update(std::int64_t done);

 private:
  std::int64_t total_;
  std::string unit_, rate_unit_;
  double per_unit_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

/// An indeterminate progress line for one library call that cannot be split: "  smc: 4096 particles x 100 steps,
/// 12.5 s elapsed", redrawn from a thread every 0.2 s from construction until finish() (or destruction), which
/// ends the line.
class ticker {
 public:
  ticker(std::string label, bool quiet);
  ~ticker();
  ticker(const ticker&) = delete;
  ticker& operator=(const ticker&) = delete;
  bool on() const { return on_; }
  void finish();

 private:
  void draw(double seconds, bool last);
  std::string label_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace diffsample::cli
