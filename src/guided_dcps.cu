// Divide-and-conquer posterior sampling (kernels/guided_dcps.cuh): the blocks of the time grid, each step's kernel
// and potential (bridge coefficients to its block's clean end), and the inverse covariances of the potentials per
// point and problem, folded on the host in FP64; then one fused launch over B problems x N particles.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/guided_dcps.cuh"
#include "kernels/linalg.cuh"
#include "src/cpu/guided_jvp.hpp"
#include "src/guided_tables.hpp"

namespace diffsample::detail {

namespace {

struct dcps_layout {
  blob_layout blob;
  linear_tables tables;
  std::size_t steps = 0, blocks = 0, step_precision = 0, block_precision = 0, table_end = 0, x = 0, work = 0;
};

// Inverse of a symmetric positive-definite n x n matrix in place (FP64 Cholesky).
void invert(std::vector<double>& m, std::int64_t n) {
  std::vector<double> L = m;
  const std::int64_t row = kernels::cholesky_failure(L.data(), n);
  DIFFSAMPLE_EXPECTS(row < 0, "problems: a DCPS potential's covariance is not numerically positive definite (row "
                                  << row << ")");
  std::fill(m.begin(), m.end(), 0.0);
  for (std::int64_t i = 0; i < n; ++i) m[i * n + i] = 1.0;
  kernels::forward_substitute(L.data(), n, m.data(), n);
  kernels::back_substitute_transposed(L.data(), n, m.data(), n);
}

dcps_layout make_dcps_layout(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                             std::vector<unsigned char>* host) {
  const std::int64_t B = pr.problems, N = o.particles, d = prior.dim(), dy = pr.d_y, K = o.steps,
                     L = o.dcps_blocks;
  // Every Philox stream step of a particle must stay below 2^30 (kernels/rng.cuh keys the step above bit 34).
  const double counters = 1.0 + double(K) * double(o.dcps_gradient_steps + 1) + double(L) * double(o.dcps_langevin_steps);
  DIFFSAMPLE_EXPECTS(counters < double(std::int64_t(1) << 30),
                     "options: steps x (dcps_gradient_steps + 1) + dcps_blocks x dcps_langevin_steps must stay below "
                     "2^30, got " << counters);
  dcps_layout l;
  l.tables = put_linear_tables(prior, pr, o, l.blob, host);
  l.steps = l.blob.put(K * sizeof(kernels::dcps_step));
  l.blocks = l.blob.put(L * sizeof(kernels::dcps_block));
  l.step_precision = l.blob.put(K * B * dy * dy * sizeof(float));
  l.block_precision = l.blob.put(L * B * dy * dy * sizeof(float));
  l.table_end = l.blob.at;
  l.x = l.blob.put(B * N * d * sizeof(float));
  l.work = l.blob.put(B * N * (8 * d + 2 * dy) * sizeof(float));
  if (host == nullptr) return l;
  host->resize(l.table_end);
  unsigned char* base = host->data();
  const std::vector<schedule_point>& pts = l.tables.points;
  auto* steps = reinterpret_cast<kernels::dcps_step*>(base + l.steps);
  auto* blocks = reinterpret_cast<kernels::dcps_block*>(base + l.blocks);
  auto* step_precision = reinterpret_cast<float*>(base + l.step_precision);
  auto* block_precision = reinterpret_cast<float*>(base + l.block_precision);
  // A A^T per operator (FP64).
  const std::int64_t operators = l.tables.operators;
  std::vector<double> gram(operators * dy * dy);
  for (std::int64_t c = 0; c < operators; ++c) {
    if (pr.operators.empty()) {
      kernels::gram(pr.A.data() + c * dy * d, dy, d, gram.data() + c * dy * dy);
    } else {
      const std::vector<double> g = pr.operators[c].gram();
      std::copy(g.begin(), g.end(), gram.begin() + c * dy * dy);
    }
  }
  // The potential at grid point g of a block whose clean end is T: the bridge from g to T and v_g.
  auto potential = [&](std::int64_t g, std::int64_t T, double* variance) {
    kernels::dcps_potential pot{};
    pot.a = float(pts[g].a);
    pot.s = float(pts[g].s);
    pot.a_target = float(pts[T].a);
    if (g == T) {
      pot.cx = 1.f;
      pot.cm = 0.f;
      *variance = 0.0;
    } else {
      const kernels::backward_coefficients bk = kernels::ddpm_ddim_kernel(pts[g].a, pts[g].s, pts[T].a, pts[T].s,
                                                                          false, 1.0);
      pot.cx = float(bk.cx);
      pot.cm = float(bk.cm);
      *variance = bk.variance;
    }
    return pot;
  };
  std::vector<double> S(dy * dy);
  auto fill_precision = [&](double variance, float* out) {  // B tables of P = (v A A^T + sigma_y^2 I)^-1
    for (std::int64_t b = 0; b < B; ++b) {
      const double* G = gram.data() + (operators == 1 ? 0 : b) * dy * dy;
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      for (std::int64_t i = 0; i < dy * dy; ++i) S[i] = variance * G[i];
      for (std::int64_t i = 0; i < dy; ++i) S[i * dy + i] += sy * sy;
      invert(S, dy);
      for (std::int64_t i = 0; i < dy * dy; ++i) out[b * dy * dy + i] = float(S[i]);
    }
  };
  const std::int64_t per_block = K / L;
  for (std::int64_t b = 0; b < L; ++b) {
    const std::int64_t U = b * per_block, T = b + 1 == L ? K : (b + 1) * per_block;
    double v = 0;
    blocks[b].first_step = U;
    blocks[b].last_step = T;
    blocks[b].start = potential(U, T, &v);
    fill_precision(v, block_precision + b * B * dy * dy);
    for (std::int64_t j = U; j < T; ++j) {
      const kernels::backward_coefficients bk =
          kernels::ddpm_ddim_kernel(pts[j].a, pts[j].s, pts[j + 1].a, pts[j + 1].s, o.ddim, o.eta);
      kernels::dcps_step st{};
      st.a = float(pts[j].a);
      st.s = float(pts[j].s);
      st.c0 = float(bk.cm);
      st.c1 = float(bk.cx);
      st.sig = float(bk.sigma);
      st.next = potential(j + 1, T, &v);
      steps[j] = st;
      fill_precision(v, step_precision + j * B * dy * dy);
    }
  }
  return l;
}

/// Channel j of the packed path's table: grid point j's (a, s), the last point's from the last step's potential.
struct dcps_channels {
  const kernels::dcps_step* steps;
  std::int64_t K;
  DS_HD_INLINE bool operator()(std::int64_t j, float& a, float& s) const {
    a = j < K ? steps[j].a : steps[K - 1].next.a;
    s = j < K ? steps[j].s : steps[K - 1].next.s;
    return true;
  }
};

}  // namespace

std::size_t dcps_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return make_dcps_layout(prior, problems, options, nullptr).blob.at;
}

