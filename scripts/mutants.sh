#!/usr/bin/env bash
# Mutation check of the test suite: puts small, plausible bugs into a scratch copy of the tree one at a time,
# rebuilds the library and the test binaries that cover each bug, runs them, and reports whether the suite caught it.
# Not part of the default CI run (each mutant costs a partial rebuild); see README, "Mutation check".
#
#   scripts/mutants.sh [--list] [--jobs N] [--timeout S] [--scratch DIR] [--no-baseline] [--all-tests] [NAME ...]
#
#   --list         check every mutant's pattern against the current tree and print them; build nothing
#   --jobs N       build parallelism (default 2)
#   --timeout S    time limit per test binary run, in seconds (default 600); a run that exceeds it counts as caught
#   --scratch DIR  scratch copy of the tree and its build directory (default build-mutants/ in the repository,
#                  git-ignored; kept between runs so that rebuilds stay incremental)
#   --no-baseline  skip the unmutated run of the selected test binaries (only when it is known to pass)
#   --all-tests    run every test of a mutant's binaries (default: stop at the first failure, which decides)
#   NAME ...       run only these mutants (default: all)
#
# Each mutant is a literal search/replace that must match exactly once in its file. A pattern that matches zero
# times or several times is reported as STALE (the code moved: update the mutant to the same kind of bug at the
# new location) and makes the script exit non-zero; it is never counted as caught or survived. The working tree is
# never modified: the scratch copy is refreshed from it (tracked and untracked, non-ignored files) before the run.
# Builds use ccache when it is installed (export CCACHE_DIR/CCACHE_BASEDIR as for the main build to share hits).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
scratch="$root/build-mutants"
jobs=2
limit=600
baseline=1
list_only=0
fail_fast=--gtest_fail_fast
selected=()
while [ $# -gt 0 ]; do
  case "$1" in
    --list) list_only=1 ;;
    --jobs) jobs=$2; shift ;;
    --timeout) limit=$2; shift ;;
    --scratch) scratch=$2; shift ;;
    --no-baseline) baseline=0 ;;
    --all-tests) fail_fast= ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "mutants.sh: unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done

# --- the mutants --------------------------------------------------------------------------------------------------
# mutant NAME AREA FILE TESTS SEARCH REPLACE [equivalent]
#   TESTS: space-separated test binaries, each optionally binary:gtest_filter.
#   equivalent: the change cannot be observed (reported, not scored).
names=() areas=() files=() tests=() searches=() replaces=() kinds=()
mutant() {
  names+=("$1"); areas+=("$2"); files+=("$3"); tests+=("$4"); searches+=("$5"); replaces+=("$6")
  kinds+=("${7:-}")
}

guided_tests='test_guided:-*D100*'

# Mixture math (kernels/mixture.cuh)
mutant mixture-iso-score-variance mixture kernels/mixture.cuh test_mixture \
  'const T iso_inv_c = m.isotropic ? T(1) / (a * a * T(m.variances[k]) + s2) : T(0);' \
  'const T iso_inv_c = m.isotropic ? T(1) / (a * T(m.variances[k]) + s2) : T(0);'
mutant mixture-logit-no-log-det mixture kernels/mixture.cuh test_mixture \
  'return T(m.log_weights[k]) - T(0.5) * (q + log_c + T(d) * log_two_pi<T>());' \
  'return T(m.log_weights[k]) - T(0.5) * (q + T(d) * log_two_pi<T>());'
mutant mixture-softmax-no-rescale mixture kernels/mixture.cuh test_mixture \
  'score[j] = score[j] * rescale + weight * (a * T(m.mean(k, j)) - T(x[j])) * inv_c;' \
  'score[j] = score[j] + weight * (a * T(m.mean(k, j)) - T(x[j])) * inv_c;'
mutant mixture-denoiser-drops-a mixture kernels/mixture.cuh test_mixture \
  'const T mk = s2 * inv_c * T(m.mean(k, j)) + a * v * inv_c * T(x[j]);' \
  'const T mk = s2 * inv_c * T(m.mean(k, j)) + v * inv_c * T(x[j]);'
mutant mixture-jvp-uncentred mixture kernels/mixture.cuh test_mixture \
  'const T rg = r * scale * ((g.p - p_mean) + (g.q - q_mean));' \
  'const T rg = r * scale * (g.p + g.q);'

# Langevin (kernels/langevin.cuh)
mutant ula-noise-sqrt-gamma langevin kernels/langevin.cuh test_langevin \
  'const float noise = ds_sqrt(2.f * gamma);' \
  'const float noise = ds_sqrt(gamma);'
