// Metrics: the sliced Wasserstein distance (host reference, the CPU executor, the CUDA executor) against exact
// values for shifted Gaussians and against each other, and component weights recovered from exact samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <omp.h>

#include <diffsample/metrics.hpp>
#include <diffsample/posterior.hpp>

#include "kernels/rng.cuh"
#include "reference/helpers.hpp"

namespace ds = diffsample;
namespace dt = diffsample::testing;

namespace {

ds::execution cpu() { return {ds::executor::cpu, nullptr}; }

template <class F>
void expect_invalid(F&& f, const char* fragment) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << fragment;
  } catch (const ds::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

std::vector<float> normals(std::int64_t n, std::int64_t d, unsigned seed, const std::vector<double>& shift = {},
                           double scale = 1) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  std::vector<float> x(n * d);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) x[i * d + j] = float(scale * z(gen) + (shift.empty() ? 0.0 : shift[j]));
  return x;
}

double max_norm(const std::vector<float>& x, std::int64_t d) {
  double r = 0;
  for (std::size_t i = 0; i < x.size() / d; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += double(x[i * d + j]) * x[i * d + j];
    r = std::max(r, std::sqrt(s));
  }
  return r;
}

// Direction t of the library, rebuilt here from the Philox stream (seed, t, 0); also returns the normals' norm.
std::vector<double> direction(std::uint64_t seed, int t, int d, double* norm_out = nullptr) {
  ds::kernels::philox rng(seed, std::uint64_t(t), 0);
  std::vector<double> u(d);
  double norm = 0;
  rng.normals(d, [&](int j, float z) {
    u[j] = z;
    norm += double(z) * z;
  });
  norm = std::sqrt(norm);
  for (auto& v : u) v /= norm;
  if (norm_out) *norm_out = norm;
  return u;
}

}  // namespace

// ---- sliced Wasserstein: exact references ----------------------------------------------------------------------

// 1-D, a ~ N(0, 1) and b ~ N(m, 1), n samples each: W1 = W2 = |m| exactly. The one direction is +-1. With m = 2 the
// sorted differences b_(i) - a_(i) = m + delta_i all share the sign of m (the largest order-statistic gaps of two
// samples of 1e5 normals are about 0.5), so the empirical W1 is |m + mean(delta)| = |mean(b) - mean(a)|, whose
// standard error is sqrt(2 / n) = 0.0045: asserted within 4 of those. W2^2 = m^2 + 2 m mean(delta) + mean(delta^2)
// adds mean(delta^2) / (2 m) to that, where mean(delta^2) is the squared W2 between two samples of N(0, 1):
// (c2 / sqrt(n))^2 with c2 <= 3.5 (40 simulated pairs at n = 2e4: mean 2.5, largest 3.5), i.e. 3e-5 here.
// Seen to fail (host and CPU executor alike) with the sort removed (W1 2.0940, W2 2.4459 against 2; tolerance 0.018),
// with the p-th power dropped for p = 2 (W2 = sqrt(W1) = 1.4112) and with the directions left unnormalised
// (W1 1.1684: the one normal's |z| times 2).
TEST(SlicedWasserstein, ShiftedGaussians1D) {
  const std::int64_t n = 100000;
  const double m = 2.0;
  const std::vector<float> a = normals(n, 1, 1), b = normals(n, 1, 2, {m});
  const double se = std::sqrt(2.0 / n), bias2 = 3.5 * 3.5 / n / (2 * m);
  for (int p = 1; p <= 2; ++p) {
    const double host = ds::sliced_wasserstein(n, n, 1, a.data(), b.data(), 4, 7, p);
    const double exec = ds::sliced_wasserstein(n, n, 1, a.data(), b.data(), 4, 7, p, cpu());
    std::printf("p = %d: host %.5f, cpu executor %.5f, exact %.5f, tolerance %.5f\n", p, host, exec, m,
                4 * se + (p == 2 ? bias2 : 0));
    EXPECT_NEAR(host, m, 4 * se + (p == 2 ? bias2 : 0)) << "p = " << p;
    EXPECT_NEAR(exec, m, 4 * se + (p == 2 ? bias2 : 0)) << "p = " << p;
  }
}

