// Guided posterior samplers: the schedule, the observations and the potentials folded into per-step tables on the
// host (FP64, the formulas in the README), copied once; then per SMC transition a fixed sequence of launches
// (weighting, resample(), bookkeeping, gather_particles(), mutation) over B problems x N particles, or one fused
// launch for the DPS and Pi-GDM baselines, DiffPIR and SKRock (src/guided_diffpir.cu, src/guided_skrock.cu).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/backward.cuh"
#include "kernels/guided.cuh"
#include "kernels/guided_diffpir.cuh"
#include "kernels/guided_smc.cuh"
#include "kernels/linalg.cuh"
#include "kernels/mixture_points.cuh"
#include "kernels/plan.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/guided_jvp.hpp"
#include "src/cpu/guided_tells.hpp"
#include "src/cuda_check.hpp"
#include "src/fused_stepwise.hpp"
#include "src/guided_reduction.hpp"
#include "src/guided_samplers.hpp"
#include "src/operator_gemm.hpp"
#include "src/guided_resolved.hpp"
#include "src/chain_checks.hpp"
#include "src/guided_shard.hpp"
#include "src/guided_tables.hpp"
#include "src/launch.hpp"
#include "src/limits.hpp"
#include "src/mixture_storage.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/option_readers.hpp"
#include "src/particles_detail.hpp"
#include "src/plan_program.hpp"
#include "src/plan_storage.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>

