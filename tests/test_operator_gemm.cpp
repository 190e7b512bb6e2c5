// Dense observation operators applied to many points as matrix products (observation_operator::apply_batch, the
// DPS / Pi-GDM stepwise CPU run): against the guided samplers' own kernels (kernels::guided_residual,
// kernels::guided_add_rows) and an FP64 reference within the FP32 bound of a dot product, the path choice, and masks
// and SVD operators keeping their own forms.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/guided.cuh"
#include "reference/helpers.hpp"
#include <diffsample/diffsample.hpp>
#include <diffsample/plan.hpp>

using namespace diffsample;

namespace {
// Allocations made while `counting` is set, on any thread (the pool's included): the global operator new below.
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
// Of those, the ones of exactly `watched_size` bytes.
std::atomic<std::size_t> watched_size{0};
std::atomic<long> watched_allocations{0};
// And those of exactly `second_watched_size` bytes.
std::atomic<std::size_t> second_watched_size{0};
std::atomic<long> second_watched_allocations{0};
}  // namespace

// Out of line, so that the compiler does not pair an inlined malloc with a delete expression's free.
__attribute__((noinline)) void* operator new(std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (size == watched_size.load(std::memory_order_relaxed)) watched_allocations.fetch_add(1, std::memory_order_relaxed);
    if (size == second_watched_size.load(std::memory_order_relaxed))
      second_watched_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

constexpr execution host{executor::cpu, nullptr};

std::vector<double> random_values(std::int64_t count, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(static_cast<std::size_t>(count));
  for (double& e : v) e = normal(gen);
  return v;
}

// gamma_n = n u / (1 - n u), u = 2^-24: the bound of an FP32 sum of n products relative to the sum of their
// magnitudes (Higham, recursive summation; the products' own rounding is inside it).
double gamma(std::int64_t n) {
  const double u = std::ldexp(1.0, -24);
  return double(n) * u / (1 - double(n) * u);
}

// The final particles of a DPS / Pi-GDM plan answered with the mixture's denoiser (direct path) and J^T v, on the
// executor of `exec` (copied to the host).
std::vector<float> plan_particles(const gaussian_mixture& mix, const guided_problems& pr, const guided_options& o,
                                  execution exec = host) {
  sampling_plan plan = sampling_plan::guided(mix.dim(), pr, o, model_output::denoiser, exec);
  plan.reset();
  while (!plan.done()) {
    const plan_request r = plan.ask();
    if (r.vector == nullptr)
      mix.evaluate(r.answer, r.rows, r.points, r.at, quantity::denoiser, evaluate_options{mixture_path::direct}, exec);
    else
      mix.denoiser_jvp(r.answer, r.rows, r.points, r.vector, r.at, exec);
    plan.tell();
  }
  std::vector<float> out(static_cast<std::size_t>(plan.rows() * plan.dim()));
  if (exec.kind == executor::cuda) {
    if (cudaMemcpy(out.data(), plan.samples(), out.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy D2H failed");
  } else {
    std::copy(plan.samples(), plan.samples() + out.size(), out.begin());
  }
  return out;
}

// The dense 48 x 64 operator, three problems, of the DPS / Pi-GDM tests.
guided_problems dense_problems(std::int64_t d, std::int64_t dy) {
  guided_problems pr;
  pr.problems = 3;
  pr.d_y = dy;
  pr.A = random_values(dy * d, 5, 1.0 / 8.0);
  for (std::int64_t b = 0; b < 3; ++b)
    for (std::int64_t o = 0; o < dy; ++o) pr.y.push_back(0.3 * std::sin(0.7 * o + b));
  pr.sigma_y = {0.2, 0.3, 0.5};
  return pr;
}

// One observed coordinate in two, mask operator, one problem.
guided_problems masked_problem(std::int64_t d) {
  guided_problems masked;
  masked.problems = 1;
  masked.d_y = 32;
  std::vector<std::int64_t> observed;
  for (int o = 0; o < 32; ++o) observed.push_back(2 * o);
  masked.operators.push_back(observation_operator::mask(d, observed));
  masked.y.assign(32, 0.5);
  masked.sigma_y = {0.3};
  return masked;
}

// Case c of the DPS / Pi-GDM comparisons, one step of N particles: DPS, Pi-GDM, DPS's normalised step.
guided_options baseline_case(int c, std::int64_t N) {
  guided_options o;
  o.potentials = guided_potentials::linear;
  o.sampler = c == 1 ? guided_sampler::pigdm : guided_sampler::dps;
  if (c == 2) o.dps_step = dps_step_form::normalised;
  o.particles = N;
  o.steps = 1;
  o.seed = 9;
  return o;
}

}  // namespace

// Every output is an FP32 sum of n products (n = d_x forward, d_y transposed) in either path: each lies within
// gamma_n sum |a_i b_i| of the FP64 value, so the two paths lie within 2 gamma_n sum |a_i b_i| of each other (the
// products are formed from the same FP32 A and x, whose FP64 products are exact). Checked against the guided
// kernels (the residual with y = 0 is -A x; A^T u added onto zeros), the direct path and FP64, on shapes with d_y and
// d_x from 1 to 300. Seen failing with the forward product's transposition flag flipped ('N' for 'T' in
// dense_rows_forward_gemm: non-finite and wrong values).
TEST(OperatorGemm, MatchesTheGuidedKernelsWithinTheFp32Bound) {
  struct shape {
    std::int64_t dy, dx, n;
  };
  for (const shape sh : {shape{1, 1, 40}, shape{8, 100, 64}, shape{64, 256, 33}, shape{100, 37, 50},
                         shape{300, 300, 20}}) {
    const std::int64_t dy = sh.dy, dx = sh.dx, n = sh.n;
    const std::vector<double> A = random_values(dy * dx, 7 + dy);
    const observation_operator op = observation_operator::dense(dy, dx, A);
    std::vector<float> A32(A.begin(), A.end());
    const std::vector<double> xd = random_values(n * dx, 11 + dx, 3.0), ud = random_values(n * dy, 13 + dy, 2.0);
    const std::vector<float> x(xd.begin(), xd.end()), u(ud.begin(), ud.end());
    std::vector<float> fwd_gemm(n * dy), fwd_direct(n * dy), tr_gemm(n * dx), tr_direct(n * dx);
    EXPECT_EQ(op.apply_batch(fwd_gemm.data(), n, x.data(), false, mixture_path::gemm, host).path, mixture_path::gemm);
    EXPECT_EQ(op.apply_batch(fwd_direct.data(), n, x.data(), false, mixture_path::direct, host).path,
              mixture_path::direct);
    EXPECT_EQ(op.apply_batch(tr_gemm.data(), n, u.data(), true, mixture_path::gemm, host).path, mixture_path::gemm);
    op.apply_batch(tr_direct.data(), n, u.data(), true, mixture_path::direct, host);

    kernels::guided_params p{};
    std::vector<float> zeros(dy, 0.f);
    p.A = A32.data();
    p.mask = nullptr;
    p.A_stride = 0;
    p.y = zeros.data();
    p.d = int(dx);
    p.d_y = int(dy);
    p.problems = 1;
    p.particles = n;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* xi = x.data() + i * dx;
      const float* ui = u.data() + i * dy;
      std::vector<float> r(dy), back(dx, 0.f);
      kernels::guided_residual(p, 0, 0.f, xi, r);
      kernels::guided_add_rows(p, 0, ui, back);
      for (std::int64_t o = 0; o < dy; ++o) {
        double exact = 0, mag = 0;
        for (std::int64_t j = 0; j < dx; ++j) {
          exact += double(A32[o * dx + j]) * x[i * dx + j];
          mag += std::abs(double(A32[o * dx + j]) * x[i * dx + j]);
        }
        const double got = fwd_gemm[i * dy + o], bound = gamma(dx) * mag;
        ASSERT_LE(std::abs(got - exact), bound) << dy << "x" << dx << " point " << i << " output " << o;
        ASSERT_LE(std::abs(got + r[o]), 2 * bound) << dy << "x" << dx << " point " << i << " output " << o;
        ASSERT_LE(std::abs(got - fwd_direct[i * dy + o]), 2 * bound);
      }
      for (std::int64_t j = 0; j < dx; ++j) {
        double exact = 0, mag = 0;
        for (std::int64_t o = 0; o < dy; ++o) {
          exact += double(A32[o * dx + j]) * u[i * dy + o];
          mag += std::abs(double(A32[o * dx + j]) * u[i * dy + o]);
        }
        const double got = tr_gemm[i * dx + j], bound = gamma(dy) * mag;
        ASSERT_LE(std::abs(got - exact), bound) << dy << "x" << dx << " point " << i << " coordinate " << j;
        ASSERT_LE(std::abs(got - back[j]), 2 * bound) << dy << "x" << dx << " point " << i << " coordinate " << j;
        ASSERT_LE(std::abs(got - tr_direct[i * dx + j]), 2 * bound);
      }
    }
  }
}

// The automatic path: gemm for a dense operator past operator_gemm_worthwhile() (at least 64 points and 1024 entries,
// the crossover measured inside DPS / Pi-GDM), direct below it and always for masks and SVD operators (forcing gemm
// on them is refused, naming the path); bad arguments are named. Seen failing against the former rule (16 points):
// 16 and 63 points of a 64 x 64 and a 128 x 512 operator took the products.
TEST(OperatorGemm, PathChoice) {
  const observation_operator big = observation_operator::dense(64, 64, random_values(64 * 64, 3));
  const observation_operator tiny = observation_operator::dense(2, 3, random_values(6, 4));
  EXPECT_TRUE(operator_gemm_worthwhile(1024, 64, 64));
  EXPECT_TRUE(operator_gemm_worthwhile(64, 16, 64));
  EXPECT_FALSE(operator_gemm_worthwhile(16, 64, 64));
  EXPECT_FALSE(operator_gemm_worthwhile(63, 128, 512));
  EXPECT_FALSE(operator_gemm_worthwhile(1 << 20, 16, 63));
  EXPECT_FALSE(operator_gemm_worthwhile(1, 64, 64));
  EXPECT_FALSE(operator_gemm_worthwhile(1024, 2, 3));
  // The CUDA executor's rule (DPS / Pi-GDM's fused kernel against cuBLAS products, measured on an H200): the products
  // from 2^17 entries and 64 points; executor::automatic (a query naming no executor): either rule. Seen failing
  // against the CPU rule the CUDA executor followed before (64 x 64 and 16 x 64 took the products, 2 to 6x slower).
  EXPECT_EQ(operator_gemm_worthwhile(1024, 64, 64, executor::cpu), operator_gemm_worthwhile(1024, 64, 64));
  EXPECT_FALSE(operator_gemm_worthwhile(1024, 64, 64, executor::cuda));
  EXPECT_FALSE(operator_gemm_worthwhile(1 << 20, 16, 64, executor::cuda));
  EXPECT_FALSE(operator_gemm_worthwhile(1 << 20, 128, 512, executor::cuda));
  EXPECT_TRUE(operator_gemm_worthwhile(64, 256, 512, executor::cuda));
  EXPECT_FALSE(operator_gemm_worthwhile(63, 256, 512, executor::cuda));
  EXPECT_TRUE(operator_gemm_worthwhile(1024, 64, 64, executor::automatic));
  EXPECT_TRUE(operator_gemm_worthwhile(64, 256, 512, executor::automatic));
  EXPECT_FALSE(operator_gemm_worthwhile(16, 64, 64, executor::automatic));
  EXPECT_EQ(big.batch_path(1024), mixture_path::gemm);
  EXPECT_EQ(big.batch_path(64), mixture_path::gemm);
  EXPECT_EQ(big.batch_path(16), mixture_path::direct);
  EXPECT_EQ(big.batch_path(1), mixture_path::direct);
  EXPECT_EQ(big.batch_path(1024, mixture_path::direct), mixture_path::direct);
  EXPECT_EQ(tiny.batch_path(1 << 20), mixture_path::direct);
  EXPECT_EQ(tiny.batch_path(1, mixture_path::gemm), mixture_path::gemm);
  const observation_operator mask = observation_operator::mask(300, {0, 5, 7, 299}, {1.0, -2.0, 0.5, 3.0});
  std::vector<double> U(300 * 2, 0.0), V(300 * 2, 0.0);
  U[0] = V[0] = 1.0;
  U[1 * 2 + 1] = 1.0;  // U is 300 x 2 row-major: column 1 is coordinate 1
  V[2 * 10 + 1] = 1.0;
  const observation_operator svd = observation_operator::svd(300, 300, U, {2.0, 0.5}, V);
  for (const observation_operator* op : {&mask, &svd}) {
    EXPECT_EQ(op->batch_path(1 << 20), mixture_path::direct) << to_string(op->kind());
    EXPECT_THROW(op->batch_path(1 << 20, mixture_path::gemm), invalid_argument);
  }
  std::vector<float> x(64 * 4, 1.f), y(64 * 4);
  try {
    mask.apply_batch(y.data(), 1, x.data(), false, mixture_path::gemm, host);
    ADD_FAILURE() << "a forced gemm on a mask was accepted";
  } catch (const invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("path"), std::string::npos) << e.what();
  }
  EXPECT_THROW(big.apply_batch(y.data(), -1, x.data(), false, mixture_path::automatic, host), invalid_argument);
  EXPECT_THROW(big.apply_batch(nullptr, 1, x.data(), false, mixture_path::automatic, host), invalid_argument);
  EXPECT_THROW(observation_operator{}.batch_path(1), invalid_argument);
}

