// DDRM (kernels/guided_ddrm.cuh): each operator factored once on the host in FP64 (an SVD operator as given; any
// other from the eigendecomposition of A A^T by cyclic Jacobi rotations, V = A^T U S^-1), the spectral observations
// S^-1 U^T y and noise levels sigma_y / S per problem, the per-step levels; then one fused launch over B problems x
// N particles for the whole trajectory on the CUDA executor. On the CPU executor the run goes step by step around
// the mixture's evaluate() (kernels::ddrm_stage_functor; on a SIMD target fused per pack of particles with the packed
// tell cpu::run_ddrm_tell), as the ask/tell plan (make_ddrm_plan, below) goes around a caller's model, so that the
// plan fed the mixture reproduces guided_sample() bit for bit.
#include <algorithm>
#include <cmath>
#include <limits>
#include <atomic>
#include <memory>
#include <vector>

#include "kernels/guided_ddrm.cuh"
#include "kernels/linalg.cuh"
#include "kernels/plan.cuh"
#include "src/cpu/guided_tells.hpp"
#include "src/fused_stepwise.hpp"
#include "src/guided_reduction.hpp"
#include "src/guided_samplers.hpp"
#include "src/guided_tables.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/plan_storage.hpp"

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

std::int64_t row_svd(const double* A, std::int64_t dy, std::int64_t dx, std::vector<double>& U, std::vector<double>& S,
                     std::vector<double>& V) {
  // R = Q^T A with Q orthogonal, rotated pairwise until the rows of R are orthogonal; then A = Q R, S_i = |R_i|.
  // Q is held transposed (its columns contiguous).
  const double eps = std::numeric_limits<double>::epsilon();
  std::vector<double> R(A, A + dy * dx), Q(dy * dy, 0.0);
  for (std::int64_t i = 0; i < dy; ++i) Q[i * dy + i] = 1.0;
  // Rows of norm below max(d_y, d_x) eps times A's largest row norm (at most S_0: below the rank test's threshold,
  // so never counted) are not rotated: such rounding residues are never orthogonal to working precision, and
  // rotating them kept every sweep busy to the sweep limit.
  double widest = 0;
  for (std::int64_t i = 0; i < dy; ++i) {
    double n2 = 0;
    for (std::int64_t j = 0; j < dx; ++j) n2 += R[i * dx + j] * R[i * dx + j];
    widest = std::max(widest, n2);
  }
  const double negligible = double(std::max(dy, dx)) * eps * double(std::max(dy, dx)) * eps * widest;
  for (int sweep = 0; sweep < 80; ++sweep) {
    bool rotated = false;
    for (std::int64_t p = 0; p < dy; ++p)
      for (std::int64_t q = p + 1; q < dy; ++q) {
        double alpha = 0, beta = 0, gamma = 0;
        for (std::int64_t j = 0; j < dx; ++j) {
          alpha += R[p * dx + j] * R[p * dx + j];
          beta += R[q * dx + j] * R[q * dx + j];
          gamma += R[p * dx + j] * R[q * dx + j];
        }
        if (!(alpha > negligible && beta > negligible)) continue;
        if (!(std::abs(gamma) > eps * std::sqrt(alpha) * std::sqrt(beta))) continue;
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::abs(zeta) + std::hypot(1.0, zeta));
        const double c = 1 / std::sqrt(1 + t * t), s = c * t;
        for (std::int64_t j = 0; j < dx; ++j) {
          const double rp = R[p * dx + j], rq = R[q * dx + j];
          R[p * dx + j] = c * rp - s * rq;
          R[q * dx + j] = s * rp + c * rq;
        }
        for (std::int64_t o = 0; o < dy; ++o) {  // Q's columns p and q, stored as rows of Q^T
          const double qp = Q[p * dy + o], qq = Q[q * dy + o];
          Q[p * dy + o] = c * qp - s * qq;
          Q[q * dy + o] = s * qp + c * qq;
        }
      }
    if (!rotated) break;
  }
  std::vector<double> norm(dy);
  std::vector<std::int64_t> order(dy);
  for (std::int64_t i = 0; i < dy; ++i) {
    double n2 = 0;
    for (std::int64_t j = 0; j < dx; ++j) n2 += R[i * dx + j] * R[i * dx + j];
    norm[i] = std::sqrt(n2);
    order[i] = i;
  }
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) { return norm[x] > norm[y]; });
  U.assign(dy * dy, 0.0);
  S.assign(dy, 0.0);
  V.assign(dx * dy, 0.0);
  const double tolerance = double(std::max(dy, dx)) * eps * norm[order[0]];
  std::int64_t rank = 0;
  for (std::int64_t i = 0; i < dy; ++i) {
    const std::int64_t from = order[i];
    S[i] = norm[from];
    for (std::int64_t o = 0; o < dy; ++o) U[o * dy + i] = Q[from * dy + o];
    if (!(S[i] > 0)) continue;
    for (std::int64_t j = 0; j < dx; ++j) V[j * dy + i] = R[from * dx + j] / S[i];
    if (S[i] > tolerance) ++rank;
  }
  return rank;
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
  // The eigenvalues of A A^T resolve singular values only down to about 1e-8 of the largest, hence that cut; but a
  // direction it drops may be observed (a row scaled by 1e-7, with sigma_y small enough to see it), and DDRM then
  // ignored its observation. Where the cut dropped a direction, the SVD of A itself (row_svd: singular values to
  // about 1e-16 of the largest) decides the rank; if it finds more, its factors replace these.
  if (f.r < dy) {
    std::vector<double> U, S, V;
    const std::int64_t rank = row_svd(A.data(), dy, d, U, S, V);
    if (rank > f.r) {
      f.r = rank;
      f.S.assign(S.begin(), S.begin() + rank);
      f.U.assign(dy * rank, 0.0);
      f.V.assign(d * rank, 0.0);
      for (std::int64_t i = 0; i < rank; ++i) {
        for (std::int64_t o = 0; o < dy; ++o) f.U[o * rank + i] = U[o * dy + i];
        for (std::int64_t j = 0; j < d; ++j) f.V[j * rank + i] = V[j * dy + i];
      }
      return f;
    }
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
  std::size_t steps = 0, V = 0, ybar = 0, noise = 0, inv_noise = 0, less_noisy_from = 0, table_end = 0, channels = 0,
              x = 0, work = 0;
  std::size_t answer = 0;  // B N x d: the stepwise run's answers (CPU executor, plans)
  float s_start = 1.f, a_start = 1.f;
};

