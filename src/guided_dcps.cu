// Divide-and-conquer posterior sampling (kernels/guided_dcps.cuh): the blocks of the time grid, each step's kernel
// and potential (bridge coefficients to its block's clean end), and the inverse covariances of the potentials per
// point and problem, folded on the host in FP64; then one fused launch over B problems x N particles on the CUDA
// executor. On the CPU executor the run goes ask by ask (kernels/guided_stepwise.cuh) around the mixture's
// evaluate() and denoiser_jvp(), as the ask/tell plan (make_dcps_plan, below) goes around a caller's model, so
// that the plan fed the mixture reproduces guided_sample() bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/guided_dcps.cuh"
#include "kernels/guided_stepwise.cuh"
#include "kernels/linalg.cuh"
#include "kernels/plan.cuh"
#include "src/cpu/jacobian_tells.hpp"
#include "src/fused_stepwise.hpp"
#include "src/limits.hpp"
#include "src/guided_tables.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/plan_storage.hpp"

namespace diffsample::detail {

namespace {

struct dcps_layout {
  blob_layout blob;
  linear_tables tables;
  std::size_t steps = 0, blocks = 0, step_precision = 0, block_precision = 0, step_inv_scale = 0,
              block_inv_scale = 0, table_end = 0, channels = 0, x = 0, work = 0;
};

// Inverse of a symmetric positive-definite n x n matrix in place (FP64 Cholesky). The matrix is v A A^T + sigma_y^2 I,
// whose diagonal entries are sums of squares: each pivot is tested against its own (kernels::cholesky_failure_scaled),
// so rows of A on very different scales are not taken for a singular matrix.
void invert(std::vector<double>& m, std::int64_t n) {
  std::vector<double> L = m;
  const std::int64_t row = kernels::cholesky_failure_scaled(L.data(), n);
  DIFFSAMPLE_EXPECTS(row < 0, "problems: a DCPS potential's covariance is not numerically positive definite (row "
                                  << row << ")");
  std::fill(m.begin(), m.end(), 0.0);
  for (std::int64_t i = 0; i < n; ++i) m[i * n + i] = 1.0;
  kernels::forward_substitute(L.data(), n, m.data(), n);
  kernels::back_substitute_transposed(L.data(), n, m.data(), n);
}

// The scale a precision table is stored over (kernels::dcps_params::step_inv_scale): 1 while its largest entry is
// at most 2^64, else the power of two at or above that entry (the stored entries then at most 1 in magnitude).
double dcps_table_scale(double largest) {
  return largest <= 0x1p64 ? 1.0 : std::exp2(std::ceil(std::log2(largest)));
}

// mix: the prior, whose constants at the run's channels (kernels::dcps_channels) the layout holds; nullptr for the
// ask/tell plan.
dcps_layout make_dcps_layout(std::int64_t d, const guided_problems& pr, const guided_options& o,
                             std::vector<unsigned char>* host, const kernels::mixture_view<float>* mix) {
  const std::int64_t B = pr.problems, N = o.particles, dy = pr.d_y, K = o.steps,
                     L = o.dcps_blocks;
  // Every Philox stream step of a particle must stay below limits::max_stream_steps (kernels/rng.cuh keys the step
  // above bit 34).
  const double counters = 1.0 + double(K) * double(o.dcps_gradient_steps + 1) + double(L) * double(o.dcps_langevin_steps);
  DIFFSAMPLE_EXPECTS(counters < double(limits::max_stream_steps),
                     limits::above("options: 1 + steps x (dcps_gradient_steps + 1) + dcps_blocks x dcps_langevin_steps",
                                   std::to_string(static_cast<std::int64_t>(counters)), limits::max_stream_steps - 1,
                                   "the Philox stream steps of a particle"));
  dcps_layout l;
  l.tables = put_linear_tables(d, pr, o, l.blob, host);
  l.steps = l.blob.put(K * sizeof(kernels::dcps_step));
  l.blocks = l.blob.put(L * sizeof(kernels::dcps_block));
  l.step_precision = l.blob.put(K * B * dy * dy * sizeof(float));
  l.block_precision = l.blob.put(L * B * dy * dy * sizeof(float));
  l.step_inv_scale = l.blob.put(K * B * sizeof(float));
  l.block_inv_scale = l.blob.put(L * B * sizeof(float));
  l.table_end = l.blob.at;
  l.channels = l.blob.put(
      mix != nullptr ? kernels::mixture_channels::table_floats(*mix, kernels::dcps_channels::count(K, L)) * sizeof(float)
                     : 0);
  l.x = l.blob.put(B * N * d * sizeof(float));
  l.work = l.blob.put(B * N * kernels::dcps_scratch::floats(int(d), int(dy)) * sizeof(float));
  if (host == nullptr) return l;
  host->resize(l.table_end);
  unsigned char* base = host->data();
  const std::vector<schedule_point>& pts = l.tables.points;
  auto* steps = reinterpret_cast<kernels::dcps_step*>(base + l.steps);
  auto* blocks = reinterpret_cast<kernels::dcps_block*>(base + l.blocks);
  auto* step_precision = reinterpret_cast<float*>(base + l.step_precision);
  auto* block_precision = reinterpret_cast<float*>(base + l.block_precision);
  auto* step_inv_scale = reinterpret_cast<float*>(base + l.step_inv_scale);
  auto* block_inv_scale = reinterpret_cast<float*>(base + l.block_inv_scale);
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
      // The bridge takes the transitions' kernel (options.ddim, eta), as the published code passes one eta to both.
      const kernels::backward_coefficients bk = kernels::ddpm_ddim_kernel(pts[g].a, pts[g].s, pts[T].a, pts[T].s,
                                                                          o.ddim, o.eta);
      pot.cx = float(bk.cx);
      pot.cm = float(bk.cm);
      *variance = bk.variance;
    }
    return pot;
  };
  std::vector<double> S(dy * dy);
  // B tables of P = (v A A^T + sigma_y^2 I)^-1; v = 0 unless options.dcps_bridge_variance (the published potential,
  // the likelihood at the bridge mean, leaves the bridge's variance out). Each stored over its scale
  // (dcps_table_scale), whose inverse goes to inv_scale[b].
  auto fill_precision = [&](double variance, float* out, float* inv_scale) {
    for (std::int64_t b = 0; b < B; ++b) {
      const double* G = gram.data() + (operators == 1 ? 0 : b) * dy * dy;
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      for (std::int64_t i = 0; i < dy * dy; ++i) S[i] = variance * G[i];
      for (std::int64_t i = 0; i < dy; ++i) S[i * dy + i] += sy * sy;
      invert(S, dy);
      double largest = 0;
      for (std::int64_t i = 0; i < dy * dy; ++i) largest = std::max(largest, std::abs(S[i]));
      const double scale = dcps_table_scale(largest);
      for (std::int64_t i = 0; i < dy * dy; ++i) out[b * dy * dy + i] = float(S[i] / scale);
      inv_scale[b] = float(1.0 / scale);
    }
  };
  const std::int64_t per_block = K / L;
  for (std::int64_t b = 0; b < L; ++b) {
    const std::int64_t U = b * per_block, T = b + 1 == L ? K : (b + 1) * per_block;
    double v = 0;
    blocks[b].first_step = U;
    blocks[b].last_step = T;
    blocks[b].start = potential(U, T, &v);
    fill_precision(o.dcps_bridge_variance ? v : 0.0, block_precision + b * B * dy * dy, block_inv_scale + b * B);
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
      fill_precision(o.dcps_bridge_variance ? v : 0.0, step_precision + j * B * dy * dy, step_inv_scale + j * B);
    }
  }
  return l;
}

