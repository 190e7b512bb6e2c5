// Problem files of the diffsample program: a JSON document describing a Gaussian-mixture prior, sampler settings
// and (for posterior problems) a linear-Gaussian observation. Arrays are given inline or as paths to .npy files
// (float32 or float64, C order), relative paths resolving against the JSON file's folder. The schema is in
// the README, section "Problem files".
//
// Every problem throws cli::input_error with a one-line message that starts with the file name and names the
// field: "problem.json: prior.means: expected 25 rows, got 24".
#pragma once

#include <cstdint>
#include <diffsample/posterior.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "src/limits.hpp"

namespace diffsample::cli {

/// Bad input data (a file, a field, a value): reported on one line, exit status 1.
class input_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad command line (unknown or conflicting options, malformed values): reported on one line, exit status 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A Gaussian-mixture prior as plain data (validated for shapes and finiteness; the library validates the rest).
struct prior_spec {
  std::int64_t dim = 0;
  std::vector<double> weights;    ///< K
  std::vector<double> means;      ///< K x dim
  std::vector<double> variances;  ///< K (isotropic) or K x dim (diagonal)
  std::string description;        ///< e.g. "25-component grid mixture" or "mixture from problem.json"
};

/// A mixture of product Bernoulli distributions on {-1,1}^d: a prior given with "probabilities" (shapes and ranges
/// validated; the library validates the rest).
struct binary_prior_spec {
  std::int64_t dim = 0;
  std::vector<double> weights;        ///< K
  std::vector<double> probabilities;  ///< K x dim, P(x_j = +1 | component)
  std::string description;            ///< e.g. "20-component Bernoulli mixture"
};

/// The built-in prior: grid_mixture(dim, grid, spacing, variance, weights) with the demo's weights for a 5 x 5 grid
/// and equal weights otherwise. A refused dimension is reported with @p dim_flag (bench's --dims).
prior_spec grid_prior(std::int64_t dim, int grid, double spacing, double variance, std::vector<double> weights = {},
                      const char* dim_flag = "--dim");

/// Sampler settings; an unset field keeps the program's default (and a command-line option overrides the file).
struct sampler_spec {
  std::optional<std::string> name;               ///< ula, mala, tamed_ula, ddpm, ddim, ...
  std::optional<std::string> schedule;           ///< schedule_kind name
  std::optional<std::string> time_grid;          ///< time_grid name
  std::optional<double> t_start, t_end;          ///< grid ends (default: the schedule's)
  std::optional<std::vector<double>> alpha_bar;  ///< vp_table's alpha-bar_1..N
  std::optional<std::int64_t> steps, chains, measurements;
  std::optional<double> eta, sigma, step_size;
  std::optional<std::uint64_t> seed;
  std::optional<std::string> executor;
  std::optional<bool> final_denoise;
  std::optional<double> alpha;          ///< discrete samplers: flip strength
  std::optional<std::string> method;    ///< discrete samplers: one_stage, metropolis, two_stage
  // Posterior samplers of solve (guided_options' fields of the same names).
  std::optional<std::string> dps_step;  ///< dps: likelihood or normalised
  std::optional<std::string> potentials;  ///< smc: automatic, linear, moment or twisted (a guided_potentials)
  std::optional<std::string> operator_path;  ///< dps, pigdm, tmpd: automatic, gemm or direct (a mixture_path)
  std::optional<double> guidance_scale, diffpir_zeta, diffpir_lambda, skrock_eta, skrock_step_fraction;
  std::optional<std::int64_t> skrock_stages;
  std::optional<double> ddrm_eta, ddrm_eta_b;  ///< ddrm: eta and eta_b, each in [0, 1]
  std::optional<std::int64_t> dcps_blocks, dcps_langevin_steps;  ///< dcps: L and M
  std::optional<double> dcps_langevin_step;                       ///< dcps: gamma > 0
  std::optional<bool> dcps_bridge_variance;                       ///< dcps: the bridge variance in the potentials
  std::optional<std::int64_t> dcps_gradient_steps;                ///< dcps: G, 0..limits::max_dcps_gradient_steps
  std::optional<double> dcps_learning_rate;                       ///< dcps: rho >= 0
  std::optional<bool> dcps_absolute_step;                         ///< dcps: rho as the step's length itself
  std::set<std::string> keys;  ///< the keys the file's sampler section gives (where a setting came from, in messages)
};

/// A parsed problem file.
struct problem {
  std::string path;  ///< the JSON file
  std::optional<prior_spec> prior;
  std::optional<binary_prior_spec> binary_prior;  ///< a Bernoulli-mixture prior (then `prior` is empty)
  sampler_spec sampler;
  std::optional<linear_observation> observation;  ///< d_x equals the prior's dimension; A is the dense matrix
  std::optional<observation_operator> observation_op;  ///< the same operator in its own form (dense, mask or svd)
  std::vector<std::string> files;  ///< every file read: the problem file, then its .npy files (no output may be one)
};

/// Reads and validates a problem file. Throws input_error for unreadable files, malformed JSON, unknown keys,
/// wrong types or shapes, non-finite values and bad .npy files; usage_error for an empty @p path (--problem '').
problem read_problem(const std::string& path);

/// The sampler.executor string of the problem file @p path when it can be read as JSON and holds one, else empty.
/// Nothing is validated and nothing throws (read_problem() reports what is wrong): the program reads it before the
/// file, whose grid prior is a gaussian_mixture, which a process that keeps off the GPUs must not build first.
std::string peek_executor(const std::string& path) noexcept;

/// Parses and validates the text of a problem file that @p path names (in messages, and as the folder against which
/// relative .npy file names resolve). With @p read_files false a .npy file name is refused instead of read (the
/// fuzzer's mode: no file is opened). Throws input_error as read_problem() does.
problem parse_problem(std::string_view json_text, const std::string& path, bool read_files = true);

/// Most mean values (components x dimension) of a grid prior, from the command line or a problem file: 2^24
/// (128 MiB as doubles), so that a few bytes of JSON cannot ask for gigabytes.
constexpr std::int64_t max_grid_values = std::int64_t(1) << 24;

/// Most points per axis of a grid prior (size x size components), from the command line or a problem file.
constexpr std::int64_t max_grid_size = 1000;

/// Largest problem file read (64 MiB): arrays beyond that belong in .npy files.
constexpr std::int64_t max_problem_bytes = std::int64_t(64) << 20;

/// Deepest nesting of objects and arrays a problem file may have (the format's own is 4 levels; a comment may hold
/// any JSON, within this).
constexpr int max_problem_depth = 1000;

/// Throws input_error if @p values has a NaN or infinite entry: "<what>: value 3 is nan".
void require_finite(const std::vector<double>& values, const std::string& what);

}  // namespace diffsample::cli
