// Caller workspaces are scratch: no call may read a byte of its workspace before writing it. On the CUDA executor a
// workspace is whatever the caller's (or a stream-ordered) allocation held, never zeroed, while the CPU executor's own
// scratch is a zero-filled host vector: a kernel that took part of its workspace as zeroed passes every CPU test that
// lets the call allocate and is wrong only on a GPU (where compute-sanitizer's initcheck would name it). These tests
// run each call that takes a workspace on the CPU executor, on the scalar target (the functors the CUDA kernels run)
// and on the widest one, once with its own zeroed scratch and once with a caller workspace filled with 0xff bytes
// (NaN floats, all-ones integers), and require the same bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <diffsample/diffsample.hpp>

#include "reference/cpu_target.hpp"
#include "reference/helpers.hpp"

namespace ds = diffsample;

namespace {

using diffsample::testing::with_target;

const char* const targets[] = {"scalar", nullptr};
const char* name_of(const char* target) { return target != nullptr ? target : "widest"; }

/// A caller workspace of `bytes` filled with 0xff, 16 bytes into its storage (every call accepts 16-byte alignment).
struct poisoned {
  std::vector<unsigned char> storage;
  explicit poisoned(std::size_t bytes) : storage(bytes + 64, 0xff) {}
  void* data() {
    const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(storage.data());
    return storage.data() + (64 - at % 64) % 64 + 16;
  }
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  // (empty vectors' data() may be null, which memcmp may not be given even for 0 bytes)
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

ds::gaussian_mixture diagonal_mixture(int d) {
  std::mt19937_64 gen(3);
  std::normal_distribution<double> z;
  std::uniform_real_distribution<double> u(0.3, 1.5);
  const int K = 3;
  std::vector<double> mu(K * d), var(K * d);
  for (auto& v : mu) v = 2 * z(gen);
  for (auto& v : var) v = u(gen);
  return ds::gaussian_mixture(d, {0.2, 0.5, 0.3}, mu, var);
}

std::vector<float> normals(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> z;
  std::vector<float> v(n);
  for (auto& e : v) e = z(gen);
  return v;
}

const ds::execution cpu{ds::executor::cpu, nullptr};

}  // namespace

// Langevin (every method) and diffusion (every sampler), at a register dimension and at one beyond the list (the
// workspace path, whose chain state lives in the workspace).
TEST(Workspace, ChainSamplersReadNoWorkspaceByteBeforeWritingIt) {
  for (const char* target : targets)
    with_target(target, [&] {
      for (int d : {4, 5}) {
        const ds::gaussian_mixture mix = diagonal_mixture(d);
        const std::int64_t n = 37;
        for (ds::langevin_method method :
             {ds::langevin_method::ula, ds::langevin_method::mala, ds::langevin_method::tamed_ula}) {
          ds::langevin_options o;
          o.method = method;
          o.steps = 6;
          o.step_size = 0.05;
          o.seed = 11;
          std::vector<float> own = normals(n * d, 5), given = own;
          std::vector<std::int64_t> own_acc(n), given_acc(n);
          ds::langevin(mix, own.data(), {nullptr, own_acc.data()}, n, o, cpu);
          const std::size_t bytes = ds::langevin_workspace_bytes(mix, n, o);
          poisoned ws(bytes);
          ds::langevin(mix, given.data(), {nullptr, given_acc.data()}, n, o, cpu, ws.data(), bytes);
          EXPECT_TRUE(same_bits(own, given)) << name_of(target) << " d " << d << " method " << int(method);
          EXPECT_TRUE(same_bits(own_acc, given_acc)) << name_of(target) << " d " << d << " method " << int(method);
        }
        for (ds::diffusion_sampler sampler :
             {ds::diffusion_sampler::ddpm, ds::diffusion_sampler::ddim, ds::diffusion_sampler::ode_heun,
              ds::diffusion_sampler::sequential_measurements}) {
          ds::diffusion_options o;
          o.sampler = sampler;
          o.steps = 5;
          o.seed = 13;
          if (sampler == ds::diffusion_sampler::sequential_measurements) o.measurements = 3;
          std::vector<float> own(n * d), given(n * d);
          ds::diffusion(mix, own.data(), {}, n, o, cpu);
          const std::size_t bytes = ds::diffusion_workspace_bytes(mix, n, o);
          poisoned ws(bytes);
          ds::diffusion(mix, given.data(), {}, n, o, cpu, ws.data(), bytes);
          EXPECT_TRUE(same_bits(own, given)) << name_of(target) << " d " << d << " sampler " << int(sampler);
        }
      }
    });
}

// resample() with every scheme on problems of one tile, and with the schemes whose passes carry sums from tile to
// tile (the CPU executor's tiles hold 2^16 particles) on a problem of two; every output. The CPU passes do not
// depend on the SIMD target.
TEST(Workspace, ResampleReadsNoWorkspaceByteBeforeWritingIt) {
  for (std::int64_t N : {std::int64_t(300), std::int64_t(65536 + 300)}) {
    const std::int64_t B = N < 65536 ? 2 : 1;
    const std::vector<float> lw = normals(B * N, 17);
    for (ds::resampling_scheme scheme :
         {ds::resampling_scheme::multinomial, ds::resampling_scheme::stratified, ds::resampling_scheme::systematic,
          ds::resampling_scheme::residual, ds::resampling_scheme::metropolis, ds::resampling_scheme::rejection}) {
      if (N > 65536 && (scheme == ds::resampling_scheme::metropolis || scheme == ds::resampling_scheme::rejection ||
                        scheme == ds::resampling_scheme::stratified))
        continue;
      ds::resampling_options o;
      o.scheme = scheme;
      o.ess_threshold = 1.0;
      o.seed = 3;
      std::vector<std::int32_t> own_a(B * N), given_a(B * N);
      std::vector<float> own_w(B * N), given_w(B * N);
      std::vector<ds::particle_report> own_r(B), given_r(B);
      ds::resample({own_a.data(), nullptr, own_w.data(), own_r.data()}, B, N, lw.data(), o, cpu);
      const std::size_t bytes = ds::resampling_workspace_bytes(B, N, scheme);
      poisoned ws(bytes);
      ds::resample({given_a.data(), nullptr, given_w.data(), given_r.data()}, B, N, lw.data(), o, cpu, ws.data(),
                   bytes);
      const std::string what = "N " + std::to_string(N) + " " + ds::to_string(scheme);
      EXPECT_TRUE(same_bits(own_a, given_a)) << what;
      EXPECT_TRUE(same_bits(own_w, given_w)) << what;
      EXPECT_TRUE(same_bits(own_r, given_r)) << what;
    }
  }
}

// guided_sample() with every sampler (SMC with each kind of potentials), a dense operator per problem.
TEST(Workspace, GuidedSamplersReadNoWorkspaceByteBeforeWritingIt) {
  const int d = 4;
  const ds::gaussian_mixture prior = diagonal_mixture(d);
  ds::guided_problems pr;
  pr.problems = 2;
  pr.d_y = 2;
  std::mt19937_64 gen(23);
  std::normal_distribution<double> z;
  pr.A.resize(pr.problems * pr.d_y * d);
  for (auto& v : pr.A) v = z(gen);
  pr.y = {0.5, -1.0, 1.5, 0.2};
  pr.sigma_y = {0.4};
  struct config {
    ds::guided_sampler sampler;
    ds::guided_potentials potentials;
  };
  const config configs[] = {
      {ds::guided_sampler::smc, ds::guided_potentials::linear},  {ds::guided_sampler::smc, ds::guided_potentials::moment},
      {ds::guided_sampler::smc, ds::guided_potentials::twisted}, {ds::guided_sampler::smc, ds::guided_potentials::automatic},
      {ds::guided_sampler::dps, ds::guided_potentials::automatic}, {ds::guided_sampler::pigdm, ds::guided_potentials::automatic},
      {ds::guided_sampler::diffpir, ds::guided_potentials::automatic}, {ds::guided_sampler::skrock, ds::guided_potentials::automatic},
      {ds::guided_sampler::tmpd, ds::guided_potentials::automatic}, {ds::guided_sampler::ddrm, ds::guided_potentials::automatic},
      {ds::guided_sampler::dcps, ds::guided_potentials::automatic}};
  for (const char* target : targets)
    with_target(target, [&] {
      for (const config& c : configs) {
        ds::guided_options o;
        o.sampler = c.sampler;
        o.potentials = c.potentials;
        o.particles = 24;
        o.steps = 6;
        o.seed = 29;
        const bool smc = c.sampler == ds::guided_sampler::smc;
        const std::int64_t BN = pr.problems * o.particles;
        struct run {
          std::vector<float> particles, log_weights, samples, ess;
          std::vector<double> log_z;
          std::vector<std::int32_t> count;
        };
        auto outputs = [&](run& r) {
          r.particles.assign(BN * d, 0.f);
          r.samples.assign(BN * d, 0.f);
          ds::guided_outputs out{};
          out.particles = r.particles.data();
          out.samples = r.samples.data();
          if (smc) {
            r.log_weights.assign(BN, 0.f);
            r.ess.assign(pr.problems * (o.steps + 1), 0.f);
            r.log_z.assign(pr.problems, 0.0);
            r.count.assign(pr.problems, 0);
            out.log_weights = r.log_weights.data();
            out.ess_trace = r.ess.data();
            out.log_normaliser = r.log_z.data();
            out.resample_count = r.count.data();
          }
          return out;
        };
        run own, given;
        ds::guided_sample(prior, outputs(own), pr, o, cpu);
        const std::size_t bytes = ds::guided_workspace_bytes(prior, pr, o);
        poisoned ws(bytes);
        ds::guided_sample(prior, outputs(given), pr, o, cpu, ws.data(), bytes);
        const std::string what = std::string(name_of(target)) + " " + ds::to_string(c.sampler) + " " +
                                 ds::to_string(c.potentials);
        EXPECT_TRUE(same_bits(own.particles, given.particles)) << what;
        EXPECT_TRUE(same_bits(own.samples, given.samples)) << what;
        EXPECT_TRUE(same_bits(own.log_weights, given.log_weights)) << what;
        EXPECT_TRUE(same_bits(own.ess, given.ess)) << what;
        EXPECT_TRUE(same_bits(own.log_z, given.log_z)) << what;
        EXPECT_TRUE(same_bits(own.count, given.count)) << what;
      }
    });
}

// The discrete samplers and the sliced Wasserstein distance.
TEST(Workspace, DiscreteSamplersAndSlicedWassersteinReadNoWorkspaceByteBeforeWritingIt) {
  const int d = 6;
  std::mt19937_64 gen(31);
  std::uniform_real_distribution<double> u(0.1, 0.9);
  std::vector<double> probabilities(2 * d);
  for (auto& p : probabilities) p = u(gen);
  const ds::bernoulli_mixture prior(d, {0.4, 0.6}, probabilities);
  const std::int64_t n = 29;
  for (const char* target : targets)
    with_target(target, [&] {
      {
        ds::discrete_langevin_options o;
        o.start_uniform = true;
        o.steps = 5;
        o.seed = 7;
        std::vector<float> own(n * d), given(n * d);
        std::vector<std::int64_t> own_acc(n), given_acc(n);
        ds::discrete_langevin(prior, own.data(), {own_acc.data()}, n, o, cpu);
        const std::size_t bytes = ds::discrete_langevin_workspace_bytes(prior, n, o);
        poisoned ws(bytes);
        ds::discrete_langevin(prior, given.data(), {given_acc.data()}, n, o, cpu, ws.data(), bytes);
        EXPECT_TRUE(same_bits(own, given)) << name_of(target);
        EXPECT_TRUE(same_bits(own_acc, given_acc)) << name_of(target);
      }
      {
        ds::discrete_walk_jump_options o;
        o.steps = 5;
        o.seed = 7;
        o.measurements = 3;
        std::vector<float> own(n * d), given(n * d);
        ds::discrete_walk_jump(prior, own.data(), {}, n, o, cpu);
        const std::size_t bytes = ds::discrete_walk_jump_workspace_bytes(prior, n, o);
        poisoned ws(bytes);
        ds::discrete_walk_jump(prior, given.data(), {}, n, o, cpu, ws.data(), bytes);
        EXPECT_TRUE(same_bits(own, given)) << name_of(target);
      }
      {
        const std::vector<float> a = normals(50 * d, 41), b = normals(70 * d, 43);
        const int directions = 9;
        const double own = ds::sliced_wasserstein(50, 70, d, a.data(), b.data(), directions, 5, 2, cpu);
        const std::size_t bytes = ds::sliced_wasserstein_workspace_bytes(50, 70, d, 4, ds::executor::cpu);
        poisoned ws(bytes);
        const double given =
            ds::sliced_wasserstein(50, 70, d, a.data(), b.data(), directions, 5, 2, cpu, ws.data(), bytes);
        EXPECT_EQ(std::memcmp(&own, &given, sizeof own), 0) << name_of(target) << ": " << own << " " << given;
      }
    });
}

// A call without a caller's workspace allocates one stream-ordered and frees it so; the device's pool keeps the freed
// bytes reserved until the next synchronisation, and the next call's cudaMallocAsync reuses them. The check before
// the allocation counts that reserve as free: here the pool holds a freed block larger than resample()'s workspace
// while the device has half that workspace left, and resample() on the same stream, without a synchronisation in
// between, runs. Before, check_allocation compared the workspace with cudaMemGetInfo's free bytes alone and threw
// out_of_memory, so a loop of calls that never synchronised was refused once one workspace exceeded the memory the
// previous one left. The device cannot hand out all of cudaMemGetInfo's free bytes in one block (on an H200 a
// request of the free bytes less 32 MB was refused), so the held block is the largest of free - need / 2 - k need / 16
// (k = 0 ... 7) that the pool grants, and the test checks that the device then has less than the workspace free.
TEST(WorkspaceGpu, AWorkspaceThePoolHoldsFreedIsNotRefused) {
  DIFFSAMPLE_REQUIRE_GPU();
  DIFFSAMPLE_SKIP_UNDER_SANITIZER("holds nearly all device memory for a moment");
  const std::int64_t B = 64, N = std::int64_t(1) << 20;  // a workspace of 513 MB
  const std::size_t need = ds::resampling_workspace_bytes(B, N, ds::resampling_scheme::systematic);
  ds::testing::device_buffer<float> lw(std::vector<float>(static_cast<std::size_t>(B * N), 0.f));
  ds::testing::device_buffer<std::int32_t> ancestors(static_cast<std::size_t>(B * N));
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  ASSERT_GT(free_bytes, 4 * need);
  void* held = nullptr;
  std::size_t held_bytes = 0;
  for (std::size_t k = 0; k < 8 && held == nullptr; ++k) {
    held_bytes = free_bytes - need / 2 - k * (need / 16);
    if (cudaMallocAsync(&held, held_bytes, stream) != cudaSuccess) {
      (void)cudaGetLastError();  // refused: not an error of the test, a smaller block is tried
      held = nullptr;
    }
  }
  ASSERT_NE(held, nullptr) << "the pool granted no block of the device's free " << free_bytes << " bytes less "
                           << need / 2 << " to " << need / 2 + 7 * (need / 16);
  std::size_t free_now = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_now, &total_bytes), cudaSuccess);
  ASSERT_LT(free_now, need) << "holding " << held_bytes << " bytes left " << free_now << " free";
  ASSERT_EQ(cudaFreeAsync(held, stream), cudaSuccess);  // reserved in the pool until the next synchronisation
  ds::particle_outputs out;
  out.ancestors = ancestors.ptr;
  ds::resampling_options o;
  o.ess_threshold = 2;
  EXPECT_NO_THROW(ds::resample(out, B, N, lw.ptr, o, {ds::executor::cuda, stream}));
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const std::vector<std::int32_t> a = ancestors.download();
  for (std::int64_t i = 0; i < B * N; i += 4099) EXPECT_TRUE(a[std::size_t(i)] >= 0 && a[std::size_t(i)] < N);
  cudaStreamDestroy(stream);
}