/// The asks of one DCPS trajectory, in order (they depend only on the options): per block, its Langevin steps
/// (the denoiser at x, then J^T u unless the block's potential has cm = 0), then per transition the denoiser at x
/// and, unless the kernel is a point mass, per gradient step the denoiser at q (and J^T u unless the next point is the
/// block's clean end).
std::vector<kernels::dcps_ask> dcps_asks(const dcps_layout& l, const unsigned char* base, const guided_options& o) {
  const auto* steps = reinterpret_cast<const kernels::dcps_step*>(base + l.steps);
  const auto* blocks = reinterpret_cast<const kernels::dcps_block*>(base + l.blocks);
  std::vector<kernels::dcps_ask> asks;
  auto ask = [&](int op, std::int64_t block, std::int64_t t, std::int64_t j, std::int64_t g, std::int64_t point,
                 float a, float s, bool at_q, bool vector) {
    asks.push_back(kernels::dcps_ask{op, block, t, j, g, point, a, s, at_q, vector});
  };
  for (std::int64_t b = 0; b < o.dcps_blocks; ++b) {
    const kernels::dcps_potential start = blocks[b].start;
    const std::int64_t U = blocks[b].first_step;
    for (std::int64_t t = 0; t < o.dcps_langevin_steps; ++t) {
      ask(kernels::dcps_op_langevin_m, b, t, 0, 0, U, start.a, start.s, false, false);
      if (start.cm != 0.f) ask(kernels::dcps_op_langevin_ju, b, t, 0, 0, U, start.a, start.s, false, true);
    }
    for (std::int64_t j = U; j < blocks[b].last_step; ++j) {
      const kernels::dcps_step st = steps[j];
      ask(kernels::dcps_op_step_m, b, 0, j, 0, j, st.a, st.s, false, false);
      if (st.sig == 0.f) continue;
      for (std::int64_t g = 0; g < o.dcps_gradient_steps; ++g) {
        ask(kernels::dcps_op_gradient_m, b, 0, j, g, j + 1, st.next.a, st.next.s, true, false);
        if (st.next.cm != 0.f)
          ask(kernels::dcps_op_gradient_ju, b, 0, j, g, j + 1, st.next.a, st.next.s, true, true);
      }
    }
  }
  return asks;
}

