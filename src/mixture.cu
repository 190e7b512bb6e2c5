// Gaussian mixtures: validation and storage, then the launchers of evaluate / denoiser_jvp / sample, each one
// functor over points (kernels/mixture_points.cuh) run by either executor.
#include <algorithm>
#include <cmath>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "kernels/mixture.cuh"
#include "kernels/mixture_points.cuh"
#include "kernels/rng.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/guided_jvp.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/mixture_storage.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/error.hpp>
#include <diffsample/mixture.hpp>

namespace diffsample {
namespace detail {

mixture_storage::~mixture_storage() {
  if (device != nullptr) (void)cudaFree(device);
}

// The device allocation: log weights (K floats), cumulative weights (K doubles: 2 K floats), means (K d), variances,
// the cumulative weights, the means and the variances each starting 16-byte aligned (so that rows of a d divisible by 4 are, and tables are staged with vector loads).
std::int64_t mixture_storage::cumulative_offset() const { return kernels::mixture_channels::padded(components); }
std::int64_t mixture_storage::means_offset() const {
  return kernels::mixture_channels::padded(cumulative_offset() + 2 * components);
}
std::int64_t mixture_storage::variances_offset() const {
  return means_offset() + kernels::mixture_channels::padded(components * dim);
}

kernels::mixture_view<float> mixture_storage::view(executor where) const {
  if (where == executor::cuda) {
    const float* base = device;
    return {base, base + means_offset(), base + variances_offset(), int(components), int(dim), isotropic};
  }
  return {log_weights32.data(), means32.data(), variances32.data(), int(components), int(dim), isotropic};
}

const double* mixture_storage::cumulative_for(executor where) const {
  return where == executor::cuda ? reinterpret_cast<const double*>(device + cumulative_offset()) : cumulative.data();
}

void check_mixture_channel(const mixture_storage& mix, const char* name, channel ch) {
  // a^2 v + s^2 grows with v: the smallest variance bounds every component's from below. Above, s <= max_abs_value
  // (check_channel) and a^2 v <= max_variance keep c <= 2 max_variance, whose inverse is a normal FP32 number.
  const double a2 = ch.a * ch.a, s2 = ch.s * ch.s;
  const double c_min = a2 * mix.min_variance + s2;
  DIFFSAMPLE_EXPECTS(c_min >= min_variance,
                     name << ": a^2 v + s^2 = " << c_min << " at a = " << ch.a << ", s = " << ch.s
                          << " and the smallest variance v = " << mix.min_variance << " is below min_variance = "
                          << min_variance
                          << " (a component's variance at the channel and its inverse must be normal FP32 numbers)");
  DIFFSAMPLE_EXPECTS(a2 * mix.max_variance <= max_variance,
                     name << ": a^2 v = " << a2 * mix.max_variance << " at a = " << ch.a
                          << " and the largest variance v = " << mix.max_variance << " is above max_variance = "
                          << max_variance << " (the FP32 kernels form a^2 v)");
  DIFFSAMPLE_EXPECTS(ch.a * mix.max_abs_mean <= max_abs_value,
                     name << ": a |mu| = " << ch.a * mix.max_abs_mean << " at a = " << ch.a
                          << " and the largest mean |mu| = " << mix.max_abs_mean << " is above max_abs_value = "
                          << max_abs_value << " (the FP32 kernels square x - a mu)");
}

}  // namespace detail

namespace {

using kernels::strided_vec;

/// The CPU executor's direct path for one channel: the channel's constants once (the table the fused samplers build),
/// then `packed(c, target)` on a SIMD target, or `per_point(c, first, last)` over ranges of points on the scalar one.
template <class Packed, class PerPoint>
void on_host_channel(const detail::mixture_storage& mix, channel ch, std::int64_t n, Packed packed, PerPoint per_point) {
  const kernels::mixture_view<float> view = mix.view(executor::cpu);
  // The channel's constants in a per-thread buffer that only grows: the guided samplers' step-by-step CPU runs call
  // this once per step, and a caller's workspace must leave them nothing to allocate.
  static thread_local std::vector<float> table;
  const auto floats = static_cast<std::size_t>(kernels::mixture_channels::table_floats(view, 1));
  if (table.size() < floats) table.resize(floats);
  const kernels::mixture_channels channels = kernels::mixture_channels::in(view, 1, table.data());
  const kernels::channel_table_functor<kernels::langevin_channel> fill{channels, {float(ch.a), float(ch.s)}};
  for (std::int64_t k = 0; k < view.components; ++k) fill(k);
  const kernels::channel_view c = channels.at(0, float(ch.a), float(ch.s));
  const cpu::simd_target target = cpu::chain_target();
  if (target != cpu::simd_target::scalar) {
    packed(c, target);
  } else {
    cpu::parallel_for_range(n, [&](std::int64_t first, std::int64_t last) { per_point(c, first, last); });
  }
}

}  // namespace

// --- host API ---------------------------------------------------------------------------------------------------

gaussian_mixture::gaussian_mixture(std::int64_t dim, std::vector<double> weights, std::vector<double> means,
                                   std::vector<double> variances)
    : storage_(std::make_unique<detail::mixture_storage>()) {
  const std::int64_t K = static_cast<std::int64_t>(weights.size());
  detail::check_mixture_shape(dim, K, "means", means.size());
  const bool iso = static_cast<std::int64_t>(variances.size()) == K;
  DIFFSAMPLE_EXPECTS(iso || static_cast<std::int64_t>(variances.size()) == K * dim,
                     "variances: expected K = " << K << " (isotropic) or K x d = " << K * dim << " values, got "
                                                << variances.size());
  detail::check_values("weights", weights, true);
  detail::check_values("means", means, false);
  detail::check_values("variances", variances, true);
  detail::check_range("means", means, -max_abs_value, max_abs_value,
                      "the FP32 kernels square coordinate differences");
  detail::check_range("variances", variances, min_variance, max_variance,
                      "a variance and its inverse must be normal FP32 numbers");
  auto& st = *storage_;
  // The host tables made here (the weights' logs and running sums in FP64, the FP32 copies of the weights' logs, the
  // means and the variances) are allocated one after the other; one the host cannot give is out_of_memory naming it
  // and its size, as the library reports every allocation, not std::bad_alloc.
  const char* making = "the log-weights and cumulative weights (K doubles each)";
  std::size_t making_bytes = 2 * sizeof(double) * static_cast<std::size_t>(K);
  try {
    detail::normalise_weights(weights, st.log_weights, st.cumulative);
    making = "the FP32 copy of the log-weights (K floats)";
    making_bytes = sizeof(float) * static_cast<std::size_t>(K);
    st.log_weights32.assign(st.log_weights.begin(), st.log_weights.end());
    making = "the FP32 copy of the means (K x d floats)";
    making_bytes = sizeof(float) * means.size();
    st.means32.assign(means.begin(), means.end());
    making = iso ? "the FP32 copy of the variances (K floats)" : "the FP32 copy of the variances (K x d floats)";
    making_bytes = sizeof(float) * variances.size();
    st.variances32.assign(variances.begin(), variances.end());
  } catch (const std::bad_alloc&) {
    throw out_of_memory("gaussian_mixture: " + std::string(making) + " for K = " + std::to_string(K) + ", d = " +
                        std::to_string(dim) + " could not be allocated on the host (" + std::to_string(making_bytes) +
                        " bytes)");
  }
  st.components = K;
  st.dim = dim;
  st.isotropic = iso;
  st.min_variance = *std::min_element(variances.begin(), variances.end());
  st.max_variance = *std::max_element(variances.begin(), variances.end());
  for (const double m : means) st.max_abs_mean = std::max(st.max_abs_mean, std::fabs(m));
  st.weights = std::move(weights);
  st.means = std::move(means);
  st.variances = std::move(variances);

  if (cuda_available()) {
    detail::refuse_legacy_capture("gaussian_mixture's constructor", "make the mixture");
    const std::size_t count = static_cast<std::size_t>(st.variances_offset()) + st.variances32.size();
    detail::check_allocation("gaussian_mixture", count * sizeof(float), executor::cuda);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&st.device, count * sizeof(float)));
    const std::int64_t offsets[] = {0, st.means_offset(), st.variances_offset()};
    // On the legacy default stream, then synchronised: the tables have landed for kernels on any stream.
    int table = 0;
    for (const auto* v : {&st.log_weights32, &st.means32, &st.variances32}) {
      DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(st.device + offsets[table++], v->data(), v->size() * sizeof(float),
                                          cudaMemcpyHostToDevice, cudaStreamLegacy));
    }
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(st.device + st.cumulative_offset(), st.cumulative.data(),
                                        st.cumulative.size() * sizeof(double), cudaMemcpyHostToDevice,
                                        cudaStreamLegacy));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(cudaStreamLegacy));
  }
}

