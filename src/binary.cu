// Binary data: the Bernoulli mixture's storage and validation, its evaluate / sample launchers, then the discrete
// samplers' launchers (one fused launch running every step of every chain, on either executor).
#include <cmath>
#include <iomanip>
#include <limits>
#include <utility>

#include "kernels/binary.cuh"
#include "kernels/rng.cuh"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/binary.hpp>
#include <diffsample/error.hpp>

namespace diffsample {
namespace detail {

/// Storage behind bernoulli_mixture: FP64 and FP32 host arrays and one device allocation.
struct bernoulli_storage {
  std::int64_t components = 0, dim = 0;
  std::vector<double> weights, probabilities;           // normalised weights; K x d
  std::vector<double> log_weights, theta, logcosh_theta;  // FP64 parameters of the kernels
  std::vector<double> cumulative;                         // FP64 cumulative weights (the exact sample's pick)
  std::vector<float> log_weights32, theta32, logcosh_theta32, probabilities32;
  // cumulative (K doubles: 2 K floats, first so that they are 8-byte aligned) | log_weights | theta | logcosh_theta
  // | probabilities
  float* device = nullptr;

  ~bernoulli_storage() {
    if (device != nullptr) (void)cudaFree(device);
  }
  kernels::bernoulli_view<double> view64() const {
    return {log_weights.data(), theta.data(), logcosh_theta.data(), int(components), int(dim)};
  }
  kernels::bernoulli_view<float> view(executor where) const {
    if (where == executor::cuda) {
      const std::int64_t K = components, Kd = components * dim;
      return {device + 2 * K, device + 3 * K, device + 3 * K + Kd, int(components), int(dim)};
    }
    return {log_weights32.data(), theta32.data(), logcosh_theta32.data(), int(components), int(dim)};
  }
  const double* cumulative_for(executor where) const {
    return where == executor::cuda ? reinterpret_cast<const double*>(device) : cumulative.data();
  }
  const float* probs(executor where) const {
    return where == executor::cuda ? device + 3 * components + 2 * components * dim : probabilities32.data();
  }
};

}  // namespace detail

namespace {

using kernels::binary_evaluate_functor;
using kernels::binary_sample_functor;
using kernels::strided_vec;

void check_alpha(const char* name, double alpha) {
  DIFFSAMPLE_EXPECTS(std::isfinite(alpha) && alpha > 0, name << ": must be positive and finite, got " << alpha);
}

// The strength of the FP32 evaluation and of the discrete samplers, which take it as a float: at most max_abs_value,
// as the other strengths and scales of the FP32 kernels. Above FLT_MAX it rounded to +inf, and the log density on
// {-1,1}^d came out NaN (inf x 0 in alpha sum_j (|y_j| - 1)) where the FP64 reference is finite.
void check_alpha_fp32(const char* name, double alpha) {
  check_alpha(name, alpha);
  detail::check_at_most_max_abs(name, alpha);
}

// The arguments evaluate() and evaluate_fp64() share: the quantity, n points of dimension d and the strength (at
// most max_abs_value for the FP32 evaluate()).
void check_evaluate(quantity what, std::int64_t n, std::int64_t d, double alpha, bool fp32) {
  DIFFSAMPLE_EXPECTS(what == quantity::log_density || what == quantity::score || what == quantity::denoiser,
                     "what: invalid quantity " << static_cast<int>(what));
  detail::check_count("n", n, d);
  if (fp32)
    check_alpha_fp32("alpha", alpha);
  else
    check_alpha("alpha", alpha);
}

}  // namespace

// --- host API: the mixture ------------------------------------------------------------------------------------

bernoulli_mixture::bernoulli_mixture(std::int64_t dim, std::vector<double> weights, std::vector<double> probabilities)
    : storage_(std::make_unique<detail::bernoulli_storage>()) {
  const std::int64_t K = static_cast<std::int64_t>(weights.size());
  detail::check_mixture_shape(dim, K, "probabilities", probabilities.size());
  detail::check_values("weights", weights, true);
  for (std::size_t i = 0; i < probabilities.size(); ++i)
    DIFFSAMPLE_EXPECTS(probabilities[i] >= 0 && probabilities[i] <= 1,
                       "probabilities: value " << i << " is " << std::setprecision(17) << probabilities[i]
                                               << " (must be in [0, 1])");  // 1 + 1e-7 is not "1"
  auto& st = *storage_;
  detail::normalise_weights(weights, st.log_weights, st.cumulative);
  st.components = K;
  st.dim = dim;
  st.weights = std::move(weights);
  st.probabilities = std::move(probabilities);
  st.theta.resize(K * dim);
  st.logcosh_theta.resize(K * dim);
  for (std::int64_t i = 0; i < K * dim; ++i) {
    const double p = st.probabilities[i];
    double t = 0.5 * (std::log(p) - std::log1p(-p));  // +-inf at p = 1 or 0
    t = std::fmax(-kernels::max_theta, std::fmin(kernels::max_theta, t));
    st.theta[i] = t;
    st.logcosh_theta[i] = kernels::logcosh(t);
  }
  st.log_weights32.assign(st.log_weights.begin(), st.log_weights.end());
  st.theta32.assign(st.theta.begin(), st.theta.end());
  st.logcosh_theta32.assign(st.logcosh_theta.begin(), st.logcosh_theta.end());
  st.probabilities32.assign(st.probabilities.begin(), st.probabilities.end());

  if (cuda_available()) {
    detail::refuse_legacy_capture("bernoulli_mixture's constructor", "make the mixture");
    const std::size_t count = 3 * K + 3 * K * dim;
    detail::check_allocation("bernoulli_mixture", count * sizeof(float), executor::cuda);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&st.device, count * sizeof(float)));
    // Copied on the legacy default stream and waited for: the tables are in place for kernels on any stream.
    detail::upload_and_wait(st.device, st.cumulative.data(), st.cumulative.size() * sizeof(double), cudaStreamLegacy);
    float* p = st.device + 2 * K;
    for (const auto* v : {&st.log_weights32, &st.theta32, &st.logcosh_theta32, &st.probabilities32}) {
      detail::upload_and_wait(p, v->data(), v->size() * sizeof(float), cudaStreamLegacy);
      p += v->size();
    }
  }
}

