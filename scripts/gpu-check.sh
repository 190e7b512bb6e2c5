#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs the GPU tests (those scripts/gpu_tests.py finds: every test that calls
# DIFFSAMPLE_REQUIRE_GPU), compute-sanitizer on the GPU tests only (CPU-only tests never run under a sanitizer):
# memcheck on every program, racecheck and synccheck on those that run the block-cooperative kernels, initcheck, then
# racecheck and synccheck on the rest, within the sanitizers' share of the budget; then the MPI tests of CUDA ranks
# (tests/mpi/test_mpi's Mpi.*Cuda* under mpiexec -n 2, both ranks sharing the GPU on a machine of one; skipped, and
# said so, without test_mpi or mpiexec), the posterior accuracy table at solve's defaults on the CUDA executor
# (bench/posterior_table.py --executor cuda), the Python package's tests, the GEMM path's benchmark on the CUDA
# executor (bench_mixture_gemm cuda, cuda crossover, cuda operator, and bench/torch_mixture_gemm.py beside it), the
# scaling of distributed SMC with CUDA ranks (bench_mpi under mpiexec -n 1 and 2 on the one GPU), the benchmarks of
# the CUDA executor, Nsight Compute profiles of four kernels and the PyTorch baselines, in that order (correctness before figures: a first run's few minutes go to what a GPU alone can
# check), within a time budget, and writes
# everything to a dated results file, bench/results/<UTC date>-<device>.md (its path and a summary are printed last).
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR|ARCHIVE] [--quick] [--all-tests] [--out DIR] [chains] [steps]
#   --prebuilt DIR  use binaries built elsewhere instead of building here: DIR (or a .tar.gz / .tar.xz of it) holds
#                   libdiffsample.so*, tests/, bench/ and lib/ (the libraries the build machine had and a bare GPU
#                   machine may lack) as scripts/gpu-bundle.sh lays them out. Build where the toolchain and the test
#                   dependencies are, carry the bundle; nothing is downloaded or installed here. The CUDA runtime
#                   and cuBLAS come from this machine: its toolkit's folders, else Python's nvidia-* wheels' folders.
#   --quick         GPU tests, sanitizers and MPI tests only (no benchmarks, no baselines, no Python package)
#   --all-tests     also run the CPU-only tests (CI runs them on every commit; off by default to save GPU time)
#   --out DIR       also copy the results file to DIR, after every section (a run stopped from outside keeps what
#                   it got there)
#   chains, steps   bench_langevin's size (default 262144 chains, 200 steps)
# Without --prebuilt it configures and builds build-gpu/ for sm_90 (needs CMake, GoogleTest and nlohmann-json).
# Time: the whole check starts no run once DIFFSAMPLE_CHECK_BUDGET seconds (default 300) have passed and says what
# it skipped; every run has a limit as well, never beyond the budget's remainder: each test binary
# DIFFSAMPLE_RUN_TIMEOUT seconds (default 120), the MPI run DIFFSAMPLE_MPI_TIMEOUT (default 60), each benchmark
# DIFFSAMPLE_BENCH_TIMEOUT (default 45), each sanitizer run DIFFSAMPLE_SANITIZER_TIMEOUT (default 90), and the
# sanitizer runs together DIFFSAMPLE_SANITIZER_BUDGET (default 120); DIFFSAMPLE_SANITIZER_ONLY (tool:program globs, e.g.
# "memcheck:test_guided racecheck:*") keeps only the sanitizer runs it names; DIFFSAMPLE_CHECK_SKIP (a space-separated
# list of tests demo sanitizers mpi python gemm mpibench posterior benches profiles baselines) leaves those sections out;
# DIFFSAMPLE_TEST_PROGRAMS (globs) keeps only the test programs it names; DIFFSAMPLE_BENCHES names the benchmarks of the benchmark section (default all; "" none); the posterior table's limit
# is DIFFSAMPLE_POSTERIOR_TIMEOUT (default 150), its d_x values DIFFSAMPLE_POSTERIOR_DX (default 10,100), its seeds per instance DIFFSAMPLE_POSTERIOR_SEEDS (default 1); DIFFSAMPLE_GEMM_MODES the bench_mixture_gemm modes run, separated by
# "|" (default "cuda|cuda crossover|cuda operator"). The whole check ends within about the budget
# plus 15 s. Each section of the results file says how long it
# took. Every tool is looked up first; the results file says which are missing and what was skipped for it. Without
# a GPU (neither nvidia-smi nor PyTorch sees one) it writes the results file all the same, <UTC time>-no-GPU.md (to
# --out alone when given), with the tools and, with --prebuilt, the bundle's library check, builds and runs nothing
# else, and exits 2. Otherwise the exit status is 0 only when everything that ran passed and some GPU test passed.
#
# A lent GPU machine of the device tool (bare: no package downloads, no GoogleTest; it has nvcc, PyTorch,
# compute-sanitizer; the working tree and up to 8 carried ignored paths travel, 64 MiB in all), in one go:
#   1. here, in the root of the checkout that the tool sends, after a full build (cmake --build build -j2):
#        bash scripts/gpu-bundle.sh        # gpu-bundle.tar.xz, git-ignored: 14.6 MiB, beside 4.3 MiB of tracked
#                                          # files (measured at 0.4.0); it prints both sizes, keep the sum < 64 MiB
#   2. one call of the device tool's run:
#        command:   DIFFSAMPLE_CHECK_BUDGET=300 bash scripts/gpu-check.sh --prebuilt gpu-bundle.tar.xz --out "$OUT"
#        carry:     ["gpu-bundle.tar.xz"]
#        timeout_s: 360
#      The 15 minutes of device time cover the machine's start (1-2 min), this call (at most 6 min) and, if the
#      first call shows a script error, a rerun at once on the still-warm machine; otherwise give the machine back
#      right after. The results file comes back from $OUT: copy it into bench/results/ and commit it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ -f scripts/env.sh ] && source scripts/env.sh

prebuilt=""
quick=0
all_tests=0
copy_to=""
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --all-tests) all_tests=1; shift ;;
    --out) copy_to=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/{/^#/p}' "$0" | cut -c3-; exit 0 ;;
    *) positional+=("$1"); shift ;;
  esac
