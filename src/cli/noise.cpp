// The program's noised references (score.hpp noise_to): normals from the library's counter-based Philox stream, not
// a standard-library distribution (std::normal_distribution's output is implementation-defined, so the reference and
// every score against it changed with the C++ standard library).
#include "cli/score.hpp"

#include "kernels/rng.cuh"

namespace diffsample::cli {

void noise_to(std::vector<float>& x, std::int64_t d, channel ch, std::uint64_t seed) {
  const std::int64_t rows = d > 0 ? static_cast<std::int64_t>(x.size()) / d : 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    float* row = x.data() + i * d;
    kernels::philox_stream rng(seed, static_cast<std::uint64_t>(i), 0);
    rng.normals(static_cast<int>(d), [&](int j, float z) { row[j] = float(ch.a * double(row[j]) + ch.s * double(z)); });
  }
}

}  // namespace diffsample::cli
