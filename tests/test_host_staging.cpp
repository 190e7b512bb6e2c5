// The pinned staging pool (src/host_staging.hpp) through which diffusion() and guided_sample() copy their per-call
// tables on the CUDA executor without synchronising, tested on the host over a stand-in backend whose "device" runs a
// copy only when the test says so; and, on a GPU, the calls' refusal under stream capture (skipped without one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "reference/helpers.hpp"
#include "src/host_staging.hpp"
#include <diffsample/diffsample.hpp>

namespace {

// A device of the stand-in backend: copies are queued per stream and run (the bytes land) on run(); an event
// completes when the copies queued before its record have run.
struct fake_device {
  struct pending {
    void* dst;
    const void* src;
    std::size_t bytes;
  };
  std::map<int, std::vector<pending>> queued;  // per stream
  std::map<int, std::size_t> ran;              // copies run per stream
  std::vector<std::vector<unsigned char>> memory;
  int events_made = 0, events_destroyed = 0, allocations = 0;
  bool refuse_allocation = false, fail_copy = false, fail_record = false;
  int device_of_stream[4] = {0, 0, 1, 1};  // streams 0, 1 on device 0; 2, 3 on device 1
  struct event_state {
    int stream = -1;
    std::size_t after = 0;  // completed once `after` copies of its stream have run
    int device = 0;
    bool dead = false;  // its context gone (cudaDeviceReset): the query fails
  };
  std::vector<event_state> events;

  void run(int stream) {
    for (std::size_t i = ran[stream]; i < queued[stream].size(); ++i) {
      const pending& p = queued[stream][i];
      std::memcpy(p.dst, p.src, p.bytes);
    }
    ran[stream] = queued[stream].size();
  }
};

struct fake_backend {
  using stream = int;
  using event = int;
  fake_device* dev;
  int device(stream s) { return dev->device_of_stream[s]; }
  void* allocate(std::size_t bytes) {
    if (dev->refuse_allocation) return nullptr;
    ++dev->allocations;
    dev->memory.emplace_back(bytes, 0);
    return dev->memory.back().data();
  }
  event make_event(int on) {
    ++dev->events_made;
    dev->events.push_back({-1, 0, on});
    return int(dev->events.size()) - 1;
  }
  void destroy(event) { ++dev->events_destroyed; }
  int state(event e) {
    const fake_device::event_state& st = dev->events[std::size_t(e)];
    if (st.dead) return -1;
    return st.stream < 0 || dev->ran[st.stream] >= st.after ? 1 : 0;
  }
  void copy(void* dst, const void* src, std::size_t bytes, stream s) {
    if (dev->fail_copy) throw std::runtime_error("copy failed");
    dev->queued[s].push_back({dst, src, bytes});
  }
  void record(event e, stream s) {
    if (dev->fail_record) throw std::runtime_error("record failed");
    fake_device::event_state& st = dev->events[std::size_t(e)];
    EXPECT_EQ(st.device, dev->device_of_stream[s]) << "an event recorded on another device's stream";
    st.stream = s;
    st.after = dev->queued[s].size();
  }
};

using pool = diffsample::detail::staging_pool<fake_backend>;
constexpr std::size_t limit = std::size_t(1) << 20;

std::vector<unsigned char> bytes_of(std::size_t n, unsigned char first) {
  std::vector<unsigned char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(first + i);
  return v;
}

}  // namespace

// The caller's host buffer may change as soon as copy() returns: the copy, run later, delivers the bytes it held.
TEST(HostStaging, TheSourceMayBeReusedAtOnce) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> host = bytes_of(1000, 3), device(1000, 0);
  const std::vector<unsigned char> sent = host;
  ASSERT_TRUE(p.copy(device.data(), host.data(), host.size(), 0));
  std::fill(host.begin(), host.end(), 0xee);
  dev.run(0);
  EXPECT_EQ(device, sent);
}

// A block whose copy has not run is never handed out again: two copies queued on a stream the device has not reached
// take two blocks, and each delivers its own bytes. Once they have run, later copies reuse the blocks.
TEST(HostStaging, ABlockInFlightIsNotReused) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  const std::vector<unsigned char> a = bytes_of(500, 1), b = bytes_of(500, 100);
  std::vector<unsigned char> da(500, 0), db(500, 0);
  ASSERT_TRUE(p.copy(da.data(), a.data(), a.size(), 0));
  ASSERT_TRUE(p.copy(db.data(), b.data(), b.size(), 0));
  EXPECT_EQ(p.blocks(), 2u);
  dev.run(0);
  EXPECT_EQ(da, a);
  EXPECT_EQ(db, b);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(p.copy(da.data(), b.data(), b.size(), 1));
    dev.run(1);
  }
  EXPECT_EQ(p.blocks(), 2u);
  EXPECT_EQ(dev.allocations, 2);
  EXPECT_EQ(da, b);
}