// Masks and SVD operators keep their own forms in apply_batch: within the FP32 bound of their FP64 apply() and
// apply_transpose() (a mask is exact up to the gains' rounding; an SVD is two sums of r and d terms).
TEST(OperatorGemm, MasksAndSvdKeepTheirForms) {
  const std::int64_t dx = 40, n = 25;
  const observation_operator mask = observation_operator::mask(dx, {3, 0, 39, 17}, {1.5, -2.0, 0.25, 3.0});
  const std::int64_t r = 3;
  // Orthonormal columns: coordinate vectors.
  std::vector<double> U(8 * r, 0.0), V(dx * r, 0.0);
  for (std::int64_t k = 0; k < r; ++k) {
    U[(2 * k + 1) * r + k] = 1.0;
    V[(5 * k + 2) * r + k] = 1.0;
  }
  const observation_operator svd = observation_operator::svd(8, dx, U, {3.0, 1.0, 0.5}, V);
  for (const observation_operator* op : {&mask, &svd}) {
    const std::int64_t dy = op->d_y();
    const std::vector<double> xd = random_values(n * dx, 21), ud = random_values(n * dy, 22);
    const std::vector<float> x(xd.begin(), xd.end()), u(ud.begin(), ud.end());
    std::vector<float> y(n * dy), back(n * dx);
    EXPECT_EQ(op->apply_batch(y.data(), n, x.data(), false, mixture_path::automatic, host).path, mixture_path::direct);
    EXPECT_EQ(op->apply_batch(back.data(), n, u.data(), true, mixture_path::automatic, host).path,
              mixture_path::direct);
    for (std::int64_t i = 0; i < n; ++i) {
      std::vector<double> xi(x.begin() + i * dx, x.begin() + (i + 1) * dx), yi(dy), ui(u.begin() + i * dy,
                                                                                   u.begin() + (i + 1) * dy),
          bi(dx);
      op->apply(xi.data(), yi.data());
      op->apply_transpose(ui.data(), bi.data());
      for (std::int64_t o = 0; o < dy; ++o)
        ASSERT_NEAR(y[i * dy + o], yi[o], 1e-6 * (1 + std::abs(yi[o]))) << to_string(op->kind());
      for (std::int64_t j = 0; j < dx; ++j)
        ASSERT_NEAR(back[i * dx + j], bi[j], 1e-6 * (1 + std::abs(bi[j]))) << to_string(op->kind());
    }
  }
}

