// Replays the inputs kept by `scripts/fuzz.sh c_api` (tests/data/fuzz-c-api/: the minimised corpus and any input
// that once crashed) through the same harness, fuzz/fuzz_c_api.cpp, here without sanitizers: every input must run
// to the end (the harness aborts on an unknown status, a missing or stray message, or a non-finite evidence).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_c_api.cpp"

TEST(CApiFuzzRegressions, KeptInputsRunCleanly) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(__FILE__).parent_path() / "data" / "fuzz-c-api";
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
