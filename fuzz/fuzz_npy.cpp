// libFuzzer harness of the .npy reader (scripts/fuzz.sh builds and runs it). Every input must either decode or be
// refused with diffsample::invalid_argument; a decoded 2-D array must survive an encode/decode round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "src/cli/npy.hpp"
#include <diffsample/error.hpp>

namespace npy = diffsample::npy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto d = npy::decode_f64(data, size, "input");
    const auto f = npy::decode_f32(data, size, "input");  // may still refuse: values beyond float32 range
    if (f.values.size() != d.values.size() || f.rows != d.rows || f.cols != d.cols) std::abort();
    const auto image = npy::encode_f32(f.values.data(), f.rows, f.cols);
    const auto back = npy::decode_f32(image.data(), image.size(), "round trip");
    if (back.rows != f.rows || back.cols != f.cols || back.ndim != 2) std::abort();
    if (!f.values.empty() && std::memcmp(back.values.data(), f.values.data(), f.values.size() * sizeof(float)) != 0)
      std::abort();
  } catch (const diffsample::invalid_argument&) {
  }
  return 0;
}
