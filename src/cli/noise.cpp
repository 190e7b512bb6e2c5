// The program's noised references (score.hpp noise_to, flipped_sums): normals and uniforms from the library's counter-based Philox stream, not
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

std::vector<float> flipped_sums(const std::vector<float>& x, std::int64_t d, double flip, std::int64_t measurements,
                                std::uint64_t seed) {
  std::vector<float> u(x.size(), 0.f);
  const std::int64_t rows = d > 0 ? static_cast<std::int64_t>(x.size()) / d : 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t r = 0; r < measurements; ++r) {
      kernels::philox_stream rng(seed, static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(r));
      for (std::int64_t j = 0; j < d; ++j) {
        // A 53-bit uniform in [0, 1) from two outputs: coordinate j flips when it is below the probability.
        const std::uint64_t hi = rng.bits(), lo = rng.bits();
        const double uniform = double((hi << 21) | (lo >> 11)) * 0x1p-53;
        const std::size_t k = static_cast<std::size_t>(i * d + j);
        u[k] += uniform < flip ? -x[k] : x[k];
      }
    }
  }
  return u;
}

}  // namespace diffsample::cli
