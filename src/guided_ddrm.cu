// DDRM (kernels/guided_ddrm.cuh): each operator factored once on the host in FP64 (an SVD operator as given; any
// other from the eigendecomposition of A A^T by cyclic Jacobi rotations, V = A^T U S^-1), the spectral observations
// S^-1 U^T y and noise levels sigma_y / S per problem, the per-step levels; then one fused launch over B problems x
// N particles for the whole trajectory.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/guided_ddrm.cuh"
#include "kernels/linalg.cuh"
#include "src/cpu/chains.hpp"
#include "src/guided_samplers.hpp"
#include "src/guided_tables.hpp"

namespace diffsample::detail {

// Eigendecomposition of a symmetric n x n matrix G (row-major) by cyclic Jacobi: eigenvalues in `values`, the
// eigenvectors as the columns of E (row-major n x n). Converges quadratically; sweeps until the off-diagonal mass is
// below 1e-30 of the total (or 100 sweeps).
void symmetric_eigen(std::vector<double> G, std::int64_t n, std::vector<double>& values, std::vector<double>& E) {
  E.assign(n * n, 0.0);
  for (std::int64_t i = 0; i < n; ++i) E[i * n + i] = 1.0;
  double total = 0;
  for (double v : G) total += v * v;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (std::int64_t p = 0; p < n; ++p)
      for (std::int64_t q = p + 1; q < n; ++q) off += 2 * G[p * n + q] * G[p * n + q];
    if (!(off > 1e-30 * total)) break;
    for (std::int64_t p = 0; p < n; ++p)
      for (std::int64_t q = p + 1; q < n; ++q) {
        const double gpq = G[p * n + q];
        if (gpq == 0.0) continue;
        const double theta = (G[q * n + q] - G[p * n + p]) / (2 * gpq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (std::int64_t k = 0; k < n; ++k) {  // columns p, q
          const double gkp = G[k * n + p], gkq = G[k * n + q];
          G[k * n + p] = c * gkp - s * gkq;
          G[k * n + q] = s * gkp + c * gkq;
        }
        for (std::int64_t k = 0; k < n; ++k) {  // rows p, q
          const double gpk = G[p * n + k], gqk = G[q * n + k];
          G[p * n + k] = c * gpk - s * gqk;
          G[q * n + k] = s * gpk + c * gqk;
        }
        for (std::int64_t k = 0; k < n; ++k) {
          const double ekp = E[k * n + p], ekq = E[k * n + q];
          E[k * n + p] = c * ekp - s * ekq;
          E[k * n + q] = s * ekp + c * ekq;
        }
      }
  }
  values.resize(n);
  for (std::int64_t i = 0; i < n; ++i) values[i] = G[i * n + i];
}

namespace {

// The thin SVD of one operator: U (d_y x r), S (r, >= 0), V (d x r), row-major.
struct thin_svd {
  std::int64_t r = 0;
  std::vector<double> U, S, V;
};

thin_svd factor(const observation_operator* op, const double* dense, std::int64_t dy, std::int64_t d) {
  thin_svd f;
  if (op != nullptr && op->kind() == observation_kind::svd) {
    f.r = static_cast<std::int64_t>(op->diagonal().size());
    f.U = op->U();
    f.S = op->diagonal();
    f.V = op->V();
    return f;
  }
  const std::vector<double> A = op != nullptr ? op->matrix() : std::vector<double>(dense, dense + dy * d);
  std::vector<double> G(dy * dy), values, E;
  kernels::gram(A.data(), dy, d, G.data());
  symmetric_eigen(G, dy, values, E);
  double largest = 0;
  for (double v : values) largest = std::max(largest, v);
  // Directions with eigenvalue below 1e-12 of the largest are unobserved (a rank-deficient A).
  for (std::int64_t c = 0; c < dy; ++c) {
    if (!(values[c] > 1e-12 * largest)) continue;
    const double s = std::sqrt(values[c]);
    f.S.push_back(s);
    ++f.r;
  }
  f.U.assign(dy * f.r, 0.0);
  f.V.assign(d * f.r, 0.0);
  std::int64_t i = 0;
  for (std::int64_t c = 0; c < dy; ++c) {
    if (!(values[c] > 1e-12 * largest)) continue;
    const double s = std::sqrt(values[c]);
    for (std::int64_t o = 0; o < dy; ++o) f.U[o * f.r + i] = E[o * dy + c];
    for (std::int64_t j = 0; j < d; ++j) {
      double acc = 0;
      for (std::int64_t o = 0; o < dy; ++o) acc += A[o * d + j] * E[o * dy + c];
      f.V[j * f.r + i] = acc / s;
    }
    ++i;
  }
  return f;
}

struct ddrm_layout {
  blob_layout blob;
  std::int64_t r = 0, operators = 1;
  std::size_t steps = 0, V = 0, ybar = 0, noise = 0, inv_noise = 0, table_end = 0, channels = 0, x = 0, work = 0;
  float sigma_start = 1.f, a_start = 1.f;
};

std::int64_t operator_count(const guided_problems& pr, std::int64_t d) {
  if (!pr.operators.empty()) return static_cast<std::int64_t>(pr.operators.size());
  return pr.A.size() == static_cast<std::size_t>(pr.d_y * d) ? 1 : pr.problems;
}

ddrm_layout make_ddrm_layout(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                             std::vector<unsigned char>* host) {
  const std::int64_t B = pr.problems, N = o.particles, d = prior.dim(), dy = pr.d_y, K = o.steps;
  ddrm_layout l;
  l.operators = operator_count(pr, d);
  std::vector<thin_svd> f(l.operators);
  for (std::int64_t c = 0; c < l.operators; ++c) {
    f[c] = factor(pr.operators.empty() ? nullptr : &pr.operators[c],
                  pr.operators.empty() ? pr.A.data() + c * dy * d : nullptr, dy, d);
    l.r = std::max(l.r, f[c].r);
  }
  l.r = std::max<std::int64_t>(l.r, 1);  // an all-zero A: one unobserved column keeps the kernels uniform
  l.steps = l.blob.put(K * sizeof(kernels::ddrm_step));
  l.V = l.blob.put(l.operators * d * l.r * sizeof(float));
  l.ybar = l.blob.put(B * l.r * sizeof(float));
  l.noise = l.blob.put(B * l.r * sizeof(float));
  l.inv_noise = l.blob.put(B * l.r * sizeof(float));
  l.table_end = l.blob.at;
  l.channels = l.blob.put(
      kernels::mixture_channels::table_floats(prior.storage().view(executor::cpu), K) * sizeof(float));
  l.x = l.blob.put(B * N * d * sizeof(float));
  l.work = l.blob.put(B * N * kernels::ddrm_scratch::floats(int(d), int(l.r)) * sizeof(float));
  const std::vector<schedule_point> pts = o.schedule.points(K);
  for (std::int64_t k = 0; k < K; ++k) {
    DIFFSAMPLE_EXPECTS(pts[k].s > 0, "options.schedule: s = 0 at t = " << pts[k].t << " (step " << k
                                                                        << "), where DDRM divides by s");
    DIFFSAMPLE_EXPECTS(pts[k].a > 0 && pts[k + 1].a > 0,
                       "options.schedule: a = 0 at t = " << (pts[k].a > 0 ? pts[k + 1].t : pts[k].t)
                                                         << ": DDRM's scaling x / a needs a > 0");
  }
  l.sigma_start = float(pts[0].s / pts[0].a);
  l.a_start = float(pts[0].a);
  if (host == nullptr) return l;
  host->assign(l.table_end, 0);
  unsigned char* base = host->data();
  auto* steps = reinterpret_cast<kernels::ddrm_step*>(base + l.steps);
  for (std::int64_t k = 0; k < K; ++k)
    steps[k] = {float(pts[k].a), float(pts[k].s), float(pts[k + 1].a), float(pts[k + 1].s / pts[k + 1].a),
                float(1.0 / pts[k].s)};
  auto* V = reinterpret_cast<float*>(base + l.V);
  for (std::int64_t c = 0; c < l.operators; ++c)
    for (std::int64_t j = 0; j < d; ++j)
      for (std::int64_t i = 0; i < f[c].r; ++i) V[(c * d + j) * l.r + i] = float(f[c].V[j * f[c].r + i]);
  auto* ybar = reinterpret_cast<float*>(base + l.ybar);
  auto* noise = reinterpret_cast<float*>(base + l.noise);
  auto* inv_noise = reinterpret_cast<float*>(base + l.inv_noise);
  for (std::int64_t b = 0; b < B; ++b) {
    const thin_svd& fb = f[l.operators == 1 ? 0 : b];
    const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
    const double* y = pr.y.data() + b * dy;
    for (std::int64_t i = 0; i < l.r; ++i) {
      const bool observed = i < fb.r && fb.S[i] > 0;
      double uty = 0;
      if (observed)
        for (std::int64_t o = 0; o < dy; ++o) uty += fb.U[o * fb.r + i] * y[o];
      ybar[b * l.r + i] = observed ? float(uty / fb.S[i]) : 0.f;
      noise[b * l.r + i] = observed ? float(sy / fb.S[i]) : -1.f;
      inv_noise[b * l.r + i] = observed ? float(fb.S[i] / sy) : 0.f;
    }
  }
  return l;
}

}  // namespace

std::size_t ddrm_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return make_ddrm_layout(prior, problems, options, nullptr).blob.at;
}

