// The settings a guided run resolves from its automatic choices (internal; exported for the program, src/cli/solve.cpp,
// which refuses a flag the resolved run does not read).
#pragma once

#include <diffsample/export.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/mixture.hpp>

namespace diffsample::detail {

/// @p options as the run resolves them, after guided_sample()'s validation of @p problems and @p options for
/// @p prior: potentials automatic resolved (twisted with start_correction and multistep_kernel, or linear),
/// final_moves -1 resolved (automatic_final_moves or 0), the grid's times in the schedule. @p distributed: as the
/// global distributed filter (mpi::guided_sample, smc_mode::global) resolves them, alike (each rank moves its own
/// rows of the samples); else as guided_sample() does (with outputs.samples: the final moves act on the samples).
/// @throws invalid_argument as guided_sample() does
DIFFSAMPLE_API guided_options resolved_guided_options(const gaussian_mixture& prior, const guided_problems& problems,
                                                      const guided_options& options, bool distributed);

}  // namespace diffsample::detail
