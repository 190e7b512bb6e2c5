// Tweedie moment projected diffusion (kernels/guided_tmpd.cuh): the shared tables (src/guided_tables.hpp),
// sigma_y^2 per problem, and one fused launch over B problems x N particles for the whole trajectory on the CUDA
// executor. On the CPU executor the run goes ask by ask (kernels/guided_stepwise.cuh) around the mixture's
// evaluate() and denoiser_jvp() (both packed on a SIMD target), as the ask/tell plan (make_tmpd_plan, below) goes
// around a caller's model, so that the plan fed the mixture reproduces guided_sample() bit for bit.
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/guided_stepwise.cuh"
#include "kernels/guided_tmpd.cuh"
#include "kernels/plan.cuh"
#include "src/cpu/jacobian_tells.hpp"
#include "src/fused_stepwise.hpp"
#include "src/guided_tables.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/operator_gemm.hpp"
#include "src/plan_storage.hpp"

namespace diffsample::detail {

namespace {

struct tmpd_layout {
  blob_layout blob;
  linear_tables tables;
  std::size_t sigma2 = 0, table_end = 0, channels = 0, x = 0, fwork = 0, dwork = 0, answer = 0, widened = 0;
};

// mix: the prior, whose constants at every step's channel the layout holds (guided_params::channels, filled on the
// executor); nullptr for the ask/tell plan.
tmpd_layout make_tmpd_layout(std::int64_t d, const guided_problems& pr, const guided_options& o,
                             std::vector<unsigned char>* host, const kernels::mixture_view<float>* mix) {
  tmpd_layout l;
  l.tables = put_linear_tables(d, pr, o, l.blob, host);
  const std::size_t B = pr.problems, N = o.particles, dy = pr.d_y;
  const std::size_t D = static_cast<std::size_t>(d);
  l.sigma2 = l.blob.put(B * sizeof(float));
  l.table_end = l.blob.at;
  l.channels = l.blob.put(mix != nullptr ? kernels::mixture_channels::table_floats(*mix, o.steps) * sizeof(float) : 0);
  l.x = l.blob.put(B * N * D * sizeof(float));
  l.fwork = l.blob.put(B * N * kernels::tmpd_scratch::floats(int(d), int(dy)) * sizeof(float));
  l.dwork = l.blob.put(B * N * kernels::tmpd_scratch::doubles(int(dy)) * sizeof(double));
  l.answer = l.blob.put(B * N * D * sizeof(float));  // the stepwise run's answers (CPU executor, plans)
  // The covariances as products (tmpd_covariance_gemm, the CPU executor past the size rule): their FP64 scratch,
  // reserved whenever the rule may take them (the layout does not know the executor), so that the run allocates
  // nothing beside a caller's workspace (it grew a vector of up to 2 MiB plus A per call before).
  const bool products = tmpd_operator_gemm(l.tables.masks, std::int64_t(dy), d, o.operator_path);
  l.widened = l.blob.put(products ? tmpd_covariance_gemm_values(std::int64_t(dy), d, std::int64_t(B * N)) * sizeof(double)
                                  : 0);
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

/// The stepwise run's rows in the layout's x, fwork (m, v, the products, r as arrays of B N rows) and dwork.
kernels::tmpd_rows tmpd_stepwise_rows(unsigned char* ws, const tmpd_layout& l, std::int64_t BN, std::int64_t d,
                                      std::int64_t dy) {
  float* f = reinterpret_cast<float*>(ws + l.fwork);
  double* g = reinterpret_cast<double*>(ws + l.dwork);
  float* m = f;
  float* v = m + BN * d;
  float* jrows = v + BN * d;
  float* r = jrows + BN * dy * d;
  return kernels::tmpd_rows{reinterpret_cast<float*>(ws + l.x), m, v, jrows, r, g, g + BN * dy * dy};
}

// The last product's tell of a step on the CPU executor with the covariances as products: the rows, then
// tmpd_covariance_gemm over all particles, then the updates (the same values as the one tell up to the products'
// summation order).
void tmpd_finish_gemm(kernels::tmpd_stage_functor f, const kernels::tmpd_rows& rows, const float* sigma2,
                      std::int64_t n, double* widened) {
  f.finish = kernels::tmpd_finish_rows;
  kernels::for_each_index<128>(executor::cpu, n, f, nullptr);
  tmpd_covariance_gemm(f.p, rows, f.k, sigma2, n, widened);
  f.finish = kernels::tmpd_finish_update;
  kernels::for_each_index<128>(executor::cpu, n, f, nullptr);
}

}  // namespace

std::size_t tmpd_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return laid_out_workspace_bytes(prior, problems, options, make_tmpd_layout);
}

guided_report tmpd_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  run_space rs;
  const tmpd_layout l = prepare_laid_out_run(rs, prior, pr, o, out, exec, workspace, workspace_bytes, make_tmpd_layout);
  const std::int64_t d = prior.dim(), dy = pr.d_y;
  kernels::guided_params p = linear_params(prior, pr, o, l.tables, rs.where, rs.ws);
  const auto* sigma2 = reinterpret_cast<const float*>(rs.ws + l.sigma2);
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  if (rs.where == executor::cuda) {
    // The CUDA executor's particles and scratch rows are coordinate-major inside the run (kernels/guided.cuh,
    // "Layout"), transposed back by the copies out.
    p.coordinate_stride = BN;
    // The mixture's constants at every step's channel, once per call on the device (kernels::guided_channel).
    p.channels = kernels::mixture_channels::in(p.mix, o.steps, reinterpret_cast<float*>(rs.ws + l.channels));
    kernels::for_each_index(rs.where, o.steps * p.mix.components,
                            kernels::channel_table_functor<kernels::guided_channels>{p.channels, {p.steps}},
                            exec.stream);
    kernels::for_each_index_scratch<128>(
        rs.where, BN,
        kernels::guided_tmpd_functor{p, o.steps, float(o.guidance_scale), sigma2, x,
                                     reinterpret_cast<float*>(rs.ws + l.fwork),
                                     reinterpret_cast<double*>(rs.ws + l.dwork)},
        exec.stream);
    report.launches = 2 + copy_outputs(x, BN * d, out, rs.where, exec.stream, d, p.coordinate_stride);
    return report;
  }
  // Ask by ask with the mixture's denoiser and J a_o (the direct path; both packed on a SIMD target), through the
  // plan's stage functors.
  const kernels::tmpd_rows rows = tmpd_stepwise_rows(rs.ws, l, BN, d, dy);
  float* answer = reinterpret_cast<float*>(rs.ws + l.answer);
  const execution cpu{executor::cpu, exec.stream};
  kernels::tmpd_stage_functor f{p,   rows, answer, kernels::tmpd_op_initial, 0, 0, 0.f, 1.f, float(o.guidance_scale),
                                sigma2, nullptr, nullptr, 0};
  kernels::for_each_index<128>(rs.where, BN, f, exec.stream);
  // A dense operator's covariances A C A^T as products over all particles when that pays (tmpd_operator_gemm).
  const bool gemm = tmpd_operator_gemm(p, o.operator_path);
  if (gemm) report.operator_path = mixture_path::gemm;
  double* widened = reinterpret_cast<double*>(rs.ws + l.widened);
  // The covariances as one product over all particles do not fuse per pack.
  const bool fused = !gemm && fused_stepwise_available();
  if (fused) {
    // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp): per step the
    // pack's denoiser and its d_y products by the batched calls' per-pack code, each followed by the plan's packed
    // tell (cpu::run_tmpd_tell's) on the pack, the pack's particles kept in packs from ask to ask.
    const std::int64_t per = 1 + dy;
    std::vector<fused_ask> asks(static_cast<std::size_t>(o.steps * per));
    for (std::int64_t k = 0; k < o.steps; ++k) {
      const kernels::guided_step& st =
          reinterpret_cast<const kernels::guided_step*>(rs.host.data() + l.tables.steps)[k];
      const channel ch{st.a, st.s};
      asks[k * per] = {ch, x, nullptr, answer};
      for (std::int64_t q = 0; q < dy; ++q) asks[k * per + 1 + q] = {ch, x, rows.v, answer};
    }
    report.launches += run_fused_stepwise(prior.storage(), BN, asks.data(), o.steps * per, nullptr, nullptr, nullptr,
                                          nullptr, &f);
  }
  for (std::int64_t k = 0; !fused && k < o.steps; ++k) {
    const kernels::guided_step& st = reinterpret_cast<const kernels::guided_step*>(rs.host.data() + l.tables.steps)[k];
    const channel ch{st.a, st.s};
    // The unchecked layer: the inputs were validated once at the call's start, not per transition.
    evaluate_direct_unchecked(prior.storage(), quantity::denoiser, x, BN, ch, answer, cpu);
    f.op = kernels::tmpd_op_m;
    f.k = k;
    kernels::for_each_index<128>(rs.where, BN, f, exec.stream);
    for (int q = 0; q < int(dy); ++q) {
      denoiser_jvp_unchecked(prior.storage(), x, rows.v, BN, ch, answer, cpu);
      f.op = kernels::tmpd_op_ju;
      f.o = q;
      if (gemm && q + 1 == int(dy))
        tmpd_finish_gemm(f, rows, sigma2, BN, widened);
      else
        kernels::for_each_index<128>(rs.where, BN, f, exec.stream);
    }
    report.launches += 2 * (1 + dy);
  }
  report.launches += 1 + copy_outputs(x, BN * d, out, rs.where, exec.stream);
  return report;
}

