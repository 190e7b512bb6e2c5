// Ask/tell sampling plans (include/diffsample/plan.hpp): the plan's buffers, allocated once, and its three calls.
// The ask sequence comes from the sampler family's own table (src/plan_program.hpp); a tell is one launch of
// kernels/plan.cuh's plan_tell_functor (or its SIMD runner on the CPU executor), whose entry is a kernel argument
// fixed by the ask's position, so that a captured trajectory replays the right operations.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <utility>

#include "kernels/plan.cuh"
#include "src/cpu/chains.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/plan_program.hpp"
#include "src/plan_storage.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/plan.hpp>

namespace diffsample {
namespace detail {

void denoiser_form(model_output output, double a, double s, const schedule_point* p, std::int64_t k, double& ux,
                   double& um) {
  ux = 0;
  um = 1;
  if (output == model_output::score || output == model_output::eps) {
    DIFFSAMPLE_EXPECTS(a > 0, "output: a " << to_string(output) << " model needs a > 0 to give x0, but a = 0 at step "
                                           << k);
    ux = 1 / a;
    um = output == model_output::score ? s * s / a : -s / a;
  } else if (output == model_output::velocity) {
    DIFFSAMPLE_EXPECTS(p != nullptr, "output: velocity needs a schedule-based sampler (step " << k << ")");
    if (p->s == 0 && p->a > 0) {
      // At s = 0 the point is a x0 itself: x0 = x / a whatever the model says (the grid's clean end, where the
      // velocity's s' / s is not defined; refused before, so a velocity plan on any grid ending at t = 0 was).
      ux = 1 / p->a;
      um = 0;
      return;
    }
    const double fx = p->s > 0 ? p->ds_dt / p->s : 0.0, fm = p->s > 0 ? p->da_dt - p->ds_dt * p->a / p->s : 0.0;
    DIFFSAMPLE_EXPECTS(p->s > 0 && fm != 0 && std::isfinite(fm),
                       "output: a velocity model does not determine x0 at t = " << p->t << " (step " << k << ")");
    ux = -fx / fm;
    um = 1 / fm;
  }
}

// The chain samplers' plan: the ask sequence of src/plan_program.hpp over the buffers of kernels::plan_buffers.
struct chain_plan_storage final : sampling_plan_storage {
  plan_program program;
  std::vector<float> host;  // CPU executor: the buffers
  void* device = nullptr;   // CUDA executor: the buffers, then the state
  kernels::plan_state host_state{};
  kernels::plan_state* state = nullptr;
  kernels::plan_buffers buffers{};
  float* answer = nullptr;
  float* log_density = nullptr;  // MALA: the answer's log-density (rows floats)
  ~chain_plan_storage() override {
    if (device != nullptr) (void)cudaFree(device);
  }
  plan_request request(std::int64_t k) const override;
  void tell(std::int64_t k, cudaStream_t stream) override;
  void check_reset(const float* initial) const override;
  void reset(const float* initial, cudaStream_t stream) override;
  float* samples() const override { return buffers.x; }
  const std::int64_t* counter() const override { return &state->step; }
  const std::int64_t* accepted() const override { return buffers.accepted; }
};

namespace {

// A plan's host buffers, zeroed; out_of_memory naming the plan when the host cannot give them (std::bad_alloc, which
// is no diffsample::error, before).
template <class T>
void host_assign(std::vector<T>& host, std::size_t count, const char* what) {
  try {
    host.assign(count, T{});
  } catch (const std::bad_alloc&) {
    std::ostringstream msg;
    msg << what << ": could not allocate " << count * sizeof(T) << " bytes of host memory";
    throw out_of_memory(msg.str());
  }
}

// reset(initial): x <- initial (bytes). initial == x (reset(samples()): continue from the state) copies nothing;
// any other overlap with x is refused (cudaMemcpyAsync does not define overlapping copies).
// check_initial() refuses the overlap before reset() launches anything.
void check_initial(const float* x, const float* initial, std::size_t bytes) {
  if (initial == x) return;
  DIFFSAMPLE_EXPECTS(!share_memory({"initial", initial, bytes}, {"samples()", x, bytes}),
                     "initial: overlaps samples() without being it (" << static_cast<const void*>(initial)
                                                                       << " and " << static_cast<const void*>(x)
                                                                       << "); pass samples() itself or a buffer "
                                                                          "of your own");
}

void copy_initial(float* x, const float* initial, std::size_t bytes, executor where, cudaStream_t stream) {
  if (bytes == 0 || initial == x) return;
  if (where == executor::cuda)
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(x, initial, bytes, cudaMemcpyDefault, stream));
  else
    std::memcpy(x, initial, bytes);
}

}  // namespace

namespace {

std::unique_ptr<sampling_plan_storage> make_storage(plan_program program, std::int64_t n, std::int64_t d,
                                                    execution exec, const char* call) {
  auto st = std::make_unique<chain_plan_storage>();
  st->where = plan_executor(exec);
  if (st->where == executor::cuda) refuse_plan_capture(exec.stream, call);  // before anything is issued
  st->rows = n;
  st->d = d;
  st->program = std::move(program);
  st->asks = static_cast<std::int64_t>(st->program.entries.size());
  const plan_program& pr = st->program;
  // Buffers of n d floats each, every one 256-byte aligned: x, answer, and P, M, S where the sampler uses them;
  // MALA's per-row buffers after them (four of n floats and the n accepted counts, each 256-byte aligned).
  const std::int64_t count = 2 + (pr.uses_point ? 1 : 0) + (pr.uses_m ? 1 : 0) + (pr.uses_sum ? 1 : 0);
  const std::size_t row_floats = static_cast<std::size_t>((n * d + 63) / 64 * 64);
  const std::size_t column_floats = static_cast<std::size_t>((n + 63) / 64 * 64);
  const std::size_t floats = row_floats * static_cast<std::size_t>(count) + (pr.mala ? 6 * column_floats : 0);
  // Saturated: an n x d within detail::check_count (8 bytes per element) takes up to 5 x 4 bytes per element here,
  // and the product wrapped around to a size that passed check_allocation (then std::vector threw length_error).
  const std::size_t most = std::numeric_limits<std::size_t>::max() - sizeof(kernels::plan_state);
  const std::size_t float_bytes = floats > most / sizeof(float) ? most : floats * sizeof(float);
  const kernels::plan_state initial{0, pr.first_chain, 0};
  float* base = nullptr;
  if (st->where == executor::cuda) {
    const std::size_t bytes = float_bytes + sizeof(kernels::plan_state);
    check_allocation("sampling_plan", bytes, st->where);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&st->device, bytes));
    base = static_cast<float*>(st->device);
    st->state = reinterpret_cast<kernels::plan_state*>(base + floats);
    DIFFSAMPLE_CUDA_TRY(cudaMemsetAsync(st->device, 0, floats * sizeof(float), exec.stream));
    DIFFSAMPLE_CUDA_TRY(
        cudaMemcpyAsync(st->state, &initial, sizeof initial, cudaMemcpyHostToDevice, exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(exec.stream));
  } else {
    check_allocation("sampling_plan", float_bytes, st->where);
    host_assign(st->host, floats, "sampling_plan");
    base = st->host.data();
    st->host_state = initial;
    st->state = &st->host_state;
  }
  std::size_t next = 0;
  auto take = [&](bool used) -> float* {
    if (!used) return nullptr;
    float* p = base + next;
    next += row_floats;
    return p;
  };
  st->buffers.x = take(true);
  st->answer = take(true);
  st->buffers.answer = st->answer;
  st->buffers.point = take(pr.uses_point);
  st->buffers.m = take(pr.uses_m);
  st->buffers.sum = take(pr.uses_sum);
  if (pr.mala) {
    float* column = base + next;
    st->log_density = column;
    st->buffers.log_density = column;
    st->buffers.log_p = column + column_floats;
    st->buffers.forward = column + 2 * column_floats;
    st->buffers.uniform = column + 3 * column_floats;
    st->buffers.accepted = reinterpret_cast<std::int64_t*>(column + 4 * column_floats);
  }
  st->buffers.d = static_cast<int>(d);
  st->buffers.blocks_per_row = kernels::philox_blocks(static_cast<int>(d));
  return st;
}

}  // namespace
}  // namespace detail