bernoulli_mixture::~bernoulli_mixture() = default;
bernoulli_mixture::bernoulli_mixture(bernoulli_mixture&&) noexcept = default;
bernoulli_mixture& bernoulli_mixture::operator=(bernoulli_mixture&&) noexcept = default;

std::int64_t bernoulli_mixture::components() const noexcept { return storage_->components; }
std::int64_t bernoulli_mixture::dim() const noexcept { return storage_->dim; }
const std::vector<double>& bernoulli_mixture::weights() const noexcept { return storage_->weights; }
const std::vector<double>& bernoulli_mixture::probabilities() const noexcept { return storage_->probabilities; }

executor bernoulli_mixture::evaluate(float* out, std::int64_t n, const float* y, double alpha, quantity what,
                                     execution exec) const {
  const std::int64_t d = dim();
  check_evaluate(what, n, d, alpha, true);
  const executor where = detail::resolve_executor(exec.kind, y);
  detail::check_buffer("y", y, n * d, sizeof(float), where);
  detail::check_buffer("out", out, what == quantity::log_density ? n : n * d, sizeof(float), where);
  // Points are evaluated in parallel: out may not share y's memory, in place included.
  detail::check_disjoint({{"y", y, static_cast<std::size_t>(n * d) * sizeof(float)},
                          {"out", out, static_cast<std::size_t>(what == quantity::log_density ? n : n * d) *
                                           sizeof(float)}});
  const float a = float(alpha);
  kernels::for_each_index(where, n,
                          binary_evaluate_functor{storage_->view(where), y, out, a,
                                                  float(kernels::bernoulli_reduced_norm(int(d), double(a))), what},
                          exec.stream);
  return where;
}