std::int64_t operator_count(const guided_problems& pr, std::int64_t d) {
  if (!pr.operators.empty()) return static_cast<std::int64_t>(pr.operators.size());
  return pr.A.size() == static_cast<std::size_t>(pr.d_y * d) ? 1 : pr.problems;
}

std::atomic<std::int64_t> factorisations_made{0};

// What factor() reads of the problems' operators, as a factorisation_memo's key: the dense rows given (1 shared or B)
// then their count and 0; or per operator a tag, 1 for an SVD operator (whose factors are its own, copied per call and
// not part of the key) and 0 followed by the operator's matrix() (d_y x d_x) for any other, then the count of
// operators and 1 (the tags and the trailing pair fix the layout, so that no two sets share a key).
std::vector<double> factor_key(const guided_problems& pr, std::int64_t d) {
  if (pr.operators.empty()) {
    std::vector<double> key = operator_matrices(pr, d);
    key.push_back(static_cast<double>(operator_count(pr, d)));
    key.push_back(0.0);
    return key;
  }
  std::vector<double> key;
  for (const observation_operator& op : pr.operators) {
    if (op.kind() == observation_kind::svd) {
      key.push_back(1.0);
      continue;
    }
    key.push_back(0.0);
    const std::vector<double> A = op.matrix();
    key.insert(key.end(), A.begin(), A.end());
  }
  key.push_back(static_cast<double>(pr.operators.size()));
  key.push_back(1.0);
  return key;
}