namespace diffsample {

namespace {
constexpr guided_sampler known_guided_samplers[] = {guided_sampler::smc,     guided_sampler::dps,
                                                    guided_sampler::pigdm,   guided_sampler::diffpir,
                                                    guided_sampler::skrock,  guided_sampler::tmpd,
                                                    guided_sampler::ddrm,    guided_sampler::dcps};
}  // namespace

namespace {

using kernels::guided_step;
using kernels::index_permutation;
using kernels::permuted_gather_functor;

/// The mixture's constants at step st's channel, written to the one-channel table t on the calling thread (K
/// components x d values).
kernels::channel_view fill_step_channel(const kernels::mixture_channels& t, const guided_step& st) {
  const kernels::channel_table_functor<kernels::langevin_channel> fill{t, {st.a, st.s}};
  for (int c = 0; c < t.mix.components; ++c) fill(c);
  return t.at(0, st.a, st.s);
}

/// The SMC weighting of transition k on the CPU executor's scalar target: the denoiser of the mixture's constants at
/// the step's channel (kernels::channel_denoiser: what gaussian_mixture::evaluate() gives on this target) into the
/// particle's row of mu, then the weighting of the ask/tell plan from that answer (guided_weight_answer_functor),
/// so that the fused run and the plan answered by evaluate() share every operation. Rows are row-major (CPU).
struct channel_weight_functor {
  kernels::guided_weight_answer_functor weight;  // answer = mu
  kernels::channel_view c;
  channel_weight_functor(const kernels::guided_params& p, std::int64_t k, const float* x, float* mu, float* lw,
                         float* r, const kernels::channel_view& channel)
      : weight{p, k, 0.f, 1.f, x, mu, mu, lw, r, nullptr, 0}, c(channel) {}
  void operator()(std::int64_t i) const {
    const int d = weight.p.d;
    const kernels::strided_vec<const float> xi{weight.x + i * d, 1, d};
    kernels::strided_vec<float> mi{weight.mu + i * d, 1, d};
    kernels::channel_denoiser<float>(c, xi, mi);
    weight(i);
  }
};

/// The moment-projected weighting of transition k on the CPU executor, step by step as the SMC's ask/tell plan
/// runs it (kernels::moment_stage_functor) around the mixture's denoiser and its d_y Jacobian-vector products with
/// the rows of A (evaluate and denoiser_jvp on the direct path, the caller's model's answers to the plan), over
/// `count` row-major particles; work: 3 count d floats (m, v, J v), M: count d_y^2 floats.
void moment_weigh_cpu(const detail::mixture_storage& mix, const kernels::guided_params& p, std::int64_t count,
                      std::int64_t k, const float* sigma2, const float* x, float* mu, float* lw, float* lz, float* r,
                      float* work, float* M) {
  const std::int64_t d = p.d;
  float *m = work, *v = work + count * d, *u = work + 2 * count * d;
  const channel ch{p.steps[k].a, p.steps[k].s};
  const execution on{executor::cpu, nullptr};
  kernels::moment_stage_functor f{p, k, 0, 0, 0.f, 1.f, sigma2, x, m, v, m, M, mu, lw, lz, r, nullptr, 0};
  if (detail::fused_stepwise_available()) {
    // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp), each pack kept
    // in packs from the denoiser to the last product: the answers by evaluate()'s and denoiser_jvp()'s per-pack
    // code, the tells the pack code of the plan's packed ones (cpu::run_moment_tell).
    detail::fused_ask asks[1 + kernels::moment_potential_max_dy];
    asks[0] = {ch, x, nullptr, m};
    for (int o = 0; o < p.d_y; ++o) asks[1 + o] = {ch, x, v, u};
    detail::run_fused_stepwise(mix, count, asks, 1 + p.d_y, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                               nullptr, nullptr, &f);
    return;
  }
  detail::evaluate_direct_unchecked(mix, quantity::denoiser, x, count, ch, m, on);
  cpu::parallel_for_each(count, f);
  f.stage = 1;
  f.answer = u;
  for (int o = 0; o < p.d_y; ++o) {
    detail::denoiser_jvp_unchecked(mix, x, v, count, ch, u, on);
    f.row = o;
    cpu::parallel_for_each(count, f);
  }
}

/// The twisted weighting of transition k on the CPU executor (kernels::twisted_stage_functor) around the mixture's
/// denoiser and its d_y Jacobian-vector products with the rows of A, as moment_weigh_cpu, with every row's J a_o
/// kept for the gradient, over `count` row-major particles; work: (2 + d_y) count d floats (m, v, then the d_y
/// answers J a_o), M: count d_y^2 floats. On a SIMD target the asks and tells run fused per pack of particles
/// (src/fused_stepwise.hpp), each pack kept in packs from the denoiser to the last product, the tells the pack code
/// of the plan's packed ones (cpu::run_twisted_tell). linear_mutation: kernels::twisted_finish's (the moment
/// potentials' last transition).
void twisted_weigh_cpu(const detail::mixture_storage& mix, const kernels::guided_params& p, std::int64_t count,
                       std::int64_t k, const float* sigma2, const float* x, float* mu, float* shift, float* lw,
                       float* lz, float* r, float* work, float* M, bool linear_mutation = false) {
  const std::int64_t d = p.d;
  float *m = work, *v = work + count * d, *u = work + 2 * count * d;
  const channel ch{p.steps[k].a, p.steps[k].s};
  const execution on{executor::cpu, nullptr};
  kernels::twisted_stage_functor f{p,  k,  0,  0,     0.f, 1.f, count, sigma2, x, m, v, m, u, M, mu, shift, lw,
                                   lz, r, linear_mutation};
  const auto stage = [&](std::int64_t a) {
    kernels::twisted_stage_functor g = f;
    if (a > 0) {
      g.stage = 1;
      g.row = static_cast<int>(a - 1);
    }
    return g;
  };
  if (detail::fused_stepwise_available()) {
    detail::fused_ask asks[1 + kernels::moment_potential_max_dy];
    asks[0] = {ch, x, nullptr, m};
    for (int o = 0; o < p.d_y; ++o) asks[1 + o] = {ch, x, v, u + o * count * d};
    detail::run_fused_stepwise(mix, count, asks, 1 + p.d_y, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                               nullptr, nullptr, nullptr, &f);
    return;
  }
  detail::evaluate_direct_unchecked(mix, quantity::denoiser, x, count, ch, m, on);
  cpu::parallel_for_each(count, f);
  for (int o = 0; o < p.d_y; ++o) {
    detail::denoiser_jvp_unchecked(mix, x, v, count, ch, u + o * count * d, on);
    cpu::parallel_for_each(count, stage(1 + o));
  }
}

/// The SMC's start correction on the CPU executor, after guided_init_functor without it: the stages of the ask/tell
/// plan (kernels::guided_start_stage_functor) around the mixture's denoiser at the first grid point, evaluated by
/// evaluate() at u_n x for each quadrature node, over `count` row-major particles; points: count d floats, ratio:
/// count d floats (the denoiser, then the log-ratio in coordinate 0 of each row), r: the residual scratch.
void start_correction_cpu(const detail::mixture_storage& mix, const kernels::guided_params& p, std::int64_t count,
                          const float* x, float* lw, float* r, float* ratio, float* points) {
  if (count == 0) return;
  const channel ch{p.steps[0].a, p.steps[0].s};
  kernels::guided_start_stage_functor f{p, -1, 0.f, 1.f, x, ratio, points, ratio, r, lw};
  cpu::parallel_for_each(count, f);
  for (int n = 0; n < kernels::start_correction_nodes; ++n) {
    detail::evaluate_direct_unchecked(mix, quantity::denoiser, points, count, ch, ratio, {executor::cpu, nullptr});
    f.node = n;
    cpu::parallel_for_each(count, f);
  }
}

constexpr std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

// Inverse and log-determinant of a symmetric positive-definite n x n matrix (FP64 Cholesky, then the inverse's
// columns by forward and back substitution). Each pivot is tested against its own diagonal entry
// (kernels::cholesky_failure_scaled): the matrices are c A A^T + tau I (c, tau >= 0), whose diagonal entries are sums
// of squares, so rows of A on very different scales are not taken for a singular matrix.
double invert_spd(std::vector<double>& m, int n, const char* what) {
  std::vector<double> L = m;
  const std::int64_t row = kernels::cholesky_failure_scaled(L.data(), n);
  DIFFSAMPLE_EXPECTS(row < 0, what << ": matrix not numerically positive definite (pivot at row " << row << ")");
  double logdet = 0;
  for (int i = 0; i < n; ++i) logdet += 2 * std::log(L[i * n + i]);
  std::fill(m.begin(), m.end(), 0.0);
  for (int i = 0; i < n; ++i) m[i * n + i] = 1.0;
  kernels::forward_substitute(L.data(), n, m.data(), n);
  kernels::back_substitute_transposed(L.data(), n, m.data(), n);
  return logdet;
}

// How the problems' operators reach the kernels: `count` operators (1 shared or B), as masks or dense rows.
struct operator_shape {
  bool mask = false;
  std::int64_t count = 1;
};

operator_shape shape_of(const guided_problems& pr, std::int64_t d) {
  operator_shape sh;
  if (pr.operators.empty()) {
    sh.count = pr.A.size() == static_cast<std::size_t>(pr.d_y * d) ? 1 : pr.problems;
    return sh;
  }
  sh.count = static_cast<std::int64_t>(pr.operators.size());
  sh.mask = std::all_of(pr.operators.begin(), pr.operators.end(),
                        [](const observation_operator& op) { return op.kind() == observation_kind::mask; });
  return sh;
}

// SVD operators of a common rank r < d_y observe nothing outside the span of U. In the basis (U, U_perp) the
// observation splits into U^T y = diag(S) V^T x + sigma_y U^T z and U_perp^T y = sigma_y U_perp^T z, which does not
// depend on x, so every sampler runs on the r-dimensional problem (U^T y, diag(S) V^T): the same posterior, the
// same DPS and Pi-GDM guidance (A'^T (y' - A' m) = A^T (y - A m), and A m stays in the span of U). SMC's
// log-normaliser gains log N(U_perp^T y; 0, sigma_y^2 I) = -(d_y - r)/2 log(2 pi sigma_y^2)
// - |y - U U^T y|^2 / (2 sigma_y^2). The default potential spread keeps dividing trace(A A^T) by the original d_y.
struct svd_reduction {
  bool active = false;
  guided_problems problems;          // the r-dimensional problems
  std::vector<double> log_constant;  // B: the log-normaliser's part outside the span of U
  std::vector<double> outside;       // B: |y - U U^T y|^2 (the normalised DPS step's residual norm includes it)
  std::int64_t spread_rows = 0;      // the original d_y
};

// A scaled Cholesky pivot of A A^T below this share of its own diagonal entry (rows within about 0.01 rad of linear
// dependence, or dependent: repeated rows, d_y > d_x, a rank-deficient A) reduces the run's observation to
// orthogonal rows (reduce_rank): the d_y x d_y tables (c A A^T + tau I)^-1, stored in FP32, would then carry a
// condition number above 1e4, and 1 / tau in the directions A^T maps to zero (singular to working precision when
// tau, e.g. DiffPIR's rho_k / 2 ~ sigma_y^2, is below 1e-13 of A A^T).
constexpr double gram_pivot_floor = 1e-4;

// Above the pivot floor, Pi-GDM's and DiffPIR's FP32 tables (c A A^T + tau I)^-1 still lose digits in proportion to
// the condition number of A A^T scaled to a unit diagonal (the correlation matrix R of A's rows; the row scales
// cancel in (.)^-1 (y - A m)), which their tables reach as tau / c goes to 0 (Pi-GDM's late steps at a small
// sigma_y, DiffPIR's steps where rho_k is small): the FP32 rounding of the entries moves the table's products by
// about cond_2(R) 2^-24 relative. Where that exceeds 2^-16 (cond_2(R) > 256) they run on the orthogonal rows of
// reduce_rank too, whose tables are diagonal (measured on one step of 3 x 4 operators: up to 1e-6 of the step at
// cond_2(R) = 242, 5e-6 at 1.6e3, 6e-5 at 1.6e4 on the direct tables; 5e-8 to 2.6e-7 on the orthogonal rows). SMC's
// step tables var I + sig^2 A A^T keep var >= s^2 x (the potentials' spread, a share of trace(A A^T) / d_y) and stay
// well conditioned; only its final moves' W reaches cond(R), and no error of theirs was measurable (GuidedMoves'
// moments within 4.5 se of 4000 draws at cond_2(R) 4e2 and 4e3, sigma_y 1e-2 to 1e-5): SMC keeps the pivot test alone.
constexpr double gram_condition_limit = 256;

// Whether the n x n Gram matrix G = A A^T has a scaled Cholesky pivot at or below gram_pivot_floor, or (when
// condition_limit > 0) the condition number of G scaled to a unit diagonal above condition_limit.
bool gram_near_singular(std::vector<double> G, std::int64_t n, double condition_limit = 0) {
  std::vector<double> R;
  if (condition_limit > 0) {
    R = G;
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) R[i * n + j] = G[i * n + j] / std::sqrt(G[i * n + i] * G[j * n + j]);
  }
  for (std::int64_t j = 0; j < n; ++j) {
    const double own = G[j * n + j];
    double pivot = own;
    for (std::int64_t k = 0; k < j; ++k) pivot -= G[j * n + k] * G[j * n + k];
    if (!(pivot > gram_pivot_floor * own)) return true;
    const double l = std::sqrt(pivot);
    G[j * n + j] = l;
    for (std::int64_t i = j + 1; i < n; ++i) {
      double t = G[i * n + j];
      for (std::int64_t k = 0; k < j; ++k) t -= G[i * n + k] * G[j * n + k];
      G[i * n + j] = t / l;
    }
  }
  if (!(condition_limit > 0)) return false;
  // cond_2(R) = lambda_max(R) lambda_max(R^-1) (power iterations), R^-1 from R's Cholesky factor (which exists: its
  // pivots are G's scaled ones).
  std::vector<double> L = R, inverse(static_cast<std::size_t>(n * n), 0.0);
  if (kernels::cholesky_failure_scaled(L.data(), n) >= 0) return true;
  for (std::int64_t i = 0; i < n; ++i) inverse[i * n + i] = 1.0;
  kernels::forward_substitute(L.data(), n, inverse.data(), n);
  kernels::back_substitute_transposed(L.data(), n, inverse.data(), n);
  const double condition = detail::largest_eigenvalue(R.data(), n) * detail::largest_eigenvalue(inverse.data(), n);
  return !(condition <= condition_limit);
}

// The set-up of a reduction of `pr` to `rank` rows (reduce_rank, reduce_svd): active, the original d_y as the
// potentials' spread rows, the r-dimensional problems' count, d_y and sigma_y, and room for their y (B r values) and
// the B log-normaliser parts; the caller fills the rows of A and U^T y.
svd_reduction start_reduction(const guided_problems& pr, std::int64_t rank) {
  svd_reduction out;
  out.active = true;
  out.spread_rows = pr.d_y;
  guided_problems& r = out.problems;
  r.problems = pr.problems;
  r.d_y = rank;
  r.sigma_y = pr.sigma_y;
  r.y.resize(pr.problems * rank);
  out.log_constant.resize(pr.problems);
  out.outside.resize(pr.problems);
  return out;
}

// Problem b's part of the observation outside the kept rows: `outside` = |y - U U^T y|^2 (the d_y - rank rows that do
// not depend on x), and the log-normaliser's part -(d_y - r)/2 (log 2 pi + 2 log sigma_y) - outside / (2 sigma_y^2).
void finish_reduction(svd_reduction& out, const guided_problems& pr, std::int64_t b, std::int64_t rank,
                      double outside) {
  const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
  out.outside[b] = outside;
  out.log_constant[b] = detail::outside_log_density(pr.d_y - rank, sy, outside);
}

// The SVDs A_c = U_c diag(S_c) V_c^T (detail::row_svd) of the `count` operators of a reduce_rank run (1 shared or
// B), their numerical ranks and r = max_c rank_c (at least 1: an all-zero A keeps one zero row).
struct operator_svds {
  std::vector<std::vector<double>> U, S, V;
  std::vector<std::int64_t> ranks;
  std::int64_t rank = 1;
};

// The factorisations of reduce_rank's operator sets (src/guided_reduction.hpp).
detail::factorisation_memo<operator_svds>& the_factorisation_memo() {
  static detail::factorisation_memo<operator_svds> memo;
  return memo;
}

std::atomic<std::int64_t> factorisations_made{0};

// The factorisations of reduce_rank's operators (pr's dense rows, or each operator's matrix()), from the memo when
// the same operators were factored last (the same bits: row_svd is a function of them), else computed and kept.
std::shared_ptr<const operator_svds> factor_operators(const guided_problems& pr, std::int64_t d) {
  const std::int64_t dy = pr.d_y;
  const bool dense = pr.operators.empty();
  const std::int64_t count = dense ? (pr.A.size() == static_cast<std::size_t>(dy * d) ? 1 : pr.problems)
                                   : static_cast<std::int64_t>(pr.operators.size());
  const std::size_t size = static_cast<std::size_t>(dy * d);
  std::vector<double> key = detail::operator_matrices(pr, d);
  detail::factorisation_memo<operator_svds>& memo = the_factorisation_memo();
  if (std::shared_ptr<const operator_svds> kept = memo.find(dy, d, key)) return kept;
  auto f = std::make_shared<operator_svds>();
  f->U.resize(count);
  f->S.resize(count);
  f->V.resize(count);
  f->ranks.resize(count);
  for (std::int64_t c = 0; c < count; ++c) {
    f->ranks[c] = detail::row_svd(key.data() + c * size, dy, d, f->U[c], f->S[c], f->V[c]);
    f->rank = std::max(f->rank, f->ranks[c]);
  }
  factorisations_made.fetch_add(1, std::memory_order_relaxed);
  std::size_t values = 0;
  for (std::int64_t c = 0; c < count; ++c) values += f->U[c].size() + f->S[c].size() + f->V[c].size();
  memo.keep(dy, d, std::move(key), f, values);
  return f;
}

// Any operator's A = U diag(S) V^T (detail::row_svd, FP64) of numerical rank r_b observes nothing along U's last
// d_y - r_b columns. In the basis U the observation is U^T y = diag(S) V^T x + sigma_y U^T z, the same posterior,
// DiffPIR proximal step (A'^T A' = A^T A, A'^T y' = A^T y) and DPS / Pi-GDM guidance (A'^T (c A' A'^T + tau I)^-1
// (y' - A' m) = A^T (c A A^T + tau I)^-1 (y - A m)). The run keeps r = max_b r_b rows: row i of problem b is
// (S_i V_i^T, U_i^T y_b), a zero row of A' past r_b; the rows past r (which do not depend on x) leave the tables and
// join the log-normaliser as in reduce_svd, -(d_y - r)/2 log(2 pi sigma_y^2) - |U_{>r}^T y|^2 / (2 sigma_y^2). A' A'^T
// is diagonal: the tables' inverses are exact in every direction, and the 1 / tau of the directions A^T maps to
// zero never enters them.
svd_reduction reduce_rank(const guided_problems& pr, std::int64_t d) {
  const std::int64_t dy = pr.d_y, B = pr.problems;
  const std::shared_ptr<const operator_svds> f = factor_operators(pr, d);
  const std::int64_t count = static_cast<std::int64_t>(f->ranks.size()), rank = f->rank;
  const std::vector<std::vector<double>>& U = f->U;
  const std::vector<std::vector<double>>& S = f->S;
  const std::vector<std::vector<double>>& V = f->V;
  const std::vector<std::int64_t>& ranks = f->ranks;
  svd_reduction out = start_reduction(pr, rank);
  guided_problems& r = out.problems;
  r.A.assign(static_cast<std::size_t>(count * rank * d), 0.0);
  for (std::int64_t c = 0; c < count; ++c) detail::row_space_operator(S[c], V[c], dy, d, ranks[c], &r.A[c * rank * d]);
  for (std::int64_t b = 0; b < B; ++b) {
    const double outside =  // |U_{>r}^T y|^2
        detail::row_space_observation(U[count == 1 ? 0 : b], dy, rank, pr.y.data() + b * dy, &r.y[b * rank]);
    finish_reduction(out, pr, b, rank, outside);
  }
  return out;
}

// Whether some operator of `pr` other than a mask has A A^T near singular (gram_near_singular, with
// condition_limit), computed: rank_reduction_needed() below answers it, from its memo where it can.
bool reduction_check(const guided_problems& pr, std::int64_t d, bool svd_projected, double condition_limit) {
  const std::int64_t dy = pr.d_y;
  std::vector<double> G(static_cast<std::size_t>(dy * dy));
  if (pr.operators.empty()) {
    const std::int64_t count = pr.A.size() == static_cast<std::size_t>(dy * d) ? 1 : pr.problems;
    for (std::int64_t c = 0; c < count; ++c) {
      kernels::gram(pr.A.data() + c * dy * d, dy, d, G.data());
      if (gram_near_singular(G, dy, condition_limit)) return true;
    }
    return false;
  }
  const bool projected =
      svd_projected && std::all_of(pr.operators.begin(), pr.operators.end(), [&](const observation_operator& op) {
        return op.kind() == observation_kind::svd && op.diagonal().size() == pr.operators[0].diagonal().size() &&
               static_cast<std::int64_t>(op.diagonal().size()) < dy;
      });
  if (projected) return false;
  for (const observation_operator& op : pr.operators)
    if (op.kind() != observation_kind::mask && gram_near_singular(op.gram(), dy, condition_limit)) return true;
  return false;
}

// The answers of reduction_check() for the last operator sets (src/guided_reduction.hpp), and the checks computed.
detail::factorisation_memo<bool>& the_check_memo() {
  static detail::factorisation_memo<bool> memo;
  return memo;
}

std::atomic<std::int64_t> reduction_checks_made{0};

// Everything reduction_check() reads besides d_y and d_x, as FP64 values (a factorisation_memo's key), or an empty
// vector where nothing needs a check (no operator other than a mask, or a projected SVD set: those answers cost
// nothing) or the key would exceed reduction_memo_bytes. Dense rows: their values; operators: per operator its kind
// and what its gram() reads (a dense operator's matrix; an SVD operator's rank, S and U; a mask nothing), then the
// count of operators and which of the two forms, svd_projected and condition_limit (which fix how the values
// before them are laid out, so that no two sets share a key).
std::vector<double> reduction_check_key(const guided_problems& pr, std::int64_t d, bool svd_projected,
                                        double condition_limit) {
  const std::size_t size = static_cast<std::size_t>(pr.d_y * d), limit = detail::reduction_memo_bytes / sizeof(double);
  std::vector<double> key;
  std::size_t count = 0;
  if (pr.operators.empty()) {
    count = pr.A.size() == size ? 1 : static_cast<std::size_t>(pr.problems);
    if (count * size > limit) return {};
    key.assign(pr.A.begin(), pr.A.begin() + static_cast<std::ptrdiff_t>(count * size));
  } else {
    count = pr.operators.size();
    const bool checked = std::any_of(pr.operators.begin(), pr.operators.end(), [](const observation_operator& op) {
      return op.kind() != observation_kind::mask;
    });
    if (!checked) return {};
    std::size_t values = 0;
    for (const observation_operator& op : pr.operators)
      values += 2 + (op.kind() == observation_kind::dense ? op.dense_matrix().size()
                     : op.kind() == observation_kind::svd ? op.diagonal().size() + op.U().size()
                                                           : 0);
    if (values > limit) return {};
    key.reserve(values + 4);
    for (const observation_operator& op : pr.operators) {
      key.push_back(static_cast<double>(static_cast<int>(op.kind())));
      if (op.kind() == observation_kind::dense) {
        key.push_back(static_cast<double>(op.dense_matrix().size()));
        key.insert(key.end(), op.dense_matrix().begin(), op.dense_matrix().end());
      } else if (op.kind() == observation_kind::svd) {
        key.push_back(static_cast<double>(op.diagonal().size()));
        key.insert(key.end(), op.diagonal().begin(), op.diagonal().end());
        key.insert(key.end(), op.U().begin(), op.U().end());
      } else {
        key.push_back(0.0);
      }
    }
  }
  key.push_back(static_cast<double>(count));
  key.push_back(pr.operators.empty() ? 0.0 : 1.0);
  key.push_back(svd_projected ? 1.0 : 0.0);
  key.push_back(condition_limit);
  return key;
}

// Whether some operator of `pr` other than a mask has A A^T near singular (gram_near_singular, with
// condition_limit). With `svd_projected`, a set of SVD operators of one rank r < d_y is left to reduce_svd's own
// projection. The check (A A^T of every operator, its Cholesky factor and, with condition_limit, a condition
// estimate: O(d_y^2 d_x + d_y^3) per operator) reads the operators alone, so its answer for the last
// reduction_memo_entries operator sets is kept as the factorisations are (src/guided_reduction.hpp): a
// guided_workspace_bytes() and the guided_sample() that follows it, or runs with another y, check once.
bool rank_reduction_needed(const guided_problems& pr, std::int64_t d, bool svd_projected, double condition_limit = 0) {
  std::vector<double> key = reduction_check_key(pr, d, svd_projected, condition_limit);
  detail::factorisation_memo<bool>& memo = the_check_memo();
  if (!key.empty())
    if (std::shared_ptr<const bool> kept = memo.find(pr.d_y, d, key)) return *kept;
  const bool needed = reduction_check(pr, d, svd_projected, condition_limit);
  reduction_checks_made.fetch_add(1, std::memory_order_relaxed);
  if (!key.empty()) memo.keep(pr.d_y, d, std::move(key), std::make_shared<const bool>(needed), 1);
  return needed;
}

// The problems of TMPD and DCPS (src/guided_tables.hpp's samplers; DDRM factors its operators itself):
// reduce_rank when rank_reduction_needed, for TMPD always and for DCPS with dcps_bridge_variance (its tables are
// then (v A A^T + sigma_y^2 I)^-1; else I / sigma_y^2). TMPD's per-particle A Cov(x0 | x) A^T + sigma_y^2 I and
// DCPS's v A A^T + sigma_y^2 I have eigenvalues sigma_y^2 along the directions A^T maps to zero: at a small
// sigma_y TMPD's Cholesky failed in every particle (each set to NaN) and DCPS refused the table; on A' of
// orthogonal rows both are positive definite, and both read them only through A^T (.)^-1 (y - A m), which the
// rotation keeps. Neither has a log-normaliser: the rows past the rank are dropped.
svd_reduction reduce_for_table_sampler(const guided_problems& pr, std::int64_t d, const guided_options& o) {
  const bool inverts = o.sampler == guided_sampler::tmpd || (o.sampler == guided_sampler::dcps && o.dcps_bridge_variance);
  return inverts && rank_reduction_needed(pr, d, false) ? reduce_rank(pr, d) : svd_reduction{};
}

// The reduction a run takes: SVD operators of a common rank r < d_y (every sampler); else, for the samplers whose
// tables invert c A A^T + tau I (smc, pigdm, diffpir), reduce_rank when rank_reduction_needed (for pigdm and
// diffpir with gram_condition_limit); else none.
svd_reduction reduce_svd(const guided_problems& pr, std::int64_t d, guided_sampler sampler) {
  const std::int64_t dy = pr.d_y;
  if ((sampler == guided_sampler::smc || sampler == guided_sampler::pigdm || sampler == guided_sampler::diffpir) &&
      rank_reduction_needed(pr, d, true,
                            sampler == guided_sampler::smc ? 0.0 : gram_condition_limit))
    return reduce_rank(pr, d);
  if (pr.operators.empty()) return {};
  const std::int64_t rank = static_cast<std::int64_t>(pr.operators[0].diagonal().size());
  for (const observation_operator& op : pr.operators)
    if (op.kind() != observation_kind::svd || static_cast<std::int64_t>(op.diagonal().size()) != rank) return {};
  if (rank >= dy) return {};
  svd_reduction out = start_reduction(pr, rank);
  guided_problems& r = out.problems;
  for (const observation_operator& op : pr.operators) {
    const std::vector<double>& S = op.diagonal();
    const std::vector<double>& V = op.V();
    for (std::int64_t i = 0; i < rank; ++i)
      for (std::int64_t j = 0; j < d; ++j) r.A.push_back(S[i] * V[j * rank + i]);
  }
  for (std::int64_t b = 0; b < pr.problems; ++b) {
    const std::vector<double>& U = pr.operators[pr.operators.size() == 1 ? 0 : b].U();
    const double* y = pr.y.data() + b * dy;
    double* yr = r.y.data() + b * rank;
    for (std::int64_t i = 0; i < rank; ++i) {
      double s = 0;
      for (std::int64_t o = 0; o < dy; ++o) s += U[o * rank + i] * y[o];
      yr[i] = s;
    }
    double outside = 0;  // |y - U U^T y|^2
    for (std::int64_t o = 0; o < dy; ++o) {
      double s = y[o];
      for (std::int64_t i = 0; i < rank; ++i) s -= U[o * rank + i] * yr[i];
      outside += s * s;
    }
    finish_reduction(out, pr, b, rank, outside);
  }
  return out;
}

struct layout {
  std::size_t steps, inv_var, noise_std, precision, A, mask, y, constants, extra, sigma2, move_precision, multistep,
      final_noise, final_var, table_end;  // from the host
  // linear_final_scale() of the run (0: no final_noise and final_var tables; the deterministic last step).
  double final_scale = 0;
  std::size_t channels;  // the mixture's constants per channel (guided_params::channels), filled on the executor
  std::int64_t channel_count;
  std::size_t x, mu, mu2, lw, r, ancestors, reports, log_z, previous_lse, counts, resampling, lz, work, moment, shift,
      moves, multistep_m, products, total;
  std::size_t resampling_bytes;
  // DPS / Pi-GDM with the guidance as products over all particles (baseline_products()): the products' buffer at
  // `products`, the layout's last, whose final cuda_only bytes (cuBLAS's workspace) only the CUDA executor uses.
  bool gemm = false;
  std::size_t cuda_only = 0;
  operator_shape operators;  // how A reaches the kernels
};

// Channels of the run's constant table (guided_params::channels): one per step for the grid samplers, one (the
// prior's (1, 0)) for SKRock.
// SMC with final moves: one more, the grid's last point (a_K, 0) (kernels::final_move_params::channel).
bool final_moves_run(const guided_options& o) { return o.sampler == guided_sampler::smc && o.final_moves > 0; }

// SMC with linear potentials on a grid whose last step goes to s = 0 (the deterministic step x = c0 m of
// kernels::final_transition): (a_K s_{K-1} / a_{K-1})^2, the flat-prior Cov(x_0 | x) = s^2 / a^2 of the last noisy
// point at the grid's last scale a_K, which the last transition's kernel variance v_f scales (build_tables(),
// kernels::linear_final_draw). 0 elsewhere (other potentials and samplers keep their own last step).
double linear_final_scale(const guided_options& o) {
  if (o.sampler != guided_sampler::smc || o.potentials != guided_potentials::linear || o.steps < 1) return 0;
  const std::vector<schedule_point> pts = o.schedule.points(o.steps);
  const schedule_point &p = pts[pts.size() - 2], &q = pts.back();
  if (q.s != 0.0 || !(p.s > 0) || !(p.a > 0)) return 0;
  const double r = q.a * p.s / p.a;
  return r * r;
}
std::int64_t channel_count(const guided_options& o) {
  return o.sampler == guided_sampler::skrock ? 1 : o.steps + (final_moves_run(o) ? 1 : 0);
}

// Whether guided_sample()'s DPS / Pi-GDM run takes its guidance as matrix products over all particles (either
// executor; src/operator_gemm.hpp) on the problems `pr` it runs: dense rows given as such (an SVD operator's reduced
// rows, `reduced`, keep the kernels' path) and the path rule of the executor `where` (executor::automatic, the
// workspace query's: true where either executor's rule is, so that the bytes it returns cover a run on either).
// The rule reads the run's particles per problem: a shard of a larger run (guided_sample_streams, the MPI ranks'
// share) decides as the whole run does, so that its rows are the whole run's bit for bit (a rank's 32 of 64 particles
// took the per-particle path where one process took the products: other rounding, 1.2 apart after DPS's steps).
bool baseline_products(std::int64_t dim, const guided_problems& pr, const guided_options& o, bool reduced,
                       executor where) {
  if (reduced || (o.sampler != guided_sampler::dps && o.sampler != guided_sampler::pigdm)) return false;
  const operator_shape sh = shape_of(pr, dim);
  const std::int64_t total = detail::current_particle_streams().total;
  return detail::baseline_operator_gemm(sh.mask, total > 0 ? total : o.particles, pr.d_y, dim, o.operator_path, where);
}

// `mix`: the prior, whose constants at the run's channels the layout holds; nullptr for an ask/tell plan or a run
// that keeps its constants on the host. `products`: baseline_products() of the run (guided_sample() only).
layout make_layout(std::int64_t dim, const guided_problems& pr, const guided_options& o,
                   const kernels::mixture_view<float>* mix, bool products = false) {
  const std::size_t B = pr.problems, N = o.particles, d = dim, dy = pr.d_y, K = o.steps;
  const operator_shape sh = shape_of(pr, dim);
  const std::size_t a_count = sh.count * dy * (sh.mask ? 1 : d);
  layout l{};
  l.operators = sh;
  std::size_t at = 0;
  auto put = [&](std::size_t bytes) {
    const std::size_t here = at;
    at += align_up(bytes);
    return here;
  };
  // SKRock iterates on the posterior itself: no diffusion grid, no per-step tables.
  const bool grid = o.sampler != guided_sampler::skrock;
  l.steps = put(grid ? K * sizeof(guided_step) : 0);
  l.inv_var = put(grid ? (K + 1) * B * sizeof(float) : 0);
  l.noise_std = put(grid ? (K + 1) * B * sizeof(float) : 0);
  l.precision = put(grid ? K * B * dy * (sh.mask ? 1 : dy) * sizeof(float) : 0);
  l.A = put(a_count * sizeof(float));
  l.mask = put(sh.mask ? sh.count * dy * sizeof(std::int32_t) : 0);
  l.y = put(B * dy * sizeof(float));
  l.constants = put(B * sizeof(double));
  // Per-sampler tables: dps, B residual-norm offsets; skrock, B steps, B 1 / sigma_y^2 and 3 s coefficients.
  l.extra = put(o.sampler == guided_sampler::dps      ? B * sizeof(float)
                : o.sampler == guided_sampler::skrock ? (2 * B + 3 * static_cast<std::size_t>(o.skrock_stages)) * sizeof(float)
                                                      : 0);
  l.sigma2 = put(B * sizeof(float));
  // The final moves' W_b = (lambda a_K^2 sigma_{y,b}^2 I + A_b A_b^T)^-1 (kernels::final_move_params).
  const bool moves = final_moves_run(o);
  l.move_precision = put(moves ? B * dy * (sh.mask ? 1 : dy) * sizeof(float) : 0);
  // The multistep kernel's coefficients w_k (guided_params::multistep), one per step.
  const bool multistep = o.sampler == guided_sampler::smc && o.multistep_kernel;
  l.multistep = put(multistep ? K * sizeof(float) : 0);
  // The linear potentials' last transition: per problem the factor D of its delta and its kernel variance v_f
  // (guided_params::final_noise, final_var).
  l.final_scale = linear_final_scale(o);
  l.final_noise = put(l.final_scale > 0 ? B * dy * (sh.mask ? 1 : dy) * sizeof(float) : 0);
  l.final_var = put(l.final_scale > 0 ? B * sizeof(float) : 0);
  l.table_end = at;
  l.channel_count = mix != nullptr ? channel_count(o) : 0;
  l.channels = put(mix != nullptr ? kernels::mixture_channels::table_floats(*mix, l.channel_count) * sizeof(float) : 0);
  const bool smc = o.sampler == guided_sampler::smc;
  const bool twisted = smc && o.potentials == guided_potentials::twisted;
  const bool moment = (smc && o.potentials == guided_potentials::moment) || twisted;
  l.x = put(B * N * d * sizeof(float));
  l.mu = put((smc ? 1 : 3) * B * N * d * sizeof(float));  // the baselines' m, J v, v
  l.mu2 = put(smc ? B * N * d * sizeof(float) : 0);
  l.lw = put(smc ? B * N * sizeof(float) : 0);
  l.r = put((smc ? 2 : 1) * B * N * dy * sizeof(float));
  l.ancestors = put(smc ? B * N * sizeof(std::int32_t) : 0);
  l.reports = put(smc ? B * sizeof(particle_report) : 0);
  l.log_z = put(smc ? B * sizeof(double) : 0);
  l.previous_lse = put(smc ? B * sizeof(double) : 0);
  l.counts = put(smc ? B * sizeof(std::int32_t) : 0);
  l.resampling_bytes = smc ? resampling_workspace_bytes(pr.problems, o.particles, o.resampling.scheme) : 0;
  l.resampling = put(l.resampling_bytes);
  l.lz = put(moment ? B * N * sizeof(float) : 0);
  // guided_moment_functor's scratch outside shared memory (3 d floats per particle), guided_twisted_functor's and the
  // CPU run's ((2 + d_y) d: m, v and the d_y JVPs; the moment potentials' last transition too, which keeps them).
  l.work = put(moment ? (twisted ? 2 + dy : std::max<std::int64_t>(3, 2 + dy)) * B * N * d * sizeof(float) : 0);
  // The moment matrices of the stepwise moment weighting (the CPU executor and the plan): d_y^2 floats per particle.
  l.moment = put(moment ? B * N * dy * dy * sizeof(float) : 0);
  // DPS and Pi-GDM on the CPU executor run step by step (baseline_stage_functor): B N shifts.
  const bool baseline = o.sampler == guided_sampler::dps || o.sampler == guided_sampler::pigdm;
  l.shift = put(baseline ? B * N * sizeof(float) : 0);
  // The final moves' proposal noise (d floats per particle, then the midpoint of Simpson's rule), the prior's score
  // at the midpoint (d) and their d_y products (4 d_y); the gradients and the proposal reuse x, mu and mu2.
  l.moves = put(moves ? B * N * (2 * d + 4 * dy) * sizeof(float) : 0);
  // The multistep kernel's denoiser outputs of two consecutive transitions (guided_params::multistep_m).
  l.multistep_m = put(multistep ? 2 * B * N * d * sizeof(float) : 0);
  // The products' buffer (u = P r, and on the CUDA executor cuBLAS's workspace) after 256 bytes of slack, in which
  // the CUDA run aligns it (cublasSetWorkspace needs 256-byte alignment; a caller's workspace has 16). Last, so that
  // the CPU executor's own allocation leaves out cuBLAS's part. The query takes no executor: a caller's workspace
  // holds the CUDA size on either.
  l.gemm = products;
  l.cuda_only = products ? detail::baseline_guidance_gemm_cuda_only_bytes() : 0;
  l.products = put(products ? 256 + detail::baseline_guidance_gemm_bytes(B * N, dy, executor::cuda) : 0);
  l.total = at;
  return l;
}

// The run's parameters over the tables of layout l copied into ws: mixture, steps, potentials, operators and y,
// with B problems of `particles` particles each (the stream offsets of a shard are the caller's; mix is empty for
// the ask/tell plan, whose prior is the caller's model).
kernels::guided_params bind_tables(const layout& l, unsigned char* ws, const kernels::mixture_view<float>& mix,
                                   std::int64_t B, std::int64_t particles, std::int64_t d, std::int64_t dy,
                                   std::uint64_t seed, float initial_scale) {
  kernels::guided_params p{};
  p.mix = mix;
  p.steps = reinterpret_cast<const guided_step*>(ws + l.steps);
  p.inv_var = reinterpret_cast<const float*>(ws + l.inv_var);
  p.noise_std = reinterpret_cast<const float*>(ws + l.noise_std);
  p.precision = reinterpret_cast<const float*>(ws + l.precision);
  const operator_shape& sh = l.operators;
  p.A = reinterpret_cast<const float*>(ws + l.A);
  p.mask = sh.mask ? reinterpret_cast<const std::int32_t*>(ws + l.mask) : nullptr;
  p.A_stride = sh.count == 1 ? 0 : dy * (sh.mask ? 1 : d);
  p.y = reinterpret_cast<const float*>(ws + l.y);
  p.problems = B;
  p.particles = particles;
  p.d = int(d);
  p.d_y = int(dy);
  p.seed = seed;
  p.initial_scale = initial_scale;
  if (l.final_scale > 0) {
    p.final_noise = reinterpret_cast<const float*>(ws + l.final_noise);
    p.final_var = reinterpret_cast<const float*>(ws + l.final_var);
  }
  return p;
}

// smc's own outputs given to another sampler, which writes particles and samples only (guided_sample() and
// detail::check_guided_outputs()).
void check_smc_only_outputs(guided_sampler sampler, const guided_outputs& out) {
  if (sampler == guided_sampler::smc) return;
  const char* smc_only = out.log_weights != nullptr      ? "outputs.log_weights"
                         : out.log_normaliser != nullptr ? "outputs.log_normaliser"
                         : out.ess_trace != nullptr      ? "outputs.ess_trace"
                         : out.resample_count != nullptr ? "outputs.resample_count"
                                                         : nullptr;
  DIFFSAMPLE_EXPECTS(smc_only == nullptr, smc_only << ": written by smc only; " << to_string(sampler)
                                                   << " writes outputs.particles and outputs.samples (its "
                                                      "particles, equally weighted)");
}

// The options the sampler does not read hold their defaults (README: "Options a method does not read"), so that a
// value set for another sampler cannot pass as if it had taken effect: each field's row in src/option_readers.hpp.
void check_unread_options(const guided_options& o) {
  using detail::unset;
  const guided_options d;
#define DIFFSAMPLE_GUIDED_CHECK_(F, R, W, V)                         \
  detail::check_unread_row("options." #F, o.F, d.F, V,              \
                           detail::guided_unread_by(detail::guided_readers::R, detail::read_when::W, o));
  DIFFSAMPLE_GUIDED_OPTION_READERS(DIFFSAMPLE_GUIDED_CHECK_)
#undef DIFFSAMPLE_GUIDED_CHECK_
}

// options.final_moves: -1 (automatic) or a count up to limits::max_inner_steps.
void check_final_moves_count(std::int64_t final_moves) {
  DIFFSAMPLE_EXPECTS(final_moves >= -1, "options.final_moves: must be -1 (automatic) or >= 0, got " << final_moves);
  limits::check("options.final_moves", final_moves, -1, limits::max_inner_steps);
}

void validate(std::int64_t d, const guided_problems& pr, const guided_options& o) {
  DIFFSAMPLE_EXPECTS(std::find(std::begin(known_guided_samplers), std::end(known_guided_samplers), o.sampler) !=
                         std::end(known_guided_samplers),
                     "options.sampler: invalid value " << static_cast<int>(o.sampler));
  check_unread_options(o);
  limits::check("problems.problems", pr.problems, 1, limits::max_guided_problems);
  limits::check("problems.d_y", pr.d_y, 1, limits::max_guided_d_y);
  limits::check("options.steps", o.steps, 1, limits::max_steps);
  limits::check("options.particles", o.particles, 1, limits::max_particles);
  detail::check_count("options.particles", pr.problems * o.particles, d * 3 + 2 * pr.d_y);
  const std::size_t one = static_cast<std::size_t>(pr.d_y * d);
  if (pr.operators.empty()) {
    DIFFSAMPLE_EXPECTS(pr.A.size() == one || pr.A.size() == one * pr.problems,
                       "problems.A: expected d_y x d_x = " << one << " or B x d_y x d_x = " << one * pr.problems
                                                           << " values, got " << pr.A.size());
  } else {
    DIFFSAMPLE_EXPECTS(pr.A.empty(), "problems.A: give either A or operators, not both (A has "
                                         << pr.A.size() << " values, operators " << pr.operators.size() << ")");
    DIFFSAMPLE_EXPECTS(pr.operators.size() == 1 || pr.operators.size() == static_cast<std::size_t>(pr.problems),
                       "problems.operators: expected 1 or B = " << pr.problems << " operators, got "
                                                                << pr.operators.size());
    for (std::size_t i = 0; i < pr.operators.size(); ++i) {
      const observation_operator& op = pr.operators[i];
      DIFFSAMPLE_EXPECTS(!op.empty(), "problems.operators[" << i << "]: empty operator");
      DIFFSAMPLE_EXPECTS(op.d_y() == pr.d_y && op.d_x() == d, "problems.operators[" << i << "]: " << op.d_y() << " x "
                                                                << op.d_x() << ", expected d_y x d_x = " << pr.d_y
                                                                << " x " << d);
      // The bound problems.A has, on the values that make up A.
      const std::string prefix = "problems.operators[" + std::to_string(i) + "]";
      detail::check_operator_values(prefix.c_str(), op, "the FP32 samplers square A x");
    }
  }
  DIFFSAMPLE_EXPECTS(pr.y.size() == static_cast<std::size_t>(pr.problems * pr.d_y),
                     "problems.y: expected B x d_y = " << pr.problems * pr.d_y << " values, got " << pr.y.size());
  DIFFSAMPLE_EXPECTS(pr.sigma_y.size() == 1 || pr.sigma_y.size() == static_cast<std::size_t>(pr.problems),
                     "problems.sigma_y: expected 1 or B = " << pr.problems << " values, got " << pr.sigma_y.size());
  if (pr.operators.empty()) detail::check_values("problems.A", pr.A, false);
  detail::check_values("problems.y", pr.y, false);
  detail::check_range("problems.y", pr.y, -max_abs_value, max_abs_value, "the FP32 samplers square residuals");
  if (pr.operators.empty())
    detail::check_range("problems.A", pr.A, -max_abs_value, max_abs_value, "the FP32 samplers square A x");
  detail::check_values("problems.sigma_y", pr.sigma_y, true);
  // A variance's bounds on sigma_y^2 (min_variance = 1e-36): sigma_y^2 and 1 / sigma_y^2 stay normal FP32 numbers.
  detail::check_range("problems.sigma_y", pr.sigma_y, std::sqrt(min_variance), max_abs_value,
                      "the FP32 samplers square sigma_y");
  DIFFSAMPLE_EXPECTS(std::isfinite(o.potential_spread) && o.potential_spread >= 0,
                     "options.potential_spread: must be finite and >= 0, got " << o.potential_spread);
  detail::check_at_most_max_abs("options.potential_spread", o.potential_spread);
  DIFFSAMPLE_EXPECTS(o.potentials == guided_potentials::linear || o.potentials == guided_potentials::moment ||
                         o.potentials == guided_potentials::twisted || o.potentials == guided_potentials::automatic,
                     "options.potentials: invalid value " << static_cast<int>(o.potentials));
  check_final_moves_count(o.final_moves);
  DIFFSAMPLE_EXPECTS(o.final_moves <= 0 || o.final_resample,
                     "options.final_moves: moves the final resampling's samples, but options.final_resample is false");
  DIFFSAMPLE_EXPECTS(std::isfinite(o.final_move_step) && o.final_move_step >= 0,
                     "options.final_move_step: must be finite and >= 0 (0: 2 d_x^(-1/3)), got " << o.final_move_step);
  detail::check_at_most_max_abs("options.final_move_step", o.final_move_step);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.final_move_curvature) && o.final_move_curvature >= 0 &&
                         o.final_move_curvature <= 1e30,
                     "options.final_move_curvature: must be finite, >= 0 (0: from the prior) and <= 1e30, got "
                         << o.final_move_curvature);
  DIFFSAMPLE_EXPECTS(!o.start_correction || o.potentials != guided_potentials::moment,
                     "options.start_correction: needs linear or twisted potentials, got " << to_string(o.potentials));
  // automatic takes linear potentials past d_y = 8 (detail::resolve_options).
  DIFFSAMPLE_EXPECTS(o.potentials == guided_potentials::linear || o.potentials == guided_potentials::automatic ||
                         pr.d_y <= kernels::moment_potential_max_dy,
                     "options.potentials: " << to_string(o.potentials) << " potentials need d_y <= "
                                            << kernels::moment_potential_max_dy << ", got d_y = " << pr.d_y);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.eta) && o.eta >= 0 && o.eta <= 1,
                     "options.eta: must be in [0, 1], got " << o.eta);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.guidance_scale) && o.guidance_scale >= 0,
                     "options.guidance_scale: must be finite and >= 0, got " << o.guidance_scale);
  detail::check_at_most_max_abs("options.guidance_scale", o.guidance_scale);
  detail::check_mixture_path("options.operator_path", o.operator_path);
  DIFFSAMPLE_EXPECTS(o.dps_step == dps_step_form::likelihood || o.dps_step == dps_step_form::normalised,
                     "options.dps_step: invalid value " << static_cast<int>(o.dps_step));
  DIFFSAMPLE_EXPECTS(std::isfinite(o.diffpir_zeta) && o.diffpir_zeta >= 0 && o.diffpir_zeta <= 1,
                     "options.diffpir_zeta: must be in [0, 1], got " << o.diffpir_zeta);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.diffpir_lambda) && o.diffpir_lambda > 0 && o.diffpir_lambda <= 1e12,
                     "options.diffpir_lambda: must be finite, > 0 and <= 1e12, got " << o.diffpir_lambda);
  limits::check("options.skrock_stages", o.skrock_stages, 2, limits::max_skrock_stages);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.skrock_eta) && o.skrock_eta > 0 && o.skrock_eta <= 1,
                     "options.skrock_eta: must be in (0, 1], got " << o.skrock_eta);
  if (limits::within(o.skrock_stages, 2, limits::max_skrock_stages) && o.skrock_eta > 0 && o.skrock_eta <= 1)
    DIFFSAMPLE_EXPECTS(detail::skrock_stability_bound(int(o.skrock_stages), o.skrock_eta) > 0,
                       "options.skrock_stages: " << o.skrock_stages << " stages with options.skrock_eta = "
                                                 << o.skrock_eta << " leave no stable step (l_s <= 0)");
  DIFFSAMPLE_EXPECTS(std::isfinite(o.skrock_step_fraction) && o.skrock_step_fraction > 0 &&
                         o.skrock_step_fraction <= 1,
                     "options.skrock_step_fraction: must be in (0, 1], got " << o.skrock_step_fraction);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.skrock_lipschitz) && o.skrock_lipschitz >= 0 && o.skrock_lipschitz <= 1e30,
                     "options.skrock_lipschitz: must be finite, >= 0 (0: from the prior) and <= 1e30, got "
                         << o.skrock_lipschitz);
  // Everything resample() would check per transition is checked here once (the run calls the unchecked layer).
  DIFFSAMPLE_EXPECTS(o.resampling.ess_threshold == -1.0 ||
                         (std::isfinite(o.resampling.ess_threshold) && o.resampling.ess_threshold >= 0),
                     "options.resampling.ess_threshold: must be finite and >= 0, or -1 (automatic), got "
                         << o.resampling.ess_threshold);
  DIFFSAMPLE_EXPECTS(o.resampling.scheme >= resampling_scheme::multinomial &&
                         o.resampling.scheme <= resampling_scheme::rejection,
                     "options.resampling.scheme: invalid value " << static_cast<int>(o.resampling.scheme));
  if (o.resampling.scheme == resampling_scheme::metropolis)
    limits::check("options.resampling.metropolis_steps", o.resampling.metropolis_steps, 1, limits::max_inner_steps);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.ddrm_eta) && o.ddrm_eta >= 0 && o.ddrm_eta <= 1,
                     "options.ddrm_eta: must be in [0, 1], got " << o.ddrm_eta);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.ddrm_eta_b) && o.ddrm_eta_b >= 0 && o.ddrm_eta_b <= 1,
                     "options.ddrm_eta_b: must be in [0, 1], got " << o.ddrm_eta_b);
  // dcps_blocks is bounded by the steps only when DCPS runs (its default, 4, may exceed another sampler's steps).
  DIFFSAMPLE_EXPECTS(o.dcps_blocks >= 1 && (o.sampler != guided_sampler::dcps || o.dcps_blocks <= o.steps),
                     "options.dcps_blocks: must be in [1, steps = " << o.steps << "], got " << o.dcps_blocks);
  limits::check("options.dcps_langevin_steps", o.dcps_langevin_steps, 0, limits::max_inner_steps);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.dcps_langevin_step) && o.dcps_langevin_step > 0,
                     "options.dcps_langevin_step: must be finite and > 0, got " << o.dcps_langevin_step);
  detail::check_at_most_max_abs("options.dcps_langevin_step", o.dcps_langevin_step);
  limits::check("options.dcps_gradient_steps", o.dcps_gradient_steps, 0, limits::max_dcps_gradient_steps);
  DIFFSAMPLE_EXPECTS(std::isfinite(o.dcps_learning_rate) && o.dcps_learning_rate >= 0,
                     "options.dcps_learning_rate: must be finite and >= 0, got " << o.dcps_learning_rate);
  detail::check_at_most_max_abs("options.dcps_learning_rate", o.dcps_learning_rate);
}

