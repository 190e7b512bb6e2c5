// Every input is validated before launch with an error naming the argument and the bad value.
#include <gtest/gtest.h>

#include <diffsample/diffsample.h>
#include <diffsample/plan.hpp>

#include <cmath>
#include <future>
#include <tuple>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "reference/helpers.hpp"

using namespace diffsample;
namespace dt = diffsample::testing;

namespace {

const double not_a_number = std::numeric_limits<double>::quiet_NaN();
const double infinity = std::numeric_limits<double>::infinity();

/// Runs f, expects an exception of type E whose message contains every fragment.
template <class E = invalid_argument, class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << *fragments.begin();
  } catch (const E& e) {
    for (const char* frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << "message: " << e.what() << "; wanted: " << frag;
  }
}

gaussian_mixture small() { return gaussian_mixture(2, {1, 1}, {0, 0, 1, 1}, {1, 1}); }

}  // namespace

TEST(Validation, MixtureSizes) {
  expect_error([] { gaussian_mixture(0, {1}, {}, {1}); }, {"dim", "0"});
  expect_error([] { gaussian_mixture(2, {}, {}, {}); }, {"weights", "= 0"});
  expect_error([] { gaussian_mixture(2, {1, 1}, {0, 0, 1}, {1, 1}); }, {"means", "4", "got 3"});
  expect_error([] { gaussian_mixture(2, {1, 1}, {0, 0, 1, 1}, {1, 1, 1}); }, {"variances", "got 3"});
}

TEST(Validation, MixtureValues) {
  expect_error([] { gaussian_mixture(1, {1, not_a_number}, {0, 1}, {1, 1}); }, {"weights[1]", "finite", "nan"});
  expect_error([] { gaussian_mixture(1, {1, 0}, {0, 1}, {1, 1}); }, {"weights[1]", "positive", "0"});
  expect_error([] { gaussian_mixture(1, {-1, 1}, {0, 1}, {1, 1}); }, {"weights[0]", "-1"});
  expect_error([] { gaussian_mixture(1, {infinity, 1}, {0, 1}, {1, 1}); }, {"weights[0]", "inf"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, infinity}, {1, 1}); }, {"means[1]", "inf"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, 1}, {1, 0}); }, {"variances[1]", "positive"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, 1}, {-2, 1}); }, {"variances[0]", "-2"});
}

// Finite weights whose FP64 sum overflows are normalised (divided by the largest first), not refused.
TEST(Validation, WeightsWhoseSumOverflowsAreNormalised) {
  const gaussian_mixture g(1, {1.5e308, 0.5e308, 1e308}, {0, 1, 2}, {1, 1, 1});
  ASSERT_EQ(g.weights().size(), 3u);
  EXPECT_NEAR(g.weights()[0], 0.5, 1e-15);
  EXPECT_NEAR(g.weights()[1], 1.0 / 6, 1e-15);
  EXPECT_NEAR(g.weights()[2], 1.0 / 3, 1e-15);
  const bernoulli_mixture b(2, {1.7e308, 1.7e308}, {0.25, 0.5, 0.75, 0.5});
  ASSERT_EQ(b.weights().size(), 2u);
  EXPECT_EQ(b.weights()[0], 0.5);
  EXPECT_EQ(b.weights()[1], 0.5);
  // Equal huge weights give exactly the weights of equal unit weights.
  const gaussian_mixture big(1, {1e308, 1e308}, {0, 1}, {1, 1}), one(1, {1, 1}, {0, 1}, {1, 1});
  EXPECT_EQ(big.weights(), one.weights());
}

TEST(Validation, EvaluationArguments) {
  const auto mix = small();
  std::vector<float> x(8), out(8);
  const execution cpu{executor::cpu};
  expect_error([&] { mix.evaluate(out.data(), -1, x.data(), {}, quantity::score, cpu); }, {"n", "-1"});
  expect_error([&] { mix.evaluate(out.data(), 4, nullptr, {}, quantity::score, cpu); }, {"x", "null"});
  expect_error([&] { mix.evaluate(nullptr, 4, x.data(), {}, quantity::score, cpu); }, {"out", "null"});
  expect_error([&] { mix.evaluate(out.data(), 2, x.data(), {-0.5, 1.0}, quantity::score, cpu); }, {"ch.a", "-0.5"});
  // a = 0 is the Gaussian N(0, s^2 I) (test_mixture): it needs s > 0, else the channel is a point mass at 0.
  expect_error([&] { mix.evaluate(out.data(), 2, x.data(), {0.0, 0.0}, quantity::score, cpu); }, {"ch.s", "a = 0"});
  expect_error([&] { mix.evaluate(out.data(), 2, x.data(), {1.0, -0.5}, quantity::score, cpu); }, {"ch.s", "-0.5"});
  expect_error([&] { mix.evaluate(out.data(), 2, x.data(), {not_a_number, 1.0}, quantity::score, cpu); },
               {"ch.a", "nan"});
  expect_error([&] { mix.evaluate(out.data(), 2, x.data(), {}, static_cast<quantity>(7), cpu); }, {"what", "7"});
  // A float buffer one byte off its alignment.
  auto* misaligned = reinterpret_cast<float*>(reinterpret_cast<char*>(out.data()) + 1);
  expect_error([&] { mix.evaluate(misaligned, 2, x.data(), {}, quantity::score, cpu); }, {"out", "aligned", "4"});
  // n * d beyond a 64-bit byte count.
  expect_error([&] { mix.evaluate(out.data(), std::int64_t(1) << 62, x.data(), {}, quantity::score, cpu); },
               {"n", "overflow"});
  // n = 0 is a valid no-op, even with null buffers.
  EXPECT_NO_THROW(mix.evaluate(nullptr, 0, nullptr, {}, quantity::score, cpu));
}

TEST(Validation, LangevinOptions) {
  const auto mix = small();
  std::vector<float> x(8);
  const execution cpu{executor::cpu};
  auto run = [&](langevin_options o) { langevin(mix, x.data(), {}, 4, o, cpu); };
  langevin_options o;
  o.step_size = 0;
  expect_error([&] { run(o); }, {"options.step_size", "positive", "0"});
  o.step_size = not_a_number;
  expect_error([&] { run(o); }, {"options.step_size", "nan"});
  o = {};
  o.steps = -3;
  expect_error([&] { run(o); }, {"options.steps", "-3"});
  o = {};
  o.method = static_cast<langevin_method>(9);
  expect_error([&] { run(o); }, {"options.method", "9"});
  o = {};
  o.target = {1.0, infinity};
  expect_error([&] { run(o); }, {"options.target.s", "inf"});
  o = {};
  o.first_step = std::uint64_t(1) << 30;
  expect_error([&] { run(o); }, {"options.first_step", "2^30"});
  // first_step + steps must not wrap around 2^64 into range (it did: 2^64 - 4 + 10 passed as 6, and the call's steps
  // 4 .. 9 drew the streams of steps 0 .. 5, the counter keeping the step's low 32 bits).
  o.first_step = ~std::uint64_t(0) - 3;
  o.steps = 10;
  expect_error([&] { run(o); }, {"options.first_step", "2^30"});
  o = {};
  o.record_every = 0;
  std::vector<float> traj(8);
  expect_error([&] { langevin(mix, x.data(), {traj.data(), nullptr}, 4, o, cpu); },
               {"outputs.trajectory", "record_every"});
  o = {};
  expect_error([&] { langevin(mix, nullptr, {}, 4, o, cpu); }, {"x", "null"});
  // Too small a caller workspace on the workspace path (d = 3 is not in the register list).
  const gaussian_mixture mix3(3, {1}, {0, 0, 0}, {1});
  std::vector<float> x3(12), ws(4);
  // Needed: the channel table (one 256-byte block) and the state, 4 vectors of d = 3 floats for 4 chains rounded up to
  // the widest SIMD pack (16), plus 16 floats of alignment room: 256 + (4 x 3 x 16 + 16) x 4 = 1088 bytes.
  expect_error([&] { langevin(mix3, x3.data(), {}, 4, o, cpu, ws.data(), ws.size() * sizeof(float)); },
               {"workspace_bytes", "16", "1088"});
  EXPECT_EQ(langevin_workspace_bytes(mix3, 4, o), 1088u);
  EXPECT_EQ(langevin_workspace_bytes(mix, 4, o), 256u);  // register path: the channel table only
}