// The thin SVDs of the problems' operators (factor()). An SVD operator's are its own (a cheap copy, per call); the
// others' come from the memo of the last operator sets factored (src/guided_reduction.hpp) when the set's key
// (factor_key: their matrices, bit for bit, and where the SVD operators sit) matches, else are computed and kept.
// A set mixing SVD operators with dense ones or masks is kept too (its SVD operators' entries empty, filled per
// call): it was factored on every call before, the dense operators' Jacobi included.
std::shared_ptr<const std::vector<thin_svd>> factor_operators(const guided_problems& pr, std::int64_t d) {
  const std::int64_t dy = pr.d_y, count = operator_count(pr, d);
  const auto own = [&](std::int64_t c) {
    return !pr.operators.empty() && pr.operators[c].kind() == observation_kind::svd;
  };
  bool all_own = true, any_own = false;
  for (std::int64_t c = 0; c < count; ++c) {
    if (own(c))
      any_own = true;
    else
      all_own = false;
  }
  // Their own factors where every operator is an SVD: nothing to factor or keep.
  if (all_own) {
    auto f = std::make_shared<std::vector<thin_svd>>(static_cast<std::size_t>(count));
    for (std::int64_t c = 0; c < count; ++c) (*f)[c] = factor(&pr.operators[c], nullptr, dy, d);
    return f;
  }
  static factorisation_memo<std::vector<thin_svd>> memo;
  std::vector<double> key = factor_key(pr, d);
  std::shared_ptr<const std::vector<thin_svd>> kept = memo.find(dy, d, key);
  if (!kept) {
    auto f = std::make_shared<std::vector<thin_svd>>(static_cast<std::size_t>(count));
    std::size_t values = 0;
    for (std::int64_t c = 0; c < count; ++c) {
      if (own(c)) continue;
      (*f)[c] = pr.operators.empty() ? factor(nullptr, pr.A.data() + c * dy * d, dy, d)
                                     : factor(&pr.operators[c], nullptr, dy, d);
      values += (*f)[c].U.size() + (*f)[c].S.size() + (*f)[c].V.size();
    }
    factorisations_made.fetch_add(1, std::memory_order_relaxed);
    memo.keep(dy, d, std::move(key), f, values);
    kept = std::move(f);
  }
  if (!any_own) return kept;
  auto f = std::make_shared<std::vector<thin_svd>>(*kept);
  for (std::int64_t c = 0; c < count; ++c)
    if (own(c)) (*f)[c] = factor(&pr.operators[c], nullptr, dy, d);
  return f;
}

// prior: the mixture whose constants per step's channel the fused run tabulates (null for a plan: no table).
ddrm_layout make_ddrm_layout(std::int64_t d, const gaussian_mixture* prior, const guided_problems& pr,
                             const guided_options& o, std::vector<unsigned char>* host) {
  const std::int64_t B = pr.problems, N = o.particles, dy = pr.d_y, K = o.steps;
  ddrm_layout l;
  l.operators = operator_count(pr, d);
  const std::shared_ptr<const std::vector<thin_svd>> factors = factor_operators(pr, d);
  const std::vector<thin_svd>& f = *factors;
  for (std::int64_t c = 0; c < l.operators; ++c) l.r = std::max(l.r, f[c].r);
  l.r = std::max<std::int64_t>(l.r, 1);  // an all-zero A: one unobserved column keeps the kernels uniform
  l.steps = l.blob.put(K * sizeof(kernels::ddrm_step));
  l.V = l.blob.put(l.operators * d * l.r * sizeof(float));
  l.ybar = l.blob.put(B * l.r * sizeof(float));
  l.noise = l.blob.put(B * l.r * sizeof(float));
  l.inv_noise = l.blob.put(B * l.r * sizeof(float));
  l.less_noisy_from = l.blob.put(B * l.r * sizeof(std::int32_t));
  l.table_end = l.blob.at;
  l.channels = l.blob.put(
      prior == nullptr ? 0
                       : kernels::mixture_channels::table_floats(prior->storage().view(executor::cpu), K) * sizeof(float));
  l.x = l.blob.put(B * N * d * sizeof(float));
  l.work = l.blob.put(B * N * kernels::ddrm_scratch::floats(int(d), int(l.r)) * sizeof(float));
  l.answer = l.blob.put(B * N * d * sizeof(float));
  // The step divides by s at the point it starts from (eps = (x - a m) / s) and nothing by a: it is formed in x = a xt
  // (kernels/guided_ddrm.cuh), so a = 0 at the first point (the linear interpolant's and vp_cosine's t = 1) runs,
  // starting from x = s_0 xi; the grid's increasing signal-to-noise ratio keeps a > 0 at every later point.
  const std::vector<schedule_point> pts = o.schedule.points(K);
  for (std::int64_t k = 0; k < K; ++k) {
    DIFFSAMPLE_EXPECTS(pts[k].s > 0, "options.schedule: s = 0 at t = " << pts[k].t << " (step " << k
                                                                        << "), where DDRM divides by s");
    detail::check_step_noise(pts[k], k);
  }
  l.s_start = float(pts[0].s);
  l.a_start = float(pts[0].a);
  if (host == nullptr) return l;
  host->assign(l.table_end, 0);
  unsigned char* base = host->data();
  auto* steps = reinterpret_cast<kernels::ddrm_step*>(base + l.steps);
  for (std::int64_t k = 0; k < K; ++k)
    steps[k] = {float(pts[k].a), float(pts[k].s), float(pts[k + 1].a), float(pts[k + 1].s), float(1.0 / pts[k].s)};
  auto* V = reinterpret_cast<float*>(base + l.V);
  for (std::int64_t c = 0; c < l.operators; ++c)
    for (std::int64_t j = 0; j < d; ++j)
      for (std::int64_t i = 0; i < f[c].r; ++i) V[(c * d + j) * l.r + i] = float(f[c].V[j * f[c].r + i]);
  auto* ybar = reinterpret_cast<float*>(base + l.ybar);
  auto* noise = reinterpret_cast<float*>(base + l.noise);
  auto* inv_noise = reinterpret_cast<float*>(base + l.inv_noise);
  auto* from = reinterpret_cast<std::int32_t*>(base + l.less_noisy_from);
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
      // Which case each step takes, in FP64 from the grid's points (ties to the noisier side).
      from[b * l.r + i] = observed ? kernels::ddrm_less_noisy_from(pts.data(), K + 1, sy / fb.S[i])
                                   : static_cast<std::int32_t>(K + 1);
    }
  }
  return l;
}

