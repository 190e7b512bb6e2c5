// What a sampling_plan (include/diffsample/plan.hpp) holds: one implementation per sampler family (the chain
// samplers in src/plan.cu, the guided samplers in src/guided.cu) behind one interface.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_runtime.h>

#include <diffsample/guided.hpp>
#include <diffsample/plan.hpp>

namespace diffsample::detail {

struct sampling_plan_storage {
  executor where = executor::cpu;
  std::int64_t rows = 0, d = 0, asks = 0, position = 0;
  virtual ~sampling_plan_storage() = default;
  /// The ask at position k (0 <= k < asks, checked by the caller).
  virtual plan_request request(std::int64_t k) const = 0;
  /// Applies the answer of ask k (position == k).
  virtual void tell(std::int64_t k, cudaStream_t stream) = 0;
  virtual void reset(const float* initial, cudaStream_t stream) = 0;
  virtual float* samples() const = 0;
  /// A done trajectory's outputs beyond samples() (guided SMC plans only).
  virtual void write_outputs(const guided_outputs& outputs, cudaStream_t stream);
  virtual const std::int64_t* counter() const = 0;
};

/// The plan of a guided sampler (smc, dps or pigdm) for d-dimensional states (src/guided.cu).
std::unique_ptr<sampling_plan_storage> make_guided_plan(std::int64_t d, const guided_problems& problems,
                                                        const guided_options& options, model_output output,
                                                        execution exec);

/// The guided plans' conversion of a model's answer r of kind @p output at the channel (a, s) to the denoiser
/// ux x + um r: appends ux and um (src/guided.cu).
void push_denoiser_form(model_output output, double a, double s, std::vector<float>& ux, std::vector<float>& um);

/// The DCPS plan (src/guided_dcps.cu) on a resolved executor, for validated problems and resolved options.
std::unique_ptr<sampling_plan_storage> make_dcps_plan(std::int64_t d, const guided_problems& problems,
                                                      const guided_options& options, model_output output,
                                                      executor where, cudaStream_t stream);

/// The TMPD plan (src/guided_tmpd.cu) on a resolved executor, for validated problems and resolved options.
std::unique_ptr<sampling_plan_storage> make_tmpd_plan(std::int64_t d, const guided_problems& problems,
                                                      const guided_options& options, model_output output,
                                                      executor where, cudaStream_t stream);

}  // namespace diffsample::detail