// The prior's largest curvature max_k 1 / min_j v_kj (the final moves' lambda at a = 1): the Hessian of -log p_0
// within a component, which the preconditioner of the final moves matches.
double largest_prior_curvature(const std::vector<double>& variances) {
  double c = 0;
  for (double v : variances) c = std::max(c, 1.0 / v);
  return c;
}

// The checks of a run's grid @p pts under its resolved options @p o that build_tables() makes before it builds
// anything, made by guided_workspace_bytes() too, so that the query refuses what the run refuses (skrock has no
// grid): moment and twisted potentials need s = 0 at the last point (the likelihood), every step s > 0 where it
// starts and a > 0 at both ends (detail::check_backward_step()), and the final moves s = 0 at the last point.
void check_grid(const guided_options& o, const std::vector<schedule_point>& pts) {
  if (o.sampler == guided_sampler::skrock) return;
  const bool moment = o.sampler == guided_sampler::smc &&
                      (o.potentials == guided_potentials::moment || o.potentials == guided_potentials::twisted);
  DIFFSAMPLE_EXPECTS(!moment || pts.back().s == 0.0,
                     "options.potentials: " << to_string(o.potentials)
                                            << " potentials need a grid ending at s = 0 (the likelihood), got s = "
                                            << pts.back().s);
  detail::check_backward_steps(pts, "the potentials");
  DIFFSAMPLE_EXPECTS(!final_moves_run(o) || pts.back().s == 0.0,
                     "options.final_moves: the moves target the posterior at the grid's last point, which needs s = "
                     "0 there, got s = "
                         << pts.back().s);
}

// The host tables, laid out exactly as their device copy.
// prior_variances: the prior's variances (SKRock's step bound and the final moves' curvature; empty for the guided
// plans). When given, *grid gets the grid's points and *prior_curvature the final moves' lambda_0 (0 without final
// moves), for the caller's own use.
std::vector<unsigned char> build_tables(std::int64_t d, const std::vector<double>& prior_variances,
                                        const guided_problems& pr, const guided_options& o, const layout& l,
                                        float* initial_scale, const svd_reduction& reduced,
                                        std::vector<schedule_point>* grid = nullptr,
                                        double* prior_curvature = nullptr) {
  const std::int64_t B = pr.problems, dy = pr.d_y, K = o.steps;
  std::vector<schedule_point> own;
  std::vector<schedule_point>& pts = grid != nullptr ? *grid : own;
  pts = o.schedule.points(K);
  check_grid(o, pts);
  if (prior_curvature != nullptr) *prior_curvature = 0;
  *initial_scale = float(pts.front().s);
  std::vector<unsigned char> blob(l.table_end, 0);
  auto* steps = reinterpret_cast<guided_step*>(blob.data() + l.steps);
  auto* inv_var = reinterpret_cast<float*>(blob.data() + l.inv_var);
  auto* noise_std = reinterpret_cast<float*>(blob.data() + l.noise_std);
  auto* precision = reinterpret_cast<float*>(blob.data() + l.precision);
  auto* A32 = reinterpret_cast<float*>(blob.data() + l.A);
  auto* mask32 = reinterpret_cast<std::int32_t*>(blob.data() + l.mask);
  auto* y32 = reinterpret_cast<float*>(blob.data() + l.y);
  auto* constants = reinterpret_cast<double*>(blob.data() + l.constants);
  auto* sigma2 = reinterpret_cast<float*>(blob.data() + l.sigma2);
  const bool twisted = o.sampler == guided_sampler::smc && o.potentials == guided_potentials::twisted;
  const bool moment = (o.sampler == guided_sampler::smc && o.potentials == guided_potentials::moment) || twisted;
  const operator_shape& sh = l.operators;
  // The operators as the kernels read them, and A A^T of each (FP64).
  std::vector<double> gram(static_cast<std::size_t>(sh.count * dy * dy));
  for (std::int64_t c = 0; c < sh.count; ++c) {
    double* G = gram.data() + c * dy * dy;
    if (pr.operators.empty()) {
      const double* A = pr.A.data() + c * dy * d;
      for (std::int64_t i = 0; i < dy * d; ++i) A32[c * dy * d + i] = float(A[i]);
      kernels::gram(A, dy, d, G);
      continue;
    }
    const observation_operator& op = pr.operators[c];
    if (sh.mask) {
      for (std::int64_t i = 0; i < dy; ++i) {
        A32[c * dy + i] = float(op.diagonal()[i]);
        mask32[c * dy + i] = static_cast<std::int32_t>(op.indices()[i]);
      }
    } else {
      const std::vector<double> A = op.matrix();
      for (std::int64_t i = 0; i < dy * d; ++i) A32[c * dy * d + i] = float(A[i]);
    }
    const std::vector<double> g = op.gram();
    std::copy(g.begin(), g.end(), G);
  }
  for (std::size_t i = 0; i < pr.y.size(); ++i) y32[i] = float(pr.y[i]);
  auto* extra = reinterpret_cast<float*>(blob.data() + l.extra);
  if (o.sampler == guided_sampler::skrock) {
    // Steps h_b = fraction l_s / L_b with L_b = max_k 1 / min_j v_kj + lambda_max(A_b A_b^T) / sigma_{y,b}^2, an
    // upper bound on the Hessian of -log p(x | y) (the mixture's Hessian is the responsibility-weighted precisions
    // minus a covariance, so at most the largest precision).
    // options.skrock_lipschitz, when given, stands for max_k 1 / min_j v_kj (a plan's prior has no variances).
    double prior_curvature = o.skrock_lipschitz;
    if (!(o.skrock_lipschitz > 0))
      for (double v : prior_variances) prior_curvature = std::max(prior_curvature, 1.0 / v);
    std::vector<double> lambda(static_cast<std::size_t>(sh.count));
    for (std::int64_t c = 0; c < sh.count; ++c) lambda[c] = detail::largest_eigenvalue(gram.data() + c * dy * dy, dy);
    const int stages = int(o.skrock_stages);
    const double bound = detail::skrock_stability_bound(stages, o.skrock_eta);
    for (std::int64_t b = 0; b < B; ++b) {
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      const double L = prior_curvature + lambda[sh.count == 1 ? 0 : b] / (sy * sy);
      extra[b] = float(o.skrock_step_fraction * bound / L);
      extra[B + b] = float(1.0 / (sy * sy));
    }
    const std::vector<double> c = detail::skrock_coefficients(stages, o.skrock_eta);
    for (std::size_t i = 0; i < c.size(); ++i) extra[2 * B + i] = float(c[i]);
    *initial_scale = 1.f;
    return blob;
  }
  if (o.sampler == guided_sampler::dps)
    for (std::int64_t b = 0; b < B; ++b) extra[b] = reduced.active ? float(reduced.outside[b]) : 0.f;

  std::vector<double> sig2(K);
  for (std::int64_t k = 0; k < K; ++k) {
    const schedule_point &p = pts[k], &q = pts[k + 1];
    // The backward kernel N(c0 m + c1 x, sig^2 I) of kernels/backward.cuh, shared with the diffusion samplers.
    kernels::backward_coefficients bk{};
    guided_step st = detail::backward_step(p, q, k, o, "the potentials", &bk);
    sig2[k] = bk.variance;
    if (o.sampler == guided_sampler::diffpir) {
      // x' = a' x0 + s' (sqrt(1 - zeta) (x - a x0) / s + sqrt(zeta) z) = c0 x0 + c1 x + sig z.
      const double c1 = q.s * std::sqrt(1.0 - o.diffpir_zeta) / p.s;
      st.c1 = float(c1);
      st.c0 = float(q.a - c1 * p.a);
      st.sig = float(q.s * std::sqrt(o.diffpir_zeta));
    }
    steps[k] = st;
  }
  // The linear potentials' last transition (kernels::linear_final_draw): its kernel variance v_f in the observed
  // directions is set per problem below, so that the precision table of step K - 1 is V^-1, V = n^2 I + v_f A A^T,
  // and that step's weight the predictive N(a_K y; A mu, V).
  DIFFSAMPLE_EXPECTS(!(l.final_scale > 0) || kernels::final_transition(steps[K - 1]),
                     "internal: the linear potentials' last step is not the deterministic step to s = 0");
  if (o.sampler == guided_sampler::smc && o.multistep_kernel) {
    // The weights w_k of kernels::multistep_row (detail::multistep_weights, which resolve_options checks too).
    double h_prev = 0, h = 0;
    auto* w = reinterpret_cast<float*>(blob.data() + l.multistep);
    const std::int64_t k = detail::multistep_weights(pts, w, &h_prev, &h);
    DIFFSAMPLE_EXPECTS(k < 0, "options.multistep_kernel: needs log(a / s) to increase strictly along the grid, got "
                              "steps " << h_prev << " and " << h << " in it at grid points " << k - 1 << " .. "
                                       << k + 1);
  }

  // DiffPIR's proximal step x0 = argmin_z |y - A z|^2 + (rho_k / 2) |z - m|^2 with rho_k = lambda sigma_y^2 a^2 / s^2:
  // DeepInverse's prox of 2 f / rho_k, f(z) = |y - A z|^2 / 2 (README, "DiffPIR"). Its weight rho_k / 2.
  const auto diffpir_weight = [&](const guided_options& opt, double sy, const schedule_point& p) {
    return 0.5 * opt.diffpir_lambda * sy * sy * p.a * p.a / (p.s * p.s);
  };
  const double log_two_pi = kernels::log_two_pi<double>();
  std::vector<double> S(dy * dy), var(K + 1);
  std::vector<std::vector<double>> gram_inverse(static_cast<std::size_t>(sh.count));  // (A A^T + eps I)^-1, on demand
  // Every problem has problem 0's operator and sigma_y: its tables are copies of problem 0's.
  const bool shared = sh.count == 1 && pr.sigma_y.size() == 1;
  double first_constant = 0;  // problem 0's constant (before the reduction's outside part)
  for (std::int64_t b = 0; b < B; ++b) {
    const double* AAt = gram.data() + (sh.count == 1 ? 0 : b) * dy * dy;
    const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
    double trace = 0;
    for (std::int64_t i = 0; i < dy; ++i) trace += AAt[i * dy + i];
    const double rows = double(reduced.active ? reduced.spread_rows : dy);
    const double spread = o.potential_spread > 0 ? o.potential_spread : default_potential_scale * trace / rows;
    // v_f = c (a_K s_{K-1} / a_{K-1})^2 with c = spread rows / trace(A A^T): the spread that the linear potential
    // of the last noisy point gives A x_0 per unit of squared row norm (default_potential_scale by default), so
    // that the last transition's weight N(a_K y; A mu, V) / ghat_{K-1}(x) compares two predictives of one spread.
    // The flat-prior c = 1 (the exact Cov(x_0 | x) for a prior flat at the scale s) left that weight's ESS at 3 of
    // 256 particles on a 10-row mask (sigma_y = 1e-2), against 37 with c = 4; at d_y = 2, 433 of 1024 against 1003.
    double vf = 0;
    if (l.final_scale > 0) {
      const double c = trace > 0 ? spread * rows / trace : default_potential_scale;
      vf = c * l.final_scale;
      sig2[K - 1] = vf;
      reinterpret_cast<float*>(blob.data() + l.final_var)[b] = float(vf);
    }
    for (std::int64_t k = 0; k <= K; ++k) {
      var[k] = pts[k].a * pts[k].a * sy * sy + pts[k].s * pts[k].s * spread;
      inv_var[k * B + b] = float(1.0 / var[k]);
      noise_std[k * B + b] = float(std::sqrt(var[k]));
    }
    sigma2[b] = float(sy * sy);
    // Linear potentials: log g_0's constant, then per step the predictive's over g_k's. Moment potentials (computed
    // whole per particle): per step but the last the predictive's constant over that of the next linear potential;
    // the last transition is fully adapted (kernels::final_transition_draw, weight log g_{K-1} - log ghat_{K-1}
    // whole but ghat's constant, which the previous step's term holds), so it has no term.
    // Twisted potentials: every weight is a ratio of normalised densities (the kernels compute log g_k whole, and
    // the last transition's weight is log g_{K-1} itself: kernels::final_transition_draw), so no constant at all.
    double constant = moment ? 0.0 : -0.5 * double(dy) * (log_two_pi + std::log(var[0]));
    const int shift = moment ? 1 : 0;
    // One operator and one sigma_y: every problem's tables and constant are problem 0's (copied below), so the K
    // factorisations of O(d_y^3) run once, not B times.
    const bool as_first = b > 0 && shared;
    for (std::int64_t k = 0; k < K && !as_first; ++k) {
      const schedule_point& p = pts[k];
      const bool term = !twisted && !(moment && k + 1 == K);
      if (sh.mask) {  // A A^T and so S are diagonal: store 1 / S_ii
        float* P = precision + (k * B + b) * dy;
        double logdet = 0;
        for (std::int64_t i = 0; i < dy; ++i) {
          const double g2 = AAt[i * dy + i];
          double v = 0;
          switch (o.sampler) {
            case guided_sampler::smc: v = var[k + 1] + sig2[k] * g2; break;
            case guided_sampler::dps: v = sy * sy; break;
            case guided_sampler::pigdm: v = p.s * p.s / (p.a * p.a + p.s * p.s) * g2 + sy * sy; break;
            case guided_sampler::diffpir: v = g2 + diffpir_weight(o, sy, p); break;
            case guided_sampler::skrock: break;  // no grid tables (returned above)
            default: break;  // the samplers of src/guided_tables.hpp build their own tables
          }
          DIFFSAMPLE_EXPECTS(v > 0 && std::isfinite(v), "problems: the predictive covariance S has diagonal entry "
                                                            << v << " at row " << i);
          P[i] = float(1.0 / v);
          logdet += std::log(v);
        }
        if (term) constant += -0.5 * logdet + 0.5 * double(dy) * std::log(var[k + shift]);
        continue;
      }
      for (std::int64_t i = 0; i < dy; ++i)
        for (std::int64_t j = 0; j < dy; ++j) {
          const double diag = i == j ? 1.0 : 0.0;
          switch (o.sampler) {
            case guided_sampler::smc: S[i * dy + j] = var[k + 1] * diag + sig2[k] * AAt[i * dy + j]; break;
            case guided_sampler::dps: S[i * dy + j] = sy * sy * diag; break;
            case guided_sampler::pigdm: {
              const double r2 = p.s * p.s / (p.a * p.a + p.s * p.s);
              S[i * dy + j] = r2 * AAt[i * dy + j] + sy * sy * diag;
              break;
            }
            case guided_sampler::diffpir:  // A A^T + (rho_k / 2) I
              S[i * dy + j] = AAt[i * dy + j] + diffpir_weight(o, sy, p) * diag;
              break;
            case guided_sampler::skrock: break;  // no grid tables (returned above)
            default: break;
          }
        }
      const double logdet = invert_spd(S, int(dy), "problems: the predictive covariance S");
      float* P = precision + (k * B + b) * dy * dy;
      for (std::int64_t i = 0; i < dy * dy; ++i) P[i] = float(S[i]);
      // log N(.; ., S) over log g_k: -1/2 log det S - d_y/2 log 2 pi + d_y/2 log(2 pi var_k).
      if (term) constant += -0.5 * logdet + 0.5 * double(dy) * std::log(var[k + shift]);
    }
    if (as_first) {
      const std::int64_t table = sh.mask ? dy : dy * dy;
      for (std::int64_t k = 0; k < K; ++k)
        std::copy(precision + k * B * table, precision + (k * B + 1) * table, precision + (k * B + b) * table);
      constant = first_constant;
    } else if (b == 0) {
      first_constant = constant;
    }
    // The rows outside the reduction's span leave the tables; their part of the last potential joins the constant:
    // log N(a_K U_perp^T y; 0, var_K I) = -(d_y - r)/2 log(2 pi var_K) - a_K^2 |U_perp^T y|^2 / (2 var_K) at the
    // grid's last point (a_K, s_K), which is the likelihood's log N(U_perp^T y; 0, sigma_y^2 I) (log_constant) at
    // a = 1, s = 0. On a grid that stops at s_K > 0 (linear potentials) the likelihood's part would leave log Z-hat
    // an estimate of neither quantity: the unreduced run estimates the last potential's normaliser.
    double outside_part = 0;
    if (reduced.active) {
      const schedule_point& last = pts[K];
      if (last.a == 1.0 && last.s == 0.0) {
        outside_part = reduced.log_constant[b];
      } else {
        const double rows_out = double(reduced.spread_rows - dy);
        outside_part = -0.5 * rows_out * (log_two_pi + std::log(var[K])) -
                       last.a * last.a * reduced.outside[b] / (2 * var[K]);
      }
    }
    constants[b] = constant + outside_part;
    if (l.final_scale > 0) {
      // D = chol(Cov(delta)), Cov(delta) = n^2 I + n^4 / v_f (A A^T + eps I)^-1 (n^2 = var[K], the likelihood's
      // variance at the grid's last point; eps = 1e-6 of the largest eigenvalue of A A^T). eps only matters in the
      // directions A^T maps to (nearly) zero, where delta's spread is arbitrary: their columns of A^T are below 1e-3
      // of the largest, so their share of x is at most 1e-3 of the observed spread.
      const std::int64_t per = dy * (sh.mask ? 1 : dy);
      float* D = reinterpret_cast<float*>(blob.data() + l.final_noise) + b * per;
      const double n2 = var[K];
      const std::int64_t c = sh.count == 1 ? 0 : b;
      if (as_first) {
        std::copy(D - b * per, D - b * per + per, D);
      } else if (sh.mask) {
        double largest = 0;
        for (std::int64_t i = 0; i < dy; ++i) largest = std::max(largest, AAt[i * dy + i]);
        const double eps = 1e-6 * largest;
        for (std::int64_t i = 0; i < dy; ++i) {
          const double g2 = AAt[i * dy + i] + eps;
          D[i] = float(g2 > 0 ? std::sqrt(n2 + n2 * n2 / (vf * g2)) : std::sqrt(n2));
        }
      } else {
        std::vector<double>& inverse = gram_inverse[c];
        if (inverse.empty()) {
          inverse.assign(AAt, AAt + dy * dy);
          const double eps = 1e-6 * detail::largest_eigenvalue(AAt, dy);
          for (std::int64_t i = 0; i < dy; ++i) inverse[i * dy + i] += eps;
          invert_spd(inverse, int(dy), "problems: A A^T of the linear potentials' last transition");
        }
        std::vector<double> C(dy * dy);
        for (std::int64_t i = 0; i < dy * dy; ++i) C[i] = n2 * n2 / vf * inverse[i];
        for (std::int64_t i = 0; i < dy; ++i) C[i * dy + i] += n2;
        kernels::psd_factor(C.data(), dy);
        for (std::int64_t i = 0; i < dy * dy; ++i) D[i] = float(C[i]);
      }
      // The spread of delta grows as 1 / (v_f A A^T): a tiny spread (or a tiny A with the default spread) took it
      // past FP32, and every particle of the last transition came out NaN with a finite log-normaliser.
      for (std::int64_t i = 0; i < per; ++i)
        DIFFSAMPLE_EXPECTS(std::isfinite(D[i]),
                           (o.potential_spread > 0 ? "options.potential_spread" : "problems.A")
                               << ": the linear potentials' last transition draws with a spread past FP32 (its factor "
                               << D[i] << " for problem " << b << ", from the potential spread " << spread
                               << " and A A^T's trace " << trace
                               << "): use a larger options.potential_spread (0: the default) or a larger scale of A");
    }
  }
  if (final_moves_run(o)) {
    // W_b = (lambda_0 sigma_{y,b}^2 I + A_b A_b^T)^-1, lambda_0 the prior's curvature at a = 1 (at the channel
    // (a, 0) the curvature is lambda_0 / a^2 and the noise a sigma_y: the a^2 cancel). check_grid() checked s = 0 at
    // the last point.
    // options.final_move_curvature, when given, stands for max_k 1 / min_j v_kj (a plan's prior has no variances).
    const double lambda0 =
        o.final_move_curvature > 0 ? o.final_move_curvature : largest_prior_curvature(prior_variances);
    if (prior_curvature != nullptr) *prior_curvature = lambda0;
    auto* W = reinterpret_cast<float*>(blob.data() + l.move_precision);
    for (std::int64_t b = 0; b < B; ++b) {
      const double* AAt = gram.data() + (sh.count == 1 ? 0 : b) * dy * dy;
      const double sy = pr.sigma_y.size() == 1 ? pr.sigma_y[0] : pr.sigma_y[b];
      const double tau = lambda0 * sy * sy;
      if (sh.mask) {
        for (std::int64_t i = 0; i < dy; ++i) W[b * dy + i] = float(1.0 / (tau + AAt[i * dy + i]));
        continue;
      }
      if (b > 0 && shared) {  // problem 0's W
        std::copy(W, W + dy * dy, W + b * dy * dy);
        continue;
      }
      for (std::int64_t i = 0; i < dy; ++i)
        for (std::int64_t j = 0; j < dy; ++j) S[i * dy + j] = AAt[i * dy + j] + (i == j ? tau : 0.0);
      invert_spd(S, int(dy), "options.final_moves: lambda sigma_y^2 I + A A^T");
      for (std::int64_t i = 0; i < dy * dy; ++i) W[b * dy * dy + i] = float(S[i]);
    }
  }
  return blob;
}