// d = 8: a ~ N(0, I), b ~ N(v, I) with |v| = 4. On a unit direction u the projections are N(0, 1) and
// N(<u, v>, 1), so W_p = |<u, v>| for each direction, and the reference over the call's own directions (rebuilt
// from the Philox stream) is mean_t |<u_t, v>| (p = 1) or sqrt(mean_t <u_t, v>^2) (p = 2).
// Sample error: per direction |W_p(emp a, emp b) - |<u, v>|| <= W_p(emp a, N(0,1)) + W_p(emp b, N(<u,v>,1)); for
// p = 1, E W1(emp, N(0,1)) <= J / sqrt(n), J = int sqrt(Phi (1 - Phi)) dx = 1.615, so the two-sample term is at most
// c1 / sqrt(n) with c1 = 2 J = 3.23 in expectation; for p = 2 use c2 = 3.5 (the largest of 40 simulated two-sample
// W2 sqrt(n), mean 2.5). The mean over directions (or RMS, which is 1-Lipschitz) keeps that bound; asserted within
// 3 c_p / sqrt(n) = 0.043 / 0.047 at n = 5e4.
// Direction error: over uniform directions E|<u, v>| = |v| E|u_1| = |v| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) and
// E <u, v>^2 = |v|^2 / d; the means over L directions are within 4 standard deviations of the direction average,
// sd(|u_1|) / sqrt(L) and sd(u_1^2) / sqrt(L) with Var(u_1^2) = 3 / (d (d + 2)) - 1 / d^2 (checked with L = 4096,
// directions only, no samples).
// Seen to fail (host and CPU executor alike) with the sort removed (p = 1: 1.4447, p = 2: 1.8094 against 0.9000 and
// 1.1274), with the p-th power dropped for p = 2 (0.9489 against 1.1274) and with the directions left unnormalised
// (p = 1: 2.4336 against 0.9000). The uniformity check guards the construction the per-direction reference shares
// with the library.
TEST(SlicedWasserstein, ShiftedGaussiansMatchExactPerDirection) {
  const std::int64_t n = 50000, d = 8;
  const int L = 64;
  const std::uint64_t seed = 42;
  const std::vector<double> v = {2, -1, 0.5, 1.5, -2, 1, 0.5, -1.5};
  double vn = 0;
  for (double x : v) vn += x * x;
  vn = std::sqrt(vn);
  const std::vector<float> a = normals(n, d, 3), b = normals(n, d, 4, v);
  double ref1 = 0, ref2 = 0;
  for (int t = 0; t < L; ++t) {
    const std::vector<double> u = direction(seed, t, int(d));
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += u[j] * v[j];
    ref1 += std::abs(s) / L;
    ref2 += s * s / L;
  }
  ref2 = std::sqrt(ref2);
  const double c[3] = {0, 3.23, 3.5};
  for (int p = 1; p <= 2; ++p) {
    const double ref = p == 1 ? ref1 : ref2, tol = 3 * c[p] / std::sqrt(double(n));
    const double host = ds::sliced_wasserstein(n, n, d, a.data(), b.data(), L, seed, p);
    const double exec = ds::sliced_wasserstein(n, n, d, a.data(), b.data(), L, seed, p, cpu());
    std::printf("p = %d: host %.5f, cpu executor %.5f, exact over these directions %.5f, tolerance %.4f\n", p, host,
                exec, ref, tol);
    EXPECT_NEAR(host, ref, tol) << "p = " << p;
    EXPECT_NEAR(exec, ref, tol) << "p = " << p;
  }
  // The directions are uniform on the sphere.
  const int many = 4096;
  double m1 = 0, m2 = 0;
  for (int t = 0; t < many; ++t) {
    const std::vector<double> u = direction(seed, t, int(d));
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += u[j] * v[j];
    m1 += std::abs(s) / many;
    m2 += s * s / many;
  }
  const double e1 = std::tgamma(d / 2.0) / (std::sqrt(M_PI) * std::tgamma((d + 1) / 2.0));
  const double sd1 = std::sqrt(1.0 / d - e1 * e1), sd2 = std::sqrt(3.0 / (d * (d + 2.0)) - 1.0 / (d * d));
  std::printf("directions: mean |<u,v>| %.4f (uniform %.4f), mean <u,v>^2 %.4f (uniform %.4f)\n", m1, vn * e1, m2,
              vn * vn / d);
  EXPECT_NEAR(m1, vn * e1, 4 * vn * sd1 / std::sqrt(double(many)));
  EXPECT_NEAR(m2, vn * vn / d, 4 * vn * vn * sd2 / std::sqrt(double(many)));
}

// ---- sliced Wasserstein: executors against the host reference ------------------------------------------------

