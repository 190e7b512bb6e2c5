// The guided samplers that run as one fused launch per call beside the SMC filter of src/guided.cu, each in its own
// translation unit: DiffPIR (src/guided_diffpir.cu) and SKRock (src/guided_skrock.cu). src/guided.cu validates the
// options, builds the tables and calls these. Included only from .cu files of src/.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/guided.cuh"
#include "kernels/guided_skrock.cuh"
#include "src/row_space.hpp"
#include <diffsample/execution.hpp>
#include <diffsample/guided.hpp>

namespace diffsample::detail {

/// Runs guided_diffpir_functor over the B N particles (one launch).
void launch_diffpir(executor where, std::int64_t particles_total, const kernels::guided_params& p,
                    std::int64_t steps, float* x, float* work, float* r, cudaStream_t stream);

/// Runs guided_skrock_functor over the B N particles (one launch).
void launch_skrock(executor where, std::int64_t particles_total, const kernels::guided_params& p,
                   const kernels::skrock_params& q, std::int64_t iterations, float* x, float* work, float* r,
                   cudaStream_t stream);

/// SK-ROCK's coefficients for s stages and damping eta, FP64: 3 s values (mu_j, nu_j, kappa_j), j = 1..s.
std::vector<double> skrock_coefficients(int stages, double eta);

/// The stability bound l_s = (s - 1/2)^2 (2 - 4 eta / 3) - 3/2 of the s-stage scheme (in units of 1 / L).
double skrock_stability_bound(int stages, double eta);

/// @p options (for priors of dimension @p d) with the grid of options.grid resolved into the schedule's custom times (guided_times()); the options
/// themselves when options.grid is guided_grid::schedule or the sampler has no grid (skrock). Call after the
/// options and problems are validated.
guided_options resolve_grid(std::int64_t d, const guided_problems& problems, const guided_options& options);

/// Where a run's options are resolved: a run on the library's mixture (guided_sample(), guided_times(),
/// guided_workspace_bytes(), island mode's islands), the global distributed filter's shards (guided_smc_shard(): the
/// potentials and final moves as on the run route, each shard moving its own rows of the samples) or an ask/tell plan
/// (the caller's model).
enum class resolve_route { run, shard, plan };

/// The multistep kernel's weights w_k = h_k / (2 h_{k-1}) on the grid @p pts (h_k = lambda_{k+1} - lambda_k,
/// lambda = log(a / s); 0 at the first step and at a last step to s = 0) into @p w (pts.size() - 1 floats; nullptr:
/// only the check). Returns -1, or the first k at which log(a / s) does not increase strictly (finite steps), with
/// that point's steps in *h_prev and *h (w then holds the weights before k only).
std::int64_t multistep_weights(const std::vector<schedule_point>& pts, float* w, double* h_prev, double* h);

/// The options every path runs: resolve_grid(), then guided_potentials::automatic resolved (guided_potentials'
/// documentation). For smc on the run route: twisted potentials with start_correction, and multistep_kernel where
/// multistep_weights() finds no failing point (or the caller set it), when d_y <= kernels::moment_potential_max_dy
/// and the grid ends at s = 0; else linear, the other settings as given. On the plan route, or for another sampler:
/// linear. Explicit potentials pass unchanged. final_moves = -1 (automatic) resolves to automatic_final_moves where
/// automatic potentials resolve to twisted (run or shard route) with final_resample, else to 0; explicit counts pass
/// unchanged. Call after the options and problems are validated, once per run.
guided_options resolve_options(std::int64_t d, const guided_problems& problems, const guided_options& options,
                               resolve_route route);

}  // namespace diffsample::detail