// DPS (likelihood and normalised steps) and Pi-GDM with a dense 48 x 64 operator and 3 x 64 particles run their
// guidance as matrix products on the CPU executor (the report says so), bit for bit as the ask/tell plan answered
// with the mixture's denoiser and J^T v (which takes the same products), and close to the run with operator_path =
// direct, which applies A and A^T particle by particle. One step is compared: v = A^T P (y - A m) differs from the
// direct one by the products' rounding (within 2 gamma_n sum |a b| per entry,
// OperatorGemm.MatchesTheGuidedKernelsWithinTheFp32Bound), which J^T and the step's factor carry into x: seen 1.4e-5
// (DPS), 4.1e-6 (Pi-GDM) and 4.9e-8 (normalised DPS) of 1 + |x|; allowed 1e-4. Longer runs are not compared entry
// by entry: the steps amplify rounding (this DPS problem's particles grow to 1e5 with the likelihood step, and at
// small noise a particle near the boundary of two modes may go either way: differences of order one after 20 steps,
// measured). A mask operator keeps the direct path in the report and stays bit for bit the plan's over 10 steps.
// Seen failing with the Pi-GDM precision row skipped in baseline_guidance_gemm (u = r).
TEST(OperatorGemm, DpsAndPigdmRunTheirGuidanceAsProductsAndMatchThePlan) {
  const std::int64_t d = 64, dy = 48, N = 64;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  const guided_problems pr = dense_problems(d, dy);
  for (int c = 0; c < 3; ++c) {
    const guided_options o = baseline_case(c, N);
    std::vector<float> fused(pr.problems * N * d);
    guided_outputs out;
    out.particles = fused.data();
    const guided_report rep = guided_sample(mix, out, pr, o, host);
    EXPECT_EQ(rep.operator_path, mixture_path::gemm);
    EXPECT_EQ(fused, plan_particles(mix, pr, o)) << to_string(o.sampler) << ": the plan takes the same products";
    guided_options direct_o = o;
    direct_o.operator_path = mixture_path::direct;
    std::vector<float> direct(fused.size());
    guided_outputs direct_out;
    direct_out.particles = direct.data();
    EXPECT_EQ(guided_sample(mix, direct_out, pr, direct_o, host).operator_path, mixture_path::direct);
    double worst = 0;
    for (std::size_t e = 0; e < fused.size(); ++e) {
      const double ref = direct[e];
      worst = std::max(worst, std::abs(fused[e] - ref) / (1 + std::abs(ref)));
    }
    EXPECT_LE(worst, 1e-4) << to_string(o.sampler);
    EXPECT_GT(worst, 0.0) << to_string(o.sampler) << ": the products should round differently somewhere";
  }
  // A mask keeps its path: bit for bit the plan.
  const guided_problems masked = masked_problem(d);
  guided_options o = baseline_case(0, N);
  o.steps = 10;
  std::vector<float> fused(N * d);
  guided_outputs out;
  out.particles = fused.data();
  EXPECT_EQ(guided_sample(mix, out, masked, o, host).operator_path, mixture_path::direct);
  EXPECT_EQ(fused, plan_particles(mix, masked, o));
}