done
chains=${positional[0]:-262144}
steps=${positional[1]:-200}
budget=${DIFFSAMPLE_CHECK_BUDGET:-300}
sanitizer_timeout=${DIFFSAMPLE_SANITIZER_TIMEOUT:-90}
sanitizer_budget=${DIFFSAMPLE_SANITIZER_BUDGET:-120}
run_timeout=${DIFFSAMPLE_RUN_TIMEOUT:-120}
bench_timeout=${DIFFSAMPLE_BENCH_TIMEOUT:-45}
mpi_timeout=${DIFFSAMPLE_MPI_TIMEOUT:-60}
# The benchmarks that time the CUDA executor (the others time the CPU executor or need mpirun).
gpu_benches="bench_langevin bench_diffusion bench_binary bench_plan bench_smc"
# Benchmarks run in their own sections with their own arguments (scripts/gpu-bundle.sh carries these too).
gpu_bench_extra="bench_mixture_gemm bench_mpi"
# The benchmarks this run times (default all of gpu_benches; e.g. "bench_smc" to rerun one): DIFFSAMPLE_BENCHES.
run_benches=${DIFFSAMPLE_BENCHES-$gpu_benches}
# Sections left out of this run (a run's minutes go to what the previous one did not reach), any of: tests demo
# sanitizers mpi python gemm mpibench posterior benches baselines.
skip_sections=" ${DIFFSAMPLE_CHECK_SKIP:-} "
skipping() { case "$skip_sections" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
SECONDS=0

have() { command -v "$1" >/dev/null 2>&1; }
# nvidia-smi's answer to a query, only where it succeeded with one.
smi() { local o; o=$(nvidia-smi "$@" 2>/dev/null) && [ -n "$o" ] && echo "$o"; }
# A GPU: nvidia-smi lists one, or (no nvidia-smi, or it lists none) PyTorch sees one.
gpu_name=""
if have nvidia-smi; then
  # A failing nvidia-smi prints its reason on stdout ("No devices were found"): only its success names a GPU.
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) || gpu_name=""
fi
if [ -z "$gpu_name" ] && have python3; then
  gpu_name=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' \
    2>/dev/null)
fi
# Without one the check still writes its results file (the tools, and with --prebuilt the bundle's library check,
# which need no GPU), runs nothing else and exits 2: a call on a machine whose GPU is not seen comes back with the
# reason rather than with nothing.
no_gpu_reason=""
if [ -z "$gpu_name" ]; then
  no_gpu_reason="no GPU found (nvidia-smi $(have nvidia-smi && echo "lists none" || echo "missing"), and PyTorch sees none)"
  echo "gpu-check: $no_gpu_reason: nothing runs but the tools and the bundle's library check" >&2
fi

# --- binaries: a bundle (folder or archive) or a build here ---------------------------------------------------
unpacked=""
# The unpacked bundle goes when the check ends, also when it is stopped (TERM from a time limit, INT).
tmp_out=""
trap '[ -n "$unpacked" ] && rm -rf "$unpacked"; [ -n "$tmp_out" ] && rm -rf "$tmp_out"' EXIT
trap 'exit 143' TERM INT
if [ -n "$prebuilt" ] && [ -f "$prebuilt" ]; then
  unpacked=$(mktemp -d)
  # tar needs xz for a .tar.xz; Python's tarfile unpacks it without (lzma is in the standard library).
  tar -xf "$prebuilt" -C "$unpacked" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$prebuilt" "$unpacked" ||
    { echo "gpu-check: cannot unpack $prebuilt (neither tar nor Python's tarfile)" >&2; exit 1; }
  prebuilt=$(find "$unpacked" -maxdepth 2 -name tests -type d | head -1 | xargs -r dirname)
  [ -n "$prebuilt" ] || { echo "gpu-check: no tests/ folder in the archive" >&2; exit 1; }
fi

stamp=$(date -u +%Y-%m-%dT%H%M)
if [ -n "$no_gpu_reason" ] && [ -n "$copy_to" ]; then
  # No GPU: the file goes to --out alone, not into bench/results/ (which keeps the GPU runs).
  tmp_out=$(mktemp -d)
  out=$tmp_out/${stamp}-no-GPU.md
else
  mkdir -p bench/results
  out=bench/results/${stamp}-$(echo "${gpu_name:-no GPU}" | tr ' /' '--').md
fi
# Each section says how long it took (for sizing the next run); with --out the results file is copied there after
# every section, so that a run stopped from outside (a device call's own time limit) still leaves what it got.
section_start=0
section() { section_start=$SECONDS; printf '\n## %s\n\n```\n' "$1" >>"$out"; }
endsection() {
  printf '```\n(%s s; %s s since the start)\n' "$((SECONDS - section_start))" "$SECONDS" >>"$out"
  save
}
save() { if [ -n "$copy_to" ]; then mkdir -p "$copy_to" && cp "$out" "$copy_to/" 2>/dev/null; fi; return 0; }
note() { echo "$@" | tee -a "$out"; }
status=0
summary=()
remaining() { echo $((budget - SECONDS)); }
# limit SECONDS command...: run with the smaller of SECONDS and the budget's remainder (timeout exit 124 / 137).
limit() {
  local seconds=$1
  shift
  local left
  left=$(remaining)
  [ "$left" -lt "$seconds" ] && seconds=$left
  [ "$seconds" -lt 1 ] && return 124
  if [ $have_timeout = 1 ]; then timeout --kill-after=10 "$seconds" "$@"; else "$@"; fi
}
over_budget() { [ "$(remaining)" -lt 5 ]; }

{
  echo "# gpu-check $stamp"
  echo
  echo "- commit: $(cat "${prebuilt:-/nonexistent}/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "- device: $(smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || echo "${gpu_name:-$no_gpu_reason}")"
  echo "- driver: $(smi --query-gpu=driver_version --format=csv,noheader || echo unknown)"
  echo "- nvcc: $(have nvcc && nvcc --version 2>/dev/null | tail -1 || echo missing)"
  echo "- binaries: ${prebuilt:-built here in build-gpu}"
  echo "- budget: ${budget} s; limits: ${run_timeout} s per test binary, ${mpi_timeout} s for the MPI run," \
    "${bench_timeout} s per benchmark, ${sanitizer_timeout} s per sanitizer run, ${sanitizer_budget} s for all of them"
} >"$out"

