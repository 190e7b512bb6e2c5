// The per-pack cores of the CPU executor's batched mixture calls on one dispatch target (DS_SIMD_TARGET, see
// src/cpu/simd.hpp): run_evaluate (src/cpu/chains.cpp) and run_denoiser_jvp (src/cpu/guided.cpp) call them pack by
// pack, and so do the fused stepwise runs (run_stepwise), so that both run the same machine code on a pack (the cores
// are not inlined into either caller) and a fused run reproduces the batched calls bit for bit.
#pragma once

#include <cstdint>

#include "kernels/mixture.cuh"
#include "src/cpu/simd.hpp"

namespace diffsample::cpu::DS_SIMD_NS {

/// The mixture's score (what 1), denoiser (2) or log-density (0) at channel c for rows i0 .. i0 + valid - 1 of x
/// (row-major, dimension d) into the same rows of out (log-density: out[i]).
void evaluate_rows(const kernels::channel_view& c, int what, const float* x, float* out, std::int64_t i0, int valid,
                   std::int64_t d);

/// evaluate_rows's core on a pack already in packs: the score (what 1) or denoiser (2) at channel c of the d packs
/// xs into the d packs os, or the log-density (0) into *log_p (os then scratch). The fused runs that keep their
/// particles in packs across asks call it directly: one machine code for both.
void evaluate_packs(const kernels::channel_view& c, int what, const fpack* xs, fpack* os, fpack* log_p, int d);

/// out_i = J(x_i) v_i at channel c for rows i0 .. i0 + valid - 1 (row-major, dimension d).
void denoiser_jvp_rows(const kernels::channel_view& c, const float* x, const float* v, float* out, std::int64_t i0,
                       int valid, int d);

/// denoiser_jvp_rows's core on a pack already in packs: os = J(xs) vs at channel c (d packs each; os may not alias
/// xs or vs); scratch: jvp_scratch_packs(d, c) packs.
void denoiser_jvp_packs(const kernels::channel_view& c, const fpack* xs, const fpack* vs, fpack* os, fpack* scratch,
                        int d);
/// The scratch of denoiser_jvp_packs, in packs.
std::int64_t jvp_scratch_packs(int d, const kernels::channel_view& c);

}  // namespace diffsample::cpu::DS_SIMD_NS