// guided_options::operator_path forces the path either way. A small operator (4 x 16, 8 particles: direct under
// automatic) forced to gemm runs its guidance (DPS, Pi-GDM, normalised DPS) or its covariances (TMPD) as products
// (the report says gemm) and agrees after one step with the forced direct run, which is bit for bit the automatic
// one, within 1e-4 of 1 + |x| (the products' rounding only, as in
// DpsAndPigdmRunTheirGuidanceAsProductsAndMatchThePlan); the 48 x 64 operator of that test (gemm under automatic)
// forced direct is bit for bit the ask/tell plan (the direct path); a mask stays direct when gemm is forced; a value
// outside the enum is refused, naming the option. Seen failing with the option ignored (the size rule alone: gemm
// not taken when forced, taken when direct forced).
TEST(OperatorGemm, GuidedOptionsForceTheOperatorPath) {
  {
    const std::int64_t d = 16, dy = 4, N = 8;
    const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
    guided_problems pr;
    pr.problems = 1;
    pr.d_y = dy;
    pr.A = random_values(dy * d, 51, 1.0 / 4.0);
    for (std::int64_t o = 0; o < dy; ++o) pr.y.push_back(0.3 * std::sin(0.7 * o));
    pr.sigma_y = {0.3};
    for (int c = 0; c < 4; ++c) {
      guided_options o = baseline_case(c == 3 ? 0 : c, N);
      if (c == 3) o.sampler = guided_sampler::tmpd;
      std::vector<float> runs[3];
      const mixture_path paths[3] = {mixture_path::automatic, mixture_path::direct, mixture_path::gemm};
      for (int w = 0; w < 3; ++w) {
        o.operator_path = paths[w];
        runs[w].resize(std::size_t(N * d));
        guided_outputs out;
        out.particles = runs[w].data();
        EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path,
                  w == 2 ? mixture_path::gemm : mixture_path::direct)
            << to_string(o.sampler) << " case " << c << " path " << to_string(paths[w]);
      }
      EXPECT_EQ(runs[0], runs[1]) << "case " << c;
      for (std::int64_t e = 0; e < N * d; ++e)
        ASSERT_NEAR(runs[2][e], runs[1][e], 1e-4 * (1 + std::abs(runs[1][e]))) << "case " << c << " entry " << e;
    }
  }
  const std::int64_t d = 64, dy = 48, N = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  const guided_problems pr = dense_problems(d, dy);
  for (int c = 0; c < 3; ++c) {
    guided_options o = baseline_case(c, N);
    o.operator_path = mixture_path::direct;
    std::vector<float> run(pr.problems * N * d);
    guided_outputs out;
    out.particles = run.data();
    EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path, mixture_path::direct) << "case " << c;
    EXPECT_EQ(run, plan_particles(mix, pr, o)) << "case " << c;
  }
  const guided_problems masked = masked_problem(d);
  guided_options o = baseline_case(0, N);
  o.operator_path = mixture_path::gemm;
  std::vector<float> run(N * d);
  guided_outputs out;
  out.particles = run.data();
  EXPECT_EQ(guided_sample(mix, out, masked, o, host).operator_path, mixture_path::direct);
  EXPECT_EQ(run, plan_particles(mix, masked, o));
  o.operator_path = static_cast<mixture_path>(7);
  try {
    guided_sample(mix, out, masked, o, host);
    ADD_FAILURE() << "an operator_path outside the enum was accepted";
  } catch (const invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("operator_path"), std::string::npos) << e.what();
  }
}

// One dense operator per problem, given both ways (guided_problems::A holding B d_y x d blocks, and B dense
// observation_operators): DPS (both step forms) and Pi-GDM with the products forced (gemm) against the direct path,
// every problem's particles within the FP32 bound of the forced-path test above (1e-4 relative). Every other
// gemm-against-direct comparison used one operator shared by the problems, so a product that read problem 0's
// operator for every problem passed them all (the forward product A m from p.A without the problem's A_stride:
// problems 1 and 2 off by 131 and 46 relative for DPS, 19 and 14 for Pi-GDM, after one step); seen failing against it.
TEST(OperatorGemm, PerProblemOperatorsTakeTheirOwnProducts) {
  const std::int64_t d = 64, dy = 48, N = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  guided_problems stacked = dense_problems(d, dy);
  stacked.A.clear();
  guided_problems listed = dense_problems(d, dy);
  listed.A.clear();
  for (std::int64_t b = 0; b < stacked.problems; ++b) {
    const std::vector<double> A = random_values(dy * d, 80 + b, 1.0 / 8.0);
    stacked.A.insert(stacked.A.end(), A.begin(), A.end());
    listed.operators.push_back(observation_operator::dense(dy, d, A));
  }
  for (const guided_problems* pr : {&stacked, &listed})
    for (int c = 0; c < 3; ++c) {
      guided_options o = baseline_case(c, N);
      std::vector<float> runs[2];
      for (int w = 0; w < 2; ++w) {
        o.operator_path = w == 0 ? mixture_path::direct : mixture_path::gemm;
        runs[w].resize(std::size_t(pr->problems * N * d));
        guided_outputs out;
        out.particles = runs[w].data();
        EXPECT_EQ(guided_sample(mix, out, *pr, o, host).operator_path, o.operator_path) << "case " << c;
      }
      for (std::int64_t e = 0; e < pr->problems * N * d; ++e)
        ASSERT_NEAR(runs[1][e], runs[0][e], 1e-4 * (1 + std::abs(runs[0][e])))
            << (pr == &stacked ? "stacked A" : "operators") << ", case " << c << ", problem " << e / (N * d)
            << ", entry " << e;
    }
}