/// dcps_params over the tables at @p ws.
kernels::dcps_params bind_dcps(const dcps_layout& l, kernels::mixture_view<float> mix, std::int64_t d,
                               const guided_problems& pr, const guided_options& o, const unsigned char* ws) {
  kernels::dcps_params p{};
  p.g = linear_params(mix, d, pr, o, l.tables, ws);
  p.steps = reinterpret_cast<const kernels::dcps_step*>(ws + l.steps);
  p.blocks = reinterpret_cast<const kernels::dcps_block*>(ws + l.blocks);
  p.step_precision = reinterpret_cast<const float*>(ws + l.step_precision);
  p.block_precision = reinterpret_cast<const float*>(ws + l.block_precision);
  p.step_inv_scale = reinterpret_cast<const float*>(ws + l.step_inv_scale);
  p.block_inv_scale = reinterpret_cast<const float*>(ws + l.block_inv_scale);
  p.blocks_count = o.dcps_blocks;
  p.steps_count = o.steps;
  p.langevin_steps = o.dcps_langevin_steps;
  p.gradient_steps = o.dcps_gradient_steps;
  p.gamma = float(o.dcps_langevin_step);
  p.rho = float(o.dcps_learning_rate);
  p.absolute_step = o.dcps_absolute_step ? 1 : 0;
  p.initial_scale = l.tables.initial_scale;
  return p;
}

/// The stepwise run's rows in the layout's x and work (8 arrays of B N x d, then 2 of B N x d_y), and its answer
/// buffer (the last d array).
struct dcps_stepwise {
  kernels::dcps_rows rows;
  float* answer;
  dcps_stepwise(unsigned char* ws, const dcps_layout& l, std::int64_t BN, std::int64_t d, std::int64_t dy) {
    float* w = reinterpret_cast<float*>(ws + l.work);
    auto at = [&](int k) { return w + k * BN * d; };
    rows = kernels::dcps_rows{reinterpret_cast<float*>(ws + l.x), at(0), at(1), at(2), at(3), at(4), at(5), at(6),
                              at(8) /* r */, at(8) + BN * dy /* t */};
    answer = at(7);
  }
};

