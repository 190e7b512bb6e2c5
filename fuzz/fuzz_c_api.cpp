// libFuzzer harness of the C API's create and sample entry points (scripts/fuzz.sh builds and runs it, with
// src/c_api/*.cpp compiled into the harness under AddressSanitizer and UBSan, over libdiffsample.so). The input is read
// as a stream of choices: sizes, counts (right or wrong), raw enum values, struct sizes (right, an older layout's or
// wrong), and the doubles of every array, which the harness allocates with exactly the length it passes when the
// library may read that many, and shorter when the count is one the library must refuse first (so that a read past a
// caller's array is caught by ASan's memcpy interceptor). After a mixture's Langevin, diffusion and posterior calls
// come noise schedules with custom times or a vp table (ds_schedule_points, ds_diffusion), guided problems (dense,
// mask and SVD operators, every sampler, custom grids, workspaces: ds_guided_workspace_bytes, ds_guided_times,
// ds_guided_sample2) and a grid mixture (ds_grid_mixture_create) with guided problems on it; values of 0 (an input
// that ran out of bytes) read as valid choices, so that short inputs reach the later calls. Every call must return a
// known status, with a message on failure and none on success; a created mixture must also be usable by the
// samplers. CPU executor only (the harness never needs a GPU).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include <diffsample/diffsample.h>