/// Guided SMC's mutation of every particle (kernels::guided_mutate_functor, or the twisted SMC's
/// kernels::twisted_mutate_functor): on packs of particles on the CPU executor's SIMD targets (cpu::run_guided_pass),
/// else the functor per particle. guided_sample()'s runs and the plans' tells both take this path, so they agree bit
/// for bit on every target.
template <class Mutate>
void run_mutation(executor where, std::int64_t count, const Mutate& mutate, cudaStream_t stream) {
  // The packed pass covers the functor's problems x particles, not `count`: a distributed run's rank without
  // particles (count 0) keeps buffers of one particle, which it must not mutate.
  if (count <= 0) return;
  const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    cpu::guided_pass pass;
    if constexpr (std::is_same_v<Mutate, kernels::twisted_mutate_functor>)
      pass.twisted_mutate = &mutate;
    else
      pass.mutate = &mutate;
    cpu::run_guided_pass(target, pass);
  } else {
    kernels::for_each_index<128>(where, count, mutate, stream);
  }
}

/// The final resample-move over `count` samples: on packs of samples on a SIMD CPU target (cpu::run_final_moves),
/// else the functor per sample.
void run_final_moves(executor where, std::int64_t count, const kernels::final_move_functor& moves,
                     cudaStream_t stream) {
  const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar)
    cpu::run_final_moves(target, moves);
  else
    kernels::for_each_index<128>(where, count, moves, stream);
}

/// The options of an SMC run's final resampling, the samples' draw: every problem with a positive weight resamples,
/// at step K + 1 of the particles' streams.
resampling_options final_resampling(resampling_options ro, std::int64_t K) {
  ro.ess_threshold = 2.0;  // every problem with a positive weight
  ro.step = static_cast<std::uint64_t>(K + 1);
  return ro;
}

/// The final resample-move's settings (kernels::final_move_functor) at the grid's last point a, for guided_sample()
/// and the distributed shard alike; the prior's channel at (a, 0) is the caller's (their channel tables differ).
kernels::final_move_params final_move_settings(const layout& l, const unsigned char* ws, double a,
                                               double prior_curvature, const guided_options& o, std::int64_t K,
                                               std::int64_t d) {
  kernels::final_move_params q{};
  q.W = reinterpret_cast<const float*>(ws + l.move_precision);
  q.a = float(a);
  q.curvature = float(prior_curvature / (a * a));
  q.step = float(o.final_move_step > 0 ? o.final_move_step : 2.0 * std::cbrt(1.0 / double(d)));
  q.last = K;
  q.first_step = static_cast<std::uint64_t>(K + 1);
  q.moves = int(o.final_moves);
  return q;
}

/// An SMC run's last launch: each problem's log-normaliser (the estimate plus the host's FP64 constants) and
/// resample count, to the outputs that ask for them.
void finish_problems(executor where, std::int64_t B, const double* log_z, const double* constants,
                     const std::int32_t* counts, const guided_outputs& out, cudaStream_t stream) {
  kernels::for_each_index(
      where, B, kernels::guided_finish_functor{log_z, constants, counts, out.log_normaliser, out.resample_count},
      stream);
}

/// The potentials, start correction, multistep kernel, final moves and ESS threshold of a run, from its resolved
/// options (smc only).
void report_resolved(guided_report& report, const guided_options& resolved) {
  if (resolved.sampler != guided_sampler::smc) return;
  report.potentials = resolved.potentials;
  report.start_correction = resolved.start_correction;
  report.multistep_kernel = resolved.multistep_kernel;
  report.final_moves = resolved.final_moves;
  report.ess_threshold = resolved.resampling.ess_threshold;
}

std::size_t guided_query(const gaussian_mixture& prior, const guided_problems& problems, const guided_options& given,
                         std::size_t* cuda_only);

}  // namespace

std::vector<double> guided_times(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& given) {
  // The run's checks (validate(), then its grid's: check_grid(), and TMPD's, DDRM's and DCPS's own), as the workspace
  // query makes them: the times of a grid the run refuses are no answer.
  std::size_t cuda_only = 0;
  (void)guided_query(prior, problems, given, &cuda_only);
  const guided_options options = detail::resolve_options(prior.dim(), problems, given, detail::resolve_route::run);
  const std::vector<schedule_point> pts = options.schedule.points(options.steps);
  std::vector<double> times(pts.size());
  for (std::size_t k = 0; k < pts.size(); ++k) times[k] = pts[k].t;
  return times;
}

namespace {

// The query's layout, or for TMPD, DDRM and DCPS their own query (none of which holds a CUDA-only part): `cuda_only`
// receives the bytes only the CUDA executor uses (cuBLAS's workspace of DPS / Pi-GDM's products), which the total
// counts.
std::size_t guided_query(const gaussian_mixture& prior, const guided_problems& problems, const guided_options& given,
                         std::size_t* cuda_only) {
  *cuda_only = 0;
  validate(prior.dim(), problems, given);
  const guided_options options = detail::resolve_options(prior.dim(), problems, given, detail::resolve_route::run);
  const std::vector<schedule_point> pts = options.schedule.points(options.steps);
  switch (options.sampler) {
    case guided_sampler::tmpd: {
      const svd_reduction reduced = reduce_for_table_sampler(problems, prior.dim(), options);
      return detail::tmpd_workspace_bytes(prior, reduced.active ? reduced.problems : problems, options);
    }
    case guided_sampler::ddrm: return detail::ddrm_workspace_bytes(prior, problems, options);
    case guided_sampler::dcps: {
      const svd_reduction reduced = reduce_for_table_sampler(problems, prior.dim(), options);
      return detail::dcps_workspace_bytes(prior, reduced.active ? reduced.problems : problems, options);
    }
    default: break;
  }
  check_grid(options, pts);  // the run's checks of its grid (build_tables())
  const svd_reduction reduced = reduce_svd(problems, prior.dim(), options.sampler);
  const guided_problems& pr = reduced.active ? reduced.problems : problems;
  const kernels::mixture_view<float> view = prior.storage().view(executor::cpu);
  const layout l =
      make_layout(prior.dim(), pr, options, &view,
                  baseline_products(prior.dim(), pr, options, reduced.active, executor::automatic));
  *cuda_only = l.cuda_only;
  return l.total;
}

/// The executor a run's outputs place it on (the first of particles, samples, log_normaliser and log_weights given,
/// as guided_sample() picks it) after each given output's check against the run's sizes (B problems, the options'
/// particles and steps, dimension d), and smc's samples against final_resample: guided_sample() and
/// detail::check_guided_outputs() alike.
executor check_output_buffers(const guided_outputs& out, const guided_options& o, std::int64_t B, std::int64_t d,
                              execution exec) {
  const std::int64_t BN = B * o.particles, K = o.steps;
  const void* probe = out.particles != nullptr ? static_cast<const void*>(out.particles)
                      : out.samples != nullptr ? static_cast<const void*>(out.samples)
                      : out.log_normaliser != nullptr ? static_cast<const void*>(out.log_normaliser)
                                                      : static_cast<const void*>(out.log_weights);
  const executor where = detail::resolve_executor(exec.kind, probe);
  if (out.particles != nullptr) detail::check_buffer("outputs.particles", out.particles, BN * d, sizeof(float), where);
  if (out.samples != nullptr) detail::check_buffer("outputs.samples", out.samples, BN * d, sizeof(float), where);
  if (o.sampler == guided_sampler::smc) {
    if (out.log_weights != nullptr)
      detail::check_buffer("outputs.log_weights", out.log_weights, BN, sizeof(float), where);
    if (out.log_normaliser != nullptr)
      detail::check_buffer("outputs.log_normaliser", out.log_normaliser, B, sizeof(double), where);
    if (out.ess_trace != nullptr)
      detail::check_buffer("outputs.ess_trace", out.ess_trace, B * (K + 1), sizeof(float), where);
    if (out.resample_count != nullptr)
      detail::check_buffer("outputs.resample_count", out.resample_count, B, sizeof(std::int32_t), where);
    DIFFSAMPLE_EXPECTS(out.samples == nullptr || o.final_resample,
                       "outputs.samples: given but options.final_resample is false");
  }
  return where;
}

}  // namespace

std::size_t guided_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                   const guided_options& options) {
  std::size_t cuda_only = 0;
  return guided_query(prior, problems, options, &cuda_only);
}

std::size_t guided_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                   const guided_options& options, execution exec) {
  std::size_t cuda_only = 0;
  const std::size_t total = guided_query(prior, problems, options, &cuda_only);
  return detail::plan_executor(exec) == executor::cpu ? total - cuda_only : total;
}

