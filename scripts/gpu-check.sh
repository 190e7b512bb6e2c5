#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs every test (GPU tests included), compute-sanitizer memcheck and racecheck on
# the GPU tests only, the benchmarks and the PyTorch baselines, and writes everything to a dated results file,
# bench/results/<UTC date>-<device>.md (and prints its path last).
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR] [--quick] [--out DIR] [chains] [steps]
#   --prebuilt DIR  use binaries built elsewhere instead of building here: DIR holds libdiffsample.so*, tests/ and
#                   bench/ as scripts/gpu-bundle.sh lays them out (build on a machine with the toolchain and test
#                   dependencies, carry DIR to the GPU machine; nothing is downloaded or installed here)
#   --quick         tests and sanitizers only (no benchmarks, no PyTorch baselines)
#   --out DIR       also copy the results file to DIR
#   chains, steps   bench_langevin's size (default 1048576 chains, 1000 steps)
# Without --prebuilt it configures and builds build-gpu/ for sm_90 (needs CMake, GoogleTest and nlohmann-json).
# Every tool is looked up first and the results file says which are missing and what was skipped for it. Each
# sanitizer run has a time limit (DIFFSAMPLE_SANITIZER_TIMEOUT seconds, default 300), each test binary and benchmark
# another (DIFFSAMPLE_RUN_TIMEOUT, default 600). The exit status is 0 only when everything that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f scripts/env.sh ] && source scripts/env.sh

prebuilt=""
quick=0
copy_to=""
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) copy_to=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) positional+=("$1"); shift ;;
  esac
done
chains=${positional[0]:-1048576}
steps=${positional[1]:-1000}
sanitizer_timeout=${DIFFSAMPLE_SANITIZER_TIMEOUT:-300}
run_timeout=${DIFFSAMPLE_RUN_TIMEOUT:-600}

have() { command -v "$1" >/dev/null 2>&1; }
if ! have nvidia-smi || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no GPU found (nvidia-smi missing or failing): nothing to check here, no results file written" >&2
  exit 1
fi
stamp=$(date -u +%Y-%m-%dT%H%M)
device=""
have nvidia-smi && device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-')
mkdir -p bench/results
out=bench/results/${stamp}-${device:-unknown}.md
section() { printf '\n## %s\n\n```\n' "$1" >>"$out"; }
endsection() { printf '```\n' >>"$out"; }
note() { echo "$@" | tee -a "$out"; }
status=0

{
  echo "# gpu-check $stamp"
  echo
  echo "- commit: $(git rev-parse HEAD 2>/dev/null || cat "${prebuilt:-.}/COMMIT" 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null)"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null)"
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  echo "- binaries: ${prebuilt:-built here in build-gpu}"
} >"$out"

# --- tools ------------------------------------------------------------------------------------------------------
section "tools"
have_timeout=0; have timeout && have_timeout=1
have_sanitizer=0; have compute-sanitizer && have_sanitizer=1
have_torch=0
have python3 && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1 &&
  have_torch=1
for tool in nvidia-smi timeout compute-sanitizer ncu python3 cmake nvcc; do
  if have "$tool"; then echo "found: $tool ($(command -v "$tool"))" >>"$out"; else echo "MISSING: $tool" >>"$out"; fi
done
[ $have_torch = 1 ] && echo "found: PyTorch with CUDA" >>"$out" || echo "MISSING: PyTorch with CUDA (baselines skipped)" >>"$out"
[ $have_sanitizer = 0 ] && echo "compute-sanitizer missing: sanitizer runs skipped" >>"$out"
[ $have_timeout = 0 ] && echo "timeout missing: runs are not time-limited" >>"$out"
endsection
limit() {  # limit SECONDS command...: run with a time limit when timeout exists
  local seconds=$1
  shift
  if [ $have_timeout = 1 ]; then timeout --kill-after=15 "$seconds" "$@"; else "$@"; fi
}

# --- binaries ---------------------------------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  [ -d "$prebuilt/tests" ] || { note "--prebuilt $prebuilt: no tests/ folder there"; exit 1; }
  bin=$(cd "$prebuilt" && pwd)
  export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  bin=build-gpu
  section "build (sm_90)"
  if have cmake && have nvcc; then
    cmake -S . -B $bin -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >>"$out" 2>&1 &&
      cmake --build $bin -j "$(nproc)" >>"$out" 2>&1 || status=1
  else
    echo "cmake or nvcc missing: cannot build here (use --prebuilt)" >>"$out"
    status=1
  fi
  endsection
  [ $status = 0 ] || { note "build failed: see $out"; exit 1; }