# --- tools ------------------------------------------------------------------------------------------------------
section "tools"
have_timeout=0; have timeout && have_timeout=1
# compute-sanitizer: on PATH, else where a toolkit or Python's CUDA wheels keep it (a toolkit's bin/ need not be on
# PATH beside an nvcc that is, and the wheel nvidia-cuda-sanitizer-api puts it under site-packages).
sanitizer=$(command -v compute-sanitizer 2>/dev/null)
if [ -z "$sanitizer" ]; then
  for candidate in ${CUDA_HOME:+"$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer"} \
    $(have nvcc && echo "$(dirname "$(command -v nvcc)")/compute-sanitizer") \
    /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
    /usr/local/cuda-1*/bin/compute-sanitizer /usr/local/cuda-1*/compute-sanitizer/compute-sanitizer \
    $(have python3 && python3 -c 'import site, glob
for p in site.getsitepackages(): print(*sorted(glob.glob(p + "/nvidia/cuda_sanitizer_api/compute-sanitizer/compute-sanitizer")))' \
      2>/dev/null); do
    if [ -x "$candidate" ] && [ -f "$candidate" ]; then sanitizer=$candidate; break; fi
  done
fi
have_sanitizer=0; [ -n "$sanitizer" ] && have_sanitizer=1
have_torch=0
have python3 && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1 &&
  have_torch=1
for tool in nvidia-smi timeout ncu python3 cmake nvcc tar xz ldd; do
  if have "$tool"; then echo "found: $tool ($(command -v "$tool"))" >>"$out"; else echo "MISSING: $tool" >>"$out"; fi
done
[ $have_sanitizer = 1 ] && echo "found: compute-sanitizer ($sanitizer)" >>"$out" || echo "MISSING: compute-sanitizer" >>"$out"
[ $have_torch = 1 ] && echo "found: PyTorch with CUDA" >>"$out" || echo "MISSING: PyTorch with CUDA (baselines skipped)" >>"$out"
[ $have_sanitizer = 0 ] && echo "compute-sanitizer missing: sanitizer runs skipped" >>"$out"
[ $have_timeout = 0 ] && echo "timeout missing: runs are not time-limited (the budget is still checked between runs)" >>"$out"
endsection

mpi_libs=""
# LD_LIBRARY_PATH for a program of the bundle: with lib/mpi/ after the rest for the MPI programs.
mpi_library_path() {
  case "$(basename "$1")" in
    test_mpi*|libdiffsample_mpi*|diffsample|bench_mpi*) echo "${LD_LIBRARY_PATH:-}${mpi_libs:+:$mpi_libs}" ;;
    *) echo "${LD_LIBRARY_PATH:-}" ;;
  esac
}
if [ -n "$prebuilt" ]; then
  [ -d "$prebuilt/tests" ] || { note "--prebuilt $prebuilt: no tests/ folder there"; exit 1; }
  bin=$(cd "$prebuilt" && pwd)
  # The bundle's own libraries first, then this machine's CUDA runtime and cuBLAS (not bundled): the toolkit's
  # folders, and where those lack them, the folders of Python's CUDA wheels (PyTorch's nvidia-* packages). lib/mpi/
  # (what only the MPI programs load: Open MPI, hwloc, zlib ...) goes to the MPI run alone (mpi_library_path).
  export LD_LIBRARY_PATH="$bin:$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  [ -d "$bin/lib/mpi" ] && mpi_libs="$bin/lib/mpi"
  add_library_dir() {  # appends a folder once (by its real path)
    local dir
    dir=$(readlink -f "$1" 2>/dev/null) && [ -d "$dir" ] || return 0
    case ":$LD_LIBRARY_PATH:" in *":$dir:"*) ;; *) export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$dir" ;; esac
  }
  cuda_roots=()
  have nvcc && cuda_roots+=("$(dirname "$(dirname "$(command -v nvcc)")")")
  for root in ${CUDA_HOME:-} /usr/local/cuda /usr/local/cuda-13*; do [ -d "$root" ] && cuda_roots+=("$root"); done
  for root in ${cuda_roots[@]+"${cuda_roots[@]}"}; do
    for dir in "$root/lib64" "$root/lib" "$root/targets/x86_64-linux/lib"; do add_library_dir "$dir"; done
  done
  library_missing() {
    for f in "$bin"/libdiffsample.so.* "$bin"/libdiffsample_mpi.so.* "$bin"/diffsample "$bin"/tests/test_* \
      "$bin"/bench/bench_*; do
      [ -f "$f" ] && LD_LIBRARY_PATH="$(mpi_library_path "$f")" ldd "$f" 2>/dev/null
    done | grep "not found" | sort -u
  }
  if have ldd && have python3 && [ -n "$(library_missing)" ]; then
    for dir in $(python3 -c 'import site, glob
for p in site.getsitepackages(): print(*sorted(glob.glob(p + "/nvidia/*/lib")))' 2>/dev/null); do
      add_library_dir "$dir"
    done
  fi
  section "shared libraries the binaries need"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$out"
  missing=$(have ldd && library_missing)
  if ! have ldd; then
    echo "not checked: ldd missing (a binary that lacks a library fails when it runs)" >>"$out"
  elif [ -n "$missing" ]; then
    echo "$missing" >>"$out"
    note "gpu-check: libraries not found (add them to the bundle's lib/): $(echo "$missing" | awk '{print $1}' | xargs)"
    status=1
  else
    echo "all found" >>"$out"
  fi
  endsection
elif [ -n "$no_gpu_reason" ]; then
  bin=build-gpu  # nothing is built without a GPU
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

if [ -n "$no_gpu_reason" ]; then
  {
    printf '\n## summary\n\n- %s: no tests, benchmarks, sanitizers or baselines run%s\n' "$no_gpu_reason" \
      "$([ -n "$prebuilt" ] && echo " (the bundle's library check above did run)")"
    printf '\nstatus: 2 (no GPU) after %s s\n' "$SECONDS"
  } >>"$out"
  save
  shown=$out
  [ -n "$tmp_out" ] && shown=$copy_to/$(basename "$out")
  echo "gpu-check: $no_gpu_reason; results: $shown (status 2, ${SECONDS} s)"
  exit 2
fi

# The GPU tests, read from the sources (tests/ travels with the repository); a name pattern if python3 is missing.
if have python3 && [ -f scripts/gpu_tests.py ]; then
  gpu_filter=$(python3 scripts/gpu_tests.py tests)
else
  gpu_filter='*Gpu*:*Cuda*:*Graph*:*Captured*'
fi
[ -n "$gpu_filter" ] || gpu_filter='*Gpu*:*Cuda*:*Graph*:*Captured*'

# --- tests ------------------------------------------------------------------------------------------------------
# Each binary with the filter given; prints its tests' count ("0" when it has none).
# Listing is quick, but a program that cannot start (test_mpi's MPI_Init on a machine without its MPI) may hang.
count_tests() { limit 30 "$1" --gtest_list_tests --gtest_filter="$2" 2>/dev/null | grep -c '^  '; }
run_tests() {  # run_tests TITLE FILTER
  local title=$1 filter=$2 failed=0 ran=0 log
  log=$(mktemp)
  section "$title"
  for t in "$bin"/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    local name
    name=$(basename "$t")
    # test_cli drives the diffsample program through the build machine's paths; its GPU test needs the program.
    if [ -n "$prebuilt" ] && [ "$name" = test_cli ]; then echo "### $name: skipped (paths of the build machine)"; continue; fi
    # The MPI programs run under mpiexec in their own section (alone, MPI_Init may hang where there is no MPI).
    case "$name" in test_mpi*) continue ;; esac
    # DIFFSAMPLE_TEST_PROGRAMS (space-separated globs): only the programs it names.
    if [ -n "${DIFFSAMPLE_TEST_PROGRAMS:-}" ]; then
      local keep=0 pattern
      for pattern in $DIFFSAMPLE_TEST_PROGRAMS; do
        # shellcheck disable=SC2053  # a glob on purpose
        [[ $name == $pattern ]] && keep=1
      done
      [ $keep = 1 ] || continue
    fi
    [ "$(count_tests "$t" "$filter")" = 0 ] && continue
    if over_budget; then echo "### $name: skipped (time budget spent)"; failed=1; continue; fi
    echo "### $name"
    limit "$run_timeout" "$t" --gtest_filter="$filter" --gtest_brief=1 >"$log" 2>&1
    local rc=$?
    cat "$log"
    # gtest's closing lines: "[  PASSED  ] N tests." and "[  SKIPPED ] N tests" (brief mode keeps them).
    passed_tests=$((passed_tests + $(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1 | grep . || echo 0)))
    skipped_tests=$((skipped_tests + $(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1 | grep . || echo 0)))
    case $rc in
      0) ran=$((ran + 1)) ;;
      124|137) echo "TIMED OUT: $name"; failed=1 ;;
      *) echo "FAILED: $name"; failed=1 ;;
    esac
  done >>"$out" 2>&1
  rm -f "$log"
  endsection
  # A test that skipped did not pass: the summary counts both, and a run where nothing passed is not a pass.
  if [ $failed != 0 ]; then
    summary+=("$title: FAILED or cut short ($passed_tests tests passed, $skipped_tests skipped)"); status=1
  elif [ $passed_tests = 0 ]; then
    summary+=("$title: NOTHING PASSED ($ran binaries, $skipped_tests tests skipped: see the file for why)"); status=1
  else
    summary+=("$title: passed ($ran binaries: $passed_tests tests passed, $skipped_tests skipped)")
  fi
}
passed_tests=0 skipped_tests=0
skipping tests || run_tests "GPU tests" "$gpu_filter"
# --- the main job: the diffsample program's demo (README's first command) on the GPU -------------------------------
if skipping demo; then :; else
section "diffsample demo (the program's main job, CUDA executor)"
if [ ! -x "$bin/diffsample" ]; then
  echo "skipped: no $bin/diffsample" >>"$out"
  summary+=("diffsample demo: SKIPPED (no program in the binaries)")
