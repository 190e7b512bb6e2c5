// What a sampling_plan (include/diffsample/plan.hpp) holds: one implementation per sampler family (the chain
// samplers in src/plan.cu, the guided samplers in src/guided.cu) behind one interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <vector>

#include <cuda_runtime.h>

#include <diffsample/guided.hpp>
#include <diffsample/plan.hpp>

#include "src/validate.hpp"

namespace diffsample::kernels {
struct plan_state;
}

namespace diffsample::detail {

// ask() fills plan_request in its members' order: a member added or moved there must fail here, not shift the rest.
inline constexpr plan_request plan_request_order{1, nullptr, 2, 3, channel{4.0, 5.0}, 6.0, model_output::eps, nullptr,
                                                 nullptr};
static_assert(plan_request_order.dim == 3 && plan_request_order.time == 6.0 &&
                  plan_request_order.output == model_output::eps && plan_request_order.vector == nullptr,
              "plan_request's members changed: update sampling_plan_storage::ask()");

struct sampling_plan_storage {
  executor where = executor::cpu;
  std::int64_t rows = 0, d = 0, asks = 0, position = 0;
  bool started = false;     // a reset() has started a trajectory (ask() and tell() need one)
  std::int64_t asked = -1;  // position of the last ask() in this trajectory; -1 when none (request()-only loops)
  // The ask whose tell() threw part-way through its update (the state may hold part of it); -1 when none. Every call
  // but reset() is refused until a reset() succeeds.
  std::int64_t failed = -1;
  // A reset() threw after it began changing the state (a failed launch or copy): the state, the random key and the
  // position may each hold part of it. Every call but reset() is refused until a reset() succeeds.
  bool reset_failed = false;
  virtual ~sampling_plan_storage() = default;
  /// The ask at position k (0 <= k < asks, checked by the caller).
  virtual plan_request request(std::int64_t k) const = 0;
  /// Applies the answer of ask k (position == k).
  virtual void tell(std::int64_t k, cudaStream_t stream) = 0;
  /// Refuses reset(@p initial)'s arguments (invalid_argument); changes nothing. sampling_plan::reset() calls it
  /// before reset(), which then only does the work.
  virtual void check_reset(const float* initial) const = 0;
  /// Starts the next trajectory (arguments checked by check_reset()).
  virtual void reset(const float* initial, cudaStream_t stream) = 0;
  virtual float* samples() const = 0;
  /// A done trajectory's outputs beyond samples() (guided SMC plans only). Inline, as every virtual function here:
  /// the class has no key function, so a storage of the library's tests (outside the library, which exports none
  /// of this) gets its vtable and type information.
  virtual void write_outputs(const guided_outputs&, cudaStream_t) {
    DIFFSAMPLE_EXPECTS(false, "write_outputs: only a guided SMC plan has outputs beyond samples()");
  }
  /// Whether write_outputs() applies (guided SMC plans): sampling_plan::write_outputs() refuses another plan first,
  /// before asking whether its trajectory is done.
  virtual bool has_outputs() const { return false; }
  virtual const std::int64_t* counter() const = 0;
  /// The request of ask k: the model's @p output at rows() x d @p points and channel @p at (the schedule's @p time)
  /// into @p answer, or J^T @p vector there when a vector is given.
  plan_request ask(std::int64_t k, const float* points, channel at, double time, model_output output, float* answer,
                   const float* vector = nullptr) const {
    return plan_request{k, points, rows, d, at, time, output, answer, vector, nullptr};
  }
  /// MALA plans: the accepted proposals per row; null for the others.
  virtual const std::int64_t* accepted() const { return nullptr; }
  /// Guided plans: the path of a dense operator's products in the tells (gemm: TMPD's covariances as products on
  /// the CPU executor); direct for the others.
  virtual mixture_path operator_path() const { return mixture_path::direct; }
  /// Guided plans: the settings the plan runs (sampling_plan::report()), set by make_guided_plan(); empty for the
  /// chain plans.
  std::optional<guided_report> report;
};

/// The guided plans' conversion of a model's answer r of kind @p output at the channel (a, s) to the denoiser
/// ux x + um r: appends ux and um (src/guided.cu).
void push_denoiser_form(model_output output, double a, double s, std::vector<float>& ux, std::vector<float>& um);

/// Per step (or per ask) of a guided plan: the channel, the schedule's time, and the denoiser form ux x + um r of
/// the model's answer r there (ux = 0, um = 1 for an ask of J^T v, whose answer is used as it is).
struct plan_steps {
  std::vector<channel> channels;
  std::vector<double> times;
  std::vector<float> ux, um;
  void push(model_output output, channel at, double time, bool jvp = false) {
    channels.push_back(at);
    times.push_back(time);
    if (jvp) {
      ux.push_back(0.f);
      um.push_back(1.f);
    } else {
      push_denoiser_form(output, at.a, at.s, ux, um);
    }
  }
};

/// A guided plan (every guided sampler's) that holds guided_sample()'s workspace of its sampler (tables first), the
/// plan's own buffers after it and the plan's state in one allocation, with the particles at x: the allocation, the
/// start of a trajectory, the particles and the per-step asks, written once for all of them (src/plan.cu).
struct workspace_plan_storage : sampling_plan_storage {
  void* device = nullptr;  // CUDA executor: the allocation
  std::vector<unsigned char> host;  // CPU executor: the allocation
  kernels::plan_state* state = nullptr;
  const unsigned char* memory = nullptr;  // the allocation (either one) and its size in bytes
  std::size_t memory_bytes = 0;
  float* x = nullptr;  // rows x d: the particles
  model_output output = model_output::denoiser;  // what the caller's model answers
  plan_steps steps;
  ~workspace_plan_storage() override;
  /// Sets the executor, the rows (problems x particles), the dimension, the ask count and the model's output.
  void set_up(executor on, std::int64_t row_count, std::int64_t dim, std::int64_t ask_count, model_output answers) {
    where = on;
    rows = row_count;
    d = dim;
    asks = ask_count;
    output = answers;
  }
  /// Allocates workspace_bytes (then the state, 256-byte aligned) on `where` (set before), copies @p tables to its
  /// start, zeroes the rest and starts the state at trajectory 0; synchronises @p stream once (CUDA executor).
  /// Returns the workspace's base. @throws invalid_argument when the allocation is too large.
  unsigned char* allocate(const std::vector<unsigned char>& tables, std::size_t workspace_bytes, cudaStream_t stream);
  /// Refuses an @p initial that overlaps x without being it.
  void check_reset(const float* initial) const override;
  /// Starts the next trajectory on @p stream: step 0 and the trajectory's first particle id (state->chain_base =
  /// trajectory rows), then copies @p initial (rows x d, any memory cudaMemcpyDefault reads) into x when it is not
  /// null. Returns whether it copied (when not, the plan draws its own initial state).
  bool start(const float* initial, cudaStream_t stream);
  float* samples() const override { return x; }
  const std::int64_t* counter() const override;
  /// The caller's output buffers of write_outputs(), each {name, pointer (null: skipped), bytes}: @throws
  /// invalid_argument naming the output when one overlaps the plan's own memory (samples(), the asks' buffers, the
  /// plan's state, which the outputs are computed from) or another output (detail::check_disjoint).
  void refuse_overlaps(std::initializer_list<buffer_span> outputs) const;
};

/// The plan of a guided sampler (smc, dps or pigdm) for d-dimensional states (src/guided.cu).
std::unique_ptr<sampling_plan_storage> make_guided_plan(std::int64_t d, const guided_problems& problems,
                                                        const guided_options& options, model_output output,
                                                        execution exec);

/// The DCPS plan (src/guided_dcps.cu) on a resolved executor, for validated problems and resolved options.
std::unique_ptr<sampling_plan_storage> make_dcps_plan(std::int64_t d, const guided_problems& problems,
                                                      const guided_options& options, model_output output,
                                                      executor where, cudaStream_t stream);

/// The DDRM plan (src/guided_ddrm.cu) on a resolved executor, for validated problems and resolved options.
std::unique_ptr<sampling_plan_storage> make_ddrm_plan(std::int64_t d, const guided_problems& problems,
                                                      const guided_options& options, model_output output,
                                                      executor where, cudaStream_t stream);

/// The TMPD plan (src/guided_tmpd.cu) on a resolved executor, for validated problems and resolved options.
std::unique_ptr<sampling_plan_storage> make_tmpd_plan(std::int64_t d, const guided_problems& problems,
                                                      const guided_options& options, model_output output,
                                                      executor where, cudaStream_t stream);

}  // namespace diffsample::detail