// The chain samplers read x (y) while they write the trajectory, the counts, the walk-jump's sums and the workspace,
// so a buffer in x's memory lost data without a word: a trajectory at x held the final state in its first record,
// counts written into x replaced states by integers. Every overlap of two buffers of a call is refused, before
// anything is written, with a message naming both; adjacent buffers run. Seen failing before the check: no exception
// for any case, x or the output changed.
TEST(Validation, ChainBuffersMustNotOverlap) {
  const auto mix = small();  // d = 2
  const bernoulli_mixture bern(2, {1.0}, {0.3, 0.6});
  const std::int64_t n = 4, d = 2, rows = n * d;  // x: 8 floats; 2 records: 16 floats; counts: n int64 = 8 floats
  const execution cpu{executor::cpu};
  langevin_options l;
  l.steps = 2;
  l.record_every = 1;
  diffusion_options df;
  df.steps = 2;
  df.record_every = 1;
  discrete_langevin_options dl;
  dl.steps = 2;
  discrete_walk_jump_options dw;
  dw.steps = 2;
  // One call with `output` (of `floats` floats) placed `shift` floats after x (negative: before), in one buffer.
  struct place {
    const char* output;
    std::int64_t floats;
  };
  const place places[] = {{"outputs.trajectory", 2 * rows}, {"outputs.accepted", 2 * n}, {"workspace", 0},
                          {"outputs.noisy", rows}};
  for (int sampler = 0; sampler < 4; ++sampler) {
    for (const place& pl : places) {
      const bool langevin_output = pl.output != std::string("outputs.noisy");
      if (sampler == 0 && !langevin_output) continue;                                       // langevin
      if (sampler == 1 && pl.output != std::string("outputs.trajectory") &&
          pl.output != std::string("workspace"))
        continue;                                                                          // diffusion
      if (sampler == 2 && pl.output != std::string("outputs.accepted") && pl.output != std::string("workspace"))
        continue;                                                                          // discrete langevin
      if (sampler == 3 && pl.output == std::string("outputs.trajectory")) continue;        // discrete walk-jump
      const std::size_t need = sampler == 0   ? langevin_workspace_bytes(mix, n, l)
                               : sampler == 1 ? diffusion_workspace_bytes(mix, n, df)
                               : sampler == 2 ? discrete_langevin_workspace_bytes(bern, n, dl)
                                              : discrete_walk_jump_workspace_bytes(bern, n, dw);
      const std::int64_t floats = pl.floats > 0 ? pl.floats : std::int64_t(need / sizeof(float));
      // At x, its last 2 floats over x's first 2 (starting before x), over x's last 2 (starting inside x); shifts
      // stay a multiple of 4 floats (16 bytes: the workspace's alignment).
      for (const std::int64_t shift : {std::int64_t(0), -(floats - 4), rows - 4}) {
        const std::int64_t before = floats + 64;  // room on both sides
        std::vector<float> buffer(before + rows + floats + 64);
        for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = (i % 2 == 0 ? 1.f : -1.f);  // +-1: valid y too
        float* x = buffer.data() + before;
        void* p = x + shift;
        const std::vector<float> copy = buffer;
        const auto call = [&] {
          float* traj = pl.output == std::string("outputs.trajectory") ? static_cast<float*>(p) : nullptr;
          auto* acc = pl.output == std::string("outputs.accepted") ? static_cast<std::int64_t*>(p) : nullptr;
          void* ws = pl.output == std::string("workspace") ? p : nullptr;
          const std::size_t ws_bytes = ws ? need : 0;
          auto* noisy = pl.output == std::string("outputs.noisy") ? static_cast<float*>(p) : nullptr;
          if (sampler == 0) {
            langevin_options o = l;
            if (!traj) o.record_every = 0;
            langevin(mix, x, {traj, acc}, n, o, cpu, ws, ws_bytes);
          } else if (sampler == 1) {
            diffusion_options o = df;
            if (!traj) o.record_every = 0;
            diffusion(mix, x, {traj}, n, o, cpu, ws, ws_bytes);
          } else if (sampler == 2) {
            discrete_langevin(bern, x, {acc}, n, dl, cpu, ws, ws_bytes);
          } else {
            discrete_walk_jump(bern, x, {noisy, acc}, n, dw, cpu, ws, ws_bytes);
          }
        };
        const char* x_name = sampler == 2 ? "y" : "x";
        SCOPED_TRACE(std::string("sampler ") + std::to_string(sampler) + ", " + pl.output + " at x + " +
                     std::to_string(shift));
        expect_error(call, {pl.output, (std::string("must not overlap ") + x_name).c_str()});
        EXPECT_EQ(buffer, copy);
      }
    }
  }
  // Two outputs sharing memory (x apart from both): the trajectory and the counts, the sums and the counts.
  std::vector<float> x(rows, 1.f), shared(2 * rows + 2 * n);
  const std::vector<float> shared_before = shared;
  expect_error([&] { langevin(mix, x.data(), {shared.data(), reinterpret_cast<std::int64_t*>(shared.data() + 2 * rows - 2)}, n, l, cpu); },
               {"outputs.accepted", "must not overlap outputs.trajectory"});
  expect_error([&] { discrete_walk_jump(bern, x.data(), {shared.data(), reinterpret_cast<std::int64_t*>(shared.data() + rows - 2)}, n, dw, cpu); },
               {"outputs.accepted", "must not overlap outputs.noisy"});
  EXPECT_EQ(shared, shared_before);
  // Adjacent buffers run: x, the trajectory and the counts back to back.
  std::vector<float> all(rows + 2 * rows + 2 * n, 0.5f);
  float* xa = all.data();
  EXPECT_NO_THROW(langevin(mix, xa, {xa + rows, reinterpret_cast<std::int64_t*>(xa + 3 * rows)}, n, l, cpu));
  EXPECT_NO_THROW(diffusion(mix, xa, {xa + rows}, n, df, cpu));
}

// The evaluations and exact samplers write their output point by point, in parallel, while other points still read
// theirs: an out one row after x gave the next point's score from the previous point's output (CPU, direct and gemm
// paths), log-densities written over x's first rows clobbered points not yet read, labels written over the samples
// replaced coordinates. Every overlap of an output with an input or with the other output is refused, in place
// included, the buffers untouched. Seen failing before the check: no exception, the buffer changed.
TEST(Validation, EvaluationOutputsMustNotOverlapTheirInputs) {
  const gaussian_mixture mix = grid_mixture(3, 3, 2.0, 0.5);
  const bernoulli_mixture bern(3, {1.0, 2.0}, {0.2, 0.6, 0.9, 0.7, 0.4, 0.1});
  linear_observation obs;
  obs.d_y = 1;
  obs.d_x = 3;
  obs.A = {1, 0, 0};
  obs.sigma_y = 0.5;
  obs.y = {0.3};
  const mixture_posterior post(mix, obs);
  const std::int64_t n = 8, d = 3;
  const execution cpu{executor::cpu};
  std::vector<float> buffer(4 * n * d);
  for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = (i % 3 == 0 ? 1.f : -1.f);
  const std::vector<float> before = buffer;
  float* x = buffer.data() + n * d;  // room before and after
  std::vector<float> v(n * d, 0.5f);
  for (const std::int64_t shift : {std::int64_t(0), d, -d}) {
    SCOPED_TRACE("out at x + " + std::to_string(shift));
    float* out = x + shift;
    for (const mixture_path path : {mixture_path::direct, mixture_path::gemm}) {
      evaluate_options o;
      o.path = path;
      for (const quantity q : {quantity::score, quantity::denoiser, quantity::log_density}) {
        if (q == quantity::log_density && shift < 0) continue;  // n floats just before x do not reach it
        expect_error([&] { mix.evaluate(out, n, x, {1.0, 0.5}, q, o, cpu); }, {"out: must not overlap x"});
      }
      expect_error([&] { mix.denoiser_jvp(out, n, x, v.data(), {1.0, 0.5}, o, cpu); }, {"out: must not overlap x"});
      expect_error([&] { mix.denoiser_jvp(out, n, v.data(), x, {1.0, 0.5}, o, cpu); }, {"out: must not overlap v"});
    }
    expect_error([&] { bern.evaluate(out, n, x, 1.0, quantity::score, cpu); }, {"out: must not overlap y"});
    if (shift >= 0)
      expect_error([&] { bern.evaluate(out, n, x, 1.0, quantity::log_density, cpu); }, {"out: must not overlap y"});
    // Labels (n int32) over the samples' last rows.
    auto* labels = reinterpret_cast<std::int32_t*>(x + n * d - n + (shift < 0 ? 0 : shift));
    expect_error([&] { mix.sample(x, n, {}, 1, labels, 0, cpu); }, {"labels: must not overlap out"});
    expect_error([&] { bern.sample(x, n, 1.0, 1, labels, 0, cpu); }, {"labels: must not overlap out"});
    expect_error([&] { post.sample(x, n, 1, labels, 0, cpu); }, {"labels: must not overlap out"});
    EXPECT_EQ(buffer, before);
  }
  // Separate buffers run; x and v may be one buffer (both are read only).
  std::vector<float> out(n * d);
  EXPECT_NO_THROW(mix.evaluate(out.data(), n, x, {1.0, 0.5}, quantity::score, cpu));
  EXPECT_NO_THROW(mix.denoiser_jvp(out.data(), n, x, x, {1.0, 0.5}, cpu));
}

