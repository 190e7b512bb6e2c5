// The program's outputs for one subcommand run: checked before the run (check_outputs), staged after it (.npy
// samples, SVG and JSON text), then committed all or none (output_set, cli/output.hpp). .npy files are read and
// written by cli/npy.hpp; problem files are read by cli/problem.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/output.hpp"
#include "cli/problem.hpp"

namespace diffsample::cli {

/// Checks the outputs named by @p flags before any work: none may name an input file of @p file or another output
/// (by file identity), their folders must be writable, and an existing target must be a regular file.
void check_outputs(output_set& out, const options& o, const std::vector<std::string>& flags,
                   const problem* file = nullptr);

/// Stages a float32 n x d .npy image for the output of @p flag (header and data written straight from @p x).
void stage_npy(output_set& out, const std::string& flag, const float* x, std::int64_t n, std::int64_t d);

/// Stages @p text for the output of @p flag.
void stage_text(output_set& out, const std::string& flag, const std::string& text);

/// The current time as "YYYY-MM-DDTHH:MM:SSZ" (the reports' "date").
std::string utc_now();

}  // namespace diffsample::cli
