// The C ABI of the sample metrics: the sliced Wasserstein distance between two point sets.
#include "src/c_api/common.hpp"

using namespace diffsample::c_api;

extern "C" {

ds_status ds_sliced_wasserstein(const float* a, int64_t n_a, const float* b, int64_t n_b, int64_t d, int directions,
                                uint64_t seed, int p, double* out) {
  return guard([&] {
    require_out("out", out);
    *out = ds::sliced_wasserstein(a, n_a, b, n_b, d, directions, seed, p);
  });
}

}  // extern "C"
