// Subcommands of the diffsample program other than the demo and info: sample, bench and solve.
#pragma once

#include <cstdint>
#include <string>

namespace diffsample::cli {

/// Refuses n x d float buffers (times @p copies) that do not fit in the machine's memory, before allocating
/// (input_error naming @p what; computed in long double, so no product overflows).
void check_memory(std::int64_t n, std::int64_t d, int copies, const std::string& what);

/// `diffsample sample [options]`: sample a mixture prior with any sampler, score it against exact samples.
int run_sample(int argc, char** argv, int first);
/// `diffsample bench [options]`: chain-steps/s of ULA, MALA, DDPM, DDIM and ODE-Heun at d = 2, 10, 100.
int run_bench(int argc, char** argv, int first);
/// `diffsample solve --problem FILE [options]`: the exact posterior of a problem file, and exact samples of it.
int run_solve(int argc, char** argv, int first);

}  // namespace diffsample::cli
