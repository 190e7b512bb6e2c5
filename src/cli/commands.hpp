// The subcommands of the diffsample program, one file each: sample.cpp (sample and the demo), solve.cpp, bench.cpp,
// info.cpp (info and version); binary.cpp holds sample on Bernoulli-mixture priors. main.cpp picks one.
#pragma once

namespace diffsample::cli {

/// `diffsample sample [options]`: sample a mixture prior with any sampler, score it against exact samples.
int run_sample(int argc, char** argv, int first);
/// `diffsample [demo] [options]`: the demo, `sample` with MALA on the built-in grid mixture and the demo's options.
int run_demo(int argc, char** argv, int first);
/// `diffsample bench [options]`: chain-steps/s of ULA, MALA, DDPM, DDIM and ODE-Heun at d = 2, 10, 100.
int run_bench(int argc, char** argv, int first);
/// `diffsample solve --problem FILE [options]`: the exact posterior of a problem file, and exact samples of it.
int run_solve(int argc, char** argv, int first);
/// `diffsample info`: the executors, GPU, driver and runtime of this machine.
int run_info(int argc, char** argv, int first);
/// `diffsample version` (also `--version`, `-V`): "diffsample X.Y.Z", the library's version() (CMake's project
/// VERSION).
int run_version(int argc, char** argv, int first);

}  // namespace diffsample::cli
