// The guided samplers that run outside src/guided.cu's SMC pipeline (TMPD, DDRM, DCPS), each in its own file
// (src/guided_tmpd.cu, src/guided_ddrm.cu, src/guided_dcps.cu), dispatched from guided_sample(), and the host
// tables they share: the backward kernels of the time grid, the operators as the kernels read them (dense rows or
// masks), the observations and the noise levels, laid out in one blob copied to the executor once per call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/backward.cuh"
#include "kernels/guided.cuh"
#include "src/cuda_check.hpp"
#include "src/guided_shard.hpp"
#include "src/launch.hpp"
#include "src/mixture_storage.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>

namespace diffsample::detail {

// Entry points, called by guided_workspace_bytes() and guided_sample() after their common validation.
std::size_t tmpd_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options);
guided_report tmpd_sample(const gaussian_mixture& prior, const guided_problems& problems,
                          const guided_options& options, guided_outputs outputs, execution exec, void* workspace,
                          std::size_t workspace_bytes);
std::size_t ddrm_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options);
guided_report ddrm_sample(const gaussian_mixture& prior, const guided_problems& problems,
                          const guided_options& options, guided_outputs outputs, execution exec, void* workspace,
                          std::size_t workspace_bytes);
std::size_t dcps_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options);
guided_report dcps_sample(const gaussian_mixture& prior, const guided_problems& problems,
                          const guided_options& options, guided_outputs outputs, execution exec, void* workspace,
                          std::size_t workspace_bytes);

/// A workspace laid out by successive put() calls (256-byte aligned), the first part filled on the host.
struct blob_layout {
  std::size_t at = 0;
  std::size_t put(std::size_t bytes) {
    const std::size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  }
};

/// The tables every sampler of this family reads: per transition the backward kernel (guided_step), the operators
/// (dense rows as floats, or masks), y as floats. Offsets into the blob.
struct linear_tables {
  std::size_t steps = 0, A = 0, mask = 0, y = 0;
  bool masks = false;
  std::int64_t operators = 1;  // 1 shared or B
  float initial_scale = 1.f;
  std::vector<schedule_point> points;
};

/// The noise a guided step k may start from, checked once s > 0 is: s >= 1e-18. Below it s^2 is below min_variance
/// (1e-36) and leaves FP32's normal range, which the guided samplers' kernels square s in (DCPS gave every particle
/// NaN from s = 1e-20 down, DDRM from 1e-40, every sampler below 1.5e-154 where s^2 leaves FP64's too); the fused
/// diffusion samplers run such grids.
inline void check_step_noise(const schedule_point& p, std::int64_t k) {
  DIFFSAMPLE_EXPECTS(p.s >= 1e-18, "options.schedule: s = " << p.s << " at t = " << p.t << " (step " << k
                                                             << ") is below 1e-18: the guided samplers square s in "
                                                                "FP32 (a variance_exploding sigma_min that small, for "
                                                                "one)");
}

/// The schedule's check of step k from point p to the next point q: s > 0 at p (a DDPM step divides by s^2) and
/// check_step_noise(), and a > 0 at both (@p who: what needs a > 0, for the message).
inline void check_backward_step(const schedule_point& p, const schedule_point& q, std::int64_t k, const char* who) {
  DIFFSAMPLE_EXPECTS(p.s > 0, "options.schedule: s = 0 at t = " << p.t << " (step " << k
                                                                << "), where a DDPM step divides by s^2");
  check_step_noise(p, k);
  DIFFSAMPLE_EXPECTS(p.a > 0 && q.a > 0,
                     "options.schedule: a = 0 at t = " << (p.a > 0 ? q.t : p.t) << ": " << who << " need a > 0");
}

/// check_backward_step() of every step of the grid @p pts (steps + 1 points), in order: what a run checks as it
/// builds its tables, and its workspace query too (which builds none).
inline void check_backward_steps(const std::vector<schedule_point>& pts, const char* who) {
  for (std::size_t k = 0; k + 1 < pts.size(); ++k)
    check_backward_step(pts[k], pts[k + 1], static_cast<std::int64_t>(k), who);
}