// apply_batch's direct path uses the factors rounded to FP32 at construction and allocates nothing in the call
// beyond the one record the thread pool makes for each loop it runs (src/cpu/pool.cpp, a shared job), for every
// kind of operator and both directions (the global operator new counts allocations on every thread). Seen failing
// with the former per-call FP32 copies of the gains and of U and V (2 allocations for a mask, 4 for an SVD operator).
TEST(OperatorGemm, DirectPathAllocatesNothing) {
  const std::int64_t dx = 40, dy = 8, r = 3, n = 64;
  std::vector<double> U(dy * r, 0.0), V(dx * r, 0.0);
  for (std::int64_t k = 0; k < r; ++k) {
    U[(2 * k + 1) * r + k] = 1.0;
    V[(5 * k + 2) * r + k] = 1.0;
  }
  const observation_operator ops[] = {observation_operator::dense(dy, dx, random_values(dy * dx, 31)),
                                      observation_operator::mask(dx, {3, 0, 39, 17}, {1.5, -2.0, 0.25, 3.0}),
                                      observation_operator::svd(dy, dx, U, {3.0, 1.0, 0.5}, V)};
  std::vector<float> x(n * dx, 0.5f), y(n * dx);
  const auto count = [&](auto&& call) {
    call();  // the pool is started
    allocations = 0;
    counting = true;
    call();
    counting = false;
    return allocations.load();
  };
  const long pool = 1;  // the pool's job record
  for (const observation_operator& op : ops)
    for (const bool transpose : {false, true}) {
      mixture_path ran = mixture_path::automatic;
      const long made = count([&] {
        ran = op.apply_batch(y.data(), n, x.data(), transpose, mixture_path::direct, host).path;
      });
      EXPECT_EQ(ran, mixture_path::direct);
      EXPECT_LE(made, pool) << to_string(op.kind()) << (transpose ? " transposed" : " forward");
    }
}

// DPS and Pi-GDM on the products' path take the products' buffer from the run's workspace, which
// guided_workspace_bytes() counts: u = P r (B N d_y floats, rounded to 256 bytes), cuBLAS's workspace (4 MiB; the
// query takes no executor, so a caller's workspace holds it on the CPU executor too) and 256 bytes in which the CUDA
// run aligns them, so the query grows by exactly that over the same run forced direct (shared A and one A per
// problem). A workspace of exactly the query's size is accepted, one byte less than the CPU executor's query
// (guided_workspace_bytes with an execution) refused naming the workspace; the
// run with the caller's workspace allocates no buffer of u's size (none of the call's allocations has it; the former
// run made one) and is bit for bit the run that allocates its own. Masks and SVD operators, which never take the
// products, need the same bytes under either path. Seen failing with the products' buffer allocated per call
// outside the workspace (the query did not grow; the run allocated u's bytes).
TEST(OperatorGemm, DpsAndPigdmProductsBufferComesFromTheWorkspace) {
  const std::int64_t d = 64, dy = 48, N = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  guided_problems per_problem = dense_problems(d, dy);
  for (std::int64_t b = 0; b < per_problem.problems; ++b)
    per_problem.operators.push_back(observation_operator::dense(dy, d, random_values(dy * d, 70 + b, 1.0 / 8.0)));
  per_problem.A.clear();
  for (const guided_problems& pr : {dense_problems(d, dy), per_problem})
    for (int c = 0; c < 2; ++c) {
      guided_options o = baseline_case(c, N);
      const std::size_t BN = std::size_t(pr.problems * N);
      const std::size_t u_bytes = (BN * dy * sizeof(float) + 255) / 256 * 256;
      o.operator_path = mixture_path::direct;
      const std::size_t direct = guided_workspace_bytes(mix, pr, o);
      // 40 particles a problem: below the size rule, so the products are forced, shared A or one per problem.
      o.operator_path = mixture_path::gemm;
      const std::size_t bytes = guided_workspace_bytes(mix, pr, o);
      EXPECT_EQ(bytes - direct, 256 + u_bytes + (std::size_t(4) << 20)) << to_string(o.sampler);

      std::vector<float> own(BN * d), given(BN * d);
      guided_outputs out;
      out.particles = own.data();
      EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path, mixture_path::gemm);
      std::vector<unsigned char> workspace(bytes);
      out.particles = given.data();
      try {
        // The CPU run needs the query less cuBLAS's 4 MiB (CpuWorkspaceQueryLeavesOutCublasBytes).
        guided_sample(mix, out, pr, o, host, workspace.data(), guided_workspace_bytes(mix, pr, o, host) - 1);
        ADD_FAILURE() << "a workspace one byte short of the CPU query was accepted";
      } catch (const invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("workspace"), std::string::npos) << e.what();
      }
      guided_sample(mix, out, pr, o, host, workspace.data(), bytes);  // the pool and the tables' first use
      watched_size = u_bytes;
      watched_allocations = 0;
      counting = true;
      const guided_report rep = guided_sample(mix, out, pr, o, host, workspace.data(), bytes);
      counting = false;
      EXPECT_EQ(rep.operator_path, mixture_path::gemm);
      EXPECT_EQ(watched_allocations.load(), 0) << to_string(o.sampler) << ": the products' buffer was allocated";
      EXPECT_EQ(given, own) << to_string(o.sampler);
    }
  // No products, no products' buffer.
  const guided_problems masked = masked_problem(d);
  guided_problems svd;
  svd.problems = 1;
  svd.d_y = 8;
  std::vector<double> U(8 * 4, 0.0), V(d * 4, 0.0);
  for (int k = 0; k < 4; ++k) {
    U[(2 * k) * 4 + k] = 1.0;
    V[(3 * k + 1) * 4 + k] = 1.0;
  }
  svd.operators.push_back(observation_operator::svd(8, d, U, {2.0, 1.0, 0.5, 0.25}, V));
  svd.y.assign(8, 0.2);
  svd.sigma_y = {0.3};
  for (const guided_problems* pr : {&masked, static_cast<const guided_problems*>(&svd)}) {
    guided_options o = baseline_case(0, N);
    o.operator_path = mixture_path::gemm;
    const std::size_t forced = guided_workspace_bytes(mix, *pr, o);
    o.operator_path = mixture_path::direct;
    EXPECT_EQ(forced, guided_workspace_bytes(mix, *pr, o));
  }
}