gaussian_mixture::~gaussian_mixture() = default;
gaussian_mixture::gaussian_mixture(gaussian_mixture&&) noexcept = default;
gaussian_mixture& gaussian_mixture::operator=(gaussian_mixture&&) noexcept = default;

std::int64_t gaussian_mixture::components() const noexcept { return storage_->components; }
std::int64_t gaussian_mixture::dim() const noexcept { return storage_->dim; }
bool gaussian_mixture::isotropic() const noexcept { return storage_->isotropic; }
const std::vector<double>& gaussian_mixture::weights() const noexcept { return storage_->weights; }
const std::vector<double>& gaussian_mixture::means() const noexcept { return storage_->means; }
const std::vector<double>& gaussian_mixture::variances() const noexcept { return storage_->variances; }

executor gaussian_mixture::evaluate_direct(quantity what, const float* x, std::int64_t n, channel ch, float* out,
                                           execution exec) const {
  // Called by evaluate() after its checks, with exec.kind resolved.
  detail::evaluate_direct_unchecked(*storage_, what, x, n, ch, out, exec);
  return exec.kind;
}

void detail::evaluate_direct_unchecked(const mixture_storage& mix, quantity what, const float* x, std::int64_t n,
                                       channel ch, float* out, execution exec) {
  const std::int64_t d = mix.dim;
  const executor where = exec.kind;
  // The CPU executor evaluates with the fused samplers' own functions (constants of the channel computed once, the
  // same SIMD target), so that a stepwise plan fed these outputs reproduces a fused run bit for bit.
  if (where == executor::cpu && n > 0) {
    on_host_channel(mix, ch, n,
                    [&](const kernels::channel_view& c, cpu::simd_target target) {
                      cpu::run_evaluate(target, c, static_cast<int>(what), x, n, d, out);
                    },
                    [&](const kernels::channel_view& c, std::int64_t first, std::int64_t last) {
                      std::vector<float> scratch(what == quantity::log_density ? d : 0);  // the score beside log p
                      for (std::int64_t i = first; i < last; ++i) {
                        const strided_vec<const float> xi{x + i * d, 1, int(d)};
                        strided_vec<float> oi{what == quantity::log_density ? scratch.data() : out + i * d, 1, int(d)};
                        if (what == quantity::denoiser) {
                          kernels::channel_denoiser<float>(c, xi, oi);
                        } else {
                          const float log_p = kernels::channel_score<float>(c, xi, oi);
                          if (what == quantity::log_density) out[i] = log_p;
                        }
                      }
                    });
    return;
  }
  kernels::for_each_row_staged(
      where, n, kernels::mixture_evaluate_functor{mix.view(where), x, out, float(ch.a), float(ch.s), what},
      exec.stream);
}