/// Step k of a guided run from schedule point p to the next point q: channel (p.a, p.s), the DDPM / DDIM backward
/// kernel N(c0 x0 + c1 x, sig^2 I) of kernels/backward.cuh (into *kernel when given) and the guidance factor
/// c0 s^2 / a. Checks the step with check_backward_step().
inline kernels::guided_step backward_step(const schedule_point& p, const schedule_point& q, std::int64_t k,
                                          const guided_options& o, const char* who,
                                          kernels::backward_coefficients* kernel = nullptr) {
  check_backward_step(p, q, k, who);
  const kernels::backward_coefficients bk = kernels::ddpm_ddim_kernel(p.a, p.s, q.a, q.s, o.ddim, o.eta);
  if (kernel != nullptr) *kernel = bk;
  kernels::guided_step st{};
  st.a = float(p.a);
  st.s = float(p.s);
  st.a_next = float(q.a);
  st.c0 = float(bk.cm);
  st.c1 = float(bk.cx);
  st.sig = float(bk.sigma);
  st.guidance = float(bk.cm * p.s * p.s / p.a);
  return st;
}

/// Lays out and fills the shared tables at the front of @p blob (grown as needed) and checks the schedule (s > 0
/// at every point a step starts from, a > 0 everywhere), also when @p blob is null (the workspace query's layout).
inline linear_tables put_linear_tables(std::int64_t d, const guided_problems& pr, const guided_options& o,
                                       blob_layout& layout, std::vector<unsigned char>* blob) {
  const std::int64_t dy = pr.d_y, K = o.steps, B = pr.problems;
  linear_tables t;
  t.points = o.schedule.points(K);
  t.masks = !pr.operators.empty() &&
            std::all_of(pr.operators.begin(), pr.operators.end(),
                        [](const observation_operator& op) { return op.kind() == observation_kind::mask; });
  t.operators = pr.operators.empty() ? (pr.A.size() == static_cast<std::size_t>(dy * d) ? 1 : B)
                                     : static_cast<std::int64_t>(pr.operators.size());
  const std::int64_t per = dy * (t.masks ? 1 : d);
  t.steps = layout.put(K * sizeof(kernels::guided_step));
  t.A = layout.put(t.operators * per * sizeof(float));
  t.mask = layout.put(t.masks ? t.operators * dy * sizeof(std::int32_t) : 0);
  t.y = layout.put(B * dy * sizeof(float));
  check_backward_steps(t.points, "the samplers");
  if (blob == nullptr) return t;
  blob->resize(std::max(blob->size(), layout.at));
  unsigned char* base = blob->data();
  auto* steps = reinterpret_cast<kernels::guided_step*>(base + t.steps);
  const std::vector<schedule_point>& pts = t.points;
  for (std::int64_t k = 0; k < K; ++k) steps[k] = backward_step(pts[k], pts[k + 1], k, o, "the samplers");
  auto* A32 = reinterpret_cast<float*>(base + t.A);
  auto* mask32 = reinterpret_cast<std::int32_t*>(base + t.mask);
  for (std::int64_t c = 0; c < t.operators; ++c) {
    if (pr.operators.empty()) {
      for (std::int64_t i = 0; i < dy * d; ++i) A32[c * dy * d + i] = float(pr.A[c * dy * d + i]);
    } else if (t.masks) {
      const observation_operator& op = pr.operators[c];
      for (std::int64_t i = 0; i < dy; ++i) {
        A32[c * dy + i] = float(op.diagonal()[i]);
        mask32[c * dy + i] = static_cast<std::int32_t>(op.indices()[i]);
      }
    } else {
      const std::vector<double> A = pr.operators[c].matrix();
      for (std::int64_t i = 0; i < dy * d; ++i) A32[c * dy * d + i] = float(A[i]);
    }
  }
  auto* y32 = reinterpret_cast<float*>(base + t.y);
  for (std::size_t i = 0; i < pr.y.size(); ++i) y32[i] = float(pr.y[i]);
  t.initial_scale = float(pts.front().s);
  return t;
}