elif over_budget; then
  echo "skipped (time budget spent)" >>"$out"; summary+=("diffsample demo: SKIPPED (time budget spent)"); status=1
else
  LD_LIBRARY_PATH="$(mpi_library_path diffsample)" limit 60 "$bin/diffsample" >>"$out" 2>&1
  rc=$?
  if [ $rc = 0 ]; then summary+=("diffsample demo: ran (see the file)"); else
    echo "FAILED ($rc): diffsample" >>"$out"; summary+=("diffsample demo: FAILED ($rc)"); status=1; fi
fi
endsection
fi
grep -h "^\[  SKIPPED \]\|FAILED\|TIMED OUT" "$out" | head -40
# --- sanitizers: the GPU tests only, within their own share of the budget -------------------------------------------
if skipping sanitizers; then :; else
section "compute-sanitizer (memcheck, racecheck, synccheck, initcheck) on the GPU tests"
if [ $have_sanitizer = 1 ]; then
  sanitized=0 sanitizer_failed=0 sanitizer_passed=0 sanitizer_skipped=0 cut=0 unsupported=0
  sanitizer_start=$SECONDS
  log=$(mktemp)
  # The programs with GPU tests, and how many each has, listed once.
  targets=()
  for t in "$bin"/tests/test_*; do
    over_budget && { cut=1; break; }
    [ -x "$t" ] && [ -f "$t" ] && [ "$(basename "$t")" != test_cli ] || continue
    case "$(basename "$t")" in test_mpi*) continue ;; esac
    listed=$(count_tests "$t" "$gpu_filter")
    [ "${listed:-0}" = 0 ] || targets+=("$listed:$t")
  done
  # The runs, most informative first, until the sanitizers' share of the budget is spent: memcheck on every program
  # (out-of-bounds and misaligned accesses, failed API calls); racecheck and synccheck, which look only at shared
  # memory and barriers, first on the programs whose GPU tests run the block-cooperative kernels (the resampling
  # passes' CUB block reductions and scans, the sliced Wasserstein block sum, the chain kernels' staged tables);
  # initcheck (reads of device memory never written: workspace taken as zeroed) on every program; then racecheck and
  # synccheck on the rest (their kernels' shared memory is per-thread scratch).
  shared_first=" test_particles test_metrics test_langevin test_diffusion "
  api_errors_planted=" test_validation test_host_staging test_workspace "
  runs=()
  for target in ${targets[@]+"${targets[@]}"}; do runs+=("memcheck:$target"); done
  for tool in racecheck synccheck; do
    for target in ${targets[@]+"${targets[@]}"}; do
      case "$shared_first" in *" $(basename "${target#*:}") "*) runs+=("$tool:$target") ;; esac
    done
  done
  for target in ${targets[@]+"${targets[@]}"}; do runs+=("initcheck:$target"); done
  for tool in racecheck synccheck; do
    for target in ${targets[@]+"${targets[@]}"}; do
      case "$shared_first" in *" $(basename "${target#*:}") "*) ;; *) runs+=("$tool:$target") ;; esac
    done
  done
  # DIFFSAMPLE_SANITIZER_ONLY: a space-separated list of tool:program patterns (shell globs, e.g.
  # "memcheck:test_guided* racecheck:*"): the runs left out are said so (for a rerun that covers what an earlier one
  # did not reach).
  if [ -n "${DIFFSAMPLE_SANITIZER_ONLY:-}" ]; then
    kept=()
    for run in ${runs[@]+"${runs[@]}"}; do
      key="${run%%:*}:$(basename "${run##*:}")" match=0
      for pattern in $DIFFSAMPLE_SANITIZER_ONLY; do
        # shellcheck disable=SC2254
        case "$key" in $pattern) match=1 ;; esac
      done
      [ $match = 1 ] && kept+=("$run")
    done
    echo "### DIFFSAMPLE_SANITIZER_ONLY=\"$DIFFSAMPLE_SANITIZER_ONLY\": ${#kept[@]} of ${#runs[@]} runs" >>"$out"
    runs=(${kept[@]+"${kept[@]}"})
  fi
  left=${#runs[@]}
  for run in ${runs[@]+"${runs[@]}"}; do
    tool=${run%%:*} target=${run#*:}
    listed=${target%%:*} t=${target#*:}
    name=$(basename "$t")
    if over_budget || [ $((SECONDS - sanitizer_start)) -ge "$sanitizer_budget" ]; then
      echo "### $tool $name and the $((left - 1)) runs after it: skipped (the sanitizers' ${sanitizer_budget} s or the whole budget spent)"
      cut=1
      break
    fi
    left=$((left - 1))
    echo "### $tool $name ($listed tests, limit ${sanitizer_timeout}s)"
    # DIFFSAMPLE_SANITIZER_RUN lets the largest cases skip under the sanitizers (resample's 2^24 particles, the
    # d = 100 posterior test's 8 x 8192 particles over 500 steps: DIFFSAMPLE_SKIP_UNDER_SANITIZER).
    # The programs whose tests make CUDA calls fail on purpose (a refused cudaMalloc left pending, the capture
    # probes of the host-staging refusals, an allocation sized to fail) run without the reports of failed API calls,
    # which the tests check themselves; memory errors are reported as everywhere.
    api_errors=()
    case "$api_errors_planted" in *" $name "*) api_errors=(--report-api-errors no) ;; esac
    # Each run within what is left of the sanitizers' share (a run started late ran up to a whole limit past it).
    share_left=$((sanitizer_budget - (SECONDS - sanitizer_start)))
    run_limit=$((share_left < sanitizer_timeout ? share_left : sanitizer_timeout))
    DIFFSAMPLE_SANITIZER_RUN=1 limit "$run_limit" "$sanitizer" --tool "$tool" --error-exitcode 3 \
      ${api_errors[@]+"${api_errors[@]}"} --print-limit 20 "$t" --gtest_filter="$gpu_filter" --gtest_brief=1 >"$log" 2>&1
    rc=$?
    cat "$log"
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1 | grep . || echo 0)
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1 | grep . || echo 0)
    sanitizer_passed=$((sanitizer_passed + passed)) sanitizer_skipped=$((sanitizer_skipped + skipped))
    # compute-sanitizer refuses some machines' devices outright (seen under gVisor): no use trying the rest.
    if grep -q "Device not supported" "$log"; then
      echo "compute-sanitizer: device not supported on this machine; no further sanitizer runs"
      unsupported=1
      break
    fi
    case $rc in
      0) sanitized=$((sanitized + 1)) ;;
      124|137)
        if [ "$run_limit" -lt "$sanitizer_timeout" ]; then
          echo "CUT by the sanitizers' ${sanitizer_budget} s share: $tool $name"; cut=1
        else
          echo "TIMED OUT after the limit: $tool $name"; sanitizer_failed=1
        fi ;;
      *) echo "FAILED ($rc): $tool $name"; sanitizer_failed=1 ;;
    esac
  done >>"$out" 2>&1
  rm -f "$log"
  # A run whose tests all skipped exits 0 without checking anything: only runs with passing tests count as clean.
  if [ $unsupported = 1 ]; then
    summary+=("compute-sanitizer: UNSUPPORTED on this machine's device (nothing checked)")
  elif [ $sanitizer_failed = 1 ]; then
    summary+=("compute-sanitizer: FAILED or timed out ($sanitized runs exited 0; see the file)"); status=1
  elif [ $sanitizer_passed = 0 ]; then
    summary+=("compute-sanitizer: NOTHING CHECKED ($sanitized runs exited 0, $sanitizer_skipped tests skipped$(
      [ $cut = 1 ] && echo "; cut by the time budget"))"); status=1
  else
    line="compute-sanitizer: $sanitized runs clean, $sanitizer_passed tests passed under it, $sanitizer_skipped skipped"
    summary+=("$line$([ $cut = 1 ] && echo "; the rest cut by the time budget")")
  fi
