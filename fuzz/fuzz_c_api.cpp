// libFuzzer harness of the C API's create and sample entry points (scripts/fuzz.sh builds and runs it, with
// src/c_api/*.cpp compiled into the harness under AddressSanitizer and UBSan, over libdiffsample.so). The input is read
// as a stream of choices: sizes, counts (right or wrong), raw enum values, and the doubles of every array, which the
// harness allocates with exactly the length it passes (so that a read past a caller's array is caught by ASan's
// memcpy interceptor). Every call must return a known status, with a message on failure and none on success; a
// created mixture must also be usable by the samplers. CPU executor only (the harness never needs a GPU).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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
  /// A count near @p right: right, a small wrong value, or 0.
  std::int64_t count(std::int64_t right) {
    const std::uint8_t kind = byte();
    if (kind < 192) return right;
    if (kind < 224) return std::int64_t(kind - 192);
    return right + 1;
  }
  /// @p n doubles in an array of exactly @p n elements (nullptr when n == 0).
  std::unique_ptr<double[]> doubles(std::int64_t n) {
    if (n <= 0) return nullptr;
    std::unique_ptr<double[]> a(new double[std::size_t(n)]);
    for (std::int64_t i = 0; i < n; ++i) a[i] = number();
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
  if (m == nullptr) return 0;

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
  ds_mixture_destroy(m);
  return 0;
}