// guided_sample() writes every output at the end from the run's state in its workspace (SMC gathers its samples from
// that state after it copied the particles out), so samples over the particles replaced them, and a workspace over an
// output was overwritten by the run. Outputs sharing memory with each other or with the caller's workspace are
// refused, for every sampler family's entry (the SMC / DPS run, TMPD's and DDRM's), before anything is written. Seen
// failing before the check: no exception, the buffer changed.
TEST(Validation, GuidedOutputsMustNotOverlap) {
  const auto mix = small();  // d = 2
  guided_problems g;
  g.problems = 1;
  g.d_y = 1;
  g.A = {1, 0};
  g.sigma_y = {0.5};
  g.y = {0.3};
  const std::int64_t N = 16, d = 2, rows = N * d;
  const execution cpu{executor::cpu};
  for (const guided_sampler sampler : {guided_sampler::smc, guided_sampler::dps, guided_sampler::tmpd,
                                       guided_sampler::ddrm}) {
    SCOPED_TRACE(to_string(sampler));
    guided_options o;
    o.potentials = guided_potentials::linear;
    o.sampler = sampler;
    o.particles = N;
    o.steps = 3;
    const std::size_t need = guided_workspace_bytes(mix, g, o);
    std::vector<float> buffer(2 * rows + need / sizeof(float) + 64, 0.25f);
    const std::vector<float> before = buffer;
    float* particles = buffer.data() + 16;
    guided_outputs out;
    out.particles = particles;
    for (const std::int64_t shift : {std::int64_t(0), d, -d}) {
      out.samples = particles + shift;
      expect_error([&] { guided_sample(mix, out, g, o, cpu); },
                   {"outputs.samples: must not overlap outputs.particles"});
    }
    out.samples = nullptr;
    expect_error([&] { guided_sample(mix, out, g, o, cpu, particles - 8, need); },
                 {"workspace: must not overlap outputs.particles"});
    if (sampler == guided_sampler::smc) {
      std::vector<float> separate(rows);
      out.particles = separate.data();
      out.log_weights = particles;  // N floats
      out.ess_trace = particles + N / 2;  // 4 floats over the log-weights' second half
      expect_error([&] { guided_sample(mix, out, g, o, cpu); },
                   {"outputs.ess_trace: must not overlap outputs.log_weights"});
    }
    EXPECT_EQ(buffer, before);
  }
}

// noise_schedule::at() checked only the time's domain: a vp_table out of order or a VE schedule with a NaN sigma gave
// channels (or NaN) that points() refuses, and an empty vp_table was read out of bounds. at() checks the parameters
// as points() does. Seen failing before the fix: no exception for the first three, then a segmentation fault at the
// empty table.
TEST(Validation, ScheduleChannelChecksTheParameters) {
  expect_error([] { noise_schedule::vp_table({0.9, 0.95, 0.5}).at(0.5); }, {"schedule.alpha_bar[1]", "0.95"});
  expect_error([] { noise_schedule::variance_exploding(not_a_number, 10).at(0.5); },
               {"schedule.sigma_min", "nan"});
  expect_error([] { noise_schedule::vp_linear(infinity, 20).at(0.5); }, {"schedule.beta_min", "inf"});
  noise_schedule empty = noise_schedule::vp_linear();
  empty.kind = schedule_kind::vp_table;  // no table
  expect_error([&] { empty.at(0.5); }, {"schedule.alpha_bar", "empty"});
  // Valid schedules answer as before.
  EXPECT_NEAR(noise_schedule::vp_table({0.9, 0.5}).at(0.5).a, std::sqrt(0.9), 1e-15);
}

// A parameter set on a schedule kind that does not read it (vp_cosine's alpha_bar, variance_exploding's beta_max) was
// ignored: the run took the kind's channel with no word of the value. It is refused, naming the field and the kind,
// by points() and at() (and so by every sampler), for every parameter on every kind but its reader; the defaults
// every factory leaves stay accepted, and a NaN in an unread field is refused as any other value. Seen failing
// before the fix: no exception for any of the 36 pairs.
TEST(Validation, ScheduleParameterTheKindDoesNotReadIsRefused) {
  struct parameter {
    const char* name;
    schedule_kind reader;
    void (*set)(noise_schedule&);
  };
  const parameter parameters[] = {
      {"schedule.beta_min", schedule_kind::vp_linear, [](noise_schedule& s) { s.beta_min = 0.2; }},
      {"schedule.beta_max", schedule_kind::vp_linear, [](noise_schedule& s) { s.beta_max = not_a_number; }},
      {"schedule.cosine_offset", schedule_kind::vp_cosine, [](noise_schedule& s) { s.cosine_offset = 0.01; }},
      {"schedule.alpha_bar", schedule_kind::vp_table, [](noise_schedule& s) { s.alpha_bar = {0.9, 0.5}; }},
      {"schedule.sigma_min", schedule_kind::variance_exploding, [](noise_schedule& s) { s.sigma_min = 0.02; }},
      {"schedule.sigma_max", schedule_kind::variance_exploding, [](noise_schedule& s) { s.sigma_max = 40; }},
  };
  const noise_schedule kinds[] = {noise_schedule::vp_linear(),          noise_schedule::vp_cosine(),
                                  noise_schedule::vp_table({0.9, 0.5}), noise_schedule::variance_exploding(),
                                  noise_schedule::ornstein_uhlenbeck(), noise_schedule::linear_interpolant(),
                                  noise_schedule::stochastic_localization()};
  int refused = 0;
  for (const noise_schedule& base : kinds) {
    SCOPED_TRACE(to_string(base.kind));
    EXPECT_NO_THROW((void)base.points(4));  // every factory's defaults pass
    for (const parameter& p : parameters) {
      SCOPED_TRACE(p.name);
      noise_schedule s = base;
      p.set(s);
      if (p.reader == s.kind) {
        if (std::string(p.name) != "schedule.beta_max") {
          EXPECT_NO_THROW((void)s.points(4));  // its own field
        }
        continue;
      }
      const std::string kind = std::string("schedule.kind ") + to_string(s.kind) + " does not read";
      const std::string reader = std::string("only ") + to_string(p.reader);
      expect_error([&] { (void)s.points(4); }, {p.name, kind.c_str(), reader.c_str()});
      expect_error([&] { (void)s.at(s.t_end); }, {p.name, kind.c_str()});
      ++refused;
    }
  }
  EXPECT_EQ(refused, 7 * 6 - 6);  // every pair but the six of each parameter with its reader
  // A sampler refuses it before it runs.
  const gaussian_mixture mix = small();
  std::vector<float> x(8, 0.f);
  diffusion_options d;
  d.steps = 4;
  d.schedule = noise_schedule::vp_cosine();
  d.schedule.alpha_bar = {0.9, 0.5};
  expect_error([&] { diffusion(mix, x.data(), {}, 4, d, execution{executor::cpu}); },
               {"schedule.alpha_bar", "vp_cosine"});
}

// The trajectory's size was formed as records x n before its check: 64 records of n = 2^58 chains wrapped around 2^64
// to 0 elements, so any trajectory pointer passed as large enough. Seen failing before the fix: the error came later,
// from the workspace size, naming n and not the trajectory.
TEST(Validation, TrajectorySizeBeyondSixtyFourBitsIsRefused) {
  const gaussian_mixture mix3(3, {1}, {0, 0, 0}, {1});
  const std::int64_t n = std::int64_t(1) << 58;  // n x d x 8 bytes fits in int64, 64 x n x d does not
  std::vector<float> x(12), traj(12);
  const execution cpu{executor::cpu};
  langevin_options l;
  l.steps = 64;
  l.record_every = 1;
  expect_error([&] { langevin(mix3, x.data(), {traj.data(), nullptr}, n, l, cpu); },
               {"outputs.trajectory: records", "64", "overflow"});
  diffusion_options df;
  df.steps = 64;
  df.record_every = 1;
  expect_error([&] { diffusion(mix3, x.data(), {traj.data()}, n, df, cpu); },
               {"outputs.trajectory: records", "64", "overflow"});
}

// The workspace queries of the chain samplers multiplied the state's floats by 4 in size_t after checking n x d
// elements against 8 bytes each: at n x d just below 2^60 (d = 40, outside the register list, so the state is in the
// workspace) diffusion_workspace_bytes returned 11072 bytes, langevin_workspace_bytes 6464 and
// discrete_langevin_workspace_bytes 704 (the 16 bytes per element wrapped around 2^64), and
// discrete_walk_jump_workspace_bytes 4.6e18 (wrapped from 2.3e19); each call then took such a workspace as large
// enough. Seen failing before the fix: no exception, those sizes.
TEST(Validation, WorkspaceQueriesRefuseByteCountsBeyondSixtyFourBits) {
  const std::int64_t d = 40;
  const gaussian_mixture m(d, {1.0}, std::vector<double>(d, 0.0), {1.0});
  const bernoulli_mixture b(d, {1.0}, std::vector<double>(d, 0.5));
  diffusion_options o;
  o.steps = 10;
  langevin_options l;
  l.steps = 10;
  for (const std::int64_t n : {((std::int64_t(1) << 60) - 1) / d, (std::int64_t(1) << 59) / d}) {
    EXPECT_THROW(diffusion_workspace_bytes(m, n, o), invalid_argument) << n;
    EXPECT_THROW(langevin_workspace_bytes(m, n, l), invalid_argument) << n;
    EXPECT_THROW(discrete_langevin_workspace_bytes(b, n, discrete_langevin_options{}), invalid_argument) << n;
    EXPECT_THROW(discrete_walk_jump_workspace_bytes(b, n, discrete_walk_jump_options{}), invalid_argument) << n;
  }
  // Sizes that fit are answered, at least 16 bytes per element for the chains' state.
  const std::int64_t n = (std::int64_t(1) << 57) / d;
  EXPECT_GE(double(diffusion_workspace_bytes(m, n, o)), 16.0 * double(n) * d);
  EXPECT_GE(double(langevin_workspace_bytes(m, n, l)), 16.0 * double(n) * d);
  EXPECT_GE(double(discrete_langevin_workspace_bytes(b, n, discrete_langevin_options{})), 16.0 * double(n) * d);
  EXPECT_GE(double(discrete_walk_jump_workspace_bytes(b, n, discrete_walk_jump_options{})), 20.0 * double(n) * d);
}