else
  echo "skipped: compute-sanitizer not found" >>"$out"
  summary+=("compute-sanitizer: MISSING, skipped")
fi
endsection
fi

if [ $all_tests = 1 ]; then passed_tests=0 skipped_tests=0; run_tests "CPU-only tests" "-$gpu_filter"; fi

# --- the MPI tests of CUDA ranks: test_mpi under mpiexec with 2 ranks (mpi::rank_execution gives each its device:
# local rank mod the devices, so both share the GPU of a one-GPU machine) -------------------------------------------
mpi_title="MPI CUDA-rank tests (mpiexec -n 2)"
mpi_filter='Mpi.*Cuda*'
mpi_flags=()
# Open MPI: more ranks than cores, and root in containers.
have mpiexec && mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE" && mpi_flags=(--oversubscribe --allow-run-as-root)
if skipping mpi; then :; else
section "$mpi_title"
if [ ! -x "$bin/tests/test_mpi" ]; then
  echo "skipped: no $bin/tests/test_mpi (built without MPI)" >>"$out"
  summary+=("$mpi_title: SKIPPED (no test_mpi: built without MPI)")
elif ! have mpiexec; then
  echo "skipped: mpiexec missing (Debian: openmpi-bin)" >>"$out"
  summary+=("$mpi_title: SKIPPED (mpiexec missing)")
elif ldd "$bin/tests/test_mpi" 2>/dev/null | grep -q 'libmpi\.so\.40' &&
  ! mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  # A bundle's test_mpi is built against Open MPI (libmpi.so.40): another MPI's mpiexec would start two singletons.
  echo "skipped: test_mpi is built against Open MPI and this mpiexec is not Open MPI's ($(mpiexec --version 2>&1 |
    head -1))" >>"$out"
  summary+=("$mpi_title: SKIPPED (mpiexec is not Open MPI's)")
elif over_budget; then
  echo "skipped (time budget spent)" >>"$out"
  summary+=("$mpi_title: SKIPPED (time budget spent)"); status=1
else
  mpi_log=$(mktemp)
  OMP_NUM_THREADS=1 LD_LIBRARY_PATH="$(mpi_library_path test_mpi)" limit "$mpi_timeout" mpiexec \
    ${mpi_flags[@]+"${mpi_flags[@]}"} -n 2 "$bin/tests/test_mpi" \
    --gtest_filter="$mpi_filter" --gtest_brief=1 --gtest_color=no >"$mpi_log" 2>&1
  rc=$?
  cat "$mpi_log" >>"$out"
  # Each rank prints gtest's closing lines; the first rank's to finish is as good as any (every rank's verdict is
  # the job's exit status).
  mpi_passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$mpi_log" | head -1 | grep . || echo 0)
  mpi_skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$mpi_log" | head -1 | grep . || echo 0)
  rm -f "$mpi_log"
  case $rc in
    0)
      if [ "$mpi_passed" = 0 ]; then
        summary+=("$mpi_title: NOTHING PASSED ($mpi_skipped tests skipped: see the file for why)"); status=1
      else
        summary+=("$mpi_title: passed ($mpi_passed tests passed, $mpi_skipped skipped, per rank)")
      fi ;;
    124|137) echo "TIMED OUT: mpiexec -n 2 test_mpi" >>"$out"; summary+=("$mpi_title: TIMED OUT"); status=1 ;;
    *) echo "FAILED ($rc): mpiexec -n 2 test_mpi" >>"$out"; summary+=("$mpi_title: FAILED ($rc)"); status=1 ;;
  esac
fi
endsection
fi

