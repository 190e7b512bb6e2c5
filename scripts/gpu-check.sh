#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds for sm_90, runs every test (GPU tests included), compute-sanitizer
# memcheck and racecheck on the GPU tests, the benchmarks and the PyTorch baseline, and writes everything to
# bench/results/<date>-<device>.md. Usage: scripts/gpu-check.sh [chains] [steps]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
chains=${1:-1048576}
steps=${2:-1000}
build=build-gpu
stamp=$(date -u +%Y-%m-%dT%H%M)
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-')
out=bench/results/${stamp}-${device:-unknown}.md
mkdir -p bench/results
log() { echo "$@" | tee -a "$out"; }
section() { printf '\n## %s\n\n```\n' "$1" >>"$out"; }
endsection() { printf '```\n' >>"$out"; }

{
  echo "# gpu-check $stamp"
  echo
  echo "- commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null)"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null)"
  echo "- nvcc: $(nvcc --version | tail -1)"
} >"$out"

status=0
section "build (sm_90)"
cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >>"$out" 2>&1 &&
  cmake --build $build -j "$(nproc)" >>"$out" 2>&1 || status=1
endsection
section "tests (ctest)"
ctest --test-dir $build --output-on-failure -j 4 >>"$out" 2>&1 || status=1
endsection
section "compute-sanitizer on the GPU tests"
for t in $build/tests/test_*; do
  [ -x "$t" ] || continue
  for tool in memcheck racecheck; do
    echo "### $tool $(basename "$t")" >>"$out"
    # Every test that needs a GPU has Gpu, Cuda or Graph in its name. DIFFSAMPLE_SANITIZER_RUN lets the largest
    # cases (2^24 particles) skip under the sanitizers, where they would take minutes; ctest above runs them.
    DIFFSAMPLE_SANITIZER_RUN=1 compute-sanitizer --tool $tool --error-exitcode 3 "$t" \
      --gtest_filter='*Gpu*:*Cuda*:*Graph*' --gtest_brief=1 >>"$out" 2>&1 ||
      status=1
  done
done
endsection
section "bench_langevin $chains chains, $steps steps"
$build/bench/bench_langevin "$chains" "$steps" >>"$out" 2>&1 || status=1
endsection
for b in $build/bench/bench_*; do
  [ "$(basename "$b")" = bench_langevin ] && continue
  [ -x "$b" ] || continue
  section "$(basename "$b")"
  "$b" >>"$out" 2>&1 || status=1
  endsection
done
section "PyTorch baselines"
for p in bench/torch_*.py; do
  [ "$(basename "$p")" = torch_common.py ] && continue
  python3 "$p" "$chains" 20 >>"$out" 2>&1 || status=1
done
endsection
echo "results: $out (status $status)"
exit $status