// The ask/tell plans size up to 5 buffers of n x d floats: at n x d just below 2^60 the byte count of Heun's 4
// buffers wrapped around, passed the memory check, and std::vector threw std::length_error ("cannot create std::vector larger than
// max_size()") out of sampling_plan::diffusion instead of the library's out_of_memory. Seen failing before the fix:
// std::length_error.
TEST(Validation, PlanBuffersBeyondSixtyFourBitsAreOutOfMemory) {
  const std::int64_t d = 40, n = ((std::int64_t(1) << 60) - 1) / d;
  diffusion_options o;
  o.steps = 10;
  o.sampler = diffusion_sampler::ode_heun;  // x, the answer, P and M: 4 buffers
  EXPECT_THROW(sampling_plan::diffusion(n, d, o, model_output::denoiser, execution{executor::cpu, nullptr}),
               out_of_memory);
  langevin_options l;
  l.steps = 10;
  l.method = langevin_method::mala;
  EXPECT_THROW(sampling_plan::langevin(n, d, l, model_output::score, execution{executor::cpu, nullptr}),
               out_of_memory);
}

TEST(Validation, NamesAndExecutors) {
  expect_error([] { parse_executor("tpu"); }, {"executor", "tpu"});
  expect_error([] { parse_langevin_method("hmc"); }, {"method", "hmc"});
  EXPECT_EQ(parse_langevin_method("tamed_ula"), langevin_method::tamed_ula);
  EXPECT_EQ(parse_executor("cpu"), executor::cpu);
  expect_error([] { sliced_wasserstein(1, 1, 2, nullptr, nullptr, 0, 0); }, {"directions", "0"});
  if (!cuda_available()) {
    // Forcing the CUDA executor without a GPU is refused with the runtime's reason.
    const auto mix = small();
    std::vector<float> x(8), out(8);
    expect_error([&] { mix.evaluate(out.data(), 4, x.data(), {}, quantity::score, {executor::cuda}); },
                 {"executor", "no GPU"});
    // And automatic falls back to the CPU.
    EXPECT_EQ(mix.evaluate(out.data(), 4, x.data(), {}, quantity::score), executor::cpu);
  }
}

TEST(ValidationGpu, PointersMustMatchTheExecutor) {
  DIFFSAMPLE_REQUIRE_GPU();
  const auto mix = small();
  std::vector<float> host(8);
  dt::device_buffer<float> dev(8);
  expect_error([&] { mix.evaluate(dev.ptr, 4, host.data(), {}, quantity::score, {executor::cuda}); },
               {"x", "host pointer", "CUDA executor"});
  expect_error([&] { mix.evaluate(host.data(), 4, dev.ptr, {}, quantity::score, {executor::cpu}); },
               {"x", "device pointer", "CPU executor"});
  // Requests beyond device memory are refused before anything is launched.
  const gaussian_mixture mix3(3, {1}, {0, 0, 0}, {1});
  langevin_options o;
  expect_error<out_of_memory>([&] { langevin(mix3, dev.ptr, {}, std::int64_t(1) << 40, o); },
                              {"workspace", "device memory"});
}

// A caller's earlier failed CUDA call leaves its error in the runtime's per-thread last-error state (a refused
// cudaMalloc here: cudaErrorMemoryAllocation, not sticky). The library's launchers read that state after a launch
// with cudaPeekAtLastError() and threw the stale error as their launch's (out_of_memory); every launch now clears a
// pending error first and reads and clears its own after it (kernels::checked_launch). An evaluation (the
// for_each_index launcher), a Langevin run (the chain launcher) and a resampling of two tiles (its passes and CUB's
// scan) each run after such a failure and leave no error pending. Seen failing on an H200: CUB's size query of the
// scan (no launch, so outside checked_launch) returned cudaErrorInvalidDevice after the refused cudaMalloc; its
// size queries now go through checked_launch too.
TEST(ValidationGpu, ACallersStaleCudaErrorIsNotALaunchError) {
  DIFFSAMPLE_REQUIRE_GPU();
  const auto leave_an_error = [] {
    void* p = nullptr;
    ASSERT_EQ(cudaMalloc(&p, std::size_t(1) << 62), cudaErrorMemoryAllocation);
  };
  const auto mix = small();
  dt::device_buffer<float> x(std::vector<float>(8, 0.5f)), out(8);
  leave_an_error();
  EXPECT_NO_THROW(mix.evaluate(out.ptr, 4, x.ptr, {}, quantity::score, {executor::cuda}));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  langevin_options lo;
  lo.steps = 2;
  leave_an_error();
  EXPECT_NO_THROW(langevin(mix, x.ptr, {}, 4, lo, {executor::cuda}));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  const std::int64_t particles = 8192;  // two CUDA tiles: the tile passes and the scan
  dt::device_buffer<float> log_weights(std::vector<float>(particles, 0.f));
  dt::device_buffer<std::int32_t> ancestors(particles);
  particle_outputs po;
  po.ancestors = ancestors.ptr;
  resampling_options ro;
  ro.ess_threshold = 2.0;  // resample whatever the ESS
  leave_an_error();
  EXPECT_NO_THROW(resample(po, 1, particles, log_weights.ptr, ro, {executor::cuda}));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Values the FP32 kernels cannot represent are refused where they enter: means beyond 1e18, variances outside
// [1e-36, 1e36] (a variance of 1e-300 rounds to 0 in FP32 and once gave -inf scores), observations beyond 1e18
// (y = 1e160 once gave log p(y) = -nan), and a posterior whose log-evidence is not finite.
// Every size limit is printed from the constant the check compares against, in one form: "argument = value, the
// limit is N" (with the power of two beside N from 2^16 up), through each kind of entry point.
TEST(Validation, LimitMessagesNameTheArgumentAndTheLimit) {
  expect_error([] { gaussian_mixture((std::int64_t(1) << 24) + 1, {1}, {}, {1}); },
               {"dim = 16777217, the limit is 16777216 (2^24)"});
  expect_error([] { gaussian_mixture(0, {1}, {}, {1}); }, {"dim = 0, must be at least 1"});
  const auto mix = small();
  std::vector<float> x(8);
  const execution cpu{executor::cpu};
  langevin_options lo;
  lo.first_chain = (std::uint64_t(1) << 62) + 1;
  expect_error([&] { langevin(mix, x.data(), {}, 4, lo, cpu); },
               {"options.first_chain = 4611686018427387905, the limit is 4611686018427387904 (2^62)"});
  // Exact samples key their Philox streams by first_index + i as the chains do: the same limit (before, any 64-bit
  // first_index passed, and first_index + i could wrap onto the streams of index 0).
  std::vector<float> drawn(2 * 4);
  expect_error([&] { mix.sample(drawn.data(), 4, {1.0, 0.5}, 1, nullptr, (std::uint64_t(1) << 62) + 1, cpu); },
               {"first_index = 4611686018427387905, the limit is 4611686018427387904 (2^62)"});
  const bernoulli_mixture bits(2, {1.0}, {0.25, 0.75});
  expect_error([&] { bits.sample(drawn.data(), 4, 1.0, 1, nullptr, ~std::uint64_t(0), cpu); },
               {"first_index = 18446744073709551615, the limit is 4611686018427387904 (2^62)"});
  mix.sample(drawn.data(), 4, {1.0, 0.5}, 1, nullptr, std::uint64_t(1) << 62, cpu);  // the limit itself passes
  diffusion_options dop;
  dop.steps = (std::int64_t(1) << 24) + 1;
  expect_error([&] { diffusion(mix, x.data(), {}, 4, dop, cpu); },
               {"options.steps = 16777217, the limit is 16777216 (2^24)"});
  noise_schedule schedule;
  expect_error([&] { schedule.points((std::int64_t(1) << 24) + 1); }, {"steps = 16777217, the limit is 16777216"});
  std::vector<float> log_weights(4);
  expect_error([&] { resample({}, 1, (std::int64_t(1) << 24) + 1, log_weights.data(), {}, cpu); },
               {"particles = 16777217, the limit is 16777216 (2^24)"});
  // Metropolis resampling runs metropolis_steps iterations per particle: bounded like the other inner loops (before,
  // any int passed, and 2^31 - 1 iterations per particle ran for hours). Seen failing: no error.
  resampling_options metropolis;
  metropolis.scheme = resampling_scheme::metropolis;
  metropolis.metropolis_steps = (1 << 20) + 1;
  particle_report report;
  particle_outputs resampled;
  resampled.reports = &report;
  expect_error([&] { resample(resampled, 1, 4, log_weights.data(), metropolis, cpu); },
               {"options.metropolis_steps = 1048577, the limit is 1048576 (2^20)"});
  guided_problems g;
  g.problems = 1;
  g.d_y = 1025;
  guided_options o;
  std::vector<float> out(2 * 16);
  guided_outputs outputs;
  outputs.samples = out.data();
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); }, {"problems.d_y = 1025, the limit is 1024"});
  g.d_y = 1;
  g.A = {1, 0};
  g.y = {1};
  g.sigma_y = {0.5};
  o.particles = 16;
  o.steps = 2;
  o.skrock_stages = 201;
  o.sampler = guided_sampler::skrock;
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); }, {"options.skrock_stages = 201, the limit is 200"});
  o.skrock_stages = 10;
  o.sampler = guided_sampler::smc;
  o.resampling.scheme = resampling_scheme::metropolis;
  o.resampling.metropolis_steps = (1 << 20) + 1;
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); },
               {"options.resampling.metropolis_steps = 1048577, the limit is 1048576 (2^20)"});
  o.resampling = guided_options{}.resampling;
  o.skrock_stages = guided_options{}.skrock_stages;
  o.sampler = guided_sampler::dcps;
  o.steps = 1024;
  o.dcps_blocks = 1024;
  o.dcps_langevin_steps = std::int64_t(1) << 20;
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); },
               {"dcps_blocks x dcps_langevin_steps = 1073744897, the limit is 1073741823 (2^30 - 1)"});
  o.dcps_langevin_steps = guided_options{}.dcps_langevin_steps;
  o.dcps_gradient_steps = 65;
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); }, {"options.dcps_gradient_steps = 65, the limit is 64"});
  linear_observation obs;
  obs.d_y = 4097;
  obs.d_x = 2;
  expect_error([&] { mixture_posterior(mix, obs); },
               {"observation.d_y = 4097, the limit is 4096 (each component factors a d_y x d_y matrix)"});
}