// The run's parameters over a workspace laid out by l (tables copied): everything but the mixture's channel table
// and a shard's streams.
kernels::ddrm_params bind_ddrm(const ddrm_layout& l, unsigned char* ws, std::int64_t d, const guided_problems& pr,
                               const guided_options& o) {
  kernels::ddrm_params p{};
  p.steps = reinterpret_cast<const kernels::ddrm_step*>(ws + l.steps);
  p.V = reinterpret_cast<const float*>(ws + l.V);
  p.V_stride = l.operators == 1 ? 0 : d * l.r;
  p.ybar = reinterpret_cast<const float*>(ws + l.ybar);
  p.noise = reinterpret_cast<const float*>(ws + l.noise);
  p.inv_noise = reinterpret_cast<const float*>(ws + l.inv_noise);
  p.less_noisy_from = reinterpret_cast<const std::int32_t*>(ws + l.less_noisy_from);
  p.problems = pr.problems;
  p.particles = o.particles;
  p.d = int(d);
  p.r = int(l.r);
  p.eta = float(o.ddrm_eta);
  p.eta_b = float(o.ddrm_eta_b);
  p.keep = float(std::sqrt(std::max(0.0, 1.0 - o.ddrm_eta * o.ddrm_eta)));
  p.s_start = l.s_start;
  p.a_start = l.a_start;
  p.seed = o.seed;
  return p;
}

}  // namespace

std::int64_t ddrm_factorisations() noexcept { return factorisations_made.load(std::memory_order_relaxed); }

std::size_t ddrm_workspace_bytes(const gaussian_mixture& prior, const guided_problems& problems,
                                 const guided_options& options) {
  return make_ddrm_layout(prior.dim(), &prior, problems, options, nullptr).blob.at;
}

guided_report ddrm_sample(const gaussian_mixture& prior, const guided_problems& pr, const guided_options& o,
                          guided_outputs out, execution exec, void* workspace, std::size_t workspace_bytes) {
  std::vector<unsigned char> host;
  const ddrm_layout l = make_ddrm_layout(prior.dim(), &prior, pr, o, &host);
  run_space rs;
  prepare_run(rs, pr, o, prior.dim(), out, exec, workspace, workspace_bytes, l.blob.at, host);
  kernels::ddrm_params p = bind_ddrm(l, rs.ws, prior.dim(), pr, o);
  p.stream_skip = current_particle_streams().skip(o.particles);  // 0 unless a shard of a larger run
  p.stream_first = current_particle_streams().first;
  float* x = reinterpret_cast<float*>(rs.ws + l.x);
  float* work = reinterpret_cast<float*>(rs.ws + l.work);
  const std::int64_t BN = pr.problems * o.particles;
  guided_report report;
  report.ran = rs.where;
  if (rs.where == executor::cpu) {
    // Step by step with the mixture's denoiser as a caller's model gives it to the ask/tell plan, through the same
    // stage functor: the plan answered by the mixture reproduces this run bit for bit.
    float* answer = reinterpret_cast<float*>(rs.ws + l.answer);
    const auto* steps = reinterpret_cast<const kernels::ddrm_step*>(host.data() + l.steps);
    kernels::ddrm_stage_functor f{p, 0, 0, 0.f, 1.f, x, work, answer, nullptr, nullptr, 0};
    kernels::for_each_index(rs.where, BN, f, exec.stream);
    if (fused_stepwise_available()) {
      // On a SIMD target the same asks and tells fused per pack of particles (src/fused_stepwise.hpp): per step the
      // pack's denoiser by evaluate()'s per-pack code, then the plan's packed tell (cpu::run_ddrm_tell) on the pack,
      // the pack's particles kept in packs from step to step.
      std::vector<fused_ask> asks(static_cast<std::size_t>(o.steps));
      for (std::int64_t k = 0; k < o.steps; ++k) asks[k] = {channel{steps[k].a, steps[k].s}, x, nullptr, answer};
      kernels::ddrm_stage_functor g = f;
      g.stage = 1;
      report.launches =
          1 + run_fused_stepwise(prior.storage(), BN, asks.data(), o.steps, nullptr, nullptr, nullptr, &g);
      report.launches += copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream);
      return report;
    }
    for (std::int64_t k = 0; k < o.steps; ++k) {
      // The unchecked layer: the inputs were validated once at the call's start, not per transition.
      evaluate_direct_unchecked(prior.storage(), quantity::denoiser, x, BN, channel{steps[k].a, steps[k].s}, answer,
                                {executor::cpu, exec.stream});
      f.k = k;
      f.stage = 1;
      kernels::for_each_index(rs.where, BN, f, exec.stream);
    }
    report.launches = 2 * o.steps + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream);
    return report;
  }
  // The mixture's constants at every step's channel, computed once per call on the executor.
  const kernels::mixture_view<float> view = prior.storage().view(rs.where);
  p.channels = kernels::mixture_channels::in(view, o.steps, reinterpret_cast<float*>(rs.ws + l.channels));
  kernels::for_each_index(rs.where, o.steps * view.components,
                          kernels::channel_table_functor<kernels::ddrm_channels>{p.channels, {p.steps}},
                          exec.stream);
  // The CUDA executor's particles and scratch rows are coordinate-major inside the run (kernels/guided.cuh,
  // "Layout"), transposed back by the copies out.
  p.coordinate_stride = BN;
  kernels::for_each_index_scratch<128>(rs.where, BN, kernels::guided_ddrm_functor{p, o.steps, x, work}, exec.stream);
  report.launches = 2 + copy_outputs(x, BN * prior.dim(), out, rs.where, exec.stream, prior.dim(),
                                      p.coordinate_stride);
  return report;
}

