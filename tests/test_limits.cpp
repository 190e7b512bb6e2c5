// The limits' values where a text states them: the C header gives each limit it names as a number beside the
// constant's name ("1..2^24 (diffsample::limits::max_steps)"), and that number must be the constant's value.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include <diffsample/limits.hpp>

namespace {

#define DS_LIMIT(name) {#name, diffsample::limits::name},
const std::map<std::string, std::int64_t> constants = {
    DS_LIMIT(max_dim) DS_LIMIT(max_components) DS_LIMIT(max_guided_problems) DS_LIMIT(max_guided_d_y)
    DS_LIMIT(max_posterior_d_y) DS_LIMIT(max_posterior_values) DS_LIMIT(max_operator_values) DS_LIMIT(max_steps)
    DS_LIMIT(max_particles) DS_LIMIT(max_inner_steps) DS_LIMIT(max_gemm_tile) DS_LIMIT(max_grid)
    DS_LIMIT(max_dcps_gradient_steps) DS_LIMIT(max_skrock_stages) DS_LIMIT(max_lattice_entries)
    DS_LIMIT(max_first_chain) DS_LIMIT(max_stream_steps) DS_LIMIT(max_items) DS_LIMIT(max_host_bytes)
    DS_LIMIT(max_int_count)};
#undef DS_LIMIT

/// The value of a number as the header writes it: "1024" or "2^24".
std::int64_t value_of(const std::string& token) {
  const auto caret = token.find('^');
  if (caret == std::string::npos) return std::stoll(token);
  return std::int64_t(1) << std::stoi(token.substr(caret + 1));
}

TEST(Limits, TheCHeaderStatesTheValueOfEveryLimitItNames) {
  std::ifstream in(DIFFSAMPLE_SOURCE_DIR "/include/diffsample/diffsample.h");
  ASSERT_TRUE(in) << "cannot read include/diffsample/diffsample.h";
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::regex mention("diffsample::limits::([a-z_0-9]+)"), number("2\\^[0-9]+|[0-9]+");
  int checked = 0;
  for (auto m = std::sregex_iterator(text.begin(), text.end(), mention); m != std::sregex_iterator(); ++m) {
    const std::string name = (*m)[1];
    ASSERT_EQ(constants.count(name), 1u) << name << ": not a constant of <diffsample/limits.hpp>";
    // The number the header gives is the last one before the name, in the same comment.
    const std::size_t at = static_cast<std::size_t>(m->position(0));
    const std::size_t from = at > 80 ? at - 80 : 0;
    std::string before = text.substr(from, at - from);
    const auto open = before.rfind("/**");
    if (open != std::string::npos) before = before.substr(open);
    std::string last;
    for (auto n = std::sregex_iterator(before.begin(), before.end(), number); n != std::sregex_iterator(); ++n)
      last = n->str();
    ASSERT_FALSE(last.empty()) << name << ": no value beside it in \"" << before << "\"";
    EXPECT_EQ(value_of(last), constants.at(name)) << name << " is stated as " << last << " in \"" << before << "\"";
    ++checked;
  }
  EXPECT_GE(checked, 9) << "the C header names fewer limits than it did";
}

}  // namespace