void bernoulli_mixture::evaluate_fp64(double* out, std::int64_t n, const double* y, double alpha,
                                      quantity what) const {
  const std::int64_t d = dim();
  check_evaluate(what, n, d, alpha, false);
  DIFFSAMPLE_EXPECTS(n == 0 || (y != nullptr && out != nullptr), "y, out: null pointer");
  const std::size_t y_bytes = static_cast<std::size_t>(n * d) * sizeof(double);
  detail::check_disjoint(
      {{"y", y, y_bytes}, {"out", out, what == quantity::log_density ? static_cast<std::size_t>(n) * sizeof(double)
                                                                      : y_bytes}});
  const auto mix = storage_->view64();
  const double log_norm = kernels::bernoulli_reduced_norm(int(d), alpha);
  cpu::parallel_for_each(n, [&](std::int64_t i) {
    const strided_vec<const double> yi{y + i * d, 1, int(d)};
    strided_vec<double> oi{out + i * d, 1, int(d)};
    if (what == quantity::log_density) {
      out[i] = kernels::bernoulli_log_density(mix, yi, alpha, log_norm);
    } else {
      kernels::bernoulli_posterior_mean(mix, yi, alpha, log_norm, oi);
      if (what == quantity::score)
        for (int j = 0; j < int(d); ++j) oi[j] *= alpha;
    }
  });
}

executor bernoulli_mixture::sample(float* out, std::int64_t n, double alpha, std::uint64_t seed, std::int32_t* labels,
                                   std::uint64_t first_index, execution exec) const {
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  DIFFSAMPLE_EXPECTS(alpha > 0 && !std::isnan(alpha), "alpha: must be positive (or +infinity), got " << alpha);
  limits::check("first_index", first_index, 0, limits::max_first_chain);
  const executor where = detail::resolve_executor(exec.kind, out);
  detail::check_buffer("out", out, n * d, sizeof(float), where);
  if (labels != nullptr) detail::check_buffer("labels", labels, n, sizeof(std::int32_t), where);
  detail::check_disjoint({{"out", out, static_cast<std::size_t>(n * d) * sizeof(float)},
                          {"labels", labels, static_cast<std::size_t>(n) * sizeof(std::int32_t)}});
  const double flip = std::isinf(alpha) ? 0.0 : 1.0 / (1.0 + std::exp(2.0 * alpha));
  kernels::for_each_index(where, n,
                          binary_sample_functor{storage_->cumulative_for(where), storage_->probs(where), int(components()),
                                                int(d), out, labels, float(flip), seed, first_index},
                          exec.stream);
  return where;
}

// --- host API: the discrete samplers --------------------------------------------------------------------------

