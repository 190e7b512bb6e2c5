// `diffsample bench`: throughput (chain-steps/s) of ULA, MALA, DDPM, DDIM and ODE-Heun on the grid mixture at
// several dimensions, through the program's runner.
#include <algorithm>
#include <cstdio>

#include <diffsample/diffsample.hpp>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "cli/io.hpp"
#include "cli/runner.hpp"
#include "cli/score.hpp"

namespace diffsample::cli {
namespace {

const char* bench_usage =
    "usage: diffsample bench [options]\n"
    "Throughput (chain-steps/s) of ULA, MALA, DDPM, DDIM and ODE-Heun on the 25-component grid mixture at\n"
    "d = 2, 10 and 100, after one warm-up call each.\n"
    "  --chains N              chains per run (default 2^20 on a GPU, 4096 on the CPU)\n"
    "  --steps N               steps per run (default 100 on a GPU, 20 on the CPU)\n"
    "  --dims LIST             comma-separated dimensions (default 2,10,100)\n"
    "  --seed S                random seed (default 1)\n"
    "  --executor auto|cuda|cpu  where to run (default auto)\n"
    "  --report FILE.json      also write the table as JSON\n"
    "Exit status: 0 success, 1 failed run, 2 bad command line.\n";

}  // namespace

int run_bench(int argc, char** argv, int first) {
  const options o = parse_options(argc, argv, first, bench_usage,
                                  {"--chains", "--steps", "--dims", "--seed", "--executor", "--report"}, {});
  output_set outputs;
  check_outputs(outputs, o, {"--report"});
  const executor where =
      resolve(parse_flag("--executor", o.has("--executor") ? o.get("--executor") : "auto", parse_executor));
  const bool gpu = where == executor::cuda;
  const std::int64_t n = o.has("--chains") ? to_int("--chains", o.get("--chains"), 1) : (gpu ? 1 << 20 : 4096);
  const std::int64_t steps = o.has("--steps") ? to_steps(o.get("--steps"), 1) : (gpu ? 100 : 20);
  const std::uint64_t seed = o.has("--seed") ? to_seed(o.get("--seed")) : 1;
  std::vector<std::int64_t> dims;
  {
    const std::string list = o.has("--dims") ? o.get("--dims") : "2,10,100";
    if (list.empty()) throw usage_error("--dims: expected a comma-separated list of dimensions");
    // Every item between commas, the last one included (getline dropped an empty last item: "2," ran d = 2).
    for (std::size_t start = 0;;) {
      const std::size_t comma = list.find(',', start);
      dims.push_back(to_int("--dims", list.substr(start, comma == std::string::npos ? comma : comma - start), 1));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  for (auto d : dims) (void)grid_prior(d, 5, 2.0, 0.25, {}, "--dims");  // every dimension before the first run
  for (auto d : dims) check_memory(n, d, 2, "--chains", o.has("--chains"));

  std::printf("diffsample bench: 25-component grid mixture, %lld chains x %lld steps, executor %s\n",
              static_cast<long long>(n), static_cast<long long>(steps), executor_text(where).c_str());
  const std::vector<std::string> samplers{"ula", "mala", "ddpm", "ddim", "ode_heun"};
  std::printf("%6s", "d");
  for (const auto& name : samplers) std::printf(" %12s", name.c_str());
  std::printf("   (chain-steps/s)\n");
  std::fflush(stdout);
  json rows = json::array();
  for (const auto d : dims) {
    const prior_spec p = grid_prior(d, 5, 2.0, 0.25);
    const gaussian_mixture target(d, p.weights, p.means, p.variances);
    std::printf("%6lld", static_cast<long long>(d));
    json row;
    row["dim"] = d;
    for (const auto& name : samplers) {
      run_settings s;
      s.sampler = name;
      s.exec = where;
      s.seed = seed;
      s.steps = 1;
      run_sampler(target, s, std::min<std::int64_t>(n, 4096));  // warm-up
      s.steps = steps;
      const run_result r = run_sampler(target, s, n);
      const double rate = r.seconds > 0 ? double(n) * double(r.total_steps) / r.seconds : 0.0;
      std::printf(" %12.4g", rate);
      std::fflush(stdout);
      row[name] = rate;
    }
    std::printf("\n");
    rows.push_back(row);
  }
  if (o.has("--report")) {
    json j = report_head("bench");
    j["executor"] = to_string(where);
    if (!gpu) j["cpu_threads"] = cpu_threads();
    j["chains"] = n;
    j["steps"] = steps;
    j["seed"] = seed;
    j["unit"] = "chain-steps per second";
    j["rows"] = rows;
    check_stdout();
    stage_text(outputs, "--report", j.dump(2) + "\n");
    outputs.commit();
  }
  return 0;
}

}  // namespace diffsample::cli