/// put_linear_tables() for @p prior's dimension.
inline linear_tables put_linear_tables(const gaussian_mixture& prior, const guided_problems& pr,
                                       const guided_options& o, blob_layout& layout,
                                       std::vector<unsigned char>* blob) {
  return put_linear_tables(prior.dim(), pr, o, layout, blob);
}

/// guided_params over the tables in the executor's copy of the blob at @p ws, for d-dimensional states and the
/// mixture @p mix (empty for an ask/tell plan, whose prior is the caller's model).
inline kernels::guided_params linear_params(kernels::mixture_view<float> mix, std::int64_t d,
                                            const guided_problems& pr, const guided_options& o,
                                            const linear_tables& t, const unsigned char* ws) {
  kernels::guided_params p{};
  p.mix = mix;
  p.steps = reinterpret_cast<const kernels::guided_step*>(ws + t.steps);
  p.A = reinterpret_cast<const float*>(ws + t.A);
  p.mask = t.masks ? reinterpret_cast<const std::int32_t*>(ws + t.mask) : nullptr;
  p.A_stride = t.operators == 1 ? 0 : pr.d_y * (t.masks ? 1 : d);
  p.y = reinterpret_cast<const float*>(ws + t.y);
  p.problems = pr.problems;
  p.particles = o.particles;
  p.d = int(d);
  p.d_y = int(pr.d_y);
  p.seed = o.seed;
  p.initial_scale = t.initial_scale;
  p.stream_skip = current_particle_streams().skip(o.particles);  // 0 unless a shard of a larger run
  p.stream_first = current_particle_streams().first;
  return p;
}

/// guided_params over the tables in the executor's copy of the blob at @p ws (the prior's mixture on @p where).
inline kernels::guided_params linear_params(const gaussian_mixture& prior, const guided_problems& pr,
                                            const guided_options& o, const linear_tables& t, executor where,
                                            const unsigned char* ws) {
  return linear_params(prior.storage().view(where), prior.dim(), pr, o, t, ws);
}

/// Where the run happens and its workspace: the caller's (checked) or one owned allocation; the host blob copied in
/// (upload_async() on the stream for the CUDA executor, refused under stream capture).
struct run_space {
  executor where = executor::cpu;
  unsigned char* ws = nullptr;
  std::unique_ptr<scratch> owned;
  std::vector<unsigned char> host;  ///< the host tables (prepare_laid_out_run()), which a CPU run reads again
};

/// Refuses outputs of a guided run that share memory with each other or with the caller's workspace: each is written
/// at the end from the run's state in the workspace, so one over another, or over the state, loses data. @p rows:
/// problems x particles (of this shard); @p steps: the run's steps (the ESS trace holds problems x (steps + 1)); the
/// SMC-only outputs count when @p smc; @p workspace_bytes: the bytes the run uses of @p workspace.
inline void check_outputs_disjoint(const guided_outputs& out, std::int64_t problems, std::int64_t rows,
                                   std::int64_t d, std::int64_t steps, bool smc, const void* workspace,
                                   std::size_t workspace_bytes) {
  const auto bytes = [](std::int64_t count, std::size_t each) { return static_cast<std::size_t>(count) * each; };
  check_disjoint({{"outputs.particles", out.particles, bytes(rows * d, sizeof(float))},
                  {"outputs.samples", out.samples, bytes(rows * d, sizeof(float))},
                  {"outputs.log_weights", smc ? out.log_weights : nullptr, bytes(rows, sizeof(float))},
                  {"outputs.log_normaliser", smc ? out.log_normaliser : nullptr, bytes(problems, sizeof(double))},
                  {"outputs.ess_trace", smc ? out.ess_trace : nullptr, bytes(problems * (steps + 1), sizeof(float))},
                  {"outputs.resample_count", smc ? out.resample_count : nullptr,
                   bytes(problems, sizeof(std::int32_t))},
                  {"workspace", workspace, workspace_bytes}});
}

