// The argument checks of langevin() and diffusion(), the workspace's aside, as functions of their own: the MPI
// library runs them on every rank and agrees on the result before any rank runs its chains, so that a bad buffer on
// one rank leaves every rank's buffers as they were (exported for libdiffsample_mpi; not part of the public API).
#pragma once

#include <cstdint>

#include <diffsample/diffusion.hpp>
#include <diffsample/export.hpp>
#include <diffsample/langevin.hpp>

namespace diffsample::detail {

/// What langevin(mixture, x, outputs, n, options, exec) checks before it runs anything, but its workspace: the
/// mixture, n and the options, then x and the outputs on the executor exec resolves to (null, alignment, reach,
/// sizes, overlaps). @throws invalid_argument as langevin() does
DIFFSAMPLE_API void check_langevin_arguments(const gaussian_mixture& mixture, const float* x,
                                             const langevin_outputs& outputs, std::int64_t n,
                                             const langevin_options& options, execution exec);

/// What diffusion(mixture, x, outputs, n, options, exec) checks before it runs anything, but its workspace.
/// @throws invalid_argument as diffusion() does
DIFFSAMPLE_API void check_diffusion_arguments(const gaussian_mixture& mixture, const float* x,
                                              const diffusion_outputs& outputs, std::int64_t n,
                                              const diffusion_options& options, execution exec);

}  // namespace diffsample::detail