executor gaussian_mixture::denoiser_jvp(float* out, std::int64_t n, const float* x, const float* v, channel ch,
                                        execution exec) const {
  evaluate_options direct;
  direct.path = mixture_path::direct;
  return denoiser_jvp(out, n, x, v, ch, direct, exec).ran;
}

void detail::denoiser_jvp_unchecked(const mixture_storage& mix, const float* x, const float* v, std::int64_t n,
                                    channel ch, float* out, execution exec) {
  const std::int64_t d = mix.dim;
  const executor where = exec.kind;
  // Packs of points (src/cpu/denoiser_jvp.hpp) or, on the scalar target, one point at a time with the same constants
  // (kernels::mixture_jvp_functor, kernels::channel_jvp), as evaluate_direct_unchecked() does.
  if (where == executor::cpu && n > 0) {
    on_host_channel(mix, ch, n,
                    [&](const kernels::channel_view& c, cpu::simd_target target) {
                      cpu::run_denoiser_jvp(target, c, x, v, n, d, out);
                    },
                    [&](const kernels::channel_view& c, std::int64_t first, std::int64_t last) {
                      const kernels::mixture_jvp_functor f{c, x, v, out, int(d)};
                      for (std::int64_t i = first; i < last; ++i) f(i);
                    });
    return;
  }
  if (n == 0) return;
  // CUDA: the mixture's constants at the channel once per call (1 / c_k, a v_k / c_k, the logits' normalisers; FP64
  // rounded to float, the values of the CPU executor's table), into a stream-ordered table, then the same functor per
  // point: no division per component or coordinate in the per-point kernel.
  const kernels::mixture_view<float> view = mix.view(where);
  detail::scratch table(static_cast<std::size_t>(kernels::jvp_table_floats(view)) * sizeof(float), where,
                        exec.stream);
  const kernels::mixture_channels t = kernels::jvp_channel_table(view, static_cast<float*>(table.data()));
  kernels::for_each_index(where, view.components,
                          kernels::channel_table_functor<kernels::langevin_channel>{t, {float(ch.a), float(ch.s)}},
                          exec.stream);
  kernels::for_each_row_staged(
      where, n, kernels::mixture_jvp_functor{t.at(0, float(ch.a), float(ch.s)), x, v, out, int(d)}, exec.stream);
}

