// `diffsample sample` on a Bernoulli-mixture prior with the discrete samplers (src/cli/binary.cpp).
#pragma once

#include <string>

namespace diffsample::cli {

/// True for the names of the discrete samplers: discrete_langevin, discrete_walk_jump.
bool is_binary_sampler(const std::string& name);
/// True when a `sample` command line asks for a discrete sampler or names a problem file with a Bernoulli-mixture
/// prior: run_sample then hands the whole command line to run_sample_binary.
bool wants_binary_sample(int argc, char** argv, int first);
/// `diffsample sample` for binary data (usage: `diffsample sample --sampler discrete_walk_jump --help`).
int run_sample_binary(int argc, char** argv, int first);

}  // namespace diffsample::cli
