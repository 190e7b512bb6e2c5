// The argument checks of langevin() and diffusion(), the workspace's aside, as functions of their own: the MPI
// library runs them on every rank and agrees on the result before any rank runs its chains, so that a bad buffer on
// one rank leaves every rank's buffers as they were; and the refusal of a capturing stream that every distributed
// call on a CUDA rank makes in the same agreement (exported for libdiffsample_mpi; not part of the public API).
#pragma once

#include <cstdint>

#include <diffsample/diffusion.hpp>
#include <diffsample/export.hpp>
#include <diffsample/langevin.hpp>

namespace diffsample::detail {

/// What langevin(mixture, x, outputs, n, options, exec) checks before it runs anything, but its workspace: the
/// mixture, n and the options, then x and the outputs on the executor exec resolves to (null, alignment, reach,
/// sizes, overlaps). Returns the executor the call runs on. @throws invalid_argument as langevin() does
DIFFSAMPLE_API executor check_langevin_arguments(const gaussian_mixture& mixture, const float* x,
                                                 const langevin_outputs& outputs, std::int64_t n,
                                                 const langevin_options& options, execution exec);

/// What diffusion(mixture, x, outputs, n, options, exec) checks before it runs anything, but its workspace.
/// Returns the executor the call runs on. @throws invalid_argument as diffusion() does
DIFFSAMPLE_API executor check_diffusion_arguments(const gaussian_mixture& mixture, const float* x,
                                                  const diffusion_outputs& outputs, std::int64_t n,
                                                  const diffusion_options& options, execution exec);

/// For the calls of libdiffsample_mpi, which on a CUDA rank synchronise exec.stream (each waits for this rank's run,
/// so that a failure of its kernels is agreed on by every rank, and the global filter at every exchange), which a
/// CUDA graph capture cannot record (cudaStreamSynchronize on a capturing stream fails and invalidates the capture).
/// When @p where is the CUDA executor and exec.stream (the legacy default stream when null) is being captured, throws
/// invalid_argument "exec.stream: is being captured into a CUDA graph, and <call_does>, which a capture cannot
/// record: run it outside the capture (a distributed run cannot be captured)" (the words of every capture refusal of
/// the library). Asks the runtime nothing on the CPU executor. Called with the executor the checks above (or
/// check_guided_outputs()) resolved, inside the agreement that precedes any rank's run, so that every rank throws
/// the capturing rank's error and nothing has been issued.
DIFFSAMPLE_API void refuse_distributed_capture(executor where, execution exec, const char* call_does);

}  // namespace diffsample::detail