mutant mala-no-proposal-correction langevin kernels/langevin.cuh test_langevin \
  'return (logp_new - logp) - backward * T(1.f / (4.f * gamma)) + T(0.5f) * forward;' \
  'return (logp_new - logp);'
mutant tamed-ula-squared-norm langevin kernels/langevin.cuh test_langevin \
  'return T(gamma) / (T(1) + T(gamma) * ds_sqrt(norm2));' \
  'return T(gamma) / (T(1) + T(gamma) * norm2);'
# MALA accepting at equality (<= for <) is equivalent (it differs only when two floats are equal) and no longer
# compiles (the CPU executor's SIMD packs define < and > only; !(a < b) would also accept NaN proposals): not listed.

# Schedules and time grids (src/schedule.cpp)
mutant schedule-cosine-drops-normaliser schedules src/schedule.cpp test_diffusion:Diffusion.SchedulesMatchTheirClosedForms \
  'p.a = std::sin(rest) / c0;' \
  'p.a = std::sin(rest);'
mutant grid-quadratic-dense-at-noise schedules src/schedule.cpp test_diffusion:Diffusion.SchedulesMatchTheirClosedForms \
  't[k] = t_end + (t_start - t_end) * u * u;' \
  't[k] = t_end + (t_start - t_end) * (1 - (1 - u) * (1 - u));'
# Exact mixture draws (kernels/mixture_points.cuh)
mutant exact-draw-a-not-a-squared mixture kernels/mixture_points.cuh test_mixture:Mixture.ExactSamples* \
  'ds_sqrt(a * a * m.variance(k, j) + s2) * z' \
  'ds_sqrt(a * m.variance(k, j) + s2) * z'
# DiffPIR's packed tell (src/cpu/guided.cpp): the proximal step's table of step 0 at every step
mutant diffpir-table-step0 guided src/cpu/guided.cpp test_guided_samplers:*ExactLawOfTheirChains* \
  'const float* P = kernels::guided_precision(p, f.k, b);' \
  'const float* P = kernels::guided_precision(p, 0, b);'

# Diffusion step tables (src/diffusion.cu; the DDPM/DDIM backward kernel in kernels/backward.cuh)
mutant ddim-sigma-variance diffusion kernels/backward.cuh test_diffusion \
  'k.sigma = eta * sqrt(posterior_variance);' \
  'k.sigma = eta * posterior_variance;'
mutant ddpm-noise-one-percent diffusion kernels/backward.cuh test_diffusion \
  'k.sigma = sqrt(posterior_variance);' \
  'k.sigma = 1.01 * sqrt(posterior_variance);'
mutant ddpm-x0-coefficient-a diffusion kernels/backward.cuh test_diffusion \
  'k.cm = a_next * v / s2;' \
  'k.cm = a * v / s2;'
mutant reverse-sde-half-noise diffusion src/diffusion.cu test_diffusion \
  'st.cn = float(std::sqrt(std::max(0.0, -g2 * dt)));' \
  'st.cn = float(std::sqrt(std::max(0.0, -g2 * dt / 2)));'
mutant ode-velocity-drops-a diffusion src/diffusion.cu test_diffusion \
  'const double fx = p.ds_dt / p.s, fm = p.da_dt - p.ds_dt * p.a / p.s;' \
  'const double fx = p.ds_dt / p.s, fm = p.da_dt - p.ds_dt / p.s;'
mutant walk-jump-drift-sigma diffusion src/diffusion.cu test_diffusion \
  'st.cm = float(gamma / s2);' \
  'st.cm = float(gamma / sigma);'

# Resampling (kernels/particles.cuh, src/particles.cu)
mutant systematic-per-particle-draw resampling kernels/particles.cuh test_particles \
  'stratified(scheme == resampling_scheme::stratified), v(0) {' \
  'stratified(true), v(0) {'
mutant residual-slot-range resampling kernels/particles.cuh test_particles \
  'const std::uint64_t s = uniform_below(rng, N - copies);' \
  'const std::uint64_t s = uniform_below(rng, N);'
mutant metropolis-proposal-skips-last resampling kernels/particles.cuh test_particles \
  'const std::int64_t prop = static_cast<std::int64_t>(uniform_below(rng, N));' \
  'const std::int64_t prop = static_cast<std::int64_t>(uniform_below(rng, N - 1));'
mutant ess-without-square resampling kernels/particles.cuh test_particles \
  'r.ess = sum_w * sum_w / sum_w2;' \
  'r.ess = sum_w / sum_w2;'

mutant rejection-fallback-first-particle resampling kernels/particles.cuh test_particles:*Rejection* \
  'std::int64_t a = 0;
  while (a + 1 < n && below + q[a] <= x) below += q[a++];' \
  'std::int64_t a = 0;
  while (false) below += q[a++];'

