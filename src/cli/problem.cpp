// Parsing of problem files (schema in the README, section "Problem files").
#include "cli/problem.hpp"

#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <diffsample/binary.hpp>
#include <diffsample/diffusion.hpp>
#include <diffsample/error.hpp>
#include <diffsample/execution.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/langevin.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/schedule.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/npy.hpp"
#include "printable.hpp"

namespace diffsample::cli {

namespace {

using json = nlohmann::json;

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

using detail::printable;  // keys and file names in one-line messages

/// An array as read: values row-major, with its rank and shape.
struct array {
  int ndim = 1;
  std::int64_t rows = 0, cols = 1;
  std::vector<double> values;
  std::string file;  ///< the .npy file it came from, if any
};

class reader {
 public:
  reader(std::string path, bool read_files) : path_(std::move(path)), read_files_(read_files) {
    const auto slash = path_.find_last_of('/');
    folder_ = slash == std::string::npos ? std::string() : path_.substr(0, slash + 1);
  }

  [[noreturn]] void bad(const std::string& field, const std::string& message) const {
    throw input_error(path_ + ": " + (field.empty() ? "" : field + ": ") + message);
  }

  /// Refuses a value above a limit of src/limits.hpp: "<path>: field = value, the limit is N (why)".
  void check_limit(const std::string& field, std::int64_t value, std::int64_t limit) const {
    if (value > limit) throw input_error(path_ + ": " + diffsample::limits::message(field, value, 0, limit));
  }

  /// Refuses a prior's n x d array (one row per component) beyond the mixture's limits, naming the field: it was
  /// refused later by the mixture, as "weights: components" or "dim", which an empirical prior's points do not name.
  void check_shape(const array& a, const std::string& field, const char* rows) const {
    check_limit(field + ": " + rows + " (rows)", a.rows, diffsample::limits::max_components);
    check_limit(field + ": dim (columns)", a.cols, diffsample::limits::max_dim);
  }

  void only_keys(const json& object, const std::string& field, std::set<std::string> allowed) const {
    if (!object.is_object()) bad(field, std::string("expected an object, got ") + object.type_name());
    for (auto it = object.begin(); it != object.end(); ++it)
      if (!allowed.count(it.key())) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        const std::string key = printable(it.key());
        bad(field.empty() ? key : field + "." + key, "unknown key (expected one of: " + list + ")");
      }
  }

  double number(const json& v, const std::string& field) const {
    if (!v.is_number()) bad(field, std::string("expected a number, got ") + v.type_name());
    const double x = v.get<double>();
    if (!std::isfinite(x)) bad(field, "value " + fmt(x) + " is not finite");
    return x;
  }

