// The exact posterior on either executor: one functor per component computes its closed form (log joint weight,
// mean, covariance and the covariance's factor), and the sampler's two functors draw each sample's component and
// normals (every Philox block of a sample's stream is addressed directly, so all pairs run in parallel), then form
// x = m'_k + L_k z per coordinate (all three in kernels/posterior.cuh). Samples go through a bounded scratch in
// chunks.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/linalg.cuh"
#include "kernels/mixture.cuh"
#include "kernels/posterior.cuh"
#include "kernels/rng.cuh"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/cpu/chains.hpp"
#include "src/cpu/pool.hpp"
#include "src/posterior_tables.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
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
                                                              const std::vector<double>& factors,
                                                              cudaStream_t stream) {
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
    upload_and_wait(t->device, t->host.data(), bytes, stream);
  }
  return t;
}

}  // namespace detail

namespace detail {

namespace {

/// Component k in the square-root information form, for a component whose A Sigma_k A^T + sigma_y^2 I the
/// covariance form refused as numerically singular while sigma_y > 0 (more rows than A has rank, with sigma_y small
/// against A Sigma_k A^T: the matrix is positive definite, its smallest eigenvalue sigma_y^2, but below the pivot test's
/// 1e-13 of its diagonal), or whose Sigma_k - W^T W cancels (sigma_y small against A Sigma_k A^T). With D = Sigma_k^(1/2), B = A D and r = y - A mu_k, x = mu_k + D u has the prior u ~ N(0, I)
/// and the observation r = B u + sigma_y z, so the posterior of u is the least-squares problem
///   min_u |M u - b|^2,  M = [B / sigma_y; I]  ((m + d) x d),  b = [r / sigma_y; 0],
/// solved by Householder QR, M = Q R: u* = R^-1 (Q^T b)_(0..d), Cov(u) = (R^T R)^-1 = R^-1 R^-T, the minimum
/// |(Q^T b)_(d..m+d)|^2 = r^T C^-1 r (a sum of squares: no cancellation), and log det C = m log sigma_y^2 +
/// 2 sum_j log |R_jj| (det(sigma_y^2 I + B B^T) = sigma_y^(2m) det(I + B^T B / sigma_y^2)). R^T R >= I, so R is
/// invertible whenever its entries are finite. Returns false (the component stays refused) when they are not.
bool posterior_component_qr(const double* mu, const double* v, std::int64_t v_stride, double log_prior_weight,
                            const double* A, const double* y, double sigma_y, std::int64_t m, std::int64_t d,
                            double& log_joint, double* mean, double* cov, double* factor) {
  const std::int64_t rows = m + d;
  std::vector<double> M(static_cast<std::size_t>(rows * d), 0.0), b(static_cast<std::size_t>(rows), 0.0), sd(d);
  for (std::int64_t j = 0; j < d; ++j) sd[j] = std::sqrt(v[j * v_stride]);
  for (std::int64_t i = 0; i < m; ++i) {
    double r = y[i];
    for (std::int64_t j = 0; j < d; ++j) {
      r -= A[i * d + j] * mu[j];
      M[i * d + j] = A[i * d + j] * sd[j] / sigma_y;
    }
    b[i] = r / sigma_y;
  }
  for (std::int64_t j = 0; j < d; ++j) M[(m + j) * d + j] = 1.0;
  // Householder QR, column by column, applied to b as well; R is left in M's first d rows.
  for (std::int64_t c = 0; c < d; ++c) {
    double norm = 0;
    for (std::int64_t i = c; i < rows; ++i) norm += M[i * d + c] * M[i * d + c];
    norm = std::sqrt(norm);
    if (!(norm > 0) || !std::isfinite(norm)) return false;
    const double alpha = M[c * d + c] > 0 ? -norm : norm;  // the sign that avoids cancellation in v_0
    std::vector<double> h(static_cast<std::size_t>(rows - c));
    for (std::int64_t i = c; i < rows; ++i) h[i - c] = M[i * d + c];
    h[0] -= alpha;
    double hh = 0;
    for (double t : h) hh += t * t;
    if (hh > 0) {
      for (std::int64_t k = c; k < d; ++k) {
        double s = 0;
        for (std::int64_t i = c; i < rows; ++i) s += h[i - c] * M[i * d + k];
        s = 2 * s / hh;
        for (std::int64_t i = c; i < rows; ++i) M[i * d + k] -= s * h[i - c];
      }
      double s = 0;
      for (std::int64_t i = c; i < rows; ++i) s += h[i - c] * b[i];
      s = 2 * s / hh;
      for (std::int64_t i = c; i < rows; ++i) b[i] -= s * h[i - c];
    }
  }
  // u* = R^-1 b_(0..d) by back substitution; T = R^-1 (upper triangular) column by column.
  double log_det = double(m) * std::log(sigma_y * sigma_y), quad = 0;
  for (std::int64_t j = 0; j < d; ++j) log_det += 2 * std::log(std::abs(M[j * d + j]));
  for (std::int64_t i = d; i < rows; ++i) quad += b[i] * b[i];
  std::vector<double> u(d), T(static_cast<std::size_t>(d * d), 0.0);
  for (std::int64_t i = d - 1; i >= 0; --i) {
    double s = b[i];
    for (std::int64_t k = i + 1; k < d; ++k) s -= M[i * d + k] * u[k];
    u[i] = s / M[i * d + i];
  }
  for (std::int64_t c = 0; c < d; ++c)
    for (std::int64_t i = c; i >= 0; --i) {
      double s = i == c ? 1.0 : 0.0;
      for (std::int64_t k = i + 1; k <= c; ++k) s -= M[i * d + k] * T[k * d + c];
      T[i * d + c] = s / M[i * d + i];
    }
  log_joint = log_prior_weight - 0.5 * (double(m) * kernels::log_two_pi<double>() + log_det + quad);
  for (std::int64_t j = 0; j < d; ++j) mean[j] = mu[j] + sd[j] * u[j];
  // S' = D T T^T D.
  for (std::int64_t j = 0; j < d; ++j)
    for (std::int64_t l = 0; l <= j; ++l) {
      double s = 0;
      for (std::int64_t k = std::max(j, l); k < d; ++k) s += T[j * d + k] * T[l * d + k];
      cov[j * d + l] = cov[l * d + j] = sd[j] * sd[l] * s;
    }
  for (std::int64_t e = 0; e < d * d; ++e) factor[e] = cov[e];
  kernels::psd_factor(factor, d);
  if (!std::isfinite(log_joint)) return false;
  for (std::int64_t j = 0; j < d; ++j)
    if (!std::isfinite(mean[j])) return false;
  for (std::int64_t e = 0; e < d * d; ++e)
    if (!std::isfinite(cov[e]) || !std::isfinite(factor[e])) return false;
  return true;
}

}  // namespace

std::int64_t posterior_components(const gaussian_mixture& prior, const linear_observation& obs, executor where,
                                  cudaStream_t stream, posterior_components_out& out) {
  const std::int64_t K = prior.components(), d = prior.dim(), m = obs.d_y;
  std::vector<double> log_w(K);
  for (std::int64_t k = 0; k < K; ++k) log_w[k] = std::log(prior.weights()[k]);
  out.log_joint.assign(K, 0.0);
  out.means.assign(K * d, 0.0);
  out.covariances.assign(K * d * d, 0.0);
  out.factors.assign(K * d * d, 0.0);
  std::vector<std::int32_t> singular(K, 0);
  const std::size_t work = std::size_t(K) * std::size_t(m * d + m * m + m);
  const double s2 = obs.sigma_y * obs.sigma_y;
  const std::vector<double>& pm = prior.means();
  const std::vector<double>& pv = prior.variances();

  if (where == executor::cpu) {
    std::vector<double> w(work);
    kernels::for_each_index(executor::cpu, K,
                            kernels::posterior_component_functor{pm.data(), pv.data(), log_w.data(), prior.isotropic(),
                                                                 obs.A.data(), obs.y.data(), s2, m, d, w.data(),
                                                                 out.log_joint.data(), out.means.data(),
                                                                 out.covariances.data(), out.factors.data(),
                                                                 singular.data()},
                            nullptr);
  } else {
    // One stream-ordered allocation: inputs, per-component work, outputs, flags.
    const std::size_t inputs = pm.size() + pv.size() + log_w.size() + obs.A.size() + obs.y.size();
    const std::size_t outputs = out.log_joint.size() + out.means.size() + out.covariances.size() + out.factors.size();
    const std::size_t doubles = inputs + work + outputs;
    scratch buffer(doubles * sizeof(double) + std::size_t(K) * sizeof(std::int32_t), where, stream);
    double* next = static_cast<double*>(buffer.data());
    const auto upload = [&](const std::vector<double>& v) {
      double* p = next;
      DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(p, v.data(), v.size() * sizeof(double), cudaMemcpyHostToDevice, stream));
      next += v.size();
      return p;
    };
    const double* d_pm = upload(pm);
    const double* d_pv = upload(pv);
    const double* d_lw = upload(log_w);
    const double* d_A = upload(obs.A);
    const double* d_y = upload(obs.y);
    double* d_work = next;
    next += work;
    double* d_lj = next;
    double* d_means = d_lj + K;
    double* d_cov = d_means + K * d;
    double* d_factors = d_cov + K * d * d;
    std::int32_t* d_singular = reinterpret_cast<std::int32_t*>(d_factors + K * d * d);
    kernels::for_each_index<32>(executor::cuda, K,
                                kernels::posterior_component_functor{d_pm, d_pv, d_lw, prior.isotropic(), d_A, d_y, s2,
                                                                     m, d, d_work, d_lj, d_means, d_cov, d_factors,
                                                                     d_singular},
                                stream);
    const auto download = [&](std::vector<double>& v, const double* p) {
      DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(v.data(), p, v.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
    };
    download(out.log_joint, d_lj);
    download(out.means, d_means);
    download(out.covariances, d_cov);
    download(out.factors, d_factors);
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(singular.data(), d_singular, K * sizeof(std::int32_t),
                                        cudaMemcpyDeviceToHost, stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream));
  }
  // A component the covariance form refused while sigma_y > 0 is positive definite all the same, and one where
  // sigma_y^2 is below 1e-6 of the largest predictive variance a_i Sigma_k a_i^T + sigma_y^2 lost digits in
  // S' = Sigma_k - W^T W (about 1e-16 / ratio of S' along the observed directions: 2e-4 at sigma_y = 1e-6 for a square
  // A of unit scale): both are computed again in the square-root information form (posterior_component_qr), which
  // nothing cancels, on the host whichever executor ran the others.
  const bool iso = prior.isotropic();
  std::vector<double> mean, cov, factor;
  for (std::int64_t k = 0; k < K; ++k) {
    if (!(obs.sigma_y > 0)) break;
    if (!singular[k]) {
      double largest = 0;
      for (std::int64_t i = 0; i < m; ++i) {
        double c = s2;
        for (std::int64_t j = 0; j < d; ++j) c += obs.A[i * d + j] * obs.A[i * d + j] * pv[iso ? k : k * d + j];
        largest = std::max(largest, c);
      }
      if (!(s2 < 1e-6 * largest)) continue;
    }
    // Into scratch first: a component the covariance form did compute keeps its values if this one fails.
    double log_joint = 0;
    mean.assign(d, 0.0);
    cov.assign(d * d, 0.0);
    factor.assign(d * d, 0.0);
    if (!posterior_component_qr(pm.data() + k * d, pv.data() + (iso ? k : k * d), iso ? 0 : 1, log_w[k], obs.A.data(),
                                obs.y.data(), obs.sigma_y, m, d, log_joint, mean.data(), cov.data(), factor.data()))
      continue;
    out.log_joint[k] = log_joint;
    std::copy(mean.begin(), mean.end(), out.means.begin() + k * d);
    std::copy(cov.begin(), cov.end(), out.covariances.begin() + k * d * d);
    std::copy(factor.begin(), factor.end(), out.factors.begin() + k * d * d);
    singular[k] = 0;
  }
  for (std::int64_t k = 0; k < K; ++k)
    if (singular[k]) return k;
  return -1;
}

}  // namespace detail