guided_report guided_sample(const gaussian_mixture& prior, guided_outputs out, const guided_problems& given,
                            const guided_options& options, execution exec, void* workspace,
                            std::size_t workspace_bytes) {
  validate(prior.dim(), given, options);
  const guided_options o = detail::resolve_options(prior.dim(), given, options, detail::resolve_route::run);
  // smc's own outputs: the other samplers write particles and samples only, and left these buffers as they were,
  // so a caller read whatever they held as log-weights, evidence estimates or ESS (Python's new outputs:
  // uninitialised memory). Refused, naming the output, before anything runs.
  check_smc_only_outputs(o.sampler, out);
  switch (o.sampler) {
    case guided_sampler::tmpd: {
      const svd_reduction reduced = reduce_for_table_sampler(given, prior.dim(), o);
      return detail::tmpd_sample(prior, reduced.active ? reduced.problems : given, o, out, exec, workspace,
                                 workspace_bytes);
    }
    case guided_sampler::ddrm: return detail::ddrm_sample(prior, given, o, out, exec, workspace, workspace_bytes);
    case guided_sampler::dcps: {
      const svd_reduction reduced = reduce_for_table_sampler(given, prior.dim(), o);
      return detail::dcps_sample(prior, reduced.active ? reduced.problems : given, o, out, exec, workspace,
                                 workspace_bytes);
    }
    default: break;
  }
  const svd_reduction reduced = reduce_svd(given, prior.dim(), o.sampler);
  const guided_problems& pr = reduced.active ? reduced.problems : given;
  const std::int64_t B = pr.problems, N = o.particles, d = prior.dim(), dy = pr.d_y, K = o.steps;
  const std::int64_t BN = B * N;
  const bool smc = o.sampler == guided_sampler::smc;
  const executor where = check_output_buffers(out, o, B, d, exec);
  const kernels::mixture_view<float> shape = prior.storage().view(executor::cpu);  // the table's size
  const layout l = make_layout(prior.dim(), pr, o, &shape, baseline_products(prior.dim(), pr, o, reduced.active, where));
  float initial_scale = 1.f;
  std::vector<schedule_point> grid_points;  // the grid's points and the final moves' lambda_0, from build_tables
  double prior_curvature = 0;
  const std::vector<unsigned char> blob = build_tables(prior.dim(), prior.variances(), pr, o, l, &initial_scale,
                                                       reduced, &grid_points, &prior_curvature);

  std::unique_ptr<detail::scratch> owned;
  // The CPU executor needs the layout less cuBLAS's part of the products' buffer (its last bytes), which it never
  // touches: guided_workspace_bytes(..., exec) on the CPU executor; a caller's workspace of the executor-free
  // query's size (the bound on either executor) is accepted too.
  const std::size_t need = where == executor::cpu ? l.total - l.cuda_only : l.total;
  detail::check_outputs_disjoint(out, B, BN, d, K, smc, workspace, need);
  // The resamplings' check on the CUDA executor (resample_unchecked() repeats it), before anything is launched.
  if (smc && where == executor::cuda) detail::check_resampling_scan(B, N, exec.stream);
  // The tables are this call's own, built on the host: a captured graph would copy them again at every replay
  // after the call has released them.
  if (where == executor::cuda) detail::refuse_capture(exec.stream, "guided_sample()", "sampling_plan::guided");
  // The products' cuBLAS handle of this device, before the first launch.
  if (l.gemm && where == executor::cuda) detail::operator_gemm_prepare(&exec.stream);
  if (workspace == nullptr) detail::check_allocation("guided workspace", need, where, exec.stream);
  unsigned char* ws =
      detail::workspace_or_scratch(need, workspace, workspace_bytes, 16, where, exec.stream, owned);
  if (where == executor::cuda) {
    detail::upload_async(ws, blob.data(), blob.size(), exec.stream);  // pinned staging: no host synchronisation
  } else {
    std::memcpy(ws, blob.data(), blob.size());
  }

  kernels::guided_params p = bind_tables(l, ws, prior.storage().view(where), B, N, d, dy, o.seed, initial_scale);
  p.stream_skip = detail::current_particle_streams().skip(N);  // 0 unless a shard of a larger run
  p.stream_first = detail::current_particle_streams().first;
  // The CUDA executor's particles are coordinate-major inside the run (kernels/guided.cuh, "Layout"); the CPU
  // executor's stay row-major.
  const bool diffpir = o.sampler == guided_sampler::diffpir;
  if (where == executor::cuda) p.coordinate_stride = BN;
  // The mixture's constants at every channel of the run, once per call on the executor (FP64, rounded to float):
  // every particle's denoiser, score and J v read them (kernels::guided_channel), on both executors the same values.
  p.channels = kernels::mixture_channels::in(p.mix, l.channel_count, reinterpret_cast<float*>(ws + l.channels));
  kernels::guided_channels channel_set{o.sampler == guided_sampler::skrock ? nullptr : p.steps};
  if (final_moves_run(o)) {
    channel_set.last = K;
    channel_set.last_a = float(grid_points.back().a);
  }
  kernels::for_each_index(where, l.channel_count * p.mix.components,
                          kernels::channel_table_functor<kernels::guided_channels>{p.channels, channel_set},
                          exec.stream);

  float* x = reinterpret_cast<float*>(ws + l.x);
  float* mu = reinterpret_cast<float*>(ws + l.mu);
  float* r = reinterpret_cast<float*>(ws + l.r);
  const cudaStream_t stream = exec.stream;
  guided_report report;
  report.ran = where;
  report_resolved(report, o);
  if (out.samples == nullptr) report.final_moves = 0;  // the moves act on the final resampling's samples only

  // The CPU executor's SIMD target, and the mixture's constants at step k's channel for the SMC's weighting step
  // (the run's table).
  const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  auto channel_at = [&](std::int64_t k) { return kernels::guided_channel(p, k); };
  ++report.launches;  // the table

  if (!smc) {
    const float* extra = reinterpret_cast<const float*>(ws + l.extra);
    if (diffpir && where == executor::cpu) {
      // Step by step with the mixture's denoiser as a caller's model gives it to the ask/tell plan, through the same
      // stage functor: the plan answered by the mixture reproduces this run bit for bit.
      const auto* table = reinterpret_cast<const guided_step*>(blob.data() + l.steps);
      kernels::diffpir_stage_functor f{p, 0, 0, 0.f, 1.f, x, mu, mu, r, nullptr, nullptr, 0};
      kernels::for_each_index(where, BN, f, stream);
      const bool fused = detail::fused_stepwise_available();
      if (fused) {
        // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp): the
        // pack's denoiser by evaluate()'s per-pack code, then the plan's packed tell (cpu::run_diffpir_tell) on the
        // pack, step after step.
        std::vector<detail::fused_ask> asks(static_cast<std::size_t>(K));
        for (std::int64_t k = 0; k < K; ++k) asks[k] = {channel{table[k].a, table[k].s}, x, nullptr, mu};
        f.stage = 1;
        report.launches += detail::run_fused_stepwise(prior.storage(), BN, asks.data(), K, nullptr, nullptr, &f);
      }
      for (std::int64_t k = 0; !fused && k < K; ++k) {
        const channel ch{table[k].a, table[k].s};
        detail::evaluate_direct_unchecked(prior.storage(), quantity::denoiser, x, BN, ch, mu, {where, stream});
        f.k = k;
        f.stage = 1;
        kernels::for_each_index(where, BN, f, stream);
        report.launches += 2;
      }
    } else if (diffpir) {
      detail::launch_diffpir(where, BN, p, K, x, mu, r, stream);
    } else if (o.sampler == guided_sampler::skrock && where == executor::cpu) {
      // Drift evaluation by drift evaluation with the mixture's score at channel (1, 0), as a caller's model gives
      // it to the ask/tell plan, through the same stage functor: the plan answered by the mixture reproduces this
      // run bit for bit (given this run's exact prior draws as its initial state).
      const kernels::skrock_params q{extra, extra + B, extra + 2 * B, int(o.skrock_stages),
                                     prior.storage().cumulative_for(where)};
      float *cur = mu, *old = mu + BN * d, *g = mu + 2 * BN * d;
      kernels::skrock_stage_functor f{p, q, kernels::skrock_op_initial, 0, 0, K, x, cur, old, g, g, r, nullptr,
                                      nullptr, 0};
      kernels::for_each_index(where, BN, f, stream);
      f.op = kernels::skrock_op_stage;
      const bool fused = detail::fused_stepwise_available();
      if (fused) {
        // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp): the
        // pack's score at its stage point by evaluate()'s per-pack code, then the pack code of the plan's packed
        // tell (cpu::run_skrock_tell), drift evaluation after drift evaluation, the pack kept in packs throughout.
        const std::int64_t stages = o.skrock_stages;
        std::vector<detail::fused_ask> asks(static_cast<std::size_t>(K * stages));
        for (auto& a : asks) a = {channel{1.0, 0.0}, cur, nullptr, g, true};
        report.launches += detail::run_fused_stepwise(prior.storage(), BN, asks.data(), K * stages, nullptr, nullptr,
                                                      nullptr, nullptr, nullptr, nullptr, nullptr, &f);
      }
      for (std::int64_t n = 0; !fused && n < K; ++n)
        for (int s = 0; s < int(o.skrock_stages); ++s) {
          detail::evaluate_direct_unchecked(prior.storage(), quantity::score, cur, BN, channel{1.0, 0.0}, g,
                                            {where, stream});
          f.n = n;
          f.s = s;
          kernels::for_each_index(where, BN, f, stream);
        }
      if (!fused) report.launches += 2 * K * o.skrock_stages;
    } else if (o.sampler == guided_sampler::skrock) {
      const kernels::skrock_params q{extra, extra + B, extra + 2 * B, int(o.skrock_stages),
                                     prior.storage().cumulative_for(where)};
      detail::launch_skrock(where, BN, p, q, K, x, mu, r, stream);
    } else {
      const kernels::baseline_settings g{float(o.guidance_scale),
                                         o.sampler == guided_sampler::dps && o.dps_step == dps_step_form::normalised,
                                         extra};
      // A dense operator (not an SVD's reduced rows) as two matrix products per step when that pays
      // (baseline_products(), as the layout and the workspace query decided).
      const bool gemm = l.gemm;
      if (where == executor::cuda && !gemm) {
        kernels::for_each_index_scratch<128>(where, BN, kernels::guided_baseline_functor{p, K, x, mu, r, g}, stream);
      } else {
        // Step by step with the mixture's denoiser and J^T v as a caller's model gives them to the ask/tell plan,
        // through the same stage functors: the plan answered by the mixture reproduces this run bit for bit. The
        // CUDA executor runs so only for the products (cuBLAS), with the particles row-major as in its plan.
        if (where == executor::cuda) p.coordinate_stride = 0;
        // u = P r between the products (and cuBLAS's workspace), from the run's workspace: on the CUDA executor at
        // the first 256-byte aligned address of its slot (the slot's slack), on the CPU executor at its start.
        unsigned char* products = ws + l.products;
        if (where == executor::cuda)
          products += (256 - reinterpret_cast<std::uintptr_t>(products) % 256) % 256;
        const auto* table = reinterpret_cast<const guided_step*>(blob.data() + l.steps);
        float* shift = reinterpret_cast<float*>(ws + l.shift);
        float *m = mu, *v = mu + BN * d, *jv = mu + 2 * BN * d;
        kernels::baseline_stage_functor f{p, g, 0, 0, 0.f, 1.f, x, m, v, nullptr, shift, r, nullptr, nullptr, 0};
        // On a SIMD target the stages run on packs of particles (cpu::run_baseline_stage), as the plan's tells do.
        const auto stage = [&] {
          if (target != cpu::simd_target::scalar)
            cpu::run_baseline_stage(target, f);
          else
            kernels::for_each_index(where, BN, f, stream);
        };
        stage();
        if (gemm) report.operator_path = mixture_path::gemm;
        for (std::int64_t k = 0; k < K; ++k) {
          const channel ch{table[k].a, table[k].s};
          // The unchecked layer: the inputs were validated once at the call's start, not per transition.
          detail::evaluate_direct_unchecked(prior.storage(), quantity::denoiser, x, BN, ch, m, {where, stream});
          f.k = k;
          f.stage = 1;
          f.answer = m;
          if (gemm && where == executor::cuda)
            detail::baseline_guidance_gemm_cuda(p, g, k, f.ux, f.um, x, m, m, v, shift, r, BN, products, stream);
          else if (gemm)
            detail::baseline_guidance_gemm(p, g, k, f.ux, f.um, x, m, m, v, shift, r, BN, products);
          else
            stage();
          // J v: on CUDA from the run's table at step k (the constants denoiser_jvp() computes for the call, the
          // same functor), no table per step.
          if (where == executor::cuda)
            kernels::for_each_row_staged(
                where, BN, kernels::mixture_jvp_functor{p.channels.at(k, table[k].a, table[k].s), x, v, jv, int(d)},
                stream);
          else
            detail::denoiser_jvp_unchecked(prior.storage(), x, v, BN, ch, jv, {where, stream});
          f.stage = 2;
          f.answer = jv;
          stage();
        }
        report.launches += 4 * K;
      }
    }
    ++report.launches;
    for (float* dst : {out.particles, out.samples}) {
      if (dst == nullptr) continue;
      kernels::for_each_index(where, BN * d, kernels::guided_copy_out_functor{x, dst, d, p.coordinate_stride},
                              stream);
      ++report.launches;
    }
    return report;
  }

  float* mu2 = reinterpret_cast<float*>(ws + l.mu2);
  float* lw = reinterpret_cast<float*>(ws + l.lw);
  auto* ancestors = reinterpret_cast<std::int32_t*>(ws + l.ancestors);
  auto* reports = reinterpret_cast<particle_report*>(ws + l.reports);
  auto* log_z = reinterpret_cast<double*>(ws + l.log_z);
  auto* previous_lse = reinterpret_cast<double*>(ws + l.previous_lse);
  auto* counts = reinterpret_cast<std::int32_t*>(ws + l.counts);
  void* resampling_ws = ws + l.resampling;
  const double log_n = std::log(double(N));
  if (o.multistep_kernel) {
    // Each weighting keeps its particles' denoiser outputs and reads their ancestors' previous ones through the
    // ancestors of the resampling in between (kernels::multistep_row).
    p.multistep = reinterpret_cast<const float*>(ws + l.multistep);
    p.multistep_m = reinterpret_cast<float*>(ws + l.multistep_m);
    p.ancestors = ancestors;
  }

  resampling_options ro = o.resampling;
  ro.seed = o.seed ^ 0x9E3779B97F4A7C15ull;  // a stream apart from the mutations'
  particle_outputs po;
  po.ancestors = ancestors;
  po.reports = reports;

  kernels::for_each_index(where, B, kernels::guided_problem_init_functor{log_z, previous_lse, counts, log_n}, stream);
  // The start correction: fused into the initial draw on the CUDA executor; on the CPU executor in the ask/tell
  // plan's stages around evaluate(), so that the plan answered by the mixture reproduces the run on every target.
  const bool corrected = o.start_correction;
  const bool staged = corrected && where == executor::cpu;
  kernels::for_each_index<128>(where, BN, kernels::guided_init_functor{p, x, lw, r, corrected && !staged, mu, mu2},
                               stream);
  report.launches += 2;
  if (staged) {
    start_correction_cpu(prior.storage(), p, BN, x, lw, r, mu, mu2);
    report.launches += 1 + 2 * kernels::start_correction_nodes;
  }
  if (corrected) {
    kernels::for_each_index(where, B, kernels::guided_start_lse_functor{p, mu, previous_lse}, stream);
    ++report.launches;
  }

  // The resampling decision and ancestors at column c of the ESS trace, and its bookkeeping (ESS, log Z, counts).
  auto resample_and_record = [&](std::int64_t column) {
    ro.step = static_cast<std::uint64_t>(column);
    detail::resample_unchecked(lw, B, N, ro, po, where, stream, resampling_ws);
    kernels::for_each_index(where, B,
                            kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                K + 1, column, log_n},
                            stream);
  };
  // Resampling at column c of the ESS trace, then every buffer in `carry` follows its ancestors.
  auto resample_step = [&](std::int64_t column, float*& carried, float*& spare) {
    resample_and_record(column);
    kernels::for_each_index(where, BN, kernels::guided_reset_weights_functor{reports, lw, N}, stream);
    if (p.coordinate_stride != 0)
      kernels::for_each_index(where, BN * d, kernels::guided_gather_functor{carried, ancestors, spare, N, BN}, stream);
    else
      detail::gather_unchecked(carried, B, N, d, ancestors, spare, where, stream);
    std::swap(carried, spare);
    report.launches += 4;
  };

  if (o.potentials == guided_potentials::twisted) {
    // Point k: weight by g_k (the pending log p / q - log g_{k-1} came with the mutation), compute the proposal means
    // mu + sig^2 grad log g_k and the pending parts, resample, draw every particle from its ancestor's proposal; the
    // last transition's proposal is the draw at s = 0 itself (kernels::final_transition_draw, weight g_{K-1}, fully
    // adapted), so the mutation copies it; then resample (column K).
    float* lz = reinterpret_cast<float*>(ws + l.lz);
    float* work = reinterpret_cast<float*>(ws + l.work);
    const auto* sigma2 = reinterpret_cast<const float*>(ws + l.sigma2);
    float* moments = reinterpret_cast<float*>(ws + l.moment);
    float* shift = mu2;
    kernels::for_each_index(where, BN, kernels::twisted_start_functor{p, mu, lw, corrected}, stream);
    ++report.launches;
    for (std::int64_t k = 0; k < K; ++k) {
      if (where == executor::cpu) {
        twisted_weigh_cpu(prior.storage(), p, BN, k, sigma2, x, mu, shift, lw, lz, r, work, moments);
        report.launches += 1 + p.d_y;
      } else if (k + 1 == K) {
        kernels::for_each_index_scratch<128>(
            where, BN, kernels::guided_twisted_functor<true>{p, k, sigma2, x, mu, shift, lw, lz, work, r}, stream);
      } else {
        kernels::for_each_index_scratch<128>(
            where, BN, kernels::guided_twisted_functor<false>{p, k, sigma2, x, mu, shift, lw, lz, work, r}, stream);
      }
      resample_and_record(k);
      run_mutation(where, BN, kernels::twisted_mutate_functor{p, k, mu, shift, lz, ancestors, reports, lw, x},
                   stream);
      report.launches += 4;
    }
    resample_step(K, x, mu2);
  } else if (o.potentials == guided_potentials::moment) {
    // Point k: weight by g_k (and take back the linear potential that steered the mutation into x), resample, mutate
    // from the ancestors' means (the mutation resets the weights of a resampled problem), then add the ancestors'
    // pending log Z_k - log g_k. The last transition (to s = 0) is fully adapted, as the twisted potentials' (the
    // twisted weighting with kernels::twisted_finish's linear_mutation): its mean is the particle's draw at s = 0,
    // which the deterministic mutation copies, and its pending weight 0.
    float* lz = reinterpret_cast<float*>(ws + l.lz);
    float* work = reinterpret_cast<float*>(ws + l.work);
    const auto* sigma2 = reinterpret_cast<const float*>(ws + l.sigma2);
    float* moments = reinterpret_cast<float*>(ws + l.moment);
    for (std::int64_t k = 0; k < K; ++k) {
      if (k + 1 == K && where == executor::cpu) {
        twisted_weigh_cpu(prior.storage(), p, BN, k, sigma2, x, mu, mu2, lw, lz, r, work, moments, true);
        report.launches += 1 + p.d_y;
      } else if (k + 1 == K) {
        kernels::for_each_index_scratch<128>(
            where, BN, kernels::guided_twisted_functor<true>{p, k, sigma2, x, mu, mu2, lw, lz, work, r, true}, stream);
      } else if (where == executor::cpu) {
        // Step by step as the ask/tell plan runs it: the plan answered by the mixture reproduces this run.
        moment_weigh_cpu(prior.storage(), p, BN, k, sigma2, x, mu, lw, lz, r, work, moments);
        report.launches += 1 + p.d_y;
      } else {
        kernels::for_each_index_scratch<128>(
            where, BN, kernels::guided_moment_functor{p, k, sigma2, x, mu, lw, lz, work, r}, stream);
      }
      ro.step = static_cast<std::uint64_t>(k);
      detail::resample_unchecked(lw, B, N, ro, po, where, stream, resampling_ws);
      kernels::for_each_index(where, B,
                              kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                  K + 1, k, log_n},
                              stream);
      run_mutation(where, BN, kernels::guided_mutate_functor{p, k, mu, ancestors, reports, lw, x, r}, stream);
      kernels::for_each_index(where, BN, kernels::guided_add_weight_functor{lz, ancestors, lw, N}, stream);
      report.launches += 5;
    }
    resample_step(K, x, mu2);
  } else {
  resample_step(0, x, mu2);
  if (where == executor::cpu) {
    // One fork/join of the thread pool per transition (the statistics pass of a problem of at most 2^16 particles
    // runs on the calling thread). Pass k selects each particle's ancestor, mutates it and weights it for transition
    // k + 1; the kernel means alternate between mu and mu2, as the mutation of particle i reads the mean of its
    // ancestor while the weighting writes particle i's own. Bit-identical to the launch sequence below: every value
    // comes from the same function of the same inputs. On a SIMD target the passes run on packs of particles
    // (src/cpu/guided.cpp), the weighting's denoiser from the mixture's constants at the step's channel.
    const bool packed = target != cpu::simd_target::scalar;
    cpu::guided_pass pass;
    const kernels::guided_weight_functor weight0{p, 0, x, mu, lw, r};
    if (packed) {
      pass.weight = &weight0;
      pass.weight_channel = channel_at(0);
      cpu::run_guided_pass(target, pass);
    } else {
      cpu::parallel_for_each(BN, channel_weight_functor{p, 0, x, mu, lw, r, channel_at(0)});
    }
    for (std::int64_t k = 0; k < K; ++k) {
      ro.step = static_cast<std::uint64_t>(k + 1);
      const auto select = detail::resample_statistics_cpu(lw, B, N, ro, po, resampling_ws);
      kernels::for_each_index(where, B,
                              kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                  K + 1, k + 1, log_n},
                              stream);
      const kernels::guided_mutate_functor mutate{p, k, mu, ancestors, reports, lw, x, r};
      const kernels::guided_weight_functor weight{p, k + 1, x, mu2, lw, r};
      const bool last = k + 1 == K;
      if (packed) {
        pass.select = &select;
        pass.mutate = &mutate;
        pass.weight = last ? nullptr : &weight;
        if (!last) pass.weight_channel = channel_at(k + 1);
        cpu::run_guided_pass(target, pass);
      } else {
        const channel_weight_functor scalar_weight{p, k + 1, x, mu2, lw, r, last ? kernels::channel_view{}
                                                                                  : channel_at(k + 1)};
        cpu::parallel_for_each(BN, [&](std::int64_t i) {
          select(i);
          mutate(i);
          if (!last) scalar_weight(i);
        });
      }
      std::swap(mu, mu2);
      report.launches += 3;
    }
  }
  for (std::int64_t k = 0; where == executor::cuda && k < K; ++k) {
    kernels::for_each_index_scratch<128>(where, BN, kernels::guided_weight_functor{p, k, x, mu, lw, r}, stream);
    // Resampling decision and ancestors; the mutation reads each ancestor's mean and resets the weights itself.
    ro.step = static_cast<std::uint64_t>(k + 1);
    detail::resample_unchecked(lw, B, N, ro, po, where, stream, resampling_ws);
    kernels::for_each_index(where, B,
                            kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                K + 1, k + 1, log_n},
                            stream);
    kernels::for_each_index<128>(where, BN,
                                 kernels::guided_mutate_functor{p, k, mu, ancestors, reports, lw, x, r}, stream);
    report.launches += 4;
  }
  }

  if (out.particles != nullptr) {
    kernels::for_each_index(where, BN * d, kernels::guided_copy_out_functor{x, out.particles, d, p.coordinate_stride},
                            stream);
    ++report.launches;
  }
  if (out.log_weights != nullptr) {
    kernels::for_each_index(where, BN, kernels::guided_copy_functor{lw, out.log_weights}, stream);
    ++report.launches;
  }
  if (out.samples != nullptr) {
    detail::resample_unchecked(lw, B, N, final_resampling(ro, K), po, where, stream, resampling_ws);
    const std::uint64_t key = o.seed ^ 0x5851F42D4C957F2Dull;  // the samples' order: a stream of its own
    kernels::for_each_index(where, BN * d,
                            permuted_gather_functor{x, ancestors, out.samples, N, d, key,
                                                    index_permutation(key, static_cast<std::uint64_t>(N)),
                                                    p.coordinate_stride},
                            stream);
    report.launches += 2;
    if (final_moves_run(o)) {
      // The final resample-move (kernels::final_move_functor) on the samples; x, mu and mu2 are free now.
      const double a = grid_points.back().a;
      kernels::final_move_params q = final_move_settings(l, ws, a, prior_curvature, o, K, d);
      q.channel = p.channels.at(K, float(a), 0.f);
      float* moves = reinterpret_cast<float*>(ws + l.moves);
      run_final_moves(where, BN,
                      kernels::final_move_functor{p, q, out.samples, mu, x, mu2, moves, moves + BN * d,
                                                  moves + 2 * BN * d},
                      stream);
      ++report.launches;
    }
  }
  finish_problems(where, B, log_z, reinterpret_cast<const double*>(ws + l.constants), counts, out, stream);
  ++report.launches;
  return report;
}

namespace detail {

std::int64_t reduction_factorisations() noexcept { return factorisations_made.load(std::memory_order_relaxed); }
std::int64_t reduction_checks() noexcept { return reduction_checks_made.load(std::memory_order_relaxed); }

guided_options resolved_guided_options(const gaussian_mixture& prior, const guided_problems& problems,
                                      const guided_options& options, bool distributed) {
  validate(prior.dim(), problems, options);
  return resolve_options(prior.dim(), problems, options, distributed ? resolve_route::shard : resolve_route::run);
}

particle_streams& current_particle_streams() noexcept {
  thread_local particle_streams streams;
  return streams;
}

executor check_guided_outputs(const gaussian_mixture& prior, const guided_problems& problems,
                              const guided_options& options, const guided_outputs& out, execution exec) {
  validate(prior.dim(), problems, options);
  check_smc_only_outputs(options.sampler, out);
  const std::int64_t B = problems.problems, N = options.particles, d = prior.dim(), K = options.steps;
  const std::int64_t BN = B * N;
  const bool smc = options.sampler == guided_sampler::smc;
  const executor where = check_output_buffers(out, options, B, d, exec);
  check_outputs_disjoint(out, B, BN, d, K, smc, nullptr, 0);
  return where;
}

guided_report guided_sample_streams(const gaussian_mixture& prior, const guided_problems& problems,
                                    const guided_options& options, guided_outputs outputs, execution exec,
                                    std::int64_t total, std::int64_t first) {
  DIFFSAMPLE_EXPECTS(options.sampler != guided_sampler::smc,
                     "options.sampler: smc's particles interact (resampling); run a shard with guided_smc_shard()");
  DIFFSAMPLE_EXPECTS(first >= 0 && options.particles >= 1 && total >= first + options.particles,
                     "shard: particles [" << first << ", " << first + options.particles << ") outside [0, " << total
                                          << ")");
  struct scope {  // the streams for this call only, whatever it throws
    particle_streams saved = current_particle_streams();
    ~scope() { current_particle_streams() = saved; }
  } restore;
  current_particle_streams() = particle_streams{total, first};
  return guided_sample(prior, outputs, problems, options, exec);
}

namespace {

// The exchange of a shard whose particles live in device memory (a CUDA rank): the log-weights and rows are copied to
// host buffers, the wrapped shard exchanges them with the code a CPU rank runs, and the reports and rows it returns
// are copied back, all in the stream's order. Each exchange waits for the stream (the host reads the weights). The
// buffers are sized at the first exchange of each size (no allocation per transition after it).
class staged_shard final : public guided_shard {
 public:
  staged_shard(guided_shard& inner, cudaStream_t stream) : inner_(inner), stream_(stream) {}
  std::int64_t first() const override { return inner_.first(); }
  std::int64_t local() const override { return inner_.local(); }
  void agree(std::exception_ptr error) override { inner_.agree(error); }
  bool any(bool mine) override { return inner_.any(mine); }
  void resample(const float* lw, std::int64_t problems, const resampling_options& o, particle_report* reports,
                const void* rows, std::size_t row_bytes, void* out) override {
    const std::size_t n = static_cast<std::size_t>(problems * inner_.local());
    lw_.resize(std::max(lw_.size(), n));
    reports_.resize(std::max(reports_.size(), static_cast<std::size_t>(problems)));
    download(lw_.data(), lw, n * sizeof(float));
    download(rows_for(n * row_bytes), rows, n * row_bytes);
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream_));
    inner_.resample(lw_.data(), problems, o, reports_.data(), rows_.data(), row_bytes, out_.data());
    upload(reports, reports_.data(), static_cast<std::size_t>(problems) * sizeof(particle_report));
    upload(out, out_.data(), n * row_bytes);
  }
  void fetch(const void* rows, std::int64_t problems, std::size_t row_bytes, const std::int64_t* index,
             void* out) override {
    const std::size_t n = static_cast<std::size_t>(problems * inner_.local());
    download(rows_for(n * row_bytes), rows, n * row_bytes);
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream_));
    inner_.fetch(rows_.data(), problems, row_bytes, index, out_.data());
    upload(out, out_.data(), n * row_bytes);
  }

 private:
  unsigned char* rows_for(std::size_t bytes) {
    rows_.resize(std::max(rows_.size(), bytes));
    out_.resize(rows_.size());
    return rows_.data();
  }
  void download(void* host, const void* device, std::size_t bytes) {
    if (bytes > 0) DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  }
  // From pageable memory: the copy is staged before cudaMemcpyAsync returns, so the buffer may be reused at once.
  void upload(void* device, const void* host, std::size_t bytes) {
    if (bytes > 0) DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
  }
  guided_shard& inner_;
  cudaStream_t stream_;
  std::vector<float> lw_;
  std::vector<particle_report> reports_;
  std::vector<unsigned char> rows_, out_;
};

// bytes from src to dst on the executor (device to device on CUDA, in the stream's order).
void copy_on(executor where, void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  if (where == executor::cuda)
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  else
    std::memcpy(dst, src, bytes);
}

// rows rows of width bytes from src (one every src_pitch bytes) to dst (one every dst_pitch bytes) on the executor
// (one cudaMemcpy2DAsync on CUDA, in the stream's order).
void copy_rows(executor where, void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
               std::size_t width, std::int64_t rows, cudaStream_t stream) {
  if (rows <= 0 || width == 0) return;
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, static_cast<std::size_t>(rows),
                                          cudaMemcpyDefault, stream));
    return;
  }
  for (std::int64_t i = 0; i < rows; ++i)
    std::memcpy(static_cast<unsigned char*>(dst) + i * dst_pitch, static_cast<const unsigned char*>(src) + i * src_pitch,
                width);
}

// One field of the rows a shard's resampling moves: `floats` floats per particle, B x local rows (row-major, on the
// executor) at `from` before the exchange, in the particles' pre-resampling order, and at `to` after it, each slot
// holding its ancestor's. A field kept in two halves (the multistep kernel's denoiser outputs, half k & 1 of
// multistep_m) lies `alternate` floats further at odd k; one without `every_step` travels only when a weighting k + 1
// reads it (k + 1 < K); an `own` field's destination is rows of the row table's storage.
struct row_field {
  const float* from = nullptr;
  float* to = nullptr;
  std::int64_t floats = 0;
  std::int64_t alternate = 0;
  bool every_step = true;
  bool own = false;
  bool travels(std::int64_t k, std::int64_t K) const { return every_step || k + 1 < K; }
  const float* source(std::int64_t k) const { return from + (k & 1) * alternate; }
  float* destination(std::int64_t k) const { return to + (k & 1) * alternate; }
  std::size_t bytes() const { return static_cast<std::size_t>(floats) * sizeof(float); }
};

