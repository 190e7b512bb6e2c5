// The ask sequence of a sampling_plan (include/diffsample/plan.hpp), built on the host by each sampler family's
// source file from the same tables as its fused sampler, and run by src/plan.cu.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/plan.cuh"
#include "src/limits.hpp"
#include "src/validate.hpp"
#include <diffsample/diffusion.hpp>
#include <diffsample/error.hpp>
#include <diffsample/langevin.hpp>

namespace diffsample::detail {

struct plan_program {
  std::vector<kernels::plan_entry> entries;  // one per ask
  std::vector<channel> channels;             // the channel of each ask
  std::vector<double> times;                 // the schedule's time of each ask
  model_output output = model_output::denoiser;
  bool draw_initial = false;   // reset() without an initial state draws x = initial_scale z (step 0 of the stream)
  float initial_scale = 1.f;
  bool uses_point = false, uses_m = false, uses_sum = false;
  bool mala = false;  // MALA: every ask asks for the log-density too (plan_buffers' per-row MALA buffers)
  kernels::diffusion_step first{};  // the first ask's point coefficients when it is at P
  std::uint64_t seed = 0, first_chain = 0;
};

/// The model's answer r at a point q and channel (a, s) as the denoiser ux q + um r (src/plan.cu), for every plan:
/// ux = 0, um = 1 for a denoiser; 1 / a and s^2 / a (score) or -s / a (eps); for velocity, from the schedule point
/// @p p (non-null). @throws invalid_argument naming step @p k when the output does not give x0 there: a = 0 for a
/// score or eps model, s = 0 or a vanishing da/dt - (ds/dt) a / s for a velocity one.
void denoiser_form(model_output output, double a, double s, const schedule_point* p, std::int64_t k, double& ux,
                   double& um);

/// The checks a chain program starts with, in this order: d in [1, limits::max_dim] (first, so that a d below 1
/// is named as dim), n x d fits, the family's @p validate_options(options), and no recording (a plan records
/// nothing: its samples are read between asks).
template <class Options, class Validate>
void check_program(std::int64_t n, std::int64_t d, const Options& options, Validate validate_options) {
  limits::check("dim", d, 1, limits::max_dim);
  check_count("n", n, d);
  validate_options(options);
  DIFFSAMPLE_EXPECTS(options.record_every == 0, "options.record_every: a plan records nothing (read samples() between "
                                                "asks), got " << options.record_every);
}

/// The asks of a diffusion sampler (src/diffusion.cu). @throws invalid_argument as diffusion() does.
plan_program diffusion_program(std::int64_t n, std::int64_t d, const diffusion_options& options, model_output output);
/// The asks of a Langevin chain (src/langevin.cu). @throws invalid_argument as langevin() does.
plan_program langevin_program(std::int64_t n, std::int64_t d, const langevin_options& options, model_output output);

}  // namespace diffsample::detail