// --- ask/tell plan ------------------------------------------------------------------------------------------------

namespace {

// 1 + d_y asks per step k: the model's output at the particles, then J^T a_o for every row a_o of A_b. Tell j is
// that ask's stage functor over the B N rows, as guided_sample() issues it on the CPU executor.
struct tmpd_plan_storage final : workspace_plan_storage {
  std::int64_t per_step = 1;
  kernels::guided_params p{};
  kernels::tmpd_rows buf{};
  float* answer = nullptr;
  const float* sigma2 = nullptr;
  float scale = 1.f;
  plan_request request(std::int64_t j) const override {
    const std::size_t k = static_cast<std::size_t>(j / per_step);
    const bool jvp = j % per_step != 0;
    return ask(j, buf.x, steps.channels[k], steps.times[k], jvp ? model_output::denoiser : output, answer,
               jvp ? buf.v : nullptr);
  }
  kernels::tmpd_stage_functor stage(int op, int o, std::int64_t k, std::int64_t next) const {
    const std::size_t i = static_cast<std::size_t>(k);
    const bool m = op == kernels::tmpd_op_m;
    return kernels::tmpd_stage_functor{p,     buf,    answer, op, o, k, m ? steps.ux[i] : 0.f, m ? steps.um[i] : 1.f,
                                       scale, sigma2, &state->chain_base, &state->step, next};
  }
  bool gemm = false;            // CPU executor: covariances as products (tmpd_finish_gemm), as guided_sample()
  double* widened = nullptr;    // their FP64 scratch (in the plan's copy of guided_sample()'s workspace)
  mixture_path operator_path() const override { return gemm ? mixture_path::gemm : mixture_path::direct; }
  void tell(std::int64_t j, cudaStream_t stream) override {
    const std::int64_t k = j / per_step, o = j % per_step - 1;
    const kernels::tmpd_stage_functor f = stage(o < 0 ? kernels::tmpd_op_m : kernels::tmpd_op_ju, int(o), k, j + 1);
    const cpu::simd_target target = where == executor::cpu && !gemm ? cpu::chain_target() : cpu::simd_target::scalar;
    if (gemm && o + 1 == p.d_y)
      tmpd_finish_gemm(f, buf, sigma2, rows, widened);
    else if (target != cpu::simd_target::scalar)
      cpu::run_tmpd_tell(target, f);  // on packs, as guided_sample()'s fused run
    else
      kernels::for_each_index<128>(where, rows, f, stream);
  }
  void reset(const float* initial, cudaStream_t stream) override {
    if (!start(initial, stream))
      kernels::for_each_index<128>(where, rows, stage(kernels::tmpd_op_initial, 0, 0, 0), stream);
  }
};

}  // namespace