// Blocks are powers of two from 64 KiB; a request takes the smallest free block that holds it.
TEST(HostStaging, BlocksArePowersOfTwoAndTheSmallestFitServes) {
  EXPECT_EQ(pool::block_bytes(1), pool::min_block);
  EXPECT_EQ(pool::block_bytes(pool::min_block), pool::min_block);
  EXPECT_EQ(pool::block_bytes(pool::min_block + 1), 2 * pool::min_block);
  EXPECT_EQ(pool::block_bytes(300000), std::size_t(1) << 19);
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> big = bytes_of(300000, 7), small = bytes_of(10, 9), out(300000);
  ASSERT_TRUE(p.copy(out.data(), small.data(), small.size(), 0));
  ASSERT_TRUE(p.copy(out.data(), big.data(), big.size(), 0));
  EXPECT_EQ(p.held_bytes(), (std::size_t(1) << 19) + pool::min_block);
  dev.run(0);
  // Both free now: a small request takes the 64 KiB block, so the large one still serves a large request at once.
  ASSERT_TRUE(p.copy(out.data(), small.data(), small.size(), 0));
  ASSERT_TRUE(p.copy(out.data(), big.data(), big.size(), 0));
  EXPECT_EQ(p.blocks(), 2u);
}

// Beyond the limit copy() declines (the caller copies from pageable memory) and the pool holds no more than it.
TEST(HostStaging, TheLimitIsKept) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> half = bytes_of(limit / 2, 1), out(limit);
  ASSERT_TRUE(p.copy(out.data(), half.data(), half.size(), 0));
  ASSERT_TRUE(p.copy(out.data(), half.data(), half.size(), 0));
  EXPECT_FALSE(p.copy(out.data(), half.data(), half.size(), 0));  // both blocks in flight, the limit reached
  EXPECT_EQ(p.held_bytes(), limit);
  std::vector<unsigned char> more = bytes_of(limit + 1, 1);
  EXPECT_FALSE(p.copy(out.data(), more.data(), more.size(), 0));  // larger than the limit
  dev.run(0);
  EXPECT_TRUE(p.copy(out.data(), half.data(), half.size(), 0));
  EXPECT_EQ(p.blocks(), 2u);
  EXPECT_TRUE(p.copy(out.data(), half.data(), 0, 0));  // nothing to copy
}

// A block belongs to the device of the stream it was made for: a free block of device 0 does not serve device 1
// (its event could not be recorded on that device's stream).
TEST(HostStaging, BlocksStayWithTheirDevice) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> a = bytes_of(100, 1), out(100);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));
  dev.run(0);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 2));
  EXPECT_EQ(p.blocks(), 2u);
  dev.run(2);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 3));
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 1));
  EXPECT_EQ(p.blocks(), 2u);
}

// Without pinned memory copy() declines and keeps no event; a copy that fails before it is issued frees its block,
// one whose event could not be recorded retires it (its copy may still be in flight): neither is handed out again
// while in doubt, and the error reaches the caller.
TEST(HostStaging, FailuresLeaveNoBlockInDoubt) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> a = bytes_of(100, 1), out(100);
  dev.refuse_allocation = true;
  EXPECT_FALSE(p.copy(out.data(), a.data(), a.size(), 0));
  EXPECT_EQ(dev.events_made, dev.events_destroyed);
  EXPECT_EQ(p.blocks(), 0u);
  dev.refuse_allocation = false;
  dev.fail_copy = true;
  EXPECT_THROW(p.copy(out.data(), a.data(), a.size(), 0), std::runtime_error);
  dev.fail_copy = false;
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));  // the same block again: its copy never left
  EXPECT_EQ(p.blocks(), 1u);
  dev.run(0);
  dev.fail_record = true;
  EXPECT_THROW(p.copy(out.data(), a.data(), a.size(), 0), std::runtime_error);
  dev.fail_record = false;
  dev.run(0);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));  // a new block: the retired one is never reused
  EXPECT_EQ(p.blocks(), 2u);
}

// A block whose event can no longer be queried (its context destroyed by cudaDeviceReset, which frees the block's
// pinned memory with it) is retired: never written again, and a new block serves.
TEST(HostStaging, ABlockWhoseEventIsGoneIsRetired) {
  fake_device dev;
  pool p(fake_backend{&dev}, limit);
  std::vector<unsigned char> a = bytes_of(100, 1), out(100);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));
  dev.run(0);
  dev.events[0].dead = true;
  std::fill(dev.memory[0].begin(), dev.memory[0].end(), 0x5a);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));
  EXPECT_EQ(p.blocks(), 2u);
  EXPECT_TRUE(std::all_of(dev.memory[0].begin(), dev.memory[0].end(), [](unsigned char c) { return c == 0x5a; }));
  dev.run(0);
  ASSERT_TRUE(p.copy(out.data(), a.data(), a.size(), 0));
  EXPECT_EQ(p.blocks(), 2u);
}