namespace {

/// The fuzzer's bytes as a stream of values; past the end every read returns zero.
class stream {
 public:
  stream(const std::uint8_t* data, std::size_t size) : p_(data), left_(size) {}
  std::uint8_t byte() {
    if (left_ == 0) return 0;
    --left_;
    return *p_++;
  }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(byte()) << (8 * i);
    return v;
  }
  /// A double: usually a small value, sometimes any bit pattern (inf, NaN, 1e300, subnormals).
  double number() {
    const std::uint8_t kind = byte();
    if (kind < 200) return (double(kind) - 100.0) / 8.0;
    std::uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= std::uint64_t(byte()) << (8 * i);
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  /// A positive double as a scale or a variance: usually a small positive value, sometimes any bit pattern (negative,
  /// zero, inf, NaN).
  double positive() {
    const std::uint8_t kind = byte();
    if (kind < 200) return (double(kind) + 1.0) / 16.0;
    std::uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= std::uint64_t(byte()) << (8 * i);
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  /// A step or particle count: 1..@p most, sometimes -1, 0 or @p most + 1 (0 reads as 1: inputs that run out of
  /// bytes keep valid counts).
  std::int64_t steps(std::int64_t most) {
    const std::uint8_t kind = byte();
    if (kind < 224) return 1 + kind % most;
    return std::int64_t(kind % 3) - 1 + (kind % 3 == 2 ? most : 0);
  }
  /// A count near @p right: right, a small wrong value, or 0.
  std::int64_t count(std::int64_t right) {
    const std::uint8_t kind = byte();
    if (kind < 192) return right;
    if (kind < 224) return std::int64_t(kind - 192);
    return right + 1;
  }
  /// @p n doubles in an array of exactly @p n elements (nullptr when n == 0), from number() or positive().
  std::unique_ptr<double[]> doubles(std::int64_t n, bool positive_values = false) {
    if (n <= 0) return nullptr;
    std::unique_ptr<double[]> a(new double[std::size_t(n)]);
    for (std::int64_t i = 0; i < n; ++i) a[i] = positive_values ? positive() : number();
    return a;
  }

 private:
  const std::uint8_t* p_;
  std::size_t left_;
};

/// A returned status must be one of the five, with a message exactly when it failed.
void check(ds_status s) {
  if (s != DS_SUCCESS && s != DS_INVALID_ARGUMENT && s != DS_OUT_OF_MEMORY && s != DS_CUDA_ERROR && s != DS_INTERNAL)
    std::abort();
  const char* message = ds_last_error();
  if (message == nullptr) std::abort();
  if ((s == DS_SUCCESS) != (message[0] == '\0')) std::abort();
  if (s == DS_INTERNAL) std::abort();  // an exception the library did not expect
}

/// Stores an enum value into @p field as a C caller's int would be: mostly valid values, sometimes any 32-bit
/// value (through memcpy: the harness itself never loads an out-of-range value through the enum type).
template <class E>
void set_raw_enum(stream& in, E* field) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  const std::uint8_t kind = in.byte();
  const int v = kind < 200 ? int(kind % 10) : int(in.u32());
  std::memcpy(static_cast<void*>(field), &v, sizeof v);
}

/// ds_mixture_evaluate with the quantity given as an int, as a C caller may pass any value. Passing the argument
/// loads it through the enum type in this C++ frame, which is the caller's side of the interface, not the library's:
/// that one load is exempt from UBSan's enum check.
__attribute__((no_sanitize("enum"))) ds_status evaluate_raw(const ds_mixture* m, int what, const float* x,
                                                            std::int64_t n, ds_channel ch, float* out,
                                                            ds_execution exec) {
  ds_quantity q;
  std::memcpy(&q, &what, sizeof what);
  return ds_mixture_evaluate(m, q, x, n, ch, out, exec, nullptr);
}

/// A count for an array that the library checks against @p allowed before reading it, and the array the harness
/// passes: exactly count values when the count is one the library accepts (it may read them all), else a short array
/// of 0 to 2 values whatever the count says (the library must refuse the count before reading).
struct counted {
  std::int64_t count = 0;
  std::unique_ptr<double[]> values;
};
counted counted_array(stream& in, std::int64_t right, std::initializer_list<std::int64_t> allowed,
                      bool positive_values = false) {
  counted c;
  c.count = in.count(right);
  bool ok = false;
  for (std::int64_t a : allowed) ok = ok || c.count == a;
  c.values = in.doubles(ok ? c.count : std::int64_t(in.byte() % 3), positive_values);
  return c;
}

/// @p count matrices of @p rows x @p r with orthonormal columns (unit vectors), or, sometimes, values from the stream.
std::unique_ptr<double[]> columns(stream& in, std::int64_t count, std::int64_t rows, std::int64_t r) {
  if (in.byte() >= 200) return in.doubles(count * rows * r);
  if (count * rows * r <= 0) return nullptr;
  std::unique_ptr<double[]> a(new double[std::size_t(count * rows * r)]);
  for (std::int64_t c = 0; c < count; ++c)
    for (std::int64_t j = 0; j < rows; ++j)
      for (std::int64_t i = 0; i < r; ++i) a[(c * rows + j) * r + i] = j == i ? 1.0 : 0.0;
  return a;
}

/// A struct_size as a caller may get it wrong: mostly the right one, sometimes 0, one byte short, an older layout's
/// size (@p older, which the library accepts) or any value.
std::size_t struct_size(stream& in, std::size_t right, std::size_t older) {
  const std::uint8_t kind = in.byte();
  if (kind < 224) return right;
  if (kind < 232) return 0;
  if (kind < 240) return right - 1;
  if (kind < 248) return older;
  return in.u32();
}

/// A schedule of a fuzzed kind and grid, with custom times (a count right for @p steps or not, values from the
/// stream: NaN, unordered, out of range) or a vp table. @p times and @p alpha_bar keep the arrays alive.
void fuzz_schedule(stream& in, ds_schedule* s, std::int64_t steps, std::unique_ptr<double[]>& times,
                   std::unique_ptr<double[]>& alpha_bar) {
  const std::uint8_t kind = in.byte();
  if (kind & 1) set_raw_enum(in, &s->kind);
  if (kind & 2) set_raw_enum(in, &s->grid);
  if (kind & 4) {
    s->t_start = in.number();
    s->t_end = in.number();
  }
  if (kind & 8) {
    // Custom times: the count must be steps + 1 (for a steps within the limits), refused otherwise before the
    // array is read; the harness passes exactly as many values only then.
    s->grid = DS_TIME_GRID_CUSTOM;
    const bool steps_ok = steps >= 1 && steps <= (std::int64_t(1) << 24);
    counted t = counted_array(in, steps + 1, {steps_ok ? steps + 1 : -1});
    s->times_count = t.count;
    if (in.byte() >= 240) t.values.reset();  // a null array for a nonzero count
    times = std::move(t.values);
    s->times = times.get();
  }
  if (kind & 16) {
    // A vp table: the count is the caller's (any N), so the array holds exactly that many values.
    s->kind = DS_SCHEDULE_VP_TABLE;
    s->alpha_bar_count = in.byte() % 6;
    alpha_bar = in.doubles(s->alpha_bar_count);
    s->alpha_bar = alpha_bar.get();
  }
  if (kind & 32) s->struct_size = struct_size(in, sizeof *s, sizeof *s);
}

/// Noise schedules with the caller's arrays: the grid's points, and a diffusion run on them.
void fuzz_schedules(stream& in, const ds_mixture* m, float* x, std::int64_t n, ds_execution cpu) {
  ds_schedule s;
  check(ds_schedule_init(&s, sizeof s, DS_SCHEDULE_VP_LINEAR));
  const std::int64_t steps = in.steps(6);
  std::unique_ptr<double[]> times, alpha_bar;
  fuzz_schedule(in, &s, steps, times, alpha_bar);
  std::vector<ds_schedule_point> points(std::size_t(steps > 0 ? steps + 1 : 1));
  check(ds_schedule_points(&s, steps, points.data()));

  ds_diffusion_options o;
  check(ds_diffusion_options_init(&o, sizeof o));
  set_raw_enum(in, &o.sampler);
  o.steps = steps;
  o.schedule = s;
  check(ds_diffusion(m, x, n, &o, nullptr, cpu, nullptr, 0, nullptr));
}

/// Guided problems on a prior of dimension @p d_x: dense, mask or SVD operators with counts right or wrong, values
/// from the stream (NaN, inf, out of range), null arrays; every sampler, its settings, custom grids and wrong
/// struct sizes; the workspace query, the grid's times and a run, whose outputs the harness sizes from what it
/// passes.
void fuzz_guided(stream& in, const ds_mixture* prior, std::int64_t d_x, ds_execution cpu) {
  ds_guided_problems gp;
  check(ds_guided_problems_init(&gp, sizeof gp));
  const std::int64_t B = 1 + in.byte() % 3, d_y = 1 + in.byte() % 3;
  gp.problems = B;
  gp.d_y = d_y;
  const auto y = in.doubles(B * d_y);
  gp.y = y.get();
  const counted sigma = counted_array(in, (in.byte() & 1) ? 1 : B, {1, B}, true);
  gp.sigma_y = sigma.values.get();
  gp.sigma_y_count = sigma.count;
  // The operator: dense, mask or SVD (sometimes two at once, which is refused).
  const std::uint8_t op = in.byte();
  counted A;
  std::unique_ptr<std::int64_t[]> mask;
  std::unique_ptr<double[]> gains, U, S, V;
  if ((op & 3) == 0 || (op & 4)) {
    const std::int64_t one = d_y * d_x;
    A = counted_array(in, (in.byte() & 1) ? one : B * one, {one, B * one});
    gp.A = A.values.get();
    gp.A_count = A.count;
  }
  if ((op & 3) == 1) {
    const std::int64_t right = (in.byte() & 1) ? d_y : B * d_y;
    gp.mask_count = in.count(right);
    const bool ok = gp.mask_count == d_y || gp.mask_count == B * d_y;
    const std::int64_t length = ok ? gp.mask_count : in.byte() % 3;
    if (length > 0) {
      mask.reset(new std::int64_t[std::size_t(length)]);
      // Mostly distinct indices within [0, d_x) (while d_y <= d_x), sometimes any of -1..4.
      for (std::int64_t i = 0; i < length; ++i) {
        const std::uint8_t b = in.byte();
        mask[i] = b < 224 ? (i % d_y + b) % d_x : std::int64_t(b % 6) - 1;
      }
    }
    gp.mask = mask.get();
    if (in.byte() & 1) {
      gains = in.doubles(ok ? gp.mask_count : 0);
      gp.mask_gains = gains.get();
    }
  }
  if ((op & 3) == 2) {
    gp.svd_count = in.count((in.byte() & 1) ? 1 : B);
    gp.svd_rank = in.steps(3);
    const bool ok = (gp.svd_count == 1 || gp.svd_count == B) && gp.svd_rank >= 1 &&
                    gp.svd_rank <= std::min(d_y, d_x);
    const std::int64_t c = ok ? gp.svd_count : 0, r = gp.svd_rank;
    U = columns(in, c, d_y, r);
    S = in.doubles(c * r, true);
    V = columns(in, c, d_x, r);
    gp.svd_U = U.get();
    gp.svd_S = S.get();
    gp.svd_V = V.get();
  }
  if (op & 8) gp.struct_size = struct_size(in, sizeof gp, offsetof(ds_guided_problems, svd_count));

  ds_guided_options o;
  check(ds_guided_options_init(&o, sizeof o));
  set_raw_enum(in, &o.sampler);
  const std::int64_t steps = in.steps(4);
  o.steps = steps;
  o.particles = in.steps(8);
  const std::uint8_t set = in.byte();
  if (set & 1) set_raw_enum(in, &o.potentials);
  if (set & 2) set_raw_enum(in, &o.grid);
  if (set & 4) {
    o.start_correction = in.byte() % 3;
    o.multistep_kernel = in.byte() % 3;
    o.final_moves = std::int64_t(in.byte() % 5) - 2;
    o.final_move_step = in.number();
  }
  if (set & 8) {
    o.eta = in.number();
    o.ddim = in.byte() & 1;
    o.guidance_scale = in.number();
    o.potential_spread = in.number();
    set_raw_enum(in, &o.resampling.scheme);
    o.resampling.ess_threshold = in.number();
  }
  if (set & 16) {
    o.skrock_stages = in.byte() % 5;
    o.dcps_blocks = in.byte() % 4;
    o.dcps_langevin_steps = in.byte() % 4;
    o.dcps_gradient_steps = in.byte() % 3;
    o.diffpir_lambda = in.number();
    o.ddrm_eta = in.number();
  }
  set_raw_enum(in, &o.operator_path);
  std::unique_ptr<double[]> times, alpha_bar;
  if (set & 32) fuzz_schedule(in, &o.schedule, steps, times, alpha_bar);
  if (set & 64) o.struct_size = struct_size(in, sizeof o, offsetof(ds_guided_options, multistep_kernel));
  o.seed = in.u32();
  // Read after the others, so that a kept input without this bit parses as before.
  if (set & 128) o.final_move_curvature = in.number();
  // Fewer steps than DCPS's default blocks would only be refused: keep them within the steps most of the time.
  int sampler = 0;
  std::memcpy(&sampler, &o.sampler, sizeof sampler);  // any 32-bit value: never loaded through the enum type here
  if (sampler == DS_GUIDED_DCPS && !(set & 16)) o.dcps_blocks = 1;

  size_t bytes = 0;
  const ds_status sized = ds_guided_workspace_bytes(prior, &gp, &o, &bytes);
  check(sized);
  std::vector<double> grid_times(std::size_t(steps > 0 ? steps + 1 : 1));
  check(ds_guided_times(prior, &gp, &o, grid_times.data(), steps + (in.byte() >= 224 ? 2 : 1)));

  // Outputs sized from what the harness passes (B, particles, d_x, steps), each present or not.
  const std::int64_t N = std::max<std::int64_t>(o.particles, 0), K = std::max<std::int64_t>(steps, 0);
  std::vector<float> particles(std::size_t(B * N * d_x)), samples(particles.size()), log_weights(std::size_t(B * N));
  std::vector<float> ess(std::size_t(B * (K + 1)));
  std::vector<double> log_z(static_cast<std::size_t>(B));
  std::vector<std::int32_t> resampled(static_cast<std::size_t>(B));
  ds_guided_outputs out;
  check(ds_guided_outputs_init(&out, sizeof out));
  const std::uint8_t which = in.byte();
  if (which & 1) out.particles = particles.data();
  if (which & 2) out.samples = samples.data();
  if (which & 4) out.log_weights = log_weights.data();
  if (which & 8) out.ess_trace = ess.data();
  if (which & 16) out.log_normaliser = log_z.data();
  if (which & 32) out.resample_count = resampled.data();
  if (which & 64) out.struct_size = struct_size(in, sizeof out, sizeof out);
  // The workspace: none, the size asked for, or one byte short (refused).
  std::vector<unsigned char> workspace;
  const std::uint8_t ws = sized == DS_SUCCESS && bytes <= (std::size_t(1) << 26) ? in.byte() % 3 : 0;
  if (ws != 0) workspace.resize(bytes + 1);
  const std::size_t given = ws == 1 ? bytes : (bytes > 0 ? bytes - 1 : 0);
  ds_guided_report2 report;
  check(ds_guided_report2_init(&report, sizeof report));
  if (in.byte() >= 240) report.struct_size = struct_size(in, sizeof report, sizeof report);
  const ds_status ran = ds_guided_sample2(prior, &gp, &o, &out, cpu, ws ? workspace.data() : nullptr,
                                         ws ? given : 0, &report);
  check(ran);
  if (ran == DS_SUCCESS && (report.ran != DS_EXECUTOR_CPU || report.final_moves < 0)) std::abort();
}

/// A grid mixture (K = grid^2 isotropic components) from the stream: its weights' count right or wrong, any
/// spacing and variance; a created one must evaluate, and serves as the prior of a guided problem.
void fuzz_grid_mixture(stream& in, ds_execution cpu) {
  // dim and grid mostly 1..4, sometimes 0 or -1.
  const std::uint8_t shape = in.byte();
  const std::int64_t dim = 1 + shape % 4 - (shape >= 224 ? 2 : 0);
  const int grid = 1 + (shape / 4) % 4 - (shape >= 240 ? 2 : 0);
  const double spacing = in.number();
  const double variance = in.positive();
  const std::int64_t K = std::int64_t(grid) * grid;
  counted w = counted_array(in, K, {K, 0}, true);
  if (w.count == 0) w.values = nullptr;
  if (in.byte() >= 240) w.values.reset();  // a null array for a nonzero count
  ds_mixture* m = nullptr;
  check(ds_grid_mixture_create(dim, grid, spacing, variance, w.values.get(), w.count, &m));
  if (m == nullptr) return;
  std::int64_t components = 0, d = 0;
  check(ds_mixture_shape(m, &components, &d));
  if (components != K || d != dim) std::abort();
  const std::int64_t n = 1 + in.byte() % 4;
  std::vector<float> x(std::size_t(n * d)), out(std::size_t(n * d));
  for (auto& v : x) v = float(in.number());
  check(ds_mixture_evaluate(m, DS_SCORE, x.data(), n, ds_channel{1, 0}, out.data(), cpu, nullptr));
  fuzz_guided(in, m, d, cpu);
  ds_mixture_destroy(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  stream in(data, size);
  const ds_execution cpu = {DS_EXECUTOR_CPU, nullptr};
  const std::int64_t d = 1 + in.byte() % 4, K = 1 + in.byte() % 4;
  const std::int64_t w_count = in.count(K), mu_count = in.count(K * d);
  const std::int64_t var_right = (in.byte() & 1) ? K : K * d;
  const std::int64_t var_count = in.count(var_right);
  const std::int64_t var_length = in.count(var_right);  // the array's true length may differ from the count given
  const auto w = in.doubles(w_count);
  const auto mu = in.doubles(mu_count);
  const auto var = in.doubles(var_length);
  ds_mixture* m = nullptr;
  // The counts passed are K and K x d; the arrays hold w_count and mu_count values: only call when they suffice
  // (a caller's short weights or means array is the caller's bug the API cannot see), but the variances count is
  // passed as the caller gives it, whatever the array's length: the library must check it before reading.
  if (w_count >= K && mu_count >= K * d && (var_length >= var_count || (var_count != K && var_count != K * d))) {
    check(ds_mixture_create(d, K, w.get(), mu.get(), var.get(), var_count, &m));
  }
  if (m == nullptr) {
    fuzz_grid_mixture(in, cpu);
    return 0;
  }

  const std::int64_t n = 1 + in.byte() % 8;
  std::vector<float> x(std::size_t(n * d)), out(std::size_t(n * d));
  for (auto& v : x) v = float(in.number());
  const ds_channel ch = {in.number(), in.number()};
  {
    const std::uint8_t kind = in.byte();
    check(evaluate_raw(m, kind < 200 ? int(kind % 4) : int(in.u32()), x.data(), n, ch, out.data(), cpu));
  }
  check(ds_mixture_sample(m, out.data(), n, ch, in.u32(), nullptr, 0, cpu, nullptr));

  ds_langevin_options lo;
  check(ds_langevin_options_init(&lo, sizeof lo));
  set_raw_enum(in, &lo.method);
  lo.step_size = in.number();
  lo.steps = in.byte() % 16;
  lo.record_every = std::int64_t(in.byte() % 4) - 1;
  lo.seed = in.u32();
  const bool with_trajectory = in.byte() & 1;
  std::vector<float> trajectory(std::size_t(16 * n * d));
  check(ds_langevin(m, x.data(), n, &lo, with_trajectory ? trajectory.data() : nullptr, nullptr, cpu, nullptr, 0,
                    nullptr));

  ds_diffusion_options dop;
  check(ds_diffusion_options_init(&dop, sizeof dop));
  set_raw_enum(in, &dop.sampler);
  set_raw_enum(in, &dop.schedule.kind);
  set_raw_enum(in, &dop.schedule.grid);
  dop.steps = in.byte() % 8;
  dop.measurements = 1 + in.byte() % 3;
  dop.eta = in.number();
  dop.sigma = in.number();
  dop.step_size = in.number();
  dop.record_every = std::int64_t(in.byte() % 4) - 1;
  dop.seed = in.u32();
  std::vector<float> dtraj(std::size_t(64 * n * d));
  check(ds_diffusion(m, x.data(), n, &dop, (in.byte() & 1) ? dtraj.data() : nullptr, cpu, nullptr, 0, nullptr));

  // The exact posterior under a dense observation with d_y rows.
  const std::int64_t d_y = 1 + in.byte() % 3;
  const auto A = in.doubles(d_y * d);
  const auto y = in.doubles(d_y);
  ds_posterior* post = nullptr;
  check(ds_posterior_create(m, d_y, A.get(), in.number(), y.get(), &post));
  if (post != nullptr) {
    double log_evidence = 0;
    check(ds_posterior_log_evidence(post, &log_evidence));
    if (!std::isfinite(log_evidence)) std::abort();  // a created posterior has a finite evidence
    check(ds_posterior_sample(post, out.data(), n, in.u32(), nullptr, 0));
    ds_posterior_destroy(post);
  }
  fuzz_schedules(in, m, x.data(), n, cpu);
  fuzz_guided(in, m, d, cpu);
  ds_mixture_destroy(m);
  fuzz_grid_mixture(in, cpu);
  return 0;
}