  std::int64_t integer(const json& v, const std::string& field, std::int64_t min_value) const {
    if (!v.is_number_integer())
      bad(field, "expected an integer, got " + (v.is_number() ? v.dump() : std::string(v.type_name())));
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX)) bad(field, "value too large");
    const std::int64_t x = v.get<std::int64_t>();
    if (x < min_value) bad(field, "expected an integer >= " + std::to_string(min_value) + ", got " + v.dump());
    return x;
  }

  std::string string(const json& v, const std::string& field) const {
    if (!v.is_string()) bad(field, std::string("expected a string, got ") + v.type_name());
    const std::string text = v.get<std::string>();
    if (printable(text) != text) bad(field, "expected a name, got '" + printable(text) + "'");
    return text;
  }

  /// A number, a list of numbers, a list of lists of numbers of equal length, or a path to a .npy file.
  array values(const json& v, const std::string& field) const {
    array a;
    if (v.is_string()) {
      std::string file = v.get<std::string>();
      if (file.empty()) bad(field, "empty file name");
      if (!read_files_) bad(field, "a .npy file name ('" + printable(file) + "') is not accepted here");
      if (file[0] != '/') file = folder_ + file;
      files_.push_back(file);
      npy::matrix<double> m;
      try {
        m = npy::read_f64(file);
      } catch (const diffsample::error& e) {
        bad(field, printable(e.what(), 4096));
      }
      a.ndim = m.ndim;
      a.rows = m.rows;
      a.cols = m.cols;
      a.values = std::move(m.values);
      for (std::size_t i = 0; i < a.values.size(); ++i)
        if (!std::isfinite(a.values[i]))
          bad(field, printable(file) + ": element " + std::to_string(i) + " is " + fmt(a.values[i]) + " (not finite)");
      a.file = printable(file);
      return a;
    }
    if (!v.is_array()) bad(field, std::string("expected an array or a .npy file name, got ") + v.type_name());
    a.rows = std::int64_t(v.size());
    if (!v.empty() && v[0].is_array()) {
      a.ndim = 2;
      a.cols = std::int64_t(v[0].size());
      for (std::size_t i = 0; i < v.size(); ++i) {
        const std::string row = field + "[" + std::to_string(i) + "]";
        if (!v[i].is_array()) bad(row, std::string("expected a list (all rows are lists), got ") + v[i].type_name());
        if (std::int64_t(v[i].size()) != a.cols)
          bad(row, "ragged array: " + std::to_string(v[i].size()) + " values, row 0 has " + std::to_string(a.cols));
        for (std::size_t j = 0; j < v[i].size(); ++j)
          a.values.push_back(number(v[i][j], row + "[" + std::to_string(j) + "]"));
      }
    } else {
      for (std::size_t i = 0; i < v.size(); ++i)
        a.values.push_back(number(v[i], field + "[" + std::to_string(i) + "]"));
    }
    return a;
  }

  /// Refuses a value outside [lo, hi] (what the FP32 kernels can represent), naming the field, the element and
  /// the .npy file it came from.
  void in_range(const std::vector<double>& values, const std::string& field, const std::string& file, double lo,
                double hi, const char* why) const {
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!(values[i] >= lo && values[i] <= hi))
        bad(field, (file.empty() ? "" : file + ": ") + "value " + std::to_string(i) + " is " + fmt(values[i]) +
                       ", outside [" + fmt(lo) + ", " + fmt(hi) + "] (" + why + ")");
  }

  static std::string shape(const array& a) {
    return a.ndim == 1 ? "(" + std::to_string(a.rows) + ",)"
                       : "(" + std::to_string(a.rows) + ", " + std::to_string(a.cols) + ")";
  }

  /// A 1-D array (or an (n, 1) / (1, n) 2-D one) of n values; n = -1 accepts any length >= 1.
  std::vector<double> vector(const json& v, const std::string& field, std::int64_t n,
                             std::string* file = nullptr) const {
    array a = values(v, field);
    if (file) *file = a.file;
    const std::int64_t count = std::int64_t(a.values.size());
    if (a.ndim == 2 && a.rows != 1 && a.cols != 1) bad(field, "expected a 1-D array, got shape " + shape(a));
    if (count == 0) bad(field, "empty array");
    if (n >= 0 && count != n)
      bad(field,
          "expected " + std::to_string(n) + " values, got " + std::to_string(count) + " (shape " + shape(a) + ")");
    return std::move(a.values);
  }

  /// A 2-D array of rows x cols (-1: any).
  array matrix(const json& v, const std::string& field, std::int64_t rows, std::int64_t cols) const {
    array a = values(v, field);
    if (a.ndim != 2) bad(field, "expected a 2-D array (a list of rows), got shape " + shape(a));
    if (a.rows == 0 || a.cols == 0) bad(field, "empty array (shape " + shape(a) + ")");
    if (rows >= 0 && a.rows != rows) bad(field, "expected " + std::to_string(rows) + " rows, got shape " + shape(a));
    if (cols >= 0 && a.cols != cols) bad(field, "expected " + std::to_string(cols) + " columns, got shape " + shape(a));
    return a;
  }

  /// K positive finite weights (the library normalises them, whatever their sum: {1e308, 1e308} included).
  std::vector<double> weights(const json& v, std::int64_t K) const {
    std::vector<double> w = vector(v, "prior.weights", K);
    for (std::size_t i = 0; i < w.size(); ++i)
      if (!(w[i] > 0)) bad("prior.weights", "value " + std::to_string(i) + " is " + fmt(w[i]) + " (must be > 0)");
    return w;
  }

  prior_spec prior(const json& p) const {
    only_keys(p, "prior", {"weights", "means", "variances", "grid", "points", "variance"});
    if (p.contains("points") || p.contains("variance")) {
      // An empirical prior: one equal-weight component N(point_i, variance I) per row of "points".
      if (p.contains("means") || p.contains("variances") || p.contains("grid") || p.contains("weights"))
        bad("prior", "give 'points' and 'variance' alone (an empirical prior has one equal-weight component per "
                     "point)");
      if (!p.contains("points")) bad("prior.points", "missing (the n x d data points of the empirical prior)");
      if (!p.contains("variance")) bad("prior.variance", "missing (the variance of every point's component)");
      const array points = matrix(p["points"], "prior.points", -1, -1);
      check_shape(points, "prior.points", "points");
      const double variance = number(p["variance"], "prior.variance");
      if (!(variance > 0)) bad("prior.variance", "must be > 0, got " + fmt(variance));
      in_range({variance}, "prior.variance", "", min_variance, max_variance,
               "a variance and its inverse must be normal FP32 numbers");
      in_range(points.values, "prior.points", points.file, -max_abs_value, max_abs_value,
               "the FP32 kernels square coordinate differences");
      prior_spec s;
      s.dim = points.cols;
      s.means = points.values;
      s.variances.assign(std::size_t(points.rows), variance);
      s.weights.assign(std::size_t(points.rows), 1.0);
      s.description = std::to_string(points.rows) + "-point empirical prior";
      return s;
    }
    if (p.contains("grid")) {
      if (p.contains("means") || p.contains("variances"))
        bad("prior", "give either 'grid' or 'means' and 'variances', not both");
      const json& g = p["grid"];
      only_keys(g, "prior.grid", {"dim", "size", "spacing", "variance"});
      if (!g.contains("dim")) bad("prior.grid.dim", "missing (the dimension d)");
      const std::int64_t dim = integer(g["dim"], "prior.grid.dim", 1);
      const std::int64_t size = g.contains("size") ? integer(g["size"], "prior.grid.size", 1) : 5;
      check_limit("prior.grid.size", size, max_grid_size);
      const double spacing = g.contains("spacing") ? number(g["spacing"], "prior.grid.spacing") : 2.0;
      const double variance = g.contains("variance") ? number(g["variance"], "prior.grid.variance") : 0.25;
      if (spacing < 0) bad("prior.grid.spacing", "must be >= 0, got " + fmt(spacing));
      if (!(variance > 0)) bad("prior.grid.variance", "must be > 0, got " + fmt(variance));
      in_range({variance}, "prior.grid.variance", "", min_variance, max_variance,
               "a variance and its inverse must be normal FP32 numbers");
      if (spacing * double(size - 1) > max_abs_value)
        bad("prior.grid.spacing", fmt(spacing) + " x " + std::to_string(size - 1) + " puts means beyond " +
                                      fmt(max_abs_value) + " (the FP32 kernels square coordinate differences)");
      if (dim > max_grid_values / (size * size))
        throw input_error(path_ + ": " + diffsample::limits::above("prior.grid: mean values (components x dimension)",
                                                                   std::to_string(size * size) + " x " +
                                                                       std::to_string(dim),
                                                                   max_grid_values));
      std::vector<double> w(std::size_t(size * size), 1.0);  // equal weights unless given
      if (p.contains("weights")) w = weights(p["weights"], size * size);
      prior_spec s;
      try {
        s = grid_prior(dim, int(size), spacing, variance, w);
      } catch (const std::exception& e) {  // usage_error or the library's invalid_argument
        bad("prior.grid", e.what());
      }
      s.description = std::to_string(size * size) + "-component grid mixture";
      return s;
    }
    if (!p.contains("means")) bad("prior.means", "missing (or give 'grid')");
    if (!p.contains("variances")) bad("prior.variances", "missing");
    prior_spec s;
    const array means = matrix(p["means"], "prior.means", -1, -1);
    check_shape(means, "prior.means", "components");
    const std::int64_t K = means.rows;
    s.dim = means.cols;
    s.means = means.values;
    in_range(s.means, "prior.means", means.file, -max_abs_value, max_abs_value,
             "the FP32 kernels square coordinate differences");
    const array var = values(p["variances"], "prior.variances");
    const bool vec = var.ndim == 1 || (var.ndim == 2 && var.cols == 1 && s.dim != 1);
    if (vec) {
      if (std::int64_t(var.values.size()) != K)
        bad("prior.variances", "expected " + std::to_string(K) + " values (one per component) or a " +
                                   std::to_string(K) + " x " + std::to_string(s.dim) + " array, got shape " +
                                   shape(var));
    } else if (var.rows != K || var.cols != s.dim) {
      bad("prior.variances", "expected shape (" + std::to_string(K) + ",) or (" + std::to_string(K) + ", " +
                                 std::to_string(s.dim) + "), got " + shape(var));
    }
    s.variances = var.values;
    for (std::size_t i = 0; i < s.variances.size(); ++i)
      if (!(s.variances[i] > 0))
        bad("prior.variances", "value " + std::to_string(i) + " is " + fmt(s.variances[i]) + " (must be > 0)");
    in_range(s.variances, "prior.variances", var.file, min_variance, max_variance,
             "a variance and its inverse must be normal FP32 numbers");
    s.weights = p.contains("weights") ? weights(p["weights"], K) : std::vector<double>(K, 1.0);
    s.description = std::to_string(K) + "-component mixture";
    return s;
  }

  /// A Bernoulli-mixture prior: "probabilities" (K x d, each in [0, 1]) and optional "weights" (K).
  binary_prior_spec binary_prior(const json& p) const {
    only_keys(p, "prior", {"weights", "probabilities"});
    binary_prior_spec s;
    const array probs = matrix(p["probabilities"], "prior.probabilities", -1, -1);
    const std::int64_t K = probs.rows;
    s.dim = probs.cols;
    s.probabilities = probs.values;
    for (std::size_t i = 0; i < s.probabilities.size(); ++i)
      if (!(s.probabilities[i] >= 0 && s.probabilities[i] <= 1))
        bad("prior.probabilities", "value " + std::to_string(i) + " is " + fmt(s.probabilities[i]) +
                                       " (must be in [0, 1])");
    s.weights = p.contains("weights") ? weights(p["weights"], K) : std::vector<double>(K, 1.0);
    s.description = std::to_string(K) + "-component Bernoulli mixture";
    return s;
  }

  /// @p binary: the file's prior is a Bernoulli mixture, which only the discrete samplers run (whichever names them).
  sampler_spec sampler(const json& j, bool binary) const {
    only_keys(j, "sampler",
              {"name", "schedule", "time_grid", "t_start", "t_end", "alpha_bar", "steps", "chains", "measurements",
               "eta", "sigma", "step_size", "seed", "executor", "final_denoise", "alpha", "method", "dps_step",
               "guidance_scale", "diffpir_zeta", "diffpir_lambda", "skrock_stages", "skrock_eta",
               "skrock_step_fraction", "ddrm_eta", "ddrm_eta_b", "dcps_blocks",
               "dcps_langevin_steps", "dcps_langevin_step", "dcps_bridge_variance",
               "dcps_gradient_steps", "dcps_learning_rate", "dcps_absolute_step", "operator_path", "potentials"});
    sampler_spec s;
    for (auto it = j.begin(); it != j.end(); ++it) s.keys.insert(it.key());
    // A key that no subcommand reads for this file's prior is refused by name rather than ignored: one file serves
    // sample and solve, but a Bernoulli-mixture prior only the discrete samplers (which read none of the Gaussian
    // samplers' keys), and a Gaussian-mixture prior (or the built-in one) never them (alpha and method are theirs).
    if (binary) {
      for (const char* key :
           {"schedule", "time_grid", "t_start", "t_end", "alpha_bar", "sigma", "step_size", "final_denoise",
            "dps_step", "guidance_scale", "operator_path", "potentials", "diffpir_zeta", "diffpir_lambda",
            "skrock_stages", "skrock_eta", "skrock_step_fraction", "ddrm_eta", "ddrm_eta_b", "dcps_blocks",
            "dcps_langevin_steps", "dcps_langevin_step", "dcps_bridge_variance", "dcps_gradient_steps",
            "dcps_learning_rate", "dcps_absolute_step"})
        if (j.contains(key))
          bad(std::string("sampler.") + key,
              "a Gaussian-mixture prior's setting: the discrete samplers of this Bernoulli-mixture prior "
              "(prior.probabilities) do not read it");
    } else {
      for (const char* key : {"alpha", "method"})
        if (j.contains(key))
          bad(std::string("sampler.") + key,
              "a setting of the discrete samplers, which need a Bernoulli-mixture prior (prior.probabilities): no "
              "sampler of this file's prior reads it");
    }
    // Names are parsed here so that a bad one is reported with the file's field (exit status 1).
    auto name = [&](const char* key, auto parse) {
      const std::string field = std::string("sampler.") + key;
      const std::string text = string(j[key], field);
      try {
        parse(text);
      } catch (const diffsample::invalid_argument& e) {
        const std::string m = e.what();  // without the library's own field name ("executor: unknown name ...")
        const auto colon = m.find(": ");
        bad(field, printable(colon == std::string::npos ? m : m.substr(colon + 2), 4096));
      }
      return text;
    };
    if (j.contains("name"))
      s.name = name("name", [&](const std::string& t) {
        if (t == "ula" || t == "mala" || t == "tamed_ula" || t == "discrete_langevin" || t == "discrete_walk_jump")
          return;
        try {
          diffsample::parse_diffusion_sampler(t);
        } catch (const diffsample::invalid_argument&) {
          bad("sampler.name", "unknown sampler '" + printable(t) +
                                  "' (expected ula, mala, tamed_ula, ddpm, ddim, reverse_sde, ode_euler, ode_heun, "
                                  "stochastic_localization, walk_jump, sequential_measurements, discrete_langevin or "
                                  "discrete_walk_jump)");
        }
      });
    if (j.contains("schedule"))
      s.schedule = name("schedule", [](const std::string& t) { diffsample::parse_schedule_kind(t); });
    if (j.contains("time_grid"))
      s.time_grid = name("time_grid", [&](const std::string& t) {
        if (diffsample::parse_time_grid(t) == time_grid::custom)
          bad("sampler.time_grid", "'custom' is not available from a problem file (give uniform, quadratic or geometric)");
      });
    if (j.contains("executor"))
      s.executor = name("executor", [](const std::string& t) { diffsample::parse_executor(t); });
    if (j.contains("t_start")) s.t_start = number(j["t_start"], "sampler.t_start");
    if (j.contains("t_end")) s.t_end = number(j["t_end"], "sampler.t_end");
    for (const char* key : {"t_start", "t_end"})
      if (j.contains(key) && number(j[key], std::string("sampler.") + key) < 0)
        bad(std::string("sampler.") + key, "must be >= 0, got " + j[key].dump());
    if (j.contains("alpha_bar")) s.alpha_bar = vector(j["alpha_bar"], "sampler.alpha_bar", -1);
    if (j.contains("steps")) s.steps = integer(j["steps"], "sampler.steps", 0);
    if (s.steps) check_limit("sampler.steps", *s.steps, diffsample::limits::max_steps);
    if (j.contains("chains")) s.chains = integer(j["chains"], "sampler.chains", 1);
    if (j.contains("measurements")) s.measurements = integer(j["measurements"], "sampler.measurements", 1);
    if (s.measurements) check_limit("sampler.measurements", *s.measurements, diffsample::limits::max_inner_steps);
    if (j.contains("eta")) s.eta = number(j["eta"], "sampler.eta");
    // DDIM's eta is in [0, 1]; the discrete samplers' eta (their step) is any positive number.
    const bool discrete = binary || (s.name && (*s.name == "discrete_langevin" || *s.name == "discrete_walk_jump"));
    if (s.eta && !(*s.eta >= 0 && (discrete || *s.eta <= 1)))
      bad("sampler.eta", std::string("must be in ") + (discrete ? "(0, inf)" : "[0, 1]") + ", got " + fmt(*s.eta));
    if (j.contains("sigma")) s.sigma = number(j["sigma"], "sampler.sigma");
    if (s.sigma && !(*s.sigma > 0)) bad("sampler.sigma", "must be > 0, got " + fmt(*s.sigma));
    if (j.contains("step_size")) s.step_size = number(j["step_size"], "sampler.step_size");
    if (s.step_size && !(*s.step_size > 0)) bad("sampler.step_size", "must be > 0, got " + fmt(*s.step_size));
    if (j.contains("seed"))  // 64-bit unsigned, as the library's seeds
      s.seed = j["seed"].is_number_unsigned() ? j["seed"].get<std::uint64_t>()
                                              : std::uint64_t(integer(j["seed"], "sampler.seed", 0));
    if (j.contains("alpha")) s.alpha = number(j["alpha"], "sampler.alpha");
    if (j.contains("method"))
      s.method = name("method", [](const std::string& t) { diffsample::parse_discrete_method(t); });
    if (j.contains("dps_step"))
      s.dps_step = name("dps_step", [](const std::string& t) { diffsample::parse_dps_step_form(t); });
    if (j.contains("operator_path"))
      s.operator_path = name("operator_path", [](const std::string& t) { diffsample::parse_mixture_path(t); });
    if (j.contains("potentials"))
      s.potentials = name("potentials", [](const std::string& t) { diffsample::parse_guided_potentials(t); });
    // The posterior samplers' settings: numbers here, their ranges those of guided_sample(), whose check solve runs
    // before the run and reports with these keys (cli/args.hpp, check_settings).
    for (const auto& [key, field] :
         {std::pair{"guidance_scale", &sampler_spec::guidance_scale}, {"diffpir_zeta", &sampler_spec::diffpir_zeta},
          {"diffpir_lambda", &sampler_spec::diffpir_lambda}, {"skrock_eta", &sampler_spec::skrock_eta},
          {"skrock_step_fraction", &sampler_spec::skrock_step_fraction}, {"ddrm_eta", &sampler_spec::ddrm_eta},
          {"ddrm_eta_b", &sampler_spec::ddrm_eta_b}, {"dcps_langevin_step", &sampler_spec::dcps_langevin_step},
          {"dcps_learning_rate", &sampler_spec::dcps_learning_rate}})
      if (j.contains(key)) s.*field = number(j[key], std::string("sampler.") + key);
    if (j.contains("dcps_gradient_steps")) {
      s.dcps_gradient_steps = integer(j["dcps_gradient_steps"], "sampler.dcps_gradient_steps", 0);
      check_limit("sampler.dcps_gradient_steps", *s.dcps_gradient_steps, diffsample::limits::max_dcps_gradient_steps);
    }
    if (j.contains("dcps_blocks")) s.dcps_blocks = integer(j["dcps_blocks"], "sampler.dcps_blocks", 1);
    if (j.contains("dcps_langevin_steps")) {
      s.dcps_langevin_steps = integer(j["dcps_langevin_steps"], "sampler.dcps_langevin_steps", 0);
      check_limit("sampler.dcps_langevin_steps", *s.dcps_langevin_steps, diffsample::limits::max_inner_steps);
    }
    if (j.contains("skrock_stages")) {
      s.skrock_stages = integer(j["skrock_stages"], "sampler.skrock_stages", 2);
      check_limit("sampler.skrock_stages", *s.skrock_stages, diffsample::limits::max_skrock_stages);
    }
    if (j.contains("dcps_bridge_variance")) {
      if (!j["dcps_bridge_variance"].is_boolean()) bad("sampler.dcps_bridge_variance", "expected true or false");
      s.dcps_bridge_variance = j["dcps_bridge_variance"].get<bool>();
    }
    if (j.contains("dcps_absolute_step")) {
      if (!j["dcps_absolute_step"].is_boolean()) bad("sampler.dcps_absolute_step", "expected true or false");
      s.dcps_absolute_step = j["dcps_absolute_step"].get<bool>();
    }
    if (j.contains("final_denoise")) {
      if (!j["final_denoise"].is_boolean()) bad("sampler.final_denoise", "expected true or false");
      s.final_denoise = j["final_denoise"].get<bool>();
    }
    return s;
  }

  /// The observation: exactly one of "A" (dense d_y x d_x), "mask" (observed coordinate indices, with optional
  /// "diagonal" gains) or "svd" ({"U": d_y x r, "S": r, "V": d_x x r}); plus "sigma_y" and "y".
  linear_observation observation(const json& o, std::int64_t d_x, observation_operator* op) const {
    only_keys(o, "observation", {"A", "mask", "diagonal", "svd", "sigma_y", "y"});
    const int forms = int(o.contains("A")) + int(o.contains("mask")) + int(o.contains("svd"));
    if (forms != 1) bad("observation", "give exactly one of 'A', 'mask' or 'svd' (the operator), got " +
                                           std::to_string(forms));
    for (const char* key : {"sigma_y", "y"})
      if (!o.contains(key)) bad(std::string("observation.") + key, "missing");
    if (o.contains("diagonal") && !o.contains("mask")) bad("observation.diagonal", "only goes with 'mask'");
    try {
      if (o.contains("A")) {
        const array A = matrix(o["A"], "observation.A", -1, d_x);
        *op = observation_operator::dense(A.rows, A.cols, A.values);
      } else if (o.contains("mask")) {
        const std::vector<double> raw = vector(o["mask"], "observation.mask", -1);
        std::vector<std::int64_t> indices(raw.size());
        for (std::size_t i = 0; i < raw.size(); ++i) {
          if (raw[i] != std::floor(raw[i]) || raw[i] < 0 || raw[i] >= double(d_x))
            bad("observation.mask", "value " + std::to_string(i) + " is " + fmt(raw[i]) +
                                        ", not a coordinate index in [0, " + std::to_string(d_x) + ")");
          indices[i] = std::int64_t(raw[i]);
        }
        std::vector<double> gains;
        if (o.contains("diagonal"))
          gains = vector(o["diagonal"], "observation.diagonal", std::int64_t(indices.size()));
        *op = observation_operator::mask(d_x, indices, gains);
      } else {
        const json& f = o["svd"];
        only_keys(f, "observation.svd", {"U", "S", "V"});
        for (const char* key : {"U", "S", "V"})
          if (!f.contains(key)) bad(std::string("observation.svd.") + key, "missing");
        const std::vector<double> S = vector(f["S"], "observation.svd.S", -1);
        const std::int64_t r = std::int64_t(S.size());
        const array U = matrix(f["U"], "observation.svd.U", -1, r);
        const array V = matrix(f["V"], "observation.svd.V", d_x, r);
        *op = observation_operator::svd(U.rows, d_x, U.values, S, V.values);
      }
    } catch (const diffsample::invalid_argument& e) {
      // The library names its own arguments; the file's fields for them are mask, svd.S, svd.U and svd.V.
      std::string message = e.what();
      static const std::pair<std::string, std::string> fields[] = {{"observation.indices:", "observation.mask:"},
                                                                   {"observation.singular_values:", "observation.svd.S:"},
                                                                   {"observation.U:", "observation.svd.U:"},
                                                                   {"observation.V:", "observation.svd.V:"}};
      for (const auto& [argument, field] : fields)
        if (message.rfind(argument, 0) == 0) {
          message = field + message.substr(argument.size());
          break;
        }
      throw input_error(path_ + ": " + message);
    }
    linear_observation obs;
    obs.d_y = op->d_y();
    obs.d_x = op->d_x();
    obs.A = op->matrix();
    in_range(obs.A, "observation", "", -max_abs_value, max_abs_value,
             "entries of the operator A; the FP32 samplers square A x");
    obs.sigma_y = number(o["sigma_y"], "observation.sigma_y");
    if (obs.sigma_y < 0) bad("observation.sigma_y", "must be >= 0, got " + fmt(obs.sigma_y));
    in_range({obs.sigma_y}, "observation.sigma_y", "", 0, max_abs_value, "the FP32 samplers square it");
    std::string y_file;
    obs.y = vector(o["y"], "observation.y", obs.d_y, &y_file);
    in_range(obs.y, "observation.y", y_file, -max_abs_value, max_abs_value,
             "the FP32 samplers square residuals y - A x");
    return obs;
  }

  mutable std::vector<std::string> files_;  ///< the .npy files read (recorded by the const readers)

 private:
  std::string path_, folder_;
  bool read_files_ = true;
};

}  // namespace