sampling_plan::sampling_plan(std::unique_ptr<detail::sampling_plan_storage> storage) : storage_(std::move(storage)) {}
sampling_plan::~sampling_plan() = default;
sampling_plan::sampling_plan(sampling_plan&&) noexcept = default;
sampling_plan& sampling_plan::operator=(sampling_plan&&) noexcept = default;

sampling_plan sampling_plan::diffusion(std::int64_t n, std::int64_t dim, const diffusion_options& options,
                                       model_output output, execution exec) {
  return sampling_plan(
      detail::make_storage(detail::diffusion_program(n, dim, options, output), n, dim, exec, "sampling_plan::diffusion()"));
}

sampling_plan sampling_plan::langevin(std::int64_t n, std::int64_t dim, const langevin_options& options,
                                      model_output output, execution exec) {
  return sampling_plan(
      detail::make_storage(detail::langevin_program(n, dim, options, output), n, dim, exec, "sampling_plan::langevin()"));
}

sampling_plan sampling_plan::guided(std::int64_t dim, const guided_problems& problems, const guided_options& options,
                                    model_output output, execution exec) {
  return sampling_plan(detail::make_guided_plan(dim, problems, options, output, exec));
}

// A moved-from plan holds no storage: its noexcept getters give an empty plan (0 rows, 0 asks, done, null
// pointers) and every other call throws, naming the call (a null dereference before).
std::int64_t sampling_plan::rows() const noexcept { return storage_ ? storage_->rows : 0; }
std::int64_t sampling_plan::dim() const noexcept { return storage_ ? storage_->d : 0; }
executor sampling_plan::where() const noexcept { return storage_ ? storage_->where : executor::cpu; }
std::int64_t sampling_plan::asks() const noexcept { return storage_ ? storage_->asks : 0; }
std::int64_t sampling_plan::position() const noexcept { return storage_ ? storage_->position : 0; }
bool sampling_plan::done() const noexcept { return position() == asks(); }
float* sampling_plan::samples() const noexcept { return storage_ ? storage_->samples() : nullptr; }
const std::int64_t* sampling_plan::position_counter() const noexcept {
  return storage_ ? storage_->counter() : nullptr;
}
const std::int64_t* sampling_plan::accepted() const noexcept { return storage_ ? storage_->accepted() : nullptr; }

