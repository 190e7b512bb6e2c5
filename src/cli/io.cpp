// The program's outputs for one subcommand run (io.hpp).
#include "cli/io.hpp"

#include <ctime>

#include "cli/npy.hpp"

namespace diffsample::cli {

void check_outputs(output_set& out, const options& o, const std::vector<std::string>& flags, const problem* file) {
  if (file)
    for (std::size_t i = 0; i < file->files.size(); ++i)
      out.add_input(file->files[i], i == 0 ? "problem file " + file->files[i] : "array file " + file->files[i]);
  for (const auto& f : flags)
    if (o.has(f)) out.add_output(f, o.get(f));
}

void stage_npy(output_set& out, const std::string& flag, const float* x, std::int64_t n, std::int64_t d) {
  const std::vector<unsigned char> header = npy::encode_header_f32(n, d);
  out.stage(flag, {{header.data(), header.size()}, {x, std::size_t(n * d) * sizeof(float)}});
}

void stage_text(output_set& out, const std::string& flag, const std::string& text) {
  out.stage(flag, {{text.data(), text.size()}});
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

}  // namespace diffsample::cli
