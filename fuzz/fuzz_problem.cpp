// libFuzzer harness of the problem-file reader (scripts/fuzz.sh builds and runs it). Every input must either parse
// or be refused with cli::input_error whose message is one line starting with the file name; a parsed prior must
// be accepted by the library's gaussian_mixture (the reader's checks are not weaker than the library's). .npy file
// names inside the JSON are refused rather than read (parse_problem with read_files = false): the .npy reader has
// its own harness, fuzz/fuzz_npy.cpp.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <diffsample/mixture.hpp>

#include "src/cli/problem.hpp"

namespace cli = diffsample::cli;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const cli::problem p = cli::parse_problem(text, "fuzz.json", /*read_files=*/false);
    if (p.prior) {
      const cli::prior_spec& s = *p.prior;
      const diffsample::gaussian_mixture m(s.dim, s.weights, s.means, s.variances);
      if (m.dim() != s.dim) std::abort();
    }
    if (p.observation && (p.observation->d_x != p.prior->dim ||
                          p.observation->A.size() != std::size_t(p.observation->d_y * p.observation->d_x) ||
                          p.observation->y.size() != std::size_t(p.observation->d_y)))
      std::abort();
  } catch (const cli::input_error& e) {
    const std::string message = e.what();
    if (message.rfind("fuzz.json: ", 0) != 0 || message.find('\n') != std::string::npos) std::abort();
  }
  return 0;
}