void require_finite(const std::vector<double>& values, const std::string& what) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) throw input_error(what + ": value " + std::to_string(i) + " is " + fmt(values[i]));
}

prior_spec grid_prior(std::int64_t dim, int grid, double spacing, double variance, std::vector<double> weights,
                      const char* dim_flag) {
  if (dim < 1) throw usage_error(std::string(dim_flag) + ": expected an integer >= 1, got " + std::to_string(dim));
  if (grid < 1 || grid > max_grid_size)
    throw usage_error("--grid: expected 1.." + std::to_string(max_grid_size) + ", got " + std::to_string(grid));
  if (!(spacing >= 0) || !std::isfinite(spacing))
    throw usage_error("--spacing: expected a finite number >= 0, got " + fmt(spacing));
  if (!(variance >= min_variance && variance <= max_variance))
    throw usage_error("--variance: expected a number in [" + fmt(min_variance) + ", " + fmt(max_variance) +
                      "] (a variance and its inverse must be normal FP32 numbers), got " + fmt(variance));
  if (spacing * double(grid - 1) > max_abs_value)
    throw usage_error("--spacing: " + fmt(spacing) + " x " + std::to_string(grid - 1) + " puts means beyond " +
                      fmt(max_abs_value) + " (the FP32 kernels square coordinate differences)");
  const std::int64_t K = std::int64_t(grid) * grid;
  if (dim > max_grid_values / K)
    throw usage_error(diffsample::limits::above(
        std::string(dim_flag) + ": the grid prior's mean values (components x dimension)",
        std::to_string(K) + " x " + std::to_string(dim), max_grid_values));
  if (weights.empty() && grid == 5)
    weights = {1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 2, 2, 2, 2, 2, 1, 3, 5, 3, 1, 4, 1, 4, 1, 4};  // the demo's weights
  const gaussian_mixture m = grid_mixture(dim, grid, spacing, variance, weights);
  prior_spec s;
  s.dim = dim;
  s.weights = m.weights();
  s.means = m.means();
  s.variances = m.variances();
  s.description = std::to_string(K) + "-component grid mixture";
  return s;
}

