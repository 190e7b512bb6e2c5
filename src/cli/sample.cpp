// `diffsample sample`: a Gaussian-mixture prior (the built-in grid or a problem file's) sampled with any sampler
// of the library, scored against exact samples; and the demo, which is `sample` with the demo's defaults and
// options. Bernoulli-mixture priors go to cli/binary.cpp.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <diffsample/diffsample.hpp>

#include "cli/args.hpp"
#include "cli/binary.hpp"
#include "cli/commands.hpp"
#include "cli/io.hpp"
#include "cli/plot.hpp"
#include "cli/distributed.hpp"
#include "cli/runner.hpp"
#include "cli/score.hpp"

namespace diffsample::cli {
namespace {

const char* sample_usage =
    "usage: diffsample sample [options]\n"
    "Samples a Gaussian-mixture prior with any sampler of the library and scores the samples against exact ones.\n"
    "\n"
    "prior (built-in grid mixture unless --problem gives one):\n"
    "  --problem FILE.json     problem file: prior and sampler settings (schema in README); options override it\n"
    "  --dim D                 dimension of the grid mixture (default 2)\n"
    "  --grid G                G x G grid of means (default 5: 25 components, the demo's weights)\n"
    "  --spacing S             distance between neighbouring means (default 2)\n"
    "  --variance V            isotropic component variance (default 0.25)\n"
    "sampler:\n"
    "  --sampler NAME          ula, mala, tamed_ula (Langevin from N(mean, var) of the prior); ddpm, ddim,\n"
    "                          reverse_sde, ode_euler, ode_heun, stochastic_localization, walk_jump,\n"
    "                          sequential_measurements (default mala); discrete_langevin, discrete_walk_jump for\n"
    "                          a Bernoulli-mixture prior (options: diffsample sample --sampler discrete_langevin -h)\n"
    "  --steps N               steps (default 1000 for Langevin, 100 otherwise; per measurement for SMS)\n"
    "  --chains N              chains (default 2^20 on a GPU, 16384 on the CPU)\n"
    "  --schedule NAME         vp_linear, vp_cosine, vp_table (file only), variance_exploding,\n"
    "                          ornstein_uhlenbeck, linear_interpolant, stochastic_localization\n"
    "                          (default vp_linear; stochastic_localization for that sampler)\n"
    "  --time-grid NAME        uniform, quadratic, geometric (default: the schedule's)\n"
    "  --t-start T, --t-end T  ends of the time grid (default: the schedule's)\n"
    "  --eta E                 DDIM stochasticity in [0, 1] (default 0)\n"
    "  --sigma S               walk_jump and SMS measurement noise (default 1)\n"
    "  --step-size G           Langevin, walk_jump and SMS step size (default 0.03 Langevin, 0.1 otherwise)\n"
    "  --measurements M        SMS measurements (default 4)\n"
    "  --final-denoise         diffusion samplers: output the denoiser at the last channel\n"
    "  --seed S                random seed (default 1)\n"
    "  --executor auto|cuda|cpu  where to run (default auto)\n"
    "output:\n"
    "  --out FILE.npy          write the samples (float32, N x d)\n"
    "  --report FILE.json      write the JSON report (settings, executor, timings, accuracy)\n"
    "  --plot FILE.svg         write an SVG of the first two coordinates over exact samples\n"
    "  --quiet                 print nothing on success (and no progress line)\n"
    "A progress line (chains done, chains/s, time left) is drawn on stderr when it is a terminal; the chains then\n"
    "run in 20 chunks (DIFFSAMPLE_CHUNKS=K sets K), which changes no sample.\n"
    "Exit status: 0 success, 1 bad input or failed run, 2 bad command line.\n";

const char* demo_usage =
    "usage: diffsample [demo] [options]\n"
    "The demo: `diffsample sample` with MALA on the built-in 2-D, 25-component grid mixture, reporting the\n"
    "executor, throughput and accuracy against exact samples.\n"
    "  --executor auto|cuda|cpu   where to run (default auto: the GPU when one is present)\n"
    "  --method ula|mala|tamed_ula  Langevin update (default mala; sample's --sampler)\n"
    "  --chains N                 number of chains (default 2^20 on a GPU, 16384 on the CPU)\n"
    "  --steps N                  steps per chain (default 1000)\n"
    "  --step-size G              Langevin step size gamma (default 0.03)\n"
    "  --dim D                    dimension of the grid mixture (default 2)\n"
    "  --seed S                   random seed (default 1)\n"
    "  --quiet                    print nothing on success (and no progress line)\n"
    "  --help                     this text\n"
    "Every other setting is sample's default (diffsample sample --help).\n";

/// A `sample` or `demo` run as its arguments give it: the prior and the settings, the problem file's and the command
/// line's, checked, and the outputs checked.
struct sample_plan {
  options o;
  problem file;
  prior_spec prior;
  std::string source = "built-in";
  run_settings s;
  bool langevin = false, jump = false;
  output_set outputs;
  std::int64_t n = 0;
};

/// Reads the plan of `sample` on a Gaussian-mixture prior from its parsed options (@p p.o); @p command is "sample"
/// or "demo" (the demo's description of its prior). Nothing collective: under mpirun, distributed::check_arguments()
/// agrees on its failure.
void read_sample(sample_plan& p, const char* command) {
  const options& o = p.o;
  // Prior and settings: the problem file, then the command line over it.
  problem& file = p.file;
  if (o.has("--problem")) file = read_problem(o.get("--problem"));
  const bool grid_flags = o.has("--dim") || o.has("--grid") || o.has("--spacing") || o.has("--variance");
  if (file.prior && grid_flags)
    throw usage_error("--dim/--grid/--spacing/--variance conflict with the prior of " + file.path +
                      " (the built-in grid prior is used only without one)");
  prior_spec& prior = p.prior;
  std::string& source = p.source;
  if (file.prior) {
    prior = *file.prior;
    source = file.path;
  } else {
    const std::int64_t dim = o.has("--dim") ? to_int("--dim", o.get("--dim"), 1) : 2;
    const std::int64_t g = o.has("--grid") ? to_int("--grid", o.get("--grid"), 1, max_grid_size) : 5;
    prior = grid_prior(dim, int(g), o.has("--spacing") ? to_double("--spacing", o.get("--spacing")) : 2.0,
                       o.has("--variance") ? to_double("--variance", o.get("--variance")) : 0.25);
    if (std::string(command) == "demo") prior.description = std::to_string(g * g) + "-component Gaussian mixture";
  }

  run_settings& s = p.s;
  const sampler_spec& f = file.sampler;
  if (f.name) s.sampler = *f.name;
  if (o.has("--sampler")) s.sampler = o.get("--sampler");
  if (!is_langevin(s.sampler)) {
    try {
      s.sampler = to_string(parse_diffusion_sampler(s.sampler));
    } catch (const invalid_argument&) {
      const std::string known = "(expected ula, mala, tamed_ula, ddpm, ddim, reverse_sde, ode_euler, ode_heun, "
                                "stochastic_localization, walk_jump or sequential_measurements)";
      // The file's name (a discrete sampler's, which a Gaussian-mixture prior does not run): its key, exit status 1.
      if (!o.has("--sampler"))
        throw input_error(file.path + ": sampler.name: '" + s.sampler +
                          "' does not sample a Gaussian-mixture prior " + known);
      throw usage_error("sampler '" + s.sampler + "' is unknown " + known);
    }
  }
  const bool langevin = p.langevin = is_langevin(s.sampler);
  const bool jump = p.jump = s.sampler == "walk_jump" || s.sampler == "sequential_measurements";
  // Options that the chosen sampler does not use are refused rather than silently ignored.
  auto refuse = [&](const char* flag, bool unused) {
    if (unused && o.has(flag)) throw usage_error(std::string(flag) + " does not apply to the sampler " + s.sampler);
  };
  for (const char* flag : {"--schedule", "--time-grid", "--t-start", "--t-end", "--final-denoise"})
    refuse(flag, langevin || jump);
  refuse("--eta", s.sampler != "ddim");
  refuse("--sigma", !jump);
  refuse("--measurements", s.sampler != "sequential_measurements");
  refuse("--step-size", !langevin && !jump);

  s.exec = o.has("--executor") ? parse_flag("--executor", o.get("--executor"), parse_executor)
                               : parse_executor(f.executor.value_or("auto"));  // checked by the reader
  if (f.steps) s.steps = *f.steps;
  if (o.has("--steps")) s.steps = to_steps(o.get("--steps"), 0);
  if (f.chains) s.chains = *f.chains;
  if (o.has("--chains")) s.chains = to_int("--chains", o.get("--chains"), 1);
  if (f.measurements) s.measurements = *f.measurements;
  if (o.has("--measurements"))
    s.measurements = to_int("--measurements", o.get("--measurements"), 1, diffsample::limits::max_inner_steps);
  if (f.eta) s.eta = *f.eta;
  if (o.has("--eta")) s.eta = to_double("--eta", o.get("--eta"));
  if (f.sigma) s.sigma = *f.sigma;
  if (o.has("--sigma")) s.sigma = to_double("--sigma", o.get("--sigma"));
  if (f.step_size) s.step_size = *f.step_size;
  if (o.has("--step-size")) s.step_size = to_double("--step-size", o.get("--step-size"));
  // Unset is -1 (the sampler's default), so a value <= 0 is refused here, and every other by the library's check.
  if (o.has("--step-size") && !(s.step_size > 0))
    throw usage_error("--step-size: must be > 0, got " + o.get("--step-size"));
  read_schedule(o, f, s);
  if (f.time_grid) s.time_grid = *f.time_grid;
  if (o.has("--time-grid")) s.time_grid = o.get("--time-grid");
  if (o.has("--time-grid") && parse_flag("--time-grid", s.time_grid, parse_time_grid) == time_grid::custom)
    throw usage_error("--time-grid: 'custom' is not available from the program (uniform, quadratic or geometric)");
  s.final_denoise = f.final_denoise.value_or(false) || o.has("--final-denoise");
  if (f.seed) s.seed = *f.seed;
  if (o.has("--seed")) s.seed = to_seed(o.get("--seed"));

  check_outputs(p.outputs, o, {"--out", "--report", "--plot"}, &file);
  const executor where = resolve(s.exec, executor_source(o, file));
  s.exec = where;
  p.n = s.chains > 0 ? s.chains : (where == executor::cuda ? (std::int64_t(1) << 20) : 16384);
  check_memory(p.n, prior.dim, 1, count_source(o, file, "--chains", "chains"), o.has("--chains"));
}

/// `sample` on a Gaussian-mixture prior, from its plan (read_sample()); @p command is "sample" or "demo" (the header
/// line).
int sample_main(sample_plan& p, const char* command) {
  // Every process (collective): a default chain count, which depends on the executor, is the processes' smallest.
  const std::int64_t fewest = distributed::smallest_everywhere(p.n);
  if (p.s.chains <= 0) p.n = fewest;
  const options& o = p.o;
  const bool quiet = o.has("--quiet");
  const problem& file = p.file;
  const prior_spec& prior = p.prior;
  const std::string& source = p.source;
  const run_settings& s = p.s;
  const bool langevin = p.langevin, jump = p.jump;
  output_set& outputs = p.outputs;
  const executor where = s.exec;
  const std::int64_t n = p.n;
  const std::int64_t d = prior.dim;

  // Under mpirun each rank selects its GPU (its rank on the node mod the node's devices) before the mixture's tables
  // reach the current device (already selected by distributed::choose_device(), which this checks against MPI's
  // node split).
  const bool spread = distributed::launched();
  if (spread) distributed::select_device(where);
  // Every setting against the library's own limits before the run, reported with its flag (exit status 2) or its
  // key in the problem file (exit status 1); under mpirun by every process alike, so that a process that fails
  // one alone (DIFFSAMPLE_CHUNKS in its environment, say) stops every process with its message.
  std::exception_ptr refused;
  std::int64_t forced_chunks = 0;
  std::optional<gaussian_mixture> built;  // the run's prior; its tables on the device can fail on one rank alone
  // The channel the samples are at: a diffusion sampler's output is the state at its grid's last point,
  // x_t = a x0 + s z, unless it ends with the denoiser (--final-denoise; stochastic_localization always), whose
  // output estimates x0 as the Langevin, walk-jump and SMS samples do. At a = 1, s = 0 (t = 0 of every schedule but
  // stochastic_localization's) that is the prior itself; elsewhere the reference is the prior noised to the
  // channel, the mixture of means a mu_k and variances a^2 v_k + s^2 (x_t = a x0 + s z of a mixture component).
  channel end;
  double t_end = NAN;
  std::optional<gaussian_mixture> noised_prior;
  try {
    built.emplace(d, prior.weights, prior.means, prior.variances);
    // The schedule from the merged settings, built before the run: a setting the library refuses is reported with
    // where it came from (the problem file's sampler section, exit status 1, or the command line, 2).
    if (!langevin && !jump) (void)checked_schedule(o, file, s, parse_diffusion_sampler(s.sampler), s.steps);
    check_settings(o, &file, sampler_settings, [&] { check_run(*built, s, n); });
    if (!langevin && !jump && s.sampler != "stochastic_localization" && !s.final_denoise) {
      const diffusion_options dopt = diffusion_settings(s);
      const schedule_point last = dopt.schedule.points(dopt.steps).back();
      end = {last.a, last.s};
      t_end = last.t;
    }
    // The reference, built before the run: a prior the library cannot noise to that channel (means a mu_k or
    // variances a^2 v_k + s^2 beyond its limits) is refused here with the library's message, not after the work.
    if (!at_data(end)) {
      try {
        noised_prior.emplace(noised_mixture(*built, end));
      } catch (const diffsample::invalid_argument& e) {
        const std::string what = "the prior noised to the grid's end " + channel_text(t_end, end) +
                                 " (the samples' reference) is beyond the library's limits: " + e.what();
        const bool from_flags =
            o.has("--schedule") || o.has("--time-grid") || o.has("--t-start") || o.has("--t-end");
        if (from_flags || file.path.empty()) throw usage_error("--schedule/--time-grid/--t-start/--t-end: " + what);
        throw input_error(file.path + ": sampler: " + what);
      }
    }
    if (const char* forced = std::getenv("DIFFSAMPLE_CHUNKS")) forced_chunks = to_int("DIFFSAMPLE_CHUNKS", forced, 1);
  } catch (...) {
    refused = std::current_exception();
  }
  distributed::agree(refused);
  // Every process runs its slice of one run: the same settings and files on every process (after the checks, so that
  // a value one process refuses is reported by its own check).
  distributed::same_run_everywhere(o, p.file.files, distributed::per_process_flags);
  const gaussian_mixture& target = *built;
  // Under mpirun every process runs its slice of the chains and rank 0 alone prints and writes (cli/distributed.hpp).
  const bool speak = !quiet && distributed::rank() == 0;
  if (speak)
    std::printf("diffsample %s: %s on a %lld-D, %s (%s), %lld chains\n", command, s.sampler.c_str(),
                static_cast<long long>(d), prior.description.c_str(), source.c_str(), static_cast<long long>(n));
  std::fflush(stdout);
  // Progress: when the line is drawn (stderr a terminal, no --quiet) the chains run in 20 chunks, redrawing it
  // between them; DIFFSAMPLE_CHUNKS=K forces K chunks (the tests compare the samples with and without chunking).
  progress bar(n, "chains", 1.0, "chains/s", quiet || spread);
  const std::int64_t chunks = forced_chunks > 0 ? forced_chunks : bar.on() ? 20 : 1;
  std::vector<distributed::rank_stats> ranks;
  const run_result r = spread ? distributed::run(target, s, n, chunks, &bar, ranks) : run_sampler(target, s, n, chunks, &bar);
  // Rank 0 holds the samples: it scores, prints and stages them while the others check their own standard output;
  // a failure on any process stops every process with its error before rank 0 commits the outputs (on_root).
  return distributed::on_root(spread, [&]() -> int {
    // The channel the samples are at (end) and the prior noised to it, both from before the run.
    const bool noised = !at_data(end);
    const gaussian_mixture& reference = noised ? *noised_prior : target;
    // Accuracy on up to 2^15 samples against as many exact samples, beside the exact-vs-exact floor.
    const std::int64_t m = scored_samples(n);
    std::vector<float> exact_a(std::size_t(m * d)), exact_b(std::size_t(m * d));
    target.sample(exact_a.data(), m, end, s.seed + 2000, nullptr, 0, {executor::cpu});
    target.sample(exact_b.data(), m, end, s.seed + 3000, nullptr, 0, {executor::cpu});
    const sliced_score score = score_sliced(r.samples, exact_a, exact_b, m, d, s.seed);
    const std::int64_t non_finite = score.non_finite;
    const double sw = score.w1, floor = score.floor;
    share_result shares;  // of non-finite samples: not computed, reported as null
    if (non_finite == 0) shares = component_shares(reference, r.samples.data(), m);
    const share_result shares_exact = component_shares(reference, exact_b.data(), m);
    const std::string reference_text = noised ? "exact samples of the prior noised to " + channel_text(t_end, end)
                                              : std::string("exact samples");
    const double rate = r.seconds > 0 ? double(n) * double(r.total_steps) / r.seconds : 0.0;

    if (!quiet) {
      std::printf("executor: %s\n", executor_text(r.ran).c_str());
      std::printf("throughput: %.4g chain-steps/s (%lld steps, %.3f s)\n", rate, static_cast<long long>(r.total_steps),
                  r.seconds);
      if (r.acceptance >= 0) std::printf("acceptance rate: %.3f\n", r.acceptance);
      for (std::size_t k = 0; k < ranks.size(); ++k)
        std::printf("rank %zu: %lld chains, %.4g chain-steps/s, %.3f s sampling, %.3f s gathering on rank 0\n", k,
                    static_cast<long long>(ranks[k].chains),
                    ranks[k].seconds > 0 ? double(ranks[k].chains) * double(r.total_steps) / ranks[k].seconds : 0.0,
                    ranks[k].seconds, ranks[k].gather_seconds);
      if (non_finite > 0)
        std::printf("non-finite values in the samples: %lld (the sampler diverged; try a smaller step)\n",
                    static_cast<long long>(non_finite));
      else
        std::printf("sliced W1 to %s: %.4f (exact-vs-exact floor %.4f; %lld samples, %d directions)\n",
                    reference_text.c_str(), sw, floor, static_cast<long long>(m), sliced_directions);
      if (non_finite == 0)
        std::printf("component shares (average responsibility): max error %.2f standard errors (component %lld; "
                    "exact samples: %.2f)\n",
                    shares.max_z, static_cast<long long>(shares.worst), shares_exact.max_z);
    }

    // Outputs last, all or none: standard output must have taken the results, then every output is written to a
    // temporary file and only then are they renamed over their targets.
    check_stdout();
    if (o.has("--out")) stage_npy(outputs, "--out", r.samples.data(), n, d);
    if (o.has("--plot"))
      stage_text(outputs, "--plot",
                 svg_plot(s.sampler + ": " + std::to_string(n) + " chains, " + prior.description +
                              (noised ? " noised to " + channel_text(t_end, end) : std::string()),
                          exact_a.data(), m, r.samples.data(), n, d, marginals(reference),
                          (s.sampler + " samples").c_str(), noised ? "exact noised samples" : "exact samples"));
    if (o.has("--report")) {
      json j = report_head(command);
      j["prior"] = prior_json(prior, source);
      json st;
      st["sampler"] = s.sampler;
      st["chains"] = n;
      st["steps"] = r.total_steps;
      if (langevin) {
        st["step_size"] = s.step_size > 0 ? s.step_size : 0.03;
      } else if (jump) {
        st["sigma"] = s.sigma;
        st["step_size"] = s.step_size > 0 ? s.step_size : 0.1;
        if (s.sampler == "sequential_measurements") st["measurements"] = s.measurements;
      } else {
        const noise_schedule sched = make_schedule(s, parse_diffusion_sampler(s.sampler));
        st["schedule"] = to_string(sched.kind);
        st["time_grid"] = to_string(sched.grid);
        st["t_start"] = sched.t_start;
        st["t_end"] = sched.t_end;
        if (s.sampler == "ddim") st["eta"] = s.eta;
        st["final_denoise"] = s.final_denoise;
      }
      j["settings"] = st;
      j["seed"] = s.seed;
      j["executor"] = to_string(r.ran);
      if (r.ran == executor::cpu) j["cpu_threads"] = cpu_threads();
      j["timings"] = {{"seconds", r.seconds}, {"chain_steps_per_second", rate}};
      if (!ranks.empty()) {
        json per = json::array();
        for (const distributed::rank_stats& k : ranks)
          per.push_back({{"chains", k.chains}, {"seconds", k.seconds}, {"gather_seconds", k.gather_seconds}});
        j["timings"]["ranks"] = per;
      }
      json acc;
      acc["samples_compared"] = m;
      acc["reference"] = {{"of", noised ? "noised_prior" : "prior"},
                          {"t", std::isnan(t_end) ? json(nullptr) : json(t_end)},
                          {"a", end.a},
                          {"s", end.s}};
      acc["non_finite_values"] = non_finite;
      acc["sliced_w1"] = non_finite == 0 ? json(sw) : json(nullptr);
      acc["sliced_w1_floor"] = floor;
      acc["directions"] = sliced_directions;
      acc["component_share_max_error_se"] = non_finite == 0 ? json(shares.max_z) : json(nullptr);
      acc["component_share_worst_component"] = non_finite == 0 ? json(shares.worst) : json(nullptr);
      acc["component_share_max_error_se_exact"] = shares_exact.max_z;
      if (r.acceptance >= 0) acc["acceptance_rate"] = r.acceptance;
      j["accuracy"] = acc;
      stage_report(outputs, o, j);
    }
    return 0;
  }, [&] { outputs.commit(); });
}

}  // namespace

int run_sample(int argc, char** argv, int first) {
  // Under mpirun, before anything starts CUDA or MPI: a process on the CPU executor hides the GPUs from itself, any
  // other selects its own GPU. A grid prior, built-in or read from a problem file (here already, to tell a binary
  // prior), is a gaussian_mixture, whose tables go to the current device.
  distributed::choose_device(requested_executor(argc, argv, first));
  // The arguments and the problem file, read by every process and agreed on under mpirun (a bad argument stops every
  // process alike, exit status 2), before anything collective.
  bool binary = false;
  sample_plan plan;
  distributed::check_arguments([&] {
    if (wants_binary_sample(argc, argv, first)) {
      // The discrete samplers do not spread their chains: under mpirun every process ran all of them, printed its
      // report and wrote the same outputs.
      if (distributed::launched())
        throw usage_error(
            "sample: a Bernoulli-mixture prior (discrete_langevin, discrete_walk_jump) runs as one process (under "
            "mpirun only the Gaussian-mixture samplers spread their chains over the processes)");
      binary = true;
      return;
    }
    plan.o = parse_options(argc, argv, first, sample_usage,
                           {"--problem",   "--dim",          "--grid",      "--spacing",  "--variance", "--sampler",
                            "--steps",     "--chains",       "--schedule",  "--time-grid", "--t-start",  "--t-end",
                            "--eta",       "--sigma",        "--step-size", "--measurements", "--seed",  "--executor",
                            "--out",       "--report",       "--plot"},
                           {"--final-denoise", "--quiet"});
    read_sample(plan, "sample");
  });
  if (binary) return run_sample_binary(argc, argv, first);
  return sample_main(plan, "sample");
}

int run_demo(int argc, char** argv, int first) {
  distributed::choose_device(requested_executor(argc, argv, first));  // as run_sample()
  sample_plan plan;
  distributed::check_arguments([&] {
    options& o = plan.o;
    o = parse_options(argc, argv, first, demo_usage,
                      {"--executor", "--method", "--chains", "--steps", "--step-size", "--dim", "--seed"}, {"--quiet"},
                      "demo");
    // --method is sample's --sampler, restricted to the Langevin updates.
    if (o.has("--method")) {
      o.values["--sampler"] = to_string(parse_flag("--method", o.get("--method"), parse_langevin_method));
      o.values.erase("--method");
    }
    read_sample(plan, "demo");
  });
  return sample_main(plan, "demo");
}

}  // namespace diffsample::cli
