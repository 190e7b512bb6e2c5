// Ask/tell sampling plans (include/diffsample/plan.hpp): the plan's buffers, allocated once, and its three calls.
// The ask sequence comes from the sampler family's own table (src/plan_program.hpp); a tell is one launch of
// kernels/plan.cuh's plan_tell_functor (or its SIMD runner on the CPU executor), whose entry is a kernel argument
// fixed by the ask's position, so that a captured trajectory replays the right operations.
#include <cstring>
#include <memory>
#include <utility>

#include "kernels/plan.cuh"
#include "src/cpu/chains.hpp"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/plan_program.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/plan.hpp>

namespace diffsample {
namespace detail {

struct sampling_plan_storage {
  plan_program program;
  executor where = executor::cpu;
  std::int64_t n = 0, d = 0, position = 0;
  std::vector<float> host;  // CPU executor: the buffers
  void* device = nullptr;   // CUDA executor: the buffers, then the state
  kernels::plan_state host_state{};
  kernels::plan_state* state = nullptr;
  kernels::plan_buffers buffers{};
  float* answer = nullptr;
  ~sampling_plan_storage() {
    if (device != nullptr) (void)cudaFree(device);
  }
};

namespace {

std::unique_ptr<sampling_plan_storage> make_storage(plan_program program, std::int64_t n, std::int64_t d,
                                                    execution exec) {
  auto st = std::make_unique<sampling_plan_storage>();
  st->where = exec.kind == executor::automatic ? (cuda_available() ? executor::cuda : executor::cpu)
                                               : resolve_executor(exec.kind, nullptr);
  st->n = n;
  st->d = d;
  st->program = std::move(program);
  const plan_program& pr = st->program;
  // Buffers of n d floats each, every one 256-byte aligned: x, answer, and P, M, S where the sampler uses them.
  const std::int64_t count = 2 + (pr.uses_point ? 1 : 0) + (pr.uses_m ? 1 : 0) + (pr.uses_sum ? 1 : 0);
  const std::size_t row_floats = static_cast<std::size_t>((n * d + 63) / 64 * 64);
  const std::size_t floats = row_floats * static_cast<std::size_t>(count);
  const kernels::plan_state initial{0, pr.first_chain, 0};
  float* base = nullptr;
  if (st->where == executor::cuda) {
    const std::size_t bytes = floats * sizeof(float) + sizeof(kernels::plan_state);
    check_allocation("sampling_plan", bytes, st->where);
    DIFFSAMPLE_CUDA_TRY(cudaMalloc(&st->device, bytes));
    base = static_cast<float*>(st->device);
    st->state = reinterpret_cast<kernels::plan_state*>(base + floats);
    DIFFSAMPLE_CUDA_TRY(cudaMemsetAsync(st->device, 0, floats * sizeof(float), exec.stream));
    DIFFSAMPLE_CUDA_TRY(
        cudaMemcpyAsync(st->state, &initial, sizeof initial, cudaMemcpyHostToDevice, exec.stream));
    DIFFSAMPLE_CUDA_TRY(cudaStreamSynchronize(exec.stream));
  } else {
    check_allocation("sampling_plan", floats * sizeof(float), st->where);
    st->host.assign(floats, 0.f);
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

sampling_plan sampling_plan::diffusion(std::int64_t n, std::int64_t d, const diffusion_options& options,
                                       model_output output, execution exec) {
  return sampling_plan(detail::make_storage(detail::diffusion_program(n, d, options, output), n, d, exec));
}

sampling_plan sampling_plan::langevin(std::int64_t n, std::int64_t d, const langevin_options& options,
                                      model_output output, execution exec) {
  return sampling_plan(detail::make_storage(detail::langevin_program(n, d, options, output), n, d, exec));
}

std::int64_t sampling_plan::rows() const noexcept { return storage_->n; }
std::int64_t sampling_plan::dim() const noexcept { return storage_->d; }
executor sampling_plan::where() const noexcept { return storage_->where; }
std::int64_t sampling_plan::asks() const noexcept {
  return static_cast<std::int64_t>(storage_->program.entries.size());
}
std::int64_t sampling_plan::position() const noexcept { return storage_->position; }
bool sampling_plan::done() const noexcept { return position() == asks(); }
float* sampling_plan::samples() const noexcept { return storage_->buffers.x; }
const std::int64_t* sampling_plan::position_counter() const noexcept { return &storage_->state->step; }

plan_request sampling_plan::request(std::int64_t k) const {
  const auto& st = *storage_;
  DIFFSAMPLE_EXPECTS(k >= 0 && k < asks(), "k: must be in [0, " << asks() << "), got " << k);
  const kernels::plan_entry& e = st.program.entries[static_cast<std::size_t>(k)];
  plan_request r;
  r.index = k;
  r.points = e.at_point ? st.buffers.point : st.buffers.x;
  r.rows = st.n;
  r.d = st.d;
  r.at = st.program.channels[static_cast<std::size_t>(k)];
  r.time = st.program.times[static_cast<std::size_t>(k)];
  r.output = st.program.output;
  r.answer = st.answer;
  return r;
}

plan_request sampling_plan::ask() const {
  DIFFSAMPLE_EXPECTS(!done(), "ask: the trajectory is done (" << asks() << " asks); call reset() to start another");
  return request(position());
}

void sampling_plan::tell(cudaStream_t stream) {
  auto& st = *storage_;
  DIFFSAMPLE_EXPECTS(!done(), "tell: the trajectory is done (" << asks() << " asks); call reset() to start another");
  const kernels::plan_entry& e = st.program.entries[static_cast<std::size_t>(st.position)];
  const kernels::plan_tell_functor f{e, st.buffers, st.state, st.program.seed, st.position + 1};
  st.position += 1;
  if (st.n == 0) return;
  const cpu::simd_target target = st.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
  if (target != cpu::simd_target::scalar) {
    cpu::run_plan_tell(target, f, st.n);
  } else {
    const std::int64_t threads = e.op == kernels::plan_op_tamed ? st.n : st.n * st.buffers.blocks_per_row;
    kernels::for_each_index(st.where, threads, f, stream);
  }
}

void sampling_plan::reset(const float* initial, cudaStream_t stream) {
  auto& st = *storage_;
  const detail::plan_program& pr = st.program;
  DIFFSAMPLE_EXPECTS(initial != nullptr || pr.draw_initial || st.n == 0,
                     "initial: null pointer, and this plan has no initial draw of its own (a Langevin plan, or "
                     "options.draw_initial = false)");
  st.position = 0;
  kernels::for_each_index<32>(st.where, 1, kernels::plan_reset_functor{st.state, pr.first_chain, std::uint64_t(st.n)},
                              stream);
  if (st.n == 0) return;
  float* x = st.buffers.x;
  const std::size_t bytes = static_cast<std::size_t>(st.n * st.d) * sizeof(float);
  if (initial != nullptr) {
    if (st.where == executor::cuda)
      DIFFSAMPLE_CUDA_TRY(cudaMemcpyAsync(x, initial, bytes, cudaMemcpyDefault, stream));
    else
      std::memmove(x, initial, bytes);
  } else {
    const std::int64_t blocks = st.buffers.blocks_per_row;
    const kernels::plan_initial_functor draw{x, st.state, int(st.d), blocks, pr.initial_scale, pr.seed};
    const cpu::simd_target target = st.where == executor::cpu ? cpu::chain_target() : cpu::simd_target::scalar;
    if (target != cpu::simd_target::scalar)
      cpu::run_plan_initial(target, draw, st.n);  // as the fused samplers draw it on this target
    else
      kernels::for_each_index(st.where, st.n * blocks, draw, stream);
  }
  if (pr.uses_sum || (pr.uses_point && !pr.entries.empty() && pr.entries.front().at_point))
    kernels::for_each_index(st.where, st.n * st.d,
                            kernels::plan_start_functor{st.buffers, pr.first, pr.uses_sum,
                                                        !pr.entries.empty() && pr.entries.front().at_point != 0},
                            stream);
}

}  // namespace diffsample