// The CPU executor rounds FP64 projections to float before sorting; everything else (directions, dot products,
// merge, order of the sum) is the host function's. Rounding moves each atom by at most 2^-24 |x_i| and W_p (and the
// mean or RMS over directions) is 1-Lipschitz in such moves: |difference| <= 2^-23 max |x_i| (+ FP64 rounding).
// Chunking (a workspace for one direction per pass) must not change a single bit.
TEST(SlicedWasserstein, CpuExecutorMatchesHost) {
  struct shape {
    std::int64_t na, nb, d;
    int directions;
  };
  for (const shape s : {shape{1000, 700, 3, 16}, shape{1, 500, 5, 8}, shape{333, 1, 1, 3}, shape{2048, 4096, 17, 9},
                        shape{1, 1, 2, 5}}) {
    const std::vector<float> a = normals(s.na, s.d, 10, {}, 3.0), b = normals(s.nb, s.d, 11, {}, 2.0);
    const double R = std::max(max_norm(a, s.d), max_norm(b, s.d));
    for (int p = 1; p <= 2; ++p) {
      const double host = ds::sliced_wasserstein(s.na, s.nb, s.d, a.data(), b.data(), s.directions, 5, p);
      const double exec = ds::sliced_wasserstein(s.na, s.nb, s.d, a.data(), b.data(), s.directions, 5, p, cpu());
      EXPECT_LE(std::abs(host - exec), std::ldexp(R, -23) * (1 + 1e-9) + 1e-13 * host)
          << s.na << " x " << s.nb << " in d = " << s.d << ", p = " << p << ": host " << host << ", cpu " << exec;
      const std::size_t one = ds::sliced_wasserstein_workspace_bytes(s.na, s.nb, s.d, 1, ds::executor::cpu);
      std::vector<unsigned char> ws(one);
      double chunked = NAN;
      EXPECT_EQ(ds::sliced_wasserstein_async(&chunked, s.na, s.nb, s.d, a.data(), b.data(), s.directions, 5, p, cpu(),
                                             ws.data(), ws.size()),
                ds::executor::cpu);
      EXPECT_EQ(chunked, exec) << "one direction per pass changed the result";
    }
  }
}

// The same on the CUDA executor: device buffers, the CUB segmented sort. The directions' normals may differ from the
// host's by at most 1e-5 each (tests/test_rng_gpu), so |u_gpu - u| <= 2 |dz| / |z| <= 2e-5 sqrt(d) / |z|, and each
// projection moves by at most that times |x_i|: the tolerance is (2^-23 + 4e-5 sqrt(d) / min_t |z_t|) max |x_i|.
// Chunking must not change a bit here either.
TEST(SlicedWassersteinGpu, CudaExecutorMatchesHost) {
  DIFFSAMPLE_REQUIRE_GPU();
  // Under compute-sanitizer (DIFFSAMPLE_SANITIZER_RUN) a tenth of the points and 8 directions: racecheck of the
  // full size ran past its 90 s limit on an H200 (CUB's radix-sort passes, 2 x 64 directions one pass at a time);
  // the kernels and their shared memory are the same at either size.
  const bool sanitized = std::getenv("DIFFSAMPLE_SANITIZER_RUN") != nullptr;
  const std::int64_t na = sanitized ? 2000 : 20000, nb = sanitized ? 1300 : 13000, d = 16;
  const int L = sanitized ? 8 : 64;
  const std::vector<float> a = normals(na, d, 20, {}, 2.0), b = normals(nb, d, 21, {}, 1.5);
  const dt::device_buffer<float> da(a), db(b);
  const double R = std::max(max_norm(a, d), max_norm(b, d));
  double min_z = INFINITY;
  for (int t = 0; t < L; ++t) {
    double z;
    direction(9, t, int(d), &z);
    min_z = std::min(min_z, z);
  }
  const double tol = (std::ldexp(1.0, -23) + 4e-5 * std::sqrt(double(d)) / min_z) * R;
  const ds::execution gpu{ds::executor::cuda, nullptr};
  for (int p = 1; p <= 2; ++p) {
    const double host = ds::sliced_wasserstein(na, nb, d, a.data(), b.data(), L, 9, p);
    const double dev = ds::sliced_wasserstein(na, nb, d, da.ptr, db.ptr, L, 9, p, gpu);
    std::printf("p = %d: host %.7f, cuda %.7f, tolerance %.2e\n", p, host, dev, tol);
    EXPECT_NEAR(dev, host, tol);
    const std::size_t one = ds::sliced_wasserstein_workspace_bytes(na, nb, d, 1, ds::executor::cuda);
    dt::device_buffer<unsigned char> ws(one);
    dt::device_buffer<double> result(1);
    EXPECT_EQ(ds::sliced_wasserstein_async(result.ptr, na, nb, d, da.ptr, db.ptr, L, 9, p, gpu, ws.ptr, one),
              ds::executor::cuda);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(result.download()[0], dev) << "one direction per pass changed the result";
  }
  // Single-point sets (segments of one element) and d = 1.
  const std::vector<float> one_a = {1.5f}, line_b = normals(300, 1, 22);
  const dt::device_buffer<float> d_one(one_a), d_line(line_b);
  for (int p = 1; p <= 2; ++p)
    EXPECT_NEAR(ds::sliced_wasserstein(1, 300, 1, d_one.ptr, d_line.ptr, 3, 1, p, gpu),
                ds::sliced_wasserstein(1, 300, 1, one_a.data(), line_b.data(), 3, 1, p), 1e-6);
}