/// The tell of ask @p a: its stage functor (the answer r becomes the denoiser ux x + um r).
kernels::dcps_stage_functor dcps_stage(const kernels::dcps_params& p, const dcps_stepwise& s,
                                       const kernels::dcps_ask& a, float ux, float um, const std::uint64_t* id_base,
                                       std::int64_t* position, std::int64_t next) {
  return kernels::dcps_stage_functor{p, s.rows, s.answer, a.op, a.block, a.t, a.step, a.g, ux, um, id_base,
                                     position, next};
}

}  // namespace

std::size_t dcps_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return laid_out_workspace_bytes(prior, problems, options, make_dcps_layout);
}

guided_report dcps_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  run_space rs;
  const dcps_layout l = prepare_laid_out_run(rs, prior, pr, o, out, exec, workspace, workspace_bytes, make_dcps_layout);
  const std::int64_t d = prior.dim(), dy = pr.d_y;
  kernels::dcps_params p = bind_dcps(l, prior.storage().view(rs.where), d, pr, o, rs.ws);
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  if (rs.where == executor::cuda) {
    // The particles and scratch rows are coordinate-major inside the run (kernels/guided.cuh, "Layout"), transposed
    // back by the copies out.
    p.g.coordinate_stride = BN;
    // The mixture's constants at every channel of the run, once per call on the device.
    const std::int64_t channels = kernels::dcps_channels::count(p.steps_count, p.blocks_count);
    p.g.channels = kernels::mixture_channels::in(p.g.mix, channels, reinterpret_cast<float*>(rs.ws + l.channels));
    kernels::for_each_index(
        rs.where, channels * p.g.mix.components,
        kernels::channel_table_functor<kernels::dcps_channels>{p.g.channels, {p.steps, p.blocks, p.steps_count}},
        exec.stream);
    kernels::for_each_index_scratch<128>(rs.where, BN,
                                         kernels::guided_dcps_functor{p, x, reinterpret_cast<float*>(rs.ws + l.work)},
                                         exec.stream);
    report.launches = 2 + copy_outputs(x, BN * d, out, rs.where, exec.stream, d, p.g.coordinate_stride);
    return report;
  }
  // Ask by ask with the mixture's denoiser and J v (the direct path; both packed on a SIMD target), through the
  // plan's stage functors.
  const dcps_stepwise s(rs.ws, l, BN, d, dy);
  const execution cpu{executor::cpu, exec.stream};
  kernels::dcps_ask first{};
  first.op = kernels::dcps_op_initial;
  kernels::for_each_index(rs.where, BN, dcps_stage(p, s, first, 0.f, 1.f, nullptr, nullptr, 0), exec.stream);
  const std::vector<kernels::dcps_ask> list = dcps_asks(l, rs.host.data(), o);
  const bool fused = fused_stepwise_available();
  if (fused) {
    // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp): each ask's
    // denoiser or J u by the batched calls' per-pack code, then the plan's packed tell (cpu::run_dcps_tell's) on the
    // pack, the pack's particles kept in packs from ask to ask. One tell functor for the run: each ask's op and
    // indices come from its entry of the list.
    std::vector<fused_ask> asks;
    asks.reserve(list.size());
    for (const kernels::dcps_ask& a : list)
      asks.push_back({channel{a.a, a.s}, a.at_q ? s.rows.q : x, a.vector ? s.rows.u : nullptr, s.answer});
    const kernels::dcps_stage_functor tell = dcps_stage(p, s, first, 0.f, 1.f, nullptr, nullptr, 0);  // op per ask
    report.launches += run_fused_stepwise(prior.storage(), BN, asks.data(), static_cast<std::int64_t>(asks.size()),
                                          nullptr, nullptr, nullptr, nullptr, nullptr, &tell, list.data());
  }
  for (std::size_t n = 0; !fused && n < list.size(); ++n) {
    const kernels::dcps_ask& a = list[n];
    const float* points = a.at_q ? s.rows.q : x;
    const channel ch{a.a, a.s};
    if (a.vector)
      denoiser_jvp_unchecked(prior.storage(), points, s.rows.u, BN, ch, s.answer, cpu);
    else
      evaluate_direct_unchecked(prior.storage(), quantity::denoiser, points, BN, ch, s.answer, cpu);
    kernels::for_each_index(rs.where, BN, dcps_stage(p, s, a, 0.f, 1.f, nullptr, nullptr, 0), exec.stream);
    report.launches += 2;
  }
  report.launches += 1 + copy_outputs(x, BN * d, out, rs.where, exec.stream);
  return report;
}