namespace {
detail::sampling_plan_storage& live(const std::unique_ptr<detail::sampling_plan_storage>& storage, const char* call) {
  DIFFSAMPLE_EXPECTS(storage != nullptr, call << ": this sampling_plan was moved from and holds no plan; assign a plan "
                                                 "to it (or make a new one) before using it");
  return *storage;
}

// live(), and not after a tell() that threw part-way through its update: the state may hold part of that update
// (guided SMC: weighted, not resampled), so only reset() is accepted. The same after a reset() that threw once it
// had begun its work (the random key advanced, the state half drawn or copied).
detail::sampling_plan_storage& usable(const std::unique_ptr<detail::sampling_plan_storage>& storage,
                                      const char* call) {
  detail::sampling_plan_storage& st = live(storage, call);
  DIFFSAMPLE_EXPECTS(!st.reset_failed, call << ": the last reset() failed part-way (the state and the random key "
                                               "may hold part of it); call reset() again to start a trajectory");
  DIFFSAMPLE_EXPECTS(st.failed < 0, call << ": the last tell() failed (ask " << st.failed
                                         << "'s update threw part-way, so the state may hold part of it); call "
                                            "reset() to start another trajectory");
  return st;
}
}  // namespace

plan_request sampling_plan::request(std::int64_t k) const {
  detail::sampling_plan_storage& st = usable(storage_, "request");
  DIFFSAMPLE_EXPECTS(k >= 0 && k < st.asks, "k: must be in [0, " << st.asks << "), got " << k);
  return st.request(k);
}

plan_request sampling_plan::ask() const {
  detail::sampling_plan_storage& st = usable(storage_, "ask");
  DIFFSAMPLE_EXPECTS(st.started, "ask: no trajectory started: call reset() first (it starts the trajectory, its "
                                 "random key and its initial state)");
  DIFFSAMPLE_EXPECTS(!done(), "ask: the trajectory is done (" << asks() << " asks); call reset() to start another");
  plan_request r = st.request(st.position);
  st.asked = st.position;
  return r;
}

