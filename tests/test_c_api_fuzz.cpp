// Replays the inputs kept by `scripts/fuzz.sh c_api` (tests/data/fuzz-c-api/: the minimised corpus and any input
// that once crashed) through the same harness, fuzz/fuzz_c_api.cpp, here without sanitizers: every input must run
// to the end (the harness aborts on an unknown status, a missing or stray message, or a non-finite evidence).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_c_api.cpp"

TEST(CApiFuzzRegressions, KeptInputsRunCleanly) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(DIFFSAMPLE_TEST_DATA_DIR) / "fuzz-c-api";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename() == "README.md") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().filename().string());
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()), 0);
    ++files;
  }
  EXPECT_GT(files, 0);
}

namespace {

/// @p count doubles that end where an unreadable page begins: a read past them faults.
class guarded_doubles {
 public:
  explicit guarded_doubles(std::size_t count) : page_(std::size_t(sysconf(_SC_PAGESIZE))) {
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<char*>(p);
    if (mprotect(base_ + page_, page_, PROT_NONE) != 0) return;
    values_ = reinterpret_cast<double*>(base_ + page_) - count;
    for (std::size_t i = 0; i < count; ++i) values_[i] = double(i) / double(count);
  }
  ~guarded_doubles() {
    if (base_ != nullptr) munmap(base_, 2 * page_);
  }
  guarded_doubles(const guarded_doubles&) = delete;
  guarded_doubles& operator=(const guarded_doubles&) = delete;
  const double* get() const { return values_; }

 private:
  std::size_t page_;
  char* base_ = nullptr;
  double* values_ = nullptr;
};

}  // namespace

// Found by the harness's schedule inputs under AddressSanitizer (scripts/fuzz.sh c_api): a schedule's custom times
// were copied with the caller's times_count whenever the step count was outside 1..limits::max_steps, since no count
// could then be checked against steps + 1; the step count was refused only after the copy, which read past the
// caller's array. A step count outside the limits with times is now refused naming it, before the times are read
// (here 2 times before an unreadable page, and a count of 600: the copy faulted before the fix).
TEST(CApiFuzzRegressions, ScheduleTimesAreNotReadForAStepCountOutsideTheLimits) {
  const guarded_doubles times(2);
  ASSERT_NE(times.get(), nullptr);
  ds_schedule s;
  ASSERT_EQ(ds_schedule_init(&s, sizeof s, DS_SCHEDULE_VP_LINEAR), DS_SUCCESS);
  s.grid = DS_TIME_GRID_CUSTOM;
  s.times = times.get();
  s.times_count = 600;
  ds_schedule_point points[2];
  for (std::int64_t steps : {std::int64_t(0), std::int64_t(-3), (std::int64_t(1) << 24) + 1}) {
    SCOPED_TRACE(steps);
    EXPECT_EQ(ds_schedule_points(&s, steps, points), DS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(ds_last_error()).find("steps = " + std::to_string(steps)), std::string::npos)
        << ds_last_error();
  }

  const double w[1] = {1}, mu[1] = {0}, var[1] = {1};
  ds_mixture* m = nullptr;
  ASSERT_EQ(ds_mixture_create(1, 1, w, mu, var, 1, &m), DS_SUCCESS);
  const ds_execution cpu = {DS_EXECUTOR_CPU, nullptr};
  float x[4] = {};
  ds_diffusion_options d;
  ASSERT_EQ(ds_diffusion_options_init(&d, sizeof d), DS_SUCCESS);
  d.schedule = s;
  d.steps = 0;
  EXPECT_EQ(ds_diffusion(m, x, 4, &d, nullptr, cpu, nullptr, 0, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("options.steps = 0"), std::string::npos) << ds_last_error();

  const double A[1] = {1}, y[1] = {0.5}, sigma_y[1] = {0.3};
  ds_guided_problems gp;
  ASSERT_EQ(ds_guided_problems_init(&gp, sizeof gp), DS_SUCCESS);
  gp.A = A;
  gp.A_count = 1;
  gp.y = y;
  gp.sigma_y = sigma_y;
  gp.sigma_y_count = 1;
  ds_guided_options go;
  ASSERT_EQ(ds_guided_options_init(&go, sizeof go), DS_SUCCESS);
  go.schedule = s;
  go.steps = -1;
  size_t bytes = 0;
  EXPECT_EQ(ds_guided_workspace_bytes(m, &gp, &go, &bytes), DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("options.steps = -1"), std::string::npos) << ds_last_error();
  ds_mixture_destroy(m);
}