// guided_workspace_bytes() with an execution answers for that executor: on the CPU executor DPS and Pi-GDM's products
// leave out cuBLAS's 4 MiB, which the CPU run never touches, and guided_sample() on the CPU executor accepts a
// workspace of that size (one byte less is refused naming the workspace) with the outputs of the run that allocates
// its own, bit for bit. The form without an execution stays the bound on either executor, still accepted on the CPU;
// automatic answers for CUDA when a GPU is usable, else the CPU; a run without products needs the same bytes on both.
// Seen failing with the CPU run refusing the smaller workspace (it asked for the bound: cuBLAS's bytes included).
TEST(OperatorGemm, CpuWorkspaceQueryLeavesOutCublasBytes) {
  const std::int64_t d = 64, dy = 48, N = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  const guided_problems pr = dense_problems(d, dy);
  const std::size_t cublas = std::size_t(4) << 20;
  for (int c = 0; c < 2; ++c) {
    guided_options o = baseline_case(c, N);
    o.operator_path = mixture_path::gemm;
    const std::size_t bound = guided_workspace_bytes(mix, pr, o);
    const std::size_t cpu_bytes = guided_workspace_bytes(mix, pr, o, host);
    EXPECT_EQ(bound - cpu_bytes, cublas) << to_string(o.sampler);
    EXPECT_EQ(guided_workspace_bytes(mix, pr, o, execution{}), cuda_available() ? bound : cpu_bytes);
    if (cuda_available())
      EXPECT_EQ(guided_workspace_bytes(mix, pr, o, execution{executor::cuda, nullptr}), bound);
    else
      EXPECT_THROW(guided_workspace_bytes(mix, pr, o, execution{executor::cuda, nullptr}), invalid_argument);
    const std::size_t BN = std::size_t(pr.problems * N);
    std::vector<float> own(BN * d), given(BN * d), bounded(BN * d);
    guided_outputs out;
    out.particles = own.data();
    EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path, mixture_path::gemm);
    std::vector<unsigned char> workspace(bound);
    out.particles = given.data();
    try {
      guided_sample(mix, out, pr, o, host, workspace.data(), cpu_bytes - 1);
      ADD_FAILURE() << "a workspace one byte short of the CPU query was accepted";
    } catch (const invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("workspace"), std::string::npos) << e.what();
    }
    EXPECT_EQ(guided_sample(mix, out, pr, o, host, workspace.data(), cpu_bytes).operator_path, mixture_path::gemm);
    EXPECT_EQ(given, own) << to_string(o.sampler);
    out.particles = bounded.data();
    guided_sample(mix, out, pr, o, host, workspace.data(), bound);
    EXPECT_EQ(bounded, own) << to_string(o.sampler);
    o.operator_path = mixture_path::direct;
    EXPECT_EQ(guided_workspace_bytes(mix, pr, o, host), guided_workspace_bytes(mix, pr, o));
  }
}

// The CUDA executor: DPS and Pi-GDM with the dense 48 x 64 operator and 3 x 40 particles run step by step with the
// guidance's two products through cuBLAS (the report says gemm) and agree with the CUDA plan answered with the
// mixture's denoiser and J^T v, which takes the same cuBLAS products: one step within 1e-4 of 1 + |x| (the bound of
// the products against the per-particle path, as in DpsAndPigdmRunTheirGuidanceAsProductsAndMatchThePlan; bit for
// bit is expected, not required, as cuBLAS may pick another algorithm per call). Both the likelihood step (Pi-GDM,
// DPS) and DPS's normalised step (u = r) are run. A mask keeps the fused per-particle run (direct in the report).
TEST(OperatorGemmGpu, DpsAndPigdmRunTheirGuidanceThroughCublasAndMatchThePlan) {
  DIFFSAMPLE_REQUIRE_GPU();
  const execution gpu{executor::cuda, nullptr};
  const std::int64_t d = 64, dy = 48, N = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  const guided_problems pr = dense_problems(d, dy);
  for (int c = 0; c < 3; ++c) {
    // Forced: the CUDA executor's own rule keeps this shape on the fused kernel (checked below).
    guided_options o = baseline_case(c, N);
    o.operator_path = mixture_path::gemm;
    diffsample::testing::device_buffer<float> particles(std::size_t(pr.problems * N * d));
    guided_outputs out;
    out.particles = particles.ptr;
    const guided_report rep = guided_sample(mix, out, pr, o, gpu);
    EXPECT_EQ(rep.ran, executor::cuda);
    EXPECT_EQ(rep.operator_path, mixture_path::gemm);
    const std::vector<float> got = particles.download(), ref = plan_particles(mix, pr, o, gpu);
    double worst = 0;
    for (std::size_t e = 0; e < ref.size(); ++e)
      worst = std::max(worst, std::abs(got[e] - double(ref[e])) / (1 + std::abs(double(ref[e]))));
    EXPECT_LE(worst, 1e-4) << to_string(o.sampler) << " case " << c;
  }
  const guided_problems masked = masked_problem(d);
  guided_options o = baseline_case(0, N);
  o.steps = 10;
  diffsample::testing::device_buffer<float> particles(std::size_t(N * d));
  guided_outputs out;
  out.particles = particles.ptr;
  EXPECT_EQ(guided_sample(mix, out, masked, o, gpu).operator_path, mixture_path::direct);
  // Automatic on the CUDA executor: 48 x 64 entries stay on the fused kernel (operator_gemm_worthwhile(.., cuda)).
  diffsample::testing::device_buffer<float> dense_particles(std::size_t(pr.problems * N * d));
  out.particles = dense_particles.ptr;
  EXPECT_EQ(guided_sample(mix, out, pr, o, gpu).operator_path, mixture_path::direct);
}

