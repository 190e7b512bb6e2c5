// Progress lines of the diffsample program (progress.hpp).
#include "cli/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace diffsample::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

bool progress_wanted(bool quiet) { return !quiet && isatty(STDERR_FILENO); }

progress::progress(std::int64_t total, std::string unit, double per_unit, std::string rate_unit, bool quiet)
    : total_(total), unit_(std::move(unit)), rate_unit_(std::move(rate_unit)), per_unit_(per_unit),
      on_(progress_wanted(quiet)), start_(std::chrono::steady_clock::now()) {}

void progress::update(std::int64_t done) {
  if (!on_) return;
  const double elapsed = seconds_since(start_);
  const double rate = elapsed > 0 ? double(done) * per_unit_ / elapsed : 0;
  const double left = done > 0 ? elapsed * double(total_ - done) / double(done) : 0;
  std::fprintf(stderr, "\r  %s %lld/%lld  %.3g %s  %.1f s left   ", unit_.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), rate, rate_unit_.c_str(), left);
  if (done == total_) std::fputc('\n', stderr);
  std::fflush(stderr);
}

ticker::ticker(std::string label, bool quiet)
    : label_(std::move(label)), on_(progress_wanted(quiet)), start_(std::chrono::steady_clock::now()) {
  if (!on_) return;
  draw(0, false);
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_; }))
      draw(seconds_since(start_), false);
  });
}

ticker::~ticker() { finish(); }

void ticker::finish() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  draw(seconds_since(start_), true);
}

void ticker::draw(double seconds, bool last) {
  std::fprintf(stderr, "\r  %s, %.1f s %s   %s", label_.c_str(), seconds, last ? "in all" : "elapsed",
               last ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace diffsample::cli