std::string peek_executor(const std::string& path) noexcept {
  try {
    // A regular file within the size read_problem() takes (a fifo is not opened: that would wait for a writer).
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > max_problem_bytes) return {};
    std::ifstream in(path, std::ios::binary);
    std::string text(std::size_t(st.st_size), '\0');
    if (!in || !in.read(text.data(), std::streamsize(text.size()))) return {};
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return {};
    const auto sampler = j.find("sampler");
    if (sampler == j.end() || !sampler->is_object()) return {};
    const auto executor = sampler->find("executor");
    return executor != sampler->end() && executor->is_string() ? executor->get<std::string>() : std::string();
  } catch (...) {
    return {};
  }
}

namespace {

// A SAX pass over a parsed file (nlohmann's, the number's own text at hand) that refuses a number which is not zero
// but reads as 0 because it lies below the smallest double (1e-400): the DOM parse keeps the 0 and the run would take
// it (sigma_y = 0, a noise-free observation; eta = 0), as the command line refuses it for a flag. Names the field as
// the reader does ("observation.sigma_y", "prior.means[0][1]").
class underflow_check {
 public:
  explicit underflow_check(const std::string& path) : path_(path) {}
  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    if (v == 0.0) {
      const std::string mantissa = text.substr(0, text.find_first_of("eE"));
      if (mantissa.find_first_of("123456789") != std::string::npos)
        throw input_error(path_ + ": " + field() + ": " + printable(text) +
                          " is not zero but below the smallest double (about 4.9e-324)");
    }
    return value();
  }
  bool string(json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool start_object(std::size_t) {
    frames_.push_back({false, 0, {}});
    return true;
  }
  bool key(json::string_t& k) {
    frames_.back().key = k;
    return true;
  }
  bool end_object() {
    frames_.pop_back();
    return value();
  }
  bool start_array(std::size_t) {
    frames_.push_back({true, 0, {}});
    return true;
  }
  bool end_array() {
    frames_.pop_back();
    return value();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    throw input_error(path_ + ": malformed JSON: " + printable(e.what(), 4096));  // not reached: parsed before
  }

 private:
  struct frame {
    bool array;
    std::int64_t index;
    std::string key;
  };
  // A value ended: the next one of an array has the next index.
  bool value() {
    if (!frames_.empty() && frames_.back().array) ++frames_.back().index;
    return true;
  }
  std::string field() const {
    std::string name;
    for (const frame& f : frames_) {
      if (f.array)
        name += "[" + std::to_string(f.index) + "]";
      else
        name += (name.empty() ? "" : ".") + printable(f.key);
    }
    return name;
  }
  const std::string& path_;
  std::vector<frame> frames_;
};

}  // namespace