fi

# --- tests: every binary, all tests (CPU and GPU) ---------------------------------------------------------------
section "tests"
for t in "$bin"/tests/test_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  name=$(basename "$t")
  # test_cli drives the diffsample program through paths of the machine that built it: CPU-only, skipped here.
  if [ -n "$prebuilt" ] && [ "$name" = test_cli ]; then echo "### $name: skipped (paths of the build machine)"; continue; fi
  echo "### $name"
  limit "$run_timeout" "$t" --gtest_brief=1 2>&1 || { echo "FAILED: $name"; status=1; }
done >>"$out" 2>&1
endsection
grep -h "^\[  SKIPPED \]\|FAILED" "$out" | head -40

# --- the Python package's tests with PyTorch CUDA tensors (built against $bin's library) --------------------------
section "Python package (tests/python, PyTorch CUDA tensors)"
if [ $have_torch = 1 ] && python3 -c 'import nanobind, scikit_build_core, pytest' >/dev/null 2>&1; then
  { limit "$run_timeout" bash scripts/py-dev.sh "$bin" && limit "$run_timeout" python3 -m pytest -q -rs tests/python; } \
    >>"$out" 2>&1 || { echo "FAILED: tests/python" >>"$out"; status=1; }
else
  echo "skipped: needs PyTorch with CUDA, nanobind, scikit-build-core and pytest" >>"$out"
fi
endsection

# --- sanitizers: GPU tests only ---------------------------------------------------------------------------------
section "compute-sanitizer (memcheck, racecheck) on the GPU tests"
if [ $have_sanitizer = 1 ]; then
  for t in "$bin"/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    name=$(basename "$t")
    # Every test that needs a GPU has Gpu, Cuda or Graph in its name; binaries with none are not run at all.
    filter='*Gpu*:*Cuda*:*Graph*'
    listed=$("$t" --gtest_list_tests --gtest_filter="$filter" 2>/dev/null | grep -c '^  ')
    if [ "${listed:-0}" = 0 ]; then echo "### $name: no GPU tests, skipped"; continue; fi
    for tool in memcheck racecheck; do
      echo "### $tool $name ($listed tests, limit ${sanitizer_timeout}s)"
      # DIFFSAMPLE_SANITIZER_RUN lets the largest cases (2^24 particles) skip under the sanitizers.
      DIFFSAMPLE_SANITIZER_RUN=1 limit "$sanitizer_timeout" compute-sanitizer --tool $tool --error-exitcode 3 "$t" \
        --gtest_filter="$filter" --gtest_brief=1 2>&1
      rc=$?
      case $rc in
        0) ;;
        124|137) echo "TIMED OUT after ${sanitizer_timeout}s: $tool $name"; status=1 ;;
        *) echo "FAILED ($rc): $tool $name"; status=1 ;;
      esac
    done
  done >>"$out" 2>&1
else
  echo "skipped: compute-sanitizer not found" >>"$out"
fi
endsection

# --- benchmarks and baselines -----------------------------------------------------------------------------------
if [ $quick = 0 ]; then
  section "bench_langevin $chains chains, $steps steps"
  limit "$run_timeout" "$bin"/bench/bench_langevin "$chains" "$steps" >>"$out" 2>&1 || status=1
  endsection
  for b in "$bin"/bench/bench_*; do
    [ "$(basename "$b")" = bench_langevin ] && continue
    [ -x "$b" ] && [ -f "$b" ] || continue
    section "$(basename "$b")"
    limit "$run_timeout" "$b" >>"$out" 2>&1 || status=1
    endsection
  done
  section "PyTorch baselines"
  if [ $have_torch = 1 ]; then
    for p in bench/torch_*.py; do
      [ "$(basename "$p")" = torch_common.py ] && continue
      limit "$run_timeout" python3 "$p" "$chains" 20 >>"$out" 2>&1 || status=1
    done
  else
    echo "skipped: PyTorch with CUDA not found" >>"$out"
  fi
  endsection
fi

printf '\nstatus: %s\n' "$status" >>"$out"
[ -n "$copy_to" ] && mkdir -p "$copy_to" && cp "$out" "$copy_to/"
echo "results: $out (status $status)"
exit $status