// --- ask/tell plan ------------------------------------------------------------------------------------------------

namespace {

// The asks of dcps_asks(); tell k is ask k's stage functor over the B N rows, as guided_sample() issues it on the
// CPU executor. reset() draws x = s_0 z (or copies the caller's initial state).
struct dcps_plan_storage final : workspace_plan_storage {
  std::vector<kernels::dcps_ask> list;  // steps: per ask (the answer r becomes the denoiser ux q + um r)
  kernels::dcps_params p{};
  kernels::dcps_rows buf{};
  float* answer = nullptr;
  plan_request request(std::int64_t k) const override {
    const std::size_t i = static_cast<std::size_t>(k);
    const kernels::dcps_ask& a = list[i];
    return ask(k, a.at_q ? buf.q : buf.x, steps.channels[i], steps.times[i],
               a.vector ? model_output::denoiser : output, answer, a.vector ? buf.u : nullptr);
  }
  kernels::dcps_stage_functor stage(const kernels::dcps_ask& a, float fx, float fm, std::int64_t next) const {
    return kernels::dcps_stage_functor{p,      buf,  answer, a.op, a.block, a.t, a.step, a.g, fx, fm,
                                       &state->chain_base, &state->step, next};
  }
  void tell(std::int64_t k, cudaStream_t stream) override {
    const std::size_t i = static_cast<std::size_t>(k);
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)  // on packs, as guided_sample()'s fused run
      cpu::run_dcps_tell(target, stage(list[i], steps.ux[i], steps.um[i], k + 1));
    else
      kernels::for_each_index(where, rows, stage(list[i], steps.ux[i], steps.um[i], k + 1), stream);
  }
  void reset(const float* initial, cudaStream_t stream) override {
    if (start(initial, stream)) return;
    kernels::dcps_ask first{};
    first.op = kernels::dcps_op_initial;
    kernels::for_each_index(where, rows, stage(first, 0.f, 1.f, 0), stream);
  }
};

}  // namespace

std::unique_ptr<sampling_plan_storage> make_dcps_plan(std::int64_t d, const guided_problems& pr,
                                                      const guided_options& o, model_output output, executor where,
                                                      cudaStream_t stream) {
  auto st = std::make_unique<dcps_plan_storage>();
  std::vector<unsigned char> tables;
  const dcps_layout l = make_dcps_layout(d, pr, o, &tables, nullptr);
  const std::int64_t BN = pr.problems * o.particles, dy = pr.d_y;
  st->list = dcps_asks(l, tables.data(), o);
  st->set_up(where, BN, d, static_cast<std::int64_t>(st->list.size()), output);
  for (const kernels::dcps_ask& a : st->list)
    st->steps.push(output, channel{a.a, a.s}, l.tables.points[static_cast<std::size_t>(a.point)].t, a.vector);
  // One allocation: guided_sample()'s workspace (tables, x, work), then the state.
  unsigned char* base = st->allocate(tables, l.blob.at, stream);
  st->p = bind_dcps(l, kernels::mixture_view<float>{}, d, pr, o, base);
  const dcps_stepwise s(base, l, BN, d, dy);
  st->buf = s.rows;
  st->x = s.rows.x;
  st->answer = s.answer;
  return st;
}

}  // namespace diffsample::detail