inline const void* output_probe(const guided_outputs& out) {
  return out.particles != nullptr ? static_cast<const void*>(out.particles) : static_cast<const void*>(out.samples);
}

inline void prepare_run(run_space& rs, const guided_problems& pr, const guided_options& o, std::int64_t d,
                        const guided_outputs& out, execution exec, void* workspace, std::size_t workspace_bytes,
                        std::size_t total, const std::vector<unsigned char>& blob) {
  rs.where = resolve_executor(exec.kind, output_probe(out));
  const std::int64_t BN = pr.problems * o.particles;
  if (out.particles != nullptr) check_buffer("outputs.particles", out.particles, BN * d, sizeof(float), rs.where);
  if (out.samples != nullptr) check_buffer("outputs.samples", out.samples, BN * d, sizeof(float), rs.where);
  check_outputs_disjoint(out, pr.problems, BN, d, o.steps, false, workspace, total);
  if (rs.where == executor::cuda) refuse_capture(exec.stream, "guided_sample()", "sampling_plan::guided");
  if (workspace == nullptr) check_allocation("guided workspace", total, rs.where, exec.stream);
  rs.ws = workspace_or_scratch(total, workspace, workspace_bytes, 16, rs.where, exec.stream, rs.owned);
  if (rs.where == executor::cuda) {
    upload_async(rs.ws, blob.data(), blob.size(), exec.stream);  // pinned staging: no host synchronisation
  } else {
    std::memcpy(rs.ws, blob.data(), blob.size());
  }
}

/// The run of a sampler whose tables @p make(d, problems, options, host, shape) lays out with the prior's shape
/// (TMPD, DCPS): the layout, its host tables in rs.host, and the workspace with them copied in (prepare_run()).
template <class Make>
auto prepare_laid_out_run(run_space& rs, const gaussian_mixture& prior, const guided_problems& pr,
                          const guided_options& o, const guided_outputs& out, execution exec, void* workspace,
                          std::size_t workspace_bytes, Make make) {
  const kernels::mixture_view<float> shape = prior.storage().view(executor::cpu);
  const auto l = make(prior.dim(), pr, o, &rs.host, &shape);
  prepare_run(rs, pr, o, prior.dim(), out, exec, workspace, workspace_bytes, l.blob.at, rs.host);
  return l;
}

/// The workspace bytes of that run: the same layout, without its tables.
template <class Make>
std::size_t laid_out_workspace_bytes(const gaussian_mixture& prior, const guided_problems& pr,
                                     const guided_options& o, Make make) {
  const kernels::mixture_view<float> shape = prior.storage().view(executor::cpu);
  return make(prior.dim(), pr, o, nullptr, &shape).blob.at;
}

/// Copies the final particles (n floats, rows of d) to the requested outputs, row-major, from the run's layout
/// (coordinate_stride 0: row-major, else coordinate-major with that stride, transposed here); returns the launches
/// issued.
inline std::int64_t copy_outputs(const float* x, std::int64_t n, const guided_outputs& out, executor where,
                                 cudaStream_t stream, std::int64_t d = 1, std::int64_t coordinate_stride = 0) {
  std::int64_t launches = 0;
  for (float* dst : {out.particles, out.samples}) {
    if (dst == nullptr) continue;
    if (coordinate_stride == 0)
      kernels::for_each_index(where, n, kernels::guided_copy_functor{x, dst}, stream);
    else
      kernels::for_each_index(where, n, kernels::guided_copy_out_functor{x, dst, d, coordinate_stride}, stream);
    ++launches;
  }
  return launches;
}

}  // namespace diffsample::detail