// The rows of a distributed filter's resamplings, described once from the run's options (exchanged_fields) and moved
// by exchange(). Its storage (storage_floats(), on the executor, allocated before the shards agree) holds, when the
// table has more than one field, the packed rows before and after the exchange (the widest row), then the `own`
// fields' destinations; a table of one field with its destination needs none.
class row_table {
 public:
  /// Floats of storage for `rows` rows of @p fields (their floats and `own` flags; the pointers are not read).
  static std::int64_t storage_floats(const std::vector<row_field>& fields, std::int64_t rows) {
    std::int64_t width = 0, own = 0;
    for (const row_field& f : fields) {
      width += f.floats;
      if (f.own) own += f.floats;
    }
    return rows * ((fields.size() > 1 ? 2 * width : 0) + own);
  }
  /// The fields bound to their rows (B x local = `rows` each); `storage` holds storage_floats(fields, rows).
  row_table(std::vector<row_field> fields, std::int64_t rows, float* storage, executor where, cudaStream_t stream)
      : fields_(std::move(fields)), rows_(rows), where_(where), stream_(stream) {
    std::int64_t width = 0;
    for (const row_field& f : fields_) width += f.floats;
    float* next = storage;
    if (fields_.size() > 1) {
      packed_ = next;
      moved_ = packed_ + rows * width;
      next = moved_ + rows * width;
    }
    for (row_field& f : fields_)
      if (f.own) {
        f.to = next;
        next += rows * f.floats;
      }
  }
  /// The destination of the field whose rows are at @p from before the exchange (at even k).
  float* to_of(const float* from) const {
    for (const row_field& f : fields_)
      if (f.from == from) return f.to;
    return nullptr;
  }
  /// The resampling after weighting k of K (column o.step) through @p shard, moving the fields that travel then.
  /// One field is the resampling's rows itself, from its rows to its destination (no copy); more are packed, field
  /// after field, into rows of their summed width, exchanged, and unpacked into their destinations: one copy in and
  /// one out per field on the executor (one cudaMemcpy2DAsync each on CUDA), as the resampling moves contiguous rows.
  /// Every field is packed before any is unpacked (a destination may be another field's source).
  void exchange(guided_shard& shard, const float* lw, std::int64_t problems, const resampling_options& o,
                particle_report* reports, std::int64_t k, std::int64_t K) const {
    std::size_t wide = 0, travelling = 0;
    const row_field* only = nullptr;
    for (const row_field& f : fields_)
      if (f.travels(k, K)) {
        wide += f.bytes();
        ++travelling;
        only = &f;
      }
    if (travelling == 1) {
      shard.resample(lw, problems, o, reports, only->source(k), wide, only->destination(k));
      return;
    }
    std::int64_t at = 0;  // floats into the row
    for (const row_field& f : fields_)
      if (f.travels(k, K)) {
        copy_rows(where_, packed_ + at, wide, f.source(k), f.bytes(), f.bytes(), rows_, stream_);
        at += f.floats;
      }
    shard.resample(lw, problems, o, reports, packed_, wide, moved_);
    at = 0;
    for (const row_field& f : fields_)
      if (f.travels(k, K)) {
        copy_rows(where_, f.destination(k), f.bytes(), moved_ + at, wide, f.bytes(), rows_, stream_);
        at += f.floats;
      }
  }

 private:
  std::vector<row_field> fields_;
  std::int64_t rows_ = 0;
  executor where_ = executor::cpu;
  cudaStream_t stream_ = nullptr;
  float* packed_ = nullptr;
  float* moved_ = nullptr;
};

// The fields a shard's resampling after each weighting carries, in row order: the kernel mean (d floats; the
// proposal's mean with twisted potentials) from `mean` into `after`; with twisted potentials the proposal's shift h
// (d, from `shift`, own); with moment or twisted potentials the pending weight (1, from `pending`, own); with the
// multistep kernel the particle's denoiser output of the weighting (d, in place in half k & 1 of `kept`, halves `half`
// floats apart; not after the last weighting), which then lives in its descendants' slots. Rows of 4 d bytes
// (linear), 4 (d + 1) (moment) and 4 (2 d + 1) (twisted), 4 d more with the multistep kernel.
std::vector<row_field> exchanged_fields(const guided_options& o, std::int64_t d, const float* mean, float* after,
                                        const float* shift, const float* pending, float* kept, std::int64_t half) {
  std::vector<row_field> fields{{mean, after, d}};
  if (o.potentials == guided_potentials::twisted) fields.push_back({shift, nullptr, d, 0, true, true});
  if (o.potentials == guided_potentials::twisted || o.potentials == guided_potentials::moment)
    fields.push_back({pending, nullptr, 1, 0, true, true});
  if (o.multistep_kernel) fields.push_back({kept, kept, d, half, false, false});
  return fields;
}

}  // namespace

guided_report guided_smc_shard(const gaussian_mixture& prior, const guided_problems& given,
                               const guided_options& options, guided_outputs out, execution exec,
                               guided_shard& shard) {
  // Everything that can fail runs before agree(), so that a failure on one shard throws on all of them.
  std::exception_ptr failure;
  executor where = executor::cpu;
  const std::int64_t first = shard.first(), local = shard.local(), N = options.particles;
  svd_reduction reduced;
  layout l{};
  std::vector<unsigned char> blob;
  float initial_scale = 1.f;
  std::unique_ptr<detail::scratch> owned;
  std::unique_ptr<detail::scratch> row_storage;
  std::vector<std::int64_t> order;
  std::vector<schedule_point> grid_points;  // the grid's points and the final moves' lambda_0, from build_tables
  double prior_curvature = 0;
  guided_options o = options;
  try {
    validate(prior.dim(), given, options);
    o = detail::resolve_options(prior.dim(), given, options, detail::resolve_route::shard);
    DIFFSAMPLE_EXPECTS(o.sampler == guided_sampler::smc,
                       "options.sampler: a distributed run supports smc only, got " << to_string(o.sampler));
    DIFFSAMPLE_EXPECTS(first >= 0 && local >= 0 && first + local <= N,
                       "shard: particles [" << first << ", " << first + local << ") outside [0, " << N << ")");
    const void* probe = out.particles != nullptr ? static_cast<const void*>(out.particles)
                        : out.samples != nullptr ? static_cast<const void*>(out.samples)
                        : out.log_normaliser != nullptr ? static_cast<const void*>(out.log_normaliser)
                                                        : static_cast<const void*>(out.log_weights);
    where = detail::resolve_executor(exec.kind, probe);
    // Before anything is issued (agreed on below with every other failure, so that every rank throws it): a
    // distributed run copies tables it builds for this call alone (upload_async, below) and waits for exec.stream at
    // every exchange of particles, neither of which a capture can record.
    detail::refuse_distributed_capture(where, exec,
                                       "mpi::guided_sample() copies tables it builds on the host for this call alone "
                                       "and synchronises exec.stream at every exchange of particles");
    const std::int64_t B = given.problems, d = prior.dim(), BL = B * local;
    if (out.particles != nullptr) detail::check_buffer("outputs.particles", out.particles, BL * d, sizeof(float), where);
    if (out.samples != nullptr) detail::check_buffer("outputs.samples", out.samples, BL * d, sizeof(float), where);
    if (out.log_weights != nullptr) detail::check_buffer("outputs.log_weights", out.log_weights, BL, sizeof(float), where);
    if (out.log_normaliser != nullptr) detail::check_buffer("outputs.log_normaliser", out.log_normaliser, B, sizeof(double), where);
    if (out.ess_trace != nullptr) detail::check_buffer("outputs.ess_trace", out.ess_trace, B * (o.steps + 1), sizeof(float), where);
    if (out.resample_count != nullptr) detail::check_buffer("outputs.resample_count", out.resample_count, B, sizeof(std::int32_t), where);
    DIFFSAMPLE_EXPECTS(out.samples == nullptr || o.final_resample,
                       "outputs.samples: given but options.final_resample is false");
    detail::check_outputs_disjoint(out, B, BL, d, o.steps, true, nullptr, 0);
    reduced = reduce_svd(given, prior.dim(), o.sampler);
    const guided_problems& pr = reduced.active ? reduced.problems : given;
    guided_options lo = o;
    lo.particles = std::max<std::int64_t>(local, 1);  // the shard's buffers
    // A CUDA rank's weighting reads the mixture's constants at every step's channel from a device table (as
    // guided_sample() on CUDA); the CPU executor's shard fills one channel per step on the host.
    const kernels::mixture_view<float> shape = prior.storage().view(executor::cpu);
    l = make_layout(prior.dim(), pr, lo, where == executor::cuda ? &shape : nullptr);
    blob = build_tables(prior.dim(), prior.variances(), pr, o, l, &initial_scale, reduced, &grid_points,
                        &prior_curvature);
    detail::check_allocation("guided workspace", l.total, where, exec.stream);
    owned = std::make_unique<detail::scratch>(l.total, where, exec.stream);
    // The storage of the rows the resamplings between two transitions exchange (the row table's, below).
    const std::int64_t row_floats = row_table::storage_floats(
        exchanged_fields(o, d, nullptr, nullptr, nullptr, nullptr, nullptr, 0), BL);
    if (row_floats > 0) {
      const std::size_t floats = static_cast<std::size_t>(row_floats);
      detail::check_allocation("distributed exchanged rows", floats * sizeof(float), where, exec.stream);
      row_storage = std::make_unique<detail::scratch>(floats * sizeof(float), where, exec.stream);
    }
    // Row first + i of problem b of guided_sample()'s samples is slot perm_b(first + i) of the final resampling. The
    // final resampling and gather are collective: this shard takes part whenever any shard asks for samples (below),
    // whether or not it passed outputs.samples itself (a shard without particles may pass none).
    if (o.final_resample) {
      const std::uint64_t key = o.seed ^ 0x5851F42D4C957F2Dull;
      order.resize(static_cast<std::size_t>(BL));
      for (std::int64_t b = 0; b < B; ++b) {
        index_permutation pb(key, static_cast<std::uint64_t>(N));
        pb.key = key + 0xD1B54A32D192ED03ull * static_cast<std::uint64_t>(b);
        for (std::int64_t i = 0; i < local; ++i)
          order[b * local + i] = static_cast<std::int64_t>(pb(static_cast<std::uint64_t>(first + i)));
      }
    }
  } catch (...) {
    failure = std::current_exception();
  }
  shard.agree(failure);
  const bool samples_anywhere = shard.any(out.samples != nullptr);

  const guided_problems& pr = reduced.active ? reduced.problems : given;
  const std::int64_t B = pr.problems, d = prior.dim(), dy = pr.d_y, K = o.steps, BL = B * local;
  unsigned char* ws = static_cast<unsigned char*>(owned->data());
  const cudaStream_t stream = exec.stream;
  if (where == executor::cuda)
    detail::upload_async(ws, blob.data(), blob.size(), stream);  // pinned staging, as guided_sample()'s tables
  else
    std::memcpy(ws, blob.data(), blob.size());
  kernels::guided_params p = bind_tables(l, ws, prior.storage().view(where), B, std::max<std::int64_t>(local, 1), d,
                                         dy, o.seed, initial_scale);
  p.stream_skip = N - p.particles;
  p.stream_first = first;
  // A CUDA rank: the particles stay row-major (each exchanged row contiguous), the same functors as guided_sample()'s
  // CUDA run read them through the stride, and every exchange goes through the host (staged_shard).
  std::unique_ptr<staged_shard> staged;
  // The final moves' channel, the grid's last point (a_K, 0): channel K of the run's table, as guided_sample().
  kernels::guided_channels channel_set{p.steps};
  if (final_moves_run(o)) {
    channel_set.last = K;
    channel_set.last_a = float(grid_points.back().a);
  }
  if (where == executor::cuda) {
    p.channels = kernels::mixture_channels::in(p.mix, l.channel_count, reinterpret_cast<float*>(ws + l.channels));
    kernels::for_each_index(where, l.channel_count * p.mix.components,
                            kernels::channel_table_functor<kernels::guided_channels>{p.channels, channel_set}, stream);
    staged = std::make_unique<staged_shard>(shard, stream);
  }
  guided_shard& exchange = staged ? static_cast<guided_shard&>(*staged) : shard;

  float* x = reinterpret_cast<float*>(ws + l.x);
  float* mu = reinterpret_cast<float*>(ws + l.mu);
  float* mu2 = reinterpret_cast<float*>(ws + l.mu2);
  float* r = reinterpret_cast<float*>(ws + l.r);
  float* lw = reinterpret_cast<float*>(ws + l.lw);
  auto* ancestors = reinterpret_cast<std::int32_t*>(ws + l.ancestors);
  auto* reports = reinterpret_cast<particle_report*>(ws + l.reports);
  auto* log_z = reinterpret_cast<double*>(ws + l.log_z);
  auto* previous_lse = reinterpret_cast<double*>(ws + l.previous_lse);
  auto* counts = reinterpret_cast<std::int32_t*>(ws + l.counts);
  const double log_n = std::log(double(N));
  const std::size_t row = static_cast<std::size_t>(d) * sizeof(float);
  guided_report report;
  report.ran = where;
  report_resolved(report, o);
  if (out.samples == nullptr) report.final_moves = 0;  // the moves act on this shard's rows of the samples only

  // The rows arrive in slot order, so every slot's ancestor is its own row of the exchanged buffer.
  std::vector<std::int32_t> slots(static_cast<std::size_t>(BL));
  for (std::int64_t i = 0; i < BL; ++i) slots[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % local);
  copy_on(where, ancestors, slots.data(), slots.size() * sizeof(std::int32_t), stream);  // H2D on CUDA
  // The multistep kernel: weighting k keeps each particle's denoiser output in half k & 1 of multistep_m (row i,
  // particle i's); the resampling after it carries that row with the particle's other rows to the slots of its
  // descendants, on whichever shard they live, back into half k & 1, so that weighting k + 1 finds its ancestor's
  // m_k at its own slot (p.ancestors: the identity above), as guided_sample() finds it through the ancestors.
  const bool multistep = o.multistep_kernel;
  if (multistep) {
    p.multistep = reinterpret_cast<const float*>(ws + l.multistep);
    p.multistep_m = reinterpret_cast<float*>(ws + l.multistep_m);
    p.ancestors = ancestors;
  }
  resampling_options ro = o.resampling;
  ro.seed = o.seed ^ 0x9E3779B97F4A7C15ull;  // as guided_sample()

  kernels::for_each_index(where, B, kernels::guided_problem_init_functor{log_z, previous_lse, counts, log_n}, stream);
  const bool corrected = o.start_correction;
  if (where == executor::cuda)
    kernels::for_each_index<128>(where, BL, kernels::guided_init_functor{p, x, lw, r, corrected, mu, mu2}, stream);
  else
    cpu::parallel_for_each(BL, kernels::guided_init_functor{p, x, lw, r});
  if (corrected) {
    // The start correction of each particle held here, as guided_sample() computes it on the same executor (on the
    // CPU executor in the plan's stages around evaluate(), fused into the draw on CUDA); then the log-normaliser's
    // first normalisation, the logsumexp of the log-ratios over all N. guided_sample() computes it as a running
    // logsumexp over the particles in order, whose rounding depends on that order: its state (B maxima, then B
    // sums) goes through the shards in order (shard.in_order), each continuing it over its particles, so the result
    // is one process's bit for bit on the same executor. On the executor, the state sits in previous_lse (maxima)
    // and log_z (sums, 0 again once finished, as guided_problem_init_functor left it).
    if (where == executor::cpu) start_correction_cpu(prior.storage(), p, BL, x, lw, r, mu, mu2);
    std::vector<double> state(static_cast<std::size_t>(2 * B), 0.0);
    std::fill_n(state.begin(), B, -INFINITY);
    const std::size_t half = static_cast<std::size_t>(B) * sizeof(double);
    shard.in_order(state.data(), state.size() * sizeof(double), [&] {
      if (local == 0) return;
      copy_on(where, previous_lse, state.data(), half, stream);  // staged before it returns
      copy_on(where, log_z, state.data() + B, half, stream);
      kernels::for_each_index(where, B, kernels::guided_start_lse_functor{p, mu, previous_lse, log_z}, stream);
      copy_on(where, state.data(), previous_lse, half, stream);
      copy_on(where, state.data() + B, log_z, half, stream);
      if (where == executor::cuda) DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream));
    });
    copy_on(where, previous_lse, state.data(), half, stream);
    copy_on(where, log_z, state.data() + B, half, stream);
    kernels::for_each_index(where, B, kernels::guided_start_lse_finish_functor{previous_lse, log_z}, stream);
    report.launches += where == executor::cpu ? 4 + 2 * kernels::start_correction_nodes : 4;
  }
  // On a SIMD target the weighting and the mutation run on packs of particles as in guided_sample(), whose lanes
  // draw the particles' own streams: the shards' particles stay those of one process bit for bit.
  const cpu::simd_target target =
      BL > 0 && where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  std::vector<float> channel_table;
  kernels::mixture_channels channels{};
  if (BL > 0 && where == executor::cpu) {
    channel_table.resize(static_cast<std::size_t>(kernels::mixture_channels::table_floats(p.mix, 1)));
    channels = kernels::mixture_channels::in(p.mix, 1, channel_table.data());
  }
  // The resamplings of the particles themselves (the last column's of the moment and twisted potentials, the first
  // column's of the linear ones, the final one): one field, the rows of x into mu2.
  const auto resample_particles = [&](const resampling_options& with) {
    row_table({{x, mu2, d}}, BL, nullptr, where, stream).exchange(exchange, lw, B, with, reports, 0, K);
  };
  // Resampling at column c of the ESS trace with the particles' rows following their ancestors, as guided_sample()'s
  // resample_step.
  auto resample_step = [&](std::int64_t column) {
    ro.step = static_cast<std::uint64_t>(column);
    resample_particles(ro);
    std::swap(x, mu2);
    kernels::for_each_index(where, B,
                            kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                K + 1, column, log_n},
                            stream);
    kernels::for_each_index(where, BL, kernels::guided_reset_weights_functor{reports, lw, p.particles}, stream);
    report.launches += 3;
  };
  const auto mutate_pass = [&](const kernels::guided_mutate_functor& mutate) {
    if (where == executor::cuda) {
      kernels::for_each_index<128>(where, BL, mutate, stream);
    } else if (target != cpu::simd_target::scalar) {
      cpu::guided_pass pass;
      pass.mutate = &mutate;
      cpu::run_guided_pass(target, pass);
    } else {
      cpu::parallel_for_each(BL, mutate);
    }
  };
  const bool pending = o.potentials == guided_potentials::moment || o.potentials == guided_potentials::twisted;
  // Linear potentials resample the starting particles first (column 0): x and mu2 trade buffers.
  if (!pending) resample_step(0);
  // The rows exchanged after each weighting, bound once to the buffers the loops below use: the kernel mean into mu2,
  // the twisted potentials' shift (computed into mu2, free until the exchange), the pending weight lz, the multistep
  // kernel's kept denoiser outputs in place.
  const row_table rows(exchanged_fields(o, d, mu, mu2, mu2, pending ? reinterpret_cast<float*>(ws + l.lz) : nullptr,
                                        p.multistep_m, p.problems * p.particles * d),
                       BL, row_storage ? static_cast<float*>(row_storage->data()) : nullptr, where, stream);
  if (o.potentials == guided_potentials::twisted) {
    // guided_sample()'s twisted loop: weight by g_k and compute the proposals, resample, draw every particle from
    // its ancestor's proposal; the exchanged row carries the ancestor's proposal mean, its shift h (d floats each)
    // and its pending weight lz. After the last transition (fully adapted) the resampling of column K.
    float* lz = reinterpret_cast<float*>(ws + l.lz);
    float* work = reinterpret_cast<float*>(ws + l.work);
    const auto* sigma2 = reinterpret_cast<const float*>(ws + l.sigma2);
    float* moments = reinterpret_cast<float*>(ws + l.moment);
    float* shift = mu2;  // guided_sample()'s: free until the rows are exchanged
    // The ancestors' shifts and pending weights, after each exchange (the table's; their means into mu2).
    const float* moved_shift = rows.to_of(shift);
    const float* moved_lz = rows.to_of(lz);
    kernels::for_each_index(where, BL, kernels::twisted_start_functor{p, mu, lw, corrected}, stream);
    ++report.launches;
    for (std::int64_t k = 0; k < K; ++k) {
      if (where == executor::cuda && k + 1 == K)
        kernels::for_each_index_scratch<128>(
            where, BL, kernels::guided_twisted_functor<true>{p, k, sigma2, x, mu, shift, lw, lz, work, r}, stream);
      else if (where == executor::cuda)
        kernels::for_each_index_scratch<128>(
            where, BL, kernels::guided_twisted_functor<false>{p, k, sigma2, x, mu, shift, lw, lz, work, r}, stream);
      else
        twisted_weigh_cpu(prior.storage(), p, BL, k, sigma2, x, mu, shift, lw, lz, r, work, moments);
      ro.step = static_cast<std::uint64_t>(k);
      rows.exchange(exchange, lw, B, ro, reports, k, K);
      kernels::for_each_index(where, B,
                              kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                  K + 1, k, log_n},
                              stream);
      run_mutation(
          where, BL, kernels::twisted_mutate_functor{p, k, mu2, moved_shift, moved_lz, ancestors, reports, lw, x},
          stream);
      report.launches += 4;
    }
    resample_step(K);
  } else if (o.potentials == guided_potentials::moment) {
    // guided_sample()'s moment loop: weight by g_k, resample, mutate from the ancestors' means, add the ancestors'
    // pending log Z_k - log g_k. The exchanged row carries both: the ancestor's mean (d floats) and its lz.
    float* lz = reinterpret_cast<float*>(ws + l.lz);
    float* work = reinterpret_cast<float*>(ws + l.work);
    const auto* sigma2 = reinterpret_cast<const float*>(ws + l.sigma2);
    const float* moved_lz = rows.to_of(lz);  // the ancestors' pending weights, after each exchange
    float* moments = reinterpret_cast<float*>(ws + l.moment);
    for (std::int64_t k = 0; k < K; ++k) {
      // The last transition fully adapted, as guided_sample()'s (its h into mu2, which the exchange overwrites).
      if (where == executor::cuda && k + 1 == K)
        kernels::for_each_index_scratch<128>(
            where, BL, kernels::guided_twisted_functor<true>{p, k, sigma2, x, mu, mu2, lw, lz, work, r, true}, stream);
      else if (where == executor::cuda)
        kernels::for_each_index_scratch<128>(
            where, BL, kernels::guided_moment_functor{p, k, sigma2, x, mu, lw, lz, work, r}, stream);
      else if (k + 1 == K)
        twisted_weigh_cpu(prior.storage(), p, BL, k, sigma2, x, mu, mu2, lw, lz, r, work, moments, true);
      else
        moment_weigh_cpu(prior.storage(), p, BL, k, sigma2, x, mu, lw, lz, r, work, moments);
      ro.step = static_cast<std::uint64_t>(k);
      rows.exchange(exchange, lw, B, ro, reports, k, K);
      kernels::for_each_index(where, B,
                              kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                  K + 1, k, log_n},
                              stream);
      mutate_pass(kernels::guided_mutate_functor{p, k, mu2, ancestors, reports, lw, x, r});
      kernels::for_each_index(where, BL, kernels::guided_add_weight_functor{moved_lz, ancestors, lw, p.particles},
                              stream);
      report.launches += 5;
    }
    resample_step(K);
  } else {
    for (std::int64_t k = 0; k < K; ++k) {
      const kernels::guided_weight_functor weight{p, k, x, mu, lw, r};
      if (where == executor::cuda) {
        kernels::for_each_index_scratch<128>(where, BL, weight, stream);
      } else if (target != cpu::simd_target::scalar) {
        cpu::guided_pass pass;
        pass.weight = &weight;
        pass.weight_channel = fill_step_channel(channels, p.steps[k]);
        cpu::run_guided_pass(target, pass);
      } else {
        cpu::parallel_for_each(BL, channel_weight_functor{p, k, x, mu, lw, r, fill_step_channel(channels, p.steps[k])});
      }
      ro.step = static_cast<std::uint64_t>(k + 1);
      rows.exchange(exchange, lw, B, ro, reports, k, K);
      kernels::for_each_index(where, B,
                              kernels::guided_bookkeeping_functor{reports, log_z, previous_lse, out.ess_trace, counts,
                                                                  K + 1, k + 1, log_n},
                              stream);
      mutate_pass(kernels::guided_mutate_functor{p, k, mu2, ancestors, reports, lw, x, r});
      report.launches += 4;
    }
  }
  if (out.particles != nullptr) copy_on(where, out.particles, x, static_cast<std::size_t>(BL) * row, stream);
  if (out.log_weights != nullptr)
    copy_on(where, out.log_weights, lw, static_cast<std::size_t>(BL) * sizeof(float), stream);
  if (samples_anywhere) {
    resample_particles(final_resampling(ro, K));
    // A shard that asked for no samples gathers its rows into x (its particles, already copied out in the stream's
    // order, are not read again).
    exchange.fetch(mu2, B, row, order.data(), out.samples != nullptr ? out.samples : x);
    report.launches += 2;
    if (final_moves_run(o) && out.samples != nullptr && BL > 0) {
      // The final resample-move on this shard's rows first .. first + local of every problem's samples: each row
      // moves on its own (kernels::final_move_functor, guided_sample()'s call), drawing from its particle's stream
      // (guided_stream: the shard's offset), so the rows are one process's bit for bit. x, mu and mu2 are free now.
      const double a = grid_points.back().a;
      kernels::final_move_params q = final_move_settings(l, ws, a, prior_curvature, o, K, d);
      // The CPU executor's shard has no channel table (its weighting fills one channel per step): the last point's
      // channel gets a table of its own, filled by the same functor with the same values.
      std::vector<float> last_channel;
      if (where == executor::cuda) {
        q.channel = p.channels.at(K, float(a), 0.f);
      } else {
        last_channel.resize(static_cast<std::size_t>(kernels::mixture_channels::table_floats(p.mix, 1)));
        kernels::mixture_channels one = kernels::mixture_channels::in(p.mix, 1, last_channel.data());
        // guided_sample()'s table of channel_count(o) channels carries the scaled means only within its limit.
        if (!kernels::mixture_channels::with_scaled_means(p.mix, channel_count(o))) one.scaled_means = nullptr;
        kernels::guided_channels at_last{nullptr, 0, float(a)};
        kernels::for_each_index(where, p.mix.components,
                                kernels::channel_table_functor<kernels::guided_channels>{one, at_last}, stream);
        q.channel = one.at(0, float(a), 0.f);
      }
      float* moves = reinterpret_cast<float*>(ws + l.moves);
      run_final_moves(where, BL,
                      kernels::final_move_functor{p, q, out.samples, mu, x, mu2, moves, moves + BL * d,
                                                  moves + 2 * BL * d},
                      stream);
      ++report.launches;
    }
  }
  finish_problems(where, B, log_z, reinterpret_cast<const double*>(ws + l.constants), counts, out, stream);
  ++report.launches;
  return report;
}

}  // namespace detail