namespace {

/// Scratch bound per call: chunks of samples whose normals and components fit in it.
constexpr std::size_t scratch_limit = std::size_t(32) << 20;

}  // namespace

template <class T>
executor mixture_posterior::sample_on(T* out, std::int64_t n, std::uint64_t seed, execution exec,
                                      std::int32_t* labels, std::uint64_t first_index) const {
  const std::int64_t d = dim_, K = components_;
  detail::check_count("n", n, d);
  limits::check("first_index", first_index, 0, limits::max_first_chain);
  const executor where = detail::resolve_executor(exec.kind, out);
  detail::check_buffer("out", out, n * d, sizeof(T), where);
  if (labels != nullptr) detail::check_buffer("labels", labels, n, sizeof(std::int32_t), where);
  detail::check_disjoint({{"out", out, static_cast<std::size_t>(n * d) * sizeof(T)},
                          {"labels", labels, static_cast<std::size_t>(n) * sizeof(std::int32_t)}});
  if (n == 0) return where;
  const bool on_device = where == executor::cuda;
  DIFFSAMPLE_EXPECTS(!on_device || tables_->device != nullptr,
                     "executor: this posterior was built without a GPU, so it has no device copy");

  if (!on_device && cpu::chain_target() != cpu::simd_target::scalar) {
    // Packs of samples (src/cpu/posterior.cpp): no scratch, the samples' normals kept per thread.
    cpu::run_posterior_sample(cpu::chain_target(),
                              {tables_->cumulative(false), K, tables_->means(false), tables_->factors(false),
                               static_cast<int>(d), seed, first_index, n, labels},
                              out);
    return where;
  }
  const int pairs = static_cast<int>((d + 1) / 2);
  const std::size_t per_sample = 2 * std::size_t(pairs) * sizeof(double) + sizeof(std::int32_t);
  const std::int64_t chunk = std::min<std::int64_t>(n, std::max<std::size_t>(1, scratch_limit / per_sample));
  detail::scratch scratch(std::size_t(chunk) * per_sample, where, exec.stream);
  double* z = static_cast<double*>(scratch.data());
  std::int32_t* chosen = reinterpret_cast<std::int32_t*>(z + chunk * 2 * pairs);
  for (std::int64_t start = 0; start < n; start += chunk) {
    const std::int64_t count = std::min(chunk, n - start);
    kernels::for_each_index(where, count * (pairs + 1),
                            kernels::posterior_draw_functor{tables_->cumulative(on_device), K, pairs, seed,
                                                          first_index + static_cast<std::uint64_t>(start), z, chosen,
                                                          labels != nullptr ? labels + start : nullptr},
                            exec.stream);
    const kernels::posterior_transform_functor<T> transform{tables_->means(on_device), tables_->factors(on_device), z, chosen,
                                         static_cast<int>(d), pairs, out + start * d};
    if (on_device)
      kernels::for_each_index(where, count * d, transform, exec.stream);
    else
      cpu::parallel_for_each(count, [transform](std::int64_t i) { transform.row(i); });
  }
  return where;
}

executor mixture_posterior::sample(float* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels,
                                   std::uint64_t first_index, execution exec) const {
  return sample_on(out, n, seed, exec, labels, first_index);
}

executor mixture_posterior::sample(double* out, std::int64_t n, std::uint64_t seed, std::int32_t* labels,
                                   std::uint64_t first_index, execution exec) const {
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
