// Tweedie moment projected diffusion (kernels/guided_tmpd.cuh): the shared tables (src/guided_samplers.hpp),
// sigma_y^2 per problem, and one fused launch over B problems x N particles for the whole trajectory.
#include <cmath>
#include <vector>

#include "kernels/guided_tmpd.cuh"
#include "src/cpu/guided_jvp.hpp"
#include "src/guided_tables.hpp"

namespace diffsample::detail {

namespace {

struct tmpd_layout {
  blob_layout blob;
  linear_tables tables;
  std::size_t sigma2 = 0, table_end = 0, x = 0, fwork = 0, dwork = 0;
};

tmpd_layout make_tmpd_layout(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                             std::vector<unsigned char>* host) {
  tmpd_layout l;
  l.tables = put_linear_tables(prior, pr, o, l.blob, host);
  const std::size_t B = pr.problems, N = o.particles, d = prior.dim(), dy = pr.d_y;
  l.sigma2 = l.blob.put(B * sizeof(float));
  l.table_end = l.blob.at;
  l.x = l.blob.put(B * N * d * sizeof(float));
  l.fwork = l.blob.put(B * N * kernels::tmpd_scratch::floats(int(d), int(dy)) * sizeof(float));
  l.dwork = l.blob.put(B * N * kernels::tmpd_scratch::doubles(int(dy)) * sizeof(double));
  if (host != nullptr) {
    host->resize(l.table_end);
    auto* s2 = reinterpret_cast<float*>(host->data() + l.sigma2);
    for (std::size_t b = 0; b < B; ++b) {
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      s2[b] = float(sy * sy);
    }
  }
  return l;
}

/// Channel k of the packed path's table: step k's (a, s).
struct tmpd_channels {
  const kernels::guided_step* steps;
  DS_HD_INLINE bool operator()(std::int64_t k, float& a, float& s) const {
    a = steps[k].a;
    s = steps[k].s;
    return true;
  }
};

}  // namespace

std::size_t tmpd_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return make_tmpd_layout(prior, problems, options, nullptr).blob.at;
}

guided_report tmpd_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  std::vector<unsigned char> host;
  const tmpd_layout l = make_tmpd_layout(prior, pr, o, &host);
  run_space rs;
  prepare_run(rs, pr, o, prior.dim(), out, exec, workspace, workspace_bytes, l.blob.at, host);
  kernels::guided_params p = linear_params(prior, pr, o, l.tables, rs.where, rs.ws);
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  const cpu::simd_target target = rs.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    // Packs of particles (src/cpu/guided.cpp): the mixture's constants at every step's channel, then one pool pass.
    std::vector<float> table(static_cast<std::size_t>(kernels::mixture_channels::table_floats(p.mix, o.steps)));
    const kernels::mixture_channels channels = kernels::mixture_channels::in(p.mix, o.steps, table.data());
    cpu::parallel_for_each(o.steps * p.mix.components,
                           kernels::channel_table_functor<tmpd_channels>{channels, {p.steps}});
    cpu::run_guided_tmpd(target, p, channels, o.steps, float(o.guidance_scale),
                         reinterpret_cast<const float*>(rs.ws + l.sigma2), x);
    report.launches = 1 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream);
    return report;
  }
  // The CUDA executor's particles and scratch rows are coordinate-major inside the run (kernels/guided.cuh,
  // "Layout"), transposed back by the copies out.
  if (rs.where == executor::cuda) p.coordinate_stride = BN;
  kernels::for_each_index_scratch<128>(
      rs.where, BN,
      kernels::guided_tmpd_functor{p, o.steps, float(o.guidance_scale),
                                   reinterpret_cast<const float*>(rs.ws + l.sigma2), x,
                                   reinterpret_cast<float*>(rs.ws + l.fwork),
                                   reinterpret_cast<double*>(rs.ws + l.dwork)},
      exec.stream);
  report.launches = 1 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream, prior.dim(),
                                      p.coordinate_stride);
  return report;
}

}  // namespace diffsample::detail
