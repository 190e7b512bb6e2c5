// SKRock's chains on the CPU executor's packs of particles (src/cpu/guided.cpp), declared apart from
// src/cpu/chains.hpp so that only SKRock's launch includes it.
#pragma once

#include <cstdint>

#include "kernels/guided_skrock.cuh"
#include "kernels/mixture.cuh"
#include "src/cpu/chains.hpp"

namespace diffsample::cpu {

/// SKRock's chains (kernels::guided_skrock_functor) over packs of particles of one problem, into x (B N x d): each
/// particle's exact prior draw by the scalar functor's code, then the iterations lane by lane with the prior's score
/// from `channel` (the mixture's constants at channel (1, 0)). The same guarantees as guided_pass.
void run_guided_skrock(simd_target t, const kernels::guided_params& p, const kernels::skrock_params& q,
                       const kernels::channel_view& channel, std::int64_t iterations, float* x);

namespace simd_sse2 {
void run_guided_skrock(const kernels::guided_params& p, const kernels::skrock_params& q,
                       const kernels::channel_view& channel, std::int64_t iterations, float* x);
}
namespace simd_avx2 {
void run_guided_skrock(const kernels::guided_params& p, const kernels::skrock_params& q,
                       const kernels::channel_view& channel, std::int64_t iterations, float* x);
}
namespace simd_avx512 {
void run_guided_skrock(const kernels::guided_params& p, const kernels::skrock_params& q,
                       const kernels::channel_view& channel, std::int64_t iterations, float* x);
}

}  // namespace diffsample::cpu
