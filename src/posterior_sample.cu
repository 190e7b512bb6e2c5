// Exact samples of a mixture posterior on either executor: one functor draws each sample's component and its
// normals (every Philox block of a sample's stream is addressed directly, so all pairs run in parallel), a second
// forms x = m'_k + L_k z per coordinate. Samples go through a bounded scratch in chunks.
#include <algorithm>
#include <cstring>

#include "kernels/launch.cuh"
#include "kernels/rng.cuh"
#include "src/cuda_check.hpp"
#include "src/posterior_tables.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample {
namespace detail {

posterior_tables::~posterior_tables() {
  if (device != nullptr) (void)cudaFree(device);
}

std::shared_ptr<const posterior_tables> make_posterior_tables(std::int64_t components, std::int64_t dim,
                                                              const std::vector<double>& weights,
                                                              const std::vector<double>& means,
                                                              const std::vector<double>& factors) {
  auto t = std::make_shared<posterior_tables>();
  const std::int64_t K = components, d = dim;
  t->components = K;
  t->dim = d;
  t->host.resize(K + K * d + K * d * d);
  double acc = 0;
  for (std::int64_t k = 0; k < K; ++k) t->host[k] = acc += weights[k];
  std::copy(means.begin(), means.end(), t->host.begin() + K);
  double* U = t->host.data() + K + K * d;
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t j = 0; j < d; ++j)
      for (std::int64_t l = 0; l < d; ++l) U[(k * d + l) * d + j] = factors[(k * d + j) * d + l];
  if (cuda_available()) {
    const std::size_t bytes = t->host.size() * sizeof(double);
    check_allocation("mixture_posterior", bytes, executor::cuda);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&t->device, bytes));
    DIFFSAMPLE_CUDA_TRY(cudaMemcpy(t->device, t->host.data(), bytes, cudaMemcpyHostToDevice));
  }
  return t;
}

}  // namespace detail

namespace {

/// Scratch bound per call: chunks of samples whose normals and components fit in it.
constexpr std::size_t scratch_limit = std::size_t(32) << 20;

/// Item (i, slot) of a chunk: slot 0 draws the component of sample i from Philox block 0 of its stream (a 53-bit
/// uniform against the cumulative weights scaled by their FP64 total); slot p >= 1 draws normals 2(p-1), 2p-1
/// from block p. The blocks are those a sequential draw (uniform2, then normal2 pairs) would consume.
struct component_and_normals_functor {
  const double* cumulative;
  std::int64_t components;
  int pairs;
  std::uint64_t seed, first;
  double* z;               // chunk x 2 pairs
  std::int32_t* chosen;    // chunk
  std::int32_t* labels;    // chunk, or nullptr
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t i = e / (pairs + 1);
    const int slot = static_cast<int>(e - i * (pairs + 1));
    kernels::philox rng(seed, first + static_cast<std::uint64_t>(i), 0, 4 * static_cast<std::uint64_t>(slot));
    if (slot == 0) {
      const double u = curand_uniform2_double(&rng.state).x * cumulative[components - 1];
      // The first k with cumulative[k] >= u (the last component when rounding leaves u above every entry).
      std::int64_t lo = 0, hi = components - 1;
      while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        if (cumulative[mid] < u)
          lo = mid + 1;
        else
          hi = mid;
      }
      chosen[i] = static_cast<std::int32_t>(lo);
      if (labels != nullptr) labels[i] = static_cast<std::int32_t>(lo);
    } else {
      const double2 g = curand_normal2_double(&rng.state);
      double* zi = z + i * 2 * pairs + 2 * (slot - 1);
      zi[0] = g.x;
      zi[1] = g.y;
    }
  }
};

/// Coordinate j of sample i: m'_k[j] + sum_{l <= j} L_k[j, l] z_l, summed in order of l.
template <class T>
struct transform_functor {
  const double* means;
  const double* factors_t;
  const double* z;
  const std::int32_t* chosen;
  int d, pairs;
  T* out;
  DS_HD void operator()(std::int64_t e) const {
    const std::int64_t i = e / d;
    const int j = static_cast<int>(e - i * d);
    const std::int64_t k = chosen[i];
    const double* U = factors_t + k * d * d + j;
    const double* zi = z + i * 2 * pairs;
    double s = means[k * d + j];
    for (int l = 0; l <= j; ++l) s += U[static_cast<std::int64_t>(l) * d] * zi[l];
    out[e] = static_cast<T>(s);
  }
};

}  // namespace

template <class T>
executor mixture_posterior::sample_on(T* out, std::int64_t n, std::uint64_t seed, execution exec,
                                      std::int32_t* labels, std::uint64_t first_index) const {
  const std::int64_t d = dim_, K = components_;
  detail::check_count("n", n, d);
  DIFFSAMPLE_EXPECTS(first_index <= (std::uint64_t(1) << 62), "first_index: must be <= 2^62, got " << first_index);
  const executor where = detail::resolve_executor(exec.kind, out);
  detail::check_buffer("out", out, n * d, sizeof(T), where);
  if (labels != nullptr) detail::check_buffer("labels", labels, n, sizeof(std::int32_t), where);
  if (n == 0) return where;
  const bool on_device = where == executor::cuda;
  DIFFSAMPLE_EXPECTS(!on_device || tables_->device != nullptr,
                     "executor: this posterior was built without a GPU, so it has no device copy");

  const int pairs = static_cast<int>((d + 1) / 2);
  const std::size_t per_sample = 2 * std::size_t(pairs) * sizeof(double) + sizeof(std::int32_t);
  const std::int64_t chunk = std::min<std::int64_t>(n, std::max<std::size_t>(1, scratch_limit / per_sample));
  detail::scratch scratch(std::size_t(chunk) * per_sample, where, exec.stream);
  double* z = static_cast<double*>(scratch.data());
  std::int32_t* chosen = reinterpret_cast<std::int32_t*>(z + chunk * 2 * pairs);
  for (std::int64_t start = 0; start < n; start += chunk) {
    const std::int64_t count = std::min(chunk, n - start);
    kernels::for_each_index(where, count * (pairs + 1),
                            component_and_normals_functor{tables_->cumulative(on_device), K, pairs, seed,
                                                          first_index + static_cast<std::uint64_t>(start), z, chosen,
                                                          labels != nullptr ? labels + start : nullptr},
                            exec.stream);
    kernels::for_each_index(where, count * d,
                            transform_functor<T>{tables_->means(on_device), tables_->factors(on_device), z, chosen,
                                                 static_cast<int>(d), pairs, out + start * d},
                            exec.stream);
  }
  return where;
}

executor mixture_posterior::sample(float* out, std::int64_t n, std::uint64_t seed, execution exec,
                                   std::int32_t* labels, std::uint64_t first_index) const {
  return sample_on(out, n, seed, exec, labels, first_index);
}

executor mixture_posterior::sample(double* out, std::int64_t n, std::uint64_t seed, execution exec,
                                   std::int32_t* labels, std::uint64_t first_index) const {
  return sample_on(out, n, seed, exec, labels, first_index);
}

void mixture_posterior::sample(double* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels,
                               std::uint64_t first_index) const {
  sample_on(out, n, seed, {executor::cpu, nullptr}, labels, first_index);
}

void mixture_posterior::sample(float* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels,
                               std::uint64_t first_index) const {
  sample_on(out, n, seed, {executor::cpu, nullptr}, labels, first_index);
}

}  // namespace diffsample