namespace {

constexpr std::uint64_t max_stream_steps = kernels::philox_max_step - 1;  // the last step keys the uniform start

void check_discrete(const char* method_name, discrete_method method, double alpha, double eta, std::int64_t steps,
                    std::uint64_t first_chain) {
  DIFFSAMPLE_EXPECTS(method == discrete_method::one_stage || method == discrete_method::metropolis ||
                         method == discrete_method::two_stage,
                     method_name << ": invalid value " << static_cast<int>(method));
  check_alpha_fp32("options.alpha", alpha);
  detail::check_positive("options.eta", eta);
  DIFFSAMPLE_EXPECTS(steps >= 0, "options.steps: must be >= 0, got " << steps);
  limits::check("options.first_chain", first_chain, 0, limits::max_first_chain);
}

void check_langevin(const bernoulli_mixture& prior, std::int64_t n, const discrete_langevin_options& o) {
  detail::check_count("n", n, prior.dim());
  check_discrete("options.method", o.method, o.alpha, o.eta, o.steps, o.first_chain);
  DIFFSAMPLE_EXPECTS(o.first_step <= max_stream_steps && std::uint64_t(o.steps) <= max_stream_steps - o.first_step,
                     "options.first_step: first_step + steps = " << o.first_step << " + " << o.steps
                                                                 << ", the limit is " << limits::spell(max_stream_steps)
                                                                 << " (the random stream's steps)");
}

void check_walk_jump(const bernoulli_mixture& prior, std::int64_t n, const discrete_walk_jump_options& o) {
  detail::check_count("n", n, prior.dim());
  check_discrete("options.method", o.method, o.alpha, o.eta, o.steps, o.first_chain);
  // Whatever the steps (0 too: the jump alone draws the measurements), as diffusion()'s SMS and the program do; the
  // flips' sum u stays exact in FP32 (up to 2^24) and the lattice table's levels in range.
  limits::check("options.measurements", o.measurements, 1, limits::max_inner_steps);
  DIFFSAMPLE_EXPECTS(o.steps == 0 || o.measurements <= std::int64_t(max_stream_steps) / o.steps,
                     "options.measurements: measurements x steps = " << o.measurements << " x " << o.steps
                                                                     << ", the limit is "
                                                                     << limits::spell(max_stream_steps)
                                                                     << " (the random stream's steps)");
}

/// The caller's start on the host (CPU executor): every entry +1 or -1. Device-resident starts are left to the chain
/// functor (a row of NaN, -1 accepted moves), as a scan would synchronise.
void check_start(const float* y, std::int64_t n, std::int64_t d) {
  for (std::int64_t e = 0; e < n * d; ++e)
    DIFFSAMPLE_EXPECTS(y[e] == 1.f || y[e] == -1.f,
                       "y: entry " << e << " (chain " << e / d << ", coordinate " << e % d << ") is " << y[e]
                                   << ": a start state's entries must be +1 or -1 (or set options.start_uniform)");
}

kernels::discrete_params params(const bernoulli_mixture& prior, executor where, discrete_method method, double alpha,
                                double eta, std::int64_t steps, std::uint64_t seed, std::uint64_t first_chain,
                                std::uint64_t first_step, std::int64_t* accepted) {
  const double log_norm = kernels::bernoulli_reduced_norm(int(prior.dim()), double(float(alpha)));
  return {prior.storage().view(where), float(alpha), float(eta), static_cast<int>(method), steps, seed, first_chain,
          first_step, accepted, {nullptr, 0}, float(log_norm)};
}

/// Entries of the lattice table for points with |level| <= max_level, or 0 when it would exceed
/// limits::max_lattice_entries (the chains then evaluate the formulas directly).
std::int64_t table_entries(const bernoulli_mixture& prior, std::int64_t max_level) {
  const std::int64_t levels = 2 * max_level + 1, kd = prior.components() * prior.dim();
  return kd <= limits::max_lattice_entries / levels ? kd * levels : 0;
}

/// Vector workspace (vectors x n x d floats) followed by the lattice table; refused when it reaches 2^63 bytes (an n x d
/// within detail::check_count's 8 bytes per element could wrap the size_t product around to a small workspace).
std::size_t discrete_bytes(const bernoulli_mixture& prior, std::int64_t n, int vectors, std::int64_t max_level) {
  const std::int64_t table = table_entries(prior, max_level) * std::int64_t(sizeof(kernels::lattice_term));
  DIFFSAMPLE_EXPECTS(n <= (std::numeric_limits<std::int64_t>::max() - table) / (std::int64_t(vectors) * 4) / prior.dim(),
                     "n: " << n << " x " << prior.dim() << " elements need " << vectors
                           << " vectors of floats each, beyond a 64-bit byte count");
  return std::size_t(vectors) * static_cast<std::size_t>(n) * static_cast<std::size_t>(prior.dim()) * sizeof(float) +
         static_cast<std::size_t>(table);
}

/// Builds the lattice table for p after the n x d x vectors floats of ws (asynchronous on CUDA) and points p at it.
void build_table(kernels::discrete_params& p, const bernoulli_mixture& prior, float* ws, std::int64_t n, int vectors,
                 std::int64_t max_level, double alpha, executor where, cudaStream_t stream) {
  const std::int64_t entries = table_entries(prior, max_level);
  if (entries == 0) return;
  auto* table = reinterpret_cast<kernels::lattice_term*>(ws + std::int64_t(vectors) * n * prior.dim());
  kernels::for_each_index(where, entries, kernels::lattice_table_functor{p.mix, alpha, int(max_level), table}, stream);
  p.table = {table, int(max_level)};
}

/// The caller's workspace (checked) or one allocated for this call.
float* workspace_for(std::size_t need, void* workspace, std::size_t workspace_bytes, executor where,
                     cudaStream_t stream, std::unique_ptr<detail::scratch>& owned) {
  return reinterpret_cast<float*>(
      detail::workspace_or_scratch(need, workspace, workspace_bytes, sizeof(float), where, stream, owned));
}

/// The chains of a discrete sampler: the caller's workspace (or one for this call), the lattice table for levels up
/// to max_level after its `vectors` x n x d floats, then one launch of Body over the n chains of x.
template <class Body>
void run_chains(const bernoulli_mixture& prior, Body body, float* x, std::int64_t n, int vectors,
                std::int64_t max_level, double alpha, bool read_start, std::size_t need, void* workspace,
                std::size_t workspace_bytes, executor where, cudaStream_t stream) {
  std::unique_ptr<detail::scratch> owned;
  float* ws = workspace_for(need, workspace, workspace_bytes, where, stream, owned);
  build_table(body.p, prior, ws, n, vectors, max_level, alpha, where, stream);
  kernels::for_each_index(where, n,
                          kernels::binary_chain_functor<Body>{body, x, ws, n, int(prior.dim()), where == executor::cuda,
                                                              read_start},
                          stream);
}

}  // namespace

