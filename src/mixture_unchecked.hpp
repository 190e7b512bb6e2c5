// The unchecked layer of gaussian_mixture's evaluate() (direct path) and denoiser_jvp(): the same work on a resolved
// executor without the argument checks, for library callers that validated their inputs once per call and run these
// once per transition (the guided samplers' stepwise DPS / Pi-GDM run on the CPU executor).
#pragma once

#include <cstdint>

#include <diffsample/execution.hpp>
#include <diffsample/mixture.hpp>

namespace diffsample::detail {

struct mixture_storage;

/// evaluate(what, ...) on the direct path; exec.kind is cpu or cuda, never automatic.
void evaluate_direct_unchecked(const mixture_storage& mix, quantity what, const float* x, std::int64_t n, channel ch,
                               float* out, execution exec);

/// denoiser_jvp(); exec.kind is cpu or cuda, never automatic.
void denoiser_jvp_unchecked(const mixture_storage& mix, const float* x, const float* v, std::int64_t n, channel ch,
                            float* out, execution exec);

}  // namespace diffsample::detail
