// `diffsample sample` on binary data: a Bernoulli-mixture prior from a problem file, the discrete samplers
// (discrete_langevin on the noisy law q, discrete_walk_jump for the prior), outputs in {-1,1} as int8 or float32
// .npy, accuracy against exact samples, and the picture of a chain of noisy states and their jumps.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <diffsample/diffsample.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "cli/args.hpp"
#include "cli/binary.hpp"
#include "cli/io.hpp"
#include "cli/runner.hpp"
#include "cli/score.hpp"

#include "cli/output.hpp"
#include "cli/problem.hpp"
#include "cli/npy.hpp"

namespace diffsample::cli {

namespace {

namespace ds = diffsample;

const char* binary_usage =
    "usage: diffsample sample --problem FILE.json --sampler discrete_langevin|discrete_walk_jump [options]\n"
    "Samples binary data on {-1,1}^d: the problem file's prior is a mixture of product Bernoulli distributions\n"
    "(prior.probabilities K x d, prior.weights K). discrete_langevin samples the noisy law q of y = x o eps,\n"
    "P(eps_j = -1) = sigmoid(-2 alpha); discrete_walk_jump samples it (per measurement) and jumps to sign(E[x | y]).\n"
    "  --problem FILE.json     problem file with a Bernoulli-mixture prior (schema in README)\n"
    "  --sampler NAME          discrete_langevin or discrete_walk_jump (default discrete_walk_jump)\n"
    "  --method NAME           one_stage, metropolis or two_stage (default metropolis)\n"
    "  --alpha A               flip strength (default 1)\n"
    "  --eta E                 step of the discrete chains (default 1)\n"
    "  --steps N               steps (per measurement for walk-jump; default 100)\n"
    "  --measurements M        walk-jump measurements of one x (default 1)\n"
    "  --mean                  walk-jump: output E[x | y_1..m] instead of its sign (float32 only)\n"
    "  --chains N              chains (default 2^20 on a GPU, 16384 on the CPU)\n"
    "  --seed S                random seed (default 1)\n"
    "  --executor auto|cuda|cpu  where to run (default auto)\n"
    "  --out FILE.npy          write the samples (N x d)\n"
    "  --dtype int8|float32    element type of --out (default float32; int8 holds -1 and 1)\n"
    "  --report FILE.json      write the JSON report (settings, executor, timings, accuracy)\n"
    "  --plot FILE.svg         the first chains' noisy states (top) and their jumps sign(E[x | y]) (bottom) along\n"
    "                          the walk, as image grids (d = w x w pixels, else rows of ceil(sqrt(d)))\n"
    "  --quiet                 print nothing on success\n"
    "Exit status: 0 success, 1 bad input or failed run, 2 bad command line.\n";

/// A .npy image of an int8 rows x cols matrix (format 1.0).
std::vector<unsigned char> encode_i1(const std::vector<float>& values, std::int64_t rows, std::int64_t cols) {
  std::string header = "{'descr': '|i1', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<unsigned char> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.push_back(static_cast<unsigned char>(header.size() & 0xff));
  out.push_back(static_cast<unsigned char>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  for (float v : values) out.push_back(static_cast<unsigned char>(static_cast<signed char>(v > 0 ? 1 : -1)));
  return out;
}

/// Exact reference draws of what the sampler targets: y ~ q (discrete_langevin) or the jump sign(E[x | u]) of the
/// sum u of m exact measurements of one x (discrete_walk_jump, E[x | u] with --mean).
std::vector<float> exact_reference(const ds::bernoulli_mixture& prior, bool walk_jump, double alpha,
                                   std::int64_t measurements, bool mean, std::int64_t n, std::uint64_t seed) {
  const std::int64_t d = prior.dim();
  std::vector<float> out(std::size_t(n * d));
  if (!walk_jump) {
    prior.sample(out.data(), n, alpha, seed, nullptr, 0, {ds::executor::cpu});
    return out;
  }
  std::vector<float> x(out.size());
  prior.sample(x.data(), n, INFINITY, seed, nullptr, 0, {ds::executor::cpu});
  // The flips from the library's Philox streams (score.hpp), not std::bernoulli_distribution, whose algorithm each
  // standard library chooses; seed + 1, as the prior's draws take the streams (seed, i, 0).
  const std::vector<float> u = flipped_sums(x, d, 1.0 / (1.0 + std::exp(2.0 * alpha)), measurements, seed + 1);
  prior.evaluate(out.data(), n, u.data(), alpha, ds::quantity::denoiser, {ds::executor::cpu});
  if (!mean)
    for (float& v : out) v = v >= 0.f ? 1.f : -1.f;
  return out;
}

/// Total variation between the empirical laws of two n x d sets of points in {-1,1}^d (d <= 20).
double empirical_tv(const std::vector<float>& a, const std::vector<float>& b, std::int64_t d) {
  std::map<std::uint64_t, double> h;
  auto add = [&](const std::vector<float>& x, double w) {
    const std::int64_t n = std::int64_t(x.size()) / d;
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint64_t key = 0;
      for (std::int64_t j = 0; j < d; ++j) key |= std::uint64_t(x[i * d + j] > 0) << j;
      h[key] += w / double(n);
    }
  };
  add(a, 1.0);
  add(b, -1.0);
  double t = 0;
  for (const auto& kv : h) t += std::fabs(kv.second);
  return 0.5 * t;
}

/// Largest |mean_j(a) - mean_j(b)| in standard errors of the difference.
double max_mean_z(const std::vector<float>& a, const std::vector<float>& b, std::int64_t d) {
  const std::int64_t n = std::int64_t(a.size()) / d;
  double worst = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    double ma = 0, mb = 0, va = 0, vb = 0;
    for (std::int64_t i = 0; i < n; ++i) ma += a[i * d + j], mb += b[i * d + j];
    ma /= double(n), mb /= double(n);
    for (std::int64_t i = 0; i < n; ++i)
      va += (a[i * d + j] - ma) * (a[i * d + j] - ma), vb += (b[i * d + j] - mb) * (b[i * d + j] - mb);
    const double se = std::sqrt((va + vb) / (double(n) * double(n - 1 > 0 ? n - 1 : 1)));
    if (se > 0) worst = std::max(worst, std::fabs(ma - mb) / se);
  }
  return worst;
}

/// An SVG of two image grids: rows are chains, columns the snapshots @p labels name; the top grid shows noisy
/// states (black = +1), labelled @p top_label, the bottom one the jumps sign(E[x | y]) (or E[x | y] as grey levels).
/// Each tile is a group with the id "noisy-C-R" or "jumps-C-R" (column C, chain R), whose first rect is its frame.
std::string svg_chains(const std::string& title, const std::vector<std::vector<float>>& noisy,
                       const std::vector<std::vector<float>>& jumps, std::int64_t rows, std::int64_t d,
                       const std::vector<std::string>& labels, const std::string& top_label,
                       const std::string& caption) {
  const std::int64_t cols_px = std::int64_t(std::ceil(std::sqrt(double(d))));
  const std::int64_t rows_px = (d + cols_px - 1) / cols_px;
  const int cell = std::max(2, int(48 / cols_px)), gap = 6, left = 70, top = 40;
  const std::int64_t snaps = std::int64_t(noisy.size());
  const std::int64_t tile_w = cols_px * cell, tile_h = rows_px * cell;
  const std::int64_t grid_h = rows * (tile_h + gap);
  const std::int64_t width = left + snaps * (tile_w + gap) + 20, height = top + 2 * grid_h + 90;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\" shape-rendering=\"crispEdges\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << width / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n";
  auto grid = [&](const std::vector<std::vector<float>>& frames, std::int64_t y0, const std::string& label,
                  const char* id) {
    s << "<text x=\"8\" y=\"" << y0 + grid_h / 2 << "\" transform=\"rotate(-90 14 " << y0 + grid_h / 2
      << ")\" text-anchor=\"middle\">" << label << "</text>\n";
    for (std::int64_t c = 0; c < snaps; ++c)
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t x0 = left + c * (tile_w + gap), yy = y0 + r * (tile_h + gap);
        s << "<g id=\"" << id << '-' << c << '-' << r << "\">\n<rect x=\"" << x0 - 1 << "\" y=\"" << yy - 1
          << "\" width=\"" << tile_w + 2 << "\" height=\"" << tile_h + 2 << "\" fill=\"none\" stroke=\"#bbbbbb\"/>\n";
        for (std::int64_t j = 0; j < d; ++j) {
          const double v = frames[c][r * d + j];
          const int level = int(std::lround(255 * (1 - std::clamp((v + 1) / 2, 0.0, 1.0))));  // +1 black
          if (level == 255) continue;
          s << "<rect x=\"" << x0 + (j % cols_px) * cell << "\" y=\"" << yy + (j / cols_px) * cell << "\" width=\""
            << cell << "\" height=\"" << cell << "\" fill=\"rgb(" << level << ',' << level << ',' << level
            << ")\"/>\n";
        }
        s << "</g>\n";
      }
  };
  grid(noisy, top, top_label, "noisy");
  grid(jumps, top + grid_h + 40, "jumps", "jumps");
  for (std::int64_t c = 0; c < snaps; ++c)
    s << "<text x=\"" << left + c * (tile_w + gap) + tile_w / 2 << "\" y=\"" << top + grid_h + 22
      << "\" text-anchor=\"middle\">" << labels[c] << "</text>\n";
  s << "<text x=\"" << left << "\" y=\"" << height - 16 << "\">" << caption << "</text>\n</svg>\n";
  return s.str();
}