// Hand-computed values. a = {0, 1}, b = {0, 1, 2} on a line (d = 1, so every direction is +-1 and the distance is
// the 1-D one): the quantile functions differ by 1 on [1/3, 1/2) and [2/3, 1) and agree elsewhere, so W1 = 1/2 and
// W2 = sqrt(1/2). Unequal sizes exercise the integer quantile grid (atoms of b meet two atoms of a), swapped sizes
// the other branch, and a = {3} against b a single-atom segment. Seen failing with each overlapping atom counted
// with its whole mass instead of the overlap (W1 = 0.6667).
TEST(SlicedWasserstein, PinnedValuesOnTheCpuExecutor) {
  const std::vector<float> a = {1.f, 0.f}, b = {2.f, 0.f, 1.f}, c = {3.f};
  for (int p = 1; p <= 2; ++p) {
    const double w = p == 1 ? 0.5 : std::sqrt(0.5);
    EXPECT_DOUBLE_EQ(ds::sliced_wasserstein(2, 3, 1, a.data(), b.data(), 5, 3, p, cpu()), w) << "p = " << p;
    EXPECT_DOUBLE_EQ(ds::sliced_wasserstein(3, 2, 1, b.data(), a.data(), 5, 3, p, cpu()), w) << "p = " << p;
    // {3} against {0, 1, 2}: W1 = (3 + 2 + 1) / 3 = 2, W2^2 = (9 + 4 + 1) / 3.
    EXPECT_DOUBLE_EQ(ds::sliced_wasserstein(1, 3, 1, c.data(), b.data(), 2, 3, p, cpu()),
                     p == 1 ? 2.0 : std::sqrt(14.0 / 3.0)) << "p = " << p;
  }
}