# Stepwise plan (kernels/plan.cuh) and sliced Wasserstein (kernels/metrics.cuh)
mutant plan-reset-keeps-key rng-keys kernels/plan.cuh test_diffusion:DiffusionPlan.* \
  'state->chain_base = first_chain + state->trajectory * n;' \
  'state->chain_base = first_chain;'
mutant wasserstein-atom-whole-mass metrics kernels/metrics.cuh test_metrics:SlicedWasserstein.* \
  'part += double(to - from) * (p == 1 ? gap : gap * gap);' \
  'part += double(ns) * (p == 1 ? gap : gap * gap);'

# Guided SMC weights (kernels/guided.cuh)
mutant guided-weight-keeps-potential guided kernels/guided.cuh "$guided_tests" \
  'return -0.5f * q_next + 0.5f * q_now;' \
  'return -0.5f * q_next;'
mutant guided-normaliser-after-resampling guided kernels/guided.cuh "$guided_tests" \
  'previous_lse[b] = rep.resampled ? log_n : rep.log_sum_exp;' \
  'previous_lse[b] = rep.log_sum_exp;'

# Exact posterior (the per-component functor in kernels/posterior.cuh)
mutant posterior-weight-no-log-det posterior kernels/posterior.cuh test_posterior \
  'log_joint[k] = log_prior_weights[k] - 0.5 * (double(m) * log_two_pi<double>() + quad) - log_det_half;' \
  'log_joint[k] = log_prior_weights[k] - 0.5 * (double(m) * log_two_pi<double>() + quad);'
mutant posterior-noise-sigma-not-variance posterior kernels/posterior.cuh test_posterior \
  'c[i * m + l] = c[l * m + i] = s + (i == l ? s2 : 0.0);' \
  'c[i * m + l] = c[l * m + i] = s + (i == l ? sqrt(s2) : 0.0);'

# Binary data: discrete Langevin samplers (kernels/binary.cuh)
mutant discrete-step-one-over-eta binary kernels/binary.cuh test_binary \
  'const float alpha = p.alpha, two_over_eta = ds_quotient(2.f, p.eta);' \
  'const float alpha = p.alpha, two_over_eta = ds_quotient(1.f, p.eta);'
mutant discrete-metropolis-no-proposal-correction binary kernels/binary.cuh test_binary \
  'const float log_accept = (logq_new - logq) + backward - forward;' \
  'const float log_accept = (logq_new - logq);'
mutant discrete-two-stage-half-logit binary kernels/binary.cuh test_binary \
  'const float plus = sigmoid(2.f * (alpha * s[j] + 0.5f * two_over_eta * y[j]));' \
  'const float plus = sigmoid(alpha * s[j] + 0.5f * two_over_eta * y[j]);'

# Random-stream keys
mutant langevin-key-step-chain rng-keys kernels/langevin.cuh test_langevin \
  'auto rng = lane.rng(p.seed, p.first_chain, p.first_step + static_cast<std::uint64_t>(k));' \
  'auto rng = lane.rng(p.seed, p.first_step + static_cast<std::uint64_t>(k), p.first_chain);'
mutant diffusion-step-key-k rng-keys kernels/diffusion.cuh test_diffusion \
  'auto rng = lane.rng(p.seed, p.first_chain, static_cast<std::uint64_t>(k) + 1);' \
  'auto rng = lane.rng(p.seed, p.first_chain, static_cast<std::uint64_t>(k));'
mutant diffusion-initial-draw-key rng-keys kernels/diffusion.cuh test_diffusion \
  'auto rng = lane.rng(p.seed, p.first_chain, 0);' \
  'auto rng = lane.rng(p.seed, p.first_chain, 1);'
mutant mixture-sample-local-index rng-keys kernels/mixture_points.cuh test_mixture \
  'exact_draw(mix, cumulative, seed, first + static_cast<std::uint64_t>(i), a, s2, o);' \
  'exact_draw(mix, cumulative, seed, static_cast<std::uint64_t>(i), a, s2, o);'
mutant posterior-sample-local-index rng-keys kernels/posterior.cuh test_posterior \
  'philox rng(seed, first + static_cast<std::uint64_t>(i), 0, 4 * static_cast<std::uint64_t>(slot));' \
  'philox rng(seed, static_cast<std::uint64_t>(i), 0, 4 * static_cast<std::uint64_t>(slot));'