/// The snapshots of --plot: @p count values from 0 to @p last (both included), evenly spaced and rounded, without
/// repeats (fewer when last + 1 < count).
std::vector<std::int64_t> spread_points(std::int64_t last, std::int64_t count) {
  std::vector<std::int64_t> at;
  for (std::int64_t c = 0; c < count; ++c) {
    const std::int64_t v = count > 1 ? std::int64_t(std::llround(double(c) * double(last) / double(count - 1))) : last;
    if (at.empty() || v != at.back()) at.push_back(v);
  }
  return at;
}

}  // namespace

bool is_binary_sampler(const std::string& name) {
  return name == "discrete_langevin" || name == "discrete_walk_jump";
}

bool wants_binary_sample(int argc, char** argv, int first) {
  for (int i = first; i + 1 < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--sampler" && is_binary_sampler(argv[i + 1])) return true;
    if (a == "--problem") {
      try {
        if (read_problem(argv[i + 1]).binary_prior) return true;
      } catch (const std::exception&) {
        return false;  // the ordinary path reports the problem file's error
      }
    }
  }
  return false;
}

int run_sample_binary(int argc, char** argv, int first) {
  const std::vector<std::string> with_value{"--problem", "--sampler", "--method",   "--alpha",    "--eta",
                                            "--steps",   "--measurements", "--chains", "--seed", "--executor",
                                            "--out",     "--dtype",   "--report",   "--plot"};
  const std::vector<std::string> switches{"--mean", "--quiet"};
  // The same parser as every subcommand (cli/args.hpp): a flag given twice, a missing value or an unknown flag is a
  // bad command line.
  std::map<std::string, std::string> o =
      parse_options(argc, argv, first, binary_usage, with_value, switches, "sample --sampler discrete_walk_jump").values;
  auto has = [&](const char* f) { return o.count(f) != 0; };
  const bool quiet = has("--quiet");
  if (!has("--problem")) throw usage_error("the discrete samplers need --problem FILE.json with a Bernoulli-mixture prior");
  const problem file = read_problem(o["--problem"]);
  if (!file.binary_prior) {
    // A --sampler that the file's prior cannot run is the command line's conflict (status 2, as a Gaussian sampler
    // over a Bernoulli-mixture file is); the file's own discrete sampler.name over a Gaussian prior is the file's.
    if (has("--sampler"))
      throw usage_error("--sampler " + o["--sampler"] + ": the discrete samplers need a Bernoulli-mixture prior " +
                        "(prior.probabilities), and " + file.path + " holds a Gaussian mixture");
    throw input_error(file.path + ": prior: the discrete samplers need a Bernoulli-mixture prior (prior.probabilities)");
  }
  const binary_prior_spec& spec = *file.binary_prior;
  const sampler_spec& f = file.sampler;

  std::string sampler = has("--sampler") ? o["--sampler"] : f.name.value_or("discrete_walk_jump");
  if (!is_binary_sampler(sampler) && !has("--sampler"))
    throw input_error(file.path + ": sampler.name: '" + sampler + "' does not sample a Bernoulli-mixture prior " +
                      "(expected discrete_langevin or discrete_walk_jump)");
  if (!is_binary_sampler(sampler))
    throw usage_error("sampler '" + sampler + "' does not sample a Bernoulli-mixture prior (expected " +
                      "discrete_langevin or discrete_walk_jump)");
  const bool walk_jump = sampler == "discrete_walk_jump";
  std::string method_name = has("--method") ? o["--method"] : f.method.value_or("metropolis");
  ds::discrete_method method;
  try {
    method = ds::parse_discrete_method(method_name);
  } catch (const ds::invalid_argument&) {
    throw usage_error("--method: unknown '" + method_name + "' (expected one_stage, metropolis or two_stage)");
  }
  const double alpha = has("--alpha") ? to_double("--alpha", o["--alpha"]) : f.alpha.value_or(1.0);
  const double eta = has("--eta") ? to_double("--eta", o["--eta"]) : f.eta.value_or(1.0);
  // The limits of the file's keys and of the Gaussian path's flags (2^24 steps, 2^20 measurements): the flags here
  // were checked against their product alone, and a run of 2^24 + 1 steps went through.
  const std::int64_t steps = has("--steps") ? to_steps(o["--steps"], 0) : f.steps.value_or(100);
  const std::int64_t measurements = has("--measurements") ? to_int("--measurements", o["--measurements"], 1,
                                                                   diffsample::limits::max_inner_steps)
                                                          : f.measurements.value_or(1);
  if (!walk_jump && (has("--measurements") || has("--mean")))
    throw usage_error(std::string(has("--mean") ? "--mean" : "--measurements") + " applies to discrete_walk_jump only");
  const bool mean = has("--mean");
  const std::string dtype = has("--dtype") ? o["--dtype"] : "float32";
  if (dtype != "float32" && dtype != "int8") throw usage_error("--dtype: expected int8 or float32, got '" + dtype + "'");
  if (dtype == "int8" && mean) throw usage_error("--dtype int8 cannot hold E[x | y] (--mean): use float32");
  if (has("--dtype") && !has("--out")) throw usage_error("--dtype needs --out");
  const std::uint64_t seed = has("--seed") ? to_seed(o["--seed"]) : f.seed.value_or(1);
  ds::executor requested = ds::executor::automatic;
  try {
    requested = ds::parse_executor(has("--executor") ? o["--executor"] : f.executor.value_or("auto"));
  } catch (const ds::invalid_argument&) {  // the file's value is checked by the reader
    throw usage_error("--executor: unknown name '" + o["--executor"] + "' (expected auto, cuda or cpu)");
  }
  const ds::executor where = resolve(requested, executor_source(options{o}, file));
  const std::int64_t n = has("--chains") ? to_int("--chains", o["--chains"], 1)
                                         : f.chains.value_or(where == ds::executor::cuda ? (1 << 20) : 16384);
  const std::int64_t d = spec.dim;
  // Outputs: checked before any work (by file identity: never an input or each other, regular files only), then
  // written all or none after the run (output.hpp).
  output_set outputs;
  for (std::size_t i = 0; i < file.files.size(); ++i)
    outputs.add_input(file.files[i], (i == 0 ? "problem file " : "array file ") + file.files[i]);
  for (const char* flag : {"--out", "--report", "--plot"})
    if (has(flag)) outputs.add_output(flag, o[flag]);
  check_memory(n, d, 7, count_source(options{o}, file, "--chains", "chains"), has("--chains"));

  const ds::bernoulli_mixture prior(d, spec.weights, spec.probabilities);
  // The settings both discrete samplers take; Langevin chains start uniformly, as the walk's do.
  const auto settings = [&](auto o) {
    o.method = method;
    o.alpha = alpha;
    o.eta = eta;
    o.steps = steps;
    o.seed = seed;
    return o;
  };
  ds::discrete_langevin_options l = settings(ds::discrete_langevin_options{});
  l.start_uniform = true;
  ds::discrete_walk_jump_options w = settings(ds::discrete_walk_jump_options{});
  w.measurements = measurements;
  w.mean = mean;
  // Every setting against the library's own limits before the run, reported with its flag (exit status 2) or its
  // key in the problem file (exit status 1).
  const problem* source = &file;
  check_settings(options{o}, source,
                 {{"options.alpha", "--alpha", "alpha"},
                  {"options.eta", "--eta", "eta"},
                  {"options.steps", "--steps", "steps"},
                  {"options.first_step", "--steps", "steps"},
                  {"options.measurements", "--measurements", "measurements"}},
                 [&] {
                   if (walk_jump)
                     (void)ds::discrete_walk_jump_workspace_bytes(prior, n, w);
                   else
                     (void)ds::discrete_langevin_workspace_bytes(prior, n, l);
                 });
  if (!quiet)
    std::printf("diffsample sample: %s (%s) on a %lld-D %s (%s), %lld chains\n", sampler.c_str(),
                ds::to_string(method), static_cast<long long>(d), spec.description.c_str(), file.path.c_str(),
                static_cast<long long>(n));
  std::fflush(stdout);

  // The run: one library call.
  exec_buffer<float> x(where, n * d);
  exec_buffer<std::int64_t> acc(where, n);
  const auto t0 = std::chrono::steady_clock::now();
  ds::executor ran = ds::executor::automatic;
  if (walk_jump) {
    ran = ds::discrete_walk_jump(prior, x.data(), {nullptr, acc.data()}, n, w, {where});
  } else {
    ran = ds::discrete_langevin(prior, x.data(), {acc.data()}, n, l, {where});
  }
  wait(where);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<float>& samples = x.to_host();
  const std::vector<std::int64_t>& accepted = acc.to_host();
  const std::int64_t total_steps = walk_jump ? steps * measurements : steps;
  double acceptance = 0;
  for (auto a : accepted) acceptance += double(a);
  acceptance = total_steps > 0 ? acceptance / (double(n) * double(total_steps)) : 0.0;
  const double rate = seconds > 0 ? double(n) * double(total_steps) / seconds : 0.0;

  // Accuracy on up to 2^15 samples against exact reference draws of the same law, beside two reference sets' floor.
  const std::int64_t m = scored_samples(n);
  const auto ref_a = exact_reference(prior, walk_jump, alpha, measurements, mean, m, seed + 2000);
  const auto ref_b = exact_reference(prior, walk_jump, alpha, measurements, mean, m, seed + 3000);
  const std::vector<float> head(samples.begin(), samples.begin() + m * d);
  const double z = max_mean_z(head, ref_a, d), z_floor = max_mean_z(ref_b, ref_a, d);
  const bool with_tv = d <= 20 && !mean;
  const double tv = with_tv ? empirical_tv(head, ref_a, d) : NAN;
  const double tv_floor = with_tv ? empirical_tv(ref_b, ref_a, d) : NAN;

  if (!quiet) {
    std::printf("executor: %s\n", ds::to_string(ran));
    std::printf("throughput: %.4g chain-steps/s (%lld steps, %.3f s)\n", rate, static_cast<long long>(total_steps),
                seconds);
    if (method == ds::discrete_method::metropolis) std::printf("acceptance rate: %.3f\n", acceptance);
    std::printf("coordinate means against exact %s: max error %.2f standard errors (exact-vs-exact %.2f; %lld "
                "samples)\n",
                walk_jump ? "walk-jump draws" : "samples of q", z, z_floor, static_cast<long long>(m));
    if (with_tv)
      std::printf("total variation of the empirical laws: %.4f (exact-vs-exact floor %.4f)\n", tv, tv_floor);
  }

  check_stdout();
  if (has("--out")) {
    if (dtype == "int8") {
      const auto bytes = encode_i1(samples, n, d);
      outputs.stage("--out", {{bytes.data(), bytes.size()}});
    } else {
      const auto header = npy::encode_header_f32(n, d);
      outputs.stage("--out", {{header.data(), header.size()}, {samples.data(), samples.size() * sizeof(float)}});
    }
  }
  if (has("--plot")) {
    // The first chains of the run (same seed, same chain ids: identical walks) on the CPU executor.
    const std::int64_t rows = std::min<std::int64_t>(n, 6), snaps = 12;
    std::vector<std::vector<float>> noisy, jumps;
    std::vector<std::string> labels;
    std::string title, top_label, caption;
    if (walk_jump && measurements > 1) {
      // One column per measurement (at most 12, evenly spaced, the first and the last included): the walk's state
      // y_r that ends measurement r and the jump sign(E[x | y_1..r]) after it, from walk-jump runs of the first r
      // and r - 1 measurements (measurement r's steps use the stream steps r x steps + k whatever m is, so these
      // are the run's measurements; y_r = u_r - u_(r-1), u the sum the run outputs as noisy).
      std::vector<float> u(std::size_t(rows * d)), u_before(u.size()), jump(u.size());
      ds::discrete_walk_jump_options p = w;
      for (const std::int64_t before : spread_points(measurements - 1, snaps)) {
        std::fill(u_before.begin(), u_before.end(), 0.f);
        if (before > 0) {
          p.measurements = before;
          ds::discrete_walk_jump(prior, jump.data(), {u_before.data(), nullptr}, rows, p, {ds::executor::cpu});
        }
        p.measurements = before + 1;
        ds::discrete_walk_jump(prior, jump.data(), {u.data(), nullptr}, rows, p, {ds::executor::cpu});
        std::vector<float> y(u.size());
        for (std::size_t i = 0; i < y.size(); ++i) y[i] = u[i] - u_before[i];
        noisy.push_back(y);
        jumps.push_back(jump);
        labels.push_back(std::to_string(before + 1));
      }
      title = std::string("discrete walk-jump (") + ds::to_string(method) + ", alpha " + fmt(alpha, 3) + ", eta " +
              fmt(eta, 3) + ", " + std::to_string(steps) + " steps per measurement): " +
              (measurements > snaps ? std::to_string(noisy.size()) + " of " : std::string("all ")) +
              std::to_string(measurements) + " measurements, " + spec.description;
      top_label = "measurement y_r";
      caption = "columns: measurement r (top: the walk's state ending it; bottom: the jump after y_1..r); rows: "
                "chains; black = +1";
    } else {
      // One walk (discrete_langevin, or walk-jump's single measurement, whose walk it is): snapshots from the
      // uniform start to the last step, advanced in consecutive calls (first_step), with the jump of each.
      std::vector<float> y(std::size_t(rows * d)), den(y.size());
      std::int64_t done = 0;
      l.steps = 0;
      for (const std::int64_t at : spread_points(steps, snaps)) {
        l.steps = at - done;
        ds::discrete_langevin(prior, y.data(), {}, rows, l, {ds::executor::cpu});
        prior.evaluate(den.data(), rows, y.data(), alpha, ds::quantity::denoiser, {ds::executor::cpu});
        if (!mean)
          for (float& v : den) v = v >= 0.f ? 1.f : -1.f;
        noisy.push_back(y);
        jumps.push_back(den);
        labels.push_back(std::to_string(at));
        l.first_step += std::uint64_t(l.steps);
        l.start_uniform = false;
        done = at;
      }
      title = std::string("discrete walk (") + ds::to_string(method) + ", alpha " + fmt(alpha, 3) + ", eta " +
              fmt(eta, 3) + ") and its jumps, " + spec.description;
      top_label = "noisy states y";
      caption = "columns: step of the walk; rows: chains; black = +1";
    }
    const std::string svg = svg_chains(title, noisy, jumps, rows, d, labels, top_label, caption);
    outputs.stage("--plot", {{svg.data(), svg.size()}});
  }
  if (has("--report")) {
    json j = report_head("sample");
    j["prior"] = {{"source", file.path},
                  {"description", spec.description},
                  {"dim", d},
                  {"components", spec.weights.size()},
                  {"kind", "bernoulli_mixture"}};
    json st;
    st["sampler"] = sampler;
    st["method"] = ds::to_string(method);
    st["alpha"] = alpha;
    st["eta"] = eta;
    st["chains"] = n;
    st["steps"] = steps;
    if (walk_jump) st["measurements"] = measurements, st["mean"] = mean;
    j["settings"] = st;
    j["seed"] = seed;
    j["executor"] = ds::to_string(ran);
    if (ran == ds::executor::cpu) j["cpu_threads"] = ds::cpu_threads();
    j["timings"] = {{"seconds", seconds}, {"chain_steps_per_second", rate}};
    json a;
    a["samples_compared"] = m;
    a["coordinate_mean_max_error_se"] = z;
    a["coordinate_mean_max_error_se_exact"] = z_floor;
    a["total_variation"] = with_tv ? json(tv) : json(nullptr);
    a["total_variation_floor"] = with_tv ? json(tv_floor) : json(nullptr);
    a["acceptance_rate"] = acceptance;
    j["accuracy"] = a;
    if (has("--out")) j["samples_file"] = o["--out"], j["samples_dtype"] = dtype;
    const std::string text = j.dump(2) + "\n";
    outputs.stage("--report", {{text.data(), text.size()}});
  }
  outputs.commit();
  return 0;
}

}  // namespace diffsample::cli