// --- ask/tell plans of DPS, Pi-GDM and DiffPIR ---------------------------------------------------------------------

namespace detail {
namespace {

// DPS and Pi-GDM: two asks per step k: 2k the model's output at the particles (turned into the denoiser), 2k + 1
// J^T v there; the tells are baseline_stage_functor's stages 1 and 2, as the CPU executor's fused run issues them,
// with stage 1 as matrix products over all particles (baseline_guidance_gemm) where guided_sample() takes them for
// the same options (baseline_products()): the same operator path, so the same arithmetic.
// DiffPIR: one ask per step k, the model's output at the particles; the tell is diffpir_stage_functor's stage 1
// (the data step and the re-noising), as the CPU executor's fused run issues it.
struct guided_plan_storage final : workspace_plan_storage {
  bool diffpir = false;
  bool gemm = false;  // DPS / Pi-GDM: the guidance half-step as products (baseline_products()), as guided_sample()
  std::int64_t asks_per_step = 2;
  kernels::guided_params p{};
  kernels::baseline_settings g{};
  float *m = nullptr, *v = nullptr, *answer = nullptr, *shift = nullptr, *r = nullptr;
  void* products = nullptr;  // gemm: baseline_guidance_gemm_bytes(rows, d_y, where), 256-byte aligned
  mixture_path operator_path() const override { return gemm ? mixture_path::gemm : mixture_path::direct; }
  plan_request request(std::int64_t k) const override {
    const std::size_t t = static_cast<std::size_t>(k / asks_per_step);
    const bool jvp = k % asks_per_step == 1;
    return ask(k, x, steps.channels[t], steps.times[t], jvp ? model_output::denoiser : output, answer,
               jvp ? v : nullptr);
  }
  float ux(std::int64_t k) const { return steps.ux[static_cast<std::size_t>(k)]; }
  float um(std::int64_t k) const { return steps.um[static_cast<std::size_t>(k)]; }
  kernels::baseline_stage_functor stage(int which, std::int64_t k, std::int64_t next) const {
    return {p,      g,      k, which, which == 1 ? ux(k) : 0.f, which == 1 ? um(k) : 1.f, x, m, v, answer, shift, r,
            &state->chain_base, &state->step, next};
  }
  /// One stage over the rows: on packs of particles on the CPU executor's SIMD targets, as guided_sample() runs it.
  void run_stage(const kernels::baseline_stage_functor& f, cudaStream_t stream) const {
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)
      cpu::run_baseline_stage(target, f);
    else
      kernels::for_each_index(where, rows, f, stream);
  }
  kernels::diffpir_stage_functor diffpir_stage(int which, std::int64_t k, std::int64_t next) const {
    return {p, k, which, which == 1 ? ux(k) : 0.f, which == 1 ? um(k) : 1.f, x, m, answer, r, &state->chain_base,
            &state->step, next};
  }
  void tell(std::int64_t k, cudaStream_t stream) override {
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (diffpir && target != cpu::simd_target::scalar)
      cpu::run_diffpir_tell(target, diffpir_stage(1, k, k + 1));  // on packs, as guided_sample()'s fused run
    else if (diffpir)
      kernels::for_each_index(where, rows, diffpir_stage(1, k, k + 1), stream);
    else if (gemm && k % 2 == 0)
      guidance_products(k / 2, stream);
    else
      run_stage(stage(1 + int(k % 2), k / 2, k + 1), stream);
  }
  /// Stage 1 of step k as guided_sample() runs it on the products path: A m, P r and A^T u over all particles (the
  /// CUDA executor's through cuBLAS, particles row-major as here), then the position, which the stage functor's
  /// thread 0 stores on the other path (tell k = 2 k_step is told at position k: one past it).
  void guidance_products(std::int64_t k, cudaStream_t stream) const {
    if (where == executor::cuda)
      baseline_guidance_gemm_cuda(p, g, k, ux(k), um(k), x, m, answer, v, shift, r, rows, products, stream);
    else
      baseline_guidance_gemm(p, g, k, ux(k), um(k), x, m, answer, v, shift, r, rows, products);
    kernels::for_each_index<32>(where, 1, kernels::plan_advance_functor{state}, stream);
  }
  void reset(const float* initial, cudaStream_t stream) override {
    if (start(initial, stream)) return;
    if (diffpir)
      kernels::for_each_index(where, rows, diffpir_stage(0, 0, 0), stream);
    else
      run_stage(stage(0, 0, 0), stream);
  }
};

using kernels::smc_plan_keys;
using kernels::smc_reset_functor;
using kernels::twisted_tell_functor;

// The guided SMC as a plan. Linear potentials: one ask per transition k, the model's output at the particles and
// step k's channel; tell k weights from it (guided_weight_answer_functor), resamples and mutates into the
// particles, as guided_sample()'s transition does on the same executor (on the CPU the same resampling statistics
// and, on a SIMD target, the same packed mutation), so that answered by the mixture's denoiser it reproduces
// guided_sample() bit for bit. reset() draws the particles, weights them by g_0 and resamples column 0. Moment
// potentials: 1 + d_y asks per transition (tell_moment); twisted potentials: the same asks, each J^T a_o answered
// into its own buffer (the gradient needs every row's), told as guided_sample()'s CPU run (tell_twisted).
struct smc_plan_storage final : workspace_plan_storage {
  kernels::guided_params p{};    // p.seed_at: keys->mutation
  std::uint64_t seed = 0;        // options.seed: trajectory t runs with guided_run_seed(seed, t) (keys advanced on the device)
  std::int64_t B = 0, N = 0, K = 0;
  bool final_resample = true;
  // Moment-projected potentials: 1 + d_y asks per transition (the model's output, then J^T a_o for every row a_o
  // of the particle's A), the weighting by kernels::moment_stage_functor as guided_sample()'s CPU run issues it.
  bool moment = false;
  // Twisted potentials (moment is set too): the d_y answers J^T a_o of a transition in d_y planes of rows x d at
  // u (ask 1 + o answers into plane o), the proposal shifts h at shift (the gather's spare rows, free until the
  // last resampling).
  bool twisted = false;
  std::int64_t asks_per_step = 1;
  // options.start_correction: the first start_asks asks (kernels::start_correction_nodes, else none) are the model's
  // output at u_n x (the points at `spare`) and the first grid point's channel; the transitions' asks follow.
  std::int64_t start_asks = 0;
  float *m = nullptr, *v = nullptr, *moments = nullptr, *lz = nullptr, *u = nullptr, *shift = nullptr;
  const float* sigma2 = nullptr;
  resampling_options ro;
  particle_outputs po;
  float *mu = nullptr, *spare = nullptr, *lw = nullptr, *r = nullptr, *answer = nullptr;
  float* ess = nullptr;  // B x (K + 1)
  std::int32_t *ancestors = nullptr, *counts = nullptr;
  particle_report* reports = nullptr;
  double *log_z = nullptr, *previous_lse = nullptr;
  const double* constants = nullptr;
  void* resampling_ws = nullptr;
  smc_plan_keys* keys = nullptr;
  // options.final_moves > 0: after the transitions' asks, the final resampling's samples (moves.x, permuted as
  // write_outputs() gathers them) run the moves of guided_sample() stage by stage (kernels::final_move_stage_functor),
  // 1 + 2 final_moves asks: at the samples, then per move at the proposal x' and at the midpoint of the test's
  // Simpson rule. A model answering scores is asked for the prior's score at (a_K, 0); any other at the last
  // transition's channel, at the points move_scale v (move_points), its answers turned into the score of the prior
  // smoothed to that channel's noise (move_cx v + move_cr r).
  std::int64_t final_moves = 0, moves_begin = 0;
  kernels::final_move_functor moves{};
  kernels::final_move_scalars* move_scalars = nullptr;
  channel moves_at{};
  double moves_time = 0;
  float* move_points = nullptr;
  float move_scale = 1.f, move_cx = 0.f, move_cr = 1.f;
  double log_n() const { return std::log(double(N)); }
  plan_request request(std::int64_t k) const override {
    if (final_moves > 0 && k >= moves_begin) {
      const std::int64_t j = k - moves_begin;
      const float* points = move_points != nullptr ? move_points : j == 0 ? moves.x : j % 2 == 1 ? moves.xp : moves.n;
      float* into = j == 0 ? moves.g : j % 2 == 1 ? moves.gp : moves.gm;
      return ask(k, points, moves_at, moves_time, move_points != nullptr ? output : model_output::score, into);
    }
    if (k < start_asks) return ask(k, spare, steps.channels[0], steps.times[0], output, answer);
    const std::size_t t = static_cast<std::size_t>((k - start_asks) / asks_per_step);
    const std::int64_t j = (k - start_asks) % asks_per_step;
    const bool jvp = j != 0;
    // Twisted potentials, and the moment potentials' last transition (fully adapted), keep every row's J^T a_o.
    const bool planes = twisted || (moment && static_cast<std::int64_t>(t) + 1 == K);
    float* into = planes && jvp ? u + (j - 1) * rows * d : answer;
    return ask(k, x, steps.channels[t], steps.times[t], jvp ? model_output::denoiser : output, into,
               jvp ? v : nullptr);
  }
  float ux(std::int64_t t) const { return steps.ux[static_cast<std::size_t>(t)]; }
  float um(std::int64_t t) const { return steps.um[static_cast<std::size_t>(t)]; }
  // Moment potentials: the tell of the transitions' ask k (position `next` - 1 of the trajectory); the last ask of
  // transition t also resamples (column t), mutates from the ancestors' means and adds their pending weights, as
  // guided_sample()'s moment loop, and after the last transition resamples column K. The last transition's asks are
  // told as the twisted potentials' (fully adapted, with kernels::twisted_finish's linear_mutation), as there.
  void tell_moment(std::int64_t k, std::int64_t next, cudaStream_t stream) {
    const std::int64_t BN = rows, t = k / asks_per_step;
    const int j = static_cast<int>(k % asks_per_step);
    const kernels::moment_stage_functor f{p,  t,  j == 0 ? 0 : 1, j == 0 ? 0 : j - 1, ux(t), um(t), sigma2, x, m,
                                          v,  answer, moments, mu, lw, lz, r, &state->step, next};
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (t + 1 == K)
      tell_last_moment(j, t, next, stream);
    else if (target != cpu::simd_target::scalar)
      cpu::run_moment_tell(target, f);  // on packs, as guided_sample()'s fused run
    else if (where == executor::cpu)
      cpu::parallel_for_each(BN, f);
    else
      kernels::for_each_index<128>(executor::cuda, BN, f, stream);
    if (j != asks_per_step - 1) return;
    resample_weights(t, stream);
    run_mutation(where, BN, kernels::guided_mutate_functor{p, t, mu, ancestors, reports, lw, x, r}, stream);
    kernels::for_each_index(where, BN, kernels::guided_add_weight_functor{lz, ancestors, lw, N}, stream);
    if (t + 1 == K) resample_column(K, stream);
  }
  // The moment potentials' last transition: ask j of transition t = K - 1 told by the twisted tell
  // (kernels::twisted_stage_functor with linear_mutation; its shift h = 0 into the spare rows, unread), as
  // guided_sample()'s moment loop weighs it (twisted_weigh_cpu, guided_twisted_functor<true>).
  void tell_last_moment(int j, std::int64_t t, std::int64_t next, cudaStream_t stream) {
    run_twisted_tell({{p, t, j == 0 ? 0 : 1, j == 0 ? 0 : j - 1, ux(t), um(t), rows, sigma2, x, m, v, answer, u,
                       moments, mu, shift, lw, lz, r, true},
                      &state->step,
                      next},
                     true, stream);
  }
  // One twisted tell over every row: on a SIMD target on packs (cpu::run_twisted_tell, the pack code of
  // guided_sample()'s fused run), else per row; on CUDA the last transition's form only where @p last (its registers).
  void run_twisted_tell(const twisted_tell_functor<>& f, bool last, cudaStream_t stream) {
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar) {
      state->step = f.next_position;  // on packs, as guided_sample()'s fused run
      cpu::run_twisted_tell(target, f.stage);
    } else if (where == executor::cpu) {
      cpu::parallel_for_each(rows, f);
    } else if (last) {
      kernels::for_each_index<128>(executor::cuda, rows, f, stream);
    } else {
      kernels::for_each_index<128>(executor::cuda, rows,
                                   twisted_tell_functor<false>{f.stage, f.position, f.next_position}, stream);
    }
  }
  // Twisted potentials: the tell of the transitions' ask k (kernels::twisted_stage_functor; on a SIMD target on packs,
  // cpu::run_twisted_tell, the pack code of guided_sample()'s fused run); the last ask of transition t also resamples
  // (column t) and draws every particle from its ancestor's proposal (kernels::twisted_mutate_functor), and after the
  // last transition (fully adapted: kernels::final_transition_draw) resamples column K, as guided_sample()'s twisted
  // loop.
  void tell_twisted(std::int64_t k, std::int64_t next, cudaStream_t stream) {
    const std::int64_t BN = rows, t = k / asks_per_step;
    const int j = static_cast<int>(k % asks_per_step);
    run_twisted_tell({{p, t, j == 0 ? 0 : 1, j == 0 ? 0 : j - 1, ux(t), um(t), BN, sigma2, x, m, v, answer, u,
                       moments, mu, shift, lw, lz, r},
                      &state->step,
                      next},
                     t + 1 == K, stream);
    if (j != asks_per_step - 1) return;
    resample_weights(t, stream);
    run_mutation(where, BN, kernels::twisted_mutate_functor{p, t, mu, shift, lz, ancestors, reports, lw, x},
                 stream);
    if (t + 1 != K) return;
    resample_column(K, stream);
  }
  // Resampling at column c with the particles following their ancestors (through the spare rows, then back).
  void resample_column(std::int64_t column, cudaStream_t stream) {
    resample_weights(column, stream);
    kernels::for_each_index(where, rows, kernels::guided_reset_weights_functor{reports, lw, N}, stream);
    gather_unchecked(x, B, N, d, ancestors, spare, where, stream);
    kernels::for_each_index(where, rows * d, kernels::guided_copy_functor{spare, x}, stream);
  }
  // Resampling of column c (ancestors, reports) and its bookkeeping; the particles do not move.
  void resample_weights(std::int64_t column, cudaStream_t stream) {
    ro.step = static_cast<std::uint64_t>(column);
    resample_unchecked(lw, B, N, ro, po, where, stream, resampling_ws, &keys->resampling);
    kernels::for_each_index(where, B, bookkeeping(column), stream);
  }
  // The bookkeeping of column c after its resampling (log-normaliser, ESS trace, resampling count).
  kernels::guided_bookkeeping_functor bookkeeping(std::int64_t column) const {
    return {reports, log_z, previous_lse, ess, counts, K + 1, column, log_n()};
  }
  // The start correction's ask n: the answer at u_n x folded into each particle's sum (and the points of node
  // n + 1 written); after the last node the log-ratios join the log-weights and the first resampling's
  // normalisation, and the trajectory starts as guided_sample()'s: twisted potentials carry the log-ratio alone,
  // linear ones resample column 0.
  void tell_start(std::int64_t n, cudaStream_t stream) {
    const kernels::guided_start_stage_functor f{p, static_cast<int>(n), ux(0), um(0), x,  answer,       spare,
                                                mu, r,                  lw,    &state->step, n + 1};
    kernels::for_each_index<128>(where, rows, f, stream);
    if (n + 1 < start_asks) return;
    kernels::for_each_index(where, B, kernels::guided_start_lse_functor{p, mu, previous_lse}, stream);
    if (twisted) kernels::for_each_index(where, rows, kernels::twisted_start_functor{p, mu, lw, true}, stream);
    if (!moment) resample_column(0, stream);
  }
  // The samples of write_outputs() (the final resampling at step K + 1 of the streams, every problem with a positive
  // weight, the rows in the trajectory's permuted order) into `into`.
  void draw_samples(float* into, cudaStream_t stream) {
    resample_unchecked(lw, B, N, final_resampling(ro, K), po, where, stream, resampling_ws, &keys->resampling);
    kernels::for_each_index(where, rows * d,
                            permuted_gather_functor{x, ancestors, into, N, d, 0,
                                                    index_permutation(0, static_cast<std::uint64_t>(N)), 0,
                                                    &keys->order},
                            stream);
  }
  void tell(std::int64_t position, cudaStream_t stream) override {
    if (final_moves > 0 && position >= moves_begin) {
      kernels::for_each_index<128>(where, rows,
                                   kernels::final_move_stage_functor{moves, move_scalars, position - moves_begin,
                                                                     &state->step, position + 1, move_points,
                                                                     move_scale, move_cx, move_cr},
                                   stream);
      return;
    }
    tell_transitions(position, stream);
    if (final_moves > 0 && position + 1 == moves_begin) {
      // After the last transition the samples the moves start from (guided_sample()'s final draw).
      draw_samples(moves.x, stream);
      if (move_points != nullptr)
        kernels::for_each_index(where, rows * d, kernels::scaled_copy_functor{moves.x, move_points, move_scale},
                                stream);
    }
  }
  void tell_transitions(std::int64_t position, cudaStream_t stream) {
    if (position < start_asks) {
      tell_start(position, stream);
      return;
    }
    const std::int64_t k = position - start_asks;  // the transitions' ask
    if (twisted) {
      tell_twisted(k, position + 1, stream);
      return;
    }
    if (moment) {
      tell_moment(k, position + 1, stream);
      return;
    }
    const std::int64_t BN = rows;
    const kernels::guided_weight_answer_functor weight{p,  k,      ux(k), um(k),        x,
                                                       answer, mu, lw,    r,            &state->step,
                                                       position + 1};
    ro.step = static_cast<std::uint64_t>(k + 1);
    const kernels::guided_mutate_functor mutate{p, k, mu, ancestors, reports, lw, x, r};
    if (where == executor::cpu) {
      // guided_sample()'s CPU transition with the weighting from the answer, then select and mutate in one pass;
      // on a SIMD target both passes run on packs of particles, with the fused run's packed arithmetic.
      const cpu::simd_target target = cpu::chain_target();
      if (target != cpu::simd_target::scalar) {
        state->step = position + 1;
        cpu::guided_pass pass;
        pass.weight_answer = &weight;
        cpu::run_guided_pass(target, pass);
      } else {
        kernels::for_each_index(where, BN, weight, stream);
      }
      const auto select = resample_statistics_cpu(lw, B, N, ro, po, resampling_ws, &keys->resampling);
      kernels::for_each_index(where, B, bookkeeping(k + 1), stream);
      if (target != cpu::simd_target::scalar) {
        cpu::guided_pass pass;
        pass.select = &select;
        pass.mutate = &mutate;
        cpu::run_guided_pass(target, pass);
      } else {
        cpu::parallel_for_each(BN, [&](std::int64_t i) {
          select(i);
          mutate(i);
        });
      }
    } else {
      kernels::for_each_index<128>(where, BN, weight, stream);
      resample_weights(k + 1, stream);
      kernels::for_each_index<128>(where, BN, mutate, stream);
    }
  }
  void check_reset(const float* initial) const override {
    DIFFSAMPLE_EXPECTS(initial == nullptr,
                       "initial: a guided SMC plan draws its own particles (its first weights are those of x ~ "
                       "N(0, s_0^2 I)); pass null");
  }
  void reset(const float*, cudaStream_t stream) override {
    kernels::for_each_index<32>(where, 1, smc_reset_functor{state, keys, seed}, stream);
    const std::int64_t BN = rows;
    kernels::for_each_index(where, B, kernels::guided_problem_init_functor{log_z, previous_lse, counts, log_n()},
                            stream);
    kernels::for_each_index<128>(where, BN, kernels::guided_init_functor{p, x, lw, r}, stream);
    if (start_asks > 0) {
      // The points of the start correction's first ask; its last tell finishes the start (tell_start).
      kernels::for_each_index<128>(
          where, BN, kernels::guided_start_stage_functor{p, -1, 0.f, 1.f, x, answer, spare, mu, r, lw}, stream);
      return;
    }
    // Twisted potentials: the starting log-weights are 0 (twisted_finish adds log g_0 at the first transition).
    if (twisted) kernels::for_each_index(where, BN, kernels::twisted_start_functor{p, mu, lw, false}, stream);
    // Linear potentials: column 0 is resampled now (moment potentials weight x by g_0 at the first transition).
    if (!moment) resample_column(0, stream);
  }
  bool has_outputs() const override { return true; }
  void write_outputs(const guided_outputs& out, cudaStream_t stream) override {
    const std::int64_t BN = rows;
    if (out.particles != nullptr) check_buffer("outputs.particles", out.particles, BN * d, sizeof(float), where);
    if (out.samples != nullptr) check_buffer("outputs.samples", out.samples, BN * d, sizeof(float), where);
    if (out.log_weights != nullptr) check_buffer("outputs.log_weights", out.log_weights, BN, sizeof(float), where);
    if (out.log_normaliser != nullptr)
      check_buffer("outputs.log_normaliser", out.log_normaliser, B, sizeof(double), where);
    if (out.ess_trace != nullptr) check_buffer("outputs.ess_trace", out.ess_trace, B * (K + 1), sizeof(float), where);
    if (out.resample_count != nullptr)
      check_buffer("outputs.resample_count", out.resample_count, B, sizeof(std::int32_t), where);
    DIFFSAMPLE_EXPECTS(out.samples == nullptr || final_resample,
                       "outputs.samples: given but options.final_resample is false");
    // An output in the plan's memory would be written while it is read (samples() as outputs.samples: the final
    // resampling gathered in place and lost the particles), and two that overlap would overwrite one another.
    const auto floats = [](std::int64_t count) { return static_cast<std::size_t>(count) * sizeof(float); };
    refuse_overlaps({{"outputs.particles", out.particles, floats(BN * d)},
                     {"outputs.log_weights", out.log_weights, floats(BN)},
                     {"outputs.samples", out.samples, floats(BN * d)},
                     {"outputs.log_normaliser", out.log_normaliser, static_cast<std::size_t>(B) * sizeof(double)},
                     {"outputs.ess_trace", out.ess_trace, floats(B * (K + 1))},
                     {"outputs.resample_count", out.resample_count,
                      static_cast<std::size_t>(B) * sizeof(std::int32_t)}});
    if (out.particles != nullptr)
      kernels::for_each_index(where, BN * d, kernels::guided_copy_functor{x, out.particles}, stream);
    if (out.log_weights != nullptr)
      kernels::for_each_index(where, BN, kernels::guided_copy_functor{lw, out.log_weights}, stream);
    if (out.ess_trace != nullptr)
      kernels::for_each_index(where, B * (K + 1), kernels::guided_copy_functor{ess, out.ess_trace}, stream);
    if (out.samples != nullptr) {
      // guided_sample()'s final draw: every problem with a positive weight resampled, in a permuted order (drawn
      // after the last transition and moved since, with final moves).
      if (final_moves > 0)
        kernels::for_each_index(where, BN * d, kernels::guided_copy_functor{moves.x, out.samples}, stream);
      else
        draw_samples(out.samples, stream);
    }
    finish_problems(where, B, log_z, constants, counts, out, stream);
  }
};

}  // namespace