guided_report ddrm_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  std::vector<unsigned char> host;
  const ddrm_layout l = make_ddrm_layout(prior, pr, o, &host);
  run_space rs;
  prepare_run(rs, pr, o, prior.dim(), out, exec, workspace, workspace_bytes, l.blob.at, host);
  kernels::ddrm_params p{};
  p.steps = reinterpret_cast<const kernels::ddrm_step*>(rs.ws + l.steps);
  // The mixture's constants at every step's channel, computed once per call on the executor.
  const kernels::mixture_view<float> view = prior.storage().view(rs.where);
  p.channels = kernels::mixture_channels::in(view, o.steps, reinterpret_cast<float*>(rs.ws + l.channels));
  kernels::for_each_index(rs.where, o.steps * view.components,
                          kernels::channel_table_functor<kernels::ddrm_channels>{p.channels, {p.steps}},
                          exec.stream);
  p.V = reinterpret_cast<const float*>(rs.ws + l.V);
  p.V_stride = l.operators == 1 ? 0 : prior.dim() * l.r;
  p.ybar = reinterpret_cast<const float*>(rs.ws + l.ybar);
  p.noise = reinterpret_cast<const float*>(rs.ws + l.noise);
  p.inv_noise = reinterpret_cast<const float*>(rs.ws + l.inv_noise);
  p.problems = pr.problems;
  p.particles = o.particles;
  p.d = int(prior.dim());
  p.r = int(l.r);
  p.eta = float(o.ddrm_eta);
  p.eta_b = float(o.ddrm_eta_b);
  p.keep = float(std::sqrt(std::max(0.0, 1.0 - o.ddrm_eta * o.ddrm_eta)));
  p.sigma_start = l.sigma_start;
  p.a_start = l.a_start;
  p.seed = o.seed;
  p.stream_skip = current_particle_streams().skip(o.particles);  // 0 unless a shard of a larger run
  p.stream_first = current_particle_streams().first;
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  const cpu::simd_target target = rs.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    cpu::run_guided_ddrm(target, p, o.steps, x);  // packs of particles (src/cpu/guided.cpp)
  } else {
    // The CUDA executor's particles and scratch rows are coordinate-major inside the run (kernels/guided.cuh,
    // "Layout"), transposed back by the copies out.
    if (rs.where == executor::cuda) p.coordinate_stride = BN;
    kernels::for_each_index_scratch<128>(
        rs.where, BN, kernels::guided_ddrm_functor{p, o.steps, x, reinterpret_cast<float*>(rs.ws + l.work)},
        exec.stream);
  }
  report.launches = 2 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream, prior.dim(),
                                      p.coordinate_stride);
  return report;
}

}  // namespace diffsample::detail