// The C ABI's last error belongs to the calling thread: a success on one thread neither clears nor replaces the
// message of another thread's failure.
TEST(Validation, ADimensionBelowOneIsNamedAsTheDimension) {
  // A dimension argument of 0 or -1 is refused naming that argument (gather_particles' dim, the plans' dim), not
  // the count it multiplies (it said "problems x particles: dimension must be >= 1" and "n: dimension ...").
  const execution cpu{executor::cpu};
  std::vector<float> states(8), out(8);
  std::vector<std::int32_t> ancestors(2);
  for (const std::int64_t dim : {std::int64_t(0), std::int64_t(-1)}) {
    const std::string want = "dim = " + std::to_string(dim) + ", must be at least 1";
    SCOPED_TRACE(want);
    expect_error([&] { gather_particles(out.data(), 1, 2, dim, states.data(), ancestors.data(), cpu); },
                 {want.c_str()});
    expect_error([&] { diffusion_plan(4, dim, diffusion_options{}, model_output::denoiser, cpu); }, {want.c_str()});
    expect_error([&] { sampling_plan::diffusion(4, dim, diffusion_options{}, model_output::denoiser, cpu); },
                 {want.c_str()});
    expect_error([&] { sampling_plan::langevin(4, dim, langevin_options{}, model_output::score, cpu); },
                 {want.c_str()});
  }
}

TEST(Validation, CLastErrorIsPerThread) {
  std::promise<void> failed, succeeded;
  std::string seen_by_failing_thread, seen_by_succeeding_thread;
  std::thread failing([&] {
    ds_executor e = DS_EXECUTOR_AUTOMATIC;
    EXPECT_EQ(ds_parse_executor("tpu", &e), DS_INVALID_ARGUMENT);
    failed.set_value();
    succeeded.get_future().wait();  // the other thread's call succeeded in between
    seen_by_failing_thread = ds_last_error();
  });
  std::thread succeeding([&] {
    failed.get_future().wait();
    ds_executor e = DS_EXECUTOR_AUTOMATIC;
    EXPECT_EQ(ds_parse_executor("cpu", &e), DS_SUCCESS);
    seen_by_succeeding_thread = ds_last_error();
    succeeded.set_value();
  });
  failing.join();
  succeeding.join();
  EXPECT_NE(seen_by_failing_thread.find("tpu"), std::string::npos) << seen_by_failing_thread;
  EXPECT_EQ(seen_by_succeeding_thread, "");
}

TEST(Validation, ValuesBeyondFp32) {
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, 1e300}, {1, 1}); }, {"means[1]", "1e+300", "FP32"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, -2e18}, {1, 1}); }, {"means[1]", "-2e+18"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, 1}, {1, 1e-300}); }, {"variances[1]", "1e-300"});
  expect_error([] { gaussian_mixture(1, {1, 1}, {0, 1}, {1e37, 1}); }, {"variances[0]", "1e+37"});
  const gaussian_mixture ok(1, {1, 1}, {0, 1e18}, {1e-36, 1e36});  // the limits themselves are accepted
  EXPECT_EQ(ok.components(), 2);
  const auto mix = small();
  linear_observation obs;
  obs.d_y = 1;
  obs.d_x = 2;
  obs.A = {1, 0};
  obs.sigma_y = 0.5;
  obs.y = {1e160};
  expect_error([&] { mixture_posterior(mix, obs); }, {"observation.y[0]", "1e+160"});
  obs.y = {1e17};
  obs.A = {1e-300, 0};
  obs.sigma_y = 1e-150;  // y^2 / (A Sigma A^T + sigma_y^2) = 1e34 / 1e-300 overflows FP64: no finite evidence
  expect_error([&] { mixture_posterior(mix, obs); }, {"log p(y)"});
  guided_problems g;
  g.problems = 1;
  g.d_y = 1;
  g.A = {1, 0};
  g.sigma_y = {0.5};
  g.y = {-1e300};
  std::vector<float> out(2 * 16);
  guided_options o;
  o.potentials = guided_potentials::linear;
  o.particles = 16;
  o.steps = 2;
  guided_outputs outputs;
  outputs.samples = out.data();
  expect_error([&] { guided_sample(mix, outputs, g, o, {executor::cpu}); }, {"problems.y[0]", "-1e+300"});
  // A channel and a Langevin step the FP32 kernels cannot hold (they gave NaN: a = 1e300 is infinite in FP32, and so
  // are gamma = 1e39 and, for MALA, 1 / (4 gamma) at gamma = 1e-40, which rejected every proposal).
  std::vector<float> x(4, 0.5f), v(4, 1.f), values(4);
  const execution cpu{executor::cpu};
  expect_error([&] { mix.evaluate(values.data(), 2, x.data(), {1e300, 0.5}, quantity::score, cpu); },
               {"ch.a", "1e+300", "FP32"});
  expect_error([&] { mix.evaluate(values.data(), 2, x.data(), {1.0, 1e300}, quantity::denoiser, cpu); },
               {"ch.s", "1e+300"});
  expect_error([&] { mix.denoiser_jvp(values.data(), 2, x.data(), v.data(), {1.0, 2e18}, cpu); }, {"ch.s", "2e+18"});
  expect_error([&] { mix.sample(values.data(), 2, {1e19, 1.0}, 1); }, {"ch.a", "1e+19"});
  langevin_options l;
  l.target = {1e300, 0.5};
  expect_error([&] { langevin(mix, x.data(), {}, 2, l, cpu); }, {"options.target.a", "1e+300"});
  for (double gamma : {1e39, 1e-40}) {
    l = {};
    l.method = langevin_method::mala;
    l.step_size = gamma;
    expect_error([&] { langevin(mix, x.data(), {}, 2, l, cpu); }, {"options.step_size", "FP32"});
    expect_error([&] { sampling_plan::langevin(2, 2, l, model_output::score, cpu); }, {"options.step_size"});
  }
  mix.evaluate(values.data(), 2, x.data(), {1e18, 1e18}, quantity::score, cpu);  // the limits themselves pass
  l = {};
  l.step_size = 1e18;
  langevin(mix, x.data(), {}, 2, l, cpu);
  // Walk-jump's / SMS's noise and step, and the guided samplers' scalar settings: finite doubles beyond max_abs_value
  // overflow the FP32 arithmetic (before: walk-jump with sigma or gamma = 1e39, DPS with guidance scale 1e19 and DCPS
  // with learning rate 1e19 gave NaN samples, DCPS with Langevin step 1e19 values near 1e7); potential_spread takes
  // the same bound, as every scalar setting does.
  for (const char* field : {"options.sigma", "options.step_size"}) {
    diffusion_options d;
    d.sampler = diffusion_sampler::walk_jump;
    d.steps = 2;
    (std::string(field) == "options.sigma" ? d.sigma : d.step_size) = 1e39;
    expect_error([&] { diffusion(mix, x.data(), {}, 2, d, cpu); }, {field, "1e+39", "FP32"});
    expect_error([&] { diffusion_plan(2, 2, d, model_output::score, cpu); }, {field, "1e+39"});
  }
  g.y = {0.5};
  // Each setting with a sampler that reads it (the others refuse it as unread).
  using setting = void (*)(guided_options&);
  const std::pair<guided_sampler, setting> settings[] = {
      {guided_sampler::dps, [](guided_options& o) { o.guidance_scale = 1e19; }},
      {guided_sampler::smc, [](guided_options& o) { o.potential_spread = 1e19; }},
      {guided_sampler::dcps, [](guided_options& o) { o.dcps_langevin_step = 1e19; }},
      {guided_sampler::dcps, [](guided_options& o) { o.dcps_learning_rate = 1e19; }}};
  for (const auto& [sampler, set] : settings) {
    guided_options go = o;
    go.sampler = sampler;
    if (sampler == guided_sampler::dcps) go.dcps_blocks = 1;
    set(go);
    expect_error([&] { guided_sample(mix, outputs, g, go, cpu); }, {"options.", "1e+19", "FP32"});
  }
}