# The CPU executor's SIMD packs (src/cpu/: what a SIMD target runs in place of the kernels/ functors), the GEMM path
# and the operator products. posterior-search-off-by-one keeps the search's invariant (every label the same).
mutant store-row-drops-i0 cpu-packs src/cpu/chains.cpp test_langevin \
  'float* out = records + (r * n + i0 + l) * d;' \
  'float* out = records + (r * n + l) * d;'
mutant mala-count-every-step cpu-packs src/cpu/chains.cpp test_langevin \
  'void add(mpack accepted) { c -= accepted.m; }' \
  'void add(mpack accepted) { c += 1; (void)accepted; }'
mutant plan-initial-step1-stream cpu-packs src/cpu/chains.cpp test_diffusion:DiffusionPlan.* \
  'auto rng = lane.rng(f.seed, chain_base, 0);' \
  'auto rng = lane.rng(f.seed, chain_base, 1);'
mutant plan-step-stream-k cpu-packs src/cpu/chains.cpp test_diffusion:DiffusionPlan.* \
  'auto rng = lane.rng(f.seed, chain_base, static_cast<std::uint64_t>(k) + 1);' \
  'auto rng = lane.rng(f.seed, chain_base, static_cast<std::uint64_t>(k));'
mutant posterior-group4-tail cpu-packs src/cpu/posterior.cpp test_posterior \
  'for (; s + 4 <= e; s += 4) transform_group<4>(a, zb, idx + s, k, i0, out);' \
  'for (; s + 4 < e; s += 4) transform_group<4>(a, zb, idx + s, k, i0, out);'
mutant posterior-masked-load-short cpu-packs src/cpu/posterior.cpp test_posterior \
  'const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(3, 2, 1, 0));' \
  'const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(4, 3, 2, 1));'
mutant guided-final-draw-diag cpu-packs src/cpu/guided.cpp test_simd:SimdGuided.* \
  'for (int e = 0; e <= o; ++e) acc = acc + fpack(D[o * dy + e]) * zy[e];' \
  'for (int e = 0; e < o; ++e) acc = acc + fpack(D[o * dy + e]) * zy[e];'
mutant guided-mutate-noise-step-k cpu-packs src/cpu/guided.cpp test_simd:SimdGuided.* \
  'const float noise = p.noise_std[(m.k + 1) * p.problems + b];' \
  'const float noise = p.noise_std[m.k * p.problems + b];'
mutant twisted-lz-own-index cpu-packs src/cpu/guided.cpp test_guided:*Twisted*:*twisted* \
  'm.lw[i] = w + m.lz[ancestor[l]] - (sig > 0.f ? dot.v[l] / sig : 0.f);' \
  'm.lw[i] = w + m.lz[i] - (sig > 0.f ? dot.v[l] / sig : 0.f);'
mutant dps-normalised-no-offset cpu-packs src/cpu/guided.cpp test_guided_pnp:*MaskAndSvd* \
  'fpack norm2(f.g.norm_offset[pk.b]);' \
  'fpack norm2(0.f);'
mutant jvp-iso-no-rescale cpu-packs src/cpu/denoiser_jvp.hpp test_simd:SimdJvp.* \
  'if (moved) xs_iso = xs_iso * rescale;' \
  ''
mutant jvp-pass2-no-rescale cpu-packs src/cpu/denoiser_jvp.hpp test_simd:SimdJvp.* \
  'const T f = softmax_exp(cmax[ci] - run_max) * inv_sum;' \
  'const T f = inv_sum;'
mutant moment-logdet-unfloored cpu-packs src/cpu/guided_tells.cpp test_plan:*FloorTheirPivots* \
  'logdet = logdet + ds_log(pivot);' \
  'logdet = logdet + ds_log(acc);'
mutant skrock-perturb-stream-n1 cpu-packs src/cpu/guided_tells.cpp test_simd:SimdGuided.* \
  'philox_pack rng(p.seed, key, static_cast<std::uint64_t>(f.n) + 2);' \
  'philox_pack rng(p.seed, key, static_cast<std::uint64_t>(f.n) + 1);'
mutant multistep-sign cpu-packs src/cpu/guided_packs.hpp test_guided:*Multistep* \
  'ms[j] = ms[j] + wk * (ms[j] - mj);' \
  'ms[j] = ms[j] + wk * (mj - ms[j]);'
mutant projection-copy-paste cpu-packs src/cpu/projection.cpp test_simd:SimdSlicedWasserstein.* \
  's3 = s3 + uj * double(x3[j]);' \
  's3 = s3 + uj * double(x2[j]);'
mutant gemm-centre-drops-a gemm src/mixture_gemm.cpp test_mixture_gemm \
  'o[j] = xi[j] - c.a * m[j];' \
  'o[j] = xi[j] - m[j];'