// --- on a GPU ------------------------------------------------------------------------------------------------------

namespace {

namespace ds = diffsample;

ds::gaussian_mixture small_prior() {
  return ds::gaussian_mixture(2, {0.5, 0.5}, {-2.0, 0.0, 2.0, 1.0}, {0.5, 0.5});
}

ds::guided_problems one_problem() {
  ds::guided_problems g;
  g.problems = 1;
  g.d_y = 1;
  g.A = {1.0, 0.5};
  g.y = {0.3};
  g.sigma_y = {0.2};
  return g;
}

}  // namespace

// diffusion() and guided_sample() copy tables they build on the host for the call alone, so a graph captured from
// them would copy those bytes again at every replay after the call has released them. Under stream capture they are
// refused (invalid_argument naming exec.stream and the plan that captures) before anything is issued, and the
// capture stays valid; then, uncaptured, two runs issued back to back without waiting in between (their tables
// staged in two pinned blocks) give the bits of each run issued alone. A plan's creation, sliced_wasserstein() on the
// stream and (on a blocking stream) a mixture's constructor, which allocate or synchronise, are refused by name too.
// Not run here (no GPU).
TEST(HostStagingGpu, PerCallTablesAreRefusedUnderCaptureAndStagedOtherwise) {
  DIFFSAMPLE_REQUIRE_GPU();
  const ds::gaussian_mixture prior = small_prior();
  const std::int64_t n = 256, d = 2;
  ds::testing::device_buffer<float> x(n * d), y(n * d);
  ds::diffusion_options dopt;
  dopt.steps = 30;
  ds::guided_options gopt;
  gopt.particles = 128;
  gopt.steps = 20;
  for (const unsigned flags : {unsigned(cudaStreamDefault), unsigned(cudaStreamNonBlocking)}) {
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, flags), cudaSuccess);
    const ds::execution gpu{ds::executor::cuda, stream};
    const auto refused = [&](const std::function<void()>& call, const char* remedy) {
      cudaGraph_t graph = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
      try {
        call();
        ADD_FAILURE() << remedy << ": accepted under capture";
      } catch (const ds::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(remedy), std::string::npos) << e.what();
      }
      EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << "the capture was invalidated";
      if (graph != nullptr) cudaGraphDestroy(graph);
    };
    refused([&] { (void)ds::diffusion(prior, x.ptr, {}, n, dopt, gpu); }, "sampling_plan::diffusion");
    ds::guided_outputs out;
    out.particles = y.ptr;
    for (const ds::guided_sampler s : {ds::guided_sampler::smc, ds::guided_sampler::tmpd}) {
      gopt.sampler = s;
      refused([&] { (void)ds::guided_sample(prior, out, one_problem(), gopt, gpu); }, "sampling_plan::guided");
    }
    // What a capture cannot record at all (cudaMalloc, a synchronisation): refused by name, the capture kept.
    refused([&] { (void)ds::sampling_plan::diffusion(n, d, dopt, ds::model_output::denoiser, gpu); },
            "sampling_plan::diffusion()");
    refused([&] { (void)ds::sampling_plan::guided(d, one_problem(), gopt, ds::model_output::denoiser, gpu); },
            "sampling_plan::guided()");
    refused([&] { ds::diffusion_plan plan(n, d, dopt, ds::model_output::denoiser, gpu); },
            "diffusion_plan's constructor");
    refused([&] { (void)ds::sliced_wasserstein(n, n, d, x.ptr, y.ptr, 8, 1, 2, gpu); }, "sliced_wasserstein()");
    if (flags == cudaStreamDefault)  // the legacy stream joins a blocking stream's capture
      refused([&] { (void)small_prior(); }, "gaussian_mixture's constructor");

    // Each alone, then both back to back (the second table staged while the first copy may still wait): seed 1 with
    // 30 steps into x, seed 2 with 31 steps into y.
    const auto run = [&](float* into, std::uint64_t seed, std::int64_t steps) {
      dopt.seed = seed;
      dopt.steps = steps;
      (void)ds::diffusion(prior, into, {}, n, dopt, gpu);
    };
    run(x.ptr, 1, 30);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const std::vector<float> first = x.download();
    run(x.ptr, 2, 31);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const std::vector<float> second = x.download();
    ASSERT_NE(first, second);
    run(x.ptr, 1, 30);
    run(y.ptr, 2, 31);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(x.download(), first);
    EXPECT_EQ(y.download(), second);
    cudaStreamDestroy(stream);
  }
}