// sigma_y is squared by the FP32 guided samplers as a variance is: below 1e-18 (sqrt(min_variance)) sigma_y^2 is no
// longer a normal FP32 number and 1 / sigma_y^2 overflows. Before: sigma_y = 1e-19 gave NaN samples from DCPS,
// 1e-20 a log-normaliser of -inf from SMC, 1e-45 NaN samples from DDRM, all accepted. The bound itself passes, for
// every sampler, in guided_sample() and in the ask/tell plan alike.
TEST(Validation, GuidedSigmaYSquaresToANormalFp32Number) {
  const auto mix = small();
  guided_problems g;
  g.problems = 2;
  g.d_y = 1;
  g.A = {1, 0.5};
  g.y = {0.3, -0.2};
  guided_options o;
  o.potentials = guided_potentials::linear;
  o.particles = 16;
  o.steps = 4;
  std::vector<float> out(2 * 16 * 2);
  guided_outputs outputs;
  outputs.samples = out.data();
  const execution cpu{executor::cpu};
  for (guided_sampler s : {guided_sampler::smc, guided_sampler::dcps, guided_sampler::ddrm, guided_sampler::pigdm}) {
    o.sampler = s;
    o.dcps_blocks = s == guided_sampler::dcps ? 1 : guided_options{}.dcps_blocks;  // DCPS's (the others refuse it)
    for (double tiny : {1e-19, 1e-30, 1e-45}) {
      g.sigma_y = {0.5, tiny};
      expect_error([&] { guided_sample(mix, outputs, g, o, cpu); }, {"problems.sigma_y[1]", "FP32"});
      g.sigma_y = {tiny};
      expect_error([&] { sampling_plan::guided(2, g, o, model_output::denoiser, cpu); }, {"problems.sigma_y[0]"});
    }
    g.sigma_y = {1e-18};
    EXPECT_NO_THROW(guided_sample(mix, outputs, g, o, cpu)) << to_string(s);
  }
}

// The linear potentials' last transition draws with a spread that grows as 1 / (v_f A A^T), v_f proportional to
// options.potential_spread: a spread of 1e-100 (finite and >= 0, so accepted) took its FP32 factor to inf, and every
// sample and particle came out NaN with a finite log-normaliser, from guided_sample() and the ask/tell plan alike;
// so did the default spread with an A of 1e-40 (subnormal in FP32). Both are refused now, naming the setting or A,
// with the outputs untouched; the spreads and scales that fit (1e-14, A = 1e-35) still run to finite samples. Seen
// failing before the fix: all 8 samples NaN, nothing refused.
TEST(Validation, ALinearPotentialsSpreadPastFp32IsRefused) {
  const auto mix = small();
  const execution cpu{executor::cpu};
  for (const auto& [spread, scale, named] :
       {std::tuple{1e-100, 1.0, "options.potential_spread"}, std::tuple{0.0, 1e-40, "problems.A"},
        std::tuple{1e-14, 1.0, ""}, std::tuple{0.0, 1e-35, ""}}) {
    guided_problems g;
    g.d_y = 1;
    g.A = {scale, 0};
    g.y = {0.3};
    g.sigma_y = {0.5};
    guided_options o;
    o.potentials = guided_potentials::linear;
    o.potential_spread = spread;
    o.particles = 4;
    o.steps = 3;
    std::vector<float> samples(8, 42.f), particles(8, 42.f);
    double log_z = 42;
    guided_outputs out;
    out.samples = samples.data();
    out.particles = particles.data();
    out.log_normaliser = &log_z;
    const std::string what = "spread " + std::to_string(spread) + ", A " + std::to_string(scale);
    if (*named) {
      expect_error([&] { guided_sample(mix, out, g, o, cpu); }, {named, "past FP32"});
      EXPECT_EQ(samples, std::vector<float>(8, 42.f)) << what;
      EXPECT_EQ(particles, std::vector<float>(8, 42.f)) << what;
      EXPECT_EQ(log_z, 42) << what;
      expect_error([&] { sampling_plan::guided(2, g, o, model_output::denoiser, cpu); }, {named, "past FP32"});
    } else {
      guided_sample(mix, out, g, o, cpu);
      for (float v : samples) EXPECT_TRUE(std::isfinite(v)) << what;
      EXPECT_TRUE(std::isfinite(log_z)) << what;
    }
  }
}

// guided_workspace_bytes() refuses what guided_sample() refuses of the schedule, with the same message: a grid with
// a = 0 where a sampler needs a > 0 (vp_cosine's and the linear interpolant's t = 1; DDRM and SKRock run there),
// moment and twisted potentials or final moves on a grid that does not end at s = 0. Seen failing before: the query
// returned a size for each of these (TMPD and DCPS laid out their tables without the schedule's check, the other
// samplers never reached it), and only the run refused them. guided_times() refuses them too (seen failing: it
// returned the times of each of these grids).
TEST(Validation, GuidedWorkspaceQueryRefusesWhatTheRunRefuses) {
  const auto mix = small();
  guided_problems g;
  g.problems = 1;
  g.d_y = 1;
  g.A = {1, 0.5};
  g.y = {0.3};
  g.sigma_y = {0.5};
  const std::int64_t N = 8;
  std::vector<float> samples(N * 2);
  guided_outputs out;
  out.samples = samples.data();
  const execution cpu{executor::cpu};
  // The run's message, or "" when it runs.
  auto refusal = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  struct setting {
    const char* name;
    noise_schedule schedule;
    guided_potentials potentials;
    std::int64_t final_moves;
  };
  const noise_schedule early_end = noise_schedule::vp_linear().with_grid(time_grid::uniform, 1.0, 0.1);
  const setting settings[] = {
      {"vp_cosine", noise_schedule::vp_cosine(), guided_potentials::linear, 0},
      {"linear_interpolant", noise_schedule::linear_interpolant(), guided_potentials::linear, 0},
      {"moment potentials ending at s > 0", early_end, guided_potentials::moment, 0},
      {"twisted potentials ending at s > 0", early_end, guided_potentials::twisted, 0},
      {"final moves ending at s > 0", early_end, guided_potentials::linear, 2},
  };
  int refused = 0;
  for (const guided_sampler sampler : {guided_sampler::smc, guided_sampler::dps, guided_sampler::pigdm,
                                       guided_sampler::diffpir, guided_sampler::skrock, guided_sampler::tmpd,
                                       guided_sampler::ddrm, guided_sampler::dcps}) {
    for (const setting& s : settings) {
      if (sampler != guided_sampler::smc && (s.potentials != guided_potentials::linear || s.final_moves != 0))
        continue;  // smc's own settings
      // SKRock has no grid: it reads no schedule and refuses one other than the default (README "Options a method
      // does not read"), in the query as in the run.
      const bool skrock = sampler == guided_sampler::skrock;
      SCOPED_TRACE(std::string(to_string(sampler)) + ", " + s.name);
      guided_options o;
      o.sampler = sampler;
      o.schedule = s.schedule;
      o.potentials = s.potentials;
      o.final_moves = s.final_moves;
      o.particles = N;
      o.steps = 4;
      if (sampler == guided_sampler::dcps) o.dcps_blocks = 2;  // DCPS's setting: the others refuse it
      const std::string run = refusal([&] { guided_sample(mix, out, g, o, cpu); });
      EXPECT_EQ(refusal([&] { (void)guided_workspace_bytes(mix, g, o); }), run);
      EXPECT_EQ(refusal([&] { (void)guided_workspace_bytes(mix, g, o, cpu); }), run);
      EXPECT_EQ(refusal([&] { (void)guided_times(mix, g, o); }), run);  // the times of a grid the run refuses
      if (skrock) {
        EXPECT_EQ(run.rfind("options.schedule", 0), 0u) << run;
        EXPECT_NE(run.find("not read by sampler skrock"), std::string::npos) << run;
        continue;
      }
      // DDRM starts from a = 0 (its step divides by s alone): it runs on every grid here.
      const bool runs = sampler == guided_sampler::ddrm;
      EXPECT_EQ(run.empty(), runs) << run;
      if (!run.empty()) {
        ++refused;
        EXPECT_NE(run.find(s.final_moves > 0                            ? "options.final_moves"
                           : s.potentials != guided_potentials::linear ? "options.potentials"
                                                                        : "a = 0 at t = 1"),
                  std::string::npos)
            << run;
      }
    }
  }
  EXPECT_EQ(refused, 6 * 2 + 3);
}