mutant gemm-jvp-xv-uncentred gemm src/mixture_gemm.cpp test_mixture_gemm \
  'for (std::int64_t j = 0; j < d; ++j) q += double(xc[r * d + j]) * c.v[(first + r) * d + j];' \
  'for (std::int64_t j = 0; j < d; ++j) q += double(c.x[(first + r) * d + j]) * c.v[(first + r) * d + j];'
mutant gemm-gamma-without-d gemm src/mixture_gemm.cpp test_mixture_gemm:GemmAgainstFp64.* \
  'c.gamma = float(double(d) * u / (1 - double(d) * u));' \
  'c.gamma = float(u / (1 - u));'
mutant opgemm-tmpd-sigma2-problem0 gemm src/operator_gemm.cpp test_operator_gemm:*Tmpd* \
  'const double s2 = double(sigma2[i / p.particles]);' \
  'const double s2 = double(sigma2[0]);'
mutant posterior-search-off-by-one cpu-packs src/cpu/posterior.cpp test_posterior \
  'base = a.cumulative[base + half - 1] < ul ? base + half : base;' \
  'base = a.cumulative[base + half] < ul ? base + half : base;' \
  equivalent
mutant opgemm-forward-problem0-A gemm src/operator_gemm.cpp test_operator_gemm:*PerProblem* \
  $'const float* A = p.A + (first / p.particles) * p.A_stride;\n    tiled_guidance_product(m + first * d, d, r + first * dy' \
  $'const float* A = p.A;\n    tiled_guidance_product(m + first * d, d, r + first * dy'

# A third audit: the guided baselines' functors (kernels/guided_{dcps,ddrm,tmpd,diffpir,skrock,stepwise}.cuh; on an
# AVX2 or AVX-512 machine the CPU executor runs them on the scalar target, which test_simd's SimdGuided.* compares
# with the packs, and in the functor-level FP64 tests; what the packs call too (dcps_scaled_norm, the DCPS counters,
# the stage functors' initial draws, DDRM's initial state) runs on every target), the packs of src/cpu/
# (jacobian_tells.cpp, guided_tells.cpp, guided.cpp), kernels/linalg.cuh, src/guided_grid.cpp, kernels/metrics.cuh.
# dcps-counter-step-overlap, dcps-stage-initial-stream and ddrm-initial-from-off-by-one survived the suite before
# Dcps.EveryDrawOfAParticleReadsItsOwnCounter, Dcps.StepwiseInitialDrawIsTheFusedRunsDraw and
# Ddrm.OneStepMatchesFp64ReferenceWithALevelBetweenTheFirstTwoPoints were written for them.
simd_guided='test_simd:SimdGuided.*'
dcps_samplers='test_guided_samplers:Dcps.*:GuidedSamplers.*'
mutant dcps-scaled-norm-no-sqrt guided-dcps kernels/guided_dcps.cuh "$dcps_samplers $simd_guided" \
  'return scale * ds_sqrt(sum);' \
  'return scale * sum;'
mutant dcps-counter-step-overlap rng-keys kernels/guided_dcps.cuh "$dcps_samplers $simd_guided" \
  'return 1 + static_cast<std::uint64_t>(j) * static_cast<std::uint64_t>(p.gradient_steps + 1) +' \
  'return 1 + static_cast<std::uint64_t>(j) * static_cast<std::uint64_t>(p.gradient_steps) +'
mutant dcps-langevin-noise-sqrt-gamma guided-dcps kernels/guided_dcps.cuh "$simd_guided test_guided_samplers:Dcps.*" \
  'const float noise = ds_sqrt(2.f * p.gamma);' \
  'const float noise = ds_sqrt(p.gamma);'
mutant dcps-log-scale-gradient-drops-one guided-dcps kernels/guided_dcps.cuh "$simd_guided test_guided_samplers:Dcps.*" \
  'const float gv = -grad[c] * sd * eps[c] + sd * sd * inv_sig2 * inv_scale - inv_scale;' \
  'const float gv = -grad[c] * sd * eps[c] + sd * sd * inv_sig2 * inv_scale;'
mutant dcps-stage-initial-stream rng-keys kernels/guided_stepwise.cuh "$dcps_samplers $simd_guided test_plan" \
  'philox rng(p.g.seed, id, 0);' \
  'philox rng(p.g.seed, id, 1);'
mutant ddrm-initial-noise-plus guided-ddrm kernels/guided_ddrm.cuh 'test_guided_samplers:Ddrm.*:GuidedSamplers.*' \
  'target = a0 * ybar[c] + ddrm_sqrt(s0 * s0 - an * an) * w.proj_xi[c];' \
  'target = a0 * ybar[c] + ddrm_sqrt(s0 * s0 + an * an) * w.proj_xi[c];'