void sampling_plan::tell(execution exec) {
  detail::sampling_plan_storage& st = usable(storage_, "tell");
  DIFFSAMPLE_EXPECTS(st.started, "tell: no trajectory started: call reset() first (it starts the trajectory, its "
                                 "random key and its initial state)");
  DIFFSAMPLE_EXPECTS(!done(), "tell: the trajectory is done (" << asks() << " asks); call reset() to start another");
  const std::int64_t k = st.position;
  // Once ask() is used in a trajectory, each tell() must follow the ask() of its position: a second tell() after
  // one ask() would apply ask k + 1 with ask k's answer.
  DIFFSAMPLE_EXPECTS(st.asked < 0 || st.asked == k,
                     "tell: ask " << k << " was not asked: ask " << st.asked << " was already told (a second tell() "
                                  "for one ask() would apply ask " << k << " with ask " << st.asked
                                  << "'s answer); call ask() before each tell()");
  const cudaStream_t stream = detail::plan_stream(st.where, exec);
  // The position advances once the update has been issued; an update that throws (a failed launch) may have
  // changed part of the state, so the plan then refuses everything but reset().
  try {
    st.tell(k, stream);
  } catch (...) {
    st.failed = k;
    throw;
  }
  st.position = k + 1;
}

void sampling_plan::write_outputs(const guided_outputs& outputs, execution exec) {
  detail::sampling_plan_storage& st = usable(storage_, "write_outputs");
  DIFFSAMPLE_EXPECTS(st.has_outputs(), "write_outputs: only a guided SMC plan has outputs beyond samples()");
  DIFFSAMPLE_EXPECTS(st.started && done(), "write_outputs: the trajectory is not done ("
                                               << (st.started ? position() : 0) << " of " << asks()
                                               << " asks told" << (st.started ? "" : "; no reset() yet") << ")");
  st.write_outputs(outputs, detail::plan_stream(st.where, exec));
}

guided_report sampling_plan::report() const {
  const detail::sampling_plan_storage& st = live(storage_, "report");
  DIFFSAMPLE_EXPECTS(st.report.has_value(), "report: only a guided plan (sampling_plan::guided) has a guided_report; "
                                            "this plan is a diffusion or Langevin plan");
  return *st.report;
}

void sampling_plan::reset(const float* initial, execution exec) {
  detail::sampling_plan_storage& st = live(storage_, "reset");
  // Arguments first: a refused reset() changes nothing, and the plan goes on as it was.
  const cudaStream_t stream = detail::plan_stream(st.where, exec);
  st.check_reset(initial);
  // The work: what throws from here (a failed launch, copy or allocation) may have changed part of the state or
  // advanced the random key, so the plan then refuses every call but reset(), as after a failed tell().
  st.reset_failed = true;
  st.reset(initial, stream);
  st.reset_failed = false;
  st.position = 0;
  st.asked = -1;
  st.failed = -1;
  st.started = true;
}

namespace detail {

workspace_plan_storage::~workspace_plan_storage() {
  if (device != nullptr) (void)cudaFree(device);
}

unsigned char* workspace_plan_storage::allocate(const std::vector<unsigned char>& tables, std::size_t workspace_bytes,
                                                cudaStream_t stream) {
  const std::size_t at_state = (workspace_bytes + 255) / 256 * 256;
  const std::size_t total = at_state + sizeof(kernels::plan_state);
  check_allocation("guided plan", total, where);
  const kernels::plan_state initial{0, 0, 0};
  unsigned char* base = nullptr;
  if (where == executor::cuda) {
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&device, total));
    base = static_cast<unsigned char*>(device);
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(base, tables.data(), tables.size(), cudaMemcpyHostToDevice, stream));
    DIFFSAMPLE_CUDA_TRY(cudaMemsetAsync(base + tables.size(), 0, at_state - tables.size(), stream));
    DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(base + at_state, &initial, sizeof initial, cudaMemcpyHostToDevice, stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(stream));
  } else {
    host_assign(host, total, "guided plan");
    base = host.data();
    std::memcpy(base, tables.data(), tables.size());
    std::memcpy(base + at_state, &initial, sizeof initial);
  }
  state = reinterpret_cast<kernels::plan_state*>(base + at_state);
  memory = base;
  memory_bytes = total;
  return base;
}