// grid_mixture() allocated its K x dim means before any check of dim: dim = 2^40 threw std::bad_alloc (no library
// error, no name; through the C ABI "host allocation failed"), and dim = 2^24 with a 4096-point grid asked for 2 PiB.
// dim is checked against limits::max_dim and the means' bytes against the host limit, naming what, before allocating.
// A grid point with 0 < s < 1e-18: s^2 below min_variance (1e-36) leaves FP32's normal range, and the guided
// samplers' kernels square s: DCPS gave every particle NaN without a word from variance_exploding(1e-20, 50) down,
// DDRM from 1e-40, and below 1.5e-154 (s^2 subnormal in FP64) SMC, DPS, Pi-GDM and TMPD too (DiffPIR refused naming
// a covariance). The fused diffusion samplers run such grids
// (Diffusion.ChannelsWhoseSquareUnderflowsKeepTheirCoefficients). Every guided sampler that reads the schedule
// refuses them, its run, its workspace query and its plan alike, naming the channel; outputs untouched. The bound
// itself runs, every particle finite.
TEST(Validation, GuidedGridsWithNoiseBelowTheFp32SquaresAreRefused) {
  const auto mix = small();
  guided_problems g;
  g.d_y = 1;
  g.A = {1, 0.5};
  g.y = {0.3};
  g.sigma_y = {0.5};
  const execution cpu{executor::cpu};
  for (const guided_sampler s : {guided_sampler::smc, guided_sampler::dps, guided_sampler::pigdm,
                                 guided_sampler::diffpir, guided_sampler::tmpd, guided_sampler::ddrm,
                                 guided_sampler::dcps}) {
    guided_options o;
    o.sampler = s;
    o.particles = 16;
    o.steps = 20;
    o.schedule = noise_schedule::variance_exploding(1e-20, 50);
    std::vector<float> x(16 * 2, 7.f);
    guided_outputs out;
    out.particles = x.data();
    expect_error([&] { guided_sample(mix, out, g, o, cpu); }, {"options.schedule: s = ", "below 1e-18"});
    for (float v : x) ASSERT_EQ(v, 7.f) << to_string(s);
    expect_error([&] { (void)guided_workspace_bytes(mix, g, o); }, {"below 1e-18"});
    expect_error([&] { (void)sampling_plan::guided(2, g, o, model_output::denoiser, cpu); }, {"below 1e-18"});
    o.schedule = noise_schedule::variance_exploding(1e-18, 50);
    EXPECT_NO_THROW(guided_sample(mix, out, g, o, cpu)) << to_string(s);
    for (float v : x) ASSERT_TRUE(std::isfinite(v)) << to_string(s);
  }
}

