// DiffPIR's launch (kernels/guided_diffpir.cuh); its tables are built by src/guided.cu.
#include "kernels/guided_diffpir.cuh"
#include "src/guided_samplers.hpp"
#include "src/launch.hpp"

namespace diffsample::detail {

void launch_diffpir(executor where, std::int64_t particles_total, const kernels::guided_params& p,
                    std::int64_t steps, float* x, float* work, float* r, cudaStream_t stream) {
  kernels::for_each_index_scratch<128>(where, particles_total, kernels::guided_diffpir_functor{p, steps, x, work, r},
                                       stream);
}

}  // namespace diffsample::detail
