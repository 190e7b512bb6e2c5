// The C ABI of the analytic posterior of a Gaussian-mixture prior under a linear Gaussian observation (dense, masked
// or SVD operator): its components, evidence and moments, and exact samples from it.
#include "src/c_api/common.hpp"

#include <algorithm>
#include <utility>

using namespace diffsample::c_api;

namespace {

// The four sample entry points: float or double samples, on the host or on an executor.
template <class T>
ds_status sample(const ds_posterior* posterior, T* out, int64_t n, uint64_t seed, int32_t* labels,
                 uint64_t first_index, const ds_execution* exec, ds_executor* ran) {
  return guard([&] {
    const auto& p = get(posterior);
    auto* l = reinterpret_cast<std::int32_t*>(labels);
    // ran (the executor forms) is written after the call: apart from the samples and the labels.
    check_written_apart({ran_span(ran)}, {{"out", out, array_bytes(sizeof(T), {n, p.dim()})},
                                          {"labels", labels, array_bytes(sizeof(std::int32_t), {n})}});
    if (exec == nullptr)
      p.sample(out, n, seed, l, first_index);
    else
      set_ran(ran, p.sample(out, n, seed, l, first_index, to_cpp(*exec)));
  });
}

// d_y sizes the copy of A (or U) before the C++ constructor sees it: checked here against the C++ limit.
void check_d_y(std::int64_t d_y) {
  ds::limits::check("d_y", d_y, 1, ds::limits::max_posterior_d_y, "each component factors a d_y x d_y matrix");
}

}  // namespace

extern "C" {

ds_status ds_posterior_create(const ds_mixture* prior, int64_t d_y, const double* A, double sigma_y, const double* y,
                              ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    // d_y sizes the copy of A, so it is checked here, against the C++ limits (the constructor checks the rest).
    check_d_y(d_y);
    ds::limits::check("d_y x d_x", d_y * m.dim(), 1, ds::limits::max_posterior_values,
                      "the operator is held on the host in FP64");
    ds::linear_observation obs;
    obs.d_y = d_y;
    obs.d_x = m.dim();
    obs.A = copy_array("A", A, d_y * m.dim());
    obs.sigma_y = sigma_y;
    obs.y = copy_array("y", y, d_y);
    *out = new ds_posterior{ds::mixture_posterior(m, obs)};
  });
}

ds_status ds_posterior_create_masked(const ds_mixture* prior, int64_t d_y, const int64_t* mask, const double* gains,
                                     double sigma_y, const double* y, ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    if (d_y < 1 || d_y > m.dim()) fail("d_y: must be in [1, d_x = " + std::to_string(m.dim()) + "], got " + std::to_string(d_y));
    if (mask == nullptr) fail("mask: null pointer for " + std::to_string(d_y) + " indices");
    std::vector<std::int64_t> indices(mask, mask + d_y);
    std::vector<double> g = copy_array("gains", gains, gains ? d_y : 0);
    const auto op = with_c_names({{"observation.indices", "mask"}, {"observation.diagonal", "gains"}}, [&] {
      return ds::observation_operator::mask(m.dim(), std::move(indices), std::move(g));
    });
    *out = new ds_posterior{ds::mixture_posterior(m, op, sigma_y, copy_array("y", y, d_y))};
  });
}

ds_status ds_posterior_create_svd(const ds_mixture* prior, int64_t d_y, int64_t rank, const double* U, const double* S,
                                  const double* V, double sigma_y, const double* y, ds_posterior** out) {
  return guard([&] {
    const auto& m = get(prior, "prior");
    require_out("out", out);
    // d_y sizes the copy of U: checked here against the C++ limit of every posterior (the constructor checks the rest).
    check_d_y(d_y);
    if (rank < 1 || rank > std::min<std::int64_t>(d_y, m.dim()))
      fail("rank: must be in [1, min(d_y, d_x) = " + std::to_string(std::min<std::int64_t>(d_y, m.dim())) +
           "], got " + std::to_string(rank));
    std::vector<double> u = copy_array("U", U, d_y * rank), s = copy_array("S", S, rank),
                        v = copy_array("V", V, m.dim() * rank);
    const auto op = with_c_names({{"observation.U", "U"}, {"observation.singular_values", "S"}, {"observation.V", "V"}},
                                 [&] { return ds::observation_operator::svd(d_y, m.dim(), std::move(u), std::move(s),
                                                                            std::move(v)); });
    *out = new ds_posterior{ds::mixture_posterior(m, op, sigma_y, copy_array("y", y, d_y))};
  });
}

void ds_posterior_destroy(ds_posterior* posterior) { delete posterior; }

ds_status ds_posterior_shape(const ds_posterior* posterior, int64_t* components, int64_t* dim) {
  return write_shape([&]() -> const auto& { return get(posterior); }, components, dim);
}

ds_status ds_posterior_log_evidence(const ds_posterior* posterior, double* out) {
  return write_out("out", out, [&] { return get(posterior).log_evidence(); });
}

ds_status ds_posterior_components(const ds_posterior* posterior, double* weights, double* log_weights, double* means,
                                  double* covariances) {
  return guard([&] {
    const auto& p = get(posterior);
    const std::size_t K = static_cast<std::size_t>(p.components()), d = static_cast<std::size_t>(p.dim());
    // Copied one after the other: outputs that share a byte would overwrite each other.
    check_apart({{"weights", weights, K * sizeof(double)},
                                {"log_weights", log_weights, K * sizeof(double)},
                                {"means", means, K * d * sizeof(double)},
                                {"covariances", covariances, K * d * d * sizeof(double)}});
    auto copy = [](const std::vector<double>& from, double* to) {
      if (to) std::copy(from.begin(), from.end(), to);
    };
    copy(p.weights(), weights);
    copy(p.log_weights(), log_weights);
    copy(p.means(), means);
    copy(p.covariances(), covariances);
  });
}

ds_status ds_posterior_moments(const ds_posterior* posterior, double* mean, double* covariance) {
  return guard([&] {
    const auto& p = get(posterior);
    const std::size_t d = static_cast<std::size_t>(p.dim());
    check_apart({{"mean", mean, d * sizeof(double)}, {"covariance", covariance, d * d * sizeof(double)}});
    // Both are computed before either is written, so that a failure leaves the outputs unchanged.
    const std::vector<double> mu = mean ? p.mean() : std::vector<double>{};
    const std::vector<double> cov = covariance ? p.covariance() : std::vector<double>{};
    if (mean) std::copy(mu.begin(), mu.end(), mean);
    if (covariance) std::copy(cov.begin(), cov.end(), covariance);
  });
}

ds_status ds_posterior_sample(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed, int32_t* labels,
                              uint64_t first_index) {
  return sample(posterior, out, n, seed, labels, first_index, nullptr, nullptr);
}

ds_status ds_posterior_sample_double(const ds_posterior* posterior, double* out, int64_t n, uint64_t seed,
                                     int32_t* labels, uint64_t first_index) {
  return sample(posterior, out, n, seed, labels, first_index, nullptr, nullptr);
}

ds_status ds_posterior_sample_on(const ds_posterior* posterior, float* out, int64_t n, uint64_t seed,
                                 int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return sample(posterior, out, n, seed, labels, first_index, &exec, ran);
}

ds_status ds_posterior_sample_double_on(const ds_posterior* posterior, double* out, int64_t n, uint64_t seed,
                                        int32_t* labels, uint64_t first_index, ds_execution exec, ds_executor* ran) {
  return sample(posterior, out, n, seed, labels, first_index, &exec, ran);
}

}  // extern "C"