// The guided plans: the answer r of a model of kind `output` at a step's channel (a, s) becomes the denoiser
// ux x + um r (denoiser_form, as the chain plans; an error names the entry's index, the step or ask).
void push_denoiser_form(model_output output, double a, double s, std::vector<float>& ux, std::vector<float>& um) {
  double fx = 0, fm = 1;
  denoiser_form(output, a, s, nullptr, static_cast<std::int64_t>(ux.size()), fx, fm);
  ux.push_back(float(fx));
  um.push_back(float(fm));
}

namespace {

// The set-up the guided plans share: the SVD reduction, the layout and host tables of guided_sample()'s workspace,
// the executor, the ask count (asks_per_step(d_y) per step) and, per step, the schedule's time and the answer's
// denoiser form. `setup` keeps the reduced problems that setup.problems may point into.
struct plan_setup {
  svd_reduction reduced;
  const guided_problems* problems = nullptr;
  layout l{};
  std::vector<unsigned char> tables;  // host copy of guided_sample()'s tables (the steps first)
  float initial_scale = 1.f;
};

template <class Storage, class AsksPerStep>
void set_up_plan(Storage& st, plan_setup& setup, std::int64_t d, const guided_problems& given,
                 const guided_options& o, model_output output, execution exec, AsksPerStep asks_per_step) {
  setup.reduced = reduce_svd(given, d, o.sampler);
  setup.problems = setup.reduced.active ? &setup.reduced.problems : &given;
  const guided_problems& pr = *setup.problems;
  setup.l = make_layout(d, pr, o, nullptr);
  setup.tables = build_tables(d, {}, pr, o, setup.l, &setup.initial_scale, setup.reduced);
  st.asks_per_step = asks_per_step(pr.d_y);
  st.set_up(plan_executor(exec), pr.problems * o.particles, d, st.asks_per_step * o.steps, output);
  const std::vector<schedule_point> pts = o.schedule.points(o.steps);
  const auto* steps = reinterpret_cast<const guided_step*>(setup.tables.data());
  for (std::int64_t k = 0; k < o.steps; ++k)
    st.steps.push(output, channel{steps[k].a, steps[k].s}, pts[static_cast<std::size_t>(k)].t);
}

std::unique_ptr<sampling_plan_storage> make_smc_plan(std::int64_t d, const guided_problems& given,
                                                     const guided_options& o, model_output output, execution exec) {
  auto st = std::make_unique<smc_plan_storage>();
  st->twisted = o.potentials == guided_potentials::twisted;
  st->moment = o.potentials == guided_potentials::moment || st->twisted;
  plan_setup setup;
  set_up_plan(*st, setup, d, given, o, output, exec, [&](std::int64_t dy) { return st->moment ? 1 + dy : 1; });
  // The start correction's asks come first (moment potentials refuse it: validate()).
  st->start_asks = o.start_correction ? kernels::start_correction_nodes : 0;
  st->asks += st->start_asks;
  const guided_problems& pr = *setup.problems;
  const layout& l = setup.l;
  const float initial_scale = setup.initial_scale;
  const std::int64_t B = pr.problems, N = o.particles, dy = pr.d_y, K = o.steps, BN = B * N;
  st->B = B;
  st->N = N;
  st->K = K;
  st->seed = o.seed;
  st->final_resample = o.final_resample;
  st->ro = o.resampling;
  // The resamplings' check on the CUDA executor, before the plan launches anything.
  if (plan_executor(exec) == executor::cuda) check_resampling_scan(B, N, exec.stream);
  // One allocation: guided_sample()'s workspace (tables first), then the answer, the ESS trace, the keys and the
  // state.
  const std::size_t rows_bytes = align_up(static_cast<std::size_t>(BN * d) * sizeof(float));
  const std::size_t at_answer = align_up(l.total);
  const std::size_t at_ess = at_answer + rows_bytes;
  const std::size_t at_keys = at_ess + align_up(static_cast<std::size_t>(B * (K + 1)) * sizeof(float));
  // The final moves (explicit counts only: make_guided_plan checked them): the scores at the proposals and each
  // row's scalars between tells; the samples, the scores at them and the proposals take the answer, mu and spare
  // rows (free once the transitions are told), the rest of their scratch is the layout's.
  // A model that does not answer scores asks at points of their own (another rows x d).
  const bool with_moves = o.final_moves > 0, converted = with_moves && output != model_output::score;
  const std::size_t at_moves = align_up(at_keys + sizeof(smc_plan_keys));
  const std::size_t scalar_bytes = align_up(static_cast<std::size_t>(BN) * sizeof(kernels::final_move_scalars));
  const std::size_t move_bytes = with_moves ? rows_bytes + scalar_bytes + (converted ? rows_bytes : 0) : 0;
  unsigned char* base = st->allocate(setup.tables, at_moves + move_bytes, exec.stream);
  st->p = bind_tables(l, base, kernels::mixture_view<float>{}, B, N, d, dy, o.seed, initial_scale);
  st->x = reinterpret_cast<float*>(base + l.x);
  st->mu = reinterpret_cast<float*>(base + l.mu);
  st->spare = reinterpret_cast<float*>(base + l.mu2);
  st->lw = reinterpret_cast<float*>(base + l.lw);
  st->r = reinterpret_cast<float*>(base + l.r);
  st->ancestors = reinterpret_cast<std::int32_t*>(base + l.ancestors);
  st->reports = reinterpret_cast<particle_report*>(base + l.reports);
  st->log_z = reinterpret_cast<double*>(base + l.log_z);
  st->previous_lse = reinterpret_cast<double*>(base + l.previous_lse);
  st->counts = reinterpret_cast<std::int32_t*>(base + l.counts);
  st->constants = reinterpret_cast<const double*>(base + l.constants);
  st->resampling_ws = base + l.resampling;
  st->po.ancestors = st->ancestors;
  st->po.reports = st->reports;
  st->answer = reinterpret_cast<float*>(base + at_answer);
  st->ess = reinterpret_cast<float*>(base + at_ess);
  st->keys = reinterpret_cast<smc_plan_keys*>(base + at_keys);
  st->p.seed_at = &st->keys->mutation;
  if (o.multistep_kernel) {
    // As guided_sample(): each weighting keeps its particles' denoiser outputs (2 B N d floats of the layout) and
    // reads their ancestors' previous ones through the ancestors of the resampling in between
    // (kernels::multistep_row); the first transition's w_0 = 0 reads none, so a trajectory needs no reset of them.
    st->p.multistep = reinterpret_cast<const float*>(base + l.multistep);
    st->p.multistep_m = reinterpret_cast<float*>(base + l.multistep_m);
    st->p.ancestors = st->ancestors;
  }
  if (st->moment) {
    float* work = reinterpret_cast<float*>(base + l.work);
    st->m = work;
    st->v = work + BN * d;
    st->moments = reinterpret_cast<float*>(base + l.moment);
    st->lz = reinterpret_cast<float*>(base + l.lz);
    st->sigma2 = reinterpret_cast<const float*>(base + l.sigma2);
    // Layout: (2 + d_y) B N d floats of work for the twisted potentials and for the moment potentials' last
    // transition, which keeps every row's answer too.
    st->u = work + 2 * BN * d;
    st->shift = st->spare;
  }
  if (with_moves) {
    // After the start correction's and the transitions' asks: 1 + 2 final_moves asks at the grid's last point.
    st->final_moves = o.final_moves;
    st->moves_begin = st->asks;
    st->asks += 1 + 2 * o.final_moves;
    const guided_step& last = reinterpret_cast<const guided_step*>(setup.tables.data())[K - 1];
    const double a = last.a_next;
    st->moves_at = channel{a, 0.0};
    st->moves_time = o.schedule.points(o.steps).back().t;
    const std::size_t row = rows_bytes / sizeof(float);
    if (converted) {
      // A denoiser or eps model has no score at s = 0: it is asked at the last transition's channel (a_m, s_m) (and
      // time), where its answer r at the point c x (c = a_m / a_K) gives x0 = ux c x + um r (denoiser_form), and so
      // the score of the prior smoothed by N(0, sigma^2), sigma = a_K s_m / a_m in the moves' units:
      // g = (a_K x0 - x) / sigma^2 = cx x + cr r, cx = (a_K ux c - 1) / sigma^2, cr = a_K um / sigma^2.
      const double am = last.a, sm = last.s, c = am / a, sigma = a * sm / am;
      double ux = 0, um = 1;
      denoiser_form(output, am, sm, nullptr, K - 1, ux, um);
      st->moves_at = channel{am, sm};
      st->moves_time = st->steps.times[static_cast<std::size_t>(K - 1)];
      st->move_scale = float(c);
      st->move_cx = float((a * ux * c - 1.0) / (sigma * sigma));
      st->move_cr = float(a * um / (sigma * sigma));
    }
    float* own = reinterpret_cast<float*>(base + at_moves);
    float* scratch = reinterpret_cast<float*>(base + l.moves);
    // x: the samples (the answer rows), g: the scores there (mu), x' (the spare rows), g' (the plan's own rows).
    st->moves = kernels::final_move_functor{
        st->p,     final_move_settings(l, base, a, o.final_move_curvature, o, K, d),
        st->answer, st->mu,
        st->spare, own,
        scratch,   scratch + BN * d,
        scratch + 2 * BN * d};
    st->move_scalars = reinterpret_cast<kernels::final_move_scalars*>(own + row);
    if (converted) st->move_points = reinterpret_cast<float*>(base + at_moves + rows_bytes + scalar_bytes);
  }
  return st;
}

// SKRock: options.skrock_stages asks per iteration, one per drift evaluation: the prior's score (channel (1, 0))
// at the stage's point (plan_request::points: the drift points, not the particles); tell (n, s) is
// skrock_stage_functor's stage s of iteration n, as guided_sample() issues it on the CPU executor. reset() needs
// the caller's initial particles (guided_sample() draws them exactly from its mixture prior).
struct skrock_plan_storage final : workspace_plan_storage {
  std::int64_t stages = 1, iterations = 0;
  kernels::guided_params p{};
  kernels::skrock_params q{};
  float *cur = nullptr, *old = nullptr, *g = nullptr, *answer = nullptr, *r = nullptr;
  plan_request request(std::int64_t k) const override {
    return ask(k, cur, channel{1.0, 0.0}, 0.0, model_output::score, answer);
  }
  kernels::skrock_stage_functor stage(int op, std::int64_t k, std::int64_t next) const {
    return {p,   q,   op,     k / stages, int(k % stages), iterations, x, cur, old, g, answer, r, &state->chain_base,
            &state->step, next};
  }
  void tell(std::int64_t k, cudaStream_t stream) override {
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)
      cpu::run_skrock_tell(target, stage(kernels::skrock_op_stage, k, k + 1));  // on packs, as guided_sample()
    else
      kernels::for_each_index(where, rows, stage(kernels::skrock_op_stage, k, k + 1), stream);
  }
  void check_reset(const float* initial) const override {
    DIFFSAMPLE_EXPECTS(initial != nullptr,
                       "initial: a SKRock plan starts from the caller's particles (rows() x dim(), draws of the "
                       "prior; guided_sample() draws them from its mixture), got a null pointer");
    workspace_plan_storage::check_reset(initial);
  }
  void reset(const float* initial, cudaStream_t stream) override {
    start(initial, stream);
    kernels::for_each_index(where, rows, stage(kernels::skrock_op_start, 0, 0), stream);
  }
};

std::unique_ptr<sampling_plan_storage> make_skrock_plan(std::int64_t d, const guided_problems& given,
                                                        const guided_options& o, model_output output,
                                                        execution exec) {
  DIFFSAMPLE_EXPECTS(output == model_output::score,
                     "output: a SKRock plan asks for the prior's score at channel (1, 0), which a denoiser or eps "
                     "model does not determine; got "
                         << to_string(output));
  DIFFSAMPLE_EXPECTS(o.skrock_lipschitz > 0,
                     "options.skrock_lipschitz: a SKRock plan needs the caller's Lipschitz bound of the prior's score "
                     "(> 0; guided_sample() takes it from the mixture's variances), got "
                         << o.skrock_lipschitz);
  auto st = std::make_unique<skrock_plan_storage>();
  const svd_reduction reduced = reduce_svd(given, d, o.sampler);
  const guided_problems& pr = reduced.active ? reduced.problems : given;
  const layout l = make_layout(d, pr, o, nullptr);
  float initial_scale = 1.f;
  const std::vector<unsigned char> tables = build_tables(d, {}, pr, o, l, &initial_scale, reduced);
  const std::int64_t B = pr.problems, N = o.particles, dy = pr.d_y, BN = B * N;
  st->set_up(plan_executor(exec), BN, d, o.steps * o.skrock_stages, output);
  st->stages = o.skrock_stages;
  st->iterations = o.steps;
  // One allocation: guided_sample()'s workspace (tables, x, cur, old, g, r), the answer, then the state.
  const std::size_t at_answer = align_up(l.total);
  unsigned char* base =
      st->allocate(tables, at_answer + static_cast<std::size_t>(BN * d) * sizeof(float), exec.stream);
  st->p = bind_tables(l, base, kernels::mixture_view<float>{}, B, N, d, dy, o.seed, initial_scale);
  const float* extra = reinterpret_cast<const float*>(base + l.extra);
  st->q = kernels::skrock_params{extra, extra + B, extra + 2 * B, int(o.skrock_stages)};
  st->x = reinterpret_cast<float*>(base + l.x);
  float* mu = reinterpret_cast<float*>(base + l.mu);
  st->cur = mu;
  st->old = mu + BN * d;
  st->g = mu + 2 * BN * d;
  st->r = reinterpret_cast<float*>(base + l.r);
  st->answer = reinterpret_cast<float*>(base + at_answer);
  return st;
}

}  // namespace

namespace {

// The DPS, Pi-GDM and DiffPIR plan.
std::unique_ptr<sampling_plan_storage> make_baseline_plan(std::int64_t d, const guided_problems& given,
                                                          const guided_options& o, model_output output,
                                                          execution exec) {
  auto st = std::make_unique<guided_plan_storage>();
  st->diffpir = o.sampler == guided_sampler::diffpir;
  plan_setup setup;
  set_up_plan(*st, setup, d, given, o, output, exec, [&](std::int64_t) { return st->diffpir ? 1 : 2; });
  const guided_problems& pr = *setup.problems;
  const layout& l = setup.l;
  const float initial_scale = setup.initial_scale;
  const std::int64_t B = pr.problems, N = o.particles, dy = pr.d_y, BN = B * N;
  // DPS / Pi-GDM's guidance as products exactly where guided_sample() takes them for these options and problems
  // (dense rows given as such; an SVD operator's reduced rows keep the per-particle path), on either executor.
  st->gemm = baseline_products(d, pr, o, setup.reduced.active, plan_executor(exec));
  // The products' cuBLAS handle of this device now, as guided_sample() makes it before its first launch: a first
  // gemm tell inside a CUDA graph capture would otherwise create it there (refused under capture when still to be
  // made, naming prepare_gemm).
  if (st->gemm && st->where == executor::cuda) detail::operator_gemm_prepare(&exec.stream);
  // One allocation: the tables, x, m, v, the answer, the shifts, the residuals, the products' buffer (gemm: u and, on
  // the CUDA executor, cuBLAS's workspace, at a 256-byte boundary of the allocation, which cudaMalloc aligns), the
  // state.
  const std::size_t rows_bytes = align_up(static_cast<std::size_t>(BN * d) * sizeof(float));
  const std::size_t at_x = align_up(l.table_end), at_shift = at_x + 4 * rows_bytes;
  const std::size_t at_r = at_shift + align_up(static_cast<std::size_t>(BN) * sizeof(float));
  const std::size_t at_products = (at_r + static_cast<std::size_t>(BN * dy) * sizeof(float) + 255) / 256 * 256;
  const std::size_t at_end = st->gemm ? at_products + baseline_guidance_gemm_bytes(BN, dy, st->where)
                                      : at_r + static_cast<std::size_t>(BN * dy) * sizeof(float);
  unsigned char* base = st->allocate(setup.tables, at_end, exec.stream);
  if (st->gemm) st->products = base + at_products;
  st->p = bind_tables(l, base, kernels::mixture_view<float>{}, B, N, d, dy, o.seed, initial_scale);
  st->g = kernels::baseline_settings{float(o.guidance_scale),
                                     o.sampler == guided_sampler::dps && o.dps_step == dps_step_form::normalised,
                                     reinterpret_cast<const float*>(base + l.extra)};
  auto rows_at = [&](int i) { return reinterpret_cast<float*>(base + at_x + i * rows_bytes); };
  st->x = rows_at(0);
  st->m = rows_at(1);
  st->v = rows_at(2);
  st->answer = rows_at(3);
  st->shift = reinterpret_cast<float*>(base + at_shift);
  st->r = reinterpret_cast<float*>(base + at_r);
  return st;
}

// The plan of the resolved options `o` (make_guided_plan() below validates and resolves them).
std::unique_ptr<sampling_plan_storage> make_resolved_guided_plan(std::int64_t d, const guided_problems& given,
                                                                 const guided_options& o, model_output output,
                                                                 execution exec) {
  if (o.sampler == guided_sampler::smc) return make_smc_plan(d, given, o, output, exec);
  if (o.sampler == guided_sampler::dcps || o.sampler == guided_sampler::tmpd) {
    const svd_reduction reduced = reduce_for_table_sampler(given, d, o);
    const guided_problems& pr = reduced.active ? reduced.problems : given;
    if (o.sampler == guided_sampler::dcps) return make_dcps_plan(d, pr, o, output, plan_executor(exec), exec.stream);
    return make_tmpd_plan(d, pr, o, output, plan_executor(exec), exec.stream);
  }
  if (o.sampler == guided_sampler::ddrm) return make_ddrm_plan(d, given, o, output, plan_executor(exec), exec.stream);
  if (o.sampler == guided_sampler::skrock) return make_skrock_plan(d, given, o, output, exec);
  return make_baseline_plan(d, given, o, output, exec);
}

}  // namespace

std::unique_ptr<sampling_plan_storage> make_guided_plan(std::int64_t d, const guided_problems& given,
                                                        const guided_options& options, model_output output,
                                                        execution exec) {
  DIFFSAMPLE_EXPECTS(options.sampler == guided_sampler::smc || options.sampler == guided_sampler::dps ||
                         options.sampler == guided_sampler::pigdm || options.sampler == guided_sampler::diffpir ||
                         options.sampler == guided_sampler::dcps || options.sampler == guided_sampler::tmpd ||
                         options.sampler == guided_sampler::ddrm || options.sampler == guided_sampler::skrock,
                     "options.sampler: a guided plan runs smc, dps, pigdm, diffpir, dcps, tmpd, ddrm or skrock, got "
                         << to_string(options.sampler));
  limits::check("dim", d, 1, limits::max_dim);
  // The count's own range first (validate() checks it again), so that -2 is not named as a move setting left unread.
  check_final_moves_count(options.final_moves);
  if (options.sampler == guided_sampler::smc && options.final_moves <= 0) {
    // -1 (automatic) resolves to none in a plan, so neither setting of the moves is read.
    const guided_options defaults;
    const std::string plan = "a guided plan (sampler smc) without final moves (options.final_moves " +
                             std::to_string(options.final_moves) + ")";
    detail::check_unread("options.final_move_step", options.final_move_step, defaults.final_move_step, plan);
    detail::check_unread("options.final_move_curvature", options.final_move_curvature,
                         defaults.final_move_curvature, plan);
  }
  validate(d, given, options);
  // An SMC plan runs explicit final moves (-1, automatic, resolves to none in a plan): a score model is asked at the
  // grid's last point (a_K, 0), a denoiser or eps model at the last transition's channel (make_smc_plan). Its prior
  // is the caller's model, so the preconditioner's curvature is the caller's too. operator_path is read as
  // guided_sample() reads it: a DPS or Pi-GDM plan runs the path guided_sample() resolves.
  if (options.sampler == guided_sampler::smc && options.final_moves > 0) {
    DIFFSAMPLE_EXPECTS(options.final_move_curvature > 0,
                       "options.final_move_curvature: a plan's final moves need the caller's bound of the prior's "
                       "curvature (the largest eigenvalue of -Hessian log p_0; its model is the prior), got "
                           << options.final_move_curvature);
  }
  const guided_options o = detail::resolve_options(d, given, options, detail::resolve_route::plan);
  DIFFSAMPLE_EXPECTS(output == model_output::denoiser || output == model_output::score || output == model_output::eps,
                     "output: a guided plan takes denoiser, score or eps, got " << to_string(output));
  // Before anything is issued (the operator products' cuBLAS handle, the resamplings' check, the plan's memory).
  if (plan_executor(exec) == executor::cuda) refuse_plan_capture(exec.stream, "sampling_plan::guided()");
  std::unique_ptr<sampling_plan_storage> st = make_resolved_guided_plan(d, given, o, output, exec);
  // What guided_sample() reports of its run, for the plan's (sampling_plan::report()).
  guided_report report;
  report.ran = st->where;
  report.operator_path = st->operator_path();
  report_resolved(report, o);
  st->report = report;
  return st;
}

}  // namespace detail

}  // namespace diffsample