mutant ddrm-update-case-off-by-one guided-ddrm kernels/guided_ddrm.cuh "$simd_guided test_guided_samplers:Ddrm.*" \
  'if (k + 1 >= from[c]) {  // s'"'"' < a'"'"' n_i, decided on the host (less_noisy_from)' \
  'if (k >= from[c]) {  // s'"'"' < a'"'"' n_i, decided on the host (less_noisy_from)'
mutant tmpd-guidance-scale-dropped guided-tmpd kernels/guided_tmpd.cuh "$simd_guided test_guided_samplers:Tmpd.*" \
  'const float shift = scale * st.guidance;' \
  'const float shift = st.guidance;'
mutant tmpd-covariance-ratio-a-squared guided-tmpd kernels/guided_tmpd.cuh "$simd_guided test_guided_samplers:Tmpd.*" \
  'const double ratio = double(s) * double(s) / double(a);' \
  'const double ratio = double(s) * double(s) / (double(a) * double(a));'
mutant diffpir-update-stream-k rng-keys kernels/guided_diffpir.cuh "$simd_guided test_guided_pnp:*Diffpir*" \
  'philox rng(p.seed, id, static_cast<std::uint64_t>(k) + 1);' \
  'philox rng(p.seed, id, static_cast<std::uint64_t>(k));'
mutant skrock-perturb-drops-c guided-skrock kernels/guided_skrock.cuh "$simd_guided test_guided_pnp:*Skrock*" \
  'rng.normals(p.d, [&](int j, float z) { cur[j] = x[j] + nu1 * c * z; });' \
  'rng.normals(p.d, [&](int j, float z) { cur[j] = x[j] + nu1 * z; });'
mutant ddrm-initial-from-off-by-one guided-ddrm kernels/guided_ddrm.cuh 'test_guided_samplers:Ddrm.*:GuidedSamplers.* test_plan' \
  'if (noise[c] >= 0.f && from[c] > 0) target' \
  'if (noise[c] >= 0.f && from[c] > 1) target'
mutant skrock-initial-perturb-stream rng-keys kernels/guided_skrock.cuh "test_guided_pnp:*Skrock* test_plan $simd_guided" \
  'if (iterations > 0) skrock_perturb(p, q, key(), b, 0, xi, ci);' \
  'if (iterations > 0) skrock_perturb(p, q, key(), b, 1, xi, ci);'
mutant diffpir-pack-ignores-trajectory cpu-packs src/cpu/guided.cpp "test_plan $simd_guided test_guided_pnp:*Diffpir*" \
  'const std::uint64_t id = (f.id_base != nullptr ? *f.id_base : 0) + kernels::guided_stream(p, pk.i0, b);' \
  'const std::uint64_t id = kernels::guided_stream(p, pk.i0, b);'
mutant dcps-pack-mu-gradient-sign cpu-packs src/cpu/jacobian_tells.cpp "$simd_guided test_guided_samplers:Dcps.*" \
  'const fpack gm = -w.grad[c] + (w.mu[c] - w.x[c]) * inv_sig2_scaled;' \
  'const fpack gm = w.grad[c] + (w.mu[c] - w.x[c]) * inv_sig2_scaled;'
mutant skrock-pack-stage-swapped cpu-packs src/cpu/guided_tells.cpp "$simd_guided test_guided_pnp:*Skrock*" \
  'for (int j = 0; j < d; ++j) os[j] = mu * gs[j] + nu * cs[j] + kappa * os[j];' \
  'for (int j = 0; j < d; ++j) os[j] = mu * gs[j] + nu * os[j] + kappa * cs[j];'
mutant tmpd-pack-sigma2-problem0 cpu-packs src/cpu/jacobian_tells.cpp "$simd_guided test_guided_samplers" \
  'c[o * dy + o] += double(f.sigma2[b]);' \
  'c[o * dy + o] += double(f.sigma2[0]);'
mutant linalg-forward-substitute-own-row linalg kernels/linalg.cuh 'test_posterior test_guided_samplers' \
  'for (std::int64_t k = 0; k < i; ++k) s -= L[i * n + k] * b[k * columns + c];' \
  'for (std::int64_t k = 0; k <= i; ++k) s -= L[i * n + k] * b[k * columns + c];'
mutant linalg-gram-no-diagonal linalg kernels/linalg.cuh 'test_guided_grid test_posterior test_guided_samplers' \
  'for (std::int64_t l = 0; l <= i; ++l) {' \
  'for (std::int64_t l = 0; l < i; ++l) {'