problem read_problem(const std::string& path) {
  // Every caller reads --problem's value: an empty one (an unset shell variable, --problem "$FILE") is a bad command
  // line, as an empty output name is, not a file that cannot be opened (": cannot open").
  if (path.empty()) throw usage_error("--problem: empty file name");
  // A regular file of at most max_problem_bytes: a device (/dev/zero), a fifo or a huge file is refused before
  // anything is read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw input_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw input_error(path + ": cannot open: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw input_error(path + ": cannot open: " +
                      (S_ISDIR(st.st_mode) ? std::string("it is a folder")
                                           : std::string("not a regular file (a device, fifo or socket)")));
  }
  if (st.st_size > max_problem_bytes) {
    ::close(fd);
    throw input_error(path + ": " + std::to_string(st.st_size) +
                      " bytes is too large for a problem file (at most " + std::to_string(max_problem_bytes >> 20) +
                      " MiB; give large arrays as .npy files)");
  }
  std::string text(std::size_t(st.st_size), '\0');
  if (const int err = npy::read_fully(fd, text.data(), text.size())) {
    ::close(fd);
    throw input_error(path + ": read failed: " + std::strerror(err > 0 ? err : EIO));
  }
  ::close(fd);
  return parse_problem(text, path);
}

problem parse_problem(std::string_view json_text, const std::string& path, bool read_files) {
  json doc;
  // A key given twice in one object is refused (the parser would keep one value silently): one set of keys per
  // object being parsed, and the key that opened each (its dotted name is built only for the message, so that the
  // names cost nothing per level: built per level they made a 600 KB file of objects 100,000 deep take 13.7 GB).
  // Nesting deeper than max_problem_depth is refused: no problem file needs a tenth of it.
  std::vector<std::set<std::string>> keys;
  std::vector<std::string> opened_by;
  std::string last_key;
  const json::parser_callback_t refuse_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_problem_depth)
      throw input_error(path + ": objects and arrays nested deeper than " + std::to_string(max_problem_depth) +
                        " levels");
    if (event == json::parse_event_t::object_start) {
      opened_by.push_back(keys.empty() ? std::string() : last_key);
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys.pop_back();
      opened_by.pop_back();
    } else if (event == json::parse_event_t::key) {
      last_key = printable(parsed.get<std::string>());
      if (!keys.back().insert(parsed.get<std::string>()).second) {
        std::string name;
        for (const std::string& k : opened_by)
          if (!k.empty()) name += k + ".";
        throw input_error(path + ": " + name + last_key + ": given twice");
      }
    }
    return true;
  };
  try {
    doc = json::parse(json_text, refuse_duplicates);
  } catch (const json::parse_error& e) {
    throw input_error(path + ": malformed JSON: " + printable(e.what(), 4096));
  } catch (const json::exception& e) {  // e.g. a number beyond double range
    throw input_error(path + ": a number is not finite (beyond double range): " + printable(e.what(), 4096));
  }
  underflow_check underflow(path);
  json::sax_parse(json_text, &underflow);
  reader r(path, read_files);
  r.only_keys(doc, "", {"prior", "sampler", "observation", "comment"});
  problem p;
  p.path = path;
  p.files.push_back(path);
  if (doc.contains("prior") && doc["prior"].is_object() && doc["prior"].contains("probabilities"))
    p.binary_prior = r.binary_prior(doc["prior"]);
  else if (doc.contains("prior"))
    p.prior = r.prior(doc["prior"]);
  if (doc.contains("sampler")) p.sampler = r.sampler(doc["sampler"], p.binary_prior.has_value());
  if (doc.contains("observation")) {
    if (p.binary_prior) r.bad("observation", "applies to Gaussian-mixture priors, not to a Bernoulli-mixture prior");
    if (!p.prior) r.bad("observation", "needs a prior in the same file");
    observation_operator op;
    p.observation = r.observation(doc["observation"], p.prior->dim, &op);
    p.observation_op = std::move(op);
  }
  p.files.insert(p.files.end(), r.files_.begin(), r.files_.end());
  return p;
}

}  // namespace diffsample::cli