// --- ask/tell plan ------------------------------------------------------------------------------------------------

namespace {

// One ask per step k: the model's output at the particles and step k's channel; tell k is ddrm_stage_functor's
// stage 1 over the B N rows, as guided_sample() issues it on the CPU executor. reset() draws the initial state of
// p(x_T | y) (stage 0) or copies the caller's.
struct ddrm_plan_storage final : workspace_plan_storage {
  kernels::ddrm_params p{};
  float *work = nullptr, *answer = nullptr;
  plan_request request(std::int64_t k) const override {
    const std::size_t i = static_cast<std::size_t>(k);
    return ask(k, x, steps.channels[i], steps.times[i], output, answer);
  }
  kernels::ddrm_stage_functor stage(int which, std::int64_t k, std::int64_t next) const {
    const std::size_t i = static_cast<std::size_t>(k);
    return {p,    k,      which, which == 1 ? steps.ux[i] : 0.f, which == 1 ? steps.um[i] : 1.f, x, work, answer,
            &state->chain_base, &state->step, next};
  }
  void tell(std::int64_t k, cudaStream_t stream) override {
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)
      cpu::run_ddrm_tell(target, stage(1, k, k + 1));  // on packs, as guided_sample()'s fused run
    else
      kernels::for_each_index(where, rows, stage(1, k, k + 1), stream);
  }
  void reset(const float* initial, cudaStream_t stream) override {
    if (!start(initial, stream)) kernels::for_each_index(where, rows, stage(0, 0, 0), stream);
  }
};

}  // namespace

std::unique_ptr<sampling_plan_storage> make_ddrm_plan(std::int64_t d, const guided_problems& pr,
                                                      const guided_options& o, model_output output, executor where,
                                                      cudaStream_t stream) {
  auto st = std::make_unique<ddrm_plan_storage>();
  std::vector<unsigned char> tables;
  const ddrm_layout l = make_ddrm_layout(d, nullptr, pr, o, &tables);
  st->set_up(where, pr.problems * o.particles, d, o.steps, output);
  const std::vector<schedule_point> pts = o.schedule.points(o.steps);
  const auto* steps = reinterpret_cast<const kernels::ddrm_step*>(tables.data() + l.steps);
  for (std::int64_t k = 0; k < o.steps; ++k)
    st->steps.push(output, channel{steps[k].a, steps[k].s}, pts[static_cast<std::size_t>(k)].t);
  // One allocation: guided_sample()'s workspace (tables, x, work, the answer), then the state.
  unsigned char* base = st->allocate(tables, l.blob.at, stream);
  st->p = bind_ddrm(l, base, d, pr, o);
  st->x = reinterpret_cast<float*>(base + l.x);
  st->work = reinterpret_cast<float*>(base + l.work);
  st->answer = reinterpret_cast<float*>(base + l.answer);
  return st;
}

}  // namespace diffsample::detail