mutant linalg-back-substitute-reads-upper linalg kernels/linalg.cuh 'test_posterior test_guided_samplers' \
  'for (std::int64_t k = i + 1; k < n; ++k) s -= L[k * n + i] * b[k * columns + c];' \
  'for (std::int64_t k = i + 1; k < n; ++k) s -= L[i * n + k] * b[k * columns + c];'
mutant grid-spectral-squared-singular-values schedules src/guided_grid.cpp test_guided_grid \
  'if (v > 1e-12 * largest) out.push_back(std::sqrt(v));' \
  'if (v > 1e-12 * largest) out.push_back(v);'
mutant grid-noise-ratio-denominator schedules src/guided_grid.cpp "test_guided_grid" \
  'const double r = std::pow(p0 + (p1 - p0) * double(k) / double(K - 1), rho);' \
  'const double r = std::pow(p0 + (p1 - p0) * double(k) / double(K), rho);'
mutant multistep-weight-no-half schedules src/guided_grid.cpp 'test_guided:*Multistep*:Guided.Default*' \
  'if (w != nullptr) w[k] = float(0.5 * *h / *h_prev);' \
  'if (w != nullptr) w[k] = float(*h / *h_prev);'
mutant wasserstein-1d-reset-na metrics kernels/metrics.cuh test_metrics \
  $'++i;\n      left_a = nb;' \
  $'++i;\n      left_a = na;'
mutant sliced-direction-local-index rng-keys kernels/metrics.cuh test_metrics \
  'philox rng(seed, static_cast<std::uint64_t>(first + c), 0);' \
  'philox rng(seed, static_cast<std::uint64_t>(c), 0);'

# --- machinery ----------------------------------------------------------------------------------------------------
count() {  # occurrences of the literal $2 in file $1 (0 when the file is gone)
  if [ -f "$1" ]; then
    SEARCH="$2" perl -0777 -ne '$n = () = /\Q$ENV{SEARCH}\E/g; print $n' "$1"
  else
    echo 0
  fi
}
apply() {  # replace the single literal occurrence
  SEARCH="$2" REPLACE="$3" perl -0777 -i -pe 's/\Q$ENV{SEARCH}\E/$ENV{REPLACE}/' "$1"
}

wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local s
  for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}
for s in "${selected[@]}"; do
  found=0
  for n in "${names[@]}"; do [ "$n" = "$s" ] && found=1; done
  [ $found = 1 ] || { echo "mutants.sh: no mutant named $s" >&2; exit 2; }
done

# Refresh the scratch tree from the working tree: copy what differs, drop what is gone. Unchanged files keep their
# timestamps, so the scratch build stays incremental.
tree="$scratch/tree"
mkdir -p "$tree"
if [ $list_only = 0 ]; then
  (cd "$root" && git ls-files -co --exclude-standard) | grep -v '^build' >"$scratch/files.new"
  while IFS= read -r f; do
    [ -f "$root/$f" ] || continue
    if ! cmp -s "$root/$f" "$tree/$f"; then
      mkdir -p "$(dirname "$tree/$f")"
      cp "$root/$f" "$tree/$f"
    fi
  done <"$scratch/files.new"
  if [ -f "$scratch/files" ]; then
    comm -23 <(sort "$scratch/files") <(sort "$scratch/files.new") | while IFS= read -r f; do rm -f "$tree/$f"; done
  fi
  mv "$scratch/files.new" "$scratch/files"
  src="$tree"
else
  src="$root"
fi

# Patterns first: every stale mutant is named before anything is built.
stale=0
for i in "${!names[@]}"; do
  wanted "${names[$i]}" || continue
  c=$(count "$src/${files[$i]}" "${searches[$i]}")
  if [ "$c" != 1 ]; then
    echo "STALE: ${names[$i]}: pattern matches $c times in ${files[$i]} (the code moved: update the mutant)" >&2
    stale=$((stale + 1))
  elif [ $list_only = 1 ]; then
    printf '%-44s %-10s %-26s %s%s\n' "${names[$i]}" "${areas[$i]}" "${files[$i]}" "${tests[$i]}" \
      "${kinds[$i]:+ (equivalent)}"
  fi
done
if [ $list_only = 1 ]; then
  echo "${#names[@]} mutants, $stale stale"
  [ $stale = 0 ]
  exit
fi

source "$root/scripts/env.sh"
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
build="$tree/build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  (cd "$tree" && cmake --preset default "${launcher[@]}" >"$scratch/configure.log" 2>&1) ||
    { echo "mutants.sh: configure failed, see $scratch/configure.log" >&2; exit 1; }