// One operator shared by B N = 2^31 particles (128 problems of 2^24, d_x = d_y = 1): BLAS and cuBLAS count a product's
// columns in int, and the DPS guidance took all B N particles as one product, int(2^31) = -2^31 columns, which
// cuBLAS refuses mid-run (a count wrapped to a small positive one would have left the other particles' rows
// unwritten). The products now take one problem's particles each (at most 2^24); the run must match the direct
// (per-particle) run on the first and the last problem within 1e-4 of 1 + |x| (the bound of
// DpsAndPigdmRunTheirGuidanceThroughCublasAndMatchThePlan). About 70 GB of device memory: skipped with the reason on
// a smaller device, and under compute-sanitizer.
TEST(OperatorGemmGpu, ASharedOperatorOverMoreParticlesThanAnIntCounts) {
  DIFFSAMPLE_REQUIRE_GPU();
  DIFFSAMPLE_SKIP_UNDER_SANITIZER("2^31 particles, about 70 GB of device memory");
  const execution gpu{executor::cuda, nullptr};
  const gaussian_mixture mix(1, {0.4, 0.6}, {-1.0, 1.5}, {0.5, 0.8});
  const std::int64_t B = 128, N = std::int64_t(1) << 24, BN = B * N;
  guided_problems pr;
  pr.problems = B;
  pr.d_y = 1;
  pr.A = {0.8};
  for (std::int64_t b = 0; b < B; ++b) pr.y.push_back(0.5 * std::sin(0.3 * double(b)));
  pr.sigma_y = {0.5};
  guided_options o;
  o.sampler = guided_sampler::dps;
  o.particles = N;
  o.steps = 2;
  o.seed = 17;
  o.operator_path = mixture_path::gemm;
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  const std::size_t need = guided_workspace_bytes(mix, pr, o, gpu) + std::size_t(BN) * sizeof(float) + (std::size_t(2) << 30);
  if (free_bytes < need)
    GTEST_SKIP() << "needs about " << need / 1e9 << " GB of device memory, " << free_bytes / 1e9 << " GB free";
  diffsample::testing::device_buffer<float> particles(static_cast<std::size_t>(BN));
  guided_outputs out;
  out.particles = particles.ptr;
  // The first and the last problem's particles of a run.
  const auto ends = [&] {
    std::vector<float> v(static_cast<std::size_t>(2 * N));
    EXPECT_EQ(cudaMemcpy(v.data(), particles.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v.data() + N, particles.ptr + (BN - N), N * sizeof(float), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return v;
  };
  const guided_report rep = guided_sample(mix, out, pr, o, gpu);
  EXPECT_EQ(rep.operator_path, mixture_path::gemm);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = ends();
  o.operator_path = mixture_path::direct;
  EXPECT_EQ(guided_sample(mix, out, pr, o, gpu).operator_path, mixture_path::direct);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> ref = ends();
  double worst = 0;
  for (std::size_t e = 0; e < ref.size(); ++e)
    worst = std::max(worst, std::abs(got[e] - double(ref[e])) / (1 + std::abs(double(ref[e]))));
  EXPECT_LE(worst, 1e-4);
}

// TMPD on the CPU executor with a dense 40 x 48 operator and 2 problems of 16 particles, forced to form A C A^T as
// products over all particles (the report says gemm) and forced direct (the per-particle FP64 sums; also what
// automatic takes below d_y x d_x = 4096). After one step the particles agree up to the covariances' summation
// order: FP64 sums of 48 products differ by about
// 48 2^-53 relative, which the Cholesky solve and the FP32 update keep far below one float ulp of x, so agreement is
// required to 1e-6 of 1 + |x| (seen: bit for bit here). Shared A (one product) and per-problem A (one product per
// problem).
// The ask/tell plan takes the products too and reproduces guided_sample() bit for bit over 3 steps. Seen failing
// with the covariance's factor s^2 / a left out of the products (differences up to 53 of 1 + |x|).
TEST(OperatorGemm, TmpdFormsItsCovariancesAsProductsAndMatchesTheDirectRun) {
  const std::int64_t d = 48, dy = 40;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  for (int shared = 0; shared < 2; ++shared) {
    guided_problems pr;
    pr.problems = 2;
    pr.d_y = dy;
    if (shared == 1) {
      pr.A = random_values(dy * d, 41, 1.0 / 8.0);
    } else {
      for (int b = 0; b < 2; ++b)
        pr.operators.push_back(observation_operator::dense(dy, d, random_values(dy * d, 42 + b, 1.0 / 8.0)));
    }
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t o = 0; o < dy; ++o) pr.y.push_back(0.3 * std::sin(0.7 * o + b));
    pr.sigma_y = {0.4, 0.5};
    guided_options o;
    o.sampler = guided_sampler::tmpd;
    o.steps = 1;
    o.seed = 5;
    std::vector<float> runs[2];
    o.particles = 16;
    for (int c = 0; c < 2; ++c) {
      o.operator_path = c == 0 ? mixture_path::direct : mixture_path::gemm;
      runs[c].resize(std::size_t(2 * o.particles * d));
      guided_outputs out;
      out.particles = runs[c].data();
      const guided_report rep = guided_sample(mix, out, pr, o, host);
      EXPECT_EQ(rep.operator_path, c == 0 ? mixture_path::direct : mixture_path::gemm) << shared;
    }
    for (std::int64_t e = 0; e < 2 * 16 * d; ++e) {
      ASSERT_TRUE(std::isfinite(runs[1][e])) << e;
      ASSERT_NEAR(runs[1][e], runs[0][e], 1e-6 * (1 + std::abs(runs[0][e]))) << "shared " << shared << " entry " << e;
    }
    o.steps = 3;
    std::vector<float> fused(std::size_t(2 * 16 * d));
    guided_outputs out;
    out.particles = fused.data();
    guided_sample(mix, out, pr, o, host);
    EXPECT_EQ(fused, plan_particles(mix, pr, o)) << "shared " << shared;
  }
}

// A problem's DPS / Pi-GDM run does not depend on the other problems of the call: the automatic path is decided on a
// problem's own particles and the products are one per problem, shared operator or not, so problem 0 of a batch of
// 2 or 4 equals the problem alone bit for bit, on the direct path (40 particles) and on the products' (64). Seen
// failing before: with a shared 32 x 32 operator, 40 particles alone ran direct and in a batch of 2 (80 rows in one
// product) the products, 1,225 of 1,280 values apart.
TEST(OperatorGemm, AProblemsRunDoesNotDependOnTheBatch) {
  const std::int64_t d = 32, dy = 32;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  for (const std::int64_t N : {40, 64})
    for (int c = 0; c < 3; ++c) {
      const guided_options o = baseline_case(c, N);
      std::vector<float> alone;
      mixture_path alone_path = mixture_path::automatic;
      for (const std::int64_t B : {1, 2, 4}) {
        guided_problems pr;
        pr.problems = B;
        pr.d_y = dy;
        pr.A = random_values(dy * d, 5, 1.0 / 8.0);
        for (std::int64_t i = 0; i < dy; ++i) pr.A[i * d + i] += 4.0;  // well conditioned: Pi-GDM keeps dense rows
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t q = 0; q < dy; ++q) pr.y.push_back(0.3 * std::sin(0.7 * q + b));
        pr.sigma_y = {0.3};
        std::vector<float> x(std::size_t(B * N * d));
        guided_outputs out;
        out.particles = x.data();
        const guided_report rep = guided_sample(mix, out, pr, o, host);
        EXPECT_EQ(rep.operator_path, N >= 64 ? mixture_path::gemm : mixture_path::direct)
            << to_string(o.sampler) << ", " << B << " problems of " << N;
        const std::vector<float> first(x.begin(), x.begin() + N * d);
        if (B == 1) {
          alone = first;
          alone_path = rep.operator_path;
        } else {
          EXPECT_EQ(rep.operator_path, alone_path) << to_string(o.sampler) << ", " << B << " problems of " << N;
          EXPECT_EQ(first, alone) << to_string(o.sampler) << ", problem 0 of " << B << " against alone, " << N;
        }
      }
    }
}