void workspace_plan_storage::refuse_overlaps(std::initializer_list<buffer_span> outputs) const {
  for (const buffer_span& o : outputs)
    DIFFSAMPLE_EXPECTS(!share_memory(o, {"the plan's memory", memory, memory_bytes}),
                       o.name << ": overlaps the plan's own memory (" << o.ptr << ", the plan's "
                              << static_cast<const void*>(memory) << " .. +" << memory_bytes
                              << " bytes: samples(), the asks' buffers and the state the outputs are computed "
                                 "from); pass a buffer of your own");
  check_disjoint(outputs);  // each output needs its own buffer
}

void workspace_plan_storage::check_reset(const float* initial) const {
  check_initial(x, initial, static_cast<std::size_t>(rows * d) * sizeof(float));
}

bool workspace_plan_storage::start(const float* initial, cudaStream_t stream) {
  kernels::for_each_index<32>(where, 1, kernels::plan_reset_functor{state, 0, std::uint64_t(rows)}, stream);
  if (initial == nullptr) return false;
  copy_initial(x, initial, static_cast<std::size_t>(rows * d) * sizeof(float), where, stream);
  return true;
}

const std::int64_t* workspace_plan_storage::counter() const { return &state->step; }

plan_request chain_plan_storage::request(std::int64_t k) const {
  const kernels::plan_entry& e = program.entries[static_cast<std::size_t>(k)];
  const std::size_t i = static_cast<std::size_t>(k);
  plan_request r =
      ask(k, e.at_point ? buffers.point : buffers.x, program.channels[i], program.times[i], program.output, answer);
  r.log_density = log_density;
  return r;
}

void chain_plan_storage::tell(std::int64_t k, cudaStream_t stream) {
  const kernels::plan_entry& e = program.entries[static_cast<std::size_t>(k)];
  const kernels::plan_tell_functor f{e, buffers, state, program.seed, k + 1};
  if (rows == 0) return;
  const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    cpu::run_plan_tell(target, f, rows);
  } else {
    const bool per_row = e.op == kernels::plan_op_tamed || e.op == kernels::plan_op_mala_start ||
                         e.op == kernels::plan_op_mala_accept;
    const std::int64_t threads = per_row ? rows : rows * buffers.blocks_per_row;
    kernels::for_each_index(where, threads, f, stream);
  }
}

void chain_plan_storage::check_reset(const float* initial) const {
  DIFFSAMPLE_EXPECTS(initial != nullptr || program.draw_initial || rows == 0,
                     "initial: null pointer, and this plan has no initial draw of its own (a Langevin plan, or "
                     "options.draw_initial = false)");
  check_initial(buffers.x, initial, static_cast<std::size_t>(rows * d) * sizeof(float));
}

void chain_plan_storage::reset(const float* initial, cudaStream_t stream) {
  const plan_program& pr = program;
  kernels::for_each_index<32>(where, 1, kernels::plan_reset_functor{state, pr.first_chain, std::uint64_t(rows)},
                              stream);
  if (rows == 0) return;
  float* x = buffers.x;
  const std::size_t bytes = static_cast<std::size_t>(rows * d) * sizeof(float);
  if (initial != nullptr) {
    copy_initial(x, initial, bytes, where, stream);
  } else {
    const std::int64_t blocks = buffers.blocks_per_row;
    const kernels::plan_initial_functor draw{x, state, int(d), blocks, pr.initial_scale, pr.seed};
    const cpu::simd_target target = where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)
      cpu::run_plan_initial(target, draw, rows);  // as the fused samplers draw it on this target
    else
      kernels::for_each_index(where, rows * blocks, draw, stream);
  }
  const bool first_point = !pr.entries.empty() && pr.entries.front().at_point != 0;
  if (pr.uses_sum || first_point)
    kernels::for_each_index(where, rows * d,
                            kernels::plan_start_functor{buffers, pr.first, pr.uses_sum, first_point}, stream);
}

}  // namespace detail

}  // namespace diffsample