void gaussian_mixture::evaluate_fp64(double* out, std::int64_t n, const double* x, channel ch, quantity what) const {
  DIFFSAMPLE_EXPECTS(what == quantity::log_density || what == quantity::score || what == quantity::denoiser,
                     "what: invalid quantity " << static_cast<int>(what));
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  detail::check_channel("ch", ch);
  DIFFSAMPLE_EXPECTS(n == 0 || (x != nullptr && out != nullptr), "x, out: null pointer");
  // Points run in parallel: out in x's memory (in place included) would overwrite points still being read.
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(double);
  detail::check_disjoint(
      {{"x", x, x_bytes}, {"out", out, what == quantity::log_density ? static_cast<std::size_t>(n) * sizeof(double)
                                                                      : x_bytes}});
  const auto mix = storage_->view64();
  cpu::parallel_for_each(n, [&](std::int64_t i) {
    const strided_vec<const double> xi{x + i * d, 1, int(d)};
    strided_vec<double> oi{out + i * d, 1, int(d)};
    if (what == quantity::log_density)
      out[i] = kernels::mixture_log_density(mix, xi, ch.a, ch.s);
    else if (what == quantity::score)
      kernels::mixture_score(mix, xi, ch.a, ch.s, oi);
    else
      kernels::mixture_denoiser(mix, xi, ch.a, ch.s, oi);
  });
}