guided_report dcps_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  std::vector<unsigned char> host;
  const dcps_layout l = make_dcps_layout(prior, pr, o, &host);
  run_space rs;
  prepare_run(rs, pr, o, prior.dim(), out, exec, workspace, workspace_bytes, l.blob.at, host);
  kernels::dcps_params p{};
  p.g = linear_params(prior, pr, o, l.tables, rs.where, rs.ws);
  p.steps = reinterpret_cast<const kernels::dcps_step*>(rs.ws + l.steps);
  p.blocks = reinterpret_cast<const kernels::dcps_block*>(rs.ws + l.blocks);
  p.step_precision = reinterpret_cast<const float*>(rs.ws + l.step_precision);
  p.block_precision = reinterpret_cast<const float*>(rs.ws + l.block_precision);
  p.blocks_count = o.dcps_blocks;
  p.steps_count = o.steps;
  p.langevin_steps = o.dcps_langevin_steps;
  p.gradient_steps = o.dcps_gradient_steps;
  p.gamma = float(o.dcps_langevin_step);
  p.rho = float(o.dcps_learning_rate);
  p.initial_scale = l.tables.initial_scale;
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  const cpu::simd_target target = rs.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    // Packs of particles (src/cpu/guided.cpp): the mixture's constants at every grid point's channel (point j < K is
    // step j's, point K the last step's next), then one pool pass.
    const std::int64_t points = o.steps + 1;
    std::vector<float> table(static_cast<std::size_t>(kernels::mixture_channels::table_floats(p.g.mix, points)));
    const kernels::mixture_channels channels = kernels::mixture_channels::in(p.g.mix, points, table.data());
    cpu::parallel_for_each(points * p.g.mix.components,
                           kernels::channel_table_functor<dcps_channels>{channels, {p.steps, o.steps}});
    cpu::run_guided_dcps(target, p, channels, x);
    report.launches = 1 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream);
    return report;
  }
  kernels::for_each_index<128>(rs.where, BN,
                               kernels::guided_dcps_functor{p, x, reinterpret_cast<float*>(rs.ws + l.work)},
                               exec.stream);
  report.launches = 1 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream);
  return report;
}

}  // namespace diffsample::detail