# --- posterior accuracy at solve's default settings on the CUDA executor (the CPU rows are README's) --------------
if [ $quick = 0 ] && ! skipping posterior; then
  section "posterior accuracy, CUDA executor (posterior_table.py --default-settings --samplers smc --executor cuda)"
  if [ ! -x "$bin/diffsample" ]; then
    echo "skipped: no $bin/diffsample" >>"$out"; summary+=("posterior table: SKIPPED (no program)")
  elif over_budget; then
    echo "skipped (time budget spent)" >>"$out"; summary+=("posterior table: SKIPPED (time budget spent)")
  else
    PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 LD_LIBRARY_PATH="$(mpi_library_path diffsample)" \
      limit "${DIFFSAMPLE_POSTERIOR_TIMEOUT:-150}" python3 bench/posterior_table.py --build "$bin" --default-settings \
      --samplers smc --executor cuda --dx "${DIFFSAMPLE_POSTERIOR_DX:-10,100}" --dy 1 \
      --seeds "${DIFFSAMPLE_POSTERIOR_SEEDS:-1}" --worst-seeds 8 >>"$out" 2>&1
    rc=$?
    case $rc in
      0) summary+=("posterior table: ran (see the file)") ;;
      124|137) echo "TIMED OUT" >>"$out"; summary+=("posterior table: TIMED OUT (the rows printed are in the file)"); status=1 ;;
      *) echo "FAILED ($rc)" >>"$out"; summary+=("posterior table: FAILED ($rc)"); status=1 ;;
    esac
  fi
  endsection
fi

# --- the Python package's tests (before the benchmarks: correctness first; about a minute) ------------------------
if [ $quick = 0 ] && ! skipping python; then
  # pytest-xdist where it is there: the CPU-only tests spread over the machine's cores.
  xdist=()
  python3 -c 'import xdist' >/dev/null 2>&1 && xdist=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))")
  tmp_probe=$(mktemp)
  section "Python package (tests/python, PyTorch CUDA tensors)"
  if over_budget; then
    echo "skipped (time budget spent)" >>"$out"
    summary+=("Python package: skipped (time budget spent)")
  elif [ $have_torch = 1 ] && python3 -c 'import nanobind, scikit_build_core, pytest' >/dev/null 2>&1; then
    python3 -c 'import sys, importlib
v = []
for m in ("numpy", "nanobind", "scikit_build_core", "torch", "jax", "jaxlib", "pytest"):
    try: v.append(m + " " + importlib.import_module(m).__version__)
    except Exception as e: v.append(m + " (" + type(e).__name__ + ")")
print("Python " + sys.version.split()[0] + ": " + ", ".join(v))' >>"$out" 2>&1
    echo "compiler: $(c++ --version 2>/dev/null | head -1); its libstdc++.so: $(c++ -print-file-name=libstdc++.so 2>&1);" \
      "LDFLAGS='${LDFLAGS:-}' CXXFLAGS='${CXXFLAGS:-}'" >>"$out"
    # Probes, each in its own process: a mixture made (an array read by the extension) alone, after importing
    # PyTorch, after importing JAX, and both, and with the bundle's lib/ (the build machine's OpenMP runtime and
    # OpenBLAS) off the library path; a crash of the suite's workers (first seen on an H200: every worker's first
    # array read ended in a segmentation fault) shows here which import or which build brings it.
    probe='import diffsample as ds; m = ds.GaussianMixture([1.0, 2.0], [[0.0, 1.0], [2.0, 0.5]], [1.0, 0.5]); print(m.dim)'
    probes() {
      local first rc
      for first in "" "import torch; " "import jax; " "import torch, jax; "; do
        limit 60 python3 -X faulthandler -c "$first$probe" >/dev/null 2>"$tmp_probe"
        rc=$?
        echo "probe (${first:-diffsample alone}): exit $rc$([ $rc != 0 ] && echo ": $(tail -3 "$tmp_probe" | tr '\n' ' ')")" >>"$out"
      done
      LD_LIBRARY_PATH=$(echo ":${LD_LIBRARY_PATH:-}:" | sed "s|:$bin/lib:|:|; s|^:||; s|:$||") limit 60 python3 -X faulthandler \
        -c "import torch, jax; $probe" >/dev/null 2>"$tmp_probe"
      rc=$?
      echo "probe (import torch, jax; without $bin/lib): exit $rc$([ $rc != 0 ] && echo ": $(tail -3 "$tmp_probe" | tr '\n' ' ')")" >>"$out"
    }
    # Built against the bundle with the machine's nanobind (line tables kept for a backtrace).
    built=0
    echo "### built with the machine's nanobind $(python3 -c 'import nanobind; print(nanobind.__version__)' 2>&1 | tail -1)" >>"$out"
    if DIFFSAMPLE_PY_BUILD_TYPE=${DIFFSAMPLE_PY_BUILD_TYPE:-RelWithDebInfo} limit "$run_timeout" bash scripts/py-dev.sh "$bin" \
      >>"$out" 2>&1; then built=1; probes; fi
    here_crashed=0
    grep -qE "^probe \(.*\): exit (12[4-9]|1[3-9][0-9]|2[0-9][0-9])" <(sed -n '/### built with the machine/,$p' "$out") && here_crashed=1
    if [ $built = 1 ] && grep -q "^probe (diffsample alone): exit [1-9]" "$out" && have cuda-gdb && ! over_budget; then
      # The native backtrace of the crash (cuda-gdb debugs host code too; the build above keeps line tables).
      echo "### cuda-gdb backtrace of the probe alone (extension built here, $(python3 -c 'import nanobind; print("nanobind", nanobind.__version__)' 2>&1 | tail -1))" >>"$out"
      limit 60 cuda-gdb -q -batch -ex run -ex "bt 40" -ex "info registers rip" -ex "x/6i \$pc" --args python3 -c "$probe" 2>&1 |
        grep -v "^\[New Thread\|^\[Thread \|^\[Inferior\|^warning: " | tail -70 >>"$out"
    fi
    # A wheel of the extension built on the build machine (its compiler and this Python's minor version), carried in
    # .whl/: the probes and the suite with it, installed into a folder of this run first on PYTHONPATH. Where the
    # extension built here crashes and that one does not, the difference is this machine's compiler or flags.
    if ls .whl/diffsample-*.whl >/dev/null 2>&1 && ! over_budget; then
      ds_site=$(mktemp -d)
      if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$ds_site" .whl/diffsample-*.whl \
        >>"$out" 2>&1; then
        echo "### the carried wheel $(basename .whl/diffsample-*.whl) (built on the build machine)" >>"$out"
        PYTHONPATH="$ds_site${PYTHONPATH:+:$PYTHONPATH}" probes
        # The suite runs with the carried wheel only where the extension built here failed or crashed: the one
        # built on this machine is what `pip install .` gives its users.
        if ! grep -qE "^probe \(.*\): exit (12[4-9]|1[3-9][0-9]|2[0-9][0-9])" <(sed -n '/### the carried wheel/,$p' "$out") &&
           { [ $built = 0 ] || [ $here_crashed = 1 ]; }; then
          export PYTHONPATH="$ds_site${PYTHONPATH:+:$PYTHONPATH}"
          echo "(the suite runs with the carried wheel)" >>"$out"
          built=2
        fi
      fi
    fi
    # The suite with an extension whose probes all passed (a crashing one would crash every test's process).
    if [ $built = 1 ] && [ $here_crashed = 1 ]; then
      echo "FAILED: the probes crashed with every build tried: the suite is not run" >>"$out"; status=1
      summary+=("Python package: FAILED (the probes crashed; see the file)")
    elif [ $built != 0 ]; then
      if limit "$run_timeout" python3 -m pytest -q -rs ${xdist[@]+"${xdist[@]}"} tests/python >>"$out" 2>&1; then
        summary+=("Python package: tests passed (see the file for skips)")
      else
        echo "FAILED: tests/python" >>"$out"; status=1
        summary+=("Python package: FAILED or timed out")
        # Where a crash happened in native code: the first test file again in one process under cuda-gdb (it
        # debugs host code as well), for the native backtrace.
        # (a native crash's backtrace: the probe's, above)
      fi
      # nanobind's leak report at exit (seen in every worker of the suite on an H200, not on the build machine): which
      # step of a CUDA session leaves the extension's objects alive at shutdown, each in its own process.
      if ! over_budget; then
        echo "### nanobind leak report at exit, by what the process did" >>"$out"
        for leak_case in "import torch, diffsample as ds" \
          "import torch, diffsample as ds; torch.zeros(1, device='cuda')" \
          "import torch, diffsample as ds; m = ds.GaussianMixture.grid(2, 5, 8.0, 1.0); m.score(torch.randn(64, 2, device='cuda'), 1.0, 0.5); torch.cuda.synchronize()" \
          "import torch, diffsample as ds; s = ds.NoiseSchedule.vp_linear(); p = ds.SamplingPlan.diffusion(64, 2, sampler='ddpm', steps=3, seed=5, device='cuda', like=torch.zeros(1, device='cuda')); print(p.samples().device)" \
          "import torch, diffsample as ds; s = ds.NoiseSchedule.vp_linear(); import pytest"; do
          limit 60 python3 -c "$leak_case" >/dev/null 2>"$tmp_probe"
          echo "exit $?, $(grep -c "leaked" "$tmp_probe") leak lines: $leak_case" >>"$out"
        done
      fi
      # The plan's overhead per step from Python on the CUDA executor (PyTorch CUDA tensors) beside the fused sampler.
      if ! over_budget; then
        echo "### bench/python_plan.py --arrays cuda" >>"$out"
        PYTHONUNBUFFERED=1 limit "$bench_timeout" python3 bench/python_plan.py --arrays cuda --chains 1,1000,1000000 \
          >>"$out" 2>&1 || { echo "FAILED or TIMED OUT: bench/python_plan.py" >>"$out"; status=1
          summary+=("Python plan benchmark: FAILED or timed out"); }
      fi
    else
      echo "FAILED: the Python package's build (scripts/py-dev.sh)" >>"$out"; status=1
      summary+=("Python package: build FAILED")
    fi
  else
    echo "skipped: needs PyTorch with CUDA, nanobind, scikit-build-core and pytest" >>"$out"
    summary+=("Python package: skipped (needs PyTorch with CUDA, nanobind, scikit-build-core and pytest)")
  fi
  endsection