// TMPD's covariances as products (the CPU executor past the size rule: a shared 64 x 64 operator) take their FP64
// scratch from the run's workspace, and the step-by-step run's denoiser calls take their channel constants from a
// per-thread buffer: with a caller's workspace of guided_workspace_bytes() a run allocates neither (it allocated a
// vector of A and the rows, here (4096 + 48 x 4096) doubles, per call, and the 4 x (4 + 64) floats of a channel table
// per denoiser call), and gives the bits of the run that allocates its own workspace. (The run's host tables and the
// thread pool's tasks are small host allocations per call, as in every guided run.)
TEST(OperatorGemm, TmpdProductsScratchComesFromTheWorkspace) {
  const std::int64_t d = 64, dy = 64, N = 16;
  const gaussian_mixture mix = grid_mixture(d, 3, 3.0, 0.5);
  const guided_problems pr = dense_problems(d, dy);
  guided_options o;
  o.sampler = guided_sampler::tmpd;
  o.steps = 2;
  o.particles = N;
  o.seed = 9;
  const std::size_t BN = std::size_t(pr.problems * N);
  std::vector<float> own(BN * d), given(BN * d);
  guided_outputs out;
  out.particles = own.data();
  EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path, mixture_path::gemm);
  const std::size_t bytes = guided_workspace_bytes(mix, pr, o, host);
  std::vector<unsigned char> workspace(bytes);
  out.particles = given.data();
  guided_sample(mix, out, pr, o, host, workspace.data(), bytes);  // the pool's and the per-thread buffers' first use
  watched_size = std::size_t(dy * d + 48 * dy * d) * sizeof(double);
  watched_allocations = 0;
  second_watched_size = std::size_t(mix.components() * (4 + d)) * sizeof(float);
  second_watched_allocations = 0;
  counting = true;
  const guided_report rep = guided_sample(mix, out, pr, o, host, workspace.data(), bytes);
  counting = false;
  watched_size = second_watched_size = 0;
  EXPECT_EQ(rep.operator_path, mixture_path::gemm);
  EXPECT_EQ(watched_allocations.load(), 0) << "the covariances' scratch was allocated";
  EXPECT_EQ(second_watched_allocations.load(), 0) << "a channel table was allocated per denoiser call";
  EXPECT_EQ(given, own);
}

// The automatic paths of the guided runs on the CPU executor follow the measured bounds: DPS / Pi-GDM take the
// products from 64 particles per problem (a shared 64 x 64 operator: 1 problem of 16 particles direct, 64 gemm;
// 2 problems of 32 particles sharing it: direct, each problem's run as alone, OperatorGemm.AProblemsRunDoesNotDepend
// OnTheBatch; 64 rows of one product took the products before); TMPD from d_y x d_x = 4096 at any number of particles
// (64 x 64 with 4 particles gemm, 40 x 48 with 64 direct). Seen failing against the former shared rule (16 points and
// 1024 entries for both).
TEST(OperatorGemm, GuidedRunsFollowTheMeasuredBounds) {
  struct run_case {
    guided_sampler sampler;
    std::int64_t d, dy, problems, N;
    mixture_path expected;
  };
  for (const run_case c : {run_case{guided_sampler::dps, 64, 64, 1, 16, mixture_path::direct},
                           run_case{guided_sampler::pigdm, 64, 64, 1, 64, mixture_path::gemm},
                           run_case{guided_sampler::dps, 64, 64, 2, 32, mixture_path::direct},
                           run_case{guided_sampler::dps, 64, 64, 2, 64, mixture_path::gemm},
                           run_case{guided_sampler::tmpd, 64, 64, 1, 4, mixture_path::gemm},
                           run_case{guided_sampler::tmpd, 48, 40, 1, 64, mixture_path::direct}}) {
    const gaussian_mixture mix = grid_mixture(c.d, 3, 3.0, 0.5);
    guided_problems pr;
    pr.problems = c.problems;
    pr.d_y = c.dy;
    pr.A = random_values(c.dy * c.d, 61, 1.0 / 8.0);
    // Well conditioned (a square Gaussian A is not: Pi-GDM would run on reduce_rank's orthogonal rows, whose
    // guidance keeps the kernels' path; README, "Accuracy at small sigma_y").
    for (std::int64_t i = 0; i < std::min(c.dy, c.d); ++i) pr.A[i * c.d + i] += 4.0;
    pr.y.assign(std::size_t(c.problems * c.dy), 0.3);
    pr.sigma_y = {0.5};
    guided_options o;
    o.potentials = guided_potentials::linear;
    o.sampler = c.sampler;
    o.particles = c.N;
    o.steps = 1;
    std::vector<float> particles(std::size_t(c.problems * c.N * c.d));
    guided_outputs out;
    out.particles = particles.data();
    EXPECT_EQ(guided_sample(mix, out, pr, o, host).operator_path, c.expected)
        << to_string(c.sampler) << " " << c.dy << " x " << c.d << ", " << c.problems << " x " << c.N;
  }
}
