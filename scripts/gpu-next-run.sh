#!/usr/bin/env bash
# The next run of scripts/gpu-check.sh on a lent GPU machine, as one command (README "The first run on a lent GPU
# machine"): what the earlier H200 runs have not reached. Usage, as the device tool's command (carry the archive):
#   bash scripts/gpu-next-run.sh "$OUT"        (timeout_s 530)
# Sections: the GPU tests of the programs changed since, initcheck of the six programs not yet checked, the
# posterior table on CUDA (3 seeds per instance), bench_plan, and the Nsight Compute profiles (bench_smc's SMC
# weightings among them; bench_smc itself is left out of the benchmarks: its resampling at 2^24 ran past its limit
# in every run that reached it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${1:?usage: scripts/gpu-next-run.sh OUT_DIR}
export DIFFSAMPLE_CHECK_BUDGET=480
export DIFFSAMPLE_CHECK_SKIP="demo mpi gemm python mpibench"
export DIFFSAMPLE_BENCHES="bench_plan"
export DIFFSAMPLE_TEST_PROGRAMS="test_mixture test_guided_moves test_plan test_posterior test_rng_gpu test_simd test_validation test_workspace"
export DIFFSAMPLE_SANITIZER_BUDGET=80
export DIFFSAMPLE_SANITIZER_ONLY="initcheck:test_plan initcheck:test_posterior initcheck:test_rng_gpu initcheck:test_simd initcheck:test_validation initcheck:test_workspace"
export DIFFSAMPLE_POSTERIOR_TIMEOUT=240
export DIFFSAMPLE_POSTERIOR_SEEDS=3
exec bash scripts/gpu-check.sh --prebuilt gpu-bundle.tar.xz --out "$out"