fi

# --- the GEMM path of large mixtures on the CUDA executor: its figures, the crossover against the direct path that
# gemm_crossover(executor::cuda) follows, the dense operator's products, and PyTorch's softmax(x mu^T) beside them ---
line_buffered=()
have stdbuf && line_buffered=(stdbuf -oL -eL)
if [ $quick = 0 ] && ! skipping gemm; then
  section "GEMM path on the CUDA executor (bench_mixture_gemm cuda, cuda crossover, cuda operator; PyTorch peer)"
  gemm_bad=() gemm_ran=0
  b="$bin/bench/bench_mixture_gemm"
  IFS='|' read -r -a gemm_modes <<<"${DIFFSAMPLE_GEMM_MODES:-cuda|cuda crossover|cuda operator}"
  for mode in "${gemm_modes[@]}"; do
    if [ ! -x "$b" ]; then echo "missing: $b" >>"$out"; gemm_bad+=("missing"); break; fi
    if over_budget; then echo "skipped (time budget spent): $mode" >>"$out"; gemm_bad+=("$mode skipped"); continue; fi
    echo "### bench_mixture_gemm $mode" >>"$out"
    # shellcheck disable=SC2086  # the mode is two words on purpose
    limit "$bench_timeout" ${line_buffered[@]+"${line_buffered[@]}"} "$b" $mode >>"$out" 2>&1
    rc=$?
    case $rc in
      0) gemm_ran=$((gemm_ran + 1)) ;;
      124|137) echo "TIMED OUT: bench_mixture_gemm $mode" >>"$out"; gemm_bad+=("$mode timed out"); status=1 ;;
      *) echo "FAILED ($rc): bench_mixture_gemm $mode" >>"$out"; gemm_bad+=("$mode failed ($rc)"); status=1 ;;
    esac
  done
  if [ $have_torch = 1 ] && [ -f bench/torch_mixture_gemm.py ] && ! over_budget; then
    echo "### bench/torch_mixture_gemm.py" >>"$out"
    PYTHONUNBUFFERED=1 limit "$bench_timeout" python3 bench/torch_mixture_gemm.py >>"$out" 2>&1
    rc=$?
    [ $rc = 0 ] && gemm_ran=$((gemm_ran + 1)) || { echo "FAILED or TIMED OUT ($rc): bench/torch_mixture_gemm.py" >>"$out"
      gemm_bad+=("torch peer ($rc)"); status=1; }
  fi
  summary+=("GEMM path: $gemm_ran runs to the end${gemm_bad[0]+ (${gemm_bad[*]})}")
  endsection
fi

# --- distributed SMC with CUDA ranks: two ranks sharing the one GPU against one rank (bench_mpi, global resampling,
# every resampling staged through the host) ------------------------------------------------------------------------
if [ $quick = 0 ] && ! skipping mpibench; then
  section "MPI scaling with CUDA ranks on one GPU (bench_mpi N 8 10 2 0.05 0 cuda, P = 1 and 2)"
  b="$bin/bench/bench_mpi"
  mpib_bad=() mpib_ran=0
  if [ ! -x "$b" ]; then
    echo "missing: $b (built without MPI)" >>"$out"; mpib_bad+=("missing")
  elif ! have mpiexec; then
    echo "skipped: mpiexec missing" >>"$out"; mpib_bad+=("no mpiexec")
  else
    # (2^22 particles ran past the 60 s limit on an H200: the benchmark's host-side model of the exchange)
    for n in 65536 1048576; do
      for p in 1 2; do
        if over_budget; then echo "skipped (time budget spent): N = $n, P = $p" >>"$out"; mpib_bad+=("N $n P $p skipped"); continue; fi
        echo "### mpiexec -n $p bench_mpi $n 8 10 2 0.05 0 cuda" >>"$out"
        OMP_NUM_THREADS=1 LD_LIBRARY_PATH="$(mpi_library_path bench_mpi)" limit "$mpi_timeout" mpiexec \
          ${mpi_flags[@]+"${mpi_flags[@]}"} -n "$p" "$b" "$n" 8 10 2 0.05 0 cuda >>"$out" 2>&1
        rc=$?
        [ $rc = 0 ] && mpib_ran=$((mpib_ran + 1)) || { echo "FAILED or TIMED OUT ($rc)" >>"$out"; mpib_bad+=("N $n P $p ($rc)"); status=1; }
      done
    done
  fi
  summary+=("MPI scaling: $mpib_ran runs to the end${mpib_bad[0]+ (${mpib_bad[*]})}")
  endsection