else
  # New source or test files since the last run become targets only after a configure.
  cmake "$build" >"$scratch/configure.log" 2>&1 ||
    { echo "mutants.sh: configure failed, see $scratch/configure.log" >&2; exit 1; }
fi

binaries() {  # test binaries of mutant $1
  local t
  for t in ${tests[$1]}; do echo "${t%%:*}"; done
}
run_tests() {  # runs the tests of mutant $1; returns 0 when all pass, writes the log to $2; $3: extra flags
  local t bin filter rc=0
  : >"$2"
  for t in ${tests[$1]}; do
    bin=${t%%:*}
    filter='*'
    [ "$t" != "$bin" ] && filter=${t#*:}
    echo "== $bin --gtest_filter=$filter" >>"$2"
    if ! timeout "$limit" "$build/tests/$bin" --gtest_filter="$filter" --gtest_brief=1 ${3:-} >>"$2" 2>&1; then
      rc=1
      [ -n "${3:-}" ] && break  # fail-fast: one failure decides
    fi
  done
  return $rc
}
build_targets() {  # the library and the given test binaries
  cmake --build "$build" -j "$jobs" --target diffsample "$@" >>"$scratch/build.log" 2>&1
}

if [ $baseline = 1 ]; then
  all=()
  for i in "${!names[@]}"; do
    wanted "${names[$i]}" || continue
    for t in ${tests[$i]}; do all+=("$t"); done
  done
  mapfile -t uniq < <(printf '%s\n' "${all[@]}" | sort -u)
  echo "baseline: building and running ${uniq[*]} on the unmutated tree"
  : >"$scratch/build.log"
  mapfile -t bins < <(for t in "${uniq[@]}"; do echo "${t%%:*}"; done | sort -u)
  build_targets "${bins[@]}" || { echo "mutants.sh: the unmutated tree does not build, see $scratch/build.log" >&2; exit 1; }
  names+=(baseline); tests+=("${uniq[*]}")
  if ! run_tests $((${#names[@]} - 1)) "$scratch/baseline.log"; then
    echo "mutants.sh: the unmutated tree fails its tests, see $scratch/baseline.log; nothing to measure" >&2
    exit 1
  fi
  unset 'names[-1]' 'tests[-1]'
fi

caught=0 survived=0 equivalent_survived=0 failed_builds=0 scored=0
survivors=()
mkdir -p "$scratch/logs"
printf '%-44s %-10s %s\n' mutant area result
for i in "${!names[@]}"; do
  wanted "${names[$i]}" || continue
  f="$tree/${files[$i]}"
  [ "$(count "$f" "${searches[$i]}")" = 1 ] || continue  # stale: reported above
  cp "$f" "$scratch/original"
  apply "$f" "${searches[$i]}" "${replaces[$i]}"
  log="$scratch/logs/${names[$i]}.log"
  start=$SECONDS
  mapfile -t bins < <(binaries "$i" | sort -u)
  if ! build_targets "${bins[@]}"; then
    result="BUILD FAILED (invalid mutant; see $scratch/build.log)"
    failed_builds=$((failed_builds + 1))
  elif run_tests "$i" "$log" "$fail_fast"; then
    if [ -n "${kinds[$i]}" ]; then
      result="survived (equivalent)"
      equivalent_survived=$((equivalent_survived + 1))
    else
      result="SURVIVED"
      survived=$((survived + 1)); scored=$((scored + 1)); survivors+=("${names[$i]}")
    fi
  else
    first=$(grep -m1 -E '^\[  FAILED  \]|Failure|timeout' "$log" || true)
    if [ -n "${kinds[$i]}" ]; then
      result="caught, but marked equivalent: revise the mark (${first})"
    else
      result="caught (${first:-non-zero exit})"
    fi
    caught=$((caught + 1)); scored=$((scored + 1))
  fi
  cp "$scratch/original" "$f"  # restore (content only: the next build recompiles it, from ccache)
  printf '%-44s %-10s %s [%ds]\n' "${names[$i]}" "${areas[$i]}" "$result" $((SECONDS - start))
done
# Leave the scratch build matching the tree, so that the next run starts incremental.
mapfile -t bins < <(for i in "${!names[@]}"; do wanted "${names[$i]}" && binaries "$i"; done | sort -u)
build_targets "${bins[@]}" || true

echo
echo "score: $caught caught of $scored scored mutants" \
  "(${equivalent_survived} equivalent survived, ${failed_builds} failed to build, ${stale} stale)"
[ ${#survivors[@]} -gt 0 ] && echo "survived: ${survivors[*]}"
[ $stale = 0 ] && [ $survived = 0 ] && [ $failed_builds = 0 ]