// The asynchronous call issues no host synchronisation and no host read-back, so it can be captured in a CUDA graph
// (a caller workspace keeps allocation out of the graph; relaxed mode because argument validation queries pointer
// attributes). Replays recompute the same value bit for bit, equal to the uncaptured call, and the graph follows
// new sample values written into the same buffers.
TEST(SlicedWassersteinGpu, AsyncCallCapturedInAGraph) {
  DIFFSAMPLE_REQUIRE_GPU();
  const std::int64_t na = 3000, nb = 2000, d = 8;
  const int L = 32;
  const std::vector<float> a = normals(na, d, 30), b = normals(nb, d, 31, {}, 2.0), b2 = normals(nb, d, 32, {}, 3.0);
  dt::device_buffer<float> da(a), db(b);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const ds::execution gpu{ds::executor::cuda, stream};
  const std::size_t bytes = ds::sliced_wasserstein_workspace_bytes(na, nb, d, 8, ds::executor::cuda);
  dt::device_buffer<unsigned char> ws(bytes);
  dt::device_buffer<double> result(1);
  for (int p = 1; p <= 2; ++p) {
    db.upload(b);
    const double direct = ds::sliced_wasserstein(na, nb, d, da.ptr, db.ptr, L, 4, p, gpu, ws.ptr, bytes);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
    ds::sliced_wasserstein_async(result.ptr, na, nb, d, da.ptr, db.ptr, L, 4, p, gpu, ws.ptr, bytes);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 2; ++replay) {
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      EXPECT_EQ(result.download()[0], direct) << "p = " << p << ", replay " << replay;
    }
    db.upload(b2);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(result.download()[0], ds::sliced_wasserstein(na, nb, d, da.ptr, db.ptr, L, 4, p, gpu, ws.ptr, bytes));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

TEST(SlicedWasserstein, Validation) {
  const std::vector<float> a = normals(10, 2, 1), b = normals(12, 2, 2);
  auto exec = [&](const float* pa, std::int64_t na, const float* pb, std::int64_t nb, std::int64_t d, int dirs,
                  int p) { return ds::sliced_wasserstein(na, nb, d, pa, pb, dirs, 1, p, cpu()); };
  auto host = [&](const float* pa, std::int64_t na, const float* pb, std::int64_t nb, std::int64_t d, int dirs,
                  int p) { return ds::sliced_wasserstein(na, nb, d, pa, pb, dirs, 1, p); };
  expect_invalid([&] { exec(a.data(), 0, b.data(), 12, 2, 4, 1); }, "n_a");
  expect_invalid([&] { host(a.data(), 10, b.data(), -1, 2, 4, 1); }, "n_b");
  expect_invalid([&] { exec(a.data(), 10, b.data(), 12, 0, 4, 1); }, "dim = 0, must be at least 1");
  expect_invalid([&] { host(a.data(), 10, b.data(), 12, 0, 4, 1); }, "dim = 0, must be at least 1");
  expect_invalid([&] { exec(a.data(), 10, b.data(), 12, 2, 0, 1); }, "directions");
  expect_invalid([&] { host(a.data(), 10, b.data(), 12, 2, -3, 1); }, "directions");
  expect_invalid([&] { exec(a.data(), 10, b.data(), 12, 2, 4, 3); }, "p: must be 1 or 2, got 3");
  expect_invalid([&] { host(a.data(), 10, b.data(), 12, 2, 4, 0); }, "p: must be 1 or 2, got 0");
  expect_invalid([&] { exec(nullptr, 10, b.data(), 12, 2, 4, 1); }, "a: null pointer");
  expect_invalid([&] { exec(a.data(), 10, nullptr, 12, 2, 4, 1); }, "b: null pointer");
  expect_invalid([&] { host(nullptr, 10, b.data(), 12, 2, 4, 1); }, "null pointer");
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max() / 4;
  expect_invalid([&] { exec(a.data(), huge, b.data(), 12, 2, 4, 1); }, "overflow");
  expect_invalid([&] { ds::sliced_wasserstein_workspace_bytes(1 << 30, 1 << 30, 4, 1 << 30, ds::executor::cpu); },
                 "overflow");
  expect_invalid([&] { ds::sliced_wasserstein_workspace_bytes(10, 12, 2, 0, ds::executor::cpu); },
                 "directions_per_pass: must be >= 1, got 0");  // was named "directions"
  expect_invalid([&] { ds::sliced_wasserstein_workspace_bytes(10, 12, 2, 4, static_cast<ds::executor>(9)); },
                 "where: invalid value 9");  // was named "executor"
  double r;
  expect_invalid([&] { ds::sliced_wasserstein_async(nullptr, 10, 12, 2, a.data(), b.data(), 4, 1, 1, cpu()); },
                 "result");
  std::vector<unsigned char> small(64);
  expect_invalid([&] { ds::sliced_wasserstein_async(&r, 10, 12, 2, a.data(), b.data(), 4, 1, 1, cpu(), small.data(),
                                                    small.size()); },
                 "workspace_bytes");
  // Non-finite samples: the host function names the value; the executor call reports NaN (async) or throws after
  // the run (synchronous).
  std::vector<float> bad = a;
  bad[7] = NAN;
  expect_invalid([&] { host(bad.data(), 10, b.data(), 12, 2, 4, 1); }, "a[3][1]");
  bad[7] = INFINITY;
  expect_invalid([&] { host(a.data(), 10, bad.data(), 10, 2, 4, 1); }, "b[3][1]");
  expect_invalid([&] { exec(bad.data(), 10, b.data(), 12, 2, 4, 2); }, "non-finite");
  r = 0;
  ds::sliced_wasserstein_async(&r, 10, 10, 2, a.data(), bad.data(), 4, 1, 1, cpu());
  EXPECT_TRUE(std::isnan(r));
}

// The result and a caller's workspace may not share memory with the samples: with fewer directions per pass than
// directions, the result written after the first pass was read back as samples by the next (a result inside a
// changed the distance and the caller's a), and a workspace over b was overwritten by the projections before b was
// read. Refused naming both, the samples untouched; a and b may still be one array (distance 0).
TEST(SlicedWasserstein, ResultAndWorkspaceMustNotOverlapTheSamples) {
  const std::vector<float> a = normals(10, 2, 1), b = normals(12, 2, 2);
  const std::size_t one_pass = ds::sliced_wasserstein_workspace_bytes(10, 12, 2, 1, ds::executor::cpu);
  std::vector<unsigned char> ws(one_pass + 64);
  double separate = 0;
  ds::sliced_wasserstein_async(&separate, 10, 12, 2, a.data(), b.data(), 8, 1, 1, cpu(), ws.data(), ws.size());
  for (int which : {0, 1}) {  // the result inside a, inside b
    std::vector<float> held = which == 0 ? a : b;
    const std::vector<float> before = held;
    double* result = reinterpret_cast<double*>(held.data() + 4);
    const float* pa = which == 0 ? held.data() : a.data();
    const float* pb = which == 1 ? held.data() : b.data();
    expect_invalid([&] { ds::sliced_wasserstein_async(result, 10, 12, 2, pa, pb, 8, 1, 1, cpu(), ws.data(),
                                                      ws.size()); },
                   which == 0 ? "result: must not overlap a" : "result: must not overlap b");
    EXPECT_EQ(held, before) << which;
  }
  // A workspace that holds b.
  std::vector<unsigned char> big(one_pass + 12 * 2 * sizeof(float) + 64);
  float* inside = reinterpret_cast<float*>(big.data() + one_pass);
  std::copy(b.begin(), b.end(), inside);
  double r = 0;
  expect_invalid([&] { ds::sliced_wasserstein_async(&r, 10, 12, 2, a.data(), inside, 8, 1, 1, cpu(), big.data(),
                                                    big.size()); },
                 "must not overlap b");
  EXPECT_TRUE(std::equal(b.begin(), b.end(), inside));
  expect_invalid([&] { ds::sliced_wasserstein(10, 12, 2, a.data(), inside, 8, 1, 1, cpu(), big.data(), big.size()); },
                 "must not overlap b");
  // One array as both samples: fine.
  EXPECT_EQ(ds::sliced_wasserstein(10, 10, 2, a.data(), a.data(), 8, 1, 1, cpu()), 0.0);
  EXPECT_GT(separate, 0.0);
}

// ---- component weights ---------------------------------------------------------------------------------------

namespace {

// Every recovered weight within 4 standard errors sqrt(w (1 - w) / n) of the exact weight. A responsibility lies in
// [0, 1] with mean w_k, so its variance is at most w_k (1 - w_k) and this is a bound on the standard error (the
// average responsibility is never noisier than the hard-assignment share). With K components the chance that any
// exceeds 4 standard errors is below K x 6.3e-5.
void expect_weights(const std::vector<double>& got, const std::vector<double>& exact, std::int64_t n) {
  ASSERT_EQ(got.size(), exact.size());
  double total = 0, worst = 0;
  for (std::size_t k = 0; k < exact.size(); ++k) {
    const double se = std::sqrt(exact[k] * (1 - exact[k]) / double(n));
    EXPECT_NEAR(got[k], exact[k], 4 * se) << "component " << k;
    worst = std::max(worst, std::abs(got[k] - exact[k]) / se);
    total += got[k];
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  std::printf("K = %zu, n = %lld: largest error %.2f standard errors\n", exact.size(), static_cast<long long>(n),
              worst);
}

}  // namespace

// Overlapping diagonal components (responsibilities far from 0 and 1), exact samples of the mixture itself.
// Seen to fail with unnormalised responsibilities (exp(logit - max) summed without dividing by their total: largest
// error 67.8 standard errors), with the weights left out of the logits (46.2) and with the log-determinants left out
// (12.4).
TEST(ComponentWeights, MixtureFromExactSamples) {
  const std::int64_t K = 5, d = 3, n = 40000;
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> uw(0.2, 1.0), um(-1.5, 1.5), uv(0.5, 2.0);
  std::vector<double> w(K), mu(K * d), var(K * d);
  for (auto& x : w) x = uw(gen);
  for (auto& x : mu) x = um(gen);
  for (auto& x : var) x = uv(gen);
  const ds::gaussian_mixture mix(d, w, mu, var);
  std::vector<float> x(n * d);
  mix.sample(x.data(), n, {}, 77, nullptr, 0, cpu());
  const std::vector<double> got = ds::component_weights(mix, n, x.data());
  expect_weights(got, mix.weights(), n);
  double worst = 0;
  for (std::int64_t k = 0; k < K; ++k) worst = std::max(worst, std::abs(got[k] - mix.weights()[k]));
  EXPECT_EQ(ds::component_weight_error(mix, n, x.data()), worst);
}

// Exact posterior samples (mixture_posterior::sample), both code paths: one shared posterior covariance (unit prior
// covariances) and distinct full covariances (diagonal prior covariances that differ by component).
// Seen to fail with unnormalised responsibilities (largest error 90.1 standard errors shared, 97.1 distinct), with
// the weights left out of the logits (2216 and 98.1) and with the log-determinants left out (distinct: 60.6; the
// shared case cannot see it).
TEST(ComponentWeights, PosteriorFromExactSamples) {
  const std::int64_t n = 40000;
  for (int distinct = 0; distinct <= 1; ++distinct) {
    const std::int64_t d = 4;
    std::mt19937_64 gen(11 + distinct);
    std::uniform_real_distribution<double> uw(0.1, 1.0), uv(0.3, 3.0);
    std::normal_distribution<double> z;
    ds::gaussian_mixture prior = [&] {
      if (!distinct) return ds::grid_mixture(d, 5, 1.5, 1.0);
      std::vector<double> w(4), mu(4 * d), var(4 * d);
      for (auto& x : w) x = uw(gen);
      for (auto& x : mu) x = 1.5 * z(gen);
      for (auto& x : var) x = uv(gen);
      return ds::gaussian_mixture(d, w, mu, var);
    }();
    ds::linear_observation o;
    o.d_y = 2;
    o.d_x = d;
    for (std::int64_t e = 0; e < o.d_y * d; ++e) o.A.push_back(z(gen));
    o.sigma_y = 1.0;
    o.y = {0.7, -0.4};
    const ds::mixture_posterior post(prior, o);
    std::vector<float> x(n * d);
    post.sample(x.data(), n, 123 + distinct);
    expect_weights(ds::component_weights(post, n, x.data()), post.weights(), n);
  }
}

// Samples far from every mean against the components' spread, with log-weight differences of order 1: x = +-1e16
// and 3e15 from means 0 and 1 (variance 1e16, so (x - 0.5) / v ~ 1), on the isotropic, the diagonal and the shared
// posterior path. Each log-weight alone is -q_k / 2 with q_k ~ 1e16 (an ulp of 2), and the responsibilities came
// from its rounding: the mixture's returned 0.5 and 0.5 or 0 and 1 for exact responsibilities 0.73 / 0.27.
// They are now within 1e-12 of the exact ones (long double, from the centred difference of the two squares).
TEST(ComponentWeights, SamplesFarFromTheMeans) {
  const double v = 1e16;
  const ds::gaussian_mixture iso(1, {0.3, 0.7}, {0.0, 1.0}, {v, v});
  const ds::gaussian_mixture diagonal(2, {0.3, 0.7}, {0.0, 0.0, 1.0, 0.0}, {v, 1.0, v, 1.0});
  ds::linear_observation o;
  o.d_y = 1;
  o.d_x = 1;
  o.A = {1.0};
  o.sigma_y = 1e8;  // the posterior's variance 5e15 is shared by both components
  o.y = {0.0};
  const ds::mixture_posterior post(iso, o);
  ASSERT_EQ(post.covariances()[0], post.covariances()[1]);
  for (const float x : {1e16f, -1e16f, 3e15f}) {
    SCOPED_TRACE(x);
    // lg_1 - lg_0 = log(w_1 / w_0) - ((x - m_1)^2 - (x - m_0)^2) / (2 S) = log(w_1 / w_0) - (m_0 - m_1)(2 x - m_0 -
    // m_1) / (2 S).
    auto exact = [&](long double lw0, long double lw1, long double m0, long double m1, long double S) {
      const long double t = lw1 - lw0 - (m0 - m1) * (2 * (long double)x - m0 - m1) / (2 * S);
      return double(1 / (1 + std::exp(-t)));
    };
    const double e = exact(std::log(0.3L), std::log(0.7L), 0, 1, v);
    EXPECT_GT(e, 1e-3);  // a question the softmax must answer from the differences
    EXPECT_LT(e, 1 - 1e-3);
    EXPECT_NEAR(ds::component_weights(iso, 1, &x)[1], e, 1e-12);
    const float x2[2] = {x, 0.5f};
    EXPECT_NEAR(ds::component_weights(diagonal, 1, x2)[1], e, 1e-12);
    const double p = exact(post.log_weights()[0], post.log_weights()[1], post.means()[0], post.means()[1],
                           post.covariances()[0]);
    EXPECT_GT(p, 1e-3);
    EXPECT_LT(p, 1 - 1e-3);
    EXPECT_NEAR(ds::component_weights(post, 1, &x)[1], p, 1e-12);
  }
}

// The same far from the means for a posterior whose components have distinct full covariances (the general path):
// prior components of variances (1, 1) and (1, v), means 2e-8 apart, observed through A = [1 1] with sigma_y = 1,
// and samples 3e7 to 1e8 away along the first coordinate, where the precisions S_k^-1 = V_k^-1 + A^T A agree. Each
// whole squared distance is then about 2e16 (ulp 4) while the log-weights' difference is of order 1: the softmax
// must come from the differences q_k - q_r, formed as 2 delta . p_k + |L_k^-1 delta|^2 + p_k^T (S_r - S_k) p_r.
// The last term still rounds by about 2^-53 |p_k| |S_r - S_k| |p_r| (the stored covariances are FP64, and the
// answer depends on their last bits), which is 2e-3 of a log-weight at v = 1.001 and 2e-6 at v = 1 + 1e-6: the
// tolerances 1e-4 and 1e-7 on the weights (measured 2e-5 and 6e-10). Reference: the whole forms in quadruple
// precision (__float128 where the compiler has it: rounding 2e16 1e-34) on the same posterior's FP64 means,
// covariances and weights. Seen failing on the whole forms in FP64: errors 0.34, 1e-2 and 1e-3 at v = 1.001, 4.7e-3,
// 7e-4 and 1.3e-5 at 1 + 1e-6. (At v = 2 the difference form is no better than the whole forms at x_1 = 3e7,
// 3e-3 for both: README, "Metrics".)
TEST(ComponentWeights, SamplesFarFromTheMeansWithDistinctCovariances) {
#if defined(__SIZEOF_FLOAT128__)
  using wide = __float128;
#else
  using wide = long double;
#endif
  struct at {
    double v, tolerance;
  };
  for (const at c : {at{1.001, 1e-4}, at{1.0 + 1e-6, 1e-7}}) {
    const ds::gaussian_mixture prior(2, {0.3, 0.7}, {0.0, 0.0, 2e-8, 0.0}, {1.0, 1.0, 1.0, c.v});
    ds::linear_observation o;
    o.d_y = 1;
    o.d_x = 2;
    o.A = {1.0, 1.0};
    o.sigma_y = 1.0;
    o.y = {0.0};
    const ds::mixture_posterior post(prior, o);
    const auto& S = post.covariances();
    const auto& m = post.means();
    ASSERT_NE(S[3], S[7]);
    ASSERT_NE(S[1], 0.0);  // full covariances
    const float samples[][2] = {{1e8f, 0.5f}, {-1e8f, -0.25f}, {3e7f, 1.f}};
    double worst = 0;
    for (const auto& x : samples) {
      SCOPED_TRACE("v = " + std::to_string(c.v) + ", x_1 = " + std::to_string(x[0]));
      // lg_k = log w_k - q_k / 2 - log det(S_k) / 2, q_k = e^T S_k^-1 e by Cramer's rule (2 x 2), all in `wide`.
      wide lg[2];
      for (int k = 0; k < 2; ++k) {
        const wide a = S[4 * k], b = S[4 * k + 1], d = S[4 * k + 3];
        const wide det = a * d - b * b;
        const wide e0 = wide(x[0]) - wide(m[2 * k]), e1 = wide(x[1]) - wide(m[2 * k + 1]);
        const wide q = (d * e0 * e0 - 2 * b * e0 * e1 + a * e1 * e1) / det;
        lg[k] = wide(post.log_weights()[k]) - q / 2 - wide(0.5L * std::log((long double)det));
      }
      const double want = double(1 / (1 + std::exp(-(long double)(lg[1] - lg[0]))));
      EXPECT_GT(want, 1e-6);  // not saturated: a question the softmax must answer from the differences
      EXPECT_LT(want, 1 - 1e-6);
      const double got = ds::component_weights(post, 1, x)[1];
      EXPECT_NEAR(got, want, c.tolerance);
      worst = std::max(worst, std::fabs(got - want));
    }
    std::printf("v = %.7g: largest error %.3g\n", c.v, worst);
  }
}

// Fixed blocks summed in block order: bit-identical results with 1 and 3 threads.
TEST(ComponentWeights, IndependentOfThreadCount) {
  const ds::gaussian_mixture mix = ds::grid_mixture(2, 3, 1.0, 0.5);
  const std::int64_t n = 100000;
  std::vector<float> x(n * 2);
  mix.sample(x.data(), n, {}, 3, nullptr, 0, cpu());
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<double> one = ds::component_weights(mix, n, x.data());
  omp_set_num_threads(3);
  const std::vector<double> three = ds::component_weights(mix, n, x.data());
  omp_set_num_threads(before);
  EXPECT_EQ(one, three);
}

TEST(ComponentWeights, Validation) {
  const ds::gaussian_mixture mix = ds::grid_mixture(2, 2, 1.0, 0.5);
  std::vector<float> x = {0, 0, 1, 1};
  expect_invalid([&] { ds::component_weights(mix, 0, x.data()); }, "n: must be >= 1");
  expect_invalid([&] { ds::component_weights(mix, 2, nullptr); }, "x: null pointer");
  x[3] = NAN;
  expect_invalid([&] { ds::component_weight_error(mix, 2, x.data()); }, "x[1][1]");
  // A degenerate posterior (sigma_y = 0: covariances of rank d_x - d_y) has no densities.
  ds::linear_observation o;
  o.d_y = 1;
  o.d_x = 2;
  o.A = {1, 0};
  o.sigma_y = 0;
  o.y = {0.5};
  const ds::mixture_posterior post(mix, o);
  x[3] = 0;
  expect_invalid([&] { ds::component_weights(post, 2, x.data()); }, "not numerically positive definite");
}