fi

# --- benchmarks of the CUDA executor (after the tests and the sanitizers: a wrong result makes its figure moot) -------
# Each benchmark's output is line-buffered (stdbuf) so that a run stopped at its limit keeps what it printed.
if [ $quick = 0 ] && ! skipping benches && [ -n "$run_benches" ]; then
  bench_ran=0 bench_bad=()
  for name in $run_benches; do
    b="$bin/bench/$name"
    args=() title=$name
    # Sizes that end within the per-benchmark limit on an H200 (the programs' GPU defaults, 2^20 chains or
    # particles over 100 to 1000 steps, ran past 45 s there).
    case "$name" in
      bench_langevin) args=("$chains" "$steps") title="$name $chains chains, $steps steps" ;;
      bench_binary) args=(262144 20) title="$name 262144 chains, 20 steps" ;;
      bench_plan) args=(262144 200) title="$name 262144 chains, 200 steps" ;;
      bench_smc) args=(262144 50) title="$name 262144 particles, 50 steps" ;;
    esac
    section "$title"
    if [ ! -x "$b" ] || [ ! -f "$b" ]; then
      echo "missing: $b" >>"$out"; bench_bad+=("$name missing")
    elif over_budget; then
      echo "skipped (time budget spent)" >>"$out"; bench_bad+=("$name skipped")
    else
      limit "$bench_timeout" ${line_buffered[@]+"${line_buffered[@]}"} "$b" ${args[@]+"${args[@]}"} >>"$out" 2>&1
      rc=$?
      case $rc in
        0) bench_ran=$((bench_ran + 1)) ;;
        124|137) echo "TIMED OUT after ${bench_timeout} s (or the budget's remainder): $name" >>"$out"
                 bench_bad+=("$name timed out"); status=1 ;;
        *) echo "FAILED ($rc): $name" >>"$out"; bench_bad+=("$name failed ($rc)"); status=1 ;;
      esac
    fi
    endsection
  done
  summary+=("benchmarks: $bench_ran of $(echo $run_benches | wc -w) ran to the end${bench_bad[0]+ (${bench_bad[*]})}")
fi

# --- kernel profiles ----------------------------------------------------------------------------------------------
# Nsight Compute on the kernels whose speed the static record could not explain (bench/static_record.md): the SMC's
# weighting with the linear and with the twisted potentials (the default ran a tenth of the linear filter's rate on
# an H200, where the CPU executor's scalar target, the same per-particle math, runs it at 3.5x the linear's time),
# the start correction, and evaluate()'s staged rows (bench_plan's plan+mixture). Two launches of each, past the
# first; speed of light, occupancy, launch statistics and the memory workload (local memory included).
if [ $quick = 0 ] && ! skipping profiles; then
  section "kernel profiles (ncu: SMC weightings, start correction, staged evaluate)"
  if ! have ncu; then
    echo "skipped: ncu not found" >>"$out"
    summary+=("kernel profiles: skipped (ncu not found)")
  else
    profiled=0
    ncu_log=$(mktemp)
    # --kill yes where this ncu has it: the program ends once its launches are profiled (bench_smc's resampling at
    # 2^24 particles, after the SMC rows, ran past 45 s on the H200, and ncu prints its report only at the end).
    kill_opt=()
    limit 30 ncu --help 2>&1 | grep -q -- "--kill" && kill_opt=(--kill yes)
    # The twisted weighting first: the profile the static record could not explain.
    for spec in "bench_smc|guided_twisted_functor<false>|65536 6" "bench_smc|guided_weight_functor|65536 6" \
                "bench_smc|guided_init_functor|65536 6" "bench_plan|for_each_row_staged_kernel|65536 4"; do
      IFS='|' read -r prog kernel args <<<"$spec"
      if over_budget; then echo "skipped (time budget spent): $kernel" >>"$out"; continue; fi
      echo "### $prog $args: $kernel" >>"$out"
      # shellcheck disable=SC2086
      limit 45 ncu --kernel-name-base demangled --kernel-name "regex:${kernel}" --launch-skip 1 --launch-count 2 \
        ${kill_opt[@]+"${kill_opt[@]}"} --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
        "$bin/bench/$prog" $args >"$ncu_log" 2>&1
      rc=$?
      cat "$ncu_log" >>"$out"
      # ncu exits with the program's status: 0 also where nothing matched or the counters were refused.
      if grep -q "Section: " "$ncu_log"; then
        profiled=$((profiled + 1))
      else
        echo "NOT PROFILED (exit $rc): ncu on $kernel" >>"$out"
      fi
      if [ $rc = 124 ] || [ $rc = 137 ]; then echo "TIMED OUT: ncu on $kernel" >>"$out"; fi
      if grep -q "ERR_NVGPUCTRPERM" "$ncu_log"; then
        echo "ncu: no access to the GPU's performance counters here; no further profiles" >>"$out"
        break
      fi
    done
    rm -f "$ncu_log"
    summary+=("kernel profiles: $profiled of 4")
  fi
  endsection
fi

# --- baselines ----------------------------------------------------------------------------------------------------
if [ $quick = 0 ] && ! skipping baselines; then
  section "PyTorch baselines"
  if [ $have_torch = 1 ]; then
    for p in bench/torch_*.py; do
      # (torch_mixture_gemm.py runs in the GEMM section)
      case "$(basename "$p")" in torch_common.py|torch_mixture_gemm.py) continue ;; esac
      if over_budget; then echo "skipped (time budget spent): $p" >>"$out"; continue; fi
      echo "### $p" >>"$out"
      # Eager PyTorch unless DIFFSAMPLE_TORCH_COMPILE=1: torch.compile's first compilation of the diffusion loop ran
      # past the 60 s limit on an H200, and no figure came back.
      DIFFSAMPLE_TORCH_COMPILE=${DIFFSAMPLE_TORCH_COMPILE:-0} PYTHONUNBUFFERED=1 limit 60 python3 "$p" "$chains" 20 \
        >>"$out" 2>&1
      rc=$?
      case $rc in
        0) ;;
        124|137) echo "TIMED OUT: $p" >>"$out"; status=1 ;;
        *) echo "FAILED ($rc): $p" >>"$out"; status=1 ;;
      esac
    done
  else
    echo "skipped: PyTorch with CUDA not found" >>"$out"
  fi
  endsection
fi

{
  printf '\n## summary\n\n'
  for line in "${summary[@]}"; do echo "- $line"; done
  printf '\nstatus: %s after %s s\n' "$status" "$SECONDS"
} >>"$out"
save
for line in "${summary[@]}"; do echo "gpu-check: $line"; done
echo "results: $out (status $status, ${SECONDS} s)"
exit $status