std::size_t discrete_langevin_workspace_bytes(const bernoulli_mixture& prior, std::int64_t n,
                                              const discrete_langevin_options& options) {
  check_langevin(prior, n, options);
  return discrete_bytes(prior, n, 4, 1);
}

executor discrete_langevin(const bernoulli_mixture& prior, float* y, discrete_langevin_outputs outputs, std::int64_t n,
                           const discrete_langevin_options& o, execution exec, void* workspace,
                           std::size_t workspace_bytes) {
  check_langevin(prior, n, o);
  const executor where = detail::resolve_executor(exec.kind, y);
  detail::check_buffer("y", y, n * prior.dim(), sizeof(float), where);
  if (outputs.accepted != nullptr)
    detail::check_buffer("outputs.accepted", outputs.accepted, n, sizeof(std::int64_t), where);
  if (n == 0) return where;
  const std::size_t need = discrete_langevin_workspace_bytes(prior, n, o);
  detail::check_workspace_bytes(need, workspace, workspace_bytes);
  // The counts and the workspace are written while other chains still read y: none may share memory.
  detail::check_disjoint({{"y", y, static_cast<std::size_t>(n * prior.dim()) * sizeof(float)},
                          {"outputs.accepted", outputs.accepted, static_cast<std::size_t>(n) * sizeof(std::int64_t)},
                          {"workspace", workspace, need}});
  if (!o.start_uniform && where == executor::cpu) check_start(y, n, prior.dim());
  const kernels::discrete_langevin_body body{
      params(prior, where, o.method, o.alpha, o.eta, o.steps, o.seed, o.first_chain, o.first_step, outputs.accepted),
      o.start_uniform};
  run_chains(prior, body, y, n, 4, 1, o.alpha, !o.start_uniform, need, workspace, workspace_bytes, where,
             exec.stream);
  return where;
}

std::size_t discrete_walk_jump_workspace_bytes(const bernoulli_mixture& prior, std::int64_t n,
                                               const discrete_walk_jump_options& options) {
  check_walk_jump(prior, n, options);
  return discrete_bytes(prior, n, 5, options.measurements);
}

executor discrete_walk_jump(const bernoulli_mixture& prior, float* x, discrete_walk_jump_outputs outputs,
                            std::int64_t n, const discrete_walk_jump_options& o, execution exec, void* workspace,
                            std::size_t workspace_bytes) {
  check_walk_jump(prior, n, o);
  const std::int64_t d = prior.dim();
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  if (outputs.noisy != nullptr) detail::check_buffer("outputs.noisy", outputs.noisy, n * d, sizeof(float), where);
  if (outputs.accepted != nullptr)
    detail::check_buffer("outputs.accepted", outputs.accepted, n, sizeof(std::int64_t), where);
  if (n == 0) return where;
  const std::size_t need = discrete_walk_jump_workspace_bytes(prior, n, o);
  detail::check_workspace_bytes(need, workspace, workspace_bytes);
  // Each output is written by its own chain while the others run: no two may share memory.
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, x_bytes},
                          {"outputs.noisy", outputs.noisy, x_bytes},
                          {"outputs.accepted", outputs.accepted, static_cast<std::size_t>(n) * sizeof(std::int64_t)},
                          {"workspace", workspace, need}});
  const kernels::discrete_walk_jump_body body{
      params(prior, where, o.method, o.alpha, o.eta, o.steps, o.seed, o.first_chain, 0, outputs.accepted),
      o.measurements, o.mean, outputs.noisy};
  run_chains(prior, body, x, n, 5, o.measurements, o.alpha, false, need, workspace, workspace_bytes, where,
             exec.stream);
  return where;
}

}  // namespace diffsample