std::unique_ptr<sampling_plan_storage> make_tmpd_plan(std::int64_t d, const guided_problems& pr,
                                                      const guided_options& o, model_output output, executor where,
                                                      cudaStream_t stream) {
  auto st = std::make_unique<tmpd_plan_storage>();
  std::vector<unsigned char> tables;
  const tmpd_layout l = make_tmpd_layout(d, pr, o, &tables, nullptr);
  const std::int64_t BN = pr.problems * o.particles, dy = pr.d_y;
  st->per_step = 1 + dy;
  st->set_up(where, BN, d, o.steps * st->per_step, output);
  st->scale = float(o.guidance_scale);
  for (std::int64_t k = 0; k < o.steps; ++k) {
    const kernels::guided_step& step = reinterpret_cast<const kernels::guided_step*>(tables.data() + l.tables.steps)[k];
    st->steps.push(output, channel{step.a, step.s}, l.tables.points[static_cast<std::size_t>(k)].t);
  }
  // One allocation: guided_sample()'s workspace (tables, x, the rows, the answer), then the state.
  unsigned char* base = st->allocate(tables, l.blob.at, stream);
  st->p = linear_params(kernels::mixture_view<float>{}, d, pr, o, l.tables, base);
  st->buf = tmpd_stepwise_rows(base, l, BN, d, dy);
  st->x = st->buf.x;
  st->answer = reinterpret_cast<float*>(base + l.answer);
  st->sigma2 = reinterpret_cast<const float*>(base + l.sigma2);
  st->gemm = where == executor::cpu && tmpd_operator_gemm(st->p, o.operator_path);
  st->widened = reinterpret_cast<double*>(base + l.widened);
  return st;
}

}  // namespace diffsample::detail