TEST(Validation, GridMixtureChecksItsSizeBeforeAllocating) {
  expect_error([] { grid_mixture(std::int64_t(1) << 40, 2, 1.0, 1.0); }, {"dim", "1099511627776", "2^24"});
  expect_error([] { grid_mixture(-1, 2, 1.0, 1.0); }, {"dim", "-1"});
  try {
    grid_mixture(limits::max_dim, int(limits::max_grid), 1.0, 1.0);
    ADD_FAILURE() << "2^24 x 2^24 means accepted";
  } catch (const out_of_memory& e) {
    EXPECT_NE(std::string(e.what()).find("grid_mixture"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not out_of_memory: " << e.what();
  }
  ds_mixture* m = nullptr;
  EXPECT_EQ(ds_grid_mixture_create(std::int64_t(1) << 40, 2, 1.0, 1.0, nullptr, 0, &m), DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("dim"), std::string::npos) << ds_last_error();
  EXPECT_EQ(grid_mixture(3, 2, 1.0, 1.0).dim(), 3);
}

// grid_mixture() refused a spacing whose outermost means lie beyond max_abs_value, and a variance outside
// [min_variance, max_variance], through the constructor's checks of the tables it built: "means[0]: -1.5e+18 is
// outside ...", "variances[0]: 1e-40 is outside ...", arguments the caller (and a C caller of
// ds_grid_mixture_create, whose fuzz inputs showed it) never passed. Each is refused naming its own argument; the
// largest spacing the means allow still builds.
TEST(Validation, GridMixtureNamesItsSpacingAndVariance) {
  expect_error([] { grid_mixture(2, 4, 1e18, 1.0); }, {"spacing: 1e+18", "4 x 4 grid", "1.5e+18"});
  expect_error([] { grid_mixture(2, 2, -1e300, 1.0); }, {"spacing: -1e+300"});
  expect_error([] { grid_mixture(2, 2, 1.0, 1e-40); }, {"variance: 1e-40", "1e-36"});
  expect_error([] { grid_mixture(2, 2, 1.0, std::nan("")); }, {"variance: nan"});
  expect_error([] { grid_mixture(2, 2, 1.0, -1.0); }, {"variance: -1"});
  EXPECT_EQ(grid_mixture(2, 3, 1e18, 1.0).components(), 9);  // outermost means at +-1e18 exactly
  EXPECT_EQ(grid_mixture(2, 1, 1e300, 1.0).components(), 1);  // one component, at the origin
  ds_mixture* m = nullptr;
  EXPECT_EQ(ds_grid_mixture_create(2, 4, 1e18, 1.0, nullptr, 0, &m), DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("spacing"), std::string::npos) << ds_last_error();
  EXPECT_EQ(ds_grid_mixture_create(2, 2, 1.0, 1e40, nullptr, 0, &m), DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("variance: 1e+40"), std::string::npos) << ds_last_error();
  EXPECT_EQ(m, nullptr);
}

// The C ABI's host outputs of an analytic posterior and of the component weights were copied into the caller's
// buffers one after the other: a covariance over the mean replaced part of the mean, component means over the
// weights replaced weights, and weights written over the samples destroyed them. Any two that share a byte are
// refused naming both, nothing written.
TEST(Validation, CHostOutputsMustNotOverlap) {
  const double w[2] = {0.4, 0.6}, mu[4] = {-1, 0, 1, 0.5}, var[2] = {0.5, 1.0}, A[2] = {1, 0.5}, y[1] = {0.3};
  ds_mixture* m = nullptr;
  ASSERT_EQ(ds_mixture_create(2, 2, w, mu, var, 2, &m), DS_SUCCESS);
  ds_posterior* q = nullptr;
  ASSERT_EQ(ds_posterior_create(m, 1, A, 0.5, y, &q), DS_SUCCESS);
  auto refused = [](ds_status s, const char* fragment) {
    EXPECT_EQ(s, DS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(ds_last_error()).find(fragment), std::string::npos) << ds_last_error();
  };
  std::vector<double> buf(16, -7.0);
  const std::vector<double> before = buf;
  refused(ds_posterior_moments(q, buf.data(), buf.data() + 1), "covariance: must not overlap mean");
  refused(ds_posterior_components(q, buf.data(), nullptr, buf.data() + 1, nullptr), "means: must not overlap weights");
  refused(ds_posterior_components(q, nullptr, buf.data() + 8, nullptr, buf.data() + 2),
          "covariances: must not overlap log_weights");
  EXPECT_EQ(buf, before);
  std::vector<float> x = {0.1f, 0.2f, -0.5f, 1.0f, 0.3f, 0.3f, 2.0f, -1.0f};
  const std::vector<float> x0 = x;
  refused(ds_component_weights(m, x.data(), 4, reinterpret_cast<double*>(x.data() + 2)), "out: must not overlap x");
  refused(ds_posterior_component_weights(q, x.data(), 4, reinterpret_cast<double*>(x.data())),
          "out: must not overlap x");
  EXPECT_EQ(x, x0);
  // Separate buffers: written.
  EXPECT_EQ(ds_posterior_moments(q, buf.data(), buf.data() + 2), DS_SUCCESS);
  EXPECT_EQ(ds_posterior_components(q, buf.data(), buf.data() + 2, buf.data() + 4, buf.data() + 8), DS_SUCCESS);
  double cw[2];
  EXPECT_EQ(ds_component_weights(m, x.data(), 4, cw), DS_SUCCESS);
  ds_posterior_destroy(q);
  ds_mixture_destroy(m);
}

// A caller's workspace smaller than the call needs, placed just before x, was refused as overlapping x: the overlap
// check measured it with the bytes needed, not the bytes given, and ran first. The size is checked first, so the
// message says what is wrong ("workspace_bytes: 8 given, N needed").
TEST(Validation, ATooSmallWorkspaceIsRefusedForItsSize) {
  const auto mix = small();
  const execution cpu{executor::cpu};
  std::vector<float> buf(64, 0.5f);
  void* ws = buf.data();
  float* x = buf.data() + 2;  // 8 bytes after the workspace's start
  langevin_options l;
  l.steps = 2;
  expect_error([&] { langevin(mix, x, {}, 4, l, cpu, ws, 8); }, {"workspace_bytes: 8 given"});
  diffusion_options d;
  d.steps = 2;
  expect_error([&] { diffusion(mix, x, {}, 4, d, cpu, ws, 8); }, {"workspace_bytes: 8 given"});
  particle_outputs out;
  std::vector<std::int32_t> anc(8);
  out.ancestors = anc.data();
  expect_error([&] { resample(out, 2, 4, x, resampling_options{}, cpu, ws, 8); }, {"workspace_bytes: 8 given"});
  const bernoulli_mixture b(2, {1.0}, {0.3, 0.7});
  std::vector<float> y(64, 1.f);
  discrete_langevin_options o;
  o.steps = 2;
  expect_error([&] { discrete_langevin(b, y.data() + 2, {}, 4, o, cpu, y.data(), 8); }, {"workspace_bytes: 8 given"});
  discrete_walk_jump_options w;
  w.steps = 2;
  expect_error([&] { discrete_walk_jump(b, y.data() + 2, {}, 4, w, cpu, y.data(), 8); }, {"workspace_bytes: 8 given"});
}

// at() gave the channel points() refuses: stochastic localization's a = t = 1e40 (beyond max_abs_value, which the
// FP32 kernels square) and a = s = 0 at t = 0 came back as values. It refuses them now with points()' words, naming
// the time; 1e18 itself passes, as in points().
TEST(Validation, ScheduleAtRefusesTheChannelsPointsRefuses) {
  const noise_schedule sl = noise_schedule::stochastic_localization();
  expect_error([&] { (void)sl.at(1e40); }, {"schedule: the channel a = 1e+40", "at t = 1e+40", "beyond 1e+18"});
  expect_error([&] { (void)noise_schedule(sl).with_times({1e-3, 1e40}).points(1); },
               {"schedule: the channel a = 1e+40", "at t = 1e+40", "beyond 1e+18"});
  expect_error([&] { (void)sl.at(0); }, {"schedule: invalid channel a = 0, s = 0 at t = 0"});
  expect_error([&] { (void)noise_schedule(sl).with_times({0, 1}).points(1); },
               {"schedule: invalid channel a = 0, s = 0 at t = 0"});
  EXPECT_EQ(sl.at(1e18).a, 1e18);
  EXPECT_EQ(noise_schedule(sl).with_times({1e-3, 1e18}).points(1).back().a, 1e18);
}

// A schedule's channels beyond max_abs_value (1e18) passed: the FP32 kernels square a and s, so a variance-exploding
// sigma_max of 1e20 gave NaN samples from Pi-GDM, DDRM, TMPD, DCPS and DPS (1e25: SMC too), and stochastic
// localization's a = t up to 1e40 NaN samples from every sampler. The schedule refuses sigma_max above it, and
// points() a grid point whose a or s is beyond it, naming the time, so every sampler built on the grid refuses
// them; 1e18 itself passes.
TEST(Validation, ScheduleChannelsWithinFp32Squares) {
  const auto mix = small();
  const execution cpu{executor::cpu};
  expect_error([] { noise_schedule::variance_exploding(0.01, 1e20).points(10); }, {"schedule.sigma_max", "1e+20"});
  expect_error([] { noise_schedule::stochastic_localization(1e-3, 1e40).points(10); }, {"schedule", "a = ", "beyond 1e+18"});
  EXPECT_NO_THROW(noise_schedule::variance_exploding(0.01, 1e18).points(10));
  std::vector<float> x(8, 0.f);
  diffusion_options d;
  d.sampler = diffusion_sampler::reverse_sde;
  d.schedule = noise_schedule::variance_exploding(0.01, 1e20);
  d.steps = 4;
  expect_error([&] { diffusion(mix, x.data(), {}, 4, d, cpu); }, {"schedule.sigma_max", "1e+20"});
  guided_problems g;
  g.problems = 1;
  g.d_y = 1;
  g.A = {1, 0.5};
  g.y = {0.3};
  g.sigma_y = {0.5};
  guided_options o;
  o.sampler = guided_sampler::pigdm;
  o.schedule = d.schedule;
  o.particles = 4;
  o.steps = 4;
  std::vector<float> out(8);
  guided_outputs outputs;
  outputs.samples = out.data();
  expect_error([&] { guided_sample(mix, outputs, g, o, cpu); }, {"schedule.sigma_max", "1e+20"});
}

// The FP64 host references ran in parallel over points with out in x's (or v's) memory: each point's outputs
// overwrote other points' inputs while they were read (the FP32 evaluations refuse the same overlap). Refused naming
// both, the caller's x untouched.
TEST(Validation, Fp64ReferencesRefuseOutputsOverTheirInputs) {
  const auto mix = small();
  std::vector<double> x = {0.1, -0.3, 1.2, 0.4, -2.0, 0.7, 0.5, 0.5};
  const std::vector<double> x0 = x;
  expect_error([&] { mix.evaluate_fp64(x.data(), 4, x.data(), {1.0, 0.5}, quantity::score); },
               {"out: must not overlap x"});
  expect_error([&] { mix.evaluate_fp64(x.data() + 1, 4, x.data(), {1.0, 0.5}, quantity::log_density); },
               {"out: must not overlap x"});
  std::vector<double> v = {1, 0, 0, 1, 1, 1, 0.5, -0.5};
  expect_error([&] { mix.denoiser_jvp_fp64(v.data(), 4, x.data(), v.data(), {1.0, 0.5}); },
               {"out: must not overlap v"});
  expect_error([&] { mix.denoiser_jvp_fp64(x.data() + 2, 4, x.data(), v.data(), {1.0, 0.5}); },
               {"out: must not overlap x"});
  const bernoulli_mixture b(2, {1.0}, {0.3, 0.7});
  expect_error([&] { b.evaluate_fp64(x.data(), 4, x.data(), 1.0, quantity::denoiser); }, {"out: must not overlap y"});
  EXPECT_EQ(x, x0);
  std::vector<double> out(8);
  expect_error([&] { mix.evaluate_fp64(out.data(), 4, x.data(), {1.0, 0.5}, static_cast<quantity>(7)); },
               {"what: invalid quantity 7"});  // ran as the denoiser
  mix.evaluate_fp64(out.data(), 4, x.data(), {1.0, 0.5}, quantity::score);
  mix.denoiser_jvp_fp64(out.data(), 4, x.data(), v.data(), {1.0, 0.5});
}

// chosen_path() answered for any n and quantity (ds_mixture_chosen_path(-1) returned a path); it checks them as
// evaluate() does, so the query refuses what the call would.
TEST(Validation, ChosenPathChecksWhatEvaluateChecks) {
  const auto mix = small();
  expect_error([&] { mix.chosen_path(-1, quantity::score, {}, executor::cpu); }, {"n: must be >= 0, got -1"});
  expect_error([&] { mix.chosen_path(2, static_cast<quantity>(7), {}, executor::cpu); }, {"what: invalid quantity 7"});
  ds_mixture_path path;
  const double w[2] = {1, 1}, mu[4] = {0, 0, 1, 1}, v[2] = {1, 1};
  ds_mixture* m = nullptr;
  ASSERT_EQ(ds_mixture_create(2, 2, w, mu, v, 2, &m), DS_SUCCESS);
  EXPECT_EQ(ds_mixture_chosen_path(m, -1, DS_SCORE, nullptr, DS_EXECUTOR_CPU, &path), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_mixture_chosen_path(m, 10, DS_SCORE, nullptr, DS_EXECUTOR_CPU, &path), DS_SUCCESS);
  ds_mixture_destroy(m);
  EXPECT_NO_THROW(mix.chosen_path(0, quantity::log_density, {}, executor::cpu));  // n = 0 runs, as evaluate()
}

// A record_every beyond the run's steps records nothing: the trajectory buffer was taken (or demanded) and never
// written, so the caller read its own contents as the records. Refused before anything runs, x untouched; the run's
// own step count (SMS: steps x measurements) is the bound. Seen failing before the fix: every call below returned.
TEST(Validation, RecordEveryBeyondTheStepsIsRefused) {
  const gaussian_mixture m = small();
  std::vector<float> x(2 * 2, 0.25f), trajectory(4 * 2 * 2, -7.f);
  langevin_options lo;
  lo.steps = 3;
  lo.record_every = 4;
  expect_error([&] { langevin(m, x.data(), {trajectory.data(), nullptr}, 2, lo, {executor::cpu}); },
               {"options.record_every: 4 is more than options.steps = 3"});
  lo.steps = 0;
  lo.record_every = 1;
  expect_error([&] { langevin(m, x.data(), {trajectory.data(), nullptr}, 2, lo, {executor::cpu}); },
               {"options.record_every: 1 is more than options.steps = 0"});
  diffusion_options d;
  d.steps = 3;
  d.record_every = 4;
  expect_error([&] { diffusion(m, x.data(), {trajectory.data()}, 2, d, {executor::cpu}); },
               {"options.record_every: 4 is more than the run's 3 steps"});
  d.sampler = diffusion_sampler::sequential_measurements;
  d.steps = 2;
  d.measurements = 2;
  d.record_every = 5;
  expect_error([&] { diffusion(m, x.data(), {trajectory.data()}, 2, d, {executor::cpu}); },
               {"options.record_every: 5 is more than the run's 4 steps"});
  for (float v : x) ASSERT_EQ(v, 0.25f);
  for (float v : trajectory) ASSERT_EQ(v, -7.f);
  d.record_every = 4;  // one record
  EXPECT_NO_THROW(diffusion(m, x.data(), {trajectory.data()}, 2, d, {executor::cpu}));
  lo.steps = 3;
  lo.record_every = 3;
  EXPECT_NO_THROW(langevin(m, x.data(), {trajectory.data(), nullptr}, 2, lo, {executor::cpu}));
}