void gaussian_mixture::denoiser_jvp_fp64(double* out, std::int64_t n, const double* x, const double* v,
                                         channel ch) const {
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  detail::check_channel("ch", ch);
  DIFFSAMPLE_EXPECTS(n == 0 || (x != nullptr && v != nullptr && out != nullptr), "x, v, out: null pointer");
  const std::size_t bytes = static_cast<std::size_t>(n * d) * sizeof(double);
  detail::check_disjoint({{"x", x, bytes}, {"out", out, bytes}});
  detail::check_disjoint({{"v", v, bytes}, {"out", out, bytes}});  // x and v may be one array
  const auto mix = storage_->view64();
  cpu::parallel_for_each(n, [&](std::int64_t i) {
    const strided_vec<const double> xi{x + i * d, 1, int(d)}, vi{v + i * d, 1, int(d)};
    strided_vec<double> oi{out + i * d, 1, int(d)};
    kernels::mixture_denoiser_jvp(mix, xi, vi, ch.a, ch.s, oi);
  });
}

executor gaussian_mixture::sample(float* out, std::int64_t n, channel ch, std::uint64_t seed, std::int32_t* labels,
                                  std::uint64_t first_index, execution exec) const {
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  detail::check_channel("ch", ch);
  limits::check("first_index", first_index, 0, limits::max_first_chain);
  const executor where = detail::resolve_executor(exec.kind, out);
  detail::check_buffer("out", out, n * d, sizeof(float), where);
  if (labels != nullptr) detail::check_buffer("labels", labels, n, sizeof(std::int32_t), where);
  detail::check_disjoint({{"out", out, static_cast<std::size_t>(n * d) * sizeof(float)},
                          {"labels", labels, static_cast<std::size_t>(n) * sizeof(std::int32_t)}});
  kernels::for_each_index(where, n,
                          kernels::mixture_sample_functor{storage_->view(where), storage_->cumulative_for(where), out,
                                                          labels, float(ch.a), float(ch.s * ch.s), seed, first_index},
                          exec.stream);
  return where;
}

gaussian_mixture grid_mixture(std::int64_t dim, int grid, double spacing, double variance,
                              std::vector<double> weights) {
  limits::check("grid", grid, 1, limits::max_grid);
  limits::check("dim", dim, 1, limits::max_dim);
  detail::check_finite("spacing", spacing);
  // The means and the variance the constructor checks, named here as the caller gave them: the outermost means lie
  // at +-spacing (grid - 1) / 2 (computed as below), every component has the one variance.
  const double centre = 0.5 * (grid - 1);
  DIFFSAMPLE_EXPECTS(std::fabs(spacing * centre) <= max_abs_value,
                     "spacing: " << spacing << " puts the outermost means of a " << grid << " x " << grid
                                 << " grid at +-" << std::fabs(spacing * centre) << ", outside [" << -max_abs_value
                                 << ", " << max_abs_value << "] (the FP32 kernels square coordinate differences)");
  DIFFSAMPLE_EXPECTS(variance >= min_variance && variance <= max_variance,
                     "variance: " << variance << " is outside [" << min_variance << ", " << max_variance
                                  << "] (a variance and its inverse must be normal FP32 numbers)");
  const std::int64_t K = std::int64_t(grid) * grid;
  // K x dim means, up to 2^48 values: refused as the host allocation it would be, before it is tried.
  detail::check_allocation("grid_mixture: means", static_cast<std::size_t>(K * dim) * sizeof(double), executor::cpu);
  if (weights.empty()) weights.assign(K, 1.0);
  DIFFSAMPLE_EXPECTS(static_cast<std::int64_t>(weights.size()) == K,
                     "weights: grid " << grid << " needs " << K << " weights, got " << weights.size());
  std::vector<double> means(K * dim);
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t j = 0; j < dim; ++j) {
      const std::int64_t g = (j % 2 == 0) ? k / grid : k % grid;
      means[k * dim + j] = spacing * (double(g) - centre);
    }
  return gaussian_mixture(dim, std::move(weights), std::move(means), std::vector<double>(K, variance));
}

}  // namespace diffsample
